/* The op table (ir/ops.def) as data: lookup by (domain, op_type, opset)
 * and attribute schemas. */
#include "ir/ir.h"

#include <string.h>

static const kn_op_info op_table[KN_OP_COUNT] = {
    [KN_OP_UNSUPPORTED] = {"<unsupported>", KN_DOM_OTHER, 0, 0, ""},
#define KN_OP(id, name, dom, first, last, attrs) [KN_OP_##id] = {name, dom, first, last, attrs},
#include "ir/ops.def"
#undef KN_OP
};

const kn_op_info *kn_op_get(kn_op op)
{
    return (unsigned)op < KN_OP_COUNT ? &op_table[op] : &op_table[0];
}

kn_domain kn_domain_of(const char *domain)
{
    if (!domain || !*domain || strcmp(domain, "ai.onnx") == 0)
        return KN_DOM_ONNX;
    if (strcmp(domain, "ai.onnx.ml") == 0)
        return KN_DOM_ML;
    if (strcmp(domain, "com.microsoft") == 0)
        return KN_DOM_MS;
    if (strcmp(domain, "kiln") == 0)
        return KN_DOM_KILN;
    return KN_DOM_OTHER;
}

const char *kn_domain_name(kn_domain d)
{
    switch (d) {
    case KN_DOM_ONNX: return "ai.onnx";
    case KN_DOM_ML: return "ai.onnx.ml";
    case KN_DOM_MS: return "com.microsoft";
    case KN_DOM_KILN: return "kiln";
    default: return "other";
    }
}

kn_op kn_op_lookup(const char *domain, const char *op_type, int64_t opset, kn_op_miss *why)
{
    kn_domain d = kn_domain_of(domain);
    kn_op_miss miss = KN_MISS_UNKNOWN;
    if (d != KN_DOM_OTHER && op_type) {
        for (int i = 1; i < KN_OP_COUNT; i++) {
            const kn_op_info *o = &op_table[i];
            if (o->domain != d || strcmp(o->name, op_type) != 0)
                continue;
            if (opset < o->first_opset) {
                miss = KN_MISS_TOO_OLD;
                continue;
            }
            if (opset > o->last_opset) {
                miss = KN_MISS_REMOVED;
                continue;
            }
            if (why)
                *why = KN_MISS_NONE;
            return (kn_op)i;
        }
    }
    if (why)
        *why = miss;
    return KN_OP_UNSUPPORTED;
}

static kn_attr_kind kind_of(const char *k, size_t n)
{
    static const struct {
        const char *code;
        kn_attr_kind kind;
    } codes[] = {
        {"f", KN_ATTR_FLOAT},    {"i", KN_ATTR_INT},       {"s", KN_ATTR_STRING},
        {"t", KN_ATTR_TENSOR},   {"g", KN_ATTR_GRAPH},     {"sp", KN_ATTR_TENSOR},
        {"tp", KN_ATTR_TYPE},    {"fs", KN_ATTR_FLOATS},   {"is", KN_ATTR_INTS},
        {"ss", KN_ATTR_STRINGS}, {"ts", KN_ATTR_TENSORS},  {"gs", KN_ATTR_GRAPHS},
        {"sps", KN_ATTR_TENSORS}, {"tps", KN_ATTR_TYPES},
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strlen(codes[i].code) == n && memcmp(codes[i].code, k, n) == 0)
            return codes[i].kind;
    return KN_ATTR_UNDEFINED;
}

/* Parses the entry of the schema text starting at *p; false at the end. */
static bool next_attr(const char **p, kn_attr_schema *out)
{
    const char *s = *p;
    while (*s == ' ')
        s++;
    if (!*s)
        return false;
    const char *colon = strchr(s, ':');
    const char *end = strchr(s, ' ');
    if (!end)
        end = s + strlen(s);
    if (!colon || colon > end)
        colon = end;
    size_t nlen = (size_t)(colon - s);
    if (nlen >= sizeof out->name)
        nlen = sizeof out->name - 1;
    memcpy(out->name, s, nlen);
    out->name[nlen] = 0;
    const char *k = colon < end ? colon + 1 : end;
    size_t klen = (size_t)(end - k);
    out->required = klen && k[klen - 1] == '!';
    if (out->required)
        klen--;
    out->kind = kind_of(k, klen);
    *p = end;
    return true;
}

bool kn_op_attr_schema(kn_op op, const char *name, kn_attr_schema *out)
{
    const char *p = kn_op_get(op)->attrs;
    kn_attr_schema s;
    while (next_attr(&p, &s)) {
        if (strcmp(s.name, name) == 0) {
            if (out)
                *out = s;
            return true;
        }
    }
    return false;
}

void kn_op_attr_each(kn_op op, void (*fn)(const kn_attr_schema *, void *), void *ctx)
{
    const char *p = kn_op_get(op)->attrs;
    kn_attr_schema s;
    while (next_attr(&p, &s))
        fn(&s, ctx);
}
