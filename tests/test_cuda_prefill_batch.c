/* Batched prefill programs of a target-cuda decoder plan (kiln compile
 * --prefill-batch, tools/compile_decoder.c kn_compile_cuda_batch;
 * runtime/session_cuda.c kn_session_cuda_prefill_batch):
 *   - for tests/models/llama_gqa_tiny, gpt2_tiny and qwen2_tiny: the graph
 *     lowered for [1, 4], [1, 1] and [3, 4] into one plan; the [3, 4]
 *     program reads back from the batched programs' sections (inputs
 *     [3, 4], kv rows 3 x tokens 4); under the host emulator it prefills
 *     prompts of 10, 5 and 3 tokens together, bound as the CUDA session
 *     binds it (row r the next chunk of the r-th prompt still going, the
 *     last chunk of each padded, spare rows P tokens of a scratch sequence
 *     at past 0; the session would run the last run's single prompt on the
 *     [1, P] program, here the [3, 4] one takes it with 2 spare rows): each prompt's last-token logits within 1e-4 of a CPU
 *     session's forward of that prompt alone on the target-cpu graph, the
 *     same greedy token, and the plan's sampling kernel run over all 12
 *     rows keeps that token at each prompt's row;
 *   - --mock (test_cuda_prefill_batch_mock): kn_session_create_device on
 *     a plan with a [4, 1] decode program and [2, 4], [4, 4] prefill
 *     programs against the host mock of the driver: kn_session_generate of
 *     prompts of 10, 5 and 2 tokens prefills them in 3 runs (the 4-row
 *     program, the 2-row one, then the [1, 4] program for the last prompt
 *     going alone), each program's graph captured once and replayed (also
 *     by a second generate: no capture), nothing allocated, each run's
 *     rows x P ids back; --no-cuda-graph launches
 *     kernel by kernel with the same tokens; the scratch sequence's block
 *     is the only one left taken; kn_session_prefill_batch_greedy falls
 *     back to one prompt after another for a 1-token prompt;
 *   - --gpu (test_cuda_prefill_batch_gpu, label gpu): on a GPU, greedy
 *     kn_session_generate of prompts of 10, 5, 2 and 7 tokens (prefilled
 *     together) and of each alone (the prefill graph) on the CUDA session,
 *     with CUDA graphs and without, gives the tokens of the CPU session on
 *     the same plan; skipped without a GPU or NVRTC. */
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

/* The plan's greedy sampling kernel under the emulator over `rows` rows
 * of logits: each row's id into out. */
static void emu_argmax_rows(const kn_cu_program *prog, const float *logits, int64_t vocab, uint32_t rows,
                            int32_t *out)
{
    const kn_cu_kernel *k = NULL;
    for (uint32_t i = 0; i < prog->n_kernels; i++)
        if (strcmp(prog->kernels[i].entry, KN_SAMPLE_ARGMAX_ENTRY) == 0)
            k = &prog->kernels[i];
    assert_non_null(k);
    char err[4096];
    kn_emu_launch_fn f = kn_emu_build(k->source, k->entry, k->hash, err, sizeof err);
    if (!f)
        fail_msg("host build of %s: %.2000s", k->entry, err);
    kn_sample_params p = {rows, vocab, vocab, 0.0f, 1.0f, 0, 0};
    const float *x = logits;
    void *args[3] = {&x, &out, &p};
    unsigned grid[3] = {rows, 1, 1}, block[3] = {KN_SAMPLE_THREADS, 1, 1};
    f(grid, block, args);
}

static void emulated_prefill_batch(void **state)
{
    (void)state;
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        print_message("skipped: the host emulator cannot start: %s\n", err);
        skip();
    }
    enum { R = 3, NP = 3 };
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        mb *b = mb_new();
        built o;
        const uint32_t rows = R, toks = P_CHUNK;
        build(b, models[m], &rows, &toks, 1, &o);
        kn_diag *d = kn_diag_create(NULL, stderr);
        /* read back: the [R, P] program in the batched programs' sections */
        kn_graph *plan, *bgraph;
        assert_int_equal(kn_plan_load(o.path, NULL, d, &plan), KN_OK);
        assert_int_equal(kn_plan_cuda_decode_batches(plan), 1);
        assert_int_equal(kn_plan_load_cuda_decode_batch(plan, 0, NULL, d, &bgraph), KN_OK);
        for (uint32_t i = 0; i < bgraph->n_inputs; i++) {
            const kn_type *t = &bgraph->values[bgraph->inputs[i]].type;
            assert_int_equal(t->shape.dims[0].value, R);
            assert_int_equal(t->shape.dims[1].value, P_CHUNK);
        }
        kn_cuda_plan cp;
        assert_int_equal(kn_cuda_plan_read(bgraph, bgraph->info->plan_base, bgraph->info->plan_size, NULL, d, &cp),
                         KN_OK);
        assert_int_equal(cp.kv_rows, R);
        assert_int_equal(cp.kv_tokens, P_CHUNK);
        kn_cuda_plan_free(&cp);
        kn_graph_destroy(bgraph);
        kn_graph_destroy(plan);
        /* the CPU reference: each prompt alone on the target-cpu graph */
        kn_graph *ref = optimized(models[m], false);
        kn_session *rs;
        assert_int_equal(kn_session_create(ref, NULL, NULL, d, &rs), KN_OK);
        kn_session_info info;
        kn_session_get_info(rs, &info);
        uint32_t V = info.vocab;
        static const uint32_t lens[NP] = {10, 5, 3};
        int64_t prompt[NP][10];
        float *want = malloc((size_t)NP * V * sizeof *want);
        assert_non_null(want);
        for (uint32_t i = 0; i < NP; i++) {
            uint32_t rseq;
            for (uint32_t t = 0; t < lens[i]; t++)
                prompt[i][t] = (int64_t)((i * 53 + t * 29 + 3) % 250);
            assert_int_equal(kn_session_add_sequence(rs, &rseq), KN_OK);
            assert_int_equal(kn_session_forward(rs, rseq, prompt[i], lens[i], want + (size_t)i * V), KN_OK);
        }
        /* the emulated runs, bound as kn_session_cuda_prefill_batch binds them */
        kn_kv_config cfg = {info.n_layers, info.kv_heads, info.head_dim, info.block_size, info.n_blocks,
                            info.max_seq_len};
        kn_kv_cache *c;
        assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
        uint32_t scratch, cs[NP], done[NP] = {0};
        assert_int_equal(kn_kv_seq_add(c, &scratch), KN_OK);
        assert_int_equal(kn_kv_seq_reserve(c, scratch, P_CHUNK, d), KN_OK);
        for (uint32_t i = 0; i < NP; i++) {
            assert_int_equal(kn_kv_seq_add(c, &cs[i]), KN_OK);
            assert_int_equal(kn_kv_seq_reserve(c, cs[i], (lens[i] + P_CHUNK - 1) / P_CHUNK * P_CHUNK, d), KN_OK);
        }
        uint32_t max_blocks = (cfg.max_seq_len + cfg.block_size - 1) / cfg.block_size, runs = 0, finished = 0;
        int32_t *table = calloc((size_t)R * max_blocks, sizeof *table), past[R];
        assert_non_null(table);
        double worst = 0;
        for (;;) {
            uint32_t act[R], n = 0, row_seq[R];
            for (uint32_t i = 0; i < NP && n < R; i++)
                if (done[i] < lens[i])
                    act[n++] = i;
            if (n == 0)
                break;
            kn_rt_tensor *in[2] = {0}, *out[1] = {0};
            int64_t dims[2] = {R, P_CHUNK};
            for (uint32_t i = 0; i < o.dec->n_inputs; i++)
                assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, dims, &in[i]), KN_OK);
            for (uint32_t r = 0; r < R; r++) {
                uint32_t i = r < n ? act[r] : 0, mr = r < n ? (lens[i] - done[i] < P_CHUNK ? lens[i] - done[i]
                                                                                          : P_CHUNK)
                                                         : 0;
                row_seq[r] = r < n ? cs[i] : scratch;
                uint32_t p0 = r < n ? done[i] : 0;
                kn_kv_seq_get(c, row_seq[r])->len = p0;
                for (uint32_t t = 0; t < P_CHUNK; t++) {
                    ((int64_t *)in[0]->data)[r * P_CHUNK + t] = t < mr ? prompt[i][done[i] + t] : 0;
                    if (in[1])
                        ((int64_t *)in[1]->data)[r * P_CHUNK + t] = p0 + t;
                }
            }
            assert_int_equal(kn_kv_fill_rows(c, row_seq, R, max_blocks, table, past), KN_OK);
            kn_emu_kv kv = {c->keys, c->values, (uint64_t)cfg.n_blocks * c->block_elems * 4, table, past};
            char msg[2048] = "";
            if (kn_emu_run_program(o.dec, &o.bprog[0], in, out, &kv, msg, sizeof msg) != KN_OK)
                fail_msg("%s run %u: %s", models[m], runs, msg);
            assert_int_equal(out[0]->numel, (int64_t)R * P_CHUNK * V);
            int32_t ids[R * P_CHUNK];
            emu_argmax_rows(&o.bprog[0], out[0]->data, V, R * P_CHUNK, ids);
            for (uint32_t r = 0; r < n; r++) {
                uint32_t i = act[r], mr = lens[i] - done[i] < P_CHUNK ? lens[i] - done[i] : P_CHUNK;
                done[i] += mr;
                kn_kv_seq_get(c, cs[i])->len = done[i];
                if (done[i] < lens[i])
                    continue;
                const float *got = (const float *)out[0]->data + ((size_t)r * P_CHUNK + mr - 1) * V;
                const float *w = want + (size_t)i * V;
                for (uint32_t v = 0; v < V; v++) {
                    double e = fabs((double)got[v] - (double)w[v]);
                    worst = e > worst ? e : worst;
                }
                if (!(worst <= 1e-4))
                    fail_msg("%s run %u, prompt %u: logits differ by %.3g", models[m], runs, i, worst);
                assert_int_equal(argmax(got, V), argmax(w, V));
                assert_int_equal(ids[r * P_CHUNK + mr - 1], argmax(w, V));
                finished++;
            }
            kn_kv_seq_get(c, scratch)->len = 0;
            for (int k = 0; k < 2; k++)
                kn_rt_tensor_free(NULL, in[k]);
            kn_rt_tensor_free(NULL, out[0]);
            runs++;
        }
        assert_int_equal(runs, 3); /* 10, 5, 3 -> 4, 4, 3 | 4, 1 | 2 */
        assert_int_equal(finished, NP);
        print_message("%s: [3, 4] program emulated over prompts of 10, 5 and 3 tokens in %u runs (padded last "
                      "chunks, spare rows on the scratch sequence): last-token logits within %.3g of each prompt's "
                      "CPU forward alone, the same greedy tokens, also from the sampling kernel over all rows\n",
                      models[m], runs, worst);
        free(table), free(want);
        kn_kv_destroy(c);
        kn_session_destroy(rs);
        kn_graph_destroy(ref);
        built_free(&o);
        kn_diag_destroy(d);
        mb_free(b);
    }
}

/* ---- against the mock driver ---- */

static const int whats[6] = {MOCK_LAUNCHES, MOCK_CAPTURES, MOCK_GRAPH_LAUNCHES, MOCK_DTOH, MOCK_DTOH_BYTES,
                             MOCK_ALLOCS};

static void generate3(mock_ctl_fn ctl, kn_session *s, int64_t tok[3][3], long c[6])
{
    static const int64_t ids[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77};
    const int64_t *prompts[3] = {ids, ids + 2, ids + 5};
    uint32_t lens[3] = {10, 5, 2};
    kn_generate_options go;
    kn_generate_options_defaults(&go);
    go.max_new_tokens = 3;
    kn_generate_result r[3];
    for (int i = 0; i < 6; i++)
        ctl(whats[i], 0);
    assert_int_equal(kn_session_generate(s, prompts, lens, 3, &go, r), KN_OK);
    for (int i = 0; i < 6; i++)
        c[i] = ctl(whats[i], -1);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(r[i].n_tokens, 3);
        for (uint32_t k = 0; k < 3; k++)
            tok[i][k] = r[i].tokens[k];
    }
    kn_generate_results_free(s, r, 3);
}

static void mock_prefill_batch(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    built o;
    const uint32_t rows[3] = {4, 2, 4}, toks[3] = {1, P_CHUNK, P_CHUNK};
    build(b, "llama_gqa_tiny", rows, toks, 3, &o);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g, *bg;
    assert_int_equal(kn_plan_load(o.path, NULL, d, &g), KN_OK);
    assert_int_equal(kn_plan_load_cuda_prefill(g, NULL, d, &bg), KN_OK);
    long per_pre = plan_launch_steps(bg), per[3];
    kn_graph_destroy(bg);
    for (uint32_t k = 0; k < 3; k++) {
        assert_int_equal(kn_plan_load_cuda_decode_batch(g, k, NULL, d, &bg), KN_OK);
        per[k] = plan_launch_steps(bg);
        kn_graph_destroy(bg);
    }
    kn_session *s;
    assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, NULL, NULL, d, &s), KN_OK); /* cuBLASLt's handle */
    kn_session_destroy(s);
    long live = ctl(MOCK_LIVE, -1);
    int64_t tok[2][3][3];
    for (int mode = 0; mode < 2; mode++) { /* CUDA graphs, --no-cuda-graph */
        kn_session_options so;
        kn_session_options_defaults(&so);
        so.no_cuda_graph = mode == 1;
        assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, &so, NULL, d, &s), KN_OK);
        assert_true(kn_session_batched(s));
        assert_true(kn_session_prefill_batched(s));
        kn_session_info info;
        kn_session_get_info(s, &info);
        uint32_t free0 = info.free_blocks;
        assert_int_equal(free0, info.n_blocks - 1); /* the scratch sequence's block (P = 4 tokens) */
        long c[6];
        generate3(ctl, s, tok[mode], c);
        /* prefill: 10, 5, 2 -> the 4-row program (4, 4, 2), the 2-row one (4, 1), then the last 2 tokens of
         * the 10 alone on the [1, 4] program; decode: 2 steps of the [4, 1] program */
        long dtoh_bytes = (4 + 2) * P_CHUNK * 4 + (mode == 0 ? P_CHUNK * 4 : 4) + 2 * 4 * 4;
        assert_int_equal(c[5], 0); /* no allocation */
        assert_int_equal(c[3], 3 + 2);
        assert_int_equal(c[4], dtoh_bytes);
        if (mode == 0) {
            assert_int_equal(c[1], 4); /* the 4- and 2-row prefill graphs, the [1, 4] one's, the decode graph */
            assert_int_equal(c[2], 3 + 2);
            assert_int_equal(c[0], per[2] + 1 + per[1] + 1 + per_pre + 1 + per[0] + 1); /* the captures' */
            generate3(ctl, s, tok[mode], c);
            assert_int_equal(c[1], 0);
            assert_int_equal(c[2], 3 + 2);
            assert_int_equal(c[0], 0);
            assert_int_equal(c[5], 0);
        } else {
            assert_int_equal(c[1], 0);
            assert_int_equal(c[2], 0);
            assert_int_equal(c[0], per[2] + per[1] + 2 + per_pre + 1 + 2 * (per[0] + 1));
        }
        kn_session_get_info(s, &info);
        assert_int_equal(info.free_blocks, free0); /* the sequences' blocks back */
        /* a 1-token prompt: one prompt after another (no batched run) */
        uint32_t seqs[2];
        int64_t one[1] = {5}, two[2] = {5, 6}, next[2] = {-1, -1};
        const int64_t *pr[2] = {one, two};
        uint32_t lens[2] = {1, 2};
        for (int i = 0; i < 2; i++)
            assert_int_equal(kn_session_add_sequence(s, &seqs[i]), KN_OK);
        ctl(MOCK_DTOH, 0);
        assert_int_equal(kn_session_prefill_batch_greedy(s, seqs, pr, lens, 2, next), KN_OK);
        assert_int_equal(ctl(MOCK_DTOH, -1), 2);
        assert_int_equal(next[0], 0);
        assert_int_equal(next[1], 0);
        assert_int_equal(kn_session_sequence_length(s, seqs[0]), 1);
        assert_int_equal(kn_session_sequence_length(s, seqs[1]), 2);
        /* two 2-token prompts: one run of the 2-row program */
        pr[0] = two, lens[0] = 2;
        uint32_t more[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(kn_session_add_sequence(s, &more[i]), KN_OK);
        ctl(MOCK_DTOH, 0);
        assert_int_equal(kn_session_prefill_batch_greedy(s, more, pr, lens, 2, next), KN_OK);
        assert_int_equal(ctl(MOCK_DTOH, -1), 1);
        assert_int_equal(kn_session_sequence_length(s, more[0]), 2);
        assert_int_equal(kn_session_sequence_length(s, more[1]), 2);
        kn_session_destroy(s);
    }
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            assert_int_equal(tok[0][i][k], tok[1][i][k]);
    assert_int_equal(ctl(MOCK_LIVE, -1), live);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    kn_graph_destroy(g);
    built_free(&o);
    kn_diag_destroy(d);
    mb_free(b);
}

/* Greedy generations of `n` prompts on s: the tokens into tok[i][k]. */
static void generate_n(kn_session *s, const int64_t *const *prompts, const uint32_t *lens, uint32_t n,
                       int64_t tok[4][6])
{
    kn_generate_options go;
    kn_generate_options_defaults(&go);
    go.max_new_tokens = 6;
    kn_generate_result r[4];
    assert_int_equal(kn_session_generate(s, prompts, lens, n, &go, r), KN_OK);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(r[i].n_tokens, 6);
        for (uint32_t k = 0; k < 6; k++)
            tok[i][k] = r[i].tokens[k];
    }
    kn_generate_results_free(s, r, n);
}

static void gpu_generate(void **state)
{
    (void)state;
    kn_diag *d = kn_diag_create(NULL, stderr);
    if (!kn_cuda_available(d) || !kn_nvrtc_version()) {
        print_message("skipped: no GPU or no NVRTC\n");
        kn_diag_destroy(d);
        skip();
    }
    mb *b = mb_new();
    built o;
    const uint32_t rows[3] = {4, 2, 4}, toks[3] = {1, P_CHUNK, P_CHUNK};
    build(b, "llama_gqa_tiny", rows, toks, 3, &o);
    kn_graph *g;
    assert_int_equal(kn_plan_load(o.path, NULL, d, &g), KN_OK);
    static const int64_t ids[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77};
    const int64_t *prompts[4] = {ids, ids + 2, ids + 5, ids + 1};
    uint32_t lens[4] = {10, 5, 2, 7};
    int64_t want[4][6], got[4][6];
    kn_session *cpu;
    assert_int_equal(kn_session_create_device(g, KN_DEVICE_CPU, NULL, NULL, d, &cpu), KN_OK);
    generate_n(cpu, prompts, lens, 4, want);
    kn_session_destroy(cpu);
    for (int mode = 0; mode < 2; mode++) {
        kn_session_options so;
        kn_session_options_defaults(&so);
        so.no_cuda_graph = mode == 1;
        kn_session *s;
        assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, &so, NULL, d, &s), KN_OK);
        assert_true(kn_session_prefill_batched(s));
        for (int round = 0; round < 2; round++) { /* the second replays the graphs */
            generate_n(s, prompts, lens, 4, got);
            for (int i = 0; i < 4; i++)
                for (int k = 0; k < 6; k++)
                    assert_int_equal(got[i][k], want[i][k]);
        }
        for (uint32_t i = 0; i < 4; i++) { /* each alone: the [1, P] prefill graph */
            generate_n(s, &prompts[i], &lens[i], 1, got);
            for (int k = 0; k < 6; k++)
                assert_int_equal(got[0][k], want[i][k]);
        }
        kn_session_destroy(s);
    }
    print_message("GPU: llama_gqa_tiny, prompts of 10, 5, 2, 7 tokens prefilled together and alone, with CUDA graphs "
                  "and without: the CPU session's greedy tokens\n");
    kn_graph_destroy(g);
    built_free(&o);
    kn_diag_destroy(d);
    mb_free(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(emulated_prefill_batch),
    };
    const struct CMUnitTest mock_tests[] = {
        cmocka_unit_test(mock_prefill_batch),
    };
    const struct CMUnitTest gpu_tests[] = {
        cmocka_unit_test(gpu_generate),
    };
    if (argc > 1 && strcmp(argv[1], "--mock") == 0)
        return cmocka_run_group_tests_name("cuda_prefill_batch_mock", mock_tests, NULL, NULL);
    if (argc > 1 && strcmp(argv[1], "--gpu") == 0)
        return cmocka_run_group_tests_name("cuda_prefill_batch_gpu", gpu_tests, NULL, NULL);
    return cmocka_run_group_tests_name("cuda_prefill_batch", tests, NULL, NULL);
}
