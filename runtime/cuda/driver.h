/* The CUDA driver API and cuBLASLt, loaded lazily with dlopen: kiln never
 * links libcuda or libcublasLt, so it starts on machines without an
 * NVIDIA driver. cuda.h and cublasLt.h are included for types and enums
 * only. Everything here exists only when the build found those headers
 * (KN_HAVE_CUDA_HEADERS). */
#ifndef KILN_CUDA_DRIVER_H
#define KILN_CUDA_DRIVER_H

#include "kiln/kiln.h"

#include <stdbool.h>

#ifdef KN_HAVE_CUDA_HEADERS
#include <cublasLt.h>
#include <cuda.h>

/* X(member, api): `api` is the name as written in cuda.h; its macro
 * expansion there gives the versioned symbol (cuMemAlloc → cuMemAlloc_v2)
 * and, through __typeof__, the exact prototype. */
#define KN_CUDA_DRIVER_FNS(X)                                 \
    X(get_error_name, cuGetErrorName)                         \
    X(get_error_string, cuGetErrorString)                     \
    X(init, cuInit)                                           \
    X(driver_get_version, cuDriverGetVersion)                 \
    X(device_get_count, cuDeviceGetCount)                     \
    X(device_get, cuDeviceGet)                                \
    X(device_get_attribute, cuDeviceGetAttribute)             \
    X(device_get_name, cuDeviceGetName)                       \
    X(primary_ctx_retain, cuDevicePrimaryCtxRetain)           \
    X(primary_ctx_release, cuDevicePrimaryCtxRelease)         \
    X(ctx_set_current, cuCtxSetCurrent)                       \
    X(stream_create, cuStreamCreate)                          \
    X(stream_destroy, cuStreamDestroy)                        \
    X(stream_synchronize, cuStreamSynchronize)                \
    X(module_load_data_ex, cuModuleLoadDataEx)                \
    X(module_get_function, cuModuleGetFunction)               \
    X(module_unload, cuModuleUnload)                          \
    X(func_set_attribute, cuFuncSetAttribute)                 \
    X(launch_kernel, cuLaunchKernel)                          \
    X(mem_alloc, cuMemAlloc)                                  \
    X(mem_free, cuMemFree)                                    \
    X(memcpy_htod_async, cuMemcpyHtoDAsync)                   \
    X(memcpy_dtoh_async, cuMemcpyDtoHAsync)                   \
    X(memcpy_dtod_async, cuMemcpyDtoDAsync)                   \
    X(mem_host_alloc, cuMemHostAlloc)                         \
    X(mem_free_host, cuMemFreeHost)                           \
    X(event_create, cuEventCreate)                            \
    X(event_record, cuEventRecord)                            \
    X(event_synchronize, cuEventSynchronize)                  \
    X(event_elapsed_time, cuEventElapsedTime)                 \
    X(event_destroy, cuEventDestroy)

#define KN_CUBLASLT_FNS(X)                                          \
    X(get_version, cublasLtGetVersion)                              \
    X(get_status_name, cublasLtGetStatusName)                       \
    X(create, cublasLtCreate)                                       \
    X(destroy, cublasLtDestroy)                                     \
    X(matmul_desc_create, cublasLtMatmulDescCreate)                 \
    X(matmul_desc_destroy, cublasLtMatmulDescDestroy)               \
    X(matmul_desc_set_attribute, cublasLtMatmulDescSetAttribute)    \
    X(matrix_layout_create, cublasLtMatrixLayoutCreate)             \
    X(matrix_layout_destroy, cublasLtMatrixLayoutDestroy)           \
    X(matrix_layout_set_attribute, cublasLtMatrixLayoutSetAttribute) \
    X(matmul_preference_create, cublasLtMatmulPreferenceCreate)     \
    X(matmul_preference_destroy, cublasLtMatmulPreferenceDestroy)   \
    X(matmul_preference_set_attribute, cublasLtMatmulPreferenceSetAttribute) \
    X(matmul_algo_get_heuristic, cublasLtMatmulAlgoGetHeuristic)    \
    X(matmul, cublasLtMatmul)

/* Entry points of CUDA graphs: loaded when all are there. */
#define KN_CUDA_GRAPH_FNS(X)                          \
    X(stream_begin_capture, cuStreamBeginCapture)     \
    X(stream_end_capture, cuStreamEndCapture)         \
    X(graph_instantiate, cuGraphInstantiate)          \
    X(graph_launch, cuGraphLaunch)                    \
    X(graph_exec_destroy, cuGraphExecDestroy)         \
    X(graph_destroy, cuGraphDestroy)

#define KN_CUDA_MEMBER_(member, api) __typeof__(&api) member;

typedef struct kn_cuda_driver {
    KN_CUDA_DRIVER_FNS(KN_CUDA_MEMBER_)
    /* optional (driver 12.4+): NULL when absent */
    __typeof__(&cuFuncGetParamInfo) func_get_param_info;
    /* optional: CUDA graphs (stream capture, instantiate, launch); all NULL
     * when the driver lacks one of them (the executor then launches step by
     * step) */
    KN_CUDA_GRAPH_FNS(KN_CUDA_MEMBER_)
    int version;    /* cuDriverGetVersion: 13000 for CUDA 13.0 */
} kn_cuda_driver;

typedef struct kn_cublaslt {
    KN_CUBLASLT_FNS(KN_CUDA_MEMBER_)
    cublasLtHandle_t handle;
    size_t version; /* cublasLtGetVersion */
} kn_cublaslt;

#undef KN_CUDA_MEMBER_

/* The driver, loaded and initialised (cuInit) once per process. On
 * failure reports why to `d` at `sev` (KN_NOTE when the caller falls back
 * to the CPU) and returns KN_ERR_UNSUPPORTED (no libcuda.so.1, a driver
 * that lacks an entry point, cuInit failing, e.g. no device). */
kn_status kn_cuda_driver_get(kn_diag *d, kn_severity sev, const kn_cuda_driver **out);

/* cuBLASLt, loaded once and its handle created once (the caller has made
 * a context current). KN_ERR_UNSUPPORTED when the library is missing or
 * of another major version, else as kn_cuda_blas_fail. */
kn_status kn_cuda_blaslt_get(kn_diag *d, const kn_cublaslt **out);

/* Reports "error: <context>: <call>: CUDA_ERROR_X (description)" and
 * returns the matching status: KN_ERR_NOMEM for out of memory,
 * KN_ERR_UNSUPPORTED for a missing device, driver or binary,
 * KN_ERR_INVALID for an image or kernel the driver rejects, else
 * KN_ERR_INTERNAL. */
kn_status kn_cuda_fail(kn_diag *d, CUresult r, const char *call, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* The same for a cuBLASLt status (CUBLAS_STATUS_X). */
kn_status kn_cuda_blas_fail(kn_diag *d, cublasStatus_t r, const char *call, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/* The status a CUresult maps to (as kn_cuda_fail). */
kn_status kn_cuda_status_of(CUresult r);

#endif /* KN_HAVE_CUDA_HEADERS */
#endif
