/* Shape-family kernels that resample: Resize (nearest, linear, cubic;
 * every coordinate_transformation_mode; antialias; axes; sizes or
 * scales), Upsample and GridSample. Nearest resizing moves element bytes
 * (exact for every dtype); linear and cubic interpolate one axis at a time
 * in double, like ONNX's reference, and round once into the output dtype. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

/* Stores v into dtype t: integers round half to even and saturate. */
static void store_sat(kn_dtype t, void *data, int64_t i, double v)
{
    if (kn_dt_is_int(t) && !isnan(v)) {
        v = nearbyint(v);
        double lo, hi;
        unsigned bits = kn_dtype_bits(t);
        if (kn_dt_is_signed(t)) {
            lo = -ldexp(1.0, (int)bits - 1);
            hi = ldexp(1.0, (int)bits - 1) - 1;
        } else {
            lo = 0;
            hi = ldexp(1.0, (int)bits) - 1;
        }
        if (v <= lo) {
            if (kn_dt_is_signed(t))
                kn_set_i64(t, data, i, (int64_t)lo);
            else
                kn_set_u64(t, data, i, 0);
            return;
        }
        if (v >= hi) { /* hi of 64-bit types is not a double: set the exact max */
            if (kn_dt_is_signed(t))
                kn_set_i64(t, data, i, bits == 64 ? INT64_MAX : (int64_t)hi);
            else
                kn_set_u64(t, data, i, bits == 64 ? UINT64_MAX : (uint64_t)hi);
            return;
        }
    }
    kn_set_f64(t, data, i, v);
}

/* ---- Resize ---- */

typedef enum rs_mode { RS_NEAREST, RS_LINEAR, RS_CUBIC } rs_mode;
typedef enum rs_ctm {
    CTM_HALF_PIXEL,
    CTM_HALF_PIXEL_SYMMETRIC,
    CTM_PYTORCH_HALF_PIXEL,
    CTM_ALIGN_CORNERS,
    CTM_ASYMMETRIC,
    CTM_TF_CROP_AND_RESIZE,
    CTM_TF_HALF_PIXEL_FOR_NN /* opset 11-12 */
} rs_ctm;
typedef enum rs_nearest { NR_ROUND_PREFER_FLOOR, NR_ROUND_PREFER_CEIL, NR_FLOOR, NR_CEIL } rs_nearest;

typedef struct rs_params {
    rs_mode mode;
    rs_ctm ctm;
    rs_nearest nearest;
    double cubic_a;
    bool exclude_outside;
    bool antialias;
    double extrapolation;
} rs_params;

/* One axis's sampling: for output index o, taps idx[o*n + k] (clamped to
 * the input) with weights w[o*n + k]; extra[o] set when o lies outside the
 * crop (tf_crop_and_resize), which yields the extrapolation value. */
typedef struct rs_axis {
    int64_t in, out, n;
    bool identity;
    int64_t *idx;
    double *w;
    bool *extra;
} rs_axis;

/* Source coordinate of output index o (ONNX Resize's formulas). */
static double rs_coord(const rs_params *p, double o, double scale, int64_t in, int64_t out, double r0, double r1,
                       bool *extrapolated)
{
    double out_w = scale * (double)in, x;
    *extrapolated = false;
    switch (p->ctm) {
    case CTM_ALIGN_CORNERS: x = out_w == 1 ? 0 : o * (double)(in - 1) / (out_w - 1); break;
    case CTM_ASYMMETRIC: x = o / scale; break;
    case CTM_TF_CROP_AND_RESIZE:
        x = out_w == 1 ? (r1 - r0) * (double)(in - 1) / 2 : o * (r1 - r0) * (double)(in - 1) / (out_w - 1);
        x += r0 * (double)(in - 1);
        *extrapolated = x < 0 || x > (double)(in - 1);
        break;
    case CTM_TF_HALF_PIXEL_FOR_NN: x = (o + 0.5) / scale; break;
    case CTM_PYTORCH_HALF_PIXEL: x = out_w == 1 ? -0.5 : (o + 0.5) / scale - 0.5; break;
    case CTM_HALF_PIXEL_SYMMETRIC: {
        double adj = (double)out / out_w, center = (double)in / 2;
        x = center * (1 - adj) + (o + 0.5) / scale - 0.5;
        break;
    }
    default: x = (o + 0.5) / scale - 0.5; break;
    }
    return x;
}

static double cubic_w(double x, double a)
{
    x = fabs(x);
    if (x <= 1)
        return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2)
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0;
}

/* Builds the taps of one axis. */
static kn_status rs_axis_build(kn_kctx *c, const rs_params *p, rs_axis *ax, double scale, double r0, double r1,
                               bool roi_trivial)
{
    int64_t in = ax->in, out = ax->out;
    ax->identity = fabs(scale - 1) <= 1e-9 * fmax(1, fabs(scale)) && in == out && roi_trivial;
    /* taps per output: n, and the offset of the first tap from base */
    double s = scale < 1 ? scale : 1;
    int64_t n = 2, start = 0;
    if (p->mode == RS_CUBIC) {
        n = 4;
        start = -1;
        if (p->antialias) {
            start = (int64_t)floor(-2 / s) + 1;
            n = 2 - 2 * start;
        }
    } else if (p->mode == RS_LINEAR && p->antialias) {
        start = (int64_t)floor(-1 / s) + 1;
        n = 2 - 2 * start;
    }
    if (n > (int64_t)1 << 20)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "downscale factor too large for antialiasing");
    ax->n = n;
    ax->idx = kn_kctx_scratch(c, (size_t)(out * n + 1) * sizeof *ax->idx);
    ax->w = kn_kctx_scratch(c, (size_t)(out * n + 1) * sizeof *ax->w);
    ax->extra = kn_kctx_scratch(c, (size_t)(out + 1) * sizeof *ax->extra);
    if (!ax->idx || !ax->w || !ax->extra)
        return KN_ERR_NOMEM;
    for (int64_t o = 0; o < out; o++) {
        int64_t *idx = ax->idx + o * n;
        double *w = ax->w + o * n;
        if (ax->identity) {
            for (int64_t k = 0; k < n; k++) {
                idx[k] = o;
                w[k] = k == 0;
            }
            continue;
        }
        double x = rs_coord(p, (double)o, scale, in, out, r0, r1, &ax->extra[o]);
        if (!isfinite(x) || fabs(x) > 4e18) {
            ax->extra[o] = true; /* only reachable with absurd scales or roi */
            x = 0;
        }
        /* base: the tap left of x (x - 1 when x is a whole number), ratio in (0, 1] */
        double fl = floor(x);
        int64_t base = (int64_t)fl - (fl == x);
        double ratio = x - (double)base;
        double sum = 0;
        for (int64_t k = 0; k < n; k++) {
            double wk;
            if (p->mode == RS_NEAREST) {
                bool up;
                if (ratio == 1)
                    up = true;
                else if (p->nearest == NR_ROUND_PREFER_FLOOR)
                    up = ratio > 0.5;
                else if (p->nearest == NR_ROUND_PREFER_CEIL)
                    up = ratio >= 0.5;
                else
                    up = p->nearest == NR_CEIL;
                wk = (k == 1) == up;
            } else if (p->mode == RS_LINEAR) {
                wk = p->antialias ? fmax(0, 1 - fabs(((double)(start + k) - ratio) * s))
                                  : (k == 0 ? 1 - ratio : ratio);
            } else {
                wk = p->antialias ? cubic_w(((double)(start + k) - ratio) * s, p->cubic_a)
                                  : cubic_w((double)(start + k) - ratio, p->cubic_a);
            }
            idx[k] = base + start + k;
            w[k] = wk;
            sum += wk;
        }
        if (p->antialias && sum != 0)
            for (int64_t k = 0; k < n; k++)
                w[k] /= sum;
        if (p->exclude_outside) {
            sum = 0;
            for (int64_t k = 0; k < n; k++) {
                if (idx[k] < 0 || idx[k] >= in)
                    w[k] = 0;
                sum += w[k];
            }
            if (sum == 0)
                sum = 1;
            for (int64_t k = 0; k < n; k++)
                w[k] /= sum;
        }
        for (int64_t k = 0; k < n; k++)
            idx[k] = idx[k] < 0 ? 0 : idx[k] >= in ? in - 1 : idx[k];
    }
    return KN_OK;
}

/* Resamples x (already sized per axis in `ax`) into y. */
static kn_status rs_run(kn_kctx *c, const rs_params *p, const kn_rt_tensor *x, kn_rt_tensor *y, rs_axis *ax)
{
    int32_t r = x->rank;
    if (y->numel == 0)
        return KN_OK;
    if (p->mode == RS_NEAREST) {
        /* exact: pick elements; the single nonzero tap of each output */
        size_t es = x->dtype == KN_STRING ? sizeof(kn_bytes) : kn_dt_size(x->dtype);
        unsigned char kbuf[16] = {0};
        if (x->dtype != KN_STRING)
            store_sat(x->dtype, kbuf, 0, p->extrapolation);
        int64_t st[KN_RT_MAX_RANK], idx[KN_RT_MAX_RANK];
        kn_strides(r, x->dims, st);
        for (int32_t a = 0; a < r; a++)
            idx[a] = 0;
        char *d = y->data;
        for (int64_t o = 0; o < y->numel; o++, d += es) {
            int64_t off = 0;
            bool extra = false;
            for (int32_t a = 0; a < r; a++) {
                const rs_axis *A = &ax[a];
                int64_t k = A->w[idx[a] * A->n] != 0 ? 0 : 1;
                extra |= A->extra[idx[a]];
                off += A->idx[idx[a] * A->n + k] * st[a];
            }
            if (extra && x->dtype != KN_STRING)
                memcpy(d, kbuf, es);
            else
                memcpy(d, (const char *)x->data + (size_t)off * es, es);
            for (int32_t a = r - 1; a >= 0; a--) {
                if (++idx[a] < y->dims[a])
                    break;
                idx[a] = 0;
            }
        }
        return KN_OK;
    }
    /* separable: resize one axis at a time in double */
    int64_t cur_dims[KN_RT_MAX_RANK];
    memcpy(cur_dims, x->dims, (size_t)r * sizeof *cur_dims);
    double *cur = kn_kctx_scratch(c, (size_t)(x->numel + 1) * sizeof *cur);
    if (!cur)
        return KN_ERR_NOMEM;
    for (int64_t i = 0; i < x->numel; i++)
        cur[i] = kn_get_f64(x->dtype, x->data, i);
    for (int32_t a = 0; a < r; a++) {
        const rs_axis *A = &ax[a];
        if (A->identity)
            continue;
        int64_t outer = 1, inner = 1;
        for (int32_t i = 0; i < a; i++)
            outer *= cur_dims[i];
        for (int32_t i = a + 1; i < r; i++)
            inner *= cur_dims[i];
        int64_t total = outer * A->out * inner;
        double *next = kn_kctx_scratch(c, (size_t)(total + 1) * sizeof *next);
        if (!next)
            return KN_ERR_NOMEM;
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < A->out; j++) {
                double *dst = next + (o * A->out + j) * inner;
                if (A->extra[j]) {
                    for (int64_t i = 0; i < inner; i++)
                        dst[i] = p->extrapolation;
                    continue;
                }
                for (int64_t k = 0; k < A->n; k++) {
                    double wk = A->w[j * A->n + k];
                    const double *src = cur + (o * A->in + A->idx[j * A->n + k]) * inner;
                    for (int64_t i = 0; i < inner; i++)
                        dst[i] += wk * src[i];
                }
            }
        cur = next;
        cur_dims[a] = A->out;
    }
    for (int64_t i = 0; i < y->numel; i++)
        store_sat(y->dtype, y->data, i, cur[i]);
    return KN_OK;
}

/* Reads a float tensor (any float dtype) into doubles; NULL when absent
 * or empty. */
static kn_status read_floats(kn_kctx *c, const kn_rt_tensor *t, double **out, int64_t *n)
{
    *out = NULL;
    *n = 0;
    if (!t || t->numel == 0)
        return KN_OK;
    if (!kn_dt_is_float(t->dtype) || t->rank > 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "expected a 1-D float tensor, got %s rank %d", kn_dtype_name(t->dtype),
                            (int)t->rank);
    double *v = kn_kctx_scratch(c, (size_t)(t->numel + 1) * sizeof *v);
    if (!v)
        return KN_ERR_NOMEM;
    for (int64_t i = 0; i < t->numel; i++)
        v[i] = kn_get_f64(t->dtype, t->data, i);
    *out = v;
    *n = t->numel;
    return KN_OK;
}

static kn_status pick(kn_kctx *c, const char *attr, const char *val, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++)
        if (strcmp(val, names[i]) == 0) {
            *out = i;
            return KN_OK;
        }
    return kn_kctx_fail(c, KN_ERR_INVALID, "%s '%s' is not supported", attr, val);
}

/* Resize with per-axis scales (rank entries, or NULL) or output sizes
 * (rank entries, or NULL); roi has 2*rank entries or is NULL. */
static kn_status resize(kn_kctx *c, const rs_params *p, const kn_rt_tensor *x, const double *scales,
                        const int64_t *sizes, const double *roi)
{
    int32_t r = x->rank;
    size_t es = x->dtype == KN_STRING ? sizeof(kn_bytes) : kn_dt_size(x->dtype);
    if (!es || (p->mode != RS_NEAREST && !kn_dt_is_float(x->dtype) && !kn_dt_is_int(x->dtype)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s input is not supported in this mode", kn_dtype_name(x->dtype));
    int64_t dims[KN_RT_MAX_RANK];
    double sc[KN_RT_MAX_RANK];
    for (int32_t a = 0; a < r; a++) {
        if (sizes) {
            dims[a] = sizes[a];
            sc[a] = scales ? scales[a] : (double)sizes[a] / (double)x->dims[a];
        } else {
            sc[a] = scales[a];
            if (!(sc[a] > 0) || !isfinite(sc[a]))
                return kn_kctx_fail(c, KN_ERR_INVALID, "scale %g on axis %d must be positive", sc[a], (int)a);
            double d = floor(sc[a] * (double)x->dims[a]);
            if (d > 9.0e15)
                return kn_kctx_fail(c, KN_ERR_LIMIT, "output size on axis %d too large", (int)a);
            dims[a] = (int64_t)d;
        }
        if (dims[a] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "output size %lld on axis %d is negative", (long long)dims[a],
                                (int)a);
        if (x->dims[a] == 0 && dims[a] > 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "cannot resize the empty axis %d", (int)a);
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    rs_axis ax[KN_RT_MAX_RANK];
    for (int32_t a = 0; a < r; a++) {
        ax[a].in = x->dims[a];
        ax[a].out = dims[a];
        double r0 = roi ? roi[a] : 0, r1 = roi ? roi[r + a] : 1;
        bool trivial = p->ctm != CTM_TF_CROP_AND_RESIZE || (fabs(r0) <= 1e-9 && fabs(r1 - 1) <= 1e-9);
        KN_TRY(rs_axis_build(c, p, &ax[a], sc[a], r0, r1, trivial));
    }
    return rs_run(c, p, x, y, ax);
}

kn_status kn_ref_Resize(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    int64_t opset = kn_kctx_opset(c);
    int32_t r = x->rank;
    rs_params p;
    int v = 0;
    static const char *const modes[] = {"nearest", "linear", "cubic"};
    KN_TRY(pick(c, "mode", kn_kctx_attr_str(c, "mode", "nearest"), modes, 3, &v));
    p.mode = (rs_mode)v;
    static const char *const ctms[] = {"half_pixel",   "half_pixel_symmetric", "pytorch_half_pixel",
                                       "align_corners", "asymmetric",          "tf_crop_and_resize",
                                       "tf_half_pixel_for_nn"};
    KN_TRY(pick(c, "coordinate_transformation_mode",
                kn_kctx_attr_str(c, "coordinate_transformation_mode", opset < 11 ? "asymmetric" : "half_pixel"), ctms,
                7, &v));
    p.ctm = (rs_ctm)v;
    static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    KN_TRY(pick(c, "nearest_mode", kn_kctx_attr_str(c, "nearest_mode", opset < 11 ? "floor" : "round_prefer_floor"),
                nms, 4, &v));
    p.nearest = (rs_nearest)v;
    if (opset < 11) { /* Resize-10 behaves as Upsample: asymmetric, floor */
        p.ctm = CTM_ASYMMETRIC;
        p.nearest = NR_FLOOR;
    }
    p.cubic_a = kn_kctx_attr_float(c, "cubic_coeff_a", -0.75f);
    p.exclude_outside = kn_kctx_attr_int(c, "exclude_outside", 0) != 0;
    p.antialias = kn_kctx_attr_int(c, "antialias", 0) != 0;
    p.extrapolation = kn_kctx_attr_float(c, "extrapolation_value", 0.0f);
    if (p.antialias && p.mode == RS_NEAREST)
        p.antialias = false; /* no effect on nearest */

    double *roi_in = NULL, *sc_in = NULL;
    int64_t n_roi = 0, n_sc = 0, n_sz = 0, *sz_in = NULL;
    if (opset < 11) {
        KN_TRY(read_floats(c, kn_kctx_in(c, 1), &sc_in, &n_sc));
    } else {
        KN_TRY(read_floats(c, kn_kctx_in(c, 1), &roi_in, &n_roi));
        KN_TRY(read_floats(c, kn_kctx_in(c, 2), &sc_in, &n_sc));
        const kn_rt_tensor *ts = kn_kctx_in(c, 3);
        if (ts && ts->numel > 0) {
            if (ts->dtype != KN_I64)
                return kn_kctx_fail(c, KN_ERR_INVALID, "sizes must be int64");
            KN_TRY(kn_read_ints(c, ts, &sz_in, &n_sz));
        }
    }
    if ((sc_in != NULL) == (sz_in != NULL))
        return kn_kctx_fail(c, KN_ERR_INVALID, "exactly one of scales and sizes must be given");

    /* axes (opset 18): scales/sizes/roi name only these axes */
    int32_t axes[KN_RT_MAX_RANK], na = r;
    uint32_t nattr;
    const int64_t *aattr = opset >= 18 ? kn_kctx_attr_ints(c, "axes", &nattr) : NULL;
    bool seen[KN_RT_MAX_RANK] = {false};
    if (aattr) {
        if (nattr > (uint32_t)r)
            return kn_kctx_fail(c, KN_ERR_INVALID, "%u axes for rank %d", nattr, (int)r);
        na = (int32_t)nattr;
        for (int32_t i = 0; i < na; i++) {
            KN_TRY(kn_axis(c, aattr[i], r, &axes[i]));
            if (seen[axes[i]])
                return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld repeated", (long long)aattr[i]);
            seen[axes[i]] = true;
        }
    } else {
        for (int32_t i = 0; i < r; i++)
            axes[i] = i;
    }
    if ((sc_in && n_sc != na) || (sz_in && n_sz != na))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s has %lld entries for %d axes", sc_in ? "scales" : "sizes",
                            (long long)(sc_in ? n_sc : n_sz), (int)na);
    bool need_roi = p.ctm == CTM_TF_CROP_AND_RESIZE;
    if (need_roi && roi_in && n_roi != 2 * na)
        return kn_kctx_fail(c, KN_ERR_INVALID, "roi has %lld entries for %d axes", (long long)n_roi, (int)na);

    double sc[KN_RT_MAX_RANK], roi[2 * KN_RT_MAX_RANK];
    int64_t sz[KN_RT_MAX_RANK];
    for (int32_t a = 0; a < r; a++) {
        sc[a] = 1;
        sz[a] = x->dims[a];
        roi[a] = 0;
        roi[r + a] = 1;
    }
    for (int32_t i = 0; i < na; i++) {
        if (sc_in)
            sc[axes[i]] = sc_in[i];
        if (sz_in)
            sz[axes[i]] = sz_in[i];
        if (need_roi && roi_in) {
            roi[axes[i]] = roi_in[i];
            roi[r + axes[i]] = roi_in[na + i];
        }
    }
    if (sc_in)
        return resize(c, &p, x, sc, NULL, need_roi ? roi : NULL);

    for (int32_t a = 0; a < r; a++) {
        if (sz[a] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "sizes[%d] = %lld is negative", (int)a, (long long)sz[a]);
        if (x->dims[a] == 0 && sz[a] != 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "cannot resize the empty axis %d", (int)a);
        sc[a] = x->dims[a] ? (double)sz[a] / (double)x->dims[a] : 1;
    }
    const char *pol = kn_kctx_attr_str(c, "keep_aspect_ratio_policy", "stretch");
    if (opset >= 18 && strcmp(pol, "stretch") != 0) {
        bool larger = strcmp(pol, "not_smaller") == 0;
        if (!larger && strcmp(pol, "not_larger") != 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "keep_aspect_ratio_policy '%s' is not supported", pol);
        double s = sc[axes[0]];
        for (int32_t i = 1; i < na; i++)
            s = larger ? fmax(s, sc[axes[i]]) : fmin(s, sc[axes[i]]);
        for (int32_t i = 0; i < na; i++) {
            int32_t a = axes[i];
            sc[a] = s;
            double d = s * (double)x->dims[a] + 0.5;
            if (!(d < 9.0e15))
                return kn_kctx_fail(c, KN_ERR_LIMIT, "output size on axis %d too large", (int)a);
            sz[a] = (int64_t)d;
        }
    }
    return resize(c, &p, x, sc, sz, need_roi ? roi : NULL);
}

kn_status kn_ref_Upsample(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    const char *m = kn_kctx_attr_str(c, "mode", "nearest");
    rs_params p = {RS_NEAREST, CTM_ASYMMETRIC, NR_FLOOR, -0.75, false, false, 0};
    if (strcmp(m, "linear") == 0 || strcmp(m, "bilinear") == 0)
        p.mode = RS_LINEAR;
    else if (strcmp(m, "nearest") != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "mode '%s' is not nearest or linear", m);
    double *sc;
    int64_t n;
    if (kn_kctx_opset(c) >= 9) {
        const kn_rt_tensor *ts;
        KN_TRY(kn_need_in(c, 1, &ts));
        KN_TRY(read_floats(c, ts, &sc, &n));
    } else {
        uint32_t k;
        const float *f = kn_kctx_attr_floats(c, "scales", &k);
        n = k;
        sc = kn_kctx_scratch(c, ((size_t)k + 1) * sizeof *sc);
        if (!sc)
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < k; i++)
            sc[i] = f[i];
    }
    if (n != x->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "scales has %lld entries for rank %d", (long long)n, (int)x->rank);
    for (int64_t i = 0; i < n; i++)
        if (!(sc[i] >= 1))
            return kn_kctx_fail(c, KN_ERR_INVALID, "scale %g on axis %lld must be >= 1", sc[i], (long long)i);
    return resize(c, &p, x, sc, NULL, NULL);
}

/* ---- GridSample ---- */

typedef enum gs_pad { GS_ZEROS, GS_BORDER, GS_REFLECTION } gs_pad;

/* Reflects x into [lo, hi] (PyTorch's reflect_coordinates). */
static double gs_reflect(double x, double lo, double hi)
{
    double rng = hi - lo;
    if (rng <= 0)
        return lo;
    if (x < lo) {
        double dx = lo - x, n = floor(dx / rng), rem = dx - n * rng;
        return fmod(n, 2) == 0 ? lo + rem : hi - rem;
    }
    if (x > hi) {
        double dx = x - hi, n = floor(dx / rng), rem = dx - n * rng;
        return fmod(n, 2) == 0 ? hi - rem : lo + rem;
    }
    return x;
}

/* Input index for integer position i on an axis of size d, or -1 (zero). */
static int64_t gs_pixel(gs_pad pad, int64_t i, int64_t d, double lo, double hi)
{
    if (pad == GS_ZEROS)
        return i >= 0 && i < d ? i : -1;
    if (pad == GS_BORDER)
        return i < 0 ? 0 : i >= d ? d - 1 : i;
    int64_t v = (int64_t)gs_reflect((double)i, lo, hi); /* truncates, as the reference */
    return v < 0 ? 0 : v >= d ? d - 1 : v;
}

kn_status kn_ref_GridSample(kn_kctx *c)
{
    const kn_rt_tensor *x, *g;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &g));
    int32_t nd = x->rank - 2;
    if (nd < 1 || g->rank != x->rank || g->dims[0] != x->dims[0] || g->dims[g->rank - 1] != nd)
        return kn_kctx_fail(c, KN_ERR_INVALID, "expected X (N, C, D1..Dk) and grid (N, O1..Ok, k)");
    if (!kn_dt_is_float(g->dtype) || (!kn_dt_is_float(x->dtype) && !kn_dt_is_int(x->dtype)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "unsupported dtypes %s, %s", kn_dtype_name(x->dtype),
                            kn_dtype_name(g->dtype));
    const char *ms = kn_kctx_attr_str(c, "mode", kn_kctx_opset(c) < 20 ? "bilinear" : "linear");
    int mode; /* 0 nearest, 1 linear, 2 cubic */
    if (strcmp(ms, "nearest") == 0)
        mode = 0;
    else if (strcmp(ms, "bilinear") == 0 || strcmp(ms, "linear") == 0)
        mode = 1;
    else if (strcmp(ms, "bicubic") == 0 || strcmp(ms, "cubic") == 0)
        mode = 2;
    else
        return kn_kctx_fail(c, KN_ERR_INVALID, "mode '%s' is not supported", ms);
    if (mode == 2 && nd != 2 && kn_kctx_opset(c) < 20)
        return kn_kctx_fail(c, KN_ERR_INVALID, "bicubic needs 4-D input");
    const char *ps = kn_kctx_attr_str(c, "padding_mode", "zeros");
    gs_pad pad;
    if (strcmp(ps, "zeros") == 0)
        pad = GS_ZEROS;
    else if (strcmp(ps, "border") == 0)
        pad = GS_BORDER;
    else if (strcmp(ps, "reflection") == 0)
        pad = GS_REFLECTION;
    else
        return kn_kctx_fail(c, KN_ERR_INVALID, "padding_mode '%s' is not supported", ps);
    bool align = kn_kctx_attr_int(c, "align_corners", 0) != 0;

    int64_t N = x->dims[0], C = x->dims[1];
    int64_t dims[KN_RT_MAX_RANK];
    dims[0] = N;
    dims[1] = C;
    for (int32_t i = 0; i < nd; i++)
        dims[2 + i] = g->dims[1 + i];
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    for (int32_t i = 0; i < nd; i++)
        if (x->dims[2 + i] == 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "input spatial dimension %d is empty", (int)i);
    const int64_t *sd = x->dims + 2;
    int64_t plane = kn_numel(nd, sd), opos = kn_numel(nd, g->dims + 1);
    int64_t taps = mode == 0 ? 1 : mode == 1 ? 2 : 4, ncomb = 1;
    for (int32_t i = 0; i < nd; i++)
        ncomb *= taps;
    if (ncomb > (int64_t)1 << 20)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "too many spatial dimensions");
    /* per output position: per axis, taps input indices (or -1) and weights */
    int64_t *tidx = kn_kctx_scratch(c, (size_t)(nd * taps) * sizeof *tidx);
    double *tw = kn_kctx_scratch(c, (size_t)(nd * taps) * sizeof *tw);
    if (!tidx || !tw)
        return KN_ERR_NOMEM;
    int64_t st[KN_RT_MAX_RANK];
    kn_strides(nd, sd, st);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < opos; o++) {
            for (int32_t i = 0; i < nd; i++) {
                /* grid's last axis lists coordinates innermost axis first */
                double gv = kn_get_f64(g->dtype, g->data, (n * opos + o) * nd + (nd - 1 - i));
                double d = (double)sd[i];
                double lo = align ? 0 : -0.5, hi = align ? d - 1 : d - 0.5;
                double xc = (float)(align ? (gv + 1) / 2 * (d - 1) : ((gv + 1) * d - 1) / 2);
                if (mode == 0)
                    xc = nearbyint(xc);
                if (xc < lo || xc > hi) {
                    if (pad == GS_BORDER)
                        xc = xc < 0 ? 0 : xc > d - 1 ? d - 1 : xc;
                    else if (pad == GS_REFLECTION)
                        xc = (float)gs_reflect(xc, lo, hi);
                }
                if (!isfinite(xc) || fabs(xc) > 4e18)
                    xc = -2; /* NaN grid: read as outside */
                int64_t *ti = tidx + i * taps;
                double *tv = tw + i * taps;
                if (mode == 0) {
                    ti[0] = gs_pixel(pad, (int64_t)xc, sd[i], lo, hi);
                    tv[0] = 1;
                    continue;
                }
                double f = floor(xc), t = xc - f;
                int64_t x0 = (int64_t)f;
                if (mode == 1) {
                    ti[0] = gs_pixel(pad, x0, sd[i], lo, hi);
                    ti[1] = gs_pixel(pad, x0 + 1, sd[i], lo, hi);
                    tv[0] = 1 - t;
                    tv[1] = t;
                } else {
                    for (int k = 0; k < 4; k++) {
                        ti[k] = gs_pixel(pad, x0 - 1 + k, sd[i], lo, hi);
                        tv[k] = cubic_w((double)(k - 1) - t, -0.75);
                    }
                }
            }
            for (int64_t ch = 0; ch < C; ch++) {
                const int64_t base = (n * C + ch) * plane;
                double acc = 0;
                for (int64_t comb = 0; comb < ncomb; comb++) {
                    int64_t rem = comb, off = 0;
                    double w = 1;
                    bool in = true;
                    for (int32_t i = nd - 1; i >= 0; i--) {
                        int64_t k = rem % taps;
                        rem /= taps;
                        int64_t ii = tidx[i * taps + k];
                        in = in && ii >= 0;
                        off += ii * st[i];
                        w *= tw[i * taps + k];
                    }
                    if (in)
                        acc += w * kn_get_f64(x->dtype, x->data, base + off);
                }
                store_sat(x->dtype, y->data, (n * C + ch) * opos + o, acc);
            }
        }
    return KN_OK;
}
