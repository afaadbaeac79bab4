/* Which backend runs a plan for `kiln run` and `kiln bench` (--device
 * auto|cpu|cuda), and running it. */
#ifndef KILN_TOOLS_BACKEND_H
#define KILN_TOOLS_BACKEND_H

#include "kiln/cuda.h"
#include "runtime/cpu/kernel.h"

typedef struct kn_cli_backend {
    const kn_graph *g;
    kn_cuda_session *cuda; /* NULL: the CPU reference backend */
    char name[448];        /* "CPU reference backend" or "CUDA (<device>)" */
} kn_cli_backend;

/* True for "auto", "cpu" and "cuda". */
bool kn_cli_device_valid(const char *device);

/* Picks the backend for plan graph g. "cpu": the CPU. "cuda": CUDA, or
 * an error (KN_ERR_UNSUPPORTED, "--device cuda: no CUDA backend: <why>")
 * when the plan has no CUDA code or no GPU can run it. "auto": CUDA when
 * the plan has CUDA code and a GPU runs it, else the CPU with one note
 * "running on the CPU reference backend (<why>)". `cmd` names the command
 * in messages; `o` (may be NULL) is for the CUDA session. */
kn_status kn_cli_backend_open(const char *cmd, const char *device, const kn_graph *g, const kn_cuda_options *o,
                              kn_diag *d, kn_cli_backend *b);

/* Runs the plan once: inputs[i] binds graph input i; outputs[i] receive
 * new tensors (free with kn_rt_tensor_free(NULL, ...)). */
kn_status kn_cli_backend_run(kn_cli_backend *b, const kn_rt_tensor *const *inputs, kn_rt_tensor **outputs,
                             kn_diag *d);

void kn_cli_backend_close(kn_cli_backend *b);

#endif
