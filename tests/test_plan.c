/* Plan files: write → load round trip (the loaded graph prints the same),
 * byte-identical rebuilds, every single-byte corruption refused cleanly,
 * truncation, and a failing-allocator sweep over loading; named blobs
 * (the embedded tokenizer) and corruptions of their section. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/plan_write.h"
#include "model_builder.h"
#include "kiln/runtime.h"
#include "kiln/tokenizer.h"
#include "ir/ir.h"
#include "runtime/plan_format.h"

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

/* Small named blobs for the corruption tests: one empty, sizes not a
 * multiple of 8. */
static const kn_plan_named_in small_blobs[] = {
    {"notes.txt", "a named blob of 29 bytes here", 29},
    {"empty", "", 0},
    {"generation_config.json", "{\"eos_token_id\": 2}", 19},
};

static const kn_plan_named_in *blobs;
static uint32_t n_blobs;

static void write_plan(kn_graph *g, const char *path)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_plan_options o = {"--target cpu", "cpu", NULL, blobs, n_blobs};
    assert_int_equal(kn_plan_write(g, &o, path, d), KN_OK);
    kn_diag_destroy(d);
}

/* Imports a model, writes it twice (with the named blobs `blobs`, if
 * any), checks identical bytes and that the loaded graph prints exactly
 * like the imported one and carries the blobs. Returns the plan path. */
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
    uint8_t *b1 = (uint8_t *)mb_read_file(plan, &n1), *b2 = (uint8_t *)mb_read_file(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *l = NULL;
    assert_int_equal(kn_plan_load(plan, NULL, d, &l), KN_OK);
    char *t1 = print_graph(g), *t2 = print_graph(l);
    assert_string_equal(t1, t2);
    assert_int_equal(kn_plan_blob_count(l), n_blobs);
    for (uint32_t i = 0; i < n_blobs; i++) {
        const void *p;
        size_t sz;
        assert_int_equal(kn_plan_blob(l, blobs[i].name, &p, &sz), KN_OK);
        assert_int_equal(sz, blobs[i].size);
        assert_memory_equal(p, blobs[i].data, sz);
        assert_int_equal((uintptr_t)p % 8, 0);
    }
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
    blobs = small_blobs; /* the named-blob section is covered too */
    n_blobs = 3;
    roundtrip(NODE "test_if/model.onnx", plan, sizeof plan);
    blobs = NULL;
    n_blobs = 0;
    size_t n;
    uint8_t *b = (uint8_t *)mb_read_file(plan, &n);
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
    blobs = small_blobs;
    n_blobs = 3;
    roundtrip(NODE "test_if/model.onnx", plan, sizeof plan);
    blobs = NULL;
    n_blobs = 0;
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


/* The NAMED section of a plan image: its offset and size. */
static void find_named(const uint8_t *b, uint64_t *off, uint64_t *size)
{
    kn_plan_header h;
    memcpy(&h, b, sizeof h);
    *off = 0;
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section sec;
        memcpy(&sec, b + h.sections_off + i * sizeof sec, sizeof sec);
        if (sec.kind == KN_SEC_NAMED) {
            *off = sec.offset;
            *size = sec.size;
        }
    }
}

/* Named blobs: found by name and index, the embedded tokenizer builds and
 * encodes like the file, absent ones are KN_ERR_NOT_FOUND, a plan without
 * blobs has no NAMED section, and the writer refuses bad names. */
#define CFG "{\"bos_token\": \"<|endoftext|>\", \"chat_template\": \"{{ x }}\"}"
static void test_named_blobs(void **s)
{
    (void)s;
    size_t tok_n;
    uint8_t *tok = (uint8_t *)mb_read_file(KN_SOURCE_DIR "/tests/tokenizers/gpt2/tokenizer.json", &tok_n);
    kn_plan_named_in in[] = {
        {KN_BLOB_TOKENIZER, tok, tok_n},
        {KN_BLOB_TOKENIZER_CONFIG, CFG, sizeof CFG - 1},
        {"empty", NULL, 0},
    };
    char plan[512];
    blobs = in;
    n_blobs = 3;
    roundtrip(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx", plan, sizeof plan);
    blobs = NULL;
    n_blobs = 0;
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *l = NULL;
    assert_int_equal(kn_plan_load(plan, NULL, d, &l), KN_OK);
    const char *name;
    size_t sz;
    const void *p;
    assert_int_equal(kn_plan_blob_at(l, 1, &name, &p, &sz), KN_OK);
    assert_string_equal(name, KN_BLOB_TOKENIZER_CONFIG);
    assert_int_equal(sz, sizeof CFG - 1);
    assert_int_equal(kn_plan_blob_at(l, 3, &name, &p, &sz), KN_ERR_NOT_FOUND);
    assert_int_equal(kn_plan_blob(l, "nope", &p, &sz), KN_ERR_NOT_FOUND);
    assert_null(p);
    assert_int_equal(sz, 0);
    assert_int_equal(kn_plan_blob(l, "empty", &p, &sz), KN_OK);
    assert_int_equal(sz, 0);

    /* the embedded tokenizer encodes like the file */
    kn_tokenizer *t1 = NULL, *t2 = NULL;
    assert_int_equal(kn_plan_tokenizer(l, NULL, d, &t1), KN_OK);
    assert_int_equal(kn_tokenizer_load_file(KN_SOURCE_DIR "/tests/tokenizers/gpt2/tokenizer.json", NULL, d, &t2),
                     KN_OK);
    const char *text = "Hello, named blobs! 123";
    int32_t *i1, *i2;
    size_t n1, n2;
    assert_int_equal(kn_tokenizer_encode(t1, text, strlen(text), false, &i1, &n1, d), KN_OK);
    assert_int_equal(kn_tokenizer_encode(t2, text, strlen(text), false, &i2, &n2, d), KN_OK);
    assert_int_equal(n1, n2);
    assert_true(n1 > 3);
    assert_memory_equal(i1, i2, n1 * sizeof *i1);
    kn_tokenizer_release(t1, i1);
    kn_tokenizer_release(t2, i2);
    kn_tokenizer_free(t1);
    kn_tokenizer_free(t2);
    kn_tokenizer_config *c = NULL;
    assert_int_equal(kn_plan_tokenizer_config(l, NULL, d, &c), KN_OK);
    assert_string_equal(kn_tokenizer_config_chat_template(c), "{{ x }}");
    assert_string_equal(kn_tokenizer_config_bos_token(c), "<|endoftext|>");
    assert_null(kn_tokenizer_config_eos_token(c));
    kn_tokenizer_config_free(c);
    kn_generation_config gc;
    assert_int_equal(kn_plan_generation_config(l, d, &gc), KN_ERR_NOT_FOUND);
    assert_int_equal(gc.n_eos, 0);
    assert_int_equal(gc.top_k, 50); /* the defaults */
    kn_graph_destroy(l);
    kn_diag_destroy(d);

    /* no blobs: no NAMED section, and the accessors say so */
    roundtrip(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx", plan, sizeof plan);
    size_t n;
    uint8_t *b = (uint8_t *)mb_read_file(plan, &n);
    kn_plan_header h;
    memcpy(&h, b, sizeof h);
    assert_int_equal(h.n_sections, 11);
    free(b);
    d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_plan_load(plan, NULL, d, &l), KN_OK);
    assert_int_equal(kn_plan_blob_count(l), 0);
    kn_tokenizer *t = (kn_tokenizer *)d;
    assert_int_equal(kn_plan_tokenizer(l, NULL, d, &t), KN_ERR_NOT_FOUND);
    assert_null(t);
    assert_true(mb_diag_has(d, KN_ERROR, plan, "no tokenizer", "--tokenizer"));
    kn_tokenizer_config *cc = NULL;
    assert_int_equal(kn_plan_tokenizer_config(l, NULL, d, &cc), KN_ERR_NOT_FOUND);
    kn_graph_destroy(l);
    /* a graph that is not a loaded plan has no blobs */
    kn_graph *g = import(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx");
    assert_int_equal(kn_plan_blob_count(g), 0);
    assert_int_equal(kn_plan_blob(g, KN_BLOB_TOKENIZER, &p, &sz), KN_ERR_NOT_FOUND);
    assert_int_equal(kn_plan_blob_count(NULL), 0);

    /* the writer refuses repeated and empty names */
    char bad_path[600];
    snprintf(bad_path, sizeof bad_path, "%s/bad.plan", tmpdir);
    kn_plan_named_in dup[] = {{"a", "x", 1}, {"a", "y", 1}};
    kn_plan_options o = {"", "cpu", NULL, dup, 2};
    assert_int_equal(kn_plan_write(g, &o, bad_path, d), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "two named blobs are called 'a'"));
    kn_plan_named_in empty[] = {{"", "x", 1}};
    kn_plan_options o2 = {"", "cpu", NULL, empty, 1};
    assert_int_equal(kn_plan_write(g, &o2, bad_path, d), KN_ERR_INVALID);
    assert_int_equal(access(bad_path, F_OK), -1);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    free(tok);
}

/* Corruptions of the NAMED section that keep the checksum right (the
 * checksum recomputed) are caught by its own checks. */
static void test_named_corrupt(void **s)
{
    (void)s;
    char plan[512];
    blobs = small_blobs;
    n_blobs = 3;
    roundtrip(KN_SOURCE_DIR "/samples/hello_deepa/model.onnx", plan, sizeof plan);
    blobs = NULL;
    n_blobs = 0;
    size_t n;
    uint8_t *orig = (uint8_t *)mb_read_file(plan, &n);
    uint64_t off, size;
    find_named(orig, &off, &size);
    assert_true(off > 0);
    struct {
        const char *what;
        size_t at;   /* byte offset inside the section */
        uint64_t v;  /* value written */
        int width;   /* 4 or 8 */
    } cases[] = {
        {"count", 0, 1000000, 4},
        {"count past the table", 0, 40, 4},
        {"header reserved", 4, 1, 4},
        {"entry reserved", 8 + 4, 1, 4},
        {"name out of range", 8, 0x7fffffff, 4},
        {"empty name", 8, 0, 4},
        {"offset into the table", 8 + 8, 8, 8},
        {"offset misaligned", 8 + 8, 8 + 3 * 24 + 1, 8},
        {"offset past the end", 8 + 8, 1u << 30, 8},
        {"size past the end", 8 + 16, 1u << 30, 8},
        {"size overflow", 8 + 16, UINT64_MAX, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t *b = malloc(n);
        memcpy(b, orig, n);
        if (cases[i].width == 4) {
            uint32_t v = (uint32_t)cases[i].v;
            memcpy(b + off + cases[i].at, &v, 4);
        } else {
            memcpy(b + off + cases[i].at, &cases[i].v, 8);
        }
        mb_plan_rechecksum(b, n);
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_graph *g = NULL;
        kn_status st = kn_plan_load_memory(b, n, "named.plan", NULL, d, &g);
        if (st != KN_ERR_INVALID || !mb_diag_has(d, KN_ERROR, "named.plan", "corrupted plan: named blobs"))
            fail_msg("%s: status %d", cases[i].what, (int)st);
        assert_null(g);
        kn_diag_destroy(d);
        free(b);
    }
    /* a duplicate name: entry 1 named like entry 0 */
    uint8_t *b = malloc(n);
    memcpy(b, orig, n);
    memcpy(b + off + 8 + 24, b + off + 8, 4);
    mb_plan_rechecksum(b, n);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load_memory(b, n, "dup.plan", NULL, d, &g), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "duplicate name"));
    kn_diag_destroy(d);
    /* and the untouched image loads */
    memcpy(b, orig, n);
    d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_plan_load_memory(b, n, "ok.plan", NULL, d, &g), KN_OK);
    assert_int_equal(kn_plan_blob_count(g), 3);
    kn_generation_config gc;
    assert_int_equal(kn_plan_generation_config(g, d, &gc), KN_OK);
    assert_int_equal(gc.n_eos, 1);
    assert_int_equal(gc.eos_ids[0], 2);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    free(b);
    free(orig);
}

/* The weights section goes through O_DIRECT in 8 MiB chunks where the file
 * system allows it: with weights over two chunks, at sizes that are not
 * multiples of the alignment, the bytes must equal a buffered write's
 * (KILN_PLAN_NO_DIRECT_IO=1) and load back. */
static void test_direct_write_equals_buffered(void **s)
{
    (void)s;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "1"));
    const size_t n1 = (5u << 20) / 4 + 3, n2 = (7u << 20) / 4 + 1; /* 12 MiB + 16 bytes */
    float *v1 = malloc(n1 * sizeof *v1), *v2 = malloc(n2 * sizeof *v2);
    assert_non_null(v1);
    assert_non_null(v2);
    for (size_t i = 0; i < n1; i++)
        v1[i] = (float)(i % 1009) * 0.25f;
    for (size_t i = 0; i < n2; i++)
        v2[i] = -(float)(i % 997);
    Onnx__TensorProto *t1 = mb_initializer(b, g, "w1", KN_F32, (int64_t[]){(int64_t)n1}, 1);
    mb_raw(b, t1, v1, n1 * sizeof *v1);
    Onnx__TensorProto *t2 = mb_initializer(b, g, "w2", KN_F32, (int64_t[]){(int64_t)n2}, 1);
    mb_raw(b, t2, v2, n2 * sizeof *v2);
    mb_node(b, g, "ReduceSum", "r1", "w1", "s1");
    mb_node(b, g, "ReduceSum", "r2", "w2", "s2");
    mb_node(b, g, "Add", "a", "s1,s2", "t");
    mb_node(b, g, "Add", "y", "x,t", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *kg = mb_import(b, m);
    assert_non_null(kg);
    char p1[512], p2[512];
    snprintf(p1, sizeof p1, "%s/direct.plan", tmpdir);
    snprintf(p2, sizeof p2, "%s/buffered.plan", tmpdir);
    write_plan(kg, p1);
    setenv("KILN_PLAN_NO_DIRECT_IO", "1", 1);
    write_plan(kg, p2);
    unsetenv("KILN_PLAN_NO_DIRECT_IO");
    size_t n_a, n_b;
    uint8_t *a = (uint8_t *)mb_read_file(p1, &n_a), *c = (uint8_t *)mb_read_file(p2, &n_b);
    assert_true(n_a > (12u << 20));
    assert_int_equal(n_a, n_b);
    assert_memory_equal(a, c, n_a);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *l = NULL;
    assert_int_equal(kn_plan_load(p1, NULL, d, &l), KN_OK);
    for (kn_id v = 0; v < kg->n_values; v++)
        if (kg->values[v].kind == KN_VAL_CONST && kg->values[v].tensor->nbytes)
            assert_memory_equal(kg->values[v].tensor->data, l->values[v].tensor->data, kg->values[v].tensor->nbytes);
    kn_graph_destroy(l);
    kn_diag_destroy(d);
    kn_graph_destroy(kg);
    free(a);
    free(c);
    free(v1);
    free(v2);
    mb_free(b);
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

/* Format versions: a plan without persistent CUDA memory is written as
 * version 2; the reader takes 2 and 3 (3: a program with cuda*.zero_slot,
 * test_cuda_decoder_plan) and refuses others by name. */
static void test_versions(void **s)
{
    (void)s;
    char plan[512];
    roundtrip(NODE "test_if/model.onnx", plan, sizeof plan);
    size_t n;
    uint8_t *b = (uint8_t *)mb_read_file(plan, &n);
    kn_plan_header h;
    memcpy(&h, b, sizeof h);
    assert_int_equal(h.version, KN_PLAN_VERSION_BASE);
    static const uint32_t versions[] = {0, 1, KN_PLAN_VERSION_BASE, KN_PLAN_VERSION, KN_PLAN_VERSION + 1, 99};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        uint32_t v = versions[i];
        memcpy(b + offsetof(kn_plan_header, version), &v, sizeof v);
        mb_plan_rechecksum(b, n);
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_graph *g = NULL;
        kn_status st = kn_plan_load_memory(b, n, "v.plan", NULL, d, &g);
        if (v >= KN_PLAN_VERSION_BASE && v <= KN_PLAN_VERSION) {
            assert_int_equal(st, KN_OK);
            kn_graph_destroy(g);
        } else {
            assert_int_equal(st, KN_ERR_INVALID);
            assert_non_null(strstr(kn_diag_message(d, 0, NULL), "plan format version"));
        }
        kn_diag_destroy(d);
    }
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_sample),  cmocka_unit_test(test_roundtrip_subgraphs),
        cmocka_unit_test(test_every_byte_flip),   cmocka_unit_test(test_load_failing_allocator),
        cmocka_unit_test(test_not_a_plan),        cmocka_unit_test(test_named_blobs),
        cmocka_unit_test(test_named_corrupt),     cmocka_unit_test(test_direct_write_equals_buffered),
        cmocka_unit_test(test_versions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
