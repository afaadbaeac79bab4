/* The dense GEMV kernels (gemv_kernels.h): the source generator, the
 * launch shapes and kn_emit_gemv, which the MatMul, Gemm and
 * kiln.GemmEpilogue emitters call for a product the per-shape choice
 * gives to the GEMV. */
#include "codegen/cuda/gemv_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_float3(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

int kn_gemv_vec(kn_dtype dt, int64_t n)
{
    int es = dt == KN_F32 ? 4 : 2;
    for (int v = 16 / es; v > 1; v /= 2)
        if (n % v == 0)
            return v;
    return 1;
}

kn_dim3 kn_gemv_plan(int vec, kn_gemv_params *p)
{
    int64_t cols = 32 * (int64_t)vec, bx = (p->n + cols - 1) / cols, tiles = (p->k + KN_GEMV_TK - 1) / KN_GEMV_TK;
    int64_t splits = bx >= KN_GEMV_TARGET_BLOCKS ? 1 : (KN_GEMV_TARGET_BLOCKS + bx - 1) / bx;
    if (splits > tiles)
        splits = tiles;
    if (splits > 65535)
        splits = 65535;
    if (splits < 1)
        splits = 1;
    int64_t per = (tiles + splits - 1) / splits; /* tiles per split; then no split is empty */
    p->kchunk = per * KN_GEMV_TK;
    p->splits = (tiles + per - 1) / per;
    return (kn_dim3){(uint32_t)bx, (uint32_t)p->splits, 1};
}

kn_dim3 kn_gemv_plan_swiglu(kn_dtype dt, kn_gemv_params *p)
{
    kn_gemv_params packed = *p;
    packed.n = 2 * p->n;
    kn_gemv_plan(kn_gemv_vec(dt, packed.n), &packed);
    p->kchunk = packed.kchunk, p->splits = packed.splits;
    int64_t cols = 32 * (int64_t)kn_gemv_vec(dt, p->n);
    return (kn_dim3){(uint32_t)((p->n + cols - 1) / cols), (uint32_t)p->splits, 1};
}

size_t kn_gemv_scratch_bytes(int rows, const kn_gemv_params *p)
{
    return p->splits > 1 ? (size_t)(p->splits * rows * p->n) * sizeof(float) : 0;
}

char *kn_gemv_source(const kn_gemv_spec *s, char *err, size_t err_size)
{
    if (!is_float3(s->dtype) || s->rows < 1 || s->rows > KN_GEMV_MAX_ROWS ||
        (s->vec != 1 && s->vec != 2 && s->vec != 4 && s->vec != 8) ||
        s->vec * (s->dtype == KN_F32 ? 4 : 2) > 16 || (s->swiglu && (s->gemm || s->bias || s->res || s->act))) {
        snprintf(err, err_size, "the GEMV takes float32/float16/bfloat16, 1 to %d rows and 1/2/4/8 columns per lane "
                 "(at most 16 bytes); the SwiGlu form no other epilogue", KN_GEMV_MAX_ROWS);
        return NULL;
    }
    int bytes = s->vec * (s->dtype == KN_F32 ? 4 : 2);
    const char *lt = bytes == 16 ? "uint4" : bytes == 8 ? "uint2" : bytes == 4 ? "unsigned int" : "unsigned short";
    bool act = s->act && strcmp(s->act, "v") != 0;
    kn_sb src = {0}, act_fn = {0};
    if (act)
        kn_sb_printf(&act_fn, "__device__ __forceinline__ double kn_gemv_act(double v, const P &p) { return %s; }\n",
                     s->act);
    kn_sb_printf(&src,
        "#include \"kiln_cuda.h\"\n"
        "typedef %s T;\n"
        "typedef %s LT; /* one lane's VEC elements of a row of B */\n"
        "#define ROWS %d\n"
        "#define VEC %d\n"
        "#define WARPS %d\n"
        "#define TK %d\n"
        "#define COLS (32 * VEC)\n"
        "#define HALVES %d /* 2: B is [K, 2N], lane columns j and N + j (gate and up) */\n"
        "#define LDB (HALVES * p.n) /* B's row length */\n"
        "struct P { i64 n, k, kchunk, splits, c_rs, c_cs, r_rs, r_cs; double alpha, beta, a, b; };\n"
        "__device__ __forceinline__ double kn_gemv_rnd(double v) { return kn_tod(kn_fromd<T>(v)); }\n"
        "%s"
        "/* the CPU reference's rounding points (runtime/cpu/k_fused_gemm.c): P (+ bias), the activation */\n"
        "__device__ __forceinline__ T kn_gemv_out(double s, i64 r, i64 n, const T *bias, const T *res, const P &p) {\n"
        "  double v = p.alpha * s;\n"
        "%s"
        "%s"
        "  v = kn_gemv_rnd(v);\n"
        "%s"
        "%s"
        "  return kn_fromd<T>(v);\n"
        "}\n"
        "%s",
        kn_cuda_type(s->dtype), lt, s->rows, s->vec, KN_GEMV_WARPS, KN_GEMV_TK, s->swiglu ? 2 : 1,
        act && kn_sb_str(&act_fn) ? kn_sb_str(&act_fn) : "",
        s->gemm ? "" : "  v = kn_gemv_rnd(v); /* MatMul: the product is a tensor */\n",
        s->bias ? "  v += p.beta * kn_tod(bias[r * p.c_rs + n * p.c_cs]);\n" : "",
        act ? "  v = kn_gemv_rnd(kn_gemv_act(v, p));\n" : "",
        s->res ? "  v += kn_tod(res[r * p.r_rs + n * p.r_cs]);\n" : "",
        s->swiglu ?
        "/* SwiGlu over the packed product (codegen/cuda/e_fused_act.c): each half rounded to T as the\n"
        "   product is stored, then silu(g) * u in double, rounded once */\n"
        "__device__ __forceinline__ T kn_gemv_swiglu(float sg, float su) {\n"
        "  const double g = kn_gemv_rnd((double)sg), u = kn_gemv_rnd((double)su);\n"
        "  return kn_fromd<T>(g / (1.0 + exp(-g)) * u);\n"
        "}\n"
        "#define KN_GEMV_Y(s, r, n) kn_gemv_swiglu(s[0], s[1])\n" :
        "#define KN_GEMV_Y(s, r, n) kn_gemv_out((double)s[0], r, n, bias, res, p)\n");
    kn_sb_printf(&src,
        "/* grid (ceil(N / COLS), splits), 32 * WARPS threads */\n"
        "extern \"C\" __global__ void __launch_bounds__(32 * WARPS) " KN_GEMV_ENTRY
        "(const T *a, const T *b, const T *bias, const T *res, T *y, float *part, unsigned *cnt, P p) {\n"
        "  __shared__ float as[ROWS][TK];\n"
        "  __shared__ float red[WARPS][HALVES * COLS];\n"
        "  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;\n"
        "  const i64 col0 = (i64)blockIdx.x * COLS + lane * VEC;\n"
        "  const bool live = col0 < p.n; /* N %% VEC == 0: then all VEC columns are */\n"
        "  const i64 ks = (i64)blockIdx.y * p.kchunk, ke = p.k < ks + p.kchunk ? p.k : ks + p.kchunk;\n"
        "  float acc[HALVES][ROWS][VEC];\n"
        "#pragma unroll\n"
        "  for (int h = 0; h < HALVES; h++)\n"
        "#pragma unroll\n"
        "    for (int r = 0; r < ROWS; r++)\n"
        "#pragma unroll\n"
        "      for (int c = 0; c < VEC; c++) acc[h][r][c] = 0.0f;\n"
        "  for (i64 k0 = ks; k0 < ke; k0 += TK) {\n"
        "    for (int i = tid; i < ROWS * TK; i += 32 * WARPS) {\n"
        "      const int r = i / TK, j = i %% TK;\n"
        "      as[r][j] = k0 + j < ke ? kn_tof(a[r * p.k + k0 + j]) : 0.0f;\n"
        "    }\n"
        "    __syncthreads();\n"
        "    if (live) {\n"
        "      LT w[HALVES][8];\n"
        "#pragma unroll\n"
        "      for (int u = 0; u < 8; u++)\n"
        "        if (k0 + warp * 8 + u < ke) {\n"
        "#pragma unroll\n"
        "          for (int h = 0; h < HALVES; h++) w[h][u] = *(const LT *)(b + (k0 + warp * 8 + u) * LDB + h * p.n + col0);\n"
        "        }\n"
        "#pragma unroll\n"
        "      for (int u = 0; u < 8; u++) {\n"
        "        const int j = warp * 8 + u;\n"
        "        if (k0 + j >= ke) break;\n"
        "#pragma unroll\n"
        "        for (int h = 0; h < HALVES; h++) {\n"
        "          const T *wv = (const T *)&w[h][u];\n"
        "#pragma unroll\n"
        "          for (int c = 0; c < VEC; c++) {\n"
        "            const float x = kn_tof(wv[c]);\n"
        "#pragma unroll\n"
        "            for (int r = 0; r < ROWS; r++) acc[h][r][c] = fmaf(as[r][j], x, acc[h][r][c]);\n"
        "          }\n"
        "        }\n"
        "      }\n"
        "    }\n"
        "    __syncthreads();\n"
        "  }\n"
        "  /* the warps' sums, added in warp order */\n"
        "  for (int r = 0; r < ROWS; r++) {\n"
        "#pragma unroll\n"
        "    for (int h = 0; h < HALVES; h++)\n"
        "#pragma unroll\n"
        "      for (int c = 0; c < VEC; c++) red[warp][h * COLS + lane * VEC + c] = acc[h][r][c];\n"
        "    __syncthreads();\n"
        "    for (int c = tid; c < COLS; c += 32 * WARPS) {\n"
        "      const i64 n = (i64)blockIdx.x * COLS + c;\n"
        "      if (n >= p.n) continue;\n"
        "      float s[HALVES];\n"
        "#pragma unroll\n"
        "      for (int h = 0; h < HALVES; h++) {\n"
        "        s[h] = 0.0f;\n"
        "#pragma unroll\n"
        "        for (int w = 0; w < WARPS; w++) s[h] += red[w][h * COLS + c];\n"
        "      }\n"
        "      if (p.splits == 1) y[r * p.n + n] = KN_GEMV_Y(s, r, n);\n"
        "      else {\n"
        "#pragma unroll\n"
        "        for (int h = 0; h < HALVES; h++) part[((i64)blockIdx.y * ROWS + r) * LDB + h * p.n + n] = s[h];\n"
        "      }\n"
        "    }\n"
        "    __syncthreads();\n"
        "  }\n"
        "  if (p.splits == 1 || !cnt) return; /* no split, or kn_gemv_combine adds the partials */\n"
        "  /* the last block of this column block to finish adds the splits' partials in split order\n"
        "     (as kn_gemv_combine does) and leaves its counter zero for the next launch */\n"
        "  __shared__ int last;\n"
        "  __threadfence();\n"
        "  __syncthreads();\n"
        "  if (tid == 0) last = atomicAdd(&cnt[blockIdx.x], 1u) == (unsigned)(p.splits - 1);\n"
        "  __syncthreads();\n"
        "  if (!last) return;\n"
        "  __threadfence();\n"
        "  const volatile float *vp = part;\n"
        "  for (int i = tid; i < ROWS * COLS; i += 32 * WARPS) {\n"
        "    const int r = i / COLS;\n"
        "    const i64 n = (i64)blockIdx.x * COLS + i %% COLS;\n"
        "    if (n >= p.n) continue;\n"
        "    float s[HALVES];\n"
        "    for (int h = 0; h < HALVES; h++) {\n"
        "      s[h] = 0.0f;\n"
        "      for (i64 q = 0; q < p.splits; q++) s[h] += vp[(q * ROWS + r) * LDB + h * p.n + n];\n"
        "    }\n"
        "    y[r * p.n + n] = KN_GEMV_Y(s, r, n);\n"
        "  }\n"
        "  if (tid == 0) cnt[blockIdx.x] = 0u;\n"
        "}\n"
        "/* the K splits' partial sums in split order, then the epilogue: one thread per output */\n"
        "extern \"C\" __global__ void " KN_GEMV_COMBINE_ENTRY
        "(const float *part, const T *bias, const T *res, T *y, P p) {\n"
        "  for (i64 i = kn_tid(); i < ROWS * p.n; i += kn_nthreads()) {\n"
        "    const i64 r = i / p.n, n = i %% p.n;\n"
        "    float s[HALVES];\n"
        "    for (int h = 0; h < HALVES; h++) {\n"
        "      s[h] = 0.0f;\n"
        "      for (i64 q = 0; q < p.splits; q++) s[h] += part[(q * ROWS + r) * LDB + h * p.n + n];\n"
        "    }\n"
        "    y[i] = KN_GEMV_Y(s, r, n);\n"
        "  }\n"
        "}\n");
    bool act_failed = act && !kn_sb_str(&act_fn);
    kn_sb_free(&act_fn);
    const char *t = act_failed ? NULL : kn_sb_str(&src);
    char *r = t ? strdup(t) : NULL;
    kn_sb_free(&src);
    if (!r)
        snprintf(err, err_size, "out of memory");
    return r;
}

kn_status kn_emit_gemv(kn_emit *e, kn_dtype dt, const kn_gemv_node *g)
{
    kn_gemv_spec sp = {dt, (int)g->m, kn_gemv_vec(dt, g->n), g->gemm, g->bias_in >= 0, g->res_in >= 0, g->act,
                       g->swiglu};
    kn_gemv_params p = g->p;
    p.n = g->n, p.k = g->k;
    kn_dim3 grid = g->swiglu ? kn_gemv_plan_swiglu(dt, &p) : kn_gemv_plan(sp.vec, &p);
    char err[256];
    char *src = kn_gemv_source(&sp, err, sizeof err);
    if (!src)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s", err);
    uint32_t kmain;
    kn_status s = kn_emit_kernel(e, src, KN_GEMV_ENTRY, &kmain);
    free(src);
    KN_TRY(s);
    kn_emit_arg a = {KN_ARG_IN, 0, 0, NULL, 0};
    kn_emit_arg bias = g->bias_in >= 0 ? (kn_emit_arg){KN_ARG_IN, (uint32_t)g->bias_in, 0, NULL, 0} : a;
    kn_emit_arg res = g->res_in >= 0 ? (kn_emit_arg){KN_ARG_IN, (uint32_t)g->res_in, 0, NULL, 0} : a;
    kn_emit_arg y = {KN_ARG_OUT, 0, 0, NULL, 0};
    kn_emit_arg part = p.splits > 1 ? (kn_emit_arg){KN_ARG_SCRATCH, 0, kn_gemv_scratch_bytes(sp.rows, &p) * (g->swiglu ? 2 : 1), NULL, 0} : a;
    /* the K split's counters: one per column block, zero between launches */
    kn_emit_arg cnt = p.splits > 1 ? (kn_emit_arg){KN_ARG_PERSIST, 0, (uint64_t)grid.x * sizeof(uint32_t), NULL, 0} : a;
    kn_emit_arg prm = {KN_ARG_PARAMS, 0, sizeof p, &p, 0};
    kn_emit_arg args[8] = {a, {KN_ARG_IN, 1, 0, NULL, 0}, bias, res, y, part, cnt, prm};
    KN_TRY(kn_emit_launch(e, kmain, grid, (kn_dim3){KN_GEMV_THREADS, 1, 1}, 0, args, 8));
    kn_emit_count_gemv(e);
    return KN_OK;
}
