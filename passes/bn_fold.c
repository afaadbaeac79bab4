/* BatchNormalization folding: in inference, BN(y) = y·s + (B − mean·s) with
 * s = scale / sqrt(var + eps) per channel, an affine map that a preceding
 * Conv or Gemm with constant weights absorbs: its weights scaled by s per
 * output channel, its bias b replaced by (b − mean)·s + B. CNN exports
 * (ResNet, MobileNet, PP-OCR) have one BN after nearly every Conv; folding
 * removes a full pass over every activation. Only when the BN is in
 * inference form (training_mode absent or 0, spatial), scale, B, mean and
 * var are float32 constants, the Conv/Gemm weights and bias are float32
 * constants, and the Conv/Gemm output has no reader but the BN. New weight
 * constants are made (the old ones may be shared, and may be mmapped);
 * dce drops the old ones when nothing else reads them. The arithmetic is
 * done in double and rounded once to float32. */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const float *f32(const kn_graph *g, const kn_node *n, uint32_t i, int64_t count)
{
    if (!kn_rw_has_in(n, i))
        return NULL;
    const kn_tensor *t = kn_rw_const(g, n->inputs[i]);
    return t && t->dtype == KN_F32 && t->n_elems == count ? t->data : NULL;
}

static float attr_f(const kn_node *n, const char *name, float def)
{
    const kn_attr *a = kn_node_attr(n, name);
    return a && a->kind == KN_ATTR_FLOAT ? a->u.f : def;
}

static kn_status set_float_attr(kn_graph *g, kn_node *n, const char *name, float v)
{
    kn_attr a = {0};
    KN_TRY(kn_graph_intern_cstr(g, name, &a.name));
    a.kind = KN_ATTR_FLOAT;
    a.u.f = v;
    return kn_rw_set_attr(g, n, &a);
}

/* Folds BN node k into the Conv/Gemm that produces its input. */
static kn_status fold_one(kn_graph *g, kn_uses *u, kn_id k, bool *done)
{
    *done = false;
    const kn_node *bn = &g->nodes[k];
    if (bn->op != KN_OP_BatchNormalization || bn->n_inputs < 5 || !kn_rw_has_in(bn, 0) || *bn->domain ||
        kn_node_attr_int(bn, "training_mode", 0) != 0 || kn_node_attr_int(bn, "spatial", 1) != 1 || bn->outputs[0] == KN_NONE)
        return KN_OK;
    for (uint32_t i = 1; i < bn->n_outputs; i++)
        if (bn->outputs[i] != KN_NONE && (u->readers[bn->outputs[i]] || u->pinned[bn->outputs[i]]))
            return KN_OK;
    kn_id y = bn->inputs[0];
    const kn_value *yv = &g->values[y];
    if (yv->kind != KN_VAL_NODE || u->readers[y] != 1 || u->pinned[y] || u->dead[yv->producer])
        return KN_OK;
    kn_id pk = yv->producer;
    const kn_node *p = &g->nodes[pk];
    bool conv = p->op == KN_OP_Conv, gemm = p->op == KN_OP_Gemm;
    if ((!conv && !gemm) || *p->domain || !kn_rw_has_in(p, 1) || p->n_outputs != 1)
        return KN_OK;
    const kn_tensor *w = kn_rw_const(g, p->inputs[1]);
    if (!w || w->dtype != KN_F32 || w->rank < 2)
        return KN_OK;
    int64_t trans_b = gemm ? kn_node_attr_int(p, "transB", 0) : 0;
    int64_t m = conv ? w->dims[0] : trans_b ? w->dims[0] : w->dims[1]; /* output channels */
    if (gemm && w->rank != 2)
        return KN_OK;
    const float *scale = f32(g, bn, 1, m), *bb = f32(g, bn, 2, m), *mean = f32(g, bn, 3, m), *var = f32(g, bn, 4, m);
    if (!scale || !bb || !mean || !var)
        return KN_OK;
    /* the existing bias: Conv's [M]; Gemm's C as [M], [1, M] or a scalar */
    const float *bias = NULL;
    int64_t bias_n = 0;
    if (kn_rw_has_in(p, 2)) {
        const kn_tensor *c = kn_rw_const(g, p->inputs[2]);
        if (!c || c->dtype != KN_F32)
            return KN_OK;
        bool ok = c->n_elems == m && (c->rank == 1 || (gemm && c->rank == 2 && c->dims[0] == 1));
        ok = ok || (gemm && c->n_elems == 1);
        if (!ok)
            return KN_OK;
        bias = c->data;
        bias_n = c->n_elems;
    }
    double eps = attr_f(bn, "epsilon", 1e-5f);
    double beta = gemm ? attr_f(p, "beta", 1.0f) : 1.0;
    float *nw = kn_mem_alloc(g->alloc, w->nbytes + 1);
    float *nb = kn_mem_alloc(g->alloc, (size_t)m * sizeof *nb + 1);
    if (!nw || !nb) {
        kn_mem_free(g->alloc, nw);
        kn_mem_free(g->alloc, nb);
        return KN_ERR_NOMEM;
    }
    const float *ow = w->data;
    int64_t per = w->n_elems / (conv ? m : 1);
    for (int64_t o = 0; o < m; o++) {
        double s = (double)scale[o] / sqrt((double)var[o] + eps);
        double b0 = bias ? beta * (double)bias[bias_n == 1 ? 0 : o] : 0.0;
        nb[o] = (float)((b0 - (double)mean[o]) * s + (double)bb[o]);
        if (conv) {
            for (int64_t j = 0; j < per; j++)
                nw[o * per + j] = (float)((double)ow[o * per + j] * s);
        } else if (trans_b) { /* B is [M, K]: row o */
            int64_t kk = w->dims[1];
            for (int64_t j = 0; j < kk; j++)
                nw[o * kk + j] = (float)((double)ow[o * kk + j] * s);
        } else { /* B is [K, M]: column o */
            for (int64_t j = 0; j < w->dims[0]; j++)
                nw[j * m + o] = (float)((double)ow[j * m + o] * s);
        }
    }
    char base[1024];
    kn_id wv, bv;
    snprintf(base, sizeof base, "%s/bn_folded", g->values[p->inputs[1]].name);
    kn_status s = kn_rw_add_const(g, u, base, KN_F32, w->rank, w->dims, nw, w->nbytes, &wv);
    int64_t bd[1] = {m};
    snprintf(base, sizeof base, "%s/bias_bn_folded", g->nodes[pk].name);
    if (s == KN_OK)
        s = kn_rw_add_const(g, u, base, KN_F32, 1, bd, nb, (size_t)m * sizeof *nb, &bv);
    kn_mem_free(g->alloc, nw);
    kn_mem_free(g->alloc, nb);
    KN_TRY(s);
    /* g->values may have moved: re-read the nodes */
    kn_node *pn = &g->nodes[pk];
    bn = &g->nodes[k];
    kn_id *ins = pn->n_inputs >= 3 ? pn->inputs : kn_graph_alloc(g, 3 * sizeof *ins);
    if (!ins)
        return KN_ERR_NOMEM;
    if (ins != pn->inputs) {
        memcpy(ins, pn->inputs, pn->n_inputs * sizeof *ins);
        for (uint32_t i = pn->n_inputs; i < 3; i++)
            ins[i] = KN_NONE;
        pn->inputs = ins;
        pn->n_inputs = 3;
    }
    u->readers[ins[1]]--;
    if (ins[2] != KN_NONE)
        u->readers[ins[2]]--;
    ins[1] = wv;
    ins[2] = bv;
    u->readers[wv]++;
    u->readers[bv]++;
    if (gemm)
        KN_TRY(set_float_attr(g, pn, "beta", 1.0f));
    /* the Conv/Gemm writes the BN's output; the BN goes */
    kn_id out = bn->outputs[0];
    pn->outputs[0] = out;
    g->values[out].producer = pk;
    g->values[out].out_index = 0;
    kn_rw_orphan(g, y);
    for (uint32_t i = 0; i < bn->n_inputs; i++)
        if (bn->inputs[i] != KN_NONE)
            u->readers[bn->inputs[i]]--;
    u->dead[k] = true;
    *done = true;
    return KN_OK;
}

kn_status kn_pass_bn_fold(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    for (kn_id k = 0; k < g->n_nodes; k++) {
        bool done;
        kn_status s = fold_one(g, &u, k, &done);
        if (s != KN_OK) {
            kn_uses_free(g, &u);
            return s;
        }
    }
    return kn_uses_finish(g, &u);
}
