/* Attention kernel sources: see attn_kernels.h. One body per kernel,
 * specialised by #defines (dtypes, head dim, mask kind, paged or not);
 * shapes arrive in the by-value parameter structs. */
#include "codegen/cuda/attn_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool float_dt(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

bool kn_attn_check_spec(const kn_attn_spec *s, char *err, size_t n)
{
    if (!float_dt(s->dtype)) {
        snprintf(err, n, "attention kernels take float32, float16 or bfloat16, not %s", kn_dtype_name(s->dtype));
        return false;
    }
    if (s->paged && !float_dt(s->cache_dtype)) {
        snprintf(err, n, "KV cache dtype %s", kn_dtype_name(s->cache_dtype));
        return false;
    }
    if (s->mask == KN_MASK_ADD && !float_dt(s->mask_dtype) && s->mask_dtype != KN_F64) {
        snprintf(err, n, "additive mask dtype %s", kn_dtype_name(s->mask_dtype));
        return false;
    }
    if (s->head_dim < 1 || s->head_dim > 512) {
        snprintf(err, n, "head dim %d", s->head_dim);
        return false;
    }
    return true;
}

/* Common text: dtypes, D, the parameter structs, the mask value, the
 * offset of key j of (b, kv head) and the per-row key counts. */
void kn_attn_preamble(kn_sb *sb, const kn_attn_spec *s)
{
    kn_sb_printf(sb,
                 "#include \"kiln_cuda.h\"\n"
                 "typedef %s T;\n"
                 "typedef %s C;\n"
                 "typedef %s M;\n"
                 "#define D %d\n"
                 "#define MASK %d\n"
                 "#define PAGED %d\n",
                 kn_cuda_type(s->dtype), kn_cuda_type(s->paged ? s->cache_dtype : s->dtype),
                 s->mask == KN_MASK_ADD ? kn_cuda_type(s->mask_dtype) : "bool", s->head_dim, (int)s->mask,
                 s->paged ? 1 : 0);
    kn_sb_printf(sb,
                 "struct AP { i64 batch, qh, kvh, sq, sk, group, past; i64 mst[4]; i64 mlen; float scale; int causal; };\n"
                 "struct PP { i64 batch, qh, kvh, sq, group, block_size, max_blocks, layer_off; i64 mst[4];\n"
                 "            i64 n_split; float scale; int causal; };\n"
                 "/* the mask's term for score (b, h, i, j): 0 or -inf (bool), or its value (additive) */\n"
                 "__device__ __forceinline__ float kn_maskv(const M *m, i64 at) {\n"
                 "#if MASK == 1\n"
                 "  return kn_tod(m[at]) != 0.0 ? 0.0f : -kn_inff();\n"
                 "#else\n"
                 "  return (float)kn_tod(m[at]);\n"
                 "#endif\n"
                 "}\n"
                 "#if PAGED\n"
                 "typedef PP P;\n"
                 "#define KN_KV_ARGS const C *kp, const C *vp, const int *table, const int *pastv\n"
                 "/* runtime/kv_cache.c: [layer][block][kv head][slot][D], slot = j %% block_size */\n"
                 "__device__ __forceinline__ i64 kn_koff(const P &p, const int *table, i64 b, i64 hk, i64 j) {\n"
                 "  i64 blk = table[b * p.max_blocks + j / p.block_size];\n"
                 "  return p.layer_off + ((blk * p.kvh + hk) * p.block_size + j %% p.block_size) * D;\n"
                 "}\n"
                 "#define KOFF(b, hk, j) kn_koff(p, table, b, hk, j)\n"
                 "#define PAST(b) ((i64)pastv[b])\n"
                 "#define SK(b) ((i64)pastv[b] + p.sq)\n"
                 "#define MLEN(sk) (sk)\n"
                 "#else\n"
                 "typedef AP P;\n"
                 "#define KN_KV_ARGS const C *kp, const C *vp\n"
                 "#define KOFF(b, hk, j) ((((b) * p.kvh + (hk)) * p.sk + (j)) * D)\n"
                 "#define PAST(b) p.past\n"
                 "#define SK(b) p.sk\n"
                 "#define MLEN(sk) p.mlen\n"
                 "#endif\n");
}

char *kn_attn_finish(kn_sb *sb, char *err, size_t n)
{
    const char *t = kn_sb_str(sb);
    char *r = t ? strdup(t) : NULL;
    kn_sb_free(sb);
    if (!r)
        snprintf(err, n, "out of memory");
    return r;
}

char *kn_attn_flash_source(const kn_attn_spec *s, char *err, size_t err_size)
{
    if (!kn_attn_check_spec(s, err, err_size))
        return NULL;
    if (s->head_dim % 4 != 0 || s->head_dim > 128) {
        snprintf(err, err_size, "flash attention: head dim %d (a multiple of 4, at most 128)", s->head_dim);
        return NULL;
    }
    kn_sb sb = {0};
    kn_attn_preamble(&sb, s);
    kn_sb_printf(&sb,
        "#define BM 32\n#define BN 32\n#define DP (D / 4)\n"
        "/* grid (ceil(sq / 32), q heads, batch), 128 threads: thread t takes query row t / 4 of the block's\n"
        " * 32 and dims (t %% 4) + 4u of it; K/V tiles of 32 keys go through shared memory as float. */\n"
        "extern \"C\" __global__ void __launch_bounds__(128) kn_flash_attn(const T *q, KN_KV_ARGS, const M *mask,\n"
        "                                                                T *y, P p) {\n"
        "  __shared__ float ks[BN][D];\n"
        "  __shared__ float vs[BN][D];\n"
        "  const int tid = threadIdx.x, row = tid >> 2, part = tid & 3;\n"
        "  const i64 h = blockIdx.y, b = blockIdx.z, hk = h / p.group;\n"
        "  const i64 i = (i64)blockIdx.x * BM + row;\n"
        "  const i64 past = PAST(b), sk = SK(b);\n"
        "  const bool active = i < p.sq;\n"
        "  float qr[DP], acc[DP];\n"
        "  const T *qrow = q + ((b * p.qh + h) * p.sq + (active ? i : 0)) * D;\n"
        "#pragma unroll\n"
        "  for (int u = 0; u < DP; u++) { qr[u] = active ? kn_tof(qrow[part + 4 * u]) * p.scale : 0.0f; acc[u] = 0.0f; }\n"
        "  float m = -kn_inff(), l = 0.0f;\n"
        "  i64 kend = sk;\n"
        "  if (p.causal) {\n"
        "    i64 last = (i64)blockIdx.x * BM + BM - 1;\n"
        "    if (last > p.sq - 1) last = p.sq - 1;\n"
        "    if (last + past + 1 < kend) kend = last + past + 1;\n"
        "  }\n"
        "  for (i64 j0 = 0; j0 < kend; j0 += BN) {\n"
        "    __syncthreads();\n"
        "    for (int t = tid; t < BN * D; t += 128) {\n"
        "      int r = t / D, c = t %% D;\n"
        "      i64 j = j0 + r;\n"
        "      float kv = 0.0f, vv = 0.0f;\n"
        "      if (j < sk) { i64 o = KOFF(b, hk, j) + c; kv = kn_tof(kp[o]); vv = kn_tof(vp[o]); }\n"
        "      ks[r][c] = kv;\n"
        "      vs[r][c] = vv;\n"
        "    }\n"
        "    __syncthreads();\n"
        "    float s[BN];\n"
        "#pragma unroll\n"
        "    for (int r = 0; r < BN; r++) {\n"
        "      float d = 0.0f;\n"
        "#pragma unroll\n"
        "      for (int u = 0; u < DP; u++) d += qr[u] * ks[r][part + 4 * u];\n"
        "      s[r] = d;\n"
        "    }\n"
        "#pragma unroll\n"
        "    for (int r = 0; r < BN; r++) {\n"
        "      s[r] += __shfl_xor_sync(0xffffffffu, s[r], 1);\n"
        "      s[r] += __shfl_xor_sync(0xffffffffu, s[r], 2);\n"
        "    }\n"
        "    if (!active) continue;\n"
        "    float mt = m;\n"
        "#pragma unroll\n"
        "    for (int r = 0; r < BN; r++) {\n"
        "      i64 j = j0 + r;\n"
        "      float x = s[r];\n"
        "      if (j >= sk || (p.causal && j > i + past)) x = -kn_inff();\n"
        "#if MASK\n"
        "      else if (j >= MLEN(sk)) x = -kn_inff();\n"
        "      else x += kn_maskv(mask, b * p.mst[0] + h * p.mst[1] + i * p.mst[2] + j * p.mst[3]);\n"
        "#endif\n"
        "      s[r] = x;\n"
        "      mt = fmaxf(mt, x);\n"
        "    }\n"
        "    if (mt == -kn_inff()) continue;\n"
        "    float corr = expf(m - mt);\n"
        "    l *= corr;\n"
        "#pragma unroll\n"
        "    for (int u = 0; u < DP; u++) acc[u] *= corr;\n"
        "#pragma unroll\n"
        "    for (int r = 0; r < BN; r++) {\n"
        "      float pr = expf(s[r] - mt);\n"
        "      l += pr;\n"
        "#pragma unroll\n"
        "      for (int u = 0; u < DP; u++) acc[u] += pr * vs[r][part + 4 * u];\n"
        "    }\n"
        "    m = mt;\n"
        "  }\n"
        "  if (!active) return;\n"
        "  T *yr = y + ((b * p.qh + h) * p.sq + i) * D;\n"
        "  float inv = l > 0.0f ? 1.0f / l : 0.0f; /* a fully masked row gives 0, as the CPU reference */\n"
        "#pragma unroll\n"
        "  for (int u = 0; u < DP; u++) yr[part + 4 * u] = kn_st_<T>((double)(acc[u] * inv));\n"
        "}\n");
    return kn_attn_finish(&sb, err, err_size);
}

char *kn_attn_simple_source(const kn_attn_spec *s, char *err, size_t err_size)
{
    if (!kn_attn_check_spec(s, err, err_size))
        return NULL;
    kn_sb sb = {0};
    kn_attn_preamble(&sb, s);
    kn_sb_printf(&sb,
        "__device__ __forceinline__ double kn_score(const T *qr, const C *kp, i64 o, double scale, double bias) {\n"
        "  double dot = 0.0;\n"
        "  for (int d = 0; d < D; d++) dot += kn_tod(qr[d]) * kn_tod(kp[o + d]);\n"
        "  return dot * scale + bias;\n"
        "}\n"
        "/* one thread per output row (b, h, i), in double as the CPU reference: max, then sums */\n"
        "extern \"C\" __global__ void kn_simple_attn(const T *q, KN_KV_ARGS, const M *mask, T *y, P p) {\n"
        "  const i64 rows = p.batch * p.qh * p.sq;\n"
        "  for (i64 r = kn_tid(); r < rows; r += kn_nthreads()) {\n"
        "    const i64 i = r %% p.sq, h = (r / p.sq) %% p.qh, b = r / (p.sq * p.qh), hk = h / p.group;\n"
        "    const i64 past = PAST(b), sk = SK(b);\n"
        "    const T *qr = q + r * D;\n"
        "    double mx = -kn_inf();\n"
        "    bool all_masked = true;\n"
        "    for (i64 j = 0; j < sk; j++) {\n"
        "      double bias = 0.0;\n"
        "      if (p.causal && j > i + past) bias = -kn_inf();\n"
        "#if MASK\n"
        "      else if (j >= MLEN(sk)) bias = -kn_inf();\n"
        "      else bias = kn_maskv(mask, b * p.mst[0] + h * p.mst[1] + i * p.mst[2] + j * p.mst[3]);\n"
        "#endif\n"
        "      all_masked = all_masked && bias == -kn_inf();\n"
        "      double x = kn_score(qr, kp, KOFF(b, hk, j), p.scale, bias);\n"
        "      if (x != x || x > mx) mx = x;\n"
        "    }\n"
        "    double acc[D], sum = 0.0;\n"
        "    for (int d = 0; d < D; d++) acc[d] = 0.0;\n"
        "    for (i64 j = 0; j < sk && !all_masked; j++) {\n"
        "      double bias = 0.0;\n"
        "      if (p.causal && j > i + past) bias = -kn_inf();\n"
        "#if MASK\n"
        "      else if (j >= MLEN(sk)) bias = -kn_inf();\n"
        "      else bias = kn_maskv(mask, b * p.mst[0] + h * p.mst[1] + i * p.mst[2] + j * p.mst[3]);\n"
        "#endif\n"
        "      i64 o = KOFF(b, hk, j);\n"
        "      double e = exp(kn_score(qr, kp, o, p.scale, bias) - mx);\n"
        "      sum += e;\n"
        "      for (int d = 0; d < D; d++) acc[d] += e * kn_tod(vp[o + d]);\n"
        "    }\n"
        "    for (int d = 0; d < D; d++) y[r * D + d] = kn_st_<T>(all_masked ? 0.0 : acc[d] / sum);\n"
        "  }\n"
        "}\n");
    return kn_attn_finish(&sb, err, err_size);
}
