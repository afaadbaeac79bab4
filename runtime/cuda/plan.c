/* Reads the target-cuda sections of a loaded plan and checks every entry
 * against the tables it refers to (slots against the pool, the constants
 * and the graph's inputs; arguments against slots and parameters; GEMM
 * operands against their slots' bytes; images against the blobs), so the
 * executor never indexes or copies out of bounds. */
#include "runtime/cuda/plan.h"
#include "kiln/cuda.h"
#include "ir/arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rdc {
    const kn_graph *g;
    kn_diag *d;
    kn_cuda_plan *p;
    const uint8_t *sec[KN_SEC_COUNT];
    uint64_t sec_size[KN_SEC_COUNT];
} rdc;

static kn_status bad(rdc *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static kn_status bad(rdc *r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kn_diag_add(r->d, KN_ERROR, "%s: corrupted plan: %s", r->p->name, msg);
    return KN_ERR_INVALID;
}

static bool add_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a > UINT64_MAX - b)
        return false;
    *out = a + b;
    return true;
}

static bool mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a && b > UINT64_MAX / a)
        return false;
    *out = a * b;
    return true;
}

/* The section table, checked as plan_read.c checks it (the bytes given
 * here need not be the ones it read). Returns false when the bytes are
 * not a plan with a readable section table. */
static bool find_sections(const uint8_t *base, uint64_t size, const uint8_t **sec, uint64_t *sec_size)
{
    memset(sec, 0, KN_SEC_COUNT * sizeof *sec);
    memset(sec_size, 0, KN_SEC_COUNT * sizeof *sec_size);
    if (!base || size < KN_PLAN_HEADER_SIZE || memcmp(base, KN_PLAN_MAGIC, 8) != 0)
        return false;
    kn_plan_header h;
    memcpy(&h, base, sizeof h);
    if (h.version < KN_PLAN_VERSION_BASE || h.version > KN_PLAN_VERSION || h.n_sections > 64 || h.sections_off > size ||
        (uint64_t)h.n_sections * sizeof(kn_plan_section) > size - h.sections_off)
        return false;
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section s;
        memcpy(&s, base + h.sections_off + (size_t)i * sizeof s, sizeof s);
        if (s.kind < 1 || s.kind >= KN_SEC_COUNT || sec[s.kind] || s.offset > size || s.size > size - s.offset)
            return false;
        sec[s.kind] = base + s.offset;
        sec_size[s.kind] = s.size;
    }
    return true;
}

static int n_cuda_sections(const uint8_t *const *sec)
{
    int n = 0;
    for (int k = KN_SEC_CU_KERNELS; k < KN_SEC_CU_END; k++)
        n += sec[k] != NULL;
    return n;
}

static int n_prefill_sections(const uint8_t *const *sec)
{
    int n = 0;
    for (int k = KN_SEC_CUP_KERNELS; k < KN_SEC_CUP_END; k++)
        n += sec[k] != NULL;
    return n;
}

static int n_batch_sections(const uint8_t *const *sec, uint32_t b)
{
    int n = 0;
    for (int k = KN_SEC_CUB(b); k < KN_SEC_CUB(b) + KN_SEC_CU_N; k++)
        n += sec[k] != NULL;
    return n;
}

uint32_t kn_cuda_plan_decode_batches(const uint8_t *base, uint64_t size)
{
    const uint8_t *sec[KN_SEC_COUNT];
    uint64_t sec_size[KN_SEC_COUNT];
    if (!find_sections(base, size, sec, sec_size) || n_prefill_sections(sec) != KN_SEC_CU_N)
        return 0;
    uint32_t b = 0;
    while (b < KN_PLAN_MAX_DECODE_BATCHES && n_batch_sections(sec, b) == KN_SEC_CU_N)
        b++;
    return b;
}

bool kn_cuda_plan_prefill_present(const uint8_t *base, uint64_t size)
{
    const uint8_t *sec[KN_SEC_COUNT];
    uint64_t sec_size[KN_SEC_COUNT];
    return find_sections(base, size, sec, sec_size) && n_cuda_sections(sec) == KN_SEC_CU_N &&
           n_prefill_sections(sec) == KN_SEC_CU_N;
}

/* A META key of the program being read, without its prefix ("cuda." for
 * the main program, "cuda.prefill." for the prefill one); NULL for other
 * keys. */
static const char *cu_key(const rdc *r, const char *key)
{
    uint32_t prog = r->g->info->cuda_program;
    if (prog >= 2) { /* batched decode program prog - 2: cuda.batchK. */
        char pre[32];
        int n = snprintf(pre, sizeof pre, "cuda.batch%u.", prog - 2);
        return strncmp(key, pre, (size_t)n) == 0 ? key + n : NULL;
    }
    bool other = strncmp(key, "cuda.prefill.", 13) == 0 || strncmp(key, "cuda.batch", 10) == 0;
    if (prog == 1)
        return strncmp(key, "cuda.prefill.", 13) == 0 ? key + 13 : NULL;
    return !other && strncmp(key, "cuda.", 5) == 0 ? key + 5 : NULL;
}

bool kn_cuda_plan_present(const uint8_t *base, uint64_t size)
{
    const uint8_t *sec[KN_SEC_COUNT];
    uint64_t sec_size[KN_SEC_COUNT];
    return find_sections(base, size, sec, sec_size) && n_cuda_sections(sec) == KN_SEC_CU_END - KN_SEC_CU_KERNELS;
}

/* Copies section k as entries of `esize` bytes into a new array. */
static kn_status copy_table(rdc *r, int k, size_t esize, const char *what, void **out, uint32_t *n)
{
    uint64_t size = r->sec_size[k];
    if (size % esize != 0 || size / esize > (1u << 28))
        return bad(r, "the CUDA %s section is not a whole number of entries", what);
    *n = (uint32_t)(size / esize);
    *out = kn_mem_alloc(r->p->a, (size_t)size + esize);
    if (!*out)
        return KN_ERR_NOMEM;
    if (size)
        memcpy(*out, r->sec[k], (size_t)size);
    return KN_OK;
}

static const char *str_at(rdc *r, uint32_t off)
{
    uint64_t n = r->sec_size[KN_SEC_STRINGS];
    if (!r->sec[KN_SEC_STRINGS] || off >= n)
        return NULL;
    const char *s = (const char *)r->sec[KN_SEC_STRINGS] + off;
    return memchr(s, 0, (size_t)(n - off)) ? s : NULL;
}

size_t kn_cuda_gemm_elem_size(int32_t dtype)
{
    switch (dtype) {
    case KN_F32: return 4;
    case KN_F16:
    case KN_BF16: return 2;
    case KN_F64: return 8;
    default: return 0;
    }
}

/* Bytes of a slot's dtype and dims; false when they overflow. */
static bool slot_tensor_bytes(const kn_plan_cu_slot *s, uint64_t *out)
{
    int64_t n = 1;
    for (int32_t i = 0; i < s->rank; i++) {
        if (s->dims[i] && n > INT64_MAX / s->dims[i])
            return false;
        n *= s->dims[i];
    }
    size_t nb;
    if (kn_dtype_nbytes((kn_dtype)s->dtype, n, &nb) != KN_OK)
        return false;
    *out = nb;
    return true;
}

static kn_status check_slots(rdc *r, uint64_t meta_pool, const uint32_t *out_meta)
{
    kn_cuda_plan *p = r->p;
    const kn_graph *g = r->g;
    const kn_model_info *info = g->info;
    uint64_t pool_end = 0;
    for (uint32_t i = 0; i < g->n_inputs; i++)
        p->input_slot[i] = KN_PLAN_NONE;
    for (uint32_t i = 0; i < p->n_slots; i++) {
        const kn_plan_cu_slot *s = &p->slots[i];
        if (s->reserved || s->place < KN_CUDA_SLOT_POOL || s->place > KN_CUDA_SLOT_INPUT)
            return bad(r, "CUDA slot %u: bad place %u", i, s->place);
        if (!kn_dtype_valid(s->dtype) || s->dtype == KN_STRING ||
            (s->dtype == KN_UNDEFINED && s->value != KN_PLAN_NONE))
            return bad(r, "CUDA slot %u: bad dtype %d", i, (int)s->dtype);
        if (s->rank < 0 || s->rank > KN_CU_MAX_RANK)
            return bad(r, "CUDA slot %u: bad rank %d", i, (int)s->rank);
        for (int32_t k = 0; k < s->rank; k++)
            if (s->dims[k] < 0)
                return bad(r, "CUDA slot %u: negative dimension", i);
        if (s->value != KN_PLAN_NONE && s->value >= g->n_values)
            return bad(r, "CUDA slot %u: value %u out of range (the graph has %u)", i, s->value, g->n_values);
        uint64_t end;
        if (!add_ok(s->offset, s->nbytes, &end))
            return bad(r, "CUDA slot %u: offset + size overflows", i);
        if (s->place == KN_CUDA_SLOT_WEIGHT) { /* a weight: a view into constant `index` */
            if (!info->plan_consts || s->index >= info->n_plan_consts)
                return bad(r, "CUDA slot %u: constant %u out of range (the plan has %u)", i, s->index,
                           info->n_plan_consts);
            const kn_tensor *t = info->plan_consts[s->index];
            if (t->dtype == KN_STRING)
                return bad(r, "CUDA slot %u: constant '%s' is a string tensor", i, t->name);
            if (end > t->nbytes)
                return bad(r, "CUDA slot %u: %llu bytes at %llu of constant '%s', which has %zu", i,
                           (unsigned long long)s->nbytes, (unsigned long long)s->offset, t->name, t->nbytes);
            continue;
        }
        pool_end = end > pool_end ? end : pool_end;
        if (s->place != KN_CUDA_SLOT_INPUT)
            continue;
        /* a graph input, copied in before each run */
        if (s->index >= g->n_inputs)
            return bad(r, "CUDA slot %u: graph input %u out of range (the graph has %u)", i, s->index, g->n_inputs);
        kn_id vid = g->inputs[s->index];
        const kn_value *v = &g->values[vid];
        uint64_t want;
        if (s->value != KN_PLAN_NONE && s->value != vid)
            return bad(r, "CUDA slot %u: input %u holds value %u, not the input's %u", i, s->index, s->value, vid);
        if (s->dtype == KN_UNDEFINED || !slot_tensor_bytes(s, &want) || want != s->nbytes)
            return bad(r, "CUDA slot %u (input '%s'): %llu bytes do not match its dtype and shape", i, v->name,
                       (unsigned long long)s->nbytes);
        if (v->type.kind == KN_TYPE_TENSOR && v->type.dtype && (int32_t)v->type.dtype != s->dtype)
            return bad(r, "CUDA slot %u: input '%s' is %s, the slot %s", i, v->name, kn_dtype_name(v->type.dtype),
                       kn_dtype_name((kn_dtype)s->dtype));
        uint32_t first = p->input_slot[s->index];
        if (first == KN_PLAN_NONE) {
            p->input_slot[s->index] = i;
        } else {
            const kn_plan_cu_slot *f = &p->slots[first];
            if (f->dtype != s->dtype || f->rank != s->rank ||
                memcmp(f->dims, s->dims, (size_t)s->rank * sizeof s->dims[0]) != 0)
                return bad(r, "CUDA slots %u and %u give input '%s' different shapes", first, i, v->name);
        }
    }
    if (meta_pool != UINT64_MAX && meta_pool < pool_end)
        return bad(r, "the CUDA slots reach byte %llu of a %llu-byte pool (cuda.pool_bytes)",
                   (unsigned long long)pool_end, (unsigned long long)meta_pool);
    p->pool_bytes = meta_pool != UINT64_MAX ? meta_pool : pool_end;
    /* the outputs: each read back from its slot, named by META
     * cuda.output.K (else the first slot holding its value) */
    for (uint32_t k = 0; k < g->n_outputs; k++) {
        kn_id vid = g->outputs[k];
        const kn_value *v = &g->values[vid];
        uint32_t found = out_meta[k];
        if (found != KN_PLAN_NONE && (found >= p->n_slots || p->slots[found].value != vid))
            return bad(r, "cuda.output.%u names slot %u, which does not hold output '%s'", k, found, v->name);
        for (uint32_t i = 0; i < p->n_slots && found == KN_PLAN_NONE; i++)
            if (p->slots[i].value == vid)
                found = i;
        if (found == KN_PLAN_NONE)
            return bad(r, "no CUDA slot holds output '%s'", v->name);
        const kn_plan_cu_slot *s = &p->slots[found];
        uint64_t want;
        if (!slot_tensor_bytes(s, &want) || want != s->nbytes)
            return bad(r, "CUDA slot %u (output '%s'): %llu bytes do not match its dtype and shape", found, v->name,
                       (unsigned long long)s->nbytes);
        if (v->type.kind == KN_TYPE_TENSOR && v->type.dtype && (int32_t)v->type.dtype != s->dtype)
            return bad(r, "CUDA slot %u: output '%s' is %s, the slot %s", found, v->name,
                       kn_dtype_name(v->type.dtype), kn_dtype_name((kn_dtype)s->dtype));
        p->output_slot[k] = found;
    }
    return KN_OK;
}

static kn_status check_kernels(rdc *r)
{
    kn_cuda_plan *p = r->p;
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        const kn_plan_cu_kernel *kn = &p->kernels[k];
        p->entries[k] = str_at(r, kn->entry);
        if (!p->entries[k] || !p->entries[k][0])
            return bad(r, "CUDA kernel %u: bad entry point name", k);
        if (kn->reserved || kn->n_images == 0 || kn->first_image > p->n_images ||
            kn->n_images > p->n_images - kn->first_image)
            return bad(r, "CUDA kernel %u ('%s'): image range out of bounds", k, p->entries[k]);
    }
    for (uint32_t i = 0; i < p->n_images; i++) {
        const kn_plan_cu_image *im = &p->images[i];
        if (im->kernel >= p->n_kernels || i < p->kernels[im->kernel].first_image ||
            i - p->kernels[im->kernel].first_image >= p->kernels[im->kernel].n_images)
            return bad(r, "CUDA image %u: kernel %u does not list it", i, im->kernel);
        if (im->arch != KN_CU_ARCH_PTX && (im->arch < 10 || im->arch > 1000))
            return bad(r, "CUDA image %u: bad arch %u", i, im->arch);
        if (im->size == 0 || im->offset > p->blobs_size || im->size > p->blobs_size - im->offset)
            return bad(r, "CUDA image %u: bytes out of range", i);
        if (im->arch != KN_CU_ARCH_PTX && (im->size < 4 || memcmp(p->blobs + im->offset, "\177ELF", 4) != 0))
            return bad(r, "CUDA image %u (sm_%u): not a CUBIN", i, im->arch);
    }
    return KN_OK;
}

static kn_status check_args(rdc *r)
{
    kn_cuda_plan *p = r->p;
    for (uint32_t i = 0; i < p->n_args; i++) {
        const kn_plan_cu_arg *a = &p->args[i];
        if (a->kind == KN_CU_ARG_SLOT) {
            if (a->slot >= p->n_slots)
                return bad(r, "CUDA argument %u: slot %u out of range (%u slots)", i, a->slot, p->n_slots);
            if (a->offset > p->slots[a->slot].nbytes)
                return bad(r, "CUDA argument %u: offset %llu past the end of slot %u", i,
                           (unsigned long long)a->offset, a->slot);
        } else if (a->kind == KN_CU_ARG_PARAMS) {
            if (a->size == 0 || a->size > 32764 || a->offset > p->params_size || a->size > p->params_size - a->offset)
                return bad(r, "CUDA argument %u: parameter bytes out of range", i);
        } else if (a->kind == KN_CU_ARG_KV) {
            if (!p->kv_rows)
                return bad(r, "CUDA argument %u reads the KV cache, but the plan has no cuda.kv_rows and kiln.kv.* "
                              "metadata", i);
            bool pool = a->slot == KN_CU_KV_KEYS || a->slot == KN_CU_KV_VALUES;
            if (a->slot >= KN_CU_KV_COUNT || a->size != 0 || (pool ? a->offset >= p->kv_layers : a->offset != 0))
                return bad(r, "CUDA argument %u: bad KV cache argument (%u, layer %llu of %u)", i, a->slot,
                           (unsigned long long)a->offset, p->kv_layers);
        } else if (a->kind == KN_CU_ARG_HOST_IN || a->kind == KN_CU_ARG_HOST_OUT) {
            if (a->slot >= p->n_slots || a->offset != 0 || a->size >= r->g->n_values)
                return bad(r, "CUDA argument %u: bad host value", i);
        } else if (a->kind != 0) {
            return bad(r, "CUDA argument %u: bad kind %u", i, a->kind);
        }
    }
    return KN_OK;
}

/* Elements spanned by `batch` row-major rows×cols matrices with leading
 * dimension ld, `stride` elements apart; false on overflow. */
static bool span(int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride, uint64_t *out)
{
    uint64_t a, b;
    if (rows == 0 || cols == 0) {
        *out = 0;
        return true;
    }
    return mul_ok((uint64_t)rows - 1, (uint64_t)ld, &a) && add_ok(a, (uint64_t)cols, &a) &&
           mul_ok((uint64_t)batch - 1, (uint64_t)stride, &b) && add_ok(a, b, out);
}

/* Operand `which` of GEMM step `si` (argument `ai`): a slot argument
 * holding `elems` elements of `es` bytes from its offset. */
static kn_status gemm_operand(rdc *r, uint32_t si, uint32_t ai, const char *which, uint64_t elems, size_t es)
{
    const kn_plan_cu_arg *a = &r->p->args[ai];
    if (a->kind != KN_CU_ARG_SLOT)
        return bad(r, "CUDA step %u: GEMM operand %s is not a slot", si, which);
    const kn_plan_cu_slot *s = &r->p->slots[a->slot];
    uint64_t bytes;
    if (!mul_ok(elems, es, &bytes) || bytes > s->nbytes - a->offset)
        return bad(r, "CUDA step %u: GEMM operand %s spans %llu elements, slot %u has %llu bytes from offset %llu",
                   si, which, (unsigned long long)elems, a->slot, (unsigned long long)s->nbytes,
                   (unsigned long long)a->offset);
    return KN_OK;
}

static kn_status check_gemm(rdc *r, uint32_t si)
{
    kn_cuda_plan *p = r->p;
    const kn_plan_cu_step *st = &p->steps[si];
    kn_plan_cu_gemm *gm = &p->gemms[si];
    if (st->n_args != 4 && st->n_args != 5)
        return bad(r, "CUDA step %u: a GEMM takes 4 or 5 arguments, not %u", si, st->n_args);
    if (st->extra > p->params_size || sizeof *gm > p->params_size - st->extra)
        return bad(r, "CUDA step %u: GEMM descriptor out of range", si);
    memcpy(gm, p->params + st->extra, sizeof *gm);
    /* KN_I8: int8 A and B, int32 C and D (runtime/plan_format.h) */
    bool i8 = gm->dtype == KN_I8;
    size_t es = i8 ? 1 : kn_cuda_gemm_elem_size(gm->dtype), es_cd = i8 ? 4 : es;
    if (!es)
        return bad(r, "CUDA step %u: GEMM dtype %d", si, (int)gm->dtype);
    /* the int8 form cuBLASLt's IMMA kernels take with the default order:
     * exact (alpha 1, beta 0, no epilogue or C), "TN" in its terms, leading
     * dims, its m (our n), k and batch strides multiples of 4 */
    if (i8 && (gm->alpha != 1.0f || gm->beta != 0.0f || gm->epilogue || gm->has_c || st->n_args != 4 ||
               gm->trans_a || !gm->trans_b || gm->k % 4 || gm->n % 4 || gm->lda % 4 || gm->ldb % 4 || gm->ldd % 4 ||
               gm->stride_a % 4 || gm->stride_b % 4 || gm->stride_d % 4 || gm->k > KN_CU_GEMM_I8_MAX_K))
        return bad(r, "CUDA step %u: bad int8 GEMM descriptor", si);
    if (gm->m < 0 || gm->n < 0 || gm->k < 0 || gm->batch < 1 || gm->batch > INT32_MAX || gm->trans_a > 1 ||
        gm->trans_b > 1 || gm->epilogue > 5 || gm->has_c > 1 || gm->reserved || (gm->epilogue >= 3 && !gm->has_c) ||
        (st->n_args == 5 && (gm->epilogue < 3 || gm->batch != 1)))
        return bad(r, "CUDA step %u: bad GEMM descriptor", si);
    bool c_bias = gm->epilogue >= 3 && st->n_args == 4; /* C holds the bias row */
    if (gm->stride_a < 0 || gm->stride_b < 0 || gm->stride_c < 0 || gm->stride_d < 0)
        return bad(r, "CUDA step %u: negative GEMM batch stride", si);
    /* stored shapes (row-major): A m×k or k×m, B k×n or n×k, C and D m×n */
    int64_t ar = gm->trans_a ? gm->k : gm->m, ac = gm->trans_a ? gm->m : gm->k;
    int64_t br = gm->trans_b ? gm->n : gm->k, bc = gm->trans_b ? gm->k : gm->n;
    int64_t one = 1;
    if (gm->lda < (ac > one ? ac : one) || gm->ldb < (bc > one ? bc : one) || gm->ldd < (gm->n > one ? gm->n : one) ||
        (gm->has_c && !c_bias && gm->ldc < (gm->n > one ? gm->n : one)))
        return bad(r, "CUDA step %u: GEMM leading dimension smaller than a row", si);
    uint64_t ea, eb, ec = 0, ed;
    if (!span(ar, ac, gm->lda, gm->batch, gm->stride_a, &ea) || !span(br, bc, gm->ldb, gm->batch, gm->stride_b, &eb) ||
        !span(gm->m, gm->n, gm->ldd, gm->batch, gm->stride_d, &ed) ||
        (gm->has_c && c_bias && !span(1, gm->n, gm->n, gm->batch, gm->stride_c, &ec)) ||
        (gm->has_c && !c_bias && !span(gm->m, gm->n, gm->ldc, gm->batch, gm->stride_c, &ec)))
        return bad(r, "CUDA step %u: GEMM operand sizes overflow", si);
    uint32_t a0 = st->first_arg;
    for (uint32_t i = 0; i8 && i < 4; i++) /* cuBLASLt's IMMA kernels: 4-byte aligned pointers */
        if (p->args[a0 + i].offset % 4)
            return bad(r, "CUDA step %u: int8 GEMM operand %u at byte offset %llu (not a multiple of 4)", si, i,
                       (unsigned long long)p->args[a0 + i].offset);
    KN_TRY(gemm_operand(r, si, a0, "A", ea, es));
    KN_TRY(gemm_operand(r, si, a0 + 1, "B", eb, es));
    if (gm->has_c)
        KN_TRY(gemm_operand(r, si, a0 + 2, c_bias ? "bias" : "C", ec, es_cd));
    else if (p->args[a0 + 2].kind == KN_CU_ARG_PARAMS)
        return bad(r, "CUDA step %u: GEMM operand C is not a slot", si);
    KN_TRY(gemm_operand(r, si, a0 + 3, "D", ed, es_cd));
    if (st->n_args == 5)
        KN_TRY(gemm_operand(r, si, a0 + 4, "bias", (uint64_t)gm->n, es_cd));

    return KN_OK;
}

static kn_status check_steps(rdc *r)
{
    kn_cuda_plan *p = r->p;
    for (uint32_t i = 0; i < p->n_steps; i++) {
        const kn_plan_cu_step *st = &p->steps[i];
        if (st->node != KN_PLAN_NONE && st->node >= r->g->n_nodes)
            return bad(r, "CUDA step %u: node %u out of range (the graph has %u)", i, st->node, r->g->n_nodes);
        if (st->first_arg > p->n_args || st->n_args > p->n_args - st->first_arg)
            return bad(r, "CUDA step %u: argument range out of bounds", i);
        switch (st->kind) {
        case KN_CU_STEP_LAUNCH: {
            if (st->kernel >= p->n_kernels)
                return bad(r, "CUDA step %u: kernel %u out of range (%u kernels)", i, st->kernel, p->n_kernels);
            uint64_t threads = (uint64_t)st->block[0] * st->block[1] * st->block[2];
            if (threads == 0 || threads > 1024 || st->grid[0] > INT32_MAX || st->grid[1] > 65535 ||
                st->grid[2] > 65535)
                return bad(r, "CUDA step %u: bad launch shape", i);
            if (st->n_args > 4096)
                return bad(r, "CUDA step %u: %u kernel arguments", i, st->n_args);
            for (uint32_t k = 0; k < st->n_args; k++)
                if (p->args[st->first_arg + k].kind == 0)
                    return bad(r, "CUDA step %u: argument %u is empty", i, k);
            break;
        }
        case KN_CU_STEP_GEMM: KN_TRY(check_gemm(r, i)); break;
        case KN_CU_STEP_COPY: {
            if (st->n_args != 2)
                return bad(r, "CUDA step %u: a copy takes 2 arguments, not %u", i, st->n_args);
            for (uint32_t k = 0; k < 2; k++) {
                const kn_plan_cu_arg *a = &p->args[st->first_arg + k];
                if (a->kind != KN_CU_ARG_SLOT || st->extra > p->slots[a->slot].nbytes - a->offset)
                    return bad(r, "CUDA step %u: %llu bytes copied past the end of a slot", i,
                               (unsigned long long)st->extra);
            }
            break;
        }
        case KN_CU_STEP_HOST: {
            if (st->node >= r->g->n_nodes)
                return bad(r, "CUDA step %u: a host step needs a node", i);
            for (uint32_t k = 0; k < st->n_args; k++) {
                uint32_t kind = p->args[st->first_arg + k].kind;
                if (kind != KN_CU_ARG_HOST_IN && kind != KN_CU_ARG_HOST_OUT)
                    return bad(r, "CUDA step %u: argument %u of a host step has kind %u", i, k, kind);
            }
            break;
        }
        default: return bad(r, "CUDA step %u: bad kind %u", i, st->kind);
        }
    }
    return KN_OK;
}

static bool parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    char *e;
    if (*v < '0' || *v > '9')
        return false;
    unsigned long long x = strtoull(v, &e, 10);
    if (*e || x > max)
        return false;
    *out = x;
    return true;
}

/* The KV cache's shape: META cuda.kv_rows / cuda.kv_tokens (both or
 * neither; as the plan writer stores them, not a model's meta.* key) and
 * then every kiln.kv.* key the pools need (the model's metadata), each
 * checked. */
static kn_status read_kv_meta(rdc *r)
{
    kn_cuda_plan *p = r->p;
    const kn_model_info *m = r->g->info;
    const char *names[] = {"cuda.kv_rows", "cuda.kv_tokens", "kiln.kv.layers", "kiln.kv.kv_heads",
                           "kiln.kv.head_dim", "kiln.kv.block_size", "kiln.kv.blocks", "kiln.kv.max_seq_len"};
    uint32_t *dst[] = {&p->kv_rows,    &p->kv_tokens,     &p->kv_layers, &p->kv_heads,
                       &p->kv_head_dim, &p->kv_block_size, &p->kv_blocks, &p->kv_max_seq_len};
    const char *val[8] = {NULL}, *dtype = NULL;
    for (uint32_t i = 0; i < m->n_metadata; i++) {
        const char *key = m->metadata[i].key, *ck = cu_key(r, key);
        if (strncmp(key, "meta.kiln.kv.", 13) == 0)
            key += 5;
        else if (ck && strcmp(ck, "kv_rows") == 0) /* this program's, under the name used below */
            key = "cuda.kv_rows";
        else if (ck && strcmp(ck, "kv_tokens") == 0)
            key = "cuda.kv_tokens";
        else if (strncmp(key, "kiln.kv.", 8) != 0)
            continue;
        if (strcmp(key, "kiln.kv.dtype") == 0)
            dtype = m->metadata[i].value;
        for (int k = 0; k < 8; k++)
            if (strcmp(key, names[k]) == 0)
                val[k] = m->metadata[i].value;
    }
    p->kv_rows = p->kv_tokens = 0;
    if (!val[0] && !val[1])
        return KN_OK; /* no step reads the cache */
    for (int k = 0; k < 8; k++) {
        uint64_t x;
        if (!val[k])
            return bad(r, "the steps read the KV cache but %s is missing", names[k]);
        if (!parse_u64(val[k], INT32_MAX, &x) || x == 0)
            return bad(r, "bad %s = '%s'", names[k], val[k]);
        *dst[k] = (uint32_t)x;
    }
    p->kv_dtype = !dtype || strcmp(dtype, "float32") == 0 ? KN_F32
                  : strcmp(dtype, "float16") == 0         ? KN_F16
                  : strcmp(dtype, "bfloat16") == 0        ? KN_BF16
                                                          : KN_UNDEFINED;
    if (p->kv_dtype == KN_UNDEFINED)
        return bad(r, "bad kiln.kv.dtype '%s'", dtype);
    p->kv_max_blocks = (p->kv_max_seq_len + p->kv_block_size - 1) / p->kv_block_size;
    uint64_t bytes;
    if (p->kv_tokens > p->kv_max_seq_len || p->kv_rows > 65535 ||
        !mul_ok((uint64_t)p->kv_layers * p->kv_blocks, (uint64_t)p->kv_heads * p->kv_block_size, &bytes) ||
        !mul_ok(bytes, (uint64_t)p->kv_head_dim * 2, &bytes) || bytes > (1ull << 50))
        return bad(r, "the KV cache (%u rows of %u new tokens, max sequence length %u, %u layers x %u blocks) does "
                      "not fit together",
                   p->kv_rows, p->kv_tokens, p->kv_max_seq_len, p->kv_layers, p->kv_blocks);
    return KN_OK;
}

/* META cuda.pool_bytes (UINT64_MAX when absent), cuda.zero_slot
 * (p->zero_slot, KN_PLAN_NONE when absent) and cuda.output.K, the slot
 * of graph output K (KN_PLAN_NONE when absent). */
static kn_status read_meta(rdc *r, uint64_t *pool, uint32_t *out_slot)
{
    *pool = UINT64_MAX;
    r->p->zero_slot = KN_PLAN_NONE;
    const kn_model_info *m = r->g->info;
    for (uint32_t k = 0; k < r->g->n_outputs; k++)
        out_slot[k] = KN_PLAN_NONE;
    for (uint32_t i = 0; i < m->n_metadata; i++) {
        const char *key = m->metadata[i].key, *v = m->metadata[i].value, *ck = cu_key(r, key);
        uint64_t x, k;
        if (!ck)
            continue;
        if (strcmp(ck, "pool_bytes") == 0) {
            if (!parse_u64(v, (1ull << 50) - 1, &x))
                return bad(r, "bad cuda.pool_bytes '%s'", v);
            *pool = x;
        } else if (strcmp(ck, "zero_slot") == 0) {
            if (!parse_u64(v, UINT32_MAX - 1, &x) || x >= r->p->n_slots || r->p->slots[x].place != KN_CUDA_SLOT_POOL)
                return bad(r, "bad cuda.zero_slot '%s': not a pool slot", v);
            r->p->zero_slot = (uint32_t)x;
        } else if (strncmp(ck, "output.", 7) == 0) {
            if (!parse_u64(ck + 7, UINT32_MAX, &k) || k >= r->g->n_outputs || !parse_u64(v, UINT32_MAX - 1, &x))
                return bad(r, "bad %s = '%s'", key, v);
            out_slot[k] = (uint32_t)x;
        }
    }
    return KN_OK;
}

static kn_status read_all(rdc *r)
{
    kn_cuda_plan *p = r->p;
    const kn_graph *g = r->g;
    KN_TRY(copy_table(r, KN_SEC_CU_KERNELS, sizeof(kn_plan_cu_kernel), "kernel", (void **)&p->kernels, &p->n_kernels));
    KN_TRY(copy_table(r, KN_SEC_CU_IMAGES, sizeof(kn_plan_cu_image), "image", (void **)&p->images, &p->n_images));
    KN_TRY(copy_table(r, KN_SEC_CU_SLOTS, sizeof(kn_plan_cu_slot), "slot", (void **)&p->slots, &p->n_slots));
    KN_TRY(copy_table(r, KN_SEC_CU_STEPS, sizeof(kn_plan_cu_step), "step", (void **)&p->steps, &p->n_steps));
    KN_TRY(copy_table(r, KN_SEC_CU_ARGS, sizeof(kn_plan_cu_arg), "argument", (void **)&p->args, &p->n_args));
    p->params = r->sec[KN_SEC_CU_PARAMS];
    p->params_size = r->sec_size[KN_SEC_CU_PARAMS];
    p->blobs = r->sec[KN_SEC_CU_BLOBS];
    p->blobs_size = r->sec_size[KN_SEC_CU_BLOBS];
    p->entries = kn_mem_alloc(p->a, ((size_t)p->n_kernels + 1) * sizeof *p->entries);
    p->gemms = kn_mem_alloc(p->a, ((size_t)p->n_steps + 1) * sizeof *p->gemms);
    p->input_slot = kn_mem_alloc(p->a, ((size_t)g->n_inputs + 1) * sizeof *p->input_slot);
    p->output_slot = kn_mem_alloc(p->a, ((size_t)g->n_outputs + 1) * sizeof *p->output_slot);
    if (!p->entries || !p->gemms || !p->input_slot || !p->output_slot)
        return KN_ERR_NOMEM;
    memset(p->gemms, 0, ((size_t)p->n_steps + 1) * sizeof *p->gemms);
    uint64_t meta_pool;
    KN_TRY(read_meta(r, &meta_pool, p->output_slot));
    KN_TRY(read_kv_meta(r));
    KN_TRY(check_kernels(r));
    KN_TRY(check_slots(r, meta_pool, p->output_slot));
    KN_TRY(check_args(r));
    KN_TRY(check_steps(r));
    return KN_OK;
}

kn_status kn_cuda_plan_read(const kn_graph *g, const uint8_t *base, uint64_t size, const kn_allocator *a,
                            kn_diag *d, kn_cuda_plan *p)
{
    memset(p, 0, sizeof *p);
    p->a = a;
    p->name = g && g->info && g->info->path ? g->info->path : "<plan>";
    rdc r = {g, d, p, {0}, {0}};
    if (!g || !g->info || g->parent) {
        kn_diag_add(d, KN_ERROR, "%s: not a graph loaded from a plan", p->name);
        return KN_ERR_INVALID;
    }
    if (!find_sections(base, size, r.sec, r.sec_size))
        return bad(&r, "bad header or section table");
    if (g->info->cuda_program == 1) { /* the prefill program: read its sections in the main ones' place */
        int np = n_prefill_sections(r.sec);
        if (np == 0) {
            kn_diag_add(d, KN_ERROR, "%s: the plan has no CUDA prefill program (not a target-cuda decoder plan)",
                        p->name);
            return KN_ERR_UNSUPPORTED;
        }
        if (np != KN_SEC_CU_N || n_cuda_sections(r.sec) != KN_SEC_CU_N)
            return bad(&r, "some of the CUDA prefill sections are missing");
        for (int k = 0; k < KN_SEC_CU_N; k++) {
            r.sec[KN_SEC_CU_KERNELS + k] = r.sec[KN_SEC_CUP_KERNELS + k];
            r.sec_size[KN_SEC_CU_KERNELS + k] = r.sec_size[KN_SEC_CUP_KERNELS + k];
        }
    } else if (g->info->cuda_program >= 2 && g->info->cuda_program < 2 + KN_PLAN_MAX_DECODE_BATCHES) {
        /* a batched decode program: its sections in the main ones' place */
        uint32_t b = g->info->cuda_program - 2;
        if (n_batch_sections(r.sec, b) == 0) {
            kn_diag_add(d, KN_ERROR, "%s: the plan has no batched CUDA decode program %u", p->name, b);
            return KN_ERR_UNSUPPORTED;
        }
        if (n_batch_sections(r.sec, b) != KN_SEC_CU_N || n_prefill_sections(r.sec) != KN_SEC_CU_N ||
            n_cuda_sections(r.sec) != KN_SEC_CU_N)
            return bad(&r, "some of the sections of batched CUDA decode program %u are missing", b);
        for (int k = 0; k < KN_SEC_CU_N; k++) {
            r.sec[KN_SEC_CU_KERNELS + k] = r.sec[KN_SEC_CUB(b) + k];
            r.sec_size[KN_SEC_CU_KERNELS + k] = r.sec_size[KN_SEC_CUB(b) + k];
        }
    } else if (g->info->cuda_program != 0) {
        return bad(&r, "CUDA program %u requested (0 the decode, 1 the prefill, 2 ... %u a batched decode program)",
                   g->info->cuda_program, 1 + KN_PLAN_MAX_DECODE_BATCHES);
    }
    int n = n_cuda_sections(r.sec);
    if (n == 0) {
        kn_diag_add(d, KN_ERROR, "%s: the plan has no CUDA code (compile it with --target cuda)", p->name);
        return KN_ERR_UNSUPPORTED;
    }
    if (n != KN_SEC_CU_END - KN_SEC_CU_KERNELS)
        return bad(&r, "some of the CUDA sections are missing");
    kn_status s = read_all(&r);
    if (s == KN_ERR_NOMEM)
        kn_diag_add(d, KN_ERROR, "%s: out of memory while reading the CUDA sections", p->name);
    if (s != KN_OK)
        kn_cuda_plan_free(p);
    return s;
}

void kn_cuda_plan_free(kn_cuda_plan *p)
{
    if (!p)
        return;
    kn_mem_free(p->a, p->kernels);
    kn_mem_free(p->a, p->entries);
    kn_mem_free(p->a, p->images);
    kn_mem_free(p->a, p->slots);
    kn_mem_free(p->a, p->steps);
    kn_mem_free(p->a, p->args);
    kn_mem_free(p->a, p->gemms);
    kn_mem_free(p->a, p->input_slot);
    kn_mem_free(p->a, p->output_slot);
    const kn_allocator *a = p->a;
    memset(p, 0, sizeof *p);
    p->a = a;
}

uint32_t kn_cuda_plan_pick_image(const kn_cuda_plan *p, uint32_t k, uint32_t arch)
{
    if (k >= p->n_kernels)
        return KN_PLAN_NONE;
    const kn_plan_cu_kernel *kn = &p->kernels[k];
    uint32_t ptx = KN_PLAN_NONE;
    for (uint32_t i = kn->first_image; i < kn->first_image + kn->n_images; i++) {
        if (p->images[i].arch == arch && arch != KN_CU_ARCH_PTX)
            return i;
        if (p->images[i].arch == KN_CU_ARCH_PTX && ptx == KN_PLAN_NONE)
            ptx = i;
    }
    return ptx;
}

void kn_cuda_plan_step_name(const kn_cuda_plan *p, const kn_graph *g, uint32_t i, char *buf, size_t n)
{
    uint32_t node = i < p->n_steps ? p->steps[i].node : KN_PLAN_NONE;
    if (node != KN_PLAN_NONE && node < g->n_nodes) {
        const kn_node *nd = &g->nodes[node];
        snprintf(buf, n, "node '%s' (%s)", nd->name ? nd->name : "", nd->op_type ? nd->op_type : "?");
    } else {
        snprintf(buf, n, "step %u", i);
    }
}

bool kn_cuda_plan_has_code(const kn_graph *g)
{
    return g && g->info && !g->parent && kn_cuda_plan_present(g->info->plan_base, g->info->plan_size);
}
