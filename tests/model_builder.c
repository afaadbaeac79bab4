/* Test helpers for building ONNX models with protobuf-c (see model_builder.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "model_builder.h"
#include "codegen/plan_write.h"
#include "kiln/runtime.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "runtime/plan_format.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Every block is remembered and freed by mb_free; arrays grow by copying
 * into a new block (the old one stays in the pool), which is simple and
 * plenty for test-sized models. */
struct mb {
    void **blocks;
    size_t n, cap;
};

mb *mb_new(void)
{
    mb *b = calloc(1, sizeof *b);
    assert_non_null(b);
    return b;
}

void mb_free(mb *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        free(b->blocks[i]);
    free(b->blocks);
    free(b);
}

void *mb_alloc(mb *b, size_t size)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->blocks = realloc(b->blocks, b->cap * sizeof *b->blocks);
        assert_non_null(b->blocks);
    }
    void *p = calloc(1, size ? size : 1);
    assert_non_null(p);
    b->blocks[b->n++] = p;
    return p;
}

char *mb_strdup(mb *b, const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(mb_alloc(b, n), s, n);
}

/* Returns a copy of arr (count elements of elem bytes) with room for one more. */
static void *grow(mb *b, const void *arr, size_t count, size_t elem)
{
    void *p = mb_alloc(b, (count + 1) * elem);
    if (count)
        memcpy(p, arr, count * elem);
    return p;
}

#define PUSH(b, arr, n, item)                                \
    do {                                                     \
        (arr) = grow((b), (arr), (n), sizeof *(arr));        \
        (arr)[(n)++] = (item);                               \
    } while (0)

/* "a,b,,c" → {"a","b","","c"}; "" → none. */
static char **split(mb *b, const char *list, size_t *n)
{
    char **out = NULL;
    *n = 0;
    if (!list || !*list)
        return NULL;
    for (const char *p = list;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *s = mb_alloc(b, len + 1);
        memcpy(s, p, len);
        PUSH(b, out, *n, s);
        if (!e)
            break;
        p = e + 1;
    }
    return out;
}

/* ---- models, graphs, nodes ---- */

Onnx__ModelProto *mb_model(mb *b, int64_t onnx_opset)
{
    Onnx__ModelProto *m = mb_alloc(b, sizeof *m);
    onnx__model_proto__init(m);
    m->has_ir_version = 1;
    m->ir_version = 8;
    mb_opset(b, m, "", onnx_opset);
    m->graph = mb_graph(b, "main");
    return m;
}

static Onnx__OperatorSetIdProto *opset_new(mb *b, const char *domain, int64_t version)
{
    Onnx__OperatorSetIdProto *o = mb_alloc(b, sizeof *o);
    onnx__operator_set_id_proto__init(o);
    o->domain = mb_strdup(b, domain);
    o->has_version = 1;
    o->version = version;
    return o;
}

void mb_opset(mb *b, Onnx__ModelProto *m, const char *domain, int64_t version)
{
    PUSH(b, m->opset_import, m->n_opset_import, opset_new(b, domain, version));
}

void mb_metadata(mb *b, Onnx__ModelProto *m, const char *key, const char *value)
{
    Onnx__StringStringEntryProto *kv = mb_alloc(b, sizeof *kv);
    onnx__string_string_entry_proto__init(kv);
    kv->key = mb_strdup(b, key);
    kv->value = mb_strdup(b, value);
    PUSH(b, m->metadata_props, m->n_metadata_props, kv);
}

Onnx__GraphProto *mb_graph(mb *b, const char *name)
{
    Onnx__GraphProto *g = mb_alloc(b, sizeof *g);
    onnx__graph_proto__init(g);
    g->name = mb_strdup(b, name);
    return g;
}

static Onnx__NodeProto *node_new(mb *b, const char *op_type, const char *name, const char *inputs,
                                 const char *outputs)
{
    Onnx__NodeProto *n = mb_alloc(b, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = mb_strdup(b, op_type);
    if (name)
        n->name = mb_strdup(b, name);
    n->input = split(b, inputs, &n->n_input);
    n->output = split(b, outputs, &n->n_output);
    return n;
}

Onnx__NodeProto *mb_node(mb *b, Onnx__GraphProto *g, const char *op_type, const char *name, const char *inputs,
                         const char *outputs)
{
    Onnx__NodeProto *n = node_new(b, op_type, name, inputs, outputs);
    PUSH(b, g->node, g->n_node, n);
    return n;
}

Onnx__FunctionProto *mb_function(mb *b, Onnx__ModelProto *m, const char *domain, const char *name,
                                 const char *inputs, const char *outputs, const char *attrs)
{
    Onnx__FunctionProto *f = mb_alloc(b, sizeof *f);
    onnx__function_proto__init(f);
    f->domain = mb_strdup(b, domain);
    f->name = mb_strdup(b, name);
    f->input = split(b, inputs, &f->n_input);
    f->output = split(b, outputs, &f->n_output);
    f->attribute = split(b, attrs, &f->n_attribute);
    int64_t v = m->n_opset_import ? m->opset_import[0]->version : 13;
    PUSH(b, f->opset_import, f->n_opset_import, opset_new(b, "", v));
    PUSH(b, m->functions, m->n_functions, f);
    return f;
}

Onnx__NodeProto *mb_fnode(mb *b, Onnx__FunctionProto *f, const char *op_type, const char *name,
                          const char *inputs, const char *outputs)
{
    Onnx__NodeProto *n = node_new(b, op_type, name, inputs, outputs);
    PUSH(b, f->node, f->n_node, n);
    return n;
}

void mb_unknown_field(mb *b, ProtobufCMessage *msg, uint32_t tag, const void *bytes, size_t len)
{
    /* protobuf-c keeps a length-prefixed unknown field's varint length
     * prefix at the start of its data, as it was on the wire */
    uint8_t *data = mb_alloc(b, len + 10);
    size_t n = 0;
    for (size_t v = len; n == 0 || v; v >>= 7)
        data[n++] = (uint8_t)((v & 0x7f) | (v >> 7 ? 0x80 : 0));
    if (len)
        memcpy(data + n, bytes, len);
    ProtobufCMessageUnknownField uf = {0};
    uf.tag = tag;
    uf.wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
    uf.len = n + len;
    uf.data = data;
    PUSH(b, msg->unknown_fields, msg->n_unknown_fields, uf);
}

void mb_function_default(mb *b, Onnx__FunctionProto *f, const Onnx__AttributeProto *a)
{
    size_t len;
    uint8_t *bytes = mb_pack(b, a, &len);
    mb_unknown_field(b, &f->base, 11, bytes, len);
}

/* ---- attributes ---- */

Onnx__AttributeProto *mb_attr_new(mb *b, const char *name, Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = mb_alloc(b, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = mb_strdup(b, name);
    a->has_type = 1;
    a->type = type;
    return a;
}

Onnx__AttributeProto *mb_attr(mb *b, Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = mb_attr_new(b, name, type);
    PUSH(b, n->attribute, n->n_attribute, a);
    return a;
}

void mb_attr_f(mb *b, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

void mb_attr_i(mb *b, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

void mb_attr_s(mb *b, Onnx__NodeProto *n, const char *name, const char *v)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.len = strlen(v);
    a->s.data = (uint8_t *)mb_strdup(b, v);
}

void mb_attr_t(mb *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t)
{
    mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR)->t = t;
}

void mb_attr_g(mb *b, Onnx__NodeProto *n, const char *name, Onnx__GraphProto *g)
{
    mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH)->g = g;
}

void mb_attr_floats(mb *b, Onnx__NodeProto *n, const char *name, const float *v, size_t count)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS);
    a->floats = memcpy(mb_alloc(b, count * sizeof *v), v, count * sizeof *v);
    a->n_floats = count;
}

void mb_attr_ints(mb *b, Onnx__NodeProto *n, const char *name, const int64_t *v, size_t count)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->ints = memcpy(mb_alloc(b, count * sizeof *v), v, count * sizeof *v);
    a->n_ints = count;
}

void mb_attr_strings(mb *b, Onnx__NodeProto *n, const char *name, const char *const *v, size_t count)
{
    Onnx__AttributeProto *a = mb_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS);
    a->strings = mb_alloc(b, count * sizeof *a->strings);
    for (size_t i = 0; i < count; i++) {
        a->strings[i].len = strlen(v[i]);
        a->strings[i].data = (uint8_t *)mb_strdup(b, v[i]);
    }
    a->n_strings = count;
}

void mb_attr_ref(mb *b, Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType type, const char *ref)
{
    mb_attr(b, n, name, type)->ref_attr_name = mb_strdup(b, ref);
}

/* ---- tensors ---- */

Onnx__TensorProto *mb_tensor(mb *b, const char *name, int dtype, const int64_t *dims, size_t rank)
{
    Onnx__TensorProto *t = mb_alloc(b, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = mb_strdup(b, name);
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = rank;
    t->dims = rank ? memcpy(mb_alloc(b, rank * sizeof *dims), dims, rank * sizeof *dims) : NULL;
    return t;
}

Onnx__TensorProto *mb_initializer(mb *b, Onnx__GraphProto *g, const char *name, int dtype, const int64_t *dims,
                                  size_t rank)
{
    Onnx__TensorProto *t = mb_tensor(b, name, dtype, dims, rank);
    PUSH(b, g->initializer, g->n_initializer, t);
    return t;
}

void mb_raw(mb *b, Onnx__TensorProto *t, const void *data, size_t len)
{
    t->has_raw_data = 1;
    t->raw_data.len = len;
    t->raw_data.data = len ? memcpy(mb_alloc(b, len), data, len) : NULL;
}

#define COPY_FIELD(b, t, field, v, count)                                       \
    do {                                                                        \
        (t)->field = memcpy(mb_alloc((b), (count) * sizeof *(v)), (v), (count) * sizeof *(v)); \
        (t)->n_##field = (count);                                               \
    } while (0)

void mb_float_data(mb *b, Onnx__TensorProto *t, const float *v, size_t count) { COPY_FIELD(b, t, float_data, v, count); }
void mb_double_data(mb *b, Onnx__TensorProto *t, const double *v, size_t count) { COPY_FIELD(b, t, double_data, v, count); }
void mb_int32_data(mb *b, Onnx__TensorProto *t, const int32_t *v, size_t count) { COPY_FIELD(b, t, int32_data, v, count); }
void mb_int64_data(mb *b, Onnx__TensorProto *t, const int64_t *v, size_t count) { COPY_FIELD(b, t, int64_data, v, count); }
void mb_uint64_data(mb *b, Onnx__TensorProto *t, const uint64_t *v, size_t count) { COPY_FIELD(b, t, uint64_data, v, count); }

void mb_string_data(mb *b, Onnx__TensorProto *t, const char *const *v, const size_t *lens, size_t count)
{
    t->string_data = mb_alloc(b, count * sizeof *t->string_data);
    for (size_t i = 0; i < count; i++) {
        size_t len = lens ? lens[i] : strlen(v[i]);
        t->string_data[i].len = len;
        t->string_data[i].data = memcpy(mb_alloc(b, len), v[i], len);
    }
    t->n_string_data = count;
}

void mb_external(mb *b, Onnx__TensorProto *t, const char *key, const char *value)
{
    Onnx__StringStringEntryProto *kv = mb_alloc(b, sizeof *kv);
    onnx__string_string_entry_proto__init(kv);
    kv->key = mb_strdup(b, key);
    kv->value = mb_strdup(b, value);
    PUSH(b, t->external_data, t->n_external_data, kv);
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
}

Onnx__SparseTensorProto *mb_sparse(mb *b, Onnx__TensorProto *values, Onnx__TensorProto *indices, const int64_t *dims,
                                   size_t rank)
{
    Onnx__SparseTensorProto *sp = mb_alloc(b, sizeof *sp);
    onnx__sparse_tensor_proto__init(sp);
    sp->values = values;
    sp->indices = indices;
    sp->n_dims = rank;
    sp->dims = rank ? memcpy(mb_alloc(b, rank * sizeof *dims), dims, rank * sizeof *dims) : NULL;
    return sp;
}

void mb_sparse_initializer(mb *b, Onnx__GraphProto *g, Onnx__SparseTensorProto *sp)
{
    PUSH(b, g->sparse_initializer, g->n_sparse_initializer, sp);
}

/* ---- types ---- */

static Onnx__TensorShapeProto *shape_new(mb *b, const char *dims)
{
    if (!dims)
        return NULL;
    Onnx__TensorShapeProto *sh = mb_alloc(b, sizeof *sh);
    onnx__tensor_shape_proto__init(sh);
    size_t n;
    char **parts = split(b, dims, &n);
    for (size_t i = 0; i < n; i++) {
        Onnx__TensorShapeProto__Dimension *d = mb_alloc(b, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        char *end;
        long long v = strtoll(parts[i], &end, 10);
        if (*parts[i] && !*end) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = v;
        } else if (strcmp(parts[i], "?") != 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = parts[i];
        }
        PUSH(b, sh->dim, sh->n_dim, d);
    }
    return sh;
}

static Onnx__TypeProto *type_new(mb *b, Onnx__TypeProto__ValueCase vc)
{
    Onnx__TypeProto *t = mb_alloc(b, sizeof *t);
    onnx__type_proto__init(t);
    t->value_case = vc;
    return t;
}

Onnx__TypeProto *mb_tensor_type(mb *b, int elem_type, const char *dims)
{
    Onnx__TypeProto *t = type_new(b, ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE);
    t->tensor_type = mb_alloc(b, sizeof *t->tensor_type);
    onnx__type_proto__tensor__init(t->tensor_type);
    t->tensor_type->has_elem_type = 1;
    t->tensor_type->elem_type = elem_type;
    t->tensor_type->shape = shape_new(b, dims);
    return t;
}

Onnx__TypeProto *mb_sparse_type(mb *b, int elem_type, const char *dims)
{
    Onnx__TypeProto *t = type_new(b, ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE);
    t->sparse_tensor_type = mb_alloc(b, sizeof *t->sparse_tensor_type);
    onnx__type_proto__sparse_tensor__init(t->sparse_tensor_type);
    t->sparse_tensor_type->has_elem_type = 1;
    t->sparse_tensor_type->elem_type = elem_type;
    t->sparse_tensor_type->shape = shape_new(b, dims);
    return t;
}

Onnx__TypeProto *mb_seq_type(mb *b, Onnx__TypeProto *elem)
{
    Onnx__TypeProto *t = type_new(b, ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE);
    t->sequence_type = mb_alloc(b, sizeof *t->sequence_type);
    onnx__type_proto__sequence__init(t->sequence_type);
    t->sequence_type->elem_type = elem;
    return t;
}

Onnx__TypeProto *mb_opt_type(mb *b, Onnx__TypeProto *elem)
{
    Onnx__TypeProto *t = type_new(b, ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE);
    t->optional_type = mb_alloc(b, sizeof *t->optional_type);
    onnx__type_proto__optional__init(t->optional_type);
    t->optional_type->elem_type = elem;
    return t;
}

Onnx__TypeProto *mb_map_type(mb *b, int key_type, Onnx__TypeProto *value)
{
    Onnx__TypeProto *t = type_new(b, ONNX__TYPE_PROTO__VALUE_MAP_TYPE);
    t->map_type = mb_alloc(b, sizeof *t->map_type);
    onnx__type_proto__map__init(t->map_type);
    t->map_type->has_key_type = 1;
    t->map_type->key_type = key_type;
    t->map_type->value_type = value;
    return t;
}

static Onnx__ValueInfoProto *vi_new(mb *b, const char *name, Onnx__TypeProto *type)
{
    Onnx__ValueInfoProto *v = mb_alloc(b, sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = mb_strdup(b, name);
    v->type = type;
    return v;
}

Onnx__ValueInfoProto *mb_input(mb *b, Onnx__GraphProto *g, const char *name, Onnx__TypeProto *type)
{
    Onnx__ValueInfoProto *v = vi_new(b, name, type);
    PUSH(b, g->input, g->n_input, v);
    return v;
}

Onnx__ValueInfoProto *mb_output(mb *b, Onnx__GraphProto *g, const char *name, Onnx__TypeProto *type)
{
    Onnx__ValueInfoProto *v = vi_new(b, name, type);
    PUSH(b, g->output, g->n_output, v);
    return v;
}

Onnx__ValueInfoProto *mb_value_info(mb *b, Onnx__GraphProto *g, const char *name, Onnx__TypeProto *type)
{
    Onnx__ValueInfoProto *v = vi_new(b, name, type);
    PUSH(b, g->value_info, g->n_value_info, v);
    return v;
}

/* ---- bytes and files ---- */

uint8_t *mb_pack(mb *b, const void *msg, size_t *len)
{
    const ProtobufCMessage *m = msg;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = mb_alloc(b, n);
    *len = protobuf_c_message_pack(m, buf);
    assert_int_equal(*len, n);
    return buf;
}

char *mb_tempdir(mb *b)
{
    const char *tmp = getenv("TMPDIR");
    char *dir = mb_path(b, tmp && *tmp ? tmp : "/tmp", "kiln_test_XXXXXX");
    if (!mkdtemp(dir))
        fail_msg("mkdtemp(%s) failed", dir);
    return dir;
}

char *mb_path(mb *b, const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = mb_alloc(b, n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *mb_write(mb *b, const char *dir, const char *name, const void *data, size_t len)
{
    char *path = mb_path(b, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("cannot create %s", path);
    if (len && fwrite(data, 1, len, f) != len)
        fail_msg("cannot write %s", path);
    assert_int_equal(fclose(f), 0);
    return path;
}

kn_graph *mb_import(mb *b, const Onnx__ModelProto *m)
{
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, NULL, d, &g), KN_OK);
    kn_diag_destroy(d);
    return g;
}

char *mb_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

void mb_plan_rechecksum(uint8_t *p, size_t n)
{
    static const uint8_t z8[8];
    uint64_t c = kn_plan_checksum_update(KN_PLAN_CHECKSUM_SEED, p, 24);
    c = kn_plan_checksum_update(c, z8, 8);
    c = kn_plan_checksum_update(c, p + 32, n - 32);
    memcpy(p + 24, &c, 8);
}

char *mb_write_model(mb *b, const char *dir, const char *name, const Onnx__ModelProto *m)
{
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    return mb_write(b, dir, name, bytes, len);
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    return type == FTW_DP ? rmdir(path) : unlink(path);
}

void mb_rmtree(const char *dir)
{
    if (dir)
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- counting allocator ---- */

static void *c_alloc(void *ctx, size_t n)
{
    mb_counter *c = ctx;
    if (++c->calls == c->fail_at)
        return NULL;
    void *p = malloc(n);
    if (p)
        c->live++;
    return p;
}

static void *c_realloc(void *ctx, void *p, size_t n)
{
    mb_counter *c = ctx;
    if (++c->calls == c->fail_at)
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        c->live++;
    return q;
}

static void c_free(void *ctx, void *p)
{
    mb_counter *c = ctx;
    if (p)
        c->live--;
    free(p);
}

void mb_counter_init(mb_counter *c)
{
    memset(c, 0, sizeof *c);
    c->a.alloc = c_alloc;
    c->a.realloc = c_realloc;
    c->a.free = c_free;
    c->a.ctx = c;
}

long mb_alloc_sweep(mb_sweep_fn fn, void *ctx)
{
    for (long k = 1; k < 1000000; k++) {
        mb_counter c;
        mb_counter_init(&c);
        c.fail_at = k;
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_status s = fn(&c.a, d, ctx);
        kn_diag_destroy(d);
        assert_int_equal(c.live, 0);
        if (s == KN_OK)
            return k - 1;
        if (s != KN_ERR_NOMEM)
            fail_msg("allocation %ld failing: status %s, not KN_ERR_NOMEM", k, kn_status_str(s));
    }
    fail_msg("no run succeeded");
    return 0;
}

/* ---- diagnostics ---- */

bool mb_diag_has_(const kn_diag *d, kn_severity sev, ...)
{
    for (size_t i = 0; i < kn_diag_size(d); i++) {
        kn_severity s;
        const char *msg = kn_diag_message(d, i, &s);
        if (s != sev)
            continue;
        bool all = true;
        va_list ap;
        va_start(ap, sev);
        for (const char *sub; all && (sub = va_arg(ap, const char *));)
            all = strstr(msg, sub) != NULL;
        va_end(ap);
        if (all)
            return true;
    }
    return false;
}

kn_graph *mb_cpu_plan(const char *path, const kn_pipeline_opts *po, const char *block_size)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_file(path, NULL, NULL, d, &g), KN_OK);
    if (block_size)
        assert_int_equal(kn_rw_set_meta(g, "kiln.kv.block_size", block_size), KN_OK);
    assert_int_equal(kn_pipeline_run(g, po, d), KN_OK);
    static unsigned serial;
    char plan[96];
    snprintf(plan, sizeof plan, "/tmp/kn_test_cpu_plan_%d_%u.plan", (int)getpid(), serial++);
    kn_plan_options o = {"-O", "cpu", NULL};
    assert_int_equal(kn_plan_write(g, &o, plan, d), KN_OK);
    kn_graph_destroy(g);
    kn_graph *p = NULL;
    assert_int_equal(kn_plan_load(plan, NULL, d, &p), KN_OK);
    unlink(plan);
    kn_diag_destroy(d);
    return p;
}
