/* linalg family: the double-accumulating GEMM behind MatMul and Gemm, with
 * B in double or (weights, read in place) in float, float16 or bfloat16,
 * blocked for the caches and optionally split over threads. Every C
 * element is summed in the same order whatever the blocking, the B type,
 * the ISA clone or the thread count, so the results are bit-identical
 * across all of them. */
#include "runtime/cpu/util.h"
#include "runtime/cpu/linalg.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define KN_X86 1
#else
#define KN_X86 0
#endif

/* Double B (the GEMMs of Conv, MatMulInteger, ...): the compiler makes
 * AVX-512 and AVX2 copies of the kernel next to the baseline one and picks
 * at load time (glibc ifunc). float32, float16 and bfloat16 B (weights)
 * have the same three copies written out, picked per GEMM (kn_gemm_isa), so
 * that the tests can run each. No copy enables FMA (GCC's avx512f and avx2
 * targets do not imply it): no contraction, the same roundings as the
 * baseline. */
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
typedef float v8f __attribute__((vector_size(32)));

#define LD4D(v, p) memcpy(&(v), (p), sizeof(v4d))
#define ST4D(p, v) memcpy((p), &(v), sizeof(v4d))
#define SPLAT(x) ((v4d){(x), (x), (x), (x)})
#define LD8D(v, p) memcpy(&(v), (p), sizeof(v8d))
#define ST8D(p, v) memcpy((p), &(v), sizeof(v8d))
#define SPLAT8(x) ((v8d){(x), (x), (x), (x), (x), (x), (x), (x)})

/* Per B element type T, the three ways the kernel body reads B, each
 * widening exactly to double: LD4_T(v, p) and LD8_T(v, p) four or eight
 * elements into a v4d or v8d, WIDEN_T(x) one. */
_Static_assert(NR == 8, "LD8 widens one NR-wide strip row");

#define WIDEN_double(x) (x)
#define LD4_double(v, p) LD4D(v, p)
#define LD8_double(v, p) LD8D(v, p)

/* Eight floats to eight doubles. The AVX-512 copies below make it one
 * vcvtps2pd into a 512-bit register (GCC splits the generic conversion in
 * two under its 256-bit preference, which costs a decode step ~15%). */
#define CVT8_PD(f) __builtin_convertvector((v8f)(f), v8d)

#define WIDEN_float(x) ((double)(x))
#define LD4_float(v, p)                                                                                               \
    do {                                                                                                              \
        v4f f4_;                                                                                                      \
        memcpy(&f4_, (p), sizeof f4_);                                                                                \
        (v) = __builtin_convertvector(f4_, v4d);                                                                      \
    } while (0)
#define LD8_float(v, p)                                                                                               \
    do {                                                                                                              \
        v8f f8_;                                                                                                      \
        memcpy(&f8_, (p), sizeof f8_);                                                                                \
        (v) = CVT8_PD(f8_);                                                                                           \
    } while (0)

/* Half-precision B, as stored (the element type names only select the
 * macros). bfloat16 is the top half of a float32: a shift, in any ISA. */
typedef uint16_t f16_bits;
typedef uint16_t bf16_bits;
typedef uint16_t v4hu __attribute__((vector_size(8)));
typedef uint16_t v8hu __attribute__((vector_size(16)));
typedef uint32_t v4su __attribute__((vector_size(16)));
typedef uint32_t v8su __attribute__((vector_size(32)));

static inline double bf16_widen(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}

#define WIDEN_bf16_bits(x) bf16_widen(x)
#define LD4_bf16_bits(v, p)                                                                                           \
    do {                                                                                                              \
        v4hu h_;                                                                                                      \
        memcpy(&h_, (p), sizeof h_);                                                                                  \
        v4su u_ = __builtin_convertvector(h_, v4su) << 16;                                                            \
        (v) = __builtin_convertvector((v4f)u_, v4d);                                                                  \
    } while (0)
#define LD8_bf16_bits(v, p)                                                                                           \
    do {                                                                                                              \
        v8hu h_;                                                                                                      \
        memcpy(&h_, (p), sizeof h_);                                                                                  \
        v8su u_ = __builtin_convertvector(h_, v8su) << 16;                                                            \
        (v) = CVT8_PD(u_);                                                                                            \
    } while (0)

/* float16 in portable code: kn_f16_to_f32 (util.c) lane by lane without
 * branches, so that it vectorizes; the same float for every half (rebias
 * the exponent; Inf/NaN get the top one; zero and subnormals are made
 * normal and 2^-14 subtracted, exactly, as a normal float). */
#define F16_SOFT(VU, VF, hv, out)                                                                                     \
    do {                                                                                                              \
        VU sx_ = __builtin_convertvector(hv, VU);                                                                     \
        VU so_ = (sx_ & 0x7fffu) << 13;                                                                               \
        VU se_ = so_ & 0x0f800000u;                                                                                   \
        VU sinf_ = (VU)(se_ == 0x0f800000u), sden_ = (VU)(se_ == 0u);                                                 \
        so_ += 0x38000000u + (sinf_ & 0x38000000u) + (sden_ & 0x00800000u);                                           \
        VF sf_ = (VF)so_ - 6.103515625e-05f; /* 2^-14 */                                                              \
        so_ = (sden_ & (VU)sf_) | (~sden_ & so_);                                                                     \
        (out) = (VF)(so_ | (sx_ & 0x8000u) << 16);                                                                    \
    } while (0)

/* One kernel body for every B type. C[i][j] += sum over p of A[i][p]·B[p][j],
 * added one product at a time in increasing p. Per KB x NB tile of B: the
 * tile is widened into `pack` (row by row, so the weights stream from
 * memory in order) as KB x NR strips; the micro-kernel keeps an MR x NR
 * block of C in registers over a strip; rows and columns left over take
 * the row loop (the same order per element). */
#define GEMM_BODY(BT)                                                                                                 \
    int64_t nb = m < MR ? NB_ROWS : NB;                                                                               \
    for (int64_t j0 = j_begin; j0 < j_end; j0 += nb) {                                                                \
        int64_t nj = j_end - j0 < nb ? j_end - j0 : nb;                                                               \
        int64_t nj_blk = nj - nj % NR;                                                                                \
        for (int64_t p0 = 0; p0 < k; p0 += KB) {                                                                      \
            int64_t np = k - p0 < KB ? k - p0 : KB;                                                                   \
            int64_t m_blk = m - m % MR;                                                                               \
            if (m_blk > 0) /* the tile widened, as strips of KB x NR */                                               \
                for (int64_t p = 0; p < np; p++) {                                                                    \
                    const BT *br = b + (p0 + p) * ldb + j0;                                                           \
                    for (int64_t jr = 0; jr < nj_blk; jr += NR) {                                                     \
                        v8d w_;                                                                                       \
                        LD8_##BT(w_, br + jr);                                                                        \
                        ST8D(pack + jr * KB + p * NR, w_);                                                            \
                    }                                                                                                 \
                }                                                                                                     \
            for (int64_t jr = 0; m_blk > 0 && jr < nj_blk; jr += NR) {                                                \
                for (int64_t i = 0; i < m_blk; i += MR) {                                                             \
                    double *c0 = cm + i * ldc + j0 + jr, *c1 = c0 + ldc, *c2 = c1 + ldc, *c3 = c2 + ldc;              \
                    v8d x0, x1, x2, x3, bv;                                                                           \
                    LD8D(x0, c0), LD8D(x1, c1), LD8D(x2, c2), LD8D(x3, c3);                                           \
                    const double *a0 = a + i * lda + p0, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;              \
                    for (int64_t p = 0; p < np; p++) {                                                                \
                        LD8D(bv, pack + jr * KB + p * NR);                                                            \
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
                for (; p + 4 <= np; p += 4) { /* four products per load/store of C */                                 \
                    double a0 = ai[p], a1 = ai[p + 1], a2 = ai[p + 2], a3 = ai[p + 3];                                \
                    const BT *restrict b0 = b + (p0 + p) * ldb + j0;                                                  \
                    const BT *restrict b1 = b0 + ldb, *restrict b2 = b1 + ldb, *restrict b3 = b2 + ldb;               \
                    int64_t j = jb;                                                                                   \
                    for (; j + 8 <= nj; j += 8) {                                                                     \
                        v8d t, bv;                                                                                    \
                        LD8D(t, ci + j);                                                                              \
                        LD8_##BT(bv, b0 + j);                                                                         \
                        t += SPLAT8(a0) * bv;                                                                         \
                        LD8_##BT(bv, b1 + j);                                                                         \
                        t += SPLAT8(a1) * bv;                                                                         \
                        LD8_##BT(bv, b2 + j);                                                                         \
                        t += SPLAT8(a2) * bv;                                                                         \
                        LD8_##BT(bv, b3 + j);                                                                         \
                        t += SPLAT8(a3) * bv;                                                                         \
                        ST8D(ci + j, t);                                                                              \
                    }                                                                                                 \
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
                        t += a0 * WIDEN_##BT(b0[j]);                                                                  \
                        t += a1 * WIDEN_##BT(b1[j]);                                                                  \
                        t += a2 * WIDEN_##BT(b2[j]);                                                                  \
                        t += a3 * WIDEN_##BT(b3[j]);                                                                  \
                        ci[j] = t;                                                                                    \
                    }                                                                                                 \
                }                                                                                                     \
                for (; p < np; p++) {                                                                                 \
                    double av = ai[p];                                                                                \
                    const BT *restrict bp = b + (p0 + p) * ldb + j0;                                                  \
                    for (int64_t j = jb; j < nj; j++)                                                                 \
                        ci[j] += av * WIDEN_##BT(bp[j]);                                                              \
                }                                                                                                     \
            }                                                                                                         \
        }                                                                                                             \
    }

KN_CLONES static void gemm_cols_f64(int64_t m, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                                    double *cm, int64_t ldc, int64_t j_begin, int64_t j_end, double *pack)
{
    GEMM_BODY(double)
}

static void gemm_cols_f32(int64_t m, int64_t k, const double *a, int64_t lda, const float *b, int64_t ldb,
                          double *cm, int64_t ldc, int64_t j_begin, int64_t j_end, double *pack)
{
    GEMM_BODY(float)
}

static void gemm_cols_bf16(int64_t m, int64_t k, const double *a, int64_t lda, const bf16_bits *b, int64_t ldb,
                           double *cm, int64_t ldc, int64_t j_begin, int64_t j_end, double *pack)
{
    GEMM_BODY(bf16_bits)
}

/* float16 B, baseline: the portable widening. */
#define WIDEN_f16_bits(x) ((double)kn_f16_to_f32(x))
#define LD4_f16_bits(v, p)                                                                                            \
    do {                                                                                                              \
        v4hu h_;                                                                                                      \
        v4f f_;                                                                                                       \
        memcpy(&h_, (p), sizeof h_);                                                                                  \
        F16_SOFT(v4su, v4f, h_, f_);                                                                                  \
        (v) = __builtin_convertvector(f_, v4d);                                                                       \
    } while (0)
#define LD8_f16_bits(v, p)                                                                                            \
    do {                                                                                                              \
        v8hu h_;                                                                                                      \
        v8f f_;                                                                                                       \
        memcpy(&h_, (p), sizeof h_);                                                                                  \
        F16_SOFT(v8su, v8f, h_, f_);                                                                                  \
        (v) = __builtin_convertvector(f_, v8d);                                                                       \
    } while (0)

static void gemm_cols_f16(int64_t m, int64_t k, const double *a, int64_t lda, const f16_bits *b, int64_t ldb,
                               double *cm, int64_t ldc, int64_t j_begin, int64_t j_end, double *pack)
{
    GEMM_BODY(f16_bits)
}

#if KN_X86
/* The AVX-512 and AVX2 copies for float32, float16 and bfloat16 B; the
 * AVX-512 ones with the one-instruction CVT8_PD. float16 is widened there by
 * the CPU's conversion (F16C, exact for every half; every AVX-512 or AVX2
 * CPU has it). */
#undef WIDEN_f16_bits
#undef LD4_f16_bits
#undef LD8_f16_bits
#define WIDEN_f16_bits(x) ((double)_cvtsh_ss(x))
#define LD4_f16_bits(v, p)                                                                                            \
    do {                                                                                                              \
        __m128 f_ = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(const void *)(p)));                                \
        (v) = __builtin_convertvector((v4f)f_, v4d);                                                                  \
    } while (0)
#define LD8_f16_bits(v, p)                                                                                            \
    do {                                                                                                              \
        __m256 f_ = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p)));                             \
        (v) = CVT8_PD(f_);                                                                                            \
    } while (0)

#undef CVT8_PD
#define CVT8_PD(f) ((v8d)_mm512_cvtps_pd((__m256)(f)))
__attribute__((target("avx512f"))) static void gemm_cols_f32_avx512(int64_t m, int64_t k, const double *a, int64_t lda,
                                                                     const float *b, int64_t ldb, double *cm,
                                                                     int64_t ldc, int64_t j_begin, int64_t j_end,
                                                                     double *pack)
{
    GEMM_BODY(float)
}

__attribute__((target("avx512f"))) static void gemm_cols_bf16_avx512(int64_t m, int64_t k, const double *a,
                                                                      int64_t lda, const bf16_bits *b, int64_t ldb,
                                                                      double *cm, int64_t ldc, int64_t j_begin,
                                                                      int64_t j_end, double *pack)
{
    GEMM_BODY(bf16_bits)
}

__attribute__((target("avx512f,f16c"))) static void gemm_cols_f16_avx512(int64_t m, int64_t k, const double *a,
                                                                          int64_t lda, const f16_bits *b, int64_t ldb,
                                                                          double *cm, int64_t ldc, int64_t j_begin,
                                                                          int64_t j_end, double *pack)
{
    GEMM_BODY(f16_bits)
}

#undef CVT8_PD
#define CVT8_PD(f) __builtin_convertvector((v8f)(f), v8d)
__attribute__((target("avx2"))) static void gemm_cols_f32_avx2(int64_t m, int64_t k, const double *a, int64_t lda,
                                                                const float *b, int64_t ldb, double *cm, int64_t ldc,
                                                                int64_t j_begin, int64_t j_end, double *pack)
{
    GEMM_BODY(float)
}

__attribute__((target("avx2"))) static void gemm_cols_bf16_avx2(int64_t m, int64_t k, const double *a, int64_t lda,
                                                                 const bf16_bits *b, int64_t ldb, double *cm,
                                                                 int64_t ldc, int64_t j_begin, int64_t j_end,
                                                                 double *pack)
{
    GEMM_BODY(bf16_bits)
}

__attribute__((target("avx2,f16c"))) static void gemm_cols_f16_avx2(int64_t m, int64_t k, const double *a, int64_t lda,
                                                                     const f16_bits *b, int64_t ldb, double *cm,
                                                                     int64_t ldc, int64_t j_begin, int64_t j_end,
                                                                     double *pack)
{
    GEMM_BODY(f16_bits)
}

/* n float16 values widened with F16C (the transposed path's rows). */
__attribute__((target("avx,f16c"))) static void f16_run_f16c(const uint16_t *s, int64_t n, double *d)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(s + i)));
        _mm256_storeu_pd(d + i, _mm256_cvtps_pd(_mm256_castps256_ps128(f)));
        _mm256_storeu_pd(d + i + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1)));
    }
    for (; i < n; i++)
        d[i] = _cvtsh_ss(s[i]);
}
#endif

bool kn_linalg_gemm_isa_has(kn_gemm_isa h)
{
    switch (h) {
    case KN_GEMM_ISA_AUTO:
    case KN_GEMM_ISA_BASE: return true;
#if KN_X86
    case KN_GEMM_ISA_AVX512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("f16c");
    case KN_GEMM_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
    case KN_GEMM_ISA_AVX512:
    case KN_GEMM_ISA_AVX2: return false;
#endif
    }
    return false;
}

/* The way asked for when the CPU has it, else the best it has. */
static kn_gemm_isa isa_pick(kn_gemm_isa h)
{
    if (h != KN_GEMM_ISA_AUTO && kn_linalg_gemm_isa_has(h))
        return h;
    if (kn_linalg_gemm_isa_has(KN_GEMM_ISA_AVX512))
        return KN_GEMM_ISA_AVX512;
    if (kn_linalg_gemm_isa_has(KN_GEMM_ISA_AVX2))
        return KN_GEMM_ISA_AVX2;
    return KN_GEMM_ISA_BASE;
}

/* n consecutive elements of B (any of its types) widened into d. */
static void widen_run(const kn_gemm_b *b, int64_t off, int64_t n, double *d)
{
    switch (b->dtype) {
    case KN_F64: memcpy(d, (const double *)b->data + off, (size_t)n * sizeof *d); return;
    case KN_F32:
        for (int64_t i = 0; i < n; i++)
            d[i] = ((const float *)b->data)[off + i];
        return;
    case KN_BF16:
        for (int64_t i = 0; i < n; i++)
            d[i] = bf16_widen(((const uint16_t *)b->data)[off + i]);
        return;
    default: break;
    }
    const uint16_t *s = (const uint16_t *)b->data + off;
#if KN_X86
    if (b->isa != KN_GEMM_ISA_BASE) {
        f16_run_f16c(s, n, d);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        d[i] = kn_f16_to_f32(s[i]);
}

/* ---- threads ---- */

typedef struct gemm_job {
    int64_t m, k, lda, ldc, j_begin, j_end;
    const double *a;
    kn_gemm_b b; /* b.isa resolved (never AUTO) */
    double *cm;
    double *pack; /* this job's KB x NB doubles (NULL when m < MR) */
    double *tile; /* transposed B: this job's KB x NB doubles of widened B */
} gemm_job;

/* B stored [n, k] (Gemm's transB): per KB x NB tile, its transpose widened
 * into `tile`, then the double kernel over that. The tiles of a column
 * range are taken in increasing p, and within one the kernel adds in
 * increasing p, so each element still sums its products in that order. */
static void gemm_cols_trans(const gemm_job *g)
{
    double row[KB];
    for (int64_t j0 = g->j_begin; j0 < g->j_end; j0 += NB) {
        int64_t nj = g->j_end - j0 < NB ? g->j_end - j0 : NB;
        for (int64_t p0 = 0; p0 < g->k; p0 += KB) {
            int64_t np = g->k - p0 < KB ? g->k - p0 : KB;
            for (int64_t j = 0; j < nj; j++) {
                widen_run(&g->b, (j0 + j) * g->b.ld + p0, np, row);
                for (int64_t p = 0; p < np; p++)
                    g->tile[p * nj + j] = row[p];
            }
            gemm_cols_f64(g->m, np, g->a + p0, g->lda, g->tile, nj, g->cm + j0, g->ldc, 0, nj, g->pack);
        }
    }
}

static void run_job(const gemm_job *g)
{
    const kn_gemm_b *b = &g->b;
    if (b->trans) {
        gemm_cols_trans(g);
        return;
    }
    /* the copy for b->isa (AVX-512, AVX2 or the baseline) of a kernel */
#define RUN_COPY(name)                                                                                                \
    name(g->m, g->k, g->a, g->lda, b->data, b->ld, g->cm, g->ldc, g->j_begin, g->j_end, g->pack)
#if KN_X86
#define RUN_ISA(name)                                                                                                 \
    (b->isa == KN_GEMM_ISA_AVX512 ? RUN_COPY(name##_avx512)                                                           \
     : b->isa == KN_GEMM_ISA_AVX2 ? RUN_COPY(name##_avx2)                                                             \
                                  : RUN_COPY(name))
#else
#define RUN_ISA(name) RUN_COPY(name)
#endif
    switch (b->dtype) {
    case KN_F32: RUN_ISA(gemm_cols_f32); break;
    case KN_F16: RUN_ISA(gemm_cols_f16); break;
    case KN_BF16: RUN_ISA(gemm_cols_bf16); break;
    default: RUN_COPY(gemm_cols_f64); break;
    }
#undef RUN_ISA
#undef RUN_COPY
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

/* Workspace doubles per thread: a packed KB x NB tile when the micro-kernel
 * runs (m >= MR), and one more for the widened transpose of B. */
static int64_t per_thread(int64_t m, bool b_trans)
{
    return ((m >= MR ? 1 : 0) + (b_trans ? 1 : 0)) * (int64_t)KB * NB;
}

int kn_linalg_gemm_workspace(int64_t m, int64_t n, int64_t k, bool b_trans, int64_t *pack_len)
{
    int t = gemm_threads(m, n, k);
    *pack_len = t * per_thread(m, b_trans);
    return t;
}

/* The thread count of an m x n x k GEMM and its workspace (kernel scratch,
 * a few hundred KiB per thread whatever the size of B). */
kn_status kn_linalg_gemm_setup_b(kn_kctx *c, int64_t m, int64_t n, int64_t k, bool b_trans, int *threads,
                                 double **pack)
{
    int64_t len;
    *threads = kn_linalg_gemm_workspace(m, n, k, b_trans, &len);
    return kn_linalg_alloc(c, len, sizeof **pack, (void **)pack);
}

kn_status kn_linalg_gemm_setup(kn_kctx *c, int64_t m, int64_t n, int64_t k, int *threads, double **pack)
{
    return kn_linalg_gemm_setup_b(c, m, n, k, false, threads, pack);
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
    int64_t strips = (n + NR - 1) / NR, len = per_thread(base.m, base.b.trans);
    for (int i = 0; i < threads; i++) {
        jobs[i] = base;
        int64_t s0 = strips * i / threads, s1 = strips * (i + 1) / threads;
        jobs[i].j_begin = s0 * NR;
        jobs[i].j_end = s1 * NR < n ? s1 * NR : n;
        double *w = len ? base.pack + (int64_t)i * len : NULL;
        jobs[i].pack = base.m >= MR ? w : NULL;
        jobs[i].tile = base.b.trans ? w + (base.m >= MR ? (int64_t)KB * NB : 0) : NULL;
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

void kn_linalg_gemm_b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const kn_gemm_b *b, double *cm,
                      int64_t ldc, int threads, double *pack)
{
    gemm_job g = {.m = m, .k = k, .lda = lda, .ldc = ldc, .j_end = n, .a = a, .b = *b, .cm = cm, .pack = pack};
    g.b.isa = isa_pick(b->isa);
    gemm_split(g, n, threads);
}

/* C[m x n] += A[m x k] · B[k x n], all row-major with leading dimensions
 * in elements, accumulated in double, with `threads` and `pack` from
 * kn_linalg_gemm_setup for the same m, n, k. */
void kn_linalg_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                        double *cm, int64_t ldc, int threads, double *pack)
{
    kn_gemm_b gb = {.dtype = KN_F64, .data = b, .ld = ldb};
    kn_linalg_gemm_b(m, n, k, a, lda, &gb, cm, ldc, threads, pack);
}

/* As kn_linalg_gemm_f64 with B in float (each element widened exactly to
 * double as it is used): weights are read where they lie, not copied. */
void kn_linalg_gemm_f64_f32b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const float *b,
                             int64_t ldb, double *cm, int64_t ldc, int threads, double *pack)
{
    kn_gemm_b gb = {.dtype = KN_F32, .data = b, .ld = ldb};
    kn_linalg_gemm_b(m, n, k, a, lda, &gb, cm, ldc, threads, pack);
}
