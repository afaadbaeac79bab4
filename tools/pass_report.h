/* kiln compile --report: node counts per op type before and after the
 * pass pipeline and what each pass removed and added, as JSON. */
#ifndef KILN_TOOLS_PASS_REPORT_H
#define KILN_TOOLS_PASS_REPORT_H

#include "passes/passes.h"

typedef struct kn_pass_report kn_pass_report;

/* Starts a report with g's counts before the pipeline. NULL when out of
 * memory. Free with kn_pass_report_free. */
kn_pass_report *kn_pass_report_new(const kn_graph *g);
void kn_pass_report_free(kn_pass_report *r);
/* A kn_pass_observer: ctx is the report. */
kn_status kn_pass_report_observe(void *ctx, const kn_pass_info *p, bool ran, const kn_graph *g);
/* What a lowered CUDA program runs (--target cuda): steps in order, by
 * kind, and the distinct kernels they launch. */
typedef struct kn_pass_report_cuda {
    uint32_t steps;    /* all steps */
    uint32_t launches; /* generated-kernel launches */
    uint32_t gemms;    /* cuBLASLt matmuls */
    uint32_t gemms_int8; /* of which int8 x int8 -> int32 */
    uint32_t copies;   /* device-to-device copies */
    uint32_t host;     /* nodes run on the CPU inside the CUDA session */
    uint32_t kernels;  /* distinct generated kernels */
} kn_pass_report_cuda;

/* Adds the "cuda" section: after (the plan) and before (the same model
 * lowered after the -O0 passes only; NULL with a note saying why when it
 * is not known). KN_ERR_NOMEM. */
kn_status kn_pass_report_set_cuda(kn_pass_report *r, const kn_pass_report_cuda *before,
                                  const kn_pass_report_cuda *after, const char *note);
/* Writes the report to path atomically. KN_ERR_IO (reported to d) when
 * it cannot be written, KN_ERR_NOMEM. */
kn_status kn_pass_report_write(const kn_pass_report *r, const char *path, const char *model, int level, kn_diag *d);

#endif
