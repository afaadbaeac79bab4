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
/* Writes the report to path atomically. KN_ERR_IO (reported to d) when
 * it cannot be written, KN_ERR_NOMEM. */
kn_status kn_pass_report_write(const kn_pass_report *r, const char *path, const char *model, int level, kn_diag *d);

#endif
