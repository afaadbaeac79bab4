/* Shape-family kernels that pad, crop or fold: Pad (constant, reflect,
 * edge, wrap), CenterCropPad and Col2Im. Pad and CenterCropPad build, per
 * axis, a map from output index to input index (or "constant") and then
 * move element bytes, so every dtype stays exact. */
#include "runtime/cpu/util.h"

#include <string.h>

/* Per-axis maps: map[a][o] is the input index read for output index o on
 * axis a, or -1 for the constant. */
typedef struct axis_maps {
    int64_t *map[KN_RT_MAX_RANK];
} axis_maps;

static kn_status maps_alloc(kn_kctx *c, axis_maps *m, int32_t rank, const int64_t *out_dims)
{
    for (int32_t a = 0; a < rank; a++) {
        m->map[a] = kn_kctx_scratch(c, (size_t)(out_dims[a] + 1) * sizeof(int64_t));
        if (!m->map[a])
            return KN_ERR_NOMEM;
    }
    return KN_OK;
}

/* y[o] = x[maps(o)] or the constant element `k` (es bytes). */
static void maps_copy(const kn_rt_tensor *x, kn_rt_tensor *y, size_t es, const axis_maps *m, const void *k)
{
    if (y->numel == 0)
        return;
    int32_t r = y->rank;
    char *d = y->data;
    const char *s = x->data;
    if (r == 0) {
        memcpy(d, s, es);
        return;
    }
    int64_t st[KN_RT_MAX_RANK], idx[KN_RT_MAX_RANK];
    kn_strides(r, x->dims, st);
    for (int32_t a = 0; a < r; a++)
        idx[a] = 0;
    int64_t inner = y->dims[r - 1];
    const int64_t *last = m->map[r - 1];
    for (int64_t o = 0; o < y->numel; o += inner) {
        int64_t base = 0;
        bool in = true;
        for (int32_t a = 0; a < r - 1 && in; a++) {
            int64_t i = m->map[a][idx[a]];
            in = i >= 0;
            base += i * st[a];
        }
        for (int64_t j = 0; j < inner; j++, d += es) {
            if (in && last[j] >= 0)
                memcpy(d, s + (size_t)(base + last[j]) * es, es);
            else
                memcpy(d, k, es);
        }
        for (int32_t a = r - 2; a >= 0; a--) {
            if (++idx[a] < y->dims[a])
                break;
            idx[a] = 0;
        }
    }
}

/* ---- Pad ---- */

typedef enum pad_mode { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE, PAD_WRAP } pad_mode;

/* Input index for position i (possibly outside [0, d)) under the mode;
 * -1 for the constant. d > 0 unless the mode is constant. */
static int64_t pad_source(pad_mode mode, int64_t i, int64_t d)
{
    if (i >= 0 && i < d)
        return i;
    switch (mode) {
    case PAD_CONSTANT: return -1;
    case PAD_EDGE: return i < 0 ? 0 : d - 1;
    case PAD_WRAP: return (i % d + d) % d;
    default: {
        if (d == 1)
            return 0;
        int64_t p = 2 * (d - 1), m = (i % p + p) % p;
        return m < d ? m : p - m;
    }
    }
}

kn_status kn_ref_Pad(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int32_t r = x->rank;
    int64_t opset = kn_kctx_opset(c);
    const char *ms = kn_kctx_attr_str(c, "mode", "constant");
    pad_mode mode;
    if (strcmp(ms, "constant") == 0)
        mode = PAD_CONSTANT;
    else if (strcmp(ms, "reflect") == 0)
        mode = PAD_REFLECT;
    else if (strcmp(ms, "edge") == 0)
        mode = PAD_EDGE;
    else if (strcmp(ms, "wrap") == 0)
        mode = PAD_WRAP;
    else
        return kn_kctx_fail(c, KN_ERR_INVALID, "mode '%s' is not constant, reflect, edge or wrap", ms);

    /* pads: [begin per axis..., end per axis...] over `axes` (default all) */
    int64_t *pads, np, *axes = NULL, na = r;
    if (opset < 11) {
        uint32_t n;
        const int64_t *a = kn_kctx_attr_ints(c, opset < 2 ? "paddings" : "pads", &n);
        if (!a)
            return kn_kctx_fail(c, KN_ERR_INVALID, "attribute '%s' is required", opset < 2 ? "paddings" : "pads");
        pads = (int64_t *)a;
        np = n;
    } else {
        const kn_rt_tensor *tp;
        KN_TRY(kn_need_in(c, 1, &tp));
        if (tp->dtype != KN_I64)
            return kn_kctx_fail(c, KN_ERR_INVALID, "pads must be int64, got %s", kn_dtype_name(tp->dtype));
        KN_TRY(kn_read_ints(c, tp, &pads, &np));
        const kn_rt_tensor *ta = opset >= 18 ? kn_kctx_in(c, 3) : NULL;
        if (ta)
            KN_TRY(kn_read_ints(c, ta, &axes, &na));
    }
    if (np != 2 * na)
        return kn_kctx_fail(c, KN_ERR_INVALID, "pads has %lld entries for %lld axes", (long long)np, (long long)na);
    int64_t pb[KN_RT_MAX_RANK] = {0}, pe[KN_RT_MAX_RANK] = {0}, dims[KN_RT_MAX_RANK];
    bool seen[KN_RT_MAX_RANK] = {false};
    for (int64_t k = 0; k < na; k++) {
        int32_t a = (int32_t)k;
        if (axes)
            KN_TRY(kn_axis(c, axes[k], r, &a));
        if (seen[a])
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis %d repeated", (int)a);
        seen[a] = true;
        pb[a] = pads[k];
        pe[a] = pads[na + k];
    }
    for (int32_t a = 0; a < r; a++) {
        int64_t d = x->dims[a], lim = (int64_t)1 << 48;
        if (pb[a] < -lim || pb[a] > lim || pe[a] < -lim || pe[a] > lim || d + pb[a] + pe[a] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "pads %lld, %lld invalid for axis %d of size %lld",
                                (long long)pb[a], (long long)pe[a], (int)a, (long long)d);
        dims[a] = d + pb[a] + pe[a];
        if (d == 0 && dims[a] > 0 && mode != PAD_CONSTANT)
            return kn_kctx_fail(c, KN_ERR_INVALID, "cannot %s-pad the empty axis %d", ms, (int)a);
    }

    /* the constant element */
    unsigned char kbuf[16];
    memset(kbuf, 0, sizeof kbuf);
    if (x->dtype == KN_STRING) {
        kn_bytes e = {(const uint8_t *)"", 0};
        memcpy(kbuf, &e, sizeof e);
    }
    if (opset < 11) {
        float v = kn_kctx_attr_float(c, "value", 0.0f);
        if (kn_dt_is_float(x->dtype) || kn_dt_is_int(x->dtype) || x->dtype == KN_BOOL)
            kn_set_f64(x->dtype, kbuf, 0, v);
    } else {
        const kn_rt_tensor *tv = kn_kctx_in(c, 2);
        if (tv && tv->numel > 0) {
            if (tv->dtype != x->dtype)
                return kn_kctx_fail(c, KN_ERR_INVALID, "constant_value is %s, data %s", kn_dtype_name(tv->dtype),
                                    kn_dtype_name(x->dtype));
            memcpy(kbuf, tv->data, es);
        }
    }

    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    axis_maps m;
    KN_TRY(maps_alloc(c, &m, r, dims));
    for (int32_t a = 0; a < r; a++)
        for (int64_t o = 0; o < dims[a]; o++)
            m.map[a][o] = pad_source(mode, o - pb[a], x->dims[a]);
    maps_copy(x, y, es, &m, kbuf);
    return KN_OK;
}

kn_status kn_ref_CenterCropPad(kn_kctx *c)
{
    const kn_rt_tensor *x, *ts;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &ts));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int64_t *shape, ns;
    KN_TRY(kn_read_ints(c, ts, &shape, &ns));
    int32_t r = x->rank;
    uint32_t nax;
    const int64_t *axes = kn_kctx_attr_ints(c, "axes", &nax);
    int64_t na = axes ? (int64_t)nax : r;
    if (ns != na)
        return kn_kctx_fail(c, KN_ERR_INVALID, "shape has %lld entries for %lld axes", (long long)ns, (long long)na);
    int64_t dims[KN_RT_MAX_RANK];
    bool seen[KN_RT_MAX_RANK] = {false};
    memcpy(dims, x->dims, (size_t)r * sizeof *dims);
    for (int64_t k = 0; k < na; k++) {
        int32_t a = (int32_t)k;
        if (axes)
            KN_TRY(kn_axis(c, axes[k], r, &a));
        if (seen[a])
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis %d repeated", (int)a);
        if (shape[k] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "shape[%lld] = %lld is negative", (long long)k,
                                (long long)shape[k]);
        seen[a] = true;
        dims[a] = shape[k];
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    axis_maps m;
    KN_TRY(maps_alloc(c, &m, r, dims));
    for (int32_t a = 0; a < r; a++) {
        int64_t d = x->dims[a], s = dims[a];
        /* crop: start reading at (d - s) / 2; pad: start writing at (s - d) / 2 */
        int64_t shift = s < d ? (d - s) / 2 : -((s - d) / 2);
        for (int64_t o = 0; o < s; o++) {
            int64_t i = o + shift;
            m.map[a][o] = i >= 0 && i < d ? i : -1;
        }
    }
    unsigned char kbuf[16];
    memset(kbuf, 0, sizeof kbuf);
    if (x->dtype == KN_STRING) {
        kn_bytes e = {(const uint8_t *)"", 0};
        memcpy(kbuf, &e, sizeof e);
    }
    maps_copy(x, y, es, &m, kbuf);
    return KN_OK;
}

/* ---- Col2Im ---- */

/* Reads an optional ints attribute of n entries (default `def` each). */
static kn_status attr_n(kn_kctx *c, const char *name, int64_t n, int64_t def, int64_t *out)
{
    uint32_t k;
    const int64_t *a = kn_kctx_attr_ints(c, name, &k);
    if (a && (int64_t)k != n)
        return kn_kctx_fail(c, KN_ERR_INVALID, "attribute '%s' has %u entries, expected %lld", name, k, (long long)n);
    for (int64_t i = 0; i < n; i++)
        out[i] = a ? a[i] : def;
    return KN_OK;
}

kn_status kn_ref_Col2Im(kn_kctx *c)
{
    const kn_rt_tensor *x, *ti, *tb;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &ti));
    KN_TRY(kn_need_in(c, 2, &tb));
    bool isf = kn_dt_is_float(x->dtype);
    if (!isf && !kn_dt_is_int(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s input is not supported", kn_dtype_name(x->dtype));
    int64_t *img, *blk, nd, nb;
    KN_TRY(kn_read_ints(c, ti, &img, &nd));
    KN_TRY(kn_read_ints(c, tb, &blk, &nb));
    if (nd != nb || nd < 1 || nd + 2 > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_INVALID, "image_shape and block_shape must have the same length >= 1");
    if (x->rank != 3)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must be 3-D, got rank %d", (int)x->rank);
    int64_t dil[KN_RT_MAX_RANK], str[KN_RT_MAX_RANK], pads[2 * KN_RT_MAX_RANK], ncol[KN_RT_MAX_RANK];
    KN_TRY(attr_n(c, "dilations", nd, 1, dil));
    KN_TRY(attr_n(c, "strides", nd, 1, str));
    KN_TRY(attr_n(c, "pads", 2 * nd, 0, pads));
    int64_t K = 1, L = 1, lim = (int64_t)1 << 31;
    for (int64_t i = 0; i < nd; i++) {
        if (img[i] < 0 || img[i] > lim || blk[i] < 1 || blk[i] > lim || dil[i] < 1 || dil[i] > lim || str[i] < 1 ||
            pads[i] < 0 || pads[i] > lim || pads[nd + i] < 0 || pads[nd + i] > lim)
            return kn_kctx_fail(c, KN_ERR_INVALID, "invalid image, block, dilation, stride or pad on dim %lld",
                                (long long)i);
        ncol[i] = (img[i] + pads[i] + pads[nd + i] - (dil[i] * (blk[i] - 1) + 1)) / str[i] + 1;
        if (ncol[i] < 1 || img[i] + pads[i] + pads[nd + i] < dil[i] * (blk[i] - 1) + 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "the blocks do not fit the padded image on dim %lld",
                                (long long)i);
        K *= blk[i];
        L *= ncol[i];
        if (K > lim || L > lim)
            return kn_kctx_fail(c, KN_ERR_LIMIT, "block or column count too large");
    }
    int64_t N = x->dims[0];
    if (x->dims[1] % K || x->dims[2] != L)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input shape [%lld, %lld, %lld] does not match %lld-element blocks "
                            "over %lld positions", (long long)N, (long long)x->dims[1], (long long)x->dims[2],
                            (long long)K, (long long)L);
    int64_t C = x->dims[1] / K;
    int64_t dims[KN_RT_MAX_RANK];
    dims[0] = N;
    dims[1] = C;
    for (int64_t i = 0; i < nd; i++)
        dims[2 + i] = img[i];
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, (int32_t)(nd + 2), dims, &y));
    int64_t plane = kn_numel((int32_t)nd, img);
    if (y->numel == 0)
        return KN_OK;
    double *accf = isf ? kn_kctx_scratch(c, (size_t)plane * sizeof *accf) : NULL;
    int64_t *acci = isf ? NULL : kn_kctx_scratch(c, (size_t)plane * sizeof *acci);
    if (isf ? !accf : !acci)
        return KN_ERR_NOMEM;
    int64_t kidx[KN_RT_MAX_RANK], lidx[KN_RT_MAX_RANK];
    for (int64_t n = 0; n < N; n++)
        for (int64_t ch = 0; ch < C; ch++) {
            if (isf)
                memset(accf, 0, (size_t)plane * sizeof *accf);
            else
                memset(acci, 0, (size_t)plane * sizeof *acci);
            for (int64_t k = 0; k < K; k++) {
                for (int64_t i = nd - 1, rem = k; i >= 0; i--) {
                    kidx[i] = rem % blk[i];
                    rem /= blk[i];
                }
                int64_t src = ((n * C + ch) * K + k) * L;
                for (int64_t l = 0; l < L; l++) {
                    int64_t off = 0;
                    bool in = true;
                    for (int64_t i = nd - 1, rem = l; i >= 0; i--) {
                        lidx[i] = rem % ncol[i];
                        rem /= ncol[i];
                    }
                    for (int64_t i = 0; i < nd && in; i++) {
                        int64_t p = lidx[i] * str[i] - pads[i] + kidx[i] * dil[i];
                        in = p >= 0 && p < img[i];
                        off = off * img[i] + p;
                    }
                    if (!in)
                        continue;
                    if (isf)
                        accf[off] += kn_get_f64(x->dtype, x->data, src + l);
                    else
                        acci[off] = (int64_t)((uint64_t)acci[off] + (uint64_t)kn_get_i64(x->dtype, x->data, src + l));
                }
            }
            int64_t dst = (n * C + ch) * plane;
            for (int64_t p = 0; p < plane; p++) {
                if (isf)
                    kn_set_f64(x->dtype, y->data, dst + p, accf[p]);
                else
                    kn_set_i64(x->dtype, y->data, dst + p, acci[p]);
            }
        }
    return KN_OK;
}
