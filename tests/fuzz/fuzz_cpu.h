/* Runs a graph on the CPU reference backend with inputs made up from its
 * declared input types (symbolic and unknown dims = 1; nothing is run when
 * an input is not a tensor of known dtype or would pass MAX_INPUT_ELEMS).
 * The run's memory is capped at RUN_MEMORY_LIMIT: past it, kernels get
 * KN_ERR_NOMEM. A failure without a message, a missing output and memory
 * left allocated are bugs. */
#ifndef KILN_FUZZ_CPU_H
#define KILN_FUZZ_CPU_H

#include "fuzz_common.h"

#include "ir/ir.h"
#include "runtime/cpu/exec.h"

#define MAX_INPUT_ELEMS 100000
#define RUN_MEMORY_LIMIT ((size_t)256 << 20) /* bytes the run may hold at once */

static inline uint64_t rng(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Makes input tensors for g from its declared types; false (nothing made)
 * when an input is not a tensor of known dtype or would be too large. */
static inline bool make_inputs(const kn_graph *g, const kn_allocator *a, uint64_t seed, kn_rt_tensor **in)
{
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        if (v->type.kind != KN_TYPE_TENSOR || v->type.dtype == KN_UNDEFINED)
            return false;
        int32_t rank = v->type.shape.rank < 0 ? 1 : v->type.shape.rank;
        int64_t dims[64], n = 1;
        if (rank > 64)
            return false;
        for (int32_t k = 0; k < rank; k++) {
            int64_t dv = v->type.shape.rank < 0 ? 1 : v->type.shape.dims[k].value;
            dims[k] = dv < 0 ? 1 : dv;
            if (dims[k] > MAX_INPUT_ELEMS || (n *= dims[k]) > MAX_INPUT_ELEMS)
                return false;
        }
        if (kn_rt_tensor_new(a, v->type.dtype, rank, dims, &in[i]) != KN_OK)
            return false;
        if (v->type.dtype == KN_STRING)
            continue;
        uint8_t *p = in[i]->data;
        for (size_t k = 0; k < in[i]->nbytes; k++)
            p[k] = (uint8_t)rng(&seed);
        if (v->type.dtype == KN_F32) /* finite values in [-4, 4) */
            for (int64_t k = 0; k < in[i]->numel; k++)
                ((float *)p)[k] = (float)((int)(rng(&seed) % 8192) - 4096) / 1024.0f;
        if (v->type.dtype == KN_BOOL)
            for (size_t k = 0; k < in[i]->nbytes; k++)
                p[k] &= 1;
    }
    return true;
}

static inline void fuzz_cpu_run(const kn_graph *g, uint64_t seed)
{
    fuzz_cap cap;
    fuzz_cap_init(&cap, RUN_MEMORY_LIMIT);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_rt_tensor **in = calloc((size_t)g->n_inputs + 1, sizeof *in);
    kn_rt_tensor **out = calloc((size_t)g->n_outputs + 1, sizeof *out);
    if (d && in && out && make_inputs(g, &cap.a, seed, in)) {
        kn_status s = kn_cpu_run(g, &cap.a, d, (const kn_rt_tensor *const *)in, g->n_inputs, out, g->n_outputs);
        if (s == KN_OK) {
            for (uint32_t i = 0; i < g->n_outputs; i++)
                if (!out[i])
                    FUZZ_BUG(d, "output %u missing after a successful run", i);
        } else if (kn_diag_count(d, KN_ERROR) == 0) {
            FUZZ_BUG(d, "a run failed (%s) without a message", kn_status_str(s));
        }
    }
    for (uint32_t i = 0; in && i < g->n_inputs; i++)
        kn_rt_tensor_free(&cap.a, in[i]);
    for (uint32_t i = 0; out && i < g->n_outputs; i++)
        kn_rt_tensor_free(&cap.a, out[i]);
    if (cap.live != 0)
        FUZZ_BUG(d, "the run left %zu bytes allocated", cap.live);
    free(in);
    free(out);
    kn_diag_destroy(d);
}

#endif
