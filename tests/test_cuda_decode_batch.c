/* Batched decode programs of a target-cuda decoder plan (kiln compile
 * --decode-batch, tools/compile_decoder.c; runtime/session_cuda.c):
 *   - for tests/models/llama_gqa_tiny, gpt2_tiny and qwen2_tiny: the graph
 *     lowered for [1, 4], [1, 1] and [4, 1] into one plan; the batched
 *     program reads back (kn_plan_load_cuda_decode_batch, inputs [4, 1]);
 *     under the host emulator the [4, 1] program over 4 sequences of
 *     different lengths (3, 2 and 1 of them live, the spare rows bound to
 *     a scratch sequence's block, as the CUDA session binds them) gives
 *     the logits of a CPU session's kn_session_forward_batch on the
 *     target-cpu graph (within 1e-4) and the same greedy tokens, and writes
 *     nothing in the pools but each live row's new position and the
 *     scratch block; the loader refuses batched sections that are
 *     incomplete, out of order or without the prefill program's;
 *   - --mock (test_cuda_decode_batch_mock): kn_session_create_device on a
 *     plan with programs for B = 4 and 8 against the host mock of the
 *     driver: kn_session_generate of 6, 3 and 1 prompts decodes on the
 *     8-, 4- and 1-row programs, each captured as a CUDA graph once and
 *     then replayed (one cuGraphLaunch per step, no kernel launch, no
 *     device or pinned allocation per token, 4 bytes back per row);
 *     --no-cuda-graph launches kernel by kernel; kn_session_forward_batch
 *     brings the rows' logits back; the errors leave the sequences
 *     unchanged; the scratch block is one more than the plan's pool. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cli.h"
#include "codegen/cuda/lower.h"
#include "codegen/cuda/sample_kernels.h"
#include "codegen/plan_write.h"
#include "cuda_batch_plan.h"
#include "cuda_paged_util.h"
#include "emu_host.h"
#include "emu_program.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "kiln/session.h"
#include "model_builder.h"
#include "runtime/cuda/plan.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P_CHUNK CBP_CHUNK

static const char *const models[] = {"llama_gqa_tiny", "gpt2_tiny", "qwen2_tiny"};

/* One emulated run of program p ([rows, 1]) for the cache sequences
 * row_seq[r] with tokens ids[r]; the logits out (rows x vocab). */
static kn_rt_tensor *emu_step(const built *o, const kn_cu_program *p, kn_kv_cache *c, const uint32_t *row_seq,
                              const int64_t *ids, uint32_t rows, const char *what)
{
    kn_kv_config *cfg = &c->cfg;
    uint32_t max_blocks = (cfg->max_seq_len + cfg->block_size - 1) / cfg->block_size;
    int32_t *table = calloc((size_t)rows * max_blocks, sizeof *table), past[8];
    assert_non_null(table);
    assert_int_equal(kn_kv_fill_rows(c, row_seq, rows, max_blocks, table, past), KN_OK);
    kn_rt_tensor *in[2] = {0}, *out[1] = {0};
    int64_t dims[2] = {rows, 1};
    for (uint32_t i = 0; i < o->dec->n_inputs; i++)
        assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, dims, &in[i]), KN_OK);
    for (uint32_t r = 0; r < rows; r++) {
        ((int64_t *)in[0]->data)[r] = ids[r];
        if (in[1])
            ((int64_t *)in[1]->data)[r] = past[r];
    }
    kn_emu_kv kv = {c->keys, c->values, (uint64_t)cfg->n_blocks * c->block_elems * 4, table, past};
    char msg[2048] = "";
    if (kn_emu_run_program(o->dec, p, in, out, &kv, msg, sizeof msg) != KN_OK)
        fail_msg("%s: %s", what, msg);
    for (int i = 0; i < 2; i++)
        kn_rt_tensor_free(NULL, in[i]);
    free(table);
    return out[0];
}

/* Whether the pools differ from `keys`/`values` (copies from before a run)
 * anywhere but slot `slot[r]` of block `block[r]` (n pairs). */
static bool only_writes(const kn_kv_cache *c, const float *keys, const float *values, const uint32_t *block,
                        const uint32_t *slot, uint32_t n)
{
    const kn_kv_config *cfg = &c->cfg;
    for (uint32_t l = 0; l < cfg->n_layers; l++)
        for (uint32_t b = 0; b < cfg->n_blocks; b++)
            for (uint32_t h = 0; h < cfg->kv_heads; h++)
                for (uint32_t t = 0; t < cfg->block_size; t++) {
                    bool allowed = false;
                    for (uint32_t k = 0; k < n; k++)
                        allowed = allowed || (block[k] == b && (slot[k] == t || slot[k] == UINT32_MAX));
                    size_t off = ((size_t)l * cfg->n_blocks + b) * c->block_elems +
                                 ((size_t)h * cfg->block_size + t) * cfg->head_dim;
                    const float *ck = c->keys, *cv = c->values; /* a float32 cache */
                    if (!allowed && (memcmp(keys + off, ck + off, cfg->head_dim * sizeof(float)) != 0 ||
                                     memcmp(values + off, cv + off, cfg->head_dim * sizeof(float)) != 0))
                        return false;
                }
    return true;
}

static void emulated_batch(void **state)
{
    (void)state;
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        print_message("skipped: the host emulator cannot start: %s\n", err);
        skip();
    }
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        mb *b = mb_new();
        built o;
        const uint32_t B = 4;
        build(b, models[m], &B, NULL, 1, &o);
        kn_diag *d = kn_diag_create(NULL, stderr);
        /* read back */
        kn_graph *plan, *bgraph;
        assert_int_equal(kn_plan_load(o.path, NULL, d, &plan), KN_OK);
        assert_int_equal(kn_plan_cuda_decode_batches(plan), 1);
        assert_int_equal(kn_plan_load_cuda_decode_batch(plan, 0, NULL, d, &bgraph), KN_OK);
        kn_diag *quiet = kn_diag_create(NULL, NULL);
        kn_graph *none = NULL;
        assert_int_equal(kn_plan_load_cuda_decode_batch(plan, 1, NULL, quiet, &none), KN_ERR_UNSUPPORTED);
        assert_true(mb_diag_has(quiet, KN_ERROR, "no batched CUDA decode program 1"));
        kn_diag_destroy(quiet);
        for (uint32_t i = 0; i < bgraph->n_inputs; i++) {
            const kn_type *t = &bgraph->values[bgraph->inputs[i]].type;
            assert_int_equal(t->shape.dims[0].value, B);
            assert_int_equal(t->shape.dims[1].value, 1);
        }
        kn_cuda_plan cp;
        assert_int_equal(kn_cuda_plan_read(bgraph, bgraph->info->plan_base, bgraph->info->plan_size, NULL, d, &cp),
                         KN_OK);
        assert_int_equal(cp.n_steps, o.bprog[0].n_steps);
        assert_int_equal(cp.kv_rows, B);
        kn_cuda_plan_free(&cp);
        kn_graph_destroy(bgraph);
        kn_graph_destroy(plan);
        /* the CPU reference: batched steps on the target-cpu graph */
        kn_graph *ref = optimized(models[m], false);
        kn_session *rs;
        assert_int_equal(kn_session_create(ref, NULL, NULL, d, &rs), KN_OK);
        assert_true(kn_session_batched(rs));
        kn_session_info info;
        kn_session_get_info(rs, &info);
        uint32_t V = info.vocab;
        kn_kv_config cfg = {info.n_layers, info.kv_heads, info.head_dim, info.block_size, info.n_blocks,
                            info.max_seq_len};
        kn_kv_cache *c;
        assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
        uint32_t scratch, cs[4], rseq[4], lens[4] = {3, 6, 2, 5};
        assert_int_equal(kn_kv_seq_add(c, &scratch), KN_OK);
        assert_int_equal(kn_kv_seq_reserve(c, scratch, 1, d), KN_OK);
        int64_t next[4];
        /* prompts: token by token through the [1, 1] program */
        for (uint32_t i = 0; i < 4; i++) {
            assert_int_equal(kn_kv_seq_add(c, &cs[i]), KN_OK);
            assert_int_equal(kn_session_add_sequence(rs, &rseq[i]), KN_OK);
            int64_t prompt[8];
            for (uint32_t t = 0; t < lens[i]; t++)
                prompt[t] = (int64_t)((i * 53 + t * 29 + 3) % 250);
            float *want = malloc((size_t)V * sizeof *want);
            assert_int_equal(kn_session_forward(rs, rseq[i], prompt, lens[i], want), KN_OK);
            next[i] = argmax(want, V);
            free(want);
            for (uint32_t t = 0; t < lens[i]; t++) {
                kn_kv_seq *q = kn_kv_seq_get(c, cs[i]);
                assert_int_equal(kn_kv_seq_reserve(c, cs[i], q->len + 1, d), KN_OK);
                kn_rt_tensor *lg = emu_step(&o, &o.dprog, c, &cs[i], &prompt[t], 1, models[m]);
                kn_kv_seq_get(c, cs[i])->len++;
                if (t + 1 == lens[i])
                    assert_int_equal(argmax(lg->data, V), next[i]);
                kn_rt_tensor_free(NULL, lg);
            }
        }
        /* batched steps: 3, 4, then 2 live rows (rows in another order) */
        static const uint32_t live[3][4] = {{0, 1, 2}, {3, 1, 0, 2}, {2, 3}};
        static const uint32_t n_live[3] = {3, 4, 2};
        size_t pool = (size_t)cfg.n_layers * cfg.n_blocks * c->block_elems;
        float *keys = malloc(pool * sizeof *keys), *values = malloc(pool * sizeof *values);
        float *want = malloc((size_t)4 * V * sizeof *want);
        double worst = 0;
        for (int step = 0; step < 3; step++) {
            uint32_t n = n_live[step], row_seq[4], rs_ids[4], blk[5], slot[5];
            int64_t ids[4];
            for (uint32_t r = 0; r < B; r++) {
                bool real = r < n;
                uint32_t i = real ? live[step][r] : 0;
                row_seq[r] = real ? cs[i] : scratch;
                ids[r] = real ? next[i] : 0;
                if (real) {
                    rs_ids[r] = rseq[i];
                    kn_kv_seq *q = kn_kv_seq_get(c, cs[i]);
                    assert_int_equal(kn_kv_seq_reserve(c, cs[i], q->len + 1, d), KN_OK);
                    blk[r] = q->blocks[q->len / cfg.block_size];
                    slot[r] = q->len % cfg.block_size;
                }
            }
            blk[n] = kn_kv_seq_get(c, scratch)->blocks[0];
            slot[n] = UINT32_MAX; /* the whole scratch block */
            memcpy(keys, c->keys, pool * sizeof *keys);
            memcpy(values, c->values, pool * sizeof *values);
            assert_int_equal(kn_session_forward_batch(rs, rs_ids, ids, n, want), KN_OK);
            kn_rt_tensor *lg = emu_step(&o, &o.bprog[0], c, row_seq, ids, B, models[m]);
            assert_int_equal(lg->numel, (int64_t)B * V);
            assert_true(only_writes(c, keys, values, blk, slot, n + 1));
            for (uint32_t r = 0; r < n; r++) {
                const float *got = (const float *)lg->data + (size_t)r * V, *w = want + (size_t)r * V;
                for (uint32_t v = 0; v < V; v++) {
                    double e = fabs((double)got[v] - (double)w[v]);
                    worst = e > worst ? e : worst;
                }
                if (!(worst <= 1e-4))
                    fail_msg("%s step %d row %u: logits differ by %.3g", models[m], step, r, worst);
                assert_int_equal(argmax(got, V), argmax(w, V));
                uint32_t i = live[step][r];
                kn_kv_seq_get(c, cs[i])->len++;
                next[i] = argmax(got, V);
            }
            kn_rt_tensor_free(NULL, lg);
        }
        print_message("%s: [4, 1] program emulated over 3, 4 and 2 live sequences of different lengths (spare rows "
                      "on the scratch block): logits within %.3g of the CPU batched step, the same tokens, no write "
                      "outside the new positions\n",
                      models[m], worst);
        free(keys), free(values), free(want);
        kn_kv_destroy(c);
        kn_session_destroy(rs);
        kn_graph_destroy(ref);
        built_free(&o);
        kn_diag_destroy(d);
        mb_free(b);
    }
}

/* The section table entry of `kind` in plan bytes p, or NULL. */
static kn_plan_section *section(uint8_t *p, uint32_t kind)
{
    kn_plan_header h;
    memcpy(&h, p, sizeof h);
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section *s = (kn_plan_section *)(p + h.sections_off + i * sizeof *s);
        if (s->kind == kind)
            return s;
    }
    return NULL;
}

/* The loader's checks of the batched programs' sections: program 0's
 * seven sections with program 1's (2 programs read back), one of them
 * renumbered into program 3's (refused: incomplete, out of order), and
 * the batched sections without the prefill program's (refused). */
static void section_checks(void **state)
{
    (void)state;
    mb *b = mb_new();
    built o;
    const uint32_t rows[2] = {2, 3};
    build(b, "qwen2_tiny", rows, NULL, 2, &o);
    size_t n;
    uint8_t *good = (uint8_t *)mb_read_file(o.path, &n), *p = malloc(n);
    assert_non_null(p);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g;
    assert_int_equal(kn_plan_load_memory(good, n, "t.plan", NULL, d, &g), KN_OK);
    assert_int_equal(kn_plan_cuda_decode_batches(g), 2);
    kn_graph_destroy(g);
    memcpy(p, good, n);
    section(p, KN_SEC_CUB(1) + 2)->kind = KN_SEC_CUB(3);
    mb_plan_rechecksum(p, n);
    assert_int_equal(kn_plan_load_memory(p, n, "t.plan", NULL, d, &g), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "batched CUDA decode program"));
    memcpy(p, good, n);
    for (int k = 0; k < KN_SEC_CU_N; k++) /* the prefill program's sections gone: unknown kinds no more */
        section(p, KN_SEC_CUP_KERNELS + k)->kind = KN_SEC_CUB(3) + k;
    mb_plan_rechecksum(p, n);
    assert_int_equal(kn_plan_load_memory(p, n, "t.plan", NULL, d, &g), KN_ERR_INVALID);
    free(good), free(p);
    built_free(&o);
    kn_diag_destroy(d);
    mb_free(b);
}

/* ---- against the mock driver ---- */

typedef struct counts {
    long launches, captures, graph_launches, dtoh, dtoh_bytes, allocs;
} counts;

static const int whats[6] = {MOCK_LAUNCHES, MOCK_CAPTURES, MOCK_GRAPH_LAUNCHES, MOCK_DTOH, MOCK_DTOH_BYTES,
                             MOCK_ALLOCS};

static void zero(mock_ctl_fn ctl)
{
    for (int i = 0; i < 6; i++)
        ctl(whats[i], 0);
}

static counts take(mock_ctl_fn ctl)
{
    return (counts){ctl(MOCK_LAUNCHES, -1), ctl(MOCK_CAPTURES, -1),   ctl(MOCK_GRAPH_LAUNCHES, -1),
                    ctl(MOCK_DTOH, -1),     ctl(MOCK_DTOH_BYTES, -1), ctl(MOCK_ALLOCS, -1)};
}

/* kn_session_generate of n prompts (10 tokens: 3 prefill chunks), 5 new
 * tokens each; the decode counters (less the prefills'). The prefills:
 * without graphs each chunk's launches and the last one's sampling (4
 * bytes back); with them each chunk a replay of the prefill graph that
 * samples its P rows (4 P bytes back), captured (its launches) when
 * `capture`. */
static counts generate(mock_ctl_fn ctl, kn_session *s, uint32_t n, const kn_sampling *sp, const long *prefill_launches,
                       bool graphs, bool capture)
{
    int64_t prompt[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77};
    const int64_t *prompts[8];
    uint32_t lens[8];
    for (uint32_t i = 0; i < n; i++)
        prompts[i] = prompt, lens[i] = 10;
    kn_generate_options go;
    kn_generate_options_defaults(&go);
    go.max_new_tokens = 5;
    go.sampling = *sp;
    kn_generate_result r[8];
    zero(ctl);
    assert_int_equal(kn_session_generate(s, prompts, lens, n, &go, r), KN_OK);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(r[i].n_tokens, 5);
        for (uint32_t k = 0; k < 5; k++)
            assert_int_equal(r[i].tokens[k], 0); /* the mock runs no kernel: ids stay 0 */
    }
    kn_generate_results_free(s, r, n);
    counts c = take(ctl);
    if (graphs) {
        c.launches -= capture ? (*prefill_launches - 1) / 3 + 1 : 0; /* one chunk: its steps, the sampling */
        c.captures -= capture;
        c.graph_launches -= 3 * n;
        c.dtoh -= 3 * n;
        c.dtoh_bytes -= 3 * n * 4 * P_CHUNK;
    } else {
        c.launches -= *prefill_launches * n;
        c.dtoh -= n; /* the prefills' sampled ids */
        c.dtoh_bytes -= 4 * n;
    }
    return c;
}

static void mock_batched_generate(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    built o;
    const uint32_t rows[2] = {4, 8};
    build(b, "llama_gqa_tiny", rows, NULL, 2, &o);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g, *pg, *bg[2];
    assert_int_equal(kn_plan_load(o.path, NULL, d, &g), KN_OK);
    assert_int_equal(kn_plan_load_cuda_prefill(g, NULL, d, &pg), KN_OK);
    long per_prefill = 3 * (long)plan_launch_steps(pg) + 1, per_dec = plan_launch_steps(g), per_b[2];
    for (int k = 0; k < 2; k++) {
        assert_int_equal(kn_plan_load_cuda_decode_batch(g, (uint32_t)k, NULL, d, &bg[k]), KN_OK);
        per_b[k] = plan_launch_steps(bg[k]);
        kn_graph_destroy(bg[k]);
    }
    kn_graph_destroy(pg);
    kn_session *s;
    assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, NULL, NULL, d, &s), KN_OK); /* cuBLASLt's handle */
    kn_session_destroy(s);
    long live = ctl(MOCK_LIVE, -1);
    kn_sampling greedy, top_p;
    kn_sampling_defaults(&greedy);
    top_p = greedy;
    top_p.temperature = 0.8f, top_p.top_p = 0.9f, top_p.seed = 7;
    for (int mode = 0; mode < 2; mode++) { /* CUDA graphs, --no-cuda-graph */
        kn_session_options so;
        kn_session_options_defaults(&so);
        so.no_cuda_graph = mode == 1;
        assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, &so, NULL, d, &s), KN_OK);
        assert_true(kn_session_batched(s));
        kn_session_info info;
        kn_session_get_info(s, &info);
        assert_int_equal(info.free_blocks, info.n_blocks - 1); /* the scratch block, */
        kn_session *cpu;
        kn_session_info ci;
        assert_int_equal(kn_session_create_device(g, KN_DEVICE_CPU, NULL, NULL, d, &cpu), KN_OK);
        kn_session_get_info(cpu, &ci);
        assert_int_equal(info.free_blocks, ci.n_blocks); /* one more than the plan's */
        kn_session_destroy(cpu);
        /* 6 prompts: the 8-row program; 3: the 4-row one; 1: the decode program; 4 decode steps each */
        static const uint32_t n_prompts[3] = {6, 3, 1};
        for (int smp = 0; smp < 2; smp++)
            for (int k = 0; k < 3; k++) {
                uint32_t n = n_prompts[k], R = n == 6 ? 8 : n == 3 ? 4 : 1;
                long steps = n == 6 ? per_b[1] : n == 3 ? per_b[0] : per_dec;
                counts c = generate(ctl, s, n, smp ? &top_p : &greedy, &per_prefill, mode == 0, k == 0);
                assert_int_equal(c.allocs, 0);
                assert_int_equal(c.dtoh, 4);           /* one download per step */
                assert_int_equal(c.dtoh_bytes, 4 * 4 * R); /* 4 bytes per row */
                if (mode == 0) { /* captured once (again for the new sampling parameters), then replayed */
                    assert_int_equal(c.captures, smp == 0 ? 1 : 1);
                    assert_int_equal(c.graph_launches, 4);
                    assert_int_equal(c.launches, steps + 1);
                    /* the same again: no new capture */
                    c = generate(ctl, s, n, smp ? &top_p : &greedy, &per_prefill, true, false);
                    assert_int_equal(c.captures, 0);
                    assert_int_equal(c.graph_launches, 4);
                    assert_int_equal(c.launches, 0);
                    assert_int_equal(c.allocs, 0);
                } else {
                    assert_int_equal(c.captures, 0);
                    assert_int_equal(c.graph_launches, 0);
                    assert_int_equal(c.launches, 4 * (steps + 1));
                }
            }
        kn_session_get_info(s, &info);
        assert_int_equal(info.free_blocks, info.n_blocks - 1);
        kn_session_destroy(s);
    }
    assert_int_equal(ctl(MOCK_LIVE, -1), live);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    kn_graph_destroy(g);
    built_free(&o);
    kn_diag_destroy(d);
    mb_free(b);
}

/* kn_session_forward_batch on the mock: 6 sequences of different lengths
 * on the 8-row program, logits rows back; 10 sequences: 8 + 2 rows (the
 * 8- then the 4-row program); the errors before anything runs. */
static void mock_forward_batch(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    built o;
    const uint32_t rows[2] = {4, 8};
    build(b, "llama_gqa_tiny", rows, NULL, 2, &o);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g;
    assert_int_equal(kn_plan_load(o.path, NULL, d, &g), KN_OK);
    kn_session *s;
    assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, NULL, NULL, d, &s), KN_OK);
    uint32_t seq[10];
    int64_t prompt[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77}, tok[10] = {0};
    for (uint32_t i = 0; i < 10; i++) {
        assert_int_equal(kn_session_add_sequence(s, &seq[i]), KN_OK);
        assert_int_equal(kn_session_forward(s, seq[i], prompt, 1 + i % 5, NULL), KN_OK);
    }
    kn_session_info info;
    kn_session_get_info(s, &info);
    float *logits = malloc((size_t)10 * info.vocab * sizeof *logits);
    zero(ctl);
    assert_int_equal(kn_session_forward_batch(s, seq, tok, 6, logits), KN_OK);
    counts c = take(ctl);
    assert_int_equal(c.dtoh, 1);
    assert_true(c.dtoh_bytes >= 8 * 4 * (long)info.vocab); /* the 8 rows' logits */
    for (uint32_t i = 0; i < 6; i++)
        assert_int_equal(kn_session_sequence_length(s, seq[i]), 2 + i % 5);
    zero(ctl);
    assert_int_equal(kn_session_forward_batch(s, seq, tok, 10, logits), KN_OK);
    c = take(ctl);
    assert_int_equal(c.dtoh, 2); /* 8 rows, then 2 on the 4-row program */
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(kn_session_sequence_length(s, seq[i]), (i < 6 ? 3 : 2) + i % 5);
    /* errors: nothing runs, nothing changes */
    uint32_t dup[3] = {seq[0], seq[1], seq[0]}, unknown[2] = {seq[2], 99};
    zero(ctl);
    assert_int_equal(kn_session_forward_batch(s, dup, tok, 3, logits), KN_ERR_INVALID);
    assert_int_equal(kn_session_forward_batch(s, unknown, tok, 2, logits), KN_ERR_INVALID);
    c = take(ctl);
    assert_int_equal(c.launches + c.graph_launches + c.dtoh, 0);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(kn_session_sequence_length(s, seq[i]), (i < 6 ? 3 : 2) + i % 5);
    free(logits);
    kn_session_destroy(s);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    kn_graph_destroy(g);
    built_free(&o);
    kn_diag_destroy(d);
    mb_free(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(emulated_batch),
        cmocka_unit_test(section_checks),
    };
    const struct CMUnitTest mock_tests[] = {
        cmocka_unit_test(mock_batched_generate),
        cmocka_unit_test(mock_forward_batch),
    };
    if (argc > 1 && strcmp(argv[1], "--mock") == 0)
        return cmocka_run_group_tests_name("cuda_decode_batch_mock", mock_tests, NULL, NULL);
    return cmocka_run_group_tests_name("cuda_decode_batch", tests, NULL, NULL);
}
