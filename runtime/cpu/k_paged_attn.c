/* kiln.PagedAttention (made by passes/kv_cache.c): attention over the
 * runtime's paged KV cache. Inputs Q [batch, q_heads, seq, head_dim], the
 * new tokens' K and V [batch, kv_heads, seq, head_dim] and an optional mask
 * that broadcasts to [batch, q_heads, seq, past + seq] (bool, or float
 * added to the scores). Each batch row's new K/V are written into its
 * sequence's blocks at positions past ... past + seq - 1 (past: the tokens
 * the cache holds for it), then every query row attends over all past +
 * seq positions, reading the blocks in place through the block table.
 * With causal=1 (passes/kv_mask.c, which drops a mask it proved causal)
 * query i sees only positions j <= past + i (and, with a mask too, those
 * the mask lets through): the later ones are left out of the row, which
 * gives the same result as a mask of -inf (or of float32's lowest, whose
 * exp is 0 in double) there. Numerics as ONNX Attention's CPU kernel
 * (k_fused_attn.c): scores, softmax and the weighted sum in double,
 * rounded once to the output's dtype.
 *
 * Q, K, V (and cos/sin) are float32, float16 or bfloat16, all of one
 * dtype, the output Q's (passes/precision.c converts the node with the
 * rest of a --precision fp16/bf16 model). The cache stores its own dtype
 * (kiln.kv.dtype, kn_kv_config.dtype): K and V are rounded to it as they
 * are appended (nothing to round when it is theirs: a float16 node over a
 * float16 cache stores its K/V as they are) and read back widened to
 * double.
 *
 * With rotary=1 (passes/kv_rotary.c) inputs 4 and 5 are cos and sin,
 * broadcasting to [batch, 1, seq, head_dim] (1 on the heads axis: the
 * same rotation for every head of Q and K): the new tokens' K rows are
 * rotated (rotate-half, as kiln.RotaryHalf: x * cos + rotate_half(x) *
 * sin in double, rounded once to K's dtype) as they are appended, and each
 * Q row the same way (rounded to Q's dtype) before its scores; the result
 * is the unfused RotaryHalf -> PagedAttention graph's to the bit. */
#include "runtime/cpu/attn.h"
#include "runtime/cpu/util.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <string.h>

/* Strides of the mask against [batch, q_heads, seq, total] (0 where it
 * broadcasts); its last dim must be total (no padding). */
static kn_status mask_strides(kn_kctx *c, const kn_rt_tensor *m, const int64_t *sc, int64_t *st)
{
    if (m->rank < 1 || m->rank > 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "mask must have rank 1 to 4, got %d", (int)m->rank);
    if (m->dtype != KN_BOOL && !kn_dt_is_float(m->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "mask must be bool or float, got %s", kn_dtype_name(m->dtype));
    int64_t stride = 1;
    for (int d = 3; d >= 0; d--) {
        int md = d - (4 - m->rank);
        int64_t n = md >= 0 ? m->dims[md] : 1;
        if (!(n == sc[d] || (n == 1 && d != 3) || (n == 1 && sc[d] == 1)))
            return kn_kctx_fail(c, KN_ERR_INVALID,
                                "mask dim %d (%lld) does not broadcast to the scores [%lld, %lld, %lld, %lld] (past + "
                                "new tokens = %lld: does the cache hold what the mask covers?)",
                                md, (long long)n, (long long)sc[0], (long long)sc[1], (long long)sc[2],
                                (long long)sc[3], (long long)sc[3]);
        st[d] = n == 1 ? 0 : stride;
        stride *= n;
    }
    return KN_OK;
}

static bool attn_dtype(kn_dtype t)
{
    return t == KN_F32 || t == KN_F16 || t == KN_BF16;
}

/* Element i of p (float32, float16 or bfloat16) widened. */
static inline double ld(kn_dtype t, const void *p, int64_t i)
{
    if (t == KN_F32)
        return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    return t == KN_F16 ? kn_f16_to_f32(h) : kn_bf16_to_f32(h);
}

/* v rounded to t (as kn_set_f64 stores it). */
static double round_to(kn_dtype t, double v)
{
    uint32_t b = 0;
    kn_set_f64(t, &b, 0, v);
    return ld(t, &b, 0);
}

static kn_status check_4d(kn_kctx *c, const kn_rt_tensor *t, const char *what, kn_dtype dt, int64_t batch,
                          int64_t heads, int64_t seq, int64_t dim)
{
    if (!t || t->dtype != dt || t->rank != 4 || t->dims[0] != batch || t->dims[1] != heads ||
        t->dims[2] != seq || t->dims[3] != dim)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be %s [%lld, %lld, %lld, %lld]", what, kn_dtype_name(dt),
                            (long long)batch, (long long)heads, (long long)seq, (long long)dim);
    return KN_OK;
}

/* cos and sin of a rotary node, with their element strides over
 * [batch, seq, head_dim] (0 where they broadcast). */
typedef struct rope {
    const void *cs, *sn;
    kn_dtype dt; /* of cos and sin */
    int64_t cst[3], sst[3];
} rope;

static kn_status table_strides(kn_kctx *c, const kn_rt_tensor *t, const char *what, kn_dtype dt, int64_t batch,
                               int64_t seq, int64_t hd, int64_t *st)
{
    if (!t || t->dtype != dt || t->rank < 1 || t->rank > 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "rotary: %s must be %s (Q's dtype) of rank 1 to 4", what,
                            kn_dtype_name(dt));
    int64_t want[4] = {batch, 1, seq, hd}, s4[4], stride = 1;
    for (int d = 3; d >= 0; d--) {
        int md = d - (4 - t->rank);
        int64_t n = md >= 0 ? t->dims[md] : 1;
        if (n != 1 && n != want[d])
            return kn_kctx_fail(c, KN_ERR_INVALID,
                                "rotary: %s dim %d (%lld) does not broadcast to [batch %lld, 1, seq %lld, head_dim %lld]",
                                what, md, (long long)n, (long long)batch, (long long)seq, (long long)hd);
        s4[d] = n == 1 ? 0 : stride;
        stride *= n;
    }
    st[0] = s4[0];
    st[1] = s4[2];
    st[2] = s4[3];
    return KN_OK;
}

/* out = RotaryHalf(x) for the head_dim-long row x (dtype xt, elements
 * x0 ...) of batch row b, token i, rounded to xt (kiln.RotaryHalf's
 * arithmetic: runtime/cpu/k_fused_rotary.c). */
static void rope_row(const rope *r, kn_dtype xt, const void *x, int64_t x0, int64_t b, int64_t i, int64_t hd,
                     double *out)
{
    int64_t h = hd / 2, c0 = b * r->cst[0] + i * r->cst[1], s0 = b * r->sst[0] + i * r->sst[1];
    for (int64_t d = 0; d < hd; d++) {
        double rv = d < hd - h ? -ld(xt, x, x0 + h + d) : ld(xt, x, x0 + d - (hd - h));
        double v = ld(xt, x, x0 + d) * ld(r->dt, r->cs, c0 + d * r->cst[2]) +
                   rv * ld(r->dt, r->sn, s0 + d * r->sst[2]);
        out[d] = round_to(xt, v);
    }
}

/* Stores row x (dtype xt, elements x0 ...) into the cache row dst (dtype
 * ct), rounding when the dtypes differ. */
static void store_row(kn_dtype ct, void *dst, kn_dtype xt, const void *x, int64_t x0, int64_t hd)
{
    if (ct == xt) {
        memcpy(dst, (const char *)x + x0 * (int64_t)kn_dt_size(xt), (size_t)hd * kn_dt_size(xt));
        return;
    }
    for (int64_t d = 0; d < hd; d++)
        kn_set_f64(ct, dst, d, ld(xt, x, x0 + d));
}

kn_status kn_ref_KILN_PagedAttention(kn_kctx *c)
{
    kn_kv_run *run = kn_kctx_kv(c);
    if (!run || !run->cache)
        return kn_kctx_fail(c, KN_ERR_INVALID,
                            "needs the runtime's KV cache: run this plan through a session (kiln run --prompt, "
                            "kn_session_forward), or compile with --disable-pass kv-cache");
    kn_kv_cache *kv = run->cache;
    const kn_rt_tensor *q = kn_kctx_in(c, 0), *k = kn_kctx_in(c, 1), *v = kn_kctx_in(c, 2), *mask = kn_kctx_in(c, 3);
    int64_t layer = kn_kctx_attr_int(c, "layer", -1), kvh = kn_kctx_attr_int(c, "kv_heads", 0);
    int64_t hd = kn_kctx_attr_int(c, "head_dim", 0), rep = kn_kctx_attr_int(c, "kv_repeat", 0);
    double scale = kn_kctx_attr_float(c, "scale", 0.0f);
    int64_t causal = kn_kctx_attr_int(c, "causal", 0);
    int64_t rotary = kn_kctx_attr_int(c, "rotary", 0);
    if (causal != 0 && causal != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "causal must be 0 or 1, got %lld", (long long)causal);
    if (rotary != 0 && rotary != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "rotary must be 0 or 1, got %lld", (long long)rotary);
    if (!rotary && (kn_kctx_in(c, 4) || kn_kctx_in(c, 5)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "cos/sin inputs (4, 5) without rotary = 1");
    if (layer < 0 || layer >= kv->cfg.n_layers || kvh != kv->cfg.kv_heads || hd != kv->cfg.head_dim || rep < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID,
                            "layer %lld, %lld kv heads of %lld (repeat %lld) do not fit the KV cache (%u layers, %u "
                            "kv heads of %u)",
                            (long long)layer, (long long)kvh, (long long)hd, (long long)rep, kv->cfg.n_layers,
                            kv->cfg.kv_heads, kv->cfg.head_dim);
    if (!q || q->rank != 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Q must be 4-D [batch, heads, seq, head_dim]");
    int64_t batch = q->dims[0], hq = q->dims[1], seq = q->dims[2];
    kn_dtype dt = q->dtype, ct = kn_kv_dtype(&kv->cfg);
    if (!attn_dtype(dt))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Q must be float32, float16 or bfloat16, got %s", kn_dtype_name(dt));
    KN_TRY(check_4d(c, q, "Q", dt, batch, kvh * rep, seq, hd));
    KN_TRY(check_4d(c, k, "K", dt, batch, kvh, seq, hd));
    KN_TRY(check_4d(c, v, "V", dt, batch, kvh, seq, hd));
    if (batch != run->n_rows)
        return kn_kctx_fail(c, KN_ERR_INVALID, "batch %lld, but the run has %u sequences", (long long)batch,
                            run->n_rows);
    rope rp = {0};
    if (rotary) {
        const kn_rt_tensor *cs = kn_kctx_in(c, 4), *sn = kn_kctx_in(c, 5);
        KN_TRY(table_strides(c, cs, "cos", dt, batch, seq, hd, rp.cst));
        KN_TRY(table_strides(c, sn, "sin", dt, batch, seq, hd, rp.sst));
        rp.dt = dt;
        rp.cs = cs->data;
        rp.sn = sn->data;
    }
    kn_rt_tensor *y;
    int64_t yd[4] = {batch, hq, seq, hd};
    KN_TRY(kn_kctx_out(c, 0, dt, 4, yd, &y));
    const void *qd = q->data, *kd = k->data, *vd = v->data;
    for (int64_t b = 0; b < batch; b++) {
        kn_kv_seq *s = kn_kv_seq_get(kv, run->seq_ids[b]);
        if (!s)
            return kn_kctx_fail(c, KN_ERR_INVALID, "row %lld: no sequence %u in the KV cache", (long long)b,
                                run->seq_ids[b]);
        int64_t past = s->len, total = past + seq;
        if ((uint64_t)total > (uint64_t)s->n_blocks * kv->cfg.block_size)
            return kn_kctx_fail(c, KN_ERR_INVALID, "sequence %u holds blocks for %u tokens, %lld needed",
                                run->seq_ids[b], s->n_blocks * kv->cfg.block_size, (long long)total);
        int64_t sc[4] = {batch, hq, seq, total}, mst[4] = {0, 0, 0, 0};
        if (mask)
            KN_TRY(mask_strides(c, mask, sc, mst));
        double *sv = kn_kctx_scratch(c, (size_t)(total + 1) * sizeof *sv);
        double *acc = kn_kctx_scratch(c, (size_t)(hd + 1) * sizeof *acc);
        double *row = kn_kctx_scratch(c, (size_t)(hd + 1) * sizeof *row); /* a Q (or rotated K) row */
        if (!sv || !acc || !row)
            return KN_ERR_NOMEM;
        /* append the new tokens' K/V */
        for (int64_t h = 0; h < kvh; h++)
            for (int64_t i = 0; i < seq; i++) {
                int64_t src = ((b * kvh + h) * seq + i) * hd;
                void *kc = kn_kv_at(kv, false, (uint32_t)layer, s, (uint32_t)(past + i), (uint32_t)h);
                if (rotary) {
                    rope_row(&rp, dt, kd, src, b, i, hd, row);
                    for (int64_t d = 0; d < hd; d++)
                        kn_set_f64(ct, kc, d, row[d]);
                } else {
                    store_row(ct, kc, dt, kd, src, hd);
                }
                store_row(ct, kn_kv_at(kv, true, (uint32_t)layer, s, (uint32_t)(past + i), (uint32_t)h), dt, vd, src,
                          hd);
            }
        for (int64_t h = 0; h < hq; h++)
            for (int64_t i = 0; i < seq; i++) {
                uint32_t hk = (uint32_t)(h / rep);
                int64_t q0 = ((b * hq + h) * seq + i) * hd;
                if (rotary)
                    rope_row(&rp, dt, qd, q0, b, i, hd, row);
                else
                    for (int64_t d = 0; d < hd; d++)
                        row[d] = ld(dt, qd, q0 + d);
                int64_t seen = causal ? past + i + 1 : total; /* the positions this query sees */
                bool all_masked = true;
                for (int64_t j = 0; j < seen; j++) {
                    const void *kr = kn_kv_at(kv, false, (uint32_t)layer, s, (uint32_t)j, hk);
                    double dot = 0;
                    for (int64_t d = 0; d < hd; d++)
                        dot += row[d] * ld(ct, kr, d);
                    double bj = mask ? kn_attn_mask_bias(mask, b * mst[0] + h * mst[1] + i * mst[2] + j * mst[3])
                                     : 0.0;
                    all_masked = all_masked && isinf(bj) && bj < 0;
                    sv[j] = dot * scale + bj;
                }
                kn_attn_softmax_row(sv, seen, all_masked);
                for (int64_t d = 0; d < hd; d++)
                    acc[d] = 0;
                for (int64_t j = 0; j < seen; j++) {
                    double p = sv[j];
                    const void *vr = kn_kv_at(kv, true, (uint32_t)layer, s, (uint32_t)j, hk);
                    for (int64_t d = 0; d < hd; d++)
                        acc[d] += p * ld(ct, vr, d);
                }
                for (int64_t d = 0; d < hd; d++)
                    kn_set_f64(dt, y->data, q0 + d, acc[d]);
            }
    }
    return KN_OK;
}
