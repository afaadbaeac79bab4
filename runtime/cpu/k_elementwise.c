/* Elementwise family, unary part: math functions, activations, Clip and
 * the predicates (IsNaN, IsInf, Not, BitwiseNot). Floats are computed in
 * double and rounded once to the output type; integers in exact int64 or
 * uint64 arithmetic. Binary ops live in k_elementwise_binary.c, casts and
 * quantization in k_elementwise_cast.c. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

/* The attributes the activations read, with ONNX's defaults filled in. */
typedef struct uparams {
    double alpha, beta, gamma, lambd, bias;
    bool tanh_approx; /* Gelu */
} uparams;

typedef double (*f_fn)(double x, const uparams *p);
typedef int64_t (*s_fn)(int64_t x);
typedef uint64_t (*u_fn)(uint64_t x);

/* One unary op: `f` for float types, `s`/`u` for signed/unsigned ints
 * (NULL: the dtype class is not allowed). `ints_via_f` runs integer
 * inputs through `f` (Shrink, whose attributes are floats). */
typedef struct unary_op {
    f_fn f;
    s_fn s;
    u_fn u;
    bool ints_via_f;
} unary_op;

static kn_status unary(kn_kctx *c, const unary_op *op, const uparams *p)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    kn_dtype t = x->dtype;
    bool is_f = kn_dt_is_float(t), is_s = kn_dt_is_int(t) && kn_dt_is_signed(t), is_u = kn_dt_is_int(t) && !is_s;
    bool ok = (is_f && op->f) || (is_s && (op->s || op->ints_via_f)) || (is_u && (op->u || op->ints_via_f));
    if (!ok)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input type %s is not supported", kn_dtype_name(t));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, t, x->rank, x->dims, &y));
    int64_t n = x->numel;
    if (is_f || op->ints_via_f) {
        for (int64_t i = 0; i < n; i++)
            kn_set_f64(t, y->data, i, op->f(kn_get_f64(t, x->data, i), p));
    } else if (is_s) {
        for (int64_t i = 0; i < n; i++)
            kn_set_i64(t, y->data, i, op->s(kn_get_i64(t, x->data, i)));
    } else {
        for (int64_t i = 0; i < n; i++)
            kn_set_u64(t, y->data, i, op->u(kn_get_u64(t, x->data, i)));
    }
    return KN_OK;
}

/* ---- scalar functions ---- */

static double f_abs(double x, const uparams *p) { (void)p; return fabs(x); }
static int64_t s_abs(int64_t x) { return x < 0 ? (int64_t)(0 - (uint64_t)x) : x; }
static uint64_t u_id(uint64_t x) { return x; }
static double f_neg(double x, const uparams *p) { (void)p; return -x; }
static int64_t s_neg(int64_t x) { return (int64_t)(0 - (uint64_t)x); }
static double f_exp(double x, const uparams *p) { (void)p; return exp(x); }
static double f_log(double x, const uparams *p) { (void)p; return log(x); }
static double f_sqrt(double x, const uparams *p) { (void)p; return sqrt(x); }
static double f_recip(double x, const uparams *p) { (void)p; return 1.0 / x; }
static double f_floor(double x, const uparams *p) { (void)p; return floor(x); }
static double f_ceil(double x, const uparams *p) { (void)p; return ceil(x); }
static double f_round(double x, const uparams *p) { (void)p; return nearbyint(x); } /* halves to even */
static double f_sign(double x, const uparams *p) { (void)p; return x > 0 ? 1.0 : x < 0 ? -1.0 : x; }
static int64_t s_sign(int64_t x) { return (x > 0) - (x < 0); }
static uint64_t u_sign(uint64_t x) { return x != 0; }
static double f_sin(double x, const uparams *p) { (void)p; return sin(x); }
static double f_cos(double x, const uparams *p) { (void)p; return cos(x); }
static double f_tan(double x, const uparams *p) { (void)p; return tan(x); }
static double f_asin(double x, const uparams *p) { (void)p; return asin(x); }
static double f_acos(double x, const uparams *p) { (void)p; return acos(x); }
static double f_atan(double x, const uparams *p) { (void)p; return atan(x); }
static double f_sinh(double x, const uparams *p) { (void)p; return sinh(x); }
static double f_cosh(double x, const uparams *p) { (void)p; return cosh(x); }
static double f_asinh(double x, const uparams *p) { (void)p; return asinh(x); }
static double f_acosh(double x, const uparams *p) { (void)p; return acosh(x); }
static double f_atanh(double x, const uparams *p) { (void)p; return atanh(x); }
static double f_erf(double x, const uparams *p) { (void)p; return erf(x); }
static double f_tanh(double x, const uparams *p) { (void)p; return tanh(x); }

static double sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}
static double f_sigmoid(double x, const uparams *p) { (void)p; return sigmoid(x); }

/* log(1 + exp(x)) without overflow for large x. */
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double f_softplus(double x, const uparams *p) { (void)p; return softplus(x); }

static double f_relu(double x, const uparams *p) { (void)p; return x < 0 ? 0.0 : x; } /* NaN stays NaN */
static int64_t s_relu(int64_t x) { return x < 0 ? 0 : x; }
static double f_leaky(double x, const uparams *p) { return x < 0 ? p->alpha * x : x; }
static double f_elu(double x, const uparams *p) { return x < 0 ? p->alpha * expm1(x) : x; }
static double f_selu(double x, const uparams *p) { return p->gamma * (x <= 0 ? p->alpha * expm1(x) : x); }
static double f_celu(double x, const uparams *p) { return x < 0 ? p->alpha * expm1(x / p->alpha) : x; }
static double f_hsig(double x, const uparams *p) { return fmax(0.0, fmin(1.0, p->alpha * x + p->beta)); }
static double f_hswish(double x, const uparams *p) { (void)p; return x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5)); }
static double f_softsign(double x, const uparams *p) { (void)p; return x / (1.0 + fabs(x)); }
static double f_thrrelu(double x, const uparams *p) { return x > p->alpha ? x : 0.0; }
static double f_mish(double x, const uparams *p) { (void)p; return x * tanh(softplus(x)); }

static double f_gelu(double x, const uparams *p)
{
    if (p->tanh_approx) {
        const double k = 0.79788456080286535588; /* sqrt(2/pi) */
        return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
    }
    return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440));
}

static double f_shrink(double x, const uparams *p)
{
    return x < -p->lambd ? x + p->bias : x > p->lambd ? x - p->bias : 0.0;
}

/* ---- kernels ---- */

#define UNARY(id, f, s, u)                                     \
    kn_status kn_ref_##id(kn_kctx *c)                          \
    {                                                          \
        static const unary_op op = {f, s, u, false};           \
        uparams p = {0};                                       \
        return unary(c, &op, &p);                              \
    }

UNARY(Abs, f_abs, s_abs, u_id)
UNARY(Neg, f_neg, s_neg, NULL)
UNARY(Exp, f_exp, NULL, NULL)
UNARY(Log, f_log, NULL, NULL)
UNARY(Sqrt, f_sqrt, NULL, NULL)
UNARY(Reciprocal, f_recip, NULL, NULL)
UNARY(Floor, f_floor, NULL, NULL)
UNARY(Ceil, f_ceil, NULL, NULL)
UNARY(Round, f_round, NULL, NULL)
UNARY(Sign, f_sign, s_sign, u_sign)
UNARY(Sin, f_sin, NULL, NULL)
UNARY(Cos, f_cos, NULL, NULL)
UNARY(Tan, f_tan, NULL, NULL)
UNARY(Asin, f_asin, NULL, NULL)
UNARY(Acos, f_acos, NULL, NULL)
UNARY(Atan, f_atan, NULL, NULL)
UNARY(Sinh, f_sinh, NULL, NULL)
UNARY(Cosh, f_cosh, NULL, NULL)
UNARY(Asinh, f_asinh, NULL, NULL)
UNARY(Acosh, f_acosh, NULL, NULL)
UNARY(Atanh, f_atanh, NULL, NULL)
UNARY(Erf, f_erf, NULL, NULL)
UNARY(Sigmoid, f_sigmoid, NULL, NULL)
UNARY(Tanh, f_tanh, NULL, NULL)
UNARY(Relu, f_relu, s_relu, NULL)
UNARY(HardSwish, f_hswish, NULL, NULL)
UNARY(Softplus, f_softplus, NULL, NULL)
UNARY(Softsign, f_softsign, NULL, NULL)
UNARY(Mish, f_mish, NULL, NULL)

kn_status kn_ref_LeakyRelu(kn_kctx *c)
{
    static const unary_op op = {f_leaky, NULL, NULL, false};
    uparams p = {.alpha = kn_kctx_attr_float(c, "alpha", 0.01f)};
    return unary(c, &op, &p);
}

kn_status kn_ref_Elu(kn_kctx *c)
{
    static const unary_op op = {f_elu, NULL, NULL, false};
    uparams p = {.alpha = kn_kctx_attr_float(c, "alpha", 1.0f)};
    return unary(c, &op, &p);
}

kn_status kn_ref_Selu(kn_kctx *c)
{
    static const unary_op op = {f_selu, NULL, NULL, false};
    uparams p = {.alpha = kn_kctx_attr_float(c, "alpha", 1.67326319217681884765625f),
                 .gamma = kn_kctx_attr_float(c, "gamma", 1.05070102214813232421875f)};
    return unary(c, &op, &p);
}

kn_status kn_ref_Celu(kn_kctx *c)
{
    static const unary_op op = {f_celu, NULL, NULL, false};
    uparams p = {.alpha = kn_kctx_attr_float(c, "alpha", 1.0f)};
    if (p.alpha == 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "alpha must not be 0");
    return unary(c, &op, &p);
}

kn_status kn_ref_HardSigmoid(kn_kctx *c)
{
    static const unary_op op = {f_hsig, NULL, NULL, false};
    uparams p = {.alpha = kn_kctx_attr_float(c, "alpha", 0.2f), .beta = kn_kctx_attr_float(c, "beta", 0.5f)};
    return unary(c, &op, &p);
}

kn_status kn_ref_ThresholdedRelu(kn_kctx *c)
{
    static const unary_op op = {f_thrrelu, NULL, NULL, false};
    uparams p = {.alpha = kn_kctx_attr_float(c, "alpha", 1.0f)};
    return unary(c, &op, &p);
}

kn_status kn_ref_Gelu(kn_kctx *c)
{
    static const unary_op op = {f_gelu, NULL, NULL, false};
    const char *a = kn_kctx_attr_str(c, "approximate", "none");
    if (strcmp(a, "none") != 0 && strcmp(a, "tanh") != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "approximate must be 'none' or 'tanh', got '%s'", a);
    uparams p = {.tanh_approx = strcmp(a, "tanh") == 0};
    return unary(c, &op, &p);
}

kn_status kn_ref_Shrink(kn_kctx *c)
{
    static const unary_op op = {f_shrink, NULL, NULL, true};
    uparams p = {.lambd = kn_kctx_attr_float(c, "lambd", 0.5f), .bias = kn_kctx_attr_float(c, "bias", 0.0f)};
    return unary(c, &op, &p);
}

/* ---- predicates and bitwise ---- */

static kn_status float_to_bool(kn_kctx *c, const kn_rt_tensor **x, kn_rt_tensor **y)
{
    *x = kn_kctx_in(c, 0);
    if (!*x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    if (!kn_dt_is_float((*x)->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input type %s is not a float type", kn_dtype_name((*x)->dtype));
    return kn_kctx_out(c, 0, KN_BOOL, (*x)->rank, (*x)->dims, y);
}

kn_status kn_ref_IsNaN(kn_kctx *c)
{
    const kn_rt_tensor *x;
    kn_rt_tensor *y;
    KN_TRY(float_to_bool(c, &x, &y));
    uint8_t *o = y->data;
    for (int64_t i = 0; i < x->numel; i++)
        o[i] = isnan(kn_get_f64(x->dtype, x->data, i)) != 0;
    return KN_OK;
}

kn_status kn_ref_IsInf(kn_kctx *c)
{
    const kn_rt_tensor *x;
    kn_rt_tensor *y;
    KN_TRY(float_to_bool(c, &x, &y));
    bool neg = kn_kctx_attr_int(c, "detect_negative", 1) != 0, pos = kn_kctx_attr_int(c, "detect_positive", 1) != 0;
    uint8_t *o = y->data;
    for (int64_t i = 0; i < x->numel; i++) {
        double v = kn_get_f64(x->dtype, x->data, i);
        o[i] = isinf(v) && ((v > 0 && pos) || (v < 0 && neg));
    }
    return KN_OK;
}

kn_status kn_ref_Not(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    if (x->dtype != KN_BOOL)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input type %s is not bool", kn_dtype_name(x->dtype));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_BOOL, x->rank, x->dims, &y));
    const uint8_t *a = x->data;
    uint8_t *o = y->data;
    for (int64_t i = 0; i < x->numel; i++)
        o[i] = !a[i];
    return KN_OK;
}

kn_status kn_ref_BitwiseNot(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    if (!kn_dt_is_int(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input type %s is not an integer type", kn_dtype_name(x->dtype));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    for (int64_t i = 0; i < x->numel; i++)
        kn_set_u64(x->dtype, y->data, i, ~kn_get_u64(x->dtype, x->data, i));
    return KN_OK;
}

/* ---- Clip ---- */

/* Reads Clip's optional bound (input k, a scalar or 1-element tensor of
 * the input's type) into *v / *iv / *uv; leaves them when it is omitted. */
static kn_status clip_bound(kn_kctx *c, uint32_t k, kn_dtype t, double *v, int64_t *iv, uint64_t *uv)
{
    const kn_rt_tensor *b = kn_kctx_in(c, k);
    if (!b)
        return KN_OK;
    if (b->dtype != t)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s has type %s, expected %s like the input", k == 1 ? "min" : "max",
                            kn_dtype_name(b->dtype), kn_dtype_name(t));
    if (b->numel != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be a scalar, got %lld elements", k == 1 ? "min" : "max",
                            (long long)b->numel);
    *v = kn_get_f64(t, b->data, 0);
    *iv = kn_get_i64(t, b->data, 0);
    *uv = kn_get_u64(t, b->data, 0);
    return KN_OK;
}

/* y = min(max(x, lo), hi): when lo > hi every element becomes hi, as
 * ONNX specifies; NaN inputs stay NaN. */
kn_status kn_ref_Clip(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    kn_dtype t = x->dtype;
    if (!kn_dt_is_float(t) && !kn_dt_is_int(t))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input type %s is not supported", kn_dtype_name(t));
    double lo = -INFINITY, hi = INFINITY;
    int64_t ilo = INT64_MIN, ihi = INT64_MAX;
    uint64_t ulo = 0, uhi = UINT64_MAX;
    if (kn_kctx_opset(c) < 11) {
        lo = kn_kctx_attr_float(c, "min", -INFINITY);
        hi = kn_kctx_attr_float(c, "max", INFINITY);
    } else {
        KN_TRY(clip_bound(c, 1, t, &lo, &ilo, &ulo));
        KN_TRY(clip_bound(c, 2, t, &hi, &ihi, &uhi));
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, t, x->rank, x->dims, &y));
    for (int64_t i = 0; i < x->numel; i++) {
        if (kn_dt_is_float(t)) {
            double v = kn_get_f64(t, x->data, i);
            if (v < lo)
                v = lo;
            if (v > hi)
                v = hi;
            kn_set_f64(t, y->data, i, v);
        } else if (kn_dt_is_signed(t)) {
            int64_t v = kn_get_i64(t, x->data, i);
            v = v < ilo ? ilo : v;
            kn_set_i64(t, y->data, i, v > ihi ? ihi : v);
        } else {
            uint64_t v = kn_get_u64(t, x->data, i);
            v = v < ulo ? ulo : v;
            kn_set_u64(t, y->data, i, v > uhi ? uhi : v);
        }
    }
    return KN_OK;
}
