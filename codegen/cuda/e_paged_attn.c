/* CUDA emitter for kiln.PagedAttention (passes/kv_cache.c): attention over
 * the runtime's paged KV cache, which lives on the device, owned by the
 * CUDA session (KN_ARG_KV arguments: the layer's key and value pools, the
 * run's block table and past lengths). Per node, two launches:
 *   1. kn_kv_append: the new tokens' K/V into the pools at positions
 *      past ... past + seq - 1 of each row (blocks reserved by the host);
 *   2. seq == 1 (decode): split-K kn_decode_attn, one launch: each split
 *      block writes its partial into node scratch, and the last block of
 *      each (batch, row) to finish (a counter per row in the program's
 *      persistent memory, KN_ARG_PERSIST) merges the splits into the
 *      output, as the separate kn_decode_combine kernel would (which
 *      kiln-attn-check still runs to compare against, bit for bit). The
 *      split count is fixed at compile time from kiln.kv.max_seq_len (the
 *      past is a run-time value, so for short contexts most splits are
 *      empty: the kernel writes a neutral partial {-inf, 0, 0} for them);
 *      seq > 1 (prefill, also continuing a past): kn_flash_attn over the
 *      pools (or its tensor-core form with --attn-kernel tc), causal with
 *      the run-time past when the node says causal = 1.
 * With rotary = 1 (passes/kv_rotary.c: inputs 4, 5 cos and sin) step 1 is
 * kn_kv_append_rope instead, which rotates the new K as it appends it and
 * writes the rotated Q into node scratch (index 1), which step 2 reads as
 * Q: the two kiln.RotaryHalf launches of the unfused graph are gone.
 * A mask input cannot be lowered: a static plan has no per-step mask
 * [batch, past + seq]; the causal flag replaces the all-ones mask. The
 * node may not run on the host either (the cache is on the device), so
 * every refusal here fails the compile (codegen/cuda/lower.c). Kernels:
 * codegen/cuda/attn_kernels.h. */
#include "codegen/cuda/attn_kernels.h"
#include "codegen/cuda/emit.h"
#include "runtime/plan_format.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An unsigned kiln.kv.* value, or -1 when missing or malformed. */
static int64_t kv_meta(const kn_emit *e, const char *key)
{
    char full[64];
    snprintf(full, sizeof full, "kiln.kv.%s", key);
    const char *s = kn_emit_meta(e, full);
    if (!s || *s < '0' || *s > '9')
        return -1;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    return *end || v == 0 || v > UINT32_MAX ? -1 : (int64_t)v;
}

static kn_status launch(kn_emit *e, char *(*gen)(const kn_attn_spec *, char *, size_t), const kn_attn_spec *sp,
                        const char *entry, kn_dim3 grid, uint32_t threads, const kn_emit_arg *args, uint32_t n_args)
{
    char err[256];
    char *src = gen(sp, err, sizeof err);
    if (!src)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s: %s", entry, err);
    uint32_t k;
    kn_status s = kn_emit_kernel(e, src, entry, &k);
    free(src);
    KN_TRY(s);
    return kn_emit_launch(e, k, grid, (kn_dim3){threads, 1, 1}, 0, args, n_args);
}

static bool attn_dtype(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

/* Strides of cos/sin t over [batch, seq, head_dim]: t must broadcast to
 * [batch, 1, seq, head_dim]. */
static bool rope_strides(const kn_emit_tensor *t, int64_t batch, int64_t seq, int64_t hd, int64_t *st)
{
    if (t->rank < 1 || t->rank > 4)
        return false;
    int64_t want[4] = {batch, 1, seq, hd}, s4[4], stride = 1;
    for (int d = 3; d >= 0; d--) {
        int md = d - (4 - (int)t->rank);
        int64_t n = md >= 0 ? t->dims[md] : 1;
        if (n != 1 && n != want[d])
            return false;
        s4[d] = n == 1 ? 0 : stride;
        stride *= n;
    }
    st[0] = s4[0];
    st[1] = s4[2];
    st[2] = s4[3];
    return true;
}

kn_status kn_emit_KILN_PagedAttention(kn_emit *e)
{
    const kn_emit_tensor *q = kn_emit_in(e, 0), *k = kn_emit_in(e, 1), *v = kn_emit_in(e, 2);
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    if (!q || !k || !v || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "Q, K, V and the output are required");
    if (kn_emit_in(e, 3))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED,
                            "an attention mask input: a static plan cannot carry a per-step mask [batch, past + seq]; "
                            "compile the decoder so that the all-ones mask becomes the causal flag (causal = 1)");
    int64_t layer = kn_emit_attr_int(e, "layer", -1), kvh = kn_emit_attr_int(e, "kv_heads", 0);
    int64_t hd = kn_emit_attr_int(e, "head_dim", 0), rep = kn_emit_attr_int(e, "kv_repeat", 0);
    int64_t causal = kn_emit_attr_int(e, "causal", 0), mode = kn_emit_attr_int(e, "_attn_kernel", 1);
    int64_t rotary = kn_emit_attr_int(e, "rotary", 0);
    float scale = kn_emit_attr_float(e, "scale", 0.0f);
    const kn_emit_tensor *cs = kn_emit_in(e, 4), *sn = kn_emit_in(e, 5);
    if (rotary != 0 && rotary != 1)
        return kn_emit_fail(e, KN_ERR_INVALID, "rotary must be 0 or 1");
    if (rotary ? !cs || !sn || cs->dtype != q->dtype || sn->dtype != q->dtype : cs || sn)
        return kn_emit_fail(e, KN_ERR_INVALID,
                            rotary ? "rotary = 1 needs cos and sin (inputs 4, 5) of Q's dtype"
                                   : "cos/sin inputs (4, 5) without rotary = 1");
    if (!attn_dtype(q->dtype) || k->dtype != q->dtype || v->dtype != q->dtype || y->dtype != q->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "Q, K, V must be float32, float16 or bfloat16 of one dtype");
    if (q->rank != 4 || k->rank != 4 || v->rank != 4 || rep < 1 || kvh < 1 || hd < 1 || causal < 0 || causal > 1)
        return kn_emit_fail(e, KN_ERR_INVALID, "Q, K, V must be 4-D and the attributes positive (causal 0 or 1)");
    int64_t batch = q->dims[0], qh = q->dims[1], sq = q->dims[2];
    for (int i = 0; i < 4; i++) {
        int64_t want_kv[4] = {batch, kvh, sq, hd};
        if (k->dims[i] != want_kv[i] || v->dims[i] != want_kv[i])
            return kn_emit_fail(e, KN_ERR_INVALID, "K and V must be [%lld, %lld, %lld, %lld]", (long long)batch,
                                (long long)kvh, (long long)sq, (long long)hd);
    }
    if (qh != kvh * rep || q->dims[3] != hd || y->numel != q->numel)
        return kn_emit_fail(e, KN_ERR_INVALID, "Q must be [%lld, %lld, %lld, %lld]", (long long)batch,
                            (long long)(kvh * rep), (long long)sq, (long long)hd);
    /* the cache the session allocates: the kv-cache pass's metadata */
    int64_t layers = kv_meta(e, "layers"), mkvh = kv_meta(e, "kv_heads"), mhd = kv_meta(e, "head_dim");
    int64_t bs = kv_meta(e, "block_size"), max_seq = kv_meta(e, "max_seq_len"), blocks = kv_meta(e, "blocks");
    if (layers < 0 || mkvh < 0 || mhd < 0 || bs < 0 || max_seq < 0 || blocks < 0)
        return kn_emit_fail(e, KN_ERR_INVALID,
                            "the model has no complete kiln.kv.* metadata (layers, kv_heads, head_dim, block_size, "
                            "blocks, max_seq_len: written by the kv-cache pass)");
    if (layer < 0 || layer >= layers || kvh != mkvh || hd != mhd)
        return kn_emit_fail(e, KN_ERR_INVALID,
                            "layer %lld, %lld kv heads of %lld do not fit the KV cache (%lld layers, %lld kv heads of "
                            "%lld)",
                            (long long)layer, (long long)kvh, (long long)hd, (long long)layers, (long long)mkvh,
                            (long long)mhd);
    const char *cdt = kn_emit_meta(e, "kiln.kv.dtype");
    kn_dtype cache_dt = !cdt || strcmp(cdt, "float32") == 0 ? KN_F32
                        : strcmp(cdt, "float16") == 0     ? KN_F16
                        : strcmp(cdt, "bfloat16") == 0    ? KN_BF16
                                                          : KN_UNDEFINED;
    if (cache_dt == KN_UNDEFINED)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "KV cache dtype '%s' (float32, float16 or bfloat16)", cdt);
    if (sq > max_seq)
        return kn_emit_fail(e, KN_ERR_INVALID, "%lld new tokens per run, over kiln.kv.max_seq_len %lld",
                            (long long)sq, (long long)max_seq);
    if (batch > 65535 || qh > 65535 || qh * sq * KN_DECODE_MAX_SPLIT > INT32_MAX)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "batch %lld x %lld heads x %lld tokens is over the launch limits",
                            (long long)batch, (long long)qh, (long long)sq);
    KN_TRY(kn_emit_kv_shape(e, batch, sq));
    if (y->numel == 0)
        return KN_OK;
    kn_paged_params p = {batch, qh, kvh, sq, rep, bs, (max_seq + bs - 1) / bs, 0, {0, 0, 0, 0}, 1, scale,
                         (int32_t)causal};
    kn_attn_spec sp = {q->dtype, cache_dt, KN_BOOL, KN_MASK_NONE, (int)hd, true};
    kn_emit_arg kp = {KN_ARG_KV, KN_CU_KV_KEYS, 0, NULL, (uint64_t)layer};
    kn_emit_arg vp = {KN_ARG_KV, KN_CU_KV_VALUES, 0, NULL, (uint64_t)layer};
    kn_emit_arg table = {KN_ARG_KV, KN_CU_KV_TABLE, 0, NULL, 0};
    kn_emit_arg past = {KN_ARG_KV, KN_CU_KV_PAST, 0, NULL, 0};
    kn_emit_arg params = {KN_ARG_PARAMS, 0, sizeof p, &p, 0};
    kn_emit_arg qa = {KN_ARG_IN, 0, 0, NULL, 0}, ya = {KN_ARG_OUT, 0, 0, NULL, 0};
    /* 1. append (with rotary: K rotated, and the rotated Q into scratch 1, read as Q from here on) */
    kn_emit_arg app[12] = {{KN_ARG_IN, 1, 0, NULL, 0}, {KN_ARG_IN, 2, 0, NULL, 0}, kp, vp, table, past, params};
    if (rotary) {
        kn_rope_params rp;
        if (!rope_strides(cs, batch, sq, hd, rp.cst) || !rope_strides(sn, batch, sq, hd, rp.sst))
            return kn_emit_fail(e, KN_ERR_INVALID, "cos and sin must broadcast to [%lld, 1, %lld, %lld]",
                                (long long)batch, (long long)sq, (long long)hd);
        kn_emit_arg qr = {KN_ARG_SCRATCH, 1, (size_t)q->numel * (size_t)(kn_dtype_bits(q->dtype) / 8), NULL, 0};
        app[7] = qa;
        app[8] = qr;
        app[9] = (kn_emit_arg){KN_ARG_IN, 4, 0, NULL, 0};
        app[10] = (kn_emit_arg){KN_ARG_IN, 5, 0, NULL, 0};
        app[11] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof rp, &rp, 0};
        KN_TRY(launch(e, kn_attn_append_rope_source, &sp, KN_ATTN_APPEND_ROPE_ENTRY,
                      kn_emit_grid(k->numel + q->numel), 256, app, 12));
        qa = qr;
    } else {
        KN_TRY(launch(e, kn_attn_append_source, &sp, KN_ATTN_APPEND_ENTRY, kn_emit_grid(k->numel), 256, app, 7));
    }
    /* 2. attention over past + new tokens (the mask argument is unused: Q stands in) */
    bool dec_dim = hd == 32 || hd == 64 || hd == 128 || hd == 256;
    if (sq == 1 && dec_dim && mode != 0) {
        p.n_split = kn_attn_decode_splits(batch, qh, sq, max_seq, 0);
        uint64_t part = kn_decode_partial_bytes(batch, qh, sq, p.n_split, (int)hd);
        kn_emit_arg scratch = {KN_ARG_SCRATCH, 0, (size_t)part, NULL, 0};
        /* a counter per (batch, row) in the persistent memory: the last split block merges the partials */
        kn_emit_arg cnt = {KN_ARG_PERSIST, 0, (size_t)kn_decode_counter_bytes(batch, qh, sq), NULL, 0};
        kn_emit_arg dec[10] = {qa, kp, vp, table, past, qa, scratch, cnt, ya, params};
        return launch(e, kn_attn_decode_source, &sp, KN_ATTN_DECODE_ENTRY,
                      kn_attn_decode_grid(batch, qh, sq, p.n_split), KN_DECODE_THREADS, dec, 10);
    }
    kn_emit_arg att[8] = {qa, kp, vp, table, past, qa, ya, params};
    bool tc = mode == 2 && (q->dtype == KN_F16 || q->dtype == KN_BF16) && hd % 32 == 0 && hd <= 128;
    if (tc)
        return launch(e, kn_attn_flash_tc_source, &sp, KN_ATTN_FLASH_TC_ENTRY, kn_attn_tc_grid(batch, qh, sq),
                      KN_FLASH_THREADS, att, 8);
    if (mode != 0 && hd % 4 == 0 && hd <= 128)
        return launch(e, kn_attn_flash_source, &sp, KN_ATTN_FLASH_ENTRY, kn_attn_flash_grid(batch, qh, sq),
                      KN_FLASH_THREADS, att, 8);
    return launch(e, kn_attn_simple_source, &sp, KN_ATTN_SIMPLE_ENTRY, kn_emit_grid(batch * qh * sq), 256, att, 8);
}
