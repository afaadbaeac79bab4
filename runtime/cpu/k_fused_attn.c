/* ONNX Attention (opset 23): scaled dot-product attention with GQA/MQA,
 * bool or float masks, is_causal, softcap, past/present key-value caches
 * and the qk_matmul_output debug output. One query row at a time, scores,
 * softmax and the weighted sum in double, rounded once into the outputs.
 * Nodes made by passes/fuse_attention.c carry `_kv_repeat`: they replace
 * an unfused MatMul/Softmax chain, and the checks that pass could not make
 * statically (ranks, a mask that broadcasts to the scores without the
 * op's -inf padding, q heads = kv heads x _kv_repeat) are made here, so
 * such a node fails where the unfused graph would have computed something
 * else. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

/* Element (b, h, s, d) of Q, K or V in either layout: 4-D
 * [batch, heads, seq, dim] or 3-D [batch, seq, heads * dim]. */
typedef struct qkv_view {
    const kn_rt_tensor *t;
    int64_t heads, seq, dim;
    int64_t sb, sh, ss; /* strides (elements) of batch, head, seq; dim's is 1 */
} qkv_view;

static kn_status view_of(kn_kctx *c, const kn_rt_tensor *t, const char *what, int64_t heads_attr, qkv_view *v)
{
    v->t = t;
    if (t->rank == 4) {
        v->heads = t->dims[1];
        v->seq = t->dims[2];
        v->dim = t->dims[3];
        v->ss = v->dim;
        v->sh = v->seq * v->dim;
        v->sb = v->heads * v->sh;
        return KN_OK;
    }
    if (t->rank != 3)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be 3-D or 4-D, got rank %d", what, (int)t->rank);
    if (heads_attr <= 0 || t->dims[2] % heads_attr != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "3-D %s needs a head count dividing its hidden size %lld (got %lld)",
                            what, (long long)t->dims[2], (long long)heads_attr);
    v->heads = heads_attr;
    v->seq = t->dims[1];
    v->dim = t->dims[2] / heads_attr;
    v->ss = t->dims[2];
    v->sh = v->dim;
    v->sb = v->seq * v->ss;
    return KN_OK;
}

/* present = concat(past, new) along seq, as a 4-D [b, kvh, past + seq, dim]
 * tensor: output `out`, or, when the node has no such output, a tensor the
 * caller frees (*owned set). */
static kn_status present_of(kn_kctx *c, uint32_t out, const kn_rt_tensor *past, const qkv_view *nv, int64_t batch,
                            kn_rt_tensor **res, bool *owned)
{
    int64_t np = 0;
    if (past) {
        if (past->rank != 4 || past->dims[0] != batch || past->dims[1] != nv->heads || past->dims[3] != nv->dim)
            return kn_kctx_fail(c, KN_ERR_INVALID, "past_%s must be [%lld, %lld, past, %lld]",
                                out == 1 ? "key" : "value", (long long)batch, (long long)nv->heads,
                                (long long)nv->dim);
        if (past->dtype != nv->t->dtype)
            return kn_kctx_fail(c, KN_ERR_INVALID, "past and new %s have different dtypes", out == 1 ? "keys" : "values");
        np = past->dims[2];
    }
    int64_t dims[4] = {batch, nv->heads, np + nv->seq, nv->dim};
    *owned = out >= kn_kctx_n_outputs(c);
    if (*owned)
        KN_TRY(kn_rt_tensor_new(kn_kctx_allocator(c), nv->t->dtype, 4, dims, res));
    else
        KN_TRY(kn_kctx_out(c, out, nv->t->dtype, 4, dims, res));
    size_t es = kn_dt_size(nv->t->dtype);
    char *dst = (*res)->data;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < nv->heads; h++) {
            if (np) {
                size_t n = (size_t)(np * nv->dim) * es;
                memcpy(dst, (const char *)past->data + (size_t)((b * nv->heads + h) * np * nv->dim) * es, n);
                dst += n;
            }
            for (int64_t s = 0; s < nv->seq; s++) {
                size_t n = (size_t)nv->dim * es;
                memcpy(dst, (const char *)nv->t->data + (size_t)(b * nv->sb + h * nv->sh + s * nv->ss) * es, n);
                dst += n;
            }
        }
    return KN_OK;
}

/* The mask's strides against [batch, q_heads, q_seq, mask_len] (0 where it
 * broadcasts); mask_len is its last dim (< total: padded with -inf). */
static kn_status mask_strides(kn_kctx *c, const kn_rt_tensor *m, const int64_t *sc, bool strict, int64_t *st,
                              int64_t *mask_len)
{
    if (m->rank < 1 || m->rank > 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "attn_mask must have rank 1 to 4, got %d", (int)m->rank);
    if (m->dtype != KN_BOOL && !kn_dt_is_float(m->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "attn_mask must be bool or float, got %s", kn_dtype_name(m->dtype));
    int64_t stride = 1;
    for (int d = 3; d >= 0; d--) {
        int md = d - (4 - m->rank);
        int64_t n = md >= 0 ? m->dims[md] : 1;
        bool ok = d == 3 ? (strict ? n == sc[3] || (n == 1 && sc[3] == 1) : n <= sc[3]) : n == sc[d] || n == 1;
        if (!ok)
            return kn_kctx_fail(c, KN_ERR_INVALID,
                                "attn_mask dim %d (%lld) does not broadcast to the scores [%lld, %lld, %lld, %lld]%s",
                                md, (long long)n, (long long)sc[0], (long long)sc[1], (long long)sc[2],
                                (long long)sc[3], strict ? " (fused attention: no padding)" : "");
        if (d == 3)
            *mask_len = n;
        st[d] = n == 1 && d != 3 ? 0 : stride;
        stride *= n;
    }
    return KN_OK;
}

/* Element i as a double: float32 read directly (the common case, in the
 * inner loops), anything else through kn_get_f64. */
static inline double elem(kn_dtype t, const void *data, int64_t i)
{
    return t == KN_F32 ? (double)((const float *)data)[i] : kn_get_f64(t, data, i);
}

static kn_status attention(kn_kctx *c, kn_rt_tensor **key, kn_rt_tensor **val, bool *own_k, bool *own_v)
{
    const kn_rt_tensor *q = kn_kctx_in(c, 0), *k = kn_kctx_in(c, 1), *v = kn_kctx_in(c, 2);
    const kn_rt_tensor *mask = kn_kctx_in(c, 3), *pk = kn_kctx_in(c, 4), *pv = kn_kctx_in(c, 5);
    if (!q || !k || !v)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Q, K and V are required");
    if (!kn_dt_is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Q, K and V must be float tensors of one dtype");
    if (q->rank != k->rank || q->rank != v->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Q, K and V must have the same rank");
    if ((pk == NULL) != (pv == NULL))
        return kn_kctx_fail(c, KN_ERR_INVALID, "past_key and past_value must be given together");
    const kn_attr *rep_attr = kn_kctx_attr(c, "_kv_repeat");
    bool strict = rep_attr != NULL;
    if (strict && q->rank != 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "fused attention: Q, K and V must be 4-D, got rank %d", (int)q->rank);
    qkv_view qv, kv, vv;
    KN_TRY(view_of(c, q, "Q", kn_kctx_attr_int(c, "q_num_heads", 0), &qv));
    KN_TRY(view_of(c, k, "K", kn_kctx_attr_int(c, "kv_num_heads", 0), &kv));
    KN_TRY(view_of(c, v, "V", kn_kctx_attr_int(c, "kv_num_heads", 0), &vv));
    int64_t batch = q->dims[0];
    if (k->dims[0] != batch || v->dims[0] != batch)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Q, K and V must have the same batch size");
    if (kv.dim != qv.dim || kv.heads != vv.heads || kv.seq != vv.seq)
        return kn_kctx_fail(c, KN_ERR_INVALID, "K must match Q's head size and V's heads and sequence length");
    if (kv.heads <= 0 || qv.heads % kv.heads != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "q heads (%lld) must be a multiple of kv heads (%lld)",
                            (long long)qv.heads, (long long)kv.heads);
    if (strict) {
        int64_t rep = rep_attr->u.i, kvh = kv.heads * rep;
        if (rep < 1 || (kvh != qv.heads && kvh != 1))
            return kn_kctx_fail(c, KN_ERR_INVALID, "fused attention: %lld q heads against %lld kv heads x %lld",
                                (long long)qv.heads, (long long)kv.heads, (long long)rep);
    }
    /* the present caches: 4-D, contiguous */
    KN_TRY(present_of(c, 1, pk, &kv, batch, key, own_k));
    KN_TRY(present_of(c, 2, pv, &vv, batch, val, own_v));
    const kn_rt_tensor *kt = *key, *vt = *val;
    int64_t total = kt->dims[2], past = pk ? pk->dims[2] : 0, dv = vv.dim, group = qv.heads / kv.heads;
    int64_t sc[4] = {batch, qv.heads, qv.seq, total}, mst[4] = {0, 0, 0, 0}, mlen = 0;
    if (mask)
        KN_TRY(mask_strides(c, mask, sc, strict, mst, &mlen));
    float scale_attr = kn_kctx_attr_float(c, "scale", NAN);
    double scale = kn_kctx_attr(c, "scale") ? (double)scale_attr : 1.0 / sqrt((double)qv.dim);
    double softcap = kn_kctx_attr_float(c, "softcap", 0.0f);
    int64_t causal = kn_kctx_attr_int(c, "is_causal", 0), mode = kn_kctx_attr_int(c, "qk_matmul_output_mode", 0);
    if (mode < 0 || mode > 3)
        return kn_kctx_fail(c, KN_ERR_INVALID, "qk_matmul_output_mode must be 0..3, got %lld", (long long)mode);
    kn_rt_tensor *y, *qk = NULL;
    if (q->rank == 4) {
        int64_t yd[4] = {batch, qv.heads, qv.seq, dv};
        KN_TRY(kn_kctx_out(c, 0, q->dtype, 4, yd, &y));
    } else {
        int64_t yd[3] = {batch, qv.seq, qv.heads * dv};
        KN_TRY(kn_kctx_out(c, 0, q->dtype, 3, yd, &y));
    }
    if (kn_kctx_out_wanted(c, 3))
        KN_TRY(kn_kctx_out(c, 3, q->dtype, 4, sc, &qk));
    double *sv = kn_kctx_scratch(c, (size_t)(total + 1) * sizeof *sv);
    double *acc = kn_kctx_scratch(c, (size_t)(dv + 1) * sizeof *acc);
    if (!sv || !acc)
        return KN_ERR_NOMEM;
    kn_dtype t = q->dtype;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < qv.heads; h++)
            for (int64_t i = 0; i < qv.seq; i++) {
                int64_t hk = h / group, qoff = b * qv.sb + h * qv.sh + i * qv.ss;
                int64_t kbase = (b * kv.heads + hk) * total;
                int64_t qkrow = ((b * qv.heads + h) * qv.seq + i) * total;
                bool all_masked = true;
                for (int64_t j = 0; j < total; j++) {
                    double dot = 0;
                    for (int64_t d = 0; d < qv.dim; d++)
                        dot += elem(t, q->data, qoff + d) * elem(t, kt->data, (kbase + j) * qv.dim + d);
                    double s = dot * scale;
                    if (qk && mode == 0)
                        kn_set_f64(t, qk->data, qkrow + j, s);
                    if (softcap > 0)
                        s = softcap * tanh(s / softcap);
                    double bj = 0;
                    if (causal && j > i + past)
                        bj = -INFINITY;
                    if (mask) {
                        if (j >= mlen) {
                            bj = -INFINITY;
                        } else {
                            int64_t at = b * mst[0] + h * mst[1] + i * mst[2] + j * mst[3];
                            if (mask->dtype == KN_BOOL)
                                bj += ((const uint8_t *)mask->data)[at] ? 0.0 : -INFINITY;
                            else
                                bj += kn_get_f64(mask->dtype, mask->data, at);
                        }
                    }
                    all_masked = all_masked && isinf(bj) && bj < 0;
                    if (qk && mode == 1)
                        kn_set_f64(t, qk->data, qkrow + j, s);
                    sv[j] = s + bj;
                    if (qk && mode == 2)
                        kn_set_f64(t, qk->data, qkrow + j, sv[j]);
                }
                /* softmax; a row whose bias is -inf everywhere is zero */
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < total; j++)
                    mx = isnan(sv[j]) || sv[j] > mx ? sv[j] : mx;
                for (int64_t j = 0; j < total; j++) {
                    sv[j] = all_masked ? 0.0 : exp(sv[j] - mx);
                    sum += sv[j];
                }
                for (int64_t d = 0; d < dv; d++)
                    acc[d] = 0;
                for (int64_t j = 0; j < total; j++) {
                    double p = all_masked ? 0.0 : sv[j] / sum;
                    if (qk && mode == 3)
                        kn_set_f64(t, qk->data, qkrow + j, p);
                    for (int64_t d = 0; d < dv; d++)
                        acc[d] += p * elem(t, vt->data, (kbase + j) * dv + d);
                }
                int64_t yoff = q->rank == 4 ? ((b * qv.heads + h) * qv.seq + i) * dv
                                            : (b * qv.seq + i) * qv.heads * dv + h * dv;
                for (int64_t d = 0; d < dv; d++)
                    kn_set_f64(t, y->data, yoff + d, acc[d]);
            }
    return KN_OK;
}

kn_status kn_ref_Attention(kn_kctx *c)
{
    kn_rt_tensor *key = NULL, *val = NULL;
    bool own_k = false, own_v = false;
    kn_status s = attention(c, &key, &val, &own_k, &own_v);
    if (own_k)
        kn_rt_tensor_free(kn_kctx_allocator(c), key);
    if (own_v)
        kn_rt_tensor_free(kn_kctx_allocator(c), val);
    return s;
}
