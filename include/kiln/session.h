/* kiln sessions (libkiln_rt): run a decoder plan token by token with a KV
 * cache owned by the runtime, and generate text. docs/llm.md explains the
 * cache, the plan interface a session expects and the generation loop. */
#ifndef KILN_SESSION_H
#define KILN_SESSION_H

#include "kiln/kiln.h"
#include "kiln/sampler.h"
#include "kiln/tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kn_session kn_session;

typedef struct kn_session_options {
    uint32_t max_seq_len;  /* tokens one sequence may hold; 0: the plan's (kiln.kv.max_seq_len), 2048 for
                            * a plan without a paged cache */
    uint64_t kv_cache_mem; /* bytes of the paged cache; 0: the plan's */
    uint32_t block_size;   /* tokens per cache block; 0: the plan's (16 by default) */
    bool no_cache;         /* recompute the whole sequence at every step (same plan, empty cache) */
    bool no_cuda_graph;    /* CUDA sessions: decode steps launch kernel by kernel instead of replaying
                            * a CUDA graph (kiln run --no-cuda-graph) */
} kn_session_options;

/* All zero: the plan's settings, with the cache. */
void kn_session_options_defaults(kn_session_options *o);

typedef enum kn_cache_kind {
    KN_CACHE_PAGED,   /* the plan went through the kv-cache pass: the runtime's paged cache */
    KN_CACHE_TENSORS, /* the plan keeps past/present inputs and outputs: the session feeds presents back */
    KN_CACHE_NONE     /* no past inputs: every step recomputes the sequence */
} kn_cache_kind;

typedef struct kn_session_info {
    kn_cache_kind cache;
    bool no_cache;
    uint32_t vocab;        /* logits per token (0 while unknown: a dynamic dim, before the first run) */
    uint32_t max_seq_len;
    /* the paged cache (KN_CACHE_PAGED), else 0 */
    uint32_t n_layers, kv_heads, head_dim, block_size, n_blocks, free_blocks;
    uint64_t kv_bytes;
    kn_dtype kv_dtype;     /* of the cache's keys and values (kiln.kv.dtype): float32, float16, bfloat16 */
} kn_session_info;

/* A session over `plan` (a graph from kn_plan_load, or any graph the CPU
 * backend runs) on the CPU backend. The plan must stay alive while the
 * session does. Its inputs must be input_ids [batch, seq] (int64 or int32)
 * and any of attention_mask [batch, past + seq], position_ids [batch, seq]
 * and past* KV inputs (only those the plan has: after the kv-mask pass a
 * plan usually has neither attention_mask nor past inputs); the first output (or the one named "logits") gives
 * [batch, seq, vocab]. Returns KN_ERR_INVALID (an input the session cannot
 * fill, bad options, a cache that does not hold one block),
 * KN_ERR_LIMIT, KN_ERR_NOMEM, with messages in d. `o` and `a` may be NULL. */
kn_status kn_session_create(const kn_graph *plan, const kn_session_options *o, const kn_allocator *a, kn_diag *d,
                            kn_session **out);

/* A session on the CUDA backend (runtime/session_cuda.c) over a decoder
 * compiled for target cuda twice, whose kiln.PagedAttention steps read the
 * session's device KV cache (causal, no mask): `prefill` for [1, P] new
 * tokens and `decode` for [1, 1] (graphs from kn_plan_load; they must stay
 * alive while the session does). The host keeps the block tables; a
 * forward of n tokens runs prefill chunks of P (the last one padded: the
 * causal attention keeps padding out of the real tokens, and later tokens
 * overwrite it in the cache), then the decode plan for a single token.
 * Inputs as for kn_session_create; the plans' attention_mask and past*
 * inputs are filled with their compiled shapes (the graphs must not need
 * them: the mask replaced by the causal flag). Options: max_seq_len at
 * most the plans', block_size 0 or the plans', no_cache unsupported;
 * kv_cache_mem sizes the device pools. KN_ERR_INVALID (plans that do not
 * fit together or this interface), KN_ERR_UNSUPPORTED (no GPU, no CUDA
 * code), KN_ERR_NOMEM, with messages in d. */
kn_status kn_session_create_cuda(const kn_graph *prefill, const kn_graph *decode, const kn_session_options *o,
                                 const kn_allocator *a, kn_diag *d, kn_session **out);
/* A plan from kiln compile --target cuda on a decoder holds two CUDA
 * programs over one graph and one copy of the weights: the decode program
 * ([1, 1] new tokens, the plan's main CUDA sections) and a prefill program
 * ([1, P], docs/plan-format.md). kn_plan_is_cuda_decoder says whether
 * `plan` (from kn_plan_load) is such a plan. */
bool kn_plan_is_cuda_decoder(const kn_graph *plan);
/* Opens the prefill program of such a plan as a graph of its own for
 * kn_session_create_cuda (its inputs of the prefill shapes); it borrows
 * the plan's bytes: destroy it before `plan`. KN_ERR_UNSUPPORTED (not such
 * a plan), KN_ERR_INVALID (a corrupted section), KN_ERR_NOMEM. */
kn_status kn_plan_load_cuda_prefill(const kn_graph *plan, const kn_allocator *a, kn_diag *d, kn_graph **out);
/* Batched decode programs of such a plan (kiln compile --decode-batch:
 * the graph lowered for [B, 1]): how many (0 for other plans), and
 * program k (0-based) opened as kn_plan_load_cuda_prefill opens the
 * prefill one. */
uint32_t kn_plan_cuda_decode_batches(const kn_graph *plan);
kn_status kn_plan_load_cuda_decode_batch(const kn_graph *plan, uint32_t k, const kn_allocator *a, kn_diag *d,
                                         kn_graph **out);

typedef enum kn_session_device {
    KN_DEVICE_CPU,  /* the CPU backend (kn_session_create) */
    KN_DEVICE_CUDA, /* the CUDA backend on a target-cuda decoder plan; an error without a GPU */
    KN_DEVICE_AUTO  /* CUDA when the plan is a target-cuda decoder plan and a GPU is there, else the CPU */
} kn_session_device;

/* A session on `plan` on the device chosen: CPU as kn_session_create,
 * CUDA as kn_session_create_cuda on the plan's two programs (the session
 * owns the prefill graph; `plan` must outlive it). KN_DEVICE_CUDA fails
 * with KN_ERR_UNSUPPORTED and a message saying why (the driver's note
 * when there is no GPU, or a plan without the two programs). */
kn_status kn_session_create_device(const kn_graph *plan, kn_session_device dev, const kn_session_options *o,
                                   const kn_allocator *a, kn_diag *d, kn_session **out);
/* Whether the session runs on the CUDA backend. */
bool kn_session_on_cuda(const kn_session *s);
void kn_session_destroy(kn_session *s);
void kn_session_get_info(const kn_session *s, kn_session_info *out);

/* Adds an empty sequence; *seq receives its id. KN_ERR_NOMEM. */
kn_status kn_session_add_sequence(kn_session *s, uint32_t *seq);
/* Frees a sequence: its cache blocks go back to the pool. KN_ERR_INVALID
 * for an unknown id. */
kn_status kn_session_free_sequence(kn_session *s, uint32_t seq);
/* Tokens the sequence holds (0 for an unknown id). */
uint32_t kn_session_sequence_length(const kn_session *s, uint32_t seq);

/* Runs `n` tokens of sequence `seq` through the plan (n > 1: a prefill, n
 * = 1: a decode step; the same plan) and appends them to the sequence.
 * logits_out (may be NULL) receives the last token's logits (vocab
 * floats). KN_ERR_INVALID: unknown sequence, n = 0, an id outside the
 * vocabulary, the sequence would exceed max_seq_len; KN_ERR_LIMIT: the
 * cache has no free block (the sequence is unchanged); errors of the run. */
kn_status kn_session_forward(kn_session *s, uint32_t seq, const int64_t *tokens, uint32_t n, float *logits_out);

/* kn_session_forward, then the next token chosen greedily (argmax, the
 * lowest id on ties) into *next: on the device when the session runs on
 * CUDA with a plan that carries the sampling kernels (only the id comes
 * back, and the step is a CUDA graph replay unless no_cuda_graph), else
 * from the logits on the host. Statuses as kn_session_forward. */
kn_status kn_session_forward_greedy(kn_session *s, uint32_t seq, const int64_t *tokens, uint32_t n, int64_t *next);

/* One decode step of n sequences: tokens[i] is the next token of sequence
 * seqs[i] (distinct ids; the sequences may hold different numbers of
 * tokens). logits_out (may be NULL) receives [n, vocab]: row i the logits
 * after seqs[i]'s token. When kn_session_batched(s), one run of the plan
 * at [n, 1] (each row with its own block table and past; on the CPU the
 * logits are bit-identical to n kn_session_forward calls); otherwise the
 * n tokens run one after another. The checks come first, so KN_ERR_INVALID (n = 0, an
 * unknown or repeated id, an id outside the vocabulary, a sequence at
 * max_seq_len) and KN_ERR_LIMIT (the pool lacks the blocks the step
 * needs) leave every sequence unchanged; then the errors of the run. */
kn_status kn_session_forward_batch(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                   float *logits_out);
/* kn_session_forward_batch, then each sequence's next token chosen
 * greedily into next[i]: on the device when the session runs on CUDA with
 * batched decode programs carrying the sampling kernels (only the ids
 * come back), else from the logits on the host. */
kn_status kn_session_forward_batch_greedy(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                          int64_t *next);
/* Whether kn_session_forward_batch runs its sequences together: a CPU
 * session with the paged cache whose plan reads neither attention_mask
 * nor past inputs (the kv-mask pass removed them) and has a dynamic batch
 * dim (one run of the plan), or a CUDA session on a plan with batched
 * decode programs (kiln compile --decode-batch: the smallest program of B
 * >= n rows, spare rows on a scratch block; more than the largest B: in
 * chunks of it). */
bool kn_session_batched(const kn_session *s);

/* Whether the session prefills several prompts in one run: a CUDA session
 * on a plan with batched prefill programs (kiln compile --prefill-batch:
 * [B, P] programs) that carry the sampling kernels. */
bool kn_session_prefill_batched(const kn_session *s);
/* kn_session_forward of prompts[i] (lens[i] tokens) for each sequence
 * seqs[i], then its next token chosen greedily into next[i]. When
 * kn_session_prefill_batched and every prompt has at least 2 tokens and
 * fits in whole chunks of P, the prompts go together through the batched
 * prefill programs (row r the next chunk of the r-th prompt still going;
 * the smallest program of B >= the prompts left, else the largest; spare
 * rows on the scratch sequence; a last prompt going alone finishes on the
 * [1, P] program) with the argmax on the device; otherwise
 * one prompt after another as kn_session_forward_greedy. */
kn_status kn_session_prefill_batch_greedy(kn_session *s, const uint32_t *seqs, const int64_t *const *prompts,
                                          const uint32_t *lens, uint32_t n, int64_t *next);

/* Called with every new token as it is produced: the prompt's index, the
 * token id, the user pointer. A non-zero return stops that prompt. */
typedef int (*kn_token_fn)(uint32_t prompt, int64_t token, void *user);

typedef struct kn_generate_options {
    uint32_t max_new_tokens;          /* 0: until a stop or the sequence is full */
    const int64_t *stop_ids;          /* generation of a prompt ends after one of these (it is kept) */
    uint32_t n_stop_ids;
    const char *const *stop_strings;  /* ... or once the decoded new text contains one (needs tokenizer) */
    uint32_t n_stop_strings;
    const kn_tokenizer *tokenizer;    /* for stop strings; may be NULL */
    kn_sampling sampling;             /* see kiln/sampler.h; prompt i uses seed + i */
    kn_token_fn on_token;             /* may be NULL */
    void *user;
} kn_generate_options;

/* Greedy, no stops, no callback, max_new_tokens 0. */
void kn_generate_options_defaults(kn_generate_options *o);

typedef enum kn_stop_reason {
    KN_STOP_MAX_TOKENS, /* max_new_tokens reached */
    KN_STOP_ID,         /* a stop id */
    KN_STOP_STRING,     /* a stop string */
    KN_STOP_CALLBACK,   /* on_token returned non-zero */
    KN_STOP_FULL        /* the sequence reached max_seq_len */
} kn_stop_reason;

typedef struct kn_generate_result {
    int64_t *tokens;       /* the new tokens (owned; kn_generate_results_free) */
    uint32_t n_tokens;
    uint32_t n_prompt;     /* prompt tokens */
    kn_stop_reason stop;
    double prefill_s;      /* seconds in the prompt's forward */
    double decode_s;       /* seconds in its one-token forwards */
    uint32_t n_decode;     /* one-token forwards run */
} kn_generate_result;

/* Generates from n_prompts prompts (prompts[i]: prompt_lens[i] ids), each
 * in its own sequence of the cache: all prompts are prefilled, then
 * decoded in rounds (one kn_session_forward_batch of the live prompts per
 * round when kn_session_batched, else one token each in turn; the same
 * tokens either way); sequences are freed at the end.
 * results (n_prompts entries, may be NULL) receive the new tokens and
 * timings. Before anything runs, KN_ERR_INVALID for an empty prompt, an
 * id outside the vocabulary, a prompt longer than max_seq_len, stop
 * strings without a tokenizer, bad sampling parameters; then the errors of
 * kn_session_forward (KN_ERR_LIMIT: the cache is full). On a CUDA session
 * whose plan carries the sampling kernels, and without a repetition
 * penalty, each token is sampled on the device (only its id comes back)
 * with the draws of the prompt's sampler, so the tokens are the CPU
 * sampler's for the same logits and seed (docs/llm.md "On the GPU"). */
kn_status kn_session_generate(kn_session *s, const int64_t *const *prompts, const uint32_t *prompt_lens,
                              uint32_t n_prompts, const kn_generate_options *o, kn_generate_result *results);
void kn_generate_results_free(kn_session *s, kn_generate_result *results, uint32_t n);

#ifdef __cplusplus
}
#endif
#endif
