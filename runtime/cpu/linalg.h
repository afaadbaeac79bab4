/* Helpers shared by the linalg family's kernel files (k_linalg*.c) and the
 * kernels that reuse its GEMM (k_fused_gemm.c). Defined in k_linalg.c
 * (scratch, double conversion) and k_linalg_gemm.c (the GEMM). */
#ifndef KILN_CPU_LINALG_H
#define KILN_CPU_LINALG_H

#include "runtime/cpu/kernel.h"

/* Scratch for n elements of `elem` bytes; KN_ERR_LIMIT when too large. */
kn_status kn_linalg_alloc(kn_kctx *c, int64_t n, size_t elem, void **out);
/* The whole tensor as doubles (a scratch copy). */
kn_status kn_linalg_to_f64(kn_kctx *c, const kn_rt_tensor *t, double **out);
/* Stores n doubles into a tensor of float dtype t, rounding once. */
void kn_linalg_store_f64(kn_dtype t, void *data, const double *v, int64_t n);

/* Which copy of the GEMM runs for a float32, float16 or bfloat16 B: the
 * AVX-512 or the AVX2 one (float16 widened there by the CPU's F16C
 * conversion) or the baseline (float16 in portable code). All give the same
 * bits; AUTO (0) takes the best the CPU has, as does a copy it cannot run. */
typedef enum kn_gemm_isa {
    KN_GEMM_ISA_AUTO,
    KN_GEMM_ISA_AVX512,
    KN_GEMM_ISA_AVX2,
    KN_GEMM_ISA_BASE,
} kn_gemm_isa;
/* Whether this CPU can run that copy. */
bool kn_linalg_gemm_isa_has(kn_gemm_isa isa);
/* The copy MatMulNBits' CPU kernel (k_quant.c) uses: AUTO (the default)
 * its AVX2 form where the CPU has it, BASE the portable SSE2/C form; both
 * give the same bits (tests compare them). */
extern kn_gemm_isa kn_nbits_isa;

/* B of a GEMM, read in place (widened exactly to double as the kernel
 * uses it, never copied whole): float64, float32, float16 or bfloat16
 * elements, row-major [k, n] with leading dimension ld (elements), or with
 * trans stored [n, k] (Gemm's transB). */
typedef struct kn_gemm_b {
    kn_dtype dtype;
    const void *data;
    int64_t ld;
    bool trans;
    kn_gemm_isa isa; /* 0: the best copy */
} kn_gemm_b;

/* Thread count and workspace (scratch of a few hundred KiB per thread,
 * whatever B's size) for an m x n x k product; _b for a B stored
 * transposed or not. kn_linalg_gemm_workspace gives the same without a
 * kernel context: it returns the thread count and sets the workspace
 * length in doubles. */
kn_status kn_linalg_gemm_setup(kn_kctx *c, int64_t m, int64_t n, int64_t k, int *threads, double **pack);
kn_status kn_linalg_gemm_setup_b(kn_kctx *c, int64_t m, int64_t n, int64_t k, bool b_trans, int *threads,
                                 double **pack);
int kn_linalg_gemm_workspace(int64_t m, int64_t n, int64_t k, bool b_trans, int64_t *pack_len);
/* cm[m x n] += a[m x k] * b[k x n] in double, each element's products
 * added in increasing k: the same bits for any thread count, B type or
 * ISA. The first form takes any B (threads and pack from
 * kn_linalg_gemm_setup_b with the same m, n, k and b->trans); the others
 * a double or float32 B, not transposed (kn_linalg_gemm_setup). */
void kn_linalg_gemm_b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const kn_gemm_b *b, double *cm,
                      int64_t ldc, int threads, double *pack);
void kn_linalg_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                        double *cm, int64_t ldc, int threads, double *pack);
void kn_linalg_gemm_f64_f32b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const float *b,
                             int64_t ldb, double *cm, int64_t ldc, int threads, double *pack);

/* Gemm's C strides over [m, n] (unidirectional broadcast of C of rank <= 2);
 * false when C does not broadcast. No C: both 0. */
bool kn_linalg_gemm_c_strides(const kn_rt_tensor *cc, int64_t m, int64_t n, int64_t *csm, int64_t *csn);
/* Gemm in double: *out (m x n scratch) = alpha * op(A) op(B) + beta * C, not
 * rounded; op transposes when ta / tb. A is [m, k] (or [k, m]), B [k, n] (or
 * [n, k]); C (may be NULL) is read with the strides above. */
kn_status kn_linalg_gemm_ab(kn_kctx *c, const kn_rt_tensor *a, bool ta, const kn_rt_tensor *b, bool tb, int64_t m,
                            int64_t n, int64_t k, const kn_rt_tensor *cc, int64_t csm, int64_t csn, double alpha,
                            double beta, double **out);

#endif
