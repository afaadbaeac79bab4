/* ONNX Runtime's attention contrib ops (com.microsoft) rewritten to the
 * ops kiln runs, so they run at every -O level and meet the same fused
 * kernels as the attention fuse-attention recognises:
 *
 *   MultiHeadAttention(q, k, v, [bias], [key_padding_mask], [attention_bias])
 *     → Attention (opset 23): q_num_heads = kv_num_heads = num_heads,
 *       scale, is_causal = unidirectional, attn_mask = attention_bias (both
 *       add it to the scores). Q 3-D; K, V 3-D [B, L, D] or 4-D [B, N, L, H]
 *       (the same layouts in both ops).
 *   GroupQueryAttention(q, k, v, -, -, seqlens_k, total_sequence_length)
 *     → Attention: q_num_heads, kv_num_heads, scale, is_causal = 1 and a
 *       boolean mask key j <= seqlens_k[b] (Range over K's length /
 *       LessOrEqual), present key/value = K/V as [B, kv_heads, S, H]: the
 *       prompt without a past, where total_sequence_length is K's length
 *       (a larger one gives ORT larger present outputs: not this form).
 *   RotaryEmbedding(x, position_ids, cos_cache, sin_cache), not
 *     interleaved, rotating the whole head
 *     → kiln RotaryHalf(x, cos, sin) with cos = Concat(c, c) of
 *       c = Gather(cos_cache, position_ids), unsqueezed to broadcast over
 *       the heads (x 4-D [B, N, S, H], or 3-D [B, S, N·H] reshaped around);
 *       position_ids [B, S], or one offset [1] meaning offset + 0 .. S-1.
 *
 * The forms these ops have that the rewrite would not keep exactly fail
 * with KN_ERR_UNSUPPORTED naming the node: MHA with a packed QKV, an
 * input bias, a key padding mask or a past; GQA with a past (ORT writes
 * the new keys at seqlens_k, not after the past), packed QKV, rotary,
 * softcap, a local window, smooth softmax, attention bias or head sinks;
 * interleaved or partial rotary. */
#include "ir/arena.h"
#include "passes/fuse_match.h"
#include "passes/passes.h"

#include <stdio.h>
#include <string.h>

typedef struct build {
    kn_graph *g;
    kn_diag *d;
    kn_node *nodes; /* the new node list */
    uint32_t n, cap;
    const kn_node *src; /* the node being rewritten */
} build;

static kn_status push(build *b, const kn_node *n)
{
    KN_TRY(kn_mem_grow(b->g->alloc, (void **)&b->nodes, &b->cap, b->n + 1, sizeof *b->nodes));
    b->nodes[b->n++] = *n;
    return KN_OK;
}

static kn_status unsupported(build *b, const char *why)
{
    const kn_node *n = b->src;
    kn_diag_add(b->d, KN_ERROR, "node '%s' (com.microsoft %s, opset %lld): %s is not supported", n->name ? n->name : "",
                n->op_type ? n->op_type : "", (long long)n->opset, why);
    return KN_ERR_UNSUPPORTED;
}

/* A new value named after the node being rewritten. */
static kn_status value(build *b, const char *what, kn_id *out)
{
    char base[1024];
    snprintf(base, sizeof base, "%s/%s", b->src->name && *b->src->name ? b->src->name : "ms", what);
    kn_value v = {0};
    KN_TRY(kn_rw_unique_name(b->g, base, &v.name));
    v.kind = KN_VAL_NODE;
    v.producer = KN_NONE;
    return kn_graph_add_value(b->g, &v, out);
}

/* An int64 constant (rank 0 when rank0, else 1-D). */
static kn_status const_i64(build *b, const char *what, const int64_t *v, int64_t n, bool rank0, kn_id *out)
{
    kn_graph *g = b->g;
    char base[1024];
    snprintf(base, sizeof base, "%s/%s", b->src->name && *b->src->name ? b->src->name : "ms", what);
    kn_tensor *t = kn_graph_alloc(g, sizeof *t);
    int64_t *dims = kn_graph_alloc(g, sizeof *dims), *data = kn_graph_alloc(g, (size_t)n * sizeof *data);
    kn_dim *sd = kn_graph_alloc(g, sizeof *sd);
    if (!t || !dims || !data || !sd)
        return KN_ERR_NOMEM;
    memcpy(data, v, (size_t)n * sizeof *data);
    dims[0] = n;
    sd[0] = (kn_dim){n, NULL};
    kn_value val = {0};
    KN_TRY(kn_rw_unique_name(g, base, &val.name));
    *t = (kn_tensor){val.name, KN_I64, rank0 ? 0 : 1, dims, n, (size_t)n * sizeof *data, data, false};
    val.kind = KN_VAL_CONST;
    val.tensor = t;
    val.producer = KN_NONE;
    val.type.kind = KN_TYPE_TENSOR;
    val.type.dtype = KN_I64;
    val.type.shape.rank = rank0 ? 0 : 1;
    val.type.shape.dims = sd;
    return kn_graph_add_value(g, &val, out);
}

/* Appends node `op` (ai.onnx at `opset`, or kiln) named <src>/<what>. */
static kn_status node(build *b, const char *what, kn_op op, int64_t opset, const kn_id *ins, uint32_t n_in,
                      const kn_id *outs, uint32_t n_out, const kn_attr *attrs, uint32_t n_attrs)
{
    kn_graph *g = b->g;
    const kn_op_info *info = kn_op_get(op);
    kn_node n = {0};
    char name[1024];
    snprintf(name, sizeof name, "%s/%s", b->src->name && *b->src->name ? b->src->name : "ms", what);
    KN_TRY(kn_graph_intern_cstr(g, name, &n.name));
    KN_TRY(kn_graph_intern_cstr(g, info->name, &n.op_type));
    KN_TRY(kn_graph_intern_cstr(g, info->domain == KN_DOM_ONNX ? "" : kn_domain_name(info->domain), &n.domain));
    n.op = op;
    n.opset = opset;
    n.n_inputs = n_in;
    n.n_outputs = n_out;
    n.n_attrs = n_attrs + 1;
    n.inputs = kn_graph_alloc(g, (n_in + 1) * sizeof *n.inputs);
    n.outputs = kn_graph_alloc(g, (n_out + 1) * sizeof *n.outputs);
    n.attrs = kn_graph_alloc(g, (n_attrs + 1) * sizeof *n.attrs);
    kn_bytes *orig = kn_graph_alloc(g, sizeof *orig);
    if (!n.inputs || !n.outputs || !n.attrs || !orig)
        return KN_ERR_NOMEM;
    memcpy(n.inputs, ins, n_in * sizeof *ins);
    memcpy(n.outputs, outs, n_out * sizeof *outs);
    if (n_attrs)
        memcpy(n.attrs, attrs, n_attrs * sizeof *attrs);
    const char *src = b->src->name ? b->src->name : "";
    orig[0] = (kn_bytes){(const uint8_t *)src, strlen(src)};
    kn_attr *o = &n.attrs[n_attrs];
    memset(o, 0, sizeof *o);
    KN_TRY(kn_graph_intern_cstr(g, "_origins", &o->name));
    o->kind = KN_ATTR_STRINGS;
    o->n = 1;
    o->u.strings = orig;
    return push(b, &n);
}

static bool has_in(const kn_node *n, uint32_t i) { return i < n->n_inputs && n->inputs[i] != KN_NONE; }
static bool has_out(const kn_node *n, uint32_t i) { return i < n->n_outputs && n->outputs[i] != KN_NONE; }

/* scale, when the node gives one, as the Attention's */
static uint32_t scale_attr(build *b, kn_attr *at, kn_status *s)
{
    const kn_attr *a = kn_node_attr(b->src, "scale");
    if (!a || a->kind != KN_ATTR_FLOAT || a->u.f == 0)
        return 0;
    *s = kn_fm_attr_f(b->g, "scale", a->u.f, at);
    return 1;
}

static kn_status mha(build *b)
{
    const kn_node *n = b->src;
    if (!has_in(n, 1) || !has_in(n, 2))
        return unsupported(b, "a packed QKV (no separate key and value)");
    if (has_in(n, 3))
        return unsupported(b, "an input bias");
    if (has_in(n, 4))
        return unsupported(b, "key_padding_mask");
    for (uint32_t i = 6; i < n->n_inputs; i++)
        if (has_in(n, i))
            return unsupported(b, "a past key/value (or cache indirection)");
    if (has_out(n, 1) || has_out(n, 2) || has_out(n, 3))
        return unsupported(b, "present key/value outputs");
    int64_t heads = kn_node_attr_int(n, "num_heads", 0);
    if (heads <= 0)
        return unsupported(b, "num_heads <= 0");
    kn_attr at[4];
    uint32_t na = 0;
    kn_status s = KN_OK;
    KN_TRY(kn_fm_attr_i(b->g, "q_num_heads", heads, &at[na++]));
    KN_TRY(kn_fm_attr_i(b->g, "kv_num_heads", heads, &at[na++]));
    na += scale_attr(b, &at[na], &s);
    KN_TRY(s);
    if (kn_node_attr_int(n, "unidirectional", 0))
        KN_TRY(kn_fm_attr_i(b->g, "is_causal", 1, &at[na++]));
    kn_id ins[4] = {n->inputs[0], n->inputs[1], n->inputs[2], has_in(n, 5) ? n->inputs[5] : KN_NONE};
    const kn_type *kt = kn_rw_type(b->g, n->inputs[1]), *vt = kn_rw_type(b->g, n->inputs[2]);
    bool k4 = kt && kt->shape.rank == 4, v4 = vt && vt->shape.rank == 4;
    if (k4 != v4)
        return unsupported(b, "key and value of different layouts");
    if (!k4)
        return node(b, "Attention", KN_OP_Attention, 23, ins, has_in(n, 5) ? 4 : 3, n->outputs, 1, at, na);
    /* K, V as [B, N, L, H]: Q to [B, N, S, H] too (Attention wants one rank), the result back to [B, S, N·H] */
    kn_graph *g = b->g;
    kn_id split, merge, q4, qt, y4, yt;
    KN_TRY(const_i64(b, "heads_shape", (int64_t[]){0, 0, heads, -1}, 4, false, &split));
    KN_TRY(const_i64(b, "hidden_shape", (int64_t[]){0, 0, -1}, 3, false, &merge));
    KN_TRY(value(b, "q_heads", &q4));
    KN_TRY(value(b, "q_bnsh", &qt));
    KN_TRY(value(b, "y_bnsh", &y4));
    KN_TRY(value(b, "y_bsnh", &yt));
    kn_attr perm = {0};
    int64_t *pv = kn_graph_alloc(g, 4 * sizeof *pv);
    if (!pv)
        return KN_ERR_NOMEM;
    memcpy(pv, (int64_t[]){0, 2, 1, 3}, 4 * sizeof *pv);
    KN_TRY(kn_graph_intern_cstr(g, "perm", &perm.name));
    perm.kind = KN_ATTR_INTS;
    perm.n = 4;
    perm.u.ints = pv;
    KN_TRY(node(b, "Reshape_q", KN_OP_Reshape, 14, (kn_id[]){n->inputs[0], split}, 2, &q4, 1, NULL, 0));
    KN_TRY(node(b, "Transpose_q", KN_OP_Transpose, 13, &q4, 1, &qt, 1, &perm, 1));
    ins[0] = qt;
    /* 4-D inputs carry their head counts: no q_num_heads / kv_num_heads */
    KN_TRY(node(b, "Attention", KN_OP_Attention, 23, ins, has_in(n, 5) ? 4 : 3, &y4, 1, at + 2, na - 2));
    KN_TRY(node(b, "Transpose_y", KN_OP_Transpose, 13, &y4, 1, &yt, 1, &perm, 1));
    return node(b, "Reshape_y", KN_OP_Reshape, 14, (kn_id[]){yt, merge}, 2, n->outputs, 1, NULL, 0);
}

static kn_status gqa(build *b)
{
    const kn_node *n = b->src;
    if (!has_in(n, 1) || !has_in(n, 2))
        return unsupported(b, "a packed QKV (no separate key and value)");
    if (has_in(n, 3) || has_in(n, 4))
        return unsupported(b, "a past key/value (ORT places the new keys at seqlens_k, not after the past)");
    if (!has_in(n, 5) || !has_in(n, 6))
        return unsupported(b, "missing seqlens_k or total_sequence_length");
    for (uint32_t i = 7; i < n->n_inputs; i++)
        if (has_in(n, i))
            return unsupported(b, "cos/sin caches, position ids, attention bias or head sinks");
    if (kn_node_attr_int(n, "do_rotary", 0))
        return unsupported(b, "do_rotary");
    if (kn_node_attr_int(n, "local_window_size", -1) != -1)
        return unsupported(b, "a local window");
    if (kn_node_attr_int(n, "smooth_softmax", 0))
        return unsupported(b, "smooth_softmax");
    const kn_attr *sc = kn_node_attr(n, "softcap");
    if (sc && sc->kind == KN_ATTR_FLOAT && sc->u.f != 0)
        return unsupported(b, "softcap");
    int64_t heads = kn_node_attr_int(n, "num_heads", 0), kv = kn_node_attr_int(n, "kv_num_heads", 0);
    if (heads <= 0 || kv <= 0 || heads % kv != 0)
        return unsupported(b, "num_heads not a positive multiple of kv_num_heads");
    /* mask[b, 0, 0, j] = j <= seqlens_k[b], j < total_sequence_length */
    kn_graph *g = b->g;
    kn_id zero, one, axes, t64, r, s64, s4, mask;
    KN_TRY(const_i64(b, "zero", (int64_t[]){0}, 1, true, &zero));
    KN_TRY(const_i64(b, "one", (int64_t[]){1}, 1, true, &one));
    KN_TRY(const_i64(b, "axes", (int64_t[]){1, 2, 3}, 3, false, &axes));
    kn_id kshape;
    KN_TRY(value(b, "key_shape", &kshape));
    KN_TRY(value(b, "total", &t64));
    KN_TRY(value(b, "key_positions", &r));
    KN_TRY(value(b, "seqlens", &s64));
    KN_TRY(value(b, "seqlens_4d", &s4));
    KN_TRY(value(b, "key_mask", &mask));
    kn_attr to;
    KN_TRY(kn_fm_attr_i(g, "to", KN_I64, &to));
    /* the key length from K's shape (static for target cuda), not from
     * total_sequence_length: without a past they agree, and a mask built
     * from K always matches the keys */
    KN_TRY(node(b, "Shape", KN_OP_Shape, 13, &n->inputs[1], 1, &kshape, 1, NULL, 0));
    KN_TRY(node(b, "Gather", KN_OP_Gather, 13, (kn_id[]){kshape, one}, 2, &t64, 1, NULL, 0));
    KN_TRY(node(b, "Range", KN_OP_Range, 11, (kn_id[]){zero, t64, one}, 3, &r, 1, NULL, 0));
    KN_TRY(node(b, "CastSeqlens", KN_OP_Cast, 19, &n->inputs[5], 1, &s64, 1, &to, 1));
    KN_TRY(node(b, "Unsqueeze", KN_OP_Unsqueeze, 13, (kn_id[]){s64, axes}, 2, &s4, 1, NULL, 0));
    KN_TRY(node(b, "LessOrEqual", KN_OP_LessOrEqual, 16, (kn_id[]){r, s4}, 2, &mask, 1, NULL, 0));
    kn_attr at[4];
    uint32_t na = 0;
    kn_status s = KN_OK;
    KN_TRY(kn_fm_attr_i(g, "q_num_heads", heads, &at[na++]));
    KN_TRY(kn_fm_attr_i(g, "kv_num_heads", kv, &at[na++]));
    KN_TRY(kn_fm_attr_i(g, "is_causal", 1, &at[na++]));
    na += scale_attr(b, &at[na], &s);
    KN_TRY(s);
    kn_id ins[4] = {n->inputs[0], n->inputs[1], n->inputs[2], mask};
    kn_id outs[3] = {n->outputs[0], has_out(n, 1) ? n->outputs[1] : KN_NONE, has_out(n, 2) ? n->outputs[2] : KN_NONE};
    return node(b, "Attention", KN_OP_Attention, 23, ins, 4, outs, has_out(n, 2) ? 3 : has_out(n, 1) ? 2 : 1, at, na);
}

static kn_status rotary(build *b)
{
    const kn_node *n = b->src;
    kn_graph *g = b->g;
    if (kn_node_attr_int(n, "interleaved", 0))
        return unsupported(b, "interleaved rotation");
    if (kn_node_attr_int(n, "is_packed_batching", 0))
        return unsupported(b, "packed batching");
    if (n->n_inputs < 4 || !has_in(n, 1) || !has_in(n, 2) || !has_in(n, 3))
        return unsupported(b, "missing position_ids or caches");
    const kn_type *pt = kn_rw_type(g, n->inputs[1]), *xt = kn_rw_type(g, n->inputs[0]);
    const kn_type *ct = kn_rw_type(g, n->inputs[2]);
    bool offset = pt && pt->shape.rank == 1 && pt->shape.dims[0].value == 1;
    if (!pt || (pt->shape.rank != 2 && !offset))
        return unsupported(b, "position_ids that are neither [batch, seq] nor one offset [1]");
    if (!xt || (xt->shape.rank != 3 && xt->shape.rank != 4))
        return unsupported(b, "an input of unknown rank or rank other than 3 and 4");
    if (!ct || ct->shape.rank != 2 || ct->shape.dims[1].value <= 0)
        return unsupported(b, "cos_cache without a static [max_positions, head_size / 2] shape");
    int64_t half = ct->shape.dims[1].value, head = 2 * half, rd = kn_node_attr_int(n, "rotary_embedding_dim", 0);
    int32_t rank = xt->shape.rank;
    if (rank == 4 && xt->shape.dims[3].value != head)
        return unsupported(b, "partial rotation (cos_cache narrower than the head)");
    if (rd != 0 && rd != head)
        return unsupported(b, "partial rotation (rotary_embedding_dim)");
    kn_id c[2], cc[2], cu[2], ax, x = n->inputs[0], y = n->outputs[0], pos = n->inputs[1];
    if (offset) { /* positions offset + 0 .. S-1, as [1, S] */
        kn_id shp, seq, r, p, zero, one, sax, ax0;
        KN_TRY(const_i64(b, "zero", (int64_t[]){0}, 1, true, &zero));
        KN_TRY(const_i64(b, "one", (int64_t[]){1}, 1, true, &one));
        KN_TRY(const_i64(b, "seq_axis", (int64_t[]){rank == 4 ? 2 : 1}, 1, true, &sax));
        KN_TRY(const_i64(b, "axes0", (int64_t[]){0}, 1, false, &ax0));
        KN_TRY(value(b, "x_shape", &shp));
        KN_TRY(value(b, "seq_len", &seq));
        KN_TRY(value(b, "steps", &r));
        KN_TRY(value(b, "positions_1d", &p));
        KN_TRY(value(b, "positions", &pos));
        KN_TRY(node(b, "Shape", KN_OP_Shape, 13, &x, 1, &shp, 1, NULL, 0));
        KN_TRY(node(b, "Gather_seq", KN_OP_Gather, 13, (kn_id[]){shp, sax}, 2, &seq, 1, NULL, 0));
        KN_TRY(node(b, "Range", KN_OP_Range, 11, (kn_id[]){zero, seq, one}, 3, &r, 1, NULL, 0));
        KN_TRY(node(b, "Add_offset", KN_OP_Add, 14, (kn_id[]){r, n->inputs[1]}, 2, &p, 1, NULL, 0));
        KN_TRY(node(b, "Unsqueeze_positions", KN_OP_Unsqueeze, 13, (kn_id[]){p, ax0}, 2, &pos, 1, NULL, 0));
    }
    /* 4-D [B, N, S, H]: cos as [B, 1, S, H]; 3-D [B, S, N·H]: x as [B, S, N, H], cos [B, S, 1, H] */
    KN_TRY(const_i64(b, "axes", (int64_t[]){rank == 4 ? 1 : 2}, 1, false, &ax));
    kn_attr cat;
    KN_TRY(kn_fm_attr_i(g, "axis", -1, &cat));
    static const char *const what[2] = {"cos", "sin"};
    for (int i = 0; i < 2; i++) {
        char nm[32];
        KN_TRY(value(b, what[i], &c[i]));
        KN_TRY(value(b, i ? "sin_full" : "cos_full", &cc[i]));
        KN_TRY(value(b, i ? "sin_heads" : "cos_heads", &cu[i]));
        snprintf(nm, sizeof nm, "Gather_%s", what[i]);
        KN_TRY(node(b, nm, KN_OP_Gather, 13, (kn_id[]){n->inputs[2 + i], pos}, 2, &c[i], 1, NULL, 0));
        snprintf(nm, sizeof nm, "Concat_%s", what[i]);
        KN_TRY(node(b, nm, KN_OP_Concat, 13, (kn_id[]){c[i], c[i]}, 2, &cc[i], 1, &cat, 1));
        snprintf(nm, sizeof nm, "Unsqueeze_%s", what[i]);
        KN_TRY(node(b, nm, KN_OP_Unsqueeze, 13, (kn_id[]){cc[i], ax}, 2, &cu[i], 1, NULL, 0));
    }
    if (rank == 4)
        return node(b, "RotaryHalf", KN_OP_KILN_RotaryHalf, 1, (kn_id[]){x, cu[0], cu[1]}, 3, &y, 1, NULL, 0);
    kn_id split, merge, x4, y4;
    KN_TRY(const_i64(b, "heads_shape", (int64_t[]){0, 0, -1, head}, 4, false, &split));
    KN_TRY(const_i64(b, "hidden_shape", (int64_t[]){0, 0, -1}, 3, false, &merge));
    KN_TRY(value(b, "heads", &x4));
    KN_TRY(value(b, "rotated", &y4));
    KN_TRY(node(b, "Reshape", KN_OP_Reshape, 14, (kn_id[]){x, split}, 2, &x4, 1, NULL, 0));
    KN_TRY(node(b, "RotaryHalf", KN_OP_KILN_RotaryHalf, 1, (kn_id[]){x4, cu[0], cu[1]}, 3, &y4, 1, NULL, 0));
    return node(b, "Reshape_back", KN_OP_Reshape, 14, (kn_id[]){y4, merge}, 2, &y, 1, NULL, 0);
}

kn_status kn_pass_canon_ms(kn_graph *g, kn_diag *d)
{
    bool any = false;
    for (kn_id k = 0; k < g->n_nodes && !any; k++) {
        kn_op op = g->nodes[k].op;
        any = op == KN_OP_MS_MultiHeadAttention || op == KN_OP_MS_GroupQueryAttention || op == KN_OP_MS_RotaryEmbedding;
    }
    if (!any)
        return KN_OK;
    build b = {g, d, NULL, 0, 0, NULL};
    kn_status s = KN_OK;
    uint32_t n_old = g->n_nodes;
    for (kn_id k = 0; k < n_old && s == KN_OK; k++) {
        const kn_node *n = &g->nodes[k];
        b.src = n;
        switch (n->op) {
        case KN_OP_MS_MultiHeadAttention: s = mha(&b); break;
        case KN_OP_MS_GroupQueryAttention: s = gqa(&b); break;
        case KN_OP_MS_RotaryEmbedding: s = rotary(&b); break;
        default: s = push(&b, n); break;
        }
    }
    if (s != KN_OK) {
        kn_mem_free(g->alloc, b.nodes);
        return s;
    }
    kn_mem_free(g->alloc, g->nodes);
    g->nodes = b.nodes;
    g->n_nodes = b.n;
    g->cap_nodes = b.cap;
    for (kn_id k = 0; k < g->n_nodes; k++)
        for (uint32_t i = 0; i < g->nodes[k].n_outputs; i++) {
            kn_id v = g->nodes[k].outputs[i];
            if (v != KN_NONE) {
                g->values[v].producer = k;
                g->values[v].out_index = i;
            }
        }
    /* outputs the rewrite dropped (MHA/GQA present outputs nobody reads)
     * no longer have a producer: mark them unproduced */
    for (kn_id v = 0; v < g->n_values; v++) {
        kn_value *x = &g->values[v];
        if (x->kind == KN_VAL_NODE && x->producer != KN_NONE && x->producer < g->n_nodes) {
            const kn_node *p = &g->nodes[x->producer];
            if (x->out_index >= p->n_outputs || p->outputs[x->out_index] != v)
                kn_rw_orphan(g, v);
        }
    }
    return KN_OK;
}
