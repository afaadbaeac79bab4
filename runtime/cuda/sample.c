/* Runs that sample the next token on the device (kn_cuda_session_run_kv_sample,
 * _rows): the plan's steps, then the sampling kernel the plan carries
 * (kn_sample_argmax or kn_sample, found by entry name) on one row of the
 * logits, or on the first `rows` rows (one block each: a batched decode
 * step, or every token of a prefill chunk, the caller keeping the row it
 * wants), then a download of the ids (4 bytes each). Such a run is captured once as
 * a CUDA graph and replayed with one cuGraphLaunch: everything it reads
 * from the host (the inputs, the KV table and past lengths, the draw) is
 * uploaded inside the graph from the session's fixed pinned staging
 * buffers, so a replay needs no host work but filling them. */
#include "ir/arena.h"
#include "kiln/cuda.h"

#include <stdio.h>
#include <string.h>

#ifndef KN_HAVE_CUDA_HEADERS

bool kn_cuda_session_can_sample(const kn_cuda_session *s)
{
    (void)s;
    return false;
}

kn_status kn_cuda_session_run_kv_sample(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                        const kn_cuda_kv_binding *kv, const kn_cuda_sample *smp, int32_t *token,
                                        kn_diag *d)
{
    (void)s, (void)inputs, (void)n_in, (void)kv, (void)smp, (void)token;
    kn_diag_add(d, KN_ERROR, "this build of kiln has no CUDA support");
    return KN_ERR_UNSUPPORTED;
}

kn_status kn_cuda_session_run_kv_sample_rows(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                             const kn_cuda_kv_binding *kv, const kn_cuda_sample *smp,
                                             const double *u, uint32_t rows, int32_t *tokens, kn_diag *d)
{
    (void)s, (void)inputs, (void)n_in, (void)kv, (void)smp, (void)u, (void)rows, (void)tokens;
    kn_diag_add(d, KN_ERROR, "this build of kiln has no CUDA support");
    return KN_ERR_UNSUPPORTED;
}

bool kn_cuda_session_graph_stats(const kn_cuda_session *s, uint64_t *captures, uint64_t *launches)
{
    (void)s;
    *captures = *launches = 0;
    return false;
}

#else

#include "runtime/cuda/exec_impl.h"

#define SMP_ARGMAX "kn_sample_argmax"
#define SMP_SAMPLE "kn_sample"
#define SMP_THREADS 256u /* KN_SAMPLE_THREADS */

#define CU_TRY(call, expr, ...)                               \
    do {                                                      \
        CUresult cu_r_ = (expr);                              \
        if (cu_r_ != CUDA_SUCCESS)                            \
            return kn_cuda_fail(d, cu_r_, call, __VA_ARGS__); \
    } while (0)

/* A sampling kernel's parameters as the driver reports them (12.4+):
 * pointers, then the 40-byte parameter struct. */
static kn_status check_sample_params(kn_cuda_session *s, uint32_t k, uint32_t n_ptr, kn_diag *d)
{
    if (!s->cu->func_get_param_info)
        return KN_OK;
    uint32_t i = 0;
    for (;; i++) {
        size_t off = 0, size = 0;
        if (s->cu->func_get_param_info(s->funcs[k], i, &off, &size) != CUDA_SUCCESS)
            break;
        size_t want = i < n_ptr ? sizeof(CUdeviceptr) : sizeof(kn_cuda_sample_params);
        if (i > n_ptr || size != want) {
            kn_diag_add(d, KN_ERROR, "%s: sampling kernel '%s': parameter %u is %zu bytes, not %zu", s->plan.name,
                        s->plan.entries[k], i, size, want);
            return KN_ERR_INVALID;
        }
    }
    if (i != 0 && i != n_ptr + 1) {
        kn_diag_add(d, KN_ERROR, "%s: sampling kernel '%s' takes %u parameters, not %u", s->plan.name,
                    s->plan.entries[k], i, n_ptr + 1);
        return KN_ERR_INVALID;
    }
    return KN_OK;
}

kn_status kn_cuda_sample_setup(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_plan *p = &s->plan;
    s->smp_kernel[0] = s->smp_kernel[1] = KN_PLAN_NONE;
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        if (strcmp(p->entries[k], SMP_ARGMAX) == 0)
            s->smp_kernel[0] = k;
        else if (strcmp(p->entries[k], SMP_SAMPLE) == 0)
            s->smp_kernel[1] = k;
    }
    if (s->smp_kernel[0] == KN_PLAN_NONE || s->smp_kernel[1] == KN_PLAN_NONE) {
        s->smp_kernel[0] = s->smp_kernel[1] = KN_PLAN_NONE;
        return KN_OK;
    }
    KN_TRY(check_sample_params(s, s->smp_kernel[0], 2, d));
    KN_TRY(check_sample_params(s, s->smp_kernel[1], 3, d));
    /* every row of logits a run makes: B of a batched decode step, P of a
     * prefill chunk (whose graph samples them all: session_cuda.c) */
    uint64_t rows = (uint64_t)(p->kv_rows ? p->kv_rows : 1) * (p->kv_tokens ? p->kv_tokens : 1);
    if (rows > 65536) {
        kn_diag_add(d, KN_ERROR, "%s: %llu rows of logits per run: more than the sampling buffers take (65536)",
                    p->name, (unsigned long long)rows);
        return KN_ERR_INVALID;
    }
    s->smp_rows = (uint32_t)rows;
    size_t bytes = 16 * (size_t)s->smp_rows; /* draws (8 each), then ids (4 each), rounded up */
    CU_TRY("cuMemAlloc", s->cu->mem_alloc(&s->smp_dev, bytes), "%s: the sampling buffers", p->name);
    CU_TRY("cuMemHostAlloc", s->cu->mem_host_alloc((void **)&s->smp_pin, bytes, 0), "%s: the sampling buffers",
           p->name);
    memset(s->smp_pin, 0, bytes); /* and the device's copy, so that no run reads garbage */
    CU_TRY("cuMemcpyHtoDAsync", s->cu->memcpy_htod_async(s->smp_dev, s->smp_pin, bytes, s->stream),
           "%s: the sampling buffers", p->name);
    bool host = false;
    for (uint32_t i = 0; i < p->n_steps; i++)
        host = host || p->steps[i].kind == KN_CU_STEP_HOST;
    bool have = s->cu->graph_launch != NULL;
    s->graphs = !s->opts.no_graph && have && !host && !s->opts.profile_steps && !s->opts.sync_each_step;
    if (!s->opts.no_graph && !have)
        kn_diag_add(d, KN_NOTE, "%s: the NVIDIA driver has no CUDA graphs (cuStreamBeginCapture ...): each decode "
                                "step launches its kernels one by one",
                    p->name);
    return KN_OK;
}

static void drop_graph(kn_cuda_session *s)
{
    if (s->graph_exec)
        s->cu->graph_exec_destroy(s->graph_exec);
    if (s->graph)
        s->cu->graph_destroy(s->graph);
    s->graph_exec = NULL;
    s->graph = NULL;
}

void kn_cuda_sample_release(kn_cuda_session *s)
{
    if (s->cu->graph_launch)
        drop_graph(s);
    if (s->smp_dev)
        s->cu->mem_free(s->smp_dev);
    if (s->smp_pin)
        s->cu->mem_free_host(s->smp_pin);
    s->smp_dev = 0;
    s->smp_pin = NULL;
}

bool kn_cuda_session_can_sample(const kn_cuda_session *s) { return s && s->smp_dev; }

bool kn_cuda_session_graph_stats(const kn_cuda_session *s, uint64_t *captures, uint64_t *launches)
{
    *captures = s ? s->n_captures : 0;
    *launches = s ? s->n_graph_launches : 0;
    return s && s->graphs;
}

/* The launch of one run: uploads, (the draw), steps, (sampling, the
 * 4-byte download). Enqueued directly, or under capture (timed false:
 * the events are recorded around the graph's launch instead). */
static kn_status enqueue_sampled(kn_cuda_session *s, bool sample, bool timed, kn_diag *d)
{
    const kn_cuda_driver *cu = s->cu;
    const char *file = s->plan.name;
    kn_cuda_sample_args *a = &s->smp;
    uint32_t rows = (uint32_t)a->p.rows;
    if (timed)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[0], s->stream), "%s", file);
    KN_TRY(kn_cuda_exec_uploads(s, d));
    if (sample && a->kernel == 1)
        CU_TRY("cuMemcpyHtoDAsync", cu->memcpy_htod_async(a->u, s->smp_pin, rows * sizeof(double), s->stream),
               "%s: the sampling draw", file);
    if (timed)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[1], s->stream), "%s", file);
    KN_TRY(kn_cuda_exec_steps(s, d));
    if (sample) {
        void *args[4], **ap = args;
        *ap++ = &a->logits;
        if (a->kernel == 1)
            *ap++ = &a->u;
        *ap++ = &a->token;
        *ap++ = &a->p;
        uint32_t k = s->smp_kernel[a->kernel];
        CU_TRY("cuLaunchKernel",
               cu->launch_kernel(s->funcs[k], rows, 1, 1, SMP_THREADS, 1, 1, 0, s->stream, args, NULL),
               "%s: sampling kernel '%s'", file, s->plan.entries[k]);
    }
    if (timed)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[2], s->stream), "%s", file);
    if (sample)
        CU_TRY("cuMemcpyDtoHAsync",
               cu->memcpy_dtoh_async(s->smp_pin + 8 * (size_t)s->smp_rows, a->token, rows * sizeof(int32_t),
                                     s->stream),
               "%s: the sampled token", file);
    if (timed)
        CU_TRY("cuEventRecord", cu->event_record(s->ev[3], s->stream), "%s", file);
    return KN_OK;
}

/* Captures a sampled run into s->graph / s->graph_exec (s->smp as it is
 * now). A capture or instantiation the driver refuses turns graphs off
 * with a note (the run goes on step by step); an error of an enqueued call
 * is returned. */
static kn_status capture(kn_cuda_session *s, kn_diag *d)
{
    const kn_cuda_driver *cu = s->cu;
    const char *file = s->plan.name;
    drop_graph(s);
    CUresult r = cu->stream_begin_capture(s->stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
    const char *call = "cuStreamBeginCapture";
    if (r == CUDA_SUCCESS) {
        kn_status st = enqueue_sampled(s, true, false, d);
        CUgraph g = NULL;
        r = cu->stream_end_capture(s->stream, &g);
        call = "cuStreamEndCapture";
        if (st != KN_OK) {
            if (g)
                cu->graph_destroy(g);
            return st;
        }
        if (r == CUDA_SUCCESS) {
            s->graph = g;
            r = cu->graph_instantiate(&s->graph_exec, g, 0);
            call = "cuGraphInstantiate";
        }
    }
    if (r != CUDA_SUCCESS) {
        const char *name = NULL;
        if (cu->get_error_name(r, &name) != CUDA_SUCCESS)
            name = NULL;
        kn_diag_add(d, KN_NOTE, "%s: %s: %s: the decode step runs without a CUDA graph", file, call,
                    name ? name : "CUDA error");
        s->graph_exec = NULL;
        drop_graph(s);
        s->graphs = false;
        return KN_OK;
    }
    s->graph_key = s->smp;
    s->n_captures++;
    return KN_OK;
}

/* The sampling launch for `smp`: its kernel, logits rows (smp->row, or
 * 0 ... rows - 1 when rows > 1, with draws u[r]) and parameters. */
static kn_status sample_args(kn_cuda_session *s, const kn_cuda_sample *smp, const double *u, uint32_t rows,
                             kn_diag *d)
{
    const kn_cuda_plan *p = &s->plan;
    if (smp->output >= s->g->n_outputs) {
        kn_diag_add(d, KN_ERROR, "%s: sampling: output %u of %u", p->name, smp->output, s->g->n_outputs);
        return KN_ERR_INVALID;
    }
    const kn_plan_cu_slot *sl = &p->slots[p->output_slot[smp->output]];
    uint64_t es = sl->dtype == KN_F32 ? 4 : sl->dtype == KN_F16 || sl->dtype == KN_BF16 ? 2 : 0;
    int64_t vocab = sl->rank > 0 ? sl->dims[sl->rank - 1] : 0;
    uint32_t first = rows > 1 ? 0 : smp->row, last = rows > 1 ? rows - 1 : smp->row;
    if (!es || vocab <= 0 || vocab > INT32_MAX || (uint64_t)last >= sl->nbytes / ((uint64_t)vocab * es)) {
        kn_diag_add(d, KN_ERROR, "%s: sampling: output '%s' has no row %u of float logits", p->name,
                    s->g->values[s->g->outputs[smp->output]].name, last);
        return KN_ERR_INVALID;
    }
    if (rows > s->smp_rows) {
        kn_diag_add(d, KN_ERROR, "%s: sampling: %u rows at once, the plan's runs hold %u", p->name, rows,
                    s->smp_rows);
        return KN_ERR_INVALID;
    }
    kn_cuda_sample_args *a = &s->smp;
    memset(a, 0, sizeof *a);
    a->kernel = smp->temperature <= 0.0f || smp->top_k == 1 ? 0 : 1;
    a->logits = s->slot_ptr[p->output_slot[smp->output]] + (uint64_t)first * (uint64_t)vocab * es;
    a->u = s->smp_dev;
    a->token = s->smp_dev + 8 * (uint64_t)s->smp_rows;
    a->p = (kn_cuda_sample_params){rows, vocab, vocab, smp->temperature, smp->top_p, smp->top_k, 0};
    for (uint32_t r = 0; r < rows; r++) {
        double x = u[r] >= 0.0 && u[r] < 1.0 ? u[r] : 0.0;
        memcpy(s->smp_pin + 8 * (size_t)r, &x, sizeof x);
    }
    return KN_OK;
}

kn_status kn_cuda_session_run_kv_sample(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                        const kn_cuda_kv_binding *kv, const kn_cuda_sample *smp, int32_t *token,
                                        kn_diag *d)
{
    double u = smp ? smp->u : 0.0;
    return kn_cuda_session_run_kv_sample_rows(s, inputs, n_in, kv, smp, &u, 1, token, d);
}

kn_status kn_cuda_session_run_kv_sample_rows(kn_cuda_session *s, const kn_rt_tensor *const *inputs, uint32_t n_in,
                                             const kn_cuda_kv_binding *kv, const kn_cuda_sample *smp,
                                             const double *u, uint32_t rows, int32_t *token, kn_diag *d)
{
    for (uint32_t r = 0; token && r < (rows ? rows : 1); r++)
        token[r] = -1;
    if (smp && rows == 0) {
        kn_diag_add(d, KN_ERROR, "%s: sampling: no rows", s->plan.name);
        return KN_ERR_INVALID;
    }
    if (!s->smp_dev) {
        kn_diag_add(d, KN_ERROR, "%s: the plan carries no sampling kernels (rebuild it with kiln compile --target cuda)",
                    s->plan.name);
        return KN_ERR_UNSUPPORTED;
    }
    if (smp && !token) {
        kn_diag_add(d, KN_ERROR, "%s: kn_cuda_session_run_kv_sample: no token to write", s->plan.name);
        return KN_ERR_INVALID;
    }
    s->has_timing = false;
    KN_TRY(kn_cuda_exec_stage(s, inputs, n_in, kv, d));
    if (smp)
        KN_TRY(sample_args(s, smp, u, rows, d));
    const char *file = s->plan.name;
    const kn_cuda_driver *cu = s->cu;
    kn_status st = KN_OK;
    bool graphed = false;
    if (smp && s->graphs) {
        if (!s->graph_exec || memcmp(&s->graph_key, &s->smp, sizeof s->smp) != 0)
            st = capture(s, d);
        graphed = st == KN_OK && s->graph_exec;
        if (graphed) {
            if (s->opts.timing)
                CU_TRY("cuEventRecord", cu->event_record(s->ev[0], s->stream), "%s", file);
            CUresult r = cu->graph_launch(s->graph_exec, s->stream);
            if (r != CUDA_SUCCESS)
                st = kn_cuda_fail(d, r, "cuGraphLaunch", "%s: the decode step", file);
            else
                s->n_graph_launches++;
            if (st == KN_OK && s->opts.timing)
                CU_TRY("cuEventRecord", cu->event_record(s->ev[3], s->stream), "%s", file);
        }
    }
    if (st == KN_OK && !graphed)
        st = enqueue_sampled(s, smp != NULL, s->opts.timing, d);
    st = kn_cuda_exec_sync(s, st, file, d);
    if (st != KN_OK)
        return st;
    if (s->opts.timing)
        kn_cuda_exec_read_timing(s, graphed);
    if (smp)
        memcpy(token, s->smp_pin + 8 * (size_t)s->smp_rows, rows * sizeof *token);
    return KN_OK;
}

#endif /* KN_HAVE_CUDA_HEADERS */
