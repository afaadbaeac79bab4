/* The numbers of kiln compile's quantization report: error of a
 * quantized tensor against the float one (NMSE, SNR, max |error|) and
 * perplexity from next-token log-likelihoods (docs/quantization.md). */
#ifndef KILN_TOOLS_QUANT_METRICS_H
#define KILN_TOOLS_QUANT_METRICS_H

#include <stddef.h>
#include <stdint.h>

/* Running sums over element pairs (reference, quantized), in double. */
typedef struct kn_err_acc {
    double sq_err;      /* Σ (q - r)² */
    double sq_ref;      /* Σ r² */
    double max_abs;     /* max |q - r| */
    uint64_t n;         /* pairs counted */
    uint64_t nonfinite; /* pairs where either is NaN/Inf (not counted; a quantized
                         * NaN where the reference is finite makes every figure NaN) */
    uint64_t new_nonfinite; /* reference finite, quantized not */
} kn_err_acc;

void kn_err_add(kn_err_acc *a, double ref, double q);
/* NMSE = Σ (q - r)² / Σ r²: 0 when both sums are 0, +Inf when only the
 * reference is all zeros; NaN when the quantized values have NaN/Inf where
 * the reference does not. */
double kn_err_nmse(const kn_err_acc *a);
/* SNR in dB = -10 log10(NMSE) (+Inf for an exact match). */
double kn_err_snr_db(const kn_err_acc *a);

/* Σ over t = 0..n-2 of -log softmax(logits[t])[ids[t + 1]], in double
 * (max-subtracted log-sum-exp): the negative log-likelihood of the
 * next-token predictions of one window; logits [n][vocab] row-major.
 * -1 (and nothing added) when an id is outside [0, vocab). */
double kn_nll_window(const float *logits, size_t vocab, const int32_t *ids, size_t n);
/* exp(nll / count); NaN for count 0. */
double kn_perplexity(double nll, uint64_t count);

#endif
