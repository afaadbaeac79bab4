/* Whole-graph summaries: op histogram, parameters per dtype, unsupported
 * ops. Used by `kiln inspect` and by compile to report every unsupported
 * op at once. */
#ifndef KILN_IR_STATS_H
#define KILN_IR_STATS_H

#include "ir/ir.h"

typedef struct kn_op_count {
    kn_str op_type;
    kn_str domain;
    int64_t opset;      /* unsupported entries only (0 otherwise) */
    uint32_t count;
    kn_str *nodes;      /* unsupported entries only: node names, `count` of them */
} kn_op_count;

typedef struct kn_graph_stats {
    uint32_t n_nodes;           /* all graphs */
    uint32_t n_subgraphs;
    uint32_t n_values;
    kn_op_count *ops;           /* histogram, sorted by count desc, then name */
    uint32_t n_ops;
    kn_op_count *unsupported;   /* per (domain, op_type, opset), sorted by name */
    uint32_t n_unsupported;
    uint32_t n_unsupported_nodes;
    uint64_t param_count[KN_DTYPE_COUNT];  /* elements of constants per dtype */
    uint64_t param_bytes[KN_DTYPE_COUNT];
    uint64_t n_constants;
    uint64_t external_bytes;
} kn_graph_stats;

/* Whether a target can run an op (e.g. has a CPU kernel for it). */
typedef bool (*kn_op_pred)(kn_op op);

/* Fills *st (owned; free with kn_graph_stats_free). An op is unsupported
 * when it is not in ir/ops.def or, given `runs`, when runs(op) is false.
 * KN_ERR_NOMEM on failure. */
kn_status kn_graph_stats_compute(const kn_graph *g, kn_op_pred runs, kn_graph_stats *st);
void kn_graph_stats_free(const kn_graph *g, kn_graph_stats *st);

/* One error naming every unsupported op (op, domain, opset, count, node
 * names), for `target` (e.g. "cpu"; NULL: the op table only). Returns
 * KN_OK when there is none, else KN_ERR_UNSUPPORTED. */
kn_status kn_graph_report_unsupported(const kn_graph *g, kn_op_pred runs, const char *target, kn_diag *diag);

#endif
