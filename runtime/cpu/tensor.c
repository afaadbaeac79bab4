/* Run-time tensors: one allocation holds the header, the dims and (when
 * owned) the data. */
#include "runtime/cpu/kernel.h"
#include "ir/arena.h"

#include <string.h>

#define HDR_ALIGN 64

static kn_status make(const kn_allocator *a, kn_dtype t, int32_t rank, const int64_t *dims, const void *view,
                      kn_rt_tensor **out)
{
    *out = NULL;
    if (rank < 0 || rank > 64 || (t != KN_STRING && !kn_dtype_valid(t)))
        return KN_ERR_INVALID;
    int64_t n = 1;
    for (int32_t i = 0; i < rank; i++) {
        if (dims[i] < 0)
            return KN_ERR_INVALID;
        if (dims[i] && n > INT64_MAX / dims[i])
            return KN_ERR_LIMIT;
        n *= dims[i];
    }
    size_t nbytes;
    if (t == KN_STRING) {
        if ((uint64_t)n > SIZE_MAX / sizeof(kn_bytes))
            return KN_ERR_LIMIT;
        nbytes = (size_t)n * sizeof(kn_bytes);
    } else {
        KN_TRY(kn_dtype_nbytes(t, n, &nbytes));
    }
    size_t head = sizeof(kn_rt_tensor) + (size_t)(rank ? rank : 1) * sizeof(int64_t);
    head = (head + HDR_ALIGN - 1) & ~(size_t)(HDR_ALIGN - 1);
    size_t total = head + (view ? 0 : nbytes);
    if (total < head)
        return KN_ERR_LIMIT;
    char *p = kn_mem_alloc(a, total);
    if (!p)
        return KN_ERR_NOMEM;
    memset(p, 0, view ? head : total);
    kn_rt_tensor *x = (kn_rt_tensor *)p;
    x->dtype = t;
    x->rank = rank;
    x->dims = (int64_t *)(p + sizeof(kn_rt_tensor));
    if (rank)
        memcpy(x->dims, dims, (size_t)rank * sizeof(int64_t));
    x->numel = n;
    x->nbytes = nbytes;
    x->data = view ? (void *)view : p + head;
    if (t == KN_STRING && !view) {
        kn_bytes *s = x->data;
        for (int64_t i = 0; i < n; i++)
            s[i].data = (const uint8_t *)"";
    }
    *out = x;
    return KN_OK;
}

kn_status kn_rt_tensor_new(const kn_allocator *a, kn_dtype t, int32_t rank, const int64_t *dims, kn_rt_tensor **out)
{
    return make(a, t, rank, dims, NULL, out);
}

kn_status kn_rt_tensor_view(const kn_allocator *a, kn_dtype t, int32_t rank, const int64_t *dims, const void *data,
                            kn_rt_tensor **out)
{
    static const char empty[1];
    return make(a, t, rank, dims, data ? data : empty, out);
}

kn_status kn_rt_tensor_clone(const kn_allocator *a, const kn_rt_tensor *src, kn_rt_tensor **out)
{
    KN_TRY(kn_rt_tensor_new(a, src->dtype, src->rank, src->dims, out));
    if (src->nbytes)
        memcpy((*out)->data, src->data, src->nbytes); /* strings: shares the bytes, which outlive the run */
    return KN_OK;
}

void kn_rt_tensor_free(const kn_allocator *a, kn_rt_tensor *t)
{
    kn_mem_free(a, t);
}
