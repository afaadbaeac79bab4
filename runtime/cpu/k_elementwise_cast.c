/* Elementwise family, type conversions: Cast, CastLike, QuantizeLinear,
 * DequantizeLinear, DynamicQuantizeLinear, and Dropout (inference only).
 * Holds the float8 / float4 / int4 element codecs the shared helpers
 * lack: conversions round once, from double, to nearest even. */
#include "runtime/cpu/util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- small float formats (float8 variants, float4e2m1) ---- */

typedef enum { NAN_NONE, NAN_FN, NAN_IEEE, NAN_FNUZ } nan_style;

/* A sign-exponent-mantissa format. NAN_FN: only S.1111.111 is NaN, no
 * infinity; NAN_IEEE: an all-ones exponent is Inf/NaN; NAN_FNUZ: 0x80
 * is the only NaN and there is no negative zero or infinity; NAN_NONE:
 * neither NaN nor infinity (float4e2m1). */
typedef struct ffmt {
    int ebits, mbits, bias;
    nan_style nan;
    double max; /* largest finite value */
} ffmt;

static const ffmt F8E4M3FN = {4, 3, 7, NAN_FN, 448.0};
static const ffmt F8E4M3FNUZ = {4, 3, 8, NAN_FNUZ, 240.0};
static const ffmt F8E5M2 = {5, 2, 15, NAN_IEEE, 57344.0};
static const ffmt F8E5M2FNUZ = {5, 2, 16, NAN_FNUZ, 57344.0};
static const ffmt F4E2M1 = {2, 1, 1, NAN_NONE, 6.0};

static const ffmt *small_float(kn_dtype t)
{
    switch (t) {
    case KN_F8E4M3FN: return &F8E4M3FN;
    case KN_F8E4M3FNUZ: return &F8E4M3FNUZ;
    case KN_F8E5M2: return &F8E5M2;
    case KN_F8E5M2FNUZ: return &F8E5M2FNUZ;
    case KN_F4E2M1: return &F4E2M1;
    default: return NULL;
    }
}

static double ff_decode(const ffmt *f, unsigned v)
{
    unsigned emask = (1u << f->ebits) - 1, mmask = (1u << f->mbits) - 1;
    unsigned sign = (v >> (f->ebits + f->mbits)) & 1, e = (v >> f->mbits) & emask, m = v & mmask;
    if (f->nan == NAN_FNUZ && sign && !e && !m)
        return NAN;
    if (f->nan == NAN_FN && e == emask && m == mmask)
        return sign ? -NAN : NAN;
    if (f->nan == NAN_IEEE && e == emask)
        return m ? (sign ? -NAN : NAN) : sign ? -INFINITY : INFINITY;
    double val = e ? ldexp((double)(m | (1u << f->mbits)), (int)e - f->bias - f->mbits)
                   : ldexp((double)m, 1 - f->bias - f->mbits);
    return sign ? -val : val;
}

/* Encodes x, rounding to nearest even. Values beyond the largest finite
 * one (after rounding) and infinities follow ONNX's Cast table: with
 * `saturate` they clamp to ±max, without it they become Inf where the format has one, else NaN.
 * float4e2m1 has neither and always clamps; its NaN encodes as +0. */
static unsigned ff_encode(const ffmt *f, double x, bool saturate)
{
    unsigned sbit = 1u << (f->ebits + f->mbits), emask = (1u << f->ebits) - 1, mmask = (1u << f->mbits) - 1;
    unsigned sign = signbit(x) ? sbit : 0;
    unsigned nan = f->nan == NAN_FNUZ ? sbit : f->nan == NAN_NONE ? 0 : (sign | (emask << f->mbits) | mmask);
    unsigned inf = sign | (emask << f->mbits);
    double ax = fabs(x);
    int me;
    double mfr = frexp(f->max, &me); /* max = mfr * 2^me, mfr in [0.5, 1) */
    unsigned maxmag = ((unsigned)(me - 1 + f->bias) << f->mbits) | (((unsigned)ldexp(mfr, f->mbits + 1)) & mmask);
    if (isnan(x))
        return nan;
    if (isinf(x)) {
        if (f->nan == NAN_NONE)
            return sign | maxmag;
        if (saturate) /* the FNUZ types too, as ONNX's reference and onnxruntime do (the spec's table says NaN) */
            return sign | maxmag;
        return f->nan == NAN_IEEE ? inf : nan;
    }
    if (f->nan == NAN_FNUZ)
        sign = 0; /* decided below once the value is known to be nonzero */
    if (ax == 0)
        return sign;
    int e;
    frexp(ax, &e);
    int ex = e - 1, emin = 1 - f->bias; /* ax in [2^ex, 2^(ex+1)) */
    if (ex < emin)
        ex = emin;
    double r = nearbyint(ldexp(ax, f->mbits - ex)); /* mantissa with the implicit bit */
    if (r == 0)
        return sign;
    if (f->nan == NAN_FNUZ && signbit(x))
        sign = sbit;
    if (ldexp(r, ex - f->mbits) > f->max) {
        if (saturate || f->nan == NAN_NONE)
            return sign | maxmag;
        return f->nan == NAN_IEEE ? inf : f->nan == NAN_FNUZ ? sbit : (sign | nan);
    }
    if (r >= ldexp(1.0, f->mbits + 1)) {
        r /= 2;
        ex++;
    }
    unsigned ir = (unsigned)r;
    if (ir < (1u << f->mbits)) /* subnormal: ex == emin */
        return sign | ir;
    return sign | ((unsigned)(ex + f->bias) << f->mbits) | (ir & mmask);
}

/* ---- element access over every numeric dtype ---- */

static bool is_4bit(kn_dtype t) { return t == KN_I4 || t == KN_U4 || t == KN_F4E2M1; }

static unsigned raw_get(kn_dtype t, const void *d, int64_t i)
{
    const uint8_t *b = d;
    if (is_4bit(t))
        return (i & 1) ? b[i / 2] >> 4 : b[i / 2] & 15;
    return b[i];
}

static void raw_set(kn_dtype t, void *d, int64_t i, unsigned v)
{
    uint8_t *b = d;
    if (is_4bit(t))
        b[i / 2] = (uint8_t)((i & 1) ? (b[i / 2] & 0x0f) | ((v & 15) << 4) : (b[i / 2] & 0xf0) | (v & 15));
    else
        b[i] = (uint8_t)v;
}

/* Whether the shared helpers or this file can read/write t. */
static bool numeric(kn_dtype t)
{
    return kn_dt_is_float(t) || kn_dt_is_int(t) || t == KN_BOOL || t == KN_I4 || t == KN_U4 || small_float(t);
}

static bool floatish(kn_dtype t) { return kn_dt_is_float(t) || small_float(t); }

static double get_f(kn_dtype t, const void *d, int64_t i)
{
    const ffmt *f = small_float(t);
    if (f)
        return ff_decode(f, raw_get(t, d, i));
    if (t == KN_I4)
        return (double)(((int)raw_get(t, d, i) ^ 8) - 8);
    if (t == KN_U4)
        return raw_get(t, d, i);
    return kn_get_f64(t, d, i);
}

static int64_t get_i(kn_dtype t, const void *d, int64_t i)
{
    if (t == KN_I4)
        return ((int)raw_get(t, d, i) ^ 8) - 8;
    if (t == KN_U4)
        return raw_get(t, d, i);
    if (t == KN_U64)
        return (int64_t)kn_get_u64(t, d, i);
    return kn_get_i64(t, d, i);
}

static int64_t sat_i64(double v)
{
    if (isnan(v))
        return 0;
    if (v >= 9.2233720368547758e18)
        return INT64_MAX;
    if (v <= -9.2233720368547758e18)
        return INT64_MIN;
    return (int64_t)v;
}

static void set_f(kn_dtype t, void *d, int64_t i, double v, bool saturate)
{
    const ffmt *f = small_float(t);
    if (f)
        raw_set(t, d, i, ff_encode(f, v, saturate));
    else if (t == KN_I4 || t == KN_U4)
        raw_set(t, d, i, (unsigned)sat_i64(v) & 15);
    else
        kn_set_f64(t, d, i, v);
}

/* Stores an integer (already wrapped to 64 bits; `is_unsigned` says how to
 * read its bits) in t: fixed-point targets keep the low bits, float
 * targets round once. */
static void set_int(kn_dtype t, void *d, int64_t i, int64_t v, bool is_unsigned, bool saturate)
{
    if (t == KN_I4 || t == KN_U4) {
        raw_set(t, d, i, (unsigned)v & 15);
    } else if (t == KN_F32) {
        float x = is_unsigned ? (float)(uint64_t)v : (float)v;
        memcpy((char *)d + (size_t)i * 4, &x, 4);
    } else if (floatish(t)) {
        set_f(t, d, i, is_unsigned ? (double)(uint64_t)v : (double)v, saturate);
    } else {
        kn_set_i64(t, d, i, v);
    }
}

/* ---- Cast ---- */

/* Parses a string element as ONNX's Cast does: decimal or scientific
 * notation, INF/+INF/-INF/NaN in any case. */
static kn_status parse_number(kn_kctx *c, const kn_bytes *s, double *fv, int64_t *iv, bool *is_int)
{
    char buf[128];
    if (s->len >= sizeof buf)
        return kn_kctx_fail(c, KN_ERR_INVALID, "string of %zu bytes is not a number", s->len);
    memcpy(buf, s->data, s->len);
    buf[s->len] = 0;
    char *end;
    errno = 0;
    long long ll = strtoll(buf, &end, 10);
    if (end != buf && *end == 0 && errno == 0) {
        *is_int = true;
        *iv = ll;
        *fv = (double)ll;
        return KN_OK;
    }
    *is_int = false;
    *fv = strtod(buf, &end);
    if (end == buf || *end != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "string '%s' is not a number", buf);
    return KN_OK;
}

static kn_status cast_to(kn_kctx *c, const kn_rt_tensor *x, kn_dtype to, bool saturate)
{
    if (to == KN_STRING)
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "casting to string is not supported");
    if (!numeric(to))
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "casting to %s is not supported", kn_dtype_name(to));
    kn_dtype t = x->dtype;
    if (t != KN_STRING && !numeric(t))
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "casting from %s is not supported", kn_dtype_name(t));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, to, x->rank, x->dims, &y));
    if (t == to) {
        if (x->nbytes)
            memcpy(y->data, x->data, x->nbytes);
        return KN_OK;
    }
    for (int64_t i = 0; i < x->numel; i++) {
        if (t == KN_STRING) {
            double fv = 0;
            int64_t iv = 0;
            bool is_int = false;
            KN_TRY(parse_number(c, &((const kn_bytes *)x->data)[i], &fv, &iv, &is_int));
            if (is_int)
                set_int(to, y->data, i, iv, false, saturate);
            else
                set_f(to, y->data, i, fv, saturate);
        } else if (floatish(t)) {
            set_f(to, y->data, i, get_f(t, x->data, i), saturate);
        } else {
            set_int(to, y->data, i, get_i(t, x->data, i), t == KN_U64, saturate);
        }
    }
    return KN_OK;
}

kn_status kn_ref_Cast(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    int64_t to = kn_kctx_attr_int(c, "to", -1);
    if (to < 0 || !(to == KN_STRING || kn_dtype_valid((int)to)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "attribute 'to' (%lld) is not a data type", (long long)to);
    return cast_to(c, x, (kn_dtype)to, kn_kctx_attr_int(c, "saturate", 1) != 0);
}

kn_status kn_ref_CastLike(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *like = kn_kctx_in(c, 1);
    if (!x || !like)
        return kn_kctx_fail(c, KN_ERR_INVALID, "CastLike needs input and target_type");
    return cast_to(c, x, like->dtype, kn_kctx_attr_int(c, "saturate", 1) != 0);
}

/* ---- Dropout ---- */

/* Inference Dropout: the output is the input, the mask all true (of the
 * input's type before opset 10). Training mode with a nonzero ratio draws
 * random numbers, which a reference backend cannot reproduce. */
kn_status kn_ref_Dropout(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    int64_t opset = kn_kctx_opset(c);
    bool training;
    double ratio;
    if (opset >= 12) {
        const kn_rt_tensor *r = kn_kctx_in(c, 1), *tm = kn_kctx_in(c, 2);
        if ((r && (r->numel != 1 || !kn_dt_is_float(r->dtype))) || (tm && (tm->numel != 1 || tm->dtype != KN_BOOL)))
            return kn_kctx_fail(c, KN_ERR_INVALID, "ratio must be a float scalar and training_mode a bool scalar");
        ratio = r ? kn_get_f64(r->dtype, r->data, 0) : 0.5;
        training = tm && kn_get_i64(KN_BOOL, tm->data, 0);
    } else {
        ratio = kn_kctx_attr_float(c, "ratio", 0.5f);
        training = opset < 7 && kn_kctx_attr_int(c, "is_test", 0) == 0;
    }
    if (training && ratio != 0)
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "Dropout in training mode (ratio %g) is random; not supported",
                            ratio);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    if (x->nbytes)
        memcpy(y->data, x->data, x->nbytes);
    if (kn_kctx_out_wanted(c, 1)) {
        kn_dtype mt = opset >= 10 ? KN_BOOL : x->dtype;
        if (!kn_dt_size(mt))
            return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "mask of type %s", kn_dtype_name(mt));
        kn_rt_tensor *m;
        KN_TRY(kn_kctx_out(c, 1, mt, x->rank, x->dims, &m));
        for (int64_t i = 0; i < m->numel; i++)
            kn_set_f64(mt, m->data, i, 1.0);
    }
    return KN_OK;
}

/* ---- quantization ---- */

/* Where the scale (and zero point) of each element of x sits: one for
 * all (per-tensor), one per index along `axis` (per-axis), or one per
 * block of `block` indices along it (blocked, scale of x's rank). */
typedef struct qmap {
    int64_t inner; /* elements after the axis */
    int64_t dim;   /* x's extent along the axis */
    int64_t sdim;  /* the scale's extent along it */
    int64_t block; /* 0: per-tensor or per-axis */
    bool per_tensor;
} qmap;

static int64_t qmap_index(const qmap *m, int64_t i)
{
    if (m->per_tensor)
        return 0;
    int64_t in = i % m->inner, a = (i / m->inner) % m->dim, o = i / (m->inner * m->dim);
    if (!m->block)
        return a;
    return (o * m->sdim + a / m->block) * m->inner + in;
}

static kn_status qmap_init(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *s, const kn_rt_tensor *zp,
                           qmap *m)
{
    memset(m, 0, sizeof *m);
    int64_t block = kn_kctx_attr_int(c, "block_size", 0);
    if (block < 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "block_size %lld is negative", (long long)block);
    if (zp) {
        /* one element each counts as the same ([1] vs []: onnxruntime's
         * quantizer writes such per-tensor bias parameters) */
        bool same = zp->rank == s->rank || (zp->numel == 1 && s->numel == 1 && zp->rank <= 1 && s->rank <= 1);
        for (int32_t i = 0; same && zp->rank == s->rank && i < s->rank; i++)
            same = zp->dims[i] == s->dims[i];
        if (!same)
            return kn_kctx_fail(c, KN_ERR_INVALID, "zero point and scale shapes differ");
    }
    if (s->rank == 0 || (s->rank == 1 && s->numel == 1 && block == 0)) {
        if (s->numel != 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "empty scale");
        m->per_tensor = true;
        return KN_OK;
    }
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 1), x->rank, &axis));
    m->dim = x->dims[axis];
    m->inner = 1;
    for (int32_t i = axis + 1; i < x->rank; i++)
        m->inner *= x->dims[i];
    if (block == 0) {
        if (s->rank != 1 || s->dims[0] != m->dim)
            return kn_kctx_fail(c, KN_ERR_INVALID, "per-axis scale has %lld elements, axis %d of the input has %lld",
                                (long long)s->numel, (int)axis, (long long)m->dim);
        return KN_OK;
    }
    if (s->rank != x->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "blocked scale has rank %d, the input %d", (int)s->rank, (int)x->rank);
    for (int32_t i = 0; i < x->rank; i++) {
        int64_t want = i == axis ? (x->dims[i] + block - 1) / block : x->dims[i];
        if (s->dims[i] != want)
            return kn_kctx_fail(c, KN_ERR_INVALID, "blocked scale dimension %d is %lld, expected %lld", (int)i,
                                (long long)s->dims[i], (long long)want);
    }
    m->block = block;
    m->sdim = s->dims[axis];
    return KN_OK;
}

static bool quant_range(kn_dtype t, int64_t *lo, int64_t *hi)
{
    switch (t) {
    case KN_U8: *lo = 0; *hi = 255; return true;
    case KN_I8: *lo = -128; *hi = 127; return true;
    case KN_U16: *lo = 0; *hi = 65535; return true;
    case KN_I16: *lo = -32768; *hi = 32767; return true;
    case KN_U4: *lo = 0; *hi = 15; return true;
    case KN_I4: *lo = -8; *hi = 7; return true;
    default: return false;
    }
}

static bool scale_type(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

/* y = saturate(round_half_even(x / scale) + zero_point), computed in
 * float32 (double for int32 inputs) like ONNX's reference. */
kn_status kn_ref_QuantizeLinear(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *s = kn_kctx_in(c, 1), *zp = kn_kctx_in(c, 2);
    if (!x || !s)
        return kn_kctx_fail(c, KN_ERR_INVALID, "QuantizeLinear needs x and y_scale");
    if (!(scale_type(x->dtype) || x->dtype == KN_I32) || !scale_type(s->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input types %s, %s are not supported", kn_dtype_name(x->dtype),
                            kn_dtype_name(s->dtype));
    int64_t odt = kn_kctx_attr_int(c, "output_dtype", 0);
    kn_dtype ot = zp ? zp->dtype : odt ? (kn_dtype)odt : KN_U8;
    if (zp && odt && odt != zp->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "output_dtype %lld differs from the zero point's type %s",
                            (long long)odt, kn_dtype_name(zp->dtype));
    int64_t lo = 0, hi = 0;
    bool is_int = quant_range(ot, &lo, &hi);
    if (!is_int && !small_float(ot))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s is not a quantized type", kn_dtype_name(ot));
    qmap m;
    KN_TRY(qmap_init(c, x, s, zp, &m));
    bool saturate = kn_kctx_attr_int(c, "saturate", 1) != 0;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, ot, x->rank, x->dims, &y));
    for (int64_t i = 0; i < x->numel; i++) {
        int64_t k = qmap_index(&m, i);
        double v = x->dtype == KN_I32 ? (double)get_f(x->dtype, x->data, i) / get_f(s->dtype, s->data, k)
                                      : (double)((float)get_f(x->dtype, x->data, i) / (float)get_f(s->dtype, s->data, k));
        if (is_int) {
            double q = nearbyint(v) + (zp ? (double)get_i(zp->dtype, zp->data, k) : 0.0);
            int64_t qi = isnan(q) ? 0 : q < (double)lo ? lo : q > (double)hi ? hi : (int64_t)q;
            set_int(ot, y->data, i, qi, false, true);
        } else {
            double z = zp ? get_f(zp->dtype, zp->data, k) : 0.0;
            set_f(ot, y->data, i, (double)(float)(v + z), saturate);
        }
    }
    return KN_OK;
}

/* y = (x - zero_point) * scale, in float32, stored as the scale's type
 * (or output_dtype). */
kn_status kn_ref_DequantizeLinear(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *s = kn_kctx_in(c, 1), *zp = kn_kctx_in(c, 2);
    if (!x || !s)
        return kn_kctx_fail(c, KN_ERR_INVALID, "DequantizeLinear needs x and x_scale");
    int64_t lo, hi;
    if (!(quant_range(x->dtype, &lo, &hi) || x->dtype == KN_I32 || small_float(x->dtype)) || !scale_type(s->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input types %s, %s are not supported", kn_dtype_name(x->dtype),
                            kn_dtype_name(s->dtype));
    if (zp && zp->dtype != x->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "zero point has type %s, x has %s", kn_dtype_name(zp->dtype),
                            kn_dtype_name(x->dtype));
    int64_t odt = kn_kctx_attr_int(c, "output_dtype", 0);
    kn_dtype ot = odt ? (kn_dtype)odt : s->dtype;
    if (!scale_type(ot))
        return kn_kctx_fail(c, KN_ERR_INVALID, "output_dtype %lld is not float32, float16 or bfloat16", (long long)odt);
    qmap m;
    KN_TRY(qmap_init(c, x, s, zp, &m));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, ot, x->rank, x->dims, &y));
    for (int64_t i = 0; i < x->numel; i++) {
        int64_t k = qmap_index(&m, i);
        float dx = (float)get_f(x->dtype, x->data, i) - (zp ? (float)get_f(zp->dtype, zp->data, k) : 0.0f);
        kn_set_f64(ot, y->data, i, (double)(dx * (float)get_f(s->dtype, s->data, k)));
    }
    return KN_OK;
}

/* uint8 quantization with a scale and zero point chosen from x's range
 * (widened to include 0), all in float32 like ONNX's reference. */
kn_status kn_ref_DynamicQuantizeLinear(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    if (x->dtype != KN_F32)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input type %s is not float32", kn_dtype_name(x->dtype));
    const float *xd = x->data;
    float mn = 0, mx = 0;
    for (int64_t i = 0; i < x->numel; i++) {
        float v = xd[i];
        if (v < mn)
            mn = v;
        if (v > mx)
            mx = v;
    }
    float scale = (mx == mn ? 1.0f : mx - mn) / 255.0f;
    float zpf = 0.0f - mn / scale;
    zpf = zpf < 0 ? 0 : zpf > 255 ? 255 : zpf;
    float zp = nearbyintf(zpf);
    kn_rt_tensor *y, *ys, *yz;
    KN_TRY(kn_kctx_out(c, 0, KN_U8, x->rank, x->dims, &y));
    KN_TRY(kn_kctx_out(c, 1, KN_F32, 0, NULL, &ys));
    KN_TRY(kn_kctx_out(c, 2, KN_U8, 0, NULL, &yz));
    uint8_t *yd = y->data;
    for (int64_t i = 0; i < x->numel; i++) {
        float q = nearbyintf(xd[i] / scale) + zp;
        yd[i] = (uint8_t)(isnan(q) ? 0 : q < 0 ? 0 : q > 255 ? 255 : q);
    }
    memcpy(ys->data, &scale, 4);
    *(uint8_t *)yz->data = (uint8_t)zp;
    return KN_OK;
}
