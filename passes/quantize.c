/* Weight-only quantization at compile time (kiln compile --quantize
 * int4-weight-only | int8-weight-only): every MatMul whose B is a constant
 * float32 matrix [K, N], and every Gemm A·B(ᵀ) (+ C) with alpha = beta = 1,
 * no transA, a constant float32 B and a C of N elements, becomes
 * com.microsoft MatMulNBits — kiln's weight-only linear op, which the CPU
 * backend and the CUDA W4A16 kernel run from the packed weights: codes
 * [N, k_blocks, group * bits / 8] (low bits first), float32 scales
 * [N, k_blocks] and packed uint8 zero points [N, ceil(k_blocks * bits / 8)].
 *
 * The weight quantizer is a callback (kn_quantize_opts.quantize), so the
 * calibration-based algorithms (GPTQ, AWQ) plug in with the same packing;
 * the built-in one is round-to-nearest (kn_quant_rtn): per group of
 * `group` weights along K, asymmetric, the range widened to include 0,
 * scale = (max - min) / (2^bits - 1), zero point = round(-min / scale),
 * code = round(w * (1 / scale) + zero point), rounding half away from zero
 * in float — the arithmetic of ONNX Runtime's MatMulNBitsQuantizer default
 * (MLAS BlockwiseQuantizer), so both write the same bytes (checked by the
 * quantize_llama_matches_ort test). Nodes matched by a --keep-fp
 * pattern (name or op type) stay float. A K shorter than the group gets
 * the smallest power-of-two block (from 16) that holds it, not padding.
 *
 * A quantizer that scales the layer's input channels (AWQ: the codes stand
 * for W diag(s)) gets a Mul by the float32 constant 1/s on the input right
 * before its MatMulNBits; nothing is folded into other ops, so every
 * reader of the input other than this layer sees it unchanged.
 *
 * W8A8 (kn_quantize_opts.mode KN_QUANT_W8A8, --quantize int8: int8
 * per-channel weights, static or per-token dynamic int8 activations,
 * SmoothQuant) is in quantize_w8a8.c; this file holds the driver, the
 * shared helpers (quantize_internal.h) and the weight-only rewrite.
 *
 * New nodes are appended while the pass runs and moved in front of their
 * first reader at the end (chains of new nodes in dependency order), so
 * the node list stays in topological order. */
#include "passes/quantize_internal.h"
#include "kiln/quant.h"
#include "runtime/cpu/util.h"

#include <fnmatch.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The code of y = w / scale + zero point: roundf(y) (half away from zero)
 * clamped to [0, qmax], NaN giving 0 — without a branch on the data: y is
 * first clamped to [-1, qmax + 1] (which changes no code), then truncated
 * through int, and the exact remainder moves it one up or down. */
static inline int rtn_code(float y, int qmax)
{
    y = !(y >= -1.0f) ? -1.0f : y;
    y = y > (float)(qmax + 1) ? (float)(qmax + 1) : y;
    int t = (int)y;
    float r = y - (float)t; /* exact */
    t += (r >= 0.5f) - (r <= -0.5f);
    return t < 0 ? 0 : t > qmax ? qmax : t;
}

enum { RTN_COLS = 64 }; /* columns of W per pass: its rows are read in order */

kn_status kn_quant_rtn(void *ctx, const kn_quant_weight *q, kn_diag *d)
{
    (void)ctx;
    (void)d;
    int64_t nblk = (q->k + q->group - 1) / q->group, blob = q->group * q->bits / 8, zrow = (nblk * q->bits + 7) / 8;
    int qmax = (1 << q->bits) - 1;
    memset(q->codes, 0, (size_t)(q->n * nblk * blob));
    memset(q->zero_points, 0, (size_t)(q->n * zrow));
    float mn[RTN_COLS], mx[RTN_COLS], rs[RTN_COLS], zf[RTN_COLS];
    for (int64_t n0 = 0; n0 < q->n; n0 += RTN_COLS) {
        int64_t nt = q->n - n0 < RTN_COLS ? q->n - n0 : RTN_COLS;
        for (int64_t b = 0; b < nblk; b++) {
            int64_t k0 = b * q->group, k1 = k0 + q->group < q->k ? k0 + q->group : q->k;
            for (int64_t j = 0; j < nt; j++)
                mn[j] = mx[j] = 0;
            for (int64_t k = k0; k < k1; k++) {
                const float *row = q->w + k * q->n + n0;
                for (int64_t j = 0; j < nt; j++) {
                    float v = row[j];
                    mn[j] = v < mn[j] ? v : mn[j];
                    mx[j] = v > mx[j] ? v : mx[j];
                }
            }
            for (int64_t j = 0; j < nt; j++) {
                int64_t n = n0 + j;
                float scale = (mx[j] - mn[j]) / (float)qmax;
                if (!(scale > 0) || !isfinite(scale))
                    scale = 1.0f; /* an all-zero group (or non-finite weights: clamped below) */
                float z = -mn[j] / scale;
                int zp = z < 0 ? 0 : z > (float)qmax ? qmax : (int)roundf(z);
                rs[j] = 1.0f / scale;
                zf[j] = (float)zp;
                q->scales[n * nblk + b] = scale;
                q->zero_points[n * zrow + b * q->bits / 8] |= (uint8_t)(zp << ((b * q->bits) % 8));
            }
            for (int64_t k = k0; k < k1; k++) {
                const float *row = q->w + k * q->n + n0;
                int64_t bit = (k - k0) * q->bits;
                for (int64_t j = 0; j < nt; j++) {
                    int c = rtn_code(row[j] * rs[j] + zf[j], qmax);
                    q->codes[((n0 + j) * nblk + b) * blob + bit / 8] |= (uint8_t)(c << (bit % 8));
                }
            }
        }
    }
    return KN_OK;
}

bool kn_quant_kept(const kn_quantize_opts *o, const kn_node *n)
{
    for (uint32_t i = 0; i < o->n_keep; i++)
        if (fnmatch(o->keep[i], n->name, 0) == 0 || fnmatch(o->keep[i], n->op_type, 0) == 0)
            return true;
    return false;
}

static float attr_float(const kn_node *n, const char *name, float def)
{
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->kind == KN_ATTR_FLOAT ? a->u.f : def;
}

/* Whether node n is a candidate (*ok), and then its weight as [K, N]
 * row-major float32 in *tmp (a copy, to free) and its bias value (or
 * KN_NONE). KN_ERR_NOMEM when the copy cannot be made. */
kn_status kn_quant_candidate(kn_graph *g, const kn_node *n, bool *ok, int64_t *K, int64_t *N, kn_id *bias, float **tmp)
{
    *ok = false;
    *tmp = NULL;
    *bias = KN_NONE;
    if (*n->domain || n->n_outputs != 1 || n->n_inputs < 2 || !kn_rw_has_in(n, 0) || !kn_rw_has_in(n, 1))
        return KN_OK;
    const kn_tensor *t = kn_rw_const(g, n->inputs[1]);
    const kn_type *a = kn_rw_type(g, n->inputs[0]);
    if (!t || !t->data || t->dtype != KN_F32 || t->rank != 2 || !a || a->dtype != KN_F32 || t->n_elems == 0)
        return KN_OK;
    bool trans = false;
    if (n->op == KN_OP_Gemm) {
        if (kn_node_attr_int(n, "transA", 0) || attr_float(n, "alpha", 1) != 1.0f || attr_float(n, "beta", 1) != 1.0f ||
            (a->shape.rank >= 0 && a->shape.rank != 2))
            return KN_OK;
        trans = kn_node_attr_int(n, "transB", 0) != 0;
        if (kn_rw_has_in(n, 2)) {
            const kn_type *c = kn_rw_type(g, n->inputs[2]);
            int64_t cn = c ? kn_shape_numel(&c->shape) : -1;
            int64_t want = trans ? t->dims[0] : t->dims[1];
            if (!c || c->dtype != KN_F32 || cn != want || c->shape.rank < 1 ||
                (c->shape.rank == 2 && c->shape.dims[0].value != 1) || c->shape.rank > 2)
                return KN_OK;
            *bias = n->inputs[2];
        }
    } else if (n->op != KN_OP_MatMul || n->n_inputs != 2) {
        return KN_OK;
    }
    *K = trans ? t->dims[1] : t->dims[0];
    *N = trans ? t->dims[0] : t->dims[1];
    float *buf = kn_mem_alloc(g->alloc, (size_t)t->n_elems * sizeof *buf);
    if (!buf)
        return KN_ERR_NOMEM;
    for (int64_t k = 0; k < *K; k++)
        for (int64_t j = 0; j < *N; j++)
            memcpy(&buf[k * *N + j], (const char *)t->data + 4 * (trans ? j * *K + k : k * *N + j), 4);
    *tmp = buf;
    *ok = true;
    return KN_OK;
}

/* The graph's ai.onnx opset (at least `min`). */
int64_t kn_quant_onnx_opset(const kn_graph *g, int64_t min)
{
    int64_t v = min;
    for (uint32_t i = 0; g->info && i < g->info->n_opsets; i++)
        if (kn_domain_of(g->info->opsets[i].domain) == KN_DOM_ONNX && g->info->opsets[i].version > v)
            v = g->info->opsets[i].version;
    return v;
}

kn_status kn_quant_add_node(kn_graph *g, kn_uses *u, const char *node_name, const char *suffix, const char *domain,
                            const char *op_name, int64_t opset, const kn_id *ins, uint32_t n_ins, const kn_attr *at,
                            uint32_t n_at, kn_id like, const kn_type *ty, kn_id *out)
{
    char buf[1024];
    kn_value v = {0};
    snprintf(buf, sizeof buf, "%s%s", g->values[like].name, suffix);
    KN_TRY(kn_rw_unique_name(g, buf, &v.name));
    v.kind = KN_VAL_NODE;
    v.type = *ty;
    v.producer = g->n_nodes;
    v.out_index = 0;
    KN_TRY(kn_rw_add_value(g, u, &v, out));
    kn_node n = {0};
    snprintf(buf, sizeof buf, "%s%s", node_name, suffix);
    KN_TRY(kn_graph_intern_cstr(g, buf, &n.name));
    KN_TRY(kn_graph_intern_cstr(g, op_name, &n.op_type));
    KN_TRY(kn_graph_intern_cstr(g, domain, &n.domain));
    n.opset = opset;
    n.op = kn_op_lookup(domain, op_name, n.opset, NULL);
    n.n_inputs = n_ins;
    n.n_outputs = 1;
    n.inputs = kn_graph_alloc(g, ((size_t)n_ins + 1) * sizeof(kn_id));
    n.outputs = kn_graph_alloc(g, sizeof(kn_id));
    if (!n.inputs || !n.outputs)
        return KN_ERR_NOMEM;
    memcpy(n.inputs, ins, n_ins * sizeof *ins);
    n.outputs[0] = *out;
    if (n_at) {
        n.attrs = kn_graph_alloc(g, n_at * sizeof *n.attrs);
        if (!n.attrs)
            return KN_ERR_NOMEM;
        memcpy(n.attrs, at, n_at * sizeof *at);
        n.n_attrs = n_at;
    }
    for (uint32_t i = 0; i < n.n_inputs; i++)
        if (n.inputs[i] != KN_NONE)
            u->readers[n.inputs[i]]++;
    kn_id id;
    return kn_graph_add_node(g, &n, &id);
}

/* Weight-only: node k -> [Mul(x, 1/s) ->] MatMulNBits. */
static kn_status quantize_node(kn_graph *g, kn_uses *u, kn_id k, const kn_quantize_opts *o, kn_diag *d, kn_qstats *st)
{
    float *w;
    int64_t K, N;
    kn_id bias;
    bool ok;
    KN_TRY(kn_quant_candidate(g, &g->nodes[k], &ok, &K, &N, &bias, &w));
    if (!ok)
        return KN_OK;
    int64_t grp = o->group_size;
    while (grp > 16 && grp / 2 >= K) /* a short K: the smallest power-of-two block holding it */
        grp /= 2;
    int64_t nblk = (K + grp - 1) / grp, blob = grp * o->bits / 8;
    int64_t zrow = (nblk * o->bits + 7) / 8;
    size_t ncodes = (size_t)(N * nblk * blob), nzp = (size_t)(N * zrow);
    uint8_t *codes = kn_mem_alloc(g->alloc, ncodes + 1), *zps = kn_mem_alloc(g->alloc, nzp + 1);
    float *scales = kn_mem_alloc(g->alloc, (size_t)(N * nblk) * sizeof *scales);
    float *in_scale = kn_mem_alloc(g->alloc, (size_t)K * sizeof *in_scale);
    kn_status s = codes && zps && scales && in_scale ? KN_OK : KN_ERR_NOMEM;
    const kn_node *n = &g->nodes[k];
    char node_name[1024];
    snprintf(node_name, sizeof node_name, "%s", n->name ? n->name : "");
    bool scaled = false;
    if (s == KN_OK) {
        for (int64_t i = 0; i < K; i++)
            in_scale[i] = 1.0f;
        kn_quant_weight q = {n->name, w, K, N, o->bits, grp, codes, scales, zps, in_scale};
        s = o->quantize ? o->quantize(o->ctx, &q, d) : kn_quant_rtn(NULL, &q, d);
        for (int64_t i = 0; s == KN_OK && i < K; i++) {
            if (!(in_scale[i] > 0) || !isfinite(in_scale[i])) {
                kn_diag_add(d, KN_ERROR, "quantize: node '%s': input scale %g of channel %lld is not positive",
                            node_name, (double)in_scale[i], (long long)i);
                s = KN_ERR_INTERNAL;
            }
            scaled |= in_scale[i] != 1.0f;
            in_scale[i] = 1.0f / in_scale[i];
        }
    }
    char base[1024];
    kn_id ins[6] = {n->inputs[0], KN_NONE, KN_NONE, KN_NONE, KN_NONE, bias}, wv = n->inputs[1], rs = KN_NONE;
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_q%d", g->values[wv].name, o->bits);
        s = kn_rw_add_const(g, u, base, KN_U8, 3, (int64_t[]){N, nblk, blob}, codes, ncodes, &ins[1]);
    }
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_scales", g->values[wv].name);
        s = kn_rw_add_const(g, u, base, KN_F32, 2, (int64_t[]){N, nblk}, scales, (size_t)(N * nblk) * 4, &ins[2]);
    }
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_zero_points", g->values[wv].name);
        s = kn_rw_add_const(g, u, base, KN_U8, 2, (int64_t[]){N, zrow}, zps, nzp, &ins[3]);
    }
    if (s == KN_OK && scaled) {
        snprintf(base, sizeof base, "%s_inv_in_scale", g->values[wv].name);
        s = kn_rw_add_const(g, u, base, KN_F32, 1, (int64_t[]){K}, in_scale, (size_t)K * 4, &rs);
        if (s == KN_OK)
            s = kn_quant_add_node(g, u, node_name, "/input_scale", "", "Mul", kn_quant_onnx_opset(g, 13),
                                  (kn_id[]){ins[0], rs}, 2, NULL, 0, ins[0], &g->values[ins[0]].type, &ins[0]);
    }
    kn_mem_free(g->alloc, w);
    kn_mem_free(g->alloc, codes);
    kn_mem_free(g->alloc, zps);
    kn_mem_free(g->alloc, scales);
    kn_mem_free(g->alloc, in_scale);
    KN_TRY(s);
    kn_attr at[4];
    KN_TRY(kn_fm_attr_i(g, "K", K, &at[0]));
    KN_TRY(kn_fm_attr_i(g, "N", N, &at[1]));
    KN_TRY(kn_fm_attr_i(g, "bits", o->bits, &at[2]));
    KN_TRY(kn_fm_attr_i(g, "block_size", grp, &at[3]));
    kn_fm m = {0};
    kn_fm_add(&m, k);
    KN_TRY(kn_fm_replace(g, u, &m, g->nodes[k].outputs[0], KN_OP_MS_MatMulNBits, 1, ins, bias == KN_NONE ? 4 : 6, at,
                         4));
    st->count++;
    st->n_scaled += scaled;
    st->before += (uint64_t)(K * N) * 4;
    st->after += ncodes + nzp + (uint64_t)(N * nblk) * 4 + (scaled ? (uint64_t)K * 4 : 0);
    return KN_OK;
}

/* Puts appended node i (>= n0) and, first, the appended nodes it reads
 * into nodes[*at...] (each once). */
static void place(const kn_graph *g, uint32_t n0, uint32_t i, kn_node *nodes, uint32_t *at, bool *placed)
{
    if (placed[i - n0])
        return;
    placed[i - n0] = true;
    const kn_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->n_inputs; j++) {
        kn_id v = n->inputs[j];
        if (v != KN_NONE && g->values[v].kind == KN_VAL_NODE && g->values[v].producer >= n0 &&
            g->values[v].producer < g->n_nodes)
            place(g, n0, g->values[v].producer, nodes, at, placed);
    }
    if (*at < g->n_nodes)
        nodes[(*at)++] = *n;
}

/* Moves the nodes appended by kn_quant_add_node (the last n_pre) right
 * before their first reader, in dependency order (chains of appended
 * nodes included). */
static kn_status reorder(kn_graph *g, uint32_t n_pre)
{
    if (!n_pre)
        return KN_OK;
    uint32_t n0 = g->n_nodes - n_pre;
    kn_node *nodes = kn_mem_alloc(g->alloc, (size_t)g->n_nodes * sizeof *nodes);
    bool *placed = kn_mem_alloc(g->alloc, n_pre);
    if (!nodes || !placed) {
        kn_mem_free(g->alloc, nodes);
        kn_mem_free(g->alloc, placed);
        return KN_ERR_NOMEM;
    }
    memset(placed, 0, n_pre);
    uint32_t at = 0;
    for (uint32_t i = 0; i < n0; i++) {
        const kn_node *n = &g->nodes[i];
        for (uint32_t j = 0; j < n->n_inputs; j++) {
            kn_id v = n->inputs[j];
            if (v != KN_NONE && g->values[v].kind == KN_VAL_NODE && g->values[v].producer >= n0 &&
                g->values[v].producer < g->n_nodes)
                place(g, n0, g->values[v].producer, nodes, &at, placed);
        }
        if (at < g->n_nodes)
            nodes[at++] = *n;
    }
    kn_mem_free(g->alloc, placed);
    if (at != g->n_nodes) {
        kn_mem_free(g->alloc, nodes);
        return KN_ERR_INTERNAL;
    }
    memcpy(g->nodes, nodes, (size_t)g->n_nodes * sizeof *nodes);
    kn_mem_free(g->alloc, nodes);
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (uint32_t j = 0; j < g->nodes[i].n_outputs; j++)
            if (g->nodes[i].outputs[j] != KN_NONE) {
                g->values[g->nodes[i].outputs[j]].producer = i;
                g->values[g->nodes[i].outputs[j]].out_index = j;
            }
    return KN_OK;
}

kn_status kn_pass_quantize(kn_graph *g, const kn_quantize_opts *o, kn_diag *d)
{
    if (!o || o->bits == 0)
        return KN_OK;
    bool w8a8 = o->mode == KN_QUANT_W8A8;
    if (w8a8 ? (o->bits != 8 || (!o->act_dynamic && !o->act_amax) || !(o->smooth_alpha >= 0 && o->smooth_alpha <= 1) ||
                (o->smooth_alpha > 0 && !o->act_absmax))
             : ((o->bits != 4 && o->bits != 8) || o->group_size < 16 || (o->group_size & (o->group_size - 1)) ||
                o->group_size > (1 << 20))) {
        kn_diag_add(d, KN_ERROR, "--quantize: %d-bit weights with group size %lld not supported (4 or 8 bits; "
                                 "group a power of two from 16; W8A8 needs activation thresholds, or "
                                 "dynamic scales, and SmoothQuant per-channel ranges with alpha in [0, 1])",
                    o->bits, (long long)o->group_size);
        return KN_ERR_INVALID;
    }
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    kn_qstats st = {0};
    uint32_t n0 = g->n_nodes;
    kn_w8a8 w = {NULL, NULL, n0};
    kn_status s = w8a8 && o->smooth_alpha > 0 ? kn_quant_w8a8_smooth(g, &u, o, d, &w, &st) : KN_OK;
    for (kn_id k = 0; k < n0 && s == KN_OK; k++) {
        const kn_node *n = &g->nodes[k];
        if (!u.dead[k] && (n->op == KN_OP_MatMul || n->op == KN_OP_Gemm) && !kn_quant_kept(o, n))
            s = w8a8 ? kn_quant_w8a8_node(g, &u, k, o, &w, d, &st) : quantize_node(g, &u, k, o, d, &st);
    }
    kn_quant_w8a8_free(g, &w);
    uint32_t n_pre = g->n_nodes - n0;
    if (s == KN_OK && n_pre) { /* u.dead covers the nodes there were at kn_uses_init */
        bool *dead = kn_mem_alloc(g->alloc, (size_t)g->n_nodes + 1);
        if (dead) {
            memset(dead, 0, (size_t)g->n_nodes + 1);
            memcpy(dead, u.dead, n0);
            kn_mem_free(g->alloc, u.dead);
            u.dead = dead;
        } else {
            s = KN_ERR_NOMEM;
        }
    }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    if (o->verbose) {
        bool mb = st.before >= 1000000;
        char scaled[64] = "";
        if (st.n_scaled)
            snprintf(scaled, sizeof scaled, "; %u inputs scaled", st.n_scaled);
        if (st.n_folded)
            snprintf(scaled + strlen(scaled), sizeof scaled - strlen(scaled), "; %u smoothed into a norm",
                     st.n_folded);
        char how[96];
        if (w8a8)
            snprintf(how, sizeof how, "int8 W8A8 (per-channel weights, %s activations%s)",
                     o->act_dynamic ? "per-token dynamic" : "per-tensor static",
                     o->smooth_alpha > 0 ? ", SmoothQuant" : "");
        else
            snprintf(how, sizeof how, "%d-bit, group %lld (%s)", o->bits, (long long)o->group_size,
                     o->method ? o->method : o->quantize ? "custom" : "RTN");
        kn_diag_add(d, KN_NOTE, "quantize: %u MatMul/Gemm weights to %s: %.2f %s -> %.2f %s%s", st.count, how,
                    (double)st.before / (mb ? 1e6 : 1e3), mb ? "MB" : "kB", (double)st.after / (mb ? 1e6 : 1e3),
                    mb ? "MB" : "kB", scaled);
    }
    KN_TRY(kn_uses_finish(g, &u));
    return reorder(g, n_pre);
}
