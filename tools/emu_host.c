/* Host builds of generated CUDA kernels: see emu_host.h. */
#include "emu_host.h"

#include "codegen/cuda/prelude.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef KN_CUDA_INCLUDE_DIR
#define KN_CUDA_INCLUDE_DIR "/usr/local/cuda/include"
#endif

static char work_dir[512];

/* The CUDA built-ins on the host. With KN_EMU_COOP (a kernel that uses
 * barriers or shuffles) each block's threads are ucontext coroutines: a
 * thread runs until it reaches __syncthreads (all live threads of the
 * block must arrive) or a warp exchange (all live threads of its warp),
 * then the next runs. `__shared__` is `static`: one copy, shared by the
 * block's threads because blocks run one after another. */
static const char shim[] =
    "#pragma once\n"
    "#include <cstdint>\n"
    "#include <cmath>\n"
    "#include <cfloat>\n"
    "#include <climits>\n"
    "#include <cstdio>\n"
    "#include <cstdlib>\n"
    "#include <utility>\n"
    "#include <type_traits>\n"
    "#include <cuda_fp16.h>\n"
    "#include <cuda_bf16.h>\n"
    "struct kn_emu_dim3 { unsigned x, y, z; };\n"
    "static kn_emu_dim3 threadIdx, blockIdx, blockDim, gridDim;\n"
    "#undef __global__\n#define __global__\n"
    "#undef __device__\n#define __device__\n"
    "#undef __host__\n#define __host__\n"
    "#undef __forceinline__\n#define __forceinline__ inline\n"
    "#undef __shared__\n#define __shared__ static\n"
    "#define __restrict__\n"
    "#define __launch_bounds__(...)\n"
    "using std::isnan; using std::isinf; using std::isfinite; using std::signbit;\n"
    "using std::min; using std::max;\n"
    "#include <cstring>\n"
    "static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }\n"
    "static inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }\n"
    "static inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }\n"
    "static inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }\n"
    "/* atomics: the emulated threads of a block never run at the same time */\n"
    "static inline int atomicAdd(int *p, int v) { int o = *p; *p = o + v; return o; }\n"
    "static inline unsigned atomicAdd(unsigned *p, unsigned v) { unsigned o = *p; *p = o + v; return o; }\n"
    "static inline void __threadfence() {}\n"
    "static inline unsigned atomicMin(unsigned *p, unsigned v) { unsigned o = *p; *p = v < o ? v : o; return o; }\n"
    "static inline unsigned atomicMax(unsigned *p, unsigned v) { unsigned o = *p; *p = v > o ? v : o; return o; }\n"
    "#ifdef KN_EMU_COOP\n"
    "#include <ucontext.h>\n"
    "enum { KN_EMU_RUN, KN_EMU_WAIT_BLOCK, KN_EMU_WAIT_WARP, KN_EMU_DONE };\n"
    "struct kn_emu_thr { ucontext_t ctx; int state; kn_emu_dim3 idx; };\n"
    "static ucontext_t kn_emu_main;\n"
    "static kn_emu_thr *kn_emu_t;\n"
    "static unsigned kn_emu_cur;\n"
    "static unsigned char kn_emu_xbuf[1024][8];\n"
    "static inline void kn_emu_wait(int why) {\n"
    "  kn_emu_t[kn_emu_cur].state = why;\n"
    "  swapcontext(&kn_emu_t[kn_emu_cur].ctx, &kn_emu_main);\n"
    "}\n"
    "static inline void __syncthreads() { kn_emu_wait(KN_EMU_WAIT_BLOCK); }\n"
    "static inline void __syncwarp(unsigned = 0xffffffffu) { kn_emu_wait(KN_EMU_WAIT_WARP); }\n"
    "template <typename T> static inline T kn_emu_xchg(T v, unsigned src_lane) {\n"
    "  static_assert(sizeof(T) <= 8, \"shuffle of a value over 8 bytes\");\n"
    "  unsigned me = kn_emu_cur, base = me & ~31u, n = blockDim.x * blockDim.y * blockDim.z;\n"
    "  std::memcpy(kn_emu_xbuf[me], &v, sizeof v);\n"
    "  kn_emu_wait(KN_EMU_WAIT_WARP);\n"
    "  T r = v;\n"
    "  if (src_lane < 32 && base + src_lane < n) std::memcpy(&r, kn_emu_xbuf[base + src_lane], sizeof r);\n"
    "  kn_emu_wait(KN_EMU_WAIT_WARP);\n"
    "  return r;\n"
    "}\n"
    "/* the warp's 32 blocks of n bytes (one per lane, zeros past the block's end) into all */\n"
    "static unsigned char kn_emu_gbuf[1024][64];\n"
    "static inline void kn_emu_warp_gather(const void *mine, unsigned n, void *all) {\n"
    "  unsigned me = kn_emu_cur, base = me & ~31u, nt = blockDim.x * blockDim.y * blockDim.z;\n"
    "  if (n > 64) { fprintf(stderr, \"kiln emu: warp gather of %u bytes\\n\", n); abort(); }\n"
    "  std::memcpy(kn_emu_gbuf[me], mine, n);\n"
    "  kn_emu_wait(KN_EMU_WAIT_WARP);\n"
    "  for (unsigned l = 0; l < 32; l++) {\n"
    "    if (base + l < nt) std::memcpy((unsigned char *)all + l * n, kn_emu_gbuf[base + l], n);\n"
    "    else std::memset((unsigned char *)all + l * n, 0, n);\n"
    "  }\n"
    "  kn_emu_wait(KN_EMU_WAIT_WARP);\n"
    "}\n"
    "template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int m, int w = 32) {\n"
    "  unsigned l = kn_emu_cur & 31u; return kn_emu_xchg(v, (l & ~(unsigned)(w - 1)) | ((l ^ (unsigned)m) & (unsigned)(w - 1)));\n"
    "}\n"
    "template <typename T> static inline T __shfl_sync(unsigned, T v, int src, int w = 32) {\n"
    "  unsigned l = kn_emu_cur & 31u; return kn_emu_xchg(v, (l & ~(unsigned)(w - 1)) + ((unsigned)src & (unsigned)(w - 1)));\n"
    "}\n"
    "template <typename T> static inline T __shfl_down_sync(unsigned, T v, unsigned d, int w = 32) {\n"
    "  unsigned l = kn_emu_cur & 31u, s = (l & (unsigned)(w - 1)) + d;\n"
    "  return kn_emu_xchg(v, s < (unsigned)w ? (l & ~(unsigned)(w - 1)) + s : l);\n"
    "}\n"
    "#endif\n";

static const char wrapper[] =
    "\ntemplate <typename... A, std::size_t... I>\n"
    "static void kn_emu_call(void (*f)(A...), void **args, std::index_sequence<I...>) {\n"
    "  f(*static_cast<typename std::remove_reference<A>::type *>(args[I])...);\n"
    "}\n"
    "static void **kn_emu_args;\n"
    "template <typename... A> static void kn_emu_invoke(void (*f)(A...)) {\n"
    "  kn_emu_call(f, kn_emu_args, std::index_sequence_for<A...>{});\n"
    "}\n"
    "#ifndef KN_EMU_COOP\n"
    "static void kn_emu_block() {\n"
    "  for (unsigned tz = 0; tz < blockDim.z; tz++) for (unsigned ty = 0; ty < blockDim.y; ty++)\n"
    "  for (unsigned tx = 0; tx < blockDim.x; tx++) {\n"
    "    threadIdx = {tx, ty, tz};\n"
    "    kn_emu_invoke(KN_EMU_ENTRY);\n"
    "  }\n"
    "}\n"
    "#else\n"
    "static void kn_emu_thread() { kn_emu_invoke(KN_EMU_ENTRY); kn_emu_t[kn_emu_cur].state = KN_EMU_DONE; }\n"
    "static void kn_emu_block() {\n"
    "  const size_t stack = 256 * 1024;\n"
    "  static char *stacks; static unsigned cap;\n"
    "  unsigned n = blockDim.x * blockDim.y * blockDim.z;\n"
    "  if (n > 1024) { fprintf(stderr, \"kiln emu: block of %u threads\\n\", n); abort(); }\n"
    "  if (cap < n) { free(stacks); free(kn_emu_t); stacks = (char *)malloc(stack * n);\n"
    "    kn_emu_t = (kn_emu_thr *)calloc(n, sizeof *kn_emu_t); cap = n; }\n"
    "  for (unsigned i = 0; i < n; i++) {\n"
    "    kn_emu_thr *t = &kn_emu_t[i];\n"
    "    getcontext(&t->ctx);\n"
    "    t->ctx.uc_stack.ss_sp = stacks + (size_t)i * stack; t->ctx.uc_stack.ss_size = stack;\n"
    "    t->ctx.uc_link = &kn_emu_main;\n"
    "    makecontext(&t->ctx, kn_emu_thread, 0);\n"
    "    t->state = KN_EMU_RUN;\n"
    "    t->idx = {i % blockDim.x, (i / blockDim.x) % blockDim.y, i / (blockDim.x * blockDim.y)};\n"
    "  }\n"
    "  for (;;) {\n"
    "    for (unsigned i = 0; i < n; i++) {\n"
    "      if (kn_emu_t[i].state != KN_EMU_RUN) continue;\n"
    "      kn_emu_cur = i; threadIdx = kn_emu_t[i].idx;\n"
    "      swapcontext(&kn_emu_main, &kn_emu_t[i].ctx);\n"
    "    }\n"
    "    unsigned done = 0, at_block = 0; bool released = false;\n"
    "    for (unsigned i = 0; i < n; i++) { done += kn_emu_t[i].state == KN_EMU_DONE; at_block += kn_emu_t[i].state == KN_EMU_WAIT_BLOCK; }\n"
    "    if (done == n) break;\n"
    "    if (at_block + done == n) {\n"
    "      for (unsigned i = 0; i < n; i++) if (kn_emu_t[i].state == KN_EMU_WAIT_BLOCK) kn_emu_t[i].state = KN_EMU_RUN;\n"
    "      continue;\n"
    "    }\n"
    "    for (unsigned w = 0; w < n; w += 32) {\n"
    "      bool all = true, any = false;\n"
    "      for (unsigned i = w; i < n && i < w + 32; i++) {\n"
    "        all = all && (kn_emu_t[i].state == KN_EMU_WAIT_WARP || kn_emu_t[i].state == KN_EMU_DONE);\n"
    "        any = any || kn_emu_t[i].state == KN_EMU_WAIT_WARP;\n"
    "      }\n"
    "      if (all && any) { released = true;\n"
    "        for (unsigned i = w; i < n && i < w + 32; i++) if (kn_emu_t[i].state == KN_EMU_WAIT_WARP) kn_emu_t[i].state = KN_EMU_RUN; }\n"
    "    }\n"
    "    if (!released) { fprintf(stderr, \"kiln emu: block (%u,%u,%u) deadlocks: threads wait at different barriers\\n\",\n"
    "                             blockIdx.x, blockIdx.y, blockIdx.z); abort(); }\n"
    "  }\n"
    "}\n"
    "#endif\n"
    "extern \"C\" void kn_emu_launch(const unsigned *g, const unsigned *b, void **args) {\n"
    "  gridDim = {g[0], g[1], g[2]}; blockDim = {b[0], b[1], b[2]}; kn_emu_args = args;\n"
    "  for (unsigned bz = 0; bz < gridDim.z; bz++) for (unsigned by = 0; by < gridDim.y; by++)\n"
    "  for (unsigned bx = 0; bx < gridDim.x; bx++) { blockIdx = {bx, by, bz}; kn_emu_block(); }\n"
    "}\n";

static bool write_text(const char *path, const char *a, const char *b, const char *c)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fputs(a, f);
    if (b)
        fputs(b, f);
    if (c)
        fputs(c, f);
    return fclose(f) == 0;
}

bool kn_emu_init(char *err, size_t err_size)
{
    /* one folder per version of the shim and prelude: builds of other
     * checkouts on the same machine keep their own header and libraries */
    uint64_t h = 1469598103934665603ull;
    for (const char *t = shim; *t; t++)
        h = (h ^ (uint8_t)*t) * 1099511628211ull;
    for (const char *t = wrapper; *t; t++)
        h = (h ^ (uint8_t)*t) * 1099511628211ull;
    for (const char *t = kn_cuda_prelude; *t; t++)
        h = (h ^ (uint8_t)*t) * 1099511628211ull;
    const char *tmp = getenv("TMPDIR");
    snprintf(work_dir, sizeof work_dir, "%s/kiln-cuda-emu-%d-%012llx", tmp && *tmp ? tmp : "/tmp", (int)getuid(),
             (unsigned long long)(h & 0xffffffffffffull));
    mkdir(work_dir, 0755);
    char hdr[600];
    snprintf(hdr, sizeof hdr, "%s/kiln_cuda.h", work_dir);
    /* the device prelude after the shim (the prelude includes cuda_fp16.h itself) */
    if (!write_text(hdr, shim, kn_cuda_prelude, NULL)) {
        snprintf(err, err_size, "cannot write %s", hdr);
        return false;
    }
    return true;
}

kn_emu_launch_fn kn_emu_build(const char *source, const char *entry, uint64_t hash, char *err, size_t err_size)
{
    char so[1024], src[1024], cmd[8192];
    /* the shim is part of the build: a kernel's library name covers both */
    uint64_t h = hash;
    snprintf(so, sizeof so, "%s/k%016llx.so", work_dir, (unsigned long long)h);
    struct stat st;
    if (stat(so, &st) != 0) {
        snprintf(src, sizeof src, "%s/k%016llx.%d.cc", work_dir, (unsigned long long)h, (int)getpid());
        char def[512];
        bool coop = strstr(source, "__syncthreads") || strstr(source, "__shfl_") || strstr(source, "__syncwarp");
        snprintf(def, sizeof def, "%s#include \"kiln_cuda.h\"\n", coop ? "#define KN_EMU_COOP 1\n" : "");
        char tail[512];
        snprintf(tail, sizeof tail, "\n#define KN_EMU_ENTRY %s\n", entry);
        FILE *f = fopen(src, "w");
        bool ok = f && fputs(def, f) >= 0 && fputs(source, f) >= 0 && fputs(tail, f) >= 0 && fputs(wrapper, f) >= 0;
        if (f)
            ok = fclose(f) == 0 && ok;
        if (!ok) {
            snprintf(err, err_size, "cannot write %s", src);
            return NULL;
        }
        snprintf(cmd, sizeof cmd,
                 "c++ -std=c++17 -O1 -w -shared -fPIC -I'%s' -I'%s' -o '%s.%d.tmp' '%s' > '%s.log' 2>&1 && mv '%s.%d.tmp' '%s'",
                 work_dir, KN_CUDA_INCLUDE_DIR, so, (int)getpid(), src, so, so, (int)getpid(), so);
        if (system(cmd) != 0) {
            char lp[1100];
            snprintf(lp, sizeof lp, "%s.log", so);
            FILE *lf = fopen(lp, "r");
            size_t n = lf ? fread(err, 1, err_size - 1, lf) : 0;
            err[n] = 0;
            if (lf)
                fclose(lf);
            for (char *q = err; *q; q++)
                if (*q == '\n')
                    *q = ' ';
            return NULL;
        }
    }
    void *dl = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    kn_emu_launch_fn fn = dl ? (kn_emu_launch_fn)dlsym(dl, "kn_emu_launch") : NULL;
    if (!fn)
        snprintf(err, err_size, "cannot load %s: %s", so, dlerror());
    return fn;
}
