/* The paged KV cache a kn_session owns (runtime/kv_cache.c): a pool of
 * fixed-size blocks of keys and values for every layer, and a block table
 * per sequence. kiln.PagedAttention (runtime/cpu/k_paged_attn.c) reads and
 * appends through the inline accessors below, so the CPU kernels need no
 * function of libkiln_rt. docs/llm.md describes the layout. */
#ifndef KILN_RUNTIME_KV_CACHE_H
#define KILN_RUNTIME_KV_CACHE_H

#include "kiln/kiln.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* The cache's shape, from the plan's kiln.kv.* metadata (or session
 * options). */
typedef struct kn_kv_config {
    uint32_t n_layers;
    uint32_t kv_heads;
    uint32_t head_dim;
    uint32_t block_size;  /* tokens per block */
    uint32_t n_blocks;    /* blocks in the pool */
    uint32_t max_seq_len; /* tokens one sequence may hold */
    kn_dtype dtype;       /* of the stored keys and values (kiln.kv.dtype): float32, float16 or
                           * bfloat16; KN_UNDEFINED (a zeroed config) means float32 */
} kn_kv_config;

typedef struct kn_kv_seq {
    bool used;
    uint32_t len;       /* tokens whose K/V are in the cache */
    uint32_t n_blocks;  /* blocks held (block table entries) */
    uint32_t *blocks;   /* block table: max_seq_len / block_size (rounded up) entries */
} kn_kv_seq;

typedef struct kn_kv_cache {
    const kn_allocator *a;
    kn_kv_config cfg;
    size_t block_elems;  /* elements of one block of one layer: kv_heads * block_size * head_dim */
    void *keys;          /* [layer][block][kv head][slot][dim] in cfg.dtype; NULL from kn_kv_create_tables */
    void *values;        /* same layout */
    uint32_t *free_ids;  /* free block ids (a stack) */
    uint32_t n_free;
    kn_kv_seq *seqs;
    uint32_t n_seqs, cap_seqs;
} kn_kv_cache;

/* What the executor hands kiln.PagedAttention (kn_kctx_kv): the cache and,
 * per batch row of the run, the sequence it belongs to. Each row's new
 * tokens go to positions seqs[row].len ... len + seq - 1; the caller has
 * reserved their blocks and advances len after the run. */
typedef struct kn_kv_run {
    kn_kv_cache *cache;
    const uint32_t *seq_ids; /* n_rows sequence ids */
    uint32_t n_rows;
} kn_kv_run;

/* The cache's element dtype (KN_F32 for a zeroed config) and its size in
 * bytes. */
static inline kn_dtype kn_kv_dtype(const kn_kv_config *cfg)
{
    return cfg->dtype == KN_F16 || cfg->dtype == KN_BF16 ? cfg->dtype : KN_F32;
}

static inline uint32_t kn_kv_elem_bytes(const kn_kv_config *cfg)
{
    return kn_kv_dtype(cfg) == KN_F32 ? 4 : 2;
}

/* The dtype a kiln.kv.dtype value names: KN_F32 for NULL (a plan written
 * before the key existed) or "float32", KN_F16 for "float16", KN_BF16 for
 * "bfloat16", KN_UNDEFINED for anything else. */
static inline kn_dtype kn_kv_dtype_parse(const char *s)
{
    if (!s || strcmp(s, "float32") == 0)
        return KN_F32;
    if (strcmp(s, "float16") == 0)
        return KN_F16;
    return strcmp(s, "bfloat16") == 0 ? KN_BF16 : KN_UNDEFINED;
}

/* Pointer to the keys (or values) of token `pos` of sequence `s`, kv head
 * `h`, layer `layer`: head_dim contiguous elements of the cache's dtype.
 * pos < the blocks held. */
static inline void *kn_kv_at(const kn_kv_cache *c, bool value, uint32_t layer, const kn_kv_seq *s, uint32_t pos,
                              uint32_t h)
{
    uint32_t bs = c->cfg.block_size;
    size_t block = s->blocks[pos / bs];
    size_t off = ((size_t)layer * c->cfg.n_blocks + block) * c->block_elems +
                 ((size_t)h * bs + pos % bs) * c->cfg.head_dim;
    return (char *)(value ? c->values : c->keys) + off * kn_kv_elem_bytes(&c->cfg);
}

/* Bytes per block across all layers, keys and values (in the cache's
 * dtype); 0 when the size overflows. */
static inline uint64_t kn_kv_block_bytes(const kn_kv_config *cfg)
{
    uint64_t b = (uint64_t)cfg->kv_heads * cfg->block_size; /* each < 2^32: no overflow */
    uint64_t per = b * cfg->head_dim;
    if (cfg->head_dim && per / cfg->head_dim != b)
        return 0;
    uint64_t eb = 2ull * kn_kv_elem_bytes(cfg); /* keys and values */
    uint64_t bytes = per * eb;
    if (bytes / eb != per)
        return 0;
    uint64_t all = bytes * cfg->n_layers;
    return cfg->n_layers && all / cfg->n_layers != bytes ? 0 : all;
}

/* Bytes the pool of `cfg` takes (keys and values of every layer); 0 when
 * the size overflows. */
static inline uint64_t kn_kv_bytes(const kn_kv_config *cfg)
{
    uint64_t b = kn_kv_block_bytes(cfg), all = b * cfg->n_blocks;
    return cfg->n_blocks && all / cfg->n_blocks != b ? 0 : all;
}

/* Allocates the pool. KN_ERR_INVALID for a zero field, KN_ERR_LIMIT when
 * the size overflows, KN_ERR_NOMEM. */
kn_status kn_kv_create(const kn_kv_config *cfg, const kn_allocator *a, kn_diag *d, kn_kv_cache **out);
void kn_kv_destroy(kn_kv_cache *c);
/* kn_kv_create without host pools (keys and values NULL; kn_kv_at must not
 * be used): the blocks and tables of a cache whose pools live elsewhere,
 * such as a CUDA session's device pools (kn_cuda_session_run_kv). */
kn_status kn_kv_create_tables(const kn_kv_config *cfg, const kn_allocator *a, kn_diag *d, kn_kv_cache **out);
/* A run's rows as the CUDA session takes them (kn_cuda_kv_binding): the
 * block table int32 [n_rows, max_blocks] of sequences seq_ids (unused
 * entries 0) and their lengths int32 [n_rows] as the past. KN_ERR_INVALID
 * for a bad id or a sequence holding more than max_blocks blocks. */
kn_status kn_kv_fill_rows(kn_kv_cache *c, const uint32_t *seq_ids, uint32_t n_rows, uint32_t max_blocks,
                          int32_t *table, int32_t *past);

/* A new empty sequence (reuses freed ids). KN_ERR_NOMEM. */
kn_status kn_kv_seq_add(kn_kv_cache *c, uint32_t *id);
/* Returns the sequence's blocks to the pool and its id for reuse. */
kn_status kn_kv_seq_free(kn_kv_cache *c, uint32_t id);
/* Empties a sequence (blocks back to the pool), keeping its id. */
kn_status kn_kv_seq_reset(kn_kv_cache *c, uint32_t id);
/* Makes sure sequence `id` holds blocks for `len` tokens. KN_ERR_INVALID
 * (bad id, len over max_seq_len), KN_ERR_LIMIT (the pool has no free block:
 * "KV cache full"), each with a message. Blocks taken stay with the
 * sequence until reset or freed. */
kn_status kn_kv_seq_reserve(kn_kv_cache *c, uint32_t id, uint32_t len, kn_diag *d);
/* The sequence, or NULL for a bad or freed id. */
static inline kn_kv_seq *kn_kv_seq_get(kn_kv_cache *c, uint32_t id)
{
    return id < c->n_seqs && c->seqs[id].used ? &c->seqs[id] : NULL;
}

#endif
