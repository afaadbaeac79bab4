/* Weight quantization and calibration thresholds: the algorithms
 * `kiln calibrate` and the compile-time quantization pass use
 * (docs/quantization.md). Plain arrays in, plain arrays out: nothing here
 * knows about graphs or files.
 *
 * Weight layout everywhere: w[n_out][n_in] row-major, one row per output
 * channel (PyTorch's Linear layout; an ONNX MatMul B of shape [K, N] is its
 * transpose). Groups run along n_in, as in com.microsoft MatMulNBits. */
#ifndef KILN_QUANT_H
#define KILN_QUANT_H

#include "kiln/kiln.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the quantization grid -------------------------------------------------- */

/* How a row's groups map to integers. bits 8 or 4. Symmetric: scale =
 * absmax / qmax with qmax = 2^(bits-1) - 1, q = round(x / scale) in
 * [-qmax, qmax] (restricted range, so |x - dq| <= scale / 2 everywhere),
 * stored with an implicit zero point 2^(bits-1) (8 for 4 bits, as
 * MatMulNBits' default). Asymmetric: the group's [min(x, 0), max(x, 0)]
 * spread over [0, 2^bits - 1]: scale = (max - min) / (2^bits - 1), zero =
 * round(-min / scale), q = clamp(round(x / scale) + zero). Rounding is to
 * nearest, ties to even (numpy and torch round the same way). A group of
 * zeros gets scale 1. */
typedef struct kn_qscheme {
    uint32_t bits;       /* 8 or 4 */
    uint32_t group_size; /* along n_in; 0: one group per row (per channel) */
    bool symmetric;
} kn_qscheme;

/* Quantized weights. Owned by the allocator that made them; free with
 * kn_qweights_free. */
typedef struct kn_qweights {
    uint32_t n_out, n_in;
    kn_qscheme scheme;
    uint32_t group_size; /* the effective group size (n_in when per channel) */
    uint32_t n_groups;   /* per row: ceil(n_in / group_size) */
    /* Packed codes, rows of n_in values. 8 bits: int8 (symmetric) or
     * uint8 (asymmetric), one byte each. 4 bits: unsigned 0..15, two per
     * byte, the lower-indexed value in the low nibble, each row padded to
     * whole bytes (row stride ceil(n_in / 2) bytes). Symmetric 4-bit
     * codes are stored as q + 8. */
    uint8_t *q;
    size_t q_bytes;
    float *scales;       /* [n_out][n_groups] */
    uint8_t *zeros;      /* [n_out][n_groups] asymmetric zero points; NULL when symmetric */
    float *in_scale;     /* [n_in] AWQ: the float weights are dq / in_scale per input channel
                          * (the layer's input must be divided by it); NULL otherwise */
    float *deq;          /* [n_out][n_in] the float weights the codes stand for
                          * (dequantized, divided by in_scale for AWQ) */
    const kn_allocator *alloc;
} kn_qweights;

void kn_qweights_free(kn_qweights *w);

/* The stored code of w[row][col] as the integer it stands for, zero point
 * removed: dq = code * scale (before any in_scale). */
int32_t kn_qweights_code(const kn_qweights *w, uint32_t row, uint32_t col);

/* Writes w in com.microsoft MatMulNBits layout with block_size =
 * w->group_size: codes [n_out][n_blocks][block_size * bits / 8] (unsigned
 * codes, lower-indexed first / low bits first; the last block's padding
 * past n_in is 0), scales [n_out][n_blocks] (float32), zero_points
 * [n_out][ceil(n_blocks * bits / 8)] (4 bits: two per byte, low nibble
 * first). Symmetric weights get zero point 2^(bits-1) (MatMulNBits'
 * default), their codes q + 2^(bits-1). Buffers are the caller's, of
 * those sizes. AWQ's in_scale is not part of the layout (the input must
 * be divided by it elsewhere). KN_ERR_INVALID when block_size * bits is
 * not a multiple of 8. */
kn_status kn_qweights_pack_nbits(const kn_qweights *w, uint8_t *codes, float *scales, uint8_t *zero_points,
                                 kn_diag *d);

/* ---- round to nearest ---------------------------------------------------------- */

/* Quantizes w (n_out x n_in) with scheme s by rounding to nearest: INT8
 * per output channel (bits 8, group 0, symmetric) or group-wise INT4
 * (bits 4, group 128). *out is filled (allocator a, NULL: malloc).
 * KN_ERR_INVALID (message in d) for bits other than 4/8, zero sizes or a
 * non-finite weight; KN_ERR_NOMEM. */
kn_status kn_wq_rtn(const float *w, uint32_t n_out, uint32_t n_in, const kn_qscheme *s, const kn_allocator *a,
                    kn_diag *d, kn_qweights *out);

/* ---- GPTQ ------------------------------------------------------------------------- */

typedef struct kn_gptq_opts {
    double percdamp;     /* dampening: H += percdamp * mean(diag H) * I; 0: default 0.01 */
    uint32_t block_size; /* lazy-batch width; 0: default 128 (does not change the result) */
    bool act_order;      /* quantize columns in order of decreasing diag(H); groups
                          * then keep their contiguous columns, with scale and zero
                          * taken from the unmodified weights ("static groups") */
} kn_gptq_opts;

/* GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization
 * for Generative Pre-trained Transformers"): quantizes w column by column
 * and spreads each column's error over the columns not yet quantized
 * through the upper Cholesky factor of the inverse of the dampened
 * Hessian. h is n_in x n_in, the layer input's XᵀX (any positive multiple
 * gives the same result). Without act_order a group's scale and zero are
 * taken when quantization reaches its first column, from the weights as
 * updated by then. Input channels with H[i][i] == 0 (never active) get
 * weight 0. KN_ERR_INVALID for a bad scheme, a non-finite input, or a
 * Hessian that stays not positive definite after dampening (the message
 * says so); KN_ERR_NOMEM. */
kn_status kn_wq_gptq(const float *w, uint32_t n_out, uint32_t n_in, const double *h, const kn_qscheme *s,
                     const kn_gptq_opts *o, const kn_allocator *a, kn_diag *d, kn_qweights *out);

/* ---- AWQ -------------------------------------------------------------------------- */

typedef struct kn_awq_opts {
    uint32_t n_grid; /* alphas tried: i / (n_grid - 1), i = 0..n_grid-1; 0: default 20 */
} kn_awq_opts;

/* AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"):
 * per-input-channel scales s = mean|x|^alpha, normalised so that
 * max(s) * min(s) = 1, with alpha from the grid minimising the layer's
 * output error on the calibration data, sum over rows of |x Wᵀ - x Ŵᵀ|²
 * = trace(ΔW H ΔWᵀ), where h = XᵀX (n_in x n_in) and Ŵ = RTN(W diag(s))
 * diag(s)^-1. alpha 0 is plain RTN, so the result is never worse than
 * RTN on the calibration data. `mean_abs` (n_in) is the input's
 * per-channel mean |x| (as the calibration table stores it; negative or
 * non-finite values are refused). out->in_scale receives s: the codes quantize
 * W diag(s), the layer's input must be divided by s (folded into the
 * previous op, or applied as an input scale). *alpha and *err (may be
 * NULL) receive the chosen alpha and its error. Errors as kn_wq_rtn. */
kn_status kn_wq_awq(const float *w, uint32_t n_out, uint32_t n_in, const double *mean_abs, const double *h,
                    const kn_qscheme *s, const kn_awq_opts *o, const kn_allocator *a, kn_diag *d,
                    kn_qweights *out, double *alpha, double *err);

/* trace((W - Ŵ) H (W - Ŵ)ᵀ): the summed squared output error of the
 * layer over the calibration rows whose XᵀX is h. */
double kn_wq_layer_error(const float *w, const float *w_hat, uint32_t n_out, uint32_t n_in, const double *h);

/* ---- SmoothQuant ------------------------------------------------------------------ */

/* SmoothQuant's per-input-channel migration scales (Xiao et al. 2023):
 * s[j] = act_absmax[j]^alpha / w_absmax[j]^(1 - alpha), with w_absmax[j]
 * the largest |W| of input channel j over every output channel of every
 * layer that will share s, floored at 1e-5 (as the reference
 * implementation), and s at least 1e-5. A channel never active
 * (act_absmax 0) gets s = 1. The layer then computes (x / s) · (diag(s) W):
 * the activation outliers move into the weights, which quantize per
 * output channel. KN_ERR_INVALID (message in d) when alpha is not in
 * [0, 1] or an input is negative or non-finite. */
kn_status kn_smooth_scales(const double *act_absmax, const double *w_absmax, uint32_t k, double alpha, float *s,
                           kn_diag *d);

/* ---- activation thresholds ---------------------------------------------------------- */

typedef enum kn_calib_method { KN_CALIB_MINMAX, KN_CALIB_PERCENTILE, KN_CALIB_ENTROPY } kn_calib_method;

/* Parses "minmax" / "percentile" / "entropy"; false for anything else. */
bool kn_calib_method_parse(const char *name, kn_calib_method *out);
const char *kn_calib_method_name(kn_calib_method m);

/* Thresholds from a histogram of |x|: counts[i] counts values in
 * [i, i+1) * hist_max / n_bins (the last bin includes hist_max).
 *
 * Percentile: the upper edge of the bin where the cumulative count first
 * reaches pct % of the total. Entropy (TensorRT's INT8 calibrator): for
 * each candidate edge i = n_levels..n_bins, P = counts[0..i) with the
 * counts beyond folded into bin i-1, Q = counts[0..i) merged into n_levels
 * groups and spread back evenly over each group's non-empty bins; the
 * threshold is the edge with the smallest KL(P || Q) (the largest such
 * edge on ties). n_levels: 128 for signed INT8. Both return 0 for an
 * empty histogram. */
double kn_calib_percentile(const uint64_t *counts, uint32_t n_bins, double hist_max, double pct);
double kn_calib_entropy(const uint64_t *counts, uint32_t n_bins, double hist_max, uint32_t n_levels);

#ifdef __cplusplus
}
#endif

#endif
