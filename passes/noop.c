/* No-op removal: nodes that hand their input on unchanged are removed and
 * their readers rewired to the input. Identity; Cast to the dtype the input
 * already has; Reshape whose constant target gives the input's own shape
 * (static dims equal, 0 = copy, one -1 in place of the only other dim);
 * Transpose with the identity perm; Dropout in inference (no training_mode
 * or a constant false one, mask output unread); Expand to a shape the input
 * already covers; Unsqueeze→Squeeze and Squeeze→Unsqueeze pairs on the same
 * axes. Exporters leave these behind (and fold leaves Reshape [0, 0, ...]);
 * each one would be a kernel launch and a copy. When the removed output is a
 * graph output, its producer writes that name directly (kn_rw_bypass), or,
 * if that is impossible, the node stays. */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <string.h>

static bool reshape_same(const kn_graph *g, const kn_node *n, const kn_type *x)
{
    const kn_attr *az = kn_node_attr(n, "allowzero");
    int64_t t[64];
    size_t nt;
    if (!kn_rw_has_in(n, 1) || !kn_rw_const_ints(g, n->inputs[1], t, 64, &nt) || (int64_t)nt != x->shape.rank)
        return false;
    int minus1 = -1;
    for (size_t i = 0; i < nt; i++) {
        kn_dim d = x->shape.dims[i];
        if (t[i] == 0 && !(az && az->u.i))
            continue; /* copies dim i */
        if (t[i] == -1 && minus1 < 0)
            minus1 = (int)i;
        else if (d.value < 0 || d.value != t[i])
            return false;
    }
    if (minus1 < 0)
        return true;
    /* -1 is the only dim left: it is dim minus1 when no other dim is 0 */
    for (size_t i = 0; i < nt; i++)
        if ((int)i != minus1 && x->shape.dims[i].value == 0)
            return false;
    return true;
}

static bool transpose_identity(const kn_node *n, const kn_type *x)
{
    const kn_attr *p = kn_node_attr(n, "perm");
    if (!p)
        return x && x->shape.rank >= 0 && x->shape.rank <= 1;
    for (uint32_t i = 0; i < p->n; i++)
        if (p->u.ints[i] != (int64_t)i)
            return false;
    return true;
}

static bool dropout_inference(const kn_graph *g, const kn_uses *u, const kn_node *n)
{
    if (n->n_outputs > 1 && n->outputs[1] != KN_NONE && (u->readers[n->outputs[1]] || u->pinned[n->outputs[1]]))
        return false;
    if (n->opset < 7) {
        const kn_attr *t = kn_node_attr(n, "is_test");
        return t && t->kind == KN_ATTR_INT && t->u.i != 0;
    }
    if (!kn_rw_has_in(n, 2))
        return true;
    const kn_tensor *t = kn_rw_const(g, n->inputs[2]);
    return t && t->dtype == KN_BOOL && t->n_elems == 1 && ((const uint8_t *)t->data)[0] == 0;
}

static bool expand_same(const kn_graph *g, const kn_node *n, const kn_type *x)
{
    int64_t s[64];
    size_t ns;
    if (!x || x->shape.rank < 0 || !kn_rw_has_in(n, 1) || !kn_rw_const_ints(g, n->inputs[1], s, 64, &ns) ||
        (int64_t)ns > x->shape.rank)
        return false;
    for (size_t i = 0; i < ns; i++) {
        kn_dim d = x->shape.dims[x->shape.rank - ns + i];
        if (s[i] != 1 && d.value != s[i])
            return false;
    }
    return true;
}

/* The sorted, non-negative axes of a Squeeze/Unsqueeze for a given rank. */
static bool axes_of(const kn_graph *g, const kn_node *n, int64_t rank, int64_t *ax, size_t *na)
{
    const kn_attr *a = kn_node_attr(n, "axes");
    if (a && a->kind == KN_ATTR_INTS && a->n <= 64) {
        memcpy(ax, a->u.ints, a->n * sizeof *ax);
        *na = a->n;
    } else if (!kn_rw_has_in(n, 1) || !kn_rw_const_ints(g, n->inputs[1], ax, 64, na)) {
        return false;
    }
    for (size_t i = 0; i < *na; i++) {
        ax[i] = ax[i] < 0 ? ax[i] + rank : ax[i];
        if (ax[i] < 0 || ax[i] >= rank)
            return false;
    }
    for (size_t i = 1; i < *na; i++) /* insertion sort */
        for (size_t j = i; j > 0 && ax[j - 1] > ax[j]; j--) {
            int64_t t = ax[j];
            ax[j] = ax[j - 1];
            ax[j - 1] = t;
        }
    return *na > 0;
}

/* n is Squeeze(Unsqueeze(x)) or Unsqueeze(Squeeze(x)) on the same axes:
 * the value x, else KN_NONE. */
static kn_id pair_source(const kn_graph *g, const kn_node *n)
{
    if (!kn_rw_has_in(n, 0))
        return KN_NONE;
    kn_id mid = n->inputs[0];
    const kn_value *mv = &g->values[mid];
    if (mv->kind != KN_VAL_NODE)
        return KN_NONE;
    const kn_node *p = &g->nodes[mv->producer];
    if (!kn_rw_has_in(p, 0) || !((n->op == KN_OP_Squeeze && p->op == KN_OP_Unsqueeze) ||
                                 (n->op == KN_OP_Unsqueeze && p->op == KN_OP_Squeeze)))
        return KN_NONE;
    /* both axis lists refer to the rank of the unsqueezed tensor */
    const kn_type *x = kn_rw_type(g, p->inputs[0]);
    if (!x || x->shape.rank < 0)
        return KN_NONE;
    int64_t a[64], b[64], rank = x->shape.rank;
    size_t na, nb;
    if (n->op == KN_OP_Squeeze) { /* x is the smaller one: add Unsqueeze's axis count */
        if (!axes_of(g, p, 64, b, &nb))
            return KN_NONE;
        rank += (int64_t)nb;
    }
    if (!axes_of(g, n, rank, a, &na) || !axes_of(g, p, rank, b, &nb) || na != nb ||
        memcmp(a, b, na * sizeof *a) != 0)
        return KN_NONE;
    return p->inputs[0];
}

kn_status kn_pass_noop(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (n->n_outputs < 1 || n->outputs[0] == KN_NONE || !kn_rw_has_in(n, 0) || *n->domain)
            continue;
        kn_id x = n->inputs[0], y = n->outputs[0];
        const kn_type *xt = kn_rw_type(g, x), *xs = kn_rw_shapes_trusted(g) ? xt : NULL;
        bool same = false;
        switch (n->op) {
        case KN_OP_Identity:
            same = g->values[x].type.kind == KN_TYPE_TENSOR || g->values[x].type.kind == KN_TYPE_UNKNOWN;
            break;
        case KN_OP_Cast: {
            const kn_attr *to = kn_node_attr(n, "to");
            same = xt && to && to->kind == KN_ATTR_INT && to->u.i == xt->dtype;
            break;
        }
        case KN_OP_Reshape:
            same = xs && xs->shape.rank >= 0 && reshape_same(g, n, xs);
            break;
        case KN_OP_Transpose:
            same = transpose_identity(n, xs);
            break;
        case KN_OP_Dropout:
            same = dropout_inference(g, &u, n);
            break;
        case KN_OP_Expand:
            same = expand_same(g, n, xs);
            break;
        case KN_OP_Squeeze:
        case KN_OP_Unsqueeze:
            x = kn_rw_shapes_trusted(g) ? pair_source(g, n) : KN_NONE;
            same = x != KN_NONE;
            break;
        default:
            break;
        }
        if (same && x != y && kn_rw_bypass(g, &u, k, y, x))
            for (uint32_t i = 0; i < n->n_inputs; i++)
                if (n->inputs[i] != KN_NONE)
                    u.readers[n->inputs[i]]--;
    }
    return kn_uses_finish(g, &u);
}
