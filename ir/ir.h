/* kiln's graph IR: index-based, arena-owned. Nodes and values live in arrays
 * of a kn_graph and refer to each other by 32-bit ids; names are interned. */
#ifndef KILN_IR_H
#define KILN_IR_H

#include "kiln/kiln.h"
#include "ir/arena.h"

#include <stdbool.h>

typedef uint32_t kn_id;
#define KN_NONE UINT32_MAX

/* Interned string: two kn_str are equal iff the pointers are equal. */
typedef const char *kn_str;

/* Raw bytes (string tensor elements, string attributes). */
typedef struct kn_bytes {
    const uint8_t *data;
    size_t len; /* bytes */
} kn_bytes;

/* ---- op table -------------------------------------------------------------- */

typedef enum kn_domain {
    KN_DOM_ONNX,  /* "" or "ai.onnx" */
    KN_DOM_ML,    /* "ai.onnx.ml" */
    KN_DOM_MS,    /* "com.microsoft" */
    KN_DOM_KILN,  /* "kiln": ops the optimizer makes (fused ops) */
    KN_DOM_OTHER, /* anything else */
    KN_DOM_COUNT
} kn_domain;

typedef enum kn_op {
    KN_OP_UNSUPPORTED = 0, /* not in ir/ops.def (or not in this opset) */
#define KN_OP(id, name, dom, first, last, attrs) KN_OP_##id,
#include "ir/ops.def"
#undef KN_OP
    KN_OP_COUNT
} kn_op;

/* Newest ai.onnx opset kiln's op table describes. */
#define KN_ONNX_OPSET_MAX 23

typedef enum kn_attr_kind {
    KN_ATTR_UNDEFINED = 0,
    KN_ATTR_FLOAT,
    KN_ATTR_INT,
    KN_ATTR_STRING,
    KN_ATTR_TENSOR, /* dense; sparse tensors are densified at import */
    KN_ATTR_GRAPH,
    KN_ATTR_TYPE,
    KN_ATTR_FLOATS,
    KN_ATTR_INTS,
    KN_ATTR_STRINGS,
    KN_ATTR_TENSORS,
    KN_ATTR_GRAPHS,
    KN_ATTR_TYPES,
    KN_ATTR_KIND_COUNT
} kn_attr_kind;

const char *kn_attr_kind_name(kn_attr_kind k);

/* One attribute of an op's schema, parsed from its ops.def line. */
typedef struct kn_attr_schema {
    char name[48];
    kn_attr_kind kind;
    bool required;
} kn_attr_schema;

typedef struct kn_op_info {
    const char *name; /* ONNX op_type */
    kn_domain domain;
    int first_opset;  /* first opset version of the domain that has the op */
    int last_opset;   /* last one (ops removed later, e.g. Upsample: 9) */
    const char *attrs;/* schema text: "axis:i keepdims:i perm:is value:t!" */
} kn_op_info;

const kn_op_info *kn_op_get(kn_op op);
kn_domain kn_domain_of(const char *domain);
const char *kn_domain_name(kn_domain d); /* canonical: "ai.onnx", ... */

/* Finds the op for (domain, op_type) at the given opset version of that
 * domain. Returns KN_OP_UNSUPPORTED when it is not in the table; then
 * *why (if non-NULL) says whether the name is unknown or the opset is out
 * of the op's range. */
typedef enum kn_op_miss { KN_MISS_NONE, KN_MISS_UNKNOWN, KN_MISS_TOO_OLD, KN_MISS_REMOVED } kn_op_miss;
kn_op kn_op_lookup(const char *domain, const char *op_type, int64_t opset, kn_op_miss *why);

/* Looks up attribute `name` in op's schema. Returns false if absent. */
bool kn_op_attr_schema(kn_op op, const char *name, kn_attr_schema *out);
/* Calls fn for each attribute of op's schema, in table order. */
void kn_op_attr_each(kn_op op, void (*fn)(const kn_attr_schema *, void *), void *ctx);

/* ---- types and shapes ---------------------------------------------------- */

/* A dimension: static (value >= 0), symbolic (value < 0, sym set), or
 * unknown (value < 0, sym NULL). */
typedef struct kn_dim {
    int64_t value;
    kn_str sym;
} kn_dim;

typedef struct kn_shape {
    int32_t rank; /* -1: rank unknown */
    kn_dim *dims;
} kn_shape;

typedef enum kn_type_kind {
    KN_TYPE_UNKNOWN = 0, /* no type information in the model */
    KN_TYPE_TENSOR,
    KN_TYPE_SPARSE_TENSOR,
    KN_TYPE_SEQUENCE,
    KN_TYPE_MAP,
    KN_TYPE_OPTIONAL
} kn_type_kind;

typedef struct kn_type {
    kn_type_kind kind;
    kn_dtype dtype;          /* TENSOR, SPARSE_TENSOR; MAP: key type */
    kn_shape shape;          /* TENSOR, SPARSE_TENSOR */
    struct kn_type *elem;    /* SEQUENCE, OPTIONAL: element; MAP: value */
} kn_type;

/* ---- constants ------------------------------------------------------------- */

typedef struct kn_tensor {
    kn_str name;
    kn_dtype dtype;
    int32_t rank;
    int64_t *dims;
    int64_t n_elems;
    size_t nbytes;     /* 0 for strings */
    const void *data;  /* little-endian, packed as in ONNX raw_data;
                        * for strings: an array of n_elems kn_bytes */
    bool is_external;  /* data lies in an mmapped external file */
    bool owned;        /* data is a buffer of this graph's arena given to this
                        * tensor (kn_rw_adopt_const): writable, so a pass may
                        * rewrite it in place where no other constant's data
                        * overlaps it (kn_pass_precision) */
} kn_tensor;

/* ---- nodes and values ------------------------------------------------------ */

typedef struct kn_attr {
    kn_str name;
    kn_attr_kind kind;
    uint32_t n; /* element count for the list kinds */
    union {
        float f;
        int64_t i;
        kn_bytes s;
        kn_tensor *t;
        struct kn_graph *g;
        kn_type *tp;
        float *floats;
        int64_t *ints;
        kn_bytes *strings;
        kn_tensor **tensors;
        struct kn_graph **graphs;
        kn_type **types;
    } u;
} kn_attr;

typedef enum kn_value_kind {
    KN_VAL_INPUT,  /* graph input */
    KN_VAL_CONST,  /* initializer or Constant node */
    KN_VAL_NODE,   /* produced by a node of this graph */
    KN_VAL_OUTER   /* a subgraph's reference to a value of an enclosing graph */
} kn_value_kind;

typedef struct kn_value {
    kn_str name;
    kn_type type;
    kn_value_kind kind;
    kn_id producer;    /* NODE: node id */
    uint32_t out_index;/* NODE: which output of the producer */
    kn_tensor *tensor; /* CONST */
    kn_id outer;       /* OUTER: value id in g->parent */
} kn_value;

typedef struct kn_node {
    kn_str name;
    kn_str op_type;
    kn_str domain;    /* as written in the model ("" for ai.onnx) */
    kn_op op;         /* KN_OP_UNSUPPORTED if not in the table */
    int64_t opset;    /* the model's opset version for the node's domain */
    uint32_t n_inputs;
    kn_id *inputs;    /* KN_NONE for an omitted optional input */
    uint32_t n_outputs;
    kn_id *outputs;   /* KN_NONE for an omitted optional output */
    uint32_t n_attrs;
    kn_attr *attrs;
    kn_str function;  /* model-local function this node was inlined from, or NULL */
} kn_node;

typedef struct kn_opset {
    kn_str domain;
    int64_t version;
} kn_opset;

typedef struct kn_kv {
    kn_str key;
    kn_str value;
} kn_kv;

/* Model-level facts, held by the root graph. */
typedef struct kn_model_info {
    kn_str path;          /* file name used in messages */
    kn_str producer_name;
    kn_str producer_version;
    kn_str domain;
    kn_str doc;
    int64_t ir_version;
    int64_t model_version;
    uint32_t n_opsets;
    kn_opset *opsets;
    uint32_t n_metadata;
    kn_kv *metadata;
    uint32_t n_functions; /* model-local functions (all inlined) */
    /* Graphs loaded from a plan (runtime/plan_read.c) only, else NULL/0:
     * the plan's bytes (the mapping, or the caller's memory), so a backend
     * can read its own sections, and the CONSTS table in plan order
     * (index i is CONSTS entry i; the tensors are the graph's constants). */
    const uint8_t *plan_base;
    uint64_t plan_size;   /* bytes */
    kn_tensor **plan_consts;
    uint32_t n_plan_consts;
    /* Which CUDA program of a target-cuda decoder plan a backend runs: 0
     * the main one (the decode program), 1 the prefill program (sections
     * KN_SEC_CUP_*, META cuda.prefill.*; kn_plan_load_cuda_prefill), 2 + k
     * batched decode program k (KN_SEC_CUB(k), META cuda.batchK.*). */
    uint32_t cuda_program;
} kn_model_info;

typedef struct kn_strtab kn_strtab;
typedef struct kn_mapping kn_mapping;

/* A graph: the model's main graph (root) or a subgraph held by an
 * attribute. Subgraphs share the root's arena and string table. */
struct kn_graph {
    kn_graph *parent;   /* NULL for the root */
    kn_graph *root;
    kn_str name;
    const kn_allocator *alloc;
    kn_arena *arena;    /* shared with subgraphs; owned by the root */
    kn_strtab *strs;    /* shared with subgraphs; owned by the root */
    kn_model_info *info;/* root only */
    kn_mapping *maps;   /* root only: mmapped external files */

    kn_value *values;
    uint32_t n_values, cap_values;
    kn_node *nodes;     /* in topological order */
    uint32_t n_nodes, cap_nodes;
    kn_id *inputs;      /* value ids of KN_VAL_INPUT values, in order */
    uint32_t n_inputs;
    kn_id *outputs;     /* graph outputs, in order */
    uint32_t n_outputs;
    struct kn_graph **subgraphs; /* owned children, for teardown and walks */
    uint32_t n_subgraphs, cap_subgraphs;
    /* Root only: constant data shared with other graphs (kn_graph_clone).
     * data_owner: the graph whose arena and mappings hold constant data
     * this graph reads (its source), else NULL; n_borrowers: the clones
     * that read this graph's; destroy_pending: kn_graph_destroy was called
     * while clones still read it (it goes with the last of them). */
    struct kn_graph *data_owner;
    uint32_t n_borrowers;
    bool destroy_pending;
};

/* ---- building ---------------------------------------------------------------- */

/* Creates an empty root graph. Returns KN_ERR_NOMEM on failure. */
kn_status kn_graph_create(const kn_allocator *a, kn_graph **out);
/* Creates an empty subgraph of `parent`, owned by it. */
kn_status kn_graph_create_sub(kn_graph *parent, kn_graph **out);

/* Interns a string (len bytes, need not be NUL-terminated). */
kn_status kn_graph_intern(kn_graph *g, const char *s, size_t len, kn_str *out);
kn_status kn_graph_intern_cstr(kn_graph *g, const char *s, kn_str *out);

/* Appends a value; *id receives its id. The value's fields are copied. */
kn_status kn_graph_add_value(kn_graph *g, const kn_value *v, kn_id *id);
/* Appends a node (fields copied; arrays must live in g's arena). */
kn_status kn_graph_add_node(kn_graph *g, const kn_node *n, kn_id *id);

/* A deep copy of the root graph src (nodes, values, attributes, subgraphs,
 * model info; every name interned in the copy's own string table) whose
 * constants share their data with src by pointer: constant data must not
 * be changed in place by either graph once cloned (passes and lowering make
 * new constants rather than editing old ones). The two graphs are
 * otherwise independent and may be destroyed in either order: a source
 * destroyed while clones read its data is freed with the last of them. */
kn_status kn_graph_clone(kn_graph *src, kn_graph **out);

/* Registers a mapping to unmap when the graph is destroyed. */
kn_status kn_graph_add_mapping(kn_graph *g, void *addr, size_t len);

/* Takes ownership of a block from g's allocator; freed with the graph.
 * On failure the block is not adopted (caller still owns it). */
kn_status kn_graph_adopt(kn_graph *g, void *heap_block);

/* Removes the nodes marked in dead_nodes (may be NULL: none) and every
 * value nothing reads any more (inputs are kept), renumbering ids in g and
 * in its subgraphs' outer references. The outputs of removed nodes must be
 * unread or no longer KN_VAL_NODE. */
kn_status kn_graph_compact(kn_graph *g, const bool *dead_nodes);

/* Memory from the graph's arena (zeroed); NULL when out of memory. */
void *kn_graph_alloc(kn_graph *g, size_t size);
/* The same, not zeroed: for constant data the caller fills completely. */
void *kn_graph_alloc_uninit(kn_graph *g, size_t size);

/* The value an OUTER value finally refers to, and the graph that owns it. */
const kn_value *kn_value_resolve(const kn_graph *g, kn_id id, const kn_graph **owner);

/* ---- files ---- */

/* Whether kiln may write `path` by renaming a new file over it: yes when
 * nothing is there or a regular file (also through a symlink, which the
 * rename replaces rather than writes through); no for a device, pipe or
 * folder (/dev/null, /dev/stdout ...): KN_ERR_IO with a message. */
kn_status kn_check_output_path(const char *path, kn_diag *d);

/* ---- queries ----------------------------------------------------------------- */

/* Number of elements of a fully static shape; -1 if any dim is not static
 * or the count overflows int64. */
int64_t kn_shape_numel(const kn_shape *s);
/* Writes "[1, batch, ?, 3]" ("[*]" for unknown rank) into buf. */
void kn_shape_format(const kn_shape *s, char *buf, size_t size);
/* Writes "float32[1, 3]" / "seq(float32[?])" / "?" into buf. */
void kn_type_format(const kn_type *t, char *buf, size_t size);

/* Finds an attribute of a node by name; NULL if absent. */
const kn_attr *kn_node_attr(const kn_node *n, const char *name);
/* The node's INT attribute `name`, or def when it has none (or one of
 * another kind). */
int64_t kn_node_attr_int(const kn_node *n, const char *name, int64_t def);

/* Calls fn for the graph and every subgraph, depth first, parents first. */
void kn_graph_walk(const kn_graph *g, void (*fn)(const kn_graph *, int depth, void *), void *ctx);

#endif
