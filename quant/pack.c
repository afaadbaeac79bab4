/* kn_qweights in com.microsoft MatMulNBits layout (kiln/quant.h), the
 * form kiln's weight-only linear op runs from. */
#include "quant/quant_internal.h"

#include <string.h>

kn_status kn_qweights_pack_nbits(const kn_qweights *w, uint8_t *codes, float *scales, uint8_t *zero_points,
                                 kn_diag *d)
{
    uint32_t bits = w->scheme.bits, bs = w->group_size, nb = w->n_groups;
    if ((uint64_t)bs * bits % 8) {
        kn_diag_add(d, KN_ERROR, "MatMulNBits packing: a block of %u %u-bit codes is not whole bytes", bs, bits);
        return KN_ERR_INVALID;
    }
    size_t blob = (size_t)bs * bits / 8, zrow = ((size_t)nb * bits + 7) / 8;
    int32_t mid = 1 << (bits - 1);
    memset(codes, 0, (size_t)w->n_out * nb * blob);
    memset(zero_points, 0, (size_t)w->n_out * zrow);
    for (uint32_t r = 0; r < w->n_out; r++)
        for (uint32_t g = 0; g < nb; g++) {
            size_t gi = (size_t)r * nb + g;
            int32_t zp = w->zeros ? w->zeros[gi] : mid;
            scales[gi] = w->scales[gi];
            zero_points[(size_t)r * zrow + (size_t)g * bits / 8] |= (uint8_t)(zp << (g * bits % 8));
            uint8_t *blk = codes + gi * blob;
            uint32_t c0 = g * bs, c1 = c0 + bs < w->n_in ? c0 + bs : w->n_in;
            for (uint32_t c = c0; c < c1; c++) {
                uint32_t u = (uint32_t)(kn_qweights_code(w, r, c) + zp), bit = (c - c0) * bits;
                blk[bit / 8] |= (uint8_t)(u << (bit % 8));
            }
        }
    return KN_OK;
}
