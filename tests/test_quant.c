/* runtime/cpu/k_quant.c: com.microsoft MatMulNBits on hand values — odd K,
 * K not a multiple of the block, 4 and 8 bits, with and without zero points
 * (packed uint8 and unpacked float), bias — against the weights written out
 * unpacked in the test, and the errors for malformed operands.
 * passes/quantize.c: MatMul / Gemm (transB, bias) with constant weights
 * become MatMulNBits whose outputs stay close to the float model, RTN
 * codes on a hand-checked group, a custom quantizer callback, --keep-fp;
 * W8A8 with static and per-token dynamic activation scales, SmoothQuant
 * (folded into a LayerNormalization, or a Mul). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pass_check.h"
#include "passes/rewrite.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/linalg.h"
#include "runtime/cpu/util.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

/* A model importing com.microsoft, its graph's input "a" [rows, k] of dtype dt. */
static Onnx__ModelProto *ms_model(mb *b, int dt, int64_t rows, int64_t k, Onnx__GraphProto **g)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    mb_opset(b, m, "com.microsoft", 1);
    *g = m->graph;
    char dims[64];
    snprintf(dims, sizeof dims, "%lld,%lld", (long long)rows, (long long)k);
    mb_input(b, *g, "a", mb_tensor_type(b, dt, dims));
    return m;
}

/* The built model m, packed and imported. */
static kn_graph *import_built(mb *b, Onnx__ModelProto *m, kn_diag *d)
{
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_graph *gr = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, NULL, d, &gr), KN_OK);
    return gr;
}

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
    Onnx__GraphProto *g;
    Onnx__ModelProto *m = ms_model(b, KN_F32, c->m, c->k, &g);
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

    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *gr = import_built(b, m, d);
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
        /* the portable copy gives the same bits as the AVX2 one */
        kn_rt_tensor *y2 = NULL;
        kn_nbits_isa = KN_GEMM_ISA_BASE;
        s = kn_cpu_run(gr, NULL, d, xin, 1, &y2, 1);
        kn_nbits_isa = KN_GEMM_ISA_AUTO;
        assert_int_equal(s, KN_OK);
        assert_memory_equal(y->data, y2->data, (size_t)(c->m * c->n) * sizeof(float));
        kn_rt_tensor_free(NULL, y2);
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

/* Blocks long enough for the vector paths (16 codes at a time, 8 lanes),
 * their tails, more rows than one pass takes (16), 2, 4 and 8 bits. */
static void test_long_blocks(void **state)
{
    (void)state;
    run_case(&(nb_case){.m = 19, .k = 200, .n = 5, .bits = 4, .bs = 32, .zp_kind = 1, .bias = true});
    run_case(&(nb_case){.m = 1, .k = 256, .n = 4, .bits = 4, .bs = 128});
    run_case(&(nb_case){.m = 17, .k = 130, .n = 3, .bits = 8, .bs = 64, .zp_kind = 2});
    run_case(&(nb_case){.m = 3, .k = 70, .n = 4, .bits = 2, .bs = 32, .zp_kind = 1});
}

static void test_bad_b(void **state)
{
    (void)state;
    run_case(&(nb_case){.m = 1, .k = 16, .n = 2, .bits = 4, .bs = 16, .bad_b = true});
}

/* MatMulIntegerToFloat on the CPU against int64 sums written out here
 * and the kernel's float formula (so bit for bit): uint8 A x int8 B and
 * int8 A x uint8 B, per-tensor and per-column zero points, 19 rows (two
 * passes of 16), K odd (a row of B left over after the pairs), N not a
 * multiple of 8; and K = 40001 at the extremes (255 x -255 every time:
 * -2.6e9, past int32, so the partial sums must be flushed in time). */
typedef struct imtf_case {
    int64_t m, k, n;
    int adt, bdt;     /* KN_U8 / KN_I8 */
    int azp, bzp_mode; /* bzp_mode 0 none, 1 per tensor, 2 per column */
    bool extreme;
} imtf_case;

static int imtf_a(const imtf_case *c, int64_t i)
{
    if (c->extreme)
        return c->adt == KN_U8 ? 255 : -128;
    int v = (int)((i * 37 + 11) % 256);
    return c->adt == KN_U8 ? v : v - 128;
}

static int imtf_w(const imtf_case *c, int64_t i)
{
    if (c->extreme)
        return c->bdt == KN_I8 ? -128 : 255;
    int v = (int)((i * 53 + 7) % 256);
    return c->bdt == KN_U8 ? v : v - 128;
}

static int imtf_bzp(const imtf_case *c, int64_t n)
{
    if (c->bzp_mode == 0)
        return 0;
    if (c->extreme)
        return c->bdt == KN_I8 ? 127 : 0;
    int v = (int)(c->bzp_mode == 1 ? 77 : (n * 29 + 5) % 256);
    return c->bdt == KN_U8 ? v : v - 128;
}

static void imtf_run(const imtf_case *c)
{
    mb *b = mb_new();
    Onnx__GraphProto *g;
    Onnx__ModelProto *m = ms_model(b, c->adt, c->m, c->k, &g);
    size_t nb = (size_t)(c->k * c->n);
    uint8_t *w = mb_alloc(b, nb);
    for (size_t i = 0; i < nb; i++)
        w[i] = (uint8_t)imtf_w(c, (int64_t)i);
    mb_raw(b, mb_initializer(b, g, "w", c->bdt, (int64_t[]){c->k, c->n}, 2), w, nb);
    float sa = 0.0123f, sb[16], bias[16];
    for (int64_t n = 0; n < c->n; n++) {
        sb[n] = 0.5f + 0.0371f * (float)n;
        bias[n] = 0.25f * (float)n - 1.0f;
    }
    mb_float_data(b, mb_initializer(b, g, "sa", KN_F32, NULL, 0), &sa, 1);
    mb_float_data(b, mb_initializer(b, g, "sb", KN_F32, (int64_t[]){c->n}, 1), sb, (size_t)c->n);
    uint8_t za = (uint8_t)c->azp, zb[16];
    mb_raw(b, mb_initializer(b, g, "za", c->adt, NULL, 0), &za, 1);
    for (int64_t n = 0; n < c->n; n++)
        zb[n] = (uint8_t)imtf_bzp(c, n);
    if (c->bzp_mode == 1)
        mb_raw(b, mb_initializer(b, g, "zb", c->bdt, NULL, 0), zb, 1);
    else if (c->bzp_mode == 2)
        mb_raw(b, mb_initializer(b, g, "zb", c->bdt, (int64_t[]){c->n}, 1), zb, (size_t)c->n);
    mb_float_data(b, mb_initializer(b, g, "bias", KN_F32, (int64_t[]){c->n}, 1), bias, (size_t)c->n);
    Onnx__NodeProto *nd =
        mb_node(b, g, "MatMulIntegerToFloat", "mitf", c->bzp_mode ? "a,w,sa,sb,za,zb,bias" : "a,w,sa,sb,za,,bias", "y");
    nd->domain = mb_strdup(b, "com.microsoft");
    mb_output(b, g, "y", NULL);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *gr = import_built(b, m, d);
    kn_rt_tensor *x, *y = NULL;
    assert_int_equal(kn_rt_tensor_new(NULL, c->adt, 2, (int64_t[]){c->m, c->k}, &x), KN_OK);
    for (int64_t i = 0; i < c->m * c->k; i++)
        ((uint8_t *)x->data)[i] = (uint8_t)imtf_a(c, i);
    const kn_rt_tensor *xin[1] = {x};
    assert_int_equal(kn_cpu_run(gr, NULL, d, xin, 1, &y, 1), KN_OK);
    assert_int_equal(y->dtype, KN_F32);
    for (int64_t r = 0; r < c->m; r++)
        for (int64_t n = 0; n < c->n; n++) {
            int64_t acc = 0;
            for (int64_t k = 0; k < c->k; k++)
                acc += (int64_t)(imtf_a(c, r * c->k + k) - (c->adt == KN_U8 ? c->azp : (int8_t)c->azp)) *
                       (imtf_w(c, k * c->n + n) - imtf_bzp(c, n));
            if (c->extreme)
                assert_true(acc == -(int64_t)255 * 255 * c->k);
            float mul = sa * sb[n];
            float want = (float)((double)acc * (double)mul + (double)bias[n]);
            float got = ((const float *)y->data)[r * c->n + n];
            if (memcmp(&got, &want, sizeof got) != 0)
                fail_msg("row %lld col %lld: got %.9g, want %.9g", (long long)r, (long long)n, got, want);
        }
    kn_rt_tensor_free(NULL, y);
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(gr);
    kn_diag_destroy(d);
    mb_free(b);
}

static void test_integer_to_float(void **state)
{
    (void)state;
    imtf_run(&(imtf_case){.m = 19, .k = 37, .n = 13, .adt = KN_U8, .bdt = KN_I8, .azp = 128, .bzp_mode = 0});
    imtf_run(&(imtf_case){.m = 3, .k = 40, .n = 16, .adt = KN_I8, .bdt = KN_U8, .azp = 3, .bzp_mode = 2});
    imtf_run(&(imtf_case){.m = 1, .k = 9, .n = 5, .adt = KN_U8, .bdt = KN_U8, .azp = 0, .bzp_mode = 1});
    imtf_run(&(imtf_case){.m = 2, .k = 40001, .n = 9, .adt = KN_U8, .bdt = KN_I8, .azp = 0, .bzp_mode = 1,
                          .extreme = true});
}

/* ---- the quantize pass ---- */

/* x [3, 40] → MatMul(W [40, 24]) → Gemm(transB, W2 [8, 24], C [8]) → y */
static Onnx__ModelProto *linear_model(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "3,40"));
    float w[40 * 24], w2[8 * 24], c[8];
    for (int i = 0; i < 40 * 24; i++)
        w[i] = (float)sin(0.37 * i) * 0.5f;
    for (int i = 0; i < 8 * 24; i++)
        w2[i] = (float)cos(0.21 * i) * 0.3f;
    for (int i = 0; i < 8; i++)
        c[i] = 0.1f * (float)i;
    mb_float_data(b, mb_initializer(b, g, "w", KN_F32, (int64_t[]){40, 24}, 2), w, 40 * 24);
    mb_float_data(b, mb_initializer(b, g, "w2", KN_F32, (int64_t[]){8, 24}, 2), w2, 8 * 24);
    mb_float_data(b, mb_initializer(b, g, "c", KN_F32, (int64_t[]){8}, 1), c, 8);
    mb_node(b, g, "MatMul", "fc1", "x,w", "h");
    mb_attr_i(b, mb_node(b, g, "Gemm", "fc2", "h,w2,c", "y"), "transB", 1);
    mb_output(b, g, "y", NULL);
    return m;
}

static double nmse(const kn_rt_tensor *ref, const kn_rt_tensor *got)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < ref->numel; i++) {
        double r = kn_get_f64(ref->dtype, ref->data, i), q = kn_get_f64(got->dtype, got->data, i);
        num += (r - q) * (r - q);
        den += r * r;
    }
    return num / (den > 0 ? den : 1);
}

/* Quantizes linear_model with opts and returns the output NMSE against
 * the float model; *g_out keeps the quantized graph. */
static double quantized_error(mb *b, const kn_quantize_opts *o, kn_graph **g_out)
{
    Onnx__ModelProto *m = linear_model(b);
    kn_graph *f = pc_import(b, m), *g = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_infer_shapes(g, d), KN_OK);
    assert_int_equal(kn_pass_quantize(g, o, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_diag_destroy(d);
    kn_rt_tensor *y0 = NULL, *y1 = NULL;
    pc_run(f, &y0);
    pc_run(g, &y1);
    double e = nmse(y0, y1);
    kn_rt_tensor_free(NULL, y0);
    kn_rt_tensor_free(NULL, y1);
    kn_graph_destroy(f);
    *g_out = g;
    return e;
}

static void test_quantize_int4_int8(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g;
    kn_quantize_opts o4 = {4, 16, NULL, NULL, NULL, 0, false};
    double e4 = quantized_error(b, &o4, &g);
    assert_int_equal(pc_count(g, "MatMul"), 0);
    assert_int_equal(pc_count(g, "Gemm"), 0);
    assert_int_equal(pc_count(g, "MatMulNBits"), 2);
    const kn_node *n = pc_find(g, "MatMulNBits");
    assert_int_equal(kn_node_attr(n, "K")->u.i, 40);
    assert_int_equal(kn_node_attr(n, "N")->u.i, 24);
    assert_int_equal(kn_node_attr(n, "block_size")->u.i, 16);
    const kn_tensor *codes = kn_rw_const(g, n->inputs[1]);
    assert_non_null(codes);
    assert_int_equal(codes->n_elems, 24 * 3 * 8); /* 3 blocks of 16 (the last half padding) */
    kn_graph_destroy(g);
    kn_quantize_opts o8 = {8, 16, NULL, NULL, NULL, 0, false};
    double e8 = quantized_error(b, &o8, &g);
    kn_graph_destroy(g);

    /* the same model, inputs and RTN written independently in numpy
     * (round-half-away, reciprocal scale) give output NMSE 0.018550 (int4)
     * and 0.00037418 (int8, group 16) */
    assert_true(fabs(e4 - 0.018550) < 0.01 * 0.018550);
    assert_true(fabs(e8 - 0.00037418) < 0.01 * 0.00037418);
    mb_free(b);
}

/* RTN on one group: w = [-1, -0.5, 0, 0.25, 0.5, ..., 3.5] (16 values):
 * min -1, max 3.5, scale 4.5 / 15 = 0.3, zero point round(1 / 0.3) = 3. */
static void test_rtn_group(void **state)
{
    (void)state;
    float w[16];
    for (int i = 0; i < 16; i++)
        w[i] = i == 0 ? -1.0f : 0.25f * (float)(i - 2);
    w[15] = 3.5f;
    uint8_t codes[8], zp[1];
    float sc[1];
    kn_quant_weight q = {"t", w, 16, 1, 4, 16, codes, sc, zp};
    assert_int_equal(kn_quant_rtn(NULL, &q, NULL), KN_OK);
    assert_float_equal(sc[0], 4.5f / 15.0f, 1e-7);
    assert_int_equal(zp[0], 3);
    for (int i = 0; i < 16; i++) {
        int c = (codes[i / 2] >> (4 * (i % 2))) & 15;
        int want = (int)roundf(w[i] * (1.0f / sc[0]) + 3.0f);
        want = want < 0 ? 0 : want > 15 ? 15 : want;
        assert_int_equal(c, want);
        /* dequantized within half a step */
        assert_true(fabs(((float)c - 3.0f) * sc[0] - w[i]) <= 0.5 * sc[0] + 1e-6);
    }
    assert_int_equal(codes[0] & 15, 0);   /* -1 → 0 */
    assert_int_equal(codes[7] >> 4, 15);  /* 3.5 → 15 */
}

/* kn_quant_rtn against the per-column loop it replaced (column by column,
 * roundf), byte for byte: K = 300 (groups of 32, the last 12), N = 70
 * (past one 64-column pass), 4 and 8 bits, with halves exactly between
 * two codes (both signs), zeros of both signs, huge values, infinities
 * and NaN among the weights. */
static void rtn_reference(const kn_quant_weight *q)
{
    int64_t nblk = (q->k + q->group - 1) / q->group, blob = q->group * q->bits / 8, zrow = (nblk * q->bits + 7) / 8;
    int qmax = (1 << q->bits) - 1;
    memset(q->codes, 0, (size_t)(q->n * nblk * blob));
    memset(q->zero_points, 0, (size_t)(q->n * zrow));
    for (int64_t n = 0; n < q->n; n++)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t k0 = b * q->group, k1 = k0 + q->group < q->k ? k0 + q->group : q->k;
            float mn = 0, mx = 0;
            for (int64_t k = k0; k < k1; k++) {
                float v = q->w[k * q->n + n];
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
            float scale = (mx - mn) / (float)qmax;
            if (!(scale > 0) || !isfinite(scale))
                scale = 1.0f;
            float zf = -mn / scale;
            int zp = zf < 0 ? 0 : zf > (float)qmax ? qmax : (int)roundf(zf);
            q->scales[n * nblk + b] = scale;
            q->zero_points[n * zrow + b * q->bits / 8] |= (uint8_t)(zp << ((b * q->bits) % 8));
            for (int64_t k = k0; k < k1; k++) {
                float r = roundf(q->w[k * q->n + n] * (1.0f / scale) + (float)zp);
                int c = !(r >= 0) ? 0 : r > (float)qmax ? qmax : (int)r;
                int64_t bit = (k - k0) * q->bits;
                q->codes[(n * nblk + b) * blob + bit / 8] |= (uint8_t)(c << (bit % 8));
            }
        }
}

static void test_rtn_reference(void **state)
{
    (void)state;
    enum { K = 300, N = 70, G = 32, NBLK = (K + G - 1) / G };
    float *w = malloc(sizeof(float) * K * N);
    assert_non_null(w);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < K * N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        w[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0) * (i % 5 == 0 ? 8.0f : 1.0f);
    }
    /* column 0, group 0: range [0, 15] (scale 1 at 4 bits, zero point 0), halves between codes */
    const float halves[] = {0.0f, 15.0f, 2.5f, 7.5f, 0.5f, 14.5f, -0.0f, 1.5f};
    for (int k = 0; k < G; k++)
        w[k * N] = k < 8 ? halves[k] : (float)(k % 16);
    /* column 1, group 0: negative halves (range [-15, 0]: zero point 15) */
    for (int k = 0; k < G; k++)
        w[k * N + 1] = -w[k * N];
    w[40 * N + 2] = NAN;
    w[41 * N + 3] = INFINITY;
    w[42 * N + 4] = -INFINITY;
    w[43 * N + 5] = 3e38f;
    w[44 * N + 6] = -3e38f;
    w[45 * N + 69] = 1e-30f;
    for (int bits = 4; bits <= 8; bits += 4) {
        size_t ncodes = (size_t)N * NBLK * G * (size_t)bits / 8, nzp = (size_t)N * ((NBLK * bits + 7) / 8);
        uint8_t *codes[2] = {malloc(ncodes), malloc(ncodes)}, *zp[2] = {malloc(nzp), malloc(nzp)};
        float *sc[2] = {malloc(sizeof(float) * N * NBLK), malloc(sizeof(float) * N * NBLK)};
        for (int i = 0; i < 2; i++)
            assert_true(codes[i] && zp[i] && sc[i]);
        kn_quant_weight q = {"t", w, K, N, bits, G, codes[0], sc[0], zp[0], NULL};
        assert_int_equal(kn_quant_rtn(NULL, &q, NULL), KN_OK);
        kn_quant_weight r = {"t", w, K, N, bits, G, codes[1], sc[1], zp[1], NULL};
        rtn_reference(&r);
        assert_memory_equal(codes[0], codes[1], ncodes);
        assert_memory_equal(zp[0], zp[1], nzp);
        assert_memory_equal(sc[0], sc[1], sizeof(float) * N * NBLK);
        if (bits == 4) { /* the halves rounded away from zero */
            const int want0[] = {0, 15, 3, 8, 1, 15, 0, 2}, want1[] = {15, 0, 13, 8, 15, 1, 15, 14};
            for (int k = 0; k < 8; k++) {
                assert_int_equal((codes[0][k / 2] >> (4 * (k % 2))) & 15, want0[k]);
                assert_int_equal((codes[0][NBLK * G / 2 + k / 2] >> (4 * (k % 2))) & 15, want1[k]);
            }
        }
        for (int i = 0; i < 2; i++) {
            free(codes[i]);
            free(zp[i]);
            free(sc[i]);
        }
    }
    free(w);
}

static int n_called;

/* A quantizer that writes zero weights (codes = zero points = 8, scale 1). */
static kn_status zero_quantizer(void *ctx, const kn_quant_weight *q, kn_diag *d)
{
    (void)d;
    n_called += *(int *)ctx;
    int64_t nblk = (q->k + q->group - 1) / q->group, zrow = (nblk * q->bits + 7) / 8;
    memset(q->codes, 0x88, (size_t)(q->n * nblk * q->group * q->bits / 8));
    memset(q->zero_points, 0x88, (size_t)(q->n * zrow));
    for (int64_t i = 0; i < q->n * nblk; i++)
        q->scales[i] = 1.0f;
    return KN_OK;
}

static void test_quantize_callback_and_keep(void **state)
{
    (void)state;
    mb *b = mb_new();
    int one = 1;
    n_called = 0;
    const char *keep[] = {"fc2"};
    kn_quantize_opts o = {4, 32, zero_quantizer, &one, keep, 1, false};
    Onnx__ModelProto *m = linear_model(b);
    kn_graph *g = pc_import(b, m);
    assert_int_equal(kn_pass_infer_shapes(g, NULL), KN_OK);
    assert_int_equal(kn_pass_quantize(g, &o, NULL), KN_OK);
    assert_int_equal(n_called, 1); /* fc1 only: fc2 kept */
    assert_int_equal(pc_count(g, "MatMulNBits"), 1);
    assert_int_equal(pc_count(g, "Gemm"), 1);
    kn_rt_tensor *y = NULL;
    pc_run(g, &y);
    for (int64_t i = 0; i < y->numel; i++) /* h = 0, so y = C */
        assert_float_equal(((float *)y->data)[i], 0.1f * (float)(i % 8), 1e-6);
    kn_rt_tensor_free(NULL, y);
    kn_graph_destroy(g);
    /* bad options are refused */
    g = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_quantize_opts bad = {4, 24, NULL, NULL, NULL, 0, false};
    assert_int_equal(kn_pass_quantize(g, &bad, d), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "group size 24"));
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    mb_free(b);
}

/* A quantizer whose codes stand for W diag(s) with s = 1, 2, 4, 8 by
 * channel (RTN of the scaled weights): the pass must divide the input by
 * s (a Mul before the MatMulNBits), else the output is far off. */
static kn_status scaling_quantizer(void *ctx, const kn_quant_weight *q, kn_diag *d)
{
    (void)ctx;
    float *ws = malloc((size_t)(q->k * q->n) * sizeof *ws);
    if (!ws)
        return KN_ERR_NOMEM;
    for (int64_t k = 0; k < q->k; k++) {
        q->in_scale[k] = (float)(1 << (k % 4));
        for (int64_t n = 0; n < q->n; n++)
            ws[k * q->n + n] = q->w[k * q->n + n] * q->in_scale[k];
    }
    kn_quant_weight qs = *q;
    qs.w = ws;
    kn_status s = kn_quant_rtn(NULL, &qs, d);
    free(ws);
    return s;
}

static void test_quantize_input_scale(void **state)
{
    (void)state;
    mb *b = mb_new();
    const char *keep[] = {"fc2"};
    kn_quantize_opts o = {8, 16, scaling_quantizer, NULL, keep, 1, false};
    kn_graph *g;
    double e = quantized_error(b, &o, &g);
    assert_int_equal(pc_count(g, "Mul"), 1);
    assert_int_equal(pc_count(g, "MatMulNBits"), 1);
    /* the Mul comes first and reads the graph input */
    const kn_node *mul = &g->nodes[0];
    assert_string_equal(mul->op_type, "Mul");
    assert_string_equal(g->values[mul->inputs[0]].name, "x");
    assert_string_equal(g->nodes[1].op_type, "MatMulNBits");
    assert_int_equal(g->nodes[1].inputs[0], mul->outputs[0]);
    const kn_tensor *r = kn_rw_const(g, mul->inputs[1]);
    assert_non_null(r);
    assert_int_equal(r->n_elems, 40);
    assert_float_equal(((const float *)r->data)[3], 0.125f, 0);
    kn_graph_destroy(g);
    assert_true(e < 1e-3); /* 8-bit error only */
    kn_quantize_opts plain = {8, 16, NULL, NULL, keep, 1, false};
    double e0 = quantized_error(b, &plain, &g);
    kn_graph_destroy(g);
    assert_true(e < 4 * e0 + 1e-6);
    mb_free(b);
}

static int n_act;

static kn_status act_one(void *ctx, const char *node, const char *input, int64_t k, int64_t n, double *amax,
                         kn_diag *d)
{
    (void)ctx;
    (void)d;
    (void)input;
    n_act++;
    if (strcmp(node, "fc1") == 0) {
        assert_int_equal(k, 40);
        assert_int_equal(n, 24);
    }
    *amax = 1.0;
    return KN_OK;
}

static kn_status act_fail(void *ctx, const char *node, const char *input, int64_t k, int64_t n, double *amax,
                          kn_diag *d)
{
    (void)ctx;
    (void)input;
    (void)k;
    (void)n;
    (void)amax;
    kn_diag_add(d, KN_ERROR, "no range for '%s'", node);
    return KN_ERR_INVALID;
}

/* W8A8 on fc1 (fc2 kept): QuantizeLinear(x, 1/127) -> MatMulIntegerToFloat
 * against the arithmetic written out here: qx = round-half-even(x / sx),
 * per output channel sw[n] = max_k |W[k][n]| / 127, qw = round(W / sw),
 * h = Σ qx qw · (sx sw[n]), then the float Gemm. */
static void test_quantize_w8a8(void **state)
{
    (void)state;
    mb *b = mb_new();
    const char *keep[] = {"fc2"};
    kn_quantize_opts o = {8, 128, NULL, NULL, keep, 1, false, KN_QUANT_W8A8, act_one, NULL};
    n_act = 0;
    kn_graph *g;
    double e = quantized_error(b, &o, &g);
    assert_int_equal(n_act, 1);
    assert_int_equal(pc_count(g, "QuantizeLinear"), 1);
    assert_int_equal(pc_count(g, "MatMulIntegerToFloat"), 1);
    assert_int_equal(pc_count(g, "Gemm"), 1);
    assert_true(e < 1e-3);
    kn_rt_tensor *y = NULL;
    pc_run(g, &y);
    float sx = 1.0f / 127.0f;
    double w[40][24], w2[8][24];
    for (int i = 0; i < 40 * 24; i++)
        w[i / 24][i % 24] = (float)sin(0.37 * i) * 0.5f;
    for (int i = 0; i < 8 * 24; i++)
        w2[i / 24][i % 24] = (float)cos(0.21 * i) * 0.3f;
    for (int m = 0; m < 3; m++) {
        double h[24];
        for (int n = 0; n < 24; n++) {
            double amax = 0;
            for (int k = 0; k < 40; k++)
                amax = fabs(w[k][n]) > amax ? fabs(w[k][n]) : amax;
            float sw = (float)(amax / 127.0);
            long acc = 0;
            for (int k = 0; k < 40; k++) {
                float x = (float)sin(0.7 * (double)(m * 40 + k));
                long qx = lrintf(x / sx), qw = lrint((double)(float)w[k][n] / (double)sw);
                qx = qx > 127 ? 127 : qx < -128 ? -128 : qx;
                acc += qx * qw;
            }
            h[n] = (double)acc * (double)(sx * sw);
        }
        for (int j = 0; j < 8; j++) {
            double v = 0.1 * j;
            for (int n = 0; n < 24; n++)
                v += h[n] * w2[j][n];
            assert_float_equal(((float *)y->data)[m * 8 + j], v, 1e-4);
        }
    }
    kn_rt_tensor_free(NULL, y);
    kn_graph_destroy(g);
    /* a missing range is the callback's error, passed on */
    Onnx__ModelProto *m = linear_model(b);
    g = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_infer_shapes(g, d), KN_OK);
    kn_quantize_opts bad = {8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, act_fail, NULL};
    assert_int_equal(kn_pass_quantize(g, &bad, d), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "no range for 'fc1'"));
    kn_quantize_opts none = {8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, NULL, NULL};
    assert_int_equal(kn_pass_quantize(g, &none, d), KN_ERR_INVALID);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    mb_free(b);
}

/* W8A8 with per-token dynamic scales on fc1 (fc2 kept): no calibration
 * callback; against the arithmetic written out: per row m, sx = max(max_k
 * |x| / 127, FLT_MIN), qx = round-half-even(x / sx) in [-127, 127], the
 * exact integer sum with the per-channel codes, h = (acc · sw[n]) · sx in
 * float, then the float Gemm. */
static void test_quantize_w8a8_dynamic(void **state)
{
    (void)state;
    mb *b = mb_new();
    const char *keep[] = {"fc2"};
    kn_quantize_opts o = {8, 128, NULL, NULL, keep, 1, false, KN_QUANT_W8A8, act_fail, NULL, true, 0, NULL};
    kn_graph *g;
    double e = quantized_error(b, &o, &g);
    assert_int_equal(pc_count(g, "QuantizeLinear"), 0);
    assert_int_equal(pc_count(g, "MatMulIntegerToFloat"), 1);
    assert_int_equal(pc_count(g, "ReduceMax"), 1);
    assert_int_equal(pc_count(g, "Round"), 1);
    assert_int_equal(pc_count(g, "Gemm"), 1);
    assert_true(e < 1e-3);
    kn_rt_tensor *y = NULL;
    pc_run(g, &y);
    double w[40][24], w2[8][24];
    for (int i = 0; i < 40 * 24; i++)
        w[i / 24][i % 24] = (float)sin(0.37 * i) * 0.5f;
    for (int i = 0; i < 8 * 24; i++)
        w2[i / 24][i % 24] = (float)cos(0.21 * i) * 0.3f;
    for (int m = 0; m < 3; m++) {
        float x[40], amax = 0;
        for (int k = 0; k < 40; k++) {
            x[k] = (float)sin(0.7 * (double)(m * 40 + k));
            amax = fabsf(x[k]) > amax ? fabsf(x[k]) : amax;
        }
        float sx = amax / 127.0f;
        sx = sx > FLT_MIN ? sx : FLT_MIN;
        double h[24];
        for (int n = 0; n < 24; n++) {
            double wmax = 0;
            for (int k = 0; k < 40; k++)
                wmax = fabs(w[k][n]) > wmax ? fabs(w[k][n]) : wmax;
            float sw = (float)(wmax / 127.0);
            long acc = 0;
            for (int k = 0; k < 40; k++) {
                long qx = lrintf(x[k] / sx), qw = lrint((double)(float)w[k][n] / (double)sw);
                qx = qx > 127 ? 127 : qx < -127 ? -127 : qx;
                acc += qx * qw;
            }
            h[n] = (double)((float)((double)acc * (double)sw) * sx);
        }
        for (int j = 0; j < 8; j++) {
            double v = 0.1 * j;
            for (int n = 0; n < 24; n++)
                v += h[n] * w2[j][n];
            assert_float_equal(((float *)y->data)[m * 8 + j], v, 1e-5);
        }
    }
    kn_rt_tensor_free(NULL, y);
    kn_graph_destroy(g);
    mb_free(b);
}

static double absmax_v[64];

/* Per-channel max |x|: the values set in absmax_v. */
static kn_status absmax_fixed(void *ctx, const char *node, const char *input, int64_t k, const double **absmax,
                              kn_diag *d)
{
    (void)ctx;
    (void)node;
    (void)input;
    (void)d;
    assert_true(k <= 64);
    *absmax = absmax_v;
    return KN_OK;
}

/* x [3, 40] -> LayerNormalization(gamma, beta) -> h -> MatMul(wa [40, 24])
 * -> ya and MatMul(wb [40, 16]) -> yb: both readers of h are linear
 * layers, so SmoothQuant folds 1/s into gamma and beta. */
static Onnx__ModelProto *norm_model(mb *b, float wa[40 * 24], float wb[40 * 16], float gamma[40], float beta[40])
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "3,40"));
    for (int i = 0; i < 40 * 24; i++)
        wa[i] = (float)sin(0.37 * i) * 0.5f;
    for (int i = 0; i < 40 * 16; i++)
        wb[i] = (float)cos(0.29 * i) * 0.4f;
    for (int i = 0; i < 40; i++) {
        gamma[i] = i % 9 == 4 ? 12.0f : 0.5f + 0.02f * (float)i; /* loud channels 4, 13, 22, 31 */
        beta[i] = 0.01f * (float)(i % 5);
    }
    mb_float_data(b, mb_initializer(b, g, "wa", KN_F32, (int64_t[]){40, 24}, 2), wa, 40 * 24);
    mb_float_data(b, mb_initializer(b, g, "wb", KN_F32, (int64_t[]){40, 16}, 2), wb, 40 * 16);
    mb_float_data(b, mb_initializer(b, g, "gamma", KN_F32, (int64_t[]){40}, 1), gamma, 40);
    mb_float_data(b, mb_initializer(b, g, "beta", KN_F32, (int64_t[]){40}, 1), beta, 40);
    mb_attr_i(b, mb_node(b, g, "LayerNormalization", "ln", "x,gamma,beta", "h"), "axis", -1);
    mb_node(b, g, "MatMul", "fa", "h,wa", "ya");
    mb_node(b, g, "MatMul", "fb", "h,wb", "yb");
    mb_output(b, g, "ya", NULL);
    mb_output(b, g, "yb", NULL);
    return m;
}

/* SmoothQuant (alpha 0.5): folded into the norm when every reader of its
 * output is quantized (one s from the largest |W| of both weights), an
 * explicit Mul(x, 1/s) otherwise; outputs stay close to float. */
static void test_quantize_w8a8_smooth(void **state)
{
    (void)state;
    mb *b = mb_new();
    float wa[40 * 24], wb[40 * 16], gamma[40], beta[40];
    Onnx__ModelProto *m = norm_model(b, wa, wb, gamma, beta);
    /* the norm's output over the 3 rows pc_run feeds (x = sin(0.7 e)) */
    for (int j = 0; j < 40; j++)
        absmax_v[j] = 0;
    for (int r = 0; r < 3; r++) {
        double x[40], mean = 0, var = 0;
        for (int j = 0; j < 40; j++)
            mean += (x[j] = sin(0.7 * (double)(r * 40 + j))) / 40;
        for (int j = 0; j < 40; j++)
            var += (x[j] - mean) * (x[j] - mean) / 40;
        for (int j = 0; j < 40; j++)
            absmax_v[j] = fmax(absmax_v[j], fabs((x[j] - mean) / sqrt(var + 1e-5) * gamma[j] + beta[j]));
    }
    for (int dyn = 0; dyn < 2; dyn++) {
        kn_graph *f = pc_import(b, m), *g = pc_import(b, m);
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_quantize_opts o = {8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, act_fail, NULL, dyn, 0.5,
                              absmax_fixed};
        assert_int_equal(kn_pass_infer_shapes(g, d), KN_OK);
        assert_int_equal(kn_pass_quantize(g, &o, d), KN_OK);
        assert_int_equal(kn_graph_verify(g, d), KN_OK);
        assert_int_equal(pc_count(g, "MatMulIntegerToFloat"), 2);
        assert_int_equal(pc_count(g, dyn ? "Div" : "QuantizeLinear"), dyn ? 4 : 2);
        /* folded: gamma / s and beta / s, no Mul before the layers */
        const kn_node *ln = pc_find(g, "LayerNormalization");
        const kn_tensor *gs = kn_rw_const(g, ln->inputs[1]), *bs = kn_rw_const(g, ln->inputs[2]);
        assert_non_null(gs);
        assert_non_null(bs);
        for (int j = 0; j < 40; j++) {
            double wmax = 0;
            for (int n = 0; n < 24; n++)
                wmax = fmax(wmax, fabs(wa[j * 24 + n]));
            for (int n = 0; n < 16; n++)
                wmax = fmax(wmax, fabs(wb[j * 16 + n]));
            double sj = sqrt(absmax_v[j]) / sqrt(wmax);
            assert_float_equal(((const float *)gs->data)[j], gamma[j] / sj, 1e-6 * fabs(gamma[j] / sj));
            assert_float_equal(((const float *)bs->data)[j], beta[j] / sj, 1e-6 * fabs(beta[j] / sj) + 1e-12);
        }
        if (!dyn)
            assert_int_equal(pc_count(g, "Mul"), 0);
        kn_rt_tensor *y0[2] = {NULL, NULL}, *y1[2] = {NULL, NULL};
        pc_run(f, y0);
        pc_run(g, y1);
        assert_true(nmse(y0[0], y1[0]) < 1e-3);
        assert_true(nmse(y0[1], y1[1]) < 1e-3);
        for (int i = 0; i < 2; i++) {
            kn_rt_tensor_free(NULL, y0[i]);
            kn_rt_tensor_free(NULL, y1[i]);
        }
        kn_diag_destroy(d);
        kn_graph_destroy(f);
        kn_graph_destroy(g);
    }
    /* fc1 reads the graph input: Mul(x, 1/s) named after the layer */
    for (int j = 0; j < 40; j++) /* x's (fc2's input gets the first 24: any positive s is exact) */
        absmax_v[j] = fmax(fabs(sin(0.7 * j)), fmax(fabs(sin(0.7 * (40 + j))), fabs(sin(0.7 * (80 + j)))));
    kn_graph *g;
    kn_quantize_opts o = {8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, act_fail, NULL, true, 0.5, absmax_fixed};
    double e = quantized_error(b, &o, &g);
    assert_true(e < 1e-3);
    const kn_node *mul = pc_find(g, "Mul");
    assert_non_null(mul);
    bool named = false;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        named |= strcmp(g->nodes[i].name, "fc1/smooth") == 0;
    assert_true(named);
    kn_graph_destroy(g);
    /* a missing per-channel range is an error */
    kn_graph *h = pc_import(b, linear_model(b));
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_pass_infer_shapes(h, d), KN_OK);
    kn_quantize_opts no_absmax = {8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, NULL, NULL, true, 0.5, NULL};
    assert_int_equal(kn_pass_quantize(h, &no_absmax, d), KN_ERR_INVALID);
    kn_diag_destroy(d);
    kn_graph_destroy(h);
    mb_free(b);
}

/* Every allocation of the quantize pass (and fuse-qdq on the way, in the
 * -O2 pipeline) failing in turn: KN_ERR_NOMEM or success, never a crash or
 * a leak; the last run quantizes both layers. */
static void alloc_fail_mode(int mode)
{
    mb *b = mb_new();
    size_t len;
    uint8_t *bytes = mb_pack(b, linear_model(b), &len);
    bool finished = false;
    for (long n = 1; !finished && n < 5000; n++) {
        mb_counter c;
        mb_counter_init(&c);
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_graph *g = NULL;
        assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, &c.a, d, &g), KN_OK);
        c.fail_at = c.calls + n;
        kn_quantize_opts o = {4, 16, NULL, NULL, NULL, 0, false};
        if (mode == 1)
            o = (kn_quantize_opts){8, 16, scaling_quantizer, NULL, NULL, 0, false};
        else if (mode == 2)
            o = (kn_quantize_opts){8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, act_one, NULL};
        else if (mode == 3)
            o = (kn_quantize_opts){8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, NULL, NULL, true, 0.5,
                                   absmax_fixed};
        kn_pipeline_opts po = {0};
        po.verify_each = true;
        po.quantize = &o;
        kn_status s = kn_pipeline_run(g, &po, d);
        assert_true(s == KN_OK || s == KN_ERR_NOMEM);
        finished = s == KN_OK && c.calls < c.fail_at;
        if (finished)
            assert_int_equal(pc_count(g, mode >= 2 ? "MatMulIntegerToFloat" : "MatMulNBits"), 2);
        kn_graph_destroy(g);
        kn_diag_destroy(d);
        assert_int_equal(c.live, 0);
    }
    assert_true(finished);
    mb_free(b);
}

static void test_quantize_alloc_fail(void **state)
{
    (void)state;
    for (int j = 0; j < 64; j++)
        absmax_v[j] = 1.0 + (j % 7);
    for (int mode = 0; mode < 4; mode++)
        alloc_fail_mode(mode);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hand_values),
        cmocka_unit_test(test_odd_k_partial_block),
        cmocka_unit_test(test_zero_points),
        cmocka_unit_test(test_eight_bits),
        cmocka_unit_test(test_long_blocks),
        cmocka_unit_test(test_bad_b),
        cmocka_unit_test(test_integer_to_float),
        cmocka_unit_test(test_quantize_int4_int8),
        cmocka_unit_test(test_rtn_group),
        cmocka_unit_test(test_rtn_reference),
        cmocka_unit_test(test_quantize_callback_and_keep),
        cmocka_unit_test(test_quantize_input_scale),
        cmocka_unit_test(test_quantize_w8a8),
        cmocka_unit_test(test_quantize_w8a8_dynamic),
        cmocka_unit_test(test_quantize_w8a8_smooth),
        cmocka_unit_test(test_quantize_alloc_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
