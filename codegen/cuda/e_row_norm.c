/* Block-per-row kernels for RMSNormalization, LayerNormalization,
 * kiln.SkipRMSNorm and kiln.SkipLayerNorm on target cuda: see
 * norm_kernels.h. */
#include "codegen/cuda/norm_kernels.h"

#include <stdio.h>
#include <string.h>

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

/* By value (8-byte fields). sn, bn: the modulus of the suffix index form
 * of scale and bias (see index_expr). */
typedef struct row_params {
    int64_t rows, cols, tr, sn, bn;
    double eps;
    int64_t tdims[8], sst[8], bst[8];
} row_params;

uint32_t kn_row_norm_threads(int64_t cols, uint32_t elem_size)
{
    uint32_t vw = elem_size && elem_size <= 16 ? 16 / elem_size : 0;
    int64_t t = vw && cols % vw == 0 ? cols / vw : (cols + 3) / 4;
    t = (t + 31) / 32 * 32;
    return (uint32_t)(t < 32 ? 32 : t > 1024 ? 1024 : t);
}

/* Strides of t broadcast (numpy) over the row dims tdims[0..tr). */
static bool trailing_strides(const kn_emit_tensor *t, const int64_t *tdims, int64_t tr, int64_t *st)
{
    if (t->rank > tr)
        return false;
    int64_t s = 1;
    for (int64_t d = tr - 1; d >= 0; d--) {
        int64_t j = d - (tr - t->rank);
        int64_t td = j >= 0 ? t->dims[j] : 1;
        if (td != 1 && td != tdims[d])
            return false;
        st[d] = td == 1 ? 0 : s;
        s *= td;
    }
    return true;
}

/* The element of a broadcast parameter (strides st, numel n) that element
 * k of a row reads, as a source expression: "0" for a scalar, "k" for one
 * of the row's shape, "k % p.<mod>" where it covers a suffix of the row
 * dims and broadcasts over the rest (a per-channel vector), else the
 * per-dim walk. */
static const char *index_expr(const row_params *p, const int64_t *st, int64_t n, const char *mod, const char *stn,
                              char *buf, size_t size)
{
    if (n == 1)
        return "0";
    bool in_suffix = true, suffix = true;
    for (int64_t d = p->tr - 1; d >= 0; d--) {
        if (p->tdims[d] == 1)
            continue;
        if (st[d] == 0)
            in_suffix = false;
        else if (!in_suffix)
            suffix = false;
    }
    if (suffix && n == p->cols)
        return "k";
    if (suffix)
        snprintf(buf, size, "k %% p.%s", mod);
    else
        snprintf(buf, size, "kn_rn_walk(k, p, p.%s)", stn);
    return buf;
}

/* After the include and the typedefs of T (the tensors' dtype) and A
 * (the accumulator's). */
static const char KERNEL_HEAD[] =
    "struct P { i64 rows, cols, tr, sn, bn; double eps; i64 tdims[8], sst[8], bst[8]; };\n"
    "__device__ __forceinline__ i64 kn_rn_walk(i64 k, const P &p, const i64 *st) {\n"
    "  i64 o = 0;\n"
    "  for (int d = (int)p.tr - 1; d >= 0; d--) { o += (k % p.tdims[d]) * st[d]; k /= p.tdims[d]; }\n"
    "  return o;\n"
    "}\n"
    "/* VW elements in 16 bytes, loaded or stored at once */\n"
    "#define VW (16 / (int)sizeof(T))\n"
    "struct alignas(16) kn_rn_vec { T e[VW]; };\n"
    "__device__ __forceinline__ bool kn_rn_al(const void *q) { return ((unsigned long long)q & 15u) == 0; }\n"
    "/* the block's total of v, in every thread (blockDim.x a multiple of 32;\n"
    " * sh: 32 values of shared memory, free again when this returns) */\n"
    "__device__ __forceinline__ A kn_rn_sum(A v, A *sh) {\n"
    "  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n"
    "  const unsigned lane = threadIdx.x & 31u, w = threadIdx.x >> 5, nw = blockDim.x >> 5;\n"
    "  __syncthreads();\n"
    "  if (lane == 0) sh[w] = v;\n"
    "  __syncthreads();\n"
    "  v = lane < nw ? sh[lane] : (A)0;\n"
    "  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);\n"
    "  return v;\n"
    "}\n";

/* One pass over the row: `body` runs for each element with v (the
 * element as the statistics see it: x, or x + skip rounded to T as the
 * unfused Add) and its index k, and defines `out` when the pass stores
 * to `to` (element k of the row). The vector form takes VW elements per
 * thread and step, the scalar one a single element. */
static void row_loop(kn_sb *src, bool skip, const char *body, const char *to)
{
    kn_sb_printf(src,
                 "    if (vec) {\n"
                 "      for (i64 c = threadIdx.x; c < p.cols / VW; c += blockDim.x) {\n"
                 "        const kn_rn_vec xv = *reinterpret_cast<const kn_rn_vec *>(x + base + c * VW);\n");
    if (skip)
        kn_sb_printf(src, "        const kn_rn_vec sv = *reinterpret_cast<const kn_rn_vec *>(sk + base + c * VW);\n");
    if (to)
        kn_sb_printf(src, "        kn_rn_vec ov;\n");
    kn_sb_printf(src,
                 "#pragma unroll\n"
                 "        for (int j = 0; j < VW; j++) {\n"
                 "          const i64 k = c * VW + j;\n"
                 "          const T v = %s;\n"
                 "          %s\n"
                 "%s"
                 "        }\n",
                 skip ? "kn_fromd<T>(kn_tod(xv.e[j]) + kn_tod(sv.e[j]))" : "xv.e[j]", body,
                 to ? "          ov.e[j] = out;\n" : "");
    if (to)
        kn_sb_printf(src, "        *reinterpret_cast<kn_rn_vec *>(%s + base + c * VW) = ov;\n", to);
    kn_sb_printf(src,
                 "      }\n"
                 "    } else {\n"
                 "      for (i64 k = threadIdx.x; k < p.cols; k += blockDim.x) {\n"
                 "        const T v = %s;\n"
                 "        %s\n",
                 skip ? "kn_fromd<T>(kn_tod(x[base + k]) + kn_tod(sk[base + k]))" : "x[base + k]", body);
    if (to)
        kn_sb_printf(src, "        %s[base + k] = out;\n", to);
    kn_sb_printf(src, "      }\n    }\n");
}

kn_status kn_emit_row_norm(kn_emit *e, kn_row_norm_kind kind)
{
    static const char *const names[] = {"RMSNormRow", "LayerNormRow", "SkipRMSNormRow", "SkipLayerNormRow"};
    bool layer = kind == KN_ROW_LAYER || kind == KN_ROW_SKIP_LAYER;
    bool has_skip = kind == KN_ROW_SKIP_RMS || kind == KN_ROW_SKIP_LAYER;
    uint32_t si = has_skip ? 2 : 1; /* Scale's input index; B follows it */
    const kn_emit_tensor *x = kn_emit_in(e, 0), *skip = has_skip ? kn_emit_in(e, 1) : NULL;
    const kn_emit_tensor *scale = kn_emit_in(e, si), *bias = layer ? kn_emit_in(e, si + 1) : NULL;
    if (!x || !scale || (has_skip && !skip))
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input");
    /* output 1: LayerNormalization's Mean, or the skip forms' sum */
    const kn_emit_tensor *o1 = kind != KN_ROW_RMS ? kn_emit_out(e, 1) : NULL;
    const kn_emit_tensor *o2 = kind == KN_ROW_LAYER ? kn_emit_out(e, 2) : NULL;
    const kn_emit_tensor *all[6] = {x, skip, scale, bias, o1, o2};
    bool dbl = false;
    for (int i = 0; i < 6; i++) {
        if (all[i] && !is_float(all[i]->dtype))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(all[i]->dtype));
        dbl = dbl || (all[i] && all[i]->dtype == KN_F64);
    }
    int64_t axis = kn_emit_attr_int(e, "axis", -1);
    if (axis < 0)
        axis += x->rank;
    if (axis < 0 || axis >= x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range for rank %d", (int)x->rank);
    row_params p;
    memset(&p, 0, sizeof p);
    p.rows = p.cols = 1;
    p.tr = x->rank - axis;
    if (p.tr > 8)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "more than 8 normalised dims");
    p.eps = kn_emit_attr_float(e, "epsilon", 1e-5f);
    for (int32_t d = 0; d < x->rank; d++) {
        if (d < axis)
            p.rows *= x->dims[d];
        else
            p.cols *= x->dims[d], p.tdims[d - axis] = x->dims[d];
    }
    if (!trailing_strides(scale, p.tdims, p.tr, p.sst) || (bias && !trailing_strides(bias, p.tdims, p.tr, p.bst)))
        return kn_emit_fail(e, KN_ERR_INVALID, "scale and bias must broadcast to the normalised shape");
    if (skip && (skip->rank != x->rank || skip->dtype != x->dtype ||
                 memcmp(skip->dims, x->dims, (size_t)x->rank * sizeof *x->dims) != 0))
        return kn_emit_fail(e, KN_ERR_INVALID, "skip must have X's shape and dtype");
    if (has_skip && o1 && o1->dtype != x->dtype)
        return kn_emit_fail(e, KN_ERR_INVALID, "sum must have X's dtype");
    p.sn = scale->numel;
    p.bn = bias ? bias->numel : 1;
    char sbuf[64], bbuf[64];
    const char *so = index_expr(&p, p.sst, p.sn, "sn", "sst", sbuf, sizeof sbuf);
    const char *bo = bias ? index_expr(&p, p.bst, p.bn, "bn", "bst", bbuf, sizeof bbuf) : NULL;

    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\ntypedef %s T;\ntypedef %s A;\n#define LD(v) ((A)%s(v))\n", t,
                 dbl ? "double" : "float",
                 dbl ? "kn_tod" : "kn_tof");
    kn_sb_printf(&src, "%s", KERNEL_HEAD);
    kn_sb_printf(&src, "extern \"C\" __global__ void __launch_bounds__(1024) kn_%s(const %s *x, ", names[kind], t);
    if (skip)
        kn_sb_printf(&src, "const %s *sk, ", t);
    kn_sb_printf(&src, "const %s *sc, ", kn_cuda_type(scale->dtype));
    if (bias)
        kn_sb_printf(&src, "const %s *bi, ", kn_cuda_type(bias->dtype));
    kn_sb_printf(&src, "%s *y, ", t);
    if (o1)
        kn_sb_printf(&src, "%s *o1, ", kn_cuda_type(o1->dtype));
    if (o2)
        kn_sb_printf(&src, "%s *o2, ", kn_cuda_type(o2->dtype));
    kn_sb_printf(&src, "P p) {\n  __shared__ A sh[32];\n");
    /* 16-byte loads and stores when every row starts 16-byte aligned (the
     * same for all rows and threads: no divergence) */
    kn_sb_printf(&src, "  const bool vec = p.cols %% VW == 0 && kn_rn_al(x) && kn_rn_al(y)%s%s;\n",
                 skip ? " && kn_rn_al(sk)" : "", skip && o1 ? " && kn_rn_al(o1)" : "");
    kn_sb_printf(&src,
                 "  for (i64 r = blockIdx.x; r < p.rows; r += gridDim.x) {\n"
                 "    const i64 base = r * p.cols;\n");
    const char *sum_to = skip && o1 ? "o1" : NULL;
    if (layer) {
        kn_sb_printf(&src, "    A s = 0;\n");
        row_loop(&src, skip, sum_to ? "const T out = v; s += LD(v);" : "s += LD(v);", sum_to);
        kn_sb_printf(&src,
                     "    s = kn_rn_sum(s, sh);\n"
                     "    const A m = p.cols ? s / (A)p.cols : (A)0;\n"
                     "    A q = 0;\n");
        row_loop(&src, skip, "const A d = LD(v) - m; q += d * d;", NULL);
    } else {
        kn_sb_printf(&src, "    const A m = 0;\n    A q = 0;\n");
        row_loop(&src, skip,
                 sum_to ? "const T out = v; const A f = LD(v); q += f * f;" : "const A f = LD(v); q += f * f;", sum_to);
    }
    kn_sb_printf(&src,
                 "    q = kn_rn_sum(q, sh);\n"
                 "    const A inv = (A)1 / sqrt((p.cols ? q / (A)p.cols : (A)0) + (A)p.eps);\n");
    if (kind == KN_ROW_LAYER && (o1 || o2)) {
        kn_sb_printf(&src, "    if (threadIdx.x == 0) {\n");
        if (o1)
            kn_sb_printf(&src, "      o1[r] = kn_fromd<%s>((double)m);\n", kn_cuda_type(o1->dtype));
        if (o2)
            kn_sb_printf(&src, "      o2[r] = kn_fromd<%s>((double)inv);\n", kn_cuda_type(o2->dtype));
        kn_sb_printf(&src, "    }\n");
    }
    char body[256];
    snprintf(body, sizeof body, "const T out = kn_fromd<T>((double)((LD(v) - m) * inv * LD(sc[%s])%s%s%s));", so,
             bias ? " + LD(bi[" : "", bias ? bo : "", bias ? "])" : "");
    row_loop(&src, skip, body, "y");
    kn_sb_printf(&src, "  }\n}\n");

    char entry[32];
    snprintf(entry, sizeof entry, "kn_%s", names[kind]);
    const char *s = kn_sb_str(&src);
    if (!s) {
        kn_sb_free(&src);
        return KN_ERR_NOMEM;
    }
    uint32_t kid;
    kn_status st = kn_emit_kernel(e, s, entry, &kid);
    kn_sb_free(&src);
    KN_TRY(st);
    kn_emit_arg args[8];
    uint32_t n = 0;
    args[n++] = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL, 0};
    if (skip)
        args[n++] = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL, 0};
    args[n++] = (kn_emit_arg){KN_ARG_IN, si, 0, NULL, 0};
    if (bias)
        args[n++] = (kn_emit_arg){KN_ARG_IN, si + 1, 0, NULL, 0};
    args[n++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0};
    if (o1)
        args[n++] = (kn_emit_arg){KN_ARG_OUT, 1, 0, NULL, 0};
    if (o2)
        args[n++] = (kn_emit_arg){KN_ARG_OUT, 2, 0, NULL, 0};
    args[n++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof p, &p, 0};
    int64_t blocks = p.rows < 1 ? 1 : p.rows > 65535 * 16 ? 65535 * 16 : p.rows;
    kn_dim3 block = {kn_row_norm_threads(p.cols, kn_dtype_bits(x->dtype) / 8), 1, 1};
    return kn_emit_launch(e, kid, (kn_dim3){(uint32_t)blocks, 1, 1}, block, 0, args, n);
}
