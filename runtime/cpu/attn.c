/* Attention row math shared by k_fused_attn.c and k_paged_attn.c. */
#include "runtime/cpu/attn.h"
#include "runtime/cpu/util.h"

#include <math.h>

double kn_attn_mask_bias(const kn_rt_tensor *mask, int64_t at)
{
    if (mask->dtype == KN_BOOL)
        return ((const uint8_t *)mask->data)[at] ? 0.0 : -INFINITY;
    return kn_get_f64(mask->dtype, mask->data, at);
}

void kn_attn_softmax_row(double *sv, int64_t n, bool all_masked)
{
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++)
        mx = isnan(sv[j]) || sv[j] > mx ? sv[j] : mx;
    for (int64_t j = 0; j < n; j++) {
        sv[j] = all_masked ? 0.0 : exp(sv[j] - mx);
        sum += sv[j];
    }
    for (int64_t j = 0; j < n; j++)
        sv[j] = all_masked ? 0.0 : sv[j] / sum;
}
