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
    uint32_t kernels; /* nodes reading at least one value that is not a constant */
} hist;

/* A fused node (one with `_origins`), known by its `_origins` list: the
 * fusion passes allocate one per fused node, so the pointer names it. */
typedef struct fused {
    const kn_bytes *origins;
    uint32_t n_origins;
    const char *op_type, *domain;
} fused;

typedef struct fused_set {
    fused *f;
    uint32_t n;
} fused_set;

typedef struct step {
    const kn_pass_info *p;
    bool ran;
    hist h; /* after the pass */
    fused_set fs; /* fused nodes after the pass */
} step;

struct kn_pass_report {
    bool has_cuda, has_cuda_before;
    kn_pass_report_cuda cuda_before, cuda_after;
    char *cuda_note;
    hist before;
    fused_set fs_before;
    step *steps;
    size_t n_steps, cap_steps;
};

static int cmp_op(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Whether a node computes on run-time data: some input is not a constant
 * (a node whose inputs are all constants, or that has none, is what
 * constant folding turns into a constant). */
static bool is_kernel(const kn_graph *g, const kn_node *nd)
{
    for (uint32_t i = 0; i < nd->n_inputs; i++) {
        if (nd->inputs[i] == KN_NONE)
            continue;
        const kn_value *v = kn_value_resolve(g, nd->inputs[i], NULL);
        if (!v || v->kind != KN_VAL_CONST)
            return true;
    }
    return false;
}

/* Nodes of g and of the subgraphs its nodes hold; fills all[] when given,
 * counts kernels in *kernels and fused nodes in *n_fused, and fills fs[]
 * when given. */
static uint32_t collect(const kn_graph *g, const char **all, uint32_t n, uint32_t *kernels, fused *fs,
                        uint32_t *n_fused)
{
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *nd = &g->nodes[k];
        if (all)
            all[n] = nd->op_type;
        n++;
        *kernels += is_kernel(g, nd);
        const kn_attr *o = kn_node_attr(nd, "_origins");
        if (o && o->kind == KN_ATTR_STRINGS) {
            if (fs)
                fs[*n_fused] = (fused){o->u.strings, o->n, nd->op_type, nd->domain};
            (*n_fused)++;
        }
        for (uint32_t i = 0; i < nd->n_attrs; i++) {
            const kn_attr *a = &nd->attrs[i];
            if (a->kind == KN_ATTR_GRAPH)
                n = collect(a->u.g, all, n, kernels, fs, n_fused);
            for (uint32_t j = 0; a->kind == KN_ATTR_GRAPHS && j < a->n; j++)
                n = collect(a->u.graphs[j], all, n, kernels, fs, n_fused);
        }
    }
    return n;
}

static bool hist_make(const kn_graph *g, hist *h, fused_set *fs)
{
    memset(h, 0, sizeof *h);
    memset(fs, 0, sizeof *fs);
    uint32_t nf = 0, kernels = 0;
    uint32_t total = collect(g, NULL, 0, &kernels, NULL, &nf);
    const char **all = malloc(((size_t)total + 1) * sizeof *all);
    h->ops = malloc(((size_t)total + 1) * sizeof *h->ops);
    h->count = malloc(((size_t)total + 1) * sizeof *h->count);
    fs->f = malloc(((size_t)nf + 1) * sizeof *fs->f);
    if (!all || !h->ops || !h->count || !fs->f) {
        free(all);
        free(h->ops);
        free(h->count);
        free(fs->f);
        return false;
    }
    kernels = 0;
    collect(g, all, 0, &kernels, fs->f, &fs->n);
    h->kernels = kernels;
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
    if (r && !hist_make(g, &r->before, &r->fs_before)) {
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
    free(r->fs_before.f);
    for (size_t i = 0; i < r->n_steps; i++) {
        hist_free(&r->steps[i].h);
        free(r->steps[i].fs.f);
    }
    free(r->steps);
    free(r->cuda_note);
    free(r);
}

kn_status kn_pass_report_set_cuda(kn_pass_report *r, const kn_pass_report_cuda *before,
                                  const kn_pass_report_cuda *after, const char *note)
{
    free(r->cuda_note);
    r->cuda_note = NULL;
    if (note && !(r->cuda_note = strdup(note)))
        return KN_ERR_NOMEM;
    r->has_cuda = true;
    r->has_cuda_before = before != NULL;
    if (before)
        r->cuda_before = *before;
    r->cuda_after = *after;
    return KN_OK;
}

static void cuda_json(kn_json *j, const kn_pass_report_cuda *c)
{
    kn_json_obj_begin(j);
    kn_json_key(j, "steps");
    kn_json_uint(j, c->steps);
    kn_json_key(j, "launches");
    kn_json_uint(j, c->launches);
    kn_json_key(j, "gemms");
    kn_json_uint(j, c->gemms);
    kn_json_key(j, "gemms_int8");
    kn_json_uint(j, c->gemms_int8);
    kn_json_key(j, "copies");
    kn_json_uint(j, c->copies);
    kn_json_key(j, "host");
    kn_json_uint(j, c->host);
    kn_json_key(j, "kernels");
    kn_json_uint(j, c->kernels);
    kn_json_obj_end(j);
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
    if (!hist_make(g, &s->h, &s->fs))
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

static bool in_set(const fused_set *fs, const kn_bytes *o)
{
    for (uint32_t i = 0; i < fs->n; i++)
        if (fs->f[i].origins == o)
            return true;
    return false;
}

/* "Op" for ai.onnx, "domain.Op" otherwise. */
static void op_key(const fused *f, char *buf, size_t n)
{
    if (f->domain && *f->domain && strcmp(f->domain, "ai.onnx") != 0)
        snprintf(buf, n, "%s.%s", f->domain, f->op_type);
    else
        snprintf(buf, n, "%s", f->op_type);
}

static int cmp_fused(const void *a, const void *b)
{
    char x[256], y[256];
    op_key(a, x, sizeof x);
    op_key(b, y, sizeof y);
    return strcmp(x, y);
}

/* The fused nodes a pass made (in `now`, not in `prev`), per op:
 * {"ran": b, "nodes": N, "replaced": M, "ops": {"Op": {"nodes": n, "replaced": m}}}
 * where replaced sums the `_origins` lengths (ONNX nodes). */
static kn_status fusion_json(kn_json *j, bool ran, const fused_set *prev, const fused_set *now)
{
    fused *made = malloc(((size_t)now->n + 1) * sizeof *made);
    if (!made)
        return KN_ERR_NOMEM;
    uint32_t n = 0, total = 0;
    for (uint32_t i = 0; i < now->n; i++)
        if (!in_set(prev, now->f[i].origins))
            made[n++] = now->f[i];
    qsort(made, n, sizeof *made, cmp_fused);
    for (uint32_t i = 0; i < n; i++)
        total += made[i].n_origins;
    kn_json_obj_begin(j);
    kn_json_key(j, "ran");
    kn_json_bool(j, ran);
    kn_json_key(j, "nodes");
    kn_json_uint(j, n);
    kn_json_key(j, "replaced");
    kn_json_uint(j, total);
    kn_json_key(j, "ops");
    kn_json_obj_begin(j);
    for (uint32_t i = 0; i < n;) {
        uint32_t e = i, rep = 0;
        char key[256], other[256];
        op_key(&made[i], key, sizeof key);
        for (; e < n; e++) {
            op_key(&made[e], other, sizeof other);
            if (strcmp(key, other) != 0)
                break;
            rep += made[e].n_origins;
        }
        kn_json_key(j, key);
        kn_json_obj_begin(j);
        kn_json_key(j, "nodes");
        kn_json_uint(j, e - i);
        kn_json_key(j, "replaced");
        kn_json_uint(j, rep);
        kn_json_obj_end(j);
        i = e;
    }
    kn_json_obj_end(j);
    kn_json_obj_end(j);
    free(made);
    return KN_OK;
}

static bool is_fusion_pass(const kn_pass_info *p) { return strncmp(p->name, "fuse-", 5) == 0; }

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
    const hist *last = r->n_steps ? &r->steps[r->n_steps - 1].h : &r->before;
    kn_json_key(&j, "after");
    hist_json(&j, last);
    kn_json_key(&j, "kernels");
    kn_json_obj_begin(&j);
    kn_json_key(&j, "before");
    kn_json_uint(&j, r->before.kernels);
    kn_json_key(&j, "after");
    kn_json_uint(&j, last->kernels);
    kn_json_obj_end(&j);
    if (r->has_cuda) {
        kn_json_key(&j, "cuda");
        kn_json_obj_begin(&j);
        kn_json_key(&j, "before");
        if (r->has_cuda_before)
            cuda_json(&j, &r->cuda_before);
        else
            kn_json_null(&j);
        kn_json_key(&j, "after");
        cuda_json(&j, &r->cuda_after);
        if (r->cuda_note) {
            kn_json_key(&j, "note");
            kn_json_str(&j, r->cuda_note);
        }
        kn_json_obj_end(&j);
    }
    kn_json_key(&j, "fusion");
    kn_json_obj_begin(&j);
    kn_status st = KN_OK;
    for (size_t i = 0; i < r->n_steps && st == KN_OK; i++) {
        if (!is_fusion_pass(r->steps[i].p))
            continue;
        kn_json_key(&j, r->steps[i].p->name);
        st = fusion_json(&j, r->steps[i].ran, i ? &r->steps[i - 1].fs : &r->fs_before, &r->steps[i].fs);
    }
    kn_json_obj_end(&j);
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
        kn_json_key(&j, "kernels_before");
        kn_json_uint(&j, prev->kernels);
        kn_json_key(&j, "kernels_after");
        kn_json_uint(&j, s->h.kernels);
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
    if (fclose(f) != 0 || !buf || st != KN_OK) {
        free(buf);
        return KN_ERR_NOMEM;
    }
    kn_status s = kn_write_file_atomic(path, buf, len, d);
    free(buf);
    return s;
}
