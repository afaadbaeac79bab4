/* The generation loop (kn_session_generate): every prompt in its own
 * sequence, all prefilled, then decode steps until each stops (max tokens,
 * stop id or string, callback, full): one batched step of all live
 * prompts per round when the session batches (kn_session_batched), else
 * one step per live prompt in turn. */
#include "runtime/session_impl.h"
#include "ir/arena.h"

#include <math.h>
#include <string.h>
#include <time.h>

void kn_generate_options_defaults(kn_generate_options *o)
{
    memset(o, 0, sizeof *o);
    kn_sampling_defaults(&o->sampling);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct gen {
    uint32_t seq, index;
    bool has_seq, done;
    kn_sampler *smp;
    kn_generate_result r;
    uint32_t cap_tokens;
} gen;

/* Whether the new text of g contains a stop string. */
static kn_status stop_string_hit(kn_session *s, const kn_generate_options *o, const gen *g, bool *hit)
{
    *hit = false;
    if (!o->n_stop_strings)
        return KN_OK;
    int32_t *ids = kn_mem_alloc(s->a, ((size_t)g->r.n_tokens + 1) * sizeof *ids);
    if (!ids)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < g->r.n_tokens; i++)
        ids[i] = (int32_t)g->r.tokens[i];
    char *text = NULL;
    size_t len = 0;
    kn_status st = kn_tokenizer_decode(o->tokenizer, ids, g->r.n_tokens, false, &text, &len, s->d);
    kn_mem_free(s->a, ids);
    for (uint32_t k = 0; st == KN_OK && k < o->n_stop_strings && !*hit; k++)
        *hit = o->stop_strings[k][0] && strstr(text, o->stop_strings[k]) != NULL;
    kn_tokenizer_release(o->tokenizer, text);
    return st;
}

static kn_status validate(kn_session *s, const int64_t *const *prompts, const uint32_t *lens, uint32_t n,
                          const kn_generate_options *o)
{
    if (n == 0 || !prompts || !lens) {
        kn_diag_add(s->d, KN_ERROR, "%s: generate: no prompts", s->file);
        return KN_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "prompt %u", i);
        if (lens[i] == 0 || !prompts[i]) {
            kn_diag_add(s->d, KN_ERROR, "%s: generate: prompt %u is empty", s->file, i);
            return KN_ERR_INVALID;
        }
        if (lens[i] > s->max_seq_len) {
            kn_diag_add(s->d, KN_ERROR,
                        "%s: generate: prompt %u has %u tokens, more than the cache holds per sequence (max sequence "
                        "length %u)",
                        s->file, i, lens[i], s->max_seq_len);
            return KN_ERR_INVALID;
        }
        KN_TRY(kn_session_check_ids(s, prompts[i], lens[i], what));
    }
    if (o->n_stop_strings && !o->tokenizer) {
        kn_diag_add(s->d, KN_ERROR, "%s: generate: stop strings need a tokenizer", s->file);
        return KN_ERR_INVALID;
    }
    return KN_OK;
}

/* Whether the CUDA session samples on the device: its programs carry the
 * sampling kernels and there is no repetition penalty (which needs the
 * context: that case takes the logits back to the host sampler). */
static bool on_device(const kn_session *s, const kn_sampling *p)
{
    return s->cuda && (p->repetition_penalty == 0.0f || p->repetition_penalty == 1.0f) &&
           kn_session_cuda_can_sample(s);
}

/* Whether kn_sampler_pick draws for these parameters (it does not for the
 * greedy cases it can tell from them; it does not either for a row whose
 * largest logit is infinite, which the device cannot tell the host). */
static bool draws(const kn_sampling *p)
{
    if (p->temperature <= 0.0f || p->top_k == 1)
        return false;
    double inv_t = 1.0 / (double)p->temperature;
    return isfinite(inv_t) && inv_t <= 1e30;
}

/* Runs n tokens of prompt i's sequence and takes the next token: on the
 * device (the draw from the prompt's sampler, so the ids are the CPU
 * sampler's for the same seed) or from the logits with kn_sampler_pick. */
static kn_status forward_pick(kn_session *s, const kn_generate_options *o, gen *g, const int64_t *ids, uint32_t n,
                              int64_t *t)
{
    const kn_sampling *p = &o->sampling;
    if (g->smp && on_device(s, p)) {
        kn_cuda_sample smp = {p->temperature, p->top_k, p->top_p, 0.0, 0, 0};
        if (draws(p))
            smp.u = kn_sampler_uniform(g->smp);
        return kn_session_forward_on(s, g->seq, ids, n, NULL, &smp, t);
    }
    KN_TRY(kn_session_forward(s, g->seq, ids, n, NULL));
    if (!g->smp) { /* the vocabulary was known only after the first run */
        kn_sampling sp = o->sampling;
        sp.seed += g->index;
        KN_TRY(kn_sampler_create(&sp, s->vocab, s->a, s->d, &g->smp));
    }
    sess_seq *q = kn_session_seq(s, g->seq);
    *t = kn_sampler_pick(g->smp, s->last, q->hist, q->len);
    return KN_OK;
}

kn_status kn_session_forward_greedy(kn_session *s, uint32_t seq, const int64_t *tokens, uint32_t n, int64_t *next)
{
    *next = -1;
    kn_sampling p;
    kn_sampling_defaults(&p);
    if (on_device(s, &p)) {
        kn_cuda_sample smp = {0.0f, 0, 1.0f, 0.0, 0, 0};
        return kn_session_forward_on(s, seq, tokens, n, NULL, &smp, next);
    }
    KN_TRY(kn_session_forward(s, seq, tokens, n, NULL));
    uint32_t best = 0;
    float bw = -INFINITY; /* NaN counts as -inf, as in the sampler */
    for (uint32_t i = 0; i < s->vocab; i++)
        if (!isnan(s->last[i]) && s->last[i] > bw)
            bw = s->last[i], best = i;
    *next = best;
    return KN_OK;
}

kn_status kn_session_forward_batch_greedy(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                          int64_t *next)
{
    for (uint32_t i = 0; i < n; i++)
        next[i] = -1;
    kn_sampling p;
    kn_sampling_defaults(&p);
    if (on_device(s, &p) && kn_session_batched(s)) {
        kn_cuda_sample smp = {0.0f, 0, 1.0f, 0.0, 0, 0};
        double *u = kn_mem_alloc(s->a, ((size_t)n + 1) * sizeof *u);
        if (!u)
            return KN_ERR_NOMEM;
        memset(u, 0, ((size_t)n + 1) * sizeof *u);
        kn_status st = kn_session_forward_batch_on(s, seqs, tokens, n, NULL, &smp, u, next);
        kn_mem_free(s->a, u);
        return st;
    }
    float *logits = NULL;
    if (s->vocab && !(logits = kn_mem_alloc(s->a, (size_t)n * s->vocab * sizeof *logits)))
        return KN_ERR_NOMEM;
    kn_status st = logits ? kn_session_forward_batch(s, seqs, tokens, n, logits) : KN_ERR_INVALID;
    if (!logits)
        kn_diag_add(s->d, KN_ERROR, "%s: batched decode step: the vocabulary is not known yet (run a forward first)",
                    s->file);
    for (uint32_t k = 0; st == KN_OK && k < n; k++) {
        const float *row = logits + (size_t)k * s->vocab;
        uint32_t best = 0;
        float bw = -INFINITY; /* NaN counts as -inf, as in the sampler */
        for (uint32_t i = 0; i < s->vocab; i++)
            if (!isnan(row[i]) && row[i] > bw)
                bw = row[i], best = i;
        next[k] = best;
    }
    kn_mem_free(s->a, logits);
    return st;
}

/* Records prompt i's next token t; decides whether the prompt goes on. */
static kn_status next_token(kn_session *s, const kn_generate_options *o, uint32_t i, gen *g, int64_t t)
{
    sess_seq *q = kn_session_seq(s, g->seq);
    KN_TRY(kn_mem_grow(s->a, (void **)&g->r.tokens, &g->cap_tokens, g->r.n_tokens + 1, sizeof *g->r.tokens));
    g->r.tokens[g->r.n_tokens++] = t;
    if (o->on_token && o->on_token(i, t, o->user)) {
        g->done = true;
        g->r.stop = KN_STOP_CALLBACK;
        return KN_OK;
    }
    for (uint32_t k = 0; k < o->n_stop_ids; k++)
        if (o->stop_ids[k] == t) {
            g->done = true;
            g->r.stop = KN_STOP_ID;
            return KN_OK;
        }
    bool hit;
    KN_TRY(stop_string_hit(s, o, g, &hit));
    if (hit) {
        g->done = true;
        g->r.stop = KN_STOP_STRING;
    } else if (o->max_new_tokens && g->r.n_tokens >= o->max_new_tokens) {
        g->done = true;
        g->r.stop = KN_STOP_MAX_TOKENS;
    } else if (q->len >= s->max_seq_len) {
        g->done = true;
        g->r.stop = KN_STOP_FULL;
    }
    return KN_OK;
}

/* The decode rounds on a batching session: each round one
 * kn_session_forward_batch over the live prompts (in prompt order), then
 * each prompt's token from its own sampler, as the one-at-a-time loop
 * picks it; prompts that stop drop out of the next round. A round's time
 * is shared equally by its prompts (the sum over prompts is the decode
 * time). */
static kn_status decode_batched(kn_session *s, const kn_generate_options *o, gen *gs, uint32_t n)
{
    const kn_sampling *p = &o->sampling;
    bool dev = on_device(s, p); /* the ids sampled on the device, the draws from each prompt's sampler */
    uint32_t *seqs = kn_mem_alloc(s->a, (size_t)n * sizeof *seqs), *idx = kn_mem_alloc(s->a, (size_t)n * sizeof *idx);
    int64_t *toks = kn_mem_alloc(s->a, (size_t)n * sizeof *toks), *next = kn_mem_alloc(s->a, (size_t)n * sizeof *next);
    double *u = kn_mem_alloc(s->a, (size_t)n * sizeof *u);
    float *logits = s->vocab && !dev ? kn_mem_alloc(s->a, (size_t)n * s->vocab * sizeof *logits) : NULL;
    kn_status st = seqs && idx && toks && next && u && (logits || dev) ? KN_OK : KN_ERR_NOMEM;
    kn_cuda_sample smp = {p->temperature, p->top_k, p->top_p, 0.0, 0, 0};
    for (uint32_t live = n; st == KN_OK && live;) {
        live = 0;
        for (uint32_t i = 0; i < n; i++)
            if (!gs[i].done) {
                seqs[live] = gs[i].seq;
                toks[live] = gs[i].r.tokens[gs[i].r.n_tokens - 1];
                u[live] = dev && draws(p) ? kn_sampler_uniform(gs[i].smp) : 0.0;
                idx[live++] = i;
            }
        if (!live)
            break;
        double t0 = now_s();
        st = dev ? kn_session_forward_batch_on(s, seqs, toks, live, NULL, &smp, u, next)
                 : kn_session_forward_batch(s, seqs, toks, live, logits);
        double share = (now_s() - t0) / live;
        for (uint32_t k = 0; k < live && st == KN_OK; k++) {
            gen *g = &gs[idx[k]];
            sess_seq *q = kn_session_seq(s, g->seq);
            int64_t t = dev ? next[k] : kn_sampler_pick(g->smp, logits + (size_t)k * s->vocab, q->hist, q->len);
            g->r.decode_s += share;
            g->r.n_decode++;
            st = next_token(s, o, idx[k], g, t);
        }
    }
    kn_mem_free(s->a, seqs);
    kn_mem_free(s->a, idx);
    kn_mem_free(s->a, toks);
    kn_mem_free(s->a, next);
    kn_mem_free(s->a, u);
    kn_mem_free(s->a, logits);
    return st;
}

/* The prompts' prefills in batched runs (kn_session_prefill_batch_on;
 * each prompt's draw from its own sampler, as forward_pick takes it), or
 * one after another when they do not fit one; then each first token. The
 * batched runs' time is every prompt's prefill_s. */
static kn_status prefill_together(kn_session *s, const kn_generate_options *o, gen *gs, const int64_t *const *prompts,
                                  const uint32_t *lens, uint32_t n)
{
    uint32_t *seqs = kn_mem_alloc(s->a, (size_t)n * sizeof *seqs);
    double *u = kn_mem_alloc(s->a, (size_t)n * sizeof *u);
    int64_t *next = kn_mem_alloc(s->a, (size_t)n * sizeof *next);
    kn_status st = seqs && u && next ? KN_OK : KN_ERR_NOMEM;
    for (uint32_t i = 0; st == KN_OK && i < n; i++)
        seqs[i] = gs[i].seq;
    bool fits = st == KN_OK && kn_session_prefill_batch_fits(s, seqs, lens, n);
    const kn_sampling *p = &o->sampling;
    if (fits) {
        for (uint32_t i = 0; i < n; i++)
            u[i] = draws(p) ? kn_sampler_uniform(gs[i].smp) : 0.0;
        kn_cuda_sample smp = {p->temperature, p->top_k, p->top_p, 0.0, 0, 0};
        double t0 = now_s();
        st = kn_session_prefill_batch_on(s, seqs, prompts, lens, n, &smp, u, next);
        double dt = now_s() - t0;
        for (uint32_t i = 0; st == KN_OK && i < n; i++) {
            gs[i].r.prefill_s = dt;
            st = next_token(s, o, i, &gs[i], next[i]);
        }
    }
    for (uint32_t i = 0; st == KN_OK && !fits && i < n; i++) {
        int64_t t = -1;
        double t0 = now_s();
        st = forward_pick(s, o, &gs[i], prompts[i], lens[i], &t);
        gs[i].r.prefill_s = now_s() - t0;
        if (st == KN_OK)
            st = next_token(s, o, i, &gs[i], t);
    }
    kn_mem_free(s->a, seqs);
    kn_mem_free(s->a, u);
    kn_mem_free(s->a, next);
    return st;
}

kn_status kn_session_generate(kn_session *s, const int64_t *const *prompts, const uint32_t *prompt_lens,
                              uint32_t n_prompts, const kn_generate_options *o, kn_generate_result *results)
{
    kn_generate_options def;
    if (!o) {
        kn_generate_options_defaults(&def);
        o = &def;
    }
    KN_TRY(validate(s, prompts, prompt_lens, n_prompts, o));
    gen *gs = kn_mem_alloc(s->a, (size_t)n_prompts * sizeof *gs);
    if (!gs)
        return KN_ERR_NOMEM;
    memset(gs, 0, (size_t)n_prompts * sizeof *gs);
    kn_status st = KN_OK;
    /* prefill every prompt: together when the session has batched prefill
     * programs and samples on the device, else one after another */
    bool together = n_prompts > 1 && s->vocab && kn_session_prefill_batched(s) && on_device(s, &o->sampling);
    for (uint32_t i = 0; i < n_prompts && st == KN_OK; i++) {
        gen *g = &gs[i];
        g->r.n_prompt = prompt_lens[i];
        g->index = i;
        st = kn_session_add_sequence(s, &g->seq);
        g->has_seq = st == KN_OK;
        if (st == KN_OK && s->vocab) {
            kn_sampling p = o->sampling;
            p.seed += i;
            st = kn_sampler_create(&p, s->vocab, s->a, s->d, &g->smp);
        }
        if (together)
            continue;
        int64_t t = -1;
        double t0 = now_s();
        if (st == KN_OK)
            st = forward_pick(s, o, g, prompts[i], prompt_lens[i], &t);
        g->r.prefill_s = now_s() - t0;
        if (st == KN_OK)
            st = next_token(s, o, i, g, t);
    }
    if (st == KN_OK && together)
        st = prefill_together(s, o, gs, prompts, prompt_lens, n_prompts);
    /* decode: one step of every live prompt at once when the session
     * batches, else one token per live prompt in turn */
    if (st == KN_OK && kn_session_batched(s))
        st = decode_batched(s, o, gs, n_prompts);
    for (bool live = !kn_session_batched(s); live && st == KN_OK;) {
        live = false;
        for (uint32_t i = 0; i < n_prompts && st == KN_OK; i++) {
            gen *g = &gs[i];
            if (g->done)
                continue;
            int64_t t = g->r.tokens[g->r.n_tokens - 1];
            double t0 = now_s();
            int64_t nt = -1;
            st = forward_pick(s, o, g, &t, 1, &nt);
            g->r.decode_s += now_s() - t0;
            g->r.n_decode++;
            if (st == KN_OK)
                st = next_token(s, o, i, g, nt);
            live = live || !g->done;
        }
    }
    for (uint32_t i = 0; i < n_prompts; i++) {
        gen *g = &gs[i];
        if (g->has_seq)
            kn_session_free_sequence(s, g->seq);
        kn_sampler_destroy(g->smp);
        if (results && st == KN_OK)
            results[i] = g->r;
        else
            kn_mem_free(s->a, g->r.tokens);
    }
    kn_mem_free(s->a, gs);
    return st;
}

void kn_generate_results_free(kn_session *s, kn_generate_result *results, uint32_t n)
{
    for (uint32_t i = 0; results && i < n; i++) {
        kn_mem_free(s->a, results[i].tokens);
        results[i].tokens = NULL;
        results[i].n_tokens = 0;
    }
}
