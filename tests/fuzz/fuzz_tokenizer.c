/* Fuzz target: bytes → kn_tokenizer_load_memory (a tokenizer.json); a file
 * that loads then encodes a few texts (and the input's own first bytes),
 * and what it encodes must decode. */
#include "fuzz_common.h"

#include "kiln/tokenizer.h"

static void roundtrip(kn_tokenizer *t, const char *text, size_t len, kn_diag *d)
{
    int32_t *ids = NULL;
    size_t n = 0;
    kn_status s = kn_tokenizer_encode(t, text, len, true, &ids, &n, d);
    if (s != KN_OK) {
        if (ids || n || kn_diag_count(d, KN_ERROR) == 0)
            FUZZ_BUG(d, "encode failed (%s) without a message or left ids", kn_status_str(s));
        return;
    }
    char *out = NULL;
    size_t olen = 0;
    if (kn_tokenizer_decode(t, ids, n, false, &out, &olen, d) != KN_OK)
        FUZZ_BUG(d, "encode gave ids that do not decode");
    kn_tokenizer_release(t, out);
    kn_tokenizer_release(t, ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_cap cap;
    fuzz_cap_init(&cap, (size_t)256 << 20);
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!d)
        return 0;
    kn_tokenizer *t = NULL;
    kn_status s = kn_tokenizer_load_memory(data, size, "fuzz.json", &cap.a, d, &t);
    if (s != KN_OK) {
        if (t || kn_diag_count(d, KN_ERROR) == 0)
            FUZZ_BUG(d, "load failed (%s) without a message or left a tokenizer", kn_status_str(s));
    } else {
        static const char *const texts[] = {"", "Hello, world!", "It's 1234 caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac",
                                            "  \t\n\n x <|endoftext|>y", "\xf0\x9f\x98\x80\xe2\x80\x8d!"};
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
            roundtrip(t, texts[i], strlen(texts[i]), d);
        roundtrip(t, (const char *)data, size < 256 ? size : 256, d);
        kn_tokenizer_free(t);
    }
    if (cap.live != 0)
        FUZZ_BUG(d, "%zu bytes left allocated", cap.live);
    kn_diag_destroy(d);
    return 0;
}
