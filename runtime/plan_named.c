/* A plan's named blobs (section KN_SEC_NAMED): the check plan_read.c runs
 * at load time, and the lookups of include/kiln/runtime.h, which re-read
 * the (already checked) section from the mapped plan. */
#include "kiln/runtime.h"
#include "ir/ir.h"
#include "runtime/plan_format.h"
#include "runtime/plan_named.h"

#include <stdio.h>
#include <string.h>

static kn_status bad(kn_diag *d, const char *plan, const char *what)
{
    kn_diag_add(d, KN_ERROR, "%s: corrupted plan: named blobs: %s", plan, what);
    return KN_ERR_INVALID;
}

static const char *str_at(const uint8_t *strings, uint64_t n_strings, uint32_t off)
{
    if (!strings || off >= n_strings)
        return NULL;
    const char *s = (const char *)strings + off;
    return memchr(s, 0, (size_t)(n_strings - off)) ? s : NULL;
}

kn_status kn_plan_named_check(const uint8_t *sec, uint64_t size, const uint8_t *strings, uint64_t n_strings,
                              const char *plan, kn_diag *d)
{
    uint32_t h[2];
    if (size < sizeof h)
        return bad(d, plan, "section too small");
    memcpy(h, sec, sizeof h);
    if (h[1] != 0 || h[0] > KN_PLAN_MAX_NAMED)
        return bad(d, plan, "bad count");
    uint64_t table_end = sizeof h + (uint64_t)h[0] * sizeof(kn_plan_named);
    if (table_end > size)
        return bad(d, plan, "table out of range");
    for (uint32_t i = 0; i < h[0]; i++) {
        kn_plan_named e;
        memcpy(&e, sec + sizeof h + (size_t)i * sizeof e, sizeof e);
        const char *name = str_at(strings, n_strings, e.name);
        if (e.reserved || !name || !*name)
            return bad(d, plan, "bad entry");
        if (e.offset < table_end || e.offset > size || e.size > size - e.offset || e.offset % 8)
            return bad(d, plan, "blob out of range");
        for (uint32_t k = 0; k < i; k++) {
            kn_plan_named o;
            memcpy(&o, sec + sizeof h + (size_t)k * sizeof o, sizeof o);
            if (strcmp(str_at(strings, n_strings, o.name), name) == 0)
                return bad(d, plan, "duplicate name");
        }
    }
    return KN_OK;
}

/* The NAMED and STRINGS sections of a loaded plan (checked at load), or
 * false when the graph did not come from a plan or has no named blobs. */
typedef struct named_view {
    const uint8_t *sec, *strings;
    uint64_t size, n_strings;
    uint32_t count;
} named_view;

static bool view(const kn_graph *plan, named_view *v)
{
    memset(v, 0, sizeof *v);
    if (!plan || !plan->info || plan->parent || !plan->info->plan_base)
        return false;
    const uint8_t *base = plan->info->plan_base;
    uint64_t size = plan->info->plan_size;
    kn_plan_header h;
    memcpy(&h, base, sizeof h);
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section s;
        memcpy(&s, base + h.sections_off + (size_t)i * sizeof s, sizeof s);
        if (s.offset > size || s.size > size - s.offset)
            return false;
        if (s.kind == KN_SEC_NAMED) {
            v->sec = base + s.offset;
            v->size = s.size;
        } else if (s.kind == KN_SEC_STRINGS) {
            v->strings = base + s.offset;
            v->n_strings = s.size;
        }
    }
    if (!v->sec || v->size < 8)
        return false;
    memcpy(&v->count, v->sec, 4);
    return true;
}

static void entry_at(const named_view *v, uint32_t i, const char **name, const void **data, size_t *size)
{
    kn_plan_named e;
    memcpy(&e, v->sec + 8 + (size_t)i * sizeof e, sizeof e);
    *name = str_at(v->strings, v->n_strings, e.name);
    *data = v->sec + e.offset;
    *size = (size_t)e.size;
}

size_t kn_plan_blob_count(const kn_graph *plan)
{
    named_view v;
    return view(plan, &v) ? v.count : 0;
}

kn_status kn_plan_blob_at(const kn_graph *plan, size_t i, const char **name, const void **data, size_t *size)
{
    named_view v;
    if (!view(plan, &v) || i >= v.count)
        return KN_ERR_NOT_FOUND;
    const char *n;
    const void *p;
    size_t sz;
    entry_at(&v, (uint32_t)i, &n, &p, &sz);
    if (name)
        *name = n;
    if (data)
        *data = p;
    if (size)
        *size = sz;
    return KN_OK;
}

kn_status kn_plan_blob(const kn_graph *plan, const char *name, const void **data, size_t *size)
{
    if (data)
        *data = NULL;
    if (size)
        *size = 0;
    named_view v;
    if (!name || !view(plan, &v))
        return KN_ERR_NOT_FOUND;
    for (uint32_t i = 0; i < v.count; i++) {
        const char *n;
        const void *p;
        size_t sz;
        entry_at(&v, i, &n, &p, &sz);
        if (strcmp(n, name) == 0) {
            if (data)
                *data = p;
            if (size)
                *size = sz;
            return KN_OK;
        }
    }
    return KN_ERR_NOT_FOUND;
}

static const char *plan_name(const kn_graph *plan)
{
    return plan && plan->info && plan->info->path ? plan->info->path : "<plan>";
}

kn_status kn_plan_tokenizer(const kn_graph *plan, const kn_allocator *a, kn_diag *d, kn_tokenizer **out)
{
    if (out)
        *out = NULL;
    if (!out) {
        kn_diag_add(d, KN_ERROR, "kn_plan_tokenizer: out is NULL");
        return KN_ERR_INVALID;
    }
    const void *data;
    size_t size;
    if (kn_plan_blob(plan, KN_BLOB_TOKENIZER, &data, &size) != KN_OK) {
        kn_diag_add(d, KN_ERROR,
                    "%s: the plan has no tokenizer (compile it with --tokenizer tokenizer.json, or put "
                    "tokenizer.json next to the model)",
                    plan_name(plan));
        return KN_ERR_NOT_FOUND;
    }
    char name[512];
    snprintf(name, sizeof name, "%s:" KN_BLOB_TOKENIZER, plan_name(plan));
    return kn_tokenizer_load_memory(data, size, name, a, d, out);
}

kn_status kn_plan_tokenizer_config(const kn_graph *plan, const kn_allocator *a, kn_diag *d,
                                   kn_tokenizer_config **out)
{
    if (out)
        *out = NULL;
    if (!out) {
        kn_diag_add(d, KN_ERROR, "kn_plan_tokenizer_config: out is NULL");
        return KN_ERR_INVALID;
    }
    const void *data;
    size_t size;
    if (kn_plan_blob(plan, KN_BLOB_TOKENIZER_CONFIG, &data, &size) != KN_OK) {
        kn_diag_add(d, KN_ERROR, "%s: the plan has no " KN_BLOB_TOKENIZER_CONFIG " (no chat template)",
                    plan_name(plan));
        return KN_ERR_NOT_FOUND;
    }
    char name[512];
    snprintf(name, sizeof name, "%s:" KN_BLOB_TOKENIZER_CONFIG, plan_name(plan));
    return kn_tokenizer_config_load_memory(data, size, name, a, d, out);
}

kn_status kn_plan_generation_config(const kn_graph *plan, kn_diag *d, kn_generation_config *out)
{
    const void *data;
    size_t size;
    if (kn_plan_blob(plan, KN_BLOB_GENERATION_CONFIG, &data, &size) != KN_OK) {
        kn_generation_config_parse("{}", 2, "<defaults>", NULL, out);
        return KN_ERR_NOT_FOUND;
    }
    char name[512];
    snprintf(name, sizeof name, "%s:" KN_BLOB_GENERATION_CONFIG, plan_name(plan));
    return kn_generation_config_parse(data, size, name, d, out);
}
