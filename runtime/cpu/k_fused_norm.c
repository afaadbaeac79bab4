/* RMSNormalization (ai.onnx opset 23), which passes/fuse_norm.c makes from
 * the decomposed RMSNorm of Llama/Qwen2 exports. The mean square is taken
 * in double, like the other normalizations' statistics. */
#include "runtime/cpu/util.h"

#include <math.h>

/* Y = X / sqrt(mean(X^2) + epsilon) * scale over the dims from `axis`
 * (default -1) on; scale broadcasts over that row shape. */
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
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
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
