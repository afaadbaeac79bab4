/* kiln.FusedElementwise (passes/fuse_elementwise.c): interprets the node's
 * program (ir/fused_ew.h) at every element of the broadcast of its inputs.
 * Each step computes exactly what the separate node's CPU kernel computes
 * (k_elementwise*.c: floats in double, signed integers and bool in int64)
 * and then rounds or wraps the result to the step's dtype through the
 * same store/load helpers, so the fused node's output is bit-identical to
 * the chain's. */
#include "ir/fused_ew.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

typedef struct val {
    double f;  /* float dtypes */
    int64_t i; /* signed ints and bool */
} val;

typedef struct step {
    kn_fe_op op;
    int64_t a[KN_FE_ARGS];
    kn_dtype t;
    double imm[KN_FE_IMMS];
} step;

static bool dtype_ok(kn_dtype t) { return kn_dt_is_float(t) || (kn_dt_is_int(t) && kn_dt_is_signed(t)) || t == KN_BOOL; }

static double rnd_f(kn_dtype t, double v)
{
    unsigned char b[8];
    kn_set_f64(t, b, 0, v);
    return kn_get_f64(t, b, 0);
}

static int64_t rnd_i(kn_dtype t, int64_t v)
{
    unsigned char b[8];
    kn_set_i64(t, b, 0, v);
    return kn_get_i64(t, b, 0);
}

/* The scalar functions of k_elementwise.c / k_fused_act.c, same formulas. */
static double sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}
static double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }
static double silu(double x) { return x / (1.0 + exp(-x)); }
static double gelu(double x, bool tanh_approx)
{
    if (tanh_approx) {
        const double k = 0.79788456080286535588; /* sqrt(2/pi) */
        return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
    }
    return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440));
}

/* A float step (operands a, b as double; z: Clip's max when given). */
static double eval_f(const step *s, double a, double b, const val *y, const val *z)
{
    switch (s->op) {
    case KN_FE_Neg: return -a;
    case KN_FE_Abs: return fabs(a);
    case KN_FE_Relu: return a < 0 ? 0.0 : a; /* NaN stays NaN */
    case KN_FE_Exp: return exp(a);
    case KN_FE_Log: return log(a);
    case KN_FE_Sqrt: return sqrt(a);
    case KN_FE_Reciprocal: return 1.0 / a;
    case KN_FE_Sigmoid: return sigmoid(a);
    case KN_FE_Tanh: return tanh(a);
    case KN_FE_LeakyRelu: return a < 0 ? s->imm[0] * a : a;
    case KN_FE_Elu: return a < 0 ? s->imm[0] * expm1(a) : a;
    case KN_FE_Selu: return s->imm[1] * (a <= 0 ? s->imm[0] * expm1(a) : a);
    case KN_FE_HardSigmoid: return fmax(0.0, fmin(1.0, s->imm[0] * a + s->imm[1]));
    case KN_FE_HardSwish: return a * fmax(0.0, fmin(1.0, a / 6.0 + 0.5));
    case KN_FE_Softplus: return softplus(a);
    case KN_FE_Erf: return erf(a);
    case KN_FE_Cos: return cos(a);
    case KN_FE_Sin: return sin(a);
    case KN_FE_Floor: return floor(a);
    case KN_FE_Ceil: return ceil(a);
    case KN_FE_Round: return nearbyint(a); /* halves to even */
    case KN_FE_Gelu: return gelu(a, false);
    case KN_FE_GeluTanh: return gelu(a, true);
    case KN_FE_Silu: return silu(a);
    case KN_FE_SwiGlu: return silu(a) * b;
    case KN_FE_Clip: {
        double lo = y ? y->f : s->imm[0], hi = z ? z->f : s->imm[1];
        if (a < lo)
            a = lo;
        if (a > hi)
            a = hi;
        return a;
    }
    case KN_FE_Add: return a + b;
    case KN_FE_Sub: return a - b;
    case KN_FE_Mul: return a * b;
    case KN_FE_Div: return a / b;
    case KN_FE_Pow: return pow(a, b);
    case KN_FE_Max: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
    case KN_FE_Min: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    default: return 0;
    }
}

/* A signed-integer step in wrapping int64 arithmetic. */
static int64_t eval_i(const step *s, int64_t a, int64_t b)
{
    uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
    switch (s->op) {
    case KN_FE_Neg: return (int64_t)(0 - ua);
    case KN_FE_Abs: return a < 0 ? (int64_t)(0 - ua) : a;
    case KN_FE_Relu: return a < 0 ? 0 : a;
    case KN_FE_Add: return (int64_t)(ua + ub);
    case KN_FE_Sub: return (int64_t)(ua - ub);
    case KN_FE_Mul: return (int64_t)(ua * ub);
    case KN_FE_Max: return a > b ? a : b;
    case KN_FE_Min: return a < b ? a : b;
    default: return 0;
    }
}

/* Cast as k_elementwise_cast.c does it: floats through kn_set_f64,
 * integers to float32 in one rounding, to other floats from double. */
static val cast(kn_dtype to, const val *x, bool from_float)
{
    val r = {0, 0};
    unsigned char buf[8];
    if (kn_dt_is_float(to)) {
        r.f = from_float ? rnd_f(to, x->f) : to == KN_F32 ? (double)(float)x->i : rnd_f(to, (double)x->i);
    } else if (from_float) {
        kn_set_f64(to, buf, 0, x->f);
        r.i = kn_get_i64(to, buf, 0);
    } else {
        r.i = rnd_i(to, x->i);
    }
    return r;
}

/* One step on its operands x, y, z (y, z NULL when absent) of dtypes ta,
 * tb; the result rounded or wrapped to the step's dtype. */
static val eval(const step *s, const val *x, const val *y, const val *z, kn_dtype ta, kn_dtype tb)
{
    val r = {0, 0};
    bool f = kn_dt_is_float(ta);
    int64_t ia = x->i, ib = y ? y->i : 0;
    switch (s->op) {
    case KN_FE_Cast: return cast(s->t, x, f);
    case KN_FE_Where: return ia ? *y : *z;
    case KN_FE_Not: r.i = !ia; break;
    case KN_FE_And: r.i = ia && ib; break;
    case KN_FE_Or: r.i = ia || ib; break;
    case KN_FE_Equal: r.i = f ? x->f == y->f : ia == ib; break;
    case KN_FE_Less: r.i = f ? x->f < y->f : ia < ib; break;
    case KN_FE_Greater: r.i = f ? x->f > y->f : ia > ib; break;
    default:
        if (f) /* Pow's exponent may be an integer */
            r.f = eval_f(s, x->f, !y ? 0 : kn_dt_is_float(tb) ? y->f : (double)ib, y, z);
        else
            r.i = eval_i(s, ia, ib);
        break;
    }
    if (kn_dt_is_float(s->t))
        r.f = rnd_f(s->t, r.f);
    else
        r.i = rnd_i(s->t, r.i);
    return r;
}

/* Reads and checks the program: op names known, operands earlier values
 * (required ones present), dtypes kernels handle. */
static kn_status load_program(kn_kctx *c, uint32_t n_in, const kn_dtype *in_t, step **out, uint32_t *n_out)
{
    const kn_attr *ops = kn_kctx_attr(c, "ops");
    uint32_t na = 0, nd = 0, nm = 0;
    const int64_t *args = kn_kctx_attr_ints(c, "args", &na), *dts = kn_kctx_attr_ints(c, "dtypes", &nd);
    const float *imm = kn_kctx_attr_floats(c, "imm", &nm);
    if (!ops || ops->kind != KN_ATTR_STRINGS || ops->n == 0 || na != ops->n * KN_FE_ARGS || nd != ops->n ||
        nm != ops->n * KN_FE_IMMS)
        return kn_kctx_fail(c, KN_ERR_INVALID, "attributes ops, args, dtypes and imm do not describe a program");
    uint32_t ns = ops->n;
    step *p = kn_kctx_scratch(c, ns * sizeof *p);
    kn_dtype *types = kn_kctx_scratch(c, ((size_t)n_in + ns) * sizeof *types);
    if (!p || !types)
        return KN_ERR_NOMEM;
    memcpy(types, in_t, n_in * sizeof *types);
    for (uint32_t s = 0; s < ns; s++) {
        step *st = &p[s];
        st->op = kn_fe_lookup((const char *)ops->u.strings[s].data, ops->u.strings[s].len);
        if (st->op == KN_FE_NONE)
            return kn_kctx_fail(c, KN_ERR_INVALID, "step %u: unknown op '%.*s'", s, (int)ops->u.strings[s].len,
                                (const char *)ops->u.strings[s].data);
        st->t = (kn_dtype)dts[s];
        if (dts[s] < 0 || dts[s] > 64 || !kn_dtype_valid((int)dts[s]) || !dtype_ok(st->t))
            return kn_kctx_fail(c, KN_ERR_INVALID, "step %u: unsupported dtype %lld", s, (long long)dts[s]);
        int arity = kn_fe_arity(st->op);
        for (int a = 0; a < KN_FE_ARGS; a++) {
            int64_t v = args[s * KN_FE_ARGS + a];
            bool optional = st->op == KN_FE_Clip && a > 0;
            if (a >= arity ? v != -1 : (v < -1 || v >= (int64_t)(n_in + s) || (v == -1 && !optional)))
                return kn_kctx_fail(c, KN_ERR_INVALID, "step %u: operand %d (%lld) is not an earlier value", s, a,
                                    (long long)v);
            st->a[a] = v;
        }
        for (int a = 0; a < KN_FE_IMMS; a++)
            st->imm[a] = imm[s * KN_FE_IMMS + a];
        types[n_in + s] = st->t;
    }
    /* operand dtypes the steps' formulas assume (as the separate kernels
     * check them) */
    for (uint32_t s = 0; s < ns; s++) {
        kn_fe_op op = p[s].op;
        kn_dtype ta = types[p[s].a[0]], tb = p[s].a[1] >= 0 ? types[p[s].a[1]] : ta, t = p[s].t;
        bool ok;
        switch (op) {
        case KN_FE_Not: case KN_FE_And: case KN_FE_Or: ok = ta == KN_BOOL && tb == KN_BOOL && t == KN_BOOL; break;
        case KN_FE_Where: ok = ta == KN_BOOL && tb == t && types[p[s].a[2]] == t; break;
        case KN_FE_Equal: case KN_FE_Less: case KN_FE_Greater: ok = ta == tb && t == KN_BOOL; break;
        case KN_FE_Cast: ok = true; break;
        case KN_FE_Neg: case KN_FE_Abs: case KN_FE_Relu: case KN_FE_Add: case KN_FE_Sub: case KN_FE_Mul:
        case KN_FE_Max: case KN_FE_Min:
            ok = ta == t && tb == t && t != KN_BOOL;
            break;
        case KN_FE_Pow: ok = ta == t && kn_dt_is_float(t) && tb != KN_BOOL; break;
        default: ok = ta == t && kn_dt_is_float(t) && (kn_fe_arity(op) == 1 || op == KN_FE_Clip || tb == t); break;
        }
        if (op == KN_FE_Clip)
            ok = ok && (p[s].a[1] < 0 || tb == t) && (p[s].a[2] < 0 || types[p[s].a[2]] == t);
        if (!ok)
            return kn_kctx_fail(c, KN_ERR_INVALID, "step %u (%s): operand dtypes do not fit the op", s,
                                kn_dtype_name(ta));
    }
    *out = p;
    *n_out = ns;
    return KN_OK;
}

kn_status kn_ref_KILN_FusedElementwise(kn_kctx *c)
{
    uint32_t n_in = kn_kctx_n_inputs(c);
    if (n_in == 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs at least one input");
    const kn_rt_tensor **ts = kn_kctx_scratch(c, n_in * sizeof *ts);
    kn_dtype *in_t = kn_kctx_scratch(c, n_in * sizeof *in_t);
    if (!ts || !in_t)
        return KN_ERR_NOMEM;
    for (uint32_t k = 0; k < n_in; k++) {
        KN_TRY(kn_need_in(c, k, &ts[k]));
        in_t[k] = ts[k]->dtype;
        if (!dtype_ok(in_t[k]))
            return kn_kctx_fail(c, KN_ERR_INVALID, "input %u has unsupported type %s", k, kn_dtype_name(in_t[k]));
    }
    step *p = NULL;
    uint32_t ns = 0;
    KN_TRY(load_program(c, n_in, in_t, &p, &ns));
    int32_t rank;
    int64_t dims[KN_RT_MAX_RANK];
    KN_TRY(kn_broadcast(c, n_in, ts, &rank, dims));
    kn_rt_tensor *y;
    kn_dtype ot = p[ns - 1].t;
    KN_TRY(kn_kctx_out(c, 0, ot, rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    /* per-input strides over the output's dims (0 where it broadcasts) */
    int64_t *st = kn_kctx_scratch(c, (size_t)n_in * (size_t)(rank + 1) * sizeof *st);
    int64_t *off = kn_kctx_scratch(c, n_in * sizeof *off);
    int64_t idx[KN_RT_MAX_RANK] = {0};
    val *v = kn_kctx_scratch(c, ((size_t)n_in + ns) * sizeof *v);
    if (!st || !off || !v)
        return KN_ERR_NOMEM;
    for (uint32_t k = 0; k < n_in; k++) {
        int64_t s = 1;
        for (int32_t d = rank - 1; d >= 0; d--) {
            int32_t j = d - (rank - ts[k]->rank);
            int64_t td = j >= 0 ? ts[k]->dims[j] : 1;
            st[(size_t)k * (size_t)rank + (size_t)d] = td == 1 ? 0 : s;
            s *= td;
        }
    }
    for (int64_t o = 0; o < y->numel; o++) {
        for (uint32_t k = 0; k < n_in; k++) {
            if (kn_dt_is_float(in_t[k]))
                v[k].f = kn_get_f64(in_t[k], ts[k]->data, off[k]);
            else
                v[k].i = kn_get_i64(in_t[k], ts[k]->data, off[k]);
        }
        for (uint32_t s = 0; s < ns; s++) {
            const step *sp = &p[s];
            const val *a1 = sp->a[1] >= 0 ? &v[sp->a[1]] : NULL, *a2 = sp->a[2] >= 0 ? &v[sp->a[2]] : NULL;
            kn_dtype ta = sp->a[0] < (int64_t)n_in ? in_t[sp->a[0]] : p[sp->a[0] - n_in].t;
            kn_dtype tb = sp->a[1] < 0 ? KN_UNDEFINED : sp->a[1] < (int64_t)n_in ? in_t[sp->a[1]] : p[sp->a[1] - n_in].t;
            v[n_in + s] = eval(sp, &v[sp->a[0]], a1, a2, ta, tb);
        }
        if (kn_dt_is_float(ot))
            kn_set_f64(ot, y->data, o, v[n_in + ns - 1].f);
        else
            kn_set_i64(ot, y->data, o, v[n_in + ns - 1].i);
        for (int32_t d = rank - 1; d >= 0; d--) {
            for (uint32_t k = 0; k < n_in; k++)
                off[k] += st[(size_t)k * (size_t)rank + (size_t)d];
            if (++idx[d] < dims[d])
                break;
            for (uint32_t k = 0; k < n_in; k++)
                off[k] -= st[(size_t)k * (size_t)rank + (size_t)d] * dims[d];
            idx[d] = 0;
        }
    }
    return KN_OK;
}
