/* Diagnostics sink and status names. */
#include "ir/arena.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct diag_msg {
    kn_severity sev;
    char *text;
} diag_msg;

struct kn_diag {
    const kn_allocator *a;
    FILE *echo;
    diag_msg *msgs;
    uint32_t n, cap;
    size_t counts[3];
    size_t dropped;
};

const char *kn_status_str(kn_status s)
{
    switch (s) {
    case KN_OK: return "ok";
    case KN_ERR_INVALID: return "invalid input";
    case KN_ERR_UNSUPPORTED: return "unsupported";
    case KN_ERR_IO: return "i/o error";
    case KN_ERR_NOMEM: return "out of memory";
    case KN_ERR_LIMIT: return "limit exceeded";
    case KN_ERR_INTERNAL: return "internal error";
    case KN_ERR_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

kn_diag *kn_diag_create(const kn_allocator *a, FILE *echo)
{
    kn_diag *d = kn_mem_alloc(a, sizeof *d);
    if (!d)
        return NULL;
    memset(d, 0, sizeof *d);
    d->a = a;
    d->echo = echo;
    return d;
}

void kn_diag_destroy(kn_diag *d)
{
    if (!d)
        return;
    for (uint32_t i = 0; i < d->n; i++)
        kn_mem_free(d->a, d->msgs[i].text);
    kn_mem_free(d->a, d->msgs);
    kn_mem_free(d->a, d);
}

static const char *sev_prefix(kn_severity s)
{
    return s == KN_ERROR ? "error: " : s == KN_WARNING ? "warning: " : "note: ";
}

void kn_diag_add(kn_diag *d, kn_severity sev, const char *fmt, ...)
{
    if (!d)
        return;
    if ((unsigned)sev > KN_ERROR)
        sev = KN_ERROR;
    d->counts[sev]++;
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        len = 0;
    const char *pre = sev_prefix(sev);
    size_t plen = strlen(pre);
    char *text = kn_mem_alloc(d->a, plen + (size_t)len + 1);
    if (text) {
        memcpy(text, pre, plen);
        va_start(ap, fmt);
        vsnprintf(text + plen, (size_t)len + 1, fmt, ap);
        va_end(ap);
    }
    if (d->echo) {
        if (text) {
            fprintf(d->echo, "%s\n", text);
        } else {
            fputs(pre, d->echo);
            va_start(ap, fmt);
            vfprintf(d->echo, fmt, ap);
            va_end(ap);
            fputc('\n', d->echo);
        }
    }
    if (!text || kn_mem_grow(d->a, (void **)&d->msgs, &d->cap, d->n + 1, sizeof *d->msgs) != KN_OK) {
        kn_mem_free(d->a, text);
        d->dropped++;
        return;
    }
    d->msgs[d->n].sev = sev;
    d->msgs[d->n].text = text;
    d->n++;
}

size_t kn_diag_count(const kn_diag *d, kn_severity sev)
{
    return d && (unsigned)sev <= KN_ERROR ? d->counts[sev] : 0;
}

size_t kn_diag_size(const kn_diag *d) { return d ? d->n : 0; }

const char *kn_diag_message(const kn_diag *d, size_t i, kn_severity *sev)
{
    if (!d || i >= d->n)
        return NULL;
    if (sev)
        *sev = d->msgs[i].sev;
    return d->msgs[i].text;
}

void kn_diag_print(const kn_diag *d, FILE *f)
{
    if (!d)
        return;
    for (uint32_t i = 0; i < d->n; i++)
        fprintf(f, "%s\n", d->msgs[i].text);
    if (d->dropped)
        fprintf(f, "note: %zu further messages dropped (out of memory)\n", d->dropped);
}
