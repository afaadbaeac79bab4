/* Fuzz target: bytes → kn_plan_load_memory → a CPU run with small inputs
 * made up from the declared input types (symbolic dims = 1).
 *
 * A plan carries a checksum over the whole file, so almost every mutation
 * would stop at "checksum mismatch". The harness therefore writes the
 * right file size and checksum into the header before loading (unless the
 * input is shorter than a header), so the fuzzer reaches the tables. */
#include "fuzz_common.h"

#include "fuzz_cpu.h"

#include "kiln/runtime.h"
#include "runtime/plan_format.h"

#include <stddef.h>

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
        fuzz_cpu_run(g, seed | 1);
        kn_graph_destroy(g);
    } else if (d && (g || kn_diag_count(d, KN_ERROR) == 0)) {
        FUZZ_BUG(d, "plan load failed (%s) without a message or left a graph", kn_status_str(s));
    }
    kn_diag_destroy(d);
    free(buf);
    return 0;
}
