/* Activation fusion: decomposed GELU, SiLU, SwiGLU, Softmax and LogSoftmax
 * become one node.
 *
 *   GELU, erf form:  0.5 * x * (1 + Erf(x / sqrt(2)))   (or x * (1/sqrt(2)))
 *   GELU, tanh form: 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
 *                    (x^3 as Pow(x, 3) or x * x * x; GPT-2's gelu_new)
 *     → ai.onnx Gelu (opset 20), approximate "none" / "tanh"; the products
 *       0.5 * x * (...) in any grouping and operand order.
 *   SiLU:   x * Sigmoid(x)            → kiln Silu(x)
 *   SwiGLU: Silu(gate) * up           → kiln SwiGlu(gate, up), after the
 *           SiLU fusion (Llama/Qwen2 MLPs). ONNX has Swish only from opset
 *           24 and SwiGLU from 28, past the opsets kiln's table covers.
 *   Softmax: e = Exp(x - ReduceMax(x)) (stable) or Exp(x) (unstable);
 *            e / ReduceSum(e) or e * Reciprocal(ReduceSum(e))
 *                                 → ai.onnx Softmax (opset 13, one axis)
 *   LogSoftmax: d = x - ReduceMax(x) (or d = x); d - Log(ReduceSum(Exp(d)))
 *                                 → ai.onnx LogSoftmax (opset 13)
 *     Both reductions over the same single axis (axes attribute or
 *     constant input; negative axes normalised with x's rank where they
 *     differ in sign), keepdims 1, noop_with_empty_axes unset or 0. The
 *     unstable form differs from the max-subtracting kernel by rounding,
 *     and where Exp(x) overflows the fused op gives the finite result the
 *     unfused graph's inf / inf did not.
 *
 * Exact only: constants checked (0.5, 1 and 3 exactly; sqrt(2), 1/sqrt(2),
 * sqrt(2/pi) and 0.044715 to float rounding, relative 1e-6), every
 * operand x the same value, float dtypes, and no intermediate value read
 * outside the pattern or pinned. */
#include "passes/fuse_match.h"
#include "passes/passes.h"

#include <math.h>
#include <string.h>

#define RTOL 1e-6

/* Whether node k (a Mul) multiplies v by a scalar constant equal to c. */
static bool mul_by(const kn_graph *g, kn_id k, kn_id v, double c)
{
    kn_id o = kn_fm_other(&g->nodes[k], v);
    return o != KN_NONE && o != v && kn_fm_scalar_is(g, o, c, c == 0.5 ? 0 : RTOL);
}

/* The node reading v once with op `op` whose other operand is a scalar
 * constant equal to c. */
static kn_id reader_by_const(const kn_graph *g, const kn_uses *u, kn_id v, kn_op op, double c)
{
    kn_id k = kn_fm_sole_reader(g, u, v, op);
    if (k == KN_NONE)
        return KN_NONE;
    kn_id o = kn_fm_other(&g->nodes[k], v);
    return o != KN_NONE && o != v && kn_fm_scalar_is(g, o, c, 0) ? k : KN_NONE;
}

/* The tail 0.5 * x * c, where c = 1 + f(x): adds its nodes to m and
 * returns the output, or KN_NONE. */
static kn_id match_half_x(const kn_graph *g, const kn_uses *u, kn_id c, kn_id x, kn_fm *m)
{
    kn_id m1 = kn_fm_sole_reader(g, u, c, KN_OP_Mul);
    if (m1 == KN_NONE)
        return KN_NONE;
    kn_id t = kn_fm_other(&g->nodes[m1], c), h, m2;
    if (t == KN_NONE || t == c)
        return KN_NONE;
    kn_id out1 = g->nodes[m1].outputs[0];
    if (t == x) { /* (x * c) * 0.5 */
        if ((m2 = kn_fm_sole_reader(g, u, out1, KN_OP_Mul)) == KN_NONE || !mul_by(g, m2, out1, 0.5))
            return KN_NONE;
        kn_fm_add(m, m1);
        kn_fm_add(m, m2);
        return g->nodes[m2].outputs[0];
    }
    if ((h = kn_fm_producer(g, u, t, KN_OP_Mul)) != KN_NONE && kn_fm_other(&g->nodes[h], x) != KN_NONE &&
        mul_by(g, h, x, 0.5)) { /* (x * 0.5) * c */
        kn_fm_add(m, h);
        kn_fm_add(m, m1);
        return out1;
    }
    if (kn_fm_scalar_is(g, t, 0.5, 0)) { /* (c * 0.5) * x */
        if ((m2 = kn_fm_sole_reader(g, u, out1, KN_OP_Mul)) == KN_NONE || kn_fm_other(&g->nodes[m2], out1) != x)
            return KN_NONE;
        kn_fm_add(m, m1);
        kn_fm_add(m, m2);
        return g->nodes[m2].outputs[0];
    }
    return KN_NONE;
}

/* 1 + f: the Add reading f's output once with the constant 1. */
static kn_id one_plus(const kn_graph *g, const kn_uses *u, kn_id f, kn_fm *m)
{
    kn_id k = reader_by_const(g, u, g->nodes[f].outputs[0], KN_OP_Add, 1.0);
    if (k == KN_NONE)
        return KN_NONE;
    kn_fm_add(m, f);
    kn_fm_add(m, k);
    return g->nodes[k].outputs[0];
}

/* Erf node k: Erf(x / sqrt2) or Erf(x * (1/sqrt2)); *x receives x. */
static bool erf_arg(const kn_graph *g, const kn_uses *u, kn_id k, kn_fm *m, kn_id *x)
{
    kn_id a = g->nodes[k].inputs[0], p;
    if ((p = kn_fm_producer(g, u, a, KN_OP_Div)) != KN_NONE &&
        kn_fm_scalar_is(g, g->nodes[p].inputs[1], sqrt(2.0), RTOL)) {
        *x = g->nodes[p].inputs[0];
    } else if ((p = kn_fm_producer(g, u, a, KN_OP_Mul)) != KN_NONE) {
        const kn_node *n = &g->nodes[p];
        if (kn_fm_scalar_is(g, n->inputs[1], sqrt(0.5), RTOL))
            *x = n->inputs[0];
        else if (kn_fm_scalar_is(g, n->inputs[0], sqrt(0.5), RTOL))
            *x = n->inputs[1];
        else
            return false;
    } else {
        return false;
    }
    kn_fm_add(m, p);
    return true;
}

/* x^3 as Pow(x, 3), Mul(x, Mul(x, x)) or Mul(Mul(x, x), x): its nodes. */
static bool cube_of(const kn_graph *g, const kn_uses *u, kn_id v, kn_id x, kn_fm *m)
{
    kn_id k = kn_fm_producer(g, u, v, KN_OP_Pow);
    if (k != KN_NONE)
        return g->nodes[k].inputs[0] == x && kn_fm_scalar_is(g, g->nodes[k].inputs[1], 3.0, 0) &&
               (kn_fm_add(m, k), true);
    if ((k = kn_fm_producer(g, u, v, KN_OP_Mul)) == KN_NONE)
        return false;
    kn_id sq = kn_fm_other(&g->nodes[k], x);
    kn_id s = sq != KN_NONE ? kn_fm_producer(g, u, sq, KN_OP_Mul) : KN_NONE;
    if (s == KN_NONE || g->nodes[s].inputs[0] != x || g->nodes[s].inputs[1] != x)
        return false;
    kn_fm_add(m, k);
    kn_fm_add(m, s);
    return true;
}

/* Tanh node k: Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)); *x receives x. */
static bool tanh_arg(const kn_graph *g, const kn_uses *u, kn_id k, kn_fm *m, kn_id *x)
{
    const double k0 = sqrt(2.0 / M_PI);
    kn_id z = g->nodes[k].inputs[0];
    kn_id mk = kn_fm_producer(g, u, z, KN_OP_Mul);
    if (mk == KN_NONE)
        return false;
    const kn_node *mn = &g->nodes[mk];
    kn_id inner = kn_fm_scalar_is(g, mn->inputs[0], k0, RTOL)   ? mn->inputs[1]
                  : kn_fm_scalar_is(g, mn->inputs[1], k0, RTOL) ? mn->inputs[0]
                                                                : KN_NONE;
    kn_id add = inner != KN_NONE ? kn_fm_producer(g, u, inner, KN_OP_Add) : KN_NONE;
    if (add == KN_NONE)
        return false;
    for (int i = 0; i < 2; i++) {
        kn_fm t = *m;
        kn_id cx = g->nodes[add].inputs[i], c3 = g->nodes[add].inputs[1 - i];
        kn_id mc = kn_fm_producer(g, u, c3, KN_OP_Mul);
        if (mc == KN_NONE)
            continue;
        const kn_node *cn = &g->nodes[mc];
        kn_id cube = kn_fm_scalar_is(g, cn->inputs[0], 0.044715, RTOL)   ? cn->inputs[1]
                     : kn_fm_scalar_is(g, cn->inputs[1], 0.044715, RTOL) ? cn->inputs[0]
                                                                         : KN_NONE;
        if (cube == KN_NONE || !cube_of(g, u, cube, cx, &t))
            continue;
        kn_fm_add(&t, mc);
        kn_fm_add(&t, add);
        kn_fm_add(&t, mk);
        *m = t;
        *x = cx;
        return true;
    }
    return false;
}

static kn_status fuse_gelu(kn_graph *g, kn_uses *u, kn_id k, bool is_tanh, uint32_t *count)
{
    kn_fm m = {0};
    kn_id x, c, y;
    if (!(is_tanh ? tanh_arg(g, u, k, &m, &x) : erf_arg(g, u, k, &m, &x)))
        return KN_OK;
    if (kn_fm_float_dtype(g, x) == KN_UNDEFINED || (c = one_plus(g, u, k, &m)) == KN_NONE ||
        (y = match_half_x(g, u, c, x, &m)) == KN_NONE || !kn_fm_closed(g, u, &m, y))
        return KN_OK;
    kn_attr at;
    KN_TRY(kn_fm_attr_s(g, "approximate", is_tanh ? "tanh" : "none", &at));
    KN_TRY(kn_fm_replace(g, u, &m, y, KN_OP_Gelu, 20, &x, 1, &at, 1));
    (*count)++;
    return KN_OK;
}

/* Sigmoid node k read by Mul(x, Sigmoid(x)). */
static kn_status fuse_silu(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    const kn_node *s = &g->nodes[k];
    if (*s->domain || s->n_inputs != 1 || s->n_outputs != 1)
        return KN_OK;
    kn_id x = s->inputs[0], sv = s->outputs[0];
    kn_id mk = kn_fm_sole_reader(g, u, sv, KN_OP_Mul);
    if (mk == KN_NONE || kn_fm_other(&g->nodes[mk], sv) != x || kn_fm_float_dtype(g, x) == KN_UNDEFINED)
        return KN_OK;
    kn_fm m = {0};
    kn_fm_add(&m, k);
    kn_fm_add(&m, mk);
    kn_id y = g->nodes[mk].outputs[0];
    if (!kn_fm_closed(g, u, &m, y))
        return KN_OK;
    KN_TRY(kn_fm_replace(g, u, &m, y, KN_OP_KILN_Silu, 1, &x, 1, NULL, 0));
    (*count)++;
    return KN_OK;
}

/* Mul node k with one operand the output of a Silu read only there. */
static kn_status fuse_swiglu(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    const kn_node *n = &g->nodes[k];
    if (*n->domain || n->n_inputs != 2 || n->n_outputs != 1 || n->inputs[0] == n->inputs[1])
        return KN_OK;
    for (int i = 0; i < 2; i++) {
        kn_id sv = n->inputs[i], up = n->inputs[1 - i];
        const kn_value *v = &g->values[sv];
        if (v->kind != KN_VAL_NODE || u->dead[v->producer] || g->nodes[v->producer].op != KN_OP_KILN_Silu ||
            u->readers[sv] != 1 || u->pinned[sv] || kn_fm_float_dtype(g, up) != kn_fm_float_dtype(g, sv))
            continue;
        kn_fm m = {0};
        kn_fm_add(&m, v->producer);
        kn_fm_add(&m, k);
        kn_id y = n->outputs[0];
        if (!kn_fm_closed(g, u, &m, y))
            return KN_OK;
        kn_id ins[2] = {g->nodes[v->producer].inputs[0], up};
        KN_TRY(kn_fm_replace(g, u, &m, y, KN_OP_KILN_SwiGlu, 1, ins, 2, NULL, 0));
        (*count)++;
        return KN_OK;
    }
    return KN_OK;
}

/* The one axis a ReduceSum / ReduceMax node reduces over, keeping dims
 * (axes as the constant input from `input_opset` on, else the attribute):
 * *axis receives it as written. */
static bool reduce_axis(const kn_graph *g, const kn_node *n, int64_t input_opset, int64_t *axis)
{
    const kn_attr *kd = kn_node_attr(n, "keepdims");
    if (kd && (kd->kind != KN_ATTR_INT || kd->u.i != 1))
        return false;
    const kn_attr *ne = kn_node_attr(n, "noop_with_empty_axes");
    if (ne && (ne->kind != KN_ATTR_INT || ne->u.i != 0))
        return false;
    int64_t axes[2];
    size_t na = 0;
    if (n->opset >= input_opset) {
        if (!kn_rw_has_in(n, 1) || !kn_rw_const_ints(g, n->inputs[1], axes, 2, &na))
            return false;
    } else {
        const kn_attr *a = kn_node_attr(n, "axes");
        if (n->n_inputs != 1 || !a || a->kind != KN_ATTR_INTS || a->n > 2)
            return false;
        na = a->n;
        for (size_t i = 0; i < na; i++)
            axes[i] = a->u.ints[i];
    }
    if (na != 1)
        return false;
    *axis = axes[0];
    return true;
}

/* Whether axes a and b of x (as written) are the same axis; *axis
 * receives it (normalised to >= 0 where the rank is known). */
static bool same_axis(const kn_graph *g, kn_id x, int64_t a, int64_t b, int64_t *axis)
{
    const kn_type *t = kn_rw_type(g, x);
    int32_t r = t && kn_rw_shapes_trusted(g) ? t->shape.rank : -1;
    if (r == 0)
        return false;
    if (r > 0) {
        if (a < -r || a >= r || b < -r || b >= r)
            return false;
        a = a < 0 ? a + r : a;
        b = b < 0 ? b + r : b;
    } else if ((a < 0) != (b < 0)) {
        return false;
    }
    *axis = a;
    return a == b;
}

/* ReduceSum node k over e = Exp(d), where d = x - ReduceMax(x) or d = x
 * (stable and unstable forms), followed by e / s or e * Reciprocal(s)
 * (Softmax), or by d - Log(s) (LogSoftmax). */
static kn_status fuse_softmax(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    const kn_node *rs = &g->nodes[k];
    int64_t a_sum, a_max, axis;
    if (rs->n_outputs != 1 || !reduce_axis(g, rs, 13, &a_sum))
        return KN_OK;
    kn_id e = rs->inputs[0], s = rs->outputs[0];
    kn_id ek = kn_fm_producer(g, u, e, KN_OP_Exp);
    if (ek == KN_NONE || u->pinned[s] || u->readers[s] != 1)
        return KN_OK;
    kn_fm m = {0};
    kn_fm_add(&m, k);
    kn_fm_add(&m, ek);
    kn_id d = g->nodes[ek].inputs[0], x = d, y = KN_NONE;
    kn_id sub = kn_fm_producer(g, u, d, KN_OP_Sub);
    kn_id mx = sub != KN_NONE ? kn_fm_producer(g, u, g->nodes[sub].inputs[1], KN_OP_ReduceMax) : KN_NONE;
    if (mx != KN_NONE && g->nodes[mx].inputs[0] == g->nodes[sub].inputs[0]) { /* stable form */
        x = g->nodes[sub].inputs[0];
        if (!reduce_axis(g, &g->nodes[mx], 18, &a_max) || !same_axis(g, x, a_sum, a_max, &axis))
            return KN_OK;
        kn_fm_add(&m, sub);
        kn_fm_add(&m, mx);
    } else if (!same_axis(g, x, a_sum, a_sum, &axis)) {
        return KN_OK;
    }
    if (kn_fm_float_dtype(g, x) == KN_UNDEFINED)
        return KN_OK;
    kn_op op = KN_OP_Softmax;
    kn_id r, lk, rk;
    if ((r = kn_fm_sole_reader(g, u, s, KN_OP_Div)) != KN_NONE) { /* e / s */
        if (g->nodes[r].inputs[0] != e || g->nodes[r].inputs[1] != s)
            return KN_OK;
        kn_fm_add(&m, r);
        y = g->nodes[r].outputs[0];
    } else if ((rk = kn_fm_sole_reader(g, u, s, KN_OP_Reciprocal)) != KN_NONE) { /* e * (1/s) */
        kn_id rv = g->nodes[rk].outputs[0];
        r = kn_fm_sole_reader(g, u, rv, KN_OP_Mul);
        if (r == KN_NONE || kn_fm_other(&g->nodes[r], rv) != e)
            return KN_OK;
        kn_fm_add(&m, rk);
        kn_fm_add(&m, r);
        y = g->nodes[r].outputs[0];
    } else if ((lk = kn_fm_sole_reader(g, u, s, KN_OP_Log)) != KN_NONE) { /* d - Log(s) */
        kn_id lv = g->nodes[lk].outputs[0];
        r = kn_fm_sole_reader(g, u, lv, KN_OP_Sub);
        if (r == KN_NONE || g->nodes[r].inputs[0] != d || g->nodes[r].inputs[1] != lv)
            return KN_OK;
        kn_fm_add(&m, lk);
        kn_fm_add(&m, r);
        y = g->nodes[r].outputs[0];
        op = KN_OP_LogSoftmax;
    } else {
        return KN_OK;
    }
    /* x itself may be read elsewhere; every intermediate only here */
    if (!kn_fm_closed(g, u, &m, y))
        return KN_OK;
    kn_attr at;
    KN_TRY(kn_fm_attr_i(g, "axis", axis, &at));
    KN_TRY(kn_fm_replace(g, u, &m, y, op, 13, &x, 1, &at, 1));
    (*count)++;
    return KN_OK;
}

kn_status kn_pass_fuse_act(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    uint32_t n_gelu = 0, n_silu = 0, n_swiglu = 0, n_softmax = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        if (u.dead[k] || *g->nodes[k].domain)
            continue;
        kn_op op = g->nodes[k].op;
        if (op == KN_OP_Erf || op == KN_OP_Tanh)
            s = fuse_gelu(g, &u, k, op == KN_OP_Tanh, &n_gelu);
        else if (op == KN_OP_Sigmoid)
            s = fuse_silu(g, &u, k, &n_silu);
        else if (op == KN_OP_ReduceSum)
            s = fuse_softmax(g, &u, k, &n_softmax);
    }
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++)
        if (!u.dead[k] && g->nodes[k].op == KN_OP_Mul)
            s = fuse_swiglu(g, &u, k, &n_swiglu);
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
