/* The optimizer's table of contents: every pass, in the order it runs. */
#include "passes/passes.h"

static const kn_pass_info passes[] = {
    {"infer-shapes", kn_pass_infer_shapes, "infer dtypes and shapes, symbolic dims carried through"},
};

const kn_pass_info *kn_pipeline_passes(size_t *n)
{
    *n = sizeof passes / sizeof passes[0];
    return passes;
}

kn_status kn_pipeline_run(kn_graph *g, const kn_pipeline_opts *o, kn_diag *d)
{
    for (size_t i = 0; i < sizeof passes / sizeof passes[0]; i++) {
        KN_TRY(passes[i].run(g, d));
        kn_status vs = o && o->verify_each ? kn_graph_verify(g, d) : KN_OK;
        if (vs == KN_ERR_NOMEM)
            return vs; /* the verifier ran out of memory: not a broken graph */
        if (vs != KN_OK) {
            kn_diag_add(d, KN_ERROR, "internal error: the graph does not verify after pass '%s'", passes[i].name);
            return KN_ERR_INTERNAL;
        }
    }
    return KN_OK;
}
