/* Transpose / Reshape sinking and merging (docs/passes.md, "sink"):
 *  - a Transpose pushed down through a chain of elementwise ops (unary, or
 *    binary with a constant or all-ones other operand; constants are
 *    transposed at compile time) when the chain ends in another Transpose:
 *    the two merge into one (or none), so the count of Transposes drops;
 *  - Reshape → Reshape merged into one Reshape (0 entries of the second
 *    resolved against the first, allowzero respected);
 *  - a Transpose that moves only size-1 dims (the element order is kept)
 *    merged with the Reshape it feeds or that feeds it, when the static
 *    shapes prove it; a Reshape left giving its input's own shape goes.
 * Each rewrite needs the intermediate values read once (and not graph
 * outputs), so the nodes they replace really go away. */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <stdio.h>
#include <string.h>

#define MAX_RANK 64
#define MAX_CHAIN 64

/* The perm of Transpose n (absent: reversed dims, needs the rank). */
static bool perm_of(const kn_graph *g, const kn_node *n, int64_t *p, size_t *np)
{
    const kn_attr *a = kn_node_attr(n, "perm");
    if (a) {
        if (a->kind != KN_ATTR_INTS || a->n > MAX_RANK)
            return false;
        bool seen[MAX_RANK] = {0};
        for (uint32_t i = 0; i < a->n; i++) {
            if (a->u.ints[i] < 0 || a->u.ints[i] >= (int64_t)a->n || seen[a->u.ints[i]])
                return false;
            seen[a->u.ints[i]] = true;
            p[i] = a->u.ints[i];
        }
        *np = a->n;
        return true;
    }
    const kn_type *t = kn_rw_has_in(n, 0) && kn_rw_shapes_trusted(g) ? kn_rw_type(g, n->inputs[0]) : NULL;
    if (!t || t->shape.rank < 0 || t->shape.rank > MAX_RANK)
        return false;
    *np = (size_t)t->shape.rank;
    for (size_t i = 0; i < *np; i++)
        p[i] = (int64_t)(*np - 1 - i);
    return true;
}

static kn_status set_ints_attr(kn_graph *g, kn_node *n, const char *name, const int64_t *v, size_t nv)
{
    kn_attr a = {0};
    KN_TRY(kn_graph_intern_cstr(g, name, &a.name));
    int64_t *ints = kn_graph_alloc(g, (nv + 1) * sizeof *ints);
    if (!ints)
        return KN_ERR_NOMEM;
    memcpy(ints, v, nv * sizeof *ints);
    a.kind = KN_ATTR_INTS;
    a.n = (uint32_t)nv;
    a.u.ints = ints;
    return kn_rw_set_attr(g, n, &a);
}

/* The one live node reading v (through input *slot), or KN_NONE when v
 * is pinned or read by no node or more than one input. */
static kn_id only_reader(const kn_graph *g, const kn_uses *u, kn_id v, uint32_t *slot)
{
    if (u->pinned[v] || u->readers[v] != 1)
        return KN_NONE;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs && !u->dead[k]; i++)
            if (n->inputs[i] == v) {
                *slot = i;
                return k;
            }
    }
    return KN_NONE;
}

static bool is_unary(kn_op op)
{
    switch (op) {
    case KN_OP_Relu: case KN_OP_LeakyRelu: case KN_OP_Elu: case KN_OP_Selu: case KN_OP_Celu:
    case KN_OP_Sigmoid: case KN_OP_HardSigmoid: case KN_OP_HardSwish: case KN_OP_Tanh: case KN_OP_Exp:
    case KN_OP_Log: case KN_OP_Sqrt: case KN_OP_Reciprocal: case KN_OP_Neg: case KN_OP_Abs: case KN_OP_Erf:
    case KN_OP_Softplus: case KN_OP_Softsign: case KN_OP_Sin: case KN_OP_Cos: case KN_OP_Floor:
    case KN_OP_Ceil: case KN_OP_Round: case KN_OP_Sign: case KN_OP_Not: case KN_OP_Cast: case KN_OP_Gelu:
    case KN_OP_IsNaN: case KN_OP_IsInf: case KN_OP_Mish: case KN_OP_Clip:
        return true;
    default:
        return false;
    }
}

static bool is_binary(kn_op op)
{
    switch (op) {
    case KN_OP_Add: case KN_OP_Sub: case KN_OP_Mul: case KN_OP_Div: case KN_OP_Pow: case KN_OP_Equal:
    case KN_OP_Less: case KN_OP_Greater: case KN_OP_LessOrEqual: case KN_OP_GreaterOrEqual: case KN_OP_And:
    case KN_OP_Or: case KN_OP_Xor: case KN_OP_Max: case KN_OP_Min: case KN_OP_Mod:
        return true;
    default:
        return false;
    }
}

static bool all_ones(const kn_shape *s)
{
    for (int32_t i = 0; i < s->rank; i++)
        if (s->dims[i].value != 1)
            return false;
    return true;
}

/* Whether operand v of an elementwise node broadcasts the same way after
 * the transpose moves: a constant of rank <= r (transposed at compile
 * time unless all ones), or any value of known rank <= r whose dims are
 * all 1 (a scalar). */
static bool operand_ok(const kn_graph *g, kn_id v, size_t r)
{
    const kn_tensor *c = kn_rw_const(g, v);
    if (c)
        return c->rank >= 0 && (size_t)c->rank <= r && (c->n_elems == 0 || (c->nbytes && c->nbytes % (size_t)c->n_elems == 0));
    const kn_type *t = kn_rw_type(g, v);
    return t && t->shape.rank >= 0 && (size_t)t->shape.rank <= r && all_ones(&t->shape);
}

/* Whether node n is an elementwise op a Transpose of rank r moves through,
 * reading `v` at input slot `slot`. */
static bool elementwise_ok(const kn_graph *g, const kn_node *n, uint32_t slot, size_t r)
{
    if (*n->domain || n->n_outputs != 1 || n->outputs[0] == KN_NONE || kn_rw_has_subgraph(n))
        return false;
    if (is_unary(n->op)) {
        if (slot != 0)
            return false;
        for (uint32_t i = 1; i < n->n_inputs; i++) /* Clip's min / max: scalars */
            if (n->inputs[i] != KN_NONE && !operand_ok(g, n->inputs[i], 0))
                return false;
    } else if (is_binary(n->op) && n->n_inputs == 2) {
        if (!kn_rw_has_in(n, 1 - slot) || !operand_ok(g, n->inputs[1 - slot], r))
            return false;
    } else {
        return false;
    }
    const kn_type *t = kn_rw_type(g, n->outputs[0]);
    return !t || t->shape.rank < 0 || (size_t)t->shape.rank == r;
}

/* Constant c (rank <= r) as the rank-r constant c' with
 * Transpose(c', p) = c broadcast-wise: c'.dims[j] = c.dims[inv[j]]. */
static kn_status transpose_const(kn_graph *g, kn_uses *u, const kn_tensor *c, const int64_t *inv, size_t r,
                                 kn_id *out)
{
    int64_t al[MAX_RANK], nd[MAX_RANK], st[MAX_RANK];
    for (size_t i = 0; i < r; i++)
        al[i] = i < r - (size_t)c->rank ? 1 : c->dims[i - (r - (size_t)c->rank)];
    for (size_t j = 0; j < r; j++)
        nd[j] = al[inv[j]];
    int64_t acc = 1; /* strides of the aligned source */
    for (size_t i = r; i-- > 0;) {
        st[i] = acc;
        acc *= al[i];
    }
    size_t es = c->n_elems ? c->nbytes / (size_t)c->n_elems : 1;
    uint8_t *buf = kn_mem_alloc(g->alloc, c->nbytes + 1);
    if (!buf)
        return KN_ERR_NOMEM;
    int64_t idx[MAX_RANK] = {0};
    for (int64_t e = 0; e < c->n_elems; e++) {
        int64_t src = 0;
        for (size_t j = 0; j < r; j++)
            src += idx[j] * st[inv[j]];
        memcpy(buf + (size_t)e * es, (const uint8_t *)c->data + (size_t)src * es, es);
        for (size_t j = r; j-- > 0;) {
            if (++idx[j] < nd[j])
                break;
            idx[j] = 0;
        }
    }
    kn_status s = kn_rw_add_const(g, u, c->name ? c->name : "sink_const", c->dtype, (int32_t)r, nd, buf, c->nbytes,
                                  out);
    kn_mem_free(g->alloc, buf);
    return s;
}

/* Value v's shape with its dims permuted: dims[j] = old[inv[j]]. */
static kn_status permute_type(kn_graph *g, kn_id v, const int64_t *inv, size_t r)
{
    kn_type *t = &g->values[v].type;
    if (t->kind != KN_TYPE_TENSOR || t->shape.rank != (int32_t)r)
        return KN_OK;
    kn_dim *nd = kn_graph_alloc(g, (r + 1) * sizeof *nd);
    if (!nd)
        return KN_ERR_NOMEM;
    for (size_t j = 0; j < r; j++)
        nd[j] = t->shape.dims[inv[j]];
    t->shape.dims = nd;
    return KN_OK;
}

/* Transpose k (perm p) read by a chain of elementwise ops that ends in a
 * Transpose: the chain computes in k's input layout, k goes, and the last
 * Transpose takes both perms (or goes too when they cancel). */
static kn_status sink_transpose(kn_graph *g, kn_uses *u, kn_id k, bool *changed)
{
    int64_t p[MAX_RANK], p2[MAX_RANK], inv[MAX_RANK], pc[MAX_RANK];
    size_t r, r2;
    kn_node *t = &g->nodes[k];
    if (!kn_rw_has_in(t, 0) || t->n_outputs != 1 || t->outputs[0] == KN_NONE || !perm_of(g, t, p, &r))
        return KN_OK;
    kn_id chain[MAX_CHAIN];
    uint32_t slots[MAX_CHAIN], n = 0, slot;
    kn_id cur = t->outputs[0], end = KN_NONE;
    for (;;) {
        kn_id e = only_reader(g, u, cur, &slot);
        if (e == KN_NONE)
            return KN_OK;
        const kn_node *en = &g->nodes[e];
        if (en->op == KN_OP_Transpose && !*en->domain && slot == 0) {
            end = e;
            break;
        }
        if (n == MAX_CHAIN || !elementwise_ok(g, en, slot, r))
            return KN_OK;
        chain[n] = e;
        slots[n++] = slot;
        cur = en->outputs[0];
    }
    if (n == 0 || !perm_of(g, &g->nodes[end], p2, &r2) || r2 != r)
        return KN_OK; /* a plain pair: the transpose pass merges it */
    for (size_t i = 0; i < r; i++)
        inv[p[i]] = (int64_t)i;
    kn_id x = t->inputs[0], tv = t->outputs[0];
    for (uint32_t c = 0; c < n; c++) {
        kn_node *en = &g->nodes[chain[c]];
        if (is_binary(en->op)) {
            kn_id o = en->inputs[1 - slots[c]];
            const kn_tensor *ct = kn_rw_const(g, o);
            const kn_type *ot = kn_rw_type(g, o);
            if (ct && !(ot && all_ones(&ot->shape))) {
                kn_id nc;
                KN_TRY(transpose_const(g, u, ct, inv, r, &nc));
                en = &g->nodes[chain[c]];
                en->inputs[1 - slots[c]] = nc;
                u->readers[o]--;
                u->readers[nc]++;
            }
        }
        KN_TRY(permute_type(g, en->outputs[0], inv, r));
    }
    g->nodes[chain[0]].inputs[slots[0]] = x;
    u->readers[tv]--;
    u->readers[x]++;
    u->dead[k] = true;
    bool identity = true;
    for (size_t i = 0; i < r; i++) {
        pc[i] = p[p2[i]];
        identity = identity && pc[i] == (int64_t)i;
    }
    kn_node *tn = &g->nodes[end];
    if (identity) {
        if (kn_rw_bypass(g, u, end, tn->outputs[0], tn->inputs[0]))
            u->readers[tn->inputs[0]]--;
        else
            KN_TRY(set_ints_attr(g, tn, "perm", pc, r));
    } else {
        KN_TRY(set_ints_attr(g, tn, "perm", pc, r));
    }
    *changed = true;
    return KN_OK;
}

/* Whether Transpose perm p keeps the element order of a tensor of shape
 * s: the dims not known to be 1 stay in order (then it is a reshape). */
static bool keeps_order(const kn_shape *s, const int64_t *p, size_t r)
{
    if (s->rank != (int32_t)r)
        return false;
    int64_t last = -1;
    for (size_t i = 0; i < r; i++) {
        if (s->dims[p[i]].value == 1)
            continue;
        if (p[i] < last)
            return false;
        last = p[i];
    }
    return true;
}

static bool dims_equal(const kn_shape *a, const kn_shape *b)
{
    if (a->rank < 0 || a->rank != b->rank)
        return false;
    for (int32_t i = 0; i < a->rank; i++) {
        const kn_dim *x = &a->dims[i], *y = &b->dims[i];
        if (x->value >= 0 ? x->value != y->value : !(x->sym && y->sym && strcmp(x->sym, y->sym) == 0))
            return false;
    }
    return true;
}

static bool allowzero(const kn_node *n)
{
    const kn_attr *a = kn_node_attr(n, "allowzero");
    return a && a->kind == KN_ATTR_INT && a->u.i != 0;
}

/* Removes Reshape k when its output has its input's own shape. */
static void drop_if_identity(kn_graph *g, kn_uses *u, kn_id k)
{
    kn_node *n = &g->nodes[k];
    const kn_type *xt = kn_rw_type(g, n->inputs[0]), *yt = kn_rw_type(g, n->outputs[0]);
    if (!xt || !yt || xt->dtype != yt->dtype || !dims_equal(&xt->shape, &yt->shape))
        return;
    if (kn_rw_bypass(g, u, k, n->outputs[0], n->inputs[0]))
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE)
                u->readers[n->inputs[i]]--;
}

/* Reshape k now reads x in place of m (the output of a node that goes):
 * its 0 entries (copy the input's dim, allowzero off) are rewritten by
 * dim_of(i) (the dim m had: > 0, or -2 to keep the 0 because x has the
 * same dim there, or -1 unknown). *ok false (nothing changed) when that
 * cannot be proven. */
typedef int64_t (*dim_fn)(const kn_graph *g, const kn_node *src, const int64_t *p, size_t i);

static kn_status retarget_reshape(kn_graph *g, kn_uses *u, kn_id k, kn_id x, const kn_node *src,
                                  const int64_t *p, dim_fn dim_of, bool *ok)
{
    kn_node *n = &g->nodes[k];
    *ok = false;
    int64_t s[MAX_RANK];
    size_t ns = 0;
    bool rewritten = false;
    if (!allowzero(n)) {
        if (!kn_rw_const_ints(g, n->inputs[1], s, MAX_RANK, &ns))
            return KN_OK;
        for (size_t i = 0; i < ns; i++) {
            if (s[i] != 0)
                continue;
            int64_t v = dim_of(g, src, p, i);
            if (v == -1 || v == 0)
                return KN_OK;
            if (v > 0) {
                s[i] = v;
                rewritten = true;
            }
        }
    }
    if (rewritten) {
        kn_id nc;
        KN_TRY(kn_rw_add_const(g, u, "sink_shape", KN_I64, 1, (int64_t[]){(int64_t)ns}, s, ns * sizeof *s, &nc));
        n = &g->nodes[k];
        u->readers[n->inputs[1]]--;
        n->inputs[1] = nc;
        u->readers[nc]++;
    }
    kn_id m = n->inputs[0];
    n->inputs[0] = x;
    u->readers[m]--;
    u->readers[x]++;
    *ok = true;
    return KN_OK;
}

/* dim i of Reshape src's output, by its target (see retarget_reshape) */
static int64_t reshape_dim(const kn_graph *g, const kn_node *src, const int64_t *p, size_t i)
{
    (void)p;
    int64_t s[MAX_RANK];
    size_t ns;
    if (!allowzero(src) && kn_rw_const_ints(g, src->inputs[1], s, MAX_RANK, &ns) && i < ns) {
        if (s[i] > 0)
            return s[i];
        if (s[i] == 0)
            return -2; /* x's own dim i */
    }
    const kn_type *t = kn_rw_type(g, src->outputs[0]);
    return t && (size_t)t->shape.rank > i && t->shape.dims[i].value >= 0 ? t->shape.dims[i].value : -1;
}

/* dim i of Transpose src's output: x's dim p[i] */
static int64_t transpose_dim(const kn_graph *g, const kn_node *src, const int64_t *p, size_t i)
{
    const kn_type *t = kn_rw_type(g, src->inputs[0]);
    if (!t || t->shape.rank < 0 || (size_t)t->shape.rank <= i)
        return -1;
    if (p[i] == (int64_t)i)
        return -2;
    return t->shape.dims[p[i]].value >= 0 ? t->shape.dims[p[i]].value : -1;
}

/* Reshape k reading a Reshape or an order-keeping Transpose read only by
 * it: k reads that node's input, which goes. */
static kn_status merge_into_reshape(kn_graph *g, kn_uses *u, kn_id k, bool *changed)
{
    kn_node *n = &g->nodes[k];
    if (!kn_rw_has_in(n, 0) || !kn_rw_has_in(n, 1) || n->n_outputs != 1 || n->outputs[0] == KN_NONE)
        return KN_OK;
    kn_id m = n->inputs[0];
    const kn_value *mv = &g->values[m];
    uint32_t slot = 0;
    if (mv->kind != KN_VAL_NODE || u->dead[mv->producer] || only_reader(g, u, m, &slot) != k || slot != 0)
        return KN_OK;
    kn_id pk = mv->producer;
    const kn_node *src = &g->nodes[pk];
    if (*src->domain || !kn_rw_has_in(src, 0) || src->n_outputs != 1)
        return KN_OK;
    int64_t p[MAX_RANK] = {0};
    size_t r;
    bool ok = false;
    if (src->op == KN_OP_Reshape && kn_rw_has_in(src, 1)) {
        KN_TRY(retarget_reshape(g, u, k, src->inputs[0], src, p, reshape_dim, &ok));
    } else if (src->op == KN_OP_Transpose && perm_of(g, src, p, &r)) {
        const kn_type *xt = kn_rw_type(g, src->inputs[0]);
        if (xt && keeps_order(&xt->shape, p, r))
            KN_TRY(retarget_reshape(g, u, k, src->inputs[0], src, p, transpose_dim, &ok));
    }
    if (!ok)
        return KN_OK;
    u->dead[pk] = true;
    for (uint32_t i = 0; i < g->nodes[pk].n_inputs; i++)
        if (g->nodes[pk].inputs[i] != KN_NONE)
            u->readers[g->nodes[pk].inputs[i]]--;
    drop_if_identity(g, u, k);
    *changed = true;
    return KN_OK;
}

/* An order-keeping Transpose k reading Reshape R read only by it, with a
 * static output shape: R takes that shape and k goes. */
static kn_status merge_reshape_transpose(kn_graph *g, kn_uses *u, kn_id k, bool *changed)
{
    kn_node *t = &g->nodes[k];
    int64_t p[MAX_RANK], dims[MAX_RANK];
    size_t r;
    if (!kn_rw_has_in(t, 0) || t->n_outputs != 1 || t->outputs[0] == KN_NONE || !perm_of(g, t, p, &r))
        return KN_OK;
    kn_id m = t->inputs[0], y = t->outputs[0];
    const kn_value *mv = &g->values[m];
    uint32_t slot = 0;
    if (mv->kind != KN_VAL_NODE || u->dead[mv->producer] || only_reader(g, u, m, &slot) != k)
        return KN_OK;
    kn_id rk = mv->producer;
    const kn_node *rn = &g->nodes[rk];
    const kn_type *mt = kn_rw_type(g, m), *yt = kn_rw_type(g, y);
    if (rn->op != KN_OP_Reshape || *rn->domain || !kn_rw_has_in(rn, 0) || !kn_rw_has_in(rn, 1) || !mt || !yt ||
        !keeps_order(&mt->shape, p, r) || yt->shape.rank != (int32_t)r)
        return KN_OK;
    for (size_t i = 0; i < r; i++) {
        dims[i] = yt->shape.dims[i].value;
        if (dims[i] <= 0) /* symbolic, or 0 (needs allowzero) */
            return KN_OK;
    }
    if (u->pinned[y] && u->pinned[m]) /* kn_rw_bypass could not remove k */
        return KN_OK;
    kn_id nc;
    KN_TRY(kn_rw_add_const(g, u, "sink_shape", KN_I64, 1, (int64_t[]){(int64_t)r}, dims, r * sizeof *dims, &nc));
    kn_node *rw = &g->nodes[rk];
    u->readers[rw->inputs[1]]--;
    rw->inputs[1] = nc;
    u->readers[nc]++;
    g->values[m].type.shape = g->values[y].type.shape;
    if (!kn_rw_bypass(g, u, k, y, m)) /* checked above */
        return KN_ERR_INTERNAL;
    u->readers[m]--;
    drop_if_identity(g, u, rk);
    *changed = true;
    return KN_OK;
}

kn_status kn_pass_sink(kn_graph *g, kn_diag *d)
{
    (void)d;
    if (!kn_rw_shapes_trusted(g))
        return KN_OK;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    kn_status s = KN_OK;
    bool changed = true;
    for (int round = 0; changed && round < 4 && s == KN_OK; round++) {
        changed = false;
        for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
            const kn_node *n = &g->nodes[k];
            if (u.dead[k] || *n->domain)
                continue;
            if (n->op == KN_OP_Transpose) {
                s = sink_transpose(g, &u, k, &changed);
                if (s == KN_OK && !u.dead[k])
                    s = merge_reshape_transpose(g, &u, k, &changed);
            } else if (n->op == KN_OP_Reshape) {
                s = merge_into_reshape(g, &u, k, &changed);
            }
        }
    }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
