/* Token sampling on the GPU (codegen/cuda/e_sample.c): CUDA C source for
 * greedy argmax and for temperature / top-k / top-p sampling with the
 * semantics of runtime/sampler.c (kn_sampler_pick without a repetition
 * penalty), one block of KN_SAMPLE_THREADS threads per row of logits. The
 * uniform number of each row's draw comes from the host (the sampler's own
 * generator: kn_sampler_uniform), so the device picks the id the CPU
 * sampler picks for the same draw; only the int32 ids come back.
 * Checked by kiln-quant-check (tools/quant_check.c) against kn_sampler_pick. */
#ifndef KILN_CODEGEN_CUDA_SAMPLE_KERNELS_H
#define KILN_CODEGEN_CUDA_SAMPLE_KERNELS_H

#include "codegen/cuda/emit.h"

#define KN_SAMPLE_THREADS 256
#define KN_SAMPLE_CHUNK 1024 /* candidates sorted in shared memory at a time */

/* By value (8-byte fields, then 4-byte ones). Logits of row r start at
 * r * stride elements. temperature, top_k, top_p as in kn_sampling. */
typedef struct kn_sample_params {
    int64_t rows, vocab, stride;
    float temperature, top_p;
    uint32_t top_k;
    int32_t pad_;
} kn_sample_params;

/* The source of both kernels for logits of dtype float32, float16 or
 * bfloat16 (malloc'd; NULL with a reason in err otherwise). Grid (rows),
 * KN_SAMPLE_THREADS threads, no dynamic shared memory.
 *   kn_sample_argmax(const T *logits, int *out, P p)
 *   kn_sample(const T *logits, const double *u, int *out, P p)
 *     u: one uniform number in [0, 1) per row (read only when the row is
 *     not decided greedily). */
char *kn_sample_source(kn_dtype logits_dtype, char *err, size_t err_size);
#define KN_SAMPLE_ARGMAX_ENTRY "kn_sample_argmax"
#define KN_SAMPLE_ENTRY "kn_sample"

struct kn_cu_program;

/* Appends both kernels (for logits of `logits_dtype`) to p's kernel table,
 * referenced by no step: kiln compile --target cuda on a decoder puts them
 * in the decode and prefill programs, and the CUDA executor launches them
 * by entry name after the steps (docs/plan-format.md "Sampling kernels").
 * Their images are compiled with the others by kn_cuda_compile. Entry
 * names are interned in g. KN_ERR_UNSUPPORTED (another dtype) or
 * KN_ERR_NOMEM, with a message in d. */
kn_status kn_cu_program_add_sampling(struct kn_cu_program *p, kn_graph *g, kn_dtype logits_dtype, kn_diag *d);

#endif
