/* Graph passes: one file each, one signature, run in the order written
 * in pipeline.c (docs/passes.md). */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include "ir/ir.h"

#include <stdio.h>

typedef kn_status (*kn_pass_fn)(kn_graph *g, kn_diag *d);

typedef struct kn_pass_info {
    const char *name;
    kn_pass_fn run;
    int level;        /* the lowest -O level that runs it (0, 1 or 2) */
    const char *what; /* one line for --passes */
} kn_pass_info;

kn_status kn_pass_infer_shapes(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_qdq(kn_graph *g, kn_diag *d);
kn_status kn_pass_canon_ms(kn_graph *g, kn_diag *d);
kn_status kn_pass_fold(kn_graph *g, kn_diag *d);
kn_status kn_pass_noop(kn_graph *g, kn_diag *d);
kn_status kn_pass_cse(kn_graph *g, kn_diag *d);
kn_status kn_pass_transpose(kn_graph *g, kn_diag *d);
kn_status kn_pass_sink(kn_graph *g, kn_diag *d);
kn_status kn_pass_bn_fold(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_norm(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_act(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_gemm(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_skip_norm(kn_graph *g, kn_diag *d);
kn_status kn_pass_merge_proj(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_attention(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_rotary(kn_graph *g, kn_diag *d);
kn_status kn_pass_fuse_elementwise(kn_graph *g, kn_diag *d);
kn_status kn_pass_kv_cache(kn_graph *g, kn_diag *d);
kn_status kn_pass_kv_mask(kn_graph *g, kn_diag *d);
kn_status kn_pass_kv_rotary(kn_graph *g, kn_diag *d);
/* Records the KV cache's dtype (kiln.kv.dtype: float32, float16 or
 * bfloat16) in a graph the kv-cache pass rewrote, resizing kiln.kv.blocks,
 * max_seq_len and bytes for it (passes/kv_cache.c). */
kn_status kn_kv_cache_set_dtype(kn_graph *g, kn_dtype dt, kn_diag *d);
kn_status kn_pass_dedup(kn_graph *g, kn_diag *d);
kn_status kn_pass_dce(kn_graph *g, kn_diag *d);

typedef struct kn_precision_opts {
    kn_dtype to;               /* KN_F32 (nothing to do), KN_F16 or KN_BF16 */
    const char *const *keep;   /* fnmatch patterns of node names or op types kept in float32 */
    uint32_t n_keep;
    bool verbose;
} kn_precision_opts;

/* Runs the main graph's float32 computation in o->to (see precision.c). */
kn_status kn_pass_precision(kn_graph *g, const kn_precision_opts *o, kn_diag *d);

/* One weight for a weight-only quantizer: W [k, n] float32 row-major (a
 * MatMul's B), to write in MatMulNBits layout: codes [n, k_blocks,
 * group * bits / 8] (low bits first; padding past k may hold anything),
 * scales [n, k_blocks], zero points packed [n, ceil(k_blocks * bits / 8)].
 * The output buffers are zeroed by the caller's quantizer itself.
 * in_scale [k] holds 1s on entry; a quantizer whose codes stand for
 * W diag(s) (AWQ) writes s there, and the pass then multiplies the layer's
 * input by 1/s (a Mul before the MatMulNBits), so the layer computes
 * (x / s) · Q(W diag(s)). */
typedef struct kn_quant_weight {
    const char *name;      /* the node (for per-layer statistics) */
    const float *w;
    int64_t k, n;
    int bits;              /* 4 or 8 */
    int64_t group;         /* weights along K per scale */
    uint8_t *codes;
    float *scales;
    uint8_t *zero_points;
    float *in_scale;
} kn_quant_weight;

/* Quantizes one weight; returns KN_OK or an error (reported to d). */
typedef kn_status (*kn_quant_weight_fn)(void *ctx, const kn_quant_weight *q, kn_diag *d);
/* Round-to-nearest, asymmetric per group (see quantize.c); ctx unused. */
kn_status kn_quant_rtn(void *ctx, const kn_quant_weight *q, kn_diag *d);

/* W8A8: the activation threshold (|x| clipped to amax, scale amax / 127)
 * of the input of node `node` (value `input`); an error (reported to d)
 * when unknown. */
typedef kn_status (*kn_quant_act_fn)(void *ctx, const char *node, const char *input, int64_t k, int64_t n,
                                     double *amax, kn_diag *d);

/* W8A8 with SmoothQuant: the per-input-channel max |x| (k values, owned
 * by ctx) of the input of node `node` (value `input`); an error (reported
 * to d) when unknown. */
typedef kn_status (*kn_quant_absmax_fn)(void *ctx, const char *node, const char *input, int64_t k,
                                        const double **absmax, kn_diag *d);

typedef enum kn_quant_mode {
    KN_QUANT_WEIGHT_ONLY = 0, /* MatMulNBits, bits 4 or 8 */
    KN_QUANT_W8A8,            /* QuantizeLinear(x) -> MatMulIntegerToFloat, int8 per-channel weights */
} kn_quant_mode;

typedef struct kn_quantize_opts {
    int bits;                     /* 0: off; 4 or 8: weight-only; 8 with KN_QUANT_W8A8 */
    int64_t group_size;           /* a power of two >= 16 (weight-only) */
    kn_quant_weight_fn quantize;  /* NULL: kn_quant_rtn */
    void *ctx;
    const char *const *keep;      /* fnmatch patterns of node names or op types kept float */
    uint32_t n_keep;
    bool verbose;
    kn_quant_mode mode;
    kn_quant_act_fn act_amax;     /* W8A8 with static scales: required */
    const char *method;           /* for the note: "RTN", "GPTQ", "AWQ" (NULL: RTN or custom) */
    bool act_dynamic;             /* W8A8: per-token scales max|x_row| / 127 computed at run time */
    double smooth_alpha;          /* W8A8: SmoothQuant's alpha in (0, 1]; 0: no smoothing */
    kn_quant_absmax_fn act_absmax; /* W8A8 with smooth_alpha > 0: required */
} kn_quantize_opts;

/* Replaces MatMul/Gemm with constant float32 weights by com.microsoft
 * MatMulNBits (weight-only, see quantize.c) or int8 W8A8 with static or
 * per-token dynamic activation scales and optional SmoothQuant
 * (quantize_w8a8.c). KN_ERR_INVALID for unsupported options, the
 * callbacks' errors, KN_ERR_NOMEM. */
kn_status kn_pass_quantize(kn_graph *g, const kn_quantize_opts *o, kn_diag *d);

/* The passes in pipeline order; *n receives their count. */
const kn_pass_info *kn_pipeline_passes(size_t *n);
/* The pass called `name`, or NULL. */
const kn_pass_info *kn_pipeline_find(const char *name);

/* -O levels. The zero value is the default, -O2. */
typedef enum kn_opt_level { KN_OPT_DEFAULT = 0, KN_OPT_O0, KN_OPT_O1, KN_OPT_O2 } kn_opt_level;

/* Called after every pass position, whether the pass ran (level, disabled)
 * or not; g is the graph after it. */
typedef kn_status (*kn_pass_observer)(void *ctx, const kn_pass_info *p, bool ran, const kn_graph *g);

typedef struct kn_pipeline_opts {
    bool verify_each; /* kn_graph_verify after every pass */
    const kn_precision_opts *precision; /* NULL: keep the model's precision */
    const kn_quantize_opts *quantize;   /* NULL: no weight quantization */
    kn_opt_level level;
    const char *const *disabled; /* pass names not to run (borrowed) */
    uint32_t n_disabled;
    const char *dump_after;      /* a pass name, or "all": print the IR after it; NULL: none */
    const char *dump_dir;        /* NULL: dumps go to stderr; else DIR/NN-PASS.txt */
    kn_pass_observer observe;    /* NULL: none */
    void *observe_ctx;
} kn_pipeline_opts;

/* Runs the pipeline on g (o may be NULL: -O2, no verification). Returns
 * KN_ERR_INVALID for an unknown pass name in disabled/dump_after (the
 * message lists the valid ones) or a dump file that cannot be written;
 * stops at the first failing pass (or failing verification, reported as
 * KN_ERR_INTERNAL naming the pass). */
kn_status kn_pipeline_run(kn_graph *g, const kn_pipeline_opts *o, kn_diag *d);

#endif
