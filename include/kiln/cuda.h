/* kiln's CUDA backend (part of libkiln_rt): runs the CUDA code of a plan
 * compiled with --target cuda. The NVIDIA driver and cuBLASLt are loaded
 * on first use, so a program linking this starts, and can fall back to the
 * CPU backend, on a machine without them. */
#ifndef KILN_CUDA_H
#define KILN_CUDA_H

#include "kiln/kiln.h"

#include <stdbool.h>
#include <stdint.h>

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

struct kn_cuda_session;

typedef struct kn_cuda_options {
    int device;          /* ordinal, 0 = the first GPU */
    bool timing;         /* time each run's phases with events (kn_cuda_session_timing) */
    bool profile_steps;  /* also time every step (kn_cuda_session_step_ms); implies timing */
    bool sync_each_step; /* synchronise after each step so that an asynchronous
                          * fault names its node (slow; for debugging) */
    uint32_t kv_blocks;  /* plans with kiln.PagedAttention: blocks in the device KV pools
                          * (0: the plan's kiln.kv.blocks) */
    const struct kn_cuda_session *kv_shared; /* use this session's device KV pools instead of new
                          * ones (same device and kiln.kv.* shape, e.g. a prefill and a decode
                          * plan of one model; it must outlive this session); also its device
                          * weights when both run programs of the same plan bytes (a decoder
                          * plan's prefill and decode programs) and it holds every constant
                          * this session reads */
    bool no_graph;       /* runs that sample on the device (kn_cuda_session_run_kv_sample)
                          * launch step by step instead of replaying a CUDA graph */
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

/* Runs the plan once (a plan without KV cache steps: see
 * kn_cuda_session_run_kv): checks the inputs' dtypes and shapes against the
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

/* The device KV cache of a session whose plan reads it (kiln.PagedAttention
 * lowered for target cuda): two pools (keys, values) in runtime/kv_cache.c's
 * layout [layer][block][kv head][slot][head dim], allocated once at
 * creation, and per run a block table and past lengths for `rows`
 * sequences that each get `tokens` new tokens. */
typedef struct kn_cuda_kv_info {
    uint32_t rows, tokens;   /* sequences per run; new tokens per sequence and run */
    uint32_t layers, kv_heads, head_dim, block_size;
    uint32_t max_seq_len;    /* tokens a sequence may hold */
    uint32_t max_blocks;     /* block table row length: ceil(max_seq_len / block_size) */
    uint32_t blocks;         /* blocks in the session's pools */
    kn_dtype dtype;          /* of the pools */
    uint64_t bytes;          /* device bytes of both pools */
} kn_cuda_kv_info;

/* KN_OK and the cache's shape; KN_ERR_INVALID when the plan does not read
 * a KV cache. */
kn_status kn_cuda_session_kv_info(const kn_cuda_session *s, kn_cuda_kv_info *out);

/* One run's view of the cache: host arrays (borrowed for the call), copied
 * to the device before the steps. The caller owns block allocation (e.g.
 * a kn_kv_cache made without host pools) and has reserved blocks for
 * past[r] + tokens positions of every row; after the run the rows hold
 * `tokens` more. */
typedef struct kn_cuda_kv_binding {
    const int32_t *block_table; /* [n_rows, max_blocks]: row r's block ids in position order */
    const int32_t *past;        /* [n_rows]: tokens row r's sequence held before this run */
    uint32_t n_rows;            /* kn_cuda_kv_info.rows */
    uint32_t max_blocks;        /* kn_cuda_kv_info.max_blocks */
} kn_cuda_kv_binding;

/* kn_cuda_session_run for a plan that reads the KV cache (kn_cuda_session_run
 * refuses such a plan). Before anything is enqueued, every row is checked:
 * past + tokens within max_seq_len and every block id it uses below
 * `blocks` (KN_ERR_INVALID naming the row), so no kernel reads or writes
 * outside the pools. Other statuses as kn_cuda_session_run. */
kn_status kn_cuda_session_run_kv(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                 kn_rt_tensor **outputs, uint32_t n_out, const kn_cuda_kv_binding *kv,
                                 kn_diag *d);

/* Sampling the next token on the device: a plan that carries the
 * sampling kernels (kiln compile --target cuda on a decoder puts them in
 * both programs) picks the id from one row of its logits output as
 * runtime/sampler.c's kn_sampler_pick without a repetition penalty, given
 * the same uniform draw; only the int32 id comes back. */
typedef struct kn_cuda_sample {
    float temperature;  /* as kn_sampling: <= 0 (or top_k 1) greedy, no draw read */
    uint32_t top_k;     /* 0: no cut */
    float top_p;        /* >= 1 or <= 0: no cut */
    double u;           /* the draw in [0, 1): kn_sampler_uniform of the caller's sampler */
    uint32_t output;    /* the graph output holding the logits ([..., vocab], float32/16, bfloat16) */
    uint32_t row;       /* which row of it (of its elements / vocab) */
} kn_cuda_sample;

/* Whether the session's plan carries the sampling kernels. */
bool kn_cuda_session_can_sample(const kn_cuda_session *s);

/* kn_cuda_session_run_kv (kv may be NULL for a plan without KV steps) that
 * keeps the outputs on the device: with `smp`, the sampling kernel runs
 * after the steps and *token receives the id (4 bytes are copied back);
 * with smp NULL nothing is copied back (e.g. a prefill chunk before the
 * last). With CUDA graphs (opts.no_graph off, a driver that has them, a
 * plan without HOST steps, no profile_steps or sync_each_step), the first
 * sampled run is captured (uploads from the pinned staging buffers, the
 * steps, the sampling, the 4-byte download), instantiated and launched;
 * later runs replay it with one cuGraphLaunch, captured again when the
 * sampling kernel, its parameters or the row change. With opts.timing a
 * replayed run reports its whole time as compute_ms. KN_ERR_UNSUPPORTED
 * when the plan has no sampling kernels, KN_ERR_INVALID for a bad output
 * or row; else as kn_cuda_session_run_kv. */
kn_status kn_cuda_session_run_kv_sample(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                        const kn_cuda_kv_binding *kv, const kn_cuda_sample *smp, int32_t *token,
                                        kn_diag *d);

/* kn_cuda_session_run_kv_sample on the first `rows` rows of the logits
 * output at once (smp->row and smp->u unused when rows > 1): row r with
 * draw u[r], tokens[r] its id (4 bytes back per row); one launch of the
 * sampling kernel, rows blocks. rows is at most the plan's rows of logits
 * (kn_cuda_kv_info rows x tokens: B of a batched decode program, P of a
 * prefill program, whose every chunk the CUDA session samples this way so
 * that one graph serves them all); the CUDA graph is captured again when
 * rows change. */
kn_status kn_cuda_session_run_kv_sample_rows(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                             const kn_cuda_kv_binding *kv, const kn_cuda_sample *smp,
                                             const double *u, uint32_t rows, int32_t *tokens, kn_diag *d);

/* Whether sampled runs use CUDA graphs, and how many captures and graph
 * launches the session made so far. */
bool kn_cuda_session_graph_stats(const kn_cuda_session *s, uint64_t *captures, uint64_t *launches);

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

/* The device's memory bandwidth as a device-to-device copy sees it (the
 * peak a memory-bound decode step can reach; kiln bench's roofline):
 * cuMemcpyDtoDAsync between two buffers of `bytes` (0: 256 MiB, halved
 * while the allocation fails, down to 16 MiB), one untimed copy, then
 * `iters` (0: 20) timed with events; *gb_per_s = 2 * bytes * iters / time
 * / 1e9 (every byte read once and written once). KN_ERR_UNSUPPORTED
 * without a driver or that device; KN_ERR_NOMEM, KN_ERR_INTERNAL for CUDA
 * failures, named in `d`. */
kn_status kn_cuda_copy_bandwidth(int device, uint64_t bytes, uint32_t iters, double *gb_per_s, kn_diag *d);

/* "NVIDIA H100 80GB HBM3, sm_90, driver 13.0", for reports. */
const char *kn_cuda_session_device(const kn_cuda_session *s);

/* Frees everything (device memory, modules, the stream). NULL is a no-op. */
void kn_cuda_session_destroy(kn_cuda_session *s);

#ifdef __cplusplus
}
#endif
#endif
