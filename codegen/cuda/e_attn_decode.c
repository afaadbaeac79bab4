/* Split-K flash-decoding over the paged KV cache, its combine kernel, the
 * KV append kernel and the launch shapes: see attn_kernels.h. */
#include "codegen/cuda/attn_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static char *with_body(const kn_attn_spec *s, const char *body, char *err, size_t err_size)
{
    kn_attn_spec ps = *s;
    ps.paged = true;
    char *pre = kn_attn_simple_source(&ps, err, err_size); /* validates the spec; its text up to the kernels */
    if (!pre)
        return NULL;
    char *cut = strstr(pre, "__device__ __forceinline__ double kn_score");
    if (cut)
        *cut = 0;
    size_t n = strlen(pre) + strlen(body) + 1;
    char *r = malloc(n);
    if (r)
        snprintf(r, n, "%s%s", pre, body);
    else
        snprintf(err, err_size, "out of memory");
    free(pre);
    return r;
}

/* `body` after kn_decode_merge: element d of (batch, row) `br`'s output
 * from its splits' partials, rescaled to their common max and added in
 * split order. Both the combine kernel and the decode kernel's last block
 * call it, so their outputs are equal to the bit; the reads are volatile
 * (the last block reads what other blocks wrote during the launch: not
 * from a stale L1 line). As with_body otherwise. */
static char *with_merge(const kn_attn_spec *s, const char *body, char *err, size_t err_size)
{
    static const char merge[] =
        "__device__ __forceinline__ T kn_decode_merge(const volatile float *part, i64 br, i64 d, const P &p) {\n"
        "  const volatile float *pp = part + br * p.n_split * (D + 2);\n"
        "  float mx = -kn_inff();\n"
        "  for (i64 s = 0; s < p.n_split; s++) mx = fmaxf(mx, pp[s * (D + 2)]);\n"
        "  float sum = 0.0f, o = 0.0f;\n"
        "  for (i64 s = 0; s < p.n_split; s++) {\n"
        "    const float ms = pp[s * (D + 2)], w = ms == -kn_inff() ? 0.0f : expf(ms - mx);\n"
        "    sum += w * pp[s * (D + 2) + 1];\n"
        "    o += w * pp[s * (D + 2) + 2 + d];\n"
        "  }\n"
        "  return kn_st_<T>(sum > 0.0f ? (double)(o / sum) : 0.0);\n"
        "}\n";
    size_t n = sizeof merge + strlen(body);
    char *text = malloc(n);
    if (!text) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    snprintf(text, n, "%s%s", merge, body);
    char *r = with_body(s, text, err, err_size);
    free(text);
    return r;
}

char *kn_attn_decode_source(const kn_attn_spec *s, char *err, size_t err_size)
{
    if (s->head_dim != 32 && s->head_dim != 64 && s->head_dim != 128 && s->head_dim != 256) {
        snprintf(err, err_size, "flash decoding: head dim %d (32, 64, 128 or 256)", s->head_dim);
        return NULL;
    }
    static const char body[] =
        "#define DL (D / 32)\n"
        "/* grid (q heads * sq * n_split, batch), 4 warps: the block takes keys [j0, j1) of its split for one\n"
        " * query row; each warp a key in turn (lane l holds dims l + 32u), the dot product summed by shuffles,\n"
        " * an online softmax per warp, the 4 warps merged through shared memory into one partial:\n"
        " * part[(row, split)] = {max, sum, acc[D]} with acc and sum relative to max. */\n"
        "extern \"C\" __global__ void __launch_bounds__(128) kn_decode_attn(const T *q, KN_KV_ARGS, const M *mask,\n"
        "                                                                 float *part, unsigned *cnt, T *y, P p) {\n"
        "  __shared__ float sm[4], sl[4], sacc[4][D];\n"
        "  __shared__ int last;\n"
        "  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;\n"
        "  const i64 rows = p.qh * p.sq;\n"
        "  const i64 split = blockIdx.x % p.n_split, rr = blockIdx.x / p.n_split, b = blockIdx.y;\n"
        "  const i64 h = rr / p.sq, i = rr % p.sq, hk = h / p.group;\n"
        "  const i64 past = PAST(b), sk = SK(b);\n"
        "  i64 kend = sk;\n"
        "  if (p.causal && past + i + 1 < kend) kend = past + i + 1;\n"
        "  const i64 chunk = (kend + p.n_split - 1) / p.n_split;\n"
        "  const i64 j0 = split * chunk, j1 = j0 + chunk < kend ? j0 + chunk : kend;\n"
        "  const T *qrow = q + ((b * p.qh + h) * p.sq + i) * D;\n"
        "  float qr[DL], acc[DL];\n"
        "#pragma unroll\n"
        "  for (int u = 0; u < DL; u++) { qr[u] = kn_tof(qrow[lane + 32 * u]) * p.scale; acc[u] = 0.0f; }\n"
        "  float m = -kn_inff(), l = 0.0f;\n"
        "  for (i64 j = j0 + warp; j < j1; j += 4) {\n"
        "    const i64 o = KOFF(b, hk, j);\n"
        "    float d = 0.0f;\n"
        "#pragma unroll\n"
        "    for (int u = 0; u < DL; u++) d += qr[u] * kn_tof(kp[o + lane + 32 * u]);\n"
        "#pragma unroll\n"
        "    for (int off = 16; off > 0; off >>= 1) d += __shfl_xor_sync(0xffffffffu, d, off);\n"
        "    float x = d;\n"
        "#if MASK\n"
        "    x += kn_maskv(mask, b * p.mst[0] + h * p.mst[1] + i * p.mst[2] + j * p.mst[3]);\n"
        "#endif\n"
        "    if (x == -kn_inff()) continue; /* the same for every lane of the warp */\n"
        "    const float mn = fmaxf(m, x), corr = expf(m - mn), pr = expf(x - mn);\n"
        "    l = l * corr + pr;\n"
        "#pragma unroll\n"
        "    for (int u = 0; u < DL; u++) acc[u] = acc[u] * corr + pr * kn_tof(vp[o + lane + 32 * u]);\n"
        "    m = mn;\n"
        "  }\n"
        "  if (lane == 0) { sm[warp] = m; sl[warp] = l; }\n"
        "#pragma unroll\n"
        "  for (int u = 0; u < DL; u++) sacc[warp][lane + 32 * u] = acc[u];\n"
        "  __syncthreads();\n"
        "  float mx = -kn_inff();\n"
        "  for (int w = 0; w < 4; w++) mx = fmaxf(mx, sm[w]);\n"
        "  float wt[4], sum = 0.0f;\n"
        "  for (int w = 0; w < 4; w++) { wt[w] = sm[w] == -kn_inff() ? 0.0f : expf(sm[w] - mx); sum += wt[w] * sl[w]; }\n"
        "  float *out = part + ((b * rows + rr) * p.n_split + split) * (D + 2);\n"
        "  for (int d = threadIdx.x; d < D; d += 128)\n"
        "    out[2 + d] = wt[0] * sacc[0][d] + wt[1] * sacc[1][d] + wt[2] * sacc[2][d] + wt[3] * sacc[3][d];\n"
        "  if (threadIdx.x == 0) { out[0] = mx; out[1] = sum; }\n"
        "  if (!cnt) return; /* kn_decode_combine merges the partials */\n"
        "  /* the last split block of this (batch, row) to finish merges the splits' partials in split order, as\n"
        "   * kn_decode_combine does, and leaves the row's counter zero for the next launch (the pattern of the\n"
        "   * CUDA guide's threadfence reduction: write, fence, count; the last block fences and reads) */\n"
        "  const i64 row = b * rows + rr;\n"
        "  __threadfence();\n"
        "  __syncthreads();\n"
        "  if (threadIdx.x == 0) last = atomicAdd(&cnt[row], 1u) == (unsigned)(p.n_split - 1);\n"
        "  __syncthreads();\n"
        "  if (!last) return;\n"
        "  __threadfence();\n"
        "  for (int d = threadIdx.x; d < D; d += 128) y[row * D + d] = kn_decode_merge(part, row, d, p);\n"
        "  if (threadIdx.x == 0) cnt[row] = 0u;\n"
        "}\n";
    return with_merge(s, body, err, err_size);
}

char *kn_attn_combine_source(const kn_attn_spec *s, char *err, size_t err_size)
{
    static const char body[] =
        "/* one thread per output element */\n"
        "extern \"C\" __global__ void kn_decode_combine(const float *part, T *y, P p) {\n"
        "  const i64 n = p.batch * p.qh * p.sq * D;\n"
        "  for (i64 e = kn_tid(); e < n; e += kn_nthreads()) y[e] = kn_decode_merge(part, e / D, e % D, p);\n"
        "}\n";
    return with_merge(s, body, err, err_size);
}

char *kn_attn_append_source(const kn_attn_spec *s, char *err, size_t err_size)
{
    static const char body[] =
        "/* one thread per element of the new K/V [batch, kv heads, sq, D]: row b's token i goes to\n"
        " * position past[b] + i of its sequence (its block reserved by the host beforehand) */\n"
        "extern \"C\" __global__ void kn_kv_append(const T *kn, const T *vn, C *kp, C *vp, const int *table,\n"
        "                                          const int *pastv, P p) {\n"
        "  const i64 n = p.batch * p.kvh * p.sq * D;\n"
        "  for (i64 e = kn_tid(); e < n; e += kn_nthreads()) {\n"
        "    const i64 d = e % D, i = (e / D) % p.sq, hh = (e / (D * p.sq)) % p.kvh, b = e / (D * p.sq * p.kvh);\n"
        "    const i64 o = KOFF(b, hh, PAST(b) + i) + d;\n"
        "    kp[o] = kn_st_<C>(kn_tod(kn[e]));\n"
        "    vp[o] = kn_st_<C>(kn_tod(vn[e]));\n"
        "  }\n"
        "}\n";
    return with_body(s, body, err, err_size);
}

char *kn_attn_append_rope_source(const kn_attn_spec *s, char *err, size_t err_size)
{
    static const char body[] =
        "struct R { i64 cst[3], sst[3]; };\n"
        "/* RotaryHalf of element d of the D-long row x (batch row b, token i): x * cos + rotate_half(x) * sin\n"
        " * in double, as runtime/cpu/k_fused_rotary.c (the caller rounds once to T) */\n"
        "__device__ __forceinline__ double kn_rope(const T *x, const T *cs, const T *sn, const R &r, i64 b, i64 i,\n"
        "                                          i64 d) {\n"
        "  const i64 h = D / 2;\n"
        "  const double rv = d < D - h ? -kn_tod(x[h + d]) : kn_tod(x[d - (D - h)]);\n"
        "  return kn_tod(x[d]) * kn_tod(cs[b * r.cst[0] + i * r.cst[1] + d * r.cst[2]]) +\n"
        "         rv * kn_tod(sn[b * r.sst[0] + i * r.sst[1] + d * r.sst[2]]);\n"
        "}\n"
        "/* one thread per element of the new K/V [batch, kv heads, sq, D] (K rotated, rounded to T, then\n"
        " * appended as kn_kv_append does) and then of Q [batch, q heads, sq, D] (rotated into qr, which the\n"
        " * attention kernels read) */\n"
        "extern \"C\" __global__ void kn_kv_append_rope(const T *kn, const T *vn, C *kp, C *vp, const int *table,\n"
        "                                               const int *pastv, P p, const T *q, T *qr, const T *cs,\n"
        "                                               const T *sn, R r) {\n"
        "  const i64 nk = p.batch * p.kvh * p.sq * D, nq = p.batch * p.qh * p.sq * D;\n"
        "  for (i64 e = kn_tid(); e < nk + nq; e += kn_nthreads()) {\n"
        "    if (e < nk) {\n"
        "      const i64 d = e % D, i = (e / D) % p.sq, hh = (e / (D * p.sq)) % p.kvh, b = e / (D * p.sq * p.kvh);\n"
        "      const i64 o = KOFF(b, hh, PAST(b) + i) + d;\n"
        "      const T kr = kn_fromd<T>(kn_rope(kn + (e - d), cs, sn, r, b, i, d));\n"
        "      kp[o] = kn_st_<C>(kn_tod(kr));\n"
        "      vp[o] = kn_st_<C>(kn_tod(vn[e]));\n"
        "    } else {\n"
        "      const i64 f = e - nk, d = f % D, i = (f / D) % p.sq, b = f / (D * p.sq * p.qh);\n"
        "      qr[f] = kn_fromd<T>(kn_rope(q + (f - d), cs, sn, r, b, i, d));\n"
        "    }\n"
        "  }\n"
        "}\n";
    return with_body(s, body, err, err_size);
}

kn_dim3 kn_attn_flash_grid(int64_t batch, int64_t qh, int64_t sq)
{
    return (kn_dim3){(uint32_t)((sq + KN_FLASH_BM - 1) / KN_FLASH_BM), (uint32_t)qh, (uint32_t)batch};
}

kn_dim3 kn_attn_decode_grid(int64_t batch, int64_t qh, int64_t sq, int64_t n_split)
{
    return (kn_dim3){(uint32_t)(qh * sq * n_split), (uint32_t)batch, 1};
}

int64_t kn_attn_decode_splits(int64_t batch, int64_t qh, int64_t sq, int64_t max_keys, int sms)
{
    int64_t blocks = batch * qh * sq, want = blocks > 0 ? (2 * (int64_t)(sms > 0 ? sms : 132) + blocks - 1) / blocks : 1;
    int64_t by_len = (max_keys + 63) / 64;
    int64_t n = want < by_len ? want : by_len;
    if (n > KN_DECODE_MAX_SPLIT)
        n = KN_DECODE_MAX_SPLIT;
    return n < 1 ? 1 : n;
}

uint64_t kn_decode_partial_bytes(int64_t batch, int64_t qh, int64_t sq, int64_t n_split, int head_dim)
{
    return (uint64_t)batch * (uint64_t)qh * (uint64_t)sq * (uint64_t)n_split * (uint64_t)(head_dim + 2) * 4u;
}

uint64_t kn_decode_counter_bytes(int64_t batch, int64_t qh, int64_t sq)
{
    return (uint64_t)batch * (uint64_t)qh * (uint64_t)sq * 4u;
}
