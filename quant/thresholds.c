/* Activation thresholds from histograms of |x|: percentile and TensorRT's
 * entropy (KL-divergence) calibration (kiln/quant.h). */
#include "kiln/quant.h"

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

double kn_calib_entropy(const uint64_t *counts, uint32_t n_bins, double hist_max, uint32_t n_levels)
{
    double total = 0;
    for (uint32_t i = 0; i < n_bins; i++)
        total += (double)counts[i];
    if (total == 0 || n_bins == 0)
        return 0;
    if (n_levels == 0 || n_levels >= n_bins)
        return hist_max;
    double best = INFINITY, tail = 0;
    uint32_t best_i = n_bins;
    /* from the widest candidate down: on ties the widest wins */
    for (uint32_t i = n_bins; i >= n_levels; i--) {
        double kl = divergence(counts, i, tail, n_levels);
        if (kl < best) {
            best = kl;
            best_i = i;
        }
        tail += (double)counts[i - 1];
    }
    return (double)best_i * hist_max / n_bins;
}
