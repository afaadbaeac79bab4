/* The quantization report: float vs quantized graph on the CPU backend
 * over the evaluation samples (see quant_eval.h). Per quantized layer
 * (every MatMulNBits / MatMulIntegerToFloat of the quantized graph) the
 * value it writes is compared with the float graph's value of the same
 * name, caught by the executor's observer; per graph output the end-to-end
 * error; for text windows the perplexity of the "logits" output. */
#include "quant_eval.h"
#include "json.h"
#include "quant_metrics.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"
#include "samples.h"
#include "tensor_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct qlayer {
    kn_id fv, qv;        /* the value in the float and the quantized graph */
    const char *value;   /* its name */
    const char *op;      /* the quantized op */
    float *ref;          /* the float graph's value for the current sample */
    int64_t ref_n;
    uint64_t mismatched; /* samples where the element counts differed */
    kn_err_acc acc;
} qlayer;

typedef struct qeval {
    const kn_graph *fg, *qg;
    const kn_qeval_opts *o;
    qlayer *layers;
    uint32_t n_layers;
    int32_t *f_map, *q_map; /* value id → layer index or -1 */
    kn_err_acc *outs;
    int logits;             /* the output index used for perplexity, -1: none */
    double nll_f, nll_q;
    uint64_t n_tokens, n_windows;
    size_t n_samples;
    kn_status failed;
    struct timespec t0;
    bool tty;
} qeval;

static void observe_float(void *ctx, const kn_graph *g, kn_id v, const kn_rt_tensor *t)
{
    qeval *e = ctx;
    if (g != e->fg || e->f_map[v] < 0 || e->failed != KN_OK || !kn_dt_is_float(t->dtype))
        return;
    qlayer *l = &e->layers[e->f_map[v]];
    free(l->ref);
    l->ref = malloc((size_t)(t->numel ? t->numel : 1) * sizeof *l->ref);
    l->ref_n = t->numel;
    if (!l->ref) {
        e->failed = KN_ERR_NOMEM;
        return;
    }
    for (int64_t i = 0; i < t->numel; i++)
        l->ref[i] = (float)kn_get_f64(t->dtype, t->data, i);
}

static void observe_quant(void *ctx, const kn_graph *g, kn_id v, const kn_rt_tensor *t)
{
    qeval *e = ctx;
    if (g != e->qg || e->q_map[v] < 0 || !kn_dt_is_float(t->dtype))
        return;
    qlayer *l = &e->layers[e->q_map[v]];
    if (!l->ref || l->ref_n != t->numel) {
        l->mismatched++;
        return;
    }
    for (int64_t i = 0; i < t->numel; i++)
        kn_err_add(&l->acc, l->ref[i], kn_get_f64(t->dtype, t->data, i));
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) * 1e-9;
}

/* NLL of one window from a [1, n, V] (or [n, V]) float output. */
static kn_status window_nll(const kn_rt_tensor *t, const int32_t *ids, size_t n, double *nll, kn_diag *d)
{
    if (!kn_dt_is_float(t->dtype) || t->rank < 2 || t->dims[t->rank - 2] != (int64_t)n ||
        t->numel != (int64_t)n * t->dims[t->rank - 1]) {
        kn_diag_add(d, KN_ERROR, "compile: --eval-text: the logits output is not [1, %zu, vocab] float", n);
        return KN_ERR_INVALID;
    }
    size_t V = (size_t)t->dims[t->rank - 1];
    float *tmp = NULL;
    const float *lg = t->data;
    if (t->dtype != KN_F32) {
        tmp = malloc((size_t)t->numel * sizeof *tmp);
        if (!tmp)
            return KN_ERR_NOMEM;
        for (int64_t i = 0; i < t->numel; i++)
            tmp[i] = (float)kn_get_f64(t->dtype, t->data, i);
        lg = tmp;
    }
    *nll = kn_nll_window(lg, V, ids, n);
    free(tmp);
    if (*nll < 0) {
        kn_diag_add(d, KN_ERROR, "compile: --eval-text: a token id is outside the model's vocabulary of %zu: "
                                 "a tokenizer of another model?", V);
        return KN_ERR_INVALID;
    }
    return KN_OK;
}

static kn_status run_sample(void *ctx, const kn_rt_tensor *const *ins, const char *origin, const int32_t *ids,
                            size_t n_ids, kn_diag *d)
{
    qeval *e = ctx;
    uint32_t no = e->fg->n_outputs;
    kn_rt_tensor **fo = calloc(no + 1, sizeof *fo), **qo = calloc(no + 1, sizeof *qo);
    kn_status s = fo && qo ? KN_OK : KN_ERR_NOMEM;
    if (s == KN_OK)
        s = kn_cpu_run_observed(e->fg, NULL, d, ins, e->fg->n_inputs, fo, no, observe_float, e);
    if (s == KN_OK && e->failed != KN_OK)
        s = e->failed;
    if (s == KN_OK)
        s = kn_cpu_run_observed(e->qg, NULL, d, ins, e->qg->n_inputs, qo, no, observe_quant, e);
    for (uint32_t i = 0; s == KN_OK && i < no; i++) {
        if (!fo[i] || !qo[i] || !kn_dt_is_float(fo[i]->dtype) || !kn_dt_is_float(qo[i]->dtype) ||
            fo[i]->numel != qo[i]->numel)
            continue;
        for (int64_t k = 0; k < fo[i]->numel; k++)
            kn_err_add(&e->outs[i], kn_get_f64(fo[i]->dtype, fo[i]->data, k),
                       kn_get_f64(qo[i]->dtype, qo[i]->data, k));
    }
    if (s == KN_OK && ids && e->logits >= 0) {
        double a = 0, b = 0;
        s = window_nll(fo[e->logits], ids, n_ids, &a, d);
        if (s == KN_OK)
            s = window_nll(qo[e->logits], ids, n_ids, &b, d);
        if (s == KN_OK) {
            e->nll_f += a;
            e->nll_q += b;
            e->n_tokens += n_ids - 1;
            e->n_windows++;
        }
    }
    if (s != KN_OK)
        kn_diag_add(d, KN_NOTE, "compile: --eval: while running the sample from %s", origin);
    for (uint32_t i = 0; i < no; i++) {
        if (fo)
            kn_rt_tensor_free(NULL, fo[i]);
        if (qo)
            kn_rt_tensor_free(NULL, qo[i]);
    }
    free(fo);
    free(qo);
    for (uint32_t i = 0; i < e->n_layers; i++) {
        free(e->layers[i].ref);
        e->layers[i].ref = NULL;
    }
    e->n_samples++;
    if (!e->o->quiet && e->tty) {
        fprintf(stderr, "\reval: %zu samples, %.1f s", e->n_samples, seconds_since(&e->t0));
        fflush(stderr);
    }
    return s;
}

static kn_id find_value(const kn_graph *g, const char *name)
{
    for (kn_id v = 0; name && v < g->n_values; v++)
        if (g->values[v].name && strcmp(g->values[v].name, name) == 0)
            return v;
    return KN_NONE;
}

static kn_status setup(qeval *e)
{
    const kn_graph *fg = e->fg, *qg = e->qg;
    e->f_map = malloc(((size_t)fg->n_values + 1) * sizeof *e->f_map);
    e->q_map = malloc(((size_t)qg->n_values + 1) * sizeof *e->q_map);
    e->layers = calloc((size_t)qg->n_nodes + 1, sizeof *e->layers);
    e->outs = calloc((size_t)fg->n_outputs + 1, sizeof *e->outs);
    if (!e->f_map || !e->q_map || !e->layers || !e->outs)
        return KN_ERR_NOMEM;
    memset(e->f_map, 0xff, ((size_t)fg->n_values + 1) * sizeof *e->f_map);
    memset(e->q_map, 0xff, ((size_t)qg->n_values + 1) * sizeof *e->q_map);
    for (kn_id k = 0; k < qg->n_nodes; k++) {
        const kn_node *n = &qg->nodes[k];
        if ((n->op != KN_OP_MS_MatMulNBits && n->op != KN_OP_MS_MatMulIntegerToFloat) || n->n_outputs < 1)
            continue;
        kn_id qv = n->outputs[0], fv = find_value(fg, qg->values[qv].name);
        const char *qn = qg->values[qv].name, *sfx = "/matmul_int8";
        size_t ln = qn ? strlen(qn) : 0, ls = strlen(sfx);
        if (fv == KN_NONE && ln > ls && strcmp(qn + ln - ls, sfx) == 0) {
            /* W8A8 with dynamic scales: the layer's output is the row-scale
             * Mul (or the bias Add) after it, named as the float layer's
             * (when no later fusion took it in) */
            char base[1024];
            snprintf(base, sizeof base, "%.*s", (int)(ln - ls), qn);
            kn_id qy = find_value(qg, base);
            if (qy != KN_NONE && qg->values[qy].kind == KN_VAL_NODE) {
                qv = qy;
                fv = find_value(fg, base);
            }
        }
        if (fv == KN_NONE || e->f_map[fv] >= 0 || e->q_map[qv] >= 0)
            continue;
        qlayer *l = &e->layers[e->n_layers];
        l->fv = fv;
        l->qv = qv;
        l->value = qg->values[qv].name;
        l->op = n->op_type;
        e->f_map[fv] = (int32_t)e->n_layers;
        e->q_map[qv] = (int32_t)e->n_layers++;
    }
    e->logits = -1;
    for (uint32_t i = 0; i < fg->n_outputs && e->logits < 0; i++)
        if (strcmp(fg->values[fg->outputs[i]].name, "logits") == 0)
            e->logits = (int)i;
    if (e->logits < 0 && fg->n_outputs)
        e->logits = 0;
    return KN_OK;
}

static void fmt_num(char *buf, size_t cap, double v, const char *f)
{
    if (isnan(v))
        snprintf(buf, cap, "nan");
    else if (isinf(v))
        snprintf(buf, cap, "%sinf", v < 0 ? "-" : "");
    else
        snprintf(buf, cap, f, v);
}

static void print_report(const qeval *e, double ppl_f, double ppl_q)
{
    char a[32], b[32], c[32];
    printf("quantization report: %s, %zu samples\n", e->o->quantize, e->n_samples);
    printf("%-60s %-20s %12s %9s\n", "layer output", "op", "NMSE", "SNR dB");
    for (uint32_t i = 0; i < e->n_layers; i++) {
        const qlayer *l = &e->layers[i];
        fmt_num(a, sizeof a, kn_err_nmse(&l->acc), "%.3e");
        fmt_num(b, sizeof b, kn_err_snr_db(&l->acc), "%.2f");
        printf("%-60s %-20s %12s %9s%s\n", l->value, l->op, a, b, l->mismatched ? " (shapes differ)" : "");
    }
    printf("%-60s %12s %12s %9s\n", "graph output", "max |err|", "NMSE", "SNR dB");
    for (uint32_t i = 0; i < e->fg->n_outputs; i++) {
        const kn_err_acc *o = &e->outs[i];
        if (!o->n && !o->nonfinite)
            continue;
        fmt_num(a, sizeof a, o->max_abs, "%.4g");
        fmt_num(b, sizeof b, kn_err_nmse(o), "%.3e");
        fmt_num(c, sizeof c, kn_err_snr_db(o), "%.2f");
        printf("%-60s %12s %12s %9s\n", e->fg->values[e->fg->outputs[i]].name, a, b, c);
    }
    if (e->n_windows)
        printf("perplexity over %llu tokens (%llu windows): float %.4f, quantized %.4f (%+.2f %%)\n",
               (unsigned long long)e->n_tokens, (unsigned long long)e->n_windows, ppl_f, ppl_q,
               (ppl_q / ppl_f - 1) * 100);
}

static kn_status write_report(const qeval *e, double ppl_f, double ppl_q, bool failed, const char *why, kn_diag *d)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return KN_ERR_NOMEM;
    kn_json j;
    kn_json_init(&j, f);
    kn_json_obj_begin(&j);
    kn_json_key(&j, "format");
    kn_json_str(&j, "kiln-quant-report");
    kn_json_key(&j, "version");
    kn_json_int(&j, 1);
    kn_json_key(&j, "model");
    const char *slash = strrchr(e->o->model, '/');
    kn_json_str(&j, slash ? slash + 1 : e->o->model);
    kn_json_key(&j, "quantize");
    kn_json_str(&j, e->o->quantize);
    kn_json_key(&j, "samples");
    kn_json_uint(&j, e->n_samples);
    kn_json_key(&j, "layers");
    kn_json_arr_begin(&j);
    for (uint32_t i = 0; i < e->n_layers; i++) {
        const qlayer *l = &e->layers[i];
        kn_json_obj_begin(&j);
        kn_json_key(&j, "value");
        kn_json_str(&j, l->value);
        kn_json_key(&j, "op");
        kn_json_str(&j, l->op);
        kn_json_key(&j, "nmse");
        kn_json_num(&j, kn_err_nmse(&l->acc));
        kn_json_key(&j, "snr_db");
        kn_json_num(&j, kn_err_snr_db(&l->acc));
        kn_json_key(&j, "max_abs");
        kn_json_num(&j, l->acc.max_abs);
        kn_json_obj_end(&j);
    }
    kn_json_arr_end(&j);
    kn_json_key(&j, "outputs");
    kn_json_arr_begin(&j);
    for (uint32_t i = 0; i < e->fg->n_outputs; i++) {
        const kn_err_acc *o = &e->outs[i];
        if (!o->n && !o->nonfinite)
            continue;
        kn_json_obj_begin(&j);
        kn_json_key(&j, "name");
        kn_json_str(&j, e->fg->values[e->fg->outputs[i]].name);
        kn_json_key(&j, "nmse");
        kn_json_num(&j, kn_err_nmse(o));
        kn_json_key(&j, "snr_db");
        kn_json_num(&j, kn_err_snr_db(o));
        kn_json_key(&j, "max_abs");
        kn_json_num(&j, o->max_abs);
        kn_json_obj_end(&j);
    }
    kn_json_arr_end(&j);
    kn_json_key(&j, "perplexity");
    if (e->n_windows) {
        kn_json_obj_begin(&j);
        kn_json_key(&j, "tokens");
        kn_json_uint(&j, e->n_tokens);
        kn_json_key(&j, "windows");
        kn_json_uint(&j, e->n_windows);
        kn_json_key(&j, "window");
        kn_json_int(&j, e->o->window);
        kn_json_key(&j, "float");
        kn_json_num(&j, ppl_f);
        kn_json_key(&j, "quantized");
        kn_json_num(&j, ppl_q);
        kn_json_key(&j, "increase_pct");
        kn_json_num(&j, (ppl_q / ppl_f - 1) * 100);
        kn_json_obj_end(&j);
    } else {
        kn_json_null(&j);
    }
    kn_json_key(&j, "gates");
    kn_json_obj_begin(&j);
    kn_json_key(&j, "max_nmse");
    if (e->o->max_nmse >= 0)
        kn_json_num(&j, e->o->max_nmse);
    else
        kn_json_null(&j);
    kn_json_key(&j, "max_ppl_increase_pct");
    if (e->o->max_ppl_increase >= 0)
        kn_json_num(&j, e->o->max_ppl_increase);
    else
        kn_json_null(&j);
    kn_json_key(&j, "passed");
    kn_json_bool(&j, !failed);
    kn_json_key(&j, "failure");
    if (failed)
        kn_json_str(&j, why);
    else
        kn_json_null(&j);
    kn_json_obj_end(&j);
    kn_json_obj_end(&j);
    kn_json_finish(&j);
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return KN_ERR_NOMEM;
    }
    kn_status s = kn_write_file_atomic(e->o->report, buf, len, d);
    free(buf);
    return s;
}

/* The gates; *why receives the failing numbers. */
static bool check_gates(const qeval *e, double ppl_f, double ppl_q, char *why, size_t cap)
{
    size_t n = 0;
    why[0] = 0;
    if (e->o->max_nmse >= 0)
        for (uint32_t i = 0; i < e->fg->n_outputs && n < cap - 200; i++) {
            const kn_err_acc *o = &e->outs[i];
            double v = kn_err_nmse(o);
            if ((o->n || o->nonfinite) && !(v <= e->o->max_nmse))
                n += (size_t)snprintf(why + n, cap - n, "%soutput '%s': NMSE %.4g > --max-nmse %.4g", n ? "; " : "",
                                      e->fg->values[e->fg->outputs[i]].name, v, e->o->max_nmse);
        }
    if (e->o->max_ppl_increase >= 0 && n < cap - 200) {
        double inc = (ppl_q / ppl_f - 1) * 100;
        if (!(inc <= e->o->max_ppl_increase))
            n += (size_t)snprintf(why + n, cap - n,
                                  "%sperplexity %.4f -> %.4f: +%.3f %% > --max-ppl-increase %.3g %%", n ? "; " : "",
                                  ppl_f, ppl_q, inc, e->o->max_ppl_increase);
    }
    return n > 0;
}

kn_status kn_quant_eval(const kn_graph *fg, const kn_graph *qg, const kn_qeval_opts *o, kn_diag *d,
                        bool *gate_failed)
{
    *gate_failed = false;
    qeval e;
    memset(&e, 0, sizeof e);
    e.fg = fg;
    e.qg = qg;
    e.o = o;
    e.tty = isatty(fileno(stderr)) != 0;
    clock_gettime(CLOCK_MONOTONIC, &e.t0);
    kn_sample_set set;
    memset(&set, 0, sizeof set);
    kn_status s = fg->n_outputs == qg->n_outputs && fg->n_inputs == qg->n_inputs ? KN_OK : KN_ERR_INTERNAL;
    if (s == KN_OK)
        s = o->text ? kn_samples_text("compile", o->model, o->text, o->tokenizer, o->window, d, &set)
                    : kn_samples_folders("compile", "--eval", o->data, d, &set);
    if (s == KN_OK)
        s = setup(&e);
    if (s == KN_OK)
        s = kn_samples_foreach(fg, &set, o->max_samples, run_sample, &e, d);
    if (!o->quiet && e.n_samples)
        fprintf(stderr, "%seval: %zu samples, %.1f s (float and quantized model)\n", e.tty ? "\r" : "", e.n_samples,
                seconds_since(&e.t0));
    if (s == KN_OK && e.n_samples == 0) {
        kn_diag_add(d, KN_ERROR, "compile: %s %s holds no samples", o->text ? "--eval-text" : "--eval",
                    o->text ? o->text : o->data);
        s = KN_ERR_INVALID;
    }
    if (s == KN_OK && o->max_ppl_increase >= 0 && !e.n_windows) {
        kn_diag_add(d, KN_ERROR, "compile: --max-ppl-increase needs --eval-text");
        s = KN_ERR_INVALID;
    }
    double ppl_f = kn_perplexity(e.nll_f, e.n_tokens), ppl_q = kn_perplexity(e.nll_q, e.n_tokens);
    char why[2048];
    if (s == KN_OK) {
        *gate_failed = check_gates(&e, ppl_f, ppl_q, why, sizeof why);
        print_report(&e, ppl_f, ppl_q);
        fflush(stdout);
        if (o->report)
            s = write_report(&e, ppl_f, ppl_q, *gate_failed, why, d);
        if (*gate_failed)
            kn_diag_add(d, KN_ERROR, "compile: quality gate failed: %s", why);
    }
    for (uint32_t i = 0; e.layers && i < e.n_layers; i++)
        free(e.layers[i].ref);
    free(e.layers);
    free(e.f_map);
    free(e.q_map);
    free(e.outs);
    kn_samples_free(&set);
    return s;
}
