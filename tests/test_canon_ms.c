/* passes/canon_ms.c: com.microsoft MultiHeadAttention, GroupQueryAttention
 * and RotaryEmbedding become Attention / kiln RotaryHalf subgraphs (numerics
 * against onnxruntime are in tests/data/ms_attention), and the forms the
 * rewrite would not keep exactly fail with KN_ERR_UNSUPPORTED naming the
 * node. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pass_check.h"

#include <stdio.h>
#include <string.h>

static Onnx__ModelProto *model(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_opset(b, m, "com.microsoft", 1);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "q", mb_tensor_type(b, KN_F32, "2,5,16"));
    mb_input(b, g, "k", mb_tensor_type(b, KN_F32, "2,5,16"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "2,5,16"));
    mb_input(b, g, "mask", mb_tensor_type(b, KN_I32, "2,5"));
    mb_input(b, g, "seqlens", mb_tensor_type(b, KN_I32, "2"));
    mb_input(b, g, "total", mb_tensor_type(b, KN_I32, ""));
    mb_input(b, g, "past", mb_tensor_type(b, KN_F32, "2,4,3,4"));
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,4,5,8"));
    mb_input(b, g, "pos", mb_tensor_type(b, KN_I64, "2,5"));
    mb_input(b, g, "offset", mb_tensor_type(b, KN_I64, "1"));
    int64_t cd[2] = {16, 4};
    float zeros[64] = {0};
    mb_float_data(b, mb_initializer(b, g, "cos", KN_F32, cd, 2), zeros, 64);
    mb_float_data(b, mb_initializer(b, g, "sin", KN_F32, cd, 2), zeros, 64);
    return m;
}

static Onnx__NodeProto *ms(mb *b, Onnx__ModelProto *m, const char *op, const char *ins, const char *outs)
{
    Onnx__NodeProto *n = mb_node(b, m->graph, op, "ms", ins, outs);
    n->domain = mb_strdup(b, "com.microsoft");
    return n;
}

static kn_status run(mb *b, Onnx__ModelProto *m, kn_graph **out, char *msg, size_t msg_size)
{
    kn_graph *g = pc_import(b, m);
    FILE *f = fmemopen(msg, msg_size, "w");
    kn_diag *d = kn_diag_create(NULL, f);
    kn_status s = kn_pass_canon_ms(g, d);
    if (s == KN_OK)
        assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_diag_destroy(d);
    fclose(f);
    *out = g;
    return s;
}

static void test_rewrites(void **state)
{
    (void)state;
    static const struct {
        const char *op, *ins, *outs, *want;
        uint32_t n_nodes;
    } cases[] = {
        {"MultiHeadAttention", "q,k,v", "y", "Attention", 1},
        {"GroupQueryAttention", "q,k,v,,,seqlens,total", "y,pk,pv", "Attention", 7},
        {"RotaryEmbedding", "x,pos,cos,sin", "y", "RotaryHalf", 7},
        {"RotaryEmbedding", "x,offset,cos,sin", "y", "RotaryHalf", 12},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = model(b);
        Onnx__NodeProto *n = ms(b, m, cases[i].op, cases[i].ins, cases[i].outs);
        mb_attr_i(b, n, "num_heads", 4);
        if (strcmp(cases[i].op, "GroupQueryAttention") == 0)
            mb_attr_i(b, n, "kv_num_heads", 2);
        mb_output(b, m->graph, "y", NULL);
        kn_graph *g;
        char msg[512] = {0};
        assert_int_equal(run(b, m, &g, msg, sizeof msg), KN_OK);
        assert_int_equal(g->n_nodes, cases[i].n_nodes);
        const kn_node *a = pc_find(g, cases[i].want);
        const kn_attr *o = kn_node_attr(a, "_origins");
        assert_non_null(o);
        assert_int_equal(o->u.strings[0].len, 2);
        assert_int_equal(pc_count(g, cases[i].op), 0);
        kn_graph_destroy(g);
        mb_free(b);
    }
}

static void test_unsupported(void **state)
{
    (void)state;
    static const struct {
        const char *op, *ins, *attr, *why;
    } cases[] = {
        {"MultiHeadAttention", "q,k,v,,mask", NULL, "key_padding_mask"},
        {"MultiHeadAttention", "q", NULL, "packed QKV"},
        {"MultiHeadAttention", "q,k,v,,,,past,past", NULL, "past"},
        {"GroupQueryAttention", "q,k,v,past,past,seqlens,total", NULL, "past"},
        {"GroupQueryAttention", "q,k,v,,,seqlens,total", "do_rotary", "do_rotary"},
        {"GroupQueryAttention", "q,k,v,,,seqlens,total", "smooth_softmax", "smooth_softmax"},
        {"RotaryEmbedding", "x,pos,cos,sin", "interleaved", "interleaved"},
        {"RotaryEmbedding", "x,past,cos,sin", NULL, "position_ids"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = model(b);
        Onnx__NodeProto *n = ms(b, m, cases[i].op, cases[i].ins, "y");
        mb_attr_i(b, n, "num_heads", 4);
        if (strcmp(cases[i].op, "GroupQueryAttention") == 0)
            mb_attr_i(b, n, "kv_num_heads", 2);
        if (cases[i].attr)
            mb_attr_i(b, n, cases[i].attr, 1);
        mb_output(b, m->graph, "y", NULL);
        kn_graph *g;
        char msg[512] = {0};
        assert_int_equal(run(b, m, &g, msg, sizeof msg), KN_ERR_UNSUPPORTED);
        if (!strstr(msg, cases[i].why) || !strstr(msg, "'ms'") || !strstr(msg, cases[i].op))
            fail_msg("case %zu: message lacks '%s': %s", i, cases[i].why, msg);
        kn_graph_destroy(g);
        mb_free(b);
    }
}

/* The pipeline over MHA, GQA and RotaryEmbedding failing the Nth
 * allocation for every N: KN_ERR_NOMEM or the rewritten graph, no leak. */
static void test_alloc_fail(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = model(b);
    mb_attr_i(b, ms(b, m, "MultiHeadAttention", "q,k,v", "y1"), "num_heads", 4);
    Onnx__NodeProto *n = ms(b, m, "GroupQueryAttention", "q,k,v,,,seqlens,total", "y2");
    mb_attr_i(b, n, "num_heads", 4);
    mb_attr_i(b, n, "kv_num_heads", 2);
    ms(b, m, "RotaryEmbedding", "x,offset,cos,sin", "y3");
    mb_output(b, m->graph, "y1", NULL);
    mb_output(b, m->graph, "y2", NULL);
    mb_output(b, m->graph, "y3", NULL);
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    bool finished = false;
    for (long k = 1; !finished && k < 5000; k++) {
        mb_counter c;
        mb_counter_init(&c);
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_graph *g = NULL;
        assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, &c.a, d, &g), KN_OK);
        c.fail_at = c.calls + k;
        kn_pipeline_opts po = {0};
        po.verify_each = true;
        kn_status s = kn_pipeline_run(g, &po, d);
        assert_true(s == KN_OK || s == KN_ERR_NOMEM);
        finished = s == KN_OK && c.calls < c.fail_at;
        if (finished) {
            assert_int_equal(pc_count(g, "Attention"), 2);
            assert_int_equal(pc_count(g, "RotaryHalf"), 1);
        }
        kn_graph_destroy(g);
        kn_diag_destroy(d);
        assert_int_equal(c.live, 0);
    }
    assert_true(finished);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrites),
        cmocka_unit_test(test_unsupported),
        cmocka_unit_test(test_alloc_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
