/* The kernel runner shared by the standalone kernel checkers
 * (tools/attn_check.c, tools/quant_check.c): one source NVRTC-compiled for
 * sm_80/86/89/90 + PTX (or the GPU's arch) and run either on the host
 * emulator (tools/emu_host.c) or, with --gpu, on the device through the
 * driver API. Device memory is host memory under the emulator. */
#ifndef KILN_TOOLS_KERNEL_CHECK_H
#define KILN_TOOLS_KERNEL_CHECK_H

#include "codegen/cuda/emit.h"
#include "codegen/cuda/program.h"
#include "emu_host.h"
#include "runtime/cuda/driver.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kn_kc_runner {
    bool gpu;
    uint32_t arch;
    int sms;
#ifdef KN_HAVE_CUDA_HEADERS
    const kn_cuda_driver *cu;
    CUdevice dev;
    CUcontext ctx;
#endif
} kn_kc_runner;

typedef struct kn_kc_fn {
    kn_emu_launch_fn emu;
    void *func; /* CUfunction */
} kn_kc_fn;

/* Where kernels run; set gpu before kn_kc_gpu_open (with --gpu). */
extern kn_kc_runner kn_kc;

/* Device buffers (calloc'd host memory under the emulator); NULL on failure. */
/* xorshift64 on *state (non-zero): the next 64 random bits, and a
 * uniform double in [-1, 1) from them. The checkers' data generators. */
uint64_t kn_kc_next_u64(uint64_t *state);
double kn_kc_urand(uint64_t *state);

void *kn_kc_alloc(size_t n);
void kn_kc_free(void *p);
void *kn_kc_upload(const void *src, size_t n);
void kn_kc_download(void *dst, const void *src, size_t n);
/* Launches and waits; false (with a message on stderr) when the launch fails. */
bool kn_kc_launch(const kn_kc_fn *f, kn_dim3 g, uint32_t threads, void **args);
/* Compiles `src` with NVRTC (sm_80 + PTX under the emulator, the GPU's
 * arch on a GPU; the checkers' sweeps compile every default arch) and makes
 * `entry` runnable (host build under the emulator, module on the GPU). */
bool kn_kc_build(const char *src, const char *entry, kn_kc_fn *out);
/* A copy kernel (kn_copy16: 16-byte loads and stores) for the bandwidth roofline. */
extern const char kn_kc_copy_src[];

/* An empty program with room for cap kernels, for kn_kc_sweep (kernels
 * NULL when out of memory). */
kn_cu_program kn_kc_program(uint32_t cap);
/* The checkers' NVRTC sweep: compiles every kernel of `p` for every
 * default arch + PTX (on a GPU: its arch), prints one PASS/FAIL line naming
 * `what` (the kernel sources), frees `p` (entries are not owned: they are
 * cleared first) and returns the number of failures. */
int kn_kc_sweep(kn_cu_program *p, const char *what);

/* The checkers' common start: parses [--gpu [--bench]] (anything else
 * prints `usage` and exits), then sets up where kernels run (the GPU, or
 * the host emulator). Returns -1 to go on, else the exit code: 0/77 when
 * NVRTC or the GPU is not there (skip), 1 or 2 on errors. */
int kn_kc_start(int argc, char **argv, const char *usage, bool *bench);

#ifdef KN_HAVE_CUDA_HEADERS
/* Opens device 0: 0, 77 (no usable GPU: skip) or 1 (no context). Prints the device. */
int kn_kc_gpu_open(void);
/* Seconds per launch: 20 launches timed after 3 warm-up ones. */
double kn_kc_time(const kn_kc_fn *f, kn_dim3 g, uint32_t threads, void **args);
/* Bytes per second of the copy kernel (1 GiB each way); 0 when it cannot run. */
double kn_kc_copy_bandwidth(void);
#endif

#endif
