/* Token sampling (include/kiln/sampler.h): repetition penalty, temperature,
 * top-k, top-p, then a draw from the softmax with a seeded xoshiro256**. */
#include "kiln/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A candidate: its logit next to its id, so that selecting and sorting
 * read contiguous memory. */
typedef struct cand {
    float w;
    uint32_t id;
} cand;

struct kn_sampler {
    kn_allocator a;
    kn_sampling p;
    uint32_t vocab;
    uint64_t rng[4]; /* xoshiro256** state */
    float *work;     /* vocab: logits after NaN -> -inf and the penalty */
    cand *cands;     /* vocab: candidates, best first when cut */
    double *prob;    /* vocab: unnormalised probabilities of the candidates */
    uint8_t *mark;   /* vocab: ids penalised in this call (reset after) */
};

void kn_sampling_defaults(kn_sampling *p)
{
    if (!p)
        return;
    p->temperature = 0.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
    p->seed = 0;
}

/* ---- PRNG: splitmix64 seeds xoshiro256** (same numbers on every machine) -- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t xoshiro_next(uint64_t s[4])
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform double in [0, 1) with 53 random bits. */
static double uniform01(uint64_t s[4]) { return (double)(xoshiro_next(s) >> 11) * 0x1.0p-53; }

double kn_sampler_uniform(kn_sampler *s) { return s ? uniform01(s->rng) : -1.0; }

/* ---- create / destroy ----------------------------------------------------- */

kn_status kn_sampler_create(const kn_sampling *p, uint32_t vocab, const kn_allocator *a, kn_diag *d,
                            kn_sampler **out)
{
    if (out)
        *out = NULL;
    if (!p || !out) {
        kn_diag_add(d, KN_ERROR, "sampler: %s is NULL", !p ? "the sampling parameters" : "the out pointer");
        return KN_ERR_INVALID;
    }
    if (vocab == 0) {
        kn_diag_add(d, KN_ERROR, "sampler: vocabulary size is 0");
        return KN_ERR_INVALID;
    }
    if (isnan(p->temperature) || isinf(p->temperature)) {
        kn_diag_add(d, KN_ERROR, "sampler: temperature %g is not a finite number", (double)p->temperature);
        return KN_ERR_INVALID;
    }
    if (isnan(p->top_p) || p->top_p < 0.0f) {
        kn_diag_add(d, KN_ERROR, "sampler: top_p %g must be a number >= 0 (>= 1 or 0: no nucleus cut)",
                    (double)p->top_p);
        return KN_ERR_INVALID;
    }
    if (isnan(p->repetition_penalty) || isinf(p->repetition_penalty) || p->repetition_penalty < 0.0f) {
        kn_diag_add(d, KN_ERROR, "sampler: repetition_penalty %g must be a finite number > 0 (1: none)",
                    (double)p->repetition_penalty);
        return KN_ERR_INVALID;
    }
    if (!a)
        a = kn_default_allocator();
    size_t per_id = sizeof(double) + sizeof(cand) + sizeof(float) + sizeof(uint8_t);
    if ((size_t)vocab > (SIZE_MAX - 64) / per_id) {
        kn_diag_add(d, KN_ERROR, "sampler: vocabulary of %u ids is too large", (unsigned)vocab);
        return KN_ERR_LIMIT;
    }
    kn_sampler *s = a->alloc(a->ctx, sizeof *s);
    if (!s) {
        kn_diag_add(d, KN_ERROR, "sampler: out of memory");
        return KN_ERR_NOMEM;
    }
    memset(s, 0, sizeof *s);
    /* One block, doubles first so every array is aligned. */
    char *block = a->alloc(a->ctx, per_id * vocab);
    if (!block) {
        a->free(a->ctx, s);
        kn_diag_add(d, KN_ERROR, "sampler: out of memory for a vocabulary of %u ids", (unsigned)vocab);
        return KN_ERR_NOMEM;
    }
    s->a = *a;
    s->p = *p;
    s->vocab = vocab;
    s->prob = (double *)block;
    s->cands = (cand *)(block + sizeof(double) * vocab);
    s->work = (float *)(block + (sizeof(double) + sizeof(cand)) * vocab);
    s->mark = (uint8_t *)(block + (sizeof(double) + sizeof(cand) + sizeof(float)) * vocab);
    memset(s->mark, 0, vocab);
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return KN_OK;
}

void kn_sampler_destroy(kn_sampler *s)
{
    if (!s)
        return;
    kn_allocator a = s->a;
    a.free(a.ctx, s->prob);
    a.free(a.ctx, s);
}

/* ---- ordering: larger logit first, then lower id (a total order) ---------- */

static bool better(cand x, cand y) { return x.w > y.w || (x.w == y.w && x.id < y.id); }

static int cmp_best_first(const void *a, const void *b)
{
    cand x = *(const cand *)a, y = *(const cand *)b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

/* Sift-down for a min-heap (the root is the worst kept candidate). */
static void heap_down(cand *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && better(h[m], h[l]))
            m = l;
        if (r < n && better(h[m], h[r]))
            m = r;
        if (m == i)
            return;
        cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* The k best of w[0..vocab) into c[0..k), best first: a k-element min-heap
 * over one pass (O(V log k)), then sorted. */
static void select_top(const float *w, uint32_t vocab, uint32_t k, cand *c)
{
    for (uint32_t i = 0; i < k; i++)
        c[i] = (cand){w[i], i};
    for (uint32_t i = k / 2; i-- > 0;)
        heap_down(c, k, i);
    for (uint32_t i = k; i < vocab; i++) {
        cand x = {w[i], i};
        if (better(x, c[0])) {
            c[0] = x;
            heap_down(c, k, 0);
        }
    }
    qsort(c, k, sizeof *c, cmp_best_first);
}

/* ---- pick ------------------------------------------------------------------- */

/* Copies the logits with NaN -> -inf and applies the CTRL repetition
 * penalty once per distinct id in the context (out-of-range ids are
 * ignored): positive logits are divided by it, negative ones multiplied. */
static void prepare(kn_sampler *s, const float *logits, const int64_t *context, uint32_t n_context)
{
    float *w = s->work;
    for (uint32_t i = 0; i < s->vocab; i++)
        w[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    float pen = s->p.repetition_penalty;
    if (!context || pen == 0.0f || pen == 1.0f)
        return;
    for (uint32_t i = 0; i < n_context; i++) {
        int64_t id = context[i];
        if (id < 0 || id >= (int64_t)s->vocab || s->mark[id])
            continue;
        s->mark[id] = 1;
        w[id] = w[id] > 0.0f ? w[id] / pen : w[id] * pen;
    }
    for (uint32_t i = 0; i < n_context; i++) {
        int64_t id = context[i];
        if (id >= 0 && id < (int64_t)s->vocab)
            s->mark[id] = 0;
    }
}

static uint32_t argmax(const float *w, uint32_t vocab)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < vocab; i++)
        if (w[i] > w[best])
            best = i;
    return best;
}

/* Top-p without top-k: the candidates that can be in the nucleus, sorted
 * best first, without sorting the whole vocabulary. With e_i the softmax
 * numerators and M their sum, any threshold t whose set {e_i >= t} holds
 * at least top_p * M contains the nucleus (the shortest best-first prefix
 * reaching top_p * M): everything above the nucleus's last element holds
 * less. So bisect t (on a mass with a 1e-9 margin for rounding) until the
 * set is small, then sort only the set. O(V) per step, a few dozen steps
 * at most. */
static uint32_t nucleus_candidates(kn_sampler *s, double max, double inv_t, double *mass_out)
{
    const float *w = s->work;
    uint32_t vocab = s->vocab;
    double *e = s->prob, mass = 0.0;
    for (uint32_t i = 0; i < vocab; i++)
        mass += (e[i] = exp(((double)w[i] - max) * inv_t));
    *mass_out = mass;
    double need = (double)s->p.top_p * mass * (1.0 + 1e-9);
    double lo = 0.0, hi = 1.0 + 1e-12; /* {e >= lo} holds `need`; the largest e is 1 */
    uint32_t n_lo = vocab;
    /* until the set is small, or t is known within 0.1% (then the set is
     * the nucleus and the few ids within 0.1% of its last one) */
    for (int step = 0; step < 64 && n_lo > 1024 && need < mass && hi - lo > 1e-3 * hi; step++) {
        double mid = 0.5 * (lo + hi), m = 0.0;
        uint32_t n = 0;
        for (uint32_t i = 0; i < vocab; i++)
            if (e[i] >= mid) {
                m += e[i];
                n++;
            }
        if (m >= need) {
            lo = mid;
            n_lo = n;
        } else {
            hi = mid;
        }
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < vocab; i++)
        if (e[i] >= lo)
            s->cands[n++] = (cand){w[i], i};
    qsort(s->cands, n, sizeof *s->cands, cmp_best_first);
    return n;
}

int64_t kn_sampler_pick(kn_sampler *s, const float *logits, const int64_t *context, uint32_t n_context)
{
    if (!s || !logits)
        return -1;
    prepare(s, logits, context, n_context);
    float *w = s->work;
    uint32_t vocab = s->vocab;
    uint32_t best = argmax(w, vocab);
    /* Greedy; also the answer when no softmax exists (every logit -inf, or
     * +inf among them) and when the cuts can keep only one id. */
    if (s->p.temperature <= 0.0f || s->p.top_k == 1 || isinf(w[best]))
        return best;
    double inv_t = 1.0 / (double)s->p.temperature;
    if (!isfinite(inv_t) || inv_t > 1e30)
        return best; /* a temperature so small it is greedy */
    double max = (double)w[best];
    bool cut_p = s->p.top_p > 0.0f && s->p.top_p < 1.0f;
    cand *c = s->cands;
    uint32_t n;
    double mass = 0.0; /* top-p alone: the softmax mass of the whole vocabulary */
    if (s->p.top_k > 0 && s->p.top_k < vocab) {
        n = s->p.top_k;
        select_top(w, vocab, n, c);
    } else if (cut_p) {
        n = nucleus_candidates(s, max, inv_t, &mass);
    } else {
        n = vocab;
        for (uint32_t i = 0; i < vocab; i++)
            c[i] = (cand){w[i], i};
    }
    /* Softmax of (w - max) / T over the candidates, in double. */
    double total = 0.0;
    for (uint32_t i = 0; i < n; i++) {
        double e = exp(((double)c[i].w - max) * inv_t);
        s->prob[i] = e;
        total += e;
    }
    if (cut_p) {
        /* Nucleus: the shortest best-first prefix whose share of the mass
         * (of the top-k when cut, else of everything) reaches top_p; at
         * least one id. */
        double want = (double)s->p.top_p * (mass > 0.0 ? mass : total), cum = 0.0;
        uint32_t keep = 0;
        while (keep < n) {
            cum += s->prob[keep++];
            if (cum >= want)
                break;
        }
        n = keep;
        total = cum;
    }
    double r = uniform01(s->rng) * total, cum = 0.0;
    uint32_t last = c[0].id;
    for (uint32_t i = 0; i < n; i++) {
        if (s->prob[i] <= 0.0)
            continue;
        last = c[i].id;
        cum += s->prob[i];
        if (r < cum)
            return c[i].id;
    }
    return last; /* rounding left r at the very top: the last id with mass */
}
