/* The shape-inference pass: symbolic dims carried through, declared types
 * kept, data-dependent shapes left unknown rather than guessed. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model_builder.h"
#include "passes/passes.h"

#include <string.h>

static kn_graph *build(mb *b, Onnx__ModelProto *m)
{
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, NULL, d, &g), KN_OK);
    assert_int_equal(kn_pass_infer_shapes(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_diag_destroy(d);
    return g;
}

static const kn_value *val(const kn_graph *g, const char *name)
{
    for (kn_id i = 0; i < g->n_values; i++)
        if (strcmp(g->values[i].name, name) == 0)
            return &g->values[i];
    fail_msg("no value '%s'", name);
    return NULL;
}

static void want(const kn_graph *g, const char *name, const char *type)
{
    char buf[256];
    kn_type_format(&val(g, name)->type, buf, sizeof buf);
    assert_string_equal(buf, type);
}

static void test_symbolic(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,seq,64"));
    mb_input(b, g, "bias", mb_tensor_type(b, KN_F32, "32"));
    int64_t wd[2] = {64, 32}, sd[1] = {2}, pd[1] = {3};
    mb_float_data(b, mb_initializer(b, g, "w", KN_F32, wd, 2), (float[2048]){0}, 2048);
    int64_t shape[2] = {0, -1};
    mb_int64_data(b, mb_initializer(b, g, "shape", KN_I64, sd, 1), shape, 2);
    (void)pd;
    mb_node(b, g, "MatMul", "mm", "x,w", "h");                 /* [batch, seq, 32] */
    mb_node(b, g, "Add", "add", "h,bias", "a");                 /* broadcast */
    mb_node(b, g, "Relu", "relu", "a", "r");
    Onnx__NodeProto *t = mb_node(b, g, "Transpose", "tr", "r", "t");
    mb_attr_ints(b, t, "perm", (int64_t[]){1, 0, 2}, 3);       /* [seq, batch, 32] */
    mb_node(b, g, "Reshape", "rs", "r,shape", "flat");          /* [batch, ?] */
    Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "r,r", "cc");
    mb_attr_i(b, c, "axis", 2);                                 /* [batch, seq, 64] */
    Onnx__NodeProto *cast = mb_node(b, g, "Cast", "cast", "r", "half");
    mb_attr_i(b, cast, "to", KN_F16);
    mb_node(b, g, "Shape", "shp", "r", "s");
    mb_node(b, g, "Less", "lt", "h,bias", "mask");
    mb_node(b, g, "NonZero", "nz", "mask", "idx");              /* data-dependent */
    mb_output(b, g, "t", NULL);
    mb_output(b, g, "flat", NULL);
    mb_output(b, g, "cc", NULL);
    mb_output(b, g, "half", NULL);
    mb_output(b, g, "s", NULL);
    mb_output(b, g, "idx", NULL);
    mb_output(b, g, "a", mb_tensor_type(b, KN_F32, "B,S,32")); /* declared: kept */
    kn_graph *kg = build(b, m);
    want(kg, "h", "float32[batch, seq, 32]");
    want(kg, "a", "float32[B, S, 32]");
    want(kg, "r", "float32[B, S, 32]");
    want(kg, "t", "float32[S, B, 32]");
    want(kg, "flat", "float32[B, ?]");
    want(kg, "cc", "float32[B, S, 64]");
    want(kg, "half", "float16[B, S, 32]");
    want(kg, "s", "int64[3]");
    want(kg, "mask", "bool[batch, seq, 32]");
    want(kg, "idx", "int64[*]"); /* dtype known, shape data-dependent */
    kn_graph_destroy(kg);
    mb_free(b);
}

static void test_reshape_infers_minus_one(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    int64_t sd[1] = {2};
    mb_int64_data(b, mb_initializer(b, g, "shape", KN_I64, sd, 1), (int64_t[]){-1, 6}, 2);
    mb_node(b, g, "Reshape", "rs", "x,shape", "y");
    Onnx__NodeProto *gm = mb_node(b, g, "Gemm", "gemm", "y,y", "z");
    mb_attr_i(b, gm, "transB", 1);
    mb_output(b, g, "z", NULL);
    kn_graph *kg = build(b, m);
    want(kg, "y", "float32[4, 6]");
    want(kg, "z", "float32[4, 4]");
    kn_graph_destroy(kg);
    mb_free(b);
}

static void test_not_broadcastable_left_unknown(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    mb_input(b, g, "y", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, g, "Add", "add", "x,y", "z");
    mb_output(b, g, "z", NULL);
    kn_graph *kg = build(b, m);
    want(kg, "z", "float32[*]"); /* shape left to the kernel, which reports it */
    kn_graph_destroy(kg);
    mb_free(b);
}

static void test_layout_and_window_ops(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,3,32,32"));
    mb_input(b, g, "ids", mb_tensor_type(b, KN_I64, "batch,seq"));
    int64_t wd[4] = {8, 3, 3, 3}, ad[1] = {2}, ed[2] = {100, 16};
    mb_float_data(b, mb_initializer(b, g, "w", KN_F32, wd, 4), (float[216]){0}, 216);
    mb_int64_data(b, mb_initializer(b, g, "axes", KN_I64, ad, 1), (int64_t[]){1, -1}, 2);
    mb_float_data(b, mb_initializer(b, g, "emb", KN_F32, ed, 2), (float[1600]){0}, 1600);
    Onnx__NodeProto *cv = mb_node(b, g, "Conv", "conv", "x,w", "c");
    mb_attr_ints(b, cv, "pads", (int64_t[]){1, 1, 1, 1}, 4);
    mb_attr_ints(b, cv, "strides", (int64_t[]){2, 2}, 2);                  /* [batch, 8, 16, 16] */
    Onnx__NodeProto *mp = mb_node(b, g, "MaxPool", "pool", "c", "p");
    mb_attr_ints(b, mp, "kernel_shape", (int64_t[]){2, 2}, 2);
    mb_attr_ints(b, mp, "strides", (int64_t[]){2, 2}, 2);                  /* [batch, 8, 8, 8] */
    mb_node(b, g, "GlobalAveragePool", "gap", "p", "gp");                    /* [batch, 8, 1, 1] */
    mb_node(b, g, "Flatten", "flat", "gp", "f");                             /* [batch, 8] */
    mb_node(b, g, "Unsqueeze", "unsq", "f,axes", "u");                       /* [batch, 1, 8, 1] */
    mb_node(b, g, "Squeeze", "sq", "u,axes", "q");                           /* [batch, 8] */
    mb_node(b, g, "Gather", "emb_lookup", "emb,ids", "e");                   /* [batch, seq, 16] */
    Onnx__NodeProto *fl = mb_node(b, g, "Flatten", "flat2", "e", "e2");
    mb_attr_i(b, fl, "axis", 2);                                              /* [?, 16] */
    mb_output(b, g, "q", NULL);
    mb_output(b, g, "e2", NULL);
    kn_graph *kg = build(b, m);
    want(kg, "c", "float32[batch, 8, 16, 16]");
    want(kg, "p", "float32[batch, 8, 8, 8]");
    want(kg, "gp", "float32[batch, 8, 1, 1]");
    want(kg, "f", "float32[batch, 8]");
    want(kg, "u", "float32[batch, 1, 8, 1]");
    want(kg, "q", "float32[batch, 8]");
    want(kg, "e", "float32[batch, seq, 16]");
    want(kg, "e2", "float32[?, 16]");
    kn_graph_destroy(kg);
    mb_free(b);
}

static void i64_init(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *v, size_t n)
{
    int64_t d[1] = {(int64_t)n};
    mb_int64_data(b, mb_initializer(b, g, name, KN_I64, d, 1), v, n);
}

static void i64_scalar(mb *b, Onnx__GraphProto *g, const char *name, int64_t v)
{
    mb_int64_data(b, mb_initializer(b, g, name, KN_I64, NULL, 0), &v, 1);
}

/* The exporters' Reshape targets: Shape -> Gather -> Unsqueeze -> Concat
 * (with -1 and constants), Slice of a shape, Squeeze, Cast, and arithmetic
 * on the gathered dims. */
static void test_shape_vectors(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,seq,64"));
    i64_scalar(b, g, "i0", 0);
    i64_scalar(b, g, "i1", 1);
    i64_scalar(b, g, "two", 2);
    i64_init(b, g, "ax0", (int64_t[]){0}, 1);
    i64_init(b, g, "heads", (int64_t[]){4, -1}, 2);
    i64_init(b, g, "st", (int64_t[]){0}, 1);
    i64_init(b, g, "en", (int64_t[]){2}, 1);
    i64_init(b, g, "minus1", (int64_t[]){-1}, 1);
    mb_node(b, g, "Shape", "shape", "x", "s");
    mb_node(b, g, "Gather", "g0", "s,i0", "b0");
    mb_node(b, g, "Gather", "g1", "s,i1", "s1");
    mb_node(b, g, "Unsqueeze", "u0", "b0,ax0", "ub");
    mb_node(b, g, "Unsqueeze", "u1", "s1,ax0", "us");
    Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "ub,us,heads", "target");
    mb_attr_i(b, c, "axis", 0);
    mb_node(b, g, "Reshape", "rs", "x,target", "q");            /* [batch, seq, 4, 16] */
    mb_node(b, g, "Slice", "sl", "s,st,en", "lead");             /* [batch, seq] */
    Onnx__NodeProto *c2 = mb_node(b, g, "Concat", "cat2", "lead,minus1", "t2");
    mb_attr_i(b, c2, "axis", 0);
    mb_node(b, g, "Reshape", "rs2", "q,t2", "back");            /* [batch, seq, 64] */
    mb_node(b, g, "Squeeze", "sq", "ub,ax0", "bsq");
    Onnx__NodeProto *cs = mb_node(b, g, "Cast", "cast", "bsq", "bc");
    mb_attr_i(b, cs, "to", KN_I64);
    mb_node(b, g, "Mul", "mul", "bc,two", "b2");                 /* unknown: batch * 2 */
    mb_node(b, g, "Unsqueeze", "u2", "b2,ax0", "ub2");
    Onnx__NodeProto *c3 = mb_node(b, g, "Concat", "cat3", "ub2,minus1", "t3");
    mb_attr_i(b, c3, "axis", 0);
    mb_node(b, g, "Reshape", "rs3", "x,t3", "r3");               /* [?, ?] */
    mb_output(b, g, "back", NULL);
    mb_output(b, g, "r3", NULL);
    kn_graph *kg = build(b, m);
    want(kg, "q", "float32[batch, seq, 4, 16]");
    want(kg, "back", "float32[batch, seq, 64]");
    want(kg, "r3", "float32[?, ?]");
    kn_graph_destroy(kg);
    mb_free(b);
}

/* Expand through Where(Equal(shape, -1), 1, shape) (torch's expand),
 * ConstantOfShape, Range, reductions and Split. */
static void test_expand_range_reduce_split(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,1,seq,8"));
    mb_input(b, g, "n", mb_tensor_type(b, KN_I64, ""));
    i64_scalar(b, g, "i0", 0);
    i64_scalar(b, g, "i1", 1);
    i64_scalar(b, g, "m1", -1);
    i64_init(b, g, "ax0", (int64_t[]){0}, 1);
    i64_init(b, g, "four", (int64_t[]){4}, 1);
    i64_init(b, g, "len", (int64_t[]){4}, 1);
    i64_init(b, g, "split", (int64_t[]){2, 6}, 2);
    mb_node(b, g, "Shape", "shape", "x", "s");
    mb_node(b, g, "Gather", "g0", "s,i0", "b0");
    mb_node(b, g, "Unsqueeze", "u0", "b0,ax0", "ub");
    i64_init(b, g, "rest", (int64_t[]){-1, -1, 8}, 3);
    Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "ub,rest", "want");     /* [batch, -1, -1, 8] */
    mb_attr_i(b, c, "axis", 0);
    mb_node(b, g, "Equal", "eq", "want,m1", "isneg");
    Onnx__NodeProto *cos = mb_node(b, g, "ConstantOfShape", "ones", "len", "one4");
    Onnx__TensorProto *one = mb_tensor(b, "v", KN_I64, (int64_t[]){1}, 1);
    mb_int64_data(b, one, (int64_t[]){1}, 1);
    mb_attr_t(b, cos, "value", one);
    mb_node(b, g, "Where", "where", "isneg,one4,want", "tgt");                  /* [batch, 1, 1, 8] */
    mb_node(b, g, "Expand", "ex", "x,tgt", "xe");                              /* [batch, 1, seq, 8] */
    mb_node(b, g, "Expand", "ex2", "x,four", "x4");                            /* dims 8 vs 4: unknown */
    mb_node(b, g, "Range", "rg", "i0,n,i1", "r");                              /* [?] */
    mb_node(b, g, "Gather", "g2", "s,i1", "s1");
    mb_node(b, g, "Range", "rg2", "i0,s1,i1", "r2");                           /* [1]: dim 1 of x is 1 */
    Onnx__NodeProto *rm = mb_node(b, g, "ReduceMean", "rm", "x", "mean");
    mb_attr_ints(b, rm, "axes", (int64_t[]){-1}, 1);                           /* [batch, 1, seq, 1] */
    Onnx__NodeProto *rs = mb_node(b, g, "ReduceSum", "rsum", "x,ax0", "sum");
    mb_attr_i(b, rs, "keepdims", 0);                                           /* [1, seq, 8] */
    Onnx__NodeProto *sp = mb_node(b, g, "Split", "sp", "x,split", "lo,hi");
    mb_attr_i(b, sp, "axis", -1);
    mb_output(b, g, "xe", NULL);
    mb_output(b, g, "x4", NULL);
    mb_output(b, g, "r", NULL);
    mb_output(b, g, "r2", NULL);
    mb_output(b, g, "mean", NULL);
    mb_output(b, g, "sum", NULL);
    mb_output(b, g, "lo", NULL);
    mb_output(b, g, "hi", NULL);
    kn_graph *kg = build(b, m);
    want(kg, "xe", "float32[batch, 1, seq, 8]");
    want(kg, "x4", "float32[batch, 1, seq, ?]");
    want(kg, "r", "int64[?]");
    want(kg, "r2", "int64[1]");
    want(kg, "mean", "float32[batch, 1, seq, 1]");
    want(kg, "sum", "float32[1, seq, 8]");
    want(kg, "lo", "float32[batch, 1, seq, 2]");
    want(kg, "hi", "float32[batch, 1, seq, 6]");
    kn_graph_destroy(kg);
    mb_free(b);
}

/* Slice on data: constant starts/ends/axes/steps (negative, clamped, a
 * negative step, the whole axis), and the GPT-style slice with a start
 * computed from the shape. */
static void test_slice(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,seq,64"));
    i64_init(b, g, "s0", (int64_t[]){0, -10}, 2);
    i64_init(b, g, "e0", (int64_t[]){INT64_MAX, 1000}, 2);
    i64_init(b, g, "a0", (int64_t[]){1, 2}, 2);
    i64_init(b, g, "s1", (int64_t[]){-1}, 1);
    i64_init(b, g, "e1", (int64_t[]){INT64_MIN}, 1);
    i64_init(b, g, "a1", (int64_t[]){2}, 1);
    i64_init(b, g, "st1", (int64_t[]){-3}, 1);
    i64_init(b, g, "ax0", (int64_t[]){0}, 1);
    i64_scalar(b, g, "i2", 2);
    i64_scalar(b, g, "two", 2);
    mb_node(b, g, "Slice", "sa", "x,s0,e0,a0", "ya");           /* [batch, seq, 10] */
    mb_node(b, g, "Slice", "sb", "x,s1,e1,a1,st1", "yb");       /* 63..0 by 3: [batch, seq, 22] */
    mb_node(b, g, "Shape", "shape", "x", "s");
    mb_node(b, g, "Gather", "g", "s,i2", "d");
    mb_node(b, g, "Div", "div", "d,two", "half");
    mb_node(b, g, "Unsqueeze", "u", "half,ax0", "uh");
    i64_init(b, g, "big", (int64_t[]){INT64_MAX}, 1);
    mb_node(b, g, "Slice", "sc", "x,uh,big,a1", "yc");          /* [batch, seq, 32] */
    mb_output(b, g, "ya", NULL);
    mb_output(b, g, "yb", NULL);
    mb_output(b, g, "yc", NULL);
    kn_graph *kg = build(b, m);
    want(kg, "ya", "float32[batch, seq, 10]");
    want(kg, "yb", "float32[batch, seq, 22]");
    want(kg, "yc", "float32[batch, seq, 32]");
    kn_graph_destroy(kg);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_symbolic),
        cmocka_unit_test(test_reshape_infers_minus_one),
        cmocka_unit_test(test_not_broadcastable_left_unknown),
        cmocka_unit_test(test_layout_and_window_ops),
        cmocka_unit_test(test_shape_vectors),
        cmocka_unit_test(test_expand_range_reduce_split),
        cmocka_unit_test(test_slice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
