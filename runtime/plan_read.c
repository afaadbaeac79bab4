/* Loads a plan file (runtime/plan_format.h) into a kn_graph for the runtime. Every
 * table entry is bounds-checked before use and the whole file's checksum
 * verified, so a corrupted plan is an error message, never a crash.
 * Constant data is not copied: it points into the mapped file. */
#include "kiln/runtime.h"
#include "ir/arena.h"
#include "ir/ir.h"
#include "runtime/plan_format.h"
#include "runtime/plan_named.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct rd {
    const uint8_t *base;
    uint64_t size;
    const char *name;
    kn_diag *d;
    kn_graph *root;
    const uint8_t *sec[KN_SEC_COUNT];
    uint64_t sec_size[KN_SEC_COUNT];
    kn_graph **graphs;
    uint32_t n_graphs;
    kn_tensor **consts;
    uint32_t n_consts;
} rd;

#define BAD(r, ...) (kn_diag_add((r)->d, KN_ERROR, __VA_ARGS__), KN_ERR_INVALID)

static kn_status corrupt(rd *r, const char *what)
{
    return BAD(r, "%s: corrupted plan: %s", r->name, what);
}

/* The table of section `k` as n entries of `size` bytes. */
static kn_status table(rd *r, int k, size_t size, uint32_t *n)
{
    if (r->sec_size[k] % size != 0 || r->sec_size[k] / size > UINT32_MAX - 1)
        return corrupt(r, "section size is not a whole number of entries");
    *n = (uint32_t)(r->sec_size[k] / size);
    return KN_OK;
}

static const void *entry(rd *r, int k, size_t size, uint32_t i)
{
    return r->sec[k] + (size_t)i * size;
}

static kn_status str_at(rd *r, uint32_t off, kn_str *out)
{
    if (off >= r->sec_size[KN_SEC_STRINGS])
        return corrupt(r, "string offset out of range");
    const char *s = (const char *)r->sec[KN_SEC_STRINGS] + off;
    size_t max = (size_t)(r->sec_size[KN_SEC_STRINGS] - off);
    size_t n = strnlen(s, max);
    if (n == max)
        return corrupt(r, "unterminated string");
    return kn_graph_intern(r->root, s, n, out) == KN_OK ? KN_OK : KN_ERR_NOMEM;
}

static kn_status blob_at(rd *r, uint64_t off, uint64_t n, const uint8_t **out)
{
    if (off > r->sec_size[KN_SEC_BLOB] || n > r->sec_size[KN_SEC_BLOB] - off)
        return corrupt(r, "blob reference out of range");
    *out = r->sec[KN_SEC_BLOB] + off;
    return KN_OK;
}

static kn_status read_type(rd *r, uint64_t off, kn_type *t, int depth)
{
    const uint8_t *p;
    int32_t h[4];
    if (depth > 32)
        return corrupt(r, "type nested too deeply");
    KN_TRY(blob_at(r, off, sizeof h, &p));
    memcpy(h, p, sizeof h);
    memset(t, 0, sizeof *t);
    if (h[0] < KN_TYPE_UNKNOWN || h[0] > KN_TYPE_OPTIONAL || h[1] < 0 || h[1] >= KN_DTYPE_COUNT || h[2] < -1 ||
        h[2] > 64 || (h[3] != 0 && h[3] != 1))
        return corrupt(r, "bad type record");
    t->kind = (kn_type_kind)h[0];
    t->dtype = (kn_dtype)h[1];
    t->shape.rank = h[2];
    uint64_t pos = off + sizeof h;
    if (h[2] >= 0) {
        t->shape.dims = kn_graph_alloc(r->root, ((size_t)h[2] + 1) * sizeof(kn_dim));
        if (!t->shape.dims)
            return KN_ERR_NOMEM;
        for (int32_t i = 0; i < h[2]; i++) {
            int64_t v;
            uint32_t sym[2];
            KN_TRY(blob_at(r, pos, 16, &p));
            memcpy(&v, p, 8);
            memcpy(sym, p + 8, 8);
            pos += 16;
            if (v < -1)
                return corrupt(r, "bad dimension");
            t->shape.dims[i].value = v;
            if (sym[0] != KN_PLAN_NONE)
                KN_TRY(str_at(r, sym[0], &t->shape.dims[i].sym));
        }
    }
    if (h[3]) {
        t->elem = kn_graph_alloc(r->root, sizeof *t->elem);
        if (!t->elem)
            return KN_ERR_NOMEM;
        pos = (pos + 7) & ~(uint64_t)7;
        KN_TRY(read_type(r, pos, t->elem, depth + 1));
    }
    return KN_OK;
}

static kn_status read_consts(rd *r)
{
    KN_TRY(table(r, KN_SEC_CONSTS, sizeof(kn_plan_const), &r->n_consts));
    r->consts = kn_graph_alloc(r->root, ((size_t)r->n_consts + 1) * sizeof *r->consts);
    if (!r->consts)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < r->n_consts; i++) {
        kn_plan_const pc;
        memcpy(&pc, entry(r, KN_SEC_CONSTS, sizeof pc, i), sizeof pc);
        if (!kn_dtype_valid(pc.dtype) || pc.rank < 0 || pc.rank > 64 || pc.reserved)
            return corrupt(r, "bad constant record");
        kn_tensor *t = kn_graph_alloc(r->root, sizeof *t);
        if (!t)
            return KN_ERR_NOMEM;
        KN_TRY(str_at(r, pc.name, &t->name));
        t->dtype = (kn_dtype)pc.dtype;
        t->rank = pc.rank;
        const uint8_t *dp;
        KN_TRY(blob_at(r, pc.dims, (uint64_t)pc.rank * 8, &dp));
        t->dims = kn_graph_alloc(r->root, ((size_t)pc.rank + 1) * sizeof(int64_t));
        if (!t->dims)
            return KN_ERR_NOMEM;
        memcpy(t->dims, dp, (size_t)pc.rank * 8);
        int64_t n = 1;
        for (int32_t k = 0; k < pc.rank; k++) {
            if (t->dims[k] < 0 || (t->dims[k] && n > INT64_MAX / t->dims[k]))
                return corrupt(r, "bad constant dims");
            n *= t->dims[k];
        }
        if (n != pc.n_elems)
            return corrupt(r, "constant element count does not match its dims");
        t->n_elems = n;
        if (t->dtype == KN_STRING) {
            const uint8_t *p;
            KN_TRY(blob_at(r, pc.data, pc.nbytes, &p));
            if ((uint64_t)n > pc.nbytes / 8)
                return corrupt(r, "bad string constant");
            kn_bytes *s = kn_graph_alloc(r->root, ((size_t)n + 1) * sizeof *s);
            if (!s)
                return KN_ERR_NOMEM;
            uint64_t pos = 0;
            for (int64_t k = 0; k < n; k++) {
                uint64_t len;
                if (pc.nbytes - pos < 8)
                    return corrupt(r, "bad string constant");
                memcpy(&len, p + pos, 8);
                pos += 8;
                if (len > pc.nbytes - pos)
                    return corrupt(r, "bad string constant");
                s[k].data = p + pos;
                s[k].len = (size_t)len;
                pos += len;
            }
            t->data = s;
        } else {
            size_t nb;
            if (kn_dtype_nbytes(t->dtype, n, &nb) != KN_OK || nb != pc.nbytes)
                return corrupt(r, "constant byte size does not match its shape");
            uint64_t ws = r->sec_size[KN_SEC_WEIGHTS];
            if (pc.data > ws || pc.nbytes > ws - pc.data || pc.data % KN_PLAN_WEIGHT_ALIGN)
                return corrupt(r, "constant data out of range");
            t->nbytes = nb;
            t->data = r->sec[KN_SEC_WEIGHTS] + pc.data;
        }
        r->consts[i] = t;
    }
    return KN_OK;
}

static kn_status read_ids(rd *r, uint32_t first, uint32_t n, uint32_t limit, bool allow_none, kn_id **out)
{
    uint32_t total;
    KN_TRY(table(r, KN_SEC_IDS, 4, &total));
    if (first > total || n > total - first)
        return corrupt(r, "id slice out of range");
    kn_id *ids = kn_graph_alloc(r->root, ((size_t)n + 1) * sizeof *ids);
    if (!ids)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        memcpy(&ids[i], entry(r, KN_SEC_IDS, 4, first + i), 4);
        if (ids[i] == KN_PLAN_NONE ? !allow_none : ids[i] >= limit)
            return corrupt(r, "value id out of range");
    }
    *out = ids;
    return KN_OK;
}

static kn_status read_attr(rd *r, uint32_t idx, kn_graph *g, kn_attr *a)
{
    uint32_t n_attrs;
    KN_TRY(table(r, KN_SEC_ATTRS, sizeof(kn_plan_attr), &n_attrs));
    if (idx >= n_attrs)
        return corrupt(r, "attribute index out of range");
    kn_plan_attr pa;
    memcpy(&pa, entry(r, KN_SEC_ATTRS, sizeof pa, idx), sizeof pa);
    if (pa.kind <= KN_ATTR_UNDEFINED || pa.kind >= KN_ATTR_KIND_COUNT || pa.reserved)
        return corrupt(r, "bad attribute kind");
    KN_TRY(str_at(r, pa.name, &a->name));
    a->kind = (kn_attr_kind)pa.kind;
    a->n = pa.n;
    const uint8_t *p;
    KN_TRY(blob_at(r, pa.payload, pa.size, &p));
    uint64_t need = 0;
    switch (a->kind) {
    case KN_ATTR_FLOAT: need = 4; break;
    case KN_ATTR_INT: need = 8; break;
    case KN_ATTR_FLOATS: need = (uint64_t)pa.n * 4; break;
    case KN_ATTR_INTS: need = (uint64_t)pa.n * 8; break;
    case KN_ATTR_TENSOR: case KN_ATTR_GRAPH: need = 4; break;
    case KN_ATTR_TENSORS: case KN_ATTR_GRAPHS: need = (uint64_t)pa.n * 4; break;
    case KN_ATTR_TYPE: need = 8; break;
    case KN_ATTR_TYPES: need = (uint64_t)pa.n * 8; break;
    default: need = 0; break;
    }
    if (pa.size < need || (a->kind != KN_ATTR_STRING && a->kind != KN_ATTR_STRINGS && pa.size != need))
        return corrupt(r, "attribute payload size");
    switch (a->kind) {
    case KN_ATTR_FLOAT: memcpy(&a->u.f, p, 4); break;
    case KN_ATTR_INT: memcpy(&a->u.i, p, 8); break;
    case KN_ATTR_STRING: {
        uint8_t *s = kn_graph_alloc(r->root, (size_t)pa.size + 1);
        if (!s)
            return KN_ERR_NOMEM;
        memcpy(s, p, (size_t)pa.size);
        a->u.s.data = s;
        a->u.s.len = (size_t)pa.size;
        break;
    }
    case KN_ATTR_FLOATS:
        a->u.floats = kn_graph_alloc(r->root, (size_t)need + 1); /* +1: never a zero-size request */
        if (!a->u.floats)
            return KN_ERR_NOMEM;
        if (need)
            memcpy((void *)a->u.floats, p, (size_t)need);
        break;
    case KN_ATTR_INTS:
        a->u.ints = kn_graph_alloc(r->root, (size_t)need + 1); /* +1: never a zero-size request */
        if (!a->u.ints)
            return KN_ERR_NOMEM;
        if (need)
            memcpy((void *)a->u.ints, p, (size_t)need);
        break;
    case KN_ATTR_STRINGS: {
        if (pa.n > pa.size / 8) /* each string needs its 8-byte length */
            return corrupt(r, "attribute strings");
        a->u.strings = kn_graph_alloc(r->root, ((size_t)pa.n + 1) * sizeof(kn_bytes));
        if (!a->u.strings)
            return KN_ERR_NOMEM;
        uint64_t pos = 0;
        for (uint32_t i = 0; i < pa.n; i++) {
            uint64_t len;
            if (pa.size - pos < 8)
                return corrupt(r, "attribute strings");
            memcpy(&len, p + pos, 8);
            pos += 8;
            if (len > pa.size - pos)
                return corrupt(r, "attribute strings");
            uint8_t *s = kn_graph_alloc(r->root, (size_t)len + 1);
            if (!s)
                return KN_ERR_NOMEM;
            memcpy(s, p + pos, (size_t)len);
            a->u.strings[i].data = s;
            a->u.strings[i].len = (size_t)len;
            pos += len;
        }
        break;
    }
    case KN_ATTR_TENSOR:
    case KN_ATTR_TENSORS: {
        uint32_t n = a->kind == KN_ATTR_TENSOR ? 1 : pa.n;
        kn_tensor **ts = kn_graph_alloc(r->root, ((size_t)n + 1) * sizeof *ts);
        if (!ts)
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t ci;
            memcpy(&ci, p + 4 * i, 4);
            if (ci >= r->n_consts)
                return corrupt(r, "attribute tensor index");
            ts[i] = r->consts[ci];
        }
        if (a->kind == KN_ATTR_TENSOR)
            a->u.t = ts[0];
        else
            a->u.tensors = ts;
        break;
    }
    case KN_ATTR_GRAPH:
    case KN_ATTR_GRAPHS: {
        uint32_t n = a->kind == KN_ATTR_GRAPH ? 1 : pa.n;
        kn_graph **gs = kn_graph_alloc(r->root, ((size_t)n + 1) * sizeof *gs);
        if (!gs)
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t gi;
            memcpy(&gi, p + 4 * i, 4);
            if (gi == 0 || gi >= r->n_graphs || r->graphs[gi]->parent != g)
                return corrupt(r, "attribute graph index");
            gs[i] = r->graphs[gi];
        }
        if (a->kind == KN_ATTR_GRAPH)
            a->u.g = gs[0];
        else
            a->u.graphs = gs;
        break;
    }
    case KN_ATTR_TYPE:
    case KN_ATTR_TYPES: {
        uint32_t n = a->kind == KN_ATTR_TYPE ? 1 : pa.n;
        kn_type **ts = kn_graph_alloc(r->root, ((size_t)n + 1) * sizeof *ts);
        if (!ts)
            return KN_ERR_NOMEM;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t off;
            memcpy(&off, p + 8 * i, 8);
            ts[i] = kn_graph_alloc(r->root, sizeof(kn_type));
            if (!ts[i])
                return KN_ERR_NOMEM;
            KN_TRY(read_type(r, off, ts[i], 0));
        }
        if (a->kind == KN_ATTR_TYPE)
            a->u.tp = ts[0];
        else
            a->u.types = ts;
        break;
    }
    default: break;
    }
    return KN_OK;
}

static kn_status read_graphs(rd *r)
{
    KN_TRY(table(r, KN_SEC_GRAPHS, sizeof(kn_plan_graph), &r->n_graphs));
    if (r->n_graphs == 0)
        return corrupt(r, "no main graph");
    r->graphs = kn_graph_alloc(r->root, (size_t)r->n_graphs * sizeof *r->graphs);
    if (!r->graphs)
        return KN_ERR_NOMEM;
    uint32_t n_values, n_nodes;
    KN_TRY(table(r, KN_SEC_VALUES, sizeof(kn_plan_value), &n_values));
    KN_TRY(table(r, KN_SEC_NODES, sizeof(kn_plan_node), &n_nodes));
    /* create the graphs first: attributes refer to them */
    for (uint32_t gi = 0; gi < r->n_graphs; gi++) {
        kn_plan_graph pg;
        memcpy(&pg, entry(r, KN_SEC_GRAPHS, sizeof pg, gi), sizeof pg);
        if (gi == 0) {
            if (pg.parent != KN_PLAN_NONE)
                return corrupt(r, "the main graph has a parent");
            r->graphs[0] = r->root;
        } else {
            if (pg.parent >= gi) /* parents come first: the graphs form a tree */
                return corrupt(r, "bad parent graph");
            KN_TRY(kn_graph_create_sub(r->graphs[pg.parent], &r->graphs[gi]));
        }
    }
    for (uint32_t gi = 0; gi < r->n_graphs; gi++) {
        kn_graph *g = r->graphs[gi];
        kn_plan_graph pg;
        memcpy(&pg, entry(r, KN_SEC_GRAPHS, sizeof pg, gi), sizeof pg);
        KN_TRY(str_at(r, pg.name, &g->name));
        if (pg.first_value > n_values || pg.n_values > n_values - pg.first_value || pg.first_node > n_nodes ||
            pg.n_nodes > n_nodes - pg.first_node)
            return corrupt(r, "graph slice out of range");
        for (uint32_t v = 0; v < pg.n_values; v++) {
            kn_plan_value pv;
            memcpy(&pv, entry(r, KN_SEC_VALUES, sizeof pv, pg.first_value + v), sizeof pv);
            kn_value val = {0};
            KN_TRY(str_at(r, pv.name, &val.name));
            if (pv.kind > KN_VAL_OUTER)
                return corrupt(r, "bad value kind");
            val.kind = (kn_value_kind)pv.kind;
            val.producer = pv.producer;
            val.out_index = pv.out_index;
            val.outer = pv.outer;
            if (val.kind == KN_VAL_CONST) {
                if (pv.constant >= r->n_consts)
                    return corrupt(r, "constant index out of range");
                val.tensor = r->consts[pv.constant];
            }
            if (val.kind == KN_VAL_OUTER && (gi == 0 || pv.outer >= r->graphs[gi]->parent->n_values))
                return corrupt(r, "outer reference out of range");
            KN_TRY(read_type(r, pv.type, &val.type, 0));
            kn_id id;
            KN_TRY(kn_graph_add_value(g, &val, &id));
        }
        KN_TRY(read_ids(r, pg.inputs, pg.n_inputs, g->n_values, false, &g->inputs));
        g->n_inputs = pg.n_inputs;
        KN_TRY(read_ids(r, pg.outputs, pg.n_outputs, g->n_values, false, &g->outputs));
        g->n_outputs = pg.n_outputs;
        for (uint32_t k = 0; k < pg.n_nodes; k++) {
            kn_plan_node pn;
            memcpy(&pn, entry(r, KN_SEC_NODES, sizeof pn, pg.first_node + k), sizeof pn);
            kn_node n = {0};
            KN_TRY(str_at(r, pn.name, &n.name));
            KN_TRY(str_at(r, pn.op_type, &n.op_type));
            KN_TRY(str_at(r, pn.domain, &n.domain));
            if (pn.function != KN_PLAN_NONE)
                KN_TRY(str_at(r, pn.function, &n.function));
            n.opset = pn.opset;
            n.op = kn_op_lookup(n.domain, n.op_type, n.opset, NULL);
            KN_TRY(read_ids(r, pn.inputs, pn.n_inputs, g->n_values, true, &n.inputs));
            n.n_inputs = pn.n_inputs;
            KN_TRY(read_ids(r, pn.outputs, pn.n_outputs, g->n_values, true, &n.outputs));
            n.n_outputs = pn.n_outputs;
            if (pn.n_attrs > 4096)
                return corrupt(r, "too many attributes");
            n.attrs = kn_graph_alloc(r->root, ((size_t)pn.n_attrs + 1) * sizeof *n.attrs);
            if (!n.attrs)
                return KN_ERR_NOMEM;
            for (uint32_t i = 0; i < pn.n_attrs; i++) {
                if (pn.attrs > UINT32_MAX - i)
                    return corrupt(r, "attribute index out of range");
                KN_TRY(read_attr(r, pn.attrs + i, g, &n.attrs[i]));
            }
            n.n_attrs = pn.n_attrs;
            kn_id id;
            KN_TRY(kn_graph_add_node(g, &n, &id));
        }
    }
    return KN_OK;
}

static kn_status read_meta(rd *r)
{
    uint32_t n;
    KN_TRY(table(r, KN_SEC_META, sizeof(kn_plan_kv), &n));
    kn_model_info *m = r->root->info;
    m->metadata = kn_graph_alloc(r->root, ((size_t)n + 1) * sizeof *m->metadata);
    m->opsets = kn_graph_alloc(r->root, ((size_t)n + 1) * sizeof *m->opsets);
    if (!m->metadata || !m->opsets)
        return KN_ERR_NOMEM;
    static const char *empty = "";
    m->producer_name = m->producer_version = m->domain = m->doc = empty;
    for (uint32_t i = 0; i < n; i++) {
        kn_plan_kv kv;
        memcpy(&kv, entry(r, KN_SEC_META, sizeof kv, i), sizeof kv);
        kn_str k, v;
        KN_TRY(str_at(r, kv.key, &k));
        KN_TRY(str_at(r, kv.value, &v));
        if (strcmp(k, "model.producer_name") == 0)
            m->producer_name = v;
        else if (strcmp(k, "model.producer_version") == 0)
            m->producer_version = v;
        else if (strcmp(k, "model.domain") == 0)
            m->domain = v;
        else if (strcmp(k, "model.ir_version") == 0)
            m->ir_version = strtoll(v, NULL, 10);
        else if (strcmp(k, "model.model_version") == 0)
            m->model_version = strtoll(v, NULL, 10);
        else if (strncmp(k, "opset.", 6) == 0) {
            kn_opset *o = &m->opsets[m->n_opsets++];
            KN_TRY(kn_graph_intern_cstr(r->root, strcmp(k + 6, "ai.onnx") == 0 ? "" : k + 6, &o->domain));
            o->version = strtoll(v, NULL, 10);
        }
        m->metadata[m->n_metadata].key = k; /* every entry, as stored */
        m->metadata[m->n_metadata++].value = v;
    }
    return KN_OK;
}

static kn_status load(rd *r)
{
    if (r->size < KN_PLAN_HEADER_SIZE || memcmp(r->base, KN_PLAN_MAGIC, 8) != 0)
        return BAD(r, "%s: not a kiln plan (bad magic)", r->name);
    kn_plan_header h;
    memcpy(&h, r->base, sizeof h);
    if (h.version < KN_PLAN_VERSION_BASE || h.version > KN_PLAN_VERSION)
        return BAD(r, "%s: plan format version %u; this kiln reads versions %u and %u (rebuild the plan with 'kiln compile')",
                   r->name, h.version, KN_PLAN_VERSION_BASE, KN_PLAN_VERSION);
    if (h.header_size != KN_PLAN_HEADER_SIZE)
        return corrupt(r, "bad header size");
    if (h.file_size != r->size)
        return BAD(r, "%s: corrupted plan: the header says %llu bytes, the file has %llu (truncated?)", r->name,
                   (unsigned long long)h.file_size, (unsigned long long)r->size);
    static const uint8_t z8[8];
    uint64_t c = kn_plan_checksum_update(KN_PLAN_CHECKSUM_SEED, r->base, 24);
    c = kn_plan_checksum_update(c, z8, 8);
    c = kn_plan_checksum_update(c, r->base + 32, r->size - 32);
    if (c != h.checksum)
        return corrupt(r, "checksum mismatch");
    for (size_t i = 0; i < sizeof h.reserved; i++)
        if (h.reserved[i])
            return corrupt(r, "reserved header bytes are set");
    if (h.flags || memchr(h.kiln_version, 0, sizeof h.kiln_version) == NULL)
        return corrupt(r, "bad header");
    if (h.n_sections > 64 || h.sections_off > r->size ||
        (uint64_t)h.n_sections * sizeof(kn_plan_section) > r->size - h.sections_off)
        return corrupt(r, "section table out of range");
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section s;
        memcpy(&s, r->base + h.sections_off + (size_t)i * sizeof s, sizeof s);
        if (s.kind < 1 || s.kind >= KN_SEC_COUNT || s.reserved || r->sec[s.kind] || s.offset > r->size ||
            s.size > r->size - s.offset || s.offset % 8)
            return corrupt(r, "bad section entry");
        r->sec[s.kind] = r->base + s.offset;
        r->sec_size[s.kind] = s.size;
    }
    for (int k = 1; k <= KN_SEC_WEIGHTS; k++)
        if (!r->sec[k])
            return corrupt(r, "a section is missing");
    int n_cu = 0; /* the target-cuda sections come all together or not at all */
    for (int k = KN_SEC_CU_KERNELS; k < KN_SEC_CU_END; k++)
        n_cu += r->sec[k] != NULL;
    if (n_cu != 0 && n_cu != KN_SEC_CU_END - KN_SEC_CU_KERNELS)
        return corrupt(r, "some of the CUDA sections are missing");
    int n_cup = 0; /* the prefill program: all or none, and only with the CUDA sections */
    for (int k = KN_SEC_CUP_KERNELS; k < KN_SEC_CUP_END; k++)
        n_cup += r->sec[k] != NULL;
    if (n_cup != 0 && (n_cup != KN_SEC_CU_N || n_cu == 0))
        return corrupt(r, "some of the CUDA prefill sections are missing");
    for (uint32_t b = 0, prev = n_cup; b < KN_PLAN_MAX_DECODE_BATCHES; b++) { /* batched decode programs */
        int n_cub = 0;
        for (int k = KN_SEC_CUB(b); k < KN_SEC_CUB(b) + KN_SEC_CU_N; k++)
            n_cub += r->sec[k] != NULL;
        if (n_cub != 0 && (n_cub != KN_SEC_CU_N || prev == 0))
            return corrupt(r, "the sections of a batched CUDA decode program are incomplete or out of order");
        prev = (uint32_t)n_cub;
    }
    if (r->sec[KN_SEC_NAMED]) /* optional */
        KN_TRY(kn_plan_named_check(r->sec[KN_SEC_NAMED], r->sec_size[KN_SEC_NAMED], r->sec[KN_SEC_STRINGS],
                                   r->sec_size[KN_SEC_STRINGS], r->name, r->d));
    KN_TRY(read_meta(r));
    KN_TRY(read_consts(r));
    KN_TRY(read_graphs(r));
    /* kept for the backends (runtime/cuda reads its sections from here) */
    r->root->info->plan_base = r->base;
    r->root->info->plan_size = r->size;
    r->root->info->plan_consts = r->consts;
    r->root->info->n_plan_consts = r->n_consts;
    kn_status s = kn_graph_verify(r->root, r->d);
    if (s == KN_ERR_INVALID)
        return corrupt(r, "the graph does not verify");
    return s;
}

static kn_status load_checked(rd *r, const kn_allocator *a, kn_graph **out)
{
    *out = NULL;
    kn_status s = kn_graph_create(a, &r->root);
    if (s != KN_OK) {
        kn_diag_add(r->d, KN_ERROR, "%s: out of memory while loading the plan", r->name);
        return s;
    }
    s = kn_graph_intern_cstr(r->root, r->name, &r->root->info->path);
    if (s == KN_OK)
        s = load(r);
    if (s != KN_OK) {
        if (s == KN_ERR_NOMEM)
            kn_diag_add(r->d, KN_ERROR, "%s: out of memory while loading the plan", r->name);
        kn_graph_destroy(r->root);
        return s;
    }
    *out = r->root;
    return KN_OK;
}

kn_status kn_plan_load_memory(const void *data, size_t size, const char *name, const kn_allocator *a, kn_diag *d,
                              kn_graph **out)
{
    rd r;
    memset(&r, 0, sizeof r);
    r.base = data;
    r.size = size;
    r.name = name ? name : "<memory>";
    r.d = d;
    return load_checked(&r, a, out);
}

kn_status kn_plan_load(const char *path, const kn_allocator *a, kn_diag *d, kn_graph **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        kn_diag_add(d, KN_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        kn_diag_add(d, KN_ERROR, "%s: not a regular file", path);
        return KN_ERR_IO;
    }
    size_t size = (size_t)st.st_size;
    if (size < KN_PLAN_HEADER_SIZE) {
        close(fd);
        kn_diag_add(d, KN_ERROR, "%s: not a kiln plan (%zu bytes)", path, size);
        return KN_ERR_INVALID;
    }
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        kn_diag_add(d, KN_ERROR, "%s: cannot map: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    rd r;
    memset(&r, 0, sizeof r);
    r.base = m;
    r.size = size;
    r.name = path;
    r.d = d;
    kn_status s = load_checked(&r, a, out);
    if (s == KN_OK)
        s = kn_graph_add_mapping(*out, m, size);
    if (s != KN_OK) {
        if (*out) {
            kn_graph_destroy(*out);
            *out = NULL;
            kn_diag_add(d, KN_ERROR, "%s: out of memory", path);
        }
        munmap(m, size);
    }
    return s;
}
