/* CUDA emitters for RMSNormalization (made by passes/fuse_norm.c from the
 * decomposed RMSNorm of Llama/Qwen2 exports), kiln.SkipRMSNorm and
 * kiln.SkipLayerNorm (passes/fuse_skip_norm.c: the residual Add, the sum
 * written, then the norm, in one kernel): one block per row, the mean square in float32
 * (double for float64), the kernels of e_row_norm.c (norm_kernels.h). */
#include "codegen/cuda/norm_kernels.h"

kn_status kn_emit_RMSNormalization(kn_emit *e) { return kn_emit_row_norm(e, KN_ROW_RMS); }

kn_status kn_emit_KILN_SkipRMSNorm(kn_emit *e) { return kn_emit_row_norm(e, KN_ROW_SKIP_RMS); }

kn_status kn_emit_KILN_SkipLayerNorm(kn_emit *e) { return kn_emit_row_norm(e, KN_ROW_SKIP_LAYER); }
