/* CUDA emitters for convolutions and pooling: Conv, ConvTranspose,
 * MaxPool (with Indices), AveragePool, LpPool and the global pools, any
 * spatial rank up to 6. Geometry (output sizes, auto_pad) follows
 * runtime/cpu/k_linalg_conv.c and k_linalg_pool.c.
 *
 * Conv: a 1x1 convolution with unit strides, no padding and one group is a
 * plain GEMM per image (W [M, C] x X[n] [C, HW], batch stride 0 on W) and
 * goes to cuBLASLt. Every other convolution runs a direct kernel, one thread
 * per output element summing in double. The intended fast path is im2col
 * into scratch + one cuBLASLt GEMM per group (it reuses the tuned GEMM and
 * is simple to get exact; implicit GEMM later), but a KN_ARG_SCRATCH buffer
 * lives for one step only and kn_emit_arg has no byte offset, so the im2col
 * buffer cannot reach the GEMM step and a group's slice of X/W/Y cannot be
 * addressed: that path waits for node-wide scratch and argument offsets in
 * emit.h. ConvTranspose is likewise a direct kernel (the gather form of
 * GEMM + col2im, so no thread races on an output element). */
#include "codegen/cuda/emit.h"
#include "runtime/cpu/util.h"
#include "runtime/plan_format.h"

#include <math.h>
#include <string.h>

#define MAX_SP (KN_CU_MAX_RANK - 2)

static kn_status launch_src(kn_emit *e, kn_sb *src, const char *entry, int64_t n, const kn_emit_arg *args,
                            uint32_t n_args)
{
    uint32_t k;
    kn_status s = kn_emit_kernel(e, kn_sb_str(src), entry, &k);
    kn_sb_free(src);
    KN_TRY(s);
    return kn_emit_launch(e, k, kn_emit_grid(n), (kn_dim3){256, 1, 1}, 0, args, n_args);
}

static bool is_float(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16 || t == KN_F64; }

/* An ints attribute with one entry per spatial dimension, `def` where
 * absent. */
static kn_status sp_attr(kn_emit *e, const char *name, int32_t n, int64_t def, int64_t lo, int64_t *out)
{
    uint32_t cnt;
    const int64_t *v = kn_emit_attr_ints(e, name, &cnt);
    if (v && cnt != (uint32_t)n)
        return kn_emit_fail(e, KN_ERR_INVALID, "attribute %s has %u entries, expected %d", name, cnt, (int)n);
    for (int32_t i = 0; i < n; i++) {
        out[i] = v ? v[i] : def;
        if (out[i] < lo)
            return kn_emit_fail(e, KN_ERR_INVALID, "attribute %s[%d] must be >= %lld", name, (int)i, (long long)lo);
    }
    return KN_OK;
}

/* ---- convolutions ---- */

/* Geometry for the kernels: X [N, C, in...], W [M, C/group, k...] (Conv)
 * or [C, M/group, k...] (ConvTranspose), Y [N, M, out...]. */
typedef struct conv_params {
    int64_t total, nsp, c, m, cg, mg, in_sp, out_sp, k_sp;
    int64_t in[MAX_SP], k[MAX_SP], s[MAX_SP], d[MAX_SP], ph[MAX_SP], out[MAX_SP];
} conv_params;

typedef enum { AP_NOTSET, AP_SAME_UPPER, AP_SAME_LOWER, AP_VALID } auto_pad;

static kn_status read_auto_pad(kn_emit *e, auto_pad *ap)
{
    const char *s = kn_emit_attr_str(e, "auto_pad", "NOTSET");
    if (!strcmp(s, "NOTSET") || !*s)
        *ap = AP_NOTSET;
    else if (!strcmp(s, "SAME_UPPER"))
        *ap = AP_SAME_UPPER;
    else if (!strcmp(s, "SAME_LOWER"))
        *ap = AP_SAME_LOWER;
    else if (!strcmp(s, "VALID"))
        *ap = AP_VALID;
    else
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "auto_pad '%s'", s);
    return KN_OK;
}

/* Shared geometry; pads as given (auto_pad is resolved by the callers). */
static kn_status geom_common(kn_emit *e, bool transpose, conv_params *p, int64_t *pt, int64_t *group)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *w = kn_emit_in(e, 1), *y = kn_emit_out(e, 0);
    if (!x || !w || !y || x->rank < 3 || w->rank != x->rank || y->rank != x->rank)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "operand ranks");
    if (!is_float(x->dtype) || w->dtype != x->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    memset(p, 0, sizeof *p);
    int32_t nsp = x->rank - 2;
    p->nsp = nsp;
    p->c = x->dims[1];
    p->m = y->dims[1];
    *group = kn_emit_attr_int(e, "group", 1);
    if (*group < 1 || p->c % *group || p->m % *group)
        return kn_emit_fail(e, KN_ERR_INVALID, "group %lld does not divide the channels", (long long)*group);
    p->cg = p->c / *group;
    p->mg = p->m / *group;
    if ((!transpose && w->dims[1] != p->cg) || (transpose && w->dims[1] != p->mg))
        return kn_emit_fail(e, KN_ERR_INVALID, "W does not fit the channels");
    KN_TRY(sp_attr(e, "strides", nsp, 1, 1, p->s));
    KN_TRY(sp_attr(e, "dilations", nsp, 1, 1, p->d));
    uint32_t np;
    const int64_t *pads = kn_emit_attr_ints(e, "pads", &np);
    if (pads && np != 2u * (uint32_t)nsp)
        return kn_emit_fail(e, KN_ERR_INVALID, "pads has %u entries", np);
    p->in_sp = p->out_sp = p->k_sp = 1;
    for (int32_t i = 0; i < nsp; i++) {
        p->in[i] = x->dims[i + 2];
        p->k[i] = w->dims[i + 2];
        p->out[i] = y->dims[i + 2];
        p->ph[i] = pads ? pads[i] : 0;
        pt[i] = pads ? pads[i + nsp] : 0;
        p->in_sp *= p->in[i];
        p->out_sp *= p->out[i];
        p->k_sp *= p->k[i];
    }
    p->total = y->numel;
    return KN_OK;
}

/* The kernel source: Conv gathers x over the window of each output;
 * ConvTranspose gathers the inputs whose scattered taps land on it. */
static kn_status emit_conv_kernel(kn_emit *e, bool transpose, const conv_params *p, bool has_bias)
{
    const char *t = kn_cuda_type(kn_emit_in(e, 0)->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, nsp, c, m, cg, mg, in_sp, out_sp, k_sp;\n"
                 "  i64 in[6], k[6], s[6], d[6], ph[6], out[6]; };\n"
                 "extern \"C\" __global__ void %s(const %s *x, const %s *w, %s%s%s %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    i64 osp = i %% p.out_sp, m = (i / p.out_sp) %% p.m, n = i / (p.out_sp * p.m);\n"
                 "    i64 o[6], r = osp;\n"
                 "    for (int a = (int)p.nsp - 1; a >= 0; a--) { o[a] = r %% p.out[a]; r /= p.out[a]; }\n"
                 "    i64 g = m / p.mg;\n"
                 "    double acc = 0;\n"
                 "    for (i64 kp = 0; kp < p.k_sp; kp++) {\n"
                 "      i64 off = 0, rk = kp, st = 1;\n"
                 "      bool ok = true;\n"
                 "      for (int a = (int)p.nsp - 1; a >= 0; a--) {\n"
                 "        i64 kk = rk %% p.k[a];\n"
                 "        rk /= p.k[a];\n",
                 transpose ? "conv_transpose" : "conv", t, t, has_bias ? "const " : "", has_bias ? t : "",
                 has_bias ? " *bias," : "", t);
    if (!transpose)
        kn_sb_printf(&src, "        i64 pos = o[a] * p.s[a] - p.ph[a] + kk * p.d[a];\n");
    else
        kn_sb_printf(&src,
                     "        i64 q = o[a] + p.ph[a] - kk * p.d[a];\n"
                     "        if (q < 0 || q %% p.s[a] != 0) { ok = false; break; }\n"
                     "        i64 pos = q / p.s[a];\n");
    kn_sb_printf(&src,
                 "        if (pos < 0 || pos >= p.in[a]) { ok = false; break; }\n"
                 "        off += pos * st;\n"
                 "        st *= p.in[a];\n"
                 "      }\n"
                 "      if (!ok) continue;\n"
                 "      for (i64 ci = 0; ci < p.cg; ci++) {\n"
                 "        double xv = kn_tod(x[(n * p.c + g * p.cg + ci) * p.in_sp + off]);\n");
    if (!transpose)
        kn_sb_printf(&src, "        double wv = kn_tod(w[(m * p.cg + ci) * p.k_sp + kp]);\n");
    else
        kn_sb_printf(&src, "        double wv = kn_tod(w[((g * p.cg + ci) * p.mg + m %% p.mg) * p.k_sp + kp]);\n");
    kn_sb_printf(&src,
                 "        acc += xv * wv;\n"
                 "      }\n"
                 "    }\n"
                 "%s"
                 "    y[i] = kn_fromd<%s>(acc);\n"
                 "  }\n"
                 "}\n",
                 has_bias ? "    acc += kn_tod(bias[m]);\n" : "", t);
    kn_emit_arg args[5] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_IN, 2, 0, NULL},
                           {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof *p, p}};
    if (!has_bias)
        args[2] = args[3], args[3] = args[4];
    return launch_src(e, &src, transpose ? "conv_transpose" : "conv", p->total, args, has_bias ? 5 : 4);
}

/* Y[n, m, :] = B[m]: the first step of a GEMM convolution with a bias. */
typedef struct bias_params {
    int64_t total, sp, m;
} bias_params;

static kn_status emit_bias_fill(kn_emit *e, const bias_params *p)
{
    const char *t = kn_cuda_type(kn_emit_in(e, 0)->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, sp, m; };\n"
                 "extern \"C\" __global__ void bias_fill(const %s *b, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) y[i] = b[(i / p.sp) %% p.m];\n"
                 "}\n",
                 t, t);
    kn_emit_arg args[3] = {{KN_ARG_IN, 2, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof *p, p}};
    return launch_src(e, &src, "bias_fill", p->total, args, 3);
}

kn_status kn_emit_Conv(kn_emit *e)
{
    conv_params p;
    int64_t pt[MAX_SP], group;
    KN_TRY(geom_common(e, false, &p, pt, &group));
    const kn_emit_tensor *x = kn_emit_in(e, 0), *b = kn_emit_in(e, 2);
    if (b && (b->dtype != x->dtype || b->numel != p.m))
        return kn_emit_fail(e, KN_ERR_INVALID, "bias B does not fit");
    auto_pad ap;
    KN_TRY(read_auto_pad(e, &ap));
    for (int32_t i = 0; i < p.nsp; i++) {
        int64_t eff = (p.k[i] - 1) * p.d[i] + 1;
        if (ap == AP_SAME_UPPER || ap == AP_SAME_LOWER) {
            int64_t total = (p.out[i] - 1) * p.s[i] + eff - p.in[i];
            if (total < 0)
                total = 0;
            p.ph[i] = ap == AP_SAME_UPPER ? total / 2 : total - total / 2;
            pt[i] = total - p.ph[i];
        } else if (ap == AP_VALID) {
            p.ph[i] = pt[i] = 0;
        }
    }
    bool direct = p.k_sp == 1 && group == 1 && p.total > 0 && p.c > 0;
    for (int32_t i = 0; i < p.nsp; i++)
        if (p.s[i] != 1 || p.ph[i] || pt[i] || p.in[i] != p.out[i])
            direct = false;
    if (!direct)
        return emit_conv_kernel(e, false, &p, b != NULL);
    /* 1x1: per image Y[n] [M, HW] = W [M, C] X[n] [C, HW] (+ bias, written
     * first and accumulated with beta = 1) */
    kn_emit_gemm g;
    memset(&g, 0, sizeof g);
    g.a = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL};
    g.b = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL};
    g.d = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
    g.m = p.m, g.n = p.in_sp, g.k = p.c;
    g.lda = p.c, g.ldb = p.in_sp, g.ldc = p.in_sp, g.ldd = p.in_sp;
    g.batch = x->dims[0];
    g.stride_a = 0;
    g.stride_b = p.c * p.in_sp;
    g.stride_c = g.stride_d = p.m * p.in_sp;
    g.alpha = 1;
    g.dtype = x->dtype;
    if (b) {
        bias_params bp = {p.total, p.out_sp, p.m};
        KN_TRY(emit_bias_fill(e, &bp));
        g.c = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
        g.beta = 1;
    }
    return kn_emit_gemm_step(e, &g);
}

kn_status kn_emit_ConvTranspose(kn_emit *e)
{
    conv_params p;
    int64_t pt[MAX_SP], group;
    KN_TRY(geom_common(e, true, &p, pt, &group));
    const kn_emit_tensor *x = kn_emit_in(e, 0), *b = kn_emit_in(e, 2);
    if (b && (b->dtype != x->dtype || b->numel != p.m))
        return kn_emit_fail(e, KN_ERR_INVALID, "bias B does not fit");
    auto_pad ap;
    KN_TRY(read_auto_pad(e, &ap));
    int64_t opad[MAX_SP];
    KN_TRY(sp_attr(e, "output_padding", (int32_t)p.nsp, 0, 0, opad));
    uint32_t nos;
    const int64_t *os = kn_emit_attr_ints(e, "output_shape", &nos);
    if (os && nos != (uint32_t)p.nsp && nos != (uint32_t)p.nsp + 2)
        return kn_emit_fail(e, KN_ERR_INVALID, "output_shape has %u entries", nos);
    if (os && nos == (uint32_t)p.nsp + 2)
        os += 2;
    bool derive = os || ap == AP_SAME_UPPER || ap == AP_SAME_LOWER;
    for (int32_t i = 0; i < p.nsp; i++) {
        int64_t eff = (p.k[i] - 1) * p.d[i] + 1;
        int64_t full = p.s[i] * (p.in[i] - 1) + opad[i] + eff;
        if (ap == AP_VALID)
            p.ph[i] = pt[i] = 0;
        if (derive) {
            int64_t target = os ? os[i] : p.in[i] * p.s[i];
            int64_t total = full - target, half = total >= 0 ? total / 2 : -((1 - total) / 2);
            p.ph[i] = ap == AP_SAME_UPPER ? half : total - half;
        }
    }
    return emit_conv_kernel(e, true, &p, b != NULL);
}

/* ---- pooling ---- */

typedef struct pool_params {
    int64_t total, nsp, kind, count_pad, col_major, in_sp, out_sp, k_sp;
    double p, ninf, qnan; /* NVRTC has no INFINITY/NAN: the host passes them */
    int64_t in[MAX_SP], k[MAX_SP], s[MAX_SP], d[MAX_SP], ph[MAX_SP], pt[MAX_SP], out[MAX_SP];
} pool_params;

enum { POOL_MAX, POOL_AVG, POOL_LP };

static kn_status emit_pool(kn_emit *e, const pool_params *p, bool want_ind)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, nsp, kind, count_pad, col_major, in_sp, out_sp, k_sp; double p, ninf, qnan;\n"
                 "  i64 in[6], k[6], s[6], d[6], ph[6], pt[6], out[6]; };\n"
                 "extern \"C\" __global__ void pool(const %s *x, %s *y, %sP p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    i64 pl = i / p.out_sp, r = i %% p.out_sp, o[6];\n"
                 "    for (int a = (int)p.nsp - 1; a >= 0; a--) { o[a] = r %% p.out[a]; r /= p.out[a]; }\n"
                 "    const %s *xp = x + pl * p.in_sp;\n"
                 "    i64 cst[6];\n"
                 "    for (int a = 0; a < (int)p.nsp; a++) cst[a] = a ? cst[a - 1] * p.in[a - 1] : 1;\n"
                 "    double acc = p.kind == 0 ? p.ninf : 0.0;\n"
                 "    i64 best = -1, cnt = 0;\n"
                 "    for (i64 t = 0; t < p.k_sp; t++) {\n"
                 "      bool inside = true, in_padded = true;\n"
                 "      i64 off = 0, coff = 0, rk = t, st = 1;\n"
                 "      for (int a = (int)p.nsp - 1; a >= 0; a--) {\n"
                 "        i64 kk = rk %% p.k[a];\n"
                 "        rk /= p.k[a];\n"
                 "        i64 pos = o[a] * p.s[a] - p.ph[a] + kk * p.d[a];\n"
                 "        if (pos < 0 || pos >= p.in[a]) inside = false;\n"
                 "        if (pos >= p.in[a] + p.pt[a]) in_padded = false;\n"
                 "        off += pos * st;\n"
                 "        coff += pos * cst[a];\n"
                 "        st *= p.in[a];\n"
                 "      }\n"
                 "      if (inside) {\n"
                 "        double v = kn_tod(xp[off]);\n"
                 "        if (p.kind == 0) {\n"
                 "          if (v == v && (best < 0 || v > acc)) { acc = v; best = p.col_major ? coff : off; }\n"
                 "        } else if (p.kind == 1) {\n"
                 "          acc += v;\n"
                 "        } else {\n"
                 "          acc += p.p == 1 ? fabs(v) : p.p == 2 ? v * v : pow(fabs(v), p.p);\n"
                 "        }\n"
                 "        cnt++;\n"
                 "      } else if (p.count_pad && in_padded) {\n"
                 "        cnt++;\n"
                 "      }\n"
                 "    }\n"
                 "    if (p.kind == 1) acc = cnt ? acc / (double)cnt : 0.0;\n"
                 "    else if (p.kind == 2) acc = p.p == 1 ? acc : p.p == 2 ? sqrt(acc) : pow(acc, 1.0 / p.p);\n"
                 "    else if (best < 0) acc = cnt ? p.qnan : 0.0;\n"
                 "    y[i] = kn_fromd<%s>(acc);\n"
                 "%s"
                 "  }\n"
                 "}\n",
                 t, t, want_ind ? "long long *ind, " : "", t, t,
                 want_ind ? "    ind[i] = best < 0 ? -1 : pl * p.in_sp + best;\n" : "");
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_OUT, 1, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof *p, p}};
    if (!want_ind)
        args[2] = args[3];
    return launch_src(e, &src, "pool", p->total, args, want_ind ? 4 : 3);
}

static kn_status pool_op(kn_emit *e, int kind)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y || x->rank < 3 || y->rank != x->rank || !kn_cuda_type(x->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "input");
    if (!is_float(x->dtype) && !(kind == POOL_MAX && (x->dtype == KN_I8 || x->dtype == KN_U8)))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    pool_params p;
    memset(&p, 0, sizeof p);
    int32_t nsp = x->rank - 2;
    p.nsp = nsp;
    p.kind = kind;
    p.total = y->numel;
    KN_TRY(sp_attr(e, "kernel_shape", nsp, 1, 1, p.k));
    KN_TRY(sp_attr(e, "strides", nsp, 1, 1, p.s));
    KN_TRY(sp_attr(e, "dilations", nsp, 1, 1, p.d));
    uint32_t np;
    const int64_t *pads = kn_emit_attr_ints(e, "pads", &np);
    if (pads && np != 2u * (uint32_t)nsp)
        return kn_emit_fail(e, KN_ERR_INVALID, "pads has %u entries", np);
    const char *ap = kn_emit_attr_str(e, "auto_pad", "NOTSET");
    bool same_u = !strcmp(ap, "SAME_UPPER"), same_l = !strcmp(ap, "SAME_LOWER"), valid = !strcmp(ap, "VALID");
    if (!same_u && !same_l && !valid && strcmp(ap, "NOTSET") && *ap)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "auto_pad '%s'", ap);
    p.in_sp = p.out_sp = p.k_sp = 1;
    for (int32_t i = 0; i < nsp; i++) {
        p.in[i] = x->dims[i + 2];
        p.out[i] = y->dims[i + 2];
        p.ph[i] = pads && !valid ? pads[i] : 0;
        p.pt[i] = pads && !valid ? pads[i + nsp] : 0;
        if (same_u || same_l) {
            int64_t eff = (p.k[i] - 1) * p.d[i] + 1;
            int64_t total = (p.out[i] - 1) * p.s[i] + eff - p.in[i];
            if (total < 0)
                total = 0;
            p.ph[i] = same_u ? total / 2 : total - total / 2;
            p.pt[i] = total - p.ph[i];
        }
        p.in_sp *= p.in[i];
        p.out_sp *= p.out[i];
        p.k_sp *= p.k[i];
    }
    if (p.out_sp == 0)
        p.total = 0, p.out_sp = 1;
    p.count_pad = kn_emit_attr_int(e, "count_include_pad", 0) != 0;
    p.col_major = kn_emit_attr_int(e, "storage_order", 0) == 1;
    p.p = 2.0;
    p.ninf = -INFINITY;
    p.qnan = NAN;
    if (kind == POOL_LP) {
        const kn_attr *pa = kn_node_attr(kn_emit_node(e), "p");
        if (pa)
            p.p = pa->kind == KN_ATTR_FLOAT ? pa->u.f : (double)pa->u.i;
    }
    bool want_ind = kind == POOL_MAX && kn_emit_out(e, 1) != NULL;
    return emit_pool(e, &p, want_ind);
}

kn_status kn_emit_MaxPool(kn_emit *e) { return pool_op(e, POOL_MAX); }
kn_status kn_emit_AveragePool(kn_emit *e) { return pool_op(e, POOL_AVG); }
kn_status kn_emit_LpPool(kn_emit *e) { return pool_op(e, POOL_LP); }

/* Global pools: one thread per (n, c) plane. Max lets a NaN through, as
 * the CPU kernel. */
typedef struct gpool_params {
    int64_t total, sp, kind;
    double p, ninf, qnan;
} gpool_params;

static kn_status global_pool(kn_emit *e, int kind)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    if (!x || x->rank < 2 || !is_float(x->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "input dtype");
    int64_t nc = x->dims[0] * x->dims[1];
    gpool_params p = {nc, nc ? x->numel / nc : 0, kind, 2.0, -INFINITY, NAN};
    if (kind == POOL_LP) {
        const kn_attr *pa = kn_node_attr(kn_emit_node(e), "p");
        if (pa)
            p.p = pa->kind == KN_ATTR_FLOAT ? pa->u.f : (double)pa->u.i;
    }
    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, sp, kind; double p, ninf, qnan; };\n"
                 "extern \"C\" __global__ void global_pool(const %s *x, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    const %s *xp = x + i * p.sp;\n"
                 "    double acc = p.kind == 0 ? p.ninf : 0.0;\n"
                 "    for (i64 j = 0; j < p.sp; j++) {\n"
                 "      double v = kn_tod(xp[j]);\n"
                 "      if (p.kind == 0) acc = v > acc || v != v ? v : acc;\n"
                 "      else if (p.kind == 1) acc += v;\n"
                 "      else acc += p.p == 2 ? v * v : pow(fabs(v), p.p);\n"
                 "    }\n"
                 "    if (p.kind == 1) acc = p.sp ? acc / (double)p.sp : p.qnan;\n"
                 "    else if (p.kind == 2) acc = p.p == 2 ? sqrt(acc) : pow(acc, 1.0 / p.p);\n"
                 "    y[i] = kn_fromd<%s>(acc);\n"
                 "  }\n"
                 "}\n",
                 t, t, t, t);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return launch_src(e, &src, "global_pool", p.total, args, 3);
}

kn_status kn_emit_GlobalAveragePool(kn_emit *e) { return global_pool(e, POOL_AVG); }
kn_status kn_emit_GlobalMaxPool(kn_emit *e) { return global_pool(e, POOL_MAX); }
kn_status kn_emit_GlobalLpPool(kn_emit *e) { return global_pool(e, POOL_LP); }
