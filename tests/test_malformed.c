/* Malformed models: every one must give a clean status, at least one error
 * message and no graph, and leave nothing allocated. Never a crash. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kiln/kiln.h"
#include "model_builder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- helpers ---- */

typedef struct mfx {
    mb *b;
    char *dir;
} mfx;

static int setup(void **state)
{
    mfx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->b = mb_new();
    f->dir = mb_tempdir(f->b);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    mfx *f = *state;
    mb_rmtree(f->dir);
    mb_free(f->b);
    free(f);
    return 0;
}

/* Checks what every import must guarantee: a graph that verifies, or a
 * clean failure (no graph, a new error message); nothing left allocated
 * once the graph is destroyed. */
static void check_outcome(kn_status s, kn_graph *g, const mb_counter *c, kn_diag *d, size_t errors_before)
{
    if (s == KN_OK) {
        assert_non_null(g);
        if (kn_graph_verify(g, d) != KN_OK) {
            kn_diag_print(d, stderr);
            fail_msg("an imported graph does not verify");
        }
        kn_graph_destroy(g);
    } else {
        assert_null(g);
        assert_true(kn_diag_count(d, KN_ERROR) > errors_before);
        assert_true(s == KN_ERR_INVALID || s == KN_ERR_LIMIT || s == KN_ERR_UNSUPPORTED || s == KN_ERR_IO);
    }
    if (c->live != 0)
        fail_msg("%ld blocks left allocated after an import that returned '%s'", c->live, kn_status_str(s));
}

/* Imports bytes from memory through a counting allocator. */
static kn_status try_bytes_opts(const void *data, size_t len, const kn_import_options *o, kn_diag *d)
{
    mb_counter c;
    mb_counter_init(&c);
    kn_graph *g = (kn_graph *)&c; /* must be overwritten */
    size_t errors = kn_diag_count(d, KN_ERROR);
    kn_status s = kn_import_onnx_memory(data, len, NULL, "bad.onnx", o, &c.a, d, &g);
    check_outcome(s, g, &c, d, errors);
    return s;
}

static kn_status try_bytes(const void *data, size_t len, kn_diag *d) { return try_bytes_opts(data, len, NULL, d); }

static kn_status try_file(const char *path, kn_diag *d)
{
    mb_counter c;
    mb_counter_init(&c);
    kn_graph *g = (kn_graph *)&c;
    size_t errors = kn_diag_count(d, KN_ERROR);
    kn_status s = kn_import_onnx_file(path, NULL, &c.a, d, &g);
    check_outcome(s, g, &c, d, errors);
    return s;
}

/* Expects status `want` and an error message containing s1 (and s2). */
static void expect_bytes_opts(const void *data, size_t len, const kn_import_options *o, kn_status want,
                              const char *s1, const char *s2)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_status s = try_bytes_opts(data, len, o, d);
    if (s != want || (want != KN_OK && !mb_diag_has(d, KN_ERROR, s1, s2 ? s2 : ""))) {
        kn_diag_print(d, stderr);
        fail_msg("got '%s', expected '%s' with a message containing \"%s\" \"%s\"", kn_status_str(s),
                 kn_status_str(want), s1, s2 ? s2 : "");
    }
    kn_diag_destroy(d);
}

static void expect_bytes(const void *data, size_t len, kn_status want, const char *s1, const char *s2)
{
    expect_bytes_opts(data, len, NULL, want, s1, s2);
}

static void expect_model_opts(mfx *f, const Onnx__ModelProto *m, const kn_import_options *o, kn_status want,
                              const char *s1, const char *s2)
{
    size_t len;
    uint8_t *bytes = mb_pack(f->b, m, &len);
    expect_bytes_opts(bytes, len, o, want, s1, s2);
}

static void expect_model(mfx *f, const Onnx__ModelProto *m, kn_status want, const char *s1, const char *s2)
{
    expect_model_opts(f, m, NULL, want, s1, s2);
}

static void expect_file(const char *path, kn_status want, const char *s1, const char *s2)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_status s = try_file(path, d);
    if (s != want || !mb_diag_has(d, KN_ERROR, s1, s2 ? s2 : "")) {
        kn_diag_print(d, stderr);
        fail_msg("%s: got '%s', expected '%s'", path, kn_status_str(s), kn_status_str(want));
    }
    kn_diag_destroy(d);
}

/* A small model touching most of the format: metadata, functions (one with
 * a Constant, an attribute reference and an attribute default), an If with
 * subgraphs, raw, typed, string and sparse initializers, attributes, value
 * infos, an unsupported op. */
static Onnx__ModelProto *small_model(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    m->producer_name = mb_strdup(b, "kiln-test");
    mb_metadata(b, m, "author", "me");
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *fn = mb_function(b, m, "my.fn", "Twice", "a", "o", "");
    mb_fnode(b, fn, "Add", "tw", "a,a", "o");
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "cond", mb_tensor_type(b, KN_BOOL, ""));
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "N,4"));
    mb_raw(b, mb_initializer(b, g, "w", KN_F32, (const int64_t[]){4}, 1), (const float[]){1, 2, 3, 4}, 16);
    mb_int64_data(b, mb_initializer(b, g, "shape", KN_I64, (const int64_t[]){2}, 1), (const int64_t[]){-1, 2}, 2);
    Onnx__GraphProto *then_g = mb_graph(b, "then");
    mb_node(b, then_g, "Mul", "t_mul", "x,w", "t_out");
    mb_output(b, then_g, "t_out", NULL);
    Onnx__GraphProto *else_g = mb_graph(b, "else");
    mb_node(b, else_g, "Twice", "e_tw", "x", "e_out")->domain = mb_strdup(b, "my.fn");
    mb_output(b, else_g, "e_out", NULL);
    Onnx__NodeProto *n = mb_node(b, g, "If", "if", "cond", "y");
    mb_attr_g(b, n, "then_branch", then_g);
    mb_attr_g(b, n, "else_branch", else_g);
    mb_attr_i(b, mb_node(b, g, "Softmax", "sm", "y", "z"), "axis", -1);
    mb_node(b, g, "Reshape", "rs", "z,shape", "r");
    mb_value_info(b, g, "y", mb_tensor_type(b, KN_F32, "N,4"));
    mb_output(b, g, "r", mb_tensor_type(b, KN_F32, "?,2"));

    Onnx__FunctionProto *addc = mb_function(b, m, "my.fn", "AddC", "x", "y", "");
    Onnx__TensorProto *k = mb_tensor(b, "k", KN_F32, (const int64_t[]){2}, 1);
    mb_raw(b, k, (const float[]){3, 4}, 8);
    mb_attr_t(b, mb_fnode(b, addc, "Constant", "k", "", "k"), "value", k);
    mb_fnode(b, addc, "Add", "add", "x,k", "s");
    mb_attr_ref(b, mb_fnode(b, addc, "LeakyRelu", "lr", "s", "y"), "alpha",
                ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, "alpha");
    Onnx__AttributeProto *def = mb_attr_new(b, "alpha", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    def->has_f = 1;
    def->f = 0.5f;
    mb_function_default(b, addc, def);
    mb_node(b, g, "AddC", "c1", "r", "q1")->domain = mb_strdup(b, "my.fn");
    mb_node(b, g, "AddC", "c2", "q1", "q2")->domain = mb_strdup(b, "my.fn");
    mb_output(b, g, "q2", NULL);
    Onnx__TensorProto *v = mb_tensor(b, "sp", KN_F32, (const int64_t[]){1}, 1);
    mb_float_data(b, v, (const float[]){1}, 1);
    Onnx__TensorProto *ix = mb_tensor(b, "", KN_I64, (const int64_t[]){1}, 1);
    mb_int64_data(b, ix, (const int64_t[]){2}, 1);
    mb_sparse_initializer(b, g, mb_sparse(b, v, ix, (const int64_t[]){4}, 1));
    mb_string_data(b, mb_initializer(b, g, "strs", KN_STRING, (const int64_t[]){2}, 1),
                   (const char *const[]){"a", "bc"}, NULL, 2);
    mb_attr_strings(b, mb_node(b, g, "Foo", "foo", "sp,strs", "fo"), "ss", (const char *const[]){"x", "yy"}, 2);
    mb_output(b, g, "fo", NULL);
    return m;
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* ---- empty, truncated, random ---- */

static void test_empty(void **state)
{
    mfx *f = *state;
    char *path = mb_write(f->b, f->dir, "empty.onnx", "", 0);
    expect_file(path, KN_ERR_INVALID, path, "empty");
    expect_bytes("", 0, KN_ERR_INVALID, "bad.onnx", "empty");
}

static void test_truncated_small_model(void **state)
{
    mfx *f = *state;
    size_t len;
    uint8_t *bytes = mb_pack(f->b, small_model(f->b), &len);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(try_bytes(bytes, len, d), KN_OK);
    kn_diag_destroy(d);
    size_t n_fail = 0;
    for (size_t n = 0; n < len; n++) {
        d = kn_diag_create(NULL, NULL);
        n_fail += try_bytes(bytes, n, d) != KN_OK;
        kn_diag_destroy(d);
    }
    printf("every prefix of a %zu-byte model: %zu failed cleanly, %zu imported and verified\n", len, n_fail,
           len - n_fail);
    /* only cuts between top-level fields after the graph can decode */
    assert_true(n_fail > len * 9 / 10);
}

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fseek(fp, 0, SEEK_END), 0);
    long n = ftell(fp);
    assert_true(n > 0);
    rewind(fp);
    uint8_t *buf = malloc((size_t)n);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void test_truncated_real_model(void **state)
{
    (void)state;
    const char *path = KN_SHARED_MODELS "/hello_deepa/model.onnx";
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("skipped: %s is absent\n", path);
        skip();
    }
    size_t len;
    uint8_t *bytes = read_all(path, &len);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(try_file(path, d), KN_OK);
    assert_int_equal(try_bytes(bytes, len, d), KN_OK);
    kn_diag_destroy(d);
    size_t n_fail = 0;
    for (size_t i = 0; i < 64; i++) {
        size_t n = len * i / 64;
        d = kn_diag_create(NULL, NULL);
        n_fail += try_bytes(bytes, n, d) != KN_OK;
        kn_diag_destroy(d);
    }
    free(bytes);
    printf("64 prefixes of %s: %zu failed cleanly\n", path, n_fail);
    assert_true(n_fail >= 60);
}

static void test_random_bytes(void **state)
{
    (void)state;
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    uint8_t buf[2048];
    for (int i = 0; i < 200; i++) {
        size_t n = 1 + (size_t)(rng_next(&seed) % sizeof buf);
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rng_next(&seed);
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_status s = try_bytes(buf, n, d);
        if (s == KN_OK)
            fail_msg("random buffer %d (%zu bytes) imported as a model", i, n);
        kn_diag_destroy(d);
    }
}

/* A few bytes of a valid model changed at random: some still decode, and
 * those reach deep into the importer. */
static void test_mutated_model(void **state)
{
    mfx *f = *state;
    size_t len;
    uint8_t *orig = mb_pack(f->b, small_model(f->b), &len);
    uint8_t *buf = mb_alloc(f->b, len);
    uint64_t seed = 12345;
    size_t n_ok = 0;
    for (int i = 0; i < 1000; i++) {
        memcpy(buf, orig, len);
        int n_changes = 1 + (int)(rng_next(&seed) % 4);
        for (int k = 0; k < n_changes; k++)
            buf[rng_next(&seed) % len] = (uint8_t)rng_next(&seed);
        kn_diag *d = kn_diag_create(NULL, NULL);
        n_ok += try_bytes(buf, len, d) == KN_OK;
        kn_diag_destroy(d);
    }
    printf("1000 mutated models: %zu imported and verified, %zu failed cleanly\n", n_ok, 1000 - n_ok);
    assert_true(n_ok < 1000);
}

/* ---- the wrong message ---- */

static void expect_not_a_model(const void *bytes, size_t len)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_status s = try_bytes(bytes, len, d);
    if (s != KN_ERR_INVALID ||
        !(mb_diag_has(d, KN_ERROR, "not a valid ONNX model") || mb_diag_has(d, KN_ERROR, "it has no graph"))) {
        kn_diag_print(d, stderr);
        fail_msg("a %zu-byte message that is not a ModelProto gave '%s'", len, kn_status_str(s));
    }
    kn_diag_destroy(d);
}

static void test_wrong_message(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    size_t len;
    uint8_t *bytes;
    Onnx__TensorProto *t = mb_tensor(b, "W", KN_F32, (const int64_t[]){2, 2}, 2);
    mb_raw(b, t, (const float[]){1, 2, 3, 4}, 16);
    bytes = mb_pack(b, t, &len);
    expect_not_a_model(bytes, len);
    /* only fields the ModelProto does not have: decodes, but has no graph */
    Onnx__TensorProto *raw_only = mb_tensor(b, "", 0, NULL, 0);
    raw_only->has_data_type = 0;
    mb_raw(b, raw_only, "abcdefgh", 8);
    bytes = mb_pack(b, raw_only, &len);
    expect_not_a_model(bytes, len);
    Onnx__GraphProto *g = mb_graph(b, "g");
    Onnx__NodeProto *n = mb_node(b, g, "Add", "add", "a,b", "c");
    mb_attr_i(b, n, "axis", 1);
    bytes = mb_pack(b, n, &len);
    expect_not_a_model(bytes, len);
    Onnx__NodeProto *dom_only = mb_node(b, g, "Relu", NULL, "", "");
    dom_only->op_type = NULL;
    dom_only->domain = mb_strdup(b, "x"); /* field 7: graph in a ModelProto */
    bytes = mb_pack(b, dom_only, &len);
    expect_not_a_model(bytes, len);
    bytes = mb_pack(b, g, &len);
    expect_not_a_model(bytes, len);
    /* a ModelProto without a graph */
    Onnx__ModelProto *m = mb_model(b, 13);
    m->graph = NULL;
    bytes = mb_pack(b, m, &len);
    expect_not_a_model(bytes, len);
}

/* ---- bad tensors and types ---- */

static Onnx__ModelProto *one_initializer(mb *b, Onnx__TensorProto **t, int dtype, const int64_t *dims, size_t rank)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    *t = mb_initializer(b, m->graph, "W", dtype, dims, rank);
    mb_output(b, m->graph, "W", NULL);
    return m;
}

static Onnx__ModelProto *one_input(mb *b, Onnx__TypeProto *type)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_input(b, m->graph, "x", type);
    mb_output(b, m->graph, "x", NULL);
    return m;
}

static void test_negative_dims(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    Onnx__TensorProto *t;
    Onnx__ModelProto *m = one_initializer(b, &t, KN_F32, (const int64_t[]){2, -3}, 2);
    mb_raw(b, t, NULL, 0);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "dimension 1 is negative (-3)");
    m = one_initializer(b, &t, KN_F32, (const int64_t[]){-1}, 1);
    mb_float_data(b, t, (const float[]){1}, 1);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "negative");

    expect_model(f, one_input(b, mb_tensor_type(b, KN_F32, "2,-1")), KN_ERR_INVALID, "input 'x'",
                 "dimension 1 is negative (-1)");
    expect_model(f, one_input(b, mb_seq_type(b, mb_tensor_type(b, KN_F32, "-5"))), KN_ERR_INVALID, "input 'x'",
                 "negative");
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, m->graph, "Relu", "r", "x", "y");
    mb_value_info(b, m->graph, "y", mb_tensor_type(b, KN_F32, "-2"));
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "value_info 'y'", "negative");
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, m->graph, "Relu", "r", "x", "y");
    mb_output(b, m->graph, "y", mb_tensor_type(b, KN_F32, "-7"));
    expect_model(f, m, KN_ERR_INVALID, "output 'y'", "negative");
    /* a sparse tensor's dense shape */
    Onnx__TensorProto *v = mb_tensor(b, "sp", KN_F32, (const int64_t[]){1}, 1);
    mb_float_data(b, v, (const float[]){1}, 1);
    Onnx__TensorProto *ix = mb_tensor(b, "", KN_I64, (const int64_t[]){1}, 1);
    mb_int64_data(b, ix, (const int64_t[]){0}, 1);
    m = mb_model(b, 13);
    mb_sparse_initializer(b, m->graph, mb_sparse(b, v, ix, (const int64_t[]){-4}, 1));
    expect_model(f, m, KN_ERR_INVALID, "initializer 'sp'", "negative");
}

static void test_raw_size_mismatch(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    Onnx__TensorProto *t;
    uint8_t bytes[32] = {0};
    Onnx__ModelProto *m = one_initializer(b, &t, KN_F32, (const int64_t[]){2, 2}, 2);
    mb_raw(b, t, bytes, 15);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "raw_data has 15 bytes, but 4 float32 elements need 16");
    m = one_initializer(b, &t, KN_F32, (const int64_t[]){2, 2}, 2);
    mb_raw(b, t, bytes, 17);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "raw_data has 17 bytes");
    m = one_initializer(b, &t, KN_I4, (const int64_t[]){3}, 1);
    mb_raw(b, t, bytes, 1); /* three int4 take two bytes */
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "need 2");
    m = one_initializer(b, &t, KN_F32, (const int64_t[]){4}, 1);
    mb_raw(b, t, bytes, 0);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "raw_data has 0 bytes");
    /* the same in a Constant node */
    m = mb_model(b, 13);
    Onnx__TensorProto *ct = mb_tensor(b, "", KN_I64, (const int64_t[]){3}, 1);
    mb_raw(b, ct, bytes, 16);
    mb_attr_t(b, mb_node(b, m->graph, "Constant", "c", "", "c"), "value", ct);
    mb_output(b, m->graph, "c", NULL);
    expect_model(f, m, KN_ERR_INVALID, "node 'c' (Constant, opset 13): attribute 'value'", "raw_data has 16 bytes");
    /* typed fields with the wrong count */
    m = one_initializer(b, &t, KN_I64, (const int64_t[]){3}, 1);
    mb_int64_data(b, t, (const int64_t[]){1, 2, 3, 4}, 4);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "int64_data holds 4 entries");
    m = one_initializer(b, &t, KN_U4, (const int64_t[]){3}, 1);
    mb_int32_data(b, t, (const int32_t[]){1, 2, 3}, 3);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "needs 2");
}

static void test_element_count_overflow(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    Onnx__TensorProto *t;
    const int64_t big = (int64_t)1 << 40;
    Onnx__ModelProto *m = one_initializer(b, &t, KN_F32, (const int64_t[]){big, big}, 2);
    mb_raw(b, t, NULL, 0);
    expect_model(f, m, KN_ERR_LIMIT, "initializer 'W'", "element count overflows");
    m = one_initializer(b, &t, KN_U8, (const int64_t[]){INT64_MAX, 2}, 2);
    mb_int32_data(b, t, (const int32_t[]){1}, 1);
    expect_model(f, m, KN_ERR_LIMIT, "initializer 'W'", "overflows");
    /* the count fits in int64, its byte size does not */
    const int64_t half = (int64_t)1 << 31;
    m = one_initializer(b, &t, KN_F64, (const int64_t[]){half, half}, 2);
    mb_raw(b, t, NULL, 0);
    expect_model(f, m, KN_ERR_LIMIT, "initializer 'W'", "byte size");
    /* a huge 4-bit tensor without its bytes */
    m = one_initializer(b, &t, KN_I4, (const int64_t[]){(int64_t)1 << 62}, 1);
    mb_raw(b, t, "ab", 2);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "raw_data has 2 bytes");
    m = one_initializer(b, &t, KN_F32, (const int64_t[]){big, big}, 2);
    expect_model(f, m, KN_ERR_LIMIT, "initializer 'W'", "overflows");
    /* rank over the limit */
    int64_t dims[65];
    for (int i = 0; i < 65; i++)
        dims[i] = 1;
    m = one_initializer(b, &t, KN_F32, dims, 65);
    mb_raw(b, t, "abcd", 4);
    expect_model(f, m, KN_ERR_LIMIT, "initializer 'W'", "rank 65");
    char many[65 * 2];
    for (int i = 0; i < 65; i++) {
        many[2 * i] = '1';
        many[2 * i + 1] = i < 64 ? ',' : '\0';
    }
    expect_model(f, one_input(b, mb_tensor_type(b, KN_F32, many)), KN_ERR_LIMIT, "input 'x'", "rank 65");
}

static void test_unknown_data_type(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    Onnx__TensorProto *t;
    Onnx__ModelProto *m = one_initializer(b, &t, 99, (const int64_t[]){2}, 1);
    mb_raw(b, t, "ab", 2);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "unknown data type 99");
    m = one_initializer(b, &t, -3, (const int64_t[]){2}, 1);
    mb_raw(b, t, "ab", 2);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "unknown data type -3");
    m = one_initializer(b, &t, 0, (const int64_t[]){2}, 1); /* UNDEFINED */
    mb_raw(b, t, "ab", 2);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "unknown data type 0");
    m = one_initializer(b, &t, KN_F32, (const int64_t[]){2}, 1);
    t->has_data_type = 0;
    mb_raw(b, t, "abcdefgh", 8);
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "unknown data type 0");
    expect_model(f, one_input(b, mb_tensor_type(b, 99, "2")), KN_ERR_INVALID, "input 'x'", "unknown element type 99");
    expect_model(f, one_input(b, mb_map_type(b, 99, mb_tensor_type(b, KN_F32, NULL))), KN_ERR_INVALID, "input 'x'",
                 "unknown map key type 99");
    expect_model(f, one_input(b, mb_opt_type(b, mb_sparse_type(b, 1000, NULL))), KN_ERR_INVALID, "input 'x'",
                 "unknown element type 1000");
    /* in a Constant */
    m = mb_model(b, 13);
    Onnx__TensorProto *ct = mb_tensor(b, "", 77, NULL, 0);
    mb_raw(b, ct, "abcd", 4);
    mb_attr_t(b, mb_node(b, m->graph, "Constant", "c77", "", "c"), "value", ct);
    mb_output(b, m->graph, "c", NULL);
    expect_model(f, m, KN_ERR_INVALID, "node 'c77'", "unknown data type 77");
}

static void test_other_bad_tensors(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    Onnx__TensorProto *t;
    Onnx__ModelProto *m = one_initializer(b, &t, KN_F32, (const int64_t[]){1}, 1);
    mb_raw(b, t, "abcd", 4);
    t->has_data_location = 1;
    t->data_location = 5;
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "unknown data_location 5");
    m = one_initializer(b, &t, KN_F32, (const int64_t[]){1}, 1);
    mb_raw(b, t, "abcd", 4);
    t->segment = mb_alloc(b, sizeof *t->segment);
    onnx__tensor_proto__segment__init(t->segment);
    expect_model(f, m, KN_ERR_UNSUPPORTED, "initializer 'W'", "segmented");
    /* external data in a model read from memory */
    m = one_initializer(b, &t, KN_F32, (const int64_t[]){1}, 1);
    mb_external(b, t, "location", "w.bin");
    expect_model(f, m, KN_ERR_INVALID, "initializer 'W'", "'w.bin'");

    /* sparse tensors */
    struct {
        int vtype;
        int64_t vdims[2];
        size_t vrank;
        int itype;
        int64_t idims[2];
        size_t irank;
        kn_status want;
        const char *msg;
    } sp[] = {
        {KN_F32, {2, 1}, 2, KN_I64, {2}, 1, KN_ERR_INVALID, "must be 1-D"},
        {KN_F32, {2}, 1, KN_I32, {2}, 1, KN_ERR_INVALID, "must be int64"},
        {KN_F32, {2}, 1, KN_I64, {3}, 1, KN_ERR_INVALID, "indices shape does not match"},
        {KN_F32, {2}, 1, KN_I64, {2, 3}, 2, KN_ERR_INVALID, "indices shape does not match"},
        {KN_I4, {2}, 1, KN_I64, {2}, 1, KN_ERR_UNSUPPORTED, "sparse int4"},
    };
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
        Onnx__TensorProto *v = mb_tensor(b, "S", sp[i].vtype, sp[i].vdims, sp[i].vrank);
        size_t nv, ni;
        kn_dtype_nbytes((kn_dtype)sp[i].vtype, sp[i].vdims[0] * (sp[i].vrank > 1 ? sp[i].vdims[1] : 1), &nv);
        mb_raw(b, v, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", nv);
        Onnx__TensorProto *ix = mb_tensor(b, "", sp[i].itype, sp[i].idims, sp[i].irank);
        kn_dtype_nbytes((kn_dtype)sp[i].itype, sp[i].idims[0] * (sp[i].irank > 1 ? sp[i].idims[1] : 1), &ni);
        uint8_t zeros[64] = {0};
        mb_raw(b, ix, zeros, ni);
        m = mb_model(b, 13);
        mb_sparse_initializer(b, m->graph, mb_sparse(b, v, ix, (const int64_t[]){4, 4}, 2));
        expect_model(f, m, sp[i].want, "initializer 'S'", sp[i].msg);
    }
    Onnx__TensorProto *v = mb_tensor(b, "S", KN_F32, (const int64_t[]){1}, 1);
    mb_float_data(b, v, (const float[]){1}, 1);
    m = mb_model(b, 13);
    mb_sparse_initializer(b, m->graph, mb_sparse(b, v, NULL, (const int64_t[]){4}, 1));
    expect_model(f, m, KN_ERR_INVALID, "initializer 'S'", "without values or indices");
    Onnx__TensorProto *ix = mb_tensor(b, "", KN_I64, (const int64_t[]){1, 2}, 2);
    mb_int64_data(b, ix, (const int64_t[]){0, 9}, 2); /* coordinate 9 in a dimension of 4 */
    m = mb_model(b, 13);
    mb_sparse_initializer(b, m->graph, mb_sparse(b, v, ix, (const int64_t[]){4, 4}, 2));
    expect_model(f, m, KN_ERR_INVALID, "initializer 'S'", "sparse index 9 out of range");
}

/* ---- bad nodes, attributes, graphs ---- */

static void test_bad_nodes(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    Onnx__NodeProto *n = mb_node(b, m->graph, "Relu", "r", "x", "y");
    mb_attr(b, n, "weird", 99);
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "node 'r' (Relu, opset 13): attribute 'weird'", "unknown attribute type 99");

    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_attr(b, mb_node(b, m->graph, "Relu", "r", "x", "y"), "t", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "attribute 't'", "without a tensor");

    m = mb_model(b, 13);
    mb_input(b, m->graph, "c", mb_tensor_type(b, KN_BOOL, ""));
    n = mb_node(b, m->graph, "If", "if", "c", "y");
    mb_attr(b, n, "then_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    mb_attr(b, n, "else_branch", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH);
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "node 'if' (If, opset 13)", "without a graph");

    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_attr_i(b, mb_node(b, m->graph, "Relu", "r", "x", "y"), "", 1);
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "node 'r'", "attribute without a name");

    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_attr_i(b, mb_node(b, m->graph, "Constant", "c", "x", "y"), "value_int", 1);
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "node 'c' (Constant, opset 13)", "no inputs");

    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_output(b, m->graph, "", NULL);
    expect_model(f, m, KN_ERR_INVALID, "graph 'main'", "output 0 has no name");

    /* a function called with more inputs than it has */
    m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    mb_fnode(b, mb_function(b, m, "my.fn", "One", "a", "o", ""), "Relu", "fr", "a", "o");
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, m->graph, "One", "call", "x,x", "y")->domain = mb_strdup(b, "my.fn");
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "node 'call' (One)", "2 inputs");
}

/* ---- nesting ---- */

/* Bytes written back to front, so that messages nest from the inside out. */
typedef struct rbuf {
    uint8_t *buf;
    size_t cap, pos;
} rbuf;

static void r_bytes(rbuf *r, const void *p, size_t n)
{
    assert_true(r->pos >= n);
    r->pos -= n;
    memcpy(r->buf + r->pos, p, n);
}

static void r_varint(rbuf *r, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    r_bytes(r, t, n);
}

/* Makes everything written so far the payload of length-delimited `field`. */
static void r_wrap(rbuf *r, unsigned field)
{
    r_varint(r, r->cap - r->pos);
    r_varint(r, (uint64_t)field << 3 | 2);
}

/* A TypeProto: `levels` sequences around a float tensor. */
static void r_deep_type(rbuf *r, int levels)
{
    r_bytes(r, "\x08\x01", 2); /* Tensor.elem_type = 1 */
    r_wrap(r, 1);              /* TypeProto.tensor_type */
    for (int i = 0; i < levels; i++) {
        r_wrap(r, 1); /* Sequence.elem_type */
        r_wrap(r, 4); /* TypeProto.sequence_type */
    }
}

/* A model whose one input has a type nested `levels` deep. */
static uint8_t *deep_model(mb *b, int levels, size_t *len)
{
    rbuf r = {NULL, (size_t)levels * 16 + 256, 0};
    r.buf = mb_alloc(b, r.cap);
    r.pos = r.cap;
    r_deep_type(&r, levels);
    r_wrap(&r, 2);                /* ValueInfoProto.type */
    r_bytes(&r, "\x0a\x01x", 3); /* ValueInfoProto.name = "x" */
    r_wrap(&r, 11);               /* GraphProto.input */
    r_wrap(&r, 7);                /* ModelProto.graph */
    r_bytes(&r, "\x08\x08", 2);   /* ModelProto.ir_version = 8 */
    *len = r.cap - r.pos;
    return r.buf + r.pos;
}

static void test_deep_nesting(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    size_t len;
    uint8_t *bytes = deep_model(b, 20, &len);
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(try_bytes(bytes, len, d), KN_OK);
    kn_diag_destroy(d);
    bytes = deep_model(b, 100, &len);
    expect_bytes(bytes, len, KN_ERR_LIMIT, "input 'x'", "type nested deeper than 32");
    /* deep enough to overflow the stack of a recursive decoder */
    bytes = deep_model(b, 100000, &len);
    expect_bytes(bytes, len, KN_ERR_LIMIT, "bad.onnx", "nested deeper than");

    /* If inside If: over the subgraph limit, then over the message limit */
    for (int k = 0; k < 2; k++) {
        int levels = k ? 400 : 100;
        Onnx__ModelProto *m = mb_model(b, 13);
        mb_input(b, m->graph, "c", mb_tensor_type(b, KN_BOOL, ""));
        Onnx__GraphProto *g = m->graph;
        for (int i = 0; i < levels; i++) {
            Onnx__GraphProto *sub = mb_graph(b, "sub");
            Onnx__NodeProto *n = mb_node(b, g, "If", "if", "c", "y");
            mb_output(b, g, "y", NULL);
            mb_attr_g(b, n, "then_branch", sub);
            mb_attr_g(b, n, "else_branch", mb_graph(b, "leaf"));
            g = sub;
        }
        expect_model(f, m, KN_ERR_LIMIT, "nested deeper than", NULL);
    }

    /* a function's attribute default (an unknown field to protobuf-c's
     * decoder) holding a deeply nested type */
    rbuf r = {NULL, 100000 * 16 + 256, 0};
    r.buf = mb_alloc(b, r.cap);
    r.pos = r.cap;
    r_deep_type(&r, 100000);
    r_wrap(&r, 14);                        /* AttributeProto.tp */
    r_bytes(&r, "\xa0\x01\x0d", 3);        /* AttributeProto.type = TYPE_PROTO */
    r_bytes(&r, "\x0a\x05" "alpha", 7);    /* AttributeProto.name */
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *fn = mb_function(b, m, "my.fn", "Dflt", "x", "y", "");
    mb_fnode(b, fn, "Relu", "fr", "x", "y");
    mb_unknown_field(b, &fn->base, 11, r.buf + r.pos, r.cap - r.pos);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, m->graph, "Dflt", "call", "x", "y")->domain = mb_strdup(b, "my.fn");
    mb_output(b, m->graph, "y", NULL);
    expect_model(f, m, KN_ERR_INVALID, "function my.fn.Dflt", "attribute default");
}

/* ---- limits a small file must not blow ---- */

/* Functions F1..Fn in domain "x": F0 is Relu, Fk calls F(k-1) twice, so
 * calling Fn inlines 2^n nodes from a file of a few hundred bytes. */
static Onnx__ModelProto *doubling_functions(mb *b, int n)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "x", 1);
    mb_fnode(b, mb_function(b, m, "x", "F0", "a", "o", ""), "Relu", "r", "a", "o");
    for (int k = 1; k <= n; k++) {
        char name[16], callee[16];
        snprintf(name, sizeof name, "F%d", k);
        snprintf(callee, sizeof callee, "F%d", k - 1);
        Onnx__FunctionProto *fn = mb_function(b, m, "x", name, "a", "o", "");
        mb_fnode(b, fn, callee, "c1", "a", "t")->domain = mb_strdup(b, "x");
        mb_fnode(b, fn, callee, "c2", "t", "o")->domain = mb_strdup(b, "x");
    }
    char top[16];
    snprintf(top, sizeof top, "F%d", n);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, m->graph, top, "call", "x", "y")->domain = mb_strdup(b, "x");
    mb_output(b, m->graph, "y", NULL);
    return m;
}

static void test_limits(void **state)
{
    mfx *f = *state;
    mb *b = f->b;
    kn_import_options o = {0};

    /* node count, direct and through inlining */
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, m->graph, "Relu", "r1", "x", "y1");
    mb_node(b, m->graph, "Relu", "r2", "y1", "y2");
    mb_node(b, m->graph, "Relu", "r3", "y2", "y3");
    mb_output(b, m->graph, "y3", NULL);
    o.max_nodes = 3;
    expect_model_opts(f, m, &o, KN_OK, "", NULL);
    o.max_nodes = 2;
    expect_model_opts(f, m, &o, KN_ERR_LIMIT, "node 'r3' (Relu): the model has more than 2 nodes", "max_nodes");
    o.max_nodes = 100;
    expect_model_opts(f, doubling_functions(b, 5), &o, KN_OK, "", NULL); /* 32 Relu, 63 calls */
    expect_model_opts(f, doubling_functions(b, 6), &o, KN_ERR_LIMIT, "more than 100 nodes", NULL);

    /* tensor bytes: a sparse tensor densifies to 4 TiB from a few bytes */
    Onnx__TensorProto *v = mb_tensor(b, "S", KN_F32, (const int64_t[]){1}, 1);
    mb_float_data(b, v, (const float[]){1}, 1);
    Onnx__TensorProto *ix = mb_tensor(b, "", KN_I64, (const int64_t[]){1}, 1);
    mb_int64_data(b, ix, (const int64_t[]){5}, 1);
    m = mb_model(b, 13);
    mb_sparse_initializer(b, m->graph, mb_sparse(b, v, ix, (const int64_t[]){(int64_t)1 << 40}, 1));
    mb_output(b, m->graph, "S", NULL);
    expect_model(f, m, KN_ERR_LIMIT, "initializer 'S'", "max_data_bytes");
    /* a function's 1 KiB constant, copied for each of 2^6 calls */
    m = doubling_functions(b, 6);
    Onnx__FunctionProto *f0 = m->functions[0];
    Onnx__TensorProto *k = mb_tensor(b, "k", KN_U8, (const int64_t[]){1024}, 1);
    static const uint8_t kb[1024];
    mb_raw(b, k, kb, sizeof kb);
    mb_attr_t(b, mb_fnode(b, f0, "Constant", "k", "", "k"), "value", k);
    o.max_nodes = 0;
    o.max_data_bytes = 64 * 1024;
    expect_model_opts(f, m, &o, KN_OK, "", NULL);
    o.max_data_bytes = 32 * 1024;
    expect_model_opts(f, m, &o, KN_ERR_LIMIT, "attribute 'value'", "more than 32768 bytes");
    /* strings count too: attributes and string tensors */
    char *big = mb_alloc(b, 5001);
    memset(big, 'a', 5000);
    big[5000] = 0;
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_attr_s(b, mb_node(b, m->graph, "Foo", "foo", "x", "y"), "s", big);
    mb_output(b, m->graph, "y", NULL);
    o.max_data_bytes = 4096;
    expect_model_opts(f, m, &o, KN_ERR_LIMIT, "node 'foo'", "attribute 's'");
    m = mb_model(b, 13);
    mb_string_data(b, mb_initializer(b, m->graph, "strs", KN_STRING, (const int64_t[]){2}, 1),
                   (const char *const[]){big, big}, NULL, 2);
    mb_output(b, m->graph, "strs", NULL);
    o.max_data_bytes = 8192;
    expect_model_opts(f, m, &o, KN_ERR_LIMIT, "initializer 'strs'", "max_data_bytes");
    o.max_data_bytes = 10000;
    expect_model_opts(f, m, &o, KN_OK, "", NULL);
}

/* ---- allocation failures ---- */

/* The small model imported with each allocation failing in turn: every
 * failure is a clean KN_ERR_NOMEM with a message and nothing allocated. */
static void test_allocation_failures(void **state)
{
    mfx *f = *state;
    size_t len;
    uint8_t *bytes = mb_pack(f->b, small_model(f->b), &len);
    mb_counter c;
    mb_counter_init(&c);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "small.onnx", NULL, &c.a, d, &g), KN_OK);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    long total = c.calls;
    assert_true(total > 50);
    for (long n = 1; n <= total; n++) {
        mb_counter_init(&c);
        c.fail_at = n;
        d = kn_diag_create(NULL, NULL);
        g = (kn_graph *)&c;
        kn_status s = kn_import_onnx_memory(bytes, len, NULL, "small.onnx", NULL, &c.a, d, &g);
        if (s == KN_OK) {
            kn_graph_destroy(g);
        } else if (s != KN_ERR_NOMEM || g || kn_diag_count(d, KN_ERROR) == 0) {
            kn_diag_print(d, stderr);
            fail_msg("allocation %ld of %ld failing gave '%s'", n, total, kn_status_str(s));
        }
        if (c.live != 0)
            fail_msg("allocation %ld of %ld failing left %ld blocks allocated", n, total, c.live);
        kn_diag_destroy(d);
    }
}

/* ---- paths ---- */

static void test_bad_paths(void **state)
{
    mfx *f = *state;
    char *missing = mb_path(f->b, f->dir, "no/such/model.onnx");
    expect_file(missing, KN_ERR_IO, missing, "cannot open");
    expect_file(f->dir, KN_ERR_IO, f->dir, "not a regular file");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_empty),
        T(test_truncated_small_model),
        T(test_truncated_real_model),
        T(test_random_bytes),
        T(test_mutated_model),
        T(test_wrong_message),
        T(test_negative_dims),
        T(test_raw_size_mismatch),
        T(test_element_count_overflow),
        T(test_unknown_data_type),
        T(test_other_bad_tensors),
        T(test_bad_nodes),
        T(test_deep_nesting),
        T(test_limits),
        T(test_allocation_failures),
        T(test_bad_paths),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
