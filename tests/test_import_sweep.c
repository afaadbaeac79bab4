/* Import sweep: every model.onnx under libonnx-testdata and ../shared/models
 * is imported and verified. Ops may be unsupported; import must not fail. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kiln/kiln.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int n_models, n_failed;

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    size_t n = strlen(path);
    if (type != FTW_F || n < 5 || strcmp(path + n - 5, ".onnx") != 0)
        return 0;
    n_models++;
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_non_null(d);
    kn_graph *g = NULL;
    kn_status s = kn_import_onnx_file(path, NULL, NULL, d, &g);
    if (s == KN_OK)
        s = kn_graph_verify(g, d);
    if (s != KN_OK) {
        n_failed++;
        fprintf(stderr, "FAIL %s (%s)\n", path, kn_status_str(s));
        kn_diag_print(d, stderr);
    }
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    return 0;
}

static void sweep(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        printf("skipped: %s is absent\n", dir);
        skip();
    }
    n_models = n_failed = 0;
    assert_int_equal(nftw(dir, visit, 16, FTW_PHYS), 0);
    printf("imported and verified %d of %d models under %s\n", n_models - n_failed, n_models, dir);
    assert_true(n_models > 0);
    assert_int_equal(n_failed, 0);
}

static void test_node(void **state) { (void)state; sweep(KN_TESTDATA "/node"); }
static void test_simple(void **state) { (void)state; sweep(KN_TESTDATA "/simple"); }
static void test_pytorch_converted(void **state) { (void)state; sweep(KN_TESTDATA "/pytorch-converted"); }
static void test_pytorch_operator(void **state) { (void)state; sweep(KN_TESTDATA "/pytorch-operator"); }
static void test_shared_models(void **state) { (void)state; sweep(KN_SHARED_MODELS); }
static void test_samples(void **state) { (void)state; sweep(KN_SOURCE_DIR "/samples"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node),
        cmocka_unit_test(test_simple),
        cmocka_unit_test(test_pytorch_converted),
        cmocka_unit_test(test_pytorch_operator),
        cmocka_unit_test(test_shared_models),
        cmocka_unit_test(test_samples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
