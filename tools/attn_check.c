/* kiln-attn-check: the attention kernels of codegen/cuda/attn_kernels.h
 * against a double-precision reference with the CPU kernels' semantics
 * (runtime/cpu/k_fused_attn.c for contiguous attention,
 * runtime/cpu/k_paged_attn.c for the paged cache: K/V appended, then
 * attention over past + new tokens through the block table). The paged
 * cases use runtime/kv_cache.c itself (blocks handed out and freed so the
 * block tables are not the identity), upload its pools as they are, and
 * compare the pools after the append kernel with the host's appends; a
 * float16/bfloat16 case runs over float32 pools and over pools of its own
 * dtype (kiln.kv.dtype of a --precision fp16/bf16 plan).
 *
 *   kiln-attn-check            every kernel source NVRTC-compiled for
 *                              sm_80/86/89/90 + PTX, then each case run on
 *                              the host (tools/emu_host.c)
 *   kiln-attn-check --gpu      the same cases on the GPU (driver API), plus
 *                              timings of the fast kernels at LLM shapes
 *
 * Prints a line per case and kernel and "N passed, N failed"; exit 1 on a
 * failure; --gpu without a usable GPU prints why and exits 77 (skip). */
#include "codegen/cuda/attn_kernels.h"
#include "codegen/cuda/lower.h"
#include "codegen/cuda/program.h"
#include "kernel_check.h"
#include "runtime/cpu/util.h"
#include "runtime/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* where kernels run: kernel_check.h (the host emulator or the GPU) */
static int n_pass, n_fail;

static kn_status kernel_of(char *(*gen)(const kn_attn_spec *, char *, size_t), const kn_attn_spec *sp,
                           const char *entry, kn_kc_fn *f)
{
    char err[256];
    char *src = gen(sp, err, sizeof err);
    if (!src) {
        fprintf(stderr, "%s: %s\n", entry, err);
        return KN_ERR_UNSUPPORTED;
    }
    bool ok = kn_kc_build(src, entry, f);
    free(src);
    return ok ? KN_OK : KN_ERR_INTERNAL;
}

/* ---- data ---- */

static uint64_t rng = 88172645463325252ull;
static double urand(void) { return kn_kc_urand(&rng); }

/* n values of dtype t in [-amp, amp], and their float values as stored. */
static void *fill(kn_dtype t, size_t n, double amp, float *as_float)
{
    void *p = malloc(n * kn_dt_size(t) + 1);
    for (size_t i = 0; p && i < n; i++) {
        kn_set_f64(t, p, (int64_t)i, urand() * amp);
        as_float[i] = (float)kn_get_f64(t, p, (int64_t)i);
    }
    return p;
}

static double tol_of(kn_dtype t, bool fast) { return t == KN_BF16 ? 1.6e-2 : t == KN_F16 ? 2e-3 : fast ? 2e-5 : 2e-6; }

static void report(const char *name, const char *kernel, const float *got_f, const void *got, kn_dtype t,
                   const double *want, size_t n, bool fast)
{
    double worst = 0, tol = tol_of(t, fast);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double g = got ? kn_get_f64(t, got, (int64_t)i) : got_f[i];
        double e = fabs(g - want[i]) / (1.0 + fabs(want[i]));
        if (!(e <= worst)) {
            worst = e;
            at = i;
        }
    }
    bool ok = worst <= tol;
    n_pass += ok;
    n_fail += !ok;
    printf("%s %-34s %-16s max err %.2e (tol %.0e)", ok ? "PASS" : "FAIL", name, kernel, worst, tol);
    if (!ok)
        printf(" at %zu: %g vs %g", at, got ? kn_get_f64(t, got, (int64_t)at) : got_f[at], want[at]);
    printf("\n");
}

/* ---- contiguous attention ---- */

typedef struct ccase {
    const char *name;
    kn_dtype dt;
    int d;
    int64_t batch, qh, kvh, sq, sk;
    int causal;
    kn_attn_mask_kind mask; /* mask shape [batch, 1, sq, sk]; bool: some rows fully masked */
} ccase;

static void ref_attention(const ccase *c, const float *q, const float *k, const float *v, const float *mask,
                          const kn_attn_params *p, double *y)
{
    int64_t D = c->d, sk = c->sk;
    double *s = malloc((size_t)sk * sizeof *s);
    for (int64_t b = 0; b < c->batch; b++)
        for (int64_t h = 0; h < c->qh; h++)
            for (int64_t i = 0; i < c->sq; i++) {
                const float *qr = q + ((b * c->qh + h) * c->sq + i) * D;
                int64_t hk = h / p->group;
                bool all_masked = true;
                double mx = -INFINITY;
                for (int64_t j = 0; j < sk; j++) {
                    const float *kr = k + ((b * c->kvh + hk) * sk + j) * D;
                    double dot = 0, bias = 0;
                    for (int64_t d = 0; d < D; d++)
                        dot += (double)qr[d] * kr[d];
                    if (c->causal && j > i + p->past)
                        bias = -INFINITY;
                    else if (c->mask)
                        bias = mask[b * p->mst[0] + h * p->mst[1] + i * p->mst[2] + j * p->mst[3]];
                    all_masked = all_masked && isinf(bias) && bias < 0;
                    s[j] = dot * (double)p->scale + bias;
                    mx = s[j] > mx ? s[j] : mx;
                }
                double sum = 0;
                for (int64_t j = 0; j < sk; j++)
                    sum += s[j] = all_masked ? 0.0 : exp(s[j] - mx);
                double *yr = y + ((b * c->qh + h) * c->sq + i) * D;
                for (int64_t d = 0; d < D; d++) {
                    double a = 0;
                    for (int64_t j = 0; j < sk && !all_masked; j++)
                        a += s[j] / sum * v[((b * c->kvh + hk) * sk + j) * D + d];
                    yr[d] = a;
                }
            }
    free(s);
}

static void run_contiguous(const ccase *c)
{
    int64_t D = c->d;
    size_t nq = (size_t)(c->batch * c->qh * c->sq * D), nk = (size_t)(c->batch * c->kvh * c->sk * D);
    size_t nm = (size_t)(c->batch * c->sq * c->sk);
    float *qf = malloc(nq * 4), *kf = malloc(nk * 4), *vf = malloc(nk * 4), *mf = malloc((nm + 1) * 4);
    void *q = fill(c->dt, nq, 1.0, qf), *k = fill(c->dt, nk, 1.0, kf), *v = fill(c->dt, nk, 1.0, vf);
    kn_dtype mdt = c->mask == KN_MASK_BOOL ? KN_BOOL : c->dt;
    void *m = malloc(nm * kn_dt_size(mdt) + 1);
    for (size_t i = 0; i < nm; i++) {
        int64_t row = (int64_t)(i / (size_t)c->sk), j = (int64_t)(i % (size_t)c->sk);
        if (c->mask == KN_MASK_BOOL) {
            bool keep = row % 7 != 3 && (j + row) % 5 != 0; /* row 3 (mod 7) fully masked */
            ((uint8_t *)m)[i] = keep;
            mf[i] = keep ? 0.0f : -INFINITY;
        } else {
            kn_set_f64(mdt, m, (int64_t)i, urand() * 2.0);
            mf[i] = (float)kn_get_f64(mdt, m, (int64_t)i);
        }
    }
    kn_attn_params p = {c->batch, c->qh, c->kvh, c->sq, c->sk, c->qh / c->kvh, c->sk - c->sq, {0}, c->sk,
                        (float)(1.0 / sqrt((double)D)), c->causal};
    if (c->mask) {
        p.mst[0] = c->sq * c->sk;
        p.mst[1] = 0;
        p.mst[2] = c->sk;
        p.mst[3] = 1;
    }
    double *want = malloc(nq * sizeof *want);
    ref_attention(c, qf, kf, vf, mf, &p, want);
    kn_attn_spec sp = {c->dt, c->dt, mdt, c->mask, c->d, false};
    size_t es = kn_dt_size(c->dt);
    void *dq = kn_kc_upload(q, nq * es), *dk = kn_kc_upload(k, nk * es), *dv = kn_kc_upload(v, nk * es);
    void *dm = kn_kc_upload(m, nm * kn_dt_size(mdt) + 1), *dy = kn_kc_alloc(nq * es);
    void *got = malloc(nq * es);
    void *args[6] = {&dq, &dk, &dv, &dm, &dy, &p};
    for (int kind = 0; kind < 3; kind++) { /* flash, tensor cores (f16/bf16), simple */
        if (kind == 1 && c->dt == KN_F32)
            continue;
        kn_kc_fn f;
        static const char *entries[] = {KN_ATTN_FLASH_ENTRY, KN_ATTN_FLASH_TC_ENTRY, KN_ATTN_SIMPLE_ENTRY};
        char *(*gens[])(const kn_attn_spec *, char *, size_t) = {kn_attn_flash_source, kn_attn_flash_tc_source,
                                                                 kn_attn_simple_source};
        if (kernel_of(gens[kind], &sp, entries[kind], &f) != KN_OK) {
            n_fail++;
            continue;
        }
        kn_dim3 g = kind == 0   ? kn_attn_flash_grid(c->batch, c->qh, c->sq)
                    : kind == 1 ? kn_attn_tc_grid(c->batch, c->qh, c->sq)
                                : kn_emit_grid(c->batch * c->qh * c->sq);
        if (!kn_kc_launch(&f, g, kind < 2 ? KN_FLASH_THREADS : 256, args)) {
            n_fail++;
            continue;
        }
        kn_kc_download(got, dy, nq * es);
        report(c->name, kind == 0 ? "flash" : kind == 1 ? "flash-tc" : "simple", NULL, got, c->dt, want, nq,
               kind < 2);
    }
    kn_kc_free(dq), kn_kc_free(dk), kn_kc_free(dv), kn_kc_free(dm), kn_kc_free(dy);
    free(qf), free(kf), free(vf), free(mf), free(q), free(k), free(v), free(m), free(want), free(got);
}

/* ---- paged cache ---- */

typedef struct pcase {
    const char *name;
    kn_dtype dt;
    int d;
    int64_t batch, qh, kvh, sq;
    int64_t past[4];
    uint32_t block_size;
    kn_attn_mask_kind mask; /* [batch, 1, sq, total]: needs equal pasts */
    int causal;
    int n_split;            /* 0: kn_attn_decode_splits */
} pcase;

/* kn_kv_append_rope (rotary = 1) on zeroed pools: the pools and the
 * rotated Q against the host's RotaryHalf arithmetic (double, rounded once
 * to the dtype: runtime/cpu/k_paged_attn.c), cos [batch, 1, sq, D] and sin
 * [sq, D]. Equal to the bit on the host emulator; on a GPU within one
 * rounding of the dtype (the device may contract the double arithmetic
 * into FMAs). */
static void check_append_rope(const pcase *c, const char *name, kn_kv_cache *kv, const uint32_t *seq,
                              uint32_t layer, size_t pool, const void *q, const void *kn, const void *vn, void *dtab,
                              void *dpast, const kn_paged_params *p)
{
    kn_dtype cdt = kn_kv_dtype(&kv->cfg);
    size_t ce = kn_dt_size(cdt);
    int64_t D = c->d, h = D / 2;
    size_t nq = (size_t)(c->batch * c->qh * c->sq * D), nn = (size_t)(c->batch * c->kvh * c->sq * D);
    size_t ncs = (size_t)(c->batch * c->sq * D), nsn = (size_t)(c->sq * D), es = kn_dt_size(c->dt);
    float *csf = malloc(ncs * 4), *snf = malloc(nsn * 4);
    void *cs = fill(c->dt, ncs, 1.0, csf), *sn = fill(c->dt, nsn, 1.0, snf);
    float *kpool = calloc(pool, 4), *vpool = calloc(pool, 4);
    void *got = malloc(pool * ce);
    void *qr = malloc(nq * es + 1), *qgot = malloc(nq * es + 1);
    /* the host: rotate K into the pools (through kn_kv_at's offsets), V as it is, Q into qr */
    for (int part = 0; part < 2; part++) {
        int64_t heads = part ? c->qh : c->kvh;
        const void *x = part ? q : kn;
        for (int64_t b = 0; b < c->batch; b++)
            for (int64_t hh = 0; hh < heads; hh++)
                for (int64_t i = 0; i < c->sq; i++) {
                    int64_t row = ((b * heads + hh) * c->sq + i) * D;
                    for (int64_t e = 0; e < D; e++) {
                        double rv = e < D - h ? -kn_get_f64(c->dt, x, row + h + e) : kn_get_f64(c->dt, x, row + e - (D - h));
                        double v = kn_get_f64(c->dt, x, row + e) * (double)csf[(b * c->sq + i) * D + e] +
                                   rv * (double)snf[i * D + e];
                        if (part) {
                            kn_set_f64(c->dt, qr, row + e, v);
                            continue;
                        }
                        kn_kv_seq *s = kn_kv_seq_get(kv, seq[b]);
                        uint32_t at = (uint32_t)(c->past[b] + i);
                        const char *at_k = kn_kv_at(kv, false, layer, s, at, (uint32_t)hh);
                        size_t off = (size_t)(at_k - (const char *)kv->keys) / ce + (size_t)e;
                        uint16_t one[4];
                        kn_set_f64(c->dt, one, 0, v); /* RotaryHalf's rounding to the dtype */
                        kpool[off] = (float)kn_get_f64(c->dt, one, 0);
                        vpool[off] = (float)kn_get_f64(c->dt, vn, row + e);
                    }
                }
    }
    kn_rope_params rp = {{c->sq * D, D, 1}, {0, D, 1}};
    kn_attn_spec sp = {c->dt, cdt, KN_BOOL, KN_MASK_NONE, c->d, true};
    void *zero = calloc(pool, ce);
    void *dkp = kn_kc_upload(zero, pool * ce), *dvp = kn_kc_upload(zero, pool * ce);
    void *dkn = kn_kc_upload(kn, nn * es), *dvn = kn_kc_upload(vn, nn * es), *dq = kn_kc_upload(q, nq * es);
    void *dqr = kn_kc_alloc(nq * es), *dcs = kn_kc_upload(cs, ncs * es), *dsn = kn_kc_upload(sn, nsn * es);
    kn_paged_params pp = *p;
    kn_kc_fn f;
    void *args[12] = {&dkn, &dvn, &dkp, &dvp, &dtab, &dpast, &pp, &dq, &dqr, &dcs, &dsn, &rp};
    bool ok = kernel_of(kn_attn_append_rope_source, &sp, KN_ATTN_APPEND_ROPE_ENTRY, &f) == KN_OK &&
              kn_kc_launch(&f, kn_emit_grid((int64_t)(nn + nq)), 256, args);
    if (ok) {
        double tol = kn_kc.gpu ? (c->dt == KN_F32 ? 1e-6 : c->dt == KN_F16 ? 2e-3 : 1.6e-2) : 0.0, worst = 0;
        kn_kc_download(got, dkp, pool * ce);
        for (size_t i = 0; i < pool; i++) {
            double g = kn_get_f64(cdt, got, (int64_t)i);
            worst = fmax(worst, fabs(g - kpool[i]) / fmax(1.0, fabs((double)kpool[i])));
        }
        kn_kc_download(got, dvp, pool * ce);
        bool same = true; /* V as it came: exactly */
        for (size_t i = 0; i < pool; i++)
            same = same && kn_get_f64(cdt, got, (int64_t)i) == (double)vpool[i];
        kn_kc_download(qgot, dqr, nq * es);
        for (size_t i = 0; i < nq; i++) {
            double a = kn_get_f64(c->dt, qgot, (int64_t)i), w = kn_get_f64(c->dt, qr, (int64_t)i);
            worst = fmax(worst, fabs(a - w) / fmax(1.0, fabs(w)));
        }
        same = same && worst <= tol;
        printf("%s %-34s %-16s pools and rotated Q %s the host's (max rel error %.3g)\n", same ? "PASS" : "FAIL",
               name, "append-rope", same ? "equal" : "DIFFER from", worst);
        n_pass += same;
        n_fail += !same;
    } else {
        n_fail++;
    }
    kn_kc_free(dkp), kn_kc_free(dvp), kn_kc_free(dkn), kn_kc_free(dvn), kn_kc_free(dq), kn_kc_free(dqr);
    kn_kc_free(dcs), kn_kc_free(dsn);
    free(csf), free(snf), free(cs), free(sn), free(kpool), free(vpool), free(got), free(qr), free(qgot), free(zero);
}

/* The case over pools of cdt (float32, or the case's dtype). */
static void run_paged(const pcase *c, kn_dtype cdt)
{
    int64_t D = c->d, maxp = 0;
    for (int64_t b = 0; b < c->batch; b++)
        maxp = c->past[b] > maxp ? c->past[b] : maxp;
    char name[96];
    snprintf(name, sizeof name, cdt == KN_F32 ? "%s" : "%s, %s cache", c->name, kn_dtype_name(cdt));
    size_t ce = kn_dt_size(cdt);
    kn_kv_config cfg = {2, (uint32_t)c->kvh, (uint32_t)D, c->block_size, 0, 0, cdt};
    cfg.max_seq_len = (uint32_t)(maxp + c->sq + c->block_size);
    uint32_t per = (cfg.max_seq_len + c->block_size - 1) / c->block_size;
    cfg.n_blocks = per * (uint32_t)(c->batch + 1);
    kn_kv_cache *kv = NULL;
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (kn_kv_create(&cfg, NULL, d, &kv) != KN_OK) {
        printf("FAIL %s: kv cache\n", name);
        n_fail++;
        kn_diag_destroy(d);
        return;
    }
    /* a sequence that takes blocks first and is freed, so tables are scrambled */
    uint32_t junk, seq[4];
    kn_kv_seq_add(kv, &junk);
    kn_kv_seq_reserve(kv, junk, c->block_size * 3 + 1, d);
    for (int64_t b = 0; b < c->batch; b++) {
        kn_kv_seq_add(kv, &seq[b]);
        if (b == 0)
            kn_kv_seq_free(kv, junk);
        kn_kv_seq_reserve(kv, seq[b], (uint32_t)(c->past[b] + c->sq), d);
    }
    uint32_t layer = 1;
    size_t pool = (size_t)cfg.n_blocks * kv->block_elems * cfg.n_layers;
    for (size_t i = 0; i < pool; i++) {
        kn_set_f64(cdt, kv->keys, (int64_t)i, (float)urand());
        kn_set_f64(cdt, kv->values, (int64_t)i, (float)urand());
    }
    size_t nq = (size_t)(c->batch * c->qh * c->sq * D), nn = (size_t)(c->batch * c->kvh * c->sq * D);
    float *qf = malloc(nq * 4), *kf = malloc(nn * 4), *vf = malloc(nn * 4);
    void *q = fill(c->dt, nq, 1.0, qf), *kn = fill(c->dt, nn, 1.0, kf), *vn = fill(c->dt, nn, 1.0, vf);
    int64_t total0 = c->past[0] + c->sq;
    size_t nm = (size_t)(c->batch * c->sq * total0);
    kn_dtype mdt = c->mask == KN_MASK_BOOL ? KN_BOOL : c->dt;
    void *m = calloc(nm * kn_dt_size(mdt) + 1, 1);
    float *mf = malloc((nm + 1) * 4);
    for (size_t i = 0; c->mask && i < nm; i++) {
        if (c->mask == KN_MASK_BOOL) {
            bool keep = i % 3 != 1;
            ((uint8_t *)m)[i] = keep;
            mf[i] = keep ? 0.0f : -INFINITY;
        } else {
            kn_set_f64(mdt, m, (int64_t)i, urand() * 2.0);
            mf[i] = (float)kn_get_f64(mdt, m, (int64_t)i);
        }
    }
    /* device copies of the pools before the append; the table and pasts */
    int32_t *table = calloc((size_t)c->batch * per, 4), past32[4];
    for (int64_t b = 0; b < c->batch; b++) {
        kn_kv_seq *s = kn_kv_seq_get(kv, seq[b]);
        for (uint32_t i = 0; i < s->n_blocks; i++)
            table[b * per + i] = (int32_t)s->blocks[i];
        past32[b] = (int32_t)c->past[b];
    }
    void *dkp = kn_kc_upload(kv->keys, pool * ce), *dvp = kn_kc_upload(kv->values, pool * ce);
    void *dtab = kn_kc_upload(table, (size_t)c->batch * per * 4), *dpast = kn_kc_upload(past32, 16);
    /* the host: append, then attention (k_paged_attn.c) */
    for (int64_t b = 0; b < c->batch; b++) {
        kn_kv_seq *s = kn_kv_seq_get(kv, seq[b]);
        for (int64_t h = 0; h < c->kvh; h++)
            for (int64_t i = 0; i < c->sq; i++)
                for (int64_t e = 0; e < D; e++) {
                    size_t src = (size_t)(((b * c->kvh + h) * c->sq + i) * D + e);
                    /* the case's values: exact in its dtype */
                    kn_set_f64(cdt, kn_kv_at(kv, false, layer, s, (uint32_t)(c->past[b] + i), (uint32_t)h), e, kf[src]);
                    kn_set_f64(cdt, kn_kv_at(kv, true, layer, s, (uint32_t)(c->past[b] + i), (uint32_t)h), e, vf[src]);
                }
    }
    kn_paged_params p = {c->batch, c->qh, c->kvh, c->sq, c->qh / c->kvh, c->block_size, per,
                         (int64_t)layer * cfg.n_blocks * (int64_t)kv->block_elems, {0}, 1,
                         (float)(1.0 / sqrt((double)D)), c->causal};
    if (c->mask) {
        p.mst[0] = c->sq * total0;
        p.mst[2] = total0;
        p.mst[3] = 1;
    }
    double *want = malloc(nq * sizeof *want);
    for (int64_t b = 0; b < c->batch; b++) {
        kn_kv_seq *s = kn_kv_seq_get(kv, seq[b]);
        int64_t total = c->past[b] + c->sq;
        double *sc = malloc((size_t)total * sizeof *sc);
        for (int64_t h = 0; h < c->qh; h++)
            for (int64_t i = 0; i < c->sq; i++) {
                const float *qr = qf + ((b * c->qh + h) * c->sq + i) * D;
                uint32_t hk = (uint32_t)(h / p.group);
                bool all_masked = true;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < total; j++) {
                    const void *kr = kn_kv_at(kv, false, layer, s, (uint32_t)j, hk);
                    double dot = 0, bias = 0;
                    for (int64_t e = 0; e < D; e++)
                        dot += (double)qr[e] * kn_get_f64(cdt, kr, e);
                    if (c->causal && j > i + c->past[b])
                        bias = -INFINITY;
                    else if (c->mask)
                        bias = mf[b * p.mst[0] + i * p.mst[2] + j];
                    all_masked = all_masked && isinf(bias) && bias < 0;
                    sc[j] = dot * (double)p.scale + bias;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int64_t j = 0; j < total; j++)
                    sum += sc[j] = all_masked ? 0.0 : exp(sc[j] - mx);
                double *yr = want + ((b * c->qh + h) * c->sq + i) * D;
                for (int64_t e = 0; e < D; e++) {
                    double a = 0;
                    for (int64_t j = 0; j < total && !all_masked; j++)
                        a += sc[j] / sum * kn_get_f64(cdt, kn_kv_at(kv, true, layer, s, (uint32_t)j, hk), e);
                    yr[e] = a;
                }
            }
        free(sc);
    }
    kn_attn_spec sp = {c->dt, cdt, mdt, c->mask, c->d, true};
    size_t es = kn_dt_size(c->dt);
    void *dq = kn_kc_upload(q, nq * es), *dkn = kn_kc_upload(kn, nn * es), *dvn = kn_kc_upload(vn, nn * es);
    void *dm = kn_kc_upload(m, nm * kn_dt_size(mdt) + 1), *dy = kn_kc_alloc(nq * es);
    void *got = malloc(nq * es);
    void *pool_got = malloc(pool * ce);
    kn_kc_fn f;
    bool ok = kernel_of(kn_attn_append_source, &sp, KN_ATTN_APPEND_ENTRY, &f) == KN_OK;
    void *aargs[7] = {&dkn, &dvn, &dkp, &dvp, &dtab, &dpast, &p};
    ok = ok && kn_kc_launch(&f, kn_emit_grid((int64_t)nn), 256, aargs);
    if (ok) {
        kn_kc_download(pool_got, dkp, pool * ce);
        bool same = memcmp(pool_got, kv->keys, pool * ce) == 0;
        kn_kc_download(pool_got, dvp, pool * ce);
        same = same && memcmp(pool_got, kv->values, pool * ce) == 0;
        printf("%s %-34s %-16s pools %s the host's after the append\n", same ? "PASS" : "FAIL", name, "append",
               same ? "equal" : "DIFFER from");
        n_pass += same;
        n_fail += !same;
    } else
        n_fail++;
    if (ok && !c->mask)
        check_append_rope(c, name, kv, seq, layer, pool, q, kn, vn, dtab, dpast, &p);
    void *args[8] = {&dq, &dkp, &dvp, &dtab, &dpast, &dm, &dy, &p};
    /* flash over the cache, split-K decoding + combine, simple */
    for (int kind = 0; kind < 4 && ok; kind++) {
        if (kind == 3) { /* tensor cores over the cache */
            if (c->dt == KN_F32)
                continue;
            if (kernel_of(kn_attn_flash_tc_source, &sp, KN_ATTN_FLASH_TC_ENTRY, &f) != KN_OK ||
                !kn_kc_launch(&f, kn_attn_tc_grid(c->batch, c->qh, c->sq), KN_FLASH_THREADS, args)) {
                n_fail++;
                continue;
            }
            kn_kc_download(got, dy, nq * es);
            report(name, "flash-tc(paged)", NULL, got, c->dt, want, nq, true);
            continue;
        }
        if (kind == 1) {
            int64_t ns = c->n_split ? c->n_split : kn_attn_decode_splits(c->batch, c->qh, c->sq, maxp + c->sq, kn_kc.sms);
            p.n_split = ns;
            kn_kc_fn fc;
            size_t ncnt = (size_t)kn_decode_counter_bytes(c->batch, c->qh, c->sq);
            unsigned *cnt = calloc(ncnt, 1);
            void *part = kn_kc_alloc(kn_decode_partial_bytes(c->batch, c->qh, c->sq, ns, c->d));
            void *dcnt = kn_kc_upload(cnt, ncnt), *nocnt = NULL, *dy1 = NULL;
            void *dargs[10] = {&dq, &dkp, &dvp, &dtab, &dpast, &dm, &part, &nocnt, &dy, &p};
            void *cargs[3] = {&part, &dy, &p};
            bool k_ok = kernel_of(kn_attn_decode_source, &sp, KN_ATTN_DECODE_ENTRY, &f) == KN_OK &&
                        kernel_of(kn_attn_combine_source, &sp, KN_ATTN_COMBINE_ENTRY, &fc) == KN_OK &&
                        kn_kc_launch(&f, kn_attn_decode_grid(c->batch, c->qh, c->sq, ns), KN_DECODE_THREADS, dargs) &&
                        kn_kc_launch(&fc, kn_emit_grid((int64_t)nq), 256, cargs);
            char kname[32];
            snprintf(kname, sizeof kname, "decode(%lld)", (long long)ns);
            if (k_ok) {
                kn_kc_download(got, dy, nq * es);
                report(name, kname, NULL, got, c->dt, want, nq, true);
            }
            /* one launch, the last split block of each row merging: twice on the same counters, each time
             * equal to the bit to decode + combine, the counters zero afterwards */
            void *got1 = malloc(nq * es);
            bool same = k_ok, zero = true;
            for (int run = 0; run < 2 && k_ok; run++) {
                kn_kc_free(dy1);
                dy1 = kn_kc_alloc(nq * es); /* zeros: a missed output shows */
                dargs[7] = &dcnt;
                dargs[8] = &dy1;
                k_ok = kn_kc_launch(&f, kn_attn_decode_grid(c->batch, c->qh, c->sq, ns), KN_DECODE_THREADS, dargs);
                if (k_ok) {
                    kn_kc_download(got1, dy1, nq * es);
                    same = same && memcmp(got, got1, nq * es) == 0;
                    kn_kc_download(cnt, dcnt, ncnt);
                    for (size_t r = 0; r < ncnt / sizeof *cnt; r++)
                        zero = zero && cnt[r] == 0;
                }
            }
            kn_kc_free(part), kn_kc_free(dcnt), kn_kc_free(dy1);
            free(cnt), free(got1);
            if (!k_ok) {
                n_fail++;
                continue;
            }
            bool fine = same && zero;
            printf("%s %-34s %-16s one launch, twice: %s decode + combine%s\n", fine ? "PASS" : "FAIL", name, kname,
                   same ? "equal to" : "DIFFERS from", zero ? ", counters zero" : ", the counters NOT zero afterwards");
            n_pass += fine;
            n_fail += !fine;
            continue;
        }
        bool fast = kind == 0;
        if (kernel_of(fast ? kn_attn_flash_source : kn_attn_simple_source, &sp,
                      fast ? KN_ATTN_FLASH_ENTRY : KN_ATTN_SIMPLE_ENTRY, &f) != KN_OK ||
            !kn_kc_launch(&f, fast ? kn_attn_flash_grid(c->batch, c->qh, c->sq) : kn_emit_grid(c->batch * c->qh * c->sq),
                    fast ? KN_FLASH_THREADS : 256, args)) {
            n_fail++;
            continue;
        }
        kn_kc_download(got, dy, nq * es);
        report(name, fast ? "flash(paged)" : "simple(paged)", NULL, got, c->dt, want, nq, fast);
    }
    kn_kc_free(dq), kn_kc_free(dkn), kn_kc_free(dvn), kn_kc_free(dm), kn_kc_free(dy), kn_kc_free(dkp), kn_kc_free(dvp), kn_kc_free(dtab), kn_kc_free(dpast);
    free(qf), free(kf), free(vf), free(q), free(kn), free(vn), free(m), free(mf), free(table), free(want);
    free(got), free(pool_got);
    kn_kv_destroy(kv);
    kn_diag_destroy(d);
}


static void compile_sweep(void)
{
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    static const int dims[] = {32, 64, 128};
    char *(*gens[])(const kn_attn_spec *, char *, size_t) = {kn_attn_flash_source, kn_attn_decode_source,
                                                             kn_attn_append_source, kn_attn_combine_source,
                                                             kn_attn_flash_tc_source, kn_attn_append_rope_source};
    const char *names[] = {KN_ATTN_FLASH_ENTRY, KN_ATTN_DECODE_ENTRY, KN_ATTN_APPEND_ENTRY, KN_ATTN_COMBINE_ENTRY,
                           KN_ATTN_FLASH_TC_ENTRY, KN_ATTN_APPEND_ROPE_ENTRY};
    /* one program, so NVRTC compiles every (kernel, arch) pair in parallel */
    kn_cu_program p = kn_kc_program(3 * 3 * 2 * 6 + 1);
    int bad = 0;
    for (int t = 0; t < 3 && p.kernels; t++)
        for (int di = 0; di < 3; di++)
            for (int paged = 0; paged < 2; paged++)
                for (int g = 0; g < 6; g++) {
                    if ((!paged && (g == 5 || (g >= 1 && g <= 3))) || (g == 4 && t == 0))
                        continue;
                    kn_attn_spec sp = {dts[t], paged && t == 0 ? KN_F32 : dts[t], dts[t], KN_MASK_ADD, dims[di],
                                       paged != 0};
                    char err[256];
                    char *src = gens[g](&sp, err, sizeof err);
                    if (!src) {
                        fprintf(stderr, "%s: %s\n", names[g], err);
                        bad++;
                        continue;
                    }
                    char *copy = kn_mem_alloc(NULL, strlen(src) + 1);
                    if (copy)
                        strcpy(copy, src);
                    free(src);
                    p.kernels[p.n_kernels++] = (kn_cu_kernel){names[g], copy, (uint64_t)p.n_kernels, NULL, 0};
                }
    if (p.kernels) {
        char *copy = kn_mem_alloc(NULL, strlen(kn_kc_copy_src) + 1);
        if (copy)
            memcpy(copy, kn_kc_copy_src, strlen(kn_kc_copy_src) + 1);
        p.kernels[p.n_kernels++] = (kn_cu_kernel){"kn_copy16", copy, 0, NULL, 0};
    }
    bad += kn_kc_sweep(&p, "f32/f16/bf16 x head dim 32/64/128 x contiguous/paged (the append with rotary too), tensor cores, the copy kernel");
    n_pass += !bad;
    n_fail += bad != 0;
}

static const ccase ccases[] = {
    {"f32 d32 gqa causal sq37", KN_F32, 32, 1, 4, 2, 37, 37, 1, KN_MASK_NONE},
    {"f32 d64 past65 causal+addmask", KN_F32, 64, 2, 4, 4, 5, 70, 1, KN_MASK_ADD},
    {"f16 d64 mqa boolmask sq33", KN_F16, 64, 1, 2, 1, 33, 33, 0, KN_MASK_BOOL},
    {"bf16 d128 causal sq20", KN_BF16, 128, 1, 2, 1, 20, 20, 1, KN_MASK_NONE},
    {"f32 d128 one query sk50", KN_F32, 128, 1, 2, 2, 1, 50, 0, KN_MASK_NONE},
    {"f32 d32 boolmask (masked rows)", KN_F32, 32, 2, 2, 2, 9, 9, 0, KN_MASK_BOOL},
    {"f16 d32 gqa causal+addmask sq70 past10", KN_F16, 32, 1, 4, 2, 70, 80, 1, KN_MASK_ADD},
};

static const pcase pcases[] = {
    {"f32 d32 decode gqa b2 past17/40", KN_F32, 32, 2, 4, 2, 1, {17, 40}, 16, KN_MASK_NONE, 0, 0},
    {"f32 d64 prefill9 past7 bs4 causal", KN_F32, 64, 1, 2, 2, 9, {7}, 4, KN_MASK_NONE, 1, 0},
    {"f32 d128 decode past300 addmask", KN_F32, 128, 1, 4, 1, 1, {300}, 16, KN_MASK_ADD, 0, 5},
    {"f16 d64 decode b2 past31 boolmask", KN_F16, 64, 2, 2, 1, 1, {31, 31}, 16, KN_MASK_BOOL, 0, 3},
    {"bf16 d64 prefill16 past0 causal", KN_BF16, 64, 1, 2, 2, 16, {0}, 16, KN_MASK_NONE, 1, 2},
    {"f32 d32 prefill3 past5 bs2 causal", KN_F32, 32, 1, 2, 1, 3, {5}, 2, KN_MASK_NONE, 1, 4},
    {"f16 d64 prefill7 gqa b2 past5/12 bs4", KN_F16, 64, 2, 4, 2, 7, {5, 12}, 4, KN_MASK_NONE, 1, 0},
    {"bf16 d32 decode gqa b3 past3/9/1 bs4", KN_BF16, 32, 3, 4, 2, 1, {3, 9, 1}, 4, KN_MASK_NONE, 1, 0},
    /* more splits than keys for the short rows: empty splits ({-inf, 0, 0} partials) */
    {"f16 d64 decode gqa b4 past0/5/70/33 s8", KN_F16, 64, 4, 4, 2, 1, {0, 5, 70, 33}, 4, KN_MASK_NONE, 1, 8},
    {"bf16 d128 decode b2 past2/130 s6", KN_BF16, 128, 2, 2, 2, 1, {2, 130}, 16, KN_MASK_NONE, 0, 6},
    {"f32 d64 decode gqa b3 past1/64/200 s16", KN_F32, 64, 3, 8, 2, 1, {1, 64, 200}, 8, KN_MASK_NONE, 1, 16},
};


#ifdef KN_HAVE_CUDA_HEADERS
/* --gpu --bench: the fast kernels at LLM shapes (f16, head dim 128, GQA
 * 32/8), wall time of 20 launches after 3; KV bytes read per second for
 * decoding. Prints "BENCH ..." lines. */
static void bench_gpu(void)
{
    double peak = kn_kc_copy_bandwidth();
    printf("BENCH copy kernel (16-byte accesses, 1 GiB each way): %.0f GB/s (the roofline below)\n", peak / 1e9);
    const int D = 128;
    const int64_t qh = 32, kvh = 8;
    /* prefill: contiguous f16, causal */
    for (int64_t sq = 512; sq <= 2048; sq *= 4) {
        kn_attn_spec sp = {KN_F16, KN_F16, KN_F16, KN_MASK_NONE, D, false};
        kn_kc_fn f;
        if (kernel_of(kn_attn_flash_source, &sp, KN_ATTN_FLASH_ENTRY, &f) != KN_OK)
            return;
        size_t nq = (size_t)(qh * sq * D), nk = (size_t)(kvh * sq * D);
        void *q = kn_kc_alloc(nq * 2), *k = kn_kc_alloc(nk * 2), *v = kn_kc_alloc(nk * 2), *y = kn_kc_alloc(nq * 2), *m = NULL;
        kn_attn_params p = {1, qh, kvh, sq, sq, qh / kvh, 0, {0}, sq, (float)(1.0 / sqrt((double)D)), 1};
        void *args[6] = {&q, &k, &v, &m, &y, &p};
        double t = kn_kc_time(&f, kn_attn_flash_grid(1, qh, sq), KN_FLASH_THREADS, args);
        double flops = 4.0 * qh * (double)sq * (double)sq * D / 2.0; /* causal: half the scores */
        printf("BENCH flash prefill f16 d128 32/8 heads sq %lld causal: %.3f ms, %.1f TFLOP/s\n", (long long)sq,
               t * 1e3, flops / t / 1e12);
        kn_kc_fn ft;
        if (kernel_of(kn_attn_flash_tc_source, &sp, KN_ATTN_FLASH_TC_ENTRY, &ft) == KN_OK) {
            t = kn_kc_time(&ft, kn_attn_tc_grid(1, qh, sq), KN_FLASH_THREADS, args);
            printf("BENCH flash-tc prefill f16 d128 32/8 heads sq %lld causal: %.3f ms, %.1f TFLOP/s\n",
                   (long long)sq, t * 1e3, flops / t / 1e12);
        }
        kn_kc_free(q), kn_kc_free(k), kn_kc_free(v), kn_kc_free(y);
    }
    /* decoding over the paged cache (float32 pools, and float16 as a --precision fp16 plan's), batch 1 and 8 */
    for (int ci = 0; ci < 4; ci++) {
        const int64_t batch = ci % 2 ? 8 : 1, past = 4096, bs = 16, per = (past + 1 + bs - 1) / bs;
        const kn_dtype cdt = ci < 2 ? KN_F32 : KN_F16;
        const size_t ce = kn_dt_size(cdt);
        kn_attn_spec sp = {KN_F16, cdt, KN_F16, KN_MASK_NONE, D, true};
        kn_kc_fn f, fc;
        if (kernel_of(kn_attn_decode_source, &sp, KN_ATTN_DECODE_ENTRY, &f) != KN_OK ||
            kernel_of(kn_attn_combine_source, &sp, KN_ATTN_COMBINE_ENTRY, &fc) != KN_OK)
            return;
        size_t pool = (size_t)(batch * per * kvh * bs * D);
        int32_t *table = malloc((size_t)(batch * per) * 4), pastv[8];
        for (int64_t i = 0; i < batch * per; i++)
            table[i] = (int32_t)((i * 7919) % (batch * per)); /* scattered blocks */
        for (int b = 0; b < 8; b++)
            pastv[b] = (int32_t)past;
        void *q = kn_kc_alloc((size_t)(batch * qh * D) * 2), *kp = kn_kc_alloc(pool * ce), *vp = kn_kc_alloc(pool * ce);
        void *tab = kn_kc_upload(table, (size_t)(batch * per) * 4), *pv = kn_kc_upload(pastv, sizeof pastv), *m = NULL;
        void *y = kn_kc_alloc((size_t)(batch * qh * D) * 2);
        int64_t ns = kn_attn_decode_splits(batch, qh, 1, past + 1, kn_kc.sms);
        void *part = kn_kc_alloc(kn_decode_partial_bytes(batch, qh, 1, ns, D)), *nocnt = NULL;
        size_t ncnt = (size_t)kn_decode_counter_bytes(batch, qh, 1);
        unsigned *zeros = calloc(ncnt, 1);
        void *cnt = kn_kc_upload(zeros, ncnt); /* the counters, zero (each launch leaves them so) */
        free(zeros);
        kn_paged_params p = {batch, qh, kvh, 1, qh / kvh, bs, per, 0, {0}, ns, (float)(1.0 / sqrt((double)D)), 0};
        void *dargs[10] = {&q, &kp, &vp, &tab, &pv, &m, &part, &nocnt, &y, &p};
        void *cargs[3] = {&part, &y, &p};
        double t = kn_kc_time(&f, kn_attn_decode_grid(batch, qh, 1, ns), KN_DECODE_THREADS, dargs);
        double tc = kn_kc_time(&fc, kn_emit_grid(batch * qh * D), 256, cargs);
        dargs[7] = &cnt; /* one launch: the last split block of each row merges */
        double t1 = kn_kc_time(&f, kn_attn_decode_grid(batch, qh, 1, ns), KN_DECODE_THREADS, dargs);
        double bytes = (double)batch * (double)(past + 1) * kvh * D * 2 * (double)ce;
        printf("BENCH paged decode f16 q, %s cache, d128 32/8 heads, batch %lld, context %lld, %lld splits: "
               "%.3f ms + combine %.3f ms; one launch %.3f ms, KV read %.0f GB/s = %.0f%% of the copy roofline\n",
               ce == 4 ? "f32" : "f16", (long long)batch, (long long)past + 1, (long long)ns, t * 1e3, tc * 1e3,
               t1 * 1e3, bytes / t1 / 1e9, peak > 0 ? 100.0 * bytes / t1 / peak : 0.0);
        kn_kc_free(q), kn_kc_free(kp), kn_kc_free(vp), kn_kc_free(tab), kn_kc_free(pv), kn_kc_free(y), kn_kc_free(part);
        kn_kc_free(cnt);
        free(table);
    }
}
#endif

int main(int argc, char **argv)
{
    bool bench;
    int rc = kn_kc_start(argc, argv,
                         "usage: kiln-attn-check [--gpu [--bench]]\n"
                         "  Checks the attention kernels (flash prefill, split-K paged decoding, KV append, the simple\n"
                         "  reference kernels) against a double-precision reference with the CPU kernels' semantics:\n"
                         "  NVRTC for sm_80/86/89/90 + PTX and host emulation, or (--gpu) on the GPU; --bench adds\n"
                         "  timings of the fast kernels at LLM shapes.\n",
                         &bench);
    if (rc >= 0)
        return rc;
    compile_sweep();
    for (size_t i = 0; i < sizeof ccases / sizeof *ccases; i++)
        run_contiguous(&ccases[i]);
    for (size_t i = 0; i < sizeof pcases / sizeof *pcases; i++) {
        run_paged(&pcases[i], KN_F32);
        if (pcases[i].dt != KN_F32) /* the pools of a --precision fp16/bf16 plan */
            run_paged(&pcases[i], pcases[i].dt);
    }
#ifdef KN_HAVE_CUDA_HEADERS
    if (kn_kc.gpu && bench)
        bench_gpu();
#endif
    (void)bench;
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
