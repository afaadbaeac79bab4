/* CUDA emitter for ONNX Attention (opset 23), 4-D Q/K/V without a past
 * cache or the qk_matmul_output output: one thread per (batch, head, query
 * row) computes the row's scores, softmax and weighted sum of V in double
 * (node scratch holds a row's scores and sums), like the CPU reference
 * (runtime/cpu/k_fused_attn.c), including its mask rules (bool or float,
 * broadcast, -inf padding of a short mask, is_causal, a fully masked row
 * gives 0), softcap and GQA. Slow but exact; the fast kernel comes later.
 * Nodes from passes/fuse_attention.c (`_kv_repeat`) get the same checks
 * as on the CPU, here at compile time since shapes are static. */
#include "codegen/cuda/attn_kernels.h"
#include "codegen/cuda/emit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct attn_params {
    int64_t batch, qh, kvh, sq, total, dk, dv, group, past;
    int64_t mst[4], mlen;
    double scale, softcap;
    int64_t causal;
} attn_params;

/* The flash kernel (attn_kernels.h) when the node fits it: float32/16/bf16,
 * one head dim for Q/K/V that is a multiple of 4 up to 128, no softcap, and
 * the node not marked `_attn_kernel` 0 (kiln compile --attn-kernel simple);
 * `_attn_kernel` 2 (--attn-kernel tc) takes the tensor-core kernel for
 * float16/bfloat16 with head dim 32/64/128. Numerics: float accumulation
 * (the simple kernel below uses double). */
static kn_status try_flash(kn_emit *e, const kn_emit_tensor *q, const kn_emit_tensor *m, const attn_params *a,
                           bool *done)
{
    *done = false;
    int64_t mode = kn_emit_attr_int(e, "_attn_kernel", 1);
    if (mode == 0 || a->softcap > 0.0 || a->dk != a->dv || a->dk % 4 != 0 || a->dk > 128 || q->dtype == KN_F64 ||
        (m && m->dtype == KN_F64))
        return KN_OK;
    if (a->qh > 65535 || a->batch > 65535 || a->sq > ((int64_t)1 << 36)) /* grid (rows / 32, heads, batch) */
        return KN_OK;
    kn_attn_spec sp = {q->dtype, q->dtype, m ? m->dtype : KN_BOOL,
                       !m ? KN_MASK_NONE : m->dtype == KN_BOOL ? KN_MASK_BOOL : KN_MASK_ADD, (int)a->dk, false};
    char err[256];
    bool tc = mode == 2 && (q->dtype == KN_F16 || q->dtype == KN_BF16) && a->dk % 32 == 0;
    char *src = tc ? kn_attn_flash_tc_source(&sp, err, sizeof err) : kn_attn_flash_source(&sp, err, sizeof err);
    if (!src)
        return KN_OK;
    kn_attn_params p = {a->batch, a->qh, a->kvh, a->sq, a->total, a->group, a->past,
                        {a->mst[0], a->mst[1], a->mst[2], a->mst[3]}, a->mlen, (float)a->scale, (int32_t)a->causal};
    uint32_t k;
    kn_status s = kn_emit_kernel(e, src, tc ? KN_ATTN_FLASH_TC_ENTRY : KN_ATTN_FLASH_ENTRY, &k);
    free(src);
    KN_TRY(s);
    kn_emit_arg args[6] = {
        {KN_ARG_IN, 0, 0, NULL, 0},
        {KN_ARG_IN, 1, 0, NULL, 0},
        {KN_ARG_IN, 2, 0, NULL, 0},
        {KN_ARG_IN, m ? 3u : 0u, 0, NULL, 0},
        {KN_ARG_OUT, 0, 0, NULL, 0},
        {KN_ARG_PARAMS, 0, sizeof p, &p, 0},
    };
    *done = true;
    kn_dim3 grid = tc ? kn_attn_tc_grid(a->batch, a->qh, a->sq) : kn_attn_flash_grid(a->batch, a->qh, a->sq);
    return kn_emit_launch(e, k, grid, (kn_dim3){KN_FLASH_THREADS, 1, 1}, 0, args, 6);
}

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

kn_status kn_emit_Attention(kn_emit *e)
{
    const kn_emit_tensor *q = kn_emit_in(e, 0), *k = kn_emit_in(e, 1), *v = kn_emit_in(e, 2), *m = kn_emit_in(e, 3);
    if (!q || !k || !v)
        return kn_emit_fail(e, KN_ERR_INVALID, "Q, K and V are required");
    if (!is_float(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "Q, K and V must be float tensors of one dtype");
    if (q->rank != 4 || k->rank != 4 || v->rank != 4)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "only 4-D Q, K and V");
    if (kn_emit_in(e, 4) || kn_emit_in(e, 5))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "past_key/past_value");
    if (kn_emit_out(e, 3))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "the qk_matmul_output output");
    attn_params p = {0};
    p.batch = q->dims[0];
    p.qh = q->dims[1];
    p.sq = q->dims[2];
    p.dk = q->dims[3];
    p.kvh = k->dims[1];
    p.total = k->dims[2];
    p.dv = v->dims[3];
    if (k->dims[0] != p.batch || v->dims[0] != p.batch || k->dims[3] != p.dk || v->dims[1] != p.kvh ||
        v->dims[2] != p.total || p.kvh <= 0 || p.qh % p.kvh != 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "Q, K, V shapes do not fit (batch, heads, head size, kv length)");
    p.group = p.qh / p.kvh;
    int64_t rep = kn_emit_attr_int(e, "_kv_repeat", 0);
    bool strict = rep != 0;
    if (strict && (rep < 1 || (p.kvh * rep != p.qh && p.kvh * rep != 1)))
        return kn_emit_fail(e, KN_ERR_INVALID, "fused attention: %lld q heads against %lld kv heads x %lld",
                            (long long)p.qh, (long long)p.kvh, (long long)rep);
    const char *mt = "bool";
    if (m) {
        if (m->dtype != KN_BOOL && m->dtype != q->dtype)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "attn_mask dtype %s", kn_dtype_name(m->dtype));
        if (m->rank < 1 || m->rank > 4)
            return kn_emit_fail(e, KN_ERR_INVALID, "attn_mask must have rank 1 to 4");
        int64_t sc[4] = {p.batch, p.qh, p.sq, p.total}, stride = 1;
        for (int d = 3; d >= 0; d--) {
            int md = d - (4 - m->rank);
            int64_t n = md >= 0 ? m->dims[md] : 1;
            bool ok = d == 3 ? (strict ? n == sc[3] || (n == 1 && sc[3] == 1) : n <= sc[3]) : n == sc[d] || n == 1;
            if (!ok)
                return kn_emit_fail(e, KN_ERR_INVALID, "attn_mask does not broadcast to the scores");
            if (d == 3)
                p.mlen = n;
            p.mst[d] = n == 1 && d != 3 ? 0 : stride;
            stride *= n;
        }
        mt = kn_cuda_type(m->dtype);
    }
    p.scale = kn_emit_attr_float(e, "scale", NAN);
    if (isnan(p.scale))
        p.scale = 1.0 / sqrt((double)p.dk);
    p.softcap = kn_emit_attr_float(e, "softcap", 0.0f);
    p.causal = kn_emit_attr_int(e, "is_causal", 0);
    if (kn_emit_attr_int(e, "qk_matmul_output_mode", 0) < 0 || kn_emit_attr_int(e, "qk_matmul_output_mode", 0) > 3)
        return kn_emit_fail(e, KN_ERR_INVALID, "qk_matmul_output_mode out of range");
    /* present_key/value without a past: K and V themselves */
    if (kn_emit_out(e, 1))
        KN_TRY(kn_emit_copy(e, 1, 0, 1, 0, k->nbytes));
    if (kn_emit_out(e, 2))
        KN_TRY(kn_emit_copy(e, 2, 0, 2, 0, v->nbytes));
    int64_t rows = p.batch * p.qh * p.sq;
    if (rows == 0)
        return KN_OK;
    bool done;
    KN_TRY(try_flash(e, q, m, &p, &done));
    if (done)
        return KN_OK;
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "typedef %s T;\n"
                 "typedef %s M;\n"
                 "struct P { i64 batch, qh, kvh, sq, total, dk, dv, group, past; i64 mst[4], mlen;\n"
                 "           double scale, softcap; i64 causal; };\n"
                 "__device__ double kn_mask_(const M *m, i64 at, bool is_bool) {\n"
                 "  return is_bool ? (kn_tod(m[at]) != 0.0 ? 0.0 : -kn_inf()) : kn_tod(m[at]);\n"
                 "}\n"
                 "extern \"C\" __global__ void kn_Attention(const T *q, const T *k, const T *v, const M *mask,\n"
                 "                                          T *y, double *scratch, P p) {\n"
                 "  const bool has_mask = %d, is_bool = %d;\n"
                 "  i64 rows = p.batch * p.qh * p.sq;\n"
                 "  for (i64 r = kn_tid(); r < rows; r += kn_nthreads()) {\n"
                 "    i64 i = r %% p.sq, h = (r / p.sq) %% p.qh, b = r / (p.sq * p.qh);\n"
                 "    const T *qr = q + r * p.dk;\n"
                 "    i64 kb = (b * p.kvh + h / p.group) * p.total;\n"
                 "    double *s = scratch + r * (p.total + p.dv), *acc = s + p.total;\n"
                 "    bool all_masked = true;\n"
                 "    double mx = -kn_inf();\n"
                 "    for (i64 j = 0; j < p.total; j++) {\n"
                 "      double dot = 0.0;\n"
                 "      for (i64 d = 0; d < p.dk; d++) dot += kn_tod(qr[d]) * kn_tod(k[(kb + j) * p.dk + d]);\n"
                 "      double x = dot * p.scale;\n"
                 "      if (p.softcap > 0.0) x = p.softcap * tanh(x / p.softcap);\n"
                 "      double bj = 0.0;\n"
                 "      if (p.causal && j > i + p.past) bj = -kn_inf();\n"
                 "      if (has_mask) {\n"
                 "        if (j >= p.mlen) bj = -kn_inf();\n"
                 "        else bj += kn_mask_(mask, b * p.mst[0] + h * p.mst[1] + i * p.mst[2] + j * p.mst[3], is_bool);\n"
                 "      }\n"
                 "      all_masked = all_masked && bj == -kn_inf();\n"
                 "      s[j] = x + bj;\n"
                 "      if (s[j] != s[j] || s[j] > mx) mx = s[j];\n"
                 "    }\n"
                 "    double sum = 0.0;\n"
                 "    for (i64 j = 0; j < p.total; j++) { s[j] = all_masked ? 0.0 : exp(s[j] - mx); sum += s[j]; }\n"
                 "    for (i64 d = 0; d < p.dv; d++) acc[d] = 0.0;\n"
                 "    for (i64 j = 0; j < p.total; j++) {\n"
                 "      double pj = all_masked ? 0.0 : s[j] / sum;\n"
                 "      for (i64 d = 0; d < p.dv; d++) acc[d] += pj * kn_tod(v[(kb + j) * p.dv + d]);\n"
                 "    }\n"
                 "    for (i64 d = 0; d < p.dv; d++) y[r * p.dv + d] = kn_st_<T>(acc[d]);\n"
                 "  }\n"
                 "}\n",
                 kn_cuda_type(q->dtype), mt, m != NULL, m && m->dtype == KN_BOOL);
    size_t scratch = (size_t)rows * (size_t)(p.total + p.dv) * sizeof(double);
    kn_emit_arg args[7] = {
        {KN_ARG_IN, 0, 0, NULL, 0},
        {KN_ARG_IN, 1, 0, NULL, 0},
        {KN_ARG_IN, 2, 0, NULL, 0},
        {KN_ARG_IN, m ? 3u : 0u, 0, NULL, 0},
        {KN_ARG_OUT, 0, 0, NULL, 0},
        {KN_ARG_SCRATCH, 0, scratch, NULL, 0},
        {KN_ARG_PARAMS, 0, sizeof p, &p, 0},
    };
    return kn_emit_launch_source(e, &src, "kn_Attention", args, 7, rows);
}
