/* The CPU backend's GEMM (runtime/cpu/k_linalg_gemm.c) through MatMul and
 * Gemm: every output element equals, bit for bit, the double sum of its
 * products added in increasing k and rounded once — whatever the blocking
 * (sizes around the 4x8 micro-kernel and the 128/256 tiles), float or
 * double B, batches, and the number of threads (KILN_CPU_THREADS). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model_builder.h"
#include "runtime/cpu/exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_graph *import(mb *b, Onnx__ModelProto *m)
{
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "gemm.onnx", NULL, NULL, d, &g), KN_OK);
    kn_diag_destroy(d);
    return g;
}

/* y = op(a, b) with both operands graph inputs of element type `et`. */
static kn_graph *graph(kn_dtype et, const char *op, int trans_b)
{
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "a", mb_tensor_type(b, et, NULL));
    mb_input(b, g, "b", mb_tensor_type(b, et, NULL));
    Onnx__NodeProto *n = mb_node(b, g, op, "op", "a,b", "y");
    if (trans_b)
        mb_attr_i(b, n, "transB", 1);
    mb_output(b, g, "y", mb_tensor_type(b, et, NULL));
    kn_graph *gr = import(b, m);
    mb_free(b);
    return gr;
}

/* Small integers times 1/64 and 1/1024: exact in float, products and sums
 * exact in double only up to rounding, so the order shows. */
static kn_rt_tensor *filled(kn_dtype t, int32_t rank, const int64_t *dims, uint32_t seed)
{
    kn_rt_tensor *x;
    assert_int_equal(kn_rt_tensor_new(NULL, t, rank, dims, &x), KN_OK);
    uint32_t s = seed * 2654435761u + 1;
    for (int64_t i = 0; i < x->numel; i++) {
        s = s * 1664525u + 1013904223u;
        double v = (double)((int32_t)(s >> 8) % 100000) / 1024.0 + (double)((s >> 3) % 7) / 3.0;
        if (t == KN_F32)
            ((float *)x->data)[i] = (float)v;
        else
            ((double *)x->data)[i] = v;
    }
    return x;
}

static double get(const kn_rt_tensor *x, int64_t i)
{
    return x->dtype == KN_F32 ? ((const float *)x->data)[i] : ((const double *)x->data)[i];
}

static kn_rt_tensor *run(kn_graph *g, kn_rt_tensor *a, kn_rt_tensor *b, const char *threads)
{
    setenv("KILN_CPU_THREADS", threads, 1);
    kn_diag *d = kn_diag_create(NULL, stderr);
    const kn_rt_tensor *ins[2] = {a, b};
    kn_rt_tensor *y = NULL;
    assert_int_equal(kn_cpu_run(g, NULL, d, ins, 2, &y, 1), KN_OK);
    kn_diag_destroy(d);
    unsetenv("KILN_CPU_THREADS");
    return y;
}

/* One MatMul [batch..., m, k] x [k, n] (or Gemm with B [n, k], transB). */
static void check(kn_dtype t, int64_t batch, int64_t m, int64_t k, int64_t n, int gemm)
{
    kn_graph *g = graph(t, gemm ? "Gemm" : "MatMul", gemm);
    int64_t ad[3] = {batch, m, k}, bd[2] = {gemm ? n : k, gemm ? k : n};
    int32_t ar = batch > 1 ? 3 : 2;
    kn_rt_tensor *a = filled(t, ar, batch > 1 ? ad : ad + 1, (uint32_t)(m * 7 + k));
    kn_rt_tensor *b = filled(t, 2, bd, (uint32_t)(n * 13 + k));
    kn_rt_tensor *y1 = run(g, a, b, "1");
    assert_int_equal(y1->numel, batch * m * n);
    for (int64_t bt = 0; bt < batch; bt++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double s = 0;
                for (int64_t p = 0; p < k; p++)
                    s += get(a, (bt * m + i) * k + p) * get(b, gemm ? j * k + p : p * n + j);
                double got = get(y1, (bt * m + i) * n + j), want = t == KN_F32 ? (double)(float)s : s;
                if (memcmp(&got, &want, sizeof got) != 0)
                    fail_msg("%s %s batch %lld m %lld k %lld n %lld: y[%lld][%lld][%lld] = %.17g, want %.17g",
                             gemm ? "Gemm" : "MatMul", t == KN_F32 ? "float" : "double", (long long)batch,
                             (long long)m, (long long)k, (long long)n, (long long)bt, (long long)i, (long long)j, got,
                             want);
            }
    const char *counts[] = {"2", "3", "7"};
    for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
        kn_rt_tensor *yt = run(g, a, b, counts[c]);
        assert_int_equal(yt->nbytes, y1->nbytes);
        if (memcmp(yt->data, y1->data, y1->nbytes) != 0)
            fail_msg("m %lld k %lld n %lld: %s threads differ from 1", (long long)m, (long long)k, (long long)n,
                     counts[c]);
        kn_rt_tensor_free(NULL, yt);
    }
    kn_rt_tensor_free(NULL, y1);
    kn_rt_tensor_free(NULL, a);
    kn_rt_tensor_free(NULL, b);
    kn_graph_destroy(g);
}

static void test_matmul_float(void **state)
{
    (void)state;
    /* m around the 4-row micro-kernel, n around 8 and the 256/2048 column
     * tiles, k around the 128-row tile; the big ones cross the threading
     * threshold (m n k >= 2^20). */
    const int64_t ms[] = {1, 3, 4, 5, 9, 37};
    const int64_t ks[] = {1, 7, 128, 131};
    const int64_t ns[] = {1, 8, 13, 260};
    for (size_t i = 0; i < 6; i++)
        for (size_t p = 0; p < 4; p++)
            for (size_t j = 0; j < 4; j++)
                check(KN_F32, 1, ms[i], ks[p], ns[j], 0);
    check(KN_F32, 1, 1, 576, 2100, 0);  /* decode-like: one row, long rows of B */
    check(KN_F32, 1, 33, 300, 520, 0);  /* prefill-like, threaded */
    check(KN_F32, 3, 6, 40, 17, 0);     /* batched A, shared B */
}

static void test_matmul_double_and_gemm(void **state)
{
    (void)state;
    check(KN_F64, 1, 5, 131, 13, 0);
    check(KN_F64, 1, 33, 300, 260, 0);
    check(KN_F32, 1, 9, 70, 21, 1);
    check(KN_F32, 1, 20, 260, 300, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_float),
        cmocka_unit_test(test_matmul_double_and_gemm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
