/* passes/fuse_act.c: decomposed GELU (erf and tanh forms), SiLU and SwiGLU
 * on small hand-built graphs become Gelu / kiln Silu / kiln SwiGlu
 * (checked numerically against the unfused graph), and near misses stay. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"

#include <string.h>

static Onnx__GraphProto *graph(mb *b, Onnx__ModelProto **m)
{
    *m = mb_model(b, 17);
    Onnx__GraphProto *g = (*m)->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,16"));
    fc_scalar(b, g, "half", 0.5f);
    fc_scalar(b, g, "one", 1.0f);
    fc_scalar(b, g, "three", 3.0f);
    fc_scalar(b, g, "sqrt2", 1.41421356f);
    fc_scalar(b, g, "rsqrt2", 0.70710678f);
    fc_scalar(b, g, "k0", 0.7978845608f);
    fc_scalar(b, g, "k1", 0.044715f);
    fc_scalar(b, g, "k1_wrong", 0.05f);
    fc_scalar(b, g, "sqrt3", 1.7320508f);
    return g;
}

static void expect_gelu(Onnx__ModelProto *m, mb *b, const char *approx, uint32_t n_origins, const char *origin)
{
    kn_graph *g = fc_apply(b, m, kn_pass_fuse_act, 1e-5);
    assert_int_equal(g->n_nodes, 1);
    const kn_node *n = pc_find(g, "Gelu");
    assert_int_equal(n->op, KN_OP_Gelu);
    assert_int_equal(n->opset, 20);
    const kn_attr *a = kn_node_attr(n, "approximate");
    assert_non_null(a);
    assert_int_equal(a->u.s.len, strlen(approx));
    assert_memory_equal(a->u.s.data, approx, a->u.s.len);
    assert_string_equal(g->values[n->inputs[0]].name, "x");
    assert_true(fc_origins(n, n_origins, origin));
    kn_graph_destroy(g);
}

/* torch: x * (1 + Erf(x / sqrt2)) * 0.5 */
static void test_gelu_erf_torch(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "Div", "div", "x,sqrt2", "a");
    mb_node(b, g, "Erf", "erf", "a", "e");
    mb_node(b, g, "Add", "add", "e,one", "c");
    mb_node(b, g, "Mul", "mul", "x,c", "t");
    mb_node(b, g, "Mul", "mul_1", "t,half", "y");
    mb_output(b, g, "y", NULL);
    expect_gelu(m, b, "none", 5, "erf");
    mb_free(b);
}

/* (0.5 * x) * (1 + Erf(x * 1/sqrt2)), operands the other way round */
static void test_gelu_erf_mul_forms(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "Mul", "h", "half,x", "hx");
    mb_node(b, g, "Mul", "scale", "rsqrt2,x", "a");
    mb_node(b, g, "Erf", "erf", "a", "e");
    mb_node(b, g, "Add", "add", "one,e", "c");
    mb_node(b, g, "Mul", "mul", "c,hx", "y");
    mb_output(b, g, "y", NULL);
    expect_gelu(m, b, "none", 5, "h");
    mb_free(b);
}

/* GPT-2's gelu_new: (0.5 * x) * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * Pow(x, 3)))) */
static void test_gelu_tanh_gpt2(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "Mul", "mul", "x,half", "hx");
    mb_node(b, g, "Pow", "pow", "x,three", "x3");
    mb_node(b, g, "Mul", "mul_1", "x3,k1", "t3");
    mb_node(b, g, "Add", "add", "x,t3", "in");
    mb_node(b, g, "Mul", "mul_2", "in,k0", "z");
    mb_node(b, g, "Tanh", "tanh", "z", "th");
    mb_node(b, g, "Add", "add_1", "th,one", "c");
    mb_node(b, g, "Mul", "mul_3", "hx,c", "y");
    mb_output(b, g, "y", NULL);
    expect_gelu(m, b, "tanh", 8, "pow");
    mb_free(b);
}

/* x^3 as x * (x * x), the tail as (c * 0.5) * x */
static void test_gelu_tanh_products(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "Mul", "xx", "x,x", "x2");
    mb_node(b, g, "Mul", "xxx", "x,x2", "x3");
    mb_node(b, g, "Mul", "mul_1", "k1,x3", "t3");
    mb_node(b, g, "Add", "add", "t3,x", "in");
    mb_node(b, g, "Mul", "mul_2", "k0,in", "z");
    mb_node(b, g, "Tanh", "tanh", "z", "th");
    mb_node(b, g, "Add", "add_1", "th,one", "c");
    mb_node(b, g, "Mul", "mul_3", "c,half", "ch");
    mb_node(b, g, "Mul", "mul_4", "ch,x", "y");
    mb_output(b, g, "y", NULL);
    expect_gelu(m, b, "tanh", 9, "xxx");
    mb_free(b);
}

static void expect_nothing(Onnx__ModelProto *m, mb *b)
{
    kn_graph *g = fc_apply_unchanged(b, m, kn_pass_fuse_act);
    assert_int_equal(pc_count(g, "Gelu") + pc_count(g, "Silu") + pc_count(g, "SwiGlu"), 0);
    kn_graph_destroy(g);
}

/* Erf(x / sqrt(3)); the tanh form with 0.05 for 0.044715; the erf form
 * whose Erf output is also a graph output. */
static void test_gelu_not_fused(void **state)
{
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        mb *b = mb_new();
        Onnx__ModelProto *m;
        Onnx__GraphProto *g = graph(b, &m);
        if (variant == 1) {
            mb_node(b, g, "Mul", "mul", "x,half", "hx");
            mb_node(b, g, "Pow", "pow", "x,three", "x3");
            mb_node(b, g, "Mul", "mul_1", "x3,k1_wrong", "t3");
            mb_node(b, g, "Add", "add", "x,t3", "in");
            mb_node(b, g, "Mul", "mul_2", "in,k0", "z");
            mb_node(b, g, "Tanh", "tanh", "z", "e");
        } else {
            mb_node(b, g, "Div", "div", variant == 0 ? "x,sqrt3" : "x,sqrt2", "a");
            mb_node(b, g, "Erf", "erf", "a", "e");
            mb_node(b, g, "Mul", "mul", "x,half", "hx");
        }
        mb_node(b, g, "Add", "add_1", "e,one", "c");
        mb_node(b, g, "Mul", "mul_3", "hx,c", "y");
        mb_output(b, g, "y", NULL);
        if (variant == 2)
            mb_output(b, g, "e", NULL);
        expect_nothing(m, b);
        mb_free(b);
    }
}

/* x * Sigmoid(x) alone → Silu */
static void test_silu(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "Sigmoid", "sig", "x", "s");
    mb_node(b, g, "Mul", "mul", "s,x", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_act, 1e-6);
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *n = pc_find(g1, "Silu");
    assert_int_equal(n->op, KN_OP_KILN_Silu);
    assert_string_equal(n->domain, "kiln");
    assert_true(fc_origins(n, 2, "sig"));
    kn_graph_destroy(g1);
    mb_free(b);
}

/* Llama's MLP: Mul(gate * Sigmoid(gate), up), up broadcast from [16]. */
static void test_swiglu(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_input(b, g, "up", mb_tensor_type(b, KN_F32, "16"));
    mb_node(b, g, "Sigmoid", "sig", "x", "s");
    mb_node(b, g, "Mul", "act", "x,s", "a");
    mb_node(b, g, "Mul", "mul", "up,a", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_act, 1e-6);
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *n = pc_find(g1, "SwiGlu");
    assert_int_equal(n->op, KN_OP_KILN_SwiGlu);
    assert_string_equal(g1->values[n->inputs[0]].name, "x");
    assert_string_equal(g1->values[n->inputs[1]].name, "up");
    assert_true(fc_origins(n, 3, "sig"));
    assert_true(fc_origins(n, 3, "mul"));
    kn_graph_destroy(g1);
    mb_free(b);
}

/* x * Sigmoid(y): no Silu; Sigmoid read twice: no Silu; a Silu read
 * twice: Silu but no SwiGlu. */
static void test_silu_not_fused(void **state)
{
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        mb *b = mb_new();
        Onnx__ModelProto *m;
        Onnx__GraphProto *g = graph(b, &m);
        mb_input(b, g, "up", mb_tensor_type(b, KN_F32, "16"));
        mb_node(b, g, "Sigmoid", "sig", variant == 0 ? "up" : "x", "s");
        mb_node(b, g, "Mul", "act", "x,s", "a");
        mb_node(b, g, "Mul", "mul", "a,up", "y");
        mb_output(b, g, "y", NULL);
        if (variant == 1)
            mb_output(b, g, "s", NULL);
        if (variant == 2)
            mb_output(b, g, "a", NULL);
        if (variant < 2) {
            expect_nothing(m, b);
        } else {
            kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_act, 1e-6);
            assert_int_equal(pc_count(g1, "Silu"), 1);
            assert_int_equal(pc_count(g1, "SwiGlu"), 0);
            assert_int_equal(g1->n_nodes, 2);
            kn_graph_destroy(g1);
        }
        mb_free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gelu_erf_torch),
        cmocka_unit_test(test_gelu_erf_mul_forms),
        cmocka_unit_test(test_gelu_tanh_gpt2),
        cmocka_unit_test(test_gelu_tanh_products),
        cmocka_unit_test(test_gelu_not_fused),
        cmocka_unit_test(test_silu),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_silu_not_fused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
