/* Reduction kernels: the Reduce* family, ArgMax/ArgMin, CumSum, TopK and
 * MeanVarianceNormalization.
 * Floating-point inputs accumulate in double; integer inputs in exact
 * 64-bit arithmetic (wrapping like the C types they are stored in). */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

/* ---- shared helpers ---- */

static bool is_numeric(kn_dtype t) { return kn_dt_is_float(t) || kn_dt_is_int(t); }

static kn_status need_input(kn_kctx *c, uint32_t i, const char *what, const kn_rt_tensor **out)
{
    *out = kn_kctx_in(c, i);
    if (!*out)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input %u (%s)", i, what);
    if ((*out)->rank > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "input %u has rank %d, more than %d", i, (int)(*out)->rank,
                            KN_RT_MAX_RANK);
    return KN_OK;
}

/* Splits dims around `axis` into outer × n × inner, so that element
 * (o, k, i) of a slice lies at (o * n + k) * inner + i. */
static void split_axis(const kn_rt_tensor *x, int32_t axis, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int32_t d = 0; d < axis; d++)
        *outer *= x->dims[d];
    for (int32_t d = axis + 1; d < x->rank; d++)
        *inner *= x->dims[d];
    *n = x->dims[axis];
}

/* Three-way comparison of elements i and j of one tensor, exact for every
 * numeric dtype. NaN compares equal to NaN and above (nan_high) or below
 * every number, so that it wins like numpy's argmax/argmin/sort do. */
static int cmp_elems(kn_dtype t, const void *d, int64_t i, int64_t j, bool nan_high)
{
    if (kn_dt_is_float(t)) {
        double a = kn_get_f64(t, d, i), b = kn_get_f64(t, d, j);
        bool na = isnan(a), nb = isnan(b);
        if (na || nb) {
            if (na && nb)
                return 0;
            return (na == nan_high) ? 1 : -1;
        }
        return a < b ? -1 : a > b;
    }
    if (t == KN_U64) {
        uint64_t a = kn_get_u64(t, d, i), b = kn_get_u64(t, d, j);
        return a < b ? -1 : a > b;
    }
    int64_t a = kn_get_i64(t, d, i), b = kn_get_i64(t, d, j);
    return a < b ? -1 : a > b;
}

/* ---- Reduce* ---- */

typedef enum red_kind {
    R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_LOGSUM, R_LOGSUMEXP, R_SUMSQ
} red_kind;

/* Walks the input in row-major order while tracking the linear index of
 * the output element each input element reduces into. */
typedef struct red_iter {
    int32_t rank;
    const int64_t *dims;
    int64_t ostride[KN_RT_MAX_RANK]; /* 0 on reduced dims */
    int64_t idx[KN_RT_MAX_RANK];
    int64_t o;
} red_iter;

static void red_iter_init(red_iter *it, const kn_rt_tensor *x, const bool *reduced)
{
    it->rank = x->rank;
    it->dims = x->dims;
    int64_t s = 1;
    for (int32_t d = x->rank - 1; d >= 0; d--) {
        it->ostride[d] = reduced[d] ? 0 : s;
        if (!reduced[d])
            s *= x->dims[d];
        it->idx[d] = 0;
    }
    it->o = 0;
}

static inline void red_iter_next(red_iter *it)
{
    for (int32_t d = it->rank - 1; d >= 0; d--) {
        it->o += it->ostride[d];
        if (++it->idx[d] < it->dims[d])
            return;
        it->o -= it->ostride[d] * it->dims[d];
        it->idx[d] = 0;
    }
}

static void int_range(kn_dtype t, int64_t *lo, int64_t *hi)
{
    switch (t) {
    case KN_I8: *lo = INT8_MIN; *hi = INT8_MAX; break;
    case KN_I16: *lo = INT16_MIN; *hi = INT16_MAX; break;
    case KN_I32: *lo = INT32_MIN; *hi = INT32_MAX; break;
    case KN_U8: *lo = 0; *hi = UINT8_MAX; break;
    case KN_U16: *lo = 0; *hi = UINT16_MAX; break;
    case KN_U32: *lo = 0; *hi = UINT32_MAX; break;
    case KN_BOOL: *lo = 0; *hi = 1; break;
    default: *lo = INT64_MIN; *hi = INT64_MAX; break;
    }
}

/* Float inputs (and integer inputs to the ops that are defined through
 * sqrt/log/exp): accumulate in double, then finish per output element. */
static void reduce_f64(red_kind k, const kn_rt_tensor *x, const bool *reduced, int64_t count, kn_rt_tensor *y,
                       double *acc, double *mx)
{
    int64_t on = y->numel;
    double init = k == R_PROD ? 1.0 : k == R_MAX ? -INFINITY : k == R_MIN ? INFINITY : 0.0;
    for (int64_t o = 0; o < on; o++)
        acc[o] = init;
    red_iter it;
    if (k == R_LOGSUMEXP) {
        /* Shift by the largest finite element so exp cannot overflow; with
         * none, shift by 0 (±inf then give their exact limits). */
        for (int64_t o = 0; o < on; o++)
            mx[o] = -INFINITY;
        red_iter_init(&it, x, reduced);
        for (int64_t i = 0; i < x->numel; i++, red_iter_next(&it)) {
            double v = kn_get_f64(x->dtype, x->data, i);
            if (isfinite(v) && v > mx[it.o])
                mx[it.o] = v;
        }
        for (int64_t o = 0; o < on; o++)
            if (mx[o] == -INFINITY)
                mx[o] = 0;
    }
    red_iter_init(&it, x, reduced);
    for (int64_t i = 0; i < x->numel; i++, red_iter_next(&it)) {
        double v = kn_get_f64(x->dtype, x->data, i), *a = &acc[it.o];
        switch (k) {
        case R_SUM: case R_MEAN: case R_LOGSUM: *a += v; break;
        case R_PROD: *a *= v; break;
        case R_MAX: if (!isnan(*a) && (isnan(v) || v > *a)) *a = v; break; /* NaN sticks */
        case R_MIN: if (!isnan(*a) && (isnan(v) || v < *a)) *a = v; break;
        case R_L1: *a += fabs(v); break;
        case R_L2: case R_SUMSQ: *a += v * v; break;
        case R_LOGSUMEXP: *a += exp(v - mx[it.o]); break;
        }
    }
    for (int64_t o = 0; o < on; o++) {
        double r = acc[o];
        switch (k) {
        case R_MEAN: r = r / (double)count; break;
        case R_L2: r = sqrt(r); break;
        case R_LOGSUM: r = log(r); break;
        case R_LOGSUMEXP: r = log(r) + mx[o]; break;
        default: break;
        }
        kn_set_f64(y->dtype, y->data, o, r);
    }
}

/* Integer (and bool) inputs for the ops that stay in the integers: exact,
 * wrapping in 64 bits (computed as uint64 to keep overflow defined). */
static void reduce_int(red_kind k, const kn_rt_tensor *x, const bool *reduced, int64_t count, kn_rt_tensor *y,
                       uint64_t *acc)
{
    int64_t on = y->numel;
    kn_dtype t = x->dtype;
    int64_t lo, hi;
    int_range(t, &lo, &hi);
    uint64_t init = 0;
    if (k == R_PROD)
        init = 1;
    else if (k == R_MAX)
        init = t == KN_U64 ? 0 : (uint64_t)lo;
    else if (k == R_MIN)
        init = t == KN_U64 ? UINT64_MAX : (uint64_t)hi;
    for (int64_t o = 0; o < on; o++)
        acc[o] = init;
    red_iter it;
    red_iter_init(&it, x, reduced);
    for (int64_t i = 0; i < x->numel; i++, red_iter_next(&it)) {
        uint64_t u = kn_get_u64(t, x->data, i), *a = &acc[it.o];
        int64_t s = (int64_t)u;
        switch (k) {
        case R_SUM: case R_MEAN: *a += u; break;
        case R_PROD: *a *= u; break;
        case R_SUMSQ: *a += u * u; break;
        case R_L1: *a += (t != KN_U64 && s < 0) ? (uint64_t)0 - u : u; break;
        case R_MAX:
            if (t == KN_U64 ? u > *a : s > (int64_t)*a)
                *a = u;
            break;
        case R_MIN:
            if (t == KN_U64 ? u < *a : s < (int64_t)*a)
                *a = u;
            break;
        default: break;
        }
    }
    for (int64_t o = 0; o < on; o++) {
        uint64_t r = acc[o];
        if (k == R_MEAN && count > 0)
            r = t == KN_U64 ? r / (uint64_t)count : (uint64_t)((int64_t)r / count);
        kn_set_u64(y->dtype, y->data, o, r);
    }
}

static const char *red_name[] = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                 "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};

/* Axes come from the `axes` attribute before `axes_input_opset` and from
 * the optional second input from then on (where noop_with_empty_axes
 * applies). Reducing over no axes applies the op to each element alone
 * (ReduceSumSquare squares, ReduceL1 takes |x|), as ONNX's reference does. */
static kn_status reduce(kn_kctx *c, red_kind k, int64_t axes_input_opset)
{
    const kn_rt_tensor *x;
    KN_TRY(need_input(c, 0, "data", &x));
    bool is_minmax = k == R_MAX || k == R_MIN;
    if (!is_numeric(x->dtype) && !(is_minmax && x->dtype == KN_BOOL))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s does not support %s input", red_name[k],
                            kn_dtype_name(x->dtype));

    const int64_t *axes = NULL;
    int64_t n_axes = 0;
    bool noop = false;
    if (kn_kctx_opset(c) >= axes_input_opset) {
        const kn_rt_tensor *ta = kn_kctx_in(c, 1);
        if (ta) {
            int64_t *v;
            KN_TRY(kn_read_ints(c, ta, &v, &n_axes));
            axes = v;
        }
        noop = kn_kctx_attr_int(c, "noop_with_empty_axes", 0) != 0;
    } else {
        uint32_t n;
        axes = kn_kctx_attr_ints(c, "axes", &n);
        n_axes = n;
    }
    bool reduced[KN_RT_MAX_RANK];
    for (int32_t d = 0; d < x->rank; d++)
        reduced[d] = n_axes == 0 && !noop;
    for (int64_t i = 0; i < n_axes; i++) {
        int32_t a;
        KN_TRY(kn_axis(c, axes[i], x->rank, &a));
        if (reduced[a])
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld is given twice", (long long)axes[i]);
        reduced[a] = true;
    }

    bool keepdims = kn_kctx_attr_int(c, "keepdims", 1) != 0;
    int64_t dims[KN_RT_MAX_RANK];
    int32_t r = 0;
    int64_t count = 1; /* elements reduced into each output */
    for (int32_t d = 0; d < x->rank; d++) {
        if (reduced[d])
            count *= x->dims[d];
        if (!reduced[d])
            dims[r++] = x->dims[d];
        else if (keepdims)
            dims[r++] = 1;
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    if (y->numel == 0)
        return KN_OK;

    bool in_ints = !kn_dt_is_float(x->dtype) && k != R_L2 && k != R_LOGSUM && k != R_LOGSUMEXP;
    if (in_ints) {
        uint64_t *acc = kn_kctx_scratch(c, (size_t)y->numel * sizeof *acc);
        if (!acc)
            return KN_ERR_NOMEM;
        reduce_int(k, x, reduced, count, y, acc);
        return KN_OK;
    }
    double *acc = kn_kctx_scratch(c, (size_t)y->numel * sizeof *acc);
    double *mx = k == R_LOGSUMEXP ? kn_kctx_scratch(c, (size_t)y->numel * sizeof *mx) : NULL;
    if (!acc || (k == R_LOGSUMEXP && !mx))
        return KN_ERR_NOMEM;
    reduce_f64(k, x, reduced, count, y, acc, mx);
    return KN_OK;
}

kn_status kn_ref_ReduceSum(kn_kctx *c) { return reduce(c, R_SUM, 13); }
kn_status kn_ref_ReduceMean(kn_kctx *c) { return reduce(c, R_MEAN, 18); }
kn_status kn_ref_ReduceMax(kn_kctx *c) { return reduce(c, R_MAX, 18); }
kn_status kn_ref_ReduceMin(kn_kctx *c) { return reduce(c, R_MIN, 18); }
kn_status kn_ref_ReduceProd(kn_kctx *c) { return reduce(c, R_PROD, 18); }
kn_status kn_ref_ReduceL1(kn_kctx *c) { return reduce(c, R_L1, 18); }
kn_status kn_ref_ReduceL2(kn_kctx *c) { return reduce(c, R_L2, 18); }
kn_status kn_ref_ReduceLogSum(kn_kctx *c) { return reduce(c, R_LOGSUM, 18); }
kn_status kn_ref_ReduceLogSumExp(kn_kctx *c) { return reduce(c, R_LOGSUMEXP, 18); }
kn_status kn_ref_ReduceSumSquare(kn_kctx *c) { return reduce(c, R_SUMSQ, 18); }

/* ---- ArgMax / ArgMin ---- */

/* The first extreme element along the axis (the last one with
 * select_last_index); a NaN counts as the extreme, as in numpy. */
static kn_status arg_extreme(kn_kctx *c, bool is_max)
{
    const kn_rt_tensor *x;
    KN_TRY(need_input(c, 0, "data", &x));
    if (!is_numeric(x->dtype) && x->dtype != KN_BOOL)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s does not support %s input", is_max ? "ArgMax" : "ArgMin",
                            kn_dtype_name(x->dtype));
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 0), x->rank, &axis));
    bool keepdims = kn_kctx_attr_int(c, "keepdims", 1) != 0;
    bool last = kn_kctx_attr_int(c, "select_last_index", 0) != 0;

    int64_t dims[KN_RT_MAX_RANK];
    int32_t r = 0;
    for (int32_t d = 0; d < x->rank; d++) {
        if (d != axis)
            dims[r++] = x->dims[d];
        else if (keepdims)
            dims[r++] = 1;
    }
    int64_t outer, n, inner;
    split_axis(x, axis, &outer, &n, &inner);
    if (n == 0 && outer * inner > 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "cannot take the %s over axis %d of size 0",
                            is_max ? "argmax" : "argmin", (int)axis);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_I64, r, dims, &y));
    int64_t *out = y->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i, best = 0;
            for (int64_t k = 1; k < n; k++) {
                int cm = cmp_elems(x->dtype, x->data, base + k * inner, base + best * inner, is_max);
                if (!is_max)
                    cm = -cm;
                if (cm > 0 || (cm == 0 && last))
                    best = k;
            }
            out[o * inner + i] = best;
        }
    return KN_OK;
}

kn_status kn_ref_ArgMax(kn_kctx *c) { return arg_extreme(c, true); }
kn_status kn_ref_ArgMin(kn_kctx *c) { return arg_extreme(c, false); }

/* ---- CumSum ---- */

kn_status kn_ref_CumSum(kn_kctx *c)
{
    const kn_rt_tensor *x, *ta;
    KN_TRY(need_input(c, 0, "x", &x));
    KN_TRY(need_input(c, 1, "axis", &ta));
    if (!is_numeric(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "CumSum does not support %s input", kn_dtype_name(x->dtype));
    int64_t *av, n_av;
    KN_TRY(kn_read_ints(c, ta, &av, &n_av));
    if (n_av != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "axis must hold one value, got %lld", (long long)n_av);
    int32_t axis;
    KN_TRY(kn_axis(c, av[0], x->rank, &axis));
    bool exclusive = kn_kctx_attr_int(c, "exclusive", 0) != 0;
    bool reverse = kn_kctx_attr_int(c, "reverse", 0) != 0;

    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    int64_t outer, n, inner;
    split_axis(x, axis, &outer, &n, &inner);
    bool is_f = kn_dt_is_float(x->dtype);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double sf = 0;
            uint64_t su = 0;
            for (int64_t j = 0; j < n; j++) {
                int64_t k = reverse ? n - 1 - j : j;
                int64_t at = (o * n + k) * inner + i;
                if (is_f) {
                    double v = kn_get_f64(x->dtype, x->data, at);
                    if (!exclusive)
                        sf += v;
                    kn_set_f64(y->dtype, y->data, at, sf);
                    if (exclusive)
                        sf += v;
                } else {
                    uint64_t v = kn_get_u64(x->dtype, x->data, at);
                    if (!exclusive)
                        su += v;
                    kn_set_u64(y->dtype, y->data, at, su);
                    if (exclusive)
                        su += v;
                }
            }
        }
    return KN_OK;
}

/* ---- TopK ---- */

typedef struct topk_ctx {
    kn_dtype t;
    const void *data;
    int64_t base, stride; /* element k of the slice is at base + k * stride */
    bool largest;
} topk_ctx;

/* Whether slice element a goes strictly before b. */
static bool topk_before(const topk_ctx *s, int64_t a, int64_t b)
{
    int cm = cmp_elems(s->t, s->data, s->base + a * s->stride, s->base + b * s->stride, true);
    return s->largest ? cm > 0 : cm < 0;
}

/* Stable merge sort of idx[0..n) (tmp: n scratch entries); stability
 * keeps equal values in ascending index order, as ONNX asks. */
static void topk_sort(const topk_ctx *s, int64_t *idx, int64_t *tmp, int64_t n)
{
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, o = lo;
            while (i < mid && j < hi)
                tmp[o++] = topk_before(s, idx[j], idx[i]) ? idx[j++] : idx[i++];
            while (i < mid)
                tmp[o++] = idx[i++];
            while (j < hi)
                tmp[o++] = idx[j++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof *idx);
    }
}

kn_status kn_ref_TopK(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(need_input(c, 0, "X", &x));
    if (!is_numeric(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "TopK does not support %s input", kn_dtype_name(x->dtype));
    int64_t k;
    if (kn_kctx_opset(c) >= 10) {
        const kn_rt_tensor *tk;
        KN_TRY(need_input(c, 1, "K", &tk));
        int64_t *kv, nk;
        KN_TRY(kn_read_ints(c, tk, &kv, &nk));
        if (nk != 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "K must hold one value, got %lld", (long long)nk);
        k = kv[0];
    } else {
        if (!kn_kctx_attr(c, "k"))
            return kn_kctx_fail(c, KN_ERR_INVALID, "missing attribute k");
        k = kn_kctx_attr_int(c, "k", 0);
    }
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", -1), x->rank, &axis));
    if (k < 0 || k > x->dims[axis])
        return kn_kctx_fail(c, KN_ERR_INVALID, "k = %lld out of range for axis %d of size %lld", (long long)k,
                            (int)axis, (long long)x->dims[axis]);
    /* sorted=0 leaves the order open: sorted output is conformant. */
    topk_ctx s = {x->dtype, x->data, 0, 0, kn_kctx_attr_int(c, "largest", 1) != 0};

    int64_t dims[KN_RT_MAX_RANK];
    memcpy(dims, x->dims, (size_t)x->rank * sizeof *dims);
    dims[axis] = k;
    kn_rt_tensor *yv, *yi;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &yv));
    KN_TRY(kn_kctx_out(c, 1, KN_I64, x->rank, dims, &yi));
    if (yv->numel == 0)
        return KN_OK;
    int64_t outer, n, inner;
    split_axis(x, axis, &outer, &n, &inner);
    int64_t *idx = kn_kctx_scratch(c, (size_t)n * sizeof *idx);
    int64_t *tmp = kn_kctx_scratch(c, (size_t)n * sizeof *tmp);
    if (!idx || !tmp)
        return KN_ERR_NOMEM;
    size_t es = kn_dt_size(x->dtype);
    int64_t *oi = yi->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            s.base = o * n * inner + i;
            s.stride = inner;
            for (int64_t j = 0; j < n; j++)
                idx[j] = j;
            topk_sort(&s, idx, tmp, n);
            for (int64_t j = 0; j < k; j++) {
                int64_t at = (o * k + j) * inner + i;
                memcpy((char *)yv->data + (size_t)at * es, (const char *)x->data + (size_t)(s.base + idx[j] * inner) * es,
                       es);
                oi[at] = idx[j];
            }
        }
    return KN_OK;
}

/* ---- MeanVarianceNormalization ---- */

/* y = (x - E[x]) / (sqrt(E[(x - E[x])^2]) + 1e-9), the expectations over
 * `axes` (default [0, 2, 3]; empty: all), as ONNX's function body does
 * (which computes the variance as E[x^2] - E[x]^2; two passes are the
 * same value without the cancellation). */
kn_status kn_ref_MeanVarianceNormalization(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(need_input(c, 0, "X", &x));
    if (!kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must be a float tensor, got %s", kn_dtype_name(x->dtype));
    static const int64_t def_axes[] = {0, 2, 3};
    uint32_t n_axes;
    const int64_t *axes = kn_kctx_attr_ints(c, "axes", &n_axes);
    if (!kn_kctx_attr(c, "axes")) {
        axes = def_axes;
        n_axes = 3;
    }
    bool reduced[KN_RT_MAX_RANK];
    for (int32_t d = 0; d < x->rank; d++)
        reduced[d] = n_axes == 0;
    for (uint32_t i = 0; i < n_axes; i++) {
        int32_t a;
        KN_TRY(kn_axis(c, axes[i], x->rank, &a));
        if (reduced[a])
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld is given twice", (long long)axes[i]);
        reduced[a] = true;
    }
    int64_t groups = 1, count = 1;
    for (int32_t d = 0; d < x->rank; d++) {
        if (reduced[d])
            count *= x->dims[d];
        else
            groups *= x->dims[d];
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    if (y->numel == 0)
        return KN_OK;
    double *mean = kn_kctx_scratch(c, (size_t)groups * sizeof *mean);
    double *sd = kn_kctx_scratch(c, (size_t)groups * sizeof *sd);
    if (!mean || !sd)
        return KN_ERR_NOMEM;
    red_iter it;
    red_iter_init(&it, x, reduced);
    for (int64_t i = 0; i < x->numel; i++, red_iter_next(&it))
        mean[it.o] += kn_get_f64(x->dtype, x->data, i);
    for (int64_t g = 0; g < groups; g++)
        mean[g] /= (double)count;
    red_iter_init(&it, x, reduced);
    for (int64_t i = 0; i < x->numel; i++, red_iter_next(&it)) {
        double v = kn_get_f64(x->dtype, x->data, i) - mean[it.o];
        sd[it.o] += v * v;
    }
    for (int64_t g = 0; g < groups; g++)
        sd[g] = sqrt(sd[g] / (double)count) + 1e-9;
    red_iter_init(&it, x, reduced);
    for (int64_t i = 0; i < x->numel; i++, red_iter_next(&it))
        kn_set_f64(y->dtype, y->data, i, (kn_get_f64(x->dtype, x->data, i) - mean[it.o]) / sd[it.o]);
    return KN_OK;
}
