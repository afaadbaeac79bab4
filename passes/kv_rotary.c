/* The kv-rotary pass: a kiln.PagedAttention whose Q and new K each come
 * from a kiln.RotaryHalf (passes/fuse_rotary.c) takes the rotation over.
 * The node reads the unrotated Q and K, gains the rotaries' cos and sin as
 * inputs 4 and 5 (input 3, the mask, stays where it was, or is absent) and
 * the attribute rotary = 1; both RotaryHalf nodes go. Its kernels rotate
 * the new tokens' K before appending them to the cache and Q before the
 * scores, with RotaryHalf's arithmetic and rounding (computed in double,
 * rounded once to Q's dtype), so the result is the unfused graph's to the
 * bit; on target cuda the rotation is part of the append kernel (no
 * RotaryHalf launches).
 *
 * Fused only what is proved from the graph:
 *   - Q and K are each a RotaryHalf's output read by nothing else (the
 *     attention reads each once, neither is a graph output);
 *   - both RotaryHalf nodes read the same cos value and the same sin value;
 *   - Q's and K's inputs are float32 of rank 4 with every dim known
 *     (static or symbolic) and cos/sin of their dtype, with rank 1 to 4;
 *   - aligned to [batch, heads, seq, head_dim] from the right, cos and sin
 *     are 1 on the heads axis (the same rotation for Q's and K's heads) and
 *     on the other axes 1 or the same dim as both Q's and K's input (same
 *     static value or same symbol), so they broadcast without growing x:
 *     each RotaryHalf's output had its x's shape, which the node reads.
 * Anything else (a Q rotary without a K one, other cos/sin, a rotary
 * output read elsewhere, a per-head cos) is left as it is. Runs after
 * kv-mask (which drops input 3 of the node it proves causal). */
#include "passes/fuse_match.h"
#include "passes/passes.h"

#include <string.h>

#define MAX_ATTRS 16

/* The live kiln.RotaryHalf producing v, read by exactly one node input and
 * not pinned, or KN_NONE. */
static kn_id rotary_of(const kn_graph *g, const kn_uses *u, kn_id v)
{
    if (v == KN_NONE || v >= g->n_values || g->values[v].kind != KN_VAL_NODE || u->readers[v] != 1 ||
        u->pinned[v])
        return KN_NONE;
    kn_id k = g->values[v].producer;
    if (k == KN_NONE || u->dead[k])
        return KN_NONE;
    const kn_node *n = &g->nodes[k];
    if (n->op != KN_OP_KILN_RotaryHalf || n->n_inputs != 3 || n->n_outputs != 1 || !kn_rw_has_in(n, 0) ||
        !kn_rw_has_in(n, 1) || !kn_rw_has_in(n, 2))
        return KN_NONE;
    return k;
}

/* Whether dims a and b are known to be equal: the same static value, or
 * the same symbol. */
static bool same_dim(const kn_dim *a, const kn_dim *b)
{
    if (a->value >= 0 || b->value >= 0)
        return a->value == b->value;
    return a->sym && b->sym && strcmp(a->sym, b->sym) == 0;
}

static bool known_rank4(const kn_type *t)
{
    if (!t || t->dtype != KN_F32 || t->shape.rank != 4)
        return false;
    for (int i = 0; i < 4; i++)
        if (t->shape.dims[i].value < 0 && !t->shape.dims[i].sym)
            return false;
    return true;
}

/* Whether table c (cos or sin) broadcasts over xq and xk as the kernels
 * read it: see the file comment. */
static bool table_fits(const kn_type *c, const kn_type *xq, const kn_type *xk)
{
    if (!c || c->dtype != xq->dtype || c->shape.rank < 1 || c->shape.rank > 4)
        return false;
    for (int a = 0; a < 4; a++) {
        int ca = a - (4 - c->shape.rank);
        if (ca < 0)
            continue;
        const kn_dim *d = &c->shape.dims[ca];
        if (d->value == 1)
            continue;
        if (a == 1)
            return false; /* per-head tables: Q and K heads would differ */
        if (!same_dim(d, &xq->shape.dims[a]) || !same_dim(d, &xk->shape.dims[a]))
            return false;
    }
    return true;
}

static kn_status fuse_one(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    const kn_node *n = &g->nodes[k];
    const kn_attr *rot = kn_node_attr(n, "rotary");
    if ((rot && !(rot->kind == KN_ATTR_INT && rot->u.i == 0)) || n->n_inputs < 3 || n->n_inputs > 4 ||
        n->n_outputs != 1 || n->n_attrs >= MAX_ATTRS || n->inputs[0] == n->inputs[1])
        return KN_OK;
    kn_id rq = rotary_of(g, u, n->inputs[0]), rk = rotary_of(g, u, n->inputs[1]);
    if (rq == KN_NONE || rk == KN_NONE || rq == rk)
        return KN_OK;
    const kn_node *q = &g->nodes[rq], *kk = &g->nodes[rk];
    if (q->inputs[1] != kk->inputs[1] || q->inputs[2] != kk->inputs[2])
        return KN_OK;
    kn_id cos = q->inputs[1], sin = q->inputs[2];
    if (!kn_rw_shapes_trusted(g))
        return KN_OK;
    const kn_type *xq = kn_rw_type(g, q->inputs[0]), *xk = kn_rw_type(g, kk->inputs[0]);
    if (!known_rank4(xq) || !known_rank4(xk) || !table_fits(kn_rw_type(g, cos), xq, xk) ||
        !table_fits(kn_rw_type(g, sin), xq, xk))
        return KN_OK;
    /* the node's own attributes (less _origins, which the replacement
     * rebuilds from all three nodes) and rotary = 1 */
    kn_attr at[MAX_ATTRS];
    uint32_t na = 0;
    for (uint32_t i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, "_origins") != 0 && strcmp(n->attrs[i].name, "rotary") != 0)
            at[na++] = n->attrs[i];
    KN_TRY(kn_fm_attr_i(g, "rotary", 1, &at[na++]));
    kn_id ins[6] = {q->inputs[0], kk->inputs[0], n->inputs[2], kn_rw_has_in(n, 3) ? n->inputs[3] : KN_NONE, cos, sin};
    kn_fm m = {0};
    kn_fm_add(&m, rq);
    kn_fm_add(&m, rk);
    kn_fm_add(&m, k);
    KN_TRY(kn_fm_replace(g, u, &m, n->outputs[0], KN_OP_KILN_PagedAttention, n->opset, ins, 6, at, na));
    (*count)++;
    return KN_OK;
}

kn_status kn_pass_kv_rotary(kn_graph *g, kn_diag *d)
{
    if (g->parent)
        return KN_OK;
    bool any = false;
    for (kn_id k = 0; k < g->n_nodes && !any; k++)
        any = g->nodes[k].op == KN_OP_KILN_PagedAttention;
    if (!any)
        return KN_OK;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    uint32_t n = 0, total = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++)
        if (!u.dead[k] && g->nodes[k].op == KN_OP_KILN_PagedAttention) {
            total++;
            s = fuse_one(g, &u, k, &n);
        }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    KN_TRY(kn_uses_finish(g, &u));
    if (n)
        kn_diag_add(d, KN_NOTE, "%s: kv-rotary: %u of %u PagedAttention nodes rotate Q and K themselves",
                    g->info && g->info->path ? g->info->path : "<graph>", n, total);
    return KN_OK;
}
