/* The kv-cache pass: hands a decoder's KV cache to the runtime. Exported
 * decoders take the cache as graph inputs past*.key/value [batch, kv_heads,
 * past, head_dim] and give it back as outputs present* = Concat(past, new,
 * axis -2), read by the attention (after fuse-attention: ONNX Attention
 * with `_kv_repeat`). Each layer's two Concats and its Attention become one
 * kiln.PagedAttention(Q, new K, new V, mask) that appends the new K/V to
 * the runtime's paged cache and attends over it in place; the present
 * outputs go. The past inputs stay, carrying only their shape (the runtime
 * binds data-less tensors [batch, kv_heads, past, head_dim]): the graph
 * still reads the past length through Shape(past). All layers or none:
 * a graph where some pair does not match keeps its interface, with a note.
 * The cache's capacity (kiln.kv.* metadata, docs/llm.md) comes from the
 * compile options kiln.kv.max_seq_len / kiln.kv.mem / kiln.kv.block_size
 * that `kiln compile` stores as metadata before the pipeline runs. */
#include "passes/fuse_match.h"
#include "passes/passes.h"
#include "runtime/kv_cache.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KV_DEFAULT_BLOCK 16
#define KV_DEFAULT_MAX_SEQ 2048

typedef struct layer {
    kn_id attn, cat_k, cat_v;
    kn_id q, new_k, new_v, mask, past_k, past_v, out;
    int64_t kv_heads, head_dim, repeat;
    float scale;
} layer;

static bool prefixed(const char *s, const char *p) { return s && strncmp(s, p, strlen(p)) == 0; }

static bool is_output(const kn_graph *g, kn_id v)
{
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v)
            return true;
    return false;
}

/* The node producing v when it is a one-input Concat (an identity the
 * exporter writes around the first past), else KN_NONE. */
static kn_id identity_concat(const kn_graph *g, const kn_uses *u, kn_id v)
{
    kn_id p = kn_fm_producer(g, u, v, KN_OP_Concat);
    return p != KN_NONE && g->nodes[p].n_inputs == 1 ? p : KN_NONE;
}

/* v, looked at through one-input Concats. */
static kn_id through_identity(const kn_graph *g, const kn_uses *u, kn_id v)
{
    for (int i = 0; i < 8; i++) {
        kn_id p = identity_concat(g, u, v);
        if (p == KN_NONE)
            break;
        v = g->nodes[p].inputs[0];
    }
    return v;
}

/* One side (K or V) of an attention: its input must be present* =
 * Concat(past*, new, axis -2) read only by the attention. */
static const char *match_side(const kn_graph *g, const kn_uses *u, kn_id cv, kn_id *cat, kn_id *past, kn_id *new)
{
    kn_id p = kn_fm_producer(g, u, cv, KN_OP_Concat);
    if (p == KN_NONE || g->nodes[p].n_inputs != 2)
        return "K/V input is not a two-input Concat";
    const kn_attr *ax = kn_node_attr(&g->nodes[p], "axis");
    if (!ax || ax->kind != KN_ATTR_INT || (ax->u.i != -2 && ax->u.i != 2))
        return "the Concat is not on the sequence axis (-2)";
    if (!is_output(g, cv) || !prefixed(g->values[cv].name, "present"))
        return "the Concat's output is not a graph output named present*";
    if (u->readers[cv] != 1)
        return "the present value is read by more than the attention";
    kn_id pv = through_identity(g, u, g->nodes[p].inputs[0]);
    if (g->values[pv].kind != KN_VAL_INPUT || !prefixed(g->values[pv].name, "past"))
        return "the Concat's first input is not a graph input named past*";
    const kn_type *t = kn_rw_type(g, pv);
    if (!t || t->dtype != KN_F32 || t->shape.rank != 4 || t->shape.dims[1].value <= 0 ||
        t->shape.dims[3].value <= 0)
        return "the past input is not float32 [batch, kv_heads, past, head_dim] with static heads and head_dim";
    const kn_type *nt = kn_rw_type(g, g->nodes[p].inputs[1]);
    if (!nt || nt->dtype != KN_F32 || (nt->shape.rank >= 0 && nt->shape.rank != 4))
        return "the new K/V is not float32 of rank 4";
    *cat = p;
    *past = pv;
    *new = g->nodes[p].inputs[1];
    return NULL;
}

static const char *match_layer(const kn_graph *g, const kn_uses *u, kn_id k, layer *L)
{
    const kn_node *n = &g->nodes[k];
    const kn_attr *rep = kn_node_attr(n, "_kv_repeat");
    if (!rep || rep->kind != KN_ATTR_INT || rep->u.i < 1)
        return "an Attention not made by fuse-attention (no _kv_repeat)";
    if (n->n_inputs > 4 || n->n_inputs < 3 || (n->n_outputs > 1))
        return "an Attention with its own past/present or extra outputs";
    if (kn_node_attr(n, "is_causal") || kn_node_attr(n, "softcap") || kn_node_attr(n, "qk_matmul_output_mode"))
        return "an Attention with is_causal, softcap or qk output";
    memset(L, 0, sizeof *L);
    L->attn = k;
    L->q = n->inputs[0];
    L->mask = n->n_inputs > 3 ? n->inputs[3] : KN_NONE;
    L->out = n->outputs[0];
    L->repeat = rep->u.i;
    const char *why = match_side(g, u, n->inputs[1], &L->cat_k, &L->past_k, &L->new_k);
    if (!why)
        why = match_side(g, u, n->inputs[2], &L->cat_v, &L->past_v, &L->new_v);
    if (why)
        return why;
    const kn_type *pk = kn_rw_type(g, L->past_k), *pv = kn_rw_type(g, L->past_v), *q = kn_rw_type(g, L->q);
    L->kv_heads = pk->shape.dims[1].value;
    L->head_dim = pk->shape.dims[3].value;
    if (pv->shape.dims[1].value != L->kv_heads || pv->shape.dims[3].value != L->head_dim)
        return "past keys and values differ in heads or head_dim";
    if (!q || q->dtype != KN_F32 || (q->shape.rank >= 0 && q->shape.rank != 4))
        return "Q is not float32 of rank 4"; /* an unknown rank: the kernel checks */
    if (q->shape.rank == 4 && ((q->shape.dims[1].value > 0 && q->shape.dims[1].value != L->kv_heads * L->repeat) ||
        (q->shape.dims[3].value > 0 && q->shape.dims[3].value != L->head_dim)))
        return "Q's heads or head_dim do not fit the cache";
    const kn_attr *sc = kn_node_attr(n, "scale");
    L->scale = sc && sc->kind == KN_ATTR_FLOAT ? sc->u.f : (float)(1.0 / sqrt((double)L->head_dim));
    return NULL;
}

/* Whether every reader of past input v (through one-input Concats) is a
 * Shape node or one of the layers' present Concats. */
static const char *past_only_shaped(const kn_graph *g, const kn_uses *u, kn_id v, const layer *L, uint32_t n_layers,
                                    int depth)
{
    if (depth > 8)
        return "the past input goes through too many Concats";
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        bool reads = false;
        for (uint32_t i = 0; i < n->n_inputs; i++)
            reads = reads || n->inputs[i] == v;
        if (!reads || u->dead[k])
            continue;
        bool ok = n->op == KN_OP_Shape;
        for (uint32_t l = 0; l < n_layers && !ok; l++)
            ok = k == L[l].cat_k || k == L[l].cat_v;
        if (!ok && n->op == KN_OP_Concat && n->n_inputs == 1) {
            if (u->pinned[n->outputs[0]])
                return "a Concat of the past input is a graph output";
            const char *why = past_only_shaped(g, u, n->outputs[0], L, n_layers, depth + 1);
            if (why)
                return why;
            ok = true;
        }
        if (!ok)
            return "a past input is read by a node other than Shape and the present Concat";
    }
    return NULL;
}

static uint64_t meta_u64(const kn_graph *g, const char *key, uint64_t def, bool *bad)
{
    const char *s = kn_rw_get_meta(g, key);
    if (!s)
        return def;
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (e == s || *e || v == 0) {
        *bad = true;
        return def;
    }
    return v;
}

static kn_status set_meta_u64(kn_graph *g, const char *key, uint64_t v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%" PRIu64, v);
    return kn_rw_set_meta(g, key, buf);
}

/* The cache's capacity from the compile options (docs/llm.md). */
static kn_status capacity(kn_graph *g, kn_kv_config *cfg, kn_diag *d)
{
    bool bad = false;
    const char *path = g->info && g->info->path ? g->info->path : "<graph>";
    uint64_t bs = meta_u64(g, "kiln.kv.block_size", KV_DEFAULT_BLOCK, &bad);
    bool has_max = kn_rw_get_meta(g, "kiln.kv.max_seq_len") != NULL;
    uint64_t max = meta_u64(g, "kiln.kv.max_seq_len", KV_DEFAULT_MAX_SEQ, &bad);
    uint64_t mem = meta_u64(g, "kiln.kv.mem", 0, &bad);
    if (bad || bs > 65536 || max > UINT32_MAX) {
        kn_diag_add(d, KN_ERROR, "%s: kv-cache: bad cache options (block size %" PRIu64 ", max sequence length %" PRIu64
                    "): positive integers needed", path, bs, max);
        return KN_ERR_INVALID;
    }
    cfg->block_size = (uint32_t)bs;
    cfg->n_blocks = 1;
    uint64_t per_block = kn_kv_block_bytes(cfg);
    uint64_t blocks = (max + bs - 1) / bs;
    if (mem) {
        blocks = per_block ? mem / per_block : 0;
        if (blocks == 0 || blocks > UINT32_MAX) {
            kn_diag_add(d, KN_ERROR,
                        "%s: kv-cache: --kv-cache-mem %" PRIu64 " bytes does not hold one block (%" PRIu64
                        " bytes: %u tokens x %u layers x %u kv heads x %u x 2 x 4 bytes)",
                        path, mem, per_block, cfg->block_size, cfg->n_layers, cfg->kv_heads, cfg->head_dim);
            return KN_ERR_INVALID;
        }
        if (!has_max)
            max = blocks * bs;
        else if (blocks * bs < max) {
            kn_diag_add(d, KN_ERROR,
                        "%s: kv-cache: --kv-cache-mem %" PRIu64 " bytes holds %" PRIu64
                        " tokens, fewer than --max-seq-len %" PRIu64,
                        path, mem, blocks * bs, max);
            return KN_ERR_INVALID;
        }
    }
    cfg->n_blocks = (uint32_t)blocks;
    cfg->max_seq_len = (uint32_t)(max > UINT32_MAX ? UINT32_MAX : max);
    if (kn_kv_bytes(cfg) == 0) {
        kn_diag_add(d, KN_ERROR, "%s: kv-cache: the cache's size overflows", path);
        return KN_ERR_LIMIT;
    }
    return KN_OK;
}

static kn_status write_meta(kn_graph *g, const kn_kv_config *cfg, const layer *L, uint32_t n)
{
    KN_TRY(set_meta_u64(g, "kiln.kv.layers", cfg->n_layers));
    KN_TRY(set_meta_u64(g, "kiln.kv.kv_heads", cfg->kv_heads));
    KN_TRY(set_meta_u64(g, "kiln.kv.head_dim", cfg->head_dim));
    KN_TRY(kn_rw_set_meta(g, "kiln.kv.dtype", "float32"));
    KN_TRY(set_meta_u64(g, "kiln.kv.block_size", cfg->block_size));
    KN_TRY(set_meta_u64(g, "kiln.kv.blocks", cfg->n_blocks));
    KN_TRY(set_meta_u64(g, "kiln.kv.max_seq_len", cfg->max_seq_len));
    KN_TRY(set_meta_u64(g, "kiln.kv.bytes", kn_kv_bytes(cfg)));
    size_t len = 1;
    for (uint32_t l = 0; l < n; l++)
        len += strlen(g->values[L[l].past_k].name) + strlen(g->values[L[l].past_v].name) + 2;
    char *names = kn_graph_alloc(g, len);
    if (!names)
        return KN_ERR_NOMEM;
    for (uint32_t l = 0; l < n; l++) {
        strcat(names, l ? "," : "");
        strcat(names, g->values[L[l].past_k].name);
        strcat(names, ",");
        strcat(names, g->values[L[l].past_v].name);
    }
    return kn_rw_set_meta(g, "kiln.kv.past_inputs", names);
}

static kn_status rewrite(kn_graph *g, kn_uses *u, layer *L, uint32_t n)
{
    /* the presents leave the interface */
    uint32_t w = 0;
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        kn_id v = g->outputs[i];
        bool present = false;
        for (uint32_t l = 0; l < n; l++)
            present = present || v == g->nodes[L[l].cat_k].outputs[0] || v == g->nodes[L[l].cat_v].outputs[0];
        if (present)
            u->pinned[v] = false;
        else
            g->outputs[w++] = v;
    }
    g->n_outputs = w;
    for (uint32_t l = 0; l < n; l++) {
        kn_attr at[5];
        KN_TRY(kn_fm_attr_i(g, "layer", l, &at[0]));
        KN_TRY(kn_fm_attr_i(g, "kv_heads", L[l].kv_heads, &at[1]));
        KN_TRY(kn_fm_attr_i(g, "head_dim", L[l].head_dim, &at[2]));
        KN_TRY(kn_fm_attr_f(g, "scale", L[l].scale, &at[3]));
        KN_TRY(kn_fm_attr_i(g, "kv_repeat", L[l].repeat, &at[4]));
        kn_fm m = {0};
        kn_fm_add(&m, L[l].cat_k);
        kn_fm_add(&m, L[l].cat_v);
        kn_fm_add(&m, L[l].attn);
        kn_id ins[4] = {L[l].q, L[l].new_k, L[l].new_v, L[l].mask};
        KN_TRY(kn_fm_replace(g, u, &m, L[l].out, KN_OP_KILN_PagedAttention, 1, ins, L[l].mask != KN_NONE ? 4 : 3,
                             at, 5));
    }
    /* one-input Concats of a past input are identities: Shape reads the past */
    for (kn_id k = g->n_nodes; k-- > 0;) {
        kn_node *nd = &g->nodes[k];
        if (u->dead[k] || nd->op != KN_OP_Concat || nd->n_inputs != 1 || *nd->domain)
            continue;
        kn_id src = through_identity(g, u, nd->inputs[0]);
        bool is_past = false;
        for (uint32_t l = 0; l < n; l++)
            is_past = is_past || src == L[l].past_k || src == L[l].past_v;
        if (!is_past)
            continue;
        kn_rw_replace_uses(g, u, nd->outputs[0], src);
        u->readers[nd->inputs[0]]--;
        u->dead[k] = true;
    }
    return KN_OK;
}

static uint32_t count_named(const kn_graph *g, bool inputs, const char *prefix)
{
    uint32_t c = 0, n = inputs ? g->n_inputs : g->n_outputs;
    for (uint32_t i = 0; i < n; i++)
        c += prefixed(g->values[inputs ? g->inputs[i] : g->outputs[i]].name, prefix);
    return c;
}

kn_status kn_pass_kv_cache(kn_graph *g, kn_diag *d)
{
    if (g->parent)
        return KN_OK;
    const char *path = g->info && g->info->path ? g->info->path : "<graph>";
    uint32_t n_past = count_named(g, true, "past"), n_present = count_named(g, false, "present");
    if (n_past == 0 && n_present == 0)
        return KN_OK; /* not a decoder with a cache: nothing to say */
    /* fusion leaves dead readers (the unfused repeat_kv's Shape chains) */
    KN_TRY(kn_pass_dce(g, d));
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    layer *L = kn_mem_alloc(g->alloc, ((size_t)g->n_nodes + 1) * sizeof *L);
    if (!L) {
        kn_uses_free(g, &u);
        return KN_ERR_NOMEM;
    }
    uint32_t n = 0;
    const char *why = NULL;
    for (kn_id k = 0; k < g->n_nodes && !why; k++)
        if (g->nodes[k].op == KN_OP_Attention)
            why = match_layer(g, &u, k, &L[n++]);
    if (!why && n == 0)
        why = "no fused Attention reads them (the kv-cache pass needs fuse-attention, -O2)";
    if (!why && (n_past != 2 * n || n_present != 2 * n))
        why = "the past*/present* values are not exactly one key and one value pair per attention";
    for (uint32_t l = 0; l < n && !why; l++) {
        if (L[l].kv_heads != L[0].kv_heads || L[l].head_dim != L[0].head_dim)
            why = "layers differ in kv heads or head_dim";
        if (!why)
            why = past_only_shaped(g, &u, L[l].past_k, L, n, 0);
        if (!why)
            why = past_only_shaped(g, &u, L[l].past_v, L, n, 0);
    }
    kn_status s = KN_OK;
    kn_kv_config cfg = {0};
    if (!why) {
        cfg.n_layers = n;
        cfg.kv_heads = (uint32_t)L[0].kv_heads;
        cfg.head_dim = (uint32_t)L[0].head_dim;
        s = capacity(g, &cfg, d);
        if (s == KN_OK)
            s = rewrite(g, &u, L, n);
        if (s == KN_OK)
            s = write_meta(g, &cfg, L, n);
    } else {
        kn_diag_add(d, KN_NOTE, "%s: kv-cache: %u past / %u present values kept as graph inputs/outputs: %s", path,
                    n_past, n_present, why);
    }
    kn_mem_free(g->alloc, L);
    if (s != KN_OK || why) {
        kn_uses_free(g, &u);
        return s;
    }
    KN_TRY(kn_uses_finish(g, &u));
    KN_TRY(kn_pass_dce(g, d)); /* the Shape arithmetic on the presents */
    kn_diag_add(d, KN_NOTE,
                "%s: kv-cache: %u layers use the runtime's paged cache: %u kv heads x %u, %u blocks of %u tokens, max "
                "sequence length %u, %" PRIu64 " bytes",
                path, cfg.n_layers, cfg.kv_heads, cfg.head_dim, cfg.n_blocks, cfg.block_size, cfg.max_seq_len,
                kn_kv_bytes(&cfg));
    return KN_OK;
}

/* The cache's dtype after the precision pass converted the PagedAttention
 * nodes: kiln.kv.dtype, and the sizes that depend on it. Without
 * --kv-cache-mem the pool holds the same blocks in fewer bytes; with it,
 * the same bytes hold more blocks, and a maximum sequence length that was
 * the whole pool (as when --max-seq-len is not given) grows with it. */
kn_status kn_kv_cache_set_dtype(kn_graph *g, kn_dtype dt, kn_diag *d)
{
    const char *path = g->info && g->info->path ? g->info->path : "<graph>";
    bool bad = false;
    kn_kv_config cfg = {0};
    uint64_t v[6];
    const char *keys[6] = {"kiln.kv.layers",     "kiln.kv.kv_heads", "kiln.kv.head_dim",
                           "kiln.kv.block_size", "kiln.kv.blocks",   "kiln.kv.max_seq_len"};
    for (int i = 0; i < 6; i++) {
        v[i] = meta_u64(g, keys[i], 0, &bad);
        bad = bad || v[i] == 0 || v[i] > UINT32_MAX;
    }
    if (bad || (dt != KN_F32 && dt != KN_F16 && dt != KN_BF16)) {
        kn_diag_add(d, KN_ERROR, "%s: the kiln.kv.* metadata is incomplete, or %s is not a KV cache dtype", path,
                    kn_dtype_name(dt));
        return KN_ERR_INVALID;
    }
    cfg = (kn_kv_config){(uint32_t)v[0], (uint32_t)v[1], (uint32_t)v[2], (uint32_t)v[3], (uint32_t)v[4],
                         (uint32_t)v[5], dt};
    uint64_t mem = meta_u64(g, "kiln.kv.mem", 0, &bad);
    if (mem && !bad) {
        bool whole = (uint64_t)cfg.n_blocks * cfg.block_size == cfg.max_seq_len;
        uint64_t per = kn_kv_block_bytes(&cfg), blocks = per ? mem / per : 0;
        if (blocks >= cfg.n_blocks && blocks <= UINT32_MAX) {
            cfg.n_blocks = (uint32_t)blocks;
            if (whole)
                cfg.max_seq_len = (uint32_t)(blocks * cfg.block_size > UINT32_MAX ? UINT32_MAX
                                                                                   : blocks * cfg.block_size);
        }
    }
    if (kn_kv_bytes(&cfg) == 0) {
        kn_diag_add(d, KN_ERROR, "%s: kv-cache: the cache's size overflows", path);
        return KN_ERR_LIMIT;
    }
    KN_TRY(kn_rw_set_meta(g, "kiln.kv.dtype", kn_dtype_name(dt)));
    KN_TRY(set_meta_u64(g, "kiln.kv.blocks", cfg.n_blocks));
    KN_TRY(set_meta_u64(g, "kiln.kv.max_seq_len", cfg.max_seq_len));
    return set_meta_u64(g, "kiln.kv.bytes", kn_kv_bytes(&cfg));
}
