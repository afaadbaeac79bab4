/* One target-cuda plan for a decoder (kiln compile --target cuda,
 * tools/compile_decoder.c): the graph lowered for [1, P] and [1, 1] new
 * tokens, both programs in one plan file with the weights once.
 *   - for tests/models/llama_gqa_tiny, gpt2_tiny and qwen2_tiny: the plan
 *     loads, both programs read back through runtime/cuda/plan.c equal
 *     the lowerings' (steps, slots, arguments, kernels), the prefill
 *     graph (kn_plan_load_cuda_prefill) takes [1, P] inputs; then the two
 *     lowered programs under the host emulator (the prompt in chunks of P,
 *     the last padded, as the CUDA session runs it; then greedy decode
 *     steps) against a CPU session on the plan itself (its [1, 1] graph,
 *     one token per run) and one on the target-cpu -O2 graph: the same
 *     greedy tokens, last-token logits within 1e-4; at every step the
 *     plan's sampling kernels under the emulator on the emulated logits
 *     (greedy, seeded temperature + top-p, top-k) pick what
 *     runtime/sampler.c picks on the CPU session's, the draws from a
 *     sampler of the same seed, a prefill chunk's kernel run on all its
 *     rows as the prefill graph runs it (the kept row moving: 3, 3, then
 *     1 for the padded last chunk);
 *   - --mock (test_cuda_decoder_plan_mock): kn_session_create_device
 *     with KN_DEVICE_CUDA and AUTO on the plan against the host mock of
 *     the driver (the prefill program opened from the plan, chunks and
 *     launches, no leak, the decode session on the prefill one's pools and
 *     weights); kn_session_generate sampling on the device: 4 bytes come
 *     back per token, the first decode step captured as a CUDA graph and
 *     the others replayed with one cuGraphLaunch and no kernel launch, no
 *     device or pinned allocation per token; the prefill's chunks
 *     replaying one prefill graph per session (prompts of 1, P, P + 1,
 *     3P - 2 tokens: captured once, launched once per chunk, nothing
 *     allocated, the tokens of --no-cuda-graph); --no-cuda-graph, and a
 *     driver refusing capture, launch kernel by kernel; a repetition
 *     penalty takes the logits back to the host sampler;
 *     kn_cuda_session_run_kv_sample itself (graph captures and launches,
 *     a new capture for new parameters, a bad row, no copy back without a
 *     sample, timing of a replay); without a driver, CUDA is refused naming why
 *     and AUTO falls back to the CPU;
 *   - corrupted prefill sections (random bytes, checksum fixed) are refused
 *     by kn_plan_load_cuda_prefill or harmless, never a crash; a slot's
 *     value out of range is an error message naming it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cli.h"
#include "codegen/cuda/gemv_kernels.h"
#include "codegen/cuda/lower.h"
#include "codegen/cuda/sample_kernels.h"
#include "codegen/plan_write.h"
#include "cuda_paged_util.h"
#include "emu_host.h"
#include "emu_program.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "kiln/sampler.h"
#include "kiln/session.h"
#include "model_builder.h"
#include "passes/passes.h"
#include "runtime/cuda/plan.h"
#include "runtime/plan_format.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P_CHUNK 4

static const char *const models[] = {"llama_gqa_tiny", "gpt2_tiny", "qwen2_tiny"};

static char *model_path(const char *name)
{
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/tests/models/%s/model.onnx", KN_SOURCE_DIR, name);
    return buf;
}

/* The precision the plans are compiled in (--precision: the fp16 cases);
 * the target-cpu reference graph stays float32. */
static kn_precision_opts plan_prec = {KN_F32, NULL, 0, false};

/* The model through the -O2 pipeline as kiln compile runs it: kv-cache
 * kept for target cuda (decoder, in plan_prec), or as for target cpu. */
static kn_graph *optimized(const char *name, bool cuda)
{
    kn_diag *q = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    kn_pipeline_opts po = {0};
    po.precision = &plan_prec;
    assert_int_equal(kn_import_onnx_file(model_path(name), NULL, NULL, q, &g), KN_OK);
    if (cuda)
        assert_int_equal(kn_compile_graph_kv(g, &po, q), KN_OK);
    else
        assert_int_equal(kn_compile_graph(g, "cpu", NULL, q), KN_OK);
    kn_diag_destroy(q);
    return g;
}

typedef struct built {
    kn_graph *dec, *pre;      /* the lowered graphs */
    kn_cu_program dprog, pprog;
    char *path;               /* the plan */
} built;

/* Both lowerings (kernels compiled when NVRTC is there, else images
 * faked: the plan's images are not run here) and the plan. */
static void build(mb *b, const char *name, built *o)
{
    memset(o, 0, sizeof *o);
    o->dec = optimized(name, true);
    assert_int_equal(kn_graph_clone(o->dec, &o->pre), KN_OK); /* as kiln compile does */
    char why[512];
    assert_true(kn_compile_is_decoder(o->dec, why, sizeof why));
    kn_diag *d = kn_diag_create(NULL, stderr);
    static const uint32_t archs[] = {80, 86, 89, 90};
    kn_compile_cuda_opts co = {NULL, 0, archs, 4, false, false, 0};
    if (!kn_nvrtc_version()) {
        /* lowering only, images faked */
        kn_cuda_shape sh[2] = {{"input_ids", 2, {1, P_CHUNK}}, {"position_ids", 2, {1, P_CHUNK}}};
        kn_cuda_shape sd[2] = {{"input_ids", 2, {1, 1}}, {"position_ids", 2, {1, 1}}};
        kn_cuda_lower_stats st;
        assert_int_equal(kn_cuda_lower(o->pre, sh, o->pre->n_inputs, NULL, d, &o->pprog, &st), KN_OK);
        assert_int_equal(kn_cuda_lower(o->dec, sd, o->dec->n_inputs, NULL, d, &o->dprog, &st), KN_OK);
        assert_int_equal(kn_cu_program_add_sampling(&o->pprog, o->pre, KN_F32, d), KN_OK);
        assert_int_equal(kn_cu_program_add_sampling(&o->dprog, o->dec, KN_F32, d), KN_OK);
        kn_cu_program *ps[2] = {&o->pprog, &o->dprog};
        for (int i = 0; i < 2; i++)
            for (uint32_t k = 0; k < ps[i]->n_kernels; k++) {
                static const char ptx[] = "// PTX\n";
                uint8_t *t = kn_mem_alloc(NULL, sizeof ptx);
                ps[i]->kernels[k].images = kn_mem_alloc(NULL, sizeof *ps[i]->kernels[k].images);
                assert_true(t && ps[i]->kernels[k].images);
                memcpy(t, ptx, sizeof ptx);
                ps[i]->kernels[k].images[0] = (kn_cu_image){KN_CU_ARCH_PTX, t, sizeof ptx};
                ps[i]->kernels[k].n_images = 1;
            }
    } else {
        assert_int_equal(
            kn_compile_cuda_decoder(o->dec, o->pre, P_CHUNK, &co, d, &o->dprog, &o->pprog, why, sizeof why), KN_OK);
    }
    /* the decode program's products (one row each) are on the dense GEMV,
     * none left to cuBLASLt */
    uint32_t n_gemv = 0, n_gemm = 0;
    for (uint32_t i = 0; i < o->dprog.n_steps; i++) {
        const kn_cu_step *st = &o->dprog.steps[i];
        n_gemm += st->kind == KN_CU_STEP_GEMM;
        n_gemv += st->kind == KN_CU_STEP_LAUNCH && strcmp(o->dprog.kernels[st->kernel].entry, KN_GEMV_ENTRY) == 0;
    }
    printf("%s: decode program: %u GEMV launches, %u cuBLASLt GEMMs\n", name, n_gemv, n_gemm);
    assert_true(n_gemv > 0);
    /* one launch per product: the K splits' partials added by their last block, counters persistent */
    assert_false(uses_kernel(&o->dprog, KN_GEMV_COMBINE_ENTRY));
    assert_true(o->dprog.has_zero);
    assert_int_equal(n_gemm, 0);
    /* split-K decoding in one launch per layer: the last split block of each row merges the partials */
    assert_true(uses_kernel(&o->dprog, "kn_decode_attn"));
    assert_false(uses_kernel(&o->dprog, "kn_decode_combine"));
    /* the rotary decoders rotate Q and K in the KV append (kv-rotary): no RotaryHalf launch */
    bool rope = strcmp(name, "gpt2_tiny") != 0;
    for (int i = 0; i < 2; i++) {
        const kn_cu_program *p = i ? &o->dprog : &o->pprog;
        assert_true(uses_kernel(p, "kn_kv_append_rope") == rope);
        assert_true(uses_kernel(p, "kn_kv_append") == !rope);
        assert_false(uses_kernel(p, "kn_RotaryHalf"));
    }
    /* the SwiGlu decoders' packed gate|up GEMV writes silu(gate) * up itself: no SwiGlu launch in
     * decode (the graph has one per layer) */
    uint32_t n_swiglu = 0;
    for (kn_id k = 0; k < o->dec->n_nodes; k++)
        n_swiglu += o->dec->nodes[k].op == KN_OP_KILN_SwiGlu;
    assert_true((n_swiglu > 0) == (strcmp(name, "gpt2_tiny") != 0));
    assert_false(uses_kernel(&o->dprog, "kn_SwiGlu"));
    o->path = mb_path(b, mb_tempdir(b), "decoder.plan");
    kn_plan_options po = {"--target cuda", "cuda", &o->dprog, NULL, 0, &o->pprog};
    assert_int_equal(kn_plan_write(o->dec, &po, o->path, d), KN_OK);
    kn_diag_destroy(d);
}

static void built_free(built *o)
{
    kn_cu_program_free(&o->dprog);
    kn_cu_program_free(&o->pprog);
    kn_graph_destroy(o->dec);
    kn_graph_destroy(o->pre);
}

/* The program read back from plan graph g equals the lowering's. */
static void same_program(const kn_graph *g, const kn_cu_program *want)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_cuda_plan p;
    assert_int_equal(kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, NULL, d, &p), KN_OK);
    assert_int_equal(p.n_steps, want->n_steps);
    assert_int_equal(p.n_slots, want->n_slots);
    assert_int_equal(p.n_args, want->n_args);
    assert_int_equal(p.n_kernels, want->n_kernels);
    assert_int_equal(p.kv_tokens, (uint32_t)want->kv_tokens);
    /* the persistent memory (the GEMV's K-split counters): named by META, a pool slot */
    assert_int_equal(p.zero_slot, want->has_zero ? want->zero_slot : KN_PLAN_NONE);
    for (uint32_t k = 0; k < p.n_kernels; k++)
        assert_string_equal(p.entries[k], want->kernels[k].entry);
    for (uint32_t i = 0; i < p.n_steps; i++) {
        const kn_plan_cu_step *a = &p.steps[i];
        const kn_cu_step *b = &want->steps[i];
        assert_int_equal(a->kind, b->kind);
        assert_int_equal(a->kernel, b->kernel);
        assert_int_equal(a->first_arg, b->first_arg);
        assert_int_equal(a->n_args, b->n_args);
        assert_int_equal(a->node, b->node);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(a->grid[k], b->grid[k]);
            assert_int_equal(a->block[k], b->block[k]);
        }
    }
    for (uint32_t i = 0; i < p.n_slots; i++) {
        const kn_plan_cu_slot *a = &p.slots[i];
        const kn_cu_slot *b = &want->slots[i];
        assert_int_equal(a->place, b->place);
        assert_int_equal(a->nbytes, b->nbytes);
        assert_int_equal(a->offset, b->offset);
        assert_int_equal(a->rank, b->rank);
        assert_memory_equal(a->dims, b->dims, (size_t)a->rank * sizeof a->dims[0]);
        if (a->place == KN_CUDA_SLOT_WEIGHT) /* the same constant, by name */
            assert_string_equal(g->info->plan_consts[a->index]->name, g->values[b->index].tensor->name);
    }
    for (uint32_t i = 0; i < p.n_args; i++) {
        assert_int_equal(p.args[i].kind, want->args[i].kind);
        assert_int_equal(p.args[i].slot, want->args[i].slot);
        assert_int_equal(p.args[i].offset, want->args[i].offset);
    }
    assert_int_equal(p.params_size, want->n_params);
    assert_memory_equal(p.params, want->params, want->n_params);
    kn_cuda_plan_free(&p);
    kn_diag_destroy(d);
}

static void read_back(void **state)
{
    (void)state;
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        mb *b = mb_new();
        built o;
        build(b, models[m], &o);
        kn_diag *d = kn_diag_create(NULL, stderr);
        kn_graph *g, *pg;
        assert_int_equal(kn_plan_load(o.path, NULL, d, &g), KN_OK);
        assert_true(kn_plan_is_cuda_decoder(g));
        assert_true(kn_cuda_plan_has_code(g));
        same_program(g, &o.dprog);
        /* persistent memory (the GEMV counters) makes it a version-3 plan */
        FILE *f = fopen(o.path, "rb");
        kn_plan_header h;
        assert_non_null(f);
        assert_int_equal(fread(&h, sizeof h, 1, f), 1);
        fclose(f);
        assert_int_equal(h.version, o.dprog.has_zero ? KN_PLAN_VERSION : KN_PLAN_VERSION_BASE);
        assert_true(o.dprog.has_zero);
        assert_int_equal(kn_plan_load_cuda_prefill(g, NULL, d, &pg), KN_OK);
        same_program(pg, &o.pprog);
        for (uint32_t i = 0; i < pg->n_inputs; i++) {
            const kn_type *t = &pg->values[pg->inputs[i]].type;
            assert_int_equal(t->shape.rank, 2);
            assert_int_equal(t->shape.dims[1].value, P_CHUNK);
            assert_int_equal(g->values[g->inputs[i]].type.shape.dims[1].value, 1);
        }
        /* the weights once: the plan's constants are the decode graph's */
        uint32_t n_const = 0;
        for (kn_id v = 0; v < o.dec->n_values; v++)
            n_const += o.dec->values[v].kind == KN_VAL_CONST;
        assert_int_equal(g->info->n_plan_consts, n_const);
        print_message("%s: decode %u steps, prefill [1, %d] %u steps, read back equal\n", models[m],
                      o.dprog.n_steps, P_CHUNK, o.pprog.n_steps);
        kn_graph_destroy(pg);
        kn_graph_destroy(g);
        built_free(&o);
        kn_diag_destroy(d);
        mb_free(b);
    }
}

static int64_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        best = v[i] > v[best] ? i : best;
    return best;
}

/* The program's sampling kernel (greedy: kn_sample_argmax, else
 * kn_sample) under the emulator on `rows` rows of logits, each with draw
 * u (as the CUDA session samples every row of a prefill chunk): row
 * `pick`'s id. */
static int32_t emu_sample(const kn_cu_program *prog, const kn_sampling *sp, const float *logits, int64_t vocab,
                          double u, uint32_t rows, uint32_t pick)
{
    bool greedy = sp->temperature <= 0.0f || sp->top_k == 1;
    const kn_cu_kernel *k = NULL;
    for (uint32_t i = 0; i < prog->n_kernels; i++)
        if (strcmp(prog->kernels[i].entry, greedy ? KN_SAMPLE_ARGMAX_ENTRY : KN_SAMPLE_ENTRY) == 0)
            k = &prog->kernels[i];
    assert_non_null(k);
    char err[4096];
    kn_emu_launch_fn f = kn_emu_build(k->source, k->entry, k->hash, err, sizeof err);
    if (!f)
        fail_msg("host build of %s: %.2000s", k->entry, err);
    assert_true(rows >= 1 && rows <= 64 && pick < rows);
    kn_sample_params p = {rows, vocab, vocab, sp->temperature, sp->top_p, sp->top_k, 0};
    int32_t out[64], *po = out;
    double uu[64], *pu = uu;
    for (uint32_t r = 0; r < rows; r++)
        out[r] = -1, uu[r] = u;
    const float *x = logits;
    void *gargs[3] = {&x, &po, &p}, *sargs[4] = {&x, &pu, &po, &p};
    unsigned grid[3] = {rows, 1, 1}, block[3] = {KN_SAMPLE_THREADS, 1, 1};
    f(grid, block, greedy ? gargs : sargs);
    for (uint32_t r = 0; r < rows; r++)
        assert_true(out[r] >= 0 && out[r] < vocab);
    return out[pick];
}

/* A 10-token prompt (chunks of 4, 4 and 2 padded to 4) and 3 greedy
 * decode steps: the two lowered programs under the emulator, on the graph
 * the plan keeps (the prefill program on the decode lowering's graph, as
 * the runtime runs it), against CPU sessions on the plan and on the
 * target-cpu graph. */
/* The steps of emulated_steps with the plans in `prec`. float32: the
 * emulated logits within 1e-4 of both CPU sessions, the plan's sampling
 * kernels against the CPU sampler. float16 (the KV cache float16 too:
 * kiln.kv.dtype): the emulated logits within 1e-2 of the CPU session of
 * the same plan (each backend rounds every node's output to float16, from
 * float32 or double sums), the same greedy tokens as it and as the
 * float32 target-cpu graph. */
static void emulate(kn_dtype prec)
{
    bool low = prec != KN_F32;
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        print_message("skipped: the host emulator cannot start: %s\n", err);
        skip();
    }
    plan_prec.to = prec;
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        mb *b = mb_new();
        built o;
        build(b, models[m], &o);
        kn_diag *d = kn_diag_create(NULL, stderr);
        kn_graph *plan, *ref = optimized(models[m], false);
        assert_int_equal(kn_plan_load(o.path, NULL, d, &plan), KN_OK);
        kn_session *ps, *rs;
        assert_int_equal(kn_session_create_device(plan, KN_DEVICE_CPU, NULL, NULL, d, &ps), KN_OK);
        assert_false(kn_session_on_cuda(ps));
        assert_int_equal(kn_session_create(ref, NULL, NULL, d, &rs), KN_OK);
        uint32_t pseq, rseq;
        assert_int_equal(kn_session_add_sequence(ps, &pseq), KN_OK);
        assert_int_equal(kn_session_add_sequence(rs, &rseq), KN_OK);
        kn_session_info info;
        kn_session_get_info(ps, &info);
        assert_int_equal(info.kv_dtype, prec);
        kn_kv_config cfg = {info.n_layers, info.kv_heads, info.head_dim, info.block_size, info.n_blocks,
                            info.max_seq_len, info.kv_dtype};
        kn_kv_cache *c;
        assert_int_equal(kn_kv_create(&cfg, NULL, d, &c), KN_OK);
        uint32_t row;
        assert_int_equal(kn_kv_seq_add(c, &row), KN_OK);
        uint32_t max_blocks = (cfg.max_seq_len + cfg.block_size - 1) / cfg.block_size;
        int32_t *table = calloc(max_blocks, sizeof *table), past;
        float *want = malloc((size_t)info.vocab * sizeof *want), *mid = malloc((size_t)info.vocab * sizeof *mid);
        assert_true(table && want && mid);
        int64_t tokens[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77}; /* under every vocabulary (gpt2_tiny: 256) */
        double worst = 0;
        /* sampling modes: per mode a CPU sampler (kn_sampler_pick) and one of
         * the same seed giving the device's draws, kept over the steps */
        kn_sampling modes[3];
        kn_sampler *cpu_s[3], *dev_s[3];
        for (int k = 0; k < 3; k++) {
            kn_sampling_defaults(&modes[k]);
            modes[k].seed = 1234 + (uint64_t)k;
        }
        modes[1].temperature = 1.0f, modes[1].top_p = 0.9f;
        modes[2].temperature = 0.7f, modes[2].top_k = 20;
        for (int k = 0; k < 3; k++) {
            assert_int_equal(kn_sampler_create(&modes[k], (uint32_t)info.vocab, NULL, d, &cpu_s[k]), KN_OK);
            assert_int_equal(kn_sampler_create(&modes[k], (uint32_t)info.vocab, NULL, d, &dev_s[k]), KN_OK);
        }
        int sampled_same = 0, moved = 0;
        int64_t got_tok = 0;
        for (int step = 0; step < 4; step++) {
            uint32_t n = step ? 1 : 10;
            assert_int_equal(kn_session_forward(rs, rseq, tokens, n, want), KN_OK);
            assert_int_equal(kn_session_forward(ps, pseq, tokens, n, mid), KN_OK);
            /* the emulated runs, chunked as session_cuda.c does */
            const float *last = NULL;
            uint32_t last_rows = 1, last_row = 0; /* the last run's rows of logits, which one is the last token */
            kn_rt_tensor *out[1] = {0};
            for (uint32_t done = 0; done < n;) {
                bool dec = n - done == 1;
                int64_t T = dec ? 1 : P_CHUNK;
                uint32_t mm = n - done < (uint32_t)T ? n - done : (uint32_t)T;
                uint32_t len = kn_kv_seq_get(c, row)->len;
                assert_int_equal(kn_kv_seq_reserve(c, row, len + (uint32_t)T, d), KN_OK);
                assert_int_equal(kn_kv_fill_rows(c, &row, 1, max_blocks, table, &past), KN_OK);
                kn_rt_tensor *in[2] = {0};
                int64_t d2[2] = {1, T};
                for (uint32_t i = 0; i < o.dec->n_inputs; i++)
                    assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, d2, &in[i]), KN_OK);
                for (int64_t t = 0; t < T; t++) {
                    ((int64_t *)in[0]->data)[t] = t < mm ? tokens[done + t] : 0;
                    if (in[1])
                        ((int64_t *)in[1]->data)[t] = len + t;
                }
                kn_emu_kv kv = {c->keys, c->values, (uint64_t)cfg.n_blocks * c->block_elems * kn_kv_elem_bytes(&cfg),
                                table, &past};
                kn_rt_tensor_free(NULL, out[0]);
                out[0] = NULL;
                char msg[2048] = "";
                if (kn_emu_run_program(o.dec, dec ? &o.dprog : &o.pprog, in, out, &kv, msg, sizeof msg) != KN_OK)
                    fail_msg("%s step %d: %s", models[m], step, msg);
                assert_int_equal(out[0]->numel, T * info.vocab);
                last = (const float *)out[0]->data + (mm - 1) * info.vocab;
                last_rows = (uint32_t)T, last_row = mm - 1;
                if (!dec && !low) { /* every row sampled, as the prefill graph does: row mm - 1 is its argmax */
                    kn_sampling g0;
                    kn_sampling_defaults(&g0);
                    assert_int_equal(emu_sample(&o.pprog, &g0, (const float *)out[0]->data, info.vocab, 0.0,
                                                (uint32_t)T, mm - 1),
                                     argmax(last, info.vocab));
                    moved += mm != (uint32_t)T;
                }
                kn_kv_seq_get(c, row)->len = len + mm;
                done += mm;
                for (int i = 0; i < 2; i++)
                    kn_rt_tensor_free(NULL, in[i]);
            }
            for (int64_t v = 0; v < info.vocab; v++) {
                double e = fabs((double)last[v] - (double)(low ? mid : want)[v]);
                double e2 = low ? 0 : fabs((double)mid[v] - (double)want[v]);
                e = e2 > e ? e2 : e;
                worst = e > worst ? e : worst;
            }
            if (!(worst <= (low ? 1e-2 : 1e-4)))
                fail_msg("%s step %d: logits differ by %.3g", models[m], step, worst);
            got_tok = argmax(last, info.vocab);
            assert_int_equal(got_tok, argmax(want, info.vocab));
            assert_int_equal(got_tok, argmax(mid, info.vocab));
            for (int k = 0; k < 3 && !low; k++) {
                const kn_cu_program *prog = n == 1 ? &o.dprog : &o.pprog;
                int64_t cpu_tok = kn_sampler_pick(cpu_s[k], want, NULL, 0);
                double u = modes[k].temperature > 0.0f ? kn_sampler_uniform(dev_s[k]) : 0.0;
                /* the last run's every row sampled with the draw, its last token's row kept */
                int32_t dev_tok = emu_sample(prog, &modes[k], last - (size_t)last_row * info.vocab, info.vocab, u,
                                             last_rows, last_row);
                if (dev_tok != cpu_tok)
                    fail_msg("%s step %d, sampling mode %d: the plan's kernel picks %d, the CPU sampler %lld", models[m],
                             step, k, dev_tok, (long long)cpu_tok);
                sampled_same++;
            }
            assert_int_equal(argmax(mid, info.vocab), argmax(want, info.vocab));
            kn_rt_tensor_free(NULL, out[0]);
            tokens[0] = got_tok;
        }
        print_message("%s %s: prompt 10 (chunks of %d) + 3 greedy steps emulated, the plan on the CPU one token per "
                      "run: logits within %.3g of the %s, the same tokens\n",
                      models[m], kn_dtype_name(prec), P_CHUNK, worst, low ? "plan's CPU session" : "target-cpu graph");
        if (!low) {
            assert_int_equal(moved, 1); /* the last chunk's 2 tokens: its row 1, the others' row 3 */
            print_message("%s: the plan's sampling kernels under the emulator picked the CPU sampler's ids %d times "
                          "(greedy, t1 top-p 0.9, t0.7 top-k 20; seeded; the prefill's every row sampled)\n",
                          models[m], sampled_same);
        }
        for (int k = 0; k < 3; k++) {
            kn_sampler_destroy(cpu_s[k]);
            kn_sampler_destroy(dev_s[k]);
        }
        free(table), free(want), free(mid);
        kn_kv_destroy(c);
        kn_session_destroy(ps);
        kn_session_destroy(rs);
        kn_graph_destroy(plan);
        kn_graph_destroy(ref);
        built_free(&o);
        kn_diag_destroy(d);
        mb_free(b);
    }
    plan_prec.to = KN_F32;
}

static void emulated_steps(void **state)
{
    (void)state;
    emulate(KN_F32);
}

/* The plans in float16 with a float16 KV cache. */
static void emulated_steps_fp16(void **state)
{
    (void)state;
    emulate(KN_F16);
}

static bool section(const uint8_t *p, uint32_t kind, uint64_t *off, uint64_t *size)
{
    kn_plan_header h;
    memcpy(&h, p, sizeof h);
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section s;
        memcpy(&s, p + h.sections_off + i * sizeof s, sizeof s);
        if (s.kind == kind) {
            *off = s.offset;
            *size = s.size;
            return true;
        }
    }
    return false;
}

/* The prefill program of plan bytes p: its status (the plan must load). */
static kn_status open_prefill(const uint8_t *p, size_t n, kn_diag *d)
{
    kn_graph *g, *pg = NULL;
    kn_diag *q = kn_diag_create(NULL, NULL);
    if (kn_plan_load_memory(p, n, "t.plan", NULL, q, &g) != KN_OK) {
        kn_diag_print(q, stderr);
        fail_msg("the corrupted plan does not load");
    }
    kn_diag_destroy(q);
    kn_status s = kn_plan_load_cuda_prefill(g, NULL, d, &pg);
    kn_graph_destroy(pg);
    kn_graph_destroy(g);
    return s;
}

static void corrupted_prefill(void **state)
{
    (void)state;
    mb *b = mb_new();
    built o;
    build(b, "llama_gqa_tiny", &o);
    size_t n;
    uint8_t *good = (uint8_t *)mb_read_file(o.path, &n), *p = malloc(n);
    assert_non_null(p);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(open_prefill(good, n, d), KN_OK);
    /* a slot's value id out of range */
    uint64_t off = 0, size = 0;
    assert_true(section(good, KN_SEC_CUP_SLOTS, &off, &size));
    assert_true(size >= sizeof(kn_plan_cu_slot));
    memcpy(p, good, n);
    uint32_t big = 1u << 30;
    memcpy(p + off + offsetof(kn_plan_cu_slot, value), &big, 4);
    mb_plan_rechecksum(p, n);
    assert_int_equal(open_prefill(p, n, d), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "t.plan: corrupted plan: CUDA slot 0: value"));
    /* random bytes over the prefill tables */
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint32_t k = KN_SEC_CUP_KERNELS; k < KN_SEC_CUP_END; k++) {
        if (k == KN_SEC_CUP_BLOBS)
            continue;
        assert_true(section(good, k, &off, &size));
        lo = off < lo ? off : lo;
        hi = off + size > hi ? off + size : hi;
    }
    uint64_t rng = 777;
    int invalid = 0;
    for (int it = 0; it < 1500; it++) {
        memcpy(p, good, n);
        for (int flips = 1 + it % 3; flips > 0; flips--) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t at = lo + (rng >> 20) % (hi - lo);
            p[at] = (it & 4) ? (uint8_t)(rng >> 8) : (uint8_t)(p[at] ^ (1u << (rng >> 60 & 7)));
        }
        mb_plan_rechecksum(p, n);
        kn_status s = open_prefill(p, n, d);
        if (s != KN_OK && s != KN_ERR_INVALID)
            fail_msg("iteration %d: status %s", it, kn_status_str(s));
        invalid += s == KN_ERR_INVALID;
    }
    print_message("prefill sections: %d of 1500 random corruptions refused, the rest harmless\n", invalid);
    assert_true(invalid > 150);
    free(p);
    free(good);
    kn_diag_destroy(d);
    built_free(&o);
    mb_free(b);
}

/* Without a driver: --device cuda is refused naming why, auto runs on
 * the CPU. */
static void no_driver(void **state)
{
    (void)state;
    kn_diag *q = kn_diag_create(NULL, NULL);
    if (kn_cuda_available(q)) {
        kn_diag_destroy(q);
        print_message("skipped: a driver is there\n");
        skip();
    }
    mb *b = mb_new();
    built o;
    build(b, "llama_gqa_tiny", &o);
    kn_graph *g;
    assert_int_equal(kn_plan_load(o.path, NULL, q, &g), KN_OK);
    kn_session *s = NULL;
    assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, NULL, NULL, q, &s), KN_ERR_UNSUPPORTED);
    assert_null(s);
    assert_true(mb_diag_has(q, KN_ERROR, "--device cuda: no GPU to run on ("));
    assert_int_equal(kn_session_create_device(g, KN_DEVICE_AUTO, NULL, NULL, q, &s), KN_OK);
    assert_false(kn_session_on_cuda(s));
    kn_session_destroy(s);
    kn_graph_destroy(g);
    built_free(&o);
    kn_diag_destroy(q);
    mb_free(b);
}

/* The start of the session mocks: llama_gqa_tiny's plan built (o) and
 * loaded (*g), the kernel launches of one run of its prefill and of its
 * decode program (per), and one CUDA session made and destroyed first
 * (cuBLASLt's handle is made on first use and kept); returns the mock's
 * live allocations after that. */
static long mock_llama_plan(mb *b, built *o, kn_diag *d, kn_graph **g, long per[2])
{
    build(b, "llama_gqa_tiny", o);
    kn_graph *pg;
    assert_int_equal(kn_plan_load(o->path, NULL, d, g), KN_OK);
    assert_int_equal(kn_plan_load_cuda_prefill(*g, NULL, d, &pg), KN_OK);
    per[0] = plan_launch_steps(pg);
    per[1] = plan_launch_steps(*g);
    kn_graph_destroy(pg);
    kn_session *s;
    assert_int_equal(kn_session_create_device(*g, KN_DEVICE_CUDA, NULL, NULL, d, &s), KN_OK);
    kn_session_destroy(s);
    return mock_ctl()(MOCK_LIVE, -1);
}

/* The end of the session mocks: every device allocation since
 * mock_llama_plan freed, no access outside one, everything released. */
static void mock_llama_close(long live, kn_graph *g, built *o, kn_diag *d, mb *b)
{
    mock_ctl_fn ctl = mock_ctl();
    assert_int_equal(ctl(MOCK_LIVE, -1), live);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    kn_graph_destroy(g);
    built_free(o);
    kn_diag_destroy(d);
    mb_free(b);
}

/* Against the mock driver (which runs no kernels): the CUDA session made
 * from the one plan, a 10-token prompt in chunks of 4 and 3 decode steps. */
static void mock_device_session(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    built o;
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g, *pg;
    long per[2], live = mock_llama_plan(b, &o, d, &g, per);
    kn_session *s;
    for (int auto_dev = 0; auto_dev < 2; auto_dev++) {
        assert_int_equal(kn_session_create_device(g, auto_dev ? KN_DEVICE_AUTO : KN_DEVICE_CUDA, NULL, NULL, d, &s),
                         KN_OK);
        assert_true(kn_session_on_cuda(s));
        uint32_t seq;
        assert_int_equal(kn_session_add_sequence(s, &seq), KN_OK);
        int64_t prompt[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77};
        float logits[512];
        ctl(MOCK_LAUNCHES, 0);
        assert_int_equal(kn_session_forward(s, seq, prompt, 10, logits), KN_OK);
        assert_int_equal(ctl(MOCK_LAUNCHES, -1), 3 * per[0]);
        for (int i = 0; i < 3; i++)
            assert_int_equal(kn_session_forward(s, seq, &prompt[i], 1, logits), KN_OK);
        assert_int_equal(ctl(MOCK_LAUNCHES, -1), 3 * per[0] + 3 * per[1]);
        assert_int_equal(kn_session_sequence_length(s, seq), 13);
        kn_session_destroy(s);
    }
    /* the session owned the prefill graph it opened: nothing left */
    assert_int_equal(ctl(MOCK_LIVE, -1), live);
    /* the decode program's session borrows the prefill one's KV pools and
     * weights (the same plan bytes): 3 device allocations fewer than alone */
    assert_int_equal(kn_plan_load_cuda_prefill(g, NULL, d, &pg), KN_OK);
    kn_cuda_session *pre, *shared, *alone;
    assert_int_equal(kn_cuda_session_create(pg, NULL, 0, NULL, NULL, d, &pre), KN_OK);
    long l0 = ctl(MOCK_LIVE, -1);
    kn_cuda_options co;
    memset(&co, 0, sizeof co);
    co.kv_shared = pre;
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, &co, NULL, d, &shared), KN_OK);
    long l1 = ctl(MOCK_LIVE, -1);
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, NULL, NULL, d, &alone), KN_OK);
    long l2 = ctl(MOCK_LIVE, -1);
    assert_int_equal((l2 - l1) - (l1 - l0), 3);
    kn_cuda_session_destroy(alone);
    kn_cuda_session_destroy(shared);
    kn_cuda_session_destroy(pre);
    kn_graph_destroy(pg);
    mock_llama_close(live, g, &o, d, b);
}

/* On the mock driver: the device KV pools of a float16 plan are float16,
 * half the bytes of the float32 plan's (the same blocks), and the CUDA
 * session's info says so. */
static void mock_kv_dtype(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    long live = ctl(MOCK_LIVE, -1);
    kn_diag *d = kn_diag_create(NULL, stderr);
    uint64_t bytes[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        plan_prec.to = k ? KN_F16 : KN_F32;
        mb *b = mb_new();
        built o;
        build(b, "llama_gqa_tiny", &o);
        plan_prec.to = KN_F32;
        kn_graph *g;
        assert_int_equal(kn_plan_load(o.path, NULL, d, &g), KN_OK);
        kn_cuda_session *cs;
        assert_int_equal(kn_cuda_session_create(g, NULL, 0, NULL, NULL, d, &cs), KN_OK);
        kn_cuda_kv_info ci;
        assert_int_equal(kn_cuda_session_kv_info(cs, &ci), KN_OK);
        assert_int_equal(ci.dtype, k ? KN_F16 : KN_F32);
        assert_int_equal(ci.blocks, 128); /* the default: one sequence of 2048 tokens */
        bytes[k] = ci.bytes;
        kn_cuda_session_destroy(cs);
        kn_session *s;
        assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, NULL, NULL, d, &s), KN_OK);
        kn_session_info si;
        kn_session_get_info(s, &si);
        assert_int_equal(si.kv_dtype, ci.dtype);
        assert_int_equal(si.kv_bytes, ci.bytes);
        kn_session_destroy(s);
        kn_graph_destroy(g);
        built_free(&o);
        mb_free(b);
    }
    assert_int_equal(bytes[0], 2 * 2 * 128 * 16 * 2 * 32 * 4); /* K and V x layers x blocks x tokens x heads x dim */
    assert_int_equal(bytes[1] * 2, bytes[0]);
    assert_int_equal(ctl(MOCK_LIVE, -1), live);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    kn_diag_destroy(d);
}

/* One kn_session_generate of 5 tokens from a 10-token prompt on the mock:
 * the counters' changes. */
typedef struct gen_counts {
    long launches, captures, graph_launches, dtoh, dtoh_bytes, allocs;
} gen_counts;

static gen_counts mock_generate_once(mock_ctl_fn ctl, kn_session *s, const kn_sampling *sp, int64_t *tok)
{
    int whats[6] = {MOCK_LAUNCHES, MOCK_CAPTURES, MOCK_GRAPH_LAUNCHES, MOCK_DTOH, MOCK_DTOH_BYTES, MOCK_ALLOCS};
    for (int i = 0; i < 6; i++)
        ctl(whats[i], 0);
    int64_t prompt[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77};
    const int64_t *prompts[1] = {prompt};
    uint32_t lens[1] = {10};
    kn_generate_options go;
    kn_generate_options_defaults(&go);
    go.max_new_tokens = 5;
    go.sampling = *sp;
    kn_generate_result r;
    assert_int_equal(kn_session_generate(s, prompts, lens, 1, &go, &r), KN_OK);
    assert_int_equal(r.n_tokens, 5);
    for (uint32_t i = 0; i < r.n_tokens; i++)
        tok[i] = r.tokens[i];
    kn_generate_results_free(s, &r, 1);
    return (gen_counts){ctl(MOCK_LAUNCHES, -1),       ctl(MOCK_CAPTURES, -1), ctl(MOCK_GRAPH_LAUNCHES, -1),
                        ctl(MOCK_DTOH, -1),           ctl(MOCK_DTOH_BYTES, -1), ctl(MOCK_ALLOCS, -1)};
}

/* Generation sampling on the device against the mock (which runs no
 * kernel: the token buffer keeps the zeros it was made with, so every
 * sampled id is 0): what is launched and copied back per token, with
 * CUDA graphs, without, and with a driver refusing capture. */
static void mock_generate(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    built o;
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g;
    long per[2], live = mock_llama_plan(b, &o, d, &g, per);
    kn_session *s;
    kn_sampling greedy, top_p, penalty;
    kn_sampling_defaults(&greedy);
    top_p = greedy;
    top_p.temperature = 0.8f, top_p.top_p = 0.9f, top_p.seed = 7;
    penalty = greedy;
    penalty.repetition_penalty = 1.3f;
    /* prefill: 3 chunks of 4 — with graphs each a replay of the prefill
     * graph that samples its 4 rows (16 bytes back), without them the last
     * samples (1 launch, 4 bytes back); decode: 4 steps of the decode
     * program and its sampling launch */
    long prefill = 3 * per[0] + 1, step = per[1] + 1;
    for (int mode = 0; mode < 3; mode++) { /* graphs, --no-cuda-graph, capture refused */
        kn_session_options so;
        kn_session_options_defaults(&so);
        so.no_cuda_graph = mode == 1;
        ctl(MOCK_NO_GRAPHS, mode == 2);
        assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, &so, NULL, d, &s), KN_OK);
        for (int smp = 0; smp < 2; smp++) {
            int64_t tok[5];
            gen_counts c = mock_generate_once(ctl, s, smp ? &top_p : &greedy, tok);
            for (int i = 0; i < 5; i++)
                assert_int_equal(tok[i], 0);
            assert_int_equal(c.allocs, 0);
            if (mode == 0) { /* the first chunk and the first decode step captured (again for new parameters), then
                                replayed */
                assert_int_equal(c.captures, 2);
                assert_int_equal(c.graph_launches, 3 + 4);
                assert_int_equal(c.launches, per[0] + 1 + step);
                assert_int_equal(c.dtoh, 3 + 4);
                assert_int_equal(c.dtoh_bytes, 3 * P_CHUNK * 4 + 4 * 4);
            } else if (mode == 2 && smp == 0) { /* the refused capture's chunk sampled all its rows, directly */
                assert_int_equal(c.captures, 0);
                assert_int_equal(c.graph_launches, 0);
                assert_int_equal(c.launches, prefill + 1 + 4 * step);
                assert_int_equal(c.dtoh, 6);
                assert_int_equal(c.dtoh_bytes, P_CHUNK * 4 + 5 * 4);
            } else {
                assert_int_equal(c.dtoh, 5); /* one int32 per token */
                assert_int_equal(c.dtoh_bytes, 5 * 4);
                assert_int_equal(c.captures, 0);
                assert_int_equal(c.graph_launches, 0);
                assert_int_equal(c.launches, prefill + 4 * step);
            }
        }
        /* a repetition penalty: the logits come back to the host sampler */
        int64_t tok[5];
        gen_counts c = mock_generate_once(ctl, s, &penalty, tok);
        assert_int_equal(c.graph_launches, 0);
        assert_int_equal(c.launches, 3 * per[0] + 4 * per[1]);
        kn_session_info info;
        kn_session_get_info(s, &info);
        assert_true(c.dtoh_bytes >= (3 * 4 + 4) * 4 * (long)info.vocab); /* every chunk's logits */
        kn_session_destroy(s);
    }
    ctl(MOCK_NO_GRAPHS, 0);
    mock_llama_close(live, g, &o, d, b);
}

/* The prefill's chunks on one CUDA graph (mock): greedy generations of 2
 * tokens from prompts of 1, P, P + 1 and 3P - 2 tokens (0, 1, 1 and 3
 * chunks of the prefill program; a last single token runs on the decode
 * program) on one session: the prefill graph captured once for all of
 * them and replayed once per chunk with no kernel launch, the decode graph
 * once, nothing allocated per chunk, each chunk's P ids back; with
 * --no-cuda-graph every chunk launches its kernels and only the last
 * samples; both give the same tokens. */
static void mock_prefill_graph(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    built o;
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g;
    long per[2], live = mock_llama_plan(b, &o, d, &g, per);
    kn_session *s;
    enum { NP = 4 };
    uint32_t lens[NP] = {1, P_CHUNK, P_CHUNK + 1, 3 * P_CHUNK - 2};
    long chunks = 0 + 1 + 1 + 3, decode_runs = 4 + 1 + 1; /* the 1 and P + 1 prompts' last token, then 4 steps */
    int64_t ids[3 * P_CHUNK], tok[2][NP][2];
    for (int i = 0; i < 3 * P_CHUNK; i++)
        ids[i] = 1 + 37 * i % 250;
    for (int mode = 0; mode < 2; mode++) {
        kn_session_options so;
        kn_session_options_defaults(&so);
        so.no_cuda_graph = mode == 1;
        assert_int_equal(kn_session_create_device(g, KN_DEVICE_CUDA, &so, NULL, d, &s), KN_OK);
        int whats[6] = {MOCK_LAUNCHES, MOCK_CAPTURES, MOCK_GRAPH_LAUNCHES, MOCK_DTOH, MOCK_DTOH_BYTES, MOCK_ALLOCS};
        for (int i = 0; i < 6; i++)
            ctl(whats[i], 0);
        for (int k = 0; k < NP; k++) {
            const int64_t *prompts[1] = {ids};
            kn_generate_options go;
            kn_generate_options_defaults(&go);
            go.max_new_tokens = 2;
            kn_generate_result r;
            assert_int_equal(kn_session_generate(s, prompts, &lens[k], 1, &go, &r), KN_OK);
            assert_int_equal(r.n_tokens, 2);
            tok[mode][k][0] = r.tokens[0], tok[mode][k][1] = r.tokens[1];
            kn_generate_results_free(s, &r, 1);
        }
        assert_int_equal(ctl(MOCK_ALLOCS, -1), 0);
        if (mode == 0) {
            assert_int_equal(ctl(MOCK_CAPTURES, -1), 2);
            assert_int_equal(ctl(MOCK_GRAPH_LAUNCHES, -1), chunks + decode_runs);
            assert_int_equal(ctl(MOCK_LAUNCHES, -1), per[0] + 1 + per[1] + 1); /* the two captures' */
            assert_int_equal(ctl(MOCK_DTOH, -1), chunks + decode_runs);
            assert_int_equal(ctl(MOCK_DTOH_BYTES, -1), (chunks * P_CHUNK + decode_runs) * 4);
        } else {
            assert_int_equal(ctl(MOCK_CAPTURES, -1), 0);
            assert_int_equal(ctl(MOCK_GRAPH_LAUNCHES, -1), 0);
            assert_int_equal(ctl(MOCK_LAUNCHES, -1), chunks * per[0] + decode_runs * per[1] + 2 * NP);
            assert_int_equal(ctl(MOCK_DTOH, -1), 2 * NP);
            assert_int_equal(ctl(MOCK_DTOH_BYTES, -1), 2 * NP * 4);
        }
        kn_session_destroy(s);
    }
    for (int k = 0; k < NP; k++)
        for (int t = 0; t < 2; t++)
            assert_int_equal(tok[0][k][t], tok[1][k][t]);
    mock_llama_close(live, g, &o, d, b);
}

/* kn_cuda_session_run_kv_sample on the decode program against the mock:
 * the graph's captures and launches as the session counts them, a new
 * capture for new parameters, a bad row refused, no copy back without a
 * sample, the whole step's time with timing, and no graph with no_graph. */
static void mock_run_sample(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    mb *b = mb_new();
    built o;
    build(b, "llama_gqa_tiny", &o);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g, *pg;
    assert_int_equal(kn_plan_load(o.path, NULL, d, &g), KN_OK);
    assert_int_equal(kn_plan_load_cuda_prefill(g, NULL, d, &pg), KN_OK);
    kn_cuda_session *pre;
    assert_int_equal(kn_cuda_session_create(pg, NULL, 0, NULL, NULL, d, &pre), KN_OK);
    assert_true(kn_cuda_session_can_sample(pre));
    kn_cuda_kv_info kvi;
    assert_int_equal(kn_cuda_session_kv_info(pre, &kvi), KN_OK);
    int32_t *table = calloc(kvi.max_blocks, sizeof *table), past = 0;
    assert_non_null(table);
    kn_cuda_kv_binding kv = {table, &past, 1, kvi.max_blocks};
    kn_rt_tensor *in[2] = {0};
    int64_t d2[2] = {1, 1};
    for (uint32_t i = 0; i < g->n_inputs; i++)
        assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, d2, &in[i]), KN_OK);
    for (int no_graph = 0; no_graph < 2; no_graph++) {
        kn_cuda_options co;
        memset(&co, 0, sizeof co);
        co.kv_shared = pre;
        co.no_graph = no_graph;
        co.timing = true;
        kn_cuda_session *dec;
        assert_int_equal(kn_cuda_session_create(g, NULL, 0, &co, NULL, d, &dec), KN_OK);
        kn_cuda_sample smp = {0.0f, 0, 1.0f, 0.0, 0, 0};
        int32_t tok = -1;
        uint64_t caps, launches;
        for (int step = 0; step < 3; step++) {
            past = step;
            assert_int_equal(kn_cuda_session_run_kv_sample(dec, (const kn_rt_tensor *const *)in, g->n_inputs, &kv, &smp,
                                                           &tok, d),
                             KN_OK);
            assert_int_equal(tok, 0); /* the mock runs no kernel: the zeroed buffer */
        }
        assert_int_equal(kn_cuda_session_graph_stats(dec, &caps, &launches), !no_graph);
        assert_int_equal(caps, no_graph ? 0 : 1);
        assert_int_equal(launches, no_graph ? 0 : 3);
        kn_cuda_timing tm;
        assert_int_equal(kn_cuda_session_timing(dec, &tm), KN_OK);
        assert_true(tm.compute_ms > 0);
        if (!no_graph)
            assert_true(tm.upload_ms == 0 && tm.download_ms == 0); /* a replay: its whole time */
        smp.temperature = 0.7f, smp.top_p = 0.9f, smp.u = 0.25;
        assert_int_equal(kn_cuda_session_run_kv_sample(dec, (const kn_rt_tensor *const *)in, g->n_inputs, &kv, &smp,
                                                       &tok, d),
                         KN_OK);
        kn_cuda_session_graph_stats(dec, &caps, &launches);
        assert_int_equal(caps, no_graph ? 0 : 2);
        smp.row = 1; /* the decode program's logits have one row */
        assert_int_equal(kn_cuda_session_run_kv_sample(dec, (const kn_rt_tensor *const *)in, g->n_inputs, &kv, &smp,
                                                       &tok, d),
                         KN_ERR_INVALID);
        ctl(MOCK_DTOH, 0);
        assert_int_equal(
            kn_cuda_session_run_kv_sample(dec, (const kn_rt_tensor *const *)in, g->n_inputs, &kv, NULL, NULL, d),
            KN_OK);
        assert_int_equal(ctl(MOCK_DTOH, -1), 0);
        kn_cuda_session_destroy(dec);
    }
    for (int i = 0; i < 2; i++)
        kn_rt_tensor_free(NULL, in[i]);
    free(table);
    kn_cuda_session_destroy(pre);
    kn_graph_destroy(pg);
    kn_graph_destroy(g);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    built_free(&o);
    kn_diag_destroy(d);
    mb_free(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(read_back),
        cmocka_unit_test(emulated_steps),
        cmocka_unit_test(emulated_steps_fp16),
        cmocka_unit_test(corrupted_prefill),
        cmocka_unit_test(no_driver),
    };
    const struct CMUnitTest mock_tests[] = {
        cmocka_unit_test(mock_device_session),
        cmocka_unit_test(mock_kv_dtype),
        cmocka_unit_test(mock_generate),
        cmocka_unit_test(mock_prefill_graph),
        cmocka_unit_test(mock_run_sample),
    };
    if (argc > 1 && strcmp(argv[1], "--mock") == 0)
        return cmocka_run_group_tests_name("cuda_decoder_plan_mock", mock_tests, NULL, NULL);
    return cmocka_run_group_tests_name("cuda_decoder_plan", tests, NULL, NULL);
}
