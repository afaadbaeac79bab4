/* Shape and type inference at compile time. Fills in the dtype and shape
 * of node outputs the model left unknown, carrying symbolic dims (batch,
 * seq, ...) through; what depends on run-time data stays unknown and is
 * resolved by the kernels when concrete inputs arrive. Declared types from
 * the model are kept. Rules exist for the ops inference models use most;
 * other ops leave their outputs unknown (never wrong). */
#include "passes/infer_shapes.h"

#include "ir/arena.h"
#include "passes/passes.h"

#include <string.h>

const kn_type *kn_is_in_type(kn_is_ctx *c, uint32_t i)
{
    if (i >= c->n->n_inputs || c->n->inputs[i] == KN_NONE)
        return NULL;
    const kn_value *v = kn_value_resolve(c->g, c->n->inputs[i], NULL);
    return v && v->type.kind == KN_TYPE_TENSOR ? &v->type : NULL;
}

const kn_tensor *kn_is_in_const(kn_is_ctx *c, uint32_t i)
{
    if (i >= c->n->n_inputs || c->n->inputs[i] == KN_NONE)
        return NULL;
    const kn_value *v = kn_value_resolve(c->g, c->n->inputs[i], NULL);
    return v && v->kind == KN_VAL_CONST && v->tensor && (v->tensor->dtype == KN_I64 || v->tensor->dtype == KN_I32)
               ? v->tensor
               : NULL;
}

int64_t kn_is_const_at(const kn_tensor *t, int64_t i)
{
    if (t->dtype == KN_I64) {
        int64_t v;
        memcpy(&v, (const char *)t->data + 8 * i, 8);
        return v;
    }
    int32_t v;
    memcpy(&v, (const char *)t->data + 4 * i, 4);
    return v;
}

kn_status kn_is_set_out(kn_is_ctx *c, uint32_t i, kn_dtype dt, int32_t rank, const kn_dim *dims)
{
    if (i >= c->n->n_outputs || c->n->outputs[i] == KN_NONE)
        return KN_OK;
    kn_value *v = &c->g->values[c->n->outputs[i]];
    if (v->type.kind == KN_TYPE_TENSOR && v->type.dtype != KN_UNDEFINED && v->type.shape.rank >= 0)
        return KN_OK; /* declared by the model */
    v->type.kind = KN_TYPE_TENSOR;
    if (dt != KN_UNDEFINED)
        v->type.dtype = dt;
    if (rank >= 0) {
        v->type.shape.rank = rank;
        v->type.shape.dims = kn_graph_alloc(c->g, ((size_t)rank + 1) * sizeof(kn_dim));
        if (!v->type.shape.dims)
            return KN_ERR_NOMEM;
        for (int32_t k = 0; k < rank; k++) {
            v->type.shape.dims[k] = dims ? dims[k] : (kn_dim){-1, NULL};
            if (v->type.shape.dims[k].value < -1) /* e.g. a Reshape target of -5: not a shape we can know */
                v->type.shape.dims[k].value = -1;
        }
    } else {
        v->type.shape.rank = -1;
    }
    return KN_OK;
}

/* Numpy broadcasting of all tensor inputs, symbolically. */
static kn_status broadcast(kn_is_ctx *c, uint32_t first, uint32_t last, kn_dtype out_dt)
{
    int32_t rank = 0;
    kn_dtype dt = KN_UNDEFINED;
    for (uint32_t i = first; i <= last && i < c->n->n_inputs; i++) {
        const kn_type *t = kn_is_in_type(c, i);
        if (!t || t->shape.rank < 0)
            return kn_is_set_out(c, 0, out_dt ? out_dt : t ? t->dtype : KN_UNDEFINED, -1, NULL);
        if (t->shape.rank > rank)
            rank = t->shape.rank;
        if (!dt)
            dt = t->dtype;
    }
    if (rank > 64)
        return KN_OK;
    kn_dim d[64];
    for (int32_t k = 0; k < rank; k++)
        d[k] = (kn_dim){1, NULL};
    for (uint32_t i = first; i <= last && i < c->n->n_inputs; i++) {
        const kn_type *t = kn_is_in_type(c, i);
        for (int32_t k = 0; k < t->shape.rank; k++) {
            kn_dim x = t->shape.dims[k], *o = &d[rank - t->shape.rank + k];
            if (x.value == 1 || kn_is_dim_eq(x, *o))
                continue;
            if (o->value == 1)
                *o = x;
            else if (x.value >= 0 && o->value >= 0)
                return KN_OK; /* not broadcastable: the kernel reports it with the real shapes */
            else
                *o = (kn_dim){-1, NULL};
        }
    }
    return kn_is_set_out(c, 0, out_dt ? out_dt : dt, rank, d);
}

kn_status kn_is_same_as_input(kn_is_ctx *c, uint32_t i)
{
    const kn_type *t = kn_is_in_type(c, i);
    if (!t)
        return KN_OK;
    return kn_is_set_out(c, 0, t->dtype, t->shape.rank, t->shape.dims);
}

/* MatMul's shape rule for operands ia_in, ib_in (QLinearMatMul: 0 and 3),
 * output dtype dt (KN_UNDEFINED: A's). */
static kn_status infer_matmul_of(kn_is_ctx *c, uint32_t ia_in, uint32_t ib_in, kn_dtype dt)
{
    const kn_type *a = kn_is_in_type(c, ia_in), *b = kn_is_in_type(c, ib_in);
    if (dt == KN_UNDEFINED && a)
        dt = a->dtype;
    if (!a || !b || a->shape.rank < 1 || b->shape.rank < 1 || a->shape.rank > 32 || b->shape.rank > 32)
        return kn_is_set_out(c, 0, dt, -1, NULL);
    int32_t ra = a->shape.rank, rb = b->shape.rank;
    int32_t batch = (ra > rb ? ra : rb) - 2;
    if (batch < 0)
        batch = 0;
    kn_dim d[70];
    int32_t r = 0;
    for (int32_t k = 0; k < batch; k++) {
        int32_t ia = k - (batch - (ra - 2)), ib = k - (batch - (rb - 2));
        kn_dim x = ia >= 0 && ra > 2 ? a->shape.dims[ia] : (kn_dim){1, NULL};
        kn_dim y = ib >= 0 && rb > 2 ? b->shape.dims[ib] : (kn_dim){1, NULL};
        d[r++] = x.value == 1 ? y : y.value == 1 || kn_is_dim_eq(x, y) ? x : (kn_dim){-1, NULL};
    }
    if (ra >= 2)
        d[r++] = a->shape.dims[ra - 2];
    if (rb >= 2)
        d[r++] = b->shape.dims[rb - 1];
    return kn_is_set_out(c, 0, dt, r, d);
}

static kn_status infer_matmul(kn_is_ctx *c) { return infer_matmul_of(c, 0, 1, KN_UNDEFINED); }

/* com.microsoft MatMulNBits: A's shape with the last dimension N. */
static kn_status infer_matmul_nbits(kn_is_ctx *c)
{
    const kn_type *a = kn_is_in_type(c, 0);
    const kn_attr *n = kn_node_attr(c->n, "N");
    if (!a || a->shape.rank < 1 || a->shape.rank > 64 || !n || n->kind != KN_ATTR_INT || n->u.i <= 0)
        return kn_is_set_out(c, 0, a ? a->dtype : KN_UNDEFINED, a ? a->shape.rank : -1, NULL);
    kn_dim d[64];
    memcpy(d, a->shape.dims, (size_t)a->shape.rank * sizeof *d);
    d[a->shape.rank - 1] = (kn_dim){n->u.i, NULL};
    return kn_is_set_out(c, 0, a->dtype, a->shape.rank, d);
}

static kn_status infer_gemm(kn_is_ctx *c)
{
    const kn_type *a = kn_is_in_type(c, 0), *b = kn_is_in_type(c, 1);
    if (!a || !b || a->shape.rank != 2 || b->shape.rank != 2)
        return kn_is_set_out(c, 0, a ? a->dtype : KN_UNDEFINED, 2, NULL);
    bool ta = kn_node_attr(c->n, "transA") && kn_node_attr(c->n, "transA")->u.i;
    bool tb = kn_node_attr(c->n, "transB") && kn_node_attr(c->n, "transB")->u.i;
    kn_dim d[2] = {a->shape.dims[ta ? 1 : 0], b->shape.dims[tb ? 0 : 1]};
    return kn_is_set_out(c, 0, a->dtype, 2, d);
}

static kn_status infer_transpose(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    if (!t || t->shape.rank < 0 || t->shape.rank > 64)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, -1, NULL);
    const kn_attr *p = kn_node_attr(c->n, "perm");
    kn_dim d[64];
    int32_t r = t->shape.rank;
    for (int32_t k = 0; k < r; k++) {
        int64_t src = p && p->kind == KN_ATTR_INTS && (int32_t)p->n == r ? p->u.ints[k] : r - 1 - k;
        if (src < 0 || src >= r)
            return KN_OK;
        d[k] = t->shape.dims[src];
    }
    return kn_is_set_out(c, 0, t->dtype, r, d);
}

static kn_status infer_reshape(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    const kn_tensor *s = kn_is_in_const(c, 1);
    if (!t || !s || s->rank != 1 || s->n_elems > 64)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, s && s->rank == 1 ? (int32_t)s->n_elems : -1, NULL);
    bool allowzero = kn_node_attr(c->n, "allowzero") && kn_node_attr(c->n, "allowzero")->u.i;
    kn_dim d[64];
    int32_t r = (int32_t)s->n_elems, infer = -1;
    int64_t known = 1, total = t->shape.rank >= 0 ? kn_shape_numel(&t->shape) : -1;
    for (int32_t k = 0; k < r; k++) {
        int64_t v = kn_is_const_at(s, k);
        if (v == 0 && !allowzero)
            d[k] = k < t->shape.rank ? t->shape.dims[k] : (kn_dim){-1, NULL};
        else if (v == -1) {
            d[k] = (kn_dim){-1, NULL};
            infer = k;
            continue;
        } else
            d[k] = (kn_dim){v, NULL};
        if (d[k].value >= 0 && known >= 0 && (d[k].value == 0 || known <= INT64_MAX / d[k].value))
            known *= d[k].value;
        else
            known = -1; /* unknown, or too large to be a real shape */
    }
    if (infer >= 0 && total >= 0 && known > 0 && total % known == 0)
        d[infer].value = total / known;
    return kn_is_set_out(c, 0, t->dtype, r, d);
}

static kn_status infer_concat(kn_is_ctx *c)
{
    const kn_type *t0 = kn_is_in_type(c, 0);
    if (!t0 || t0->shape.rank < 1 || t0->shape.rank > 64)
        return kn_is_set_out(c, 0, t0 ? t0->dtype : KN_UNDEFINED, -1, NULL);
    int32_t r = t0->shape.rank;
    const kn_attr *ax = kn_node_attr(c->n, "axis");
    int64_t axis = ax ? ax->u.i : 0;
    if (axis < 0)
        axis += r;
    if (axis < 0 || axis >= r)
        return KN_OK;
    kn_dim d[64];
    memcpy(d, t0->shape.dims, (size_t)r * sizeof *d);
    int64_t sum = 0;
    for (uint32_t i = 0; i < c->n->n_inputs; i++) {
        const kn_type *t = kn_is_in_type(c, i);
        if (!t || t->shape.rank != r) {
            sum = -1;
            break;
        }
        if (sum >= 0 && t->shape.dims[axis].value >= 0 && t->shape.dims[axis].value <= INT64_MAX - sum)
            sum += t->shape.dims[axis].value;
        else
            sum = -1;
    }
    if (c->n->n_inputs > 1)
        d[axis] = (kn_dim){sum, NULL};
    return kn_is_set_out(c, 0, t0->dtype, r, d);
}

static kn_status infer_cast(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    const kn_attr *to = kn_node_attr(c->n, "to");
    kn_dtype dt = to && to->kind == KN_ATTR_INT && kn_dtype_valid((int)to->u.i) ? (kn_dtype)to->u.i : KN_UNDEFINED;
    if (c->n->op == KN_OP_CastLike) {
        const kn_type *l = kn_is_in_type(c, 1);
        dt = l ? l->dtype : KN_UNDEFINED;
    }
    return kn_is_set_out(c, 0, dt, t ? t->shape.rank : -1, t ? t->shape.dims : NULL);
}

static kn_status infer_shape_op(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    kn_dim d = {-1, NULL};
    if (t && t->shape.rank >= 0 && !kn_node_attr(c->n, "start") && !kn_node_attr(c->n, "end"))
        d.value = t->shape.rank;
    return kn_is_set_out(c, 0, KN_I64, 1, &d);
}

/* Axes of Squeeze/Unsqueeze: the attribute before opset 13, a constant
 * input from 13. False when they are not known at compile time. */
static bool axes_of(kn_is_ctx *c, int64_t *axes, uint32_t *n)
{
    *n = 0;
    if (c->n->opset < 13) {
        const kn_attr *a = kn_node_attr(c->n, "axes");
        if (!a)
            return true; /* Squeeze without axes */
        if (a->kind != KN_ATTR_INTS || a->n > 64)
            return false;
        for (uint32_t i = 0; i < a->n; i++)
            axes[(*n)++] = a->u.ints[i];
        return true;
    }
    if (c->n->n_inputs < 2 || c->n->inputs[1] == KN_NONE)
        return true;
    const kn_tensor *t = kn_is_in_const(c, 1);
    if (!t || t->rank > 1 || t->n_elems > 64)
        return false;
    for (int64_t i = 0; i < t->n_elems; i++)
        axes[(*n)++] = kn_is_const_at(t, i);
    return true;
}

static kn_status infer_unsqueeze(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    int64_t axes[64];
    uint32_t na;
    if (!t || t->shape.rank < 0 || !axes_of(c, axes, &na) || na == 0)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, -1, NULL);
    int32_t r = t->shape.rank + (int32_t)na;
    if (r > 64)
        return KN_OK;
    bool inserted[64] = {0};
    for (uint32_t i = 0; i < na; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];
        if (a < 0 || a >= r || inserted[a])
            return kn_is_set_out(c, 0, t->dtype, -1, NULL); /* the kernel reports it */
        inserted[a] = true;
    }
    kn_dim d[64];
    for (int32_t k = 0, j = 0; k < r; k++)
        d[k] = inserted[k] ? (kn_dim){1, NULL} : t->shape.dims[j++];
    return kn_is_set_out(c, 0, t->dtype, r, d);
}

static kn_status infer_squeeze(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    int64_t axes[64];
    uint32_t na;
    if (!t || t->shape.rank < 0 || !axes_of(c, axes, &na))
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, -1, NULL);
    int32_t r = t->shape.rank;
    bool drop[64] = {0};
    if (na == 0) { /* every dim of size 1: only when all dims are known */
        for (int32_t k = 0; k < r; k++) {
            if (t->shape.dims[k].value < 0)
                return kn_is_set_out(c, 0, t->dtype, -1, NULL);
            drop[k] = t->shape.dims[k].value == 1;
        }
    }
    for (uint32_t i = 0; i < na; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + r : axes[i];
        if (a < 0 || a >= r)
            return kn_is_set_out(c, 0, t->dtype, -1, NULL);
        drop[a] = true;
    }
    kn_dim d[64];
    int32_t n = 0;
    for (int32_t k = 0; k < r; k++)
        if (!drop[k])
            d[n++] = t->shape.dims[k];
    return kn_is_set_out(c, 0, t->dtype, n, d);
}

static kn_status infer_flatten(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    if (!t || t->shape.rank < 0)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, 2, NULL);
    const kn_attr *a = kn_node_attr(c->n, "axis");
    int64_t axis = a && a->kind == KN_ATTR_INT ? a->u.i : 1;
    int32_t r = t->shape.rank;
    if (axis < 0)
        axis += r;
    if (axis < 0 || axis > r)
        return kn_is_set_out(c, 0, t->dtype, 2, NULL);
    kn_dim d[2] = {{1, NULL}, {1, NULL}};
    for (int32_t k = 0; k < r; k++) {
        kn_dim *o = &d[k < axis ? 0 : 1];
        int64_t v = t->shape.dims[k].value;
        if (o->value < 0 || v < 0) {
            /* one symbolic factor times known 1s stays that symbol */
            if (o->value == 1 && !o->sym && v < 0)
                *o = t->shape.dims[k];
            else if (!(v == 1))
                *o = (kn_dim){-1, NULL};
        } else {
            if (v && o->value > INT64_MAX / v)
                *o = (kn_dim){-1, NULL};
            else
                o->value *= v;
        }
    }
    return kn_is_set_out(c, 0, t->dtype, 2, d);
}

static kn_status infer_gather(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0), *ix = kn_is_in_type(c, 1);
    if (!t || !ix || t->shape.rank < 1 || ix->shape.rank < 0 || t->shape.rank + ix->shape.rank > 65)
        return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, -1, NULL);
    const kn_attr *a = kn_node_attr(c->n, "axis");
    int64_t axis = a && a->kind == KN_ATTR_INT ? a->u.i : 0;
    int32_t r = t->shape.rank;
    if (axis < 0)
        axis += r;
    if (axis < 0 || axis >= r)
        return kn_is_set_out(c, 0, t->dtype, -1, NULL);
    kn_dim d[64];
    int32_t n = 0;
    for (int32_t k = 0; k < axis; k++)
        d[n++] = t->shape.dims[k];
    for (int32_t k = 0; k < ix->shape.rank; k++)
        d[n++] = ix->shape.dims[k];
    for (int32_t k = (int32_t)axis + 1; k < r; k++)
        d[n++] = t->shape.dims[k];
    return kn_is_set_out(c, 0, t->dtype, n, d);
}

/* Conv and the windowed pools: [N, C_out, spatial...]; spatial sizes when
 * everything they depend on is static and explicit (auto_pad NOTSET). */
static kn_status infer_window(kn_is_ctx *c, bool conv)
{
    const kn_type *x = kn_is_in_type(c, 0);
    if (!x || x->shape.rank < 3 || x->shape.rank > 10)
        return kn_is_set_out(c, 0, x ? x->dtype : KN_UNDEFINED, x ? x->shape.rank : -1, NULL);
    int32_t r = x->shape.rank, ns = r - 2;
    kn_dim d[10];
    d[0] = x->shape.dims[0];
    d[1] = x->shape.dims[1];
    int64_t kernel[8] = {0};
    if (conv) {
        const kn_type *w = kn_is_in_type(c, c->n->op == KN_OP_QLinearConv ? 3 : 1);
        d[1] = w && w->shape.rank == r ? w->shape.dims[0] : (kn_dim){-1, NULL};
        for (int32_t i = 0; i < ns; i++)
            kernel[i] = w && w->shape.rank == r ? w->shape.dims[2 + i].value : -1;
    }
    uint32_t nk = 0, np = 0, nst = 0, ndl = 0;
    const int64_t *ks = NULL, *pads = NULL, *st = NULL, *dl = NULL;
    const kn_attr *a;
    if ((a = kn_node_attr(c->n, "kernel_shape")) && a->kind == KN_ATTR_INTS)
        ks = a->u.ints, nk = a->n;
    if ((a = kn_node_attr(c->n, "pads")) && a->kind == KN_ATTR_INTS)
        pads = a->u.ints, np = a->n;
    if ((a = kn_node_attr(c->n, "strides")) && a->kind == KN_ATTR_INTS)
        st = a->u.ints, nst = a->n;
    if ((a = kn_node_attr(c->n, "dilations")) && a->kind == KN_ATTR_INTS)
        dl = a->u.ints, ndl = a->n;
    const char *ap = NULL;
    if ((a = kn_node_attr(c->n, "auto_pad")) && a->kind == KN_ATTR_STRING)
        ap = (const char *)a->u.s.data;
    bool ceil_mode = (a = kn_node_attr(c->n, "ceil_mode")) && a->kind == KN_ATTR_INT && a->u.i;
    bool explicit_pad = !ap || strcmp(ap, "NOTSET") == 0;
    for (int32_t i = 0; i < ns; i++) {
        int64_t in = x->shape.dims[2 + i].value;
        int64_t k = nk == (uint32_t)ns ? ks[i] : kernel[i];
        int64_t s = nst == (uint32_t)ns ? st[i] : 1, dil = ndl == (uint32_t)ns ? dl[i] : 1;
        int64_t pb = np == 2u * (uint32_t)ns ? pads[i] : 0, pe = np == 2u * (uint32_t)ns ? pads[ns + i] : 0;
        d[2 + i] = (kn_dim){-1, NULL};
        if (!explicit_pad || in < 0 || k <= 0 || s <= 0 || dil <= 0 || ceil_mode)
            continue;
        int64_t span = dil * (k - 1) + 1, len = in + pb + pe - span;
        if (len >= 0)
            d[2 + i].value = len / s + 1;
    }
    kn_dtype dt = x->dtype;
    if (c->n->op == KN_OP_ConvInteger) {
        dt = KN_I32;
    } else if (c->n->op == KN_OP_QLinearConv) {
        const kn_type *z = kn_is_in_type(c, 7);
        dt = z ? z->dtype : x->dtype;
    }
    return kn_is_set_out(c, 0, dt, r, d);
}

static kn_status infer_global_pool(kn_is_ctx *c)
{
    const kn_type *x = kn_is_in_type(c, 0);
    if (!x || x->shape.rank < 2 || x->shape.rank > 64)
        return kn_is_set_out(c, 0, x ? x->dtype : KN_UNDEFINED, x ? x->shape.rank : -1, NULL);
    kn_dim d[64];
    for (int32_t k = 0; k < x->shape.rank; k++)
        d[k] = k < 2 ? x->shape.dims[k] : (kn_dim){1, NULL};
    return kn_is_set_out(c, 0, x->dtype, x->shape.rank, d);
}

static bool is_unary_same(kn_op op)
{
    switch (op) {
    case KN_OP_Abs: case KN_OP_Neg: case KN_OP_Exp: case KN_OP_Log: case KN_OP_Sqrt: case KN_OP_Reciprocal:
    case KN_OP_Floor: case KN_OP_Ceil: case KN_OP_Round: case KN_OP_Sign: case KN_OP_Sin: case KN_OP_Cos:
    case KN_OP_Tan: case KN_OP_Erf: case KN_OP_Sigmoid: case KN_OP_Tanh: case KN_OP_Relu: case KN_OP_LeakyRelu:
    case KN_OP_Elu: case KN_OP_Selu: case KN_OP_Celu: case KN_OP_HardSigmoid: case KN_OP_HardSwish:
    case KN_OP_Softplus: case KN_OP_Softsign: case KN_OP_Gelu: case KN_OP_Mish: case KN_OP_Identity:
    case KN_OP_Softmax: case KN_OP_LogSoftmax: case KN_OP_Hardmax: case KN_OP_Clip: case KN_OP_Not:
    case KN_OP_BatchNormalization: case KN_OP_InstanceNormalization: case KN_OP_LayerNormalization:
    case KN_OP_LpNormalization: case KN_OP_LRN: case KN_OP_CumSum: case KN_OP_PRelu:
    case KN_OP_ThresholdedRelu: case KN_OP_Shrink: case KN_OP_Dropout: case KN_OP_RMSNormalization:
    case KN_OP_KILN_Silu:
        return true;
    default:
        return false;
    }
}

static kn_dtype out_dtype(kn_is_ctx *c, uint32_t i);

/* QuantizeLinear / DequantizeLinear: the input's shape in the quantized
 * (zero point's) or float (scale's) type. */
static kn_status infer_qdq(kn_is_ctx *c)
{
    const kn_type *t = kn_is_in_type(c, 0);
    if (!t)
        return KN_OK;
    return kn_is_set_out(c, 0, out_dtype(c, 0), t->shape.rank, t->shape.dims);
}

static kn_status infer_node(kn_is_ctx *c)
{
    kn_op op = c->n->op;
    if (is_unary_same(op))
        return kn_is_same_as_input(c, 0);
    switch (op) {
    case KN_OP_Add: case KN_OP_Sub: case KN_OP_Mul: case KN_OP_Div: case KN_OP_Pow: case KN_OP_Mod:
    case KN_OP_Max: case KN_OP_Min: case KN_OP_Sum: case KN_OP_Mean:
        return broadcast(c, 0, c->n->n_inputs - 1, op == KN_OP_Pow ? (kn_is_in_type(c, 0) ? kn_is_in_type(c, 0)->dtype : 0) : 0);
    case KN_OP_Equal: case KN_OP_Less: case KN_OP_LessOrEqual: case KN_OP_Greater: case KN_OP_GreaterOrEqual:
    case KN_OP_And: case KN_OP_Or: case KN_OP_Xor:
        return broadcast(c, 0, 1, KN_BOOL);
    case KN_OP_KILN_RotaryHalf:
        return broadcast(c, 0, 2, 0);
    case KN_OP_KILN_FusedElementwise: { /* the last step's dtype (ir/fused_ew.h) */
        const kn_attr *a = kn_node_attr(c->n, "dtypes");
        kn_dtype dt = a && a->kind == KN_ATTR_INTS && a->n ? (kn_dtype)a->u.ints[a->n - 1] : KN_UNDEFINED;
        return c->n->n_inputs ? broadcast(c, 0, c->n->n_inputs - 1, dt) : KN_OK;
    }
    case KN_OP_KILN_PagedAttention: /* Y has Q's shape (head_dim of V = of K) */
        return kn_is_same_as_input(c, 0);
    case KN_OP_KILN_SkipRMSNorm: case KN_OP_KILN_SkipLayerNorm: { /* Y and the sum have X's type */
        const kn_type *t = kn_is_in_type(c, 0);
        if (t)
            KN_TRY(kn_is_set_out(c, 1, t->dtype, t->shape.rank, t->shape.dims));
        return kn_is_same_as_input(c, 0);
    }
    case KN_OP_Where: {
        const kn_type *x = kn_is_in_type(c, 1);
        return broadcast(c, 0, 2, x ? x->dtype : KN_UNDEFINED);
    }
    case KN_OP_IsNaN: case KN_OP_IsInf: {
        const kn_type *t = kn_is_in_type(c, 0);
        return kn_is_set_out(c, 0, KN_BOOL, t ? t->shape.rank : -1, t ? t->shape.dims : NULL);
    }
    case KN_OP_MatMul: return infer_matmul(c);
    case KN_OP_MatMulInteger: return infer_matmul_of(c, 0, 1, KN_I32);
    case KN_OP_QLinearMatMul: {
        const kn_type *z = kn_is_in_type(c, 7), *a = kn_is_in_type(c, 0);
        return infer_matmul_of(c, 0, 3, z ? z->dtype : a ? a->dtype : KN_UNDEFINED);
    }
    case KN_OP_MS_MatMulNBits: return infer_matmul_nbits(c);
    case KN_OP_MS_MatMulIntegerToFloat: {
        const kn_type *s = kn_is_in_type(c, 2);
        return infer_matmul_of(c, 0, 1, s ? s->dtype : KN_F32);
    }
    case KN_OP_QuantizeLinear: case KN_OP_DequantizeLinear: return infer_qdq(c);
    case KN_OP_Gemm: return infer_gemm(c);
    case KN_OP_Transpose: return infer_transpose(c);
    case KN_OP_Reshape: {
        const kn_is_symval *sv = kn_is_in_const(c, 1) ? NULL : kn_is_in_sv(c, 1);
        return sv ? kn_is_reshape_sym(c, kn_is_in_type(c, 0), sv) : infer_reshape(c);
    }
    case KN_OP_Expand: return kn_is_expand(c);
    case KN_OP_Split: return kn_is_split(c);
    case KN_OP_ReduceMean: case KN_OP_ReduceSum: case KN_OP_ReduceMax: case KN_OP_ReduceMin: case KN_OP_ReduceProd:
    case KN_OP_ReduceL1: case KN_OP_ReduceL2: case KN_OP_ReduceLogSum: case KN_OP_ReduceLogSumExp:
    case KN_OP_ReduceSumSquare:
        return kn_is_reduce(c);
    case KN_OP_Range: return kn_is_range(c);
    case KN_OP_Slice: return kn_is_slice(c);
    case KN_OP_ConstantOfShape: {
        const kn_is_symval *sv = kn_is_in_sv(c, 0);
        kn_dim d[KN_IS_SV_MAX];
        for (int32_t k = 0; sv && k < sv->n; k++)
            d[k] = kn_is_sv_dim(sv->d[k]);
        return sv ? kn_is_set_out(c, 0, KN_UNDEFINED, sv->n, d) : KN_OK;
    }
    case KN_OP_KILN_SwiGlu:
        if (c->n->n_inputs == 1) { /* packed [..., 2N] -> [..., N] */
            const kn_type *t = kn_is_in_type(c, 0);
            if (!t || t->shape.rank < 1 || t->shape.rank > 64)
                return kn_is_set_out(c, 0, t ? t->dtype : KN_UNDEFINED, -1, NULL);
            kn_dim d[64];
            memcpy(d, t->shape.dims, (size_t)t->shape.rank * sizeof *d);
            kn_dim *l = &d[t->shape.rank - 1];
            *l = l->value >= 0 && !l->sym && l->value % 2 == 0 ? (kn_dim){l->value / 2, NULL} : (kn_dim){-1, NULL};
            return kn_is_set_out(c, 0, t->dtype, t->shape.rank, d);
        }
        return broadcast(c, 0, 1, 0);
    case KN_OP_Concat: return infer_concat(c);
    case KN_OP_Cast: case KN_OP_CastLike: return infer_cast(c);
    case KN_OP_Shape: return infer_shape_op(c);
    case KN_OP_Size: return kn_is_set_out(c, 0, KN_I64, 0, NULL);
    case KN_OP_Unsqueeze: return infer_unsqueeze(c);
    case KN_OP_Squeeze: return infer_squeeze(c);
    case KN_OP_Flatten: return infer_flatten(c);
    case KN_OP_Gather: return infer_gather(c);
    case KN_OP_Conv: case KN_OP_ConvInteger: case KN_OP_QLinearConv: return infer_window(c, true);
    case KN_OP_MaxPool: case KN_OP_AveragePool: case KN_OP_LpPool: return infer_window(c, false);
    case KN_OP_GlobalAveragePool: case KN_OP_GlobalMaxPool: case KN_OP_GlobalLpPool: return infer_global_pool(c);
    default: return KN_OK;
    }
}

/* The dtype of output i when no shape rule set it: most ops keep their
 * first input's dtype; the exceptions are listed. */
static kn_dtype out_dtype(kn_is_ctx *c, uint32_t i)
{
    const kn_node *n = c->n;
    const kn_type *t0 = kn_is_in_type(c, 0);
    kn_dtype first = t0 ? t0->dtype : KN_UNDEFINED;
    const kn_attr *a;
    switch (n->op) {
    case KN_OP_Shape: case KN_OP_Size: case KN_OP_ArgMax: case KN_OP_ArgMin: case KN_OP_NonZero:
    case KN_OP_NonMaxSuppression:
        return KN_I64;
    case KN_OP_Equal: case KN_OP_Less: case KN_OP_LessOrEqual: case KN_OP_Greater: case KN_OP_GreaterOrEqual:
    case KN_OP_And: case KN_OP_Or: case KN_OP_Xor: case KN_OP_Not: case KN_OP_IsNaN: case KN_OP_IsInf:
        return KN_BOOL;
    case KN_OP_TopK: case KN_OP_Unique:
        return i == 0 ? first : KN_I64;
    case KN_OP_MaxPool:
        return i == 0 ? first : KN_I64;
    case KN_OP_Dropout:
        return i == 0 ? first : KN_BOOL;
    case KN_OP_Where: {
        const kn_type *t = kn_is_in_type(c, 1);
        return t ? t->dtype : KN_UNDEFINED;
    }
    case KN_OP_OneHot: {
        const kn_type *t = kn_is_in_type(c, 2);
        return t ? t->dtype : KN_UNDEFINED;
    }
    case KN_OP_ConstantOfShape:
        a = kn_node_attr(n, "value");
        return a && a->kind == KN_ATTR_TENSOR ? a->u.t->dtype : KN_F32;
    case KN_OP_EyeLike: case KN_OP_RandomNormalLike: case KN_OP_RandomUniformLike:
        a = kn_node_attr(n, "dtype");
        return a && a->kind == KN_ATTR_INT && kn_dtype_valid((int)a->u.i) ? (kn_dtype)a->u.i : first;
    case KN_OP_RandomNormal: case KN_OP_RandomUniform:
        a = kn_node_attr(n, "dtype");
        return a && a->kind == KN_ATTR_INT && kn_dtype_valid((int)a->u.i) ? (kn_dtype)a->u.i : KN_F32;
    case KN_OP_QuantizeLinear: case KN_OP_DynamicQuantizeLinear: {
        if (n->op == KN_OP_DynamicQuantizeLinear)
            return i == 0 ? KN_U8 : i == 1 ? KN_F32 : KN_U8;
        const kn_type *z = kn_is_in_type(c, 2);
        return z ? z->dtype : KN_U8;
    }
    case KN_OP_DequantizeLinear: {
        const kn_type *sc = kn_is_in_type(c, 1);
        return sc ? sc->dtype : KN_F32;
    }
    case KN_OP_MatMulInteger: case KN_OP_ConvInteger:
        return KN_I32;
    case KN_OP_QLinearMatMul: case KN_OP_QLinearConv: {
        const kn_type *z = kn_is_in_type(c, n->op == KN_OP_QLinearMatMul ? 7 : 7);
        return z ? z->dtype : KN_UNDEFINED;
    }
    case KN_OP_If: case KN_OP_Loop: case KN_OP_Scan: case KN_OP_UNSUPPORTED:
        return KN_UNDEFINED;
    default:
        return first;
    }
}

static kn_status infer_dtypes(kn_is_ctx *c)
{
    for (uint32_t i = 0; i < c->n->n_outputs; i++) {
        kn_id v = c->n->outputs[i];
        if (v == KN_NONE)
            continue;
        kn_value *val = &c->g->values[v];
        if (val->type.kind == KN_TYPE_TENSOR && val->type.dtype != KN_UNDEFINED)
            continue;
        if (val->type.kind != KN_TYPE_TENSOR && val->type.kind != KN_TYPE_UNKNOWN)
            continue;
        kn_dtype dt = out_dtype(c, i);
        if (dt == KN_UNDEFINED)
            continue;
        if (val->type.kind == KN_TYPE_UNKNOWN) {
            val->type.kind = KN_TYPE_TENSOR;
            val->type.shape.rank = -1;
        }
        val->type.dtype = dt;
    }
    return KN_OK;
}

static kn_status infer_graph(kn_graph *g, int depth)
{
    if (depth > 256)
        return KN_OK;
    /* an OUTER value's type is its target's (inferred already: it comes
     * from an earlier node of an enclosing graph) */
    for (kn_id v = 0; v < g->n_values; v++)
        if (g->values[v].kind == KN_VAL_OUTER && g->values[v].type.kind == KN_TYPE_UNKNOWN) {
            const kn_value *t = kn_value_resolve(g, v, NULL);
            if (t)
                g->values[v].type = t->type;
        }
    kn_is_symval *sv = g->n_values ? kn_mem_alloc(g->alloc, (size_t)g->n_values * sizeof *sv) : NULL;
    for (kn_id v = 0; sv && v < g->n_values; v++)
        sv[v].n = -1;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        kn_is_ctx c = {g, &g->nodes[k], sv};
        if ((s = infer_node(&c)) != KN_OK || (s = infer_dtypes(&c)) != KN_OK)
            break;
        kn_is_track(&c);
        for (uint32_t i = 0; i < g->nodes[k].n_attrs; i++) {
            const kn_attr *a = &g->nodes[k].attrs[i];
            uint32_t ng = a->kind == KN_ATTR_GRAPH ? 1 : a->kind == KN_ATTR_GRAPHS ? a->n : 0;
            for (uint32_t j = 0; j < ng && s == KN_OK; j++)
                s = infer_graph(a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[j], depth + 1);
        }
    }
    kn_mem_free(g->alloc, sv);
    return s;
}

kn_status kn_pass_infer_shapes(kn_graph *g, kn_diag *d)
{
    kn_status s = infer_graph(g, 0);
    if (s == KN_ERR_NOMEM)
        kn_diag_add(d, KN_ERROR, "out of memory in shape inference");
    return s;
}
