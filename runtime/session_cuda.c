/* Sessions on the CUDA backend (kn_session_create_cuda, kiln/session.h):
 * a decoder compiled for target cuda at two static shapes — a prefill
 * plan for [1, P] new tokens and a decode plan for [1, 1] — two CUDA
 * sessions on one device KV cache (the decode session shares the prefill
 * session's pools), and the host's block bookkeeping (the session's
 * kn_kv_cache without host pools). Each run binds the sequence's block
 * table and past length; the inputs are tensors of the plans' compiled
 * shapes made once. A plan's batched decode programs ([B, 1], kiln compile
 * --decode-batch) are more such sessions on the same pools: a batched
 * decode step of n sequences runs the smallest with B >= n (else chunks of
 * the largest), its spare rows bound to a scratch sequence that holds one
 * reserved block, so their K/V writes never reach a real sequence.
 *
 * Sampled runs are CUDA graphs (sample.c), the prefill's chunks too: what
 * changes per chunk (ids, positions, block table, past length) is
 * uploaded inside the graph from the pinned staging buffers, and every
 * chunk samples all P rows of its logits (the host keeps row m - 1 of the
 * last chunk, m its valid tokens), so no kernel parameter depends on the
 * chunk and one capture serves every chunk of every prompt.
 *
 * Batched prefill programs ([B, P], kiln compile --prefill-batch) prefill
 * several prompts in one run (kn_session_cuda_prefill_batch): row r takes
 * the next chunk of the r-th prompt still going, the spare rows P tokens
 * of the scratch sequence (which then holds ceil(P / block size) blocks);
 * a last prompt going alone finishes on the [1, P] program. */
#include "ir/arena.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "runtime/cuda/plan.h"
#include "runtime/cpu/util.h"
#include "runtime/session_impl.h"

#include <stdio.h>
#include <string.h>

enum { PREFILL, DECODE };

typedef struct bucket {
    const kn_graph *g;
    kn_cuda_session *cs;
    uint32_t rows;        /* sequences per run (1, or B of a batched decode program) */
    uint32_t tokens;      /* new tokens per run (P, or 1) */
    kn_rt_tensor **in;    /* per graph input, of its compiled shape */
    kn_rt_tensor **out;   /* per graph output, the last run's */
    uint32_t logits_out;
} bucket;

struct kn_session_cuda {
    bucket b[2];
    kn_graph *own_prefill; /* kn_session_create_device: the prefill graph it opened */
    int32_t *table;       /* one row of max_blocks */
    uint32_t max_blocks;
    /* batched decode programs, rows ascending; their graphs (owned) */
    bucket batch[KN_PLAN_MAX_DECODE_BATCHES];
    kn_graph *own_batch[KN_PLAN_MAX_DECODE_BATCHES];
    uint32_t n_batch;
    uint32_t scratch;     /* the kv sequence of spare rows (one block) */
    uint32_t max_rows;    /* of every batched program */
    int32_t *btable, *bpast; /* [max rows, max_blocks], [max rows] */
    uint32_t *brow_seq;   /* [max rows]: kv sequence ids */
    uint32_t *bact;       /* [max rows]: a batched prefill run's prompts */
    double *bu;           /* [max rows]: draws */
    int32_t *btok;        /* [max rows]: sampled ids */
    double *pu;           /* [P]: a prefill chunk's draws (the same in every row) */
    int32_t *ptok;        /* [P]: its ids, one per row */
    /* batched prefill programs ([B, P]), rows ascending; their graphs (owned) */
    bucket pbatch[KN_PLAN_MAX_DECODE_BATCHES];
    kn_graph *own_pbatch[KN_PLAN_MAX_DECODE_BATCHES];
    uint32_t n_pbatch;
    double *pbu;          /* [max rows x P]: the draws of a batched prefill run */
    int32_t *pbtok;       /* [max rows x P]: its ids */
};

static void bucket_free(kn_session *s, bucket *b)
{
    for (uint32_t i = 0; b->in && i < b->g->n_inputs; i++)
        kn_rt_tensor_free(s->a, b->in[i]);
    for (uint32_t i = 0; b->out && i < b->g->n_outputs; i++)
        kn_rt_tensor_free(s->a, b->out[i]);
    kn_mem_free(s->a, b->in);
    kn_mem_free(s->a, b->out);
    kn_cuda_session_destroy(b->cs);
    memset(b, 0, sizeof *b);
}

void kn_session_cuda_free(kn_session *s)
{
    if (!s->cuda)
        return;
    for (uint32_t k = 0; k < s->cuda->n_batch; k++) { /* they borrow the prefill session's pools */
        bucket_free(s, &s->cuda->batch[k]);
        kn_graph_destroy(s->cuda->own_batch[k]);
    }
    for (uint32_t k = 0; k < s->cuda->n_pbatch; k++) {
        bucket_free(s, &s->cuda->pbatch[k]);
        kn_graph_destroy(s->cuda->own_pbatch[k]);
    }
    kn_mem_free(s->a, s->cuda->pbu);
    kn_mem_free(s->a, s->cuda->pbtok);
    bucket_free(s, &s->cuda->b[DECODE]);
    bucket_free(s, &s->cuda->b[PREFILL]);
    kn_graph_destroy(s->cuda->own_prefill);
    kn_mem_free(s->a, s->cuda->table);
    kn_mem_free(s->a, s->cuda->btable);
    kn_mem_free(s->a, s->cuda->bpast);
    kn_mem_free(s->a, s->cuda->brow_seq);
    kn_mem_free(s->a, s->cuda->bu);
    kn_mem_free(s->a, s->cuda->btok);
    kn_mem_free(s->a, s->cuda->bact);
    kn_mem_free(s->a, s->cuda->pu);
    kn_mem_free(s->a, s->cuda->ptok);
    kn_mem_free(s->a, s->cuda);
    s->cuda = NULL;
}

static kn_status fail(kn_session *s, const kn_graph *g, const char *msg)
{
    kn_diag_add(s->d, KN_ERROR, "%s: CUDA session: %s", g->info && g->info->path ? g->info->path : "<plan>", msg);
    return KN_ERR_INVALID;
}

/* A token id the device sampler returned: KN_OK when it lies in the
 * vocabulary, else an internal error naming it. */
static kn_status check_token(kn_session *s, int32_t t)
{
    if (t >= 0 && (!s->vocab || (uint32_t)t < s->vocab))
        return KN_OK;
    kn_diag_add(s->d, KN_ERROR, "%s: the device sampler returned id %d (vocabulary %u)", s->file, t, s->vocab);
    return KN_ERR_INTERNAL;
}

/* One run of bucket b over kv into b->out (the previous run's outputs
 * released first); its logits output. */
static kn_status run_outputs(kn_session *s, bucket *b, const kn_cuda_kv_binding *kv, const kn_rt_tensor **lg)
{
    for (uint32_t i = 0; i < b->g->n_outputs; i++) {
        kn_rt_tensor_free(s->a, b->out[i]);
        b->out[i] = NULL;
    }
    KN_TRY(kn_cuda_session_run_kv(b->cs, (const kn_rt_tensor *const *)b->in, b->g->n_inputs, b->out,
                                  b->g->n_outputs, kv, s->d));
    *lg = b->out[b->logits_out];
    return KN_OK;
}

/* The plan's inputs as tensors of their compiled shapes (the mask all
 * ones); its logits output. */
static kn_status bucket_inputs(kn_session *s, bucket *b)
{
    const kn_graph *g = b->g;
    b->in = kn_mem_alloc(s->a, ((size_t)g->n_inputs + 1) * sizeof *b->in);
    b->out = kn_mem_alloc(s->a, ((size_t)g->n_outputs + 1) * sizeof *b->out);
    if (!b->in || !b->out)
        return KN_ERR_NOMEM;
    memset(b->in, 0, ((size_t)g->n_inputs + 1) * sizeof *b->in);
    memset(b->out, 0, ((size_t)g->n_outputs + 1) * sizeof *b->out);
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        const kn_type *t = &v->type;
        int64_t dims[8];
        if (strcmp(v->name, s->g->values[s->g->inputs[i]].name) != 0 || t->kind != KN_TYPE_TENSOR ||
            t->shape.rank < 0 || t->shape.rank > 8)
            return fail(s, g, "the prefill and decode plans must have the same inputs, of static shapes");
        for (int32_t k = 0; k < t->shape.rank; k++)
            if ((dims[k] = t->shape.dims[k].value) < 0)
                return fail(s, g, "an input without a static shape (not a target-cuda plan?)");
        KN_TRY(kn_rt_tensor_new(s->a, t->dtype, t->shape.rank, dims, &b->in[i]));
        input_kind kind = s->roles[i].kind;
        if ((kind == IN_IDS || kind == IN_POS) && (t->shape.rank != 2 || dims[0] != b->rows || dims[1] != b->tokens))
            return fail(s, g, "input_ids and position_ids must be [sequences, new tokens] as the KV cache's steps");
        for (int64_t k = 0; kind == IN_MASK && k < b->in[i]->numel; k++)
            kn_set_f64(b->in[i]->dtype, b->in[i]->data, k, 1.0);
    }
    b->logits_out = 0;
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (strcmp(g->values[g->outputs[i]].name, "logits") == 0)
            b->logits_out = i;
    return KN_OK;
}

static kn_status open_bucket(kn_session *s, bucket *b, const kn_graph *g, kn_cuda_session *shared, uint32_t blocks,
                             bool no_graph)
{
    b->g = g;
    kn_cuda_options co;
    memset(&co, 0, sizeof co);
    co.kv_blocks = blocks;
    co.kv_shared = shared;
    co.no_graph = no_graph;
    KN_TRY(kn_cuda_session_create(g, NULL, 0, &co, s->a, s->d, &b->cs));
    kn_cuda_kv_info info;
    if (kn_cuda_session_kv_info(b->cs, &info) != KN_OK)
        return fail(s, g, "the plan does not read the KV cache (no kiln.PagedAttention steps)");
    const kn_kv_config *cfg = &s->kv->cfg;
    if ((shared && info.rows < 1) || (!shared && info.rows != 1) || info.block_size != cfg->block_size ||
        info.max_seq_len < cfg->max_seq_len)
        return fail(s, g, "the plan's KV cache needs batch 1 (a batched decode program: B), the session's block "
                          "size and at least its maximum sequence length");
    if (info.dtype != kn_kv_dtype(cfg))
        return fail(s, g, "the plans' KV cache dtypes (kiln.kv.dtype) differ");
    if (shared && info.max_blocks != s->cuda->max_blocks)
        return fail(s, g, "the plans' block tables differ");
    b->rows = info.rows;
    b->tokens = info.tokens;
    s->cuda->max_blocks = info.max_blocks;
    return bucket_inputs(s, b);
}

/* kn_session_create_cuda with the blocks of `extra` tokens more in the
 * pools than the options or the plan ask for (the scratch sequence of
 * batched programs: 1 token of a decode step, P of a prefill chunk, so
 * that the sequences keep what the plan promises). */
static kn_status create_cuda(const kn_graph *prefill, const kn_graph *decode, const kn_session_options *o,
                             uint32_t extra, const kn_allocator *a, kn_diag *d, kn_session **out);

kn_status kn_session_create_cuda(const kn_graph *prefill, const kn_graph *decode, const kn_session_options *o,
                                 const kn_allocator *a, kn_diag *d, kn_session **out)
{
    return create_cuda(prefill, decode, o, 0, a, d, out);
}

static kn_status create_cuda(const kn_graph *prefill, const kn_graph *decode, const kn_session_options *o,
                             uint32_t extra, const kn_allocator *a, kn_diag *d, kn_session **out)
{
    *out = NULL;
    if (!kn_cuda_plan_has_code(prefill) || !kn_cuda_plan_has_code(decode)) {
        kn_diag_add(d, KN_ERROR, "CUDA session: both plans must carry CUDA code (kiln compile --target cuda)");
        return KN_ERR_UNSUPPORTED;
    }
    if (o && (o->no_cache || o->block_size)) {
        kn_diag_add(d, KN_ERROR, "CUDA session: no_cache and block_size are not options of a CUDA session (the "
                                 "plans fix the block size)");
        return KN_ERR_INVALID;
    }
    kn_session *s;
    KN_TRY(kn_session_create_on(prefill, o, a, d, false, &s));
    kn_status st = KN_OK;
    if (s->cache != KN_CACHE_PAGED)
        st = fail(s, prefill, "the plans must read the paged KV cache (compiled with the kv-cache pass)");
    if (st == KN_OK && extra) {
        kn_kv_config cfg = s->kv->cfg;
        cfg.n_blocks += (extra + cfg.block_size - 1) / cfg.block_size;
        kn_kv_destroy(s->kv);
        s->kv = NULL;
        st = kn_kv_create_tables(&cfg, s->a, d, &s->kv);
    }
    if (st == KN_OK) {
        s->cuda = kn_mem_alloc(s->a, sizeof *s->cuda);
        st = s->cuda ? KN_OK : KN_ERR_NOMEM;
    }
    if (st == KN_OK) {
        memset(s->cuda, 0, sizeof *s->cuda);
        st = open_bucket(s, &s->cuda->b[PREFILL], prefill, NULL, s->kv->cfg.n_blocks, o && o->no_cuda_graph);
    }
    if (st == KN_OK)
        st = open_bucket(s, &s->cuda->b[DECODE], decode, s->cuda->b[PREFILL].cs, 0, o && o->no_cuda_graph);
    if (st == KN_OK && s->cuda->b[DECODE].tokens != 1)
        st = fail(s, decode, "the decode plan must take 1 new token per run");
    if (st == KN_OK && s->cuda->b[DECODE].rows != 1)
        st = fail(s, decode, "the decode plan must take 1 sequence per run (a batched decode program is added "
                             "with the plan's others)");
    if (st == KN_OK) {
        size_t p = s->cuda->b[PREFILL].tokens;
        s->cuda->table = kn_mem_alloc(s->a, ((size_t)s->cuda->max_blocks + 1) * sizeof *s->cuda->table);
        s->cuda->pu = kn_mem_alloc(s->a, (p + 1) * sizeof *s->cuda->pu);
        s->cuda->ptok = kn_mem_alloc(s->a, (p + 1) * sizeof *s->cuda->ptok);
        st = s->cuda->table && s->cuda->pu && s->cuda->ptok ? KN_OK : KN_ERR_NOMEM;
    }
    if (st != KN_OK) {
        kn_session_destroy(s);
        return st;
    }
    *out = s;
    return KN_OK;
}

kn_status kn_session_cuda_add_batch(kn_session *s, kn_graph *g, bool own, bool no_graph)
{
    struct kn_session_cuda *c = s->cuda;
    if (c->n_batch + c->n_pbatch == KN_PLAN_MAX_DECODE_BATCHES) {
        if (own)
            kn_graph_destroy(g);
        return fail(s, g, "too many batched programs");
    }
    if (!kn_cuda_plan_has_code(g)) {
        if (own)
            kn_graph_destroy(g);
        return fail(s, g, "a batched program must carry CUDA code");
    }
    bucket *b = &c->batch[c->n_batch];
    c->own_batch[c->n_batch] = own ? g : NULL;
    c->n_batch++; /* freed with the session from here on */
    KN_TRY(open_bucket(s, b, g, c->b[PREFILL].cs, 0, no_graph));
    uint32_t P = c->b[PREFILL].tokens;
    if (b->tokens == P && b->tokens > 1) { /* a batched prefill program: into its own list */
        c->pbatch[c->n_pbatch] = *b;
        c->own_pbatch[c->n_pbatch] = c->own_batch[c->n_batch - 1];
        memset(b, 0, sizeof *b);
        c->own_batch[--c->n_batch] = NULL;
        b = &c->pbatch[c->n_pbatch++];
        if (b->rows < 2 || (c->n_pbatch > 1 && b->rows <= c->pbatch[c->n_pbatch - 2].rows))
            return fail(s, g, "batched prefill programs must take P new tokens for B > 1 sequences, B ascending");
    } else if (b->tokens != 1 || b->rows < 2 || (c->n_batch > 1 && b->rows <= c->batch[c->n_batch - 2].rows)) {
        return fail(s, g, "batched decode programs must take 1 new token for B > 1 sequences, B ascending");
    }
    uint32_t rows = b->rows;
    if (c->n_batch + c->n_pbatch == 1) /* the spare rows' sequence (kn_session_create_device adds its blocks) */
        KN_TRY(kn_kv_seq_add(s->kv, &c->scratch));
    KN_TRY(kn_kv_seq_reserve(s->kv, c->scratch, b->tokens, s->d));
    if (b->tokens > 1) {
        kn_mem_free(s->a, c->pbu);
        kn_mem_free(s->a, c->pbtok);
        c->pbu = kn_mem_alloc(s->a, (size_t)rows * P * sizeof *c->pbu);
        c->pbtok = kn_mem_alloc(s->a, (size_t)rows * P * sizeof *c->pbtok);
        if (!c->pbu || !c->pbtok)
            return KN_ERR_NOMEM;
    }
    if (rows <= c->max_rows)
        return KN_OK; /* the row arrays hold them already */
    c->max_rows = rows;
    kn_mem_free(s->a, c->btable);
    kn_mem_free(s->a, c->bpast);
    kn_mem_free(s->a, c->brow_seq);
    kn_mem_free(s->a, c->bu);
    kn_mem_free(s->a, c->btok);
    kn_mem_free(s->a, c->bact);
    c->btable = kn_mem_alloc(s->a, (size_t)rows * c->max_blocks * sizeof *c->btable + 1);
    c->bpast = kn_mem_alloc(s->a, (size_t)rows * sizeof *c->bpast);
    c->brow_seq = kn_mem_alloc(s->a, (size_t)rows * sizeof *c->brow_seq);
    c->bu = kn_mem_alloc(s->a, (size_t)rows * sizeof *c->bu);
    c->btok = kn_mem_alloc(s->a, (size_t)rows * sizeof *c->btok);
    c->bact = kn_mem_alloc(s->a, (size_t)rows * sizeof *c->bact);
    return c->btable && c->bpast && c->brow_seq && c->bu && c->btok && c->bact ? KN_OK : KN_ERR_NOMEM;
}

uint32_t kn_session_cuda_prefill_chunk(const kn_session *s) { return s->cuda ? s->cuda->b[PREFILL].tokens : 0; }

uint32_t kn_session_cuda_prefill_rows(const kn_session *s)
{
    return s->cuda && s->cuda->n_pbatch ? s->cuda->pbatch[s->cuda->n_pbatch - 1].rows : 0;
}

uint32_t kn_session_cuda_batch_rows(const kn_session *s)
{
    return s->cuda && s->cuda->n_batch ? s->cuda->batch[s->cuda->n_batch - 1].rows : 0;
}

/* The batched decode program for `left` sequences: the smallest with B >=
 * left, else the largest. */
static bucket *pick_batch(struct kn_session_cuda *c, uint32_t left)
{
    for (uint32_t k = 0; k < c->n_batch; k++)
        if (c->batch[k].rows >= left)
            return &c->batch[k];
    return &c->batch[c->n_batch - 1];
}

kn_status kn_session_cuda_forward_batch(kn_session *s, const uint32_t *seqs, const int64_t *tokens, uint32_t n,
                                        float *logits_out, const kn_cuda_sample *smp, const double *u, int64_t *next)
{
    struct kn_session_cuda *c = s->cuda;
    for (uint32_t done = 0; done < n;) {
        if (n - done == 1) { /* one sequence: the decode program */
            sess_seq *q = kn_session_seq(s, seqs[done]);
            kn_cuda_sample one = smp ? *smp : (kn_cuda_sample){0};
            one.u = smp ? u[done] : 0.0;
            KN_TRY(smp ? kn_session_cuda_forward_sample(s, q, &tokens[done], 1, &one, &next[done])
                       : kn_session_cuda_forward(s, q, &tokens[done], 1,
                                                 logits_out ? logits_out + (size_t)done * s->vocab : NULL));
            q->hist[q->len++] = tokens[done];
            break;
        }
        bucket *b = pick_batch(c, n - done);
        uint32_t m = n - done < b->rows ? n - done : b->rows;
        for (uint32_t r = 0; r < b->rows; r++) {
            sess_seq *q = r < m ? kn_session_seq(s, seqs[done + r]) : NULL;
            if (q)
                KN_TRY(kn_kv_seq_reserve(s->kv, q->kv_id, q->len + 1, s->d));
            c->brow_seq[r] = q ? q->kv_id : c->scratch;
            for (uint32_t i = 0; i < b->g->n_inputs; i++) {
                input_kind kind = s->roles[i].kind;
                if (kind == IN_IDS || kind == IN_POS)
                    kn_set_f64(b->in[i]->dtype, b->in[i]->data, r,
                               (double)(!q ? 0 : kind == IN_POS ? (int64_t)q->len : tokens[done + r]));
            }
        }
        KN_TRY(kn_kv_fill_rows(s->kv, c->brow_seq, b->rows, c->max_blocks, c->btable, c->bpast));
        kn_cuda_kv_binding kv = {c->btable, c->bpast, b->rows, c->max_blocks};
        if (smp) {
            kn_cuda_sample all = *smp;
            all.output = b->logits_out;
            all.row = 0;
            for (uint32_t r = 0; r < b->rows; r++)
                c->bu[r] = r < m ? u[done + r] : 0.0;
            KN_TRY(kn_cuda_session_run_kv_sample_rows(b->cs, (const kn_rt_tensor *const *)b->in, b->g->n_inputs, &kv,
                                                      &all, c->bu, b->rows, c->btok, s->d));
            for (uint32_t r = 0; r < m; r++) {
                KN_TRY(check_token(s, c->btok[r]));
                next[done + r] = c->btok[r];
            }
        } else {
            const kn_rt_tensor *lg;
            KN_TRY(run_outputs(s, b, &kv, &lg));
            if (lg->dtype != KN_F32 || lg->rank < 2 || lg->dims[0] != b->rows ||
                lg->numel != (int64_t)b->rows * lg->dims[lg->rank - 1])
                return fail(s, b->g, "logits must be float32 [sequences, 1, vocab]");
            int64_t v = lg->dims[lg->rank - 1];
            KN_TRY(kn_session_keep_logits(s, v));
            memcpy(s->last, (const float *)lg->data + (size_t)(m - 1) * (size_t)v, (size_t)v * sizeof(float));
            if (logits_out)
                memcpy(logits_out + (size_t)done * (size_t)v, lg->data, (size_t)m * (size_t)v * sizeof(float));
        }
        for (uint32_t r = 0; r < m; r++) {
            sess_seq *q = kn_session_seq(s, seqs[done + r]);
            q->hist[q->len++] = tokens[done + r];
            kn_kv_seq_get(s->kv, q->kv_id)->len = q->len;
        }
        done += m;
    }
    return KN_OK;
}

/* Which plan runs next for `left` tokens after `past`: the decode plan
 * for one token, or when a padded prefill chunk would pass the maximum
 * sequence length. */
static int pick(const kn_session *s, uint32_t past, uint32_t left)
{
    const bucket *p = &s->cuda->b[PREFILL];
    return left == 1 || (uint64_t)past + p->tokens > s->kv->cfg.max_seq_len ? DECODE : PREFILL;
}

static kn_status run_chunks(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n, const kn_cuda_sample *smp,
                            int64_t *token);

bool kn_session_cuda_can_sample(const kn_session *s)
{
    return s->cuda && kn_cuda_session_can_sample(s->cuda->b[PREFILL].cs) &&
           kn_cuda_session_can_sample(s->cuda->b[DECODE].cs);
}

kn_status kn_session_cuda_forward_sample(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n,
                                         const kn_cuda_sample *smp, int64_t *token)
{
    if (!kn_session_cuda_can_sample(s))
        return fail(s, s->cuda->b[DECODE].g, "the plan carries no sampling kernels (rebuild it with kiln compile)");
    kn_status st = run_chunks(s, q, ids, n, smp, token);
    kn_kv_seq *kq = kn_kv_seq_get(s->kv, q->kv_id);
    if (st != KN_OK && kq)
        kq->len = q->len;
    return st;
}

kn_status kn_session_cuda_forward(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n, float *logits_out)
{
    kn_status st = run_chunks(s, q, ids, n, NULL, NULL);
    kn_kv_seq *kq = kn_kv_seq_get(s->kv, q->kv_id);
    if (st != KN_OK && kq) /* what a failed forward wrote past the sequence is overwritten later */
        kq->len = q->len;
    if (st == KN_OK && logits_out)
        memcpy(logits_out, s->last, (size_t)s->vocab * sizeof(float));
    return st;
}

/* The runs of one forward; the cache's length follows each. With smp the
 * last run samples the next token on the device; on a program with CUDA
 * graphs every run samples all its rows (one graph for every chunk, the
 * ids of the others ignored), without them only the last run samples, its
 * row m - 1, and the others copy nothing back. Without smp each run's
 * logits come back and the last token's stay in s->last. */
static kn_status run_chunks(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n, const kn_cuda_sample *smp,
                            int64_t *token)
{
    struct kn_session_cuda *c = s->cuda;
    /* the blocks every run will touch, padding included, reserved first:
     * a full cache leaves the sequence as it was */
    uint32_t past = q->len, need = past;
    for (uint32_t done = 0; done < n;) {
        const bucket *b = &c->b[pick(s, past + done, n - done)];
        uint32_t m = n - done < b->tokens ? n - done : b->tokens;
        need = past + done + b->tokens > need ? past + done + b->tokens : need;
        done += m;
    }
    if (past == 0)
        KN_TRY(kn_kv_seq_reset(s->kv, q->kv_id));
    KN_TRY(kn_kv_seq_reserve(s->kv, q->kv_id, need, s->d));
    kn_kv_seq *kq = kn_kv_seq_get(s->kv, q->kv_id);
    for (uint32_t done = 0; done < n;) {
        bucket *b = &c->b[pick(s, past, n - done)];
        uint32_t m = n - done < b->tokens ? n - done : b->tokens;
        for (uint32_t i = 0; i < b->g->n_inputs; i++) {
            input_kind kind = s->roles[i].kind;
            for (uint32_t t = 0; (kind == IN_IDS || kind == IN_POS) && t < b->tokens; t++)
                kn_set_f64(b->in[i]->dtype, b->in[i]->data, t,
                           (double)(kind == IN_POS ? (int64_t)past + t : t < m ? ids[done + t] : 0));
        }
        kq->len = past;
        int32_t past32;
        KN_TRY(kn_kv_fill_rows(s->kv, &q->kv_id, 1, c->max_blocks, c->table, &past32));
        kn_cuda_kv_binding kv = {c->table, &past32, 1, c->max_blocks};
        if (smp) {
            bool last = done + m == n;
            kn_cuda_sample one = *smp;
            one.output = b->logits_out;
            one.row = m - 1;
            int32_t t = -1;
            uint64_t caps, launches;
            if (b->tokens > 1 && kn_cuda_session_graph_stats(b->cs, &caps, &launches)) {
                one.row = 0;
                for (uint32_t r = 0; r < b->tokens; r++)
                    c->pu[r] = smp->u;
                KN_TRY(kn_cuda_session_run_kv_sample_rows(b->cs, (const kn_rt_tensor *const *)b->in, b->g->n_inputs,
                                                          &kv, &one, c->pu, b->tokens, c->ptok, s->d));
                t = c->ptok[m - 1];
            } else {
                KN_TRY(kn_cuda_session_run_kv_sample(b->cs, (const kn_rt_tensor *const *)b->in, b->g->n_inputs, &kv,
                                                     last ? &one : NULL, &t, s->d));
            }
            if (last) {
                KN_TRY(check_token(s, t));
                *token = t;
            }
            past += m;
            done += m;
            kq->len = past;
            continue;
        }
        const kn_rt_tensor *lg;
        KN_TRY(run_outputs(s, b, &kv, &lg));
        if (lg->dtype != KN_F32 || lg->rank < 2 || lg->dims[lg->rank - 2] != b->tokens ||
            lg->numel != (int64_t)b->tokens * lg->dims[lg->rank - 1])
            return fail(s, b->g, "logits must be float32 [1, new tokens, vocab]");
        int64_t v = lg->dims[lg->rank - 1];
        KN_TRY(kn_session_keep_logits(s, v));
        memcpy(s->last, (const float *)lg->data + (size_t)(m - 1) * (size_t)v, (size_t)v * sizeof(float));
        past += m;
        done += m;
        kq->len = past;
    }
    return KN_OK;
}

/* The batched prefill program for `left` sequences (as pick_batch). */
static bucket *pick_pbatch(struct kn_session_cuda *c, uint32_t left)
{
    for (uint32_t k = 0; k < c->n_pbatch; k++)
        if (c->pbatch[k].rows >= left)
            return &c->pbatch[k];
    return &c->pbatch[c->n_pbatch - 1];
}

kn_status kn_session_cuda_prefill_batch(kn_session *s, const uint32_t *seqs, const int64_t *const *ids,
                                        const uint32_t *lens, uint32_t n, const kn_cuda_sample *smp, const double *u,
                                        int64_t *next, uint32_t *done)
{
    struct kn_session_cuda *c = s->cuda;
    uint32_t P = c->b[PREFILL].tokens;
    /* every chunk's blocks, padding included, first: a full cache leaves the sequences as they were */
    for (uint32_t i = 0; i < n; i++) {
        sess_seq *q = kn_session_seq(s, seqs[i]);
        uint64_t need = (uint64_t)q->len + ((uint64_t)lens[i] + P - 1) / P * P;
        done[i] = 0;
        if (need > s->kv->cfg.max_seq_len || lens[i] < 2)
            return fail(s, c->pbatch[0].g, "a batched prefill's padded chunks must fit the maximum sequence length");
        if (q->len == 0)
            KN_TRY(kn_kv_seq_reset(s->kv, q->kv_id));
        KN_TRY(kn_kv_seq_reserve(s->kv, q->kv_id, (uint32_t)need, s->d));
    }
    uint32_t *act = c->bact;
    for (;;) {
        uint32_t left = 0;
        for (uint32_t i = 0; i < n; i++)
            left += done[i] < lens[i];
        if (left == 0)
            break;
        if (left == 1) { /* the last prompt going: the rest of it alone, on the [1, P] program */
            uint32_t i = 0;
            while (done[i] == lens[i])
                i++;
            sess_seq *q = kn_session_seq(s, seqs[i]);
            uint32_t len0 = q->len;
            kn_cuda_sample one = *smp;
            one.u = u[i];
            q->len = len0 + done[i];
            kn_status st = run_chunks(s, q, ids[i] + done[i], lens[i] - done[i], &one, &next[i]);
            q->len = len0;
            KN_TRY(st);
            done[i] = lens[i];
            break;
        }
        bucket *b = pick_pbatch(c, left);
        uint32_t m = 0;
        for (uint32_t i = 0; i < n && m < b->rows; i++)
            if (done[i] < lens[i])
                act[m++] = i;
        for (uint32_t r = 0; r < b->rows; r++) {
            sess_seq *q = r < m ? kn_session_seq(s, seqs[act[r]]) : NULL;
            uint32_t i = r < m ? act[r] : 0, past = q ? q->len + done[i] : 0;
            uint32_t mr = !q ? 0 : lens[i] - done[i] < P ? lens[i] - done[i] : P;
            c->brow_seq[r] = q ? q->kv_id : c->scratch;
            kn_kv_seq_get(s->kv, c->brow_seq[r])->len = past;
            for (uint32_t k = 0; k < b->g->n_inputs; k++) {
                input_kind kind = s->roles[k].kind;
                for (uint32_t t = 0; (kind == IN_IDS || kind == IN_POS) && t < P; t++)
                    kn_set_f64(b->in[k]->dtype, b->in[k]->data, (int64_t)r * P + t,
                               (double)(kind == IN_POS ? (int64_t)past + t : t < mr ? ids[i][done[i] + t] : 0));
            }
            for (uint32_t t = 0; t < P; t++)
                c->pbu[(size_t)r * P + t] = q ? u[i] : 0.0;
        }
        KN_TRY(kn_kv_fill_rows(s->kv, c->brow_seq, b->rows, c->max_blocks, c->btable, c->bpast));
        kn_cuda_kv_binding kv = {c->btable, c->bpast, b->rows, c->max_blocks};
        kn_cuda_sample all = *smp;
        all.output = b->logits_out;
        all.row = 0;
        KN_TRY(kn_cuda_session_run_kv_sample_rows(b->cs, (const kn_rt_tensor *const *)b->in, b->g->n_inputs, &kv,
                                                  &all, c->pbu, b->rows * P, c->pbtok, s->d));
        for (uint32_t r = 0; r < m; r++) {
            uint32_t i = act[r], mr = lens[i] - done[i] < P ? lens[i] - done[i] : P;
            sess_seq *q = kn_session_seq(s, seqs[i]);
            done[i] += mr;
            kn_kv_seq_get(s->kv, q->kv_id)->len = q->len + done[i];
            if (done[i] < lens[i])
                continue;
            int32_t t = c->pbtok[(size_t)r * P + mr - 1];
            KN_TRY(check_token(s, t));
            next[i] = t;
        }
        kn_kv_seq_get(s->kv, c->scratch)->len = 0;
    }
    return KN_OK;
}

/* ---- one plan holding both programs (kiln compile --target cuda on a decoder) ---- */

bool kn_plan_is_cuda_decoder(const kn_graph *plan)
{
    return plan && plan->info && !plan->parent &&
           kn_cuda_plan_prefill_present(plan->info->plan_base, plan->info->plan_size);
}

uint32_t kn_plan_cuda_decode_batches(const kn_graph *plan)
{
    return kn_plan_is_cuda_decoder(plan) ? kn_cuda_plan_decode_batches(plan->info->plan_base, plan->info->plan_size)
                                         : 0;
}

/* Program `prog` of a decoder plan as a graph of its own, its inputs of
 * the program's shapes. */
static kn_status load_program(const kn_graph *plan, uint32_t prog, const kn_allocator *a, kn_diag *d, kn_graph **out)
{
    *out = NULL;
    const char *name = plan && plan->info && plan->info->path ? plan->info->path : "<plan>";
    if (!kn_plan_is_cuda_decoder(plan)) {
        kn_diag_add(d, KN_ERROR,
                    "%s: the plan has no CUDA prefill program (kiln compile --target cuda on a decoder writes one)",
                    name);
        return KN_ERR_UNSUPPORTED;
    }
    if (prog >= 2 && prog - 2 >= kn_plan_cuda_decode_batches(plan)) {
        kn_diag_add(d, KN_ERROR, "%s: the plan has no batched CUDA decode program %u (kiln compile --decode-batch)",
                    name, prog - 2);
        return KN_ERR_UNSUPPORTED;
    }
    kn_graph *g;
    KN_TRY(kn_plan_load_memory(plan->info->plan_base, (size_t)plan->info->plan_size, name, a, d, &g));
    g->info->cuda_program = prog;
    /* the inputs take the program's shapes (its INPUT slots) */
    kn_cuda_plan p;
    kn_status st = kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, a, d, &p);
    for (uint32_t i = 0; st == KN_OK && i < g->n_inputs; i++) {
        if (p.input_slot[i] == KN_PLAN_NONE)
            continue;
        const kn_plan_cu_slot *sl = &p.slots[p.input_slot[i]];
        kn_type *t = &g->values[g->inputs[i]].type;
        kn_dim *dims = kn_graph_alloc(g, ((size_t)sl->rank + 1) * sizeof *dims);
        if (!dims) {
            st = KN_ERR_NOMEM;
            break;
        }
        for (int32_t k = 0; k < sl->rank; k++)
            dims[k] = (kn_dim){sl->dims[k], NULL};
        t->kind = KN_TYPE_TENSOR;
        t->dtype = (kn_dtype)sl->dtype;
        t->shape.rank = sl->rank;
        t->shape.dims = dims;
    }
    if (st == KN_OK)
        kn_cuda_plan_free(&p);
    if (st != KN_OK) {
        kn_graph_destroy(g);
        return st;
    }
    *out = g;
    return KN_OK;
}

/* A program's new tokens per run: dim 1 of its first input (input_ids). */
static uint32_t program_tokens(const kn_graph *g)
{
    const kn_type *t = g->n_inputs ? &g->values[g->inputs[0]].type : NULL;
    return t && t->shape.rank == 2 && t->shape.dims[1].value > 0 ? (uint32_t)t->shape.dims[1].value : 1;
}

kn_status kn_plan_load_cuda_prefill(const kn_graph *plan, const kn_allocator *a, kn_diag *d, kn_graph **out)
{
    return load_program(plan, 1, a, d, out);
}

kn_status kn_plan_load_cuda_decode_batch(const kn_graph *plan, uint32_t k, const kn_allocator *a, kn_diag *d,
                                         kn_graph **out)
{
    return load_program(plan, 2 + k, a, d, out);
}

kn_status kn_session_create_device(const kn_graph *plan, kn_session_device dev, const kn_session_options *o,
                                   const kn_allocator *a, kn_diag *d, kn_session **out)
{
    *out = NULL;
    const char *name = plan && plan->info && plan->info->path ? plan->info->path : "<plan>";
    bool decoder = kn_plan_is_cuda_decoder(plan);
    if (dev == KN_DEVICE_CUDA && !decoder) {
        kn_diag_add(d, KN_ERROR,
                    "%s: --device cuda needs a plan with a CUDA prefill and decode program (kiln compile --target "
                    "cuda on a decoder whose attention the kv-mask pass made causal)",
                    name);
        return KN_ERR_UNSUPPORTED;
    }
    if (dev != KN_DEVICE_CPU && decoder) {
        kn_diag *q = kn_diag_create(a, NULL);
        if (!q)
            return KN_ERR_NOMEM;
        bool gpu = kn_cuda_available(q);
        if (!gpu && dev == KN_DEVICE_CUDA) {
            const char *why = kn_diag_size(q) ? kn_diag_message(q, 0, NULL) : "no usable GPU";
            if (strncmp(why, "note: ", 6) == 0)
                why += 6;
            kn_diag_add(d, KN_ERROR, "%s: --device cuda: no GPU to run on (%s)", name, why);
            kn_diag_destroy(q);
            return KN_ERR_UNSUPPORTED;
        }
        kn_diag_destroy(q);
        if (gpu) {
            kn_graph *pre, *bg[KN_PLAN_MAX_DECODE_BATCHES] = {0};
            uint32_t nb = kn_plan_cuda_decode_batches(plan), extra = 0;
            KN_TRY(kn_plan_load_cuda_prefill(plan, a, d, &pre));
            kn_status st = KN_OK;
            for (uint32_t k = 0; st == KN_OK && k < nb; k++) { /* the scratch sequence: 1 token, or P */
                st = kn_plan_load_cuda_decode_batch(plan, k, a, d, &bg[k]);
                uint32_t t = st == KN_OK ? program_tokens(bg[k]) : 0;
                extra = t > extra ? t : extra;
            }
            if (st == KN_OK)
                st = create_cuda(pre, plan, o, extra, a, d, out);
            if (st != KN_OK) {
                for (uint32_t k = 0; k < nb; k++)
                    kn_graph_destroy(bg[k]);
                kn_graph_destroy(pre);
                return st;
            }
            (*out)->cuda->own_prefill = pre;
            bool no_graph = o && o->no_cuda_graph;
            for (uint32_t k = 0; k < nb; k++) {
                if (st == KN_OK)
                    st = kn_session_cuda_add_batch(*out, bg[k], true, no_graph);
                else
                    kn_graph_destroy(bg[k]);
            }
            if (st != KN_OK) {
                kn_session_destroy(*out);
                *out = NULL;
            }
            return st;
        }
    }
    return kn_session_create(plan, o, a, d, out);
}

bool kn_session_on_cuda(const kn_session *s) { return s && s->cuda; }
