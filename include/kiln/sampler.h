/* Token sampling for text generation (libkiln_rt): greedy, temperature,
 * top-k and top-p (nucleus), reproducible for a given seed. */
#ifndef KILN_SAMPLER_H
#define KILN_SAMPLER_H

#include "kiln/kiln.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_sampling {
    float temperature;        /* <= 0: greedy (argmax, lowest id on ties) */
    uint32_t top_k;           /* 0: no top-k cut */
    float top_p;              /* >= 1 (or <= 0): no nucleus cut */
    float repetition_penalty; /* 1 (or 0): none; > 1 penalises ids already in the context */
    uint64_t seed;            /* same seed + same logits -> same tokens */
} kn_sampling;

/* Defaults: greedy, no cuts, no penalty, seed 0. */
void kn_sampling_defaults(kn_sampling *p);

typedef struct kn_sampler kn_sampler;

/* A sampler over a vocabulary of `vocab` ids (its own RNG state, seeded
 * from p->seed with splitmix64 into xoshiro256**, and scratch of about 17
 * bytes per id). `a` may be NULL (malloc). On success *out is the caller's,
 * freed with kn_sampler_destroy. KN_ERR_INVALID for bad parameters
 * (negative or NaN top_p, NaN/inf temperature, negative/NaN/inf
 * repetition_penalty, vocab 0, NULL p or out), KN_ERR_LIMIT (vocab too
 * large for size_t), KN_ERR_NOMEM; each with a message in `d`, *out NULL. */
kn_status kn_sampler_create(const kn_sampling *p, uint32_t vocab, const kn_allocator *a, kn_diag *d,
                            kn_sampler **out);
void kn_sampler_destroy(kn_sampler *s);

/* Picks the next id from `logits` (vocab floats; NaN counts as -inf).
 * `context`/`n_context`: ids so far, for the repetition penalty (may be
 * NULL/0; applied once per distinct id, ids out of range ignored). Logits
 * are not modified. Order (as Hugging Face's): repetition penalty,
 * temperature, top-k, top-p, then a draw from the softmax of what is left.
 * When every logit is -inf/NaN, or some are +inf, the greedy answer is
 * returned (lowest id among the largest). Returns -1 only when `s` or
 * `logits` is NULL. Not thread-safe per sampler (it owns RNG state). */
int64_t kn_sampler_pick(kn_sampler *s, const float *logits, const int64_t *context, uint32_t n_context);

/* The sampler's next uniform number in [0, 1) (53 random bits), advancing
 * its generator exactly as a draw of kn_sampler_pick does: the number the
 * GPU sampling kernels (codegen/cuda/sample_kernels.h) take per row so that
 * they pick the id the CPU sampler would. kn_sampler_pick draws only when
 * it samples (not for greedy answers). -1 when `s` is NULL. */
double kn_sampler_uniform(kn_sampler *s);

#ifdef __cplusplus
}
#endif
#endif
