/* Helpers the fusion passes share (fuse_norm.c, fuse_act.c): finding the
 * node that produces or solely reads a value, reading scalar constants,
 * checking that a matched pattern's intermediate values are read nowhere
 * else, and replacing the pattern by one fused node that records the ONNX
 * nodes it came from (STRINGS attribute `_origins`). */
#ifndef KILN_PASSES_FUSE_MATCH_H
#define KILN_PASSES_FUSE_MATCH_H

#include "passes/rewrite.h"

/* Most nodes one pattern may span. */
#define KN_FM_MAX 24

/* A pattern being matched: node ids in any order (the fused node takes the
 * slot of the last one in graph order). */
typedef struct kn_fm {
    kn_id nodes[KN_FM_MAX];
    uint32_t n;
} kn_fm;

void kn_fm_add(kn_fm *m, kn_id k);
bool kn_fm_has(const kn_fm *m, kn_id k);

/* The live ai.onnx node of op `op` with one output that produces v, or
 * KN_NONE. */
kn_id kn_fm_producer(const kn_graph *g, const kn_uses *u, kn_id v, kn_op op);
/* The one live node reading v (v read once, not pinned) if its op is `op`
 * (KN_OP_UNSUPPORTED: any op), else KN_NONE. */
kn_id kn_fm_sole_reader(const kn_graph *g, const kn_uses *u, kn_id v, kn_op op);
/* For a binary node reading `v` as one operand: the other operand (either
 * order; KN_NONE if v is not an operand). */
kn_id kn_fm_other(const kn_node *n, kn_id v);

/* A constant holding one element (rank 0 or 1) of a float or int dtype:
 * *out receives it as double. */
bool kn_fm_scalar(const kn_graph *g, kn_id v, double *out);
/* Whether v is such a scalar and equal to `want` within `rtol` (relative;
 * 0: exactly). */
bool kn_fm_scalar_is(const kn_graph *g, kn_id v, double want, double rtol);
/* The float dtype of v (f16, bf16, f32, f64), or KN_UNDEFINED. */
kn_dtype kn_fm_float_dtype(const kn_graph *g, kn_id v);
/* A per-channel parameter for the last axis: a float tensor of dtype dt and
 * rank <= 1 (a constant's own dims; declared types only where shapes are
 * trusted). */
bool kn_fm_channel_param(const kn_graph *g, kn_id v, kn_dtype dt);

/* Whether every output of the pattern's nodes other than `final` is read
 * only by nodes of the pattern and is not pinned, and no node has a
 * subgraph or more than one output. */
bool kn_fm_closed(const kn_graph *g, const kn_uses *u, const kn_fm *m, kn_id final);

/* Replaces the pattern by one node (op `op` at opset `opset`, inputs as
 * given, attributes `attrs` plus `_origins`) in the slot of the pattern's
 * last node, writing that node's output `final`; the other nodes are
 * marked dead. Reader counts are kept up to date. */
kn_status kn_fm_replace(kn_graph *g, kn_uses *u, const kn_fm *m, kn_id final, kn_op op, int64_t opset,
                        const kn_id *inputs, uint32_t n_inputs, const kn_attr *attrs, uint32_t n_attrs);

/* Attribute makers (name interned in g). */
kn_status kn_fm_attr_f(kn_graph *g, const char *name, float v, kn_attr *out);
kn_status kn_fm_attr_i(kn_graph *g, const char *name, int64_t v, kn_attr *out);
kn_status kn_fm_attr_s(kn_graph *g, const char *name, const char *v, kn_attr *out);

#endif
