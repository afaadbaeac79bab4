/* CUDA emitters for matrix products: MatMul and Gemm. Floating-point
 * products (f32, f16, bf16, f64) become cuBLASLt GEMM steps (row-major,
 * strided batch, stride 0 for a broadcast batch) or, for few rows of A
 * against one B [K, N] where the per-shape choice says so, the dense GEMV
 * (gemv_kernels.h); integer products, and
 * batch broadcasts that one stride cannot express, run a plain kernel (one
 * thread per output element, exact wrapping 64-bit integer sums, double
 * sums for floats). Convolutions and pooling are in e_linalg_conv.c. */
#include "codegen/cuda/emit.h"
#include "codegen/cuda/gemv_kernels.h"
#include "runtime/cpu/util.h"
#include "runtime/plan_format.h"

#include <string.h>

static kn_status launch_src(kn_emit *e, kn_sb *src, const char *entry, int64_t n, const kn_emit_arg *args,
                            uint32_t n_args)
{
    uint32_t k;
    kn_status s = kn_emit_kernel(e, kn_sb_str(src), entry, &k);
    kn_sb_free(src);
    KN_TRY(s);
    return kn_emit_launch(e, k, kn_emit_grid(n), (kn_dim3){256, 1, 1}, 0, args, n_args);
}

static bool gemm_dtype(kn_dtype t) { return t == KN_F32 || t == KN_F16 || t == KN_BF16 || t == KN_F64; }

#define MM_MAX_BATCH (KN_CU_MAX_RANK - 2)

/* The plain product kernel: D[b, i, j] = alpha * sum_p A(b, i, p) B(b, p,
 * j) + beta * C(i, j). A(b, i, p) is at a_off(b) + i * a_rs + p * a_cs
 * (transposes are strides), batch offsets from the broadcast batch dims. */
typedef struct mm_params {
    int64_t total, m, n, k, nb;
    int64_t bdims[MM_MAX_BATCH], sa[MM_MAX_BATCH], sb[MM_MAX_BATCH];
    int64_t a_rs, a_cs, b_rs, b_cs, c_rs, c_cs;
    double alpha, beta;
    int64_t has_c, exact; /* exact: integers with alpha = beta = 1, summed mod 2^64 */
} mm_params;

static kn_status emit_plain(kn_emit *e, kn_dtype dt, const mm_params *p, bool has_c)
{
    const char *t = kn_cuda_type(dt);
    if (!t || dt == KN_BOOL)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(dt));
    bool fl = kn_dt_is_float(dt), sg = kn_dt_is_signed(dt);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, m, n, k, nb; i64 bdims[6], sa[6], sb[6];\n"
                 "  i64 a_rs, a_cs, b_rs, b_cs, c_rs, c_cs; double alpha, beta; i64 has_c, exact; };\n"
                 "extern \"C\" __global__ void matmul(const %s *a, const %s *b, %s%s%s %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    i64 col = i %% p.n, row = (i / p.n) %% p.m, bt = i / (p.n * p.m), oa = 0, ob = 0;\n"
                 "    for (int d = (int)p.nb - 1; d >= 0; d--) {\n"
                 "      i64 c = bt %% p.bdims[d];\n"
                 "      bt /= p.bdims[d];\n"
                 "      oa += c * p.sa[d];\n"
                 "      ob += c * p.sb[d];\n"
                 "    }\n"
                 "    const %s *ap = a + oa + row * p.a_rs;\n"
                 "    const %s *bp = b + ob + col * p.b_cs;\n",
                 t, t, has_c ? "const " : "", has_c ? t : "", has_c ? " *cm," : "", t, t, t);
    if (fl) {
        kn_sb_printf(&src,
                     "    double acc = 0;\n"
                     "    for (i64 q = 0; q < p.k; q++) acc += kn_tod(ap[q * p.a_cs]) * kn_tod(bp[q * p.b_rs]);\n"
                     "    double v = p.alpha * acc;\n"
                     "%s"
                     "    y[i] = kn_fromd<%s>(v);\n",
                     has_c ? "    if (p.beta != 0) v += p.beta * kn_tod(cm[row * p.c_rs + col * p.c_cs]);\n" : "", t);
    } else {
        kn_sb_printf(&src,
                     "    u64 acc = 0;\n"
                     "    for (i64 q = 0; q < p.k; q++) acc += (u64)ap[q * p.a_cs] * (u64)bp[q * p.b_rs];\n"
                     "    u64 cv = %s;\n"
                     "    if (p.exact) { y[i] = (%s)(acc + cv); continue; }\n"
                     "    double dv = (double)(%sacc) * p.alpha;\n"
                     "    if (p.has_c) dv += (double)(%scv) * p.beta;\n"
                     "    y[i] = (%s)(long long)dv;\n",
                     has_c ? "(u64)cm[row * p.c_rs + col * p.c_cs]" : "0", t, sg ? "(i64)" : "", sg ? "(i64)" : "",
                     t);
    }
    kn_sb_printf(&src, "  }\n}\n");
    kn_emit_arg args[5] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_IN, 2, 0, NULL},
                           {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof *p, p}};
    if (!has_c)
        args[2] = args[3], args[3] = args[4];
    return launch_src(e, &src, "matmul", p->total, args, has_c ? 5 : 4);
}

kn_status kn_emit_MatMul(kn_emit *e)
{
    const kn_emit_tensor *a = kn_emit_in(e, 0), *b = kn_emit_in(e, 1), *y = kn_emit_out(e, 0);
    if (!a || !b || !y || a->rank < 1 || b->rank < 1 || a->dtype != b->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "operands");
    int32_t ra = a->rank, rb = b->rank;
    int64_t m = ra == 1 ? 1 : a->dims[ra - 2], k = a->dims[ra - 1], n = rb == 1 ? 1 : b->dims[rb - 1];
    int32_t ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0, br = ba > bb ? ba : bb;
    if (br > MM_MAX_BATCH)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "batch rank %d", (int)br);
    mm_params p;
    memset(&p, 0, sizeof p);
    p.m = m, p.n = n, p.k = k, p.nb = br;
    p.a_rs = k, p.a_cs = 1, p.b_rs = n, p.b_cs = 1;
    p.alpha = 1;
    p.exact = 1;
    /* batch strides, 0 on broadcast dims; whether each operand is either
     * fully broadcast (one matrix) or fully batched (matching the output) */
    int64_t stride_a = m * k, stride_b = k * n, nbatch = 1, count_a = 1, count_b = 1;
    for (int32_t i = br - 1; i >= 0; i--) {
        int32_t ia = i - (br - ba), ib = i - (br - bb);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        p.bdims[i] = da == 1 ? db : da;
        p.sa[i] = da == 1 ? 0 : stride_a;
        p.sb[i] = db == 1 ? 0 : stride_b;
        stride_a *= da;
        stride_b *= db;
        count_a *= da;
        count_b *= db;
        nbatch *= p.bdims[i];
    }
    p.total = y->numel;
    bool full_a = count_a == nbatch, full_b = count_b == nbatch;
    bool one_a = count_a == 1, one_b = count_b == 1;
    if (!gemm_dtype(a->dtype) || y->numel == 0 || k == 0 || !(full_a || one_a) || !(full_b || one_b))
        return emit_plain(e, a->dtype, &p, false);
    /* one B against all of A's rows: the GEMV where chosen */
    if (one_b && kn_gemm_choose_gemv(kn_emit_gemm_table(e), kn_emit_arch(e), a->dtype, a->numel / k, n, k, "-")) {
        kn_gemv_node gv;
        memset(&gv, 0, sizeof gv);
        gv.m = a->numel / k, gv.n = n, gv.k = k;
        gv.bias_in = gv.res_in = -1;
        gv.p.alpha = gv.p.beta = 1;
        /* the packed gate|up product read only by a SwiGlu: one launch writes silu(gate) * up */
        const kn_emit_tensor *sw = kn_emit_swiglu_reader(e);
        if (sw && n % 2 == 0 && sw->dtype == a->dtype && sw->rank >= 1 && sw->dims[sw->rank - 1] == n / 2 &&
            sw->numel * 2 == y->numel) {
            kn_emit_take_swiglu(e);
            gv.n = n / 2, gv.swiglu = true;
        }
        return kn_emit_gemv(e, a->dtype, &gv);
    }
    kn_emit_gemm g;
    memset(&g, 0, sizeof g);
    g.a = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL};
    g.b = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL};
    g.d = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
    g.m = m, g.n = n, g.k = k;
    g.lda = k, g.ldb = n, g.ldd = n, g.ldc = n;
    g.batch = nbatch;
    g.stride_a = one_a ? 0 : m * k;
    g.stride_b = one_b ? 0 : k * n;
    g.stride_d = m * n;
    g.alpha = 1;
    g.beta = 0;
    g.dtype = a->dtype;
    if (one_b && !one_a) { /* a batch of A against one B: one taller GEMM */
        g.m = m * nbatch;
        g.batch = 1;
        g.stride_a = g.stride_b = g.stride_d = 0;
    } else if (nbatch == 1) {
        g.stride_a = g.stride_b = g.stride_d = 0;
    }
    return kn_emit_gemm_step(e, &g);
}

/* Writes C broadcast to [M, N] into the output (the first step of a Gemm
 * whose C is not already [M, N]); the GEMM then accumulates with beta. */
typedef struct bcast_params {
    int64_t total, n, c_rs, c_cs;
} bcast_params;

static kn_status emit_bcast_c(kn_emit *e, kn_dtype dt, const bcast_params *p)
{
    const char *t = kn_cuda_type(dt);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, n, c_rs, c_cs; };\n"
                 "extern \"C\" __global__ void bcast_c(const %s *c, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads())\n"
                 "    y[i] = c[(i / p.n) * p.c_rs + (i %% p.n) * p.c_cs];\n"
                 "}\n",
                 t, t);
    kn_emit_arg args[3] = {{KN_ARG_IN, 2, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof *p, p}};
    return launch_src(e, &src, "bcast_c", p->total, args, 3);
}

kn_status kn_emit_Gemm(kn_emit *e)
{
    const kn_emit_tensor *a = kn_emit_in(e, 0), *b = kn_emit_in(e, 1), *c = kn_emit_in(e, 2);
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    if (!a || !b || !y || a->rank != 2 || b->rank != 2 || (c && c->rank > 2))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "operands");
    bool ta = kn_emit_attr_int(e, "transA", 0) != 0, tb = kn_emit_attr_int(e, "transB", 0) != 0;
    double alpha = kn_emit_attr_float(e, "alpha", 1.0f), beta = kn_emit_attr_float(e, "beta", 1.0f);
    int64_t m = ta ? a->dims[1] : a->dims[0], k = ta ? a->dims[0] : a->dims[1];
    int64_t n = tb ? b->dims[0] : b->dims[1];
    int64_t c_rs = 0, c_cs = 0;
    bool c_full = false;
    if (c) {
        int64_t cm = c->rank == 2 ? c->dims[0] : 1, cn = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
        c_cs = cn == 1 ? 0 : 1;
        c_rs = cm == 1 ? 0 : cn;
        c_full = cm == m && cn == n;
    }
    if (!gemm_dtype(a->dtype) || y->numel == 0 || k == 0) {
        mm_params p;
        memset(&p, 0, sizeof p);
        p.total = y->numel, p.m = m, p.n = n, p.k = k, p.nb = 0;
        p.a_rs = ta ? 1 : k, p.a_cs = ta ? m : 1;
        p.b_rs = tb ? 1 : n, p.b_cs = tb ? k : 1;
        p.c_rs = c_rs, p.c_cs = c_cs;
        p.alpha = alpha, p.beta = beta;
        p.has_c = c != NULL;
        p.exact = alpha == 1.0 && (beta == 1.0 || !c);
        return emit_plain(e, a->dtype, &p, c != NULL);
    }
    bool has_c = c && beta != 0;
    if (!ta && !tb &&
        kn_gemm_choose_gemv(kn_emit_gemm_table(e), kn_emit_arch(e), a->dtype, m, n, k, has_c ? "bias" : "-")) {
        kn_gemv_node gv;
        memset(&gv, 0, sizeof gv);
        gv.m = m, gv.n = n, gv.k = k;
        gv.gemm = true;
        gv.bias_in = has_c ? 2 : -1;
        gv.res_in = -1;
        gv.p.c_rs = c_rs, gv.p.c_cs = c_cs;
        gv.p.alpha = alpha, gv.p.beta = beta;
        return kn_emit_gemv(e, a->dtype, &gv);
    }
    kn_emit_gemm g;
    memset(&g, 0, sizeof g);
    g.a = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL};
    g.b = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL};
    g.d = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL};
    g.m = m, g.n = n, g.k = k;
    g.trans_a = ta, g.trans_b = tb;
    g.lda = ta ? m : k;
    g.ldb = tb ? k : n;
    g.ldc = n, g.ldd = n;
    g.batch = 1;
    g.alpha = (float)alpha;
    g.beta = (float)beta;
    g.dtype = a->dtype;
    if (c && beta != 0) {
        if (c_full) {
            g.c = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL};
        } else if (beta == 1.0 && c_rs == 0 && c_cs == 1) { /* a bias row: cuBLASLt's bias epilogue */
            g.c = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL};
            g.epilogue = 3;
        } else {
            bcast_params bp = {m * n, n, c_rs, c_cs};
            KN_TRY(emit_bcast_c(e, a->dtype, &bp));
            g.c = (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL}; /* in place: C = D, same layout */
        }
    } else {
        g.beta = 0;
    }
    return kn_emit_gemm_step(e, &g);
}
