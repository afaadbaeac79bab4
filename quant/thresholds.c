/* Activation thresholds from histograms of |x|: percentile and TensorRT's
 * entropy (KL-divergence) calibration (kiln/quant.h). */
#include "kiln/quant.h"
#include "ir/arena.h"

#include <math.h>
#include <string.h>

bool kn_calib_method_parse(const char *name, kn_calib_method *out)
{
    static const char *names[] = {"minmax", "percentile", "entropy"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (kn_calib_method)i;
            return true;
        }
    return false;
}

const char *kn_calib_method_name(kn_calib_method m)
{
    return m == KN_CALIB_PERCENTILE ? "percentile" : m == KN_CALIB_ENTROPY ? "entropy" : "minmax";
}

double kn_calib_percentile(const uint64_t *counts, uint32_t n_bins, double hist_max, double pct)
{
    double total = 0;
    for (uint32_t i = 0; i < n_bins; i++)
        total += (double)counts[i];
    if (total == 0 || n_bins == 0)
        return 0;
    double target = fmin(pct, 100.0) / 100.0 * total, cum = 0;
    for (uint32_t i = 0; i < n_bins; i++) {
        cum += (double)counts[i];
        if (cum >= target && counts[i])
            return (double)(i + 1) * hist_max / n_bins;
    }
    return hist_max;
}

/* KL(P || Q) for candidate edge i (see kiln/quant.h): P is counts[0..i)
 * with the tail folded into its last bin, Q the same bins merged into
 * n_levels groups, spread back over each group's non-empty bins. Q's
 * total is the bins' total, so each group is visited twice: once for its
 * sum, once for its terms. */
static double divergence(const uint64_t *counts, uint32_t i, double tail, uint32_t n_levels)
{
    double in_range = 0;
    for (uint32_t j = 0; j < i; j++)
        in_range += (double)counts[j];
    double p_total = in_range + tail, q_total = in_range;
    if (q_total == 0)
        return INFINITY;
    double kl = 0;
    uint32_t k = 0;
    for (uint32_t g = 0; g < n_levels && k < i; g++) {
        uint32_t k0 = k;
        double sum = 0;
        uint32_t nonzero = 0;
        while (k < i && (uint64_t)k * n_levels / i == g) {
            sum += (double)counts[k];
            nonzero += counts[k] != 0;
            k++;
        }
        for (uint32_t j = k0; j < k; j++) {
            double p = (double)counts[j] + (j == i - 1 ? tail : 0);
            if (p == 0)
                continue;
            if (!counts[j]) /* the tail folded into an empty bin: Q has nothing there */
                return INFINITY;
            double q = sum / nonzero / q_total;
            p /= p_total;
            kl += p * log(p / q);
        }
    }
    return kl;
}

/* The same divergence from prefix sums over the bins (c = counts,
 * P = Σ c' with the tail folded in, Q = Σ c over [0, i), m_g = group g's
 * mean over its non-empty bins):
 *   KL = Σ c' log c' / P - log P - Σ_g log m_g Σ_{j in g} c'_j / P + log Q,
 * O(n_levels) per candidate instead of O(i). cum[j], cum_clc[j], cum_nz[j]:
 * sums of c, c log c and (c != 0) over bins [0, j). */
static double divergence_fast(const uint64_t *counts, uint32_t i, double tail, uint32_t n_levels, const double *cum,
                              const double *cum_clc, const double *cum_nz)
{
    double q_total = cum[i], p_total = q_total + tail;
    if (q_total == 0)
        return INFINITY;
    double last = (double)counts[i - 1];
    if (tail > 0 && last == 0)
        return INFINITY; /* the tail folded into an empty bin: Q has nothing there */
    double last_p = last + tail;
    double a = cum_clc[i - 1] + (last_p > 0 ? last_p * log(last_p) : 0), b = 0;
    for (uint32_t g = 0; g < n_levels; g++) {
        /* bins k with floor(k * n_levels / i) == g: [ceil(g i / L), ceil((g+1) i / L)) */
        uint32_t k0 = (uint32_t)(((uint64_t)g * i + n_levels - 1) / n_levels);
        uint32_t k1 = (uint32_t)(((uint64_t)(g + 1) * i + n_levels - 1) / n_levels);
        if (k1 <= k0)
            continue;
        double sum = cum[k1] - cum[k0], nz = cum_nz[k1] - cum_nz[k0];
        if (sum == 0)
            continue;
        double mass = sum + (k1 == i ? tail : 0);
        b += log(sum / nz) * mass;
    }
    return a / p_total - log(p_total) - b / p_total + log(q_total);
}

double kn_calib_entropy(const uint64_t *counts, uint32_t n_bins, double hist_max, uint32_t n_levels)
{
    double total = 0;
    for (uint32_t i = 0; i < n_bins; i++)
        total += (double)counts[i];
    if (total == 0 || n_bins == 0)
        return 0;
    if (n_levels == 0 || n_levels >= n_bins)
        return hist_max;
    double *cum = kn_mem_alloc(NULL, 3 * ((size_t)n_bins + 1) * sizeof *cum);
    double *cum_clc = cum ? cum + n_bins + 1 : NULL, *cum_nz = cum ? cum + 2 * ((size_t)n_bins + 1) : NULL;
    if (cum) {
        cum[0] = cum_clc[0] = cum_nz[0] = 0;
        for (uint32_t j = 0; j < n_bins; j++) {
            double c = (double)counts[j];
            cum[j + 1] = cum[j] + c;
            cum_clc[j + 1] = cum_clc[j] + (c > 0 ? c * log(c) : 0);
            cum_nz[j + 1] = cum_nz[j] + (c > 0);
        }
    }
    double best = INFINITY, tail = 0;
    uint32_t best_i = n_bins;
    /* from the widest candidate down: on ties the widest wins; without
     * memory for the sums, the direct O(i) form */
    for (uint32_t i = n_bins; i >= n_levels; i--) {
        double kl = cum ? divergence_fast(counts, i, tail, n_levels, cum, cum_clc, cum_nz)
                        : divergence(counts, i, tail, n_levels);
        /* a narrower edge must win by more than rounding noise */
        if (isinf(best) ? kl < best : kl < best - 1e-12 * fabs(best)) {
            best = kl;
            best_i = i;
        }
        tail += (double)counts[i - 1];
    }
    kn_mem_free(NULL, cum);
    return (double)best_i * hist_max / n_bins;
}
