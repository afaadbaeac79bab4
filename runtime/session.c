/* Sessions (include/kiln/session.h): bind a decoder plan's inputs for one
 * sequence at a time, keep its KV cache (the paged cache of kv_cache.c, or
 * the present tensors of a plan the kv-cache pass left alone) and run the
 * CPU backend. Generation lives in generate.c. */
#include "runtime/session_impl.h"
#include "ir/arena.h"
#include "runtime/cpu/exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_SEQ 2048

void kn_session_options_defaults(kn_session_options *o) { memset(o, 0, sizeof *o); }

const char *kn_session_meta(const kn_graph *g, const char *key)
{
    const kn_model_info *m = g->root ? g->root->info : g->info;
    for (uint32_t i = 0; m && i < m->n_metadata; i++) {
        const char *k = m->metadata[i].key;
        if (strncmp(k, "meta.", 5) == 0) /* as a plan stores it */
            k += 5;
        if (strcmp(k, key) == 0)
            return m->metadata[i].value;
    }
    return NULL;
}

static bool meta_u32(const kn_graph *g, const char *key, uint32_t *out)
{
    const char *s = kn_session_meta(g, key);
    if (!s)
        return false;
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (e == s || *e || v == 0 || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool in_list(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; p && *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        p = c ? c + 1 : NULL;
    }
    return false;
}

static kn_status bad(kn_session *s, const char *fmt, const char *name)
{
    kn_diag_add(s->d, KN_ERROR, fmt, s->file, name);
    return KN_ERR_INVALID;
}

/* Gives every graph input a role; finds logits and the presents. */
static kn_status bind_interface(kn_session *s)
{
    const kn_graph *g = s->g;
    const char *past_list = kn_session_meta(g, "kiln.kv.past_inputs");
    s->roles = kn_mem_alloc(s->a, ((size_t)g->n_inputs + 1) * sizeof *s->roles);
    s->present_out = kn_mem_alloc(s->a, ((size_t)g->n_inputs + 1) * sizeof *s->present_out);
    if (!s->roles || !s->present_out)
        return KN_ERR_NOMEM;
    bool have_ids = false;
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        const kn_type *t = &v->type;
        input_role *r = &s->roles[i];
        memset(r, 0, sizeof *r);
        bool int_ok = t->dtype == KN_I64 || t->dtype == KN_I32;
        if (strcmp(v->name, "input_ids") == 0 && int_ok) {
            r->kind = IN_IDS;
            have_ids = true;
        } else if (strcmp(v->name, "attention_mask") == 0 && int_ok) {
            r->kind = IN_MASK;
        } else if (strcmp(v->name, "position_ids") == 0 && int_ok) {
            r->kind = IN_POS;
        } else if ((past_list ? in_list(past_list, v->name) : strncmp(v->name, "past", 4) == 0) &&
                   t->kind == KN_TYPE_TENSOR && t->dtype == KN_F32 && t->shape.rank == 4 &&
                   t->shape.dims[1].value > 0 && t->shape.dims[3].value > 0) {
            r->kind = IN_PAST;
            r->heads = t->shape.dims[1].value;
            r->dim = t->shape.dims[3].value;
            r->past_index = s->n_past++;
        } else {
            return bad(s,
                       "%s: input '%s' is not one a session can fill (input_ids, attention_mask, position_ids, "
                       "past* float32 [batch, heads, past, head_dim] with static heads and head_dim)",
                       v->name);
        }
        r->dtype = t->dtype;
    }
    if (!have_ids)
        return bad(s, "%s: %s: the plan has no input_ids input", "generation");
    s->logits_out = 0;
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (strcmp(g->values[g->outputs[i]].name, "logits") == 0)
            s->logits_out = i;
    const kn_type *lt = &g->values[g->outputs[s->logits_out]].type;
    if (lt->kind == KN_TYPE_TENSOR && lt->shape.rank >= 1 && lt->shape.dims[lt->shape.rank - 1].value > 0)
        s->vocab = (uint32_t)lt->shape.dims[lt->shape.rank - 1].value;
    if (s->cache == KN_CACHE_PAGED)
        return KN_OK;
    uint32_t np = 0;
    for (uint32_t i = 0; i < g->n_outputs; i++)
        if (strncmp(g->values[g->outputs[i]].name, "present", 7) == 0 && np < s->n_past)
            s->present_out[np++] = i;
    s->cache = s->n_past ? KN_CACHE_TENSORS : KN_CACHE_NONE;
    if (np != s->n_past) {
        kn_diag_add(s->d, KN_ERROR, "%s: %u past* inputs but %u present* outputs", s->file, s->n_past, np);
        return KN_ERR_INVALID;
    }
    return KN_OK;
}

static kn_status paged_config(kn_session *s, const kn_session_options *o, kn_kv_config *cfg)
{
    const kn_graph *g = s->g;
    if (!meta_u32(g, "kiln.kv.layers", &cfg->n_layers) || !meta_u32(g, "kiln.kv.kv_heads", &cfg->kv_heads) ||
        !meta_u32(g, "kiln.kv.head_dim", &cfg->head_dim) || !meta_u32(g, "kiln.kv.block_size", &cfg->block_size) ||
        !meta_u32(g, "kiln.kv.blocks", &cfg->n_blocks) || !meta_u32(g, "kiln.kv.max_seq_len", &cfg->max_seq_len)) {
        kn_diag_add(s->d, KN_ERROR, "%s: the plan's kiln.kv.* metadata is incomplete or malformed", s->file);
        return KN_ERR_INVALID;
    }
    /* a plan written before the key existed: float32 */
    const char *dt = kn_session_meta(g, "kiln.kv.dtype");
    cfg->dtype = kn_kv_dtype_parse(dt);
    if (cfg->dtype == KN_UNDEFINED) {
        kn_diag_add(s->d, KN_ERROR, "%s: the plan's kiln.kv.dtype '%s' is not float32, float16 or bfloat16", s->file,
                    dt);
        return KN_ERR_INVALID;
    }
    uint64_t plan_tokens = (uint64_t)cfg->n_blocks * cfg->block_size;
    if (o->block_size) {
        cfg->block_size = o->block_size;
        cfg->n_blocks = (uint32_t)((plan_tokens + o->block_size - 1) / o->block_size);
    }
    if (o->max_seq_len) {
        cfg->max_seq_len = o->max_seq_len;
        if ((uint64_t)cfg->n_blocks * cfg->block_size < o->max_seq_len && !o->kv_cache_mem)
            cfg->n_blocks = (o->max_seq_len + cfg->block_size - 1) / cfg->block_size;
    }
    if (o->kv_cache_mem) {
        uint64_t per = kn_kv_block_bytes(cfg), blocks = per ? o->kv_cache_mem / per : 0;
        if (blocks == 0 || blocks > UINT32_MAX) {
            kn_diag_add(s->d, KN_ERROR, "%s: KV cache memory %llu bytes does not hold one block of %llu bytes",
                        s->file, (unsigned long long)o->kv_cache_mem, (unsigned long long)per);
            return KN_ERR_INVALID;
        }
        cfg->n_blocks = (uint32_t)blocks;
        if (!o->max_seq_len && blocks * cfg->block_size < cfg->max_seq_len)
            cfg->max_seq_len = (uint32_t)(blocks * cfg->block_size);
    }
    return KN_OK;
}

kn_status kn_session_create(const kn_graph *plan, const kn_session_options *o, const kn_allocator *a, kn_diag *d,
                            kn_session **out)
{
    return kn_session_create_on(plan, o, a, d, true, out);
}

kn_status kn_session_create_on(const kn_graph *plan, const kn_session_options *o, const kn_allocator *a, kn_diag *d,
                               bool host_pools, kn_session **out)
{
    *out = NULL;
    static const kn_session_options none = {0};
    if (!o)
        o = &none;
    if (!a)
        a = kn_default_allocator();
    kn_session *s = kn_mem_alloc(a, sizeof *s);
    if (!s)
        return KN_ERR_NOMEM;
    memset(s, 0, sizeof *s);
    s->a = a;
    s->d = d;
    s->g = plan;
    s->no_cache = o->no_cache;
    s->file = plan->info && plan->info->path ? plan->info->path : "<plan>";
    s->cache = kn_session_meta(plan, "kiln.kv.layers") ? KN_CACHE_PAGED : KN_CACHE_NONE;
    kn_status st = bind_interface(s);
    for (uint32_t i = 0; st == KN_OK && i < plan->n_inputs; i++) {
        const kn_type *t = &plan->values[plan->inputs[i]].type;
        if (s->roles[i].kind == IN_IDS && t->kind == KN_TYPE_TENSOR && t->shape.rank == 2 &&
            t->shape.dims[1].value == 1)
            s->one_token = true;
    }
    if (st == KN_OK && s->cache == KN_CACHE_PAGED) {
        kn_kv_config cfg = {0};
        st = paged_config(s, o, &cfg);
        if (st == KN_OK)
            st = host_pools ? kn_kv_create(&cfg, a, d, &s->kv) : kn_kv_create_tables(&cfg, a, d, &s->kv);
        if (st == KN_OK)
            s->max_seq_len = cfg.max_seq_len;
    } else if (st == KN_OK) {
        if (o->kv_cache_mem || o->block_size) {
            kn_diag_add(d, KN_ERROR,
                        "%s: --kv-cache-mem / --kv-block-size need a plan with the paged KV cache (the kv-cache pass "
                        "did not rewrite this one: compile at -O2)",
                        s->file);
            st = KN_ERR_INVALID;
        }
        s->max_seq_len = o->max_seq_len ? o->max_seq_len : DEFAULT_MAX_SEQ;
    }
    if (st != KN_OK) {
        kn_session_destroy(s);
        return st;
    }
    *out = s;
    return KN_OK;
}

static void seq_clear(kn_session *s, sess_seq *q)
{
    for (uint32_t i = 0; q->past && i < s->n_past; i++) {
        kn_rt_tensor_free(s->a, q->past[i]);
        q->past[i] = NULL;
    }
}

void kn_session_destroy(kn_session *s)
{
    if (!s)
        return;
    kn_session_cuda_free(s);
    for (uint32_t i = 0; i < s->n_seqs; i++) {
        seq_clear(s, &s->seqs[i]);
        kn_mem_free(s->a, s->seqs[i].past);
        kn_mem_free(s->a, s->seqs[i].hist);
    }
    kn_mem_free(s->a, s->seqs);
    kn_kv_destroy(s->kv);
    kn_mem_free(s->a, s->roles);
    kn_mem_free(s->a, s->present_out);
    kn_mem_free(s->a, s->last);
    kn_mem_free(s->a, s);
}

void kn_session_get_info(const kn_session *s, kn_session_info *out)
{
    memset(out, 0, sizeof *out);
    out->cache = s->cache;
    out->no_cache = s->no_cache;
    out->vocab = s->vocab;
    out->max_seq_len = s->max_seq_len;
    if (s->kv) {
        out->n_layers = s->kv->cfg.n_layers;
        out->kv_heads = s->kv->cfg.kv_heads;
        out->head_dim = s->kv->cfg.head_dim;
        out->block_size = s->kv->cfg.block_size;
        out->n_blocks = s->kv->cfg.n_blocks;
        out->free_blocks = s->kv->n_free;
        out->kv_bytes = kn_kv_bytes(&s->kv->cfg);
        out->kv_dtype = kn_kv_dtype(&s->kv->cfg);
    }
}

sess_seq *kn_session_seq(const kn_session *s, uint32_t id)
{
    return id < s->n_seqs && s->seqs[id].used ? &s->seqs[id] : NULL;
}

kn_status kn_session_add_sequence(kn_session *s, uint32_t *id)
{
    uint32_t i = 0;
    while (i < s->n_seqs && s->seqs[i].used)
        i++;
    if (i == s->n_seqs) {
        KN_TRY(kn_mem_grow(s->a, (void **)&s->seqs, &s->cap_seqs, s->n_seqs + 1, sizeof *s->seqs));
        memset(&s->seqs[i], 0, sizeof s->seqs[i]);
        s->n_seqs++;
    }
    sess_seq *q = &s->seqs[i];
    if (!q->past && s->n_past) {
        q->past = kn_mem_alloc(s->a, s->n_past * sizeof *q->past);
        if (!q->past)
            return KN_ERR_NOMEM;
        memset(q->past, 0, s->n_past * sizeof *q->past);
    }
    if (s->kv)
        KN_TRY(kn_kv_seq_add(s->kv, &q->kv_id));
    q->used = true;
    q->len = 0;
    *id = i;
    return KN_OK;
}

kn_status kn_session_free_sequence(kn_session *s, uint32_t id)
{
    sess_seq *q = kn_session_seq(s, id);
    if (!q) {
        kn_diag_add(s->d, KN_ERROR, "session: no sequence %u", id);
        return KN_ERR_INVALID;
    }
    seq_clear(s, q);
    if (s->kv)
        KN_TRY(kn_kv_seq_free(s->kv, q->kv_id));
    q->used = false;
    q->len = 0;
    return KN_OK;
}

uint32_t kn_session_sequence_length(const kn_session *s, uint32_t id)
{
    const sess_seq *q = kn_session_seq(s, id);
    return q ? q->len : 0;
}

kn_status kn_session_check_ids(kn_session *s, const int64_t *ids, uint32_t n, const char *what)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] < 0 || (s->vocab && ids[i] >= s->vocab)) {
            kn_diag_add(s->d, KN_ERROR, "%s: %s: token id %lld at position %u is outside the vocabulary (0..%u)",
                        s->file, what, (long long)ids[i], i, s->vocab ? s->vocab - 1 : 0);
            return KN_ERR_INVALID;
        }
    return KN_OK;
}

/* An int tensor [1, n] of the input's dtype: ids[i], or base + i when ids
 * is NULL. */
static kn_status int_row(kn_session *s, kn_dtype dt, const int64_t *ids, int64_t base, int64_t n, kn_rt_tensor **out)
{
    int64_t dims[2] = {1, n};
    KN_TRY(kn_rt_tensor_new(s->a, dt, 2, dims, out));
    for (int64_t i = 0; i < n; i++) {
        int64_t v = ids ? ids[i] : base + i;
        if (dt == KN_I64)
            ((int64_t *)(*out)->data)[i] = v;
        else
            ((int32_t *)(*out)->data)[i] = (int32_t)v;
    }
    return KN_OK;
}

/* The inputs for `n` tokens `ids` after `past` cached ones. */
static kn_status make_inputs(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n, uint32_t past,
                             kn_rt_tensor **in)
{
    for (uint32_t i = 0; i < s->g->n_inputs; i++) {
        const input_role *r = &s->roles[i];
        switch (r->kind) {
        case IN_IDS:
            KN_TRY(int_row(s, r->dtype, ids, 0, n, &in[i]));
            break;
        case IN_MASK:
            KN_TRY(int_row(s, r->dtype, NULL, 0, (int64_t)past + n, &in[i]));
            if (r->dtype == KN_I64)
                for (int64_t k = 0; k < in[i]->numel; k++)
                    ((int64_t *)in[i]->data)[k] = 1;
            else
                for (int64_t k = 0; k < in[i]->numel; k++)
                    ((int32_t *)in[i]->data)[k] = 1;
            break;
        case IN_POS:
            KN_TRY(int_row(s, r->dtype, NULL, past, n, &in[i]));
            break;
        case IN_PAST: {
            int64_t dims[4] = {1, r->heads, past, r->dim};
            if (s->cache == KN_CACHE_TENSORS && past) {
                KN_TRY(kn_rt_tensor_view(s->a, KN_F32, 4, q->past[r->past_index]->dims,
                                         q->past[r->past_index]->data, &in[i]));
            } else if (s->cache == KN_CACHE_PAGED) {
                /* shape only: the graph reads Shape(past); the data is in the cache */
                static float none;
                KN_TRY(kn_rt_tensor_view(s->a, KN_F32, 4, dims, &none, &in[i]));
                in[i]->data = NULL;
            } else {
                dims[2] = 0;
                KN_TRY(kn_rt_tensor_new(s->a, KN_F32, 4, dims, &in[i]));
            }
            break;
        }
        }
    }
    return KN_OK;
}

kn_status kn_session_keep_logits(kn_session *s, int64_t v)
{
    if (s->vocab == 0)
        s->vocab = (uint32_t)v;
    if (s->cap_last < v) {
        float *p = kn_mem_realloc(s->a, s->last, (size_t)v * sizeof *p);
        if (!p)
            return KN_ERR_NOMEM;
        s->last = p, s->cap_last = (uint32_t)v;
    }
    return KN_OK;
}

/* Runs n tokens (the whole history in no-cache mode) and keeps the cache. */
static kn_status run_tokens(kn_session *s, sess_seq *q, const int64_t *ids, uint32_t n, uint32_t past,
                            float *logits_out)
{
    const kn_graph *g = s->g;
    kn_rt_tensor **in = kn_mem_alloc(s->a, ((size_t)g->n_inputs + 1) * sizeof *in);
    kn_rt_tensor **out = kn_mem_alloc(s->a, ((size_t)g->n_outputs + 1) * sizeof *out);
    kn_status st = in && out ? KN_OK : KN_ERR_NOMEM;
    if (in)
        memset(in, 0, ((size_t)g->n_inputs + 1) * sizeof *in);
    if (out)
        memset(out, 0, ((size_t)g->n_outputs + 1) * sizeof *out);
    kn_kv_run run = {s->kv, &q->kv_id, 1};
    if (st == KN_OK && s->kv) {
        if (past == 0)
            st = kn_kv_seq_reset(s->kv, q->kv_id);
        if (st == KN_OK)
            st = kn_kv_seq_reserve(s->kv, q->kv_id, past + n, s->d);
    }
    if (st == KN_OK)
        st = make_inputs(s, q, ids, n, past, in);
    if (st == KN_OK)
        st = kn_cpu_run_kv(g, s->a, s->d, (const kn_rt_tensor *const *)in, g->n_inputs, out, g->n_outputs, NULL,
                           NULL, s->kv ? &run : NULL);
    const kn_rt_tensor *lg = st == KN_OK ? out[s->logits_out] : NULL;
    if (st == KN_OK && (lg->dtype != KN_F32 || lg->rank < 2 || lg->dims[lg->rank - 2] != n ||
                        lg->numel != (int64_t)n * lg->dims[lg->rank - 1])) {
        kn_diag_add(s->d, KN_ERROR, "%s: logits must be float32 [1, %u, vocab]", s->file, n);
        st = KN_ERR_INVALID;
    }
    if (st == KN_OK)
        st = kn_session_keep_logits(s, lg->dims[lg->rank - 1]);
    if (st == KN_OK) {
        int64_t v = lg->dims[lg->rank - 1];
        memcpy(s->last, (const float *)lg->data + (size_t)(n - 1) * (size_t)v, (size_t)v * sizeof(float));
        if (logits_out)
            memcpy(logits_out, s->last, (size_t)v * sizeof(float));
        if (s->kv)
            kn_kv_seq_get(s->kv, q->kv_id)->len = past + n;
        if (s->cache == KN_CACHE_TENSORS && !s->no_cache)
            for (uint32_t k = 0; k < s->n_past; k++) {
                kn_rt_tensor_free(s->a, q->past[k]);
                q->past[k] = out[s->present_out[k]];
                out[s->present_out[k]] = NULL;
            }
    }
    for (uint32_t i = 0; in && i < g->n_inputs; i++)
        kn_rt_tensor_free(s->a, in[i]);
    for (uint32_t i = 0; out && i < g->n_outputs; i++)
        kn_rt_tensor_free(s->a, out[i]);
    kn_mem_free(s->a, in);
    kn_mem_free(s->a, out);
    return st;
}

kn_status kn_session_forward(kn_session *s, uint32_t seq, const int64_t *tokens, uint32_t n, float *logits_out)
{
    return kn_session_forward_on(s, seq, tokens, n, logits_out, NULL, NULL);
}

kn_status kn_session_forward_on(kn_session *s, uint32_t seq, const int64_t *tokens, uint32_t n, float *logits_out,
                                const struct kn_cuda_sample *smp, int64_t *token)
{
    sess_seq *q = kn_session_seq(s, seq);
    if (!q) {
        kn_diag_add(s->d, KN_ERROR, "session: no sequence %u", seq);
        return KN_ERR_INVALID;
    }
    if (n == 0 || !tokens) {
        kn_diag_add(s->d, KN_ERROR, "%s: sequence %u: no tokens to run", s->file, seq);
        return KN_ERR_INVALID;
    }
    KN_TRY(kn_session_check_ids(s, tokens, n, "forward"));
    if ((uint64_t)q->len + n > s->max_seq_len) {
        kn_diag_add(s->d, KN_ERROR,
                    "%s: sequence %u would hold %llu tokens, over the maximum sequence length %u (--max-seq-len)",
                    s->file, seq, (unsigned long long)q->len + n, s->max_seq_len);
        return KN_ERR_INVALID;
    }
    KN_TRY(kn_mem_grow(s->a, (void **)&q->hist, &q->cap_hist, q->len + n, sizeof *q->hist));
    memcpy(q->hist + q->len, tokens, n * sizeof *tokens);
    bool recompute = s->no_cache || s->cache == KN_CACHE_NONE;
    if (!s->cuda && !recompute && s->one_token && n > 1) {
        /* one token per run; on an error the sequence keeps what it held */
        uint32_t len = q->len;
        for (uint32_t i = 0; i < n; i++) {
            kn_status st = run_tokens(s, q, tokens + i, 1, q->len, i + 1 == n ? logits_out : NULL);
            if (st != KN_OK) {
                q->len = len;
                if (s->kv && kn_kv_seq_get(s->kv, q->kv_id))
                    kn_kv_seq_get(s->kv, q->kv_id)->len = len;
                return st;
            }
            q->len++;
        }
        return KN_OK;
    }
    if (smp && !s->cuda) {
        kn_diag_add(s->d, KN_ERROR, "%s: sampling on the device needs a CUDA session", s->file);
        return KN_ERR_INVALID;
    }
    kn_status st = s->cuda && smp ? kn_session_cuda_forward_sample(s, q, tokens, n, smp, token)
                   : s->cuda      ? kn_session_cuda_forward(s, q, tokens, n, logits_out)
                   : recompute ? run_tokens(s, q, q->hist, q->len + n, 0, logits_out)
                               : run_tokens(s, q, tokens, n, q->len, logits_out);
    if (st == KN_OK)
        q->len += n;
    return st;
}
