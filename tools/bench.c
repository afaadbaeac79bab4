/* kiln bench: runs a plan repeatedly on random inputs and reports its
 * latency (mean, median, p99, min, max), throughput and, on CUDA, the
 * device time of the steps from events — what trtexec reports for an
 * engine. A benchmark prints numbers; it asserts nothing. */
#include "backend.h"
#include "cli.h"
#include "inputs.h"
#include "json.h"
#include "kiln/runtime.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: kiln bench MODEL.plan [options]\n"
    "\n"
    "Runs a plan repeatedly on random inputs and reports its latency and\n"
    "throughput (and on CUDA the GPU time of its steps, from events).\n"
    "\n"
    "options:\n"
    "  --device D          auto (default), cpu or cuda\n"
    "  --warmup N          untimed runs first (default 3)\n"
    "  --iterations N      timed runs (default 10)\n"
    "  --duration S        time runs for S seconds instead (at least one run)\n"
    "  --shape NAME=DIMS   shape for a random input, e.g. x=1x3x224x224\n"
    "                      (symbolic dims default to 1)\n"
    "  --seed N            seed for the random inputs (default 0)\n"
    "  --profile           CUDA: also time every step and list the slowest\n"
    "  --json              print the results as JSON\n"
    "  -h, --help\n"
    "\n"
    "Latency is host wall time per run: inputs in, steps, outputs out.\n"
    "Language models: kiln bench MODEL.plan --prompt-len P --gen-len G [--batch B]\n"
    "(kiln bench --prompt-len 1 --help lists its options).\n"
    "Exit codes: 0 ok, 1 bad input or usage, 2 internal error.\n";

typedef struct stats {
    double min, max, mean, median, p99;
} stats;

typedef struct series {
    double *v;
    size_t n, cap;
} series;

static bool series_add(series *s, double x)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        double *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv)
            return false;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = x;
    return true;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts the series in place. p99 is the nearest-rank percentile. */
static stats summarize(series *s)
{
    stats st = {0, 0, 0, 0, 0};
    if (!s->n)
        return st;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i];
    st.min = s->v[0];
    st.max = s->v[s->n - 1];
    st.mean = sum / (double)s->n;
    st.median = s->n % 2 ? s->v[s->n / 2] : (s->v[s->n / 2 - 1] + s->v[s->n / 2]) / 2;
    size_t rank = (size_t)ceil(0.99 * (double)s->n);
    st.p99 = s->v[rank ? rank - 1 : 0];
    return st;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A whole number in [min, max]; false (with a message) otherwise. */
static bool parse_count(const char *opt, const char *arg, long long min, long long max, long long *out)
{
    char *e;
    long long x = strtoll(arg, &e, 10);
    if (e == arg || *e || x < min || x > max) {
        fprintf(stderr, "error: bench: %s expects a whole number from %lld to %lld, got '%s'\n", opt, min, max, arg);
        return false;
    }
    *out = x;
    return true;
}

static void text_stats(const char *what, const stats *s)
{
    printf("%-18s min %.4f  max %.4f  mean %.4f  median %.4f  p99 %.4f\n", what, s->min, s->max, s->mean, s->median,
           s->p99);
}

static void json_stats(kn_json *j, const char *key, const stats *s, bool present)
{
    kn_json_key(j, key);
    if (!present) {
        kn_json_null(j);
        return;
    }
    kn_json_obj_begin(j);
    kn_json_key(j, "min");
    kn_json_num(j, s->min);
    kn_json_key(j, "max");
    kn_json_num(j, s->max);
    kn_json_key(j, "mean");
    kn_json_num(j, s->mean);
    kn_json_key(j, "median");
    kn_json_num(j, s->median);
    kn_json_key(j, "p99");
    kn_json_num(j, s->p99);
    kn_json_obj_end(j);
}

typedef struct bench_opts {
    const char *plan, *device;
    long long warmup, iterations;
    double duration; /* seconds; 0: use iterations */
    uint64_t seed;
    bool json, profile;
    kn_cli_kv *shapes;
    int n_shapes;
} bench_opts;

typedef struct results {
    series lat, gpu, up, down;
    double total_s;
    double *step_sum; /* per step, ms summed over the timed runs (--profile) */
    const uint32_t *step_node;
    uint32_t n_steps;
} results;

/* The warm-up and timed runs. */
static kn_status measure(const bench_opts *o, kn_cli_backend *be, kn_rt_tensor **ins, kn_diag *d, results *r)
{
    const kn_graph *g = be->g;
    kn_rt_tensor **outs = calloc(g->n_outputs + 1, sizeof *outs);
    if (!outs)
        return KN_ERR_NOMEM;
    kn_status s = KN_OK;
    for (long long i = 0; i < o->warmup && s == KN_OK; i++) {
        s = kn_cli_backend_run(be, (const kn_rt_tensor *const *)ins, outs, d);
        for (uint32_t k = 0; k < g->n_outputs; k++) {
            kn_rt_tensor_free(NULL, outs[k]);
            outs[k] = NULL;
        }
    }
    double start = now_s();
    for (long long i = 0; s == KN_OK; i++) {
        if (o->duration > 0 ? i > 0 && now_s() - start >= o->duration : i >= o->iterations)
            break;
        double t0 = now_s();
        s = kn_cli_backend_run(be, (const kn_rt_tensor *const *)ins, outs, d);
        double t1 = now_s();
        for (uint32_t k = 0; k < g->n_outputs; k++) {
            kn_rt_tensor_free(NULL, outs[k]);
            outs[k] = NULL;
        }
        if (s != KN_OK)
            break;
        if (!series_add(&r->lat, (t1 - t0) * 1e3))
            s = KN_ERR_NOMEM;
        kn_cuda_timing t;
        if (be->cuda && s == KN_OK && kn_cuda_session_timing(be->cuda, &t) == KN_OK &&
            (!series_add(&r->gpu, t.compute_ms) || !series_add(&r->up, t.upload_ms) ||
             !series_add(&r->down, t.download_ms)))
            s = KN_ERR_NOMEM;
        const float *ms;
        uint32_t n;
        if (be->cuda && o->profile && s == KN_OK &&
            kn_cuda_session_step_ms(be->cuda, &ms, &r->step_node, &n) == KN_OK) {
            if (!r->step_sum) {
                r->step_sum = calloc((size_t)n + 1, sizeof *r->step_sum);
                r->n_steps = n;
                if (!r->step_sum)
                    s = KN_ERR_NOMEM;
            }
            for (uint32_t k = 0; r->step_sum && k < n && k < r->n_steps; k++)
                r->step_sum[k] += ms[k];
        }
    }
    r->total_s = now_s() - start;
    free(outs);
    if (s == KN_ERR_NOMEM)
        kn_diag_add(d, KN_ERROR, "bench: out of memory");
    return s;
}

static void step_label(const kn_graph *g, uint32_t node, uint32_t step, char *buf, size_t n)
{
    if (node < g->n_nodes)
        snprintf(buf, n, "%s (%s)", g->nodes[node].name ? g->nodes[node].name : "", g->nodes[node].op_type);
    else
        snprintf(buf, n, "step %u", step);
}

/* Up to 10 steps by time, largest first, into order[]; returns how many. */
static uint32_t slowest(const results *r, uint32_t *order)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < r->n_steps; k++) {
        uint32_t at = n < 10 ? n++ : 10;
        while (at > 0 && r->step_sum[order[at - 1]] < r->step_sum[k]) {
            if (at < 10)
                order[at] = order[at - 1];
            at--;
        }
        if (at < 10)
            order[at] = k;
    }
    return n;
}

static void report(const bench_opts *o, const kn_cli_backend *be, kn_rt_tensor **ins, results *r)
{
    const kn_graph *g = be->g;
    size_t n = r->lat.n;
    stats lat = summarize(&r->lat), gpu = summarize(&r->gpu), up = summarize(&r->up), down = summarize(&r->down);
    double thr = r->total_s > 0 ? (double)n / r->total_s : 0;
    bool has_gpu = r->gpu.n > 0;
    uint32_t order[10], n_slow = r->step_sum ? slowest(r, order) : 0;
    if (o->json) {
        kn_json j;
        kn_json_init(&j, stdout);
        kn_json_obj_begin(&j);
        kn_json_key(&j, "plan");
        kn_json_str(&j, o->plan);
        kn_json_key(&j, "device");
        kn_json_str(&j, be->cuda ? "cuda" : "cpu");
        kn_json_key(&j, "backend");
        kn_json_str(&j, be->name);
        kn_json_key(&j, "inputs");
        kn_json_arr_begin(&j);
        for (uint32_t k = 0; k < g->n_inputs; k++) {
            kn_json_obj_begin(&j);
            kn_json_key(&j, "name");
            kn_json_str(&j, g->values[g->inputs[k]].name);
            kn_json_key(&j, "dtype");
            kn_json_str(&j, kn_dtype_name(ins[k]->dtype));
            kn_json_key(&j, "shape");
            kn_json_arr_begin(&j);
            for (int32_t i = 0; i < ins[k]->rank; i++)
                kn_json_int(&j, ins[k]->dims[i]);
            kn_json_arr_end(&j);
            kn_json_obj_end(&j);
        }
        kn_json_arr_end(&j);
        kn_json_key(&j, "warmup");
        kn_json_int(&j, o->warmup);
        kn_json_key(&j, "iterations");
        kn_json_uint(&j, n);
        kn_json_key(&j, "total_s");
        kn_json_num(&j, r->total_s);
        json_stats(&j, "latency_ms", &lat, true);
        kn_json_key(&j, "throughput_per_s");
        kn_json_num(&j, thr);
        json_stats(&j, "gpu_compute_ms", &gpu, has_gpu);
        json_stats(&j, "gpu_upload_ms", &up, has_gpu);
        json_stats(&j, "gpu_download_ms", &down, has_gpu);
        if (r->step_sum) {
            kn_json_key(&j, "slowest_steps");
            kn_json_arr_begin(&j);
            for (uint32_t i = 0; i < n_slow; i++) {
                char label[512];
                step_label(g, r->step_node[order[i]], order[i], label, sizeof label);
                kn_json_obj_begin(&j);
                kn_json_key(&j, "step");
                kn_json_uint(&j, order[i]);
                kn_json_key(&j, "node");
                kn_json_str(&j, label);
                kn_json_key(&j, "mean_ms");
                kn_json_num(&j, n ? r->step_sum[order[i]] / (double)n : 0);
                kn_json_obj_end(&j);
            }
            kn_json_arr_end(&j);
        }
        kn_json_obj_end(&j);
        kn_json_finish(&j);
        return;
    }
    printf("plan:              %s\n", o->plan);
    printf("backend:           %s\n", be->name);
    for (uint32_t k = 0; k < g->n_inputs; k++) {
        printf("%-18s %s: %s[", k ? "" : "inputs:", g->values[g->inputs[k]].name, kn_dtype_name(ins[k]->dtype));
        for (int32_t i = 0; i < ins[k]->rank; i++)
            printf("%s%" PRId64, i ? ", " : "", ins[k]->dims[i]);
        printf("]\n");
    }
    printf("warm-up:           %lld runs\n", o->warmup);
    printf("timed:             %zu runs in %.4g s\n", n, r->total_s);
    text_stats("latency (ms):", &lat);
    printf("throughput:        %.2f inferences/s\n", thr);
    if (has_gpu) {
        text_stats("gpu compute (ms):", &gpu);
        printf("gpu copies (ms):   inputs in %.4f, outputs out %.4f (mean)\n", up.mean, down.mean);
    }
    if (n_slow) {
        printf("slowest steps (mean ms):\n");
        for (uint32_t i = 0; i < n_slow; i++) {
            char label[512];
            step_label(g, r->step_node[order[i]], order[i], label, sizeof label);
            printf("  %10.4f  %s\n", n ? r->step_sum[order[i]] / (double)n : 0, label);
        }
    }
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    bool has_iter = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        long long x;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return KN_EXIT_OK;
        } else if (strcmp(a, "--device") == 0 && has) {
            o->device = argv[++i];
        } else if (strcmp(a, "--warmup") == 0 && has) {
            if (!parse_count(a, argv[++i], 0, 1000000000, &o->warmup))
                return KN_EXIT_BAD_INPUT;
        } else if (strcmp(a, "--iterations") == 0 && has) {
            if (!parse_count(a, argv[++i], 1, 1000000000, &o->iterations))
                return KN_EXIT_BAD_INPUT;
            has_iter = true;
        } else if (strcmp(a, "--duration") == 0 && has) {
            char *e;
            const char *v = argv[++i];
            o->duration = strtod(v, &e);
            if (e == v || *e || !(o->duration > 0) || o->duration > 1e6) {
                fprintf(stderr, "error: bench: --duration expects seconds (> 0), got '%s'\n", v);
                return KN_EXIT_BAD_INPUT;
            }
        } else if (strcmp(a, "--shape") == 0 && has) {
            if (kn_cli_parse_kv("bench", a, argv[++i], &o->shapes[o->n_shapes++]))
                return KN_EXIT_BAD_INPUT;
        } else if (strcmp(a, "--seed") == 0 && has) {
            if (!parse_count(a, argv[++i], 0, INT64_MAX, &x))
                return KN_EXIT_BAD_INPUT;
            o->seed = (uint64_t)x;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--profile") == 0) {
            o->profile = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: bench: unknown or incomplete option '%s'\n\n%s", a, usage);
            return KN_EXIT_BAD_INPUT;
        } else if (o->plan) {
            fprintf(stderr, "error: bench: more than one plan given\n\n%s", usage);
            return KN_EXIT_BAD_INPUT;
        } else {
            o->plan = a;
        }
    }
    if (!o->plan) {
        fprintf(stderr, "error: bench: no plan given\n\n%s", usage);
        return KN_EXIT_BAD_INPUT;
    }
    if (has_iter && o->duration > 0) {
        fprintf(stderr, "error: bench: give --iterations or --duration, not both\n");
        return KN_EXIT_BAD_INPUT;
    }
    if (!kn_cli_device_valid(o->device)) {
        fprintf(stderr, "error: bench: --device must be auto, cpu or cuda\n");
        return KN_EXIT_BAD_INPUT;
    }
    return -1;
}

int kn_cmd_bench(int argc, char **argv)
{
    if (kn_bench_is_llm(argc, argv))
        return kn_bench_llm(argc, argv);
    bench_opts o = {NULL, "auto", 3, 10, 0, 0, false, false, NULL, 0};
    o.shapes = calloc((size_t)argc + 1, sizeof *o.shapes);
    if (!o.shapes)
        return KN_EXIT_INTERNAL;
    int rc = parse_args(argc, argv, &o);
    if (rc != -1) {
        kn_cli_free_kvs(o.shapes, o.n_shapes);
        free(o.shapes);
        return rc;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    kn_rt_tensor **ins = NULL;
    kn_cli_backend be = {0};
    results r;
    memset(&r, 0, sizeof r);
    kn_status s = d ? kn_plan_load(o.plan, NULL, d, &g) : KN_ERR_NOMEM;
    for (int i = 0; s == KN_OK && i < o.n_shapes; i++) {
        bool known = false;
        for (uint32_t k = 0; k < g->n_inputs; k++)
            known |= strcmp(g->values[g->inputs[k]].name, o.shapes[i].name) == 0;
        if (!known) {
            kn_diag_add(d, KN_ERROR, "--shape %s: the plan has no input named '%s'", o.shapes[i].name,
                        o.shapes[i].name);
            s = KN_ERR_INVALID;
        }
    }
    kn_cuda_options co = {0, true, o.profile, false};
    if (s == KN_OK)
        s = kn_cli_backend_open("bench", o.device, g, &co, d, &be);
    if (s == KN_OK && o.profile && !be.cuda)
        kn_diag_add(d, KN_NOTE, "--profile times steps on the CUDA backend only");
    if (s == KN_OK) {
        ins = calloc(g->n_inputs + 1, sizeof *ins);
        if (!ins)
            s = KN_ERR_NOMEM;
    }
    uint64_t seed = o.seed;
    for (uint32_t k = 0; s == KN_OK && k < g->n_inputs; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        s = kn_cli_random_input(v, kn_cli_find_kv(o.shapes, o.n_shapes, v->name), &seed, d, &ins[k]);
    }
    if (s == KN_OK)
        s = measure(&o, &be, ins, d, &r);
    if (s == KN_OK)
        report(&o, &be, ins, &r);
    for (uint32_t k = 0; g && ins && k < g->n_inputs; k++)
        kn_rt_tensor_free(NULL, ins[k]);
    free(ins);
    free(r.lat.v);
    free(r.gpu.v);
    free(r.up.v);
    free(r.down.v);
    free(r.step_sum);
    kn_cli_backend_close(&be);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    kn_cli_free_kvs(o.shapes, o.n_shapes);
    free(o.shapes);
    return s == KN_OK ? KN_EXIT_OK : kn_cli_exit_code(s);
}
