/* The optimizer's table of contents: every pass, in the order it runs,
 * with the lowest -O level that runs it (docs/passes.md). */
#include "passes/passes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static kn_status no_precision(kn_graph *g, kn_diag *d)
{
    (void)g;
    (void)d;
    return KN_OK;
}

static kn_status no_quantize(kn_graph *g, kn_diag *d)
{
    (void)g;
    (void)d;
    return KN_OK;
}

static const kn_pass_info passes[] = {
    {"canon-ms", kn_pass_canon_ms, 0, "com.microsoft MultiHeadAttention / GroupQueryAttention -> Attention, RotaryEmbedding -> kiln.RotaryHalf"},
    {"infer-shapes", kn_pass_infer_shapes, 0, "infer dtypes and shapes, symbolic dims carried through"},
    {"fuse-qdq", kn_pass_fuse_qdq, 2, "DequantizeLinear -> MatMul/Gemm/Conv [-> QuantizeLinear] (QDQ models) -> QLinearMatMul / QLinearConv / MatMulIntegerToFloat"},
    {"fold", kn_pass_fold, 1, "constant folding (CPU kernels, size-limited), Shape chains, symbolic Reshape targets"},
    {"noop", kn_pass_noop, 1, "remove Identity, same-type Cast, same-shape Reshape/Expand, identity Transpose, Dropout, Squeeze/Unsqueeze pairs"},
    {"cse", kn_pass_cse, 1, "merge nodes with the same op, inputs and attributes"},
    {"transpose", kn_pass_transpose, 2, "merge consecutive Transposes, remove identities"},
    {"sink", kn_pass_sink, 2, "Transpose sunk through elementwise ops into the next Transpose; Reshape->Reshape and order-keeping Transpose<->Reshape merged"},
    {"bn-fold", kn_pass_bn_fold, 2, "fold inference BatchNormalization into a preceding Conv/Gemm"},
    {"fuse-norm", kn_pass_fuse_norm, 2, "decomposed LayerNorm / RMSNorm -> LayerNormalization / RMSNormalization"},
    {"fuse-act", kn_pass_fuse_act, 2, "GELU (erf, tanh) -> Gelu; x*Sigmoid(x) -> kiln.Silu; Silu(g)*up -> kiln.SwiGlu; Exp(x-max)/ReduceSum -> Softmax, (x-max)-Log(ReduceSum(Exp)) -> LogSoftmax"},
    {"fuse-attention", kn_pass_fuse_attention, 2, "MatMul(Q, K^T) -> scale -> [mask] -> Softmax -> MatMul(V) (GQA repeat_kv folded) -> Attention"},
    {"fuse-rotary", kn_pass_fuse_rotary, 2, "x*cos + Concat(Neg(x[..., d/2:]), x[..., :d/2])*sin (rotate-half RoPE) -> kiln.RotaryHalf"},
    {"kv-cache", kn_pass_kv_cache, 2, "past*/present* = Concat(past, new) around a fused Attention -> kiln.PagedAttention over the runtime's paged KV cache"},
    {"kv-mask", kn_pass_kv_mask, 2, "a PagedAttention mask proved causal (by evaluation) for an all-ones attention_mask -> causal=1, no mask; unread attention_mask / past inputs removed"},
    {"kv-rotary", kn_pass_kv_rotary, 2, "RotaryHalf on a PagedAttention's Q and K (same cos/sin, read by nothing else) -> the node's cos/sin inputs, rotary=1 (rotated in the append)"},
    {"quantize", no_quantize, 0, "MatMul/Gemm with constant weights -> MatMulNBits (weight-only int4/int8) or QuantizeLinear + MatMulIntegerToFloat (W8A8) (--quantize)"},
    {"fuse-gemm", kn_pass_fuse_gemm, 2, "SwiGlu(x@Wg, x@Wu) -> SwiGlu(x@[Wg|Wu]); MatMul/Gemm + bias + activation + residual -> kiln.GemmEpilogue"},
    {"fuse-skip-norm", kn_pass_fuse_skip_norm, 2, "Add -> RMSNormalization / LayerNormalization (residual + norm; Adds no GEMM epilogue took) -> kiln.SkipRMSNorm / kiln.SkipLayerNorm"},
    {"merge-proj", kn_pass_merge_proj, 2, "MatMul(x, W1) ... MatMul(x, Wn) (or bias-only GemmEpilogues; Q, K, V) -> Split(MatMul(x, [W1|...|Wn]))"},
    {"fuse-elementwise", kn_pass_fuse_elementwise, 2, "connected elementwise ops (unary, Cast, Clip, broadcasting binary, Where) -> kiln.FusedElementwise"},
    {"dedup", kn_pass_dedup, 1, "merge constants with the same dtype, shape and bytes"},
    {"dce", kn_pass_dce, 1, "remove nodes and values that reach no graph output"},
    {"precision", no_precision, 0, "run float32 computation in float16/bfloat16 (--precision, --keep-fp32)"},
};

#define N_PASSES (sizeof passes / sizeof passes[0])

const kn_pass_info *kn_pipeline_passes(size_t *n)
{
    *n = N_PASSES;
    return passes;
}

const kn_pass_info *kn_pipeline_find(const char *name)
{
    for (size_t i = 0; i < N_PASSES; i++)
        if (strcmp(passes[i].name, name) == 0)
            return &passes[i];
    return NULL;
}

/* Runs a simplification pass on g and on the subgraphs its nodes hold
 * (If/Loop/Scan bodies), inner ones after the graph that holds them. */
static kn_status run_nested(kn_pass_fn run, kn_graph *g, kn_diag *d, int depth)
{
    if (depth > 64)
        return KN_OK;
    KN_TRY(run(g, d));
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_attrs; i++) {
            const kn_attr *a = &n->attrs[i];
            if (a->kind == KN_ATTR_GRAPH)
                KN_TRY(run_nested(run, a->u.g, d, depth + 1));
            for (uint32_t j = 0; a->kind == KN_ATTR_GRAPHS && j < a->n; j++)
                KN_TRY(run_nested(run, a->u.graphs[j], d, depth + 1));
        }
    }
    return KN_OK;
}

static kn_status unknown_pass(const char *what, const char *name, kn_diag *d)
{
    char list[512];
    size_t pos = 0;
    list[0] = 0;
    for (size_t i = 0; i < N_PASSES && pos < sizeof list; i++)
        pos += (size_t)snprintf(list + pos, sizeof list - pos, "%s%s", i ? ", " : "", passes[i].name);
    kn_diag_add(d, KN_ERROR, "%s: unknown pass '%s' (passes: %s)", what, name, list);
    return KN_ERR_INVALID;
}

static kn_status dump(const kn_graph *g, const kn_pipeline_opts *o, size_t i, bool ran, kn_diag *d)
{
    if (!o->dump_dir) {
        fprintf(stderr, "# after pass %zu '%s'%s\n", i + 1, passes[i].name, ran ? "" : " (did not run)");
        return kn_graph_print(g, stderr);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%02zu-%s.txt", o->dump_dir, i + 1, passes[i].name);
    FILE *f = fopen(path, "w");
    if (!f) {
        kn_diag_add(d, KN_ERROR, "--dump-after: cannot write %s: %s", path, strerror(errno));
        return KN_ERR_INVALID;
    }
    kn_status s = kn_graph_print(g, f);
    if (fclose(f) != 0 && s == KN_OK) {
        kn_diag_add(d, KN_ERROR, "--dump-after: cannot write %s: %s", path, strerror(errno));
        s = KN_ERR_INVALID;
    }
    return s;
}

static bool disabled(const kn_pipeline_opts *o, const char *name)
{
    for (uint32_t i = 0; i < o->n_disabled; i++)
        if (strcmp(o->disabled[i], name) == 0)
            return true;
    return false;
}

kn_status kn_pipeline_run(kn_graph *g, const kn_pipeline_opts *o, kn_diag *d)
{
    static const kn_pipeline_opts defaults = {0};
    if (!o)
        o = &defaults;
    int level = o->level == KN_OPT_DEFAULT ? 2 : (int)o->level - 1;
    for (uint32_t i = 0; i < o->n_disabled; i++)
        if (!kn_pipeline_find(o->disabled[i]))
            return unknown_pass("--disable-pass", o->disabled[i], d);
    bool dump_all = o->dump_after && strcmp(o->dump_after, "all") == 0;
    if (o->dump_after && !dump_all && !kn_pipeline_find(o->dump_after))
        return unknown_pass("--dump-after", o->dump_after, d);
    for (size_t i = 0; i < N_PASSES; i++) {
        const kn_pass_info *p = &passes[i];
        bool ran = p->level <= level && !disabled(o, p->name);
        if (ran) {
            if (p->run == no_precision) /* the passes with options */
                KN_TRY(o->precision ? kn_pass_precision(g, o->precision, d) : KN_OK);
            else if (p->run == no_quantize)
                KN_TRY(o->quantize ? kn_pass_quantize(g, o->quantize, d) : KN_OK);
            else if (p->level == 0)
                KN_TRY(p->run(g, d));
            else
                KN_TRY(run_nested(p->run, g, d, 0));
            kn_status vs = o->verify_each ? kn_graph_verify(g, d) : KN_OK;
            if (vs == KN_ERR_NOMEM)
                return vs;
            if (vs != KN_OK) {
                kn_diag_add(d, KN_ERROR, "internal error: the graph does not verify after pass '%s'", p->name);
                return KN_ERR_INTERNAL;
            }
        }
        if (dump_all || (o->dump_after && strcmp(o->dump_after, p->name) == 0))
            KN_TRY(dump(g, o, i, ran, d));
        if (o->observe)
            KN_TRY(o->observe(o->observe_ctx, p, ran, g));
    }
    return KN_OK;
}
