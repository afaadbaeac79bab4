/* A session's internals, shared by session.c (binding and forward) and
 * generate.c (the generation loop). */
#ifndef KILN_RUNTIME_SESSION_IMPL_H
#define KILN_RUNTIME_SESSION_IMPL_H

#include "ir/ir.h"
#include "kiln/cuda.h"
#include "kiln/session.h"
#include "runtime/cpu/kernel.h"
#include "runtime/kv_cache.h"

typedef enum input_kind { IN_IDS, IN_MASK, IN_POS, IN_PAST } input_kind;

typedef struct input_role {
    input_kind kind;
    kn_dtype dtype;
    int64_t heads, dim;  /* IN_PAST: [batch, heads, past, dim] */
    uint32_t past_index; /* IN_PAST: which past input, in graph order */
} input_role;

typedef struct sess_seq {
    bool used;
    uint32_t len;          /* tokens run so far */
    int64_t *hist;         /* those tokens (no-cache mode reruns them) */
    uint32_t cap_hist;
    uint32_t kv_id;        /* KN_CACHE_PAGED: the cache's sequence */
    kn_rt_tensor **past;   /* KN_CACHE_TENSORS: the last presents, per past input */
} sess_seq;

struct kn_session {
    const kn_allocator *a;
    kn_diag *d;
    const kn_graph *g;
    const char *file;
    kn_cache_kind cache;
    bool no_cache;
    uint32_t max_seq_len;
    uint32_t vocab;
    input_role *roles;     /* per graph input */
    uint32_t n_past;
    uint32_t *present_out; /* KN_CACHE_TENSORS: output index of each past input's present */
    uint32_t logits_out;
    kn_kv_cache *kv;       /* KN_CACHE_PAGED */
    sess_seq *seqs;
    uint32_t n_seqs, cap_seqs;
    float *last;           /* the last forward's last-token logits (vocab floats) */
    uint32_t cap_last;
    struct kn_session_cuda *cuda; /* the CUDA backend (session_cuda.c), else NULL: the CPU */
    bool one_token;        /* the CPU on a graph whose input_ids is static [1, 1] (the graph of a
                            * target-cuda decoder plan): a forward runs its tokens one at a time */
};

/* The CPU session's setup over `plan` (kn_session_create); with
 * host_pools false the paged cache keeps tables only (its pools live on a
 * device). */
kn_status kn_session_create_on(const kn_graph *plan, const kn_session_options *o, const kn_allocator *a, kn_diag *d,
                               bool host_pools, kn_session **out);
/* The CUDA backend's forward of n tokens after the q->len cached ones
 * (session_cuda.c), and its teardown. */
kn_status kn_session_cuda_forward(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n, float *logits_out);
/* The same, then the next token sampled on the device (*token; s->last is
 * not updated): smp->output and smp->row are set here. */
kn_status kn_session_cuda_forward_sample(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n,
                                         const struct kn_cuda_sample *smp, int64_t *token);
/* Whether the CUDA session's programs carry the sampling kernels. */
bool kn_session_cuda_can_sample(const kn_session *s);
/* kn_session_forward; with smp (CUDA sessions only) the next token is
 * sampled on the device into *token instead of logits coming back. */
kn_status kn_session_forward_on(kn_session *s, uint32_t seq, const int64_t *tokens, uint32_t n, float *logits_out,
                                const struct kn_cuda_sample *smp, int64_t *token);
void kn_session_cuda_free(kn_session *s);
/* kn_session_forward_batch; with smp (a CUDA session with batched decode
 * programs only) the next ids are sampled on the device, draw u[i] for
 * row i, into next[i] instead of logits coming back. */
kn_status kn_session_forward_batch_on(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                      float *logits_out, const struct kn_cuda_sample *smp, const double *u,
                                      int64_t *next);
/* A batched decode program ([B, 1], B above the last one's) for the CUDA
 * session (owned when `own`, also on failure); the first reserves the
 * scratch sequence's block. */
kn_status kn_session_cuda_add_batch(kn_session *s, kn_graph *g, bool own, bool no_graph);
/* The largest B of the CUDA session's batched decode programs, 0 for none
 * (or a CPU session). */
uint32_t kn_session_cuda_batch_rows(const kn_session *s);
/* One decode step of n sequences (checked by kn_session_forward_batch,
 * their hist grown by one) through the batched decode programs: logits
 * rows into logits_out (may be NULL), or with smp the next ids sampled on
 * the device with draws u[i] into next[i]. */
kn_status kn_session_cuda_forward_batch(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                        float *logits_out, const struct kn_cuda_sample *smp, const double *u,
                                        int64_t *next);
/* The largest B of the CUDA session's batched prefill programs ([B, P]),
 * 0 for none. */
uint32_t kn_session_cuda_prefill_rows(const kn_session *s);
/* P: the CUDA session's prefill program's new tokens per run. */
uint32_t kn_session_cuda_prefill_chunk(const kn_session *s);
/* The prompts of n sequences (checked, their hist holding them, q->len
 * not yet advanced) through the batched prefill programs, the next ids
 * sampled on the device with draws u[i] into next[i]; done[i] (n of them)
 * is scratch. Every prompt has at least 2 tokens and q->len + its chunks
 * of P within the maximum sequence length. */
kn_status kn_session_cuda_prefill_batch(kn_session *s, const uint32_t *seqs, const int64_t *const *ids,
                                        const uint32_t *lens, uint32_t n, const struct kn_cuda_sample *smp,
                                        const double *u, int64_t *next, uint32_t *done);
/* Whether n prompts can go through kn_session_prefill_batch_on: a session
 * that prefills in batches, n > 1, each prompt of 2 tokens or more whose
 * chunks of P fit in its sequence. */
bool kn_session_prefill_batch_fits(kn_session *s, const uint32_t *seqs, const uint32_t *lens, uint32_t n);
/* Several prompts prefilled together on the device (the caller checked
 * kn_session_prefill_batch_fits), each sequence's next id sampled with
 * draw u[i] into next[i]; an error leaves every sequence's length as it
 * was. */
kn_status kn_session_prefill_batch_on(kn_session *s, const uint32_t *seqs, const int64_t *const *prompts,
                                      const uint32_t *lens, uint32_t n, const struct kn_cuda_sample *smp,
                                      const double *u, int64_t *next);
/* s->last holds at least v floats; s->vocab set on first use. */
kn_status kn_session_keep_logits(kn_session *s, int64_t v);

/* Metadata `key` of the plan (also as a plan stores it: meta.KEY), or NULL. */
const char *kn_session_meta(const kn_graph *g, const char *key);
sess_seq *kn_session_seq(const kn_session *s, uint32_t id);
/* KN_ERR_INVALID with a message when an id is outside the vocabulary. */
kn_status kn_session_check_ids(kn_session *s, const int64_t *ids, uint32_t n, const char *what);

#endif
