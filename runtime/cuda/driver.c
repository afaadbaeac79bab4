/* Lazy loading of the CUDA driver (libcuda.so.1) and cuBLASLt
 * (libcublasLt.so.13): dlopen on first use, every entry point resolved by
 * its versioned name, errors turned into statuses with the call and
 * CUDA's error name. Process-wide, loaded at most once (pthread_once). */
#include "runtime/cuda/driver.h"

#ifdef KN_HAVE_CUDA_HEADERS

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define KN_STR_(x) #x
#define KN_STR(x) KN_STR_(x) /* after expansion: cuMemAlloc → "cuMemAlloc_v2" */

/* ---- the driver ---- */

static struct {
    pthread_once_t once;
    kn_status status;
    char why[512];
    void *lib;
    kn_cuda_driver fn;
} drv = {.once = PTHREAD_ONCE_INIT, .status = KN_OK};

/* Names of the errors cuInit gives when there is no usable GPU, for a
 * driver (or the toolkit's stub) whose cuGetErrorName fails too. */
static const char *init_error_name(CUresult r)
{
    switch (r) {
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_STUB_LIBRARY: return "CUDA_ERROR_STUB_LIBRARY";
    case CUDA_ERROR_DEVICE_UNAVAILABLE: return "CUDA_ERROR_DEVICE_UNAVAILABLE";
    case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH: return "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH";
    case CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE: return "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE";
    default: return NULL;
    }
}

static void driver_load(void)
{
    drv.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv.lib) {
        const char *e = dlerror();
        snprintf(drv.why, sizeof drv.why, "no NVIDIA driver: %s", e ? e : "libcuda.so.1 cannot be loaded");
        drv.status = KN_ERR_UNSUPPORTED;
        return;
    }
    /* dlsym returns void *; converting it to a function pointer is what
     * POSIX guarantees to work */
#define KN_LOAD_(member, api)                                                                              \
    *(void **)&drv.fn.member = dlsym(drv.lib, KN_STR(api));                                                \
    if (!drv.fn.member && strcmp(KN_STR(api), "cuEventElapsedTime_v2") == 0) /* drivers before 12.8 */     \
        *(void **)&drv.fn.member = dlsym(drv.lib, "cuEventElapsedTime");                                   \
    if (!drv.fn.member) {                                                                                  \
        snprintf(drv.why, sizeof drv.why, "the NVIDIA driver is too old: libcuda.so.1 has no %s", KN_STR(api)); \
        drv.status = KN_ERR_UNSUPPORTED;                                                                   \
        return;                                                                                            \
    }
    KN_CUDA_DRIVER_FNS(KN_LOAD_)
#undef KN_LOAD_
    *(void **)&drv.fn.func_get_param_info = dlsym(drv.lib, KN_STR(cuFuncGetParamInfo));
    bool graphs = true;
#define KN_LOAD_GRAPH_(member, api)                                   \
    *(void **)&drv.fn.member = dlsym(drv.lib, KN_STR(api));           \
    graphs = graphs && drv.fn.member;
    KN_CUDA_GRAPH_FNS(KN_LOAD_GRAPH_)
#undef KN_LOAD_GRAPH_
    if (!graphs) { /* all or none */
#define KN_CLEAR_GRAPH_(member, api) drv.fn.member = NULL;
        KN_CUDA_GRAPH_FNS(KN_CLEAR_GRAPH_)
#undef KN_CLEAR_GRAPH_
    }
    CUresult r = drv.fn.init(0);
    if (r != CUDA_SUCCESS) {
        const char *name = NULL, *str = NULL;
        if (drv.fn.get_error_name(r, &name) != CUDA_SUCCESS || !name)
            name = init_error_name(r);
        if (drv.fn.get_error_string(r, &str) != CUDA_SUCCESS)
            str = NULL;
        if (name && str)
            snprintf(drv.why, sizeof drv.why, "the NVIDIA driver cannot be used: cuInit: %s (%s)", name, str);
        else if (name)
            snprintf(drv.why, sizeof drv.why, "the NVIDIA driver cannot be used: cuInit: %s", name);
        else
            snprintf(drv.why, sizeof drv.why, "the NVIDIA driver cannot be used: cuInit: CUDA error %d", (int)r);
        drv.status = KN_ERR_UNSUPPORTED;
        return;
    }
    if (drv.fn.driver_get_version(&drv.fn.version) != CUDA_SUCCESS)
        drv.fn.version = 0;
}

kn_status kn_cuda_driver_get(kn_diag *d, kn_severity sev, const kn_cuda_driver **out)
{
    *out = NULL;
    pthread_once(&drv.once, driver_load);
    if (drv.status != KN_OK) {
        kn_diag_add(d, sev, "%s", drv.why);
        return drv.status;
    }
    *out = &drv.fn;
    return KN_OK;
}

kn_status kn_cuda_status_of(CUresult r)
{
    switch (r) {
    case CUDA_SUCCESS: return KN_OK;
    case CUDA_ERROR_OUT_OF_MEMORY: return KN_ERR_NOMEM;
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_STUB_LIBRARY:
    case CUDA_ERROR_DEVICE_UNAVAILABLE:
    case CUDA_ERROR_NOT_SUPPORTED:
    case CUDA_ERROR_NO_BINARY_FOR_GPU:
    case CUDA_ERROR_JIT_COMPILER_NOT_FOUND:
    case CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
    case CUDA_ERROR_SYSTEM_DRIVER_MISMATCH:
    case CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE: return KN_ERR_UNSUPPORTED;
    case CUDA_ERROR_INVALID_IMAGE:
    case CUDA_ERROR_INVALID_PTX:
    case CUDA_ERROR_NOT_FOUND: return KN_ERR_INVALID;
    default: return KN_ERR_INTERNAL;
    }
}

/* "<context>: " from a printf format, into buf. */
static void context(char *buf, size_t n, const char *fmt, va_list ap)
{
    buf[0] = 0;
    if (fmt && *fmt)
        vsnprintf(buf, n, fmt, ap);
}

kn_status kn_cuda_fail(kn_diag *d, CUresult r, const char *call, const char *fmt, ...)
{
    char ctx[1024];
    va_list ap;
    va_start(ap, fmt);
    context(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    const char *name = NULL, *str = NULL;
    if (drv.lib && drv.fn.get_error_name && drv.fn.get_error_string) {
        if (drv.fn.get_error_name(r, &name) != CUDA_SUCCESS)
            name = NULL;
        if (drv.fn.get_error_string(r, &str) != CUDA_SUCCESS)
            str = NULL;
    }
    if (name)
        kn_diag_add(d, KN_ERROR, "%s%s%s: %s (%s)", ctx, *ctx ? ": " : "", call, name, str ? str : "");
    else
        kn_diag_add(d, KN_ERROR, "%s%s%s: CUDA error %d", ctx, *ctx ? ": " : "", call, (int)r);
    return kn_cuda_status_of(r);
}

/* ---- cuBLASLt ---- */

static struct {
    pthread_mutex_t mu;
    bool tried;
    kn_status status;
    char why[512];
    void *lib;
    kn_cublaslt fn;
} blas = {.mu = PTHREAD_MUTEX_INITIALIZER, .status = KN_OK};

static kn_status blas_status_of(cublasStatus_t r)
{
    switch (r) {
    case CUBLAS_STATUS_SUCCESS: return KN_OK;
    case CUBLAS_STATUS_ALLOC_FAILED: return KN_ERR_NOMEM;
    case CUBLAS_STATUS_NOT_INITIALIZED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
    case CUBLAS_STATUS_NOT_SUPPORTED: return KN_ERR_UNSUPPORTED;
    case CUBLAS_STATUS_INVALID_VALUE: return KN_ERR_INVALID;
    default: return KN_ERR_INTERNAL;
    }
}

kn_status kn_cuda_blas_fail(kn_diag *d, cublasStatus_t r, const char *call, const char *fmt, ...)
{
    char ctx[1024];
    va_list ap;
    va_start(ap, fmt);
    context(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    const char *name = blas.fn.get_status_name ? blas.fn.get_status_name(r) : NULL;
    if (name)
        kn_diag_add(d, KN_ERROR, "%s%s%s: %s", ctx, *ctx ? ": " : "", call, name);
    else
        kn_diag_add(d, KN_ERROR, "%s%s%s: cuBLAS status %d", ctx, *ctx ? ": " : "", call, (int)r);
    return blas_status_of(r);
}

/* Loads the library and creates the handle; called under blas.mu. The
 * outcome (and why it failed) is kept: every later caller gets the same. */
static void blas_load(void)
{
    blas.lib = dlopen("libcublasLt.so." KN_STR(CUBLAS_VER_MAJOR), RTLD_NOW | RTLD_LOCAL);
    if (!blas.lib)
        blas.lib = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
    if (!blas.lib) {
        const char *e = dlerror();
        snprintf(blas.why, sizeof blas.why, "cuBLASLt is not available: %s",
                 e ? e : "libcublasLt.so cannot be loaded");
        blas.status = KN_ERR_UNSUPPORTED;
        return;
    }
#define KN_LOAD_(member, api)                                                                           \
    *(void **)&blas.fn.member = dlsym(blas.lib, KN_STR(api));                                           \
    if (!blas.fn.member) {                                                                              \
        snprintf(blas.why, sizeof blas.why, "cuBLASLt is not usable: the library has no %s", KN_STR(api)); \
        blas.status = KN_ERR_UNSUPPORTED;                                                               \
        return;                                                                                         \
    }
    KN_CUBLASLT_FNS(KN_LOAD_)
#undef KN_LOAD_
    blas.fn.version = blas.fn.get_version();
    if (blas.fn.version / 10000 != CUBLAS_VER_MAJOR) {
        snprintf(blas.why, sizeof blas.why, "cuBLASLt %zu.%zu is loaded; kiln was built for version %d",
                 blas.fn.version / 10000, blas.fn.version / 100 % 100, CUBLAS_VER_MAJOR);
        blas.status = KN_ERR_UNSUPPORTED;
        return;
    }
    cublasStatus_t r = blas.fn.create(&blas.fn.handle);
    if (r != CUBLAS_STATUS_SUCCESS) {
        const char *name = blas.fn.get_status_name(r);
        snprintf(blas.why, sizeof blas.why, "cuBLASLt cannot be initialised: cublasLtCreate: %s",
                 name ? name : "error");
        blas.status = blas_status_of(r);
    }
}

kn_status kn_cuda_blaslt_get(kn_diag *d, const kn_cublaslt **out)
{
    *out = NULL;
    pthread_mutex_lock(&blas.mu);
    if (!blas.tried) {
        blas.tried = true;
        blas_load();
    }
    kn_status s = blas.status;
    pthread_mutex_unlock(&blas.mu);
    if (s != KN_OK) {
        kn_diag_add(d, KN_ERROR, "%s", blas.why);
        return s;
    }
    *out = &blas.fn;
    return KN_OK;
}

#endif /* KN_HAVE_CUDA_HEADERS */
