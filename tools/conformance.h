/* The conformance runner's driver (conformance.c), shared by the
 * kiln-conformance program. */
#ifndef KILN_TOOLS_CONFORMANCE_H
#define KILN_TOOLS_CONFORMANCE_H

#include "ir/ir.h"

#include <stdbool.h>

struct kn_rt_tensor;

typedef struct kn_conformance_opts {
    double rtol, atol; /* defaults: ONNX backend-test's 1e-3, 1e-7 */
    bool tol_given;     /* set by --rtol/--atol: overrides a case README's tolerance */
    double nmse;        /* >= 0 (--nmse X): judge floats by NMSE instead; < 0: off */
    /* Turns the imported graph into what runs (compile → plan → load);
     * may replace *g. `sample` holds the first test data set's inputs (an
     * entry is NULL when absent). NULL: run the imported graph as is. */
    kn_status (*prepare)(void *ctx, kn_graph **g, const struct kn_rt_tensor *const *sample, kn_diag *d);
    void *prepare_ctx;
    /* Runs the prepared graph once; NULL: the CPU reference backend. */
    kn_status (*run)(void *ctx, const kn_graph *g, const struct kn_rt_tensor *const *inputs,
                     struct kn_rt_tensor **outputs, kn_diag *d);
    /* Called after each case that was prepared (to free what prepare made). */
    void (*finish)(void *ctx);
} kn_conformance_opts;

/* Why a case is skipped (training op, sequence/map/optional type, string
 * op, random generator), or NULL when it must run. */
const char *kn_conformance_skip_reason(const kn_graph *g);

/* Older ONNX test data store bfloat16 tensors as uint16: relabels t as
 * bfloat16 when the graph declares v as bfloat16. */
void kn_conformance_fix_bf16(struct kn_rt_tensor *t, const kn_value *v);

/* Known-failure lists: lines "case_name  reason", '#' comments. Load
 * returns the file's text (free()), or NULL with a message. */
char *kn_xfail_load(const char *path);
bool kn_xfail_has(const char *list, const char *case_name);

int kn_conformance_main(int argc, char **argv, const kn_conformance_opts *o);

#endif
