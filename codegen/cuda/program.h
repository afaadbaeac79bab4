/* A main graph lowered for target cuda: unique kernels (source + compiled
 * images per arch), tensor slots with their place in device memory, and
 * the steps to run in order. Built by codegen/cuda/lower.c, written into
 * the plan by codegen/plan_write.c, read back by runtime/cuda. */
#ifndef KILN_CODEGEN_CUDA_PROGRAM_H
#define KILN_CODEGEN_CUDA_PROGRAM_H

#include "codegen/cuda/emit.h"
#include "runtime/plan_format.h"

typedef struct kn_cu_image {
    uint32_t arch;      /* 80, 86, 89, 90 for CUBIN; KN_CU_ARCH_PTX for PTX */
    const uint8_t *data;
    size_t size;
} kn_cu_image;

typedef struct kn_cu_kernel {
    kn_str entry;       /* extern "C" name */
    char *source;       /* full source (allocator-owned) */
    uint64_t hash;      /* of the source */
    kn_cu_image *images;
    uint32_t n_images;
} kn_cu_kernel;

/* Where a tensor slot's bytes live on the device. */
typedef enum kn_cu_place {
    KN_CU_POOL = 1,  /* in the activation pool at `offset` */
    KN_CU_WEIGHT,    /* a constant: plan constant `index`, uploaded once */
    KN_CU_INPUT,     /* graph input `index`, copied in before the run (lives in the pool at `offset`) */
} kn_cu_place;

typedef struct kn_cu_slot {
    kn_cu_place place;
    uint32_t index;     /* WEIGHT: CONSTS index; INPUT: graph input index */
    uint64_t offset;    /* POOL/INPUT: byte offset in the pool */
    uint64_t nbytes;
    kn_dtype dtype;
    int32_t rank;
    int64_t dims[KN_CU_MAX_RANK];
    kn_id value;        /* the graph value it holds (KN_NONE for scratch) */
} kn_cu_slot;

typedef struct kn_cu_arg {
    uint32_t kind;      /* KN_CU_ARG_* */
    uint32_t slot;      /* SLOT; KV: a KN_CU_KV_* */
    uint64_t offset;    /* SLOT: byte offset into the slot; PARAMS: offset in the params blob; KV: the layer */
    uint64_t size;      /* PARAMS: bytes */
} kn_cu_arg;

typedef struct kn_cu_step {
    uint32_t kind;      /* KN_CU_STEP_* */
    uint32_t kernel;    /* LAUNCH */
    uint32_t grid[3], block[3];
    uint32_t smem;
    uint32_t first_arg, n_args;   /* LAUNCH: args; GEMM: 4 args a, b, c, d; COPY: 2 args dst, src */
    uint32_t node;      /* index of the node it computes (for messages and profiles) */
    uint64_t gemm;      /* GEMM: offset of a kn_cu_gemm in the params blob; COPY: byte count */
} kn_cu_step;

typedef struct kn_cu_program {
    const kn_allocator *a;
    kn_cu_kernel *kernels;
    uint32_t n_kernels, cap_kernels;
    kn_cu_slot *slots;
    uint32_t n_slots, cap_slots;
    kn_cu_step *steps;
    uint32_t n_steps, cap_steps;
    kn_cu_arg *args;
    uint32_t n_args, cap_args;
    uint8_t *params;    /* PARAMS blobs and GEMM descriptors, 8-byte aligned */
    size_t n_params, cap_params;
    uint32_t *outputs;  /* slot of each graph output */
    uint32_t n_outputs;
    uint64_t pool_bytes;   /* planned activation pool */
    uint64_t naive_bytes;  /* sum of all activation sizes (no reuse) */
    int64_t kv_rows;       /* steps read the KV cache (KN_CU_ARG_KV): its rows per run, else 0 */
    int64_t kv_tokens;     /* and the new tokens per row and run */
    bool has_zero;         /* zero_slot holds the KN_ARG_PERSIST memory */
    uint32_t zero_slot;    /* a pool slot, zero before the first run, left zero by every run (META zero_slot) */
    uint32_t archs[8];     /* compiled archs, KN_CU_ARCH_PTX last */
    uint32_t n_archs;
} kn_cu_program;

void kn_cu_program_free(kn_cu_program *p);

#endif
