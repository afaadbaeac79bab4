/* Attention kernels for target cuda (codegen/cuda/e_fused_attn.c,
 * e_paged_attn.c): CUDA C source generators and the parameter structs the
 * kernels take by value (same layout on host and device: 8-byte fields,
 * then 4-byte ones). Used by the Attention emitter and by kiln-attn-check
 * (tools/attn_check.c), which runs them against the CPU reference under
 * emulation and on a GPU.
 *
 *   flash   FlashAttention-2 style: a block of 128 threads takes 32 query
 *           rows of one (batch, head), 4 threads per row (each owns every
 *           4th dim of q and of the accumulator), K/V tiles of 32 keys go
 *           through shared memory as float, online softmax in float (FMA,
 *           no tensor cores). Contiguous K/V [b, kvh, sk, D], or (paged)
 *           the paged cache's pools through the block table.
 *   decode  split-K flash-decoding over the paged cache: block (split,
 *           row, batch) of 4 warps, a warp per key in turn, lanes over the
 *           head dim, warp-shuffle dot products; writes (max, sum, acc)
 *           partials, and the last split block of each (batch, row) to
 *           finish merges them into the output (counters: `cnt`), or,
 *           with cnt NULL, `combine` does in a second launch.
 *   append  new K/V rows into the paged cache (one thread per element).
 *   simple  reference-style: one thread per output row, double, no shared
 *           memory (contiguous or paged).
 *
 * Layouts. Q, Y [batch, q_heads, sq, D]; K/V [batch, kv_heads, sk, D].
 * Paged cache: the pools of runtime/kv_cache.c,
 * [layer][block][kv_head][slot][D], slot = position % block_size; the
 * block table int32 [batch, max_blocks]; past int32 [batch] (tokens the
 * cache held before this step: a row attends over past + sq keys, query i
 * sees key j ≤ past + i when causal). */
#ifndef KILN_CODEGEN_CUDA_ATTN_KERNELS_H
#define KILN_CODEGEN_CUDA_ATTN_KERNELS_H

#include "codegen/cuda/emit.h"

#define KN_FLASH_BM 32      /* query rows per block */
#define KN_FLASH_BN 32      /* keys per shared-memory tile */
#define KN_FLASH_THREADS 128
#define KN_DECODE_THREADS 128
#define KN_DECODE_MAX_SPLIT 64

typedef enum kn_attn_mask_kind { KN_MASK_NONE, KN_MASK_BOOL, KN_MASK_ADD } kn_attn_mask_kind;

/* What a kernel source depends on. */
typedef struct kn_attn_spec {
    kn_dtype dtype;        /* of Q, K, V, Y (f32, f16, bf16) */
    kn_dtype cache_dtype;  /* paged pools (f32 in runtime/kv_cache.c, or f16/bf16) */
    kn_dtype mask_dtype;   /* KN_MASK_ADD: the mask's dtype */
    kn_attn_mask_kind mask;
    int head_dim;          /* flash: multiple of 4, ≤ 128; decode: 32, 64, 128 or 256 */
    bool paged;            /* flash, simple: K/V from the paged pools */
} kn_attn_spec;

/* Contiguous attention (flash, simple). Kernel args: q, k, v, mask, y, params. */
typedef struct kn_attn_params {
    int64_t batch, qh, kvh, sq, sk, group; /* group: q heads per kv head */
    int64_t past;                          /* causal offset: query i sees keys j <= i + past */
    int64_t mst[4];                        /* mask strides over [b, h, i, j] (0: broadcast) */
    int64_t mlen;                          /* keys the mask covers (later keys are masked) */
    float scale;
    int32_t causal;
} kn_attn_params;

/* Paged (flash paged, decode, simple paged, append). Kernel args:
 *   attention: q, kpool, vpool, table, past, mask, out, params
 *   decode:    q, kpool, vpool, table, past, mask, partials
 *              (kn_decode_partial_bytes), cnt, y, params. cnt: one u32 per
 *              (batch, row) (kn_decode_counter_bytes), zero before the
 *              launch and left zero by it; the last split block of a row
 *              to finish merges the partials into y in split order. cnt
 *              NULL: partials only (y unused), merged by combine.
 *   combine:   partials, y, params (the same merge, one thread per output)
 *   append:    k_new, v_new, kpool, vpool, table, past, params */
typedef struct kn_paged_params {
    int64_t batch, qh, kvh, sq, group;
    int64_t block_size, max_blocks;   /* table row length */
    int64_t layer_off;                /* elements to the layer's first block in each pool */
    int64_t mst[4];                   /* mask strides over [b, h, i, j]; j runs to past + sq */
    int64_t n_split;                  /* decode: key splits per row */
    float scale;
    int32_t causal;
} kn_paged_params;

/* Sources (malloc'd, NUL-terminated; NULL with a reason in err for a spec
 * the kernel does not handle) and their entry points. */
char *kn_attn_flash_source(const kn_attn_spec *s, char *err, size_t err_size);
char *kn_attn_simple_source(const kn_attn_spec *s, char *err, size_t err_size);
char *kn_attn_decode_source(const kn_attn_spec *s, char *err, size_t err_size);
char *kn_attn_combine_source(const kn_attn_spec *s, char *err, size_t err_size);
char *kn_attn_append_source(const kn_attn_spec *s, char *err, size_t err_size);
/* The flash kernel on tensor cores (e_attn_tc.c): float16 / bfloat16, head
 * dim 32, 64 or 128; 4 warps of 16 query rows, 64-key tiles in shared
 * memory, S = Q·Kᵀ and O += P·V with mma.sync m16n8k16 (float32
 * accumulation; P rounded to the input dtype as FlashAttention-2 does),
 * online softmax on the accumulator fragments. Same args and grid
 * (kn_attn_tc_grid) as kn_flash_attn. */
char *kn_attn_flash_tc_source(const kn_attn_spec *s, char *err, size_t err_size);
#define KN_ATTN_FLASH_TC_ENTRY "kn_flash_attn_tc"
#define KN_FLASH_TC_BM 64
kn_dim3 kn_attn_tc_grid(int64_t batch, int64_t qh, int64_t sq);
/* shared by the generators */
void kn_attn_preamble(kn_sb *sb, const kn_attn_spec *s);
/* u32/u16, kn_f2t (float -> T), kn_pack (two T in a u32) and kn_mma (c +=
 * a * b, mma.sync m16n8k16 with float32 accumulators; emulated from the
 * warp's gathered fragments under KN_EMU_COOP) for the T the source has
 * typedef'd: float16 or bfloat16 (e_attn_tc.c; also used by e_nbits_tc.c). */
void kn_mma_helpers(kn_sb *sb, kn_dtype t);
char *kn_attn_finish(kn_sb *sb, char *err, size_t n);
bool kn_attn_check_spec(const kn_attn_spec *s, char *err, size_t n);
#define KN_ATTN_FLASH_ENTRY "kn_flash_attn"
#define KN_ATTN_SIMPLE_ENTRY "kn_simple_attn"
#define KN_ATTN_DECODE_ENTRY "kn_decode_attn"
#define KN_ATTN_COMBINE_ENTRY "kn_decode_combine"
#define KN_ATTN_APPEND_ENTRY "kn_kv_append"
/* The append with rotary embedding (kiln.PagedAttention rotary = 1,
 * passes/kv_rotary.c): one thread per element of the new K (rotated
 * rotate-half, as kiln.RotaryHalf, rounded to the input dtype, then
 * appended) and V, then of Q (rotated into a buffer the attention kernels
 * read as Q). Args: k_new, v_new, kpool, vpool, table, past, params
 * (kn_paged_params), q, q_rotated, cos, sin, kn_rope_params. Grid: over
 * the K/V elements plus the Q elements. */
char *kn_attn_append_rope_source(const kn_attn_spec *s, char *err, size_t err_size);
#define KN_ATTN_APPEND_ROPE_ENTRY "kn_kv_append_rope"
/* cos and sin element strides over [batch, seq, head_dim] (0 where they
 * broadcast; they are 1 on the heads axis). */
typedef struct kn_rope_params {
    int64_t cst[3], sst[3];
} kn_rope_params;

/* Launch shapes. rows_per_batch = qh * sq. */
kn_dim3 kn_attn_flash_grid(int64_t batch, int64_t qh, int64_t sq);
kn_dim3 kn_attn_decode_grid(int64_t batch, int64_t qh, int64_t sq, int64_t n_split);
/* Key splits for the decode kernel: enough blocks to fill `sms` SMs
 * about twice, at least 64 keys per split, at most KN_DECODE_MAX_SPLIT. */
int64_t kn_attn_decode_splits(int64_t batch, int64_t qh, int64_t sq, int64_t max_keys, int sms);
/* Bytes of the decode partials: per (split, row) a max, a sum and D floats. */
uint64_t kn_decode_partial_bytes(int64_t batch, int64_t qh, int64_t sq, int64_t n_split, int head_dim);
/* Bytes of the decode kernel's counters: a u32 per (batch, row). */
uint64_t kn_decode_counter_bytes(int64_t batch, int64_t qh, int64_t sq);

#endif
