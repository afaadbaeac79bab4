/* Streaming text with stop strings (runtime/tokenizer/stream.c): nothing
 * that could begin a stop string or split a UTF-8 character is released
 * early; a stop ends the stream with exactly the text before it, whatever
 * the chunking; ids decode through a real tokenizer; failed allocations
 * are survived. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/kiln.h"
#include "kiln/tokenizer.h"
#include "model_builder.h"

static kn_text_stream *make(const char *const *stops, size_t n, const kn_tokenizer *tok)
{
    kn_text_stream *s = NULL;
    assert_int_equal(kn_text_stream_create(tok, stops, n, true, NULL, NULL, &s), KN_OK);
    return s;
}

/* Pushes `t` and checks what comes out. */
static void push(kn_text_stream *s, const char *t, const char *want, bool want_stop)
{
    const char *out;
    size_t len;
    bool stop;
    assert_int_equal(kn_text_stream_push_text(s, t, strlen(t), &out, &len, &stop, NULL), KN_OK);
    if (len != strlen(want) || memcmp(out, want, len) || stop != want_stop)
        fail_msg("push '%s': got '%.*s' stop %d, want '%s' stop %d", t, (int)len, out, stop, want, want_stop);
}

static void test_hold_back(void **state)
{
    (void)state;
    const char *stops[] = {"</s>", "STOP"};
    kn_text_stream *s = make(stops, 2, NULL);
    push(s, "Hello <", "Hello ", false);
    push(s, "/", "", false);
    push(s, "b>", "</b>", false);
    push(s, "x S", "x ", false);
    push(s, "TO", "", false);
    push(s, "p", "STOp", false);
    push(s, " y </", " y ", false);
    push(s, "s> more", "", true);
    assert_int_equal(kn_text_stream_stop_index(s), 0);
    const char *out;
    size_t len;
    bool stop;
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_text_stream_push_text(s, "z", 1, &out, &len, &stop, d), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "after a stop string"));
    kn_diag_destroy(d);
    kn_text_stream_finish(s, &out, &len);
    assert_int_equal(len, 0); /* nothing after a stop */
    kn_text_stream_free(s);

    /* a stop inside one push; text before it released at once */
    s = make(stops, 2, NULL);
    push(s, "abcSTOPdef", "abc", true);
    assert_int_equal(kn_text_stream_stop_index(s), 1);
    kn_text_stream_free(s);

    /* the end of generation releases a partial stop string as it is */
    s = make(stops, 2, NULL);
    push(s, "end </", "end ", false);
    kn_text_stream_finish(s, &out, &len);
    assert_int_equal(len, 2);
    assert_memory_equal(out, "</", 2);
    assert_int_equal(kn_text_stream_stop_index(s), -1);
    kn_text_stream_free(s);

    /* UTF-8 split across pushes is held back; no stops at all */
    s = make(NULL, 0, NULL);
    push(s, "caf\xC3", "caf", false);
    push(s, "\xA9!", "\xC3\xA9!", false);
    push(s, "\xF0", "", false);
    push(s, "\x9F\x98", "", false);
    push(s, "\x80 ok", "\xF0\x9F\x98\x80 ok", false);
    push(s, "\xE6\x97", "", false);
    kn_text_stream_finish(s, &out, &len); /* a partial character at the end: as it is */
    assert_int_equal(len, 2);
    kn_text_stream_free(s);

    /* bad stops */
    const char *bad[] = {"ok", ""};
    kn_text_stream *t = (kn_text_stream *)bad;
    d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_text_stream_create(NULL, bad, 2, true, NULL, d, &t), KN_ERR_INVALID);
    assert_null(t);
    assert_true(mb_diag_has(d, KN_ERROR, "stop string 1 is empty"));
    kn_diag_destroy(d);
}

/* The stream's contract, checked against a direct computation: the
 * released text is the input up to the first stop string found when the
 * shortest prefix of the input containing one is pushed (its leftmost
 * occurrence in that prefix), whatever the chunk sizes. */
static void reference(const char *text, const char *const *stops, size_t n_stops, size_t *cut, bool *stopped)
{
    size_t n = strlen(text);
    for (size_t L = 1; L <= n; L++) {
        size_t best = SIZE_MAX;
        for (size_t k = 0; k < n_stops; k++) {
            size_t sl = strlen(stops[k]);
            for (size_t i = 0; sl <= L && i <= L - sl; i++)
                if (!memcmp(text + i, stops[k], sl) && i < best)
                    best = i;
        }
        if (best != SIZE_MAX) {
            *cut = best;
            *stopped = true;
            return;
        }
    }
    *cut = n;
    *stopped = false;
}

static void test_chunkings(void **state)
{
    (void)state;
    const char *stops[] = {"abab", "bc", "\n\nUser:", "x"};
    const char *texts[] = {"aababab", "ababc", "hello\n\nUser: hi", "hello\n\nUse", "abcd", "no stop here",
                           "aaaaaaaaaaaaabab", "b", "", "\n\n\nUser:x"};
    for (size_t t = 0; t < sizeof texts / sizeof *texts; t++)
        for (size_t n_st = 1; n_st <= 4; n_st++) {
            size_t want_cut;
            bool want_stop;
            const char *const *st = stops + (4 - n_st);
            reference(texts[t], st, n_st, &want_cut, &want_stop);
            for (size_t chunk = 1; chunk <= 5; chunk++) {
                kn_text_stream *s = make(st, n_st, NULL);
                char got[256] = "";
                size_t got_n = 0, n = strlen(texts[t]);
                bool stopped = false;
                for (size_t i = 0; i < n && !stopped; i += chunk) {
                    const char *out;
                    size_t len;
                    size_t k = n - i < chunk ? n - i : chunk;
                    assert_int_equal(kn_text_stream_push_text(s, texts[t] + i, k, &out, &len, &stopped, NULL), KN_OK);
                    memcpy(got + got_n, out, len);
                    got_n += len;
                }
                if (!stopped) {
                    const char *out;
                    size_t len;
                    kn_text_stream_finish(s, &out, &len);
                    memcpy(got + got_n, out, len);
                    got_n += len;
                }
                size_t expect_n = want_stop ? want_cut : n;
                if (stopped != want_stop || got_n != expect_n || memcmp(got, texts[t], expect_n))
                    fail_msg("'%s' with %zu stops in chunks of %zu: got '%.*s' (stop %d), want '%.*s' (stop %d)",
                             texts[t], n_st, chunk, (int)got_n, got, stopped, (int)expect_n, texts[t], want_stop);
                kn_text_stream_free(s);
            }
        }
}

static kn_tokenizer *qwen2(void)
{
    kn_tokenizer *t = NULL;
    assert_int_equal(kn_tokenizer_load_file(KN_SOURCE_DIR "/tests/tokenizers/qwen2/tokenizer.json", NULL, NULL, &t),
                     KN_OK);
    return t;
}

static void test_with_tokenizer(void **state)
{
    (void)state;
    kn_tokenizer *tok = qwen2();
    const char *text = "<|im_start|>Hello wörld, this is a test. STOP here \xE6\x97\xA5\xE6\x9C\xAC<|im_end|>";
    int32_t *ids;
    size_t n;
    assert_int_equal(kn_tokenizer_encode(tok, text, strlen(text), false, &ids, &n, NULL), KN_OK);
    assert_true(n > 10);
    /* no stops: the pieces add up to decode(all ids), special tokens skipped */
    char *full;
    size_t full_n;
    assert_int_equal(kn_tokenizer_decode(tok, ids, n, true, &full, &full_n, NULL), KN_OK);
    kn_text_stream *s = make(NULL, 0, tok);
    char got[512];
    size_t got_n = 0;
    for (size_t i = 0; i < n; i++) {
        const char *out;
        size_t len;
        bool stop;
        assert_int_equal(kn_text_stream_push(s, ids[i], &out, &len, &stop, NULL), KN_OK);
        assert_false(stop);
        memcpy(got + got_n, out, len);
        got_n += len;
    }
    const char *out;
    size_t len;
    kn_text_stream_finish(s, &out, &len);
    memcpy(got + got_n, out, len);
    got_n += len;
    assert_int_equal(got_n, full_n);
    assert_memory_equal(got, full, full_n);
    assert_null(strstr(full, "<|im_start|>"));
    kn_text_stream_free(s);
    /* a stop string ends it */
    const char *stops[] = {"STOP"};
    s = make(stops, 1, tok);
    got_n = 0;
    bool stop = false;
    size_t i = 0;
    for (; i < n && !stop; i++) {
        assert_int_equal(kn_text_stream_push(s, ids[i], &out, &len, &stop, NULL), KN_OK);
        memcpy(got + got_n, out, len);
        got_n += len;
    }
    assert_true(stop);
    assert_true(i < n);
    got[got_n] = 0;
    assert_string_equal(got, "Hello wörld, this is a test. ");
    kn_text_stream_free(s);
    /* an id out of range */
    s = make(NULL, 0, tok);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_text_stream_push(s, 1 << 30, &out, &len, &stop, d), KN_ERR_INVALID);
    kn_diag_destroy(d);
    kn_text_stream_free(s);
    kn_tokenizer_release(tok, ids);
    kn_tokenizer_release(tok, full);
    kn_tokenizer_free(tok);
}

static kn_status stream_once(const kn_allocator *a, kn_diag *d, void *ctx)
{
    (void)ctx;
    const char *stops[] = {"</s>", "STOP"};
    kn_text_stream *s = NULL;
    kn_status st = kn_text_stream_create(NULL, stops, 2, true, a, d, &s);
    const char *out;
    size_t len;
    bool stop;
    for (int i = 0; i < 40 && st == KN_OK; i++)
        st = kn_text_stream_push_text(s, "0123456789 </", 13, &out, &len, &stop, d);
    kn_text_stream_free(s);
    return st;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    assert_true(mb_alloc_sweep(stream_once, NULL) >= 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hold_back),
        cmocka_unit_test(test_chunkings),
        cmocka_unit_test(test_with_tokenizer),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
