/* kiln compile: ONNX model → plan. Import, verify, run the pass pipeline,
 * check that the target runs every op (all missing ops reported at once),
 * write the plan atomically. */
#include "cli.h"
#include "codegen/plan_write.h"
#include "ir/stats.h"
#include "passes/passes.h"
#include "runtime/cpu/kernel.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: kiln compile MODEL.onnx [-o MODEL.plan] [--target cpu] [--passes]\n"
    "\n"
    "Compiles an ONNX model into a plan file that `kiln run` executes.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   the plan to write (default: MODEL with .plan for .onnx)\n"
    "  --target T          cpu (the reference backend). cuda comes with the CUDA\n"
    "                      code generator and is refused for now.\n"
    "  --passes            list the optimizer's passes in order and exit\n"
    "  -h, --help\n"
    "\n"
    "The plan is written to a temporary file and renamed into place: an error\n"
    "or Ctrl-C never leaves a half-written plan. Building twice gives the same bytes.\n";

static bool cpu_runs(kn_op op) { return kn_cpu_kernel(op) != NULL; }

kn_status kn_compile_graph(kn_graph *g, const char *target, kn_diag *d)
{
    if (strcmp(target, "cpu") != 0) {
        kn_diag_add(d, KN_ERROR, "target '%s' is not available yet (only 'cpu')", target);
        return KN_ERR_UNSUPPORTED;
    }
    KN_TRY(kn_graph_verify(g, d));
    kn_pipeline_opts po = {true};
    KN_TRY(kn_pipeline_run(g, &po, d));
    return kn_graph_report_unsupported(g, cpu_runs, target, d);
}

static void on_signal(int sig)
{
    kn_plan_cleanup_on_signal();
    signal(sig, SIG_DFL);
    raise(sig);
}

int kn_cmd_compile(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *target = "cpu";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return KN_EXIT_OK;
        } else if (strcmp(a, "--passes") == 0) {
            size_t n;
            const kn_pass_info *p = kn_pipeline_passes(&n);
            for (size_t k = 0; k < n; k++)
                printf("%2zu  %-20s %s\n", k + 1, p[k].name, p[k].what);
            return KN_EXIT_OK;
        } else if ((strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(a, "--target") == 0 && i + 1 < argc) {
            target = argv[++i];
        } else if (strncmp(a, "--target=", 9) == 0) {
            target = a + 9;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: compile: unknown or incomplete option '%s'\n\n%s", a, usage);
            return KN_EXIT_BAD_INPUT;
        } else if (in) {
            fprintf(stderr, "error: compile: more than one model given\n\n%s", usage);
            return KN_EXIT_BAD_INPUT;
        } else {
            in = a;
        }
    }
    if (!in) {
        fprintf(stderr, "error: compile: no model given\n\n%s", usage);
        return KN_EXIT_BAD_INPUT;
    }
    if (strcmp(target, "cpu") != 0) {
        fprintf(stderr, "error: compile: target '%s' is not available yet; use --target cpu\n", target);
        return KN_EXIT_BAD_INPUT;
    }
    char *def_out = NULL;
    if (!out) {
        size_t n = strlen(in);
        def_out = malloc(n + 6);
        if (!def_out)
            return KN_EXIT_INTERNAL;
        memcpy(def_out, in, n + 1);
        if (n > 5 && strcmp(in + n - 5, ".onnx") == 0)
            def_out[n - 5] = 0;
        strcat(def_out, ".plan");
        out = def_out;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    if (!d) {
        free(def_out);
        return KN_EXIT_INTERNAL;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    kn_graph *g = NULL;
    kn_status s = kn_import_onnx_file(in, NULL, NULL, d, &g);
    if (s == KN_OK)
        s = kn_compile_graph(g, target, d);
    if (s == KN_OK) {
        char opts[512];
        snprintf(opts, sizeof opts, "--target %s", target);
        kn_plan_options po = {opts, target};
        s = kn_plan_write(g, &po, out, d);
    }
    if (s == KN_OK)
        printf("wrote %s (target %s, %u nodes)\n", out, target, g->n_nodes);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    free(def_out);
    return kn_cli_exit_code(s);
}
