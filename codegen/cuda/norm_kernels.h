/* Row normalizations for target cuda (codegen/cuda/e_row_norm.c): one
 * thread block per row, shared by the RMSNormalization (e_fused_norm.c),
 * LayerNormalization (e_reduce_norm.c), kiln.SkipRMSNorm and
 * kiln.SkipLayerNorm emitters (the skip forms add the residual first,
 * rounded to the dtype as the Add, and write the sum).
 *
 * A row is the `cols` elements from `axis` on. The block's threads stride
 * over it (coalesced; 16 bytes at a time when the row length and the
 * pointers allow it), reduce their partial sums with warp shuffles and
 * one shared-memory exchange between warps, then write the row. Statistics
 * in float32 for float16/bfloat16/float32 tensors, in double when any of
 * them is float64. Scale and bias broadcast over the row shape through
 * per-dim strides; the common forms (a scalar, or a suffix of the row
 * shape such as a per-channel vector over the last axis) take a plain
 * index instead of the per-dim walk. Checked under emulation against the
 * CPU reference by test_cuda_norm. */
#ifndef KILN_CODEGEN_CUDA_NORM_KERNELS_H
#define KILN_CODEGEN_CUDA_NORM_KERNELS_H

#include "codegen/cuda/emit.h"

typedef enum kn_row_norm_kind {
    KN_ROW_RMS,      /* RMSNormalization(X, scale) -> Y */
    KN_ROW_LAYER,    /* LayerNormalization(X, Scale, [B]) -> Y, [Mean], [InvStdDev] */
    KN_ROW_SKIP_RMS, /* kiln.SkipRMSNorm(X, skip, scale) -> Y, [sum] */
    KN_ROW_SKIP_LAYER, /* kiln.SkipLayerNorm(X, skip, Scale, [B]) -> Y, [sum] */
} kn_row_norm_kind;

/* Threads per block for rows of `cols` elements of `elem_size` bytes: one
 * 16-byte chunk a thread where the row splits into them (the vector
 * form), else about four elements a thread; a multiple of 32 from 32 to
 * 1024. */
uint32_t kn_row_norm_threads(int64_t cols, uint32_t elem_size);

/* Emits the node's kernel and its launch (grid: one block per row, capped,
 * the blocks stride over the rest). KN_ERR_UNSUPPORTED for dtypes other
 * than float16/bfloat16/float32/float64; KN_ERR_INVALID for an axis out of
 * range or a scale/bias/skip that does not fit the row shape. */
kn_status kn_emit_row_norm(kn_emit *e, kn_row_norm_kind kind);

#endif
