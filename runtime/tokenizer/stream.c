/* Streaming detokenization with stop strings (kn_text_stream in
 * include/kiln/tokenizer.h): text is released only once no stop string can
 * start inside it and it ends on a whole UTF-8 character. */
#include <stdlib.h>
#include <string.h>

#include "kiln/tokenizer.h"

struct kn_text_stream {
    kn_allocator a;
    const kn_tokenizer *tok;
    bool skip_special;
    char **stops;
    size_t *stop_len;
    size_t n_stops, max_stop;
    char *pending; /* decoded, not yet released */
    size_t n_pending, cap_pending;
    char *out;     /* what the last call released */
    size_t cap_out;
    int stopped;   /* index of the stop string that completed, -1 none */
};

void kn_text_stream_free(kn_text_stream *s)
{
    if (!s)
        return;
    kn_allocator a = s->a;
    for (size_t i = 0; s->stops && i < s->n_stops; i++)
        a.free(a.ctx, s->stops[i]);
    a.free(a.ctx, s->stops);
    a.free(a.ctx, s->stop_len);
    a.free(a.ctx, s->pending);
    a.free(a.ctx, s->out);
    a.free(a.ctx, s);
}

static kn_status nomem(kn_diag *d)
{
    kn_diag_add(d, KN_ERROR, "text stream: out of memory");
    return KN_ERR_NOMEM;
}

kn_status kn_text_stream_create(const kn_tokenizer *tok, const char *const *stops, size_t n_stops, bool skip_special,
                                const kn_allocator *a, kn_diag *d, kn_text_stream **out)
{
    *out = NULL;
    for (size_t i = 0; i < n_stops; i++)
        if (!stops || !stops[i] || !*stops[i]) {
            kn_diag_add(d, KN_ERROR, "stop string %zu is empty", i);
            return KN_ERR_INVALID;
        }
    if (!a)
        a = kn_default_allocator();
    kn_text_stream *s = a->alloc(a->ctx, sizeof *s);
    if (!s)
        return nomem(d);
    memset(s, 0, sizeof *s);
    s->a = *a;
    s->tok = tok;
    s->skip_special = skip_special;
    s->stopped = -1;
    s->stops = a->alloc(a->ctx, (n_stops + 1) * sizeof *s->stops);
    s->stop_len = a->alloc(a->ctx, (n_stops + 1) * sizeof *s->stop_len);
    if (!s->stops || !s->stop_len) {
        kn_text_stream_free(s);
        return nomem(d);
    }
    for (size_t i = 0; i < n_stops; i++) {
        size_t n = strlen(stops[i]);
        s->stops[i] = a->alloc(a->ctx, n + 1);
        if (!s->stops[i]) {
            kn_text_stream_free(s);
            return nomem(d);
        }
        s->n_stops = i + 1;
        memcpy(s->stops[i], stops[i], n + 1);
        s->stop_len[i] = n;
        if (n > s->max_stop)
            s->max_stop = n;
    }
    *out = s;
    return KN_OK;
}

static bool reserve(const kn_allocator *a, char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t nc = *cap ? *cap : 256;
    while (nc < need)
        nc *= 2;
    char *np = a->realloc(a->ctx, *p, nc);
    if (!np)
        return false;
    *p = np;
    *cap = nc;
    return true;
}

/* Length of the longest proper prefix of a UTF-8 character at the end of
 * p[0..n) (0 when it ends on a whole character or on invalid bytes). */
static size_t partial_utf8(const unsigned char *p, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = p[n - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back */
        size_t need = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Releases what is settled in pending into out. */
static kn_status settle(kn_text_stream *s, const char **text, size_t *len, bool *stopped, kn_diag *d)
{
    size_t n = s->n_pending, emit = n;
    /* a complete stop string: the earliest one wins */
    size_t best = SIZE_MAX;
    for (size_t k = 0; k < s->n_stops; k++) {
        size_t L = s->stop_len[k];
        for (size_t i = 0; L <= n && i <= n - L && i < best; i++)
            if (!memcmp(s->pending + i, s->stops[k], L)) {
                best = i;
                s->stopped = (int)k;
                break;
            }
    }
    if (best != SIZE_MAX) {
        emit = best;
    } else {
        /* hold back the longest suffix that starts a stop string */
        size_t from = n > s->max_stop ? n - s->max_stop + 1 : 0;
        for (size_t i = from; i < n; i++) {
            bool starts = false;
            for (size_t k = 0; k < s->n_stops && !starts; k++)
                starts = n - i < s->stop_len[k] && !memcmp(s->pending + i, s->stops[k], n - i);
            if (starts) {
                emit = i;
                break;
            }
        }
        size_t part = partial_utf8((const unsigned char *)s->pending, n);
        if (n - part < emit)
            emit = n - part;
    }
    if (!reserve(&s->a, &s->out, &s->cap_out, emit + 1))
        return nomem(d);
    memcpy(s->out, s->pending, emit);
    s->out[emit] = 0;
    if (best != SIZE_MAX)
        s->n_pending = 0; /* the stop string and anything after it are dropped */
    else {
        memmove(s->pending, s->pending + emit, n - emit);
        s->n_pending = n - emit;
    }
    *text = s->out;
    *len = emit;
    if (stopped)
        *stopped = best != SIZE_MAX;
    return KN_OK;
}

kn_status kn_text_stream_push_text(kn_text_stream *s, const char *bytes, size_t n, const char **text, size_t *len,
                                   bool *stopped, kn_diag *d)
{
    *text = "";
    *len = 0;
    if (stopped)
        *stopped = false;
    if (s->stopped >= 0) {
        kn_diag_add(d, KN_ERROR, "text stream: text pushed after a stop string");
        return KN_ERR_INVALID;
    }
    if (!reserve(&s->a, &s->pending, &s->cap_pending, s->n_pending + n + 1))
        return nomem(d);
    if (n)
        memcpy(s->pending + s->n_pending, bytes, n);
    s->n_pending += n;
    return settle(s, text, len, stopped, d);
}

kn_status kn_text_stream_push(kn_text_stream *s, int32_t id, const char **text, size_t *len, bool *stopped,
                              kn_diag *d)
{
    *text = "";
    *len = 0;
    if (stopped)
        *stopped = false;
    if (!s->tok) {
        kn_diag_add(d, KN_ERROR, "text stream: no tokenizer to decode id %d", (int)id);
        return KN_ERR_INVALID;
    }
    char *t = NULL;
    size_t n = 0;
    KN_TRY(kn_tokenizer_decode(s->tok, &id, 1, s->skip_special, &t, &n, d));
    kn_status st = kn_text_stream_push_text(s, t, n, text, len, stopped, d);
    kn_tokenizer_release(s->tok, t);
    return st;
}

void kn_text_stream_finish(kn_text_stream *s, const char **text, size_t *len)
{
    /* pending is released as it is; it stays allocated until free */
    *text = s->n_pending ? s->pending : "";
    *len = s->n_pending;
    s->n_pending = 0;
}

int kn_text_stream_stop_index(const kn_text_stream *s) { return s ? s->stopped : -1; }
