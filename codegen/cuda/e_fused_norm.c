/* CUDA emitter for RMSNormalization (made by passes/fuse_norm.c from the
 * decomposed RMSNorm of Llama/Qwen2 exports). One thread per row: the mean
 * square in double, then the row scaled, like the CPU reference
 * (runtime/cpu/k_fused_norm.c). */
#include "codegen/cuda/emit.h"

#include <string.h>

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

/* Rows of `cols` elements (the dims from axis on); the scale broadcasts
 * over the row shape through per-dim strides (0 where it broadcasts). */
typedef struct rms_params {
    int64_t rows, cols, tr;
    double eps;
    int64_t tdims[8], sst[8];
} rms_params;

kn_status kn_emit_RMSNormalization(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *scale = kn_emit_in(e, 1);
    if (!x || !scale)
        return kn_emit_fail(e, KN_ERR_INVALID, "needs inputs X and scale");
    if (!is_float(x->dtype) || !is_float(scale->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtypes %s, %s", kn_dtype_name(x->dtype),
                            kn_dtype_name(scale->dtype));
    int64_t axis = kn_emit_attr_int(e, "axis", -1);
    if (axis < 0)
        axis += x->rank;
    if (axis < 0 || axis >= x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range for rank %d", (int)x->rank);
    rms_params p;
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
    if (scale->rank > p.tr)
        return kn_emit_fail(e, KN_ERR_INVALID, "scale must broadcast to the normalised shape");
    int64_t s = 1;
    for (int64_t d = p.tr - 1; d >= 0; d--) {
        int64_t j = d - (p.tr - scale->rank);
        int64_t td = j >= 0 ? scale->dims[j] : 1;
        if (td != 1 && td != p.tdims[d])
            return kn_emit_fail(e, KN_ERR_INVALID, "scale must broadcast to the normalised shape");
        p.sst[d] = td == 1 ? 0 : s;
        s *= td;
    }
    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 rows, cols, tr; double eps; i64 tdims[8], sst[8]; };\n"
                 "extern \"C\" __global__ void kn_RMSNormalization(const %s *x, const %s *sc, %s *y, P p) {\n"
                 "  for (i64 r = kn_tid(); r < p.rows; r += kn_nthreads()) {\n"
                 "    const i64 base = r * p.cols;\n"
                 "    double q = 0.0;\n"
                 "    for (i64 k = 0; k < p.cols; k++) { double v = kn_tod(x[base + k]); q += v * v; }\n"
                 "    double inv = 1.0 / sqrt((p.cols ? q / (double)p.cols : 0.0) + p.eps);\n"
                 "    for (i64 k = 0; k < p.cols; k++) {\n"
                 "      i64 c = k, so = 0;\n"
                 "      for (int d = (int)p.tr - 1; d >= 0; d--) {\n"
                 "        so += (c %% p.tdims[d]) * p.sst[d];\n"
                 "        c /= p.tdims[d];\n"
                 "      }\n"
                 "      y[base + k] = kn_fromd<%s>(kn_tod(x[base + k]) * inv * kn_tod(sc[so]));\n"
                 "    }\n"
                 "  }\n"
                 "}\n",
                 t, kn_cuda_type(scale->dtype), t, t);
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL, 0}, {KN_ARG_IN, 1, 0, NULL, 0}, {KN_ARG_OUT, 0, 0, NULL, 0},
                           {KN_ARG_PARAMS, 0, sizeof p, &p, 0}};
    return kn_emit_launch_source(e, &src, "kn_RMSNormalization", args, 4, p.rows);
}
