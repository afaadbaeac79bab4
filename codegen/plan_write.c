/* Writes a kn_graph as a plan file (runtime/plan_format.h):
 * deterministic (same graph and options → same bytes), weights aligned
 * for mmap, written to a temporary file and renamed into place. */
#include "codegen/plan_write.h"
#include "ir/arena.h"
#include "runtime/plan_format.h"
#include "codegen/cuda/program.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- growable byte buffers ---- */

typedef struct buf {
    const kn_allocator *a;
    uint8_t *p;
    size_t n, cap;
    bool failed;
} buf;

static uint64_t put(buf *b, const void *src, size_t n)
{
    uint64_t at = b->n;
    if (b->failed)
        return at;
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->n + n)
            nc *= 2;
        uint8_t *np = kn_mem_realloc(b->a, b->p, nc);
        if (!np) {
            b->failed = true;
            return at;
        }
        b->p = np;
        b->cap = nc;
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
    return at;
}

static void align(buf *b, size_t to)
{
    static const uint8_t zero[64];
    while (b->n % to && !b->failed)
        put(b, zero, to - b->n % to > sizeof zero ? sizeof zero : to - b->n % to);
}

static uint64_t put_aligned(buf *b, const void *src, size_t n)
{
    align(b, 8);
    return put(b, src, n);
}

/* ---- writer state ---- */

typedef struct wctx {
    const kn_allocator *a;
    kn_diag *diag;
    buf strings, meta, graphs, values, nodes, ids, attrs, blob, consts, buffers;
    buf cu_kernels, cu_images, cu_slots, cu_steps, cu_args, cu_params, cu_blobs;
    buf named; /* KN_SEC_NAMED, empty when the plan has no named blobs */
    buf cup_kernels, cup_images, cup_slots, cup_steps, cup_args, cup_params, cup_blobs; /* the prefill program */
    bool has_prefill;
    buf cub[KN_PLAN_MAX_DECODE_BATCHES][KN_SEC_CU_N]; /* the batched decode programs */
    uint32_t n_batch;
        uint32_t *root_const; /* main graph value id → CONSTS index */
    /* interned string → offset (open addressing on the pointer) */
    kn_str *skeys;
    uint32_t *svals;
    uint32_t scap, sn;
    /* graph pointers in plan order */
    const kn_graph **gs;
    uint32_t n_gs, cap_gs;
    /* constants, in plan order, with their weight offsets */
    const kn_tensor **cs;
    uint64_t *c_off;
    uint32_t n_cs, cap_cs, cap_coff;
    uint64_t weights_size;
    bool has_cuda;
    bool persistent; /* a program has a zero slot: format version 3 */
} wctx;

static uint32_t str_of(wctx *w, const char *s)
{
    if (!s)
        return KN_PLAN_NONE;
    if ((w->sn + 1) * 2 > w->scap) {
        uint32_t nc = w->scap ? w->scap * 2 : 1024;
        kn_str *nk = kn_mem_alloc(w->a, nc * sizeof *nk);
        uint32_t *nv = kn_mem_alloc(w->a, nc * sizeof *nv);
        if (!nk || !nv) {
            kn_mem_free(w->a, nk);
            kn_mem_free(w->a, nv);
            w->strings.failed = true;
            return 0;
        }
        memset(nk, 0, nc * sizeof *nk);
        for (uint32_t i = 0; i < w->scap; i++) {
            if (!w->skeys[i])
                continue;
            uint32_t j = (uint32_t)(((uintptr_t)w->skeys[i] >> 4) * 2654435761u) & (nc - 1);
            while (nk[j])
                j = (j + 1) & (nc - 1);
            nk[j] = w->skeys[i];
            nv[j] = w->svals[i];
        }
        kn_mem_free(w->a, w->skeys);
        kn_mem_free(w->a, w->svals);
        w->skeys = nk;
        w->svals = nv;
        w->scap = nc;
    }
    uint32_t j = (uint32_t)(((uintptr_t)s >> 4) * 2654435761u) & (w->scap - 1);
    while (w->skeys[j]) {
        if (w->skeys[j] == s)
            return w->svals[j];
        j = (j + 1) & (w->scap - 1);
    }
    uint32_t off = (uint32_t)put(&w->strings, s, strlen(s) + 1);
    w->skeys[j] = s;
    w->svals[j] = off;
    w->sn++;
    return off;
}

/* Constant data to place in WEIGHTS; returns its index in CONSTS. */
static uint32_t add_const(wctx *w, const kn_tensor *t)
{
    if (kn_mem_grow(w->a, (void **)&w->cs, &w->cap_cs, w->n_cs + 1, sizeof *w->cs) != KN_OK ||
        kn_mem_grow(w->a, (void **)&w->c_off, &w->cap_coff, w->n_cs + 1, sizeof *w->c_off) != KN_OK) {
        w->consts.failed = true;
        return 0;
    }
    kn_plan_const pc = {0};
    pc.name = str_of(w, t->name ? t->name : "");
    pc.dtype = t->dtype;
    pc.rank = t->rank;
    pc.dims = put_aligned(&w->blob, t->dims, (size_t)t->rank * sizeof(int64_t));
    pc.n_elems = t->n_elems;
    if (t->dtype == KN_STRING) {
        const kn_bytes *s = t->data;
        align(&w->blob, 8);
        pc.data = w->blob.n;
        for (int64_t i = 0; i < t->n_elems; i++) {
            uint64_t len = s[i].len;
            put(&w->blob, &len, sizeof len);
            put(&w->blob, s[i].data, s[i].len);
        }
        pc.nbytes = w->blob.n - pc.data;
        w->c_off[w->n_cs] = UINT64_MAX;
    } else {
        w->weights_size = (w->weights_size + KN_PLAN_WEIGHT_ALIGN - 1) & ~(uint64_t)(KN_PLAN_WEIGHT_ALIGN - 1);
        pc.data = w->weights_size;
        pc.nbytes = t->nbytes;
        w->c_off[w->n_cs] = pc.data;
        w->weights_size += t->nbytes;
    }
    w->cs[w->n_cs] = t;
    put(&w->consts, &pc, sizeof pc);
    return w->n_cs++;
}

static uint64_t put_type(wctx *w, const kn_type *t, int depth)
{
    align(&w->blob, 8);
    uint64_t at = w->blob.n;
    int32_t hdr[4] = {t->kind, t->dtype, t->kind == KN_TYPE_TENSOR || t->kind == KN_TYPE_SPARSE_TENSOR ? t->shape.rank : -1,
                      t->elem && depth < 32 ? 1 : 0};
    put(&w->blob, hdr, sizeof hdr);
    for (int32_t i = 0; i < hdr[2]; i++) {
        int64_t v = t->shape.dims[i].value;
        uint32_t sym[2] = {t->shape.dims[i].sym ? str_of(w, t->shape.dims[i].sym) : KN_PLAN_NONE, 0};
        put(&w->blob, &v, sizeof v);
        put(&w->blob, sym, sizeof sym);
    }
    if (hdr[3])
        put_type(w, t->elem, depth + 1);
    return at;
}

static uint32_t graph_index(const wctx *w, const kn_graph *g)
{
    for (uint32_t i = 0; i < w->n_gs; i++)
        if (w->gs[i] == g)
            return i;
    return KN_PLAN_NONE;
}

static void collect_graph(const kn_graph *g, int depth, void *ctx)
{
    (void)depth;
    wctx *w = ctx;
    if (w->graphs.failed) /* a graph missed: the order would be wrong, keep none */
        return;
    if (kn_mem_grow(w->a, (void **)&w->gs, &w->cap_gs, w->n_gs + 1, sizeof *w->gs) != KN_OK) {
        w->graphs.failed = true;
        return;
    }
    w->gs[w->n_gs++] = g;
}

static void put_attr(wctx *w, const kn_attr *a)
{
    kn_plan_attr pa = {0};
    pa.name = str_of(w, a->name);
    pa.kind = a->kind;
    pa.n = a->n;
    align(&w->blob, 8);
    uint64_t start = w->blob.n;
    switch (a->kind) {
    case KN_ATTR_FLOAT: put(&w->blob, &a->u.f, sizeof a->u.f); break;
    case KN_ATTR_INT: put(&w->blob, &a->u.i, sizeof a->u.i); break;
    case KN_ATTR_STRING: put(&w->blob, a->u.s.data, a->u.s.len); break;
    case KN_ATTR_FLOATS: put(&w->blob, a->u.floats, a->n * sizeof(float)); break;
    case KN_ATTR_INTS: put(&w->blob, a->u.ints, a->n * sizeof(int64_t)); break;
    case KN_ATTR_STRINGS:
        for (uint32_t i = 0; i < a->n; i++) {
            uint64_t len = a->u.strings[i].len;
            put(&w->blob, &len, sizeof len);
            put(&w->blob, a->u.strings[i].data, a->u.strings[i].len);
        }
        break;
    case KN_ATTR_TENSOR:
    case KN_ATTR_TENSORS: {
        uint32_t n = a->kind == KN_ATTR_TENSOR ? 1 : a->n;
        uint32_t *idx = kn_mem_alloc(w->a, (n + 1) * sizeof *idx);
        if (!idx) {
            w->blob.failed = true;
            break;
        }
        for (uint32_t i = 0; i < n; i++)
            idx[i] = add_const(w, a->kind == KN_ATTR_TENSOR ? a->u.t : a->u.tensors[i]);
        start = put_aligned(&w->blob, idx, n * sizeof *idx);
        kn_mem_free(w->a, idx);
        break;
    }
    case KN_ATTR_GRAPH:
    case KN_ATTR_GRAPHS: {
        uint32_t n = a->kind == KN_ATTR_GRAPH ? 1 : a->n;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t gi = graph_index(w, a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[i]);
            put(&w->blob, &gi, sizeof gi);
        }
        break;
    }
    case KN_ATTR_TYPE:
    case KN_ATTR_TYPES: {
        uint32_t n = a->kind == KN_ATTR_TYPE ? 1 : a->n;
        uint64_t *offs = kn_mem_alloc(w->a, (n + 1) * sizeof *offs);
        if (!offs) {
            w->blob.failed = true;
            break;
        }
        for (uint32_t i = 0; i < n; i++)
            offs[i] = put_type(w, a->kind == KN_ATTR_TYPE ? a->u.tp : a->u.types[i], 0);
        start = put_aligned(&w->blob, offs, n * sizeof *offs);
        kn_mem_free(w->a, offs);
        break;
    }
    default: break;
    }
    pa.payload = start;
    pa.size = w->blob.n - start;
    put(&w->attrs, &pa, sizeof pa);
}

static void put_graph(wctx *w, uint32_t gi)
{
    const kn_graph *g = w->gs[gi];
    put(&w->ids, g->inputs, g->n_inputs * sizeof(kn_id));
    put(&w->ids, g->outputs, g->n_outputs * sizeof(kn_id));
    for (kn_id v = 0; v < g->n_values; v++) {
        const kn_value *val = &g->values[v];
        kn_plan_value pv = {0};
        pv.name = str_of(w, val->name);
        pv.kind = val->kind;
        pv.producer = val->kind == KN_VAL_NODE ? val->producer : KN_PLAN_NONE;
        pv.out_index = val->out_index;
        pv.outer = val->kind == KN_VAL_OUTER ? val->outer : KN_PLAN_NONE;
        pv.constant = val->kind == KN_VAL_CONST ? add_const(w, val->tensor) : KN_PLAN_NONE;
        if (!g->parent && w->root_const) /* the main graph's constants, for CUDA weight slots */
            w->root_const[v] = pv.constant;
        pv.type = put_type(w, &val->type, 0);
        put(&w->values, &pv, sizeof pv);
        if (val->kind == KN_VAL_NODE) {
            kn_plan_buffer pb = {gi, v, -1};
            int64_t n = val->type.kind == KN_TYPE_TENSOR ? kn_shape_numel(&val->type.shape) : -1;
            size_t nb;
            if (n >= 0 && val->type.dtype != KN_STRING && kn_dtype_nbytes(val->type.dtype, n, &nb) == KN_OK)
                pb.bytes = (int64_t)nb;
            put(&w->buffers, &pb, sizeof pb);
        }
    }
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        kn_plan_node pn = {0};
        pn.name = str_of(w, n->name);
        pn.op_type = str_of(w, n->op_type);
        pn.domain = str_of(w, n->domain);
        pn.function = n->function ? str_of(w, n->function) : KN_PLAN_NONE;
        pn.opset = n->opset;
        pn.inputs = (uint32_t)(w->ids.n / 4);
        pn.n_inputs = n->n_inputs;
        put(&w->ids, n->inputs, n->n_inputs * sizeof(kn_id));
        pn.outputs = (uint32_t)(w->ids.n / 4);
        pn.n_outputs = n->n_outputs;
        put(&w->ids, n->outputs, n->n_outputs * sizeof(kn_id));
        pn.attrs = (uint32_t)(w->attrs.n / sizeof(kn_plan_attr));
        pn.n_attrs = n->n_attrs;
        for (uint32_t i = 0; i < n->n_attrs; i++)
            put_attr(w, &n->attrs[i]);
        put(&w->nodes, &pn, sizeof pn);
    }
}

static void put_kv(wctx *w, kn_graph *g, const char *key, const char *value)
{
    kn_str k, v;
    if (kn_graph_intern_cstr(g, key, &k) != KN_OK || kn_graph_intern_cstr(g, value, &v) != KN_OK) {
        w->meta.failed = true;
        return;
    }
    kn_plan_kv kv = {str_of(w, k), str_of(w, v)};
    put(&w->meta, &kv, sizeof kv);
}

static void put_meta(wctx *w, kn_graph *g, const kn_plan_options *o)
{
    const kn_model_info *m = g->info;
    char tmp[64];
    put_kv(w, g, "kiln.version", KN_VERSION_STRING);
    put_kv(w, g, "build.options", o && o->options ? o->options : "");
    put_kv(w, g, "build.targets", o && o->targets ? o->targets : "cpu");
    const char *base = m->path ? strrchr(m->path, '/') : NULL;
    put_kv(w, g, "model.file", base ? base + 1 : m->path ? m->path : "");
    put_kv(w, g, "model.producer_name", m->producer_name ? m->producer_name : "");
    put_kv(w, g, "model.producer_version", m->producer_version ? m->producer_version : "");
    put_kv(w, g, "model.domain", m->domain ? m->domain : "");
    snprintf(tmp, sizeof tmp, "%" PRId64, m->ir_version);
    put_kv(w, g, "model.ir_version", tmp);
    snprintf(tmp, sizeof tmp, "%" PRId64, m->model_version);
    put_kv(w, g, "model.model_version", tmp);
    for (uint32_t i = 0; i < m->n_opsets; i++) {
        char key[512];
        snprintf(key, sizeof key, "opset.%s", *m->opsets[i].domain ? m->opsets[i].domain : "ai.onnx");
        snprintf(tmp, sizeof tmp, "%" PRId64, m->opsets[i].version);
        put_kv(w, g, key, tmp);
    }
    for (uint32_t i = 0; i < m->n_metadata; i++) {
        size_t kl = strlen(m->metadata[i].key) + 8;
        char *key = kn_mem_alloc(w->a, kl);
        if (!key) {
            w->meta.failed = true;
            return;
        }
        snprintf(key, kl, "meta.%s", m->metadata[i].key);
        put_kv(w, g, key, m->metadata[i].value);
        kn_mem_free(w->a, key);
    }
}

/* ---- named blobs ---- */

/* The NAMED section: u32 count, u32 0, the entries, then each blob's bytes
 * 8-byte aligned (offsets from the section's start). */
static kn_status put_named(wctx *w, kn_graph *g, const kn_plan_named_in *in, uint32_t n, const char *path)
{
    if (n > KN_PLAN_MAX_NAMED) {
        kn_diag_add(w->diag, KN_ERROR, "%s: more than %u named blobs", path, KN_PLAN_MAX_NAMED);
        return KN_ERR_INVALID;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!in[i].name || !*in[i].name || (in[i].size && !in[i].data)) {
            kn_diag_add(w->diag, KN_ERROR, "%s: named blob %u has no name or no data", path, i);
            return KN_ERR_INVALID;
        }
        for (uint32_t k = 0; k < i; k++)
            if (strcmp(in[k].name, in[i].name) == 0) {
                kn_diag_add(w->diag, KN_ERROR, "%s: two named blobs are called '%s'", path, in[i].name);
                return KN_ERR_INVALID;
            }
    }
    uint32_t head[2] = {n, 0};
    put(&w->named, head, sizeof head);
    uint64_t at = sizeof head + (uint64_t)n * sizeof(kn_plan_named);
    for (uint32_t i = 0; i < n; i++) {
        kn_str name;
        if (kn_graph_intern_cstr(g, in[i].name, &name) != KN_OK) {
            w->named.failed = true;
            return KN_OK;
        }
        at = (at + 7) & ~(uint64_t)7;
        kn_plan_named e = {str_of(w, name), 0, at, in[i].size};
        put(&w->named, &e, sizeof e);
        at += in[i].size;
    }
    for (uint32_t i = 0; i < n; i++)
        put_aligned(&w->named, in[i].data, in[i].size);
    return KN_OK;
}

/* ---- target cuda ---- */

/* One CUDA program into its seven sections (`sec`: kernels, images,
 * slots, steps, args, params, blobs) and META keys `pre`.* ("cuda" for
 * the main program, "cuda.prefill" for a decoder's prefill program,
 * "cuda.batchK" for its batched decode program K). */
static void put_cuda(wctx *w, kn_graph *g, const kn_cu_program *p, buf *const *sec, const char *pre)
{
    char tmp[128], key[96];
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)p->pool_bytes);
    snprintf(key, sizeof key, "%s.pool_bytes", pre);
    put_kv(w, g, key, tmp);
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)p->naive_bytes);
    snprintf(key, sizeof key, "%s.naive_bytes", pre);
    put_kv(w, g, key, tmp);
    size_t pos = 0;
    tmp[0] = 0;
    for (uint32_t i = 0; i < p->n_archs && pos < sizeof tmp - 16; i++)
        pos += (size_t)snprintf(tmp + pos, sizeof tmp - pos, "%s%s%u", i ? "," : "",
                                p->archs[i] == KN_CU_ARCH_PTX ? "ptx" : "sm_",
                                p->archs[i] == KN_CU_ARCH_PTX ? p->archs[i > 0 ? i - 1 : 0] : p->archs[i]);
    snprintf(key, sizeof key, "%s.archs", pre);
    put_kv(w, g, key, tmp);
    snprintf(tmp, sizeof tmp, "%u", p->n_kernels);
    snprintf(key, sizeof key, "%s.kernels", pre);
    put_kv(w, g, key, tmp);
    snprintf(tmp, sizeof tmp, "%u", p->n_steps);
    snprintf(key, sizeof key, "%s.steps", pre);
    put_kv(w, g, key, tmp);
    if (p->has_zero) { /* the slot the runtime zeroes once (KN_ARG_PERSIST) */
        w->persistent = true;
        snprintf(tmp, sizeof tmp, "%u", p->zero_slot);
        snprintf(key, sizeof key, "%s.zero_slot", pre);
        put_kv(w, g, key, tmp);
    }
    uint64_t img_bytes = 0;
    uint32_t n_img = 0;
    for (uint32_t k = 0; k < p->n_kernels; k++)
        for (uint32_t i = 0; i < p->kernels[k].n_images; i++) {
            img_bytes += p->kernels[k].images[i].size;
            n_img++;
        }
    snprintf(tmp, sizeof tmp, "%u", n_img);
    snprintf(key, sizeof key, "%s.images", pre);
    put_kv(w, g, key, tmp);
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)img_bytes);
    snprintf(key, sizeof key, "%s.image_bytes", pre);
    put_kv(w, g, key, tmp);
    if (p->kv_rows > 0) { /* steps read the session's KV cache */
        snprintf(tmp, sizeof tmp, "%lld", (long long)p->kv_rows);
        snprintf(key, sizeof key, "%s.kv_rows", pre);
    put_kv(w, g, key, tmp);
        snprintf(tmp, sizeof tmp, "%lld", (long long)p->kv_tokens);
        snprintf(key, sizeof key, "%s.kv_tokens", pre);
    put_kv(w, g, key, tmp);
    }
    uint32_t img = 0;
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        const kn_cu_kernel *kk = &p->kernels[k];
        kn_plan_cu_kernel pk = {str_of(w, kk->entry), img, kk->n_images, 0, kk->hash};
        put(sec[0], &pk, sizeof pk);
        for (uint32_t i = 0; i < kk->n_images; i++) {
            align(sec[6], 256);
            kn_plan_cu_image pi = {k, kk->images[i].arch, put(sec[6], kk->images[i].data, kk->images[i].size),
                                   kk->images[i].size};
            put(sec[1], &pi, sizeof pi);
            img++;
        }
    }
    for (uint32_t i = 0; i < p->n_slots; i++) {
        const kn_cu_slot *sl = &p->slots[i];
        kn_plan_cu_slot ps;
        memset(&ps, 0, sizeof ps);
        ps.place = sl->place;
        ps.index = sl->place == KN_CU_WEIGHT
                       ? (w->root_const && sl->index < g->n_values ? w->root_const[sl->index] : KN_PLAN_NONE)
                       : sl->index;
        ps.offset = sl->offset;
        ps.nbytes = sl->nbytes;
        ps.dtype = sl->dtype;
        ps.rank = sl->rank;
        for (int32_t k = 0; k < sl->rank && k < KN_CU_MAX_RANK; k++)
            ps.dims[k] = sl->dims[k];
        ps.value = sl->value;
        put(sec[2], &ps, sizeof ps);
    }
    for (uint32_t i = 0; i < p->n_steps; i++) {
        const kn_cu_step *st = &p->steps[i];
        kn_plan_cu_step ps = {st->kind, st->kernel, {st->grid[0], st->grid[1], st->grid[2]},
                              {st->block[0], st->block[1], st->block[2]}, st->smem, st->first_arg, st->n_args,
                              st->node, st->gemm};
        put(sec[3], &ps, sizeof ps);
    }
    for (uint32_t i = 0; i < p->n_args; i++) {
        kn_plan_cu_arg pa = {p->args[i].kind, p->args[i].slot, p->args[i].offset, p->args[i].size};
        put(sec[4], &pa, sizeof pa);
    }
    put(sec[5], p->params, p->n_params);
    /* graph outputs' slots, as META: the runtime copies them out */
    for (uint32_t i = 0; i < p->n_outputs; i++) {
        char val[32];
        snprintf(key, sizeof key, "%s.output.%u", pre, i);
        snprintf(val, sizeof val, "%u", p->outputs[i]);
        put_kv(w, g, key, val);
    }
}

/* ---- the file ---- */

/* The temporary file being written, for the CLI's signal handler. */
static char *volatile pending_tmp;

void kn_plan_cleanup_on_signal(void)
{
    char *p = pending_tmp;
    if (p)
        unlink(p);
}

/* The plan checksum, computed as the bytes are written: whole 64-bit words
 * go through kn_plan_checksum_update, a partial word waits for the next
 * write. (The checksum field itself is written as zero.) */
typedef struct hstate {
    uint64_t h;
    uint8_t carry[8];
    unsigned n_carry;
} hstate;

static void hash_feed(hstate *hs, const uint8_t *p, size_t n)
{
    while (n && hs->n_carry) {
        hs->carry[hs->n_carry++] = *p++;
        n--;
        if (hs->n_carry == 8) {
            hs->h = kn_plan_checksum_update(hs->h, hs->carry, 8);
            hs->n_carry = 0;
        }
    }
    size_t whole = n & ~(size_t)7;
    hs->h = kn_plan_checksum_update(hs->h, p, whole);
    for (size_t i = whole; i < n; i++)
        hs->carry[hs->n_carry++] = p[i];
}

static uint64_t hash_final(hstate *hs)
{
    return kn_plan_checksum_update(hs->h, hs->carry, hs->n_carry);
}

static hstate *cur_hash;

static kn_status write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (cur_hash)
        hash_feed(cur_hash, b, n);
    while (n) {
        ssize_t k = write(fd, b, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return KN_ERR_IO;
        b += k;
        n -= (size_t)k;
    }
    return KN_OK;
}

/* The weights section (most of a model's plan) is written around the page
 * cache where the file system allows it: through a second, O_DIRECT
 * descriptor, in 8 MiB chunks staged in an aligned buffer. A buffered
 * write makes the kernel copy every byte into the page cache and write it
 * back later, which on small machines takes longer than the whole compile
 * (a 2.2 GB fp16 1B-parameter plan: ~230-630 MB/s buffered here, ~900 MB/s
 * direct). Where O_DIRECT cannot be opened or a direct write is refused
 * (tmpfs, some network file systems), the rest goes through the buffered
 * descriptor: the bytes are the same either way. */
#define DW_ALIGN 4096u
#define DW_CHUNK (8u << 20)

typedef struct dwriter {
    int bfd;          /* the plan's descriptor (buffered) */
    int dfd;          /* O_DIRECT descriptor, -1 when writing through bfd */
    uint8_t *buf;     /* DW_CHUNK bytes, DW_ALIGN-aligned (direct mode) */
    size_t n;         /* bytes staged in buf */
    uint64_t off;     /* file offset of buf[0] (direct) or of the next byte (buffered) */
    hstate *hs;
} dwriter;

static kn_status pwrite_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t k = pwrite(fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return KN_ERR_IO;
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return KN_OK;
}

static void dw_open(dwriter *dw, const char *path, int bfd, uint64_t off, hstate *hs)
{
    *dw = (dwriter){bfd, -1, NULL, 0, off, hs};
#ifdef O_DIRECT
    if (off % DW_ALIGN || getenv("KILN_PLAN_NO_DIRECT_IO"))
        return;
    void *b = NULL;
    if (posix_memalign(&b, DW_ALIGN, DW_CHUNK) != 0)
        return;
    int fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    if (fd < 0) {
        free(b);
        return;
    }
    dw->dfd = fd;
    dw->buf = b;
#else
    (void)path;
#endif
}

/* Writes the staged bytes (padded with zeros to DW_ALIGN: the caller cuts
 * the file to its size at the end); a refused direct write moves to bfd. */
static kn_status dw_flush(dwriter *dw)
{
    if (!dw->n)
        return KN_OK;
    size_t len = (dw->n + DW_ALIGN - 1) & ~(size_t)(DW_ALIGN - 1);
    memset(dw->buf + dw->n, 0, len - dw->n);
    kn_status s = pwrite_all(dw->dfd, dw->buf, len, dw->off);
    if (s != KN_OK && errno == EINVAL) {
        close(dw->dfd);
        dw->dfd = -1;
        s = pwrite_all(dw->bfd, dw->buf, dw->n, dw->off);
    }
    dw->off += dw->n;
    dw->n = 0;
    return s;
}

/* n bytes of p (NULL: zeros) */
static kn_status dw_put(dwriter *dw, const uint8_t *p, size_t n)
{
    static const uint8_t zero[4096];
    while (n) {
        size_t k;
        if (dw->dfd < 0) {
            k = p ? n : (n < sizeof zero ? n : sizeof zero);
            hash_feed(dw->hs, p ? p : zero, k);
            KN_TRY(pwrite_all(dw->bfd, p ? p : zero, k, dw->off));
            dw->off += k;
        } else {
            k = DW_CHUNK - dw->n < n ? DW_CHUNK - dw->n : n;
            if (p)
                memcpy(dw->buf + dw->n, p, k);
            else
                memset(dw->buf + dw->n, 0, k);
            hash_feed(dw->hs, dw->buf + dw->n, k);
            dw->n += k;
            if (dw->n == DW_CHUNK)
                KN_TRY(dw_flush(dw));
        }
        if (p)
            p += k;
        n -= k;
    }
    return KN_OK;
}

static kn_status dw_close(dwriter *dw, uint64_t file_size)
{
    kn_status s = KN_OK;
    if (dw->dfd >= 0) {
        s = dw_flush(dw);
        if (dw->dfd >= 0 && close(dw->dfd) != 0 && s == KN_OK)
            s = KN_ERR_IO;
        if (s == KN_OK && ftruncate(dw->bfd, (off_t)file_size) != 0)
            s = KN_ERR_IO;
    }
    free(dw->buf);
    dw->buf = NULL;
    dw->dfd = -1;
    return s;
}

static kn_status write_file(wctx *w, const char *path, kn_diag *d)
{
    KN_TRY(kn_check_output_path(path, d));
    buf *all_secs[] = {&w->strings,   &w->meta,      &w->graphs,   &w->values,   &w->nodes,   &w->ids,
                       &w->attrs,     &w->blob,      &w->consts,   &w->buffers,  &w->cu_kernels, &w->cu_images,
                       &w->cu_slots,  &w->cu_steps,  &w->cu_args,  &w->cu_params, &w->cu_blobs, &w->named,
                       &w->cup_kernels, &w->cup_images, &w->cup_slots, &w->cup_steps, &w->cup_args,
                       &w->cup_params, &w->cup_blobs};
    const uint32_t all_kinds[] = {KN_SEC_STRINGS,    KN_SEC_META,      KN_SEC_GRAPHS,   KN_SEC_VALUES,
                                  KN_SEC_NODES,      KN_SEC_IDS,       KN_SEC_ATTRS,    KN_SEC_BLOB,
                                  KN_SEC_CONSTS,     KN_SEC_BUFFERS,   KN_SEC_CU_KERNELS, KN_SEC_CU_IMAGES,
                                  KN_SEC_CU_SLOTS,   KN_SEC_CU_STEPS,  KN_SEC_CU_ARGS,  KN_SEC_CU_PARAMS,
                                  KN_SEC_CU_BLOBS,   KN_SEC_NAMED,     KN_SEC_CUP_KERNELS, KN_SEC_CUP_IMAGES,
                                  KN_SEC_CUP_SLOTS,  KN_SEC_CUP_STEPS, KN_SEC_CUP_ARGS, KN_SEC_CUP_PARAMS,
                                  KN_SEC_CUP_BLOBS};
    enum {
        N_FIXED = sizeof all_kinds / sizeof all_kinds[0],
        N_ALL = N_FIXED + KN_PLAN_MAX_DECODE_BATCHES * KN_SEC_CU_N
    };
    buf *secs[N_ALL];
    uint32_t kinds[N_ALL];
    int NS = 0;
    for (int i = 0; i < N_FIXED; i++) {
        bool cu = all_kinds[i] >= KN_SEC_CU_KERNELS && all_kinds[i] < KN_SEC_CU_END;
        bool cup = all_kinds[i] >= KN_SEC_CUP_KERNELS && all_kinds[i] < KN_SEC_CUP_END;
        if ((cu && !w->has_cuda) || (cup && !w->has_prefill) || (all_kinds[i] == KN_SEC_NAMED && w->named.n == 0))
            continue;
        secs[NS] = all_secs[i];
        kinds[NS++] = all_kinds[i];
    }
    for (uint32_t b = 0; w->has_prefill && b < w->n_batch; b++)
        for (int k = 0; k < KN_SEC_CU_N; k++) {
            secs[NS] = &w->cub[b][k];
            kinds[NS++] = (uint32_t)(KN_SEC_CUB(b) + k);
        }
    kn_plan_section table[N_ALL + 1];
    uint64_t off = KN_PLAN_HEADER_SIZE + (uint64_t)(NS + 1) * sizeof table[0];
    for (int i = 0; i < NS; i++) {
        off = (off + 63) & ~(uint64_t)63;
        table[i].kind = kinds[i];
        table[i].reserved = 0;
        table[i].offset = off;
        table[i].size = secs[i]->n;
        off += secs[i]->n;
    }
    uint64_t woff = (off + KN_PLAN_WEIGHTS_PAGE - 1) & ~(uint64_t)(KN_PLAN_WEIGHTS_PAGE - 1);
    table[NS].kind = KN_SEC_WEIGHTS;
    table[NS].reserved = 0;
    table[NS].offset = woff;
    table[NS].size = w->weights_size;
    uint64_t file_size = woff + w->weights_size;

    kn_plan_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, KN_PLAN_MAGIC, 8);
    h.version = w->persistent ? KN_PLAN_VERSION : KN_PLAN_VERSION_BASE;
    h.header_size = KN_PLAN_HEADER_SIZE;
    h.file_size = file_size;
    h.sections_off = KN_PLAN_HEADER_SIZE;
    h.n_sections = (uint32_t)NS + 1;
    snprintf(h.kiln_version, sizeof h.kiln_version, "%s", KN_VERSION_STRING);

    size_t plen = strlen(path);
    char *tmp = kn_mem_alloc(w->a, plen + 16);
    if (!tmp)
        return KN_ERR_NOMEM;
    snprintf(tmp, plen + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        kn_diag_add(d, KN_ERROR, "%s: cannot create the plan: %s", path, strerror(errno));
        kn_mem_free(w->a, tmp);
        return KN_ERR_IO;
    }
    pending_tmp = tmp;
    hstate hs = {KN_PLAN_CHECKSUM_SEED, {0}, 0};
    cur_hash = &hs;
    static const uint8_t zero[4096];
    kn_status s = write_all(fd, &h, sizeof h);
    if (s == KN_OK)
        s = write_all(fd, table, (size_t)(NS + 1) * sizeof table[0]);
    uint64_t pos = KN_PLAN_HEADER_SIZE + (uint64_t)(NS + 1) * sizeof table[0];
    for (int i = 0; i < NS && s == KN_OK; i++) {
        if (table[i].offset > pos)
            s = write_all(fd, zero, (size_t)(table[i].offset - pos));
        if (s == KN_OK)
            s = write_all(fd, secs[i]->p, secs[i]->n);
        pos = table[i].offset + secs[i]->n;
    }
    if (s == KN_OK && woff > pos)
        s = write_all(fd, zero, (size_t)(woff - pos));
    pos = woff;
    dwriter dw;
    dw_open(&dw, tmp, fd, woff, &hs);
    for (uint32_t i = 0; i < w->n_cs && s == KN_OK; i++) {
        if (w->c_off[i] == UINT64_MAX)
            continue;
        uint64_t at = woff + w->c_off[i];
        if (at > pos)
            s = dw_put(&dw, NULL, (size_t)(at - pos));
        if (s == KN_OK && w->cs[i]->nbytes)
            s = dw_put(&dw, w->cs[i]->data, w->cs[i]->nbytes);
        pos = at + w->cs[i]->nbytes;
    }
    if (s == KN_OK && pos < file_size)
        s = dw_put(&dw, NULL, (size_t)(file_size - pos));
    kn_status sc = dw_close(&dw, file_size);
    if (s == KN_OK)
        s = sc;
    /* the checksum of everything written (checksum field zero), patched in */
    cur_hash = NULL;
    if (s == KN_OK) {
        h.checksum = hash_final(&hs);
        if (pwrite(fd, &h.checksum, 8, 24) != 8)
            s = KN_ERR_IO;
    }
    if (s == KN_OK && (fchmod(fd, 0644) != 0 || fsync(fd) != 0))
        s = KN_ERR_IO;
    if (close(fd) != 0 && s == KN_OK)
        s = KN_ERR_IO;
    if (s == KN_OK && rename(tmp, path) != 0)
        s = KN_ERR_IO;
    if (s != KN_OK) {
        kn_diag_add(d, KN_ERROR, "%s: cannot write the plan: %s", path, strerror(errno));
        unlink(tmp);
    }
    pending_tmp = NULL;
    kn_mem_free(w->a, tmp);
    return s;
}

kn_status kn_plan_write(kn_graph *g, const kn_plan_options *o, const char *path, kn_diag *d)
{
    wctx w;
    memset(&w, 0, sizeof w);
    w.a = g->alloc;
    w.diag = d;
    buf *all[] = {&w.strings, &w.meta,       &w.graphs,    &w.values,   &w.nodes,   &w.ids,
                  &w.attrs,   &w.blob,       &w.consts,    &w.buffers,  &w.cu_kernels, &w.cu_images,
                  &w.cu_slots, &w.cu_steps,  &w.cu_args,   &w.cu_params, &w.cu_blobs, &w.named,
                  &w.cup_kernels, &w.cup_images, &w.cup_slots, &w.cup_steps, &w.cup_args, &w.cup_params,
                  &w.cup_blobs};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        all[i]->a = w.a;
    for (uint32_t b = 0; b < KN_PLAN_MAX_DECODE_BATCHES; b++)
        for (int k = 0; k < KN_SEC_CU_N; k++)
            w.cub[b][k].a = w.a;
    str_of(&w, ""); /* offset 0 is the empty string */
    w.root_const = kn_mem_alloc(w.a, ((size_t)g->n_values + 1) * sizeof *w.root_const);
    if (!w.root_const)
        w.consts.failed = true; /* reported and cleaned up below */
    kn_graph_walk(g, collect_graph, &w);
    kn_plan_graph zero_graph = {0};
    for (uint32_t i = 0; i < w.n_gs; i++)
        put(&w.graphs, &zero_graph, sizeof zero_graph); /* filled below */
    for (uint32_t i = 0; i < w.n_gs; i++)
        put_graph(&w, i);
    /* the graph table: slices in the order put_graph wrote them */
    {
        uint32_t fv = 0, fn = 0, ids = 0;
        for (uint32_t i = 0; i < w.n_gs && !w.graphs.failed; i++) {
            const kn_graph *gg = w.gs[i];
            kn_plan_graph pg = {0};
            pg.name = str_of(&w, gg->name ? gg->name : "");
            pg.parent = gg->parent ? graph_index(&w, gg->parent) : KN_PLAN_NONE;
            pg.first_value = fv;
            pg.n_values = gg->n_values;
            pg.first_node = fn;
            pg.n_nodes = gg->n_nodes;
            pg.inputs = ids;
            pg.n_inputs = gg->n_inputs;
            pg.outputs = ids + gg->n_inputs;
            pg.n_outputs = gg->n_outputs;
            ids += gg->n_inputs + gg->n_outputs;
            for (kn_id k = 0; k < gg->n_nodes; k++)
                ids += gg->nodes[k].n_inputs + gg->nodes[k].n_outputs;
            fv += gg->n_values;
            fn += gg->n_nodes;
            memcpy(w.graphs.p + (size_t)i * sizeof pg, &pg, sizeof pg);
        }
    }
    put_meta(&w, g, o);
    if (o && o->cuda) {
        buf *const main_secs[] = {&w.cu_kernels, &w.cu_images, &w.cu_slots, &w.cu_steps,
                                  &w.cu_args,    &w.cu_params, &w.cu_blobs};
        w.has_cuda = true;
        put_cuda(&w, g, o->cuda, main_secs, "cuda");
    }
    if (o && o->cuda && o->cuda_prefill) {
        buf *const pre_secs[] = {&w.cup_kernels, &w.cup_images, &w.cup_slots, &w.cup_steps,
                                 &w.cup_args,    &w.cup_params, &w.cup_blobs};
        w.has_prefill = true;
        put_cuda(&w, g, o->cuda_prefill, pre_secs, "cuda.prefill");
        for (uint32_t b = 0; b < o->n_cuda_batch && b < KN_PLAN_MAX_DECODE_BATCHES; b++) {
            buf *const bsecs[] = {&w.cub[b][0], &w.cub[b][1], &w.cub[b][2], &w.cub[b][3],
                                  &w.cub[b][4], &w.cub[b][5], &w.cub[b][6]};
            char pre[32];
            snprintf(pre, sizeof pre, "cuda.batch%u", b);
            put_cuda(&w, g, o->cuda_batch[b], bsecs, pre);
            w.n_batch = b + 1;
        }
    }
    kn_status s = KN_OK;
    if (o && o->n_named)
        s = put_named(&w, g, o->named, o->n_named, path);
    for (size_t i = 0; i < sizeof all / sizeof all[0] && s == KN_OK; i++)
        if (all[i]->failed)
            s = KN_ERR_NOMEM;
    for (uint32_t b = 0; b < w.n_batch && s == KN_OK; b++)
        for (int k = 0; k < KN_SEC_CU_N; k++)
            if (w.cub[b][k].failed)
                s = KN_ERR_NOMEM;
    if (s == KN_OK)
        s = write_file(&w, path, d);
    else if (s == KN_ERR_NOMEM)
        kn_diag_add(d, KN_ERROR, "%s: out of memory while building the plan", path);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        kn_mem_free(w.a, all[i]->p);
    for (uint32_t b = 0; b < KN_PLAN_MAX_DECODE_BATCHES; b++)
        for (int k = 0; k < KN_SEC_CU_N; k++)
            kn_mem_free(w.a, w.cub[b][k].p);
    kn_mem_free(w.a, w.skeys);
    kn_mem_free(w.a, w.svals);
    kn_mem_free(w.a, w.gs);
    kn_mem_free(w.a, w.cs);
    kn_mem_free(w.a, w.c_off);
    kn_mem_free(w.a, w.root_const);
    return s;
}
