/* The kernel runner shared by kiln-attn-check and kiln-quant-check (see
 * kernel_check.h): device memory, NVRTC builds and launches, either on the
 * host emulator (tools/emu_host.c) or on a GPU through the driver API. */
#include "kernel_check.h"

#include "codegen/cuda/lower.h"
#include "codegen/cuda/program.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

kn_kc_runner kn_kc;

void *kn_kc_alloc(size_t n)
{
    if (!kn_kc.gpu)
        return calloc(n ? n : 1, 1);
#ifdef KN_HAVE_CUDA_HEADERS
    CUdeviceptr p = 0;
    if (kn_kc.cu->mem_alloc(&p, n ? n : 1) != CUDA_SUCCESS)
        return NULL;
    return (void *)(uintptr_t)p;
#else
    return NULL;
#endif
}

void kn_kc_free(void *p)
{
    if (!kn_kc.gpu) {
        free(p);
        return;
    }
#ifdef KN_HAVE_CUDA_HEADERS
    if (p)
        kn_kc.cu->mem_free((CUdeviceptr)(uintptr_t)p);
#endif
}

void *kn_kc_upload(const void *src, size_t n)
{
    void *d = kn_kc_alloc(n);
    if (!d)
        return NULL;
    if (!kn_kc.gpu) {
        memcpy(d, src, n);
        return d;
    }
#ifdef KN_HAVE_CUDA_HEADERS
    kn_kc.cu->memcpy_htod_async((CUdeviceptr)(uintptr_t)d, src, n, NULL);
    kn_kc.cu->stream_synchronize(NULL);
#endif
    return d;
}

void kn_kc_download(void *dst, const void *src, size_t n)
{
    if (!kn_kc.gpu) {
        memcpy(dst, src, n);
        return;
    }
#ifdef KN_HAVE_CUDA_HEADERS
    kn_kc.cu->memcpy_dtoh_async(dst, (CUdeviceptr)(uintptr_t)src, n, NULL);
    kn_kc.cu->stream_synchronize(NULL);
#endif
}

bool kn_kc_launch(const kn_kc_fn *f, kn_dim3 g, uint32_t threads, void **args)
{
    unsigned grid[3] = {g.x, g.y, g.z}, block[3] = {threads, 1, 1};
    if (!kn_kc.gpu) {
        f->emu(grid, block, args);
        return true;
    }
#ifdef KN_HAVE_CUDA_HEADERS
    CUresult r = kn_kc.cu->launch_kernel((CUfunction)f->func, g.x, g.y, g.z, threads, 1, 1, 0, NULL, args, NULL);
    if (r == CUDA_SUCCESS)
        r = kn_kc.cu->stream_synchronize(NULL);
    if (r != CUDA_SUCCESS) {
        const char *name = NULL;
        kn_kc.cu->get_error_name(r, &name);
        fprintf(stderr, "launch failed: %s\n", name ? name : "?");
        return false;
    }
    return true;
#else
    return false;
#endif
}

/* Compiles one source with NVRTC (every default arch, or the GPU's) and
 * makes it runnable. */
bool kn_kc_build(const char *src, const char *entry, kn_kc_fn *out)
{
    memset(out, 0, sizeof *out);
    kn_cu_program p;
    memset(&p, 0, sizeof p);
    p.kernels = calloc(1, sizeof *p.kernels);
    size_t n = strlen(src);
    char *copy = kn_mem_alloc(NULL, n + 1);
    if (!p.kernels || !copy) {
        free(p.kernels);
        kn_mem_free(NULL, copy);
        return false;
    }
    memcpy(copy, src, n + 1);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)src[i]) * 1099511628211ull;
    for (const char *c = entry; *c; c++) /* two entries of one source: two host libraries */
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    p.kernels[0] = (kn_cu_kernel){entry, copy, h, NULL, 0};
    p.n_kernels = p.cap_kernels = 1;
    /* under the emulator one arch proves the run source compiles for the
     * device (the checkers' sweeps compile every arch); on a GPU, its own */
    uint32_t arch[1] = {kn_kc.gpu ? kn_kc.arch : 80u};
    kn_nvrtc_options o = {arch, 1u, false, NULL, 0};
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_nvrtc_stats st;
    kn_status s = kn_cuda_compile(&p, &o, d, &st);
    bool ok = s == KN_OK;
    if (!ok)
        fprintf(stderr, "NVRTC: %s: %s\n", entry, kn_diag_size(d) ? kn_diag_message(d, 0, NULL) : kn_status_str(s));
    char err[4096] = "";
    if (ok && !kn_kc.gpu) {
        out->emu = kn_emu_build(src, entry, h, err, sizeof err);
        if (!out->emu) {
            fprintf(stderr, "host build of %s: %.2000s\n", entry, err);
            ok = false;
        }
    }
#ifdef KN_HAVE_CUDA_HEADERS
    if (ok && kn_kc.gpu) {
        CUmodule m = NULL;
        const kn_cu_image *im = NULL;
        for (uint32_t i = 0; i < p.kernels[0].n_images; i++)
            if (p.kernels[0].images[i].arch == kn_kc.arch)
                im = &p.kernels[0].images[i];
        CUfunction f = NULL;
        ok = im && kn_kc.cu->module_load_data_ex(&m, im->data, 0, NULL, NULL) == CUDA_SUCCESS &&
             kn_kc.cu->module_get_function(&f, m, entry) == CUDA_SUCCESS;
        out->func = f;
        if (!ok)
            fprintf(stderr, "cannot load %s for sm_%u\n", entry, kn_kc.arch);
    }
#endif
    p.kernels[0].entry = NULL;
    kn_cu_program_free(&p);
    kn_diag_destroy(d);
    return ok;
}

/* Peak device bandwidth as a copy kernel achieves it: 16-byte loads and
 * stores, 1 GiB read + 1 GiB written per launch. */
const char kn_kc_copy_src[] =
    "#include \"kiln_cuda.h\"\n"
    "extern \"C\" __global__ void kn_copy16(const uint4 *a, uint4 *b, i64 n) {\n"
    "  for (i64 i = kn_tid(); i < n; i += kn_nthreads()) b[i] = a[i];\n"
    "}\n";

kn_cu_program kn_kc_program(uint32_t cap)
{
    kn_cu_program p;
    memset(&p, 0, sizeof p);
    p.kernels = calloc(cap, sizeof *p.kernels);
    p.cap_kernels = p.kernels ? cap : 0;
    return p;
}

int kn_kc_sweep(kn_cu_program *p, const char *what)
{
    int bad = 0;
    static const uint32_t all[] = {80, 86, 89, 90};
    uint32_t mine[1] = {kn_kc.arch};
    kn_nvrtc_options o = {kn_kc.gpu ? mine : all, kn_kc.gpu ? 1u : 4u, false, NULL, 0};
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_nvrtc_stats st = {0};
    kn_status s = p->kernels ? kn_cuda_compile(p, &o, d, &st) : KN_ERR_NOMEM;
    if (s != KN_OK) {
        bad += st.failed ? (int)st.failed : 1;
        fprintf(stderr, "NVRTC: %s\n", kn_diag_size(d) ? kn_diag_message(d, 0, NULL) : kn_status_str(s));
    }
    printf("%s NVRTC sweep: %u kernel sources (%s) x %s: %u images compiled, %u from the cache, %d failures\n",
           bad ? "FAIL" : "PASS", p->n_kernels, what, kn_kc.gpu ? "this GPU's arch" : "sm_80/86/89/90 + PTX",
           st.compiled, st.cached, bad);
    for (uint32_t i = 0; i < p->n_kernels; i++)
        p->kernels[i].entry = NULL;
    kn_cu_program_free(p);
    kn_diag_destroy(d);
    return bad;
}

int kn_kc_start(int argc, char **argv, const char *usage, bool *bench)
{
    *bench = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--gpu") == 0) {
            kn_kc.gpu = true;
        } else if (strcmp(argv[i], "--bench") == 0) {
            *bench = true;
        } else {
            fputs(usage, stdout);
            return strcmp(argv[i], "--help") == 0 ? 0 : 1;
        }
    }
    if (!kn_nvrtc_version()) {
        printf("skipped: NVRTC (libnvrtc.so from the CUDA toolkit) is not available here\n");
        return kn_kc.gpu ? 77 : 0;
    }
    if (kn_kc.gpu) {
#ifdef KN_HAVE_CUDA_HEADERS
        int rc = kn_kc_gpu_open();
        return rc ? rc : -1;
#else
        printf("skipped: this build has no CUDA support (no cuda.h)\n");
        return 77;
#endif
    }
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    return -1;
}

#ifdef KN_HAVE_CUDA_HEADERS
int kn_kc_gpu_open(void)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_status s = kn_cuda_driver_get(d, KN_NOTE, &kn_kc.cu);
    if (s != KN_OK) {
        printf("skipped: no usable GPU (%s)\n", kn_diag_size(d) ? kn_diag_message(d, 0, NULL) : kn_status_str(s));
        kn_diag_destroy(d);
        return 77;
    }
    kn_diag_destroy(d);
    int n = 0, major = 0, minor = 0;
    if (kn_kc.cu->device_get_count(&n) != CUDA_SUCCESS || n < 1 || kn_kc.cu->device_get(&kn_kc.dev, 0) != CUDA_SUCCESS) {
        printf("skipped: no CUDA device\n");
        return 77;
    }
    kn_kc.cu->device_get_attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, kn_kc.dev);
    kn_kc.cu->device_get_attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, kn_kc.dev);
    kn_kc.cu->device_get_attribute(&kn_kc.sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, kn_kc.dev);
    kn_kc.arch = (uint32_t)(major * 10 + minor);
    if (kn_kc.cu->primary_ctx_retain(&kn_kc.ctx, kn_kc.dev) != CUDA_SUCCESS || kn_kc.cu->ctx_set_current(kn_kc.ctx) != CUDA_SUCCESS) {
        printf("error: cannot make a CUDA context\n");
        return 1;
    }
    char name[256] = "";
    kn_kc.cu->device_get_name(name, sizeof name, kn_kc.dev);
    printf("GPU: %s, sm_%u, %d SMs\n", name, kn_kc.arch, kn_kc.sms);
    return 0;
}

double kn_kc_time(const kn_kc_fn *f, kn_dim3 g, uint32_t threads, void **args)
{
    for (int i = 0; i < 3; i++)
        kn_kc_launch(f, g, threads, args);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 20; i++)
        kn_kc.cu->launch_kernel((CUfunction)f->func, g.x, g.y, g.z, threads, 1, 1, 0, NULL, args, NULL);
    kn_kc.cu->stream_synchronize(NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    return ((double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9) / 20.0;
}

double kn_kc_copy_bandwidth(void)
{
    kn_kc_fn f;
    if (!kn_kc_build(kn_kc_copy_src, "kn_copy16", &f))
        return 0;
    int64_t n = (1ll << 30) / 16;
    void *a = kn_kc_alloc((size_t)n * 16), *b = kn_kc_alloc((size_t)n * 16);
    if (!a || !b) {
        kn_kc_free(a), kn_kc_free(b);
        return 0;
    }
    void *args[3] = {&a, &b, &n};
    double t = kn_kc_time(&f, (kn_dim3){(uint32_t)(kn_kc.sms * 8), 1, 1}, 512, args);
    kn_kc_free(a), kn_kc_free(b);
    return 2.0 * (double)n * 16 / t;
}
#endif

uint64_t kn_kc_next_u64(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return *state;
}

double kn_kc_urand(uint64_t *state) { return (double)(kn_kc_next_u64(state) >> 11) / 9007199254740992.0 * 2.0 - 1.0; }
