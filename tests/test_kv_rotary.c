/* The kv-rotary pass (passes/kv_rotary.c): kiln.RotaryHalf on a
 * PagedAttention's Q and K folded into the node (cos/sin inputs 4, 5,
 * rotary = 1). On a hand-built one-layer decoder (with its mask kept at
 * input 3): the rewrite, the CPU kernel against the unfused graph to the
 * bit (output and cache), the graphs it must leave alone, an
 * allocation-failure sweep of the pipeline; on the committed tiny decoders
 * (llama_gqa_tiny, qwen2_tiny): the plan round trip and a CPU session's
 * logits over steps of 7, 1, 1, 1, 7 tokens bit-identical to the plan
 * compiled without the pass. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/plan_write.h"
#include "kiln/runtime.h"
#include "kiln/session.h"
#include "pass_check.h"
#include "passes/fuse_match.h"
#include "passes/rewrite.h"
#include "runtime/cpu/exec.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODELS KN_SOURCE_DIR "/tests/models/"

typedef enum variant {
    V_OK,
    V_DIFF_COS, /* K's rotary reads another cos */
    V_Q_ONLY,   /* a Q rotary without a K one */
    V_ROT_READ, /* Q's rotary output is also a graph output */
    V_HEAD_COS, /* cos differs per head [1, 2, seq, 4] */
    V_SWAPPED   /* K's rotary reads (k, sin, cos) */
} variant;

/* y = Softmax(Qr Krᵀ · 0.5 + mask) V over present = Concat(past, new),
 * Qr = RotaryHalf(q, cos, sin), Kr = RotaryHalf(k, cos, sin), 2 heads of 4. */
static Onnx__ModelProto *decoder(mb *b, variant var)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_opset(b, m, "kiln", 1);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "1,2,seq,4"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, "1,2,seq,4"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "1,2,seq,4"));
    mb_input(b, g, "mask", mb_tensor_type(b, KN_F32, "1,1,seq,total"));
    mb_input(b, g, "cos", mb_tensor_type(b, KN_F32, var == V_HEAD_COS ? "1,2,seq,4" : "1,1,seq,4"));
    mb_input(b, g, "sin", mb_tensor_type(b, KN_F32, "seq,4"));
    mb_input(b, g, "cos2", mb_tensor_type(b, KN_F32, "1,1,seq,4"));
    mb_input(b, g, "past_key_values.0.key", mb_tensor_type(b, KN_F32, "1,2,past,4"));
    mb_input(b, g, "past_key_values.0.value", mb_tensor_type(b, KN_F32, "1,2,past,4"));
    float half = 0.5f;
    mb_float_data(b, mb_initializer(b, g, "c", KN_F32, NULL, 0), &half, 1);
    mb_node(b, g, "RotaryHalf", "rot_q", "q,cos,sin", "qr")->domain = mb_strdup(b, "kiln");
    const char *kin = var == V_DIFF_COS ? "k,cos2,sin" : var == V_SWAPPED ? "k,sin,cos" : "k,cos,sin";
    if (var != V_Q_ONLY)
        mb_node(b, g, "RotaryHalf", "rot_k", kin, "kr")->domain = mb_strdup(b, "kiln");
    mb_node(b, g, "Concat", "cat_k", var == V_Q_ONLY ? "past_key_values.0.key,k" : "past_key_values.0.key,kr",
            "present.0.key");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", -2);
    mb_node(b, g, "Concat", "cat_v", "past_key_values.0.value,v", "present.0.value");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", -2);
    mb_node(b, g, "Transpose", "kt", "present.0.key", "kT");
    mb_attr_ints(b, g->node[g->n_node - 1], "perm", (int64_t[]){0, 1, 3, 2}, 4);
    mb_node(b, g, "MatMul", "qk", "qr,kT", "s0");
    mb_node(b, g, "Mul", "scale", "s0,c", "s1");
    mb_node(b, g, "Add", "mask_add", "s1,mask", "s2");
    mb_node(b, g, "Softmax", "softmax", "s2", "p");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", -1);
    mb_node(b, g, "MatMul", "pv", "p,present.0.value", "y");
    mb_node(b, g, "Shape", "shape", "past_key_values.0.key", "past_shape");
    mb_output(b, g, "y", NULL);
    mb_output(b, g, "past_shape", NULL);
    mb_output(b, g, "present.0.key", NULL);
    mb_output(b, g, "present.0.value", NULL);
    if (var == V_ROT_READ)
        mb_output(b, g, "qr", NULL);
    return m;
}

/* fuse-attention, kv-cache and (with_rotary) kv-rotary, each verified. */
static kn_graph *apply(mb *b, variant var, bool with_rotary)
{
    kn_graph *g = pc_import(b, decoder(b, var));
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_infer_shapes(g, d), KN_OK);
    assert_int_equal(kn_pass_fuse_attention(g, d), KN_OK);
    assert_int_equal(kn_pass_kv_cache(g, d), KN_OK);
    assert_int_equal(pc_count(g, "PagedAttention"), 1);
    if (with_rotary)
        assert_int_equal(kn_pass_kv_rotary(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_diag_destroy(d);
    return g;
}

static kn_rt_tensor *f32(int32_t rank, const int64_t *dims, double phase)
{
    kn_rt_tensor *t;
    assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, rank, dims, &t), KN_OK);
    for (int64_t e = 0; e < t->numel; e++)
        ((float *)t->data)[e] = (float)sin(0.37 * (double)e + phase) * (float)(1 + e % 3);
    return t;
}

enum { P = 3, S = 2, T = P + S };

/* Runs g (after kv-cache) with a past of P tokens in a cache of 2-token
 * blocks (sequence 1, its blocks not from 0); *y the output, cache_out
 * receives every cached K and V row [K|V][head][position][4]. */
static void run_paged(const kn_graph *g, kn_rt_tensor **y, float *cache_out)
{
    kn_rt_tensor *in[9];
    in[0] = f32(4, (int64_t[]){1, 2, S, 4}, 0.1);
    in[1] = f32(4, (int64_t[]){1, 2, S, 4}, 0.2);
    in[2] = f32(4, (int64_t[]){1, 2, S, 4}, 0.3);
    in[3] = f32(4, (int64_t[]){1, 1, S, T}, 0.4);
    in[4] = f32(4, (int64_t[]){1, 1, S, 4}, 0.5);
    in[5] = f32(2, (int64_t[]){S, 4}, 0.6);
    in[6] = f32(4, (int64_t[]){1, 1, S, 4}, 0.7);
    in[7] = f32(4, (int64_t[]){1, 2, P, 4}, 0.8);
    in[8] = f32(4, (int64_t[]){1, 2, P, 4}, 0.9);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_kv_config cfg = {1, 2, 4, 2, 8, 16};
    kn_kv_cache *c;
    assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
    uint32_t sid;
    assert_int_equal(kn_kv_seq_add(c, &sid), KN_OK);
    assert_int_equal(kn_kv_seq_add(c, &sid), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, 0, 4, d), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, sid, (uint32_t)T, d), KN_OK);
    kn_kv_seq *s = kn_kv_seq_get(c, sid);
    for (uint32_t h = 0; h < 2; h++)
        for (uint32_t j = 0; j < P; j++) {
            memcpy(kn_kv_at(c, false, 0, s, j, h), (float *)in[7]->data + (h * P + j) * 4, 16);
            memcpy(kn_kv_at(c, true, 0, s, j, h), (float *)in[8]->data + (h * P + j) * 4, 16);
        }
    s->len = (uint32_t)P;
    void *pk = in[7]->data, *pv = in[8]->data;
    in[7]->data = in[8]->data = NULL; /* shape only */
    kn_rt_tensor *out[2] = {0};
    kn_kv_run run = {c, &sid, 1};
    assert_int_equal(g->n_inputs, 9);
    assert_int_equal(kn_cpu_run_kv(g, NULL, d, (const kn_rt_tensor **)in, 9, out, 2, NULL, NULL, &run), KN_OK);
    *y = out[0];
    kn_rt_tensor_free(NULL, out[1]);
    for (uint32_t kv = 0; kv < 2; kv++)
        for (uint32_t h = 0; h < 2; h++)
            for (uint32_t j = 0; j < T; j++)
                memcpy(cache_out + ((kv * 2 + h) * T + j) * 4, kn_kv_at(c, kv == 1, 0, s, j, h), 16);
    in[7]->data = pk;
    in[8]->data = pv;
    kn_kv_destroy(c);
    for (int i = 0; i < 9; i++)
        kn_rt_tensor_free(NULL, in[i]);
    kn_diag_destroy(d);
}

static void rewrite(void **st)
{
    (void)st;
    mb *b = mb_new();
    kn_graph *ref = apply(b, V_OK, false), *g = apply(b, V_OK, true);
    assert_int_equal(pc_count(ref, "RotaryHalf"), 2);
    assert_int_equal(pc_count(g, "RotaryHalf"), 0);
    const kn_node *pa = pc_find(g, "PagedAttention");
    assert_int_equal(pa->n_inputs, 6);
    assert_int_equal(kn_node_attr(pa, "rotary")->u.i, 1);
    assert_int_equal(kn_node_attr(pa, "kv_heads")->u.i, 2);
    assert_true(kn_node_attr(pa, "scale")->u.f == 0.5f);
    const char *want[6] = {"q", "k", "v", "mask", "cos", "sin"};
    for (int i = 0; i < 6; i++)
        assert_string_equal(g->values[pa->inputs[i]].name, want[i]);
    const kn_attr *orig = kn_node_attr(pa, "_origins");
    assert_non_null(orig);
    bool has_rot = false;
    for (uint32_t i = 0; i < orig->n; i++)
        has_rot = has_rot || (orig->u.strings[i].len == 5 && memcmp(orig->u.strings[i].data, "rot_q", 5) == 0);
    assert_true(has_rot);
    /* the kernel: the unfused graph's output and cache to the bit */
    kn_rt_tensor *yr, *yg;
    float cr[2 * 2 * T * 4], cg[2 * 2 * T * 4];
    run_paged(ref, &yr, cr);
    run_paged(g, &yg, cg);
    assert_int_equal(yr->numel, yg->numel);
    assert_memory_equal(yr->data, yg->data, yr->nbytes);
    assert_memory_equal(cr, cg, sizeof cr);
    kn_rt_tensor_free(NULL, yr);
    kn_rt_tensor_free(NULL, yg);
    /* the pass a second time: nothing left to do */
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_kv_rotary(g, d), KN_OK);
    assert_int_equal(pc_find(g, "PagedAttention")->n_inputs, 6);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    kn_graph_destroy(ref);
    mb_free(b);
}

/* The kernel refuses cos/sin that do not broadcast to [batch, 1, seq,
 * head_dim], and cos/sin without rotary = 1. */
static bool has_msg(const kn_diag *d, const char *s)
{
    for (size_t i = 0; i < kn_diag_size(d); i++)
        if (strstr(kn_diag_message(d, i, NULL), s))
            return true;
    return false;
}

static void kernel_checks(void **st)
{
    (void)st;
    mb *b = mb_new();
    kn_graph *g = apply(b, V_OK, true);
    kn_node *pa = (kn_node *)pc_find(g, "PagedAttention");
    kn_id cos = pa->inputs[4];
    pa->inputs[4] = pa->inputs[0]; /* Q [1, 2, seq, 4] as cos: per head */
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_kv_config cfg = {1, 2, 4, 2, 8, 16};
    kn_kv_cache *c;
    assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
    uint32_t sid;
    assert_int_equal(kn_kv_seq_add(c, &sid), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, sid, S, d), KN_OK);
    kn_rt_tensor *in[9];
    in[0] = f32(4, (int64_t[]){1, 2, S, 4}, 0.1);
    in[1] = f32(4, (int64_t[]){1, 2, S, 4}, 0.2);
    in[2] = f32(4, (int64_t[]){1, 2, S, 4}, 0.3);
    in[3] = f32(4, (int64_t[]){1, 1, S, S}, 0.4);
    in[4] = f32(4, (int64_t[]){1, 1, S, 4}, 0.5);
    in[5] = f32(2, (int64_t[]){S, 4}, 0.6);
    in[6] = f32(4, (int64_t[]){1, 1, S, 4}, 0.7);
    in[7] = f32(4, (int64_t[]){1, 2, 0, 4}, 0.8);
    in[8] = f32(4, (int64_t[]){1, 2, 0, 4}, 0.9);
    kn_rt_tensor *out[2] = {0};
    kn_kv_run run = {c, &sid, 1};
    assert_int_equal(kn_cpu_run_kv(g, NULL, d, (const kn_rt_tensor **)in, 9, out, 2, NULL, NULL, &run),
                     KN_ERR_INVALID);
    assert_true(has_msg(d, "cos dim 1 (2) does not broadcast to [batch 1, 1, seq 2, head_dim 4]"));
    pa->inputs[4] = cos;
    kn_attr off;
    assert_int_equal(kn_fm_attr_i(g, "rotary", 0, &off), KN_OK);
    assert_int_equal(kn_rw_set_attr(g, pa, &off), KN_OK);
    assert_int_equal(kn_cpu_run_kv(g, NULL, d, (const kn_rt_tensor **)in, 9, out, 2, NULL, NULL, &run),
                     KN_ERR_INVALID);
    assert_true(has_msg(d, "without rotary = 1"));
    for (int i = 0; i < 9; i++)
        kn_rt_tensor_free(NULL, in[i]);
    kn_kv_destroy(c);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    mb_free(b);
}

static void expect_kept(variant var)
{
    mb *b = mb_new();
    kn_graph *g = apply(b, var, true);
    const kn_node *pa = pc_find(g, "PagedAttention");
    assert_int_equal(pa->n_inputs, 4);
    assert_null(kn_node_attr(pa, "rotary"));
    assert_int_equal(pc_count(g, "RotaryHalf"), var == V_Q_ONLY ? 1 : 2);
    kn_graph_destroy(g);
    mb_free(b);
}

static void keep_diff_cos(void **st) { (void)st; expect_kept(V_DIFF_COS); }
static void keep_q_only(void **st) { (void)st; expect_kept(V_Q_ONLY); }
static void keep_rotary_read(void **st) { (void)st; expect_kept(V_ROT_READ); }
static void keep_per_head_cos(void **st) { (void)st; expect_kept(V_HEAD_COS); }
static void keep_swapped(void **st) { (void)st; expect_kept(V_SWAPPED); }

static void swept_check(const kn_graph *g)
{
    assert_int_equal(pc_count(g, "RotaryHalf"), 0);
    const kn_node *pa = pc_find(g, "PagedAttention");
    assert_int_equal(pa->n_inputs, 6);
    assert_int_equal(kn_node_attr(pa, "rotary")->u.i, 1);
}

/* Every allocation of the -O2 pipeline over the decoder failing in turn. */
static void alloc_sweep(void **st)
{
    (void)st;
    mb *b = mb_new();
    pc_pipeline_alloc_sweep(b, decoder(b, V_OK), swept_check);
    mb_free(b);
}

/* The committed decoder compiled at -O2 (with or without kv-rotary),
 * written as a plan and loaded back. */
static kn_graph *compile_plan(const char *model, bool rotary)
{
    char path[512];
    snprintf(path, sizeof path, MODELS "%s/model.onnx", model);
    static const char *const off[] = {"kv-rotary"};
    kn_pipeline_opts po = {0};
    po.verify_each = true;
    if (!rotary) {
        po.disabled = off;
        po.n_disabled = 1;
    }
    return mb_cpu_plan(path, &po, NULL);
}

#define MAX_VOCAB (1u << 17)

/* A CPU session's logits after each of the steps 7, 1, 1, 1, 7 tokens. */
static float *session_logits(const kn_graph *p, uint32_t *vocab)
{
    static const int64_t ids[17] = {1, 5, 9, 13, 2, 7, 4, 11, 3, 8, 6, 10, 12, 14, 15, 16, 17};
    static const uint32_t steps[5] = {7, 1, 1, 1, 7};
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session_options so;
    kn_session_options_defaults(&so);
    kn_session *s = NULL;
    assert_int_equal(kn_session_create(p, &so, NULL, d, &s), KN_OK);
    uint32_t seq;
    assert_int_equal(kn_session_add_sequence(s, &seq), KN_OK);
    float *lg = calloc(5 * (size_t)MAX_VOCAB, sizeof *lg);
    assert_non_null(lg);
    for (uint32_t i = 0, at = 0; i < 5; at += steps[i++])
        assert_int_equal(kn_session_forward(s, seq, ids + at, steps[i], lg + (size_t)i * MAX_VOCAB), KN_OK);
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_true(info.vocab > 0 && info.vocab <= MAX_VOCAB);
    *vocab = info.vocab;
    kn_session_destroy(s);
    kn_diag_destroy(d);
    return lg;
}

static void check_model(const char *model)
{
    kn_graph *fused = compile_plan(model, true), *plain = compile_plan(model, false);
    assert_int_equal(pc_count(fused, "RotaryHalf"), 0);
    assert_int_equal(pc_count(plain, "RotaryHalf"), 4);
    assert_int_equal(pc_count(fused, "PagedAttention"), 2);
    for (kn_id k = 0; k < fused->n_nodes; k++) {
        const kn_node *n = &fused->nodes[k];
        if (n->op != KN_OP_KILN_PagedAttention)
            continue;
        assert_int_equal(n->n_inputs, 6); /* the plan round trip keeps the absent mask */
        assert_int_equal(n->inputs[3], KN_NONE);
        assert_int_equal(kn_node_attr(n, "rotary")->u.i, 1);
        assert_int_equal(kn_node_attr(n, "causal")->u.i, 1);
    }
    uint32_t va, vb;
    float *a = session_logits(fused, &va), *b = session_logits(plain, &vb);
    assert_int_equal(va, vb);
    for (int i = 0; i < 5; i++)
        assert_memory_equal(a + (size_t)i * MAX_VOCAB, b + (size_t)i * MAX_VOCAB, va * sizeof(float));
    free(a);
    free(b);
    kn_graph_destroy(fused);
    kn_graph_destroy(plain);
}

static void llama(void **st) { (void)st; check_model("llama_gqa_tiny"); }
static void qwen2(void **st) { (void)st; check_model("qwen2_tiny"); }

/* gpt2 has no rotary embedding: the pass leaves it as it was. */
static void gpt2(void **st)
{
    (void)st;
    kn_graph *g = compile_plan("gpt2_tiny", true);
    assert_int_equal(pc_count(g, "PagedAttention"), 2);
    for (kn_id k = 0; k < g->n_nodes; k++)
        if (g->nodes[k].op == KN_OP_KILN_PagedAttention)
            assert_int_equal(g->nodes[k].n_inputs, 3);
    kn_graph_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rewrite),          cmocka_unit_test(kernel_checks),    cmocka_unit_test(keep_diff_cos),
        cmocka_unit_test(keep_q_only),      cmocka_unit_test(keep_rotary_read), cmocka_unit_test(keep_per_head_cos),
        cmocka_unit_test(keep_swapped),     cmocka_unit_test(alloc_sweep),      cmocka_unit_test(llama),
        cmocka_unit_test(qwen2),            cmocka_unit_test(gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
