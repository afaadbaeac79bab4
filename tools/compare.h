/* Comparing output tensors with reference tensors (compare.c). */
#ifndef KILN_TOOLS_COMPARE_H
#define KILN_TOOLS_COMPARE_H

#include "runtime/cpu/kernel.h"

typedef struct kn_cmp_result {
    double max_abs, max_rel; /* over all elements (rel: where want != 0) */
    int64_t bad_index;       /* first element out of tolerance, -1 if none */
    double got, want;        /* at bad_index */
} kn_cmp_result;

/* True when got matches want in dtype, shape and values within
 * atol + rtol*|want|; otherwise `why` says how it does not. */
bool kn_compare_tensors(const kn_rt_tensor *got, const kn_rt_tensor *want, double rtol, double atol, kn_cmp_result *r,
                        char *why, size_t why_size);

#endif
