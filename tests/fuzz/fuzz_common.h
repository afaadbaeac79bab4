/* Shared by the fuzz harnesses: the libFuzzer entry point's prototype, an
 * allocator with a ceiling (so that a plan asking for gigabytes ends in
 * KN_ERR_NOMEM, not in the fuzzer's out-of-memory report), a temporary
 * folder, and the "this is a bug" check. */
#ifndef KILN_FUZZ_COMMON_H
#define KILN_FUZZ_COMMON_H

#include "kiln/kiln.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant kiln promises (e.g. "an imported graph verifies") that
 * failed: a bug, so the fuzzer must see a crash. */
#define FUZZ_BUG(d, ...)                        \
    do {                                        \
        fprintf(stderr, "fuzz: bug: " __VA_ARGS__); \
        fputc('\n', stderr);                    \
        kn_diag_print((d), stderr);             \
        abort();                                \
    } while (0)

/* Live bytes are counted in a 16-byte header in front of each block. */
typedef struct fuzz_cap {
    kn_allocator a;
    size_t live, limit; /* bytes */
} fuzz_cap;

static inline void *fuzz_cap_alloc(void *ctx, size_t n)
{
    fuzz_cap *c = ctx;
    if (n > c->limit - c->live || n > SIZE_MAX - 16)
        return NULL;
    size_t *p = malloc(n + 16);
    if (!p)
        return NULL;
    p[0] = n;
    c->live += n;
    return (char *)p + 16;
}

static inline void fuzz_cap_free(void *ctx, void *q)
{
    fuzz_cap *c = ctx;
    if (!q)
        return;
    size_t *p = (size_t *)((char *)q - 16);
    c->live -= p[0];
    free(p);
}

static inline void *fuzz_cap_realloc(void *ctx, void *q, size_t n)
{
    fuzz_cap *c = ctx;
    if (!q)
        return fuzz_cap_alloc(ctx, n);
    size_t *p = (size_t *)((char *)q - 16);
    size_t old = p[0];
    if (n > old && (n - old > c->limit - c->live || n > SIZE_MAX - 16))
        return NULL;
    size_t *r = realloc(p, n + 16);
    if (!r)
        return NULL;
    c->live = c->live - old + n;
    r[0] = n;
    return (char *)r + 16;
}

static inline void fuzz_cap_init(fuzz_cap *c, size_t limit)
{
    c->a.alloc = fuzz_cap_alloc;
    c->a.realloc = fuzz_cap_realloc;
    c->a.free = fuzz_cap_free;
    c->a.ctx = c;
    c->live = 0;
    c->limit = limit;
}

/* A private folder under $TMPDIR (or /tmp), made once per process and
 * removed at exit (with what the harness left in it). */
static char fuzz_dir_path[256];

static inline void fuzz_dir_remove(void)
{
    char cmd[300];
    if (fuzz_dir_path[0] && strncmp(fuzz_dir_path, "/", 1) == 0) {
        snprintf(cmd, sizeof cmd, "%s/x", fuzz_dir_path);
        unlink(cmd);
        snprintf(cmd, sizeof cmd, "%s/x.plan", fuzz_dir_path);
        unlink(cmd);
        rmdir(fuzz_dir_path);
    }
}

static inline const char *fuzz_dir(void)
{
    if (!fuzz_dir_path[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/kiln-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(fuzz_dir_path)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_path;
}

#endif
