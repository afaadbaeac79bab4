/* Calibration statistics gathered through the CPU executor's observer
 * (quant/calib.h). */
#include "quant/calib.h"
#include "ir/arena.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void *zalloc(const kn_allocator *a, size_t n)
{
    void *p = kn_mem_alloc(a, n ? n : 1);
    if (p)
        memset(p, 0, n ? n : 1);
    return p;
}

static bool is_float(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16 || t == KN_F64; }

/* The linear layers: MatMul with a constant rank-2 B, Gemm (transA 0)
 * with a constant B. Their inputs are shared when layers read the same
 * value (q/k/v projections). */
static kn_status find_layers(kn_calib *c, kn_diag *d)
{
    const kn_graph *g = c->g;
    c->layers = zalloc(c->alloc, (size_t)g->n_nodes * sizeof *c->layers);
    c->inputs = zalloc(c->alloc, (size_t)g->n_nodes * sizeof *c->inputs);
    if (!c->layers || !c->inputs)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const kn_node *n = &g->nodes[i];
        if ((n->op != KN_OP_MatMul && n->op != KN_OP_Gemm) || n->n_inputs < 2 || n->inputs[0] == KN_NONE ||
            n->inputs[1] == KN_NONE)
            continue;
        const kn_value *wv = &g->values[n->inputs[1]];
        if (wv->kind != KN_VAL_CONST || !wv->tensor || wv->tensor->rank != 2 || !is_float(wv->tensor->dtype))
            continue;
        bool nk = false;
        if (n->op == KN_OP_Gemm) {
            const kn_attr *ta = kn_node_attr(n, "transA"), *tb = kn_node_attr(n, "transB");
            if (ta && ta->u.i)
                continue;
            nk = tb && tb->u.i;
        }
        uint64_t k = (uint64_t)wv->tensor->dims[nk ? 1 : 0], nn = (uint64_t)wv->tensor->dims[nk ? 0 : 1];
        if (k == 0 || k > UINT32_MAX || nn > UINT32_MAX)
            continue;
        kn_id in = n->inputs[0];
        int32_t li = c->input_of[in];
        if (li < 0) {
            li = (int32_t)c->n_inputs++;
            kn_calib_input *x = &c->inputs[li];
            x->value = in;
            x->name = g->values[in].name;
            x->k = (uint32_t)k;
            x->sum_abs = zalloc(c->alloc, k * sizeof *x->sum_abs);
            x->max_abs = zalloc(c->alloc, k * sizeof *x->max_abs);
            if (!x->sum_abs || !x->max_abs)
                return KN_ERR_NOMEM;
            if (k <= c->o.max_xtx_dim) {
                x->xtx = zalloc(c->alloc, k * k * sizeof *x->xtx);
                if (!x->xtx)
                    return KN_ERR_NOMEM;
            } else {
                kn_diag_add(d, KN_NOTE, "input '%s' of node '%s' is %llu wide (over %u): no XᵀX gathered for it",
                            x->name, n->name, (unsigned long long)k, c->o.max_xtx_dim);
            }
            c->input_of[in] = li;
        } else if (c->inputs[li].k != k) {
            continue; /* a shape error the run reports */
        }
        kn_calib_layer *l = &c->layers[c->n_layers++];
        l->node = i;
        l->name = n->name;
        l->op = n->op_type;
        l->weight = wv->name;
        l->input = (uint32_t)li;
        l->k = (uint32_t)k;
        l->n = (uint32_t)nn;
        l->weight_nk = nk;
    }
    return KN_OK;
}

kn_status kn_calib_create(const kn_graph *g, const kn_calib_opts *o, const kn_allocator *a, kn_diag *d,
                          kn_calib **out)
{
    *out = NULL;
    kn_calib *c = zalloc(a, sizeof *c);
    if (!c)
        return KN_ERR_NOMEM;
    c->alloc = a;
    c->g = g;
    c->o = *o;
    if (!c->o.percentile)
        c->o.percentile = 99.99;
    if (!c->o.bins)
        c->o.bins = 2048;
    if (!c->o.max_xtx_dim)
        c->o.max_xtx_dim = 8192;
    kn_status s = KN_OK;
    if (!(c->o.percentile > 0 && c->o.percentile <= 100)) {
        kn_diag_add(d, KN_ERROR, "calibrate: percentile %g is not in (0, 100]", c->o.percentile);
        s = KN_ERR_INVALID;
    } else if (c->o.bins < 256 || c->o.bins > 1u << 20) {
        kn_diag_add(d, KN_ERROR, "calibrate: %u histogram bins: use 256 to 1048576 (the entropy search needs "
                    "more bins than its 128 levels)", c->o.bins);
        s = KN_ERR_INVALID;
    }
    if (s != KN_OK) {
        kn_calib_destroy(c);
        return s;
    }
    c->slot_of = kn_mem_alloc(c->alloc, (size_t)(g->n_values + 1) * sizeof *c->slot_of);
    c->input_of = kn_mem_alloc(c->alloc, (size_t)(g->n_values + 1) * sizeof *c->input_of);
    c->tensors = zalloc(c->alloc, (size_t)(g->n_values + 1) * sizeof *c->tensors);
    if (!c->slot_of || !c->input_of || !c->tensors) {
        kn_calib_destroy(c);
        return KN_ERR_NOMEM;
    }
    for (uint32_t i = 0; i < g->n_values; i++)
        c->slot_of[i] = c->input_of[i] = -1;
    /* graph order: inputs, then each node's outputs */
    for (uint32_t i = 0; i < g->n_inputs; i++)
        c->slot_of[g->inputs[i]] = (int32_t)c->n_tensors++;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (uint32_t k = 0; k < g->nodes[i].n_outputs; k++)
            if (g->nodes[i].outputs[k] != KN_NONE && c->slot_of[g->nodes[i].outputs[k]] < 0)
                c->slot_of[g->nodes[i].outputs[k]] = (int32_t)c->n_tensors++;
    for (uint32_t v = 0; v < g->n_values; v++)
        if (c->slot_of[v] >= 0) {
            kn_calib_tensor *t = &c->tensors[c->slot_of[v]];
            t->value = v;
            t->name = g->values[v].name;
            t->min = INFINITY;
            t->max = -INFINITY;
        }
    s = find_layers(c, d);
    uint32_t kmax = 1;
    for (uint32_t i = 0; i < c->n_inputs; i++)
        kmax = c->inputs[i].k > kmax ? c->inputs[i].k : kmax;
    if (s == KN_OK && !(c->row = zalloc(c->alloc, (size_t)kmax * sizeof *c->row)))
        s = KN_ERR_NOMEM;
    if (s != KN_OK) {
        kn_calib_destroy(c);
        return s;
    }
    *out = c;
    return KN_OK;
}

void kn_calib_destroy(kn_calib *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; c->tensors && i < c->n_tensors; i++)
        kn_mem_free(c->alloc, c->tensors[i].hist);
    for (uint32_t i = 0; c->inputs && i < c->n_inputs; i++) {
        kn_mem_free(c->alloc, c->inputs[i].sum_abs);
        kn_mem_free(c->alloc, c->inputs[i].max_abs);
        kn_mem_free(c->alloc, c->inputs[i].xtx);
    }
    kn_mem_free(c->alloc, c->tensors);
    kn_mem_free(c->alloc, c->inputs);
    kn_mem_free(c->alloc, c->layers);
    kn_mem_free(c->alloc, c->slot_of);
    kn_mem_free(c->alloc, c->input_of);
    kn_mem_free(c->alloc, c->row);
    const kn_allocator *a = c->alloc;
    kn_mem_free(a, c);
}

bool kn_calib_two_pass(const kn_calib *c) { return c->o.method != KN_CALIB_MINMAX; }

static inline double elem(const kn_rt_tensor *t, int64_t i)
{
    return t->dtype == KN_F32 ? (double)((const float *)t->data)[i] : kn_get_f64(t->dtype, t->data, i);
}

static void fail(kn_calib *c, kn_status s, const char *why)
{
    if (c->failed == KN_OK) {
        c->failed = s;
        snprintf(c->why, sizeof c->why, "%s", why);
    }
}

static void observe_tensor(kn_calib *c, kn_calib_tensor *ts, const kn_rt_tensor *t, int pass)
{
    if (pass == 1) {
        ts->dtype = t->dtype;
        for (int64_t i = 0; i < t->numel; i++) {
            double x = elem(t, i);
            if (!isfinite(x)) {
                ts->n_nonfinite++;
                continue;
            }
            ts->min = x < ts->min ? x : ts->min;
            ts->max = x > ts->max ? x : ts->max;
            ts->count++;
        }
        return;
    }
    if (!ts->hist && ts->count) {
        ts->hist = zalloc(c->alloc, (size_t)c->o.bins * sizeof *ts->hist);
        if (!ts->hist) {
            fail(c, KN_ERR_NOMEM, "out of memory for a histogram");
            return;
        }
    }
    double amax = fmax(fabs(ts->min), fabs(ts->max));
    uint32_t nb = c->o.bins;
    for (int64_t i = 0; ts->hist && i < t->numel; i++) {
        double x = fabs(elem(t, i));
        if (!isfinite(x))
            continue;
        uint64_t b = amax > 0 ? (uint64_t)(x / amax * nb) : 0;
        ts->hist[b < nb ? b : nb - 1]++;
    }
}

static void observe_input(kn_calib *c, kn_calib_input *x, const kn_rt_tensor *t)
{
    uint32_t k = x->k;
    if (t->rank < 1 || t->dims[t->rank - 1] != (int64_t)k) {
        char why[256];
        snprintf(why, sizeof why, "input '%s' of a linear layer has last dimension %lld, its weight expects %u",
                 x->name, t->rank ? (long long)t->dims[t->rank - 1] : 0LL, k);
        fail(c, KN_ERR_INVALID, why);
        return;
    }
    int64_t rows = t->numel / k;
    double *row = c->row;
    for (int64_t r = 0; r < rows; r++) {
        bool finite = true;
        for (uint32_t i = 0; i < k; i++) {
            row[i] = elem(t, r * k + i);
            finite &= isfinite(row[i]) != 0;
        }
        if (!finite)
            continue; /* counted with the tensor's non-finite values */
        x->rows++;
        for (uint32_t i = 0; i < k; i++) {
            double xi = row[i];
            x->sum_abs[i] += fabs(xi);
            if (fabs(xi) > x->max_abs[i])
                x->max_abs[i] = fabs(xi);
            if (!x->xtx || xi == 0)
                continue;
            double *hi = x->xtx + (size_t)i * k;
            for (uint32_t j = i; j < k; j++)
                hi[j] += xi * row[j];
        }
    }
}

typedef struct obs_ctx {
    kn_calib *c;
    int pass;
} obs_ctx;

static void observe(void *ctx, const kn_graph *g, kn_id value, const kn_rt_tensor *t)
{
    obs_ctx *o = ctx;
    kn_calib *c = o->c;
    if (g != c->g || value >= g->n_values || !t || !is_float(t->dtype))
        return;
    if (c->slot_of[value] >= 0)
        observe_tensor(c, &c->tensors[c->slot_of[value]], t, o->pass);
    if (o->pass == 1 && c->input_of[value] >= 0)
        observe_input(c, &c->inputs[c->input_of[value]], t);
}

kn_status kn_calib_run(kn_calib *c, int pass, const kn_rt_tensor *const *inputs, kn_diag *d)
{
    const kn_graph *g = c->g;
    obs_ctx o = {c, pass};
    for (uint32_t i = 0; i < g->n_inputs; i++)
        observe(&o, g, g->inputs[i], inputs[i]);
    kn_rt_tensor **outs = zalloc(c->alloc, (size_t)(g->n_outputs + 1) * sizeof *outs);
    if (!outs)
        return KN_ERR_NOMEM;
    kn_status s = kn_cpu_run_observed(g, c->alloc, d, inputs, g->n_inputs, outs, g->n_outputs, observe, &o);
    for (uint32_t i = 0; i < g->n_outputs; i++)
        kn_rt_tensor_free(c->alloc, outs[i]);
    kn_mem_free(c->alloc, outs);
    if (s == KN_OK && c->failed != KN_OK) {
        kn_diag_add(d, KN_ERROR, "calibrate: %s", c->why);
        s = c->failed;
    }
    if (s == KN_OK && pass == 1)
        c->n_samples++;
    return s;
}

void kn_calib_finish(kn_calib *c)
{
    for (uint32_t i = 0; i < c->n_tensors; i++) {
        kn_calib_tensor *t = &c->tensors[i];
        if (!t->count) {
            t->min = t->max = t->absmax = t->amax = 0;
            continue;
        }
        t->absmax = fmax(fabs(t->min), fabs(t->max));
        if (c->o.method == KN_CALIB_MINMAX || !t->hist)
            t->amax = t->absmax;
        else if (c->o.method == KN_CALIB_PERCENTILE)
            t->amax = kn_calib_percentile(t->hist, c->o.bins, t->absmax, c->o.percentile);
        else
            t->amax = kn_calib_entropy(t->hist, c->o.bins, t->absmax, 128);
    }
    for (uint32_t i = 0; i < c->n_inputs; i++) {
        kn_calib_input *x = &c->inputs[i];
        for (uint32_t r = 0; x->xtx && r < x->k; r++)
            for (uint32_t j = 0; j < r; j++)
                x->xtx[(size_t)r * x->k + j] = x->xtx[(size_t)j * x->k + r];
    }
}
