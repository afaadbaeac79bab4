/* The CUDA executor's session (exec.c: creation and plain runs; sample.c:
 * runs that sample the next token on the device, replayed as a CUDA graph). */
#ifndef KILN_RUNTIME_CUDA_EXEC_IMPL_H
#define KILN_RUNTIME_CUDA_EXEC_IMPL_H

#include "kiln/cuda.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/gemm.h"
#include "runtime/cuda/plan.h"

/* The sampling kernels' parameters by value (codegen/cuda/sample_kernels.h's
 * kn_sample_params: 8-byte fields, then 4-byte ones). */
typedef struct kn_cuda_sample_params {
    int64_t rows, vocab, stride;
    float temperature, top_p;
    uint32_t top_k;
    int32_t pad_;
} kn_cuda_sample_params;

/* One sampling launch: the kernel, its logits pointer and parameters. */
typedef struct kn_cuda_sample_args {
    uint32_t kernel;           /* 0 greedy (kn_sample_argmax), 1 kn_sample */
    CUdeviceptr logits, u, token;
    kn_cuda_sample_params p;
} kn_cuda_sample_args;

#define KN_CU_WORKSPACE_MAX (32u << 20) /* bytes of cuBLASLt workspace a GEMM may ask for */
#define KN_CU_STAGE_ALIGN 64u

struct kn_cuda_session {
    const kn_allocator *a;
    const kn_graph *g;
    kn_cuda_options opts;
    kn_cuda_plan plan;
    const kn_cuda_driver *cu;
    const kn_cublaslt *lt;     /* NULL when the plan has no GEMM */
    CUdevice dev;
    CUcontext ctx;             /* the device's primary context, retained */
    CUstream stream;
    uint32_t arch;             /* major*10 + minor */
    char device[384];
    CUmodule *modules;         /* per kernel */
    CUfunction *funcs;
    CUdeviceptr pool, weights, workspace;
    uint64_t *woff;            /* per plan constant: its offset in `weights`, UINT64_MAX when not uploaded */
    bool weights_borrowed;     /* `weights` are opts.kv_shared's (the same plan's bytes) */
    size_t workspace_bytes;
    CUdeviceptr *slot_ptr;     /* per slot */
    CUdeviceptr *arg_ptr;      /* per argument: the pointer a SLOT argument passes */
    void **kparams;            /* per argument: what cuLaunchKernel reads it from */
    kn_cuda_gemm *gemms;       /* per step */
    uint8_t *pin_in, *pin_out; /* pinned staging */
    uint64_t *in_off;          /* per graph input: offset in pin_in (UINT64_MAX: no slot) */
    uint64_t *out_off;         /* per graph output: offset in pin_out */
    CUevent ev[4];             /* upload start, compute start, compute end, download end */
    CUevent *step_ev;          /* n_steps + 1 (profile_steps) */
    float *step_ms;
    uint32_t *step_node;
    /* the KV cache (plan.kv_rows > 0): pools, per-run table and past lengths */
    CUdeviceptr kv_keys, kv_values, kv_table, kv_past;
    uint64_t kv_layer_bytes;   /* one layer of one pool */
    uint32_t kv_blocks;        /* blocks in the pools */
    uint64_t kv_stage;         /* offset of the table, then the past lengths, in pin_in */
    bool kv_borrowed;          /* the pools are opts.kv_shared's */
    kn_cuda_timing timing;
    bool has_timing;
    bool broken;               /* a device fault: the context cannot be used again */
    /* sampling on the device (the plan carries kn_sample_argmax / kn_sample; sample.c) */
    uint32_t smp_kernel[2];    /* kernel index of each, KN_PLAN_NONE when absent */
    CUdeviceptr smp_dev;       /* 12 * smp_rows bytes: the draws (double) at 0, the tokens (int32) at 8 * smp_rows */
    uint8_t *smp_pin;          /* pinned, the same layout */
    uint32_t smp_rows;         /* rows one run may sample: its rows of logits, KV rows x new tokens (at least 1) */
    kn_cuda_sample_args smp;   /* what the sampling launch passes (by pointer) */
    /* the CUDA graph of a sampled run (sample.c) */
    bool graphs;               /* capture sampled runs (opts.no_graph off, the driver has graphs, no HOST step) */
    CUgraph graph;
    CUgraphExec graph_exec;
    kn_cuda_sample_args graph_key; /* what the capture baked in */
    uint64_t n_captures, n_graph_launches;
};

/* ---- shared by exec.c and sample.c ---- */

/* Checks the inputs and the KV binding, makes the context current and
 * copies them into the pinned staging buffers. */
kn_status kn_cuda_exec_stage(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                             const kn_cuda_kv_binding *kv, kn_diag *d);
/* Enqueues the uploads from the staging buffers (the inputs, the KV table
 * and past lengths). */
kn_status kn_cuda_exec_uploads(kn_cuda_session *s, kn_diag *d);
/* Enqueues the plan's steps (HOST steps synchronise). */
kn_status kn_cuda_exec_steps(kn_cuda_session *s, kn_diag *d);
/* Waits for the stream after an enqueue (also a failed one); a device
 * fault marks the session broken. Returns st, or the failure. */
kn_status kn_cuda_exec_sync(kn_cuda_session *s, kn_status st, const char *file, kn_diag *d);
/* After a synchronised timed run: s->timing from the events ev[0..3]
 * (graphed: the whole replay as compute time), the per-step times, and
 * has_timing set. */
void kn_cuda_exec_read_timing(kn_cuda_session *s, bool graphed);
/* sample.c: finds the sampling kernels and allocates their buffers (at creation). */
kn_status kn_cuda_sample_setup(kn_cuda_session *s, kn_diag *d);
/* sample.c: releases the graph and the sampling buffers (at destruction). */
void kn_cuda_sample_release(kn_cuda_session *s);



#endif
