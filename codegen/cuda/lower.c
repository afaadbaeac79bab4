/* Lowering for target cuda: binds the graph inputs' shapes, works out
 * every tensor's static shape by running the graph once on the CPU
 * reference backend (a probe), folds what depends only on constants and
 * shapes into constants, lowers every remaining node through its op's
 * emitter into kernels and steps, and plans device memory (one pool,
 * offsets from lifetimes). */
#include "codegen/cuda/lower.h"
#include "codegen/cuda/gemv_kernels.h"
#include "codegen/cuda/probe_kv.h"
#include "codegen/cuda/program.h"
#include "ir/arena.h"
#include "ir/stats.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const kn_emit_fn emitters[KN_OP_COUNT] = {
#define KN_EMIT(id) [KN_OP_##id] = kn_emit_##id,
#include "codegen/cuda/emitters.def"
#undef KN_EMIT
};

kn_emit_fn kn_cuda_emitter(kn_op op) { return (unsigned)op < KN_OP_COUNT ? emitters[op] : NULL; }

/* ---- program ---- */

void kn_cu_program_free(kn_cu_program *p)
{
    if (!p)
        return;
    for (uint32_t i = 0; i < p->n_kernels; i++) {
        kn_mem_free(p->a, p->kernels[i].source);
        for (uint32_t k = 0; k < p->kernels[i].n_images; k++)
            kn_mem_free(p->a, (void *)p->kernels[i].images[k].data);
        kn_mem_free(p->a, p->kernels[i].images);
    }
    kn_mem_free(p->a, p->kernels);
    kn_mem_free(p->a, p->slots);
    kn_mem_free(p->a, p->steps);
    kn_mem_free(p->a, p->args);
    kn_mem_free(p->a, p->params);
    kn_mem_free(p->a, p->outputs);
    memset(p, 0, sizeof *p);
}

/* ---- string builder ---- */

void kn_sb_printf(kn_sb *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        s->failed = true;
        return;
    }
    if (s->n + (size_t)n + 1 > s->cap) {
        size_t nc = s->cap ? s->cap : 1024;
        while (nc < s->n + (size_t)n + 1)
            nc *= 2;
        char *p = realloc(s->p, nc);
        if (!p) {
            s->failed = true;
            return;
        }
        s->p = p;
        s->cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(s->p + s->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->n += (size_t)n;
}

const char *kn_sb_str(const kn_sb *s) { return s->failed ? NULL : s->p ? s->p : ""; }

void kn_sb_free(kn_sb *s)
{
    free(s->p);
    memset(s, 0, sizeof *s);
}

const char *kn_cuda_type(kn_dtype t)
{
    switch (t) {
    case KN_F32: return "float";
    case KN_F64: return "double";
    case KN_F16: return "__half";
    case KN_BF16: return "__nv_bfloat16";
    case KN_I8: return "signed char";
    case KN_U8: return "unsigned char";
    case KN_I16: return "short";
    case KN_U16: return "unsigned short";
    case KN_I32: return "int";
    case KN_U32: return "unsigned int";
    case KN_I64: return "long long";
    case KN_U64: return "unsigned long long";
    case KN_BOOL: return "bool";
    default: return NULL;
    }
}

/* ---- the lowering state ---- */

typedef struct lower {
    kn_graph *g;
    kn_diag *d;
    kn_cu_program *p;
    const kn_allocator *a;
    kn_rt_tensor **probe;   /* per value: what the probe computed (owned) */
    bool *probe_skip;       /* per node: the probe stands in for it (shape_only_gemms) */
    uint32_t *slot_of;      /* per value: its slot, or KN_NONE */
    int64_t *first, *last;  /* per slot: first and last step that touches it */
    uint32_t *alias_of;     /* per slot: the slot whose bytes it shares, or KN_NONE */
    uint64_t *alias_off;    /* per slot: byte offset of an alias into its root (0 otherwise) */
    uint32_t cap_life;
    uint32_t n_unsupported;
    kn_status status;
    const kn_gemm_table *gemm_table; /* the GEMV/cuBLASLt choices */
    uint32_t arch;                   /* the plan's newest arch */
    uint32_t n_gemv;                 /* products given to the GEMV */
    kn_id *swiglu_of;                /* per node: the packed SwiGlu only reading its output 0, or KN_NONE */
    bool *fused;                     /* per node: a SwiGlu its product's launch computes (emits nothing) */
} lower;

#define KN_EMIT_SCRATCH 8 /* scratch buffers per node */

struct kn_emit {
    lower *L;
    const kn_node *node;
    kn_id node_index;
    kn_emit_tensor *ins, *outs;
    bool *in_present, *out_present;
    uint32_t scratch[KN_EMIT_SCRATCH]; /* slot per scratch index, KN_NONE until used */
    uint64_t persist[KN_EMIT_SCRATCH]; /* offset in the zero slot per PERSIST index, UINT64_MAX until used */
    kn_emit_tensor swiglu_out;         /* the SwiGlu reader's output (kn_emit_swiglu_reader) */
    bool swiglu_taken;                 /* KN_ARG_OUT 0 names swiglu_out's value */
};

static kn_status grow_life(lower *L)
{
    uint32_t need = L->p->n_slots + 1;
    if (need <= L->cap_life)
        return KN_OK;
    uint32_t nc = L->cap_life ? L->cap_life * 2 : 256;
    while (nc < need)
        nc *= 2;
    int64_t *f = kn_mem_realloc(L->a, L->first, nc * sizeof *f);
    if (!f)
        return KN_ERR_NOMEM;
    L->first = f;
    int64_t *l = kn_mem_realloc(L->a, L->last, nc * sizeof *l);
    if (!l)
        return KN_ERR_NOMEM;
    L->last = l;
    uint32_t *al = kn_mem_realloc(L->a, L->alias_of, nc * sizeof *al);
    if (!al)
        return KN_ERR_NOMEM;
    L->alias_of = al;
    uint64_t *ao = kn_mem_realloc(L->a, L->alias_off, nc * sizeof *ao);
    if (!ao)
        return KN_ERR_NOMEM;
    L->alias_off = ao;
    L->cap_life = nc;
    return KN_OK;
}

static kn_status new_slot(lower *L, const kn_cu_slot *s, uint32_t *id)
{
    kn_cu_program *p = L->p;
    KN_TRY(kn_mem_grow(L->a, (void **)&p->slots, &p->cap_slots, p->n_slots + 1, sizeof *p->slots));
    KN_TRY(grow_life(L));
    p->slots[p->n_slots] = *s;
    L->first[p->n_slots] = INT64_MAX;
    L->last[p->n_slots] = -1;
    L->alias_of[p->n_slots] = KN_NONE;
    L->alias_off[p->n_slots] = 0;
    *id = p->n_slots++;
    return KN_OK;
}

static void fill_shape(kn_cu_slot *s, const kn_rt_tensor *t)
{
    s->dtype = t->dtype;
    s->rank = t->rank;
    s->nbytes = t->nbytes;
    for (int32_t i = 0; i < t->rank && i < KN_CU_MAX_RANK; i++)
        s->dims[i] = t->dims[i];
}

/* The slot of value v (made on first use). */
static kn_status slot_for_value(lower *L, kn_id v, uint32_t *out)
{
    if (L->slot_of[v] != KN_NONE) {
        *out = L->slot_of[v];
        return KN_OK;
    }
    const kn_value *val = &L->g->values[v];
    const kn_rt_tensor *t = L->probe[v];
    kn_cu_slot s = {0};
    s.value = v;
    if (val->kind == KN_VAL_CONST) {
        s.place = KN_CU_WEIGHT;
        s.index = v; /* the plan writer turns it into the CONSTS index */
        const kn_tensor *ct = val->tensor;
        s.dtype = ct->dtype;
        s.rank = ct->rank;
        s.nbytes = ct->nbytes;
        for (int32_t i = 0; i < ct->rank && i < KN_CU_MAX_RANK; i++)
            s.dims[i] = ct->dims[i];
    } else {
        if (!t)
            return KN_ERR_INTERNAL;
        s.place = KN_CU_POOL;
        if (val->kind == KN_VAL_INPUT) {
            s.place = KN_CU_INPUT;
            for (uint32_t i = 0; i < L->g->n_inputs; i++)
                if (L->g->inputs[i] == v)
                    s.index = i;
        }
        fill_shape(&s, t);
    }
    KN_TRY(new_slot(L, &s, out));
    L->slot_of[v] = *out;
    return KN_OK;
}

/* ---- the emitter API ---- */

const kn_node *kn_emit_node(const kn_emit *e) { return e->node; }
int64_t kn_emit_opset(const kn_emit *e) { return e->node->opset; }
uint32_t kn_emit_n_inputs(const kn_emit *e) { return e->node->n_inputs; }
uint32_t kn_emit_n_outputs(const kn_emit *e) { return e->node->n_outputs; }

const kn_emit_tensor *kn_emit_in(const kn_emit *e, uint32_t i)
{
    return i < e->node->n_inputs && e->in_present[i] ? &e->ins[i] : NULL;
}

const kn_emit_tensor *kn_emit_out(const kn_emit *e, uint32_t i)
{
    return i < e->node->n_outputs && e->out_present[i] ? &e->outs[i] : NULL;
}

int64_t kn_emit_attr_int(const kn_emit *e, const char *name, int64_t def)
{
    const kn_attr *a = kn_node_attr(e->node, name);
    return a && a->kind == KN_ATTR_INT ? a->u.i : def;
}

float kn_emit_attr_float(const kn_emit *e, const char *name, float def)
{
    const kn_attr *a = kn_node_attr(e->node, name);
    return a && a->kind == KN_ATTR_FLOAT ? a->u.f : def;
}

const char *kn_emit_attr_str(const kn_emit *e, const char *name, const char *def)
{
    const kn_attr *a = kn_node_attr(e->node, name);
    return a && a->kind == KN_ATTR_STRING ? (const char *)a->u.s.data : def;
}

const int64_t *kn_emit_attr_ints(const kn_emit *e, const char *name, uint32_t *n)
{
    const kn_attr *a = kn_node_attr(e->node, name);
    *n = a && a->kind == KN_ATTR_INTS ? a->n : 0;
    return a && a->kind == KN_ATTR_INTS ? a->u.ints : NULL;
}

kn_status kn_emit_fail(kn_emit *e, kn_status s, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const kn_node *n = e->node;
    kn_diag_add(e->L->d, s == KN_ERR_UNSUPPORTED ? KN_WARNING : KN_ERROR, "%s: node '%s' (%s, opset %lld): %s%s",
                e->L->g->info->path, n->name, n->op_type, (long long)n->opset,
                s == KN_ERR_UNSUPPORTED ? "target cuda: " : "", msg);
    return s;
}

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

kn_status kn_emit_kernel(kn_emit *e, const char *source, const char *entry, uint32_t *kernel)
{
    lower *L = e->L;
    kn_cu_program *p = L->p;
    if (!source || !entry)
        return KN_ERR_NOMEM;
    size_t n = strlen(source);
    uint64_t h = fnv(source, n) ^ (fnv(entry, strlen(entry)) * 31);
    for (uint32_t i = 0; i < p->n_kernels; i++)
        if (p->kernels[i].hash == h && strcmp(p->kernels[i].source, source) == 0 &&
            strcmp(p->kernels[i].entry, entry) == 0) {
            *kernel = i;
            return KN_OK;
        }
    KN_TRY(kn_mem_grow(L->a, (void **)&p->kernels, &p->cap_kernels, p->n_kernels + 1, sizeof *p->kernels));
    kn_cu_kernel *k = &p->kernels[p->n_kernels];
    memset(k, 0, sizeof *k);
    k->source = kn_mem_alloc(L->a, n + 1);
    if (!k->source)
        return KN_ERR_NOMEM;
    memcpy(k->source, source, n + 1);
    if (kn_graph_intern_cstr(L->g, entry, &k->entry) != KN_OK) {
        kn_mem_free(L->a, k->source);
        return KN_ERR_NOMEM;
    }
    k->hash = h;
    *kernel = p->n_kernels++;
    return KN_OK;
}

static uint64_t put_params(lower *L, const void *data, size_t size)
{
    kn_cu_program *p = L->p;
    size_t at = (p->n_params + 7) & ~(size_t)7;
    if (at + size > p->cap_params) {
        size_t nc = p->cap_params ? p->cap_params : 4096;
        while (nc < at + size)
            nc *= 2;
        uint8_t *np = kn_mem_realloc(L->a, p->params, nc);
        if (!np) {
            L->status = KN_ERR_NOMEM;
            return 0;
        }
        p->params = np;
        p->cap_params = nc;
    }
    memset(p->params + p->n_params, 0, at - p->n_params);
    if (size)
        memcpy(p->params + at, data, size);
    p->n_params = at + size;
    return at;
}

static uint32_t step_index(lower *L) { return L->p->n_steps; }

static void touch(lower *L, uint32_t slot, int64_t step)
{
    if (L->first[slot] > step)
        L->first[slot] = step;
    if (L->last[slot] < step)
        L->last[slot] = step;
}

/* Converts an emitter argument to a program argument. */
static kn_status make_arg(kn_emit *e, const kn_emit_arg *a, kn_cu_arg *out)
{
    lower *L = e->L;
    memset(out, 0, sizeof *out);
    switch (a->kind) {
    case KN_ARG_IN:
    case KN_ARG_OUT: {
        bool in = a->kind == KN_ARG_IN;
        uint32_t n = in ? e->node->n_inputs : e->node->n_outputs;
        kn_id v = a->index < n ? (in ? e->node->inputs[a->index] : e->node->outputs[a->index]) : KN_NONE;
        if (!in && a->index == 0 && e->swiglu_taken)
            v = L->g->nodes[L->swiglu_of[e->node_index]].outputs[0];
        if (v == KN_NONE)
            return kn_emit_fail(e, KN_ERR_INTERNAL, "argument refers to a missing %s %u", in ? "input" : "output",
                                a->index);
        out->kind = KN_CU_ARG_SLOT;
        KN_TRY(slot_for_value(L, v, &out->slot));
        if (a->offset > L->p->slots[out->slot].nbytes)
            return kn_emit_fail(e, KN_ERR_INTERNAL, "argument offset %llu past the end of %s %u",
                                (unsigned long long)a->offset, in ? "input" : "output", a->index);
        out->offset = a->offset;
        uint32_t root = L->alias_of[out->slot] != KN_NONE ? L->alias_of[out->slot] : out->slot;
        touch(L, root, step_index(L));
        touch(L, out->slot, step_index(L));
        return KN_OK;
    }
    case KN_ARG_SCRATCH: {
        if (a->index >= KN_EMIT_SCRATCH)
            return kn_emit_fail(e, KN_ERR_INTERNAL, "scratch index %u over %d", a->index, KN_EMIT_SCRATCH);
        uint32_t *sl = &e->scratch[a->index];
        if (*sl == KN_NONE) {
            kn_cu_slot s = {0};
            s.place = KN_CU_POOL;
            s.nbytes = a->size + a->offset;
            s.dtype = KN_U8;
            s.rank = 1;
            s.dims[0] = (int64_t)s.nbytes;
            s.value = KN_NONE;
            KN_TRY(new_slot(L, &s, sl));
        } else if (L->p->slots[*sl].nbytes < a->size + a->offset) {
            L->p->slots[*sl].nbytes = a->size + a->offset; /* grows until memory is planned */
            L->p->slots[*sl].dims[0] = (int64_t)(a->size + a->offset);
        }
        out->kind = KN_CU_ARG_SLOT;
        out->slot = *sl;
        out->offset = a->offset;
        touch(L, out->slot, step_index(L));
        return KN_OK;
    }
    case KN_ARG_PERSIST: {
        if (a->index >= KN_EMIT_SCRATCH)
            return kn_emit_fail(e, KN_ERR_INTERNAL, "persistent region %u over %d", a->index, KN_EMIT_SCRATCH);
        kn_cu_program *p = L->p;
        if (!p->has_zero) {
            kn_cu_slot s = {0};
            s.place = KN_CU_POOL;
            s.dtype = KN_U8;
            s.rank = 1;
            s.value = KN_NONE;
            KN_TRY(new_slot(L, &s, &p->zero_slot));
            p->has_zero = true;
        }
        kn_cu_slot *z = &p->slots[p->zero_slot];
        uint64_t *at = &e->persist[a->index];
        if (*at == UINT64_MAX) { /* a new region, 16-byte aligned */
            *at = (z->nbytes + 15) & ~(uint64_t)15;
            z->nbytes = *at;
        }
        if (z->nbytes < *at + a->offset + a->size) {
            z->nbytes = *at + a->offset + a->size;
            z->dims[0] = (int64_t)z->nbytes;
        }
        out->kind = KN_CU_ARG_SLOT;
        out->slot = p->zero_slot;
        out->offset = *at + a->offset;
        return KN_OK; /* alive for the whole program: plan_memory */
    }
    case KN_ARG_KV:
        if (a->index >= KN_CU_KV_COUNT || L->p->kv_rows <= 0 || (a->index >= KN_CU_KV_TABLE && a->offset))
            return kn_emit_fail(e, KN_ERR_INTERNAL, "bad KV cache argument %u (layer %llu)", a->index,
                                (unsigned long long)a->offset);
        out->kind = KN_CU_ARG_KV;
        out->slot = a->index;
        out->offset = a->offset;
        return KN_OK;
    case KN_ARG_PARAMS:
        out->kind = KN_CU_ARG_PARAMS;
        out->offset = put_params(L, a->data, a->size);
        out->size = a->size;
        return L->status;
    }
    return kn_emit_fail(e, KN_ERR_INTERNAL, "bad argument kind %d", (int)a->kind);
}

kn_status kn_emit_kv_shape(kn_emit *e, int64_t rows, int64_t tokens)
{
    kn_cu_program *p = e->L->p;
    if (rows <= 0 || tokens <= 0 || rows > INT32_MAX || tokens > INT32_MAX)
        return kn_emit_fail(e, KN_ERR_INVALID, "KV cache: %lld rows of %lld new tokens", (long long)rows,
                            (long long)tokens);
    if (p->kv_rows && (p->kv_rows != rows || p->kv_tokens != tokens))
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED,
                            "reads the KV cache for %lld rows of %lld new tokens, another node for %lld of %lld: a "
                            "plan runs one batch shape",
                            (long long)rows, (long long)tokens, (long long)p->kv_rows, (long long)p->kv_tokens);
    p->kv_rows = rows;
    p->kv_tokens = tokens;
    return KN_OK;
}

const char *kn_emit_meta(const kn_emit *e, const char *key)
{
    const kn_model_info *m = e->L->g->info;
    for (uint32_t i = 0; m && i < m->n_metadata; i++) {
        const char *k = m->metadata[i].key;
        if (strncmp(k, "meta.", 5) == 0)
            k += 5;
        if (strcmp(k, key) == 0)
            return m->metadata[i].value;
    }
    return NULL;
}

static kn_status push_step(lower *L, const kn_cu_step *s)
{
    kn_cu_program *p = L->p;
    KN_TRY(kn_mem_grow(L->a, (void **)&p->steps, &p->cap_steps, p->n_steps + 1, sizeof *p->steps));
    p->steps[p->n_steps++] = *s;
    return KN_OK;
}

static kn_status push_args(kn_emit *e, const kn_emit_arg *args, uint32_t n, uint32_t *first)
{
    lower *L = e->L;
    kn_cu_program *p = L->p;
    KN_TRY(kn_mem_grow(L->a, (void **)&p->args, &p->cap_args, p->n_args + n + 1, sizeof *p->args));
    *first = p->n_args;
    for (uint32_t i = 0; i < n; i++) {
        kn_cu_arg a;
        KN_TRY(make_arg(e, &args[i], &a));
        p->args[p->n_args++] = a;
    }
    return KN_OK;
}

kn_status kn_emit_launch(kn_emit *e, uint32_t kernel, kn_dim3 grid, kn_dim3 block, uint32_t smem_bytes,
                         const kn_emit_arg *args, uint32_t n_args)
{
    lower *L = e->L;
    if (kernel >= L->p->n_kernels)
        return kn_emit_fail(e, KN_ERR_INTERNAL, "launch of an unknown kernel %u", kernel);
    if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z || block.x * block.y * block.z > 1024)
        return kn_emit_fail(e, KN_ERR_INTERNAL, "bad launch configuration");
    kn_cu_step s = {0};
    s.kind = KN_CU_STEP_LAUNCH;
    s.kernel = kernel;
    s.grid[0] = grid.x, s.grid[1] = grid.y, s.grid[2] = grid.z;
    s.block[0] = block.x, s.block[1] = block.y, s.block[2] = block.z;
    s.smem = smem_bytes;
    s.node = e->node_index;
    KN_TRY(push_args(e, args, n_args, &s.first_arg));
    s.n_args = n_args;
    return push_step(L, &s);
}

kn_dim3 kn_emit_grid(int64_t n)
{
    int64_t blocks = (n + 255) / 256;
    if (blocks < 1)
        blocks = 1;
    if (blocks > 65535 * 16)
        blocks = 65535 * 16; /* the grid-stride loop covers the rest */
    return (kn_dim3){(uint32_t)blocks, 1, 1};
}

kn_status kn_emit_launch_source(kn_emit *e, kn_sb *src, const char *entry, const kn_emit_arg *args, uint32_t n_args,
                                int64_t n)
{
    uint32_t k;
    kn_status s = kn_emit_kernel(e, kn_sb_str(src), entry, &k);
    kn_sb_free(src);
    KN_TRY(s);
    return kn_emit_launch(e, k, kn_emit_grid(n), (kn_dim3){256, 1, 1}, 0, args, n_args);
}

kn_status kn_emit_gemm_step(kn_emit *e, const kn_emit_gemm *gm)
{
    lower *L = e->L;
    kn_plan_cu_gemm d = {0};
    d.m = gm->m, d.n = gm->n, d.k = gm->k;
    d.lda = gm->lda, d.ldb = gm->ldb, d.ldc = gm->ldc, d.ldd = gm->ldd;
    d.batch = gm->batch > 0 ? gm->batch : 1;
    d.stride_a = gm->stride_a, d.stride_b = gm->stride_b, d.stride_c = gm->stride_c, d.stride_d = gm->stride_d;
    d.alpha = gm->alpha, d.beta = gm->beta;
    d.dtype = gm->dtype;
    d.trans_a = gm->trans_a, d.trans_b = gm->trans_b;
    d.epilogue = gm->epilogue;
    d.has_c = gm->c.kind != 0;
    bool bias5 = gm->bias.kind != 0 && gm->c.kind != 0 && gm->epilogue >= 3;
    kn_emit_arg args[5] = {gm->a, gm->b, gm->c.kind ? gm->c : gm->d, gm->d, gm->bias};
    kn_cu_step s = {0};
    s.kind = KN_CU_STEP_GEMM;
    s.node = e->node_index;
    KN_TRY(push_args(e, args, bias5 ? 5 : 4, &s.first_arg));
    s.n_args = bias5 ? 5 : 4;
    s.gemm = put_params(L, &d, sizeof d);
    KN_TRY(L->status);
    return push_step(L, &s);
}

kn_status kn_emit_copy(kn_emit *e, uint32_t out, uint64_t out_off, uint32_t in, uint64_t in_off, uint64_t bytes)
{
    kn_emit_arg args[2] = {{KN_ARG_OUT, out, 0, NULL, out_off}, {KN_ARG_IN, in, 0, NULL, in_off}};
    kn_cu_step s = {0};
    s.kind = KN_CU_STEP_COPY;
    s.node = e->node_index;
    KN_TRY(push_args(e, args, 2, &s.first_arg));
    s.n_args = 2;
    s.gemm = bytes;
    return push_step(e->L, &s);
}

kn_status kn_emit_alias_at(kn_emit *e, uint32_t out, uint32_t in, uint64_t offset)
{
    lower *L = e->L;
    if (out >= e->node->n_outputs || in >= e->node->n_inputs || e->node->outputs[out] == KN_NONE ||
        e->node->inputs[in] == KN_NONE)
        return kn_emit_fail(e, KN_ERR_INTERNAL, "alias of a missing input or output");
    kn_id vo = e->node->outputs[out], vi = e->node->inputs[in];
    uint32_t si;
    KN_TRY(slot_for_value(L, vi, &si));
    uint64_t in_bytes = L->p->slots[si].nbytes;
    if (offset % KN_CU_ALIAS_ALIGN || offset > in_bytes || e->outs[out].nbytes > in_bytes - offset)
        return kn_emit_fail(e, KN_ERR_INTERNAL, "alias of %llu bytes at %llu of an input of %llu bytes",
                            (unsigned long long)e->outs[out].nbytes, (unsigned long long)offset,
                            (unsigned long long)in_bytes);
    kn_cu_slot s = L->p->slots[si];
    s.value = vo;
    s.dtype = e->outs[out].dtype;
    s.rank = e->outs[out].rank;
    s.nbytes = e->outs[out].nbytes;
    for (int32_t k = 0; k < s.rank && k < KN_CU_MAX_RANK; k++)
        s.dims[k] = e->outs[out].dims[k];
    if (s.place == KN_CU_INPUT) /* a view of an input lives in the pool like it */
        s.place = KN_CU_POOL;
    uint32_t so;
    KN_TRY(new_slot(L, &s, &so));
    L->slot_of[vo] = so;
    uint32_t root = si;
    while (L->alias_of[root] != KN_NONE)
        root = L->alias_of[root];
    L->alias_of[so] = root;
    L->alias_off[so] = L->alias_off[si] + offset; /* si is the root (0) or an alias into it */
    touch(L, root, step_index(L));
    return KN_OK;
}

kn_status kn_emit_alias(kn_emit *e, uint32_t out, uint32_t in)
{
    const kn_emit_tensor *x = kn_emit_in(e, in), *y = kn_emit_out(e, out);
    if (x && y && x->nbytes != y->nbytes)
        return kn_emit_fail(e, KN_ERR_INTERNAL, "alias with a different byte size");
    return kn_emit_alias_at(e, out, in, 0);
}

/* ---- probing ---- */

struct probe_ctx {
    lower *L;
    kn_probe_kv *kv; /* graphs with kiln.PagedAttention, else NULL */
};
typedef struct probe_ctx probe_ctx;

static void observe(void *ctx, const kn_graph *g, kn_id v, const kn_rt_tensor *t)
{
    probe_ctx *pc = ctx;
    lower *L = pc->L;
    if (g != L->g || L->probe[v] || L->status != KN_OK)
        return;
    if (pc->kv && kn_probe_kv_see(pc->kv, v, t) != KN_OK) {
        L->status = KN_ERR_NOMEM;
        return;
    }
    if (kn_rt_tensor_clone(L->a, t, &L->probe[v]) != KN_OK)
        L->status = KN_ERR_NOMEM;
}

static bool shape_input(kn_op op, uint32_t i);

static bool has_subgraph(const kn_node *n)
{
    for (uint32_t i = 0; i < n->n_attrs; i++)
        if (n->attrs[i].kind == KN_ATTR_GRAPH || n->attrs[i].kind == KN_ATTR_GRAPHS)
            return true;
    return false;
}

/* The probe runs the whole graph on the CPU backend to learn every
 * tensor's static shape, but only some values are needed as values: those
 * that decide a shape (shape_input, and everything they are computed from,
 * except through Shape/Size) and those fold() turns into constants (all
 * inputs known at compile time). A matrix product whose output is neither
 * is skipped: the stand-in hands out zeros of its output shape. For a
 * decoder at a 64-token prefill chunk these products are nearly all of
 * the probe's time (~140 GFLOP in double precision for a 1B model). */
static kn_status shape_only_gemms(lower *L)
{
    kn_graph *g = L->g;
    bool *known = kn_mem_alloc(L->a, (size_t)g->n_values + 1), *need = kn_mem_alloc(L->a, (size_t)g->n_values + 1);
    L->probe_skip = kn_mem_alloc(L->a, (size_t)g->n_nodes + 1);
    if (!known || !need || !L->probe_skip) {
        kn_mem_free(L->a, known);
        kn_mem_free(L->a, need);
        return KN_ERR_NOMEM;
    }
    memset(need, 0, (size_t)g->n_values + 1);
    memset(L->probe_skip, 0, (size_t)g->n_nodes + 1);
    for (kn_id v = 0; v < g->n_values; v++)
        known[v] = g->values[v].kind == KN_VAL_CONST;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        bool all = n->op == KN_OP_Shape || n->op == KN_OP_Size;
        if (!all) {
            all = !has_subgraph(n);
            for (uint32_t i = 0; i < n->n_inputs && all; i++)
                all = n->inputs[i] == KN_NONE || known[n->inputs[i]];
        }
        for (uint32_t i = 0; i < n->n_outputs; i++)
            if (n->outputs[i] != KN_NONE)
                known[n->outputs[i]] = all;
    }
    for (kn_id k = g->n_nodes; k-- > 0;) {
        const kn_node *n = &g->nodes[k];
        bool out_needed = has_subgraph(n); /* subgraphs: keep everything exact */
        for (uint32_t i = 0; i < n->n_outputs && !out_needed; i++)
            out_needed = n->outputs[i] != KN_NONE && (need[n->outputs[i]] || known[n->outputs[i]]);
        bool shape_only = n->op == KN_OP_Shape || n->op == KN_OP_Size;
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE && ((out_needed && !shape_only) || shape_input(n->op, i)))
                need[n->inputs[i]] = true;
        bool gemm = n->op == KN_OP_MatMul || n->op == KN_OP_MS_MatMulNBits || n->op == KN_OP_MS_MatMulIntegerToFloat ||
                    (n->op == KN_OP_KILN_GemmEpilogue && !kn_node_attr_int(n, "gemm", 0));
        L->probe_skip[k] = gemm && !out_needed && n->n_outputs == 1 && n->outputs[0] != KN_NONE && n->n_inputs >= 2;
    }
    kn_mem_free(L->a, known);
    kn_mem_free(L->a, need);
    return KN_OK;
}

/* The stand-in: zeros of the product's shape, A [..., K] times a matrix
 * [K, N] (MatMulNBits: N from its attribute). Anything else (batched B,
 * a shape error the kernel should report) runs the kernel. */
static kn_status standin(void *ctx, const kn_graph *g, kn_id node, const kn_rt_tensor *const *ins,
                         kn_rt_tensor **outs, const kn_allocator *a, bool *done)
{
    lower *L = ((struct probe_ctx *)ctx)->L;
    *done = false;
    if (g != L->g || !L->probe_skip || !L->probe_skip[node] || !ins[0] || !ins[1])
        return KN_OK;
    const kn_node *n = &g->nodes[node];
    const kn_rt_tensor *A = ins[0], *B = ins[1];
    int64_t k, cols;
    if (n->op == KN_OP_MS_MatMulNBits) {
        k = kn_node_attr_int(n, "K", -1);
        cols = kn_node_attr_int(n, "N", -1);
    } else {
        if (B->rank != 2)
            return KN_OK;
        k = B->dims[0];
        cols = B->dims[1];
    }
    kn_dtype dt = g->values[n->outputs[0]].type.dtype;
    if (A->rank < 1 || A->rank > 16 || A->dims[A->rank - 1] != k || cols < 0 || dt == KN_UNDEFINED)
        return KN_OK;
    int64_t dims[16];
    int32_t rank = A->rank;
    memcpy(dims, A->dims, (size_t)rank * sizeof *dims);
    dims[rank - 1] = cols;
    /* GemmEpilogue's residual (input 3) broadcasts against the product */
    const kn_rt_tensor *r = n->op == KN_OP_KILN_GemmEpilogue && n->n_inputs > 3 ? ins[3] : NULL;
    if (r) {
        if (r->rank > 16)
            return KN_OK;
        int64_t out[16];
        int32_t ro = r->rank > rank ? r->rank : rank;
        for (int32_t i = 0; i < ro; i++) {
            int64_t x = i - (ro - rank) >= 0 ? dims[i - (ro - rank)] : 1;
            int64_t y = i - (ro - r->rank) >= 0 ? r->dims[i - (ro - r->rank)] : 1;
            if (x != y && x != 1 && y != 1)
                return KN_OK; /* the kernel reports it */
            out[i] = x == 1 ? y : x;
        }
        rank = ro;
        memcpy(dims, out, (size_t)ro * sizeof *dims);
    }
    KN_TRY(kn_rt_tensor_new(a, dt, rank, dims, &outs[0]));
    *done = true;
    return KN_OK;
}

static kn_status probe(lower *L, const kn_cuda_shape *shapes, uint32_t n_shapes, const kn_rt_tensor *const *data)
{
    kn_graph *g = L->g;
    kn_rt_tensor **ins = kn_mem_alloc(L->a, ((size_t)g->n_inputs + 1) * sizeof *ins);
    kn_rt_tensor **outs = kn_mem_alloc(L->a, ((size_t)g->n_outputs + 1) * sizeof *outs);
    kn_status s = ins && outs ? KN_OK : KN_ERR_NOMEM;
    if (ins)
        memset(ins, 0, ((size_t)g->n_inputs + 1) * sizeof *ins);
    if (outs)
        memset(outs, 0, ((size_t)g->n_outputs + 1) * sizeof *outs);
    for (uint32_t i = 0; s == KN_OK && i < g->n_inputs; i++) {
        kn_value *v = &g->values[g->inputs[i]];
        int64_t dims[64];
        int32_t rank = v->type.shape.rank;
        const kn_cuda_shape *given = NULL;
        for (uint32_t k = 0; k < n_shapes; k++)
            if (strcmp(shapes[k].name, v->name) == 0)
                given = &shapes[k];
        if (given) {
            rank = given->rank;
            for (int32_t k = 0; k < rank; k++)
                dims[k] = given->dims[k];
        } else if (v->type.kind != KN_TYPE_TENSOR || rank < 0 || rank > 64) {
            kn_diag_add(L->d, KN_ERROR, "%s: target cuda needs the shape of input '%s': give it with --shape %s=DIMS",
                        g->info->path, v->name, v->name);
            s = KN_ERR_INVALID;
            break;
        } else {
            for (int32_t k = 0; k < rank; k++) {
                dims[k] = v->type.shape.dims[k].value;
                if (dims[k] < 0) {
                    kn_diag_add(L->d, KN_ERROR,
                                "%s: target cuda builds for static shapes: input '%s' dimension %d (%s) has no size; "
                                "give it with --shape %s=DIMS",
                                g->info->path, v->name, (int)k,
                                v->type.shape.dims[k].sym ? v->type.shape.dims[k].sym : "?", v->name);
                    s = KN_ERR_INVALID;
                    break;
                }
            }
        }
        if (s != KN_OK)
            break;
        if (v->type.dtype == KN_UNDEFINED) {
            kn_diag_add(L->d, KN_ERROR, "%s: input '%s' has no dtype", g->info->path, v->name);
            s = KN_ERR_INVALID;
            break;
        }
        const kn_rt_tensor *given_data = data ? data[i] : NULL;
        if (given_data) { /* the caller's sample data: its shape is the one bound */
            rank = given_data->rank;
            for (int32_t k = 0; k < rank && k < 64; k++)
                dims[k] = given_data->dims[k];
            s = kn_rt_tensor_clone(L->a, given_data, &ins[i]);
        } else {
            s = kn_rt_tensor_new(L->a, v->type.dtype, rank, dims, &ins[i]);
        }
        if (s != KN_OK)
            break;
        /* the plan is specialised for these shapes: say so in the graph */
        kn_dim *nd = kn_graph_alloc(g, ((size_t)rank + 1) * sizeof *nd);
        if (!nd) {
            s = KN_ERR_NOMEM;
            break;
        }
        for (int32_t k = 0; k < rank; k++)
            nd[k] = (kn_dim){dims[k], NULL};
        v->type.kind = KN_TYPE_TENSOR;
        v->type.shape.rank = rank;
        v->type.shape.dims = nd;
        if (kn_dt_is_float(ins[i]->dtype) && !given_data)
            for (int64_t k = 0; k < ins[i]->numel; k++)
                kn_set_f64(ins[i]->dtype, ins[i]->data, k, 0.5);
        if (kn_rt_tensor_clone(L->a, ins[i], &L->probe[g->inputs[i]]) != KN_OK)
            s = KN_ERR_NOMEM;
    }
    if (s == KN_OK) {
        probe_ctx pc = {L, NULL};
        s = kn_probe_kv_create(g, L->a, ins, &pc.kv);
        if (s == KN_OK)
            s = shape_only_gemms(L);
        if (s == KN_OK)
            s = kn_cpu_run_probe(g, L->a, L->d, (const kn_rt_tensor *const *)ins, g->n_inputs, outs, g->n_outputs,
                                 observe, &pc, kn_probe_kv_run(pc.kv), standin);
        kn_probe_kv_destroy(pc.kv);
        kn_mem_free(L->a, L->probe_skip);
        L->probe_skip = NULL;
        if (s == KN_OK)
            s = L->status;
        if (s != KN_OK && s != KN_ERR_NOMEM)
            kn_diag_add(L->d, KN_ERROR, "%s: target cuda: working out the static shapes failed (above)",
                        g->info->path);
    }
    for (uint32_t i = 0; ins && i < g->n_inputs; i++)
        kn_rt_tensor_free(L->a, ins[i]);
    for (uint32_t i = 0; outs && i < g->n_outputs; i++)
        kn_rt_tensor_free(L->a, outs[i]);
    kn_mem_free(L->a, ins);
    kn_mem_free(L->a, outs);
    return s;
}

/* ---- folding ---- */

/* Inputs whose values (not just shapes) decide an op's output shape. */
static bool shape_input(kn_op op, uint32_t i)
{
    switch (op) {
    case KN_OP_Reshape: case KN_OP_Expand: case KN_OP_Tile: case KN_OP_Squeeze: case KN_OP_Unsqueeze:
    case KN_OP_Split: case KN_OP_OneHot: case KN_OP_TopK: case KN_OP_Upsample: case KN_OP_CenterCropPad:
        return i == 1;
    case KN_OP_Pad:
        return i == 1 || i == 3; /* pads, axes (not constant_value) */
    case KN_OP_Resize:
        return i == 2 || i == 3; /* scales, sizes (not roi) */
    case KN_OP_Slice: case KN_OP_ReduceSum: case KN_OP_ReduceMean:
    case KN_OP_ReduceMax: case KN_OP_ReduceMin: case KN_OP_ReduceProd: case KN_OP_ReduceL1: case KN_OP_ReduceL2:
    case KN_OP_ReduceLogSum: case KN_OP_ReduceLogSumExp: case KN_OP_ReduceSumSquare: case KN_OP_Col2Im:
        return i >= 1;
    case KN_OP_ConstantOfShape: case KN_OP_Range: case KN_OP_EyeLike:
        return true;
    case KN_OP_NonZero: case KN_OP_Unique: case KN_OP_Compress: case KN_OP_NonMaxSuppression:
        return true; /* output shape follows the data */
    default:
        return false;
    }
}

/* Turns value v into a constant holding what the probe computed. */
static kn_status make_const(lower *L, kn_id v)
{
    kn_graph *g = L->g;
    const kn_rt_tensor *t = L->probe[v];
    if (!t)
        return KN_ERR_INTERNAL;
    kn_tensor *c = kn_graph_alloc(g, sizeof *c);
    if (!c)
        return KN_ERR_NOMEM;
    c->name = g->values[v].name;
    c->dtype = t->dtype;
    c->rank = t->rank;
    c->dims = kn_graph_alloc(g, ((size_t)t->rank + 1) * sizeof(int64_t));
    if (c->dims && t->rank)
        memcpy(c->dims, t->dims, (size_t)t->rank * sizeof(int64_t));
    c->n_elems = t->numel;
    c->nbytes = t->dtype == KN_STRING ? 0 : t->nbytes;
    c->data = t->nbytes ? kn_arena_dup(g->arena, t->data, t->nbytes) : NULL;
    if (!c->dims || (t->nbytes && !c->data))
        return KN_ERR_NOMEM;
    kn_value *val = &g->values[v];
    val->kind = KN_VAL_CONST;
    val->tensor = c;
    val->producer = KN_NONE;
    val->type.kind = KN_TYPE_TENSOR;
    val->type.dtype = t->dtype;
    val->type.shape.rank = t->rank;
    val->type.shape.dims = kn_graph_alloc(g, ((size_t)t->rank + 1) * sizeof(kn_dim));
    if (!val->type.shape.dims)
        return KN_ERR_NOMEM;
    for (int32_t i = 0; i < t->rank; i++)
        val->type.shape.dims[i] = (kn_dim){t->dims[i], NULL};
    return KN_OK;
}

#define KN_FOLD_MAX_BYTES ((size_t)256 << 20)

/* Folds every node whose result is known at compile time: all inputs
 * constant, or a Shape/Size (shapes are static here). */
static kn_status fold(lower *L, uint32_t *n_folded)
{
    kn_graph *g = L->g;
    bool *dead = kn_mem_alloc(L->a, (size_t)g->n_nodes + 1);
    if (!dead)
        return KN_ERR_NOMEM;
    memset(dead, 0, (size_t)g->n_nodes + 1);
    *n_folded = 0;
    kn_status s = KN_OK;
    for (kn_id k = 0; k < g->n_nodes && s == KN_OK; k++) {
        const kn_node *n = &g->nodes[k];
        bool foldable = n->op == KN_OP_Shape || n->op == KN_OP_Size;
        if (!foldable) {
            foldable = true;
            for (uint32_t i = 0; i < n->n_inputs && foldable; i++)
                foldable = n->inputs[i] == KN_NONE || g->values[n->inputs[i]].kind == KN_VAL_CONST;
            for (uint32_t i = 0; i < n->n_attrs && foldable; i++) /* subgraphs may read outer values */
                foldable = n->attrs[i].kind != KN_ATTR_GRAPH && n->attrs[i].kind != KN_ATTR_GRAPHS;
        }
        for (uint32_t i = 0; i < n->n_outputs && foldable; i++)
            foldable = n->outputs[i] == KN_NONE ||
                       (L->probe[n->outputs[i]] && L->probe[n->outputs[i]]->nbytes <= KN_FOLD_MAX_BYTES &&
                        L->probe[n->outputs[i]]->dtype != KN_STRING);
        if (!foldable)
            continue;
        for (uint32_t i = 0; i < n->n_outputs && s == KN_OK; i++)
            if (n->outputs[i] != KN_NONE)
                s = make_const(L, n->outputs[i]);
        dead[k] = true;
        (*n_folded)++;
    }
    if (s == KN_OK && *n_folded) {
        /* probe results follow their values to the new ids */
        kn_id *ids = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *ids);
        if (!ids) {
            s = KN_ERR_NOMEM;
        } else {
            kn_str *names = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *names);
            if (!names) {
                s = KN_ERR_NOMEM;
            } else {
                uint32_t nv = g->n_values;
                for (kn_id v = 0; v < nv; v++)
                    names[v] = g->values[v].name;
                s = kn_graph_compact(g, dead);
                /* names are unique within the graph: map old ids to new by name */
                if (s == KN_OK) {
                    kn_rt_tensor **np = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *np);
                    if (!np) {
                        s = KN_ERR_NOMEM;
                    } else {
                        memset(np, 0, ((size_t)g->n_values + 1) * sizeof *np);
                        kn_id w = 0;
                        for (kn_id v = 0; v < nv; v++) {
                            if (w < g->n_values && g->values[w].name == names[v]) {
                                np[w++] = L->probe[v];
                            } else {
                                kn_rt_tensor_free(L->a, L->probe[v]);
                            }
                        }
                        kn_mem_free(L->a, L->probe);
                        L->probe = np;
                    }
                }
                kn_mem_free(L->a, names);
            }
            kn_mem_free(L->a, ids);
        }
    }
    kn_mem_free(L->a, dead);
    return s;
}

/* ---- memory planning ---- */

typedef struct buf {
    uint32_t slot;
    uint64_t size;
    int64_t first, last;
} buf;

static int by_size(const void *a, const void *b)
{
    const buf *x = a, *y = b;
    if (x->size != y->size)
        return x->size > y->size ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

#define KN_CU_ALIGN 256u

/* Greedy by size: each buffer at the lowest offset that does not overlap a
 * buffer already placed whose lifetime intersects its own. */
static kn_status plan_memory(lower *L)
{
    kn_cu_program *p = L->p;
    int64_t end = (int64_t)p->n_steps;
    buf *bs = kn_mem_alloc(L->a, ((size_t)p->n_slots + 1) * sizeof *bs);
    uint64_t *placed_off = kn_mem_alloc(L->a, ((size_t)p->n_slots + 1) * sizeof *placed_off);
    if (!bs || !placed_off) {
        kn_mem_free(L->a, bs);
        kn_mem_free(L->a, placed_off);
        return KN_ERR_NOMEM;
    }
    /* graph inputs live from the start, outputs to the end */
    for (uint32_t i = 0; i < p->n_slots; i++)
        if (p->slots[i].place == KN_CU_INPUT)
            touch(L, L->alias_of[i] != KN_NONE ? L->alias_of[i] : i, -1);
    for (uint32_t i = 0; i < p->n_outputs; i++) {
        uint32_t s = p->outputs[i];
        touch(L, L->alias_of[s] != KN_NONE ? L->alias_of[s] : s, end);
    }
    /* the persistent memory lives through every run: nothing else may share its bytes */
    if (p->has_zero) {
        touch(L, p->zero_slot, -1);
        touch(L, p->zero_slot, end);
    }
    /* an alias keeps its root alive */
    for (uint32_t i = 0; i < p->n_slots; i++)
        if (L->alias_of[i] != KN_NONE && L->last[i] >= 0) {
            touch(L, L->alias_of[i], L->first[i]);
            touch(L, L->alias_of[i], L->last[i]);
        }
    uint32_t n = 0;
    p->naive_bytes = 0;
    for (uint32_t i = 0; i < p->n_slots; i++) {
        const kn_cu_slot *s = &p->slots[i];
        if (L->alias_of[i] != KN_NONE || (s->place != KN_CU_POOL && s->place != KN_CU_INPUT))
            continue;
        uint64_t size = (s->nbytes + KN_CU_ALIGN - 1) & ~(uint64_t)(KN_CU_ALIGN - 1);
        if (!size)
            size = KN_CU_ALIGN;
        bs[n++] = (buf){i, size, L->first[i] == INT64_MAX ? -1 : L->first[i], L->last[i] < 0 ? end : L->last[i]};
        p->naive_bytes += size;
    }
    qsort(bs, n, sizeof *bs, by_size);
    p->pool_bytes = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = 0;
        bool moved = true;
        while (moved) { /* first fit: bump past every conflicting placed buffer */
            moved = false;
            for (uint32_t j = 0; j < i; j++) {
                bool live = bs[j].first <= bs[i].last && bs[i].first <= bs[j].last;
                bool overlap = off < placed_off[j] + bs[j].size && placed_off[j] < off + bs[i].size;
                if (live && overlap) {
                    off = placed_off[j] + bs[j].size;
                    moved = true;
                }
            }
        }
        placed_off[i] = off;
        p->slots[bs[i].slot].offset = off;
        if (off + bs[i].size > p->pool_bytes)
            p->pool_bytes = off + bs[i].size;
    }
    for (uint32_t i = 0; i < p->n_slots; i++)
        if (L->alias_of[i] != KN_NONE) {
            const kn_cu_slot *r = &p->slots[L->alias_of[i]];
            p->slots[i].offset = r->offset + L->alias_off[i]; /* a weight's: into its constant */
            p->slots[i].place = r->place == KN_CU_WEIGHT ? KN_CU_WEIGHT : KN_CU_POOL;
            p->slots[i].index = r->index;
        }
    kn_mem_free(L->a, bs);
    kn_mem_free(L->a, placed_off);
    return KN_OK;
}

/* A node with no CUDA kernel runs on the CPU reference backend inside the
 * CUDA session: its non-constant inputs, and the outer values its
 * subgraphs read, go to the host; its outputs come back. */
static kn_status host_step(lower *L, kn_id k)
{
    kn_graph *g = L->g;
    const kn_node *n = &g->nodes[k];
    kn_id *reads = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *reads);
    bool *seen = kn_mem_alloc(L->a, (size_t)g->n_values + 1);
    kn_status s = reads && seen ? KN_OK : KN_ERR_NOMEM;
    uint32_t n_reads = 0;
    if (seen)
        memset(seen, 0, (size_t)g->n_values + 1);
    for (uint32_t i = 0; s == KN_OK && i < n->n_inputs; i++) {
        kn_id v = n->inputs[i];
        if (v != KN_NONE && !seen[v] && g->values[v].kind != KN_VAL_CONST) {
            seen[v] = true;
            reads[n_reads++] = v;
        }
    }
    for (uint32_t i = 0; s == KN_OK && i < n->n_attrs; i++) {
        const kn_attr *a = &n->attrs[i];
        uint32_t ng = a->kind == KN_ATTR_GRAPH ? 1 : a->kind == KN_ATTR_GRAPHS ? a->n : 0;
        for (uint32_t j = 0; j < ng; j++) {
            const kn_graph *sg = a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[j];
            for (kn_id sv = 0; sv < sg->n_values; sv++) {
                kn_id v = sg->values[sv].outer;
                if (sg->values[sv].kind != KN_VAL_OUTER || v >= g->n_values || seen[v] ||
                    g->values[v].kind == KN_VAL_CONST)
                    continue;
                seen[v] = true;
                reads[n_reads++] = v;
            }
        }
    }
    kn_cu_program *p = L->p;
    kn_cu_step st = {0};
    st.kind = KN_CU_STEP_HOST;
    st.node = k;
    if (s == KN_OK)
        s = kn_mem_grow(L->a, (void **)&p->args, &p->cap_args, p->n_args + n_reads + n->n_outputs + 1, sizeof *p->args);
    st.first_arg = p->n_args;
    for (uint32_t i = 0; s == KN_OK && i < n_reads; i++) {
        uint32_t slot;
        s = slot_for_value(L, reads[i], &slot);
        if (s != KN_OK)
            break;
        touch(L, L->alias_of[slot] != KN_NONE ? L->alias_of[slot] : slot, step_index(L));
        touch(L, slot, step_index(L));
        p->args[p->n_args++] = (kn_cu_arg){KN_CU_ARG_HOST_IN, slot, 0, reads[i]};
    }
    for (uint32_t i = 0; s == KN_OK && i < n->n_outputs; i++) {
        kn_id v = n->outputs[i];
        if (v == KN_NONE || !L->probe[v])
            continue;
        if (L->probe[v]->dtype == KN_STRING) {
            kn_diag_add(L->d, KN_ERROR, "%s: node '%s' (%s): target cuda: string outputs cannot live on the device",
                        g->info->path, n->name, n->op_type);
            s = KN_ERR_UNSUPPORTED;
            break;
        }
        uint32_t slot;
        s = slot_for_value(L, v, &slot);
        if (s != KN_OK)
            break;
        touch(L, slot, step_index(L));
        p->args[p->n_args++] = (kn_cu_arg){KN_CU_ARG_HOST_OUT, slot, 0, v};
    }
    st.n_args = p->n_args - st.first_arg;
    if (s == KN_OK)
        s = push_step(L, &st);
    kn_mem_free(L->a, reads);
    kn_mem_free(L->a, seen);
    return s;
}

/* ---- the driver ---- */

static kn_status emit_node(lower *L, kn_id k)
{
    kn_graph *g = L->g;
    const kn_node *n = &g->nodes[k];
    kn_emit_fn fn = kn_cuda_emitter(n->op);
    if (!fn)
        return KN_ERR_UNSUPPORTED;
    for (uint32_t i = 0; i < n->n_inputs; i++)
        if (n->inputs[i] != KN_NONE && shape_input(n->op, i) && g->values[n->inputs[i]].kind != KN_VAL_CONST) {
            kn_diag_add(L->d, KN_WARNING,
                        "%s: node '%s' (%s, opset %lld): target cuda: its output shape depends on run-time data",
                        g->info->path, n->name, n->op_type, (long long)n->opset);
            return KN_ERR_UNSUPPORTED;
        }
    kn_emit e = {L, n, k, NULL, NULL, NULL, NULL, {0}, {0}, {0}, false};
    for (int i = 0; i < KN_EMIT_SCRATCH; i++)
        e.scratch[i] = KN_NONE, e.persist[i] = UINT64_MAX;
    size_t ni = n->n_inputs + 1, no = n->n_outputs + 1;
    e.ins = kn_mem_alloc(L->a, ni * sizeof *e.ins);
    e.outs = kn_mem_alloc(L->a, no * sizeof *e.outs);
    e.in_present = kn_mem_alloc(L->a, ni);
    e.out_present = kn_mem_alloc(L->a, no);
    kn_status s = e.ins && e.outs && e.in_present && e.out_present ? KN_OK : KN_ERR_NOMEM;
    for (uint32_t i = 0; s == KN_OK && i < n->n_inputs; i++) {
        kn_id v = n->inputs[i];
        e.in_present[i] = v != KN_NONE;
        if (v == KN_NONE)
            continue;
        const kn_value *val = &g->values[v];
        kn_emit_tensor *t = &e.ins[i];
        if (val->kind == KN_VAL_CONST) {
            t->dtype = val->tensor->dtype, t->rank = val->tensor->rank, t->dims = val->tensor->dims;
            t->numel = val->tensor->n_elems, t->nbytes = val->tensor->nbytes, t->host_data = val->tensor->data;
        } else if (L->probe[v]) {
            const kn_rt_tensor *p = L->probe[v];
            t->dtype = p->dtype, t->rank = p->rank, t->dims = p->dims, t->numel = p->numel, t->nbytes = p->nbytes;
            t->host_data = NULL;
        } else {
            s = KN_ERR_INTERNAL;
        }
        if (s == KN_OK && t->rank > KN_CU_MAX_RANK)
            s = kn_emit_fail(&e, KN_ERR_UNSUPPORTED, "rank %d is over the CUDA backend's limit of %d", (int)t->rank,
                             KN_CU_MAX_RANK);
    }
    for (uint32_t i = 0; s == KN_OK && i < n->n_outputs; i++) {
        kn_id v = n->outputs[i];
        e.out_present[i] = v != KN_NONE && L->probe[v];
        if (!e.out_present[i])
            continue;
        const kn_rt_tensor *p = L->probe[v];
        e.outs[i] = (kn_emit_tensor){p->dtype, p->rank, p->dims, p->numel, p->nbytes, NULL};
        if (p->rank > KN_CU_MAX_RANK)
            s = kn_emit_fail(&e, KN_ERR_UNSUPPORTED, "rank %d is over the CUDA backend's limit of %d", (int)p->rank,
                             KN_CU_MAX_RANK);
    }
    kn_id sw = L->swiglu_of[k];
    if (s == KN_OK && sw != KN_NONE) {
        const kn_rt_tensor *p = L->probe[g->nodes[sw].outputs[0]];
        e.swiglu_out = (kn_emit_tensor){p->dtype, p->rank, p->dims, p->numel, p->nbytes, NULL};
    }
    if (s == KN_OK)
        s = fn(&e);
    if (s == KN_OK && e.swiglu_taken)
        L->fused[sw] = true;
    for (uint32_t i = 0; s == KN_OK && i < n->n_outputs; i++) {
        kn_id v = i == 0 && e.swiglu_taken ? g->nodes[sw].outputs[0] : n->outputs[i];
        if (e.out_present[i] && L->slot_of[v] == KN_NONE)
            s = kn_emit_fail(&e, KN_ERR_INTERNAL, "the emitter did not produce output %u", i);
    }
    kn_mem_free(L->a, e.ins);
    kn_mem_free(L->a, e.outs);
    kn_mem_free(L->a, e.in_present);
    kn_mem_free(L->a, e.out_present);
    return s;
}

/* Static plans cannot hold ops whose output shape follows run-time data:
 * a shape-deciding input that is not computable from constants and shapes
 * alone. Reports every such node (before the probe, which would bake in
 * whatever sample data it ran with). */
static kn_status check_static(lower *L)
{
    kn_graph *g = L->g;
    bool *known = kn_mem_alloc(L->a, (size_t)g->n_values + 1); /* value computable at compile time */
    if (!known)
        return KN_ERR_NOMEM;
    for (kn_id v = 0; v < g->n_values; v++)
        known[v] = g->values[v].kind == KN_VAL_CONST;
    uint32_t bad = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        bool all = n->op != KN_OP_UNSUPPORTED;
        for (uint32_t i = 0; i < n->n_attrs; i++)
            all &= n->attrs[i].kind != KN_ATTR_GRAPH && n->attrs[i].kind != KN_ATTR_GRAPHS;
        for (uint32_t i = 0; i < n->n_inputs; i++)
            all &= n->inputs[i] == KN_NONE || known[n->inputs[i]];
        bool from_shape = n->op == KN_OP_Shape || n->op == KN_OP_Size;
        for (uint32_t i = 0; i < n->n_outputs; i++)
            if (n->outputs[i] != KN_NONE)
                known[n->outputs[i]] = all || from_shape;
        if (all || from_shape)
            continue;
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE && !known[n->inputs[i]] && shape_input(n->op, i)) {
                kn_diag_add(L->d, KN_WARNING,
                            "%s: node '%s' (%s, opset %lld): target cuda: its output shape depends on run-time data "
                            "(input %u, '%s')",
                            g->info->path, n->name, n->op_type, (long long)n->opset, i, g->values[n->inputs[i]].name);
                bad++;
                break;
            }
    }
    kn_mem_free(L->a, known);
    if (bad) {
        kn_diag_add(L->d, KN_ERROR,
                    "%s: %u node%s cannot be built for target cuda: static plans need shapes known at compile time",
                    g->info->path, bad, bad == 1 ? "" : "s");
        return KN_ERR_UNSUPPORTED;
    }
    return KN_OK;
}

/* Pairs each node whose output 0 is read only by a packed kiln.SwiGlu
 * (one input, same dtype; not a graph output, not read by a subgraph)
 * with that reader, for kn_emit_swiglu_reader. */
static kn_status find_swiglu_readers(lower *L)
{
    kn_graph *g = L->g;
    uint32_t *uses = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *uses);
    kn_id *reader = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *reader);
    L->swiglu_of = kn_mem_alloc(L->a, ((size_t)g->n_nodes + 1) * sizeof *L->swiglu_of);
    L->fused = kn_mem_alloc(L->a, (size_t)g->n_nodes + 1);
    if (!uses || !reader || !L->swiglu_of || !L->fused) {
        kn_mem_free(L->a, uses);
        kn_mem_free(L->a, reader);
        return KN_ERR_NOMEM;
    }
    memset(uses, 0, ((size_t)g->n_values + 1) * sizeof *uses);
    memset(L->fused, 0, (size_t)g->n_nodes + 1);
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        L->swiglu_of[k] = KN_NONE;
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE) {
                uses[n->inputs[i]]++;
                reader[n->inputs[i]] = k;
            }
        for (uint32_t i = 0; i < n->n_attrs; i++) {
            const kn_attr *a = &n->attrs[i];
            uint32_t ng = a->kind == KN_ATTR_GRAPH ? 1 : a->kind == KN_ATTR_GRAPHS ? a->n : 0;
            for (uint32_t j = 0; j < ng; j++) {
                const kn_graph *sg = a->kind == KN_ATTR_GRAPH ? a->u.g : a->u.graphs[j];
                for (kn_id sv = 0; sv < sg->n_values; sv++)
                    if (sg->values[sv].kind == KN_VAL_OUTER && sg->values[sv].outer < g->n_values)
                        uses[sg->values[sv].outer] += 2; /* never fused */
            }
        }
    }
    for (uint32_t i = 0; i < g->n_outputs; i++)
        uses[g->outputs[i]] += 2;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        kn_id v = n->n_outputs ? n->outputs[0] : KN_NONE;
        if (v == KN_NONE || uses[v] != 1 || !L->probe[v])
            continue;
        const kn_node *r = &g->nodes[reader[v]];
        kn_id y = r->n_outputs ? r->outputs[0] : KN_NONE;
        if (r->op == KN_OP_KILN_SwiGlu && r->n_inputs == 1 && y != KN_NONE && L->probe[y] &&
            L->probe[y]->dtype == L->probe[v]->dtype)
            L->swiglu_of[k] = reader[v];
    }
    kn_mem_free(L->a, uses);
    kn_mem_free(L->a, reader);
    return KN_OK;
}

static kn_status lower_graph(lower *L, const kn_cuda_shape *shapes, uint32_t n_shapes,
                             const kn_rt_tensor *const *data, kn_cuda_lower_stats *st)
{
    kn_graph *g = L->g;
    L->probe = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *L->probe);
    if (!L->probe)
        return KN_ERR_NOMEM;
    memset(L->probe, 0, ((size_t)g->n_values + 1) * sizeof *L->probe);
    KN_TRY(check_static(L));
    KN_TRY(probe(L, shapes, n_shapes, data));
    uint32_t folded = 0;
    KN_TRY(fold(L, &folded));
    st->nodes_folded = folded;
    /* ops without an emitter run on the host: say which, once per op */
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *n = &g->nodes[k];
        if (kn_cuda_emitter(n->op))
            continue;
        bool first = true;
        uint32_t count = 0;
        for (kn_id j = 0; j < g->n_nodes; j++) {
            if (g->nodes[j].op_type == n->op_type && g->nodes[j].domain == n->domain && !kn_cuda_emitter(g->nodes[j].op)) {
                first &= j >= k;
                count++;
            }
        }
        if (first)
            kn_diag_add(L->d, KN_NOTE, "%s: target cuda: %u %s node%s run on the CPU inside the CUDA session (no CUDA kernel)",
                        g->info->path, count, n->op_type, count == 1 ? "" : "s");
    }
    L->slot_of = kn_mem_alloc(L->a, ((size_t)g->n_values + 1) * sizeof *L->slot_of);
    if (!L->slot_of)
        return KN_ERR_NOMEM;
    for (kn_id v = 0; v <= g->n_values; v++)
        L->slot_of[v] = KN_NONE;
    KN_TRY(find_swiglu_readers(L));
    for (kn_id k = 0; k < g->n_nodes; k++) {
        if (L->fused[k])
            continue; /* its reader's launch wrote it */
        kn_status s = emit_node(L, k);
        if (s == KN_ERR_UNSUPPORTED && g->nodes[k].op == KN_OP_KILN_PagedAttention) {
            /* the cache lives on the device: the CPU backend cannot run it inside the session */
            L->n_unsupported++;
            continue;
        }
        if (s == KN_ERR_UNSUPPORTED) { /* no emitter, or one that does not handle this case */
            st->nodes_host++;
            s = host_step(L, k);
        }
        KN_TRY(s);
    }
    if (L->n_unsupported)
        return KN_ERR_UNSUPPORTED;
    L->p->outputs = kn_mem_alloc(L->a, ((size_t)g->n_outputs + 1) * sizeof *L->p->outputs);
    if (!L->p->outputs)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        KN_TRY(slot_for_value(L, g->outputs[i], &L->p->outputs[i]));
        L->p->n_outputs++;
    }
    for (uint32_t i = 0; i < g->n_inputs; i++) { /* every input has a slot, used or not */
        uint32_t s;
        KN_TRY(slot_for_value(L, g->inputs[i], &s));
    }
    KN_TRY(plan_memory(L));
    st->nodes_emitted = g->n_nodes;
    st->steps = L->p->n_steps;
    st->kernels = L->p->n_kernels;
    st->gemv = L->n_gemv;
    return KN_OK;
}

const kn_gemm_table *kn_emit_gemm_table(const kn_emit *e) { return e->L->gemm_table; }

uint32_t kn_emit_arch(const kn_emit *e) { return e->L->arch; }

void kn_emit_count_gemv(kn_emit *e) { e->L->n_gemv++; }

const kn_emit_tensor *kn_emit_swiglu_reader(const kn_emit *e)
{
    return e->L->swiglu_of && e->L->swiglu_of[e->node_index] != KN_NONE ? &e->swiglu_out : NULL;
}

void kn_emit_take_swiglu(kn_emit *e) { e->swiglu_taken = kn_emit_swiglu_reader(e) != NULL; }

kn_status kn_cuda_lower(kn_graph *g, const kn_cuda_shape *shapes, uint32_t n_shapes,
                        const kn_rt_tensor *const *probe_data, kn_diag *d, kn_cu_program *out,
                        kn_cuda_lower_stats *st)
{
    return kn_cuda_lower_opt(g, shapes, n_shapes, probe_data, NULL, d, out, st);
}

kn_status kn_cuda_lower_opt(kn_graph *g, const kn_cuda_shape *shapes, uint32_t n_shapes,
                            const kn_rt_tensor *const *probe_data, const kn_cuda_lower_opts *o, kn_diag *d,
                            kn_cu_program *out, kn_cuda_lower_stats *st)
{
    memset(out, 0, sizeof *out);
    kn_gemm_table embedded = {0};
    if (!o || !o->gemm_table) {
        kn_status ts = kn_gemm_table_parse(kn_gemm_table_default, "codegen/cuda/gemm_choice.tsv (built in)",
                                           g->alloc, d, &embedded);
        if (ts != KN_OK)
            return ts;
    }
    kn_cuda_lower_stats dummy;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof *st);
    out->a = g->alloc;
    lower L;
    memset(&L, 0, sizeof L);
    L.g = g;
    L.d = d;
    L.p = out;
    L.a = g->alloc;
    L.gemm_table = o && o->gemm_table ? o->gemm_table : &embedded;
    L.arch = o && o->arch ? o->arch : 90;
    kn_status s = lower_graph(&L, shapes, n_shapes, probe_data, st);
    kn_gemm_table_free(&embedded);
    if (s == KN_ERR_UNSUPPORTED && L.n_unsupported)
        kn_diag_add(d, KN_ERROR, "%s: %u node%s cannot run on target cuda (listed above)", g->info->path,
                    L.n_unsupported, L.n_unsupported == 1 ? "" : "s");
    else if (s == KN_ERR_NOMEM)
        kn_diag_add(d, KN_ERROR, "%s: out of memory while lowering for target cuda", g->info->path);
    if (L.probe)
        for (kn_id v = 0; v < g->n_values; v++)
            kn_rt_tensor_free(L.a, L.probe[v]);
    kn_mem_free(L.a, L.probe);
    kn_mem_free(L.a, L.slot_of);
    kn_mem_free(L.a, L.first);
    kn_mem_free(L.a, L.last);
    kn_mem_free(L.a, L.alias_of);
    kn_mem_free(L.a, L.alias_off);
    kn_mem_free(L.a, L.swiglu_of);
    kn_mem_free(L.a, L.fused);
    if (s != KN_OK)
        kn_cu_program_free(out);
    return s;
}
