/* Shared by the quant/ files: the quantization grid of one group and the
 * kn_qweights buffers. */
#ifndef KILN_QUANT_INTERNAL_H
#define KILN_QUANT_INTERNAL_H

#include "kiln/quant.h"

/* One group's grid: dq = (q - zero) * scale, q in [qmin, qmax]. */
typedef struct kn_qgrid {
    float scale;
    int32_t zero; /* 0 for symmetric */
    int32_t qmin, qmax;
} kn_qgrid;

/* The grid for a group whose values span [mn, mx] (mn <= mx). */
kn_qgrid kn_wq_grid(const kn_qscheme *s, double mn, double mx);
/* The code of x on grid g (rounded to nearest even, clamped). */
int32_t kn_wq_q(const kn_qgrid *g, double x);
static inline double kn_wq_dq(const kn_qgrid *g, int32_t q) { return (double)(q - g->zero) * (double)g->scale; }

/* Checks the scheme and sizes (messages name `what`); fills out's sizes
 * and allocates its buffers (zeroed; in_scale only when with_in_scale). */
kn_status kn_qweights_alloc(uint32_t n_out, uint32_t n_in, const kn_qscheme *s, bool with_in_scale,
                            const kn_allocator *a, kn_diag *d, const char *what, kn_qweights *out);
/* Stores code q of (row, col), the group's grid being g (its scale and
 * zero are stored by kn_qweights_set_grid). */
void kn_qweights_put(kn_qweights *w, uint32_t row, uint32_t col, int32_t q);
void kn_qweights_set_grid(kn_qweights *w, uint32_t row, uint32_t group, const kn_qgrid *g);

/* False (with a message naming `what`) when an array holds NaN or Inf. */
bool kn_wq_finite(const float *x, size_t n, const char *what, kn_diag *d);

#endif
