/* Test helpers for the fusion passes (see fuse_check.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* floats 1.7 sin(0.7 e + i) + 0.3 i, int64 e % 3 */
static void fill(kn_rt_tensor *t, uint32_t i)
{
    for (int64_t e = 0; e < t->numel; e++) {
        double v = 1.7 * sin(0.7 * (double)e + i) + 0.3 * (double)i;
        if (kn_dt_is_float(t->dtype))
            kn_set_f64(t->dtype, t->data, e, v);
        else if (t->dtype == KN_I64)
            ((int64_t *)t->data)[e] = e % 3;
    }
}

kn_graph *fc_apply_with(mb *b, Onnx__ModelProto *m, kn_pass_fn pass, pc_fill_fn fill_in, double tol)
{
    kn_graph *a = pc_import(b, m), *g = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(pass(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    assert_int_equal(kn_pass_dce(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_diag_destroy(d);
    kn_rt_tensor *x[8] = {0}, *y[8] = {0};
    assert_true(a->n_outputs <= 8);
    pc_run_with(a, fill_in, x);
    pc_run_with(g, fill_in, y);
    for (uint32_t i = 0; i < a->n_outputs; i++) {
        assert_string_equal(a->values[a->outputs[i]].name, g->values[g->outputs[i]].name);
        assert_int_equal(x[i]->dtype, y[i]->dtype);
        assert_int_equal(x[i]->rank, y[i]->rank);
        assert_memory_equal(x[i]->dims, y[i]->dims, (size_t)x[i]->rank * sizeof(int64_t));
        if (tol < 0) {
            assert_int_equal(x[i]->nbytes, y[i]->nbytes);
            assert_memory_equal(x[i]->data, y[i]->data, x[i]->nbytes);
        } else {
            assert_true(kn_dt_is_float(x[i]->dtype));
            for (int64_t e = 0; e < x[i]->numel; e++) {
                double p = kn_get_f64(x[i]->dtype, x[i]->data, e), q = kn_get_f64(y[i]->dtype, y[i]->data, e);
                if (fabs(p - q) > tol * (1 + fabs(p)))
                    fail_msg("output %u element %lld: %.9g before, %.9g after", i, (long long)e, p, q);
            }
        }
        kn_rt_tensor_free(NULL, x[i]);
        kn_rt_tensor_free(NULL, y[i]);
    }
    kn_graph_destroy(a);
    return g;
}

kn_graph *fc_apply(mb *b, Onnx__ModelProto *m, kn_pass_fn pass, double tol)
{
    return fc_apply_with(b, m, pass, fill, tol);
}

kn_graph *fc_apply_unchanged(mb *b, Onnx__ModelProto *m, kn_pass_fn pass)
{
    kn_graph *g0 = pc_import(b, m);
    uint32_t n0 = g0->n_nodes;
    kn_graph_destroy(g0);
    kn_graph *g = fc_apply(b, m, pass, 0);
    assert_int_equal(g->n_nodes, n0);
    return g;
}

void fc_f32(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *dims, size_t rank, float base)
{
    size_t n = 1;
    for (size_t i = 0; i < rank; i++)
        n *= (size_t)dims[i];
    float *v = mb_alloc(b, n * sizeof *v + 1);
    for (size_t i = 0; i < n; i++)
        v[i] = base + 0.01f * (float)(i % 17);
    mb_float_data(b, mb_initializer(b, g, name, KN_F32, dims, rank), v, n);
}

void fc_scalar(mb *b, Onnx__GraphProto *g, const char *name, float v)
{
    mb_float_data(b, mb_initializer(b, g, name, KN_F32, NULL, 0), &v, 1);
}

bool fc_origins(const kn_node *n, uint32_t count, const char *first)
{
    const kn_attr *a = kn_node_attr(n, "_origins");
    if (!a || a->kind != KN_ATTR_STRINGS || a->n != count)
        return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (a->u.strings[i].len == strlen(first) && memcmp(a->u.strings[i].data, first, a->u.strings[i].len) == 0)
            return true;
    return false;
}
