/* Control-flow kernels: If, Loop and Scan. They run their bodies through
 * the executor (kn_kctx_run_graph) and own every tensor a body hands back
 * until it becomes a node output or is freed, on every path. The RNNs, the
 * signal ops and NonMaxSuppression of this family live in k_control_*.c. */
#include "runtime/cpu/util.h"
#include "ir/arena.h"

#include <string.h>

/* Bytes per element for ops that move whole elements (strings are kn_bytes
 * whose bytes outlive the run, so copying the struct is a valid copy);
 * 0 for the 4-bit types, which cannot be sliced by bytes. */
static size_t elem_bytes(kn_dtype t) { return t == KN_STRING ? sizeof(kn_bytes) : kn_dt_size(t); }

static bool same_shape(const kn_rt_tensor *a, const kn_rt_tensor *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank)
        return false;
    for (int32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return true;
}

static void free_tensors(kn_kctx *c, kn_rt_tensor **ts, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        kn_rt_tensor_free(kn_kctx_allocator(c), ts[i]);
        ts[i] = NULL;
    }
}

static kn_status graph_attr(kn_kctx *c, const char *name, const kn_graph **out)
{
    const kn_attr *a = kn_kctx_attr(c, name);
    if (!a || a->kind != KN_ATTR_GRAPH || !a->u.g)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing graph attribute '%s'", name);
    *out = a->u.g;
    return KN_OK;
}

/* A single-element condition (bool, or any numeric type: nonzero is true). */
static kn_status read_cond(kn_kctx *c, const kn_rt_tensor *t, const char *what, bool *out)
{
    if (t->numel != 1 || t->dtype == KN_STRING || elem_bytes(t->dtype) == 0 || t->dtype == KN_C64 ||
        t->dtype == KN_C128)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be a single bool, got %s with %lld elements", what,
                            kn_dtype_name(t->dtype), (long long)t->numel);
    *out = kn_get_f64(t->dtype, t->data, 0) != 0;
    return KN_OK;
}

/* Output i of the node gets `t` (taken). Outputs past the node's count are
 * dropped: a node may leave trailing outputs off. */
static kn_status give_out(kn_kctx *c, uint32_t i, kn_rt_tensor *t)
{
    if (i >= kn_kctx_n_outputs(c)) {
        kn_rt_tensor_free(kn_kctx_allocator(c), t);
        return KN_OK;
    }
    return kn_kctx_out_set(c, i, t);
}

/* A loop-carried value: either borrowed (the node's input) or owned (a
 * body output). */
typedef struct carried {
    const kn_rt_tensor *t;
    bool owned;
} carried;

static void carried_set(kn_kctx *c, carried *v, kn_rt_tensor *t)
{
    if (v->owned)
        kn_rt_tensor_free(kn_kctx_allocator(c), (kn_rt_tensor *)v->t);
    v->t = t;
    v->owned = true;
}

static void carried_free(kn_kctx *c, carried *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (v[i].owned) {
            kn_rt_tensor_free(kn_kctx_allocator(c), (kn_rt_tensor *)v[i].t);
            v[i].t = NULL;
            v[i].owned = false;
        }
}

/* Hands carried value v to node output i (cloning a borrowed one). */
static kn_status carried_out(kn_kctx *c, uint32_t i, carried *v)
{
    kn_rt_tensor *t;
    if (v->owned) {
        t = (kn_rt_tensor *)v->t;
        v->owned = false;
        v->t = NULL;
    } else {
        KN_TRY(kn_rt_tensor_clone(kn_kctx_allocator(c), v->t, &t));
    }
    return give_out(c, i, t);
}

/* The empty scan output of a loop that ran zero times: its type comes from
 * the body's declaration of the element, shape [0, element dims...] when
 * those are static, else [0]. */
static kn_status empty_scan_out(kn_kctx *c, const kn_graph *body, uint32_t body_out, uint32_t node_out,
                                int32_t axis_hint)
{
    if (node_out >= kn_kctx_n_outputs(c))
        return KN_OK;
    const kn_type *ty = &body->values[body->outputs[body_out]].type;
    if (ty->kind != KN_TYPE_TENSOR || ty->dtype == KN_UNDEFINED)
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED,
                            "the body ran no iteration and does not declare the type of scan output %u", node_out);
    int64_t dims[KN_RT_MAX_RANK];
    int32_t rank = 1;
    dims[0] = 0;
    bool known = ty->shape.rank >= 0 && ty->shape.rank < KN_RT_MAX_RANK;
    for (int32_t i = 0; known && i < ty->shape.rank; i++)
        known = ty->shape.dims[i].value >= 0;
    if (known) {
        int32_t ax = axis_hint < 0 ? axis_hint + ty->shape.rank + 1 : axis_hint;
        if (ax < 0 || ax > ty->shape.rank)
            ax = 0;
        rank = ty->shape.rank + 1;
        for (int32_t i = 0, j = 0; i < rank; i++)
            dims[i] = i == ax ? 0 : ty->shape.dims[j++].value;
    }
    kn_rt_tensor *t;
    return kn_kctx_out(c, node_out, ty->dtype, rank, dims, &t);
}

/* ---- If ---- */

kn_status kn_ref_If(kn_kctx *c)
{
    const kn_rt_tensor *cond = kn_kctx_in(c, 0);
    if (!cond)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input 'cond'");
    bool v = false;
    KN_TRY(read_cond(c, cond, "cond", &v));
    const kn_graph *g = NULL;
    KN_TRY(graph_attr(c, v ? "then_branch" : "else_branch", &g));
    uint32_t n = g->n_outputs;
    if (n < kn_kctx_n_outputs(c))
        return kn_kctx_fail(c, KN_ERR_INVALID, "the %s branch gives %u outputs, the node has %u",
                            v ? "then" : "else", n, kn_kctx_n_outputs(c));
    kn_rt_tensor **outs = kn_kctx_scratch(c, (n + 1) * sizeof *outs);
    if (!outs)
        return KN_ERR_NOMEM;
    KN_TRY(kn_kctx_run_graph(c, g, NULL, 0, outs, n));
    kn_status s = KN_OK;
    for (uint32_t i = 0; i < n; i++) {
        kn_rt_tensor *t = outs[i];
        outs[i] = NULL;
        if (s == KN_OK)
            s = give_out(c, i, t);
        else
            kn_rt_tensor_free(kn_kctx_allocator(c), t);
    }
    return s;
}

/* ---- Loop ---- */

/* The per-iteration values of one scan output, concatenated at the end. */
typedef struct scan_list {
    kn_rt_tensor **items;
    uint32_t n, cap;
} scan_list;

static void scan_lists_free(kn_kctx *c, scan_list *l, uint32_t k)
{
    for (uint32_t i = 0; i < k; i++) {
        free_tensors(c, l[i].items, l[i].n);
        kn_mem_free(kn_kctx_allocator(c), l[i].items);
        l[i].items = NULL;
        l[i].n = l[i].cap = 0;
    }
}

/* Stacks the list along a new first axis into node output `out`. */
static kn_status scan_list_out(kn_kctx *c, const scan_list *l, uint32_t out)
{
    if (out >= kn_kctx_n_outputs(c))
        return KN_OK;
    const kn_rt_tensor *e = l->items[0];
    if (e->rank + 1 > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "scan output %u: rank too large", out);
    int64_t dims[KN_RT_MAX_RANK];
    dims[0] = l->n;
    for (int32_t i = 0; i < e->rank; i++)
        dims[i + 1] = e->dims[i];
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, out, e->dtype, e->rank + 1, dims, &y));
    for (uint32_t i = 0; i < l->n; i++)
        if (e->nbytes)
            memcpy((char *)y->data + (size_t)i * e->nbytes, l->items[i]->data, e->nbytes);
    return KN_OK;
}

kn_status kn_ref_Loop(kn_kctx *c)
{
    const kn_allocator *al = kn_kctx_allocator(c);
    const kn_graph *body = NULL;
    KN_TRY(graph_attr(c, "body", &body));
    uint32_t n_in = kn_kctx_n_inputs(c);
    uint32_t n_carried = n_in > 2 ? n_in - 2 : 0;
    if (body->n_inputs != 2 + n_carried || body->n_outputs < 1 + n_carried)
        return kn_kctx_fail(c, KN_ERR_INVALID,
                            "the body takes %u inputs and gives %u outputs; with %u loop-carried values it must "
                            "take %u and give at least %u",
                            body->n_inputs, body->n_outputs, n_carried, 2 + n_carried, 1 + n_carried);
    uint32_t n_scan = body->n_outputs - 1 - n_carried;
    if (kn_kctx_n_outputs(c) > n_carried + n_scan)
        return kn_kctx_fail(c, KN_ERR_INVALID, "the node has %u outputs, the body gives only %u",
                            kn_kctx_n_outputs(c), n_carried + n_scan);

    const kn_rt_tensor *m = kn_kctx_in(c, 0), *cond_in = kn_kctx_in(c, 1);
    int64_t trip = INT64_MAX;
    if (m) {
        if (m->numel != 1 || !kn_dt_is_int(m->dtype))
            return kn_kctx_fail(c, KN_ERR_INVALID, "M must be a single int64, got %s with %lld elements",
                                kn_dtype_name(m->dtype), (long long)m->numel);
        trip = kn_get_i64(m->dtype, m->data, 0);
    }
    bool cond = true;
    if (cond_in)
        KN_TRY(read_cond(c, cond_in, "cond", &cond));
    for (uint32_t i = 0; i < n_carried; i++)
        if (!kn_kctx_in(c, 2 + i))
            return kn_kctx_fail(c, KN_ERR_INVALID, "loop-carried input %u is missing", i);

    carried *v = kn_kctx_scratch(c, (n_carried + 1) * sizeof *v);
    scan_list *lists = kn_kctx_scratch(c, (n_scan + 1) * sizeof *lists);
    const kn_rt_tensor **ins = kn_kctx_scratch(c, (2 + n_carried) * sizeof *ins);
    kn_rt_tensor **outs = kn_kctx_scratch(c, body->n_outputs * sizeof *outs);
    if (!v || !lists || !ins || !outs)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < n_carried; i++)
        v[i].t = kn_kctx_in(c, 2 + i);

    kn_rt_tensor *iter_t = NULL, *cond_t = NULL;
    kn_status s = kn_rt_tensor_new(al, KN_I64, 0, NULL, &iter_t);
    if (s == KN_OK)
        s = kn_rt_tensor_new(al, KN_BOOL, 0, NULL, &cond_t);
    int64_t it = 0;
    for (; s == KN_OK && cond && it < trip; it++) {
        memcpy(iter_t->data, &it, sizeof it);
        *(uint8_t *)cond_t->data = 1; /* the loop only runs while cond holds */
        ins[0] = iter_t;
        ins[1] = cond_t;
        for (uint32_t i = 0; i < n_carried; i++)
            ins[2 + i] = v[i].t;
        s = kn_kctx_run_graph(c, body, ins, 2 + n_carried, outs, body->n_outputs);
        if (s != KN_OK)
            break; /* the executor freed the outputs */
        s = read_cond(c, outs[0], "the body's condition output", &cond);
        kn_rt_tensor_free(al, outs[0]);
        outs[0] = NULL;
        for (uint32_t i = 0; i < n_carried; i++) {
            carried_set(c, &v[i], outs[1 + i]);
            outs[1 + i] = NULL;
        }
        for (uint32_t k = 0; k < n_scan; k++) {
            kn_rt_tensor *e = outs[1 + n_carried + k];
            outs[1 + n_carried + k] = NULL;
            scan_list *l = &lists[k];
            if (s == KN_OK && l->n && !same_shape(e, l->items[0]))
                s = kn_kctx_fail(c, KN_ERR_INVALID, "scan output %u changes type or shape at iteration %lld", k,
                                 (long long)it);
            if (s == KN_OK && elem_bytes(e->dtype) == 0)
                s = kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "scan output %u has type %s", k, kn_dtype_name(e->dtype));
            if (s == KN_OK && l->n == UINT32_MAX)
                s = kn_kctx_fail(c, KN_ERR_LIMIT, "too many iterations for scan output %u", k);
            if (s == KN_OK)
                s = kn_mem_grow(al, (void **)&l->items, &l->cap, l->n + 1, sizeof *l->items);
            if (s == KN_OK)
                l->items[l->n++] = e;
            else
                kn_rt_tensor_free(al, e);
        }
    }
    for (uint32_t i = 0; s == KN_OK && i < n_carried; i++)
        s = carried_out(c, i, &v[i]);
    for (uint32_t k = 0; s == KN_OK && k < n_scan; k++)
        s = lists[k].n ? scan_list_out(c, &lists[k], n_carried + k)
                       : empty_scan_out(c, body, 1 + n_carried + k, n_carried + k, 0);
    carried_free(c, v, n_carried);
    scan_lists_free(c, lists, n_scan);
    kn_rt_tensor_free(al, iter_t);
    kn_rt_tensor_free(al, cond_t);
    return s;
}

/* ---- Scan ---- */

/* Sizes for moving index `idx` of `axis` in a tensor of shape dims. */
typedef struct axis_view {
    int64_t outer, len; /* elements before the axis, its length */
    size_t inner;       /* bytes of one step after the axis */
} axis_view;

static axis_view view_of(int32_t rank, const int64_t *dims, int32_t axis, size_t es)
{
    axis_view v = {1, dims[axis], es};
    for (int32_t i = 0; i < axis; i++)
        v.outer *= dims[i];
    for (int32_t i = axis + 1; i < rank; i++)
        v.inner *= (size_t)dims[i];
    return v;
}

static void take_slice(const axis_view *v, const void *src, int64_t idx, void *dst)
{
    for (int64_t o = 0; o < v->outer; o++)
        memcpy((char *)dst + (size_t)o * v->inner, (const char *)src + (size_t)(o * v->len + idx) * v->inner,
               v->inner);
}

static void put_slice(const axis_view *v, void *dst, int64_t idx, const void *src)
{
    for (int64_t o = 0; o < v->outer; o++)
        memcpy((char *)dst + (size_t)(o * v->len + idx) * v->inner, (const char *)src + (size_t)o * v->inner,
               v->inner);
}

/* An int attribute list of n entries (0 where absent); fails when the
 * list is present with another length. */
static kn_status int_list(kn_kctx *c, const char *name, uint32_t n, int64_t **out)
{
    uint32_t na;
    const int64_t *a = kn_kctx_attr_ints(c, name, &na);
    if (a && na != n)
        return kn_kctx_fail(c, KN_ERR_INVALID, "'%s' has %u entries, expected %u", name, na, n);
    int64_t *v = kn_kctx_scratch(c, (n + 1) * sizeof *v);
    if (!v)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; a && i < n; i++)
        v[i] = a[i];
    *out = v;
    return KN_OK;
}

static kn_status check_dirs(kn_kctx *c, const char *name, const int64_t *d, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        if (d[i] != 0 && d[i] != 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "'%s'[%u] is %lld, must be 0 or 1", name, i, (long long)d[i]);
    return KN_OK;
}

/* Scan-8 and Scan-9+ share the iteration: per "batch" (opset 8; one batch
 * otherwise) the states start from init, each step hands the body one
 * element of every scan input and stores the scan-output elements. */
typedef struct scan_job {
    const kn_graph *body;
    uint32_t n_state, n_in_scan, n_out_scan;
    const kn_rt_tensor **init;     /* n_state */
    const kn_rt_tensor **scan_in;  /* n_in_scan */
    int32_t *in_axis;              /* per scan input */
    int64_t *in_dir;
    int32_t *out_axis_raw;         /* per scan output, as given (may be negative) */
    int64_t *out_dir;
    int64_t seq;                   /* max sequence length */
    int64_t batch;                 /* opset 8: batch size; else 1 (no batch axis) */
    const int64_t *seq_lens;       /* opset 8 only; NULL: all seq */
} scan_job;

static kn_status scan_run(kn_kctx *c, const scan_job *j)
{
    const kn_allocator *al = kn_kctx_allocator(c);
    bool batched = kn_kctx_opset(c) < 9;
    uint32_t n_body_in = j->n_state + j->n_in_scan, n_body_out = j->n_state + j->n_out_scan;
    carried *v = kn_kctx_scratch(c, (j->n_state + 1) * sizeof *v);
    kn_rt_tensor **elem = kn_kctx_scratch(c, (j->n_in_scan + j->n_state + 1) * sizeof *elem);
    kn_rt_tensor **state_b = elem + j->n_in_scan; /* opset 8: this batch's initial states */
    const kn_rt_tensor **ins = kn_kctx_scratch(c, (n_body_in + 1) * sizeof *ins);
    kn_rt_tensor **outs = kn_kctx_scratch(c, (n_body_out + 1) * sizeof *outs);
    kn_rt_tensor **final = kn_kctx_scratch(c, (n_body_out + 1) * sizeof *final); /* node outputs, as made */
    if (!v || !elem || !ins || !outs || !final)
        return KN_ERR_NOMEM;
    kn_status s = KN_OK;
    /* element tensors: the scan input without its scan (and batch) axis */
    for (uint32_t i = 0; s == KN_OK && i < j->n_in_scan; i++) {
        const kn_rt_tensor *x = j->scan_in[i];
        int64_t dims[KN_RT_MAX_RANK];
        int32_t r = 0;
        for (int32_t d = 0; d < x->rank; d++)
            if (d != j->in_axis[i] && !(batched && d == 0))
                dims[r++] = x->dims[d];
        s = kn_rt_tensor_new(al, x->dtype, r, dims, &elem[i]);
    }
    for (uint32_t i = 0; s == KN_OK && batched && i < j->n_state; i++) {
        const kn_rt_tensor *x = j->init[i];
        s = kn_rt_tensor_new(al, x->dtype, x->rank - 1, x->dims + 1, &state_b[i]);
    }
    for (int64_t b = 0; s == KN_OK && b < j->batch; b++) {
        for (uint32_t i = 0; i < j->n_state; i++) {
            carried_free(c, &v[i], 1);
            if (batched) {
                size_t nb = state_b[i]->nbytes;
                if (nb)
                    memcpy(state_b[i]->data, (const char *)j->init[i]->data + (size_t)b * nb, nb);
                v[i].t = state_b[i];
            } else {
                v[i].t = j->init[i];
            }
        }
        int64_t len = j->seq_lens ? j->seq_lens[b] : j->seq;
        for (int64_t t = 0; s == KN_OK && t < len; t++) {
            for (uint32_t i = 0; i < j->n_in_scan; i++) {
                const kn_rt_tensor *x = j->scan_in[i];
                int64_t idx = j->in_dir[i] ? len - 1 - t : t;
                size_t es = elem_bytes(x->dtype);
                if (batched) { /* [batch, seq, ...]: element (b, idx) is one block */
                    size_t nb = elem[i]->nbytes;
                    if (nb)
                        memcpy(elem[i]->data, (const char *)x->data + (size_t)(b * j->seq + idx) * nb, nb);
                } else {
                    axis_view av = view_of(x->rank, x->dims, j->in_axis[i], es);
                    take_slice(&av, x->data, idx, elem[i]->data);
                }
            }
            for (uint32_t i = 0; i < j->n_state; i++)
                ins[i] = v[i].t;
            for (uint32_t i = 0; i < j->n_in_scan; i++)
                ins[j->n_state + i] = elem[i];
            s = kn_kctx_run_graph(c, j->body, ins, n_body_in, outs, n_body_out);
            if (s != KN_OK)
                break;
            for (uint32_t i = 0; i < j->n_state; i++) {
                carried_set(c, &v[i], outs[i]);
                outs[i] = NULL;
            }
            for (uint32_t k = 0; k < j->n_out_scan; k++) {
                kn_rt_tensor *e = outs[j->n_state + k];
                outs[j->n_state + k] = NULL;
                uint32_t o = j->n_state + k;
                size_t es = elem_bytes(e->dtype);
                if (s == KN_OK && es == 0)
                    s = kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "scan output %u has type %s", k, kn_dtype_name(e->dtype));
                if (s == KN_OK && o < kn_kctx_n_outputs(c)) {
                    int32_t r = e->rank + 1 + (batched ? 1 : 0);
                    int32_t ax = j->out_axis_raw[k] < 0 ? j->out_axis_raw[k] + e->rank + 1 : j->out_axis_raw[k];
                    if (r > KN_RT_MAX_RANK)
                        s = kn_kctx_fail(c, KN_ERR_LIMIT, "scan output %u: rank too large", k);
                    else if (ax < 0 || ax > e->rank)
                        s = kn_kctx_fail(c, KN_ERR_INVALID, "scan_output_axes[%u] = %d out of range for rank %d", k,
                                         j->out_axis_raw[k], (int)e->rank + 1);
                    int64_t dims[KN_RT_MAX_RANK];
                    int32_t off = batched ? 1 : 0;
                    if (s == KN_OK) {
                        dims[0] = j->batch;
                        for (int32_t d = 0, q = 0; d < e->rank + 1; d++)
                            dims[off + d] = d == ax ? j->seq : e->dims[q++];
                    }
                    if (s == KN_OK && !final[o]) {
                        s = kn_kctx_out(c, o, e->dtype, r, dims, &final[o]);
                    } else if (s == KN_OK) {
                        bool ok = final[o]->dtype == e->dtype && final[o]->rank == r;
                        for (int32_t d = 0; ok && d < r; d++)
                            ok = final[o]->dims[d] == dims[d];
                        if (!ok)
                            s = kn_kctx_fail(c, KN_ERR_INVALID, "scan output %u changes type or shape at step %lld",
                                             k, (long long)t);
                    }
                    if (s == KN_OK) {
                        int64_t pos = j->out_dir[k] ? len - 1 - t : t;
                        if (batched) {
                            size_t nb = e->nbytes;
                            if (nb) { /* with the axis at 0 of the element: block (b, pos) */
                                axis_view av = view_of(e->rank + 1, dims + 1, ax, es);
                                put_slice(&av, (char *)final[o]->data + (size_t)b * (size_t)j->seq * nb, pos,
                                          e->data);
                            }
                        } else {
                            axis_view av = view_of(r, dims, ax, es);
                            put_slice(&av, final[o]->data, pos, e->data);
                        }
                    }
                }
                kn_rt_tensor_free(al, e);
            }
        }
        /* final states: opset 8 stacks them over the batch */
        for (uint32_t i = 0; s == KN_OK && i < j->n_state; i++) {
            if (!batched) {
                s = carried_out(c, i, &v[i]);
                continue;
            }
            const kn_rt_tensor *st = v[i].t;
            if (i >= kn_kctx_n_outputs(c))
                continue;
            if (!final[i]) {
                int64_t dims[KN_RT_MAX_RANK];
                if (st->rank + 1 > KN_RT_MAX_RANK) {
                    s = kn_kctx_fail(c, KN_ERR_LIMIT, "state %u: rank too large", i);
                    break;
                }
                dims[0] = j->batch;
                for (int32_t d = 0; d < st->rank; d++)
                    dims[d + 1] = st->dims[d];
                s = kn_kctx_out(c, i, st->dtype, st->rank + 1, dims, &final[i]);
            } else {
                bool ok = final[i]->dtype == st->dtype && final[i]->rank == st->rank + 1;
                for (int32_t d = 0; ok && d < st->rank; d++)
                    ok = final[i]->dims[d + 1] == st->dims[d];
                if (!ok)
                    s = kn_kctx_fail(c, KN_ERR_INVALID, "state %u changes type or shape between batches", i);
            }
            if (s == KN_OK && st->nbytes)
                memcpy((char *)final[i]->data + (size_t)b * st->nbytes, st->data, st->nbytes);
        }
    }
    /* scan outputs never produced: no step ran */
    for (uint32_t k = 0; s == KN_OK && k < j->n_out_scan; k++) {
        uint32_t o = j->n_state + k;
        if (o < kn_kctx_n_outputs(c) && !final[o]) {
            if (!batched) {
                s = empty_scan_out(c, j->body, o, o, j->out_axis_raw[k]);
                continue;
            }
            const kn_type *ty = &j->body->values[j->body->outputs[o]].type;
            bool known = ty->kind == KN_TYPE_TENSOR && ty->dtype != KN_UNDEFINED && ty->shape.rank >= 0 &&
                         ty->shape.rank + 2 <= KN_RT_MAX_RANK;
            for (int32_t d = 0; known && d < ty->shape.rank; d++)
                known = ty->shape.dims[d].value >= 0;
            if (!known) {
                s = kn_kctx_fail(c, KN_ERR_UNSUPPORTED,
                                 "the body ran no step and does not declare the shape of scan output %u", k);
                break;
            }
            int64_t dims[KN_RT_MAX_RANK];
            dims[0] = j->batch;
            dims[1] = j->seq;
            for (int32_t d = 0; d < ty->shape.rank; d++)
                dims[d + 2] = ty->shape.dims[d].value;
            s = kn_kctx_out(c, o, ty->dtype, ty->shape.rank + 2, dims, &final[o]);
        }
    }
    for (uint32_t i = 0; s == KN_OK && batched && i < j->n_state; i++)
        if (i < kn_kctx_n_outputs(c) && !final[i]) { /* batch 0: states keep their (empty) initial shape */
            kn_rt_tensor *t;
            s = kn_rt_tensor_clone(al, j->init[i], &t);
            if (s == KN_OK)
                s = kn_kctx_out_set(c, i, t);
        }
    carried_free(c, v, j->n_state);
    for (uint32_t i = 0; i < j->n_in_scan + j->n_state; i++)
        kn_rt_tensor_free(al, elem[i]);
    return s;
}

kn_status kn_ref_Scan(kn_kctx *c)
{
    scan_job j;
    memset(&j, 0, sizeof j);
    KN_TRY(graph_attr(c, "body", &j.body));
    bool batched = kn_kctx_opset(c) < 9;
    int64_t m = kn_kctx_attr_int(c, "num_scan_inputs", -1);
    uint32_t first = batched ? 1 : 0, n_in = kn_kctx_n_inputs(c);
    if (m < 1 || n_in < first || m > (int64_t)(n_in - first))
        return kn_kctx_fail(c, KN_ERR_INVALID, "num_scan_inputs is %lld, but the node has %u state and scan inputs",
                            (long long)m, n_in > first ? n_in - first : 0);
    j.n_in_scan = (uint32_t)m;
    j.n_state = n_in - first - j.n_in_scan;
    if (j.body->n_inputs != j.n_state + j.n_in_scan || j.body->n_outputs < j.n_state)
        return kn_kctx_fail(c, KN_ERR_INVALID, "the body takes %u inputs and gives %u outputs; expected %u inputs",
                            j.body->n_inputs, j.body->n_outputs, j.n_state + j.n_in_scan);
    j.n_out_scan = j.body->n_outputs - j.n_state;
    if (kn_kctx_n_outputs(c) > j.body->n_outputs)
        return kn_kctx_fail(c, KN_ERR_INVALID, "the node has %u outputs, the body gives only %u", kn_kctx_n_outputs(c),
                            j.body->n_outputs);
    j.init = kn_kctx_scratch(c, (j.n_state + 1) * sizeof *j.init);
    j.scan_in = kn_kctx_scratch(c, (j.n_in_scan + 1) * sizeof *j.scan_in);
    j.in_axis = kn_kctx_scratch(c, (j.n_in_scan + 1) * sizeof *j.in_axis);
    j.out_axis_raw = kn_kctx_scratch(c, (j.n_out_scan + 1) * sizeof *j.out_axis_raw);
    if (!j.init || !j.scan_in || !j.in_axis || !j.out_axis_raw)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < j.n_state + j.n_in_scan; i++) {
        const kn_rt_tensor *x = kn_kctx_in(c, first + i);
        if (!x)
            return kn_kctx_fail(c, KN_ERR_INVALID, "input %u is missing", first + i);
        if (elem_bytes(x->dtype) == 0)
            return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "input %u has type %s", first + i, kn_dtype_name(x->dtype));
        if (i < j.n_state)
            j.init[i] = x;
        else
            j.scan_in[i - j.n_state] = x;
    }
    int64_t *raw_in_axes, *raw_out_axes;
    if (batched) {
        KN_TRY(int_list(c, "directions", j.n_in_scan, &j.in_dir));
        j.out_dir = kn_kctx_scratch(c, (j.n_out_scan + 1) * sizeof *j.out_dir); /* opset 8: all appended */
        if (!j.out_dir)
            return KN_ERR_NOMEM;
        KN_TRY(check_dirs(c, "directions", j.in_dir, j.n_in_scan));
        for (uint32_t i = 0; i < j.n_in_scan; i++) {
            const kn_rt_tensor *x = j.scan_in[i];
            if (x->rank < 2)
                return kn_kctx_fail(c, KN_ERR_INVALID, "scan input %u must have rank >= 2 ([batch, seq, ...])", i);
            j.in_axis[i] = 1;
        }
        j.batch = j.scan_in[0]->dims[0];
        j.seq = j.scan_in[0]->dims[1];
        for (uint32_t i = 0; i < j.n_in_scan; i++)
            if (j.scan_in[i]->dims[0] != j.batch || j.scan_in[i]->dims[1] != j.seq)
                return kn_kctx_fail(c, KN_ERR_INVALID, "scan inputs differ in batch size or sequence length");
        for (uint32_t i = 0; i < j.n_state; i++)
            if (j.init[i]->rank < 1 || j.init[i]->dims[0] != j.batch)
                return kn_kctx_fail(c, KN_ERR_INVALID, "initial state %u must have the batch size %lld as dimension 0",
                                    i, (long long)j.batch);
        const kn_rt_tensor *sl = kn_kctx_in(c, 0);
        if (sl) {
            int64_t *lens, n;
            KN_TRY(kn_read_ints(c, sl, &lens, &n));
            if (n != j.batch)
                return kn_kctx_fail(c, KN_ERR_INVALID, "sequence_lens has %lld entries, the batch size is %lld",
                                    (long long)n, (long long)j.batch);
            for (int64_t b = 0; b < n; b++)
                if (lens[b] < 0 || lens[b] > j.seq)
                    return kn_kctx_fail(c, KN_ERR_INVALID, "sequence_lens[%lld] = %lld out of range [0, %lld]",
                                        (long long)b, (long long)lens[b], (long long)j.seq);
            j.seq_lens = lens;
        }
    } else {
        KN_TRY(int_list(c, "scan_input_axes", j.n_in_scan, &raw_in_axes));
        KN_TRY(int_list(c, "scan_input_directions", j.n_in_scan, &j.in_dir));
        KN_TRY(int_list(c, "scan_output_axes", j.n_out_scan, &raw_out_axes));
        KN_TRY(int_list(c, "scan_output_directions", j.n_out_scan, &j.out_dir));
        KN_TRY(check_dirs(c, "scan_input_directions", j.in_dir, j.n_in_scan));
        KN_TRY(check_dirs(c, "scan_output_directions", j.out_dir, j.n_out_scan));
        for (uint32_t i = 0; i < j.n_in_scan; i++) {
            const kn_rt_tensor *x = j.scan_in[i];
            if (x->rank < 1)
                return kn_kctx_fail(c, KN_ERR_INVALID, "scan input %u is a scalar", i);
            KN_TRY(kn_axis(c, raw_in_axes[i], x->rank, &j.in_axis[i]));
            int64_t len = x->dims[j.in_axis[i]];
            if (i == 0)
                j.seq = len;
            else if (len != j.seq)
                return kn_kctx_fail(c, KN_ERR_INVALID, "scan input %u has sequence length %lld, scan input 0 has %lld",
                                    i, (long long)len, (long long)j.seq);
        }
        for (uint32_t k = 0; k < j.n_out_scan; k++) {
            if (raw_out_axes[k] < -KN_RT_MAX_RANK || raw_out_axes[k] > KN_RT_MAX_RANK)
                return kn_kctx_fail(c, KN_ERR_INVALID, "scan_output_axes[%u] = %lld out of range", k,
                                    (long long)raw_out_axes[k]);
            j.out_axis_raw[k] = (int32_t)raw_out_axes[k];
        }
        j.batch = 1;
    }
    return scan_run(c, &j);
}
