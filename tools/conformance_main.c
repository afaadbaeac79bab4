/* kiln-conformance: every case goes the full path a user goes: import,
 * compile, write the plan, load it, run it (see conformance.c).
 * --target cuda builds target-cuda plans (static shapes from the case's
 * first test data set); --device cuda runs them on the GPU. */
#include "backend.h"
#include "cli.h"
#include "codegen/cuda/lower.h"
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
    const char *target, *device;
    kn_precision_opts precision;
    kn_pipeline_opts po; /* -O level and verification; .precision points at the field above */
    kn_cli_backend backend;
    bool open;
} plan_ctx;

static kn_status through_plan(void *ctx, kn_graph **g, const kn_rt_tensor *const *sample, kn_diag *d)
{
    plan_ctx *pc = ctx;
    bool cuda = strcmp(pc->target, "cuda") == 0;
    pc->po.precision = &pc->precision;
    KN_TRY(kn_compile_graph(*g, pc->target, &pc->po, d));
    kn_cu_program prog;
    memset(&prog, 0, sizeof prog);
    if (cuda) {
        uint32_t n = (*g)->n_inputs, k = 0;
        kn_cuda_shape *shapes = calloc(n + 1, sizeof *shapes);
        if (!shapes)
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            if (!sample[i])
                continue;
            shapes[k].name = (*g)->values[(*g)->inputs[i]].name;
            shapes[k].rank = sample[i]->rank;
            for (int32_t r = 0; r < sample[i]->rank && r < 64; r++)
                shapes[k].dims[r] = sample[i]->dims[r];
            k++;
        }
        kn_cuda_lower_stats ls;
        kn_status s = kn_cuda_lower(*g, shapes, k, sample, d, &prog, &ls);
        free(shapes);
        static const uint32_t archs[] = {80, 86, 89, 90};
        kn_nvrtc_options no = {archs, 4, false, NULL, 0};
        if (s == KN_OK)
            s = kn_cuda_compile(&prog, &no, d, NULL);
        if (s != KN_OK) {
            kn_cu_program_free(&prog);
            return s;
        }
    }
    kn_plan_options po = {cuda ? "--target cuda" : "--target cpu", pc->target, cuda ? &prog : NULL};
    kn_status s = kn_plan_write(*g, &po, pc->path, d);
    kn_cu_program_free(&prog);
    KN_TRY(s);
    kn_graph *loaded = NULL;
    s = kn_plan_load(pc->path, NULL, d, &loaded);
    unlink(pc->path);
    if (s != KN_OK)
        return s;
    /* messages from the run name the model, not the temporary plan */
    s = kn_graph_intern_cstr(loaded, (*g)->info->path, &loaded->info->path);
    kn_graph_destroy(*g);
    *g = loaded;
    if (s == KN_OK && strcmp(pc->device, "cpu") != 0) {
        s = kn_cli_backend_open("conformance", pc->device, loaded, NULL, d, &pc->backend);
        pc->open = s == KN_OK;
    }
    return s;
}

static kn_status run_plan(void *ctx, const kn_graph *g, const kn_rt_tensor *const *ins, kn_rt_tensor **outs,
                          kn_diag *d)
{
    plan_ctx *pc = ctx;
    (void)g;
    return kn_cli_backend_run(&pc->backend, ins, outs, d);
}

static void finish(void *ctx)
{
    plan_ctx *pc = ctx;
    if (pc->open)
        kn_cli_backend_close(&pc->backend);
    pc->open = false;
}

int main(int argc, char **argv)
{
    plan_ctx pc;
    memset(&pc, 0, sizeof pc);
    pc.target = "cpu";
    pc.device = "cpu";
    pc.precision.to = KN_F32;
    pc.po.verify_each = true;
    /* the cases feed past* and check present*: keep the ONNX interface */
    static const char *const keep_interface[] = {"kv-cache"};
    pc.po.disabled = keep_interface;
    pc.po.n_disabled = 1;
    /* --target/--device are ours; the rest goes to the runner */
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int n = 0;
    if (!args)
        return 2;
    for (int i = 0; i < argc; i++) {
        /* -O0/-O1/-O2 (default -O2): the optimization level cases compile at */
        if (i > 0 && (strcmp(argv[i], "-O0") == 0 || strcmp(argv[i], "-O1") == 0 || strcmp(argv[i], "-O2") == 0)) {
            pc.po.level = (kn_opt_level)(argv[i][2] - '0' + 1);
            continue;
        }
        if ((strcmp(argv[i], "--target") == 0 || strcmp(argv[i], "--device") == 0 ||
             strcmp(argv[i], "--precision") == 0) && i + 1 < argc) {
            const char *v = argv[i + 1];
            if (strcmp(argv[i], "--target") == 0)
                pc.target = v;
            else if (strcmp(argv[i], "--device") == 0)
                pc.device = v;
            else
                pc.precision.to = strcmp(v, "fp16") == 0 ? KN_F16 : strcmp(v, "bf16") == 0 ? KN_BF16
                                  : strcmp(v, "fp32") == 0 ? KN_F32 : KN_UNDEFINED;
            i++;
            continue;
        }
        args[n++] = argv[i];
    }
    if ((strcmp(pc.target, "cpu") != 0 && strcmp(pc.target, "cuda") != 0) || !kn_cli_device_valid(pc.device) ||
        pc.precision.to == KN_UNDEFINED) {
        fprintf(stderr, "error: --target must be cpu or cuda, --device auto, cpu or cuda, --precision fp32, fp16 or bf16\n");
        free(args);
        return 1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(pc.path, sizeof pc.path, "%s/kiln-conformance-%ld.plan", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    bool device_run = strcmp(pc.device, "cpu") != 0;
    kn_conformance_opts o = {1e-3, 1e-7, false, -1, through_plan, &pc, device_run ? run_plan : NULL, finish};
    int rc = kn_conformance_main(n, args, &o);
    free(args);
    return rc;
}
