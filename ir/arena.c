/* Arena and allocator helpers: every heap byte kiln uses passes through a
 * kn_allocator, so tests can fail any single allocation. */
#include "ir/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

static void *default_alloc(void *ctx, size_t size) { (void)ctx; return malloc(size); }
static void *default_realloc(void *ctx, void *p, size_t size) { (void)ctx; return realloc(p, size); }
static void default_free(void *ctx, void *p) { (void)ctx; free(p); }

static const kn_allocator default_allocator = {default_alloc, default_realloc, default_free, NULL};

const kn_allocator *kn_default_allocator(void) { return &default_allocator; }

void *kn_mem_alloc(const kn_allocator *a, size_t size)
{
    if (!a)
        a = &default_allocator;
    return a->alloc(a->ctx, size ? size : 1);
}

void *kn_mem_realloc(const kn_allocator *a, void *p, size_t size)
{
    if (!a)
        a = &default_allocator;
    return a->realloc(a->ctx, p, size ? size : 1);
}

void kn_mem_free(const kn_allocator *a, void *p)
{
    if (!p)
        return;
    if (!a)
        a = &default_allocator;
    a->free(a->ctx, p);
}

kn_status kn_mem_grow(const kn_allocator *a, void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return KN_OK;
    uint64_t n = *cap ? (uint64_t)*cap : 8;
    while (n < need)
        n *= 2;
    if (n > UINT32_MAX - 1)
        n = UINT32_MAX - 1;
    if (n < need || n > SIZE_MAX / elem)
        return KN_ERR_LIMIT;
    void *p = kn_mem_realloc(a, *arr, (size_t)n * elem);
    if (!p)
        return KN_ERR_NOMEM;
    *arr = p;
    *cap = (uint32_t)n;
    return KN_OK;
}

/* ---- arena ---- */

typedef struct block {
    struct block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
} block;

struct kn_arena {
    const kn_allocator *a;
    block *head;
    size_t total_used;
};

#define ARENA_BLOCK (64u * 1024u)
#define HUGE_MIN (8u << 20) /* one-off blocks from here on are hinted for huge pages */

/* A weight-sized block (a converted or concatenated constant: hundreds of
 * MB for a 1B model) is written once, page by page: with 4 KiB pages that
 * is one page fault per 4 KiB, which costs seconds of a compile. Where the
 * kernel offers transparent huge pages on request, ask for them on the
 * block's 2 MiB-aligned interior (a hint: nothing changes if refused). */
static void hint_huge(void *p, size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1), hi = ((uintptr_t)p + n) & ~(huge - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}
#define ALIGN 16u
#define HDR ((sizeof(block) + ALIGN - 1) & ~(size_t)(ALIGN - 1))

kn_arena *kn_arena_create(const kn_allocator *a)
{
    kn_arena *ar = kn_mem_alloc(a, sizeof *ar);
    if (!ar)
        return NULL;
    ar->a = a;
    ar->head = NULL;
    ar->total_used = 0;
    return ar;
}

static void free_blocks(kn_arena *ar, block *b)
{
    while (b) {
        block *n = b->next;
        kn_mem_free(ar->a, b);
        b = n;
    }
}

void kn_arena_destroy(kn_arena *ar)
{
    if (!ar)
        return;
    free_blocks(ar, ar->head);
    kn_mem_free(ar->a, ar);
}

void kn_arena_reset(kn_arena *ar)
{
    if (!ar || !ar->head)
        return;
    block *last = ar->head;
    while (last->next)
        last = last->next;
    /* keep the oldest block (the first one made), drop the rest */
    block *b = ar->head;
    while (b != last) {
        block *n = b->next;
        kn_mem_free(ar->a, b);
        b = n;
    }
    last->used = 0;
    memset((char *)last + HDR, 0, last->size);
    ar->head = last;
    ar->total_used = 0;
}

void *kn_arena_alloc_uninit(kn_arena *ar, size_t size)
{
    if (size == 0)
        size = 1;
    if (size > SIZE_MAX - 2 * ALIGN - HDR)
        return NULL;
    size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    block *b = ar->head;
    if (!b || b->size - b->used < size) {
        size_t bs = size > ARENA_BLOCK ? size : ARENA_BLOCK;
        block *nb = kn_mem_alloc(ar->a, HDR + bs);
        if (!nb)
            return NULL;
        nb->size = bs;
        nb->used = 0;
        if (bs >= HUGE_MIN)
            hint_huge((char *)nb + HDR, bs);
        if (b && size > ARENA_BLOCK) {
            /* big one-off: put it behind the head so the head keeps its room */
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            ar->head = nb;
        }
        b = nb;
    }
    void *p = (char *)b + HDR + b->used;
    b->used += size;
    ar->total_used += size;
    return p;
}

void *kn_arena_alloc(kn_arena *ar, size_t size)
{
    void *p = kn_arena_alloc_uninit(ar, size);
    if (p)
        memset(p, 0, size ? size : 1);
    return p;
}

void *kn_arena_dup(kn_arena *ar, const void *src, size_t n)
{
    void *p = kn_arena_alloc_uninit(ar, n);
    if (!p)
        return NULL;
    if (n)
        memcpy(p, src, n);
    /* the alignment padding reads as zero, as kn_arena_alloc's would */
    size_t padded = ((n ? n : 1) + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    memset((char *)p + n, 0, padded - n);
    return p;
}

size_t kn_arena_used(const kn_arena *ar) { return ar ? ar->total_used : 0; }
