/* QDQ fusion: pre-quantized ONNX graphs (QuantizeLinear / DequantizeLinear
 * around float ops, as onnxruntime.quantization's QDQ format writes them)
 * run as integer ops instead of being dequantized back to float.
 *
 *   DQ(qa, sa, za) ─┐
 *                   MatMul → Q(sy, zy)    →  QLinearMatMul(qa, sa, za, W, sw, zw, sy, zy)
 *   DQ(W, sw, zw) ──┘
 *
 *   DQ(qx, sx, zx) ─┐
 *   DQ(W, sw, zw) ──Conv → Q(sy, zy)      →  QLinearConv(qx, sx, zx, W, sw, zw, sy, zy, B)
 *   [DQ(B int32, sx*sw, 0)] ─┘
 *
 *   DQ(qa) · DQ(W) → MatMul whose output is not requantized (read by
 *   anything else)                        →  com.microsoft MatMulIntegerToFloat(
 *                                               qa, W, sa, sw, za, zw)
 *   Gemm(DQ(qa), DQ(W), C), alpha = beta = 1, no transA
 *                                         →  MatMulIntegerToFloat(qa, W or Wᵀ,
 *                                               sa, sw, za, zw, C)
 *
 * The integer op computes the same sum exactly in INT32 arithmetic and
 * requantizes once, so results equal the QDQ graph's float evaluation up to
 * the rounding of the float products (a tie may land one step apart).
 *
 * Fused only when every quantity is known to fit the integer op's contract:
 * activations 8-bit with a per-tensor constant float32 scale and zero point;
 * the weight a constant int8/uint8 tensor with a float32 scale per tensor or
 * per output channel (MatMul: rank-2 weight, DQ axis 1; Conv: DQ axis 0)
 * and zero points likewise; the float op's output read only by the Q node,
 * whose scale and zero point are per-tensor constants; a Conv bias, when
 * present, an int32 constant dequantized with zero point 0 and scale
 * sx*sw (per channel, to float rounding). No blocked (block_size)
 * quantization, no float8 or 4-bit types. Everything else stays as it is
 * (the QDQ graph still runs correctly in float). The DequantizeLinear nodes
 * that nothing reads any more are left to dce. */
#include "passes/fuse_match.h"
#include "passes/passes.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct dq_info {
    kn_id node;
    kn_id x, scale, zp; /* zp: KN_NONE when absent */
    int64_t axis;
} dq_info;

static bool is_q8(kn_dtype t) { return t == KN_I8 || t == KN_U8; }

/* The (Q or DQ) node's block_size / output_dtype attributes are unset. */
static bool plain_attrs(const kn_node *n)
{
    return kn_node_attr_int(n, "block_size", 0) == 0 && kn_node_attr_int(n, "output_dtype", 0) == 0;
}

/* v's producer, if it is a plain ai.onnx DequantizeLinear (its output is
 * float32 when its scale is: checked by the callers). */
static bool dq_of(const kn_graph *g, const kn_uses *u, kn_id v, dq_info *out)
{
    kn_id k = kn_fm_producer(g, u, v, KN_OP_DequantizeLinear);
    if (k == KN_NONE)
        return false;
    const kn_node *n = &g->nodes[k];
    if (n->n_inputs < 2 || !kn_rw_has_in(n, 1) || !plain_attrs(n))
        return false;
    *out = (dq_info){k, n->inputs[0], n->inputs[1], kn_rw_has_in(n, 2) ? n->inputs[2] : KN_NONE,
                     kn_node_attr_int(n, "axis", 1)};
    return true;
}

/* A constant float32 tensor of `want` elements (or one). */
static bool const_f32(const kn_graph *g, kn_id v, int64_t want, int64_t *n)
{
    const kn_tensor *t = kn_rw_const(g, v);
    if (!t || !t->data || t->dtype != KN_F32 || (t->n_elems != 1 && t->n_elems != want) || t->rank > 1)
        return false;
    *n = t->n_elems;
    return true;
}

/* A constant zero point of dtype dt with `n` elements (the scale's count). */
static bool const_zp(const kn_graph *g, kn_id v, kn_dtype dt, int64_t n)
{
    const kn_tensor *t = kn_rw_const(g, v);
    return t && t->data && t->dtype == dt && t->n_elems == n && t->rank <= 1;
}

/* An 8-bit activation dequantized per tensor with constants (its dtype
 * is the zero point's, else its declared or inferred one). */
static bool act_ok(const kn_graph *g, const dq_info *d)
{
    const kn_tensor *z = d->zp != KN_NONE ? kn_rw_const(g, d->zp) : NULL;
    const kn_type *t = kn_rw_type(g, d->x);
    kn_dtype dt = z ? z->dtype : t ? t->dtype : KN_UNDEFINED;
    int64_t ns;
    if (!is_q8(dt) || (t && t->dtype != KN_UNDEFINED && t->dtype != dt) || !const_f32(g, d->scale, 1, &ns))
        return false;
    return d->zp == KN_NONE || const_zp(g, d->zp, dt, 1);
}

/* A constant 8-bit weight of rank >= 2 dequantized per tensor or per
 * channel along `axis` (normalized) with constants; *channels receives
 * the size of that axis. */
static bool weight_ok(const kn_graph *g, const dq_info *d, int32_t axis, int64_t *channels)
{
    const kn_tensor *w = kn_rw_const(g, d->x);
    if (!w || !w->data || !is_q8(w->dtype) || w->rank < 2)
        return false;
    int64_t ax = d->axis < 0 ? d->axis + w->rank : d->axis, ns;
    *channels = w->dims[axis];
    if (!const_f32(g, d->scale, *channels, &ns))
        return false;
    if (ns != 1 && ax != axis)
        return false; /* per channel along another axis: not expressible */
    return d->zp == KN_NONE || const_zp(g, d->zp, w->dtype, ns);
}

/* The Q node solely reading v, quantizing per tensor with constants to an
 * 8-bit type; *q receives it. */
static bool requant_of(const kn_graph *g, const kn_uses *u, kn_id v, kn_id *q)
{
    kn_id k = kn_fm_sole_reader(g, u, v, KN_OP_QuantizeLinear);
    if (k == KN_NONE)
        return false;
    const kn_node *n = &g->nodes[k];
    int64_t ns;
    if (n->n_inputs != 3 || !kn_rw_has_in(n, 1) || !kn_rw_has_in(n, 2) || !plain_attrs(n))
        return false;
    const kn_tensor *z = kn_rw_const(g, n->inputs[2]);
    if (!z || !is_q8(z->dtype) || !const_f32(g, n->inputs[1], 1, &ns) || !const_zp(g, n->inputs[2], z->dtype, 1))
        return false;
    *q = k;
    return true;
}

static kn_status fuse_matmul(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count, uint32_t *count_f)
{
    const kn_node *n = &g->nodes[k];
    dq_info a, w;
    kn_id q;
    int64_t nch;
    if (n->n_inputs != 2 || !dq_of(g, u, n->inputs[0], &a) || !dq_of(g, u, n->inputs[1], &w) || !act_ok(g, &a) ||
        !weight_ok(g, &w, 1, &nch) || kn_rw_const(g, w.x)->rank != 2)
        return KN_OK;
    if (!requant_of(g, u, n->outputs[0], &q)) {
        /* a float result: the integer product times a_scale * w_scale */
        kn_fm m = {0};
        kn_fm_add(&m, k);
        kn_id ins[6] = {a.x, w.x, a.scale, w.scale, a.zp, w.zp};
        KN_TRY(kn_fm_replace(g, u, &m, n->outputs[0], KN_OP_MS_MatMulIntegerToFloat, 1, ins, 6, NULL, 0));
        (*count_f)++;
        return KN_OK;
    }
    kn_fm m = {0};
    kn_fm_add(&m, k);
    kn_fm_add(&m, q);
    const kn_node *qn = &g->nodes[q];
    kn_id y = qn->outputs[0];
    if (!kn_fm_closed(g, u, &m, y))
        return KN_OK;
    kn_id ins[8] = {a.x, a.scale, a.zp, w.x, w.scale, w.zp, qn->inputs[1], qn->inputs[2]};
    KN_TRY(kn_fm_replace(g, u, &m, y, KN_OP_QLinearMatMul, n->opset, ins, 8, NULL, 0));
    (*count)++;
    return KN_OK;
}

/* Whether the Conv bias b is DQ(int32 constant, sx * sw[c], 0): *bq
 * receives the int32 constant. */
static bool bias_ok(const kn_graph *g, const kn_uses *u, kn_id b, const dq_info *x, const dq_info *w, int64_t nch,
                    kn_id *bq)
{
    dq_info d;
    if (!dq_of(g, u, b, &d))
        return false;
    const kn_tensor *bt = kn_rw_const(g, d.x), *bs = kn_rw_const(g, d.scale);
    const kn_tensor *xs = kn_rw_const(g, x->scale), *ws = kn_rw_const(g, w->scale);
    if (!bt || !bt->data || bt->dtype != KN_I32 || bt->n_elems != nch || bt->rank != 1 || !bs || !bs->data ||
        bs->dtype != KN_F32 || (bs->n_elems != 1 && bs->n_elems != nch))
        return false;
    if (d.zp != KN_NONE) {
        const kn_tensor *z = kn_rw_const(g, d.zp);
        if (!z || !z->data || z->dtype != KN_I32 || (z->n_elems != 1 && z->n_elems != nch))
            return false;
        for (int64_t i = 0; i < z->n_elems; i++)
            if (kn_get_i64(KN_I32, z->data, i) != 0)
                return false;
    }
    float sx = (float)kn_get_f64(KN_F32, xs->data, 0);
    for (int64_t c = 0; c < nch; c++) {
        float want = sx * (float)kn_get_f64(KN_F32, ws->data, ws->n_elems == 1 ? 0 : c);
        double got = kn_get_f64(KN_F32, bs->data, bs->n_elems == 1 ? 0 : c);
        if (fabs(got - want) > 1e-6 * fabs(want))
            return false;
    }
    *bq = d.x;
    return true;
}

static kn_status fuse_conv(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    const kn_node *n = &g->nodes[k];
    dq_info x, w;
    kn_id q, bq = KN_NONE;
    int64_t nch;
    if (n->n_inputs < 2 || !dq_of(g, u, n->inputs[0], &x) || !dq_of(g, u, n->inputs[1], &w) || !act_ok(g, &x) ||
        !weight_ok(g, &w, 0, &nch) || !requant_of(g, u, n->outputs[0], &q))
        return KN_OK;
    if (kn_rw_has_in(n, 2) && !bias_ok(g, u, n->inputs[2], &x, &w, nch, &bq))
        return KN_OK;
    kn_fm m = {0};
    kn_fm_add(&m, k);
    kn_fm_add(&m, q);
    const kn_node *qn = &g->nodes[q];
    kn_id y = qn->outputs[0];
    if (!kn_fm_closed(g, u, &m, y))
        return KN_OK;
    kn_id ins[9] = {x.x, x.scale, x.zp, w.x, w.scale, w.zp, qn->inputs[1], qn->inputs[2], bq};
    /* the Conv's attributes, less its fusion record (kn_fm_replace adds one) */
    kn_attr at[16];
    uint32_t na = 0;
    for (uint32_t i = 0; i < n->n_attrs && na < 16; i++)
        if (strcmp(n->attrs[i].name, "_origins") != 0)
            at[na++] = n->attrs[i];
    KN_TRY(kn_fm_replace(g, u, &m, y, KN_OP_QLinearConv, n->opset, ins, bq == KN_NONE ? 8 : 9, at, na));
    (*count)++;
    return KN_OK;
}

static float attr_float(const kn_node *n, const char *name, float def)
{
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->kind == KN_ATTR_FLOAT ? a->u.f : def;
}

/* Gemm(DQ(qa), DQ(W), C) with alpha = beta = 1, no transA: the integer
 * product with C as the float bias (the Q after it, if any, stays). W
 * [N, K] under transB is stored transposed to [K, N]. */
static kn_status fuse_gemm(kn_graph *g, kn_uses *u, kn_id k, uint32_t *count)
{
    const kn_node *n = &g->nodes[k];
    dq_info a, w;
    int64_t nch;
    bool tb = kn_node_attr_int(n, "transB", 0) != 0;
    if (n->n_inputs < 2 || kn_node_attr_int(n, "transA", 0) || attr_float(n, "alpha", 1) != 1.0f ||
        attr_float(n, "beta", 1) != 1.0f || !dq_of(g, u, n->inputs[0], &a) || !dq_of(g, u, n->inputs[1], &w) ||
        !act_ok(g, &a) || !weight_ok(g, &w, tb ? 0 : 1, &nch) || kn_rw_const(g, w.x)->rank != 2)
        return KN_OK;
    kn_id bias = kn_rw_has_in(n, 2) ? n->inputs[2] : KN_NONE;
    if (bias != KN_NONE) {
        const kn_type *t = kn_rw_type(g, bias);
        if (!t || t->dtype != KN_F32 || t->shape.rank < 1 || t->shape.rank > 2 || kn_shape_numel(&t->shape) != nch ||
            t->shape.dims[t->shape.rank - 1].value != nch)
            return KN_OK;
    }
    kn_id wq = w.x;
    if (tb) {
        const kn_tensor *t = kn_rw_const(g, w.x);
        int64_t N = t->dims[0], K = t->dims[1];
        uint8_t *tr = kn_mem_alloc(g->alloc, (size_t)(N * K) + 1);
        if (!tr)
            return KN_ERR_NOMEM;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < K; j++)
                tr[j * N + i] = ((const uint8_t *)t->data)[i * K + j];
        char base[1024];
        snprintf(base, sizeof base, "%s_t", g->values[w.x].name);
        kn_status s = kn_rw_add_const(g, u, base, t->dtype, 2, (int64_t[]){K, N}, tr, (size_t)(N * K), &wq);
        kn_mem_free(g->alloc, tr);
        KN_TRY(s);
        n = &g->nodes[k];
    }
    kn_fm m = {0};
    kn_fm_add(&m, k);
    kn_id ins[7] = {a.x, wq, a.scale, w.scale, a.zp, w.zp, bias};
    KN_TRY(kn_fm_replace(g, u, &m, n->outputs[0], KN_OP_MS_MatMulIntegerToFloat, 1, ins, bias == KN_NONE ? 6 : 7,
                         NULL, 0));
    (*count)++;
    return KN_OK;
}

kn_status kn_pass_fuse_qdq(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    uint32_t n_mm = 0, n_mmf = 0, n_conv = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        if (u.dead[k] || *g->nodes[k].domain || g->nodes[k].n_outputs != 1)
            continue;
        if (g->nodes[k].op == KN_OP_MatMul)
            s = fuse_matmul(g, &u, k, &n_mm, &n_mmf);
        else if (g->nodes[k].op == KN_OP_Gemm)
            s = fuse_gemm(g, &u, k, &n_mmf);
        else if (g->nodes[k].op == KN_OP_Conv && g->nodes[k].n_attrs <= 16)
            s = fuse_conv(g, &u, k, &n_conv);
    }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    return kn_uses_finish(g, &u);
}
