/* passes/fuse_norm.c: decomposed LayerNorm / RMSNorm patterns on small
 * hand-built graphs become one LayerNormalization / RMSNormalization
 * (checked numerically against the unfused graph), and the patterns that
 * must not fuse stay. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"
#include "runtime/cpu/util.h"

#include <string.h>

/* Options of the LayerNorm graph below. */
typedef struct ln_opts {
    int opset;           /* 17 default */
    bool mul_square;     /* d*d instead of Pow(d, 2) */
    int rsqrt;           /* 0: Div(d, Sqrt); 1: Mul(d, Reciprocal(Sqrt)); 2: Mul(Pow(ve, -0.5), d); 3: Mul(d, Div(1, Sqrt)) */
    bool gamma, beta;
    bool swap;           /* Add(eps, v), Mul(gamma, n), Add(beta, o) */
    int64_t axis;        /* of both ReduceMeans; -1 default (0 means -1) */
    bool eps_input;      /* epsilon a graph input, not a constant */
    bool leak;           /* the Sub's output is also a graph output */
    float eps;
} ln_opts;

static void reduce_mean(mb *b, Onnx__GraphProto *g, const ln_opts *o, const char *name, const char *in, const char *out)
{
    int64_t ax = o->axis ? o->axis : -1;
    if (o->opset >= 18) {
        char ins[64];
        snprintf(ins, sizeof ins, "%s,axes", in);
        mb_node(b, g, "ReduceMean", name, ins, out);
    } else {
        mb_node(b, g, "ReduceMean", name, in, out);
        mb_attr_ints(b, g->node[g->n_node - 1], "axes", &ax, 1);
    }
}

static Onnx__ModelProto *layer_norm(mb *b, const ln_opts *o)
{
    int opset = o->opset ? o->opset : 17;
    ln_opts oo = *o;
    oo.opset = opset;
    Onnx__ModelProto *m = mb_model(b, opset);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,8"));
    if (o->eps_input)
        mb_input(b, g, "eps", mb_tensor_type(b, KN_F32, ""));
    else
        fc_scalar(b, g, "eps", o->eps ? o->eps : 1e-5f);
    fc_scalar(b, g, "two", 2.0f);
    fc_scalar(b, g, "mhalf", -0.5f);
    fc_scalar(b, g, "one", 1.0f);
    fc_f32(b, g, "gamma", (int64_t[]){8}, 1, 0.9f);
    fc_f32(b, g, "beta", (int64_t[]){8}, 1, -0.1f);
    if (opset >= 18) {
        int64_t ax = o->axis ? o->axis : -1;
        mb_int64_data(b, mb_initializer(b, g, "axes", KN_I64, (int64_t[]){1}, 1), &ax, 1);
    }
    reduce_mean(b, g, &oo, "rm0", "x", "m");
    mb_node(b, g, "Sub", "sub", "x,m", "d");
    if (o->mul_square)
        mb_node(b, g, "Mul", "sq", "d,d", "p");
    else
        mb_node(b, g, "Pow", "sq", "d,two", "p");
    reduce_mean(b, g, &oo, "rm1", "p", "v");
    mb_node(b, g, "Add", "add_eps", o->swap ? "eps,v" : "v,eps", "ve");
    switch (o->rsqrt) {
    case 0:
        mb_node(b, g, "Sqrt", "sqrt", "ve", "s");
        mb_node(b, g, "Div", "norm", "d,s", "n");
        break;
    case 1:
        mb_node(b, g, "Sqrt", "sqrt", "ve", "s");
        mb_node(b, g, "Reciprocal", "rcp", "s", "r");
        mb_node(b, g, "Mul", "norm", "d,r", "n");
        break;
    case 2:
        mb_node(b, g, "Pow", "rsqrt", "ve,mhalf", "r");
        mb_node(b, g, "Mul", "norm", "r,d", "n");
        break;
    default:
        mb_node(b, g, "Sqrt", "sqrt", "ve", "s");
        mb_node(b, g, "Div", "rcp", "one,s", "r");
        mb_node(b, g, "Mul", "norm", "d,r", "n");
        break;
    }
    const char *y = "n";
    if (o->gamma) {
        mb_node(b, g, "Mul", "scale", o->swap ? "gamma,n" : "n,gamma", "o");
        y = "o";
    }
    if (o->beta) {
        mb_node(b, g, "Add", "bias", o->swap ? "beta,o" : "o,beta", "ob");
        y = "ob";
    }
    mb_node(b, g, "Relu", "after", y, "y");
    mb_output(b, g, "y", NULL);
    if (o->leak)
        mb_output(b, g, "d", NULL);
    return m;
}

static void expect_ln(const ln_opts *o, uint32_t n_origins, bool has_beta)
{
    mb *b = mb_new();
    kn_graph *g = fc_apply(b, layer_norm(b, o), kn_pass_fuse_norm, 1e-5);
    assert_int_equal(g->n_nodes, 2); /* LayerNormalization, Relu */
    const kn_node *n = pc_find(g, "LayerNormalization");
    assert_int_equal(n->opset, 17);
    assert_int_equal(n->op, KN_OP_LayerNormalization);
    assert_int_equal(n->n_inputs, has_beta ? 3 : 2);
    const kn_attr *eps = kn_node_attr(n, "epsilon"), *axis = kn_node_attr(n, "axis");
    assert_non_null(eps);
    assert_true(eps->u.f == (o->eps ? o->eps : 1e-5f));
    assert_int_equal(axis->u.i, -1);
    assert_true(fc_origins(n, n_origins, "rm0"));
    assert_true(fc_origins(n, n_origins, "norm"));
    kn_graph_destroy(g);
    mb_free(b);
}

static void expect_unfused(const ln_opts *o)
{
    mb *b = mb_new();
    Onnx__ModelProto *m = layer_norm(b, o);
    kn_graph *g = fc_apply_unchanged(b, m, kn_pass_fuse_norm);
    assert_int_equal(pc_count(g, "LayerNormalization") + pc_count(g, "RMSNormalization"), 0);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_ln_torch(void **state)
{
    (void)state;
    expect_ln(&(ln_opts){.gamma = true, .beta = true}, 9, true);
}

static void test_ln_torch_eps_swapped(void **state)
{
    (void)state;
    expect_ln(&(ln_opts){.gamma = true, .beta = true, .swap = true, .eps = 1e-12f}, 9, true);
}

static void test_ln_tf_reciprocal_no_affine(void **state)
{
    (void)state;
    expect_ln(&(ln_opts){.mul_square = true, .rsqrt = 1}, 8, false);
}

static void test_ln_tf_pow_gamma_only(void **state)
{
    (void)state;
    expect_ln(&(ln_opts){.mul_square = true, .rsqrt = 2, .gamma = true, .swap = true}, 8, false);
}

static void test_ln_div_one(void **state)
{
    (void)state;
    expect_ln(&(ln_opts){.rsqrt = 3, .gamma = true, .beta = true}, 10, true);
}

/* axis 2 of a rank-3 input is the last axis; opset 18 gives axes as input */
static void test_ln_positive_axis_opset18(void **state)
{
    (void)state;
    expect_ln(&(ln_opts){.axis = 2, .gamma = true, .beta = true}, 9, true);
    expect_ln(&(ln_opts){.opset = 18, .gamma = true, .beta = true}, 9, true);
}

static void test_ln_not_last_axis(void **state)
{
    (void)state;
    expect_unfused(&(ln_opts){.axis = 1, .gamma = true, .beta = true});
    expect_unfused(&(ln_opts){.opset = 18, .axis = -2, .gamma = true});
}

static void test_ln_eps_not_constant(void **state)
{
    (void)state;
    expect_unfused(&(ln_opts){.eps_input = true, .gamma = true, .beta = true});
}

static void test_ln_intermediate_used(void **state)
{
    (void)state;
    expect_unfused(&(ln_opts){.leak = true, .gamma = true, .beta = true});
}

/* ---- RMSNorm ---- */

/* Llama: x * (1 / Sqrt(mean(x^2) + eps)), then weight * that. */
static void test_rms_llama(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,seq,8"));
    fc_scalar(b, g, "two", 2.0f);
    fc_scalar(b, g, "one", 1.0f);
    fc_scalar(b, g, "eps", 1e-6f);
    fc_f32(b, g, "w", (int64_t[]){8}, 1, 0.8f);
    mb_node(b, g, "Pow", "pow", "x,two", "p");
    mb_node(b, g, "ReduceMean", "rm", "p", "v");
    mb_attr_ints(b, g->node[g->n_node - 1], "axes", (int64_t[]){-1}, 1);
    mb_node(b, g, "Add", "add", "v,eps", "ve");
    mb_node(b, g, "Sqrt", "sqrt", "ve", "s");
    mb_node(b, g, "Div", "div", "one,s", "r");
    mb_node(b, g, "Mul", "mul", "x,r", "n");
    mb_node(b, g, "Mul", "mul_1", "w,n", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_norm, 1e-5);
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *n = pc_find(g1, "RMSNormalization");
    assert_int_equal(n->opset, 23);
    assert_true(kn_node_attr(n, "epsilon")->u.f == 1e-6f);
    assert_string_equal(g1->values[n->inputs[1]].name, "w");
    assert_true(fc_origins(n, 7, "mul_1"));
    kn_graph_destroy(g1);
    mb_free(b);
}

/* x / Sqrt(mean(x*x) + eps) with no weight: Scale becomes ones. */
static void test_rms_div_no_weight(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4,6"));
    fc_scalar(b, g, "eps", 1e-5f);
    mb_node(b, g, "Mul", "sq", "x,x", "p");
    mb_node(b, g, "ReduceMean", "rm", "p", "v");
    mb_attr_ints(b, g->node[g->n_node - 1], "axes", (int64_t[]){-1}, 1);
    mb_node(b, g, "Add", "add", "eps,v", "ve");
    mb_node(b, g, "Sqrt", "sqrt", "ve", "s");
    mb_node(b, g, "Div", "div", "x,s", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_norm, 1e-5);
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *n = pc_find(g1, "RMSNormalization");
    const kn_tensor *ones = g1->values[n->inputs[1]].tensor;
    assert_non_null(ones);
    assert_int_equal(ones->n_elems, 1);
    kn_graph_destroy(g1);
    mb_free(b);
}

/* A float16 model's RMSNorm as Llama/Qwen2 export it: Cast to float32,
 * normalise, Cast back, times the float16 weight. */
static void test_rms_cast_wrapped(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F16, "2,8"));
    fc_scalar(b, g, "two", 2.0f);
    fc_scalar(b, g, "eps", 1e-6f);
    uint16_t w[8];
    for (int i = 0; i < 8; i++)
        w[i] = kn_f32_to_f16(0.8f + 0.05f * (float)i);
    mb_raw(b, mb_initializer(b, g, "w", KN_F16, (int64_t[]){8}, 1), w, sizeof w);
    mb_node(b, g, "Cast", "cast", "x", "xf");
    mb_attr_i(b, g->node[g->n_node - 1], "to", KN_F32);
    mb_node(b, g, "Pow", "pow", "xf,two", "p");
    mb_node(b, g, "ReduceMean", "rm", "p", "v");
    mb_attr_ints(b, g->node[g->n_node - 1], "axes", (int64_t[]){-1}, 1);
    mb_node(b, g, "Add", "add", "v,eps", "ve");
    mb_node(b, g, "Sqrt", "sqrt", "ve", "s");
    mb_node(b, g, "Reciprocal", "rcp", "s", "r");
    mb_node(b, g, "Mul", "mul", "xf,r", "n");
    mb_node(b, g, "Cast", "cast_1", "n", "nh");
    mb_attr_i(b, g->node[g->n_node - 1], "to", KN_F16);
    mb_node(b, g, "Mul", "mul_1", "w,nh", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_norm, 2e-3); /* float16: one rounding less */
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *n = pc_find(g1, "RMSNormalization");
    assert_string_equal(g1->values[n->inputs[0]].name, "x");
    assert_true(fc_origins(n, 9, "cast"));
    kn_graph_destroy(g1);
    mb_free(b);
}

/* mean(x^2) over axis 0 of a rank-2 input; x^2 read elsewhere; x^3 for
 * x^2; the mean without keepdims (it broadcasts here, to other values). */
static void test_rms_not_fused(void **state)
{
    (void)state;
    for (int variant = 0; variant < 4; variant++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = mb_model(b, 17);
        Onnx__GraphProto *g = m->graph;
        mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4,4"));
        fc_scalar(b, g, "two", 2.0f);
        fc_scalar(b, g, "three", 3.0f);
        fc_scalar(b, g, "eps", 1e-5f);
        mb_node(b, g, "Pow", "pow", variant == 2 ? "x,three" : "x,two", "p");
        mb_node(b, g, "ReduceMean", "rm", "p", "v");
        mb_attr_ints(b, g->node[g->n_node - 1], "axes", (int64_t[]){variant == 0 ? 0 : -1}, 1);
        if (variant == 3)
            mb_attr_i(b, g->node[g->n_node - 1], "keepdims", 0);
        mb_node(b, g, "Add", "add", "v,eps", "ve");
        mb_node(b, g, "Sqrt", "sqrt", "ve", "s");
        mb_node(b, g, "Div", "div", "x,s", "y");
        mb_output(b, g, "y", NULL);
        if (variant == 1)
            mb_output(b, g, "p", NULL);
        kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_norm, 0);
        assert_int_equal(pc_count(g1, "RMSNormalization"), 0);
        assert_int_equal(g1->n_nodes, 5);
        kn_graph_destroy(g1);
        mb_free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ln_torch),
        cmocka_unit_test(test_ln_torch_eps_swapped),
        cmocka_unit_test(test_ln_tf_reciprocal_no_affine),
        cmocka_unit_test(test_ln_tf_pow_gamma_only),
        cmocka_unit_test(test_ln_div_one),
        cmocka_unit_test(test_ln_positive_axis_opset18),
        cmocka_unit_test(test_ln_not_last_axis),
        cmocka_unit_test(test_ln_eps_not_constant),
        cmocka_unit_test(test_ln_intermediate_used),
        cmocka_unit_test(test_rms_llama),
        cmocka_unit_test(test_rms_div_no_weight),
        cmocka_unit_test(test_rms_cast_wrapped),
        cmocka_unit_test(test_rms_not_fused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
