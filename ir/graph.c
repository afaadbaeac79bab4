/* Graph construction and teardown, string interning, small queries. */
#include "ir/ir.h"

#include <inttypes.h>
#include <string.h>
#include <sys/mman.h>

/* ---- string table: open addressing over interned pointers ---- */

struct kn_strtab {
    const kn_allocator *a;
    kn_arena *arena;
    const char **slots;
    uint32_t cap, n;
};

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static kn_status strtab_rehash(kn_strtab *t)
{
    uint32_t ncap = t->cap ? t->cap * 2 : 256;
    if (ncap < t->cap)
        return KN_ERR_LIMIT;
    const char **ns = kn_mem_alloc(t->a, (size_t)ncap * sizeof *ns);
    if (!ns)
        return KN_ERR_NOMEM;
    memset(ns, 0, (size_t)ncap * sizeof *ns);
    for (uint32_t i = 0; i < t->cap; i++) {
        const char *s = t->slots[i];
        if (!s)
            continue;
        uint32_t j = (uint32_t)hash_bytes(s, strlen(s)) & (ncap - 1);
        while (ns[j])
            j = (j + 1) & (ncap - 1);
        ns[j] = s;
    }
    kn_mem_free(t->a, t->slots);
    t->slots = ns;
    t->cap = ncap;
    return KN_OK;
}

static kn_status strtab_intern(kn_strtab *t, const char *s, size_t len, kn_str *out)
{
    if ((t->n + 1) * 2 > t->cap)
        KN_TRY(strtab_rehash(t));
    uint32_t j = (uint32_t)hash_bytes(s, len) & (t->cap - 1);
    while (t->slots[j]) {
        const char *c = t->slots[j];
        if (strncmp(c, s, len) == 0 && c[len] == '\0' && memchr(s, 0, len) == NULL) {
            *out = c;
            return KN_OK;
        }
        j = (j + 1) & (t->cap - 1);
    }
    if (len == SIZE_MAX)
        return KN_ERR_LIMIT;
    char *c = kn_arena_alloc(t->arena, len + 1);
    if (!c)
        return KN_ERR_NOMEM;
    memcpy(c, s, len);
    c[len] = '\0';
    t->slots[j] = c;
    t->n++;
    *out = c;
    return KN_OK;
}

/* ---- graphs ---- */

/* Memory the graph owns besides its arena: file mappings (len > 0,
 * unmapped) and heap blocks adopted from the decoder (len == 0, freed). */
struct kn_mapping {
    kn_mapping *next;
    void *addr;
    size_t len;
};

kn_status kn_graph_create(const kn_allocator *a, kn_graph **out)
{
    *out = NULL;
    if (!a)
        a = kn_default_allocator();
    kn_graph *g = kn_mem_alloc(a, sizeof *g);
    if (!g)
        return KN_ERR_NOMEM;
    memset(g, 0, sizeof *g);
    g->alloc = a;
    g->root = g;
    g->arena = kn_arena_create(a);
    g->strs = kn_mem_alloc(a, sizeof *g->strs);
    if (!g->arena || !g->strs) {
        kn_arena_destroy(g->arena);
        kn_mem_free(a, g->strs);
        kn_mem_free(a, g);
        return KN_ERR_NOMEM;
    }
    memset(g->strs, 0, sizeof *g->strs);
    g->strs->a = a;
    g->strs->arena = g->arena;
    g->info = kn_arena_alloc(g->arena, sizeof *g->info);
    if (!g->info) {
        kn_graph_destroy(g);
        return KN_ERR_NOMEM;
    }
    *out = g;
    return KN_OK;
}

kn_status kn_graph_create_sub(kn_graph *parent, kn_graph **out)
{
    *out = NULL;
    const kn_allocator *a = parent->alloc;
    KN_TRY(kn_mem_grow(a, (void **)&parent->subgraphs, &parent->cap_subgraphs,
                       parent->n_subgraphs + 1, sizeof *parent->subgraphs));
    kn_graph *g = kn_mem_alloc(a, sizeof *g);
    if (!g)
        return KN_ERR_NOMEM;
    memset(g, 0, sizeof *g);
    g->parent = parent;
    g->root = parent->root;
    g->alloc = a;
    g->arena = parent->arena;
    g->strs = parent->strs;
    parent->subgraphs[parent->n_subgraphs++] = g;
    *out = g;
    return KN_OK;
}

static void graph_free_arrays(kn_graph *g)
{
    for (uint32_t i = 0; i < g->n_subgraphs; i++) {
        graph_free_arrays(g->subgraphs[i]);
        kn_mem_free(g->alloc, g->subgraphs[i]);
    }
    kn_mem_free(g->alloc, g->subgraphs);
    kn_mem_free(g->alloc, g->values);
    kn_mem_free(g->alloc, g->nodes);
}

void kn_graph_destroy(kn_graph *g)
{
    if (!g)
        return;
    if (g->parent) /* subgraphs go with their root */
        return;
    if (g->n_borrowers) { /* clones read its constant data: freed with the last */
        g->destroy_pending = true;
        return;
    }
    kn_graph *owner = g->data_owner;
    const kn_allocator *a = g->alloc;
    graph_free_arrays(g);
    for (kn_mapping *m = g->maps; m;) {
        kn_mapping *n = m->next;
        if (m->len)
            munmap(m->addr, m->len);
        else
            kn_mem_free(a, m->addr);
        kn_mem_free(a, m);
        m = n;
    }
    if (g->strs)
        kn_mem_free(a, g->strs->slots);
    kn_mem_free(a, g->strs);
    kn_arena_destroy(g->arena);
    kn_mem_free(a, g);
    if (owner && --owner->n_borrowers == 0 && owner->destroy_pending)
        kn_graph_destroy(owner);
}

kn_status kn_graph_intern(kn_graph *g, const char *s, size_t len, kn_str *out)
{
    return strtab_intern(g->strs, s ? s : "", s ? len : 0, out);
}

kn_status kn_graph_intern_cstr(kn_graph *g, const char *s, kn_str *out)
{
    return kn_graph_intern(g, s, s ? strlen(s) : 0, out);
}

void *kn_graph_alloc(kn_graph *g, size_t size) { return kn_arena_alloc(g->arena, size); }
void *kn_graph_alloc_uninit(kn_graph *g, size_t size) { return kn_arena_alloc_uninit(g->arena, size); }

kn_status kn_graph_add_value(kn_graph *g, const kn_value *v, kn_id *id)
{
    if (g->n_values >= KN_NONE - 1)
        return KN_ERR_LIMIT;
    KN_TRY(kn_mem_grow(g->alloc, (void **)&g->values, &g->cap_values, g->n_values + 1, sizeof *g->values));
    g->values[g->n_values] = *v;
    *id = g->n_values++;
    return KN_OK;
}

kn_status kn_graph_add_node(kn_graph *g, const kn_node *n, kn_id *id)
{
    if (g->n_nodes >= KN_NONE - 1)
        return KN_ERR_LIMIT;
    KN_TRY(kn_mem_grow(g->alloc, (void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes));
    g->nodes[g->n_nodes] = *n;
    *id = g->n_nodes++;
    return KN_OK;
}

kn_status kn_graph_add_mapping(kn_graph *g, void *addr, size_t len)
{
    kn_graph *r = g->root;
    kn_mapping *m = kn_mem_alloc(r->alloc, sizeof *m);
    if (!m)
        return KN_ERR_NOMEM;
    m->addr = addr;
    m->len = len;
    m->next = r->maps;
    r->maps = m;
    return KN_OK;
}

kn_status kn_graph_adopt(kn_graph *g, void *heap_block)
{
    return kn_graph_add_mapping(g, heap_block, 0);
}

const kn_value *kn_value_resolve(const kn_graph *g, kn_id id, const kn_graph **owner)
{
    while (g && id < g->n_values && g->values[id].kind == KN_VAL_OUTER) {
        id = g->values[id].outer;
        g = g->parent;
    }
    if (!g || id >= g->n_values)
        return NULL;
    if (owner)
        *owner = g;
    return &g->values[id];
}

int64_t kn_shape_numel(const kn_shape *s)
{
    if (s->rank < 0)
        return -1;
    int64_t n = 1;
    for (int32_t i = 0; i < s->rank; i++) {
        int64_t d = s->dims[i].value;
        if (d < 0)
            return -1;
        if (d && n > INT64_MAX / d)
            return -1;
        n *= d;
    }
    return n;
}

/* Appends to buf at *pos, never past size, always NUL-terminated. */
static void put(char *buf, size_t size, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#include <stdarg.h>
static void put(char *buf, size_t size, size_t *pos, const char *fmt, ...)
{
    if (*pos >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *pos, size - *pos, fmt, ap);
    va_end(ap);
    if (n > 0)
        *pos += (size_t)n < size - *pos ? (size_t)n : size - *pos - 1;
}

static void shape_put(const kn_shape *s, char *buf, size_t size, size_t *pos)
{
    if (s->rank < 0) {
        put(buf, size, pos, "[*]");
        return;
    }
    put(buf, size, pos, "[");
    for (int32_t i = 0; i < s->rank; i++) {
        const kn_dim *d = &s->dims[i];
        if (i)
            put(buf, size, pos, ", ");
        if (d->value >= 0)
            put(buf, size, pos, "%" PRId64, d->value);
        else if (d->sym)
            put(buf, size, pos, "%s", d->sym);
        else
            put(buf, size, pos, "?");
    }
    put(buf, size, pos, "]");
}

void kn_shape_format(const kn_shape *s, char *buf, size_t size)
{
    size_t pos = 0;
    if (size)
        buf[0] = 0;
    shape_put(s, buf, size, &pos);
}

static void type_put(const kn_type *t, char *buf, size_t size, size_t *pos, int depth)
{
    if (!t || depth > 16) {
        put(buf, size, pos, "?");
        return;
    }
    switch (t->kind) {
    case KN_TYPE_UNKNOWN:
        put(buf, size, pos, "?");
        break;
    case KN_TYPE_TENSOR:
    case KN_TYPE_SPARSE_TENSOR:
        put(buf, size, pos, "%s%s", t->kind == KN_TYPE_SPARSE_TENSOR ? "sparse " : "",
            t->dtype ? kn_dtype_name(t->dtype) : "?");
        shape_put(&t->shape, buf, size, pos);
        break;
    case KN_TYPE_SEQUENCE:
    case KN_TYPE_OPTIONAL:
        put(buf, size, pos, t->kind == KN_TYPE_SEQUENCE ? "seq(" : "optional(");
        type_put(t->elem, buf, size, pos, depth + 1);
        put(buf, size, pos, ")");
        break;
    case KN_TYPE_MAP:
        put(buf, size, pos, "map(%s, ", kn_dtype_name(t->dtype));
        type_put(t->elem, buf, size, pos, depth + 1);
        put(buf, size, pos, ")");
        break;
    }
}

void kn_type_format(const kn_type *t, char *buf, size_t size)
{
    size_t pos = 0;
    if (size)
        buf[0] = 0;
    type_put(t, buf, size, &pos, 0);
}

const kn_attr *kn_node_attr(const kn_node *n, const char *name)
{
    for (uint32_t i = 0; i < n->n_attrs; i++)
        if (strcmp(n->attrs[i].name, name) == 0)
            return &n->attrs[i];
    return NULL;
}

int64_t kn_node_attr_int(const kn_node *n, const char *name, int64_t def)
{
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->kind == KN_ATTR_INT ? a->u.i : def;
}

static void walk(const kn_graph *g, int depth, void (*fn)(const kn_graph *, int, void *), void *ctx)
{
    fn(g, depth, ctx);
    for (uint32_t i = 0; i < g->n_subgraphs; i++)
        walk(g->subgraphs[i], depth + 1, fn, ctx);
}

void kn_graph_walk(const kn_graph *g, void (*fn)(const kn_graph *, int depth, void *), void *ctx)
{
    walk(g, 0, fn, ctx);
}

const char *kn_attr_kind_name(kn_attr_kind k)
{
    static const char *names[KN_ATTR_KIND_COUNT] = {
        "undefined", "float", "int", "string", "tensor", "graph", "type",
        "floats", "ints", "strings", "tensors", "graphs", "types"};
    return (unsigned)k < KN_ATTR_KIND_COUNT ? names[k] : "?";
}

/* Marks every value of g that something reads: node inputs, graph
 * outputs, and (through OUTER values) subgraphs' reads. */
static void mark_used(const kn_graph *g, bool *used)
{
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE)
                used[n->inputs[i]] = true;
        for (uint32_t i = 0; i < n->n_attrs; i++) {
            const kn_attr *a = &n->attrs[i];
            uint32_t ng = a->kind == KN_ATTR_GRAPH ? 1 : a->kind == KN_ATTR_GRAPHS ? a->n : 0;
            for (uint32_t j = 0; j < ng; j++) {
                const kn_graph *sg = a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[j];
                for (kn_id v = 0; v < sg->n_values; v++)
                    if (sg->values[v].kind == KN_VAL_OUTER && sg->values[v].outer < g->n_values)
                        used[sg->values[v].outer] = true;
            }
        }
    }
    for (uint32_t i = 0; i < g->n_outputs; i++)
        used[g->outputs[i]] = true;
}

kn_status kn_graph_compact(kn_graph *g, const bool *dead_nodes)
{
    const kn_allocator *a = g->alloc;
    kn_id *nmap = kn_mem_alloc(a, ((size_t)g->n_nodes + 1) * sizeof *nmap);
    kn_id *vmap = kn_mem_alloc(a, ((size_t)g->n_values + 1) * sizeof *vmap);
    bool *used = kn_mem_alloc(a, (size_t)g->n_values + 1);
    if (!nmap || !vmap || !used) {
        kn_mem_free(a, nmap);
        kn_mem_free(a, vmap);
        kn_mem_free(a, used);
        return KN_ERR_NOMEM;
    }
    /* nodes */
    kn_id nn = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        nmap[k] = dead_nodes && dead_nodes[k] ? KN_NONE : nn;
        if (nmap[k] != KN_NONE)
            g->nodes[nn++] = g->nodes[k];
    }
    g->n_nodes = nn;
    /* values: keep inputs, values of live nodes, and read constants/outer refs */
    memset(used, 0, (size_t)g->n_values + 1);
    mark_used(g, used);
    kn_id nv = 0;
    for (kn_id v = 0; v < g->n_values; v++) {
        kn_value *x = &g->values[v];
        bool keep = x->kind == KN_VAL_INPUT || used[v] ||
                    (x->kind == KN_VAL_NODE && x->producer < KN_NONE && nmap[x->producer] != KN_NONE);
        vmap[v] = keep ? nv : KN_NONE;
        if (keep) {
            if (x->kind == KN_VAL_NODE)
                x->producer = nmap[x->producer];
            g->values[nv++] = *x;
        }
    }
    g->n_values = nv;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE)
                n->inputs[i] = vmap[n->inputs[i]];
        for (uint32_t i = 0; i < n->n_outputs; i++)
            if (n->outputs[i] != KN_NONE)
                n->outputs[i] = vmap[n->outputs[i]];
        for (uint32_t i = 0; i < n->n_attrs; i++) {
            kn_attr *at = &n->attrs[i];
            uint32_t ng = at->kind == KN_ATTR_GRAPH ? 1 : at->kind == KN_ATTR_GRAPHS ? at->n : 0;
            for (uint32_t j = 0; j < ng; j++) {
                kn_graph *sg = at->kind == KN_ATTR_GRAPH ? at->u.g : at->u.graphs[j];
                for (kn_id v = 0; v < sg->n_values; v++)
                    if (sg->values[v].kind == KN_VAL_OUTER)
                        sg->values[v].outer = vmap[sg->values[v].outer];
            }
        }
    }
    for (uint32_t i = 0; i < g->n_inputs; i++)
        g->inputs[i] = vmap[g->inputs[i]];
    for (uint32_t i = 0; i < g->n_outputs; i++)
        g->outputs[i] = vmap[g->outputs[i]];
    kn_mem_free(a, nmap);
    kn_mem_free(a, vmap);
    kn_mem_free(a, used);
    return KN_OK;
}
