/* Quantized-weight family: com.microsoft MatMulNBits, the block-wise
 * weight-only quantized linear layer (also the op kiln's own weight-only
 * quantization produces), and com.microsoft MatMulIntegerToFloat (the QDQ
 * fusion's float-output 8-bit product; at the end of the file).
 *
 *   Y[..., n] = sum_k A[..., k] * W[n, k]  (+ bias[n])
 *   W[n, k]   = (code(n, k) - zp(n, k / block_size)) * scale(n, k / block_size)
 *
 * B is uint8 [N, k_blocks, blob] (blob = block_size * bits / 8 bytes; k_blocks
 * = ceil(K / block_size), the codes past K in the last block are padding),
 * codes packed low bits first. scales [N, k_blocks] in A's dtype. zero_points
 * (optional): uint8 packed the same way per row of N (ceil(k_blocks * bits / 8)
 * bytes a row), or A's float dtype unpacked [N, k_blocks]; absent means
 * 2^(bits-1). g_idx (input 4) is accepted only when it is the identity
 * grouping k / block_size; bias (input 5) optional [N]. accuracy_level is a
 * speed hint and ignored. The weight is dequantized in float (as ONNX
 * Runtime does) and the dot products are summed in double.
 *
 * Speed: the weight is decoded block by block into a small float buffer
 * (never the whole N x K matrix: 113 MB a call for SmolLM2's LM head)
 * while up to NB_ROWS rows of A, widened to double once, take their dot
 * products with it; each product goes into one of NB_LANES running double
 * sums (lane j takes the elements k with k % NB_LANES == j of each block),
 * added up in a fixed order at the end: independent sums the CPU overlaps
 * (and SSE2 does two at a time), where one running sum waited on every
 * add. The result does not depend on the instruction set (no fused
 * multiply-add; the same operations per lane either way). */
#include "runtime/cpu/linalg.h"
#include "runtime/cpu/util.h"

#include <string.h>
#if defined(__x86_64__) && defined(__SSE2__)
#include <emmintrin.h>
#endif

kn_gemm_isa kn_nbits_isa = KN_GEMM_ISA_AUTO;

#define NB_LANES 8 /* running sums per output */
#define NB_ROWS 16 /* rows of A per pass over the weight */

/* The code of element j of a bit-packed row (bits 2, 4 or 8). */
static unsigned code_at(const uint8_t *row, int64_t j, int bits)
{
    int64_t bit = j * bits;
    return (unsigned)(row[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
}

/* Elements j0 .. cnt - 1 of nbits_block (j0 even). */
static void nbits_block_tail(const uint8_t *codes, int bits, int64_t j0, int64_t cnt, float z, float s, float *w)
{
    int64_t j = j0;
    if (bits == 4) {
        for (; j + 2 <= cnt; j += 2) {
            unsigned byte = codes[j / 2];
            w[j] = ((float)(byte & 15u) - z) * s;
            w[j + 1] = ((float)(byte >> 4) - z) * s;
        }
    } else if (bits == 8) {
        for (; j < cnt; j++)
            w[j] = ((float)codes[j] - z) * s;
    }
    for (; j < cnt; j++)
        w[j] = ((float)code_at(codes, j, bits) - z) * s;
}

#if defined(__x86_64__) && defined(__SSE2__)
/* Codes j .. j + 15 of a block (bits 4 or 8) as 16 bytes, in order. */
static inline __m128i nbits_codes16(const uint8_t *codes, int bits, int64_t j)
{
    if (bits == 8)
        return _mm_loadu_si128((const __m128i *)(const void *)(codes + j));
    const __m128i low4 = _mm_set1_epi8(0x0f);
    __m128i raw = _mm_loadl_epi64((const __m128i *)(const void *)(codes + j / 2));
    return _mm_unpacklo_epi8(_mm_and_si128(raw, low4), _mm_and_si128(_mm_srli_epi16(raw, 4), low4));
}
#endif

/* Block `blk`'s weights of one output: ((code - z) * s) in float for its
 * cnt elements (the last block stops at K). */
static void nbits_block(const uint8_t *codes, int bits, int64_t cnt, float z, float s, float *w)
{
    int64_t j = 0;
#if defined(__x86_64__) && defined(__SSE2__)
    /* 16 codes at a time: nibbles (or bytes) widened to float32, then the
     * same subtract and multiply as below, element by element */
    const __m128i zero = _mm_setzero_si128();
    const __m128 vz = _mm_set1_ps(z), vs = _mm_set1_ps(s);
    if (bits == 4 || bits == 8) {
        for (; j + 16 <= cnt; j += 16) {
            __m128i c8 = nbits_codes16(codes, bits, j);
            __m128i c16[2] = {_mm_unpacklo_epi8(c8, zero), _mm_unpackhi_epi8(c8, zero)};
            for (int h = 0; h < 2; h++) {
                __m128 f0 = _mm_cvtepi32_ps(_mm_unpacklo_epi16(c16[h], zero));
                __m128 f1 = _mm_cvtepi32_ps(_mm_unpackhi_epi16(c16[h], zero));
                _mm_storeu_ps(w + j + 8 * h, _mm_mul_ps(_mm_sub_ps(f0, vz), vs));
                _mm_storeu_ps(w + j + 8 * h + 4, _mm_mul_ps(_mm_sub_ps(f1, vz), vs));
            }
        }
    }
#endif
    nbits_block_tail(codes, bits, j, cnt, z, s, w);
}

/* lanes[j] += a[i] * w[i] for the i < cnt with i % NB_LANES == j. */
static void nbits_dot(const double *a, const float *w, int64_t cnt, double *lanes)
{
    int64_t i = 0;
#if defined(__x86_64__) && defined(__SSE2__)
    __m128d l0 = _mm_loadu_pd(lanes), l1 = _mm_loadu_pd(lanes + 2), l2 = _mm_loadu_pd(lanes + 4),
            l3 = _mm_loadu_pd(lanes + 6);
    for (; i + NB_LANES <= cnt; i += NB_LANES) {
        __m128 w0 = _mm_loadu_ps(w + i), w1 = _mm_loadu_ps(w + i + 4);
        l0 = _mm_add_pd(l0, _mm_mul_pd(_mm_loadu_pd(a + i), _mm_cvtps_pd(w0)));
        l1 = _mm_add_pd(l1, _mm_mul_pd(_mm_loadu_pd(a + i + 2), _mm_cvtps_pd(_mm_movehl_ps(w0, w0))));
        l2 = _mm_add_pd(l2, _mm_mul_pd(_mm_loadu_pd(a + i + 4), _mm_cvtps_pd(w1)));
        l3 = _mm_add_pd(l3, _mm_mul_pd(_mm_loadu_pd(a + i + 6), _mm_cvtps_pd(_mm_movehl_ps(w1, w1))));
    }
    _mm_storeu_pd(lanes, l0);
    _mm_storeu_pd(lanes + 2, l1);
    _mm_storeu_pd(lanes + 4, l2);
    _mm_storeu_pd(lanes + 6, l3);
#endif
    for (; i + NB_LANES <= cnt; i += NB_LANES)
        for (int j = 0; j < NB_LANES; j++)
            lanes[j] += a[i + j] * (double)w[i + j];
    for (int j = 0; i + j < cnt; j++)
        lanes[j] += a[i + j] * (double)w[i + j];
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* nbits_block and nbits_dot 8 and 4 wide where the CPU has AVX2: the same
 * operations on the same elements and lanes (no fused multiply-add), so
 * the same results. */
__attribute__((target("avx2"))) static void nbits_block_avx2(const uint8_t *codes, int bits, int64_t cnt, float z,
                                                             float s, float *w)
{
    int64_t j = 0;
    const __m256 vz = _mm256_set1_ps(z), vs = _mm256_set1_ps(s);
    if (bits == 4 || bits == 8) {
        for (; j + 16 <= cnt; j += 16) {
            __m128i c8 = nbits_codes16(codes, bits, j);
            __m256 f0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c8));
            __m256 f1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(c8, 8)));
            _mm256_storeu_ps(w + j, _mm256_mul_ps(_mm256_sub_ps(f0, vz), vs));
            _mm256_storeu_ps(w + j + 8, _mm256_mul_ps(_mm256_sub_ps(f1, vz), vs));
        }
    }
    if (j < cnt) /* the rest as the portable form does it */
        nbits_block_tail(codes, bits, j, cnt, z, s, w);
}

__attribute__((target("avx2"))) static void nbits_dot_avx2(const double *a, const float *w, int64_t cnt,
                                                           double *lanes)
{
    int64_t i = 0;
    __m256d l0 = _mm256_loadu_pd(lanes), l1 = _mm256_loadu_pd(lanes + 4);
    for (; i + NB_LANES <= cnt; i += NB_LANES) {
        l0 = _mm256_add_pd(l0, _mm256_mul_pd(_mm256_loadu_pd(a + i), _mm256_cvtps_pd(_mm_loadu_ps(w + i))));
        l1 = _mm256_add_pd(l1, _mm256_mul_pd(_mm256_loadu_pd(a + i + 4), _mm256_cvtps_pd(_mm_loadu_ps(w + i + 4))));
    }
    _mm256_storeu_pd(lanes, l0);
    _mm256_storeu_pd(lanes + 4, l1);
    for (int j = 0; i + j < cnt; j++)
        lanes[j] += a[i + j] * (double)w[i + j];
}
#endif

/* The lanes' total, always in the same order. */
static double nbits_sum(const double *l)
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

kn_status kn_ref_MS_MatMulNBits(kn_kctx *c)
{
    const kn_rt_tensor *a, *b, *sc;
    KN_TRY(kn_need_in(c, 0, &a));
    KN_TRY(kn_need_in(c, 1, &b));
    KN_TRY(kn_need_in(c, 2, &sc));
    const kn_rt_tensor *zp = kn_kctx_in(c, 3), *gidx = kn_kctx_in(c, 4), *bias = kn_kctx_in(c, 5);
    int64_t K = kn_kctx_attr_int(c, "K", -1), N = kn_kctx_attr_int(c, "N", -1);
    int64_t bits = kn_kctx_attr_int(c, "bits", 4), bs = kn_kctx_attr_int(c, "block_size", -1);
    if (K <= 0 || N <= 0 || bs <= 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulNBits needs positive K, N and block_size (got %lld, %lld, %lld)",
                            (long long)K, (long long)N, (long long)bs);
    if (bits != 2 && bits != 4 && bits != 8)
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "MatMulNBits: bits=%lld not supported (2, 4 or 8)", (long long)bits);
    if ((bs * bits) % 8 != 0 || bs > ((int64_t)1 << 20))
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulNBits: block_size %lld does not fill whole bytes at %lld bits",
                            (long long)bs, (long long)bits);
    if (!kn_dt_is_float(a->dtype) || a->rank < 1 || a->dims[a->rank - 1] != K)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulNBits: A must be a float tensor whose last dimension is K=%lld",
                            (long long)K);
    if (K > ((int64_t)1 << 40) / N)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "MatMulNBits: weight %lld x %lld too large", (long long)N, (long long)K);
    int64_t nblk = (K + bs - 1) / bs, blob = bs * bits / 8, zrow = (nblk * bits + 7) / 8;
    if (b->dtype != KN_U8 || b->numel != N * nblk * blob)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulNBits: B must be uint8 [%lld, %lld, %lld] (has %lld elements)",
                            (long long)N, (long long)nblk, (long long)blob, (long long)b->numel);
    if (!kn_dt_is_float(sc->dtype) || sc->numel != N * nblk)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulNBits: scales must be float with %lld elements (has %lld)",
                            (long long)(N * nblk), (long long)sc->numel);
    bool zp_packed = zp && zp->dtype == KN_U8;
    if (zp && ((zp_packed && zp->numel != N * zrow) || (!zp_packed && (!kn_dt_is_float(zp->dtype) ||
                                                                       zp->numel != N * nblk))))
        return kn_kctx_fail(c, KN_ERR_INVALID,
                            "MatMulNBits: zero_points must be uint8 with %lld elements (packed) or float with %lld",
                            (long long)(N * zrow), (long long)(N * nblk));
    if (gidx) {
        if (gidx->numel != K || kn_dt_is_float(gidx->dtype))
            return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulNBits: g_idx must be an integer tensor of K elements");
        for (int64_t k = 0; k < K; k++)
            if (kn_get_i64(gidx->dtype, gidx->data, k) != k / bs)
                return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "MatMulNBits: g_idx other than k / block_size (act-order) "
                                                           "not supported");
    }
    if (bias && (!kn_dt_is_float(bias->dtype) || bias->numel != N))
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulNBits: bias must be float with N=%lld elements", (long long)N);

    kn_rt_tensor *y;
    int64_t dims[KN_RT_MAX_RANK];
    if (a->rank > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "MatMulNBits: rank %d too large", (int)a->rank);
    memcpy(dims, a->dims, (size_t)a->rank * sizeof *dims);
    dims[a->rank - 1] = N;
    KN_TRY(kn_kctx_out(c, 0, a->dtype, a->rank, dims, &y));
    int64_t rows = a->numel / K, tile = rows < NB_ROWS ? rows : NB_ROWS;
    if (rows == 0)
        return KN_OK;
    float *w = kn_kctx_scratch(c, (size_t)bs * sizeof *w);
    double *ra = kn_kctx_scratch(c, (size_t)(tile * K) * sizeof *ra);
    double *lanes = kn_kctx_scratch(c, (size_t)(tile * NB_LANES) * sizeof *lanes);
    if (!w || !ra || !lanes)
        return KN_ERR_NOMEM;
    const uint8_t *bd = b->data;
    float zdef = (float)(1 << (bits - 1));
#if defined(__x86_64__) && defined(__GNUC__)
    bool avx2 = kn_nbits_isa != KN_GEMM_ISA_BASE && kn_linalg_gemm_isa_has(KN_GEMM_ISA_AVX2);
#endif
    for (int64_t m0 = 0; m0 < rows; m0 += tile) {
        int64_t mt = rows - m0 < tile ? rows - m0 : tile;
        if (a->dtype == KN_F32)
            for (int64_t i = 0; i < mt * K; i++)
                ra[i] = (double)((const float *)a->data)[m0 * K + i];
        else
            for (int64_t i = 0; i < mt * K; i++)
                ra[i] = kn_get_f64(a->dtype, a->data, m0 * K + i);
        for (int64_t n = 0; n < N; n++) {
            memset(lanes, 0, (size_t)(mt * NB_LANES) * sizeof *lanes);
            for (int64_t blk = 0; blk < nblk; blk++) {
                float s = (float)kn_get_f64(sc->dtype, sc->data, n * nblk + blk);
                float z = !zp        ? zdef
                          : zp_packed ? (float)code_at((const uint8_t *)zp->data + n * zrow, blk, (int)bits)
                                      : (float)kn_get_f64(zp->dtype, zp->data, n * nblk + blk);
                int64_t k0 = blk * bs, cnt = K - k0 < bs ? K - k0 : bs;
#if defined(__x86_64__) && defined(__GNUC__)
                if (avx2) {
                    nbits_block_avx2(bd + (n * nblk + blk) * blob, (int)bits, cnt, z, s, w);
                    for (int64_t r = 0; r < mt; r++)
                        nbits_dot_avx2(ra + r * K + k0, w, cnt, lanes + r * NB_LANES);
                    continue;
                }
#endif
                nbits_block(bd + (n * nblk + blk) * blob, (int)bits, cnt, z, s, w);
                for (int64_t r = 0; r < mt; r++)
                    nbits_dot(ra + r * K + k0, w, cnt, lanes + r * NB_LANES);
            }
            double bn = bias ? kn_get_f64(bias->dtype, bias->data, n) : 0;
            for (int64_t r = 0; r < mt; r++) {
                double acc = nbits_sum(lanes + r * NB_LANES);
                if (bias)
                    acc += bn;
                kn_set_f64(y->dtype, y->data, (m0 + r) * N + n, acc);
            }
        }
    }
    return KN_OK;
}

/* k rows of B per int32 partial sum: |a - a_zp|, |b - b_zp| <= 255, so a
 * pair of products is at most 130050 and 16383 pairs stay below 2^31 */
#define IMTF_KCHUNK 32766

/* B[k, n] - bz[n] of an 8-bit B [K, N] (int8 when is_signed, else uint8). */
static inline int32_t imtf_b(const void *b, bool is_signed, int64_t N, int64_t k, int64_t n, const int16_t *bz)
{
    int64_t j = k * N + n;
    return (is_signed ? (int32_t)((const int8_t *)b)[j] : (int32_t)((const uint8_t *)b)[j]) - bz[n];
}

/* acc[r * N + n] += sum over k in [k0, k1) of ar[r * K + k] * (B[k, n] - bz[n])
 * for the mt rows of ar: B read row by row in place (no transposed copy);
 * with SSE2 two rows of B at a time, eight columns, as int16 pairs that
 * _mm_madd_epi16 multiplies and adds into int32. Integer sums: exact, in
 * any order. */
static void imtf_rows(const void *b, bool is_signed, int64_t N, const int16_t *bz, const int16_t *ar, int64_t K,
                      int64_t mt, int64_t k0, int64_t k1, int32_t *acc)
{
    int64_t k = k0;
#if defined(__x86_64__) && defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128();
    for (; k + 2 <= k1; k += 2) {
        const uint8_t *r0 = (const uint8_t *)b + k * N, *r1 = r0 + N;
        int64_t n = 0;
        for (; n + 8 <= N; n += 8) {
            __m128i x0 = _mm_loadl_epi64((const __m128i *)(const void *)(r0 + n));
            __m128i x1 = _mm_loadl_epi64((const __m128i *)(const void *)(r1 + n));
            __m128i w0 = is_signed ? _mm_srai_epi16(_mm_unpacklo_epi8(x0, x0), 8) : _mm_unpacklo_epi8(x0, zero);
            __m128i w1 = is_signed ? _mm_srai_epi16(_mm_unpacklo_epi8(x1, x1), 8) : _mm_unpacklo_epi8(x1, zero);
            __m128i z = _mm_loadu_si128((const __m128i *)(const void *)(bz + n));
            w0 = _mm_sub_epi16(w0, z);
            w1 = _mm_sub_epi16(w1, z);
            __m128i lo = _mm_unpacklo_epi16(w0, w1), hi = _mm_unpackhi_epi16(w0, w1);
            for (int64_t r = 0; r < mt; r++) {
                uint32_t pair = (uint32_t)(uint16_t)ar[r * K + k] | (uint32_t)(uint16_t)ar[r * K + k + 1] << 16;
                __m128i ap = _mm_set1_epi32((int32_t)pair);
                int32_t *cp = acc + r * N + n;
                _mm_storeu_si128((__m128i *)(void *)cp,
                                 _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)cp), _mm_madd_epi16(lo, ap)));
                _mm_storeu_si128((__m128i *)(void *)(cp + 4), _mm_add_epi32(_mm_loadu_si128((const __m128i *)(const void *)(cp + 4)),
                                                                            _mm_madd_epi16(hi, ap)));
            }
        }
        for (; n < N; n++)
            for (int64_t r = 0; r < mt; r++)
                acc[r * N + n] += ar[r * K + k] * imtf_b(b, is_signed, N, k, n, bz) +
                                  ar[r * K + k + 1] * imtf_b(b, is_signed, N, k + 1, n, bz);
    }
#endif
    for (; k < k1; k++)
        for (int64_t n = 0; n < N; n++) {
            int32_t bv = imtf_b(b, is_signed, N, k, n, bz);
            for (int64_t r = 0; r < mt; r++)
                acc[r * N + n] += ar[r * K + k] * bv;
        }
}

/* com.microsoft MatMulIntegerToFloat: the float result of an 8-bit
 * product, as the QDQ fusion makes it for a MatMul whose output is not
 * requantized:
 *   Y = sum_k (A - a_zp)(B - b_zp[n]) * (a_scale * b_scale[n]) (+ bias[n])
 * A [..., M, K] 8-bit, B [K, N] 8-bit, a_scale / a_zero_point per tensor,
 * b_scale / b_zero_point per tensor or per column, bias [N]; the product
 * exact in 64-bit integers, the multiplier a_scale * b_scale in float (as
 * ONNX Runtime), the output in the scales' float type. */
kn_status kn_ref_MS_MatMulIntegerToFloat(kn_kctx *c)
{
    const kn_rt_tensor *a, *b, *sa, *sb;
    KN_TRY(kn_need_in(c, 0, &a));
    KN_TRY(kn_need_in(c, 1, &b));
    KN_TRY(kn_need_in(c, 2, &sa));
    KN_TRY(kn_need_in(c, 3, &sb));
    const kn_rt_tensor *za = kn_kctx_in(c, 4), *zb = kn_kctx_in(c, 5), *bias = kn_kctx_in(c, 6);
    bool a8 = a->dtype == KN_I8 || a->dtype == KN_U8, b8 = b->dtype == KN_I8 || b->dtype == KN_U8;
    if (!a8 || !b8 || a->rank < 1 || b->rank != 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulIntegerToFloat: A must be 8-bit of rank >= 1 and B 8-bit of rank 2");
    int64_t K = b->dims[0], N = b->dims[1];
    if (a->dims[a->rank - 1] != K)
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulIntegerToFloat: A's last dimension %lld differs from B's %lld",
                            (long long)a->dims[a->rank - 1], (long long)K);
    if (!kn_dt_is_float(sa->dtype) || sb->dtype != sa->dtype || sa->numel != 1 || (sb->numel != 1 && sb->numel != N))
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulIntegerToFloat: a_scale must be a float scalar and b_scale a "
                                               "scalar or N values of its type");
    if ((za && (za->dtype != a->dtype || za->numel != 1)) ||
        (zb && (zb->dtype != b->dtype || (zb->numel != 1 && zb->numel != N))))
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "MatMulIntegerToFloat: zero points must be per tensor (A) or per "
                                                   "tensor / column (B), of the inputs' types");
    if (bias && (bias->dtype != sa->dtype || bias->numel != N))
        return kn_kctx_fail(c, KN_ERR_INVALID, "MatMulIntegerToFloat: bias must have N=%lld values of the scales' type",
                            (long long)N);
    if (a->rank > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "MatMulIntegerToFloat: rank %d too large", (int)a->rank);
    int64_t dims[KN_RT_MAX_RANK];
    memcpy(dims, a->dims, (size_t)a->rank * sizeof *dims);
    dims[a->rank - 1] = N;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, sa->dtype, a->rank, dims, &y));
    int64_t azp = za ? kn_get_i64(za->dtype, za->data, 0) : 0, rows = K ? a->numel / K : 0;
    float sav = (float)kn_get_f64(sa->dtype, sa->data, 0);
    if (rows == 0)
        return KN_OK;
    /* B read in place, row by row; up to NB_ROWS rows of A - a_zp (int16)
     * per pass; the sums exact (imtf_rows) */
    int64_t tile = rows < NB_ROWS ? rows : NB_ROWS;
    int16_t *bz = kn_kctx_scratch(c, (size_t)N * sizeof *bz);
    int16_t *ar = kn_kctx_scratch(c, (size_t)(tile * K) * sizeof *ar);
    int32_t *acc32 = kn_kctx_scratch(c, (size_t)(tile * N) * sizeof *acc32);
    int64_t *acc = kn_kctx_scratch(c, (size_t)(tile * N) * sizeof *acc);
    if (!bz || !ar || !acc32 || !acc)
        return kn_kctx_fail(c, KN_ERR_NOMEM, "MatMulIntegerToFloat: no memory for a %lld x %lld product",
                            (long long)tile, (long long)N);
    for (int64_t n = 0; n < N; n++)
        bz[n] = (int16_t)(zb ? kn_get_i64(zb->dtype, zb->data, zb->numel == 1 ? 0 : n) : 0);
    for (int64_t m0 = 0; m0 < rows; m0 += tile) {
        int64_t mt = rows - m0 < tile ? rows - m0 : tile;
        for (int64_t i = 0; i < mt * K; i++) {
            int64_t j = m0 * K + i;
            int64_t v = a->dtype == KN_U8 ? ((const uint8_t *)a->data)[j] : ((const int8_t *)a->data)[j];
            ar[i] = (int16_t)(v - azp);
        }
        memset(acc, 0, (size_t)(mt * N) * sizeof *acc);
        for (int64_t k0 = 0; k0 < K; k0 += IMTF_KCHUNK) {
            int64_t k1 = K - k0 < IMTF_KCHUNK ? K : k0 + IMTF_KCHUNK;
            memset(acc32, 0, (size_t)(mt * N) * sizeof *acc32);
            imtf_rows(b->data, b->dtype == KN_I8, N, bz, ar, K, mt, k0, k1, acc32);
            for (int64_t i = 0; i < mt * N; i++)
                acc[i] += acc32[i];
        }
        for (int64_t n = 0; n < N; n++) { /* each column's multiplier and bias once per pass */
            float mul = sav * (float)kn_get_f64(sb->dtype, sb->data, sb->numel == 1 ? 0 : n);
            double bn = bias ? kn_get_f64(bias->dtype, bias->data, n) : 0;
            for (int64_t r = 0; r < mt; r++) {
                double v = (double)acc[r * N + n] * (double)mul;
                if (bias)
                    v += bn;
                kn_set_f64(y->dtype, y->data, (m0 + r) * N + n, v);
            }
        }
    }
    return KN_OK;
}
