/* The tokenizer's internal state, shared by load.c (tokenizer.json → this)
 * and encode.c (text ↔ ids). */
#ifndef KILN_TOK_INTERNAL_H
#define KILN_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "kiln/tokenizer.h"

enum { KN_TOK_PRESENT = 1, KN_TOK_SPECIAL = 2, KN_TOK_ADDED = 4, KN_TOK_NORMALIZED = 8 };

/* One pre-tokenizer step: a regex split (Split, or ByteLevel's GPT-2 regex). */
typedef struct kn_tok_split {
    pcre2_code *re;
    int removed; /* behaviour Removed (matches dropped) rather than Isolated */
} kn_tok_split;

typedef struct kn_tok_merge {
    int32_t a, b;  /* the pair (ids); a = -1 marks an empty slot */
    int32_t out;   /* id of the merged token */
    uint32_t rank; /* lower merges first */
} kn_tok_merge;

struct kn_tokenizer {
    kn_allocator a; /* a copy of the caller's */
    char *name;     /* for messages */
    pcre2_general_context *gctx;

    uint32_t n_tokens;                 /* largest id + 1 */
    uint32_t *tok_off, *tok_len;       /* each id's bytes (raw, not byte-level mapped) in pool */
    uint8_t *tok_flags;                /* KN_TOK_* */
    char *pool;
    size_t pool_len, pool_cap;

    int32_t *vhash; /* raw bytes → id (open addressing, -1 empty) */
    uint32_t vhash_cap;
    kn_tok_merge *mhash; /* (a, b) → merge */
    uint32_t mhash_cap;
    int32_t byte_id[256]; /* the token of each single byte; -1 none */
    int32_t unk_id;       /* -1 none */
    int ignore_merges;

    int32_t *added; /* added token ids, longest content first */
    uint32_t n_added;
    uint8_t added_first[2][32]; /* first bytes of added tokens: [0] raw-matched, [1] normalized */

    int32_t *tpl; /* TemplateProcessing "single": n_pre ids before the text, n_post after */
    uint32_t n_pre, n_post;
    int has_tpl;

    int *norms; /* utf8proc option sets applied in order */
    uint32_t n_norms;
    kn_tok_split *splits;
    uint32_t n_splits;
};

/* Hashes (FNV-1a) shared by the tables built and read. */
uint32_t kn_tok_hash_bytes(const void *p, size_t n);
uint32_t kn_tok_hash_pair(int32_t a, int32_t b);
/* The id whose raw bytes are p[0..n), or -1. */
int32_t kn_tok_lookup(const kn_tokenizer *t, const char *p, size_t n);
/* The merge of (a, b), or NULL. */
const kn_tok_merge *kn_tok_merge_find(const kn_tokenizer *t, int32_t a, int32_t b);

/* pcre2 allocation through the tokenizer's allocator. */
void *kn_tok_pcre_alloc(PCRE2_SIZE n, void *ctx);
void kn_tok_pcre_free(void *p, void *ctx);

/* Reads all of the file at path into *buf (allocated through a, which is not NULL; the caller frees
 * it, also on error) and *len. The buffer starts at first_cap bytes and doubles; oom_what ends the
 * "out of memory" message ("" or " while reading ..."). KN_ERR_IO when it cannot be opened or read. */
kn_status kn_tok_read_file(const char *path, const kn_allocator *a, kn_diag *d, size_t first_cap,
                           const char *oom_what, char **buf, size_t *len);

#endif
