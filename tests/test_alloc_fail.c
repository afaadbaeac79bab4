/* Failing-allocator sweep: the import of several models is repeated with
 * the Nth allocation failing, for every N until the import needs no more.
 * Each failure must be a clean KN_ERR_NOMEM with nothing left allocated. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kiln/kiln.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

typedef struct failing {
    long calls;     /* allocations so far */
    long fail_at;   /* the call number that fails (1-based); 0 = never */
    long live;      /* blocks currently allocated */
} failing;

static void *f_alloc(void *ctx, size_t n)
{
    failing *f = ctx;
    if (++f->calls == f->fail_at)
        return NULL;
    void *p = malloc(n);
    if (p)
        f->live++;
    return p;
}

static void *f_realloc(void *ctx, void *p, size_t n)
{
    failing *f = ctx;
    if (++f->calls == f->fail_at)
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        f->live++;
    return q;
}

static void f_free(void *ctx, void *p)
{
    failing *f = ctx;
    if (p)
        f->live--;
    free(p);
}

/* Returns the number of allocations a successful import makes. */
static long sweep_model(const char *path)
{
    failing f = {0, 0, 0};
    kn_allocator a = {f_alloc, f_realloc, f_free, &f};
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
        failing ff = {0, n, 0};
        kn_allocator fa = {f_alloc, f_realloc, f_free, &ff};
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample), cmocka_unit_test(test_silero), cmocka_unit_test(test_if),
        cmocka_unit_test(test_loop),   cmocka_unit_test(test_scan),   cmocka_unit_test(test_function),
        cmocka_unit_test(test_constant), cmocka_unit_test(test_ppocr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
