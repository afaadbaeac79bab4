/* The target-cuda sections of a plan, read back and checked: every index,
 * offset and size of every entry, so that the executor can trust them (a
 * corrupted section is an error message, never a crash or a device
 * access out of bounds). Needs no CUDA headers. */
#ifndef KILN_CUDA_PLAN_H
#define KILN_CUDA_PLAN_H

#include "ir/ir.h"
#include "runtime/plan_format.h"

/* kn_plan_cu_slot.place */
enum { KN_CUDA_SLOT_POOL = 1, KN_CUDA_SLOT_WEIGHT = 2, KN_CUDA_SLOT_INPUT = 3 };

typedef struct kn_cuda_plan {
    const kn_allocator *a;
    const char *name;                 /* the plan, in messages */
    kn_plan_cu_kernel *kernels;       /* copies of the section entries */
    uint32_t n_kernels;
    const char **entries;             /* per kernel: entry point name (in the plan's STRINGS) */
    kn_plan_cu_image *images;
    uint32_t n_images;
    kn_plan_cu_slot *slots;
    uint32_t n_slots;
    kn_plan_cu_step *steps;
    uint32_t n_steps;
    kn_plan_cu_arg *args;
    uint32_t n_args;
    kn_plan_cu_gemm *gemms;           /* per step; zero for non-GEMM steps */
    const uint8_t *params;            /* CU_PARAMS, in the plan */
    uint64_t params_size;
    const uint8_t *blobs;             /* CU_BLOBS, in the plan */
    uint64_t blobs_size;
    uint64_t pool_bytes;              /* META cuda.pool_bytes, at least every pool slot's end */
    uint32_t zero_slot;               /* META cuda.zero_slot: a pool slot to zero once before the first
                                         run (the steps leave it zero), KN_PLAN_NONE when absent */
    uint32_t *input_slot;             /* per graph input: its first INPUT slot, KN_PLAN_NONE if unused */
    uint32_t *output_slot;            /* per graph output: the slot holding it */
    /* The KV cache, for plans whose steps read it (KN_CU_ARG_KV; else kv_rows is 0):
     * META cuda.kv_rows / cuda.kv_tokens and the kiln.kv.* shape of the pools. */
    uint32_t kv_rows, kv_tokens;      /* sequences per run, new tokens per sequence and run */
    uint32_t kv_layers, kv_heads, kv_head_dim, kv_block_size, kv_blocks, kv_max_seq_len;
    uint32_t kv_max_blocks;           /* block table row: ceil(max_seq_len / block_size) */
    int32_t kv_dtype;                 /* of the pools (kiln.kv.dtype, default float32) */
} kn_cuda_plan;

/* Whether the plan bytes hold the CUDA sections (all of them); the bytes
 * are checked as far as needed to say so. */
bool kn_cuda_plan_present(const uint8_t *base, uint64_t size);
/* Whether they also hold a decoder's prefill program (KN_SEC_CUP_*). */
bool kn_cuda_plan_prefill_present(const uint8_t *base, uint64_t size);
/* How many batched decode programs (KN_SEC_CUB_*, programs 2, 3, ...)
 * follow a decoder's prefill program: 0 for other plans. */
uint32_t kn_cuda_plan_decode_batches(const uint8_t *base, uint64_t size);

/* Reads and checks the CUDA sections of the plan `g` was loaded from
 * (`base`/`size`: those bytes): the program g->info->cuda_program names
 * (0 the main one, 1 a decoder's prefill program, 2 + k its batched decode
 * program k). KN_OK (free with kn_cuda_plan_free),
 * KN_ERR_INVALID naming what is corrupted, KN_ERR_UNSUPPORTED when the
 * plan has no CUDA code, KN_ERR_NOMEM. On failure *p holds nothing. */
kn_status kn_cuda_plan_read(const kn_graph *g, const uint8_t *base, uint64_t size, const kn_allocator *a,
                            kn_diag *d, kn_cuda_plan *p);
void kn_cuda_plan_free(kn_cuda_plan *p);

/* The image of kernel k to load on a device of compute capability `arch`
 * (major*10 + minor): its CUBIN for exactly that arch, else its PTX.
 * Returns the image index, or KN_PLAN_NONE when there is neither. */
uint32_t kn_cuda_plan_pick_image(const kn_cuda_plan *p, uint32_t k, uint32_t arch);

/* "node 'name' (Op)" for step i, or "step i" when it has no node. */
void kn_cuda_plan_step_name(const kn_cuda_plan *p, const kn_graph *g, uint32_t i, char *buf, size_t n);

/* Bytes per element of the dtypes GEMMs take (f32, f16, bf16, f64); 0
 * for others. */
size_t kn_cuda_gemm_elem_size(int32_t dtype);

#endif
