/* RMSNormalization (ai.onnx opset 23), which passes/fuse_norm.c makes from
 * the decomposed RMSNorm of Llama/Qwen2 exports, and kiln.SkipRMSNorm
 * (passes/fuse_skip_norm.c: the residual Add before it). The mean square
 * is taken in double, like the other normalizations' statistics. */
#include "runtime/cpu/util.h"

#include <math.h>

/* Y = X / sqrt(mean(X^2) + epsilon) * scale over the dims from `axis` on
 * (x's data: for SkipRMSNorm, the rounded sum); y allocated by the caller
 * with x's shape. */
static kn_status rms_rows(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *scale, int32_t axis,
                          kn_rt_tensor *y)
{
    if (!kn_fits_trailing(scale, x, axis))
        return kn_kctx_fail(c, KN_ERR_INVALID, "scale must broadcast to the normalised shape (dims %d..%d of X)",
                            (int)axis, (int)x->rank - 1);
    int64_t stash = kn_kctx_attr_int(c, "stash_type", 1);
    if (!kn_dtype_valid((int)stash) || !kn_dt_is_float((kn_dtype)stash))
        return kn_kctx_fail(c, KN_ERR_INVALID, "stash_type %lld is not a float type", (long long)stash);
    double eps = kn_kctx_attr_float(c, "epsilon", 1e-5f);
    int64_t rows = 1, cols = 1;
    for (int32_t d = 0; d < x->rank; d++) {
        if (d < axis)
            rows *= x->dims[d];
        else
            cols *= x->dims[d];
    }
    int64_t *si = kn_kctx_scratch(c, (size_t)cols * sizeof *si + 1);
    if (!si)
        return KN_ERR_NOMEM;
    for (int64_t k = 0; k < cols; k++)
        si[k] = kn_trailing_index(scale, x, k);
    for (int64_t r = 0; r < rows; r++) {
        double q = 0;
        for (int64_t k = 0; k < cols; k++) {
            double v = kn_get_f64(x->dtype, x->data, r * cols + k);
            q += v * v;
        }
        double inv = 1.0 / sqrt((cols ? q / (double)cols : 0) + eps);
        for (int64_t k = 0; k < cols; k++) {
            double v = kn_get_f64(x->dtype, x->data, r * cols + k) * inv;
            kn_set_f64(y->dtype, y->data, r * cols + k, v * kn_get_f64(scale->dtype, scale->data, si[k]));
        }
    }
    return KN_OK;
}

kn_status kn_ref_RMSNormalization(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *scale = kn_kctx_in(c, 1);
    if (!x || !scale)
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs inputs X and scale");
    if (!kn_dt_is_float(x->dtype) || !kn_dt_is_float(scale->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "X and scale must be float tensors, got %s and %s",
                            kn_dtype_name(x->dtype), kn_dtype_name(scale->dtype));
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", -1), x->rank, &axis));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    return rms_rows(c, x, scale, axis, y);
}

/* sum = X + skip (same shape and dtype; added in double and rounded to the
 * dtype, as the Add it replaces), Y = RMSNormalization(sum) with the
 * node's axis, epsilon and stash_type. */
kn_status kn_ref_KILN_SkipRMSNorm(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *skip = kn_kctx_in(c, 1), *scale = kn_kctx_in(c, 2);
    if (!x || !skip || !scale)
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs inputs X, skip and scale");
    if (!kn_dt_is_float(x->dtype) || !kn_dt_is_float(scale->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "X, skip and scale must be float tensors");
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", -1), x->rank, &axis));
    kn_rt_tensor *y, *sum, tmp;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    KN_TRY(kn_skip_sum(c, x, skip, &tmp, &sum));
    return rms_rows(c, sum, scale, axis, y);
}
