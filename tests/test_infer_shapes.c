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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_symbolic),
        cmocka_unit_test(test_reshape_infers_minus_one),
        cmocka_unit_test(test_not_broadcastable_left_unknown),
        cmocka_unit_test(test_layout_and_window_ops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
