/* A host-memory stand-in for libcuda.so.1 and libcublasLt.so.13, so the
 * CUDA executor's plumbing runs on a machine without a GPU: device memory
 * is host memory (every access is checked against the live allocations),
 * copies are memcpy, kernel launches are only counted (they do not run),
 * and cublasLtMatmul computes the matmul on the host exactly as cuBLASLt
 * documents it (column-major layouts, op(A)/op(B), strided batches, alpha,
 * beta, bias/ReLU/GELU epilogues), rejecting layouts that do not fit
 * together. Stream capture records the copies, launches and matmuls
 * enqueued between cuStreamBeginCapture and cuStreamEndCapture instead of
 * doing them; cuGraphLaunch of the instantiated graph does them then (the
 * copies read the host memory as it is at the launch, as on a GPU).
 * test_cuda_runtime --mock loads it through LD_LIBRARY_PATH and steers it
 * with kn_mock_control (counters of captures, graph launches, device→host
 * copies and their bytes, allocations). */
#include <cublasLt.h>
#include <cuda.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- state and control ---- */

typedef struct block {
    uintptr_t p;
    size_t n;
} block;

/* One operation a capture recorded. */
/* A matmul's arguments as a capture keeps them (the descriptors and
 * scalars by pointer: they outlive the graph in the executor). */
struct mm_args {
    cublasLtMatmulDesc_t op;
    const void *alpha, *A, *B, *beta, *C;
    void *D, *ws;
    cublasLtMatrixLayout_t Ad, Bd, Cd, Dd;
    size_t ws_size;
};

typedef struct rec_op {
    int kind; /* 0 HtoD, 1 DtoH, 2 DtoD, 3 launch, 4 matmul */
    uintptr_t dst, src;
    size_t n;
    struct mm_args *mm;
} rec_op;

static int no_graphs;

static struct {
    block blocks[4096];
    int n_blocks;
    long launches, bad_access, gemms;
    long captures, graph_launches, dtoh, dtoh_bytes, allocs;
    bool capturing;           /* between cuStreamBeginCapture and cuStreamEndCapture */
    struct rec_op *rec;           /* what the capture recorded */
    int n_rec, cap_rec;
    int sm;           /* major*10 + minor reported */
    int fail_alloc;   /* cuMemAlloc calls until one fails (0: never) */
    int fail_launch;  /* cuLaunchKernel calls until one fails */
    int fail_sync;    /* cuStreamSynchronize calls until one fails */
} M = {.sm = 90};

enum {
    MOCK_SM = 1,
    MOCK_FAIL_ALLOC,
    MOCK_FAIL_LAUNCH,
    MOCK_FAIL_SYNC,
    MOCK_LAUNCHES,
    MOCK_BAD,
    MOCK_LIVE,
    MOCK_GEMMS,
    MOCK_CAPTURES,       /* cuStreamEndCapture calls that made a graph */
    MOCK_GRAPH_LAUNCHES, /* cuGraphLaunch calls */
    MOCK_DTOH,           /* device→host copies done (directly or by a graph) */
    MOCK_DTOH_BYTES,     /* and their bytes */
    MOCK_ALLOCS,         /* cuMemAlloc + cuMemHostAlloc calls */
    MOCK_NO_GRAPHS       /* 1: cuStreamBeginCapture fails with CUDA_ERROR_NOT_SUPPORTED */
};

/* Sets (value >= 0) and returns a setting or counter. */
EXPORT long kn_mock_control(int what, long value)
{
    switch (what) {
    case MOCK_SM: return value >= 0 ? (M.sm = (int)value) : M.sm;
    case MOCK_FAIL_ALLOC: return value >= 0 ? (M.fail_alloc = (int)value) : M.fail_alloc;
    case MOCK_FAIL_LAUNCH: return value >= 0 ? (M.fail_launch = (int)value) : M.fail_launch;
    case MOCK_FAIL_SYNC: return value >= 0 ? (M.fail_sync = (int)value) : M.fail_sync;
    case MOCK_LAUNCHES: return value >= 0 ? (M.launches = value) : M.launches;
    case MOCK_BAD: return value >= 0 ? (M.bad_access = value) : M.bad_access;
    case MOCK_LIVE: return M.n_blocks;
    case MOCK_GEMMS: return value >= 0 ? (M.gemms = value) : M.gemms;
    case MOCK_CAPTURES: return value >= 0 ? (M.captures = value) : M.captures;
    case MOCK_GRAPH_LAUNCHES: return value >= 0 ? (M.graph_launches = value) : M.graph_launches;
    case MOCK_DTOH: return value >= 0 ? (M.dtoh = value) : M.dtoh;
    case MOCK_DTOH_BYTES: return value >= 0 ? (M.dtoh_bytes = value) : M.dtoh_bytes;
    case MOCK_ALLOCS: return value >= 0 ? (M.allocs = value) : M.allocs;
    case MOCK_NO_GRAPHS: return value >= 0 ? (no_graphs = (int)value) : no_graphs;
    default: return -1;
    }
}

static bool record(rec_op o);

static bool countdown(int *n)
{
    return *n > 0 && --*n == 0;
}

static void *track(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p && M.n_blocks < 4096)
        M.blocks[M.n_blocks++] = (block){(uintptr_t)p, n};
    return p;
}

static bool untrack(uintptr_t p)
{
    for (int i = 0; i < M.n_blocks; i++)
        if (M.blocks[i].p == p) {
            M.blocks[i] = M.blocks[--M.n_blocks];
            free((void *)p);
            return true;
        }
    return false;
}

/* Whether [p, p+n) lies inside one live allocation; counts a bad access
 * otherwise. */
static bool inside(uintptr_t p, size_t n)
{
    for (int i = 0; i < M.n_blocks; i++)
        if (p >= M.blocks[i].p && p - M.blocks[i].p <= M.blocks[i].n && n <= M.blocks[i].n - (p - M.blocks[i].p))
            return true;
    M.bad_access++;
    fprintf(stderr, "cuda mock: access of %zu bytes at %#lx outside every allocation\n", n, (unsigned long)p);
    return false;
}

/* ---- the driver API ---- */

EXPORT CUresult cuGetErrorName(CUresult r, const char **s)
{
    switch (r) {
    case CUDA_SUCCESS: *s = "CUDA_SUCCESS"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
    case CUDA_ERROR_ILLEGAL_ADDRESS: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
    case CUDA_ERROR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    default: *s = NULL; return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGetErrorString(CUresult r, const char **s)
{
    *s = r == CUDA_SUCCESS ? "no error" : "mock error";
    return CUDA_SUCCESS;
}

EXPORT CUresult cuInit(unsigned int flags) { return flags ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS; }
EXPORT CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }
/* NVRTC's own cache (nvrtcCompileProgram, when the mock is the process's
 * libcuda.so.1) asks the driver for its private export tables: none here,
 * so NVRTC turns its cache off instead of calling through a null table. */
EXPORT CUresult cuGetExportTable(const void **table, const CUuuid *id)
{
    (void)id;
    if (table)
        *table = NULL;
    return CUDA_ERROR_NOT_SUPPORTED;
}
EXPORT CUresult cuDeviceGetCount(int *n) { *n = 1; return CUDA_SUCCESS; }

EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
    if (ordinal != 0)
        return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d)
{
    (void)d;
    if (a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        *v = M.sm / 10;
    else if (a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        *v = M.sm % 10;
    else
        return CUDA_ERROR_INVALID_VALUE;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice d)
{
    (void)d;
    snprintf(name, (size_t)len, "kiln mock GPU");
    return CUDA_SUCCESS;
}

static int ctx_refs;
static struct CUctx_st *the_ctx = (struct CUctx_st *)0x1000;

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *c, CUdevice d)
{
    (void)d;
    ctx_refs++;
    *c = the_ctx;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    (void)d;
    return ctx_refs-- > 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext c) { return c == the_ctx ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT; }

EXPORT CUresult cuStreamCreate(CUstream *s, unsigned int flags)
{
    (void)flags;
    *s = track(8);
    return *s ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuStreamDestroy_v2(CUstream s)
{
    return untrack((uintptr_t)s) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuStreamSynchronize(CUstream s)
{
    (void)s;
    if (M.capturing)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    return countdown(&M.fail_sync) ? CUDA_ERROR_ILLEGAL_ADDRESS : CUDA_SUCCESS;
}

EXPORT CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned int n, CUjit_option *o, void **v)
{
    (void)o, (void)v, (void)n;
    if (!image)
        return CUDA_ERROR_INVALID_VALUE;
    *m = track(8);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
    if (!m || !name || !*name)
        return CUDA_ERROR_NOT_FOUND;
    *f = (CUfunction)m;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuModuleUnload(CUmodule m) { return untrack((uintptr_t)m) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE; }

EXPORT CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute a, int v)
{
    (void)f, (void)a, (void)v;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned smem, CUstream s, void **params, void **extra)
{
    (void)smem, (void)s;
    if (!f || !gx || !gy || !gz || !bx || !by || !bz || (uint64_t)bx * by * bz > 1024 || extra)
        return CUDA_ERROR_INVALID_VALUE;
    (void)params;
    if (countdown(&M.fail_launch))
        return CUDA_ERROR_LAUNCH_FAILED;
    M.launches++; /* calls of cuLaunchKernel, captured or not */
    if (M.capturing && !record((rec_op){3, 0, 0, 0, NULL}))
        return CUDA_ERROR_OUT_OF_MEMORY;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n)
{
    if (n == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (M.capturing)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    M.allocs++;
    if (countdown(&M.fail_alloc))
        return CUDA_ERROR_OUT_OF_MEMORY;
    void *m = track(n);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    memset(m, 0xcd, n); /* garbage, like fresh device memory */
    *p = (CUdeviceptr)(uintptr_t)m;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr p) { return untrack((uintptr_t)p) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

/* Appends an operation to the capture; false when out of memory. */
static bool record(rec_op o)
{
    if (M.n_rec == M.cap_rec) {
        int cap = M.cap_rec ? 2 * M.cap_rec : 64;
        rec_op *r = realloc(M.rec, (size_t)cap * sizeof *r);
        if (!r)
            return false;
        M.rec = r;
        M.cap_rec = cap;
    }
    M.rec[M.n_rec++] = o;
    return true;
}

static void do_copy(int kind, uintptr_t dst, uintptr_t src, size_t n)
{
    memmove((void *)dst, (const void *)src, n);
    if (kind == 1) {
        M.dtoh++;
        M.dtoh_bytes += (long)n;
    }
}

static CUresult copy(int kind, uintptr_t dst, uintptr_t src, size_t n)
{
    if (M.capturing)
        return record((rec_op){kind, dst, src, n, NULL}) ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
    do_copy(kind, dst, src, n);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void *h, size_t n, CUstream s)
{
    (void)s;
    if (!inside((uintptr_t)d, n))
        return CUDA_ERROR_INVALID_VALUE;
    return copy(0, (uintptr_t)d, (uintptr_t)h, n);
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *h, CUdeviceptr d, size_t n, CUstream s)
{
    (void)s;
    if (!inside((uintptr_t)d, n))
        return CUDA_ERROR_INVALID_VALUE;
    return copy(1, (uintptr_t)h, (uintptr_t)d, n);
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s)
{
    (void)s;
    if (!inside((uintptr_t)d, n) || !inside((uintptr_t)src, n))
        return CUDA_ERROR_INVALID_VALUE;
    return copy(2, (uintptr_t)d, (uintptr_t)src, n);
}

EXPORT CUresult cuMemHostAlloc(void **p, size_t n, unsigned int flags)
{
    (void)flags;
    if (n == 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (M.capturing)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    M.allocs++;
    *p = track(n);
    return *p ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

EXPORT CUresult cuMemFreeHost(void *p) { return untrack((uintptr_t)p) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE; }

EXPORT CUresult cuEventCreate(CUevent *e, unsigned int flags)
{
    (void)flags;
    *e = track(sizeof(double));
    return *e ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}

static double clock_ms;

EXPORT CUresult cuEventRecord(CUevent e, CUstream s)
{
    (void)s;
    if (!inside((uintptr_t)e, sizeof(double)))
        return CUDA_ERROR_INVALID_HANDLE;
    clock_ms += 0.25;
    memcpy(e, &clock_ms, sizeof clock_ms);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventSynchronize(CUevent e)
{
    (void)e;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventElapsedTime_v2(float *ms, CUevent a, CUevent b)
{
    double x, y;
    memcpy(&x, a, sizeof x);
    memcpy(&y, b, sizeof y);
    *ms = (float)(y - x);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuEventDestroy_v2(CUevent e)
{
    return untrack((uintptr_t)e) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

/* ---- CUDA graphs: stream capture records, a graph launch replays ---- */

typedef struct mgraph {
    rec_op *ops;
    int n;
} mgraph;

static int exec_matmul(const struct mm_args *a);

EXPORT CUresult cuStreamBeginCapture_v2(CUstream s, CUstreamCaptureMode mode)
{
    (void)mode;
    if (!inside((uintptr_t)s, 8) || M.capturing)
        return CUDA_ERROR_INVALID_VALUE;
    if (no_graphs)
        return CUDA_ERROR_NOT_SUPPORTED;
    M.capturing = true;
    M.n_rec = 0;
    return CUDA_SUCCESS;
}

static void free_ops(rec_op *ops, int n)
{
    for (int i = 0; i < n; i++)
        free(ops[i].mm);
    free(ops);
}

EXPORT CUresult cuStreamEndCapture(CUstream s, CUgraph *g)
{
    (void)s;
    if (!M.capturing)
        return CUDA_ERROR_INVALID_VALUE;
    M.capturing = false;
    mgraph *m = track(sizeof *m);
    if (!m)
        return CUDA_ERROR_OUT_OF_MEMORY;
    m->ops = M.rec;
    m->n = M.n_rec;
    M.rec = NULL;
    M.n_rec = M.cap_rec = 0;
    M.captures++;
    *g = (CUgraph)m;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphDestroy(CUgraph g)
{
    mgraph *m = (mgraph *)g;
    if (!inside((uintptr_t)m, sizeof *m))
        return CUDA_ERROR_INVALID_VALUE;
    free_ops(m->ops, m->n);
    untrack((uintptr_t)m);
    return CUDA_SUCCESS;
}

/* The executable graph: a copy of the operations (the graph may be
 * destroyed before it). */
EXPORT CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags)
{
    mgraph *m = (mgraph *)g;
    if (flags || !inside((uintptr_t)m, sizeof *m))
        return CUDA_ERROR_INVALID_VALUE;
    mgraph *x = track(sizeof *x);
    if (!x)
        return CUDA_ERROR_OUT_OF_MEMORY;
    x->n = m->n;
    x->ops = malloc(((size_t)m->n + 1) * sizeof *x->ops);
    if (!x->ops)
        return CUDA_ERROR_OUT_OF_MEMORY;
    for (int i = 0; i < m->n; i++) {
        x->ops[i] = m->ops[i];
        if (m->ops[i].mm) {
            x->ops[i].mm = malloc(sizeof *m->ops[i].mm);
            if (!x->ops[i].mm)
                return CUDA_ERROR_OUT_OF_MEMORY;
            memcpy(x->ops[i].mm, m->ops[i].mm, sizeof *m->ops[i].mm);
        }
    }
    *e = (CUgraphExec)x;
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphExecDestroy(CUgraphExec e)
{
    mgraph *x = (mgraph *)e;
    if (!inside((uintptr_t)x, sizeof *x))
        return CUDA_ERROR_INVALID_VALUE;
    free_ops(x->ops, x->n);
    untrack((uintptr_t)x);
    return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphLaunch(CUgraphExec e, CUstream s)
{
    mgraph *x = (mgraph *)e;
    if (!inside((uintptr_t)x, sizeof *x) || !inside((uintptr_t)s, 8) || M.capturing)
        return CUDA_ERROR_INVALID_VALUE;
    M.graph_launches++;
    for (int i = 0; i < x->n; i++) {
        const rec_op *o = &x->ops[i];
        if (o->kind <= 2)
            do_copy(o->kind, o->dst, o->src, o->n);
        else if (o->kind == 4 && exec_matmul(o->mm) != 0)
            return CUDA_ERROR_LAUNCH_FAILED;
    }
    return CUDA_SUCCESS;
}

/* ---- cuBLASLt ---- */

typedef struct mdesc {
    int32_t compute, scale, transa, transb, bias_type;
    uint32_t epilogue;
    const void *bias;
    int64_t bias_stride;
} mdesc;

typedef struct mlayout {
    int32_t type, batch;
    uint64_t rows, cols;
    int64_t ld, stride;
} mlayout;

EXPORT size_t cublasLtGetVersion(void) { return 130000; }
EXPORT const char *cublasLtGetStatusName(cublasStatus_t s)
{
    return s == CUBLAS_STATUS_SUCCESS ? "CUBLAS_STATUS_SUCCESS"
           : s == CUBLAS_STATUS_INVALID_VALUE ? "CUBLAS_STATUS_INVALID_VALUE"
                                              : "CUBLAS_STATUS_NOT_SUPPORTED";
}

EXPORT cublasStatus_t cublasLtCreate(cublasLtHandle_t *h)
{
    *h = (cublasLtHandle_t)track(8);
    return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtDestroy(cublasLtHandle_t h)
{
    untrack((uintptr_t)h);
    return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t c, cudaDataType_t s)
{
    mdesc *m = track(sizeof *m);
    memset(m, 0, sizeof *m);
    m->compute = c;
    m->scale = s;
    m->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    *d = (cublasLtMatmulDesc_t)m;
    return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d)
{
    return untrack((uintptr_t)d) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

#define SET_(field, type)                       \
    do {                                        \
        if (n != sizeof(type))                  \
            return CUBLAS_STATUS_INVALID_VALUE; \
        memcpy(&(field), buf, sizeof(type));    \
    } while (0)

EXPORT cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t a,
                                                     const void *buf, size_t n)
{
    mdesc *m = (mdesc *)d;
    switch (a) {
    case CUBLASLT_MATMUL_DESC_TRANSA: SET_(m->transa, int32_t); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: SET_(m->transb, int32_t); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: SET_(m->epilogue, uint32_t); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: SET_(m->bias, void *); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: SET_(m->bias_type, int32_t); break;
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE: SET_(m->bias_stride, int64_t); break;
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType t, uint64_t rows,
                                                 uint64_t cols, int64_t ld)
{
    if (ld < (int64_t)(rows ? rows : 1))
        return CUBLAS_STATUS_INVALID_VALUE; /* column-major: ld >= rows */
    mlayout *m = track(sizeof *m);
    *m = (mlayout){t, 1, rows, cols, ld, 0};
    *l = (cublasLtMatrixLayout_t)m;
    return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l)
{
    return untrack((uintptr_t)l) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

EXPORT cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t a,
                                                       const void *buf, size_t n)
{
    mlayout *m = (mlayout *)l;
    if (a == CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT)
        SET_(m->batch, int32_t);
    else if (a == CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET)
        SET_(m->stride, int64_t);
    else
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p)
{
    *p = (cublasLtMatmulPreference_t)track(8);
    return CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p)
{
    return untrack((uintptr_t)p) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

EXPORT cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                           cublasLtMatmulPreferenceAttributes_t a, const void *buf,
                                                           size_t n)
{
    (void)p, (void)a, (void)buf, (void)n;
    return CUBLAS_STATUS_SUCCESS;
}

/* op(X) is rows×cols: the layout must be that, or cols×rows transposed. */
static bool fits(const mlayout *l, int32_t op, uint64_t rows, uint64_t cols)
{
    return op == CUBLAS_OP_N ? l->rows == rows && l->cols == cols : l->rows == cols && l->cols == rows;
}

/* The shapes the matmul implies, checked: M, N, K. */
static bool shapes(const mdesc *m, const mlayout *a, const mlayout *b, const mlayout *c, const mlayout *d,
                   uint64_t *M_, uint64_t *N_, uint64_t *K_)
{
    uint64_t Mm = d->rows, Nn = d->cols, Kk = m->transa == CUBLAS_OP_N ? a->cols : a->rows;
    *M_ = Mm, *N_ = Nn, *K_ = Kk;
    return fits(a, m->transa, Mm, Kk) && fits(b, m->transb, Kk, Nn) && c->rows == Mm && c->cols == Nn &&
           a->batch == d->batch && b->batch == d->batch && c->batch == d->batch && c->type == d->type &&
           (d->type == CUDA_R_32I ? a->type == CUDA_R_8I && b->type == CUDA_R_8I && m->compute == CUBLAS_COMPUTE_32I &&
                                        m->scale == CUDA_R_32I
                                  : a->type == d->type && b->type == d->type && m->compute != CUBLAS_COMPUTE_32I);
}

/* The int8 form cuBLASLt's IMMA kernels take with the default (column)
 * order, as its documentation for cublasLtMatmul lists it: "TN" (A
 * transposed, B not), leading dims of A, B and C multiples of 4, m and k
 * multiples of 4; pointers 4-byte aligned (checked at the matmul). No
 * epilogue here. */
static bool imma_ok(const mdesc *m, const mlayout *a, const mlayout *b, const mlayout *c, uint64_t Mm, uint64_t Kk)
{
    return m->transa == CUBLAS_OP_T && m->transb == CUBLAS_OP_N && a->ld % 4 == 0 && b->ld % 4 == 0 &&
           c->ld % 4 == 0 && Mm % 4 == 0 && Kk % 4 == 0 && a->stride % 4 == 0 && b->stride % 4 == 0 &&
           m->epilogue == CUBLASLT_EPILOGUE_DEFAULT;
}

EXPORT cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t op,
                                                     cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                                     cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                                     cublasLtMatmulPreference_t p, int want,
                                                     cublasLtMatmulHeuristicResult_t res[], int *n)
{
    (void)h, (void)p;
    uint64_t Mm, Nn, Kk;
    if (!shapes((mdesc *)op, (mlayout *)a, (mlayout *)b, (mlayout *)c, (mlayout *)d, &Mm, &Nn, &Kk))
        return CUBLAS_STATUS_INVALID_VALUE;
    *n = 0;
    if (((mlayout *)d)->type == CUDA_R_32I && !imma_ok((mdesc *)op, (mlayout *)a, (mlayout *)b, (mlayout *)c, Mm, Kk))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (want < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    memset(&res[0], 0, sizeof res[0]);
    res[0].workspaceSize = 1024; /* make the executor allocate and pass one */
    *n = 1;
    return CUBLAS_STATUS_SUCCESS;
}

static size_t esize(int32_t t)
{
    return t == CUDA_R_32F || t == CUDA_R_32I ? 4 : t == CUDA_R_64F ? 8 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2
           : t == CUDA_R_8I                        ? 1
                                                   : 0;
}

static double h2d(uint16_t h)
{
    int e = h >> 10 & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
    return h >> 15 ? -v : v;
}

static uint16_t d2h(double v)
{
    /* round to nearest even through the bit pattern of float */
    float f = (float)v;
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)(x >> 16 & 0x8000);
    if (f != f)
        return sign | 0x7e00;
    float a = fabsf(f);
    if (a >= 65520.0f)
        return sign | 0x7c00;
    if (a < 6.103515625e-05f) /* subnormal: multiples of 2^-24 */
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    int e;
    float fr = frexpf(a, &e); /* a = fr * 2^e, fr in [0.5, 1) */
    long mant = lrintf(fr * 2048.0f); /* 11 bits with the implicit one */
    if (mant == 2048) {
        mant = 1024;
        e++;
    }
    return sign | (uint16_t)((e + 14) << 10 | (mant - 1024));
}

static double get(int32_t t, const void *p, uint64_t i)
{
    const uint8_t *b = p;
    switch (t) {
    case CUDA_R_32F: {
        float f;
        memcpy(&f, b + i * 4, 4);
        return f;
    }
    case CUDA_R_64F: {
        double d;
        memcpy(&d, b + i * 8, 8);
        return d;
    }
    case CUDA_R_16F: {
        uint16_t h;
        memcpy(&h, b + i * 2, 2);
        return h2d(h);
    }
    case CUDA_R_8I: return (int8_t)b[i];
    case CUDA_R_32I: {
        int32_t v;
        memcpy(&v, b + i * 4, 4);
        return v;
    }
    default: { /* bfloat16: the top half of a float */
        uint16_t h;
        memcpy(&h, b + i * 2, 2);
        uint32_t x = (uint32_t)h << 16;
        float f;
        memcpy(&f, &x, 4);
        return f;
    }
    }
}

static void put(int32_t t, void *p, uint64_t i, double v)
{
    uint8_t *b = p;
    switch (t) {
    case CUDA_R_32F: {
        float f = (float)v;
        memcpy(b + i * 4, &f, 4);
        break;
    }
    case CUDA_R_64F: memcpy(b + i * 8, &v, 8); break;
    case CUDA_R_32I: { /* exact: int8 sums of k < 2^17 products */
        int32_t x = (int32_t)v;
        memcpy(b + i * 4, &x, 4);
        break;
    }
    case CUDA_R_16F: {
        uint16_t h = d2h(v);
        memcpy(b + i * 2, &h, 2);
        break;
    }
    default: {
        float f = (float)v;
        uint32_t x;
        memcpy(&x, &f, 4);
        x += 0x7fff + (x >> 16 & 1);
        uint16_t h = (uint16_t)(x >> 16);
        memcpy(b + i * 2, &h, 2);
        break;
    }
    }
}

/* Elements spanned by a layout's batch. */
static uint64_t span(const mlayout *l)
{
    if (!l->rows || !l->cols)
        return 0;
    return (uint64_t)(l->batch - 1) * (uint64_t)l->stride + (l->cols - 1) * (uint64_t)l->ld + l->rows;
}

static cublasStatus_t matmul_now(cublasLtMatmulDesc_t op, const void *alpha, const void *A, cublasLtMatrixLayout_t Ad,
                                 const void *B, cublasLtMatrixLayout_t Bd, const void *beta, const void *C,
                                 cublasLtMatrixLayout_t Cd, void *D, cublasLtMatrixLayout_t Dd, void *ws,
                                 size_t ws_size);

static int exec_matmul(const struct mm_args *a)
{
    return matmul_now(a->op, a->alpha, a->A, a->Ad, a->B, a->Bd, a->beta, a->C, a->Cd, a->D, a->Dd, a->ws,
                      a->ws_size) != CUBLAS_STATUS_SUCCESS;
}

EXPORT cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha, const void *A,
                                     cublasLtMatrixLayout_t Ad, const void *B, cublasLtMatrixLayout_t Bd,
                                     const void *beta, const void *C, cublasLtMatrixLayout_t Cd, void *D,
                                     cublasLtMatrixLayout_t Dd, const cublasLtMatmulAlgo_t *algo, void *ws,
                                     size_t ws_size, cudaStream_t s)
{
    (void)h, (void)algo, (void)s;
    if (M.capturing) {
        struct mm_args *a = malloc(sizeof *a);
        if (!a)
            return CUBLAS_STATUS_ALLOC_FAILED;
        *a = (struct mm_args){op, alpha, A, B, beta, C, D, ws, Ad, Bd, Cd, Dd, ws_size};
        if (!record((rec_op){4, 0, 0, 0, a})) {
            free(a);
            return CUBLAS_STATUS_ALLOC_FAILED;
        }
        return CUBLAS_STATUS_SUCCESS;
    }
    return matmul_now(op, alpha, A, Ad, B, Bd, beta, C, Cd, D, Dd, ws, ws_size);
}

static cublasStatus_t matmul_now(cublasLtMatmulDesc_t op, const void *alpha, const void *A, cublasLtMatrixLayout_t Ad,
                                 const void *B, cublasLtMatrixLayout_t Bd, const void *beta, const void *C,
                                 cublasLtMatrixLayout_t Cd, void *D, cublasLtMatrixLayout_t Dd, void *ws,
                                 size_t ws_size)
{
    const mdesc *m = (const mdesc *)op;
    const mlayout *a = (mlayout *)Ad, *b = (mlayout *)Bd, *c = (mlayout *)Cd, *d = (mlayout *)Dd;
    uint64_t Mm, Nn, Kk;
    if (!shapes(m, a, b, c, d, &Mm, &Nn, &Kk) || (ws_size && !inside((uintptr_t)ws, ws_size)))
        return CUBLAS_STATUS_INVALID_VALUE;
    size_t es = esize(d->type), es_ab = esize(a->type);
    if (!es || (m->scale != CUDA_R_32F && m->scale != CUDA_R_64F && m->scale != CUDA_R_32I))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->type == CUDA_R_32I && (!imma_ok(m, a, b, c, Mm, Kk) || (uintptr_t)A % 4 || (uintptr_t)B % 4 ||
                                  (uintptr_t)C % 4 || (uintptr_t)D % 4))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!inside((uintptr_t)A, span(a) * es_ab) || !inside((uintptr_t)B, span(b) * es_ab) ||
        !inside((uintptr_t)C, span(c) * es) || !inside((uintptr_t)D, span(d) * es))
        return CUBLAS_STATUS_INVALID_VALUE;
    double al, be;
    if (m->scale == CUDA_R_64F) {
        memcpy(&al, alpha, 8);
        memcpy(&be, beta, 8);
    } else if (m->scale == CUDA_R_32I) {
        int32_t x;
        memcpy(&x, alpha, 4);
        al = x;
        memcpy(&x, beta, 4);
        be = x;
    } else {
        float f;
        memcpy(&f, alpha, 4);
        al = f;
        memcpy(&f, beta, 4);
        be = f;
    }
    bool bias = m->epilogue == CUBLASLT_EPILOGUE_BIAS;
    if (bias && (!m->bias || m->bias_type != d->type ||
                 !inside((uintptr_t)m->bias, ((uint64_t)(d->batch - 1) * (uint64_t)m->bias_stride + Mm) * es)))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m->epilogue != CUBLASLT_EPILOGUE_DEFAULT && m->epilogue != CUBLASLT_EPILOGUE_RELU &&
        m->epilogue != CUBLASLT_EPILOGUE_GELU && !bias)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    double *out = malloc((Mm * Nn + 1) * sizeof *out);
    if (!out)
        return CUBLAS_STATUS_ALLOC_FAILED;
    for (int32_t bt = 0; bt < d->batch; bt++) {
        uint64_t oa = (uint64_t)bt * (uint64_t)a->stride, ob = (uint64_t)bt * (uint64_t)b->stride,
                 oc = (uint64_t)bt * (uint64_t)c->stride, od = (uint64_t)bt * (uint64_t)d->stride;
        for (uint64_t j = 0; j < Nn; j++)
            for (uint64_t i = 0; i < Mm; i++) {
                double acc = 0;
                for (uint64_t k = 0; k < Kk; k++) {
                    uint64_t ia = m->transa == CUBLAS_OP_N ? i + k * (uint64_t)a->ld : k + i * (uint64_t)a->ld;
                    uint64_t ib = m->transb == CUBLAS_OP_N ? k + j * (uint64_t)b->ld : j + k * (uint64_t)b->ld;
                    acc += get(a->type, A, oa + ia) * get(b->type, B, ob + ib);
                }
                double v = al * acc;
                if (be != 0)
                    v += be * get(c->type, C, oc + i + j * (uint64_t)c->ld);
                if (bias)
                    v += get(d->type, m->bias, (uint64_t)bt * (uint64_t)m->bias_stride + i);
                if (m->epilogue == CUBLASLT_EPILOGUE_RELU)
                    v = v > 0 ? v : 0;
                if (m->epilogue == CUBLASLT_EPILOGUE_GELU)
                    v = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
                out[i + j * Mm] = v;
            }
        for (uint64_t j = 0; j < Nn; j++) /* written after reading: C may be D */
            for (uint64_t i = 0; i < Mm; i++)
                put(d->type, D, od + i + j * (uint64_t)d->ld, out[i + j * Mm]);
    }
    free(out);
    M.gemms++;
    return CUBLAS_STATUS_SUCCESS;
}
