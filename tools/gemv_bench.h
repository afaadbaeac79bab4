/* kiln-gemv-check --gpu --bench (included by tools/gemv_check.c in builds
 * with the CUDA headers): per shape, the dense GEMV (both launches when K
 * is split) against cuBLASLt planned as the plan's GEMM step
 * (runtime/cuda/gemm.c), each timed over 20 runs after 3 warm-up ones;
 * prints a BENCH line and a TABLE row for codegen/cuda/gemm_choice.tsv
 * ("TABLE sm_NN DTYPE M N K * gemv|cublaslt", the faster; the products are
 * timed without an epilogue, and the row applies to every epilogue: the
 * GEMV applies its epilogue in the same kernel). */
#include "runtime/cuda/gemm.h"

#include <time.h>

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double time_gemv(kn_dtype dt, int64_t m, int64_t n, int64_t k, void *a, void *b, void *y, void *part)
{
    kn_gemv_spec sp = {dt, (int)m, kn_gemv_vec(dt, n), false, false, false, NULL};
    kn_gemv_params p;
    memset(&p, 0, sizeof p);
    p.n = n, p.k = k, p.alpha = p.beta = 1;
    kn_dim3 g = kn_gemv_plan(sp.vec, &p);
    char err[256];
    char *src = kn_gemv_source(&sp, err, sizeof err);
    kn_kc_fn fm;
    bool ok = src && kn_kc_build(src, KN_GEMV_ENTRY, &fm);
    free(src);
    unsigned *zero = calloc(g.x, sizeof *zero);
    void *cnt = ok && zero ? kn_kc_upload(zero, (size_t)g.x * sizeof *zero) : NULL; /* the K split's counters */
    free(zero);
    if (!ok || !cnt)
        return INFINITY;
    /* one launch per product, as the plans run it (the last block of a K split adds the partials) */
    void *args[8] = {&a, &b, &a, &a, &y, &part, &cnt, &p};
    double t0 = 0;
    for (int i = 0; i < 23; i++) {
        if (i == 3) {
            kn_kc.cu->stream_synchronize(NULL);
            t0 = seconds();
        }
        kn_kc.cu->launch_kernel((CUfunction)fm.func, g.x, g.y, g.z, KN_GEMV_THREADS, 1, 1, 0, NULL, args, NULL);
    }
    bool synced = kn_kc.cu->stream_synchronize(NULL) == CUDA_SUCCESS;
    kn_kc_free(cnt);
    if (!synced)
        return INFINITY;
    return (seconds() - t0) / 20.0;
}

static double time_cublaslt(kn_dtype dt, int64_t m, int64_t n, int64_t k, void *a, void *b, void *y, kn_diag *d)
{
    const kn_cublaslt *lt;
    if (kn_cuda_blaslt_get(d, &lt) != KN_OK)
        return INFINITY;
    kn_plan_cu_gemm gm;
    memset(&gm, 0, sizeof gm);
    gm.m = m, gm.n = n, gm.k = k;
    gm.lda = k, gm.ldb = n, gm.ldc = n, gm.ldd = n;
    gm.batch = 1;
    gm.alpha = 1, gm.beta = 0;
    gm.dtype = (int32_t)dt;
    kn_cuda_gemm g;
    size_t max_ws = 32u << 20;
    if (kn_cuda_gemm_plan(lt, &gm, (CUdeviceptr)(uintptr_t)a, (CUdeviceptr)(uintptr_t)b, 0, (CUdeviceptr)(uintptr_t)y,
                          0, max_ws, "bench", d, &g) != KN_OK)
        return INFINITY;
    void *ws = kn_kc_alloc(g.workspace ? g.workspace : 16);
    double t0 = 0;
    bool ok = ws != NULL;
    for (int i = 0; ok && i < 23; i++) {
        if (i == 3) {
            kn_kc.cu->stream_synchronize(NULL);
            t0 = seconds();
        }
        ok = kn_cuda_gemm_run(lt, &g, (CUdeviceptr)(uintptr_t)ws, g.workspace, NULL, "bench", d) == KN_OK;
    }
    ok = ok && kn_kc.cu->stream_synchronize(NULL) == CUDA_SUCCESS;
    double t = ok ? (seconds() - t0) / 20.0 : INFINITY;
    kn_cuda_gemm_release(lt, &g);
    kn_kc_free(ws);
    return t;
}

static void gemv_bench(const char **shapes, int n_shapes)
{
    /* the decode products (M = 1) of SmolLM2-135M (hidden 576, kv 192, gate|up 2 x 1536, vocab 49152)
     * and of the 1B Llama of models-big/llama1b (2048, kv 256, gate|up 2 x 5632, vocab 32000), and the
     * same at M = 4, float16 and float32 */
    static const int64_t nk[][2] = {{576, 576},   {192, 576},  {3072, 576},   {576, 1536},  {49152, 576},
                                    {2048, 2048}, {256, 2048}, {11264, 2048}, {2048, 5632}, {32000, 2048}};
    kn_diag *d = kn_diag_create(NULL, stderr);
    int total = n_shapes ? n_shapes : (int)(sizeof nk / sizeof *nk) * 4;
    printf("BENCH GEMV vs cuBLASLt on sm_%u (TABLE rows: paste into codegen/cuda/gemm_choice.tsv)\n", kn_kc.arch);
    for (int i = 0; i < total; i++) {
        kn_dtype dt;
        int64_t m, n, k;
        if (n_shapes) {
            char dts[16];
            long long mm, nn, kk;
            if (sscanf(shapes[i], "%15[a-z0-9],%lld,%lld,%lld", dts, &mm, &nn, &kk) != 4 || mm < 1 ||
                mm > KN_GEMV_MAX_ROWS || nn < 1 || kk < 1 ||
                !(strcmp(dts, "float32") == 0 || strcmp(dts, "float16") == 0 || strcmp(dts, "bfloat16") == 0)) {
                printf("BENCH --shape %s: expected DTYPE,M,N,K (float32|float16|bfloat16, M 1-%d)\n", shapes[i],
                       KN_GEMV_MAX_ROWS);
                n_fail++;
                continue;
            }
            dt = strcmp(dts, "float32") == 0 ? KN_F32 : strcmp(dts, "float16") == 0 ? KN_F16 : KN_BF16;
            m = mm, n = nn, k = kk;
        } else {
            int s = i % (int)(sizeof nk / sizeof *nk), v = i / (int)(sizeof nk / sizeof *nk);
            dt = v & 1 ? KN_F32 : KN_F16;
            m = v & 2 ? 4 : 1;
            n = nk[s][0], k = nk[s][1];
        }
        size_t es = kn_dt_size(dt);
        kn_gemv_params p;
        memset(&p, 0, sizeof p);
        p.n = n, p.k = k;
        kn_gemv_plan(kn_gemv_vec(dt, n), &p);
        void *a = kn_kc_alloc((size_t)(m * k) * es), *b = kn_kc_alloc((size_t)(k * n) * es);
        void *y = kn_kc_alloc((size_t)(m * n) * es), *part = kn_kc_alloc(kn_gemv_scratch_bytes((int)m, &p) + 16);
        double tg = INFINITY, tl = INFINITY;
        if (a && b && y && part) {
            tg = time_gemv(dt, m, n, k, a, b, y, part);
            tl = time_cublaslt(dt, m, n, k, a, b, y, d);
        }
        double bytes = (double)(k * n) * (double)es;
        printf("BENCH %-8s M %lld N %6lld K %5lld: gemv %7.1f us (%4.0f GB/s, %lld splits), cuBLASLt %7.1f us "
               "(%4.0f GB/s)\n",
               kn_dtype_name(dt), (long long)m, (long long)n, (long long)k, tg * 1e6, bytes / tg / 1e9,
               (long long)p.splits, tl * 1e6, bytes / tl / 1e9);
        if (isfinite(tg) || isfinite(tl))
            printf("TABLE\tsm_%u\t%s\t%lld\t%lld\t%lld\t*\t%s\n", kn_kc.arch, kn_dtype_name(dt), (long long)m,
                   (long long)n, (long long)k, tg <= tl ? "gemv" : "cublaslt");
        kn_kc_free(a), kn_kc_free(b), kn_kc_free(y), kn_kc_free(part);
    }
    kn_diag_destroy(d);
}
