/* Elementwise family, binary part: arithmetic, comparisons, logic and
 * bitwise ops with numpy broadcasting, the variadic Max/Min/Sum/Mean,
 * Pow, PRelu and Where. One broadcasting loop serves them all; each op is
 * a case of a scalar function per dtype class (float in double, signed
 * ints in int64, unsigned ints and bool in uint64), so integer results
 * are exact and wrap like the narrow C types. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

typedef enum bop {
    B_ADD, B_SUB, B_MUL, B_DIV, B_MOD_PY, B_MOD_C, B_MAX, B_MIN, B_PRELU,
    B_EQ, B_LT, B_LE, B_GT, B_GE,
    B_AND, B_OR, B_XOR, B_BAND, B_BOR, B_BXOR, B_SHL, B_SHR
} bop;

static bool is_compare(bop op) { return op >= B_EQ && op <= B_GE; }

/* Per-call state of the scalar functions: the element width for shifts,
 * and a flag set on integer division by zero. */
typedef struct bstate {
    unsigned bits;
    bool div_zero;
} bstate;

static double f_op(bop op, double a, double b)
{
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_MOD_C: return fmod(a, b);
    case B_MOD_PY: { /* sign of the divisor, like Python / numpy.mod */
        double r = fmod(a, b);
        if (r != 0 && (r < 0) != (b < 0))
            r += b;
        else if (r == 0)
            r = copysign(0.0, b);
        return r;
    }
    case B_MAX: return isnan(a) || isnan(b) ? NAN : a > b ? a : b;
    case B_MIN: return isnan(a) || isnan(b) ? NAN : a < b ? a : b;
    case B_PRELU: return a < 0 ? a * b : a;
    case B_EQ: return a == b;
    case B_LT: return a < b;
    case B_LE: return a <= b;
    case B_GT: return a > b;
    case B_GE: return a >= b;
    default: return 0;
    }
}

static int64_t s_op(bop op, int64_t a, int64_t b, bstate *st)
{
    uint64_t ua = (uint64_t)a, ub = (uint64_t)b;
    switch (op) {
    case B_ADD: return (int64_t)(ua + ub);
    case B_SUB: return (int64_t)(ua - ub);
    case B_MUL: return (int64_t)(ua * ub);
    case B_DIV:
        if (b == 0) {
            st->div_zero = true;
            return 0;
        }
        return b == -1 ? (int64_t)(0 - ua) : a / b; /* truncates toward zero */
    case B_MOD_C:
    case B_MOD_PY: {
        if (b == 0) {
            st->div_zero = true;
            return 0;
        }
        int64_t r = b == -1 ? 0 : a % b;
        if (op == B_MOD_PY && r != 0 && (r < 0) != (b < 0))
            r += b;
        return r;
    }
    case B_MAX: return a > b ? a : b;
    case B_MIN: return a < b ? a : b;
    case B_PRELU: return a < 0 ? (int64_t)(ua * ub) : a;
    case B_EQ: return a == b;
    case B_LT: return a < b;
    case B_LE: return a <= b;
    case B_GT: return a > b;
    case B_GE: return a >= b;
    case B_BAND: return a & b;
    case B_BOR: return a | b;
    case B_BXOR: return a ^ b;
    case B_SHL: return b < 0 || b >= (int64_t)st->bits ? 0 : (int64_t)(ua << b);
    case B_SHR: return b < 0 || b >= (int64_t)st->bits ? (a < 0 ? -1 : 0) : a >> b; /* arithmetic */
    default: return 0;
    }
}

static uint64_t u_op(bop op, uint64_t a, uint64_t b, bstate *st)
{
    switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_PRELU: return a;
    case B_DIV:
    case B_MOD_C:
    case B_MOD_PY:
        if (b == 0) {
            st->div_zero = true;
            return 0;
        }
        return op == B_DIV ? a / b : a % b;
    case B_MAX: return a > b ? a : b;
    case B_MIN: return a < b ? a : b;
    case B_EQ: return a == b;
    case B_LT: return a < b;
    case B_LE: return a <= b;
    case B_GT: return a > b;
    case B_GE: return a >= b;
    case B_AND: return a && b;
    case B_OR: return a || b;
    case B_XOR: return !a != !b;
    case B_BAND: return a & b;
    case B_BOR: return a | b;
    case B_BXOR: return a ^ b;
    case B_SHL: return b >= st->bits ? 0 : a << b;
    case B_SHR: return b >= st->bits ? 0 : a >> b;
    default: return 0;
    }
}

/* Which dtypes an op takes. */
enum { T_FLOAT = 1, T_SINT = 2, T_UINT = 4, T_BOOL = 8, T_NUM = T_FLOAT | T_SINT | T_UINT };

static bool type_ok(kn_dtype t, unsigned allow)
{
    if (kn_dt_is_float(t))
        return allow & T_FLOAT;
    if (kn_dt_is_int(t))
        return allow & (kn_dt_is_signed(t) ? T_SINT : T_UINT);
    return t == KN_BOOL && (allow & T_BOOL);
}

/* dst[o] = a[ia] op b[ib] over the broadcast of a and b to dst's shape
 * (dst may be a itself). The result dtype is dst's; comparisons write
 * bool. */
static void apply(bop op, const kn_rt_tensor *a, const kn_rt_tensor *b, kn_rt_tensor *dst, bstate *st)
{
    if (dst->numel == 0)
        return;
    kn_dtype t = a->dtype;
    const kn_rt_tensor *ts[2] = {a, b};
    kn_bcast_iter it;
    kn_bcast_init(&it, dst->rank, dst->dims, 2, ts);
    for (int64_t o = 0; o < dst->numel; o++, kn_bcast_next(&it)) {
        int64_t ia = it.off[0], ib = it.off[1];
        if (kn_dt_is_float(t)) {
            kn_set_f64(dst->dtype, dst->data, o, f_op(op, kn_get_f64(t, a->data, ia), kn_get_f64(t, b->data, ib)));
        } else if (kn_dt_is_signed(t)) {
            kn_set_i64(dst->dtype, dst->data, o, s_op(op, kn_get_i64(t, a->data, ia), kn_get_i64(t, b->data, ib), st));
        } else {
            kn_set_u64(dst->dtype, dst->data, o, u_op(op, kn_get_u64(t, a->data, ia), kn_get_u64(t, b->data, ib), st));
        }
    }
}

/* Equal on strings: byte-wise. */
static void apply_str_eq(const kn_rt_tensor *a, const kn_rt_tensor *b, kn_rt_tensor *dst)
{
    if (dst->numel == 0)
        return;
    const kn_rt_tensor *ts[2] = {a, b};
    const kn_bytes *sa = a->data, *sb = b->data;
    uint8_t *o = dst->data;
    kn_bcast_iter it;
    kn_bcast_init(&it, dst->rank, dst->dims, 2, ts);
    for (int64_t i = 0; i < dst->numel; i++, kn_bcast_next(&it)) {
        const kn_bytes *x = &sa[it.off[0]], *y = &sb[it.off[1]];
        o[i] = x->len == y->len && (x->len == 0 || memcmp(x->data, y->data, x->len) == 0);
    }
}

/* Before opset 7 the binary ops broadcast only when the node says
 * broadcast=1, and then B's shape matches a contiguous run of A's dims
 * starting at `axis` (default: A's trailing dims). Returns in *bv a view
 * of B padded with trailing 1s (dims in `dims`) that numpy broadcasting
 * treats the same way. */
static kn_status legacy_bcast(kn_kctx *c, const kn_rt_tensor *a, const kn_rt_tensor *b, kn_rt_tensor *bv,
                              int64_t *dims)
{
    *bv = *b;
    if (kn_kctx_opset(c) >= 7)
        return KN_OK;
    bool same = a->rank == b->rank;
    for (int32_t i = 0; same && i < a->rank; i++)
        same = a->dims[i] == b->dims[i];
    if (!kn_kctx_attr_int(c, "broadcast", 0)) {
        if (!same)
            return kn_kctx_fail(c, KN_ERR_INVALID, "input shapes differ and broadcast is not set (opset %lld)",
                                (long long)kn_kctx_opset(c));
        return KN_OK;
    }
    int64_t axis = kn_kctx_attr_int(c, "axis", (int64_t)a->rank - b->rank);
    if (axis < 0)
        axis += a->rank;
    if (axis < 0 || axis + b->rank > a->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "broadcast axis %lld does not fit B (rank %d) into A (rank %d)",
                            (long long)axis, (int)b->rank, (int)a->rank);
    for (int32_t i = 0; i < b->rank; i++)
        if (b->dims[i] != a->dims[axis + i] && b->dims[i] != 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "B dimension %d is %lld, A's dimension %lld is %lld", (int)i,
                                (long long)b->dims[i], (long long)(axis + i), (long long)a->dims[axis + i]);
    int32_t r = (int32_t)(a->rank - axis);
    for (int32_t i = 0; i < r; i++)
        dims[i] = i < b->rank ? b->dims[i] : 1;
    bv->rank = r;
    bv->dims = dims;
    return KN_OK;
}

/* Runs op over all the node's inputs (two, or any number ≥ 1 for the
 * variadic ops), folding left: out = ((in0 op in1) op in2) ... */
static kn_status binary_out(kn_kctx *c, bop op, unsigned allow, uint32_t min_in, uint32_t max_in, kn_rt_tensor **out)
{
    uint32_t n = kn_kctx_n_inputs(c);
    if (n < min_in || n > max_in)
        return kn_kctx_fail(c, KN_ERR_INVALID, "expected %u to %u inputs, got %u", min_in, max_in, n);
    const kn_rt_tensor **ins = kn_kctx_scratch(c, n * sizeof *ins);
    if (!ins)
        return KN_ERR_NOMEM;
    for (uint32_t k = 0; k < n; k++) {
        ins[k] = kn_kctx_in(c, k);
        if (!ins[k])
            return kn_kctx_fail(c, KN_ERR_INVALID, "input %u is missing", k);
        if (ins[k]->dtype != ins[0]->dtype)
            return kn_kctx_fail(c, KN_ERR_INVALID, "input %u has type %s, input 0 has %s", k,
                                kn_dtype_name(ins[k]->dtype), kn_dtype_name(ins[0]->dtype));
    }
    kn_rt_tensor b_legacy;
    int64_t b_dims[KN_RT_MAX_RANK];
    if (max_in == 2 && op != B_PRELU) {
        KN_TRY(legacy_bcast(c, ins[0], ins[1], &b_legacy, b_dims));
        ins[1] = &b_legacy;
    }
    kn_dtype t = ins[0]->dtype;
    bool str_eq = op == B_EQ && t == KN_STRING;
    if (!str_eq && !type_ok(t, allow))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input type %s is not supported", kn_dtype_name(t));
    int32_t rank;
    int64_t dims[KN_RT_MAX_RANK];
    KN_TRY(kn_broadcast(c, n, ins, &rank, dims));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, is_compare(op) ? KN_BOOL : t, rank, dims, &y));
    *out = y;
    bstate st = {.bits = kn_dtype_bits(t), .div_zero = false};
    if (str_eq) {
        apply_str_eq(ins[0], ins[1], y);
        return KN_OK;
    }
    if (n == 1) { /* copy, broadcasting is the identity */
        if (y->nbytes)
            memcpy(y->data, ins[0]->data, y->nbytes);
        return KN_OK;
    }
    apply(op, ins[0], ins[1], y, &st);
    for (uint32_t k = 2; k < n; k++)
        apply(op, y, ins[k], y, &st);
    if (st.div_zero)
        return kn_kctx_fail(c, KN_ERR_INVALID, "integer division by zero");
    return KN_OK;
}

static kn_status binary(kn_kctx *c, bop op, unsigned allow, uint32_t min_in, uint32_t max_in)
{
    kn_rt_tensor *y;
    return binary_out(c, op, allow, min_in, max_in, &y);
}

kn_status kn_ref_Add(kn_kctx *c) { return binary(c, B_ADD, T_NUM, 2, 2); }
kn_status kn_ref_Sub(kn_kctx *c) { return binary(c, B_SUB, T_NUM, 2, 2); }
kn_status kn_ref_Mul(kn_kctx *c) { return binary(c, B_MUL, T_NUM, 2, 2); }
kn_status kn_ref_Div(kn_kctx *c) { return binary(c, B_DIV, T_NUM, 2, 2); }
kn_status kn_ref_Max(kn_kctx *c) { return binary(c, B_MAX, T_NUM, 1, UINT32_MAX); }
kn_status kn_ref_Min(kn_kctx *c) { return binary(c, B_MIN, T_NUM, 1, UINT32_MAX); }
kn_status kn_ref_Sum(kn_kctx *c) { return binary(c, B_ADD, T_FLOAT, 1, UINT32_MAX); }
kn_status kn_ref_Equal(kn_kctx *c) { return binary(c, B_EQ, T_NUM | T_BOOL, 2, 2); }
kn_status kn_ref_Less(kn_kctx *c) { return binary(c, B_LT, T_NUM, 2, 2); }
kn_status kn_ref_LessOrEqual(kn_kctx *c) { return binary(c, B_LE, T_NUM, 2, 2); }
kn_status kn_ref_Greater(kn_kctx *c) { return binary(c, B_GT, T_NUM, 2, 2); }
kn_status kn_ref_GreaterOrEqual(kn_kctx *c) { return binary(c, B_GE, T_NUM, 2, 2); }
kn_status kn_ref_And(kn_kctx *c) { return binary(c, B_AND, T_BOOL, 2, 2); }
kn_status kn_ref_Or(kn_kctx *c) { return binary(c, B_OR, T_BOOL, 2, 2); }
kn_status kn_ref_Xor(kn_kctx *c) { return binary(c, B_XOR, T_BOOL, 2, 2); }
kn_status kn_ref_BitwiseAnd(kn_kctx *c) { return binary(c, B_BAND, T_SINT | T_UINT, 2, 2); }
kn_status kn_ref_BitwiseOr(kn_kctx *c) { return binary(c, B_BOR, T_SINT | T_UINT, 2, 2); }
kn_status kn_ref_BitwiseXor(kn_kctx *c) { return binary(c, B_BXOR, T_SINT | T_UINT, 2, 2); }

kn_status kn_ref_Mod(kn_kctx *c)
{
    int64_t fm = kn_kctx_attr_int(c, "fmod", 0);
    if (fm != 0 && fm != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "fmod must be 0 or 1, got %lld", (long long)fm);
    return binary(c, fm ? B_MOD_C : B_MOD_PY, T_NUM, 2, 2);
}

kn_status kn_ref_Mean(kn_kctx *c)
{
    kn_rt_tensor *y;
    KN_TRY(binary_out(c, B_ADD, T_FLOAT, 1, UINT32_MAX, &y));
    double n = kn_kctx_n_inputs(c);
    for (int64_t i = 0; i < y->numel; i++)
        kn_set_f64(y->dtype, y->data, i, kn_get_f64(y->dtype, y->data, i) / n);
    return KN_OK;
}

kn_status kn_ref_BitShift(kn_kctx *c)
{
    const char *d = kn_kctx_attr_str(c, "direction", "");
    if (strcmp(d, "LEFT") != 0 && strcmp(d, "RIGHT") != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "direction must be 'LEFT' or 'RIGHT', got '%s'", d);
    return binary(c, strcmp(d, "LEFT") == 0 ? B_SHL : B_SHR, T_SINT | T_UINT, 2, 2);
}

/* PRelu: slope broadcasts to X's shape (unidirectionally). */
kn_status kn_ref_PRelu(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *s = kn_kctx_in(c, 1);
    if (!x || !s)
        return kn_kctx_fail(c, KN_ERR_INVALID, "PRelu needs X and slope");
    if (kn_kctx_opset(c) < 7 && s->rank == 1 && x->rank >= 2 && s->dims[0] == x->dims[1] && s->dims[0] != 1 &&
        x->rank > 2) {
        /* opset 6: a 1-D slope is per channel (axis 1), not numpy-broadcast */
        kn_rt_tensor *y;
        KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
        int64_t inner = 1;
        for (int32_t i = 2; i < x->rank; i++)
            inner *= x->dims[i];
        for (int64_t i = 0; i < x->numel; i++) {
            double v = kn_get_f64(x->dtype, x->data, i);
            double a = kn_get_f64(s->dtype, s->data, (i / inner) % s->dims[0]);
            kn_set_f64(x->dtype, y->data, i, v < 0 ? v * a : v);
        }
        return KN_OK;
    }
    bool same = s->rank <= x->rank;
    for (int32_t i = 0; same && i < s->rank; i++) {
        int64_t d = s->dims[i], xd = x->dims[x->rank - s->rank + i];
        same = d == xd || d == 1;
    }
    if (!same)
        return kn_kctx_fail(c, KN_ERR_INVALID, "slope (rank %d) does not broadcast to X (rank %d)", (int)s->rank,
                            (int)x->rank);
    return binary(c, B_PRELU, T_NUM, 2, 2);
}

/* base^e in wrapping 64-bit integer arithmetic (exact for every result
 * that fits the base's type). A negative exponent truncates 1/base^|e|
 * toward zero; *div_zero is set for 0 to a negative power. */
static uint64_t ipow(uint64_t base, int64_t e, bool is_signed, bool *div_zero)
{
    if (e < 0) {
        int64_t sb = (int64_t)base;
        if (base == 1)
            return 1;
        if (is_signed && sb == -1)
            return (e & 1) ? base : 1;
        if (base == 0)
            *div_zero = true;
        return 0;
    }
    uint64_t r = 1, ue = (uint64_t)e;
    while (ue) {
        if (ue & 1)
            r *= base;
        base *= base;
        ue >>= 1;
    }
    return r;
}

/* Pow: the output has the base's type; the exponent may be any numeric
 * type. Integer bases with integer exponents are exact. */
kn_status kn_ref_Pow(kn_kctx *c)
{
    const kn_rt_tensor *a = kn_kctx_in(c, 0), *b = kn_kctx_in(c, 1);
    if (!a || !b)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Pow needs X and Y");
    if (!type_ok(a->dtype, T_NUM) || !type_ok(b->dtype, T_NUM))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input types %s, %s are not supported", kn_dtype_name(a->dtype),
                            kn_dtype_name(b->dtype));
    kn_rt_tensor b_legacy;
    int64_t b_dims[KN_RT_MAX_RANK];
    KN_TRY(legacy_bcast(c, a, b, &b_legacy, b_dims));
    b = &b_legacy;
    const kn_rt_tensor *ts[2] = {a, b};
    int32_t rank;
    int64_t dims[KN_RT_MAX_RANK];
    KN_TRY(kn_broadcast(c, 2, ts, &rank, dims));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, a->dtype, rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    kn_dtype ta = a->dtype, tb = b->dtype;
    bool int_exact = kn_dt_is_int(ta) && kn_dt_is_int(tb), div_zero = false;
    kn_bcast_iter it;
    kn_bcast_init(&it, rank, dims, 2, ts);
    for (int64_t o = 0; o < y->numel; o++, kn_bcast_next(&it)) {
        if (int_exact) {
            int64_t e = tb == KN_U64 && kn_get_u64(tb, b->data, it.off[1]) > INT64_MAX
                            ? INT64_MAX
                            : kn_get_i64(tb, b->data, it.off[1]);
            uint64_t r = ipow(kn_get_u64(ta, a->data, it.off[0]), e, kn_dt_is_signed(ta), &div_zero);
            kn_set_u64(ta, y->data, o, r);
        } else {
            kn_set_f64(ta, y->data, o, pow(kn_get_f64(ta, a->data, it.off[0]), kn_get_f64(tb, b->data, it.off[1])));
        }
    }
    if (div_zero)
        return kn_kctx_fail(c, KN_ERR_INVALID, "integer 0 raised to a negative power");
    return KN_OK;
}

/* Where: output[i] = cond[i] ? X[i] : Y[i], all three broadcast. */
kn_status kn_ref_Where(kn_kctx *c)
{
    const kn_rt_tensor *cond = kn_kctx_in(c, 0), *x = kn_kctx_in(c, 1), *yv = kn_kctx_in(c, 2);
    if (!cond || !x || !yv)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Where needs condition, X and Y");
    if (cond->dtype != KN_BOOL)
        return kn_kctx_fail(c, KN_ERR_INVALID, "condition has type %s, expected bool", kn_dtype_name(cond->dtype));
    if (x->dtype != yv->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "X has type %s but Y has %s", kn_dtype_name(x->dtype),
                            kn_dtype_name(yv->dtype));
    size_t es = kn_dt_size(x->dtype);
    if (x->dtype == KN_STRING || es == 0)
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "Where on %s tensors is not supported", kn_dtype_name(x->dtype));
    const kn_rt_tensor *ts[3] = {cond, x, yv};
    int32_t rank;
    int64_t dims[KN_RT_MAX_RANK];
    KN_TRY(kn_broadcast(c, 3, ts, &rank, dims));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    const uint8_t *cd = cond->data;
    const char *xd = x->data, *yd = yv->data;
    char *od = y->data;
    kn_bcast_iter it;
    kn_bcast_init(&it, rank, dims, 3, ts);
    for (int64_t o = 0; o < y->numel; o++, kn_bcast_next(&it)) {
        const char *src = cd[it.off[0]] ? xd + (size_t)it.off[1] * es : yd + (size_t)it.off[2] * es;
        memcpy(od + (size_t)o * es, src, es);
    }
    return KN_OK;
}
