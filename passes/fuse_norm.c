/* LayerNormalization and RMSNorm fusion: the decomposed forms exporters
 * write become one ai.onnx LayerNormalization (opset 17) or
 * RMSNormalization (opset 23) over the last axis.
 *
 *   LayerNorm (torch):  m = ReduceMean(x); d = x - m; v = ReduceMean(d^2);
 *                       y = d / Sqrt(v + eps) [* gamma] [+ beta]
 *   LayerNorm (TF):     the same with d*d for d^2 and d * rsqrt, rsqrt as
 *                       Reciprocal(Sqrt(v + eps)), Pow(v + eps, -0.5) or
 *                       1 / Sqrt(v + eps)
 *   RMSNorm:            v = ReduceMean(x^2); y = x / Sqrt(v + eps) or
 *                       x * rsqrt [* weight]; Llama/Qwen2 exports of
 *                       float16/bfloat16 models wrap it in Cast to float32
 *                       and back before the weight.
 *
 * Exact only: both reductions over the last axis alone (axes [-1], or
 * [rank-1] where the rank is known) with keepdims; squares as Pow by the
 * constant 2 or a product of the value with itself; epsilon a constant
 * scalar; gamma, beta and the weight tensors of rank <= 1 (per channel)
 * of the input's dtype; no intermediate value read outside the pattern or
 * pinned. LayerNormalization requires a Scale: without gamma it gets a
 * constant [1] of ones, which broadcasts over the row. */
#include "passes/fuse_match.h"
#include "passes/passes.h"

#include <stdio.h>
#include <string.h>

/* A ReduceMean of v over the last axis only, keeping dims; its node. An
 * axis >= 0 is the last one when the input's rank says so; where that rank
 * is unknown (infer-shapes has no rule), it goes in *pend (-1: none) for
 * the caller to check against the rank of the pattern's input, which every
 * value of the pattern shares. */
static kn_id mean_last(const kn_graph *g, const kn_uses *u, kn_id v, int64_t *pend)
{
    kn_id k = kn_fm_producer(g, u, v, KN_OP_ReduceMean);
    if (k == KN_NONE)
        return KN_NONE;
    const kn_node *n = &g->nodes[k];
    const kn_attr *kd = kn_node_attr(n, "keepdims");
    if (kd && (kd->kind != KN_ATTR_INT || kd->u.i != 1))
        return KN_NONE;
    int64_t axes[2];
    size_t na = 0;
    if (n->opset >= 18) {
        if (!kn_rw_has_in(n, 1) || !kn_rw_const_ints(g, n->inputs[1], axes, 2, &na))
            return KN_NONE;
    } else {
        const kn_attr *a = kn_node_attr(n, "axes");
        if (!a || a->kind != KN_ATTR_INTS || a->n != 1)
            return KN_NONE;
        axes[0] = a->u.ints[0];
        na = 1;
    }
    if (na != 1 || axes[0] < -1)
        return KN_NONE;
    if (axes[0] == -1)
        return k;
    const kn_type *t = kn_rw_type(g, n->inputs[0]);
    if (t && t->shape.rank > 0 && kn_rw_shapes_trusted(g))
        return axes[0] == t->shape.rank - 1 ? k : KN_NONE;
    if (*pend >= 0 && *pend != axes[0])
        return KN_NONE;
    *pend = axes[0];
    return k;
}

/* Whether a pending positive axis (see mean_last) is the last of x. */
static bool pend_ok(const kn_graph *g, kn_id x, int64_t pend)
{
    if (pend < 0)
        return true;
    const kn_type *t = kn_rw_type(g, x);
    return t && kn_rw_shapes_trusted(g) && t->shape.rank == pend + 1;
}

/* v = c^2 as Pow(c, 2) or Mul(c, c): *c receives c. */
static kn_id square_of(const kn_graph *g, const kn_uses *u, kn_id v, kn_id *c)
{
    kn_id k = kn_fm_producer(g, u, v, KN_OP_Pow);
    if (k != KN_NONE && kn_fm_scalar_is(g, g->nodes[k].inputs[1], 2.0, 0)) {
        *c = g->nodes[k].inputs[0];
        return k;
    }
    k = kn_fm_producer(g, u, v, KN_OP_Mul);
    if (k != KN_NONE && g->nodes[k].inputs[0] == g->nodes[k].inputs[1]) {
        *c = g->nodes[k].inputs[0];
        return k;
    }
    return KN_NONE;
}

/* The statistics half: ve = ReduceMean(c^2) + eps. Adds its nodes to m;
 * *c and *eps receive the squared value and epsilon. */
static bool match_var(const kn_graph *g, const kn_uses *u, kn_id ve, kn_fm *m, kn_id *c, double *eps,
                      int64_t *pend)
{
    kn_id add = kn_fm_producer(g, u, ve, KN_OP_Add);
    if (add == KN_NONE)
        return false;
    const kn_node *an = &g->nodes[add];
    kn_id v = KN_NONE;
    for (int i = 0; i < 2 && v == KN_NONE; i++)
        if (kn_fm_scalar(g, an->inputs[1 - i], eps) && kn_rw_type(g, an->inputs[1 - i]) &&
            kn_fm_float_dtype(g, an->inputs[1 - i]) != KN_UNDEFINED)
            v = an->inputs[i];
    if (v == KN_NONE || *eps < 0)
        return false;
    kn_id rm = mean_last(g, u, v, pend);
    if (rm == KN_NONE)
        return false;
    kn_id sq = square_of(g, u, g->nodes[rm].inputs[0], c);
    if (sq == KN_NONE)
        return false;
    kn_fm_add(m, add);
    kn_fm_add(m, rm);
    kn_fm_add(m, sq);
    return true;
}

/* r = 1/sqrt(ve) as Reciprocal(Sqrt(ve)), Pow(ve, -0.5) or Div(1, Sqrt(ve)). */
static bool match_rsqrt(const kn_graph *g, const kn_uses *u, kn_id r, kn_fm *m, kn_id *ve)
{
    kn_id k = kn_fm_producer(g, u, r, KN_OP_Pow);
    if (k != KN_NONE && kn_fm_scalar_is(g, g->nodes[k].inputs[1], -0.5, 0)) {
        kn_fm_add(m, k);
        *ve = g->nodes[k].inputs[0];
        return true;
    }
    kn_id s = KN_NONE;
    if ((k = kn_fm_producer(g, u, r, KN_OP_Reciprocal)) != KN_NONE)
        s = g->nodes[k].inputs[0];
    else if ((k = kn_fm_producer(g, u, r, KN_OP_Div)) != KN_NONE && kn_fm_scalar_is(g, g->nodes[k].inputs[0], 1.0, 0))
        s = g->nodes[k].inputs[1];
    kn_id sq = s != KN_NONE ? kn_fm_producer(g, u, s, KN_OP_Sqrt) : KN_NONE;
    if (sq == KN_NONE)
        return false;
    kn_fm_add(m, k);
    kn_fm_add(m, sq);
    *ve = g->nodes[sq].inputs[0];
    return true;
}

/* The normalising node k: c / Sqrt(ve) or c * rsqrt(ve), where ve is the
 * mean of c^2 plus eps. *c receives c. */
static bool match_normalise(const kn_graph *g, const kn_uses *u, kn_id k, kn_fm *m, kn_id *c, double *eps,
                            int64_t *pend)
{
    const kn_node *n = &g->nodes[k];
    if (*n->domain || n->n_inputs != 2 || n->n_outputs != 1 || u->dead[k])
        return false;
    for (int i = 0; i < 2; i++) {
        kn_fm t = {0};
        kn_id ve, cand, sq;
        if (n->op == KN_OP_Div && i == 0) {
            if ((sq = kn_fm_producer(g, u, n->inputs[1], KN_OP_Sqrt)) == KN_NONE)
                continue;
            kn_fm_add(&t, sq);
            ve = g->nodes[sq].inputs[0];
            cand = n->inputs[0];
        } else if (n->op == KN_OP_Mul) {
            if (!match_rsqrt(g, u, n->inputs[1 - i], &t, &ve))
                continue;
            cand = n->inputs[i];
        } else {
            continue;
        }
        kn_id sc;
        *pend = -1;
        if (!match_var(g, u, ve, &t, &sc, eps, pend) || sc != cand)
            continue;
        for (uint32_t j = 0; j < t.n; j++)
            kn_fm_add(m, t.nodes[j]);
        kn_fm_add(m, k);
        *c = cand;
        return true;
    }
    return false;
}

/* The node after `v` that multiplies it by a per-channel tensor (op Mul)
 * or adds one (op Add): its id, *param the tensor. */
static kn_id channel_op(const kn_graph *g, const kn_uses *u, kn_id v, kn_op op, kn_dtype dt, kn_id *param)
{
    kn_id k = kn_fm_sole_reader(g, u, v, op);
    if (k == KN_NONE)
        return KN_NONE;
    kn_id p = kn_fm_other(&g->nodes[k], v);
    if (p == KN_NONE || p == v || !kn_fm_channel_param(g, p, dt))
        return KN_NONE;
    *param = p;
    return k;
}

/* A Cast of v to dtype `to` read only once: its node. */
static kn_id cast_reader(const kn_graph *g, const kn_uses *u, kn_id v, kn_dtype to)
{
    kn_id k = kn_fm_sole_reader(g, u, v, KN_OP_Cast);
    if (k == KN_NONE)
        return KN_NONE;
    const kn_attr *a = kn_node_attr(&g->nodes[k], "to");
    return a && a->kind == KN_ATTR_INT && a->u.i == (int64_t)to ? k : KN_NONE;
}

/* A constant [1] of ones in dtype dt: the Scale of a norm without one
 * (broadcast over the row). */
static kn_status ones(kn_graph *g, kn_uses *u, kn_id out, kn_dtype dt, kn_id *id)
{
    static const int64_t dims[1] = {1};
    uint8_t one[8] = {0};
    size_t sz = dt == KN_F64 ? 8 : dt == KN_F32 ? 4 : 2;
    if (dt == KN_F64)
        memcpy(one, &(double){1.0}, 8);
    else if (dt == KN_F32)
        memcpy(one, &(float){1.0f}, 4);
    else if (dt == KN_F16)
        one[1] = 0x3c; /* 0x3c00 */
    else
        one[1] = 0x3f, one[0] = 0x80; /* bfloat16 0x3f80 */
    char base[1024];
    snprintf(base, sizeof base, "%s/ones", g->values[out].name);
    return kn_rw_add_const(g, u, base, dt, 1, dims, one, sz, id);
}

static kn_status fuse_at(kn_graph *g, kn_uses *u, kn_id k, uint32_t *n_ln, uint32_t *n_rms)
{
    kn_fm m = {0};
    kn_id c;
    double eps;
    int64_t pend = -1;
    if (!match_normalise(g, u, k, &m, &c, &eps, &pend))
        return KN_OK;
    kn_dtype dt = kn_fm_float_dtype(g, c);
    if (dt == KN_UNDEFINED)
        return KN_OK;
    kn_id out = g->nodes[k].outputs[0];

    /* LayerNorm when c = x - ReduceMean(x) */
    kn_id sub = kn_fm_producer(g, u, c, KN_OP_Sub), rm = KN_NONE;
    if (sub != KN_NONE) {
        int64_t pend2 = pend;
        rm = mean_last(g, u, g->nodes[sub].inputs[1], &pend2);
        if (rm != KN_NONE && !pend_ok(g, g->nodes[sub].inputs[0], pend2))
            rm = KN_NONE;
        if (rm != KN_NONE && g->nodes[rm].inputs[0] != g->nodes[sub].inputs[0])
            rm = KN_NONE;
    }
    if (rm != KN_NONE) {
        kn_id x = g->nodes[sub].inputs[0], gamma = KN_NONE, beta = KN_NONE, j;
        kn_fm_add(&m, sub);
        kn_fm_add(&m, rm);
        if ((j = channel_op(g, u, out, KN_OP_Mul, dt, &gamma)) != KN_NONE) {
            kn_fm_add(&m, j);
            out = g->nodes[j].outputs[0];
            if ((j = channel_op(g, u, out, KN_OP_Add, dt, &beta)) != KN_NONE) {
                kn_fm_add(&m, j);
                out = g->nodes[j].outputs[0];
            }
        }
        if (!kn_fm_closed(g, u, &m, out))
            return KN_OK;
        if (gamma == KN_NONE) /* Scale is required */
            KN_TRY(ones(g, u, out, dt, &gamma));
        kn_attr at[2];
        KN_TRY(kn_fm_attr_i(g, "axis", -1, &at[0]));
        KN_TRY(kn_fm_attr_f(g, "epsilon", (float)eps, &at[1]));
        kn_id ins[3] = {x, gamma, beta};
        KN_TRY(kn_fm_replace(g, u, &m, out, KN_OP_LayerNormalization, 17, ins, beta == KN_NONE ? 2 : 3, at, 2));
        (*n_ln)++;
        return KN_OK;
    }

    /* RMSNorm of c, perhaps c = Cast(x0 -> float32) with a Cast back */
    kn_id x = c, w = KN_NONE, j;
    kn_fm wrapped = m;
    kn_id cin = kn_fm_producer(g, u, c, KN_OP_Cast);
    kn_dtype x0t = cin != KN_NONE ? kn_fm_float_dtype(g, g->nodes[cin].inputs[0]) : KN_UNDEFINED;
    kn_id cout = dt == KN_F32 && (x0t == KN_F16 || x0t == KN_BF16) ? cast_reader(g, u, out, x0t) : KN_NONE;
    if (cout != KN_NONE) {
        kn_id wout = g->nodes[cout].outputs[0];
        kn_fm_add(&wrapped, cin);
        kn_fm_add(&wrapped, cout);
        if ((j = channel_op(g, u, wout, KN_OP_Mul, x0t, &w)) != KN_NONE) {
            kn_fm_add(&wrapped, j);
            wout = g->nodes[j].outputs[0];
        }
        if (kn_fm_closed(g, u, &wrapped, wout)) {
            m = wrapped;
            x = g->nodes[cin].inputs[0];
            out = wout;
            dt = x0t;
        } else {
            w = KN_NONE;
        }
    }
    if (!pend_ok(g, x, pend))
        return KN_OK;
    if (x == c && (j = channel_op(g, u, out, KN_OP_Mul, dt, &w)) != KN_NONE) {
        kn_fm_add(&m, j);
        out = g->nodes[j].outputs[0];
    }
    if (!kn_fm_closed(g, u, &m, out))
        return KN_OK;
    if (w == KN_NONE)
        KN_TRY(ones(g, u, out, dt, &w));
    kn_attr at[3];
    KN_TRY(kn_fm_attr_i(g, "axis", -1, &at[0]));
    KN_TRY(kn_fm_attr_f(g, "epsilon", (float)eps, &at[1]));
    KN_TRY(kn_fm_attr_i(g, "stash_type", KN_F32, &at[2]));
    kn_id ins[2] = {x, w};
    KN_TRY(kn_fm_replace(g, u, &m, out, KN_OP_RMSNormalization, 23, ins, 2, at, 3));
    (*n_rms)++;
    return KN_OK;
}

kn_status kn_pass_fuse_norm(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    uint32_t n_ln = 0, n_rms = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        if (u.dead[k])
            continue;
        kn_op op = g->nodes[k].op;
        if (op != KN_OP_Div && op != KN_OP_Mul)
            continue;
        kn_status s = fuse_at(g, &u, k, &n_ln, &n_rms);
        if (s != KN_OK) {
            kn_uses_free(g, &u);
            return s;
        }
    }
    return kn_uses_finish(g, &u);
}
