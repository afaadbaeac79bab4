/* passes/fuse_rotary.c: the rotate-half rotary embedding of Llama/Qwen2
 * exports, x * cos + Concat(Neg(x[..., h:]), x[..., :h]) * sin, becomes
 * kiln RotaryHalf(x, cos, sin) on small hand-built graphs (checked
 * numerically against the unfused graph), with the half as a constant or as
 * the exporter's Shape/Gather/Div/Unsqueeze chain; near misses stay. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"

#include <string.h>

static void ints(mb *b, Onnx__GraphProto *g, const char *name, int64_t v, bool scalar)
{
    int64_t one = 1;
    mb_int64_data(b, mb_initializer(b, g, name, KN_I64, scalar ? NULL : &one, scalar ? 0 : 1), &v, 1);
}

/* x [batch, 2, seq, d] (x_dims), cos and sin inputs [batch, 1, seq, d];
 * constants for the Slices. */
static Onnx__GraphProto *graph(mb *b, Onnx__ModelProto **m, const char *x_dims, const char *cs_dims)
{
    *m = mb_model(b, 17);
    Onnx__GraphProto *g = (*m)->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, x_dims));
    mb_input(b, g, "cos", mb_tensor_type(b, KN_F32, cs_dims));
    mb_input(b, g, "sin", mb_tensor_type(b, KN_F32, cs_dims));
    ints(b, g, "zero", 0, false);
    ints(b, g, "big", INT64_MAX, false);
    ints(b, g, "last", -1, false);
    ints(b, g, "three", 3, false);
    ints(b, g, "one", 1, false);
    ints(b, g, "two_s", 2, true);
    ints(b, g, "idx3", 3, true);
    ints(b, g, "idx1", 1, true);
    ints(b, g, "four", 4, false);
    ints(b, g, "h3", 3, false);
    ints(b, g, "h2", 2, false);
    return g;
}

/* r = Concat(n2, x1) on the last axis (n2 = Neg(x[h:]), x1 = x[:h]), then
 * y = x * cos + r * sin. */
static void tail(mb *b, Onnx__GraphProto *g)
{
    Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "n2,x1", "r");
    mb_attr_i(b, c, "axis", -1);
    mb_node(b, g, "Mul", "mul_cos", "x,cos", "a");
    mb_node(b, g, "Mul", "mul_sin", "r,sin", "s");
    mb_node(b, g, "Add", "add", "a,s", "y");
    mb_output(b, g, "y", NULL);
}

static void expect_rotary(Onnx__ModelProto *m, mb *b, uint32_t n_nodes)
{
    kn_graph *g = fc_apply(b, m, kn_pass_fuse_rotary, 1e-5);
    assert_int_equal(g->n_nodes, n_nodes);
    const kn_node *n = pc_find(g, "RotaryHalf");
    assert_int_equal(n->op, KN_OP_KILN_RotaryHalf);
    assert_int_equal(n->n_inputs, 3);
    assert_string_equal(g->values[n->inputs[1]].name, "cos");
    assert_string_equal(g->values[n->inputs[2]].name, "sin");
    assert_true(fc_origins(n, 7, "cat"));
    kn_graph_destroy(g);
}

static void expect_nothing(Onnx__ModelProto *m, mb *b)
{
    kn_graph *g = fc_apply_unchanged(b, m, kn_pass_fuse_rotary);
    assert_int_equal(pc_count(g, "RotaryHalf"), 0);
    kn_graph_destroy(g);
}

/* A constant half [4] of a static last dim 8. */
static void test_const_half(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m, "batch,2,seq,8", "batch,1,seq,8");
    mb_node(b, g, "Slice", "lo", "x,zero,four,last", "x1");
    mb_node(b, g, "Slice", "hi", "x,four,big,last,one", "x2");
    mb_node(b, g, "Neg", "neg", "x2", "n2");
    Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "n2,x1", "r");
    mb_attr_i(b, c, "axis", -1);
    mb_node(b, g, "Mul", "mul_cos", "cos,x", "a");
    mb_node(b, g, "Mul", "mul_sin", "sin,r", "s");
    mb_node(b, g, "Add", "add", "s,a", "y");
    mb_output(b, g, "y", NULL);
    expect_rotary(m, b, 1);
    mb_free(b);
}

/* The exporter's form: x = Transpose(q), the half from
 * Unsqueeze(Div(Gather(Shape(x), 3), 2)), axes [3]; the last dim symbolic
 * (3 in fc_apply: odd, so the halves are 1 and 2) or 8. */
static void test_shape_chain(void **state)
{
    (void)state;
    const char *dims[2] = {"batch,seq,2,dh", "batch,seq,2,8"};
    const char *cs[2] = {"batch,1,seq,dh", "batch,1,seq,8"};
    for (int i = 0; i < 2; i++) {
        mb *b = mb_new();
        Onnx__ModelProto *m;
        Onnx__GraphProto *g = graph(b, &m, dims[i], cs[i]);
        g->input[0]->name = mb_strdup(b, "q");
        Onnx__NodeProto *t = mb_node(b, g, "Transpose", "tr", "q", "x");
        int64_t perm[4] = {0, 2, 1, 3};
        mb_attr_ints(b, t, "perm", perm, 4);
        mb_node(b, g, "Shape", "shape", "x", "sh");
        mb_node(b, g, "Gather", "gather", "sh,idx3", "d");
        mb_node(b, g, "Div", "div", "d,two_s", "h");
        mb_node(b, g, "Unsqueeze", "us1", "h,zero", "h1");
        mb_node(b, g, "Unsqueeze", "us2", "h,zero", "h2v");
        mb_node(b, g, "Slice", "lo", "x,zero,h1,three,one", "x1");
        mb_node(b, g, "Slice", "hi", "x,h2v,big,three,one", "x2");
        mb_node(b, g, "Neg", "neg", "x2", "n2");
        tail(b, g);
        expect_rotary(m, b, 2); /* Transpose, RotaryHalf: the shape chain is dead */
        mb_free(b);
    }
}

/* Must not fuse: a Slice not at the half (3 of 8); both on a non-last axis
 * (axis 1, half 2 of 4); the Neg on the first half; the rotated half also a
 * graph output; a shape chain on the wrong dim (Gather index 1). */
static void test_not_fused(void **state)
{
    (void)state;
    for (int v = 0; v < 5; v++) {
        mb *b = mb_new();
        Onnx__ModelProto *m;
        Onnx__GraphProto *g = graph(b, &m, v == 1 ? "batch,4,seq,8" : "batch,2,seq,8",
                                    v == 1 ? "batch,4,seq,8" : "batch,1,seq,8");
        if (v == 0) {
            mb_node(b, g, "Slice", "lo", "x,zero,h3,last", "x1");
            mb_node(b, g, "Slice", "hi", "x,h3,big,last", "x2");
        } else if (v == 1) {
            mb_node(b, g, "Slice", "lo", "x,zero,h2,one", "x1");
            mb_node(b, g, "Slice", "hi", "x,h2,big,one", "x2");
        } else if (v == 4) {
            mb_node(b, g, "Shape", "shape", "x", "sh");
            mb_node(b, g, "Gather", "gather", "sh,idx1", "d");
            mb_node(b, g, "Div", "div", "d,two_s", "h");
            mb_node(b, g, "Unsqueeze", "us", "h,zero", "h1");
            mb_node(b, g, "Slice", "lo", "x,zero,h1,last", "x1");
            mb_node(b, g, "Slice", "hi", "x,h1,big,last", "x2");
        } else {
            mb_node(b, g, "Slice", "lo", "x,zero,four,last", "x1");
            mb_node(b, g, "Slice", "hi", "x,four,big,last", "x2");
        }
        if (v == 2) { /* Concat(Neg(x[:h]), x[h:]) */
            mb_node(b, g, "Neg", "neg", "x1", "n2");
            Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "n2,x2", "r");
            mb_attr_i(b, c, "axis", -1);
        } else {
            mb_node(b, g, "Neg", "neg", "x2", "n2");
            Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "n2,x1", "r");
            mb_attr_i(b, c, "axis", v == 1 ? 1 : -1);
        }
        mb_node(b, g, "Mul", "mul_cos", "x,cos", "a");
        mb_node(b, g, "Mul", "mul_sin", "r,sin", "s");
        mb_node(b, g, "Add", "add", "a,s", "y");
        mb_output(b, g, "y", NULL);
        if (v == 3)
            mb_output(b, g, "r", NULL);
        expect_nothing(m, b);
        mb_free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_const_half),
        cmocka_unit_test(test_shape_chain),
        cmocka_unit_test(test_not_fused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
