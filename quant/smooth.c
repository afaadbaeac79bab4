/* SmoothQuant's migration scales (kiln/quant.h, docs/quantization.md). */
#include "quant/quant_internal.h"

#include <math.h>

kn_status kn_smooth_scales(const double *act_absmax, const double *w_absmax, uint32_t k, double alpha, float *s,
                           kn_diag *d)
{
    if (!(alpha >= 0 && alpha <= 1)) {
        kn_diag_add(d, KN_ERROR, "smoothquant: alpha %g is not in [0, 1]", alpha);
        return KN_ERR_INVALID;
    }
    for (uint32_t j = 0; j < k; j++) {
        double a = act_absmax[j], w = w_absmax[j];
        if (!(a >= 0) || !isfinite(a) || !(w >= 0) || !isfinite(w)) {
            kn_diag_add(d, KN_ERROR, "smoothquant: channel %u: max |x| %g, max |w| %g (need finite, >= 0)", j, a, w);
            return KN_ERR_INVALID;
        }
        if (a == 0) {
            s[j] = 1.0f;
            continue;
        }
        double v = pow(a, alpha) / pow(fmax(w, 1e-5), 1 - alpha);
        s[j] = (float)fmax(v, 1e-5);
    }
    return KN_OK;
}
