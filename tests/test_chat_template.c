/* Chat templates (runtime/tokenizer/chat_template.c, chat_eval.c): real
 * templates (SmolLM2, Qwen2, Qwen2.5 with its tools branch, Llama 2) and one
 * exercising the rest of the subset give exactly jinja2's output
 * (tests/chat_templates/expected.json, scripts/make_chat_templates.py);
 * unsupported constructs and syntax errors are clean errors with offsets;
 * every truncation and many byte changes of the real templates never
 * crash; every failed allocation is survived. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/kiln.h"
#include "kiln/tokenizer.h"
#include "model_builder.h"

#define DIR KN_SOURCE_DIR "/tests/chat_templates/"

static char *load_template(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, DIR "%s.jinja", name);
    return mb_read_file(path, NULL);
}

/* The messages of conversation `name` in expected.json (strings owned by root). */
static kn_chat_message *conversation(json_t *root, const char *name, size_t *n)
{
    json_t *conv = json_object_get(json_object_get(root, "conversations"), name);
    assert_true(json_is_array(conv));
    *n = json_array_size(conv);
    kn_chat_message *m = calloc(*n + 1, sizeof *m);
    for (size_t i = 0; i < *n; i++) {
        json_t *e = json_array_get(conv, i);
        m[i].role = json_string_value(json_object_get(e, "role"));
        m[i].content = json_string_value(json_object_get(e, "content"));
    }
    return m;
}

static void test_matches_jinja2(void **state)
{
    (void)state;
    json_error_t err;
    json_t *root = json_load_file(DIR "expected.json", 0, &err);
    assert_non_null(root);
    const char *bos = json_string_value(json_object_get(root, "bos_token"));
    const char *eos = json_string_value(json_object_get(root, "eos_token"));
    json_t *cases = json_object_get(root, "cases");
    size_t i, n_ok = 0, n_err = 0;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *tname = json_string_value(json_object_get(c, "template"));
        const char *cname = json_string_value(json_object_get(c, "conversation"));
        bool agp = json_is_true(json_object_get(c, "add_generation_prompt"));
        char *tmpl = load_template(tname);
        size_t n;
        kn_chat_message *m = conversation(root, cname, &n);
        kn_diag *d = kn_diag_create(NULL, NULL);
        char *out = NULL;
        size_t len = 0;
        kn_status s = kn_chat_template_apply(tmpl, m, n, agp, bos, eos, NULL, d, &out, &len);
        json_t *want = json_object_get(c, "output");
        if (want) {
            if (s != KN_OK) {
                kn_diag_print(d, stderr);
                fail_msg("%s / %s / agp %d: status %d", tname, cname, agp, (int)s);
            }
            const char *w = json_string_value(want);
            if (len != strlen(w) || memcmp(out, w, len) != 0)
                fail_msg("%s / %s / agp %d:\n--- got\n%s\n--- want\n%s", tname, cname, agp, out, w);
            n_ok++;
        } else {
            const char *why = json_string_value(json_object_get(c, "error"));
            if (s == KN_OK)
                fail_msg("%s / %s: rendered, jinja2 raised '%s'", tname, cname, why);
            assert_null(out);
            assert_true(kn_diag_count(d, KN_ERROR) > 0);
            if (strstr(why, "alternate")) /* raise_exception's message is passed on */
                assert_true(mb_diag_has(d, KN_ERROR, "chat template: offset", "raise_exception: ", why));
            n_err++;
        }
        free(out);
        kn_diag_destroy(d);
        free(m);
        free(tmpl);
    }
    printf("%zu renderings equal jinja2's, %zu errors where jinja2 raised\n", n_ok, n_err);
    assert_true(n_ok >= 40);
    json_decref(root);
}

static void expect_error(const char *tmpl, kn_status want, const char *msg)
{
    kn_chat_message m[2] = {{"user", "hi"}, {"assistant", "yo"}};
    kn_diag *d = kn_diag_create(NULL, NULL);
    char *out = (char *)d;
    kn_status s = kn_chat_template_apply(tmpl, m, 2, true, "<s>", "</s>", NULL, d, &out, NULL);
    if (s != want || !mb_diag_has(d, KN_ERROR, "chat template: offset", msg)) {
        kn_diag_print(d, stderr);
        fail_msg("'%s': status %d (want %d), message lacks '%s'", tmpl, (int)s, (int)want, msg);
    }
    assert_null(out);
    kn_diag_destroy(d);
}

static void test_errors(void **state)
{
    (void)state;
    /* outside the subset: named, with the offset */
    expect_error("ab{% macro f() %}{% endmacro %}", KN_ERR_UNSUPPORTED, "offset 5: unsupported statement 'macro'");
    expect_error("{{ range(3) }}", KN_ERR_UNSUPPORTED, "offset 3: unsupported function 'range'");
    expect_error("{% set ns = namespace(found=false) %}", KN_ERR_UNSUPPORTED, "unsupported keyword argument 'found'");
    expect_error("{% set ns.x = 1 %}", KN_ERR_UNSUPPORTED, "offset 9: unsupported: 'set' of an attribute");
    expect_error("{{ messages | join(', ') }}", KN_ERR_UNSUPPORTED, "offset 14: unsupported filter 'join'");
    expect_error("{{ x is sameas y }}", KN_ERR_UNSUPPORTED, "unsupported test 'sameas'");
    expect_error("{{ [1, 2] }}", KN_ERR_UNSUPPORTED, "offset 3: unsupported list literal");
    expect_error("{{ 1.5 }}", KN_ERR_UNSUPPORTED, "unsupported number literal '1.'");
    expect_error("{% for a, b in x %}{% endfor %}", KN_ERR_UNSUPPORTED, "more than one loop variable");
    expect_error("{% for m in messages %}{% else %}{% endfor %}", KN_ERR_UNSUPPORTED, "'for ... else'");
    expect_error("{% for m in messages if m %}{% endfor %}", KN_ERR_UNSUPPORTED, "'for ... if'");
    expect_error("{{ 3 / 2 }}", KN_ERR_UNSUPPORTED, "offset 5: unsupported operator '/'");
    expect_error("{{ messages }}", KN_ERR_UNSUPPORTED, "printing a list");
    expect_error("{{ 'a'.format(1) }}", KN_ERR_UNSUPPORTED, "unsupported method 'format'");
    expect_error("{% generation %}x{% endgeneration %}", KN_ERR_UNSUPPORTED, "unsupported statement 'generation'");
    /* syntax and type errors */
    expect_error("{% if x %}abc", KN_ERR_INVALID, "unexpected end of template: '{% endif %}' expected");
    expect_error("{{ 'abc }}", KN_ERR_INVALID, "offset 3: unterminated string literal");
    expect_error("{{ x ", KN_ERR_INVALID, "unterminated tag");
    expect_error("{# x", KN_ERR_INVALID, "unterminated comment");
    expect_error("x{% endif %}", KN_ERR_INVALID, "offset 4: 'endif' without a matching block");
    expect_error("{{ x y }}", KN_ERR_INVALID, "'}}' expected");
    expect_error("{{ }}", KN_ERR_INVALID, "expression expected");
    expect_error("{% if %}{% endif %}", KN_ERR_INVALID, "expression expected");
    expect_error("{{ 1 // 0 }}", KN_ERR_INVALID, "division by zero");
    expect_error("{{ 'a' + 1 }}", KN_ERR_INVALID, "'+' of non-numbers");
    expect_error("{{ 9223372036854775807 + 1 }}", KN_ERR_INVALID, "integer overflow");
    expect_error("{{ nothing.role }}", KN_ERR_INVALID, "'role' of an undefined or none value");
    expect_error("{{ messages[5]['role'] }}", KN_ERR_INVALID, "'role' of an undefined");
    expect_error("{{ 1 in 2 }}", KN_ERR_INVALID, "'in' needs a string, list or message");
    expect_error("{{ raise_exception('no system role') }}", KN_ERR_INVALID, "offset 18: raise_exception: no system role");
    expect_error("{{ @ }}", KN_ERR_INVALID, "unexpected character '@'");
    expect_error("{{ 'a\\x4' }}", KN_ERR_INVALID, "offset 5: bad escape in a string literal");
    expect_error("{{ '\\U00110000' }}", KN_ERR_INVALID, "bad escape");
    /* nesting limits, not a stack overflow */
    char deep[2000];
    strcpy(deep, "{{ ");
    for (int i = 0; i < 300; i++)
        strcat(deep, "(");
    strcat(deep, "1 }}");
    expect_error(deep, KN_ERR_INVALID, "nested too deeply");
    size_t big = 200000;
    char *chain = malloc(big + 16);
    strcpy(chain, "{{ 1");
    size_t n = 4;
    while (n < big)
        chain[n++] = '+', chain[n++] = '1';
    strcpy(chain + n, " }}");
    expect_error(chain, KN_ERR_INVALID, "nested too deeply");
    strcpy(chain, "{% if 0 %}");
    n = strlen(chain);
    while (n < big)
        memcpy(chain + n, "{% elif 0 %}", 12), n += 12;
    strcpy(chain + n, "{% endif %}");
    expect_error(chain, KN_ERR_INVALID, "nested too deeply");
    free(chain);
    /* bad arguments */
    kn_diag *d = kn_diag_create(NULL, NULL);
    char *out;
    kn_chat_message bad = {"user", NULL};
    assert_int_equal(kn_chat_template_apply("x", &bad, 1, false, NULL, NULL, NULL, d, &out, NULL), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "message 0 has no content"));
    assert_int_equal(kn_chat_template_apply(NULL, NULL, 0, false, NULL, NULL, NULL, d, &out, NULL), KN_ERR_INVALID);
    assert_int_equal(kn_chat_template_apply("x", NULL, 0, false, NULL, NULL, NULL, d, NULL, NULL), KN_ERR_INVALID);
    kn_diag_destroy(d);
}

static void test_small_cases(void **state)
{
    (void)state;
    struct {
        const char *tmpl, *want;
    } cases[] = {
        {"", ""},
        {"plain", "plain"},
        {"a {{- ' b ' -}} c", "a b c"},
        {"  {% if true %}x{% endif %}\n", "x"},       /* lstrip_blocks + trim_blocks */
        {"  {%+ if true %}x{% endif +%}\n", "  x\n"}, /* '+' turns them off */
        {"{{ 'a' ~ 1 ~ true ~ none }}", "a1TrueNone"},
        {"{{ bos_token }}|{{ eos_token }}", "<s>|"},
        {"{% set x = 'out' %}{% for m in messages %}{% set x = m.role %}{% endfor %}{{ x }}", "out"},
        {"{% for m in messages %}{% for n in messages %}{{ loop.index }}{% endfor %}{{ loop.index }};{% endfor %}",
         "121;122;"},
        {"{{ 1 == true }} {{ 0 == false }} {{ 'a' < 'b' }} {{ 2 >= 3 }} {{ -7 // 2 }} {{ -7 % 3 }}",
         "True True True False -4 2"},
        {"{{ messages[-1].content }} {{ messages[1:][0].role }} {{ messages[:0]|length }}", "yo assistant 0"},
        {"{{ 'x' if false }}|{{ none or 'd' }}|{{ 'a' and 'b' }}|{{ not 0 }}", "|d|b|True"},
        {"{{ 'héllo'|length }} {{ 'héllo'[1] }} {{ ' a '|trim }}| {{ 'AbC'|lower }}{{ 'AbC'.upper() }}",
         "5 é a| abcABC"},
        {"{{ 'role' in messages[0] }} {{ messages[0] in messages }} {{ messages[0]|tojson }}",
         "True True {\"role\": \"user\", \"content\": \"hi\"}"},
        {"{# comment #}\n{{ 'a' 'b' }}", "ab"},
        {"{{ '\\u00e9\\x41\\t|\\q|\\101|\\U0001F600' }}", "\xC3\xA9" "A\t|\\q|A|\xF0\x9F\x98\x80"},
    };
    kn_chat_message m[2] = {{"user", "hi"}, {"assistant", "yo"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kn_diag *d = kn_diag_create(NULL, NULL);
        char *out = NULL;
        size_t len;
        kn_status s = kn_chat_template_apply(cases[i].tmpl, m, 2, false, "<s>", NULL, NULL, d, &out, &len);
        if (s != KN_OK) {
            kn_diag_print(d, stderr);
            fail_msg("case %zu '%s': status %d", i, cases[i].tmpl, (int)s);
        }
        if (strcmp(out, cases[i].want) != 0 || len != strlen(out))
            fail_msg("case %zu '%s': got '%s', want '%s'", i, cases[i].tmpl, out, cases[i].want);
        assert_int_equal(kn_chat_template_check(cases[i].tmpl, NULL, d), KN_OK);
        free(out);
        kn_diag_destroy(d);
    }
}

static const char *real[] = {"smollm2", "qwen2", "qwen25_tools", "llama2", "misc"};

/* Every prefix of every real template, and single-byte changes, either
 * render or fail with a message; none crashes (ASan builds check more). */
static void test_truncated_and_mutated(void **state)
{
    (void)state;
    kn_chat_message m[3] = {{"system", "s"}, {"user", "q"}, {"assistant", "a"}};
    long ok = 0, bad = 0;
    for (size_t t = 0; t < sizeof real / sizeof *real; t++) {
        char *tmpl = load_template(real[t]);
        size_t n = strlen(tmpl);
        assert_int_equal(kn_chat_template_check(tmpl, NULL, NULL), KN_OK);
        char *buf = malloc(n + 1);
        for (size_t len = 0; len <= n; len++) {
            memcpy(buf, tmpl, len);
            buf[len] = 0;
            kn_diag *d = kn_diag_create(NULL, NULL);
            char *out = NULL;
            kn_status s = kn_chat_template_apply(buf, m, 3, true, "<s>", "</s>", NULL, d, &out, NULL);
            if (s == KN_OK) {
                assert_non_null(out);
                ok++;
            } else {
                assert_null(out);
                assert_true(mb_diag_has(d, KN_ERROR, "chat template: offset"));
                bad++;
            }
            free(out);
            kn_diag_destroy(d);
        }
        static const char subst[] = "{}%-#'\"()|.[]:x \n";
        for (size_t i = 0; i < n; i += 3)
            for (size_t k = 0; k < sizeof subst - 1; k += 2) {
                memcpy(buf, tmpl, n + 1);
                buf[i] = subst[k];
                kn_diag *d = kn_diag_create(NULL, NULL);
                char *out = NULL;
                kn_status s = kn_chat_template_apply(buf, m, 3, true, "<s>", "</s>", NULL, d, &out, NULL);
                assert_true(s == KN_OK ? out != NULL : out == NULL && kn_diag_count(d, KN_ERROR) > 0);
                free(out);
                kn_diag_destroy(d);
            }
        free(buf);
        free(tmpl);
    }
    printf("prefixes: %ld rendered, %ld refused cleanly\n", ok, bad);
    assert_true(ok > 0 && bad > 0);
}

typedef struct apply_run {
    const char *tmpl, *want;
    const kn_chat_message *m;
} apply_run;

static kn_status apply_once(const kn_allocator *a, kn_diag *d, void *ctx)
{
    const apply_run *r = ctx;
    char *out = NULL;
    kn_status s = kn_chat_template_apply(r->tmpl, r->m, 3, true, NULL, NULL, a, d, &out, NULL);
    if (s == KN_OK) {
        assert_string_equal(out, r->want);
        a->free(a->ctx, out);
    } else {
        assert_null(out);
        assert_true(mb_diag_has(d, KN_ERROR, "out of memory"));
    }
    return s;
}

static void test_alloc_failures(void **state)
{
    (void)state;
    char *tmpl = load_template("qwen25_tools");
    kn_chat_message m[3] = {{"system", "s"}, {"user", "q"}, {"assistant", "a"}};
    char *want = NULL;
    assert_int_equal(kn_chat_template_apply(tmpl, m, 3, true, NULL, NULL, NULL, NULL, &want, NULL), KN_OK);
    apply_run r = {tmpl, want, m};
    long fails = mb_alloc_sweep(apply_once, &r);
    assert_true(fails >= 2);
    printf("chat template: failed each of %ld allocations in turn: all clean\n", fails);
    free(want);
    free(tmpl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_jinja2),        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_small_cases),           cmocka_unit_test(test_truncated_and_mutated),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
