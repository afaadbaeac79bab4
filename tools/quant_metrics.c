/* Error and perplexity figures for the quantization report (see
 * quant_metrics.h). */
#include "quant_metrics.h"

#include <math.h>

void kn_err_add(kn_err_acc *a, double ref, double q)
{
    if (!isfinite(ref) || !isfinite(q)) {
        a->nonfinite++;
        a->new_nonfinite += isfinite(ref) ? 1 : 0;
        return;
    }
    double e = q - ref;
    a->sq_err += e * e;
    a->sq_ref += ref * ref;
    if (fabs(e) > a->max_abs)
        a->max_abs = fabs(e);
    a->n++;
}

double kn_err_nmse(const kn_err_acc *a)
{
    if (a->new_nonfinite)
        return NAN;
    if (a->sq_err == 0)
        return 0;
    return a->sq_ref > 0 ? a->sq_err / a->sq_ref : INFINITY;
}

double kn_err_snr_db(const kn_err_acc *a)
{
    double e = kn_err_nmse(a);
    return e == 0 ? INFINITY : -10.0 * log10(e);
}

double kn_nll_window(const float *logits, size_t vocab, const int32_t *ids, size_t n)
{
    double nll = 0;
    for (size_t t = 0; t + 1 < n; t++) {
        int32_t y = ids[t + 1];
        if (y < 0 || (size_t)y >= vocab)
            return -1;
        const float *row = logits + t * vocab;
        double mx = -INFINITY;
        for (size_t v = 0; v < vocab; v++)
            mx = row[v] > mx ? row[v] : mx;
        double sum = 0;
        for (size_t v = 0; v < vocab; v++)
            sum += exp((double)row[v] - mx);
        nll += log(sum) + mx - (double)row[y];
    }
    return nll;
}

double kn_perplexity(double nll, uint64_t count)
{
    return count ? exp(nll / (double)count) : NAN;
}
