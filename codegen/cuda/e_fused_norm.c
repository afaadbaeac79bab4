/* CUDA emitter for RMSNormalization (made by passes/fuse_norm.c from the
 * decomposed RMSNorm of Llama/Qwen2 exports): one block per row, the
 * mean square in float32 (double for float64), the kernel of
 * e_row_norm.c (norm_kernels.h). */
#include "codegen/cuda/norm_kernels.h"

kn_status kn_emit_RMSNormalization(kn_emit *e) { return kn_emit_row_norm(e, KN_ROW_RMS); }
