/* Fuzz target: bytes → ONNX import → verify → the pass pipeline → plan
 * written to a file → plan loaded back. Imported without a folder, so
 * external data is refused. A graph that imports but does not verify, a
 * pipeline that reports an internal error and a written plan that does not
 * load are bugs (abort); anything else must be a clean status. */
#include "fuzz_common.h"

#include "codegen/plan_write.h"
#include "ir/ir.h"
#include "kiln/runtime.h"
#include "passes/passes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!d)
        return 0;
    kn_graph *g = NULL;
    kn_status s = kn_import_onnx_memory(data, size, NULL, "fuzz.onnx", NULL, NULL, d, &g);
    if (s != KN_OK) {
        if (g || kn_diag_count(d, KN_ERROR) == 0)
            FUZZ_BUG(d, "import failed (%s) without a message or left a graph", kn_status_str(s));
        kn_diag_destroy(d);
        return 0;
    }
    if (kn_graph_verify(g, d) != KN_OK)
        FUZZ_BUG(d, "an imported graph does not verify");
    kn_pipeline_opts po = {true};
    s = kn_pipeline_run(g, &po, d);
    if (s == KN_ERR_INTERNAL)
        FUZZ_BUG(d, "the pipeline reported an internal error");
    if (s == KN_OK) {
        char path[300];
        snprintf(path, sizeof path, "%s/x.plan", fuzz_dir());
        kn_plan_options o = {"--fuzz", "cpu"};
        s = kn_plan_write(g, &o, path, d);
        if (s != KN_OK && s != KN_ERR_NOMEM)
            FUZZ_BUG(d, "plan_write failed: %s", kn_status_str(s));
        if (s == KN_OK) {
            kn_graph *p = NULL;
            s = kn_plan_load(path, NULL, d, &p);
            if (s != KN_OK)
                FUZZ_BUG(d, "a plan kiln wrote does not load: %s", kn_status_str(s));
            kn_graph_destroy(p);
        }
    }
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    return 0;
}
