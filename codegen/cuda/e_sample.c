/* GPU token sampling kernels (sample_kernels.h): the semantics of
 * runtime/sampler.c's kn_sampler_pick without the repetition penalty, one
 * block per row.
 *
 *   kn_sample_argmax  greedy: per-thread strided scan, then a warp-shuffle
 *                     and shared-memory reduction of (logit, id) with ties
 *                     to the lower id.
 *   kn_sample         the greedy fallbacks of the CPU sampler (temperature
 *                     <= 0, top_k 1, an infinite maximum, a temperature so
 *                     small that 1/T overflows), then:
 *                     - no cut: every id in id order; thread t sums the
 *                       softmax numerators exp((w - max) / T) of a
 *                       contiguous id range, thread 0 makes the prefix of
 *                       the 256 sums, the draw r = u * total is placed by
 *                       the first id whose running sum exceeds it;
 *                     - top-k and/or top-p: candidates best first (larger
 *                       logit, then lower id: one 64-bit key) in chunks of
 *                       1024, each a radix select of its last key over the
 *                       vocabulary plus a bitonic sort in shared memory;
 *                       thread 0 then walks them in order as the CPU does
 *                       (the top-k total, the shortest prefix reaching
 *                       top_p of the mass, the draw).
 * Sums are in double as on the CPU. What can differ from the CPU: the
 * association of two sums (the whole-vocabulary mass for top-p alone, and
 * the total of the no-cut case are summed per thread then combined, not
 * left to right), and exp's last bit on a GPU, so a draw within about 1e-15
 * (relative) of a boundary between two ids may fall on the other side. */
#include "codegen/cuda/sample_kernels.h"
#include "codegen/cuda/program.h"
#include "ir/arena.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char body[] =
    "typedef unsigned int u32;\n"
    "#define NT 256\n"
    "#define CH 1024\n"
    "struct P { i64 rows, vocab, stride; float temperature, top_p; u32 top_k; int pad_; };\n"
    "/* a logit as the CPU sampler sees it: NaN -> -inf; -0 -> +0 (equal logits order by id) */\n"
    "__device__ __forceinline__ float kn_w(const T *row, i64 i) {\n"
    "  const float v = kn_tof(row[i]);\n"
    "  return v != v ? -kn_inff() : v == 0.0f ? 0.0f : v;\n"
    "}\n"
    "/* best-first order as one 64-bit key: larger logit first, then lower id */\n"
    "__device__ __forceinline__ u64 kn_key(float w, u32 id) {\n"
    "  u32 u = __float_as_uint(w);\n"
    "  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);\n"
    "  return ((u64)u << 32) | (u64)(~id);\n"
    "}\n"
    "__device__ __forceinline__ u32 kn_key_id(u64 k) { return ~(u32)k; }\n"
    "__device__ __forceinline__ float kn_key_w(u64 k) {\n"
    "  u32 u = (u32)(k >> 32);\n"
    "  u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;\n"
    "  return __uint_as_float(u);\n"
    "}\n"
    "struct kn_shared {\n"
    "  u64 ck0[CH];         /* the best CH candidates, best first */\n"
    "  u64 ckx[CH];         /* a later chunk */\n"
    "  u32 hist[256];\n"
    "  double dred[NT / 32];\n"
    "  float fred[NT / 32];\n"
    "  u32 ured[NT / 32];\n"
    "  double pre[NT];\n"
    "  double cum, total;\n"
    "  u64 hi;\n"
    "  int digit, need, cnt, pos, done;\n"
    "  u32 best, pick, last;\n"
    "};\n"
    "/* the row's argmax (lowest id among equal maxima) into s.best, its logit returned */\n"
    "__device__ float kn_argmax(const T *row, i64 V, kn_shared &s) {\n"
    "  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;\n"
    "  float bw = -kn_inff();\n"
    "  u32 bi = 0xffffffffu;\n"
    "  for (i64 i = tid; i < V; i += NT) {\n"
    "    const float w = kn_w(row, i);\n"
    "    if (bi == 0xffffffffu || w > bw) { bw = w; bi = (u32)i; }\n"
    "  }\n"
    "  for (int off = 16; off > 0; off >>= 1) {\n"
    "    const float ow = __shfl_xor_sync(0xffffffffu, bw, off);\n"
    "    const u32 oi = __shfl_xor_sync(0xffffffffu, bi, off);\n"
    "    if (ow > bw || (ow == bw && oi < bi)) { bw = ow; bi = oi; }\n"
    "  }\n"
    "  if (lane == 0) { s.fred[warp] = bw; s.ured[warp] = bi; }\n"
    "  __syncthreads();\n"
    "  if (tid == 0) {\n"
    "    for (int w = 1; w < NT / 32; w++)\n"
    "      if (s.fred[w] > bw || (s.fred[w] == bw && s.ured[w] < bi)) { bw = s.fred[w]; bi = s.ured[w]; }\n"
    "    s.best = bi;\n"
    "    s.fred[0] = bw;\n"
    "  }\n"
    "  __syncthreads();\n"
    "  const float r = s.fred[0];\n"
    "  __syncthreads();\n"
    "  return r;\n"
    "}\n"
    "/* a block sum in a fixed order (per thread, then a shuffle tree, then the warps in order) */\n"
    "__device__ double kn_block_sum(double v, kn_shared &s) {\n"
    "  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);\n"
    "  if ((threadIdx.x & 31) == 0) s.dred[threadIdx.x >> 5] = v;\n"
    "  __syncthreads();\n"
    "  if (threadIdx.x == 0) {\n"
    "    double t = 0.0;\n"
    "    for (int w = 0; w < NT / 32; w++) t += s.dred[w];\n"
    "    s.total = t;\n"
    "  }\n"
    "  __syncthreads();\n"
    "  const double r = s.total;\n"
    "  __syncthreads();\n"
    "  return r;\n"
    "}\n"
    "/* The c best keys below `hi` into ck, best first: a radix select of the\n"
    " * c-th best key (8 digits of 8 bits, counts in shared memory), the keys at\n"
    " * or above it gathered, then a bitonic sort over the next power of two. */\n"
    "__device__ void kn_select(const T *row, i64 V, u64 hi, int c, u64 *ck, kn_shared &s) {\n"
    "  const int tid = threadIdx.x;\n"
    "  u64 prefix = 0, pmask = 0;\n"
    "  int need = c;\n"
    "  for (int shift = 56; shift >= 0; shift -= 8) {\n"
    "    for (int i = tid; i < 256; i += NT) s.hist[i] = 0u;\n"
    "    __syncthreads();\n"
    "    for (i64 i = tid; i < V; i += NT) {\n"
    "      const u64 key = kn_key(kn_w(row, i), (u32)i);\n"
    "      if (key < hi && (key & pmask) == prefix) atomicAdd(&s.hist[(key >> shift) & 255u], 1u);\n"
    "    }\n"
    "    __syncthreads();\n"
    "    if (tid == 0) {\n"
    "      int acc = 0, d = 255;\n"
    "      for (; d > 0; d--) {\n"
    "        if (acc + (int)s.hist[d] >= need) break;\n"
    "        acc += (int)s.hist[d];\n"
    "      }\n"
    "      s.digit = d;\n"
    "      s.need = need - acc;\n"
    "    }\n"
    "    __syncthreads();\n"
    "    prefix |= (u64)s.digit << shift;\n"
    "    pmask |= (u64)255u << shift;\n"
    "    need = s.need;\n"
    "    __syncthreads();\n"
    "  }\n"
    "  if (tid == 0) s.cnt = 0;\n"
    "  __syncthreads();\n"
    "  for (i64 i = tid; i < V; i += NT) {\n"
    "    const u64 key = kn_key(kn_w(row, i), (u32)i);\n"
    "    if (key < hi && key >= prefix) ck[atomicAdd(&s.cnt, 1)] = key;\n"
    "  }\n"
    "  int n2 = 2;\n"
    "  while (n2 < c) n2 <<= 1;\n"
    "  __syncthreads();\n"
    "  for (int i = c + tid; i < n2; i += NT) ck[i] = 0ull;\n"
    "  __syncthreads();\n"
    "  for (int k = 2; k <= n2; k <<= 1)\n"
    "    for (int j = k >> 1; j > 0; j >>= 1) {\n"
    "      for (int i = tid; i < n2; i += NT) {\n"
    "        const int ij = i ^ j;\n"
    "        if (ij > i) {\n"
    "          const u64 x = ck[i], y = ck[ij];\n"
    "          if ((i & k) == 0 ? x < y : x > y) { ck[i] = y; ck[ij] = x; }\n"
    "        }\n"
    "      }\n"
    "      __syncthreads();\n"
    "    }\n"
    "}\n"
    "/* Walks the candidates best first, one thread in order as the CPU does:\n"
    " *   mode 0: s.cum = the sum of the first lim softmax numerators\n"
    " *   mode 1: adds them until the sum reaches target: s.pos = how many, s.cum = the sum\n"
    " *   mode 2: the draw: s.pick = the first id with mass whose running sum exceeds target\n"
    " *           (s.last: the last id with mass, when rounding leaves target at the very top)\n"
    " * Chunk 0 is s.ck0; later chunks (more than CH candidates) are selected again into s.ckx. */\n"
    "__device__ void kn_walk(const T *row, i64 V, int mode, i64 lim, double target, double mx, double inv_t,\n"
    "                        kn_shared &s) {\n"
    "  __syncthreads(); /* every thread has read the previous walk's results */\n"
    "  if (threadIdx.x == 0) {\n"
    "    s.cum = 0.0; s.pos = 0; s.done = 0;\n"
    "    s.pick = 0xffffffffu; s.last = kn_key_id(s.ck0[0]);\n"
    "  }\n"
    "  __syncthreads();\n"
    "  for (i64 c0 = 0;; c0 += CH) {\n"
    "    const int c = lim - c0 < CH ? (int)(lim - c0) : CH;\n"
    "    const u64 *ck = s.ck0;\n"
    "    if (c0 > 0) { kn_select(row, V, s.hi, c, s.ckx, s); ck = s.ckx; }\n"
    "    if (threadIdx.x == 0) {\n"
    "      for (int j = 0; j < c && !s.done; j++) {\n"
    "        const double e = exp(((double)kn_key_w(ck[j]) - mx) * inv_t);\n"
    "        if (mode == 0) {\n"
    "          s.cum += e;\n"
    "        } else if (mode == 1) {\n"
    "          s.cum += e;\n"
    "          s.pos++;\n"
    "          if (s.cum >= target) s.done = 1;\n"
    "        } else if (e > 0.0) {\n"
    "          s.last = kn_key_id(ck[j]);\n"
    "          s.cum += e;\n"
    "          if (target < s.cum) { s.pick = s.last; s.done = 1; }\n"
    "        }\n"
    "      }\n"
    "      s.hi = ck[c - 1];\n"
    "    }\n"
    "    __syncthreads();\n"
    "    const bool stop = s.done || c0 + c >= lim;\n"
    "    __syncthreads();\n"
    "    if (stop) return;\n"
    "  }\n"
    "}\n"
    "/* Greedy: grid (rows), NT threads; out[r] = argmax of row r (lowest id on ties). */\n"
    "extern \"C\" __global__ void __launch_bounds__(NT) kn_sample_argmax(const T *logits, int *out, P p) {\n"
    "  __shared__ kn_shared s;\n"
    "  kn_argmax(logits + (i64)blockIdx.x * p.stride, p.vocab, s);\n"
    "  if (threadIdx.x == 0) out[blockIdx.x] = (int)s.best;\n"
    "}\n"
    "/* Temperature, top-k, top-p and the draw of runtime/sampler.c, with the\n"
    " * uniform number u[r] in [0, 1) from the host: grid (rows), NT threads. */\n"
    "extern \"C\" __global__ void __launch_bounds__(NT) kn_sample(const T *logits, const double *u, int *out, P p) {\n"
    "  __shared__ kn_shared s;\n"
    "  const int tid = threadIdx.x;\n"
    "  const i64 V = p.vocab;\n"
    "  const T *row = logits + (i64)blockIdx.x * p.stride;\n"
    "  const float bw = kn_argmax(row, V, s);\n"
    "  const double inv_t = 1.0 / (double)p.temperature;\n"
    "  if (p.temperature <= 0.0f || p.top_k == 1u || isinf(bw) || !isfinite(inv_t) || inv_t > 1e30) {\n"
    "    if (tid == 0) out[blockIdx.x] = (int)s.best;\n"
    "    return;\n"
    "  }\n"
    "  const double mx = (double)bw;\n"
    "  const bool cut_p = p.top_p > 0.0f && p.top_p < 1.0f, cut_k = p.top_k > 0u && (i64)p.top_k < V;\n"
    "  if (!cut_k && !cut_p) {\n"
    "    /* every id, in id order: thread t sums ids [t L, t L + L), the prefix of the\n"
    "     * threads' sums places the draw, the first crossing wins */\n"
    "    const i64 L = (V + NT - 1) / NT, lo = tid * L, hi = lo + L < V ? lo + L : V;\n"
    "    double sum = 0.0;\n"
    "    for (i64 i = lo; i < hi; i++) sum += exp(((double)kn_w(row, i) - mx) * inv_t);\n"
    "    s.pre[tid] = sum;\n"
    "    __syncthreads();\n"
    "    if (tid == 0) {\n"
    "      double run = 0.0;\n"
    "      for (int t = 0; t < NT; t++) { const double x = s.pre[t]; s.pre[t] = run; run += x; }\n"
    "      s.total = run;\n"
    "      s.pick = 0xffffffffu;\n"
    "      s.last = 0u;\n"
    "    }\n"
    "    __syncthreads();\n"
    "    const double r = u[blockIdx.x] * s.total;\n"
    "    double cum = s.pre[tid];\n"
    "    u32 found = 0xffffffffu, last = 0u;\n"
    "    bool any = false;\n"
    "    for (i64 i = lo; i < hi; i++) {\n"
    "      const double e = exp(((double)kn_w(row, i) - mx) * inv_t);\n"
    "      if (e <= 0.0) continue;\n"
    "      last = (u32)i;\n"
    "      any = true;\n"
    "      cum += e;\n"
    "      if (r < cum) { found = (u32)i; break; }\n"
    "    }\n"
    "    if (found != 0xffffffffu) atomicMin(&s.pick, found);\n"
    "    if (any) atomicMax(&s.last, last);\n"
    "    __syncthreads();\n"
    "    if (tid == 0) out[blockIdx.x] = (int)(s.pick != 0xffffffffu ? s.pick : s.last);\n"
    "    return;\n"
    "  }\n"
    "  const i64 nc = cut_k ? (i64)p.top_k : V;\n"
    "  double mass = 0.0; /* top-p alone: the softmax mass of the whole vocabulary */\n"
    "  if (!cut_k) {\n"
    "    double part = 0.0;\n"
    "    for (i64 i = tid; i < V; i += NT) part += exp(((double)kn_w(row, i) - mx) * inv_t);\n"
    "    mass = kn_block_sum(part, s);\n"
    "  }\n"
    "  kn_select(row, V, ~0ull, nc < CH ? (int)nc : CH, s.ck0, s);\n"
    "  i64 keep = nc;\n"
    "  double total;\n"
    "  if (cut_k) {\n"
    "    kn_walk(row, V, 0, nc, 0.0, mx, inv_t, s);\n"
    "    total = s.cum;\n"
    "  }\n"
    "  if (cut_p) {\n"
    "    const double want = (double)p.top_p * (cut_k ? total : mass);\n"
    "    kn_walk(row, V, 1, nc, want, mx, inv_t, s);\n"
    "    keep = s.pos;\n"
    "    total = s.cum;\n"
    "  }\n"
    "  kn_walk(row, V, 2, keep, u[blockIdx.x] * total, mx, inv_t, s);\n"
    "  if (tid == 0) out[blockIdx.x] = (int)(s.pick != 0xffffffffu ? s.pick : s.last);\n"
    "}\n";

char *kn_sample_source(kn_dtype logits_dtype, char *err, size_t err_size)
{
    if (logits_dtype != KN_F32 && logits_dtype != KN_F16 && logits_dtype != KN_BF16) {
        snprintf(err, err_size, "sampling kernels take float32, float16 or bfloat16 logits, not %s",
                 kn_dtype_name(logits_dtype));
        return NULL;
    }
    kn_sb sb = {0};
    kn_sb_printf(&sb, "#include \"kiln_cuda.h\"\ntypedef %s T;\n", kn_cuda_type(logits_dtype));
    kn_sb_printf(&sb, "%s", body);
    const char *t = kn_sb_str(&sb);
    char *r = t ? strdup(t) : NULL;
    kn_sb_free(&sb);
    if (!r)
        snprintf(err, err_size, "out of memory");
    return r;
}

kn_status kn_cu_program_add_sampling(struct kn_cu_program *p, kn_graph *g, kn_dtype logits_dtype, kn_diag *d)
{
    char err[256];
    char *src = kn_sample_source(logits_dtype, err, sizeof err);
    if (!src) {
        kn_diag_add(d, KN_ERROR, "sampling kernels: %s", err);
        return logits_dtype == KN_F32 || logits_dtype == KN_F16 || logits_dtype == KN_BF16 ? KN_ERR_NOMEM
                                                                                          : KN_ERR_UNSUPPORTED;
    }
    size_t n = strlen(src);
    static const char *const entries[2] = {KN_SAMPLE_ARGMAX_ENTRY, KN_SAMPLE_ENTRY};
    kn_status st = KN_OK;
    for (int e = 0; e < 2 && st == KN_OK; e++) {
        st = kn_mem_grow(p->a, (void **)&p->kernels, &p->cap_kernels, p->n_kernels + 1, sizeof *p->kernels);
        if (st != KN_OK)
            break;
        kn_cu_kernel *k = &p->kernels[p->n_kernels];
        memset(k, 0, sizeof *k);
        k->source = kn_mem_alloc(p->a, n + 1);
        if (!k->source || kn_graph_intern_cstr(g, entries[e], &k->entry) != KN_OK) {
            kn_mem_free(p->a, k->source);
            st = KN_ERR_NOMEM;
            break;
        }
        memcpy(k->source, src, n + 1);
        uint64_t h = 14695981039346656037ull; /* FNV-1a of the source, then the entry */
        for (size_t i = 0; i < n; i++)
            h = (h ^ (uint8_t)src[i]) * 1099511628211ull;
        for (const char *c = entries[e]; *c; c++)
            h = (h ^ (uint8_t)*c) * 1099511628211ull;
        k->hash = h;
        p->n_kernels++;
    }
    free(src);
    if (st != KN_OK)
        kn_diag_add(d, KN_ERROR, "sampling kernels: out of memory");
    return st;
}
