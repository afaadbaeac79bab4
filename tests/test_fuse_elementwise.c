/* passes/fuse_elementwise.c and the kiln.FusedElementwise CPU kernel:
 * hand-built elementwise chains (2 to 6 nodes and longer, broadcasting,
 * Cast between dtypes, Where, comparisons and logic) become one fused
 * node whose outputs are bit-identical to the unfused graph's on the CPU
 * backend; chains that must not fuse (an intermediate read outside the
 * group or a graph output, read by a subgraph, integer Div, conflicting
 * static dims, rank above 8) stay; malformed programs fail cleanly. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"
#include "ir/fused_ew.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Deterministic inputs of every dtype the program handles, negative and
 * positive, so Log/Sqrt also make NaNs. */
static void fill(kn_rt_tensor *t, uint32_t i)
{
    for (int64_t e = 0; e < t->numel; e++) {
        if (kn_dt_is_float(t->dtype))
            kn_set_f64(t->dtype, t->data, e, 2.5 * sin(0.7 * (double)e + i));
        else if (t->dtype == KN_BOOL)
            kn_set_i64(t->dtype, t->data, e, (e + i) % 3 == 0);
        else
            kn_set_i64(t->dtype, t->data, e, (e * 5 + i) % 11 - 5);
    }
}

/* Imports m twice, runs fuse-elementwise then dce on the second copy
 * (verified), checks the outputs are bit-identical, and returns it. */
static kn_graph *apply(mb *b, Onnx__ModelProto *m)
{
    return fc_apply_with(b, m, kn_pass_fuse_elementwise, fill, -1);
}

static void f32_init(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *dims, size_t rank, float base)
{
    Onnx__TensorProto *t = mb_initializer(b, g, name, KN_F32, dims, rank);
    size_t n = 1;
    for (size_t i = 0; i < rank; i++)
        n *= (size_t)dims[i];
    float v[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++)
        v[i] = base + 0.25f * (float)(i % 7);
    mb_float_data(b, t, v, n);
}

static void scalar(mb *b, Onnx__GraphProto *g, const char *name, int dtype, double v)
{
    Onnx__TensorProto *t = mb_initializer(b, g, name, dtype, NULL, 0);
    unsigned char raw[8] = {0};
    kn_set_f64((kn_dtype)dtype, raw, 0, v);
    mb_raw(b, t, raw, kn_dt_size((kn_dtype)dtype));
}

/* The one FusedElementwise node of g, checked: `steps` steps whose op
 * names are `ops` (comma-separated), `n_in` inputs, `_origins` of `steps`
 * names. */
static const kn_node *expect_fused(const kn_graph *g, uint32_t steps, const char *ops, uint32_t n_in)
{
    assert_int_equal(pc_count(g, "FusedElementwise"), 1);
    const kn_node *n = pc_find(g, "FusedElementwise");
    assert_int_equal(n->op, KN_OP_KILN_FusedElementwise);
    assert_string_equal(n->domain, "kiln");
    assert_int_equal(n->n_inputs, n_in);
    const kn_attr *a = kn_node_attr(n, "ops");
    assert_non_null(a);
    assert_int_equal(a->n, steps);
    char buf[512] = "";
    for (uint32_t i = 0; i < a->n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%.*s", i ? "," : "", (int)a->u.strings[i].len,
                 (const char *)a->u.strings[i].data);
    assert_string_equal(buf, ops);
    const kn_attr *o = kn_node_attr(n, "_origins");
    assert_non_null(o);
    assert_int_equal(o->n, steps);
    assert_int_equal(kn_node_attr(n, "args")->n, steps * KN_FE_ARGS);
    assert_int_equal(kn_node_attr(n, "imm")->n, steps * KN_FE_IMMS);
    return n;
}

/* ---- chains that fuse ---- */

static void test_chain_2(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,8"));
    scalar(b, g, "c", KN_F32, 0.75);
    mb_node(b, g, "Mul", "mul", "x,c", "t");
    mb_node(b, g, "Exp", "exp", "t", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(r->n_nodes, 1);
    expect_fused(r, 2, "Mul,Exp", 2);
    assert_string_equal(r->values[r->nodes[0].outputs[0]].name, "y");
    kn_graph_destroy(r);
    mb_free(b);
}

/* 6 nodes, inputs of four shapes broadcast to [batch, 4, 8] */
static void test_chain_6_broadcast(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,4,8"));
    mb_input(b, g, "z", mb_tensor_type(b, KN_F32, "1,8"));
    f32_init(b, g, "bias", (int64_t[]){8}, 1, -0.5f);
    f32_init(b, g, "scale", (int64_t[]){4, 1}, 2, 0.5f);
    mb_node(b, g, "Add", "add", "x,bias", "a");
    mb_node(b, g, "Mul", "mul", "scale,a", "s");
    mb_node(b, g, "Tanh", "tanh", "s", "t");
    mb_node(b, g, "Sub", "sub", "t,z", "u");
    mb_node(b, g, "Relu", "relu", "u", "v");
    mb_node(b, g, "Sigmoid", "sig", "v", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(r->n_nodes, 1);
    const kn_node *n = expect_fused(r, 6, "Add,Mul,Tanh,Sub,Relu,Sigmoid", 4);
    /* operands in SSA order: Mul reads input `scale` and step 0 */
    const kn_attr *args = kn_node_attr(n, "args");
    int64_t mul_a = args->u.ints[3], mul_b = args->u.ints[4];
    assert_string_equal(r->values[n->inputs[mul_a]].name, "scale");
    assert_int_equal(mul_b, 4 + 0);
    kn_graph_destroy(r);
    mb_free(b);
}

/* The shape grows inside the chain: [3,1] + [1,4] -> [3,4], times [2,1,1]. */
static void test_broadcast_grows(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "a", mb_tensor_type(b, KN_F32, "3,1"));
    mb_input(b, g, "b", mb_tensor_type(b, KN_F32, "1,4"));
    mb_input(b, g, "c", mb_tensor_type(b, KN_F32, "2,1,1"));
    mb_node(b, g, "Add", "add", "a,b", "s");
    mb_node(b, g, "Exp", "exp", "a", "e");        /* [3,1], read by the Div */
    mb_node(b, g, "Div", "div", "s,e", "q");
    mb_node(b, g, "Mul", "mul", "q,c", "y");
    mb_output(b, g, "y", mb_tensor_type(b, KN_F32, "2,3,4"));
    kn_graph *r = apply(b, m);
    assert_int_equal(r->n_nodes, 1);
    expect_fused(r, 4, "Add,Exp,Div,Mul", 3);
    kn_graph_destroy(r);
    mb_free(b);
}

/* Casts inside the chain: float32 -> float16 arithmetic -> float32, and
 * int64 arithmetic cast to float; each step rounds to its own dtype. */
static void test_cast_dtypes(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,5"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_I64, "5"));
    scalar(b, g, "h", KN_F16, 1.1);
    scalar(b, g, "three", KN_I64, 3);
    Onnx__NodeProto *c = mb_node(b, g, "Cast", "to16", "x", "x16");
    mb_attr_i(b, c, "to", KN_F16);
    mb_node(b, g, "Mul", "mul16", "x16,h", "m16");
    mb_node(b, g, "Abs", "abs16", "m16", "a16");
    mb_node(b, g, "Sqrt", "sqrt16", "a16", "s16");
    c = mb_node(b, g, "Cast", "to32", "s16", "s32");
    mb_attr_i(b, c, "to", KN_F32);
    mb_node(b, g, "Mul", "kmul", "k,three", "k3");
    mb_node(b, g, "Neg", "kneg", "k3", "kn");
    c = mb_node(b, g, "Cast", "kf", "kn", "kf32");
    mb_attr_i(b, c, "to", KN_F32);
    mb_node(b, g, "Add", "add", "s32,kf32", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(r->n_nodes, 1);
    const kn_node *n = expect_fused(r, 9, "Cast,Mul,Abs,Sqrt,Cast,Mul,Neg,Cast,Add", 4);
    const kn_attr *dt = kn_node_attr(n, "dtypes");
    assert_int_equal(dt->u.ints[0], KN_F16);
    assert_int_equal(dt->u.ints[3], KN_F16);
    assert_int_equal(dt->u.ints[4], KN_F32);
    assert_int_equal(dt->u.ints[6], KN_I64);
    kn_graph_destroy(r);
    mb_free(b);
}

/* Where over comparisons and logic, float and int64 branches. */
static void test_where_logic(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4,6"));
    mb_input(b, g, "p", mb_tensor_type(b, KN_BOOL, "6"));
    mb_input(b, g, "i", mb_tensor_type(b, KN_I32, "4,1"));
    scalar(b, g, "zero", KN_F32, 0);
    scalar(b, g, "lim", KN_F32, -1);
    scalar(b, g, "two", KN_I32, 2);
    mb_node(b, g, "Greater", "gt", "x,zero", "pos");
    mb_node(b, g, "Less", "lt", "x,lim", "low");
    mb_node(b, g, "Not", "not", "low", "nlow");
    mb_node(b, g, "And", "and", "pos,nlow", "c1");
    mb_node(b, g, "Or", "or", "c1,p", "cond");
    mb_node(b, g, "Exp", "exp", "x", "e");
    mb_node(b, g, "Neg", "neg", "x", "nx");
    mb_node(b, g, "Where", "where", "cond,e,nx", "w");
    mb_node(b, g, "Equal", "eq", "i,two", "ieq");
    mb_node(b, g, "Where", "where_i", "ieq,w,zero", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(r->n_nodes, 1);
    expect_fused(r, 10, "Greater,Less,Not,And,Or,Exp,Neg,Where,Equal,Where", 6);
    kn_graph_destroy(r);
    mb_free(b);
}

/* The attribute-carrying activations, Clip both ways, Pow, Max/Min,
 * Gelu and the rounding ops, with a float64 leg. */
static void test_activations(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 20);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    scalar(b, g, "lo", KN_F32, -1.5);
    scalar(b, g, "hi", KN_F32, 2);
    scalar(b, g, "e", KN_F32, 1.5);
    scalar(b, g, "q", KN_F64, 0.3);
    Onnx__NodeProto *n = mb_node(b, g, "LeakyRelu", "lrelu", "x", "a1");
    mb_attr_f(b, n, "alpha", 0.2f);
    n = mb_node(b, g, "Elu", "elu", "a1", "a2");
    mb_attr_f(b, n, "alpha", 0.7f);
    n = mb_node(b, g, "Selu", "selu", "a2", "a3");
    mb_node(b, g, "Clip", "clip", "a3,lo,hi", "a4");
    n = mb_node(b, g, "HardSigmoid", "hsig", "a4", "a5");
    mb_attr_f(b, n, "alpha", 0.3f);
    mb_node(b, g, "HardSwish", "hswish", "a5", "a6");
    mb_node(b, g, "Softplus", "softplus", "a6", "a7");
    mb_node(b, g, "Pow", "pow", "a7,e", "a8");
    mb_node(b, g, "Max", "max", "a8,x", "a9");
    mb_node(b, g, "Min", "min", "a9,hi", "a10");
    n = mb_node(b, g, "Gelu", "gelu", "a10", "a11");
    mb_attr_s(b, n, "approximate", "tanh");
    mb_node(b, g, "Gelu", "gelu2", "a11", "a12");
    mb_node(b, g, "Erf", "erf", "a12", "a13");
    n = mb_node(b, g, "Cast", "to64", "a13", "d1");
    mb_attr_i(b, n, "to", KN_F64);
    mb_node(b, g, "Add", "add64", "d1,q", "d2");
    mb_node(b, g, "Sin", "sin", "d2", "d3");
    mb_node(b, g, "Cos", "cos", "d3", "d4");
    mb_node(b, g, "Reciprocal", "recip", "d4", "d5");
    mb_node(b, g, "Log", "log", "d5", "d6");
    mb_node(b, g, "Floor", "floor", "d6", "d7");
    n = mb_node(b, g, "Cast", "to32", "d7", "y0");
    mb_attr_i(b, n, "to", KN_F32);
    mb_node(b, g, "Round", "round", "a13", "r1");
    mb_node(b, g, "Ceil", "ceil", "r1", "r2");
    mb_node(b, g, "Add", "sum", "y0,r2", "y");
    mb_output(b, g, "y", NULL);
    /* 24 nodes: one group (the limit); a 25th would start another */
    kn_graph *r = apply(b, m);
    assert_int_equal(r->n_nodes, 1);
    expect_fused(r, 24,
                 "LeakyRelu,Elu,Selu,Clip,HardSigmoid,HardSwish,Softplus,Pow,Max,Min,GeluTanh,Gelu,Erf,Cast,Add,"
                 "Sin,Cos,Reciprocal,Log,Floor,Cast,Round,Ceil,Add",
                 5);
    kn_graph_destroy(r);
    mb_free(b);
}

/* Clip before opset 11 (attributes) and intermediate values read twice
 * inside the group (x * sigmoid(t) with t read by both). */
static void test_clip_attrs_shared_value(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 9);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,8,?"));
    scalar(b, g, "three", KN_F32, 3);
    mb_node(b, g, "Add", "add", "x,three", "t");
    Onnx__NodeProto *n = mb_node(b, g, "Clip", "clip", "t", "c");
    mb_attr_f(b, n, "min", 0);
    mb_attr_f(b, n, "max", 6);
    mb_node(b, g, "Mul", "mul", "t,c", "u");
    mb_node(b, g, "Sigmoid", "sig", "t", "s");
    mb_node(b, g, "Mul", "mul2", "u,s", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(r->n_nodes, 1);
    const kn_node *f = expect_fused(r, 5, "Add,Clip,Mul,Sigmoid,Mul", 2);
    const kn_attr *imm = kn_node_attr(f, "imm");
    assert_true(imm->u.floats[2] == 0.0f && imm->u.floats[3] == 6.0f);
    kn_graph_destroy(r);
    mb_free(b);
}

/* --precision fp16/bf16 after fusion: the program's float32 steps run in
 * the low type like the separate nodes would (bit-identical outputs). */
static void test_precision(void **state)
{
    (void)state;
    for (int k = 0; k < 2; k++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = mb_model(b, 17);
        Onnx__GraphProto *g = m->graph;
        mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,6"));
        mb_input(b, g, "k", mb_tensor_type(b, KN_I64, "6"));
        f32_init(b, g, "w", (int64_t[]){6}, 1, 0.3f);
        mb_node(b, g, "Mul", "mul", "x,w", "a");
        mb_node(b, g, "Tanh", "tanh", "a", "t");
        Onnx__NodeProto *c = mb_node(b, g, "Cast", "kf", "k", "kf");
        mb_attr_i(b, c, "to", KN_F32);
        mb_node(b, g, "Add", "add", "t,kf", "u");
        mb_node(b, g, "Exp", "exp", "u", "e");   /* a graph output: ends a group */
        mb_node(b, g, "Sqrt", "sqrt", "e", "s");
        mb_node(b, g, "Neg", "neg", "s", "y");
        mb_output(b, g, "e", NULL);
        mb_output(b, g, "y", NULL);
        kn_precision_opts po = {.to = k ? KN_BF16 : KN_F16};
        kn_graph *a = pc_import(b, m), *f = pc_import(b, m);
        kn_diag *d = kn_diag_create(NULL, stderr);
        assert_int_equal(kn_pass_fuse_elementwise(f, d), KN_OK);
        assert_int_equal(kn_pass_dce(f, d), KN_OK);
        assert_int_equal(pc_count(f, "FusedElementwise"), 2);
        assert_int_equal(kn_pass_precision(a, &po, d), KN_OK);
        assert_int_equal(kn_graph_verify(a, d), KN_OK);
        assert_int_equal(kn_pass_precision(f, &po, d), KN_OK);
        assert_int_equal(kn_graph_verify(f, d), KN_OK);
        kn_diag_destroy(d);
        kn_rt_tensor *x[2] = {0}, *y[2] = {0};
        pc_run_with(a, fill, x);
        pc_run_with(f, fill, y);
        for (int i = 0; i < 2; i++) {
            assert_int_equal(x[i]->dtype, KN_F32);
            assert_int_equal(y[i]->dtype, KN_F32);
            assert_memory_equal(x[i]->data, y[i]->data, x[i]->nbytes);
            kn_rt_tensor_free(NULL, x[i]);
            kn_rt_tensor_free(NULL, y[i]);
        }
        kn_graph_destroy(a);
        kn_graph_destroy(f);
        mb_free(b);
    }
}

/* ---- must not fuse ---- */

/* t = Exp(x) is also read by a Reshape, and u = Neg(t) is a graph output:
 * neither ends up inside another node's group. */
static void test_intermediate_read_outside(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,6"));
    Onnx__TensorProto *sh = mb_initializer(b, g, "shape", KN_I64, (int64_t[]){1}, 1);
    mb_int64_data(b, sh, (int64_t[]){12}, 1);
    mb_node(b, g, "Exp", "exp", "x", "t");
    mb_node(b, g, "Reshape", "reshape", "t,shape", "flat");
    mb_node(b, g, "Neg", "neg", "t", "u");
    mb_node(b, g, "Sqrt", "sqrt", "u", "y");
    mb_output(b, g, "flat", NULL);
    mb_output(b, g, "u", NULL);
    mb_output(b, g, "y", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(pc_count(r, "FusedElementwise"), 0);
    assert_int_equal(pc_count(r, "Exp"), 1);
    assert_int_equal(pc_count(r, "Neg"), 1);
    kn_graph_destroy(r);
    mb_free(b);
}

/* A value an If branch reads (outer scope) is pinned. */
static void test_read_by_subgraph(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_input(b, g, "cond", mb_tensor_type(b, KN_BOOL, ""));
    mb_node(b, g, "Exp", "exp", "x", "t");
    mb_node(b, g, "Neg", "neg", "t", "y");
    Onnx__GraphProto *th = mb_graph(b, "then"), *el = mb_graph(b, "else");
    mb_node(b, th, "Identity", "id_t", "t", "ot");
    mb_output(b, th, "ot", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, el, "Identity", "id_e", "x", "oe");
    mb_output(b, el, "oe", mb_tensor_type(b, KN_F32, "4"));
    Onnx__NodeProto *n = mb_node(b, g, "If", "if", "cond", "z");
    mb_attr_g(b, n, "then_branch", th);
    mb_attr_g(b, n, "else_branch", el);
    mb_output(b, g, "y", NULL);
    mb_output(b, g, "z", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(pc_count(r, "FusedElementwise"), 0);
    assert_int_equal(pc_count(r, "Exp"), 1);
    kn_graph_destroy(r);
    mb_free(b);
}

/* Integer Div (truncation, division by zero) and unsigned types stay
 * separate nodes; the float neighbours of the Div are not joined across it. */
static void test_integer_div(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "k", mb_tensor_type(b, KN_I64, "6"));
    mb_input(b, g, "u", mb_tensor_type(b, KN_U8, "6"));
    scalar(b, g, "three", KN_I64, 3);
    scalar(b, g, "one", KN_U8, 1);
    mb_node(b, g, "Add", "add", "k,three", "a");
    mb_node(b, g, "Div", "div", "a,three", "q");
    mb_node(b, g, "Mul", "mul", "q,three", "y");
    mb_node(b, g, "Add", "uadd", "u,one", "ua");
    mb_node(b, g, "Mul", "umul", "ua,one", "uy");
    mb_output(b, g, "y", NULL);
    mb_output(b, g, "uy", NULL);
    kn_graph *r = apply(b, m);
    assert_int_equal(pc_count(r, "FusedElementwise"), 0);
    assert_int_equal(pc_count(r, "Div"), 1);
    assert_int_equal(r->n_nodes, 5);
    kn_graph_destroy(r);
    mb_free(b);
}

/* Declared static dims that do not broadcast ([3,4] against [2,4]) and
 * rank 9 (above the CUDA kernels' limit): not fused. */
static void test_incompatible_shapes(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "3,4"));
    mb_input(b, g, "w", mb_tensor_type(b, KN_F32, "2,4"));
    mb_input(b, g, "big", mb_tensor_type(b, KN_F32, "1,1,1,1,1,1,1,2,2"));
    mb_node(b, g, "Exp", "exp", "x", "t");
    mb_node(b, g, "Add", "add", "t,w", "y");
    mb_node(b, g, "Exp", "exp9", "big", "b1");
    mb_node(b, g, "Neg", "neg9", "b1", "b2");
    mb_output(b, g, "y", NULL);
    mb_output(b, g, "b2", NULL);
    kn_graph *gr = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_fuse_elementwise(gr, d), KN_OK);
    assert_int_equal(kn_graph_verify(gr, d), KN_OK);
    assert_int_equal(pc_count(gr, "FusedElementwise"), 0);
    assert_int_equal(gr->n_nodes, 4);
    kn_diag_destroy(d);
    kn_graph_destroy(gr);
    mb_free(b);
}

/* ---- the kernel on malformed programs ---- */

static void run_bad(const char *ops, const int64_t *args, const int64_t *dts, uint32_t steps)
{
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_opset(b, m, "kiln", 1);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4"));
    Onnx__NodeProto *n = mb_node(b, g, "FusedElementwise", "fe", "x", "y");
    n->domain = mb_strdup(b, "kiln");
    const char *names[8];
    char buf[128];
    snprintf(buf, sizeof buf, "%s", ops);
    uint32_t k = 0;
    for (char *s = strtok(buf, ","); s && k < 8; s = strtok(NULL, ","))
        names[k++] = s;
    mb_attr_strings(b, n, "ops", names, k);
    mb_attr_ints(b, n, "args", args, steps * KN_FE_ARGS);
    mb_attr_ints(b, n, "dtypes", dts, steps);
    float imm[16] = {0};
    mb_attr_floats(b, n, "imm", imm, steps * KN_FE_IMMS);
    mb_output(b, g, "y", NULL);
    kn_graph *gr = pc_import(b, m);
    kn_rt_tensor *in, *out[1] = {0};
    assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 1, (int64_t[]){4}, &in), KN_OK);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cpu_run(gr, NULL, d, (const kn_rt_tensor *const *)&in, 1, out, 1), KN_ERR_INVALID);
    kn_diag_destroy(d);
    kn_rt_tensor_free(NULL, in);
    kn_graph_destroy(gr);
    mb_free(b);
}

static void test_bad_programs(void **state)
{
    (void)state;
    run_bad("Frobnicate", (int64_t[]){0, -1, -1}, (int64_t[]){KN_F32}, 1);   /* unknown op */
    run_bad("Exp", (int64_t[]){1, -1, -1}, (int64_t[]){KN_F32}, 1);          /* not an earlier value */
    run_bad("Add", (int64_t[]){0, -1, -1}, (int64_t[]){KN_F32}, 1);          /* missing operand */
    run_bad("Exp", (int64_t[]){0, -1, -1}, (int64_t[]){KN_U8}, 1);           /* unsupported dtype */
    run_bad("Exp", (int64_t[]){0, -1, -1}, (int64_t[]){KN_F16}, 1);          /* operand dtype mismatch */
    run_bad("Not", (int64_t[]){0, -1, -1}, (int64_t[]){KN_BOOL}, 1);         /* Not of a float */
    run_bad("Exp,Where", (int64_t[]){0, -1, -1, 0, 1, 1}, (int64_t[]){KN_F32, KN_F32}, 2); /* float condition */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_2),
        cmocka_unit_test(test_chain_6_broadcast),
        cmocka_unit_test(test_broadcast_grows),
        cmocka_unit_test(test_cast_dtypes),
        cmocka_unit_test(test_where_logic),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_clip_attrs_shared_value),
        cmocka_unit_test(test_precision),
        cmocka_unit_test(test_intermediate_read_outside),
        cmocka_unit_test(test_read_by_subgraph),
        cmocka_unit_test(test_integer_div),
        cmocka_unit_test(test_incompatible_shapes),
        cmocka_unit_test(test_bad_programs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
