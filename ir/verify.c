/* kn_graph_verify: the IR's invariants. Values are defined once (SSA),
 * nodes are in topological order (so there is no cycle), every id is in
 * range, every edge agrees from both ends, types are well-formed. */
#include "ir/ir.h"

#include <stdlib.h>
#include <string.h>

typedef struct vctx {
    kn_diag *diag;
    const char *file;
    size_t errors;
    bool nomem;
} vctx;

#define VERR(vc, ...) (kn_diag_add((vc)->diag, KN_ERROR, __VA_ARGS__), (vc)->errors++)

static void check_type(vctx *vc, const kn_graph *g, const kn_value *v, const kn_type *t, int depth)
{
    if (depth > 32) {
        VERR(vc, "%s: graph '%s': value '%s': type nested too deeply", vc->file, g->name, v->name);
        return;
    }
    switch (t->kind) {
    case KN_TYPE_UNKNOWN:
        return;
    case KN_TYPE_TENSOR:
    case KN_TYPE_SPARSE_TENSOR:
        if (t->dtype != KN_UNDEFINED && !kn_dtype_valid(t->dtype))
            VERR(vc, "%s: graph '%s': value '%s': invalid dtype %d", vc->file, g->name, v->name, (int)t->dtype);
        if (t->shape.rank < -1 || t->shape.rank > 64 || (t->shape.rank > 0 && !t->shape.dims)) {
            VERR(vc, "%s: graph '%s': value '%s': invalid rank %d", vc->file, g->name, v->name, (int)t->shape.rank);
            return;
        }
        for (int32_t i = 0; i < t->shape.rank; i++)
            if (t->shape.dims[i].value < -1 || (t->shape.dims[i].value >= 0 && t->shape.dims[i].sym))
                VERR(vc, "%s: graph '%s': value '%s': dimension %d is malformed", vc->file, g->name, v->name, (int)i);
        return;
    case KN_TYPE_SEQUENCE:
    case KN_TYPE_OPTIONAL:
    case KN_TYPE_MAP:
        if (!t->elem)
            VERR(vc, "%s: graph '%s': value '%s': container type without an element type", vc->file, g->name, v->name);
        else
            check_type(vc, g, v, t->elem, depth + 1);
        return;
    }
    VERR(vc, "%s: graph '%s': value '%s': invalid type kind %d", vc->file, g->name, v->name, (int)t->kind);
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const char *const *)a, y = (uintptr_t) * (const char *const *)b;
    return x < y ? -1 : x > y;
}

static void verify_graph(vctx *vc, const kn_graph *g, int depth)
{
    const char *gn = g->name ? g->name : "";
    if (depth > 1024) {
        VERR(vc, "%s: graph '%s': nested too deeply", vc->file, gn);
        return;
    }
    /* values */
    for (kn_id id = 0; id < g->n_values; id++) {
        const kn_value *v = &g->values[id];
        if (!v->name) {
            VERR(vc, "%s: graph '%s': value #%u has no name", vc->file, gn, id);
            continue;
        }
        switch (v->kind) {
        case KN_VAL_NODE:
            if (v->producer >= g->n_nodes || v->out_index >= g->nodes[v->producer].n_outputs ||
                g->nodes[v->producer].outputs[v->out_index] != id)
                VERR(vc, "%s: graph '%s': value '%s' is dangling: its producer does not list it as an output",
                     vc->file, gn, v->name);
            break;
        case KN_VAL_CONST:
            if (!v->tensor)
                VERR(vc, "%s: graph '%s': constant '%s' has no data", vc->file, gn, v->name);
            else if (v->type.kind != KN_TYPE_TENSOR || v->type.dtype != v->tensor->dtype ||
                     v->type.shape.rank != v->tensor->rank)
                VERR(vc, "%s: graph '%s': constant '%s': type does not match its tensor", vc->file, gn, v->name);
            else if (v->tensor->n_elems > 0 && !v->tensor->data && v->tensor->dtype != KN_STRING)
                VERR(vc, "%s: graph '%s': constant '%s' has no data", vc->file, gn, v->name);
            break;
        case KN_VAL_OUTER:
            if (!g->parent || v->outer >= g->parent->n_values || g->parent->values[v->outer].name != v->name)
                VERR(vc, "%s: graph '%s': outer reference '%s' does not resolve in the enclosing graph", vc->file, gn,
                     v->name);
            break;
        case KN_VAL_INPUT: {
            bool listed = false;
            for (uint32_t i = 0; i < g->n_inputs && !listed; i++)
                listed = g->inputs[i] == id;
            if (!listed)
                VERR(vc, "%s: graph '%s': input value '%s' is not among the graph's inputs", vc->file, gn, v->name);
            break;
        }
        default:
            VERR(vc, "%s: graph '%s': value '%s' has invalid kind %d", vc->file, gn, v->name, (int)v->kind);
        }
        check_type(vc, g, v, &v->type, 0);
    }
    /* duplicate names */
    if (g->n_values > 1) {
        kn_str *names = kn_mem_alloc(g->alloc, (size_t)g->n_values * sizeof *names);
        if (!names) {
            VERR(vc, "%s: out of memory while verifying", vc->file);
            vc->nomem = true;
        } else {
            for (kn_id i = 0; i < g->n_values; i++)
                names[i] = g->values[i].name;
            qsort(names, g->n_values, sizeof *names, cmp_ptr);
            for (kn_id i = 1; i < g->n_values; i++)
                if (names[i] && names[i] == names[i - 1])
                    VERR(vc, "%s: graph '%s': value '%s' is defined more than once", vc->file, gn, names[i]);
            kn_mem_free(g->alloc, names);
        }
    }
    /* graph inputs / outputs */
    for (uint32_t i = 0; i < g->n_inputs; i++)
        if (g->inputs[i] >= g->n_values || g->values[g->inputs[i]].kind != KN_VAL_INPUT)
            VERR(vc, "%s: graph '%s': input #%u is not an input value", vc->file, gn, i);
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] >= g->n_values)
            VERR(vc, "%s: graph '%s': output #%u refers to no value", vc->file, gn, i);
    /* nodes, in order: inputs must already be defined (no cycles) */
    for (kn_id nid = 0; nid < g->n_nodes; nid++) {
        const kn_node *n = &g->nodes[nid];
        const char *nn = n->name ? n->name : "";
        const char *op = n->op_type ? n->op_type : "";
        if ((unsigned)n->op >= KN_OP_COUNT) {
            VERR(vc, "%s: node '%s' (%s): invalid op id", vc->file, nn, op);
            continue;
        }
        if (n->op != KN_OP_UNSUPPORTED) {
            const kn_op_info *oi = kn_op_get(n->op);
            if (!n->op_type || strcmp(oi->name, n->op_type) != 0 || oi->domain != kn_domain_of(n->domain) ||
                n->opset < oi->first_opset || n->opset > oi->last_opset)
                VERR(vc, "%s: node '%s' (%s, opset %lld): op id does not match op type, domain or opset", vc->file, nn,
                     op, (long long)n->opset);
        }
        for (uint32_t i = 0; i < n->n_inputs; i++) {
            kn_id in = n->inputs[i];
            if (in == KN_NONE)
                continue;
            if (in >= g->n_values) {
                VERR(vc, "%s: node '%s' (%s): input %u refers to no value", vc->file, nn, op, i);
                continue;
            }
            const kn_value *v = &g->values[in];
            if (v->kind == KN_VAL_NODE && v->producer >= nid)
                VERR(vc, "%s: node '%s' (%s): input '%s' is produced %s (cycle or misordered nodes)", vc->file, nn, op,
                     v->name, v->producer == nid ? "by the node itself" : "by a later node");
        }
        for (uint32_t i = 0; i < n->n_outputs; i++) {
            kn_id o = n->outputs[i];
            if (o == KN_NONE)
                continue;
            if (o >= g->n_values || g->values[o].kind != KN_VAL_NODE || g->values[o].producer != nid ||
                g->values[o].out_index != i)
                VERR(vc, "%s: node '%s' (%s): output %u does not name this node as its producer", vc->file, nn, op, i);
        }
        for (uint32_t i = 0; i < n->n_attrs; i++) {
            const kn_attr *a = &n->attrs[i];
            if (!a->name || a->kind <= KN_ATTR_UNDEFINED || a->kind >= KN_ATTR_KIND_COUNT) {
                VERR(vc, "%s: node '%s' (%s): attribute %u is malformed", vc->file, nn, op, i);
                continue;
            }
            uint32_t ng = a->kind == KN_ATTR_GRAPH ? 1 : a->kind == KN_ATTR_GRAPHS ? a->n : 0;
            for (uint32_t k = 0; k < ng; k++) {
                const kn_graph *sg = a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[k];
                if (!sg || sg->parent != g) {
                    VERR(vc, "%s: node '%s' (%s): attribute '%s' holds a subgraph of another graph", vc->file, nn, op,
                         a->name);
                    continue;
                }
                verify_graph(vc, sg, depth + 1);
            }
        }
    }
}

kn_status kn_graph_verify(const kn_graph *g, kn_diag *diag)
{
    if (!g)
        return KN_ERR_INVALID;
    vctx vc = {diag, g->root && g->root->info && g->root->info->path ? g->root->info->path : "<graph>", 0, false};
    verify_graph(&vc, g, 0);
    return vc.nomem ? KN_ERR_NOMEM : vc.errors ? KN_ERR_INVALID : KN_OK;
}
