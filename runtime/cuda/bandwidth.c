/* kn_cuda_copy_bandwidth: the device's memory bandwidth measured with a
 * device-to-device copy timed by events (kiln bench's HBM roofline). */
#include "kiln/cuda.h"

#include <string.h>

#ifndef KN_HAVE_CUDA_HEADERS

kn_status kn_cuda_copy_bandwidth(int device, uint64_t bytes, uint32_t iters, double *gb_per_s, kn_diag *d)
{
    (void)device, (void)bytes, (void)iters;
    *gb_per_s = 0;
    kn_diag_add(d, KN_ERROR, "this build of kiln has no CUDA support");
    return KN_ERR_UNSUPPORTED;
}

#else

#include "runtime/cuda/driver.h"

#define BW_TRY(call, expr)                                                          \
    do {                                                                            \
        CUresult r_ = (expr);                                                       \
        if (r_ != CUDA_SUCCESS) {                                                   \
            st = kn_cuda_fail(d, r_, call, "measuring the copy bandwidth of device %d", device); \
            goto out;                                                               \
        }                                                                           \
    } while (0)

kn_status kn_cuda_copy_bandwidth(int device, uint64_t bytes, uint32_t iters, double *gb_per_s, kn_diag *d)
{
    *gb_per_s = 0;
    const kn_cuda_driver *cu;
    KN_TRY(kn_cuda_driver_get(d, KN_ERROR, &cu));
    int n = 0;
    if (cu->device_get_count(&n) != CUDA_SUCCESS || device < 0 || device >= n) {
        kn_diag_add(d, KN_ERROR, "CUDA device %d does not exist (%d found)", device, n);
        return KN_ERR_UNSUPPORTED;
    }
    bytes = bytes ? bytes : 256ull << 20;
    iters = iters ? iters : 20;
    kn_status st = KN_OK;
    CUdevice dev;
    CUcontext ctx = NULL;
    CUstream stream = NULL;
    CUdeviceptr a = 0, b = 0;
    CUevent ev[2] = {NULL, NULL};
    BW_TRY("cuDeviceGet", cu->device_get(&dev, device));
    BW_TRY("cuDevicePrimaryCtxRetain", cu->primary_ctx_retain(&ctx, dev));
    BW_TRY("cuCtxSetCurrent", cu->ctx_set_current(ctx));
    BW_TRY("cuStreamCreate", cu->stream_create(&stream, CU_STREAM_NON_BLOCKING));
    for (;;) { /* the largest pair of buffers that fits, from `bytes` down to 16 MiB */
        if (cu->mem_alloc(&a, (size_t)bytes) == CUDA_SUCCESS) {
            if (cu->mem_alloc(&b, (size_t)bytes) == CUDA_SUCCESS)
                break;
            cu->mem_free(a);
        }
        a = b = 0;
        if (bytes <= (16ull << 20)) {
            kn_diag_add(d, KN_ERROR, "measuring the copy bandwidth of device %d: no room for 2 x %llu bytes", device,
                        (unsigned long long)bytes);
            st = KN_ERR_NOMEM;
            goto out;
        }
        bytes /= 2;
    }
    BW_TRY("cuEventCreate", cu->event_create(&ev[0], CU_EVENT_DEFAULT));
    BW_TRY("cuEventCreate", cu->event_create(&ev[1], CU_EVENT_DEFAULT));
    BW_TRY("cuMemcpyDtoDAsync", cu->memcpy_dtod_async(b, a, (size_t)bytes, stream)); /* warm-up */
    BW_TRY("cuEventRecord", cu->event_record(ev[0], stream));
    for (uint32_t i = 0; i < iters; i++)
        BW_TRY("cuMemcpyDtoDAsync", cu->memcpy_dtod_async(i & 1 ? a : b, i & 1 ? b : a, (size_t)bytes, stream));
    BW_TRY("cuEventRecord", cu->event_record(ev[1], stream));
    BW_TRY("cuStreamSynchronize", cu->stream_synchronize(stream));
    float ms = 0;
    BW_TRY("cuEventElapsedTime", cu->event_elapsed_time(&ms, ev[0], ev[1]));
    if (ms > 0)
        *gb_per_s = 2.0 * (double)bytes * iters / (ms * 1e-3) / 1e9;
out:
    for (int i = 0; i < 2; i++)
        if (ev[i])
            cu->event_destroy(ev[i]);
    if (a)
        cu->mem_free(a);
    if (b)
        cu->mem_free(b);
    if (stream)
        cu->stream_destroy(stream);
    if (ctx)
        cu->primary_ctx_release(dev);
    return st;
}

#endif /* KN_HAVE_CUDA_HEADERS */
