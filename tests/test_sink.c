/* The sink pass (passes/sink.c) on hand-built graphs: Transposes sunk
 * through elementwise chains into the next Transpose, Reshape chains
 * merged, order-keeping Transpose/Reshape pairs merged; each checked by
 * node counts, kn_graph_verify and numerically on the CPU, and the cases
 * that must stay as they are. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pass_check.h"
#include "passes/rewrite.h"

#include <string.h>

static void f32_init(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *dims, size_t rank)
{
    size_t n = 1;
    for (size_t i = 0; i < rank; i++)
        n *= (size_t)dims[i];
    float *v = mb_alloc(b, n * sizeof *v + 1);
    for (size_t i = 0; i < n; i++)
        v[i] = 0.25f + 0.37f * (float)i; /* every element different: a wrong transpose shows */
    mb_float_data(b, mb_initializer(b, g, name, KN_F32, dims, rank), v, n);
}

static void i64_init(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *v, size_t n)
{
    int64_t d[1] = {(int64_t)n};
    mb_int64_data(b, mb_initializer(b, g, name, KN_I64, d, 1), v, n);
}

static void transpose(mb *b, Onnx__GraphProto *g, const char *name, const char *in, const char *out,
                      const int64_t *perm, size_t n)
{
    mb_attr_ints(b, mb_node(b, g, "Transpose", name, in, out), "perm", perm, n);
}

static kn_graph *sink(mb *b, Onnx__ModelProto *m, kn_graph **before)
{
    return pc_apply(b, m, before, kn_pass_sink, (kn_pass_fn)NULL);
}

static void destroy2(kn_graph *a, kn_graph *b)
{
    kn_graph_destroy(a);
    kn_graph_destroy(b);
}

static const int64_t *perm_attr(const kn_graph *g)
{
    const kn_attr *p = kn_node_attr(pc_find(g, "Transpose"), "perm");
    assert_non_null(p);
    return p->u.ints;
}

/* ---- Transpose sinking ---- */

/* T → Relu → T⁻¹: both Transposes go. */
static void test_unary_cancel(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    mb_node(b, g, "Sigmoid", "sig", "x", "s");
    transpose(b, g, "t1", "s", "a", (int64_t[]){1, 2, 0}, 3);
    mb_node(b, g, "Relu", "relu", "a", "r");
    mb_node(b, g, "Neg", "neg", "r", "e");
    transpose(b, g, "t2", "e", "y", (int64_t[]){2, 0, 1}, 3); /* inverse of t1 */
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = sink(b, m, &g0);
    assert_int_equal(pc_count(g1, "Transpose"), 0);
    assert_int_equal(g1->n_nodes, 3);
    assert_string_equal(g1->values[pc_find(g1, "Neg")->outputs[0]].name, "y");
    destroy2(g0, g1);
    mb_free(b);
}

/* T → Add(const) → Sub(const, ·) → Mul(scalar) → Sigmoid → T: one
 * Transpose with both perms; the constants transposed at compile time
 * (one of lower rank, broadcast along a moved axis). */
static void test_binary_const_merge(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    f32_init(b, g, "c1", (int64_t[]){3, 1, 4}, 3); /* t is [3, 2, 4] */
    f32_init(b, g, "c2", (int64_t[]){2, 4}, 2);
    f32_init(b, g, "c3", (int64_t[]){1}, 1);
    transpose(b, g, "t1", "x", "a", (int64_t[]){1, 0, 2}, 3);
    mb_node(b, g, "Add", "add", "a,c1", "p");
    mb_node(b, g, "Sub", "sub", "c2,p", "q");
    mb_node(b, g, "Mul", "mul", "q,c3", "r");
    mb_node(b, g, "Sigmoid", "sig", "r", "e");
    transpose(b, g, "t2", "e", "y", (int64_t[]){0, 2, 1}, 3);
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = sink(b, m, &g0);
    assert_int_equal(pc_count(g1, "Transpose"), 1);
    assert_memory_equal(perm_attr(g1), ((int64_t[]){1, 2, 0}), 3 * sizeof(int64_t));
    assert_int_equal(pc_find(g1, "Add")->inputs[0], g1->inputs[0]);
    /* the chain's values now have x's layout */
    const kn_type *t = kn_rw_type(g1, pc_find(g1, "Sigmoid")->outputs[0]);
    assert_int_equal(t->shape.dims[0].value, 2);
    assert_int_equal(t->shape.dims[1].value, 3);
    destroy2(g0, g1);
    mb_free(b);
}

/* A run-time operand of one element broadcasts the same in any layout;
 * the transposed value may be the second operand. */
static void test_runtime_scalar_operand(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    mb_input(b, g, "s", mb_tensor_type(b, KN_F32, "1,1"));
    transpose(b, g, "t1", "x", "a", (int64_t[]){2, 0, 1}, 3);
    mb_node(b, g, "Div", "div", "s,a", "e"); /* the transposed value second */
    transpose(b, g, "t2", "e", "y", (int64_t[]){1, 2, 0}, 3); /* cancels */
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = sink(b, m, &g0);
    assert_int_equal(pc_count(g1, "Transpose"), 0);
    assert_int_equal(g1->n_nodes, 1);
    destroy2(g0, g1);
    mb_free(b);
}

/* Must not: the transposed value read twice; a run-time operand that
 * broadcasts along an axis; a chain that ends elsewhere; a chain value
 * that is a graph output. */
static void test_sink_kept(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    mb_input(b, g, "z", mb_tensor_type(b, KN_F32, "4"));
    /* read twice */
    transpose(b, g, "t1", "x", "a", (int64_t[]){0, 2, 1}, 3);
    mb_node(b, g, "Relu", "relu", "a", "r");
    transpose(b, g, "t2", "r", "y1", (int64_t[]){0, 2, 1}, 3);
    mb_node(b, g, "Abs", "abs", "a", "y2");
    /* a run-time operand with broadcasting */
    transpose(b, g, "t3", "x", "c", (int64_t[]){1, 0, 2}, 3);
    mb_node(b, g, "Add", "add", "c,z", "e");
    transpose(b, g, "t4", "e", "y3", (int64_t[]){1, 0, 2}, 3);
    /* ends in a MatMul */
    transpose(b, g, "t5", "x", "f", (int64_t[]){0, 2, 1}, 3);
    mb_node(b, g, "Tanh", "tanh", "f", "h");
    mb_node(b, g, "MatMul", "mm", "x,h", "y4");
    /* the chain's value is a graph output */
    transpose(b, g, "t6", "x", "k", (int64_t[]){2, 1, 0}, 3);
    mb_node(b, g, "Exp", "exp", "k", "y5");
    transpose(b, g, "t7", "y5", "y6", (int64_t[]){2, 1, 0}, 3);
    const char *outs[] = {"y1", "y2", "y3", "y4", "y5", "y6"};
    for (int i = 0; i < 6; i++)
        mb_output(b, g, outs[i], NULL);
    kn_graph *g0, *g1 = sink(b, m, &g0);
    assert_int_equal(pc_count(g1, "Transpose"), 7);
    assert_int_equal(g1->n_nodes, g0->n_nodes);
    destroy2(g0, g1);
    mb_free(b);
}

/* ---- Reshape merging ---- */

/* R1 → R2 with 0 entries: resolved against R1's target (a literal, or
 * R1's own 0 copying x's dim); R1 → R2 giving x's shape: both go. */
static void test_reshape_merge(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    i64_init(b, g, "s1", (int64_t[]){6, 4}, 2);
    i64_init(b, g, "s2", (int64_t[]){0, 2, 2}, 3);    /* 0: R1's 6 */
    i64_init(b, g, "s3", (int64_t[]){0, 12}, 2);
    i64_init(b, g, "s4", (int64_t[]){0, -1, 2}, 3);   /* 0: R3's 0, x's 2 */
    i64_init(b, g, "s5", (int64_t[]){2, 3, 4}, 3);
    mb_node(b, g, "Relu", "relu", "x", "x1");
    mb_node(b, g, "Reshape", "r1", "x1,s1", "a");
    mb_node(b, g, "Reshape", "r2", "a,s2", "y1");
    mb_node(b, g, "Reshape", "r3", "x1,s3", "c");
    mb_node(b, g, "Reshape", "r4", "c,s4", "y2");
    mb_node(b, g, "Abs", "abs", "x", "x2");
    mb_node(b, g, "Reshape", "r5", "x2,s1", "e");
    mb_node(b, g, "Reshape", "r6", "e,s5", "y3"); /* x2's shape again */
    mb_output(b, g, "y1", NULL);
    mb_output(b, g, "y2", NULL);
    mb_output(b, g, "y3", NULL);
    kn_graph *g0, *g1 = sink(b, m, &g0);
    assert_int_equal(pc_count(g1, "Reshape"), 2);
    assert_int_equal(g1->n_nodes, 4);
    assert_string_equal(g1->values[pc_find(g1, "Abs")->outputs[0]].name, "y3");
    for (kn_id k = 0; k < g1->n_nodes; k++) {
        const kn_node *n = &g1->nodes[k];
        if (n->op != KN_OP_Reshape)
            continue;
        int64_t s[4];
        size_t ns;
        assert_true(kn_rw_const_ints(g1, n->inputs[1], s, 4, &ns));
        assert_int_equal(g1->values[n->inputs[0]].producer, 0); /* the Relu */
        if (strcmp(g1->values[n->outputs[0]].name, "y1") == 0)
            assert_memory_equal(s, ((int64_t[]){6, 2, 2}), 3 * sizeof *s);
        else
            assert_memory_equal(s, ((int64_t[]){0, -1, 2}), 3 * sizeof *s);
    }
    destroy2(g0, g1);
    mb_free(b);
}

/* Must not: R1's dim behind R2's 0 is dynamic (R1 wrote -1); R1's
 * output read twice; R2's target computed at run time. */
static void test_reshape_kept(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "n,12"));
    mb_input(b, g, "shp", mb_tensor_type(b, KN_I64, "2"));
    i64_init(b, g, "s1", (int64_t[]){-1, 3, 4}, 3);
    i64_init(b, g, "s2", (int64_t[]){0, 12}, 2);
    mb_node(b, g, "Reshape", "r1", "x,s1", "a");
    mb_node(b, g, "Reshape", "r2", "a,s2", "y1");   /* a's dim 0 is -1 of a dynamic size */
    mb_node(b, g, "Reshape", "r3", "x,s1", "c");
    mb_node(b, g, "Reshape", "r4", "c,s2", "y2");
    mb_node(b, g, "Relu", "relu", "c", "y3");       /* c read twice */
    mb_node(b, g, "Reshape", "r5", "x,s1", "e");
    mb_node(b, g, "Reshape", "r6", "e,shp", "y4");  /* target at run time */
    const char *outs[] = {"y1", "y2", "y3", "y4"};
    for (int i = 0; i < 4; i++)
        mb_output(b, g, outs[i], NULL);
    kn_graph *g0 = pc_import(b, m), *g1 = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_sink(g1, d), KN_OK);
    assert_int_equal(kn_graph_verify(g1, d), KN_OK);
    kn_diag_destroy(d);
    assert_int_equal(pc_count(g1, "Reshape"), 6);
    destroy2(g0, g1);
    mb_free(b);
}

/* ---- Transpose ↔ Reshape ---- */

/* A Transpose that moves only size-1 dims keeps the element order: with
 * the Reshape it feeds, one Reshape (none when that gives x's shape);
 * fed by a Reshape with a static output, that Reshape takes its shape. */
static void test_transpose_reshape(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,1,3,4"));
    mb_input(b, g, "w", mb_tensor_type(b, KN_F32, "2,12"));
    i64_init(b, g, "s1", (int64_t[]){0, 24}, 2);      /* 0: t1's dim 0 = x's dim 1 = 1 */
    i64_init(b, g, "s2", (int64_t[]){2, 1, 3, 4}, 4);
    i64_init(b, g, "s3", (int64_t[]){2, 3, 1, 4}, 4);
    mb_node(b, g, "Relu", "relu", "x", "x1");
    transpose(b, g, "t1", "x1", "a", (int64_t[]){1, 0, 2, 3}, 4); /* [1, 2, 3, 4] */
    mb_node(b, g, "Reshape", "r1", "a,s1", "y1");                   /* [1, 24] */
    transpose(b, g, "t2", "x1", "c", (int64_t[]){0, 2, 1, 3}, 4); /* [2, 3, 1, 4] */
    mb_node(b, g, "Reshape", "r2", "c,s2", "y2");                   /* x1's shape: identity */
    mb_node(b, g, "Reshape", "r3", "w,s3", "e");                    /* [2, 3, 1, 4] */
    transpose(b, g, "t3", "e", "y3", (int64_t[]){0, 2, 1, 3}, 4); /* [2, 1, 3, 4] */
    mb_output(b, g, "y1", NULL);
    mb_output(b, g, "y2", NULL);
    mb_output(b, g, "y3", NULL);
    kn_graph *g0, *g1 = sink(b, m, &g0);
    assert_int_equal(pc_count(g1, "Transpose"), 0);
    assert_int_equal(pc_count(g1, "Reshape"), 2);
    assert_string_equal(g1->values[pc_find(g1, "Relu")->outputs[0]].name, "y2");
    for (kn_id k = 0; k < g1->n_nodes; k++) {
        const kn_node *n = &g1->nodes[k];
        int64_t s[4];
        size_t ns;
        if (n->op != KN_OP_Reshape)
            continue;
        assert_true(kn_rw_const_ints(g1, n->inputs[1], s, 4, &ns));
        if (strcmp(g1->values[n->outputs[0]].name, "y1") == 0)
            assert_memory_equal(s, ((int64_t[]){1, 24}), 2 * sizeof *s);
        else
            assert_memory_equal(s, ((int64_t[]){2, 1, 3, 4}), 4 * sizeof *s);
    }
    destroy2(g0, g1);
    mb_free(b);
}

/* Must not: a real permutation; dims that may or may not be 1 (dynamic);
 * a Reshape → Transpose whose output shape is not static. */
static void test_transpose_reshape_kept(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "n,k"));
    mb_input(b, g, "w", mb_tensor_type(b, KN_F32, "n,12"));
    i64_init(b, g, "s1", (int64_t[]){4, 6}, 2);
    i64_init(b, g, "s2", (int64_t[]){-1}, 1);
    i64_init(b, g, "s3", (int64_t[]){0, 3, 1, 4}, 4);
    transpose(b, g, "t1", "x", "a", (int64_t[]){0, 2, 1}, 3);
    mb_node(b, g, "Reshape", "r1", "a,s1", "y1");
    transpose(b, g, "t2", "v", "c", (int64_t[]){1, 0}, 2);
    mb_node(b, g, "Reshape", "r2", "c,s2", "y2");
    mb_node(b, g, "Reshape", "r3", "w,s3", "e");
    transpose(b, g, "t3", "e", "y3", (int64_t[]){0, 2, 1, 3}, 4); /* [n, 1, 3, 4] */
    mb_output(b, g, "y1", NULL);
    mb_output(b, g, "y2", NULL);
    mb_output(b, g, "y3", NULL);
    kn_graph *g0 = pc_import(b, m), *g1 = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_sink(g1, d), KN_OK);
    assert_int_equal(kn_graph_verify(g1, d), KN_OK);
    kn_diag_destroy(d);
    assert_int_equal(pc_count(g1, "Transpose"), 3);
    assert_int_equal(pc_count(g1, "Reshape"), 3);
    destroy2(g0, g1);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_cancel),
        cmocka_unit_test(test_binary_const_merge),
        cmocka_unit_test(test_runtime_scalar_operand),
        cmocka_unit_test(test_sink_kept),
        cmocka_unit_test(test_reshape_merge),
        cmocka_unit_test(test_reshape_kept),
        cmocka_unit_test(test_transpose_reshape),
        cmocka_unit_test(test_transpose_reshape_kept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
