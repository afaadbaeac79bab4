/* The kv-cache pass on small hand-built one-layer decoders: the rewrite
 * (node counts, interface, metadata, kn_graph_verify) and its numerics
 * (kiln.PagedAttention over a paged cache holding the past, with blocks
 * smaller than the past, against the unrewritten graph fed the past as
 * tensors), and the graphs it must leave alone, each with the note saying
 * why. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pass_check.h"
#include "passes/rewrite.h"
#include "runtime/cpu/exec.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum variant {
    V_OK,
    V_WRONG_AXIS,      /* present = Concat(past, new, axis 1) */
    V_PRESENT_READ,    /* present also read by another node */
    V_PAST_READ,       /* past read by a node other than Shape */
    V_NO_ATTENTION,    /* no fuse-attention run first */
    V_SHAPE_CONCAT     /* Shape reads the past through a one-input Concat */
} variant;

/* y = Softmax(Q Kᵀ · 0.5 + mask) V with K = present.0.key = Concat(past,
 * k), V = present.0.value = Concat(past, v), 2 heads of 4; plus
 * past_shape = Shape(past key) as an output. */
static Onnx__ModelProto *decoder(mb *b, variant var)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "1,2,seq,4"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, "1,2,seq,4"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "1,2,seq,4"));
    mb_input(b, g, "mask", mb_tensor_type(b, KN_F32, "1,1,seq,total"));
    mb_input(b, g, "past_key_values.0.key", mb_tensor_type(b, KN_F32, "1,2,past,4"));
    mb_input(b, g, "past_key_values.0.value", mb_tensor_type(b, KN_F32, "1,2,past,4"));
    float half = 0.5f;
    mb_float_data(b, mb_initializer(b, g, "c", KN_F32, NULL, 0), &half, 1);
    mb_node(b, g, "Concat", "cat_k", "past_key_values.0.key,k", "present.0.key");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", var == V_WRONG_AXIS ? 1 : -2);
    mb_node(b, g, "Concat", "cat_v", "past_key_values.0.value,v", "present.0.value");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", 2);
    mb_node(b, g, "Transpose", "kt", "present.0.key", "kT");
    mb_attr_ints(b, g->node[g->n_node - 1], "perm", (int64_t[]){0, 1, 3, 2}, 4);
    mb_node(b, g, "MatMul", "qk", "q,kT", "s0");
    mb_node(b, g, "Mul", "scale", "s0,c", "s1");
    mb_node(b, g, "Add", "mask_add", "s1,mask", "s2");
    mb_node(b, g, "Softmax", "softmax", "s2", "p");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", -1);
    mb_node(b, g, "MatMul", "pv", "p,present.0.value", "y");
    if (var == V_SHAPE_CONCAT) {
        mb_node(b, g, "Concat", "ident", "past_key_values.0.key", "pk1");
        mb_attr_i(b, g->node[g->n_node - 1], "axis", -2);
        mb_node(b, g, "Shape", "shape", "pk1", "past_shape");
    } else {
        mb_node(b, g, "Shape", "shape", "past_key_values.0.key", "past_shape");
    }
    mb_output(b, g, "y", NULL);
    mb_output(b, g, "past_shape", NULL);
    mb_output(b, g, "present.0.key", NULL);
    mb_output(b, g, "present.0.value", NULL);
    if (var == V_PRESENT_READ) {
        mb_node(b, g, "ReduceSum", "sum", "present.0.key", "ksum");
        mb_output(b, g, "ksum", NULL);
    }
    if (var == V_PAST_READ) {
        mb_node(b, g, "Neg", "neg", "past_key_values.0.value", "pneg");
        mb_output(b, g, "pneg", NULL);
    }
    return m;
}

/* Runs fuse-attention (unless V_NO_ATTENTION) and kv-cache; returns the
 * graph; *note receives the kv-cache note (or ""). */
static kn_graph *apply(mb *b, variant var, char *note, size_t cap)
{
    kn_graph *g = pc_import(b, decoder(b, var));
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (var != V_NO_ATTENTION)
        assert_int_equal(kn_pass_fuse_attention(g, d), KN_OK);
    assert_int_equal(kn_pass_kv_cache(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    note[0] = 0;
    for (size_t i = 0; i < kn_diag_size(d); i++) {
        const char *msg = kn_diag_message(d, i, NULL);
        if (strstr(msg, "kv-cache"))
            snprintf(note, cap, "%s", msg);
    }
    kn_diag_destroy(d);
    return g;
}

static void fill(kn_rt_tensor *t, double phase)
{
    for (int64_t e = 0; e < t->numel; e++)
        ((float *)t->data)[e] = (float)sin(0.37 * (double)e + phase);
}

static kn_rt_tensor *f32(int64_t d0, int64_t d1, int64_t d2, int64_t d3, double phase)
{
    int64_t dims[4] = {d0, d1, d2, d3};
    kn_rt_tensor *t;
    assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 4, dims, &t), KN_OK);
    fill(t, phase);
    return t;
}

static const char *meta(const kn_graph *g, const char *key) { return kn_rw_get_meta(g, key); }

/* The rewrite, and PagedAttention over a cache with 2-token blocks holding
 * a 3-token past (the past and the 2 new tokens span 3 blocks) against
 * the graph before the rewrite. */
static void check_rewrite(variant var)
{
    mb *b = mb_new();
    char note[512];
    /* the reference: fused ONNX Attention reading the past tensors (the
     * same double arithmetic as PagedAttention: equal to the last bit) */
    kn_graph *ref = pc_import(b, decoder(b, var));
    kn_diag *dr = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_fuse_attention(ref, dr), KN_OK);
    assert_int_equal(pc_count(ref, "Attention"), 1);
    kn_diag_destroy(dr);
    kn_graph *g = apply(b, var, note, sizeof note);
    assert_non_null(strstr(note, "1 layers use the runtime's paged cache: 2 kv heads x 4"));
    assert_int_equal(pc_count(g, "PagedAttention"), 1);
    assert_int_equal(pc_count(g, "Attention"), 0);
    assert_int_equal(pc_count(g, "Concat"), 0);
    const kn_node *pa = pc_find(g, "PagedAttention");
    assert_int_equal(pa->op, KN_OP_KILN_PagedAttention);
    assert_int_equal(kn_node_attr(pa, "layer")->u.i, 0);
    assert_int_equal(kn_node_attr(pa, "kv_heads")->u.i, 2);
    assert_int_equal(kn_node_attr(pa, "head_dim")->u.i, 4);
    assert_int_equal(kn_node_attr(pa, "kv_repeat")->u.i, 1);
    assert_true(kn_node_attr(pa, "scale")->u.f == 0.5f);
    assert_int_equal(g->n_outputs, 2); /* the presents are gone */
    assert_int_equal(g->n_inputs, 6);  /* the pasts stay, for their shape */
    assert_string_equal(meta(g, "kiln.kv.layers"), "1");
    assert_string_equal(meta(g, "kiln.kv.block_size"), "16");
    assert_string_equal(meta(g, "kiln.kv.max_seq_len"), "2048");
    assert_string_equal(meta(g, "kiln.kv.blocks"), "128");
    assert_string_equal(meta(g, "kiln.kv.bytes"), "131072"); /* 128 x 16 tokens x 2 heads x 4 x (K, V) x 4 bytes */
    assert_string_equal(meta(g, "kiln.kv.past_inputs"), "past_key_values.0.key,past_key_values.0.value");

    /* numerics: the reference with the past as tensors */
    const int64_t P = 3, S = 2, T = P + S;
    kn_rt_tensor *q = f32(1, 2, S, 4, 0.1), *k = f32(1, 2, S, 4, 0.2), *v = f32(1, 2, S, 4, 0.3);
    kn_rt_tensor *mask = f32(1, 1, S, T, 0.4), *pk = f32(1, 2, P, 4, 0.5), *pv = f32(1, 2, P, 4, 0.6);
    for (int64_t i = 0; i < S; i++) /* causal */
        for (int64_t j = P + i + 1; j < T; j++)
            ((float *)mask->data)[i * T + j] = -INFINITY;
    kn_diag *d = kn_diag_create(NULL, stderr);
    const kn_rt_tensor *in[6] = {q, k, v, mask, pk, pv};
    kn_rt_tensor *want[4] = {0}, *got[2] = {0};
    assert_int_equal(kn_cpu_run(ref, NULL, d, in, 6, want, 4), KN_OK);
    /* the paged run: the past in the cache, the past inputs shape only */
    kn_kv_config cfg = {1, 2, 4, 2, 8, 16};
    kn_kv_cache *c;
    assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
    uint32_t sid;
    assert_int_equal(kn_kv_seq_add(c, &sid), KN_OK);
    assert_int_equal(kn_kv_seq_add(c, &sid), KN_OK); /* the second sequence: blocks not from 0 */
    assert_int_equal(kn_kv_seq_reserve(c, 0, 4, d), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, sid, (uint32_t)T, d), KN_OK);
    kn_kv_seq *s = kn_kv_seq_get(c, sid);
    for (uint32_t h = 0; h < 2; h++)
        for (uint32_t j = 0; j < P; j++) {
            memcpy(kn_kv_at(c, false, 0, s, j, h), (float *)pk->data + (h * P + j) * 4, 16);
            memcpy(kn_kv_at(c, true, 0, s, j, h), (float *)pv->data + (h * P + j) * 4, 16);
        }
    s->len = (uint32_t)P;
    kn_rt_tensor *pk0, *pv0;
    assert_int_equal(kn_rt_tensor_view(NULL, KN_F32, 4, pk->dims, pk->data, &pk0), KN_OK);
    assert_int_equal(kn_rt_tensor_view(NULL, KN_F32, 4, pv->dims, pv->data, &pv0), KN_OK);
    pk0->data = pv0->data = NULL; /* shape only */
    const kn_rt_tensor *in2[6] = {q, k, v, mask, pk0, pv0};
    kn_kv_run run = {c, &sid, 1};
    assert_int_equal(kn_cpu_run_kv(g, NULL, d, in2, 6, got, 2, NULL, NULL, &run), KN_OK);
    assert_int_equal(got[0]->numel, want[0]->numel);
    for (int64_t e = 0; e < want[0]->numel; e++)
        assert_true(((float *)got[0]->data)[e] == ((float *)want[0]->data)[e]); /* same double arithmetic */
    assert_memory_equal(got[1]->data, want[1]->data, want[1]->nbytes); /* Shape(past) */
    /* the cache now holds the presents */
    for (uint32_t h = 0; h < 2; h++)
        for (uint32_t j = 0; j < T; j++) {
            assert_memory_equal(kn_kv_at(c, false, 0, s, j, h), (float *)want[2]->data + (h * T + j) * 4, 16);
            assert_memory_equal(kn_kv_at(c, true, 0, s, j, h), (float *)want[3]->data + (h * T + j) * 4, 16);
        }
    /* without a cache context the kernel says what it needs */
    kn_rt_tensor *none[2] = {0};
    kn_diag *d2 = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cpu_run(g, NULL, d2, in2, 6, none, 2), KN_ERR_INVALID);
    assert_non_null(strstr(kn_diag_message(d2, 0, NULL), "needs the runtime's KV cache"));
    /* a cache that does not hold the mask's length is an error, not a wrong answer */
    s->len = 1;
    assert_int_equal(kn_cpu_run_kv(g, NULL, d2, in2, 6, none, 2, NULL, NULL, &run), KN_ERR_INVALID);
    kn_diag_destroy(d2);
    kn_kv_destroy(c);
    for (int i = 0; i < 4; i++)
        kn_rt_tensor_free(NULL, want[i]);
    for (int i = 0; i < 2; i++)
        kn_rt_tensor_free(NULL, got[i]);
    kn_rt_tensor_free(NULL, pk0);
    kn_rt_tensor_free(NULL, pv0);
    for (int i = 0; i < 6; i++)
        kn_rt_tensor_free(NULL, (kn_rt_tensor *)in[i]);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    kn_graph_destroy(ref);
    mb_free(b);
}

static void rewrite(void **st)
{
    (void)st;
    check_rewrite(V_OK);
}

static void rewrite_through_identity_concat(void **st)
{
    (void)st;
    check_rewrite(V_SHAPE_CONCAT);
}

static void expect_kept(variant var, const char *why)
{
    mb *b = mb_new();
    char note[512];
    kn_graph *g = apply(b, var, note, sizeof note);
    if (!strstr(note, why))
        fail_msg("note '%s' lacks '%s'", note, why);
    assert_non_null(strstr(note, "2 past / 2 present values kept"));
    assert_int_equal(pc_count(g, "PagedAttention"), 0);
    assert_null(meta(g, "kiln.kv.layers"));
    uint32_t presents = 0;
    for (uint32_t i = 0; i < g->n_outputs; i++)
        presents += strncmp(g->values[g->outputs[i]].name, "present", 7) == 0;
    assert_int_equal(presents, 2);
    kn_graph_destroy(g);
    mb_free(b);
}

static void keep_wrong_axis(void **st)
{
    (void)st;
    expect_kept(V_WRONG_AXIS, "not on the sequence axis");
}

static void keep_present_read(void **st)
{
    (void)st;
    expect_kept(V_PRESENT_READ, "read by more than the attention");
}

static void keep_past_read(void **st)
{
    (void)st;
    expect_kept(V_PAST_READ, "read by a node other than Shape");
    /* and a data-less past bound to such a graph is an error, not a crash */
    mb *b = mb_new();
    kn_graph *g = pc_import(b, decoder(b, V_PAST_READ));
    kn_rt_tensor *t[6];
    for (int i = 0; i < 6; i++)
        t[i] = f32(1, i == 3 ? 1 : 2, 2, i == 3 ? 4 : 4, 0.1 * i);
    kn_rt_tensor *ghost;
    assert_int_equal(kn_rt_tensor_view(NULL, KN_F32, 4, t[5]->dims, t[5]->data, &ghost), KN_OK);
    ghost->data = NULL;
    const kn_rt_tensor *in[6] = {t[0], t[1], t[2], t[3], t[4], ghost};
    kn_rt_tensor *out[5] = {0};
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cpu_run(g, NULL, d, in, 6, out, 5), KN_ERR_INVALID);
    assert_non_null(strstr(kn_diag_message(d, 0, NULL), "has a shape but no data"));
    kn_diag_destroy(d);
    kn_rt_tensor_free(NULL, ghost);
    for (int i = 0; i < 6; i++)
        kn_rt_tensor_free(NULL, t[i]);
    kn_graph_destroy(g);
    mb_free(b);
}

static void keep_unfused(void **st)
{
    (void)st;
    expect_kept(V_NO_ATTENTION, "no fused Attention");
}

/* A graph with no past/present: untouched, no note. */
static void no_cache_graph(void **st)
{
    (void)st;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2,3"));
    mb_node(b, m->graph, "Relu", "r", "x", "y");
    mb_output(b, m->graph, "y", NULL);
    kn_graph *g = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_kv_cache(g, d), KN_OK);
    assert_int_equal(kn_diag_size(d), 0);
    assert_int_equal(g->n_nodes, 1);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    mb_free(b);
}

/* Capacity options: --kv-cache-mem sets the blocks, --max-seq-len the
 * sequence limit; a pool smaller than one block or than max-seq-len is an
 * error. */
static void capacity_options(void **st)
{
    (void)st;
    mb *b = mb_new();
    kn_graph *g = pc_import(b, decoder(b, V_OK));
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_rw_set_meta(g, "kiln.kv.block_size", "4"), KN_OK);
    assert_int_equal(kn_rw_set_meta(g, "kiln.kv.mem", "2560"), KN_OK); /* 256 bytes a block: 10 blocks */
    assert_int_equal(kn_pass_fuse_attention(g, d), KN_OK);
    assert_int_equal(kn_pass_kv_cache(g, d), KN_OK);
    assert_string_equal(meta(g, "kiln.kv.blocks"), "10");
    assert_string_equal(meta(g, "kiln.kv.max_seq_len"), "40");
    kn_graph_destroy(g);
    g = pc_import(b, decoder(b, V_OK));
    assert_int_equal(kn_rw_set_meta(g, "kiln.kv.block_size", "4"), KN_OK);
    assert_int_equal(kn_rw_set_meta(g, "kiln.kv.mem", "2560"), KN_OK);
    assert_int_equal(kn_rw_set_meta(g, "kiln.kv.max_seq_len", "41"), KN_OK);
    assert_int_equal(kn_pass_fuse_attention(g, d), KN_OK);
    assert_int_equal(kn_pass_kv_cache(g, d), KN_ERR_INVALID);
    assert_non_null(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "fewer than --max-seq-len 41"));
    kn_graph_destroy(g);
    g = pc_import(b, decoder(b, V_OK));
    assert_int_equal(kn_rw_set_meta(g, "kiln.kv.mem", "100"), KN_OK);
    assert_int_equal(kn_pass_fuse_attention(g, d), KN_OK);
    assert_int_equal(kn_pass_kv_cache(g, d), KN_ERR_INVALID);
    assert_non_null(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "does not hold one block"));
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rewrite),
        cmocka_unit_test(rewrite_through_identity_concat),
        cmocka_unit_test(keep_wrong_axis),
        cmocka_unit_test(keep_present_read),
        cmocka_unit_test(keep_past_read),
        cmocka_unit_test(keep_unfused),
        cmocka_unit_test(no_cache_graph),
        cmocka_unit_test(capacity_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
