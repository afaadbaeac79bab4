/* kiln's CUDA backend (part of libkiln_rt): runs the CUDA code of a plan
 * compiled with --target cuda. The NVIDIA driver and cuBLASLt are loaded
 * on first use, so a program linking this starts, and can fall back to the
 * CPU backend, on a machine without them. */
#ifndef KILN_CUDA_H
#define KILN_CUDA_H

#include "kiln/kiln.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A tensor at run time (defined in runtime/cpu/kernel.h). */
typedef struct kn_rt_tensor kn_rt_tensor;

/* True when the NVIDIA driver loads, initialises and reports at least one
 * device. Otherwise false, with one KN_NOTE in `d` saying why ("no NVIDIA
 * driver: ...", "this build has no CUDA support", ...). Never fails
 * otherwise; safe to call repeatedly (the driver is loaded once). */
bool kn_cuda_available(kn_diag *d);

/* True when the plan a graph was loaded from (kn_plan_load) carries CUDA
 * code: the target-cuda sections. False for other graphs. */
bool kn_cuda_plan_has_code(const kn_graph *plan_graph);

typedef struct kn_cuda_options {
    int device;          /* ordinal, 0 = the first GPU */
    bool timing;         /* time each run's phases with events (kn_cuda_session_timing) */
    bool profile_steps;  /* also time every step (kn_cuda_session_step_ms); implies timing */
    bool sync_each_step; /* synchronise after each step so that an asynchronous
                          * fault names its node (slow; for debugging) */
} kn_cuda_options;

typedef struct kn_cuda_session kn_cuda_session;

/* Prepares a plan's CUDA code on a device: picks each kernel's image for
 * the device (its sm_XY CUBIN, else the PTX, JIT-compiled), loads the
 * modules, allocates the activation pool, uploads the weights, plans the
 * cuBLASLt GEMMs and allocates pinned staging buffers for inputs and
 * outputs.
 * `plan_graph` is a graph from kn_plan_load / kn_plan_load_memory; it and
 * the plan bytes must outlive the session. `plan_bytes`/`plan_size` are
 * those bytes (NULL/0: the ones the graph was loaded from). `opts` and
 * `a` may be NULL.
 * Returns KN_OK (*out owns the session), KN_ERR_INVALID for a corrupted
 * CUDA section (every index, offset and size is checked), KN_ERR_UNSUPPORTED
 * (no driver or device, a plan without CUDA code, "no code for sm_XY", an
 * op cuBLASLt cannot do), KN_ERR_NOMEM (host or device memory),
 * KN_ERR_INTERNAL (another CUDA failure); every error names the call and
 * CUDA's error name in `d`. */
kn_status kn_cuda_session_create(const kn_graph *plan_graph, const void *plan_bytes, size_t plan_size,
                                 const kn_cuda_options *opts, const kn_allocator *a, kn_diag *d,
                                 kn_cuda_session **out);

/* Runs the plan once: checks the inputs' dtypes and shapes against the
 * shapes it was compiled for, copies them in, runs the steps in order on
 * the session's stream, copies the outputs back and synchronises.
 * inputs[i] binds the graph's input i (borrowed); outputs[i] receive new
 * tensors (free with kn_rt_tensor_free(a, ...), `a` as given at creation).
 * Errors name the step's node and op. KN_ERR_INVALID for bad inputs,
 * KN_ERR_NOMEM, KN_ERR_INTERNAL for a CUDA failure (after a fault on the
 * device the session refuses further runs). Not thread-safe: one run at a
 * time per session. */
kn_status kn_cuda_session_run(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                              kn_rt_tensor **outputs, uint32_t n_out, kn_diag *d);

/* Device times of the last run, in milliseconds (opts.timing). */
typedef struct kn_cuda_timing {
    double upload_ms;   /* inputs host → device */
    double compute_ms;  /* the steps */
    double download_ms; /* outputs device → host */
} kn_cuda_timing;

/* KN_OK and the last run's times; KN_ERR_INVALID if the session was made
 * without timing or has not run yet. */
kn_status kn_cuda_session_timing(const kn_cuda_session *s, kn_cuda_timing *out);

/* Per-step device times of the last run (opts.profile_steps): *ms gets
 * n_steps entries (valid until the next run), node[i] the main-graph node
 * of step i (UINT32_MAX for none). KN_ERR_INVALID without profiling. */
kn_status kn_cuda_session_step_ms(const kn_cuda_session *s, const float **ms, const uint32_t **node,
                                  uint32_t *n_steps);

/* "NVIDIA H100 80GB HBM3, sm_90, driver 13.0", for reports. */
const char *kn_cuda_session_device(const kn_cuda_session *s);

/* Frees everything (device memory, modules, the stream). NULL is a no-op. */
void kn_cuda_session_destroy(kn_cuda_session *s);

#ifdef __cplusplus
}
#endif
#endif
