/* Failing-allocator sweep: the import of several models is repeated with
 * the Nth allocation failing, for every N until the import needs no more.
 * Each failure must be a clean KN_ERR_NOMEM with nothing left allocated. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/plan_write.h"
#include "kiln/kiln.h"
#include "kiln/runtime.h"
#include "model_builder.h"
#include "passes/passes.h"
#include "runtime/cpu/exec.h"
#include "tools/tensor_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Returns the number of allocations a successful import makes. */
static long sweep_model(const char *path)
{
    mb_counter f;
    mb_counter_init(&f);
    const kn_allocator a = f.a;
    kn_graph *g = NULL;
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_non_null(d);
    assert_int_equal(kn_import_onnx_file(path, NULL, &a, d, &g), KN_OK);
    long total = f.calls;
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    assert_int_equal(f.live, 0);
    for (long n = 1; n <= total; n++) {
        mb_counter ff;
        mb_counter_init(&ff);
        ff.fail_at = n;
        const kn_allocator fa = ff.a;
        kn_diag *dd = kn_diag_create(NULL, NULL);
        assert_non_null(dd);
        kn_graph *gg = NULL;
        kn_status s = kn_import_onnx_file(path, NULL, &fa, dd, &gg);
        if (s == KN_OK) {
            /* an allocation whose failure is recovered from (none today) */
            assert_int_equal(kn_graph_verify(gg, dd), KN_OK);
            kn_graph_destroy(gg);
        } else {
            if (s != KN_ERR_NOMEM)
                fprintf(stderr, "%s: allocation %ld failing gave '%s'\n", path, n, kn_status_str(s));
            if (s != KN_ERR_NOMEM)
                kn_diag_print(dd, stderr);
            assert_int_equal(s, KN_ERR_NOMEM);
            assert_null(gg);
            assert_true(kn_diag_count(dd, KN_ERROR) > 0);
        }
        if (ff.live != 0)
            fprintf(stderr, "%s: allocation %ld failing leaked %ld blocks\n", path, n, ff.live);
        assert_int_equal(ff.live, 0);
        kn_diag_destroy(dd);
    }
    return total;
}

/* The whole way a model goes, with one allocator: import → passes → plan
 * write → plan load → CPU run on the inputs of test_data_set_0 (read
 * beforehand, with malloc). Returns the first failing status; every step
 * that fails must fail cleanly. `calls_after_import` receives the count
 * of allocations the import made. */
static kn_status chain(const char *path, const kn_allocator *a, kn_rt_tensor **in, uint32_t n_in,
                       long *calls_after_import, const mb_counter *f, const char *plan_path)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_non_null(d);
    kn_graph *g = NULL, *p = NULL;
    kn_status s = kn_import_onnx_file(path, NULL, a, d, &g);
    if (calls_after_import)
        *calls_after_import = f->calls;
    kn_pipeline_opts po = {true};
    if (s == KN_OK)
        s = kn_pipeline_run(g, &po, d);
    kn_plan_options o = {"--target cpu", "cpu"};
    if (s == KN_OK)
        s = kn_plan_write(g, &o, plan_path, d);
    kn_graph_destroy(g);
    if (s == KN_OK) {
        s = kn_plan_load(plan_path, a, d, &p);
        if (s != KN_OK)
            assert_null(p);
    }
    if (s == KN_OK) {
        assert_int_equal(p->n_inputs, n_in);
        kn_rt_tensor **out = calloc(p->n_outputs + 1, sizeof *out);
        assert_non_null(out);
        s = kn_cpu_run(p, a, d, (const kn_rt_tensor *const *)in, n_in, out, p->n_outputs);
        for (uint32_t i = 0; i < p->n_outputs; i++) {
            if (s == KN_OK)
                assert_non_null(out[i]);
            else
                assert_null(out[i]);
            kn_rt_tensor_free(a, out[i]);
        }
        free(out);
        if (s != KN_OK)
            assert_true(kn_diag_count(d, KN_ERROR) > 0);
    }
    kn_graph_destroy(p);
    if (s != KN_OK && s != KN_ERR_NOMEM)
        kn_diag_print(d, stderr);
    kn_diag_destroy(d);
    return s;
}

/* Fails each allocation after the import's in turn (the import's own are
 * swept by sweep_model). Returns how many were failed. */
static long sweep_chain(const char *path)
{
    char dir[512], plan[600], in_path[600];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    kn_rt_tensor *in[16] = {0};
    uint32_t n_in = 0;
    for (; n_in < 16; n_in++) {
        snprintf(in_path, sizeof in_path, "%s/test_data_set_0/input_%u.pb", dir, n_in);
        if (access(in_path, R_OK) != 0)
            break;
        kn_diag *d = kn_diag_create(NULL, NULL);
        assert_int_equal(kn_tensor_read(in_path, NULL, d, &in[n_in], NULL), KN_OK);
        kn_diag_destroy(d);
    }
    char tmpl[] = "/tmp/kiln-allocfail-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    snprintf(plan, sizeof plan, "%s/m.plan", tmpl);
    mb_counter f;
    mb_counter_init(&f);
    const kn_allocator a = f.a;
    long first;
    assert_int_equal(chain(path, &a, in, n_in, &first, &f, plan), KN_OK);
    long total = f.calls;
    assert_int_equal(f.live, 0);
    for (long n = first + 1; n <= total; n++) {
        mb_counter ff;
        mb_counter_init(&ff);
        ff.fail_at = n;
        const kn_allocator fa = ff.a;
        kn_status s = chain(path, &fa, in, n_in, NULL, &ff, plan);
        if (s != KN_OK && s != KN_ERR_NOMEM)
            fail_msg("%s: allocation %ld of %ld failing gave '%s'", path, n, total, kn_status_str(s));
        if (ff.live != 0)
            fail_msg("%s: allocation %ld of %ld failing leaked %ld blocks", path, n, total, ff.live);
    }
    unlink(plan);
    assert_int_equal(rmdir(tmpl), 0); /* no temporary plan left behind */
    for (uint32_t i = 0; i < n_in; i++)
        kn_rt_tensor_free(kn_default_allocator(), in[i]);
    return total - first;
}

static void run_chain(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("skipped: %s is absent\n", path);
        skip();
    }
    long n = sweep_chain(path);
    printf("%s: passes, plan write, load and run: failed each of %ld allocations in turn: all clean\n", path, n);
}

static void run(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("skipped: %s is absent\n", path);
        skip();
    }
    long n = sweep_model(path);
    printf("%s: failed each of %ld allocations in turn: all clean\n", path, n);
}

#define NODE KN_TESTDATA "/node/"
static void test_sample(void **s) { (void)s; run(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx"); }
static void test_silero(void **s) { (void)s; run(KN_SHARED_MODELS "/silero_vad_legacy/model.onnx"); }
static void test_if(void **s) { (void)s; run(NODE "test_if_seq/model.onnx"); }
static void test_loop(void **s) { (void)s; run(NODE "test_loop13_seq/model.onnx"); }
static void test_scan(void **s) { (void)s; run(NODE "test_scan9_sum/model.onnx"); }
static void test_function(void **s) { (void)s; run(NODE "test_layer_normalization_2d_axis0_expanded/model.onnx"); }
static void test_constant(void **s) { (void)s; run(NODE "test_constant/model.onnx"); }
static void test_ppocr(void **s) { (void)s; run(KN_SHARED_MODELS "/ppocr_cls/model.onnx"); }

static void test_chain_sample(void **s) { (void)s; run_chain(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx"); }
static void test_chain_if(void **s) { (void)s; run_chain(NODE "test_if/model.onnx"); }
static void test_chain_loop(void **s) { (void)s; run_chain(NODE "test_loop11/model.onnx"); }
static void test_chain_scan(void **s) { (void)s; run_chain(NODE "test_scan9_sum/model.onnx"); }
static void test_chain_function(void **s) { (void)s; run_chain(NODE "test_layer_normalization_2d_axis0_expanded/model.onnx"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample), cmocka_unit_test(test_silero), cmocka_unit_test(test_if),
        cmocka_unit_test(test_loop),   cmocka_unit_test(test_scan),   cmocka_unit_test(test_function),
        cmocka_unit_test(test_constant), cmocka_unit_test(test_ppocr),
        cmocka_unit_test(test_chain_sample), cmocka_unit_test(test_chain_if), cmocka_unit_test(test_chain_loop),
        cmocka_unit_test(test_chain_scan), cmocka_unit_test(test_chain_function),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
