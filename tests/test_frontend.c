/* ONNX importer unit tests: models built in C (tests/model_builder.c) are
 * imported, verified, and checked value by value against the IR. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ir/ir.h"
#include "ir/stats.h"
#include "model_builder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- fixture and helpers ---- */

typedef struct fx {
    mb *b;
    char *dir;      /* temp folder, removed at teardown */
    kn_diag *d;     /* messages of the latest import */
    kn_graph *g;    /* the latest imported graph */
    mb_counter cnt; /* every import allocates through it */
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->b = mb_new();
    f->dir = mb_tempdir(f->b);
    f->d = kn_diag_create(NULL, NULL);
    mb_counter_init(&f->cnt);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    kn_graph_destroy(f->g);
    kn_diag_destroy(f->d);
    mb_rmtree(f->dir);
    mb_free(f->b);
    long live = f->cnt.live;
    free(f);
    if (live != 0) {
        fprintf(stderr, "%ld blocks still allocated after the graph was destroyed\n", live);
        return -1;
    }
    return 0;
}

static void fresh(fx *f)
{
    kn_graph_destroy(f->g);
    f->g = NULL;
    kn_diag_destroy(f->d);
    f->d = kn_diag_create(NULL, NULL);
    assert_non_null(f->d);
}

static kn_graph *check_ok(fx *f, kn_status s)
{
    if (s != KN_OK) {
        kn_diag_print(f->d, stderr);
        fail_msg("import failed: %s", kn_status_str(s));
    }
    assert_non_null(f->g);
    s = kn_graph_verify(f->g, f->d);
    if (s != KN_OK) {
        kn_diag_print(f->d, stderr);
        fail_msg("verify failed: %s", kn_status_str(s));
    }
    return f->g;
}

/* Imports m from memory (external data is looked up in f->dir) and verifies it. */
static kn_graph *import_ok(fx *f, const Onnx__ModelProto *m)
{
    fresh(f);
    size_t len;
    uint8_t *bytes = mb_pack(f->b, m, &len);
    return check_ok(f, kn_import_onnx_memory(bytes, len, f->dir, "test.onnx", NULL, &f->cnt.a, f->d, &f->g));
}

static kn_graph *import_file_ok(fx *f, const char *path)
{
    fresh(f);
    return check_ok(f, kn_import_onnx_file(path, NULL, &f->cnt.a, f->d, &f->g));
}

static void check_failed(fx *f, kn_status s, kn_status want)
{
    if (s != want) {
        kn_diag_print(f->d, stderr);
        fail_msg("import gave '%s', expected '%s'", kn_status_str(s), kn_status_str(want));
    }
    assert_null(f->g);
    assert_true(kn_diag_count(f->d, KN_ERROR) >= 1);
    assert_int_equal(f->cnt.live, 0);
}

/* Imports m from memory and expects status `want`, no graph, an error
 * message, and nothing left allocated. */
static void import_err(fx *f, const Onnx__ModelProto *m, kn_status want)
{
    fresh(f);
    size_t len;
    uint8_t *bytes = mb_pack(f->b, m, &len);
    f->g = (kn_graph *)&len; /* must be overwritten with NULL */
    check_failed(f, kn_import_onnx_memory(bytes, len, f->dir, "test.onnx", NULL, &f->cnt.a, f->d, &f->g), want);
}

static void import_file_err(fx *f, const char *path, kn_status want)
{
    fresh(f);
    check_failed(f, kn_import_onnx_file(path, NULL, &f->cnt.a, f->d, &f->g), want);
}

static void dump_diag(const fx *f) { kn_diag_print(f->d, stderr); }

#define ASSERT_DIAG(f, sev, ...)                                      \
    do {                                                              \
        if (!mb_diag_has((f)->d, (sev), __VA_ARGS__)) {               \
            dump_diag(f);                                             \
            fail_msg("no matching message for: %s", #__VA_ARGS__);    \
        }                                                             \
    } while (0)

static kn_id value_id(const kn_graph *g, const char *name)
{
    for (kn_id i = 0; i < g->n_values; i++)
        if (strcmp(g->values[i].name, name) == 0)
            return i;
    return KN_NONE;
}

static const kn_value *value(const kn_graph *g, const char *name)
{
    kn_id id = value_id(g, name);
    if (id == KN_NONE)
        fail_msg("no value '%s' in graph '%s'", name, g->name);
    return &g->values[id];
}

static const kn_node *node_named(const kn_graph *g, const char *name)
{
    for (kn_id i = 0; i < g->n_nodes; i++)
        if (strcmp(g->nodes[i].name, name) == 0)
            return &g->nodes[i];
    fail_msg("no node '%s' in graph '%s'", name, g->name);
    return NULL;
}

static const kn_node *producer(const kn_graph *g, const char *value_name)
{
    const kn_value *v = value(g, value_name);
    assert_int_equal(v->kind, KN_VAL_NODE);
    assert_true(v->producer < g->n_nodes);
    return &g->nodes[v->producer];
}

static uint32_t count_op(const kn_graph *g, const char *op_type)
{
    uint32_t n = 0;
    for (kn_id i = 0; i < g->n_nodes; i++)
        n += strcmp(g->nodes[i].op_type, op_type) == 0;
    return n;
}

static const kn_tensor *const_tensor(const kn_graph *g, const char *name)
{
    const kn_value *v = value(g, name);
    assert_int_equal(v->kind, KN_VAL_CONST);
    assert_non_null(v->tensor);
    assert_int_equal(v->type.kind, KN_TYPE_TENSOR);
    assert_int_equal(v->type.dtype, v->tensor->dtype);
    return v->tensor;
}

static void type_str(const kn_type *t, char *buf, size_t n) { kn_type_format(t, buf, n); }

#define ASSERT_TYPE(t, text)                        \
    do {                                            \
        char buf_[256];                             \
        type_str((t), buf_, sizeof buf_);           \
        assert_string_equal(buf_, (text));          \
    } while (0)

static kn_str intern(kn_graph *g, const char *s)
{
    kn_str out;
    assert_int_equal(kn_graph_intern_cstr(g, s, &out), KN_OK);
    return out;
}

static const kn_dtype numeric_dtypes[] = {
    KN_F32,  KN_U8,   KN_I8,  KN_U16,        KN_I16,          KN_I32,      KN_I64,          KN_BOOL,
    KN_F16,  KN_F64,  KN_U32, KN_U64,        KN_C64,          KN_C128,     KN_BF16,         KN_F8E4M3FN,
    KN_F8E4M3FNUZ, KN_F8E5M2, KN_F8E5M2FNUZ, KN_U4,          KN_I4,       KN_F4E2M1,       KN_F8E8M0,
};
#define N_NUMERIC (sizeof numeric_dtypes / sizeof numeric_dtypes[0])

/* ---- initializers ---- */

static void test_initializers_raw_every_dtype(void **state)
{
    fx *f = *state;
    Onnx__ModelProto *m = mb_model(f->b, 21);
    const int64_t dims[] = {3};
    char name[64];
    for (size_t k = 0; k < N_NUMERIC; k++) {
        kn_dtype dt = numeric_dtypes[k];
        size_t nbytes;
        assert_int_equal(kn_dtype_nbytes(dt, 3, &nbytes), KN_OK);
        uint8_t bytes[64];
        for (size_t i = 0; i < nbytes; i++)
            bytes[i] = (uint8_t)(i * 37 + (size_t)dt * 11 + 1);
        snprintf(name, sizeof name, "raw_%s", kn_dtype_name(dt));
        mb_raw(f->b, mb_initializer(f->b, m->graph, name, (int)dt, dims, 1), bytes, nbytes);
        mb_output(f->b, m->graph, name, NULL);
    }
    /* a scalar and an empty tensor */
    float one = 1.0f;
    mb_raw(f->b, mb_initializer(f->b, m->graph, "scalar", KN_F32, NULL, 0), &one, 4);
    const int64_t empty_dims[] = {0, 5};
    mb_raw(f->b, mb_initializer(f->b, m->graph, "empty", KN_F32, empty_dims, 2), NULL, 0);
    mb_output(f->b, m->graph, "scalar", NULL);
    mb_output(f->b, m->graph, "empty", NULL);

    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->n_nodes, 0);
    assert_int_equal(g->n_outputs, N_NUMERIC + 2);
    for (size_t k = 0; k < N_NUMERIC; k++) {
        kn_dtype dt = numeric_dtypes[k];
        snprintf(name, sizeof name, "raw_%s", kn_dtype_name(dt));
        const kn_tensor *t = const_tensor(g, name);
        size_t nbytes;
        kn_dtype_nbytes(dt, 3, &nbytes);
        uint8_t bytes[64];
        for (size_t i = 0; i < nbytes; i++)
            bytes[i] = (uint8_t)(i * 37 + (size_t)dt * 11 + 1);
        assert_int_equal(t->dtype, dt);
        assert_int_equal(t->rank, 1);
        assert_int_equal(t->dims[0], 3);
        assert_int_equal(t->n_elems, 3);
        assert_int_equal(t->nbytes, nbytes);
        assert_false(t->is_external);
        assert_memory_equal(t->data, bytes, nbytes);
        const kn_value *v = value(g, name);
        assert_int_equal(v->type.shape.rank, 1);
        assert_int_equal(v->type.shape.dims[0].value, 3);
    }
    /* 4-bit types: three elements take two bytes; 8-bit types (bool) one each */
    assert_int_equal(const_tensor(g, "raw_int4")->nbytes, 2);
    assert_int_equal(const_tensor(g, "raw_uint4")->nbytes, 2);
    assert_int_equal(const_tensor(g, "raw_float4e2m1")->nbytes, 2);
    assert_int_equal(const_tensor(g, "raw_bool")->nbytes, 3);
    assert_int_equal(const_tensor(g, "raw_complex128")->nbytes, 48);
    const kn_tensor *s = const_tensor(g, "scalar");
    assert_int_equal(s->rank, 0);
    assert_int_equal(s->n_elems, 1);
    assert_memory_equal(s->data, &one, 4);
    const kn_tensor *e = const_tensor(g, "empty");
    assert_int_equal(e->rank, 2);
    assert_int_equal(e->n_elems, 0);
    assert_int_equal(e->nbytes, 0);
}

static Onnx__TensorProto *typed(fx *f, Onnx__ModelProto *m, const char *name, kn_dtype dt, int64_t n)
{
    mb_output(f->b, m->graph, name, NULL);
    return mb_initializer(f->b, m->graph, name, (int)dt, &n, 1);
}

static void expect_bytes(const kn_graph *g, const char *name, kn_dtype dt, int64_t n, const void *want, size_t len)
{
    const kn_tensor *t = const_tensor(g, name);
    assert_int_equal(t->dtype, dt);
    assert_int_equal(t->rank, 1);
    assert_int_equal(t->n_elems, n);
    assert_int_equal(t->nbytes, len);
    assert_memory_equal(t->data, want, len);
}

static void test_initializers_typed_fields(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 21);

    const float f32[] = {1.5f, -2.0f, 3.25f};
    mb_float_data(b, typed(f, m, "f32", KN_F32, 3), f32, 3);
    const int32_t u8[] = {0, 200, 255};
    mb_int32_data(b, typed(f, m, "u8", KN_U8, 3), u8, 3);
    const int32_t i8[] = {-1, 127, -128};
    mb_int32_data(b, typed(f, m, "i8", KN_I8, 3), i8, 3);
    const int32_t u16[] = {0, 65535, 1234};
    mb_int32_data(b, typed(f, m, "u16", KN_U16, 3), u16, 3);
    const int32_t i16[] = {-1, 32767, -32768};
    mb_int32_data(b, typed(f, m, "i16", KN_I16, 3), i16, 3);
    const int32_t i32[] = {-5, 7, INT32_MAX};
    mb_int32_data(b, typed(f, m, "i32", KN_I32, 3), i32, 3);
    const int64_t i64[] = {-1, (int64_t)1 << 40, INT64_MIN};
    mb_int64_data(b, typed(f, m, "i64", KN_I64, 3), i64, 3);
    const char *strs[] = {"a", "", "x\0y"};
    const size_t str_lens[] = {1, 0, 3};
    mb_string_data(b, typed(f, m, "str", KN_STRING, 3), strs, str_lens, 3);
    const int32_t bools[] = {0, 1, 5};
    mb_int32_data(b, typed(f, m, "bool", KN_BOOL, 3), bools, 3);
    const int32_t f16[] = {0x3C00, 0xC000, 0x7BFF}; /* 1.0, -2.0, 65504 */
    mb_int32_data(b, typed(f, m, "f16", KN_F16, 3), f16, 3);
    const double f64[] = {0.5, -1e300, 3.0};
    mb_double_data(b, typed(f, m, "f64", KN_F64, 3), f64, 3);
    const uint64_t u32[] = {0, 0xFFFFFFFFu, 7};
    mb_uint64_data(b, typed(f, m, "u32", KN_U32, 3), u32, 3);
    const uint64_t u64[] = {UINT64_MAX, 1, (uint64_t)1 << 63};
    mb_uint64_data(b, typed(f, m, "u64", KN_U64, 3), u64, 3);
    const float c64[] = {1, 2, 3, 4, 5, 6}; /* (re, im) pairs */
    mb_float_data(b, typed(f, m, "c64", KN_C64, 3), c64, 6);
    const double c128[] = {-1, -2, -3, -4, -5, -6};
    mb_double_data(b, typed(f, m, "c128", KN_C128, 3), c128, 6);
    const int32_t bf16[] = {0x3F80, 0xC000, 0x7F7F};
    mb_int32_data(b, typed(f, m, "bf16", KN_BF16, 3), bf16, 3);
    const int32_t f8[] = {0x00, 0x7E, 0xFF};
    mb_int32_data(b, typed(f, m, "f8e4m3fn", KN_F8E4M3FN, 3), f8, 3);
    mb_int32_data(b, typed(f, m, "f8e4m3fnuz", KN_F8E4M3FNUZ, 3), f8, 3);
    mb_int32_data(b, typed(f, m, "f8e5m2", KN_F8E5M2, 3), f8, 3);
    mb_int32_data(b, typed(f, m, "f8e5m2fnuz", KN_F8E5M2FNUZ, 3), f8, 3);
    mb_int32_data(b, typed(f, m, "f8e8m0", KN_F8E8M0, 3), f8, 3);
    /* 4-bit types: one int32_data entry holds two elements, low nibble first */
    const int32_t u4[] = {0x21, 0x0F};  /* 1, 2, 15 */
    mb_int32_data(b, typed(f, m, "u4", KN_U4, 3), u4, 2);
    const int32_t i4[] = {0xE1, 0x03};  /* 1, -2, 3 */
    mb_int32_data(b, typed(f, m, "i4", KN_I4, 3), i4, 2);
    const int32_t f4[] = {0x7F, 0x01};
    mb_int32_data(b, typed(f, m, "f4", KN_F4E2M1, 3), f4, 2);
    const int32_t i4_even[] = {0x10, 0x32};  /* 0, 1, 2, 3 */
    mb_int32_data(b, typed(f, m, "i4_even", KN_I4, 4), i4_even, 2);
    typed(f, m, "empty_f32", KN_F32, 0); /* no elements, no data */
    typed(f, m, "empty_i64", KN_I64, 0);
    typed(f, m, "empty_u16", KN_U16, 0);

    kn_graph *g = import_ok(f, m);
    expect_bytes(g, "f32", KN_F32, 3, f32, 12);
    expect_bytes(g, "u8", KN_U8, 3, (const uint8_t[]){0, 200, 255}, 3);
    expect_bytes(g, "i8", KN_I8, 3, (const int8_t[]){-1, 127, -128}, 3);
    expect_bytes(g, "u16", KN_U16, 3, (const uint16_t[]){0, 65535, 1234}, 6);
    expect_bytes(g, "i16", KN_I16, 3, (const int16_t[]){-1, 32767, -32768}, 6);
    expect_bytes(g, "i32", KN_I32, 3, i32, 12);
    expect_bytes(g, "i64", KN_I64, 3, i64, 24);
    expect_bytes(g, "bool", KN_BOOL, 3, (const uint8_t[]){0, 1, 1}, 3);
    expect_bytes(g, "f16", KN_F16, 3, (const uint16_t[]){0x3C00, 0xC000, 0x7BFF}, 6);
    expect_bytes(g, "f64", KN_F64, 3, f64, 24);
    expect_bytes(g, "u32", KN_U32, 3, (const uint32_t[]){0, 0xFFFFFFFFu, 7}, 12);
    expect_bytes(g, "u64", KN_U64, 3, u64, 24);
    expect_bytes(g, "c64", KN_C64, 3, c64, 24);
    expect_bytes(g, "c128", KN_C128, 3, c128, 48);
    expect_bytes(g, "bf16", KN_BF16, 3, (const uint16_t[]){0x3F80, 0xC000, 0x7F7F}, 6);
    const uint8_t f8_bytes[] = {0x00, 0x7E, 0xFF};
    expect_bytes(g, "f8e4m3fn", KN_F8E4M3FN, 3, f8_bytes, 3);
    expect_bytes(g, "f8e4m3fnuz", KN_F8E4M3FNUZ, 3, f8_bytes, 3);
    expect_bytes(g, "f8e5m2", KN_F8E5M2, 3, f8_bytes, 3);
    expect_bytes(g, "f8e5m2fnuz", KN_F8E5M2FNUZ, 3, f8_bytes, 3);
    expect_bytes(g, "f8e8m0", KN_F8E8M0, 3, f8_bytes, 3);
    expect_bytes(g, "u4", KN_U4, 3, (const uint8_t[]){0x21, 0x0F}, 2);
    expect_bytes(g, "i4", KN_I4, 3, (const uint8_t[]){0xE1, 0x03}, 2);
    expect_bytes(g, "f4", KN_F4E2M1, 3, (const uint8_t[]){0x7F, 0x01}, 2);
    expect_bytes(g, "i4_even", KN_I4, 4, (const uint8_t[]){0x10, 0x32}, 2);
    expect_bytes(g, "empty_f32", KN_F32, 0, "", 0);
    expect_bytes(g, "empty_i64", KN_I64, 0, "", 0);
    expect_bytes(g, "empty_u16", KN_U16, 0, "", 0);

    const kn_tensor *st = const_tensor(g, "str");
    assert_int_equal(st->dtype, KN_STRING);
    assert_int_equal(st->n_elems, 3);
    assert_int_equal(st->nbytes, 0);
    const kn_bytes *sb = st->data;
    assert_int_equal(sb[0].len, 1);
    assert_memory_equal(sb[0].data, "a", 1);
    assert_int_equal(sb[1].len, 0);
    assert_int_equal(sb[2].len, 3);
    assert_memory_equal(sb[2].data, "x\0y", 3);
}

static void test_initializer_typed_field_errors(void **state)
{
    fx *f = *state;
    const int64_t dims[] = {3};
    /* wrong count */
    Onnx__ModelProto *m = mb_model(f->b, 13);
    mb_float_data(f->b, mb_initializer(f->b, m->graph, "W", KN_F32, dims, 1), (const float[]){1, 2}, 2);
    mb_output(f->b, m->graph, "W", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "initializer 'W'", "float_data holds 2 entries");
    /* wrong field */
    m = mb_model(f->b, 13);
    mb_int64_data(f->b, mb_initializer(f->b, m->graph, "W", KN_F32, dims, 1), (const int64_t[]){1, 2, 3}, 3);
    mb_output(f->b, m->graph, "W", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "initializer 'W'", "other than float_data");
    /* no data at all */
    m = mb_model(f->b, 13);
    mb_initializer(f->b, m->graph, "W", KN_I32, dims, 1);
    mb_output(f->b, m->graph, "W", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "initializer 'W'", "has no data");
    /* strings cannot be raw */
    m = mb_model(f->b, 13);
    mb_raw(f->b, mb_initializer(f->b, m->graph, "S", KN_STRING, dims, 1), "abc", 3);
    mb_output(f->b, m->graph, "S", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "initializer 'S'", "raw_data");
    /* an initializer without a name */
    m = mb_model(f->b, 13);
    mb_raw(f->b, mb_initializer(f->b, m->graph, "", KN_F32, NULL, 0), "abcd", 4);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "has no name");
}

/* ---- Constant nodes ---- */

static void test_constant_nodes(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g0 = m->graph;
    static const char *kinds[] = {"value", "value_float", "value_floats", "value_int", "value_ints",
                                  "value_string", "value_strings", "sparse_value"};
    char cname[64], oname[64];
    for (size_t k = 0; k < 8; k++) {
        snprintf(cname, sizeof cname, "c_%s", kinds[k]);
        snprintf(oname, sizeof oname, "id_%s", kinds[k]);
        /* the consumer comes first: the importer must order them */
        mb_node(b, g0, "Identity", oname, cname, oname);
        mb_output(b, g0, oname, NULL);
        Onnx__NodeProto *c = mb_node(b, g0, "Constant", cname, "", cname);
        const int64_t two = 2, four = 4, one = 1;
        switch (k) {
        case 0: {
            Onnx__TensorProto *t = mb_tensor(b, "cv", KN_F32, &two, 1);
            mb_raw(b, t, (const float[]){1.5f, 2.5f}, 8);
            mb_attr_t(b, c, "value", t);
            break;
        }
        case 1: mb_attr_f(b, c, "value_float", 2.5f); break;
        case 2: mb_attr_floats(b, c, "value_floats", (const float[]){1, 2, 3}, 3); break;
        case 3: mb_attr_i(b, c, "value_int", 7); break;
        case 4: mb_attr_ints(b, c, "value_ints", (const int64_t[]){1, -2, 3}, 3); break;
        case 5: mb_attr_s(b, c, "value_string", "hello"); break;
        case 6: mb_attr_strings(b, c, "value_strings", (const char *const[]){"a", "bc"}, 2); break;
        case 7: {
            Onnx__TensorProto *vals = mb_tensor(b, "sv", KN_F32, &one, 1);
            mb_float_data(b, vals, (const float[]){9}, 1);
            Onnx__TensorProto *idx = mb_tensor(b, "si", KN_I64, &one, 1);
            mb_int64_data(b, idx, (const int64_t[]){2}, 1);
            Onnx__AttributeProto *a = mb_attr(b, c, "sparse_value", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR);
            a->sparse_tensor = mb_sparse(b, vals, idx, &four, 1);
            break;
        }
        }
    }
    kn_graph *g = import_ok(f, m);
    assert_int_equal(count_op(g, "Constant"), 0);
    assert_int_equal(g->n_nodes, 8);
    assert_int_equal(count_op(g, "Identity"), 8);
    for (size_t k = 0; k < 8; k++) {
        snprintf(cname, sizeof cname, "c_%s", kinds[k]);
        snprintf(oname, sizeof oname, "id_%s", kinds[k]);
        const kn_node *n = producer(g, oname);
        assert_int_equal(n->n_inputs, 1);
        assert_int_equal(n->inputs[0], value_id(g, cname));
        assert_int_equal(g->values[n->inputs[0]].kind, KN_VAL_CONST);
    }
    const kn_tensor *t = const_tensor(g, "c_value");
    assert_int_equal(t->dtype, KN_F32);
    assert_int_equal(t->rank, 1);
    assert_memory_equal(t->data, ((const float[]){1.5f, 2.5f}), 8);
    t = const_tensor(g, "c_value_float");
    assert_int_equal(t->dtype, KN_F32);
    assert_int_equal(t->rank, 0);
    assert_int_equal(t->n_elems, 1);
    assert_true(*(const float *)t->data == 2.5f);
    t = const_tensor(g, "c_value_floats");
    assert_int_equal(t->rank, 1);
    assert_int_equal(t->dims[0], 3);
    assert_int_equal(t->nbytes, 12);
    assert_memory_equal(t->data, ((const float[]){1, 2, 3}), 12);
    t = const_tensor(g, "c_value_int");
    assert_int_equal(t->dtype, KN_I64);
    assert_int_equal(t->rank, 0);
    assert_int_equal(*(const int64_t *)t->data, 7);
    t = const_tensor(g, "c_value_ints");
    assert_int_equal(t->dtype, KN_I64);
    assert_int_equal(t->n_elems, 3);
    assert_memory_equal(t->data, ((const int64_t[]){1, -2, 3}), 24);
    t = const_tensor(g, "c_value_string");
    assert_int_equal(t->dtype, KN_STRING);
    assert_int_equal(t->rank, 0);
    const kn_bytes *s = t->data;
    assert_int_equal(s[0].len, 5);
    assert_memory_equal(s[0].data, "hello", 5);
    t = const_tensor(g, "c_value_strings");
    assert_int_equal(t->rank, 1);
    assert_int_equal(t->n_elems, 2);
    s = t->data;
    assert_int_equal(s[1].len, 2);
    assert_memory_equal(s[1].data, "bc", 2);
    t = const_tensor(g, "c_sparse_value");
    assert_int_equal(t->rank, 1);
    assert_int_equal(t->dims[0], 4);
    assert_memory_equal(t->data, ((const float[]){0, 0, 9, 0}), 16);
}

static void test_constant_errors(void **state)
{
    fx *f = *state;
    /* two value attributes */
    Onnx__ModelProto *m = mb_model(f->b, 13);
    Onnx__NodeProto *c = mb_node(f->b, m->graph, "Constant", "two", "", "c");
    mb_attr_i(f->b, c, "value_int", 1);
    mb_attr_f(f->b, c, "value_float", 1);
    mb_output(f->b, m->graph, "c", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'two' (Constant, opset 13)");
    /* value_int given as a float */
    m = mb_model(f->b, 13);
    c = mb_node(f->b, m->graph, "Constant", "kind", "", "c");
    mb_attr_f(f->b, c, "value_int", 1);
    mb_output(f->b, m->graph, "c", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'kind' (Constant, opset 13)", "value_int");
}

/* ---- sparse initializers ---- */

static void test_sparse_initializers(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    const int64_t dims[] = {2, 3}, two = 2, coord_dims[] = {2, 2};
    /* linear indices */
    Onnx__TensorProto *v1 = mb_tensor(b, "lin", KN_F32, &two, 1);
    mb_float_data(b, v1, (const float[]){10, 20}, 2);
    Onnx__TensorProto *i1 = mb_tensor(b, "", KN_I64, &two, 1);
    mb_int64_data(b, i1, (const int64_t[]){1, 5}, 2);
    mb_sparse_initializer(b, m->graph, mb_sparse(b, v1, i1, dims, 2));
    /* coordinates: [[0, 2], [1, 0]] */
    Onnx__TensorProto *v2 = mb_tensor(b, "coo", KN_I32, &two, 1);
    mb_raw(b, v2, (const int32_t[]){-7, 8}, 8);
    Onnx__TensorProto *i2 = mb_tensor(b, "", KN_I64, coord_dims, 2);
    mb_raw(b, i2, (const int64_t[]){0, 2, 1, 0}, 32);
    mb_sparse_initializer(b, m->graph, mb_sparse(b, v2, i2, dims, 2));
    mb_node(b, m->graph, "Identity", "use_lin", "lin", "y1");
    mb_node(b, m->graph, "Identity", "use_coo", "coo", "y2");
    mb_output(b, m->graph, "y1", NULL);
    mb_output(b, m->graph, "y2", NULL);

    kn_graph *g = import_ok(f, m);
    const kn_tensor *t = const_tensor(g, "lin");
    assert_int_equal(t->dtype, KN_F32);
    assert_int_equal(t->rank, 2);
    assert_int_equal(t->dims[0], 2);
    assert_int_equal(t->dims[1], 3);
    assert_int_equal(t->nbytes, 24);
    assert_memory_equal(t->data, ((const float[]){0, 10, 0, 0, 0, 20}), 24);
    t = const_tensor(g, "coo");
    assert_int_equal(t->dtype, KN_I32);
    assert_memory_equal(t->data, ((const int32_t[]){0, 0, -7, 8, 0, 0}), 24);
    assert_int_equal(producer(g, "y2")->inputs[0], value_id(g, "coo"));

    /* an index past the end */
    m = mb_model(b, 13);
    Onnx__TensorProto *v3 = mb_tensor(b, "bad", KN_F32, &two, 1);
    mb_float_data(b, v3, (const float[]){1, 2}, 2);
    Onnx__TensorProto *i3 = mb_tensor(b, "", KN_I64, &two, 1);
    mb_int64_data(b, i3, (const int64_t[]){0, 6}, 2);
    mb_sparse_initializer(b, m->graph, mb_sparse(b, v3, i3, dims, 2));
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "initializer 'bad'", "sparse index 6 out of range");
}

/* ---- external data ---- */

typedef struct ext_fx {
    char *model_dir;  /* f->dir/model */
    char *secret;     /* f->dir/secret.bin, outside the model's folder */
    uint8_t bytes[32];/* contents of model/weights.bin */
} ext_fx;

static void ext_setup(fx *f, ext_fx *e)
{
    e->model_dir = mb_path(f->b, f->dir, "model");
    assert_int_equal(mkdir(e->model_dir, 0755), 0);
    char *sub = mb_path(f->b, e->model_dir, "sub");
    assert_int_equal(mkdir(sub, 0755), 0);
    for (int i = 0; i < 32; i++)
        e->bytes[i] = (uint8_t)(i * 7 + 3);
    mb_write(f->b, e->model_dir, "weights.bin", e->bytes, 32);
    mb_write(f->b, sub, "w2.bin", "abcdef", 6);
    e->secret = mb_write(f->b, f->dir, "secret.bin", e->bytes, 32);
    assert_int_equal(symlink(e->secret, mb_path(f->b, e->model_dir, "link.bin")), 0);
    assert_int_equal(symlink("weights.bin", mb_path(f->b, e->model_dir, "inside_link.bin")), 0);
}

/* A model whose one initializer W (float32[4]) is external with the given
 * entries (NULL: entry left out). */
static Onnx__ModelProto *ext_model(fx *f, const char *location, const char *offset, const char *length)
{
    Onnx__ModelProto *m = mb_model(f->b, 13);
    const int64_t four = 4;
    Onnx__TensorProto *t = mb_initializer(f->b, m->graph, "W", KN_F32, &four, 1);
    if (location)
        mb_external(f->b, t, "location", location);
    if (offset)
        mb_external(f->b, t, "offset", offset);
    if (length)
        mb_external(f->b, t, "length", length);
    if (!location && !offset && !length) {
        t->has_data_location = 1;
        t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    }
    mb_output(f->b, m->graph, "W", NULL);
    return m;
}

static void test_external_data(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    ext_fx e;
    ext_setup(f, &e);
    Onnx__ModelProto *m = mb_model(b, 13);
    const int64_t four = 4, six = 6, two = 2;
    Onnx__TensorProto *t = mb_initializer(b, m->graph, "A", KN_F32, &four, 1);
    mb_external(b, t, "location", "weights.bin");
    mb_external(b, t, "offset", "8");
    mb_external(b, t, "length", "16");
    t = mb_initializer(b, m->graph, "B", KN_U8, &six, 1);
    mb_external(b, t, "location", "sub/w2.bin"); /* no offset, no length: the whole file */
    t = mb_initializer(b, m->graph, "C", KN_I64, &two, 1);
    mb_external(b, t, "location", "./weights.bin");
    mb_external(b, t, "offset", "0");
    mb_external(b, t, "length", "16");
    mb_external(b, t, "checksum", "ignored");
    t = mb_initializer(b, m->graph, "D", KN_I64, &two, 1);
    mb_external(b, t, "location", "inside_link.bin"); /* a link that stays inside is fine */
    mb_external(b, t, "offset", "16");
    mb_node(b, m->graph, "Add", "add", "A,A", "y");
    mb_output(b, m->graph, "y", NULL);
    mb_output(b, m->graph, "B", NULL);
    mb_output(b, m->graph, "C", NULL);
    mb_output(b, m->graph, "D", NULL);
    char *path = mb_write_model(b, e.model_dir, "model.onnx", m);

    /* from the file, then from memory with the model's folder as base_dir */
    for (int via_memory = 0; via_memory < 2; via_memory++) {
        kn_graph *g;
        if (via_memory) {
            fresh(f);
            size_t len;
            uint8_t *bytes = mb_pack(b, m, &len);
            g = check_ok(f, kn_import_onnx_memory(bytes, len, e.model_dir, "mem.onnx", NULL, &f->cnt.a, f->d, &f->g));
        } else {
            g = import_file_ok(f, path);
        }
        const kn_tensor *a = const_tensor(g, "A");
        assert_true(a->is_external);
        assert_int_equal(a->nbytes, 16);
        assert_memory_equal(a->data, e.bytes + 8, 16);
        const kn_tensor *bt = const_tensor(g, "B");
        assert_true(bt->is_external);
        assert_memory_equal(bt->data, "abcdef", 6);
        const kn_tensor *c = const_tensor(g, "C");
        assert_true(c->is_external);
        assert_memory_equal(c->data, e.bytes, 16);
        /* one mapping per file: A and C lie 8 bytes apart in it */
        assert_ptr_equal((const uint8_t *)a->data, (const uint8_t *)c->data + 8);
        const kn_tensor *d = const_tensor(g, "D");
        assert_memory_equal(d->data, e.bytes + 16, 16);
        assert_int_equal(producer(g, "y")->inputs[0], value_id(g, "A"));

        char *text = NULL;
        size_t tlen = 0;
        FILE *mf = open_memstream(&text, &tlen);
        assert_non_null(mf);
        assert_int_equal(kn_graph_print(g, mf), KN_OK);
        fclose(mf);
        assert_non_null(strstr(text, "const %A: float32[4] external"));
        free(text);
    }
}

typedef struct ext_case {
    const char *location, *offset, *length;
    kn_status want;
    const char *msg1, *msg2; /* substrings of the error (NULL: none) */
} ext_case;

static void test_external_data_refused(void **state)
{
    fx *f = *state;
    ext_fx e;
    ext_setup(f, &e);
    const ext_case cases[] = {
        {NULL /* absolute path, filled in below */, NULL, NULL, KN_ERR_INVALID, "absolute path", NULL},
        {"../secret.bin", NULL, NULL, KN_ERR_INVALID, "'../secret.bin'", "leaves the model's folder"},
        {"sub/../../secret.bin", NULL, NULL, KN_ERR_INVALID, "'sub/../../secret.bin'", "leaves"},
        {"sub/..", NULL, NULL, KN_ERR_INVALID, "'sub/..'", "leaves"},
        {"link.bin", "0", "16", KN_ERR_INVALID, "'link.bin'", "outside the model's folder"},
        {"weights.bin", "40", NULL, KN_ERR_INVALID, "'weights.bin'", "past the end"},
        {"weights.bin", "24", "16", KN_ERR_INVALID, "'weights.bin'", "exceeds"},
        {"weights.bin", "18446744073709551615", "16", KN_ERR_INVALID, "'weights.bin'", "past the end"},
        {"weights.bin", "0", "12", KN_ERR_INVALID, "'weights.bin'", "does not match float32"},
        {"weights.bin", NULL, NULL, KN_ERR_INVALID, "'weights.bin'", "does not match"}, /* 32 bytes, needs 16 */
        {"weights.bin", "abc", "16", KN_ERR_INVALID, "'weights.bin'", "'abc'"},
        {"weights.bin", "-8", "16", KN_ERR_INVALID, "'weights.bin'", "'-8'"},
        {"weights.bin", "0", "16x", KN_ERR_INVALID, "'weights.bin'", "'16x'"},
        {"weights.bin", "99999999999999999999999", "16", KN_ERR_INVALID, "'weights.bin'", "offset"},
        {"nope.bin", NULL, NULL, KN_ERR_IO, "'nope.bin'", NULL},
        {"sub", NULL, NULL, KN_ERR_INVALID, "'sub'", "not a regular file"},
        {"", NULL, NULL, KN_ERR_INVALID, "empty location", NULL},
        {NULL, "0", "16", KN_ERR_INVALID, "without a 'location'", NULL},
        {NULL, NULL, NULL, KN_ERR_INVALID, "without a 'location'", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const ext_case *c = &cases[i];
        const char *loc = i == 0 ? e.secret : c->location;
        Onnx__ModelProto *m = ext_model(f, loc, c->offset, c->length);
        char *path = mb_write_model(f->b, e.model_dir, "case.onnx", m);
        import_file_err(f, path, c->want);
        if (!mb_diag_has(f->d, KN_ERROR, "initializer 'W'", c->msg1, c->msg2 ? c->msg2 : "")) {
            dump_diag(f);
            fail_msg("case %zu (location '%s'): expected a message with \"%s\" and \"%s\"", i, loc ? loc : "(none)",
                     c->msg1, c->msg2 ? c->msg2 : "");
        }
        if (i == 0)
            ASSERT_DIAG(f, KN_ERROR, e.secret);
    }
    /* from memory without a folder to resolve it in */
    Onnx__ModelProto *m = ext_model(f, "weights.bin", "0", "16");
    fresh(f);
    size_t len;
    uint8_t *bytes = mb_pack(f->b, m, &len);
    check_failed(f, kn_import_onnx_memory(bytes, len, NULL, "mem.onnx", NULL, &f->cnt.a, f->d, &f->g), KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "mem.onnx", "initializer 'W'", "'weights.bin'", "not read from a file");
    /* the same model next to its data loads */
    assert_non_null(const_tensor(import_file_ok(f, mb_write_model(f->b, e.model_dir, "ok.onnx", m)), "W"));
}

/* ---- graph inputs and outputs ---- */

static void test_graph_io_types(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 18);
    Onnx__GraphProto *g0 = m->graph;
    mb_input(b, g0, "img", mb_tensor_type(b, KN_F32, "1,3,224,224"));
    mb_input(b, g0, "tok", mb_tensor_type(b, KN_I64, "batch,seq,?"));
    mb_input(b, g0, "mask", mb_tensor_type(b, KN_BOOL, "batch,?,"));
    mb_input(b, g0, "any", mb_tensor_type(b, KN_F16, NULL));
    mb_input(b, g0, "scalar", mb_tensor_type(b, KN_F64, ""));
    mb_input(b, g0, "untyped", NULL);
    mb_input(b, g0, "seq", mb_seq_type(b, mb_tensor_type(b, KN_F32, "N")));
    mb_input(b, g0, "opt", mb_opt_type(b, mb_tensor_type(b, KN_I64, "2")));
    mb_input(b, g0, "map", mb_map_type(b, KN_STRING, mb_tensor_type(b, KN_F32, NULL)));
    mb_input(b, g0, "seqmap", mb_seq_type(b, mb_map_type(b, KN_I64, mb_tensor_type(b, KN_F32, NULL))));
    mb_input(b, g0, "sp", mb_sparse_type(b, KN_F32, "10,10"));
    mb_node(b, g0, "Relu", "r", "img", "h");
    mb_node(b, g0, "Identity", "i", "h", "y");
    mb_value_info(b, g0, "h", mb_tensor_type(b, KN_F32, "1,3,224,224"));
    mb_output(b, g0, "y", mb_tensor_type(b, KN_F32, "1,3,H,W"));
    mb_output(b, g0, "tok", mb_tensor_type(b, KN_I64, "batch,seq,?"));
    mb_output(b, g0, "seq", NULL);

    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->n_inputs, 11);
    assert_int_equal(g->n_outputs, 3);
    const char *names[] = {"img", "tok", "mask", "any", "scalar", "untyped", "seq", "opt", "map", "seqmap", "sp"};
    for (uint32_t i = 0; i < 11; i++) {
        assert_string_equal(g->values[g->inputs[i]].name, names[i]);
        assert_int_equal(g->values[g->inputs[i]].kind, KN_VAL_INPUT);
    }
    const kn_value *v = value(g, "img");
    assert_int_equal(v->type.kind, KN_TYPE_TENSOR);
    assert_int_equal(v->type.dtype, KN_F32);
    assert_int_equal(v->type.shape.rank, 4);
    assert_int_equal(v->type.shape.dims[1].value, 3);
    assert_int_equal(v->type.shape.dims[3].value, 224);
    assert_null(v->type.shape.dims[0].sym);
    assert_int_equal(kn_shape_numel(&v->type.shape), 3 * 224 * 224);

    v = value(g, "tok");
    assert_int_equal(v->type.shape.rank, 3);
    assert_true(v->type.shape.dims[0].value < 0);
    assert_ptr_equal(v->type.shape.dims[0].sym, intern(g, "batch"));
    assert_ptr_equal(v->type.shape.dims[1].sym, intern(g, "seq"));
    assert_true(v->type.shape.dims[2].value < 0);
    assert_null(v->type.shape.dims[2].sym);
    assert_int_equal(kn_shape_numel(&v->type.shape), -1);
    /* the same symbol in another input is the same interned string */
    const kn_value *mask = value(g, "mask");
    assert_int_equal(mask->type.shape.rank, 3);
    assert_ptr_equal(mask->type.shape.dims[0].sym, v->type.shape.dims[0].sym);
    assert_null(mask->type.shape.dims[2].sym); /* empty dim_param: unknown */
    ASSERT_TYPE(&mask->type, "bool[batch, ?, ?]");

    v = value(g, "any");
    assert_int_equal(v->type.kind, KN_TYPE_TENSOR);
    assert_int_equal(v->type.dtype, KN_F16);
    assert_int_equal(v->type.shape.rank, -1);
    ASSERT_TYPE(&v->type, "float16[*]");
    v = value(g, "scalar");
    assert_int_equal(v->type.shape.rank, 0);
    assert_int_equal(kn_shape_numel(&v->type.shape), 1);
    ASSERT_TYPE(&v->type, "float64[]");
    assert_int_equal(value(g, "untyped")->type.kind, KN_TYPE_UNKNOWN);

    v = value(g, "seq");
    assert_int_equal(v->type.kind, KN_TYPE_SEQUENCE);
    assert_non_null(v->type.elem);
    assert_int_equal(v->type.elem->kind, KN_TYPE_TENSOR);
    assert_ptr_equal(v->type.elem->shape.dims[0].sym, intern(g, "N"));
    ASSERT_TYPE(&v->type, "seq(float32[N])");
    v = value(g, "opt");
    assert_int_equal(v->type.kind, KN_TYPE_OPTIONAL);
    assert_int_equal(v->type.elem->dtype, KN_I64);
    ASSERT_TYPE(&v->type, "optional(int64[2])");
    v = value(g, "map");
    assert_int_equal(v->type.kind, KN_TYPE_MAP);
    assert_int_equal(v->type.dtype, KN_STRING);
    assert_int_equal(v->type.elem->kind, KN_TYPE_TENSOR);
    ASSERT_TYPE(&v->type, "map(string, float32[*])");
    ASSERT_TYPE(&value(g, "seqmap")->type, "seq(map(int64, float32[*]))");
    v = value(g, "sp");
    assert_int_equal(v->type.kind, KN_TYPE_SPARSE_TENSOR);
    ASSERT_TYPE(&v->type, "sparse float32[10, 10]");

    /* declared types of intermediates and outputs land on the node values */
    ASSERT_TYPE(&value(g, "h")->type, "float32[1, 3, 224, 224]");
    v = value(g, "y");
    ASSERT_TYPE(&v->type, "float32[1, 3, H, W]");
    assert_ptr_equal(v->type.shape.dims[2].sym, intern(g, "H"));
    assert_int_equal(g->outputs[0], value_id(g, "y"));
    assert_int_equal(g->outputs[1], value_id(g, "tok"));
    assert_int_equal(g->outputs[2], value_id(g, "seq"));
}

static void test_graph_io_errors(void **state)
{
    fx *f = *state;
    Onnx__ModelProto *m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "2"));
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "2"));
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "input 'x' is listed twice");

    m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "input 0 has no name");

    /* an input that is also an initializer is the constant */
    m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "w", mb_tensor_type(f->b, KN_F32, ""));
    mb_raw(f->b, mb_initializer(f->b, m->graph, "w", KN_F32, NULL, 0), (const float[]){4}, 4);
    mb_output(f->b, m->graph, "w", NULL);
    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->n_inputs, 0);
    assert_int_equal(value(g, "w")->kind, KN_VAL_CONST);
}

/* ---- attributes of every kind ---- */

static Onnx__GraphProto *identity_graph(mb *b, const char *name)
{
    Onnx__GraphProto *g = mb_graph(b, name);
    mb_input(b, g, "si", mb_tensor_type(b, KN_F32, "1"));
    mb_node(b, g, "Identity", "sub_id", "si", "so");
    mb_output(b, g, "so", NULL);
    return g;
}

static void add_every_attr_kind(mb *b, Onnx__NodeProto *n)
{
    const int64_t two = 2, one = 1, three = 3;
    mb_attr_f(b, n, "af", 0.5f);
    mb_attr_i(b, n, "ai", -3);
    mb_attr_s(b, n, "as", "str");
    Onnx__TensorProto *t = mb_tensor(b, "at", KN_I64, &two, 1);
    mb_int64_data(b, t, (const int64_t[]){4, 5}, 2);
    mb_attr_t(b, n, "at", t);
    mb_attr_g(b, n, "ag", identity_graph(b, "g_single"));
    Onnx__TensorProto *sv = mb_tensor(b, "sv", KN_F32, &one, 1);
    mb_float_data(b, sv, (const float[]){7}, 1);
    Onnx__TensorProto *si = mb_tensor(b, "", KN_I64, &one, 1);
    mb_int64_data(b, si, (const int64_t[]){1}, 1);
    mb_attr(b, n, "asp", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR)->sparse_tensor =
        mb_sparse(b, sv, si, &three, 1);
    mb_attr(b, n, "atp", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO)->tp = mb_tensor_type(b, KN_F32, "2");
    mb_attr_floats(b, n, "afs", (const float[]){1.25f, -2}, 2);
    mb_attr_ints(b, n, "ais", (const int64_t[]){3, 4, 5}, 3);
    mb_attr_strings(b, n, "ass", (const char *const[]){"p", "qq"}, 2);
    Onnx__AttributeProto *a = mb_attr(b, n, "ats", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS);
    a->n_tensors = 2;
    a->tensors = mb_alloc(b, 2 * sizeof *a->tensors);
    a->tensors[0] = mb_tensor(b, "t0", KN_F32, NULL, 0);
    mb_raw(b, a->tensors[0], (const float[]){6}, 4);
    a->tensors[1] = mb_tensor(b, "t1", KN_I32, &one, 1);
    mb_int32_data(b, a->tensors[1], (const int32_t[]){-9}, 1);
    a = mb_attr(b, n, "ags", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS);
    a->n_graphs = 2;
    a->graphs = mb_alloc(b, 2 * sizeof *a->graphs);
    a->graphs[0] = identity_graph(b, "g0");
    a->graphs[1] = identity_graph(b, "g1");
    a = mb_attr(b, n, "atps", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS);
    a->n_type_protos = 2;
    a->type_protos = mb_alloc(b, 2 * sizeof *a->type_protos);
    a->type_protos[0] = mb_seq_type(b, mb_tensor_type(b, KN_F32, NULL));
    a->type_protos[1] = mb_tensor_type(b, KN_I64, "?");
    a = mb_attr(b, n, "asps", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS);
    a->n_sparse_tensors = 1;
    a->sparse_tensors = mb_alloc(b, sizeof *a->sparse_tensors);
    a->sparse_tensors[0] = mb_sparse(b, sv, si, &two, 1);
}

static const char *const every_attr[] = {"af", "ai", "as", "at", "ag", "asp", "atp", "afs",
                                         "ais", "ass", "ats", "ags", "atps", "asps"};

static void check_every_attr_kind(const kn_node *n)
{
    assert_int_equal(n->n_attrs, 14);
    const kn_attr *a = kn_node_attr(n, "af");
    assert_int_equal(a->kind, KN_ATTR_FLOAT);
    assert_true(a->u.f == 0.5f);
    a = kn_node_attr(n, "ai");
    assert_int_equal(a->kind, KN_ATTR_INT);
    assert_int_equal(a->u.i, -3);
    a = kn_node_attr(n, "as");
    assert_int_equal(a->kind, KN_ATTR_STRING);
    assert_int_equal(a->u.s.len, 3);
    assert_memory_equal(a->u.s.data, "str", 4); /* NUL-terminated too */
    a = kn_node_attr(n, "at");
    assert_int_equal(a->kind, KN_ATTR_TENSOR);
    assert_int_equal(a->u.t->dtype, KN_I64);
    assert_memory_equal(a->u.t->data, ((const int64_t[]){4, 5}), 16);
    a = kn_node_attr(n, "ag");
    assert_int_equal(a->kind, KN_ATTR_GRAPH);
    assert_string_equal(a->u.g->name, "g_single");
    assert_int_equal(a->u.g->n_nodes, 1);
    assert_int_equal(a->u.g->n_inputs, 1);
    a = kn_node_attr(n, "asp");
    assert_int_equal(a->kind, KN_ATTR_TENSOR); /* densified */
    assert_int_equal(a->u.t->dims[0], 3);
    assert_memory_equal(a->u.t->data, ((const float[]){0, 7, 0}), 12);
    a = kn_node_attr(n, "atp");
    assert_int_equal(a->kind, KN_ATTR_TYPE);
    ASSERT_TYPE(a->u.tp, "float32[2]");
    a = kn_node_attr(n, "afs");
    assert_int_equal(a->kind, KN_ATTR_FLOATS);
    assert_int_equal(a->n, 2);
    assert_true(a->u.floats[0] == 1.25f && a->u.floats[1] == -2.0f);
    a = kn_node_attr(n, "ais");
    assert_int_equal(a->kind, KN_ATTR_INTS);
    assert_int_equal(a->n, 3);
    assert_int_equal(a->u.ints[2], 5);
    a = kn_node_attr(n, "ass");
    assert_int_equal(a->kind, KN_ATTR_STRINGS);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->u.strings[1].len, 2);
    assert_memory_equal(a->u.strings[1].data, "qq", 2);
    a = kn_node_attr(n, "ats");
    assert_int_equal(a->kind, KN_ATTR_TENSORS);
    assert_int_equal(a->n, 2);
    assert_int_equal(a->u.tensors[0]->rank, 0);
    assert_true(*(const float *)a->u.tensors[0]->data == 6.0f);
    assert_int_equal(*(const int32_t *)a->u.tensors[1]->data, -9);
    a = kn_node_attr(n, "ags");
    assert_int_equal(a->kind, KN_ATTR_GRAPHS);
    assert_int_equal(a->n, 2);
    assert_string_equal(a->u.graphs[0]->name, "g0");
    assert_string_equal(a->u.graphs[1]->name, "g1");
    a = kn_node_attr(n, "atps");
    assert_int_equal(a->kind, KN_ATTR_TYPES);
    assert_int_equal(a->n, 2);
    ASSERT_TYPE(a->u.types[0], "seq(float32[*])");
    ASSERT_TYPE(a->u.types[1], "int64[?]");
    a = kn_node_attr(n, "asps");
    assert_int_equal(a->kind, KN_ATTR_TENSORS);
    assert_int_equal(a->n, 1);
    assert_memory_equal(a->u.tensors[0]->data, ((const float[]){0, 7}), 8);
}

static void test_every_attr_kind_unknown_to_schema(void **state)
{
    fx *f = *state;
    Onnx__ModelProto *m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "1"));
    Onnx__NodeProto *n = mb_node(f->b, m->graph, "Relu", "relu", "x", "y");
    add_every_attr_kind(f->b, n);
    mb_output(f->b, m->graph, "y", NULL);
    kn_graph *g = import_ok(f, m);
    const kn_node *r = node_named(g, "relu");
    assert_int_equal(r->op, KN_OP_Relu);
    check_every_attr_kind(r);
    /* one warning per attribute, naming node, op, opset and attribute */
    for (size_t i = 0; i < 14; i++) {
        char want[64];
        snprintf(want, sizeof want, "unknown attribute '%s' ignored", every_attr[i]);
        ASSERT_DIAG(f, KN_WARNING, "node 'relu' (Relu, opset 13)", want);
    }
    assert_int_equal(kn_diag_count(f->d, KN_WARNING), 14);
    assert_int_equal(kn_diag_count(f->d, KN_ERROR), 0);
    assert_int_equal(g->n_subgraphs, 3);
}

static void test_every_attr_kind_custom_domain(void **state)
{
    fx *f = *state;
    Onnx__ModelProto *m = mb_model(f->b, 13);
    mb_opset(f->b, m, "my.domain", 1);
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "1"));
    Onnx__NodeProto *n = mb_node(f->b, m->graph, "Foo", "foo", "x", "y");
    n->domain = mb_strdup(f->b, "my.domain");
    add_every_attr_kind(f->b, n);
    mb_output(f->b, m->graph, "y", NULL);
    kn_graph *g = import_ok(f, m);
    const kn_node *r = node_named(g, "foo");
    assert_int_equal(r->op, KN_OP_UNSUPPORTED);
    assert_string_equal(r->domain, "my.domain");
    assert_int_equal(r->opset, 1);
    check_every_attr_kind(r);
    assert_int_equal(kn_diag_count(f->d, KN_WARNING), 0);
}

static void test_attr_errors(void **state)
{
    fx *f = *state;
    /* Softmax axis as a string */
    Onnx__ModelProto *m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "2,3"));
    mb_attr_s(f->b, mb_node(f->b, m->graph, "Softmax", "sm", "x", "y"), "axis", "1");
    mb_output(f->b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "test.onnx", "node 'sm' (Softmax, opset 13)", "attribute 'axis' is string, expected int");
    /* Cast without `to` */
    m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "2"));
    mb_node(f->b, m->graph, "Cast", "cast", "x", "y");
    mb_output(f->b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'cast' (Cast, opset 13)", "required attribute 'to' is missing");
    /* If without its branches */
    m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "c", mb_tensor_type(f->b, KN_BOOL, ""));
    mb_node(f->b, m->graph, "If", "if", "c", "y");
    mb_output(f->b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'if' (If, opset 13)", "'then_branch'");
    ASSERT_DIAG(f, KN_ERROR, "node 'if' (If, opset 13)", "'else_branch'");
    /* the same attribute twice */
    m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "2"));
    Onnx__NodeProto *n = mb_node(f->b, m->graph, "Softmax", "sm2", "x", "y");
    mb_attr_i(f->b, n, "axis", 0);
    mb_attr_i(f->b, n, "axis", 0);
    mb_output(f->b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'sm2'", "attribute 'axis' given twice");
    /* the right kind is fine */
    m = mb_model(f->b, 13);
    mb_input(f->b, m->graph, "x", mb_tensor_type(f->b, KN_F32, "2"));
    mb_attr_i(f->b, mb_node(f->b, m->graph, "Cast", "cast", "x", "y"), "to", KN_F16);
    mb_output(f->b, m->graph, "y", NULL);
    kn_graph *g = import_ok(f, m);
    assert_int_equal(kn_node_attr(node_named(g, "cast"), "to")->u.i, KN_F16);
}

/* ---- subgraphs and outer-scope references ---- */

static void test_if_outer_references(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g0 = m->graph;
    mb_input(b, g0, "cond", mb_tensor_type(b, KN_BOOL, ""));
    mb_input(b, g0, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_raw(b, mb_initializer(b, g0, "w", KN_F32, (const int64_t[]){2}, 1), (const float[]){1, 2}, 8);
    Onnx__GraphProto *then_g = mb_graph(b, "then");
    mb_node(b, then_g, "Add", "t_add", "x,w", "t_out");
    mb_output(b, then_g, "t_out", NULL);
    Onnx__GraphProto *else_g = mb_graph(b, "else");
    mb_node(b, else_g, "Identity", "e_id", "x", "e_out");
    mb_output(b, else_g, "e_out", NULL);
    Onnx__NodeProto *n = mb_node(b, g0, "If", "if", "cond", "y");
    mb_attr_g(b, n, "then_branch", then_g);
    mb_attr_g(b, n, "else_branch", else_g);
    mb_output(b, g0, "y", NULL);

    kn_graph *g = import_ok(f, m);
    const kn_node *ifn = node_named(g, "if");
    assert_int_equal(ifn->op, KN_OP_If);
    const kn_graph *tg = kn_node_attr(ifn, "then_branch")->u.g;
    const kn_graph *eg = kn_node_attr(ifn, "else_branch")->u.g;
    assert_ptr_equal(tg->parent, g);
    assert_ptr_equal(tg->root, g);
    assert_ptr_equal(eg->parent, g);
    for (int k = 0; k < 2; k++) {
        const char *nm = k ? "w" : "x";
        const kn_value *ov = value(tg, nm);
        assert_int_equal(ov->kind, KN_VAL_OUTER);
        assert_int_equal(ov->outer, value_id(g, nm));
        const kn_graph *owner = NULL;
        assert_ptr_equal(kn_value_resolve(tg, value_id(tg, nm), &owner), &g->values[value_id(g, nm)]);
        assert_ptr_equal(owner, g);
    }
    assert_int_equal(value(tg, "w")->type.dtype, KN_F32); /* the outer value's type comes along */
    assert_int_equal(value(eg, "x")->kind, KN_VAL_OUTER);
    assert_int_equal(value_id(eg, "w"), KN_NONE); /* only what a branch reads */
    const kn_node *add = node_named(tg, "t_add");
    assert_int_equal(add->inputs[0], value_id(tg, "x"));
    assert_int_equal(add->inputs[1], value_id(tg, "w"));
    assert_int_equal(tg->outputs[0], value_id(tg, "t_out"));
}

static void test_loop_if_two_levels(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g0 = m->graph;
    mb_input(b, g0, "trip", mb_tensor_type(b, KN_I64, ""));
    mb_input(b, g0, "cond", mb_tensor_type(b, KN_BOOL, ""));
    mb_input(b, g0, "x", mb_tensor_type(b, KN_F32, "2"));

    Onnx__GraphProto *then_g = mb_graph(b, "inner_then");
    mb_node(b, then_g, "Identity", "ti_id", "xx", "ti");
    mb_output(b, then_g, "ti", NULL);
    Onnx__GraphProto *else_g = mb_graph(b, "inner_else");
    mb_node(b, else_g, "Neg", "ei_neg", "xx", "ei");
    mb_output(b, else_g, "ei", NULL);
    Onnx__GraphProto *body = mb_graph(b, "body");
    mb_input(b, body, "i", mb_tensor_type(b, KN_I64, ""));
    mb_input(b, body, "c_in", mb_tensor_type(b, KN_BOOL, ""));
    Onnx__NodeProto *inner = mb_node(b, body, "If", "inner_if", "c_in", "iy");
    mb_attr_g(b, inner, "then_branch", then_g);
    mb_attr_g(b, inner, "else_branch", else_g);
    mb_node(b, body, "Identity", "c_pass", "c_in", "c_out");
    mb_output(b, body, "c_out", NULL);
    mb_output(b, body, "iy", NULL);
    /* the Loop comes before the node making "xx", which only its body reads */
    mb_attr_g(b, mb_node(b, g0, "Loop", "loop", "trip,cond", "scan"), "body", body);
    mb_node(b, g0, "Relu", "make_xx", "x", "xx");
    mb_output(b, g0, "scan", NULL);

    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->n_nodes, 2);
    assert_string_equal(g->nodes[0].name, "make_xx");
    assert_string_equal(g->nodes[1].name, "loop");
    const kn_graph *bg = kn_node_attr(&g->nodes[1], "body")->u.g;
    const kn_node *in = node_named(bg, "inner_if");
    const kn_graph *tg = kn_node_attr(in, "then_branch")->u.g;
    const kn_graph *eg = kn_node_attr(in, "else_branch")->u.g;
    assert_ptr_equal(tg->parent, bg);
    assert_ptr_equal(bg->parent, g);
    assert_ptr_equal(tg->root, g);

    kn_id root_xx = value_id(g, "xx");
    kn_id body_xx = value_id(bg, "xx");
    kn_id then_xx = value_id(tg, "xx");
    assert_int_not_equal(body_xx, KN_NONE);
    assert_int_not_equal(then_xx, KN_NONE);
    assert_int_equal(g->values[root_xx].kind, KN_VAL_NODE);
    assert_int_equal(bg->values[body_xx].kind, KN_VAL_OUTER);
    assert_int_equal(bg->values[body_xx].outer, root_xx);
    assert_int_equal(tg->values[then_xx].kind, KN_VAL_OUTER);
    assert_int_equal(tg->values[then_xx].outer, body_xx);
    for (int k = 0; k < 2; k++) {
        const kn_graph *sg = k ? eg : tg;
        const kn_graph *owner = NULL;
        const kn_value *rv = kn_value_resolve(sg, value_id(sg, "xx"), &owner);
        assert_ptr_equal(rv, &g->values[root_xx]);
        assert_ptr_equal(owner, g);
    }
    /* a body's own values are not outer references */
    assert_int_equal(bg->values[value_id(bg, "c_in")].kind, KN_VAL_INPUT);
    assert_int_equal(node_named(bg, "c_pass")->inputs[0], value_id(bg, "c_in"));
    assert_int_equal(g->n_subgraphs, 1);
    assert_int_equal(bg->n_subgraphs, 2);
}

static void test_subgraph_depth_limit(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_input(b, m->graph, "c", mb_tensor_type(b, KN_BOOL, ""));
    /* main → level1 → level2 → level3 → level4, each the then_branch of an If */
    Onnx__GraphProto *g = m->graph;
    char name[32];
    for (int level = 0; level < 4; level++) {
        snprintf(name, sizeof name, "level%d", level + 1);
        Onnx__GraphProto *sub = mb_graph(b, name);
        snprintf(name, sizeof name, "r%d", level);
        Onnx__NodeProto *n = mb_node(b, g, "If", name, "c", name);
        mb_output(b, g, name, NULL);
        mb_attr_g(b, n, "then_branch", sub);
        mb_attr_g(b, n, "else_branch", identity_graph(b, "leaf"));
        g = sub;
    }
    mb_node(b, g, "Identity", "deep", "c", "r4");
    mb_output(b, g, "r4", NULL);
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_import_options opts = {0};
    opts.max_subgraph_depth = 2;
    fresh(f);
    check_failed(f, kn_import_onnx_memory(bytes, len, NULL, "deep.onnx", &opts, &f->cnt.a, f->d, &f->g), KN_ERR_LIMIT);
    ASSERT_DIAG(f, KN_ERROR, "deep.onnx", "nested deeper than 2");
    opts.max_subgraph_depth = 4;
    fresh(f);
    check_ok(f, kn_import_onnx_memory(bytes, len, NULL, "deep.onnx", &opts, &f->cnt.a, f->d, &f->g));
}

/* ---- order and SSA ---- */

static void test_topological_order(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Relu", "n3", "b", "c");
    mb_node(b, m->graph, "Add", "n4", "c,a", "d");
    mb_node(b, m->graph, "Relu", "n2", "a", "b");
    mb_node(b, m->graph, "Relu", "n1", "x", "a");
    mb_node(b, m->graph, "Neg", "free1", "x", "e"); /* independent nodes keep their order */
    mb_node(b, m->graph, "Neg", "free2", "x", "f");
    mb_output(b, m->graph, "d", NULL);
    mb_output(b, m->graph, "e", NULL);
    mb_output(b, m->graph, "f", NULL);
    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->n_nodes, 6);
    const char *order[6];
    for (int i = 0; i < 6; i++)
        order[i] = g->nodes[i].name;
    /* every node after its producers */
    for (kn_id i = 0; i < g->n_nodes; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_inputs; k++) {
            const kn_value *v = &g->values[g->nodes[i].inputs[k]];
            if (v->kind == KN_VAL_NODE)
                assert_true(v->producer < i);
        }
    int pos1 = -1, pos2 = -1;
    for (int i = 0; i < 6; i++) {
        if (strcmp(order[i], "free1") == 0)
            pos1 = i;
        if (strcmp(order[i], "free2") == 0)
            pos2 = i;
    }
    assert_true(pos1 >= 0 && pos2 > pos1);
    assert_string_equal(producer(g, "a")->name, "n1");
    assert_string_equal(producer(g, "d")->name, "n4");
    const kn_node *n4 = node_named(g, "n4");
    assert_int_equal(n4->inputs[0], value_id(g, "c"));
    assert_int_equal(n4->inputs[1], value_id(g, "a"));
    assert_int_equal(g->values[n4->outputs[0]].out_index, 0);
}

static void test_graph_errors(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    /* a cycle */
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Add", "nA", "x,q", "p");
    mb_node(b, m->graph, "Relu", "nB", "p", "q");
    mb_output(b, m->graph, "q", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "cycle", "'nA'", "'nB'");
    /* a node reading its own output */
    m = mb_model(b, 13);
    mb_node(b, m->graph, "Relu", "self", "s", "s");
    mb_output(b, m->graph, "s", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'self' (Relu, opset 13)", "'s'");
    /* a value defined twice */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Relu", "first", "x", "a");
    mb_node(b, m->graph, "Neg", "second", "x", "a");
    mb_output(b, m->graph, "a", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "output 'a' is already defined");
    assert_true(mb_diag_has(f->d, KN_ERROR, "node 'first'") || mb_diag_has(f->d, KN_ERROR, "node 'second'"));
    /* a node output that is also a graph input */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Relu", "shadow", "x", "x");
    mb_output(b, m->graph, "x", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'shadow' (Relu, opset 13)", "output 'x' is already defined");
    /* an initializer given twice */
    m = mb_model(b, 13);
    mb_raw(b, mb_initializer(b, m->graph, "w", KN_F32, NULL, 0), (const float[]){1}, 4);
    mb_raw(b, mb_initializer(b, m->graph, "w", KN_F32, NULL, 0), (const float[]){2}, 4);
    mb_output(b, m->graph, "w", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "initializer 'w' is defined twice");
    /* an undefined input */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Add", "uses_ghost", "x,ghost", "y");
    mb_output(b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'uses_ghost' (Add, opset 13)", "input 'ghost' is not defined");
    /* a graph output nothing produces */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Relu", "r", "x", "y");
    mb_output(b, m->graph, "y", NULL);
    mb_output(b, m->graph, "nowhere", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "graph 'main'", "output 'nowhere' is not produced");
    /* the same in a subgraph */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "c", mb_tensor_type(b, KN_BOOL, ""));
    Onnx__GraphProto *br = mb_graph(b, "branch");
    mb_output(b, br, "lost", NULL);
    Onnx__NodeProto *n = mb_node(b, m->graph, "If", "if", "c", "y");
    mb_attr_g(b, n, "then_branch", br);
    mb_attr_g(b, n, "else_branch", br);
    mb_output(b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "graph 'branch'", "output 'lost'");
    /* a node without op_type */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "", "blank", "x", "y");
    mb_output(b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'blank'", "no op_type");
    /* an omitted optional input is KN_NONE, not an error */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Clip", "clip", "x,,", "y");
    mb_output(b, m->graph, "y", NULL);
    kn_graph *g = import_ok(f, m);
    const kn_node *clip = node_named(g, "clip");
    assert_int_equal(clip->n_inputs, 3);
    assert_int_equal(clip->inputs[1], KN_NONE);
    assert_int_equal(clip->inputs[2], KN_NONE);
}

/* ---- model-local functions ---- */

static void test_functions_inlined(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *addrelu = mb_function(b, m, "my.fn", "AddRelu", "a,b", "out", "");
    mb_fnode(b, addrelu, "Add", "fadd", "a,b", "s");
    mb_fnode(b, addrelu, "Relu", "frelu", "s", "out");
    Onnx__FunctionProto *outer = mb_function(b, m, "my.fn", "Outer", "p", "q", "");
    mb_fnode(b, outer, "AddRelu", "call_inner", "p,p", "q")->domain = mb_strdup(b, "my.fn");
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Outer", "call1", "x", "y1")->domain = mb_strdup(b, "my.fn");
    mb_node(b, m->graph, "Outer", "call2", "y1", "y2")->domain = mb_strdup(b, "my.fn");
    mb_node(b, m->graph, "AddRelu", "call3", "x,y2", "y3")->domain = mb_strdup(b, "my.fn");
    mb_output(b, m->graph, "y3", NULL);

    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->info->n_functions, 2);
    assert_int_equal(count_op(g, "Outer"), 0);
    assert_int_equal(count_op(g, "AddRelu"), 0);
    assert_int_equal(count_op(g, "Add"), 3);
    assert_int_equal(count_op(g, "Relu"), 3);
    assert_int_equal(g->n_nodes, 6);
    kn_str fname = intern(g, "my.fn.AddRelu");
    for (kn_id i = 0; i < g->n_nodes; i++) {
        assert_ptr_equal(g->nodes[i].function, fname);
        assert_int_equal(g->nodes[i].op == KN_OP_Add || g->nodes[i].op == KN_OP_Relu, 1);
        assert_int_equal(g->nodes[i].opset, 13);
    }
    /* the call sites' names are kept for the function's inputs and outputs */
    const kn_node *r1 = producer(g, "y1");
    assert_int_equal(r1->op, KN_OP_Relu);
    const kn_node *add1 = &g->nodes[g->values[r1->inputs[0]].producer];
    assert_int_equal(add1->op, KN_OP_Add);
    assert_int_equal(add1->inputs[0], value_id(g, "x"));
    assert_int_equal(add1->inputs[1], value_id(g, "x"));
    const kn_node *add3 = &g->nodes[g->values[producer(g, "y3")->inputs[0]].producer];
    assert_int_equal(add3->inputs[0], value_id(g, "x"));
    assert_int_equal(add3->inputs[1], value_id(g, "y2"));
    /* the internal "s" of each of the three calls got its own name */
    kn_str s_names[3];
    uint32_t n_s = 0;
    for (kn_id i = 0; i < g->n_values; i++) {
        const char *nm = g->values[i].name;
        size_t l = strlen(nm);
        if (l > 2 && strcmp(nm + l - 2, "/s") == 0) {
            assert_true(n_s < 3);
            assert_non_null(strstr(nm, "AddRelu"));
            s_names[n_s++] = nm;
        }
    }
    assert_int_equal(n_s, 3);
    assert_true(s_names[0] != s_names[1] && s_names[1] != s_names[2] && s_names[0] != s_names[2]);
    assert_int_equal(value_id(g, "s"), KN_NONE);
    assert_int_equal(value_id(g, "q"), KN_NONE);
    assert_int_equal(value_id(g, "p"), KN_NONE);
}

static void test_function_attr_refs(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *scale = mb_function(b, m, "my.fn", "Leaky", "x", "y", "alpha");
    mb_attr_ref(b, mb_fnode(b, scale, "LeakyRelu", "leaky", "x", "y"), "alpha",
                ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, "alpha");
    /* a function forwarding its own attribute `a` to Leaky's `alpha` */
    Onnx__FunctionProto *fwd = mb_function(b, m, "my.fn", "Fwd", "x", "y", "a");
    Onnx__NodeProto *inner = mb_fnode(b, fwd, "Leaky", "fwd_call", "x", "y");
    inner->domain = mb_strdup(b, "my.fn");
    mb_attr_ref(b, inner, "alpha", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, "a");
    /* a function whose attribute has a default (FunctionProto.attribute_proto) */
    Onnx__FunctionProto *dflt = mb_function(b, m, "my.fn", "Dflt", "x", "y", "");
    mb_attr_ref(b, mb_fnode(b, dflt, "LeakyRelu", "leaky_d", "x", "y"), "alpha",
                ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, "alpha");
    Onnx__AttributeProto *def = mb_attr_new(b, "alpha", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    def->has_f = 1;
    def->f = 0.75f;
    mb_function_default(b, dflt, def);

    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    Onnx__NodeProto *c;
    c = mb_node(b, m->graph, "Leaky", "c1", "x", "y1");
    c->domain = mb_strdup(b, "my.fn");
    mb_attr_f(b, c, "alpha", 0.25f);
    c = mb_node(b, m->graph, "Leaky", "c2", "y1", "y2");
    c->domain = mb_strdup(b, "my.fn");
    mb_attr_f(b, c, "alpha", 0.5f);
    c = mb_node(b, m->graph, "Leaky", "c3", "y2", "y3"); /* no alpha: the attribute is left out */
    c->domain = mb_strdup(b, "my.fn");
    c = mb_node(b, m->graph, "Fwd", "c4", "y3", "y4");
    c->domain = mb_strdup(b, "my.fn");
    mb_attr_f(b, c, "a", 0.125f);
    c = mb_node(b, m->graph, "Dflt", "c5", "y4", "y5");
    c->domain = mb_strdup(b, "my.fn");
    c = mb_node(b, m->graph, "Dflt", "c6", "y5", "y6");
    c->domain = mb_strdup(b, "my.fn");
    mb_attr_f(b, c, "alpha", 2.0f);
    mb_output(b, m->graph, "y6", NULL);

    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->n_nodes, 6);
    const float want[] = {0.25f, 0.5f, -1, 0.125f, 0.75f, 2.0f};
    char y[8];
    for (int i = 0; i < 6; i++) {
        snprintf(y, sizeof y, "y%d", i + 1);
        const kn_node *n = producer(g, y);
        assert_int_equal(n->op, KN_OP_LeakyRelu);
        const kn_attr *a = kn_node_attr(n, "alpha");
        if (want[i] < 0) {
            assert_null(a);
            continue;
        }
        assert_non_null(a);
        assert_int_equal(a->kind, KN_ATTR_FLOAT);
        assert_true(a->u.f == want[i]);
    }
    assert_int_equal(kn_diag_count(f->d, KN_ERROR), 0);

    /* a reference outside any function is an error */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_attr_ref(b, mb_node(b, m->graph, "LeakyRelu", "stray", "x", "y"), "alpha",
                ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT, "alpha");
    mb_output(b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "node 'stray' (LeakyRelu, opset 13)", "outside a function");
}

/* A function whose body holds a Constant (raw_data) is called twice: each
 * call's copy of the constant must have the data. */
static void test_function_constant_called_twice(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *fn = mb_function(b, m, "my.fn", "AddC", "x", "y", "");
    const int64_t two = 2;
    Onnx__TensorProto *t = mb_tensor(b, "k", KN_F32, &two, 1);
    mb_raw(b, t, (const float[]){3, 4}, 8);
    mb_attr_t(b, mb_fnode(b, fn, "Constant", "k", "", "k"), "value", t);
    mb_fnode(b, fn, "Add", "add", "x,k", "y");
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, m->graph, "AddC", "c1", "x", "y1")->domain = mb_strdup(b, "my.fn");
    mb_node(b, m->graph, "AddC", "c2", "y1", "y2")->domain = mb_strdup(b, "my.fn");
    mb_output(b, m->graph, "y2", NULL);
    kn_graph *g = import_ok(f, m);
    assert_int_equal(g->n_nodes, 2);
    for (int i = 0; i < 2; i++) {
        const kn_node *add = producer(g, i ? "y2" : "y1");
        const kn_value *k = &g->values[add->inputs[1]];
        assert_int_equal(k->kind, KN_VAL_CONST);
        assert_non_null(k->tensor->data);
        assert_memory_equal(k->tensor->data, ((const float[]){3, 4}), 8);
    }
    assert_int_not_equal(producer(g, "y1")->inputs[1], producer(g, "y2")->inputs[1]);
}

static void test_function_recursion(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *ping = mb_function(b, m, "my.fn", "Ping", "x", "y", "");
    mb_fnode(b, ping, "Pong", "to_pong", "x", "y")->domain = mb_strdup(b, "my.fn");
    Onnx__FunctionProto *pong = mb_function(b, m, "my.fn", "Pong", "x", "y", "");
    mb_fnode(b, pong, "Ping", "to_ping", "x", "y")->domain = mb_strdup(b, "my.fn");
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Ping", "start", "x", "y")->domain = mb_strdup(b, "my.fn");
    mb_output(b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_LIMIT);
    ASSERT_DIAG(f, KN_ERROR, "recursive function");

    /* direct recursion */
    m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *self = mb_function(b, m, "my.fn", "Self", "x", "y", "");
    mb_fnode(b, self, "Self", "again", "x", "y")->domain = mb_strdup(b, "my.fn");
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Self", "start", "x", "y")->domain = mb_strdup(b, "my.fn");
    mb_output(b, m->graph, "y", NULL);
    import_err(f, m, KN_ERR_LIMIT);
    ASSERT_DIAG(f, KN_ERROR, "(Self)", "deeper than 32");
}

/* ---- model facts and unsupported ops ---- */

static void test_model_info(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 17);
    m->ir_version = 9;
    m->producer_name = mb_strdup(b, "kiln-test");
    m->producer_version = mb_strdup(b, "1.2.3");
    m->domain = mb_strdup(b, "org.example");
    m->doc_string = mb_strdup(b, "a doc");
    m->has_model_version = 1;
    m->model_version = 42;
    mb_opset(b, m, "ai.onnx.ml", 3);
    mb_opset(b, m, "com.microsoft", 1);
    mb_metadata(b, m, "author", "me");
    mb_metadata(b, m, "license", "MIT");
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Gelu", "gelu", "x", "y")->domain = mb_strdup(b, "com.microsoft");
    mb_output(b, m->graph, "y", NULL);
    kn_graph *g = import_ok(f, m);
    const kn_model_info *in = g->info;
    assert_string_equal(in->path, "test.onnx");
    assert_string_equal(in->producer_name, "kiln-test");
    assert_string_equal(in->producer_version, "1.2.3");
    assert_string_equal(in->domain, "org.example");
    assert_string_equal(in->doc, "a doc");
    assert_int_equal(in->ir_version, 9);
    assert_int_equal(in->model_version, 42);
    assert_int_equal(in->n_opsets, 3);
    assert_string_equal(in->opsets[0].domain, "");
    assert_int_equal(in->opsets[0].version, 17);
    assert_string_equal(in->opsets[1].domain, "ai.onnx.ml");
    assert_int_equal(in->opsets[1].version, 3);
    assert_string_equal(in->opsets[2].domain, "com.microsoft");
    assert_int_equal(in->opsets[2].version, 1);
    assert_int_equal(in->n_metadata, 2);
    assert_string_equal(in->metadata[0].key, "author");
    assert_string_equal(in->metadata[0].value, "me");
    assert_string_equal(in->metadata[1].key, "license");
    assert_string_equal(in->metadata[1].value, "MIT");
    assert_int_equal(in->n_functions, 0);
    const kn_node *n = node_named(g, "gelu");
    assert_int_equal(n->op, KN_OP_MS_Gelu);
    assert_int_equal(n->opset, 1);
    assert_int_equal(kn_diag_count(f->d, KN_WARNING), 0);

    /* no ir_version: a warning, not an error */
    m = mb_model(b, 13);
    m->has_ir_version = 0;
    mb_input(b, m->graph, "x", NULL);
    mb_output(b, m->graph, "x", NULL);
    g = import_ok(f, m);
    assert_int_equal(g->info->ir_version, 0);
    ASSERT_DIAG(f, KN_WARNING, "IR version");
    /* an opset newer than the table: a warning */
    m = mb_model(b, KN_ONNX_OPSET_MAX + 1);
    mb_input(b, m->graph, "x", NULL);
    mb_node(b, m->graph, "Relu", "r", "x", "y");
    mb_output(b, m->graph, "y", NULL);
    g = import_ok(f, m);
    ASSERT_DIAG(f, KN_WARNING, "newer than kiln's op table");
    assert_int_equal(node_named(g, "r")->op, KN_OP_Relu);
    /* an opset import without a version */
    m = mb_model(b, 13);
    m->opset_import[0]->has_version = 0;
    import_err(f, m, KN_ERR_INVALID);
    ASSERT_DIAG(f, KN_ERROR, "opset import", "no valid version");
}

static void test_unsupported_ops(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "my.domain", 1);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Foo", "foo_a", "x", "a")->domain = mb_strdup(b, "my.domain");
    mb_node(b, m->graph, "Foo", "foo_b", "a", "b")->domain = mb_strdup(b, "my.domain");
    mb_node(b, m->graph, "NotAnOp", "nope", "b", "c");
    mb_node(b, m->graph, "Gelu", "gelu13", "c", "d"); /* Gelu is ai.onnx opset 20+ */
    mb_node(b, m->graph, "Relu", "fine", "d", "e");
    mb_output(b, m->graph, "e", NULL);
    kn_graph *g = import_ok(f, m);
    assert_int_equal(node_named(g, "foo_a")->op, KN_OP_UNSUPPORTED);
    assert_int_equal(node_named(g, "nope")->op, KN_OP_UNSUPPORTED);
    assert_int_equal(node_named(g, "gelu13")->op, KN_OP_UNSUPPORTED);
    assert_int_equal(node_named(g, "fine")->op, KN_OP_Relu);

    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_graph_report_unsupported(g, NULL, NULL, d), KN_ERR_UNSUPPORTED);
    assert_int_equal(kn_diag_size(d), 1);
    kn_severity sev;
    const char *msg = kn_diag_message(d, 0, &sev);
    assert_int_equal(sev, KN_ERROR);
    const char *parts[] = {"test.onnx", "4 nodes", "3 ops", "Foo (my.domain, opset 1) x2", "'foo_a'", "'foo_b'",
                           "NotAnOp (ai.onnx, opset 13) x1", "'nope'", "Gelu (ai.onnx, opset 13) x1", "'gelu13'"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (!strstr(msg, parts[i]))
            fail_msg("'%s' not in: %s", parts[i], msg);
    assert_null(strstr(msg, "'fine'"));
    kn_diag_destroy(d);

    /* the same ops where they exist are supported */
    m = mb_model(b, 20);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Gelu", "gelu20", "x", "y");
    mb_output(b, m->graph, "y", NULL);
    g = import_ok(f, m);
    assert_int_equal(node_named(g, "gelu20")->op, KN_OP_Gelu);
    d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_graph_report_unsupported(g, NULL, NULL, d), KN_OK);
    assert_int_equal(kn_diag_size(d), 0);
    kn_diag_destroy(d);

    /* a domain that is not imported: a warning, and unsupported */
    m = mb_model(b, 13);
    mb_input(b, m->graph, "x", mb_tensor_type(b, KN_F32, "4"));
    mb_node(b, m->graph, "Bar", "bar", "x", "y")->domain = mb_strdup(b, "not.imported");
    mb_output(b, m->graph, "y", NULL);
    g = import_ok(f, m);
    assert_int_equal(node_named(g, "bar")->op, KN_OP_UNSUPPORTED);
    ASSERT_DIAG(f, KN_WARNING, "node 'bar' (Bar)", "'not.imported' is not in the model's opset imports");
}

/* ---- the printer ---- */

static char *print_model(fx *f, const uint8_t *bytes, size_t len, kn_graph **keep)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "p.onnx", NULL, &f->cnt.a, d, &g), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    kn_diag_destroy(d);
    char *text = NULL;
    size_t tlen = 0;
    FILE *mf = open_memstream(&text, &tlen);
    assert_non_null(mf);
    assert_int_equal(kn_graph_print(g, mf), KN_OK);
    assert_int_equal(fclose(mf), 0);
    *keep = g;
    return text;
}

static void test_print_stable(void **state)
{
    fx *f = *state;
    mb *b = f->b;
    Onnx__ModelProto *m = mb_model(b, 13);
    mb_opset(b, m, "my.fn", 1);
    Onnx__FunctionProto *fn = mb_function(b, m, "my.fn", "Twice", "a", "o", "");
    mb_fnode(b, fn, "Add", "tw", "a,a", "o");
    Onnx__GraphProto *g0 = m->graph;
    mb_input(b, g0, "cond", mb_tensor_type(b, KN_BOOL, ""));
    mb_input(b, g0, "x", mb_tensor_type(b, KN_F32, "N,4"));
    mb_raw(b, mb_initializer(b, g0, "w", KN_F32, (const int64_t[]){4}, 1), (const float[]){1, 2, 3, 4}, 16);
    Onnx__GraphProto *then_g = mb_graph(b, "then");
    mb_node(b, then_g, "Mul", "t_mul", "x,w", "t_out");
    mb_output(b, then_g, "t_out", NULL);
    Onnx__GraphProto *else_g = mb_graph(b, "else");
    mb_node(b, else_g, "Twice", "e_tw", "x", "e_out")->domain = mb_strdup(b, "my.fn");
    mb_output(b, else_g, "e_out", NULL);
    Onnx__NodeProto *n = mb_node(b, g0, "If", "if", "cond", "y");
    mb_attr_g(b, n, "then_branch", then_g);
    mb_attr_g(b, n, "else_branch", else_g);
    Onnx__NodeProto *sm = mb_node(b, g0, "Softmax", "sm", "y", "z");
    mb_attr_i(b, sm, "axis", -1);
    mb_attr_s(b, mb_node(b, g0, "Foo", "foo", "z", "q"), "mode", "a\"b\n");
    mb_output(b, g0, "q", mb_tensor_type(b, KN_F32, "N,4"));

    size_t len1, len2;
    uint8_t *bytes1 = mb_pack(b, m, &len1);
    uint8_t *bytes2 = mb_pack(b, m, &len2);
    kn_graph *g1, *g2;
    char *t1 = print_model(f, bytes1, len1, &g1);
    char *t2 = print_model(f, bytes2, len2, &g2);
    assert_ptr_not_equal(g1, g2);
    assert_string_equal(t1, t2);
    /* and it says what the graph is */
    const char *parts[] = {"graph 'main' {", "input %x: float32[N, 4]", "const %w: float32[4]", "graph 'then' {",
                           "outer %x: float32[N, 4]", "= Softmax<13>(%y) {axis: -1}", "!unsupported",
                           "mode: \"a\\\"b\\x0a\"", "from my.fn.Twice", "output %q"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (!strstr(t1, parts[i]))
            fail_msg("'%s' not in:\n%s", parts[i], t1);
    free(t1);
    free(t2);
    kn_graph_destroy(g1);
    kn_graph_destroy(g2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_initializers_raw_every_dtype),
        T(test_initializers_typed_fields),
        T(test_initializer_typed_field_errors),
        T(test_constant_nodes),
        T(test_constant_errors),
        T(test_sparse_initializers),
        T(test_external_data),
        T(test_external_data_refused),
        T(test_graph_io_types),
        T(test_graph_io_errors),
        T(test_every_attr_kind_unknown_to_schema),
        T(test_every_attr_kind_custom_domain),
        T(test_attr_errors),
        T(test_if_outer_references),
        T(test_loop_if_two_levels),
        T(test_subgraph_depth_limit),
        T(test_topological_order),
        T(test_graph_errors),
        T(test_functions_inlined),
        T(test_function_attr_refs),
        T(test_function_constant_called_twice),
        T(test_function_recursion),
        T(test_model_info),
        T(test_unsupported_ops),
        T(test_print_stable),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
