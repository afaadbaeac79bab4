/* Helpers the passes share for rewriting a graph in place: who reads a
 * value, rewiring readers, making constants and names. Root graph values
 * only; a value a subgraph reads (an OUTER reference names it) or a graph
 * output is "pinned": its name must stay. */
#ifndef KILN_PASSES_REWRITE_H
#define KILN_PASSES_REWRITE_H

#include "ir/ir.h"

typedef struct kn_uses {
    uint32_t *readers; /* per value id: node inputs that read it */
    bool *pinned;      /* per value id: a graph output or read by a subgraph */
    bool *dead;        /* per node id: to remove at kn_uses_finish */
    uint32_t cap_readers, cap_pinned; /* capacities (values added by a pass grow them) */
} kn_uses;

/* Counts readers of every value of g (allocated from g's allocator). */
kn_status kn_uses_init(kn_graph *g, kn_uses *u);
/* Compacts g (removing the dead nodes and unread values) and frees u. */
kn_status kn_uses_finish(kn_graph *g, kn_uses *u);
void kn_uses_free(kn_graph *g, kn_uses *u);

/* Makes every node input that reads `from` read `to` (counts updated). */
void kn_rw_replace_uses(kn_graph *g, kn_uses *u, kn_id from, kn_id to);

/* Removes node k whose output `y` equals its input `x` (same dtype and
 * shape): readers of y read x, or, when y is pinned, x's producer writes
 * y directly. False (nothing changed) when neither is possible. */
bool kn_rw_bypass(kn_graph *g, kn_uses *u, kn_id k, kn_id y, kn_id x);

/* Makes value `v` no longer a node output (its producer no longer lists
 * it), so compaction drops it once nothing reads it. */
void kn_rw_orphan(kn_graph *g, kn_id v);

/* A name not used by any value of g: base, else base_1, base_2, ... */
kn_status kn_rw_unique_name(kn_graph *g, const char *base, kn_str *out);

/* Adds a constant value holding a copy of data (nbytes) with the given
 * dtype and dims; the tensor lives in g's arena. g->values may move. */
kn_status kn_rw_add_const(kn_graph *g, kn_uses *u, const char *base, kn_dtype dt, int32_t rank, const int64_t *dims,
                          const void *data, size_t nbytes, kn_id *out);
/* The same without the copy: `bytes` (nbytes) must come from g's arena
 * (kn_graph_alloc / kn_graph_alloc_uninit) and becomes the tensor's data. */
kn_status kn_rw_adopt_const(kn_graph *g, kn_uses *u, const char *base, kn_dtype dt, int32_t rank,
                            const int64_t *dims, void *bytes, size_t nbytes, kn_id *out);

/* The constant tensor of value v of g (not through OUTER), or NULL. */
/* Adds value v to g (kn_graph_add_value) with u's reader counts and pins
 * grown to cover it (no readers, not pinned). */
kn_status kn_rw_add_value(kn_graph *g, kn_uses *u, const kn_value *v, kn_id *out);

const kn_tensor *kn_rw_const(const kn_graph *g, kn_id v);
/* Constant integer vector (int64/int32) of value v: *n elements into
 * out (at most cap); false if not such a constant. */
bool kn_rw_const_ints(const kn_graph *g, kn_id v, int64_t *out, size_t cap, size_t *n);
/* Whether node input i is present. */
static inline bool kn_rw_has_in(const kn_node *n, uint32_t i) { return i < n->n_inputs && n->inputs[i] != KN_NONE; }
/* The tensor type of value v, or NULL when it is not a known tensor. */
const kn_type *kn_rw_type(const kn_graph *g, kn_id v);
/* Whether g's declared shapes can be trusted for rewriting: the main
 * graph's are checked against the inputs at run time, subgraphs' are often
 * loose in exported models (dtypes are trusted everywhere). */
static inline bool kn_rw_shapes_trusted(const kn_graph *g) { return g->parent == NULL; }
/* Whether node n holds a subgraph. */
bool kn_rw_has_subgraph(const kn_node *n);
/* Replaces (or adds) an attribute of node n; the attrs array is copied
 * into the arena. */
kn_status kn_rw_set_attr(kn_graph *g, kn_node *n, const kn_attr *a);

/* Model metadata of the root graph (written to the plan as meta.KEY):
 * the value of `key`, or NULL; setting replaces or appends (strings
 * interned). */
const char *kn_rw_get_meta(const kn_graph *g, const char *key);
kn_status kn_rw_set_meta(kn_graph *g, const char *key, const char *value);

#endif
