/* The kv-mask pass: on a hand-built one-layer decoder whose mask is built
 * from attention_mask and Shape(past) the way exporters do (Range /
 * LessOrEqual / And / Where), the causal mask is dropped (causal=1) and the
 * inputs nothing reads go, with the same numbers over the paged cache; a
 * sliding-window mask and a padding-only mask are not causal and stay, as
 * does a causal one that reads the token ids' values; a past whose shape is still a graph output stays an input. The committed
 * test decoders (GPT-2, Llama, Qwen2) end with input_ids and position_ids
 * only. And the kernel: causal=1 together with a mask applies both. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kiln/runtime.h"
#include "pass_check.h"
#include "passes/fuse_match.h"
#include "passes/rewrite.h"
#include "runtime/cpu/exec.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODELS KN_SOURCE_DIR "/tests/models/"

typedef enum variant {
    M_CAUSAL,   /* j <= past + i, and attention_mask */
    M_WINDOW,   /* also j > past + i - 4: a sliding window of 4 */
    M_PADDING,  /* attention_mask only */
    M_PAST_OUT, /* M_CAUSAL, and Shape(past key) is a graph output */
    M_IDS       /* M_CAUSAL and max(input_ids) > -1: causal, but reads the token ids */
} variant;

static void i64_const(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *v, size_t n, bool scalar)
{
    int64_t dims[1] = {(int64_t)n};
    mb_int64_data(b, mb_initializer(b, g, name, KN_I64, scalar ? NULL : dims, scalar ? 0 : 1), v, n);
}

/* y = Softmax(Q Kᵀ · 0.5 + mask) V with K = Concat(past, k), V =
 * Concat(past, v), 2 heads of 4; the mask [batch, 1, seq, past + seq]
 * computed in the graph from attention_mask, Shape(past) and Shape(q). */
static Onnx__ModelProto *decoder(mb *b, variant var)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "input_ids", mb_tensor_type(b, KN_I64, "batch,seq"));
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "batch,2,seq,4"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, "batch,2,seq,4"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "batch,2,seq,4"));
    mb_input(b, g, "attention_mask", mb_tensor_type(b, KN_I64, "batch,total"));
    mb_input(b, g, "past_key_values.0.key", mb_tensor_type(b, KN_F32, "batch,2,past,4"));
    mb_input(b, g, "past_key_values.0.value", mb_tensor_type(b, KN_F32, "batch,2,past,4"));
    float half = 0.5f, zero = 0.0f, lowest = -3.4028234663852886e38f;
    mb_float_data(b, mb_initializer(b, g, "c", KN_F32, NULL, 0), &half, 1);
    mb_float_data(b, mb_initializer(b, g, "zero_f", KN_F32, NULL, 0), &zero, 1);
    mb_float_data(b, mb_initializer(b, g, "lowest_f", KN_F32, NULL, 0), &lowest, 1);
    i64_const(b, g, "i0", (int64_t[]){0}, 1, true);
    i64_const(b, g, "i1", (int64_t[]){1}, 1, true);
    i64_const(b, g, "i2", (int64_t[]){2}, 1, true);
    i64_const(b, g, "w4", (int64_t[]){4}, 1, true);
    i64_const(b, g, "ax1", (int64_t[]){1}, 1, false);
    i64_const(b, g, "ax12", (int64_t[]){1, 2}, 2, false);
    /* the mask */
    mb_node(b, g, "Shape", "past_shape", "past_key_values.0.key", "ps");
    mb_node(b, g, "Gather", "past_len", "ps,i2", "P");
    mb_node(b, g, "Shape", "q_shape", "q", "qs");
    mb_node(b, g, "Gather", "seq_len", "qs,i2", "S");
    mb_node(b, g, "Add", "total_len", "P,S", "T");
    mb_node(b, g, "Range", "keys", "i0,T,i1", "j");
    mb_node(b, g, "Range", "queries", "P,T,i1", "i");
    mb_node(b, g, "Unsqueeze", "queries_col", "i,ax1", "ic");
    mb_node(b, g, "LessOrEqual", "causal", "j,ic", "le");
    mb_node(b, g, "Cast", "am_bool", "attention_mask", "amb");
    mb_attr_i(b, g->node[g->n_node - 1], "to", KN_BOOL);
    mb_node(b, g, "Unsqueeze", "am4", "amb,ax12", "am4");
    const char *pattern = "le";
    if (var == M_WINDOW) {
        mb_node(b, g, "Sub", "window_lo", "ic,w4", "lo");
        mb_node(b, g, "Greater", "window", "j,lo", "gt");
        mb_node(b, g, "And", "in_window", "le,gt", "lw");
        pattern = "lw";
    }
    if (var == M_IDS) {
        i64_const(b, g, "minus1", (int64_t[]){-1}, 1, true);
        mb_node(b, g, "ReduceMax", "ids_max", "input_ids", "idmax");
        mb_attr_i(b, g->node[g->n_node - 1], "keepdims", 0);
        mb_node(b, g, "Greater", "ids_valid", "idmax,minus1", "idok");
        mb_node(b, g, "And", "causal_ids", "le,idok", "lid");
        pattern = "lid";
    }
    char ins[64];
    snprintf(ins, sizeof ins, "%s,am4", pattern);
    if (var == M_PADDING)
        mb_node(b, g, "Identity", "pad_only", "am4", "visible");
    else
        mb_node(b, g, "And", "visible_and", ins, "visible");
    mb_node(b, g, "Where", "mask_where", "visible,zero_f,lowest_f", "mask");
    /* the attention */
    mb_node(b, g, "Concat", "cat_k", "past_key_values.0.key,k", "present.0.key");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", -2);
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
    mb_output(b, g, "y", NULL);
    if (var == M_PAST_OUT)
        mb_output(b, g, "ps", NULL);
    mb_output(b, g, "present.0.key", NULL);
    mb_output(b, g, "present.0.value", NULL);
    return m;
}

/* fuse-attention, kv-cache, then (with_mask_pass) kv-mask; *note: the
 * kv-mask note, or "". */
static kn_graph *apply(mb *b, variant var, bool with_mask_pass, char *note, size_t cap)
{
    kn_graph *g = pc_import(b, decoder(b, var));
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_fuse_attention(g, d), KN_OK);
    assert_int_equal(kn_pass_kv_cache(g, d), KN_OK);
    assert_int_equal(pc_count(g, "PagedAttention"), 1);
    if (with_mask_pass)
        assert_int_equal(kn_pass_kv_mask(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    note[0] = 0;
    for (size_t i = 0; i < kn_diag_size(d); i++) {
        const char *msg = kn_diag_message(d, i, NULL);
        if (strstr(msg, "kv-mask"))
            snprintf(note, cap, "%s", msg);
    }
    kn_diag_destroy(d);
    return g;
}

static kn_rt_tensor *f32(int64_t d0, int64_t d1, int64_t d2, int64_t d3, double phase)
{
    int64_t dims[4] = {d0, d1, d2, d3};
    kn_rt_tensor *t;
    assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 4, dims, &t), KN_OK);
    for (int64_t e = 0; e < t->numel; e++)
        ((float *)t->data)[e] = (float)sin(0.37 * (double)e + phase);
    return t;
}

enum { P = 3, S = 2, T = P + S };

/* Runs g over a paged cache holding a P-token past (2-token blocks):
 * inputs bound by name; attention_mask ones except a zero at `hole` (-1:
 * none). Returns y. */
static kn_rt_tensor *run_paged(const kn_graph *g, int hole)
{
    kn_rt_tensor *q = f32(1, 2, S, 4, 0.1), *k = f32(1, 2, S, 4, 0.2), *v = f32(1, 2, S, 4, 0.3);
    kn_rt_tensor *pk = f32(1, 2, P, 4, 0.5), *pv = f32(1, 2, P, 4, 0.6), *ids, *am;
    int64_t di[2] = {1, S}, da[2] = {1, T};
    assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, di, &ids), KN_OK);
    assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, da, &am), KN_OK);
    for (int i = 0; i < S; i++)
        ((int64_t *)ids->data)[i] = i;
    for (int j = 0; j < T; j++)
        ((int64_t *)am->data)[j] = j != hole;
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_kv_config cfg = {1, 2, 4, 2, 8, 16};
    kn_kv_cache *c;
    assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
    uint32_t sid;
    assert_int_equal(kn_kv_seq_add(c, &sid), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, sid, (uint32_t)T, d), KN_OK);
    kn_kv_seq *s = kn_kv_seq_get(c, sid);
    for (uint32_t h = 0; h < 2; h++)
        for (uint32_t j = 0; j < P; j++) {
            memcpy(kn_kv_at(c, false, 0, s, j, h), (float *)pk->data + (h * P + j) * 4, 16);
            memcpy(kn_kv_at(c, true, 0, s, j, h), (float *)pv->data + (h * P + j) * 4, 16);
        }
    s->len = P;
    kn_rt_tensor *pk0, *pv0; /* shape only, as a session binds them */
    assert_int_equal(kn_rt_tensor_view(NULL, KN_F32, 4, pk->dims, pk->data, &pk0), KN_OK);
    assert_int_equal(kn_rt_tensor_view(NULL, KN_F32, 4, pv->dims, pv->data, &pv0), KN_OK);
    pk0->data = pv0->data = NULL;
    const kn_rt_tensor *in[8];
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const char *nm = g->values[g->inputs[i]].name;
        in[i] = strcmp(nm, "input_ids") == 0        ? ids
                : strcmp(nm, "q") == 0              ? q
                : strcmp(nm, "k") == 0              ? k
                : strcmp(nm, "v") == 0              ? v
                : strcmp(nm, "attention_mask") == 0 ? am
                : strstr(nm, ".key")                ? pk0
                                                    : pv0;
    }
    kn_rt_tensor *out[4] = {0};
    kn_kv_run run = {c, &sid, 1};
    assert_int_equal(kn_cpu_run_kv(g, NULL, d, in, g->n_inputs, out, g->n_outputs, NULL, NULL, &run), KN_OK);
    for (uint32_t i = 1; i < g->n_outputs; i++)
        kn_rt_tensor_free(NULL, out[i]);
    kn_kv_destroy(c);
    kn_diag_destroy(d);
    kn_rt_tensor *all[9] = {q, k, v, pk, pv, ids, am, pk0, pv0};
    for (int i = 0; i < 9; i++)
        kn_rt_tensor_free(NULL, all[i]);
    return out[0];
}

static void same_y(const kn_rt_tensor *a, const kn_rt_tensor *b)
{
    assert_int_equal(a->numel, b->numel);
    for (int64_t e = 0; e < a->numel; e++)
        assert_true(((const float *)a->data)[e] == ((const float *)b->data)[e]); /* the same double arithmetic */
}

static uint32_t n_inputs_named(const kn_graph *g, const char *prefix)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->n_inputs; i++)
        n += strncmp(g->values[g->inputs[i]].name, prefix, strlen(prefix)) == 0;
    return n;
}

/* The causal mask goes: causal=1, no mask input, attention_mask and the
 * pasts gone; the same y over the paged cache as with the mask. */
static void causal_rewrite(void **st)
{
    (void)st;
    mb *b = mb_new();
    char note[1024];
    kn_graph *ref = apply(b, M_CAUSAL, false, note, sizeof note);
    kn_graph *g = apply(b, M_CAUSAL, true, note, sizeof note);
    if (!strstr(note, "1 of 1 PagedAttention nodes causal without a mask") ||
        !strstr(note, "3 inputs removed (attention_mask among them)"))
        fail_msg("note: %s", note);
    const kn_node *pa = pc_find(g, "PagedAttention");
    assert_int_equal(pa->n_inputs, 3);
    assert_int_equal(kn_node_attr(pa, "causal")->u.i, 1);
    assert_int_equal(pc_count(g, "Range"), 0); /* the mask's chain is gone */
    assert_int_equal(pc_count(g, "Where"), 0);
    assert_int_equal(g->n_inputs, 4); /* input_ids, q, k, v */
    assert_int_equal(n_inputs_named(g, "attention_mask") + n_inputs_named(g, "past"), 0);
    assert_string_equal(kn_rw_get_meta(g, "kiln.kv.mask"), "causal");
    assert_string_equal(kn_rw_get_meta(g, "kiln.kv.past_inputs"), "");
    assert_null(kn_node_attr(pc_find(ref, "PagedAttention"), "causal"));
    assert_string_equal(kn_rw_get_meta(ref, "kiln.kv.past_inputs"), "past_key_values.0.key,past_key_values.0.value");
    kn_rt_tensor *want = run_paged(ref, -1), *got = run_paged(g, -1);
    same_y(got, want);
    kn_rt_tensor_free(NULL, want);
    kn_rt_tensor_free(NULL, got);
    kn_graph_destroy(g);
    kn_graph_destroy(ref);
    mb_free(b);
}

/* Masks that are not the causal pattern stay, with the note saying where
 * they differ; the graph keeps its interface. */
static void expect_kept(variant var, const char *why)
{
    mb *b = mb_new();
    char note[1024];
    kn_graph *g = apply(b, var, true, note, sizeof note);
    if (!strstr(note, "keeps its mask") || !strstr(note, why))
        fail_msg("note '%s' lacks '%s'", note, why);
    const kn_node *pa = pc_find(g, "PagedAttention");
    assert_int_equal(pa->n_inputs, 4);
    assert_null(kn_node_attr(pa, "causal"));
    assert_int_equal(g->n_inputs, 7);
    assert_string_equal(kn_rw_get_meta(g, "kiln.kv.mask"), "graph");
    kn_graph_destroy(g);
    mb_free(b);
}

static void keep_sliding_window(void **st)
{
    (void)st;
    expect_kept(M_WINDOW, "not causal: at batch 1, past 0, seq 5, query 4, key 0");
}

static void keep_padding_only(void **st)
{
    (void)st;
    expect_kept(M_PADDING, "not causal: at batch 1, past 0, seq 5, query 0, key 1");
}

static void keep_ids_reader(void **st)
{
    (void)st;
    expect_kept(M_IDS, "the mask reads the values of input 'input_ids' (not only its shape)");
}

/* Shape(past key) is an output: the key stays an input, the value goes. */
static void keep_read_past(void **st)
{
    (void)st;
    mb *b = mb_new();
    char note[1024];
    kn_graph *g = apply(b, M_PAST_OUT, true, note, sizeof note);
    if (!strstr(note, "2 inputs removed (attention_mask among them)"))
        fail_msg("note: %s", note);
    assert_int_equal(pc_find(g, "PagedAttention")->n_inputs, 3);
    assert_int_equal(n_inputs_named(g, "past_key_values.0.key"), 1);
    assert_int_equal(n_inputs_named(g, "past_key_values.0.value"), 0);
    assert_string_equal(kn_rw_get_meta(g, "kiln.kv.past_inputs"), "past_key_values.0.key");
    kn_graph_destroy(g);
    mb_free(b);
}

/* The kernel with causal=1 and a mask: both apply (the padding-only mask
 * plus causal=1 gives what the causal-and-padding mask gives). */
static void kernel_causal_and_mask(void **st)
{
    (void)st;
    mb *b = mb_new();
    char note[1024];
    kn_graph *both = apply(b, M_CAUSAL, false, note, sizeof note);
    kn_graph *pad = apply(b, M_PADDING, false, note, sizeof note);
    kn_attr a = {0};
    assert_int_equal(kn_fm_attr_i(pad, "causal", 1, &a), KN_OK);
    kn_node *pa = (kn_node *)pc_find(pad, "PagedAttention");
    assert_int_equal(kn_rw_set_attr(pad, pa, &a), KN_OK);
    for (int hole = -1; hole < T; hole += 2) {
        kn_rt_tensor *want = run_paged(both, hole), *got = run_paged(pad, hole);
        same_y(got, want);
        kn_rt_tensor_free(NULL, want);
        kn_rt_tensor_free(NULL, got);
    }
    /* without causal the padding-only mask lets the queries see later keys */
    assert_int_equal(kn_fm_attr_i(pad, "causal", 0, &a), KN_OK);
    assert_int_equal(kn_rw_set_attr(pad, pa, &a), KN_OK);
    kn_rt_tensor *want = run_paged(both, -1), *got = run_paged(pad, -1);
    bool differ = false;
    for (int64_t e = 0; e < want->numel; e++)
        differ = differ || ((float *)want->data)[e] != ((float *)got->data)[e];
    assert_true(differ);
    kn_rt_tensor_free(NULL, want);
    kn_rt_tensor_free(NULL, got);
    kn_graph_destroy(both);
    kn_graph_destroy(pad);
    mb_free(b);
}

/* The committed exported decoders through the -O2 pipeline: every
 * PagedAttention causal, only input_ids and position_ids left. */
static void check_model(const char *model)
{
    char path[512];
    snprintf(path, sizeof path, MODELS "%s/model.onnx", model);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_file(path, NULL, NULL, d, &g), KN_OK);
    kn_pipeline_opts po = {0};
    po.verify_each = true;
    assert_int_equal(kn_pipeline_run(g, &po, d), KN_OK);
    assert_int_equal(pc_count(g, "PagedAttention"), 2);
    for (kn_id k = 0; k < g->n_nodes; k++)
        if (g->nodes[k].op == KN_OP_KILN_PagedAttention) {
            /* without a mask: 3 inputs, or 6 with input 3 absent after kv-rotary */
            const kn_node *pa = &g->nodes[k];
            bool rot = strcmp(model, "gpt2_tiny") != 0;
            assert_int_equal(pa->n_inputs, rot ? 6 : 3);
            assert_false(rot && pa->inputs[3] != KN_NONE);
            assert_int_equal(kn_node_attr(pa, "causal")->u.i, 1);
        }
    assert_int_equal(g->n_inputs, 2);
    assert_string_equal(g->values[g->inputs[0]].name, "input_ids");
    assert_string_equal(g->values[g->inputs[1]].name, "position_ids");
    assert_string_equal(kn_rw_get_meta(g, "kiln.kv.mask"), "causal");
    bool noted = false;
    for (size_t i = 0; i < kn_diag_size(d); i++)
        noted = noted || strstr(kn_diag_message(d, i, NULL), "kv-mask: 2 of 2 PagedAttention nodes causal");
    assert_true(noted);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
}

static void swept_check(const kn_graph *g)
{
    assert_int_equal(pc_count(g, "PagedAttention"), 1);
    assert_int_equal(pc_find(g, "PagedAttention")->n_inputs, 3);
    assert_int_equal(g->n_inputs, 4);
}

/* Every allocation of the -O2 pipeline over the decoder failing in turn:
 * KN_ERR_NOMEM or the full rewrite, nothing leaked. */
static void alloc_sweep(void **st)
{
    (void)st;
    mb *b = mb_new();
    pc_pipeline_alloc_sweep(b, decoder(b, M_CAUSAL), swept_check);
    mb_free(b);
}

static void gpt2(void **st) { (void)st; check_model("gpt2_tiny"); }
static void llama(void **st) { (void)st; check_model("llama_gqa_tiny"); }
static void qwen2(void **st) { (void)st; check_model("qwen2_tiny"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(causal_rewrite),
        cmocka_unit_test(keep_sliding_window),
        cmocka_unit_test(keep_padding_only),
        cmocka_unit_test(keep_ids_reader),
        cmocka_unit_test(keep_read_past),
        cmocka_unit_test(kernel_causal_and_mask),
        cmocka_unit_test(alloc_sweep),
        cmocka_unit_test(gpt2),
        cmocka_unit_test(llama),
        cmocka_unit_test(qwen2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
