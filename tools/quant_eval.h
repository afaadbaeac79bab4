/* kiln compile --eval / --eval-text: the float and the quantized graph run
 * on the CPU backend over the same samples; per-layer and end-to-end error,
 * perplexity for language models, the report (stdout and JSON) and the
 * gates (docs/quantization.md). */
#ifndef KILN_TOOLS_QUANT_EVAL_H
#define KILN_TOOLS_QUANT_EVAL_H

#include "ir/ir.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct kn_qeval_opts {
    const char *model;          /* the ONNX file (tokenizer lookup, report) */
    const char *quantize;       /* the mode and method, for the report */
    const char *data;           /* --eval DIR, or NULL */
    const char *text;           /* --eval-text FILE, or NULL */
    const char *tokenizer;      /* NULL: tokenizer.json next to the model */
    int64_t window;             /* tokens per window */
    size_t max_samples;         /* (size_t)-1: all */
    const char *report;         /* --quant-report FILE.json, or NULL */
    double max_nmse;            /* gate on every float output's NMSE; < 0: none */
    double max_ppl_increase;    /* gate, percent; < 0: none */
    bool quiet;                 /* no progress on stderr */
} kn_qeval_opts;

/* Runs fg (float) and qg (quantized; both main graphs of the same model
 * after the same pipeline, so values keep their names) over the samples,
 * prints the report to stdout and writes o->report. *gate_failed is set
 * when a gate fails (the message, with the failing numbers, goes to d as
 * an error; the status stays KN_OK). Errors: the samples' (KN_ERR_IO,
 * KN_ERR_INVALID), a run's, the report's write. */
kn_status kn_quant_eval(const kn_graph *fg, const kn_graph *qg, const kn_qeval_opts *o, kn_diag *d,
                        bool *gate_failed);

#endif
