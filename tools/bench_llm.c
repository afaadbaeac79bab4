/* kiln bench MODEL.plan --prompt-len P --gen-len G [--batch B]: the
 * language-model benchmark. B sequences of P random prompt tokens are
 * prefilled, then each decodes G tokens greedily (argmax) through a
 * kn_session (the paged KV cache when the plan has one): G batched decode
 * steps of all B sequences (kn_session_forward_batch_greedy) when the
 * session batches (one run on the CPU; on CUDA the plan's batched decode
 * programs, kiln compile --decode-batch), else one step per sequence in
 * turn. Reports prefill and decode tokens/s (all B sequences), time to
 * first token, decode step latency p50/p99, and the bytes a decode step
 * reads (weights once + the KV cache of its sequences at the mean context)
 * with the bandwidth that implies. --device cuda runs the CUDA session of
 * a target-cuda decoder plan (its prefill, decode and batched decode
 * programs, and batched prefill programs that prefill the B prompts
 * together; kn_session_create_device): the argmax on the device (4 bytes
 * back per token), each decode step a CUDA
 * graph replay (--no-cuda-graph: kernel by kernel), and the fraction of
 * the HBM roofline: bytes per step / step time / the device's copy
 * bandwidth measured in the same run (kn_cuda_copy_bandwidth). */
#include "cli.h"
#include "ir/ir.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "kiln/session.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: kiln bench MODEL.plan --prompt-len P --gen-len G [options]\n"
    "\n"
    "Language-model benchmark: B sequences of P random prompt tokens are\n"
    "prefilled, then each decodes G tokens greedily through a session (the\n"
    "runtime's paged KV cache when the plan has one, see docs/llm.md): each\n"
    "decode step runs all B sequences at once when the session batches (a CPU\n"
    "session on a paged plan; on CUDA the plan's batched decode programs of\n"
    "kiln compile --decode-batch), else one step per sequence in turn.\n"
    "\n"
    "options:\n"
    "  --prompt-len P      prompt tokens per sequence (default 128)\n"
    "  --gen-len G         decode steps per sequence (default 128)\n"
    "  --batch B           sequences (default 1), decoded together\n"
    "  --device D          auto (default: CUDA for a plan of kiln compile --target\n"
    "                      cuda on a decoder when a GPU is there, else the CPU),\n"
    "                      cpu or cuda\n"
    "  --warmup N          untimed warm-up decode steps on a scratch sequence, after\n"
    "                      a 2-token prefill (default 2)\n"
    "  --no-cuda-graph     --device cuda: launch each decode step and prefill chunk\n"
    "                      kernel by kernel instead of replaying it as a CUDA graph\n"
    "  --seed N            seed for the prompt tokens (default 0)\n"
    "  --json              print the results as JSON\n"
    "\n"
    "Reports prefill tokens/s, decode tokens/s (all sequences), time to first\n"
    "token (prefill + argmax of one sequence), decode step latency p50/p99, and\n"
    "the bytes a decode step reads (weights + the KV cache of its sequences at\n"
    "the mean context) and the\n"
    "bandwidth that implies; on CUDA also the device's copy bandwidth measured\n"
    "in the same run and the fraction of it a decode step reaches (roofline).\n";

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* nearest-rank percentile of a sorted array */
static double pct(const double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    return v[k ? k - 1 : 0];
}

static bool parse_u(const char *opt, const char *s, unsigned long long min, unsigned long long max,
                    unsigned long long *out)
{
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (e == s || *e || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "error: bench: %s expects an integer from %llu to %llu, got '%s'\n", opt, min, max, s);
        return false;
    }
    *out = v;
    return true;
}

bool kn_bench_is_llm(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--prompt-len") == 0 || strcmp(argv[i], "--gen-len") == 0 ||
            strcmp(argv[i], "--batch") == 0)
            return true;
    return false;
}

/* Bytes of the plan's constants (the weights a decode step reads). */
static uint64_t weight_bytes(const kn_graph *g)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < g->n_values; i++)
        if (g->values[i].kind == KN_VAL_CONST && g->values[i].tensor)
            n += g->values[i].tensor->nbytes;
    return n;
}

int kn_bench_llm(int argc, char **argv)
{
    const char *plan = NULL, *device = "auto";
    unsigned long long P = 128, G = 128, B = 1, warm = 2, seed = 0;
    bool json = false, no_graph = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        } else if (strcmp(a, "--prompt-len") == 0 && has) {
            if (!parse_u(a, argv[++i], 1, 1u << 20, &P))
                return KN_EXIT_BAD_INPUT;
        } else if (strcmp(a, "--gen-len") == 0 && has) {
            if (!parse_u(a, argv[++i], 1, 1u << 20, &G))
                return KN_EXIT_BAD_INPUT;
        } else if (strcmp(a, "--batch") == 0 && has) {
            if (!parse_u(a, argv[++i], 1, 4096, &B))
                return KN_EXIT_BAD_INPUT;
        } else if (strcmp(a, "--warmup") == 0 && has) {
            if (!parse_u(a, argv[++i], 0, 1000000, &warm))
                return KN_EXIT_BAD_INPUT;
        } else if (strcmp(a, "--seed") == 0 && has) {
            if (!parse_u(a, argv[++i], 0, ~0ull, &seed))
                return KN_EXIT_BAD_INPUT;
        } else if (strcmp(a, "--device") == 0 && has) {
            device = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (strcmp(a, "--no-cuda-graph") == 0) {
            no_graph = true;
        } else if (a[0] != '-' && !plan) {
            plan = a;
        } else {
            fprintf(stderr, "error: bench: unknown or incomplete option '%s' (with --prompt-len/--gen-len)\n%s", a,
                    usage);
            return KN_EXIT_BAD_INPUT;
        }
    }
    if (!plan) {
        fprintf(stderr, "error: bench: no plan given\n%s", usage);
        return KN_EXIT_BAD_INPUT;
    }
    if (strcmp(device, "auto") != 0 && strcmp(device, "cpu") != 0 && strcmp(device, "cuda") != 0) {
        fprintf(stderr, "error: bench: --device must be auto, cpu or cuda\n");
        return KN_EXIT_BAD_INPUT;
    }
    kn_session_device dev = strcmp(device, "cuda") == 0  ? KN_DEVICE_CUDA
                            : strcmp(device, "cpu") == 0 ? KN_DEVICE_CPU
                                                         : KN_DEVICE_AUTO;
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    kn_session *s = NULL;
    uint32_t *seqs = calloc(B, sizeof *seqs);
    int64_t *ids = malloc((size_t)(B * P) * sizeof *ids), *next = calloc(B, sizeof *next), *cur = calloc(B, sizeof *cur);
    double *lat = malloc((size_t)(B * G + 1) * sizeof *lat), *ttft = malloc(B * sizeof *ttft);
    const int64_t **prompts = malloc(B * sizeof *prompts);
    uint32_t *lens = malloc(B * sizeof *lens);
    int rc = KN_EXIT_INTERNAL;
    if (!seqs || !ids || !next || !cur || !lat || !ttft || !prompts || !lens)
        goto done;
    kn_status st = kn_plan_load(plan, NULL, d, &g);
    kn_session_options so;
    kn_session_options_defaults(&so);
    so.no_cuda_graph = no_graph;
    if (st == KN_OK)
        st = kn_session_create_device(g, dev, &so, NULL, d, &s);
    kn_session_info info;
    if (st == KN_OK) {
        kn_session_get_info(s, &info);
        /* a paged pool for B sequences of P + G tokens (the plan's holds one of
         * max-seq-len; a CUDA session with batched decode programs adds the
         * block of their spare rows itself) */
        uint64_t per = info.block_size ? (P + G + info.block_size - 1) / info.block_size : 0;
        if (info.cache == KN_CACHE_PAGED && info.n_blocks && per * B > info.free_blocks) {
            so.kv_cache_mem = per * B * (info.kv_bytes / info.n_blocks);
            kn_session_destroy(s);
            s = NULL;
            st = kn_session_create_device(g, dev, &so, NULL, d, &s);
            if (st == KN_OK)
                kn_session_get_info(s, &info);
        }
    }
    if (st == KN_OK) {
        if (P + G > info.max_seq_len) {
            kn_diag_add(d, KN_ERROR, "bench: --prompt-len %llu + --gen-len %llu exceed the plan's max sequence "
                        "length %u (kiln compile --max-seq-len)", P, G, info.max_seq_len);
            st = KN_ERR_INVALID;
        }
    }
    /* warm-up on a scratch sequence (on CUDA its first forward, of 2
     * tokens, captures the prefill graph, the next the decode graph); it
     * also tells the vocabulary size. On CUDA the batched programs' graphs
     * are captured in the warm-up below or at their first (timed) step. */
    uint32_t scratch;
    if (st == KN_OK)
        st = kn_session_add_sequence(s, &scratch);
    for (unsigned long long i = 0; st == KN_OK && i < warm + 2; i++) {
        int64_t t[2] = {0, 0}, nt;
        st = kn_session_forward_greedy(s, scratch, t, i == 0 ? 2 : 1, &nt);
    }
    if (st == KN_OK) {
        st = kn_session_free_sequence(s, scratch);
        kn_session_get_info(s, &info);
        if (!info.vocab)
            st = KN_ERR_INVALID;
    }
    if (st == KN_OK && B > 1 && kn_session_prefill_batched(s)) {
        /* and B 2-token prompts together: the batched prefill program the
         * timed prompts take captures its graph */
        static const int64_t two[2] = {0, 0};
        for (unsigned long long b = 0; b < B; b++)
            prompts[b] = two, lens[b] = 2;
        for (unsigned long long b = 0; st == KN_OK && b < B; b++)
            st = kn_session_add_sequence(s, &seqs[b]);
        if (st == KN_OK)
            st = kn_session_prefill_batch_greedy(s, seqs, prompts, lens, (uint32_t)B, next);
        for (unsigned long long b = 0; st == KN_OK && b < B; b++)
            st = kn_session_free_sequence(s, seqs[b]);
    }
    uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
    double t_prefill = 0, t_decode = 0;
    size_t n_lat = 0;
    for (unsigned long long b = 0; st == KN_OK && b < B; b++) {
        for (unsigned long long i = 0; i < P; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[b * P + i] = (int64_t)((x >> 33) % info.vocab);
        }
        prompts[b] = ids + b * P;
        lens[b] = (uint32_t)P;
        st = kn_session_add_sequence(s, &seqs[b]);
    }
    /* the prompts: together through the batched prefill programs when the
     * session has them (every prompt's first token after the one time),
     * else one after another */
    bool together = st == KN_OK && B > 1 && P >= 2 && kn_session_prefill_batched(s);
    if (together) {
        double t0 = now_s();
        st = kn_session_prefill_batch_greedy(s, seqs, prompts, lens, (uint32_t)B, next);
        t_prefill = now_s() - t0;
        for (unsigned long long b = 0; b < B; b++)
            ttft[b] = t_prefill;
    }
    for (unsigned long long b = 0; st == KN_OK && !together && b < B; b++) {
        double t0 = now_s();
        st = kn_session_forward_greedy(s, seqs[b], prompts[b], (uint32_t)P, &next[b]);
        ttft[b] = now_s() - t0;
        t_prefill += ttft[b];
    }
    /* a step: every sequence's next token, together when the session
     * batches (kn_session_forward_batch_greedy: one run on the CPU, the
     * batched decode programs on CUDA, argmax on the device there) */
    bool batched = st == KN_OK && kn_session_batched(s);
    for (unsigned long long step = 0; st == KN_OK && step < G; step++) {
        memcpy(cur, next, (size_t)B * sizeof *cur);
        double t0 = now_s();
        if (batched) {
            st = kn_session_forward_batch_greedy(s, seqs, cur, (uint32_t)B, next);
        } else {
            for (unsigned long long b = 0; st == KN_OK && b < B; b++)
                st = kn_session_forward_greedy(s, seqs[b], &cur[b], 1, &next[b]);
        }
        lat[n_lat] = now_s() - t0;
        t_decode += lat[n_lat++];
    }
    if (st != KN_OK) {
        rc = st == KN_ERR_NOMEM || st == KN_ERR_INTERNAL ? KN_EXIT_INTERNAL : KN_EXIT_BAD_INPUT;
        goto done;
    }
    qsort(lat, n_lat, sizeof *lat, cmp_double);
    qsort(ttft, B, sizeof *ttft, cmp_double);
    /* bytes a decode step reads: every weight once, and the K/V of the
     * context (mean over the steps: P + (G + 1) / 2 tokens) in the
     * cache's dtype */
    uint64_t wb = weight_bytes(g);
    double ctx = (double)P + (double)(G + 1) / 2.0;
    double kv_elem = info.kv_dtype == KN_F16 || info.kv_dtype == KN_BF16 ? 2.0 : 4.0;
    double kvb = info.cache == KN_CACHE_PAGED
                     ? (double)B * ctx * info.n_layers * info.kv_heads * info.head_dim * 2.0 * kv_elem
                     : 0.0;
    double step_mean = t_decode / (double)n_lat, bytes = (double)wb + kvb;
    double prefill_tps = (double)(B * P) / t_prefill, decode_tps = (double)(B * G) / t_decode;
    bool on_cuda = kn_session_on_cuda(s);
    /* the roofline: the device's copy bandwidth, measured now */
    double peak = 0, achieved = bytes / step_mean / 1e9;
    if (on_cuda && kn_cuda_copy_bandwidth(0, 0, 0, &peak, d) != KN_OK)
        peak = 0;
    char peak_s[64] = "null", frac_s[64] = "null";
    if (peak > 0) {
        snprintf(peak_s, sizeof peak_s, "%.3f", peak);
        snprintf(frac_s, sizeof frac_s, "%.4f", achieved / peak);
    }
    const char *cache = info.cache == KN_CACHE_PAGED ? "paged" : info.cache == KN_CACHE_TENSORS ? "tensors" : "none";
    if (json) {
        printf("{\"plan\": \"%s\", \"device\": \"%s\", \"cache\": \"%s\", \"prompt_len\": %llu, \"gen_len\": %llu, "
               "\"batch\": %llu, \"prefill_tokens_per_s\": %.3f, \"decode_tokens_per_s\": %.3f, "
               "\"ttft_ms\": {\"median\": %.4f, \"max\": %.4f}, \"decode_latency_ms\": {\"p50\": %.4f, \"p99\": %.4f, "
               "\"mean\": %.4f}, \"decode_steps\": %zu, \"batched_decode\": %s, \"batched_prefill\": %s, "
               "\"bytes_per_decode_step\": %.0f, "
               "\"weight_bytes\": %llu, \"kv_bytes_mean\": %.0f, "
               "\"decode_gb_per_s\": %.3f, \"peak_gb_per_s\": %s, \"roofline_fraction\": %s, \"cuda_graph\": %s}\n",
               plan, on_cuda ? "cuda" : "cpu", cache, P, G, B, prefill_tps, decode_tps, pct(ttft, B, 50) * 1e3, ttft[B - 1] * 1e3,
               pct(lat, n_lat, 50) * 1e3, pct(lat, n_lat, 99) * 1e3, step_mean * 1e3, n_lat,
               batched ? "true" : "false", together ? "true" : "false", bytes, (unsigned long long)wb, kvb, achieved, peak_s, frac_s, on_cuda && !no_graph ? "true" : "false");
    } else {
        printf("plan:              %s (KV cache: %s), %s\n", plan, cache,
               on_cuda ? "CUDA backend (prefill and decode programs)" : "CPU reference backend");
        printf("shape:             batch %llu x (prompt %llu + %llu decode steps); %s\n", B, P, G,
               B == 1    ? "one sequence per step"
               : batched && on_cuda ? "each step runs all sequences through the plan's batched decode programs"
               : batched            ? "each step runs all sequences in one run"
                         : "each step runs the sequences one after another (the session does not batch)");
        printf("prefill:           %.1f tokens/s (%.2f ms for %llu tokens%s)\n", prefill_tps, t_prefill * 1e3, B * P,
               together ? ", the prompts together through the plan's batched prefill programs" : "");
        printf("time to first token: %.3f ms median, %.3f ms max\n", pct(ttft, B, 50) * 1e3, ttft[B - 1] * 1e3);
        printf("decode:            %.1f tokens/s (%zu steps of %llu token%s, %.2f ms)\n", decode_tps, n_lat, B,
               B == 1 ? "" : "s", t_decode * 1e3);
        printf("decode latency:    p50 %.3f ms, p99 %.3f ms, mean %.3f ms per step\n", pct(lat, n_lat, 50) * 1e3,
               pct(lat, n_lat, 99) * 1e3, step_mean * 1e3);
        printf("bytes per step:    %.2f MiB (weights %.2f MiB + KV %.2f MiB of %llu sequence%s at mean context "
               "%.0f) -> %.2f GB/s\n",
               bytes / 1048576.0, (double)wb / 1048576.0, kvb / 1048576.0, B, B == 1 ? "" : "s", ctx,
               bytes / step_mean / 1e9);
        if (peak > 0)
            printf("roofline:          %.1f%% of the device's copy bandwidth %.1f GB/s (measured now); decode steps %s\n",
                   100.0 * achieved / peak, peak, no_graph ? "kernel by kernel" : "as CUDA graph replays");
        else
            printf("roofline:          n/a (%s)\n", on_cuda ? "the device's copy bandwidth could not be measured"
                                                          : "CPU backend; the HBM roofline is measured on CUDA");
    }
    rc = 0;
done:
    kn_session_destroy(s);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    free(seqs), free(ids), free(next), free(cur), free(lat), free(ttft), free(prompts), free(lens);
    return rc;
}
