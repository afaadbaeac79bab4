/* CUDA emitters for elementwise ops. Kernels are specialised on dtypes and
 * the op, never on shapes: sizes arrive as parameters, so one compiled
 * kernel serves every node of the same kind. */
#include "codegen/cuda/emit.h"

#include <string.h>

/* Parameters of the unary kernels: element count. */
typedef struct unary_params {
    int64_t n;
} unary_params;

static kn_dim3 grid_for(int64_t n)
{
    int64_t blocks = (n + 255) / 256;
    if (blocks < 1)
        blocks = 1;
    if (blocks > 65535 * 16)
        blocks = 65535 * 16; /* grid-stride loop covers the rest */
    return (kn_dim3){(uint32_t)blocks, 1, 1};
}

kn_status kn_emit_Relu(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    const char *t = x ? kn_cuda_type(x->dtype) : NULL;
    if (!t || !y)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", x ? kn_dtype_name(x->dtype) : "?");
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n; };\n"
                 "extern \"C\" __global__ void relu(const %s *x, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    double v = kn_tod(x[i]);\n"
                 "    y[i] = kn_fromd<%s>(v > 0.0 ? v : 0.0);\n"
                 "  }\n"
                 "}\n",
                 t, t, t);
    uint32_t k;
    kn_status s = kn_emit_kernel(e, kn_sb_str(&src), "relu", &k);
    kn_sb_free(&src);
    KN_TRY(s);
    unary_params p = {x->numel};
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return kn_emit_launch(e, k, grid_for(x->numel), (kn_dim3){256, 1, 1}, 0, args, 3);
}
