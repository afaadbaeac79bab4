/* The shape probe's KV cache: see probe_kv.h. Built by hand on the layout
 * of runtime/kv_cache.h (the codegen does not link libkiln_rt): one block
 * run per row, ids in order, no free list. */
#include "codegen/cuda/probe_kv.h"
#include "ir/arena.h"
#include "runtime/kv_cache.h"

#include <string.h>

#define PROBE_BLOCK 16u

struct kn_probe_kv {
    const kn_graph *g;
    const kn_allocator *a;
    kn_kv_cache cache;
    kn_kv_run run;
    uint32_t *seq_ids;
    bool *is_q;                          /* per value: Q of a PagedAttention node */
    uint32_t layers, kv_heads, head_dim; /* the largest over the nodes */
};

static void release(kn_probe_kv *pk)
{
    kn_kv_cache *c = &pk->cache;
    for (uint32_t i = 0; i < c->n_seqs; i++)
        kn_mem_free(pk->a, c->seqs[i].blocks);
    kn_mem_free(pk->a, c->seqs);
    kn_mem_free(pk->a, c->keys);
    kn_mem_free(pk->a, c->values);
    kn_mem_free(pk->a, pk->seq_ids);
    memset(c, 0, sizeof *c);
    pk->seq_ids = NULL;
    pk->run = (kn_kv_run){c, NULL, 0};
}

/* A cache of `rows` empty sequences with blocks for `tokens` tokens each. */
static kn_status size_for(kn_probe_kv *pk, int64_t rows, int64_t tokens)
{
    kn_kv_cache *c = &pk->cache;
    if (rows <= 0 || tokens <= 0 || rows > 65535 || tokens > INT32_MAX)
        return KN_OK; /* the CPU kernel reports the bad shape */
    if (pk->run.n_rows == rows && c->cfg.max_seq_len >= tokens)
        return KN_OK;
    release(pk);
    uint32_t per = (uint32_t)((tokens + PROBE_BLOCK - 1) / PROBE_BLOCK);
    c->a = pk->a;
    c->cfg = (kn_kv_config){pk->layers, pk->kv_heads, pk->head_dim, PROBE_BLOCK, per * (uint32_t)rows,
                            (uint32_t)tokens};
    c->block_elems = (size_t)pk->kv_heads * PROBE_BLOCK * pk->head_dim;
    size_t n = c->block_elems * c->cfg.n_blocks * pk->layers;
    c->keys = kn_mem_alloc(pk->a, n * sizeof(float));
    c->values = kn_mem_alloc(pk->a, n * sizeof(float));
    c->seqs = kn_mem_alloc(pk->a, (size_t)rows * sizeof *c->seqs);
    pk->seq_ids = kn_mem_alloc(pk->a, (size_t)rows * sizeof *pk->seq_ids);
    if (!c->keys || !c->values || !c->seqs || !pk->seq_ids) {
        release(pk);
        return KN_ERR_NOMEM;
    }
    memset(c->keys, 0, n * sizeof(float));
    memset(c->values, 0, n * sizeof(float));
    memset(c->seqs, 0, (size_t)rows * sizeof *c->seqs);
    c->n_seqs = c->cap_seqs = (uint32_t)rows;
    for (uint32_t r = 0; r < (uint32_t)rows; r++) {
        kn_kv_seq *s = &c->seqs[r];
        s->blocks = kn_mem_alloc(pk->a, (size_t)per * sizeof *s->blocks);
        if (!s->blocks) {
            release(pk);
            return KN_ERR_NOMEM;
        }
        for (uint32_t b = 0; b < per; b++)
            s->blocks[b] = r * per + b;
        s->used = true;
        s->n_blocks = per;
        pk->seq_ids[r] = r;
    }
    pk->run = (kn_kv_run){c, pk->seq_ids, (uint32_t)rows};
    return KN_OK;
}

kn_status kn_probe_kv_create(const kn_graph *g, const kn_allocator *a, kn_rt_tensor *const *ins, kn_probe_kv **out)
{
    *out = NULL;
    uint32_t layers = 0, kvh = 0, hd = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (n->op != KN_OP_KILN_PagedAttention)
            continue;
        const kn_attr *l = kn_node_attr(n, "layer"), *h = kn_node_attr(n, "kv_heads"), *d = kn_node_attr(n, "head_dim");
        int64_t lv = l && l->kind == KN_ATTR_INT ? l->u.i : 0, hv = h && h->kind == KN_ATTR_INT ? h->u.i : 1;
        int64_t dv = d && d->kind == KN_ATTR_INT ? d->u.i : 1;
        if (lv < 0 || lv >= 65536 || hv < 1 || hv > 65536 || dv < 1 || dv > 65536)
            continue; /* the CPU kernel reports it */
        layers = (uint32_t)lv + 1 > layers ? (uint32_t)lv + 1 : layers;
        kvh = (uint32_t)hv > kvh ? (uint32_t)hv : kvh;
        hd = (uint32_t)dv > hd ? (uint32_t)dv : hd;
    }
    if (!layers)
        return KN_OK;
    kn_probe_kv *pk = kn_mem_alloc(a, sizeof *pk);
    if (!pk)
        return KN_ERR_NOMEM;
    memset(pk, 0, sizeof *pk);
    pk->g = g;
    pk->a = a;
    pk->layers = layers, pk->kv_heads = kvh, pk->head_dim = hd;
    pk->run = (kn_kv_run){&pk->cache, NULL, 0};
    pk->is_q = kn_mem_alloc(a, (size_t)g->n_values + 1);
    if (!pk->is_q) {
        kn_mem_free(a, pk);
        return KN_ERR_NOMEM;
    }
    memset(pk->is_q, 0, (size_t)g->n_values + 1);
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (n->op == KN_OP_KILN_PagedAttention && n->n_inputs > 0 && n->inputs[0] < g->n_values)
            pk->is_q[n->inputs[0]] = true;
    }
    kn_status s = KN_OK;
    for (uint32_t i = 0; i < g->n_inputs && s == KN_OK; i++)
        if (ins[i])
            s = kn_probe_kv_see(pk, g->inputs[i], ins[i]);
    if (s != KN_OK) {
        kn_probe_kv_destroy(pk);
        return s;
    }
    *out = pk;
    return KN_OK;
}

void *kn_probe_kv_run(kn_probe_kv *pk) { return pk ? &pk->run : NULL; }

kn_status kn_probe_kv_see(kn_probe_kv *pk, kn_id v, const kn_rt_tensor *t)
{
    if (v >= pk->g->n_values || !pk->is_q[v] || t->rank != 4)
        return KN_OK;
    return size_for(pk, t->dims[0], t->dims[2]);
}

void kn_probe_kv_destroy(kn_probe_kv *pk)
{
    if (!pk)
        return;
    release(pk);
    kn_mem_free(pk->a, pk->is_q);
    kn_mem_free(pk->a, pk);
}
