/* kiln's fused rotary embedding (domain "kiln", passes/fuse_rotary.c):
 *
 *   RotaryHalf(x, cos, sin) = x * cos + rotate_half(x) * sin
 *
 * with rotate_half along x's last axis (size d, h = floor(d / 2)), exactly
 * as the exported Concat(Neg(x[..., h:]), x[..., :h]):
 *   rotate_half(x)[j] = -x[h + j]        for j < d - h
 *                     =  x[j - (d - h)]  otherwise
 * and numpy broadcasting of x, cos and sin (as the Muls and the Add it
 * replaces). Float types; computed in double, rounded once. */
#include "runtime/cpu/util.h"

kn_status kn_ref_KILN_RotaryHalf(kn_kctx *c)
{
    const kn_rt_tensor *ts[3] = {kn_kctx_in(c, 0), kn_kctx_in(c, 1), kn_kctx_in(c, 2)};
    if (!ts[0] || !ts[1] || !ts[2] || !kn_dt_is_float(ts[0]->dtype) || ts[1]->dtype != ts[0]->dtype ||
        ts[2]->dtype != ts[0]->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs float inputs x, cos and sin of one dtype");
    if (ts[0]->rank < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "x needs rank >= 1");
    int32_t rank;
    int64_t dims[KN_RT_MAX_RANK];
    KN_TRY(kn_broadcast(c, 3, ts, &rank, dims));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, ts[0]->dtype, rank, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    int64_t d = ts[0]->dims[ts[0]->rank - 1], h = d / 2;
    kn_bcast_iter it;
    kn_bcast_init(&it, rank, dims, 3, ts);
    kn_dtype t = ts[0]->dtype;
    const void *x = ts[0]->data;
    for (int64_t o = 0; o < y->numel; o++, kn_bcast_next(&it)) {
        int64_t ox = it.off[0], j = ox % d, base = ox - j;
        double r = j < d - h ? -kn_get_f64(t, x, base + h + j) : kn_get_f64(t, x, base + j - (d - h));
        double v = kn_get_f64(t, x, ox) * kn_get_f64(t, ts[1]->data, it.off[1]) + r * kn_get_f64(t, ts[2]->data, it.off[2]);
        kn_set_f64(t, y->data, o, v);
    }
    return KN_OK;
}
