/* Shared by the pass tests (test_passes.c, test_fuse_attention.c): import a
 * built model, count and find nodes, run a graph on the CPU on
 * deterministic inputs, compare two graphs' outputs, apply passes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pass_check.h"
#include "runtime/cpu/exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kn_graph *pc_import(mb *b, Onnx__ModelProto *m)
{
    kn_graph *g = mb_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_infer_shapes(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_diag_destroy(d);
    return g;
}

uint32_t pc_count(const kn_graph *g, const char *op)
{
    uint32_t n = 0;
    for (kn_id k = 0; k < g->n_nodes; k++)
        n += strcmp(g->nodes[k].op_type, op) == 0;
    return n;
}

const kn_node *pc_find(const kn_graph *g, const char *op)
{
    for (kn_id k = 0; k < g->n_nodes; k++)
        if (strcmp(g->nodes[k].op_type, op) == 0)
            return &g->nodes[k];
    fail_msg("no %s node", op);
    return NULL;
}

void pc_run_with(const kn_graph *g, pc_fill_fn fill, kn_rt_tensor **outs)
{
    kn_rt_tensor *in[8] = {0};
    assert_true(g->n_inputs <= 8);
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const kn_type *t = &g->values[g->inputs[i]].type;
        int64_t dims[16];
        for (int32_t k = 0; k < t->shape.rank; k++)
            dims[k] = t->shape.dims[k].value >= 0 ? t->shape.dims[k].value : 3;
        assert_int_equal(kn_rt_tensor_new(NULL, t->dtype, t->shape.rank, dims, &in[i]), KN_OK);
        fill(in[i], i);
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_cpu_run(g, NULL, d, (const kn_rt_tensor *const *)in, g->n_inputs, outs, g->n_outputs), KN_OK);
    kn_diag_destroy(d);
    for (uint32_t i = 0; i < g->n_inputs; i++)
        kn_rt_tensor_free(NULL, in[i]);
}

/* float32 sin(0.7 e + i), int64 e % 3, other dtypes zero */
static void fill_default(kn_rt_tensor *t, uint32_t i)
{
    for (int64_t e = 0; e < t->numel; e++) {
        if (t->dtype == KN_F32)
            ((float *)t->data)[e] = (float)sin(0.7 * (double)e + i);
        else if (t->dtype == KN_I64)
            ((int64_t *)t->data)[e] = e % 3;
    }
}

void pc_run(const kn_graph *g, kn_rt_tensor **outs)
{
    pc_run_with(g, fill_default, outs);
}

/* a and b (the same model before and after passes) give the same outputs. */
void pc_same_outputs(const kn_graph *a, const kn_graph *b, double tol)
{
    assert_int_equal(a->n_outputs, b->n_outputs);
    for (uint32_t i = 0; i < a->n_outputs; i++)
        assert_ptr_equal(a->values[a->outputs[i]].name, a->values[a->outputs[i]].name);
    kn_rt_tensor *x[8] = {0}, *y[8] = {0};
    pc_run(a, x);
    pc_run(b, y);
    for (uint32_t i = 0; i < a->n_outputs; i++) {
        assert_string_equal(a->values[a->outputs[i]].name, b->values[b->outputs[i]].name);
        assert_int_equal(x[i]->dtype, y[i]->dtype);
        assert_int_equal(x[i]->rank, y[i]->rank);
        assert_memory_equal(x[i]->dims, y[i]->dims, (size_t)x[i]->rank * sizeof(int64_t));
        if (x[i]->dtype == KN_F32) {
            for (int64_t e = 0; e < x[i]->numel; e++) {
                double p = ((float *)x[i]->data)[e], q = ((float *)y[i]->data)[e];
                if (fabs(p - q) > tol * (1 + fabs(p)))
                    fail_msg("output %u element %lld: %g before, %g after", i, (long long)e, p, q);
            }
        } else {
            assert_memory_equal(x[i]->data, y[i]->data, x[i]->nbytes);
        }
        kn_rt_tensor_free(NULL, x[i]);
        kn_rt_tensor_free(NULL, y[i]);
    }
}

/* Imports m twice, runs the passes on the second copy (each verified),
 * checks the outputs numerically; *before gets the untouched copy. */
kn_graph *pc_apply(mb *b, Onnx__ModelProto *m, kn_graph **before, ...)
{
    kn_graph *g0 = pc_import(b, m), *g = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    va_list ap;
    va_start(ap, before);
    for (kn_pass_fn p; (p = va_arg(ap, kn_pass_fn)) != NULL;) {
        assert_int_equal(p(g, d), KN_OK);
        assert_int_equal(kn_graph_verify(g, d), KN_OK);
    }
    va_end(ap);
    kn_diag_destroy(d);
    pc_same_outputs(g0, g, 1e-5);
    *before = g0;
    return g;
}


void pc_pipeline_alloc_sweep(mb *b, Onnx__ModelProto *m, void (*check)(const kn_graph *g))
{
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    bool finished = false;
    for (long n = 1; !finished && n < 5000; n++) {
        mb_counter c;
        mb_counter_init(&c);
        kn_diag *d = kn_diag_create(NULL, getenv("KN_TEST_VERBOSE") ? stderr : NULL);
        kn_graph *g = NULL;
        assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, &c.a, d, &g), KN_OK);
        c.fail_at = c.calls + n;
        kn_pipeline_opts po = {0};
        po.verify_each = true;
        kn_status s = kn_pipeline_run(g, &po, d);
        assert_true(s == KN_OK || s == KN_ERR_NOMEM);
        /* done once no allocation failed (a fold whose kernel ran out of
         * memory just leaves its node: the result is less folded, not wrong) */
        finished = s == KN_OK && c.calls < c.fail_at;
        if (finished && check)
            check(g);
        kn_graph_destroy(g);
        kn_diag_destroy(d);
        assert_int_equal(c.live, 0);
    }
    assert_true(finished);
}
