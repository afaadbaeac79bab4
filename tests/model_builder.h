/* Test helpers: build ONNX models in C with protobuf-c's generated API,
 * serialize them, write them into temp folders; a counting allocator. */
#ifndef KILN_TESTS_MODEL_BUILDER_H
#define KILN_TESTS_MODEL_BUILDER_H

#include "kiln/kiln.h"
#include "onnx.pb-c.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A builder owns every message, string and array made through it (and every
 * buffer mb_pack returns) until mb_free. Allocation failure fails the test. */
typedef struct mb mb;

mb *mb_new(void);
void mb_free(mb *b);
void *mb_alloc(mb *b, size_t size); /* zeroed */
char *mb_strdup(mb *b, const char *s);

/* ---- models, graphs, nodes ---- */

/* ir_version 8, an ai.onnx opset import and an empty graph named "main". */
Onnx__ModelProto *mb_model(mb *b, int64_t onnx_opset);
void mb_opset(mb *b, Onnx__ModelProto *m, const char *domain, int64_t version);
void mb_metadata(mb *b, Onnx__ModelProto *m, const char *key, const char *value);
Onnx__GraphProto *mb_graph(mb *b, const char *name);

/* Name lists are comma-separated: "a,b" is two names, "a,,c" keeps an empty
 * (omitted optional) one, "" is none. `name` may be NULL (unnamed node). */
Onnx__NodeProto *mb_node(mb *b, Onnx__GraphProto *g, const char *op_type, const char *name, const char *inputs,
                         const char *outputs);
/* A model-local function (appended to m->functions) that imports ai.onnx at
 * the model's version; `attrs` lists its attribute names (comma-separated). */
Onnx__FunctionProto *mb_function(mb *b, Onnx__ModelProto *m, const char *domain, const char *name,
                                 const char *inputs, const char *outputs, const char *attrs);
Onnx__NodeProto *mb_fnode(mb *b, Onnx__FunctionProto *f, const char *op_type, const char *name,
                          const char *inputs, const char *outputs);
/* FunctionProto.attribute_proto (field 11, newer than kiln's onnx.proto):
 * attached as an unknown field so it is serialized. */
void mb_function_default(mb *b, Onnx__FunctionProto *f, const Onnx__AttributeProto *a);
/* Appends a length-delimited field `tag` holding `bytes` as an unknown
 * field of msg; it is written out as is when msg is packed. */
void mb_unknown_field(mb *b, ProtobufCMessage *msg, uint32_t tag, const void *bytes, size_t len);

/* ---- attributes (appended to a node) ---- */

Onnx__AttributeProto *mb_attr(mb *b, Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType type);
/* A free-standing attribute (not on a node). */
Onnx__AttributeProto *mb_attr_new(mb *b, const char *name, Onnx__AttributeProto__AttributeType type);
void mb_attr_f(mb *b, Onnx__NodeProto *n, const char *name, float v);
void mb_attr_i(mb *b, Onnx__NodeProto *n, const char *name, int64_t v);
void mb_attr_s(mb *b, Onnx__NodeProto *n, const char *name, const char *v);
void mb_attr_t(mb *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t);
void mb_attr_g(mb *b, Onnx__NodeProto *n, const char *name, Onnx__GraphProto *g);
void mb_attr_floats(mb *b, Onnx__NodeProto *n, const char *name, const float *v, size_t count);
void mb_attr_ints(mb *b, Onnx__NodeProto *n, const char *name, const int64_t *v, size_t count);
void mb_attr_strings(mb *b, Onnx__NodeProto *n, const char *name, const char *const *v, size_t count);
/* An attribute that takes the value of the enclosing function's `ref`. */
void mb_attr_ref(mb *b, Onnx__NodeProto *n, const char *name, Onnx__AttributeProto__AttributeType type, const char *ref);

/* ---- tensors ---- */

Onnx__TensorProto *mb_tensor(mb *b, const char *name, int dtype, const int64_t *dims, size_t rank);
/* A tensor appended to g's initializers. */
Onnx__TensorProto *mb_initializer(mb *b, Onnx__GraphProto *g, const char *name, int dtype, const int64_t *dims,
                                  size_t rank);
void mb_raw(mb *b, Onnx__TensorProto *t, const void *data, size_t len);
void mb_float_data(mb *b, Onnx__TensorProto *t, const float *v, size_t count);
void mb_double_data(mb *b, Onnx__TensorProto *t, const double *v, size_t count);
void mb_int32_data(mb *b, Onnx__TensorProto *t, const int32_t *v, size_t count);
void mb_int64_data(mb *b, Onnx__TensorProto *t, const int64_t *v, size_t count);
void mb_uint64_data(mb *b, Onnx__TensorProto *t, const uint64_t *v, size_t count);
/* lens may be NULL (NUL-terminated strings). */
void mb_string_data(mb *b, Onnx__TensorProto *t, const char *const *v, const size_t *lens, size_t count);
/* Marks t external and appends one external_data entry (key = value). */
void mb_external(mb *b, Onnx__TensorProto *t, const char *key, const char *value);
Onnx__SparseTensorProto *mb_sparse(mb *b, Onnx__TensorProto *values, Onnx__TensorProto *indices, const int64_t *dims,
                                   size_t rank);
void mb_sparse_initializer(mb *b, Onnx__GraphProto *g, Onnx__SparseTensorProto *sp);

/* ---- types and value infos ---- */

/* dims: comma-separated, each a number (dim_value), '?' (no value) or a
 * name (dim_param); "" is rank 0; NULL leaves the shape out (rank unknown). */
Onnx__TypeProto *mb_tensor_type(mb *b, int elem_type, const char *dims);
Onnx__TypeProto *mb_sparse_type(mb *b, int elem_type, const char *dims);
Onnx__TypeProto *mb_seq_type(mb *b, Onnx__TypeProto *elem);
Onnx__TypeProto *mb_opt_type(mb *b, Onnx__TypeProto *elem);
Onnx__TypeProto *mb_map_type(mb *b, int key_type, Onnx__TypeProto *value);
/* Graph input / output / value_info; `type` may be NULL. */
Onnx__ValueInfoProto *mb_input(mb *b, Onnx__GraphProto *g, const char *name, Onnx__TypeProto *type);
Onnx__ValueInfoProto *mb_output(mb *b, Onnx__GraphProto *g, const char *name, Onnx__TypeProto *type);
Onnx__ValueInfoProto *mb_value_info(mb *b, Onnx__GraphProto *g, const char *name, Onnx__TypeProto *type);

/* ---- bytes and files ---- */

/* Serializes any message (a ModelProto, TensorProto, ...); owned by b. */
uint8_t *mb_pack(mb *b, const void *msg, size_t *len);
/* Packs m and imports it as "t.onnx" with the default allocator (failing
 * the test on error); the caller destroys the graph. */
kn_graph *mb_import(mb *b, const Onnx__ModelProto *m);
/* A fresh folder under $TMPDIR (or /tmp); owned by b. */
char *mb_tempdir(mb *b);
/* dir/name (owned by b). */
char *mb_path(mb *b, const char *dir, const char *name);
/* Writes bytes to dir/name and returns that path (owned by b). */
char *mb_write(mb *b, const char *dir, const char *name, const void *data, size_t len);
/* The whole file at path, NUL-terminated (malloc'd: the caller frees it);
 * its size in *len unless len is NULL. Fails the test when unreadable. */
char *mb_read_file(const char *path, size_t *len);
/* Rewrites the checksum in the header of plan bytes p[0 .. n) after a
 * test changed them (runtime/plan_format.h: bytes 24..31 counted as 0). */
void mb_plan_rechecksum(uint8_t *p, size_t n);
/* The ONNX model at path imported, given kiln.kv.block_size = block_size
 * when not NULL, optimized by kn_pipeline_run with po, written as a
 * target-cpu plan to a temporary file and loaded back (the file removed);
 * every step asserted. */
struct kn_pipeline_opts;
kn_graph *mb_cpu_plan(const char *path, const struct kn_pipeline_opts *po, const char *block_size);
/* Packs m and writes it to dir/name; returns the path. */
char *mb_write_model(mb *b, const char *dir, const char *name, const Onnx__ModelProto *m);
/* Removes a folder and everything under it (links are not followed). */
void mb_rmtree(const char *dir);

/* ---- a counting kn_allocator ---- */

typedef struct mb_counter {
    kn_allocator a;  /* pass &c.a to kiln */
    long live;       /* blocks allocated and not yet freed */
    long calls;      /* alloc/realloc calls so far */
    long fail_at;    /* the call (1-based) that returns NULL; 0: none */
} mb_counter;

void mb_counter_init(mb_counter *c);

/* One run of an allocation-failure sweep: the work under test through
 * allocator a (errors to d); it frees what it made and returns its status. */
typedef kn_status (*mb_sweep_fn)(const kn_allocator *a, kn_diag *d, void *ctx);
/* Runs fn with allocation k failing, k = 1, 2, ..., until a run succeeds:
 * every earlier run must give KN_ERR_NOMEM, and no run may leave anything
 * allocated. Returns how many runs failed. */
long mb_alloc_sweep(mb_sweep_fn fn, void *ctx);

/* ---- diagnostics ---- */

/* True if one message of severity `sev` contains every given substring:
 * mb_diag_has(d, KN_ERROR, "node 'n1'", "cycle"). */
#define mb_diag_has(d, sev, ...) mb_diag_has_((d), (sev), __VA_ARGS__, (const char *)NULL)
bool mb_diag_has_(const kn_diag *d, kn_severity sev, ...);

#endif
