/* CUDA emitter for kiln's fused rotary embedding (passes/fuse_rotary.c):
 * RotaryHalf(x, cos, sin) = x * cos + rotate_half(x) * sin, rotate_half
 * along x's last axis (size d, h = d / 2: -x[h + j] for j < d - h, else
 * x[j - (d - h)]), numpy broadcasting of the three inputs. One thread per
 * output element, computed in double and rounded once like the CPU
 * reference (runtime/cpu/k_fused_rotary.c). */
#include "codegen/cuda/emit.h"

#include <string.h>

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

/* The output's dims and each input's element strides along them (0 where
 * it broadcasts), rank <= 8; d: x's last dim. */
typedef struct rotary_params {
    int64_t n, rank, d;
    int64_t dims[8], sx[8], sc[8], ss[8];
} rotary_params;

static bool strides(const kn_emit_tensor *t, const rotary_params *p, int64_t *st)
{
    if (t->rank > p->rank)
        return false;
    int64_t s = 1;
    for (int64_t d = p->rank - 1; d >= 0; d--) {
        int64_t j = d - (p->rank - t->rank);
        int64_t td = j >= 0 ? t->dims[j] : 1;
        if (td != 1 && td != p->dims[d])
            return false;
        st[d] = td == 1 ? 0 : s;
        s *= td;
    }
    return true;
}

kn_status kn_emit_KILN_RotaryHalf(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *cs = kn_emit_in(e, 1), *sn = kn_emit_in(e, 2), *y = kn_emit_out(e, 0);
    if (!x || !cs || !sn || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "needs inputs x, cos and sin");
    if (!is_float(x->dtype) || cs->dtype != x->dtype || sn->dtype != x->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtypes %s, %s, %s", kn_dtype_name(x->dtype),
                            kn_dtype_name(cs->dtype), kn_dtype_name(sn->dtype));
    if (x->rank < 1)
        return kn_emit_fail(e, KN_ERR_INVALID, "x needs rank >= 1");
    if (y->rank > 8)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "rank %d (at most 8)", (int)y->rank);
    rotary_params p;
    memset(&p, 0, sizeof p);
    p.n = y->numel;
    p.rank = y->rank;
    p.d = x->dims[x->rank - 1];
    for (int32_t d = 0; d < y->rank; d++)
        p.dims[d] = y->dims[d];
    if (!strides(x, &p, p.sx) || !strides(cs, &p, p.sc) || !strides(sn, &p, p.ss))
        return kn_emit_fail(e, KN_ERR_INVALID, "x, cos and sin do not broadcast to the output");
    if (p.n == 0 || p.d == 0)
        p.d = 1;
    const char *t = kn_cuda_type(x->dtype);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, rank, d; i64 dims[8], sx[8], sc[8], ss[8]; };\n"
                 "extern \"C\" __global__ void kn_RotaryHalf(const %s *x, const %s *cs, const %s *sn, %s *y, P p) {\n"
                 "  i64 h = p.d / 2;\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 c = i, ox = 0, oc = 0, os = 0;\n"
                 "    for (int d = (int)p.rank - 1; d >= 0; d--) {\n"
                 "      i64 j = c %% p.dims[d];\n"
                 "      c /= p.dims[d];\n"
                 "      ox += j * p.sx[d];\n"
                 "      oc += j * p.sc[d];\n"
                 "      os += j * p.ss[d];\n"
                 "    }\n"
                 "    i64 j = ox %% p.d, base = ox - j;\n"
                 "    double r = j < p.d - h ? -kn_tod(x[base + h + j]) : kn_tod(x[base + j - (p.d - h)]);\n"
                 "    y[i] = kn_fromd<%s>(kn_tod(x[ox]) * kn_tod(cs[oc]) + r * kn_tod(sn[os]));\n"
                 "  }\n"
                 "}\n",
                 t, t, t, t, t);
    kn_emit_arg args[5] = {{KN_ARG_IN, 0, 0, NULL, 0}, {KN_ARG_IN, 1, 0, NULL, 0}, {KN_ARG_IN, 2, 0, NULL, 0},
                           {KN_ARG_OUT, 0, 0, NULL, 0}, {KN_ARG_PARAMS, 0, sizeof p, &p, 0}};
    return kn_emit_launch_source(e, &src, "kn_RotaryHalf", args, 5, p.n);
}
