/* passes/fuse_act.c, the Softmax / LogSoftmax part: the decomposed forms
 * exporters write (stable with ReduceMax, unstable, e / sum and
 * e * Reciprocal(sum), axes as attribute or constant input by opset) on
 * small hand-built graphs become one Softmax / LogSoftmax (opset 13),
 * checked numerically against the unfused graph; near misses stay. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"

#include <stdio.h>
#include <string.h>

enum tail { DIV, RECIP, LOG };

typedef struct spec {
    int64_t opset;
    const char *shape;       /* of x; default "batch,4,6" */
    bool stable;             /* x - ReduceMax(x) before Exp */
    enum tail tail;
    int64_t sum_axes[2], max_axes[2];
    size_t n_axes;           /* of both reductions (default 1) */
    int64_t sum_keep;        /* keepdims of ReduceSum (default 1) */
    bool sum_noop;           /* noop_with_empty_axes=1 on ReduceSum */
    const char *sum_of;      /* what ReduceSum reads (default "e") */
    const char *extra_out;   /* an intermediate also a graph output */
    bool extra_neg;          /* ... or read by a Neg whose output is one */
} spec;

/* A ReduceSum / ReduceMax with its axes as input from `input_opset` on. */
static void reduce(mb *b, Onnx__GraphProto *g, int64_t opset, const char *op, const char *in, const char *out,
                   const int64_t *axes, size_t n, int64_t input_opset, int64_t keep, bool noop)
{
    Onnx__NodeProto *nd;
    if (opset >= input_opset) {
        char an[64], ins[128];
        snprintf(an, sizeof an, "%s_axes", out);
        snprintf(ins, sizeof ins, "%s,%s", in, an);
        mb_int64_data(b, mb_initializer(b, g, an, KN_I64, (int64_t[]){(int64_t)n}, 1), axes, n);
        nd = mb_node(b, g, op, out, ins, out);
    } else {
        nd = mb_node(b, g, op, out, in, out);
        mb_attr_ints(b, nd, "axes", axes, n);
    }
    if (keep != 1)
        mb_attr_i(b, nd, "keepdims", keep);
    if (noop)
        mb_attr_i(b, nd, "noop_with_empty_axes", 1);
}

/* Builds y = softmax / log-softmax of x as `s` describes; node names
 * "max", "sub", "exp", "sum", "div", "recip", "mul", "log", "out". */
static Onnx__ModelProto *build(mb *b, spec s)
{
    Onnx__ModelProto *m = mb_model(b, s.opset);
    Onnx__GraphProto *g = m->graph;
    size_t n = s.n_axes ? s.n_axes : 1;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, s.shape ? s.shape : "batch,4,6"));
    const char *d = "x";
    if (s.stable) {
        reduce(b, g, s.opset, "ReduceMax", "x", "max", s.max_axes, n, 18, 1, false);
        mb_node(b, g, "Sub", "sub", "x,max", "d");
        d = "d";
    }
    mb_node(b, g, "Exp", "exp", d, "e");
    reduce(b, g, s.opset, "ReduceSum", s.sum_of ? s.sum_of : "e", "sum", s.sum_axes, n, 13,
           s.sum_keep ? s.sum_keep : 1, s.sum_noop);
    char ins[64];
    if (s.tail == DIV) {
        mb_node(b, g, "Div", "div", "e,sum", "y");
    } else if (s.tail == RECIP) {
        mb_node(b, g, "Reciprocal", "recip", "sum", "r");
        mb_node(b, g, "Mul", "mul", "r,e", "y");
    } else {
        mb_node(b, g, "Log", "log", "sum", "l");
        snprintf(ins, sizeof ins, "%s,l", d);
        mb_node(b, g, "Sub", "out", ins, "y");
    }
    mb_output(b, g, "y", NULL);
    if (s.extra_out && s.extra_neg) {
        mb_node(b, g, "Neg", "neg", s.extra_out, "z");
        mb_output(b, g, "z", NULL);
    } else if (s.extra_out) {
        mb_output(b, g, s.extra_out, NULL);
    }
    return m;
}

static void expect_fused(spec s, const char *op, int64_t axis, uint32_t n_origins)
{
    mb *b = mb_new();
    Onnx__ModelProto *m = build(b, s);
    kn_graph *g = fc_apply(b, m, kn_pass_fuse_act, 1e-5);
    assert_int_equal(g->n_nodes, 1);
    const kn_node *n = pc_find(g, op);
    assert_non_null(n);
    assert_int_equal(n->op, strcmp(op, "Softmax") == 0 ? KN_OP_Softmax : KN_OP_LogSoftmax);
    assert_int_equal(n->opset, 13);
    assert_string_equal(n->domain, "");
    const kn_attr *a = kn_node_attr(n, "axis");
    assert_non_null(a);
    assert_int_equal(a->kind, KN_ATTR_INT);
    assert_int_equal(a->u.i, axis);
    assert_int_equal(n->n_inputs, 1);
    assert_string_equal(g->values[n->inputs[0]].name, "x");
    assert_true(fc_origins(n, n_origins, "exp"));
    assert_true(fc_origins(n, n_origins, "sum"));
    kn_graph_destroy(g);
    mb_free(b);
}

static void expect_nothing(spec s)
{
    mb *b = mb_new();
    Onnx__ModelProto *m = build(b, s);
    kn_graph *g0 = pc_import(b, m);
    uint32_t n0 = g0->n_nodes;
    kn_graph_destroy(g0);
    kn_graph *g = fc_apply(b, m, kn_pass_fuse_act, 0);
    assert_int_equal(g->n_nodes, n0);
    assert_int_equal(pc_count(g, "Softmax") + pc_count(g, "LogSoftmax"), 0);
    kn_graph_destroy(g);
    mb_free(b);
}

/* torch's stable form at opset 17: ReduceMax axes attribute, ReduceSum
 * axes input, both -1 */
static void test_stable_div(void **state)
{
    (void)state;
    expect_fused((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {-1}}, "Softmax", 2,
                 5);
}

/* opset 18: both axes inputs, 2 and -1 (the same axis of a rank-3 x) */
static void test_stable_opset18_mixed_sign(void **state)
{
    (void)state;
    expect_fused((spec){.opset = 18, .stable = true, .tail = DIV, .sum_axes = {2}, .max_axes = {-1}}, "Softmax", 2, 5);
}

/* opset 11: both axes attributes, a middle axis */
static void test_stable_opset11_axis1(void **state)
{
    (void)state;
    expect_fused((spec){.opset = 11, .stable = true, .tail = DIV, .sum_axes = {1}, .max_axes = {-2}}, "Softmax", 1, 5);
}

/* e * Reciprocal(ReduceSum(e)) */
static void test_stable_reciprocal(void **state)
{
    (void)state;
    expect_fused((spec){.opset = 17, .stable = true, .tail = RECIP, .sum_axes = {-1}, .max_axes = {-1}}, "Softmax", 2,
                 6);
}

/* Exp(x) / ReduceSum(Exp(x)): differs from the stable kernel by rounding */
static void test_unstable(void **state)
{
    (void)state;
    expect_fused((spec){.opset = 13, .tail = DIV, .sum_axes = {0}}, "Softmax", 0, 3);
    expect_fused((spec){.opset = 13, .tail = RECIP, .sum_axes = {-1}}, "Softmax", 2, 4);
}

/* (x - max) - Log(ReduceSum(Exp(x - max))), and x - Log(ReduceSum(Exp(x))) */
static void test_log_softmax(void **state)
{
    (void)state;
    expect_fused((spec){.opset = 17, .stable = true, .tail = LOG, .sum_axes = {-1}, .max_axes = {2}}, "LogSoftmax", 2,
                 6);
    expect_fused((spec){.opset = 11, .tail = LOG, .sum_axes = {1}}, "LogSoftmax", 1, 4);
}

/* different axes; two axes; noop_with_empty_axes; ReduceSum of x rather
 * than e */
static void test_not_fused_reductions(void **state)
{
    (void)state;
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {1}});
    expect_nothing((spec){.opset = 18, .stable = true, .tail = DIV, .sum_axes = {2}, .max_axes = {1}});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {1, 2}, .max_axes = {1, 2},
                          .n_axes = 2});
    expect_nothing((spec){.opset = 11, .tail = LOG, .sum_axes = {1, 2}, .n_axes = 2});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {-1},
                          .sum_noop = true});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {-1}, .sum_of = "x"});
    expect_nothing((spec){.opset = 13, .tail = RECIP, .sum_axes = {-1}, .sum_of = "x"});
}

/* keepdims 0 on ReduceSum: e [6,6] / s [6] broadcasts along the rows, not
 * a softmax */
static void test_not_fused_keepdims0(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "6,6"));
    mb_node(b, g, "Exp", "exp", "x", "e");
    reduce(b, g, 17, "ReduceSum", "e", "sum", (int64_t[]){-1}, 1, 13, 0, false);
    mb_node(b, g, "Div", "div", "e,sum", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = fc_apply(b, m, kn_pass_fuse_act, 0);
    assert_int_equal(g1->n_nodes, 3);
    assert_int_equal(pc_count(g1, "Softmax"), 0);
    kn_graph_destroy(g1);
    mb_free(b);
    /* keepdims 0 on the ReduceMax of the stable form */
    b = mb_new();
    m = mb_model(b, 17);
    g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "6,6"));
    reduce(b, g, 17, "ReduceMax", "x", "max", (int64_t[]){-1}, 1, 18, 0, false);
    mb_node(b, g, "Sub", "sub", "x,max", "d");
    mb_node(b, g, "Exp", "exp", "d", "e");
    reduce(b, g, 17, "ReduceSum", "e", "sum", (int64_t[]){-1}, 1, 13, 1, false);
    mb_node(b, g, "Div", "div", "e,sum", "y");
    mb_output(b, g, "y", NULL);
    g1 = fc_apply(b, m, kn_pass_fuse_act, 0);
    assert_int_equal(g1->n_nodes, 5);
    assert_int_equal(pc_count(g1, "Softmax"), 0);
    kn_graph_destroy(g1);
    mb_free(b);
}

/* an intermediate (x - max, e, the sum, its reciprocal, the log) also a
 * graph output or read by another node */
static void test_not_fused_intermediate_read(void **state)
{
    (void)state;
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {-1},
                          .extra_out = "d"});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {-1},
                          .extra_out = "e"});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {-1},
                          .extra_out = "sum"});
    expect_nothing((spec){.opset = 17, .tail = RECIP, .sum_axes = {-1}, .extra_out = "r"});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = LOG, .sum_axes = {-1}, .max_axes = {-1},
                          .extra_out = "l"});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = LOG, .sum_axes = {-1}, .max_axes = {-1},
                          .extra_out = "e"});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = DIV, .sum_axes = {-1}, .max_axes = {-1},
                          .extra_out = "e", .extra_neg = true});
    expect_nothing((spec){.opset = 17, .tail = RECIP, .sum_axes = {-1}, .extra_out = "sum", .extra_neg = true});
    expect_nothing((spec){.opset = 17, .stable = true, .tail = LOG, .sum_axes = {-1}, .max_axes = {-1},
                          .extra_out = "d", .extra_neg = true});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stable_div),
        cmocka_unit_test(test_stable_opset18_mixed_sign),
        cmocka_unit_test(test_stable_opset11_axis1),
        cmocka_unit_test(test_stable_reciprocal),
        cmocka_unit_test(test_unstable),
        cmocka_unit_test(test_log_softmax),
        cmocka_unit_test(test_not_fused_reductions),
        cmocka_unit_test(test_not_fused_keepdims0),
        cmocka_unit_test(test_not_fused_intermediate_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
