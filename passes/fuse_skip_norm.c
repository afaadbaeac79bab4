/* Residual Add fused into the RMSNorm or LayerNorm that reads it:
 *
 *   s = Add(x, skip); y = RMSNormalization(s, scale)
 *     -> y, s = kiln.SkipRMSNorm(x, skip, scale)
 *   s = Add(x, skip); y = LayerNormalization(s, scale, [bias])
 *     -> y, s = kiln.SkipLayerNorm(x, skip, scale, [bias])
 *
 * (one kernel on target cuda: the add, the sum written, the statistics and
 * the scaled row). Runs after fuse-gemm, so the residuals cuBLASLt already
 * takes as a GEMM epilogue's C stay there; what is left are the Adds after
 * GEMMs without an epilogue (MatMulNBits, the int8 layers), after
 * attention, and the embedding + first norm. The sum stays an output of
 * the fused node when anything else reads it (the next residual Add) or it
 * is a graph output; otherwise it is dropped.
 *
 * Exact only: an ai.onnx Add of two float tensors of one dtype and
 * identical shapes (no broadcasting: every dim equal, static or the same
 * symbol) in the main graph; the norm reads the sum as X (and not as its
 * scale or bias), a LayerNormalization's Mean and InvStdDev unread; the
 * sum's other readers all come after the norm (the fused node takes its
 * place), and it is not read by a subgraph. */
#include "passes/fuse_match.h"
#include "passes/passes.h"

#include <string.h>

static bool same_shape(const kn_type *a, const kn_type *b)
{
    if (a->kind != KN_TYPE_TENSOR || b->kind != KN_TYPE_TENSOR || a->dtype != b->dtype || a->shape.rank < 0 ||
        a->shape.rank != b->shape.rank)
        return false;
    for (int32_t d = 0; d < a->shape.rank; d++) {
        const kn_dim *p = &a->shape.dims[d], *q = &b->shape.dims[d];
        bool stat = p->value >= 0 && !p->sym && q->value >= 0 && !q->sym;
        bool sym = p->sym && q->sym && p->sym == q->sym;
        if (!(stat ? p->value == q->value : sym))
            return false;
    }
    return true;
}

static bool is_output(const kn_graph *g, kn_id v)
{
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v)
            return true;
    return false;
}

/* Whether every live reader of v other than node `norm` comes after it. */
static bool readers_after(const kn_graph *g, const kn_uses *u, kn_id v, kn_id norm)
{
    for (kn_id k = 0; k < norm; k++) {
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; !u->dead[k] && i < n->n_inputs; i++)
            if (n->inputs[i] == v)
                return false;
    }
    return true;
}

static bool has_subgraphs(const kn_graph *g)
{
    for (kn_id k = 0; k < g->n_nodes; k++)
        if (kn_rw_has_subgraph(&g->nodes[k]))
            return true;
    return false;
}

static kn_status fuse_one(kn_graph *g, kn_uses *u, kn_id k, bool subgraphs)
{
    const kn_node *n = &g->nodes[k];
    bool layer = n->op == KN_OP_LayerNormalization;
    if (n->n_inputs < 2 || n->n_outputs < 1 || n->outputs[0] == KN_NONE || *n->domain || n->inputs[1] == KN_NONE)
        return KN_OK;
    /* LayerNormalization's Mean and InvStdDev: absent or unread */
    for (uint32_t i = 1; i < n->n_outputs; i++) {
        kn_id o = n->outputs[i];
        if (!layer || (o != KN_NONE && (u->readers[o] > 0 || u->pinned[o])))
            return KN_OK;
    }
    kn_id s = n->inputs[0], scale = n->inputs[1], y = n->outputs[0];
    kn_id bias = layer && n->n_inputs > 2 ? n->inputs[2] : KN_NONE;
    kn_id a = kn_fm_producer(g, u, s, KN_OP_Add);
    if (a == KN_NONE || u->dead[a] || scale == s || bias == s)
        return KN_OK;
    const kn_node *an = &g->nodes[a];
    if (an->n_inputs != 2 || an->inputs[0] == KN_NONE || an->inputs[1] == KN_NONE)
        return KN_OK;
    kn_id x = an->inputs[0], skip = an->inputs[1];
    const kn_type *tx = kn_rw_type(g, x), *ts = kn_rw_type(g, skip), *tsum = kn_rw_type(g, s);
    if (!tx || !ts || !tsum || !same_shape(tx, ts) || !same_shape(tx, tsum) ||
        kn_fm_float_dtype(g, x) == KN_UNDEFINED)
        return KN_OK;
    if (u->pinned[s] && (subgraphs || !is_output(g, s)))
        return KN_OK;
    if (!readers_after(g, u, s, k) || kn_rw_has_subgraph(an))
        return KN_OK;
    /* the norm's attributes (axis, epsilon, stash_type), not its origins */
    kn_attr at[8];
    uint32_t na = 0;
    for (uint32_t i = 0; i < n->n_attrs && na < 8; i++)
        if (strcmp(n->attrs[i].name, "_origins") != 0)
            at[na++] = n->attrs[i];
    for (uint32_t i = 1; i < n->n_outputs; i++)
        if (n->outputs[i] != KN_NONE)
            kn_rw_orphan(g, n->outputs[i]);
    kn_fm m = {{0}, 0};
    kn_fm_add(&m, a);
    kn_fm_add(&m, k);
    kn_id ins[4] = {x, skip, scale, bias};
    KN_TRY(kn_fm_replace(g, u, &m, y, layer ? KN_OP_KILN_SkipLayerNorm : KN_OP_KILN_SkipRMSNorm, 1, ins,
                         bias != KN_NONE ? 4 : 3, at, na));
    /* the sum, when still read or a graph output, becomes output 1 */
    if (u->readers[s] > 0 || u->pinned[s]) {
        kn_id *outs = kn_graph_alloc(g, 2 * sizeof *outs);
        if (!outs)
            return KN_ERR_NOMEM;
        outs[0] = y;
        outs[1] = s;
        g->nodes[a].outputs[0] = KN_NONE;
        g->nodes[k].outputs = outs;
        g->nodes[k].n_outputs = 2;
        g->values[s].producer = k;
        g->values[s].out_index = 1;
    }
    return KN_OK;
}

kn_status kn_pass_fuse_skip_norm(kn_graph *g, kn_diag *d)
{
    (void)d;
    if (!kn_rw_shapes_trusted(g))
        return KN_OK;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    bool subgraphs = has_subgraphs(g);
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++)
        if (!u.dead[k] && (g->nodes[k].op == KN_OP_RMSNormalization || g->nodes[k].op == KN_OP_LayerNormalization))
            s = fuse_one(g, &u, k, subgraphs);
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
