/* Comparing output tensors with reference tensors (compare.c). */
#ifndef KILN_TOOLS_COMPARE_H
#define KILN_TOOLS_COMPARE_H

#include "runtime/cpu/kernel.h"

typedef struct kn_cmp_result {
    double max_abs, max_rel; /* over all elements (rel: where want != 0) */
    int64_t bad_index;       /* first element out of tolerance, -1 if none */
    double got, want;        /* at bad_index */
    double nmse;             /* sum (got-want)^2 / sum want^2 over finite elements (0 when equal) */
    bool nonfinite_mismatch; /* a NaN or infinity where the other has none */
} kn_cmp_result;

/* True when got matches want in dtype, shape and values within
 * atol + rtol*|want|; otherwise `why` says how it does not. */
/* With nmse_max >= 0 the verdict is NMSE <= nmse_max (and no NaN or
 * infinity mismatch) instead of the elementwise tolerance. */
bool kn_compare_nmse(const kn_rt_tensor *got, const kn_rt_tensor *want, double nmse_max, kn_cmp_result *r, char *why,
                     size_t why_size);

bool kn_compare_tensors(const kn_rt_tensor *got, const kn_rt_tensor *want, double rtol, double atol, kn_cmp_result *r,
                        char *why, size_t why_size);

#endif
