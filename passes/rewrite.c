/* Shared rewriting helpers for the passes (see rewrite.h). */
#include "passes/rewrite.h"

#include <stdio.h>
#include <string.h>

kn_status kn_uses_init(kn_graph *g, kn_uses *u)
{
    memset(u, 0, sizeof *u);
    u->cap_readers = u->cap_pinned = g->n_values + 1;
    u->readers = kn_mem_alloc(g->alloc, ((size_t)g->n_values + 1) * sizeof *u->readers);
    u->pinned = kn_mem_alloc(g->alloc, (size_t)g->n_values + 1);
    u->dead = kn_mem_alloc(g->alloc, (size_t)g->n_nodes + 1);
    if (!u->readers || !u->pinned || !u->dead) {
        kn_uses_free(g, u);
        return KN_ERR_NOMEM;
    }
    memset(u->readers, 0, ((size_t)g->n_values + 1) * sizeof *u->readers);
    memset(u->pinned, 0, (size_t)g->n_values + 1);
    memset(u->dead, 0, (size_t)g->n_nodes + 1);
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE)
                u->readers[n->inputs[i]]++;
        for (uint32_t i = 0; i < n->n_attrs; i++) {
            const kn_attr *a = &n->attrs[i];
            uint32_t ng = a->kind == KN_ATTR_GRAPH ? 1 : a->kind == KN_ATTR_GRAPHS ? a->n : 0;
            for (uint32_t j = 0; j < ng; j++) {
                const kn_graph *sg = a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[j];
                for (kn_id v = 0; v < sg->n_values; v++)
                    if (sg->values[v].kind == KN_VAL_OUTER && sg->values[v].outer < g->n_values)
                        u->pinned[sg->values[v].outer] = true;
            }
        }
    }
    for (uint32_t i = 0; i < g->n_outputs; i++)
        u->pinned[g->outputs[i]] = true;
    return KN_OK;
}

void kn_uses_free(kn_graph *g, kn_uses *u)
{
    kn_mem_free(g->alloc, u->readers);
    kn_mem_free(g->alloc, u->pinned);
    kn_mem_free(g->alloc, u->dead);
    memset(u, 0, sizeof *u);
}

kn_status kn_uses_finish(kn_graph *g, kn_uses *u)
{
    kn_status s = kn_graph_compact(g, u->dead);
    kn_uses_free(g, u);
    return s;
}

void kn_rw_replace_uses(kn_graph *g, kn_uses *u, kn_id from, kn_id to)
{
    for (kn_id k = 0; k < g->n_nodes; k++) {
        kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] == from) {
                n->inputs[i] = to;
                u->readers[from]--;
                u->readers[to]++;
            }
    }
}

void kn_rw_orphan(kn_graph *g, kn_id v)
{
    kn_value *x = &g->values[v];
    x->kind = KN_VAL_CONST; /* not a node output; compaction drops it unread */
    x->tensor = NULL;
    x->producer = KN_NONE;
}

bool kn_rw_bypass(kn_graph *g, kn_uses *u, kn_id k, kn_id y, kn_id x)
{
    if (!u->pinned[y]) {
        kn_rw_replace_uses(g, u, y, x);
        u->dead[k] = true;
        return true;
    }
    /* y keeps its name: x's producer writes y, x's readers read y */
    kn_value *xv = &g->values[x];
    if (xv->kind != KN_VAL_NODE || u->pinned[x] || xv->producer == KN_NONE || u->dead[xv->producer])
        return false;
    kn_node *p = &g->nodes[xv->producer];
    p->outputs[xv->out_index] = y;
    g->values[y].producer = xv->producer;
    g->values[y].out_index = xv->out_index;
    kn_rw_replace_uses(g, u, x, y);
    kn_rw_orphan(g, x);
    u->dead[k] = true;
    return true;
}

kn_status kn_rw_unique_name(kn_graph *g, const char *base, kn_str *out)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", base);
    for (unsigned k = 1;; k++) {
        KN_TRY(kn_graph_intern_cstr(g, buf, out));
        bool used = false;
        for (kn_id v = 0; v < g->n_values && !used; v++)
            used = g->values[v].name == *out;
        if (!used)
            return KN_OK;
        snprintf(buf, sizeof buf, "%s_%u", base, k);
    }
}

kn_status kn_rw_add_const(kn_graph *g, kn_uses *u, const char *base, kn_dtype dt, int32_t rank, const int64_t *dims,
                          const void *data, size_t nbytes, kn_id *out)
{
    void *bytes = kn_graph_alloc_uninit(g, nbytes + 1);
    if (!bytes)
        return KN_ERR_NOMEM;
    memcpy(bytes, data, nbytes);
    return kn_rw_adopt_const(g, u, base, dt, rank, dims, bytes, nbytes, out);
}

kn_status kn_rw_adopt_const(kn_graph *g, kn_uses *u, const char *base, kn_dtype dt, int32_t rank,
                            const int64_t *dims, void *bytes, size_t nbytes, kn_id *out)
{
    kn_tensor *t = kn_graph_alloc(g, sizeof *t);
    kn_dim *sd = kn_graph_alloc(g, ((size_t)rank + 1) * sizeof *sd);
    int64_t *td = kn_graph_alloc(g, ((size_t)rank + 1) * sizeof *td);
    if (!t || !sd || !td)
        return KN_ERR_NOMEM;
    kn_value v = {0};
    KN_TRY(kn_rw_unique_name(g, base, &v.name));
    int64_t n = 1;
    for (int32_t i = 0; i < rank; i++) {
        td[i] = dims[i];
        sd[i] = (kn_dim){dims[i], NULL};
        n *= dims[i];
    }
    *t = (kn_tensor){v.name, dt, rank, td, n, nbytes, bytes, false, true};
    v.kind = KN_VAL_CONST;
    v.tensor = t;
    v.producer = KN_NONE;
    v.type.kind = KN_TYPE_TENSOR;
    v.type.dtype = dt;
    v.type.shape.rank = rank;
    v.type.shape.dims = sd;
    return kn_rw_add_value(g, u, &v, out);
}

kn_status kn_rw_add_value(kn_graph *g, kn_uses *u, const kn_value *v, kn_id *out)
{
    KN_TRY(kn_mem_grow(g->alloc, (void **)&u->readers, &u->cap_readers, g->n_values + 1, sizeof *u->readers));
    KN_TRY(kn_mem_grow(g->alloc, (void **)&u->pinned, &u->cap_pinned, g->n_values + 1, sizeof *u->pinned));
    u->readers[g->n_values] = 0;
    u->pinned[g->n_values] = false;
    return kn_graph_add_value(g, v, out);
}

const kn_tensor *kn_rw_const(const kn_graph *g, kn_id v)
{
    if (v == KN_NONE || v >= g->n_values || g->values[v].kind != KN_VAL_CONST)
        return NULL;
    return g->values[v].tensor;
}

bool kn_rw_const_ints(const kn_graph *g, kn_id v, int64_t *out, size_t cap, size_t *n)
{
    const kn_tensor *t = kn_rw_const(g, v);
    if (!t || (t->dtype != KN_I64 && t->dtype != KN_I32) || t->rank > 1 || (size_t)t->n_elems > cap)
        return false;
    for (int64_t i = 0; i < t->n_elems; i++) {
        if (t->dtype == KN_I64) {
            memcpy(&out[i], (const char *)t->data + 8 * i, 8);
        } else {
            int32_t x;
            memcpy(&x, (const char *)t->data + 4 * i, 4);
            out[i] = x;
        }
    }
    *n = (size_t)t->n_elems;
    return true;
}

const kn_type *kn_rw_type(const kn_graph *g, kn_id v)
{
    if (v == KN_NONE)
        return NULL;
    const kn_value *x = kn_value_resolve(g, v, NULL);
    return x && x->type.kind == KN_TYPE_TENSOR && x->type.dtype != KN_UNDEFINED ? &x->type : NULL;
}

bool kn_rw_has_subgraph(const kn_node *n)
{
    for (uint32_t i = 0; i < n->n_attrs; i++)
        if (n->attrs[i].kind == KN_ATTR_GRAPH || n->attrs[i].kind == KN_ATTR_GRAPHS)
            return true;
    return false;
}

kn_status kn_rw_set_attr(kn_graph *g, kn_node *n, const kn_attr *a)
{
    kn_attr *attrs = kn_graph_alloc(g, ((size_t)n->n_attrs + 1) * sizeof *attrs);
    if (!attrs)
        return KN_ERR_NOMEM;
    uint32_t m = 0;
    for (uint32_t i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, a->name) != 0)
            attrs[m++] = n->attrs[i];
    attrs[m++] = *a;
    n->attrs = attrs;
    n->n_attrs = m;
    return KN_OK;
}

const char *kn_rw_get_meta(const kn_graph *g, const char *key)
{
    const kn_model_info *m = g->root ? g->root->info : g->info;
    for (uint32_t i = 0; m && i < m->n_metadata; i++)
        if (strcmp(m->metadata[i].key, key) == 0)
            return m->metadata[i].value;
    return NULL;
}

kn_status kn_rw_set_meta(kn_graph *g, const char *key, const char *value)
{
    kn_graph *r = g->root ? g->root : g;
    kn_model_info *m = r->info;
    if (!m)
        return KN_ERR_INTERNAL;
    kn_str v;
    KN_TRY(kn_graph_intern_cstr(r, value, &v));
    for (uint32_t i = 0; i < m->n_metadata; i++)
        if (strcmp(m->metadata[i].key, key) == 0) {
            m->metadata[i].value = v;
            return KN_OK;
        }
    kn_kv *kv = kn_graph_alloc(r, ((size_t)m->n_metadata + 1) * sizeof *kv);
    if (!kv)
        return KN_ERR_NOMEM;
    if (m->n_metadata)
        memcpy(kv, m->metadata, m->n_metadata * sizeof *kv);
    KN_TRY(kn_graph_intern_cstr(r, key, &kv[m->n_metadata].key));
    kv[m->n_metadata].value = v;
    m->metadata = kv;
    m->n_metadata++;
    return KN_OK;
}
