/* kiln.PagedAttention on target cuda, checked without a GPU. A two-layer
 * graph of PagedAttention nodes (causal, no mask; layer 1's Q computed by
 * an Add, so the lowering's probe sizes its cache from a computed value)
 * is lowered at a prefill bucket (7 new tokens) and at decode (1), every
 * kernel NVRTC-compiled for sm_80/86/89/90 + PTX, and the two programs run
 * on the host emulator (tools/emu_program.c) over a prompt, 3 decode steps
 * and a second 7-token chunk that continues the past, with the block
 * tables and past lengths of a kn_kv_cache (scrambled block order; the two
 * rows have different pasts; kiln.kv.max_seq_len 2048 gives the decode
 * kernel 32 key splits, most of them empty at these lengths). Every step is
 * compared with the CPU executor (runtime/cpu/k_paged_attn.c through
 * kn_cpu_run_kv, causality given as an explicit mask, one row at a time)
 * on a second cache with the same history, within 1e-5, and the pools
 * after each step must be byte-equal (a real exported decoder:
 * test_cuda_decoder.c). Also: the plan's KV arguments
 * through the plan file and runtime/cuda/plan.c's checks, and a mask input
 * refused at compile time (the node cannot run on the host). With --mock
 * (ctest test_cuda_paged_mock): the CUDA session's KV pools, bindings and
 * their checks against the host mock of the driver (tests/cuda_mock.c).
 * paged_steps_rotary: the same with rotary = 1 (passes/kv_rotary.c): cos
 * [batch, 1, seq, 32] (a row of its own per batch row) and sin [seq, 32]
 * as inputs 4, 5 (no mask: input 3 absent), the append kernel
 * kn_kv_append_rope rotating K and Q, against the CPU kernel's rotation
 * (bit-identical to RotaryHalf + PagedAttention: test_kv_rotary).
 * With --gpu (test_cuda_paged_gpu, label gpu): the same steps through
 * kn_cuda_session_run_kv on a GPU (a prefill and a decode session sharing
 * one device cache); skipped without one. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/cuda/lower.h"
#include "codegen/plan_write.h"
#include "emu_host.h"
#include "cuda_paged_util.h"
#include "emu_program.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "model_builder.h"
#include "runtime/cpu/exec.h"
#include "runtime/cuda/plan.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 2
#define KVH 2
#define REP 2
#define QH (KVH * REP)
#define HD 32
#define LAYERS 2
#define BLOCK 4
#define BLOCKS 64
#define MAX_SEQ 2048
#define PREFILL 7

/* The nodes have rotary = 1 and inputs cos, sin (paged_steps_rotary). */
static bool rope;

/* y0 = PagedAttention(q, k, v; layer 0); q1 = y0 + q;
 * y = PagedAttention(q1, v, k; layer 1). The reference form takes a mask
 * [batch, 1, seq, total] (the causal pattern, given by the test) instead
 * of causal = 1. */
static Onnx__ModelProto *model(mb *b, bool reference)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_opset(b, m, "kiln", 1);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "batch,4,seq,32"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, "batch,2,seq,32"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "batch,2,seq,32"));
    if (reference)
        mb_input(b, g, "mask", mb_tensor_type(b, KN_F32, "batch,1,seq,total"));
    if (rope) {
        mb_input(b, g, "cos", mb_tensor_type(b, KN_F32, "batch,1,seq,32"));
        mb_input(b, g, "sin", mb_tensor_type(b, KN_F32, "seq,32"));
    }
    const char *ins[2] = {reference ? "q,k,v,mask" : "q,k,v", reference ? "q1,v,k,mask" : "q1,v,k"};
    if (rope) {
        ins[0] = reference ? "q,k,v,mask,cos,sin" : "q,k,v,,cos,sin";
        ins[1] = reference ? "q1,v,k,mask,cos,sin" : "q1,v,k,,cos,sin";
    }
    const char *outs[2] = {"y0", "y"};
    for (int l = 0; l < LAYERS; l++) {
        Onnx__NodeProto *n = mb_node(b, g, "PagedAttention", l ? "attn1" : "attn0", ins[l], outs[l]);
        n->domain = mb_strdup(b, "kiln");
        mb_attr_i(b, n, "head_dim", HD);
        mb_attr_i(b, n, "kv_heads", KVH);
        mb_attr_i(b, n, "kv_repeat", REP);
        mb_attr_i(b, n, "layer", l);
        mb_attr_i(b, n, "causal", reference ? 0 : 1);
        if (rope)
            mb_attr_i(b, n, "rotary", 1);
        mb_attr_f(b, n, "scale", (float)(1.0 / sqrt((double)HD)));
        if (l == 0)
            mb_node(b, g, "Add", "mix", "y0,q", "q1");
    }
    mb_output(b, g, "y0", NULL);
    mb_output(b, g, "y", NULL);
    static const char *const keys[] = {"layers", "kv_heads", "head_dim", "block_size", "blocks", "max_seq_len"};
    static const int vals[] = {LAYERS, KVH, HD, BLOCK, BLOCKS, MAX_SEQ};
    for (int i = 0; i < 6; i++) {
        char key[64], val[32];
        snprintf(key, sizeof key, "kiln.kv.%s", keys[i]);
        snprintf(val, sizeof val, "%d", vals[i]);
        mb_metadata(b, m, key, val);
    }
    mb_metadata(b, m, "kiln.kv.dtype", "float32");
    mb_metadata(b, m, "kiln.kv.bytes", "262144"); /* 64 blocks x 4 tokens x 2 layers x 2 heads x 32 x 2 x 4 */
    return m;
}

/* The model lowered for target cuda at `seq` new tokens per row, its
 * kernels compiled with NVRTC (when present: *compiled says so). */
static kn_graph *lowered(mb *b, int64_t seq, kn_cu_program *prog, bool *compiled)
{
    kn_graph *g = mb_import(b, model(b, false));
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_cuda_shape sh[5] = {{"q", 4, {ROWS, QH, seq, HD}}, {"k", 4, {ROWS, KVH, seq, HD}},
                           {"v", 4, {ROWS, KVH, seq, HD}}, {"cos", 4, {ROWS, 1, seq, HD}}, {"sin", 2, {seq, HD}}};
    kn_cuda_lower_stats st;
    assert_int_equal(kn_cuda_lower(g, sh, rope ? 5 : 3, NULL, d, prog, &st), KN_OK);
    assert_int_equal(st.nodes_host, 0);
    assert_int_equal(prog->kv_rows, ROWS);
    assert_int_equal(prog->kv_tokens, seq);
    *compiled = false;
    if (kn_nvrtc_version()) {
        static const uint32_t archs[] = {80, 86, 89, 90};
        kn_nvrtc_options no = {archs, 4, false, NULL, 0};
        kn_nvrtc_stats ns;
        assert_int_equal(kn_cuda_compile(prog, &no, d, &ns), KN_OK);
        assert_int_equal(ns.failed, 0);
        for (uint32_t k = 0; k < prog->n_kernels; k++)
            assert_int_equal(prog->kernels[k].n_images, 5);
        *compiled = true;
    }
    kn_diag_destroy(d);
    return g;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static kn_rt_tensor *random4(int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    kn_rt_tensor *t;
    int64_t dims[4] = {d0, d1, d2, d3};
    assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 4, dims, &t), KN_OK);
    for (int64_t i = 0; i < t->numel; i++)
        ((float *)t->data)[i] = urand();
    return t;
}

/* Row r of a [ROWS, h, s, HD] tensor as a [1, h, s, HD] view. */
static kn_rt_tensor *row_view(const kn_rt_tensor *t, int64_t r)
{
    kn_rt_tensor *v;
    int64_t dims[4] = {1, t->dims[1], t->dims[2], t->dims[3]};
    size_t per = t->nbytes / (size_t)t->dims[0];
    assert_int_equal(kn_rt_tensor_view(NULL, KN_F32, 4, dims, (uint8_t *)t->data + per * (size_t)r, &v), KN_OK);
    return v;
}

/* A cache (with zeroed host pools, or only its tables: `pools`), its
 * blocks handed out out of order: a sequence takes 3 blocks and is freed
 * after row 0's first block, so the rows' tables interleave. With `past1`
 * row 1 starts with a 3-token past (the same values in every cache made
 * here; it needs the host pools). */
static kn_kv_cache *make_cache(uint32_t *seqs, bool pools, bool past1)
{
    kn_kv_config cfg = {LAYERS, KVH, HD, BLOCK, BLOCKS, MAX_SEQ};
    kn_kv_cache *c;
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal((pools ? kn_kv_create : kn_kv_create_tables)(&cfg, NULL, d, &c), KN_OK);
    uint64_t half = kn_kv_bytes(&cfg) / 2;
    if (pools) {
        memset(c->keys, 0, (size_t)half);
        memset(c->values, 0, (size_t)half);
    }
    uint32_t junk;
    assert_int_equal(kn_kv_seq_add(c, &junk), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, junk, 3 * BLOCK, d), KN_OK);
    assert_int_equal(kn_kv_seq_add(c, &seqs[0]), KN_OK);
    assert_int_equal(kn_kv_seq_reserve(c, seqs[0], 1, d), KN_OK);
    assert_int_equal(kn_kv_seq_free(c, junk), KN_OK);
    assert_int_equal(kn_kv_seq_add(c, &seqs[1]), KN_OK);
    if (past1) {
        assert_int_equal(kn_kv_seq_reserve(c, seqs[1], 3, d), KN_OK);
        kn_kv_seq *s = kn_kv_seq_get(c, seqs[1]);
        uint64_t keep = rng;
        rng = 12345;
        for (uint32_t l = 0; l < LAYERS; l++)
            for (uint32_t j = 0; j < 3; j++)
                for (uint32_t h = 0; h < KVH; h++)
                    for (int e = 0; e < HD; e++) {
                        ((float *)kn_kv_at(c, false, l, s, j, h))[e] = urand();
                        ((float *)kn_kv_at(c, true, l, s, j, h))[e] = urand();
                    }
        rng = keep;
        s->len = 3;
    }
    kn_diag_destroy(d);
    return c;
}

/* The CPU reference for one step: each row alone (batch 1), with the
 * causal pattern as a mask [1, 1, seq, past + seq]. */
static void reference_step(const kn_graph *ref, kn_kv_cache *c, const uint32_t *seqs, kn_rt_tensor *const *in,
                           float *want[2])
{
    int64_t seq = in[0]->dims[2];
    kn_diag *d = kn_diag_create(NULL, stderr);
    for (int64_t r = 0; r < ROWS; r++) {
        int64_t past = kn_kv_seq_get(c, seqs[r])->len, total = past + seq;
        int64_t md[4] = {1, 1, seq, total};
        kn_rt_tensor *mask;
        assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 4, md, &mask), KN_OK);
        for (int64_t i = 0; i < seq; i++)
            for (int64_t j = 0; j < total; j++)
                ((float *)mask->data)[i * total + j] = j <= past + i ? 0.0f : -INFINITY;
        kn_rt_tensor *views[6] = {row_view(in[0], r), row_view(in[1], r), row_view(in[2], r), mask,
                                  rope ? row_view(in[3], r) : NULL, rope ? in[4] : NULL};
        kn_rt_tensor *outs[2] = {0};
        kn_kv_run run = {c, &seqs[r], 1};
        assert_int_equal(kn_cpu_run_kv(ref, NULL, d, (const kn_rt_tensor *const *)views, rope ? 6 : 4, outs, 2, NULL,
                                       NULL, &run),
                         KN_OK);
        for (int o = 0; o < 2; o++) {
            memcpy(want[o] + (size_t)outs[o]->numel * (size_t)r, outs[o]->data, outs[o]->nbytes);
            kn_rt_tensor_free(NULL, outs[o]);
        }
        for (int i = 0; i < 5; i++)
            kn_rt_tensor_free(NULL, views[i]);
    }
    kn_diag_destroy(d);
}

/* Where the lowered plans run: the host emulator (on the programs, the
 * pools in host memory) or a GPU (the plans written, loaded and run by two
 * CUDA sessions sharing one device cache). */
typedef struct runner {
    bool gpu;
    kn_graph *g[2];           /* lowered at PREFILL, at 1 */
    kn_cu_program prog[2];
    kn_graph *pg[2];          /* gpu: the plans as loaded */
    kn_cuda_session *s[2];
} runner;

/* The model at PREFILL and at 1 new tokens; on the GPU as sessions. False
 * (the test skips) when that cannot be: NVRTC or the GPU missing. */
static bool runner_open(mb *b, runner *R, bool gpu)
{
    memset(R, 0, sizeof *R);
    R->gpu = gpu;
    bool compiled[2];
    R->g[0] = lowered(b, PREFILL, &R->prog[0], &compiled[0]);
    R->g[1] = lowered(b, 1, &R->prog[1], &compiled[1]);
    const char *append = rope ? "kn_kv_append_rope" : "kn_kv_append";
    assert_true(uses_kernel(&R->prog[0], append) && uses_kernel(&R->prog[0], "kn_flash_attn"));
    /* decode: one launch, the last split block of each row merging the partials (counters persistent) */
    assert_true(uses_kernel(&R->prog[1], append) && uses_kernel(&R->prog[1], "kn_decode_attn") &&
                !uses_kernel(&R->prog[1], "kn_decode_combine") && R->prog[1].has_zero);
    if (!gpu) {
        if (!compiled[0])
            print_message("note: NVRTC is not available: kernels run on the host only\n");
        return true;
    }
    if (!compiled[0]) {
        print_message("skipped: NVRTC is not available to compile the kernels\n");
        return false;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    char *dir = mb_tempdir(b);
    for (int i = 0; i < 2; i++) {
        char *path = mb_path(b, dir, i ? "decode.plan" : "prefill.plan");
        kn_plan_options o = {"--target cuda", "cuda", &R->prog[i], NULL, 0};
        assert_int_equal(kn_plan_write(R->g[i], &o, path, d), KN_OK);
        assert_int_equal(kn_plan_load(path, NULL, d, &R->pg[i]), KN_OK);
        kn_cuda_options co = {0};
        co.sync_each_step = true;
        co.kv_shared = i ? R->s[0] : NULL;
        assert_int_equal(kn_cuda_session_create(R->pg[i], NULL, 0, &co, NULL, d, &R->s[i]), KN_OK);
    }
    print_message("%s\n", kn_cuda_session_device(R->s[0]));
    kn_diag_destroy(d);
    return true;
}

static void runner_close(runner *R)
{
    for (int i = 1; i >= 0; i--) { /* the decode session borrows the prefill session's pools */
        kn_cuda_session_destroy(R->s[i]);
        kn_graph_destroy(R->pg[i]);
        kn_cu_program_free(&R->prog[i]);
        kn_graph_destroy(R->g[i]);
    }
}

/* A prompt of 7 tokens, 3 decode steps, then 7 more tokens, each step
 * against the CPU executor on a cache with the same history. */
static void run_steps(bool gpu)
{
    mb *b = mb_new();
    runner R;
    if (!runner_open(b, &R, gpu)) {
        runner_close(&R);
        mb_free(b);
        skip();
    }
    kn_graph *ref = mb_import(b, model(b, true));
    uint32_t seq_ref[ROWS], seq_dev[ROWS];
    /* the GPU's pools cannot be seeded from here: both rows start empty there */
    kn_kv_cache *cref = make_cache(seq_ref, true, !gpu), *cdev = make_cache(seq_dev, !gpu, !gpu);
    kn_diag *d = kn_diag_create(NULL, stderr);
    const int64_t max_blocks = (MAX_SEQ + BLOCK - 1) / BLOCK;
    int32_t *table = calloc((size_t)(ROWS * max_blocks), sizeof *table), past[ROWS];
    assert_non_null(table);
    static const int64_t steps[] = {PREFILL, 1, 1, 1, PREFILL};
    double worst = 0;
    for (size_t si = 0; si < sizeof steps / sizeof steps[0]; si++) {
        int64_t seq = steps[si];
        int which = seq == 1;
        for (int r = 0; r < ROWS; r++) {
            uint32_t len = kn_kv_seq_get(cref, seq_ref[r])->len;
            assert_int_equal(kn_kv_seq_reserve(cref, seq_ref[r], len + (uint32_t)seq, d), KN_OK);
            assert_int_equal(kn_kv_seq_reserve(cdev, seq_dev[r], len + (uint32_t)seq, d), KN_OK);
        }
        assert_int_equal(kn_kv_fill_rows(cdev, seq_dev, ROWS, (uint32_t)max_blocks, table, past), KN_OK);
        assert_true(past[0] + (gpu ? 0 : 3) == past[1]);
        kn_rt_tensor *in[5] = {random4(ROWS, QH, seq, HD), random4(ROWS, KVH, seq, HD), random4(ROWS, KVH, seq, HD),
                               rope ? random4(ROWS, 1, seq, HD) : NULL, NULL};
        int n_in = rope ? 5 : 3;
        if (rope) {
            int64_t sd[2] = {seq, HD};
            assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 2, sd, &in[4]), KN_OK);
            for (int64_t i = 0; i < in[4]->numel; i++)
                ((float *)in[4]->data)[i] = urand();
        }
        size_t n_out = (size_t)(ROWS * QH * seq * HD);
        float *want[2] = {malloc(n_out * 4), malloc(n_out * 4)};
        assert_true(want[0] && want[1]);
        reference_step(ref, cref, seq_ref, in, want);
        kn_rt_tensor *got[2] = {0};
        if (gpu) {
            kn_cuda_kv_binding kv = {table, past, ROWS, (uint32_t)max_blocks};
            assert_int_equal(kn_cuda_session_run_kv(R.s[which], (const kn_rt_tensor *const *)in, (uint32_t)n_in, got, 2,
                                                    &kv, d),
                             KN_OK);
        } else {
            kn_emu_kv kv = {cdev->keys, cdev->values, (uint64_t)BLOCKS * cdev->block_elems * 4, table, past};
            char msg[2048] = "";
            if (kn_emu_run_program(R.g[which], &R.prog[which], in, got, &kv, msg, sizeof msg) != KN_OK)
                fail_msg("step %zu: %s", si, msg);
        }
        for (int o = 0; o < 2; o++) {
            assert_int_equal(got[o]->numel, (int64_t)n_out);
            double step_worst = 0;
            for (size_t i = 0; i < n_out; i++) {
                double e = fabs((double)((float *)got[o]->data)[i] - (double)want[o][i]);
                step_worst = e > step_worst ? e : step_worst;
            }
            if (!(step_worst <= 1e-5))
                fail_msg("step %zu (%lld new tokens, pasts %d/%d), output %d: max abs error %.3g", si, (long long)seq,
                         past[0], past[1], o, step_worst);
            worst = step_worst > worst ? step_worst : worst;
            kn_rt_tensor_free(NULL, got[o]);
            free(want[o]);
        }
        if (!gpu) { /* the append kernel wrote what the CPU kernel wrote, where it wrote it */
            size_t half = (size_t)(kn_kv_bytes(&cref->cfg) / 2);
            assert_memory_equal(cdev->keys, cref->keys, half);
            assert_memory_equal(cdev->values, cref->values, half);
        }
        for (int r = 0; r < ROWS; r++) {
            kn_kv_seq_get(cref, seq_ref[r])->len += (uint32_t)seq;
            kn_kv_seq_get(cdev, seq_dev[r])->len += (uint32_t)seq;
        }
        for (int i = 0; i < n_in; i++)
            kn_rt_tensor_free(NULL, in[i]);
    }
    print_message("%s%s: 5 steps (7, 1, 1, 1, 7 new tokens; final pasts %u and %u): max abs error %.3g\n",
                  gpu ? "GPU" : "emulator", rope ? ", rotary" : "", kn_kv_seq_get(cref, seq_ref[0])->len,
                  kn_kv_seq_get(cref, seq_ref[1])->len, worst);
    free(table);
    kn_kv_destroy(cref);
    kn_kv_destroy(cdev);
    runner_close(&R);
    kn_graph_destroy(ref);
    kn_diag_destroy(d);
    mb_free(b);
}

static void paged_steps(void **state)
{
    (void)state;
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        print_message("skipped: the host emulator cannot start: %s\n", err);
        skip();
    }
    rope = false;
    run_steps(false);
}

static void paged_steps_rotary(void **state)
{
    (void)state;
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        print_message("skipped: the host emulator cannot start: %s\n", err);
        skip();
    }
    rope = true;
    run_steps(false);
    rope = false;
}

/* The same on a GPU (--gpu; skipped without one). */
static void gpu_steps(void **state)
{
    (void)state;
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!kn_cuda_available(d)) {
        print_message("skipped: no GPU: %s\n", kn_diag_size(d) ? kn_diag_message(d, 0, NULL) : "");
        kn_diag_destroy(d);
        skip();
    }
    kn_diag_destroy(d);
    rope = false;
    run_steps(true);
    rope = true;
    run_steps(true);
    rope = false;
}

/* The decode program (with fake PTX images when NVRTC is missing: enough
 * to read the plan and for the mock driver) written as a plan. */
static kn_graph *decode_plan(mb *b, kn_cu_program *prog, char **path)
{
    bool compiled;
    kn_graph *g = lowered(b, 1, prog, &compiled);
    for (uint32_t k = 0; !compiled && k < prog->n_kernels; k++) {
        static const char ptx[] = "// PTX\n";
        uint8_t *p = kn_mem_alloc(NULL, sizeof ptx);
        assert_non_null(p);
        memcpy(p, ptx, sizeof ptx);
        prog->kernels[k].images = kn_mem_alloc(NULL, sizeof *prog->kernels[k].images);
        assert_non_null(prog->kernels[k].images);
        prog->kernels[k].images[0] = (kn_cu_image){KN_CU_ARCH_PTX, p, sizeof ptx};
        prog->kernels[k].n_images = 1;
    }
    *path = mb_path(b, mb_tempdir(b), "paged.plan");
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_plan_options o = {"--target cuda", "cuda", prog, NULL, 0};
    assert_int_equal(kn_plan_write(g, &o, *path, d), KN_OK);
    kn_diag_destroy(d);
    return g;
}

/* The decode plan written and read back: the KV arguments, the plan's
 * cache shape, and what runtime/cuda/plan.c refuses. */
static void plan_round_trip(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_cu_program prog;
    memset(&prog, 0, sizeof prog);
    char *path;
    kn_graph *g = decode_plan(b, &prog, &path);
    uint32_t n_kv = 0;
    for (uint32_t i = 0; i < prog.n_args; i++)
        n_kv += prog.args[i].kind == KN_CU_ARG_KV;
    assert_int_equal(n_kv, 2 * (4 + 4)); /* per layer: append 4, decode 4 (keys, values, table, past) */
    kn_diag *d = kn_diag_create(NULL, stderr);
    size_t len;
    uint8_t *bytes = (uint8_t *)mb_read_file(path, &len);
    kn_graph *pg;
    assert_int_equal(kn_plan_load_memory(bytes, len, "paged.plan", NULL, d, &pg), KN_OK);
    kn_cuda_plan cp;
    assert_int_equal(kn_cuda_plan_read(pg, bytes, len, NULL, d, &cp), KN_OK);
    assert_int_equal(cp.kv_rows, ROWS);
    assert_int_equal(cp.kv_tokens, 1);
    assert_int_equal(cp.kv_layers, LAYERS);
    assert_int_equal(cp.kv_blocks, BLOCKS);
    assert_int_equal(cp.kv_max_blocks, MAX_SEQ / BLOCK);
    assert_int_equal(cp.kv_dtype, KN_F32);
    uint32_t layers_seen = 0;
    for (uint32_t i = 0; i < cp.n_args; i++)
        if (cp.args[i].kind == KN_CU_ARG_KV && cp.args[i].slot == KN_CU_KV_KEYS)
            layers_seen |= 1u << cp.args[i].offset;
    assert_int_equal(layers_seen, 3);
    kn_cuda_plan_free(&cp);
    /* a KV argument naming layer 2 of a 2-layer cache is refused */
    uint8_t *bad = malloc(len);
    assert_non_null(bad);
    memcpy(bad, bytes, len);
    kn_plan_header h;
    memcpy(&h, bad, sizeof h);
    bool patched = false;
    for (uint32_t i = 0; i < h.n_sections && !patched; i++) {
        kn_plan_section sec;
        memcpy(&sec, bad + h.sections_off + i * sizeof sec, sizeof sec);
        if (sec.kind != KN_SEC_CU_ARGS)
            continue;
        for (uint64_t at = sec.offset; at + sizeof(kn_plan_cu_arg) <= sec.offset + sec.size && !patched;
             at += sizeof(kn_plan_cu_arg)) {
            kn_plan_cu_arg a;
            memcpy(&a, bad + at, sizeof a);
            if (a.kind == KN_CU_ARG_KV && a.slot == KN_CU_KV_KEYS) {
                a.offset = LAYERS;
                memcpy(bad + at, &a, sizeof a);
                patched = true;
            }
        }
    }
    assert_true(patched);
    kn_diag *d2 = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_plan_read(pg, bad, len, NULL, d2, &cp), KN_ERR_INVALID);
    assert_true(mb_diag_has(d2, KN_ERROR, "bad KV cache argument"));
    kn_diag_destroy(d2);
    free(bad);
    kn_graph_destroy(pg);
    free(bytes);
    kn_cu_program_free(&prog);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    mb_free(b);
}

/* A mask input cannot be lowered, and the node cannot fall back to the
 * host (the cache lives on the device): the compile fails naming it. So
 * does a graph without kiln.kv.* metadata. */
static void mask_refused(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = mb_import(b, model(b, true));
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_cuda_shape sh[4] = {{"q", 4, {ROWS, QH, 3, HD}}, {"k", 4, {ROWS, KVH, 3, HD}},
                           {"v", 4, {ROWS, KVH, 3, HD}}, {"mask", 4, {ROWS, 1, 3, 3}}};
    kn_cu_program prog;
    assert_int_equal(kn_cuda_lower(g, sh, 4, NULL, d, &prog, NULL), KN_ERR_UNSUPPORTED);
    assert_true(mb_diag_has(d, KN_WARNING, "node 'attn0'", "PagedAttention", "attention mask input"));
    assert_true(mb_diag_has(d, KN_ERROR, "2 nodes cannot run on target cuda"));
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    /* without the kv-cache pass's metadata the cache's shape is unknown */
    g = mb_import(b, model(b, false));
    g->info->n_metadata = 0;
    d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_lower(g, sh, 3, NULL, d, &prog, NULL), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "node 'attn0'", "no complete kiln.kv.* metadata"));
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    mb_free(b);
}

/* ---- the CUDA session against the host mock of the driver (--mock) ---- */

static void mock_session(void **state)
{
    (void)state;
    mock_ctl_fn ctl = mock_ctl();
    kn_diag *d = kn_diag_create(NULL, stderr);
    long live = ctl(MOCK_LIVE, -1);
    mb *b = mb_new();
    kn_cu_program prog;
    memset(&prog, 0, sizeof prog);
    char *path;
    kn_graph *lg = decode_plan(b, &prog, &path);
    uint32_t launches = 0;
    for (uint32_t i = 0; i < prog.n_steps; i++)
        launches += prog.steps[i].kind == KN_CU_STEP_LAUNCH;
    kn_graph *g;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    kn_cuda_options co = {0};
    co.kv_blocks = 32;
    kn_cuda_session *s;
    long live0 = ctl(MOCK_LIVE, -1);
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, &co, NULL, d, &s), KN_OK);
    /* a second session on the first one's pools (as a decode plan beside a prefill plan) */
    long live1 = ctl(MOCK_LIVE, -1);
    kn_cuda_options co2 = {0};
    co2.kv_shared = s;
    kn_cuda_session *s2;
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, &co2, NULL, d, &s2), KN_OK);
    assert_int_equal(ctl(MOCK_LIVE, -1) - live1, live1 - live0 - 2); /* all but the two pools */
    kn_cuda_kv_info info;
    assert_int_equal(kn_cuda_session_kv_info(s, &info), KN_OK);
    assert_int_equal(info.rows, ROWS);
    assert_int_equal(info.tokens, 1);
    assert_int_equal(info.layers, LAYERS);
    assert_int_equal(info.blocks, 32);
    assert_int_equal(info.max_blocks, MAX_SEQ / BLOCK);
    assert_int_equal(info.bytes, 2ull * LAYERS * 32 * KVH * BLOCK * HD * 4);
    kn_rt_tensor *in[3] = {random4(ROWS, QH, 1, HD), random4(ROWS, KVH, 1, HD), random4(ROWS, KVH, 1, HD)};
    kn_rt_tensor *out[2] = {0};
    const kn_rt_tensor *const *cin = (const kn_rt_tensor *const *)in;
    kn_diag *q = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_session_run(s, cin, 3, out, 2, q), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "run it with kn_cuda_session_run_kv"));
    /* the host keeps the blocks and tables only; the pools are the session's */
    kn_kv_config cfg = {info.layers, info.kv_heads, info.head_dim, info.block_size, info.blocks, info.max_seq_len};
    kn_kv_cache *c;
    assert_int_equal(kn_kv_create_tables(&cfg, NULL, d, &c), KN_OK);
    assert_null(c->keys);
    uint32_t seqs[ROWS];
    for (uint32_t r = 0; r < ROWS; r++) {
        assert_int_equal(kn_kv_seq_add(c, &seqs[r]), KN_OK);
        assert_int_equal(kn_kv_seq_reserve(c, seqs[r], 5 + 4 * r + 1, d), KN_OK);
        kn_kv_seq_get(c, seqs[r])->len = 5 + 4 * r;
    }
    int32_t *table = calloc((size_t)ROWS * info.max_blocks, sizeof *table), past[ROWS];
    assert_non_null(table);
    assert_int_equal(kn_kv_fill_rows(c, seqs, ROWS, info.max_blocks, table, past), KN_OK);
    assert_int_equal(past[1], 9);
    assert_int_equal(table[1 * info.max_blocks + 2], 4); /* row 0 took blocks 0, 1; row 1 2, 3, 4 */
    kn_cuda_kv_binding kv = {table, past, ROWS, info.max_blocks};
    ctl(MOCK_LAUNCHES, 0);
    assert_int_equal(kn_cuda_session_run_kv(s, cin, 3, out, 2, &kv, d), KN_OK);
    assert_int_equal(ctl(MOCK_LAUNCHES, -1), launches);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    for (int o = 0; o < 2; o++) {
        assert_int_equal(out[o]->numel, (int64_t)ROWS * QH * HD);
        kn_rt_tensor_free(NULL, out[o]);
    }
    kn_cuda_kv_info info2;
    assert_int_equal(kn_cuda_session_kv_info(s2, &info2), KN_OK);
    assert_int_equal(info2.blocks, 32);
    assert_int_equal(kn_cuda_session_run_kv(s2, cin, 3, out, 2, &kv, d), KN_OK);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    for (int o = 0; o < 2; o++)
        kn_rt_tensor_free(NULL, out[o]);
    kn_cuda_session_destroy(s2); /* leaves the pools to s */
    ctl(MOCK_LAUNCHES, 0);
    /* refused before anything runs: a block outside the pools, a past at
     * the maximum length, a table of another row length */
    table[1 * info.max_blocks + 2] = 32;
    assert_int_equal(kn_cuda_session_run_kv(s, cin, 3, out, 2, &kv, q), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "KV row 1: block table entry 2 is 32; the pools have 32 blocks"));
    table[1 * info.max_blocks + 2] = 0;
    past[0] = MAX_SEQ;
    assert_int_equal(kn_cuda_session_run_kv(s, cin, 3, out, 2, &kv, q), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "KV row 0: a past of 2048 tokens plus 1 new ones"));
    past[0] = 5;
    kv.max_blocks = 16;
    assert_int_equal(kn_cuda_session_run_kv(s, cin, 3, out, 2, &kv, q), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "the plan takes 2 rows of 512"));
    assert_int_equal(ctl(MOCK_LAUNCHES, -1), 0); /* the refused runs launched nothing */
    kn_cuda_session_destroy(s);
    assert_int_equal(ctl(MOCK_LIVE, -1), live);
    assert_int_equal(ctl(MOCK_BAD, -1), 0);
    for (int i = 0; i < 3; i++)
        kn_rt_tensor_free(NULL, in[i]);
    free(table);
    kn_kv_destroy(c);
    kn_diag_destroy(q);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    kn_cu_program_free(&prog);
    kn_graph_destroy(lg);
    mb_free(b);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(paged_steps),
        cmocka_unit_test(paged_steps_rotary),
        cmocka_unit_test(plan_round_trip),
        cmocka_unit_test(mask_refused),
    };
    const struct CMUnitTest mock_tests[] = {
        cmocka_unit_test(mock_session),
    };
    const struct CMUnitTest gpu_tests[] = {
        cmocka_unit_test(gpu_steps),
    };
    if (argc > 1 && strcmp(argv[1], "--gpu") == 0)
        return cmocka_run_group_tests_name("cuda_paged_gpu", gpu_tests, NULL, NULL);
    if (argc > 1 && strcmp(argv[1], "--mock") == 0)
        return cmocka_run_group_tests_name("cuda_paged_mock", mock_tests, NULL, NULL);
    return cmocka_run_group_tests_name("cuda_paged", tests, NULL, NULL);
}
