/* CUDA emitters for kiln's fused activations (passes/fuse_act.c): Silu and
 * SwiGlu(gate, up) = Silu(gate) * up with numpy broadcasting (or one
 * packed input [..., gate | up], read with the same kernel). One thread
 * per output element, computed in double and rounded once like the CPU
 * reference (runtime/cpu/k_fused_act.c). */
#include "codegen/cuda/gemv_kernels.h"

#include <string.h>

static bool is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

typedef struct silu_params {
    int64_t n;
} silu_params;

kn_status kn_emit_KILN_Silu(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    if (!x)
        return kn_emit_fail(e, KN_ERR_INVALID, "missing input");
    if (!is_float(x->dtype))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(x->dtype));
    const char *t = kn_cuda_type(x->dtype);
    silu_params p = {x->numel};
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n; };\n"
                 "extern \"C\" __global__ void kn_Silu(const %s *x, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    double v = kn_tod(x[i]);\n"
                 "    y[i] = kn_fromd<%s>(v / (1.0 + exp(-v)));\n"
                 "  }\n"
                 "}\n",
                 t, t, t);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL, 0}, {KN_ARG_OUT, 0, 0, NULL, 0}, {KN_ARG_PARAMS, 0, sizeof p, &p, 0}};
    return kn_emit_launch_source(e, &src, "kn_Silu", args, 3, p.n);
}

typedef kn_swiglu_params swiglu_params;

void kn_swiglu_source(kn_sb *src, kn_dtype dt)
{
    const char *t = kn_cuda_type(dt);
    kn_sb_printf(src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, rank; i64 dims[8], sg[8], su[8]; };\n"
                 "extern \"C\" __global__ void " KN_SWIGLU_ENTRY "(const %s *g, const %s *u, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 c = i, og = 0, ou = 0;\n"
                 "    for (int d = (int)p.rank - 1; d >= 0; d--) {\n"
                 "      i64 j = c %% p.dims[d];\n"
                 "      c /= p.dims[d];\n"
                 "      og += j * p.sg[d];\n"
                 "      ou += j * p.su[d];\n"
                 "    }\n"
                 "    double v = kn_tod(g[og]);\n"
                 "    y[i] = kn_fromd<%s>(v / (1.0 + exp(-v)) * kn_tod(u[ou]));\n"
                 "  }\n"
                 "}\n",
                 t, t, t, t);
}

static bool strides(const kn_emit_tensor *t, const swiglu_params *p, int64_t *st)
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

kn_status kn_emit_KILN_SwiGlu(kn_emit *e)
{
    const kn_emit_tensor *gate = kn_emit_in(e, 0), *up = kn_emit_in(e, 1), *y = kn_emit_out(e, 0);
    /* packed: one input [..., gate | up], read through strides and an offset */
    bool packed = gate && !up && kn_emit_n_inputs(e) == 1;
    if (packed)
        up = gate;
    if (!gate || !up || !y)
        return kn_emit_fail(e, KN_ERR_INVALID, "needs inputs gate and up");
    if (!is_float(gate->dtype) || up->dtype != gate->dtype)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtypes %s, %s", kn_dtype_name(gate->dtype),
                            kn_dtype_name(up->dtype));
    if (y->rank > 8)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "rank %d (at most 8)", (int)y->rank);
    swiglu_params p;
    memset(&p, 0, sizeof p);
    p.n = y->numel;
    p.rank = y->rank;
    for (int32_t d = 0; d < y->rank; d++)
        p.dims[d] = y->dims[d];
    uint64_t up_off = 0;
    if (packed) {
        if (y->rank < 1 || gate->rank != y->rank || gate->dims[y->rank - 1] != 2 * y->dims[y->rank - 1])
            return kn_emit_fail(e, KN_ERR_INVALID, "packed input is not [..., 2N] for an output [..., N]");
        int64_t st = 1;
        for (int32_t d = y->rank - 1; d >= 0; d--) {
            p.sg[d] = p.su[d] = st;
            st *= gate->dims[d];
        }
        up_off = (uint64_t)y->dims[y->rank - 1] * (kn_dtype_bits(gate->dtype) / 8);
    } else if (!strides(gate, &p, p.sg) || !strides(up, &p, p.su)) {
        return kn_emit_fail(e, KN_ERR_INVALID, "gate and up do not broadcast to the output");
    }
    kn_sb src = {0};
    kn_swiglu_source(&src, gate->dtype);
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL, 0}, {KN_ARG_IN, packed ? 0 : 1, 0, NULL, up_off},
                           {KN_ARG_OUT, 0, 0, NULL, 0}, {KN_ARG_PARAMS, 0, sizeof p, &p, 0}};
    return kn_emit_launch_source(e, &src, KN_SWIGLU_ENTRY, args, 4, p.n);
}
