/* CUDA emitters that pad and resample: Pad (constant, reflect, edge,
 * wrap) and Resize / Upsample (nearest, linear, cubic; every coordinate
 * transformation mode; antialias; tf_crop_and_resize). Shapes, pads,
 * scales and roi are compile-time constants here and travel as kernel
 * parameters; the per-output sampling follows runtime/cpu/k_shape_resize.c
 * term by term, so the device computes the same taps and weights. */
#include "codegen/cuda/emit.h"
#include "runtime/cpu/util.h"
#include "runtime/plan_format.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *word_type(kn_dtype t)
{
    if (t == KN_STRING)
        return NULL;
    switch (kn_dtype_bits(t)) {
    case 8: return "unsigned char";
    case 16: return "unsigned short";
    case 32: return "unsigned int";
    case 64: return "unsigned long long";
    default: return NULL;
    }
}

static kn_status launch_src(kn_emit *e, kn_sb *src, const char *entry, int64_t n, const kn_emit_arg *args,
                            uint32_t n_args)
{
    uint32_t k;
    kn_status s = kn_emit_kernel(e, kn_sb_str(src), entry, &k);
    kn_sb_free(src);
    KN_TRY(s);
    return kn_emit_launch(e, k, kn_emit_grid(n), (kn_dim3){256, 1, 1}, 0, args, n_args);
}

static void strides_of(int32_t rank, const int64_t *dims, int64_t *st)
{
    int64_t s = 1;
    for (int32_t i = rank - 1; i >= 0; i--) {
        st[i] = s;
        s *= dims[i];
    }
}

/* ---- Pad ---- */

typedef struct pad_params {
    int64_t n, rank, mode; /* 0 constant, 1 reflect, 2 edge, 3 wrap */
    uint64_t kbits;        /* the constant's bits when no constant_value input */
    int64_t odims[KN_CU_MAX_RANK], xdims[KN_CU_MAX_RANK], xst[KN_CU_MAX_RANK], pb[KN_CU_MAX_RANK];
} pad_params;

kn_status kn_emit_Pad(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    const char *t = x ? word_type(x->dtype) : NULL;
    if (!t || !y)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", x ? kn_dtype_name(x->dtype) : "?");
    int32_t r = x->rank;
    int64_t opset = kn_emit_opset(e);
    static const char *const modes[] = {"constant", "reflect", "edge", "wrap"};
    const char *ms = kn_emit_attr_str(e, "mode", "constant");
    int mode = -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(ms, modes[i]) == 0)
            mode = i;
    if (mode < 0)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "mode '%s'", ms);
    pad_params p;
    memset(&p, 0, sizeof p);
    p.n = y->numel;
    p.rank = r;
    p.mode = mode;
    int64_t pads[2 * KN_CU_MAX_RANK], axes[KN_CU_MAX_RANK], np = 0, na = r;
    bool has_axes = false;
    if (opset < 11) {
        uint32_t n;
        const int64_t *a = kn_emit_attr_ints(e, opset < 2 ? "paddings" : "pads", &n);
        if (!a || n > 2 * KN_CU_MAX_RANK)
            return kn_emit_fail(e, KN_ERR_INVALID, "bad pads attribute");
        memcpy(pads, a, n * sizeof *pads);
        np = n;
        float v = kn_emit_attr_float(e, "value", 0.0f);
        if (kn_cuda_type(x->dtype))
            kn_set_f64(x->dtype, &p.kbits, 0, v);
    } else {
        const kn_emit_tensor *tp = kn_emit_in(e, 1), *ta = opset >= 18 ? kn_emit_in(e, 3) : NULL;
        if (!tp || !tp->host_data || tp->numel > 2 * KN_CU_MAX_RANK)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "pads must be a constant");
        np = tp->numel;
        for (int64_t i = 0; i < np; i++)
            pads[i] = kn_get_i64(tp->dtype, tp->host_data, i);
        if (ta) {
            if (!ta->host_data || ta->numel > KN_CU_MAX_RANK)
                return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "axes must be a constant");
            na = ta->numel;
            for (int64_t i = 0; i < na; i++)
                axes[i] = kn_get_i64(ta->dtype, ta->host_data, i);
            has_axes = true;
        }
    }
    if (np != 2 * na)
        return kn_emit_fail(e, KN_ERR_INVALID, "pads has %lld entries for %lld axes", (long long)np, (long long)na);
    for (int64_t k = 0; k < na; k++) {
        int64_t a = has_axes ? (axes[k] < 0 ? axes[k] + r : axes[k]) : k;
        if (a < 0 || a >= r)
            return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range");
        p.pb[a] = pads[k];
    }
    for (int32_t a = 0; a < r; a++) {
        p.odims[a] = y->dims[a];
        p.xdims[a] = x->dims[a];
    }
    strides_of(r, x->dims, p.xst);
    /* the constant: input 2 read on the device when given (it may be
     * run-time data), else the attribute's value baked into kbits */
    const kn_emit_tensor *cv = opset >= 11 ? kn_emit_in(e, 2) : NULL;
    if (cv && cv->numel == 0)
        cv = NULL;
    char kexpr[64];
    snprintf(kexpr, sizeof kexpr, "(%s)p.kbits", t);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, rank, mode; u64 kbits; i64 odims[8], xdims[8], xst[8], pb[8]; };\n"
                 "extern \"C\" __global__ void pad(const %s *x, %s%s%s%s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 r = i, off = 0;\n"
                 "    bool in = true;\n"
                 "    for (int k = (int)p.rank - 1; k >= 0; k--) {\n"
                 "      i64 c = r %% p.odims[k] - p.pb[k], d = p.xdims[k];\n"
                 "      r /= p.odims[k];\n"
                 "      if (c < 0 || c >= d) {\n"
                 "        if (p.mode == 0) { in = false; break; }\n"
                 "        else if (p.mode == 2) c = c < 0 ? 0 : d - 1;\n"
                 "        else if (p.mode == 3) c = (c %% d + d) %% d;\n"
                 "        else if (d == 1) c = 0;\n"
                 "        else { i64 q = 2 * (d - 1), m = (c %% q + q) %% q; c = m < d ? m : q - m; }\n"
                 "      }\n"
                 "      off += c * p.xst[k];\n"
                 "    }\n"
                 "    y[i] = in ? x[off] : %s;\n"
                 "  }\n"
                 "}\n",
                 t, cv ? "const " : "", cv ? t : "", cv ? " *cv, " : "", t, cv ? "cv[0]" : kexpr);
    /* kernel signature: (x, [cv,] y, P) */
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 2, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    if (!cv)
        args[1] = args[2], args[2] = args[3];
    return launch_src(e, &src, "pad", p.n, args, cv ? 4 : 3);
}

/* ---- Resize / Upsample ---- */

/* Per-axis sampling as in the CPU kernel: source coordinate from the
 * coordinate transformation mode, then taps left of it (nearest: one;
 * linear: 2; cubic: 4; antialias: wider, weights normalised), indices
 * clamped to the input. The device loops over every combination of taps
 * of the axes and accumulates in double (the CPU resizes one axis at a
 * time in double: the same sum in another order). */
typedef struct rs_params {
    int64_t n, rank, mode, ctm, nearest, excl, anti;
    double cubic_a, extrap;
    int64_t in[KN_CU_MAX_RANK], out[KN_CU_MAX_RANK], ident[KN_CU_MAX_RANK], xst[KN_CU_MAX_RANK];
    double scale[KN_CU_MAX_RANK], r0[KN_CU_MAX_RANK], r1[KN_CU_MAX_RANK];
} rs_params;

enum { RS_NEAREST, RS_LINEAR, RS_CUBIC };
enum { CTM_HALF_PIXEL, CTM_HALF_PIXEL_SYMMETRIC, CTM_PYTORCH_HALF_PIXEL, CTM_ALIGN_CORNERS, CTM_ASYMMETRIC,
       CTM_TF_CROP_AND_RESIZE, CTM_TF_HALF_PIXEL_FOR_NN };

static const char rs_device_src[] =
    "struct P { i64 n, rank, mode, ctm, nearest, excl, anti; double cubic_a, extrap;\n"
    "  i64 in[8], out[8], ident[8], xst[8]; double scale[8], r0[8], r1[8]; };\n"
    "__device__ double rs_coord(const P &p, int a, double o, bool *ex) {\n"
    "  double scale = p.scale[a], in = (double)p.in[a], out_w = scale * in, x, r0 = p.r0[a], r1 = p.r1[a];\n"
    "  *ex = false;\n"
    "  switch (p.ctm) {\n"
    "  case 3: x = out_w == 1 ? 0 : o * (in - 1) / (out_w - 1); break;\n"
    "  case 4: x = o / scale; break;\n"
    "  case 5:\n"
    "    x = out_w == 1 ? (r1 - r0) * (in - 1) / 2 : o * (r1 - r0) * (in - 1) / (out_w - 1);\n"
    "    x += r0 * (in - 1);\n"
    "    *ex = x < 0 || x > in - 1;\n"
    "    break;\n"
    "  case 6: x = (o + 0.5) / scale; break;\n"
    "  case 2: x = out_w == 1 ? -0.5 : (o + 0.5) / scale - 0.5; break;\n"
    "  case 1: { double adj = (double)p.out[a] / out_w, c = in / 2; x = c * (1 - adj) + (o + 0.5) / scale - 0.5; break; }\n"
    "  default: x = (o + 0.5) / scale - 0.5; break;\n"
    "  }\n"
    "  return x;\n"
    "}\n"
    "__device__ double rs_cubic(double x, double a) {\n"
    "  x = fabs(x);\n"
    "  if (x <= 1) return ((a + 2) * x - (a + 3)) * x * x + 1;\n"
    "  if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;\n"
    "  return 0;\n"
    "}\n"
    "/* raw weight of tap k (offset start + k from base) */\n"
    "__device__ double rs_raw(const P &p, i64 start, i64 k, double ratio, double s) {\n"
    "  double d = (double)(start + k) - ratio;\n"
    "  if (p.mode == 1) return p.anti ? fmax(0.0, 1 - fabs(d * s)) : (k == 0 ? 1 - ratio : ratio);\n"
    "  return rs_cubic(p.anti ? d * s : d, p.cubic_a);\n"
    "}\n";

/* The device expression turning double v into dtype t as the CPU's
 * store_sat: integers round half to even and saturate. */
static void rs_store_fn(kn_sb *s, kn_dtype t, const char *ct)
{
    kn_sb_printf(s, "__device__ %s rs_store(double v) {\n", ct);
    if (kn_dt_is_int(t)) {
        unsigned b = kn_dtype_bits(t);
        bool sg = kn_dt_is_signed(t);
        double lo = sg ? -ldexp(1.0, (int)b - 1) : 0, hi = sg ? ldexp(1.0, (int)b - 1) - 1 : ldexp(1.0, (int)b) - 1;
        char loi[64], hii[64];
        if (b == 64) {
            snprintf(loi, sizeof loi, "%s", sg ? "(-9223372036854775807LL - 1)" : "0ULL");
            snprintf(hii, sizeof hii, "%s", sg ? "9223372036854775807LL" : "18446744073709551615ULL");
        } else {
            snprintf(loi, sizeof loi, "%.0fLL", lo);
            snprintf(hii, sizeof hii, "%.0fLL", hi);
        }
        kn_sb_printf(s,
                     "  if (isnan(v)) return (%s)0;\n"
                     "  v = rint(v);\n"
                     "  return v <= %.17g ? (%s)(%s) : v >= %.17g ? (%s)(%s) : (%s)v;\n",
                     ct, lo, ct, loi, hi, ct, hii, ct);
    } else {
        kn_sb_printf(s, "  return kn_fromd<%s>(v);\n", ct);
    }
    kn_sb_printf(s, "}\n");
}

/* Scales of a constant float input into sc (rank entries at axes). */
static kn_status const_floats(kn_emit *e, const kn_emit_tensor *t, const char *what, double *out, int64_t max,
                              int64_t *n)
{
    *n = 0;
    if (!t || t->numel == 0)
        return KN_OK;
    if (!t->host_data || t->numel > max)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s must be a constant", what);
    for (int64_t i = 0; i < t->numel; i++)
        out[i] = kn_get_f64(t->dtype, t->host_data, i);
    *n = t->numel;
    return KN_OK;
}

static kn_status pick(kn_emit *e, const char *attr, const char *val, const char *const *names, int n, int64_t *out)
{
    for (int i = 0; i < n; i++)
        if (strcmp(val, names[i]) == 0) {
            *out = i;
            return KN_OK;
        }
    return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s '%s'", attr, val);
}

/* Emits the resampling of input 0 into output 0 with per-axis scales sc
 * and roi (2*rank entries). */
static kn_status emit_resize(kn_emit *e, rs_params *p, const double *sc, const double *roi)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    const char *ct = x ? kn_cuda_type(x->dtype) : NULL;
    if (!ct || !y || y->rank != x->rank)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", x ? kn_dtype_name(x->dtype) : "?");
    int32_t r = x->rank;
    p->n = y->numel;
    p->rank = r;
    strides_of(r, x->dims, p->xst);
    for (int32_t a = 0; a < r; a++) {
        p->in[a] = x->dims[a];
        p->out[a] = y->dims[a];
        p->scale[a] = sc[a];
        p->r0[a] = roi[a];
        p->r1[a] = roi[r + a];
        bool trivial = p->ctm != CTM_TF_CROP_AND_RESIZE || (fabs(roi[a]) <= 1e-9 && fabs(roi[r + a] - 1) <= 1e-9);
        p->ident[a] = fabs(sc[a] - 1) <= 1e-9 * fmax(1, fabs(sc[a])) && x->dims[a] == y->dims[a] && trivial;
        if (p->anti && !p->ident[a] && p->mode != RS_NEAREST && sc[a] < 1 && 2.0 / sc[a] > 1e6)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "downscale factor too large for antialiasing");
    }
    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\n%s", rs_device_src);
    rs_store_fn(&src, x->dtype, ct);
    kn_sb_printf(&src,
                 "extern \"C\" __global__ void resize(const %s *x, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 rem = i, oc[8], base[8], start[8], nt[8];\n"
                 "    double ratio[8], s[8], norm[8];\n"
                 "    for (int a = (int)p.rank - 1; a >= 0; a--) { oc[a] = rem %% p.out[a]; rem /= p.out[a]; }\n"
                 "    bool extra = false;\n"
                 "    for (int a = 0; a < (int)p.rank; a++) {\n"
                 "      nt[a] = 1; base[a] = oc[a]; start[a] = 0; ratio[a] = 0; s[a] = 1; norm[a] = 1;\n"
                 "      if (p.ident[a]) continue;\n"
                 "      bool ex;\n"
                 "      double xc = rs_coord(p, a, (double)oc[a], &ex);\n"
                 "      if (!isfinite(xc) || fabs(xc) > 4e18) { ex = true; xc = 0; }\n"
                 "      extra = extra || ex;\n"
                 "      double fl = floor(xc);\n"
                 "      base[a] = (i64)fl - (fl == xc);\n"
                 "      ratio[a] = xc - (double)base[a];\n"
                 "      if (p.mode == 0) {\n"
                 "        bool up = ratio[a] == 1 ? true : p.nearest == 0 ? ratio[a] > 0.5 : p.nearest == 1 ? ratio[a] >= 0.5 : p.nearest == 3;\n"
                 "        base[a] += up ? 1 : 0;\n"
                 "        base[a] = base[a] < 0 ? 0 : base[a] >= p.in[a] ? p.in[a] - 1 : base[a];\n"
                 "        continue;\n"
                 "      }\n"
                 "      s[a] = p.scale[a] < 1 ? p.scale[a] : 1;\n"
                 "      nt[a] = 2;\n"
                 "      if (p.mode == 2) {\n"
                 "        nt[a] = 4; start[a] = -1;\n"
                 "        if (p.anti) { start[a] = (i64)floor(-2 / s[a]) + 1; nt[a] = 2 - 2 * start[a]; }\n"
                 "      } else if (p.anti) { start[a] = (i64)floor(-1 / s[a]) + 1; nt[a] = 2 - 2 * start[a]; }\n"
                 "      double s1 = 1, s2 = 1;\n"
                 "      if (p.anti) {\n"
                 "        double sum = 0;\n"
                 "        for (i64 k = 0; k < nt[a]; k++) sum += rs_raw(p, start[a], k, ratio[a], s[a]);\n"
                 "        if (sum != 0) s1 = sum;\n"
                 "      }\n"
                 "      if (p.excl) {\n"
                 "        double sum = 0;\n"
                 "        for (i64 k = 0; k < nt[a]; k++) {\n"
                 "          i64 j = base[a] + start[a] + k;\n"
                 "          if (j >= 0 && j < p.in[a]) sum += rs_raw(p, start[a], k, ratio[a], s[a]) / s1;\n"
                 "        }\n"
                 "        if (sum != 0) s2 = sum;\n"
                 "      }\n"
                 "      norm[a] = s1 * s2;\n"
                 "    }\n"
                 "    if (extra) { y[i] = rs_store(p.extrap); continue; }\n"
                 "    if (p.mode == 0) {\n"
                 "      i64 off = 0;\n"
                 "      for (int a = 0; a < (int)p.rank; a++) off += base[a] * p.xst[a];\n"
                 "      y[i] = x[off];\n"
                 "      continue;\n"
                 "    }\n"
                 "    i64 combos = 1;\n"
                 "    for (int a = 0; a < (int)p.rank; a++) combos *= nt[a];\n"
                 "    double acc = 0;\n"
                 "    for (i64 t = 0; t < combos; t++) {\n"
                 "      i64 rr = t, off = 0;\n"
                 "      double w = 1;\n"
                 "      for (int a = (int)p.rank - 1; a >= 0; a--) {\n"
                 "        i64 k = rr %% nt[a];\n"
                 "        rr /= nt[a];\n"
                 "        if (p.ident[a]) { off += base[a] * p.xst[a]; continue; }\n"
                 "        i64 j = base[a] + start[a] + k;\n"
                 "        double wk = rs_raw(p, start[a], k, ratio[a], s[a]) / norm[a];\n"
                 "        if (p.excl && (j < 0 || j >= p.in[a])) wk = 0;\n"
                 "        j = j < 0 ? 0 : j >= p.in[a] ? p.in[a] - 1 : j;\n"
                 "        w *= wk;\n"
                 "        off += j * p.xst[a];\n"
                 "      }\n"
                 "      if (w != 0) acc += w * kn_tod(x[off]);\n"
                 "    }\n"
                 "    y[i] = rs_store(acc);\n"
                 "  }\n"
                 "}\n",
                 ct, ct);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof *p, p}};
    return launch_src(e, &src, "resize", p->n, args, 3);
}

kn_status kn_emit_Resize(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y || x->rank > KN_CU_MAX_RANK)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "missing input or output");
    int64_t opset = kn_emit_opset(e);
    int32_t r = x->rank;
    rs_params p;
    memset(&p, 0, sizeof p);
    static const char *const modes[] = {"nearest", "linear", "cubic"};
    KN_TRY(pick(e, "mode", kn_emit_attr_str(e, "mode", "nearest"), modes, 3, &p.mode));
    static const char *const ctms[] = {"half_pixel",   "half_pixel_symmetric", "pytorch_half_pixel",
                                       "align_corners", "asymmetric",          "tf_crop_and_resize",
                                       "tf_half_pixel_for_nn"};
    KN_TRY(pick(e, "coordinate_transformation_mode",
                kn_emit_attr_str(e, "coordinate_transformation_mode", opset < 11 ? "asymmetric" : "half_pixel"), ctms,
                7, &p.ctm));
    static const char *const nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    KN_TRY(pick(e, "nearest_mode", kn_emit_attr_str(e, "nearest_mode", opset < 11 ? "floor" : "round_prefer_floor"),
                nms, 4, &p.nearest));
    if (opset < 11) { /* Resize-10 behaves as Upsample */
        p.ctm = CTM_ASYMMETRIC;
        p.nearest = 2;
    }
    p.cubic_a = kn_emit_attr_float(e, "cubic_coeff_a", -0.75f);
    p.excl = kn_emit_attr_int(e, "exclude_outside", 0) != 0;
    p.anti = kn_emit_attr_int(e, "antialias", 0) != 0 && p.mode != RS_NEAREST;
    p.extrap = kn_emit_attr_float(e, "extrapolation_value", 0.0f);
    if (p.mode != RS_NEAREST && !kn_dt_is_float(x->dtype) && !kn_dt_is_int(x->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s input in this mode", kn_dtype_name(x->dtype));

    double roi_in[2 * KN_CU_MAX_RANK], sc_in[KN_CU_MAX_RANK];
    int64_t n_roi = 0, n_sc = 0, n_sz = 0, sz_in[KN_CU_MAX_RANK];
    if (opset < 11) {
        KN_TRY(const_floats(e, kn_emit_in(e, 1), "scales", sc_in, KN_CU_MAX_RANK, &n_sc));
    } else {
        KN_TRY(const_floats(e, kn_emit_in(e, 1), "roi", roi_in, 2 * KN_CU_MAX_RANK, &n_roi));
        KN_TRY(const_floats(e, kn_emit_in(e, 2), "scales", sc_in, KN_CU_MAX_RANK, &n_sc));
        const kn_emit_tensor *ts = kn_emit_in(e, 3);
        if (ts && ts->numel > 0) {
            if (!ts->host_data || ts->numel > KN_CU_MAX_RANK)
                return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "sizes must be a constant");
            for (int64_t i = 0; i < ts->numel; i++)
                sz_in[i] = kn_get_i64(ts->dtype, ts->host_data, i);
            n_sz = ts->numel;
        }
    }
    if ((n_sc > 0) == (n_sz > 0))
        return kn_emit_fail(e, KN_ERR_INVALID, "exactly one of scales and sizes must be given");
    int32_t axes[KN_CU_MAX_RANK], na = r;
    uint32_t nattr = 0;
    const int64_t *aattr = opset >= 18 ? kn_emit_attr_ints(e, "axes", &nattr) : NULL;
    if (aattr) {
        if (nattr > (uint32_t)r)
            return kn_emit_fail(e, KN_ERR_INVALID, "%u axes for rank %d", nattr, (int)r);
        na = (int32_t)nattr;
        for (int32_t i = 0; i < na; i++) {
            axes[i] = (int32_t)(aattr[i] < 0 ? aattr[i] + r : aattr[i]);
            if (axes[i] < 0 || axes[i] >= r)
                return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range");
        }
    } else {
        for (int32_t i = 0; i < r; i++)
            axes[i] = i;
    }
    if ((n_sc && n_sc != na) || (n_sz && n_sz != na))
        return kn_emit_fail(e, KN_ERR_INVALID, "scales or sizes do not match the axes");
    bool need_roi = p.ctm == CTM_TF_CROP_AND_RESIZE;
    if (need_roi && n_roi && n_roi != 2 * na)
        return kn_emit_fail(e, KN_ERR_INVALID, "roi has %lld entries for %d axes", (long long)n_roi, (int)na);
    double sc[KN_CU_MAX_RANK], roi[2 * KN_CU_MAX_RANK];
    for (int32_t a = 0; a < r; a++) {
        sc[a] = 1;
        roi[a] = 0;
        roi[r + a] = 1;
    }
    for (int32_t i = 0; i < na; i++) {
        if (n_sc)
            sc[axes[i]] = sc_in[i];
        if (n_sz)
            sc[axes[i]] = x->dims[axes[i]] ? (double)sz_in[i] / (double)x->dims[axes[i]] : 1;
        if (need_roi && n_roi) {
            roi[axes[i]] = roi_in[i];
            roi[r + axes[i]] = roi_in[na + i];
        }
    }
    const char *pol = kn_emit_attr_str(e, "keep_aspect_ratio_policy", "stretch");
    if (n_sz && opset >= 18 && strcmp(pol, "stretch") != 0) {
        bool larger = strcmp(pol, "not_smaller") == 0;
        if (!larger && strcmp(pol, "not_larger") != 0)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "keep_aspect_ratio_policy '%s'", pol);
        double s = sc[axes[0]];
        for (int32_t i = 1; i < na; i++)
            s = larger ? fmax(s, sc[axes[i]]) : fmin(s, sc[axes[i]]);
        for (int32_t i = 0; i < na; i++)
            sc[axes[i]] = s;
    }
    return emit_resize(e, &p, sc, roi);
}

kn_status kn_emit_Upsample(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    if (!x)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "missing input");
    rs_params p;
    memset(&p, 0, sizeof p);
    p.ctm = CTM_ASYMMETRIC;
    p.nearest = 2;
    p.cubic_a = -0.75;
    const char *m = kn_emit_attr_str(e, "mode", "nearest");
    if (strcmp(m, "linear") == 0 || strcmp(m, "bilinear") == 0)
        p.mode = RS_LINEAR;
    else if (strcmp(m, "nearest") != 0)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "mode '%s'", m);
    double sc[KN_CU_MAX_RANK], roi[2 * KN_CU_MAX_RANK];
    int64_t n = 0;
    if (kn_emit_opset(e) >= 9) {
        KN_TRY(const_floats(e, kn_emit_in(e, 1), "scales", sc, KN_CU_MAX_RANK, &n));
    } else {
        const kn_attr *a = kn_node_attr(kn_emit_node(e), "scales");
        if (a && a->kind == KN_ATTR_FLOATS && a->n <= KN_CU_MAX_RANK) {
            n = a->n;
            for (uint32_t i = 0; i < a->n; i++)
                sc[i] = a->u.floats[i];
        }
    }
    if (n != x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "scales has %lld entries for rank %d", (long long)n, (int)x->rank);
    for (int32_t a = 0; a < x->rank; a++) {
        roi[a] = 0;
        roi[x->rank + a] = 1;
    }
    if (p.mode != RS_NEAREST && !kn_dt_is_float(x->dtype) && !kn_dt_is_int(x->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s input in this mode", kn_dtype_name(x->dtype));
    return emit_resize(e, &p, sc, roi);
}
