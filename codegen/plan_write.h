/* Plan writer (see plan_write.c and docs/plan-format.md). */
#ifndef KILN_PLAN_WRITE_H
#define KILN_PLAN_WRITE_H

#include "ir/ir.h"

struct kn_cu_program;

/* A file to carry in the plan's named-blob section (e.g. tokenizer.json). */
typedef struct kn_plan_named_in {
    const char *name; /* unique, non-empty */
    const void *data;
    size_t size;      /* bytes */
} kn_plan_named_in;

typedef struct kn_plan_options {
    const char *options; /* build options, recorded as given (e.g. "--target cpu -O2") */
    const char *targets; /* comma-separated target list, e.g. "cpu" */
    const struct kn_cu_program *cuda; /* target cuda: the lowered main graph, or NULL */
    const kn_plan_named_in *named;    /* named blobs, in this order; none: no NAMED section */
    uint32_t n_named;
    /* target cuda decoders: the prefill program (the graph lowered for [1, P]
     * new tokens; `cuda` is then the decode program, [1, 1]), or NULL. Its
     * slots name g's value ids and constants: the caller checks that both
     * lowerings agree (tools/compile_decoder.c). */
    const struct kn_cu_program *cuda_prefill;
    /* with cuda_prefill: batched decode programs (the graph lowered for
     * [B, 1], one B each; at most KN_PLAN_MAX_DECODE_BATCHES), checked by
     * the caller as the prefill program is */
    const struct kn_cu_program *const *cuda_batch;
    uint32_t n_cuda_batch;
} kn_plan_options;

/* Writes g as a plan at `path`: first to a temporary file in the same
 * folder, then renamed over `path`, so no half-written plan is ever seen.
 * Returns KN_OK, KN_ERR_IO (with the reason in d), KN_ERR_INVALID
 * (named blobs: an empty or repeated name, more than KN_PLAN_MAX_NAMED) or
 * KN_ERR_NOMEM. */
kn_status kn_plan_write(kn_graph *g, const kn_plan_options *o, const char *path, kn_diag *d);

/* Removes the temporary file of a plan being written; async-signal-safe,
 * for a SIGINT/SIGTERM handler. */
void kn_plan_cleanup_on_signal(void);

#endif
