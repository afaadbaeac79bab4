/* The CPU reference backend: executor behaviour (input checks, missing
 * kernels, value lifetimes, failing allocations) and kernel edge cases
 * (empty tensors, negative axes, bad shapes) on small hand-built graphs. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model_builder.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static kn_rt_tensor *tensor(kn_dtype t, int32_t rank, const int64_t *dims, const float *vals)
{
    kn_rt_tensor *x;
    assert_int_equal(kn_rt_tensor_new(NULL, t, rank, dims, &x), KN_OK);
    for (int64_t i = 0; vals && i < x->numel; i++)
        ((float *)x->data)[i] = vals[i];
    return x;
}

/* Runs g on one input; returns the status and the first error text. */
static kn_status run1(kn_graph *g, kn_rt_tensor *in, kn_rt_tensor **out, char *err, size_t n)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    const kn_rt_tensor *ins[1] = {in};
    kn_status s = kn_cpu_run(g, NULL, d, ins, 1, out, 1);
    snprintf(err, n, "%s", kn_diag_size(d) ? kn_diag_message(d, 0, NULL) : "");
    kn_diag_destroy(d);
    return s;
}

/* x[2,3] → MatMul w[3,2] → ReduceSum(axes=[-1], keepdims=0) → Softmax → y */
static Onnx__ModelProto *small_model(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,3"));
    int64_t wd[2] = {3, 2}, ad[1] = {1};
    mb_float_data(b, mb_initializer(b, g, "w", KN_F32, wd, 2), (float[]){1, 2, 3, 4, 5, 6}, 6);
    mb_int64_data(b, mb_initializer(b, g, "axes", KN_I64, ad, 1), (int64_t[]){-1}, 1);
    mb_node(b, g, "MatMul", "mm", "x,w", "h");
    Onnx__NodeProto *r = mb_node(b, g, "ReduceSum", "rs", "h,axes", "s");
    mb_attr_i(b, r, "keepdims", 0);
    mb_node(b, g, "Softmax", "sm", "s", "y");
    mb_output(b, g, "y", NULL);
    return m;
}

static void test_run_small(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = mb_import(b, small_model(b));
    kn_rt_tensor *x = tensor(KN_F32, 2, (int64_t[]){2, 3}, (float[]){1, 0, 0, 0, 0, 1}), *y = NULL;
    char err[512];
    assert_int_equal(run1(g, x, &y, err, sizeof err), KN_OK);
    /* rows: [1,2]·sum → 3, [5,6] → 11; softmax over the batch axis of length 2 */
    assert_int_equal(y->rank, 1);
    assert_int_equal(y->dims[0], 2);
    float *v = y->data;
    assert_true(fabsf(v[0] - 1.0f / (1.0f + expf(8.0f))) < 1e-6f);
    assert_true(fabsf(v[0] + v[1] - 1.0f) < 1e-6f);
    kn_rt_tensor_free(NULL, y);
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_input_checks(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = mb_import(b, small_model(b));
    char err[512];
    kn_rt_tensor *y = NULL;
    kn_rt_tensor *wrong_dtype = tensor(KN_F64, 2, (int64_t[]){2, 3}, NULL);
    assert_int_equal(run1(g, wrong_dtype, &y, err, sizeof err), KN_ERR_INVALID);
    assert_non_null(strstr(err, "input 'x' must be float32, got float64"));
    kn_rt_tensor *wrong_dim = tensor(KN_F32, 2, (int64_t[]){2, 4}, NULL);
    assert_int_equal(run1(g, wrong_dim, &y, err, sizeof err), KN_ERR_INVALID);
    assert_non_null(strstr(err, "input 'x' must have shape [batch, 3], got [2, 4]"));
    kn_rt_tensor *wrong_rank = tensor(KN_F32, 1, (int64_t[]){3}, NULL);
    assert_int_equal(run1(g, wrong_rank, &y, err, sizeof err), KN_ERR_INVALID);
    assert_null(y);
    /* symbolic batch takes any size, 0 included */
    kn_rt_tensor *empty = tensor(KN_F32, 2, (int64_t[]){0, 3}, NULL);
    assert_int_equal(run1(g, empty, &y, err, sizeof err), KN_OK);
    assert_int_equal(y->numel, 0);
    kn_rt_tensor_free(NULL, y);
    kn_rt_tensor_free(NULL, wrong_dtype);
    kn_rt_tensor_free(NULL, wrong_dim);
    kn_rt_tensor_free(NULL, wrong_rank);
    kn_rt_tensor_free(NULL, empty);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_kernel_errors_name_the_node(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *gp = m->graph;
    mb_input(b, gp, "x", mb_tensor_type(b, KN_F32, "2,3"));
    int64_t wd[2] = {4, 2};
    mb_float_data(b, mb_initializer(b, gp, "w", KN_F32, wd, 2), (float[8]){0}, 8);
    mb_node(b, gp, "MatMul", "bad_mm", "x,w", "y");
    mb_output(b, gp, "y", NULL);
    kn_graph *g = mb_import(b, m);
    kn_rt_tensor *x = tensor(KN_F32, 2, (int64_t[]){2, 3}, NULL), *y = NULL;
    char err[512];
    assert_int_equal(run1(g, x, &y, err, sizeof err), KN_ERR_INVALID);
    assert_non_null(strstr(err, "node 'bad_mm' (MatMul, opset 13)"));
    assert_null(y);
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_negative_axis_out_of_range(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *gp = m->graph;
    mb_input(b, gp, "x", mb_tensor_type(b, KN_F32, "2,3"));
    Onnx__NodeProto *n = mb_node(b, gp, "Softmax", "sm", "x", "y");
    mb_attr_i(b, n, "axis", -3);
    mb_output(b, gp, "y", NULL);
    kn_graph *g = mb_import(b, m);
    kn_rt_tensor *x = tensor(KN_F32, 2, (int64_t[]){2, 3}, NULL), *y = NULL;
    char err[512];
    assert_int_equal(run1(g, x, &y, err, sizeof err), KN_ERR_INVALID);
    assert_non_null(strstr(err, "axis"));
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_missing_kernel(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *gp = m->graph;
    mb_opset(b, m, "my.domain", 1);
    mb_input(b, gp, "x", mb_tensor_type(b, KN_F32, "2"));
    Onnx__NodeProto *n = mb_node(b, gp, "Frob", "frob", "x", "y");
    n->domain = mb_strdup(b, "my.domain");
    mb_output(b, gp, "y", NULL);
    kn_graph *g = mb_import(b, m);
    kn_rt_tensor *x = tensor(KN_F32, 1, (int64_t[]){2}, NULL), *y = NULL;
    char err[512];
    assert_int_equal(run1(g, x, &y, err, sizeof err), KN_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "node 'frob' (Frob, opset 1): the CPU backend has no kernel for my.domain.Frob"));
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(g);
    mb_free(b);
}

/* Every allocation of a run fails in turn: a clean status, nothing leaked. */
static void test_run_failing_allocator(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = mb_import(b, small_model(b));
    kn_rt_tensor *x = tensor(KN_F32, 2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    const kn_rt_tensor *ins[1] = {x};
    mb_counter f;
    mb_counter_init(&f);
    const kn_allocator *a = &f.a;
    kn_rt_tensor *y = NULL;
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cpu_run(g, a, d, ins, 1, &y, 1), KN_OK);
    kn_rt_tensor_free(a, y);
    assert_int_equal(f.live, 0);
    long total = f.calls;
    for (long k = 1; k <= total; k++) {
        mb_counter ff;
        mb_counter_init(&ff);
        ff.fail_at = k;
        const kn_allocator *fa = &ff.a;
        y = NULL;
        kn_status s = kn_cpu_run(g, fa, d, ins, 1, &y, 1);
        assert_int_equal(s, KN_ERR_NOMEM);
        assert_null(y);
        assert_int_equal(ff.live, 0);
    }
    printf("cpu run: failed each of %ld allocations in turn: all clean\n", total);
    kn_diag_destroy(d);
    kn_rt_tensor_free(NULL, x);
    kn_graph_destroy(g);
    mb_free(b);
}

/* kn_f32_to_f16 (one add, few branches) against the bit-by-bit definition:
 * every exponent and sign with the rounding-relevant low mantissa bits
 * (ties, just below/above, odd/even kept bit), and a stride over all 2^32. */
static uint16_t f16_reference(uint32_t x)
{
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 | (man >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++;
    return (uint16_t)h;
}

static void check_f16(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    uint16_t got = kn_f32_to_f16(f), want = f16_reference(x);
    if (got != want)
        fail_msg("kn_f32_to_f16(0x%08x) = 0x%04x, want 0x%04x", x, got, want);
}

/* kn_f16_to_f32 against the field-by-field definition, all 65536 halves
 * (bit patterns compared: NaN payloads and signed zeros too). */
static void test_f16_to_f32_all(void **s)
{
    (void)s;
    for (uint32_t h = 0; h < 0x10000; h++) {
        uint32_t sign = (h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, want;
        if (exp == 0 && man == 0) {
            want = sign;
        } else if (exp == 0) {
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            want = sign | (exp << 23) | ((man & 0x3ff) << 13);
        } else if (exp == 31) {
            want = sign | 0x7f800000u | (man << 13);
        } else {
            want = sign | ((exp + 127 - 15) << 23) | (man << 13);
        }
        float f = kn_f16_to_f32((uint16_t)h);
        uint32_t got;
        memcpy(&got, &f, 4);
        if (got != want)
            fail_msg("kn_f16_to_f32(0x%04x) = 0x%08x, want 0x%08x", h, got, want);
    }
}

static void test_f32_to_f16_rounding(void **s)
{
    (void)s;
    static const uint32_t low[] = {0, 1, 0xfff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x17ff, 0x7fffff};
    for (uint32_t se = 0; se < 512; se++)
        for (uint32_t k = 0; k < sizeof low / sizeof low[0]; k++)
            for (uint32_t hi = 0; hi < 0x400; hi += 0x55)
                for (uint32_t shift = 0; shift < 10; shift++) /* ties of subnormal halves too */
                    check_f16((se << 23) | (((hi << 13) | (low[k] << shift)) & 0x7fffff));
    for (uint64_t x = 0; x < (1ull << 32); x += 65521)
        check_f16((uint32_t)x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_small),
        cmocka_unit_test(test_input_checks),
        cmocka_unit_test(test_kernel_errors_name_the_node),
        cmocka_unit_test(test_negative_axis_out_of_range),
        cmocka_unit_test(test_missing_kernel),
        cmocka_unit_test(test_run_failing_allocator),
        cmocka_unit_test(test_f32_to_f16_rounding),
        cmocka_unit_test(test_f16_to_f32_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
