/* MatMulNBits kernel sources (quant_kernels.h): the one-thread-per-output
 * kernel, the warp-per-column GEMV for few rows, the choice between them
 * and the tensor-core kernel (e_nbits_tc.c), and their launch shapes.
 * Dequantization is (code - zero point) * scale in float, as the CPU
 * reference (runtime/cpu/k_quant.c). */
#include "codegen/cuda/quant_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_float3(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

bool kn_nbits_check_spec(const kn_nbits_spec *s, char *err, size_t n)
{
    if (!is_float3(s->a_dtype) || !is_float3(s->sc_dtype) ||
        (s->zp_dtype != KN_UNDEFINED && s->zp_dtype != KN_U8 && !is_float3(s->zp_dtype)) ||
        (s->bias_dtype != KN_UNDEFINED && !is_float3(s->bias_dtype))) {
        snprintf(err, n, "MatMulNBits kernels take float32/float16/bfloat16 A, scales, zero points and bias");
        return false;
    }
    if (s->bits != 2 && s->bits != 4 && s->bits != 8) {
        snprintf(err, n, "MatMulNBits kernels: bits=%d (2, 4 or 8)", s->bits);
        return false;
    }
    return true;
}

/* Types, the parameter struct, the argument list (KN_NBITS_ARGS) and the
 * zero point of block `blk` of column `n` (ZPV), shared by the kernels. */
void kn_nbits_preamble(kn_sb *sb, const kn_nbits_spec *s)
{
    bool zp = s->zp_dtype != KN_UNDEFINED, bias = s->bias_dtype != KN_UNDEFINED;
    unsigned mask = (1u << s->bits) - 1u;
    kn_sb_printf(sb,
                 "#include \"kiln_cuda.h\"\n"
                 "typedef unsigned int u32;\n"
                 "typedef %s T;\n"
                 "typedef %s ST;\n"
                 "typedef %s ZT;\n"
                 "typedef %s BT;\n"
                 "#define BITS %d\n"
                 "#define CMASK %uu\n"
                 "#define CPW (32 / BITS)\n"
                 "struct P { i64 total, n, k, nblk, blob, bs, zrow, rows; };\n"
                 "#define KN_NBITS_ARGS const T *a, const unsigned char *b, const ST *sc, %s%s T *y, P p\n",
                 kn_cuda_type(s->a_dtype), kn_cuda_type(s->sc_dtype), zp ? kn_cuda_type(s->zp_dtype) : "float",
                 bias ? kn_cuda_type(s->bias_dtype) : "float", s->bits, mask, zp ? "const ZT *zp," : "",
                 bias ? "const BT *bias," : "");
    if (!zp)
        kn_sb_printf(sb, "#define ZPV(n, blk) %u.0f\n", 1u << (s->bits - 1));
    else if (s->zp_dtype == KN_U8)
        kn_sb_printf(sb, "#define ZPV(n, blk) ((float)((zp[(n) * p.zrow + (((blk) * BITS) >> 3)] >> (((blk) * BITS) & 7)) "
                         "& CMASK))\n");
    else
        kn_sb_printf(sb, "#define ZPV(n, blk) kn_tof(zp[(n) * p.nblk + (blk)])\n");
    kn_sb_printf(sb, "#define BIASV(n) %s\n", bias ? "kn_tof(bias[n])" : "0.0f");
}

char *kn_nbits_finish(kn_sb *sb, char *err, size_t n)
{
    const char *t = kn_sb_str(sb);
    char *r = t ? strdup(t) : NULL;
    kn_sb_free(sb);
    if (!r)
        snprintf(err, n, "out of memory");
    return r;
}

/* One thread per output element walks the packed weight row block by
 * block, a block summed in float (fma), the blocks in double. */
char *kn_nbits_simple_source(const kn_nbits_spec *s, char *err, size_t err_size)
{
    if (!kn_nbits_check_spec(s, err, err_size))
        return NULL;
    kn_sb src = {0};
    kn_nbits_preamble(&src, s);
    kn_sb_printf(&src, "extern \"C\" __global__ void " KN_NBITS_SIMPLE_ENTRY "(KN_NBITS_ARGS) {\n"
                       "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                       "    i64 n = i %% p.n, m = i / p.n;\n"
                       "    const T *ar = a + m * p.k;\n"
                       "    const unsigned char *bn = b + n * p.nblk * p.blob;\n"
                       "    double acc = 0;\n"
                       "    for (i64 blk = 0; blk < p.nblk; blk++) {\n"
                       "      float s = kn_tof(sc[n * p.nblk + blk]);\n"
                       "      float z = ZPV(n, blk);\n"
                       "      const unsigned char *q = bn + blk * p.blob;\n"
                       "      const T *ak = ar + blk * p.bs;\n"
                       "      i64 len = p.k - blk * p.bs < p.bs ? p.k - blk * p.bs : p.bs;\n"
                       "      float part = 0.0f;\n");
    if (s->bits == 4 && s->word_blob) /* whole 32-bit words: 8 codes per load (offsets stay 4-aligned) */
        kn_sb_printf(&src, "      i64 j = 0;\n"
                           "      for (; j + 8 <= len; j += 8) {\n"
                           "        unsigned v = *(const unsigned int *)(q + (j >> 1));\n"
                           "#pragma unroll\n"
                           "        for (int t = 0; t < 8; t++)\n"
                           "          part = fmaf(kn_tof(ak[j + t]), ((float)((v >> (4 * t)) & 15u) - z) * s, part);\n"
                           "      }\n"
                           "      for (; j + 1 < len; j += 2) {\n"
                           "        unsigned v = q[j >> 1];\n"
                           "        part = fmaf(kn_tof(ak[j]), ((float)(v & 15u) - z) * s, part);\n"
                           "        part = fmaf(kn_tof(ak[j + 1]), ((float)(v >> 4) - z) * s, part);\n"
                           "      }\n"
                           "      if (len & 1) part = fmaf(kn_tof(ak[len - 1]), ((float)(q[(len - 1) >> 1] & 15u) - z) * s, part);\n");
    else if (s->bits == 4)
        kn_sb_printf(&src, "      for (i64 j = 0; j + 1 < len; j += 2) {\n"
                           "        unsigned v = q[j >> 1];\n"
                           "        part = fmaf(kn_tof(ak[j]), ((float)(v & 15u) - z) * s, part);\n"
                           "        part = fmaf(kn_tof(ak[j + 1]), ((float)(v >> 4) - z) * s, part);\n"
                           "      }\n"
                           "      if (len & 1) part = fmaf(kn_tof(ak[len - 1]), ((float)(q[(len - 1) >> 1] & 15u) - z) * s, part);\n");
    else
        kn_sb_printf(&src, "      for (i64 j = 0; j < len; j++) {\n"
                           "        i64 bit = j * BITS;\n"
                           "        float w = ((float)((q[bit >> 3] >> (bit & 7)) & CMASK) - z) * s;\n"
                           "        part = fmaf(kn_tof(ak[j]), w, part);\n"
                           "      }\n");
    kn_sb_printf(&src, "      acc += (double)part;\n"
                       "    }\n"
                       "    acc += (double)BIASV(n);\n"
                       "    y[i] = kn_fromd<T>(acc);\n"
                       "  }\n"
                       "}\n");
    return kn_nbits_finish(&src, err, err_size);
}

/* A warp per output column n: lane l reads words l, l + 32, ... of the
 * column's packed row (a warp load is 128 contiguous bytes), dequantizes
 * the word's CPW codes with its block's scale and zero point (applied
 * once per word: s * (sum a*code - z * sum a)), and accumulates them
 * against up to 4 rows of A in float; the lanes' sums
 * meet by __shfl_xor_sync and lane 0 writes the outputs. Needs a word
 * never to straddle two blocks: blob % 4 == 0. */
char *kn_nbits_gemv_source(const kn_nbits_spec *s, char *err, size_t err_size)
{
    if (!kn_nbits_check_spec(s, err, err_size))
        return NULL;
    kn_sb src = {0};
    kn_nbits_preamble(&src, s);
    kn_sb_printf(&src,
        "#define WARPS %d\n"
        "#define ROWS %d\n"
        "/* grid (ceil(n / WARPS), ceil(rows / ROWS)), 32 * WARPS threads: warp w of block x takes column\n"
        " * x * WARPS + w for rows y * ROWS ... y * ROWS + ROWS - 1 */\n"
        "extern \"C\" __global__ void __launch_bounds__(32 * WARPS) " KN_NBITS_GEMV_ENTRY "(KN_NBITS_ARGS) {\n"
        "  const int lane = threadIdx.x & 31;\n"
        "  const i64 n = (i64)blockIdx.x * WARPS + (threadIdx.x >> 5);\n"
        "  if (n >= p.n) return; /* the whole warp: its lanes share n */\n"
        "  const i64 m0 = (i64)blockIdx.y * ROWS;\n"
        "  const int nr = p.rows - m0 < ROWS ? (int)(p.rows - m0) : ROWS;\n"
        "  const u32 *bw = (const u32 *)(b + n * p.nblk * p.blob);\n"
        "  const int nw = (int)((p.k + CPW - 1) / CPW), wpb = (int)(p.blob / 4), k = (int)p.k;\n"
        "  const T *a0 = a + m0 * p.k;\n"
        "  float acc[ROWS];\n"
        "#pragma unroll\n"
        "  for (int r = 0; r < ROWS; r++) acc[r] = 0.0f;\n"
        "  /* per word and row: sum a * code and sum a, then acc += s (sum_ac - z sum_a), which is\n"
        "   * sum a (code - z) s with the scale and zero point applied once per word */\n"
        "  for (int w = lane; w < nw; w += 32) {\n"
        "    const u32 v = bw[w];\n"
        "    const int blk = w / wpb, k0 = w * CPW;\n"
        "    const float s = kn_tof(sc[n * p.nblk + blk]), z = ZPV(n, blk);\n"
        "    float cv[CPW];\n"
        "#pragma unroll\n"
        "    for (int t = 0; t < CPW; t++) cv[t] = (float)((v >> (BITS * t)) & CMASK);\n"
        "    if (k0 + CPW <= k) {\n"
        "#pragma unroll\n"
        "      for (int r = 0; r < ROWS; r++) {\n"
        "        if (r >= nr) break;\n"
        "        const T *ar = a0 + (i64)r * k + k0;\n"
        "        float sac = 0.0f, sa = 0.0f;\n"
        "#pragma unroll\n"
        "        for (int t = 0; t < CPW; t++) {\n"
        "          const float x = kn_tof(ar[t]);\n"
        "          sac = fmaf(x, cv[t], sac);\n"
        "          sa += x;\n"
        "        }\n"
        "        acc[r] = fmaf(s, fmaf(-z, sa, sac), acc[r]);\n"
        "      }\n"
        "    } else { /* the last word holds codes past K (block padding) */\n"
        "      for (int r = 0; r < nr; r++) {\n"
        "        const T *ar = a0 + (i64)r * k + k0;\n"
        "        float sac = 0.0f, sa = 0.0f;\n"
        "        for (int t = 0; k0 + t < k; t++) {\n"
        "          const float x = kn_tof(ar[t]);\n"
        "          sac = fmaf(x, cv[t], sac);\n"
        "          sa += x;\n"
        "        }\n"
        "        acc[r] = fmaf(s, fmaf(-z, sa, sac), acc[r]);\n"
        "      }\n"
        "    }\n"
        "  }\n"
        "#pragma unroll\n"
        "  for (int r = 0; r < ROWS; r++)\n"
        "#pragma unroll\n"
        "    for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);\n"
        "  if (lane == 0)\n"
        "    for (int r = 0; r < nr; r++) y[(m0 + r) * p.n + n] = kn_fromd<T>((double)(acc[r] + BIASV(n)));\n"
        "}\n",
        KN_NBITS_GEMV_WARPS, KN_NBITS_GEMV_ROWS);
    return kn_nbits_finish(&src, err, err_size);
}

kn_nbits_kind kn_nbits_choose(const kn_nbits_spec *s, const kn_nbits_params *p)
{
    bool half = s->a_dtype == KN_F16 || s->a_dtype == KN_BF16;
    if (p->rows < 1 || p->k >= ((int64_t)1 << 30)) /* the fast kernels index K in 32 bits */
        return KN_NBITS_SIMPLE;
    if (half && s->bits == 4 && p->bs % 8 == 0 && p->rows >= KN_NBITS_TC_MIN_ROWS &&
        (p->rows + KN_NBITS_TC_BM - 1) / KN_NBITS_TC_BM <= 65535)
        return KN_NBITS_TC;
    if (p->blob % 4 == 0 && p->rows < KN_NBITS_TC_MIN_ROWS)
        return KN_NBITS_GEMV;
    return KN_NBITS_SIMPLE;
}

kn_dim3 kn_nbits_grid(kn_nbits_kind kind, const kn_nbits_params *p)
{
    if (kind == KN_NBITS_GEMV)
        return (kn_dim3){(uint32_t)((p->n + KN_NBITS_GEMV_WARPS - 1) / KN_NBITS_GEMV_WARPS),
                         (uint32_t)((p->rows + KN_NBITS_GEMV_ROWS - 1) / KN_NBITS_GEMV_ROWS), 1};
    if (kind == KN_NBITS_TC)
        return (kn_dim3){(uint32_t)((p->n + KN_NBITS_TC_BN - 1) / KN_NBITS_TC_BN),
                         (uint32_t)((p->rows + KN_NBITS_TC_BM - 1) / KN_NBITS_TC_BM), 1};
    return kn_emit_grid(p->total);
}

uint32_t kn_nbits_threads(kn_nbits_kind kind)
{
    return kind == KN_NBITS_GEMV ? 32 * KN_NBITS_GEMV_WARPS : kind == KN_NBITS_TC ? KN_NBITS_TC_THREADS : 256;
}
