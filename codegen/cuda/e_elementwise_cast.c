/* CUDA emitters for type conversions: Cast, CastLike, QuantizeLinear,
 * DequantizeLinear, and Dropout (inference). Conversions follow the CPU
 * reference exactly: floats round once (f64 to f16 through f32, as it
 * does), float to integer saturates to int64 then wraps, integers keep
 * their low bits. float8 and 4-bit types have no kernel type: the
 * emitters report them unsupported. */
#include "codegen/cuda/emit.h"

#include <string.h>

/* Device helpers on top of kiln_cuda.h (a copy of e_elementwise.c's:
 * candidates for the prelude). */
static const char HEAD[] = "#include \"kiln_cuda.h\"\n";

enum { C_FLOAT = 1, C_SINT = 2, C_UINT = 4, C_BOOL = 8 };

static unsigned tclass(kn_dtype t)
{
    switch (t) {
    case KN_F16: case KN_BF16: case KN_F32: case KN_F64: return C_FLOAT;
    case KN_I8: case KN_I16: case KN_I32: case KN_I64: return C_SINT;
    case KN_U8: case KN_U16: case KN_U32: case KN_U64: return C_UINT;
    case KN_BOOL: return C_BOOL;
    default: return 0;
    }
}

typedef struct n_params {
    int64_t n;
} n_params;

/* ---- Cast ---- */

/* The expression converting `v` (of type `from`) to `to`. */
static void convert_expr(char *buf, size_t cap, kn_dtype from, kn_dtype to, const char *v)
{
    const char *tt = kn_cuda_type(to);
    unsigned cf = tclass(from), ct = tclass(to);
    if (cf == C_FLOAT) {
        snprintf(buf, cap, "kn_st_<%s>(kn_tod(%s))", tt, v);
        return;
    }
    /* integers and bool: exact, through int64 (uint64 for uint64) */
    const char *w = from == KN_U64 ? "(u64)" : "(i64)";
    if (to == KN_F32 || to == KN_F64)
        snprintf(buf, cap, "(%s)(%s(%s))", tt, w, v); /* one rounding, like the CPU's (float)int64 */
    else if (ct == C_FLOAT)
        snprintf(buf, cap, "kn_fromd<%s>((double)(%s(%s)))", tt, w, v);
    else if (to == KN_BOOL)
        snprintf(buf, cap, "(%s(%s) != 0)", w, v);
    else
        snprintf(buf, cap, "(%s)(%s(%s))", tt, w, v);
}

static kn_status cast_to(kn_emit *e, kn_dtype to)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input or output");
    if (!kn_cuda_type(x->dtype) || !kn_cuda_type(to))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "cast from %s to %s", kn_dtype_name(x->dtype), kn_dtype_name(to));
    if (x->dtype == to)
        return kn_emit_alias(e, 0, 0);
    char expr[160];
    convert_expr(expr, sizeof expr, x->dtype, to, "x[i]");
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 n; };\n"
                 "extern \"C\" __global__ void kn_Cast(const %s *x, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads())\n"
                 "    y[i] = %s;\n"
                 "}\n",
                 HEAD, kn_cuda_type(x->dtype), kn_cuda_type(to), expr);
    n_params p = {x->numel};
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch_source(e, &src, "kn_Cast", args, 3, x->numel);
}

kn_status kn_emit_Cast(kn_emit *e)
{
    int64_t to = kn_emit_attr_int(e, "to", -1);
    if (to < 0 || !kn_dtype_valid((int)to))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "cast to type %lld", (long long)to);
    return cast_to(e, (kn_dtype)to);
}

kn_status kn_emit_CastLike(kn_emit *e)
{
    const kn_emit_tensor *like = kn_emit_in(e, 1);
    if (!like)
        return kn_emit_fail(e, KN_ERR_INVALID, "CastLike needs input and target_type");
    return cast_to(e, like->dtype);
}

/* ---- Dropout ---- */

/* A scalar input known at compile time as a double; false when it is
 * computed at run time. */
static bool const_scalar(const kn_emit_tensor *t, double *v)
{
    if (!t || !t->host_data || t->numel != 1)
        return false;
    switch (t->dtype) {
    case KN_F32: { float f; memcpy(&f, t->host_data, 4); *v = f; return true; }
    case KN_F64: memcpy(v, t->host_data, 8); return true;
    case KN_BOOL: *v = *(const uint8_t *)t->host_data != 0; return true;
    default: return false;
    }
}

/* Inference Dropout: the output is the input (an alias), the mask all
 * true (of the input's type before opset 10). Training mode with a
 * nonzero ratio is random: unsupported, as on the CPU. */
kn_status kn_emit_Dropout(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    if (!x)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input");
    int64_t opset = kn_emit_opset(e);
    bool training = false;
    double ratio = 0.5;
    if (opset >= 12) {
        const kn_emit_tensor *r = kn_emit_in(e, 1), *tm = kn_emit_in(e, 2);
        double v;
        if (tm) {
            if (!const_scalar(tm, &v))
                return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "training_mode computed at run time");
            training = v != 0;
        }
        if (training && r && !const_scalar(r, &ratio))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "ratio computed at run time in training mode");
    } else {
        ratio = kn_emit_attr_float(e, "ratio", 0.5f);
        training = opset < 7 && kn_emit_attr_int(e, "is_test", 0) == 0;
    }
    if (training && ratio != 0)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "Dropout in training mode (ratio %g) is random", ratio);
    KN_TRY(kn_emit_alias(e, 0, 0));
    const kn_emit_tensor *m = kn_emit_out(e, 1);
    if (!m)
        return KN_OK;
    const char *tm = kn_cuda_type(m->dtype);
    if (!tm)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "mask of type %s", kn_dtype_name(m->dtype));
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 n; };\n"
                 "extern \"C\" __global__ void kn_Ones(%s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads())\n"
                 "    y[i] = kn_st_<%s>(1.0);\n"
                 "}\n",
                 HEAD, tm, tm);
    n_params p = {m->numel};
    kn_emit_arg args[2] = {{KN_ARG_OUT, 1, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch_source(e, &src, "kn_Ones", args, 2, m->numel);
}

/* ---- QuantizeLinear, DequantizeLinear ---- */

/* Where the scale (and zero point) of element i sits: index 0
 * (per-tensor), its index along the axis (per-axis), or its block's
 * (blocked: scale of x's rank). The layout is the kernel's P. */
typedef struct q_params {
    int64_t n;
    int64_t per_tensor, inner, dim, sdim, block;
    int64_t lo, hi; /* the quantized type's range */
} q_params;

static const char QINDEX[] =
    "struct P { i64 n, per_tensor, inner, dim, sdim, block, lo, hi; };\n"
    "__device__ __forceinline__ i64 kn_qidx_(const P &p, i64 i) {\n"
    "  if (p.per_tensor) return 0;\n"
    "  i64 in = i % p.inner, a = (i / p.inner) % p.dim, o = i / (p.inner * p.dim);\n"
    "  if (!p.block) return a;\n"
    "  return (o * p.sdim + a / p.block) * p.inner + in;\n"
    "}\n";

static kn_status qmap_init(kn_emit *e, const kn_emit_tensor *x, const kn_emit_tensor *s, const kn_emit_tensor *zp,
                           q_params *m)
{
    int64_t block = kn_emit_attr_int(e, "block_size", 0);
    if (block < 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "block_size %lld is negative", (long long)block);
    if (zp) {
        bool same = zp->rank == s->rank;
        for (int32_t i = 0; same && i < s->rank; i++)
            same = zp->dims[i] == s->dims[i];
        if (!same)
            return kn_emit_fail(e, KN_ERR_INVALID, "zero point and scale shapes differ");
    }
    m->n = x->numel;
    m->inner = m->dim = 1;
    if (s->rank == 0 || (s->rank == 1 && s->numel == 1 && block == 0)) {
        if (s->numel != 1)
            return kn_emit_fail(e, KN_ERR_INVALID, "empty scale");
        m->per_tensor = 1;
        return KN_OK;
    }
    int64_t axis = kn_emit_attr_int(e, "axis", 1);
    if (axis < 0)
        axis += x->rank;
    if (axis < 0 || axis >= x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis %lld out of range for rank %d", (long long)axis, (int)x->rank);
    m->dim = x->dims[axis];
    for (int32_t i = (int32_t)axis + 1; i < x->rank; i++)
        m->inner *= x->dims[i];
    if (m->dim == 0 || m->inner == 0)
        m->dim = m->inner = 1; /* no elements: any map will do */
    if (block == 0) {
        if (s->rank != 1 || s->dims[0] != x->dims[axis])
            return kn_emit_fail(e, KN_ERR_INVALID, "per-axis scale has %lld elements, axis %d of the input has %lld",
                                (long long)s->numel, (int)axis, (long long)x->dims[axis]);
        return KN_OK;
    }
    if (s->rank != x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "blocked scale has rank %d, the input %d", (int)s->rank, (int)x->rank);
    for (int32_t i = 0; i < x->rank; i++) {
        int64_t want = i == axis ? (x->dims[i] + block - 1) / block : x->dims[i];
        if (s->dims[i] != want)
            return kn_emit_fail(e, KN_ERR_INVALID, "blocked scale dimension %d is %lld, expected %lld", (int)i,
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
    default: return false;
    }
}

static bool scale_type(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

/* y = saturate(round_half_even(x / scale) + zero_point), the division in
 * float32 (double for int32 x) like the CPU reference. Integer outputs
 * only (float8 and 4-bit outputs are unsupported). */
kn_status kn_emit_QuantizeLinear(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *s = kn_emit_in(e, 1), *zp = kn_emit_in(e, 2), *y = kn_emit_out(e, 0);
    if (!x || !s || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "QuantizeLinear needs x and y_scale");
    if (!(scale_type(x->dtype) || x->dtype == KN_I32) || !scale_type(s->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "input types %s, %s", kn_dtype_name(x->dtype),
                            kn_dtype_name(s->dtype));
    q_params m = {0};
    if (!quant_range(y->dtype, &m.lo, &m.hi) || (zp && zp->dtype != y->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "quantizing to %s", kn_dtype_name(y->dtype));
    KN_TRY(qmap_init(e, x, s, zp, &m));
    const char *tx = kn_cuda_type(x->dtype), *ts = kn_cuda_type(s->dtype), *ty = kn_cuda_type(y->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src, "%s%s", HEAD, QINDEX);
    kn_sb_printf(&src, "extern \"C\" __global__ void kn_QuantizeLinear(const %s *x, const %s *s, ", tx, ts);
    if (zp)
        kn_sb_printf(&src, "const %s *zp, ", ty);
    kn_sb_printf(&src,
                 "%s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 k = kn_qidx_(p, i);\n"
                 "    double v = %s;\n"
                 "    double q = nearbyint(v) + %s;\n"
                 "    y[i] = (%s)(q != q ? 0 : q < (double)p.lo ? p.lo : q > (double)p.hi ? p.hi : (i64)q);\n"
                 "  }\n"
                 "}\n",
                 ty,
                 x->dtype == KN_I32 ? "(double)x[i] / kn_tod(s[k])"
                                    : "(double)((float)kn_tod(x[i]) / (float)kn_tod(s[k]))",
                 zp ? "(double)zp[k]" : "0.0", ty);
    kn_emit_arg args[5];
    uint32_t n = 0;
    args[n++] = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL};
    if (zp)
        args[n++] = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof m, &m};
    return kn_emit_launch_source(e, &src, "kn_QuantizeLinear", args, n, x->numel);
}

/* y = (x - zero_point) * scale in float32, stored as the scale's type
 * (or output_dtype). */
kn_status kn_emit_DequantizeLinear(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *s = kn_emit_in(e, 1), *zp = kn_emit_in(e, 2), *y = kn_emit_out(e, 0);
    if (!x || !s || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "DequantizeLinear needs x and x_scale");
    int64_t lo, hi;
    if (!(quant_range(x->dtype, &lo, &hi) || x->dtype == KN_I32) || !scale_type(s->dtype) || !scale_type(y->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "types %s, %s -> %s", kn_dtype_name(x->dtype),
                            kn_dtype_name(s->dtype), kn_dtype_name(y->dtype));
    if (zp && zp->dtype != x->dtype)
        return kn_emit_fail(e, KN_ERR_INVALID, "zero point has type %s, x has %s", kn_dtype_name(zp->dtype),
                            kn_dtype_name(x->dtype));
    q_params m = {0};
    KN_TRY(qmap_init(e, x, s, zp, &m));
    const char *tx = kn_cuda_type(x->dtype), *ts = kn_cuda_type(s->dtype), *ty = kn_cuda_type(y->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src, "%s%s", HEAD, QINDEX);
    kn_sb_printf(&src, "extern \"C\" __global__ void kn_DequantizeLinear(const %s *x, const %s *s, ", tx, ts);
    if (zp)
        kn_sb_printf(&src, "const %s *zp, ", tx);
    kn_sb_printf(&src,
                 "%s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 k = kn_qidx_(p, i);\n"
                 "    float dx = (float)(double)x[i] - %s;\n"
                 "    y[i] = kn_st_<%s>((double)(dx * (float)kn_tod(s[k])));\n"
                 "  }\n"
                 "}\n",
                 ty, zp ? "(float)(double)zp[k]" : "0.0f", ty);
    kn_emit_arg args[5];
    uint32_t n = 0;
    args[n++] = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL};
    if (zp)
        args[n++] = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof m, &m};
    return kn_emit_launch_source(e, &src, "kn_DequantizeLinear", args, n, x->numel);
}
