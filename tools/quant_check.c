/* kiln-quant-check: the MatMulNBits kernels of codegen/cuda/quant_kernels.h
 * (GEMV, tensor cores, the per-output kernel) against a double reference
 * with the CPU kernel's semantics (runtime/cpu/k_quant.c: the weight
 * dequantized in float, products summed in double), and the sampling
 * kernels of codegen/cuda/sample_kernels.h against runtime/sampler.c's
 * kn_sampler_pick for the same draw (kn_sampler_uniform).
 *
 *   kiln-quant-check                 every kernel source NVRTC-compiled for
 *                                    sm_80/86/89/90 + PTX, then each case run
 *                                    on the host (tools/emu_host.c)
 *   kiln-quant-check --gpu           the same cases on the GPU
 *   kiln-quant-check --gpu --bench   plus timings: GEMV vs the per-output
 *                                    kernel vs a float16 dense GEMV, bytes/s
 *                                    against a copy kernel's
 *
 * MatMulNBits error: |got - want| / (sum_k |a_k w_k| + |bias| + 1e-6), the
 * largest over the outputs (the rounding of a dot product is relative to
 * the sum of its terms' magnitudes). Tolerances: float32 1e-5 (float
 * accumulation), float16 2e-3 and bfloat16 1.2e-2 (the output's rounding;
 * the tensor-core kernel also rounds the dequantized weight to A's dtype).
 * Sampling: the ids must be equal. Prints a line per case and kernel and
 * "N passed, N failed"; exit 1 on a failure; --gpu without a usable GPU
 * prints why and exits 77 (skip). */
#include "codegen/cuda/lower.h"
#include "codegen/cuda/program.h"
#include "codegen/cuda/quant_kernels.h"
#include "codegen/cuda/sample_kernels.h"
#include "kernel_check.h"
#include "kiln/sampler.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint64_t next_u64(void) { return kn_kc_next_u64(&rng); }
static double urand(void) { return kn_kc_urand(&rng); }

static void verdict(bool ok, const char *name, const char *kernel, const char *fmt_extra)
{
    n_pass += ok;
    n_fail += !ok;
    printf("%s %-44s %-8s %s\n", ok ? "PASS" : "FAIL", name, kernel, fmt_extra);
}

/* ---- MatMulNBits ---- */

typedef enum zp_kind { ZP_NONE, ZP_U8, ZP_FLOAT } zp_kind;

typedef struct ncase {
    const char *name;
    kn_dtype dt;
    int64_t rows, n, k, bs;
    int bits;
    zp_kind zp;
    bool bias;
} ncase;

static const char *kind_name[] = {"simple", "gemv", "tc"};

static double tol_of(kn_dtype t) { return t == KN_BF16 ? 1.2e-2 : t == KN_F16 ? 2e-3 : 1e-5; }

/* The weight of column n at k as the CPU kernel computes it (float). */
static float weight(const ncase *c, const kn_nbits_params *p, const uint8_t *b, const void *sc, const void *zp,
                    int64_t n, int64_t k)
{
    int64_t blk = k / c->bs, j = k % c->bs, bit = j * c->bits;
    unsigned mask = (1u << c->bits) - 1u;
    unsigned code = (b[(n * p->nblk + blk) * p->blob + bit / 8] >> (bit % 8)) & mask;
    float s = (float)kn_get_f64(c->dt, sc, n * p->nblk + blk);
    float z = (float)(1u << (c->bits - 1));
    if (c->zp == ZP_U8) {
        int64_t zb = blk * c->bits;
        z = (float)((((const uint8_t *)zp)[n * p->zrow + zb / 8] >> (zb % 8)) & mask);
    } else if (c->zp == ZP_FLOAT) {
        z = (float)kn_get_f64(c->dt, zp, n * p->nblk + blk);
    }
    return ((float)code - z) * s;
}

static void run_nbits(const ncase *c)
{
    kn_nbits_params p = {c->rows * c->n, c->n, c->k, (c->k + c->bs - 1) / c->bs, c->bs * c->bits / 8, c->bs, 0,
                         c->rows};
    p.zrow = (p.nblk * c->bits + 7) / 8;
    size_t es = kn_dt_size(c->dt), na = (size_t)(c->rows * c->k), nb = (size_t)(c->n * p.nblk * p.blob);
    size_t nsc = (size_t)(c->n * p.nblk), nzp = c->zp == ZP_U8 ? (size_t)(c->n * p.zrow) : nsc;
    void *a = malloc(na * es), *sc = malloc(nsc * es), *zp = malloc(nzp * es + 1), *bias = malloc((size_t)c->n * es);
    uint8_t *b = malloc(nb);
    for (size_t i = 0; i < na; i++)
        kn_set_f64(c->dt, a, (int64_t)i, urand());
    for (size_t i = 0; i < nb; i++)
        b[i] = (uint8_t)next_u64();
    for (size_t i = 0; i < nsc; i++)
        kn_set_f64(c->dt, sc, (int64_t)i, 0.02 + 0.1 * fabs(urand()));
    for (size_t i = 0; i < nzp; i++) {
        if (c->zp == ZP_U8)
            ((uint8_t *)zp)[i] = (uint8_t)next_u64();
        else
            kn_set_f64(c->dt, zp, (int64_t)i, (double)(1 << (c->bits - 1)) + 3.0 * urand());
    }
    for (int64_t i = 0; i < c->n; i++)
        kn_set_f64(c->dt, bias, i, urand());
    double *want = malloc((size_t)p.total * sizeof *want), *mag = malloc((size_t)p.total * sizeof *mag);
    float *w = malloc((size_t)c->k * sizeof *w);
    for (int64_t n = 0; n < c->n; n++) {
        for (int64_t k = 0; k < c->k; k++)
            w[k] = weight(c, &p, b, sc, zp, n, k);
        for (int64_t m = 0; m < c->rows; m++) {
            double acc = 0, abs_sum = 0;
            for (int64_t k = 0; k < c->k; k++) {
                double t = kn_get_f64(c->dt, a, m * c->k + k) * (double)w[k];
                acc += t;
                abs_sum += fabs(t);
            }
            if (c->bias) {
                double bv = kn_get_f64(c->dt, bias, n);
                acc += bv;
                abs_sum += fabs(bv);
            }
            want[m * c->n + n] = acc;
            mag[m * c->n + n] = abs_sum + 1e-6;
        }
    }
    kn_nbits_spec sp = {c->dt, c->dt, c->zp == ZP_NONE ? KN_UNDEFINED : c->zp == ZP_U8 ? KN_U8 : c->dt,
                        c->bias ? c->dt : KN_UNDEFINED, c->bits, p.blob % 4 == 0};
    kn_nbits_kind chosen = kn_nbits_choose(&sp, &p);
    void *da = kn_kc_upload(a, na * es), *db = kn_kc_upload(b, nb), *dsc = kn_kc_upload(sc, nsc * es);
    void *dzp = kn_kc_upload(zp, nzp * es + 1), *dbias = kn_kc_upload(bias, (size_t)c->n * es);
    void *dy = kn_kc_alloc((size_t)p.total * es), *got = malloc((size_t)p.total * es);
    void *args[7];
    int na_ = 0;
    args[na_++] = &da;
    args[na_++] = &db;
    args[na_++] = &dsc;
    if (c->zp != ZP_NONE)
        args[na_++] = &dzp;
    if (c->bias)
        args[na_++] = &dbias;
    args[na_++] = &dy;
    args[na_++] = &p;
    for (int kind = 0; kind < 3; kind++) {
        bool fits = kind == KN_NBITS_SIMPLE || (kind == KN_NBITS_GEMV && p.blob % 4 == 0) ||
                    (kind == KN_NBITS_TC && c->dt != KN_F32 && c->bits == 4 && c->bs % 8 == 0);
        if (!fits)
            continue;
        char err[256], label[16], extra[160];
        char *(*gen[])(const kn_nbits_spec *, char *, size_t) = {kn_nbits_simple_source, kn_nbits_gemv_source,
                                                                 kn_nbits_tc_source};
        static const char *entries[] = {KN_NBITS_SIMPLE_ENTRY, KN_NBITS_GEMV_ENTRY, KN_NBITS_TC_ENTRY};
        snprintf(label, sizeof label, "%s%s", kind_name[kind], kind == (int)chosen ? "*" : "");
        char *src = gen[kind](&sp, err, sizeof err);
        kn_kc_fn f;
        bool ok = src && kn_kc_build(src, entries[kind], &f);
        free(src);
        if (ok) {
            kn_kc_free(dy);
            dy = kn_kc_alloc((size_t)p.total * es); /* zeros: a missed output shows */
            ok = kn_kc_launch(&f, kn_nbits_grid((kn_nbits_kind)kind, &p), kn_nbits_threads((kn_nbits_kind)kind),
                              args);
        }
        if (!ok) {
            verdict(false, c->name, label, src ? "build or launch failed" : err);
            continue;
        }
        kn_kc_download(got, dy, (size_t)p.total * es);
        double worst = 0;
        int64_t at = 0;
        for (int64_t i = 0; i < p.total; i++) {
            double e = fabs(kn_get_f64(c->dt, got, i) - want[i]) / mag[i];
            if (!(e <= worst)) {
                worst = e;
                at = i;
            }
        }
        double tol = tol_of(c->dt);
        snprintf(extra, sizeof extra, "max err %.2e (tol %.0e)", worst, tol);
        if (!(worst <= tol))
            snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " at %lld: %g vs %g", (long long)at,
                     kn_get_f64(c->dt, got, at), want[at]);
        verdict(worst <= tol, c->name, label, extra);
    }
    kn_kc_free(da), kn_kc_free(db), kn_kc_free(dsc), kn_kc_free(dzp), kn_kc_free(dbias), kn_kc_free(dy);
    free(a), free(b), free(sc), free(zp), free(bias), free(want), free(mag), free(w), free(got);
}

/* rows, N, K, block size: K not a multiple of the block, N not a multiple
 * of the GEMV's 4 columns per block or the tensor cores' 64, rows past a
 * tile; every zero-point kind and dtype. '*' marks the emitter's choice. */
static const ncase ncases[] = {
    {"f16 m1 n37 k200 b32 u8-zp bias", KN_F16, 1, 37, 200, 32, 4, ZP_U8, true},
    {"bf16 m3 n20 k256 b64 float-zp", KN_BF16, 3, 20, 256, 64, 4, ZP_FLOAT, false},
    {"f32 m4 n9 k100 b16 no-zp bias", KN_F32, 4, 9, 100, 16, 4, ZP_NONE, true},
    {"f16 m7 n6 k96 b128 (k < block) u8-zp", KN_F16, 7, 6, 96, 128, 4, ZP_U8, false},
    {"f16 m1 n10 k72 b24 float-zp", KN_F16, 1, 10, 72, 24, 4, ZP_FLOAT, false},
    {"f16 m2 n5 k50 b20 (odd words) no-zp", KN_F16, 2, 5, 50, 20, 4, ZP_NONE, false},
    {"f32 m2 n7 k90 b32 8-bit u8-zp", KN_F32, 2, 7, 90, 32, 8, ZP_U8, true},
    {"bf16 m1 n5 k40 b16 2-bit float-zp", KN_BF16, 1, 5, 40, 16, 2, ZP_FLOAT, false},
    {"f16 m16 n64 k128 b32 u8-zp", KN_F16, 16, 64, 128, 32, 4, ZP_U8, false},
    {"bf16 m37 n70 k200 b32 float-zp bias", KN_BF16, 37, 70, 200, 32, 4, ZP_FLOAT, true},
    {"f16 m80 n72 k96 b16 no-zp", KN_F16, 80, 72, 96, 16, 4, ZP_NONE, false},
    {"f32 m20 n12 k64 b32 u8-zp", KN_F32, 20, 12, 64, 32, 4, ZP_U8, false},
};

/* A float16 dense GEMV (warp per column, 16-byte loads of the weight row):
 * the fp16 baseline of --bench (checked like the others). k % 8 == 0. */
static const char dense_src[] =
    "#include \"kiln_cuda.h\"\n"
    "extern \"C\" __global__ void __launch_bounds__(128) kn_gemv_f16(const __half *a, const __half *w, __half *y,\n"
    "                                                              i64 n, i64 k) {\n"
    "  const int lane = threadIdx.x & 31;\n"
    "  const i64 col = (i64)blockIdx.x * 4 + (threadIdx.x >> 5);\n"
    "  if (col >= n) return;\n"
    "  const uint4 *wr = (const uint4 *)(w + col * k), *ar = (const uint4 *)a;\n"
    "  float acc = 0.0f;\n"
    "  for (i64 i = lane; i < k / 8; i += 32) {\n"
    "    const uint4 wv = wr[i], av = ar[i];\n"
    "    const __half *wh = (const __half *)&wv, *ah = (const __half *)&av;\n"
    "#pragma unroll\n"
    "    for (int t = 0; t < 8; t++) acc = fmaf(__half2float(ah[t]), __half2float(wh[t]), acc);\n"
    "  }\n"
    "  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);\n"
    "  if (lane == 0) y[col] = __float2half_rn(acc);\n"
    "}\n";

static void run_dense(int64_t n, int64_t k)
{
    size_t nw = (size_t)(n * k);
    uint16_t *a = malloc((size_t)k * 2), *w = malloc(nw * 2), *y = malloc((size_t)n * 2);
    for (int64_t i = 0; i < k; i++)
        kn_set_f64(KN_F16, a, i, urand());
    for (size_t i = 0; i < nw; i++)
        kn_set_f64(KN_F16, w, (int64_t)i, urand());
    kn_kc_fn f;
    void *da = kn_kc_upload(a, (size_t)k * 2), *dw = kn_kc_upload(w, nw * 2), *dy = kn_kc_alloc((size_t)n * 2);
    void *args[5] = {&da, &dw, &dy, &n, &k};
    bool ok = kn_kc_build(dense_src, "kn_gemv_f16", &f) &&
              kn_kc_launch(&f, (kn_dim3){(uint32_t)((n + 3) / 4), 1, 1}, 128, args);
    double worst = ok ? 0 : INFINITY;
    if (ok) {
        kn_kc_download(y, dy, (size_t)n * 2);
        for (int64_t c = 0; c < n; c++) {
            double acc = 0, mag = 1e-6;
            for (int64_t i = 0; i < k; i++) {
                double t = kn_get_f64(KN_F16, a, i) * kn_get_f64(KN_F16, w, c * k + i);
                acc += t;
                mag += fabs(t);
            }
            double e = fabs(kn_get_f64(KN_F16, y, c) - acc) / mag;
            worst = e > worst ? e : worst;
        }
    }
    char extra[64];
    snprintf(extra, sizeof extra, "max err %.2e (tol 2e-03)", worst);
    verdict(worst <= 2e-3, "f16 dense gemv n13 k264 (bench baseline)", "dense", extra);
    kn_kc_free(da), kn_kc_free(dw), kn_kc_free(dy);
    free(a), free(w), free(y);
}

/* ---- sampling ---- */

typedef enum logit_kind { LOGITS_SPREAD, LOGITS_TIES, LOGITS_FLAT, LOGITS_SPECIAL } logit_kind;

typedef struct scase {
    const char *name;
    kn_dtype dt;
    int64_t rows, vocab;
    float temperature;
    uint32_t top_k;
    float top_p;
    logit_kind logits;
} scase;

/* Row r's logits (as the dtype stores them) into x: spread N(0, 3)-like;
 * ties: a few distinct values; flat: within 0.01 (large nuclei);
 * special: ties plus NaN / -inf entries, and rows that are all -inf, hold
 * +inf, or one finite value. */
static void make_logits(const scase *c, int64_t r, void *x)
{
    for (int64_t i = 0; i < c->vocab; i++) {
        double v = c->logits == LOGITS_SPREAD ? 3.0 * (urand() + urand() + urand())
                   : c->logits == LOGITS_FLAT ? 0.01 * urand()
                                              : (double)(int)(4.0 * urand()) * 0.5;
        if (c->logits == LOGITS_SPECIAL) {
            uint64_t h = next_u64() % 16;
            v = h == 0 ? NAN : h == 1 ? -INFINITY : v;
            if (r % 8 == 1)
                v = -INFINITY;
            else if (r % 8 == 2 && i == c->vocab / 2)
                v = INFINITY;
            else if (r % 8 == 3)
                v = i == c->vocab - 3 ? 1.0 : -INFINITY;
            else if (r % 8 == 4 && i % 3 == 0)
                v = -0.0;
        }
        kn_set_f64(c->dt, x, i, v);
    }
}

static void run_sampling_case(const scase *c)
{
    size_t es = kn_dt_size(c->dt), n = (size_t)(c->rows * c->vocab);
    void *x = malloc(n * es);
    float *row = malloc((size_t)c->vocab * sizeof *row);
    double *u = malloc((size_t)c->rows * sizeof *u);
    int32_t *want = malloc((size_t)c->rows * 4), *got = malloc((size_t)c->rows * 4);
    kn_sampling sp;
    kn_sampling_defaults(&sp);
    sp.temperature = c->temperature;
    sp.top_k = c->top_k;
    sp.top_p = c->top_p;
    bool ok = x && row && u && want && got;
    for (int64_t r = 0; ok && r < c->rows; r++) {
        void *xr = (char *)x + (size_t)(r * c->vocab) * es;
        make_logits(c, r, xr);
        for (int64_t i = 0; i < c->vocab; i++)
            row[i] = (float)kn_get_f64(c->dt, xr, i);
        sp.seed = 1000003u * (uint64_t)r + (uint64_t)c->vocab;
        kn_sampler *s1 = NULL, *s2 = NULL;
        ok = kn_sampler_create(&sp, (uint32_t)c->vocab, NULL, NULL, &s1) == KN_OK &&
             kn_sampler_create(&sp, (uint32_t)c->vocab, NULL, NULL, &s2) == KN_OK;
        if (ok) {
            want[r] = (int32_t)kn_sampler_pick(s1, row, NULL, 0);
            u[r] = kn_sampler_uniform(s2);
        }
        kn_sampler_destroy(s1);
        kn_sampler_destroy(s2);
    }
    char err[256], extra[160] = "";
    char *src = ok ? kn_sample_source(c->dt, err, sizeof err) : NULL;
    bool greedy = c->temperature <= 0.0f;
    kn_kc_fn f;
    ok = src && kn_kc_build(src, greedy ? KN_SAMPLE_ARGMAX_ENTRY : KN_SAMPLE_ENTRY, &f);
    free(src);
    kn_sample_params p = {c->rows, c->vocab, c->vocab, c->temperature, c->top_p, c->top_k, 0};
    void *dx = ok ? kn_kc_upload(x, n * es) : NULL, *du = ok ? kn_kc_upload(u, (size_t)c->rows * 8) : NULL;
    void *dout = ok ? kn_kc_alloc((size_t)c->rows * 4) : NULL;
    void *gargs[3] = {&dx, &dout, &p}, *sargs[4] = {&dx, &du, &dout, &p};
    ok = ok && kn_kc_launch(&f, (kn_dim3){(uint32_t)c->rows, 1, 1}, KN_SAMPLE_THREADS, greedy ? gargs : sargs);
    int diff = 0;
    if (ok) {
        kn_kc_download(got, dout, (size_t)c->rows * 4);
        for (int64_t r = 0; r < c->rows; r++)
            if (got[r] != want[r]) {
                if (!diff)
                    snprintf(extra, sizeof extra, "row %lld: got id %d, the CPU sampler %d", (long long)r, got[r],
                             want[r]);
                diff++;
            }
        if (!diff)
            snprintf(extra, sizeof extra, "%lld rows: the CPU sampler's ids", (long long)c->rows);
    }
    verdict(ok && !diff, c->name, greedy ? "argmax" : "sample", ok ? extra : "build or launch failed");
    kn_kc_free(dx), kn_kc_free(du), kn_kc_free(dout);
    free(x), free(row), free(u), free(want), free(got);
}

static const scase scases[] = {
    {"f32 v49152 greedy", KN_F32, 6, 49152, 0.0f, 0, 1.0f, LOGITS_SPREAD},
    {"f32 v49152 t0.8", KN_F32, 6, 49152, 0.8f, 0, 1.0f, LOGITS_SPREAD},
    {"f32 v49152 t0.7 top-k 50", KN_F32, 6, 49152, 0.7f, 50, 1.0f, LOGITS_SPREAD},
    {"f32 v49152 t1 top-p 0.9", KN_F32, 6, 49152, 1.0f, 0, 0.9f, LOGITS_SPREAD},
    {"bf16 v49152 t0.6 top-k 40 top-p 0.8", KN_BF16, 6, 49152, 0.6f, 40, 0.8f, LOGITS_SPREAD},
    {"f16 v3000 ties greedy", KN_F16, 24, 3000, 0.0f, 0, 1.0f, LOGITS_TIES},
    {"f16 v3000 ties t1.3 top-k 1500 (2 chunks)", KN_F16, 12, 3000, 1.3f, 1500, 1.0f, LOGITS_TIES},
    {"f32 v3000 flat t1 top-p 0.5 (nucleus > 1024)", KN_F32, 12, 3000, 1.0f, 0, 0.5f, LOGITS_FLAT},
    {"f32 v3000 ties t2", KN_F32, 24, 3000, 2.0f, 0, 1.0f, LOGITS_TIES},
    {"f32 v50 ties t1 top-p 0.5", KN_F32, 32, 50, 1.0f, 0, 0.5f, LOGITS_TIES},
    {"f32 v50 ties t1 top-k 3 top-p 0.6", KN_F32, 32, 50, 1.0f, 3, 0.6f, LOGITS_TIES},
    {"f32 v300 special greedy", KN_F32, 16, 300, 0.0f, 0, 1.0f, LOGITS_SPECIAL},
    {"f32 v300 special t0.9 top-p 0.7", KN_F32, 16, 300, 0.9f, 0, 0.7f, LOGITS_SPECIAL},
    {"f32 v300 special t1e-38 top-k 5", KN_F32, 16, 300, 1e-38f, 5, 1.0f, LOGITS_SPECIAL},
    {"f16 v300 special t1 top-k 299", KN_F16, 16, 300, 1.0f, 299, 1.0f, LOGITS_SPECIAL},
};

static void run_sampling(void)
{
    for (size_t i = 0; i < sizeof scases / sizeof *scases; i++)
        run_sampling_case(&scases[i]);
}

#ifdef KN_HAVE_CUDA_HEADERS
/* --bench: one decode step's sampling (batch 1 and 8, vocab 49152). */
static void bench_sampling(void)
{
    for (int64_t rows = 1; rows <= 8; rows *= 8)
        for (int mode = 0; mode < 3; mode++) {
            kn_sample_params p = {rows, 49152, 49152, mode ? 0.7f : 0.0f, mode == 2 ? 0.9f : 1.0f,
                                  mode == 1 ? 50u : 0u, 0};
            char err[256];
            char *src = kn_sample_source(KN_F32, err, sizeof err);
            kn_kc_fn f;
            bool ok = src && kn_kc_build(src, mode ? KN_SAMPLE_ENTRY : KN_SAMPLE_ARGMAX_ENTRY, &f);
            free(src);
            size_t nx = (size_t)(rows * 49152);
            float *hx = malloc(nx * 4);
            double hu[8];
            for (size_t i = 0; hx && i < nx; i++)
                hx[i] = (float)(3.0 * (urand() + urand() + urand()));
            for (int i = 0; i < 8; i++)
                hu[i] = 0.5 + 0.5 * urand();
            void *x = hx ? kn_kc_upload(hx, nx * 4) : NULL, *u = kn_kc_upload(hu, sizeof hu);
            free(hx);
            ok = ok && x && u;
            void *out = kn_kc_alloc((size_t)rows * 4);
            void *gargs[3] = {&x, &out, &p}, *sargs[4] = {&x, &u, &out, &p};
            if (ok) {
                double t = kn_kc_time(&f, (kn_dim3){(uint32_t)rows, 1, 1}, KN_SAMPLE_THREADS, mode ? sargs : gargs);
                printf("BENCH sampling f32 vocab 49152 rows %lld %s: %.1f us\n", (long long)rows,
                       mode == 0 ? "greedy" : mode == 1 ? "t0.7 top-k 50" : "t0.7 top-p 0.9", t * 1e6);
            }
            kn_kc_free(x), kn_kc_free(u), kn_kc_free(out);
        }
}
#endif

/* ---- every default-arch compile (no run) ---- */

static void compile_sweep(void)
{
    kn_cu_program p = kn_kc_program(32);
    int bad = 0;
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    char err[256];
    /* each kernel for each dtype, with the three zero-point kinds and the bias spread over them */
    for (int t = 0; t < 3 && p.kernels; t++)
        for (int kind = 0; kind < 3; kind++) {
            if (kind == KN_NBITS_TC && t == 0)
                continue;
            kn_dtype zt = t == 0 ? KN_UNDEFINED : t == 1 ? KN_U8 : dts[t];
            kn_nbits_spec sp = {dts[t], dts[t], zt, t == 1 ? dts[t] : KN_UNDEFINED, 4, true};
            char *src = kind == KN_NBITS_SIMPLE ? kn_nbits_simple_source(&sp, err, sizeof err)
                        : kind == KN_NBITS_GEMV ? kn_nbits_gemv_source(&sp, err, sizeof err)
                                                : kn_nbits_tc_source(&sp, err, sizeof err);
            static const char *entries[] = {KN_NBITS_SIMPLE_ENTRY, KN_NBITS_GEMV_ENTRY, KN_NBITS_TC_ENTRY};
            if (!src) {
                fprintf(stderr, "%s: %s\n", entries[kind], err);
                bad++;
                continue;
            }
            p.kernels[p.n_kernels++] = (kn_cu_kernel){entries[kind], src, (uint64_t)p.n_kernels, NULL, 0};
        }
    for (int t = 0; t < 3 && p.kernels; t++) {
        char *src = kn_sample_source(dts[t], err, sizeof err);
        if (!src) {
            fprintf(stderr, "sampling: %s\n", err);
            bad++;
            continue;
        }
        char *src2 = strdup(src);
        p.kernels[p.n_kernels++] = (kn_cu_kernel){KN_SAMPLE_ENTRY, src, (uint64_t)p.n_kernels, NULL, 0};
        if (src2)
            p.kernels[p.n_kernels++] = (kn_cu_kernel){KN_SAMPLE_ARGMAX_ENTRY, src2, (uint64_t)p.n_kernels, NULL, 0};
    }
    if (p.kernels) {
        p.kernels[p.n_kernels++] = (kn_cu_kernel){"kn_gemv_f16", strdup(dense_src), 0, NULL, 0};
        p.kernels[p.n_kernels++] = (kn_cu_kernel){"kn_copy16", strdup(kn_kc_copy_src), 0, NULL, 0};
    }
    bad += kn_kc_sweep(&p, "MatMulNBits simple/gemv/tc x f32/f16/bf16, sampling argmax/sample x f32/f16/bf16, the f16 dense GEMV, the copy kernel");
    n_pass += !bad;
    n_fail += bad != 0;
}

#ifdef KN_HAVE_CUDA_HEADERS
/* --gpu --bench: weight bytes per second of the 4-bit GEMV, the
 * per-output kernel and a float16 dense GEMV over the same shape, against
 * the copy kernel's bandwidth. */
static void bench_gpu(void)
{
    double peak = kn_kc_copy_bandwidth();
    printf("BENCH copy kernel (16-byte accesses, 1 GiB each way): %.0f GB/s (the roofline below)\n", peak / 1e9);
    static const int64_t shapes[][2] = {{4096, 4096}, {1536, 576}, {49152, 576}}; /* N, K */
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
        for (int64_t rows = 1; rows <= 4; rows *= 4) {
            int64_t N = shapes[si][0], K = shapes[si][1], bs = 32;
            kn_nbits_params p = {rows * N, N, K, K / bs, bs / 2, bs, (K / bs * 4 + 7) / 8, rows};
            kn_nbits_spec sp = {KN_F16, KN_F16, KN_U8, KN_UNDEFINED, 4, true};
            size_t wbytes = (size_t)(N * p.nblk * p.blob), scb = (size_t)(N * p.nblk) * 2, zb = (size_t)(N * p.zrow);
            void *a = kn_kc_alloc((size_t)(rows * K) * 2), *b = kn_kc_alloc(wbytes), *sc = kn_kc_alloc(scb);
            void *zp = kn_kc_alloc(zb), *y = kn_kc_alloc((size_t)(rows * N) * 2), *wd = kn_kc_alloc((size_t)(N * K) * 2);
            void *args[6] = {&a, &b, &sc, &zp, &y, &p};
            double bytes = (double)(wbytes + scb + zb);
            for (int kind = 1; kind >= 0; kind--) {
                char err[256];
                char *src = kind ? kn_nbits_gemv_source(&sp, err, sizeof err) : kn_nbits_simple_source(&sp, err, sizeof err);
                kn_kc_fn f;
                if (!src || !kn_kc_build(src, kind ? KN_NBITS_GEMV_ENTRY : KN_NBITS_SIMPLE_ENTRY, &f)) {
                    free(src);
                    continue;
                }
                free(src);
                double t = kn_kc_time(&f, kn_nbits_grid((kn_nbits_kind)kind, &p), kn_nbits_threads((kn_nbits_kind)kind),
                                      args);
                printf("BENCH W4A16 %-6s f16 rows %lld N %lld K %lld b32 u8-zp: %.1f us, weights %.0f GB/s = %.0f%% of "
                       "the copy roofline\n",
                       kind ? "gemv" : "simple", (long long)rows, (long long)N, (long long)K, t * 1e6, bytes / t / 1e9,
                       peak > 0 ? 100.0 * bytes / t / peak : 0.0);
            }
            kn_kc_fn fd;
            if (rows == 1 && kn_kc_build(dense_src, "kn_gemv_f16", &fd)) {
                void *dargs[5] = {&a, &wd, &y, &N, &K};
                double t = kn_kc_time(&fd, (kn_dim3){(uint32_t)((N + 3) / 4), 1, 1}, 128, dargs);
                double db = (double)(N * K) * 2;
                printf("BENCH fp16 dense GEMV rows 1 N %lld K %lld: %.1f us, weights %.0f GB/s = %.0f%% of the copy "
                       "roofline (4-bit reads %.2fx fewer bytes)\n",
                       (long long)N, (long long)K, t * 1e6, db / t / 1e9, peak > 0 ? 100.0 * db / t / peak : 0.0,
                       db / bytes);
            }
            kn_kc_free(a), kn_kc_free(b), kn_kc_free(sc), kn_kc_free(zp), kn_kc_free(y), kn_kc_free(wd);
        }
    /* prefill: the tensor-core kernel and the per-output one at 512 rows */
    for (int kind = 2; kind >= 0; kind -= 2) {
        int64_t rows = 512, N = 4096, K = 4096, bs = 32;
        kn_nbits_params p = {rows * N, N, K, K / bs, bs / 2, bs, (K / bs * 4 + 7) / 8, rows};
        kn_nbits_spec sp = {KN_F16, KN_F16, KN_U8, KN_UNDEFINED, 4, true};
        void *a = kn_kc_alloc((size_t)(rows * K) * 2), *b = kn_kc_alloc((size_t)(N * p.nblk * p.blob));
        void *sc = kn_kc_alloc((size_t)(N * p.nblk) * 2), *zp = kn_kc_alloc((size_t)(N * p.zrow));
        void *y = kn_kc_alloc((size_t)(rows * N) * 2);
        void *args[6] = {&a, &b, &sc, &zp, &y, &p};
        char err[256];
        char *src = kind ? kn_nbits_tc_source(&sp, err, sizeof err) : kn_nbits_simple_source(&sp, err, sizeof err);
        kn_kc_fn f;
        if (src && kn_kc_build(src, kind ? KN_NBITS_TC_ENTRY : KN_NBITS_SIMPLE_ENTRY, &f)) {
            double t = kn_kc_time(&f, kn_nbits_grid((kn_nbits_kind)kind, &p), kn_nbits_threads((kn_nbits_kind)kind),
                                  args);
            printf("BENCH W4A16 %-6s f16 rows %lld N %lld K %lld: %.3f ms, %.1f TFLOP/s\n", kind ? "tc" : "simple",
                   (long long)rows, (long long)N, (long long)K, t * 1e3, 2.0 * (double)(rows * N) * (double)K / t / 1e12);
        }
        free(src);
        kn_kc_free(a), kn_kc_free(b), kn_kc_free(sc), kn_kc_free(zp), kn_kc_free(y);
    }
    bench_sampling();
}
#endif

int main(int argc, char **argv)
{
    bool bench;
    int rc = kn_kc_start(argc, argv,
                         "usage: kiln-quant-check [--gpu [--bench]]\n"
                         "  Checks the MatMulNBits kernels (GEMV, tensor cores, per-output) against a double reference\n"
                         "  and the sampling kernels against runtime/sampler.c: NVRTC for sm_80/86/89/90 + PTX and host\n"
                         "  emulation, or (--gpu) on the GPU; --bench adds GEMV timings against the copy roofline.\n",
                         &bench);
    if (rc >= 0)
        return rc;
    compile_sweep();
    for (size_t i = 0; i < sizeof ncases / sizeof *ncases; i++)
        run_nbits(&ncases[i]);
    run_dense(13, 264);
    run_sampling();
#ifdef KN_HAVE_CUDA_HEADERS
    if (kn_kc.gpu && bench)
        bench_gpu();
#endif
    (void)bench;
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
