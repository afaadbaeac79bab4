/* kiln compile --quantize with a calibration table: the weight quantizer
 * callback for --method gptq|awq and the activation thresholds for W8A8
 * (--quantize int8), both looked up per layer in the table
 * (docs/quantization.md). */
#ifndef KILN_TOOLS_QUANT_CLI_H
#define KILN_TOOLS_QUANT_CLI_H

#include "calib_table.h"
#include "passes/passes.h"

typedef enum kn_qalgo { KN_QALGO_RTN, KN_QALGO_GPTQ, KN_QALGO_AWQ } kn_qalgo;

typedef struct kn_qcached kn_qcached;

typedef struct kn_qmethod {
    const kn_calib_table *table; /* borrowed */
    const char *table_path;      /* for messages */
    kn_qalgo algo;
    kn_gptq_opts gptq;
    uint32_t n_done;             /* layers quantized by the callback */
    double err_q, err_rtn;       /* Σ layer output error trace(ΔW H ΔWᵀ): the method's and RTN's */
    kn_qcached *cache;           /* results by layer, reused when the same layer comes again
                                  * (the --eval graph is compiled a second time) */
    uint32_t n_cache;
} kn_qmethod;

/* Frees the cache. */
void kn_qmethod_free(kn_qmethod *m);

/* kn_quant_weight_fn for GPTQ / AWQ (ctx: a kn_qmethod): the layer's
 * statistics come from the table entry whose node is q->name. Group-wise,
 * asymmetric (as the built-in RTN). KN_ERR_INVALID naming the layer when
 * the table has no entry for it, its shapes differ, or its input has no
 * XᵀX; the algorithms' own errors. */
kn_status kn_qmethod_weight(void *ctx, const kn_quant_weight *q, kn_diag *d);

/* kn_quant_act_fn (ctx: a kn_qmethod): the threshold the table's method
 * picked for the layer's input (by the layer's node, else by the input's
 * name). KN_ERR_INVALID naming the layer when the table lacks both. */
kn_status kn_qmethod_act(void *ctx, const char *node, const char *input, int64_t k, int64_t n, double *amax,
                         kn_diag *d);

/* kn_quant_absmax_fn (ctx: a kn_qmethod): the per-channel max |x| of the
 * layer's input from the table (SmoothQuant). KN_ERR_INVALID naming the
 * layer when the table has no entry for it, its K differs, or the table
 * predates the statistic. */
kn_status kn_qmethod_absmax(void *ctx, const char *node, const char *input, int64_t k, const double **absmax,
                            kn_diag *d);

#endif
