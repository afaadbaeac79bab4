/* CUDA emitter for kiln GemmEpilogue (passes/fuse_gemm.c; semantics in
 * runtime/cpu/k_fused_gemm.c): one cuBLASLt GEMM that takes as much of the
 * epilogue as cuBLASLt can (a row-vector bias, ReLU or tanh-GELU after
 * it, a same-shaped residual as C with beta = 1 when no activation
 * follows the bias), then, only when
 * something is left, one elementwise kernel applying the rest (bias, the
 * activation, the residual add with broadcasting) in double. */
#include "codegen/cuda/emit.h"
#include "codegen/cuda/gemv_kernels.h"

#include <string.h>

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

/* activation name → the CUDA expression of v (double), a, b from params */
static const struct {
    const char *name, *expr;
} acts[] = {
    {"", "v"},
    {"none", "v"},
    {"relu", "(v < 0 ? 0.0 : v)"},
    {"clip", "(v < p.a ? p.a : (v > p.b ? p.b : v))"},
    {"gelu", "(0.5 * v * (1.0 + erf(v * 0.70710678118654752440)))"},
    {"gelu_tanh", "(0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v))))"},
    {"silu", "(v / (1.0 + exp(-v)))"},
    {"hardsigmoid", "fmax(0.0, fmin(1.0, p.a * v + p.b))"},
    {"hardswish", "(v * fmax(0.0, fmin(1.0, v / 6.0 + 0.5)))"},
    {"sigmoid", "(1.0 / (1.0 + exp(-v)))"},
    {"tanh", "tanh(v)"},
    {"leakyrelu", "(v < 0 ? p.a * v : v)"},
};

const char *kn_gemm_act_expr(const char *name)
{
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(name, acts[i].name) == 0)
            return acts[i].expr;
    return NULL;
}

/* The epilogue kernel over Y (rank <= 8): P broadcast to Y's dims with
 * strides sp, residual with strides sr; bias index from P's index:
 * (ip / n) * b_rs + (ip % n) * b_cs. */
typedef struct epi_params {
    int64_t total, rank, n;
    int64_t dims[8], sp[8], sr[8];
    int64_t b_rs, b_cs;
    double a, b, beta;
    int64_t has_bias, has_res;
} epi_params;

static bool strides(int32_t rank, const int64_t *dims, int32_t tr, const int64_t *td, int64_t *st)
{
    if (tr > rank)
        return false;
    int64_t s = 1;
    for (int32_t d = rank - 1; d >= 0; d--) {
        int32_t j = d - (rank - tr);
        int64_t v = j >= 0 ? td[j] : 1;
        if (v != 1 && v != dims[d])
            return false;
        st[d] = v == 1 ? 0 : s;
        s *= v;
    }
    return true;
}

static kn_status emit_epilogue(kn_emit *e, kn_dtype dt, const char *expr, const epi_params *p, kn_emit_arg prod)
{
    const char *t = kn_cuda_type(dt);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 total, rank, n; i64 dims[8], sp[8], sr[8]; i64 b_rs, b_cs;\n"
                 "  double a, b, beta; i64 has_bias, has_res; };\n"
                 "extern \"C\" __global__ void kn_gemm_epilogue(const %s *x, const %s *bias, const %s *res, %s *y, P p) "
                 "{\n"
                 "  for (i64 i = kn_tid(); i < p.total; i += kn_nthreads()) {\n"
                 "    i64 c = i, ip = 0, ir = 0;\n"
                 "    for (int d = (int)p.rank - 1; d >= 0; d--) {\n"
                 "      i64 j = c %% p.dims[d];\n"
                 "      c /= p.dims[d];\n"
                 "      ip += j * p.sp[d];\n"
                 "      ir += j * p.sr[d];\n"
                 "    }\n"
                 "    double v = kn_tod(x[ip]);\n"
                 "    if (p.has_bias) v += p.beta * kn_tod(bias[(ip / p.n) * p.b_rs + (ip %% p.n) * p.b_cs]);\n"
                 "    v = %s;\n"
                 "    if (p.has_res) v += kn_tod(res[ir]);\n"
                 "    y[i] = kn_fromd<%s>(v);\n"
                 "  }\n"
                 "}\n",
                 t, t, t, t, expr, t);
    /* absent bias / residual: pass the product pointer (never read) */
    kn_emit_arg args[5] = {prod, prod, prod, {KN_ARG_OUT, 0, 0, NULL, 0}, {KN_ARG_PARAMS, 0, sizeof *p, p, 0}};
    if (p->has_bias)
        args[1] = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL, 0};
    if (p->has_res)
        args[2] = (kn_emit_arg){KN_ARG_IN, 3, 0, NULL, 0};
    return kn_emit_launch_source(e, &src, "kn_gemm_epilogue", args, 5, p->total);
}

/* The dense GEMV when the per-shape choice gives it the product (A rows
 * contiguous, B [K, N], Y the product's shape) and the residual is either
 * Y's shape, a row [N] or one value: KN_ERR_NOT_FOUND otherwise. */
static kn_status try_gemv(kn_emit *e, kn_dtype dt, int64_t m, int64_t n, int64_t k, bool gemm, double alpha,
                          double beta, int bias_in, int64_t b_rs, int64_t b_cs, const kn_emit_tensor *res,
                          const kn_emit_tensor *y, const char *act)
{
    bool has_bias = bias_in >= 0 && (!gemm || beta != 0); /* as Gemm: beta 0 ignores C */
    kn_gemv_node g;
    memset(&g, 0, sizeof g);
    if (res) {
        int64_t st[8];
        if (!strides(y->rank, y->dims, res->rank, res->dims, st))
            return KN_ERR_NOT_FOUND;
        if (res->numel == m * n)
            g.p.r_rs = n, g.p.r_cs = 1;
        else if (res->numel == n && res->rank >= 1 && res->dims[res->rank - 1] == n)
            g.p.r_rs = 0, g.p.r_cs = 1;
        else if (res->numel != 1)
            return KN_ERR_NOT_FOUND;
    }
    char epi[24];
    kn_gemm_epi_key(has_bias, act != NULL, res != NULL, epi, sizeof epi);
    if (!kn_gemm_choose_gemv(kn_emit_gemm_table(e), kn_emit_arch(e), dt, m, n, k, epi))
        return KN_ERR_NOT_FOUND;
    g.m = m, g.n = n, g.k = k;
    g.gemm = gemm;
    g.bias_in = has_bias ? bias_in : -1;
    g.res_in = res ? 3 : -1;
    g.act = act;
    g.p.c_rs = b_rs, g.p.c_cs = b_cs;
    g.p.alpha = alpha, g.p.beta = gemm ? beta : 1.0;
    g.p.a = kn_emit_attr_float(e, "act_alpha", 0.0f);
    g.p.b = kn_emit_attr_float(e, "act_beta", 0.0f);
    return kn_emit_gemv(e, dt, &g);
}

kn_status kn_emit_KILN_GemmEpilogue(kn_emit *e)
{
    const kn_emit_tensor *a = kn_emit_in(e, 0), *b = kn_emit_in(e, 1), *bias = kn_emit_in(e, 2);
    const kn_emit_tensor *res = kn_emit_in(e, 3), *y = kn_emit_out(e, 0);
    if (!a || !b || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "needs inputs A and B");
    kn_dtype dt = a->dtype;
    if (!is_float(dt) || b->dtype != dt || (bias && bias->dtype != dt) || (res && res->dtype != dt))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtypes (float inputs of one dtype only)");
    if (y->rank > 8 || (res && res->rank > 8))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "rank above 8");
    const char *an = kn_emit_attr_str(e, "activation", ""), *expr = kn_gemm_act_expr(an);
    if (!expr)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "activation '%s'", an);
    bool has_act = strcmp(expr, "v") != 0;
    bool gemm = kn_emit_attr_int(e, "gemm", 0) != 0;
    bool ta = gemm && kn_emit_attr_int(e, "transA", 0) != 0, tb = gemm && kn_emit_attr_int(e, "transB", 0) != 0;
    double alpha = gemm ? kn_emit_attr_float(e, "alpha", 1.0f) : 1.0;
    double beta = gemm ? kn_emit_attr_float(e, "beta", 1.0f) : 1.0;
    int64_t m, n, k;
    int32_t prank;
    int64_t pdims[8];
    if (gemm) {
        if (a->rank < 2 || a->rank > 8 || (ta && a->rank != 2) || b->rank != 2 || (bias && bias->rank > 2))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "gemm = 1 operands");
        k = ta ? a->dims[0] : a->dims[a->rank - 1], n = tb ? b->dims[0] : b->dims[1];
        m = ta ? a->dims[1] : k ? a->numel / k : 0;
        prank = a->rank;
        memcpy(pdims, a->dims, (size_t)a->rank * sizeof *pdims);
        pdims[prank - 2] = ta ? m : pdims[prank - 2];
        pdims[prank - 1] = n;
    } else {
        if (a->rank < 1 || a->rank > 8 || b->rank != 2 || (bias && bias->rank > 1))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "gemm = 0 operands");
        k = a->dims[a->rank - 1], n = b->dims[1];
        m = k ? a->numel / k : 0;
        prank = a->rank;
        memcpy(pdims, a->dims, (size_t)a->rank * sizeof *pdims);
        pdims[prank - 1] = n;
    }
    if (k == 0 || m * n == 0)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "empty product");
    /* bias: [N] / [1, N] row vector (cuBLASLt's bias), else strides */
    int64_t b_rs = 0, b_cs = 0;
    bool bias_row = false, bias_full = false;
    if (bias) {
        int64_t bm = bias->rank == 2 ? bias->dims[0] : 1, bn = bias->rank >= 1 ? bias->dims[bias->rank - 1] : 1;
        if ((bm != 1 && bm != m) || (bn != 1 && bn != n))
            return kn_emit_fail(e, KN_ERR_INVALID, "bias does not broadcast to [%lld, %lld]", (long long)m,
                                (long long)n);
        b_cs = bn == 1 ? 0 : 1;
        b_rs = bm == 1 ? 0 : bn;
        bias_row = bm == 1 && bn == n && beta == 1.0;
        bias_full = bm == m && bn == n && gemm;
    }
    /* residual: same shape as the product → cuBLASLt's C */
    bool res_same = res && res->rank == prank && res->numel == m * n;
    for (int32_t d = 0; res_same && d < prank; d++)
        res_same = res->dims[d] == pdims[d];
    bool prod_in_y = y->numel == m * n;
    if (prod_in_y && !ta && !tb) {
        kn_status gs =
            try_gemv(e, dt, m, n, k, gemm, alpha, beta, bias ? 2 : -1, b_rs, b_cs, res, y, has_act ? expr : NULL);
        if (gs != KN_ERR_NOT_FOUND)
            return gs;
    }
    kn_emit_gemm g;
    memset(&g, 0, sizeof g);
    g.a = (kn_emit_arg){KN_ARG_IN, 0, 0, NULL, 0};
    g.b = (kn_emit_arg){KN_ARG_IN, 1, 0, NULL, 0};
    g.d = prod_in_y ? (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL, 0}
                    : (kn_emit_arg){KN_ARG_SCRATCH, 0, (size_t)(m * n) * (kn_dtype_bits(dt) / 8), NULL, 0};
    g.m = m, g.n = n, g.k = k;
    g.trans_a = ta, g.trans_b = tb;
    g.lda = ta ? m : k, g.ldb = tb ? k : n, g.ldc = n, g.ldd = n;
    g.batch = 1;
    g.alpha = (float)alpha;
    g.dtype = dt;
    bool left_bias = bias != NULL, left_act = has_act, left_res = res != NULL;
    if (bias && bias_row) {
        g.c = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL, 0};
        g.beta = 1;
        g.epilogue = 3;
        left_bias = false;
        if (strcmp(an, "relu") == 0 || strcmp(an, "gelu_tanh") == 0) {
            g.epilogue = strcmp(an, "relu") == 0 ? 4 : 5;
            left_act = false;
        }
    } else if (bias && bias_full && !res) {
        g.c = (kn_emit_arg){KN_ARG_IN, 2, 0, NULL, 0};
        g.beta = (float)beta;
        left_bias = false;
    } else if (!bias && !res && (strcmp(an, "relu") == 0 || strcmp(an, "gelu_tanh") == 0)) {
        g.epilogue = strcmp(an, "relu") == 0 ? 1 : 2;
        left_act = false;
    }
    /* the residual as C (beta 1) when nothing comes after it: no
     * activation left, none in the epilogue (cuBLASLt applies it after C);
     * a bias row then moves to the 5th argument */
    if (res && res_same && !left_act && !left_bias && prod_in_y && (g.epilogue == 0 || g.epilogue == 3) &&
        (g.c.kind == 0 || g.epilogue == 3)) {
        if (g.epilogue == 3)
            g.bias = g.c;
        g.c = (kn_emit_arg){KN_ARG_IN, 3, 0, NULL, 0};
        g.beta = 1;
        left_res = false;
    }
    KN_TRY(kn_emit_gemm_step(e, &g));
    if (!left_bias && !left_act && !left_res)
        return KN_OK;
    epi_params p;
    memset(&p, 0, sizeof p);
    p.total = y->numel;
    p.rank = y->rank;
    p.n = n;
    for (int32_t d = 0; d < y->rank; d++)
        p.dims[d] = y->dims[d];
    if (!strides(y->rank, y->dims, prank, pdims, p.sp) ||
        (left_res && !strides(y->rank, y->dims, res->rank, res->dims, p.sr)))
        return kn_emit_fail(e, KN_ERR_INVALID, "product and residual do not broadcast to the output");
    p.b_rs = b_rs, p.b_cs = b_cs;
    p.a = kn_emit_attr_float(e, "act_alpha", 0.0f);
    p.b = kn_emit_attr_float(e, "act_beta", 0.0f);
    p.beta = beta;
    p.has_bias = left_bias && beta != 0; /* as Gemm: beta 0 ignores C */
    p.has_res = left_res;
    return emit_epilogue(e, dt, left_act ? expr : "v", &p, g.d);
}
