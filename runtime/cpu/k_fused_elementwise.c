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

/* One step on its operands (dtypes ta, tb of operands 0 and 1). */
static val eval(const step *s, const val *x, const val *y, const val *z, kn_dtype ta, kn_dtype tb)
{
    val r = {0, 0};
    bool f = kn_dt_is_float(ta);
    double a = x->f, b = y ? y->f : 0;
    int64_t ia = x->i, ib = y ? y->i : 0;
    uint64_t ua = (uint64_t)ia, ub = (uint64_t)ib;
    switch (s->op) {
    case KN_FE_Neg: f ? (r.f = -a) : (r.i = (int64_t)(0 - ua)); break;
    case KN_FE_Abs: f ? (r.f = fabs(a)) : (r.i = ia < 0 ? (int64_t)(0 - ua) : ia); break;
    case KN_FE_Relu: f ? (r.f = a < 0 ? 0.0 : a) : (r.i = ia < 0 ? 0 : ia); break;
    case KN_FE_Exp: r.f = exp(a); break;
    case KN_FE_Log: r.f = log(a); break;
    case KN_FE_Sqrt: r.f = sqrt(a); break;
    case KN_FE_Reciprocal: r.f = 1.0 / a; break;
    case KN_FE_Sigmoid: r.f = sigmoid(a); break;
    case KN_FE_Tanh: r.f = tanh(a); break;
    case KN_FE_LeakyRelu: r.f = a < 0 ? s->imm[0] * a : a; break;
    case KN_FE_Elu: r.f = a < 0 ? s->imm[0] * expm1(a) : a; break;
    case KN_FE_Selu: r.f = s->imm[1] * (a <= 0 ? s->imm[0] * expm1(a) : a); break;
    case KN_FE_HardSigmoid: r.f = fmax(0.0, fmin(1.0, s->imm[0] * a + s->imm[1])); break;
    case KN_FE_HardSwish: r.f = a * fmax(0.0, fmin(1.0, a / 6.0 + 0.5)); break;
    case KN_FE_Softplus: r.f = softplus(a); break;
    case KN_FE_Erf: r.f = erf(a); break;
    case KN_FE_Cos: r.f = cos(a); break;
    case KN_FE_Sin: r.f = sin(a); break;
    case KN_FE_Floor: r.f = floor(a); break;
    case KN_FE_Ceil: r.f = ceil(a); break;
    case KN_FE_Round: r.f = nearbyint(a); break;
    case KN_FE_Gelu: r.f = gelu(a, false); break;
    case KN_FE_GeluTanh: r.f = gelu(a, true); break;
    case KN_FE_Silu: r.f = silu(a); break;
    case KN_FE_SwiGlu: r.f = silu(a) * b; break;
    case KN_FE_Clip: {
        double lo = y ? y->f : s->imm[0], hi = z ? z->f : s->imm[1], v = a;
        if (v < lo)
            v = lo;
        if (v > hi)
            v = hi;
        r.f = v;
        break;
    }
    case KN_FE_Cast: {
        /* as k_elementwise_cast.c: floats through kn_set_f64, integers
         * to float32 in one rounding, other floats from double */
        unsigned char buf[8];
        if (kn_dt_is_float(s->t)) {
            r.f = f ? rnd_f(s->t, a) : s->t == KN_F32 ? (double)(float)ia : rnd_f(s->t, (double)ia);
        } else if (f) {
            kn_set_f64(s->t, buf, 0, a);
            r.i = kn_get_i64(s->t, buf, 0);
        } else {
            r.i = rnd_i(s->t, ia);
        }
        return r;
    }
    case KN_FE_Not: r.i = !ia; break;
    case KN_FE_Add: f ? (r.f = a + b) : (r.i = (int64_t)(ua + ub)); break;
    case KN_FE_Sub: f ? (r.f = a - b) : (r.i = (int64_t)(ua - ub)); break;
    case KN_FE_Mul: f ? (r.f = a * b) : (r.i = (int64_t)(ua * ub)); break;
    case KN_FE_Div: r.f = a / b; break;
    case KN_FE_Pow: r.f = pow(a, kn_dt_is_float(tb) ? b : (double)ib); break;
    case KN_FE_Max:
        f ? (r.f = isnan(a) || isnan(b) ? NAN : a > b ? a : b) : (r.i = ia > ib ? ia : ib);
        break;
    case KN_FE_Min:
        f ? (r.f = isnan(a) || isnan(b) ? NAN : a < b ? a : b) : (r.i = ia < ib ? ia : ib);
        break;
    case KN_FE_Equal: r.i = f ? a == b : ia == ib; break;
    case KN_FE_Less: r.i = f ? a < b : ia < ib; break;
    case KN_FE_Greater: r.i = f ? a > b : ia > ib; break;
    case KN_FE_And: r.i = ia && ib; break;
    case KN_FE_Or: r.i = ia || ib; break;
    case KN_FE_Where: return ia ? *y : *z;
    default: break;
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
