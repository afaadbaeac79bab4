/* passes/merge_proj.c: projections reading one input become one product
 * on the concatenated weights and a Split; checked bit for bit against
 * the unmerged graph on the CPU backend, near misses left alone, and on
 * the exported test decoders (whole pipeline with and without the pass). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"
#include "passes/rewrite.h"
#include "runtime/cpu/util.h"
#include "runtime/cpu/exec.h"
#include "tensor_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_status pass(kn_graph *g, kn_diag *d)
{
    KN_TRY(kn_pass_infer_shapes(g, d));
    return kn_pass_merge_proj(g, d);
}

/* shapes, fuse-gemm (bias Adds -> GemmEpilogue), then the merge */
static kn_status pass_after_gemm(kn_graph *g, kn_diag *d)
{
    KN_TRY(kn_pass_infer_shapes(g, d));
    KN_TRY(kn_pass_fuse_gemm(g, d));
    return kn_pass_merge_proj(g, d);
}

/* x [batch, 8]; Wq [8, 8], Wk [8, 4], Wv [8, 4]; biases [8], [4], [1] */
static Onnx__GraphProto *graph(mb *b, Onnx__ModelProto **m)
{
    *m = mb_model(b, 17);
    Onnx__GraphProto *g = (*m)->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,8"));
    mb_input(b, g, "x2", mb_tensor_type(b, KN_F32, "batch,8"));
    int64_t qd[2] = {8, 8}, kd[2] = {8, 4}, bq[1] = {8}, bk[1] = {4}, b1[1] = {1};
    fc_f32(b, g, "Wq", qd, 2, -0.07f);
    fc_f32(b, g, "Wk", kd, 2, 0.05f);
    fc_f32(b, g, "Wv", kd, 2, -0.03f);
    fc_f32(b, g, "bq", bq, 1, 0.02f);
    fc_f32(b, g, "bk", bk, 1, -0.04f);
    fc_f32(b, g, "bv", b1, 1, 0.3f);
    return g;
}

/* Q, K, V: one MatMul on [8, 16] and a Split 8 | 4 | 4, exact */
static void test_qkv(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "MatMul", "q_proj", "x,Wq", "q");
    mb_node(b, g, "Relu", "rq", "q", "yq"); /* a reader of q before k is computed */
    mb_node(b, g, "MatMul", "k_proj", "x,Wk", "k");
    mb_node(b, g, "MatMul", "v_proj", "x,Wv", "v");
    mb_node(b, g, "Add", "kv", "k,v", "ykv");
    mb_output(b, g, "yq", NULL);
    mb_output(b, g, "ykv", NULL);
    kn_graph *kg = fc_apply(b, m, pass, 0);
    assert_int_equal(pc_count(kg, "MatMul"), 1);
    assert_int_equal(pc_count(kg, "Split"), 1);
    const kn_node *mm = pc_find(kg, "MatMul");
    const kn_tensor *w = kg->values[mm->inputs[1]].tensor;
    assert_non_null(w);
    assert_int_equal(w->dims[0], 8);
    assert_int_equal(w->dims[1], 16);
    assert_true(fc_origins(mm, 3, "q_proj"));
    /* the members' weights are gone: 8x16 floats of weights in the graph */
    size_t weight_bytes = 0;
    for (kn_id v = 0; v < kg->n_values; v++)
        if (kg->values[v].kind == KN_VAL_CONST && kg->values[v].tensor && kg->values[v].tensor->dtype == KN_F32)
            weight_bytes += kg->values[v].tensor->nbytes;
    assert_int_equal(weight_bytes, 8 * 16 * 4);
    const kn_node *sp = pc_find(kg, "Split");
    assert_int_equal(sp->n_outputs, 3);
    assert_string_equal(kg->values[sp->outputs[0]].name, "q");
    assert_string_equal(kg->values[sp->outputs[2]].name, "v");
    kn_graph_destroy(kg);
    mb_free(b);
}

/* Qwen2's q/k/v biases: GemmEpilogue(x, W, b) x 3 -> one GemmEpilogue on
 * [Wq|Wk|Wv] with [bq|bk|bv] (bv, one value, repeated), exact */
static void test_qkv_bias(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "MatMul", "q_proj", "x,Wq", "q0");
    mb_node(b, g, "Add", "q_bias", "q0,bq", "q");
    mb_node(b, g, "MatMul", "k_proj", "x,Wk", "k0");
    mb_node(b, g, "Add", "k_bias", "bk,k0", "k");
    mb_node(b, g, "MatMul", "v_proj", "x,Wv", "v0");
    mb_node(b, g, "Add", "v_bias", "v0,bv", "v");
    mb_output(b, g, "q", NULL);
    mb_node(b, g, "Mul", "kv", "k,v", "ykv");
    mb_output(b, g, "ykv", NULL);
    /* q is a graph output: pinned, so only k and v merge */
    kn_graph *kg = fc_apply(b, m, pass_after_gemm, 0);
    assert_int_equal(pc_count(kg, "GemmEpilogue"), 2);
    assert_int_equal(pc_count(kg, "Split"), 1);
    kn_graph_destroy(kg);
    mb_free(b);
    b = mb_new();
    g = graph(b, &m);
    mb_node(b, g, "MatMul", "q_proj", "x,Wq", "q0");
    mb_node(b, g, "Add", "q_bias", "q0,bq", "q");
    mb_node(b, g, "MatMul", "k_proj", "x,Wk", "k0");
    mb_node(b, g, "Add", "k_bias", "bk,k0", "k");
    mb_node(b, g, "MatMul", "v_proj", "x,Wv", "v0");
    mb_node(b, g, "Add", "v_bias", "v0,bv", "v");
    mb_node(b, g, "Neg", "rq", "q", "yq"); /* not an activation fuse-gemm takes */
    mb_node(b, g, "Mul", "kv", "k,v", "ykv");
    mb_output(b, g, "yq", NULL);
    mb_output(b, g, "ykv", NULL);
    kg = fc_apply(b, m, pass_after_gemm, 0);
    assert_int_equal(pc_count(kg, "GemmEpilogue"), 1);
    assert_int_equal(pc_count(kg, "Split"), 1);
    const kn_node *ge = pc_find(kg, "GemmEpilogue");
    assert_int_equal(kg->values[ge->inputs[2]].tensor->n_elems, 16);
    const kn_attr *orig = kn_node_attr(ge, "_origins");
    assert_non_null(orig);
    assert_int_equal(orig->n, 3);
    kn_graph_destroy(kg);
    mb_free(b);
}

/* Near misses: different inputs; a weight read elsewhere too; a Gemm with
 * transB next to a MatMul; a GemmEpilogue with an activation next to a
 * bias-only one; a MatMul next to a GemmEpilogue. */
static void test_not_merged(void **state)
{
    (void)state;
    for (int c = 0; c < 5; c++) {
        mb *b = mb_new();
        Onnx__ModelProto *m;
        Onnx__GraphProto *g = graph(b, &m);
        switch (c) {
        case 0:
            mb_node(b, g, "MatMul", "a", "x,Wk", "p");
            mb_node(b, g, "MatMul", "b", "x2,Wv", "q");
            break;
        case 1:
            mb_node(b, g, "MatMul", "a", "x,Wk", "p");
            mb_node(b, g, "MatMul", "b", "x,Wv", "q0");
            mb_node(b, g, "MatMul", "c", "x2,Wv", "q1");
            mb_node(b, g, "Add", "d", "q0,q1", "q");
            break;
        case 2: {
            mb_node(b, g, "MatMul", "a", "x,Wq", "p");
            Onnx__NodeProto *n = mb_node(b, g, "Gemm", "b", "x,Wq", "q");
            mb_attr_i(b, n, "transB", 1);
            break;
        }
        case 3:
            mb_node(b, g, "MatMul", "a", "x,Wk", "p0");
            mb_node(b, g, "Add", "ab", "p0,bk", "p");
            mb_node(b, g, "MatMul", "b", "x,Wv", "q0");
            mb_node(b, g, "Add", "bb", "q0,bv", "q1");
            mb_node(b, g, "Relu", "br", "q1", "q");
            break;
        case 4:
            mb_node(b, g, "MatMul", "a", "x,Wk", "p");
            mb_node(b, g, "MatMul", "b", "x,Wv", "q0");
            mb_node(b, g, "Add", "bb", "q0,bk", "q");
            break;
        }
        mb_node(b, g, "Add", "out", "p,q", "y");
        mb_output(b, g, "y", NULL);
        kn_graph *kg = fc_apply(b, m, c >= 3 ? pass_after_gemm : pass, 0);
        assert_int_equal(pc_count(kg, "Split"), 0);
        kn_graph_destroy(kg);
        mb_free(b);
    }
}

/* Runs g on the model's test_data_set_1 (a decode step over a past). */
static void run_data(const kn_graph *g, const char *dir, kn_rt_tensor **outs)
{
    kn_rt_tensor *in[16] = {0};
    assert_true(g->n_inputs <= 16);
    kn_diag *d = kn_diag_create(NULL, stderr);
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/test_data_set_1/input_%u.pb", dir, i);
        char *name = NULL;
        assert_int_equal(kn_tensor_read_pb(path, NULL, d, &in[i], &name), KN_OK);
        free(name);
    }
    assert_int_equal(kn_cpu_run(g, NULL, d, (const kn_rt_tensor *const *)in, g->n_inputs, outs, g->n_outputs), KN_OK);
    kn_diag_destroy(d);
    for (uint32_t i = 0; i < g->n_inputs; i++)
        kn_rt_tensor_free(NULL, in[i]);
}

/* The exported test decoders through the -O2 pipeline with and without
 * merge-proj (kv passes off: the CPU backend runs the fused Attention
 * over the model's own past inputs): the same outputs to the bit, and
 * the attention's projections merged (GPT-2 has one c_attn already). */
static void test_decoders(void **state)
{
    (void)state;
    static const char *const models[] = {"llama_gqa_tiny", "qwen2_tiny", "gpt2_tiny"};
    static const uint32_t want_splits[] = {2, 2, 0};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        char dir[1024], path[1100];
        snprintf(dir, sizeof dir, "%s/tests/models/%s", KN_SOURCE_DIR, models[i]);
        snprintf(path, sizeof path, "%s/model.onnx", dir);
        kn_graph *a = NULL, *c = NULL;
        kn_diag *d = kn_diag_create(NULL, stderr);
        assert_int_equal(kn_import_onnx_file(path, NULL, NULL, d, &a), KN_OK);
        assert_int_equal(kn_import_onnx_file(path, NULL, NULL, d, &c), KN_OK);
        const char *off[] = {"kv-cache", "kv-mask", "kv-rotary", "merge-proj"};
        kn_pipeline_opts oa = {.verify_each = true, .disabled = off, .n_disabled = 4};
        kn_pipeline_opts oc = {.verify_each = true, .disabled = off, .n_disabled = 3};
        assert_int_equal(kn_pipeline_run(a, &oa, d), KN_OK);
        assert_int_equal(kn_pipeline_run(c, &oc, d), KN_OK);
        kn_diag_destroy(d);
        uint32_t splits_a = pc_count(a, "Split"), splits_c = pc_count(c, "Split");
        print_message("%s: %u Split nodes added, products %u -> %u\n", models[i], splits_c - splits_a,
                      pc_count(a, "MatMul") + pc_count(a, "GemmEpilogue"),
                      pc_count(c, "MatMul") + pc_count(c, "GemmEpilogue"));
        assert_int_equal(splits_c - splits_a, want_splits[i]);
        kn_rt_tensor *x[64] = {0}, *y[64] = {0};
        assert_true(a->n_outputs <= 64);
        run_data(a, dir, x);
        run_data(c, dir, y);
        for (uint32_t o = 0; o < a->n_outputs; o++) {
            assert_int_equal(x[o]->nbytes, y[o]->nbytes);
            assert_memory_equal(x[o]->data, y[o]->data, x[o]->nbytes);
            kn_rt_tensor_free(NULL, x[o]);
            kn_rt_tensor_free(NULL, y[o]);
        }
        kn_graph_destroy(a);
        kn_graph_destroy(c);
    }
}

static void check_alloc_fail(const kn_graph *g)
{
    assert_int_equal(pc_count(g, "GemmEpilogue") + pc_count(g, "MatMul"), 1);
    assert_int_equal(pc_count(g, "Split"), 1);
}

/* The whole pipeline on Q, K, V projections with biases, failing the Nth
 * allocation for every N: a clean KN_ERR_NOMEM or the merged result,
 * nothing leaked. */
static void test_alloc_fail(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m);
    mb_node(b, g, "MatMul", "q_proj", "x,Wq", "q0");
    mb_node(b, g, "Add", "q_bias", "q0,bq", "q");
    mb_node(b, g, "MatMul", "k_proj", "x,Wk", "k0");
    mb_node(b, g, "Add", "k_bias", "bk,k0", "k");
    mb_node(b, g, "MatMul", "v_proj", "x,Wv", "v0");
    mb_node(b, g, "Add", "v_bias", "v0,bv", "v");
    mb_node(b, g, "Neg", "rq", "q", "yq");
    mb_node(b, g, "Mul", "kv", "k,v", "ykv");
    mb_output(b, g, "yq", NULL);
    mb_output(b, g, "ykv", NULL);
    pc_pipeline_alloc_sweep(b, m, check_alloc_fail);
    mb_free(b);
}

/* The merged Q|K|V weight (a buffer the pass gave the graph) and
 * --precision fp16: converted where it lies (no second weight-sized
 * buffer), every element as kn_f32_to_f16 gives it; not in place, and the
 * float32 bytes untouched, when a copy of the graph shares the data or
 * another constant overlaps the buffer. */
static const kn_tensor *merged_weight(kn_graph *g)
{
    const kn_node *mm = pc_find(g, "MatMul");
    assert_non_null(mm);
    const kn_tensor *w = g->values[mm->inputs[1]].tensor;
    assert_non_null(w);
    return w;
}

static void test_precision_in_place(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *og = graph(b, &m);
    mb_node(b, og, "MatMul", "q_proj", "x,Wq", "q");
    mb_node(b, og, "MatMul", "k_proj", "x,Wk", "k");
    mb_node(b, og, "MatMul", "v_proj", "x,Wv", "v");
    mb_attr_i(b, mb_node(b, og, "Concat", "cat", "q,k,v", "y"), "axis", -1);
    mb_output(b, og, "y", NULL);
    kn_precision_opts po = {KN_F16, NULL, 0, false};
    float orig[8 * 16];
    for (int mode = 0; mode < 3; mode++) { /* alone, a clone alive, an overlapping constant */
        kn_graph *g = pc_import(b, m), *clone = NULL;
        kn_diag *d = kn_diag_create(NULL, stderr);
        assert_int_equal(pass(g, d), KN_OK);
        const kn_tensor *w = merged_weight(g);
        assert_true(w->owned && w->dtype == KN_F32 && w->nbytes == sizeof orig);
        const void *p = w->data;
        memcpy(orig, p, sizeof orig);
        if (mode == 1)
            assert_int_equal(kn_graph_clone(g, &clone), KN_OK);
        if (mode == 2) { /* a second constant viewing the buffer's second half */
            kn_tensor *t2 = kn_graph_alloc(g, sizeof *t2);
            int64_t *dims = kn_graph_alloc(g, 2 * sizeof *dims);
            assert_true(t2 && dims);
            *t2 = *w;
            dims[0] = 4;
            dims[1] = 16;
            t2->dims = dims;
            t2->n_elems = 64;
            t2->nbytes = 64 * 4;
            t2->data = (const char *)p + 64 * 4;
            kn_value v = {0};
            assert_int_equal(kn_rw_unique_name(g, "view", &v.name), KN_OK);
            v.kind = KN_VAL_CONST;
            v.tensor = t2;
            v.producer = KN_NONE;
            v.type = g->values[pc_find(g, "MatMul")->inputs[1]].type;
            kn_uses u;
            kn_id id;
            assert_int_equal(kn_uses_init(g, &u), KN_OK);
            assert_int_equal(kn_rw_add_value(g, &u, &v, &id), KN_OK);
            kn_uses_free(g, &u);
        }
        assert_int_equal(kn_pass_precision(g, &po, d), KN_OK);
        assert_int_equal(kn_graph_verify(g, d), KN_OK);
        w = merged_weight(g);
        assert_int_equal(w->dtype, KN_F16);
        assert_int_equal(w->nbytes, sizeof orig / 2);
        if (mode == 0)
            assert_ptr_equal(w->data, p);
        else
            assert_ptr_not_equal(w->data, p);
        for (int i = 0; i < 8 * 16; i++)
            assert_int_equal(((const uint16_t *)w->data)[i], kn_f32_to_f16(orig[i]));
        if (mode) /* the shared float32 bytes as they were */
            assert_memory_equal(p, orig, sizeof orig);
        kn_graph_destroy(clone);
        kn_graph_destroy(g);
        kn_diag_destroy(d);
    }
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qkv),
        cmocka_unit_test(test_qkv_bias),
        cmocka_unit_test(test_not_merged),
        cmocka_unit_test(test_decoders),
        cmocka_unit_test(test_alloc_fail),
        cmocka_unit_test(test_precision_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
