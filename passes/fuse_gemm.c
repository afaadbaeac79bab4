/* GEMM epilogue fusion.
 *
 *   MatMul(A, B[K, N]) [+ bias] [-> act] [+ residual]
 *   Gemm(A, B, C?)            [-> act] [+ residual]
 *     → kiln GemmEpilogue(A, B, bias?, residual?)
 *   bias: an Add of a float constant of rank <= 1 holding N or 1 values
 *         (broadcast along the last axis); for Gemm its own C.
 *   act:  Relu, Clip (constant bounds), Gelu (erf / tanh), kiln Silu,
 *         HardSigmoid, HardSwish, Sigmoid, Tanh, LeakyRelu; a Reshape
 *         between the product and the activation (GPT-2's Gemm on the
 *         flattened tokens) is moved after it first.
 *   residual: an Add of any other tensor of the dtype (broadcast as Add).
 *   A Gemm between Reshape(h) to [rows, K] and a Reshape back to h's
 *   leading dims (GPT-2's Conv1D) becomes the Gemm over h's rows.
 *
 * and, before that, the Llama/Qwen2 MLP's two projections:
 *
 *   SwiGlu(MatMul(x, Wg), MatMul(x, Wu)), Wg and Wu constant [K, N]
 *     → SwiGlu(MatMul(x, [Wg | Wu]))  (SwiGlu's packed form)
 *
 * Exact: the fused kernel rounds where the unfused nodes round
 * (runtime/cpu/k_fused_gemm.c), and each column of the packed product is
 * the product of its own weight column. Only fused when every
 * intermediate value is read by the pattern alone and is not pinned. */
#include "passes/fuse_match.h"
#include "passes/passes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static bool float_dt(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

/* The value's dims when its shape is known to rank r (constants always;
 * declared types only where shapes are trusted). */
static bool dims_of(const kn_graph *g, kn_id v, int32_t r, int64_t *out)
{
    const kn_tensor *t = kn_rw_const(g, v);
    if (t) {
        if (t->rank != r)
            return false;
        memcpy(out, t->dims, (size_t)r * sizeof *out);
        return true;
    }
    const kn_type *ty = kn_rw_type(g, v);
    if (!ty || !kn_rw_shapes_trusted(g) || ty->shape.rank != r)
        return false;
    for (int32_t i = 0; i < r; i++)
        if ((out[i] = ty->shape.dims[i].value) < 0)
            return false;
    return true;
}

/* The one live reader of v (read once, not pinned), any op or domain. */
static kn_id sole_reader(const kn_graph *g, const kn_uses *u, kn_id v)
{
    if (v == KN_NONE || u->readers[v] != 1 || u->pinned[v])
        return KN_NONE;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        if (u->dead[k])
            continue;
        for (uint32_t i = 0; i < g->nodes[k].n_inputs; i++)
            if (g->nodes[k].inputs[i] == v)
                return k;
    }
    return KN_NONE;
}

static kn_dtype dtype_of(const kn_graph *g, kn_id v)
{
    const kn_type *t = kn_rw_type(g, v);
    return t ? t->dtype : KN_UNDEFINED;
}

/* ---- horizontal: SwiGlu(MatMul(x, Wg), MatMul(x, Wu)) ---- */

static kn_id mm_const_2d(const kn_graph *g, const kn_uses *u, kn_id v, const kn_tensor **w)
{
    kn_id k = kn_fm_producer(g, u, v, KN_OP_MatMul);
    if (k == KN_NONE || u->readers[v] != 1 || u->pinned[v] || g->nodes[k].n_inputs != 2)
        return KN_NONE;
    const kn_tensor *t = kn_rw_const(g, g->nodes[k].inputs[1]);
    if (!t || t->rank != 2 || !float_dt(t->dtype) || t->nbytes == 0)
        return KN_NONE;
    *w = t;
    return k;
}

static kn_status merge_swiglu(kn_graph *g, kn_uses *u, kn_id s, uint32_t *count)
{
    kn_node *sn = &g->nodes[s];
    if (sn->n_inputs != 2 || sn->n_outputs != 1 || sn->inputs[0] == KN_NONE || sn->inputs[1] == KN_NONE)
        return KN_OK;
    const kn_tensor *wg, *wu;
    kn_id kg = mm_const_2d(g, u, sn->inputs[0], &wg), ku = mm_const_2d(g, u, sn->inputs[1], &wu);
    if (kg == KN_NONE || ku == KN_NONE || kg == ku)
        return KN_OK;
    kn_id x = g->nodes[kg].inputs[0];
    if (g->nodes[ku].inputs[0] != x || wg->dtype != wu->dtype || wg->dims[0] != wu->dims[0] ||
        wg->dims[1] != wu->dims[1] || dtype_of(g, x) != wg->dtype)
        return KN_OK;
    int64_t kdim = wg->dims[0], n = wg->dims[1];
    size_t es = kn_dtype_bits(wg->dtype) / 8, row = (size_t)n * es;
    uint8_t *buf = kn_graph_alloc_uninit(g, 2 * wg->nbytes);
    if (!buf)
        return KN_ERR_NOMEM;
    for (int64_t r = 0; r < kdim; r++) {
        memcpy(buf + (size_t)r * 2 * row, (const uint8_t *)wg->data + (size_t)r * row, row);
        memcpy(buf + (size_t)r * 2 * row + row, (const uint8_t *)wu->data + (size_t)r * row, row);
    }
    char base[1024];
    snprintf(base, sizeof base, "%s|up", g->values[g->nodes[kg].inputs[1]].name);
    int64_t wd[2] = {kdim, 2 * n};
    kn_id w;
    KN_TRY(kn_rw_adopt_const(g, u, base, wg->dtype, 2, wd, buf, 2 * wg->nbytes, &w));
    /* the packed product: x's leading dims, then 2N */
    kn_value nv = {0};
    snprintf(base, sizeof base, "%s|up", g->values[sn->inputs[0]].name);
    KN_TRY(kn_rw_unique_name(g, base, &nv.name));
    nv.kind = KN_VAL_NODE;
    nv.producer = kg;
    nv.type.kind = KN_TYPE_TENSOR;
    nv.type.dtype = wg->dtype;
    nv.type.shape.rank = -1;
    const kn_type *xt = kn_rw_type(g, x);
    if (xt && xt->shape.rank >= 1) {
        nv.type.shape.rank = xt->shape.rank;
        if (!(nv.type.shape.dims = kn_graph_alloc(g, (size_t)xt->shape.rank * sizeof(kn_dim))))
            return KN_ERR_NOMEM;
        memcpy(nv.type.shape.dims, xt->shape.dims, (size_t)xt->shape.rank * sizeof(kn_dim));
        nv.type.shape.dims[xt->shape.rank - 1] = (kn_dim){2 * n, NULL};
    }
    kn_id p;
    KN_TRY(kn_rw_add_value(g, u, &nv, &p));
    /* the packed MatMul takes the later slot (both reads of x are there) */
    kn_id slot = kg > ku ? kg : ku, other = kg > ku ? ku : kg;
    kn_node *mn = &g->nodes[slot];
    kn_bytes *orig = kn_graph_alloc(g, 2 * sizeof *orig);
    kn_attr *at = kn_graph_alloc(g, (mn->n_attrs + 1) * sizeof *at);
    if (!orig || !at)
        return KN_ERR_NOMEM;
    const kn_node *ng = &g->nodes[kg], *nu = &g->nodes[ku];
    orig[0] = (kn_bytes){(const uint8_t *)(ng->name ? ng->name : ""), ng->name ? strlen(ng->name) : 0};
    orig[1] = (kn_bytes){(const uint8_t *)(nu->name ? nu->name : ""), nu->name ? strlen(nu->name) : 0};
    if (mn->n_attrs)
        memcpy(at, mn->attrs, mn->n_attrs * sizeof *at);
    memset(&at[mn->n_attrs], 0, sizeof *at);
    KN_TRY(kn_graph_intern_cstr(g, "_origins", &at[mn->n_attrs].name));
    at[mn->n_attrs].kind = KN_ATTR_STRINGS;
    at[mn->n_attrs].n = 2;
    at[mn->n_attrs].u.strings = orig;
    mn->attrs = at;
    mn->n_attrs++;
    u->readers[mn->inputs[1]]--;
    mn->inputs[1] = w;
    u->readers[w]++;
    mn->outputs[0] = p;
    g->values[p].producer = slot;
    g->values[p].out_index = 0;
    /* the other projection goes */
    for (uint32_t i = 0; i < g->nodes[other].n_inputs; i++)
        if (g->nodes[other].inputs[i] != KN_NONE)
            u->readers[g->nodes[other].inputs[i]]--;
    u->dead[other] = true;
    /* SwiGlu reads the packed product */
    sn = &g->nodes[s];
    kn_rw_orphan(g, sn->inputs[0]);
    kn_rw_orphan(g, sn->inputs[1]);
    u->readers[sn->inputs[0]]--;
    u->readers[sn->inputs[1]]--;
    sn->inputs[0] = p;
    sn->inputs[1] = KN_NONE;
    sn->n_inputs = 1;
    u->readers[p]++;
    (*count)++;
    return KN_OK;
}

/* ---- vertical: product + bias + activation + residual ---- */

typedef struct act_match {
    const char *name;
    float a, b;
} act_match;

/* A constant Clip bound of dtype dt, representable as a float attribute. */
static bool clip_bound(const kn_graph *g, const kn_node *n, uint32_t i, kn_dtype dt, float def, float *out)
{
    *out = def;
    if (!kn_rw_has_in(n, i))
        return true;
    const kn_tensor *t = kn_rw_const(g, n->inputs[i]);
    double v;
    if (!t || t->dtype != dt || !kn_fm_scalar(g, n->inputs[i], &v))
        return false;
    *out = (float)v;
    return (double)*out == v;
}

/* Whether node k is an activation the epilogue runs (on dtype dt). */
static bool activation(const kn_graph *g, kn_id k, kn_dtype dt, act_match *am)
{
    const kn_node *n = &g->nodes[k];
    if (n->n_outputs != 1 || n->n_inputs < 1 || kn_rw_has_subgraph(n))
        return false;
    am->a = am->b = 0;
    if (n->op == KN_OP_KILN_Silu) {
        am->name = "silu";
        return n->n_inputs == 1;
    }
    if (*n->domain)
        return false;
    const kn_attr *at;
    switch (n->op) {
    case KN_OP_Relu: am->name = "relu"; return n->n_inputs == 1;
    case KN_OP_Sigmoid: am->name = "sigmoid"; return n->n_inputs == 1;
    case KN_OP_Tanh: am->name = "tanh"; return n->n_inputs == 1;
    case KN_OP_HardSwish: am->name = "hardswish"; return n->n_inputs == 1;
    case KN_OP_LeakyRelu:
        am->name = "leakyrelu";
        am->a = (at = kn_node_attr(n, "alpha")) && at->kind == KN_ATTR_FLOAT ? at->u.f : 0.01f;
        return n->n_inputs == 1;
    case KN_OP_HardSigmoid:
        am->name = "hardsigmoid";
        am->a = (at = kn_node_attr(n, "alpha")) && at->kind == KN_ATTR_FLOAT ? at->u.f : 0.2f;
        am->b = (at = kn_node_attr(n, "beta")) && at->kind == KN_ATTR_FLOAT ? at->u.f : 0.5f;
        return n->n_inputs == 1;
    case KN_OP_Gelu: {
        at = kn_node_attr(n, "approximate");
        const char *s = at && at->kind == KN_ATTR_STRING ? (const char *)at->u.s.data : "none";
        size_t len = at && at->kind == KN_ATTR_STRING ? at->u.s.len : 4;
        if (len == 4 && memcmp(s, "none", 4) == 0)
            am->name = "gelu";
        else if (len == 4 && memcmp(s, "tanh", 4) == 0)
            am->name = "gelu_tanh";
        else
            return false;
        return n->n_inputs == 1;
    }
    case KN_OP_Clip:
        am->name = "clip";
        if (n->opset < 11) {
            am->a = (at = kn_node_attr(n, "min")) && at->kind == KN_ATTR_FLOAT ? at->u.f : -INFINITY;
            am->b = (at = kn_node_attr(n, "max")) && at->kind == KN_ATTR_FLOAT ? at->u.f : INFINITY;
            return n->n_inputs == 1;
        }
        return n->n_inputs <= 3 && clip_bound(g, n, 1, dt, -INFINITY, &am->a) &&
               clip_bound(g, n, 2, dt, INFINITY, &am->b);
    default: return false;
    }
}

/* Reshape R (reading `cur` only there) followed by activation X (reading
 * R's output only there) becomes X then R: elementwise ops commute with
 * a reshape. Returns X's new slot (R's) or KN_NONE. */
static kn_id hoist_activation(kn_graph *g, kn_uses *u, kn_id cur, kn_dtype dt, act_match *am)
{
    kn_id r = kn_fm_sole_reader(g, u, cur, KN_OP_Reshape);
    if (r == KN_NONE || g->nodes[r].n_outputs != 1 || g->nodes[r].inputs[0] != cur)
        return KN_NONE;
    kn_id v1 = g->nodes[r].outputs[0];
    kn_id x = sole_reader(g, u, v1);
    if (x == KN_NONE || g->nodes[x].inputs[0] != v1 || !activation(g, x, dt, am))
        return KN_NONE;
    for (uint32_t i = 1; i < g->nodes[x].n_inputs; i++)
        if (g->nodes[x].inputs[i] == v1)
            return KN_NONE;
    kn_id y = g->nodes[x].outputs[0];
    const kn_type *ct = kn_rw_type(g, cur);
    if (!ct)
        return KN_NONE;
    kn_node rn = g->nodes[r], xn = g->nodes[x];
    xn.inputs[0] = cur;
    xn.outputs[0] = v1;
    rn.inputs[0] = v1;
    rn.outputs[0] = y;
    g->nodes[r] = xn;
    g->nodes[x] = rn;
    g->values[v1].type = *ct;
    g->values[y].producer = x;
    g->values[v1].producer = r;
    return r;
}

/* Whether two dims are the same: equal numbers or the same symbol. */
static bool same_dim(kn_dim a, kn_dim b) { return a.value >= 0 ? a.value == b.value : a.sym && a.sym == b.sym; }

/* Gemm k (transA = 0) reading Reshape(h) to [rows, K] and read by one
 * Reshape back to h's leading dims and N (torch's Linear on 3-D input as
 * GPT-2's Conv1D exports it): the Gemm over h's rows. Adds both Reshapes
 * to m and returns h, *out the second Reshape's output; else KN_NONE. */
static kn_id unflatten(const kn_graph *g, const kn_uses *u, kn_id k, kn_fm *m, kn_id *out)
{
    const kn_node *n = &g->nodes[k];
    const kn_attr *ta = kn_node_attr(n, "transA");
    if ((ta && ta->kind == KN_ATTR_INT && ta->u.i) || !kn_rw_shapes_trusted(g))
        return KN_NONE;
    kn_id r1 = kn_fm_producer(g, u, n->inputs[0], KN_OP_Reshape);
    kn_id r2 = kn_fm_sole_reader(g, u, n->outputs[0], KN_OP_Reshape);
    if (r1 == KN_NONE || r2 == KN_NONE || u->readers[n->inputs[0]] != 1 || u->pinned[n->inputs[0]] ||
        g->nodes[r2].inputs[0] != n->outputs[0])
        return KN_NONE;
    kn_id h = g->nodes[r1].inputs[0], y = g->nodes[r2].outputs[0];
    const kn_type *ht = kn_rw_type(g, h), *at = kn_rw_type(g, n->inputs[0]), *yt = kn_rw_type(g, y);
    const kn_type *bt = kn_rw_type(g, n->inputs[1]);
    if (!ht || !at || !yt || !bt || ht->shape.rank < 3 || ht->shape.rank > 8 || at->shape.rank != 2 ||
        bt->shape.rank != 2 || yt->shape.rank != ht->shape.rank)
        return KN_NONE;
    int32_t r = ht->shape.rank;
    const kn_attr *tb = kn_node_attr(n, "transB");
    kn_dim kd = ht->shape.dims[r - 1], nd = bt->shape.dims[tb && tb->kind == KN_ATTR_INT && tb->u.i ? 0 : 1];
    /* [.., K] -> [rows, K] is the row flattening whatever the target said */
    if (kd.value < 0 || at->shape.dims[1].value != kd.value || !same_dim(yt->shape.dims[r - 1], nd))
        return KN_NONE;
    for (int32_t i = 0; i < r - 1; i++)
        if (!same_dim(yt->shape.dims[i], ht->shape.dims[i]))
            return KN_NONE;
    kn_fm_add(m, r1);
    kn_fm_add(m, r2);
    *out = y;
    return h;
}

static kn_status fuse_chain(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    const kn_node *pn = &g->nodes[k];
    bool gemm = pn->op == KN_OP_Gemm;
    if (*pn->domain || pn->n_outputs != 1 || pn->n_inputs < 2 || pn->inputs[0] == KN_NONE ||
        pn->inputs[1] == KN_NONE)
        return KN_OK;
    kn_dtype dt = dtype_of(g, pn->inputs[0]);
    if (!float_dt(dt) || dtype_of(g, pn->inputs[1]) != dt)
        return KN_OK;
    int64_t bd[2];
    if (!gemm && (pn->n_inputs != 2 || !dims_of(g, pn->inputs[1], 2, bd)))
        return KN_OK;
    kn_fm m = {0};
    kn_fm_add(&m, k);
    kn_id cur = pn->outputs[0], bias = gemm && kn_rw_has_in(pn, 2) ? pn->inputs[2] : KN_NONE, res = KN_NONE, j;
    if (gemm && bias != KN_NONE && dtype_of(g, bias) != dt)
        return KN_OK;
    kn_id a_in = pn->inputs[0], y2;
    if (gemm && (j = unflatten(g, u, k, &m, &y2)) != KN_NONE) {
        a_in = j;
        cur = y2;
    }
    /* bias: Add(product, constant [N] or [1]) */
    if (!gemm && (j = kn_fm_sole_reader(g, u, cur, KN_OP_Add)) != KN_NONE) {
        kn_id o = kn_fm_other(&g->nodes[j], cur);
        const kn_tensor *t = o != KN_NONE ? kn_rw_const(g, o) : NULL;
        if (t && o != cur && t->dtype == dt && t->rank <= 1 && (t->n_elems == bd[1] || t->n_elems == 1)) {
            bias = o;
            kn_fm_add(&m, j);
            cur = g->nodes[j].outputs[0];
        }
    }
    act_match am = {"", 0, 0};
    bool has_act = false;
    kn_id x = sole_reader(g, u, cur);
    if (x != KN_NONE && g->nodes[x].inputs[0] == cur && activation(g, x, dt, &am)) {
        has_act = true;
    } else if (kn_fm_closed(g, u, &m, cur) && (x = hoist_activation(g, u, cur, dt, &am)) != KN_NONE) {
        has_act = true;
    }
    if (has_act) {
        for (uint32_t i = 1; i < g->nodes[x].n_inputs; i++)
            if (g->nodes[x].inputs[i] == cur)
                has_act = false;
    }
    if (has_act) {
        kn_fm_add(&m, x);
        cur = g->nodes[x].outputs[0];
    }
    /* residual: Add(y, r) with r of the dtype */
    if ((j = kn_fm_sole_reader(g, u, cur, KN_OP_Add)) != KN_NONE) {
        kn_id o = kn_fm_other(&g->nodes[j], cur);
        if (o != KN_NONE && o != cur && dtype_of(g, o) == dt) {
            res = o;
            kn_fm_add(&m, j);
            cur = g->nodes[j].outputs[0];
        }
    }
    if (m.n < 2 || !kn_fm_closed(g, u, &m, cur))
        return KN_OK;
    kn_attr at[8];
    uint32_t na = 0;
    pn = &g->nodes[k];
    KN_TRY(kn_fm_attr_i(g, "gemm", gemm ? 1 : 0, &at[na++]));
    KN_TRY(kn_fm_attr_s(g, "activation", has_act ? am.name : "", &at[na++]));
    if (has_act && am.a != 0)
        KN_TRY(kn_fm_attr_f(g, "act_alpha", am.a, &at[na++]));
    if (has_act && am.b != 0)
        KN_TRY(kn_fm_attr_f(g, "act_beta", am.b, &at[na++]));
    if (gemm) {
        static const char *const copy[] = {"alpha", "beta", "transA", "transB"};
        for (size_t i = 0; i < 4; i++) {
            const kn_attr *a = kn_node_attr(pn, copy[i]);
            if (a)
                at[na++] = *a;
        }
    }
    kn_id ins[4] = {a_in, pn->inputs[1], bias, res};
    KN_TRY(kn_fm_replace(g, u, &m, cur, KN_OP_KILN_GemmEpilogue, 1, ins, res != KN_NONE ? 4 : bias != KN_NONE ? 3 : 2,
                         at, na));
    (*count)++;
    return KN_OK;
}

kn_status kn_pass_fuse_gemm(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    uint32_t n_merged = 0, n_fused = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++)
        if (!u.dead[k] && g->nodes[k].op == KN_OP_KILN_SwiGlu)
            s = merge_swiglu(g, &u, k, &n_merged);
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++)
        if (!u.dead[k] && (g->nodes[k].op == KN_OP_MatMul || g->nodes[k].op == KN_OP_Gemm))
            s = fuse_chain(g, &u, k, &n_fused);
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
