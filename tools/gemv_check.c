/* kiln-gemv-check: the dense GEMV of codegen/cuda/gemv_kernels.h against
 * a double reference with the CPU kernels' semantics and rounding points
 * (runtime/cpu/k_fused_gemm.c: MatMul rounds the product, then the bias
 * add; Gemm rounds alpha·P + beta·C once; then the activation, then the
 * residual add), and the GEMV/cuBLASLt choice (gemm_choice.c).
 *
 *   kiln-gemv-check                 every kernel form NVRTC-compiled for
 *                                   sm_80/86/89/90 + PTX, then each case run
 *                                   on the host (tools/emu_host.c)
 *   kiln-gemv-check --gpu           the same cases on the GPU
 *   kiln-gemv-check --gpu --bench [--shape DTYPE,M,N,K ...] [--plan FILE ...]
 *                                   plus timings of the GEMV against cuBLASLt
 *                                   (the plan's GEMM step) per shape (default:
 *                                   the decode products of SmolLM2-135M and of
 *                                   the 1B Llama), printed as rows for
 *                                   codegen/cuda/gemm_choice.tsv ("TABLE ...");
 *                                   --plan takes the shapes of a target-cuda
 *                                   plan's products with at most 8 rows (its
 *                                   programs' GEMV launches and untransposed,
 *                                   unbatched float GEMM steps), listed as
 *                                   "SHAPE ..." lines also without --bench
 *
 * Error: |got - want| / (sum_k |alpha a_k b_k| + |beta c| + |res| + 1e-6),
 * the largest over the outputs. Tolerances: float32 1e-5 (float
 * accumulation), float16 2e-3, bfloat16 1.2e-2 (the rounding points). K
 * split across blocks: the same launch twice must give the same bytes.
 * The SwiGlu form (B [K, 2N] gate | up, Y = silu(gate) * up): the same
 * bytes as the plain GEMV of the packed product followed by the
 * kiln.SwiGlu kernel, with and without the K split.
 * Prints a line per case and "N passed, N failed"; exit 1 on a failure;
 * --gpu without a usable GPU prints why and exits 77 (skip). */
#include "codegen/cuda/gemv_kernels.h"
#include "codegen/cuda/lower.h"
#include "codegen/cuda/program.h"
#include "kernel_check.h"
#include "kiln/runtime.h"
#include "kiln/session.h"
#include "runtime/cpu/util.h"
#include "runtime/cuda/plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double urand(void) { return kn_kc_urand(&rng); }

static void verdict(bool ok, const char *name, const char *extra)
{
    n_pass += ok;
    n_fail += !ok;
    printf("%s %-58s %s\n", ok ? "PASS" : "FAIL", name, extra);
}

typedef enum bias_kind { B_NONE, B_ROW, B_FULL, B_ONE, B_COL } bias_kind;
typedef enum res_kind { R_NONE, R_FULL, R_ROW } res_kind;

/* One epilogue: the Gemm form (alpha, beta) or the MatMul form, the bias
 * broadcast, the activation, the residual. */
typedef struct epi {
    const char *name;
    bool gemm;
    double alpha, beta;
    bias_kind bias;
    const char *act; /* kiln.GemmEpilogue name */
    double act_a, act_b;
    res_kind res;
} epi;

static const epi epis[] = {
    {"matmul", false, 1, 1, B_NONE, "", 0, 0, R_NONE},
    {"matmul+bias", false, 1, 1, B_ROW, "", 0, 0, R_NONE},
    {"gemm a0.5 b2 C[M,N]", true, 0.5, 2, B_FULL, "", 0, 0, R_NONE},
    {"gemm b0.75 C[M,1]+relu", true, 1, 0.75, B_COL, "relu", 0, 0, R_NONE},
    {"matmul+bias+gelu_tanh+res", false, 1, 1, B_ROW, "gelu_tanh", 0, 0, R_FULL},
    {"matmul+silu+res row", false, 1, 1, B_NONE, "silu", 0, 0, R_ROW},
    {"matmul+bias1+clip", false, 1, 1, B_ONE, "clip", -0.3, 0.4, R_NONE},
    {"gemm+bias+gelu+res", true, 1, 1, B_ROW, "gelu", 0, 0, R_FULL},
    {"matmul+res", false, 1, 1, B_NONE, "", 0, 0, R_FULL},
};
enum { EPI_NONE, EPI_BIAS, EPI_GEMM_C, EPI_GEMM_COL_RELU, EPI_GELU_RES, EPI_SILU_ROW, EPI_CLIP, EPI_GEMM_ALL, EPI_RES };

static double act_ref(const char *n, double x, double a, double b)
{
    if (strcmp(n, "relu") == 0)
        return x < 0 ? 0.0 : x;
    if (strcmp(n, "clip") == 0)
        return x < a ? a : x > b ? b : x;
    if (strcmp(n, "gelu") == 0)
        return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440));
    if (strcmp(n, "gelu_tanh") == 0)
        return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)));
    if (strcmp(n, "silu") == 0)
        return x / (1.0 + exp(-x));
    return x;
}

static double rnd(kn_dtype t, double v)
{
    uint8_t tmp[8];
    kn_set_f64(t, tmp, 0, v);
    return kn_get_f64(t, tmp, 0);
}

static double tol_of(kn_dtype t) { return t == KN_BF16 ? 1.2e-2 : t == KN_F16 ? 2e-3 : 1e-5; }

typedef struct gcase {
    kn_dtype dt;
    int m;
    int64_t n, k;
    int epi;
} gcase;

static void run_case(const gcase *c)
{
    const epi *ep = &epis[c->epi];
    int64_t m = c->m, n = c->n, k = c->k;
    size_t es = kn_dt_size(c->dt);
    kn_gemv_spec sp = {c->dt, c->m, kn_gemv_vec(c->dt, n), ep->gemm, ep->bias != B_NONE, ep->res != R_NONE,
                       *ep->act ? kn_gemm_act_expr(ep->act) : NULL};
    kn_gemv_params p;
    memset(&p, 0, sizeof p);
    p.n = n, p.k = k;
    p.alpha = ep->alpha, p.beta = ep->beta, p.a = ep->act_a, p.b = ep->act_b;
    int64_t nbias = ep->bias == B_ROW ? n : ep->bias == B_FULL ? m * n : ep->bias == B_COL ? m : 1;
    p.c_rs = ep->bias == B_FULL ? n : ep->bias == B_COL ? 1 : 0;
    p.c_cs = ep->bias == B_ROW || ep->bias == B_FULL ? 1 : 0;
    int64_t nres = ep->res == R_FULL ? m * n : n;
    p.r_rs = ep->res == R_FULL ? n : 0;
    p.r_cs = 1;
    kn_dim3 grid = kn_gemv_plan(sp.vec, &p);
    char name[160];
    snprintf(name, sizeof name, "%s m%d n%lld k%lld %s (vec %d, %lldx%lld blocks)", kn_dtype_name(c->dt), c->m,
             (long long)n, (long long)k, ep->name, sp.vec, (long long)grid.x, (long long)grid.y);
    void *a = malloc((size_t)(m * k) * es), *b = malloc((size_t)(k * n) * es), *bias = malloc((size_t)nbias * es);
    void *res = malloc((size_t)nres * es), *got = malloc((size_t)(m * n) * es), *got2 = malloc((size_t)(m * n) * es);
    void *got3 = malloc((size_t)(m * n) * es);
    double *want = malloc((size_t)(m * n) * sizeof *want), *mag = malloc((size_t)(m * n) * sizeof *mag);
    for (int64_t i = 0; i < m * k; i++)
        kn_set_f64(c->dt, a, i, urand());
    for (int64_t i = 0; i < k * n; i++)
        kn_set_f64(c->dt, b, i, urand());
    for (int64_t i = 0; i < nbias; i++)
        kn_set_f64(c->dt, bias, i, urand());
    for (int64_t i = 0; i < nres; i++)
        kn_set_f64(c->dt, res, i, urand());
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, am = 0;
            for (int64_t q = 0; q < k; q++) {
                double t = kn_get_f64(c->dt, a, r * k + q) * kn_get_f64(c->dt, b, q * n + j);
                s += t;
                am += fabs(t);
            }
            double v = ep->alpha * s, bv = sp.bias ? ep->beta * kn_get_f64(c->dt, bias, r * p.c_rs + j * p.c_cs) : 0;
            v = ep->gemm ? rnd(c->dt, v + bv) : rnd(c->dt, rnd(c->dt, v) + bv);
            if (sp.act)
                v = rnd(c->dt, act_ref(ep->act, v, ep->act_a, ep->act_b));
            double rv = sp.res ? kn_get_f64(c->dt, res, r * p.r_rs + j * p.r_cs) : 0;
            want[r * n + j] = v + rv;
            mag[r * n + j] = fabs(ep->alpha) * am + fabs(bv) + fabs(rv) + 1e-6;
        }
    char err[256], extra[200] = "";
    char *src = kn_gemv_source(&sp, err, sizeof err);
    kn_kc_fn fm, fc;
    bool ok = src && kn_kc_build(src, KN_GEMV_ENTRY, &fm) && kn_kc_build(src, KN_GEMV_COMBINE_ENTRY, &fc);
    free(src);
    size_t scratch = kn_gemv_scratch_bytes(c->m, &p);
    void *da = kn_kc_upload(a, (size_t)(m * k) * es), *db = kn_kc_upload(b, (size_t)(k * n) * es);
    void *dbias = kn_kc_upload(bias, (size_t)nbias * es), *dres = kn_kc_upload(res, (size_t)nres * es);
    unsigned *zero = calloc(grid.x, sizeof *zero);
    void *dpart = kn_kc_alloc(scratch ? scratch : 4), *dy = NULL, *nocnt = NULL;
    void *dcnt = zero ? kn_kc_upload(zero, grid.x * sizeof *zero) : NULL; /* the K split's counters, zero */
    ok = ok && dcnt;
    void *args[8] = {&da, &db, &dbias, &dres, &dy, &dpart, &nocnt, &p}, *cargs[5] = {&dpart, &dbias, &dres, &dy, &p};
    /* run 0: main kernel + kn_gemv_combine (no counters); runs 1, 2: one launch each, the last block of
     * each column block adding the partials, the second reusing the counters the first left zero */
    int runs = p.splits > 1 ? 3 : 1;
    for (int run = 0; ok && run < runs; run++) {
        kn_kc_free(dy);
        dy = kn_kc_alloc((size_t)(m * n) * es); /* zeros: a missed output shows */
        args[6] = run ? &dcnt : &nocnt;
        ok = kn_kc_launch(&fm, grid, KN_GEMV_THREADS, args) &&
             (p.splits == 1 || run || kn_kc_launch(&fc, kn_emit_grid(m * n), 256, cargs));
        if (ok)
            kn_kc_download(run == 0 ? got : run == 1 ? got2 : got3, dy, (size_t)(m * n) * es);
    }
    bool cnt_zero = true; /* the counters are zero again after the one-launch runs */
    if (ok && p.splits > 1) {
        kn_kc_download(zero, dcnt, grid.x * sizeof *zero);
        for (uint32_t i = 0; i < grid.x; i++)
            cnt_zero &= zero[i] == 0;
    }
    if (!ok) {
        verdict(false, name, src ? "build or launch failed" : err);
    } else {
        double worst = 0;
        int64_t at = 0;
        for (int64_t i = 0; i < m * n; i++) {
            double e = fabs(kn_get_f64(c->dt, got, i) - want[i]) / mag[i];
            if (!(e <= worst)) {
                worst = e;
                at = i;
            }
        }
        double tol = tol_of(c->dt);
        /* the one-launch form equals the two-kernel form to the bit, twice */
        bool same = p.splits == 1 ||
                    (memcmp(got, got2, (size_t)(m * n) * es) == 0 && memcmp(got, got3, (size_t)(m * n) * es) == 0);
        snprintf(extra, sizeof extra, "max err %.2e (tol %.0e)%s%s", worst, tol,
                 same ? "" : ", the one-launch form differs from main + combine",
                 cnt_zero ? "" : ", the K-split counters are not zero after the launch");
        same &= cnt_zero;
        if (!(worst <= tol))
            snprintf(extra + strlen(extra), sizeof extra - strlen(extra), " at %lld: %g vs %g", (long long)at,
                     kn_get_f64(c->dt, got, at), want[at]);
        verdict(worst <= tol && same, name, extra);
    }
    kn_kc_free(da), kn_kc_free(db), kn_kc_free(dbias), kn_kc_free(dres), kn_kc_free(dpart), kn_kc_free(dy);
    kn_kc_free(dcnt);
    free(a), free(b), free(bias), free(res), free(got), free(got2), free(got3), free(want), free(mag), free(zero);
}

/* M 1 ... 8; K and N from {1, 7, 64, 576, 1536, 2048} and odd sizes; every
 * dtype and epilogue; K split across blocks (small N, large K) and not
 * (N past KN_GEMV_TARGET_BLOCKS blocks, or K within one tile). */
static const gcase cases[] = {
    {KN_F16, 1, 576, 576, EPI_NONE},
    {KN_BF16, 1, 1536, 576, EPI_NONE},
    {KN_F32, 1, 576, 1536, EPI_NONE},
    {KN_F16, 1, 2048, 2048, EPI_RES},
    {KN_BF16, 2, 64, 2048, EPI_GELU_RES},
    {KN_F32, 3, 7, 576, EPI_BIAS},
    {KN_F16, 4, 1, 1536, EPI_GEMM_C},
    {KN_BF16, 5, 577, 64, EPI_GEMM_COL_RELU},
    {KN_F32, 6, 64, 7, EPI_SILU_ROW},
    {KN_F16, 7, 1, 1, EPI_CLIP},
    {KN_F32, 8, 2048, 1, EPI_GEMM_ALL},
    {KN_F16, 8, 99, 1000, EPI_GELU_RES},
    {KN_BF16, 3, 7, 7, EPI_BIAS},
    {KN_F32, 2, 1538, 131, EPI_GEMM_C},
    {KN_F16, 2, 1540, 333, EPI_SILU_ROW},
    {KN_F16, 6, 64, 576, EPI_GEMM_COL_RELU},
    {KN_BF16, 8, 2, 2048, EPI_CLIP},
    {KN_F32, 4, 576, 64, EPI_RES},
    {KN_F16, 1, 49152, 7, EPI_NONE},      /* 192 blocks of 256 columns, one tile */
    {KN_F32, 2, 34000, 65, EPI_BIAS},     /* 266 blocks: no K split */
    {KN_BF16, 1, 3, 20000, EPI_GEMM_ALL}, /* 264 splits of K */
};

/* ---- the SwiGlu form ---- */

typedef struct scase {
    kn_dtype dt;
    int m;
    int64_t i, k; /* SwiGlu's N (B is [K, 2N]) and K */
} scase;

/* The packed gate|up product [M, 2I] on the plain GEMV (one launch), then
 * the kiln.SwiGlu kernel, as a plan without the fusion runs them; against
 * the SwiGlu form, one launch (twice, on the same counters) and main +
 * combine: the same bytes. */
static void run_swiglu_case(const scase *c)
{
    int64_t m = c->m, ni = c->i, n = 2 * c->i, k = c->k;
    size_t es = kn_dt_size(c->dt);
    kn_gemv_spec ps = {c->dt, c->m, kn_gemv_vec(c->dt, n), false, false, false, NULL, false};
    kn_gemv_spec fs = {c->dt, c->m, kn_gemv_vec(c->dt, ni), false, false, false, NULL, true};
    kn_gemv_params pp, fp;
    memset(&pp, 0, sizeof pp);
    pp.n = n, pp.k = k, pp.alpha = pp.beta = 1;
    fp = pp;
    fp.n = ni;
    kn_dim3 pg = kn_gemv_plan(ps.vec, &pp), fg = kn_gemv_plan_swiglu(c->dt, &fp);
    char name[160];
    snprintf(name, sizeof name, "swiglu %s m%d I%lld k%lld (vec %d, %lldx%lld blocks)", kn_dtype_name(c->dt), c->m,
             (long long)ni, (long long)k, fs.vec, (long long)fg.x, (long long)fg.y);
    void *a = malloc((size_t)(m * k) * es), *b = malloc((size_t)(k * n) * es);
    void *want = malloc((size_t)(m * ni) * es), *got = malloc((size_t)(m * ni) * es);
    for (int64_t i = 0; i < m * k; i++)
        kn_set_f64(c->dt, a, i, urand());
    for (int64_t i = 0; i < k * n; i++)
        kn_set_f64(c->dt, b, i, 2 * urand()); /* sums of a few units: silu's curved part */
    char err[256];
    char *psrc = kn_gemv_source(&ps, err, sizeof err), *fsrc = psrc ? kn_gemv_source(&fs, err, sizeof err) : NULL;
    kn_sb ssrc = {0};
    kn_swiglu_source(&ssrc, c->dt);
    kn_kc_fn fpm, ffm, ffc, fsw;
    bool ok = psrc && fsrc && kn_sb_str(&ssrc) && kn_kc_build(psrc, KN_GEMV_ENTRY, &fpm) &&
              kn_kc_build(fsrc, KN_GEMV_ENTRY, &ffm) && kn_kc_build(fsrc, KN_GEMV_COMBINE_ENTRY, &ffc) &&
              kn_kc_build(kn_sb_str(&ssrc), KN_SWIGLU_ENTRY, &fsw);
    free(psrc), free(fsrc);
    kn_sb_free(&ssrc);
    size_t pscr = kn_gemv_scratch_bytes(c->m, &pp), fscr = 2 * kn_gemv_scratch_bytes(c->m, &fp);
    uint32_t ncnt = pg.x > fg.x ? pg.x : fg.x;
    unsigned *zero = calloc(ncnt, sizeof *zero);
    void *da = kn_kc_upload(a, (size_t)(m * k) * es), *db = kn_kc_upload(b, (size_t)(k * n) * es);
    void *dprod = kn_kc_alloc((size_t)(m * n) * es), *dy = kn_kc_alloc((size_t)(m * ni) * es);
    void *dpp = kn_kc_alloc(pscr ? pscr : 4), *dfp = kn_kc_alloc(fscr ? fscr : 4), *none = NULL;
    void *dcnt = zero ? kn_kc_upload(zero, ncnt * sizeof *zero) : NULL;
    ok = ok && dcnt && dprod && dy;
    /* two steps: the product [M, 2I], then SwiGlu over its halves (up at an offset of I elements) */
    void *pargs[8] = {&da, &db, &none, &none, &dprod, &dpp, &dcnt, &pp};
    kn_swiglu_params sw;
    memset(&sw, 0, sizeof sw);
    sw.n = m * ni, sw.rank = 2, sw.dims[0] = m, sw.dims[1] = ni;
    sw.sg[0] = sw.su[0] = n, sw.sg[1] = sw.su[1] = 1;
    void *dup = ok ? (char *)dprod + (size_t)ni * es : NULL;
    void *sargs[4] = {&dprod, &dup, &dy, &sw};
    ok = ok && kn_kc_launch(&fpm, pg, KN_GEMV_THREADS, pargs) && kn_kc_launch(&fsw, kn_emit_grid(sw.n), 256, sargs);
    if (ok)
        kn_kc_download(want, dy, (size_t)(m * ni) * es);
    /* the SwiGlu form: run 0 main + combine (no counters), runs 1, 2 one launch each */
    bool same = true;
    int runs = fp.splits > 1 ? 3 : 1;
    void *fargs[8] = {&da, &db, &none, &none, &dy, &dfp, &none, &fp}, *cargs[5] = {&dfp, &none, &none, &dy, &fp};
    for (int run = 0; ok && run < runs; run++) {
        kn_kc_free(dy);
        dy = kn_kc_alloc((size_t)(m * ni) * es); /* zeros: a missed output shows */
        fargs[6] = run ? &dcnt : &none;
        ok = dy && kn_kc_launch(&ffm, fg, KN_GEMV_THREADS, fargs) &&
             (fp.splits == 1 || run || kn_kc_launch(&ffc, kn_emit_grid(m * ni), 256, cargs));
        if (ok) {
            kn_kc_download(got, dy, (size_t)(m * ni) * es);
            same &= memcmp(got, want, (size_t)(m * ni) * es) == 0;
        }
    }
    bool cnt_zero = true, nonzero = false;
    if (ok) {
        kn_kc_download(zero, dcnt, ncnt * sizeof *zero);
        for (uint32_t i = 0; i < ncnt; i++)
            cnt_zero &= zero[i] == 0;
        for (int64_t i = 0; i < m * ni; i++)
            nonzero |= kn_get_f64(c->dt, want, i) != 0;
    }
    char extra[160];
    snprintf(extra, sizeof extra, "%s (%lld splits, the packed product's)%s%s",
             !ok ? "build or launch failed" : same ? "= GEMV + SwiGlu bit for bit" : "differs from GEMV + SwiGlu",
             (long long)fp.splits, cnt_zero ? "" : ", the K-split counters are not zero after the launch",
             nonzero || !ok ? "" : ", all zero");
    verdict(ok && same && cnt_zero && nonzero && fp.splits == pp.splits, name, extra);
    kn_kc_free(da), kn_kc_free(db), kn_kc_free(dprod), kn_kc_free(dy), kn_kc_free(dpp), kn_kc_free(dfp);
    kn_kc_free(dcnt);
    free(a), free(b), free(want), free(got), free(zero);
}

/* f32/f16/bf16, M 1 ... 8, I in {1, 7, 64, 1536}; K within one tile (no
 * split) or longer (split: the packed product's 2I columns give fewer than
 * KN_GEMV_TARGET_BLOCKS blocks). */
static const scase scases[] = {
    {KN_F32, 1, 1, 7},      {KN_F16, 2, 7, 576},   {KN_BF16, 3, 64, 64},  {KN_F32, 4, 64, 1536},
    {KN_F16, 5, 1536, 576}, {KN_BF16, 6, 1536, 64}, {KN_F16, 7, 1, 1536}, {KN_BF16, 8, 7, 130},
    {KN_F32, 8, 1536, 96},  {KN_F16, 1, 64, 7},    {KN_BF16, 1, 1536, 576}, {KN_F32, 2, 7, 64},
};

/* ---- the per-shape choice ---- */

static void check_choice(void)
{
    static const char text[] = "# comment\n"
                               "sm_90\tfloat16\t1\t576\t576\t-\tcublaslt\n"
                               "*  float16 1 576 576 - gemv   # any arch\n"
                               "* bfloat16 8 64 64 bias+act+res gemv\n";
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_gemm_table t, bad, def;
    bool ok = d && kn_gemm_table_parse(text, "t", NULL, d, &t) == KN_OK && t.n == 3;
    ok = ok && !kn_gemm_choose_gemv(&t, 90, KN_F16, 1, 576, 576, "-"); /* the arch's row */
    ok = ok && kn_gemm_choose_gemv(&t, 80, KN_F16, 1, 576, 576, "-");  /* the * row */
    ok = ok && kn_gemm_choose_gemv(&t, 90, KN_BF16, 8, 64, 64, "bias+act+res");
    ok = ok && !kn_gemm_choose_gemv(&t, 90, KN_BF16, 8, 64, 64, "-");  /* the rule: M > 4 */
    ok = ok && kn_gemm_choose_gemv(&t, 90, KN_F32, 4, 64, 64, "-");    /* the rule: M <= 4 */
    ok = ok && !kn_gemm_choose_gemv(&t, 90, KN_F64, 1, 64, 64, "-");   /* no float64 GEMV */
    ok = ok && !kn_gemm_choose_gemv(&t, 90, KN_F16, 9, 64, 64, "-");
    char key[24];
    kn_gemm_epi_key(true, false, true, key, sizeof key);
    ok = ok && strcmp(key, "bias+res") == 0;
    kn_gemm_epi_key(false, false, false, key, sizeof key);
    ok = ok && strcmp(key, "-") == 0;
    kn_gemm_table w;
    ok = ok && kn_gemm_table_parse("* float32 * * * * cublaslt\n* * 3 * * bias gemv\n", "w", NULL, d, &w) == KN_OK;
    ok = ok && !kn_gemm_choose_gemv(&w, 90, KN_F32, 3, 5, 6, "bias"); /* the first matching row */
    ok = ok && kn_gemm_choose_gemv(&w, 90, KN_F16, 3, 5, 6, "bias");
    ok = ok && kn_gemm_choose_gemv(&w, 90, KN_F16, 4, 5, 6, "-");     /* no row: the rule */
    if (ok)
        kn_gemm_table_free(&w);
    ok = ok && kn_gemm_table_parse("* float16 1 2 3 - fast\n", "bad", NULL, d, &bad) == KN_ERR_INVALID;
    ok = ok && kn_gemm_table_parse("* float64 1 2 3 - gemv\n", "bad", NULL, d, &bad) == KN_ERR_INVALID;
    ok = ok && kn_gemm_table_parse("* float16 0 2 3 - gemv\n", "bad", NULL, d, &bad) == KN_ERR_INVALID;
    ok = ok && kn_gemm_table_parse(kn_gemm_table_default, "built-in", NULL, d, &def) == KN_OK;
    if (ok)
        kn_gemm_table_free(&def);
    if (d && ok)
        kn_gemm_table_free(&t);
    verdict(ok, "gemm table: parse, arch rows before *, the rule", "");
    kn_diag_destroy(d);
}

/* ---- every default-arch compile (no run) ---- */

static void compile_sweep(void)
{
    kn_cu_program p = kn_kc_program(128);
    int bad = 0;
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    char err[256];
    /* each dtype x vec with one epilogue (cycling), and float16 at vec 8 with every epilogue; the
     * combine entry is in the same source (compiled with it) */
    int ne = (int)(sizeof epis / sizeof *epis);
    for (int t = 0; t < 3 && p.kernels; t++)
        for (int vi = 0, vec = 1; vec <= 8; vi++, vec *= 2)
            for (int e = 0; e < ne; e++) {
                bool every = dts[t] == KN_F16 && vec == 8;
                if (vec * (dts[t] == KN_F32 ? 4 : 2) > 16 || (!every && e != (vi + 3 * t) % ne) ||
                    p.n_kernels >= p.cap_kernels)
                    continue;
                const epi *ep = &epis[e];
                kn_gemv_spec sp = {dts[t], 1 + (e + vec) % KN_GEMV_MAX_ROWS, vec, ep->gemm, ep->bias != B_NONE,
                                   ep->res != R_NONE, *ep->act ? kn_gemm_act_expr(ep->act) : NULL};
                char *src = kn_gemv_source(&sp, err, sizeof err);
                if (!src) {
                    fprintf(stderr, "gemv: %s\n", err);
                    bad++;
                    continue;
                }
                p.kernels[p.n_kernels++] = (kn_cu_kernel){KN_GEMV_ENTRY, src, (uint64_t)p.n_kernels, NULL, 0};
            }
    /* the SwiGlu form, each dtype x vec */
    for (int t = 0; t < 3 && p.kernels; t++)
        for (int vec = 1; vec <= 8; vec *= 2) {
            if (vec * (dts[t] == KN_F32 ? 4 : 2) > 16 || p.n_kernels >= p.cap_kernels)
                continue;
            kn_gemv_spec sp = {dts[t], 1 + (t + vec) % KN_GEMV_MAX_ROWS, vec, false, false, false, NULL, true};
            char *src = kn_gemv_source(&sp, err, sizeof err);
            if (!src) {
                fprintf(stderr, "gemv swiglu: %s\n", err);
                bad++;
                continue;
            }
            p.kernels[p.n_kernels++] = (kn_cu_kernel){KN_GEMV_ENTRY, src, (uint64_t)p.n_kernels, NULL, 0};
        }
    bad += kn_kc_sweep(&p, "the dense GEMV and its K-split combine x f32/f16/bf16 x vec 1/2/4/8 x epilogues, "
                           "and its SwiGlu form");
    n_pass += !bad;
    n_fail += bad != 0;
}

#ifdef KN_HAVE_CUDA_HEADERS
#include "gemv_bench.h"
#endif

/* ---- the product shapes of a plan (--plan) ---- */

typedef struct shape_list {
    char (*s)[64];
    int n, cap;
} shape_list;

static void add_shape(shape_list *l, kn_dtype dt, int64_t m, int64_t n, int64_t k, const char *what)
{
    if ((dt != KN_F32 && dt != KN_F16 && dt != KN_BF16) || m < 1 || m > KN_GEMV_MAX_ROWS || n < 1 || k < 1)
        return;
    char buf[64];
    snprintf(buf, sizeof buf, "%s,%lld,%lld,%lld", kn_dtype_name(dt), (long long)m, (long long)n, (long long)k);
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->s[i], buf) == 0)
            return;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 32;
        char(*ns)[64] = realloc(l->s, (size_t)cap * sizeof *ns);
        if (!ns)
            return;
        l->s = ns, l->cap = cap;
    }
    snprintf(l->s[l->n++], 64, "%s", buf);
    printf("SHAPE %s (%s)\n", buf, what);
}

static void plan_program_shapes(const kn_graph *g, shape_list *l, kn_diag *d)
{
    kn_cuda_plan p;
    if (kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, NULL, d, &p) != KN_OK)
        return;
    for (uint32_t i = 0; i < p.n_steps; i++) {
        const kn_plan_cu_step *st = &p.steps[i];
        const kn_plan_cu_gemm *gm = &p.gemms[i];
        if (st->kind == KN_CU_STEP_GEMM && gm->batch <= 1 && !gm->trans_a && !gm->trans_b)
            add_shape(l, (kn_dtype)gm->dtype, gm->m, gm->n, gm->k, "cuBLASLt GEMM step");
        if (st->kind != KN_CU_STEP_LAUNCH || strcmp(p.entries[st->kernel], KN_GEMV_ENTRY) != 0 || st->n_args != 8)
            continue;
        const kn_plan_cu_arg *a = &p.args[st->first_arg], *prm = &p.args[st->first_arg + 7];
        kn_gemv_params gp;
        if (prm->kind != KN_CU_ARG_PARAMS || prm->size < sizeof gp || prm->offset + sizeof gp > p.params_size)
            continue;
        memcpy(&gp, p.params + prm->offset, sizeof gp);
        const kn_plan_cu_slot *sa = &p.slots[a->slot];
        size_t es = kn_dt_size((kn_dtype)sa->dtype);
        if (es && gp.k > 0)
            add_shape(l, (kn_dtype)sa->dtype, (int64_t)(sa->nbytes / es) / gp.k, gp.n, gp.k, "GEMV launch");
    }
    kn_cuda_plan_free(&p);
}

/* Both programs of a decoder plan, else the one; false when the plan does not load. */
static bool plan_shapes(const char *path, shape_list *l)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL, *pg = NULL;
    if (!d || kn_plan_load(path, NULL, d, &g) != KN_OK) {
        kn_diag_destroy(d);
        return false;
    }
    plan_program_shapes(g, l, d);
    if (kn_plan_is_cuda_decoder(g) && kn_plan_load_cuda_prefill(g, NULL, d, &pg) == KN_OK)
        plan_program_shapes(pg, l, d);
    kn_graph_destroy(pg);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    return true;
}

int main(int argc, char **argv)
{
    /* --shape DTYPE,M,N,K and --plan FILE (for --bench) are taken out before the common options */
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    const char **shapes = calloc((size_t)argc + 1, sizeof *shapes);
    int nr = 0, ns = 0;
    shape_list from_plans = {0};
    if (!rest || !shapes)
        return 2;
    rest[nr++] = argv[0];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) {
            shapes[ns++] = argv[++i];
        } else if (strcmp(argv[i], "--plan") == 0 && i + 1 < argc) {
            if (!plan_shapes(argv[++i], &from_plans)) {
                free(rest), free(shapes), free(from_plans.s);
                return 1;
            }
        } else {
            rest[nr++] = argv[i];
        }
    }
    if (from_plans.n) {
        const char **all = realloc(shapes, (size_t)(ns + from_plans.n + 1) * sizeof *all);
        if (!all)
            return 2;
        shapes = all;
        for (int i = 0; i < from_plans.n; i++)
            shapes[ns++] = from_plans.s[i];
    }
    bool bench;
    int rc = kn_kc_start(nr, rest,
                         "usage: kiln-gemv-check [--gpu [--bench [--shape DTYPE,M,N,K ...] [--plan FILE ...]]]\n"
                         "  Checks the dense GEMV (codegen/cuda/gemv_kernels.h) against a double reference with\n"
                         "  the CPU kernels' rounding: NVRTC for sm_80/86/89/90 + PTX and host emulation, or\n"
                         "  (--gpu) on the GPU; --bench adds GEMV vs cuBLASLt timings per shape (--shape, the\n"
                         "  products of --plan, else the decode shapes of SmolLM2-135M and a 1B Llama), printed\n"
                         "  as gemm_choice.tsv rows.\n",
                         &bench);
    if (rc >= 0) {
        free(rest), free(shapes), free(from_plans.s);
        return rc;
    }
    check_choice();
    compile_sweep();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_case(&cases[i]);
    for (size_t i = 0; i < sizeof scases / sizeof *scases; i++)
        run_swiglu_case(&scases[i]);
#ifdef KN_HAVE_CUDA_HEADERS
    if (kn_kc.gpu && bench)
        gemv_bench(shapes, ns);
#endif
    (void)bench;
    printf("%d passed, %d failed\n", n_pass, n_fail);
    free(rest), free(shapes), free(from_plans.s);
    return n_fail ? 1 : 0;
}
