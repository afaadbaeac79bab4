/* The CPU reference executor: runs a graph's nodes in order, each through
 * its kernel, keeping every value alive exactly until its last reader
 * (subgraphs that read it from an enclosing scope included). */
#include "runtime/cpu/exec.h"
#include "ir/arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const kn_ref_fn kernels[KN_OP_COUNT] = {
#define KN_KERNEL(id) [KN_OP_##id] = kn_ref_##id,
#include "runtime/cpu/kernels.def"
#undef KN_KERNEL
};

kn_ref_fn kn_cpu_kernel(kn_op op) { return (unsigned)op < KN_OP_COUNT ? kernels[op] : NULL; }

typedef struct frame {
    const kn_graph *g;
    struct frame *parent;
    kn_rt_tensor **vals; /* per value id; NULL: not yet computed / released / omitted */
    uint8_t *owned;      /* vals[i] is this frame's to free */
} frame;

typedef struct exec {
    const kn_allocator *a;
    kn_diag *diag;
    const char *file;
    int depth;
    kn_cpu_observer observe;
    void *observe_ctx;
    void *kv; /* kn_cpu_run_kv's context for kiln.PagedAttention, or NULL */
    kn_cpu_standin standin; /* kn_cpu_run_probe's, or NULL */
} exec;

struct kn_kctx {
    exec *ex;
    frame *fr;
    const kn_node *node;
    kn_rt_tensor **outs;
    void **scratch;
    uint32_t n_scratch, cap_scratch;
};

static kn_status run_graph(exec *ex, frame *parent, const kn_graph *g, const kn_rt_tensor *const *inputs,
                           uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out);

/* ---- values ---- */

static kn_status value_get(exec *ex, frame *f, kn_id id, const kn_rt_tensor **out)
{
    *out = NULL;
    while (f && id < f->g->n_values && f->g->values[id].kind == KN_VAL_OUTER) {
        id = f->g->values[id].outer;
        f = f->parent;
    }
    if (!f || id >= f->g->n_values)
        return KN_ERR_INTERNAL;
    if (f->vals[id]) {
        *out = f->vals[id];
        return KN_OK;
    }
    const kn_value *v = &f->g->values[id];
    if (v->kind == KN_VAL_CONST && v->tensor) {
        const kn_tensor *t = v->tensor;
        KN_TRY(kn_rt_tensor_view(ex->a, t->dtype, t->rank, t->dims, t->data, &f->vals[id]));
        f->owned[id] = 1;
        *out = f->vals[id];
        return KN_OK;
    }
    kn_diag_add(ex->diag, KN_ERROR, "%s: value '%s' is read before it is computed", ex->file, v->name);
    return KN_ERR_INTERNAL;
}

/* ---- kernel context ---- */

const kn_node *kn_kctx_node(const kn_kctx *c) { return c->node; }
int64_t kn_kctx_opset(const kn_kctx *c) { return c->node->opset; }
uint32_t kn_kctx_n_inputs(const kn_kctx *c) { return c->node->n_inputs; }
uint32_t kn_kctx_n_outputs(const kn_kctx *c) { return c->node->n_outputs; }
const kn_allocator *kn_kctx_allocator(const kn_kctx *c) { return c->ex->a; }
void *kn_kctx_kv(const kn_kctx *c) { return c->ex->kv; }

const kn_rt_tensor *kn_kctx_in(const kn_kctx *c, uint32_t i)
{
    if (i >= c->node->n_inputs || c->node->inputs[i] == KN_NONE)
        return NULL;
    const kn_rt_tensor *t = NULL;
    value_get(c->ex, c->fr, c->node->inputs[i], &t); /* resolved before the kernel runs */
    return t;
}

bool kn_kctx_out_wanted(const kn_kctx *c, uint32_t i)
{
    return i < c->node->n_outputs && c->node->outputs[i] != KN_NONE;
}

kn_status kn_kctx_out(kn_kctx *c, uint32_t i, kn_dtype t, int32_t rank, const int64_t *dims, kn_rt_tensor **out)
{
    *out = NULL;
    if (i >= c->node->n_outputs)
        return kn_kctx_fail(c, KN_ERR_INVALID, "output %u requested, but the node has %u", i, c->node->n_outputs);
    kn_rt_tensor *x;
    kn_status s = kn_rt_tensor_new(c->ex->a, t, rank, dims, &x);
    if (s == KN_ERR_LIMIT || s == KN_ERR_INVALID)
        return kn_kctx_fail(c, s, "output %u: cannot make a %s tensor of rank %d (size overflows or bad shape)", i,
                            kn_dtype_name(t), (int)rank);
    KN_TRY(s);
    kn_rt_tensor_free(c->ex->a, c->outs[i]);
    c->outs[i] = x;
    *out = x;
    return KN_OK;
}

kn_status kn_kctx_out_set(kn_kctx *c, uint32_t i, kn_rt_tensor *t)
{
    if (i >= c->node->n_outputs) {
        kn_rt_tensor_free(c->ex->a, t);
        return kn_kctx_fail(c, KN_ERR_INVALID, "output %u set, but the node has %u", i, c->node->n_outputs);
    }
    kn_rt_tensor_free(c->ex->a, c->outs[i]);
    c->outs[i] = t;
    return KN_OK;
}

const kn_attr *kn_kctx_attr(const kn_kctx *c, const char *name) { return kn_node_attr(c->node, name); }

int64_t kn_kctx_attr_int(const kn_kctx *c, const char *name, int64_t def)
{
    const kn_attr *a = kn_node_attr(c->node, name);
    return a && a->kind == KN_ATTR_INT ? a->u.i : def;
}

float kn_kctx_attr_float(const kn_kctx *c, const char *name, float def)
{
    const kn_attr *a = kn_node_attr(c->node, name);
    return a && a->kind == KN_ATTR_FLOAT ? a->u.f : def;
}

const char *kn_kctx_attr_str(const kn_kctx *c, const char *name, const char *def)
{
    const kn_attr *a = kn_node_attr(c->node, name);
    return a && a->kind == KN_ATTR_STRING ? (const char *)a->u.s.data : def;
}

const int64_t *kn_kctx_attr_ints(const kn_kctx *c, const char *name, uint32_t *n)
{
    const kn_attr *a = kn_node_attr(c->node, name);
    *n = a && a->kind == KN_ATTR_INTS ? a->n : 0;
    return a && a->kind == KN_ATTR_INTS ? a->u.ints : NULL;
}

const float *kn_kctx_attr_floats(const kn_kctx *c, const char *name, uint32_t *n)
{
    const kn_attr *a = kn_node_attr(c->node, name);
    *n = a && a->kind == KN_ATTR_FLOATS ? a->n : 0;
    return a && a->kind == KN_ATTR_FLOATS ? a->u.floats : NULL;
}

void *kn_kctx_scratch(kn_kctx *c, size_t bytes)
{
    if (kn_mem_grow(c->ex->a, (void **)&c->scratch, &c->cap_scratch, c->n_scratch + 1, sizeof *c->scratch) != KN_OK)
        return NULL;
    void *p = kn_mem_alloc(c->ex->a, bytes ? bytes : 1);
    if (!p)
        return NULL;
    memset(p, 0, bytes ? bytes : 1);
    c->scratch[c->n_scratch++] = p;
    return p;
}

kn_status kn_kctx_fail(kn_kctx *c, kn_status s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const kn_node *n = c->node;
    kn_diag_add(c->ex->diag, KN_ERROR, "%s: node '%s' (%s, opset %lld): %s", c->ex->file, n->name, n->op_type,
                (long long)n->opset, msg);
    return s;
}

kn_status kn_kctx_run_graph(kn_kctx *c, const kn_graph *body, const kn_rt_tensor *const *inputs, uint32_t n_in,
                            kn_rt_tensor **outputs, uint32_t n_out)
{
    if (c->ex->depth > 256)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "subgraphs nested deeper than 256 at run time");
    c->ex->depth++;
    kn_status s = run_graph(c->ex, c->fr, body, inputs, n_in, outputs, n_out);
    c->ex->depth--;
    return s;
}

/* ---- running a graph ---- */

/* last[v]: index of the last node of g that reads v (directly or from a
 * subgraph); n_nodes for graph outputs; -1 if never read. */
static void last_uses(const kn_graph *g, int64_t *last)
{
    for (kn_id v = 0; v < g->n_values; v++)
        last[v] = -1;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE)
                last[n->inputs[i]] = k;
        for (uint32_t i = 0; i < n->n_attrs; i++) {
            const kn_attr *a = &n->attrs[i];
            uint32_t ng = a->kind == KN_ATTR_GRAPH ? 1 : a->kind == KN_ATTR_GRAPHS ? a->n : 0;
            for (uint32_t j = 0; j < ng; j++) {
                const kn_graph *sg = a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[j];
                for (kn_id v = 0; v < sg->n_values; v++)
                    if (sg->values[v].kind == KN_VAL_OUTER && sg->values[v].outer < g->n_values)
                        last[sg->values[v].outer] = k;
            }
        }
    }
    for (uint32_t i = 0; i < g->n_outputs; i++)
        last[g->outputs[i]] = g->n_nodes;
}

static kn_status check_input(exec *ex, const kn_graph *g, const kn_value *v, const kn_rt_tensor *t)
{
    if (v->type.kind != KN_TYPE_TENSOR)
        return KN_OK;
    const char *gn = g->parent ? "subgraph input" : "input";
    if (!t) {
        kn_diag_add(ex->diag, KN_ERROR, "%s: %s '%s' is missing", ex->file, gn, v->name);
        return KN_ERR_INVALID;
    }
    if (v->type.dtype && v->type.dtype != t->dtype) {
        kn_diag_add(ex->diag, KN_ERROR, "%s: %s '%s' must be %s, got %s", ex->file, gn, v->name,
                    kn_dtype_name(v->type.dtype), kn_dtype_name(t->dtype));
        return KN_ERR_INVALID;
    }
    const kn_shape *s = &v->type.shape;
    if (s->rank < 0 || g->parent) /* subgraph shapes are often loose in exported models */
        return KN_OK;
    bool ok = s->rank == t->rank;
    for (int32_t i = 0; ok && i < s->rank; i++)
        ok = s->dims[i].value < 0 || s->dims[i].value == t->dims[i];
    if (!ok) {
        char want[512];
        kn_shape_format(s, want, sizeof want);
        char got[512];
        size_t pos = 0;
        got[0] = 0;
        pos += (size_t)snprintf(got + pos, sizeof got - pos, "[");
        for (int32_t i = 0; i < t->rank && pos < sizeof got; i++)
            pos += (size_t)snprintf(got + pos, sizeof got - pos, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
        if (pos < sizeof got)
            snprintf(got + pos, sizeof got - pos, "]");
        kn_diag_add(ex->diag, KN_ERROR, "%s: %s '%s' must have shape %s, got %s", ex->file, gn, v->name, want, got);
        return KN_ERR_INVALID;
    }
    return KN_OK;
}

static void release(exec *ex, frame *f, kn_id v)
{
    if (f->vals[v] && f->owned[v])
        kn_rt_tensor_free(ex->a, f->vals[v]);
    f->vals[v] = NULL;
    f->owned[v] = 0;
}

static kn_status run_node(exec *ex, frame *f, kn_id k)
{
    const kn_graph *g = f->g;
    const kn_node *n = &g->nodes[k];
    kn_ref_fn fn = kn_cpu_kernel(n->op);
    if (!fn) {
        kn_diag_add(ex->diag, KN_ERROR, "%s: node '%s' (%s, opset %lld): the CPU backend has no kernel for %s%s%s",
                    ex->file, n->name, n->op_type, (long long)n->opset, *n->domain ? n->domain : "",
                    *n->domain ? "." : "", n->op_type);
        return KN_ERR_UNSUPPORTED;
    }
    kn_kctx c = {ex, f, n, NULL, NULL, 0, 0};
    kn_status s = KN_OK;
    const kn_rt_tensor *ins[8] = {0}; /* for the stand-in: the first 8 inputs */
    for (uint32_t i = 0; i < n->n_inputs && s == KN_OK; i++) {
        const kn_rt_tensor *t = NULL;
        if (n->inputs[i] != KN_NONE)
            s = value_get(ex, f, n->inputs[i], &t);
        if (i < 8)
            ins[i] = t;
        /* a KV cache's past input carries only its shape (docs/llm.md) */
        if (s == KN_OK && n->inputs[i] != KN_NONE && !t->data && t->numel > 0 && n->op != KN_OP_Shape &&
            n->op != KN_OP_Size)
            s = kn_kctx_fail(&c, KN_ERR_INVALID, "input %u ('%s') has a shape but no data (a KV cache past input?)",
                             i, f->g->values[n->inputs[i]].name);
    }
    if (s != KN_OK)
        return s;
    c.outs = kn_mem_alloc(ex->a, (n->n_outputs + 1) * sizeof *c.outs);
    if (!c.outs)
        return KN_ERR_NOMEM;
    memset(c.outs, 0, (n->n_outputs + 1) * sizeof *c.outs);
    bool done = false;
    if (ex->standin && n->n_inputs <= 8)
        s = ex->standin(ex->observe_ctx, g, k, ins, c.outs, ex->a, &done);
    if (s == KN_OK && !done)
        s = fn(&c);
    for (uint32_t i = 0; i < n->n_outputs && s == KN_OK; i++)
        if (n->outputs[i] != KN_NONE && !c.outs[i])
            s = kn_kctx_fail(&c, KN_ERR_INTERNAL, "the kernel did not produce output %u", i);
    for (uint32_t i = 0; i < n->n_outputs; i++) {
        kn_id v = n->outputs[i];
        if (s == KN_OK && v != KN_NONE) {
            f->vals[v] = c.outs[i];
            f->owned[v] = 1;
            if (ex->observe)
                ex->observe(ex->observe_ctx, g, v, c.outs[i]);
        } else {
            kn_rt_tensor_free(ex->a, c.outs[i]);
        }
    }
    for (uint32_t i = 0; i < c.n_scratch; i++)
        kn_mem_free(ex->a, c.scratch[i]);
    kn_mem_free(ex->a, c.scratch);
    kn_mem_free(ex->a, c.outs);
    if (s == KN_ERR_NOMEM && kn_diag_count(ex->diag, KN_ERROR) == 0)
        kn_diag_add(ex->diag, KN_ERROR, "%s: node '%s' (%s): out of memory", ex->file, n->name, n->op_type);
    return s;
}

static kn_status run_graph(exec *ex, frame *parent, const kn_graph *g, const kn_rt_tensor *const *inputs,
                           uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out)
{
    const kn_allocator *a = ex->a;
    for (uint32_t i = 0; i < n_out; i++)
        outputs[i] = NULL;
    if (n_in != g->n_inputs || n_out != g->n_outputs) {
        kn_diag_add(ex->diag, KN_ERROR, "%s: graph '%s' takes %u inputs and gives %u outputs (called with %u and %u)",
                    ex->file, g->name, g->n_inputs, g->n_outputs, n_in, n_out);
        return KN_ERR_INVALID;
    }
    frame f = {g, parent, NULL, NULL};
    size_t nv = (size_t)g->n_values + 1;
    f.vals = kn_mem_alloc(a, nv * sizeof *f.vals);
    f.owned = kn_mem_alloc(a, nv);
    int64_t *last = kn_mem_alloc(a, nv * sizeof *last);
    kn_id *head = kn_mem_alloc(a, ((size_t)g->n_nodes + 1) * sizeof *head);
    kn_id *next = kn_mem_alloc(a, nv * sizeof *next);
    kn_status s = KN_OK;
    if (f.vals)
        memset(f.vals, 0, nv * sizeof *f.vals);
    if (f.owned)
        memset(f.owned, 0, nv);
    if (!f.vals || !f.owned || !last || !head || !next) {
        s = KN_ERR_NOMEM;
        goto out;
    }
    last_uses(g, last);
    for (uint32_t i = 0; i < n_in && s == KN_OK; i++) {
        kn_id v = g->inputs[i];
        s = check_input(ex, g, &g->values[v], inputs[i]);
        f.vals[v] = (kn_rt_tensor *)inputs[i];
    }
    /* bucket values by the node after which they die */
    for (kn_id k = 0; k <= g->n_nodes; k++)
        head[k] = KN_NONE;
    for (kn_id v = 0; v < g->n_values; v++) {
        if (last[v] < 0 || last[v] >= (int64_t)g->n_nodes)
            continue;
        next[v] = head[last[v]];
        head[last[v]] = v;
    }
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        s = run_node(ex, &f, k);
        if (s != KN_OK)
            break;
        const kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_outputs; i++)
            if (n->outputs[i] != KN_NONE && last[n->outputs[i]] < 0)
                release(ex, &f, n->outputs[i]); /* never read */
        for (kn_id v = head[k]; v != KN_NONE; v = next[v])
            release(ex, &f, v);
    }
    for (uint32_t i = 0; i < n_out && s == KN_OK; i++) {
        kn_id v = g->outputs[i];
        const kn_rt_tensor *t;
        s = value_get(ex, &f, v, &t);
        if (s != KN_OK)
            break;
        if (f.vals[v] == t && f.owned[v] && g->values[v].kind == KN_VAL_NODE) {
            outputs[i] = f.vals[v]; /* hand over */
            f.vals[v] = NULL;
            f.owned[v] = 0;
        } else {
            s = kn_rt_tensor_clone(a, t, &outputs[i]);
        }
    }
out:
    if (f.vals && f.owned)
        for (kn_id v = 0; v < g->n_values; v++)
            release(ex, &f, v);
    if (s != KN_OK)
        for (uint32_t i = 0; i < n_out; i++) {
            kn_rt_tensor_free(a, outputs[i]);
            outputs[i] = NULL;
        }
    kn_mem_free(a, f.vals);
    kn_mem_free(a, f.owned);
    kn_mem_free(a, last);
    kn_mem_free(a, head);
    kn_mem_free(a, next);
    return s;
}

kn_status kn_cpu_run_node(const kn_graph *g, kn_id node, const kn_id *ids, const kn_rt_tensor *const *values,
                          uint32_t n_values, kn_rt_tensor **outputs, const kn_allocator *a, kn_diag *diag)
{
    if (!a)
        a = kn_default_allocator();
    exec ex = {a, diag, g->root && g->root->info && g->root->info->path ? g->root->info->path : "<graph>", 0, NULL,
               NULL, NULL};
    if (node >= g->n_nodes)
        return KN_ERR_INTERNAL;
    const kn_node *n = &g->nodes[node];
    for (uint32_t i = 0; i < n->n_outputs; i++)
        outputs[i] = NULL;
    frame f = {g, NULL, NULL, NULL};
    size_t nv = (size_t)g->n_values + 1;
    f.vals = kn_mem_alloc(a, nv * sizeof *f.vals);
    f.owned = kn_mem_alloc(a, nv);
    kn_status s = f.vals && f.owned ? KN_OK : KN_ERR_NOMEM;
    if (f.vals)
        memset(f.vals, 0, nv * sizeof *f.vals);
    if (f.owned)
        memset(f.owned, 0, nv);
    for (uint32_t i = 0; s == KN_OK && i < n_values; i++) {
        if (ids[i] >= g->n_values) {
            s = KN_ERR_INTERNAL;
            break;
        }
        f.vals[ids[i]] = (kn_rt_tensor *)values[i]; /* borrowed */
    }
    if (s == KN_OK)
        s = run_node(&ex, &f, node);
    for (uint32_t i = 0; s == KN_OK && i < n->n_outputs; i++) {
        kn_id v = n->outputs[i];
        if (v == KN_NONE)
            continue;
        outputs[i] = f.vals[v]; /* run_node made it: ours to hand over */
        f.vals[v] = NULL;
        f.owned[v] = 0;
    }
    if (f.vals && f.owned)
        for (kn_id v = 0; v < g->n_values; v++)
            release(&ex, &f, v);
    kn_mem_free(a, f.vals);
    kn_mem_free(a, f.owned);
    if (s != KN_OK && kn_diag_count(diag, KN_ERROR) == 0)
        kn_diag_add(diag, KN_ERROR, "%s: node '%s' (%s): %s", ex.file, n->name, n->op_type, kn_status_str(s));
    return s;
}

kn_status kn_cpu_run(const kn_graph *g, const kn_allocator *a, kn_diag *diag, const kn_rt_tensor *const *inputs,
                     uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out)
{
    return kn_cpu_run_observed(g, a, diag, inputs, n_in, outputs, n_out, NULL, NULL);
}

kn_status kn_cpu_run_observed(const kn_graph *g, const kn_allocator *a, kn_diag *diag,
                              const kn_rt_tensor *const *inputs, uint32_t n_in, kn_rt_tensor **outputs,
                              uint32_t n_out, kn_cpu_observer observe, void *ctx)
{
    return kn_cpu_run_kv(g, a, diag, inputs, n_in, outputs, n_out, observe, ctx, NULL);
}

kn_status kn_cpu_run_kv(const kn_graph *g, const kn_allocator *a, kn_diag *diag, const kn_rt_tensor *const *inputs,
                        uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out, kn_cpu_observer observe, void *ctx,
                        void *kv)
{
    return kn_cpu_run_probe(g, a, diag, inputs, n_in, outputs, n_out, observe, ctx, kv, NULL);
}

kn_status kn_cpu_run_probe(const kn_graph *g, const kn_allocator *a, kn_diag *diag, const kn_rt_tensor *const *inputs,
                           uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out, kn_cpu_observer observe, void *ctx,
                           void *kv, kn_cpu_standin standin)
{
    exec ex = {a ? a : kn_default_allocator(), diag,
               g->root && g->root->info && g->root->info->path ? g->root->info->path : "<graph>", 0, observe, ctx, kv,
               standin};
    kn_status s = run_graph(&ex, NULL, g, inputs, n_in, outputs, n_out);
    if (s != KN_OK && kn_diag_count(diag, KN_ERROR) == 0)
        kn_diag_add(diag, KN_ERROR, "%s: %s", ex.file, kn_status_str(s));
    return s;
}
