/* kiln GemmEpilogue (domain "kiln", passes/fuse_gemm.c): a matrix product
 * with its bias, activation and residual add in one node,
 *
 *   Y = act(P + bias) + residual
 *
 * gemm = 0: P = MatMul(A, B) with B a matrix [K, N] and A [..., K]; bias
 *           (rank <= 1, N or 1 values) is added to the rounded product, as
 *           the Add it replaces.
 * gemm = 1: B 2-D, P + bias = alpha·A'·B' + beta·C exactly as Gemm (C,
 *           the bias input, broadcast unidirectionally to [M, N]); A 2-D,
 *           or, with transA = 0, [..., K] taken as its rows (the Gemm of
 *           a flattening Reshape): the result is then [..., N].
 * activation: "" (none), relu, clip (act_alpha = min, act_beta = max),
 * gelu, gelu_tanh, silu, hardsigmoid (act_alpha, act_beta), hardswish,
 * sigmoid, tanh, leakyrelu (act_alpha). residual: an Add operand, numpy
 * broadcast against the activation's result.
 *
 * Every step is rounded to the tensor dtype where the unfused graph
 * rounds (after the product, the bias add, the activation and the
 * residual add) and computed in double like the unfused kernels, so the
 * result equals the unfused sequence on the CPU backend bit for bit. */
#include "runtime/cpu/util.h"
#include "runtime/cpu/linalg.h"

#include <math.h>
#include <string.h>

typedef enum act_kind {
    ACT_NONE, ACT_RELU, ACT_CLIP, ACT_GELU, ACT_GELU_TANH, ACT_SILU, ACT_HSIG, ACT_HSWISH, ACT_SIGMOID, ACT_TANH,
    ACT_LEAKY
} act_kind;

static const char *const act_names[] = {"",    "relu",        "clip",      "gelu",    "gelu_tanh", "silu",
                                        "hardsigmoid", "hardswish", "sigmoid", "tanh",      "leakyrelu"};

static bool act_parse(const char *s, act_kind *out)
{
    if (strcmp(s, "none") == 0) {
        *out = ACT_NONE;
        return true;
    }
    for (size_t i = 0; i < sizeof act_names / sizeof act_names[0]; i++)
        if (strcmp(s, act_names[i]) == 0) {
            *out = (act_kind)i;
            return true;
        }
    return false;
}

static double sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}

/* The formulas of the unfused kernels (k_elementwise.c, k_fused_act.c). */
static double act(act_kind k, double x, double a, double b)
{
    switch (k) {
    case ACT_NONE: return x;
    case ACT_RELU: return x < 0 ? 0.0 : x;
    case ACT_CLIP: return x < a ? a : x > b ? b : x;
    case ACT_GELU: return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440));
    case ACT_GELU_TANH: return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)));
    case ACT_SILU: return x / (1.0 + exp(-x));
    case ACT_HSIG: return fmax(0.0, fmin(1.0, a * x + b));
    case ACT_HSWISH: return x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5));
    case ACT_SIGMOID: return sigmoid(x);
    case ACT_TANH: return tanh(x);
    case ACT_LEAKY: return x < 0 ? a * x : x;
    }
    return x;
}

/* v rounded to dtype t (as storing it in a tensor of t would). */
static double round_to(kn_dtype t, double v)
{
    if (t == KN_F64)
        return v;
    if (t == KN_F32)
        return (double)(float)v;
    uint8_t tmp[8];
    kn_set_f64(t, tmp, 0, v);
    return kn_get_f64(t, tmp, 0);
}

/* P (+ bias) for gemm = 1, as kn_ref_Gemm computes it: rounded once. */
static kn_status product_gemm(kn_kctx *c, const kn_rt_tensor *a, const kn_rt_tensor *b, const kn_rt_tensor *cc,
                              int64_t *m_out, int64_t *n_out, double **out)
{
    bool ta = kn_kctx_attr_int(c, "transA", 0) != 0, tb = kn_kctx_attr_int(c, "transB", 0) != 0;
    if (a->rank < 2 || (ta && a->rank != 2) || b->rank != 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "gemm = 1 needs a 2-D B and a 2-D A (or [..., K] without transA), got "
                            "rank %d and %d", (int)a->rank, (int)b->rank);
    double alpha = kn_kctx_attr_float(c, "alpha", 1.0f), beta = kn_kctx_attr_float(c, "beta", 1.0f);
    int64_t k = ta ? a->dims[0] : a->dims[a->rank - 1];
    int64_t m = ta ? a->dims[1] : k ? a->numel / k : kn_numel(a->rank - 1, a->dims);
    int64_t kb = tb ? b->dims[1] : b->dims[0], n = tb ? b->dims[0] : b->dims[1];
    if (k != kb)
        return kn_kctx_fail(c, KN_ERR_INVALID, "inner dimensions differ (%lld vs %lld)", (long long)k, (long long)kb);
    int64_t csm, csn;
    if (!kn_linalg_gemm_c_strides(cc, m, n, &csm, &csn))
        return kn_kctx_fail(c, KN_ERR_INVALID, "bias does not broadcast to [%lld, %lld]", (long long)m, (long long)n);
    double *acc;
    KN_TRY(kn_linalg_gemm_ab(c, a, ta, b, tb, m, n, k, cc, csm, csn, alpha, beta, &acc));
    for (int64_t i = 0; i < m * n; i++)
        acc[i] = round_to(a->dtype, acc[i]);
    *m_out = m;
    *n_out = n;
    *out = acc;
    return KN_OK;
}

/* P + bias for gemm = 0: MatMul(A, B[K, N]) rounded, then the bias add
 * rounded. */
static kn_status product_matmul(kn_kctx *c, const kn_rt_tensor *a, const kn_rt_tensor *b, const kn_rt_tensor *bias,
                                int64_t *m_out, int64_t *n_out, double **out)
{
    if (a->rank < 1 || b->rank != 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "gemm = 0 needs A of rank >= 1 and a 2-D B (got rank %d and %d)",
                            (int)a->rank, (int)b->rank);
    int64_t k = a->dims[a->rank - 1], n = b->dims[1];
    if (k != b->dims[0])
        return kn_kctx_fail(c, KN_ERR_INVALID, "inner dimensions differ: A has %lld columns, B has %lld rows",
                            (long long)k, (long long)b->dims[0]);
    if (bias && (bias->rank > 1 || (bias->numel != 1 && bias->numel != n)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "bias must have rank <= 1 and 1 or %lld values", (long long)n);
    int64_t m = k ? a->numel / k : kn_numel(a->rank - 1, a->dims);
    double *da, *acc, *dbias = NULL;
    /* B (the weights, in any float dtype) is read in place, widened as used */
    KN_TRY(kn_linalg_to_f64(c, a, &da));
    KN_TRY(kn_linalg_alloc(c, m * n, sizeof *acc, (void **)&acc));
    int nt;
    double *pack;
    KN_TRY(kn_linalg_gemm_setup(c, m, n, k, &nt, &pack));
    kn_gemm_b gb = {.dtype = b->dtype, .data = b->data, .ld = n};
    kn_linalg_gemm_b(m, n, k, da, k, &gb, acc, n, nt, pack);
    if (bias)
        KN_TRY(kn_linalg_to_f64(c, bias, &dbias));
    kn_dtype t = a->dtype;
    for (int64_t i = 0; i < m * n; i++) {
        double v = round_to(t, acc[i]);
        if (dbias)
            v = round_to(t, v + dbias[bias->numel == 1 ? 0 : i % n]);
        acc[i] = v;
    }
    *m_out = m;
    *n_out = n;
    *out = acc;
    return KN_OK;
}

kn_status kn_ref_KILN_GemmEpilogue(kn_kctx *c)
{
    const kn_rt_tensor *a = kn_kctx_in(c, 0), *b = kn_kctx_in(c, 1), *bias = kn_kctx_in(c, 2);
    const kn_rt_tensor *res = kn_kctx_in(c, 3);
    if (!a || !b)
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs inputs A and B");
    kn_dtype t = a->dtype;
    if (!kn_dt_is_float(t) || b->dtype != t || (bias && bias->dtype != t) || (res && res->dtype != t))
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs float inputs of one dtype");
    act_kind ak;
    const char *an = kn_kctx_attr_str(c, "activation", "");
    if (!act_parse(an, &ak))
        return kn_kctx_fail(c, KN_ERR_INVALID, "unknown activation '%s'", an);
    double aa = kn_kctx_attr_float(c, "act_alpha", 0.0f), ab = kn_kctx_attr_float(c, "act_beta", 0.0f);
    bool gemm = kn_kctx_attr_int(c, "gemm", 0) != 0;
    int64_t m = 0, n = 0;
    double *p = NULL;
    if (gemm)
        KN_TRY(product_gemm(c, a, b, bias, &m, &n, &p));
    else
        KN_TRY(product_matmul(c, a, b, bias, &m, &n, &p));
    /* the product's shape: [M, N], or A's leading dims then N */
    kn_rt_tensor pt = {0};
    int64_t pdims[KN_RT_MAX_RANK];
    pt.dtype = t;
    if (gemm && a->rank == 2) {
        pt.rank = 2;
        pdims[0] = m;
        pdims[1] = n;
    } else {
        pt.rank = a->rank;
        memcpy(pdims, a->dims, (size_t)a->rank * sizeof *pdims);
        pdims[a->rank - 1] = n;
    }
    pt.dims = pdims;
    pt.numel = m * n;
    for (int64_t i = 0; ak != ACT_NONE && i < m * n; i++)
        p[i] = round_to(t, act(ak, p[i], aa, ab));
    kn_rt_tensor *y;
    if (!res) {
        KN_TRY(kn_kctx_out(c, 0, t, pt.rank, pt.dims, &y));
        for (int64_t i = 0; i < y->numel; i++)
            kn_set_f64(t, y->data, i, p[i]);
        return KN_OK;
    }
    const kn_rt_tensor *ts[2] = {&pt, res};
    int32_t rank;
    int64_t dims[KN_RT_MAX_RANK];
    KN_TRY(kn_broadcast(c, 2, ts, &rank, dims));
    KN_TRY(kn_kctx_out(c, 0, t, rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    kn_bcast_iter it;
    kn_bcast_init(&it, rank, dims, 2, ts);
    for (int64_t o = 0; o < y->numel; o++, kn_bcast_next(&it))
        kn_set_f64(t, y->data, o, p[it.off[0]] + kn_get_f64(t, res->data, it.off[1]));
    return KN_OK;
}
