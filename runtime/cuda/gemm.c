/* cuBLASLt GEMMs for the CUDA executor. The plan stores row-major
 * operands; cuBLASLt is column-major. A row-major m×n matrix is the
 * column-major n×m matrix with the same bytes, so D = op(A)·op(B) is
 * computed as Dᵀ = op(B)ᵀ·op(A)ᵀ: cuBLASLt's A is our B, its B our A, its
 * M our n and its N our m. A bias epilogue's row vector (one value per
 * column of D) is then one value per row of Dᵀ, as cuBLASLt wants.
 *
 * Descriptor dtype KN_I8 is the int8 GEMM: A and B CUDA_R_8I, C and D
 * CUDA_R_32I, CUBLAS_COMPUTE_32I with a CUDA_R_32I scale (alpha 1, beta 0,
 * no epilogue; runtime/cuda/plan.c checks the descriptor). cuBLASLt's IMMA
 * kernels with the default (column) order need the "TN" form — its A
 * transposed, its B not — which is our trans_b = 1, trans_a = 0; leading
 * dims and its m and k multiples of 4 (our n and k), pointers 4-byte
 * aligned (docs/cuda-codegen.md quotes the rules). */
#include "runtime/cuda/gemm.h"

#ifdef KN_HAVE_CUDA_HEADERS

#include <string.h>

/* Alignment of a device pointer in bytes (up to 256), for the heuristic. */
static uint32_t align_of(CUdeviceptr p)
{
    uint32_t a = 1;
    while (a < 256 && (p & a) == 0)
        a <<= 1;
    return a;
}

#define LT_TRY(call, expr)                                                  \
    do {                                                                    \
        cublasStatus_t lt_r_ = (expr);                                      \
        if (lt_r_ != CUBLAS_STATUS_SUCCESS) {                               \
            s = kn_cuda_blas_fail(d, lt_r_, call, "%s", what);              \
            goto fail;                                                      \
        }                                                                   \
    } while (0)

static cublasStatus_t layout(const kn_cublaslt *lt, cublasLtMatrixLayout_t *l, cudaDataType_t t, int64_t rows,
                             int64_t cols, int64_t ld, int32_t batch, int64_t stride)
{
    cublasStatus_t r = lt->matrix_layout_create(l, t, (uint64_t)rows, (uint64_t)cols, ld);
    if (r != CUBLAS_STATUS_SUCCESS || batch == 1)
        return r;
    r = lt->matrix_layout_set_attribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch);
    if (r == CUBLAS_STATUS_SUCCESS)
        r = lt->matrix_layout_set_attribute(*l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride);
    return r;
}

kn_status kn_cuda_gemm_plan(const kn_cublaslt *lt, const kn_plan_cu_gemm *gm, CUdeviceptr pa, CUdeviceptr pb,
                            CUdeviceptr pc, CUdeviceptr pd, CUdeviceptr pbias, size_t max_workspace, const char *what,
                            kn_diag *d, kn_cuda_gemm *out)
{
    memset(out, 0, sizeof *out);
    if (gm->m == 0 || gm->n == 0)
        return KN_OK; /* an empty result: nothing to compute */
    if (gm->k == 0) {
        kn_diag_add(d, KN_ERROR, "%s: a GEMM with k = 0 is not supported by the CUDA backend", what);
        return KN_ERR_UNSUPPORTED;
    }
    kn_status s = KN_OK;
    cublasLtMatmulPreference_t pref = NULL;
    cudaDataType_t t, scale;
    cublasComputeType_t compute;
    switch (gm->dtype) {
    case KN_I8: t = CUDA_R_8I; scale = CUDA_R_32I; compute = CUBLAS_COMPUTE_32I; break;
    case KN_F32: t = CUDA_R_32F; scale = CUDA_R_32F; compute = CUBLAS_COMPUTE_32F; break;
    case KN_F16: t = CUDA_R_16F; scale = CUDA_R_32F; compute = CUBLAS_COMPUTE_32F; break;
    case KN_BF16: t = CUDA_R_16BF; scale = CUDA_R_32F; compute = CUBLAS_COMPUTE_32F; break;
    case KN_F64: t = CUDA_R_64F; scale = CUDA_R_64F; compute = CUBLAS_COMPUTE_64F; break;
    default:
        kn_diag_add(d, KN_ERROR, "%s: GEMM dtype %d", what, (int)gm->dtype);
        return KN_ERR_INVALID;
    }
    cudaDataType_t tcd = t == CUDA_R_8I ? CUDA_R_32I : t; /* the type of C and D */
    bool bias = gm->epilogue >= 3;
    bool c_matrix = gm->has_c && (!bias || pbias);
    float beta = c_matrix ? gm->beta : 0.0f; /* without a C matrix, cuBLASLt's C is D, scaled by 0 */
    if (scale == CUDA_R_64F) {
        out->alpha.d = gm->alpha;
        out->beta.d = beta;
    } else if (scale == CUDA_R_32I) {
        out->alpha.i = (int32_t)gm->alpha;
        out->beta.i = (int32_t)beta;
    } else {
        out->alpha.f = gm->alpha;
        out->beta.f = beta;
    }
    out->a = pb;
    out->b = pa;
    out->c = c_matrix ? pc : pd;
    out->d = pd;
    int32_t batch = (int32_t)gm->batch;
    int32_t op_a = gm->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, op_b = gm->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_TRY("cublasLtMatmulDescCreate", lt->matmul_desc_create(&out->op, compute, scale));
    LT_TRY("cublasLtMatmulDescSetAttribute",
           lt->matmul_desc_set_attribute(out->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    LT_TRY("cublasLtMatmulDescSetAttribute",
           lt->matmul_desc_set_attribute(out->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    if (gm->epilogue) {
        /* note: cuBLASLt's GELU is the tanh approximation */
        uint32_t epi = gm->epilogue == 1   ? CUBLASLT_EPILOGUE_RELU
                       : gm->epilogue == 2 ? CUBLASLT_EPILOGUE_GELU
                       : gm->epilogue == 4 ? CUBLASLT_EPILOGUE_RELU_BIAS
                       : gm->epilogue == 5 ? CUBLASLT_EPILOGUE_GELU_BIAS
                                           : CUBLASLT_EPILOGUE_BIAS;
        LT_TRY("cublasLtMatmulDescSetAttribute",
               lt->matmul_desc_set_attribute(out->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
    }
    if (bias) {
        void *bp = (void *)(uintptr_t)(pbias ? pbias : pc);
        int32_t bt = t;
        LT_TRY("cublasLtMatmulDescSetAttribute",
               lt->matmul_desc_set_attribute(out->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof bp));
        LT_TRY("cublasLtMatmulDescSetAttribute",
               lt->matmul_desc_set_attribute(out->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
        if (batch > 1 && !pbias) {
            int64_t bs = gm->stride_c;
            LT_TRY("cublasLtMatmulDescSetAttribute",
                   lt->matmul_desc_set_attribute(out->op, CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, &bs, sizeof bs));
        }
    }
    /* column-major views: our B (k×n, or n×k when transposed) is n×k / k×n */
    LT_TRY("cublasLtMatrixLayoutCreate", layout(lt, &out->la, t, gm->trans_b ? gm->k : gm->n,
                                                gm->trans_b ? gm->n : gm->k, gm->ldb, batch, gm->stride_b));
    LT_TRY("cublasLtMatrixLayoutCreate", layout(lt, &out->lb, t, gm->trans_a ? gm->m : gm->k,
                                                gm->trans_a ? gm->k : gm->m, gm->lda, batch, gm->stride_a));
    LT_TRY("cublasLtMatrixLayoutCreate", layout(lt, &out->ld, tcd, gm->n, gm->m, gm->ldd, batch, gm->stride_d));
    if (c_matrix)
        LT_TRY("cublasLtMatrixLayoutCreate", layout(lt, &out->lc, tcd, gm->n, gm->m, gm->ldc, batch, gm->stride_c));
    else
        LT_TRY("cublasLtMatrixLayoutCreate", layout(lt, &out->lc, tcd, gm->n, gm->m, gm->ldd, batch, gm->stride_d));
    LT_TRY("cublasLtMatmulPreferenceCreate", lt->matmul_preference_create(&pref));
    uint64_t ws = max_workspace;
    LT_TRY("cublasLtMatmulPreferenceSetAttribute",
           lt->matmul_preference_set_attribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const struct {
        cublasLtMatmulPreferenceAttributes_t attr;
        CUdeviceptr p;
    } aligns[] = {{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, out->a},
                  {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, out->b},
                  {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, out->c},
                  {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, out->d}};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        uint32_t al = align_of(aligns[i].p);
        LT_TRY("cublasLtMatmulPreferenceSetAttribute",
               lt->matmul_preference_set_attribute(pref, aligns[i].attr, &al, sizeof al));
    }
    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0;
    memset(&res, 0, sizeof res);
    cublasStatus_t hr = lt->matmul_algo_get_heuristic(lt->handle, out->op, out->la, out->lb, out->lc, out->ld, pref,
                                                      1, &res, &n_res);
    if (hr == CUBLAS_STATUS_NOT_SUPPORTED || (hr == CUBLAS_STATUS_SUCCESS && n_res < 1)) {
        kn_diag_add(d, KN_ERROR,
                    "%s: cuBLASLt has no algorithm for this GEMM (%s, m=%lld n=%lld k=%lld, batch %lld, "
                    "epilogue %u)",
                    what, kn_dtype_name((kn_dtype)gm->dtype), (long long)gm->m, (long long)gm->n, (long long)gm->k,
                    (long long)gm->batch, gm->epilogue);
        s = KN_ERR_UNSUPPORTED;
        goto fail;
    }
    LT_TRY("cublasLtMatmulAlgoGetHeuristic", hr);
    out->algo = res.algo;
    out->workspace = res.workspaceSize;
    out->active = true;
    lt->matmul_preference_destroy(pref);
    return KN_OK;
fail:
    if (pref)
        lt->matmul_preference_destroy(pref);
    kn_cuda_gemm_release(lt, out);
    return s;
}

kn_status kn_cuda_gemm_run(const kn_cublaslt *lt, const kn_cuda_gemm *g, CUdeviceptr workspace, size_t ws_bytes,
                           CUstream stream, const char *what, kn_diag *d)
{
    if (!g->active)
        return KN_OK;
    cublasStatus_t r = lt->matmul(lt->handle, g->op, &g->alpha, (const void *)(uintptr_t)g->a, g->la,
                                  (const void *)(uintptr_t)g->b, g->lb, &g->beta, (const void *)(uintptr_t)g->c, g->lc,
                                  (void *)(uintptr_t)g->d, g->ld, &g->algo, (void *)(uintptr_t)workspace, ws_bytes,
                                  (cudaStream_t)stream);
    if (r != CUBLAS_STATUS_SUCCESS)
        return kn_cuda_blas_fail(d, r, "cublasLtMatmul", "%s", what);
    return KN_OK;
}

void kn_cuda_gemm_release(const kn_cublaslt *lt, kn_cuda_gemm *g)
{
    if (!lt)
        return;
    if (g->la)
        lt->matrix_layout_destroy(g->la);
    if (g->lb)
        lt->matrix_layout_destroy(g->lb);
    if (g->lc)
        lt->matrix_layout_destroy(g->lc);
    if (g->ld)
        lt->matrix_layout_destroy(g->ld);
    if (g->op)
        lt->matmul_desc_destroy(g->op);
    memset(g, 0, sizeof *g);
}

#endif /* KN_HAVE_CUDA_HEADERS */
