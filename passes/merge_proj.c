/* Horizontal merge of the projections that read one input (an attention
 * layer's Q, K and V):
 *
 *   MatMul(x, W1) ... MatMul(x, Wn),  W_i constant [K, N_i]
 *     → Split(MatMul(x, [W1 | ... | Wn]), [N1 ... Nn], axis -1)
 *   GemmEpilogue(x, W_i, b_i) (MatMul form, a bias and nothing else:
 *   Qwen2's q/k/v biases after fuse-gemm) likewise, with [b1 | ... | bn]
 *
 * so a decode step reads x once and launches one product instead of n.
 * Exact: every column of the merged product is the dot product of its own
 * weight column (the same sums in the same order as before), the bias is
 * added per column at the same rounding point, and the Split writes the
 * original values. On target cuda a Split of the last axis is an alias
 * when every dim before it has extent 1 (one token of one sequence:
 * codegen/cuda/e_shape.c) and a copy per part otherwise (the prefill's
 * rows).
 *
 * Merged only when: the same input value, the same kind of node (all
 * MatMul, or all bias-only GemmEpilogue), one float dtype for x, the
 * weights, the biases and the products, the same K, every weight (and
 * bias) read by its node alone, and no product pinned (a graph output or
 * read by a subgraph). The merged constant replaces the members' (which
 * nothing reads any more): no weight byte is stored twice. */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <stdio.h>
#include <string.h>

#define KN_MERGE_MAX 16 /* members per merge */

typedef struct member {
    kn_id node;
    const kn_tensor *w, *b; /* b: NULL for MatMul */
    int64_t n;              /* N_i */
} member;

typedef struct pending_split {
    kn_id in;                   /* the merged product */
    kn_id outs[KN_MERGE_MAX];   /* the members' products */
    int64_t sizes[KN_MERGE_MAX];
    uint32_t n;
    const char *name;
} pending_split;

static bool float_dt(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

static kn_dtype dtype_of(const kn_graph *g, kn_id v)
{
    const kn_type *t = kn_rw_type(g, v);
    return t ? t->dtype : KN_UNDEFINED;
}

/* Whether node k is a projection this pass merges; fills *m. epi: a
 * bias-only GemmEpilogue, else a plain MatMul. */
static bool candidate(const kn_graph *g, const kn_uses *u, kn_id k, member *m, bool *epi)
{
    const kn_node *n = &g->nodes[k];
    if (u->dead[k] || n->n_outputs != 1 || n->outputs[0] == KN_NONE || u->pinned[n->outputs[0]] ||
        n->n_inputs < 2 || n->inputs[0] == KN_NONE || n->inputs[1] == KN_NONE)
        return false;
    if (n->op == KN_OP_MatMul && !*n->domain && n->n_inputs == 2) {
        *epi = false;
    } else if (n->op == KN_OP_KILN_GemmEpilogue && kn_node_attr_int(n, "gemm", 0) == 0 && kn_rw_has_in(n, 2) &&
               !kn_rw_has_in(n, 3) && n->n_inputs <= 4) {
        const kn_attr *act = kn_node_attr(n, "activation");
        if (act && (act->kind != KN_ATTR_STRING || act->u.s.len != 0))
            return false;
        *epi = true;
    } else {
        return false;
    }
    kn_id x = n->inputs[0];
    kn_dtype dt = dtype_of(g, x);
    const kn_type *xt = kn_rw_type(g, x);
    const kn_tensor *w = kn_rw_const(g, n->inputs[1]);
    if (!float_dt(dt) || !xt || xt->shape.rank < 1 || !w || w->rank != 2 || w->dtype != dt || w->nbytes == 0 ||
        u->readers[n->inputs[1]] != 1 || u->pinned[n->inputs[1]] || dtype_of(g, n->outputs[0]) != dt)
        return false;
    const kn_tensor *b = NULL;
    if (*epi) {
        b = kn_rw_const(g, n->inputs[2]);
        if (!b || b->dtype != dt || b->rank > 1 || (b->n_elems != w->dims[1] && b->n_elems != 1) ||
            u->readers[n->inputs[2]] != 1 || u->pinned[n->inputs[2]])
            return false;
    }
    *m = (member){k, w, b, w->dims[1]};
    return true;
}

/* The merged constant: rows of the members' weights side by side (or
 * their biases one after another, a one-value bias repeated). */
static kn_status merged_const(kn_graph *g, kn_uses *u, const member *ms, uint32_t n, bool bias, int64_t total,
                              kn_id *out)
{
    const kn_tensor *t0 = bias ? ms[0].b : ms[0].w;
    size_t es = kn_dtype_bits(t0->dtype) / 8;
    int64_t rows = bias ? 1 : t0->dims[0];
    size_t nbytes = (size_t)rows * (size_t)total * es;
    uint8_t *buf = kn_graph_alloc_uninit(g, nbytes);
    if (!buf)
        return KN_ERR_NOMEM;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *dst = buf + (size_t)r * (size_t)total * es;
        for (uint32_t i = 0; i < n; i++) {
            size_t row = (size_t)ms[i].n * es;
            if (!bias) {
                memcpy(dst, (const uint8_t *)ms[i].w->data + (size_t)r * row, row);
            } else if (ms[i].b->n_elems == ms[i].n) {
                memcpy(dst, ms[i].b->data, row);
            } else {
                for (int64_t c = 0; c < ms[i].n; c++)
                    memcpy(dst + (size_t)c * es, ms[i].b->data, es);
            }
            dst += row;
        }
    }
    char name[1024];
    int len = snprintf(name, sizeof name, "%s", g->values[g->nodes[ms[0].node].inputs[bias ? 2 : 1]].name);
    for (uint32_t i = 1; i < n && len > 0 && (size_t)len < sizeof name; i++)
        len += snprintf(name + len, sizeof name - (size_t)len, "|%s",
                        g->values[g->nodes[ms[i].node].inputs[bias ? 2 : 1]].name);
    int64_t dims[2] = {rows, total};
    return kn_rw_adopt_const(g, u, name, t0->dtype, bias ? 1 : 2, bias ? dims + 1 : dims, buf, nbytes, out);
}

/* Node ms[0] becomes the merged product (a new value: x's dims, then the
 * sum of the N_i); the others die; *ps records the Split to add. */
static kn_status merge(kn_graph *g, kn_uses *u, const member *ms, uint32_t n, bool epi, pending_split *ps)
{
    int64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total += ms[i].n;
    kn_id w, b = KN_NONE;
    KN_TRY(merged_const(g, u, ms, n, false, total, &w));
    if (epi)
        KN_TRY(merged_const(g, u, ms, n, true, total, &b));
    kn_id first = ms[0].node, x = g->nodes[first].inputs[0];
    const kn_type *xt = kn_rw_type(g, x);
    kn_value nv = {0};
    char base[1024];
    snprintf(base, sizeof base, "%s/merged", g->values[g->nodes[first].outputs[0]].name);
    KN_TRY(kn_rw_unique_name(g, base, &nv.name));
    nv.kind = KN_VAL_NODE;
    nv.producer = first;
    nv.type.kind = KN_TYPE_TENSOR;
    nv.type.dtype = xt->dtype;
    nv.type.shape.rank = xt->shape.rank;
    if (!(nv.type.shape.dims = kn_graph_alloc(g, (size_t)xt->shape.rank * sizeof(kn_dim))))
        return KN_ERR_NOMEM;
    memcpy(nv.type.shape.dims, xt->shape.dims, (size_t)xt->shape.rank * sizeof(kn_dim));
    nv.type.shape.dims[xt->shape.rank - 1] = (kn_dim){total, NULL};
    kn_id p;
    KN_TRY(kn_rw_add_value(g, u, &nv, &p));
    kn_bytes *orig = kn_graph_alloc(g, n * sizeof *orig);
    kn_node *fn = &g->nodes[first];
    kn_attr *at = kn_graph_alloc(g, (fn->n_attrs + 1) * sizeof *at);
    if (!orig || !at)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        const kn_node *mn = &g->nodes[ms[i].node];
        orig[i] = (kn_bytes){(const uint8_t *)(mn->name ? mn->name : ""), mn->name ? strlen(mn->name) : 0};
    }
    uint32_t na = 0;
    for (uint32_t i = 0; i < fn->n_attrs; i++) /* a GemmEpilogue's own _origins give way to the members' names */
        if (!fn->attrs[i].name || strcmp(fn->attrs[i].name, "_origins") != 0)
            at[na++] = fn->attrs[i];
    memset(&at[na], 0, sizeof *at);
    KN_TRY(kn_graph_intern_cstr(g, "_origins", &at[na].name));
    at[na].kind = KN_ATTR_STRINGS;
    at[na].n = n;
    at[na].u.strings = orig;
    fn->attrs = at;
    fn->n_attrs = na + 1;
    ps->in = p;
    ps->n = n;
    ps->name = fn->name;
    for (uint32_t i = 0; i < n; i++) {
        kn_node *mn = &g->nodes[ms[i].node];
        ps->outs[i] = mn->outputs[0];
        ps->sizes[i] = ms[i].n;
        for (uint32_t j = 0; j < mn->n_inputs; j++)
            if (mn->inputs[j] != KN_NONE)
                u->readers[mn->inputs[j]]--;
        if (i)
            u->dead[ms[i].node] = true;
    }
    fn = &g->nodes[first];
    fn->inputs[1] = w;
    if (epi)
        fn->inputs[2] = b;
    for (uint32_t j = 0; j < fn->n_inputs; j++)
        if (fn->inputs[j] != KN_NONE)
            u->readers[fn->inputs[j]]++;
    fn->outputs[0] = p;
    return KN_OK;
}

/* The Split node of ps: ai.onnx at the model's opset, at least 13 (the
 * sizes as an int64 input), axis -1. */
static kn_status split_node(kn_graph *g, kn_uses *u, const pending_split *ps, kn_node *out)
{
    memset(out, 0, sizeof *out);
    char name[1024];
    snprintf(name, sizeof name, "%s/split", ps->name ? ps->name : "merged");
    KN_TRY(kn_graph_intern_cstr(g, name, &out->name));
    KN_TRY(kn_graph_intern_cstr(g, "Split", &out->op_type));
    KN_TRY(kn_graph_intern_cstr(g, "", &out->domain));
    out->opset = 13;
    for (uint32_t i = 0; g->info && i < g->info->n_opsets; i++)
        if (kn_domain_of(g->info->opsets[i].domain) == KN_DOM_ONNX && g->info->opsets[i].version > out->opset)
            out->opset = g->info->opsets[i].version;
    out->op = kn_op_lookup("", "Split", out->opset, NULL);
    out->n_inputs = 2;
    out->inputs = kn_graph_alloc(g, 2 * sizeof(kn_id));
    out->outputs = kn_graph_alloc(g, ps->n * sizeof(kn_id));
    out->attrs = kn_graph_alloc(g, sizeof(kn_attr));
    if (!out->inputs || !out->outputs || !out->attrs)
        return KN_ERR_NOMEM;
    out->inputs[0] = ps->in;
    int64_t d = ps->n;
    KN_TRY(kn_rw_add_const(g, u, name, KN_I64, 1, &d, ps->sizes, (size_t)ps->n * sizeof(int64_t), &out->inputs[1]));
    out->n_outputs = ps->n;
    memcpy(out->outputs, ps->outs, ps->n * sizeof(kn_id));
    KN_TRY(kn_graph_intern_cstr(g, "axis", &out->attrs[0].name));
    out->attrs[0].kind = KN_ATTR_INT;
    out->attrs[0].u.i = -1;
    out->n_attrs = 1;
    return KN_OK;
}

/* The new node list: the live nodes in their order, each Split right
 * before the first node reading one of its outputs (its input, the merged
 * product, comes from a node before every such reader), unread ones at
 * the end; then every value's producer follows. */
static kn_status rebuild(kn_graph *g, const bool *dead, const kn_node *splits, uint32_t n_splits)
{
    uint32_t cap = g->n_nodes + n_splits + 1;
    kn_node *nodes = kn_mem_alloc(g->alloc, cap * sizeof *nodes);
    bool *placed = kn_mem_alloc(g->alloc, n_splits + 1);
    if (!nodes || !placed) {
        kn_mem_free(g->alloc, nodes);
        kn_mem_free(g->alloc, placed);
        return KN_ERR_NOMEM;
    }
    memset(placed, 0, n_splits + 1);
    uint32_t at = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        if (dead[k])
            continue;
        const kn_node *n = &g->nodes[k];
        for (uint32_t s = 0; s < n_splits; s++)
            for (uint32_t i = 0; !placed[s] && i < n->n_inputs; i++)
                for (uint32_t o = 0; !placed[s] && o < splits[s].n_outputs; o++)
                    if (n->inputs[i] == splits[s].outputs[o]) {
                        nodes[at++] = splits[s];
                        placed[s] = true;
                    }
        nodes[at++] = *n;
    }
    for (uint32_t s = 0; s < n_splits; s++)
        if (!placed[s])
            nodes[at++] = splits[s];
    kn_mem_free(g->alloc, placed);
    kn_status st = kn_mem_grow(g->alloc, (void **)&g->nodes, &g->cap_nodes, at + 1, sizeof *g->nodes);
    if (st == KN_OK) {
        memcpy(g->nodes, nodes, at * sizeof *nodes);
        g->n_nodes = at;
        for (kn_id k = 0; k < g->n_nodes; k++)
            for (uint32_t o = 0; o < g->nodes[k].n_outputs; o++)
                if (g->nodes[k].outputs[o] != KN_NONE) {
                    g->values[g->nodes[k].outputs[o]].producer = k;
                    g->values[g->nodes[k].outputs[o]].out_index = o;
                }
    }
    kn_mem_free(g->alloc, nodes);
    return st;
}

kn_status kn_pass_merge_proj(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    pending_split *ps = NULL;
    kn_node *splits = NULL;
    uint32_t n_ps = 0, cap_ps = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        member ms[KN_MERGE_MAX];
        bool epi, epi2;
        if (!candidate(g, &u, k, &ms[0], &epi))
            continue;
        kn_id x = g->nodes[k].inputs[0];
        uint32_t n = 1;
        for (kn_id j = k + 1; j < g->n_nodes && n < KN_MERGE_MAX; j++)
            if (g->nodes[j].n_inputs >= 2 && g->nodes[j].inputs[0] == x && candidate(g, &u, j, &ms[n], &epi2) &&
                epi2 == epi && ms[n].w->dims[0] == ms[0].w->dims[0])
                n++;
        if (n < 2)
            continue;
        if ((s = kn_mem_grow(g->alloc, (void **)&ps, &cap_ps, n_ps + 1, sizeof *ps)) != KN_OK)
            break;
        s = merge(g, &u, ms, n, epi, &ps[n_ps]);
        if (s == KN_OK)
            n_ps++;
    }
    if (s == KN_OK && n_ps) {
        splits = kn_mem_alloc(g->alloc, n_ps * sizeof *splits);
        s = splits ? KN_OK : KN_ERR_NOMEM;
        for (uint32_t i = 0; s == KN_OK && i < n_ps; i++)
            s = split_node(g, &u, &ps[i], &splits[i]);
        if (s == KN_OK)
            s = rebuild(g, u.dead, splits, n_ps);
    }
    kn_mem_free(g->alloc, ps);
    kn_mem_free(g->alloc, splits);
    kn_uses_free(g, &u);
    /* the members' weights and products' old producers are unread now */
    return s == KN_OK ? kn_graph_compact(g, NULL) : s;
}
