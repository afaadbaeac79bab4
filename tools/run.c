/* kiln run: executes a plan on given (or seeded random) inputs, prints
 * and writes the outputs, and compares them with reference outputs. */
#include "backend.h"
#include "cli.h"
#include "compare.h"
#include "inputs.h"
#include "kiln/runtime.h"
#include "runtime/cpu/util.h"
#include "tensor_io.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
    "usage: kiln run MODEL.plan [options]\n"
    "       kiln run MODEL.plan --prompt TEXT | --prompt-ids IDS | --prompts-file FILE\n"
    "                [generation options]\n"
    "\n"
    "Runs a plan and prints a summary of each output; or, given a prompt,\n"
    "generates text with a language model (a decoder with past/present KV\n"
    "inputs/outputs, compiled at -O2 to use the runtime's paged KV cache).\n"
    "\n"
    "options:\n"
    "  --input NAME=FILE     an input from a TensorProto .pb or numpy .npy file\n"
    "                        (inputs not given are random, from --seed)\n"
    "  --shape NAME=DIMS     shape for a random input, e.g. x=1x3x224x224\n"
    "                        (symbolic dims default to 1)\n"
    "  --seed N              seed for random inputs (default 0)\n"
    "  --output-dir DIR      write each output as DIR/<name>.pb (or .npy)\n"
    "  --output-format F     pb (default) or npy\n"
    "  --compare-to DIR      a backend-test test_data_set_N folder: inputs from its\n"
    "                        input_K.pb unless given, outputs compared with output_K.pb\n"
    "  --rtol X, --atol Y    comparison tolerances (default 1e-3, 1e-7)\n"
    "  --device D            auto (default: CUDA when the plan has CUDA code and a\n"
    "                        GPU runs it, else the CPU reference backend), cpu or cuda\n"
    "  -h, --help\n"
    "\n"
    "generation (--device as above: CUDA runs a plan of kiln compile --target\n"
    "cuda on a decoder, its prefill and decode programs; the CPU runs any plan):\n"
    "  --prompt TEXT         the prompt, encoded with the tokenizer\n"
    "  --prompt-ids IDS      the prompt as token ids, e.g. 1,2,3\n"
    "  --prompts-file FILE   one prompt per line (text with a tokenizer, else ids),\n"
    "                        each in its own sequence of the cache, decoded in turn\n"
    "  --tokenizer FILE      a Hugging Face tokenizer.json (default: the one embedded\n"
    "                        in the plan, else tokenizer.json next to it); without\n"
    "                        one, ids are printed instead of text\n"
    "  --chat                the prompt is a user message, rendered with the chat\n"
    "                        template embedded in the plan (tokenizer_config.json)\n"
    "  --max-new-tokens N    default 64\n"
    "  --temperature T       0 (default): greedy; else sampling at temperature T\n"
    "  --top-k K, --top-p P  sampling cuts (default none)\n"
    "  --repetition-penalty R  > 1 penalises ids already in the sequence\n"
    "  --seed S              sampling seed (default 0; prompt i uses S + i)\n"
    "  --stop STR            stop when the new text contains STR; may be repeated\n"
    "  --stop-token TOKEN    stop after the added/special token TOKEN (its text,\n"
    "                        e.g. \"<|im_end|>\"); an unknown token is an error\n"
    "  --stop-id ID          stop after token ID; may be repeated (the plan's\n"
    "                        generation_config.json eos ids stop too)\n"
    "  --ignore-eos          do not stop at the eos ids\n"
    "  --no-kv-cache         recompute the whole sequence at every step\n"
    "  --no-cuda-graph       --device cuda: launch each decode step and prefill chunk\n"
    "                        kernel by kernel instead of replaying it as a CUDA graph\n"
    "  --max-seq-len N, --kv-cache-mem SIZE (bytes, or 64K/2M/1G), --kv-block-size N\n"
    "                        override the plan's KV cache settings\n"
    "The new text is written to stdout as it is produced; a summary (prompt and\n"
    "new tokens, prefill and decode tokens/s) goes to stderr.\n"
    "\n"
    "Exit codes: 0 ok (and all comparisons pass), 1 bad input or a comparison\n"
    "failed, 2 internal error.\n";

static void print_summary(const char *name, const kn_rt_tensor *t)
{
    printf("%s: %s[", name, kn_dtype_name(t->dtype));
    for (int32_t i = 0; i < t->rank; i++)
        printf("%s%" PRId64, i ? ", " : "", t->dims[i]);
    printf("]");
    if (kn_dtype_bits(t->dtype) >= 8 && t->dtype != KN_STRING && t->dtype != KN_C64 && t->dtype != KN_C128 &&
        t->numel > 0) {
        double mn = INFINITY, mx = -INFINITY, sum = 0;
        int64_t nan = 0, finite = 0;
        for (int64_t i = 0; i < t->numel; i++) {
            double x = kn_get_f64(t->dtype, t->data, i);
            if (isnan(x)) {
                nan++;
                continue;
            }
            mn = x < mn ? x : mn;
            mx = x > mx ? x : mx;
            sum += x;
            finite++;
        }
        if (finite)
            printf("  min %.6g max %.6g mean %.6g", mn, mx, sum / (double)finite);
        if (nan)
            printf("  %lld NaN", (long long)nan);
        printf("  values:");
        for (int64_t i = 0; i < t->numel && i < 8; i++)
            printf(" %.6g", kn_get_f64(t->dtype, t->data, i));
        if (t->numel > 8)
            printf(" ...");
    }
    printf("\n");
}

static char *safe_name(const char *name)
{
    size_t n = strlen(name);
    char *s = malloc(n + 2);
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        s[i] = ok ? c : '_';
    }
    s[n] = 0;
    if (n == 0 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) {
        s[0] = '_';
        s[1] = 0;
    }
    return s;
}

int kn_cmd_run(int argc, char **argv)
{
    const char *plan = NULL, *out_dir = NULL, *compare_dir = NULL, *device = "auto", *fmt = "pb";
    double rtol = 1e-3, atol = 1e-7;
    uint64_t seed = 0;
    if (kn_run_wants_generate(argc, argv))
        return kn_run_generate(argc, argv, usage);
    kn_cli_kv *inputs = calloc((size_t)argc + 1, sizeof *inputs), *shapes = calloc((size_t)argc + 1, sizeof *shapes);
    int n_inputs = 0, n_shapes = 0, rc = KN_EXIT_BAD_INPUT;
    if (!inputs || !shapes)
        return KN_EXIT_INTERNAL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            rc = KN_EXIT_OK;
            goto done_args;
        } else if (strcmp(a, "--input") == 0 && has) {
            if (kn_cli_parse_kv("run", a, argv[++i], &inputs[n_inputs++]))
                goto done_args;
        } else if (strcmp(a, "--shape") == 0 && has) {
            if (kn_cli_parse_kv("run", a, argv[++i], &shapes[n_shapes++]))
                goto done_args;
        } else if (strcmp(a, "--seed") == 0 && has) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(a, "--output-dir") == 0 && has) {
            out_dir = argv[++i];
        } else if (strcmp(a, "--output-format") == 0 && has) {
            fmt = argv[++i];
        } else if (strcmp(a, "--compare-to") == 0 && has) {
            compare_dir = argv[++i];
        } else if (strcmp(a, "--rtol") == 0 && has) {
            rtol = strtod(argv[++i], NULL);
        } else if (strcmp(a, "--atol") == 0 && has) {
            atol = strtod(argv[++i], NULL);
        } else if (strcmp(a, "--device") == 0 && has) {
            device = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: run: unknown or incomplete option '%s'\n\n%s", a, usage);
            goto done_args;
        } else if (plan) {
            fprintf(stderr, "error: run: more than one plan given\n\n%s", usage);
            goto done_args;
        } else {
            plan = a;
        }
    }
    rc = -1;
done_args:
    if (rc != -1) {
        kn_cli_free_kvs(inputs, n_inputs);
        kn_cli_free_kvs(shapes, n_shapes);
        free(inputs);
        free(shapes);
        return rc;
    }
    rc = KN_EXIT_BAD_INPUT;
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    kn_rt_tensor **ins = NULL, **outs = NULL;
    kn_cli_backend be = {0};
    kn_status s = KN_OK;
    if (!d) {
        rc = KN_EXIT_INTERNAL;
        goto out;
    }
    if (!plan) {
        fprintf(stderr, "error: run: no plan given\n\n%s", usage);
        goto out;
    }
    if (strcmp(fmt, "pb") != 0 && strcmp(fmt, "npy") != 0) {
        fprintf(stderr, "error: run: --output-format must be pb or npy\n");
        goto out;
    }
    if (!kn_cli_device_valid(device)) {
        fprintf(stderr, "error: run: --device must be auto, cpu or cuda\n");
        goto out;
    }
    s = kn_plan_load(plan, NULL, d, &g);
    if (s != KN_OK)
        goto out;
    s = kn_cli_backend_open("run", device, g, NULL, d, &be);
    if (s != KN_OK)
        goto out;
    for (int i = 0; i < n_inputs; i++) {
        bool known = false;
        for (uint32_t k = 0; k < g->n_inputs; k++)
            known |= strcmp(g->values[g->inputs[k]].name, inputs[i].name) == 0;
        if (!known) {
            kn_diag_add(d, KN_ERROR, "--input %s: the plan has no input named '%s'", inputs[i].name, inputs[i].name);
            s = KN_ERR_INVALID;
            goto out;
        }
    }
    ins = calloc(g->n_inputs + 1, sizeof *ins);
    outs = calloc(g->n_outputs + 1, sizeof *outs);
    if (!ins || !outs) {
        s = KN_ERR_NOMEM;
        goto out;
    }
    for (uint32_t k = 0; k < g->n_inputs && s == KN_OK; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        const char *file = kn_cli_find_kv(inputs, n_inputs, v->name);
        char path[4400];
        if (!file && compare_dir) {
            snprintf(path, sizeof path, "%s/input_%u.pb", compare_dir, k);
            file = path;
        }
        if (file)
            s = kn_tensor_read(file, NULL, d, &ins[k], NULL);
        else
            s = kn_cli_random_input(v, kn_cli_find_kv(shapes, n_shapes, v->name), &seed, d, &ins[k]);
    }
    if (s != KN_OK)
        goto out;
    s = kn_cli_backend_run(&be, (const kn_rt_tensor *const *)ins, outs, d);
    if (s != KN_OK)
        goto out;
    bool all_pass = true;
    if (out_dir && mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        kn_diag_add(d, KN_ERROR, "%s: cannot create the folder: %s", out_dir, strerror(errno));
        s = KN_ERR_IO;
        goto out;
    }
    for (uint32_t k = 0; k < g->n_outputs && s == KN_OK; k++) {
        const char *name = g->values[g->outputs[k]].name;
        print_summary(name, outs[k]);
        if (out_dir) {
            char *sn = safe_name(name);
            char path[4400];
            if (!sn) {
                s = KN_ERR_NOMEM;
                break;
            }
            snprintf(path, sizeof path, "%s/%s.%s", out_dir, sn, fmt);
            free(sn);
            s = strcmp(fmt, "npy") == 0 ? kn_tensor_write_npy(path, outs[k], d)
                                        : kn_tensor_write_pb(path, outs[k], name, d);
        }
        if (compare_dir && s == KN_OK) {
            char path[4400], why[512];
            snprintf(path, sizeof path, "%s/output_%u.pb", compare_dir, k);
            kn_rt_tensor *want = NULL;
            s = kn_tensor_read_pb(path, NULL, d, &want, NULL);
            if (s != KN_OK)
                break;
            kn_cmp_result cr;
            bool ok = kn_compare_tensors(outs[k], want, rtol, atol, &cr, why, sizeof why);
            printf("  compare %s: max abs %.3g, max rel %.3g: %s%s%s\n", name, cr.max_abs, cr.max_rel,
                   ok ? "PASS" : "FAIL", ok ? "" : " - ", ok ? "" : why);
            all_pass &= ok;
            kn_rt_tensor_free(NULL, want);
        }
    }
    if (s == KN_OK)
        rc = all_pass ? KN_EXIT_OK : KN_EXIT_BAD_INPUT;
out:
    if (s != KN_OK)
        rc = kn_cli_exit_code(s);
    if (g) {
        for (uint32_t k = 0; ins && k < g->n_inputs; k++)
            kn_rt_tensor_free(NULL, ins[k]);
        for (uint32_t k = 0; outs && k < g->n_outputs; k++)
            kn_rt_tensor_free(NULL, outs[k]);
    }
    free(ins);
    free(outs);
    kn_cli_backend_close(&be);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    kn_cli_free_kvs(inputs, n_inputs);
    kn_cli_free_kvs(shapes, n_shapes);
    free(inputs);
    free(shapes);
    return rc;
}
