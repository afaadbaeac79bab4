/* CUDA emitters for quantized products: com.microsoft MatMulNBits (the
 * W4A16 weight-only linear layer, also kiln's own weight-only op),
 * QLinearMatMul, MatMulInteger, com.microsoft MatMulIntegerToFloat and
 * QLinearConv. Semantics follow the CPU
 * reference kernels (runtime/cpu/k_quant.c, k_linalg.c, k_linalg_conv.c).
 *
 * MatMulNBits: the kernels of quant_kernels.h (e_nbits_kernels.c,
 * e_nbits_tc.c), chosen per node at compile time from the row count and
 * dtypes: a warp-per-column GEMV for fewer than 16 rows (decode), mma.sync
 * tensor cores for float16/bfloat16 A with 16 rows or more (prefill), and
 * the one-thread-per-output kernel otherwise.
 *
 * QLinearMatMul / MatMulInteger / QLinearConv: one thread per output
 * element summing (a - a_zp)(b - b_zp) exactly in 64-bit integers (the
 * 8-bit products make INT32 accumulation exact up to K < 2^17; i64 has no
 * limit that matters), then requantizing with the float multiplier
 * a_scale*b_scale/y_scale computed in float as the reference does, rounded
 * half to even and saturated.
 *
 * QLinearMatMul / MatMulInteger / MatMulIntegerToFloat with int8 A and B,
 * zero points absent or constant zero (kiln's W8A8 layers), k and n
 * multiples of 4 and k <= KN_CU_GEMM_I8_MAX_K go through cuBLASLt
 * instead: a kernel writes B transposed ([N, K], the "TN" form cuBLASLt's
 * IMMA kernels need with the default order) to scratch, an int8 GEMM step
 * sums exactly into int32 (the node's output for MatMulInteger, else
 * scratch), and an epilogue kernel applies the same scale / bias /
 * requantization arithmetic as the one-thread-per-output kernel. */
#include "codegen/cuda/emit.h"
#include "codegen/cuda/quant_kernels.h"
#include "runtime/cpu/util.h"
#include "runtime/plan_format.h"

#include <stdlib.h>
#include <string.h>

static bool is_q8(kn_dtype t) { return t == KN_I8 || t == KN_U8; }
static bool is_half_float(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16; }

/* ---- MatMulNBits ---- */

kn_status kn_emit_MS_MatMulNBits(kn_emit *e)
{
    const kn_emit_tensor *a = kn_emit_in(e, 0), *b = kn_emit_in(e, 1), *sc = kn_emit_in(e, 2);
    const kn_emit_tensor *zp = kn_emit_in(e, 3), *gidx = kn_emit_in(e, 4), *bias = kn_emit_in(e, 5);
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    int64_t K = kn_emit_attr_int(e, "K", -1), N = kn_emit_attr_int(e, "N", -1);
    int64_t bits = kn_emit_attr_int(e, "bits", 4), bs = kn_emit_attr_int(e, "block_size", -1);
    if (!a || !b || !sc || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "MatMulNBits needs A, B and scales");
    if (gidx)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "g_idx");
    if (bits != 2 && bits != 4 && bits != 8)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "bits=%lld", (long long)bits);
    if (K <= 0 || N <= 0 || bs <= 0 || (bs * bits) % 8 || a->rank < 1 || a->dims[a->rank - 1] != K)
        return kn_emit_fail(e, KN_ERR_INVALID, "K, N, block_size or A's shape");
    if (!is_half_float(a->dtype) || !is_half_float(sc->dtype) || (bias && !is_half_float(bias->dtype)) ||
        y->dtype != a->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(a->dtype));
    kn_nbits_params p = {y->numel, N, K, (K + bs - 1) / bs, bs * bits / 8, bs, 0, a->numel / K};
    p.zrow = (p.nblk * bits + 7) / 8;
    bool zp_packed = zp && zp->dtype == KN_U8;
    if (b->dtype != KN_U8 || b->numel != N * p.nblk * p.blob || sc->numel != N * p.nblk ||
        (zp && zp_packed && zp->numel != N * p.zrow) ||
        (zp && !zp_packed && (!is_half_float(zp->dtype) || zp->numel != N * p.nblk)) || (bias && bias->numel != N))
        return kn_emit_fail(e, KN_ERR_INVALID, "B, scales, zero_points or bias shape");
    kn_nbits_spec sp = {a->dtype, sc->dtype, zp ? zp->dtype : KN_UNDEFINED, bias ? bias->dtype : KN_UNDEFINED,
                        (int)bits, p.blob % 4 == 0};
    /* the kernel for this shape, decided here once (quant_kernels.h) */
    kn_nbits_kind kind = kn_nbits_choose(&sp, &p);
    char err[256];
    char *src = kind == KN_NBITS_TC     ? kn_nbits_tc_source(&sp, err, sizeof err)
                : kind == KN_NBITS_GEMV ? kn_nbits_gemv_source(&sp, err, sizeof err)
                                        : kn_nbits_simple_source(&sp, err, sizeof err);
    if (!src)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s", err);
    static const char *entries[] = {KN_NBITS_SIMPLE_ENTRY, KN_NBITS_GEMV_ENTRY, KN_NBITS_TC_ENTRY};
    uint32_t k;
    kn_status s = kn_emit_kernel(e, src, entries[kind], &k);
    free(src);
    KN_TRY(s);
    kn_emit_arg args[7];
    uint32_t na = 0;
    for (uint32_t i = 0; i < 3; i++)
        args[na++] = (kn_emit_arg){KN_ARG_IN, i, 0, NULL, 0};
    if (zp)
        args[na++] = (kn_emit_arg){KN_ARG_IN, 3, 0, NULL, 0};
    if (bias)
        args[na++] = (kn_emit_arg){KN_ARG_IN, 5, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof p, &p, 0};
    return kn_emit_launch(e, k, kn_nbits_grid(kind, &p), (kn_dim3){kn_nbits_threads(kind), 1, 1}, 0, args, na);
}

/* ---- integer matmuls ---- */

/* A [.., M, K] (any leading dims, rows = numel / K) times B [K, N], or B
 * [.., K, N] with A's batch dims. Zero points and scales: stride 0 (scalar) or 1 (per row of A / column of B). */
typedef struct qmm_params {
    int64_t total, m, n, k;
    int64_t za_s, zb_s, sa_s, sb_s;
    int64_t b_batched; /* B [batch.., K, N] with A's batch dims, else B [K, N] */
} qmm_params;

/* A scalar or per-`per` parameter: its stride, or -1 when it fits neither. */
static int64_t param_stride(const kn_emit_tensor *t, int64_t per)
{
    return !t || t->numel == 1 ? 0 : t->numel == per ? 1 : -1;
}

/* Input positions per op: A, B, a_zp, b_zp, a_scale, b_scale, y_scale,
 * y_zp, bias (-1: none). mode 0: MatMulInteger (int32 out); 1:
 * QLinearMatMul (requantized 8-bit out); 2: com.microsoft
 * MatMulIntegerToFloat (float out = acc * a_scale * b_scale + bias). */
static const int qmm_in[3][9] = {
    {0, 1, 2, 3, -1, -1, -1, -1, -1},
    {0, 3, 2, 5, 1, 4, 6, 7, -1},
    {0, 1, 4, 5, 2, 3, -1, -1, 6},
};

static const kn_emit_tensor *qmm_arg(kn_emit *e, int mode, int which)
{
    int i = qmm_in[mode][which];
    return i < 0 ? NULL : kn_emit_in(e, (uint32_t)i);
}

/* The end of a qmatmul loop body: y[i] from the exact sum `acc` (i64),
 * `row` and `col` — the arithmetic of the CPU kernels (int32 as is; float
 * acc·(a_scale·b_scale) in double plus the bias; 8-bit: the float
 * multiplier a_scale·b_scale/y_scale, rint (half to even) in double,
 * saturated). */
static void qmm_finish(kn_sb *src, int mode, bool bias, bool zy, kn_dtype yt)
{
    if (!mode) {
        kn_sb_printf(src, "    y[i] = (int)acc;\n");
    } else if (mode == 2) {
        kn_sb_printf(src,
                     "    float mul = sa[0] * sb[col * p.sb_s];\n"
                     "    double v = (double)acc * (double)mul%s;\n"
                     "    y[i] = (float)v;\n",
                     bias ? " + (double)bias[col]" : "");
    } else {
        const char *lo = yt == KN_I8 ? "-128.0" : "0.0", *hi = yt == KN_I8 ? "127.0" : "255.0";
        kn_sb_printf(src,
                     "    float mul = sa[row * p.sa_s] * sb[col * p.sb_s] / sy[0];\n"
                     "    double v = rint((double)acc * (double)mul + %s);\n"
                     "    v = v < %s ? %s : v > %s ? %s : v;\n"
                     "    y[i] = (%s)v;\n",
                     zy ? "(double)zy[0]" : "0.0", lo, lo, hi, hi, kn_cuda_type(yt));
    }
    kn_sb_printf(src, "  }\n}\n");
}

/* The scale / zero point / bias arguments of either kernel, in the
 * order the sources declare them; returns how many. */
static uint32_t qmm_scale_args(int mode, bool bias, bool zy, kn_emit_arg *args)
{
    uint32_t na = 0;
    if (mode == 1) {
        args[na++] = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL, 0};
        args[na++] = (kn_emit_arg){KN_ARG_IN, 4, 0, NULL, 0};
        args[na++] = (kn_emit_arg){KN_ARG_IN, 6, 0, NULL, 0};
        if (zy)
            args[na++] = (kn_emit_arg){KN_ARG_IN, 7, 0, NULL, 0};
    } else if (mode == 2) {
        args[na++] = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL, 0};
        args[na++] = (kn_emit_arg){KN_ARG_IN, 3, 0, NULL, 0};
        if (bias)
            args[na++] = (kn_emit_arg){KN_ARG_IN, 6, 0, NULL, 0};
    }
    return na;
}

/* The scale parameters' declarations of either kernel (after a, b and
 * the zero points). */
static void qmm_scale_decls(kn_sb *src, int mode, bool bias, bool zy, const char *ty)
{
    if (mode == 1)
        kn_sb_printf(src, "const float *sa, const float *sb, const float *sy, ");
    if (mode == 1 && zy)
        kn_sb_printf(src, "const %s *zy, ", ty);
    if (mode == 2)
        kn_sb_printf(src, "const float *sa, const float *sb, %s", bias ? "const float *bias, " : "");
}

/* A zero point cuBLASLt can ignore: absent, or a constant of zeros. */
static bool zero_zp(const kn_emit_tensor *z)
{
    if (!z)
        return true;
    if (!z->host_data)
        return false;
    for (size_t i = 0; i < z->nbytes; i++)
        if (((const uint8_t *)z->host_data)[i])
            return false;
    return true;
}

/* The cuBLASLt path (file header): B transposed into scratch 0, the int8
 * GEMM into y (MatMulInteger) or scratch 1, then the epilogue kernel. */
static kn_status emit_qmm_lt(kn_emit *e, int mode, const qmm_params *pp, bool bias, bool zy, kn_dtype yt)
{
    qmm_params p = *pp;
    uint32_t ib = (uint32_t)qmm_in[mode][1];
    int64_t rows = p.total / p.n, nb = p.b_batched ? rows / p.m : 1;
    size_t bt_bytes = (size_t)(nb * p.n * p.k);
    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\n"
                       "struct T { i64 total, n, k; };\n"
                       "extern \"C\" __global__ void qmatmul_bt(const signed char *b, signed char *bt, T p) {\n"
                       "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                       "    i64 q = i %% p.k, j = (i / p.k) %% p.n, m = i / (p.k * p.n);\n"
                       "    bt[i] = b[(m * p.k + q) * p.n + j];\n"
                       "  }\n}\n");
    struct {
        int64_t total, n, k;
    } tp = {(int64_t)bt_bytes, p.n, p.k};
    kn_emit_arg targs[3] = {{KN_ARG_IN, ib, 0, NULL, 0}, {KN_ARG_SCRATCH, 0, bt_bytes, NULL, 0},
                            {KN_ARG_PARAMS, 0, sizeof tp, &tp, 0}};
    KN_TRY(kn_emit_launch_source(e, &src, "qmatmul_bt", targs, 3, tp.total));
    kn_emit_arg acc = mode ? (kn_emit_arg){KN_ARG_SCRATCH, 1, (size_t)p.total * 4, NULL, 0}
                           : (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0};
    kn_emit_gemm g;
    memset(&g, 0, sizeof g);
    g.a = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL, 0};
    g.b = (kn_emit_arg){KN_ARG_SCRATCH, 0, bt_bytes, NULL, 0};
    g.d = acc;
    g.m = p.b_batched ? p.m : rows, g.n = p.n, g.k = p.k;
    g.trans_b = true;
    g.lda = p.k, g.ldb = p.k, g.ldd = p.n;
    g.batch = nb;
    g.stride_a = p.m * p.k, g.stride_b = p.n * p.k, g.stride_d = p.m * p.n;
    if (nb == 1)
        g.stride_a = g.stride_b = g.stride_d = 0;
    g.alpha = 1.0f;
    g.dtype = KN_I8;
    KN_TRY(kn_emit_gemm_step(e, &g));
    if (!mode)
        return KN_OK;
    /* the epilogue: y[i] from acc[i] */
    src = (kn_sb){0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, m, n, k, za_s, zb_s, sa_s, sb_s, b_batched; };\n"
                 "extern \"C\" __global__ void qmatmul_epilogue(const int *acc32, ");
    qmm_scale_decls(&src, mode, bias, zy, kn_cuda_type(yt));
    kn_sb_printf(&src,
                 "%s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    i64 col = i %% p.n, row = (i / p.n) %% p.m, acc = acc32[i];\n"
                 "    (void)row;\n",
                 kn_cuda_type(yt));
    qmm_finish(&src, mode, bias, zy, yt);
    kn_emit_arg args[8];
    uint32_t na = 0;
    args[na++] = acc;
    na += qmm_scale_args(mode, bias, zy, args + na);
    args[na++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof p, &p, 0};
    return kn_emit_launch_source(e, &src, "qmatmul_epilogue", args, na, p.total);
}

static kn_status emit_qmm(kn_emit *e, int mode)
{
    uint32_t ia = 0, ib = (uint32_t)qmm_in[mode][1], iza = (uint32_t)qmm_in[mode][2], izb = (uint32_t)qmm_in[mode][3];
    const kn_emit_tensor *a = kn_emit_in(e, ia), *b = kn_emit_in(e, ib), *y = kn_emit_out(e, 0);
    const kn_emit_tensor *za = kn_emit_in(e, iza), *zb = kn_emit_in(e, izb);
    const kn_emit_tensor *sa = qmm_arg(e, mode, 4), *sb = qmm_arg(e, mode, 5);
    const kn_emit_tensor *sy = qmm_arg(e, mode, 6), *zy = qmm_arg(e, mode, 7), *bias = qmm_arg(e, mode, 8);
    if (!a || !b || !y || a->rank < 2 || b->rank < 2 || !is_q8(a->dtype) || !is_q8(b->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "operands (8-bit, rank >= 2)");
    qmm_params p;
    memset(&p, 0, sizeof p);
    p.k = a->dims[a->rank - 1];
    p.m = a->dims[a->rank - 2];
    p.n = b->dims[b->rank - 1];
    p.total = y->numel;
    if (b->dims[b->rank - 2] != p.k)
        return kn_emit_fail(e, KN_ERR_INVALID, "inner dimensions differ");
    if (b->rank > 2) { /* batched B: the same batch dims as A (no broadcast) */
        if (b->rank != a->rank || memcmp(a->dims, b->dims, (size_t)(a->rank - 2) * sizeof *a->dims) != 0)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "B's batch dims differ from A's (broadcast)");
        p.b_batched = 1;
    }
    p.za_s = param_stride(za, p.m);
    p.zb_s = param_stride(zb, p.n);
    if (p.za_s < 0 || p.zb_s < 0 || (za && za->dtype != a->dtype) || (zb && zb->dtype != b->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "zero point shapes or types");
    kn_dtype yt = KN_I32;
    if (mode == 2) {
        if (!sa || !sb || sa->dtype != KN_F32 || sb->dtype != KN_F32 || sa->numel != 1 || (za && za->numel != 1) ||
            (bias && (bias->dtype != KN_F32 || bias->numel != p.n)))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "scales and bias (float32; a_scale, a_zero_point scalars)");
        p.sb_s = param_stride(sb, p.n);
        if (p.sb_s < 0)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "b_scale shape");
        yt = KN_F32;
    } else if (mode) {
        if (!sa || !sb || !sy || sa->dtype != KN_F32 || sb->dtype != KN_F32 || sy->dtype != KN_F32 || sy->numel != 1 ||
            (zy && zy->numel != 1))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "scales (float32; y_scale, y_zero_point scalars)");
        p.sa_s = param_stride(sa, p.m);
        p.sb_s = param_stride(sb, p.n);
        yt = zy ? zy->dtype : a->dtype;
        if (p.sa_s < 0 || p.sb_s < 0 || !is_q8(yt))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "scale shapes or output type");
    }
    if (y->dtype != yt)
        return kn_emit_fail(e, KN_ERR_INVALID, "output type");
    if (a->dtype == KN_I8 && b->dtype == KN_I8 && zero_zp(za) && zero_zp(zb) && p.total > 0 && p.k > 0 &&
        p.k % 4 == 0 && p.n % 4 == 0 && p.k <= KN_CU_GEMM_I8_MAX_K && (p.total / p.n) / p.m <= INT32_MAX)
        return emit_qmm_lt(e, mode, &p, bias != NULL, zy != NULL, yt);
    const char *ta = kn_cuda_type(a->dtype), *tb = kn_cuda_type(b->dtype), *ty = kn_cuda_type(yt);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, m, n, k, za_s, zb_s, sa_s, sb_s, b_batched; };\n"
                 "extern \"C\" __global__ void qmatmul(const %s *a, const %s *b, ",
                 ta, tb);
    if (za)
        kn_sb_printf(&src, "const %s *za, ", ta);
    if (zb)
        kn_sb_printf(&src, "const %s *zb, ", tb);
    qmm_scale_decls(&src, mode, bias != NULL, zy != NULL, ty);
    kn_sb_printf(&src,
                 "%s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    i64 col = i %% p.n, r = i / p.n, row = r %% p.m;\n"
                 "    const %s *ar = a + r * p.k;\n"
                 "    const %s *bm = b + (p.b_batched ? (r / p.m) * p.k * p.n : 0);\n"
                 "    i64 az = %s, bz = %s, acc = 0;\n"
                 "    for (i64 q = 0; q < p.k; q++) acc += ((i64)ar[q] - az) * ((i64)bm[q * p.n + col] - bz);\n",
                 ty, ta, tb, za ? "(i64)za[row * p.za_s]" : "0", zb ? "(i64)zb[col * p.zb_s]" : "0");
    qmm_finish(&src, mode, bias != NULL, zy != NULL, yt);
    kn_emit_arg args[10];
    uint32_t na = 0;
    args[na++] = (kn_emit_arg){KN_ARG_IN, ia, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_IN, ib, 0, NULL, 0};
    if (za)
        args[na++] = (kn_emit_arg){KN_ARG_IN, iza, 0, NULL, 0};
    if (zb)
        args[na++] = (kn_emit_arg){KN_ARG_IN, izb, 0, NULL, 0};
    na += qmm_scale_args(mode, bias != NULL, zy != NULL, args + na);
    args[na++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof p, &p, 0};
    return kn_emit_launch_source(e, &src, "qmatmul", args, na, p.total);
}

kn_status kn_emit_MatMulInteger(kn_emit *e) { return emit_qmm(e, 0); }
kn_status kn_emit_QLinearMatMul(kn_emit *e) { return emit_qmm(e, 1); }
kn_status kn_emit_MS_MatMulIntegerToFloat(kn_emit *e) { return emit_qmm(e, 2); }

/* ---- QLinearConv ---- */

#define QC_SP (KN_CU_MAX_RANK - 2)

/* X [N, C, in...], W [M, C/group, k...], Y [N, M, out...]; ph: leading
 * pads (the trailing ones only shape the output, which is given). */
typedef struct qconv_params {
    int64_t total, nsp, c, m, cg, mg, in_sp, out_sp, k_sp, ws_s, wz_s;
    int64_t in[QC_SP], k[QC_SP], s[QC_SP], d[QC_SP], ph[QC_SP], out[QC_SP];
} qconv_params;

/* An ints attribute with one entry per spatial dimension (def if absent). */
static bool sp_ints(kn_emit *e, const char *name, int64_t nsp, int64_t def, int64_t *out)
{
    uint32_t cnt;
    const int64_t *v = kn_emit_attr_ints(e, name, &cnt);
    if (v && cnt != (uint32_t)nsp)
        return false;
    for (int64_t i = 0; i < nsp; i++) {
        out[i] = v ? v[i] : def;
        if (out[i] < 1)
            return false;
    }
    return true;
}

kn_status kn_emit_QLinearConv(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *xs = kn_emit_in(e, 1), *xz = kn_emit_in(e, 2);
    const kn_emit_tensor *w = kn_emit_in(e, 3), *ws = kn_emit_in(e, 4), *wz = kn_emit_in(e, 5);
    const kn_emit_tensor *ys = kn_emit_in(e, 6), *yz = kn_emit_in(e, 7), *b = kn_emit_in(e, 8);
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    if (!x || !xs || !w || !ws || !ys || !y || x->rank < 3 || x->rank > KN_CU_MAX_RANK || w->rank != x->rank ||
        y->rank != x->rank || !is_q8(x->dtype) || !is_q8(w->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "operands (8-bit x and w of equal rank 3..8)");
    kn_dtype yt = yz ? yz->dtype : x->dtype;
    if (xs->dtype != KN_F32 || ws->dtype != KN_F32 || ys->dtype != KN_F32 || xs->numel != 1 || ys->numel != 1 ||
        (xz && (xz->numel != 1 || xz->dtype != x->dtype)) || (yz && yz->numel != 1) || !is_q8(yt) || y->dtype != yt)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "scales and zero points (float32; x and y per tensor)");
    qconv_params p;
    memset(&p, 0, sizeof p);
    p.nsp = x->rank - 2;
    p.c = x->dims[1];
    p.m = y->dims[1];
    int64_t group = kn_emit_attr_int(e, "group", 1);
    if (group < 1 || p.c % group || p.m % group || w->dims[0] != p.m || w->dims[1] != p.c / group)
        return kn_emit_fail(e, KN_ERR_INVALID, "group %lld does not fit the channels", (long long)group);
    p.cg = p.c / group;
    p.mg = p.m / group;
    p.ws_s = param_stride(ws, p.m);
    p.wz_s = param_stride(wz, p.m);
    if (p.ws_s < 0 || p.wz_s < 0 || (wz && wz->dtype != w->dtype) || (b && (b->dtype != KN_I32 || b->numel != p.m)))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "w_scale / w_zero_point / bias shapes");
    if (!sp_ints(e, "strides", p.nsp, 1, p.s) || !sp_ints(e, "dilations", p.nsp, 1, p.d))
        return kn_emit_fail(e, KN_ERR_INVALID, "strides or dilations");
    const char *ap = kn_emit_attr_str(e, "auto_pad", "NOTSET");
    uint32_t np;
    const int64_t *pads = kn_emit_attr_ints(e, "pads", &np);
    if (pads && np != 2u * (uint32_t)p.nsp)
        return kn_emit_fail(e, KN_ERR_INVALID, "pads has %u entries", np);
    p.in_sp = p.out_sp = p.k_sp = 1;
    for (int64_t i = 0; i < p.nsp; i++) {
        p.in[i] = x->dims[i + 2];
        p.k[i] = w->dims[i + 2];
        p.out[i] = y->dims[i + 2];
        if (!*ap || !strcmp(ap, "NOTSET")) {
            p.ph[i] = pads ? pads[i] : 0;
        } else if (!strcmp(ap, "VALID")) {
            p.ph[i] = 0;
        } else if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
            int64_t total = (p.out[i] - 1) * p.s[i] + (p.k[i] - 1) * p.d[i] + 1 - p.in[i];
            total = total < 0 ? 0 : total;
            p.ph[i] = !strcmp(ap, "SAME_UPPER") ? total / 2 : total - total / 2;
        } else {
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "auto_pad '%s'", ap);
        }
        p.in_sp *= p.in[i];
        p.out_sp *= p.out[i];
        p.k_sp *= p.k[i];
    }
    p.total = y->numel;
    const char *tx = kn_cuda_type(x->dtype), *tw = kn_cuda_type(w->dtype), *ty = kn_cuda_type(yt);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, nsp, c, m, cg, mg, in_sp, out_sp, k_sp, ws_s, wz_s;\n"
                 "  i64 in[6], k[6], s[6], d[6], ph[6], out[6]; };\n"
                 "extern \"C\" __global__ void qconv(const %s *x, const float *xs, %s%s%sconst %s *w, const float *ws, "
                 "%s%s%sconst float *ys, %s%s%s%s %s *y, P p) {\n",
                 tx, xz ? "const " : "", xz ? tx : "", xz ? " *xz, " : "", tw, wz ? "const " : "", wz ? tw : "",
                 wz ? " *wz, " : "", yz ? "const " : "", yz ? ty : "", yz ? " *yz, " : "", b ? "const int *bias," : "", ty);
    kn_sb_printf(&src,
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    i64 o = i %% p.out_sp, mo = (i / p.out_sp) %% p.m, n = i / (p.out_sp * p.m);\n"
                 "    i64 g = mo / p.mg, op[6];\n"
                 "    i64 rem = o;\n"
                 "    for (int d = (int)p.nsp - 1; d >= 0; d--) { op[d] = rem %% p.out[d]; rem /= p.out[d]; }\n"
                 "    i64 xzv = %s, wzv = %s, acc = 0;\n"
                 "    for (i64 ci = 0; ci < p.cg; ci++) {\n"
                 "      const %s *xc = x + (n * p.c + g * p.cg + ci) * p.in_sp;\n"
                 "      const %s *wc = w + (mo * p.cg + ci) * p.k_sp;\n"
                 "      for (i64 kk = 0; kk < p.k_sp; kk++) {\n"
                 "        i64 krem = kk, off = 0; bool inside = true;\n"
                 "        for (int d = (int)p.nsp - 1; d >= 0; d--) {\n"
                 "          i64 kd = krem %% p.k[d]; krem /= p.k[d];\n"
                 "          i64 pos = op[d] * p.s[d] - p.ph[d] + kd * p.d[d];\n"
                 "          if (pos < 0 || pos >= p.in[d]) { inside = false; break; }\n"
                 "        }\n"
                 "        if (!inside) continue;\n"
                 "        krem = kk;\n"
                 "        i64 stride = 1;\n"
                 "        for (int d = (int)p.nsp - 1; d >= 0; d--) {\n"
                 "          i64 kd = krem %% p.k[d]; krem /= p.k[d];\n"
                 "          off += (op[d] * p.s[d] - p.ph[d] + kd * p.d[d]) * stride; stride *= p.in[d];\n"
                 "        }\n"
                 "        acc += ((i64)xc[off] - xzv) * ((i64)wc[kk] - wzv);\n"
                 "      }\n"
                 "    }\n"
                 "    float mul = xs[0] * ws[mo * p.ws_s] / ys[0];\n"
                 "    double v = rint((double)(acc%s) * (double)mul + %s);\n"
                 "    v = v < %s ? %s : v > %s ? %s : v;\n"
                 "    y[i] = (%s)v;\n"
                 "  }\n"
                 "}\n",
                 xz ? "(i64)xz[0]" : "0", wz ? "(i64)wz[mo * p.wz_s]" : "0", tx, tw, b ? " + (i64)bias[mo]" : "",
                 yz ? "(double)yz[0]" : "0.0", yt == KN_I8 ? "-128.0" : "0.0", yt == KN_I8 ? "-128.0" : "0.0",
                 yt == KN_I8 ? "127.0" : "255.0", yt == KN_I8 ? "127.0" : "255.0", ty);
    kn_emit_arg args[12];
    uint32_t na = 0;
    args[na++] = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL, 0};
    if (xz)
        args[na++] = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_IN, 3, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_IN, 4, 0, NULL, 0};
    if (wz)
        args[na++] = (kn_emit_arg){KN_ARG_IN, 5, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_IN, 6, 0, NULL, 0};
    if (yz)
        args[na++] = (kn_emit_arg){KN_ARG_IN, 7, 0, NULL, 0};
    if (b)
        args[na++] = (kn_emit_arg){KN_ARG_IN, 8, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0};
    args[na++] = (kn_emit_arg){KN_ARG_PARAMS, 0, sizeof p, &p, 0};
    return kn_emit_launch_source(e, &src, "qconv", args, na, p.total);
}
