/* kiln's fused activations (domain "kiln", passes/fuse_act.c):
 * Silu(x) = x * sigmoid(x), and SwiGlu(gate, up) = Silu(gate) * up with
 * numpy broadcasting of gate and up (as the Mul it replaces); SwiGlu with
 * one input X [..., 2N] reads gate = X[..., :N] and up = X[..., N:] (the
 * packed result of one GEMM over the concatenated gate and up weights,
 * passes/fuse_gemm.c). Float types; computed in double, rounded once. */
#include "runtime/cpu/util.h"

#include <math.h>

static double silu(double x) { return x / (1.0 + exp(-x)); }

kn_status kn_ref_KILN_Silu(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x || !kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs a float input X");
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    for (int64_t i = 0; i < x->numel; i++)
        kn_set_f64(y->dtype, y->data, i, silu(kn_get_f64(x->dtype, x->data, i)));
    return KN_OK;
}

/* SwiGlu(X) with X = [..., gate | up]. */
static kn_status swiglu_packed(kn_kctx *c, const kn_rt_tensor *x)
{
    if (!kn_dt_is_float(x->dtype) || x->rank < 1 || x->dims[x->rank - 1] % 2 != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "packed input must be float with an even last dimension");
    int64_t dims[KN_RT_MAX_RANK];
    for (int32_t d = 0; d < x->rank; d++)
        dims[d] = x->dims[d];
    int64_t n = dims[x->rank - 1] / 2;
    dims[x->rank - 1] = n;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, dims, &y));
    kn_dtype t = x->dtype;
    for (int64_t o = 0; o < y->numel; o++) {
        int64_t row = o / n, j = o % n;
        double g = kn_get_f64(t, x->data, row * 2 * n + j), u = kn_get_f64(t, x->data, row * 2 * n + n + j);
        kn_set_f64(t, y->data, o, silu(g) * u);
    }
    return KN_OK;
}

kn_status kn_ref_KILN_SwiGlu(kn_kctx *c)
{
    const kn_rt_tensor *ts[2] = {kn_kctx_in(c, 0), kn_kctx_in(c, 1)};
    if (ts[0] && !ts[1] && kn_kctx_n_inputs(c) == 1)
        return swiglu_packed(c, ts[0]);
    if (!ts[0] || !ts[1] || !kn_dt_is_float(ts[0]->dtype) || ts[1]->dtype != ts[0]->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs float inputs gate and up of one dtype");
    int32_t rank;
    int64_t dims[KN_RT_MAX_RANK];
    KN_TRY(kn_broadcast(c, 2, ts, &rank, dims));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, ts[0]->dtype, rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    kn_bcast_iter it;
    kn_bcast_init(&it, rank, dims, 2, ts);
    kn_dtype t = ts[0]->dtype;
    for (int64_t o = 0; o < y->numel; o++, kn_bcast_next(&it))
        kn_set_f64(t, y->data, o, silu(kn_get_f64(t, ts[0]->data, it.off[0])) * kn_get_f64(t, ts[1]->data, it.off[1]));
    return KN_OK;
}
