/* Kernels that fit no other family: Identity. */
#include "runtime/cpu/util.h"

#include <string.h>

kn_status kn_ref_Identity(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    if (x->nbytes)
        memcpy(y->data, x->data, x->nbytes);
    return KN_OK;
}
