/* kiln compile --report (see pass_report.h). Counts are of every node,
 * subgraphs' included; keys are sorted, so the same model and options give
 * the same file. */
#include "pass_report.h"
#include "json.h"
#include "tensor_io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct hist {
    const char **ops; /* op types (interned in the graph, alive until it is destroyed) */
    uint32_t *count;
    uint32_t n;
    uint32_t nodes;
} hist;

typedef struct step {
    const kn_pass_info *p;
    bool ran;
    hist h; /* after the pass */
} step;

struct kn_pass_report {
    hist before;
    step *steps;
    size_t n_steps, cap_steps;
};

static int cmp_op(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Nodes of g and of the subgraphs its nodes hold; fills all[] when given. */
static uint32_t collect(const kn_graph *g, const char **all, uint32_t n)
{
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *nd = &g->nodes[k];
        if (all)
            all[n] = nd->op_type;
        n++;
        for (uint32_t i = 0; i < nd->n_attrs; i++) {
            const kn_attr *a = &nd->attrs[i];
            if (a->kind == KN_ATTR_GRAPH)
                n = collect(a->u.g, all, n);
            for (uint32_t j = 0; a->kind == KN_ATTR_GRAPHS && j < a->n; j++)
                n = collect(a->u.graphs[j], all, n);
        }
    }
    return n;
}

static bool hist_make(const kn_graph *g, hist *h)
{
    memset(h, 0, sizeof *h);
    uint32_t total = collect(g, NULL, 0);
    const char **all = malloc(((size_t)total + 1) * sizeof *all);
    h->ops = malloc(((size_t)total + 1) * sizeof *h->ops);
    h->count = malloc(((size_t)total + 1) * sizeof *h->count);
    if (!all || !h->ops || !h->count) {
        free(all);
        free(h->ops);
        free(h->count);
        return false;
    }
    collect(g, all, 0);
    qsort(all, total, sizeof *all, cmp_op);
    for (uint32_t k = 0; k < total; k++) {
        if (h->n && strcmp(h->ops[h->n - 1], all[k]) == 0) {
            h->count[h->n - 1]++;
        } else {
            h->ops[h->n] = all[k];
            h->count[h->n++] = 1;
        }
    }
    h->nodes = total;
    free(all);
    return true;
}

static void hist_free(hist *h)
{
    free(h->ops);
    free(h->count);
}

static uint32_t hist_get(const hist *h, const char *op)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (strcmp(h->ops[i], op) == 0)
            return h->count[i];
    return 0;
}

kn_pass_report *kn_pass_report_new(const kn_graph *g)
{
    kn_pass_report *r = calloc(1, sizeof *r);
    if (r && !hist_make(g, &r->before)) {
        free(r);
        r = NULL;
    }
    return r;
}

void kn_pass_report_free(kn_pass_report *r)
{
    if (!r)
        return;
    hist_free(&r->before);
    for (size_t i = 0; i < r->n_steps; i++)
        hist_free(&r->steps[i].h);
    free(r->steps);
    free(r);
}

kn_status kn_pass_report_observe(void *ctx, const kn_pass_info *p, bool ran, const kn_graph *g)
{
    kn_pass_report *r = ctx;
    if (r->n_steps == r->cap_steps) {
        size_t cap = r->cap_steps ? 2 * r->cap_steps : 16;
        step *s = realloc(r->steps, cap * sizeof *s);
        if (!s)
            return KN_ERR_NOMEM;
        r->steps = s;
        r->cap_steps = cap;
    }
    step *s = &r->steps[r->n_steps];
    s->p = p;
    s->ran = ran;
    if (!hist_make(g, &s->h))
        return KN_ERR_NOMEM;
    r->n_steps++;
    return KN_OK;
}

static void hist_json(kn_json *j, const hist *h)
{
    kn_json_obj_begin(j);
    kn_json_key(j, "nodes");
    kn_json_uint(j, h->nodes);
    kn_json_key(j, "ops");
    kn_json_obj_begin(j);
    for (uint32_t i = 0; i < h->n; i++) {
        kn_json_key(j, h->ops[i]);
        kn_json_uint(j, h->count[i]);
    }
    kn_json_obj_end(j);
    kn_json_obj_end(j);
}

/* The ops whose count went down (removed) or up (added) from a to b. */
static void diff_json(kn_json *j, const hist *a, const hist *b, bool added)
{
    const hist *from = added ? b : a, *other = added ? a : b;
    kn_json_obj_begin(j);
    for (uint32_t i = 0; i < from->n; i++) {
        uint32_t o = hist_get(other, from->ops[i]);
        if (from->count[i] > o) {
            kn_json_key(j, from->ops[i]);
            kn_json_uint(j, from->count[i] - o);
        }
    }
    kn_json_obj_end(j);
}

kn_status kn_pass_report_write(const kn_pass_report *r, const char *path, const char *model, int level, kn_diag *d)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return KN_ERR_NOMEM;
    kn_json j;
    kn_json_init(&j, f);
    kn_json_obj_begin(&j);
    kn_json_key(&j, "model");
    kn_json_str(&j, model);
    kn_json_key(&j, "level");
    kn_json_int(&j, level);
    kn_json_key(&j, "before");
    hist_json(&j, &r->before);
    kn_json_key(&j, "after");
    hist_json(&j, r->n_steps ? &r->steps[r->n_steps - 1].h : &r->before);
    kn_json_key(&j, "passes");
    kn_json_arr_begin(&j);
    const hist *prev = &r->before;
    for (size_t i = 0; i < r->n_steps; i++) {
        const step *s = &r->steps[i];
        kn_json_obj_begin(&j);
        kn_json_key(&j, "name");
        kn_json_str(&j, s->p->name);
        kn_json_key(&j, "level");
        kn_json_int(&j, s->p->level);
        kn_json_key(&j, "ran");
        kn_json_bool(&j, s->ran);
        kn_json_key(&j, "nodes_before");
        kn_json_uint(&j, prev->nodes);
        kn_json_key(&j, "nodes_after");
        kn_json_uint(&j, s->h.nodes);
        kn_json_key(&j, "removed");
        diff_json(&j, prev, &s->h, false);
        kn_json_key(&j, "added");
        diff_json(&j, prev, &s->h, true);
        kn_json_obj_end(&j);
        prev = &s->h;
    }
    kn_json_arr_end(&j);
    kn_json_obj_end(&j);
    kn_json_finish(&j);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return KN_ERR_NOMEM;
    }
    kn_status s = kn_write_file_atomic(path, buf, len, d);
    free(buf);
    return s;
}
