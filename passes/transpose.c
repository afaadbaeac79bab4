/* Transpose merging: Transpose(p2) of Transpose(p1) of x is one Transpose
 * of x with perm p1∘p2 (out[i] = x[p1[p2[i]]]), and none at all when that
 * is the identity. Exporters write such pairs around layout changes
 * (NCHW ↔ NHWC, attention's head split and merge); each is a full copy of
 * the tensor. The first Transpose stays while something else reads it
 * (dce removes it otherwise). Transpose → Reshape chains are left alone:
 * they are equal to a plain Reshape only in cases this pass does not try
 * to prove. */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <stdio.h>
#include <string.h>

/* The perm of Transpose n (absent: reversed dims, needs the rank). */
static bool perm_of(const kn_graph *g, const kn_node *n, int64_t *p, size_t *np)
{
    const kn_attr *a = kn_node_attr(n, "perm");
    if (a) {
        if (a->kind != KN_ATTR_INTS || a->n > 64)
            return false;
        memcpy(p, a->u.ints, a->n * sizeof *p);
        *np = a->n;
        return true;
    }
    const kn_type *t = kn_rw_has_in(n, 0) && kn_rw_shapes_trusted(g) ? kn_rw_type(g, n->inputs[0]) : NULL;
    if (!t || t->shape.rank < 0 || t->shape.rank > 64)
        return false;
    *np = (size_t)t->shape.rank;
    for (size_t i = 0; i < *np; i++)
        p[i] = (int64_t)(*np - 1 - i);
    return true;
}

kn_status kn_pass_transpose(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        kn_node *n = &g->nodes[k];
        if (n->op != KN_OP_Transpose || !kn_rw_has_in(n, 0) || n->n_outputs < 1 || n->outputs[0] == KN_NONE)
            continue;
        const kn_value *mid = &g->values[n->inputs[0]];
        if (mid->kind != KN_VAL_NODE || g->nodes[mid->producer].op != KN_OP_Transpose)
            continue;
        const kn_node *p = &g->nodes[mid->producer];
        int64_t p1[64], p2[64], pc[64];
        size_t n1, n2;
        if (!kn_rw_has_in(p, 0) || !perm_of(g, p, p1, &n1) || !perm_of(g, n, p2, &n2) || n1 != n2)
            continue;
        bool ok = true, identity = true;
        for (size_t i = 0; i < n2 && ok; i++) {
            ok = p2[i] >= 0 && (size_t)p2[i] < n1 && p1[p2[i]] >= 0 && (size_t)p1[p2[i]] < n1;
            pc[i] = ok ? p1[p2[i]] : 0;
            identity = identity && pc[i] == (int64_t)i;
        }
        if (!ok)
            continue;
        kn_id x = p->inputs[0];
        if (identity) {
            if (kn_rw_bypass(g, &u, k, n->outputs[0], x))
                u.readers[g->nodes[k].inputs[0]]--;
            continue;
        }
        kn_attr a = {0};
        s = kn_graph_intern_cstr(g, "perm", &a.name);
        int64_t *ints = kn_graph_alloc(g, (n2 + 1) * sizeof *ints);
        if (s == KN_OK && !ints)
            s = KN_ERR_NOMEM;
        if (s != KN_OK)
            break;
        memcpy(ints, pc, n2 * sizeof *ints);
        a.kind = KN_ATTR_INTS;
        a.n = (uint32_t)n2;
        a.u.ints = ints;
        s = kn_rw_set_attr(g, n, &a);
        u.readers[n->inputs[0]]--;
        n->inputs[0] = x;
        u.readers[x]++;
    }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    /* the first Transposes nothing reads any more */
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (n->op == KN_OP_Transpose && !u.dead[k] && n->n_outputs == 1 && n->outputs[0] != KN_NONE &&
            !u.readers[n->outputs[0]] && !u.pinned[n->outputs[0]])
            u.dead[k] = true;
    }
    return kn_uses_finish(g, &u);
}
