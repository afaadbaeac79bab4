/* Graph passes: one file each, one signature, run in the order written
 * in pipeline.c. */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "ir/ir.h"

typedef kn_status (*kn_pass_fn)(kn_graph *g, kn_diag *d);

typedef struct kn_pass_info {
    const char *name;
    kn_pass_fn run;
    const char *what; /* one line for --passes */
} kn_pass_info;

kn_status kn_pass_infer_shapes(kn_graph *g, kn_diag *d);

typedef struct kn_precision_opts {
    kn_dtype to;               /* KN_F32 (nothing to do), KN_F16 or KN_BF16 */
    const char *const *keep;   /* fnmatch patterns of node names or op types kept in float32 */
    uint32_t n_keep;
    bool verbose;
} kn_precision_opts;

/* Runs the main graph's float32 computation in o->to (see precision.c). */
kn_status kn_pass_precision(kn_graph *g, const kn_precision_opts *o, kn_diag *d);

/* The passes in pipeline order; *n receives their count. */
const kn_pass_info *kn_pipeline_passes(size_t *n);

typedef struct kn_pipeline_opts {
    bool verify_each; /* kn_graph_verify after every pass */
    const kn_precision_opts *precision; /* NULL: keep the model's precision */
} kn_pipeline_opts;

/* Runs the pipeline on g. Stops at the first failing pass (or failing
 * verification, reported as KN_ERR_INTERNAL naming the pass). */
kn_status kn_pipeline_run(kn_graph *g, const kn_pipeline_opts *o, kn_diag *d);

#endif
