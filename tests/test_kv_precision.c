/* The KV cache in the model's precision (passes/precision.c converting
 * kiln.PagedAttention, kiln.kv.dtype, runtime/kv_cache.c and the CPU
 * kernel runtime/cpu/k_paged_attn.c storing that dtype). The decoders of
 * tests/models (llama_gqa_tiny, qwen2_tiny, gpt2_tiny) compiled for
 * target cpu in float32, float16 and bfloat16, and in float16/bfloat16
 * with --keep-fp32 PagedAttention (the float32 cache every plan had
 * before):
 *   - graphs: the float16/bfloat16 plans' PagedAttention nodes read and
 *     write their dtype (Q, K, V, cos/sin, output), no Cast next to them;
 *     kiln.kv.dtype names it, kiln.kv.bytes is half the float32 plan's;
 *     the kept plans record float32 and cast around the node; a pattern
 *     naming one layer's attention keeps them all (one cache, one dtype);
 *   - CPU sessions over a 10-token prompt and 7 steps fed the float32
 *     plan's greedy tokens: the float16 plans pick the float32 plan's
 *     tokens with last-token logits within 2e-2 of it (the float32 and
 *     the float16-cache plans alike), the float16 cache within 1e-2 of
 *     the float32 cache (gpt2_tiny, without rotary: equal; the others
 *     round the rotated Q and K to float16); bfloat16 within 0.25 of
 *     float32 (its 8-bit mantissa: greedy picks may differ);
 *     the session's info names the cache's dtype and its bytes;
 *   - --kv-cache-mem (kiln.kv.mem): the same bytes hold twice the blocks
 *     in float16, and the maximum sequence length that filled the pool
 *     grows with it;
 *   - a plan whose kiln.kv.dtype is none of float32/float16/bfloat16 is
 *     refused by the session. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cli.h"
#include "kiln/session.h"
#include "model_builder.h"
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const models[] = {"llama_gqa_tiny", "qwen2_tiny", "gpt2_tiny"};

#define STEPS 8 /* the prompt, then 7 single tokens */

/* The model through kiln compile's -O2 pipeline for target cpu in `to`,
 * with `keep` as --keep-fp32 (NULL: none) and kiln.kv.mem = mem (0: not
 * given). */
static kn_graph *compiled(const char *name, kn_dtype to, const char *keep, const char *mem)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/models/%s/model.onnx", KN_SOURCE_DIR, name);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_file(path, NULL, NULL, d, &g), KN_OK);
    if (mem)
        assert_int_equal(kn_rw_set_meta(g, "kiln.kv.mem", mem), KN_OK);
    const char *keeps[1] = {keep};
    kn_precision_opts po = {to, keeps, keep ? 1 : 0, false};
    kn_pipeline_opts o = {0};
    o.precision = &po;
    assert_int_equal(kn_compile_graph(g, "cpu", &o, d), KN_OK);
    kn_diag_destroy(d);
    return g;
}

static const char *meta(const kn_graph *g, const char *key)
{
    const char *v = kn_rw_get_meta(g, key);
    assert_non_null(v);
    return v;
}

static const kn_node *producer(const kn_graph *g, kn_id v)
{
    if (v == KN_NONE || g->values[v].kind != KN_VAL_NODE)
        return NULL;
    return &g->nodes[g->values[v].producer];
}

/* PagedAttention nodes of g; each reads and writes `dt` (every input but
 * a mask), and a Cast feeds one or reads one iff `casts`. */
static uint32_t check_attention(const kn_graph *g, kn_dtype dt, bool casts)
{
    uint32_t n = 0, cast_in = 0, cast_out = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *nd = &g->nodes[k];
        if (nd->op == KN_OP_KILN_PagedAttention) {
            n++;
            for (uint32_t i = 0; i < nd->n_inputs; i++) {
                if (nd->inputs[i] == KN_NONE || i == 3)
                    continue;
                assert_int_equal(g->values[nd->inputs[i]].type.dtype, dt);
                const kn_node *p = producer(g, nd->inputs[i]);
                cast_in += p && p->op == KN_OP_Cast;
            }
            assert_int_equal(g->values[nd->outputs[0]].type.dtype, dt);
        }
        if (nd->op == KN_OP_Cast) {
            const kn_node *p = producer(g, nd->inputs[0]);
            cast_out += p && p->op == KN_OP_KILN_PagedAttention;
        }
    }
    assert_true(n > 0);
    assert_int_equal(cast_in > 0, casts);
    assert_int_equal(cast_out > 0, casts);
    return n;
}

static void graphs(void **st)
{
    (void)st;
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        kn_graph *f32 = compiled(models[m], KN_F32, NULL, NULL);
        uint64_t bytes32 = strtoull(meta(f32, "kiln.kv.bytes"), NULL, 10);
        assert_string_equal(meta(f32, "kiln.kv.dtype"), "float32");
        uint32_t n = check_attention(f32, KN_F32, false);
        for (int k = 0; k < 2; k++) {
            kn_dtype to = k ? KN_BF16 : KN_F16;
            kn_graph *low = compiled(models[m], to, NULL, NULL);
            assert_string_equal(meta(low, "kiln.kv.dtype"), kn_dtype_name(to));
            assert_int_equal(strtoull(meta(low, "kiln.kv.bytes"), NULL, 10) * 2, bytes32);
            assert_string_equal(meta(low, "kiln.kv.blocks"), meta(f32, "kiln.kv.blocks"));
            assert_int_equal(check_attention(low, to, false), n);
            kn_graph_destroy(low);
            /* the op type, or one layer's node by name: all kept */
            const char *keeps[2] = {"PagedAttention", "*layers.0*PagedAttention"};
            if (strcmp(models[m], "gpt2_tiny") == 0)
                keeps[1] = "*h.0*PagedAttention";
            for (int j = 0; j < 2; j++) {
                kn_graph *kept = compiled(models[m], to, keeps[j], NULL);
                assert_string_equal(meta(kept, "kiln.kv.dtype"), "float32");
                assert_string_equal(meta(kept, "kiln.kv.bytes"), meta(f32, "kiln.kv.bytes"));
                assert_int_equal(check_attention(kept, KN_F32, true), n);
                kn_graph_destroy(kept);
            }
        }
        kn_graph_destroy(f32);
    }
}

/* Last-token logits of STEPS runs (the prompt, then the greedy tokens, or
 * those of `feed` when not NULL: the same inputs as another session's)
 * and the tokens picked. */
static void generate(kn_graph *g, kn_dtype kv, float *logits, int64_t *tok, const int64_t *feed, uint32_t vocab)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_session *s;
    assert_int_equal(kn_session_create(g, NULL, NULL, d, &s), KN_OK);
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.cache, KN_CACHE_PAGED);
    assert_int_equal(info.kv_dtype, kv);
    assert_int_equal(info.kv_bytes, strtoull(meta(g, "kiln.kv.bytes"), NULL, 10));
    assert_int_equal(info.vocab, vocab);
    uint32_t seq;
    assert_int_equal(kn_session_add_sequence(s, &seq), KN_OK);
    int64_t prompt[10] = {1, 15, 200, 42, 7, 99, 250, 3, 8, 77}; /* under every vocabulary (gpt2_tiny: 256) */
    for (int step = 0; step < STEPS; step++) {
        float *l = logits + (size_t)step * vocab;
        if (step == 0)
            assert_int_equal(kn_session_forward(s, seq, prompt, 10, l), KN_OK);
        else
            assert_int_equal(kn_session_forward(s, seq, feed ? &feed[step - 1] : &tok[step - 1], 1, l), KN_OK);
        int64_t best = 0;
        for (uint32_t v = 1; v < vocab; v++)
            best = l[v] > l[best] ? v : best;
        tok[step] = best;
    }
    kn_session_destroy(s);
    kn_diag_destroy(d);
}

static double worst_diff(const float *a, const float *b, size_t n)
{
    double w = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        w = e > w || isnan(e) ? e : w;
    }
    return w;
}

static void sessions(void **st)
{
    (void)st;
    for (size_t m = 0; m < sizeof models / sizeof models[0]; m++) {
        kn_graph *f32 = compiled(models[m], KN_F32, NULL, NULL);
        const kn_type *lt = &f32->values[f32->outputs[0]].type;
        uint32_t vocab = (uint32_t)lt->shape.dims[lt->shape.rank - 1].value;
        size_t n = (size_t)STEPS * vocab;
        float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got), *was = malloc(n * sizeof *was);
        int64_t want_tok[STEPS], got_tok[STEPS], was_tok[STEPS];
        assert_true(want && got && was);
        generate(f32, KN_F32, want, want_tok, NULL, vocab);
        for (int k = 0; k < 2; k++) {
            kn_dtype to = k ? KN_BF16 : KN_F16;
            kn_graph *low = compiled(models[m], to, NULL, NULL);
            kn_graph *kept = compiled(models[m], to, "PagedAttention", NULL);
            generate(low, to, got, got_tok, want_tok, vocab); /* the float32 plan's tokens in */
            generate(kept, KN_F32, was, was_tok, want_tok, vocab);
            double e_new = worst_diff(got, want, n), e_old = worst_diff(was, want, n);
            double e_cache = worst_diff(got, was, n);
            int same = 0, same_old = 0;
            for (int i = 0; i < STEPS; i++)
                same += got_tok[i] == want_tok[i], same_old += was_tok[i] == want_tok[i];
            print_message("%s %s: logits within %.3g of float32 (float32 cache: %.3g), %.3g of the float32-cache "
                          "plan; greedy picks as float32's %d of %d (float32 cache: %d)\n",
                          models[m], kn_dtype_name(to), e_new, e_old, e_cache, same, STEPS, same_old);
            if (to == KN_F16) {
                assert_memory_equal(got_tok, want_tok, sizeof got_tok);
                assert_memory_equal(was_tok, want_tok, sizeof was_tok);
                assert_true(e_new <= 2e-2 && e_old <= 2e-2);
                assert_true(e_cache <= 1e-2);
            } else {
                assert_true(e_new <= 0.25 && e_old <= 0.25);
            }
            kn_graph_destroy(low);
            kn_graph_destroy(kept);
        }
        free(want), free(got), free(was);
        kn_graph_destroy(f32);
    }
}

static void cache_mem(void **st)
{
    (void)st;
    /* llama_gqa_tiny: 2 layers x 2 kv heads x 32, blocks of 16 tokens: 16384 bytes a block in float32 */
    kn_graph *f32 = compiled("llama_gqa_tiny", KN_F32, NULL, "163840");
    assert_string_equal(meta(f32, "kiln.kv.blocks"), "10");
    assert_string_equal(meta(f32, "kiln.kv.max_seq_len"), "160");
    kn_graph *f16 = compiled("llama_gqa_tiny", KN_F16, NULL, "163840");
    assert_string_equal(meta(f16, "kiln.kv.blocks"), "20");
    assert_string_equal(meta(f16, "kiln.kv.max_seq_len"), "320");
    assert_string_equal(meta(f16, "kiln.kv.bytes"), "163840");
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_session *s;
    assert_int_equal(kn_session_create(f16, NULL, NULL, d, &s), KN_OK);
    kn_session_info info;
    kn_session_get_info(s, &info);
    assert_int_equal(info.n_blocks, 20);
    kn_session_destroy(s);
    /* at run time too: --kv-cache-mem counts float16 blocks */
    kn_session_options o;
    kn_session_options_defaults(&o);
    o.kv_cache_mem = 81920;
    assert_int_equal(kn_session_create(f16, &o, NULL, d, &s), KN_OK);
    kn_session_get_info(s, &info);
    assert_int_equal(info.n_blocks, 10);
    assert_int_equal(info.kv_bytes, 81920);
    kn_session_destroy(s);
    /* an unknown cache dtype is refused */
    assert_int_equal(kn_rw_set_meta(f16, "kiln.kv.dtype", "int8"), KN_OK);
    assert_int_equal(kn_session_create(f16, NULL, NULL, d, &s), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "kiln.kv.dtype 'int8' is not float32, float16 or bfloat16"));
    kn_diag_destroy(d);
    kn_graph_destroy(f16);
    kn_graph_destroy(f32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(graphs),
        cmocka_unit_test(sessions),
        cmocka_unit_test(cache_mem),
    };
    return cmocka_run_group_tests_name("kv_precision", tests, NULL, NULL);
}
