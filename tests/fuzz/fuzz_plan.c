/* Fuzz target: bytes → kn_plan_load_memory → a CPU run with small inputs
 * made up from the declared input types (symbolic dims = 1).
 *
 * A plan carries a checksum over the whole file, so almost every mutation
 * would stop at "checksum mismatch". The harness therefore writes the
 * right file size and checksum into the header before loading (unless the
 * input is shorter than a header), so the fuzzer reaches the tables. */
#include "fuzz_common.h"

#include "ir/ir.h"
#include "kiln/runtime.h"
#include "runtime/cpu/exec.h"
#include "runtime/plan_format.h"

#include <stddef.h>

#define MAX_INPUT_ELEMS 100000
#define RUN_MEMORY_LIMIT ((size_t)256 << 20) /* bytes the run may hold at once */

static uint64_t rng(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

/* Makes input tensors for g from its declared types; false (nothing made)
 * when an input is not a tensor of known dtype or would be too large. */
static bool make_inputs(const kn_graph *g, const kn_allocator *a, uint64_t seed, kn_rt_tensor **in)
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

static void run(const kn_graph *g, uint64_t seed)
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = aligned_alloc(KN_PLAN_WEIGHTS_PAGE, (size + KN_PLAN_WEIGHTS_PAGE) & ~(size_t)(KN_PLAN_WEIGHTS_PAGE - 1));
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < size; i++)
        seed = (seed ^ data[i]) * 1099511628211ull;
    if (size >= KN_PLAN_HEADER_SIZE) {
        uint64_t fs = size;
        memcpy(buf + offsetof(kn_plan_header, file_size), &fs, 8);
        static const uint8_t z8[8];
        uint64_t c = kn_plan_checksum_update(KN_PLAN_CHECKSUM_SEED, buf, 24);
        c = kn_plan_checksum_update(c, z8, 8);
        c = kn_plan_checksum_update(c, buf + 32, size - 32);
        memcpy(buf + offsetof(kn_plan_header, checksum), &c, 8);
    }
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    kn_status s = d ? kn_plan_load_memory(buf, size, "fuzz.plan", NULL, d, &g) : KN_ERR_NOMEM;
    if (s == KN_OK) {
        run(g, seed | 1);
        kn_graph_destroy(g);
    } else if (d && (g || kn_diag_count(d, KN_ERROR) == 0)) {
        FUZZ_BUG(d, "plan load failed (%s) without a message or left a graph", kn_status_str(s));
    }
    kn_diag_destroy(d);
    free(buf);
    return 0;
}
