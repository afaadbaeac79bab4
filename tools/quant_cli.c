/* GPTQ / AWQ weight quantizers and W8A8 activation thresholds from a
 * calibration table, for the compile-time quantize pass (see
 * quant_cli.h). */
#include "quant_cli.h"

#include <stdlib.h>
#include <string.h>

struct kn_qcached {
    char *name;
    int64_t k, n, group;
    int bits;
    uint8_t *codes, *zps;
    float *scales, *in_scale;
    size_t n_codes, n_zps, n_scales;
};

void kn_qmethod_free(kn_qmethod *m)
{
    for (uint32_t i = 0; i < m->n_cache; i++) {
        kn_qcached *c = &m->cache[i];
        free(c->name);
        free(c->codes);
        free(c->zps);
        free(c->scales);
        free(c->in_scale);
    }
    free(m->cache);
    m->cache = NULL;
    m->n_cache = 0;
}

static void sizes(const kn_quant_weight *q, size_t *codes, size_t *zps, size_t *scales)
{
    size_t nblk = (size_t)((q->k + q->group - 1) / q->group);
    *codes = (size_t)q->n * nblk * (size_t)(q->group * q->bits / 8);
    *zps = (size_t)q->n * ((nblk * (size_t)q->bits + 7) / 8);
    *scales = (size_t)q->n * nblk;
}

static kn_qcached *cache_find(kn_qmethod *m, const kn_quant_weight *q)
{
    for (uint32_t i = 0; i < m->n_cache; i++) {
        kn_qcached *c = &m->cache[i];
        if (strcmp(c->name, q->name) == 0 && c->k == q->k && c->n == q->n && c->group == q->group &&
            c->bits == q->bits)
            return c;
    }
    return NULL;
}

/* Keeps a copy of q's results (best effort: no memory, no copy). */
static void cache_add(kn_qmethod *m, const kn_quant_weight *q)
{
    kn_qcached *nc = realloc(m->cache, (m->n_cache + 1) * sizeof *nc);
    if (!nc)
        return;
    m->cache = nc;
    kn_qcached c = {0};
    sizes(q, &c.n_codes, &c.n_zps, &c.n_scales);
    c.name = strdup(q->name);
    c.k = q->k;
    c.n = q->n;
    c.group = q->group;
    c.bits = q->bits;
    c.codes = malloc(c.n_codes + 1);
    c.zps = malloc(c.n_zps + 1);
    c.scales = malloc(c.n_scales * sizeof *c.scales + 1);
    c.in_scale = malloc((size_t)q->k * sizeof *c.in_scale + 1);
    if (!c.name || !c.codes || !c.zps || !c.scales || !c.in_scale) {
        free(c.name);
        free(c.codes);
        free(c.zps);
        free(c.scales);
        free(c.in_scale);
        return;
    }
    memcpy(c.codes, q->codes, c.n_codes);
    memcpy(c.zps, q->zero_points, c.n_zps);
    memcpy(c.scales, q->scales, c.n_scales * sizeof *c.scales);
    memcpy(c.in_scale, q->in_scale, (size_t)q->k * sizeof *c.in_scale);
    m->cache[m->n_cache++] = c;
}

static const kn_calib_table_layer *find_layer(const kn_calib_table *t, const char *node)
{
    for (uint32_t i = 0; node && i < t->n_layers; i++)
        if (strcmp(t->layers[i].node, node) == 0)
            return &t->layers[i];
    return NULL;
}

kn_status kn_qmethod_weight(void *ctx, const kn_quant_weight *q, kn_diag *d)
{
    kn_qmethod *m = ctx;
    const char *algo = m->algo == KN_QALGO_GPTQ ? "gptq" : "awq";
    if (m->algo == KN_QALGO_RTN)
        return kn_quant_rtn(NULL, q, d);
    const kn_qcached *c = q->name ? cache_find(m, q) : NULL;
    if (c) {
        memcpy(q->codes, c->codes, c->n_codes);
        memcpy(q->zero_points, c->zps, c->n_zps);
        memcpy(q->scales, c->scales, c->n_scales * sizeof *c->scales);
        memcpy(q->in_scale, c->in_scale, (size_t)q->k * sizeof *c->in_scale);
        return KN_OK;
    }
    const kn_calib_table_layer *l = find_layer(m->table, q->name);
    if (!l) {
        kn_diag_add(d, KN_ERROR,
                    "--method %s: layer '%s' (weight [%lld, %lld]) is not in the calibration table %s (calibrate "
                    "this model, or keep the layer float with --keep-fp)",
                    algo, q->name, (long long)q->k, (long long)q->n, m->table_path);
        return KN_ERR_INVALID;
    }
    const kn_calib_table_input *in = kn_calib_table_input_find(m->table, l->input);
    if (l->k != q->k || l->n != q->n || !in || in->k != q->k) {
        kn_diag_add(d, KN_ERROR,
                    "--method %s: layer '%s': the model's weight is [K=%lld, N=%lld], the calibration table %s "
                    "records K=%u, N=%u (input '%s', K=%u): a table of another model?",
                    algo, q->name, (long long)q->k, (long long)q->n, m->table_path, l->k, l->n, l->input,
                    in ? in->k : 0);
        return KN_ERR_INVALID;
    }
    if (!in->xtx || in->rows == 0) {
        kn_diag_add(d, KN_ERROR,
                    "--method %s: layer '%s': the calibration table %s has no XᵀX for its input '%s' (K=%u: wider "
                    "than calibration's limit, or no rows seen); keep it float with --keep-fp",
                    algo, q->name, m->table_path, l->input, in->k);
        return KN_ERR_INVALID;
    }
    uint32_t K = (uint32_t)q->k, N = (uint32_t)q->n;
    float *wt = malloc((size_t)K * N * sizeof *wt);
    if (!wt)
        return KN_ERR_NOMEM;
    for (uint32_t k = 0; k < K; k++)
        for (uint32_t n = 0; n < N; n++)
            wt[(size_t)n * K + k] = q->w[(size_t)k * N + n];
    kn_qscheme sch = {(uint32_t)q->bits, (uint32_t)q->group, false};
    kn_qweights qw, rtn;
    memset(&qw, 0, sizeof qw);
    memset(&rtn, 0, sizeof rtn);
    double alpha = 0;
    kn_status s = m->algo == KN_QALGO_GPTQ
                      ? kn_wq_gptq(wt, N, K, in->xtx, &sch, &m->gptq, NULL, d, &qw)
                      : kn_wq_awq(wt, N, K, in->mean_abs, in->xtx, &sch, NULL, NULL, d, &qw, &alpha, NULL);
    if (s != KN_OK)
        kn_diag_add(d, KN_NOTE, "--method %s: while quantizing layer '%s'", algo, q->name);
    if (s == KN_OK) {
        if (qw.group_size < q->group) /* K shorter than the block: one padded block per row */
            qw.group_size = (uint32_t)q->group;
        s = kn_qweights_pack_nbits(&qw, q->codes, q->scales, q->zero_points, d);
    }
    if (s == KN_OK && qw.in_scale)
        memcpy(q->in_scale, qw.in_scale, (size_t)K * sizeof *q->in_scale);
    if (s == KN_OK && kn_wq_rtn(wt, N, K, &sch, NULL, d, &rtn) == KN_OK) {
        m->err_q += kn_wq_layer_error(wt, qw.deq, N, K, in->xtx);
        m->err_rtn += kn_wq_layer_error(wt, rtn.deq, N, K, in->xtx);
    }
    if (s == KN_OK) {
        m->n_done++;
        cache_add(m, q);
    }
    kn_qweights_free(&qw);
    kn_qweights_free(&rtn);
    free(wt);
    return s;
}

kn_status kn_qmethod_act(void *ctx, const char *node, const char *input, int64_t k, int64_t n, double *amax,
                         kn_diag *d)
{
    kn_qmethod *m = ctx;
    const kn_calib_table_layer *l = find_layer(m->table, node);
    if (l && (l->k != k || l->n != n)) {
        kn_diag_add(d, KN_ERROR,
                    "--quantize int8: layer '%s': the model's weight is [K=%lld, N=%lld], the calibration table %s "
                    "records K=%u, N=%u: a table of another model?",
                    node, (long long)k, (long long)n, m->table_path, l->k, l->n);
        return KN_ERR_INVALID;
    }
    const kn_calib_table_tensor *t = kn_calib_table_tensor_find(m->table, l ? l->input : input);
    if (!t && l)
        t = kn_calib_table_tensor_find(m->table, input);
    if (!t) {
        kn_diag_add(d, KN_ERROR,
                    "--quantize int8: layer '%s': the calibration table %s has no range for its input '%s' "
                    "(calibrate this model, or keep the layer float with --keep-fp)",
                    node, m->table_path, l ? l->input : input);
        return KN_ERR_INVALID;
    }
    *amax = t->amax;
    m->n_done++;
    return KN_OK;
}

kn_status kn_qmethod_absmax(void *ctx, const char *node, const char *input, int64_t k, const double **absmax,
                            kn_diag *d)
{
    kn_qmethod *m = ctx;
    const kn_calib_table_layer *l = find_layer(m->table, node);
    const kn_calib_table_input *in = kn_calib_table_input_find(m->table, l ? l->input : input);
    if (!in) {
        kn_diag_add(d, KN_ERROR,
                    "--smooth: layer '%s': the calibration table %s has no statistics for its input '%s' (calibrate "
                    "this model, or keep the layer float with --keep-fp)",
                    node, m->table_path, l ? l->input : input);
        return KN_ERR_INVALID;
    }
    if (in->k != k) {
        kn_diag_add(d, KN_ERROR,
                    "--smooth: layer '%s': its input is %lld wide, the calibration table %s records K=%u for '%s': a "
                    "table of another model?",
                    node, (long long)k, m->table_path, in->k, in->name);
        return KN_ERR_INVALID;
    }
    if (!in->max_abs) {
        kn_diag_add(d, KN_ERROR,
                    "--smooth: the calibration table %s has no per-channel max |x| (written by an older kiln "
                    "calibrate): calibrate again",
                    m->table_path);
        return KN_ERR_INVALID;
    }
    *absmax = in->max_abs;
    return KN_OK;
}
