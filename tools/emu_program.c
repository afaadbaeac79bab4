/* Runs a lowered target-cuda program (kn_cu_program) on the host: kernel
 * launches through the host emulator (emu_host.h), GEMM steps on a host
 * GEMM with the kn_plan_cu_gemm contract, host steps on the CPU reference
 * backend, copies with memmove; KV cache arguments point into the caller's
 * host pools. Shared by kiln-cuda-emu and the tests. */
#include "emu_program.h"
#include "emu_host.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- host GEMM (the kn_plan_cu_gemm contract) ---- */

/* cuBLASLt's GELU epilogue is the tanh approximation */
static double gelu(double x) { return 0.5 * x * (1.0 + tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x))); }

/* The int8 descriptor (dtype KN_I8): int8 A and B, exact integer sums
 * stored as int32 (plan checks keep k small enough for int32). */
static void host_gemm_i8(const kn_plan_cu_gemm *g, const int8_t *A, const int8_t *B, int32_t *D)
{
    for (int64_t b = 0; b < g->batch; b++)
        for (int64_t i = 0; i < g->m; i++)
            for (int64_t j = 0; j < g->n; j++) {
                int64_t acc = 0;
                for (int64_t p = 0; p < g->k; p++) {
                    int64_t ia = b * g->stride_a + (g->trans_a ? p * g->lda + i : i * g->lda + p);
                    int64_t ib = b * g->stride_b + (g->trans_b ? j * g->ldb + p : p * g->ldb + j);
                    acc += (int64_t)A[ia] * B[ib];
                }
                D[b * g->stride_d + i * g->ldd + j] = (int32_t)acc; /* alpha is 1 */
            }
}

static void host_gemm(const kn_plan_cu_gemm *g, const void *A, const void *B, const void *C, void *D, const void *bias)
{
    kn_dtype t = (kn_dtype)g->dtype;
    if (t == KN_I8) {
        host_gemm_i8(g, A, B, D);
        return;
    }
    for (int64_t b = 0; b < g->batch; b++)
        for (int64_t i = 0; i < g->m; i++)
            for (int64_t j = 0; j < g->n; j++) {
                double acc = 0;
                for (int64_t p = 0; p < g->k; p++) {
                    int64_t ia = b * g->stride_a + (g->trans_a ? p * g->lda + i : i * g->lda + p);
                    int64_t ib = b * g->stride_b + (g->trans_b ? j * g->ldb + p : p * g->ldb + j);
                    acc += kn_get_f64(t, A, ia) * kn_get_f64(t, B, ib);
                }
                double v = g->alpha * acc;
                if (bias) { /* 5 args: C matrix scaled by beta, then the bias row */
                    if (g->beta != 0)
                        v += g->beta * kn_get_f64(t, C, b * g->stride_c + i * g->ldc + j);
                    v += kn_get_f64(t, bias, j);
                } else if (g->has_c && g->beta != 0) {
                    int64_t ic = g->epilogue >= 3 ? b * g->stride_c + j : b * g->stride_c + i * g->ldc + j;
                    v += g->beta * kn_get_f64(t, C, ic);
                }
                if ((g->epilogue == 1 || g->epilogue == 4) && v < 0)
                    v = 0;
                if (g->epilogue == 2 || g->epilogue == 5)
                    v = gelu(v);
                kn_set_f64(t, D, b * g->stride_d + i * g->ldd + j, v);
            }
}


static void *slot_ptr(const kn_graph *g, const kn_cu_program *p, uint8_t *pool, uint32_t s)
{
    const kn_cu_slot *sl = &p->slots[s];
    if (sl->place == KN_CU_WEIGHT)
        return sl->index < g->n_values && g->values[sl->index].tensor
                   ? (void *)((uint8_t *)g->values[sl->index].tensor->data + sl->offset)
                   : NULL;
    return pool + sl->offset;
}

static void *kv_ptr(const kn_emu_kv *kv, const kn_cu_arg *a)
{
    if (!kv)
        return NULL;
    switch (a->slot) {
    case KN_CU_KV_KEYS: return kv->keys ? (uint8_t *)kv->keys + a->offset * kv->layer_bytes : NULL;
    case KN_CU_KV_VALUES: return kv->values ? (uint8_t *)kv->values + a->offset * kv->layer_bytes : NULL;
    case KN_CU_KV_TABLE: return (void *)kv->table;
    case KN_CU_KV_PAST: return (void *)kv->past;
    default: return NULL;
    }
}

kn_status kn_emu_run_program(const kn_graph *g, const kn_cu_program *p, kn_rt_tensor *const *ins, kn_rt_tensor **outs,
                             const kn_emu_kv *kv, char *msg, size_t msg_size)
{
    uint8_t *pool = calloc(p->pool_bytes ? p->pool_bytes : 1, 1);
    kn_emu_launch_fn *fns = calloc(p->n_kernels + 1, sizeof *fns);
    if (!pool || !fns) {
        free(pool);
        free(fns);
        return KN_ERR_NOMEM;
    }
    kn_status s = KN_OK;
    for (uint32_t i = 0; i < p->n_slots; i++)
        if (p->slots[i].place == KN_CU_INPUT && ins[p->slots[i].index]) {
            if (ins[p->slots[i].index]->nbytes != p->slots[i].nbytes) {
                snprintf(msg, msg_size, "input %u has %zu bytes, the plan was built for %llu", p->slots[i].index,
                         ins[p->slots[i].index]->nbytes, (unsigned long long)p->slots[i].nbytes);
                s = KN_ERR_INVALID;
                break;
            }
            memcpy(pool + p->slots[i].offset, ins[p->slots[i].index]->data, p->slots[i].nbytes);
        }
    for (uint32_t si = 0; s == KN_OK && si < p->n_steps; si++) {
        const kn_cu_step *st = &p->steps[si];
        const kn_cu_arg *args = &p->args[st->first_arg];
        const kn_node *node = st->node < g->n_nodes ? &g->nodes[st->node] : NULL;
        if (st->kind == KN_CU_STEP_LAUNCH) {
            if (!fns[st->kernel]) {
                char err[2048];
                fns[st->kernel] = kn_emu_build(p->kernels[st->kernel].source, p->kernels[st->kernel].entry,
                                               p->kernels[st->kernel].hash, err, sizeof err);
                if (!fns[st->kernel]) {
                    snprintf(msg, msg_size, "node '%s' (%s): host build of kernel '%s' failed: %.600s",
                             node ? node->name : "?", node ? node->op_type : "?", p->kernels[st->kernel].entry, err);
                    s = KN_ERR_INTERNAL;
                    break;
                }
            }
            void *ptrs[64];
            void *argv[64];
            if (st->n_args > 64) {
                s = KN_ERR_INTERNAL;
                break;
            }
            for (uint32_t a = 0; a < st->n_args; a++) {
                if (args[a].kind == KN_CU_ARG_SLOT) {
                    ptrs[a] = (uint8_t *)slot_ptr(g, p, pool, args[a].slot) + args[a].offset;
                    argv[a] = &ptrs[a];
                } else if (args[a].kind == KN_CU_ARG_KV) {
                    ptrs[a] = kv_ptr(kv, &args[a]);
                    argv[a] = &ptrs[a];
                    if (!ptrs[a]) {
                        snprintf(msg, msg_size, "node '%s' (%s): reads the KV cache, and the run has none",
                                 node ? node->name : "?", node ? node->op_type : "?");
                        s = KN_ERR_INVALID;
                    }
                } else {
                    argv[a] = p->params + args[a].offset;
                }
            }
            if (s != KN_OK)
                break;
            fns[st->kernel](st->grid, st->block, argv);
        } else if (st->kind == KN_CU_STEP_GEMM) {
            kn_plan_cu_gemm gd;
            memcpy(&gd, p->params + st->gemm, sizeof gd);
            void *ptr[5] = {0};
            for (uint32_t a = 0; a < st->n_args && a < 5; a++)
                ptr[a] = (uint8_t *)slot_ptr(g, p, pool, args[a].slot) + args[a].offset;
            host_gemm(&gd, ptr[0], ptr[1], ptr[2], ptr[3], ptr[4]);
        } else if (st->kind == KN_CU_STEP_HOST) {
            /* the values the node reads, as views of their slots; the node on the CPU; outputs back */
            uint32_t n_in = 0;
            kn_id ids[256];
            kn_rt_tensor *views[256];
            kn_rt_tensor *houts[64] = {0};
            for (uint32_t a = 0; a < st->n_args && s == KN_OK; a++) {
                if (args[a].kind != KN_CU_ARG_HOST_IN || n_in >= 256)
                    continue;
                const kn_cu_slot *sl = &p->slots[args[a].slot];
                s = kn_rt_tensor_view(NULL, sl->dtype, sl->rank, sl->dims, slot_ptr(g, p, pool, args[a].slot),
                                      &views[n_in]);
                ids[n_in++] = (kn_id)args[a].size;
            }
            kn_diag *hd = kn_diag_create(NULL, NULL);
            if (s == KN_OK && node && node->n_outputs <= 64)
                s = kn_cpu_run_node(g, st->node, ids, (const kn_rt_tensor *const *)views, n_in, houts, NULL, hd);
            if (s != KN_OK)
                snprintf(msg, msg_size, "host step: %s", kn_diag_size(hd) ? kn_diag_message(hd, 0, NULL) : "failed");
            for (uint32_t a = 0; a < st->n_args && s == KN_OK; a++) {
                if (args[a].kind != KN_CU_ARG_HOST_OUT)
                    continue;
                const kn_cu_slot *sl = &p->slots[args[a].slot];
                kn_rt_tensor *t = NULL;
                for (uint32_t o = 0; node && o < node->n_outputs; o++)
                    if (node->outputs[o] == (kn_id)args[a].size)
                        t = houts[o];
                if (!t || t->nbytes != sl->nbytes) {
                    snprintf(msg, msg_size, "node '%s' (%s): host step output has %zu bytes, the plan planned %llu",
                             node ? node->name : "?", node ? node->op_type : "?", t ? t->nbytes : 0,
                             (unsigned long long)sl->nbytes);
                    s = KN_ERR_INVALID;
                    break;
                }
                memcpy(slot_ptr(g, p, pool, args[a].slot), t->data, t->nbytes);
            }
            for (uint32_t i = 0; i < n_in; i++)
                kn_rt_tensor_free(NULL, views[i]);
            for (uint32_t o = 0; node && o < node->n_outputs && o < 64; o++)
                kn_rt_tensor_free(NULL, houts[o]);
            kn_diag_destroy(hd);
        } else if (st->kind == KN_CU_STEP_COPY) {
            void *dst = (uint8_t *)slot_ptr(g, p, pool, args[0].slot) + args[0].offset;
            void *src = (uint8_t *)slot_ptr(g, p, pool, args[1].slot) + args[1].offset;
            memmove(dst, src, st->gemm);
        }
    }
    for (uint32_t i = 0; s == KN_OK && i < p->n_outputs; i++) {
        const kn_cu_slot *sl = &p->slots[p->outputs[i]];
        s = kn_rt_tensor_new(NULL, sl->dtype, sl->rank, sl->dims, &outs[i]);
        if (s == KN_OK && sl->nbytes)
            memcpy(outs[i]->data, slot_ptr(g, p, pool, p->outputs[i]), sl->nbytes);
    }
    free(pool);
    free(fns);
    return s;
}
