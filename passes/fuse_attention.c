/* Attention fusion: the eager attention that exporters write,
 *   MatMul(Q, Kᵀ) → Mul/Div by a constant → [Add mask] → Softmax(last axis)
 *   → MatMul(·, V)
 * becomes one ai.onnx Attention (opset 23) node with the scale as its
 * `scale` attribute and the mask as its attn_mask. Accepted around it:
 * Kᵀ as Transpose(K, [0, 1, 3, 2]) (K is read directly) or any rank-4
 * value (a Transpose node takes the MatMul's place); the scale on the
 * scores, or on Q and/or Kᵀ before the MatMul (scalars, multiplied
 * together; none means 1); K and V expanded for grouped-query attention
 * the way Llama/Qwen2's repeat_kv does it, Reshape(Expand(Unsqueeze(x, 2),
 * [b, h, n, s, d]), [b, h·n, s, d]) with every element of both shapes
 * traced back to dims of x or constants: the expansion is dropped and the
 * Attention reads the n-times-fewer kv heads (q head i uses kv head i / n,
 * the op's own GQA rule).
 *
 * Not fused: a Softmax on another axis; an intermediate value (scores,
 * scaled scores, masked scores, probabilities) read by anything else or a
 * graph output; a scale that is not a float scalar constant; a mask whose
 * static shape does not broadcast to the scores (rank above 4, a dim other
 * than 1 or the scores' dim; the last dim must equal the key length, since
 * the op pads a shorter mask with -inf where Add would broadcast it); Q, K,
 * V whose rank cannot be proven 4; a repeat_kv whose shapes cannot be
 * traced. Exported decoders have symbolic dims (batch, seq, total_seq)
 * and loose intermediate shapes, so what cannot be proven statically is
 * checked at run time: the fused node carries `_kv_repeat` (the n above,
 * 1 without expansion), and the kernels then require Q, K, V of rank 4,
 * q heads = kv heads × n (or kv heads × n = 1, the MatMul's broadcast) and
 * a mask that broadcasts to the scores with no padding, failing where the
 * unfused graph would have broadcast differently. Every fused node lists
 * the nodes it replaces in `_origins`. Numerics: the op computes
 * softmax(Q·Kᵀ·scale + mask)·V in one go (the kernels in double), the
 * unfused graph rounds the scores to float between nodes: equal within
 * float rounding. A row whose mask is -inf everywhere gives 0 (the op's
 * rule) where the unfused Softmax gave NaN. */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 24

static const kn_node *producer(const kn_graph *g, kn_id v)
{
    if (v == KN_NONE || v >= g->n_values || g->values[v].kind != KN_VAL_NODE || g->values[v].producer == KN_NONE)
        return NULL;
    return &g->nodes[g->values[v].producer];
}

static bool is_op(const kn_node *n, kn_op op) { return n && n->op == op && !*n->domain; }

/* The value's only reader is a node and it is not a graph output. */
static bool single_use(const kn_uses *u, kn_id v) { return u->readers[v] == 1 && !u->pinned[v]; }

/* ---- ranks the declared shapes do not give ---- */

static int32_t rank_of(const kn_graph *g, kn_id v, int depth);
static bool elementwise_broadcast(kn_op op);

/* Length of a 1-D integer vector (a shape), or -1. */
static int64_t vec_len(const kn_graph *g, kn_id v, int depth)
{
    const kn_type *t = kn_rw_type(g, v);
    if (t && t->shape.rank == 1 && t->shape.dims[0].value >= 0)
        return t->shape.dims[0].value;
    const kn_tensor *c = kn_rw_const(g, v);
    if (c)
        return c->rank == 1 ? c->n_elems : -1;
    const kn_node *p = producer(g, v);
    if (!p || depth > MAX_DEPTH)
        return -1;
    if (is_op(p, KN_OP_Concat)) {
        int64_t n = 0;
        for (uint32_t i = 0; i < p->n_inputs; i++) {
            int64_t m = kn_rw_has_in(p, i) ? vec_len(g, p->inputs[i], depth + 1) : -1;
            if (m < 0)
                return -1;
            n += m;
        }
        return n;
    }
    if (is_op(p, KN_OP_Unsqueeze) && rank_of(g, p->inputs[0], depth + 1) == 0)
        return 1;
    if (is_op(p, KN_OP_Shape) && !kn_node_attr(p, "start") && !kn_node_attr(p, "end"))
        return rank_of(g, p->inputs[0], depth + 1);
    if ((is_op(p, KN_OP_Cast) || is_op(p, KN_OP_Identity)) && kn_rw_has_in(p, 0))
        return vec_len(g, p->inputs[0], depth + 1);
    if (is_op(p, KN_OP_Reshape) && kn_rw_has_in(p, 1) && kn_rw_has_in(p, 0) && vec_len(g, p->inputs[1], depth + 1) == 1 &&
        rank_of(g, p->inputs[0], depth + 1) == 1)
        return vec_len(g, p->inputs[0], depth + 1);
    if (elementwise_broadcast(p->op) && rank_of(g, v, depth + 1) == 1) {
        /* broadcasting: a known length above 1 is the result's (or an error) */
        int64_t n = -1;
        bool unknown = false;
        for (uint32_t i = 0; i < p->n_inputs; i++) {
            if (!kn_rw_has_in(p, i))
                return -1;
            int32_t r = rank_of(g, p->inputs[i], depth + 1);
            int64_t m = r == 0 ? 1 : vec_len(g, p->inputs[i], depth + 1);
            unknown = unknown || m < 0;
            n = m > n ? m : n;
        }
        return n > 1 || !unknown ? n : -1;
    }
    return -1;
}

static bool elementwise_same_rank(kn_op op)
{
    switch (op) {
    case KN_OP_Neg: case KN_OP_Cos: case KN_OP_Sin: case KN_OP_Cast: case KN_OP_Identity: case KN_OP_Sqrt:
    case KN_OP_Exp: case KN_OP_Tanh: case KN_OP_Sigmoid: case KN_OP_Softmax: case KN_OP_Not: case KN_OP_Slice:
    case KN_OP_Relu: case KN_OP_Erf: case KN_OP_Reciprocal:
        return true;
    default:
        return false;
    }
}

static bool elementwise_broadcast(kn_op op)
{
    switch (op) {
    case KN_OP_Add: case KN_OP_Sub: case KN_OP_Mul: case KN_OP_Div: case KN_OP_Pow: case KN_OP_Where:
    case KN_OP_And: case KN_OP_Or: case KN_OP_Equal: case KN_OP_Less: case KN_OP_LessOrEqual: case KN_OP_Greater:
    case KN_OP_GreaterOrEqual:
        return true;
    default:
        return false;
    }
}

/* The rank of value v: its type's, or worked out from its producer (the
 * shapes of exported decoders' intermediates are mostly unknown, their
 * ranks are not). -1 when unknown. */
static int32_t rank_of(const kn_graph *g, kn_id v, int depth)
{
    const kn_type *t = kn_rw_type(g, v);
    if (t && t->shape.rank >= 0)
        return t->shape.rank;
    const kn_tensor *c = kn_rw_const(g, v);
    if (c)
        return c->rank;
    const kn_node *p = producer(g, v);
    if (!p || *p->domain || depth > MAX_DEPTH || !kn_rw_has_in(p, 0))
        return -1;
    kn_id x = p->inputs[0];
    if (elementwise_same_rank(p->op))
        return rank_of(g, x, depth + 1);
    if (elementwise_broadcast(p->op)) {
        int32_t r = 0;
        for (uint32_t i = 0; i < p->n_inputs; i++) {
            int32_t ri = kn_rw_has_in(p, i) ? rank_of(g, p->inputs[i], depth + 1) : -1;
            if (ri < 0)
                return -1;
            r = ri > r ? ri : r;
        }
        return r;
    }
    switch (p->op) {
    case KN_OP_Transpose: {
        const kn_attr *perm = kn_node_attr(p, "perm");
        return perm ? (int32_t)perm->n : rank_of(g, x, depth + 1);
    }
    case KN_OP_Reshape:
        return kn_rw_has_in(p, 1) ? (int32_t)vec_len(g, p->inputs[1], depth + 1) : -1;
    case KN_OP_Concat: {
        for (uint32_t i = 0; i < p->n_inputs; i++) {
            int32_t r = kn_rw_has_in(p, i) ? rank_of(g, p->inputs[i], depth + 1) : -1;
            if (r >= 0)
                return r;
        }
        return -1;
    }
    case KN_OP_Unsqueeze: {
        int32_t r = rank_of(g, x, depth + 1);
        const kn_attr *a = kn_node_attr(p, "axes");
        int64_t n = a ? (int64_t)a->n : kn_rw_has_in(p, 1) ? vec_len(g, p->inputs[1], depth + 1) : -1;
        return r < 0 || n < 0 ? -1 : r + (int32_t)n;
    }
    case KN_OP_Expand: {
        int32_t r = rank_of(g, x, depth + 1);
        int64_t n = kn_rw_has_in(p, 1) ? vec_len(g, p->inputs[1], depth + 1) : -1;
        return r < 0 || n < 0 ? -1 : (int32_t)(n > r ? n : r);
    }
    case KN_OP_Gather: {
        int32_t r = rank_of(g, x, depth + 1), ri = kn_rw_has_in(p, 1) ? rank_of(g, p->inputs[1], depth + 1) : -1;
        return r < 1 || ri < 0 ? -1 : r - 1 + ri;
    }
    case KN_OP_Range:
        return 1;
    case KN_OP_Flatten:
        return 2;
    case KN_OP_ConstantOfShape:
        return kn_rw_has_in(p, 0) ? (int32_t)vec_len(g, x, depth + 1) : -1;
    case KN_OP_MatMul: {
        int32_t a = rank_of(g, x, depth + 1), b = kn_rw_has_in(p, 1) ? rank_of(g, p->inputs[1], depth + 1) : -1;
        return a < 2 || b < 2 ? -1 : a > b ? a : b;
    }
    default:
        return -1;
    }
}

/* ---- shape elements, traced symbolically (repeat_kv's shapes) ---- */

/* An element of a shape vector: the constant c, or dim `dim` of value
 * `of` times c. */
typedef struct elem {
    bool ok, is_dim;
    kn_id of;
    int32_t dim;
    int64_t c;
} elem;

static elem elem_of(const kn_graph *g, kn_id v, int64_t i, int depth);

static bool elem_nonneg(elem e) { return e.ok && (e.is_dim ? e.c >= 0 : e.c >= 0); }

/* Element i of the integer vector v (or of a scalar, i = 0). */
static elem elem_of(const kn_graph *g, kn_id v, int64_t i, int depth)
{
    elem none = {0};
    if (depth > MAX_DEPTH || i < 0)
        return none;
    const kn_tensor *ct = kn_rw_const(g, v);
    if (ct) {
        if ((ct->dtype != KN_I64 && ct->dtype != KN_I32) || ct->rank > 1 || i >= ct->n_elems)
            return none;
        int64_t x;
        if (ct->dtype == KN_I64) {
            memcpy(&x, (const char *)ct->data + 8 * i, 8);
        } else {
            int32_t y;
            memcpy(&y, (const char *)ct->data + 4 * i, 4);
            x = y;
        }
        return (elem){true, false, KN_NONE, 0, x};
    }
    const kn_node *p = producer(g, v);
    if (!p || *p->domain || !kn_rw_has_in(p, 0))
        return none;
    kn_id x = p->inputs[0];
    switch (p->op) {
    case KN_OP_Identity:
        return elem_of(g, x, i, depth + 1);
    case KN_OP_Cast:
        return kn_node_attr_int(p, "to", 0) == KN_I64 ? elem_of(g, x, i, depth + 1) : none;
    case KN_OP_Shape: {
        int32_t r = rank_of(g, x, depth + 1);
        if (kn_node_attr(p, "start") || kn_node_attr(p, "end") || r < 0 || i >= r)
            return none;
        return (elem){true, true, x, (int32_t)i, 1};
    }
    case KN_OP_Gather: { /* Gather(Shape(x), scalar k) */
        const kn_node *s = producer(g, x);
        int64_t k[1];
        size_t n;
        if (kn_node_attr_int(p, "axis", 0) != 0 || !is_op(s, KN_OP_Shape) || !kn_rw_has_in(p, 1) ||
            !kn_rw_const_ints(g, p->inputs[1], k, 1, &n) || n != 1 || kn_rw_const(g, p->inputs[1])->rank != 0 || i != 0)
            return none;
        int32_t r = rank_of(g, s->inputs[0], depth + 1);
        if (r < 0 || k[0] < -r || k[0] >= r)
            return none;
        return elem_of(g, x, k[0] < 0 ? k[0] + r : k[0], depth + 1);
    }
    case KN_OP_Unsqueeze: /* of a scalar */
        return i == 0 && rank_of(g, x, depth + 1) == 0 ? elem_of(g, x, 0, depth + 1) : none;
    case KN_OP_Reshape: { /* a vector reshaped to [-1] or [n] */
        int64_t t[1];
        size_t n;
        if (!kn_rw_has_in(p, 1) || !kn_rw_const_ints(g, p->inputs[1], t, 1, &n) || n != 1 ||
            rank_of(g, x, depth + 1) != 1)
            return none;
        return elem_of(g, x, i, depth + 1);
    }
    case KN_OP_Concat: {
        if (kn_node_attr_int(p, "axis", 0) != 0 && kn_node_attr_int(p, "axis", 0) != -1)
            return none;
        for (uint32_t k = 0; k < p->n_inputs; k++) {
            int64_t m = kn_rw_has_in(p, k) ? vec_len(g, p->inputs[k], depth + 1) : -1;
            if (m < 0)
                return none;
            if (i < m)
                return elem_of(g, p->inputs[k], i, depth + 1);
            i -= m;
        }
        return none;
    }
    case KN_OP_Mul: { /* a dim (or a constant) times a constant */
        if (!kn_rw_has_in(p, 1) || rank_of(g, v, depth + 1) > 1)
            return none;
        elem a = elem_of(g, x, rank_of(g, x, depth + 1) == 0 ? 0 : i, depth + 1);
        elem b = elem_of(g, p->inputs[1], rank_of(g, p->inputs[1], depth + 1) == 0 ? 0 : i, depth + 1);
        if (!a.ok || !b.ok || (a.is_dim && b.is_dim))
            return none;
        if (b.is_dim) {
            elem t = a;
            a = b;
            b = t;
        }
        a.c *= b.c;
        return a;
    }
    case KN_OP_ConstantOfShape: {
        const kn_attr *a = kn_node_attr(p, "value");
        if (!a || a->kind != KN_ATTR_TENSOR || a->u.t->n_elems != 1 || a->u.t->dtype != KN_I64)
            return a ? none : (elem){true, false, KN_NONE, 0, 0};
        int64_t c;
        memcpy(&c, a->u.t->data, 8);
        return (elem){true, false, KN_NONE, 0, c};
    }
    case KN_OP_Where: { /* the exporter's Where(Equal(r, -1), 1, r): r when r >= 0 */
        const kn_node *eq = producer(g, x);
        if (p->n_inputs != 3 || !is_op(eq, KN_OP_Equal) || !kn_rw_has_in(eq, 1))
            return none;
        kn_id r = p->inputs[2];
        elem er = elem_of(g, r, i, depth + 1);
        if (!elem_nonneg(er))
            return none;
        for (int s = 0; s < 2; s++) { /* Equal(r, m) with m[i] = -1: false, so r[i] */
            kn_id a = eq->inputs[s], m = eq->inputs[1 - s];
            elem em = elem_of(g, m, rank_of(g, m, depth + 1) == 0 ? 0 : i, depth + 1);
            if (a == r && em.ok && !em.is_dim && em.c < 0)
                return er;
        }
        return none;
    }
    default:
        return none;
    }
}

/* Element e is dim d of x: traced to it, or a constant equal to x's static
 * dim d. */
static bool elem_is_dim(const kn_graph *g, elem e, kn_id x, int32_t d)
{
    if (!e.ok)
        return false;
    if (e.is_dim)
        return e.of == x && e.dim == d && e.c == 1;
    const kn_type *t = kn_rw_type(g, x);
    return t && t->shape.rank > d && t->shape.dims[d].value >= 0 && t->shape.dims[d].value == e.c;
}

/* v = Reshape(Expand(Unsqueeze(x, [2]), [b, h, n, s, d]), [b, h·n, s, d])
 * with x of rank 4: *x_out = x, *rep = n. */
static bool repeat_kv(const kn_graph *g, kn_id v, kn_id *x_out, int64_t *rep)
{
    const kn_node *r = producer(g, v);
    if (!is_op(r, KN_OP_Reshape) || !kn_rw_has_in(r, 1) || kn_node_attr_int(r, "allowzero", 0) != 0)
        return false;
    const kn_node *e = producer(g, r->inputs[0]);
    if (!is_op(e, KN_OP_Expand) || !kn_rw_has_in(e, 1))
        return false;
    const kn_node *un = producer(g, e->inputs[0]);
    if (!is_op(un, KN_OP_Unsqueeze) || !kn_rw_has_in(un, 0))
        return false;
    kn_id x = un->inputs[0];
    int64_t axes[2];
    size_t na = 0;
    const kn_attr *aa = kn_node_attr(un, "axes");
    if (aa && aa->kind == KN_ATTR_INTS && aa->n == 1)
        axes[0] = aa->u.ints[0], na = 1;
    else if (!aa && kn_rw_has_in(un, 1) && !kn_rw_const_ints(g, un->inputs[1], axes, 2, &na))
        return false;
    if (na != 1 || (axes[0] != 2 && axes[0] != -3) || rank_of(g, x, 0) != 4)
        return false;
    if (vec_len(g, e->inputs[1], 0) != 5 || vec_len(g, r->inputs[1], 0) != 4)
        return false;
    /* Expand to [x0, x1, n, x2, x3] (a 1 keeps x's dim too) */
    elem n = elem_of(g, e->inputs[1], 2, 0);
    if (!n.ok || n.is_dim || n.c < 1)
        return false;
    static const int32_t src[5] = {0, 1, -1, 2, 3};
    for (int i = 0; i < 5; i++) {
        elem t = elem_of(g, e->inputs[1], i, 0);
        if (i != 2 && !elem_is_dim(g, t, x, src[i]) && !(t.ok && !t.is_dim && t.c == 1))
            return false;
    }
    /* Reshape to [x0, x1·n, x2, x3]: x1·n traced, or x1's static value
     * times n, or -1 (the only dim left) */
    elem t0 = elem_of(g, r->inputs[1], 0, 0), t1 = elem_of(g, r->inputs[1], 1, 0);
    elem t2 = elem_of(g, r->inputs[1], 2, 0), t3 = elem_of(g, r->inputs[1], 3, 0);
    if (!elem_is_dim(g, t0, x, 0) || !elem_is_dim(g, t2, x, 2) || !elem_is_dim(g, t3, x, 3) || !t1.ok)
        return false;
    bool merged = t1.is_dim ? t1.of == x && t1.dim == 1 && t1.c == n.c : t1.c == -1;
    if (!t1.is_dim && t1.c != -1) {
        const kn_type *xt = kn_rw_type(g, x);
        merged = xt && xt->shape.rank == 4 && xt->shape.dims[1].value >= 0 && t1.c == xt->shape.dims[1].value * n.c;
    }
    if (!merged)
        return false;
    *x_out = x;
    *rep = n.c;
    return true;
}

/* ---- the pattern ---- */

/* A float scalar constant (any rank, one element): its value. */
static bool scalar_const(const kn_graph *g, kn_id v, double *out)
{
    const kn_tensor *t = kn_rw_const(g, v);
    if (!t || t->n_elems != 1 || t->rank > 4)
        return false;
    if (t->dtype == KN_F32) {
        float f;
        memcpy(&f, t->data, 4);
        *out = f;
    } else if (t->dtype == KN_F64) {
        memcpy(out, t->data, 8);
    } else {
        return false;
    }
    return isfinite(*out) && *out != 0;
}

/* v = Mul(x, c), Mul(c, x) or Div(x, c) with c a scalar, v read once:
 * *x = x and *scale *= c (or 1/c). */
static bool scaled(const kn_graph *g, const kn_uses *u, kn_id v, kn_id *x, double *scale, kn_id *node)
{
    const kn_node *p = producer(g, v);
    double c;
    if (!p || !single_use(u, v) || p->n_inputs != 2 || !kn_rw_has_in(p, 0) || !kn_rw_has_in(p, 1))
        return false;
    if (is_op(p, KN_OP_Mul)) {
        for (int s = 0; s < 2; s++)
            if (scalar_const(g, p->inputs[s], &c) && !kn_rw_const(g, p->inputs[1 - s])) {
                *x = p->inputs[1 - s];
                *scale *= c;
                *node = g->values[v].producer;
                return true;
            }
    } else if (is_op(p, KN_OP_Div) && scalar_const(g, p->inputs[1], &c)) {
        *x = p->inputs[0];
        *scale /= c;
        *node = g->values[v].producer;
        return true;
    }
    return false;
}

/* The mask's static shape broadcasts to the scores (rank 4) with its last
 * dim equal to theirs; unknown dims are left to the run-time check. */
static bool mask_fits(const kn_graph *g, kn_id mask, kn_id scores_like, int32_t mrank)
{
    if (mrank > 4)
        return false;
    const kn_type *mt = kn_rw_type(g, mask), *st = kn_rw_type(g, scores_like);
    if (!mt || mt->shape.rank < 0 || !st || st->shape.rank != 4)
        return true;
    for (int32_t i = 0; i < mt->shape.rank; i++) {
        kn_dim m = mt->shape.dims[mt->shape.rank - 1 - i], s = st->shape.dims[3 - i];
        if (m.value < 0 || s.value < 0)
            continue;
        if (i == 0 ? m.value != s.value : m.value != 1 && m.value != s.value)
            return false;
    }
    return true;
}

typedef struct match {
    kn_id dead[8]; /* node ids replaced */
    uint32_t n_dead;
    kn_id q, k, v, mask, mm2;
    bool k_transposed; /* k is Kᵀ: a Transpose must be made */
    double scale;
    int64_t rep;
} match;

static bool match_at(const kn_graph *g, const kn_uses *u, kn_id sk, match *m)
{
    const kn_node *sm = &g->nodes[sk];
    memset(m, 0, sizeof *m);
    m->mask = KN_NONE;
    m->scale = 1.0;
    m->rep = 1;
    if (!is_op(sm, KN_OP_Softmax) || !kn_rw_has_in(sm, 0) || sm->n_outputs != 1 || !single_use(u, sm->outputs[0]))
        return false;
    /* the reader: MatMul(probabilities, V) */
    kn_id mm2 = KN_NONE;
    for (kn_id k = sk + 1; k < g->n_nodes && mm2 == KN_NONE; k++) {
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] == sm->outputs[0])
                mm2 = k;
    }
    if (mm2 == KN_NONE || u->dead[mm2])
        return false;
    const kn_node *m2 = &g->nodes[mm2];
    if (!is_op(m2, KN_OP_MatMul) || m2->inputs[0] != sm->outputs[0] || !kn_rw_has_in(m2, 1) ||
        m2->n_outputs != 1 || m2->outputs[0] == KN_NONE)
        return false;
    m->dead[m->n_dead++] = sk;
    m->mm2 = mm2;
    /* [Add(scores, mask)] */
    kn_id x = sm->inputs[0];
    const kn_node *p = producer(g, x);
    if (is_op(p, KN_OP_Add) && single_use(u, x) && p->n_inputs == 2 && kn_rw_has_in(p, 0) && kn_rw_has_in(p, 1)) {
        int side = -1;
        for (int s = 0; s < 2 && side < 0; s++) {
            kn_id y = p->inputs[s], node;
            double c = 1.0;
            if (scaled(g, u, y, &y, &c, &node) || single_use(u, y))
                side = is_op(producer(g, y), KN_OP_MatMul) && single_use(u, y) ? s : -1;
        }
        if (side < 0)
            return false;
        m->mask = p->inputs[1 - side];
        m->dead[m->n_dead++] = g->values[x].producer;
        x = p->inputs[side];
    }
    /* [scale] */
    kn_id node;
    if (scaled(g, u, x, &x, &m->scale, &node))
        m->dead[m->n_dead++] = node;
    /* MatMul(Q, Kᵀ) */
    p = producer(g, x);
    if (!is_op(p, KN_OP_MatMul) || !single_use(u, x) || !kn_rw_has_in(p, 0) || !kn_rw_has_in(p, 1))
        return false;
    m->dead[m->n_dead++] = g->values[x].producer;
    kn_id scores = x, q = p->inputs[0], kt = p->inputs[1];
    if (scaled(g, u, q, &q, &m->scale, &node))
        m->dead[m->n_dead++] = node;
    if (scaled(g, u, kt, &kt, &m->scale, &node))
        m->dead[m->n_dead++] = node;
    if (!(m->scale > 0) || !isfinite(m->scale) || !isfinite((float)m->scale) || (float)m->scale == 0)
        return false;
    if (rank_of(g, q, 0) != 4 || rank_of(g, kt, 0) != 4 || rank_of(g, m2->inputs[1], 0) != 4)
        return false;
    const kn_type *qt = kn_rw_type(g, q);
    if (!qt || (qt->dtype != KN_F32 && qt->dtype != KN_F16 && qt->dtype != KN_BF16 && qt->dtype != KN_F64))
        return false;
    /* the Softmax runs along the last axis of the rank-4 scores */
    int64_t axis = kn_node_attr_int(sm, "axis", sm->opset >= 13 ? -1 : 1);
    if (axis != -1 && axis != 3)
        return false;
    if (m->mask != KN_NONE) {
        const kn_type *mt = kn_rw_type(g, m->mask);
        int32_t mr = rank_of(g, m->mask, 0);
        if (!mt || mt->dtype != qt->dtype || mr < 0 || !mask_fits(g, m->mask, scores, mr))
            return false;
    }
    /* Kᵀ = Transpose(K, [0, 1, 3, 2]), else a Transpose is made */
    const kn_node *tr = producer(g, kt);
    const kn_attr *perm = tr && is_op(tr, KN_OP_Transpose) ? kn_node_attr(tr, "perm") : NULL;
    static const int64_t swap[4] = {0, 1, 3, 2};
    if (perm && perm->n == 4 && memcmp(perm->u.ints, swap, sizeof swap) == 0) {
        m->k = tr->inputs[0];
    } else {
        m->k = kt;
        m->k_transposed = true;
    }
    m->q = q;
    m->v = m2->inputs[1];
    /* repeat_kv on K and V, with the same factor */
    kn_id kx, vx;
    int64_t rk, rv;
    if (!m->k_transposed && repeat_kv(g, m->k, &kx, &rk) && repeat_kv(g, m->v, &vx, &rv) && rk == rv) {
        m->k = kx;
        m->v = vx;
        m->rep = rk;
    }
    return true;
}

/* ---- the rewrite ---- */

static kn_status intern_attr(kn_graph *g, const char *name, kn_attr *a)
{
    memset(a, 0, sizeof *a);
    return kn_graph_intern_cstr(g, name, &a->name);
}

/* Makes node slot k (a node being replaced) a Transpose(kt, [0, 1, 3, 2]);
 * *out receives K. */
static kn_status make_transpose(kn_graph *g, kn_uses *u, kn_id k, kn_id kt, kn_id *out)
{
    char base[1024];
    snprintf(base, sizeof base, "%s/untransposed", g->values[kt].name);
    kn_value nv = {0};
    KN_TRY(kn_rw_unique_name(g, base, &nv.name));
    nv.kind = KN_VAL_NODE;
    nv.producer = k;
    nv.out_index = 0;
    const kn_type *tt = kn_rw_type(g, kt);
    nv.type.kind = KN_TYPE_TENSOR;
    nv.type.dtype = tt ? tt->dtype : KN_UNDEFINED;
    nv.type.shape.rank = -1;
    if (tt && tt->shape.rank == 4) {
        nv.type.shape.rank = 4;
        nv.type.shape.dims = kn_graph_alloc(g, 4 * sizeof(kn_dim));
        if (!nv.type.shape.dims)
            return KN_ERR_NOMEM;
        static const int perm[4] = {0, 1, 3, 2};
        for (int i = 0; i < 4; i++)
            nv.type.shape.dims[i] = tt->shape.dims[perm[i]];
    }
    KN_TRY(kn_rw_add_value(g, u, &nv, out));
    kn_node *n = &g->nodes[k];
    kn_id *ins = kn_graph_alloc(g, sizeof *ins), *outs = kn_graph_alloc(g, sizeof *outs);
    kn_attr *a = kn_graph_alloc(g, sizeof *a);
    int64_t *p = kn_graph_alloc(g, 4 * sizeof *p);
    if (!ins || !outs || !a || !p)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < n->n_inputs; i++)
        if (n->inputs[i] != KN_NONE)
            u->readers[n->inputs[i]]--;
    ins[0] = kt;
    u->readers[kt]++;
    outs[0] = *out;
    KN_TRY(intern_attr(g, "perm", a));
    a->kind = KN_ATTR_INTS;
    a->n = 4;
    p[0] = 0, p[1] = 1, p[2] = 3, p[3] = 2;
    a->u.ints = p;
    char name[1024];
    snprintf(name, sizeof name, "%s/k_transpose", n->name ? n->name : "attention");
    kn_str nm;
    KN_TRY(kn_graph_intern_cstr(g, name, &nm));
    KN_TRY(kn_graph_intern_cstr(g, "Transpose", &n->op_type));
    n->name = nm;
    n->op = KN_OP_Transpose;
    n->opset = 13;
    KN_TRY(kn_graph_intern_cstr(g, "", &n->domain));
    n->inputs = ins;
    n->n_inputs = 1;
    n->outputs = outs;
    n->n_outputs = 1;
    n->attrs = a;
    n->n_attrs = 1;
    return KN_OK;
}

static kn_status fuse(kn_graph *g, kn_uses *u, match *m)
{
    /* the origins, before any node changes */
    kn_bytes *orig = kn_graph_alloc(g, (m->n_dead + 1) * sizeof *orig);
    if (!orig)
        return KN_ERR_NOMEM;
    uint32_t n_orig = 0;
    kn_id slots[9];
    for (uint32_t i = 0; i < m->n_dead; i++)
        slots[i] = m->dead[i];
    slots[m->n_dead] = m->mm2;
    for (uint32_t i = 0; i <= m->n_dead; i++) {
        const char *nm = g->nodes[slots[i]].name;
        if (nm)
            orig[n_orig++] = (kn_bytes){(const uint8_t *)nm, strlen(nm)};
    }
    /* the replaced nodes no longer read anything */
    for (uint32_t i = 0; i <= m->n_dead; i++) {
        kn_node *n = &g->nodes[slots[i]];
        for (uint32_t j = 0; j < n->n_inputs; j++)
            if (n->inputs[j] != KN_NONE)
                u->readers[n->inputs[j]]--;
        n->n_inputs = 0;
    }
    kn_id k = m->k;
    if (m->k_transposed) { /* the Q·Kᵀ MatMul's slot becomes the Transpose */
        kn_id mm1 = m->dead[m->n_dead - 1];
        for (uint32_t i = 0; i < m->n_dead; i++)
            if (g->nodes[m->dead[i]].op == KN_OP_MatMul)
                mm1 = m->dead[i];
        for (uint32_t i = 0; i < g->nodes[mm1].n_outputs; i++)
            kn_rw_orphan(g, g->nodes[mm1].outputs[i]);
        KN_TRY(make_transpose(g, u, mm1, m->k, &k));
        for (uint32_t i = 0; i < m->n_dead; i++)
            if (m->dead[i] == mm1)
                m->dead[i] = m->dead[--m->n_dead];
    }
    kn_node *n = &g->nodes[m->mm2];
    kn_id *ins = kn_graph_alloc(g, 4 * sizeof *ins);
    kn_attr *attrs = kn_graph_alloc(g, 3 * sizeof *attrs);
    if (!ins || !attrs)
        return KN_ERR_NOMEM;
    ins[0] = m->q, ins[1] = k, ins[2] = m->v, ins[3] = m->mask;
    for (int i = 0; i < 4; i++)
        if (ins[i] != KN_NONE)
            u->readers[ins[i]]++;
    KN_TRY(intern_attr(g, "scale", &attrs[0]));
    attrs[0].kind = KN_ATTR_FLOAT;
    attrs[0].u.f = (float)m->scale;
    KN_TRY(intern_attr(g, "_kv_repeat", &attrs[1]));
    attrs[1].kind = KN_ATTR_INT;
    attrs[1].u.i = m->rep;
    KN_TRY(intern_attr(g, "_origins", &attrs[2]));
    attrs[2].kind = KN_ATTR_STRINGS;
    attrs[2].n = n_orig;
    attrs[2].u.strings = orig;
    char name[1024];
    snprintf(name, sizeof name, "%s/Attention", n->name ? n->name : "attention");
    KN_TRY(kn_graph_intern_cstr(g, name, &n->name));
    KN_TRY(kn_graph_intern_cstr(g, "Attention", &n->op_type));
    KN_TRY(kn_graph_intern_cstr(g, "", &n->domain));
    n->op = kn_op_lookup("", "Attention", 23, NULL);
    n->opset = 23;
    n->inputs = ins;
    n->n_inputs = m->mask != KN_NONE ? 4 : 3;
    n->attrs = attrs;
    n->n_attrs = 3;
    /* the intermediate values die with their producers */
    for (uint32_t i = 0; i < m->n_dead; i++) {
        kn_node *d = &g->nodes[m->dead[i]];
        for (uint32_t j = 0; j < d->n_outputs; j++)
            if (d->outputs[j] != KN_NONE)
                kn_rw_orphan(g, d->outputs[j]);
        u->dead[m->dead[i]] = true;
    }
    return KN_OK;
}

kn_status kn_pass_fuse_attention(kn_graph *g, kn_diag *d)
{
    (void)d;
    if (!kn_rw_shapes_trusted(g))
        return KN_OK;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        match m;
        if (!u.dead[k] && match_at(g, &u, k, &m))
            s = fuse(g, &u, &m);
    }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
