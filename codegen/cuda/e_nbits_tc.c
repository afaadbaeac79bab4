/* The MatMulNBits kernel on tensor cores (quant_kernels.h): Y = A Wᵀ with
 * A [rows, K] float16/bfloat16 and W [N, K] 4-bit codes. A block of 4
 * warps owns a 64x64 tile of Y (warps 2x2, 32x32 each: 2 m16 x 4 n8 mma
 * tiles, 32 float accumulators per lane). K runs in steps of 32: the A tile
 * [64][32] is copied to shared memory, the weight tile [64 columns][32]
 * is read as 32-bit words (8 codes; a word never straddles a block since
 * block_size % 8 == 0), dequantized in float and stored rounded to A's
 * dtype; then each warp issues 2 k16 steps of mma.sync m16n8k16
 * (row.col: W's rows are the col-major B operand as they are stored).
 * Codes past K, rows past `rows` and columns past N are zeros. The
 * fragment layouts are those of e_attn_tc.c (kn_mma_helpers). */
#include "codegen/cuda/attn_kernels.h"
#include "codegen/cuda/quant_kernels.h"

#include <stdio.h>

char *kn_nbits_tc_source(const kn_nbits_spec *s, char *err, size_t err_size)
{
    if (!kn_nbits_check_spec(s, err, err_size))
        return NULL;
    if ((s->a_dtype != KN_F16 && s->a_dtype != KN_BF16) || s->bits != 4) {
        snprintf(err, err_size, "tensor-core MatMulNBits takes float16/bfloat16 A and 4-bit weights (%s, %d bits)",
                 kn_dtype_name(s->a_dtype), s->bits);
        return NULL;
    }
    kn_sb sb = {0};
    kn_nbits_preamble(&sb, s);
    kn_mma_helpers(&sb, s->a_dtype);
    kn_sb_printf(&sb,
        "#define BM %d\n#define BN %d\n#define BK 32\n#define PAD 8\n"
        "/* grid (ceil(n / BN), ceil(rows / BM)), 128 threads; needs block_size %% 8 == 0 */\n"
        "extern \"C\" __global__ void __launch_bounds__(128) " KN_NBITS_TC_ENTRY "(KN_NBITS_ARGS) {\n"
        "  __shared__ T as[BM][BK + PAD];\n"
        "  __shared__ T ws[BN][BK + PAD];\n"
        "  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;\n"
        "  const i64 m0 = (i64)blockIdx.y * BM, n0 = (i64)blockIdx.x * BN;\n"
        "  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;\n"
        "  const T zero = kn_f2t(0.0f);\n"
        "  float c[2][4][4];\n"
        "#pragma unroll\n"
        "  for (int mt = 0; mt < 2; mt++)\n"
        "#pragma unroll\n"
        "    for (int nt = 0; nt < 4; nt++) c[mt][nt][0] = c[mt][nt][1] = c[mt][nt][2] = c[mt][nt][3] = 0.0f;\n"
        "  for (i64 k0 = 0; k0 < p.k; k0 += BK) {\n"
        "    __syncthreads();\n"
        "    for (int e = tid; e < BM * BK; e += 128) {\n"
        "      const int r = e / BK, cc = e %% BK;\n"
        "      const i64 row = m0 + r, k = k0 + cc;\n"
        "      as[r][cc] = row < p.rows && k < p.k ? a[row * p.k + k] : zero;\n"
        "    }\n"
        "    for (int e = tid; e < BN * (BK / 8); e += 128) {\n"
        "      const int r = e / (BK / 8), wi = e %% (BK / 8);\n"
        "      const i64 n = n0 + r, kw = k0 + wi * 8;\n"
        "      float wv[8];\n"
        "#pragma unroll\n"
        "      for (int t = 0; t < 8; t++) wv[t] = 0.0f;\n"
        "      if (n < p.n && kw < p.k) {\n"
        "        const u32 v = *(const u32 *)(b + n * p.nblk * p.blob + (kw >> 1));\n"
        "        const int blk = (int)kw / (int)p.bs;\n"
        "        const float s = kn_tof(sc[n * p.nblk + blk]), z = ZPV(n, blk);\n"
        "#pragma unroll\n"
        "        for (int t = 0; t < 8; t++) wv[t] = kw + t < p.k ? ((float)((v >> (4 * t)) & 15u) - z) * s : 0.0f;\n"
        "      }\n"
        "#pragma unroll\n"
        "      for (int t = 0; t < 8; t++) ws[r][wi * 8 + t] = kn_f2t(wv[t]);\n"
        "    }\n"
        "    __syncthreads();\n"
        "#pragma unroll\n"
        "    for (int kk = 0; kk < BK / 16; kk++) {\n"
        "      u32 af[2][4], bf[4][2];\n"
        "#pragma unroll\n"
        "      for (int mt = 0; mt < 2; mt++)\n"
        "#pragma unroll\n"
        "        for (int r = 0; r < 4; r++) {\n"
        "          const T *ap = &as[wm + mt * 16 + g + 8 * (r & 1)][kk * 16 + 2 * t4 + 8 * (r >> 1)];\n"
        "          af[mt][r] = kn_pack(ap[0], ap[1]);\n"
        "        }\n"
        "#pragma unroll\n"
        "      for (int nt = 0; nt < 4; nt++) {\n"
        "        const T *bp = &ws[wn + nt * 8 + g][kk * 16 + 2 * t4];\n"
        "        bf[nt][0] = kn_pack(bp[0], bp[1]);\n"
        "        bf[nt][1] = kn_pack(bp[8], bp[9]);\n"
        "      }\n"
        "#pragma unroll\n"
        "      for (int mt = 0; mt < 2; mt++)\n"
        "#pragma unroll\n"
        "        for (int nt = 0; nt < 4; nt++) kn_mma(c[mt][nt], af[mt], bf[nt]);\n"
        "    }\n"
        "  }\n"
        "#pragma unroll\n"
        "  for (int mt = 0; mt < 2; mt++)\n"
        "#pragma unroll\n"
        "    for (int nt = 0; nt < 4; nt++)\n"
        "#pragma unroll\n"
        "      for (int i = 0; i < 4; i++) {\n"
        "        const i64 row = m0 + wm + mt * 16 + g + 8 * (i >> 1), col = n0 + wn + nt * 8 + 2 * t4 + (i & 1);\n"
        "        if (row < p.rows && col < p.n) y[row * p.n + col] = kn_f2t(c[mt][nt][i] + BIASV(col));\n"
        "      }\n"
        "}\n",
        KN_NBITS_TC_BM, KN_NBITS_TC_BN);
    return kn_nbits_finish(&sb, err, err_size);
}
