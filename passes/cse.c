/* Common-subexpression elimination: two nodes with the same op, domain,
 * opset, inputs and attributes compute the same values, so the later one
 * is removed and its readers read the earlier one's outputs. Exporters
 * repeat Shape/Gather chains and identical casts per layer; merging them
 * shrinks the graph before folding and fusion look at it. Nodes are visited
 * in topological order, so merges cascade (two chains on the same input
 * merge node by node). Random ops and nodes holding subgraphs are never
 * merged; a node whose outputs are graph outputs is kept (names stay). */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <string.h>

static bool random_op(kn_op op)
{
    return op == KN_OP_RandomNormal || op == KN_OP_RandomNormalLike || op == KN_OP_RandomUniform ||
           op == KN_OP_RandomUniformLike || op == KN_OP_Multinomial || op == KN_OP_Bernoulli ||
           op == KN_OP_Dropout;
}

static bool tensor_eq(const kn_tensor *a, const kn_tensor *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank || a->nbytes != b->nbytes || a->dtype == KN_STRING)
        return false;
    for (int32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0;
}

static bool attr_eq(const kn_attr *a, const kn_attr *b)
{
    if (a->name != b->name || a->kind != b->kind || a->n != b->n)
        return false;
    switch (a->kind) {
    case KN_ATTR_FLOAT:
        return memcmp(&a->u.f, &b->u.f, sizeof a->u.f) == 0;
    case KN_ATTR_INT:
        return a->u.i == b->u.i;
    case KN_ATTR_STRING:
        return a->u.s.len == b->u.s.len && memcmp(a->u.s.data, b->u.s.data, a->u.s.len) == 0;
    case KN_ATTR_FLOATS:
        return memcmp(a->u.floats, b->u.floats, a->n * sizeof(float)) == 0;
    case KN_ATTR_INTS:
        return memcmp(a->u.ints, b->u.ints, a->n * sizeof(int64_t)) == 0;
    case KN_ATTR_STRINGS:
        for (uint32_t i = 0; i < a->n; i++)
            if (a->u.strings[i].len != b->u.strings[i].len ||
                memcmp(a->u.strings[i].data, b->u.strings[i].data, a->u.strings[i].len) != 0)
                return false;
        return true;
    case KN_ATTR_TENSOR:
        return tensor_eq(a->u.t, b->u.t);
    default:
        return false; /* graphs, types: not compared */
    }
}

/* Same computation: attributes compared in any order. */
static bool node_eq(const kn_node *a, const kn_node *b)
{
    if (a->op_type != b->op_type || a->domain != b->domain || a->opset != b->opset || a->n_inputs != b->n_inputs ||
        a->n_outputs != b->n_outputs || a->n_attrs != b->n_attrs)
        return false;
    for (uint32_t i = 0; i < a->n_inputs; i++)
        if (a->inputs[i] != b->inputs[i])
            return false;
    for (uint32_t i = 0; i < a->n_attrs; i++) {
        bool found = false;
        for (uint32_t j = 0; j < b->n_attrs && !found; j++)
            found = attr_eq(&a->attrs[i], &b->attrs[j]);
        if (!found)
            return false;
    }
    return true;
}

static uint64_t node_hash(const kn_node *n)
{
    uint64_t h = 1469598103934665603ull;
    h = (h ^ (uintptr_t)n->op_type) * 1099511628211ull;
    h = (h ^ (uint64_t)n->opset) * 1099511628211ull;
    for (uint32_t i = 0; i < n->n_inputs; i++)
        h = (h ^ n->inputs[i]) * 1099511628211ull;
    return h;
}

kn_status kn_pass_cse(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    size_t cap = 16;
    while (cap < 2 * (size_t)g->n_nodes)
        cap *= 2;
    kn_id *tab = kn_mem_alloc(g->alloc, cap * sizeof *tab);
    if (!tab) {
        kn_uses_free(g, &u);
        return KN_ERR_NOMEM;
    }
    for (size_t i = 0; i < cap; i++)
        tab[i] = KN_NONE;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (random_op(n->op) || kn_rw_has_subgraph(n) || n->n_outputs == 0)
            continue;
        size_t slot = node_hash(n) & (cap - 1);
        for (; tab[slot] != KN_NONE; slot = (slot + 1) & (cap - 1))
            if (node_eq(&g->nodes[tab[slot]], n))
                break;
        if (tab[slot] == KN_NONE) {
            tab[slot] = k;
            continue;
        }
        const kn_node *m = &g->nodes[tab[slot]];
        bool ok = true;
        for (uint32_t i = 0; i < n->n_outputs && ok; i++) {
            kn_id y = n->outputs[i];
            ok = y == KN_NONE || (!u.pinned[y] && (u.readers[y] == 0 || m->outputs[i] != KN_NONE));
        }
        if (!ok)
            continue;
        for (uint32_t i = 0; i < n->n_outputs; i++)
            if (n->outputs[i] != KN_NONE && u.readers[n->outputs[i]] > 0)
                kn_rw_replace_uses(g, &u, n->outputs[i], m->outputs[i]);
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE)
                u.readers[n->inputs[i]]--;
        u.dead[k] = true;
    }
    kn_mem_free(g->alloc, tab);
    return kn_uses_finish(g, &u);
}
