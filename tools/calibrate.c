/* kiln calibrate: runs a model on the CPU backend over calibration inputs
 * and writes a calibration table (docs/quantization.md). */
#include "calib_table.h"
#include "cli.h"
#include "passes/passes.h"
#include "runtime/cpu/util.h"
#include "samples.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    "  --text FILE         instead of --data, for decoder language models: the\n"
    "                      text tokenized (tokenizer.json next to the model, or\n"
    "                      --tokenizer FILE) into windows of --window tokens\n"
    "                      (default 256); each window one sample (input_ids,\n"
    "                      attention_mask, position_ids, empty past key/values)\n"
    "  --tokenizer FILE    the tokenizer.json for --text\n"
    "  --window N          tokens per window for --text (default 256)\n"
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

typedef struct pass_ctx {
    kn_calib *c;
    int pass;
    progress *pr;
} pass_ctx;

static kn_status run_one(void *ctx, const kn_rt_tensor *const *ins, const char *origin, const int32_t *ids,
                         size_t n_ids, kn_diag *d)
{
    (void)ids;
    (void)n_ids;
    pass_ctx *p = ctx;
    kn_status s = kn_calib_run(p->c, p->pass, ins, d);
    if (s != KN_OK)
        kn_diag_add(d, KN_NOTE, "calibrate: while running the sample from %s", origin);
    p->pr->done++;
    progress_show(p->pr, false);
    return s;
}

/* One pass over every sample (at most max_samples). */
static kn_status run_pass(kn_calib *c, const kn_sample_set *fs, int pass, size_t max_samples, progress *pr,
                          kn_diag *d)
{
    pr->pass = pass;
    pr->done = 0;
    clock_gettime(CLOCK_MONOTONIC, &pr->t0);
    pass_ctx p = {c, pass, pr};
    kn_status s = kn_samples_foreach(c->g, fs, max_samples, run_one, &p, d);
    if (s == KN_OK)
        progress_show(pr, true);
    else if (pr->tty && !pr->quiet)
        fputc('\n', stderr);
    return s;
}

int kn_cmd_calibrate(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL, *text = NULL, *tokenizer = NULL;
    int64_t window = 256;
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
        } else if (strcmp(a, "--text") == 0 && has) {
            text = argv[++i];
        } else if (strcmp(a, "--tokenizer") == 0 && has) {
            tokenizer = argv[++i];
        } else if (strcmp(a, "--window") == 0 && has) {
            long long v = strtoll(argv[++i], &e, 10);
            if (*e || e == argv[i] || v < 2 || v > (1 << 20)) {
                fprintf(stderr, "error: calibrate: --window must be 2 to 1048576 tokens, got '%s'\n", argv[i]);
                return KN_EXIT_BAD_INPUT;
            }
            window = v;
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
    if (!model || (!data && !text) || (data && text) || !out) {
        fprintf(stderr, "error: calibrate: %s\n\n%s",
                !model            ? "no model given"
                : data && text    ? "--data and --text together"
                : !data && !text  ? "no --data folder (or --text file) given"
                                  : "no output given (-o CALIB.json)",
                usage);
        return KN_EXIT_BAD_INPUT;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    if (!d)
        return KN_EXIT_INTERNAL;
    kn_graph *g = NULL;
    kn_calib *c = NULL;
    kn_sample_set fs;
    memset(&fs, 0, sizeof fs);
    kn_status s = kn_check_output_path(out, d);
    char *side = kn_calib_side_path(out);
    if (!side)
        s = KN_ERR_NOMEM;
    if (s == KN_OK)
        s = kn_check_output_path(side, d);
    free(side);
    if (s == KN_OK)
        s = data ? kn_samples_folders("calibrate", "--data", data, d, &fs)
                 : kn_samples_text("calibrate", model, text, tokenizer, window, d, &fs);
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
        kn_diag_add(d, KN_ERROR, "calibrate: %s %s holds no samples", data ? "--data" : "--text", data ? data : text);
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
    kn_samples_free(&fs);
    kn_diag_destroy(d);
    return rc;
}
