/* kiln calibrate: runs a model on the CPU backend over calibration inputs
 * and writes a calibration table (docs/quantization.md). */
#include "calib_table.h"
#include "cli.h"
#include "passes/passes.h"
#include "runtime/cpu/util.h"
#include "tensor_io.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
    "usage: kiln calibrate MODEL.onnx --data DIR -o CALIB.json [options]\n"
    "\n"
    "Runs the model on the CPU reference backend over calibration inputs and\n"
    "writes a calibration table: per float tensor its range, a histogram of |x|\n"
    "and the threshold the method picks; per MatMul/Gemm with a constant weight\n"
    "the input's per-channel mean |x| (AWQ) and XᵀX (GPTQ, in CALIB.xtx.bin).\n"
    "\n"
    "options:\n"
    "  --data DIR          the calibration inputs: DIR's subfolders in name order\n"
    "                      (backend-test test_data_set_N folders), or DIR itself\n"
    "                      when it has none; in each folder an input comes from\n"
    "                      NAME.npy, NAME.pb or input_K.pb (NAME with characters\n"
    "                      other than A-Z a-z 0-9 . _ - written as _). A file with\n"
    "                      one more leading axis than the input holds a batch of\n"
    "                      samples.\n"
    "  -o, --output FILE   the table to write (JSON)\n"
    "  --method M          minmax, percentile or entropy (default: TensorRT's\n"
    "                      KL-divergence search over the histogram)\n"
    "  --percentile P      for --method percentile (default 99.99)\n"
    "  --bins N            histogram bins (default 2048)\n"
    "  --max-samples N     use at most N samples\n"
    "  -q, --quiet         no progress on stderr\n"
    "  -h, --help\n"
    "\n"
    "Histogram methods run the samples twice: ranges first, then histograms over\n"
    "[0, |x| max]. The files are written atomically; the same inputs give the same\n"
    "bytes. Exit codes: 0 ok, 1 bad input or usage, 2 internal error.\n";

/* Input name → file name (as `kiln run --output-dir` writes them). */
static void safe_name(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    for (; name[n] && n + 1 < cap; n++) {
        char c = name[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        out[n] = ok ? c : '_';
    }
    out[n] = 0;
    if (n == 0)
        snprintf(out, cap, "_");
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct folders {
    char **paths;
    size_t n;
} folders;

static void folders_free(folders *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->paths[i]);
    free(f->paths);
}

/* The sample folders: DIR's subfolders in name order, else DIR. */
static kn_status list_folders(const char *dir, kn_diag *d, folders *out)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        kn_diag_add(d, KN_ERROR, "calibrate: --data %s: %s", dir,
                    stat(dir, &st) != 0 ? strerror(errno) : "not a folder");
        return KN_ERR_IO;
    }
    DIR *dp = opendir(dir);
    if (!dp) {
        kn_diag_add(d, KN_ERROR, "calibrate: --data %s: %s", dir, strerror(errno));
        return KN_ERR_IO;
    }
    size_t cap = 0;
    struct dirent *e;
    kn_status s = KN_OK;
    while ((e = readdir(dp)) && s == KN_OK) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            s = KN_ERR_NOMEM;
            break;
        }
        snprintf(p, n, "%s/%s", dir, e->d_name);
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            free(p);
            continue;
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 16;
            char **np = realloc(out->paths, cap * sizeof *np);
            if (!np) {
                free(p);
                s = KN_ERR_NOMEM;
                break;
            }
            out->paths = np;
        }
        out->paths[out->n++] = p;
    }
    closedir(dp);
    if (s == KN_OK && out->n == 0) {
        out->paths = malloc(sizeof *out->paths);
        if (!out->paths || !(out->paths[0] = strdup(dir)))
            s = KN_ERR_NOMEM;
        else
            out->n = 1;
    }
    if (s != KN_OK) {
        folders_free(out);
        return s;
    }
    qsort(out->paths, out->n, sizeof *out->paths, cmp_str);
    return KN_OK;
}

static void shape_str(const kn_rt_tensor *t, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s[", kn_dtype_name(t->dtype));
    for (int32_t i = 0; i < t->rank && n < (int)cap - 24; i++)
        n += snprintf(buf + n, cap - (size_t)n, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
    snprintf(buf + n, cap - (size_t)n, "]");
}

static void type_str(const kn_value *v, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s[", kn_dtype_name(v->type.dtype));
    for (int32_t i = 0; i < v->type.shape.rank && n < (int)cap - 64; i++) {
        const kn_dim *dm = &v->type.shape.dims[i];
        if (dm->value >= 0)
            n += snprintf(buf + n, cap - (size_t)n, "%s%lld", i ? ", " : "", (long long)dm->value);
        else
            n += snprintf(buf + n, cap - (size_t)n, "%s%s", i ? ", " : "", dm->sym ? dm->sym : "?");
    }
    snprintf(buf + n, cap - (size_t)n, "]");
}

/* Whether file tensor t fits input v as one sample (*batch 0) or as a
 * batch along a new leading axis (*batch = its size). */
static bool fits(const kn_value *v, const kn_rt_tensor *t, int64_t *batch)
{
    if (v->type.dtype && t->dtype != v->type.dtype)
        return false;
    int32_t rank = v->type.shape.rank;
    if (rank < 0) {
        *batch = 0;
        return true;
    }
    int32_t off = t->rank == rank ? 0 : t->rank == rank + 1 ? 1 : -1;
    if (off < 0)
        return false;
    for (int32_t i = 0; i < rank; i++)
        if (v->type.shape.dims[i].value >= 0 && v->type.shape.dims[i].value != t->dims[i + off])
            return false;
    *batch = off ? t->dims[0] : 0;
    return true;
}

/* A note after a missing input: the model's inputs and the tensor files
 * the folder holds, so a misnamed file is easy to spot. */
static void list_inputs(const kn_graph *g, const char *folder, kn_diag *d)
{
    char buf[1024];
    size_t n = 0;
    for (uint32_t k = 0; k < g->n_inputs && n < sizeof buf - 64; k++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s'%s'", k ? ", " : "", g->values[g->inputs[k]].name);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "; the folder holds:");
    DIR *dp = opendir(folder);
    struct dirent *e;
    int files = 0;
    while (dp && (e = readdir(dp)) && n < sizeof buf - 64) {
        size_t L = strlen(e->d_name);
        if ((L > 4 && strcmp(e->d_name + L - 4, ".npy") == 0) || (L > 3 && strcmp(e->d_name + L - 3, ".pb") == 0)) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, " %s", e->d_name);
            files++;
        }
    }
    if (dp)
        closedir(dp);
    if (!files)
        snprintf(buf + n, sizeof buf - n, " no .npy or .pb files");
    kn_diag_add(d, KN_NOTE, "the model's inputs are %s", buf);
}

/* Reads one folder's tensors, one per graph input: ins[k] (owned). *batch:
 * 0 for one sample, else the leading axis every input shares. */
static kn_status load_folder(const kn_graph *g, const char *folder, kn_diag *d, kn_rt_tensor **ins, int64_t *batch)
{
    *batch = -1;
    for (uint32_t k = 0; k < g->n_inputs; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        char sn[256], path[4600];
        safe_name(v->name, sn, sizeof sn);
        snprintf(path, sizeof path, "%s/%s.npy", folder, sn);
        if (!is_file(path))
            snprintf(path, sizeof path, "%s/%s.pb", folder, sn);
        if (!is_file(path))
            snprintf(path, sizeof path, "%s/input_%u.pb", folder, k);
        if (!is_file(path)) {
            char alt[32];
            snprintf(alt, sizeof alt, "input_%u", k);
            if (strcmp(sn, alt) == 0)
                kn_diag_add(d, KN_ERROR, "calibrate: %s: no file for input '%s' (%s.npy or %s.pb)", folder, v->name,
                            sn, sn);
            else
                kn_diag_add(d, KN_ERROR, "calibrate: %s: no file for input '%s' (%s.npy, %s.pb or input_%u.pb)",
                            folder, v->name, sn, sn, k);
            list_inputs(g, folder, d);
            return KN_ERR_INVALID;
        }
        KN_TRY(kn_tensor_read(path, NULL, d, &ins[k], NULL));
        int64_t b;
        if (!fits(v, ins[k], &b)) {
            char want[512], got[512];
            type_str(v, want, sizeof want);
            shape_str(ins[k], got, sizeof got);
            kn_diag_add(d, KN_ERROR, "calibrate: %s: input '%s' is %s, the file holds %s", path, v->name, want, got);
            return KN_ERR_INVALID;
        }
        if (*batch >= 0 && b != *batch) {
            kn_diag_add(d, KN_ERROR,
                        "calibrate: %s: input '%s' holds %lld samples, the folder's other inputs %lld", path, v->name,
                        (long long)(b ? b : 1), (long long)(*batch ? *batch : 1));
            return KN_ERR_INVALID;
        }
        *batch = b;
    }
    if (*batch < 0)
        *batch = 0;
    return KN_OK;
}

/* Sample i of a batch tensor t (a view; free with kn_rt_tensor_free). */
static kn_status slice(const kn_rt_tensor *t, int64_t i, kn_rt_tensor **out)
{
    size_t row = t->dims[0] ? t->nbytes / (size_t)t->dims[0] : 0;
    return kn_rt_tensor_view(NULL, t->dtype, t->rank - 1, t->dims + 1, (const uint8_t *)t->data + row * (size_t)i,
                             out);
}

typedef struct progress {
    bool quiet, tty;
    int pass, n_pass;
    size_t done, total; /* total 0: unknown */
    struct timespec t0;
} progress;

static double elapsed(const progress *p)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - p->t0.tv_sec) + (double)(t.tv_nsec - p->t0.tv_nsec) * 1e-9;
}

static void progress_show(const progress *p, bool last)
{
    if (p->quiet || (!p->tty && !last))
        return;
    char bar[32];
    size_t w = 24, fill = p->total ? p->done * w / p->total : (last ? w : 0);
    for (size_t i = 0; i < w; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[w] = 0;
    fprintf(stderr, "%scalibrate: pass %d/%d [%s] %zu", p->tty ? "\r" : "", p->pass, p->n_pass, bar, p->done);
    if (p->total)
        fprintf(stderr, "/%zu", p->total);
    fprintf(stderr, " samples, %.1f s%s", elapsed(p), last ? "\n" : "");
    fflush(stderr);
}

/* One pass over every sample (at most max_samples). */
static kn_status run_pass(kn_calib *c, const folders *fs, int pass, size_t max_samples, progress *pr, kn_diag *d)
{
    const kn_graph *g = c->g;
    kn_rt_tensor **ins = calloc(g->n_inputs + 1, sizeof *ins), **views = calloc(g->n_inputs + 1, sizeof *views);
    kn_status s = ins && views ? KN_OK : KN_ERR_NOMEM;
    pr->pass = pass;
    pr->done = 0;
    clock_gettime(CLOCK_MONOTONIC, &pr->t0);
    for (size_t f = 0; f < fs->n && s == KN_OK && pr->done < max_samples; f++) {
        int64_t batch = 0;
        s = load_folder(g, fs->paths[f], d, ins, &batch);
        for (int64_t b = 0; s == KN_OK && b < (batch ? batch : 1) && pr->done < max_samples; b++) {
            const kn_rt_tensor *const *run_ins = (const kn_rt_tensor *const *)ins;
            if (batch) {
                for (uint32_t k = 0; k < g->n_inputs && s == KN_OK; k++)
                    s = slice(ins[k], b, &views[k]);
                run_ins = (const kn_rt_tensor *const *)views;
            }
            if (s == KN_OK)
                s = kn_calib_run(c, pass, run_ins, d);
            for (uint32_t k = 0; k < g->n_inputs; k++) {
                kn_rt_tensor_free(NULL, views[k]);
                views[k] = NULL;
            }
            if (s != KN_OK)
                kn_diag_add(d, KN_NOTE, "calibrate: while running the sample from %s%s", fs->paths[f],
                            batch ? " (a batch)" : "");
            pr->done++;
            progress_show(pr, false);
        }
        for (uint32_t k = 0; k < g->n_inputs; k++) {
            kn_rt_tensor_free(NULL, ins[k]);
            ins[k] = NULL;
        }
    }
    if (s == KN_OK)
        progress_show(pr, true);
    else if (pr->tty && !pr->quiet)
        fputc('\n', stderr);
    free(ins);
    free(views);
    return s;
}

int kn_cmd_calibrate(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL;
    kn_calib_opts co = {KN_CALIB_ENTROPY, 99.99, 2048, 0};
    size_t max_samples = (size_t)-1;
    bool quiet = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        char *e;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return KN_EXIT_OK;
        } else if (strcmp(a, "--data") == 0 && has) {
            data = argv[++i];
        } else if ((strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) && has) {
            out = argv[++i];
        } else if (strcmp(a, "--method") == 0 && has) {
            if (!kn_calib_method_parse(argv[++i], &co.method)) {
                fprintf(stderr, "error: calibrate: --method must be minmax, percentile or entropy, got '%s'\n",
                        argv[i]);
                return KN_EXIT_BAD_INPUT;
            }
        } else if (strcmp(a, "--percentile") == 0 && has) {
            co.percentile = strtod(argv[++i], &e);
            if (*e || e == argv[i] || !(co.percentile > 0 && co.percentile <= 100)) {
                fprintf(stderr, "error: calibrate: --percentile must be a number in (0, 100], got '%s'\n", argv[i]);
                return KN_EXIT_BAD_INPUT;
            }
        } else if (strcmp(a, "--bins") == 0 && has) {
            unsigned long v = strtoul(argv[++i], &e, 10);
            if (*e || e == argv[i] || v < 256 || v > (1ul << 20)) {
                fprintf(stderr, "error: calibrate: --bins must be 256 to 1048576, got '%s'\n", argv[i]);
                return KN_EXIT_BAD_INPUT;
            }
            co.bins = (uint32_t)v;
        } else if (strcmp(a, "--max-samples") == 0 && has) {
            unsigned long long v = strtoull(argv[++i], &e, 10);
            if (*e || e == argv[i] || v == 0 || argv[i][0] == '-') {
                fprintf(stderr, "error: calibrate: --max-samples must be a positive count, got '%s'\n", argv[i]);
                return KN_EXIT_BAD_INPUT;
            }
            max_samples = (size_t)v;
        } else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            quiet = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: calibrate: unknown or incomplete option '%s'\n\n%s", a, usage);
            return KN_EXIT_BAD_INPUT;
        } else if (model) {
            fprintf(stderr, "error: calibrate: more than one model given\n\n%s", usage);
            return KN_EXIT_BAD_INPUT;
        } else {
            model = a;
        }
    }
    if (!model || !data || !out) {
        fprintf(stderr, "error: calibrate: %s\n\n%s",
                !model ? "no model given" : !data ? "no --data folder given" : "no output given (-o CALIB.json)",
                usage);
        return KN_EXIT_BAD_INPUT;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    if (!d)
        return KN_EXIT_INTERNAL;
    kn_graph *g = NULL;
    kn_calib *c = NULL;
    folders fs = {0};
    kn_status s = kn_check_output_path(out, d);
    char *side = kn_calib_side_path(out);
    if (!side)
        s = KN_ERR_NOMEM;
    if (s == KN_OK)
        s = kn_check_output_path(side, d);
    free(side);
    if (s == KN_OK)
        s = list_folders(data, d, &fs);
    if (s == KN_OK)
        s = kn_import_onnx_file(model, NULL, NULL, d, &g);
    if (s == KN_OK)
        s = kn_graph_verify(g, d);
    if (s == KN_OK) {
        /* shapes and dtypes for the input checks; nothing renamed */
        kn_pipeline_opts po = {0};
        po.level = KN_OPT_O0;
        s = kn_pipeline_run(g, &po, d);
    }
    if (s == KN_OK)
        s = kn_calib_create(g, &co, NULL, d, &c);
    progress pr = {quiet, isatty(fileno(stderr)) != 0, 1, c && kn_calib_two_pass(c) ? 2 : 1, 0, 0, {0}};
    if (s == KN_OK)
        s = run_pass(c, &fs, 1, max_samples, &pr, d);
    if (s == KN_OK && kn_calib_two_pass(c)) {
        pr.total = pr.done;
        s = run_pass(c, &fs, 2, max_samples, &pr, d);
    }
    if (s == KN_OK && c->n_samples == 0) {
        kn_diag_add(d, KN_ERROR, "calibrate: --data %s holds no samples", data);
        s = KN_ERR_INVALID;
    }
    if (s == KN_OK) {
        kn_calib_finish(c);
        s = kn_calib_table_write(c, model, out, d);
    }
    if (s == KN_OK) {
        uint32_t n_float = 0;
        for (uint32_t i = 0; i < c->n_tensors; i++)
            n_float += c->tensors[i].dtype != KN_UNDEFINED;
        printf("wrote %s (%s, %u samples, %u float tensors, %u linear layers)\n", out,
               kn_calib_method_name(co.method), c->n_samples, n_float, c->n_layers);
    }
    int rc = kn_cli_exit_code(s);
    kn_calib_destroy(c);
    kn_graph_destroy(g);
    folders_free(&fs);
    kn_diag_destroy(d);
    return rc;
}
