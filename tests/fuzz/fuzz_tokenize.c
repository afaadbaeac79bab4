/* Fuzz target: bytes → text encoded by the committed test tokenizers
 * (tests/tokenizers: gpt2, qwen2). Valid UTF-8 must encode; what encodes
 * must decode; GPT-2's (no normalizer) must give the text back exactly,
 * and Qwen2's template must wrap it in <|im_start|> ... <|im_end|>. */
#include "fuzz_common.h"

#include "kiln/tokenizer.h"

static kn_tokenizer *load(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/tokenizers/%s/tokenizer.json", KN_SOURCE_DIR, name);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_tokenizer *t = NULL;
    if (kn_tokenizer_load_file(path, NULL, d, &t) != KN_OK)
        FUZZ_BUG(d, "cannot load %s", path);
    kn_diag_destroy(d);
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static kn_tokenizer *toks[2];
    if (!toks[0]) {
        toks[0] = load("gpt2");
        toks[1] = load("qwen2");
    }
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!d)
        return 0;
    for (int k = 0; k < 2; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        kn_status s = kn_tokenizer_encode(toks[k], (const char *)data, size, true, &ids, &n, d);
        if (s != KN_OK) {
            if (s != KN_ERR_INVALID || ids || !kn_diag_count(d, KN_ERROR))
                FUZZ_BUG(d, "encode: %s, ids left or no message", kn_status_str(s));
            continue;
        }
        if (k == 1 && (n < 2 || ids[0] != 1 || ids[n - 1] != 2))
            FUZZ_BUG(d, "qwen2: the template's special tokens are missing");
        char *out = NULL;
        size_t len = 0;
        if (kn_tokenizer_decode(toks[k], ids, n, false, &out, &len, d) != KN_OK)
            FUZZ_BUG(d, "encoded ids do not decode");
        if (k == 0 && (len != size || memcmp(out, data, size) != 0))
            FUZZ_BUG(d, "gpt2: decode(encode(text)) differs from the text");
        kn_tokenizer_release(toks[k], out);
        kn_tokenizer_release(toks[k], ids);
    }
    kn_diag_destroy(d);
    return 0;
}
