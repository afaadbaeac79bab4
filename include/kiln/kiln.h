/* kiln public C API: statuses, the allocator hook, diagnostics, data types
 * and model import. Everything a program embedding kiln needs to see. */
#ifndef KILN_KILN_H
#define KILN_KILN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KN_VERSION_MAJOR 0
#define KN_VERSION_MINOR 1
#define KN_VERSION_PATCH 0
#define KN_VERSION_STRING "0.1.0"

/* Every fallible kiln function returns one of these. */
typedef enum kn_status {
    KN_OK = 0,
    KN_ERR_INVALID,     /* the input (model, plan, option) is malformed */
    KN_ERR_UNSUPPORTED, /* well-formed, but kiln cannot handle it */
    KN_ERR_IO,          /* a file could not be opened, read, mapped or written */
    KN_ERR_NOMEM,       /* an allocation failed */
    KN_ERR_LIMIT,       /* a size or depth limit was exceeded */
    KN_ERR_INTERNAL,    /* a bug in kiln */
    KN_ERR_NOT_FOUND    /* a looked-up item (a plan's named blob) is absent */
} kn_status;

const char *kn_status_str(kn_status s);

/* Returns the status from the enclosing function when `expr` fails. */
#define KN_TRY(expr)                     \
    do {                                 \
        kn_status kn_try_s_ = (expr);    \
        if (kn_try_s_ != KN_OK)          \
            return kn_try_s_;            \
    } while (0)

/* All heap memory kiln uses goes through one of these. `alloc` and
 * `realloc` return NULL on failure; `free(ctx, NULL)` is a no-op. Pass NULL
 * wherever an allocator is asked for to get malloc/realloc/free. */
typedef struct kn_allocator {
    void *(*alloc)(void *ctx, size_t size);
    void *(*realloc)(void *ctx, void *ptr, size_t size);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} kn_allocator;

const kn_allocator *kn_default_allocator(void);

/* ---- diagnostics --------------------------------------------------------- */

typedef enum kn_severity { KN_NOTE, KN_WARNING, KN_ERROR } kn_severity;

/* A diagnostics sink: collects messages in order. Owned by the caller. */
typedef struct kn_diag kn_diag;

/* Creates a sink. Returns NULL when out of memory. If `echo` is non-NULL,
 * every message is also printed there as it arrives. */
kn_diag *kn_diag_create(const kn_allocator *a, FILE *echo);
void kn_diag_destroy(kn_diag *d);
/* Adds one message. Never fails: when memory runs out the message is
 * counted as dropped (and still echoed). */
void kn_diag_add(kn_diag *d, kn_severity sev, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
size_t kn_diag_count(const kn_diag *d, kn_severity sev);
size_t kn_diag_size(const kn_diag *d);
/* The i-th message text ("error: ..."), valid until the sink is destroyed. */
const char *kn_diag_message(const kn_diag *d, size_t i, kn_severity *sev);
void kn_diag_print(const kn_diag *d, FILE *f);

/* ---- data types ------------------------------------------------------------ */

/* Numbered as ONNX's TensorProto.DataType. */
typedef enum kn_dtype {
    KN_UNDEFINED = 0,
    KN_F32 = 1,
    KN_U8 = 2,
    KN_I8 = 3,
    KN_U16 = 4,
    KN_I16 = 5,
    KN_I32 = 6,
    KN_I64 = 7,
    KN_STRING = 8,
    KN_BOOL = 9,
    KN_F16 = 10,
    KN_F64 = 11,
    KN_U32 = 12,
    KN_U64 = 13,
    KN_C64 = 14,
    KN_C128 = 15,
    KN_BF16 = 16,
    KN_F8E4M3FN = 17,
    KN_F8E4M3FNUZ = 18,
    KN_F8E5M2 = 19,
    KN_F8E5M2FNUZ = 20,
    KN_U4 = 21,
    KN_I4 = 22,
    KN_F4E2M1 = 23,
    KN_F8E8M0 = 24,
    KN_DTYPE_COUNT
} kn_dtype;

int kn_dtype_valid(int v);
/* Short lowercase name: "float32", "float16", "int4", ... ("?" if invalid). */
const char *kn_dtype_name(kn_dtype t);
/* Storage bits per element: 4 for the 4-bit types, 0 for strings. */
unsigned kn_dtype_bits(kn_dtype t);
/* Bytes needed for n elements (4-bit types packed two per byte). Returns
 * KN_ERR_LIMIT if the size overflows. Strings have no byte size (0). */
kn_status kn_dtype_nbytes(kn_dtype t, int64_t n, size_t *out);

/* ---- import ---------------------------------------------------------------- */

typedef struct kn_graph kn_graph;

typedef struct kn_import_options {
    size_t max_subgraph_depth;   /* nested If/Loop/Scan bodies; 0 = default (64) */
    size_t max_function_depth;   /* nested model-local function calls; 0 = default (32) */
    size_t max_nodes;            /* nodes in all graphs, counting Constant nodes, function
                                  * calls and each inlined copy of a function's nodes;
                                  * 0 = default (10,000,000) */
    size_t max_data_bytes;       /* bytes of tensor data, strings and attribute arrays the
                                  * import holds in memory (external data excluded):
                                  * densified sparse tensors and function bodies copied per
                                  * call can outgrow the file; 0 = default (1 GiB + 4 × the
                                  * model's size in bytes) */
} kn_import_options;

/* Reads an ONNX model file into a new graph. External data is resolved
 * relative to the model's folder and mmapped. On success *out owns
 * everything (free with kn_graph_destroy). On failure *out is NULL, every
 * reason is in `diag`, and the status is KN_ERR_INVALID (malformed model),
 * KN_ERR_UNSUPPORTED (well-formed but not handled: segmented tensors,
 * sparse string or 4-bit tensors), KN_ERR_IO (file could not be read),
 * KN_ERR_NOMEM, or KN_ERR_LIMIT.
 * `opts` and `a` may be NULL. */
kn_status kn_import_onnx_file(const char *path, const kn_import_options *opts,
                              const kn_allocator *a, kn_diag *diag, kn_graph **out);

/* Same, from bytes in memory. `base_dir` is where external data is looked
 * up (NULL: external data is refused); `display_name` names the model in
 * messages. The bytes are not referenced after the call returns. */
kn_status kn_import_onnx_memory(const void *data, size_t size, const char *base_dir,
                                const char *display_name, const kn_import_options *opts,
                                const kn_allocator *a, kn_diag *diag, kn_graph **out);

void kn_graph_destroy(kn_graph *g);

/* Checks the graph's invariants (see ir/verify.c). Returns KN_OK or
 * KN_ERR_INVALID with every problem reported to `diag` (KN_ERR_NOMEM if
 * it ran out of memory while checking). */
kn_status kn_graph_verify(const kn_graph *g, kn_diag *diag);

/* Writes the graph's stable text form. */
kn_status kn_graph_print(const kn_graph *g, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
