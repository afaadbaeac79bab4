/* The CPU backend's GEMM (runtime/cpu/k_linalg_gemm.c) through MatMul,
 * Gemm and kiln.GemmEpilogue: every output element equals, bit for bit, the
 * double sum of its products added in increasing k and rounded once —
 * whatever the blocking (sizes around the 4x8 micro-kernel and the 128/256
 * tiles), float, double, float16 or bfloat16 B (read in place by each
 * copy of the kernel, AVX-512, AVX2 or baseline: the same bits as widening
 * it first, and no weight-sized scratch), batches, and the number of
 * threads (KILN_CPU_THREADS). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model_builder.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/linalg.h"
#include "runtime/cpu/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* y = op(a, b) with both operands graph inputs of element type `et`;
 * op "GemmEpilogue" is kiln's, with gemm = 1 when trans_b (else MatMul's
 * product). */
static kn_graph *graph(kn_dtype et, const char *op, int trans_b)
{
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "a", mb_tensor_type(b, et, NULL));
    mb_input(b, g, "b", mb_tensor_type(b, et, NULL));
    Onnx__NodeProto *n = mb_node(b, g, op, "op", "a,b", "y");
    if (strcmp(op, "GemmEpilogue") == 0) {
        mb_opset(b, m, "kiln", 1);
        n->domain = mb_strdup(b, "kiln");
        mb_attr_i(b, n, "gemm", trans_b);
    }
    if (trans_b)
        mb_attr_i(b, n, "transB", 1);
    mb_output(b, g, "y", mb_tensor_type(b, et, NULL));
    kn_graph *gr = mb_import(b, m);
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
        else if (t == KN_F16) /* within about ±1.6: sums stay well inside the range */
            ((uint16_t *)x->data)[i] = kn_f32_to_f16((float)(v / 64.0));
        else if (t == KN_BF16)
            ((uint16_t *)x->data)[i] = kn_f32_to_bf16((float)v);
        else
            ((double *)x->data)[i] = v;
    }
    return x;
}

static double get(const kn_rt_tensor *x, int64_t i)
{
    return kn_get_f64(x->dtype, x->data, i);
}

/* s rounded as the kernels store a double into dtype t (through float32
 * for the 16-bit types). */
static double rounded(kn_dtype t, double s)
{
    uint16_t h;
    switch (t) {
    case KN_F32: return (float)s;
    case KN_F16: h = kn_f32_to_f16((float)s); return kn_f16_to_f32(h);
    case KN_BF16: h = kn_f32_to_bf16((float)s); return kn_bf16_to_f32(h);
    default: return s;
    }
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

/* One MatMul [batch..., m, k] x [k, n] (or Gemm with B [n, k], transB),
 * or the same product as a GemmEpilogue (`op`, when not NULL). */
static void check_op(const char *op, kn_dtype t, int64_t batch, int64_t m, int64_t k, int64_t n, int gemm)
{
    kn_graph *g = graph(t, op ? op : gemm ? "Gemm" : "MatMul", gemm);
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
                double got = get(y1, (bt * m + i) * n + j), want = rounded(t, s);
                if (memcmp(&got, &want, sizeof got) != 0)
                    fail_msg("%s %s batch %lld m %lld k %lld n %lld: y[%lld][%lld][%lld] = %.17g, want %.17g",
                             op ? op : gemm ? "Gemm" : "MatMul", kn_dtype_name(t), (long long)batch,
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

static void check(kn_dtype t, int64_t batch, int64_t m, int64_t k, int64_t n, int gemm)
{
    check_op(NULL, t, batch, m, k, n, gemm);
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

/* ---- half-precision B read in place (kn_linalg_gemm_b) ---- */

static uint32_t rnd(uint32_t *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static double widen(kn_dtype t, uint16_t h)
{
    return t == KN_F16 ? (double)kn_f16_to_f32(h) : (double)kn_bf16_to_f32(h);
}

/* Random finite halves of every magnitude the format has (subnormals and
 * signed zeros among them): random bits, the top exponent bit cleared
 * where they would be Inf or NaN. */
static void half_fill(kn_dtype t, uint16_t *h, int64_t n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 7;
    uint16_t top = t == KN_F16 ? 0x7c00 : 0x7f80;
    for (int64_t i = 0; i < n; i++) {
        uint16_t v = (uint16_t)(rnd(&s) ^ (rnd(&s) << 8));
        if ((v & top) == top)
            v ^= 0x4000;
        h[i] = v;
    }
}

static double *doubles(int64_t n, uint32_t seed)
{
    double *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    assert_non_null(d);
    uint32_t s = seed * 2246822519u + 3;
    for (int64_t i = 0; i < n; i++)
        d[i] = (double)(int32_t)(rnd(&s) - (1u << 23)) / 4096.0 + (double)(rnd(&s) % 7) / 3.0;
    return d;
}

/* A workspace for an m x n x k product as kn_linalg_gemm_workspace sizes it. */
static double *workspace(int64_t m, int64_t n, int64_t k, bool trans, int *threads)
{
    int64_t len;
    *threads = kn_linalg_gemm_workspace(m, n, k, trans, &len);
    double *w = malloc((size_t)(len ? len : 1) * sizeof *w);
    assert_non_null(w);
    return w;
}

/* C (random) += A · B with B float16, bfloat16 or float32 (those hold
 * random bfloat16 values), read in place (stored [k, n], or [n, k] when
 * trans) by the copy `way` of the kernel, on `threads` threads:
 * bit-identical to B widened first into doubles and the double GEMM on
 * one thread. */
static void half_case(kn_dtype t, kn_gemm_isa way, int64_t m, int64_t k, int64_t n, bool trans, const char *threads)
{
    kn_dtype ht = t == KN_F32 ? KN_BF16 : t;
    uint16_t *h = malloc((size_t)(k * n) * sizeof *h);
    float *f = malloc((size_t)(k * n) * sizeof *f);
    double *w = malloc((size_t)(k * n) * sizeof *w);
    assert_true(h && f && w);
    half_fill(ht, h, k * n, (uint32_t)(m * 31 + k * 7 + n));
    for (int64_t i = 0; i < k * n; i++)
        f[i] = (float)widen(ht, h[i]);
    for (int64_t p = 0; p < k; p++)
        for (int64_t j = 0; j < n; j++)
            w[p * n + j] = widen(ht, h[trans ? j * k + p : p * n + j]);
    double *a = doubles(m * k, (uint32_t)(k + n)), *want = doubles(m * n, (uint32_t)m);
    double *got = malloc((size_t)(m * n) * sizeof *got);
    assert_non_null(got);
    memcpy(got, want, (size_t)(m * n) * sizeof *got);
    int nt;
    unsetenv("KILN_CPU_THREADS");
    double *ws = workspace(m, n, k, false, &nt);
    kn_linalg_gemm_f64(m, n, k, a, k, w, n, want, n, nt, ws);
    free(ws);
    setenv("KILN_CPU_THREADS", threads, 1);
    ws = workspace(m, n, k, trans, &nt);
    kn_gemm_b gb = {.dtype = t, .data = t == KN_F32 ? (void *)f : h, .ld = trans ? k : n, .trans = trans, .isa = way};
    kn_linalg_gemm_b(m, n, k, a, k, &gb, got, n, nt, ws);
    unsetenv("KILN_CPU_THREADS");
    for (int64_t i = 0; i < m * n; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
            fail_msg("%s B (way %d%s) m %lld k %lld n %lld, %s threads: C[%lld][%lld] = %.17g, widened first %.17g",
                     kn_dtype_name(t), (int)way, trans ? ", transposed" : "", (long long)m, (long long)k,
                     (long long)n, threads, (long long)(i / n), (long long)(i % n), got[i], want[i]);
    free(ws);
    free(h);
    free(f);
    free(w);
    free(a);
    free(want);
    free(got);
}

/* The copies of the kernel this CPU can run (AUTO first). */
static int isa_ways(kn_gemm_isa *ways)
{
    const kn_gemm_isa all[] = {KN_GEMM_ISA_AUTO, KN_GEMM_ISA_AVX512, KN_GEMM_ISA_AVX2, KN_GEMM_ISA_BASE};
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (kn_linalg_gemm_isa_has(all[i]))
            ways[n++] = all[i];
    assert_true(kn_linalg_gemm_isa_has(KN_GEMM_ISA_BASE));
    return n;
}

static void test_b_in_place_matches_widened(void **state)
{
    (void)state;
    /* m = 1 (decode) and m < MR (the row loop only), around the micro-kernel;
     * odd k and n, around the 8-column strips and the 128 x 256 tiles */
    const int64_t ms[] = {1, 2, 3, 4, 5, 9, 37};
    const int64_t ks[] = {1, 7, 131};
    const int64_t ns[] = {1, 13, 260};
    const kn_dtype ts[] = {KN_F16, KN_BF16, KN_F32};
    kn_gemm_isa ways[4];
    int n_ways = isa_ways(ways);
    for (size_t ti = 0; ti < 3; ti++) {
        for (int w = 0; w < n_ways; w++)
            for (int trans = 0; trans < 2; trans++) {
                for (size_t i = 0; i < sizeof ms / sizeof *ms; i++)
                    for (size_t p = 0; p < sizeof ks / sizeof *ks; p++)
                        for (size_t j = 0; j < sizeof ns / sizeof *ns; j++)
                            half_case(ts[ti], ways[w], ms[i], ks[p], ns[j], trans, "1");
                /* over the threading threshold (m n k >= 2^20) */
                half_case(ts[ti], ways[w], 1, 577, 2101, trans, "2");
                half_case(ts[ti], ways[w], 33, 300, 523, trans, "3");
                half_case(ts[ti], ways[w], 6, 200, 1001, trans, "7");
            }
    }
}

/* Every half value through each path of the kernel: B [1, 65536] (or its
 * transpose) holds all 65536, A is 1 and C starts at -0, so C = B widened
 * exactly: the packed tile (m = 4), the four-column row loop (m = 1), the
 * per-row widening of a transposed B; and, over windows of 3 columns, the
 * row loop's single columns. NaNs included (they come out quiet, as when
 * widened first). */
static void every_value(kn_dtype t, kn_gemm_isa way, int64_t m, int64_t n, bool trans, const uint16_t *h)
{
    double *a = malloc((size_t)m * sizeof *a), *got = malloc((size_t)(m * n) * sizeof *got);
    double *want = malloc((size_t)(m * n) * sizeof *want), *w = malloc((size_t)n * sizeof *w);
    assert_true(a && got && want && w);
    for (int64_t i = 0; i < m; i++)
        a[i] = 1.0;
    for (int64_t j = 0; j < n; j++)
        w[j] = widen(t, h[j]);
    for (int64_t i = 0; i < m * n; i++)
        got[i] = want[i] = -0.0;
    int nt;
    double *ws = workspace(m, n, 1, false, &nt);
    kn_linalg_gemm_f64(m, n, 1, a, 1, w, n, want, n, nt, ws);
    free(ws);
    ws = workspace(m, n, 1, trans, &nt);
    kn_gemm_b gb = {.dtype = t, .data = h, .ld = trans ? 1 : n, .trans = trans, .isa = way};
    kn_linalg_gemm_b(m, n, 1, a, 1, &gb, got, n, nt, ws);
    for (int64_t i = 0; i < m * n; i++) {
        double v = w[i % n];
        if (memcmp(&got[i], &want[i], sizeof v) != 0 || (v == v && memcmp(&got[i], &v, sizeof v) != 0))
            fail_msg("%s 0x%04x (way %d, m %lld%s): %.17g, want %.17g", kn_dtype_name(t), h[i % n], (int)way,
                     (long long)m, trans ? ", transposed" : "", got[i], want[i]);
    }
    free(ws);
    free(a);
    free(got);
    free(want);
    free(w);
}

static void test_half_b_every_value(void **state)
{
    (void)state;
    unsetenv("KILN_CPU_THREADS");
    uint16_t *h = malloc(65536 * sizeof *h);
    assert_non_null(h);
    for (int64_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    const kn_dtype ts[] = {KN_F16, KN_BF16};
    kn_gemm_isa ways[4];
    int n_ways = isa_ways(ways);
    for (size_t ti = 0; ti < 2; ti++) {
        for (int w = 0; w < n_ways; w++) {
            every_value(ts[ti], ways[w], 4, 65536, false, h);
            every_value(ts[ti], ways[w], 1, 65536, false, h);
            every_value(ts[ti], ways[w], 1, 65536, true, h);
            for (int64_t j = 0; j < 65536; j += 3)
                every_value(ts[ti], ways[w], 1, j + 3 <= 65536 ? 3 : 65536 - j, false, h + j);
        }
    }
    free(h);
}

/* MatMul, Gemm (transB) and GemmEpilogue (gemm = 0 and 1) with float16 and
 * bfloat16 operands: rounded once from the in-order double sum. */
static void test_half_ops(void **state)
{
    (void)state;
    const kn_dtype ts[] = {KN_F16, KN_BF16};
    for (size_t ti = 0; ti < 2; ti++) {
        kn_dtype t = ts[ti];
        const int64_t ms[] = {1, 3, 4, 9};
        for (size_t i = 0; i < 4; i++) {
            check(t, 1, ms[i], 131, 13, 0);
            check(t, 1, ms[i], 70, 21, 1);
            check_op("GemmEpilogue", t, 1, ms[i], 131, 13, 0);
            check_op("GemmEpilogue", t, 1, ms[i], 70, 21, 1);
        }
        check(t, 1, 1, 576, 2100, 0); /* decode-like, threaded */
        check(t, 1, 33, 300, 520, 0);
        check(t, 1, 20, 260, 300, 1);
        check(t, 3, 6, 40, 17, 0);
    }
    check(KN_F64, 1, 9, 70, 21, 1);
}

/* The largest single allocation a run makes. */
typedef struct max_alloc {
    kn_allocator a;
    size_t max;
} max_alloc;

static void *ma_alloc(void *ctx, size_t n)
{
    max_alloc *m = ctx;
    if (n > m->max)
        m->max = n;
    return malloc(n);
}

static void *ma_realloc(void *ctx, void *p, size_t n)
{
    max_alloc *m = ctx;
    if (n > m->max)
        m->max = n;
    return realloc(p, n);
}

static void ma_free(void *ctx, void *p)
{
    (void)ctx;
    free(p);
}

/* A 1024 x 1024 float16 B is 2 MiB (8 MiB widened to double); no
 * allocation of a MatMul, Gemm or GemmEpilogue run with it reaches half of
 * that (the packing workspace is 256 KiB, 512 KiB with B transposed). */
static void test_half_scratch_small(void **state)
{
    (void)state;
    const int64_t k = 1024, n = 1024;
    const char *ops[] = {"MatMul", "Gemm", "GemmEpilogue", "GemmEpilogue"};
    const int trans[] = {0, 1, 0, 1};
    setenv("KILN_CPU_THREADS", "1", 1);
    for (size_t o = 0; o < 4; o++)
        for (int64_t m = 1; m <= 8; m += 7) {
            kn_graph *g = graph(KN_F16, ops[o], trans[o]);
            int64_t ad[2] = {m, k}, bd[2] = {k, n};
            kn_rt_tensor *a = filled(KN_F16, 2, ad, 1), *b = filled(KN_F16, 2, bd, 2);
            max_alloc ma = {{ma_alloc, ma_realloc, ma_free, NULL}, 0};
            ma.a.ctx = &ma;
            kn_diag *d = kn_diag_create(NULL, stderr);
            const kn_rt_tensor *ins[2] = {a, b};
            kn_rt_tensor *y = NULL;
            assert_int_equal(kn_cpu_run(g, &ma.a, d, ins, 2, &y, 1), KN_OK);
            if (ma.max >= (size_t)(k * n))
                fail_msg("%s%s m %lld: an allocation of %zu bytes (B: %lld bytes)", ops[o],
                         trans[o] ? " (transB)" : "", (long long)m, ma.max, (long long)(k * n * 2));
            kn_rt_tensor_free(&ma.a, y);
            kn_diag_destroy(d);
            kn_rt_tensor_free(NULL, a);
            kn_rt_tensor_free(NULL, b);
            kn_graph_destroy(g);
        }
    unsetenv("KILN_CPU_THREADS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_float),
        cmocka_unit_test(test_matmul_double_and_gemm),
        cmocka_unit_test(test_b_in_place_matches_widened),
        cmocka_unit_test(test_half_b_every_value),
        cmocka_unit_test(test_half_ops),
        cmocka_unit_test(test_half_scratch_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
