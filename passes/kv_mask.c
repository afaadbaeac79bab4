/* The kv-mask pass: decoder plans whose shapes do not depend on the past
 * length. After kv-cache, each kiln.PagedAttention still reads the mask the
 * exported graph builds from attention_mask and Shape(past) (e.g. [batch,
 * 1, seq, past + seq]), so the graph's shapes change at every decode step.
 * A kiln session always binds an all-ones attention_mask and position_ids
 * past ... past + seq - 1 (docs/llm.md), and for that the exporters' masks
 * are the causal pattern: query i sees key j iff j <= past + i. This pass
 * proves that by evaluation, for each mask a PagedAttention reads: the
 * nodes computing it may read only constants, the values of attention_mask
 * and position_ids, and shapes (Shape, Size) of values whose inferred shape
 * is static or made of the symbolic dims of input_ids, attention_mask,
 * position_ids and the past inputs (batch, seq, past, total = past + seq);
 * anything else (input_ids' values, another input, a subgraph) leaves the
 * node alone. Those nodes run on the CPU reference kernels for several
 * (batch, past, seq), up to the plan's kiln.kv.max_seq_len, and the mask,
 * broadcast to [batch, heads, seq, past + seq], must be the causal pattern
 * (bool: true exactly where visible; float: 0 where visible, <= -1e4 or
 * -inf elsewhere). A mask that passes is dropped and the node gets
 * causal=1; DCE removes the mask's chain. attention_mask and past inputs
 * nothing reads any more leave the graph's inputs (kiln.kv.past_inputs
 * lists the past inputs that stay) and kiln.kv.mask records `causal` (every
 * PagedAttention causal, no mask) or `graph`. The check covers sequences
 * up to the compiled max_seq_len: a sliding window wider than that looks
 * causal here, and a session opened with a longer --max-seq-len than the
 * plan's relies on the pattern going on. */
#include "passes/fuse_match.h"
#include "passes/passes.h"
#include "runtime/cpu/attn.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MASK_MAX_NODES 512 /* nodes a mask may take to compute */
#define MASK_MASKED (-1e4) /* a float mask's masked positions: at most this */

enum { N_FIXED = 6 };
/* (batch, past, seq) the mask is checked for, then two at the plan's
 * maximum sequence length */
static const int64_t fixed_shapes[N_FIXED][3] = {{1, 0, 1}, {1, 0, 5}, {1, 3, 1}, {2, 7, 4}, {1, 17, 3}, {1, 33, 1}};

enum { MARK_NONE, MARK_EVAL, MARK_SHAPE };

typedef struct mctx {
    kn_graph *g;
    kn_id ids, amask, pos; /* the inputs input_ids, attention_mask, position_ids, or KN_NONE */
    kn_id *past;           /* the past inputs (kiln.kv.past_inputs) */
    uint32_t n_past;
    uint8_t *mark;         /* per node: MARK_* */
    uint8_t *seen;         /* per value: collected */
    uint32_t n_marked;
    char why[512];
} mctx;

typedef struct binding {
    int64_t batch, past, seq;
    const char *sym[64]; /* symbolic dim names of the bound inputs, and their sizes */
    int64_t val[64];
    uint32_t n;
} binding;

static bool is_past(const mctx *c, kn_id v)
{
    for (uint32_t i = 0; i < c->n_past; i++)
        if (c->past[i] == v)
            return true;
    return false;
}

static const char *vname(const kn_graph *g, kn_id v) { return g->values[v].name ? g->values[v].name : "?"; }

/* ---- which nodes compute the mask -------------------------------------------- */

static bool collect(mctx *c, kn_id v, int depth);

static bool sym_of(const kn_graph *g, kn_id v, const char *sym)
{
    const kn_type *t = v != KN_NONE ? &g->values[v].type : NULL;
    for (int32_t i = 0; t && t->kind == KN_TYPE_TENSOR && i < t->shape.rank; i++)
        if (t->shape.dims[i].value < 0 && t->shape.dims[i].sym && strcmp(t->shape.dims[i].sym, sym) == 0)
            return true;
    return false;
}

/* Whether value v's inferred shape is static or made of the bound inputs'
 * symbolic dims (then Shape(v) needs no data). */
static bool shape_known(const mctx *c, kn_id v)
{
    const kn_type *t = kn_rw_type(c->g, v);
    if (!t || t->shape.rank < 0 || t->shape.rank > 64)
        return false;
    for (int32_t i = 0; i < t->shape.rank; i++) {
        kn_dim d = t->shape.dims[i];
        if (d.value >= 0)
            continue;
        bool known = d.sym && (sym_of(c->g, c->ids, d.sym) || sym_of(c->g, c->amask, d.sym) ||
                               sym_of(c->g, c->pos, d.sym));
        for (uint32_t j = 0; d.sym && j < c->n_past && !known; j++)
            known = sym_of(c->g, c->past[j], d.sym);
        if (!known)
            return false;
    }
    return true;
}

static bool collect_node(mctx *c, kn_id k, int depth)
{
    kn_graph *g = c->g;
    const kn_node *n = &g->nodes[k];
    if (c->mark[k] != MARK_NONE)
        return true;
    if (++c->n_marked > MASK_MAX_NODES) {
        snprintf(c->why, sizeof c->why, "the mask takes more than %d nodes to compute", MASK_MAX_NODES);
        return false;
    }
    if (kn_rw_has_subgraph(n)) {
        snprintf(c->why, sizeof c->why, "the mask's node '%s' (%s) holds a subgraph", n->name, n->op_type);
        return false;
    }
    if ((n->op == KN_OP_Shape || n->op == KN_OP_Size) && kn_rw_has_in(n, 0) && shape_known(c, n->inputs[0])) {
        c->mark[k] = MARK_SHAPE; /* its input's shape from the symbols; its data is not needed */
        return true;
    }
    /* else a Shape of a value whose dims infer-shapes left unknown: computed */
    c->mark[k] = MARK_EVAL;
    for (uint32_t i = 0; i < n->n_inputs; i++)
        if (!collect(c, n->inputs[i], depth + 1))
            return false;
    return true;
}

static bool collect(mctx *c, kn_id v, int depth)
{
    kn_graph *g = c->g;
    if (v == KN_NONE || c->seen[v] || kn_rw_const(g, v))
        return true;
    c->seen[v] = 1;
    const kn_value *x = &g->values[v];
    if (depth > MASK_MAX_NODES) {
        snprintf(c->why, sizeof c->why, "the mask's chain of nodes is deeper than %d", MASK_MAX_NODES);
        return false;
    }
    if (x->kind == KN_VAL_INPUT) {
        if (v == c->amask || v == c->pos)
            return true;
        snprintf(c->why, sizeof c->why, "the mask reads the values of input '%s'%s", vname(g, v),
                 v == c->ids ? " (not only its shape)" : is_past(c, v) ? " (a past input holds no data)" : "");
        return false;
    }
    if (x->kind != KN_VAL_NODE || x->producer == KN_NONE) {
        snprintf(c->why, sizeof c->why, "the mask reads '%s', neither a constant, an input nor a node output",
                 vname(g, v));
        return false;
    }
    return collect_node(c, x->producer, depth);
}

/* ---- binding the inputs for one (batch, past, seq) --------------------------- */

/* Binds the symbolic dims of input v to the sizes `want` (rank r); false
 * (the shape does not fit this input) when a static dim differs, the
 * rank differs or a name stands for two sizes. */
static bool bind_input(const kn_graph *g, kn_id v, const int64_t *want, int32_t r, binding *b)
{
    if (v == KN_NONE)
        return true;
    const kn_type *t = &g->values[v].type;
    if (t->kind != KN_TYPE_TENSOR || t->shape.rank != r)
        return false;
    for (int32_t i = 0; i < r; i++) {
        kn_dim d = t->shape.dims[i];
        if (d.value >= 0) {
            if (d.value != want[i])
                return false;
            continue;
        }
        if (!d.sym)
            continue; /* unnamed: says nothing */
        uint32_t j = 0;
        while (j < b->n && strcmp(b->sym[j], d.sym) != 0)
            j++;
        if (j < b->n) {
            if (b->val[j] != want[i])
                return false;
        } else if (b->n < 64) {
            b->sym[b->n] = d.sym;
            b->val[b->n++] = want[i];
        }
    }
    return true;
}

static bool bind(const mctx *c, int64_t batch, int64_t past, int64_t seq, binding *b)
{
    memset(b, 0, sizeof *b);
    b->batch = batch, b->past = past, b->seq = seq;
    int64_t bs[2] = {batch, seq}, bt[2] = {batch, past + seq};
    if (!bind_input(c->g, c->ids, bs, 2, b) || !bind_input(c->g, c->amask, bt, 2, b) ||
        !bind_input(c->g, c->pos, bs, 2, b))
        return false;
    for (uint32_t i = 0; i < c->n_past; i++) {
        const kn_type *t = &c->g->values[c->past[i]].type;
        int64_t pd[4] = {batch, t->shape.dims[1].value, past, t->shape.dims[3].value};
        if (!bind_input(c->g, c->past[i], pd, 4, b))
            return false;
    }
    return true;
}

/* The size of dim d of a value's type under b, or -1. */
static int64_t dim_size(const binding *b, kn_dim d)
{
    if (d.value >= 0)
        return d.value;
    for (uint32_t j = 0; d.sym && j < b->n; j++)
        if (strcmp(b->sym[j], d.sym) == 0)
            return b->val[j];
    return -1;
}

/* ---- evaluation ---------------------------------------------------------------- */

static kn_status int_tensor(const kn_allocator *a, kn_dtype dt, int32_t rank, const int64_t *dims, kn_rt_tensor **out)
{
    KN_TRY(kn_rt_tensor_new(a, dt, rank, dims, out));
    memset((*out)->data, 0, (*out)->nbytes);
    return KN_OK;
}

/* The value of a Shape / Size node under b; false when a dim is unknown. */
static kn_status eval_shape(mctx *c, const binding *b, const kn_node *n, kn_rt_tensor **out, bool *ok)
{
    const kn_type *t = kn_rw_type(c->g, n->inputs[0]);
    *ok = false;
    if (!t || t->shape.rank < 0 || t->shape.rank > 64) {
        snprintf(c->why, sizeof c->why, "node '%s' reads the shape of '%s', whose rank is unknown", n->name,
                 vname(c->g, n->inputs[0]));
        return KN_OK;
    }
    int64_t r = t->shape.rank, dims[64], numel = 1;
    for (int64_t i = 0; i < r; i++) {
        dims[i] = dim_size(b, t->shape.dims[i]);
        if (dims[i] < 0) {
            snprintf(c->why, sizeof c->why,
                     "node '%s' reads dim %lld of '%s', which is not a dim of input_ids, attention_mask, "
                     "position_ids or a past input",
                     n->name, (long long)i, vname(c->g, n->inputs[0]));
            return KN_OK;
        }
        numel *= dims[i];
    }
    if (n->op == KN_OP_Size) {
        KN_TRY(int_tensor(c->g->alloc, KN_I64, 0, NULL, out));
        ((int64_t *)(*out)->data)[0] = numel;
        *ok = true;
        return KN_OK;
    }
    const kn_attr *sa = kn_node_attr(n, "start"), *ea = kn_node_attr(n, "end");
    int64_t start = sa && sa->kind == KN_ATTR_INT ? sa->u.i : 0, end = ea && ea->kind == KN_ATTR_INT ? ea->u.i : r;
    start = start < 0 ? start + r : start;
    end = end < 0 ? end + r : end;
    start = start < 0 ? 0 : start > r ? r : start;
    end = end < 0 ? 0 : end > r ? r : end;
    int64_t len = end > start ? end - start : 0;
    KN_TRY(int_tensor(c->g->alloc, KN_I64, 1, &len, out));
    for (int64_t i = 0; i < len; i++)
        ((int64_t *)(*out)->data)[i] = dims[start + i];
    *ok = true;
    return KN_OK;
}

/* attention_mask all ones [batch, past + seq]; position_ids past ...
 * past + seq - 1 in every row. */
static kn_status bind_values(mctx *c, const binding *b, kn_rt_tensor **vals)
{
    const kn_allocator *a = c->g->alloc;
    if (c->amask != KN_NONE) {
        int64_t d[2] = {b->batch, b->past + b->seq};
        KN_TRY(int_tensor(a, c->g->values[c->amask].type.dtype, 2, d, &vals[c->amask]));
        for (int64_t i = 0; i < vals[c->amask]->numel; i++)
            kn_set_f64(vals[c->amask]->dtype, vals[c->amask]->data, i, 1.0);
    }
    if (c->pos != KN_NONE) {
        int64_t d[2] = {b->batch, b->seq};
        KN_TRY(int_tensor(a, c->g->values[c->pos].type.dtype, 2, d, &vals[c->pos]));
        for (int64_t i = 0; i < vals[c->pos]->numel; i++)
            kn_set_f64(vals[c->pos]->dtype, vals[c->pos]->data, i, (double)(b->past + i % b->seq));
    }
    return KN_OK;
}

/* Whether mask m, broadcast to [batch, heads, seq, past + seq], is the
 * causal pattern (the broadcasting rule of k_paged_attn.c). */
static bool is_causal(mctx *c, const kn_rt_tensor *m, const binding *b, int64_t heads)
{
    int64_t total = b->past + b->seq, sc[4] = {b->batch, heads, b->seq, total}, st[4], stride = 1;
    if (m->rank < 1 || m->rank > 4 || (m->dtype != KN_BOOL && !kn_dt_is_float(m->dtype))) {
        snprintf(c->why, sizeof c->why, "the mask is %s of rank %d, not bool or float of rank 1 to 4",
                 kn_dtype_name(m->dtype), (int)m->rank);
        return false;
    }
    for (int d = 3; d >= 0; d--) {
        int md = d - (4 - m->rank);
        int64_t n = md >= 0 ? m->dims[md] : 1;
        if (!(n == sc[d] || (n == 1 && d != 3) || (n == 1 && sc[d] == 1))) {
            snprintf(c->why, sizeof c->why, "the mask's dim %d is %lld, not broadcasting to %lld (batch %lld, past "
                     "%lld, seq %lld)", md, (long long)n, (long long)sc[d], (long long)b->batch, (long long)b->past,
                     (long long)b->seq);
            return false;
        }
        st[d] = n == 1 ? 0 : stride;
        stride *= n;
    }
    for (int64_t x = 0; x < b->batch; x++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t i = 0; i < b->seq; i++)
                for (int64_t j = 0; j < total; j++) {
                    double v = kn_attn_mask_bias(m, x * st[0] + h * st[1] + i * st[2] + j * st[3]);
                    bool visible = j <= b->past + i;
                    if (visible ? v != 0.0 : !(v <= MASK_MASKED)) {
                        snprintf(c->why, sizeof c->why,
                                 "the mask is not causal: at batch %lld, past %lld, seq %lld, query %lld, key %lld "
                                 "it holds %g",
                                 (long long)b->batch, (long long)b->past, (long long)b->seq, (long long)i,
                                 (long long)j, v);
                        return false;
                    }
                }
    return true;
}

/* Computes mask value `mask` under b and checks it; *ok: it is causal. */
static kn_status check_one(mctx *c, kn_id mask, const binding *b, int64_t heads, bool *ok)
{
    kn_graph *g = c->g;
    const kn_allocator *a = g->alloc;
    *ok = false;
    kn_rt_tensor **vals = kn_mem_alloc(a, ((size_t)g->n_values + 1) * sizeof *vals);
    kn_id *ids = kn_mem_alloc(a, (MASK_MAX_NODES + 64) * sizeof *ids);
    const kn_rt_tensor **in = kn_mem_alloc(a, (MASK_MAX_NODES + 64) * sizeof *in);
    kn_diag *quiet = kn_diag_create(a, NULL);
    kn_status s = vals && ids && in && quiet ? KN_OK : KN_ERR_NOMEM;
    if (vals)
        memset(vals, 0, ((size_t)g->n_values + 1) * sizeof *vals);
    if (s == KN_OK)
        s = bind_values(c, b, vals);
    bool good = true;
    for (kn_id k = 0; s == KN_OK && good && k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (c->mark[k] == MARK_SHAPE) {
            s = eval_shape(c, b, n, &vals[n->outputs[0]], &good);
            continue;
        }
        if (c->mark[k] != MARK_EVAL)
            continue;
        uint32_t nb = 0;
        for (uint32_t i = 0; i < n->n_inputs && nb < MASK_MAX_NODES + 64; i++)
            if (n->inputs[i] != KN_NONE && vals[n->inputs[i]]) {
                ids[nb] = n->inputs[i];
                in[nb++] = vals[n->inputs[i]];
            }
        kn_rt_tensor *outs[16];
        if (n->n_outputs > 16) {
            snprintf(c->why, sizeof c->why, "node '%s' has more than 16 outputs", n->name);
            good = false;
            break;
        }
        s = kn_cpu_run_node(g, k, ids, in, nb, outs, a, quiet);
        if (s == KN_ERR_NOMEM)
            break;
        if (s != KN_OK) {
            const char *msg = kn_diag_size(quiet) ? kn_diag_message(quiet, kn_diag_size(quiet) - 1, NULL) : "";
            snprintf(c->why, sizeof c->why, "computing the mask for batch %lld, past %lld, seq %lld failed: %s",
                     (long long)b->batch, (long long)b->past, (long long)b->seq, msg);
            s = KN_OK;
            good = false;
            break;
        }
        for (uint32_t i = 0; i < n->n_outputs; i++) {
            if (n->outputs[i] != KN_NONE && !vals[n->outputs[i]])
                vals[n->outputs[i]] = outs[i];
            else
                kn_rt_tensor_free(a, outs[i]);
        }
    }
    if (s == KN_OK && good) {
        if (!vals[mask]) {
            snprintf(c->why, sizeof c->why, "the mask '%s' was not computed", vname(g, mask));
        } else {
            *ok = is_causal(c, vals[mask], b, heads);
        }
    }
    for (kn_id v = 0; vals && v < g->n_values; v++)
        kn_rt_tensor_free(a, vals[v]);
    kn_mem_free(a, vals);
    kn_mem_free(a, ids);
    kn_mem_free(a, in);
    kn_diag_destroy(quiet);
    return s;
}

/* Whether mask value `mask` (read by a PagedAttention with `heads` query
 * heads) is causal for every checked shape; c->why says why not. */
static kn_status prove(mctx *c, kn_id mask, int64_t heads, int64_t max_seq, bool *ok)
{
    kn_graph *g = c->g;
    *ok = false;
    memset(c->mark, 0, g->n_nodes + 1);
    memset(c->seen, 0, g->n_values + 1);
    c->n_marked = 0;
    c->why[0] = 0;
    if (!collect(c, mask, 0))
        return KN_OK;
    int64_t shapes[N_FIXED + 2][3];
    memcpy(shapes, fixed_shapes, sizeof fixed_shapes);
    uint32_t n_shapes = N_FIXED;
    if (max_seq > 40) { /* the longest sequences the plan's cache holds */
        shapes[n_shapes][0] = 1, shapes[n_shapes][1] = max_seq - 1, shapes[n_shapes++][2] = 1;
        shapes[n_shapes][0] = 2, shapes[n_shapes][1] = max_seq - 5, shapes[n_shapes++][2] = 5;
    }
    uint32_t n_run = 0;
    for (uint32_t i = 0; i < n_shapes; i++) {
        binding b;
        if (!bind(c, shapes[i][0], shapes[i][1], shapes[i][2], &b))
            continue; /* a static dim of the interface rules this shape out */
        bool one;
        KN_TRY(check_one(c, mask, &b, heads, &one));
        if (!one)
            return KN_OK;
        n_run++;
    }
    if (n_run < 4) {
        snprintf(c->why, sizeof c->why,
                 "the inputs' dims allow only %u of the checked (batch, past, seq) shapes (4 needed)", n_run);
        return KN_OK;
    }
    *ok = true;
    return KN_OK;
}

/* ---- the rewrite ----------------------------------------------------------------- */

static kn_id input_named(const kn_graph *g, const char *name)
{
    for (uint32_t i = 0; i < g->n_inputs; i++)
        if (strcmp(vname(g, g->inputs[i]), name) == 0)
            return g->inputs[i];
    return KN_NONE;
}

/* The past inputs named in kiln.kv.past_inputs. */
static kn_status find_past(mctx *c)
{
    const char *list = kn_rw_get_meta(c->g, "kiln.kv.past_inputs");
    c->past = kn_mem_alloc(c->g->alloc, ((size_t)c->g->n_inputs + 1) * sizeof *c->past);
    if (!c->past)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; list && i < c->g->n_inputs; i++) {
        const char *nm = vname(c->g, c->g->inputs[i]);
        size_t n = strlen(nm);
        for (const char *p = list; p && *p;) {
            const char *e = strchr(p, ',');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            const kn_type *t = &c->g->values[c->g->inputs[i]].type;
            if (len == n && strncmp(p, nm, n) == 0 && t->kind == KN_TYPE_TENSOR && t->shape.rank == 4) {
                c->past[c->n_past++] = c->g->inputs[i];
                break;
            }
            p = e ? e + 1 : NULL;
        }
    }
    return KN_OK;
}

static bool read_by_nodes(const kn_graph *g, kn_id v)
{
    for (kn_id k = 0; k < g->n_nodes; k++)
        for (uint32_t i = 0; i < g->nodes[k].n_inputs; i++)
            if (g->nodes[k].inputs[i] == v)
                return true;
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] == v)
            return true;
    return false;
}

/* Drops attention_mask and the past inputs nothing reads; rewrites
 * kiln.kv.past_inputs; *n_removed: how many went. */
static kn_status drop_inputs(mctx *c, uint32_t *n_removed, bool *mask_gone)
{
    kn_graph *g = c->g;
    size_t len = 1;
    for (uint32_t i = 0; i < c->n_past; i++)
        len += strlen(vname(g, c->past[i])) + 1;
    char *names = kn_graph_alloc(g, len);
    if (!names)
        return KN_ERR_NOMEM;
    names[0] = 0;
    *n_removed = 0;
    *mask_gone = false;
    uint32_t w = 0;
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        kn_id v = g->inputs[i];
        bool candidate = v == c->amask || is_past(c, v);
        if (candidate && !read_by_nodes(g, v)) {
            kn_rw_orphan(g, v); /* unread: compaction drops it */
            (*n_removed)++;
            *mask_gone = *mask_gone || v == c->amask;
            continue;
        }
        if (is_past(c, v)) {
            strcat(names, *names ? "," : "");
            strcat(names, vname(g, v));
        }
        g->inputs[w++] = v;
    }
    g->n_inputs = w;
    KN_TRY(kn_graph_compact(g, NULL));
    return *n_removed ? kn_rw_set_meta(g, "kiln.kv.past_inputs", names) : KN_OK;
}

kn_status kn_pass_kv_mask(kn_graph *g, kn_diag *d)
{
    if (g->parent || !kn_rw_get_meta(g, "kiln.kv.layers"))
        return KN_OK; /* kv-cache did not rewrite this graph */
    const char *path = g->info && g->info->path ? g->info->path : "<graph>";
    const char *ms = kn_rw_get_meta(g, "kiln.kv.max_seq_len");
    int64_t max_seq = ms ? strtoll(ms, NULL, 10) : 0;
    mctx c = {g, input_named(g, "input_ids"), input_named(g, "attention_mask"), input_named(g, "position_ids"),
              NULL, 0, NULL, NULL, 0, {0}};
    kn_status s = find_past(&c);
    c.mark = kn_mem_alloc(g->alloc, (size_t)g->n_nodes + 1);
    c.seen = kn_mem_alloc(g->alloc, (size_t)g->n_values + 1);
    /* each distinct (mask, query heads) is tried once: tried[i], tried_heads[i], passed[i] */
    kn_id *tried = kn_mem_alloc(g->alloc, ((size_t)g->n_nodes + 1) * sizeof *tried);
    int64_t *tried_heads = kn_mem_alloc(g->alloc, ((size_t)g->n_nodes + 1) * sizeof *tried_heads);
    bool *passed = kn_mem_alloc(g->alloc, ((size_t)g->n_nodes + 1) * sizeof *passed);
    if (s == KN_OK && (!c.mark || !c.seen || !tried || !tried_heads || !passed))
        s = KN_ERR_NOMEM;
    uint32_t n_attn = 0, n_causal = 0, n_proven = 0, n_tried = 0;
    for (kn_id k = 0; s == KN_OK && k < g->n_nodes; k++) {
        kn_node *n = &g->nodes[k];
        if (n->op != KN_OP_KILN_PagedAttention)
            continue;
        n_attn++;
        const kn_attr *ca = kn_node_attr(n, "causal");
        if (!kn_rw_has_in(n, 3)) {
            n_causal += ca && ca->kind == KN_ATTR_INT && ca->u.i == 1;
            continue;
        }
        kn_id mask = n->inputs[3];
        const kn_attr *kh = kn_node_attr(n, "kv_heads"), *kr = kn_node_attr(n, "kv_repeat");
        int64_t heads = kh && kr ? kh->u.i * kr->u.i : 1;
        uint32_t t = 0;
        while (t < n_tried && (tried[t] != mask || tried_heads[t] != heads))
            t++;
        bool ok = t < n_tried && passed[t];
        if (t == n_tried) {
            s = prove(&c, mask, heads, max_seq, &ok);
            tried[n_tried] = mask;
            tried_heads[n_tried] = heads;
            passed[n_tried++] = ok;
            n_proven += s == KN_OK && ok;
            if (s == KN_OK && !ok)
                kn_diag_add(d, KN_NOTE, "%s: kv-mask: node '%s' keeps its mask '%s': %s", path, n->name,
                            vname(g, mask), c.why);
        }
        if (s != KN_OK || !ok)
            continue;
        kn_attr at;
        s = kn_fm_attr_i(g, "causal", 1, &at);
        if (s == KN_OK)
            s = kn_rw_set_attr(g, n, &at);
        if (s == KN_OK) {
            if (n->n_inputs > 4) /* the mask goes (cos/sin of kv-rotary stay at 4, 5) */
                n->inputs[3] = KN_NONE;
            else
                n->n_inputs = 3;
            n_causal++;
        }
    }
    uint32_t n_removed = 0;
    bool mask_gone = false;
    if (s == KN_OK && n_proven)
        s = kn_pass_dce(g, d);
    if (s == KN_OK && n_proven) { /* DCE renumbered the values */
        c.amask = input_named(g, "attention_mask");
        c.n_past = 0;
        kn_mem_free(g->alloc, c.past);
        s = find_past(&c);
    }
    if (s == KN_OK && n_proven)
        s = drop_inputs(&c, &n_removed, &mask_gone);
    if (s == KN_OK)
        s = kn_rw_set_meta(g, "kiln.kv.mask", n_causal == n_attn ? "causal" : "graph");
    if (s == KN_OK && n_proven)
        kn_diag_add(d, KN_NOTE,
                    "%s: kv-mask: %u of %u PagedAttention nodes causal without a mask (the mask is the causal pattern "
                    "whenever attention_mask is all ones, checked for sequences up to %lld tokens); %u inputs "
                    "removed%s",
                    path, n_causal, n_attn, (long long)(max_seq > 40 ? max_seq : 34), n_removed,
                    mask_gone ? " (attention_mask among them)" : "");
    kn_mem_free(g->alloc, c.past);
    kn_mem_free(g->alloc, c.mark);
    kn_mem_free(g->alloc, c.seen);
    kn_mem_free(g->alloc, tried);
    kn_mem_free(g->alloc, tried_heads);
    kn_mem_free(g->alloc, passed);
    return s;
}
