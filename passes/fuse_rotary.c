/* Rotary position embedding fusion: the rotate-half form Llama/Qwen2
 * exports write,
 *
 *   x * cos + Concat(Neg(Slice(x, h:)), Slice(x, :h), axis -1) * sin
 *
 * (h = d / 2 on x's last axis, d its size) becomes one kiln RotaryHalf(x,
 * cos, sin). The Add's and the Muls' operands in either order; cos and sin
 * are whatever the graph computed (any values, any shape that broadcasts,
 * as the Muls did), kept as the fused node's inputs.
 *
 * Why not ai.onnx RotaryEmbedding (opset 23): it takes half-width caches
 * [.., d/2] indexed by position_ids and applies the same cos/sin to both
 * halves; the exported graph multiplies by full-width cos/sin tensors
 * whose two halves are equal only by construction (Concat(freqs, freqs)
 * upstream), which nothing here proves. RotaryHalf is exact for any cos
 * and sin.
 *
 * The half h is accepted as a constant [h] when x's last dim d is known
 * statically and h = floor(d / 2), or as the exporter's shape chain
 * Unsqueeze(Div(Gather(Shape(x), last), 2), [0]) (integer Div, so floor
 * for d >= 0). The first half's Slice: starts [0], ends h; the second's:
 * starts h, ends a constant >= d (or >= 2^31 - 1 when d is unknown); both
 * on the last axis (-1, or rank - 1 with x's rank proven), steps absent or
 * [1]; both read x itself. Concat on the last axis with the negated second
 * half first.
 *
 * Not fused: a Slice not at floor(d / 2), a Slice or Concat on another
 * axis, the Neg on the first half, an intermediate value read outside the
 * pattern or a graph output, non-float x. Numerics: the kernels compute in
 * double and round once where the unfused graph rounds after each Mul: equal
 * within float rounding. */
#include "passes/fuse_match.h"
#include "passes/passes.h"

#include <string.h>

static const kn_node *live_producer(const kn_graph *g, const kn_uses *u, kn_id v, kn_op op)
{
    kn_id k = kn_fm_producer(g, u, v, op);
    return k == KN_NONE ? NULL : &g->nodes[k];
}

/* x's rank: its type's, a constant's, or a Transpose's perm length; -1
 * when unknown. */
static int32_t rank_of(const kn_graph *g, const kn_uses *u, kn_id x)
{
    const kn_type *t = kn_rw_type(g, x);
    if (t && t->shape.rank >= 0)
        return t->shape.rank;
    const kn_tensor *c = kn_rw_const(g, x);
    if (c)
        return c->rank;
    const kn_node *p = live_producer(g, u, x, KN_OP_Transpose);
    const kn_attr *perm = p ? kn_node_attr(p, "perm") : NULL;
    return perm && perm->kind == KN_ATTR_INTS ? (int32_t)perm->n : -1;
}

/* x's last dim when known statically, else -1. */
static int64_t last_dim(const kn_graph *g, kn_id x)
{
    const kn_type *t = kn_rw_type(g, x);
    if (!t || t->shape.rank < 1 || !kn_rw_shapes_trusted(g))
        return -1;
    return t->shape.dims[t->shape.rank - 1].value;
}

/* Whether axis `a` is x's last axis. */
static bool is_last_axis(int64_t a, int32_t rank)
{
    return a == -1 || (rank >= 1 && a == rank - 1);
}

/* A one-element integer constant. */
static bool const_int1(const kn_graph *g, kn_id v, int64_t *out)
{
    size_t n;
    return v != KN_NONE && kn_rw_const_ints(g, v, out, 1, &n) && n == 1;
}

/* Whether v holds floor(d / 2) for x's last dim d, as a 1-element vector. */
static bool is_half(const kn_graph *g, const kn_uses *u, kn_id v, kn_id x, int32_t rank)
{
    int64_t h, d = last_dim(g, x);
    if (const_int1(g, v, &h))
        return d >= 0 && h == d / 2;
    const kn_node *us = live_producer(g, u, v, KN_OP_Unsqueeze);
    if (!us || !kn_rw_has_in(us, 0))
        return false;
    const kn_attr *ax = kn_node_attr(us, "axes");
    int64_t a;
    if (ax ? !(ax->kind == KN_ATTR_INTS && ax->n == 1 && ax->u.ints[0] == 0)
           : !(kn_rw_has_in(us, 1) && const_int1(g, us->inputs[1], &a) && a == 0))
        return false;
    const kn_node *dv = live_producer(g, u, us->inputs[0], KN_OP_Div);
    if (!dv || dv->n_inputs != 2 || !kn_fm_scalar_is(g, dv->inputs[1], 2.0, 0))
        return false;
    const kn_tensor *two = kn_rw_const(g, dv->inputs[1]);
    if (!two || (two->dtype != KN_I64 && two->dtype != KN_I32))
        return false;
    const kn_node *ga = live_producer(g, u, dv->inputs[0], KN_OP_Gather);
    double idx;
    if (!ga || ga->n_inputs != 2 || !kn_fm_scalar(g, ga->inputs[1], &idx) || !is_last_axis((int64_t)idx, rank))
        return false;
    const kn_attr *gax = kn_node_attr(ga, "axis");
    if (gax && !(gax->kind == KN_ATTR_INT && gax->u.i == 0))
        return false;
    const kn_node *sh = live_producer(g, u, ga->inputs[0], KN_OP_Shape);
    return sh && sh->n_inputs == 1 && sh->inputs[0] == x && !kn_node_attr(sh, "start") && !kn_node_attr(sh, "end");
}

/* Whether Slice node s reads x on its last axis with step 1. */
static bool slice_last(const kn_graph *g, const kn_node *s, kn_id x, int32_t rank)
{
    int64_t a, st;
    if (s->n_inputs < 4 || s->inputs[0] != x || !const_int1(g, s->inputs[3], &a) || !is_last_axis(a, rank))
        return false;
    return !kn_rw_has_in(s, 4) || (const_int1(g, s->inputs[4], &st) && st == 1);
}

/* rotate_half(x) produced by Concat node k: *x receives x. */
static bool rotate_half(const kn_graph *g, const kn_uses *u, kn_id k, kn_fm *m, kn_id *xo)
{
    const kn_node *c = &g->nodes[k];
    const kn_attr *cax = kn_node_attr(c, "axis");
    if (c->n_inputs != 2 || !cax || cax->kind != KN_ATTR_INT)
        return false;
    kn_id neg = kn_fm_producer(g, u, c->inputs[0], KN_OP_Neg);
    kn_id lo = kn_fm_producer(g, u, c->inputs[1], KN_OP_Slice);
    kn_id hi = neg != KN_NONE ? kn_fm_producer(g, u, g->nodes[neg].inputs[0], KN_OP_Slice) : KN_NONE;
    if (lo == KN_NONE || hi == KN_NONE || lo == hi)
        return false;
    const kn_node *sl = &g->nodes[lo], *sh = &g->nodes[hi];
    kn_id x = sl->inputs[0];
    int32_t rank = rank_of(g, u, x);
    int64_t v, d = last_dim(g, x);
    if (!is_last_axis(cax->u.i, rank) || kn_fm_float_dtype(g, x) == KN_UNDEFINED || !slice_last(g, sl, x, rank) ||
        !slice_last(g, sh, x, rank))
        return false;
    if (!const_int1(g, sl->inputs[1], &v) || v != 0 || !is_half(g, u, sl->inputs[2], x, rank))
        return false;
    if (!is_half(g, u, sh->inputs[1], x, rank) || !const_int1(g, sh->inputs[2], &v) ||
        v < (d >= 0 ? d : (int64_t)INT32_MAX))
        return false;
    kn_fm_add(m, lo);
    kn_fm_add(m, hi);
    kn_fm_add(m, neg);
    kn_fm_add(m, k);
    *xo = x;
    return true;
}

/* Concat node k: rotate_half(x) * sin + x * cos. */
static kn_status fuse_one(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    kn_fm m = {0};
    kn_id x;
    if (!rotate_half(g, u, k, &m, &x))
        return KN_OK;
    kn_id r = g->nodes[k].outputs[0];
    kn_id m2 = kn_fm_sole_reader(g, u, r, KN_OP_Mul);
    kn_id sin = m2 != KN_NONE ? kn_fm_other(&g->nodes[m2], r) : KN_NONE;
    if (sin == KN_NONE || sin == r)
        return KN_OK;
    kn_id p2 = g->nodes[m2].outputs[0];
    kn_id add = kn_fm_sole_reader(g, u, p2, KN_OP_Add);
    kn_id p1 = add != KN_NONE ? kn_fm_other(&g->nodes[add], p2) : KN_NONE;
    kn_id m1 = p1 != KN_NONE && p1 != p2 ? kn_fm_producer(g, u, p1, KN_OP_Mul) : KN_NONE;
    kn_id cos = m1 != KN_NONE ? kn_fm_other(&g->nodes[m1], x) : KN_NONE;
    if (cos == KN_NONE)
        return KN_OK;
    kn_dtype dt = kn_fm_float_dtype(g, x);
    if (kn_fm_float_dtype(g, cos) != dt || kn_fm_float_dtype(g, sin) != dt)
        return KN_OK;
    kn_fm_add(&m, m2);
    kn_fm_add(&m, m1);
    kn_fm_add(&m, add);
    kn_id y = g->nodes[add].outputs[0];
    if (!kn_fm_closed(g, u, &m, y))
        return KN_OK;
    kn_id ins[3] = {x, cos, sin};
    KN_TRY(kn_fm_replace(g, u, &m, y, KN_OP_KILN_RotaryHalf, 1, ins, 3, NULL, 0));
    (*count)++;
    return KN_OK;
}

kn_status kn_pass_fuse_rotary(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    uint32_t n = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++)
        if (!u.dead[k] && !*g->nodes[k].domain && g->nodes[k].op == KN_OP_Concat)
            s = fuse_one(g, &u, k, &n);
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
