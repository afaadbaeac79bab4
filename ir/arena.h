/* Bump allocator: many small allocations, freed all at once. */
#ifndef KILN_ARENA_H
#define KILN_ARENA_H

#include "kiln/kiln.h"

typedef struct kn_arena kn_arena;

/* Returns NULL when out of memory. */
kn_arena *kn_arena_create(const kn_allocator *a);
void kn_arena_destroy(kn_arena *ar);
/* Zeroed memory aligned to 16 bytes; NULL when out of memory. */
void *kn_arena_alloc(kn_arena *ar, size_t size);
/* The same, not zeroed: for bulk data the caller overwrites at once
 * (weights of hundreds of MB, whose zeroing would cost a pass over them). */
void *kn_arena_alloc_uninit(kn_arena *ar, size_t size);
/* Copies n bytes into the arena. */
void *kn_arena_dup(kn_arena *ar, const void *src, size_t n);
/* Frees everything but keeps the first block for reuse. */
void kn_arena_reset(kn_arena *ar);
size_t kn_arena_used(const kn_arena *ar); /* bytes handed out */

/* Helpers over a kn_allocator (NULL = default). */
void *kn_mem_alloc(const kn_allocator *a, size_t size);
void *kn_mem_realloc(const kn_allocator *a, void *p, size_t size);
void kn_mem_free(const kn_allocator *a, void *p);

/* Grows *arr (elements of elem bytes, capacity *cap) to hold at least
 * `need` elements, doubling. Returns KN_ERR_NOMEM/KN_ERR_LIMIT on failure
 * leaving *arr unchanged. */
kn_status kn_mem_grow(const kn_allocator *a, void **arr, uint32_t *cap, uint32_t need, size_t elem);

#endif
