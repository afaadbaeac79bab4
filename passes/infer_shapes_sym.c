/* Shape inference rules that follow the contents of shape vectors
 * (Shape -> Gather -> Unsqueeze -> Concat -> Reshape chains, Slice of a
 * shape, Equal/Where/ConstantOfShape as torch's expand writes them, and
 * arithmetic on gathered dims), plus Expand, Range, Slice, the reductions
 * and Split, so decoder graphs keep symbolic shapes. Unknown stays
 * unknown: nothing here guesses. */
#include "passes/infer_shapes.h"

#include <stdlib.h>
#include <string.h>

/* ---- symbolic contents of shape vectors ---- */

/* The contents of input i: tracked, or read from a small int constant. */
const kn_is_symval *kn_is_in_sv(kn_is_ctx *c, uint32_t i)
{
    if (!c->sv || i >= c->n->n_inputs || c->n->inputs[i] == KN_NONE)
        return NULL;
    kn_id v = c->n->inputs[i];
    kn_is_symval *s = &c->sv[v];
    const kn_type *ty = kn_is_in_type(c, i);
    if (ty && ty->shape.rank > 1)
        return NULL; /* contents are tracked for scalars and vectors only */
    if (s->n >= 0)
        return s;
    const kn_tensor *t = kn_is_in_const(c, i);
    if (!t || t->rank > 1 || t->n_elems > KN_IS_SV_MAX)
        return NULL;
    for (int64_t k = 0; k < t->n_elems; k++) { /* INT64_MIN (a Slice end) reads as INT64_MIN + 1: the same end */
        int64_t x = kn_is_const_at(t, k);
        s->d[k] = (kn_dim){x == KN_IS_SV_UNK ? KN_IS_SV_UNK + 1 : x, NULL};
    }
    s->n = (int32_t)t->n_elems;
    return s;
}

static kn_is_symval *out_sv(kn_is_ctx *c)
{
    if (!c->sv || c->n->n_outputs < 1 || c->n->outputs[0] == KN_NONE)
        return NULL;
    const kn_type *t = &c->g->values[c->n->outputs[0]].type;
    if (t->kind == KN_TYPE_TENSOR && t->shape.rank > 1)
        return NULL;
    return &c->sv[c->n->outputs[0]];
}

/* Whether every element is a number (>= 0 when `nonneg`). */
static bool sv_numeric(const kn_is_symval *s, bool nonneg)
{
    for (int32_t k = 0; k < s->n; k++)
        if (s->d[k].sym || s->d[k].value == KN_IS_SV_UNK || (nonneg && s->d[k].value < 0))
            return false;
    return true;
}

/* A single numeric element of input i (a scalar or [1]). */
static bool in_num(kn_is_ctx *c, uint32_t i, int64_t *out)
{
    const kn_is_symval *s = kn_is_in_sv(c, i);
    if (!s || s->n != 1 || s->d[0].sym || s->d[0].value == KN_IS_SV_UNK)
        return false;
    *out = s->d[0].value;
    return true;
}

/* Tracks the contents of the output of shape-vector arithmetic. */
void kn_is_track(kn_is_ctx *c)
{
    kn_is_symval *o = out_sv(c);
    if (!o)
        return;
    const kn_node *n = c->n;
    const kn_is_symval *a = kn_is_in_sv(c, 0), *b;
    const kn_attr *at;
    switch (n->op) {
    case KN_OP_Shape: {
        const kn_type *t = kn_is_in_type(c, 0);
        if (!t || t->shape.rank < 0)
            return;
        int64_t r = t->shape.rank, st = 0, en = r;
        if ((at = kn_node_attr(n, "start")) && at->kind == KN_ATTR_INT)
            st = at->u.i;
        if ((at = kn_node_attr(n, "end")) && at->kind == KN_ATTR_INT)
            en = at->u.i;
        st = st < 0 ? st + r : st, en = en < 0 ? en + r : en;
        st = st < 0 ? 0 : st > r ? r : st, en = en < 0 ? 0 : en > r ? r : en;
        if (en - st > KN_IS_SV_MAX)
            return;
        o->n = 0;
        for (int64_t k = st; k < en; k++) {
            kn_dim x = t->shape.dims[k];
            o->d[o->n++] = x.sym || x.value >= 0 ? x : (kn_dim){KN_IS_SV_UNK, NULL};
        }
        return;
    }
    case KN_OP_Unsqueeze: case KN_OP_Squeeze: case KN_OP_Identity: case KN_OP_Reshape: case KN_OP_Flatten:
        if (a)
            *o = *a;
        return;
    case KN_OP_ConstantOfShape: {
        at = kn_node_attr(n, "value");
        const kn_tensor *vt = at && at->kind == KN_ATTR_TENSOR ? at->u.t : NULL;
        if (!a || a->n != 1 || a->d[0].sym || a->d[0].value < 0 || a->d[0].value > KN_IS_SV_MAX || !vt ||
            vt->n_elems != 1 || (vt->dtype != KN_I64 && vt->dtype != KN_I32))
            return;
        o->n = (int32_t)a->d[0].value;
        for (int32_t k = 0; k < o->n; k++)
            o->d[k] = (kn_dim){kn_is_const_at(vt, 0), NULL};
        return;
    }
    case KN_OP_Equal: {
        /* 1/0 per element; a symbolic dim is never negative */
        b = kn_is_in_sv(c, 1);
        if (!a || !b || (a->n != b->n && a->n != 1 && b->n != 1))
            return;
        kn_is_symval r = {a->n > b->n ? a->n : b->n, {{0}}};
        for (int32_t k = 0; k < r.n; k++) {
            kn_dim x = a->d[a->n == 1 ? 0 : k], y = b->d[b->n == 1 ? 0 : k];
            bool nx = !x.sym && x.value != KN_IS_SV_UNK, ny = !y.sym && y.value != KN_IS_SV_UNK;
            if (nx && ny)
                r.d[k].value = x.value == y.value;
            else if (x.sym && x.sym == y.sym)
                r.d[k].value = 1;
            else if ((x.sym && ny && y.value < 0) || (y.sym && nx && x.value < 0))
                r.d[k].value = 0;
            else
                r.d[k].value = KN_IS_SV_UNK;
        }
        *o = r;
        return;
    }
    case KN_OP_Where: {
        const kn_is_symval *x = kn_is_in_sv(c, 1), *y = kn_is_in_sv(c, 2);
        if (!a || !x || !y)
            return;
        int32_t m = a->n > x->n ? a->n : x->n;
        m = m > y->n ? m : y->n;
        if ((a->n != m && a->n != 1) || (x->n != m && x->n != 1) || (y->n != m && y->n != 1))
            return;
        kn_is_symval r = {m, {{0}}};
        for (int32_t k = 0; k < m; k++) {
            kn_dim cd = a->d[a->n == 1 ? 0 : k], xd = x->d[x->n == 1 ? 0 : k], yd = y->d[y->n == 1 ? 0 : k];
            if (cd.sym || cd.value == KN_IS_SV_UNK) /* unknown condition: known only when both agree */
                r.d[k] = xd.sym == yd.sym && xd.value == yd.value ? xd : (kn_dim){KN_IS_SV_UNK, NULL};
            else
                r.d[k] = cd.value ? xd : yd;
        }
        *o = r;
        return;
    }
    case KN_OP_Cast:
        at = kn_node_attr(n, "to");
        if (a && at && at->kind == KN_ATTR_INT && (at->u.i == KN_I64 || at->u.i == KN_I32))
            *o = *a;
        return;
    case KN_OP_Gather: {
        const kn_tensor *ix = kn_is_in_const(c, 1);
        at = kn_node_attr(n, "axis");
        if (!a || !ix || ix->rank > 1 || ix->n_elems > KN_IS_SV_MAX || (at && at->kind == KN_ATTR_INT && at->u.i != 0))
            return;
        kn_is_symval r = {0};
        for (int64_t k = 0; k < ix->n_elems; k++) {
            int64_t j = kn_is_const_at(ix, k);
            j = j < 0 ? j + a->n : j;
            if (j < 0 || j >= a->n)
                return;
            r.d[r.n++] = a->d[j];
        }
        *o = r;
        return;
    }
    case KN_OP_Concat: {
        kn_is_symval r = {0};
        for (uint32_t i = 0; i < n->n_inputs; i++) {
            const kn_is_symval *x = kn_is_in_sv(c, i);
            if (!x || r.n + x->n > KN_IS_SV_MAX)
                return;
            for (int32_t k = 0; k < x->n; k++)
                r.d[r.n++] = x->d[k];
        }
        *o = r;
        return;
    }
    case KN_OP_Slice: {
        int64_t st, en, ax = 0, step = 1;
        if (!a || !in_num(c, 1, &st) || !in_num(c, 2, &en) || (kn_is_has_in(n, 3) && !in_num(c, 3, &ax)) ||
            (kn_is_has_in(n, 4) && !in_num(c, 4, &step)) || (ax != 0 && ax != -1) || step != 1)
            return;
        int64_t r = a->n;
        st = st < 0 ? st + r : st, en = en < 0 ? en + r : en;
        st = st < 0 ? 0 : st > r ? r : st, en = en < 0 ? 0 : en > r ? r : en;
        kn_is_symval x = {0};
        for (int64_t k = st; k < en; k++)
            x.d[x.n++] = a->d[k];
        *o = x;
        return;
    }
    case KN_OP_Add: case KN_OP_Sub: case KN_OP_Mul: case KN_OP_Div: {
        b = kn_is_in_sv(c, 1);
        if (!a || !b || (a->n != b->n && a->n != 1 && b->n != 1))
            return;
        int32_t m = a->n > b->n ? a->n : b->n;
        kn_is_symval r = {m, {{0}}};
        for (int32_t k = 0; k < m; k++) {
            kn_dim x = a->d[a->n == 1 ? 0 : k], y = b->d[b->n == 1 ? 0 : k];
            bool nx = !x.sym && x.value != KN_IS_SV_UNK, ny = !y.sym && y.value != KN_IS_SV_UNK;
            if ((n->op == KN_OP_Mul || n->op == KN_OP_Div) && ny && y.value == 1)
                r.d[k] = x; /* x * 1, x / 1 */
            else if (n->op == KN_OP_Mul && nx && x.value == 1)
                r.d[k] = y;
            else if ((n->op == KN_OP_Add || n->op == KN_OP_Sub) && ny && y.value == 0)
                r.d[k] = x;
            else if (nx && ny && llabs(x.value) < ((int64_t)1 << 31) && llabs(y.value) < ((int64_t)1 << 31) &&
                     (n->op != KN_OP_Div || (y.value > 0 && x.value >= 0)))
                r.d[k].value = n->op == KN_OP_Add ? x.value + y.value
                               : n->op == KN_OP_Sub ? x.value - y.value
                               : n->op == KN_OP_Mul ? x.value * y.value
                                                    : x.value / y.value;
            else
                r.d[k] = (kn_dim){KN_IS_SV_UNK, NULL};
        }
        *o = r;
        return;
    }
    default:
        return;
    }
}

/* Reshape with a target whose contents are known (numbers, symbols,
 * 0 = copy, -1 = the rest: known when the input's dims, as a product of
 * a number and symbols, divide by the other target dims). */
kn_status kn_is_reshape_sym(kn_is_ctx *c, const kn_type *t, const kn_is_symval *s)
{
    bool allowzero = kn_node_attr(c->n, "allowzero") && kn_node_attr(c->n, "allowzero")->u.i;
    kn_dim d[KN_IS_SV_MAX];
    int32_t r = s->n, infer = -1;
    for (int32_t k = 0; k < r; k++) {
        d[k] = kn_is_sv_dim(s->d[k]);
        if (!s->d[k].sym && s->d[k].value == 0 && !allowzero)
            d[k] = t && k < t->shape.rank ? t->shape.dims[k] : (kn_dim){-1, NULL};
        else if (!s->d[k].sym && s->d[k].value == -1)
            infer = k;
        else if (!s->d[k].sym && s->d[k].value < 0)
            infer = -2; /* unknown: the rest cannot be worked out */
    }
    if (infer == -2)
        infer = -1;
    if (infer >= 0 && t && t->shape.rank >= 0 && t->shape.rank <= 64) {
        /* input: number * syms; remove the other target dims from it */
        kn_str syms[64];
        int32_t ns = 0;
        int64_t num = 1;
        bool ok = true;
        for (int32_t k = 0; k < t->shape.rank && ok; k++) {
            kn_dim x = t->shape.dims[k];
            if (x.sym)
                syms[ns++] = x.sym;
            else if (x.value >= 0 && (x.value == 0 || num <= INT64_MAX / x.value))
                num *= x.value;
            else
                ok = false;
        }
        for (int32_t k = 0; k < r && ok; k++) {
            if (k == infer)
                continue;
            if (d[k].sym) {
                int32_t j = 0;
                while (j < ns && syms[j] != d[k].sym)
                    j++;
                if (j == ns)
                    ok = false;
                else
                    syms[j] = syms[--ns];
            } else if (d[k].value > 0 && num % d[k].value == 0) {
                num /= d[k].value;
            } else {
                ok = false;
            }
        }
        if (ok && ns == 0)
            d[infer] = (kn_dim){num, NULL};
        else if (ok && ns == 1 && num == 1)
            d[infer] = (kn_dim){-1, syms[0]};
    }
    return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, r, d);
}

/* Expand(x, shape): x's dims broadcast with the target's. */
kn_status kn_is_expand(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    const kn_is_symval *s = kn_is_in_sv(c, 1);
    if (!t || t->shape.rank < 0 || !s)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, -1, NULL);
    int32_t r = t->shape.rank > s->n ? t->shape.rank : s->n;
    if (r > 64)
        return KN_OK;
    kn_dim d[64];
    for (int32_t k = 0; k < r; k++) {
        int32_t i = k - (r - t->shape.rank), j = k - (r - s->n);
        kn_dim x = i >= 0 ? t->shape.dims[i] : (kn_dim){1, NULL};
        kn_dim y = j >= 0 ? kn_is_sv_dim(s->d[j]) : (kn_dim){1, NULL};
        d[k] = x.value == 1 && !x.sym ? y : (y.value == 1 && !y.sym) || kn_is_dim_eq(x, y) ? x : (kn_dim){-1, NULL};
    }
    return kn_is_set_out(c, 0, t->dtype, r, d);
}

/* Range(start, limit, delta): numbers, or 0 to a symbol by 1. */
kn_status kn_is_range(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    kn_dim d = {-1, NULL};
    int64_t st, lim, dl;
    const kn_is_symval *ls = kn_is_in_sv(c, 1);
    if (in_num(c, 0, &st) && in_num(c, 2, &dl) && dl != 0) {
        if (in_num(c, 1, &lim) && llabs(lim) < ((int64_t)1 << 62) && llabs(st) < ((int64_t)1 << 62) &&
            llabs(dl) < ((int64_t)1 << 62)) {
            int64_t len = dl > 0 ? (lim - st + dl - 1) / dl : (st - lim - dl - 1) / -dl;
            d.value = len > 0 ? len : 0;
        } else if (st == 0 && dl == 1 && ls && ls->n == 1 && ls->d[0].sym) {
            d = ls->d[0];
        }
    }
    return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, 1, &d);
}

/* Slice of a data tensor with known starts/ends/axes/steps. */
kn_status kn_is_slice(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    if (!t || t->shape.rank < 0 || t->shape.rank > 64 || c->n->opset < 10)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, t ? t->shape.rank : -1, NULL);
    int32_t r = t->shape.rank;
    const kn_is_symval *st = kn_is_in_sv(c, 1), *en = kn_is_in_sv(c, 2);
    const kn_is_symval *ax = kn_is_has_in(c->n, 3) ? kn_is_in_sv(c, 3) : NULL, *sp = kn_is_has_in(c->n, 4) ? kn_is_in_sv(c, 4) : NULL;
    kn_dim d[64];
    memcpy(d, t->shape.dims, (size_t)r * sizeof *d);
    if (!st || !en || st->n != en->n || (kn_is_has_in(c->n, 3) && (!ax || ax->n != st->n)) ||
        (kn_is_has_in(c->n, 4) && (!sp || sp->n != st->n)) || !sv_numeric(st, false) || !sv_numeric(en, false) ||
        (ax && !sv_numeric(ax, false)) || (sp && !sv_numeric(sp, false)))
        return kn_is_set_out(c, 0, t->dtype, r, NULL);
    for (int32_t i = 0; i < st->n; i++) {
        int64_t a = ax ? ax->d[i].value : i, s = st->d[i].value, e = en->d[i].value, step = sp ? sp->d[i].value : 1;
        a = a < 0 ? a + r : a;
        if (a < 0 || a >= r || step == 0)
            return kn_is_set_out(c, 0, t->dtype, r, NULL);
        int64_t n = t->shape.dims[a].value;
        if (step == 1 && s == 0 && e >= INT32_MAX)
            continue; /* the whole axis: symbolic dims stay */
        if (n < 0) {
            d[a] = (kn_dim){-1, NULL};
            continue;
        }
        /* ONNX clamping */
        s = s < 0 ? s + n : s, e = e < 0 ? e + n : e;
        if (step > 0) {
            s = s < 0 ? 0 : s > n ? n : s, e = e < 0 ? 0 : e > n ? n : e;
            d[a] = (kn_dim){e > s ? (e - s + step - 1) / step : 0, NULL};
        } else {
            s = s < 0 ? 0 : s > n - 1 ? n - 1 : s, e = e < -1 ? -1 : e > n - 1 ? n - 1 : e;
            d[a] = (kn_dim){s > e ? (s - e - step - 1) / -step : 0, NULL};
        }
    }
    return kn_is_set_out(c, 0, t->dtype, r, d);
}

/* Reductions: axes from the attribute (or, for ReduceSum from opset 13
 * and the others from 18, a constant input), keepdims. */
kn_status kn_is_reduce(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    if (!t || t->shape.rank < 0 || t->shape.rank > 64)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, -1, NULL);
    int32_t r = t->shape.rank;
    const kn_attr *a = kn_node_attr(c->n, "keepdims");
    bool keep = !a || a->kind != KN_ATTR_INT || a->u.i != 0;
    a = kn_node_attr(c->n, "noop_with_empty_axes");
    bool noop = a && a->kind == KN_ATTR_INT && a->u.i != 0;
    bool axes_input = c->n->op == KN_OP_ReduceSum ? c->n->opset >= 13 : c->n->opset >= 18;
    bool drop[64] = {0};
    int64_t na = 0, axes[64];
    if (axes_input && kn_is_has_in(c->n, 1)) {
        const kn_tensor *ax = kn_is_in_const(c, 1);
        if (!ax || ax->rank > 1 || ax->n_elems > 64)
            return kn_is_set_out(c, 0, t->dtype, keep ? r : -1, NULL);
        for (int64_t i = 0; i < ax->n_elems; i++)
            axes[na++] = kn_is_const_at(ax, i);
    } else if (!axes_input && (a = kn_node_attr(c->n, "axes")) && a->kind == KN_ATTR_INTS && a->n <= 64) {
        for (uint32_t i = 0; i < a->n; i++)
            axes[na++] = a->u.ints[i];
    }
    if (na == 0 && noop)
        return kn_is_same_as_input(c, 0);
    for (int64_t i = 0; i < na; i++) {
        int64_t x = axes[i] < 0 ? axes[i] + r : axes[i];
        if (x < 0 || x >= r)
            return kn_is_set_out(c, 0, t->dtype, -1, NULL);
        drop[x] = true;
    }
    kn_dim d[64];
    int32_t n = 0;
    for (int32_t k = 0; k < r; k++) {
        if (na == 0 || drop[k]) {
            if (keep)
                d[n++] = (kn_dim){1, NULL};
        } else {
            d[n++] = t->shape.dims[k];
        }
    }
    return kn_is_set_out(c, 0, t->dtype, n, d);
}

/* Split along an axis: sizes from `split` (attribute before opset 13, a
 * constant input from 13) or equal parts (num_outputs from opset 18). */
kn_status kn_is_split(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    uint32_t no = c->n->n_outputs;
    if (!t || t->shape.rank < 1 || t->shape.rank > 64 || no > 64) {
        for (uint32_t i = 0; i < no; i++)
            KN_TRY(kn_is_set_out(c, i, t ? t->dtype : KN_UNDEFINED, t ? t->shape.rank : -1, NULL));
        return KN_OK;
    }
    int32_t r = t->shape.rank;
    const kn_attr *a = kn_node_attr(c->n, "axis");
    int64_t axis = a && a->kind == KN_ATTR_INT ? a->u.i : 0;
    axis = axis < 0 ? axis + r : axis;
    if (axis < 0 || axis >= r)
        return KN_OK;
    int64_t sizes[64], n = t->shape.dims[axis].value;
    bool known = false;
    if (c->n->opset < 13 && (a = kn_node_attr(c->n, "split")) && a->kind == KN_ATTR_INTS && a->n == no) {
        memcpy(sizes, a->u.ints, no * sizeof *sizes);
        known = true;
    } else if (c->n->opset >= 13 && kn_is_has_in(c->n, 1)) {
        const kn_tensor *sp = kn_is_in_const(c, 1);
        if (sp && sp->rank == 1 && sp->n_elems == (int64_t)no) {
            for (uint32_t i = 0; i < no; i++)
                sizes[i] = kn_is_const_at(sp, i);
            known = true;
        }
    } else if (n >= 0 && no > 0) {
        int64_t part = (n + no - 1) / no; /* the last part may be smaller (opset 18) */
        for (uint32_t i = 0; i < no; i++)
            sizes[i] = i + 1 < no ? part : n - part * (no - 1);
        known = n % no == 0 || c->n->opset >= 18;
    }
    kn_dim d[64];
    memcpy(d, t->shape.dims, (size_t)r * sizeof *d);
    for (uint32_t i = 0; i < no; i++) {
        d[axis] = (kn_dim){known && sizes[i] >= 0 ? sizes[i] : -1, NULL};
        KN_TRY(kn_is_set_out(c, i, t->dtype, r, d));
    }
    return KN_OK;
}
