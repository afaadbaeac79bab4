/* The paged KV cache (see kv_cache.h): one allocation for the whole pool,
 * a free-block stack, block tables per sequence. */
#include "runtime/kv_cache.h"
#include "ir/arena.h"

#include <string.h>

static kn_status create(const kn_kv_config *cfg, const kn_allocator *a, kn_diag *d, bool pools, kn_kv_cache **out)
{
    *out = NULL;
    if (!a)
        a = kn_default_allocator();
    if (!cfg->n_layers || !cfg->kv_heads || !cfg->head_dim || !cfg->block_size || !cfg->n_blocks ||
        !cfg->max_seq_len) {
        kn_diag_add(d, KN_ERROR,
                    "KV cache: every size must be positive (layers %u, kv heads %u, head dim %u, block size %u, "
                    "blocks %u, max sequence length %u)",
                    cfg->n_layers, cfg->kv_heads, cfg->head_dim, cfg->block_size, cfg->n_blocks, cfg->max_seq_len);
        return KN_ERR_INVALID;
    }
    if (cfg->dtype != KN_UNDEFINED && cfg->dtype != KN_F32 && cfg->dtype != KN_F16 && cfg->dtype != KN_BF16) {
        kn_diag_add(d, KN_ERROR, "KV cache: dtype %s (float32, float16 or bfloat16)", kn_dtype_name(cfg->dtype));
        return KN_ERR_INVALID;
    }
    uint64_t bytes = kn_kv_bytes(cfg);
    if (bytes == 0 || bytes > (uint64_t)SIZE_MAX / 2) {
        kn_diag_add(d, KN_ERROR, "KV cache: %u blocks of %u tokens is too large for this machine", cfg->n_blocks,
                    cfg->block_size);
        return KN_ERR_LIMIT;
    }
    kn_kv_cache *c = kn_mem_alloc(a, sizeof *c);
    if (!c)
        return KN_ERR_NOMEM;
    memset(c, 0, sizeof *c);
    c->a = a;
    c->cfg = *cfg;
    c->cfg.dtype = kn_kv_dtype(cfg);
    c->block_elems = (size_t)cfg->kv_heads * cfg->block_size * cfg->head_dim;
    if (pools) {
        c->keys = kn_mem_alloc(a, (size_t)(bytes / 2));
        c->values = kn_mem_alloc(a, (size_t)(bytes / 2));
    }
    c->free_ids = kn_mem_alloc(a, (size_t)cfg->n_blocks * sizeof *c->free_ids);
    if ((pools && (!c->keys || !c->values)) || !c->free_ids) {
        kn_kv_destroy(c);
        kn_diag_add(d, KN_ERROR, "KV cache: cannot allocate %llu bytes", (unsigned long long)bytes);
        return KN_ERR_NOMEM;
    }
    /* blocks are handed out lowest id first */
    for (uint32_t i = 0; i < cfg->n_blocks; i++)
        c->free_ids[i] = cfg->n_blocks - 1 - i;
    c->n_free = cfg->n_blocks;
    *out = c;
    return KN_OK;
}

kn_status kn_kv_create(const kn_kv_config *cfg, const kn_allocator *a, kn_diag *d, kn_kv_cache **out)
{
    return create(cfg, a, d, true, out);
}

kn_status kn_kv_create_tables(const kn_kv_config *cfg, const kn_allocator *a, kn_diag *d, kn_kv_cache **out)
{
    return create(cfg, a, d, false, out);
}

kn_status kn_kv_fill_rows(kn_kv_cache *c, const uint32_t *seq_ids, uint32_t n_rows, uint32_t max_blocks,
                          int32_t *table, int32_t *past)
{
    for (uint32_t r = 0; r < n_rows; r++) {
        const kn_kv_seq *s = kn_kv_seq_get(c, seq_ids[r]);
        if (!s || s->n_blocks > max_blocks)
            return KN_ERR_INVALID;
        for (uint32_t j = 0; j < max_blocks; j++)
            table[(size_t)r * max_blocks + j] = j < s->n_blocks ? (int32_t)s->blocks[j] : 0;
        past[r] = (int32_t)s->len;
    }
    return KN_OK;
}

void kn_kv_destroy(kn_kv_cache *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->n_seqs; i++)
        kn_mem_free(c->a, c->seqs[i].blocks);
    kn_mem_free(c->a, c->seqs);
    kn_mem_free(c->a, c->keys);
    kn_mem_free(c->a, c->values);
    kn_mem_free(c->a, c->free_ids);
    kn_mem_free(c->a, c);
}

kn_status kn_kv_seq_add(kn_kv_cache *c, uint32_t *id)
{
    uint32_t i = 0;
    while (i < c->n_seqs && c->seqs[i].used)
        i++;
    if (i == c->n_seqs) {
        KN_TRY(kn_mem_grow(c->a, (void **)&c->seqs, &c->cap_seqs, c->n_seqs + 1, sizeof *c->seqs));
        memset(&c->seqs[i], 0, sizeof c->seqs[i]);
        c->n_seqs++;
    }
    kn_kv_seq *s = &c->seqs[i];
    if (!s->blocks) {
        uint32_t n = (c->cfg.max_seq_len + c->cfg.block_size - 1) / c->cfg.block_size;
        s->blocks = kn_mem_alloc(c->a, (size_t)n * sizeof *s->blocks);
        if (!s->blocks)
            return KN_ERR_NOMEM;
    }
    s->used = true;
    s->len = 0;
    s->n_blocks = 0;
    *id = i;
    return KN_OK;
}

kn_status kn_kv_seq_reset(kn_kv_cache *c, uint32_t id)
{
    kn_kv_seq *s = kn_kv_seq_get(c, id);
    if (!s)
        return KN_ERR_INVALID;
    while (s->n_blocks) /* last taken goes back on top: reused first */
        c->free_ids[c->n_free++] = s->blocks[--s->n_blocks];
    s->len = 0;
    return KN_OK;
}

kn_status kn_kv_seq_free(kn_kv_cache *c, uint32_t id)
{
    KN_TRY(kn_kv_seq_reset(c, id));
    c->seqs[id].used = false;
    return KN_OK;
}

kn_status kn_kv_seq_reserve(kn_kv_cache *c, uint32_t id, uint32_t len, kn_diag *d)
{
    kn_kv_seq *s = kn_kv_seq_get(c, id);
    if (!s) {
        kn_diag_add(d, KN_ERROR, "KV cache: no sequence %u", id);
        return KN_ERR_INVALID;
    }
    if (len > c->cfg.max_seq_len) {
        kn_diag_add(d, KN_ERROR, "KV cache: sequence %u would hold %u tokens, over the maximum sequence length %u",
                    id, len, c->cfg.max_seq_len);
        return KN_ERR_INVALID;
    }
    uint32_t need = (len + c->cfg.block_size - 1) / c->cfg.block_size;
    if (need > s->n_blocks && need - s->n_blocks > c->n_free) {
        kn_diag_add(d, KN_ERROR,
                    "KV cache full: sequence %u needs %u more blocks of %u tokens, %u of %u are free (raise "
                    "--kv-cache-mem or free sequences)",
                    id, need - s->n_blocks, c->cfg.block_size, c->n_free, c->cfg.n_blocks);
        return KN_ERR_LIMIT;
    }
    while (s->n_blocks < need)
        s->blocks[s->n_blocks++] = c->free_ids[--c->n_free];
    return KN_OK;
}
