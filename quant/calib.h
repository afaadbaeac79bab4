/* Calibration statistics: what `kiln calibrate` gathers while the CPU
 * backend runs a model over sample inputs (docs/quantization.md).
 * Per float tensor of the main graph: min, max, |x| max and (with a
 * histogram method) a histogram of |x| over [0, absmax] from a second
 * pass, then the method's threshold. Per input of a MatMul/Gemm with a
 * constant weight: per-channel mean |x| (AWQ), max |x| (SmoothQuant) and
 * XᵀX (GPTQ). The file
 * format is the CLI's business (tools/calib_table.c). */
#ifndef KILN_QUANT_CALIB_H
#define KILN_QUANT_CALIB_H

#include "kiln/quant.h"
#include "runtime/cpu/kernel.h"

typedef struct kn_calib_opts {
    kn_calib_method method;
    double percentile;     /* for KN_CALIB_PERCENTILE; 0: 99.99 */
    uint32_t bins;         /* histogram bins; 0: 2048 */
    uint32_t max_xtx_dim;  /* inputs wider than this get no XᵀX (a note); 0: 8192 */
} kn_calib_opts;

typedef struct kn_calib_tensor {
    kn_id value;
    kn_str name;
    kn_dtype dtype;        /* KN_UNDEFINED until seen as a float tensor */
    uint64_t count;        /* finite elements seen (pass 1) */
    uint64_t n_nonfinite;  /* NaN and Inf elements, left out of every figure */
    double min, max, absmax;
    uint64_t *hist;        /* bins counts of |x| over [0, absmax] (pass 2), or NULL */
    double amax;           /* the method's threshold (after kn_calib_finish) */
} kn_calib_tensor;

/* A linear layer's input: the rows of X are its vectors along the last
 * (contracted, K wide) axis. */
typedef struct kn_calib_input {
    kn_id value;
    kn_str name;
    uint32_t k;
    uint64_t rows;
    double *sum_abs;       /* [k] sum over rows of |x| (mean = sum / rows) */
    double *max_abs;       /* [k] max over rows of |x| (SmoothQuant) */
    double *xtx;           /* [k][k] sum over rows of x xᵀ, or NULL when k > max_xtx_dim */
} kn_calib_input;

typedef struct kn_calib_layer {
    kn_id node;
    kn_str name, op, weight;
    uint32_t input;        /* index into inputs */
    uint32_t k, n;         /* contracted and output widths */
    bool weight_nk;        /* the weight is stored [N][K] (Gemm transB) rather than [K][N] */
} kn_calib_layer;

typedef struct kn_calib {
    const kn_allocator *alloc;
    const kn_graph *g;
    kn_calib_opts o;
    kn_calib_tensor *tensors; /* in graph order: inputs, then node outputs */
    uint32_t n_tensors;
    kn_calib_input *inputs;
    uint32_t n_inputs;
    kn_calib_layer *layers;
    uint32_t n_layers;
    uint32_t n_samples;       /* samples run in pass 1 */
    int32_t *slot_of;         /* [g->n_values] tensor index or -1 */
    int32_t *input_of;        /* [g->n_values] linear input index or -1 */
    kn_status failed;         /* the first error an observation hit */
    char why[512];
    double *row;              /* scratch: one row of X */
} kn_calib;

/* Prepares collection for main graph g (borrowed; it must outlive c).
 * All memory, the runs' included, comes from a (NULL: malloc).
 * KN_ERR_INVALID for bad options (message in d), KN_ERR_NOMEM. */
kn_status kn_calib_create(const kn_graph *g, const kn_calib_opts *o, const kn_allocator *a, kn_diag *d,
                          kn_calib **out);
void kn_calib_destroy(kn_calib *c);

/* Whether the method needs the second (histogram) pass. */
bool kn_calib_two_pass(const kn_calib *c);

/* Runs g once on the CPU on inputs (one per graph input), gathering
 * pass `pass` (1: ranges and linear-input statistics, 2: histograms;
 * pass 2 only after every sample went through pass 1). Errors from the
 * run, or KN_ERR_INVALID when a linear layer's input has an unexpected
 * shape (message naming the node). */
kn_status kn_calib_run(kn_calib *c, int pass, const kn_rt_tensor *const *inputs, kn_diag *d);

/* After pass 2 (or pass 1 for minmax): each tensor's threshold, and XᵀX
 * made symmetric. */
void kn_calib_finish(kn_calib *c);

#endif
