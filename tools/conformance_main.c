/* kiln-conformance: every case goes the full path a user goes: import,
 * compile, write the plan, load it, run it (see conformance.c). */
#include "cli.h"
#include "codegen/plan_write.h"
#include "conformance.h"
#include "kiln/runtime.h"
#include "passes/passes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct plan_ctx {
    char path[256];
    kn_pipeline_opts po;
} plan_ctx;

static kn_status through_plan(void *ctx, kn_graph **g, kn_diag *d)
{
    plan_ctx *pc = ctx;
    KN_TRY(kn_compile_graph(*g, "cpu", &pc->po, d));
    kn_plan_options po = {"--target cpu", "cpu", NULL};
    KN_TRY(kn_plan_write(*g, &po, pc->path, d));
    kn_graph *loaded = NULL;
    kn_status s = kn_plan_load(pc->path, NULL, d, &loaded);
    unlink(pc->path);
    if (s != KN_OK)
        return s;
    /* messages from the run name the model, not the temporary plan */
    s = kn_graph_intern_cstr(loaded, (*g)->info->path, &loaded->info->path);
    kn_graph_destroy(*g);
    *g = loaded;
    return s;
}

int main(int argc, char **argv)
{
    plan_ctx pc;
    const char *tmp = getenv("TMPDIR");
    snprintf(pc.path, sizeof pc.path, "%s/kiln-conformance-%ld.plan", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    memset(&pc.po, 0, sizeof pc.po);
    pc.po.verify_each = true;
    /* -O0/-O1/-O2 (default -O2): the optimization level cases compile at */
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (i > 0 && (strcmp(a, "-O0") == 0 || strcmp(a, "-O1") == 0 || strcmp(a, "-O2") == 0))
            pc.po.level = (kn_opt_level)(a[2] - '0' + 1);
        else
            argv[n++] = argv[i];
    }
    kn_conformance_opts o = {1e-3, 1e-7, through_plan, &pc};
    return kn_conformance_main(n, argv, &o);
}
