/* W8A8 (kn_quantize_opts.mode KN_QUANT_W8A8, --quantize int8): the weight
 * of a MatMul/Gemm is quantized per output channel, symmetric int8
 * (kn_wq_rtn), and the input x to int8 in one of two ways:
 *
 * static (per tensor, the calibration threshold amax):
 *   qx = QuantizeLinear(x, amax / 127, int8 0)
 *   y  = com.microsoft MatMulIntegerToFloat(qx, Wq [K, N], a_scale, b_scale [N] (, bias))
 *
 * dynamic (per token: one scale per row of x along K, computed at run time):
 *   s  = Max(ReduceMax(Abs(x), axes -1) / 127, FLT_MIN)      [..., M, 1]
 *   qx = Cast<int8>(Clip(Round(x / s), -127, 127))          round half to even
 *   y  = MatMulIntegerToFloat(qx, Wq, 1, b_scale [N]) * s (+ bias)
 * so y[m, n] = (Σ_k qx·Wq, exact) · w_scale[n] · s[m] — the integer dot
 * product is exact (the CPU kernel sums in 64 bits), the scales multiply
 * in float. Every op has a CPU kernel and a CUDA emitter.
 *
 * SmoothQuant (smooth_alpha > 0, Xiao et al. 2023): per input channel
 * s_j = max|x_j|^α / max|W_j|^(1-α) (kn_smooth_scales, max|x_j| from the
 * calibration table); the weight rows are multiplied by s before
 * quantization and x is divided by s: folded into the scale (and bias)
 * of the LayerNormalization / RMSNormalization /
 * SimplifiedLayerNormalization that produces x when every reader of x is
 * a quantized layer or a Shape (all of them then share one s, from the largest |W|
 * over their stacked weights), else a Mul(x, 1/s) before the layer. With
 * static scales the threshold becomes max_j max|x_j| / s_j (the smoothed
 * tensor's range; the table's own threshold was for x). */
#include "passes/quantize_internal.h"
#include "kiln/quant.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* The weight transposes ([K, N] <-> [N, K]) go through W8_T x W8_T blocks
 * in a local buffer: every cache line read or written is used whole at
 * once (with a power-of-two row length the lines of a column all fall in
 * one cache set, so a line left for later is gone). */
#define W8_T 16

void kn_quant_w8a8_free(kn_graph *g, kn_w8a8 *w)
{
    for (uint32_t i = 0; w->smooth && i < w->n0; i++)
        kn_mem_free(g->alloc, w->smooth[i]);
    kn_mem_free(g->alloc, w->smooth);
    kn_mem_free(g->alloc, w->folded);
    w->smooth = NULL;
    w->folded = NULL;
}

static bool is_norm(const kn_node *n)
{
    return n->op == KN_OP_LayerNormalization || n->op == KN_OP_RMSNormalization ||
           n->op == KN_OP_SimplifiedLayerNormalization;
}

/* Whether x is output 0 of a norm over its last axis with a constant
 * float32 scale (and bias, if any) of K values, its other outputs unused:
 * *norm receives the node. */
static bool norm_before(const kn_graph *g, const kn_uses *u, kn_id x, int64_t K, kn_id *norm)
{
    const kn_value *v = &g->values[x];
    if (v->kind != KN_VAL_NODE || v->out_index != 0)
        return false;
    const kn_node *n = &g->nodes[v->producer];
    if (!is_norm(n) || u->dead[v->producer] || n->n_inputs < 2 || !kn_rw_has_in(n, 1))
        return false;
    for (uint32_t i = 1; i < n->n_outputs; i++)
        if (n->outputs[i] != KN_NONE && (u->readers[n->outputs[i]] || u->pinned[n->outputs[i]]))
            return false;
    const kn_type *t = kn_rw_type(g, x);
    const kn_attr *ax = kn_node_attr(n, "axis");
    int64_t axis = ax && ax->kind == KN_ATTR_INT ? ax->u.i : -1;
    if (!t || t->shape.rank < 1 || (axis != -1 && axis != t->shape.rank - 1))
        return false;
    for (uint32_t i = 1; i < n->n_inputs && i < 3; i++) {
        if (!kn_rw_has_in(n, i))
            continue;
        const kn_tensor *c = kn_rw_const(g, n->inputs[i]);
        if (!c || !c->data || c->dtype != KN_F32 || c->rank != 1 || c->dims[0] != K)
            return false;
    }
    if (n->n_inputs > 3)
        return false;
    *norm = v->producer;
    return true;
}

/* Replaces input i (scale or bias) of norm node k by a copy divided by s. */
static kn_status fold_into(kn_graph *g, kn_uses *u, kn_id k, uint32_t i, const float *s, int64_t K)
{
    kn_id old = g->nodes[k].inputs[i];
    const kn_tensor *c = kn_rw_const(g, old);
    float *v = kn_mem_alloc(g->alloc, (size_t)K * sizeof *v);
    if (!v)
        return KN_ERR_NOMEM;
    memcpy(v, c->data, (size_t)K * sizeof *v);
    for (int64_t j = 0; j < K; j++)
        v[j] /= s[j];
    char base[1100];
    snprintf(base, sizeof base, "%s_smoothed", g->values[old].name);
    kn_id nv;
    kn_status st = kn_rw_add_const(g, u, base, KN_F32, 1, (int64_t[]){K}, v, (size_t)K * sizeof *v, &nv);
    kn_mem_free(g->alloc, v);
    KN_TRY(st);
    g->nodes[k].inputs[i] = nv;
    u->readers[old]--;
    u->readers[nv]++;
    return KN_OK;
}

static bool smoothable(const kn_graph *g, const kn_uses *u, const kn_quantize_opts *o, kn_id k)
{
    const kn_node *n = &g->nodes[k];
    return !u->dead[k] && (n->op == KN_OP_MatMul || n->op == KN_OP_Gemm) && !kn_quant_kept(o, n);
}

kn_status kn_quant_w8a8_smooth(kn_graph *g, kn_uses *u, const kn_quantize_opts *o, kn_diag *d, kn_w8a8 *w,
                               kn_qstats *st)
{
    uint32_t n0 = w->n0;
    w->smooth = kn_mem_alloc(g->alloc, ((size_t)n0 + 1) * sizeof *w->smooth);
    w->folded = kn_mem_alloc(g->alloc, (size_t)n0 + 1);
    kn_id *group = kn_mem_alloc(g->alloc, ((size_t)n0 + 1) * sizeof *group);
    bool *done = kn_mem_alloc(g->alloc, (size_t)n0 + 1);
    double *wmax = NULL;
    kn_status s = w->smooth && w->folded && group && done ? KN_OK : KN_ERR_NOMEM;
    if (w->smooth)
        memset(w->smooth, 0, ((size_t)n0 + 1) * sizeof *w->smooth);
    if (s == KN_OK) {
        memset(w->folded, 0, (size_t)n0 + 1);
        memset(done, 0, (size_t)n0 + 1);
    }
    for (kn_id k = 0; s == KN_OK && k < n0; k++) {
        if (done[k] || !smoothable(g, u, o, k))
            continue;
        bool ok;
        int64_t K, N;
        kn_id bias;
        float *wt;
        s = kn_quant_candidate(g, &g->nodes[k], &ok, &K, &N, &bias, &wt);
        kn_mem_free(g->alloc, wt);
        if (s != KN_OK || !ok)
            continue;
        /* the candidates reading the same input as their input 0 */
        kn_id x = g->nodes[k].inputs[0];
        uint32_t n_group = 0, n_shape = 0;
        bool all = true;
        for (kn_id j = 0; j < n0; j++) {
            const kn_node *m = &g->nodes[j];
            bool reads = false;
            for (uint32_t i = 0; i < m->n_inputs; i++)
                reads |= m->inputs[i] == x;
            if (!reads || u->dead[j])
                continue;
            if (m->op == KN_OP_Shape && m->n_inputs == 1) { /* reads only x's shape, which stays */
                n_shape++;
                continue;
            }
            int64_t K2, N2;
            bool ok2 = false;
            if (m->inputs[0] == x && smoothable(g, u, o, j) && s == KN_OK) {
                s = kn_quant_candidate(g, m, &ok2, &K2, &N2, &bias, &wt);
                kn_mem_free(g->alloc, wt);
            }
            if (ok2 && K2 == K)
                group[n_group++] = j;
            else
                all = false;
        }
        if (s != KN_OK)
            break;
        kn_id norm = KN_NONE;
        bool fold = all && !u->pinned[x] && u->readers[x] == n_group + n_shape && norm_before(g, u, x, K, &norm);
        const double *absmax = NULL;
        s = o->act_absmax(o->ctx, g->nodes[k].name, g->values[x].name, K, &absmax, d);
        if (s != KN_OK)
            break;
        wmax = kn_mem_alloc(g->alloc, (size_t)K * sizeof *wmax);
        if (!wmax) {
            s = KN_ERR_NOMEM;
            break;
        }
        /* folded: one s for the group, from the largest |W| over all of it;
         * else each layer its own */
        for (uint32_t gi = 0; s == KN_OK && gi < n_group; gi++) {
            if (gi == 0 || !fold)
                for (int64_t j = 0; j < K; j++)
                    wmax[j] = 0;
            for (uint32_t gj = fold ? 0 : gi; s == KN_OK && gj < (fold ? n_group : gi + 1); gj++) {
                s = kn_quant_candidate(g, &g->nodes[group[gj]], &ok, &K, &N, &bias, &wt);
                for (int64_t j = 0; s == KN_OK && j < K; j++)
                    for (int64_t c = 0; c < N; c++)
                        wmax[j] = fmax(wmax[j], fabs((double)wt[j * N + c]));
                kn_mem_free(g->alloc, wt);
            }
            if (s != KN_OK)
                break;
            float *sv = kn_mem_alloc(g->alloc, (size_t)K * sizeof *sv);
            if (!sv) {
                s = KN_ERR_NOMEM;
                break;
            }
            s = kn_smooth_scales(absmax, wmax, (uint32_t)K, o->smooth_alpha, sv, d);
            if (s != KN_OK)
                kn_diag_add(d, KN_NOTE, "quantize: while smoothing the input of node '%s'",
                            g->nodes[group[gi]].name);
            w->smooth[group[gi]] = sv;
            w->folded[group[gi]] = fold;
            done[group[gi]] = true;
            if (fold) { /* the same s for the rest of the group */
                for (uint32_t gj = 1; s == KN_OK && gj < n_group; gj++) {
                    float *cp = kn_mem_alloc(g->alloc, (size_t)K * sizeof *cp);
                    if (!cp) {
                        s = KN_ERR_NOMEM;
                        break;
                    }
                    memcpy(cp, sv, (size_t)K * sizeof *cp);
                    w->smooth[group[gj]] = cp;
                    w->folded[group[gj]] = true;
                    done[group[gj]] = true;
                }
                break;
            }
        }
        if (s == KN_OK && fold) {
            const float *sv = w->smooth[group[0]];
            s = fold_into(g, u, norm, 1, sv, K);
            if (s == KN_OK && g->nodes[norm].n_inputs > 2 && kn_rw_has_in(&g->nodes[norm], 2))
                s = fold_into(g, u, norm, 2, sv, K);
            st->n_folded += n_group;
        }
        kn_mem_free(g->alloc, wmax);
        wmax = NULL;
    }
    kn_mem_free(g->alloc, group);
    kn_mem_free(g->alloc, done);
    return s;
}

/* A new float32 / int64 scalar or vector constant named base. */
static kn_status add_f32(kn_graph *g, kn_uses *u, const char *base, float v, kn_id *out)
{
    return kn_rw_add_const(g, u, base, KN_F32, 0, NULL, &v, 4, out);
}

/* The type of x with its last dimension set to `last`. */
static kn_status type_last(kn_graph *g, kn_id x, kn_dtype dt, int64_t last, kn_type *out)
{
    *out = g->values[x].type;
    out->dtype = dt;
    int32_t r = out->shape.rank;
    if (r < 1)
        return KN_OK;
    kn_dim *dims = kn_graph_alloc(g, (size_t)r * sizeof *dims);
    if (!dims)
        return KN_ERR_NOMEM;
    memcpy(dims, out->shape.dims, (size_t)r * sizeof *dims);
    dims[r - 1].value = last;
    dims[r - 1].sym = NULL;
    out->shape.dims = dims;
    return KN_OK;
}

/* The dynamic chain for input x (float32 [..., K]): *qx receives the int8
 * codes, *sx the per-row scales [..., 1]. */
static kn_status dynamic_quantize(kn_graph *g, kn_uses *u, const char *node_name, kn_id x, kn_id *qx, kn_id *sx)
{
    int64_t opset = kn_quant_onnx_opset(g, 13);
    kn_type tx = g->values[x].type, t1, t8;
    KN_TRY(type_last(g, x, KN_F32, 1, &t1));
    t8 = tx;
    t8.dtype = KN_I8;
    char base[1100];
    kn_id c127, cmin, lo, hi, a, m, sc, r;
    snprintf(base, sizeof base, "%s/q127", node_name);
    KN_TRY(add_f32(g, u, base, 127.0f, &c127));
    snprintf(base, sizeof base, "%s/scale_floor", node_name);
    KN_TRY(add_f32(g, u, base, FLT_MIN, &cmin));
    snprintf(base, sizeof base, "%s/qmin", node_name);
    KN_TRY(add_f32(g, u, base, -127.0f, &lo));
    snprintf(base, sizeof base, "%s/qmax", node_name);
    KN_TRY(add_f32(g, u, base, 127.0f, &hi));
    KN_TRY(kn_quant_add_node(g, u, node_name, "/act_abs", "", "Abs", opset, (kn_id[]){x}, 1, NULL, 0, x, &tx, &a));
    kn_attr kd;
    KN_TRY(kn_fm_attr_i(g, "keepdims", 1, &kd));
    if (opset >= 18) {
        kn_id ax;
        snprintf(base, sizeof base, "%s/act_axes", node_name);
        KN_TRY(kn_rw_add_const(g, u, base, KN_I64, 1, (int64_t[]){1}, (int64_t[]){-1}, 8, &ax));
        KN_TRY(kn_quant_add_node(g, u, node_name, "/act_absmax", "", "ReduceMax", opset, (kn_id[]){a, ax}, 2, &kd, 1,
                                 x, &t1, &m));
    } else {
        kn_attr at[2] = {kd};
        int64_t *axes = kn_graph_alloc(g, sizeof *axes);
        if (!axes)
            return KN_ERR_NOMEM;
        axes[0] = -1;
        memset(&at[1], 0, sizeof at[1]);
        KN_TRY(kn_graph_intern_cstr(g, "axes", &at[1].name));
        at[1].kind = KN_ATTR_INTS;
        at[1].n = 1;
        at[1].u.ints = axes;
        KN_TRY(kn_quant_add_node(g, u, node_name, "/act_absmax", "", "ReduceMax", opset, (kn_id[]){a}, 1, at, 2, x,
                                 &t1, &m));
    }
    KN_TRY(kn_quant_add_node(g, u, node_name, "/act_scale_raw", "", "Div", opset, (kn_id[]){m, c127}, 2, NULL, 0, x,
                             &t1, &sc));
    KN_TRY(kn_quant_add_node(g, u, node_name, "/act_scale", "", "Max", opset, (kn_id[]){sc, cmin}, 2, NULL, 0, x,
                             &t1, sx));
    KN_TRY(kn_quant_add_node(g, u, node_name, "/act_div", "", "Div", opset, (kn_id[]){x, *sx}, 2, NULL, 0, x, &tx,
                             &r));
    KN_TRY(kn_quant_add_node(g, u, node_name, "/act_round", "", "Round", opset, (kn_id[]){r}, 1, NULL, 0, x, &tx,
                             &a));
    KN_TRY(kn_quant_add_node(g, u, node_name, "/act_clip", "", "Clip", opset, (kn_id[]){a, lo, hi}, 3, NULL, 0, x,
                             &tx, &r));
    kn_attr to;
    KN_TRY(kn_fm_attr_i(g, "to", 3 /* INT8 */, &to));
    return kn_quant_add_node(g, u, node_name, "/act_int8", "", "Cast", opset, (kn_id[]){r}, 1, &to, 1, x, &t8, qx);
}

kn_status kn_quant_w8a8_node(kn_graph *g, kn_uses *u, kn_id k, const kn_quantize_opts *o, const kn_w8a8 *sw,
                             kn_diag *d, kn_qstats *st)
{
    float *w;
    int64_t K, N;
    kn_id bias;
    bool ok;
    KN_TRY(kn_quant_candidate(g, &g->nodes[k], &ok, &K, &N, &bias, &w));
    if (!ok)
        return KN_OK;
    const kn_node *n = &g->nodes[k];
    char node_name[1024];
    snprintf(node_name, sizeof node_name, "%s", n->name ? n->name : "");
    const float *sm = sw->smooth && k < sw->n0 ? sw->smooth[k] : NULL;
    bool folded = sm && sw->folded[k];
    double amax = 0;
    kn_status s = KN_OK;
    if (!o->act_dynamic && !sm)
        s = o->act_amax(o->ctx, n->name, g->values[n->inputs[0]].name, K, N, &amax, d);
    if (!o->act_dynamic && sm) { /* the smoothed input's range */
        const double *absmax = NULL;
        s = o->act_absmax(o->ctx, n->name, g->values[n->inputs[0]].name, K, &absmax, d);
        for (int64_t j = 0; s == KN_OK && j < K; j++)
            amax = fmax(amax, absmax[j] / sm[j]);
    }
    float *wt = s == KN_OK ? kn_mem_alloc(g->alloc, (size_t)(K * N) * sizeof *wt) : NULL;
    int8_t *qkn = s == KN_OK ? kn_mem_alloc(g->alloc, (size_t)(K * N) + 1) : NULL;
    float *inv = s == KN_OK && sm ? kn_mem_alloc(g->alloc, (size_t)K * sizeof *inv) : NULL;
    if (s == KN_OK && (!wt || !qkn || (sm && !inv)))
        s = KN_ERR_NOMEM;
    kn_qweights qw;
    memset(&qw, 0, sizeof qw);
    if (s == KN_OK) {
        /* per output channel: rows of Wᵀ (times s along K when smoothing) */
        for (int64_t k0 = 0; k0 < K; k0 += W8_T)
            for (int64_t j0 = 0; j0 < N; j0 += W8_T) {
                float blk[W8_T][W8_T];
                int64_t tk = K - k0 < W8_T ? K - k0 : W8_T, tj = N - j0 < W8_T ? N - j0 : W8_T;
                for (int64_t a = 0; a < tk; a++)
                    for (int64_t b = 0; b < tj; b++)
                        blk[b][a] = sm ? w[(k0 + a) * N + j0 + b] * sm[k0 + a] : w[(k0 + a) * N + j0 + b];
                for (int64_t b = 0; b < tj; b++)
                    memcpy(wt + (j0 + b) * K + k0, blk[b], (size_t)tk * sizeof(float));
            }
        kn_qscheme sch = {8, 0, true};
        s = kn_wq_rtn(wt, (uint32_t)N, (uint32_t)K, &sch, g->alloc, d, &qw);
        if (s != KN_OK)
            kn_diag_add(d, KN_NOTE, "quantize: while quantizing the weight of node '%s'", node_name);
    }
    if (s == KN_OK)
        for (int64_t k0 = 0; k0 < K; k0 += W8_T)
            for (int64_t j0 = 0; j0 < N; j0 += W8_T) {
                int8_t blk[W8_T][W8_T];
                int64_t tk = K - k0 < W8_T ? K - k0 : W8_T, tj = N - j0 < W8_T ? N - j0 : W8_T;
                for (int64_t b = 0; b < tj; b++)
                    for (int64_t a = 0; a < tk; a++)
                        blk[a][b] = (int8_t)qw.q[(j0 + b) * K + k0 + a];
                for (int64_t a = 0; a < tk; a++)
                    memcpy(qkn + (k0 + a) * N + j0, blk[a], (size_t)tj);
            }
    int64_t opset = kn_quant_onnx_opset(g, 13);
    kn_id x = n->inputs[0], wv = n->inputs[1];
    kn_id ins[7] = {x, KN_NONE, KN_NONE, KN_NONE, KN_NONE, KN_NONE, KN_NONE};
    kn_id xs = KN_NONE, xz = KN_NONE;
    char base[1100];
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_q8", g->values[wv].name);
        s = kn_rw_add_const(g, u, base, KN_I8, 2, (int64_t[]){K, N}, qkn, (size_t)(K * N), &ins[1]);
    }
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_scales", g->values[wv].name);
        s = kn_rw_add_const(g, u, base, KN_F32, 1, (int64_t[]){N}, qw.scales, (size_t)N * 4, &ins[3]);
    }
    if (s == KN_OK && sm && !folded) {
        for (int64_t j = 0; j < K; j++)
            inv[j] = 1.0f / sm[j];
        kn_id rs;
        snprintf(base, sizeof base, "%s_inv_smooth", g->values[wv].name);
        s = kn_rw_add_const(g, u, base, KN_F32, 1, (int64_t[]){K}, inv, (size_t)K * 4, &rs);
        if (s == KN_OK)
            s = kn_quant_add_node(g, u, node_name, "/smooth", "", "Mul", opset, (kn_id[]){ins[0], rs}, 2, NULL, 0,
                                  ins[0], &g->values[ins[0]].type, &ins[0]);
        st->n_scaled += s == KN_OK;
    }
    kn_id final_ins[2] = {KN_NONE, KN_NONE};
    if (s == KN_OK && !o->act_dynamic) {
        float sx = amax > 0 && isfinite(amax) ? (float)(amax / 127.0) : 1.0f;
        int8_t zp = 0;
        snprintf(base, sizeof base, "%s_scale", g->values[ins[0]].name);
        s = kn_rw_add_const(g, u, base, KN_F32, 0, NULL, &sx, 4, &xs);
        if (s == KN_OK) {
            snprintf(base, sizeof base, "%s_zero_point", g->values[ins[0]].name);
            s = kn_rw_add_const(g, u, base, KN_I8, 0, NULL, &zp, 1, &xz);
        }
        kn_type t8 = g->values[ins[0]].type;
        t8.dtype = KN_I8;
        if (s == KN_OK)
            s = kn_quant_add_node(g, u, node_name, "/quantize_input", "", "QuantizeLinear", opset,
                                  (kn_id[]){ins[0], xs, xz}, 3, NULL, 0, ins[0], &t8, &ins[0]);
        ins[2] = xs;
        ins[6] = bias;
    } else if (s == KN_OK) {
        /* codes and row scales; the MatMulIntegerToFloat (a_scale 1) ahead,
         * node k becomes the Mul by the row scales (then the bias Add) */
        kn_id one, acc, yb;
        s = dynamic_quantize(g, u, node_name, ins[0], &ins[0], &xs);
        snprintf(base, sizeof base, "%s/one", node_name);
        if (s == KN_OK)
            s = add_f32(g, u, base, 1.0f, &one);
        kn_type ty;
        if (s == KN_OK)
            s = type_last(g, x, KN_F32, N, &ty); /* n may have moved: nodes were added */
        if (s == KN_OK) {
            ins[2] = one;
            s = kn_quant_add_node(g, u, node_name, "/matmul_int8", "com.microsoft", "MatMulIntegerToFloat", 1, ins, 4,
                                  NULL, 0, g->nodes[k].outputs[0], &ty, &acc);
        }
        if (s == KN_OK && bias != KN_NONE) {
            s = kn_quant_add_node(g, u, node_name, "/dequantize", "", "Mul", opset, (kn_id[]){acc, xs}, 2, NULL, 0,
                                  g->nodes[k].outputs[0], &ty, &yb);
            final_ins[0] = yb;
            final_ins[1] = bias;
        } else {
            final_ins[0] = acc;
            final_ins[1] = xs;
        }
    }
    kn_qweights_free(&qw);
    kn_mem_free(g->alloc, w);
    kn_mem_free(g->alloc, wt);
    kn_mem_free(g->alloc, qkn);
    kn_mem_free(g->alloc, inv);
    KN_TRY(s);
    kn_fm m = {0};
    kn_fm_add(&m, k);
    if (o->act_dynamic)
        KN_TRY(kn_fm_replace(g, u, &m, g->nodes[k].outputs[0], bias == KN_NONE ? KN_OP_Mul : KN_OP_Add, opset,
                             final_ins, 2, NULL, 0));
    else
        KN_TRY(kn_fm_replace(g, u, &m, g->nodes[k].outputs[0], KN_OP_MS_MatMulIntegerToFloat, 1, ins,
                             bias == KN_NONE ? 4 : 7, NULL, 0));
    st->count++;
    st->before += (uint64_t)(K * N) * 4;
    st->after += (uint64_t)(K * N) + (uint64_t)N * 4;
    return KN_OK;
}
