/* Backend choice for `kiln run` and `kiln bench` (see backend.h). */
#include "backend.h"
#include "runtime/cpu/exec.h"

#include <stdio.h>
#include <string.h>

bool kn_cli_device_valid(const char *device)
{
    return strcmp(device, "auto") == 0 || strcmp(device, "cpu") == 0 || strcmp(device, "cuda") == 0;
}

/* A diagnostic's text without its "note: "/"error: " prefix. */
static const char *text_of(const char *m)
{
    const char *colon = strchr(m, ':');
    return colon && colon[1] == ' ' ? colon + 2 : m;
}

/* The first message of q, as a reason in parentheses. */
static const char *reason(const kn_diag *q, const char *fallback)
{
    const char *m = kn_diag_size(q) ? kn_diag_message(q, 0, NULL) : NULL;
    return m ? text_of(m) : fallback;
}

kn_status kn_cli_backend_open(const char *cmd, const char *device, const kn_graph *g, const kn_cuda_options *o,
                              kn_diag *d, kn_cli_backend *b)
{
    memset(b, 0, sizeof *b);
    b->g = g;
    snprintf(b->name, sizeof b->name, "CPU reference backend");
    if (strcmp(device, "cpu") == 0)
        return KN_OK;
    bool want_cuda = strcmp(device, "cuda") == 0;
    if (!kn_cuda_plan_has_code(g)) {
        const char *why = "the plan has no CUDA code: compile it with --target cuda";
        if (want_cuda) {
            kn_diag_add(d, KN_ERROR, "%s: --device cuda: no CUDA backend for this plan (%s)", cmd, why);
            return KN_ERR_UNSUPPORTED;
        }
        kn_diag_add(d, KN_NOTE, "running on the CPU reference backend (%s)", why);
        return KN_OK;
    }
    kn_diag *q = kn_diag_create(NULL, NULL);
    if (!q)
        return KN_ERR_NOMEM;
    kn_status s = KN_OK;
    if (!kn_cuda_available(q)) {
        if (want_cuda) {
            kn_diag_add(d, KN_ERROR, "%s: --device cuda: no CUDA backend (%s)", cmd, reason(q, "no GPU"));
            s = KN_ERR_UNSUPPORTED;
        } else {
            kn_diag_add(d, KN_NOTE, "running on the CPU reference backend (%s)", reason(q, "no GPU"));
        }
        kn_diag_destroy(q);
        return s;
    }
    /* auto falls back to the CPU when the GPU cannot run this plan (no
     * code for its arch, an op cuBLASLt lacks); other failures are errors */
    s = kn_cuda_session_create(g, NULL, 0, o, NULL, want_cuda ? d : q, &b->cuda);
    if (s == KN_OK) {
        snprintf(b->name, sizeof b->name, "CUDA (%s)", kn_cuda_session_device(b->cuda));
    } else if (!want_cuda && s == KN_ERR_UNSUPPORTED) {
        kn_diag_add(d, KN_NOTE, "running on the CPU reference backend (%s)", reason(q, "the GPU cannot run it"));
        s = KN_OK;
    } else if (!want_cuda) {
        for (size_t i = 0; i < kn_diag_size(q); i++) {
            kn_severity sev;
            const char *m = kn_diag_message(q, i, &sev);
            kn_diag_add(d, sev, "%s", text_of(m));
        }
    }
    kn_diag_destroy(q);
    return s;
}

kn_status kn_cli_backend_run(kn_cli_backend *b, const kn_rt_tensor *const *inputs, kn_rt_tensor **outputs,
                             kn_diag *d)
{
    if (b->cuda)
        return kn_cuda_session_run(b->cuda, inputs, b->g->n_inputs, outputs, b->g->n_outputs, d);
    return kn_cpu_run(b->g, NULL, d, inputs, b->g->n_inputs, outputs, b->g->n_outputs);
}

void kn_cli_backend_close(kn_cli_backend *b)
{
    kn_cuda_session_destroy(b->cuda);
    b->cuda = NULL;
}
