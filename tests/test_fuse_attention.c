/* fuse-attention on small hand-built graphs: each pattern fused (checked
 * by node counts, kn_graph_verify and numerically against the unfused
 * graph on the CPU) and each must-not-fuse case left alone. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pass_check.h"
#include "runtime/cpu/exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void i64_init(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *v, size_t n, bool scalar)
{
    int64_t d[1] = {(int64_t)n};
    mb_int64_data(b, mb_initializer(b, g, name, KN_I64, d, scalar ? 0 : 1), v, n);
}

static void destroy2(kn_graph *a, kn_graph *b)
{
    kn_graph_destroy(a);
    kn_graph_destroy(b);
}

static void f32_scalar(mb *b, Onnx__GraphProto *g, const char *name, float v)
{
    mb_float_data(b, mb_initializer(b, g, name, KN_F32, NULL, 0), &v, 1);
}

/* Q [1,2,3,4], K [1,2,5,4], V [1,2,5,4]: Transpose(K) → MatMul → Mul 0.5 →
 * Add(mask [1,1,3,5]) → Softmax(-1) → MatMul(V). */
static Onnx__ModelProto *eager(mb *b, const char *mask_dims, int64_t axis, bool scores_out)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "1,2,3,4"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, "1,2,5,4"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "1,2,5,4"));
    if (mask_dims)
        mb_input(b, g, "mask", mb_tensor_type(b, KN_F32, mask_dims));
    f32_scalar(b, g, "c", 0.5f);
    mb_node(b, g, "Transpose", "kt", "k", "kT");
    mb_attr_ints(b, g->node[g->n_node - 1], "perm", (int64_t[]){0, 1, 3, 2}, 4);
    mb_node(b, g, "MatMul", "qk", "q,kT", "s0");
    mb_node(b, g, "Mul", "scale", "s0,c", "s1");
    if (mask_dims)
        mb_node(b, g, "Add", "mask_add", "s1,mask", "s2");
    mb_node(b, g, "Softmax", "softmax", mask_dims ? "s2" : "s1", "p");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", axis);
    mb_node(b, g, "MatMul", "pv", "p,v", "y");
    mb_output(b, g, "y", NULL);
    if (scores_out)
        mb_output(b, g, "s1", NULL);
    return m;
}

static void test_eager_mask(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g0, *g1 = pc_apply(b, eager(b, "1,1,3,5", -1, false), &g0, kn_pass_fuse_attention, kn_pass_dce,
                              (kn_pass_fn)NULL);
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *a = pc_find(g1, "Attention");
    assert_int_equal(a->opset, 23);
    assert_int_equal(a->n_inputs, 4);
    const kn_attr *sc = kn_node_attr(a, "scale"), *o = kn_node_attr(a, "_origins");
    assert_non_null(sc);
    assert_true(sc->u.f == 0.5f);
    assert_int_equal(kn_node_attr(a, "_kv_repeat")->u.i, 1);
    assert_non_null(o);
    assert_int_equal(o->n, 5); /* softmax, mask_add, scale, qk, pv */
    destroy2(g0, g1);
    mb_free(b);
}

static void test_eager_no_mask_axis3(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g0, *g1 = pc_apply(b, eager(b, NULL, 3, false), &g0, kn_pass_fuse_attention, kn_pass_dce,
                              (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Attention"), 1);
    assert_int_equal(g1->n_nodes, 1);
    destroy2(g0, g1);
    mb_free(b);
}

/* Q and Kᵀ scaled before the MatMul, the scores divided; Kᵀ is an input
 * (already transposed): a Transpose is made for the Attention's K. */
static void test_prescaled_pretransposed(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "2,2,3,4"));
    mb_input(b, g, "kT", mb_tensor_type(b, KN_F32, "2,2,4,6"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "2,2,6,3"));
    f32_scalar(b, g, "cq", 0.7f);
    f32_scalar(b, g, "ck", 0.6f);
    f32_scalar(b, g, "cd", 2.0f);
    mb_node(b, g, "Mul", "qs", "cq,q", "q1");
    mb_node(b, g, "Mul", "ks", "kT,ck", "k1");
    mb_node(b, g, "MatMul", "qk", "q1,k1", "s0");
    mb_node(b, g, "Div", "div", "s0,cd", "s1");
    mb_node(b, g, "Softmax", "softmax", "s1", "p");
    mb_node(b, g, "MatMul", "pv", "p,v", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_fuse_attention, kn_pass_dce, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Attention"), 1);
    assert_int_equal(pc_count(g1, "Transpose"), 1);
    assert_int_equal(g1->n_nodes, 2);
    const kn_attr *sc = kn_node_attr(pc_find(g1, "Attention"), "scale");
    assert_true(fabs(sc->u.f - 0.7 * 0.6 / 2.0) < 1e-7);
    destroy2(g0, g1);
    mb_free(b);
}

/* Llama's repeat_kv on K and V: Unsqueeze(x, 2) → Expand([1, 2, 2, 5, 4])
 * → Reshape([1, 4, 5, 4]); the Attention reads the 2 kv heads. With
 * symbolic shapes traced through Shape/Gather when `traced`. */
static Onnx__ModelProto *gqa(mb *b, int64_t rep_k, int64_t rep_v, bool traced)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, traced ? "b,4,3,4" : "1,4,3,4"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, traced ? "b,2,t,4" : "1,2,5,4"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, traced ? "b,2,t,4" : "1,2,5,4"));
    f32_scalar(b, g, "c", 0.5f);
    i64_init(b, g, "ax2", (int64_t[]){2}, 1, false);
    const char *xs[2] = {"k", "v"};
    int64_t reps[2] = {rep_k, rep_v};
    for (int i = 0; i < 2; i++) {
        char n[64], in[128], out[64];
        snprintf(n, sizeof n, "%s_un", xs[i]);
        snprintf(in, sizeof in, "%s,ax2", xs[i]);
        snprintf(out, sizeof out, "%s_u", xs[i]);
        mb_node(b, g, "Unsqueeze", n, in, out);
        if (!traced) {
            snprintf(n, sizeof n, "%s_eshape", xs[i]);
            i64_init(b, g, n, (int64_t[]){1, 2, reps[i], 5, 4}, 5, false);
            snprintf(n, sizeof n, "%s_rshape", xs[i]);
            i64_init(b, g, n, (int64_t[]){1, 2 * reps[i], 5, 4}, 4, false);
        } else {
            /* [b, 2, rep, t, 4] and [b, 2 * rep, t, 4] from Shape(x) */
            char nm[64], ins[256];
            snprintf(nm, sizeof nm, "%s_shape", xs[i]);
            snprintf(out, sizeof out, "%s_s", xs[i]);
            mb_node(b, g, "Shape", nm, xs[i], out);
            const char *dn[4] = {"d0", "d1", "d2", "d3"};
            for (int d = 0; d < 4; d++) {
                snprintf(nm, sizeof nm, "%s_i%d", xs[i], d);
                i64_init(b, g, nm, (int64_t[]){d}, 1, true);
                char gn[64], gi[128], go[64], un[64], uo[64], ui[128];
                snprintf(gn, sizeof gn, "%s_g%d", xs[i], d);
                snprintf(gi, sizeof gi, "%s_s,%s", xs[i], nm);
                snprintf(go, sizeof go, "%s_%s", xs[i], dn[d]);
                mb_node(b, g, "Gather", gn, gi, go);
                snprintf(un, sizeof un, "%s_gu%d", xs[i], d);
                snprintf(ui, sizeof ui, "%s,z0", go);
                snprintf(uo, sizeof uo, "%s_u%s", xs[i], dn[d]);
                mb_node(b, g, "Unsqueeze", un, ui, uo);
            }
            snprintf(nm, sizeof nm, "%s_rep", xs[i]);
            i64_init(b, g, nm, (int64_t[]){reps[i]}, 1, false);
            snprintf(nm, sizeof nm, "%s_repscalar", xs[i]);
            i64_init(b, g, nm, (int64_t[]){reps[i]}, 1, true);
            char mn[64], mi[128], mo[64];
            snprintf(mn, sizeof mn, "%s_mul", xs[i]);
            snprintf(mi, sizeof mi, "%s_d1,%s", xs[i], nm);
            snprintf(mo, sizeof mo, "%s_h", xs[i]);
            mb_node(b, g, "Mul", mn, mi, mo);
            snprintf(mn, sizeof mn, "%s_hu", xs[i]);
            snprintf(mi, sizeof mi, "%s,z0", mo);
            snprintf(mo, sizeof mo, "%s_uh", xs[i]);
            mb_node(b, g, "Unsqueeze", mn, mi, mo);
            const char *x = xs[i];
            snprintf(nm, sizeof nm, "%s_ecat", x);
            snprintf(ins, sizeof ins, "%s_ud0,%s_ud1,%s_rep,%s_ud2,%s_ud3", x, x, x, x, x);
            snprintf(out, sizeof out, "%s_eshape", x);
            mb_node(b, g, "Concat", nm, ins, out);
            mb_attr_i(b, g->node[g->n_node - 1], "axis", 0);
            snprintf(nm, sizeof nm, "%s_rcat", x);
            snprintf(ins, sizeof ins, "%s_ud0,%s_uh,%s_ud2,%s_ud3", x, x, x, x);
            snprintf(out, sizeof out, "%s_rshape", x);
            mb_node(b, g, "Concat", nm, ins, out);
            mb_attr_i(b, g->node[g->n_node - 1], "axis", 0);
        }
        snprintf(n, sizeof n, "%s_expand", xs[i]);
        snprintf(in, sizeof in, "%s_u,%s_eshape", xs[i], xs[i]);
        snprintf(out, sizeof out, "%s_e", xs[i]);
        mb_node(b, g, "Expand", n, in, out);
        snprintf(n, sizeof n, "%s_reshape", xs[i]);
        snprintf(in, sizeof in, "%s_e,%s_rshape", xs[i], xs[i]);
        snprintf(out, sizeof out, "%s_r", xs[i]);
        mb_node(b, g, "Reshape", n, in, out);
    }
    if (traced)
        i64_init(b, g, "z0", (int64_t[]){0}, 1, false);
    mb_node(b, g, "Transpose", "kt", "k_r", "kT");
    mb_attr_ints(b, g->node[g->n_node - 1], "perm", (int64_t[]){0, 1, 3, 2}, 4);
    mb_node(b, g, "MatMul", "qk", "q,kT", "s0");
    mb_node(b, g, "Mul", "scale", "s0,c", "s1");
    mb_node(b, g, "Softmax", "softmax", "s1", "p");
    mb_node(b, g, "MatMul", "pv", "p,v_r", "y");
    mb_output(b, g, "y", NULL);
    return m;
}

static void test_gqa_repeat_kv(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g0, *g1 = pc_apply(b, gqa(b, 2, 2, false), &g0, kn_pass_fuse_attention, kn_pass_dce, (kn_pass_fn)NULL);
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *a = pc_find(g1, "Attention");
    assert_string_equal(g1->values[a->inputs[1]].name, "k");
    assert_string_equal(g1->values[a->inputs[2]].name, "v");
    assert_int_equal(kn_node_attr(a, "_kv_repeat")->u.i, 2);
    destroy2(g0, g1);
    mb_free(b);
}

static void test_gqa_repeat_kv_traced(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g0, *g1 = pc_apply(b, gqa(b, 2, 2, true), &g0, kn_pass_fuse_attention, kn_pass_dce, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Attention"), 1);
    assert_int_equal(pc_count(g1, "Expand"), 0);
    assert_int_equal(g1->n_nodes, 1);
    destroy2(g0, g1);
    mb_free(b);
}

/* ---- must not fuse ---- */

static void unchanged(Onnx__ModelProto *(*make)(mb *), uint32_t attention)
{
    mb *b = mb_new();
    kn_graph *g0, *g1 = pc_apply(b, make(b), &g0, kn_pass_fuse_attention, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Attention"), attention);
    if (!attention)
        assert_int_equal(g1->n_nodes, g0->n_nodes);
    destroy2(g0, g1);
    mb_free(b);
}

static Onnx__ModelProto *softmax_axis2(mb *b) { return eager(b, "1,1,3,5", 2, false); }
/* Add would broadcast a [.., 1] mask over the keys; the op pads it with -inf */
static Onnx__ModelProto *mask_last_dim_1(mb *b) { return eager(b, "1,1,3,1", -1, false); }
static Onnx__ModelProto *mask_rank5(mb *b) { return eager(b, "1,1,1,3,5", -1, false); }
/* Add would broadcast the scores up to the mask's batch of 2 */
static Onnx__ModelProto *mask_batch_2(mb *b) { return eager(b, "2,1,3,5", -1, false); }
static Onnx__ModelProto *scores_read(mb *b) { return eager(b, "1,1,3,5", -1, true); }

static void test_no_fuse_softmax_axis(void **s) { (void)s; unchanged(softmax_axis2, 0); }
static void test_no_fuse_mask_padding(void **s) { (void)s; unchanged(mask_last_dim_1, 0); }
static void test_no_fuse_mask_rank(void **s) { (void)s; unchanged(mask_rank5, 0); }
static void test_no_fuse_mask_batch(void **s) { (void)s; unchanged(mask_batch_2, 0); }
static void test_no_fuse_scores_read(void **s) { (void)s; unchanged(scores_read, 0); }

/* The scale must be a constant. */
static void test_no_fuse_scale_input(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "1,2,3,4"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, "1,2,5,4"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "1,2,5,4"));
    mb_input(b, g, "c", mb_tensor_type(b, KN_F32, "1"));
    mb_node(b, g, "Transpose", "kt", "k", "kT");
    mb_attr_ints(b, g->node[g->n_node - 1], "perm", (int64_t[]){0, 1, 3, 2}, 4);
    mb_node(b, g, "MatMul", "qk", "q,kT", "s0");
    mb_node(b, g, "Mul", "scale", "s0,c", "s1");
    mb_node(b, g, "Softmax", "softmax", "s1", "p");
    mb_node(b, g, "MatMul", "pv", "p,v", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_fuse_attention, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Attention"), 0);
    destroy2(g0, g1);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eager_mask),
        cmocka_unit_test(test_eager_no_mask_axis3),
        cmocka_unit_test(test_prescaled_pretransposed),
        cmocka_unit_test(test_gqa_repeat_kv),
        cmocka_unit_test(test_gqa_repeat_kv_traced),
        cmocka_unit_test(test_no_fuse_softmax_axis),
        cmocka_unit_test(test_no_fuse_mask_padding),
        cmocka_unit_test(test_no_fuse_mask_rank),
        cmocka_unit_test(test_no_fuse_mask_batch),
        cmocka_unit_test(test_no_fuse_scores_read),
        cmocka_unit_test(test_no_fuse_scale_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
