/* kn_graph_clone: a deep copy of a root graph whose constants share their
 * data with the source (kiln compile --target cuda lowers one optimized
 * decoder graph twice, for prefill and decode, without a second import
 * and pipeline run). Names are interned in the copy's own string table,
 * so kn_str pointer equality holds within each graph. */
#include "ir/ir.h"

#include <stdint.h>
#include <string.h>

/* Source tensor -> its copy: open addressing over pointers, so a tensor
 * two values (or a value and an attribute) share stays shared. */
typedef struct tmap {
    const kn_tensor **from;
    kn_tensor **to;
    uint32_t cap; /* power of two */
} tmap;

typedef struct cloner {
    kn_graph *dst; /* the copy's root */
    const kn_allocator *a;
    tmap tm;
} cloner;

static uint32_t ptr_hash(const void *p, uint32_t cap)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32) & (cap - 1);
}

static kn_status istr(cloner *c, kn_str s, kn_str *out)
{
    if (!s) {
        *out = NULL;
        return KN_OK;
    }
    return kn_graph_intern_cstr(c->dst, s, out);
}

static void *dup(cloner *c, const void *src, size_t n)
{
    void *p = kn_graph_alloc_uninit(c->dst, n ? n : 1);
    if (p && n)
        memcpy(p, src, n);
    return p;
}

static uint32_t count_tensors(const kn_graph *g)
{
    uint64_t n = 0;
    for (kn_id v = 0; v < g->n_values; v++)
        n += g->values[v].tensor != NULL;
    for (kn_id k = 0; k < g->n_nodes; k++)
        for (uint32_t i = 0; i < g->nodes[k].n_attrs; i++) {
            const kn_attr *at = &g->nodes[k].attrs[i];
            n += at->kind == KN_ATTR_TENSOR ? 1 : at->kind == KN_ATTR_TENSORS ? at->n : 0;
        }
    for (uint32_t i = 0; i < g->n_subgraphs; i++)
        n += count_tensors(g->subgraphs[i]);
    return n > UINT32_MAX / 4 ? UINT32_MAX / 4 : (uint32_t)n;
}

static kn_status copy_type(cloner *c, const kn_type *s, kn_type *d, int depth)
{
    if (depth > 64)
        return KN_ERR_LIMIT;
    *d = *s;
    d->shape.dims = NULL;
    d->elem = NULL;
    if (s->shape.rank > 0 && s->shape.dims) {
        d->shape.dims = kn_graph_alloc(c->dst, (size_t)s->shape.rank * sizeof *d->shape.dims);
        if (!d->shape.dims)
            return KN_ERR_NOMEM;
        for (int32_t i = 0; i < s->shape.rank; i++) {
            d->shape.dims[i].value = s->shape.dims[i].value;
            KN_TRY(istr(c, s->shape.dims[i].sym, &d->shape.dims[i].sym));
        }
    }
    if (s->elem) {
        d->elem = kn_graph_alloc(c->dst, sizeof *d->elem);
        if (!d->elem)
            return KN_ERR_NOMEM;
        KN_TRY(copy_type(c, s->elem, d->elem, depth + 1));
    }
    return KN_OK;
}

/* The copy of tensor t (made once; its data stays t's). */
static kn_status copy_tensor(cloner *c, const kn_tensor *t, kn_tensor **out)
{
    *out = NULL;
    if (!t)
        return KN_OK;
    tmap *m = &c->tm;
    uint32_t j = ptr_hash(t, m->cap);
    while (m->from[j]) {
        if (m->from[j] == t) {
            *out = m->to[j];
            return KN_OK;
        }
        j = (j + 1) & (m->cap - 1);
    }
    kn_tensor *d = kn_graph_alloc(c->dst, sizeof *d);
    if (!d)
        return KN_ERR_NOMEM;
    *d = *t;
    d->owned = false; /* the data stays the source's */
    KN_TRY(istr(c, t->name, &d->name));
    d->dims = NULL;
    if (t->dims) {
        d->dims = dup(c, t->dims, (size_t)(t->rank > 0 ? t->rank : 0) * sizeof *t->dims);
        if (!d->dims)
            return KN_ERR_NOMEM;
    }
    m->from[j] = t;
    m->to[j] = d;
    *out = d;
    return KN_OK;
}

static kn_status copy_bytes(cloner *c, const kn_bytes *s, kn_bytes *d)
{
    d->len = s->len;
    d->data = NULL;
    if (!s->data)
        return KN_OK;
    if (s->len == SIZE_MAX)
        return KN_ERR_LIMIT;
    /* NUL-terminated, as the importer's are (readers take them as C strings) */
    uint8_t *p = kn_graph_alloc(c->dst, s->len + 1);
    if (!p)
        return KN_ERR_NOMEM;
    memcpy(p, s->data, s->len);
    d->data = p;
    return KN_OK;
}

/* The copy of subgraph sg of src (the i-th of src's subgraphs is dst's). */
static kn_status map_sub(const kn_graph *src, kn_graph *dst, const kn_graph *sg, kn_graph **out)
{
    for (uint32_t i = 0; i < src->n_subgraphs; i++)
        if (src->subgraphs[i] == sg) {
            *out = dst->subgraphs[i];
            return KN_OK;
        }
    return KN_ERR_INTERNAL; /* an attribute's graph that its graph does not own */
}

static kn_status copy_attr(cloner *c, const kn_graph *src, kn_graph *dst, const kn_attr *s, kn_attr *d)
{
    *d = *s;
    KN_TRY(istr(c, s->name, &d->name));
    uint32_t n = s->n;
    switch (s->kind) {
    case KN_ATTR_UNDEFINED:
    case KN_ATTR_FLOAT:
    case KN_ATTR_INT:
    case KN_ATTR_KIND_COUNT:
        return KN_OK;
    case KN_ATTR_STRING:
        return copy_bytes(c, &s->u.s, &d->u.s);
    case KN_ATTR_TENSOR:
        return copy_tensor(c, s->u.t, &d->u.t);
    case KN_ATTR_GRAPH:
        return s->u.g ? map_sub(src, dst, s->u.g, &d->u.g) : KN_OK;
    case KN_ATTR_TYPE:
        if (!s->u.tp)
            return KN_OK;
        if (!(d->u.tp = kn_graph_alloc(c->dst, sizeof *d->u.tp)))
            return KN_ERR_NOMEM;
        return copy_type(c, s->u.tp, d->u.tp, 0);
    case KN_ATTR_FLOATS:
        d->u.floats = s->u.floats ? dup(c, s->u.floats, (size_t)n * sizeof *s->u.floats) : NULL;
        return !s->u.floats || d->u.floats ? KN_OK : KN_ERR_NOMEM;
    case KN_ATTR_INTS:
        d->u.ints = s->u.ints ? dup(c, s->u.ints, (size_t)n * sizeof *s->u.ints) : NULL;
        return !s->u.ints || d->u.ints ? KN_OK : KN_ERR_NOMEM;
    default:
        break;
    }
    /* the list kinds of pointers or byte strings */
    if (!s->u.strings) /* the union's pointers are alike: NULL list */
        return KN_OK;
    if (s->kind == KN_ATTR_STRINGS) {
        if (!(d->u.strings = kn_graph_alloc(c->dst, (size_t)n * sizeof *d->u.strings)))
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++)
            KN_TRY(copy_bytes(c, &s->u.strings[i], &d->u.strings[i]));
    } else if (s->kind == KN_ATTR_TENSORS) {
        if (!(d->u.tensors = kn_graph_alloc(c->dst, (size_t)n * sizeof *d->u.tensors)))
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++)
            KN_TRY(copy_tensor(c, s->u.tensors[i], &d->u.tensors[i]));
    } else if (s->kind == KN_ATTR_GRAPHS) {
        if (!(d->u.graphs = kn_graph_alloc(c->dst, (size_t)n * sizeof *d->u.graphs)))
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++)
            if (s->u.graphs[i])
                KN_TRY(map_sub(src, dst, s->u.graphs[i], &d->u.graphs[i]));
    } else if (s->kind == KN_ATTR_TYPES) {
        if (!(d->u.types = kn_graph_alloc(c->dst, (size_t)n * sizeof *d->u.types)))
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            if (!s->u.types[i])
                continue;
            if (!(d->u.types[i] = kn_graph_alloc(c->dst, sizeof *d->u.types[i])))
                return KN_ERR_NOMEM;
            KN_TRY(copy_type(c, s->u.types[i], d->u.types[i], 0));
        }
    }
    return KN_OK;
}

static kn_status copy_ids(cloner *c, const kn_id *s, uint32_t n, kn_id **d)
{
    *d = NULL;
    if (!s)
        return KN_OK;
    *d = dup(c, s, (size_t)n * sizeof *s);
    return *d ? KN_OK : KN_ERR_NOMEM;
}

/* Copies graph src into the empty dst (root or subgraph). */
static kn_status copy_graph(cloner *c, const kn_graph *src, kn_graph *dst, int depth)
{
    if (depth > 64)
        return KN_ERR_LIMIT;
    KN_TRY(istr(c, src->name, &dst->name));
    /* subgraphs first, in src's order, so attributes can point at them */
    for (uint32_t i = 0; i < src->n_subgraphs; i++) {
        kn_graph *sg;
        KN_TRY(kn_graph_create_sub(dst, &sg));
        KN_TRY(copy_graph(c, src->subgraphs[i], sg, depth + 1));
    }
    if (src->n_values) {
        dst->values = kn_mem_alloc(c->a, (size_t)src->n_values * sizeof *dst->values);
        if (!dst->values)
            return KN_ERR_NOMEM;
        dst->cap_values = src->n_values;
        for (kn_id v = 0; v < src->n_values; v++) {
            const kn_value *s = &src->values[v];
            kn_value *d = &dst->values[v];
            *d = *s;
            d->name = NULL;
            d->type.shape.dims = NULL;
            d->type.elem = NULL;
            d->tensor = NULL;
            dst->n_values = v + 1;
            KN_TRY(istr(c, s->name, &d->name));
            KN_TRY(copy_type(c, &s->type, &d->type, 0));
            KN_TRY(copy_tensor(c, s->tensor, &d->tensor));
        }
    }
    if (src->n_nodes) {
        dst->nodes = kn_mem_alloc(c->a, (size_t)src->n_nodes * sizeof *dst->nodes);
        if (!dst->nodes)
            return KN_ERR_NOMEM;
        dst->cap_nodes = src->n_nodes;
        for (kn_id k = 0; k < src->n_nodes; k++) {
            const kn_node *s = &src->nodes[k];
            kn_node *d = &dst->nodes[k];
            memset(d, 0, sizeof *d);
            dst->n_nodes = k + 1;
            d->op = s->op;
            d->opset = s->opset;
            KN_TRY(istr(c, s->name, &d->name));
            KN_TRY(istr(c, s->op_type, &d->op_type));
            KN_TRY(istr(c, s->domain, &d->domain));
            KN_TRY(istr(c, s->function, &d->function));
            KN_TRY(copy_ids(c, s->inputs, s->n_inputs, &d->inputs));
            d->n_inputs = s->n_inputs;
            KN_TRY(copy_ids(c, s->outputs, s->n_outputs, &d->outputs));
            d->n_outputs = s->n_outputs;
            if (s->attrs) {
                d->attrs = kn_graph_alloc(dst, (size_t)s->n_attrs * sizeof *d->attrs);
                if (!d->attrs)
                    return KN_ERR_NOMEM;
                for (uint32_t i = 0; i < s->n_attrs; i++)
                    KN_TRY(copy_attr(c, src, dst, &s->attrs[i], &d->attrs[i]));
            }
            d->n_attrs = s->n_attrs;
        }
    }
    KN_TRY(copy_ids(c, src->inputs, src->n_inputs, &dst->inputs));
    dst->n_inputs = src->n_inputs;
    KN_TRY(copy_ids(c, src->outputs, src->n_outputs, &dst->outputs));
    dst->n_outputs = src->n_outputs;
    return KN_OK;
}

static kn_status copy_info(cloner *c, const kn_model_info *s, kn_model_info *d)
{
    *d = *s;
    d->opsets = NULL;
    d->metadata = NULL;
    d->plan_consts = NULL;
    KN_TRY(istr(c, s->path, &d->path));
    KN_TRY(istr(c, s->producer_name, &d->producer_name));
    KN_TRY(istr(c, s->producer_version, &d->producer_version));
    KN_TRY(istr(c, s->domain, &d->domain));
    KN_TRY(istr(c, s->doc, &d->doc));
    if (s->opsets) {
        if (!(d->opsets = kn_graph_alloc(c->dst, (size_t)s->n_opsets * sizeof *d->opsets)))
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < s->n_opsets; i++) {
            d->opsets[i].version = s->opsets[i].version;
            KN_TRY(istr(c, s->opsets[i].domain, &d->opsets[i].domain));
        }
    }
    if (s->metadata) {
        if (!(d->metadata = kn_graph_alloc(c->dst, (size_t)s->n_metadata * sizeof *d->metadata)))
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < s->n_metadata; i++) {
            KN_TRY(istr(c, s->metadata[i].key, &d->metadata[i].key));
            KN_TRY(istr(c, s->metadata[i].value, &d->metadata[i].value));
        }
    }
    /* plan_base stays the source's bytes (its mapping lives while the copy
     * reads it); the CONSTS table points at the copy's tensors */
    if (s->plan_consts) {
        if (!(d->plan_consts = kn_graph_alloc(c->dst, (size_t)s->n_plan_consts * sizeof *d->plan_consts)))
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < s->n_plan_consts; i++)
            KN_TRY(copy_tensor(c, s->plan_consts[i], &d->plan_consts[i]));
    }
    return KN_OK;
}

kn_status kn_graph_clone(kn_graph *src, kn_graph **out)
{
    *out = NULL;
    if (!src || src->parent || src->destroy_pending || src->n_borrowers == UINT32_MAX)
        return KN_ERR_INVALID;
    cloner c;
    memset(&c, 0, sizeof c);
    c.a = src->alloc;
    uint64_t want = (uint64_t)count_tensors(src) + (src->info ? src->info->n_plan_consts : 0);
    uint32_t cap = 16;
    while (cap < 2 * want && cap < (1u << 31))
        cap *= 2;
    if (cap < 2 * want)
        return KN_ERR_LIMIT;
    c.tm.cap = cap;
    c.tm.from = kn_mem_alloc(c.a, (size_t)cap * sizeof *c.tm.from);
    c.tm.to = kn_mem_alloc(c.a, (size_t)cap * sizeof *c.tm.to);
    kn_status s = c.tm.from && c.tm.to ? KN_OK : KN_ERR_NOMEM;
    if (s == KN_OK) {
        memset(c.tm.from, 0, (size_t)cap * sizeof *c.tm.from);
        s = kn_graph_create(c.a, &c.dst);
    }
    if (s == KN_OK)
        s = copy_graph(&c, src, c.dst, 0);
    if (s == KN_OK && src->info)
        s = copy_info(&c, src->info, c.dst->info);
    kn_mem_free(c.a, c.tm.from);
    kn_mem_free(c.a, c.tm.to);
    if (s != KN_OK) {
        kn_graph_destroy(c.dst);
        return s;
    }
    c.dst->data_owner = src;
    src->n_borrowers++;
    *out = c.dst;
    return KN_OK;
}
