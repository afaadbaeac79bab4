/* A real exported decoder on target cuda with the runtime's KV cache:
 * tests/models/llama_gqa_tiny (GQA, rotary, RMSNorm, SwiGLU) through the
 * -O2 pipeline (the kv-cache pass makes its attentions kiln.PagedAttention
 * with the attention mask), the mask then removed by hand (causal = 1;
 * dce drops the mask arithmetic), lowered for [1, P] and [1, 1] new tokens.
 *   - under the host emulator: a prompt and 3 greedy decode steps against
 *     a CPU session on the graph with its mask (logits within 1e-4, the
 *     same tokens);
 *   - --mock (test_cuda_decoder_mock): kn_session_create_cuda's plumbing
 *     against the host mock of the driver (prefill chunks, padding, block
 *     reservations, launches, refusals, no leak);
 *   - --gpu (test_cuda_decoder_gpu, label gpu): the CUDA session's logits
 *     and greedy tokens against the CPU session; skipped without a GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/cuda/lower.h"
#include "codegen/plan_write.h"
#include "cuda_paged_util.h"
#include "emu_host.h"
#include "emu_program.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "kiln/session.h"
#include "model_builder.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "runtime/cuda/plan.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LLAMA KN_SOURCE_DIR "/tests/models/llama_gqa_tiny/model.onnx"

/* tests/models/llama_gqa_tiny (an exported Llama: GQA, rotary, RMSNorm,
 * SwiGLU) through the -O2 pipeline as kiln compile runs it for target cpu:
 * the kv-cache pass makes its two attentions kiln.PagedAttention, and with
 * `causal` the kv-mask pass replaces their mask by causal = 1 (the
 * attention_mask and past inputs leave the graph); without, kv-mask is
 * disabled and the nodes keep the mask. */
static kn_graph *llama(bool causal)
{
    kn_diag *d = kn_diag_create(NULL, NULL); /* the kv-cache pass's note is expected */
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_file(LLAMA, NULL, NULL, d, &g), KN_OK);
    static const char *const no_mask[] = {"kv-mask"};
    kn_pipeline_opts po = {true, NULL};
    if (!causal) {
        po.disabled = no_mask;
        po.n_disabled = 1;
    }
    assert_int_equal(kn_pipeline_run(g, &po, d), KN_OK);
    uint32_t n_paged = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (n->op != KN_OP_KILN_PagedAttention)
            continue;
        bool has_mask = n->n_inputs >= 4 && n->inputs[3] != KN_NONE;
        assert_true(has_mask == !causal);
        int64_t c = 0;
        for (uint32_t i = 0; i < n->n_attrs; i++)
            if (strcmp(n->attrs[i].name, "causal") == 0)
                c = n->attrs[i].u.i;
        assert_int_equal(c, causal ? 1 : 0);
        n_paged++;
    }
    assert_int_equal(n_paged, 2);
    kn_diag_destroy(d);
    return g;
}

/* The llama graph without its mask lowered for [1, n] new tokens (kernels
 * NVRTC-compiled when NVRTC is there). */
static kn_graph *llama_lowered(int64_t n, kn_cu_program *prog)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = llama(true);
    /* kv-mask took attention_mask and the past inputs out of the graph */
    assert_int_equal(g->n_inputs, 2);
    kn_cuda_shape sh[2] = {{"input_ids", 2, {1, n}}, {"position_ids", 2, {1, n}}};
    kn_cuda_lower_stats st;
    memset(prog, 0, sizeof *prog);
    assert_int_equal(kn_cuda_lower(g, sh, 2, NULL, d, prog, &st), KN_OK);
    assert_int_equal(st.nodes_host, 0);
    assert_true(uses_kernel(prog, n == 1 ? "kn_decode_attn" : "kn_flash_attn"));
    if (kn_nvrtc_version()) {
        static const uint32_t archs[] = {80, 86, 89, 90};
        kn_nvrtc_options no = {archs, 4, false, NULL, 0};
        assert_int_equal(kn_cuda_compile(prog, &no, d, NULL), KN_OK);
    }
    kn_diag_destroy(d);
    return g;
}

/* A 7-token prompt and 3 greedy decode steps: the lowered plans (7 and 1
 * new tokens) under emulation over a scrambled cache against a CPU
 * session on the -O2 graph with its mask: the last token's logits within
 * 1e-4 at every step, the same greedy tokens. */
static void llama_steps(void **state)
{
    (void)state;
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        print_message("skipped: the host emulator cannot start: %s\n", err);
        skip();
    }
    FILE *f = fopen(LLAMA, "rb");
    if (!f) {
        print_message("skipped: %s is missing\n", LLAMA);
        skip();
    }
    fclose(f);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g[2];
    kn_cu_program prog[2];
    memset(prog, 0, sizeof prog);
    const int64_t P = 7, vocab = 512;
    for (int i = 0; i < 2; i++)
        g[i] = llama_lowered(i ? 1 : P, &prog[i]);
    assert_int_equal(g[0]->n_inputs, 2);
    assert_string_equal(g[0]->values[g[0]->inputs[0]].name, "input_ids");
    assert_string_equal(g[0]->values[g[0]->inputs[1]].name, "position_ids");
    /* the reference: a CPU session on the graph with the mask */
    kn_graph *ref = llama(false);
    kn_session *sess;
    assert_int_equal(kn_session_create(ref, NULL, NULL, d, &sess), KN_OK);
    uint32_t sid;
    assert_int_equal(kn_session_add_sequence(sess, &sid), KN_OK);
    /* the device side: the plan's cache shape, blocks handed out of order */
    kn_kv_config cfg = {2, 2, 32, 16, 128, 2048};
    kn_kv_cache *c;
    assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
    uint32_t junk, row;
    assert_int_equal(kn_kv_seq_add(c, &junk), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, junk, 40, d), KN_OK);
    assert_int_equal(kn_kv_seq_add(c, &row), KN_OK);
    assert_int_equal(kn_kv_seq_free(c, junk), KN_OK);
    int32_t table[128], past;
    int64_t tokens[7] = {1, 15, 300, 42, 7, 99, 250};
    float want[512];
    double worst = 0;
    for (int step = 0; step < 4; step++) {
        int which = step > 0;
        int64_t n = which ? 1 : P;
        uint32_t len = kn_kv_seq_get(c, row)->len;
        assert_int_equal(kn_kv_seq_reserve(c, row, len + (uint32_t)n, d), KN_OK);
        assert_int_equal(kn_kv_fill_rows(c, &row, 1, 128, table, &past), KN_OK);
        assert_int_equal(kn_session_forward(sess, sid, tokens, (uint32_t)n, want), KN_OK);
        /* the plan's inputs: input_ids, position_ids */
        kn_rt_tensor *in[2] = {0};
        int64_t d2[2] = {1, n};
        for (int i = 0; i < 2; i++)
            assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, d2, &in[i]), KN_OK);
        for (int64_t t = 0; t < n; t++) {
            ((int64_t *)in[0]->data)[t] = tokens[t];
            ((int64_t *)in[1]->data)[t] = len + t;
        }
        kn_emu_kv kv = {c->keys, c->values, (uint64_t)cfg.n_blocks * c->block_elems * 4, table, &past};
        kn_rt_tensor *out[1] = {0};
        char msg[2048] = "";
        if (kn_emu_run_program(g[which], &prog[which], in, out, &kv, msg, sizeof msg) != KN_OK)
            fail_msg("step %d: %s", step, msg);
        assert_int_equal(out[0]->numel, n * vocab);
        const float *got = (const float *)out[0]->data + (n - 1) * vocab;
        int64_t best = 0, best_ref = 0;
        for (int64_t v = 0; v < vocab; v++) {
            double e = fabs((double)got[v] - (double)want[v]);
            worst = e > worst ? e : worst;
            best = got[v] > got[best] ? v : best;
            best_ref = want[v] > want[best_ref] ? v : best_ref;
        }
        if (!(worst <= 1e-4))
            fail_msg("step %d (past %d, %lld tokens): logits differ by %.3g", step, past, (long long)n, worst);
        assert_int_equal(best, best_ref);
        kn_kv_seq_get(c, row)->len += (uint32_t)n;
        tokens[0] = best_ref;
        for (int i = 0; i < 2; i++)
            kn_rt_tensor_free(NULL, in[i]);
        kn_rt_tensor_free(NULL, out[0]);
    }
    print_message("llama_gqa_tiny: prompt 7 + 3 greedy steps under emulation, last-token logits within %.3g of the "
                  "CPU session\n",
                  worst);
    kn_kv_destroy(c);
    kn_session_destroy(sess);
    kn_graph_destroy(ref);
    for (int i = 0; i < 2; i++) {
        kn_cu_program_free(&prog[i]);
        kn_graph_destroy(g[i]);
    }
    kn_diag_destroy(d);
}

/* The llama plans of a CUDA session: prefill at [1, P] and decode at
 * [1, 1], written under dir (fake PTX images when NVRTC is missing: enough
 * for the mock driver). *compiled says whether the images are real. */
static void llama_plans(mb *b, int64_t P, char **paths, bool *compiled)
{
    char *dir = mb_tempdir(b);
    kn_diag *d = kn_diag_create(NULL, stderr);
    *compiled = kn_nvrtc_version() != NULL;
    for (int i = 0; i < 2; i++) {
        kn_cu_program prog;
        kn_graph *g = llama_lowered(i ? 1 : P, &prog);
        for (uint32_t k = 0; !*compiled && k < prog.n_kernels; k++) {
            static const char ptx[] = "// PTX\n";
            uint8_t *t = kn_mem_alloc(NULL, sizeof ptx);
            prog.kernels[k].images = kn_mem_alloc(NULL, sizeof *prog.kernels[k].images);
            assert_true(t && prog.kernels[k].images);
            memcpy(t, ptx, sizeof ptx);
            prog.kernels[k].images[0] = (kn_cu_image){KN_CU_ARCH_PTX, t, sizeof ptx};
            prog.kernels[k].n_images = 1;
        }
        paths[i] = mb_path(b, dir, i ? "decode.plan" : "prefill.plan");
        kn_plan_options o = {"--target cuda", "cuda", &prog, NULL, 0};
        assert_int_equal(kn_plan_write(g, &o, paths[i], d), KN_OK);
        kn_cu_program_free(&prog);
        kn_graph_destroy(g);
    }
    kn_diag_destroy(d);
}

/* kn_session_create_cuda's plumbing against the mock (which does not run
 * kernels: the logits are not checked here, see gpu_llama_session): a
 * 10-token prompt in prefill chunks of 4 (the last padded), 3 decode
 * steps, the blocks reserved, the launches, the refusals. */
static void mock_llama_session(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    char *paths[2];
    bool compiled;
    llama_plans(b, 4, paths, &compiled);
    kn_diag *d = kn_diag_create(NULL, stderr), *q = kn_diag_create(NULL, NULL);
    kn_graph *pg[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(kn_plan_load(paths[i], NULL, d, &pg[i]), KN_OK);
    uint32_t per_run[2] = {plan_launch_steps(pg[0]), plan_launch_steps(pg[1])};
    kn_session *s;
    /* once first: cuBLASLt's handle is made on first use and kept */
    assert_int_equal(kn_session_create_cuda(pg[0], pg[1], NULL, NULL, d, &s), KN_OK);
    kn_session_destroy(s);
    long live = ctl(MOCK_LIVE, -1);
    assert_int_equal(kn_session_create_cuda(pg[0], pg[1], NULL, NULL, q, &s), KN_OK); /* messages: q */
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.cache, KN_CACHE_PAGED);
    assert_int_equal(info.n_blocks, 128);
    assert_int_equal(info.vocab, 512);
    uint32_t seq;
    assert_int_equal(kn_session_add_sequence(s, &seq), KN_OK);
    int64_t prompt[10] = {1, 15, 300, 42, 7, 99, 250, 3, 8, 77};
    float logits[512];
    ctl(MOCK_LAUNCHES, 0);
    assert_int_equal(kn_session_forward(s, seq, prompt, 10, logits), KN_OK);
    assert_int_equal(ctl(MOCK_LAUNCHES, -1), 3 * per_run[0]); /* 4 + 4 + 2 (padded to 4) */
    for (int i = 0; i < 3; i++)
        assert_int_equal(kn_session_forward(s, seq, &prompt[i], 1, logits), KN_OK);
    assert_int_equal(ctl(MOCK_LAUNCHES, -1), 3 * per_run[0] + 3 * per_run[1]);
    assert_int_equal(kn_session_sequence_length(s, seq), 13);
    kn_session_get_info(s, &info);
    assert_int_equal(info.free_blocks, 127); /* 13 tokens (12 with the padding) in one 16-token block */
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    /* refused: past the maximum sequence length; the plans the wrong way round; no_cache */
    int64_t *many = calloc(2048, sizeof *many);
    assert_non_null(many);
    assert_int_equal(kn_session_forward(s, seq, many, 2048, logits), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "over the maximum sequence length 2048"));
    free(many);
    assert_int_equal(kn_session_sequence_length(s, seq), 13);
    kn_session *bad;
    assert_int_equal(kn_session_create_cuda(pg[1], pg[0], NULL, NULL, q, &bad), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "the decode plan must take 1 new token per run"));
    kn_session_options so = {0};
    so.no_cache = true;
    assert_int_equal(kn_session_create_cuda(pg[0], pg[1], &so, NULL, q, &bad), KN_ERR_INVALID);
    kn_session_destroy(s);
    for (int i = 0; i < 2; i++)
        kn_graph_destroy(pg[i]);
    assert_int_equal(ctl(MOCK_LIVE, -1), live);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    kn_diag_destroy(q);
    kn_diag_destroy(d);
    mb_free(b);
}

/* On a GPU: the CUDA session against the CPU session on the graph with
 * its mask: a 10-token prompt (prefill chunks of 4, the last padded) and
 * greedy steps, the logits within 1e-4 and the tokens equal. */
static void gpu_llama_session(void **state)
{
    (void)state;
    kn_diag *d = kn_diag_create(NULL, stderr);
    if (!kn_cuda_available(d) || !kn_nvrtc_version()) {
        print_message("skipped: no GPU or no NVRTC\n");
        kn_diag_destroy(d);
        skip();
    }
    mb *b = mb_new();
    char *paths[2];
    bool compiled;
    llama_plans(b, 4, paths, &compiled);
    kn_graph *pg[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(kn_plan_load(paths[i], NULL, d, &pg[i]), KN_OK);
    kn_session *s, *ref_s;
    assert_int_equal(kn_session_create_cuda(pg[0], pg[1], NULL, NULL, d, &s), KN_OK);
    kn_graph *ref = llama(false);
    assert_int_equal(kn_session_create(ref, NULL, NULL, d, &ref_s), KN_OK);
    uint32_t seq, rseq;
    assert_int_equal(kn_session_add_sequence(s, &seq), KN_OK);
    assert_int_equal(kn_session_add_sequence(ref_s, &rseq), KN_OK);
    int64_t tok[10] = {1, 15, 300, 42, 7, 99, 250, 3, 8, 77};
    float got[512], want[512];
    double worst = 0;
    for (int step = 0; step < 6; step++) {
        uint32_t n = step ? 1 : 10;
        assert_int_equal(kn_session_forward(s, seq, tok, n, got), KN_OK);
        assert_int_equal(kn_session_forward(ref_s, rseq, tok, n, want), KN_OK);
        int64_t best = 0, best_ref = 0;
        for (int v = 0; v < 512; v++) {
            double e = fabs((double)got[v] - (double)want[v]);
            worst = e > worst ? e : worst;
            best = got[v] > got[best] ? v : best;
            best_ref = want[v] > want[best_ref] ? v : best_ref;
        }
        if (!(worst <= 1e-4))
            fail_msg("step %d: logits differ by %.3g", step, worst);
        assert_int_equal(best, best_ref);
        tok[0] = best_ref;
    }
    print_message("GPU session: llama_gqa_tiny, prompt 10 + 5 greedy steps, logits within %.3g of the CPU\n", worst);
    kn_session_destroy(s);
    kn_session_destroy(ref_s);
    kn_graph_destroy(ref);
    for (int i = 0; i < 2; i++)
        kn_graph_destroy(pg[i]);
    kn_diag_destroy(d);
    mb_free(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(llama_steps),
    };
    const struct CMUnitTest mock_tests[] = {
        cmocka_unit_test(mock_llama_session),
    };
    const struct CMUnitTest gpu_tests[] = {
        cmocka_unit_test(gpu_llama_session),
    };
    if (argc > 1 && strcmp(argv[1], "--gpu") == 0)
        return cmocka_run_group_tests_name("cuda_decoder_gpu", gpu_tests, NULL, NULL);
    if (argc > 1 && strcmp(argv[1], "--mock") == 0)
        return cmocka_run_group_tests_name("cuda_decoder_mock", mock_tests, NULL, NULL);
    return cmocka_run_group_tests_name("cuda_decoder", tests, NULL, NULL);
}
