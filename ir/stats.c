/* Whole-graph summaries (see stats.h). */
#include "ir/stats.h"

#include <stdlib.h>
#include <string.h>

typedef struct sctx {
    kn_graph_stats *st;
    kn_op_pred runs;
    const kn_allocator *a;
    uint32_t cap_ops, cap_uns;
    kn_status status;
} sctx;

static kn_op_count *find_or_add(sctx *c, kn_op_count **arr, uint32_t *n, uint32_t *cap, kn_str op, kn_str dom,
                                int64_t opset)
{
    for (uint32_t i = 0; i < *n; i++)
        if ((*arr)[i].op_type == op && (*arr)[i].domain == dom && (*arr)[i].opset == opset)
            return &(*arr)[i];
    if (kn_mem_grow(c->a, (void **)arr, cap, *n + 1, sizeof **arr) != KN_OK)
        return NULL;
    kn_op_count *e = &(*arr)[(*n)++];
    memset(e, 0, sizeof *e);
    e->op_type = op;
    e->domain = dom;
    e->opset = opset;
    return e;
}

static void visit(const kn_graph *g, int depth, void *ctx)
{
    sctx *c = ctx;
    kn_graph_stats *st = c->st;
    if (c->status != KN_OK)
        return;
    if (depth > 0)
        st->n_subgraphs++;
    st->n_nodes += g->n_nodes;
    st->n_values += g->n_values;
    for (kn_id i = 0; i < g->n_values; i++) {
        const kn_value *v = &g->values[i];
        if (v->kind != KN_VAL_CONST || !v->tensor)
            continue;
        const kn_tensor *t = v->tensor;
        st->n_constants++;
        if ((unsigned)t->dtype < KN_DTYPE_COUNT) {
            st->param_count[t->dtype] += (uint64_t)t->n_elems;
            st->param_bytes[t->dtype] += t->nbytes;
        }
        if (t->is_external)
            st->external_bytes += t->nbytes;
    }
    for (kn_id i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        kn_op_count *e = find_or_add(c, &st->ops, &st->n_ops, &c->cap_ops, n->op_type, n->domain, 0);
        if (!e) {
            c->status = KN_ERR_NOMEM;
            return;
        }
        e->count++;
        if (n->op != KN_OP_UNSUPPORTED && (!c->runs || c->runs(n->op)))
            continue;
        e = find_or_add(c, &st->unsupported, &st->n_unsupported, &c->cap_uns, n->op_type, n->domain, n->opset);
        if (!e) {
            c->status = KN_ERR_NOMEM;
            return;
        }
        kn_str *nn = kn_mem_realloc(c->a, e->nodes, (e->count + 1) * sizeof *nn);
        if (!nn) {
            c->status = KN_ERR_NOMEM;
            return;
        }
        e->nodes = nn;
        e->nodes[e->count++] = n->name;
        st->n_unsupported_nodes++;
    }
}

static int by_count(const void *pa, const void *pb)
{
    const kn_op_count *a = pa, *b = pb;
    if (a->count != b->count)
        return a->count > b->count ? -1 : 1;
    int c = strcmp(a->op_type, b->op_type);
    return c ? c : strcmp(a->domain, b->domain);
}

static int by_name(const void *pa, const void *pb)
{
    const kn_op_count *a = pa, *b = pb;
    int c = strcmp(a->domain, b->domain);
    if (c)
        return c;
    c = strcmp(a->op_type, b->op_type);
    return c ? c : (a->opset > b->opset) - (a->opset < b->opset);
}

kn_status kn_graph_stats_compute(const kn_graph *g, kn_op_pred runs, kn_graph_stats *st)
{
    memset(st, 0, sizeof *st);
    sctx c = {st, runs, g->alloc, 0, 0, KN_OK};
    kn_graph_walk(g, visit, &c);
    if (c.status != KN_OK) {
        kn_graph_stats_free(g, st);
        return c.status;
    }
    if (st->n_ops)
        qsort(st->ops, st->n_ops, sizeof *st->ops, by_count);
    if (st->n_unsupported)
        qsort(st->unsupported, st->n_unsupported, sizeof *st->unsupported, by_name);
    return KN_OK;
}

void kn_graph_stats_free(const kn_graph *g, kn_graph_stats *st)
{
    for (uint32_t i = 0; i < st->n_unsupported; i++)
        kn_mem_free(g->alloc, st->unsupported[i].nodes);
    kn_mem_free(g->alloc, st->unsupported);
    kn_mem_free(g->alloc, st->ops);
    memset(st, 0, sizeof *st);
}

kn_status kn_graph_report_unsupported(const kn_graph *g, kn_op_pred runs, const char *target, kn_diag *diag)
{
    kn_graph_stats st;
    KN_TRY(kn_graph_stats_compute(g, runs, &st));
    if (!st.n_unsupported) {
        kn_graph_stats_free(g, &st);
        return KN_OK;
    }
    const char *file = g->root->info && g->root->info->path ? g->root->info->path : "<graph>";
    /* one message: a header line and one line per op */
    size_t cap = 256 + (target ? strlen(target) : 0);
    for (uint32_t i = 0; i < st.n_unsupported; i++) {
        cap += 128 + strlen(st.unsupported[i].op_type) + strlen(st.unsupported[i].domain);
        for (uint32_t k = 0; k < st.unsupported[i].count && k < 8; k++)
            cap += strlen(st.unsupported[i].nodes[k]) + 4;
    }
    char *buf = kn_mem_alloc(g->alloc, cap);
    if (!buf) {
        kn_graph_stats_free(g, &st);
        return KN_ERR_NOMEM;
    }
    size_t pos = 0;
    pos += (size_t)snprintf(buf + pos, cap - pos, "%s: %u node%s use%s %u op%s kiln does not support%s%s:", file,
                            st.n_unsupported_nodes, st.n_unsupported_nodes == 1 ? "" : "s",
                            st.n_unsupported_nodes == 1 ? "s" : "", st.n_unsupported, st.n_unsupported == 1 ? "" : "s",
                            target ? " on target " : "", target ? target : "");
    for (uint32_t i = 0; i < st.n_unsupported && pos < cap; i++) {
        const kn_op_count *e = &st.unsupported[i];
        pos += (size_t)snprintf(buf + pos, cap - pos, "\n  %s (%s, opset %lld) x%u:", e->op_type,
                                *e->domain ? e->domain : "ai.onnx", (long long)e->opset, e->count);
        for (uint32_t k = 0; k < e->count && k < 8 && pos < cap; k++)
            pos += (size_t)snprintf(buf + pos, cap - pos, "%s '%s'", k ? "," : "", e->nodes[k]);
        if (e->count > 8 && pos < cap)
            pos += (size_t)snprintf(buf + pos, cap - pos, ", ...");
    }
    kn_diag_add(diag, KN_ERROR, "%s", buf);
    kn_mem_free(g->alloc, buf);
    kn_graph_stats_free(g, &st);
    return KN_ERR_UNSUPPORTED;
}
