/* The flash attention kernel on tensor cores (attn_kernels.h): mma.sync
 * m16n8k16 with float32 accumulators. Under the host emulator (KN_EMU_COOP)
 * the mma is computed in software from the warp's fragments, gathered with
 * kn_emu_warp_gather, following the PTX ISA's fragment layouts:
 *   A 16x16 (row): reg r of lane (g = lane / 4, t = lane % 4) holds rows
 *     g + 8 (r & 1), cols 2t + 8 (r >> 1) + {0, 1}
 *   B 16x8 (col): reg r holds rows (k) 2t + 8r + {0, 1}, col g
 *   C 16x8: c[i] is row g + 8 (i >> 1), col 2t + (i & 1). */
#include "codegen/cuda/attn_kernels.h"

#include <stdio.h>

kn_dim3 kn_attn_tc_grid(int64_t batch, int64_t qh, int64_t sq)
{
    return (kn_dim3){(uint32_t)((sq + KN_FLASH_TC_BM - 1) / KN_FLASH_TC_BM), (uint32_t)qh, (uint32_t)batch};
}

/* kn_f2t, kn_pack and kn_mma (c += a * b, one m16n8k16 tile for the warp;
 * computed from the gathered fragments under the emulator) for the type T
 * the source has defined: float16 or bfloat16. Shared with the MatMulNBits
 * tensor-core kernel (e_nbits_tc.c). */
void kn_mma_helpers(kn_sb *sb, kn_dtype t)
{
    bool bf = t == KN_BF16;
    kn_sb_printf(sb,
        "typedef unsigned int u32;\n"
        "typedef unsigned short u16;\n"
        "__device__ __forceinline__ T kn_f2t(float v) { return %s(v); }\n"
        "__device__ __forceinline__ u16 kn_bits(T x) { return *reinterpret_cast<const u16 *>(&x); }\n"
        "__device__ __forceinline__ u32 kn_pack(T lo, T hi) { return (u32)kn_bits(lo) | ((u32)kn_bits(hi) << 16); }\n"
        "/* c += a * b, one m16n8k16 tile for the warp */\n"
        "__device__ __forceinline__ void kn_mma(float *c, const u32 *a, const u32 *b) {\n"
        "#ifdef KN_EMU_COOP\n"
        "  u32 mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]}, all[32][6];\n"
        "  kn_emu_warp_gather(mine, sizeof mine, all);\n"
        "  const int lane = (int)(threadIdx.x & 31), g = lane >> 2, t = lane & 3;\n"
        "  for (int i = 0; i < 4; i++) {\n"
        "    const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);\n"
        "    float acc = 0.0f;\n"
        "    for (int k = 0; k < 16; k++) {\n"
        "      const u32 ra = all[(row & 7) * 4 + (k & 7) / 2][(row >> 3) + 2 * (k >> 3)];\n"
        "      const u32 rb = all[col * 4 + (k & 7) / 2][4 + (k >> 3)];\n"
        "      const u16 ha = (u16)(ra >> (16 * (k & 1))), hb = (u16)(rb >> (16 * (k & 1)));\n"
        "      T xa, xb;\n"
        "      std::memcpy(&xa, &ha, 2);\n"
        "      std::memcpy(&xb, &hb, 2);\n"
        "      acc += kn_tof(xa) * kn_tof(xb);\n"
        "    }\n"
        "    c[i] += acc;\n"
        "  }\n"
        "#else\n"
        "  asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.%s.%s.f32 {%%0, %%1, %%2, %%3}, {%%4, %%5, %%6, %%7}, \"\n"
        "               \"{%%8, %%9}, {%%0, %%1, %%2, %%3};\\n\"\n"
        "               : \"+f\"(c[0]), \"+f\"(c[1]), \"+f\"(c[2]), \"+f\"(c[3])\n"
        "               : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b[0]), \"r\"(b[1]));\n"
        "#endif\n"
        "}\n",
        bf ? "__float2bfloat16_rn" : "__float2half_rn", bf ? "bf16" : "f16", bf ? "bf16" : "f16");
}

char *kn_attn_flash_tc_source(const kn_attn_spec *s, char *err, size_t err_size)
{
    if (!kn_attn_check_spec(s, err, err_size))
        return NULL;
    if (s->dtype != KN_F16 && s->dtype != KN_BF16) {
        snprintf(err, err_size, "tensor-core attention takes float16 or bfloat16, not %s", kn_dtype_name(s->dtype));
        return NULL;
    }
    if (s->head_dim != 32 && s->head_dim != 64 && s->head_dim != 128) {
        snprintf(err, err_size, "tensor-core attention: head dim %d (32, 64 or 128)", s->head_dim);
        return NULL;
    }
    kn_sb sb = {0};
    kn_attn_preamble(&sb, s);
    kn_sb_printf(&sb, "#define BM 64\n#define BN 64\n#define KD (D / 16)\n#define NT (BN / 8)\n#define OT (D / 8)\n#define PAD 8\n");
    kn_mma_helpers(&sb, s->dtype);
    kn_sb_printf(&sb,
        "/* grid (ceil(sq / 64), q heads, batch), 4 warps: warp w takes query rows 16w ... 16w + 15 of the\n"
        " * block's 64; K/V tiles of 64 keys in shared memory in the input dtype; online softmax per row\n"
        " * on the S fragments (a row's 4 lanes combine by shuffles). */\n"
        "extern \"C\" __global__ void __launch_bounds__(128) kn_flash_attn_tc(const T *q, KN_KV_ARGS, const M *mask,\n"
        "                                                                   T *y, P p) {\n"
        "  __shared__ T ks[BN][D + PAD];\n"
        "  __shared__ T vs[BN][D + PAD];\n"
        "  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;\n"
        "  const i64 h = blockIdx.y, b = blockIdx.z, hk = h / p.group;\n"
        "  const i64 row0 = (i64)blockIdx.x * BM + warp * 16;\n"
        "  const i64 past = PAST(b), sk = SK(b);\n"
        "  const T zero = kn_f2t(0.0f);\n"
        "  u32 qa[KD][4];\n"
        "#pragma unroll\n"
        "  for (int kk = 0; kk < KD; kk++)\n"
        "#pragma unroll\n"
        "    for (int r = 0; r < 4; r++) {\n"
        "      const i64 row = row0 + g + 8 * (r & 1);\n"
        "      const int col = kk * 16 + 2 * t4 + 8 * (r >> 1);\n"
        "      const T *qr = q + ((b * p.qh + h) * p.sq + row) * D + col;\n"
        "      qa[kk][r] = row < p.sq ? kn_pack(qr[0], qr[1]) : 0u;\n"
        "    }\n"
        "  float o[OT][4];\n"
        "#pragma unroll\n"
        "  for (int ot = 0; ot < OT; ot++) o[ot][0] = o[ot][1] = o[ot][2] = o[ot][3] = 0.0f;\n"
        "  float mrow[2] = {-kn_inff(), -kn_inff()}, lrow[2] = {0.0f, 0.0f};\n"
        "  i64 kend = sk;\n"
        "  if (p.causal) {\n"
        "    i64 last = (i64)blockIdx.x * BM + BM - 1;\n"
        "    if (last > p.sq - 1) last = p.sq - 1;\n"
        "    if (last + past + 1 < kend) kend = last + past + 1;\n"
        "  }\n"
        "  for (i64 j0 = 0; j0 < kend; j0 += BN) {\n"
        "    __syncthreads();\n"
        "    for (int e = tid; e < BN * D; e += 128) {\n"
        "      const int r = e / D, c = e %% D;\n"
        "      const i64 j = j0 + r;\n"
        "      T kv = zero, vv = zero;\n"
        "      if (j < sk) { const i64 o2 = KOFF(b, hk, j) + c; kv = kn_f2t(kn_tof(kp[o2])); vv = kn_f2t(kn_tof(vp[o2])); }\n"
        "      ks[r][c] = kv;\n"
        "      vs[r][c] = vv;\n"
        "    }\n"
        "    __syncthreads();\n"
        "    float s[NT][4];\n"
        "#pragma unroll\n"
        "    for (int nt = 0; nt < NT; nt++) {\n"
        "      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;\n"
        "#pragma unroll\n"
        "      for (int kk = 0; kk < KD; kk++) {\n"
        "        const T *kr = &ks[nt * 8 + g][kk * 16 + 2 * t4];\n"
        "        const u32 bb[2] = {kn_pack(kr[0], kr[1]), kn_pack(kr[8], kr[9])};\n"
        "        kn_mma(s[nt], qa[kk], bb);\n"
        "      }\n"
        "    }\n"
        "    float mnew[2] = {mrow[0], mrow[1]};\n"
        "#pragma unroll\n"
        "    for (int nt = 0; nt < NT; nt++)\n"
        "#pragma unroll\n"
        "      for (int i = 0; i < 4; i++) {\n"
        "        const int rr = i >> 1;\n"
        "        const i64 row = row0 + g + 8 * rr, col = j0 + nt * 8 + 2 * t4 + (i & 1);\n"
        "        float x = s[nt][i] * p.scale;\n"
        "        if (col >= sk || (p.causal && col > row + past)) x = -kn_inff();\n"
        "#if MASK\n"
        "        else if (row < p.sq) {\n"
        "          if (col >= MLEN(sk)) x = -kn_inff();\n"
        "          else x += kn_maskv(mask, b * p.mst[0] + h * p.mst[1] + row * p.mst[2] + col * p.mst[3]);\n"
        "        }\n"
        "#endif\n"
        "        s[nt][i] = x;\n"
        "        mnew[rr] = fmaxf(mnew[rr], x);\n"
        "      }\n"
        "    float corr[2], ls[2] = {0.0f, 0.0f};\n"
        "#pragma unroll\n"
        "    for (int rr = 0; rr < 2; rr++) {\n"
        "      mnew[rr] = fmaxf(mnew[rr], __shfl_xor_sync(0xffffffffu, mnew[rr], 1));\n"
        "      mnew[rr] = fmaxf(mnew[rr], __shfl_xor_sync(0xffffffffu, mnew[rr], 2));\n"
        "      corr[rr] = mnew[rr] == -kn_inff() ? 1.0f : expf(mrow[rr] - mnew[rr]);\n"
        "    }\n"
        "#pragma unroll\n"
        "    for (int nt = 0; nt < NT; nt++)\n"
        "#pragma unroll\n"
        "      for (int i = 0; i < 4; i++) {\n"
        "        const int rr = i >> 1;\n"
        "        const float pv = mnew[rr] == -kn_inff() ? 0.0f : expf(s[nt][i] - mnew[rr]);\n"
        "        s[nt][i] = pv;\n"
        "        ls[rr] += pv;\n"
        "      }\n"
        "#pragma unroll\n"
        "    for (int rr = 0; rr < 2; rr++) {\n"
        "      ls[rr] += __shfl_xor_sync(0xffffffffu, ls[rr], 1);\n"
        "      ls[rr] += __shfl_xor_sync(0xffffffffu, ls[rr], 2);\n"
        "      lrow[rr] = lrow[rr] * corr[rr] + ls[rr];\n"
        "      mrow[rr] = mnew[rr];\n"
        "    }\n"
        "#pragma unroll\n"
        "    for (int ot = 0; ot < OT; ot++)\n"
        "#pragma unroll\n"
        "      for (int i = 0; i < 4; i++) o[ot][i] *= corr[i >> 1];\n"
        "    /* O += P V: P's accumulator fragments are the A fragments of the next product */\n"
        "#pragma unroll\n"
        "    for (int kk = 0; kk < BN / 16; kk++) {\n"
        "      const u32 pa[4] = {kn_pack(kn_f2t(s[2 * kk][0]), kn_f2t(s[2 * kk][1])),\n"
        "                         kn_pack(kn_f2t(s[2 * kk][2]), kn_f2t(s[2 * kk][3])),\n"
        "                         kn_pack(kn_f2t(s[2 * kk + 1][0]), kn_f2t(s[2 * kk + 1][1])),\n"
        "                         kn_pack(kn_f2t(s[2 * kk + 1][2]), kn_f2t(s[2 * kk + 1][3]))};\n"
        "      const int k0 = kk * 16 + 2 * t4;\n"
        "#pragma unroll\n"
        "      for (int ot = 0; ot < OT; ot++) {\n"
        "        const int c = ot * 8 + g;\n"
        "        const u32 vb[2] = {kn_pack(vs[k0][c], vs[k0 + 1][c]), kn_pack(vs[k0 + 8][c], vs[k0 + 9][c])};\n"
        "        kn_mma(o[ot], pa, vb);\n"
        "      }\n"
        "    }\n"
        "  }\n"
        "#pragma unroll\n"
        "  for (int rr = 0; rr < 2; rr++) {\n"
        "    const i64 row = row0 + g + 8 * rr;\n"
        "    if (row >= p.sq) continue;\n"
        "    const float inv = lrow[rr] > 0.0f ? 1.0f / lrow[rr] : 0.0f; /* a fully masked row gives 0 */\n"
        "    T *yr = y + ((b * p.qh + h) * p.sq + row) * D;\n"
        "#pragma unroll\n"
        "    for (int ot = 0; ot < OT; ot++) {\n"
        "      yr[ot * 8 + 2 * t4] = kn_f2t(o[ot][2 * rr] * inv);\n"
        "      yr[ot * 8 + 2 * t4 + 1] = kn_f2t(o[ot][2 * rr + 1] * inv);\n"
        "    }\n"
        "  }\n"
        "}\n");
    return kn_attn_finish(&sb, err, err_size);
}
