/* Tensor comparison with ONNX backend-test semantics:
 * |got - want| <= atol + rtol * |want|, NaN equals NaN, ints exact. */
#include "compare.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>


bool kn_compare_tensors(const kn_rt_tensor *got, const kn_rt_tensor *want, double rtol, double atol, kn_cmp_result *r,
                        char *why, size_t why_size)
{
    memset(r, 0, sizeof *r);
    r->bad_index = -1;
    if (got->dtype != want->dtype) {
        snprintf(why, why_size, "dtype %s, expected %s", kn_dtype_name(got->dtype), kn_dtype_name(want->dtype));
        return false;
    }
    bool same_shape = got->rank == want->rank;
    for (int32_t i = 0; same_shape && i < got->rank; i++)
        same_shape = got->dims[i] == want->dims[i];
    if (!same_shape) {
        char a[256] = "", b[256] = "";
        size_t pa = 0, pb = 0;
        for (int32_t i = 0; i < got->rank && pa < sizeof a - 24; i++)
            pa += (size_t)snprintf(a + pa, sizeof a - pa, "%s%lld", i ? "x" : "", (long long)got->dims[i]);
        for (int32_t i = 0; i < want->rank && pb < sizeof b - 24; i++)
            pb += (size_t)snprintf(b + pb, sizeof b - pb, "%s%lld", i ? "x" : "", (long long)want->dims[i]);
        snprintf(why, why_size, "shape [%s], expected [%s]", a, b);
        return false;
    }
    bool numeric = kn_dt_is_float(got->dtype) || kn_dt_is_int(got->dtype) || got->dtype == KN_BOOL;
    if (!numeric) { /* float8, 4-bit, complex, strings: bit-exact */
        bool eq = got->nbytes == want->nbytes && memcmp(got->data, want->data, got->nbytes) == 0;
        if (!eq)
            snprintf(why, why_size, "bytes differ");
        return eq;
    }
    bool exact = !kn_dt_is_float(got->dtype);
    double err2 = 0, ref2 = 0;
    for (int64_t i = 0; i < got->numel; i++) {
        double g, w;
        if (exact) {
            int64_t gi = kn_get_i64(got->dtype, got->data, i), wi = kn_get_i64(want->dtype, want->data, i);
            if (got->dtype == KN_U64 ? kn_get_u64(got->dtype, got->data, i) != kn_get_u64(want->dtype, want->data, i)
                                     : gi != wi) {
                if (r->bad_index < 0) {
                    r->bad_index = i;
                    r->got = (double)gi;
                    r->want = (double)wi;
                }
                double d = fabs((double)gi - (double)wi);
                if (d > r->max_abs)
                    r->max_abs = d;
            }
            continue;
        }
        g = kn_get_f64(got->dtype, got->data, i);
        w = kn_get_f64(want->dtype, want->data, i);
        if (isnan(g) && isnan(w))
            continue;
        if (isinf(g) || isinf(w) || isnan(g) != isnan(w)) {
            if (g != w)
                r->nonfinite_mismatch = true;
            if (g != w && r->bad_index < 0) {
                r->bad_index = i;
                r->got = g;
                r->want = w;
            }
            continue;
        }
        double d = fabs(g - w);
        if (isnan(d)) {
            if (r->bad_index < 0) {
                r->bad_index = i;
                r->got = g;
                r->want = w;
            }
            continue;
        }
        err2 += d * d;
        ref2 += w * w;
        if (d > r->max_abs)
            r->max_abs = d;
        if (w != 0 && d / fabs(w) > r->max_rel)
            r->max_rel = d / fabs(w);
        if (d > atol + rtol * fabs(w) && r->bad_index < 0) {
            r->bad_index = i;
            r->got = g;
            r->want = w;
        }
    }
    r->nmse = ref2 > 0 ? err2 / ref2 : err2;
    if (r->bad_index >= 0)
        snprintf(why, why_size, "element %lld: got %.9g, expected %.9g (max abs %.3g, max rel %.3g, NMSE %.3g)",
                 (long long)r->bad_index, r->got, r->want, r->max_abs, r->max_rel, r->nmse);
    return r->bad_index < 0;
}

bool kn_compare_nmse(const kn_rt_tensor *got, const kn_rt_tensor *want, double nmse_max, kn_cmp_result *r, char *why,
                     size_t why_size)
{
    bool ok = kn_compare_tensors(got, want, 0, INFINITY, r, why, why_size); /* shape, dtype, NMSE, non-finite */
    if (!ok && r->bad_index < 0)
        return false; /* dtype, shape or bytes */
    if (r->nonfinite_mismatch) {
        snprintf(why, why_size, "element %lld: got %.9g, expected %.9g", (long long)r->bad_index, r->got, r->want);
        return false;
    }
    if (r->nmse > nmse_max) {
        snprintf(why, why_size, "NMSE %.3g over %.3g (max abs %.3g)", r->nmse, nmse_max, r->max_abs);
        return false;
    }
    return true;
}

