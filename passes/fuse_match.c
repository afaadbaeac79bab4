/* Pattern-matching and replacement helpers of the fusion passes (see
 * fuse_match.h). */
#include "passes/fuse_match.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kn_fm_add(kn_fm *m, kn_id k)
{
    if (!kn_fm_has(m, k) && m->n < KN_FM_MAX)
        m->nodes[m->n++] = k;
}

bool kn_fm_has(const kn_fm *m, kn_id k)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (m->nodes[i] == k)
            return true;
    return false;
}

kn_id kn_fm_producer(const kn_graph *g, const kn_uses *u, kn_id v, kn_op op)
{
    if (v == KN_NONE || v >= g->n_values || g->values[v].kind != KN_VAL_NODE)
        return KN_NONE;
    kn_id k = g->values[v].producer;
    if (k == KN_NONE || u->dead[k])
        return KN_NONE;
    const kn_node *n = &g->nodes[k];
    if (n->op != op || *n->domain || n->n_outputs != 1 || kn_rw_has_subgraph(n))
        return KN_NONE;
    return k;
}

kn_id kn_fm_sole_reader(const kn_graph *g, const kn_uses *u, kn_id v, kn_op op)
{
    if (v == KN_NONE || u->readers[v] != 1 || u->pinned[v])
        return KN_NONE;
    kn_id from = g->values[v].kind == KN_VAL_NODE ? g->values[v].producer + 1 : 0;
    for (kn_id k = from; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (u->dead[k])
            continue;
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] == v)
                return (op == KN_OP_UNSUPPORTED || n->op == op) && !*n->domain && n->n_outputs == 1 ? k : KN_NONE;
    }
    return KN_NONE;
}

kn_id kn_fm_other(const kn_node *n, kn_id v)
{
    if (n->n_inputs != 2)
        return KN_NONE;
    if (n->inputs[0] == v)
        return n->inputs[1];
    if (n->inputs[1] == v)
        return n->inputs[0];
    return KN_NONE;
}

bool kn_fm_scalar(const kn_graph *g, kn_id v, double *out)
{
    const kn_tensor *t = kn_rw_const(g, v);
    if (!t || t->n_elems != 1 || t->rank > 1 || !t->data || (!kn_dt_is_float(t->dtype) && !kn_dt_is_int(t->dtype)))
        return false;
    *out = kn_get_f64(t->dtype, t->data, 0);
    return true;
}

bool kn_fm_scalar_is(const kn_graph *g, kn_id v, double want, double rtol)
{
    double x;
    return kn_fm_scalar(g, v, &x) && fabs(x - want) <= rtol * fabs(want);
}

kn_dtype kn_fm_float_dtype(const kn_graph *g, kn_id v)
{
    const kn_type *t = kn_rw_type(g, v);
    return t && kn_dt_is_float(t->dtype) ? t->dtype : KN_UNDEFINED;
}

bool kn_fm_channel_param(const kn_graph *g, kn_id v, kn_dtype dt)
{
    const kn_tensor *c = kn_rw_const(g, v);
    if (c)
        return c->dtype == dt && c->rank <= 1;
    const kn_type *t = kn_rw_type(g, v);
    return t && kn_rw_shapes_trusted(g) && t->dtype == dt && t->shape.rank >= 0 && t->shape.rank <= 1;
}

bool kn_fm_closed(const kn_graph *g, const kn_uses *u, const kn_fm *m, kn_id final)
{
    for (uint32_t i = 0; i < m->n; i++) {
        const kn_node *n = &g->nodes[m->nodes[i]];
        if (u->dead[m->nodes[i]] || n->n_outputs != 1 || kn_rw_has_subgraph(n))
            return false;
        kn_id v = n->outputs[0];
        if (v == final)
            continue;
        if (v == KN_NONE || u->pinned[v])
            return false;
        uint32_t inside = 0;
        for (uint32_t j = 0; j < m->n; j++) {
            const kn_node *r = &g->nodes[m->nodes[j]];
            for (uint32_t a = 0; a < r->n_inputs; a++)
                inside += r->inputs[a] == v;
        }
        if (inside != u->readers[v])
            return false;
    }
    return true;
}

kn_status kn_fm_attr_f(kn_graph *g, const char *name, float v, kn_attr *out)
{
    memset(out, 0, sizeof *out);
    KN_TRY(kn_graph_intern_cstr(g, name, &out->name));
    out->kind = KN_ATTR_FLOAT;
    out->u.f = v;
    return KN_OK;
}

kn_status kn_fm_attr_i(kn_graph *g, const char *name, int64_t v, kn_attr *out)
{
    memset(out, 0, sizeof *out);
    KN_TRY(kn_graph_intern_cstr(g, name, &out->name));
    out->kind = KN_ATTR_INT;
    out->u.i = v;
    return KN_OK;
}

kn_status kn_fm_attr_s(kn_graph *g, const char *name, const char *v, kn_attr *out)
{
    memset(out, 0, sizeof *out);
    KN_TRY(kn_graph_intern_cstr(g, name, &out->name));
    kn_str s;
    KN_TRY(kn_graph_intern_cstr(g, v, &s));
    out->kind = KN_ATTR_STRING;
    out->u.s = (kn_bytes){(const uint8_t *)s, strlen(s)};
    return KN_OK;
}

static int cmp_id(const void *a, const void *b)
{
    kn_id x = *(const kn_id *)a, y = *(const kn_id *)b;
    return x < y ? -1 : x > y;
}

/* The names a node contributes to `_origins`: its own `_origins` when it
 * is itself a fused node, else its name ("#<id>" when it has none). */
static uint32_t origins_of(kn_graph *g, kn_id k, kn_bytes *out, kn_status *s)
{
    const kn_node *n = &g->nodes[k];
    const kn_attr *a = kn_node_attr(n, "_origins");
    if (a && a->kind == KN_ATTR_STRINGS) {
        if (out)
            memcpy(out, a->u.strings, a->n * sizeof *out);
        return a->n;
    }
    if (out) {
        if (n->name && *n->name) {
            out[0] = (kn_bytes){(const uint8_t *)n->name, strlen(n->name)};
        } else {
            char buf[32];
            kn_str nm;
            snprintf(buf, sizeof buf, "#%u", (unsigned)k);
            *s = kn_graph_intern_cstr(g, buf, &nm);
            out[0] = (kn_bytes){(const uint8_t *)(*s == KN_OK ? nm : ""), *s == KN_OK ? strlen(nm) : 0};
        }
    }
    return 1;
}

/* "/a/b/Last" → "/a/b/<op>": the fused node is named after the scope of
 * the pattern's last node. */
static kn_status fused_name(kn_graph *g, const kn_node *last, const char *op, kn_str *out)
{
    const char *nm = last->name ? last->name : "";
    const char *slash = strrchr(nm, '/');
    size_t keep = slash ? (size_t)(slash - nm) + 1 : 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%.*s%s", (int)(keep < 900 ? keep : 900), nm, op);
    return kn_graph_intern_cstr(g, buf, out);
}

kn_status kn_fm_replace(kn_graph *g, kn_uses *u, const kn_fm *m, kn_id final, kn_op op, int64_t opset,
                        const kn_id *inputs, uint32_t n_inputs, const kn_attr *attrs, uint32_t n_attrs)
{
    kn_id ids[KN_FM_MAX];
    memcpy(ids, m->nodes, m->n * sizeof *ids);
    qsort(ids, m->n, sizeof *ids, cmp_id);
    kn_id slot = ids[m->n - 1];
    kn_status s = KN_OK;
    uint32_t n_orig = 0;
    for (uint32_t i = 0; i < m->n; i++)
        n_orig += origins_of(g, ids[i], NULL, &s);
    const kn_op_info *info = kn_op_get(op);
    kn_node fused = {0};
    kn_attr *at = kn_graph_alloc(g, ((size_t)n_attrs + 1) * sizeof *at);
    kn_bytes *orig = kn_graph_alloc(g, (size_t)n_orig * sizeof *orig);
    kn_id *ins = kn_graph_alloc(g, ((size_t)n_inputs + 1) * sizeof *ins);
    kn_id *outs = kn_graph_alloc(g, sizeof *outs);
    if (!at || !orig || !ins || !outs)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0, o = 0; i < m->n; i++)
        o += origins_of(g, ids[i], orig + o, &s);
    KN_TRY(s);
    if (n_attrs)
        memcpy(at, attrs, n_attrs * sizeof *at);
    memset(&at[n_attrs], 0, sizeof *at);
    KN_TRY(kn_graph_intern_cstr(g, "_origins", &at[n_attrs].name));
    at[n_attrs].kind = KN_ATTR_STRINGS;
    at[n_attrs].n = n_orig;
    at[n_attrs].u.strings = orig;
    memcpy(ins, inputs, n_inputs * sizeof *ins);
    outs[0] = final;
    KN_TRY(kn_graph_intern_cstr(g, info->name, &fused.op_type));
    KN_TRY(kn_graph_intern_cstr(g, info->domain == KN_DOM_ONNX ? "" : kn_domain_name(info->domain), &fused.domain));
    KN_TRY(fused_name(g, &g->nodes[slot], info->name, &fused.name));
    fused.op = op;
    fused.opset = opset;
    fused.n_inputs = n_inputs;
    fused.inputs = ins;
    fused.n_outputs = 1;
    fused.outputs = outs;
    fused.n_attrs = n_attrs + 1;
    fused.attrs = at;
    /* reader counts: the pattern's reads go, the fused node's come */
    for (uint32_t i = 0; i < m->n; i++) {
        const kn_node *n = &g->nodes[ids[i]];
        for (uint32_t a = 0; a < n->n_inputs; a++)
            if (n->inputs[a] != KN_NONE)
                u->readers[n->inputs[a]]--;
        if (ids[i] != slot)
            u->dead[ids[i]] = true;
    }
    for (uint32_t a = 0; a < n_inputs; a++)
        if (ins[a] != KN_NONE)
            u->readers[ins[a]]++;
    /* the old producer of `final` no longer writes it */
    kn_id old = g->values[final].producer;
    if (old != slot)
        g->nodes[old].outputs[0] = KN_NONE;
    if (g->nodes[slot].outputs[0] != final)
        kn_rw_orphan(g, g->nodes[slot].outputs[0]);
    g->nodes[slot] = fused;
    g->values[final].producer = slot;
    g->values[final].out_index = 0;
    return KN_OK;
}
