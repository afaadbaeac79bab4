/* tokenizer_config.json and generation_config.json (runtime/tokenizer/
 * config.c): the fields kiln uses, in each form Hugging Face writes them;
 * wrong types are errors naming the file and key; the real SmolLM2 files
 * (tests/chat_templates) parse; token accessors. */
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

static kn_tokenizer_config *cfg(const char *json)
{
    kn_tokenizer_config *c = NULL;
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_tokenizer_config_load_memory(json, strlen(json), "t.json", NULL, d, &c), KN_OK);
    kn_diag_destroy(d);
    return c;
}

static kn_status config_once(const kn_allocator *a, kn_diag *d, void *ctx)
{
    (void)ctx;
    const char *j = "{\"chat_template\": \"T\", \"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}";
    kn_tokenizer_config *x = NULL;
    kn_status s = kn_tokenizer_config_load_memory(j, strlen(j), "t.json", a, d, &x);
    kn_tokenizer_config_free(x);
    return s;
}

static void test_tokenizer_config(void **state)
{
    (void)state;
    kn_tokenizer_config *c = cfg("{\"chat_template\": \"{{ x }}\", \"bos_token\": \"<s>\", "
                                 "\"eos_token\": {\"content\": \"</s>\", \"lstrip\": false}}");
    assert_string_equal(kn_tokenizer_config_chat_template(c), "{{ x }}");
    assert_string_equal(kn_tokenizer_config_bos_token(c), "<s>");
    assert_string_equal(kn_tokenizer_config_eos_token(c), "</s>");
    kn_tokenizer_config_free(c);
    /* a list of named templates: "default" wins, else the first */
    c = cfg("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", "
            "\"template\": \"D\"}], \"bos_token\": null}");
    assert_string_equal(kn_tokenizer_config_chat_template(c), "D");
    assert_null(kn_tokenizer_config_bos_token(c));
    kn_tokenizer_config_free(c);
    c = cfg("{\"chat_template\": [{\"name\": \"a\", \"template\": \"A\"}]}");
    assert_string_equal(kn_tokenizer_config_chat_template(c), "A");
    kn_tokenizer_config_free(c);
    c = cfg("{}");
    assert_null(kn_tokenizer_config_chat_template(c));
    assert_null(kn_tokenizer_config_eos_token(c));
    kn_tokenizer_config_free(c);
    assert_null(kn_tokenizer_config_chat_template(NULL));
    kn_tokenizer_config_free(NULL);

    struct {
        const char *json, *msg;
    } bad[] = {
        {"{\"chat_template\": 3}", "\"chat_template\" must be a string"},
        {"{\"chat_template\": [{\"name\": \"x\"}]}", "\"chat_template\"[0] has no \"template\""},
        {"{\"eos_token\": 5}", "\"eos_token\" must be a string or an object"},
        {"[1]", "not a JSON object"},
        {"{\"a\":", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_tokenizer_config *x = (kn_tokenizer_config *)d;
        assert_int_equal(kn_tokenizer_config_load_memory(bad[i].json, strlen(bad[i].json), "t.json", NULL, d, &x),
                         KN_ERR_INVALID);
        assert_null(x);
        if (!mb_diag_has(d, KN_ERROR, "t.json", bad[i].msg))
            fail_msg("'%s': message lacks '%s'", bad[i].json, bad[i].msg);
        kn_diag_destroy(d);
    }
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_tokenizer_config *x;
    assert_int_equal(kn_tokenizer_config_load_file("/nonexistent/t.json", NULL, d, &x), KN_ERR_IO);
    kn_diag_destroy(d);

    /* the real SmolLM2 file */
    c = NULL;
    assert_int_equal(kn_tokenizer_config_load_file(KN_SOURCE_DIR "/tests/chat_templates/smollm2_tokenizer_config.json",
                                                   NULL, NULL, &c),
                     KN_OK);
    assert_non_null(strstr(kn_tokenizer_config_chat_template(c), "named SmolLM"));
    assert_string_equal(kn_tokenizer_config_bos_token(c), "<|im_start|>");
    assert_string_equal(kn_tokenizer_config_eos_token(c), "<|im_end|>");
    kn_chat_message m = {"user", "Hi"};
    char *out;
    assert_int_equal(kn_chat_template_apply(kn_tokenizer_config_chat_template(c), &m, 1, true,
                                            kn_tokenizer_config_bos_token(c), kn_tokenizer_config_eos_token(c), NULL,
                                            NULL, &out, NULL),
                     KN_OK);
    assert_string_equal(out, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                             "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    free(out);
    kn_tokenizer_config_free(c);

    /* every failed allocation */
    mb_alloc_sweep(config_once, NULL);
}

static void test_generation_config(void **state)
{
    (void)state;
    kn_generation_config g;
    assert_int_equal(kn_generation_config_parse("{}", 2, "g.json", NULL, &g), KN_OK);
    assert_int_equal(g.n_eos, 0);
    assert_int_equal(g.bos_id, -1);
    assert_false(g.do_sample);
    assert_true(g.temperature == 1.0f && g.top_k == 50 && g.top_p == 1.0f && g.repetition_penalty == 1.0f);
    assert_int_equal(g.max_new_tokens, -1);
    const char *j = "{\"eos_token_id\": [2, 7], \"bos_token_id\": 1, \"pad_token_id\": null, \"do_sample\": true, "
                    "\"temperature\": 0.6, \"top_k\": 20, \"top_p\": 0.9, \"repetition_penalty\": 1.05, "
                    "\"max_new_tokens\": 256, \"transformers_version\": \"4.0\"}";
    assert_int_equal(kn_generation_config_parse(j, strlen(j), "g.json", NULL, &g), KN_OK);
    assert_int_equal(g.n_eos, 2);
    assert_int_equal(g.eos_ids[1], 7);
    assert_int_equal(g.bos_id, 1);
    assert_int_equal(g.pad_id, -1);
    assert_true(g.do_sample);
    assert_true(g.temperature == 0.6f && g.top_k == 20 && g.top_p == 0.9f && g.repetition_penalty == 1.05f);
    assert_int_equal(g.max_new_tokens, 256);
    /* the real SmolLM2 file */
    FILE *f = fopen(KN_SOURCE_DIR "/tests/chat_templates/smollm2_generation_config.json", "rb");
    assert_non_null(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_int_equal(kn_generation_config_parse(buf, n, "g.json", NULL, &g), KN_OK);
    assert_int_equal(g.n_eos, 1);
    assert_int_equal(g.eos_ids[0], 2);
    assert_int_equal(g.pad_id, 2);

    struct {
        const char *json, *msg;
        kn_status st;
    } bad[] = {
        {"{\"eos_token_id\": \"x\"}", "\"eos_token_id\" must be a token id", KN_ERR_INVALID},
        {"{\"eos_token_id\": [1, \"x\"]}", "\"eos_token_id\" must be a token id or a list", KN_ERR_INVALID},
        {"{\"eos_token_id\": -3}", "\"eos_token_id\" must be a token id", KN_ERR_INVALID},
        {"{\"eos_token_id\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}", "more than 16", KN_ERR_LIMIT},
        {"{\"do_sample\": 1}", "\"do_sample\" must be true or false", KN_ERR_INVALID},
        {"{\"temperature\": -1}", "\"temperature\" must be a number >= 0", KN_ERR_INVALID},
        {"{\"top_k\": 1.5}", "\"top_k\" must be an integer", KN_ERR_INVALID},
        {"{\"max_new_tokens\": -1}", "\"max_new_tokens\" must be an integer >= 0", KN_ERR_INVALID},
        {"[3]", "not a JSON object", KN_ERR_INVALID},
        {"{", "not valid JSON", KN_ERR_INVALID},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_generation_config x;
        kn_status s = kn_generation_config_parse(bad[i].json, strlen(bad[i].json), "g.json", d, &x);
        if (s != bad[i].st || !mb_diag_has(d, KN_ERROR, "g.json", bad[i].msg))
            fail_msg("'%s': status %d, message lacks '%s'", bad[i].json, (int)s, bad[i].msg);
        assert_int_equal(x.n_eos, 0); /* left at the defaults */
        kn_diag_destroy(d);
    }
}

static void test_token_accessors(void **state)
{
    (void)state;
    kn_tokenizer *t = NULL;
    assert_int_equal(kn_tokenizer_load_file(KN_SOURCE_DIR "/tests/tokenizers/qwen2/tokenizer.json", NULL, NULL, &t),
                     KN_OK);
    const char *b;
    size_t len;
    bool special;
    int32_t id;
    assert_int_equal(kn_tokenizer_token_id(t, "<|im_end|>", &id, NULL), KN_OK);
    assert_int_equal(kn_tokenizer_token(t, id, &b, &len, &special), KN_OK);
    assert_int_equal(len, 10);
    assert_memory_equal(b, "<|im_end|>", 10);
    assert_true(special);
    int32_t *ids;
    size_t n;
    assert_int_equal(kn_tokenizer_encode(t, "a", 1, false, &ids, &n, NULL), KN_OK);
    assert_int_equal(kn_tokenizer_token(t, ids[0], &b, &len, &special), KN_OK);
    assert_false(special);
    assert_int_equal(len, 1);
    assert_int_equal(b[0], 'a');
    kn_tokenizer_release(t, ids);
    assert_int_equal(kn_tokenizer_token(t, -1, NULL, NULL, NULL), KN_ERR_INVALID);
    assert_int_equal(kn_tokenizer_token(t, (int32_t)kn_tokenizer_vocab_size(t), NULL, NULL, NULL), KN_ERR_INVALID);
    assert_string_equal(kn_tokenizer_model_type(t), "BPE");
    kn_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_config),
        cmocka_unit_test(test_generation_config),
        cmocka_unit_test(test_token_accessors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
