/* Softmax-shaped kernels: Softmax, LogSoftmax, Hardmax, and the losses
 * built on them (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss).
 * Everything is computed in double and rounded once into the output. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

static kn_status need_float_input(kn_kctx *c, uint32_t i, const char *what, const kn_rt_tensor **out)
{
    *out = kn_kctx_in(c, i);
    if (!*out)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input %u (%s)", i, what);
    if (!kn_dt_is_float((*out)->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input %u (%s) must be a float tensor, got %s", i, what,
                            kn_dtype_name((*out)->dtype));
    if ((*out)->rank > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "input %u has rank %d, more than %d", i, (int)(*out)->rank,
                            KN_RT_MAX_RANK);
    return KN_OK;
}

/* ---- Softmax, LogSoftmax, Hardmax ---- */

typedef enum sm_kind { SM_SOFTMAX, SM_LOGSOFTMAX, SM_HARDMAX } sm_kind;

/* The slices the op normalises: before opset 13 the input is coerced to
 * 2-D at `axis` (default 1) and each row of prod(dims[axis:]) elements is
 * one slice; from 13 on a slice runs along the one axis (default -1).
 * Element k of slice (o, i) is at (o * n + k) * inner + i. */
static kn_status sm_slices(kn_kctx *c, const kn_rt_tensor *x, int64_t *outer, int64_t *n, int64_t *inner)
{
    int64_t a = kn_kctx_attr_int(c, "axis", kn_kctx_opset(c) >= 13 ? -1 : 1);
    int32_t r = x->rank;
    *outer = *n = *inner = 1;
    if (kn_kctx_opset(c) >= 13) {
        int32_t axis;
        KN_TRY(kn_axis(c, a, r, &axis));
        for (int32_t d = 0; d < r; d++) {
            if (d < axis)
                *outer *= x->dims[d];
            else if (d > axis)
                *inner *= x->dims[d];
        }
        *n = x->dims[axis];
        return KN_OK;
    }
    /* the 2-D coercion also allows axis == rank (rows of one element) */
    if (a < -(int64_t)r || a > r)
        return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld out of range for rank %d", (long long)a, (int)r);
    int32_t axis = (int32_t)(a < 0 ? a + r : a);
    for (int32_t d = 0; d < r; d++) {
        if (d < axis)
            *outer *= x->dims[d];
        else
            *n *= x->dims[d];
    }
    return KN_OK;
}

static kn_status softmax_like(kn_kctx *c, sm_kind kind)
{
    const kn_rt_tensor *x;
    KN_TRY(need_float_input(c, 0, "input", &x));
    int64_t outer, n, inner;
    KN_TRY(sm_slices(c, x, &outer, &n, &inner));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    if (y->numel == 0)
        return KN_OK;
    kn_dtype t = x->dtype;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i;
            /* max, and (Hardmax) the first index holding it; NaN wins */
            double mx = -INFINITY;
            int64_t arg = 0;
            for (int64_t k = 0; k < n; k++) {
                double v = kn_get_f64(t, x->data, base + k * inner);
                if (!isnan(mx) && (v > mx || isnan(v) || k == 0)) {
                    mx = v;
                    arg = k;
                }
            }
            if (kind == SM_HARDMAX) {
                for (int64_t k = 0; k < n; k++)
                    kn_set_f64(t, y->data, base + k * inner, k == arg ? 1.0 : 0.0);
                continue;
            }
            double sum = 0;
            for (int64_t k = 0; k < n; k++)
                sum += exp(kn_get_f64(t, x->data, base + k * inner) - mx);
            double lsum = log(sum);
            for (int64_t k = 0; k < n; k++) {
                double v = kn_get_f64(t, x->data, base + k * inner) - mx;
                kn_set_f64(t, y->data, base + k * inner, kind == SM_SOFTMAX ? exp(v) / sum : v - lsum);
            }
        }
    return KN_OK;
}

kn_status kn_ref_Softmax(kn_kctx *c) { return softmax_like(c, SM_SOFTMAX); }
kn_status kn_ref_LogSoftmax(kn_kctx *c) { return softmax_like(c, SM_LOGSOFTMAX); }
kn_status kn_ref_Hardmax(kn_kctx *c) { return softmax_like(c, SM_HARDMAX); }

/* ---- NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss ---- */

/* The shared loss: input (N, C, d1..dk) holds log-probabilities (lp when
 * given, else read from x), target (N, d1..dk) the class of each sample.
 * loss = -lp[n, target, d] * weight[target], 0 where target ==
 * ignore_index; reduced by "none", "sum" or "mean" (the sum over the sum
 * of the weights used). */
static kn_status nll(kn_kctx *c, const kn_rt_tensor *x, const double *lp, const kn_rt_tensor *target,
                     const kn_rt_tensor *weight)
{
    if (x->rank < 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must have rank >= 2 (N, C, ...), got rank %d", (int)x->rank);
    if (target->dtype != KN_I32 && target->dtype != KN_I64)
        return kn_kctx_fail(c, KN_ERR_INVALID, "target must be int32 or int64, got %s",
                            kn_dtype_name(target->dtype));
    bool shape_ok = target->rank == x->rank - 1 && target->dims[0] == x->dims[0];
    for (int32_t d = 1; shape_ok && d < target->rank; d++)
        shape_ok = target->dims[d] == x->dims[d + 1];
    if (!shape_ok)
        return kn_kctx_fail(c, KN_ERR_INVALID, "target shape does not match input shape (N, C, d1..dk) minus C");
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int32_t d = 2; d < x->rank; d++)
        D *= x->dims[d];
    if (weight && (!kn_dt_is_float(weight->dtype) || weight->rank != 1 || weight->dims[0] != C))
        return kn_kctx_fail(c, KN_ERR_INVALID, "weight must be a float tensor of shape (%lld)", (long long)C);

    const char *red = kn_kctx_attr_str(c, "reduction", "mean");
    bool r_none = strcmp(red, "none") == 0, r_sum = strcmp(red, "sum") == 0, r_mean = strcmp(red, "mean") == 0;
    if (!r_none && !r_sum && !r_mean)
        return kn_kctx_fail(c, KN_ERR_INVALID, "reduction must be none, sum or mean, got '%s'", red);
    bool has_ii = kn_kctx_attr(c, "ignore_index") != NULL;
    int64_t ii = kn_kctx_attr_int(c, "ignore_index", 0);

    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r_none ? target->rank : 0, target->dims, &y));
    double sum = 0, wsum = 0;
    for (int64_t s = 0; s < N; s++)
        for (int64_t d = 0; d < D; d++) {
            int64_t at = s * D + d;
            int64_t t = kn_get_i64(target->dtype, target->data, at);
            double loss = 0, w = 0;
            if (!(has_ii && t == ii)) {
                if (t < 0 || t >= C)
                    return kn_kctx_fail(c, KN_ERR_INVALID, "target %lld at index %lld is outside [0, %lld)",
                                        (long long)t, (long long)at, (long long)C);
                int64_t xi = (s * C + t) * D + d;
                w = weight ? kn_get_f64(weight->dtype, weight->data, t) : 1.0;
                loss = -(lp ? lp[xi] : kn_get_f64(x->dtype, x->data, xi)) * w;
            }
            if (r_none)
                kn_set_f64(y->dtype, y->data, at, loss);
            sum += loss;
            wsum += w;
        }
    if (r_sum)
        kn_set_f64(y->dtype, y->data, 0, sum);
    else if (r_mean)
        kn_set_f64(y->dtype, y->data, 0, sum / wsum); /* all ignored: 0/0 = NaN, like the reference */
    return KN_OK;
}

kn_status kn_ref_NegativeLogLikelihoodLoss(kn_kctx *c)
{
    const kn_rt_tensor *x, *target = kn_kctx_in(c, 1);
    KN_TRY(need_float_input(c, 0, "input", &x));
    if (!target)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input 1 (target)");
    return nll(c, x, NULL, target, kn_kctx_in(c, 2));
}

/* log_prob = LogSoftmax over axis 1 of scores (N, C, d1..dk); the loss is
 * then NegativeLogLikelihoodLoss of log_prob. */
kn_status kn_ref_SoftmaxCrossEntropyLoss(kn_kctx *c)
{
    const kn_rt_tensor *x, *target = kn_kctx_in(c, 1);
    KN_TRY(need_float_input(c, 0, "scores", &x));
    if (!target)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input 1 (labels)");
    if (x->rank < 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "scores must have rank >= 2 (N, C, ...), got rank %d", (int)x->rank);
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int32_t d = 2; d < x->rank; d++)
        D *= x->dims[d];
    double *lp = kn_kctx_scratch(c, (size_t)(x->numel ? x->numel : 1) * sizeof *lp);
    if (!lp)
        return KN_ERR_NOMEM;
    for (int64_t s = 0; s < N; s++)
        for (int64_t d = 0; d < D; d++) {
            int64_t base = s * C * D + d;
            double mx = -INFINITY;
            for (int64_t k = 0; k < C; k++) {
                double v = kn_get_f64(x->dtype, x->data, base + k * D);
                if (v > mx || isnan(v))
                    mx = isnan(mx) ? mx : v;
            }
            double sum = 0;
            for (int64_t k = 0; k < C; k++)
                sum += exp(kn_get_f64(x->dtype, x->data, base + k * D) - mx);
            double lsum = log(sum);
            for (int64_t k = 0; k < C; k++)
                lp[base + k * D] = kn_get_f64(x->dtype, x->data, base + k * D) - mx - lsum;
        }
    KN_TRY(nll(c, x, lp, target, kn_kctx_in(c, 2)));
    if (kn_kctx_n_outputs(c) > 1) {
        kn_rt_tensor *lpt;
        KN_TRY(kn_kctx_out(c, 1, x->dtype, x->rank, x->dims, &lpt));
        for (int64_t i = 0; i < x->numel; i++)
            kn_set_f64(lpt->dtype, lpt->data, i, lp[i]);
    }
    return KN_OK;
}
