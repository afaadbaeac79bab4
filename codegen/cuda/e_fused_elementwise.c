/* CUDA emitter for kiln.FusedElementwise (passes/fuse_elementwise.c): one
 * kernel per node whose body is the node's program (ir/fused_ew.h) as
 * straight-line C, one thread per output element. Each input is read at
 * its broadcast offset (per-input strides over the output's dims, 0 where
 * it broadcasts, passed as parameters with the immediates), so the source
 * depends only on the program and the dtypes. Every step uses the scalar
 * formula of the separate op's emitter (e_elementwise.c,
 * e_elementwise_binary.c, e_fused_act.c; floats in double, signed ints and
 * bool in i64) and rounds or wraps to the step's dtype like the CPU
 * reference (runtime/cpu/k_fused_elementwise.c). */
#include "codegen/cuda/emit.h"
#include "ir/fused_ew.h"

#include <stdio.h>
#include <string.h>

#define MAX_R 8
#define MAX_PARAMS 4096 /* bytes: the kernel parameter limit every arch takes */

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }
static bool dtype_ok(kn_dtype t)
{
    return is_float(t) || t == KN_I8 || t == KN_I16 || t == KN_I32 || t == KN_I64 || t == KN_BOOL;
}

/* The float formula of a one-operand step in x (NULL: not one). The
 * step's immediates appear as the placeholders A and B (put_expr). */
static const char *unary_f(kn_fe_op op)
{
    switch (op) {
    case KN_FE_Neg: return "-x";
    case KN_FE_Abs: return "fabs(x)";
    case KN_FE_Relu: return "(x < 0 ? 0.0 : x)";
    case KN_FE_Exp: return "exp(x)";
    case KN_FE_Log: return "log(x)";
    case KN_FE_Sqrt: return "sqrt(x)";
    case KN_FE_Reciprocal: return "1.0 / x";
    case KN_FE_Sigmoid: return "(x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)))";
    case KN_FE_Tanh: return "tanh(x)";
    case KN_FE_LeakyRelu: return "(x < 0 ? A * x : x)";
    case KN_FE_Elu: return "(x < 0 ? A * expm1(x) : x)";
    case KN_FE_Selu: return "B * (x <= 0 ? A * expm1(x) : x)";
    case KN_FE_HardSigmoid: return "fmax(0.0, fmin(1.0, A * x + B))";
    case KN_FE_HardSwish: return "x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5))";
    case KN_FE_Softplus: return "(x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)))";
    case KN_FE_Erf: return "erf(x)";
    case KN_FE_Cos: return "cos(x)";
    case KN_FE_Sin: return "sin(x)";
    case KN_FE_Floor: return "floor(x)";
    case KN_FE_Ceil: return "ceil(x)";
    case KN_FE_Round: return "nearbyint(x)";
    case KN_FE_Gelu: return "0.5 * x * (1.0 + erf(x * 0.70710678118654752440))";
    case KN_FE_GeluTanh: return "0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)))";
    case KN_FE_Silu: return "x / (1.0 + exp(-x))";
    default: return NULL;
    }
}

/* The formula of a two-operand step in a, b for the float class (f) or
 * the i64 class (signed ints and bool); NULL: not taken. */
static const char *binary(kn_fe_op op, bool f)
{
    switch (op) {
    case KN_FE_Add: return f ? "a + b" : "(i64)((u64)a + (u64)b)";
    case KN_FE_Sub: return f ? "a - b" : "(i64)((u64)a - (u64)b)";
    case KN_FE_Mul: return f ? "a * b" : "(i64)((u64)a * (u64)b)";
    case KN_FE_Div: return f ? "a / b" : NULL;
    case KN_FE_Pow: return f ? "pow(a, (double)b)" : NULL;
    case KN_FE_Max: return f ? "(a != a || b != b ? kn_nan() : a > b ? a : b)" : "(a > b ? a : b)";
    case KN_FE_Min: return f ? "(a != a || b != b ? kn_nan() : a < b ? a : b)" : "(a < b ? a : b)";
    case KN_FE_Equal: return "(i64)(a == b)";
    case KN_FE_Less: return "(i64)(a < b)";
    case KN_FE_Greater: return "(i64)(a > b)";
    case KN_FE_And: return f ? NULL : "(i64)(a && b)";
    case KN_FE_Or: return f ? NULL : "(i64)(a || b)";
    case KN_FE_SwiGlu: return f ? "a / (1.0 + exp(-a)) * b" : NULL;
    default: return NULL;
    }
}

/* Appends `expr` with "A"/"B" placeholders replaced by the step's
 * immediates (only capital A and B standing alone are placeholders). */
static void put_expr(kn_sb *src, const char *expr, uint32_t step)
{
    for (const char *c = expr; *c; c++) {
        if ((*c == 'A' || *c == 'B') && (c == expr || c[-1] == ' ' || c[-1] == '(') &&
            (c[1] == ' ' || c[1] == ')' || !c[1]))
            kn_sb_printf(src, "p.imm[%u]", step * KN_FE_IMMS + (*c == 'B'));
        else
            kn_sb_printf(src, "%c", *c);
    }
}

/* "v<k>" rounded / wrapped to dtype t: the value of a step of dtype t. */
static void put_round(kn_sb *src, kn_dtype t, uint32_t k)
{
    if (is_float(t))
        kn_sb_printf(src, "    v%u = kn_tod(kn_st_<%s>(v%u));\n", k, kn_cuda_type(t), k);
    else if (t == KN_BOOL)
        kn_sb_printf(src, "    v%u = (i64)(v%u != 0);\n", k, k);
    else
        kn_sb_printf(src, "    v%u = (i64)(%s)v%u;\n", k, kn_cuda_type(t), k);
}

/* Drops size-1 dims and merges neighbours contiguous in every input (as
 * e_elementwise_binary.c does), so most launches index in rank 1 or 2.
 * p: n, rank, dims[8], then n_in stride rows of 8. */
static void coalesce(int64_t *p, uint32_t n_in)
{
    int64_t *dims = &p[2], w = 0;
    for (int64_t d = 0; d < p[1]; d++) {
        if (dims[d] == 1 && p[0] != 0)
            continue;
        bool merge = w > 0;
        for (uint32_t k = 0; merge && k < n_in; k++) {
            int64_t *st = &p[2 + MAX_R + (size_t)k * MAX_R];
            merge = st[w - 1] == st[d] * dims[d];
        }
        for (uint32_t k = 0; k < n_in; k++) {
            int64_t *st = &p[2 + MAX_R + (size_t)k * MAX_R];
            st[merge ? w - 1 : w] = st[d];
        }
        if (merge) {
            dims[w - 1] *= dims[d];
        } else {
            dims[w] = dims[d];
            w++;
        }
    }
    p[1] = w;
}

kn_status kn_emit_KILN_FusedElementwise(kn_emit *e)
{
    const kn_node *node = kn_emit_node(e);
    const kn_attr *ops = kn_node_attr(node, "ops"), *args = kn_node_attr(node, "args"),
                  *dts = kn_node_attr(node, "dtypes"), *imm = kn_node_attr(node, "imm");
    uint32_t n_in = kn_emit_n_inputs(e);
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    if (!ops || ops->kind != KN_ATTR_STRINGS || !args || args->kind != KN_ATTR_INTS || !dts ||
        dts->kind != KN_ATTR_INTS || !imm || imm->kind != KN_ATTR_FLOATS || ops->n == 0 ||
        args->n != ops->n * KN_FE_ARGS || dts->n != ops->n || imm->n != ops->n * KN_FE_IMMS || !y || n_in == 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "attributes ops, args, dtypes and imm do not describe a program");
    uint32_t ns = ops->n;
    size_t psize = 8 * (2 + MAX_R + (size_t)n_in * MAX_R + (size_t)ns * KN_FE_IMMS);
    if (y->rank > MAX_R || psize > MAX_PARAMS)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "rank %d or %u inputs and %u steps exceed the kernel's limits",
                            (int)y->rank, n_in, ns);
    /* parameters: n, rank, dims[8], st[n_in][8], imm[2 * ns], all 8 bytes */
    int64_t pbuf[MAX_PARAMS / 8] = {0};
    pbuf[0] = y->numel;
    pbuf[1] = y->rank;
    for (int32_t d = 0; d < y->rank; d++)
        pbuf[2 + d] = y->dims[d];
    kn_dtype vt[MAX_PARAMS / 8];
    for (uint32_t k = 0; k < n_in; k++) {
        const kn_emit_tensor *t = kn_emit_in(e, k);
        if (!t || !dtype_ok(t->dtype) || t->rank > y->rank)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "input %u: missing, dtype or rank not handled", k);
        vt[k] = t->dtype;
        int64_t s = 1, *st = &pbuf[2 + MAX_R + (size_t)k * MAX_R];
        for (int32_t d = y->rank - 1; d >= 0; d--) {
            int32_t j = d - (y->rank - t->rank);
            int64_t td = j >= 0 ? t->dims[j] : 1;
            if (td != 1 && td != y->dims[d])
                return kn_emit_fail(e, KN_ERR_INVALID, "input %u does not broadcast to the output", k);
            st[d] = td == 1 ? 0 : s;
            s *= td;
        }
    }
    coalesce(pbuf, n_in);
    double *pimm = (double *)&pbuf[2 + MAX_R + (size_t)n_in * MAX_R];
    for (uint32_t i = 0; i < ns * KN_FE_IMMS; i++)
        pimm[i] = imm->u.floats[i];

    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\nstruct P { i64 n, rank; i64 dims[8]; i64 st[%u][8]; double imm[%u]; };\n",
                 n_in, ns * KN_FE_IMMS);
    kn_sb_printf(&src, "extern \"C\" __global__ void kn_FusedElementwise(");
    for (uint32_t k = 0; k < n_in; k++)
        kn_sb_printf(&src, "const %s *x%u, ", kn_cuda_type(vt[k]), k);
    kn_sb_printf(&src, "%s *y, P p) {\n  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n    i64 r = i",
                 kn_cuda_type((kn_dtype)dts->u.ints[ns - 1]) ? kn_cuda_type((kn_dtype)dts->u.ints[ns - 1]) : "void");
    for (uint32_t k = 0; k < n_in; k++)
        kn_sb_printf(&src, ", o%u = 0", k);
    kn_sb_printf(&src, ";\n    for (int d = (int)p.rank - 1; d >= 0; d--) {\n      i64 q = r %% p.dims[d];\n"
                       "      r /= p.dims[d];\n");
    for (uint32_t k = 0; k < n_in; k++)
        kn_sb_printf(&src, "      o%u += q * p.st[%u][d];\n", k, k);
    kn_sb_printf(&src, "    }\n");
    for (uint32_t k = 0; k < n_in; k++)
        kn_sb_printf(&src, is_float(vt[k]) ? "    double v%u = kn_tod(x%u[o%u]);\n" : "    i64 v%u = (i64)x%u[o%u];\n",
                     k, k, k);
    for (uint32_t s = 0; s < ns; s++) {
        kn_fe_op op = kn_fe_lookup((const char *)ops->u.strings[s].data, ops->u.strings[s].len);
        kn_dtype t = (kn_dtype)dts->u.ints[s];
        int64_t a[KN_FE_ARGS];
        int arity = kn_fe_arity(op);
        bool ok = op != KN_FE_NONE && dts->u.ints[s] >= 0 && dts->u.ints[s] < 64 && dtype_ok(t);
        for (int j = 0; j < KN_FE_ARGS; j++) {
            a[j] = args->u.ints[s * KN_FE_ARGS + j];
            bool optional = op == KN_FE_Clip && j > 0;
            if (j < arity && !(a[j] >= 0 && a[j] < (int64_t)(n_in + s)) && !(optional && a[j] == -1))
                ok = false;
        }
        if (!ok) {
            kn_sb_free(&src);
            return kn_emit_fail(e, KN_ERR_INVALID, "step %u of the program is malformed", s);
        }
        uint32_t k = n_in + s;
        kn_dtype ta = vt[a[0]], tb = arity > 1 && a[1] >= 0 ? vt[a[1]] : ta;
        bool fa = is_float(ta), ft = is_float(t);
        const char *expr;
        kn_sb_printf(&src, "    %s v%u;\n", ft ? "double" : "i64", k);
        if (op == KN_FE_Cast) {
            if (fa && ft)
                kn_sb_printf(&src, "    v%u = v%u;\n", k, (unsigned)a[0]);
            else if (fa)
                kn_sb_printf(&src, "    v%u = (i64)kn_st_<%s>(v%u);\n", k, kn_cuda_type(t), (unsigned)a[0]);
            else if (t == KN_F32) /* integers to float32 in one rounding */
                kn_sb_printf(&src, "    v%u = (double)(float)v%u;\n", k, (unsigned)a[0]);
            else
                kn_sb_printf(&src, "    v%u = %sv%u;\n", k, ft ? "(double)" : "", (unsigned)a[0]);
        } else if (op == KN_FE_Where) {
            kn_sb_printf(&src, "    v%u = v%u ? v%u : v%u;\n", k, (unsigned)a[0], (unsigned)a[1], (unsigned)a[2]);
        } else if (op == KN_FE_Clip) {
            if (!fa || !ft) {
                kn_sb_free(&src);
                return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "step %u: Clip on %s", s, kn_dtype_name(ta));
            }
            kn_sb_printf(&src, "    { double x = v%u, lo = ", (unsigned)a[0]);
            if (a[1] >= 0)
                kn_sb_printf(&src, "v%u", (unsigned)a[1]);
            else
                kn_sb_printf(&src, "p.imm[%u]", s * KN_FE_IMMS);
            kn_sb_printf(&src, ", hi = ");
            if (a[2] >= 0)
                kn_sb_printf(&src, "v%u", (unsigned)a[2]);
            else
                kn_sb_printf(&src, "p.imm[%u]", s * KN_FE_IMMS + 1);
            kn_sb_printf(&src, "; if (x < lo) x = lo; if (x > hi) x = hi; v%u = x; }\n", k);
        } else if (arity == 1) {
            if (op == KN_FE_Not)
                expr = fa ? NULL : "(i64)!x";
            else if (fa)
                expr = unary_f(op);
            else
                expr = op == KN_FE_Neg    ? "(i64)(0ull - (u64)x)"
                       : op == KN_FE_Abs  ? "(x < 0 ? (i64)(0ull - (u64)x) : x)"
                       : op == KN_FE_Relu ? "(x < 0 ? (i64)0 : x)"
                                          : NULL;
            if (!expr) {
                kn_sb_free(&src);
                return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "step %u: %.*s on %s", s, (int)ops->u.strings[s].len,
                                    (const char *)ops->u.strings[s].data, kn_dtype_name(ta));
            }
            kn_sb_printf(&src, "    { %s x = v%u; v%u = ", fa ? "double" : "i64", (unsigned)a[0], k);
            put_expr(&src, expr, s);
            kn_sb_printf(&src, "; }\n");
        } else {
            if (!(expr = binary(op, fa))) {
                kn_sb_free(&src);
                return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "step %u: %.*s on %s", s, (int)ops->u.strings[s].len,
                                    (const char *)ops->u.strings[s].data, kn_dtype_name(ta));
            }
            kn_sb_printf(&src, "    { %s a = v%u; %s b = v%u; v%u = %s; }\n", fa ? "double" : "i64", (unsigned)a[0],
                         is_float(tb) ? "double" : "i64", (unsigned)a[1], k, expr);
        }
        put_round(&src, t, k);
        vt[k] = t;
    }
    kn_dtype ot = vt[n_in + ns - 1];
    if (ot != y->dtype) {
        kn_sb_free(&src);
        return kn_emit_fail(e, KN_ERR_INVALID, "the program's result is %s, the output %s", kn_dtype_name(ot),
                            kn_dtype_name(y->dtype));
    }
    if (is_float(ot))
        kn_sb_printf(&src, "    y[i] = kn_st_<%s>(v%u);\n  }\n}\n", kn_cuda_type(ot), n_in + ns - 1);
    else
        kn_sb_printf(&src, "    y[i] = (%s)v%u;\n  }\n}\n", kn_cuda_type(ot), n_in + ns - 1);
    kn_emit_arg eargs[MAX_PARAMS / 8 + 2];
    for (uint32_t k = 0; k < n_in; k++)
        eargs[k] = (kn_emit_arg){KN_ARG_IN, k, 0, NULL, 0};
    eargs[n_in] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0};
    eargs[n_in + 1] = (kn_emit_arg){KN_ARG_PARAMS, 0, psize, pbuf, 0};
    return kn_emit_launch_source(e, &src, "kn_FusedElementwise", eargs, n_in + 2, y->numel);
}
