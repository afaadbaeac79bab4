/* Plan files: write → load round trip (the loaded graph prints the same),
 * byte-identical rebuilds, every single-byte corruption refused cleanly,
 * truncation, and a failing-allocator sweep over loading. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/plan_write.h"
#include "model_builder.h"
#include "kiln/runtime.h"
#include "ir/ir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln-test-plan-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd);
}

static kn_graph *import(const char *path)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_file(path, NULL, NULL, d, &g), KN_OK);
    kn_diag_destroy(d);
    return g;
}

static char *print_graph(const kn_graph *g)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    assert_int_equal(kn_graph_print(g, f), KN_OK);
    fclose(f);
    return buf;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*n);
    assert_int_equal(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static void write_plan(kn_graph *g, const char *path)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_plan_options o = {"--target cpu", "cpu", NULL};
    assert_int_equal(kn_plan_write(g, &o, path, d), KN_OK);
    kn_diag_destroy(d);
}

/* Imports a model, writes it twice, checks identical bytes and that the
 * loaded graph prints exactly like the imported one. Returns the plan path. */
static void roundtrip(const char *model, char *plan, size_t plan_size)
{
    struct stat st;
    if (stat(model, &st) != 0) {
        printf("skipped: %s is absent\n", model);
        skip();
    }
    kn_graph *g = import(model);
    char p2[512];
    snprintf(plan, plan_size, "%s/a.plan", tmpdir);
    snprintf(p2, sizeof p2, "%s/b.plan", tmpdir);
    write_plan(g, plan);
    kn_graph *g2 = import(model);
    write_plan(g2, p2);
    size_t n1, n2;
    uint8_t *b1 = slurp(plan, &n1), *b2 = slurp(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *l = NULL;
    assert_int_equal(kn_plan_load(plan, NULL, d, &l), KN_OK);
    char *t1 = print_graph(g), *t2 = print_graph(l);
    assert_string_equal(t1, t2);
    /* constants survive byte for byte */
    for (kn_id v = 0; v < g->n_values; v++)
        if (g->values[v].kind == KN_VAL_CONST && g->values[v].tensor->nbytes)
            assert_memory_equal(g->values[v].tensor->data, l->values[v].tensor->data, g->values[v].tensor->nbytes);
    free(t1);
    free(t2);
    free(b1);
    free(b2);
    kn_graph_destroy(l);
    kn_graph_destroy(g);
    kn_graph_destroy(g2);
    kn_diag_destroy(d);
}

#define NODE KN_TESTDATA "/node/"

static void test_roundtrip_sample(void **s)
{
    (void)s;
    char plan[512];
    roundtrip(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx", plan, sizeof plan);
}

static void test_roundtrip_subgraphs(void **s)
{
    (void)s;
    char plan[512];
    roundtrip(KN_SHARED_MODELS "/silero_vad_legacy/model.onnx", plan, sizeof plan);
    roundtrip(NODE "test_loop11/model.onnx", plan, sizeof plan);
    roundtrip(NODE "test_scan9_sum/model.onnx", plan, sizeof plan);
}

/* Every single-byte change of a small plan is refused with a message. */
static void test_every_byte_flip(void **s)
{
    (void)s;
    char plan[512];
    roundtrip(NODE "test_if/model.onnx", plan, sizeof plan);
    size_t n;
    uint8_t *b = slurp(plan, &n);
    for (size_t i = 0; i < n; i++) {
        for (int bit = 0; bit < 8; bit += 7) {
            b[i] ^= (uint8_t)(1u << bit);
            kn_diag *d = kn_diag_create(NULL, NULL);
            kn_graph *g = NULL;
            kn_status st = kn_plan_load_memory(b, n, "flipped.plan", NULL, d, &g);
            if (st == KN_OK)
                fprintf(stderr, "byte %zu bit %d: corruption accepted\n", i, bit);
            assert_int_equal(st, KN_ERR_INVALID);
            assert_null(g);
            assert_true(kn_diag_count(d, KN_ERROR) > 0);
            kn_diag_destroy(d);
            b[i] ^= (uint8_t)(1u << bit);
        }
    }
    printf("%zu bytes x 2 bit flips: all refused\n", n);
    /* every truncation too */
    for (size_t len = 0; len < n; len += 1 + len / 64) {
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_graph *g = NULL;
        assert_int_not_equal(kn_plan_load_memory(b, len, "cut.plan", NULL, d, &g), KN_OK);
        assert_null(g);
        kn_diag_destroy(d);
    }
    free(b);
}

static void test_load_failing_allocator(void **s)
{
    (void)s;
    char plan[512];
    roundtrip(NODE "test_if/model.onnx", plan, sizeof plan);
    mb_counter f;
    mb_counter_init(&f);
    const kn_allocator *a = &f.a;
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(plan, a, d, &g), KN_OK);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    long total = f.calls;
    for (long k = 1; k <= total; k++) {
        mb_counter ff;
        mb_counter_init(&ff);
        ff.fail_at = k;
        const kn_allocator *fa = &ff.a;
        d = kn_diag_create(NULL, NULL);
        g = NULL;
        kn_status st = kn_plan_load(plan, fa, d, &g);
        assert_int_equal(st, KN_ERR_NOMEM);
        assert_null(g);
        assert_true(kn_diag_count(d, KN_ERROR) > 0);
        assert_int_equal(ff.live, 0);
        kn_diag_destroy(d);
    }
    printf("plan load: failed each of %ld allocations in turn: all clean\n", total);
}

static void test_not_a_plan(void **s)
{
    (void)s;
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx", NULL, d, &g), KN_ERR_INVALID);
    assert_non_null(strstr(kn_diag_message(d, 0, NULL), "not a kiln plan"));
    assert_int_equal(kn_plan_load("/nonexistent/x.plan", NULL, d, &g), KN_ERR_IO);
    kn_diag_destroy(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_sample),  cmocka_unit_test(test_roundtrip_subgraphs),
        cmocka_unit_test(test_every_byte_flip),   cmocka_unit_test(test_load_failing_allocator),
        cmocka_unit_test(test_not_a_plan),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
