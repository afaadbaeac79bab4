/* Row math shared by the attention kernels (k_fused_attn.c: ONNX
 * Attention; k_paged_attn.c: kiln.PagedAttention over the KV cache). */
#ifndef KILN_CPU_ATTN_H
#define KILN_CPU_ATTN_H

#include "runtime/cpu/kernel.h"

/* The additive bias of mask element `at`: a bool mask gives 0 (true) or
 * -inf (false), a float one its value. */
double kn_attn_mask_bias(const kn_rt_tensor *mask, int64_t at);

/* Softmax of the n scores sv in place, in double (max subtracted, NaN
 * propagated); a row whose bias was -inf everywhere (all_masked) becomes
 * all zeros. */
void kn_attn_softmax_row(double *sv, int64_t n, bool all_masked);

#endif
