/* Shape inference (passes/infer_shapes.c) internals shared with the rules
 * that track the contents of shape vectors (passes/infer_shapes_sym.c). */
#ifndef KILN_PASSES_INFER_SHAPES_H
#define KILN_PASSES_INFER_SHAPES_H

#include "ir/ir.h"

/* The known contents of a small integer tensor (a shape vector or a
 * scalar computed from shapes): each element a number (any sign: -1 is a
 * Reshape's "the rest"), a symbolic dim, or KN_IS_SV_UNK. n < 0: not known. */
#define KN_IS_SV_MAX 16
#define KN_IS_SV_UNK INT64_MIN
typedef struct kn_is_symval {
    int32_t n;
    kn_dim d[KN_IS_SV_MAX];
} kn_is_symval;

typedef struct kn_is_ctx {
    kn_graph *g;
    const kn_node *n;
    kn_is_symval *sv; /* per value id of g, or NULL */
} kn_is_ctx;

const kn_type *kn_is_in_type(kn_is_ctx *c, uint32_t i);
/* Constant int64/int32 data of input i, or NULL. */
const kn_tensor *kn_is_in_const(kn_is_ctx *c, uint32_t i);
int64_t kn_is_const_at(const kn_tensor *t, int64_t i);
/* Sets output i (when the model did not declare it). */
kn_status kn_is_set_out(kn_is_ctx *c, uint32_t i, kn_dtype dt, int32_t rank, const kn_dim *dims);
kn_status kn_is_same_as_input(kn_is_ctx *c, uint32_t i);

static inline bool kn_is_has_in(const kn_node *n, uint32_t i) { return i < n->n_inputs && n->inputs[i] != KN_NONE; }
static inline bool kn_is_dim_eq(kn_dim a, kn_dim b)
{
    return a.value >= 0 ? a.value == b.value : (a.sym && a.sym == b.sym);
}

/* An element of a shape vector as a dim: numbers >= 0 and symbols; the
 * rest unknown. */
static inline kn_dim kn_is_sv_dim(kn_dim x) { return x.sym || x.value >= 0 ? x : (kn_dim){-1, NULL}; }

/* ---- passes/infer_shapes_sym.c ---- */
/* The contents of input i when known (tracked or a small constant). */
const kn_is_symval *kn_is_in_sv(kn_is_ctx *c, uint32_t i);
/* Records the contents of node c->n's output from its inputs'. */
void kn_is_track(kn_is_ctx *c);
/* Rules that use the contents of shape inputs. */
kn_status kn_is_reshape_sym(kn_is_ctx *c, const kn_type *t, const kn_is_symval *s);
kn_status kn_is_expand(kn_is_ctx *c);
kn_status kn_is_range(kn_is_ctx *c);
kn_status kn_is_slice(kn_is_ctx *c);
kn_status kn_is_reduce(kn_is_ctx *c);
kn_status kn_is_split(kn_is_ctx *c);

#endif
