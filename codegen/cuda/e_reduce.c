/* CUDA emitters for reductions: the Reduce* family, ArgMax/ArgMin,
 * CumSum and MeanVarianceNormalization. One thread per output element
 * (per slice for CumSum, per group for MVN) loops over the elements it
 * reduces, walking the input through dims and strides the host works out
 * (kept dims for the output index, reduced dims for the loop; both
 * merged where contiguous). Floats accumulate in double, integers in
 * exact 64-bit arithmetic, as the CPU reference does. Softmax and the
 * normalizations live in e_reduce_norm.c. */
#include "codegen/cuda/emit.h"

#include <string.h>

/* Device helpers on top of kiln_cuda.h (a copy of e_elementwise.c's:
 * candidates for the prelude). */
static const char HEAD[] = "#include \"kiln_cuda.h\"\n";

enum { C_FLOAT = 1, C_SINT = 2, C_UINT = 4, C_BOOL = 8 };

static unsigned tclass(kn_dtype t)
{
    switch (t) {
    case KN_F16: case KN_BF16: case KN_F32: case KN_F64: return C_FLOAT;
    case KN_I8: case KN_I16: case KN_I32: case KN_I64: return C_SINT;
    case KN_U8: case KN_U16: case KN_U32: case KN_U64: return C_UINT;
    case KN_BOOL: return C_BOOL;
    default: return 0;
    }
}

/* Reads an int64/int32 tensor known at compile time (at most cap
 * values); false when it is not constant. */
static bool const_ints(const kn_emit_tensor *t, int64_t *v, int64_t cap, int64_t *n)
{
    if (!t || (!t->host_data && t->numel) || t->numel > cap || (t->dtype != KN_I64 && t->dtype != KN_I32))
        return false;
    for (int64_t i = 0; i < t->numel; i++) {
        if (t->dtype == KN_I64) {
            memcpy(&v[i], (const char *)t->host_data + i * 8, 8);
        } else {
            int32_t w;
            memcpy(&w, (const char *)t->host_data + i * 4, 4);
            v[i] = w;
        }
    }
    *n = t->numel;
    return true;
}

/* ---- the reduction map ---- */

/* Output element o (row-major over the kept dims) starts at
 * kn_off(o, kept) in x and reduces the `count` elements at the offsets
 * of the reduced dims from there. Layout = the kernels' struct P. */
typedef struct rmap {
    int64_t n_out, count, kr, rr;
    int64_t kdims[8], kst[8], rdims[8], rst[8];
} rmap;

static const char RMAP[] =
    "struct P { i64 n_out, count, kr, rr; i64 kdims[8], kst[8], rdims[8], rst[8]; };\n"
    "__device__ __forceinline__ i64 kn_base_(const P &p, i64 o) {\n"
    "  i64 off = 0;\n"
    "  for (int d = (int)p.kr - 1; d >= 0; d--) { off += (o % p.kdims[d]) * p.kst[d]; o /= p.kdims[d]; }\n"
    "  return off;\n"
    "}\n"
    "/* the next reduced element: idx is the position, *off its offset */\n"
    "__device__ __forceinline__ void kn_next_(const P &p, i64 *idx, i64 *off) {\n"
    "  for (int d = (int)p.rr - 1; d >= 0; d--) {\n"
    "    *off += p.rst[d];\n"
    "    if (++idx[d] < p.rdims[d]) return;\n"
    "    *off -= p.rst[d] * p.rdims[d];\n"
    "    idx[d] = 0;\n"
    "  }\n"
    "}\n";

/* Appends dim (size, stride) to a dim list, dropping size 1 and merging
 * with the previous dim when contiguous with it. */
static void push_dim(int64_t *dims, int64_t *st, int64_t *r, int64_t size, int64_t stride)
{
    if (size == 1)
        return;
    if (*r > 0 && st[*r - 1] == stride * size) {
        dims[*r - 1] *= size;
        st[*r - 1] = stride;
        return;
    }
    dims[*r] = size;
    st[*r] = stride;
    (*r)++;
}

static void rmap_init(rmap *m, const kn_emit_tensor *x, const bool *reduced)
{
    memset(m, 0, sizeof *m);
    int64_t xst[8], s = 1;
    for (int32_t d = x->rank - 1; d >= 0; d--) {
        xst[d] = s;
        s *= x->dims[d];
    }
    m->n_out = m->count = 1;
    for (int32_t d = 0; d < x->rank; d++) {
        if (reduced[d]) {
            m->count *= x->dims[d];
            push_dim(m->rdims, m->rst, &m->rr, x->dims[d], xst[d]);
        } else {
            m->n_out *= x->dims[d];
            push_dim(m->kdims, m->kst, &m->kr, x->dims[d], xst[d]);
        }
    }
}

/* Reads the axes (attribute before `input_opset`, else the optional
 * constant input 1) into reduced[]: no axes means all of them, unless
 * noop_with_empty_axes says none. */
static kn_status reduced_axes(kn_emit *e, const kn_emit_tensor *x, int64_t input_opset, bool *reduced)
{
    int64_t axes[8];
    int64_t n_axes = 0;
    bool noop = false;
    if (kn_emit_opset(e) >= input_opset) {
        const kn_emit_tensor *ta = kn_emit_in(e, 1);
        if (ta && !const_ints(ta, axes, 8, &n_axes))
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "axes computed at run time");
        noop = kn_emit_attr_int(e, "noop_with_empty_axes", 0) != 0;
    } else {
        uint32_t n;
        const int64_t *a = kn_emit_attr_ints(e, "axes", &n);
        if (n > 8)
            return kn_emit_fail(e, KN_ERR_INVALID, "%u axes for rank %d", n, (int)x->rank);
        for (uint32_t i = 0; i < n; i++)
            axes[i] = a[i];
        n_axes = n;
    }
    for (int32_t d = 0; d < x->rank; d++)
        reduced[d] = n_axes == 0 && !noop;
    for (int64_t i = 0; i < n_axes; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + x->rank : axes[i];
        if (a < 0 || a >= x->rank || reduced[a])
            return kn_emit_fail(e, KN_ERR_INVALID, "axis %lld is out of range or repeated", (long long)axes[i]);
        reduced[a] = true;
    }
    return KN_OK;
}

/* ---- Reduce* ---- */

typedef enum red_kind {
    R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_LOGSUM, R_LOGSUMEXP, R_SUMSQ
} red_kind;

static const char *const red_name[] = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                                       "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};

/* Float inputs (and integer inputs to the ops defined through sqrt, log
 * or exp): a double accumulator, NaN sticking in Max/Min. */
static void reduce_f64_body(kn_sb *src, red_kind k, const char *t)
{
    static const char *const init[] = {"0.0", "0.0", "-kn_inf()", "kn_inf()", "1.0",
                                       "0.0", "0.0", "0.0",         "0.0",       "0.0"};
    static const char *const step[] = {
        "acc += v;", "acc += v;", "if (acc == acc && (v != v || v > acc)) acc = v;",
        "if (acc == acc && (v != v || v < acc)) acc = v;", "acc *= v;", "acc += fabs(v);", "acc += v * v;",
        "acc += v;", "acc += exp(v - mx);", "acc += v * v;"};
    static const char *const fin[] = {"acc", "acc / (double)p.count", "acc", "acc", "acc",
                                      "acc", "sqrt(acc)", "log(acc)", "log(acc) + mx", "acc"};
    kn_sb_printf(src, "    double acc = %s, mx = 0.0;\n", init[k]);
    if (k == R_LOGSUMEXP) /* shift by the largest finite element (0 if none) so exp cannot overflow */
        kn_sb_printf(src,
                     "    {\n"
                     "      i64 idx[8] = {0}, off = 0;\n"
                     "      mx = -kn_inf();\n"
                     "      for (i64 j = 0; j < p.count; j++, kn_next_(p, idx, &off)) {\n"
                     "        double v = kn_tod(x[base + off]);\n"
                     "        if (v - v == 0.0 && v > mx) mx = v;\n"
                     "      }\n"
                     "      if (mx == -kn_inf()) mx = 0.0;\n"
                     "    }\n");
    kn_sb_printf(src,
                 "    i64 idx[8] = {0}, off = 0;\n"
                 "    for (i64 j = 0; j < p.count; j++, kn_next_(p, idx, &off)) {\n"
                 "      double v = kn_tod(x[base + off]);\n"
                 "      %s\n"
                 "    }\n"
                 "    y[o] = kn_st_<%s>(%s);\n",
                 step[k], t, fin[k]);
}

/* Integer and bool inputs for the ops that stay in the integers: exact,
 * wrapping in 64 bits (as u64, so overflow is defined). */
static void reduce_int_body(kn_sb *src, red_kind k, kn_dtype dt, const char *t)
{
    bool u64 = dt == KN_U64;
    const char *init = "0ull";
    static const char *const lo[] = {[KN_I8] = "(u64)(i64)-128", [KN_I16] = "(u64)(i64)-32768",
                                     [KN_I32] = "(u64)(i64)(-2147483647 - 1)",
                                     [KN_I64] = "(u64)0x8000000000000000ull", [KN_U8] = "0ull", [KN_U16] = "0ull",
                                     [KN_U32] = "0ull", [KN_U64] = "0ull", [KN_BOOL] = "0ull"};
    static const char *const hi[] = {[KN_I8] = "127ull", [KN_I16] = "32767ull", [KN_I32] = "2147483647ull",
                                     [KN_I64] = "0x7fffffffffffffffull", [KN_U8] = "255ull", [KN_U16] = "65535ull",
                                     [KN_U32] = "4294967295ull", [KN_U64] = "~0ull", [KN_BOOL] = "1ull"};
    if (k == R_PROD)
        init = "1ull";
    else if (k == R_MAX)
        init = lo[dt];
    else if (k == R_MIN)
        init = hi[dt];
    const char *step = "acc += u;";
    char buf[160];
    switch (k) {
    case R_PROD: step = "acc *= u;"; break;
    case R_SUMSQ: step = "acc += u * u;"; break;
    case R_L1: step = tclass(dt) == C_SINT ? "acc += (i64)u < 0 ? 0ull - u : u;" : "acc += u;"; break;
    case R_MAX:
    case R_MIN:
        snprintf(buf, sizeof buf, "if (%s %s %s) acc = u;", u64 ? "u" : "(i64)u", k == R_MAX ? ">" : "<",
                 u64 ? "acc" : "(i64)acc");
        step = buf;
        break;
    default: break;
    }
    kn_sb_printf(src,
                 "    u64 acc = %s;\n"
                 "    i64 idx[8] = {0}, off = 0;\n"
                 "    for (i64 j = 0; j < p.count; j++, kn_next_(p, idx, &off)) {\n"
                 "      u64 u = (u64)x[base + off];\n"
                 "      %s\n"
                 "    }\n",
                 init, step);
    if (k == R_MEAN)
        kn_sb_printf(src, "    if (p.count > 0) acc = %s;\n",
                     u64 ? "acc / (u64)p.count" : "(u64)((i64)acc / p.count)");
    kn_sb_printf(src, "    y[o] = (%s)acc;\n", t);
}

static kn_status reduce(kn_emit *e, red_kind k, int64_t axes_input_opset)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input or output");
    unsigned cl = tclass(x->dtype);
    const char *t = kn_cuda_type(x->dtype);
    bool minmax = k == R_MAX || k == R_MIN;
    if (!t || !cl || (cl == C_BOOL && !minmax))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s of %s", red_name[k], kn_dtype_name(x->dtype));
    bool reduced[8];
    KN_TRY(reduced_axes(e, x, axes_input_opset, reduced));
    rmap m;
    rmap_init(&m, x, reduced);
    if (m.n_out != y->numel)
        return kn_emit_fail(e, KN_ERR_INTERNAL, "output has %lld elements, expected %lld", (long long)y->numel,
                            (long long)m.n_out);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s%s"
                 "extern \"C\" __global__ void kn_%s(const %s *x, %s *y, P p) {\n"
                 "  for (i64 o = kn_tid(); o < p.n_out; o += kn_nthreads()) {\n"
                 "    i64 base = kn_base_(p, o);\n",
                 HEAD, RMAP, red_name[k], t, t);
    bool in_ints = cl != C_FLOAT && k != R_L2 && k != R_LOGSUM && k != R_LOGSUMEXP;
    if (in_ints)
        reduce_int_body(&src, k, x->dtype, t);
    else
        reduce_f64_body(&src, k, t);
    kn_sb_printf(&src, "  }\n}\n");
    char entry[64];
    snprintf(entry, sizeof entry, "kn_%s", red_name[k]);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof m, &m}};
    return kn_emit_launch_source(e, &src, entry, args, 3, m.n_out);
}

kn_status kn_emit_ReduceSum(kn_emit *e) { return reduce(e, R_SUM, 13); }
kn_status kn_emit_ReduceMean(kn_emit *e) { return reduce(e, R_MEAN, 18); }
kn_status kn_emit_ReduceMax(kn_emit *e) { return reduce(e, R_MAX, 18); }
kn_status kn_emit_ReduceMin(kn_emit *e) { return reduce(e, R_MIN, 18); }
kn_status kn_emit_ReduceProd(kn_emit *e) { return reduce(e, R_PROD, 18); }
kn_status kn_emit_ReduceL1(kn_emit *e) { return reduce(e, R_L1, 18); }
kn_status kn_emit_ReduceL2(kn_emit *e) { return reduce(e, R_L2, 18); }
kn_status kn_emit_ReduceLogSum(kn_emit *e) { return reduce(e, R_LOGSUM, 18); }
kn_status kn_emit_ReduceLogSumExp(kn_emit *e) { return reduce(e, R_LOGSUMEXP, 18); }
kn_status kn_emit_ReduceSumSquare(kn_emit *e) { return reduce(e, R_SUMSQ, 18); }

/* ---- ArgMax / ArgMin ---- */

typedef struct axis_params {
    int64_t outer, n, inner, last;
} axis_params;

/* The first extreme element along the axis (the last one with
 * select_last_index); a NaN counts as the extreme, as in numpy. */
static kn_status arg_extreme(kn_emit *e, bool is_max)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input or output");
    unsigned cl = tclass(x->dtype);
    const char *t = kn_cuda_type(x->dtype);
    if (!t || !cl || y->dtype != KN_I64)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    int64_t axis = kn_emit_attr_int(e, "axis", 0);
    if (axis < 0)
        axis += x->rank;
    if (axis < 0 || axis >= (x->rank ? x->rank : 1))
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range for rank %d", (int)x->rank);
    axis_params p = {1, x->rank ? x->dims[axis] : 1, 1, kn_emit_attr_int(e, "select_last_index", 0) != 0};
    for (int32_t d = 0; d < x->rank; d++) {
        if (d < axis)
            p.outer *= x->dims[d];
        else if (d > axis)
            p.inner *= x->dims[d];
    }
    if (p.n == 0 && p.outer * p.inner > 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "cannot take the %s over an axis of size 0",
                            is_max ? "argmax" : "argmin");
    /* cm: 1 when a is more extreme than b, 0 when equal, -1 otherwise */
    const char *cmp;
    if (cl == C_FLOAT)
        cmp = is_max ? "(a != a || b != b) ? ((a != a) && (b != b) ? 0 : (a != a) ? 1 : -1) : a > b ? 1 : a < b ? -1 : 0"
                     : "(a != a || b != b) ? ((a != a) && (b != b) ? 0 : (a != a) ? 1 : -1) : a < b ? 1 : a > b ? -1 : 0";
    else
        cmp = is_max ? "a > b ? 1 : a < b ? -1 : 0" : "a < b ? 1 : a > b ? -1 : 0";
    const char *vt = cl == C_FLOAT ? "double" : x->dtype == KN_U64 ? "u64" : "i64";
    const char *ld = cl == C_FLOAT ? "kn_tod" : x->dtype == KN_U64 ? "(u64)" : "(i64)";
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 outer, n, inner, last; };\n"
                 "extern \"C\" __global__ void kn_%s(const %s *x, long long *y, P p) {\n"
                 "  for (i64 o = kn_tid(); o < p.outer * p.inner; o += kn_nthreads()) {\n"
                 "    i64 base = (o / p.inner) * p.n * p.inner + o %% p.inner, best = 0;\n"
                 "    %s b = %s(x[base]);\n"
                 "    for (i64 k = 1; k < p.n; k++) {\n"
                 "      %s a = %s(x[base + k * p.inner]);\n"
                 "      int cm = %s;\n"
                 "      if (cm > 0 || (cm == 0 && p.last)) { best = k; b = a; }\n"
                 "    }\n"
                 "    y[o] = best;\n"
                 "  }\n"
                 "}\n",
                 HEAD, is_max ? "ArgMax" : "ArgMin", t, vt, ld, vt, ld, cmp);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch_source(e, &src, is_max ? "kn_ArgMax" : "kn_ArgMin", args, 3, p.outer * p.inner);
}

kn_status kn_emit_ArgMax(kn_emit *e) { return arg_extreme(e, true); }
kn_status kn_emit_ArgMin(kn_emit *e) { return arg_extreme(e, false); }

/* ---- CumSum ---- */

typedef struct cumsum_params {
    int64_t numel, rank, exclusive, reverse;
    int64_t dims[8];
} cumsum_params;

/* The axis is an input that may be computed at run time: each thread
 * reads it and works out its slices (outer × inner, n along the axis). */
kn_status kn_emit_CumSum(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *ax = kn_emit_in(e, 1), *y = kn_emit_out(e, 0);
    if (!x || !ax || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "CumSum needs x and axis");
    unsigned cl = tclass(x->dtype);
    const char *t = kn_cuda_type(x->dtype);
    if (!t || !(cl & (C_FLOAT | C_SINT | C_UINT)))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    if ((ax->dtype != KN_I32 && ax->dtype != KN_I64) || ax->numel != 1)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis must be one int32 or int64 value");
    cumsum_params p = {x->numel, x->rank, kn_emit_attr_int(e, "exclusive", 0) != 0,
                       kn_emit_attr_int(e, "reverse", 0) != 0, {0}};
    for (int32_t d = 0; d < x->rank; d++)
        p.dims[d] = x->dims[d];
    int64_t av[1] = {0}, nav;
    if (const_ints(ax, av, 1, &nav) && (av[0] < -(int64_t)x->rank || av[0] >= x->rank))
        return kn_emit_fail(e, KN_ERR_INVALID, "axis %lld out of range for rank %d", (long long)av[0], (int)x->rank);
    bool f = cl == C_FLOAT;
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 numel, rank, exclusive, reverse; i64 dims[8]; };\n"
                 "extern \"C\" __global__ void kn_CumSum(const %s *x, const %s *ax, %s *y, P p) {\n"
                 "  i64 a = (i64)ax[0];\n"
                 "  if (a < 0) a += p.rank;\n"
                 "  if (a < 0 || a >= p.rank) return;\n"
                 "  i64 outer = 1, inner = 1, n = p.dims[a];\n"
                 "  for (int d = 0; d < (int)p.rank; d++) {\n"
                 "    if (d < a) outer *= p.dims[d];\n"
                 "    else if (d > a) inner *= p.dims[d];\n"
                 "  }\n"
                 "  for (i64 s = kn_tid(); s < outer * inner && n > 0; s += kn_nthreads()) {\n"
                 "    i64 base = (s / inner) * n * inner + s %% inner;\n"
                 "    %s sum = 0;\n"
                 "    for (i64 j = 0; j < n; j++) {\n"
                 "      i64 at = base + (p.reverse ? n - 1 - j : j) * inner;\n"
                 "      %s v = %s(x[at]);\n"
                 "      if (!p.exclusive) sum += v;\n"
                 "      y[at] = %s%s%s(sum);\n"
                 "      if (p.exclusive) sum += v;\n"
                 "    }\n"
                 "  }\n"
                 "}\n",
                 HEAD, t, kn_cuda_type(ax->dtype), t, f ? "double" : "u64", f ? "double" : "u64",
                 f ? "kn_tod" : "(u64)", f ? "kn_st_<" : "(", t, f ? ">" : ")");
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch_source(e, &src, "kn_CumSum", args, 4, x->numel);
}

/* ---- MeanVarianceNormalization ---- */

/* y = (x - E[x]) / (sqrt(E[(x - E[x])^2]) + 1e-9) over `axes` (default
 * [0, 2, 3]; empty: all), one thread per group of the kept dims. */
kn_status kn_emit_MeanVarianceNormalization(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input or output");
    const char *t = kn_cuda_type(x->dtype);
    if (!t || tclass(x->dtype) != C_FLOAT)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    static const int64_t def_axes[] = {0, 2, 3};
    uint32_t n_axes;
    const int64_t *axes = kn_emit_attr_ints(e, "axes", &n_axes);
    if (!kn_node_attr(kn_emit_node(e), "axes")) {
        axes = def_axes;
        n_axes = 3;
    }
    bool reduced[8];
    for (int32_t d = 0; d < x->rank; d++)
        reduced[d] = n_axes == 0;
    for (uint32_t i = 0; i < n_axes; i++) {
        int64_t a = axes[i] < 0 ? axes[i] + x->rank : axes[i];
        if (a < 0 || a >= x->rank || reduced[a])
            return kn_emit_fail(e, KN_ERR_INVALID, "axis %lld is out of range or repeated", (long long)axes[i]);
        reduced[a] = true;
    }
    rmap m;
    rmap_init(&m, x, reduced);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s%s"
                 "extern \"C\" __global__ void kn_MeanVarianceNormalization(const %s *x, %s *y, P p) {\n"
                 "  for (i64 o = kn_tid(); o < p.n_out; o += kn_nthreads()) {\n"
                 "    i64 base = kn_base_(p, o);\n"
                 "    double mean = 0.0, sd = 0.0;\n"
                 "    { i64 idx[8] = {0}, off = 0;\n"
                 "      for (i64 j = 0; j < p.count; j++, kn_next_(p, idx, &off)) mean += kn_tod(x[base + off]); }\n"
                 "    mean /= (double)p.count;\n"
                 "    { i64 idx[8] = {0}, off = 0;\n"
                 "      for (i64 j = 0; j < p.count; j++, kn_next_(p, idx, &off)) {\n"
                 "        double v = kn_tod(x[base + off]) - mean;\n"
                 "        sd += v * v;\n"
                 "      } }\n"
                 "    sd = sqrt(sd / (double)p.count) + 1e-9;\n"
                 "    { i64 idx[8] = {0}, off = 0;\n"
                 "      for (i64 j = 0; j < p.count; j++, kn_next_(p, idx, &off))\n"
                 "        y[base + off] = kn_st_<%s>((kn_tod(x[base + off]) - mean) / sd); }\n"
                 "  }\n"
                 "}\n",
                 HEAD, RMAP, t, t, t);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof m, &m}};
    return kn_emit_launch_source(e, &src, "kn_MeanVarianceNormalization", args, 3, m.n_out);
}
