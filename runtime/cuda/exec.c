/* The CUDA executor: a session holds one context (the device's primary
 * one), one stream, the plan's modules, one activation pool, the
 * weights and pinned staging buffers; a run copies the inputs in, replays
 * the plan's steps in order (kernel launches, cuBLASLt GEMMs, copies) and
 * copies the outputs back. Everything that can be worked out once (device
 * pointers, kernel parameter arrays, GEMM algorithms) is, at creation. */
#include "kiln/cuda.h"
#include "ir/arena.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/kernel.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/gemm.h"
#include "runtime/cuda/plan.h"

#include <stdio.h>
#include <string.h>

#ifndef KN_HAVE_CUDA_HEADERS

/* Built without cuda.h: the backend exists and says it cannot run. */
bool kn_cuda_available(kn_diag *d)
{
    kn_diag_add(d, KN_NOTE, "this build of kiln has no CUDA support");
    return false;
}

kn_status kn_cuda_session_create(const kn_graph *plan_graph, const void *plan_bytes, size_t plan_size,
                                 const kn_cuda_options *opts, const kn_allocator *a, kn_diag *d,
                                 kn_cuda_session **out)
{
    (void)plan_graph, (void)plan_bytes, (void)plan_size, (void)opts, (void)a;
    *out = NULL;
    kn_diag_add(d, KN_ERROR, "this build of kiln has no CUDA support");
    return KN_ERR_UNSUPPORTED;
}

kn_status kn_cuda_session_run(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                              kn_rt_tensor **outputs, uint32_t n_out, kn_diag *d)
{
    (void)s, (void)inputs, (void)n_in, (void)outputs, (void)n_out;
    kn_diag_add(d, KN_ERROR, "this build of kiln has no CUDA support");
    return KN_ERR_UNSUPPORTED;
}

kn_status kn_cuda_session_run_kv(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                 kn_rt_tensor **outputs, uint32_t n_out, const kn_cuda_kv_binding *kv,
                                 kn_diag *d)
{
    (void)kv;
    return kn_cuda_session_run(s, inputs, n_in, outputs, n_out, d);
}

kn_status kn_cuda_session_kv_info(const kn_cuda_session *s, kn_cuda_kv_info *out)
{
    (void)s;
    memset(out, 0, sizeof *out);
    return KN_ERR_INVALID;
}

kn_status kn_cuda_session_timing(const kn_cuda_session *s, kn_cuda_timing *out)
{
    (void)s;
    memset(out, 0, sizeof *out);
    return KN_ERR_INVALID;
}

kn_status kn_cuda_session_step_ms(const kn_cuda_session *s, const float **ms, const uint32_t **node,
                                  uint32_t *n_steps)
{
    (void)s;
    *ms = NULL;
    *node = NULL;
    *n_steps = 0;
    return KN_ERR_INVALID;
}

const char *kn_cuda_session_device(const kn_cuda_session *s)
{
    (void)s;
    return "";
}

void kn_cuda_session_destroy(kn_cuda_session *s) { (void)s; }

#else

#include "runtime/cuda/exec_impl.h"

bool kn_cuda_available(kn_diag *d)
{
    const kn_cuda_driver *cu;
    if (kn_cuda_driver_get(d, KN_NOTE, &cu) != KN_OK)
        return false;
    int n = 0;
    CUresult r = cu->device_get_count(&n);
    if (r != CUDA_SUCCESS) {
        const char *name = NULL;
        if (cu->get_error_name(r, &name) != CUDA_SUCCESS)
            name = NULL;
        kn_diag_add(d, KN_NOTE, "no CUDA device: cuDeviceGetCount: %s", name ? name : "error");
        return false;
    }
    if (n < 1) {
        kn_diag_add(d, KN_NOTE, "the NVIDIA driver reports no CUDA device");
        return false;
    }
    return true;
}

/* ---- creation ---- */

#define CU_TRY(call, expr, ...)                                      \
    do {                                                             \
        CUresult cu_r_ = (expr);                                     \
        if (cu_r_ != CUDA_SUCCESS)                                   \
            return kn_cuda_fail(d, cu_r_, call, __VA_ARGS__);        \
    } while (0)

static kn_status open_device(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_driver *cu = s->cu;
    const char *file = s->plan.name;
    int n = 0;
    CU_TRY("cuDeviceGetCount", cu->device_get_count(&n), "%s", file);
    if (s->opts.device < 0 || s->opts.device >= n) {
        kn_diag_add(d, KN_ERROR, "%s: CUDA device %d does not exist (%d found)", file, s->opts.device, n);
        return KN_ERR_UNSUPPORTED;
    }
    CU_TRY("cuDeviceGet", cu->device_get(&s->dev, s->opts.device), "%s", file);
    int major = 0, minor = 0;
    CU_TRY("cuDeviceGetAttribute",
           cu->device_get_attribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, s->dev), "%s", file);
    CU_TRY("cuDeviceGetAttribute",
           cu->device_get_attribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, s->dev), "%s", file);
    s->arch = (uint32_t)(major * 10 + minor);
    char name[256];
    CU_TRY("cuDeviceGetName", cu->device_get_name(name, (int)sizeof name, s->dev), "%s", file);
    name[sizeof name - 1] = 0;
    snprintf(s->device, sizeof s->device, "%s, sm_%u, driver %d.%d", name, s->arch, cu->version / 1000,
             cu->version % 1000 / 10);
    CU_TRY("cuDevicePrimaryCtxRetain", cu->primary_ctx_retain(&s->ctx, s->dev), "%s", file);
    CU_TRY("cuCtxSetCurrent", cu->ctx_set_current(s->ctx), "%s", file);
    CU_TRY("cuStreamCreate", cu->stream_create(&s->stream, CU_STREAM_NON_BLOCKING), "%s", file);
    return KN_OK;
}

/* "sm_80, sm_90 and PTX" for kernel k's images. */
static void list_images(const kn_cuda_plan *p, uint32_t k, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < p->kernels[k].n_images && used < n; i++) {
        uint32_t arch = p->images[p->kernels[k].first_image + i].arch;
        int w = arch == KN_CU_ARCH_PTX ? snprintf(buf + used, n - used, "%sPTX", i ? ", " : "")
                                       : snprintf(buf + used, n - used, "%ssm_%u", i ? ", " : "", arch);
        used += w > 0 ? (size_t)w : 0;
    }
}

/* Checks a launch's arguments against the kernel's parameters (their
 * count and sizes), where the driver can tell them (12.4+). */
static kn_status check_params(kn_cuda_session *s, uint32_t si, const char *what, kn_diag *d)
{
    const kn_plan_cu_step *st = &s->plan.steps[si];
    if (!s->cu->func_get_param_info)
        return KN_OK;
    CUfunction f = s->funcs[st->kernel];
    const char *entry = s->plan.entries[st->kernel];
    uint32_t i = 0;
    for (;; i++) {
        size_t off = 0, size = 0;
        if (s->cu->func_get_param_info(f, i, &off, &size) != CUDA_SUCCESS)
            break;
        if (i >= st->n_args)
            continue;
        const kn_plan_cu_arg *a = &s->plan.args[st->first_arg + i];
        uint64_t given = a->kind == KN_CU_ARG_SLOT || a->kind == KN_CU_ARG_KV ? sizeof(CUdeviceptr) : a->size;
        if (given != size) {
            kn_diag_add(d, KN_ERROR, "%s: %s: kernel '%s' parameter %u is %zu bytes, the plan passes %llu",
                        s->plan.name, what, entry, i, size, (unsigned long long)given);
            return KN_ERR_INVALID;
        }
    }
    /* i == 0: the driver told nothing (it may not know a JIT-compiled
     * kernel's parameters), so only a count it did report is checked */
    if (i != 0 && i != st->n_args) {
        kn_diag_add(d, KN_ERROR, "%s: %s: kernel '%s' takes %u parameters, the plan passes %u", s->plan.name, what,
                    entry, i, st->n_args);
        return KN_ERR_INVALID;
    }
    return KN_OK;
}

static kn_status load_modules(kn_cuda_session *s, kn_diag *d)
{
    kn_cuda_plan *p = &s->plan;
    const kn_cuda_driver *cu = s->cu;
    s->modules = kn_mem_alloc(s->a, ((size_t)p->n_kernels + 1) * sizeof *s->modules);
    s->funcs = kn_mem_alloc(s->a, ((size_t)p->n_kernels + 1) * sizeof *s->funcs);
    if (!s->modules || !s->funcs)
        return KN_ERR_NOMEM;
    memset(s->modules, 0, ((size_t)p->n_kernels + 1) * sizeof *s->modules);
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        uint32_t im = kn_cuda_plan_pick_image(p, k, s->arch);
        if (im == KN_PLAN_NONE) {
            char have[256];
            list_images(p, k, have, sizeof have);
            kn_diag_add(d, KN_ERROR,
                        "%s: no code for sm_%u: kernel '%s' was compiled for %s only (rebuild the plan for this "
                        "GPU)",
                        p->name, s->arch, p->entries[k], have);
            return KN_ERR_UNSUPPORTED;
        }
        const kn_plan_cu_image *img = &p->images[im];
        /* an aligned, NUL-terminated copy: PTX is text, and ELF readers
         * like aligned data; the plan's bytes are neither guaranteed */
        uint8_t *copy = kn_mem_alloc(s->a, (size_t)img->size + 1);
        if (!copy)
            return KN_ERR_NOMEM;
        memcpy(copy, p->blobs + img->offset, (size_t)img->size);
        copy[img->size] = 0;
        char log[8192];
        log[0] = 0;
        CUjit_option jo[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
        void *jv[2] = {log, (void *)(uintptr_t)sizeof log};
        bool ptx = img->arch == KN_CU_ARCH_PTX;
        CUresult r = cu->module_load_data_ex(&s->modules[k], copy, ptx ? 2u : 0u, ptx ? jo : NULL, ptx ? jv : NULL);
        kn_mem_free(s->a, copy);
        if (r != CUDA_SUCCESS) {
            s->modules[k] = NULL;
            log[sizeof log - 1] = 0;
            char img_name[64];
            snprintf(img_name, sizeof img_name, ptx ? "PTX, JIT-compiled for sm_%u" : "CUBIN for sm_%u", s->arch);
            return kn_cuda_fail(d, r, "cuModuleLoadDataEx", "%s: kernel '%s' (%s)%s%s", p->name, p->entries[k],
                                img_name, log[0] ? "\n" : "", log);
        }
        CU_TRY("cuModuleGetFunction", cu->module_get_function(&s->funcs[k], s->modules[k], p->entries[k]),
               "%s: kernel '%s'", p->name, p->entries[k]);
        uint32_t smem = 0;
        for (uint32_t i = 0; i < p->n_steps; i++)
            if (p->steps[i].kind == KN_CU_STEP_LAUNCH && p->steps[i].kernel == k && p->steps[i].smem > smem)
                smem = p->steps[i].smem;
        if (smem > 48u * 1024)
            CU_TRY("cuFuncSetAttribute",
                   cu->func_set_attribute(s->funcs[k], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem),
                   "%s: kernel '%s' (%u bytes of shared memory)", p->name, p->entries[k], smem);
    }
    return KN_OK;
}

static kn_status device_alloc(kn_cuda_session *s, CUdeviceptr *p, uint64_t bytes, const char *what, kn_diag *d)
{
    *p = 0;
    if (bytes == 0)
        return KN_OK;
    CU_TRY("cuMemAlloc", s->cu->mem_alloc(p, (size_t)bytes), "%s: %llu bytes for %s", s->plan.name,
           (unsigned long long)bytes, what);
    return KN_OK;
}

/* The pool, the weights (each constant a weight slot refers to, once;
 * or opts.kv_shared's when that session runs a program of the same plan
 * bytes and uploaded every constant this one reads) and every slot's
 * device address. */
static kn_status place_memory(kn_cuda_session *s, kn_diag *d)
{
    kn_cuda_plan *p = &s->plan;
    const kn_model_info *info = s->g->info;
    KN_TRY(device_alloc(s, &s->pool, p->pool_bytes, "the activation pool", d));
    const kn_cuda_session *o = s->opts.kv_shared;
    bool borrow = o && o->woff && o->dev == s->dev && o->g->info->plan_base == info->plan_base &&
                  o->g->info->n_plan_consts == info->n_plan_consts;
    for (uint32_t i = 0; borrow && i < p->n_slots; i++)
        borrow = p->slots[i].place != KN_CUDA_SLOT_WEIGHT || o->woff[p->slots[i].index] != UINT64_MAX;
    if (borrow) {
        s->weights = o->weights;
        s->weights_borrowed = true;
        for (uint32_t i = 0; i < p->n_slots; i++) {
            const kn_plan_cu_slot *sl = &p->slots[i];
            s->slot_ptr[i] = sl->place == KN_CUDA_SLOT_WEIGHT ? o->weights + o->woff[sl->index] + sl->offset
                                                             : s->pool + sl->offset;
        }
        return KN_OK;
    }
    uint64_t *woff = kn_mem_alloc(s->a, ((size_t)info->n_plan_consts + 1) * sizeof *woff);
    if (!woff)
        return KN_ERR_NOMEM;
    s->woff = woff;
    for (uint32_t i = 0; i <= info->n_plan_consts; i++)
        woff[i] = UINT64_MAX;
    uint64_t wbytes = 0;
    for (uint32_t i = 0; i < p->n_slots; i++) {
        uint32_t c = p->slots[i].index;
        if (p->slots[i].place != KN_CUDA_SLOT_WEIGHT || woff[c] != UINT64_MAX)
            continue;
        woff[c] = wbytes;
        wbytes = (wbytes + info->plan_consts[c]->nbytes + 255) & ~(uint64_t)255;
    }
    kn_status st = device_alloc(s, &s->weights, wbytes, "the weights", d);
    for (uint32_t c = 0; c < info->n_plan_consts && st == KN_OK; c++) {
        const kn_tensor *t = info->plan_consts[c];
        if (woff[c] == UINT64_MAX || t->nbytes == 0)
            continue;
        CUresult r = s->cu->memcpy_htod_async(s->weights + woff[c], t->data, t->nbytes, s->stream);
        if (r != CUDA_SUCCESS)
            st = kn_cuda_fail(d, r, "cuMemcpyHtoDAsync", "%s: uploading constant '%s'", p->name, t->name);
    }
    for (uint32_t i = 0; i < p->n_slots && st == KN_OK; i++) {
        const kn_plan_cu_slot *sl = &p->slots[i];
        s->slot_ptr[i] = sl->place == KN_CUDA_SLOT_WEIGHT ? s->weights + woff[sl->index] + sl->offset
                                                         : s->pool + sl->offset;
    }
    return st;
}

/* The plan's zero slot (META cuda.zero_slot: the kernels' persistent
 * memory, e.g. the GEMV's K-split counters) is zero before the first
 * run; every run leaves it zero, and memory planning gives it to nothing
 * else, so this is done once per session. */
static kn_status zero_persistent(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_plan *p = &s->plan;
    if (p->zero_slot == KN_PLAN_NONE || !p->slots[p->zero_slot].nbytes)
        return KN_OK;
    uint64_t n = p->slots[p->zero_slot].nbytes;
    void *z = kn_mem_alloc(s->a, (size_t)n);
    if (!z)
        return KN_ERR_NOMEM;
    memset(z, 0, (size_t)n);
    CUresult r = s->cu->memcpy_htod_async(s->slot_ptr[p->zero_slot], z, (size_t)n, s->stream);
    if (r == CUDA_SUCCESS) /* pageable memory: wait before the bytes go */
        r = s->cu->stream_synchronize(s->stream);
    kn_mem_free(s->a, z);
    if (r != CUDA_SUCCESS)
        return kn_cuda_fail(d, r, "cuMemcpyHtoDAsync", "%s: zeroing the persistent slot (%llu bytes)", p->name,
                            (unsigned long long)n);
    return KN_OK;
}

/* The KV pools (both of the plan's shape, opts.kv_blocks blocks or the
 * plan's; or opts.kv_shared's), the block table and the past lengths,
 * allocated once. */
static kn_status alloc_kv(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_plan *p = &s->plan;
    if (!p->kv_rows)
        return KN_OK;
    const kn_cuda_session *o = s->opts.kv_shared;
    if (o) { /* the other session's pools: the same cache shape on the same device */
        const kn_cuda_plan *q = &o->plan;
        if (!q->kv_rows || o->dev != s->dev || q->kv_layers != p->kv_layers || q->kv_heads != p->kv_heads ||
            q->kv_head_dim != p->kv_head_dim || q->kv_block_size != p->kv_block_size ||
            q->kv_max_seq_len != p->kv_max_seq_len || q->kv_dtype != p->kv_dtype) {
            kn_diag_add(d, KN_ERROR, "%s: cannot share the KV cache of %s: another device or cache shape", p->name,
                        q->name ? q->name : "a session");
            return KN_ERR_INVALID;
        }
        s->kv_keys = o->kv_keys, s->kv_values = o->kv_values;
        s->kv_blocks = o->kv_blocks, s->kv_layer_bytes = o->kv_layer_bytes;
        s->kv_borrowed = true;
    } else {
        s->kv_blocks = s->opts.kv_blocks ? s->opts.kv_blocks : p->kv_blocks;
        /* one block of one layer: below 2^52 bytes (kn_cuda_plan_read bounds the plan's cache) */
        uint64_t per_block = (uint64_t)p->kv_heads * p->kv_block_size * p->kv_head_dim *
                             kn_cuda_gemm_elem_size(p->kv_dtype);
        if (s->kv_blocks > INT32_MAX || s->kv_blocks > (1ull << 50) / per_block / p->kv_layers) {
            kn_diag_add(d, KN_ERROR, "%s: a KV cache of %u blocks is too large", p->name, s->kv_blocks);
            return KN_ERR_INVALID;
        }
        s->kv_layer_bytes = per_block * s->kv_blocks;
        uint64_t pool = s->kv_layer_bytes * p->kv_layers;
        KN_TRY(device_alloc(s, &s->kv_keys, pool, "the KV cache's keys", d));
        KN_TRY(device_alloc(s, &s->kv_values, pool, "the KV cache's values", d));
    }
    KN_TRY(device_alloc(s, &s->kv_table, (uint64_t)p->kv_rows * p->kv_max_blocks * 4, "the KV block table", d));
    return device_alloc(s, &s->kv_past, (uint64_t)p->kv_rows * 4, "the KV past lengths", d);
}

kn_status kn_cuda_session_kv_info(const kn_cuda_session *s, kn_cuda_kv_info *out)
{
    memset(out, 0, sizeof *out);
    if (!s || !s->plan.kv_rows)
        return KN_ERR_INVALID;
    const kn_cuda_plan *p = &s->plan;
    *out = (kn_cuda_kv_info){p->kv_rows,       p->kv_tokens,      p->kv_layers,     p->kv_heads,
                             p->kv_head_dim,   p->kv_block_size,  p->kv_max_seq_len, p->kv_max_blocks,
                             s->kv_blocks,     (kn_dtype)p->kv_dtype, 2 * s->kv_layer_bytes * p->kv_layers};
    return KN_OK;
}

static kn_status plan_steps(kn_cuda_session *s, kn_diag *d)
{
    kn_cuda_plan *p = &s->plan;
    for (uint32_t i = 0; i < p->n_args; i++) {
        const kn_plan_cu_arg *a = &p->args[i];
        if (a->kind == KN_CU_ARG_SLOT || a->kind == KN_CU_ARG_HOST_IN || a->kind == KN_CU_ARG_HOST_OUT) {
            s->arg_ptr[i] = s->slot_ptr[a->slot] + a->offset;
            s->kparams[i] = &s->arg_ptr[i];
        } else if (a->kind == KN_CU_ARG_PARAMS) {
            s->kparams[i] = (void *)(uintptr_t)(p->params + a->offset); /* cuLaunchKernel only reads it */
        } else if (a->kind == KN_CU_ARG_KV) { /* layers and kinds checked by kn_cuda_plan_read */
            s->arg_ptr[i] = a->slot == KN_CU_KV_KEYS     ? s->kv_keys + a->offset * s->kv_layer_bytes
                            : a->slot == KN_CU_KV_VALUES ? s->kv_values + a->offset * s->kv_layer_bytes
                            : a->slot == KN_CU_KV_TABLE  ? s->kv_table
                                                         : s->kv_past;
            s->kparams[i] = &s->arg_ptr[i];
        }
    }
    size_t ws = 0;
    for (uint32_t i = 0; i < p->n_steps; i++) {
        const kn_plan_cu_step *st = &p->steps[i];
        char what[512];
        kn_cuda_plan_step_name(p, s->g, i, what, sizeof what);
        if (st->kind == KN_CU_STEP_LAUNCH) {
            KN_TRY(check_params(s, i, what, d));
        } else if (st->kind == KN_CU_STEP_GEMM) {
            if (!s->lt) {
                kn_status bs = kn_cuda_blaslt_get(d, &s->lt);
                if (bs != KN_OK) {
                    kn_diag_add(d, KN_ERROR, "%s: %s: needs cuBLASLt", p->name, what);
                    return bs;
                }
            }
            const kn_plan_cu_gemm *gm = &p->gemms[i];
            char ctx[600];
            snprintf(ctx, sizeof ctx, "%s: %s", p->name, what);
            KN_TRY(kn_cuda_gemm_plan(s->lt, gm, s->arg_ptr[st->first_arg], s->arg_ptr[st->first_arg + 1],
                                     gm->has_c ? s->arg_ptr[st->first_arg + 2] : 0, s->arg_ptr[st->first_arg + 3],
                                     st->n_args == 5 ? s->arg_ptr[st->first_arg + 4] : 0, KN_CU_WORKSPACE_MAX, ctx,
                                     d, &s->gemms[i]));
            ws = s->gemms[i].workspace > ws ? s->gemms[i].workspace : ws;
        }
    }
    s->workspace_bytes = ws;
    return device_alloc(s, &s->workspace, ws, "the cuBLASLt workspace", d);
}

static kn_status stage_io(kn_cuda_session *s, kn_diag *d)
{
    kn_cuda_plan *p = &s->plan;
    const kn_graph *g = s->g;
    uint64_t in = 0, out = 0;
    for (uint32_t k = 0; k < g->n_inputs; k++) {
        uint32_t sl = p->input_slot[k];
        s->in_off[k] = sl == KN_PLAN_NONE ? UINT64_MAX : in;
        if (sl != KN_PLAN_NONE)
            in = (in + p->slots[sl].nbytes + KN_CU_STAGE_ALIGN - 1) & ~(uint64_t)(KN_CU_STAGE_ALIGN - 1);
    }
    s->kv_stage = in;
    if (p->kv_rows) /* the block table, then the past lengths */
        in += ((uint64_t)p->kv_rows * p->kv_max_blocks + p->kv_rows) * sizeof(int32_t);
    for (uint32_t k = 0; k < g->n_outputs; k++) {
        s->out_off[k] = out;
        out = (out + p->slots[p->output_slot[k]].nbytes + KN_CU_STAGE_ALIGN - 1) & ~(uint64_t)(KN_CU_STAGE_ALIGN - 1);
    }
    if (in)
        CU_TRY("cuMemHostAlloc", s->cu->mem_host_alloc((void **)&s->pin_in, (size_t)in, 0),
               "%s: %llu bytes of pinned memory for the inputs", p->name, (unsigned long long)in);
    if (out)
        CU_TRY("cuMemHostAlloc", s->cu->mem_host_alloc((void **)&s->pin_out, (size_t)out, 0),
               "%s: %llu bytes of pinned memory for the outputs", p->name, (unsigned long long)out);
    return KN_OK;
}

static kn_status make_events(kn_cuda_session *s, kn_diag *d)
{
    if (s->opts.profile_steps)
        s->opts.timing = true;
    if (!s->opts.timing)
        return KN_OK;
    for (int i = 0; i < 4; i++)
        CU_TRY("cuEventCreate", s->cu->event_create(&s->ev[i], CU_EVENT_DEFAULT), "%s", s->plan.name);
    if (!s->opts.profile_steps)
        return KN_OK;
    uint32_t n = s->plan.n_steps;
    s->step_ev = kn_mem_alloc(s->a, ((size_t)n + 1) * sizeof *s->step_ev);
    s->step_ms = kn_mem_alloc(s->a, ((size_t)n + 1) * sizeof *s->step_ms);
    s->step_node = kn_mem_alloc(s->a, ((size_t)n + 1) * sizeof *s->step_node);
    if (!s->step_ev || !s->step_ms || !s->step_node)
        return KN_ERR_NOMEM;
    memset(s->step_ev, 0, ((size_t)n + 1) * sizeof *s->step_ev);
    for (uint32_t i = 0; i < n; i++) {
        s->step_ms[i] = 0;
        s->step_node[i] = s->plan.steps[i].node;
    }
    for (uint32_t i = 0; i <= n; i++)
        CU_TRY("cuEventCreate", s->cu->event_create(&s->step_ev[i], CU_EVENT_DEFAULT), "%s", s->plan.name);
    return KN_OK;
}

static kn_status create(kn_cuda_session *s, const uint8_t *base, uint64_t size, kn_diag *d)
{
    KN_TRY(kn_cuda_driver_get(d, KN_ERROR, &s->cu));
    KN_TRY(kn_cuda_plan_read(s->g, base, size, s->a, d, &s->plan));
    kn_cuda_plan *p = &s->plan;
    KN_TRY(open_device(s, d));
    size_t ns = (size_t)p->n_slots + 1, na = (size_t)p->n_args + 1, nst = (size_t)p->n_steps + 1;
    s->slot_ptr = kn_mem_alloc(s->a, ns * sizeof *s->slot_ptr);
    s->arg_ptr = kn_mem_alloc(s->a, na * sizeof *s->arg_ptr);
    s->kparams = kn_mem_alloc(s->a, na * sizeof *s->kparams);
    s->gemms = kn_mem_alloc(s->a, nst * sizeof *s->gemms);
    s->in_off = kn_mem_alloc(s->a, ((size_t)s->g->n_inputs + 1) * sizeof *s->in_off);
    s->out_off = kn_mem_alloc(s->a, ((size_t)s->g->n_outputs + 1) * sizeof *s->out_off);
    if (!s->slot_ptr || !s->arg_ptr || !s->kparams || !s->gemms || !s->in_off || !s->out_off)
        return KN_ERR_NOMEM;
    memset(s->slot_ptr, 0, ns * sizeof *s->slot_ptr);
    memset(s->arg_ptr, 0, na * sizeof *s->arg_ptr);
    memset(s->kparams, 0, na * sizeof *s->kparams);
    memset(s->gemms, 0, nst * sizeof *s->gemms);
    KN_TRY(load_modules(s, d));
    KN_TRY(place_memory(s, d));
    KN_TRY(zero_persistent(s, d));
    KN_TRY(alloc_kv(s, d));
    KN_TRY(plan_steps(s, d));
    KN_TRY(stage_io(s, d));
    KN_TRY(make_events(s, d));
    KN_TRY(kn_cuda_sample_setup(s, d));
    CU_TRY("cuStreamSynchronize", s->cu->stream_synchronize(s->stream), "%s: uploading the weights", p->name);
    return KN_OK;
}

kn_status kn_cuda_session_create(const kn_graph *plan_graph, const void *plan_bytes, size_t plan_size,
                                 const kn_cuda_options *opts, const kn_allocator *a, kn_diag *d,
                                 kn_cuda_session **out)
{
    *out = NULL;
    if (!plan_graph || !plan_graph->info) {
        kn_diag_add(d, KN_ERROR, "kn_cuda_session_create: no plan graph");
        return KN_ERR_INVALID;
    }
    const uint8_t *base = plan_bytes ? plan_bytes : plan_graph->info->plan_base;
    uint64_t size = plan_bytes ? plan_size : plan_graph->info->plan_size;
    kn_cuda_session *s = kn_mem_alloc(a, sizeof *s);
    if (!s) {
        kn_diag_add(d, KN_ERROR, "out of memory creating a CUDA session");
        return KN_ERR_NOMEM;
    }
    memset(s, 0, sizeof *s);
    s->a = a;
    s->g = plan_graph;
    if (opts)
        s->opts = *opts;
    size_t errors = kn_diag_count(d, KN_ERROR);
    kn_status st = create(s, base, size, d);
    if (st != KN_OK) {
        if (st == KN_ERR_NOMEM && kn_diag_count(d, KN_ERROR) == errors)
            kn_diag_add(d, KN_ERROR, "%s: out of memory creating a CUDA session", s->plan.name ? s->plan.name : "");
        kn_cuda_session_destroy(s);
        return st;
    }
    *out = s;
    return KN_OK;
}

void kn_cuda_session_destroy(kn_cuda_session *s)
{
    if (!s)
        return;
    const kn_cuda_driver *cu = s->cu;
    if (cu && s->ctx) {
        cu->ctx_set_current(s->ctx);
        if (s->stream)
            cu->stream_synchronize(s->stream);
        kn_cuda_sample_release(s);
        for (uint32_t i = 0; s->gemms && i < s->plan.n_steps; i++)
            kn_cuda_gemm_release(s->lt, &s->gemms[i]);
        for (int i = 0; i < 4; i++)
            if (s->ev[i])
                cu->event_destroy(s->ev[i]);
        for (uint32_t i = 0; s->step_ev && i <= s->plan.n_steps; i++)
            if (s->step_ev[i])
                cu->event_destroy(s->step_ev[i]);
        if (s->pin_in)
            cu->mem_free_host(s->pin_in);
        if (s->pin_out)
            cu->mem_free_host(s->pin_out);
        if (s->workspace)
            cu->mem_free(s->workspace);
        if (s->weights && !s->weights_borrowed)
            cu->mem_free(s->weights);
        if (s->pool)
            cu->mem_free(s->pool);
        CUdeviceptr kv[4] = {s->kv_table, s->kv_past, s->kv_borrowed ? 0 : s->kv_keys,
                             s->kv_borrowed ? 0 : s->kv_values};
        for (int i = 0; i < 4; i++)
            if (kv[i])
                cu->mem_free(kv[i]);
        for (uint32_t k = 0; s->modules && k < s->plan.n_kernels; k++)
            if (s->modules[k])
                cu->module_unload(s->modules[k]);
        if (s->stream)
            cu->stream_destroy(s->stream);
        cu->primary_ctx_release(s->dev);
    }
    kn_mem_free(s->a, s->modules);
    kn_mem_free(s->a, s->funcs);
    kn_mem_free(s->a, s->slot_ptr);
    kn_mem_free(s->a, s->woff);
    kn_mem_free(s->a, s->arg_ptr);
    kn_mem_free(s->a, s->kparams);
    kn_mem_free(s->a, s->gemms);
    kn_mem_free(s->a, s->in_off);
    kn_mem_free(s->a, s->out_off);
    kn_mem_free(s->a, s->step_ev);
    kn_mem_free(s->a, s->step_ms);
    kn_mem_free(s->a, s->step_node);
    kn_cuda_plan_free(&s->plan);
    kn_mem_free(s->a, s);
}

const char *kn_cuda_session_device(const kn_cuda_session *s) { return s ? s->device : ""; }

/* ---- running ---- */

static void format_shape(kn_dtype t, int32_t rank, const int64_t *dims, char *buf, size_t n)
{
    size_t used = (size_t)snprintf(buf, n, "%s[", kn_dtype_name(t));
    for (int32_t i = 0; i < rank && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)dims[i]);
    if (used < n)
        snprintf(buf + used, n - used, "]");
}

static kn_status check_inputs(kn_cuda_session *s, const kn_rt_tensor *const *inputs, kn_diag *d)
{
    const kn_graph *g = s->g;
    for (uint32_t k = 0; k < g->n_inputs; k++) {
        const kn_rt_tensor *t = inputs[k];
        const kn_value *v = &g->values[g->inputs[k]];
        if (!t) {
            kn_diag_add(d, KN_ERROR, "%s: input '%s' is missing", s->plan.name, v->name);
            return KN_ERR_INVALID;
        }
        uint32_t sl = s->plan.input_slot[k];
        if (sl == KN_PLAN_NONE) { /* unused by the CUDA code: only its dtype matters */
            if (v->type.kind == KN_TYPE_TENSOR && v->type.dtype && t->dtype != v->type.dtype) {
                kn_diag_add(d, KN_ERROR, "%s: input '%s' is %s, the plan expects %s", s->plan.name, v->name,
                            kn_dtype_name(t->dtype), kn_dtype_name(v->type.dtype));
                return KN_ERR_INVALID;
            }
            continue;
        }
        const kn_plan_cu_slot *slot = &s->plan.slots[sl];
        bool same = (int32_t)t->dtype == slot->dtype && t->rank == slot->rank;
        for (int32_t i = 0; same && i < t->rank; i++)
            same = t->dims[i] == slot->dims[i];
        if (!same || t->nbytes != slot->nbytes || (!t->data && t->nbytes)) {
            char got[256], want[256];
            format_shape(t->dtype, t->rank, t->dims, got, sizeof got);
            format_shape((kn_dtype)slot->dtype, slot->rank, slot->dims, want, sizeof want);
            kn_diag_add(d, KN_ERROR, "%s: input '%s' is %s; the plan was compiled for %s", s->plan.name, v->name,
                        got, want);
            return KN_ERR_INVALID;
        }
    }
    return KN_OK;
}

static double elapsed(const kn_cuda_session *s, CUevent a, CUevent b)
{
    float ms = 0;
    return s->cu->event_elapsed_time(&ms, a, b) == CUDA_SUCCESS ? ms : 0.0;
}

void kn_cuda_exec_read_timing(kn_cuda_session *s, bool graphed)
{
    if (graphed) { /* one graph launch between ev[0] and ev[3]: no phases */
        s->timing = (kn_cuda_timing){0.0, elapsed(s, s->ev[0], s->ev[3]), 0.0};
    } else {
        s->timing.upload_ms = elapsed(s, s->ev[0], s->ev[1]);
        s->timing.compute_ms = elapsed(s, s->ev[1], s->ev[2]);
        s->timing.download_ms = elapsed(s, s->ev[2], s->ev[3]);
    }
    s->has_timing = true;
    for (uint32_t i = 0; s->step_ev && i < s->plan.n_steps; i++)
        s->step_ms[i] = (float)elapsed(s, s->step_ev[i], s->step_ev[i + 1]);
}

/* A node without a CUDA kernel: what it reads comes to the host, the CPU
 * reference backend runs it, its outputs go back (the stream is drained
 * around it, so a HOST step is a synchronisation point). */
static kn_status host_step(kn_cuda_session *s, uint32_t i, const char *what, kn_diag *d)
{
    const kn_cuda_driver *cu = s->cu;
    kn_cuda_plan *p = &s->plan;
    const kn_plan_cu_step *st = &p->steps[i];
    const char *file = p->name;
    const kn_node *n = &s->g->nodes[st->node];
    uint32_t n_in = 0;
    kn_status r = KN_OK;
    kn_id *ids = kn_mem_alloc(s->a, ((size_t)st->n_args + 1) * sizeof *ids);
    kn_rt_tensor **ins = kn_mem_alloc(s->a, ((size_t)st->n_args + 1) * sizeof *ins);
    kn_rt_tensor **outs = kn_mem_alloc(s->a, ((size_t)n->n_outputs + 1) * sizeof *outs);
    if (!ids || !ins || !outs) {
        r = KN_ERR_NOMEM;
        goto out;
    }
    memset(outs, 0, ((size_t)n->n_outputs + 1) * sizeof *outs);
    for (uint32_t k = 0; k < st->n_args && r == KN_OK; k++) {
        const kn_plan_cu_arg *a = &p->args[st->first_arg + k];
        if (a->kind != KN_CU_ARG_HOST_IN)
            continue;
        const kn_plan_cu_slot *sl = &p->slots[a->slot];
        r = kn_rt_tensor_new(s->a, (kn_dtype)sl->dtype, sl->rank, sl->dims, &ins[n_in]);
        if (r != KN_OK)
            break;
        ids[n_in] = (kn_id)a->size;
        if (ins[n_in]->nbytes) {
            CUresult cr = cu->memcpy_dtoh_async(ins[n_in]->data, s->arg_ptr[st->first_arg + k], ins[n_in]->nbytes,
                                                s->stream);
            if (cr != CUDA_SUCCESS)
                r = kn_cuda_fail(d, cr, "cuMemcpyDtoHAsync", "%s: %s", file, what);
        }
        n_in++;
    }
    if (r == KN_OK) {
        CUresult cr = cu->stream_synchronize(s->stream);
        if (cr != CUDA_SUCCESS) {
            s->broken = true;
            r = kn_cuda_fail(d, cr, "cuStreamSynchronize", "%s: %s", file, what);
        }
    }
    if (r == KN_OK)
        r = kn_cpu_run_node(s->g, st->node, ids, (const kn_rt_tensor *const *)ins, n_in, outs, s->a, d);
    for (uint32_t k = 0; k < st->n_args && r == KN_OK; k++) {
        const kn_plan_cu_arg *a = &p->args[st->first_arg + k];
        if (a->kind != KN_CU_ARG_HOST_OUT)
            continue;
        const kn_plan_cu_slot *sl = &p->slots[a->slot];
        const kn_rt_tensor *t = NULL;
        for (uint32_t o = 0; o < n->n_outputs; o++)
            if (n->outputs[o] == (kn_id)a->size)
                t = outs[o];
        if (!t || t->nbytes != sl->nbytes) {
            kn_diag_add(d, KN_ERROR, "%s: %s: the output has %zu bytes on the host, the plan was built for %llu "
                                     "(its shape depends on the data)",
                        file, what, t ? t->nbytes : 0, (unsigned long long)sl->nbytes);
            r = KN_ERR_INVALID;
            break;
        }
        if (t->nbytes) {
            CUresult cr = cu->memcpy_htod_async(s->arg_ptr[st->first_arg + k], t->data, t->nbytes, s->stream);
            if (cr != CUDA_SUCCESS)
                r = kn_cuda_fail(d, cr, "cuMemcpyHtoDAsync", "%s: %s", file, what);
        }
    }
    if (r == KN_OK) { /* the host buffers are freed below: the copies must be done */
        CUresult cr = cu->stream_synchronize(s->stream);
        if (cr != CUDA_SUCCESS) {
            s->broken = true;
            r = kn_cuda_fail(d, cr, "cuStreamSynchronize", "%s: %s", file, what);
        }
    }
out:
    for (uint32_t k = 0; ins && k < n_in; k++)
        kn_rt_tensor_free(s->a, ins[k]);
    for (uint32_t o = 0; outs && o < n->n_outputs; o++)
        kn_rt_tensor_free(s->a, outs[o]);
    kn_mem_free(s->a, ids);
    kn_mem_free(s->a, ins);
    kn_mem_free(s->a, outs);
    return r;
}

kn_status kn_cuda_exec_uploads(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_driver *cu = s->cu;
    kn_cuda_plan *p = &s->plan;
    const char *file = p->name;
    for (uint32_t i = 0; i < p->n_slots; i++) {
        const kn_plan_cu_slot *sl = &p->slots[i];
        if (sl->place != KN_CUDA_SLOT_INPUT || sl->nbytes == 0)
            continue;
        CU_TRY("cuMemcpyHtoDAsync",
               cu->memcpy_htod_async(s->slot_ptr[i], s->pin_in + s->in_off[sl->index], sl->nbytes, s->stream),
               "%s: input '%s'", file, s->g->values[s->g->inputs[sl->index]].name);
    }
    if (p->kv_rows) {
        uint64_t tb = (uint64_t)p->kv_rows * p->kv_max_blocks * 4;
        CU_TRY("cuMemcpyHtoDAsync", cu->memcpy_htod_async(s->kv_table, s->pin_in + s->kv_stage, tb, s->stream),
               "%s: the KV block table", file);
        CU_TRY("cuMemcpyHtoDAsync",
               cu->memcpy_htod_async(s->kv_past, s->pin_in + s->kv_stage + tb, (uint64_t)p->kv_rows * 4, s->stream),
               "%s: the KV past lengths", file);
    }
    return KN_OK;
}

kn_status kn_cuda_exec_steps(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_driver *cu = s->cu;
    kn_cuda_plan *p = &s->plan;
    const char *file = p->name;
    for (uint32_t i = 0; i < p->n_steps; i++) {
        const kn_plan_cu_step *st = &p->steps[i];
        char what[512];
        kn_cuda_plan_step_name(p, s->g, i, what, sizeof what);
        if (s->step_ev)
            CU_TRY("cuEventRecord", cu->event_record(s->step_ev[i], s->stream), "%s", file);
        if (st->kind == KN_CU_STEP_LAUNCH) {
            if (st->grid[0] && st->grid[1] && st->grid[2]) /* an empty grid: nothing to compute */
                CU_TRY("cuLaunchKernel",
                       cu->launch_kernel(s->funcs[st->kernel], st->grid[0], st->grid[1], st->grid[2], st->block[0],
                                         st->block[1], st->block[2], st->smem, s->stream,
                                         &s->kparams[st->first_arg], NULL),
                       "%s: %s: kernel '%s'", file, what, p->entries[st->kernel]);
        } else if (st->kind == KN_CU_STEP_GEMM) {
            char ctx[600];
            snprintf(ctx, sizeof ctx, "%s: %s", file, what);
            KN_TRY(kn_cuda_gemm_run(s->lt, &s->gemms[i], s->workspace, s->workspace_bytes, s->stream, ctx, d));
        } else if (st->kind == KN_CU_STEP_HOST) {
            KN_TRY(host_step(s, i, what, d));
        } else if (st->kind == KN_CU_STEP_COPY && st->extra) {
            CU_TRY("cuMemcpyDtoDAsync",
                   cu->memcpy_dtod_async(s->arg_ptr[st->first_arg], s->arg_ptr[st->first_arg + 1], st->extra,
                                         s->stream),
                   "%s: %s", file, what);
        }
        if (s->opts.sync_each_step) {
            CUresult r = cu->stream_synchronize(s->stream);
            if (r != CUDA_SUCCESS) {
                s->broken = true;
                return kn_cuda_fail(d, r, "cuStreamSynchronize", "%s: %s", file, what);
            }
        }
    }
    if (s->step_ev)
        CU_TRY("cuEventRecord", cu->event_record(s->step_ev[p->n_steps], s->stream), "%s", file);
    return KN_OK;
}

/* Enqueues everything of one run; the caller synchronises. */
static kn_status enqueue(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_driver *cu = s->cu;
    kn_cuda_plan *p = &s->plan;
    const char *file = p->name;
    if (s->opts.timing)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[0], s->stream), "%s", file);
    KN_TRY(kn_cuda_exec_uploads(s, d));
    if (s->opts.timing)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[1], s->stream), "%s", file);
    KN_TRY(kn_cuda_exec_steps(s, d));
    if (s->opts.timing)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[2], s->stream), "%s", file);
    for (uint32_t k = 0; k < s->g->n_outputs; k++) {
        uint32_t sl = p->output_slot[k];
        if (p->slots[sl].nbytes)
            CU_TRY("cuMemcpyDtoHAsync",
                   cu->memcpy_dtoh_async(s->pin_out + s->out_off[k], s->slot_ptr[sl], p->slots[sl].nbytes, s->stream),
                   "%s: output '%s'", file, s->g->values[s->g->outputs[k]].name);
    }
    if (s->opts.timing)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[3], s->stream), "%s", file);
    return KN_OK;
}

static kn_status collect_outputs(kn_cuda_session *s, kn_rt_tensor **outputs, kn_diag *d)
{
    const kn_graph *g = s->g;
    for (uint32_t k = 0; k < g->n_outputs; k++) {
        const kn_plan_cu_slot *sl = &s->plan.slots[s->plan.output_slot[k]];
        kn_status st = kn_rt_tensor_new(s->a, (kn_dtype)sl->dtype, sl->rank, sl->dims, &outputs[k]);
        if (st != KN_OK) {
            kn_diag_add(d, KN_ERROR, "%s: output '%s': out of memory", s->plan.name, g->values[g->outputs[k]].name);
            for (uint32_t i = 0; i < k; i++) {
                kn_rt_tensor_free(s->a, outputs[i]);
                outputs[i] = NULL;
            }
            return st;
        }
        if (sl->nbytes)
            memcpy(outputs[k]->data, s->pin_out + s->out_off[k], (size_t)sl->nbytes);
    }
    return KN_OK;
}

/* A run's KV binding against the plan and the pools: the rows' block ids
 * that the steps will touch all lie in the pools. */
static kn_status check_kv(const kn_cuda_session *s, const kn_cuda_kv_binding *kv, kn_diag *d)
{
    const kn_cuda_plan *p = &s->plan;
    if (!p->kv_rows && !kv)
        return KN_OK;
    if (!p->kv_rows || !kv) {
        kn_diag_add(d, KN_ERROR,
                    p->kv_rows ? "%s: the plan reads the KV cache: run it with kn_cuda_session_run_kv"
                               : "%s: the plan has no KV cache steps: run it with kn_cuda_session_run",
                    p->name);
        return KN_ERR_INVALID;
    }
    if (kv->n_rows != p->kv_rows || kv->max_blocks != p->kv_max_blocks || !kv->block_table || !kv->past) {
        kn_diag_add(d, KN_ERROR, "%s: the KV binding has %u rows of %u blocks; the plan takes %u rows of %u", p->name,
                    kv->n_rows, kv->max_blocks, p->kv_rows, p->kv_max_blocks);
        return KN_ERR_INVALID;
    }
    for (uint32_t r = 0; r < kv->n_rows; r++) {
        int64_t past = kv->past[r], total = past + p->kv_tokens;
        if (past < 0 || total > p->kv_max_seq_len) {
            kn_diag_add(d, KN_ERROR, "%s: KV row %u: a past of %lld tokens plus %u new ones is outside the maximum "
                                     "sequence length %u",
                        p->name, r, (long long)past, p->kv_tokens, p->kv_max_seq_len);
            return KN_ERR_INVALID;
        }
        for (int64_t j = 0; j < (total + p->kv_block_size - 1) / p->kv_block_size; j++) {
            int32_t id = kv->block_table[(size_t)r * kv->max_blocks + (size_t)j];
            if (id < 0 || (uint32_t)id >= s->kv_blocks) {
                kn_diag_add(d, KN_ERROR, "%s: KV row %u: block table entry %lld is %d; the pools have %u blocks",
                            p->name, r, (long long)j, id, s->kv_blocks);
                return KN_ERR_INVALID;
            }
        }
    }
    return KN_OK;
}

kn_status kn_cuda_exec_stage(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                             const kn_cuda_kv_binding *kv, kn_diag *d)
{
    const kn_graph *g = s->g;
    if (s->broken) {
        kn_diag_add(d, KN_ERROR, "%s: the CUDA session failed on the device earlier and cannot run again",
                    s->plan.name);
        return KN_ERR_INTERNAL;
    }
    if (n_in != g->n_inputs) {
        kn_diag_add(d, KN_ERROR, "%s: the plan has %u inputs; %u given", s->plan.name, g->n_inputs, n_in);
        return KN_ERR_INVALID;
    }
    KN_TRY(check_inputs(s, inputs, d));
    KN_TRY(check_kv(s, kv, d));
    CU_TRY("cuCtxSetCurrent", s->cu->ctx_set_current(s->ctx), "%s", s->plan.name);
    for (uint32_t k = 0; k < g->n_inputs; k++)
        if (s->in_off[k] != UINT64_MAX && inputs[k]->nbytes)
            memcpy(s->pin_in + s->in_off[k], inputs[k]->data, inputs[k]->nbytes);
    if (kv) {
        size_t tb = (size_t)kv->n_rows * kv->max_blocks * sizeof(int32_t);
        memcpy(s->pin_in + s->kv_stage, kv->block_table, tb);
        memcpy(s->pin_in + s->kv_stage + tb, kv->past, (size_t)kv->n_rows * sizeof(int32_t));
    }
    return KN_OK;
}

/* Waits for the stream after a run's enqueue (also after a failed one:
 * nothing stays in flight); a fault on the device breaks the session. */
kn_status kn_cuda_exec_sync(kn_cuda_session *s, kn_status st, const char *file, kn_diag *d)
{
    CUresult r = s->cu->stream_synchronize(s->stream);
    if (r != CUDA_SUCCESS) {
        s->broken = true;
        if (st == KN_OK)
            st = kn_cuda_fail(d, r, "cuStreamSynchronize",
                              "%s: running the plan (run with sync_each_step to find the failing node)", file);
    }
    return st;
}

static kn_status run(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in, kn_rt_tensor **outputs,
                     uint32_t n_out, const kn_cuda_kv_binding *kv, kn_diag *d)
{
    const kn_graph *g = s->g;
    const char *file = s->plan.name;
    for (uint32_t k = 0; k < n_out; k++)
        outputs[k] = NULL;
    s->has_timing = false;
    if (s->broken) {
        kn_diag_add(d, KN_ERROR, "%s: the CUDA session failed on the device earlier and cannot run again", file);
        return KN_ERR_INTERNAL;
    }
    if (n_in != g->n_inputs || n_out != g->n_outputs) {
        kn_diag_add(d, KN_ERROR, "%s: the plan has %u inputs and %u outputs; %u and %u given", file, g->n_inputs,
                    g->n_outputs, n_in, n_out);
        return KN_ERR_INVALID;
    }
    KN_TRY(kn_cuda_exec_stage(s, inputs, n_in, kv, d));
    kn_status st = enqueue(s, d);
    st = kn_cuda_exec_sync(s, st, file, d);
    if (st != KN_OK)
        return st;
    if (s->opts.timing)
        kn_cuda_exec_read_timing(s, false);
    return collect_outputs(s, outputs, d);
}

kn_status kn_cuda_session_run(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                              kn_rt_tensor **outputs, uint32_t n_out, kn_diag *d)
{
    return run(s, inputs, n_in, outputs, n_out, NULL, d);
}

kn_status kn_cuda_session_run_kv(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                 kn_rt_tensor **outputs, uint32_t n_out, const kn_cuda_kv_binding *kv,
                                 kn_diag *d)
{
    if (!kv) {
        kn_diag_add(d, KN_ERROR, "%s: kn_cuda_session_run_kv: no KV binding", s->plan.name);
        return KN_ERR_INVALID;
    }
    return run(s, inputs, n_in, outputs, n_out, kv, d);
}

kn_status kn_cuda_session_timing(const kn_cuda_session *s, kn_cuda_timing *out)
{
    memset(out, 0, sizeof *out);
    if (!s || !s->has_timing)
        return KN_ERR_INVALID;
    *out = s->timing;
    return KN_OK;
}

kn_status kn_cuda_session_step_ms(const kn_cuda_session *s, const float **ms, const uint32_t **node,
                                  uint32_t *n_steps)
{
    *ms = NULL;
    *node = NULL;
    *n_steps = 0;
    if (!s || !s->has_timing || !s->step_ev)
        return KN_ERR_INVALID;
    *ms = s->step_ms;
    *node = s->step_node;
    *n_steps = s->plan.n_steps;
    return KN_OK;
}

#endif /* KN_HAVE_CUDA_HEADERS */
