/* runtime/cpu/k_quant.c: com.microsoft MatMulNBits on hand values — odd K,
 * K not a multiple of the block, 4 and 8 bits, with and without zero points
 * (packed uint8 and unpacked float), bias — against the weights written out
 * unpacked in the test, and the errors for malformed operands. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model_builder.h"
#include "runtime/cpu/exec.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct nb_case {
    int64_t m, k, n, bits, bs;
    int zp_kind;      /* 0 none, 1 packed uint8, 2 float */
    bool bias;
    bool bad_b;       /* attribute N one more than B holds */
} nb_case;

/* Deterministic codes, scales, zero points, activations. */
static int code_of(const nb_case *c, int64_t n, int64_t k) { return (int)((n * 7 + k * 5 + 3) % (1 << c->bits)); }
static float scale_of(int64_t n, int64_t blk) { return 0.25f + 0.125f * (float)((n + 2 * blk) % 5); }
static int zp_of(const nb_case *c, int64_t n, int64_t blk) { return (int)((n * 3 + blk) % (1 << c->bits)); }
static float act_of(int64_t m, int64_t k) { return (float)((m * 11 + k * 3) % 9) - 4.0f; }

/* Packs codes low bits first into [N, k_blocks, blob] (padding codes are
 * set to the all-ones code: the kernel must ignore them). */
static void pack(const nb_case *c, int64_t nblk, int64_t blob, uint8_t *b)
{
    memset(b, 0, (size_t)(c->n * nblk * blob));
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t j = 0; j < nblk * c->bs; j++) {
            int v = j < c->k ? code_of(c, n, j) : (1 << c->bits) - 1;
            int64_t bit = j * c->bits;
            b[n * nblk * blob + bit / 8] |= (uint8_t)(v << (bit % 8));
        }
}

static void run_case(const nb_case *c)
{
    int64_t nblk = (c->k + c->bs - 1) / c->bs, blob = c->bs * c->bits / 8, zrow = (nblk * c->bits + 7) / 8;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_opset(b, m, "com.microsoft", 1);
    Onnx__GraphProto *g = m->graph;
    char dims[64];
    snprintf(dims, sizeof dims, "%lld,%lld", (long long)c->m, (long long)c->k);
    mb_input(b, g, "a", mb_tensor_type(b, KN_F32, dims));
    uint8_t bq[4096];
    assert_true(c->n * nblk * blob <= (int64_t)sizeof bq);
    pack(c, nblk, blob, bq);
    Onnx__TensorProto *bt = mb_initializer(b, g, "b", KN_U8, (int64_t[]){c->n, nblk, blob}, 3);
    mb_raw(b, bt, bq, (size_t)(c->n * nblk * blob));
    float sc[256];
    for (int64_t n = 0; n < c->n; n++)
        for (int64_t k = 0; k < nblk; k++)
            sc[n * nblk + k] = scale_of(n, k);
    mb_float_data(b, mb_initializer(b, g, "s", KN_F32, (int64_t[]){c->n, nblk}, 2), sc, (size_t)(c->n * nblk));
    char ins[64] = "a,b,s";
    if (c->zp_kind == 1) {
        uint8_t z[256] = {0};
        for (int64_t n = 0; n < c->n; n++)
            for (int64_t k = 0; k < nblk; k++)
                z[n * zrow + k * c->bits / 8] |= (uint8_t)(zp_of(c, n, k) << ((k * c->bits) % 8));
        mb_raw(b, mb_initializer(b, g, "z", KN_U8, (int64_t[]){c->n * zrow}, 1), z, (size_t)(c->n * zrow));
        strcat(ins, ",z");
    } else if (c->zp_kind == 2) {
        float z[256];
        for (int64_t n = 0; n < c->n; n++)
            for (int64_t k = 0; k < nblk; k++)
                z[n * nblk + k] = (float)zp_of(c, n, k) + 0.5f;
        mb_float_data(b, mb_initializer(b, g, "z", KN_F32, (int64_t[]){c->n, nblk}, 2), z, (size_t)(c->n * nblk));
        strcat(ins, ",z");
    }
    if (c->bias) {
        float bias[64];
        for (int64_t n = 0; n < c->n; n++)
            bias[n] = 0.5f * (float)n - 1.0f;
        mb_float_data(b, mb_initializer(b, g, "bias", KN_F32, (int64_t[]){c->n}, 1), bias, (size_t)c->n);
        strcat(ins, c->zp_kind ? ",," : ",,,");
        strcat(ins, "bias");
    }
    Onnx__NodeProto *nd = mb_node(b, g, "MatMulNBits", "mnb", ins, "y");
    nd->domain = mb_strdup(b, "com.microsoft");
    mb_attr_i(b, nd, "K", c->k);
    mb_attr_i(b, nd, "N", c->n + (c->bad_b ? 1 : 0));
    mb_attr_i(b, nd, "bits", c->bits);
    mb_attr_i(b, nd, "block_size", c->bs);
    mb_output(b, g, "y", NULL);

    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *gr = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, NULL, d, &gr), KN_OK);
    kn_rt_tensor *x, *y = NULL;
    assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 2, (int64_t[]){c->m, c->k}, &x), KN_OK);
    for (int64_t i = 0; i < c->m; i++)
        for (int64_t k = 0; k < c->k; k++)
            ((float *)x->data)[i * c->k + k] = act_of(i, k);
    const kn_rt_tensor *xin[1] = {x};
    kn_status s = kn_cpu_run(gr, NULL, d, xin, 1, &y, 1);
    if (c->bad_b) {
        assert_int_equal(s, KN_ERR_INVALID);
        assert_true(mb_diag_has(d, KN_ERROR, "mnb", "MatMulNBits", "B must be uint8"));
    } else {
        assert_int_equal(s, KN_OK);
        assert_int_equal(y->rank, 2);
        assert_int_equal(y->dims[0], c->m);
        assert_int_equal(y->dims[1], c->n);
        for (int64_t i = 0; i < c->m; i++)
            for (int64_t n = 0; n < c->n; n++) {
                double want = c->bias ? 0.5 * (double)n - 1.0 : 0;
                for (int64_t k = 0; k < c->k; k++) {
                    int64_t blk = k / c->bs;
                    double z = c->zp_kind == 0 ? (double)(1 << (c->bits - 1))
                               : c->zp_kind == 1 ? zp_of(c, n, blk)
                                                 : zp_of(c, n, blk) + 0.5;
                    want += act_of(i, k) * (code_of(c, n, k) - z) * scale_of(n, blk);
                }
                float got = ((float *)y->data)[i * c->n + n];
                if (fabs(got - want) > 1e-5 * (1 + fabs(want)))
                    fail_msg("row %lld col %lld: got %.9g, want %.9g", (long long)i, (long long)n, got, want);
            }
        kn_rt_tensor_free(NULL, y);
    }
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(gr);
    kn_diag_destroy(d);
    mb_free(b);
}

/* A fully hand-computed case: K = 3 in one block of 16, N = 1, codes 9, 7,
 * 15, zero point 8 (default), scale 0.5: W = [0.5, -0.5, 3.5]; a = [1, 2, 3]
 * gives 0.5 - 1 + 10.5 = 10. */
static void test_hand_values(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_opset(b, m, "com.microsoft", 1);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "a", mb_tensor_type(b, KN_F32, "1,3"));
    uint8_t q[8] = {0x79, 0x0f, 0, 0, 0, 0, 0, 0}; /* codes 9, 7, 15, 0 ... */
    mb_raw(b, mb_initializer(b, g, "b", KN_U8, (int64_t[]){1, 1, 8}, 3), q, 8);
    mb_float_data(b, mb_initializer(b, g, "s", KN_F32, (int64_t[]){1, 1}, 2), (float[]){0.5f}, 1);
    Onnx__NodeProto *nd = mb_node(b, g, "MatMulNBits", "mnb", "a,b,s", "y");
    nd->domain = mb_strdup(b, "com.microsoft");
    mb_attr_i(b, nd, "K", 3);
    mb_attr_i(b, nd, "N", 1);
    mb_attr_i(b, nd, "bits", 4);
    mb_attr_i(b, nd, "block_size", 16);
    mb_output(b, g, "y", NULL);
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_graph *gr = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, NULL, NULL, &gr), KN_OK);
    kn_rt_tensor *x, *y = NULL;
    assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 2, (int64_t[]){1, 3}, &x), KN_OK);
    memcpy(x->data, (float[]){1, 2, 3}, 3 * sizeof(float));
    const kn_rt_tensor *xin[1] = {x};
    assert_int_equal(kn_cpu_run(gr, NULL, NULL, xin, 1, &y, 1), KN_OK);
    assert_float_equal(((float *)y->data)[0], 10.0f, 0);
    kn_rt_tensor_free(NULL, y);
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(gr);
    mb_free(b);
}

static void test_odd_k_partial_block(void **state)
{
    (void)state;
    run_case(&(nb_case){.m = 3, .k = 21, .n = 5, .bits = 4, .bs = 16});
    run_case(&(nb_case){.m = 2, .k = 37, .n = 4, .bits = 4, .bs = 32, .zp_kind = 1});
}

static void test_zero_points(void **state)
{
    (void)state;
    /* three blocks: the packed zero-point row has 2 bytes, the last half used */
    run_case(&(nb_case){.m = 2, .k = 40, .n = 3, .bits = 4, .bs = 16, .zp_kind = 1});
    run_case(&(nb_case){.m = 2, .k = 40, .n = 3, .bits = 4, .bs = 16, .zp_kind = 2});
    run_case(&(nb_case){.m = 1, .k = 33, .n = 6, .bits = 4, .bs = 16, .zp_kind = 1, .bias = true});
}

static void test_eight_bits(void **state)
{
    (void)state;
    run_case(&(nb_case){.m = 2, .k = 19, .n = 3, .bits = 8, .bs = 16});
    run_case(&(nb_case){.m = 2, .k = 19, .n = 3, .bits = 8, .bs = 16, .zp_kind = 1, .bias = true});
}

static void test_bad_b(void **state)
{
    (void)state;
    run_case(&(nb_case){.m = 1, .k = 16, .n = 2, .bits = 4, .bs = 16, .bad_b = true});
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_values),
        cmocka_unit_test(test_odd_k_partial_block),
        cmocka_unit_test(test_zero_points),
        cmocka_unit_test(test_eight_bits),
        cmocka_unit_test(test_bad_b),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
