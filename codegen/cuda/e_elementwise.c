/* CUDA emitters for the unary elementwise ops: math functions,
 * activations, predicates, Clip. Kernels are specialised on dtypes and
 * the op, never on shapes or attribute values: sizes and attributes
 * arrive as parameters, so one compiled kernel serves every node of the
 * same kind. Floats are computed in double and rounded once into the
 * output (as the CPU reference does); integers in exact 64-bit arithmetic.
 * Binary ops live in e_elementwise_binary.c, casts and quantization in
 * e_elementwise_cast.c. */
#include "codegen/cuda/emit.h"

#include <math.h>
#include <string.h>

/* Device helpers on top of kiln_cuda.h (candidates for the prelude):
 * kn_st_<T>(double) stores a double as T the way the CPU reference does:
 * floats round, integers saturate to int64 then wrap, uint64 saturates,
 * bool is != 0. */
static const char HEAD[] = "#include \"kiln_cuda.h\"\n";

enum { C_FLOAT = 1, C_SINT = 2, C_UINT = 4, C_BOOL = 8 };

/* The dtype class of t (0: kernels do not handle it). */
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

/* ---- unary ops ---- */

/* One unary op: an expression per dtype class in `x` (double for floats,
 * i64 for signed, u64 for unsigned ints and bool) and the attributes
 * p.a, p.b, p.c. `allow` lists the classes taken; with `ints_via_f`
 * integers go through the float expression (Shrink). */
typedef struct uop {
    const char *name;
    unsigned allow;
    const char *f, *s, *u;
    bool ints_via_f;
} uop;

typedef struct unary_params {
    int64_t n;
    double a, b, c;
} unary_params;

static kn_status unary(kn_emit *e, const uop *op, double a, double b, double c)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input or output");
    const char *ti = kn_cuda_type(x->dtype), *to = kn_cuda_type(y->dtype);
    unsigned cl = tclass(x->dtype);
    if (!ti || !to || !(cl & op->allow))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    const char *expr, *load;
    if (cl == C_FLOAT || op->ints_via_f) {
        expr = op->f, load = "double x = kn_tod(in[i]);";
    } else if (cl == C_SINT) {
        expr = op->s, load = "i64 x = (i64)in[i];";
    } else {
        expr = op->u, load = "u64 x = (u64)in[i];";
    }
    /* float results round once through kn_st_; integer ones wrap */
    bool via_double = cl == C_FLOAT || op->ints_via_f;
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 n; double a, b, c; };\n"
                 "extern \"C\" __global__ void kn_%s(const %s *in, %s *out, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    %s\n"
                 "    out[i] = %s%s%s(%s);\n"
                 "  }\n"
                 "}\n",
                 HEAD, op->name, ti, to, load, via_double ? "kn_st_<" : "(", to, via_double ? ">" : ")", expr);
    char entry[64];
    snprintf(entry, sizeof entry, "kn_%s", op->name);
    unary_params p = {x->numel, a, b, c};
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch_source(e, &src, entry, args, 3, x->numel);
}

#define SOFTPLUS "(x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)))"
#define F_ONLY C_FLOAT

#define UNARY(id, allow, f, s, u)                                \
    kn_status kn_emit_##id(kn_emit *e)                           \
    {                                                            \
        static const uop op = {#id, allow, f, s, u, false};      \
        return unary(e, &op, 0, 0, 0);                           \
    }

UNARY(Abs, C_FLOAT | C_SINT | C_UINT, "fabs(x)", "(x < 0 ? (i64)(0ull - (u64)x) : x)", "x")
UNARY(Neg, C_FLOAT | C_SINT, "-x", "(i64)(0ull - (u64)x)", NULL)
UNARY(Exp, F_ONLY, "exp(x)", NULL, NULL)
UNARY(Log, F_ONLY, "log(x)", NULL, NULL)
UNARY(Sqrt, F_ONLY, "sqrt(x)", NULL, NULL)
UNARY(Reciprocal, F_ONLY, "1.0 / x", NULL, NULL)
UNARY(Floor, F_ONLY, "floor(x)", NULL, NULL)
UNARY(Ceil, F_ONLY, "ceil(x)", NULL, NULL)
UNARY(Round, F_ONLY, "nearbyint(x)", NULL, NULL) /* halves to even */
UNARY(Sign, C_FLOAT | C_SINT | C_UINT, "(x > 0 ? 1.0 : x < 0 ? -1.0 : x)", "(i64)((x > 0) - (x < 0))",
      "(u64)(x != 0)")
UNARY(Sin, F_ONLY, "sin(x)", NULL, NULL)
UNARY(Cos, F_ONLY, "cos(x)", NULL, NULL)
UNARY(Tan, F_ONLY, "tan(x)", NULL, NULL)
UNARY(Asin, F_ONLY, "asin(x)", NULL, NULL)
UNARY(Acos, F_ONLY, "acos(x)", NULL, NULL)
UNARY(Atan, F_ONLY, "atan(x)", NULL, NULL)
UNARY(Sinh, F_ONLY, "sinh(x)", NULL, NULL)
UNARY(Cosh, F_ONLY, "cosh(x)", NULL, NULL)
UNARY(Asinh, F_ONLY, "asinh(x)", NULL, NULL)
UNARY(Acosh, F_ONLY, "acosh(x)", NULL, NULL)
UNARY(Atanh, F_ONLY, "atanh(x)", NULL, NULL)
UNARY(Erf, F_ONLY, "erf(x)", NULL, NULL)
UNARY(Sigmoid, F_ONLY, "(x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)))", NULL, NULL)
UNARY(Tanh, F_ONLY, "tanh(x)", NULL, NULL)
UNARY(Relu, C_FLOAT | C_SINT, "(x < 0 ? 0.0 : x)", "(x < 0 ? 0 : x)", NULL) /* NaN stays NaN */
UNARY(HardSwish, F_ONLY, "x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5))", NULL, NULL)
UNARY(Softplus, F_ONLY, SOFTPLUS, NULL, NULL)
UNARY(Softsign, F_ONLY, "x / (1.0 + fabs(x))", NULL, NULL)
UNARY(Mish, F_ONLY, "x * tanh(" SOFTPLUS ")", NULL, NULL)
UNARY(Not, C_BOOL, NULL, NULL, "!x")
UNARY(BitwiseNot, C_SINT | C_UINT, NULL, "~x", "~x")
UNARY(IsNaN, F_ONLY, "(double)(x != x)", NULL, NULL)

kn_status kn_emit_LeakyRelu(kn_emit *e)
{
    static const uop op = {"LeakyRelu", F_ONLY, "(x < 0 ? p.a * x : x)", NULL, NULL, false};
    return unary(e, &op, kn_emit_attr_float(e, "alpha", 0.01f), 0, 0);
}

kn_status kn_emit_Elu(kn_emit *e)
{
    static const uop op = {"Elu", F_ONLY, "(x < 0 ? p.a * expm1(x) : x)", NULL, NULL, false};
    return unary(e, &op, kn_emit_attr_float(e, "alpha", 1.0f), 0, 0);
}

kn_status kn_emit_Selu(kn_emit *e)
{
    static const uop op = {"Selu", F_ONLY, "p.c * (x <= 0 ? p.a * expm1(x) : x)", NULL, NULL, false};
    return unary(e, &op, kn_emit_attr_float(e, "alpha", 1.67326319217681884765625f), 0,
                 kn_emit_attr_float(e, "gamma", 1.05070102214813232421875f));
}

kn_status kn_emit_Celu(kn_emit *e)
{
    static const uop op = {"Celu", F_ONLY, "(x < 0 ? p.a * expm1(x / p.a) : x)", NULL, NULL, false};
    float alpha = kn_emit_attr_float(e, "alpha", 1.0f);
    if (alpha == 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "alpha must not be 0");
    return unary(e, &op, alpha, 0, 0);
}

kn_status kn_emit_HardSigmoid(kn_emit *e)
{
    static const uop op = {"HardSigmoid", F_ONLY, "fmax(0.0, fmin(1.0, p.a * x + p.b))", NULL, NULL, false};
    return unary(e, &op, kn_emit_attr_float(e, "alpha", 0.2f), kn_emit_attr_float(e, "beta", 0.5f), 0);
}

kn_status kn_emit_ThresholdedRelu(kn_emit *e)
{
    static const uop op = {"ThresholdedRelu", F_ONLY, "(x > p.a ? x : 0.0)", NULL, NULL, false};
    return unary(e, &op, kn_emit_attr_float(e, "alpha", 1.0f), 0, 0);
}

kn_status kn_emit_Gelu(kn_emit *e)
{
    static const uop op = {"Gelu", F_ONLY,
                           "(p.a != 0 ? 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)))"
                           " : 0.5 * x * (1.0 + erf(x * 0.70710678118654752440)))",
                           NULL, NULL, false};
    const char *a = kn_emit_attr_str(e, "approximate", "none");
    if (strcmp(a, "none") != 0 && strcmp(a, "tanh") != 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "approximate must be 'none' or 'tanh', got '%s'", a);
    return unary(e, &op, strcmp(a, "tanh") == 0, 0, 0);
}

kn_status kn_emit_Shrink(kn_emit *e)
{
    static const uop op = {"Shrink", C_FLOAT | C_SINT | C_UINT, "(x < -p.a ? x + p.b : x > p.a ? x - p.b : 0.0)",
                           NULL, NULL, true};
    return unary(e, &op, kn_emit_attr_float(e, "lambd", 0.5f), kn_emit_attr_float(e, "bias", 0.0f), 0);
}

kn_status kn_emit_IsInf(kn_emit *e)
{
    static const uop op = {"IsInf", F_ONLY,
                           "(double)(fabs(x) > 1.7976931348623157e308 && ((x > 0 && p.a != 0) || (x < 0 && p.b != 0)))",
                           NULL, NULL, false};
    return unary(e, &op, kn_emit_attr_int(e, "detect_positive", 1) != 0, kn_emit_attr_int(e, "detect_negative", 1) != 0,
                 0);
}

/* ---- Clip ---- */

typedef struct clip_params {
    int64_t n;
    double lo, hi; /* the attributes (opset < 11) */
} clip_params;

/* y = min(max(x, lo), hi), so lo > hi gives hi everywhere; NaN stays
 * NaN. Before opset 11 the bounds are attributes; from 11 on optional
 * scalar inputs of x's type, read on the device (they may be computed). */
kn_status kn_emit_Clip(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input or output");
    const char *t = kn_cuda_type(x->dtype);
    unsigned cl = tclass(x->dtype);
    if (!t || !(cl & (C_FLOAT | C_SINT | C_UINT)))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    bool attrs = kn_emit_opset(e) < 11;
    const kn_emit_tensor *lo = attrs ? NULL : kn_emit_in(e, 1), *hi = attrs ? NULL : kn_emit_in(e, 2);
    if ((lo && (lo->dtype != x->dtype || lo->numel != 1)) || (hi && (hi->dtype != x->dtype || hi->numel != 1)))
        return kn_emit_fail(e, KN_ERR_INVALID, "min and max must be scalars of the input's type");
    const char *vt = cl == C_FLOAT ? "double" : cl == C_SINT ? "i64" : "u64";
    const char *ld = cl == C_FLOAT ? "kn_tod" : cl == C_SINT ? "(i64)" : "(u64)";
    const char *dlo = cl == C_FLOAT ? "-kn_inf()" : cl == C_SINT ? "(i64)(-0x7fffffffffffffffLL - 1)" : "0ull";
    const char *dhi = cl == C_FLOAT ? "kn_inf()" : cl == C_SINT ? "(i64)0x7fffffffffffffffLL" : "~0ull";
    char lo_arg[64] = "", hi_arg[64] = "", lo_v[64], hi_v[64];
    if (lo) {
        snprintf(lo_arg, sizeof lo_arg, "const %s *lo_p, ", t);
        snprintf(lo_v, sizeof lo_v, "%s(lo_p[0])", ld);
    } else {
        snprintf(lo_v, sizeof lo_v, "%s", attrs ? "p.lo" : dlo);
    }
    if (hi) {
        snprintf(hi_arg, sizeof hi_arg, "const %s *hi_p, ", t);
        snprintf(hi_v, sizeof hi_v, "%s(hi_p[0])", ld);
    } else {
        snprintf(hi_v, sizeof hi_v, "%s", attrs ? "p.hi" : dhi);
    }
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 n; double lo, hi; };\n"
                 "extern \"C\" __global__ void kn_Clip(const %s *x, %s%s%s *y, P p) {\n"
                 "  %s lo = %s, hi = %s;\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    %s v = %s(x[i]);\n"
                 "    if (v < lo) v = lo;\n"
                 "    if (v > hi) v = hi;\n"
                 "    y[i] = %s%s%s(v);\n"
                 "  }\n"
                 "}\n",
                 HEAD, t, lo_arg, hi_arg, t, vt, lo_v, hi_v, vt, ld, cl == C_FLOAT ? "kn_st_<" : "(", t,
                 cl == C_FLOAT ? ">" : ")");
    clip_params p = {x->numel, kn_emit_attr_float(e, "min", -INFINITY), kn_emit_attr_float(e, "max", INFINITY)};
    kn_emit_arg args[5];
    uint32_t n = 0;
    args[n++] = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL};
    if (lo)
        args[n++] = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL};
    if (hi)
        args[n++] = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
    args[n++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof p, &p};
    return kn_emit_launch_source(e, &src, "kn_Clip", args, n, x->numel);
}
