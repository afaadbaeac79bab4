/* Fuzz target: bytes → ONNX import → the pass pipeline → a run on the CPU
 * reference backend with small made-up inputs (fuzz_cpu.h). Mutating
 * models rather than plans reaches the kernels with the attributes, shapes
 * and constants a hostile model can hold. Seeds: corpus/import. */
#include "fuzz_cpu.h"

#include "passes/passes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!d)
        return 0;
    kn_graph *g = NULL;
    kn_import_options o = {0};
    o.max_nodes = 10000; /* a large graph is slow, not a finding */
    kn_status s = kn_import_onnx_memory(data, size, NULL, "fuzz.onnx", &o, NULL, d, &g);
    if (s == KN_OK) {
        kn_pipeline_opts po = {true};
        s = kn_pipeline_run(g, &po, d);
        if (s == KN_ERR_INTERNAL)
            FUZZ_BUG(d, "the pipeline reported an internal error");
        uint64_t seed = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < size; i++)
            seed = (seed ^ data[i]) * 1099511628211ull;
        if (s == KN_OK)
            fuzz_cpu_run(g, seed | 1);
    }
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    return 0;
}
