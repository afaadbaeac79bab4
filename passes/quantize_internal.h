/* Shared by the quantize pass's files: quantize.c (candidates, node
 * helpers, weight-only, the driver) and quantize_w8a8.c (W8A8 with static
 * or per-token dynamic activation scales, SmoothQuant). */
#ifndef KILN_PASSES_QUANTIZE_INTERNAL_H
#define KILN_PASSES_QUANTIZE_INTERNAL_H

#include "passes/fuse_match.h"
#include "passes/passes.h"

typedef struct kn_qstats {
    uint32_t count, n_scaled, n_folded;
    uint64_t before, after; /* weight bytes */
} kn_qstats;

/* Whether node n is a candidate (*ok), and then its weight as [K, N]
 * row-major float32 in *tmp (a copy, to free with g's allocator) and its
 * bias value (or KN_NONE). KN_ERR_NOMEM when the copy cannot be made. */
kn_status kn_quant_candidate(kn_graph *g, const kn_node *n, bool *ok, int64_t *K, int64_t *N, kn_id *bias,
                             float **tmp);

/* Whether a --keep-fp pattern of o matches node n (name or op type). */
bool kn_quant_kept(const kn_quantize_opts *o, const kn_node *n);

/* The graph's ai.onnx opset (at least `min`). */
int64_t kn_quant_onnx_opset(const kn_graph *g, int64_t min);

/* Appends node `op_name` (domain "" or "com.microsoft", at `opset`; inputs
 * ins, attributes at) named node_name + suffix, writing a new value of
 * type *ty named after value `like` + suffix; *out receives the value.
 * The node goes to the end of the list; kn_quant_reorder moves it before
 * its first reader. */
kn_status kn_quant_add_node(kn_graph *g, kn_uses *u, const char *node_name, const char *suffix, const char *domain,
                            const char *op_name, int64_t opset, const kn_id *ins, uint32_t n_ins, const kn_attr *at,
                            uint32_t n_at, kn_id like, const kn_type *ty, kn_id *out);

/* W8A8 state for one run of the pass: SmoothQuant's scales per node. */
typedef struct kn_w8a8 {
    float **smooth;  /* [n0] per node: s [K] (the weight rows times s), or NULL */
    bool *folded;    /* [n0] per node: x / s already folded into the norm before it */
    uint32_t n0;
} kn_w8a8;

/* Computes SmoothQuant's s for every W8A8 candidate (o->smooth_alpha >
 * 0) and folds 1/s into a preceding LayerNormalization /
 * RMSNormalization / SimplifiedLayerNormalization when every reader of its
 * output is a candidate (they then share one s). */
kn_status kn_quant_w8a8_smooth(kn_graph *g, kn_uses *u, const kn_quantize_opts *o, kn_diag *d, kn_w8a8 *w,
                               kn_qstats *st);
/* W8A8: node k -> [Mul(x, 1/s) ->] QuantizeLinear -> MatMulIntegerToFloat
 * (static), or the per-token chain (dynamic). */
kn_status kn_quant_w8a8_node(kn_graph *g, kn_uses *u, kn_id k, const kn_quantize_opts *o, const kn_w8a8 *w,
                             kn_diag *d, kn_qstats *st);
void kn_quant_w8a8_free(kn_graph *g, kn_w8a8 *w);

#endif
