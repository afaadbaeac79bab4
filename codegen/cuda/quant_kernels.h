/* MatMulNBits kernels for target cuda (com.microsoft MatMulNBits, the
 * weight-only linear layer Y[m, n] = sum_k A[m, k] W[n, k] + bias[n],
 * W[n, k] = (code - zero point) * scale of k's block): CUDA C source
 * generators shared by the MatMulNBits emitter (e_quant.c) and
 * kiln-quant-check (tools/quant_check.c), which runs them against a
 * double reference under emulation and on a GPU.
 *
 *   simple  one thread per output element, blocks summed in double (any
 *           bits, block size and dtype; e_nbits_kernels.c)
 *   gemv    a warp per output column: lanes stride over the column's
 *           packed row as 32-bit words (32/bits codes per load, a warp
 *           reads 128 contiguous bytes), dequantize in registers, float
 *           accumulators for up to 4 rows of A, a 5-step __shfl_xor_sync
 *           reduction; gridDim.y takes further groups of 4 rows
 *           (e_nbits_kernels.c)
 *   tc      tensor cores (e_nbits_tc.c): float16 / bfloat16 A, 4-bit
 *           weights; 64x64 output tiles per block of 4 warps (2x2, 32x32
 *           each), K in steps of 32: the A tile and the dequantized weight
 *           tile (rounded to A's dtype) in shared memory, mma.sync m16n8k16
 *           with float32 accumulators
 *
 * Which one a node gets is decided at compile time from its shape and
 * dtypes (kn_nbits_choose): rows = numel(A) / K;
 *   tc      when A is float16/bfloat16, bits == 4, block_size % 8 == 0
 *           and rows >= KN_NBITS_TC_MIN_ROWS;
 *   gemv    else when a 32-bit word of codes never straddles two blocks
 *           (block_size * bits % 32 == 0) and rows < KN_NBITS_TC_MIN_ROWS;
 *   simple  otherwise (float32 A with many rows, odd block sizes, K >= 2^30). */
#ifndef KILN_CODEGEN_CUDA_QUANT_KERNELS_H
#define KILN_CODEGEN_CUDA_QUANT_KERNELS_H

#include "codegen/cuda/emit.h"

#define KN_NBITS_TC_MIN_ROWS 16
#define KN_NBITS_GEMV_ROWS 4   /* rows of A per warp (accumulators per lane) */
#define KN_NBITS_GEMV_WARPS 4  /* warps (= output columns) per block */
#define KN_NBITS_TC_BM 64
#define KN_NBITS_TC_BN 64
#define KN_NBITS_TC_THREADS 128

typedef enum kn_nbits_kind { KN_NBITS_SIMPLE, KN_NBITS_GEMV, KN_NBITS_TC } kn_nbits_kind;

/* What a kernel source depends on. zp_dtype: KN_U8 packed zero points
 * (bits per block, low bits first, a row of ceil(nblk * bits / 8) bytes per
 * column), a float dtype for one float zero point per block, or
 * KN_UNDEFINED for none (2^(bits-1)). bias_dtype: KN_UNDEFINED for none. */
typedef struct kn_nbits_spec {
    kn_dtype a_dtype;    /* A and Y: float32, float16 or bfloat16 */
    kn_dtype sc_dtype;   /* scales [N, nblk] */
    kn_dtype zp_dtype;
    kn_dtype bias_dtype;
    int bits;            /* 2, 4 or 8 */
    bool word_blob;      /* simple: blob % 4 == 0 (whole 32-bit words per block) */
} kn_nbits_spec;

/* The kernels' by-value parameters (8-byte fields). rows: of A (numel / K);
 * total = rows * n; nblk = ceil(k / bs); blob = bs * bits / 8 bytes;
 * zrow = ceil(nblk * bits / 8) bytes of packed zero points per column. */
typedef struct kn_nbits_params {
    int64_t total, n, k, nblk, blob, bs, zrow, rows;
} kn_nbits_params;

/* Kernel args, in order: a, b (uint8 codes [N, nblk, blob]), scales,
 * zero points (only when spec.zp_dtype is set), bias (only when
 * spec.bias_dtype is set), y, params. */

/* Sources (malloc'd, NUL-terminated; NULL with a reason in err for a spec
 * the kernel does not handle). */
char *kn_nbits_simple_source(const kn_nbits_spec *s, char *err, size_t err_size);
char *kn_nbits_gemv_source(const kn_nbits_spec *s, char *err, size_t err_size);
char *kn_nbits_tc_source(const kn_nbits_spec *s, char *err, size_t err_size);
#define KN_NBITS_SIMPLE_ENTRY "matmul_nbits"
#define KN_NBITS_GEMV_ENTRY "kn_nbits_gemv"
#define KN_NBITS_TC_ENTRY "kn_nbits_tc"

/* shared by the generators (e_nbits_kernels.c) */
bool kn_nbits_check_spec(const kn_nbits_spec *s, char *err, size_t n);
void kn_nbits_preamble(kn_sb *sb, const kn_nbits_spec *s);
char *kn_nbits_finish(kn_sb *sb, char *err, size_t n);

/* The kernel for a shape (the rule above). */
kn_nbits_kind kn_nbits_choose(const kn_nbits_spec *s, const kn_nbits_params *p);
/* Launch shapes: grid and threads per block for a kind. */
kn_dim3 kn_nbits_grid(kn_nbits_kind kind, const kn_nbits_params *p);
uint32_t kn_nbits_threads(kn_nbits_kind kind);

#endif
