/* linalg family: the double-accumulating GEMM behind MatMul and Gemm, with
 * B in double or (weights, read in place) in float, blocked for the caches
 * and optionally split over threads. Every C element is summed in the same
 * order whatever the blocking, the ISA clone or the thread count, so the
 * results are bit-identical across all of them. */
#include "runtime/cpu/util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void kn_linalg_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                        double *cm, int64_t ldc);
void kn_linalg_gemm_f64_f32b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const float *b,
                             int64_t ldb, double *cm, int64_t ldc);

/* The compiler makes an AVX2 copy of the kernels next to the baseline one
 * and picks at load time (glibc ifunc). AVX2 without FMA: no contraction,
 * the same roundings as the baseline. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define KN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define KN_CLONES
#endif

enum {
    NB = 256, /* columns of a B tile */
    KB = 128, /* rows of a B tile (KB x NB floats or doubles: 128/256 KiB, L2) */
    MR = 4,   /* rows of C per micro-kernel */
    NR = 8,   /* columns of C per micro-kernel (two AVX2 registers of doubles) */
    NB_ROWS = 2048, /* columns of a B tile when m < MR (decode: only the row loop runs,
                       streaming longer runs of each B row) */
};

/* Four doubles (GCC/Clang vector extension: one AVX2 register, two SSE2
 * ones); element-wise + and * round exactly as scalar code does. */
typedef double v4d __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

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

/* One kernel body for both B types. C[i][j] += sum over p of A[i][p]·B[p][j],
 * added one product at a time in increasing p: the micro-kernel keeps an
 * MR x NR block of C in registers (8 vectors) over a KB-deep slice; rows
 * and columns left over take the row loop (the same order per element). */
#define GEMM_BODY(BT)                                                                                               \
    double pk[KB * NR];                                                                                               \
    int64_t nb = m < MR ? NB_ROWS : NB;                                                                               \
    for (int64_t j0 = j_begin; j0 < j_end; j0 += nb) {                                                                \
        int64_t nj = j_end - j0 < nb ? j_end - j0 : nb;                                                               \
        int64_t nj_blk = nj - nj % NR;                                                                                \
        for (int64_t p0 = 0; p0 < k; p0 += KB) {                                                                      \
            int64_t np = k - p0 < KB ? k - p0 : KB;                                                                   \
            int64_t m_blk = m - m % MR;                                                                               \
            for (int64_t jr = 0; m_blk > 0 && jr < nj_blk; jr += NR) {                                                \
                /* The KB x NR strip of B, widened and packed once for all                                            \
                 * the row blocks: contiguous, in L1. */                                                             \
                const BT *bs = b + p0 * ldb + j0 + jr;                                                                \
                for (int64_t p = 0; p < np; p++)                                                                      \
                    for (int q = 0; q < NR; q++)                                                                      \
                        pk[p * NR + q] = (double)bs[p * ldb + q];                                                     \
                for (int64_t i = 0; i < m_blk; i += MR) {                                                             \
                    double *c0 = cm + i * ldc + j0 + jr, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;              \
                    v4d x00, x01, x10, x11, x20, x21, x30, x31, b0, b1, av;                                           \
                    LD4D(x00, c0), LD4D(x01, c0 + 4), LD4D(x10, c1), LD4D(x11, c1 + 4);                               \
                    LD4D(x20, c2), LD4D(x21, c2 + 4), LD4D(x30, c3), LD4D(x31, c3 + 4);                               \
                    const double *a0 = a + i * lda + p0, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;              \
                    for (int64_t p = 0; p < np; p++) {                                                                \
                        LD4D(b0, pk + p * NR);                                                                        \
                        LD4D(b1, pk + p * NR + 4);                                                                    \
                        av = SPLAT(a0[p]);                                                                            \
                        x00 += av * b0;                                                                               \
                        x01 += av * b1;                                                                               \
                        av = SPLAT(a1[p]);                                                                            \
                        x10 += av * b0;                                                                               \
                        x11 += av * b1;                                                                               \
                        av = SPLAT(a2[p]);                                                                            \
                        x20 += av * b0;                                                                               \
                        x21 += av * b1;                                                                               \
                        av = SPLAT(a3[p]);                                                                            \
                        x30 += av * b0;                                                                               \
                        x31 += av * b1;                                                                               \
                    }                                                                                                 \
                    ST4D(c0, x00), ST4D(c0 + 4, x01), ST4D(c1, x10), ST4D(c1 + 4, x11);                               \
                    ST4D(c2, x20), ST4D(c2 + 4, x21), ST4D(c3, x30), ST4D(c3 + 4, x31);                               \
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
                                    double *cm, int64_t ldc, int64_t j_begin, int64_t j_end)
{
    GEMM_BODY(double)
}

KN_CLONES static void gemm_cols_f32(int64_t m, int64_t k, const double *a, int64_t lda, const float *b, int64_t ldb,
                                    double *cm, int64_t ldc, int64_t j_begin, int64_t j_end)
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
} gemm_job;

static void run_job(const gemm_job *g)
{
    if (g->b_f32)
        gemm_cols_f32(g->m, g->k, g->a, g->lda, g->b, g->ldb, g->cm, g->ldc, g->j_begin, g->j_end);
    else
        gemm_cols_f64(g->m, g->k, g->a, g->lda, g->b, g->ldb, g->cm, g->ldc, g->j_begin, g->j_end);
}

static void *job_thread(void *p)
{
    run_job(p);
    return NULL;
}

/* Threads for one GEMM: KILN_CPU_THREADS (1 to 64; default 1), and only
 * when the product is big enough to pay for starting them. */
static int n_threads_for(int64_t m, int64_t n, int64_t k)
{
    enum { MAX_THREADS = 64 };
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

/* Splits the columns into contiguous ranges (multiples of NR) over the
 * threads; the calling thread takes the first. A thread that fails to
 * start has its range run here instead. */
static void gemm_split(gemm_job base, int64_t n)
{
    int t = n_threads_for(base.m, n, base.k);
    if (t <= 1) {
        base.j_begin = 0;
        base.j_end = n;
        run_job(&base);
        return;
    }
    gemm_job jobs[64];
    pthread_t tid[64];
    bool started[64] = {false};
    int64_t strips = (n + NR - 1) / NR;
    for (int i = 0; i < t; i++) {
        jobs[i] = base;
        int64_t s0 = strips * i / t, s1 = strips * (i + 1) / t;
        jobs[i].j_begin = s0 * NR;
        jobs[i].j_end = s1 * NR < n ? s1 * NR : n;
    }
    for (int i = 1; i < t; i++)
        started[i] = pthread_create(&tid[i], NULL, job_thread, &jobs[i]) == 0;
    run_job(&jobs[0]);
    for (int i = 1; i < t; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            run_job(&jobs[i]);
    }
}

/* C[m x n] += A[m x k] · B[k x n], all row-major with leading dimensions
 * in elements, accumulated in double. */
void kn_linalg_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                        double *cm, int64_t ldc)
{
    gemm_job g = {m, k, lda, ldb, ldc, 0, n, a, b, false, cm};
    gemm_split(g, n);
}

/* As kn_linalg_gemm_f64 with B in float (each element widened exactly to
 * double as it is used): weights are read where they lie, not copied. */
void kn_linalg_gemm_f64_f32b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const float *b,
                             int64_t ldb, double *cm, int64_t ldc)
{
    gemm_job g = {m, k, lda, ldb, ldc, 0, n, a, b, true, cm};
    gemm_split(g, n);
}
