/* linalg family, part 3: pooling (MaxPool, AveragePool, LpPool, their
 * Global forms, MaxUnpool) and region pooling (MaxRoiPool, RoiAlign), of
 * any spatial rank where the op allows it; computed in double. */
#include "runtime/cpu/util.h"
#include "runtime/cpu/linalg.h"

#include <math.h>
#include <string.h>

/* Defined in k_linalg.c. */

#define MAX_SP (KN_RT_MAX_RANK - 2)

/* A pooling's geometry: X [N, C, in...] -> Y [N, C, out...]; window
 * positions o·s - ph + kk·d. */
typedef struct pool_geom {
    int32_t nsp;
    int64_t nc;
    int64_t in[MAX_SP], k[MAX_SP], s[MAX_SP], d[MAX_SP], ph[MAX_SP], pt[MAX_SP], out[MAX_SP];
    int64_t in_sp, out_sp, k_sp;
} pool_geom;

static kn_status sp_attr(kn_kctx *c, const char *name, int32_t n, int64_t def, int64_t lo, int64_t *out)
{
    uint32_t cnt;
    const int64_t *v = kn_kctx_attr_ints(c, name, &cnt);
    if (v && cnt != (uint32_t)n)
        return kn_kctx_fail(c, KN_ERR_INVALID, "attribute %s has %u entries, expected %d", name, cnt, (int)n);
    for (int32_t i = 0; i < n; i++) {
        out[i] = v ? v[i] : def;
        if (out[i] < lo)
            return kn_kctx_fail(c, KN_ERR_INVALID, "attribute %s[%d] = %lld must be >= %lld", name, (int)i,
                                (long long)out[i], (long long)lo);
    }
    return KN_OK;
}

static kn_status check_x(kn_kctx *c, const kn_rt_tensor *x, int32_t min_rank)
{
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input X");
    if (x->rank < min_rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input X must have rank >= %d (got %d)", (int)min_rank, (int)x->rank);
    if (!kn_dt_is_float(x->dtype) && x->dtype != KN_I8 && x->dtype != KN_U8)
        return kn_kctx_fail(c, KN_ERR_INVALID, "pooling does not support %s", kn_dtype_name(x->dtype));
    return KN_OK;
}

/* Output size: SAME auto_pad gives ceil(in / s) with the padding split
 * (the odd one at the end for SAME_UPPER, at the start for SAME_LOWER);
 * explicit pads give floor (or ceil, with ceil_mode) of
 * (in + pads - effective kernel) / s + 1, where a last window that would
 * start in the end padding is dropped. */
static kn_status pool_geom_init(kn_kctx *c, const kn_rt_tensor *x, pool_geom *g)
{
    g->nsp = x->rank - 2;
    g->nc = x->dims[0] * x->dims[1];
    uint32_t nk;
    const int64_t *ks = kn_kctx_attr_ints(c, "kernel_shape", &nk);
    if (!ks)
        return kn_kctx_fail(c, KN_ERR_INVALID, "attribute kernel_shape is required");
    if (nk != (uint32_t)g->nsp)
        return kn_kctx_fail(c, KN_ERR_INVALID, "kernel_shape has %u entries, X has %d spatial dimensions", nk,
                            (int)g->nsp);
    KN_TRY(sp_attr(c, "kernel_shape", g->nsp, 1, 1, g->k));
    KN_TRY(sp_attr(c, "strides", g->nsp, 1, 1, g->s));
    KN_TRY(sp_attr(c, "dilations", g->nsp, 1, 1, g->d));
    uint32_t np;
    const int64_t *pads = kn_kctx_attr_ints(c, "pads", &np);
    if (pads && np != 2u * (uint32_t)g->nsp)
        return kn_kctx_fail(c, KN_ERR_INVALID, "pads has %u entries, expected %d", np, 2 * (int)g->nsp);
    const char *ap = kn_kctx_attr_str(c, "auto_pad", "NOTSET");
    bool same_u = !strcmp(ap, "SAME_UPPER"), same_l = !strcmp(ap, "SAME_LOWER"), valid = !strcmp(ap, "VALID");
    if (!same_u && !same_l && !valid && strcmp(ap, "NOTSET") && *ap)
        return kn_kctx_fail(c, KN_ERR_INVALID, "unknown auto_pad '%s'", ap);
    bool ceil_mode = kn_kctx_attr_int(c, "ceil_mode", 0) != 0;
    for (int32_t i = 0; i < g->nsp; i++) {
        g->in[i] = x->dims[i + 2];
        g->ph[i] = pads && !valid ? pads[i] : 0;
        g->pt[i] = pads && !valid ? pads[i + g->nsp] : 0;
        if (g->ph[i] < 0 || g->pt[i] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "negative pads are not supported");
        int64_t eff = (g->k[i] - 1) * g->d[i] + 1;
        if (same_u || same_l) {
            g->out[i] = (g->in[i] + g->s[i] - 1) / g->s[i];
            int64_t total = (g->out[i] - 1) * g->s[i] + eff - g->in[i];
            if (total < 0)
                total = 0;
            g->ph[i] = same_u ? total / 2 : total - total / 2;
            g->pt[i] = total - g->ph[i];
            continue;
        }
        int64_t span = g->in[i] + g->ph[i] + g->pt[i] - eff;
        if (span < 0) {
            g->out[i] = 0;
            continue;
        }
        g->out[i] = (ceil_mode ? (span + g->s[i] - 1) / g->s[i] : span / g->s[i]) + 1;
        if (ceil_mode && (g->out[i] - 1) * g->s[i] >= g->in[i] + g->ph[i])
            g->out[i]--;
    }
    g->in_sp = kn_numel(g->nsp, g->in);
    g->out_sp = kn_numel(g->nsp, g->out);
    g->k_sp = kn_numel(g->nsp, g->k);
    if (g->in_sp < 0 || g->out_sp < 0 || g->k_sp < 0)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "pooling sizes overflow");
    return KN_OK;
}

typedef enum { POOL_MAX, POOL_AVG, POOL_LP } pool_kind;

/* Pools every (n, c) plane of x into y. AVG divides by the taps inside the
 * image, or with count_pad by those inside the padded image; LP is
 * (sum |x|^p)^(1/p) over the taps inside the image. For MAX, ind (when
 * non-NULL) receives the flat index of the first maximum, spatial part in
 * row-major order or, with col_major, column-major order. */
static void pool_run(const pool_geom *g, pool_kind kind, bool count_pad, double p, const double *x, double *y,
                     int64_t *ind, bool col_major)
{
    int32_t r = g->nsp;
    int64_t istr[MAX_SP], cstr[MAX_SP], o[MAX_SP], kk[MAX_SP];
    kn_strides(r, g->in, istr);
    for (int64_t i = 0, s = 1; i < r; i++) { /* column-major spatial strides */
        cstr[i] = s;
        s *= g->in[i];
    }
    for (int64_t pl = 0; pl < g->nc; pl++) {
        const double *xp = x + pl * g->in_sp;
        for (int32_t i = 0; i < r; i++)
            o[i] = 0;
        for (int64_t q = 0; q < g->out_sp; q++) {
            double acc = kind == POOL_MAX ? -INFINITY : 0.0;
            int64_t best = -1, cnt = 0;
            for (int32_t i = 0; i < r; i++)
                kk[i] = 0;
            for (int64_t t = 0; t < g->k_sp; t++) {
                bool inside = true, in_padded = true;
                int64_t off = 0, coff = 0;
                for (int32_t i = 0; i < r; i++) {
                    int64_t pos = o[i] * g->s[i] - g->ph[i] + kk[i] * g->d[i];
                    if (pos < 0 || pos >= g->in[i])
                        inside = false;
                    if (pos >= g->in[i] + g->pt[i])
                        in_padded = false;
                    off += pos * istr[i];
                    coff += pos * cstr[i];
                }
                if (inside) {
                    double v = xp[off];
                    if (kind == POOL_MAX) {
                        if (v == v && (best < 0 || v > acc)) { /* NaNs are skipped */
                            acc = v;
                            best = col_major ? coff : off;
                        }
                    } else if (kind == POOL_AVG) {
                        acc += v;
                    } else {
                        acc += p == 1 ? fabs(v) : p == 2 ? v * v : pow(fabs(v), p);
                    }
                    cnt++;
                } else if (count_pad && in_padded) {
                    cnt++;
                }
                for (int32_t i = r - 1; i >= 0; i--) {
                    if (++kk[i] < g->k[i])
                        break;
                    kk[i] = 0;
                }
            }
            if (kind == POOL_AVG)
                acc = cnt ? acc / (double)cnt : 0.0;
            else if (kind == POOL_LP)
                acc = p == 1 ? acc : p == 2 ? sqrt(acc) : pow(acc, 1.0 / p);
            else if (best < 0)
                acc = cnt ? NAN : 0.0; /* all NaN, or the window lies in the padding */
            y[pl * g->out_sp + q] = acc;
            if (ind)
                ind[pl * g->out_sp + q] = best < 0 ? -1 : pl * g->in_sp + best;
            for (int32_t i = r - 1; i >= 0; i--) {
                if (++o[i] < g->out[i])
                    break;
                o[i] = 0;
            }
        }
    }
}

static kn_status pool_op(kn_kctx *c, pool_kind kind)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    KN_TRY(check_x(c, x, 3));
    if (kind != POOL_MAX && !kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s needs a floating-point input",
                            kind == POOL_AVG ? "AveragePool" : "LpPool");
    pool_geom g;
    KN_TRY(pool_geom_init(c, x, &g));
    int64_t dims[KN_RT_MAX_RANK];
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    for (int32_t i = 0; i < g.nsp; i++)
        dims[i + 2] = g.out[i];
    kn_rt_tensor *y, *yi = NULL;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &y));
    bool want_ind = kind == POOL_MAX && kn_kctx_n_outputs(c) > 1 && kn_kctx_out_wanted(c, 1);
    if (want_ind)
        KN_TRY(kn_kctx_out(c, 1, KN_I64, x->rank, dims, &yi));
    if (y->numel == 0)
        return KN_OK;
    int64_t order = kn_kctx_attr_int(c, "storage_order", 0);
    if (order != 0 && order != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "storage_order must be 0 or 1 (got %lld)", (long long)order);
    double p = 2.0;
    if (kind == POOL_LP) {
        const kn_attr *pa = kn_kctx_attr(c, "p");
        if (pa)
            p = pa->kind == KN_ATTR_FLOAT ? pa->u.f : (double)pa->u.i;
        if (!(p > 0))
            return kn_kctx_fail(c, KN_ERR_INVALID, "p must be positive");
    }
    double *dx, *dy;
    KN_TRY(kn_linalg_to_f64(c, x, &dx));
    KN_TRY(kn_linalg_alloc(c, y->numel, sizeof *dy, (void **)&dy));
    pool_run(&g, kind, kn_kctx_attr_int(c, "count_include_pad", 0) != 0, p, dx, dy, yi ? yi->data : NULL, order == 1);
    kn_linalg_store_f64(y->dtype, y->data, dy, y->numel);
    return KN_OK;
}

kn_status kn_ref_MaxPool(kn_kctx *c) { return pool_op(c, POOL_MAX); }
kn_status kn_ref_AveragePool(kn_kctx *c) { return pool_op(c, POOL_AVG); }
kn_status kn_ref_LpPool(kn_kctx *c) { return pool_op(c, POOL_LP); }

/* Global pools reduce every spatial dimension to 1. */
static kn_status global_pool(kn_kctx *c, pool_kind kind)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    KN_TRY(check_x(c, x, 2));
    if (kind != POOL_MAX && !kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "global pooling of %s needs a floating-point input",
                            kind == POOL_AVG ? "average" : "Lp norm");
    int64_t dims[KN_RT_MAX_RANK];
    for (int32_t i = 0; i < x->rank; i++)
        dims[i] = i < 2 ? x->dims[i] : 1;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &y));
    double p = 2.0;
    if (kind == POOL_LP) {
        const kn_attr *pa = kn_kctx_attr(c, "p");
        if (pa)
            p = pa->kind == KN_ATTR_FLOAT ? pa->u.f : (double)pa->u.i;
        if (!(p > 0))
            return kn_kctx_fail(c, KN_ERR_INVALID, "p must be positive");
    }
    int64_t nc = x->dims[0] * x->dims[1], sp = nc ? x->numel / nc : 0;
    double *dx, *dy;
    KN_TRY(kn_linalg_to_f64(c, x, &dx));
    KN_TRY(kn_linalg_alloc(c, nc, sizeof *dy, (void **)&dy));
    for (int64_t pl = 0; pl < nc; pl++) {
        const double *xp = dx + pl * sp;
        double acc = kind == POOL_MAX ? -INFINITY : 0.0;
        for (int64_t i = 0; i < sp; i++) {
            double v = xp[i];
            if (kind == POOL_MAX)
                acc = v > acc || v != v ? v : acc;
            else if (kind == POOL_AVG)
                acc += v;
            else
                acc += p == 2 ? v * v : pow(fabs(v), p);
        }
        if (kind == POOL_AVG)
            acc = sp ? acc / (double)sp : NAN;
        else if (kind == POOL_LP)
            acc = p == 2 ? sqrt(acc) : pow(acc, 1.0 / p);
        dy[pl] = acc;
    }
    kn_linalg_store_f64(y->dtype, y->data, dy, nc);
    return KN_OK;
}

kn_status kn_ref_GlobalAveragePool(kn_kctx *c) { return global_pool(c, POOL_AVG); }
kn_status kn_ref_GlobalMaxPool(kn_kctx *c) { return global_pool(c, POOL_MAX); }
kn_status kn_ref_GlobalLpPool(kn_kctx *c) { return global_pool(c, POOL_LP); }

/* MaxUnpool, as ONNX's reference: the values go to their flat indices in a
 * zero tensor of the inferred shape ((in-1)·s - pads + k per spatial dim),
 * which is then placed at the start of output_shape when that is given. */
kn_status kn_ref_MaxUnpool(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *ind = kn_kctx_in(c, 1), *osh = kn_kctx_in(c, 2);
    KN_TRY(check_x(c, x, 3));
    if (!ind || ind->dtype != KN_I64 || ind->rank != x->rank || ind->numel != x->numel)
        return kn_kctx_fail(c, KN_ERR_INVALID, "indices I must be int64 with X's shape");
    int32_t nsp = x->rank - 2;
    int64_t k[MAX_SP], s[MAX_SP], pads[2 * MAX_SP];
    uint32_t nk;
    if (!kn_kctx_attr_ints(c, "kernel_shape", &nk) || nk != (uint32_t)nsp)
        return kn_kctx_fail(c, KN_ERR_INVALID, "kernel_shape must have %d entries", (int)nsp);
    KN_TRY(sp_attr(c, "kernel_shape", nsp, 1, 1, k));
    KN_TRY(sp_attr(c, "strides", nsp, 1, 1, s));
    KN_TRY(sp_attr(c, "pads", 2 * nsp, 0, 0, pads));
    int64_t inf[KN_RT_MAX_RANK], dims[KN_RT_MAX_RANK];
    inf[0] = x->dims[0];
    inf[1] = x->dims[1];
    for (int32_t i = 0; i < nsp; i++) {
        inf[i + 2] = (x->dims[i + 2] - 1) * s[i] - pads[i] - pads[i + nsp] + k[i];
        if (inf[i + 2] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "negative output size along spatial axis %d", (int)i);
    }
    memcpy(dims, inf, (size_t)x->rank * sizeof *dims);
    if (osh) {
        int64_t *v, n;
        KN_TRY(kn_read_ints(c, osh, &v, &n));
        if (n != x->rank)
            return kn_kctx_fail(c, KN_ERR_INVALID, "output_shape has %lld entries, expected %d", (long long)n,
                                (int)x->rank);
        for (int32_t i = 0; i < x->rank; i++) {
            if (v[i] < inf[i])
                return kn_kctx_fail(c, KN_ERR_INVALID, "output_shape[%d] = %lld is smaller than the inferred %lld",
                                    (int)i, (long long)v[i], (long long)inf[i]);
            dims[i] = v[i];
        }
    }
    int64_t n_inf = kn_numel(x->rank, inf);
    if (n_inf < 0)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "output size overflows");
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &y));
    /* Map a flat index of the inferred shape into the output shape. */
    int64_t istr[KN_RT_MAX_RANK], ostr[KN_RT_MAX_RANK];
    kn_strides(x->rank, inf, istr);
    kn_strides(x->rank, dims, ostr);
    size_t esz = kn_dt_size(x->dtype);
    const int64_t *id = ind->data;
    for (int64_t i = 0; i < x->numel; i++) {
        int64_t f = id[i];
        if (f < 0 || f >= n_inf)
            return kn_kctx_fail(c, KN_ERR_INVALID, "index %lld out of range [0, %lld)", (long long)f,
                                (long long)n_inf);
        int64_t off = 0;
        for (int32_t d = 0; d < x->rank; d++) {
            off += (f / istr[d]) * ostr[d];
            f %= istr[d];
        }
        memcpy((char *)y->data + (size_t)off * esz, (const char *)x->data + (size_t)i * esz, esz);
    }
    return KN_OK;
}

/* ---- region pooling ---- */

/* MaxRoiPool (Caffe's ROI pooling): each ROI [batch, x1, y1, x2, y2] is
 * scaled and rounded to whole pixels, split into pooled_shape bins
 * (floor/ceil of fractional bin edges) and each bin's maximum taken; an
 * empty bin gives 0. */
kn_status kn_ref_MaxRoiPool(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *rois = kn_kctx_in(c, 1);
    KN_TRY(check_x(c, x, 4));
    if (x->rank != 4 || !kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "X must be a 4-D floating-point tensor");
    if (!rois || rois->rank != 2 || rois->dims[1] != 5 || !kn_dt_is_float(rois->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "rois must be a floating-point [num_rois, 5] tensor");
    uint32_t np;
    const int64_t *ps = kn_kctx_attr_ints(c, "pooled_shape", &np);
    if (!ps || np != 2 || ps[0] < 1 || ps[1] < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "pooled_shape must be two positive sizes");
    double scale = kn_kctx_attr_float(c, "spatial_scale", 1.0f);
    int64_t nb = x->dims[0], ch = x->dims[1], h = x->dims[2], w = x->dims[3], nr = rois->dims[0];
    int64_t dims[4] = {nr, ch, ps[0], ps[1]};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, 4, dims, &y));
    for (int64_t r = 0; r < nr; r++) {
        double rv[5];
        for (int i = 0; i < 5; i++)
            rv[i] = kn_get_f64(rois->dtype, rois->data, r * 5 + i);
        int64_t b = (int64_t)rv[0];
        if (!(rv[0] >= 0) || b >= nb)
            return kn_kctx_fail(c, KN_ERR_INVALID, "ROI %lld has batch index %g out of range", (long long)r, rv[0]);
        int64_t x1 = (int64_t)round(rv[1] * scale), y1 = (int64_t)round(rv[2] * scale);
        int64_t x2 = (int64_t)round(rv[3] * scale), y2 = (int64_t)round(rv[4] * scale);
        int64_t rh = y2 - y1 + 1 > 1 ? y2 - y1 + 1 : 1, rw = x2 - x1 + 1 > 1 ? x2 - x1 + 1 : 1;
        double bh = (double)rh / (double)ps[0], bw = (double)rw / (double)ps[1];
        for (int64_t cc = 0; cc < ch; cc++) {
            int64_t base = (b * ch + cc) * h * w;
            for (int64_t py = 0; py < ps[0]; py++)
                for (int64_t px = 0; px < ps[1]; px++) {
                    int64_t hs = (int64_t)floor((double)py * bh) + y1, he = (int64_t)ceil((double)(py + 1) * bh) + y1;
                    int64_t ws = (int64_t)floor((double)px * bw) + x1, we = (int64_t)ceil((double)(px + 1) * bw) + x1;
                    hs = hs < 0 ? 0 : hs > h ? h : hs;
                    he = he < 0 ? 0 : he > h ? h : he;
                    ws = ws < 0 ? 0 : ws > w ? w : ws;
                    we = we < 0 ? 0 : we > w ? w : we;
                    double m = 0;
                    if (he > hs && we > ws) {
                        m = -INFINITY;
                        for (int64_t yy = hs; yy < he; yy++)
                            for (int64_t xx = ws; xx < we; xx++) {
                                double v = kn_get_f64(x->dtype, x->data, base + yy * w + xx);
                                if (v > m)
                                    m = v;
                            }
                    }
                    kn_set_f64(y->dtype, y->data, ((r * ch + cc) * ps[0] + py) * ps[1] + px, m);
                }
        }
    }
    return KN_OK;
}

/* One bilinear sample of RoiAlign: four pixel offsets and weights (all
 * zero outside the feature map). */
typedef struct roi_sample {
    int64_t pos[4];
    double w[4];
} roi_sample;

static void roi_sample_at(double yy, double xx, int64_t h, int64_t w, roi_sample *s)
{
    if (yy < -1.0 || yy > (double)h || xx < -1.0 || xx > (double)w) {
        memset(s, 0, sizeof *s);
        return;
    }
    if (yy < 0)
        yy = 0;
    if (xx < 0)
        xx = 0;
    int64_t yl = (int64_t)yy, xl = (int64_t)xx, yh, xh;
    if (yl >= h - 1) {
        yh = yl = h - 1;
        yy = (double)yl;
    } else {
        yh = yl + 1;
    }
    if (xl >= w - 1) {
        xh = xl = w - 1;
        xx = (double)xl;
    } else {
        xh = xl + 1;
    }
    double ly = yy - (double)yl, lx = xx - (double)xl, hy = 1.0 - ly, hx = 1.0 - lx;
    s->pos[0] = yl * w + xl;
    s->pos[1] = yl * w + xh;
    s->pos[2] = yh * w + xl;
    s->pos[3] = yh * w + xh;
    s->w[0] = hy * hx;
    s->w[1] = hy * lx;
    s->w[2] = ly * hx;
    s->w[3] = ly * lx;
}

/* RoiAlign, following ONNX's reference (itself ORT's): each bin averages
 * (or, mode "max", takes the largest weighted corner of) a grid of
 * bilinear samples. */
kn_status kn_ref_RoiAlign(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *rois = kn_kctx_in(c, 1), *bi = kn_kctx_in(c, 2);
    KN_TRY(check_x(c, x, 4));
    if (x->rank != 4 || !kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "X must be a 4-D floating-point tensor");
    if (!rois || rois->rank != 2 || rois->dims[1] != 4 || !kn_dt_is_float(rois->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "rois must be a floating-point [num_rois, 4] tensor");
    if (!bi || !kn_dt_is_int(bi->dtype) || bi->rank != 1 || bi->dims[0] != rois->dims[0])
        return kn_kctx_fail(c, KN_ERR_INVALID, "batch_indices must be a 1-D integer tensor with one entry per ROI");
    const char *mode = kn_kctx_attr_str(c, "mode", "avg");
    bool is_max = !strcmp(mode, "max");
    if (!is_max && strcmp(mode, "avg"))
        return kn_kctx_fail(c, KN_ERR_INVALID, "unknown mode '%s'", mode);
    const char *ctm = kn_kctx_attr_str(c, "coordinate_transformation_mode",
                                       kn_kctx_opset(c) >= 16 ? "half_pixel" : "output_half_pixel");
    bool half = !strcmp(ctm, "half_pixel");
    if (!half && strcmp(ctm, "output_half_pixel"))
        return kn_kctx_fail(c, KN_ERR_INVALID, "unknown coordinate_transformation_mode '%s'", ctm);
    int64_t oh = kn_kctx_attr_int(c, "output_height", 1), ow = kn_kctx_attr_int(c, "output_width", 1);
    int64_t sr = kn_kctx_attr_int(c, "sampling_ratio", 0);
    double scale = kn_kctx_attr_float(c, "spatial_scale", 1.0f);
    if (oh < 1 || ow < 1 || sr < 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "output sizes must be positive and sampling_ratio >= 0");
    int64_t nb = x->dims[0], ch = x->dims[1], h = x->dims[2], w = x->dims[3], nr = rois->dims[0];
    int64_t dims[4] = {nr, ch, oh, ow};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, 4, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    if (h == 0 || w == 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "X has an empty feature map");
    double *dx;
    KN_TRY(kn_linalg_to_f64(c, x, &dx));
    double off = half ? 0.5 : 0.0;
    for (int64_t r = 0; r < nr; r++) {
        int64_t b = kn_get_i64(bi->dtype, bi->data, r);
        if (b < 0 || b >= nb)
            return kn_kctx_fail(c, KN_ERR_INVALID, "batch index %lld of ROI %lld out of range", (long long)b,
                                (long long)r);
        double x1 = kn_get_f64(rois->dtype, rois->data, r * 4) * scale - off;
        double y1 = kn_get_f64(rois->dtype, rois->data, r * 4 + 1) * scale - off;
        double x2 = kn_get_f64(rois->dtype, rois->data, r * 4 + 2) * scale - off;
        double y2 = kn_get_f64(rois->dtype, rois->data, r * 4 + 3) * scale - off;
        double rw = x2 - x1, rh = y2 - y1;
        if (!half) { /* malformed ROIs become 1x1 */
            rw = rw > 1.0 ? rw : 1.0;
            rh = rh > 1.0 ? rh : 1.0;
        }
        double bh = rh / (double)oh, bw = rw / (double)ow;
        int64_t gh = sr > 0 ? sr : (int64_t)ceil(rh / (double)oh);
        int64_t gw = sr > 0 ? sr : (int64_t)ceil(rw / (double)ow);
        if (gh < 0)
            gh = 0;
        if (gw < 0)
            gw = 0;
        int64_t count = gh * gw > 1 ? gh * gw : 1;
        roi_sample *smp;
        KN_TRY(kn_linalg_alloc(c, oh * ow * gh * gw, sizeof *smp, (void **)&smp));
        roi_sample *sp = smp;
        for (int64_t py = 0; py < oh; py++)
            for (int64_t px = 0; px < ow; px++)
                for (int64_t iy = 0; iy < gh; iy++) {
                    double yy = y1 + (double)py * bh + ((double)iy + 0.5) * bh / (double)gh;
                    for (int64_t ix = 0; ix < gw; ix++) {
                        double xx = x1 + (double)px * bw + ((double)ix + 0.5) * bw / (double)gw;
                        roi_sample_at(yy, xx, h, w, sp++);
                    }
                }
        for (int64_t cc = 0; cc < ch; cc++) {
            const double *xp = dx + (b * ch + cc) * h * w;
            sp = smp;
            for (int64_t q = 0; q < oh * ow; q++) {
                double v = 0;
                bool first = true;
                for (int64_t t = 0; t < gh * gw; t++, sp++) {
                    if (is_max) {
                        double m = sp->w[0] * xp[sp->pos[0]];
                        for (int j = 1; j < 4; j++)
                            m = fmax(m, sp->w[j] * xp[sp->pos[j]]);
                        v = first ? m : fmax(v, m);
                        first = false;
                    } else {
                        for (int j = 0; j < 4; j++)
                            v += sp->w[j] * xp[sp->pos[j]];
                    }
                }
                if (!is_max)
                    v /= (double)count;
                kn_set_f64(y->dtype, y->data, (r * ch + cc) * oh * ow + q, v);
            }
        }
    }
    return KN_OK;
}
