/* GEMM steps through cuBLASLt: a plan's row-major descriptor mapped to
 * cuBLASLt's column-major view, planned once per session (descriptors,
 * layouts, the algorithm) and replayed on each run. */
#ifndef KILN_CUDA_GEMM_H
#define KILN_CUDA_GEMM_H

#include "runtime/cuda/driver.h"
#include "runtime/plan_format.h"

#ifdef KN_HAVE_CUDA_HEADERS

typedef struct kn_cuda_gemm {
    bool active;                      /* false: nothing to do (m or n is 0) or not planned */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc, ld;   /* cuBLASLt's A (our B), B (our A), C, D */
    cublasLtMatmulAlgo_t algo;
    size_t workspace;                 /* bytes the algorithm needs */
    union {
        float f;
        double d;
        int32_t i;                    /* int8 GEMMs: CUDA_R_32I scale */
    } alpha, beta;
    CUdeviceptr a, b, c, d;           /* in cuBLASLt's order */
} kn_cuda_gemm;

/* Plans D = alpha·op(A)·op(B) + beta·C (+ epilogue) for descriptor `gm`
 * with row-major operands at pa, pb, pc (0: none) and pd, and for bias
 * epilogues pbias (0: the bias is at pc, no C matrix): computed as
 * Dᵀ = op(B)ᵀ·op(A)ᵀ in column-major terms. Picks the algorithm with at
 * most `max_workspace` bytes of workspace. `what` names the step in
 * messages. KN_ERR_UNSUPPORTED when cuBLASLt has no algorithm, else as
 * kn_cuda_blas_fail. On failure *out holds nothing to release. */
kn_status kn_cuda_gemm_plan(const kn_cublaslt *lt, const kn_plan_cu_gemm *gm, CUdeviceptr pa, CUdeviceptr pb,
                            CUdeviceptr pc, CUdeviceptr pd, CUdeviceptr pbias, size_t max_workspace, const char *what,
                            kn_diag *d, kn_cuda_gemm *out);

/* Enqueues the planned GEMM on `stream`. */
kn_status kn_cuda_gemm_run(const kn_cublaslt *lt, const kn_cuda_gemm *g, CUdeviceptr workspace, size_t ws_bytes,
                           CUstream stream, const char *what, kn_diag *d);

void kn_cuda_gemm_release(const kn_cublaslt *lt, kn_cuda_gemm *g);

#endif
#endif
