/* Elementwise fusion: a connected group of elementwise nodes (unary math
 * and activations, Clip, Cast, the broadcasting binary ops, Where, the
 * fused activations Gelu / kiln.Silu / kiln.SwiGlu) becomes one
 * kiln.FusedElementwise node whose attributes hold the group as a small
 * SSA program (ir/fused_ew.h), so target cuda generates one kernel for it.
 *
 * A group grows from a root node (the last in graph order) towards its
 * producers: a producer joins when every reader of its output is in the
 * group and the output is not pinned (a graph output, read by a subgraph).
 * So every intermediate value dies inside the group and the fused node
 * has the root's one output. Exactness: each step records its output
 * dtype and the interpreter rounds (floats) or wraps (integers) to it, as
 * the separate nodes store their outputs; integer Div, unsigned types,
 * legacy broadcasting (opset < 7) and variadic Max/Min are left alone.
 * Shapes: every member is a numpy-broadcasting op (unary ops keep their
 * shape), and broadcasting composes: the broadcast of all the group's
 * inputs is the root's shape, and an intermediate evaluated at an element
 * of it reads its operands at their broadcast index. So the program runs
 * at each element of the broadcast of the fused node's inputs and equals
 * the chain whatever the dims (symbolic or unknown) turn out to be. The
 * pass refuses known ranks above 8 (the CUDA kernels' limit) and static
 * dims that conflict (the chain would fail), and a Clip bound must not
 * raise the rank (a rank-0 bound, or one of rank <= x's known rank). Main graph only (subgraph types are loose). */
#include "ir/fused_ew.h"
#include "passes/fuse_match.h"
#include "passes/passes.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANK 8

static bool dtype_ok(kn_dtype t)
{
    switch (t) {
    case KN_F16: case KN_BF16: case KN_F32: case KN_F64:
    case KN_I8: case KN_I16: case KN_I32: case KN_I64: case KN_BOOL:
        return true;
    default:
        return false;
    }
}

static bool is_f(kn_dtype t) { return kn_dt_is_float(t); }
static bool is_s(kn_dtype t) { return t == KN_I8 || t == KN_I16 || t == KN_I32 || t == KN_I64; }

/* The dtype of node input i (KN_UNDEFINED when absent or unknown). */
static kn_dtype in_dt(const kn_graph *g, const kn_node *n, uint32_t i)
{
    if (!kn_rw_has_in(n, i))
        return KN_UNDEFINED;
    const kn_type *t = kn_rw_type(g, n->inputs[i]);
    return t && dtype_ok(t->dtype) ? t->dtype : KN_UNDEFINED;
}

static float attr_f(const kn_node *n, const char *name, float def)
{
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->kind == KN_ATTR_FLOAT ? a->u.f : def;
}

/* Whether value v is a one-element tensor of dtype t with a static shape
 * (a Clip bound, read as a scalar by Clip and broadcast by the program). */
static bool scalar_of(const kn_graph *g, kn_id v, kn_dtype t)
{
    const kn_type *ty = kn_rw_type(g, v);
    if (!ty || ty->dtype != t || ty->shape.rank < 0)
        return false;
    for (int32_t i = 0; i < ty->shape.rank; i++)
        if (ty->shape.dims[i].value != 1)
            return false;
    return true;
}

/* The step op of node n, with its immediates and output dtype, or
 * KN_FE_NONE when n cannot be part of a fused program. */
static kn_fe_op classify(const kn_graph *g, const kn_node *n, float imm[2], kn_dtype *out)
{
    if (n->n_outputs != 1 || n->outputs[0] == KN_NONE || kn_rw_has_subgraph(n) || n->op == KN_OP_UNSUPPORTED)
        return KN_FE_NONE;
    const kn_type *ot = kn_rw_type(g, n->outputs[0]);
    if (!ot || !dtype_ok(ot->dtype))
        return KN_FE_NONE;
    kn_dtype t0 = in_dt(g, n, 0), t1 = in_dt(g, n, 1), o = ot->dtype;
    uint32_t ni = n->n_inputs;
    imm[0] = imm[1] = 0;
    *out = o;
    kn_fe_op op = KN_FE_NONE;
    bool unary_f = ni == 1 && is_f(t0) && o == t0;
    bool unary_fs = ni == 1 && (is_f(t0) || is_s(t0)) && o == t0;
    bool bin = ni == 2 && t0 != KN_UNDEFINED && t0 == t1 && n->opset >= 7;
    switch (n->op) {
    case KN_OP_Neg: op = unary_fs ? KN_FE_Neg : op; break;
    case KN_OP_Abs: op = unary_fs ? KN_FE_Abs : op; break;
    case KN_OP_Relu: op = unary_fs ? KN_FE_Relu : op; break;
    case KN_OP_Exp: op = unary_f ? KN_FE_Exp : op; break;
    case KN_OP_Log: op = unary_f ? KN_FE_Log : op; break;
    case KN_OP_Sqrt: op = unary_f ? KN_FE_Sqrt : op; break;
    case KN_OP_Reciprocal: op = unary_f ? KN_FE_Reciprocal : op; break;
    case KN_OP_Sigmoid: op = unary_f ? KN_FE_Sigmoid : op; break;
    case KN_OP_Tanh: op = unary_f ? KN_FE_Tanh : op; break;
    case KN_OP_HardSwish: op = unary_f ? KN_FE_HardSwish : op; break;
    case KN_OP_Softplus: op = unary_f ? KN_FE_Softplus : op; break;
    case KN_OP_Erf: op = unary_f ? KN_FE_Erf : op; break;
    case KN_OP_Cos: op = unary_f ? KN_FE_Cos : op; break;
    case KN_OP_Sin: op = unary_f ? KN_FE_Sin : op; break;
    case KN_OP_Floor: op = unary_f ? KN_FE_Floor : op; break;
    case KN_OP_Ceil: op = unary_f ? KN_FE_Ceil : op; break;
    case KN_OP_Round: op = unary_f ? KN_FE_Round : op; break;
    case KN_OP_KILN_Silu: op = unary_f ? KN_FE_Silu : op; break;
    case KN_OP_LeakyRelu:
        imm[0] = attr_f(n, "alpha", 0.01f);
        op = unary_f ? KN_FE_LeakyRelu : op;
        break;
    case KN_OP_Elu:
        imm[0] = attr_f(n, "alpha", 1.0f);
        op = unary_f ? KN_FE_Elu : op;
        break;
    case KN_OP_Selu:
        imm[0] = attr_f(n, "alpha", 1.67326319217681884765625f);
        imm[1] = attr_f(n, "gamma", 1.05070102214813232421875f);
        op = unary_f ? KN_FE_Selu : op;
        break;
    case KN_OP_HardSigmoid:
        imm[0] = attr_f(n, "alpha", 0.2f);
        imm[1] = attr_f(n, "beta", 0.5f);
        op = unary_f ? KN_FE_HardSigmoid : op;
        break;
    case KN_OP_Gelu: {
        const kn_attr *a = kn_node_attr(n, "approximate");
        const char *s = a && a->kind == KN_ATTR_STRING ? (const char *)a->u.s.data : "none";
        size_t len = a && a->kind == KN_ATTR_STRING ? a->u.s.len : 4;
        if (!unary_f)
            break;
        if (len == 4 && memcmp(s, "none", 4) == 0)
            op = KN_FE_Gelu;
        else if (len == 4 && memcmp(s, "tanh", 4) == 0)
            op = KN_FE_GeluTanh;
        break;
    }
    case KN_OP_Not: op = ni == 1 && t0 == KN_BOOL && o == KN_BOOL ? KN_FE_Not : op; break;
    case KN_OP_Clip: {
        if (ni < 1 || !is_f(t0) || o != t0)
            break;
        imm[0] = -INFINITY;
        imm[1] = INFINITY;
        if (n->opset < 11) {
            if (ni != 1)
                break;
            imm[0] = attr_f(n, "min", -INFINITY);
            imm[1] = attr_f(n, "max", INFINITY);
        } else if (ni > 3 || (kn_rw_has_in(n, 1) && !scalar_of(g, n->inputs[1], t0)) ||
                   (kn_rw_has_in(n, 2) && !scalar_of(g, n->inputs[2], t0))) {
            break;
        }
        op = KN_FE_Clip;
        break;
    }
    case KN_OP_Cast: {
        const kn_attr *a = kn_node_attr(n, "to");
        if (ni == 1 && t0 != KN_UNDEFINED && a && a->kind == KN_ATTR_INT && a->u.i == (int64_t)o)
            op = KN_FE_Cast;
        break;
    }
    case KN_OP_Add: op = bin && (is_f(t0) || is_s(t0)) && o == t0 ? KN_FE_Add : op; break;
    case KN_OP_Sub: op = bin && (is_f(t0) || is_s(t0)) && o == t0 ? KN_FE_Sub : op; break;
    case KN_OP_Mul: op = bin && (is_f(t0) || is_s(t0)) && o == t0 ? KN_FE_Mul : op; break;
    case KN_OP_Max: op = bin && (is_f(t0) || is_s(t0)) && o == t0 ? KN_FE_Max : op; break;
    case KN_OP_Min: op = bin && (is_f(t0) || is_s(t0)) && o == t0 ? KN_FE_Min : op; break;
    case KN_OP_Div: op = bin && is_f(t0) && o == t0 ? KN_FE_Div : op; break; /* integer division: not fused */
    case KN_OP_Pow:
        op = ni == 2 && n->opset >= 7 && is_f(t0) && (is_f(t1) || is_s(t1)) && o == t0 ? KN_FE_Pow : op;
        break;
    case KN_OP_Equal: op = bin && o == KN_BOOL ? KN_FE_Equal : op; break;
    case KN_OP_Less: op = bin && !(t0 == KN_BOOL) && o == KN_BOOL ? KN_FE_Less : op; break;
    case KN_OP_Greater: op = bin && !(t0 == KN_BOOL) && o == KN_BOOL ? KN_FE_Greater : op; break;
    case KN_OP_And: op = bin && t0 == KN_BOOL && o == KN_BOOL ? KN_FE_And : op; break;
    case KN_OP_Or: op = bin && t0 == KN_BOOL && o == KN_BOOL ? KN_FE_Or : op; break;
    case KN_OP_Where:
        if (ni == 3 && t0 == KN_BOOL && t1 != KN_UNDEFINED && in_dt(g, n, 2) == t1 && o == t1)
            op = KN_FE_Where;
        break;
    case KN_OP_KILN_SwiGlu: op = ni == 2 && is_f(t0) && t1 == t0 && o == t0 ? KN_FE_SwiGlu : op; break;
    default: break;
    }
    return op;
}

/* The static dims a group's values have seen, right-aligned (d[0] is the
 * last dim; 1 where nothing static above 1 was seen). */
typedef struct prof {
    int64_t d[MAX_RANK];
} prof;

/* Adds value v's shape to p: false when its type is unknown, its rank
 * above 8, or a static dim conflicts with one seen (not broadcastable).
 * An unknown rank adds nothing. */
static bool prof_add(const kn_graph *g, kn_id v, prof *p)
{
    const kn_type *t = kn_rw_type(g, v);
    if (!t || t->shape.rank > MAX_RANK)
        return false;
    for (int32_t i = 0; i < t->shape.rank; i++) {
        int64_t x = t->shape.dims[t->shape.rank - 1 - i].value;
        if (x <= 1)
            continue;
        if (p->d[i] > 1 && p->d[i] != x)
            return false;
        p->d[i] = x;
    }
    return true;
}

/* Whether node k can join a group whose shapes so far are p (updated):
 * an elementwise op with known ranks and no conflicting static dims. A
 * Clip bound must not raise the rank (Clip reads it as a scalar, the
 * program broadcasts it). */
static bool member_ok(const kn_graph *g, const kn_uses *u, kn_id k, prof *p)
{
    const kn_node *n = &g->nodes[k];
    float imm[2];
    kn_dtype o;
    prof q = *p;
    kn_fe_op op;
    if (u->dead[k] || (op = classify(g, n, imm, &o)) == KN_FE_NONE || !prof_add(g, n->outputs[0], &q))
        return false;
    for (uint32_t i = 0; i < n->n_inputs; i++) {
        if (n->inputs[i] == KN_NONE)
            continue;
        if (!prof_add(g, n->inputs[i], &q))
            return false;
        if (op == KN_FE_Clip && i > 0 && kn_rw_type(g, n->inputs[i])->shape.rank > 0 &&
            kn_rw_type(g, n->inputs[i])->shape.rank > kn_rw_type(g, n->inputs[0])->shape.rank)
            return false;
    }
    *p = q;
    return true;
}

/* Grows the group from root k: returns it in m (node ids). */
static void grow(const kn_graph *g, const kn_uses *u, kn_id k, prof *pr, kn_fm *m)
{
    m->n = 0;
    kn_fm_add(m, k);
    for (bool changed = true; changed && m->n < KN_FM_MAX;) {
        changed = false;
        for (uint32_t i = 0; i < m->n && m->n < KN_FM_MAX; i++) {
            const kn_node *n = &g->nodes[m->nodes[i]];
            for (uint32_t a = 0; a < n->n_inputs && m->n < KN_FM_MAX; a++) {
                kn_id v = n->inputs[a];
                if (v == KN_NONE || g->values[v].kind != KN_VAL_NODE || u->pinned[v])
                    continue;
                kn_id p = g->values[v].producer;
                if (p == KN_NONE || kn_fm_has(m, p))
                    continue;
                /* every reader of v must be in the group */
                uint32_t inside = 0;
                for (uint32_t j = 0; j < m->n; j++) {
                    const kn_node *r = &g->nodes[m->nodes[j]];
                    for (uint32_t b = 0; b < r->n_inputs; b++)
                        inside += r->inputs[b] == v;
                }
                if (inside != u->readers[v] || !member_ok(g, u, p, pr))
                    continue;
                kn_fm_add(m, p);
                changed = true;
            }
        }
    }
}

static int cmp_id(const void *a, const void *b)
{
    kn_id x = *(const kn_id *)a, y = *(const kn_id *)b;
    return x < y ? -1 : x > y;
}

/* Writes the group's program and replaces it by one node. */
static kn_status fuse_group(kn_graph *g, kn_uses *u, kn_fm *m)
{
    qsort(m->nodes, m->n, sizeof m->nodes[0], cmp_id);
    uint32_t ns = m->n;
    kn_id ins[KN_FM_MAX * KN_FE_ARGS];
    uint32_t n_in = 0;
    for (uint32_t s = 0; s < ns; s++) {
        const kn_node *n = &g->nodes[m->nodes[s]];
        for (uint32_t a = 0; a < n->n_inputs; a++) {
            kn_id v = n->inputs[a];
            if (v == KN_NONE || (g->values[v].kind == KN_VAL_NODE && kn_fm_has(m, g->values[v].producer)))
                continue;
            bool seen = false;
            for (uint32_t j = 0; j < n_in && !seen; j++)
                seen = ins[j] == v;
            if (!seen)
                ins[n_in++] = v;
        }
    }
    kn_bytes *ops = kn_graph_alloc(g, ns * sizeof *ops);
    int64_t *args = kn_graph_alloc(g, (size_t)ns * KN_FE_ARGS * sizeof *args);
    int64_t *dts = kn_graph_alloc(g, ns * sizeof *dts);
    float *imm = kn_graph_alloc(g, (size_t)ns * KN_FE_IMMS * sizeof *imm);
    if (!ops || !args || !dts || !imm)
        return KN_ERR_NOMEM;
    static const char *const names[] = {
        "",
#define KN_FE_X(n) #n,
        KN_FE_OPS(KN_FE_X)
#undef KN_FE_X
    };
    for (uint32_t s = 0; s < ns; s++) {
        const kn_node *n = &g->nodes[m->nodes[s]];
        kn_dtype o;
        kn_fe_op op = classify(g, n, &imm[s * KN_FE_IMMS], &o);
        ops[s] = (kn_bytes){(const uint8_t *)names[op], strlen(names[op])};
        dts[s] = o;
        for (uint32_t a = 0; a < KN_FE_ARGS; a++) {
            int64_t idx = -1;
            kn_id v = a < n->n_inputs ? n->inputs[a] : KN_NONE;
            for (uint32_t j = 0; v != KN_NONE && j < n_in && idx < 0; j++)
                if (ins[j] == v)
                    idx = j;
            for (uint32_t j = 0; v != KN_NONE && j < s && idx < 0; j++)
                if (g->nodes[m->nodes[j]].outputs[0] == v)
                    idx = n_in + j;
            args[s * KN_FE_ARGS + a] = idx;
        }
    }
    kn_attr at[4];
    kn_str nm[4];
    static const char *const an[4] = {"ops", "args", "dtypes", "imm"};
    for (int i = 0; i < 4; i++)
        KN_TRY(kn_graph_intern_cstr(g, an[i], &nm[i]));
    at[0] = (kn_attr){.name = nm[0], .kind = KN_ATTR_STRINGS, .n = ns, .u.strings = ops};
    at[1] = (kn_attr){.name = nm[1], .kind = KN_ATTR_INTS, .n = ns * KN_FE_ARGS, .u.ints = args};
    at[2] = (kn_attr){.name = nm[2], .kind = KN_ATTR_INTS, .n = ns, .u.ints = dts};
    at[3] = (kn_attr){.name = nm[3], .kind = KN_ATTR_FLOATS, .n = ns * KN_FE_IMMS, .u.floats = imm};
    kn_id final = g->nodes[m->nodes[ns - 1]].outputs[0];
    return kn_fm_replace(g, u, m, final, KN_OP_KILN_FusedElementwise, 1, ins, n_in, at, 4);
}

kn_status kn_pass_fuse_elementwise(kn_graph *g, kn_diag *d)
{
    (void)d;
    if (!kn_rw_shapes_trusted(g))
        return KN_OK;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    kn_status s = KN_OK;
    for (kn_id k = g->n_nodes; k-- > 0 && s == KN_OK;) {
        if (u.dead[k] || g->nodes[k].n_outputs != 1 || g->nodes[k].outputs[0] == KN_NONE)
            continue;
        prof pr;
        for (int i = 0; i < MAX_RANK; i++)
            pr.d[i] = 1;
        if (!member_ok(g, &u, k, &pr))
            continue;
        kn_fm m;
        grow(g, &u, k, &pr, &m);
        if (m.n >= 2)
            s = fuse_group(g, &u, &m);
    }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
