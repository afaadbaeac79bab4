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
 * Runtime does) and the dot products are summed in double. */
#include "runtime/cpu/util.h"

#include <string.h>

/* The code of element j of a bit-packed row (bits 2, 4 or 8). */
static unsigned code_at(const uint8_t *row, int64_t j, int bits)
{
    int64_t bit = j * bits;
    return (unsigned)(row[bit / 8] >> (bit % 8)) & ((1u << bits) - 1u);
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

    float *w = kn_kctx_scratch(c, (size_t)(N * K) * sizeof *w);
    double *row = kn_kctx_scratch(c, (size_t)K * sizeof *row);
    if (!w || !row)
        return KN_ERR_NOMEM;
    const uint8_t *bd = b->data;
    float zdef = (float)(1 << (bits - 1));
    for (int64_t n = 0; n < N; n++)
        for (int64_t blk = 0; blk < nblk; blk++) {
            float s = (float)kn_get_f64(sc->dtype, sc->data, n * nblk + blk);
            float z = !zp        ? zdef
                      : zp_packed ? (float)code_at((const uint8_t *)zp->data + n * zrow, blk, (int)bits)
                                  : (float)kn_get_f64(zp->dtype, zp->data, n * nblk + blk);
            const uint8_t *codes = bd + (n * nblk + blk) * blob;
            for (int64_t j = 0; j < bs && blk * bs + j < K; j++)
                w[n * K + blk * bs + j] = ((float)code_at(codes, j, (int)bits) - z) * s;
        }

    kn_rt_tensor *y;
    int64_t dims[KN_RT_MAX_RANK];
    if (a->rank > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "MatMulNBits: rank %d too large", (int)a->rank);
    memcpy(dims, a->dims, (size_t)a->rank * sizeof *dims);
    dims[a->rank - 1] = N;
    KN_TRY(kn_kctx_out(c, 0, a->dtype, a->rank, dims, &y));
    int64_t rows = a->numel / K;
    for (int64_t m = 0; m < rows; m++) {
        for (int64_t k = 0; k < K; k++)
            row[k] = kn_get_f64(a->dtype, a->data, m * K + k);
        for (int64_t n = 0; n < N; n++) {
            const float *wn = w + n * K;
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += row[k] * (double)wn[k];
            if (bias)
                acc += kn_get_f64(bias->dtype, bias->data, n);
            kn_set_f64(y->dtype, y->data, m * N + n, acc);
        }
    }
    return KN_OK;
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
    /* B - b_zp transposed to [N][K] int32 and each row of A - a_zp as
     * int32, so the inner loop is a plain integer dot product (the sum
     * stays exact in int64) */
    int32_t *bt = kn_kctx_scratch(c, (size_t)(N * K + K + 1) * sizeof *bt);
    if (!bt)
        return kn_kctx_fail(c, KN_ERR_NOMEM, "MatMulIntegerToFloat: no memory for the %lld x %lld weights",
                            (long long)K, (long long)N);
    int32_t *ar = bt + N * K;
    for (int64_t n = 0; n < N; n++) {
        int64_t bzp = zb ? kn_get_i64(zb->dtype, zb->data, zb->numel == 1 ? 0 : n) : 0;
        for (int64_t k = 0; k < K; k++)
            bt[n * K + k] = (int32_t)(kn_get_i64(b->dtype, b->data, k * N + n) - bzp);
    }
    for (int64_t m = 0; m < rows; m++) {
        for (int64_t k = 0; k < K; k++)
            ar[k] = (int32_t)(kn_get_i64(a->dtype, a->data, m * K + k) - azp);
        for (int64_t n = 0; n < N; n++) {
            const int32_t *bn = bt + n * K;
            int64_t acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (int64_t)(ar[k] * bn[k]); /* |product| <= 255 * 255 */
            float mul = sav * (float)kn_get_f64(sb->dtype, sb->data, sb->numel == 1 ? 0 : n);
            double v = (double)acc * (double)mul;
            if (bias)
                v += kn_get_f64(bias->dtype, bias->data, n);
            kn_set_f64(y->dtype, y->data, m * N + n, v);
        }
    }
    return KN_OK;
}
