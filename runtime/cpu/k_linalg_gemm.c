/* linalg family: the double-accumulating GEMM behind MatMul and Gemm, with
 * B in double or (weights, read in place) in float, blocked for the caches
 * and optionally split over threads. Every C element is summed in the same
 * order whatever the blocking, the ISA clone or the thread count, so the
 * results are bit-identical across all of them. */
#include "runtime/cpu/util.h"
#include "runtime/cpu/linalg.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The compiler makes AVX-512 and AVX2 copies of the kernels next to the
 * baseline one and picks at load time (glibc ifunc). Neither enables FMA
 * (GCC's avx512f and avx2 targets do not imply it): no contraction, the
 * same roundings as the baseline. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define KN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KN_CLONES
#endif

enum {
    NB = 256, /* columns of a B tile */
    KB = 128, /* rows of a B tile (packed as doubles: 256 KiB, in L2) */
    MR = 4,   /* rows of C per micro-kernel */
    NR = 8,   /* columns of C per micro-kernel (one AVX-512 or two AVX2 registers of doubles) */
    NB_ROWS = 2048, /* columns of a B tile when m < MR (decode: only the row loop runs,
                       streaming longer runs of each B row) */
};

/* Four and eight doubles (GCC/Clang vector extension: one AVX2 or AVX-512
 * register, or several narrower ones); element-wise + and * round exactly
 * as scalar code does. */
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));
typedef double v8d __attribute__((vector_size(64)));

#define LD4D(v, p) memcpy(&(v), (p), sizeof(v4d))
#define ST4D(p, v) memcpy((p), &(v), sizeof(v4d))
#define LD4_double(v, p) LD4D(v, p)
#define LD4_float(v, p)                                                                                                \
    do {                                                                                                              \
        v4f f4_;                                                                                                      \
        memcpy(&f4_, (p), sizeof f4_);                                                                                \
        (v) = __builtin_convertvector(f4_, v4d);                                                                      \
    } while (0)
#define SPLAT(x) ((v4d){(x), (x), (x), (x)})
#define LD8D(v, p) memcpy(&(v), (p), sizeof(v8d))
#define ST8D(p, v) memcpy((p), &(v), sizeof(v8d))
#define SPLAT8(x) ((v8d){(x), (x), (x), (x), (x), (x), (x), (x)})

/* One kernel body for both B types. C[i][j] += sum over p of A[i][p]·B[p][j],
 * added one product at a time in increasing p. Per KB x NB tile of B: the
 * tile is widened into `pack` (row by row, so the weights stream from
 * memory in order) as KB x NR strips; the micro-kernel keeps an MR x NR
 * block of C in registers over a strip; rows and columns left over take
 * the row loop (the same order per element). */
#define GEMM_BODY(BT)                                                                                               \
    int64_t nb = m < MR ? NB_ROWS : NB;                                                                               \
    for (int64_t j0 = j_begin; j0 < j_end; j0 += nb) {                                                                \
        int64_t nj = j_end - j0 < nb ? j_end - j0 : nb;                                                               \
        int64_t nj_blk = nj - nj % NR;                                                                                \
        for (int64_t p0 = 0; p0 < k; p0 += KB) {                                                                      \
            int64_t np = k - p0 < KB ? k - p0 : KB;                                                                   \
            int64_t m_blk = m - m % MR;                                                                               \
            if (m_blk > 0) /* the tile widened, as strips of KB x NR */                                          \
                for (int64_t p = 0; p < np; p++) {                                                                    \
                    const BT *br = b + (p0 + p) * ldb + j0;                                                           \
                    for (int64_t jr = 0; jr < nj_blk; jr += NR)                                                       \
                        for (int q = 0; q < NR; q++)                                                                  \
                            pack[jr * KB + p * NR + q] = (double)br[jr + q];                                            \
                }                                                                                                     \
            for (int64_t jr = 0; m_blk > 0 && jr < nj_blk; jr += NR) {                                                \
                for (int64_t i = 0; i < m_blk; i += MR) {                                                             \
                    double *c0 = cm + i * ldc + j0 + jr, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;              \
                    v8d x0, x1, x2, x3, bv;                                                                           \
                    LD8D(x0, c0), LD8D(x1, c1), LD8D(x2, c2), LD8D(x3, c3);                                           \
                    const double *a0 = a + i * lda + p0, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;              \
                    for (int64_t p = 0; p < np; p++) {                                                                \
                        LD8D(bv, pack + jr * KB + p * NR);                                                                        \
                        x0 += SPLAT8(a0[p]) * bv;                                                                     \
                        x1 += SPLAT8(a1[p]) * bv;                                                                     \
                        x2 += SPLAT8(a2[p]) * bv;                                                                     \
                        x3 += SPLAT8(a3[p]) * bv;                                                                     \
                    }                                                                                                 \
                    ST8D(c0, x0), ST8D(c1, x1), ST8D(c2, x2), ST8D(c3, x3);                                           \
                }                                                                                                     \
            }                                                                                                         \
            /* Leftover rows (all columns of the tile), then leftover                                                 \
             * columns of the blocked rows: C row += a · B row, one p at a                                            \
             * time. */                                                                                               \
            for (int64_t i = 0; i < m; i++) {                                                                         \
                int64_t jb = i < m_blk ? nj_blk : 0;                                                                  \
                if (jb == nj)                                                                                         \
                    continue;                                                                                         \
                double *restrict ci = cm + i * ldc + j0;                                                              \
                const double *ai = a + i * lda + p0;                                                                  \
                int64_t p = 0;                                                                                        \
                for (; p + 4 <= np; p += 4) { /* four products per load/store of C */                               \
                    double a0 = ai[p], a1 = ai[p + 1], a2 = ai[p + 2], a3 = ai[p + 3];                                \
                    const BT *restrict b0 = b + (p0 + p) * ldb + j0;                                                  \
                    const BT *restrict b1 = b0 + ldb, *restrict b2 = b1 + ldb, *restrict b3 = b2 + ldb;              \
                    int64_t j = jb;                                                                                   \
                    for (; j + 4 <= nj; j += 4) {                                                                     \
                        v4d t, bv;                                                                                    \
                        LD4D(t, ci + j);                                                                              \
                        LD4_##BT(bv, b0 + j);                                                                         \
                        t += SPLAT(a0) * bv;                                                                          \
                        LD4_##BT(bv, b1 + j);                                                                         \
                        t += SPLAT(a1) * bv;                                                                          \
                        LD4_##BT(bv, b2 + j);                                                                         \
                        t += SPLAT(a2) * bv;                                                                          \
                        LD4_##BT(bv, b3 + j);                                                                         \
                        t += SPLAT(a3) * bv;                                                                          \
                        ST4D(ci + j, t);                                                                              \
                    }                                                                                                 \
                    for (; j < nj; j++) {                                                                             \
                        double t = ci[j];                                                                             \
                        t += a0 * (double)b0[j];                                                                      \
                        t += a1 * (double)b1[j];                                                                      \
                        t += a2 * (double)b2[j];                                                                      \
                        t += a3 * (double)b3[j];                                                                      \
                        ci[j] = t;                                                                                    \
                    }                                                                                                 \
                }                                                                                                     \
                for (; p < np; p++) {                                                                                 \
                    double av = ai[p];                                                                                \
                    const BT *restrict bp = b + (p0 + p) * ldb + j0;                                                  \
                    for (int64_t j = jb; j < nj; j++)                                                                 \
                        ci[j] += av * (double)bp[j];                                                                  \
                }                                                                                                     \
            }                                                                                                         \
        }                                                                                                             \
    }

KN_CLONES static void gemm_cols_f64(int64_t m, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                                    double *cm, int64_t ldc, int64_t j_begin, int64_t j_end, double *pack)
{
    GEMM_BODY(double)
}

KN_CLONES static void gemm_cols_f32(int64_t m, int64_t k, const double *a, int64_t lda, const float *b, int64_t ldb,
                                    double *cm, int64_t ldc, int64_t j_begin, int64_t j_end, double *pack)
{
    GEMM_BODY(float)
}

/* ---- threads ---- */

typedef struct gemm_job {
    int64_t m, k, lda, ldb, ldc, j_begin, j_end;
    const double *a;
    const void *b;
    bool b_f32;
    double *cm;
    double *pack; /* this job's KB x NB doubles (NULL when m < MR) */
} gemm_job;

static void run_job(const gemm_job *g)
{
    if (g->b_f32)
        gemm_cols_f32(g->m, g->k, g->a, g->lda, g->b, g->ldb, g->cm, g->ldc, g->j_begin, g->j_end, g->pack);
    else
        gemm_cols_f64(g->m, g->k, g->a, g->lda, g->b, g->ldb, g->cm, g->ldc, g->j_begin, g->j_end, g->pack);
}

static void *job_thread(void *p)
{
    run_job(p);
    return NULL;
}

enum { MAX_THREADS = 64 };

/* Threads for one GEMM: KILN_CPU_THREADS (1 to 64; default 1), and only
 * when the product is big enough to pay for starting them. */
static int gemm_threads(int64_t m, int64_t n, int64_t k)
{
    const char *e = getenv("KILN_CPU_THREADS");
    long t = e ? strtol(e, NULL, 10) : 1;
    if (t < 1)
        t = 1;
    if (t > MAX_THREADS)
        t = MAX_THREADS;
    if ((double)m * (double)n * (double)k < 1 << 20)
        return 1;
    int64_t max_by_cols = (n + NR - 1) / NR;
    return (int)(t < max_by_cols ? t : max_by_cols);
}

/* The thread count of an m x n x k GEMM and its packing workspace (kernel
 * scratch: one KB x NB tile of doubles per thread; none when m < MR, where
 * only the row loop runs). */
kn_status kn_linalg_gemm_setup(kn_kctx *c, int64_t m, int64_t n, int64_t k, int *threads, double **pack)
{
    *threads = gemm_threads(m, n, k);
    int64_t len = m >= MR ? (int64_t)*threads * KB * NB : 0;
    return kn_linalg_alloc(c, len, sizeof **pack, (void **)pack);
}

/* Splits the columns into contiguous ranges (multiples of NR) over the
 * threads; the calling thread takes the first. A thread that fails to
 * start has its range run here instead. */
static void gemm_split(gemm_job base, int64_t n, int threads)
{
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    gemm_job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    int64_t strips = (n + NR - 1) / NR;
    for (int i = 0; i < threads; i++) {
        jobs[i] = base;
        int64_t s0 = strips * i / threads, s1 = strips * (i + 1) / threads;
        jobs[i].j_begin = s0 * NR;
        jobs[i].j_end = s1 * NR < n ? s1 * NR : n;
        jobs[i].pack = base.m >= MR ? base.pack + (int64_t)i * KB * NB : NULL;
    }
    for (int i = 1; i < threads; i++)
        started[i] = pthread_create(&tid[i], NULL, job_thread, &jobs[i]) == 0;
    run_job(&jobs[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            run_job(&jobs[i]);
    }
}

/* C[m x n] += A[m x k] · B[k x n], all row-major with leading dimensions
 * in elements, accumulated in double, with `threads` and `pack` from
 * kn_linalg_gemm_setup for the same m, n, k. */
void kn_linalg_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                        double *cm, int64_t ldc, int threads, double *pack)
{
    gemm_job g = {m, k, lda, ldb, ldc, 0, n, a, b, false, cm, pack};
    gemm_split(g, n, threads);
}

/* As kn_linalg_gemm_f64 with B in float (each element widened exactly to
 * double as it is used): weights are read where they lie, not copied. */
void kn_linalg_gemm_f64_f32b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const float *b,
                             int64_t ldb, double *cm, int64_t ldc, int threads, double *pack)
{
    gemm_job g = {m, k, lda, ldb, ldc, 0, n, a, b, true, cm, pack};
    gemm_split(g, n, threads);
}
