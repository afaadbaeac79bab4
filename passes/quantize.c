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
 * the smallest power-of-two block (from 16) that holds it, not padding. */
#include "passes/fuse_match.h"
#include "passes/passes.h"
#include "runtime/cpu/util.h"

#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

kn_status kn_quant_rtn(void *ctx, const kn_quant_weight *q, kn_diag *d)
{
    (void)ctx;
    (void)d;
    int64_t nblk = (q->k + q->group - 1) / q->group, blob = q->group * q->bits / 8, zrow = (nblk * q->bits + 7) / 8;
    int qmax = (1 << q->bits) - 1;
    memset(q->codes, 0, (size_t)(q->n * nblk * blob));
    memset(q->zero_points, 0, (size_t)(q->n * zrow));
    for (int64_t n = 0; n < q->n; n++)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t k0 = b * q->group, k1 = k0 + q->group < q->k ? k0 + q->group : q->k;
            float mn = 0, mx = 0;
            for (int64_t k = k0; k < k1; k++) {
                float v = q->w[k * q->n + n];
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
            float scale = (mx - mn) / (float)qmax;
            if (!(scale > 0) || !isfinite(scale))
                scale = 1.0f; /* an all-zero group (or non-finite weights: clamped below) */
            float zf = -mn / scale;
            int zp = zf < 0 ? 0 : zf > (float)qmax ? qmax : (int)roundf(zf);
            float rs = 1.0f / scale;
            q->scales[n * nblk + b] = scale;
            q->zero_points[n * zrow + b * q->bits / 8] |= (uint8_t)(zp << ((b * q->bits) % 8));
            uint8_t *row = q->codes + (n * nblk + b) * blob;
            for (int64_t k = k0; k < k1; k++) {
                float r = roundf(q->w[k * q->n + n] * rs + (float)zp);
                int c = !(r >= 0) ? 0 : r > (float)qmax ? qmax : (int)r;
                int64_t bit = (k - k0) * q->bits;
                row[bit / 8] |= (uint8_t)(c << (bit % 8));
            }
        }
    return KN_OK;
}

static bool kept(const kn_quantize_opts *o, const kn_node *n)
{
    for (uint32_t i = 0; i < o->n_keep; i++)
        if (fnmatch(o->keep[i], n->name, 0) == 0 || fnmatch(o->keep[i], n->op_type, 0) == 0)
            return true;
    return false;
}

static int64_t attr_int(const kn_node *n, const char *name, int64_t def)
{
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->kind == KN_ATTR_INT ? a->u.i : def;
}

static float attr_float(const kn_node *n, const char *name, float def)
{
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->kind == KN_ATTR_FLOAT ? a->u.f : def;
}

/* Whether node n is a candidate (*ok), and then its weight as [K, N]
 * row-major float32 in *tmp (a copy, to free) and its bias value (or
 * KN_NONE). KN_ERR_NOMEM when the copy cannot be made. */
static kn_status candidate(kn_graph *g, const kn_node *n, bool *ok, int64_t *K, int64_t *N, kn_id *bias, float **tmp)
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
        if (attr_int(n, "transA", 0) || attr_float(n, "alpha", 1) != 1.0f || attr_float(n, "beta", 1) != 1.0f ||
            (a->shape.rank >= 0 && a->shape.rank != 2))
            return KN_OK;
        trans = attr_int(n, "transB", 0) != 0;
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

static kn_status quantize_node(kn_graph *g, kn_uses *u, kn_id k, const kn_quantize_opts *o, kn_diag *d,
                               uint32_t *count, uint64_t *bytes_before, uint64_t *bytes_after)
{
    float *w;
    int64_t K, N;
    kn_id bias;
    bool ok;
    KN_TRY(candidate(g, &g->nodes[k], &ok, &K, &N, &bias, &w));
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
    kn_status s = codes && zps && scales ? KN_OK : KN_ERR_NOMEM;
    const kn_node *n = &g->nodes[k];
    kn_quant_weight q = {n->name, w, K, N, o->bits, grp, codes, scales, zps};
    if (s == KN_OK)
        s = o->quantize ? o->quantize(o->ctx, &q, d) : kn_quant_rtn(NULL, &q, d);
    char base[1024];
    kn_id ins[6] = {n->inputs[0], KN_NONE, KN_NONE, KN_NONE, KN_NONE, bias};
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_q%d", g->values[n->inputs[1]].name, o->bits);
        s = kn_rw_add_const(g, u, base, KN_U8, 3, (int64_t[]){N, nblk, blob}, codes, ncodes, &ins[1]);
    }
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_scales", g->values[n->inputs[1]].name);
        s = kn_rw_add_const(g, u, base, KN_F32, 2, (int64_t[]){N, nblk}, scales, (size_t)(N * nblk) * 4, &ins[2]);
    }
    if (s == KN_OK) {
        snprintf(base, sizeof base, "%s_zero_points", g->values[n->inputs[1]].name);
        s = kn_rw_add_const(g, u, base, KN_U8, 2, (int64_t[]){N, zrow}, zps, nzp, &ins[3]);
    }
    kn_mem_free(g->alloc, w);
    kn_mem_free(g->alloc, codes);
    kn_mem_free(g->alloc, zps);
    kn_mem_free(g->alloc, scales);
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
    (*count)++;
    *bytes_before += (uint64_t)(K * N) * 4;
    *bytes_after += ncodes + nzp + (uint64_t)(N * nblk) * 4;
    return KN_OK;
}

kn_status kn_pass_quantize(kn_graph *g, const kn_quantize_opts *o, kn_diag *d)
{
    if (!o || o->bits == 0)
        return KN_OK;
    if ((o->bits != 4 && o->bits != 8) || o->group_size < 16 || (o->group_size & (o->group_size - 1)) ||
        o->group_size > (1 << 20)) {
        kn_diag_add(d, KN_ERROR, "--quantize: %d-bit weights with group size %lld not supported (4 or 8 bits; "
                                 "group a power of two from 16)",
                    o->bits, (long long)o->group_size);
        return KN_ERR_INVALID;
    }
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    uint32_t count = 0;
    uint64_t before = 0, after = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        const kn_node *n = &g->nodes[k];
        if (!u.dead[k] && (n->op == KN_OP_MatMul || n->op == KN_OP_Gemm) && !kept(o, n))
            s = quantize_node(g, &u, k, o, d, &count, &before, &after);
    }
    if (s != KN_OK) {
        kn_uses_free(g, &u);
        return s;
    }
    if (o->verbose) {
        bool mb = before >= 1000000;
        kn_diag_add(d, KN_NOTE, "quantize: %u MatMul/Gemm weights to %d-bit, group %lld (%s): %.2f %s -> %.2f %s",
                    count, o->bits, (long long)o->group_size, o->quantize ? "custom" : "RTN",
                    (double)before / (mb ? 1e6 : 1e3), mb ? "MB" : "kB", (double)after / (mb ? 1e6 : 1e3),
                    mb ? "MB" : "kB");
    }
    return kn_uses_finish(g, &u);
}
