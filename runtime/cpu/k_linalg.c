/* linalg family, part 1: the shared helpers of the family (scratch, double
 * conversion; the GEMM itself is in k_linalg_gemm.c, all shared through the
 * kn_linalg_* functions of runtime/cpu/linalg.h), MatMul, Gemm,
 * MatMulInteger, QLinearMatMul and Det. */
#include "runtime/cpu/util.h"
#include "runtime/cpu/linalg.h"

#include <math.h>
#include <string.h>

/* ---- shared helpers (runtime/cpu/linalg.h) ---- */

/* Scratch for n elements of `elem` bytes (at least one byte), failing with
 * KN_ERR_LIMIT when the size overflows. */
kn_status kn_linalg_alloc(kn_kctx *c, int64_t n, size_t elem, void **out)
{
    if (n < 0 || (n > 0 && (uint64_t)n > SIZE_MAX / elem / 2))
        return kn_kctx_fail(c, KN_ERR_LIMIT, "scratch of %lld elements is too large", (long long)n);
    void *p = kn_kctx_scratch(c, n ? (size_t)n * elem : 1);
    if (!p)
        return KN_ERR_NOMEM;
    *out = p;
    return KN_OK;
}

/* The whole tensor as doubles (a scratch copy). */
kn_status kn_linalg_to_f64(kn_kctx *c, const kn_rt_tensor *t, double **out)
{
    double *v;
    KN_TRY(kn_linalg_alloc(c, t->numel, sizeof *v, (void **)&v));
    if (t->dtype == KN_F32) {
        const float *f = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            v[i] = f[i];
    } else if (t->dtype == KN_F64) {
        if (t->numel)
            memcpy(v, t->data, (size_t)t->numel * sizeof *v);
    } else if (t->dtype == KN_F16) { /* fp16 weights: every GEMM of a half-precision plan */
        const uint16_t *h = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            v[i] = kn_f16_to_f32(h[i]);
    } else if (t->dtype == KN_BF16) {
        const uint16_t *h = t->data;
        for (int64_t i = 0; i < t->numel; i++)
            v[i] = kn_bf16_to_f32(h[i]);
    } else {
        for (int64_t i = 0; i < t->numel; i++)
            v[i] = kn_get_f64(t->dtype, t->data, i);
    }
    *out = v;
    return KN_OK;
}

void kn_linalg_store_f64(kn_dtype t, void *data, const double *v, int64_t n)
{
    if (t == KN_F32) {
        float *f = data;
        for (int64_t i = 0; i < n; i++)
            f[i] = (float)v[i];
    } else if (t == KN_F64) {
        if (n)
            memcpy(data, v, (size_t)n * sizeof *v);
    } else {
        for (int64_t i = 0; i < n; i++)
            kn_set_f64(t, data, i, v[i]);
    }
}

/* Integer GEMM in wrapping 64-bit arithmetic (exact mod 2^64, which is what
 * int32/int64/uint32/uint64 results need): C[m x n] += A · B. */
static void gemm_u64(int64_t m, int64_t n, int64_t k, const uint64_t *a, const uint64_t *b, uint64_t *cm)
{
    for (int64_t i = 0; i < m; i++) {
        uint64_t *restrict ci = cm + i * n;
        for (int64_t p = 0; p < k; p++) {
            uint64_t av = a[i * k + p];
            const uint64_t *restrict bp = b + p * n;
            for (int64_t j = 0; j < n; j++)
                ci[j] += av * bp[j];
        }
    }
}

static kn_status to_u64(kn_kctx *c, const kn_rt_tensor *t, uint64_t **out)
{
    uint64_t *v;
    KN_TRY(kn_linalg_alloc(c, t->numel, sizeof *v, (void **)&v));
    for (int64_t i = 0; i < t->numel; i++)
        v[i] = kn_get_u64(t->dtype, t->data, i);
    *out = v;
    return KN_OK;
}

/* ---- numpy matmul shapes ---- */

/* A MatMul's geometry: the broadcast batch, the matrix sizes and, per
 * batch entry, where its A and B matrices start (in elements). */
typedef struct mm_plan {
    int64_t m, k, n, n_batch;
    int64_t *off_a, *off_b;
    int32_t out_rank;
    int64_t out_dims[KN_RT_MAX_RANK];
} mm_plan;

static kn_status mm_plan_make(kn_kctx *c, const kn_rt_tensor *a, const kn_rt_tensor *b, mm_plan *p)
{
    if (a->rank < 1 || b->rank < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMul inputs must have rank >= 1 (got %d and %d)", (int)a->rank,
                            (int)b->rank);
    /* 1-D operands are promoted to matrices: A [K] -> [1, K], B [K] -> [K, 1]. */
    int32_t ra = a->rank, rb = b->rank;
    int64_t m = ra == 1 ? 1 : a->dims[ra - 2], ka = a->dims[ra - 1];
    int64_t kb = rb == 1 ? b->dims[0] : b->dims[rb - 2], n = rb == 1 ? 1 : b->dims[rb - 1];
    if (ka != kb)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMul inner dimensions differ: A has %lld columns, B has %lld rows",
                            (long long)ka, (long long)kb);
    int32_t ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0;
    int32_t br = ba > bb ? ba : bb;
    int64_t bdims[KN_RT_MAX_RANK], sa[KN_RT_MAX_RANK], sb[KN_RT_MAX_RANK];
    if (br + 2 > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "MatMul rank too large");
    /* Batch strides in elements, 0 on broadcast dimensions. */
    int64_t stride_a = m * ka, stride_b = kb * n;
    for (int32_t i = br - 1; i >= 0; i--) {
        int32_t ia = i - (br - ba), ib = i - (br - bb);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "MatMul batch dimensions cannot be broadcast (%lld vs %lld)",
                                (long long)da, (long long)db);
        bdims[i] = da == 1 ? db : da;
        sa[i] = da == 1 ? 0 : stride_a;
        sb[i] = db == 1 ? 0 : stride_b;
        stride_a *= da;
        stride_b *= db;
    }
    int64_t nbatch = kn_numel(br, bdims);
    if (nbatch < 0)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "MatMul batch size overflows");
    p->m = m;
    p->k = ka;
    p->n = n;
    p->n_batch = nbatch;
    KN_TRY(kn_linalg_alloc(c, nbatch, sizeof(int64_t), (void **)&p->off_a));
    KN_TRY(kn_linalg_alloc(c, nbatch, sizeof(int64_t), (void **)&p->off_b));
    int64_t idx[KN_RT_MAX_RANK] = {0}, oa = 0, ob = 0;
    for (int64_t t = 0; t < nbatch; t++) {
        p->off_a[t] = oa;
        p->off_b[t] = ob;
        for (int32_t i = br - 1; i >= 0; i--) {
            idx[i]++;
            oa += sa[i];
            ob += sb[i];
            if (idx[i] < bdims[i])
                break;
            oa -= sa[i] * bdims[i];
            ob -= sb[i] * bdims[i];
            idx[i] = 0;
        }
    }
    int32_t r = 0;
    for (int32_t i = 0; i < br; i++)
        p->out_dims[r++] = bdims[i];
    if (ra > 1)
        p->out_dims[r++] = m;
    if (rb > 1)
        p->out_dims[r++] = n;
    p->out_rank = r;
    return KN_OK;
}

kn_status kn_ref_MatMul(kn_kctx *c)
{
    const kn_rt_tensor *a = kn_kctx_in(c, 0), *b = kn_kctx_in(c, 1);
    if (!a || !b)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMul needs inputs A and B");
    if (a->dtype != b->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMul input types differ (%s vs %s)", kn_dtype_name(a->dtype),
                            kn_dtype_name(b->dtype));
    bool fl = kn_dt_is_float(a->dtype);
    if (!fl && !kn_dt_is_int(a->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMul does not support %s", kn_dtype_name(a->dtype));
    mm_plan p;
    KN_TRY(mm_plan_make(c, a, b, &p));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, a->dtype, p.out_rank, p.out_dims, &y));
    int64_t mn = p.m * p.n;
    if (y->numel == 0)
        return KN_OK;
    if (fl) {
        /* B (weights, mostly: float32, float16, bfloat16) is read in place,
         * widened as used; A (activations) is copied to double. */
        double *da, *acc;
        KN_TRY(kn_linalg_to_f64(c, a, &da));
        KN_TRY(kn_linalg_alloc(c, mn, sizeof *acc, (void **)&acc));
        int nt;
        double *pack;
        KN_TRY(kn_linalg_gemm_setup(c, p.m, p.n, p.k, &nt, &pack));
        size_t esz = kn_dt_size(y->dtype);
        for (int64_t t = 0; t < p.n_batch; t++) {
            if (t)
                memset(acc, 0, (size_t)mn * sizeof *acc);
            kn_gemm_b gb = {.dtype = b->dtype, .data = (const char *)b->data + (size_t)p.off_b[t] * esz, .ld = p.n};
            kn_linalg_gemm_b(p.m, p.n, p.k, da + p.off_a[t], p.k, &gb, acc, p.n, nt, pack);
            kn_linalg_store_f64(y->dtype, (char *)y->data + (size_t)(t * mn) * esz, acc, mn);
        }
    } else {
        uint64_t *ua, *ub, *acc;
        KN_TRY(to_u64(c, a, &ua));
        KN_TRY(to_u64(c, b, &ub));
        KN_TRY(kn_linalg_alloc(c, mn, sizeof *acc, (void **)&acc));
        for (int64_t t = 0; t < p.n_batch; t++) {
            memset(acc, 0, (size_t)mn * sizeof *acc);
            gemm_u64(p.m, p.n, p.k, ua + p.off_a[t], ub + p.off_b[t], acc);
            for (int64_t i = 0; i < mn; i++)
                kn_set_u64(y->dtype, y->data, t * mn + i, acc[i]);
        }
    }
    return KN_OK;
}

/* Y = alpha · A' · B' + beta · C, with C broadcast to [M, N]. */
bool kn_linalg_gemm_c_strides(const kn_rt_tensor *cc, int64_t m, int64_t n, int64_t *csm, int64_t *csn)
{
    *csm = *csn = 0;
    if (!cc)
        return true;
    int64_t cm = cc->rank == 2 ? cc->dims[0] : 1, cn = cc->rank >= 1 ? cc->dims[cc->rank - 1] : 1;
    if (cc->rank > 2 || (cm != 1 && cm != m) || (cn != 1 && cn != n))
        return false;
    *csn = cn == 1 ? 0 : 1;
    *csm = cm == 1 ? 0 : cn;
    return true;
}

kn_status kn_linalg_gemm_ab(kn_kctx *c, const kn_rt_tensor *a, bool ta, const kn_rt_tensor *b, bool tb, int64_t m,
                            int64_t n, int64_t k, const kn_rt_tensor *cc, int64_t csm, int64_t csn, double alpha,
                            double beta, double **out)
{
    /* A (activations) is copied to double; B (the weights), transposed or
     * not, is read in place by the GEMM. */
    double *da, *acc, *dc = NULL;
    KN_TRY(kn_linalg_alloc(c, m * k, sizeof *da, (void **)&da));
    KN_TRY(kn_linalg_alloc(c, m * n, sizeof *acc, (void **)&acc));
    for (int64_t i = 0; i < m; i++)
        for (int64_t p = 0; p < k; p++)
            da[i * k + p] = kn_get_f64(a->dtype, a->data, ta ? p * m + i : i * k + p);
    int nt;
    double *pack;
    KN_TRY(kn_linalg_gemm_setup_b(c, m, n, k, tb, &nt, &pack));
    kn_gemm_b gb = {.dtype = b->dtype, .data = b->data, .ld = tb ? k : n, .trans = tb};
    kn_linalg_gemm_b(m, n, k, da, k, &gb, acc, n, nt, pack);
    if (cc)
        KN_TRY(kn_linalg_to_f64(c, cc, &dc));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double v = alpha * acc[i * n + j];
            if (dc && beta != 0)
                v += beta * dc[i * csm + j * csn];
            acc[i * n + j] = v;
        }
    *out = acc;
    return KN_OK;
}

kn_status kn_ref_Gemm(kn_kctx *c)
{
    const kn_rt_tensor *a = kn_kctx_in(c, 0), *b = kn_kctx_in(c, 1), *cc = kn_kctx_in(c, 2);
    if (!a || !b)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Gemm needs inputs A and B");
    if (a->rank != 2 || b->rank != 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Gemm inputs A and B must be 2-D (got rank %d and %d)", (int)a->rank,
                            (int)b->rank);
    if (a->dtype != b->dtype || (cc && cc->dtype != a->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Gemm input types differ");
    bool fl = kn_dt_is_float(a->dtype);
    if (!fl && !kn_dt_is_int(a->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Gemm does not support %s", kn_dtype_name(a->dtype));
    bool ta = kn_kctx_attr_int(c, "transA", 0) != 0, tb = kn_kctx_attr_int(c, "transB", 0) != 0;
    double alpha = kn_kctx_attr_float(c, "alpha", 1.0f), beta = kn_kctx_attr_float(c, "beta", 1.0f);
    int64_t m = ta ? a->dims[1] : a->dims[0], k = ta ? a->dims[0] : a->dims[1];
    int64_t kb = tb ? b->dims[1] : b->dims[0], n = tb ? b->dims[0] : b->dims[1];
    if (k != kb)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Gemm inner dimensions differ (%lld vs %lld)", (long long)k,
                            (long long)kb);
    /* C's strides over [M, N] (unidirectional broadcast). */
    int64_t csm = 0, csn = 0;
    if (cc && cc->rank > 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Gemm input C must have rank <= 2 (got %d)", (int)cc->rank);
    if (!kn_linalg_gemm_c_strides(cc, m, n, &csm, &csn))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Gemm input C of shape [%lld, %lld] does not broadcast to [%lld, %lld]",
                            (long long)(cc->rank == 2 ? cc->dims[0] : 1),
                            (long long)(cc->rank >= 1 ? cc->dims[cc->rank - 1] : 1), (long long)m, (long long)n);
    int64_t dims[2] = {m, n};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, a->dtype, 2, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    if (fl) {
        double *acc;
        KN_TRY(kn_linalg_gemm_ab(c, a, ta, b, tb, m, n, k, cc, csm, csn, alpha, beta, &acc));
        kn_linalg_store_f64(y->dtype, y->data, acc, m * n);
    } else {
        uint64_t *ua, *ub, *acc;
        KN_TRY(kn_linalg_alloc(c, m * k, sizeof *ua, (void **)&ua));
        KN_TRY(kn_linalg_alloc(c, k * n, sizeof *ub, (void **)&ub));
        KN_TRY(kn_linalg_alloc(c, m * n, sizeof *acc, (void **)&acc));
        for (int64_t i = 0; i < m; i++)
            for (int64_t p = 0; p < k; p++)
                ua[i * k + p] = kn_get_u64(a->dtype, a->data, ta ? p * m + i : i * k + p);
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < n; j++)
                ub[p * n + j] = kn_get_u64(b->dtype, b->data, tb ? j * k + p : p * n + j);
        gemm_u64(m, n, k, ua, ub, acc);
        /* alpha = beta = 1 (the usual case) stays exact; other factors go
         * through double like ONNX's reference. */
        bool sgn = kn_dt_is_signed(a->dtype);
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                uint64_t v = acc[i * n + j];
                uint64_t cv = cc ? kn_get_u64(cc->dtype, cc->data, i * csm + j * csn) : 0;
                if (alpha == 1.0 && (beta == 1.0 || !cc)) {
                    v += cv;
                } else {
                    double dv = (sgn ? (double)(int64_t)v : (double)v) * alpha;
                    if (cc)
                        dv += (sgn ? (double)(int64_t)cv : (double)cv) * beta;
                    kn_set_f64(y->dtype, y->data, i * n + j, dv);
                    continue;
                }
                kn_set_u64(y->dtype, y->data, i * n + j, v);
            }
    }
    return KN_OK;
}

/* ---- quantized matmuls ---- */

/* A zero point or scale of a quantized matmul operand: a scalar, or one
 * value per row of A (per column of B). Returns the stride (0 or 1). */
static kn_status q_param(kn_kctx *c, const kn_rt_tensor *t, int64_t per, const char *what, int64_t *stride)
{
    *stride = 0;
    if (!t || t->numel == 1)
        return KN_OK;
    if (t->numel == per) {
        *stride = 1;
        return KN_OK;
    }
    return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be a scalar or have %lld elements (has %lld)", what,
                        (long long)per, (long long)t->numel);
}

static bool is_q8(kn_dtype t) { return t == KN_I8 || t == KN_U8; }

/* The integer product of a quantized MatMul: acc[batch][m][n] =
 * (A - a_zp) · (B - b_zp). Operands are 8-bit, so every product is below
 * 2^16 in magnitude and the sums are exact in double for K < 2^37. */
static kn_status q_matmul(kn_kctx *c, const kn_rt_tensor *a, const kn_rt_tensor *azp, const kn_rt_tensor *b,
                          const kn_rt_tensor *bzp, mm_plan *p, double **out)
{
    if (!is_q8(a->dtype) || !is_q8(b->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "quantized inputs must be int8 or uint8 (got %s and %s)",
                            kn_dtype_name(a->dtype), kn_dtype_name(b->dtype));
    if ((azp && azp->dtype != a->dtype) || (bzp && bzp->dtype != b->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "zero point type differs from its input's");
    KN_TRY(mm_plan_make(c, a, b, p));
    if (p->k >= ((int64_t)1 << 37))
        return kn_kctx_fail(c, KN_ERR_LIMIT, "inner dimension %lld too large", (long long)p->k);
    int64_t sza, szb;
    KN_TRY(q_param(c, azp, p->m, "a_zero_point", &sza));
    KN_TRY(q_param(c, bzp, p->n, "b_zero_point", &szb));
    double *da, *db, *acc;
    KN_TRY(kn_linalg_to_f64(c, a, &da));
    KN_TRY(kn_linalg_to_f64(c, b, &db));
    /* Subtract zero points: A's per row (index m), B's per column (index n). */
    for (int64_t i = 0; i < a->numel; i++) {
        int64_t row = p->k ? (i / p->k) % p->m : 0;
        da[i] -= azp ? kn_get_f64(azp->dtype, azp->data, row * sza) : 0;
    }
    for (int64_t i = 0; i < b->numel; i++) {
        int64_t col = p->n ? i % p->n : 0;
        db[i] -= bzp ? kn_get_f64(bzp->dtype, bzp->data, col * szb) : 0;
    }
    int64_t mn = p->m * p->n;
    KN_TRY(kn_linalg_alloc(c, p->n_batch * mn, sizeof *acc, (void **)&acc));
    int nt;
    double *pack;
    KN_TRY(kn_linalg_gemm_setup(c, p->m, p->n, p->k, &nt, &pack));
    for (int64_t t = 0; t < p->n_batch; t++)
        kn_linalg_gemm_f64(p->m, p->n, p->k, da + p->off_a[t], p->k, db + p->off_b[t], p->n, acc + t * mn, p->n, nt,
                           pack);
    *out = acc;
    return KN_OK;
}

kn_status kn_ref_MatMulInteger(kn_kctx *c)
{
    const kn_rt_tensor *a = kn_kctx_in(c, 0), *b = kn_kctx_in(c, 1);
    if (!a || !b)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulInteger needs inputs A and B");
    mm_plan p;
    double *acc;
    KN_TRY(q_matmul(c, a, kn_kctx_in(c, 2), b, kn_kctx_in(c, 3), &p, &acc));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_I32, p.out_rank, p.out_dims, &y));
    int32_t *yd = y->data;
    for (int64_t i = 0; i < y->numel; i++)
        yd[i] = (int32_t)(int64_t)acc[i];
    return KN_OK;
}

/* Scalar (or per-row/column) scale as float. */
static float q_scale(const kn_rt_tensor *t, int64_t i) { return (float)kn_get_f64(t->dtype, t->data, i); }

kn_status kn_ref_QLinearMatMul(kn_kctx *c)
{
    const kn_rt_tensor *a = kn_kctx_in(c, 0), *as = kn_kctx_in(c, 1), *azp = kn_kctx_in(c, 2);
    const kn_rt_tensor *b = kn_kctx_in(c, 3), *bs = kn_kctx_in(c, 4), *bzp = kn_kctx_in(c, 5);
    const kn_rt_tensor *ys = kn_kctx_in(c, 6), *yzp = kn_kctx_in(c, 7);
    if (!a || !as || !b || !bs || !ys)
        return kn_kctx_fail(c, KN_ERR_INVALID, "QLinearMatMul needs a, a_scale, b, b_scale and y_scale");
    if (!kn_dt_is_float(as->dtype) || !kn_dt_is_float(bs->dtype) || !kn_dt_is_float(ys->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "QLinearMatMul scales must be floating point");
    kn_dtype yt = yzp ? yzp->dtype : a->dtype;
    if (!is_q8(yt))
        return kn_kctx_fail(c, KN_ERR_INVALID, "QLinearMatMul output type %s not supported", kn_dtype_name(yt));
    if (ys->numel != 1 || (yzp && yzp->numel != 1))
        return kn_kctx_fail(c, KN_ERR_INVALID, "y_scale and y_zero_point must be scalars");
    mm_plan p;
    double *acc;
    KN_TRY(q_matmul(c, a, azp, b, bzp, &p, &acc));
    int64_t ssa, ssb;
    KN_TRY(q_param(c, as, p.m, "a_scale", &ssa));
    KN_TRY(q_param(c, bs, p.n, "b_scale", &ssb));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, yt, p.out_rank, p.out_dims, &y));
    double lo = yt == KN_I8 ? -128 : 0, hi = yt == KN_I8 ? 127 : 255;
    double zp = yzp ? kn_get_f64(yzp->dtype, yzp->data, 0) : 0;
    float ysc = q_scale(ys, 0);
    for (int64_t i = 0; i < y->numel; i++) {
        int64_t col = i % p.n, row = (i / p.n) % p.m;
        float mul = q_scale(as, row * ssa) * q_scale(bs, col * ssb) / ysc; /* in float, as ONNX's reference */
        double v = nearbyint(acc[i] * (double)mul + zp);
        v = v < lo ? lo : v > hi ? hi : v;
        kn_set_f64(yt, y->data, i, v);
    }
    return KN_OK;
}

/* ---- Det ---- */

/* Determinant by LU decomposition with partial pivoting, in double. */
static double det_lu(double *a, int64_t n)
{
    double det = 1.0;
    for (int64_t col = 0; col < n; col++) {
        int64_t piv = col;
        for (int64_t r = col + 1; r < n; r++)
            if (fabs(a[r * n + col]) > fabs(a[piv * n + col]))
                piv = r;
        if (a[piv * n + col] == 0)
            return 0.0;
        if (piv != col) {
            for (int64_t j = 0; j < n; j++) {
                double t = a[col * n + j];
                a[col * n + j] = a[piv * n + j];
                a[piv * n + j] = t;
            }
            det = -det;
        }
        double d = a[col * n + col];
        det *= d;
        for (int64_t r = col + 1; r < n; r++) {
            double f = a[r * n + col] / d;
            if (f == 0)
                continue;
            for (int64_t j = col + 1; j < n; j++)
                a[r * n + j] -= f * a[col * n + j];
        }
    }
    return det;
}

kn_status kn_ref_Det(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Det needs an input");
    if (!kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Det does not support %s", kn_dtype_name(x->dtype));
    if (x->rank < 2 || x->dims[x->rank - 1] != x->dims[x->rank - 2])
        return kn_kctx_fail(c, KN_ERR_INVALID, "Det needs square matrices in the last two dimensions");
    int64_t n = x->dims[x->rank - 1];
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank - 2, x->dims, &y));
    double *a, *m;
    KN_TRY(kn_linalg_to_f64(c, x, &a));
    KN_TRY(kn_linalg_alloc(c, n * n, sizeof *m, (void **)&m));
    for (int64_t t = 0; t < y->numel; t++) {
        if (n)
            memcpy(m, a + t * n * n, (size_t)(n * n) * sizeof *m);
        kn_set_f64(y->dtype, y->data, t, det_lu(m, n));
    }
    return KN_OK;
}
