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

/* Thread count and packing scratch for an m x n x k product. */
kn_status kn_linalg_gemm_setup(kn_kctx *c, int64_t m, int64_t n, int64_t k, int *threads, double **pack);
/* cm[m x n] += a[m x k] * b[k x n] in double, the same bits for any
 * thread count; the second form reads float32 B in place. */
void kn_linalg_gemm_f64(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const double *b, int64_t ldb,
                        double *cm, int64_t ldc, int threads, double *pack);
void kn_linalg_gemm_f64_f32b(int64_t m, int64_t n, int64_t k, const double *a, int64_t lda, const float *b,
                             int64_t ldb, double *cm, int64_t ldc, int threads, double *pack);

#endif
