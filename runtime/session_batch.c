/* Batched decode steps (kn_session_forward_batch): one new token for each
 * of n sequences. On a paged plan whose graph reads neither an attention
 * mask nor past inputs (what the kv-mask pass leaves), one run of the plan
 * at [n, 1]: kiln.PagedAttention appends each row's K/V after that row's
 * own past, through its own block table, so sequences of different lengths
 * share the run. A CUDA session with batched decode programs runs them
 * (session_cuda.c). Other sessions run the n tokens one after another. Either
 * way every check (ids, lengths, the pool's free blocks) is made before
 * anything runs, so an error leaves every sequence as it was. */
#include "runtime/session_impl.h"
#include "ir/arena.h"
#include "runtime/cpu/exec.h"

#include <string.h>

bool kn_session_batched(const kn_session *s)
{
    if (s->cuda)
        return kn_session_cuda_batch_rows(s) > 0;
    if (s->cache != KN_CACHE_PAGED || s->no_cache || s->one_token)
        return false;
    const kn_graph *g = s->g;
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        if (s->roles[i].kind == IN_MASK || s->roles[i].kind == IN_PAST)
            return false; /* their shapes need one past length for all rows */
        const kn_type *t = &g->values[g->inputs[i]].type;
        if (t->kind == KN_TYPE_TENSOR && t->shape.rank >= 1 && t->shape.dims[0].value > 0)
            return false; /* a static batch dim */
    }
    return true;
}

/* The checks of a batched step, before anything runs. */
static kn_status check_batch(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n)
{
    if (n == 0 || !seqs || !tokens) {
        kn_diag_add(s->d, KN_ERROR, "%s: batched decode step: no sequences", s->file);
        return KN_ERR_INVALID;
    }
    uint64_t need = 0;
    for (uint32_t i = 0; i < n; i++) {
        sess_seq *q = kn_session_seq(s, seqs[i]);
        if (!q) {
            kn_diag_add(s->d, KN_ERROR, "session: no sequence %u (batch row %u)", seqs[i], i);
            return KN_ERR_INVALID;
        }
        for (uint32_t k = 0; k < i; k++)
            if (seqs[k] == seqs[i]) {
                kn_diag_add(s->d, KN_ERROR, "%s: batched decode step: sequence %u is in rows %u and %u", s->file,
                            seqs[i], k, i);
                return KN_ERR_INVALID;
            }
        if (q->len + 1ull > s->max_seq_len) {
            kn_diag_add(s->d, KN_ERROR,
                        "%s: sequence %u would hold %llu tokens, over the maximum sequence length %u (--max-seq-len)",
                        s->file, seqs[i], (unsigned long long)q->len + 1, s->max_seq_len);
            return KN_ERR_INVALID;
        }
        if (s->kv) {
            const kn_kv_seq *ks = kn_kv_seq_get(s->kv, q->kv_id);
            uint32_t bs = s->kv->cfg.block_size, want = (q->len + 1 + bs - 1) / bs;
            need += ks && want > ks->n_blocks ? want - ks->n_blocks : 0;
        }
    }
    KN_TRY(kn_session_check_ids(s, tokens, n, "batched decode step"));
    if (s->kv && need > s->kv->n_free) {
        kn_diag_add(s->d, KN_ERROR,
                    "KV cache full: a decode step of %u sequences needs %llu more blocks of %u tokens, %u of %u are "
                    "free (raise --kv-cache-mem or free sequences)",
                    n, (unsigned long long)need, s->kv->cfg.block_size, s->kv->n_free, s->kv->cfg.n_blocks);
        return KN_ERR_LIMIT;
    }
    return KN_OK;
}

/* An int tensor [n, 1] of dtype dt holding v[i]. */
static kn_status int_col(kn_session *s, kn_dtype dt, const int64_t *v, uint32_t n, kn_rt_tensor **out)
{
    int64_t dims[2] = {n, 1};
    KN_TRY(kn_rt_tensor_new(s->a, dt, 2, dims, out));
    for (uint32_t i = 0; i < n; i++) {
        if (dt == KN_I64)
            ((int64_t *)(*out)->data)[i] = v[i];
        else
            ((int32_t *)(*out)->data)[i] = (int32_t)v[i];
    }
    return KN_OK;
}

/* One run of the plan at [n, 1]; the sequences have passed check_batch. */
static kn_status run_batch(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n, float *logits_out)
{
    const kn_graph *g = s->g;
    size_t n_in = (size_t)g->n_inputs + 1, n_out = (size_t)g->n_outputs + 1;
    kn_rt_tensor **in = kn_mem_alloc(s->a, n_in * sizeof *in);
    kn_rt_tensor **out = kn_mem_alloc(s->a, n_out * sizeof *out);
    uint32_t *kv_ids = kn_mem_alloc(s->a, (size_t)n * sizeof *kv_ids);
    int64_t *pos = kn_mem_alloc(s->a, (size_t)n * sizeof *pos);
    kn_status st = in && out && kv_ids && pos ? KN_OK : KN_ERR_NOMEM;
    if (in)
        memset(in, 0, n_in * sizeof *in);
    if (out)
        memset(out, 0, n_out * sizeof *out);
    for (uint32_t i = 0; st == KN_OK && i < n; i++) {
        sess_seq *q = kn_session_seq(s, seqs[i]);
        kv_ids[i] = q->kv_id;
        pos[i] = q->len;
        st = kn_mem_grow(s->a, (void **)&q->hist, &q->cap_hist, q->len + 1, sizeof *q->hist);
    }
    for (uint32_t i = 0; st == KN_OK && i < n; i++) /* cannot fail: check_batch counted the free blocks */
        st = kn_kv_seq_reserve(s->kv, kv_ids[i], (uint32_t)pos[i] + 1, s->d);
    for (uint32_t i = 0; st == KN_OK && i < g->n_inputs; i++)
        st = int_col(s, s->roles[i].dtype, s->roles[i].kind == IN_IDS ? tokens : pos, n, &in[i]);
    kn_kv_run run = {s->kv, kv_ids, n};
    if (st == KN_OK)
        st = kn_cpu_run_kv(g, s->a, s->d, (const kn_rt_tensor *const *)in, g->n_inputs, out, g->n_outputs, NULL,
                           NULL, &run);
    const kn_rt_tensor *lg = st == KN_OK ? out[s->logits_out] : NULL;
    if (st == KN_OK && (lg->dtype != KN_F32 || lg->rank < 2 || lg->dims[0] != n ||
                        lg->numel != (int64_t)n * lg->dims[lg->rank - 1])) {
        kn_diag_add(s->d, KN_ERROR, "%s: logits must be float32 [%u, 1, vocab]", s->file, n);
        st = KN_ERR_INVALID;
    }
    if (st == KN_OK)
        st = kn_session_keep_logits(s, lg->dims[lg->rank - 1]);
    if (st == KN_OK) {
        size_t v = (size_t)lg->dims[lg->rank - 1];
        const float *rows = lg->data;
        memcpy(s->last, rows + (size_t)(n - 1) * v, v * sizeof(float));
        if (logits_out)
            memcpy(logits_out, rows, (size_t)n * v * sizeof(float));
        for (uint32_t i = 0; i < n; i++) {
            sess_seq *q = kn_session_seq(s, seqs[i]);
            q->hist[q->len] = tokens[i];
            q->len++;
            kn_kv_seq_get(s->kv, q->kv_id)->len = q->len;
        }
    }
    for (uint32_t i = 0; in && i < g->n_inputs; i++)
        kn_rt_tensor_free(s->a, in[i]);
    for (uint32_t i = 0; out && i < g->n_outputs; i++)
        kn_rt_tensor_free(s->a, out[i]);
    kn_mem_free(s->a, in);
    kn_mem_free(s->a, out);
    kn_mem_free(s->a, kv_ids);
    kn_mem_free(s->a, pos);
    return st;
}

kn_status kn_session_forward_batch_on(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                      float *logits_out, const kn_cuda_sample *smp, const double *u, int64_t *next)
{
    KN_TRY(check_batch(s, seqs, tokens, n));
    if (smp && !(s->cuda && kn_session_batched(s))) {
        kn_diag_add(s->d, KN_ERROR, "%s: sampling on the device needs a CUDA session with batched decode programs",
                    s->file);
        return KN_ERR_INVALID;
    }
    if (s->cuda && kn_session_batched(s)) {
        for (uint32_t i = 0; i < n; i++) {
            sess_seq *q = kn_session_seq(s, seqs[i]);
            KN_TRY(kn_mem_grow(s->a, (void **)&q->hist, &q->cap_hist, q->len + 1, sizeof *q->hist));
        }
        return kn_session_cuda_forward_batch(s, seqs, tokens, n, logits_out, smp, u, next);
    }
    if (kn_session_batched(s))
        return run_batch(s, seqs, tokens, n, logits_out);
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        KN_TRY(kn_session_forward(s, seqs[i], &tokens[i], 1, logits_out ? logits_out + off : NULL));
        off += s->vocab;
    }
    return KN_OK;
}

kn_status kn_session_forward_batch(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                   float *logits_out)
{
    return kn_session_forward_batch_on(s, seqs, tokens, n, logits_out, NULL, NULL, NULL);
}

/* ---- several prompts prefilled in one run (CUDA batched prefill programs) ---- */

bool kn_session_prefill_batched(const kn_session *s)
{
    return s && s->cuda && kn_session_cuda_prefill_rows(s) > 0 && kn_session_cuda_can_sample(s);
}

bool kn_session_prefill_batch_fits(kn_session *s, const uint32_t *seqs, const uint32_t *lens, uint32_t n)
{
    if (!kn_session_prefill_batched(s) || n < 2)
        return false;
    uint64_t P = kn_session_cuda_prefill_chunk(s);
    for (uint32_t i = 0; i < n; i++) {
        sess_seq *q = kn_session_seq(s, seqs[i]);
        if (!q || lens[i] < 2 || q->len + (lens[i] + P - 1) / P * P > s->kv->cfg.max_seq_len ||
            q->len + (uint64_t)lens[i] > s->max_seq_len)
            return false;
        for (uint32_t k = 0; k < i; k++)
            if (seqs[k] == seqs[i])
                return false;
    }
    return true;
}

kn_status kn_session_prefill_batch_on(kn_session *s, const uint32_t *seqs, const int64_t *const *prompts,
                                      const uint32_t *lens, uint32_t n, const kn_cuda_sample *smp, const double *u,
                                      int64_t *next)
{
    if (!smp || !kn_session_prefill_batch_fits(s, seqs, lens, n)) {
        kn_diag_add(s->d, KN_ERROR,
                    "%s: a batched prefill needs a CUDA session with batched prefill programs (kiln compile "
                    "--prefill-batch), sampling on the device, and prompts of 2 tokens or more that fit",
                    s->file);
        return KN_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) {
        sess_seq *q = kn_session_seq(s, seqs[i]);
        KN_TRY(kn_session_check_ids(s, prompts[i], lens[i], "batched prefill"));
        KN_TRY(kn_mem_grow(s->a, (void **)&q->hist, &q->cap_hist, q->len + lens[i], sizeof *q->hist));
        memcpy(q->hist + q->len, prompts[i], lens[i] * sizeof *prompts[i]);
    }
    uint32_t *done = kn_mem_alloc(s->a, (size_t)n * sizeof *done);
    if (!done)
        return KN_ERR_NOMEM;
    kn_status st = kn_session_cuda_prefill_batch(s, seqs, prompts, lens, n, smp, u, next, done);
    for (uint32_t i = 0; i < n; i++) {
        sess_seq *q = kn_session_seq(s, seqs[i]);
        if (st == KN_OK)
            q->len += lens[i];
        kn_kv_seq_get(s->kv, q->kv_id)->len = q->len;
    }
    kn_mem_free(s->a, done);
    return st;
}

kn_status kn_session_prefill_batch_greedy(kn_session *s, const uint32_t *seqs, const int64_t *const *prompts,
                                          const uint32_t *lens, uint32_t n, int64_t *next)
{
    if (!kn_session_prefill_batch_fits(s, seqs, lens, n)) {
        for (uint32_t i = 0; i < n; i++)
            KN_TRY(kn_session_forward_greedy(s, seqs[i], prompts[i], lens[i], &next[i]));
        return KN_OK;
    }
    double *u = kn_mem_alloc(s->a, (size_t)n * sizeof *u);
    if (!u)
        return KN_ERR_NOMEM;
    memset(u, 0, (size_t)n * sizeof *u);
    kn_cuda_sample smp = {0.0f, 0, 1.0f, 0.0, 0, 0};
    kn_status st = kn_session_prefill_batch_on(s, seqs, prompts, lens, n, &smp, u, next);
    kn_mem_free(s->a, u);
    return st;
}
