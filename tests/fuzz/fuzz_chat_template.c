/* Fuzz target: bytes → a chat template rendered with kn_chat_template_apply
 * over a fixed conversation (memory capped at 256 MiB; nothing may stay
 * allocated). A template renders (a NUL-terminated string of the length
 * given) or fails with a message and no output; kn_chat_template_check
 * agrees with apply on whether it parses. */
#include "fuzz_common.h"

#include "kiln/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16)
        return 0;
    char *tmpl = malloc(size + 1);
    if (!tmpl)
        return 0;
    memcpy(tmpl, data, size);
    tmpl[size] = 0; /* an embedded NUL ends the template, as it would in a C string */
    fuzz_cap cap;
    fuzz_cap_init(&cap, (size_t)256 << 20);
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!d) {
        free(tmpl);
        return 0;
    }
    static const kn_chat_message msgs[] = {
        {"system", "Be brief."}, {"user", "Hi \xc3\xa9 {{ x }}"}, {"assistant", "Hello!"}, {"user", ""}};
    char *out = NULL;
    size_t len = 0;
    kn_status s = kn_chat_template_apply(tmpl, msgs, 4, true, "<s>", "</s>", &cap.a, d, &out, &len);
    if (s == KN_OK) {
        if (!out || out[len] != 0)
            FUZZ_BUG(d, "rendered without a NUL-terminated output");
        cap.a.free(cap.a.ctx, out);
    } else if (out || kn_diag_count(d, KN_ERROR) == 0 || s == KN_ERR_INTERNAL) {
        FUZZ_BUG(d, "apply failed (%s) without a message or left output", kn_status_str(s));
    }
    kn_status c = kn_chat_template_check(tmpl, &cap.a, d);
    if (c == KN_OK && s != KN_OK && s != KN_ERR_INVALID && s != KN_ERR_UNSUPPORTED && s != KN_ERR_LIMIT &&
        s != KN_ERR_NOMEM)
        FUZZ_BUG(d, "check passed but apply gave %s", kn_status_str(s));
    if (c != KN_OK && c != KN_ERR_NOMEM && s == KN_OK)
        FUZZ_BUG(d, "apply rendered a template check refused (%s)", kn_status_str(c));
    if (cap.live != 0)
        FUZZ_BUG(d, "%zu bytes left allocated", cap.live);
    kn_diag_destroy(d);
    free(tmpl);
    return 0;
}
