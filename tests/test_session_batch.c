/* Batched decode steps (kn_session_forward_batch, runtime/session_batch.c)
 * on the exported test decoders: 1 ... 9 sequences of different lengths
 * in one run give the logits of separate kn_session_forward calls bit for
 * bit; a freed and re-added sequence; the errors (unknown or repeated
 * sequence, a full cache, ...) leave every sequence unchanged; sessions
 * that do not batch (present tensors) step in turn with the same logits;
 * kn_session_generate's batched rounds give the tokens of the
 * one-at-a-time loop for greedy and seeded sampling with per-prompt stops. */
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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MODELS KN_SOURCE_DIR "/tests/models/"
#define MAXB 9

/* The model compiled at `level` (block_size: kiln.kv.block_size, or
 * NULL), written as a plan and loaded back. */
static kn_graph *compile_plan(const char *model, kn_opt_level level, const char *block_size)
{
    char path[512];
    snprintf(path, sizeof path, MODELS "%s/model.onnx", model);
    kn_pipeline_opts po = {0};
    po.level = level;
    return mb_cpu_plan(path, &po, block_size);
}

static kn_session *session(const kn_graph *p, kn_diag *d, uint64_t kv_mem)
{
    kn_session_options so;
    kn_session_options_defaults(&so);
    so.kv_cache_mem = kv_mem;
    kn_session *s = NULL;
    assert_int_equal(kn_session_create(p, &so, NULL, d, &s), KN_OK);
    return s;
}

static int64_t tok(uint32_t row, uint32_t i) { return (int64_t)((row * 131u + i * 37u + 7u) % 250u); }

/* Sequence `seq` of session s gets a prompt of n tokens of row `row`. */
static void prefill(kn_session *s, uint32_t seq, uint32_t row, uint32_t n)
{
    int64_t ids[64];
    for (uint32_t i = 0; i < n; i++)
        ids[i] = tok(row, i);
    assert_int_equal(kn_session_forward(s, seq, ids, n, NULL), KN_OK);
}

/* For n = 1 ... 9: n sequences with prompts of different lengths (some
 * over a block boundary), 3 decode steps; session `b` steps them with
 * kn_session_forward_batch (rows in reverse id order), session `r` one
 * kn_session_forward each: the logits are equal bit for bit. */
static void sizes_equal(const char *model, kn_opt_level level, bool want_batched)
{
    kn_graph *p = compile_plan(model, level, "4");
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session *b = session(p, d, 0), *r = session(p, d, 0);
    assert_int_equal(kn_session_batched(b), want_batched);
    kn_session_info info;
    kn_session_get_info(b, &info);
    uint32_t v = info.vocab;
    assert_true(v > 0);
    float *lb = malloc((size_t)MAXB * v * sizeof *lb), *lr = malloc((size_t)v * sizeof *lr);
    for (uint32_t n = 1; n <= MAXB; n++) {
        uint32_t sb[MAXB], sr[MAXB], rows[MAXB];
        int64_t t[MAXB];
        for (uint32_t i = 0; i < n; i++) {
            assert_int_equal(kn_session_add_sequence(b, &sb[i]), KN_OK);
            assert_int_equal(kn_session_add_sequence(r, &sr[i]), KN_OK);
            prefill(b, sb[i], i, 1 + (i * 5) % 11);
            prefill(r, sr[i], i, 1 + (i * 5) % 11);
        }
        for (uint32_t step = 0; step < 3; step++) {
            for (uint32_t k = 0; k < n; k++) {
                rows[k] = sb[n - 1 - k];
                t[k] = tok(n - 1 - k, 40 + step);
            }
            assert_int_equal(kn_session_forward_batch(b, rows, t, n, lb), KN_OK);
            for (uint32_t k = 0; k < n; k++) {
                uint32_t i = n - 1 - k;
                assert_int_equal(kn_session_forward(r, sr[i], &t[k], 1, lr), KN_OK);
                if (memcmp(lb + (size_t)k * v, lr, (size_t)v * sizeof *lr) != 0)
                    fail_msg("%s: %u sequences, step %u, row %u: logits differ from a separate forward", model, n,
                             step, k);
                assert_int_equal(kn_session_sequence_length(b, sb[i]), kn_session_sequence_length(r, sr[i]));
            }
        }
        for (uint32_t i = 0; i < n; i++) {
            assert_int_equal(kn_session_free_sequence(b, sb[i]), KN_OK);
            assert_int_equal(kn_session_free_sequence(r, sr[i]), KN_OK);
        }
    }
    print_message("%s -O%d: 1..%u sequences x 3 steps, %s, logits bit-identical\n", model, (int)level - 1, MAXB,
                  want_batched ? "one run per step" : "stepped in turn");
    free(lb), free(lr);
    kn_session_destroy(b);
    kn_session_destroy(r);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

static void llama_sizes(void **st) { (void)st; sizes_equal("llama_gqa_tiny", KN_OPT_O2, true); }
static void qwen2_sizes(void **st) { (void)st; sizes_equal("qwen2_tiny", KN_OPT_O2, true); }
static void gpt2_sizes(void **st) { (void)st; sizes_equal("gpt2_tiny", KN_OPT_O2, true); }
static void llama_O0_sizes(void **st) { (void)st; sizes_equal("llama_gqa_tiny", KN_OPT_O0, false); }

typedef struct snap {
    uint32_t len[4], free_blocks;
} snap;

static snap take(kn_session *s, const uint32_t *seqs, uint32_t n)
{
    snap x = {{0}, 0};
    for (uint32_t i = 0; i < n; i++)
        x.len[i] = kn_session_sequence_length(s, seqs[i]);
    kn_session_info info;
    kn_session_get_info(s, &info);
    x.free_blocks = info.free_blocks;
    return x;
}

/* A pool of 6 blocks of 4 tokens: the errors of a batched step, each
 * leaving every sequence as it was (lengths, free blocks, and the logits
 * of the next good step equal a session that never saw the bad call); a
 * freed sequence's id re-added. */
static void errors_unchanged(void **st)
{
    (void)st;
    kn_graph *p = compile_plan("qwen2_tiny", KN_OPT_O2, "4");
    kn_diag *d = kn_diag_create(NULL, NULL);
    uint64_t mem = 6ull * 4 * 2 * 2 * 32 * 2 * 4; /* 6 blocks of 4 tokens, 2 layers, 2 kv heads x 32 */
    kn_session *b = session(p, d, mem), *r = session(p, d, mem);
    kn_session_info info;
    kn_session_get_info(b, &info);
    assert_int_equal(info.n_blocks, 6);
    uint32_t v = info.vocab;
    float *lb = malloc((size_t)4 * v * sizeof *lb), *lr = malloc((size_t)v * sizeof *lr);
    /* sequences of 4, 4, 4 and 7 tokens: 5 blocks, 1 free */
    uint32_t sb[4], sr[4], lens[4] = {4, 4, 4, 7};
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(kn_session_add_sequence(b, &sb[i]), KN_OK);
        assert_int_equal(kn_session_add_sequence(r, &sr[i]), KN_OK);
        prefill(b, sb[i], i, lens[i]);
        prefill(r, sr[i], i, lens[i]);
    }
    snap before = take(b, sb, 4);
    assert_int_equal(before.free_blocks, 1);
    int64_t t[4] = {5, 6, 7, 8};
    /* the first row fits in the free block, the second does not */
    uint32_t two[2] = {sb[0], sb[1]};
    assert_int_equal(kn_session_forward_batch(b, two, t, 2, lb), KN_ERR_LIMIT);
    assert_non_null(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "KV cache full"));
    snap now = take(b, sb, 4);
    assert_memory_equal(&before, &now, sizeof before);
    uint32_t dup[3] = {sb[2], sb[3], sb[2]};
    assert_int_equal(kn_session_forward_batch(b, dup, t, 3, lb), KN_ERR_INVALID);
    assert_non_null(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "is in rows 0 and 2"));
    uint32_t unknown[2] = {sb[3], 77};
    assert_int_equal(kn_session_forward_batch(b, unknown, t, 2, lb), KN_ERR_INVALID);
    assert_non_null(strstr(kn_diag_message(d, kn_diag_size(d) - 1, NULL), "no sequence 77"));
    int64_t bad_tok[2] = {1, 1000000};
    uint32_t ok2[2] = {sb[3], sb[2]};
    assert_int_equal(kn_session_forward_batch(b, ok2, bad_tok, 2, lb), KN_ERR_INVALID);
    assert_int_equal(kn_session_forward_batch(b, ok2, t, 0, lb), KN_ERR_INVALID);
    snap after = take(b, sb, 4);
    assert_memory_equal(&before, &after, sizeof before);
    /* the next good step (sb[3] stays in its 2 blocks, sb[2] takes the free one) matches r */
    assert_int_equal(kn_session_forward_batch(b, ok2, t, 2, lb), KN_OK);
    assert_int_equal(kn_session_forward(r, sr[3], &t[0], 1, lr), KN_OK);
    assert_memory_equal(lb, lr, (size_t)v * sizeof *lr);
    assert_int_equal(kn_session_forward(r, sr[2], &t[1], 1, lr), KN_OK);
    assert_memory_equal(lb + v, lr, (size_t)v * sizeof *lr);
    kn_session_get_info(b, &info);
    assert_int_equal(info.free_blocks, 0);
    /* sb[2] freed; sb[1] freed and re-added (the same id, a fresh sequence) */
    assert_int_equal(kn_session_free_sequence(b, sb[2]), KN_OK);
    assert_int_equal(kn_session_free_sequence(r, sr[2]), KN_OK);
    assert_int_equal(kn_session_free_sequence(b, sb[1]), KN_OK);
    assert_int_equal(kn_session_free_sequence(r, sr[1]), KN_OK);
    uint32_t again, again_r;
    assert_int_equal(kn_session_add_sequence(b, &again), KN_OK);
    assert_int_equal(kn_session_add_sequence(r, &again_r), KN_OK);
    assert_int_equal(again, sb[1]);
    prefill(b, again, 7, 3);
    prefill(r, again_r, 7, 3);
    uint32_t pair[2] = {sb[3], again}, rpair[2] = {sr[3], again_r}; /* 8 and 3 tokens, 2 blocks free */
    for (uint32_t step = 0; step < 2; step++) {
        int64_t tt[2] = {11 + step, 12 + step};
        assert_int_equal(kn_session_forward_batch(b, pair, tt, 2, lb), KN_OK);
        for (uint32_t k = 0; k < 2; k++) {
            assert_int_equal(kn_session_forward(r, rpair[k], &tt[k], 1, lr), KN_OK);
            assert_memory_equal(lb + (size_t)k * v, lr, (size_t)v * sizeof *lr);
        }
    }
    assert_int_equal(kn_session_sequence_length(b, again), 5);
    kn_session_get_info(b, &info);
    assert_int_equal(info.free_blocks, 0);
    /* max_seq_len: a sequence at the limit refuses the whole step */
    kn_session_destroy(b);
    kn_session_options so;
    kn_session_options_defaults(&so);
    so.max_seq_len = 6;
    assert_int_equal(kn_session_create(p, &so, NULL, d, &b), KN_OK);
    assert_int_equal(kn_session_add_sequence(b, &sb[0]), KN_OK);
    assert_int_equal(kn_session_add_sequence(b, &sb[1]), KN_OK);
    prefill(b, sb[0], 0, 2);
    prefill(b, sb[1], 1, 6);
    assert_int_equal(kn_session_forward_batch(b, sb, t, 2, NULL), KN_ERR_INVALID);
    assert_int_equal(kn_session_sequence_length(b, sb[0]), 2);
    assert_int_equal(kn_session_sequence_length(b, sb[1]), 6);
    free(lb), free(lr);
    kn_session_destroy(b);
    kn_session_destroy(r);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

/* kn_session_forward_batch_greedy: each row's argmax (lowest id on ties)
 * of what separate forwards give, 3 steps of 3 sequences. */
static void greedy_batch(void **st)
{
    (void)st;
    kn_graph *p = compile_plan("qwen2_tiny", KN_OPT_O2, NULL);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session *b = session(p, d, 0), *r = session(p, d, 0);
    kn_session_info info;
    kn_session_get_info(b, &info);
    float *lr = malloc((size_t)info.vocab * sizeof *lr);
    uint32_t sb[3], sr[3];
    int64_t t[3], next[3];
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(kn_session_add_sequence(b, &sb[i]), KN_OK);
        assert_int_equal(kn_session_add_sequence(r, &sr[i]), KN_OK);
        prefill(b, sb[i], i, 2 + 3 * i);
        prefill(r, sr[i], i, 2 + 3 * i);
        t[i] = tok(i, 9);
    }
    for (int step = 0; step < 3; step++) {
        assert_int_equal(kn_session_forward_batch_greedy(b, sb, t, 3, next), KN_OK);
        for (uint32_t i = 0; i < 3; i++) {
            assert_int_equal(kn_session_forward(r, sr[i], &t[i], 1, lr), KN_OK);
            uint32_t best = 0;
            for (uint32_t k = 1; k < info.vocab; k++)
                best = lr[k] > lr[best] ? k : best;
            assert_int_equal(next[i], best);
            t[i] = next[i];
        }
    }
    free(lr);
    kn_session_destroy(b);
    kn_session_destroy(r);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

/* The one-at-a-time loop as kn_session_generate ran it before batching:
 * each prompt alone with its own sampler (seed + prompt index), the same
 * stop rules (stop ids, max tokens). */
static uint32_t reference_gen(kn_session *s, const int64_t *prompt, uint32_t n, uint32_t index,
                              const kn_generate_options *o, int64_t *out)
{
    kn_session_info info;
    kn_session_get_info(s, &info);
    kn_sampling sp = o->sampling;
    sp.seed += index;
    kn_sampler *smp = NULL;
    assert_int_equal(kn_sampler_create(&sp, info.vocab, NULL, NULL, &smp), KN_OK);
    float *lg = malloc((size_t)info.vocab * sizeof *lg);
    int64_t hist[256];
    memcpy(hist, prompt, n * sizeof *hist);
    uint32_t seq, len = n, k = 0;
    assert_int_equal(kn_session_add_sequence(s, &seq), KN_OK);
    assert_int_equal(kn_session_forward(s, seq, prompt, n, lg), KN_OK);
    for (;;) {
        int64_t t = kn_sampler_pick(smp, lg, hist, len);
        out[k++] = t;
        bool stop = k >= o->max_new_tokens;
        for (uint32_t j = 0; j < o->n_stop_ids; j++)
            stop = stop || o->stop_ids[j] == t;
        if (stop)
            break;
        hist[len++] = t;
        assert_int_equal(kn_session_forward(s, seq, &t, 1, lg), KN_OK);
    }
    assert_int_equal(kn_session_free_sequence(s, seq), KN_OK);
    kn_sampler_destroy(smp);
    free(lg);
    return k;
}

typedef struct seen {
    int64_t tok[6][64];
    uint32_t n[6];
} seen;

static int record(uint32_t prompt, int64_t token, void *user)
{
    seen *x = user;
    x->tok[prompt][x->n[prompt]++] = token;
    return 0;
}

/* 6 prompts of different lengths through kn_session_generate (batched
 * rounds) against reference_gen: greedy, then seeded top-p sampling, with
 * stop ids that end some prompts early (they drop out of later rounds). */
static void generate_same_tokens(void **st)
{
    (void)st;
    kn_graph *p = compile_plan("llama_gqa_tiny", KN_OPT_O2, "4");
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session *s = session(p, d, 0);
    assert_true(kn_session_batched(s));
    int64_t prompts[6][20];
    const int64_t *pp[6];
    uint32_t lens[6];
    for (uint32_t i = 0; i < 6; i++) {
        lens[i] = 2 + i * 3;
        for (uint32_t k = 0; k < lens[i]; k++)
            prompts[i][k] = tok(i, k);
        pp[i] = prompts[i];
    }
    for (int mode = 0; mode < 2; mode++) {
        kn_generate_options o;
        kn_generate_options_defaults(&o);
        o.max_new_tokens = 24;
        if (mode) {
            o.sampling.temperature = 0.9f;
            o.sampling.top_p = 0.9f;
            o.sampling.seed = 5;
        }
        /* the reference tokens without stops pick the stop ids: prompt 1's 5th token and prompt 4's 9th */
        int64_t want[6][64];
        uint32_t nwant[6];
        for (uint32_t i = 0; i < 6; i++)
            nwant[i] = reference_gen(s, pp[i], lens[i], i, &o, want[i]);
        int64_t stops[2] = {want[1][4], want[4][8]};
        o.stop_ids = stops;
        o.n_stop_ids = 2;
        for (uint32_t i = 0; i < 6; i++)
            nwant[i] = reference_gen(s, pp[i], lens[i], i, &o, want[i]);
        assert_true(nwant[1] <= 5 && nwant[4] <= 9);
        seen x;
        memset(&x, 0, sizeof x);
        o.on_token = record;
        o.user = &x;
        kn_generate_result res[6];
        assert_int_equal(kn_session_generate(s, pp, lens, 6, &o, res), KN_OK);
        uint32_t stopped = 0;
        for (uint32_t i = 0; i < 6; i++) {
            assert_int_equal(res[i].n_tokens, nwant[i]);
            assert_memory_equal(res[i].tokens, want[i], nwant[i] * sizeof(int64_t));
            assert_int_equal(x.n[i], nwant[i]);
            assert_memory_equal(x.tok[i], want[i], nwant[i] * sizeof(int64_t));
            assert_int_equal(res[i].stop, nwant[i] < 24 ? KN_STOP_ID : KN_STOP_MAX_TOKENS);
            assert_int_equal(res[i].n_decode, nwant[i] - 1);
            stopped += res[i].stop == KN_STOP_ID;
        }
        assert_true(stopped >= 2);
        kn_generate_results_free(s, res, 6);
        print_message("generate, %s: 6 prompts, %u stopped early, tokens equal to one-at-a-time\n",
                      mode ? "seeded top-p" : "greedy", stopped);
    }
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.free_blocks, info.n_blocks);
    kn_session_destroy(s);
    kn_diag_destroy(d);
    kn_graph_destroy(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(llama_sizes),    cmocka_unit_test(qwen2_sizes),      cmocka_unit_test(gpt2_sizes),
        cmocka_unit_test(llama_O0_sizes), cmocka_unit_test(errors_unchanged), cmocka_unit_test(generate_same_tokens),
        cmocka_unit_test(greedy_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
