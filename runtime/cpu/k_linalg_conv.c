/* linalg family, part 2: convolutions (Conv, ConvInteger, QLinearConv,
 * ConvTranspose) of any spatial rank, via im2col / col2im into scratch and
 * the family's double GEMM. */
#include "runtime/cpu/util.h"
#include "runtime/cpu/linalg.h"

#include <math.h>
#include <string.h>

/* Defined in k_linalg.c. */
/* Defined in k_linalg_gemm.c. */

#define MAX_SP (KN_RT_MAX_RANK - 2)

/* A convolution's geometry. For Conv: X [N, C, in...], W [M, C/group,
 * k...], Y [N, M, out...]. For ConvTranspose: X [N, C, in...], W [C,
 * M/group, k...], Y [N, M, out...]. Pads: ph before, pt after. */
typedef struct conv_geom {
    int32_t nsp;
    int64_t n, c, m, group, cg, mg;
    int64_t in[MAX_SP], k[MAX_SP], s[MAX_SP], d[MAX_SP], ph[MAX_SP], pt[MAX_SP], out[MAX_SP];
    int64_t in_sp, out_sp, k_sp;
} conv_geom;

/* An ints attribute with one entry per spatial dimension (count `n`), each
 * >= lo; `def` where absent. */
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

typedef enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID } auto_pad;

static kn_status read_auto_pad(kn_kctx *c, auto_pad *ap)
{
    const char *s = kn_kctx_attr_str(c, "auto_pad", "NOTSET");
    if (!strcmp(s, "NOTSET") || !*s)
        *ap = PAD_NOTSET;
    else if (!strcmp(s, "SAME_UPPER"))
        *ap = PAD_SAME_UPPER;
    else if (!strcmp(s, "SAME_LOWER"))
        *ap = PAD_SAME_LOWER;
    else if (!strcmp(s, "VALID"))
        *ap = PAD_VALID;
    else
        return kn_kctx_fail(c, KN_ERR_INVALID, "unknown auto_pad '%s'", s);
    return KN_OK;
}

/* Reads the attributes shared by Conv and ConvTranspose and checks X and W
 * (`transpose`: W is [C, M/group, k...] rather than [M, C/group, k...]). */
static kn_status geom_common(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *w, bool transpose, conv_geom *g)
{
    if (x->rank < 3)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input X must have rank >= 3 (got %d)", (int)x->rank);
    if (w->rank != x->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "weight W has rank %d, X has rank %d", (int)w->rank, (int)x->rank);
    g->nsp = x->rank - 2;
    g->n = x->dims[0];
    g->c = x->dims[1];
    g->group = kn_kctx_attr_int(c, "group", 1);
    if (g->group < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "group %lld must be >= 1", (long long)g->group);
    if (!transpose) {
        g->m = w->dims[0];
        g->cg = w->dims[1];
        if (g->cg * g->group != g->c || g->m % g->group)
            return kn_kctx_fail(c, KN_ERR_INVALID,
                                "W shape [%lld, %lld, ...] does not fit %lld input channels in %lld groups",
                                (long long)w->dims[0], (long long)w->dims[1], (long long)g->c, (long long)g->group);
        g->mg = g->m / g->group;
    } else {
        if (w->dims[0] != g->c || g->c % g->group)
            return kn_kctx_fail(c, KN_ERR_INVALID, "W's first dimension %lld must equal the %lld input channels",
                                (long long)w->dims[0], (long long)g->c);
        g->cg = g->c / g->group;
        g->mg = w->dims[1];
        g->m = g->mg * g->group;
    }
    uint32_t nk;
    const int64_t *ks = kn_kctx_attr_ints(c, "kernel_shape", &nk);
    if (ks && nk != (uint32_t)g->nsp)
        return kn_kctx_fail(c, KN_ERR_INVALID, "kernel_shape has %u entries, expected %d", nk, (int)g->nsp);
    for (int32_t i = 0; i < g->nsp; i++) {
        g->in[i] = x->dims[i + 2];
        g->k[i] = w->dims[i + 2];
        if (ks && ks[i] != g->k[i])
            return kn_kctx_fail(c, KN_ERR_INVALID, "kernel_shape[%d] = %lld but W has %lld", (int)i, (long long)ks[i],
                                (long long)g->k[i]);
    }
    KN_TRY(sp_attr(c, "strides", g->nsp, 1, 1, g->s));
    KN_TRY(sp_attr(c, "dilations", g->nsp, 1, 1, g->d));
    uint32_t np;
    const int64_t *pads = kn_kctx_attr_ints(c, "pads", &np);
    if (pads && np != 2u * (uint32_t)g->nsp)
        return kn_kctx_fail(c, KN_ERR_INVALID, "pads has %u entries, expected %d", np, 2 * (int)g->nsp);
    for (int32_t i = 0; i < g->nsp; i++) {
        g->ph[i] = pads ? pads[i] : 0;
        g->pt[i] = pads ? pads[i + g->nsp] : 0;
        if (g->ph[i] < 0 || g->pt[i] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "negative pads are not supported");
    }
    g->in_sp = kn_numel(g->nsp, g->in);
    g->k_sp = kn_numel(g->nsp, g->k);
    if (g->in_sp < 0 || g->k_sp < 0)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "spatial size overflows");
    return KN_OK;
}

static kn_status conv_geom_init(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *w, conv_geom *g)
{
    KN_TRY(geom_common(c, x, w, false, g));
    auto_pad ap;
    KN_TRY(read_auto_pad(c, &ap));
    for (int32_t i = 0; i < g->nsp; i++) {
        int64_t eff = (g->k[i] - 1) * g->d[i] + 1;
        if (ap == PAD_SAME_UPPER || ap == PAD_SAME_LOWER) {
            g->out[i] = (g->in[i] + g->s[i] - 1) / g->s[i];
            int64_t total = (g->out[i] - 1) * g->s[i] + eff - g->in[i];
            if (total < 0)
                total = 0;
            g->ph[i] = ap == PAD_SAME_UPPER ? total / 2 : total - total / 2;
            g->pt[i] = total - g->ph[i];
        } else {
            if (ap == PAD_VALID)
                g->ph[i] = g->pt[i] = 0;
            int64_t span = g->in[i] + g->ph[i] + g->pt[i] - eff;
            g->out[i] = span < 0 ? 0 : span / g->s[i] + 1;
        }
    }
    g->out_sp = kn_numel(g->nsp, g->out);
    if (g->out_sp < 0)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "output size overflows");
    return KN_OK;
}

/* Unfolds g->cg channels of one image (x: cg planes of in_sp) into col:
 * row (ci, kernel offset) holds, per output position, the input value that
 * kernel tap reads (0 in the padding). */
static void im2col(const conv_geom *g, const double *x, double *col)
{
    int32_t r = g->nsp, L = r - 1;
    int64_t istr[MAX_SP], kk[MAX_SP] = {0}, o[MAX_SP];
    kn_strides(r, g->in, istr);
    int64_t n_last = g->out[L], n_outer = n_last ? g->out_sp / n_last : 0;
    double *row = col;
    for (int64_t ci = 0; ci < g->cg; ci++) {
        const double *xc = x + ci * g->in_sp;
        for (int64_t kp = 0; kp < g->k_sp; kp++) {
            /* kk = the kernel offset of tap kp. */
            for (int64_t t = kp, i = L; i >= 0; i--) {
                kk[i] = t % g->k[i];
                t /= g->k[i];
            }
            for (int32_t i = 0; i < L; i++)
                o[i] = 0;
            double *dst = row;
            for (int64_t q = 0; q < n_outer; q++) {
                bool ok = true;
                int64_t off = 0;
                for (int32_t i = 0; i < L; i++) {
                    int64_t pos = o[i] * g->s[i] - g->ph[i] + kk[i] * g->d[i];
                    if (pos < 0 || pos >= g->in[i])
                        ok = false;
                    off += pos * istr[i];
                }
                if (!ok) {
                    memset(dst, 0, (size_t)n_last * sizeof *dst);
                } else {
                    int64_t base = kk[L] * g->d[L] - g->ph[L], s = g->s[L], lim = g->in[L];
                    for (int64_t ow = 0; ow < n_last; ow++) {
                        int64_t pos = ow * s + base;
                        dst[ow] = pos >= 0 && pos < lim ? xc[off + pos] : 0.0;
                    }
                }
                dst += n_last;
                for (int32_t i = L - 1; i >= 0; i--) {
                    if (++o[i] < g->out[i])
                        break;
                    o[i] = 0;
                }
            }
            row += g->out_sp;
        }
    }
}

/* y[N, M, out_sp] += conv(x, w): per image and group one GEMM
 * W_g [mg x cg·k_sp] · col [cg·k_sp x out_sp]. A 1x1 kernel with unit
 * strides and no padding reads the image directly. */
static kn_status conv_f64(kn_kctx *c, const conv_geom *g, const double *x, const double *w, double *y)
{
    bool direct = g->k_sp == 1;
    for (int32_t i = 0; i < g->nsp; i++)
        if (g->s[i] != 1 || g->ph[i] || g->pt[i])
            direct = false;
    int64_t kdim = g->cg * g->k_sp;
    if (kdim > 0 && g->out_sp > INT64_MAX / kdim)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "im2col buffer too large");
    double *col = NULL;
    if (!direct)
        KN_TRY(kn_linalg_alloc(c, kdim * g->out_sp, sizeof *col, (void **)&col));
    int nt;
    double *pack;
    KN_TRY(kn_linalg_gemm_setup(c, g->mg, g->out_sp, kdim, &nt, &pack));
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t gi = 0; gi < g->group; gi++) {
            const double *xg = x + (n * g->c + gi * g->cg) * g->in_sp;
            if (!direct)
                im2col(g, xg, col);
            kn_linalg_gemm_f64(g->mg, g->out_sp, kdim, w + gi * g->mg * kdim, kdim, direct ? xg : col, g->out_sp,
                               y + (n * g->m + gi * g->mg) * g->out_sp, g->out_sp, nt, pack);
        }
    return KN_OK;
}

static void out_dims(const conv_geom *g, int64_t *dims)
{
    dims[0] = g->n;
    dims[1] = g->m;
    for (int32_t i = 0; i < g->nsp; i++)
        dims[i + 2] = g->out[i];
}

kn_status kn_ref_Conv(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *w = kn_kctx_in(c, 1), *b = kn_kctx_in(c, 2);
    if (!x || !w)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Conv needs inputs X and W");
    if (!kn_dt_is_float(x->dtype) || w->dtype != x->dtype || (b && b->dtype != x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Conv needs X, W and B of one floating-point type");
    conv_geom g;
    KN_TRY(conv_geom_init(c, x, w, &g));
    if (b && b->numel != g.m)
        return kn_kctx_fail(c, KN_ERR_INVALID, "bias B has %lld elements, expected %lld", (long long)b->numel,
                            (long long)g.m);
    int64_t dims[KN_RT_MAX_RANK];
    out_dims(&g, dims);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    double *dx, *dw, *dy;
    KN_TRY(kn_linalg_to_f64(c, x, &dx));
    KN_TRY(kn_linalg_to_f64(c, w, &dw));
    KN_TRY(kn_linalg_alloc(c, y->numel, sizeof *dy, (void **)&dy));
    KN_TRY(conv_f64(c, &g, dx, dw, dy));
    if (b)
        for (int64_t n = 0; n < g.n; n++)
            for (int64_t m = 0; m < g.m; m++) {
                double bv = kn_get_f64(b->dtype, b->data, m), *p = dy + (n * g.m + m) * g.out_sp;
                for (int64_t i = 0; i < g.out_sp; i++)
                    p[i] += bv;
            }
    kn_linalg_store_f64(y->dtype, y->data, dy, y->numel);
    return KN_OK;
}

/* ---- quantized convolutions ---- */

static bool is_q8(kn_dtype t) { return t == KN_I8 || t == KN_U8; }

/* The exact integer convolution (X - x_zp) * (W - w_zp[m]) into y (as
 * double: 8-bit operands keep every sum far below 2^53). */
static kn_status qconv(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *xzp, const kn_rt_tensor *w,
                       const kn_rt_tensor *wzp, conv_geom *g, double **out)
{
    if (!is_q8(x->dtype) || !is_q8(w->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "x and w must be int8 or uint8 (got %s and %s)",
                            kn_dtype_name(x->dtype), kn_dtype_name(w->dtype));
    if ((xzp && (xzp->dtype != x->dtype || xzp->numel != 1)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "x_zero_point must be a scalar of x's type");
    KN_TRY(conv_geom_init(c, x, w, g));
    if (wzp && (wzp->dtype != w->dtype || (wzp->numel != 1 && wzp->numel != g->m)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "w_zero_point must be a scalar or have %lld elements of w's type",
                            (long long)g->m);
    if (g->cg * g->k_sp >= ((int64_t)1 << 37))
        return kn_kctx_fail(c, KN_ERR_LIMIT, "convolution too large for exact accumulation");
    double *dx, *dw, *dy;
    KN_TRY(kn_linalg_to_f64(c, x, &dx));
    KN_TRY(kn_linalg_to_f64(c, w, &dw));
    if (xzp) {
        double z = kn_get_f64(xzp->dtype, xzp->data, 0);
        for (int64_t i = 0; i < x->numel; i++)
            dx[i] -= z;
    }
    if (wzp) {
        int64_t per = g->cg * g->k_sp;
        for (int64_t i = 0; i < w->numel; i++)
            dw[i] -= kn_get_f64(wzp->dtype, wzp->data, wzp->numel == 1 ? 0 : i / per);
    }
    int64_t ny = kn_numel(2, (int64_t[]){g->n * g->m, g->out_sp});
    if (ny < 0)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "output size overflows");
    KN_TRY(kn_linalg_alloc(c, ny, sizeof *dy, (void **)&dy));
    KN_TRY(conv_f64(c, g, dx, dw, dy));
    *out = dy;
    return KN_OK;
}

kn_status kn_ref_ConvInteger(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *w = kn_kctx_in(c, 1);
    if (!x || !w)
        return kn_kctx_fail(c, KN_ERR_INVALID, "ConvInteger needs inputs x and w");
    conv_geom g;
    double *dy;
    KN_TRY(qconv(c, x, kn_kctx_in(c, 2), w, kn_kctx_in(c, 3), &g, &dy));
    int64_t dims[KN_RT_MAX_RANK];
    out_dims(&g, dims);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_I32, x->rank, dims, &y));
    int32_t *yd = y->data;
    for (int64_t i = 0; i < y->numel; i++)
        yd[i] = (int32_t)(int64_t)dy[i];
    return KN_OK;
}

kn_status kn_ref_QLinearConv(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *xs = kn_kctx_in(c, 1), *xzp = kn_kctx_in(c, 2);
    const kn_rt_tensor *w = kn_kctx_in(c, 3), *ws = kn_kctx_in(c, 4), *wzp = kn_kctx_in(c, 5);
    const kn_rt_tensor *ys = kn_kctx_in(c, 6), *yzp = kn_kctx_in(c, 7), *b = kn_kctx_in(c, 8);
    if (!x || !xs || !w || !ws || !ys)
        return kn_kctx_fail(c, KN_ERR_INVALID, "QLinearConv needs x, x_scale, w, w_scale and y_scale");
    if (!kn_dt_is_float(xs->dtype) || !kn_dt_is_float(ws->dtype) || !kn_dt_is_float(ys->dtype) || xs->numel != 1 ||
        ys->numel != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "x_scale and y_scale must be float scalars, w_scale float");
    kn_dtype yt = yzp ? yzp->dtype : x->dtype;
    if (!is_q8(yt) || (yzp && yzp->numel != 1))
        return kn_kctx_fail(c, KN_ERR_INVALID, "y_zero_point must be an int8 or uint8 scalar");
    conv_geom g;
    double *dy;
    KN_TRY(qconv(c, x, xzp, w, wzp, &g, &dy));
    if (ws->numel != 1 && ws->numel != g.m)
        return kn_kctx_fail(c, KN_ERR_INVALID, "w_scale must be a scalar or have %lld elements", (long long)g.m);
    if (b && (b->dtype != KN_I32 || b->numel != g.m))
        return kn_kctx_fail(c, KN_ERR_INVALID, "bias B must be int32 with %lld elements", (long long)g.m);
    int64_t dims[KN_RT_MAX_RANK];
    out_dims(&g, dims);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, yt, x->rank, dims, &y));
    double lo = yt == KN_I8 ? -128 : 0, hi = yt == KN_I8 ? 127 : 255;
    double zp = yzp ? kn_get_f64(yzp->dtype, yzp->data, 0) : 0;
    float xsc = (float)kn_get_f64(xs->dtype, xs->data, 0), ysc = (float)kn_get_f64(ys->dtype, ys->data, 0);
    for (int64_t n = 0; n < g.n; n++)
        for (int64_t m = 0; m < g.m; m++) {
            float wsc = (float)kn_get_f64(ws->dtype, ws->data, ws->numel == 1 ? 0 : m);
            float mul = xsc * wsc / ysc; /* in float, as ONNX's reference */
            double bias = b ? (double)((const int32_t *)b->data)[m] : 0;
            int64_t base = (n * g.m + m) * g.out_sp;
            for (int64_t i = 0; i < g.out_sp; i++) {
                double v = nearbyint((dy[base + i] + bias) * (double)mul + zp);
                v = v < lo ? lo : v > hi ? hi : v;
                kn_set_f64(yt, y->data, base + i, v);
            }
        }
    return KN_OK;
}

/* ---- ConvTranspose ---- */

/* Output size and pads, following ONNX's reference: with output_shape (or
 * SAME auto_pad, whose output is in·stride) the total padding is derived
 * and split SAME_UPPER: more at the end, otherwise more at the start. */
static kn_status convt_geom_init(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *w, conv_geom *g)
{
    KN_TRY(geom_common(c, x, w, true, g));
    auto_pad ap;
    KN_TRY(read_auto_pad(c, &ap));
    int64_t opad[MAX_SP];
    KN_TRY(sp_attr(c, "output_padding", g->nsp, 0, 0, opad));
    uint32_t nos;
    const int64_t *os = kn_kctx_attr_ints(c, "output_shape", &nos);
    if (os && nos != (uint32_t)g->nsp && nos != (uint32_t)g->nsp + 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "output_shape has %u entries, expected %d", nos, (int)g->nsp);
    if (os && nos == (uint32_t)g->nsp + 2)
        os += 2;
    bool derive = os || ap == PAD_SAME_UPPER || ap == PAD_SAME_LOWER;
    for (int32_t i = 0; i < g->nsp; i++) {
        int64_t eff = (g->k[i] - 1) * g->d[i] + 1;
        int64_t full = g->s[i] * (g->in[i] - 1) + opad[i] + eff;
        if (ap == PAD_VALID)
            g->ph[i] = g->pt[i] = 0;
        if (derive) {
            int64_t target = os ? os[i] : g->in[i] * g->s[i];
            /* A negative total (output larger than the full result) pads
             * the output with zeros at the end; halves round down. */
            int64_t total = full - target, half = total >= 0 ? total / 2 : -((1 - total) / 2);
            g->ph[i] = ap == PAD_SAME_UPPER ? half : total - half;
            g->pt[i] = total - g->ph[i];
            g->out[i] = target;
        } else {
            g->out[i] = full - g->ph[i] - g->pt[i];
        }
        if (g->out[i] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "negative output size along spatial axis %d", (int)i);
    }
    g->out_sp = kn_numel(g->nsp, g->out);
    if (g->out_sp < 0)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "output size overflows");
    return KN_OK;
}

/* Scatters col [(m, kernel offset) x in_sp] of one group into y (mg planes
 * of out_sp): the transpose of im2col. */
static void col2im(const conv_geom *g, const double *col, double *y)
{
    int32_t r = g->nsp, L = r - 1;
    int64_t ostr[MAX_SP], kk[MAX_SP], ii[MAX_SP];
    kn_strides(r, g->out, ostr);
    int64_t n_last = g->in[L], n_outer = n_last ? g->in_sp / n_last : 0;
    const double *row = col;
    for (int64_t m = 0; m < g->mg; m++) {
        double *ym = y + m * g->out_sp;
        for (int64_t kp = 0; kp < g->k_sp; kp++) {
            for (int64_t t = kp, i = L; i >= 0; i--) {
                kk[i] = t % g->k[i];
                t /= g->k[i];
            }
            for (int32_t i = 0; i < L; i++)
                ii[i] = 0;
            const double *src = row;
            for (int64_t q = 0; q < n_outer; q++) {
                bool ok = true;
                int64_t off = 0;
                for (int32_t i = 0; i < L; i++) {
                    int64_t pos = ii[i] * g->s[i] - g->ph[i] + kk[i] * g->d[i];
                    if (pos < 0 || pos >= g->out[i])
                        ok = false;
                    off += pos * ostr[i];
                }
                if (ok) {
                    int64_t base = kk[L] * g->d[L] - g->ph[L], s = g->s[L], lim = g->out[L];
                    for (int64_t iw = 0; iw < n_last; iw++) {
                        int64_t pos = iw * s + base;
                        if (pos >= 0 && pos < lim)
                            ym[off + pos] += src[iw];
                    }
                }
                src += n_last;
                for (int32_t i = L - 1; i >= 0; i--) {
                    if (++ii[i] < g->in[i])
                        break;
                    ii[i] = 0;
                }
            }
            row += g->in_sp;
        }
    }
}

kn_status kn_ref_ConvTranspose(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *w = kn_kctx_in(c, 1), *b = kn_kctx_in(c, 2);
    if (!x || !w)
        return kn_kctx_fail(c, KN_ERR_INVALID, "ConvTranspose needs inputs X and W");
    if (!kn_dt_is_float(x->dtype) || w->dtype != x->dtype || (b && b->dtype != x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "ConvTranspose needs X, W and B of one floating-point type");
    conv_geom g;
    KN_TRY(convt_geom_init(c, x, w, &g));
    if (b && b->numel != g.m)
        return kn_kctx_fail(c, KN_ERR_INVALID, "bias B has %lld elements, expected %lld", (long long)b->numel,
                            (long long)g.m);
    int64_t dims[KN_RT_MAX_RANK];
    out_dims(&g, dims);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    int64_t rows = g.mg * g.k_sp;
    if (rows > 0 && g.in_sp > INT64_MAX / rows)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "col2im buffer too large");
    double *dx, *dw, *dy, *wt, *col;
    KN_TRY(kn_linalg_to_f64(c, x, &dx));
    KN_TRY(kn_linalg_to_f64(c, w, &dw));
    KN_TRY(kn_linalg_alloc(c, y->numel, sizeof *dy, (void **)&dy));
    KN_TRY(kn_linalg_alloc(c, rows * g.cg, sizeof *wt, (void **)&wt));
    KN_TRY(kn_linalg_alloc(c, rows * g.in_sp, sizeof *col, (void **)&col));
    int nt;
    double *pack;
    KN_TRY(kn_linalg_gemm_setup(c, rows, g.in_sp, g.cg, &nt, &pack));
    for (int64_t gi = 0; gi < g.group; gi++) {
        /* wt [(m, k) x cg] = W_g^T, W_g being [cg x (m, k)]. */
        const double *wg = dw + gi * g.cg * rows;
        for (int64_t ci = 0; ci < g.cg; ci++)
            for (int64_t r = 0; r < rows; r++)
                wt[r * g.cg + ci] = wg[ci * rows + r];
        for (int64_t n = 0; n < g.n; n++) {
            memset(col, 0, (size_t)(rows * g.in_sp) * sizeof *col);
            kn_linalg_gemm_f64(rows, g.in_sp, g.cg, wt, g.cg, dx + (n * g.c + gi * g.cg) * g.in_sp, g.in_sp, col,
                               g.in_sp, nt, pack);
            col2im(&g, col, dy + (n * g.m + gi * g.mg) * g.out_sp);
        }
    }
    if (b)
        for (int64_t n = 0; n < g.n; n++)
            for (int64_t m = 0; m < g.m; m++) {
                double bv = kn_get_f64(b->dtype, b->data, m), *p = dy + (n * g.m + m) * g.out_sp;
                for (int64_t i = 0; i < g.out_sp; i++)
                    p[i] += bv;
            }
    kn_linalg_store_f64(y->dtype, y->data, dy, y->numel);
    return KN_OK;
}
