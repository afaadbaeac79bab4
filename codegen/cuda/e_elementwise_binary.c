/* CUDA emitters for the binary and variadic elementwise ops with numpy
 * broadcasting: arithmetic, comparisons, logic, bitwise, Pow, PRelu and
 * Where. One kernel shape serves them all: each thread maps its output
 * index to each input's offset through per-input strides (0 on broadcast
 * dims) passed as parameters, after the host has merged dims that are
 * contiguous in every operand. Floats are computed in double and rounded
 * like the CPU reference (once per fold step); integers exactly in i64 or
 * u64, wrapping like the stored type. Integer division by zero gives 0. */
#include "codegen/cuda/emit.h"

#include <stddef.h>
#include <string.h>

/* Device helpers on top of kiln_cuda.h (a copy of e_elementwise.c's:
 * candidates for the prelude). */
static const char HEAD[] = "#include \"kiln_cuda.h\"\n";

enum { C_FLOAT = 1, C_SINT = 2, C_UINT = 4, C_BOOL = 8, C_NUM = 7 };

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

static unsigned tbits(kn_dtype t)
{
    switch (t) {
    case KN_I8: case KN_U8: case KN_BOOL: return 8;
    case KN_I16: case KN_U16: case KN_F16: case KN_BF16: return 16;
    case KN_I32: case KN_U32: case KN_F32: return 32;
    default: return 64;
    }
}

/* ---- broadcasting ---- */

#define MAX_IN 16
#define MAX_R 8

/* The index map of a broadcast: the output's dims and, per input, the
 * element stride along each of them (0 where the input broadcasts). Its
 * layout is the kernel parameter struct's (all 8-byte fields). */
typedef struct bmap {
    int64_t n, rank;
    int64_t dims[MAX_R];
    double a; /* an op attribute (Mean: the input count) */
    int64_t st[MAX_IN][MAX_R];
} bmap;

static size_t bmap_size(uint32_t n_in) { return offsetof(bmap, st) + (size_t)n_in * MAX_R * sizeof(int64_t); }

/* Strides of input t aligned at output dim `at` (numpy: rank - t->rank;
 * before opset 7, B's `axis`). Fails when t does not broadcast. */
static bool bmap_input(bmap *m, uint32_t k, const kn_emit_tensor *t, int32_t at)
{
    if (at < 0 || at + t->rank > m->rank)
        return false;
    int64_t s = 1;
    for (int32_t d = (int32_t)m->rank - 1; d >= 0; d--) {
        int32_t j = d - at;
        int64_t td = j >= 0 && j < t->rank ? t->dims[j] : 1;
        if (td != 1 && td != m->dims[d])
            return false;
        m->st[k][d] = td == 1 ? 0 : s;
        s *= td;
    }
    return true;
}

/* Drops size-1 dims and merges neighbours that are contiguous in every
 * input, so most kernels see rank 1 or 2. */
static void bmap_coalesce(bmap *m, uint32_t n_in)
{
    int64_t w = 0;
    for (int64_t d = 0; d < m->rank; d++) {
        if (m->dims[d] == 1 && m->n != 0)
            continue;
        bool merge = w > 0;
        for (uint32_t k = 0; merge && k < n_in; k++)
            merge = m->st[k][w - 1] == m->st[k][d] * m->dims[d];
        if (merge) {
            m->dims[w - 1] *= m->dims[d];
            for (uint32_t k = 0; k < n_in; k++)
                m->st[k][w - 1] = m->st[k][d];
        } else {
            m->dims[w] = m->dims[d];
            for (uint32_t k = 0; k < n_in; k++)
                m->st[k][w] = m->st[k][d];
            w++;
        }
    }
    m->rank = w;
}

/* Fills m for the node's inputs 0..n_in-1 against output 0; `legacy_b`
 * aligns input 1 at `b_at` instead of numpy's trailing alignment. */
static kn_status bmap_init(kn_emit *e, bmap *m, uint32_t n_in, bool legacy_b, int32_t b_at)
{
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    memset(m, 0, sizeof *m);
    if (!y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing output");
    if (n_in > MAX_IN)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%u inputs (at most %d)", n_in, MAX_IN);
    m->n = y->numel;
    m->rank = y->rank;
    for (int32_t d = 0; d < y->rank; d++)
        m->dims[d] = y->dims[d];
    for (uint32_t k = 0; k < n_in; k++) {
        const kn_emit_tensor *t = kn_emit_in(e, k);
        if (!t)
            return kn_emit_fail(e, KN_ERR_INVALID, "input %u is missing", k);
        int32_t at = legacy_b && k == 1 ? b_at : (int32_t)(y->rank - t->rank);
        if (!bmap_input(m, k, t, at))
            return kn_emit_fail(e, KN_ERR_INVALID, "input %u does not broadcast to the output", k);
    }
    bmap_coalesce(m, n_in);
    return KN_OK;
}

/* Kernel text: the head, `extra` device code, the params struct for n_in
 * inputs, and the signature `entry(const T0 *x0, ..., TO *y, P p)` with the offsets
 * o0.. of output element i computed; the caller writes the body and
 * closes with "  }\n}\n". */
static void bcast_open(kn_sb *src, const char *extra, const char *entry, uint32_t n_in, const char *const *tin,
                       const char *tout)
{
    kn_sb_printf(src, "%s%sstruct P { i64 n, rank; i64 dims[8]; double a; i64 st[%u][8]; };\n", HEAD, extra, n_in);
    kn_sb_printf(src, "extern \"C\" __global__ void %s(", entry);
    for (uint32_t k = 0; k < n_in; k++)
        kn_sb_printf(src, "const %s *x%u, ", tin[k], k);
    kn_sb_printf(src, "%s *y, P p) {\n  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n    i64 r = i", tout);
    for (uint32_t k = 0; k < n_in; k++)
        kn_sb_printf(src, ", o%u = 0", k);
    kn_sb_printf(src, ";\n    for (int d = (int)p.rank - 1; d >= 0; d--) {\n      i64 q = r %% p.dims[d];\n"
                      "      r /= p.dims[d];\n");
    for (uint32_t k = 0; k < n_in; k++)
        kn_sb_printf(src, "      o%u += q * p.st[%u][d];\n", k, k);
    kn_sb_printf(src, "    }\n");
}

/* ---- the arithmetic / logic ops ---- */

/* One binary op: an expression per dtype class in a and b (double for
 * floats, i64 for signed, u64 for unsigned and bool); p.bits is the
 * element width (shifts). `cmp`: the result is bool. */
typedef struct bop {
    const char *name;
    unsigned allow;
    const char *f, *s, *u;
    bool cmp;
} bop;

/* Runs op over the node's inputs, folding left (((x0 op x1) op x2) ...);
 * floats round to the output type between steps as the CPU reference
 * does. `mean` divides the folded sum by the input count. */
static kn_status binary(kn_emit *e, const bop *op, uint32_t min_in, uint32_t max_in, bool mean)
{
    uint32_t n = kn_emit_n_inputs(e);
    if (n < min_in || n > max_in)
        return kn_emit_fail(e, KN_ERR_INVALID, "expected %u to %u inputs, got %u", min_in, max_in, n);
    const kn_emit_tensor *x0 = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x0 || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input or output");
    kn_dtype t = x0->dtype;
    unsigned cl = tclass(t);
    const char *ct = kn_cuda_type(t), *to = kn_cuda_type(y->dtype);
    if (!ct || !to || !(cl & op->allow))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(t));
    const char *tin[MAX_IN];
    for (uint32_t k = 0; k < n && k < MAX_IN; k++) {
        const kn_emit_tensor *xk = kn_emit_in(e, k);
        if (xk && xk->dtype != t)
            return kn_emit_fail(e, KN_ERR_INVALID, "input %u has type %s, input 0 has %s", k,
                                kn_dtype_name(xk->dtype), kn_dtype_name(t));
        tin[k] = ct;
    }
    /* before opset 7, B broadcasts only with broadcast=1, aligned at axis */
    bool legacy = n == 2 && max_in == 2 && kn_emit_opset(e) < 7 && kn_emit_attr_int(e, "broadcast", 0) != 0;
    const kn_emit_tensor *x1 = n > 1 ? kn_emit_in(e, 1) : NULL;
    int32_t b_at = x1 ? (int32_t)kn_emit_attr_int(e, "axis", (int64_t)x0->rank - x1->rank) : 0;
    if (legacy && b_at < 0)
        b_at += x0->rank;
    bmap m;
    KN_TRY(bmap_init(e, &m, n, legacy, b_at));
    m.a = n;

    const char *vt = cl == C_FLOAT ? "double" : cl == C_SINT ? "i64" : "u64";
    const char *ld = cl == C_FLOAT ? "kn_tod" : cl == C_SINT ? "(i64)" : "(u64)";
    const char *expr = cl == C_FLOAT ? op->f : cl == C_SINT ? op->s : op->u;
    char entry[64];
    snprintf(entry, sizeof entry, "kn_%s", op->name);
    kn_sb src = {0};
    bcast_open(&src, "", entry, n, tin, to);
    kn_sb_printf(&src, "    const i64 bits = %u; (void)bits;\n", tbits(t));
    kn_sb_printf(&src, "    %s acc = %s(x0[o0]);\n", vt, ld);
    for (uint32_t k = 1; k < n; k++) {
        if (k > 1 && cl == C_FLOAT)
            kn_sb_printf(&src, "    acc = kn_tod(kn_st_<%s>(acc));\n", ct);
        kn_sb_printf(&src, "    { %s a = acc, b = %s(x%u[o%u]); acc = %s; }\n", vt, ld, k, k, expr);
    }
    if (mean)
        kn_sb_printf(&src, "    acc = kn_tod(kn_st_<%s>(acc)) / p.a;\n", ct);
    if (cl == C_FLOAT && !op->cmp)
        kn_sb_printf(&src, "    y[i] = kn_st_<%s>(acc);\n  }\n}\n", to);
    else
        kn_sb_printf(&src, "    y[i] = (%s)(acc);\n  }\n}\n", to);
    kn_emit_arg args[MAX_IN + 2];
    for (uint32_t k = 0; k < n; k++)
        args[k] = (kn_emit_arg){KN_ARG_IN, k, 0, NULL};
    args[n] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
    args[n + 1] = (kn_emit_arg){KN_ARG_PARAMS, 0, bmap_size(n), &m};
    return kn_emit_launch_source(e, &src, entry, args, n + 2, m.n);
}

/* Python / numpy modulo (sign of the divisor) for floats. */
#define F_MOD_PY                                                                                                \
    "(fmod(a, b) != 0 && ((fmod(a, b) < 0) != (b < 0)) ? fmod(a, b) + b : fmod(a, b) == 0 ? copysign(0.0, b) " \
    ": fmod(a, b))"
#define S_DIV "(b == 0 ? (i64)0 : b == -1 ? (i64)(0ull - (u64)a) : a / b)"
#define S_REM "(b == 0 || b == -1 ? (i64)0 : a % b)"
#define S_MOD_PY "(" S_REM " != 0 && ((" S_REM " < 0) != (b < 0)) ? " S_REM " + b : " S_REM ")"
#define F_NAN "kn_nan()"

static const bop B_ADD = {"Add", C_NUM, "a + b", "(i64)((u64)a + (u64)b)", "a + b", false};
static const bop B_SUB = {"Sub", C_NUM, "a - b", "(i64)((u64)a - (u64)b)", "a - b", false};
static const bop B_MUL = {"Mul", C_NUM, "a * b", "(i64)((u64)a * (u64)b)", "a * b", false};
static const bop B_DIV = {"Div", C_NUM, "a / b", S_DIV, "(b == 0 ? 0ull : a / b)", false};
static const bop B_MOD_C = {"ModC", C_NUM, "fmod(a, b)", S_REM, "(b == 0 ? 0ull : a % b)", false};
static const bop B_MOD_PY = {"Mod", C_NUM, F_MOD_PY, S_MOD_PY, "(b == 0 ? 0ull : a % b)", false};
static const bop B_MAX = {"Max", C_NUM, "(a != a || b != b ? " F_NAN " : a > b ? a : b)", "(a > b ? a : b)",
                          "(a > b ? a : b)", false};
static const bop B_MIN = {"Min", C_NUM, "(a != a || b != b ? " F_NAN " : a < b ? a : b)", "(a < b ? a : b)",
                          "(a < b ? a : b)", false};
static const bop B_SUM = {"Sum", C_FLOAT, "a + b", NULL, NULL, false};
static const bop B_MEAN = {"Mean", C_FLOAT, "a + b", NULL, NULL, false};
static const bop B_EQ = {"Equal", C_NUM | C_BOOL, "(double)(a == b)", "(i64)(a == b)", "(u64)(a == b)", true};
static const bop B_LT = {"Less", C_NUM, "(double)(a < b)", "(i64)(a < b)", "(u64)(a < b)", true};
static const bop B_LE = {"LessOrEqual", C_NUM, "(double)(a <= b)", "(i64)(a <= b)", "(u64)(a <= b)", true};
static const bop B_GT = {"Greater", C_NUM, "(double)(a > b)", "(i64)(a > b)", "(u64)(a > b)", true};
static const bop B_GE = {"GreaterOrEqual", C_NUM, "(double)(a >= b)", "(i64)(a >= b)", "(u64)(a >= b)", true};
static const bop B_AND = {"And", C_BOOL, NULL, NULL, "(u64)(a && b)", false};
static const bop B_OR = {"Or", C_BOOL, NULL, NULL, "(u64)(a || b)", false};
static const bop B_XOR = {"Xor", C_BOOL, NULL, NULL, "(u64)(!a != !b)", false};
static const bop B_BAND = {"BitwiseAnd", C_SINT | C_UINT, NULL, "a & b", "a & b", false};
static const bop B_BOR = {"BitwiseOr", C_SINT | C_UINT, NULL, "a | b", "a | b", false};
static const bop B_BXOR = {"BitwiseXor", C_SINT | C_UINT, NULL, "a ^ b", "a ^ b", false};
static const bop B_SHL = {"ShiftLeft", C_SINT | C_UINT, NULL, "(b < 0 || b >= bits ? (i64)0 : (i64)((u64)a << b))",
                          "(b >= (u64)bits ? 0ull : a << b)", false};
static const bop B_SHR = {"ShiftRight", C_SINT | C_UINT, NULL, "(b < 0 || b >= bits ? (a < 0 ? (i64)-1 : (i64)0) : a >> b)",
                          "(b >= (u64)bits ? 0ull : a >> b)", false};
static const bop B_PRELU = {"PRelu", C_NUM, "(a < 0 ? a * b : a)", "(a < 0 ? (i64)((u64)a * (u64)b) : a)", "a", false};

kn_status kn_emit_Add(kn_emit *e) { return binary(e, &B_ADD, 2, 2, false); }
kn_status kn_emit_Sub(kn_emit *e) { return binary(e, &B_SUB, 2, 2, false); }
kn_status kn_emit_Mul(kn_emit *e) { return binary(e, &B_MUL, 2, 2, false); }
kn_status kn_emit_Div(kn_emit *e) { return binary(e, &B_DIV, 2, 2, false); }
kn_status kn_emit_Max(kn_emit *e) { return binary(e, &B_MAX, 1, MAX_IN, false); }
kn_status kn_emit_Min(kn_emit *e) { return binary(e, &B_MIN, 1, MAX_IN, false); }
kn_status kn_emit_Sum(kn_emit *e) { return binary(e, &B_SUM, 1, MAX_IN, false); }
kn_status kn_emit_Mean(kn_emit *e) { return binary(e, &B_MEAN, 1, MAX_IN, true); }
kn_status kn_emit_Equal(kn_emit *e) { return binary(e, &B_EQ, 2, 2, false); }
kn_status kn_emit_Less(kn_emit *e) { return binary(e, &B_LT, 2, 2, false); }
kn_status kn_emit_LessOrEqual(kn_emit *e) { return binary(e, &B_LE, 2, 2, false); }
kn_status kn_emit_Greater(kn_emit *e) { return binary(e, &B_GT, 2, 2, false); }
kn_status kn_emit_GreaterOrEqual(kn_emit *e) { return binary(e, &B_GE, 2, 2, false); }
kn_status kn_emit_And(kn_emit *e) { return binary(e, &B_AND, 2, 2, false); }
kn_status kn_emit_Or(kn_emit *e) { return binary(e, &B_OR, 2, 2, false); }
kn_status kn_emit_Xor(kn_emit *e) { return binary(e, &B_XOR, 2, 2, false); }
kn_status kn_emit_BitwiseAnd(kn_emit *e) { return binary(e, &B_BAND, 2, 2, false); }
kn_status kn_emit_BitwiseOr(kn_emit *e) { return binary(e, &B_BOR, 2, 2, false); }
kn_status kn_emit_BitwiseXor(kn_emit *e) { return binary(e, &B_BXOR, 2, 2, false); }

kn_status kn_emit_Mod(kn_emit *e)
{
    int64_t fm = kn_emit_attr_int(e, "fmod", 0);
    if (fm != 0 && fm != 1)
        return kn_emit_fail(e, KN_ERR_INVALID, "fmod must be 0 or 1, got %lld", (long long)fm);
    return binary(e, fm ? &B_MOD_C : &B_MOD_PY, 2, 2, false);
}

kn_status kn_emit_BitShift(kn_emit *e)
{
    const char *d = kn_emit_attr_str(e, "direction", "");
    if (strcmp(d, "LEFT") != 0 && strcmp(d, "RIGHT") != 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "direction must be 'LEFT' or 'RIGHT', got '%s'", d);
    return binary(e, strcmp(d, "LEFT") == 0 ? &B_SHL : &B_SHR, 2, 2, false);
}

/* PRelu: the slope broadcasts to X; at opset 6 a 1-D slope of X's channel
 * count (X of rank > 2) is per channel (axis 1), as legacy broadcasting
 * at axis 1. */
kn_status kn_emit_PRelu(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *s = kn_emit_in(e, 1);
    if (!x || !s)
        return kn_emit_fail(e, KN_ERR_INVALID, "PRelu needs X and slope");
    if (kn_emit_opset(e) < 7 && s->rank == 1 && x->rank > 2 && s->dims[0] == x->dims[1] && s->dims[0] != 1) {
        const kn_emit_tensor *y = kn_emit_out(e, 0);
        unsigned cl = tclass(x->dtype);
        if (!y || !kn_cuda_type(x->dtype) || !(cl & C_NUM) || s->dtype != x->dtype)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
        /* the binary path with B aligned at axis 1 */
        bmap m;
        KN_TRY(bmap_init(e, &m, 2, true, 1));
        const char *ct = kn_cuda_type(x->dtype), *tin[2] = {ct, ct};
        const char *vt = cl == C_FLOAT ? "double" : cl == C_SINT ? "i64" : "u64";
        const char *ld = cl == C_FLOAT ? "kn_tod" : cl == C_SINT ? "(i64)" : "(u64)";
        const char *expr = cl == C_FLOAT ? B_PRELU.f : cl == C_SINT ? B_PRELU.s : B_PRELU.u;
        kn_sb src = {0};
        bcast_open(&src, "", "kn_PRelu", 2, tin, ct);
        kn_sb_printf(&src, "    %s a = %s(x0[o0]), b = %s(x1[o1]);\n", vt, ld, ld);
        if (cl == C_FLOAT)
            kn_sb_printf(&src, "    y[i] = kn_st_<%s>(%s);\n  }\n}\n", ct, expr);
        else
            kn_sb_printf(&src, "    y[i] = (%s)(%s);\n  }\n}\n", ct, expr);
        kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                               {KN_ARG_PARAMS, 0, bmap_size(2), &m}};
        return kn_emit_launch_source(e, &src, "kn_PRelu", args, 4, m.n);
    }
    return binary(e, &B_PRELU, 2, 2, false);
}

/* ---- Pow ---- */

/* base^e for integers in wrapping 64-bit arithmetic; a negative exponent
 * truncates 1/base^|e| toward zero (0 for base 0). */
static const char IPOW[] =
    "__device__ __forceinline__ u64 kn_ipow_(u64 base, i64 e, bool is_signed) {\n"
    "  if (e < 0) {\n"
    "    if (base == 1) return 1;\n"
    "    if (is_signed && (i64)base == -1) return (e & 1) ? base : 1;\n"
    "    return 0;\n"
    "  }\n"
    "  u64 r = 1, ue = (u64)e;\n"
    "  while (ue) { if (ue & 1) r *= base; base *= base; ue >>= 1; }\n"
    "  return r;\n"
    "}\n";

/* The output has the base's type; the exponent may be any numeric type.
 * Integer bases with integer exponents are exact. */
kn_status kn_emit_Pow(kn_emit *e)
{
    const kn_emit_tensor *a = kn_emit_in(e, 0), *b = kn_emit_in(e, 1), *y = kn_emit_out(e, 0);
    if (!a || !b || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "Pow needs X and Y");
    unsigned ca = tclass(a->dtype), cb = tclass(b->dtype);
    const char *ta = kn_cuda_type(a->dtype), *tb = kn_cuda_type(b->dtype);
    if (!ta || !tb || !(ca & C_NUM) || !(cb & C_NUM))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtypes %s, %s", kn_dtype_name(a->dtype), kn_dtype_name(b->dtype));
    bool legacy = kn_emit_opset(e) < 7 && kn_emit_attr_int(e, "broadcast", 0) != 0;
    int32_t b_at = (int32_t)kn_emit_attr_int(e, "axis", (int64_t)a->rank - b->rank);
    if (legacy && b_at < 0)
        b_at += a->rank;
    bmap m;
    KN_TRY(bmap_init(e, &m, 2, legacy, b_at));
    const char *tin[2] = {ta, tb};
    kn_sb src = {0};
    bcast_open(&src, ca != C_FLOAT && cb != C_FLOAT ? IPOW : "", "kn_Pow", 2, tin, ta);
    if (ca != C_FLOAT && cb != C_FLOAT) {
        /* a uint64 exponent over INT64_MAX acts as INT64_MAX */
        kn_sb_printf(&src,
                     "    i64 ex = %s;\n"
                     "    y[i] = (%s)kn_ipow_((u64)x0[o0], ex, %s);\n  }\n}\n",
                     b->dtype == KN_U64 ? "(u64)x1[o1] > 0x7fffffffffffffffull ? 0x7fffffffffffffffLL : (i64)x1[o1]"
                                        : "(i64)x1[o1]",
                     ta, ca == C_SINT ? "true" : "false");
    } else {
        kn_sb_printf(&src, "    y[i] = kn_st_<%s>(pow(kn_tod(x0[o0]), kn_tod(x1[o1])));\n  }\n}\n", ta);
    }
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, bmap_size(2), &m}};
    return kn_emit_launch_source(e, &src, "kn_Pow", args, 4, m.n);
}

/* ---- Where ---- */

/* output = cond ? X : Y, all three broadcast; any dtype kernels handle. */
kn_status kn_emit_Where(kn_emit *e)
{
    const kn_emit_tensor *c = kn_emit_in(e, 0), *x = kn_emit_in(e, 1), *yv = kn_emit_in(e, 2);
    if (!c || !x || !yv)
        return kn_emit_fail(e, KN_ERR_INVALID, "Where needs condition, X and Y");
    const char *t = kn_cuda_type(x->dtype);
    if (!t || c->dtype != KN_BOOL || yv->dtype != x->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtypes %s, %s, %s", kn_dtype_name(c->dtype),
                            kn_dtype_name(x->dtype), kn_dtype_name(yv->dtype));
    bmap m;
    KN_TRY(bmap_init(e, &m, 3, false, 0));
    const char *tin[3] = {"bool", t, t};
    kn_sb src = {0};
    bcast_open(&src, "", "kn_Where", 3, tin, t);
    kn_sb_printf(&src, "    y[i] = x0[o0] ? x1[o1] : x2[o2];\n  }\n}\n");
    kn_emit_arg args[5] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_IN, 2, 0, NULL},
                           {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, bmap_size(3), &m}};
    return kn_emit_launch_source(e, &src, "kn_Where", args, 5, m.n);
}
