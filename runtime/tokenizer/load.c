/* Loads a Hugging Face tokenizer.json (byte-level BPE) into kn_tokenizer.
 * The JSON is parsed with libjansson and dropped before returning. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <utf8proc.h>

#include "ir/arena.h"
#include "runtime/tokenizer/tok_internal.h"

#define MAX_ID (1 << 24) /* ids above this are refused (real vocabularies are < 300k) */

typedef struct loader {
    kn_tokenizer *t;
    kn_diag *d;
    const char *name;
} loader;

#define BAD(L, ...) (kn_diag_add((L)->d, KN_ERROR, __VA_ARGS__), KN_ERR_INVALID)
#define UNSUP(L, ...) (kn_diag_add((L)->d, KN_ERROR, __VA_ARGS__), KN_ERR_UNSUPPORTED)

static kn_status nomem(loader *L)
{
    kn_diag_add(L->d, KN_ERROR, "%s: out of memory while loading the tokenizer", L->name);
    return KN_ERR_NOMEM;
}

void *kn_tok_pcre_alloc(PCRE2_SIZE n, void *ctx)
{
    const kn_allocator *a = ctx;
    return a->alloc(a->ctx, n);
}

void kn_tok_pcre_free(void *p, void *ctx)
{
    const kn_allocator *a = ctx;
    if (p)
        a->free(a->ctx, p);
}

uint32_t kn_tok_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

uint32_t kn_tok_hash_pair(int32_t a, int32_t b)
{
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (uint32_t)k;
}

int32_t kn_tok_lookup(const kn_tokenizer *t, const char *p, size_t n)
{
    if (!t->vhash_cap)
        return -1;
    uint32_t mask = t->vhash_cap - 1;
    for (uint32_t i = kn_tok_hash_bytes(p, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vhash[i];
        if (id < 0)
            return -1;
        if (t->tok_len[id] == n && memcmp(t->pool + t->tok_off[id], p, n) == 0)
            return id;
    }
}

const kn_tok_merge *kn_tok_merge_find(const kn_tokenizer *t, int32_t a, int32_t b)
{
    if (!t->mhash_cap)
        return NULL;
    uint32_t mask = t->mhash_cap - 1;
    for (uint32_t i = kn_tok_hash_pair(a, b) & mask;; i = (i + 1) & mask) {
        const kn_tok_merge *m = &t->mhash[i];
        if (m->a < 0)
            return NULL;
        if (m->a == a && m->b == b)
            return m;
    }
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest
 * for U+0100 onwards in byte order. Returns the byte for code point c, or -1. */
static int printable_byte(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

static int unicode_to_byte(int32_t c)
{
    if (c >= 0 && c < 256)
        return printable_byte(c) ? c : -1;
    int n = 256;
    for (int b = 0; b < 256; b++)
        if (!printable_byte(b) && n++ == c)
            return b;
    return -1;
}

static kn_status pool_add(loader *L, const char *p, size_t n, uint32_t *off)
{
    kn_tokenizer *t = L->t;
    if (t->pool_len + n > UINT32_MAX)
        return BAD(L, "%s: vocabulary too large", L->name);
    if (t->pool_len + n > t->pool_cap) {
        size_t cap = t->pool_cap ? t->pool_cap * 2 : 4096;
        while (cap < t->pool_len + n)
            cap *= 2;
        char *np = t->a.realloc(t->a.ctx, t->pool, cap);
        if (!np)
            return nomem(L);
        t->pool = np;
        t->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, p, n);
    *off = (uint32_t)t->pool_len;
    t->pool_len += n;
    return KN_OK;
}

static void *zalloc(kn_tokenizer *t, size_t n)
{
    void *p = t->a.alloc(t->a.ctx, n ? n : 1);
    if (p)
        memset(p, 0, n ? n : 1);
    return p;
}

/* The bytes a byte-level vocabulary key stands for. Keys with characters
 * outside the byte map (added tokens' content) are kept as UTF-8. */
static kn_status set_token(loader *L, int32_t id, const char *key, size_t klen, int byte_level)
{
    kn_tokenizer *t = L->t;
    char small[256];
    char *buf = klen <= sizeof small ? small : t->a.alloc(t->a.ctx, klen);
    if (!buf)
        return nomem(L);
    size_t n = 0;
    int ok = byte_level;
    for (size_t i = 0; ok && i < klen;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)key + i, (utf8proc_ssize_t)(klen - i), &c);
        int b = k > 0 ? unicode_to_byte(c) : -1;
        if (b < 0)
            ok = 0;
        else {
            buf[n++] = (char)b;
            i += (size_t)k;
        }
    }
    kn_status s = ok ? pool_add(L, buf, n, &t->tok_off[id]) : pool_add(L, key, klen, &t->tok_off[id]);
    t->tok_len[id] = ok ? (uint32_t)n : (uint32_t)klen;
    if (buf != small)
        t->a.free(t->a.ctx, buf);
    return s;
}

static int get_id(json_t *v, int32_t *id)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_ID)
        return 0;
    *id = (int32_t)json_integer_value(v);
    return 1;
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

static kn_status compile_split(loader *L, const char *pat, size_t len, int literal, int removed, const char *what)
{
    kn_tokenizer *t = L->t;
    int err = 0;
    PCRE2_SIZE at = 0;
    pcre2_compile_context *cc = pcre2_compile_context_create(t->gctx);
    if (!cc)
        return nomem(L);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0),
                                   &err, &at, cc);
    pcre2_compile_context_free(cc);
    if (!re) {
        if (err == PCRE2_ERROR_HEAP_FAILED)
            return nomem(L);
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return BAD(L, "%s: %s: regex does not compile at offset %zu: %s", L->name, what, (size_t)at, (char *)msg);
    }
    kn_tok_split *ns = t->a.realloc(t->a.ctx, t->splits, (t->n_splits + 1) * sizeof *ns);
    if (!ns) {
        pcre2_code_free(re);
        return nomem(L);
    }
    t->splits = ns;
    ns[t->n_splits].re = re;
    ns[t->n_splits].removed = removed;
    t->n_splits++;
    return KN_OK;
}

static const char *GPT2_RE = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static kn_status load_pre(loader *L, json_t *p, int *has_byte_level)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!json_is_object(p) || !type)
        return BAD(L, "%s: pre_tokenizer: expected an object with a string \"type\"", L->name);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "pretokenizers");
        if (!json_is_array(arr))
            return BAD(L, "%s: pre_tokenizer Sequence: \"pretokenizers\" is not an array", L->name);
        for (size_t i = 0; i < json_array_size(arr); i++)
            KN_TRY(load_pre(L, json_array_get(arr, i), has_byte_level));
        return KN_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        json_t *aps = json_object_get(p, "add_prefix_space"), *ur = json_object_get(p, "use_regex");
        if (aps && !json_is_boolean(aps))
            return BAD(L, "%s: pre_tokenizer ByteLevel: \"add_prefix_space\" is not a boolean", L->name);
        if (ur && !json_is_boolean(ur))
            return BAD(L, "%s: pre_tokenizer ByteLevel: \"use_regex\" is not a boolean", L->name);
        if (json_is_true(aps))
            return UNSUP(L, "%s: pre_tokenizer ByteLevel with add_prefix_space=true is not supported", L->name);
        *has_byte_level = 1;
        if (!ur || json_is_true(ur))
            return compile_split(L, GPT2_RE, strlen(GPT2_RE), 0, 0, "pre_tokenizer ByteLevel");
        return KN_OK;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(p, "pattern");
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        json_t *inv = json_object_get(p, "invert");
        json_t *re = json_object_get(pat, "Regex"), *str = json_object_get(pat, "String");
        if (!json_is_object(pat) || !(json_is_string(re) || json_is_string(str)))
            return BAD(L, "%s: pre_tokenizer Split: \"pattern\" must be {\"Regex\": string} or {\"String\": string}",
                       L->name);
        if (!beh)
            return BAD(L, "%s: pre_tokenizer Split: \"behavior\" is not a string", L->name);
        if (inv && !json_is_boolean(inv))
            return BAD(L, "%s: pre_tokenizer Split: \"invert\" is not a boolean", L->name);
        if (json_is_true(inv))
            return UNSUP(L, "%s: pre_tokenizer Split with invert=true is not supported", L->name);
        int removed = !strcmp(beh, "Removed");
        if (!removed && strcmp(beh, "Isolated"))
            return UNSUP(L, "%s: pre_tokenizer Split behavior '%s' is not supported (Isolated, Removed are)",
                         L->name, beh);
        json_t *v = re ? re : str;
        return compile_split(L, json_string_value(v), json_string_length(v), !re, removed, "pre_tokenizer Split");
    }
    return UNSUP(L, "%s: pre_tokenizer type '%s' is not supported (ByteLevel, Split, Sequence are)", L->name, type);
}

static kn_status load_norm(loader *L, json_t *n)
{
    kn_tokenizer *t = L->t;
    const char *type = json_string_value(json_object_get(n, "type"));
    if (!json_is_object(n) || !type)
        return BAD(L, "%s: normalizer: expected an object with a string \"type\"", L->name);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(n, "normalizers");
        if (!json_is_array(arr))
            return BAD(L, "%s: normalizer Sequence: \"normalizers\" is not an array", L->name);
        for (size_t i = 0; i < json_array_size(arr); i++)
            KN_TRY(load_norm(L, json_array_get(arr, i)));
        return KN_OK;
    }
    int opt;
    if (!strcmp(type, "NFC"))
        opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    else if (!strcmp(type, "NFKC"))
        opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(type, "NFD"))
        opt = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    else if (!strcmp(type, "NFKD"))
        opt = UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    else
        return UNSUP(L, "%s: normalizer type '%s' is not supported (NFC, NFKC, NFD, NFKD, Sequence are)", L->name,
                     type);
    int *nn = t->a.realloc(t->a.ctx, t->norms, (t->n_norms + 1) * sizeof *nn);
    if (!nn)
        return nomem(L);
    t->norms = nn;
    nn[t->n_norms++] = opt;
    return KN_OK;
}

/* TemplateProcessing's "single" template: the special tokens' ids before
 * and after $A, added by encode when asked for special tokens. */
static kn_status load_template(loader *L, json_t *pp)
{
    kn_tokenizer *t = L->t;
    json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens");
    if (!json_is_array(single))
        return BAD(L, "%s: post_processor TemplateProcessing: \"single\" is not an array", L->name);
    if (t->has_tpl)
        return UNSUP(L, "%s: post_processor: more than one TemplateProcessing", L->name);
    t->has_tpl = 1;
    int seen_a = 0;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *e = json_array_get(single, i);
        json_t *seq = json_object_get(e, "Sequence"), *sp = json_object_get(e, "SpecialToken");
        if (json_is_object(seq)) {
            const char *which = json_string_value(json_object_get(seq, "id"));
            if (!which || strcmp(which, "A") || seen_a)
                return BAD(L, "%s: post_processor TemplateProcessing: single[%zu]: expected one sequence \"A\"",
                           L->name, i);
            seen_a = 1;
            continue;
        }
        const char *name = json_string_value(json_object_get(sp, "id"));
        json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!json_is_object(sp) || !name)
            return BAD(L, "%s: post_processor TemplateProcessing: single[%zu]: expected Sequence or SpecialToken",
                       L->name, i);
        if (!json_is_array(ids))
            return BAD(L, "%s: post_processor TemplateProcessing: special token '%s' has no \"ids\" array in "
                       "\"special_tokens\"", L->name, name);
        for (size_t k = 0; k < json_array_size(ids); k++) {
            int32_t id;
            if (!get_id(json_array_get(ids, k), &id) || (uint32_t)id >= t->n_tokens)
                return BAD(L, "%s: post_processor TemplateProcessing: special token '%s': id out of range", L->name,
                           name);
            int32_t *nt = t->a.realloc(t->a.ctx, t->tpl, (t->n_pre + t->n_post + 1) * sizeof *nt);
            if (!nt)
                return nomem(L);
            t->tpl = nt;
            nt[t->n_pre + t->n_post] = id;
            if (seen_a)
                t->n_post++;
            else
                t->n_pre++;
        }
    }
    if (!seen_a)
        return BAD(L, "%s: post_processor TemplateProcessing: \"single\" has no $A", L->name);
    return KN_OK;
}

static kn_status load_post(loader *L, json_t *pp)
{
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!json_is_object(pp) || !type)
        return BAD(L, "%s: post_processor: expected an object with a string \"type\"", L->name);
    if (!strcmp(type, "ByteLevel"))
        return KN_OK; /* offsets only */
    if (!strcmp(type, "TemplateProcessing"))
        return load_template(L, pp);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(pp, "processors");
        if (!json_is_array(arr))
            return BAD(L, "%s: post_processor Sequence: \"processors\" is not an array", L->name);
        for (size_t i = 0; i < json_array_size(arr); i++)
            KN_TRY(load_post(L, json_array_get(arr, i)));
        return KN_OK;
    }
    return UNSUP(L, "%s: post_processor '%s' is not supported (ByteLevel, TemplateProcessing, Sequence are)",
                 L->name, type);
}

static kn_status check_model_options(loader *L, json_t *m)
{
    json_t *v;
    if ((v = json_object_get(m, "dropout")) && !json_is_null(v))
        return UNSUP(L, "%s: model: BPE dropout is not supported", L->name);
    if ((v = json_object_get(m, "continuing_subword_prefix")) && !json_is_null(v) &&
        !(json_is_string(v) && json_string_length(v) == 0))
        return UNSUP(L, "%s: model: continuing_subword_prefix is not supported", L->name);
    if ((v = json_object_get(m, "end_of_word_suffix")) && !json_is_null(v) &&
        !(json_is_string(v) && json_string_length(v) == 0))
        return UNSUP(L, "%s: model: end_of_word_suffix is not supported", L->name);
    if (json_is_true(json_object_get(m, "byte_fallback")))
        return UNSUP(L, "%s: model: byte_fallback is not supported (byte-level BPE only)", L->name);
    L->t->ignore_merges = json_is_true(json_object_get(m, "ignore_merges"));
    return KN_OK;
}

/* One merge: ids of both sides and of their concatenation. */
static kn_status add_merge(loader *L, json_t *vocab, json_t *e, size_t rank)
{
    kn_tokenizer *t = L->t;
    const char *sa, *sb;
    size_t la, lb;
    if (json_is_string(e)) {
        sa = json_string_value(e);
        const char *sp = strchr(sa, ' ');
        if (!sp || strchr(sp + 1, ' ') || sp == sa || !sp[1])
            return BAD(L, "%s: model.merges[%zu]: \"%s\" is not two tokens separated by one space", L->name, rank, sa);
        la = (size_t)(sp - sa);
        sb = sp + 1;
        lb = strlen(sb);
    } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) &&
               json_is_string(json_array_get(e, 1))) {
        sa = json_string_value(json_array_get(e, 0));
        la = json_string_length(json_array_get(e, 0));
        sb = json_string_value(json_array_get(e, 1));
        lb = json_string_length(json_array_get(e, 1));
    } else
        return BAD(L, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", L->name, rank);
    char small[512];
    char *key = la + lb + 1 <= sizeof small ? small : t->a.alloc(t->a.ctx, la + lb + 1);
    if (!key)
        return nomem(L);
    memcpy(key, sa, la);
    memcpy(key + la, sb, lb);
    key[la + lb] = 0;
    int32_t ia, ib, io;
    kn_status s = KN_OK;
    json_t *va = json_object_getn(vocab, sa, la), *vb = json_object_getn(vocab, sb, lb);
    json_t *vo = json_object_getn(vocab, key, la + lb);
    if (!get_id(va, &ia) || !get_id(vb, &ib) || !get_id(vo, &io))
        s = BAD(L, "%s: model.merges[%zu]: '%.*s' + '%.*s': %s is not in the vocabulary", L->name, rank, (int)la, sa,
                (int)lb, sb, !va ? "the first token" : !vb ? "the second token" : "the merged token");
    if (key != small)
        t->a.free(t->a.ctx, key);
    if (s != KN_OK)
        return s;
    uint32_t mask = t->mhash_cap - 1;
    for (uint32_t i = kn_tok_hash_pair(ia, ib) & mask;; i = (i + 1) & mask) {
        kn_tok_merge *m = &t->mhash[i];
        if (m->a == ia && m->b == ib)
            return KN_OK; /* a repeated merge keeps its first (lowest) rank */
        if (m->a < 0) {
            *m = (kn_tok_merge){ia, ib, io, (uint32_t)rank};
            return KN_OK;
        }
    }
}

static kn_status load_added(loader *L, json_t *arr)
{
    kn_tokenizer *t = L->t;
    size_t n = json_array_size(arr);
    if (!n)
        return KN_OK;
    t->added = t->a.alloc(t->a.ctx, n * sizeof *t->added);
    if (!t->added)
        return nomem(L);
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        int32_t id;
        json_t *content = json_object_get(e, "content");
        if (!json_is_object(e) || !get_id(json_object_get(e, "id"), &id) || !json_is_string(content) ||
            json_string_length(content) == 0)
            return BAD(L, "%s: added_tokens[%zu]: expected {\"id\": integer in [0, %d), \"content\": non-empty string}",
                       L->name, i, MAX_ID);
        static const char *const unsup[] = {"single_word", "lstrip", "rstrip"};
        for (int k = 0; k < 3; k++)
            if (json_is_true(json_object_get(e, unsup[k])))
                return UNSUP(L, "%s: added_tokens[%zu] '%s': %s=true is not supported", L->name, i,
                             json_string_value(content), unsup[k]);
        if ((uint32_t)id >= t->n_tokens)
            return BAD(L, "%s: added_tokens[%zu]: id %d out of range", L->name, i, (int)id);
        KN_TRY(set_token(L, id, json_string_value(content), json_string_length(content), 0));
        t->tok_flags[id] |= KN_TOK_PRESENT | KN_TOK_ADDED;
        if (json_is_true(json_object_get(e, "special")))
            t->tok_flags[id] |= KN_TOK_SPECIAL;
        /* "normalized" (default: true for non-special tokens, as in
         * Hugging Face): matched in the normalized text. */
        json_t *norm = json_object_get(e, "normalized");
        if (norm && !json_is_boolean(norm))
            return BAD(L, "%s: added_tokens[%zu]: \"normalized\" is not a boolean", L->name, i);
        int normalized = norm ? json_is_true(norm) : !(t->tok_flags[id] & KN_TOK_SPECIAL);
        if (normalized)
            t->tok_flags[id] |= KN_TOK_NORMALIZED;
        uint8_t b0 = (uint8_t)json_string_value(content)[0];
        t->added_first[normalized][b0 >> 3] |= (uint8_t)(1u << (b0 & 7));
        /* insertion sort, longest content first */
        uint32_t j = t->n_added++;
        while (j > 0 && t->tok_len[t->added[j - 1]] < t->tok_len[id]) {
            t->added[j] = t->added[j - 1];
            j--;
        }
        t->added[j] = id;
    }
    return KN_OK;
}

static kn_status load_json(loader *L, json_t *root)
{
    kn_tokenizer *t = L->t;
    if (!json_is_object(root))
        return BAD(L, "%s: the top level is not a JSON object", L->name);
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return BAD(L, "%s: \"model\" is missing or not an object", L->name);
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (mtype && strcmp(mtype, "BPE"))
        return UNSUP(L, "%s: model type '%s' is not supported (BPE is)", L->name, mtype);
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    if (!json_is_object(vocab))
        return BAD(L, "%s: model.vocab is missing or not an object", L->name);
    if (!json_is_array(merges))
        return BAD(L, "%s: model.merges is missing or not an array", L->name);
    KN_TRY(check_model_options(L, model));
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_array(added) && !json_is_null(added))
        return BAD(L, "%s: \"added_tokens\" is not an array", L->name);

    /* size the id space */
    const char *key;
    json_t *v;
    int64_t max_id = -1;
    json_object_foreach(vocab, key, v) {
        int32_t id;
        if (!get_id(v, &id))
            return BAD(L, "%s: model.vocab['%s']: expected an integer id in [0, %d)", L->name, key, MAX_ID);
        if (id > max_id)
            max_id = id;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        int32_t id;
        if (get_id(json_object_get(json_array_get(added, i), "id"), &id) && id > max_id)
            max_id = id;
    }
    if (max_id < 0)
        return BAD(L, "%s: the vocabulary is empty", L->name);
    t->n_tokens = (uint32_t)max_id + 1;
    t->tok_off = zalloc(t, t->n_tokens * sizeof *t->tok_off);
    t->tok_len = zalloc(t, t->n_tokens * sizeof *t->tok_len);
    t->tok_flags = zalloc(t, t->n_tokens);
    if (!t->tok_off || !t->tok_len || !t->tok_flags)
        return nomem(L);

    /* decoder and pre-tokenizer: byte-level only */
    json_t *dec = json_object_get(root, "decoder");
    const char *dtype = json_string_value(json_object_get(dec, "type"));
    if (!dtype || strcmp(dtype, "ByteLevel"))
        return UNSUP(L, "%s: decoder %s%s%s is not supported (ByteLevel is)", L->name, dtype ? "'" : "",
                     dtype ? dtype : "(none)", dtype ? "'" : "");
    json_t *pp = json_object_get(root, "post_processor");
    if (pp && !json_is_null(pp))
        KN_TRY(load_post(L, pp));
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm))
        KN_TRY(load_norm(L, norm));
    json_t *pre = json_object_get(root, "pre_tokenizer");
    int has_byte_level = 0;
    if (pre && !json_is_null(pre))
        KN_TRY(load_pre(L, pre, &has_byte_level));
    if (!has_byte_level)
        return UNSUP(L, "%s: only byte-level BPE is supported: the pre_tokenizer has no ByteLevel step", L->name);

    json_object_foreach(vocab, key, v) {
        int32_t id = (int32_t)json_integer_value(v);
        KN_TRY(set_token(L, id, key, strlen(key), 1));
        t->tok_flags[id] |= KN_TOK_PRESENT;
    }
    if (added && !json_is_null(added))
        KN_TRY(load_added(L, added));

    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    t->vhash_cap = pow2_at_least((uint64_t)t->n_tokens * 2);
    t->vhash = t->a.alloc(t->a.ctx, t->vhash_cap * sizeof *t->vhash);
    if (!t->vhash)
        return nomem(L);
    memset(t->vhash, 0xff, t->vhash_cap * sizeof *t->vhash);
    for (uint32_t id = 0; id < t->n_tokens; id++) {
        if (!(t->tok_flags[id] & KN_TOK_PRESENT) || (t->tok_flags[id] & KN_TOK_ADDED))
            continue;
        const char *p = t->pool + t->tok_off[id];
        if (t->tok_len[id] == 1 && t->byte_id[(uint8_t)p[0]] < 0)
            t->byte_id[(uint8_t)p[0]] = (int32_t)id;
        if (kn_tok_lookup(t, p, t->tok_len[id]) >= 0)
            continue; /* two keys for the same bytes: the first id wins */
        uint32_t mask = t->vhash_cap - 1, i = kn_tok_hash_bytes(p, t->tok_len[id]) & mask;
        while (t->vhash[i] >= 0)
            i = (i + 1) & mask;
        t->vhash[i] = (int32_t)id;
    }
    t->unk_id = -1;
    json_t *unk = json_object_get(model, "unk_token");
    if (json_is_string(unk)) {
        json_t *uid = json_object_get(vocab, json_string_value(unk));
        if (!get_id(uid, &t->unk_id))
            return BAD(L, "%s: model.unk_token '%s' is not in the vocabulary", L->name, json_string_value(unk));
    }

    size_t nm = json_array_size(merges);
    t->mhash_cap = pow2_at_least((uint64_t)nm * 2);
    t->mhash = t->a.alloc(t->a.ctx, t->mhash_cap * sizeof *t->mhash);
    if (!t->mhash)
        return nomem(L);
    for (uint32_t i = 0; i < t->mhash_cap; i++)
        t->mhash[i].a = t->mhash[i].b = -1;
    for (size_t i = 0; i < nm; i++)
        KN_TRY(add_merge(L, vocab, json_array_get(merges, i), i));
    return KN_OK;
}

kn_status kn_tokenizer_load_memory(const void *data, size_t size, const char *name, const kn_allocator *a,
                                   kn_diag *d, kn_tokenizer **out)
{
    *out = NULL;
    if (!name)
        name = "<memory>";
    if (!a)
        a = kn_default_allocator();
    kn_tokenizer *t = a->alloc(a->ctx, sizeof *t);
    if (!t) {
        kn_diag_add(d, KN_ERROR, "%s: out of memory while loading the tokenizer", name);
        return KN_ERR_NOMEM;
    }
    memset(t, 0, sizeof *t);
    t->a = *a;
    loader L = {t, d, name};
    size_t nl = strlen(name);
    t->name = t->a.alloc(t->a.ctx, nl + 1);
    t->gctx = t->name ? pcre2_general_context_create(kn_tok_pcre_alloc, kn_tok_pcre_free, &t->a) : NULL;
    if (!t->name || !t->gctx) {
        kn_tokenizer_free(t);
        return nomem(&L);
    }
    memcpy(t->name, name, nl + 1);
    L.name = t->name;

    json_error_t err;
    json_t *root = json_loadb(data, size, JSON_REJECT_DUPLICATES, &err);
    kn_status s;
    if (!root)
        s = BAD(&L, "%s:%d:%d: not valid JSON: %s", name, err.line, err.column, err.text);
    else
        s = load_json(&L, root);
    json_decref(root);
    if (s != KN_OK) {
        kn_tokenizer_free(t);
        return s;
    }
    *out = t;
    return KN_OK;
}

kn_status kn_tok_read_file(const char *path, const kn_allocator *a, kn_diag *d, size_t first_cap,
                           const char *oom_what, char **buf_out, size_t *len_out)
{
    *buf_out = NULL;
    *len_out = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        kn_diag_add(d, KN_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    kn_status s = KN_OK;
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : first_cap;
            char *nb = a->realloc(a->ctx, buf, nc);
            if (!nb) {
                kn_diag_add(d, KN_ERROR, "%s: out of memory%s", path, oom_what);
                s = KN_ERR_NOMEM;
                break;
            }
            buf = nb;
            cap = nc;
        }
        size_t k = fread(buf + len, 1, cap - len, f);
        len += k;
        if (k == 0) {
            if (ferror(f)) {
                kn_diag_add(d, KN_ERROR, "%s: read error: %s", path, strerror(errno));
                s = KN_ERR_IO;
            }
            break;
        }
    }
    fclose(f);
    *buf_out = buf;
    *len_out = len;
    return s;
}

kn_status kn_tokenizer_load_file(const char *path, const kn_allocator *a, kn_diag *d, kn_tokenizer **out)
{
    *out = NULL;
    if (!a)
        a = kn_default_allocator();
    char *buf;
    size_t len;
    kn_status s = kn_tok_read_file(path, a, d, (size_t)1 << 16, " while reading the tokenizer", &buf, &len);
    if (s == KN_OK)
        s = kn_tokenizer_load_memory(buf, len, path, a, d, out);
    if (buf)
        a->free(a->ctx, buf);
    return s;
}

void kn_tokenizer_free(kn_tokenizer *t)
{
    if (!t)
        return;
    kn_allocator a = t->a;
    for (uint32_t i = 0; i < t->n_splits; i++)
        pcre2_code_free(t->splits[i].re);
    pcre2_general_context_free(t->gctx); /* frees through a, a copy of which it points at: t->a */
    void *ptrs[] = {t->name, t->tok_off, t->tok_len, t->tok_flags, t->pool, t->vhash,
                    t->mhash, t->added, t->norms, t->splits, t->tpl};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        if (ptrs[i])
            a.free(a.ctx, ptrs[i]);
    a.free(a.ctx, t);
}

size_t kn_tokenizer_vocab_size(const kn_tokenizer *t) { return t->n_tokens; }

void kn_tokenizer_release(const kn_tokenizer *t, void *p)
{
    if (p)
        t->a.free(t->a.ctx, p);
}
