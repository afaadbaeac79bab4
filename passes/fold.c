/* Constant folding. A node whose inputs are all constants is run once, at
 * compile time, through the CPU reference kernel of its op (the numerical
 * oracle, so folding cannot change results) and its outputs become
 * constants. Shape and Size of values whose shape infer-shapes made fully
 * static fold too, so the Shape → Gather/Slice → Unsqueeze → Concat chains
 * exporters write around Reshape fold away. Where the shape is symbolic
 * (batch, seq), the chain is followed element by element: a Reshape target
 * whose symbolic elements are "dim i of the data itself" becomes a
 * constant target with 0 (ONNX: copy that dim) in those places, e.g.
 * [batch, seq, 12, 64] → [0, 0, 12, 64]; one element that stays unknown
 * becomes -1. Folding is size-limited so weights are not duplicated: an
 * output may be at most as large as the inputs (or tiny), and above 1 MiB
 * only when its inputs have no other reader. Random and sequence ops are
 * never folded; a kernel that fails leaves its node to report the error
 * at run time. */
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "ir/arena.h"
#include "runtime/cpu/exec.h"

#include <stdio.h>
#include <string.h>

enum {
    FOLD_SMALL = 4096,       /* bytes: outputs this small always fold */
    FOLD_MAX_SHARED = 1 << 20 /* bytes: above this, only when the inputs die */
};

/* ---- plain folding ---------------------------------------------------------- */

static bool foldable_op(const kn_node *n)
{
    switch (n->op) {
    case KN_OP_RandomNormal:
    case KN_OP_RandomNormalLike:
    case KN_OP_RandomUniform:
    case KN_OP_RandomUniformLike:
    case KN_OP_Multinomial:
    case KN_OP_Bernoulli:
    case KN_OP_Dropout: /* training_mode makes it random; noop removes the inference form */
        return false;
    default:
        break;
    }
    if (strncmp(n->op_type, "Sequence", 8) == 0 || strncmp(n->op_type, "Optional", 8) == 0 ||
        strcmp(n->op_type, "SplitToSequence") == 0 || strcmp(n->op_type, "ConcatFromSequence") == 0)
        return false;
    return n->n_inputs > 0 && !kn_rw_has_subgraph(n) && kn_cpu_kernel(n->op) != NULL;
}

/* Turns value v into a constant holding t's data (copied into the arena). */
static kn_status make_const(kn_graph *g, kn_id v, const kn_rt_tensor *t)
{
    kn_value *x = &g->values[v];
    kn_tensor *kt = kn_graph_alloc(g, sizeof *kt);
    int64_t *dims = kn_graph_alloc(g, ((size_t)t->rank + 1) * sizeof *dims);
    kn_dim *sd = kn_graph_alloc(g, ((size_t)t->rank + 1) * sizeof *sd);
    void *data = kn_graph_alloc(g, t->nbytes + 1);
    if (!kt || !dims || !sd || !data)
        return KN_ERR_NOMEM;
    for (int32_t i = 0; i < t->rank; i++) {
        dims[i] = t->dims[i];
        sd[i] = (kn_dim){t->dims[i], NULL};
    }
    memcpy(data, t->data, t->nbytes);
    *kt = (kn_tensor){x->name, t->dtype, t->rank, dims, t->numel, t->nbytes, data, false};
    x->kind = KN_VAL_CONST;
    x->tensor = kt;
    x->producer = KN_NONE;
    x->out_index = 0;
    x->type.kind = KN_TYPE_TENSOR;
    x->type.dtype = t->dtype;
    x->type.shape.rank = t->rank;
    x->type.shape.dims = sd;
    return KN_OK;
}

static void drop_inputs(kn_uses *u, const kn_node *n)
{
    for (uint32_t i = 0; i < n->n_inputs; i++)
        if (n->inputs[i] != KN_NONE)
            u->readers[n->inputs[i]]--;
}

/* Folds node k when every input is a constant and the size rules allow. */
static kn_status fold_node(kn_graph *g, kn_uses *u, kn_id k, bool *done)
{
    *done = false;
    const kn_node *n = &g->nodes[k];
    if (!foldable_op(n))
        return KN_OK;
    size_t in_bytes = 0;
    bool inputs_die = true;
    for (uint32_t i = 0; i < n->n_inputs; i++) {
        if (n->inputs[i] == KN_NONE)
            continue;
        const kn_tensor *t = kn_rw_const(g, n->inputs[i]);
        if (!t || t->dtype == KN_STRING)
            return KN_OK;
        in_bytes += t->nbytes;
        /* readers counts this node once per input slot that reads it */
        uint32_t here = 0;
        for (uint32_t j = 0; j < n->n_inputs; j++)
            here += n->inputs[j] == n->inputs[i];
        inputs_die = inputs_die && u->readers[n->inputs[i]] == here && !u->pinned[n->inputs[i]];
    }
    kn_rt_tensor **outs = kn_mem_alloc(g->alloc, ((size_t)n->n_outputs + 1) * sizeof *outs);
    kn_diag *quiet = kn_diag_create(g->alloc, NULL);
    if (!outs || !quiet) {
        kn_mem_free(g->alloc, outs);
        kn_diag_destroy(quiet);
        return KN_ERR_NOMEM;
    }
    kn_status s = kn_cpu_run_node(g, k, NULL, NULL, 0, outs, g->alloc, quiet);
    kn_diag_destroy(quiet);
    size_t out_bytes = 0;
    bool ok = s == KN_OK;
    for (uint32_t i = 0; ok && i < n->n_outputs; i++)
        if (outs[i]) {
            out_bytes += outs[i]->nbytes;
            ok = outs[i]->dtype != KN_STRING && outs[i]->flags == 0;
        }
    ok = ok && (out_bytes <= FOLD_SMALL ||
                (out_bytes <= in_bytes && (out_bytes <= FOLD_MAX_SHARED || inputs_die)));
    kn_status r = KN_OK;
    for (uint32_t i = 0; ok && r == KN_OK && i < n->n_outputs; i++)
        if (outs[i])
            r = make_const(g, n->outputs[i], outs[i]);
    for (uint32_t i = 0; i < n->n_outputs; i++)
        kn_rt_tensor_free(g->alloc, outs[i]);
    kn_mem_free(g->alloc, outs);
    if (s == KN_ERR_NOMEM)
        return s;
    if (ok && r == KN_OK) {
        drop_inputs(u, n);
        u->dead[k] = true;
        *done = true;
    }
    return r;
}

/* Shape / Size of a value whose shape is fully static. */
static kn_status fold_shape(kn_graph *g, kn_uses *u, kn_id k, bool *done)
{
    *done = false;
    const kn_node *n = &g->nodes[k];
    if ((n->op != KN_OP_Shape && n->op != KN_OP_Size) || !kn_rw_has_in(n, 0) || n->n_outputs < 1)
        return KN_OK;
    const kn_type *t = kn_rw_type(g, n->inputs[0]);
    if (!t || kn_shape_numel(&t->shape) < 0 || !kn_rw_shapes_trusted(g))
        return KN_OK;
    int64_t vals[64], r = t->shape.rank;
    int64_t nv;
    int64_t d1[1];
    kn_rt_tensor tmp = {KN_I64, 0, d1, 1, 8, vals, 0};
    if (n->op == KN_OP_Size) {
        vals[0] = kn_shape_numel(&t->shape);
        nv = 1;
    } else {
        const kn_attr *sa = kn_node_attr(n, "start"), *ea = kn_node_attr(n, "end");
        int64_t start = sa && sa->kind == KN_ATTR_INT ? sa->u.i : 0;
        int64_t end = ea && ea->kind == KN_ATTR_INT ? ea->u.i : r;
        start = start < 0 ? start + r : start;
        end = end < 0 ? end + r : end;
        start = start < 0 ? 0 : start > r ? r : start;
        end = end < 0 ? 0 : end > r ? r : end;
        nv = end > start ? end - start : 0;
        for (int64_t i = 0; i < nv; i++)
            vals[i] = t->shape.dims[start + i].value;
        tmp.rank = 1;
        d1[0] = nv;
        tmp.numel = nv;
        tmp.nbytes = (size_t)nv * 8;
    }
    KN_TRY(make_const(g, n->outputs[0], &tmp));
    drop_inputs(u, n);
    u->dead[k] = true;
    *done = true;
    return KN_OK;
}

/* ---- symbolic shape chains ---------------------------------------------------- */

/* One element of an int64 shape vector: the constant c, or dim `axis` of
 * value `src` (a symbolic dim: its size is known only at run time). */
typedef struct sym_elem {
    int64_t c;
    kn_id src;   /* KN_NONE: constant */
    int32_t axis;
} sym_elem;

typedef struct symvec {
    bool scalar; /* rank 0 (then n == 1) */
    uint32_t n;
    sym_elem e[64];
} symvec;

typedef struct sctx {
    kn_graph *g;
    kn_uses *u;
    kn_arena *scratch; /* the symvecs, freed when the pass ends */
    symvec **sv; /* per value id, NULL: not tracked */
    uint32_t n_sv;
} sctx;

/* v's shape vector: a tracked one, or built from a small integer constant. */
static bool get_sym(sctx *c, kn_id v, symvec *out)
{
    if (v == KN_NONE)
        return false;
    if (v < c->n_sv && c->sv[v]) {
        *out = *c->sv[v];
        return true;
    }
    const kn_tensor *t = kn_rw_const(c->g, v);
    int64_t vals[64];
    size_t n;
    if (!t || !kn_rw_const_ints(c->g, v, vals, 64, &n))
        return false;
    out->scalar = t->rank == 0;
    out->n = (uint32_t)n;
    for (size_t i = 0; i < n; i++)
        out->e[i] = (sym_elem){vals[i], KN_NONE, 0};
    return true;
}

static kn_status put_sym(sctx *c, kn_id v, const symvec *s)
{
    if (v == KN_NONE || v >= c->n_sv)
        return KN_OK;
    c->sv[v] = kn_arena_dup(c->scratch, s, sizeof *s);
    return c->sv[v] ? KN_OK : KN_ERR_NOMEM;
}

static bool attr_or_input_ints(sctx *c, const kn_node *n, const char *attr, uint32_t input, int64_t *out, size_t *cnt)
{
    const kn_attr *a = kn_node_attr(n, attr);
    if (a && a->kind == KN_ATTR_INTS && a->n <= 64) {
        memcpy(out, a->u.ints, a->n * sizeof *out);
        *cnt = a->n;
        return true;
    }
    if (kn_rw_has_in(n, input))
        return kn_rw_const_ints(c->g, n->inputs[input], out, 64, cnt);
    return false;
}

/* Follows Shape, Gather, Slice, Unsqueeze, Squeeze, Concat, Cast and
 * Identity over shape vectors; anything else ends the chain. */
static kn_status track(sctx *c, const kn_node *n)
{
    if (n->n_outputs < 1 || n->outputs[0] == KN_NONE)
        return KN_OK;
    kn_id out = n->outputs[0];
    symvec a, r;
    memset(&r, 0, sizeof r);
    switch (n->op) {
    case KN_OP_Shape: {
        const kn_type *t = kn_rw_type(c->g, kn_rw_has_in(n, 0) ? n->inputs[0] : KN_NONE);
        if (!t || t->shape.rank < 0 || t->shape.rank > 64)
            return KN_OK;
        int64_t rk = t->shape.rank;
        const kn_attr *sa = kn_node_attr(n, "start"), *ea = kn_node_attr(n, "end");
        int64_t start = sa && sa->kind == KN_ATTR_INT ? sa->u.i : 0;
        int64_t end = ea && ea->kind == KN_ATTR_INT ? ea->u.i : rk;
        start = start < 0 ? start + rk : start;
        end = end < 0 ? end + rk : end;
        start = start < 0 ? 0 : start > rk ? rk : start;
        end = end < 0 ? 0 : end > rk ? rk : end;
        for (int64_t i = start; i < end; i++) {
            kn_dim d = t->shape.dims[i];
            r.e[r.n++] = d.value >= 0 ? (sym_elem){d.value, KN_NONE, 0} : (sym_elem){0, n->inputs[0], (int32_t)i};
        }
        return put_sym(c, out, &r);
    }
    case KN_OP_Identity:
    case KN_OP_Cast:
        if (n->op == KN_OP_Cast) {
            const kn_attr *to = kn_node_attr(n, "to");
            if (!to || (to->u.i != KN_I64 && to->u.i != KN_I32))
                return KN_OK;
        }
        if (!kn_rw_has_in(n, 0) || !get_sym(c, n->inputs[0], &a))
            return KN_OK;
        return put_sym(c, out, &a);
    case KN_OP_Gather: {
        const kn_attr *ax = kn_node_attr(n, "axis");
        int64_t idx[64];
        size_t ni;
        const kn_tensor *it = kn_rw_has_in(n, 1) ? kn_rw_const(c->g, n->inputs[1]) : NULL;
        if ((ax && ax->u.i != 0) || !it || !get_sym(c, n->inputs[0], &a) || a.scalar ||
            !kn_rw_const_ints(c->g, n->inputs[1], idx, 64, &ni))
            return KN_OK;
        for (size_t i = 0; i < ni; i++) {
            int64_t j = idx[i] < 0 ? idx[i] + a.n : idx[i];
            if (j < 0 || j >= a.n)
                return KN_OK;
            r.e[r.n++] = a.e[j];
        }
        r.scalar = it->rank == 0;
        return put_sym(c, out, &r);
    }
    case KN_OP_Unsqueeze: {
        int64_t axes[64];
        size_t na;
        if (!get_sym(c, n->inputs[0], &a) || !a.scalar || !attr_or_input_ints(c, n, "axes", 1, axes, &na) ||
            na != 1 || (axes[0] != 0 && axes[0] != -1))
            return KN_OK;
        a.scalar = false;
        return put_sym(c, out, &a);
    }
    case KN_OP_Squeeze:
        if (!get_sym(c, n->inputs[0], &a) || a.scalar || a.n != 1)
            return KN_OK;
        a.scalar = true;
        return put_sym(c, out, &a);
    case KN_OP_Concat: {
        const kn_attr *ax = kn_node_attr(n, "axis");
        if (!ax || (ax->u.i != 0 && ax->u.i != -1))
            return KN_OK;
        for (uint32_t i = 0; i < n->n_inputs; i++) {
            if (!get_sym(c, n->inputs[i], &a) || a.scalar || r.n + a.n > 64)
                return KN_OK;
            for (uint32_t j = 0; j < a.n; j++)
                r.e[r.n++] = a.e[j];
        }
        return put_sym(c, out, &r);
    }
    case KN_OP_Slice: {
        int64_t st[64], en[64], ax[64] = {0}, sp[64] = {1};
        size_t ns, ne, na = 1, np = 1;
        if (!get_sym(c, n->inputs[0], &a) || a.scalar || !attr_or_input_ints(c, n, "starts", 1, st, &ns) ||
            !attr_or_input_ints(c, n, "ends", 2, en, &ne) || ns != 1 || ne != 1)
            return KN_OK;
        if ((kn_node_attr(n, "axes") || kn_rw_has_in(n, 3)) && (!attr_or_input_ints(c, n, "axes", 3, ax, &na) || na != 1))
            return KN_OK;
        if (kn_rw_has_in(n, 4) && (!kn_rw_const_ints(c->g, n->inputs[4], sp, 64, &np) || np != 1))
            return KN_OK;
        if ((ax[0] != 0 && ax[0] != -1) || sp[0] == 0)
            return KN_OK;
        int64_t len = a.n, s0 = st[0], e0 = en[0], step = sp[0];
        s0 = s0 < 0 ? s0 + len : s0;
        e0 = e0 < 0 ? e0 + len : e0;
        if (step > 0) {
            s0 = s0 < 0 ? 0 : s0 > len ? len : s0;
            e0 = e0 < 0 ? 0 : e0 > len ? len : e0;
            for (int64_t i = s0; i < e0; i += step)
                r.e[r.n++] = a.e[i];
        } else {
            s0 = s0 < 0 ? -1 : s0 > len - 1 ? len - 1 : s0;
            e0 = e0 < -1 ? -1 : e0 > len - 1 ? len - 1 : e0;
            for (int64_t i = s0; i > e0; i += step)
                r.e[r.n++] = a.e[i];
        }
        return put_sym(c, out, &r);
    }
    default:
        return KN_OK;
    }
}

/* Whether dim `axis` of value src is provably dim i of value data. */
static bool same_dim(const kn_graph *g, kn_id src, int32_t axis, kn_id data, int32_t i)
{
    if (src == data)
        return axis == i;
    const kn_type *a = kn_rw_type(g, src), *b = kn_rw_type(g, data);
    if (!a || !b || axis >= a->shape.rank || i >= b->shape.rank)
        return false;
    kn_dim x = a->shape.dims[axis], y = b->shape.dims[i];
    return x.value < 0 && y.value < 0 && x.sym && x.sym == y.sym;
}

/* Reshape whose target is a tracked, partly symbolic vector: replaced by a
 * constant target when every symbolic element is "copy dim i" (0), with at
 * most one other one left to -1. */
static kn_status fold_reshape_target(sctx *c, kn_id k)
{
    kn_graph *g = c->g;
    const kn_node *n = &g->nodes[k];
    if (n->op != KN_OP_Reshape || !kn_rw_has_in(n, 1) || kn_rw_const(g, n->inputs[1]))
        return KN_OK;
    const kn_attr *az = kn_node_attr(n, "allowzero");
    symvec t;
    const kn_type *dt = kn_rw_type(g, n->inputs[0]);
    if ((az && az->u.i != 0) || !dt || dt->shape.rank < 0 || !get_sym(c, n->inputs[1], &t) || t.scalar)
        return KN_OK;
    int64_t target[64];
    int n_unknown = 0, n_minus1 = 0, unknown_at = -1;
    for (uint32_t i = 0; i < t.n; i++) {
        const sym_elem *e = &t.e[i];
        if (e->src == KN_NONE) {
            target[i] = e->c;
            n_minus1 += e->c == -1;
            if (e->c == 0 && (int32_t)i >= dt->shape.rank)
                return KN_OK;
        } else if ((int32_t)i < dt->shape.rank && same_dim(g, e->src, e->axis, n->inputs[0], (int32_t)i)) {
            target[i] = 0;
        } else {
            n_unknown++;
            unknown_at = (int)i;
        }
    }
    if (n_unknown > 1 || (n_unknown == 1 && n_minus1 > 0))
        return KN_OK;
    if (unknown_at >= 0)
        target[unknown_at] = -1;
    int64_t dims[1] = {t.n};
    char base[1024];
    snprintf(base, sizeof base, "%s/shape", g->nodes[k].name);
    kn_id v;
    KN_TRY(kn_rw_add_const(g, c->u, base, KN_I64, 1, dims, target, (size_t)t.n * 8, &v));
    kn_node *m = &g->nodes[k];
    c->u->readers[m->inputs[1]]--;
    m->inputs[1] = v;
    c->u->readers[v]++;
    return KN_OK;
}

kn_status kn_pass_fold(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    sctx c = {g, &u, kn_arena_create(g->alloc), NULL, g->n_values};
    c.sv = kn_mem_alloc(g->alloc, ((size_t)c.n_sv + 1) * sizeof *c.sv);
    kn_status s = c.sv && c.scratch ? KN_OK : KN_ERR_NOMEM;
    if (c.sv)
        memset(c.sv, 0, ((size_t)c.n_sv + 1) * sizeof *c.sv);
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        bool done;
        s = fold_shape(g, &u, k, &done);
        if (s == KN_OK && !done)
            s = fold_node(g, &u, k, &done);
        if (s == KN_OK && !done && kn_rw_shapes_trusted(g))
            s = fold_reshape_target(&c, k);
        if (s == KN_OK && !done && kn_rw_shapes_trusted(g))
            s = track(&c, &g->nodes[k]);
    }
    kn_mem_free(g->alloc, c.sv);
    if (c.scratch)
        kn_arena_destroy(c.scratch);
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
