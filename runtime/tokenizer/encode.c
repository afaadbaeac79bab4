/* Text → ids (added tokens, normalizers, regex pre-tokenizers, byte-level
 * BPE) and ids → text. */
#include <string.h>

#include <utf8proc.h>

#include "runtime/tokenizer/tok_internal.h"

typedef struct piece {
    size_t off, len;
} piece;

/* Per-call state: every buffer here goes through the tokenizer's allocator. */
typedef struct enc {
    const kn_tokenizer *t;
    kn_diag *d;
    int32_t *ids;
    size_t n, cap;
    piece *pa, *pb; /* pre-tokenizer pieces: current list and the next one */
    size_t na, nb, capa, capb;
    int32_t *sym; /* BPE symbols of one word: ids, next and prev links */
    size_t sym_cap;
    struct cand *heap; /* BPE merge candidates */
    size_t heap_cap;
    int32_t *norm; /* normalizer buffer (code points, then UTF-8 in place) */
    size_t norm_cap;
    pcre2_match_data *md;
    pcre2_match_context *mc;
} enc;

static kn_status nomem(enc *e)
{
    kn_diag_add(e->d, KN_ERROR, "%s: out of memory while encoding", e->t->name);
    return KN_ERR_NOMEM;
}

/* Grows *p (elements of `elem` bytes, capacity *cap) to hold `need`. */
static int grow(const kn_tokenizer *t, void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 1;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *np = t->a.realloc(t->a.ctx, *p, nc * elem);
    if (!np)
        return 0;
    *p = np;
    *cap = nc;
    return 1;
}

static kn_status emit(enc *e, int32_t id)
{
    if (!grow(e->t, (void **)&e->ids, &e->cap, e->n + 1, sizeof *e->ids))
        return nomem(e);
    e->ids[e->n++] = id;
    return KN_OK;
}

static kn_status add_piece(enc *e, size_t off, size_t len)
{
    if (!len)
        return KN_OK;
    if (!grow(e->t, (void **)&e->pb, &e->capb, e->nb + 1, sizeof *e->pb))
        return nomem(e);
    e->pb[e->nb++] = (piece){off, len};
    return KN_OK;
}

/* Splits every current piece of s by one regex (HF Split, Isolated or Removed). */
static kn_status split(enc *e, const kn_tok_split *sp, const char *s)
{
    e->nb = 0;
    for (size_t i = 0; i < e->na; i++) {
        size_t off = e->pa[i].off, len = e->pa[i].len, at = 0, gap = 0;
        const PCRE2_SPTR sub = (PCRE2_SPTR)s + off;
        while (at <= len) {
            int rc = pcre2_match(sp->re, sub, len, at, PCRE2_NO_UTF_CHECK, e->md, e->mc);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc == PCRE2_ERROR_NOMEMORY || rc == PCRE2_ERROR_HEAPLIMIT)
                return nomem(e);
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                kn_diag_add(e->d, KN_ERROR, "%s: pre-tokenizer regex failed: %s", e->t->name, (char *)msg);
                return KN_ERR_INVALID;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
            size_t ms = ov[0], me = ov[1];
            if (me == ms) { /* empty match: no piece; step one character */
                at = ms + 1;
                while (at < len && (sub[at] & 0xC0) == 0x80)
                    at++;
                continue;
            }
            KN_TRY(add_piece(e, off + gap, ms - gap));
            if (!sp->removed)
                KN_TRY(add_piece(e, off + ms, me - ms));
            gap = at = me;
        }
        KN_TRY(add_piece(e, off + gap, len - gap));
    }
    piece *tp = e->pa;
    size_t tc = e->capa;
    e->pa = e->pb;
    e->capa = e->capb;
    e->na = e->nb;
    e->pb = tp;
    e->capb = tc;
    return KN_OK;
}

/* A candidate merge of the symbols at `pos` and the one after it. */
typedef struct cand {
    uint32_t rank, pos;
    int32_t a, b, out;
} cand;

static int cand_less(const cand *x, const cand *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(cand *h, size_t *n, cand c)
{
    size_t i = (*n)++;
    while (i > 0 && cand_less(&c, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = c;
}

static cand heap_pop(cand *h, size_t *n)
{
    cand top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && cand_less(&h[c + 1], &h[c]))
            c++;
        if (!cand_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

/* Byte-level BPE of one word: start from one token per byte, then apply
 * the lowest-ranked merge of adjacent symbols (leftmost on ties) until none
 * applies, as Hugging Face's word.rs does: symbols in a linked list, merge
 * candidates in a heap, stale candidates skipped when popped. O(n log n). */
static kn_status bpe(enc *e, const char *w, size_t n)
{
    const kn_tokenizer *t = e->t;
    if (t->ignore_merges) {
        int32_t id = kn_tok_lookup(t, w, n);
        if (id >= 0)
            return emit(e, id);
    }
    if (n > UINT32_MAX / 4) {
        kn_diag_add(e->d, KN_ERROR, "%s: a pre-tokenized word of %zu bytes is too long", t->name, n);
        return KN_ERR_LIMIT;
    }
    /* sym[i] = id, sym[n + i] = next index (n = none), sym[2n + i] = prev (-1 = none) */
    if (!grow(t, (void **)&e->sym, &e->sym_cap, 3 * n, sizeof *e->sym) ||
        !grow(t, (void **)&e->heap, &e->heap_cap, n, sizeof *e->heap))
        return nomem(e);
    int32_t *id = e->sym, *next = e->sym + n, *prev = e->sym + 2 * n;
    for (size_t i = 0; i < n; i++) {
        int32_t b = t->byte_id[(uint8_t)w[i]];
        if (b < 0) {
            if (t->unk_id < 0) {
                kn_diag_add(e->d, KN_ERROR, "%s: byte 0x%02x has no token and there is no unk_token", t->name,
                            (unsigned)(uint8_t)w[i]);
                return KN_ERR_INVALID;
            }
            b = t->unk_id;
        }
        id[i] = b;
        next[i] = (int32_t)(i + 1);
        prev[i] = (int32_t)i - 1;
    }
    size_t nh = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        const kn_tok_merge *m = kn_tok_merge_find(t, id[i], id[i + 1]);
        if (m)
            heap_push(e->heap, &nh, (cand){m->rank, (uint32_t)i, id[i], id[i + 1], m->out});
    }
    while (nh) {
        cand c = heap_pop(e->heap, &nh);
        int32_t r = next[c.pos];
        if (id[c.pos] != c.a || r >= (int32_t)n || id[r] != c.b)
            continue; /* stale: a side was merged away or changed */
        id[c.pos] = c.out;
        next[c.pos] = next[r];
        if (next[r] < (int32_t)n)
            prev[next[r]] = (int32_t)c.pos;
        id[r] = -1; /* dead */
        /* at most two new candidates per merge (the heap stays under 2n) */
        if (!grow(t, (void **)&e->heap, &e->heap_cap, nh + 2, sizeof *e->heap))
            return nomem(e);
        int32_t p = prev[c.pos], q = next[c.pos];
        const kn_tok_merge *m;
        if (p >= 0 && (m = kn_tok_merge_find(t, id[p], id[c.pos])))
            heap_push(e->heap, &nh, (cand){m->rank, (uint32_t)p, id[p], id[c.pos], m->out});
        if (q < (int32_t)n && (m = kn_tok_merge_find(t, id[c.pos], id[q])))
            heap_push(e->heap, &nh, (cand){m->rank, c.pos, id[c.pos], id[q], m->out});
    }
    for (int32_t i = 0; i < (int32_t)n; i = next[i])
        KN_TRY(emit(e, id[i]));
    return KN_OK;
}

/* Pre-tokenizes and BPE-encodes normalized text with no added token. */
static kn_status words(enc *e, const char *s, size_t len)
{
    const kn_tokenizer *t = e->t;
    if (!len)
        return KN_OK;
    e->na = 0;
    if (!grow(t, (void **)&e->pa, &e->capa, 1, sizeof *e->pa))
        return nomem(e);
    e->pa[e->na++] = (piece){0, len};
    for (uint32_t i = 0; i < t->n_splits; i++)
        KN_TRY(split(e, &t->splits[i], s));
    for (size_t i = 0; i < e->na; i++)
        KN_TRY(bpe(e, s + e->pa[i].off, e->pa[i].len));
    return KN_OK;
}

static kn_status split_added(enc *e, const char *text, size_t len, int normalized);

/* Normalizes text that has no raw-matched added token, then goes on. */
static kn_status segment(enc *e, const char *s, size_t len)
{
    const kn_tokenizer *t = e->t;
    if (!len)
        return KN_OK;
    for (uint32_t i = 0; i < t->n_norms; i++) {
        int opt = t->norms[i];
        utf8proc_ssize_t m = utf8proc_decompose((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, NULL, 0, opt);
        if (m < 0) {
            kn_diag_add(e->d, KN_ERROR, "%s: normalizer: %s", t->name, utf8proc_errmsg(m));
            return KN_ERR_INVALID;
        }
        /* The UTF-8 result is written over the code points in place; a
         * second normalizer reads the first's output, so copy it aside. */
        size_t need = (size_t)m + 1 + (i ? (len + 3) / 4 + 1 : 0);
        if (!grow(t, (void **)&e->norm, &e->norm_cap, need, sizeof *e->norm))
            return nomem(e);
        if (i)
            s = (const char *)e->norm; /* the previous output, possibly moved */
        const char *src = s;
        if (i) {
            memmove(e->norm + m + 1, s, len);
            src = (const char *)(e->norm + m + 1);
        }
        m = utf8proc_decompose((const utf8proc_uint8_t *)src, (utf8proc_ssize_t)len, e->norm, m, opt);
        m = m < 0 ? m : utf8proc_reencode(e->norm, m, opt);
        if (m < 0) {
            kn_diag_add(e->d, KN_ERROR, "%s: normalizer: %s", t->name, utf8proc_errmsg(m));
            return KN_ERR_INVALID;
        }
        s = (const char *)e->norm;
        len = (size_t)m;
    }
    /* added tokens marked "normalized" are matched in the normalized text */
    return split_added(e, s, len, 1);
}

/* The longest added token starting at text[p] (those matched after
 * normalizing when `normalized`, the others when not), or -1. */
static int32_t added_at(const kn_tokenizer *t, const char *text, size_t len, size_t p, int normalized)
{
    uint8_t b = (uint8_t)text[p];
    if (!(t->added_first[normalized][b >> 3] & (1u << (b & 7))))
        return -1;
    for (uint32_t i = 0; i < t->n_added; i++) {
        int32_t id = t->added[i];
        size_t n = t->tok_len[id];
        if (!(t->tok_flags[id] & KN_TOK_NORMALIZED) == !normalized && n <= len - p &&
            memcmp(text + p, t->pool + t->tok_off[id], n) == 0)
            return id;
    }
    return -1;
}

/* Cuts the added tokens of one kind out of text; what lies between goes on
 * to the normalizers (raw text) or to the pre-tokenizers (normalized). */
static kn_status split_added(enc *e, const char *text, size_t len, int normalized)
{
    const kn_tokenizer *t = e->t;
    size_t start = 0;
    for (size_t p = 0; p < len;) {
        int32_t id = added_at(t, text, len, p, normalized);
        if (id < 0) {
            p++;
            continue;
        }
        KN_TRY(normalized ? words(e, text + start, p - start) : segment(e, text + start, p - start));
        KN_TRY(emit(e, id));
        p += t->tok_len[id];
        start = p;
    }
    return normalized ? words(e, text + start, len - start) : segment(e, text + start, len - start);
}

static kn_status encode(enc *e, const char *text, size_t len)
{
    const kn_tokenizer *t = e->t;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) {
            kn_diag_add(e->d, KN_ERROR, "%s: text is not valid UTF-8 at byte %zu", t->name, i);
            return KN_ERR_INVALID;
        }
        i += (size_t)k;
    }
    if (t->n_splits) {
        e->mc = pcre2_match_context_create(t->gctx);
        e->md = e->mc ? pcre2_match_data_create(1, t->gctx) : NULL;
        if (!e->md)
            return nomem(e);
    }
    return split_added(e, text, len, 0);
}

kn_status kn_tokenizer_encode(const kn_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids,
                              size_t *n, kn_diag *d)
{
    *ids = NULL;
    *n = 0;
    enc e = {.t = t, .d = d};
    kn_status s = KN_OK;
    for (uint32_t i = 0; add_special && s == KN_OK && i < t->n_pre; i++)
        s = emit(&e, t->tpl[i]);
    if (s == KN_OK)
        s = encode(&e, text, len);
    for (uint32_t i = 0; add_special && s == KN_OK && i < t->n_post; i++)
        s = emit(&e, t->tpl[t->n_pre + i]);
    void *scratch[] = {e.pa, e.pb, e.sym, e.heap, e.norm};
    for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++)
        kn_tokenizer_release(t, scratch[i]);
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mc);
    if (s != KN_OK) {
        kn_tokenizer_release(t, e.ids);
        return s;
    }
    *ids = e.ids;
    *n = e.n;
    return KN_OK;
}

kn_status kn_tokenizer_decode(const kn_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                              size_t *len, kn_diag *d)
{
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= t->n_tokens || !(t->tok_flags[ids[i]] & KN_TOK_PRESENT)) {
            kn_diag_add(d, KN_ERROR, "%s: decode: id %d (position %zu) is not in the vocabulary of %u", t->name,
                        (int)ids[i], i, t->n_tokens);
            return KN_ERR_INVALID;
        }
        if (!(skip_special && (t->tok_flags[ids[i]] & KN_TOK_SPECIAL)))
            total += t->tok_len[ids[i]];
    }
    char *out = t->a.alloc(t->a.ctx, total + 1);
    if (!out) {
        kn_diag_add(d, KN_ERROR, "%s: out of memory while decoding", t->name);
        return KN_ERR_NOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (skip_special && (t->tok_flags[id] & KN_TOK_SPECIAL))
            continue;
        memcpy(out + k, t->pool + t->tok_off[id], t->tok_len[id]);
        k += t->tok_len[id];
    }
    out[k] = 0;
    *text = out;
    *len = k;
    return KN_OK;
}

kn_status kn_tokenizer_token_id(const kn_tokenizer *t, const char *name, int32_t *id, kn_diag *d)
{
    size_t n = strlen(name);
    for (uint32_t i = 0; i < t->n_added; i++) {
        int32_t a = t->added[i];
        if (t->tok_len[a] == n && memcmp(t->pool + t->tok_off[a], name, n) == 0) {
            *id = a;
            return KN_OK;
        }
    }
    kn_diag_add(d, KN_ERROR, "%s: unknown special token '%s'", t->name, name);
    return KN_ERR_INVALID;
}
