/* CUDA emitters for Softmax, LogSoftmax, Hardmax and the normalizations
 * (LayerNormalization, BatchNormalization for inference,
 * InstanceNormalization, GroupNormalization, LpNormalization). One thread
 * per slice or group computes its statistics in double with two passes
 * (mean, then the mean squared deviation), like the CPU reference, and
 * writes its elements; BatchNormalization is one thread per element;
 * LayerNormalization is one block per row (e_row_norm.c). */
#include "codegen/cuda/emit.h"
#include "codegen/cuda/norm_kernels.h"

#include <string.h>

/* Device helpers on top of kiln_cuda.h (a copy of e_elementwise.c's:
 * candidates for the prelude). Only float outputs here. */
static const char HEAD[] = "#include \"kiln_cuda.h\"\n";

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

/* Input i as a float tensor, or fails (unsupported dtype). */
static kn_status float_in(kn_emit *e, uint32_t i, bool required, const kn_emit_tensor **out)
{
    *out = kn_emit_in(e, i);
    if (!*out)
        return required ? kn_emit_fail(e, KN_ERR_INVALID, "missing input %u", i) : KN_OK;
    if (!is_float((*out)->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "input %u has dtype %s", i, kn_dtype_name((*out)->dtype));
    return KN_OK;
}

/* An optional per-channel parameter: absent, or n elements in rank <= 1. */
static kn_status param_in(kn_emit *e, uint32_t i, int64_t n, const kn_emit_tensor **out)
{
    KN_TRY(float_in(e, i, true, out));
    if ((*out)->numel != n || (*out)->rank > 1)
        return kn_emit_fail(e, KN_ERR_INVALID, "input %u must have shape (%lld)", i, (long long)n);
    return KN_OK;
}

/* ---- Softmax, LogSoftmax, Hardmax ---- */

typedef struct slice_params {
    int64_t outer, n, inner, p;
} slice_params;

/* The slices: before opset 13 the input is coerced to 2-D at `axis`
 * (default 1), each row one slice; from 13 on a slice runs along the one
 * axis (default -1). Element k of slice (o, i) is at (o * n + k) * inner + i. */
static kn_status sm_slices(kn_emit *e, const kn_emit_tensor *x, slice_params *sp)
{
    bool new_rule = kn_emit_opset(e) >= 13;
    int64_t a = kn_emit_attr_int(e, "axis", new_rule ? -1 : 1), r = x->rank;
    sp->outer = sp->n = sp->inner = 1;
    if (a < -r || a > r || (new_rule && a == r && r > 0))
        return kn_emit_fail(e, KN_ERR_INVALID, "axis %lld out of range for rank %d", (long long)a, (int)r);
    int64_t axis = a < 0 ? a + r : a;
    for (int32_t d = 0; d < x->rank; d++) {
        if (d < axis)
            sp->outer *= x->dims[d];
        else if (d == axis || !new_rule)
            sp->n *= x->dims[d];
        else
            sp->inner *= x->dims[d];
    }
    return KN_OK;
}

static kn_status softmax_like(kn_emit *e, const char *name, int kind)
{
    const kn_emit_tensor *x;
    KN_TRY(float_in(e, 0, true, &x));
    slice_params sp;
    KN_TRY(sm_slices(e, x, &sp));
    const char *t = kn_cuda_type(x->dtype);
    static const char *const write[] = {
        "kn_st_<T>(exp(kn_tod(x[at]) - mx) / sum)",
        "kn_st_<T>(kn_tod(x[at]) - mx - lsum)",
        "kn_st_<T>(k == arg ? 1.0 : 0.0)",
    };
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "typedef %s T;\n"
                 "struct P { i64 outer, n, inner, p; };\n"
                 "extern \"C\" __global__ void kn_%s(const T *x, T *y, P p) {\n"
                 "  for (i64 s = kn_tid(); s < p.outer * p.inner; s += kn_nthreads()) {\n"
                 "    i64 base = (s / p.inner) * p.n * p.inner + s %% p.inner;\n"
                 "    double mx = -kn_inf();\n"
                 "    i64 arg = 0;\n"
                 "    for (i64 k = 0; k < p.n; k++) { /* NaN wins */\n"
                 "      double v = kn_tod(x[base + k * p.inner]);\n"
                 "      if (mx == mx && (v > mx || v != v || k == 0)) { mx = v; arg = k; }\n"
                 "    }\n"
                 "    double sum = 0.0;\n"
                 "    if (%d != 2)\n"
                 "      for (i64 k = 0; k < p.n; k++) sum += exp(kn_tod(x[base + k * p.inner]) - mx);\n"
                 "    double lsum = log(sum);\n"
                 "    for (i64 k = 0; k < p.n; k++) {\n"
                 "      i64 at = base + k * p.inner;\n"
                 "      y[at] = %s;\n"
                 "    }\n"
                 "  }\n"
                 "}\n",
                 HEAD, t, name, kind, write[kind]);
    char entry[64];
    snprintf(entry, sizeof entry, "kn_%s", name);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof sp, &sp}};
    return kn_emit_launch_source(e, &src, entry, args, 3, sp.outer * sp.inner);
}

kn_status kn_emit_Softmax(kn_emit *e) { return softmax_like(e, "Softmax", 0); }
kn_status kn_emit_LogSoftmax(kn_emit *e) { return softmax_like(e, "LogSoftmax", 1); }
kn_status kn_emit_Hardmax(kn_emit *e) { return softmax_like(e, "Hardmax", 2); }

/* ---- LpNormalization ---- */

/* y = x / ||x||_p along axis (p = 1 or 2); a zero norm gives 0. */
kn_status kn_emit_LpNormalization(kn_emit *e)
{
    const kn_emit_tensor *x;
    KN_TRY(float_in(e, 0, true, &x));
    int64_t axis = kn_emit_attr_int(e, "axis", -1), pn = kn_emit_attr_int(e, "p", 2);
    if (axis < 0)
        axis += x->rank;
    if (axis < 0 || axis >= x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range for rank %d", (int)x->rank);
    if (pn != 1 && pn != 2)
        return kn_emit_fail(e, KN_ERR_INVALID, "p must be 1 or 2, got %lld", (long long)pn);
    slice_params sp = {1, x->dims[axis], 1, pn};
    for (int32_t d = 0; d < x->rank; d++) {
        if (d < axis)
            sp.outer *= x->dims[d];
        else if (d > axis)
            sp.inner *= x->dims[d];
    }
    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "typedef %s T;\n"
                 "struct P { i64 outer, n, inner, p; };\n"
                 "extern \"C\" __global__ void kn_LpNormalization(const T *x, T *y, P p) {\n"
                 "  for (i64 s = kn_tid(); s < p.outer * p.inner; s += kn_nthreads()) {\n"
                 "    i64 base = (s / p.inner) * p.n * p.inner + s %% p.inner;\n"
                 "    double sum = 0.0;\n"
                 "    for (i64 k = 0; k < p.n; k++) {\n"
                 "      double v = kn_tod(x[base + k * p.inner]);\n"
                 "      sum += p.p == 1 ? fabs(v) : v * v;\n"
                 "    }\n"
                 "    double norm = p.p == 1 ? sum : sqrt(sum);\n"
                 "    for (i64 k = 0; k < p.n; k++) {\n"
                 "      i64 at = base + k * p.inner;\n"
                 "      y[at] = kn_st_<T>(norm == 0.0 ? 0.0 : kn_tod(x[at]) / norm);\n"
                 "    }\n"
                 "  }\n"
                 "}\n",
                 HEAD, t);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof sp, &sp}};
    return kn_emit_launch_source(e, &src, "kn_LpNormalization", args, 3, sp.outer * sp.inner);
}

/* ---- LayerNormalization ---- */

/* One block per row, statistics in float32 (double for float64): the
 * kernel of e_row_norm.c (norm_kernels.h). */
kn_status kn_emit_LayerNormalization(kn_emit *e) { return kn_emit_row_norm(e, KN_ROW_LAYER); }

/* ---- BatchNormalization ---- */

typedef struct bn_params {
    int64_t n, C, D, spatial;
    double eps;
} bn_params;

/* Inference: y = scale * (x - mean) / sqrt(var + epsilon) + B per
 * channel (per channel and position with spatial=0 before opset 9).
 * Training mode computes batch statistics: unsupported here. */
kn_status kn_emit_BatchNormalization(kn_emit *e)
{
    const kn_emit_tensor *x, *sc, *b, *mean, *var;
    KN_TRY(float_in(e, 0, true, &x));
    if (x->rank < 2)
        return kn_emit_fail(e, KN_ERR_INVALID, "input must have rank >= 2 (N, C, ...)");
    int64_t opset = kn_emit_opset(e);
    bool training = opset >= 14 ? kn_emit_attr_int(e, "training_mode", 0) != 0
                                : kn_emit_out(e, 1) || kn_emit_out(e, 2) || kn_emit_out(e, 3) || kn_emit_out(e, 4);
    if (opset < 14 && kn_emit_attr_int(e, "is_test", 0) != 0)
        training = false;
    if (training)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "training mode (batch statistics)");
    bn_params p = {x->numel, x->dims[1], 1, opset >= 9 || kn_emit_attr_int(e, "spatial", 1) != 0,
                   kn_emit_attr_float(e, "epsilon", 1e-5f)};
    for (int32_t d = 2; d < x->rank; d++)
        p.D *= x->dims[d];
    int64_t np = p.spatial ? p.C : p.C * p.D;
    KN_TRY(param_in(e, 1, np, &sc));
    KN_TRY(param_in(e, 2, np, &b));
    KN_TRY(param_in(e, 3, np, &mean));
    KN_TRY(param_in(e, 4, np, &var));
    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 n, C, D, spatial; double eps; };\n"
                 "extern \"C\" __global__ void kn_BatchNormalization(const %s *x, const %s *sc, const %s *b,\n"
                 "    const %s *mean, const %s *var, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 ch = (i / p.D) %% p.C, k = p.spatial ? ch : ch * p.D + i %% p.D;\n"
                 "    double v = kn_tod(x[i]);\n"
                 "    y[i] = kn_fromd<%s>(kn_tod(sc[k]) * (v - kn_tod(mean[k])) / sqrt(kn_tod(var[k]) + p.eps)"
                 " + kn_tod(b[k]));\n"
                 "  }\n"
                 "}\n",
                 HEAD, t, kn_cuda_type(sc->dtype), kn_cuda_type(b->dtype), kn_cuda_type(mean->dtype),
                 kn_cuda_type(var->dtype), t, t);
    kn_emit_arg args[7] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL},  {KN_ARG_IN, 2, 0, NULL},
                           {KN_ARG_IN, 3, 0, NULL}, {KN_ARG_IN, 4, 0, NULL},  {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch_source(e, &src, "kn_BatchNormalization", args, 7, x->numel);
}

/* ---- InstanceNormalization, GroupNormalization ---- */

typedef struct gn_params {
    int64_t groups, G, cg, D, per_group;
    double eps;
} gn_params;

/* Normalises each of N × G groups of (C / G) × D consecutive elements,
 * then applies scale and bias per channel (per group: GroupNormalization
 * before opset 21). */
static kn_status group_norm(kn_emit *e, const kn_emit_tensor *x, int64_t G, bool per_group, double eps)
{
    const kn_emit_tensor *sc, *b;
    int64_t C = x->dims[1];
    KN_TRY(param_in(e, 1, per_group ? G : C, &sc));
    KN_TRY(param_in(e, 2, per_group ? G : C, &b));
    gn_params p = {x->dims[0] * G, G, G ? C / G : 0, 1, per_group, eps};
    for (int32_t d = 2; d < x->rank; d++)
        p.D *= x->dims[d];
    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "%s"
                 "struct P { i64 groups, G, cg, D, per_group; double eps; };\n"
                 "extern \"C\" __global__ void kn_GroupNorm(const %s *x, const %s *sc, const %s *b, %s *y, P p) {\n"
                 "  const i64 len = p.cg * p.D;\n"
                 "  for (i64 gi = kn_tid(); gi < p.groups; gi += kn_nthreads()) {\n"
                 "    const i64 base = gi * len, g = gi %% p.G;\n"
                 "    double s = 0.0, q = 0.0;\n"
                 "    for (i64 k = 0; k < len; k++) s += kn_tod(x[base + k]);\n"
                 "    double m = len ? s / (double)len : 0.0;\n"
                 "    for (i64 k = 0; k < len; k++) { double v = kn_tod(x[base + k]) - m; q += v * v; }\n"
                 "    double var = len ? q / (double)len : 0.0;\n"
                 "    double inv = 1.0 / sqrt(var + p.eps);\n"
                 "    for (i64 k = 0; k < len; k++) {\n"
                 "      i64 c = p.per_group ? g : g * p.cg + k / p.D;\n"
                 "      double r = (kn_tod(x[base + k]) - m) * inv;\n"
                 "      y[base + k] = kn_fromd<%s>(r * kn_tod(sc[c]) + kn_tod(b[c]));\n"
                 "    }\n"
                 "  }\n"
                 "}\n",
                 HEAD, t, kn_cuda_type(sc->dtype), kn_cuda_type(b->dtype), t, t);
    kn_emit_arg args[5] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_IN, 2, 0, NULL},
                           {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch_source(e, &src, "kn_GroupNorm", args, 5, p.groups);
}

kn_status kn_emit_InstanceNormalization(kn_emit *e)
{
    const kn_emit_tensor *x;
    KN_TRY(float_in(e, 0, true, &x));
    if (x->rank < 2)
        return kn_emit_fail(e, KN_ERR_INVALID, "input must have rank >= 2 (N, C, ...)");
    return group_norm(e, x, x->dims[1], false, kn_emit_attr_float(e, "epsilon", 1e-5f));
}

kn_status kn_emit_GroupNormalization(kn_emit *e)
{
    const kn_emit_tensor *x;
    KN_TRY(float_in(e, 0, true, &x));
    if (x->rank < 2)
        return kn_emit_fail(e, KN_ERR_INVALID, "input must have rank >= 2 (N, C, ...)");
    int64_t G = kn_emit_attr_int(e, "num_groups", 0), C = x->dims[1];
    if (G <= 0 || C % G != 0)
        return kn_emit_fail(e, KN_ERR_INVALID, "num_groups %lld does not divide the %lld channels", (long long)G,
                            (long long)C);
    return group_norm(e, x, G, kn_emit_opset(e) < 21, kn_emit_attr_float(e, "epsilon", 1e-5f));
}
