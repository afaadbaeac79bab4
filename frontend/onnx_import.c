/* ONNX ModelProto → kn_graph: graphs and subgraphs with outer-scope
 * references, nodes in topological order, Constant nodes as weights,
 * attributes checked against ir/ops.def, model-local functions inlined. */
#include "frontend/onnx_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ERR(im, s, ...) (kn_diag_add((im)->diag, KN_ERROR, __VA_ARGS__), kn_onnx_fail((im), (s)))
#define OOM(im) kn_onnx_fail((im), KN_ERR_NOMEM)
#define NODE_FMT "%s: node '%s' (%s, opset %lld): "

/* ---- name → value id map of one graph scope ---- */

typedef struct scope {
    kn_graph *g;
    struct scope *parent;
    kn_str *keys;
    kn_id *vals;
    uint32_t cap, n;
} scope;

static uint32_t ptr_hash(kn_str s)
{
    uint64_t x = (uint64_t)(uintptr_t)s;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static kn_id scope_get(const scope *sc, kn_str name)
{
    if (!sc->cap)
        return KN_NONE;
    for (uint32_t j = ptr_hash(name) & (sc->cap - 1);; j = (j + 1) & (sc->cap - 1)) {
        if (!sc->keys[j])
            return KN_NONE;
        if (sc->keys[j] == name)
            return sc->vals[j];
    }
}

static kn_status scope_put(scope *sc, kn_str name, kn_id id)
{
    const kn_allocator *a = sc->g->alloc;
    if ((sc->n + 1) * 2 > sc->cap) {
        uint32_t ncap = sc->cap ? sc->cap * 2 : 64;
        if (ncap < sc->cap)
            return KN_ERR_LIMIT;
        kn_str *nk = kn_mem_alloc(a, (size_t)ncap * sizeof *nk);
        kn_id *nv = kn_mem_alloc(a, (size_t)ncap * sizeof *nv);
        if (!nk || !nv) {
            kn_mem_free(a, nk);
            kn_mem_free(a, nv);
            return KN_ERR_NOMEM;
        }
        memset(nk, 0, (size_t)ncap * sizeof *nk);
        for (uint32_t i = 0; i < sc->cap; i++) {
            if (!sc->keys[i])
                continue;
            uint32_t j = ptr_hash(sc->keys[i]) & (ncap - 1);
            while (nk[j])
                j = (j + 1) & (ncap - 1);
            nk[j] = sc->keys[i];
            nv[j] = sc->vals[i];
        }
        kn_mem_free(a, sc->keys);
        kn_mem_free(a, sc->vals);
        sc->keys = nk;
        sc->vals = nv;
        sc->cap = ncap;
    }
    uint32_t j = ptr_hash(name) & (sc->cap - 1);
    while (sc->keys[j] && sc->keys[j] != name)
        j = (j + 1) & (sc->cap - 1);
    if (!sc->keys[j])
        sc->n++;
    sc->keys[j] = name;
    sc->vals[j] = id;
    return KN_OK;
}

static void scope_free(scope *sc)
{
    kn_mem_free(sc->g->alloc, sc->keys);
    kn_mem_free(sc->g->alloc, sc->vals);
}

/* Id of `name` as seen from sc's graph: a local value, or an OUTER value
 * created here (and in every graph in between) for an enclosing one. */
static kn_status scope_lookup(scope *sc, kn_str name, kn_id *out)
{
    *out = scope_get(sc, name);
    if (*out != KN_NONE || !sc->parent)
        return KN_OK;
    kn_id pid;
    KN_TRY(scope_lookup(sc->parent, name, &pid));
    if (pid == KN_NONE)
        return KN_OK;
    kn_value v = {0};
    v.name = name;
    v.kind = KN_VAL_OUTER;
    v.outer = pid;
    v.producer = KN_NONE;
    v.type = sc->parent->g->values[pid].type;
    KN_TRY(kn_graph_add_value(sc->g, &v, out));
    return scope_put(sc, name, *out);
}

/* ---- model-local function inlining context ---- */

typedef struct fnctx {
    struct fnctx *caller;
    const Onnx__FunctionProto *fn;
    const Onnx__NodeProto *call;  /* the call site (its attributes bind the function's) */
    Onnx__AttributeProto **defaults; /* attribute_proto (field 11), decoded */
    size_t n_defaults;
    kn_str *formal, *actual;      /* function input/output names → call site's names */
    size_t n_bind;
    kn_str prefix;                /* for the function's internal names */
    kn_str name;                  /* "domain.name" for messages and kn_node.function */
    int depth;
} fnctx;

typedef struct imp_ctx {
    kn_onnx_import *im;
    Onnx__ModelProto *model;
    ProtobufCAllocator *pa;
} imp_ctx;

static kn_status import_graph(imp_ctx *c, scope *parent, Onnx__GraphProto *gp, kn_graph *g, fnctx *fc, int depth);
static kn_status import_nodes(imp_ctx *c, scope *sc, Onnx__NodeProto **nodes, size_t n, fnctx *fc, int depth);

/* Name of a value inside the current function body (or as is at top level). */
static kn_status translate(imp_ctx *c, fnctx *fc, const char *name, kn_str *out)
{
    kn_graph *r = c->im->root;
    if (!fc)
        return kn_graph_intern_cstr(r, name, out) == KN_OK ? KN_OK : OOM(c->im);
    kn_str n;
    if (kn_graph_intern_cstr(r, name, &n) != KN_OK)
        return OOM(c->im);
    for (size_t i = 0; i < fc->n_bind; i++)
        if (fc->formal[i] == n) {
            *out = fc->actual[i];
            return KN_OK;
        }
    size_t pl = strlen(fc->prefix), nl = strlen(name);
    char *buf = kn_mem_alloc(r->alloc, pl + nl + 1);
    if (!buf)
        return OOM(c->im);
    memcpy(buf, fc->prefix, pl);
    memcpy(buf + pl, name, nl + 1);
    kn_status s = kn_graph_intern(r, buf, pl + nl, out);
    kn_mem_free(r->alloc, buf);
    return s == KN_OK ? KN_OK : OOM(c->im);
}

static const char *safe(const char *s) { return s ? s : ""; }

/* The opset version of `domain` in effect for a node: the function's own
 * imports first, then the model's. -1 when the domain is not imported. */
static int64_t opset_of(imp_ctx *c, fnctx *fc, const char *domain)
{
    kn_domain d = kn_domain_of(domain);
    for (fnctx *f = fc; f; f = f->caller) {
        for (size_t i = 0; i < f->fn->n_opset_import; i++) {
            const Onnx__OperatorSetIdProto *o = f->fn->opset_import[i];
            if (!o || !o->has_version)
                continue;
            const char *od = safe(o->domain);
            if (d != KN_DOM_OTHER ? kn_domain_of(od) == d : strcmp(od, safe(domain)) == 0)
                return o->version;
        }
    }
    for (size_t i = 0; i < c->model->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = c->model->opset_import[i];
        if (!o || !o->has_version)
            continue;
        const char *od = safe(o->domain);
        if (d != KN_DOM_OTHER ? kn_domain_of(od) == d : strcmp(od, safe(domain)) == 0)
            return o->version;
    }
    return -1;
}

static Onnx__FunctionProto *find_function(imp_ctx *c, const char *domain, const char *name)
{
    for (size_t i = 0; i < c->model->n_functions; i++) {
        Onnx__FunctionProto *f = c->model->functions[i];
        if (f && f->name && strcmp(f->name, name) == 0 && strcmp(safe(f->domain), safe(domain)) == 0)
            return f;
    }
    return NULL;
}

/* ---- attributes ---- */

/* The attribute a function body's `ref_attr_name` stands for: the call
 * site's attribute of that name, else the function's default; NULL if
 * neither exists (the attribute is then omitted). */
static const Onnx__AttributeProto *resolve_ref(fnctx *fc, const char *ref, int guard)
{
    if (!fc || guard > 64)
        return NULL;
    for (size_t i = 0; i < fc->call->n_attribute; i++) {
        const Onnx__AttributeProto *a = fc->call->attribute[i];
        if (a && a->name && strcmp(a->name, ref) == 0) {
            if (a->ref_attr_name && *a->ref_attr_name)
                return resolve_ref(fc->caller, a->ref_attr_name, guard + 1);
            return a;
        }
    }
    for (size_t i = 0; i < fc->n_defaults; i++) {
        const Onnx__AttributeProto *a = fc->defaults[i];
        if (a && a->name && strcmp(a->name, ref) == 0)
            return a;
    }
    return NULL;
}

static kn_attr_kind attr_kind_of(int t)
{
    switch (t) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return KN_ATTR_FLOAT;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return KN_ATTR_INT;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING: return KN_ATTR_STRING;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR: return KN_ATTR_TENSOR;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR: return KN_ATTR_TENSOR;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH: return KN_ATTR_GRAPH;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO: return KN_ATTR_TYPE;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS: return KN_ATTR_FLOATS;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS: return KN_ATTR_INTS;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS: return KN_ATTR_STRINGS;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS: return KN_ATTR_TENSORS;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS: return KN_ATTR_TENSORS;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS: return KN_ATTR_GRAPHS;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS: return KN_ATTR_TYPES;
    default: return KN_ATTR_UNDEFINED;
    }
}

/* Attribute type for IR < 4 models, which leave `type` unset. */
static int guess_attr_type(const Onnx__AttributeProto *a)
{
    if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
    if (a->has_i) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
    if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
    if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
    if (a->g) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
    if (a->sparse_tensor) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR;
    if (a->tp) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO;
    if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
    if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
    if (a->n_strings) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS;
    if (a->n_tensors) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS;
    if (a->n_graphs) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS;
    if (a->n_sparse_tensors) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS;
    if (a->n_type_protos) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS;
    return 0;
}

typedef struct node_ctx {
    imp_ctx *c;
    scope *sc;
    fnctx *fc;
    int depth;
    const char *name, *op_type;
    long long opset;
} node_ctx;

static kn_status attr_convert(node_ctx *nc, Onnx__AttributeProto *a, kn_attr *out)
{
    kn_onnx_import *im = nc->c->im;
    kn_graph *r = im->root;
    int t = a->has_type ? (int)a->type : guess_attr_type(a);
    kn_attr_kind k = attr_kind_of(t);
    char what[512];
    snprintf(what, sizeof what, "node '%s' (%s, opset %lld): attribute '%s'", nc->name, nc->op_type, nc->opset,
             safe(a->name));
    if (k == KN_ATTR_UNDEFINED)
        return ERR(im, KN_ERR_INVALID, "%s: %s: unknown attribute type %d", im->file, what, t);
    out->kind = k;
    if (kn_graph_intern_cstr(r, a->name, &out->name) != KN_OK)
        return OOM(im);
    switch (t) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: out->u.f = a->f; break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: out->u.i = a->i; break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
    {
        KN_TRY(kn_onnx_account(im, a->s.len, what));
        uint8_t *p = kn_arena_alloc(r->arena, a->s.len + 1); /* zeroed: ends with NUL */
        if (!p)
            return OOM(im);
        if (a->s.len)
            memcpy(p, a->s.data, a->s.len);
        out->u.s.len = a->s.len;
        out->u.s.data = p;
        break;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR:
        if (!a->t)
            return ERR(im, KN_ERR_INVALID, "%s: %s: tensor attribute without a tensor", im->file, what);
        return kn_onnx_tensor(im, a->t, what, &out->u.t);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSOR:
        if (!a->sparse_tensor)
            return ERR(im, KN_ERR_INVALID, "%s: %s: sparse tensor attribute without a tensor", im->file, what);
        return kn_onnx_sparse(im, a->sparse_tensor, what, &out->u.t);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTO:
        out->u.tp = kn_graph_alloc(r, sizeof *out->u.tp);
        if (!out->u.tp)
            return OOM(im);
        return kn_onnx_type(im, a->tp, what, out->u.tp);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH:
        if (!a->g)
            return ERR(im, KN_ERR_INVALID, "%s: %s: graph attribute without a graph", im->file, what);
        if (kn_graph_create_sub(nc->sc->g, &out->u.g) != KN_OK)
            return OOM(im);
        return import_graph(nc->c, nc->sc, a->g, out->u.g, nc->fc, nc->depth + 1);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        out->n = (uint32_t)a->n_floats;
        KN_TRY(kn_onnx_account(im, a->n_floats * sizeof(float), what));
        out->u.floats = kn_arena_dup(r->arena, a->floats, a->n_floats * sizeof(float));
        if (!out->u.floats)
            return OOM(im);
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        out->n = (uint32_t)a->n_ints;
        KN_TRY(kn_onnx_account(im, a->n_ints * sizeof(int64_t), what));
        out->u.ints = kn_arena_dup(r->arena, a->ints, a->n_ints * sizeof(int64_t));
        if (!out->u.ints)
            return OOM(im);
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRINGS:
        out->n = (uint32_t)a->n_strings;
        out->u.strings = kn_graph_alloc(r, (a->n_strings + 1) * sizeof(kn_bytes));
        if (!out->u.strings)
            return OOM(im);
        for (size_t i = 0; i < a->n_strings; i++) {
            KN_TRY(kn_onnx_account(im, a->strings[i].len, what));
            uint8_t *p = kn_arena_alloc(r->arena, a->strings[i].len + 1);
            if (!p)
                return OOM(im);
            if (a->strings[i].len)
                memcpy(p, a->strings[i].data, a->strings[i].len);
            out->u.strings[i].data = p;
            out->u.strings[i].len = a->strings[i].len;
        }
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSORS:
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS: {
        bool sparse = t == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__SPARSE_TENSORS;
        size_t n = sparse ? a->n_sparse_tensors : a->n_tensors;
        out->n = (uint32_t)n;
        out->u.tensors = kn_graph_alloc(r, (n + 1) * sizeof(kn_tensor *));
        if (!out->u.tensors)
            return OOM(im);
        for (size_t i = 0; i < n; i++) {
            if (sparse ? !a->sparse_tensors[i] : !a->tensors[i])
                return ERR(im, KN_ERR_INVALID, "%s: %s: empty tensor entry", im->file, what);
            KN_TRY(sparse ? kn_onnx_sparse(im, a->sparse_tensors[i], what, &out->u.tensors[i])
                          : kn_onnx_tensor(im, a->tensors[i], what, &out->u.tensors[i]));
        }
        break;
    }
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPHS:
        out->n = (uint32_t)a->n_graphs;
        out->u.graphs = kn_graph_alloc(r, (a->n_graphs + 1) * sizeof(kn_graph *));
        if (!out->u.graphs)
            return OOM(im);
        for (size_t i = 0; i < a->n_graphs; i++) {
            if (!a->graphs[i])
                return ERR(im, KN_ERR_INVALID, "%s: %s: empty graph entry", im->file, what);
            if (kn_graph_create_sub(nc->sc->g, &out->u.graphs[i]) != KN_OK)
                return OOM(im);
            KN_TRY(import_graph(nc->c, nc->sc, a->graphs[i], out->u.graphs[i], nc->fc, nc->depth + 1));
        }
        break;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TYPE_PROTOS:
        out->n = (uint32_t)a->n_type_protos;
        out->u.types = kn_graph_alloc(r, (a->n_type_protos + 1) * sizeof(kn_type *));
        if (!out->u.types)
            return OOM(im);
        for (size_t i = 0; i < a->n_type_protos; i++) {
            out->u.types[i] = kn_graph_alloc(r, sizeof(kn_type));
            if (!out->u.types[i])
                return OOM(im);
            KN_TRY(kn_onnx_type(im, a->type_protos[i], what, out->u.types[i]));
        }
        break;
    }
    return KN_OK;
}

/* ---- Constant nodes become weights ---- */

static kn_status constant_tensor(node_ctx *nc, const kn_attr *a, kn_tensor **out)
{
    kn_onnx_import *im = nc->c->im;
    kn_graph *r = im->root;
    const char *n = a->name;
    if (strcmp(n, "value") == 0 || strcmp(n, "sparse_value") == 0) {
        if (a->kind != KN_ATTR_TENSOR)
            goto bad;
        *out = a->u.t;
        return KN_OK;
    }
    kn_tensor *t = kn_graph_alloc(r, sizeof *t);
    if (!t)
        return OOM(im);
    t->dims = kn_graph_alloc(r, sizeof *t->dims);
    if (!t->dims)
        return OOM(im);
    const void *src = NULL;
    if (strcmp(n, "value_float") == 0 && a->kind == KN_ATTR_FLOAT) {
        t->dtype = KN_F32, t->rank = 0, t->n_elems = 1, src = &a->u.f;
    } else if (strcmp(n, "value_int") == 0 && a->kind == KN_ATTR_INT) {
        t->dtype = KN_I64, t->rank = 0, t->n_elems = 1, src = &a->u.i;
    } else if (strcmp(n, "value_floats") == 0 && a->kind == KN_ATTR_FLOATS) {
        t->dtype = KN_F32, t->rank = 1, t->n_elems = a->n, src = a->u.floats;
    } else if (strcmp(n, "value_ints") == 0 && a->kind == KN_ATTR_INTS) {
        t->dtype = KN_I64, t->rank = 1, t->n_elems = a->n, src = a->u.ints;
    } else if (strcmp(n, "value_string") == 0 && a->kind == KN_ATTR_STRING) {
        t->dtype = KN_STRING, t->rank = 0, t->n_elems = 1, t->data = &a->u.s;
    } else if (strcmp(n, "value_strings") == 0 && a->kind == KN_ATTR_STRINGS) {
        t->dtype = KN_STRING, t->rank = 1, t->n_elems = a->n, t->data = a->u.strings;
    } else {
        goto bad;
    }
    t->dims[0] = t->n_elems;
    if (t->dtype != KN_STRING) {
        kn_dtype_nbytes(t->dtype, t->n_elems, &t->nbytes);
        t->data = src;
    }
    *out = t;
    return KN_OK;
bad:
    return ERR(im, KN_ERR_INVALID, NODE_FMT "attribute '%s' of kind %s cannot give the constant's value", im->file,
               nc->name, nc->op_type, nc->opset, n, kn_attr_kind_name(a->kind));
}

/* ---- nodes ---- */

static kn_status define_output(node_ctx *nc, const char *oname, kn_value *v, kn_id *id)
{
    kn_onnx_import *im = nc->c->im;
    kn_str name;
    KN_TRY(translate(nc->c, nc->fc, oname, &name));
    if (!*name) { /* a function output the call site left out */
        *id = KN_NONE;
        return KN_OK;
    }
    if (scope_get(nc->sc, name) != KN_NONE)
        return ERR(im, KN_ERR_INVALID, NODE_FMT "output '%s' is already defined in this graph (values must be assigned once)",
                   im->file, nc->name, nc->op_type, nc->opset, name);
    v->name = name;
    if (kn_graph_add_value(nc->sc->g, v, id) != KN_OK || scope_put(nc->sc, name, *id) != KN_OK)
        return OOM(im);
    return KN_OK;
}

static kn_status inline_call(imp_ctx *c, scope *sc, Onnx__NodeProto *np, Onnx__FunctionProto *fn, fnctx *fc, int depth);

typedef struct req_ctx {
    node_ctx *nc;
    const kn_node *n;
} req_ctx;

static void check_required(const kn_attr_schema *s, void *ctx)
{
    req_ctx *rc = ctx;
    node_ctx *nc = rc->nc;
    if (s->required && !kn_node_attr(rc->n, s->name))
        ERR(nc->c->im, KN_ERR_INVALID, NODE_FMT "required attribute '%s' is missing", nc->c->im->file, nc->name,
            nc->op_type, nc->opset, s->name);
}

static kn_status import_node(imp_ctx *c, scope *sc, Onnx__NodeProto *np, fnctx *fc, int depth)
{
    kn_onnx_import *im = c->im;
    kn_graph *r = im->root, *g = sc->g;
    const char *domain = safe(np->domain);
    const char *op_type = safe(np->op_type);
    int64_t opset = opset_of(c, fc, domain);
    node_ctx nc = {c, sc, fc, depth, np->name && *np->name ? np->name : "", op_type, (long long)opset};
    char unnamed[64];
    if (!*nc.name) {
        snprintf(unnamed, sizeof unnamed, "#%u", g->n_nodes);
        nc.name = unnamed;
    }
    if (!*op_type)
        return ERR(im, KN_ERR_INVALID, "%s: node '%s': no op_type", im->file, nc.name);
    if (++im->n_nodes > im->opts.max_nodes)
        return ERR(im, KN_ERR_LIMIT, "%s: node '%s' (%s): the model has more than %zu nodes, counting each inlined "
                   "function call (kn_import_options.max_nodes)", im->file, nc.name, op_type, im->opts.max_nodes);

    Onnx__FunctionProto *fn = find_function(c, domain, op_type);
    if (fn)
        return inline_call(c, sc, np, fn, fc, depth);

    kn_node n = {0};
    if (fc) { /* inlined: the call site's prefix keeps node names unique */
        KN_TRY(translate(c, fc, nc.name, &n.name));
    } else if (kn_graph_intern_cstr(r, nc.name, &n.name) != KN_OK) {
        return OOM(im);
    }
    if (kn_graph_intern_cstr(r, op_type, &n.op_type) != KN_OK ||
        kn_graph_intern_cstr(r, domain, &n.domain) != KN_OK)
        return OOM(im);
    n.opset = opset;
    n.function = fc ? fc->name : NULL;
    kn_op_miss miss = KN_MISS_UNKNOWN;
    n.op = opset >= 0 ? kn_op_lookup(domain, op_type, opset, &miss) : KN_OP_UNSUPPORTED;
    if (opset < 0)
        kn_diag_add(im->diag, KN_WARNING, "%s: node '%s' (%s): domain '%s' is not in the model's opset imports",
                    im->file, nc.name, op_type, domain);

    /* attributes */
    if (np->n_attribute > UINT32_MAX / 2)
        return ERR(im, KN_ERR_LIMIT, NODE_FMT "too many attributes", im->file, nc.name, op_type, nc.opset);
    n.attrs = kn_graph_alloc(r, (np->n_attribute + 1) * sizeof *n.attrs);
    if (!n.attrs)
        return OOM(im);
    for (size_t i = 0; i < np->n_attribute; i++) {
        Onnx__AttributeProto *a = np->attribute[i];
        if (!a)
            continue;
        if (!a->name || !*a->name)
            return ERR(im, KN_ERR_INVALID, NODE_FMT "attribute without a name", im->file, nc.name, op_type, nc.opset);
        for (uint32_t j = 0; j < n.n_attrs; j++)
            if (strcmp(n.attrs[j].name, a->name) == 0)
                return ERR(im, KN_ERR_INVALID, NODE_FMT "attribute '%s' given twice", im->file, nc.name, op_type,
                           nc.opset, a->name);
        if (a->ref_attr_name && *a->ref_attr_name) {
            if (!fc)
                return ERR(im, KN_ERR_INVALID, NODE_FMT "attribute '%s' refers to '%s' outside a function", im->file,
                           nc.name, op_type, nc.opset, a->name, a->ref_attr_name);
            const Onnx__AttributeProto *ref = resolve_ref(fc, a->ref_attr_name, 0);
            if (!ref)
                continue; /* not given at the call site: the attribute is absent */
            /* the bound value, under this node's attribute name */
            Onnx__AttributeProto bound = *ref;
            bound.name = a->name;
            bound.ref_attr_name = NULL;
            KN_TRY(attr_convert(&nc, &bound, &n.attrs[n.n_attrs]));
        } else {
            KN_TRY(attr_convert(&nc, a, &n.attrs[n.n_attrs]));
        }
        n.n_attrs++;
    }
    if (n.op != KN_OP_UNSUPPORTED) {
        for (uint32_t j = 0; j < n.n_attrs; j++) {
            kn_attr_schema s;
            if (!kn_op_attr_schema(n.op, n.attrs[j].name, &s)) {
                kn_diag_add(im->diag, KN_WARNING, NODE_FMT "unknown attribute '%s' ignored", im->file, nc.name, op_type,
                            nc.opset, n.attrs[j].name);
            } else if (s.kind != n.attrs[j].kind) {
                ERR(im, KN_ERR_INVALID, NODE_FMT "attribute '%s' is %s, expected %s", im->file, nc.name, op_type,
                    nc.opset, n.attrs[j].name, kn_attr_kind_name(n.attrs[j].kind), kn_attr_kind_name(s.kind));
            }
        }
        req_ctx rc = {&nc, &n};
        kn_op_attr_each(n.op, check_required, &rc);
    }

    /* inputs */
    n.n_inputs = (uint32_t)np->n_input;
    n.inputs = kn_graph_alloc(r, (np->n_input + 1) * sizeof *n.inputs);
    if (!n.inputs)
        return OOM(im);
    for (size_t i = 0; i < np->n_input; i++) {
        const char *in = safe(np->input[i]);
        n.inputs[i] = KN_NONE;
        if (!*in)
            continue;
        kn_str name;
        KN_TRY(translate(c, fc, in, &name));
        if (!*name)
            continue; /* a function input the call site left out */
        if (scope_lookup(sc, name, &n.inputs[i]) != KN_OK)
            return OOM(im);
        if (n.inputs[i] == KN_NONE)
            return ERR(im, KN_ERR_INVALID, NODE_FMT "input '%s' is not defined before this node", im->file, nc.name,
                       op_type, nc.opset, name);
    }

    /* Constant nodes become weights: no node, just a CONST value */
    if (n.op == KN_OP_Constant) {
        if (np->n_output != 1 || n.n_attrs != 1 || np->n_input != 0)
            return ERR(im, KN_ERR_INVALID, NODE_FMT "needs exactly one output, one value attribute and no inputs",
                       im->file, nc.name, op_type, nc.opset);
        kn_value v = {0};
        v.kind = KN_VAL_CONST;
        v.producer = KN_NONE;
        KN_TRY(constant_tensor(&nc, &n.attrs[0], &v.tensor));
        if (kn_onnx_tensor_type(im, v.tensor, &v.type) != KN_OK)
            return OOM(im);
        kn_id id;
        KN_TRY(define_output(&nc, safe(np->output[0]), &v, &id));
        if (id != KN_NONE && !v.tensor->name)
            v.tensor->name = g->values[id].name; /* value_float & co. carry no name */
        return KN_OK;
    }

    /* outputs */
    kn_id nid = g->n_nodes;
    n.n_outputs = (uint32_t)np->n_output;
    n.outputs = kn_graph_alloc(r, (np->n_output + 1) * sizeof *n.outputs);
    if (!n.outputs)
        return OOM(im);
    for (size_t i = 0; i < np->n_output; i++) {
        const char *on = safe(np->output[i]);
        n.outputs[i] = KN_NONE;
        if (!*on)
            continue;
        kn_value v = {0};
        v.kind = KN_VAL_NODE;
        v.producer = nid;
        v.out_index = (uint32_t)i;
        v.type.shape.rank = -1;
        KN_TRY(define_output(&nc, on, &v, &n.outputs[i]));
    }
    kn_id got;
    if (kn_graph_add_node(g, &n, &got) != KN_OK)
        return OOM(im);
    return KN_OK;
}

/* ---- protobuf wire-format checks ---- */

/* protobuf-c's decoder recurses once per nested message with no depth
 * limit, so a few KiB of nested messages overflow the stack. The bytes are
 * walked first with the message descriptors and refused when nested deeper
 * than this; malformed bytes are left for the decoder to reject. */
#define KN_PB_MAX_DEPTH 512

static bool pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

static bool pb_depth_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end, int depth)
{
    if (depth > KN_PB_MAX_DEPTH)
        return false;
    while (p < end) {
        uint64_t key, v;
        if (!pb_varint(&p, end, &key))
            return true;
        switch (key & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!pb_varint(&p, end, &v))
                return true;
            break;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
            if (end - p < 8)
                return true;
            p += 8;
            break;
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            if (end - p < 4)
                return true;
            p += 4;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED: {
            if (!pb_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return true;
            const ProtobufCFieldDescriptor *fd =
                (key >> 3) <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3)) : NULL;
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE && !pb_depth_ok(fd->descriptor, p, p + v, depth + 1))
                return false;
            p += v;
            break;
        }
        default:
            return true;
        }
    }
    return true;
}

static bool pb_failed(const ProtobufCAllocator *pa); /* an allocation of the decoder failed */

/* The bytes of a length-prefixed unknown field: protobuf-c keeps the
 * field's varint length prefix at the start of its data. */
static bool unknown_payload(const ProtobufCMessageUnknownField *uf, const uint8_t **data, size_t *len)
{
    uint64_t n = 0;
    for (size_t i = 0; i < uf->len && i < 10; i++) {
        n |= (uint64_t)(uf->data[i] & 0x7f) << (7 * i);
        if (!(uf->data[i] & 0x80)) {
            if (n != uf->len - i - 1)
                return false;
            *data = uf->data + i + 1;
            *len = (size_t)n;
            return true;
        }
    }
    return false;
}

static kn_status inline_call(imp_ctx *c, scope *sc, Onnx__NodeProto *np, Onnx__FunctionProto *fn, fnctx *fc, int depth)
{
    kn_onnx_import *im = c->im;
    kn_graph *r = im->root;
    const kn_allocator *a = r->alloc;
    const char *nname = np->name && *np->name ? np->name : safe(np->op_type);
    int fdepth = fc ? fc->depth + 1 : 1;
    if ((size_t)fdepth > im->opts.max_function_depth)
        return ERR(im, KN_ERR_LIMIT, "%s: node '%s' (%s): model-local functions nested deeper than %zu (recursive function?)",
                   im->file, nname, safe(np->op_type), im->opts.max_function_depth);
    if (np->n_input > fn->n_input || np->n_output > fn->n_output)
        return ERR(im, KN_ERR_INVALID, "%s: node '%s' (%s): calls function %s with %zu inputs / %zu outputs; it has %zu / %zu",
                   im->file, nname, safe(np->op_type), safe(fn->name), np->n_input, np->n_output, fn->n_input, fn->n_output);
    fnctx f = {0};
    f.caller = fc;
    f.fn = fn;
    f.call = np;
    f.depth = fdepth;
    kn_status s = KN_OK;
    size_t nb = fn->n_input + fn->n_output;
    f.formal = kn_mem_alloc(a, (nb + 1) * sizeof *f.formal);
    f.actual = kn_mem_alloc(a, (nb + 1) * sizeof *f.actual);
    char *buf = kn_mem_alloc(a, strlen(nname) + strlen(safe(fn->domain)) + strlen(safe(fn->name)) + 48);
    if (!f.formal || !f.actual || !buf) {
        s = OOM(im);
        goto out;
    }
    sprintf(buf, "%s/%s#%u/", nname, safe(fn->name), ++im->n_inlined);
    if (kn_graph_intern_cstr(r, buf, &f.prefix) != KN_OK) {
        s = OOM(im);
        goto out;
    }
    sprintf(buf, "%s%s%s", safe(fn->domain), *safe(fn->domain) ? "." : "", safe(fn->name));
    if (kn_graph_intern_cstr(r, buf, &f.name) != KN_OK) {
        s = OOM(im);
        goto out;
    }
    /* bind formal names to the call site's (translated in the caller's frame) */
    for (size_t i = 0; i < nb; i++) {
        bool is_in = i < fn->n_input;
        const char *formal = is_in ? fn->input[i] : fn->output[i - fn->n_input];
        size_t k = is_in ? i : i - fn->n_input;
        const char *act = is_in ? (k < np->n_input ? np->input[k] : "") : (k < np->n_output ? np->output[k] : "");
        if (kn_graph_intern_cstr(r, formal, &f.formal[f.n_bind]) != KN_OK) {
            s = OOM(im);
            goto out;
        }
        if (!act || !*act) {
            /* omitted: the body sees an empty (missing) name */
            if (kn_graph_intern_cstr(r, "", &f.actual[f.n_bind]) != KN_OK) {
                s = OOM(im);
                goto out;
            }
        } else if ((s = translate(c, fc, act, &f.actual[f.n_bind])) != KN_OK) {
            goto out;
        }
        f.n_bind++;
    }
    /* attribute defaults: FunctionProto.attribute_proto (field 11) is newer
     * than the onnx.proto kiln is built with, so it arrives as an unknown
     * field; decode each one as the AttributeProto it is. */
    const ProtobufCMessage *base = &fn->base;
    for (unsigned i = 0; i < base->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *uf = &base->unknown_fields[i];
        if (uf->tag != 11 || uf->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
            continue;
        Onnx__AttributeProto **nd = kn_mem_realloc(a, f.defaults, (f.n_defaults + 1) * sizeof *nd);
        if (!nd) {
            s = OOM(im);
            goto out;
        }
        f.defaults = nd;
        const uint8_t *payload;
        size_t plen;
        Onnx__AttributeProto *ap = NULL;
        if (unknown_payload(uf, &payload, &plen) &&
            pb_depth_ok(&onnx__attribute_proto__descriptor, payload, payload + plen, 0))
            ap = onnx__attribute_proto__unpack(c->pa, plen, payload);
        if (!ap) {
            s = pb_failed(c->pa) ? OOM(im)
                                 : ERR(im, KN_ERR_INVALID, "%s: function %s: malformed attribute default", im->file, f.name);
            goto out;
        }
        f.defaults[f.n_defaults++] = ap;
    }
    im->in_function++;
    s = import_nodes(c, sc, fn->node, fn->n_node, &f, depth);
    im->in_function--;
out:
    for (size_t i = 0; i < f.n_defaults; i++)
        onnx__attribute_proto__free_unpacked(f.defaults[i], c->pa);
    kn_mem_free(a, f.defaults);
    kn_mem_free(a, f.formal);
    kn_mem_free(a, f.actual);
    kn_mem_free(a, buf);
    return s;
}

/* ---- topological order ---- */

/* Names a node reads: its inputs and, for nodes with subgraphs, every name
 * read anywhere inside them (outer-scope references count as inputs). */
static kn_status collect_reads(const Onnx__NodeProto *np, const char ***names, uint32_t *n, uint32_t *cap,
                               const kn_allocator *a, int depth)
{
    if (depth > 256)
        return KN_OK; /* the depth limit is reported by import_graph */
    for (size_t i = 0; i < np->n_input; i++) {
        if (!np->input[i] || !*np->input[i])
            continue;
        KN_TRY(kn_mem_grow(a, (void **)names, cap, *n + 1, sizeof **names));
        (*names)[(*n)++] = np->input[i];
    }
    for (size_t i = 0; i < np->n_attribute; i++) {
        const Onnx__AttributeProto *at = np->attribute[i];
        if (!at)
            continue;
        size_t ng = at->n_graphs + (at->g ? 1 : 0);
        for (size_t k = 0; k < ng; k++) {
            const Onnx__GraphProto *sg = k < at->n_graphs ? at->graphs[k] : at->g;
            if (!sg)
                continue;
            for (size_t j = 0; j < sg->n_node; j++)
                if (sg->node[j])
                    KN_TRY(collect_reads(sg->node[j], names, n, cap, a, depth + 1));
            for (size_t j = 0; j < sg->n_output; j++)
                if (sg->output[j] && sg->output[j]->name && *sg->output[j]->name) {
                    KN_TRY(kn_mem_grow(a, (void **)names, cap, *n + 1, sizeof **names));
                    (*names)[(*n)++] = sg->output[j]->name;
                }
        }
    }
    return KN_OK;
}

/* Orders `nodes` so every node comes after the producers of what it reads,
 * keeping the given order where it already is one. Reports a cycle. */
static kn_status topo_sort(imp_ctx *c, Onnx__NodeProto **nodes, size_t n, uint32_t *order)
{
    kn_onnx_import *im = c->im;
    kn_graph *r = im->root;
    const kn_allocator *a = r->alloc;
    kn_status s = KN_OK;
    scope prod = {r, NULL, NULL, NULL, 0, 0}; /* output name → producing node index */
    uint32_t *start = NULL, *deps = NULL, *stack = NULL, n_deps = 0, cap_deps = 0;
    uint8_t *state = NULL;
    const char **reads = NULL;
    uint32_t n_reads = 0, cap_reads = 0;
    start = kn_mem_alloc(a, (n + 1) * sizeof *start);
    state = kn_mem_alloc(a, n + 1);
    stack = kn_mem_alloc(a, (n + 1) * 2 * sizeof *stack);
    if (!start || !state || !stack) {
        s = OOM(im);
        goto out;
    }
    memset(state, 0, n + 1);
    for (size_t i = 0; i < n; i++) {
        if (!nodes[i])
            continue;
        for (size_t k = 0; k < nodes[i]->n_output; k++) {
            const char *o = nodes[i]->output[k];
            kn_str on;
            if (!o || !*o)
                continue;
            if (kn_graph_intern_cstr(r, o, &on) != KN_OK || scope_put(&prod, on, (kn_id)i) != KN_OK) {
                s = OOM(im);
                goto out;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        start[i] = n_deps;
        if (!nodes[i])
            continue;
        n_reads = 0;
        if (collect_reads(nodes[i], &reads, &n_reads, &cap_reads, a, 0) != KN_OK) {
            s = OOM(im);
            goto out;
        }
        for (uint32_t k = 0; k < n_reads; k++) {
            kn_str rn;
            if (kn_graph_intern_cstr(r, reads[k], &rn) != KN_OK) {
                s = OOM(im);
                goto out;
            }
            kn_id p = scope_get(&prod, rn);
            if (p == KN_NONE || p == i)
                continue;
            if (kn_mem_grow(a, (void **)&deps, &cap_deps, n_deps + 1, sizeof *deps) != KN_OK) {
                s = OOM(im);
                goto out;
            }
            deps[n_deps++] = p;
        }
    }
    start[n] = n_deps;
    /* iterative DFS post-order; state 0 new, 1 on stack, 2 done */
    uint32_t n_out = 0;
    for (size_t i0 = 0; i0 < n; i0++) {
        if (state[i0])
            continue;
        uint32_t sp = 0;
        stack[sp++] = (uint32_t)i0;
        stack[sp++] = start[i0];
        state[i0] = 1;
        while (sp) {
            uint32_t v = stack[sp - 2], *next = &stack[sp - 1];
            if (*next < start[v + 1]) {
                uint32_t w = deps[(*next)++];
                if (state[w] == 1) {
                    const char *wn = nodes[w] && nodes[w]->name && *nodes[w]->name ? nodes[w]->name : "";
                    const char *vn = nodes[v] && nodes[v]->name && *nodes[v]->name ? nodes[v]->name : "";
                    s = ERR(im, KN_ERR_INVALID, "%s: the graph has a cycle: node '%s' (%s) and node '%s' (%s) depend on each other",
                            im->file, wn, nodes[w] ? safe(nodes[w]->op_type) : "", vn, nodes[v] ? safe(nodes[v]->op_type) : "");
                    goto out;
                }
                if (state[w] == 0) {
                    state[w] = 1;
                    stack[sp++] = w;
                    stack[sp++] = start[w];
                }
            } else {
                state[v] = 2;
                order[n_out++] = v;
                sp -= 2;
            }
        }
    }
out:
    kn_mem_free(a, start);
    kn_mem_free(a, deps);
    kn_mem_free(a, stack);
    kn_mem_free(a, state);
    kn_mem_free(a, reads);
    scope_free(&prod);
    return s;
}

static kn_status import_nodes(imp_ctx *c, scope *sc, Onnx__NodeProto **nodes, size_t n, fnctx *fc, int depth)
{
    kn_onnx_import *im = c->im;
    if (n == 0)
        return KN_OK;
    if (n > UINT32_MAX / 4)
        return ERR(im, KN_ERR_LIMIT, "%s: graph has too many nodes (%zu)", im->file, n);
    uint32_t *order = kn_mem_alloc(im->root->alloc, n * sizeof *order);
    if (!order)
        return OOM(im);
    kn_status s = topo_sort(c, nodes, n, order);
    for (size_t i = 0; s == KN_OK && i < n; i++) {
        Onnx__NodeProto *np = nodes[order[i]];
        if (np)
            s = import_node(c, sc, np, fc, depth);
    }
    kn_mem_free(im->root->alloc, order);
    return s;
}

/* ---- graphs ---- */

static kn_status import_graph(imp_ctx *c, scope *parent, Onnx__GraphProto *gp, kn_graph *g, fnctx *fc, int depth)
{
    kn_onnx_import *im = c->im;
    kn_graph *r = im->root;
    if ((size_t)depth > im->opts.max_subgraph_depth)
        return ERR(im, KN_ERR_LIMIT, "%s: subgraphs nested deeper than %zu", im->file, im->opts.max_subgraph_depth);
    if (kn_graph_intern_cstr(r, gp->name, &g->name) != KN_OK)
        return OOM(im);
    scope sc = {g, parent, NULL, NULL, 0, 0};
    kn_status s = KN_OK;
    char what[512];

    for (size_t i = 0; i < gp->n_initializer + gp->n_sparse_initializer; i++) {
        bool sparse = i >= gp->n_initializer;
        Onnx__TensorProto *tp = sparse ? NULL : gp->initializer[i];
        Onnx__SparseTensorProto *sp = sparse ? gp->sparse_initializer[i - gp->n_initializer] : NULL;
        const char *iname = sparse ? (sp && sp->values ? safe(sp->values->name) : "") : (tp ? safe(tp->name) : "");
        if (!*iname) {
            s = ERR(im, KN_ERR_INVALID, "%s: graph '%s': initializer %zu has no name", im->file, g->name, i);
            goto out;
        }
        snprintf(what, sizeof what, "initializer '%s'", iname);
        kn_value v = {0};
        v.kind = KN_VAL_CONST;
        v.producer = KN_NONE;
        if ((s = sparse ? kn_onnx_sparse(im, sp, what, &v.tensor) : kn_onnx_tensor(im, tp, what, &v.tensor)) != KN_OK)
            goto out;
        if ((s = kn_onnx_tensor_type(im, v.tensor, &v.type)) != KN_OK)
            goto out;
        if ((s = translate(c, fc, iname, &v.name)) != KN_OK)
            goto out;
        if (scope_get(&sc, v.name) != KN_NONE) {
            s = ERR(im, KN_ERR_INVALID, "%s: graph '%s': initializer '%s' is defined twice", im->file, g->name, v.name);
            goto out;
        }
        kn_id id;
        if (kn_graph_add_value(g, &v, &id) != KN_OK || scope_put(&sc, v.name, id) != KN_OK) {
            s = OOM(im);
            goto out;
        }
    }

    /* inputs (an input that is also an initializer is a constant with a
     * default: kiln treats it as the constant) */
    g->inputs = kn_graph_alloc(r, (gp->n_input + 1) * sizeof *g->inputs);
    if (!g->inputs) {
        s = OOM(im);
        goto out;
    }
    for (size_t i = 0; i < gp->n_input; i++) {
        const Onnx__ValueInfoProto *vi = gp->input[i];
        const char *iname = vi ? safe(vi->name) : "";
        if (!*iname) {
            s = ERR(im, KN_ERR_INVALID, "%s: graph '%s': input %zu has no name", im->file, g->name, i);
            goto out;
        }
        kn_value v = {0};
        v.kind = KN_VAL_INPUT;
        v.producer = KN_NONE;
        if ((s = translate(c, fc, iname, &v.name)) != KN_OK)
            goto out;
        kn_id prev = scope_get(&sc, v.name);
        if (prev != KN_NONE) {
            if (g->values[prev].kind == KN_VAL_CONST)
                continue;
            s = ERR(im, KN_ERR_INVALID, "%s: graph '%s': input '%s' is listed twice", im->file, g->name, v.name);
            goto out;
        }
        snprintf(what, sizeof what, "graph '%s': input '%s'", g->name, iname);
        if ((s = kn_onnx_type(im, vi->type, what, &v.type)) != KN_OK)
            goto out;
        kn_id id;
        if (kn_graph_add_value(g, &v, &id) != KN_OK || scope_put(&sc, v.name, id) != KN_OK) {
            s = OOM(im);
            goto out;
        }
        g->inputs[g->n_inputs++] = id;
    }

    if ((s = import_nodes(c, &sc, gp->node, gp->n_node, fc, depth)) != KN_OK)
        goto out;

    /* declared types of intermediate values */
    for (size_t i = 0; i < gp->n_value_info; i++) {
        const Onnx__ValueInfoProto *vi = gp->value_info[i];
        if (!vi || !vi->name || !*vi->name || !vi->type)
            continue;
        kn_str name;
        if ((s = translate(c, fc, vi->name, &name)) != KN_OK)
            goto out;
        kn_id id = scope_get(&sc, name);
        if (id == KN_NONE || g->values[id].kind != KN_VAL_NODE)
            continue;
        snprintf(what, sizeof what, "graph '%s': value_info '%s'", g->name, vi->name);
        if ((s = kn_onnx_type(im, vi->type, what, &g->values[id].type)) != KN_OK)
            goto out;
    }

    g->outputs = kn_graph_alloc(r, (gp->n_output + 1) * sizeof *g->outputs);
    if (!g->outputs) {
        s = OOM(im);
        goto out;
    }
    for (size_t i = 0; i < gp->n_output; i++) {
        const Onnx__ValueInfoProto *vi = gp->output[i];
        const char *oname = vi ? safe(vi->name) : "";
        if (!*oname) {
            s = ERR(im, KN_ERR_INVALID, "%s: graph '%s': output %zu has no name", im->file, g->name, i);
            goto out;
        }
        kn_str name;
        kn_id id;
        if ((s = translate(c, fc, oname, &name)) != KN_OK)
            goto out;
        if (scope_lookup(&sc, name, &id) != KN_OK) {
            s = OOM(im);
            goto out;
        }
        if (id == KN_NONE) {
            s = ERR(im, KN_ERR_INVALID, "%s: graph '%s': output '%s' is not produced by any node, input or initializer",
                    im->file, g->name, name);
            goto out;
        }
        kn_value *v = &g->values[id];
        if (vi->type && v->kind == KN_VAL_NODE) {
            snprintf(what, sizeof what, "graph '%s': output '%s'", g->name, oname);
            if ((s = kn_onnx_type(im, vi->type, what, &v->type)) != KN_OK)
                goto out;
        }
        g->outputs[g->n_outputs++] = id;
    }
out:
    scope_free(&sc);
    return s != KN_OK ? s : im->status;
}

/* ---- model ---- */

static kn_status import_model(imp_ctx *c)
{
    kn_onnx_import *im = c->im;
    kn_graph *r = im->root;
    Onnx__ModelProto *m = c->model;
    kn_model_info *info = r->info;
    if (!m->graph)
        return ERR(im, KN_ERR_INVALID, "%s: not an ONNX model: it has no graph", im->file);
    if (!m->has_ir_version)
        kn_diag_add(im->diag, KN_WARNING, "%s: the model does not say its IR version", im->file);
    info->ir_version = m->has_ir_version ? m->ir_version : 0;
    info->model_version = m->has_model_version ? m->model_version : 0;
    if (kn_graph_intern_cstr(r, im->file, &info->path) != KN_OK ||
        kn_graph_intern_cstr(r, m->producer_name, &info->producer_name) != KN_OK ||
        kn_graph_intern_cstr(r, m->producer_version, &info->producer_version) != KN_OK ||
        kn_graph_intern_cstr(r, m->domain, &info->domain) != KN_OK ||
        kn_graph_intern_cstr(r, m->doc_string, &info->doc) != KN_OK)
        return OOM(im);
    info->opsets = kn_graph_alloc(r, (m->n_opset_import + 1) * sizeof *info->opsets);
    info->metadata = kn_graph_alloc(r, (m->n_metadata_props + 1) * sizeof *info->metadata);
    if (!info->opsets || !info->metadata)
        return OOM(im);
    for (size_t i = 0; i < m->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[i];
        if (!o)
            continue;
        if (!o->has_version || o->version < 1)
            return ERR(im, KN_ERR_INVALID, "%s: opset import for domain '%s' has no valid version", im->file,
                       safe(o->domain));
        kn_opset *os = &info->opsets[info->n_opsets++];
        if (kn_graph_intern_cstr(r, o->domain, &os->domain) != KN_OK)
            return OOM(im);
        os->version = o->version;
        if (kn_domain_of(o->domain) == KN_DOM_ONNX && o->version > KN_ONNX_OPSET_MAX)
            kn_diag_add(im->diag, KN_WARNING,
                        "%s: ai.onnx opset %lld is newer than kiln's op table (%d); ops are read as of opset %d",
                        im->file, (long long)o->version, KN_ONNX_OPSET_MAX, KN_ONNX_OPSET_MAX);
    }
    for (size_t i = 0; i < m->n_metadata_props; i++) {
        const Onnx__StringStringEntryProto *kv = m->metadata_props[i];
        if (!kv)
            continue;
        kn_kv *o = &info->metadata[info->n_metadata++];
        if (kn_graph_intern_cstr(r, kv->key, &o->key) != KN_OK || kn_graph_intern_cstr(r, kv->value, &o->value) != KN_OK)
            return OOM(im);
    }
    info->n_functions = (uint32_t)m->n_functions;
    return import_graph(c, NULL, m->graph, r, NULL, 0);
}

/* ---- protobuf-c allocator bridge ---- */

typedef struct pb_alloc {
    const kn_allocator *a;
    bool failed;
} pb_alloc;

static void *pb_alloc_fn(void *ctx, size_t n)
{
    pb_alloc *p = ctx;
    void *r = kn_mem_alloc(p->a, n);
    if (!r)
        p->failed = true;
    return r;
}

static void pb_free_fn(void *ctx, void *ptr)
{
    pb_alloc *p = ctx;
    kn_mem_free(p->a, ptr);
}

static bool pb_failed(const ProtobufCAllocator *pa) { return ((const pb_alloc *)pa->allocator_data)->failed; }

#define KN_MODEL_MAX_BYTES ((size_t)INT32_MAX) /* protobuf's own 2 GiB limit */

static kn_status import_bytes(const void *data, size_t size, const char *base_dir, const char *name,
                              const kn_import_options *opts, const kn_allocator *a, kn_diag *diag, kn_graph **out)
{
    *out = NULL;
    if (!a)
        a = kn_default_allocator();
    kn_onnx_import im = {0};
    im.diag = diag;
    im.file = name ? name : "<memory>";
    im.base_dir = base_dir;
    if (opts)
        im.opts = *opts;
    if (!im.opts.max_subgraph_depth)
        im.opts.max_subgraph_depth = 64;
    if (!im.opts.max_function_depth)
        im.opts.max_function_depth = 32;
    if (!im.opts.max_nodes)
        im.opts.max_nodes = 10000000;
    if (!im.opts.max_data_bytes) /* typed fields widen (float16 in int32_data), sparse tensors densify */
        im.opts.max_data_bytes = ((size_t)1 << 30) + (size > (SIZE_MAX - ((size_t)1 << 30)) / 4 ? 0 : 4 * size);
    if (size == 0)
        return ERR(&im, KN_ERR_INVALID, "%s: the file is empty", im.file);
    if (size > KN_MODEL_MAX_BYTES)
        return ERR(&im, KN_ERR_LIMIT, "%s: %zu bytes is over protobuf's 2 GiB limit; store the weights as external data",
                   im.file, size);
    if (!pb_depth_ok(&onnx__model_proto__descriptor, data, (const uint8_t *)data + size, 0))
        return ERR(&im, KN_ERR_LIMIT, "%s: protobuf messages nested deeper than %d levels", im.file, KN_PB_MAX_DEPTH);
    pb_alloc pbs = {a, false};
    ProtobufCAllocator pa = {pb_alloc_fn, pb_free_fn, &pbs};
    Onnx__ModelProto *m = onnx__model_proto__unpack(&pa, size, data);
    if (!m) {
        if (pbs.failed)
            return kn_onnx_fail(&im, KN_ERR_NOMEM);
        return ERR(&im, KN_ERR_INVALID, "%s: not a valid ONNX model (protobuf decoding failed: truncated or not a ModelProto)",
                   im.file);
    }
    kn_status s = kn_graph_create(a, &im.root);
    if (s == KN_OK) {
        imp_ctx c = {&im, m, &pa};
        s = import_model(&c);
        if (s == KN_OK)
            s = im.status;
        if (s == KN_OK && pbs.failed)
            s = KN_ERR_NOMEM;
        kn_onnx_ext_close(&im);
    } else {
        kn_onnx_fail(&im, s);
    }
    onnx__model_proto__free_unpacked(m, &pa);
    if (s != KN_OK) {
        kn_graph_destroy(im.root);
        return s;
    }
    *out = im.root;
    return KN_OK;
}

/* Every failure carries at least one message, out-of-memory included. */
static kn_status import_checked(const void *data, size_t size, const char *base_dir, const char *name,
                                const kn_import_options *opts, const kn_allocator *a, kn_diag *diag, kn_graph **out)
{
    size_t errors = kn_diag_count(diag, KN_ERROR);
    kn_status s = import_bytes(data, size, base_dir, name, opts, a, diag, out);
    if (s != KN_OK && kn_diag_count(diag, KN_ERROR) == errors)
        kn_diag_add(diag, KN_ERROR, "%s: %s", name ? name : "<memory>", kn_status_str(s));
    return s;
}

kn_status kn_import_onnx_memory(const void *data, size_t size, const char *base_dir, const char *display_name,
                                const kn_import_options *opts, const kn_allocator *a, kn_diag *diag, kn_graph **out)
{
    return import_checked(data, size, base_dir, display_name, opts, a, diag, out);
}

kn_status kn_import_onnx_file(const char *path, const kn_import_options *opts, const kn_allocator *a, kn_diag *diag,
                              kn_graph **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        kn_diag_add(diag, KN_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        kn_diag_add(diag, KN_ERROR, "%s: not a regular file", path);
        return KN_ERR_IO;
    }
    size_t size = (size_t)st.st_size;
    void *map = NULL;
    if (size) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            kn_diag_add(diag, KN_ERROR, "%s: cannot map: %s", path, strerror(e));
            return KN_ERR_IO;
        }
    }
    close(fd);
    /* base dir: everything before the last '/', or "." */
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path) : 1;
    if (slash && dl == 0)
        dl = 1; /* "/model.onnx" → "/" */
    char *dir = kn_mem_alloc(a, dl + 1);
    kn_status s;
    if (!dir) {
        kn_diag_add(diag, KN_ERROR, "%s: out of memory", path);
        s = KN_ERR_NOMEM;
    } else {
        memcpy(dir, slash ? path : ".", dl);
        dir[dl] = 0;
        s = import_checked(map ? map : "", size, dir, path, opts, a, diag, out);
        kn_mem_free(a, dir);
    }
    if (map)
        munmap(map, size);
    return s;
}
