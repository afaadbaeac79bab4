/* Lowering a graph for target cuda (see lower.c). */
#ifndef KILN_CODEGEN_CUDA_LOWER_H
#define KILN_CODEGEN_CUDA_LOWER_H

#include "codegen/cuda/program.h"
#include "runtime/cpu/kernel.h"

/* A bound input shape (--shape NAME=DIMS). */
typedef struct kn_cuda_shape {
    const char *name;
    int32_t rank;
    int64_t dims[64];
} kn_cuda_shape;

typedef struct kn_cuda_lower_stats {
    uint32_t nodes_folded;  /* computed at compile time */
    uint32_t nodes_emitted;
    uint32_t nodes_host;    /* run on the CPU inside the CUDA session (no CUDA kernel) */
    uint32_t steps;
    uint32_t kernels;       /* unique kernel sources */
    uint32_t gemv;          /* matrix products given to the dense GEMV (gemv_kernels.h) */
} kn_cuda_lower_stats;

/* Lowers g's main graph into *out (owned; kn_cu_program_free). g is
 * changed: input shapes are bound (symbolic dims from `shapes` or an
 * error naming the input), nodes known at compile time are folded into
 * constants. probe_data (NULL, or one tensor or NULL per graph input) is
 * sample input data for the shape probe; without it the probe uses zeros
 * (0.5 for floats). A node without an emitter becomes a HOST step (run
 * by the CPU reference backend inside the CUDA session), noted once per op. Kernel images are not compiled here: see
 * kn_cuda_compile. */
kn_status kn_cuda_lower(kn_graph *g, const kn_cuda_shape *shapes, uint32_t n_shapes,
                        const kn_rt_tensor *const *probe_data, kn_diag *d, kn_cu_program *out,
                        kn_cuda_lower_stats *st);

/* kn_cuda_lower with options (kn_cuda_lower: all defaults). */
struct kn_gemm_table;
typedef struct kn_cuda_lower_opts {
    const struct kn_gemm_table *gemm_table; /* GEMV or cuBLASLt per shape; NULL: the built-in table */
    uint32_t arch;                          /* the plan's newest arch (its table rows win); 0: 90 */
} kn_cuda_lower_opts;
kn_status kn_cuda_lower_opt(kn_graph *g, const kn_cuda_shape *shapes, uint32_t n_shapes,
                            const kn_rt_tensor *const *probe_data, const kn_cuda_lower_opts *o, kn_diag *d,
                            kn_cu_program *out, kn_cuda_lower_stats *st);

typedef struct kn_nvrtc_options {
    const uint32_t *archs;   /* e.g. {80, 86, 89, 90}; PTX of the last is added */
    uint32_t n_archs;
    bool no_cache;           /* skip the kernel cache */
    const char *cache_dir;   /* NULL: $XDG_CACHE_HOME/kiln or ~/.cache/kiln */
    uint32_t threads;        /* 0: the number of online CPUs */
} kn_nvrtc_options;

typedef struct kn_nvrtc_stats {
    uint32_t compiled;       /* NVRTC invocations */
    uint32_t cached;         /* images taken from the cache */
    uint32_t failed;
} kn_nvrtc_stats;

/* Compiles every kernel of p to CUBIN for each arch and PTX for the last,
 * with NVRTC (loaded at run time; KN_ERR_UNSUPPORTED if it is missing).
 * A kernel that does not compile is an error with NVRTC's log. */
kn_status kn_cuda_compile(kn_cu_program *p, const kn_nvrtc_options *o, kn_diag *d, kn_nvrtc_stats *st);

/* The NVRTC version as "major.minor", or NULL if NVRTC cannot be loaded. */
const char *kn_nvrtc_version(void);

#endif
