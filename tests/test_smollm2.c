/* SmolLM2-135M-Instruct, the real trained model of tests/models/smollm2_135m
 * (scripts/models/export_smollm2.py).
 *
 *   test_smollm2            the tokenizer: kiln encodes the reference
 *                           prompts to Hugging Face's ids and decodes the
 *                           reference generations to transformers' text
 *   test_smollm2 --model KILN
 *                           with models-big/smollm2-135m/model.onnx built:
 *                           `KILN compile` it, run the prefill of each
 *                           reference prompt on the CPU backend and compare
 *                           the last position's logits with transformers'
 *                           (top 20 values, argmax = the first greedy
 *                           token), then `KILN run --compare-to` the prefill
 *                           and decode data sets (onnxruntime's outputs).
 *                           Exits 77 (CTest's skip) when the ONNX is absent. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kiln/kiln.h"
#include "kiln/runtime.h"
#include "kiln/session.h"
#include "kiln/tokenizer.h"
#include "runtime/cpu/exec.h"

#define REFDIR KN_SOURCE_DIR "/tests/models/smollm2_135m/"
#define BIGDIR KN_SOURCE_DIR "/models-big/smollm2-135m/"
#define SKIP_CODE 77

static const char *g_kiln; /* --model: the kiln binary */

static json_t *load_reference(void)
{
    json_error_t err;
    json_t *ref = json_load_file(REFDIR "reference.json", 0, &err);
    if (!ref)
        fail_msg(REFDIR "reference.json: %s (line %d)", err.text, err.line);
    assert_true(json_array_size(json_object_get(ref, "prompts")) == 3);
    return ref;
}

/* Copies a JSON array of integers into a new int32 array. */
static int32_t *json_ids(json_t *arr, size_t *n)
{
    assert_true(json_is_array(arr));
    *n = json_array_size(arr);
    int32_t *ids = calloc(*n + 1, sizeof *ids);
    assert_non_null(ids);
    for (size_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return ids;
}

static void test_tokenizer(void **state)
{
    (void)state;
    json_t *ref = load_reference();
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_tokenizer *t = NULL;
    assert_int_equal(kn_tokenizer_load_file(REFDIR "tokenizer.json", NULL, d, &t), KN_OK);
    assert_int_equal(kn_tokenizer_vocab_size(t), 49152);
    int32_t id = -1;
    assert_int_equal(kn_tokenizer_token_id(t, "<|im_end|>", &id, d), KN_OK);
    assert_int_equal(id, 2);
    assert_int_equal(kn_tokenizer_token_id(t, "<|im_start|>", &id, d), KN_OK);
    assert_int_equal(id, 1);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ref, "prompts"), i, p) {
        const char *label = json_string_value(json_object_get(p, "label"));
        json_t *jtext = json_object_get(p, "prompt_text");
        size_t n_want, n_got = 0;
        int32_t *want = json_ids(json_object_get(p, "prompt_ids"), &n_want), *got = NULL;
        /* The chat prompt holds <|im_start|>/<|im_end|> as text: they must
         * become their ids. The GGUF says no BOS, and the post-processor
         * adds nothing, so add_special makes no difference. */
        for (int add = 0; add <= 1; add++) {
            assert_int_equal(kn_tokenizer_encode(t, json_string_value(jtext), json_string_length(jtext), add, &got,
                                                 &n_got, d),
                             KN_OK);
            if (n_got != n_want || memcmp(got, want, n_want * sizeof *want) != 0) {
                size_t k = 0;
                while (k < n_got && k < n_want && got[k] == want[k])
                    k++;
                fail_msg("%s: %zu ids, want %zu; first difference at %zu (%d vs %d)", label, n_got, n_want, k,
                         k < n_got ? (int)got[k] : -1, k < n_want ? (int)want[k] : -1);
            }
            kn_tokenizer_release(t, got);
        }
        /* Decoding the prompt gives the text back; decoding the generated
         * ids gives transformers' decoded text (special tokens kept). */
        char *text = NULL;
        size_t len = 0;
        assert_int_equal(kn_tokenizer_decode(t, want, n_want, false, &text, &len, d), KN_OK);
        assert_int_equal(len, json_string_length(jtext));
        assert_memory_equal(text, json_string_value(jtext), len);
        kn_tokenizer_release(t, text);
        free(want);
        json_t *jdec = json_object_get(p, "decoded");
        want = json_ids(json_object_get(p, "new_tokens"), &n_want);
        assert_int_equal(kn_tokenizer_decode(t, want, n_want, false, &text, &len, d), KN_OK);
        if (len != json_string_length(jdec) || memcmp(text, json_string_value(jdec), len) != 0)
            fail_msg("%s: decoded \"%s\", want \"%s\"", label, text, json_string_value(jdec));
        kn_tokenizer_release(t, text);
        free(want);
    }
    assert_int_equal(kn_diag_count(d, KN_ERROR), 0);
    kn_tokenizer_free(t);
    kn_diag_destroy(d);
    json_decref(ref);
}

/* ---- --model ---- */

static void run_cmd(const char *cmd)
{
    fprintf(stderr, "+ %s\n", cmd);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("command failed (status %d): %s", rc, cmd);
}

/* The feeds of a prefill: ids [1, n], mask ones [1, n], positions 0..n-1,
 * every past [1, kv_heads, 0, head_dim] (taken from the graph's inputs). */
static void prefill_inputs(const kn_graph *g, const int32_t *ids, int64_t n, kn_rt_tensor **in)
{
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        if (strncmp(v->name, "past_key_values.", 16) == 0) {
            assert_int_equal(v->type.shape.rank, 4);
            int64_t dims[4] = {1, v->type.shape.dims[1].value, 0, v->type.shape.dims[3].value};
            assert_true(dims[1] > 0 && dims[3] > 0);
            assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 4, dims, &in[i]), KN_OK);
            continue;
        }
        int64_t dims[2] = {1, n};
        assert_int_equal(kn_rt_tensor_new(NULL, KN_I64, 2, dims, &in[i]), KN_OK);
        int64_t *x = in[i]->data;
        for (int64_t k = 0; k < n; k++)
            x[k] = !strcmp(v->name, "input_ids") ? ids[k] : !strcmp(v->name, "position_ids") ? k : 1;
        if (strcmp(v->name, "input_ids") && strcmp(v->name, "position_ids") && strcmp(v->name, "attention_mask"))
            fail_msg("unexpected graph input '%s'", v->name);
    }
}

/* The prefill through the plain executor, so the plan keeps its past and
 * present tensors (kv-cache pass off): logits against transformers, and
 * every output against onnxruntime. */
static void test_prefill_logits(void **state)
{
    (void)state;
    const char *plan = KN_BUILD_DIR "/smollm2_135m.plan";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' compile '" BIGDIR "model.onnx' -o '%s' --disable-pass kv-cache", g_kiln, plan);
    run_cmd(cmd);
    json_t *ref = load_reference();
    json_t *tol = json_object_get(ref, "tolerance");
    double rtol = json_real_value(json_object_get(tol, "rtol")), atol = json_real_value(json_object_get(tol, "atol"));
    assert_true(rtol > 0 && atol > 0);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(plan, NULL, d, &g), KN_OK);
    assert_int_equal(g->n_inputs, 63);
    kn_rt_tensor **in = calloc(g->n_inputs, sizeof *in), **out = calloc(g->n_outputs, sizeof *out);
    assert_true(in && out);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(ref, "prompts"), i, p) {
        const char *label = json_string_value(json_object_get(p, "label"));
        size_t n, n_top, n_val, n_new;
        int32_t *ids = json_ids(json_object_get(p, "prompt_ids"), &n);
        int32_t *top = json_ids(json_object_get(p, "first_logits_top_ids"), &n_top);
        int32_t *new_tokens = json_ids(json_object_get(p, "new_tokens"), &n_new);
        json_t *vals = json_object_get(p, "first_logits_top_values");
        n_val = json_array_size(vals);
        assert_true(n_top == 20 && n_val == n_top && n_new > 0);
        prefill_inputs(g, ids, (int64_t)n, in);
        kn_status s = kn_cpu_run(g, NULL, d, (const kn_rt_tensor *const *)in, g->n_inputs, out, g->n_outputs);
        if (s != KN_OK)
            kn_diag_print(d, stderr);
        assert_int_equal(s, KN_OK);
        const kn_rt_tensor *lg = out[0];
        assert_int_equal(lg->dtype, KN_F32);
        assert_int_equal(lg->rank, 3);
        assert_int_equal(lg->dims[1], (int64_t)n);
        int64_t vocab = lg->dims[2];
        const float *last = (const float *)lg->data + (n - 1) * vocab;
        double worst = 0;
        for (size_t k = 0; k < n_top; k++) {
            double want = json_number_value(json_array_get(vals, k)), got = last[top[k]];
            double err = fabs(got - want);
            if (err > atol + rtol * fabs(want))
                fail_msg("%s: logit of id %d is %.6g, transformers %.6g (diff %.3g)", label, (int)top[k], got, want,
                         err);
            worst = err > worst ? err : worst;
        }
        int64_t best = 0;
        for (int64_t k = 1; k < vocab; k++)
            if (last[k] > last[best])
                best = k;
        assert_int_equal(best, top[0]);
        assert_int_equal(best, new_tokens[0]);
        fprintf(stderr, "%s: %zu ids, top-20 logits within %.3g of transformers', next token %d\n", label, n, worst,
                (int)best);
        for (uint32_t k = 0; k < g->n_inputs; k++)
            kn_rt_tensor_free(NULL, in[k]);
        for (uint32_t k = 0; k < g->n_outputs; k++)
            kn_rt_tensor_free(NULL, out[k]);
        free(ids);
        free(top);
        free(new_tokens);
    }
    free(in);
    free(out);
    kn_graph_destroy(g);
    /* Through the CLI: `kiln run --compare-to` the prefill and the decode
     * step against onnxruntime's outputs (every output, presents too). */
    for (int set = 0; set < 2; set++) {
        snprintf(cmd, sizeof cmd,
                 "'%s' run '%s' --device cpu --compare-to '" BIGDIR "test_data_set_%d' --rtol %g --atol %g >/dev/null",
                 g_kiln, plan, set, rtol, atol);
        run_cmd(cmd);
    }
    remove(plan);
    assert_int_equal(kn_diag_count(d, KN_ERROR), 0);
    kn_diag_destroy(d);
    json_decref(ref);
}

/* Greedy generation through the paged KV cache (the -O2 plan, all three
 * prompts in one call, so their sequences share the cache) gives exactly
 * transformers' new tokens; the text decodes to transformers' text. */
static void test_generate(void **state)
{
    (void)state;
    const char *plan = KN_BUILD_DIR "/smollm2_135m_gen.plan";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' compile '" BIGDIR "model.onnx' -o '%s' --max-seq-len 512", g_kiln, plan);
    run_cmd(cmd);
    json_t *ref = load_reference();
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(plan, NULL, d, &g), KN_OK);
    kn_session *s = NULL;
    assert_int_equal(kn_session_create(g, NULL, NULL, d, &s), KN_OK);
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.cache, KN_CACHE_PAGED);
    json_t *prompts = json_object_get(ref, "prompts");
    size_t np = json_array_size(prompts);
    assert_true(np == 3);
    int64_t *ids[3] = {0};
    uint32_t lens[3];
    int32_t *want[3];
    size_t n_want[3];
    uint32_t max_new = 0;
    for (size_t i = 0; i < np; i++) {
        json_t *p = json_array_get(prompts, i);
        size_t n;
        int32_t *v = json_ids(json_object_get(p, "prompt_ids"), &n);
        ids[i] = calloc(n, sizeof *ids[i]);
        assert_non_null(ids[i]);
        for (size_t k = 0; k < n; k++)
            ids[i][k] = v[k];
        lens[i] = (uint32_t)n;
        free(v);
        want[i] = json_ids(json_object_get(p, "new_tokens"), &n_want[i]);
        max_new = (uint32_t)(n_want[i] > max_new ? n_want[i] : max_new);
    }
    kn_generate_options o;
    kn_generate_options_defaults(&o);
    o.max_new_tokens = max_new;
    kn_generate_result res[3];
    kn_status st = kn_session_generate(s, (const int64_t *const *)ids, lens, 3, &o, res);
    if (st != KN_OK)
        kn_diag_print(d, stderr);
    assert_int_equal(st, KN_OK);
    for (size_t i = 0; i < np; i++) {
        const char *label = json_string_value(json_object_get(json_array_get(prompts, i), "label"));
        assert_true(res[i].n_tokens >= n_want[i]);
        for (size_t k = 0; k < n_want[i]; k++)
            if (res[i].tokens[k] != want[i][k])
                fail_msg("%s: new token %zu is %lld, transformers %d", label, k, (long long)res[i].tokens[k],
                         (int)want[i][k]);
        fprintf(stderr, "%s: %zu greedy tokens equal transformers' (prefill %.1f tok/s, decode %.1f tok/s)\n", label,
                n_want[i], res[i].n_prompt / res[i].prefill_s, res[i].n_decode / res[i].decode_s);
        free(ids[i]);
        free(want[i]);
    }
    kn_generate_results_free(s, res, 3);
    kn_session_destroy(s);
    kn_graph_destroy(g);
    remove(plan);
    assert_int_equal(kn_diag_count(d, KN_ERROR), 0);
    kn_diag_destroy(d);
    json_decref(ref);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--model") == 0) {
        struct stat st;
        if (stat(BIGDIR "model.onnx", &st) != 0) {
            printf("skipped: " BIGDIR "model.onnx is absent (build it with scripts/models/export_smollm2.py)\n");
            return SKIP_CODE;
        }
        g_kiln = argv[2];
        const struct CMUnitTest tests[] = {cmocka_unit_test(test_prefill_logits), cmocka_unit_test(test_generate)};
        return cmocka_run_group_tests(tests, NULL, NULL);
    }
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--model KILN]\n", argv[0]);
        return 2;
    }
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_tokenizer)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
