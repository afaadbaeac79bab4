/* Normalization kernels: BatchNormalization, InstanceNormalization,
 * LayerNormalization (and kiln.SkipLayerNorm: the residual Add before it),
 * GroupNormalization, LpNormalization and LRN.
 * Statistics are computed in double with two passes (mean, then the mean
 * squared deviation), so the variance is never negative. */
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

/* An optional per-channel parameter: absent, or float with n elements. */
static kn_status param_input(kn_kctx *c, uint32_t i, const char *what, int64_t n, bool required,
                             const kn_rt_tensor **out)
{
    *out = kn_kctx_in(c, i);
    if (!*out)
        return required ? kn_kctx_fail(c, KN_ERR_INVALID, "missing input %u (%s)", i, what) : KN_OK;
    if (!kn_dt_is_float((*out)->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input %u (%s) must be a float tensor, got %s", i, what,
                            kn_dtype_name((*out)->dtype));
    if ((*out)->numel != n || (*out)->rank > 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input %u (%s) must have shape (%lld), got %lld elements in rank %d",
                            i, what, (long long)n, (long long)(*out)->numel, (int)(*out)->rank);
    return KN_OK;
}

static double param(const kn_rt_tensor *t, int64_t i, double def)
{
    return t ? kn_get_f64(t->dtype, t->data, i) : def;
}

/* N × C × D view of an (N, C, d1..dk) tensor, rank >= 2. */
static kn_status ncd(kn_kctx *c, const kn_rt_tensor *x, int64_t *N, int64_t *C, int64_t *D)
{
    if (x->rank < 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must have rank >= 2 (N, C, ...), got rank %d", (int)x->rank);
    *N = x->dims[0];
    *C = x->dims[1];
    *D = 1;
    for (int32_t d = 2; d < x->rank; d++)
        *D *= x->dims[d];
    return KN_OK;
}

/* Mean and population variance of n elements of x from `base` with step
 * `stride`. */
static void moments(const kn_rt_tensor *x, int64_t base, int64_t stride, int64_t n, double *mean, double *var)
{
    double s = 0, q = 0;
    for (int64_t k = 0; k < n; k++)
        s += kn_get_f64(x->dtype, x->data, base + k * stride);
    double m = n ? s / (double)n : 0;
    for (int64_t k = 0; k < n; k++) {
        double v = kn_get_f64(x->dtype, x->data, base + k * stride) - m;
        q += v * v;
    }
    *mean = m;
    *var = n ? q / (double)n : 0;
}

/* ---- BatchNormalization ---- */

/* Inference: y = scale * (x - mean) / sqrt(var + epsilon) + B per channel.
 * Training (training_mode=1 from opset 14; before, when the extra
 * outputs are asked for): the batch's own statistics normalise, and the
 * running statistics come out as input * momentum + batch * (1 -
 * momentum). Before opset 9, spatial=0 gives each (channel, position) its
 * own parameters. */
kn_status kn_ref_BatchNormalization(kn_kctx *c)
{
    const kn_rt_tensor *x, *scale, *bias, *mean, *var;
    KN_TRY(need_float_input(c, 0, "X", &x));
    int64_t N = 0, C = 0, D = 0;
    KN_TRY(ncd(c, x, &N, &C, &D));
    int64_t opset = kn_kctx_opset(c);
    bool spatial = opset >= 9 || kn_kctx_attr_int(c, "spatial", 1) != 0;
    int64_t P = spatial ? C : C * D; /* parameters per input */
    KN_TRY(param_input(c, 1, "scale", P, true, &scale));
    KN_TRY(param_input(c, 2, "B", P, true, &bias));
    KN_TRY(param_input(c, 3, "input_mean", P, true, &mean));
    KN_TRY(param_input(c, 4, "input_var", P, true, &var));
    double eps = kn_kctx_attr_float(c, "epsilon", 1e-5f);
    double momentum = kn_kctx_attr_float(c, "momentum", 0.9f);
    bool training = opset >= 14 ? kn_kctx_attr_int(c, "training_mode", 0) != 0
                                : kn_kctx_out_wanted(c, 1) || kn_kctx_out_wanted(c, 2) ||
                                      kn_kctx_out_wanted(c, 3) || kn_kctx_out_wanted(c, 4);
    if (opset < 14 && kn_kctx_attr_int(c, "is_test", 0) != 0)
        training = false;

    double *bm = kn_kctx_scratch(c, (size_t)P * sizeof *bm), *bv = kn_kctx_scratch(c, (size_t)P * sizeof *bv);
    if (!bm || !bv)
        return KN_ERR_NOMEM;
    /* element (n, ch, d) uses parameter p = ch (spatial) or ch * D + d */
    if (training) {
        for (int64_t p = 0; p < P; p++) {
            int64_t ch = spatial ? p : p / D, d_lo = spatial ? 0 : p % D, d_hi = spatial ? D : d_lo + 1;
            int64_t cnt = N * (d_hi - d_lo);
            double s = 0, q = 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t d = d_lo; d < d_hi; d++)
                    s += kn_get_f64(x->dtype, x->data, (n * C + ch) * D + d);
            double m = cnt ? s / (double)cnt : 0;
            for (int64_t n = 0; n < N; n++)
                for (int64_t d = d_lo; d < d_hi; d++) {
                    double v = kn_get_f64(x->dtype, x->data, (n * C + ch) * D + d) - m;
                    q += v * v;
                }
            bm[p] = m;
            bv[p] = cnt ? q / (double)cnt : 0;
        }
    } else {
        for (int64_t p = 0; p < P; p++) {
            bm[p] = param(mean, p, 0);
            bv[p] = param(var, p, 1);
        }
    }

    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    for (int64_t n = 0; n < N; n++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t d = 0; d < D; d++) {
                int64_t i = (n * C + ch) * D + d, p = spatial ? ch : ch * D + d;
                double v = kn_get_f64(x->dtype, x->data, i);
                double r = param(scale, p, 1) * (v - bm[p]) / sqrt(bv[p] + eps) + param(bias, p, 0);
                kn_set_f64(y->dtype, y->data, i, r);
            }
    if (!training)
        return KN_OK;
    int64_t pdims[KN_RT_MAX_RANK];
    int32_t prank = spatial ? 1 : x->rank - 1;
    pdims[0] = C;
    for (int32_t d = 1; d < prank; d++)
        pdims[d] = x->dims[d + 1];
    const double *stat[4] = {bm, bv, bm, bv};
    const kn_rt_tensor *run[2] = {mean, var};
    for (uint32_t o = 1; o <= 4 && o < kn_kctx_n_outputs(c); o++) {
        if (opset >= 14 && o > 2)
            break;
        kn_rt_tensor *t;
        KN_TRY(kn_kctx_out(c, o, mean->dtype, prank, pdims, &t));
        for (int64_t p = 0; p < P; p++) {
            double v = stat[o - 1][p];
            if (o <= 2)
                v = param(run[o - 1], p, 0) * momentum + v * (1 - momentum);
            kn_set_f64(t->dtype, t->data, p, v);
        }
    }
    return KN_OK;
}

/* ---- InstanceNormalization, GroupNormalization ---- */

/* Normalises each of N × G groups of (C / G) × D consecutive elements,
 * then applies scale and bias per channel (or per group: GroupNormalization
 * before opset 21). */
static kn_status group_norm(kn_kctx *c, const kn_rt_tensor *x, int64_t G, const kn_rt_tensor *scale,
                            const kn_rt_tensor *bias, bool per_group_params, double eps)
{
    int64_t N = 0, C = 0, D = 0;
    KN_TRY(ncd(c, x, &N, &C, &D));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    int64_t cg = C / G, len = cg * D;
    for (int64_t n = 0; n < N; n++)
        for (int64_t g = 0; g < G; g++) {
            int64_t base = (n * G + g) * len;
            double m, v;
            moments(x, base, 1, len, &m, &v);
            double inv = 1.0 / sqrt(v + eps);
            for (int64_t k = 0; k < len; k++) {
                int64_t p = per_group_params ? g : g * cg + k / D;
                double r = (kn_get_f64(x->dtype, x->data, base + k) - m) * inv;
                kn_set_f64(y->dtype, y->data, base + k, r * param(scale, p, 1) + param(bias, p, 0));
            }
        }
    return KN_OK;
}

kn_status kn_ref_InstanceNormalization(kn_kctx *c)
{
    const kn_rt_tensor *x, *scale, *bias;
    KN_TRY(need_float_input(c, 0, "input", &x));
    int64_t N = 0, C = 0, D = 0;
    KN_TRY(ncd(c, x, &N, &C, &D));
    KN_TRY(param_input(c, 1, "scale", C, true, &scale));
    KN_TRY(param_input(c, 2, "B", C, true, &bias));
    return group_norm(c, x, C, scale, bias, false, kn_kctx_attr_float(c, "epsilon", 1e-5f));
}

kn_status kn_ref_GroupNormalization(kn_kctx *c)
{
    const kn_rt_tensor *x, *scale, *bias;
    KN_TRY(need_float_input(c, 0, "X", &x));
    int64_t N = 0, C = 0, D = 0;
    KN_TRY(ncd(c, x, &N, &C, &D));
    if (!kn_kctx_attr(c, "num_groups"))
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing attribute num_groups");
    int64_t G = kn_kctx_attr_int(c, "num_groups", 1);
    if (G <= 0 || C % G != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "num_groups %lld does not divide the %lld channels", (long long)G,
                            (long long)C);
    bool per_group = kn_kctx_opset(c) < 21;
    KN_TRY(param_input(c, 1, "scale", per_group ? G : C, true, &scale));
    KN_TRY(param_input(c, 2, "bias", per_group ? G : C, true, &bias));
    return group_norm(c, x, G, scale, bias, per_group, kn_kctx_attr_float(c, "epsilon", 1e-5f));
}

/* ---- LayerNormalization ---- */

/* Normalises each row of prod(dims[axis:]) elements; Scale and B
 * broadcast over that row shape. Mean and InvStdDev have shape
 * dims[:axis] + [1]*(rank-axis) and the dtype stash_type names. */
static kn_status layer_norm(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *scale, const kn_rt_tensor *bias,
                            bool stats)
{
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", -1), x->rank, &axis));
    if (!kn_fits_trailing(scale, x, axis) || (bias && !kn_fits_trailing(bias, x, axis)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Scale and B must broadcast to the normalised shape (dims %d..%d of X)",
                            (int)axis, (int)x->rank - 1);
    int64_t stash = kn_kctx_attr_int(c, "stash_type", 1);
    if (!kn_dtype_valid((int)stash) || !kn_dt_is_float((kn_dtype)stash))
        return kn_kctx_fail(c, KN_ERR_INVALID, "stash_type %lld is not a float type", (long long)stash);
    double eps = kn_kctx_attr_float(c, "epsilon", 1e-5f);

    int64_t rows = 1, cols = 1, sdims[KN_RT_MAX_RANK];
    for (int32_t d = 0; d < x->rank; d++) {
        if (d < axis)
            rows *= x->dims[d];
        else
            cols *= x->dims[d];
        sdims[d] = d < axis ? x->dims[d] : 1;
    }
    kn_rt_tensor *y, *ym = NULL, *yi = NULL;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    if (stats && kn_kctx_n_outputs(c) > 1)
        KN_TRY(kn_kctx_out(c, 1, (kn_dtype)stash, x->rank, sdims, &ym));
    if (stats && kn_kctx_n_outputs(c) > 2)
        KN_TRY(kn_kctx_out(c, 2, (kn_dtype)stash, x->rank, sdims, &yi));
    int64_t *si = kn_kctx_scratch(c, (size_t)cols * sizeof *si), *bi = kn_kctx_scratch(c, (size_t)cols * sizeof *bi);
    if (!si || !bi)
        return KN_ERR_NOMEM;
    for (int64_t k = 0; k < cols; k++) {
        si[k] = kn_trailing_index(scale, x, k);
        bi[k] = bias ? kn_trailing_index(bias, x, k) : 0;
    }
    for (int64_t r = 0; r < rows; r++) {
        double m, v;
        moments(x, r * cols, 1, cols, &m, &v);
        double inv = 1.0 / sqrt(v + eps);
        for (int64_t k = 0; k < cols; k++) {
            double nv = (kn_get_f64(x->dtype, x->data, r * cols + k) - m) * inv;
            double out = nv * kn_get_f64(scale->dtype, scale->data, si[k]) + param(bias, bi[k], 0);
            kn_set_f64(y->dtype, y->data, r * cols + k, out);
        }
        if (ym)
            kn_set_f64(ym->dtype, ym->data, r, m);
        if (yi)
            kn_set_f64(yi->dtype, yi->data, r, inv);
    }
    return KN_OK;
}

kn_status kn_ref_LayerNormalization(kn_kctx *c)
{
    const kn_rt_tensor *x, *scale, *bias = kn_kctx_in(c, 2);
    KN_TRY(need_float_input(c, 0, "X", &x));
    KN_TRY(need_float_input(c, 1, "Scale", &scale));
    if (bias)
        KN_TRY(need_float_input(c, 2, "B", &bias));
    return layer_norm(c, x, scale, bias, true);
}

/* kiln.SkipLayerNorm (passes/fuse_skip_norm.c): sum = X + skip (same shape
 * and dtype; added in double and rounded to the dtype, as the Add it
 * replaces; output 1 when the node has it), Y = LayerNormalization(sum,
 * Scale, [B]) with the node's axis, epsilon and stash_type. */
kn_status kn_ref_KILN_SkipLayerNorm(kn_kctx *c)
{
    const kn_rt_tensor *x, *skip, *scale, *bias = kn_kctx_in(c, 3);
    KN_TRY(need_float_input(c, 0, "X", &x));
    KN_TRY(need_float_input(c, 1, "skip", &skip));
    KN_TRY(need_float_input(c, 2, "Scale", &scale));
    if (bias)
        KN_TRY(need_float_input(c, 3, "B", &bias));
    kn_rt_tensor *sum, tmp;
    KN_TRY(kn_skip_sum(c, x, skip, &tmp, &sum));
    return layer_norm(c, sum, scale, bias, false);
}

/* ---- LpNormalization ---- */

/* y = x / ||x||_p along axis (p = 1 or 2); a zero norm gives 0. */
kn_status kn_ref_LpNormalization(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(need_float_input(c, 0, "input", &x));
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", -1), x->rank, &axis));
    int64_t p = kn_kctx_attr_int(c, "p", 2);
    if (p != 1 && p != 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "p must be 1 or 2, got %lld", (long long)p);
    int64_t outer = 1, n = x->dims[axis], inner = 1;
    for (int32_t d = 0; d < x->rank; d++) {
        if (d < axis)
            outer *= x->dims[d];
        else if (d > axis)
            inner *= x->dims[d];
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i;
            double s = 0;
            for (int64_t k = 0; k < n; k++) {
                double v = kn_get_f64(x->dtype, x->data, base + k * inner);
                s += p == 1 ? fabs(v) : v * v;
            }
            double norm = p == 1 ? s : sqrt(s);
            for (int64_t k = 0; k < n; k++) {
                double v = kn_get_f64(x->dtype, x->data, base + k * inner);
                kn_set_f64(y->dtype, y->data, base + k * inner, norm == 0 ? 0 : v / norm);
            }
        }
    return KN_OK;
}

/* ---- LRN ---- */

/* y = x / (bias + alpha / size * sum of x^2 over the channels
 * [c - floor((size-1)/2), c + ceil((size-1)/2)])^beta. */
kn_status kn_ref_LRN(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(need_float_input(c, 0, "X", &x));
    int64_t N = 0, C = 0, D = 0;
    KN_TRY(ncd(c, x, &N, &C, &D));
    if (!kn_kctx_attr(c, "size"))
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing attribute size");
    int64_t size = kn_kctx_attr_int(c, "size", 1);
    if (size <= 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "size must be positive, got %lld", (long long)size);
    double alpha = kn_kctx_attr_float(c, "alpha", 1e-4f), beta = kn_kctx_attr_float(c, "beta", 0.75f);
    double bias = kn_kctx_attr_float(c, "bias", 1.0f);
    int64_t lo = (size - 1) / 2, hi = size / 2; /* floor and ceil of (size-1)/2 */
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    for (int64_t n = 0; n < N; n++)
        for (int64_t ch = 0; ch < C; ch++)
            for (int64_t d = 0; d < D; d++) {
                int64_t c0 = ch - lo < 0 ? 0 : ch - lo, c1 = ch + hi >= C ? C - 1 : ch + hi;
                double sq = 0;
                for (int64_t k = c0; k <= c1; k++) {
                    double v = kn_get_f64(x->dtype, x->data, (n * C + k) * D + d);
                    sq += v * v;
                }
                int64_t i = (n * C + ch) * D + d;
                double v = kn_get_f64(x->dtype, x->data, i);
                kn_set_f64(y->dtype, y->data, i, v / pow(bias + alpha / (double)size * sq, beta));
            }
    return KN_OK;
}
