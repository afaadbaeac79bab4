/* Compiling generated kernels with NVRTC, the only place kiln uses it.
 * NVRTC is loaded at run time, so `kiln` starts where it is missing. Every
 * (kernel, arch) pair is a job; jobs run on all cores; results are cached
 * on disk by a hash of everything that decides the output. */
#include "codegen/cuda/lower.h"
#include "codegen/cuda/prelude.h"
#include "ir/arena.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef KN_CUDA_INCLUDE_DIR
#define KN_CUDA_INCLUDE_DIR "/usr/local/cuda/include"
#endif
#ifndef KN_CUDA_LIB_DIR
#define KN_CUDA_LIB_DIR "/usr/local/cuda/lib64"
#endif

/* the NVRTC entry points kiln uses (signatures as in nvrtc.h) */
typedef int nvrtcResult_t;
typedef struct _nvrtcProgram *nvrtcProgram_t;
static struct {
    bool tried, ok;
    pthread_mutex_t lock;
    char version[32];
    const char *(*GetErrorString)(nvrtcResult_t);
    nvrtcResult_t (*Version)(int *, int *);
    nvrtcResult_t (*CreateProgram)(nvrtcProgram_t *, const char *, const char *, int, const char *const *,
                                   const char *const *);
    nvrtcResult_t (*DestroyProgram)(nvrtcProgram_t *);
    nvrtcResult_t (*CompileProgram)(nvrtcProgram_t, int, const char *const *);
    nvrtcResult_t (*GetPTXSize)(nvrtcProgram_t, size_t *);
    nvrtcResult_t (*GetPTX)(nvrtcProgram_t, char *);
    nvrtcResult_t (*GetCUBINSize)(nvrtcProgram_t, size_t *);
    nvrtcResult_t (*GetCUBIN)(nvrtcProgram_t, char *);
    nvrtcResult_t (*GetProgramLogSize)(nvrtcProgram_t, size_t *);
    nvrtcResult_t (*GetProgramLog)(nvrtcProgram_t, char *);
} nv = {.lock = PTHREAD_MUTEX_INITIALIZER};

static bool load_nvrtc(void)
{
    pthread_mutex_lock(&nv.lock);
    if (!nv.tried) {
        nv.tried = true;
        static const char *names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
                                      KN_CUDA_LIB_DIR "/libnvrtc.so.13", KN_CUDA_LIB_DIR "/libnvrtc.so"};
        void *h = NULL;
        const char *env = getenv("KILN_NVRTC");
        if (env && *env)
            h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        for (size_t i = 0; !h && i < sizeof names / sizeof names[0]; i++)
            h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
        if (h) {
#define SYM(f) (*(void **)&nv.f = dlsym(h, "nvrtc" #f)) != NULL
            nv.ok = SYM(GetErrorString) && SYM(Version) && SYM(CreateProgram) && SYM(DestroyProgram) &&
                    SYM(CompileProgram) && SYM(GetPTXSize) && SYM(GetPTX) && SYM(GetCUBINSize) && SYM(GetCUBIN) &&
                    SYM(GetProgramLogSize) && SYM(GetProgramLog);
#undef SYM
            int maj = 0, min = 0;
            if (nv.ok && nv.Version(&maj, &min) == 0)
                snprintf(nv.version, sizeof nv.version, "%d.%d", maj, min);
            else
                nv.ok = false;
        }
    }
    bool ok = nv.ok;
    pthread_mutex_unlock(&nv.lock);
    return ok;
}

const char *kn_nvrtc_version(void) { return load_nvrtc() ? nv.version : NULL; }

/* ---- cache ---- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void cache_path(const kn_nvrtc_options *o, const char *key_a, uint64_t h1, uint64_t h2, char *out, size_t n)
{
    const char *dir = o->cache_dir;
    char buf[4096];
    if (!dir) {
        const char *x = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
        if (x && *x)
            snprintf(buf, sizeof buf, "%s/kiln", x);
        else
            snprintf(buf, sizeof buf, "%s/.cache/kiln", home && *home ? home : "/tmp");
        dir = buf;
    }
    snprintf(out, n, "%s/%s-%016llx%016llx", dir, key_a, (unsigned long long)h1, (unsigned long long)h2);
}

static void mkdirs(const char *path)
{
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
}

static uint8_t *cache_read(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct stat st;
    uint8_t *p = NULL;
    if (fstat(fileno(f), &st) == 0 && st.st_size > 0 && st.st_size < (1 << 30)) {
        p = malloc((size_t)st.st_size);
        if (p && fread(p, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
            free(p);
            p = NULL;
        }
        *size = (size_t)st.st_size;
    }
    fclose(f);
    return p;
}

static void cache_write(const char *path, const uint8_t *data, size_t size)
{
    mkdirs(path);
    char tmp[4400];
    snprintf(tmp, sizeof tmp, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return;
    bool ok = write(fd, data, size) == (ssize_t)size;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0)
        unlink(tmp);
}

/* ---- jobs ---- */

typedef struct job {
    kn_cu_kernel *k;
    uint32_t arch;      /* KN_CU_ARCH_PTX: PTX for ptx_arch */
    uint32_t ptx_arch;
    uint8_t *image;     /* malloc'd result */
    size_t size;
    char *log;          /* malloc'd on failure */
    bool cached;
} job;

typedef struct pool {
    job *jobs;
    uint32_t n;
    uint32_t next;
    pthread_mutex_t lock;
    const kn_nvrtc_options *o;
} pool;

static void compile_one(pool *P, job *j)
{
    const kn_nvrtc_options *o = P->o;
    char arch_opt[64], key[32];
    if (j->arch == KN_CU_ARCH_PTX) {
        snprintf(arch_opt, sizeof arch_opt, "--gpu-architecture=compute_%u", j->ptx_arch);
        snprintf(key, sizeof key, "ptx%u", j->ptx_arch);
    } else {
        snprintf(arch_opt, sizeof arch_opt, "--gpu-architecture=sm_%u", j->arch);
        snprintf(key, sizeof key, "sm%u", j->arch);
    }
    char inc[4200];
    const char *env_inc = getenv("KILN_CUDA_INCLUDE");
    snprintf(inc, sizeof inc, "--include-path=%s", env_inc && *env_inc ? env_inc : KN_CUDA_INCLUDE_DIR);
    const char *opts[] = {arch_opt, inc, "--std=c++17", "-default-device"};
    const int n_opts = 4;
    uint64_t h1 = 1469598103934665603ull, h2 = 0x9e3779b97f4a7c15ull;
    const char *parts[] = {j->k->source, kn_cuda_prelude, nv.version, arch_opt, inc, j->k->entry};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t n = strlen(parts[i]) + 1;
        h1 = fnv1a(h1, parts[i], n);
        h2 = fnv1a(h2 ^ (uint64_t)i, parts[i], n);
    }
    char path[4300];
    cache_path(o, key, h1, h2, path, sizeof path);
    if (!o->no_cache) {
        j->image = cache_read(path, &j->size);
        if (j->image) {
            j->cached = true;
            return;
        }
    }
    nvrtcProgram_t prog;
    const char *hdr_src[] = {kn_cuda_prelude};
    const char *hdr_name[] = {"kiln_cuda.h"};
    int r = nv.CreateProgram(&prog, j->k->source, j->k->entry, 1, hdr_src, hdr_name);
    if (r != 0) {
        j->log = strdup(nv.GetErrorString(r));
        return;
    }
    r = nv.CompileProgram(prog, n_opts, opts);
    if (r != 0) {
        size_t ls = 0;
        nv.GetProgramLogSize(prog, &ls);
        j->log = malloc(ls + 64);
        if (j->log) {
            snprintf(j->log, 64, "%s: ", nv.GetErrorString(r));
            nv.GetProgramLog(prog, j->log + strlen(j->log));
        }
        nv.DestroyProgram(&prog);
        return;
    }
    size_t size = 0;
    if (j->arch == KN_CU_ARCH_PTX)
        r = nv.GetPTXSize(prog, &size);
    else
        r = nv.GetCUBINSize(prog, &size);
    j->image = r == 0 && size ? malloc(size) : NULL;
    if (j->image) {
        r = j->arch == KN_CU_ARCH_PTX ? nv.GetPTX(prog, (char *)j->image) : nv.GetCUBIN(prog, (char *)j->image);
        j->size = size;
        if (r != 0) {
            free(j->image);
            j->image = NULL;
        }
    }
    if (!j->image)
        j->log = strdup("could not read NVRTC's output");
    nv.DestroyProgram(&prog);
    if (j->image && !o->no_cache)
        cache_write(path, j->image, j->size);
}

static void *worker(void *arg)
{
    pool *P = arg;
    for (;;) {
        pthread_mutex_lock(&P->lock);
        uint32_t i = P->next < P->n ? P->next++ : UINT32_MAX;
        pthread_mutex_unlock(&P->lock);
        if (i == UINT32_MAX)
            return NULL;
        compile_one(P, &P->jobs[i]);
    }
}

kn_status kn_cuda_compile(kn_cu_program *p, const kn_nvrtc_options *o, kn_diag *d, kn_nvrtc_stats *st)
{
    kn_nvrtc_stats dummy;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof *st);
    if (!load_nvrtc()) {
        kn_diag_add(d, KN_ERROR, "target cuda needs NVRTC (libnvrtc.so from the CUDA toolkit), which could not be "
                                 "loaded; set KILN_NVRTC to its path");
        return KN_ERR_UNSUPPORTED;
    }
    uint32_t n_img = o->n_archs + 1;
    uint32_t n = p->n_kernels * n_img;
    job *jobs = calloc(n ? n : 1, sizeof *jobs);
    if (!jobs)
        return KN_ERR_NOMEM;
    for (uint32_t k = 0; k < p->n_kernels; k++)
        for (uint32_t a = 0; a < n_img; a++) {
            job *j = &jobs[k * n_img + a];
            j->k = &p->kernels[k];
            j->arch = a < o->n_archs ? o->archs[a] : KN_CU_ARCH_PTX;
            j->ptx_arch = o->archs[o->n_archs - 1];
        }
    pool P = {jobs, n, 0, PTHREAD_MUTEX_INITIALIZER, o};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t nt = o->threads ? o->threads : cpus > 0 ? (uint32_t)cpus : 1;
    if (nt > 64)
        nt = 64;
    pthread_t th[64];
    uint32_t started = 0;
    for (uint32_t i = 1; i < nt; i++)
        if (pthread_create(&th[started], NULL, worker, &P) == 0)
            started++;
    worker(&P);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    kn_status s = KN_OK;
    for (uint32_t i = 0; i < n; i++) {
        job *j = &jobs[i];
        if (j->log || !j->image) {
            st->failed++;
            if (s == KN_OK) { /* the first failure with its log; then a count */
                kn_diag_add(d, KN_ERROR, "NVRTC could not compile kernel '%s' for %s%u:\n%s\n--- source ---\n%s",
                            j->k->entry, j->arch == KN_CU_ARCH_PTX ? "compute_" : "sm_",
                            j->arch == KN_CU_ARCH_PTX ? j->ptx_arch : j->arch, j->log ? j->log : "", j->k->source);
                s = KN_ERR_INTERNAL;
            }
        } else {
            st->cached += j->cached;
            st->compiled += !j->cached;
        }
    }
    for (uint32_t k = 0; s == KN_OK && k < p->n_kernels; k++) {
        kn_cu_kernel *kk = &p->kernels[k];
        kk->images = kn_mem_alloc(p->a, n_img * sizeof *kk->images);
        if (!kk->images) {
            s = KN_ERR_NOMEM;
            break;
        }
        for (uint32_t a = 0; a < n_img; a++) {
            job *j = &jobs[k * n_img + a];
            uint8_t *copy = kn_mem_alloc(p->a, j->size);
            if (!copy) {
                s = KN_ERR_NOMEM;
                break;
            }
            memcpy(copy, j->image, j->size);
            kk->images[a] = (kn_cu_image){j->arch, copy, j->size};
            kk->n_images = a + 1;
        }
    }
    if (s != KN_OK && st->failed > 1)
        kn_diag_add(d, KN_ERROR, "NVRTC: %u of %u kernel images failed to compile", st->failed, n);
    for (uint32_t i = 0; i < n; i++) {
        free(jobs[i].image);
        free(jobs[i].log);
    }
    free(jobs);
    p->n_archs = 0;
    for (uint32_t a = 0; a < o->n_archs && a < 7; a++)
        p->archs[p->n_archs++] = o->archs[a];
    p->archs[p->n_archs++] = KN_CU_ARCH_PTX;
    return s;
}
