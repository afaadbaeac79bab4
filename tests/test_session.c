/* Sessions and generation on the exported test decoders (tests/models):
 * greedy generation through a compiled plan reproduces transformers' 64
 * tokens exactly and the first 4 steps' logits within 1e-4, with the paged
 * cache (-O2), without a cache, and on the unfused -O0 plan (present
 * tensors fed back); the paged cache at block boundaries, interleaved
 * sequences, a full cache and freed blocks; bad prompts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/plan_write.h"
#include "kiln/runtime.h"
#include "kiln/session.h"
#include "model_builder.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "runtime/kv_cache.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODELS KN_SOURCE_DIR "/tests/models/"

typedef struct ref_prompt {
    int64_t ids[64], want[64];
    uint32_t n_ids, n_want;
    float *logits[4];
    uint32_t vocab;
} ref_prompt;

typedef struct ref {
    ref_prompt p[3];
} ref;

static void load_ref(const char *model, ref *r)
{
    char path[512];
    snprintf(path, sizeof path, MODELS "%s/reference.json", model);
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    assert_non_null(root);
    json_t *prompts = json_object_get(root, "prompts");
    assert_int_equal(json_array_size(prompts), 3);
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < 3; i++) {
        json_t *p = json_array_get(prompts, i), *v;
        ref_prompt *rp = &r->p[i];
        size_t k;
        json_array_foreach(json_object_get(p, "prompt_ids"), k, v) rp->ids[rp->n_ids++] = json_integer_value(v);
        json_array_foreach(json_object_get(p, "new_tokens"), k, v) rp->want[rp->n_want++] = json_integer_value(v);
        json_t *fl = json_object_get(p, "first_logits");
        assert_int_equal(json_array_size(fl), 4);
        for (size_t s = 0; s < 4; s++) {
            json_t *row = json_array_get(fl, s);
            rp->vocab = (uint32_t)json_array_size(row);
            rp->logits[s] = malloc(rp->vocab * sizeof(float));
            json_array_foreach(row, k, v) rp->logits[s][k] = (float)json_number_value(v);
        }
        assert_int_equal(rp->n_want, 64);
    }
    json_decref(root);
}

static void free_ref(ref *r)
{
    for (int i = 0; i < 3; i++)
        for (int s = 0; s < 4; s++)
            free(r->p[i].logits[s]);
}

/* Imports the model, compiles it at `level` (meta: extra compile options
 * as kiln.kv.* metadata, or NULL), writes the plan and loads it back. */
static kn_graph *compile_plan(const char *model, kn_opt_level level, const char *block_size)
{
    char path[512];
    snprintf(path, sizeof path, MODELS "%s/model.onnx", model);
    kn_pipeline_opts po = {0};
    po.level = level;
    po.verify_each = true;
    return mb_cpu_plan(path, &po, block_size);
}

static uint32_t count_op(const kn_graph *g, const char *op)
{
    uint32_t n = 0;
    for (kn_id k = 0; k < g->n_nodes; k++)
        n += strcmp(g->nodes[k].op_type, op) == 0;
    return n;
}

static int64_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* The first 4 steps' logits: prefill, then the reference's tokens. */
static double check_logits(kn_session *s, const ref_prompt *rp)
{
    uint32_t seq;
    assert_int_equal(kn_session_add_sequence(s, &seq), KN_OK);
    float *lg = malloc(rp->vocab * sizeof *lg);
    double worst = 0;
    for (int step = 0; step < 4; step++) {
        if (step == 0)
            assert_int_equal(kn_session_forward(s, seq, rp->ids, rp->n_ids, lg), KN_OK);
        else
            assert_int_equal(kn_session_forward(s, seq, &rp->want[step - 1], 1, lg), KN_OK);
        for (uint32_t v = 0; v < rp->vocab; v++) {
            double e = fabs((double)lg[v] - (double)rp->logits[step][v]);
            worst = e > worst ? e : worst;
            if (e > 1e-4 + 1e-5 * fabs((double)rp->logits[step][v]))
                fail_msg("step %d logit %u: %g, want %g", step, v, (double)lg[v], (double)rp->logits[step][v]);
        }
        assert_int_equal(argmax(lg, rp->vocab), rp->want[step]);
    }
    assert_int_equal(kn_session_sequence_length(s, seq), rp->n_ids + 3);
    assert_int_equal(kn_session_free_sequence(s, seq), KN_OK);
    free(lg);
    return worst;
}

typedef struct streamed {
    uint32_t n[3];
    int64_t tok[3][64];
} streamed;

static int on_token(uint32_t prompt, int64_t token, void *user)
{
    streamed *st = user;
    assert_true(prompt < 3 && st->n[prompt] < 64);
    st->tok[prompt][st->n[prompt]++] = token;
    return 0;
}

/* All three prompts at once (separate sequences, interleaved decode), 64
 * greedy tokens each, compared with transformers' and with what the
 * callback saw. */
static void check_generate(kn_session *s, const ref *r)
{
    const int64_t *prompts[3] = {r->p[0].ids, r->p[1].ids, r->p[2].ids};
    uint32_t lens[3] = {r->p[0].n_ids, r->p[1].n_ids, r->p[2].n_ids};
    kn_generate_options o;
    kn_generate_options_defaults(&o);
    o.max_new_tokens = 64;
    streamed st = {{0}};
    o.on_token = on_token;
    o.user = &st;
    kn_generate_result res[3];
    assert_int_equal(kn_session_generate(s, prompts, lens, 3, &o, res), KN_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res[i].n_tokens, 64);
        assert_int_equal(res[i].stop, KN_STOP_MAX_TOKENS);
        assert_int_equal(res[i].n_prompt, lens[i]);
        assert_int_equal(st.n[i], 64);
        for (int k = 0; k < 64; k++) {
            if (res[i].tokens[k] != r->p[i].want[k])
                fail_msg("prompt %d token %d: %lld, want %lld", i, k, (long long)res[i].tokens[k],
                         (long long)r->p[i].want[k]);
            assert_int_equal(st.tok[i][k], res[i].tokens[k]);
        }
    }
    kn_generate_results_free(s, res, 3);
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.free_blocks, info.n_blocks); /* every sequence freed */
}

static void check_model(const char *model, kn_opt_level level, bool no_cache, kn_cache_kind want_kind)
{
    ref r;
    load_ref(model, &r);
    kn_graph *p = compile_plan(model, level, NULL);
    assert_int_equal(count_op(p, "PagedAttention") > 0, want_kind == KN_CACHE_PAGED);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session_options so;
    kn_session_options_defaults(&so);
    so.no_cache = no_cache;
    kn_session *s = NULL;
    assert_int_equal(kn_session_create(p, &so, NULL, d, &s), KN_OK);
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.cache, want_kind);
    assert_int_equal(info.vocab, r.p[0].vocab);
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        double w = check_logits(s, &r.p[i]);
        worst = w > worst ? w : worst;
    }
    check_generate(s, &r);
    printf("%s -O%d%s: 3 x 64 tokens equal; first-4-step logits max abs diff %.3g\n", model, (int)level - 1,
           no_cache ? " (no cache)" : "", worst);
    kn_session_destroy(s);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
    free_ref(&r);
}

static void gpt2_paged(void **st) { (void)st; check_model("gpt2_tiny", KN_OPT_O2, false, KN_CACHE_PAGED); }
static void gpt2_nocache(void **st) { (void)st; check_model("gpt2_tiny", KN_OPT_O2, true, KN_CACHE_PAGED); }
static void gpt2_O0(void **st) { (void)st; check_model("gpt2_tiny", KN_OPT_O0, false, KN_CACHE_TENSORS); }
static void gpt2_O0_nocache(void **st) { (void)st; check_model("gpt2_tiny", KN_OPT_O0, true, KN_CACHE_TENSORS); }
static void llama_paged(void **st) { (void)st; check_model("llama_gqa_tiny", KN_OPT_O2, false, KN_CACHE_PAGED); }
static void llama_nocache(void **st) { (void)st; check_model("llama_gqa_tiny", KN_OPT_O2, true, KN_CACHE_PAGED); }
static void llama_O0(void **st) { (void)st; check_model("llama_gqa_tiny", KN_OPT_O0, false, KN_CACHE_TENSORS); }
static void llama_O0_nocache(void **st) { (void)st; check_model("llama_gqa_tiny", KN_OPT_O0, true, KN_CACHE_TENSORS); }
static void qwen2_paged(void **st) { (void)st; check_model("qwen2_tiny", KN_OPT_O2, false, KN_CACHE_PAGED); }
static void qwen2_nocache(void **st) { (void)st; check_model("qwen2_tiny", KN_OPT_O2, true, KN_CACHE_PAGED); }
static void qwen2_O0(void **st) { (void)st; check_model("qwen2_tiny", KN_OPT_O0, false, KN_CACHE_TENSORS); }
static void qwen2_O0_nocache(void **st) { (void)st; check_model("qwen2_tiny", KN_OPT_O0, true, KN_CACHE_TENSORS); }

/* Two sessions over plan p with the default options: one with its KV
 * cache, one recomputing without a cache (no_cache). */
static void paged_and_plain(kn_graph *p, kn_diag *d, kn_session **paged, kn_session **plain)
{
    kn_session_options so;
    kn_session_options_defaults(&so);
    *paged = *plain = NULL;
    assert_int_equal(kn_session_create(p, &so, NULL, d, paged), KN_OK);
    so.no_cache = true;
    assert_int_equal(kn_session_create(p, &so, NULL, d, plain), KN_OK);
}

/* Greedy tokens of one prompt through session s. */
static void gen_one(kn_session *s, const int64_t *ids, uint32_t n, uint32_t n_new, int64_t *out)
{
    kn_generate_options o;
    kn_generate_options_defaults(&o);
    o.max_new_tokens = n_new;
    kn_generate_result r;
    assert_int_equal(kn_session_generate(s, &ids, &n, 1, &o, &r), KN_OK);
    assert_int_equal(r.n_tokens, n_new);
    memcpy(out, r.tokens, n_new * sizeof *out);
    kn_generate_results_free(s, &r, 1);
}

/* Prompts of 15, 16 and 17 tokens with 16-token blocks (the prefill ends
 * before, at and after a block boundary; decode crosses the next ones):
 * the paged cache gives the tokens recomputing without a cache gives. */
static void block_boundaries(void **st)
{
    (void)st;
    kn_graph *p = compile_plan("llama_gqa_tiny", KN_OPT_O2, "16");
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session *paged, *plain;
    paged_and_plain(p, d, &paged, &plain);
    kn_session_info info;
    kn_session_get_info(paged, &info);
    assert_int_equal(info.block_size, 16);
    int64_t ids[17];
    for (int i = 0; i < 17; i++)
        ids[i] = (i * 37 + 11) % 512;
    for (uint32_t n = 15; n <= 17; n++) {
        int64_t a[20], b[20];
        gen_one(paged, ids, n, 20, a);
        gen_one(plain, ids, n, 20, b);
        assert_memory_equal(a, b, sizeof a);
    }
    kn_session_destroy(paged);
    kn_session_destroy(plain);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

/* Two sequences fed a token at a time in turn give the logits each gives
 * alone; a full cache is an error that leaves the sequence unchanged;
 * freed blocks are reused. */
static void interleaved_full_reuse(void **st)
{
    (void)st;
    kn_graph *p = compile_plan("qwen2_tiny", KN_OPT_O2, "4");
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_session_options so;
    kn_session_options_defaults(&so);
    so.kv_cache_mem = 6 * 4 * 2 * 2 * 32 * 2 * 4; /* 6 blocks of 4 tokens, 2 layers */
    so.max_seq_len = 16;
    kn_session *s = NULL;
    assert_int_equal(kn_session_create(p, &so, NULL, d, &s), KN_OK);
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.n_blocks, 6);
    assert_int_equal(info.block_size, 4);
    int64_t x[12], y[12];
    for (int i = 0; i < 12; i++) {
        x[i] = (i * 13 + 5) % 512;
        y[i] = (i * 29 + 101) % 512;
    }
    /* alone */
    float ax[512], ay[512], bx[512], by[512];
    uint32_t sx, sy;
    assert_int_equal(kn_session_add_sequence(s, &sx), KN_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(kn_session_forward(s, sx, &x[i], 1, ax), KN_OK);
    assert_int_equal(kn_session_free_sequence(s, sx), KN_OK);
    assert_int_equal(kn_session_add_sequence(s, &sy), KN_OK);
    for (int i = 0; i < 10; i++)
        assert_int_equal(kn_session_forward(s, sy, &y[i], 1, ay), KN_OK);
    assert_int_equal(kn_session_free_sequence(s, sy), KN_OK);
    kn_session_get_info(s, &info);
    assert_int_equal(info.free_blocks, 6);
    /* interleaved: 3 blocks each */
    assert_int_equal(kn_session_add_sequence(s, &sx), KN_OK);
    assert_int_equal(kn_session_add_sequence(s, &sy), KN_OK);
    assert_int_not_equal(sx, sy);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(kn_session_forward(s, sx, &x[i], 1, bx), KN_OK);
        assert_int_equal(kn_session_forward(s, sy, &y[i], 1, by), KN_OK);
    }
    assert_memory_equal(ax, bx, sizeof ax);
    assert_memory_equal(ay, by, sizeof ay);
    kn_session_get_info(s, &info);
    assert_int_equal(info.free_blocks, 0);
    /* full: token 13 of sx needs a 4th block */
    assert_int_equal(kn_session_forward(s, sx, &x[10], 2, bx), KN_OK); /* 12 tokens: still 3 blocks */
    assert_int_equal(kn_session_forward(s, sx, &x[0], 1, bx), KN_ERR_LIMIT);
    assert_true(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "KV cache full") != NULL);
    assert_int_equal(kn_session_sequence_length(s, sx), 12);
    /* over max_seq_len */
    assert_int_equal(kn_session_forward(s, sy, x, 7, bx), KN_ERR_INVALID);
    /* freeing sy gives its blocks to sx */
    assert_int_equal(kn_session_free_sequence(s, sy), KN_OK);
    assert_int_equal(kn_session_forward(s, sx, &x[0], 1, bx), KN_OK);
    kn_session_get_info(s, &info);
    assert_int_equal(info.free_blocks, 2);
    assert_int_equal(kn_session_free_sequence(s, sx), KN_OK);
    assert_int_equal(kn_session_free_sequence(s, sx), KN_ERR_INVALID);
    kn_session_destroy(s);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

static void bad_prompts(void **st)
{
    (void)st;
    kn_graph *p = compile_plan("gpt2_tiny", KN_OPT_O2, NULL);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_session_options so;
    kn_session_options_defaults(&so);
    so.max_seq_len = 8;
    kn_session *s = NULL;
    assert_int_equal(kn_session_create(p, &so, NULL, d, &s), KN_OK);
    kn_generate_options o;
    kn_generate_options_defaults(&o);
    o.max_new_tokens = 4;
    int64_t ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const int64_t *pr[1] = {ids};
    uint32_t n = 9;
    assert_int_equal(kn_session_generate(s, pr, &n, 1, &o, NULL), KN_ERR_INVALID);
    assert_true(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "more than the cache holds") != NULL);
    n = 0;
    assert_int_equal(kn_session_generate(s, pr, &n, 1, &o, NULL), KN_ERR_INVALID);
    assert_true(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "empty") != NULL);
    ids[2] = 256; /* vocab 256 */
    n = 3;
    assert_int_equal(kn_session_generate(s, pr, &n, 1, &o, NULL), KN_ERR_INVALID);
    assert_true(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "outside the vocabulary") != NULL);
    ids[2] = -1;
    assert_int_equal(kn_session_generate(s, pr, &n, 1, &o, NULL), KN_ERR_INVALID);
    const char *stop = "x";
    ids[2] = 3;
    o.stop_strings = &stop;
    o.n_stop_strings = 1;
    assert_int_equal(kn_session_generate(s, pr, &n, 1, &o, NULL), KN_ERR_INVALID);
    assert_true(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "tokenizer") != NULL);
    /* reaching max_seq_len ends generation (not an error); stop ids stop */
    o.n_stop_strings = 0;
    o.max_new_tokens = 0;
    kn_generate_result r;
    assert_int_equal(kn_session_generate(s, pr, &n, 1, &o, &r), KN_OK);
    assert_int_equal(r.stop, KN_STOP_FULL);
    assert_int_equal(r.n_tokens, 6); /* 3 + 5 run, the 6th picked from the last logits */
    int64_t first = r.tokens[1];
    kn_generate_results_free(s, &r, 1);
    o.stop_ids = &first;
    o.n_stop_ids = 1;
    assert_int_equal(kn_session_generate(s, pr, &n, 1, &o, &r), KN_OK);
    assert_int_equal(r.stop, KN_STOP_ID);
    assert_true(r.n_tokens <= 2);
    kn_generate_results_free(s, &r, 1);
    kn_session_destroy(s);
    /* the paged plan's attention needs a session */
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

static int stop_after_3(uint32_t prompt, int64_t token, void *user)
{
    (void)prompt;
    (void)token;
    return ++*(int *)user == 3;
}

/* Sampling through the session: the same seed gives the same tokens, with
 * the paged cache and without; stop strings (decoded text) and the
 * callback end generation. */
static void sampling_and_stops(void **st)
{
    (void)st;
    kn_graph *p = compile_plan("llama_gqa_tiny", KN_OPT_O2, NULL);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session *paged, *plain;
    paged_and_plain(p, d, &paged, &plain);
    int64_t ids[5] = {3, 14, 159, 265, 358};
    const int64_t *pr[1] = {ids};
    uint32_t n = 5;
    kn_generate_options o;
    kn_generate_options_defaults(&o);
    o.max_new_tokens = 24;
    o.sampling.temperature = 1.5f;
    o.sampling.top_k = 50;
    o.sampling.top_p = 0.95f;
    o.sampling.seed = 42;
    kn_generate_result a, b, c;
    assert_int_equal(kn_session_generate(paged, pr, &n, 1, &o, &a), KN_OK);
    assert_int_equal(kn_session_generate(plain, pr, &n, 1, &o, &b), KN_OK);
    o.sampling.seed = 43;
    assert_int_equal(kn_session_generate(paged, pr, &n, 1, &o, &c), KN_OK);
    assert_int_equal(a.n_tokens, 24);
    assert_memory_equal(a.tokens, b.tokens, 24 * sizeof *a.tokens);
    assert_true(memcmp(a.tokens, c.tokens, 24 * sizeof *a.tokens) != 0);
    int64_t greedy[24];
    gen_one(paged, ids, 5, 24, greedy);
    assert_true(memcmp(a.tokens, greedy, sizeof greedy) != 0);
    /* a stop string: a piece of the text generated greedily */
    kn_tokenizer *tok = NULL;
    assert_int_equal(kn_tokenizer_load_file(KN_SOURCE_DIR "/tests/tokenizers/gpt2/tokenizer.json", NULL, d, &tok),
                     KN_OK);
    int32_t g32[24];
    for (int i = 0; i < 24; i++)
        g32[i] = (int32_t)greedy[i];
    char *text = NULL, *text10 = NULL;
    size_t len = 0, len10 = 0;
    assert_int_equal(kn_tokenizer_decode(tok, g32, 24, false, &text, &len, d), KN_OK);
    assert_int_equal(kn_tokenizer_decode(tok, g32, 10, false, &text10, &len10, d), KN_OK);
    assert_true(len > len10 + 2);
    char stop[3] = {text[len10], text[len10 + 1], 0};
    kn_generate_options og;
    kn_generate_options_defaults(&og);
    og.max_new_tokens = 24;
    const char *stops[1] = {stop};
    og.stop_strings = stops;
    og.n_stop_strings = 1;
    og.tokenizer = tok;
    kn_generate_result r;
    assert_int_equal(kn_session_generate(paged, pr, &n, 1, &og, &r), KN_OK);
    if (!strstr(text10, stop)) { /* else it stopped earlier, where the piece first shows */
        assert_int_equal(r.stop, KN_STOP_STRING);
        assert_true(r.n_tokens > 10 && r.n_tokens <= 12);
    }
    assert_memory_equal(r.tokens, greedy, r.n_tokens * sizeof *r.tokens);
    kn_generate_results_free(paged, &r, 1);
    /* the callback stops */
    int count = 0;
    og.n_stop_strings = 0;
    og.on_token = stop_after_3;
    og.user = &count;
    assert_int_equal(kn_session_generate(paged, pr, &n, 1, &og, &r), KN_OK);
    assert_int_equal(r.stop, KN_STOP_CALLBACK);
    assert_int_equal(r.n_tokens, 3);
    kn_generate_results_free(paged, &r, 1);
    kn_tokenizer_release(tok, text);
    kn_tokenizer_release(tok, text10);
    kn_tokenizer_free(tok);
    kn_generate_results_free(paged, &a, 1);
    kn_generate_results_free(plain, &b, 1);
    kn_generate_results_free(paged, &c, 1);
    kn_session_destroy(paged);
    kn_session_destroy(plain);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

/* kv_cache.c alone: block tables, reuse, full. */
static void kv_pool(void **st)
{
    (void)st;
    kn_kv_config cfg = {2, 2, 4, 16, 3, 40};
    kn_kv_cache *c = NULL;
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_kv_bytes(&cfg), 3ull * 2 * 2 * 16 * 4 * 2 * 4);
    assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
    uint32_t a, b;
    assert_int_equal(kn_kv_seq_add(c, &a), KN_OK);
    assert_int_equal(kn_kv_seq_add(c, &b), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, a, 15, d), KN_OK);
    assert_int_equal(kn_kv_seq_get(c, a)->n_blocks, 1);
    assert_int_equal(kn_kv_seq_reserve(c, a, 16, d), KN_OK);
    assert_int_equal(kn_kv_seq_get(c, a)->n_blocks, 1);
    assert_int_equal(kn_kv_seq_reserve(c, a, 17, d), KN_OK);
    assert_int_equal(kn_kv_seq_get(c, a)->n_blocks, 2);
    assert_int_equal(kn_kv_seq_reserve(c, b, 1, d), KN_OK);
    uint32_t bb = kn_kv_seq_get(c, b)->blocks[0];
    assert_int_equal(kn_kv_seq_reserve(c, b, 17, d), KN_ERR_LIMIT);
    assert_int_equal(kn_kv_seq_reserve(c, a, 41, d), KN_ERR_INVALID);
    /* positions 15 and 16 live in different blocks; the accessor follows the table */
    kn_kv_seq *sa = kn_kv_seq_get(c, a);
    float *p15 = kn_kv_at(c, false, 1, sa, 15, 1), *p16 = kn_kv_at(c, false, 1, sa, 16, 1);
    assert_true(p15 != p16);
    assert_int_equal((size_t)(p15 - (float *)c->keys) / c->block_elems, cfg.n_blocks + sa->blocks[0]);
    assert_int_equal((size_t)(p16 - (float *)c->keys) / c->block_elems, cfg.n_blocks + sa->blocks[1]);
    uint32_t a0 = sa->blocks[0], a1 = sa->blocks[1];
    assert_int_equal(kn_kv_seq_free(c, a), KN_OK);
    assert_int_equal(c->n_free, 2);
    uint32_t a2;
    assert_int_equal(kn_kv_seq_add(c, &a2), KN_OK);
    assert_int_equal(a2, a); /* the id comes back */
    assert_int_equal(kn_kv_seq_reserve(c, a2, 32, d), KN_OK);
    sa = kn_kv_seq_get(c, a2);
    assert_true((sa->blocks[0] == a0 || sa->blocks[0] == a1) && (sa->blocks[1] == a0 || sa->blocks[1] == a1));
    assert_true(sa->blocks[0] != bb && sa->blocks[1] != bb);
    assert_int_equal(kn_kv_seq_free(c, 7), KN_ERR_INVALID);
    kn_kv_destroy(c);
    /* a float16 (bfloat16) cache: half the bytes, the same element offsets */
    kn_kv_config h = cfg;
    for (int k = 0; k < 2; k++) {
        h.dtype = k ? KN_BF16 : KN_F16;
        assert_int_equal(kn_kv_bytes(&h), kn_kv_bytes(&cfg) / 2);
        assert_int_equal(kn_kv_create(&h, NULL, d, &c), KN_OK);
        assert_int_equal(c->cfg.dtype, h.dtype);
        assert_int_equal(kn_kv_seq_add(c, &a), KN_OK);
        assert_int_equal(kn_kv_seq_reserve(c, a, 17, d), KN_OK);
        sa = kn_kv_seq_get(c, a);
        uint16_t *h16 = kn_kv_at(c, true, 1, sa, 16, 1);
        assert_int_equal((size_t)(h16 - (uint16_t *)c->values),
                         (cfg.n_blocks + sa->blocks[1]) * c->block_elems + (1 * cfg.block_size + 0) * cfg.head_dim);
        kn_kv_destroy(c);
    }
    assert_int_equal(kn_kv_dtype(&cfg), KN_F32); /* a zeroed dtype */
    assert_int_equal(kn_kv_dtype_parse(NULL), KN_F32);
    assert_int_equal(kn_kv_dtype_parse("float16"), KN_F16);
    assert_int_equal(kn_kv_dtype_parse("bfloat16"), KN_BF16);
    assert_int_equal(kn_kv_dtype_parse("int8"), KN_UNDEFINED);
    h.dtype = KN_I32;
    assert_int_equal(kn_kv_create(&h, NULL, d, &c), KN_ERR_INVALID);
    cfg.n_blocks = 0;
    assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_ERR_INVALID);
    kn_diag_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kv_pool),
        cmocka_unit_test(gpt2_paged),
        cmocka_unit_test(gpt2_nocache),
        cmocka_unit_test(gpt2_O0),
        cmocka_unit_test(gpt2_O0_nocache),
        cmocka_unit_test(llama_paged),
        cmocka_unit_test(llama_nocache),
        cmocka_unit_test(llama_O0),
        cmocka_unit_test(llama_O0_nocache),
        cmocka_unit_test(qwen2_paged),
        cmocka_unit_test(qwen2_nocache),
        cmocka_unit_test(qwen2_O0),
        cmocka_unit_test(qwen2_O0_nocache),
        cmocka_unit_test(block_boundaries),
        cmocka_unit_test(interleaved_full_reuse),
        cmocka_unit_test(bad_prompts),
        cmocka_unit_test(sampling_and_stops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
