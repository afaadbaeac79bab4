/* kiln compile's library side: the pass pipeline and the target check
 * (shared with kiln-conformance and kiln-cuda-emu), CUDA code generation.
 * The command itself is in compile_cmd.c. */
#include "cli.h"
#include "codegen/cuda/lower.h"
#include "codegen/cuda/sample_kernels.h"
#include "ir/stats.h"
#include "passes/passes.h"
#include "runtime/cpu/kernel.h"

#include <stdio.h>
#include <string.h>

static bool cpu_runs(kn_op op) { return kn_cpu_kernel(op) != NULL; }

static kn_status compile_graph(kn_graph *g, const char *target, const kn_pipeline_opts *po, bool keep_kv, kn_diag *d)
{
    if (strcmp(target, "cpu") != 0 && strcmp(target, "cuda") != 0) {
        kn_diag_add(d, KN_ERROR, "unknown target '%s' (cpu or cuda)", target);
        return KN_ERR_INVALID;
    }
    KN_TRY(kn_graph_verify(g, d));
    kn_pipeline_opts def = {0};
    def.verify_each = true;
    if (!po)
        po = &def;
    if (strcmp(target, "cuda") == 0 && !keep_kv) {
        /* the CUDA session runs decoders only as prefill + decode programs of
         * a causal graph (compile_decoder.c); elsewhere: keep past/present */
        const char *dis[65];
        kn_pipeline_opts o = *po;
        if (o.n_disabled >= 64) {
            kn_diag_add(d, KN_ERROR, "too many --disable-pass options (64 at most)");
            return KN_ERR_LIMIT;
        }
        for (uint32_t i = 0; i < o.n_disabled; i++)
            dis[i] = o.disabled[i];
        dis[o.n_disabled++] = "kv-cache";
        o.disabled = dis;
        KN_TRY(kn_pipeline_run(g, &o, d));
    } else {
        KN_TRY(kn_pipeline_run(g, po, d));
    }
    /* the CPU backend runs every plan (target cuda probes shapes with it) */
    return kn_graph_report_unsupported(g, cpu_runs, "cpu", d);
}

kn_status kn_compile_graph(kn_graph *g, const char *target, const kn_pipeline_opts *po, kn_diag *d)
{
    return compile_graph(g, target, po, false, d);
}

kn_status kn_compile_graph_kv(kn_graph *g, const kn_pipeline_opts *po, kn_diag *d)
{
    return compile_graph(g, "cuda", po, true, d);
}

static const uint32_t default_archs[] = {80, 86, 89, 90};

/* --attn-kernel simple|tc: marks attention nodes `_attn_kernel` 0 or 2 for
 * the emitters (codegen/cuda/e_fused_attn.c). */
kn_status kn_compile_mark_attention(kn_graph *g, int64_t mode)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        if (n->op != KN_OP_Attention && n->op != KN_OP_KILN_PagedAttention)
            continue;
        kn_attr *a = kn_graph_alloc(g, ((size_t)n->n_attrs + 1) * sizeof *a);
        if (!a)
            return KN_ERR_NOMEM;
        if (n->n_attrs)
            memcpy(a, n->attrs, n->n_attrs * sizeof *a);
        memset(&a[n->n_attrs], 0, sizeof *a);
        KN_TRY(kn_graph_intern_cstr(g, "_attn_kernel", &a[n->n_attrs].name));
        a[n->n_attrs].kind = KN_ATTR_INT;
        a[n->n_attrs].u.i = mode;
        n->attrs = a;
        n->n_attrs++;
    }
    return KN_OK;
}

kn_status kn_compile_cuda(kn_graph *g, const kn_compile_cuda_opts *o, kn_diag *d, kn_cu_program *prog)
{
    kn_cuda_lower_stats ls;
    if (o->attn_kernel)
        KN_TRY(kn_compile_mark_attention(g, o->attn_kernel == 1 ? 0 : 2));
    /* the plan's newest arch selects the GEMV table's rows for it */
    const uint32_t *archs = o->n_archs ? o->archs : default_archs;
    uint32_t n_archs = o->n_archs ? o->n_archs : 4, newest = 0;
    for (uint32_t i = 0; i < n_archs; i++)
        newest = archs[i] > newest ? archs[i] : newest;
    kn_cuda_lower_opts lo = {o->gemm_table, newest};
    KN_TRY(kn_cuda_lower_opt(g, o->shapes, o->n_shapes, NULL, &lo, d, prog, &ls));
    if (o->sampling && prog->n_outputs) {
        uint32_t k = 0; /* the logits: the output so named, else the first */
        for (uint32_t i = 0; i < g->n_outputs && i < prog->n_outputs; i++)
            if (g->values[g->outputs[i]].name && strcmp(g->values[g->outputs[i]].name, "logits") == 0)
                k = i;
        kn_status s = kn_cu_program_add_sampling(prog, g, prog->slots[prog->outputs[k]].dtype, d);
        if (s != KN_OK) {
            kn_cu_program_free(prog);
            return s;
        }
    }
    kn_nvrtc_options no = {archs, n_archs, o->no_cache, NULL, 0};
    kn_nvrtc_stats ns;
    kn_status s = kn_cuda_compile(prog, &no, d, &ns);
    if (s != KN_OK) {
        kn_cu_program_free(prog);
        return s;
    }
    if (o->verbose)
        fprintf(stderr,
                "note: target cuda: %u nodes folded at compile time, %u steps (%u on the host), %u kernels x %u images "
                "(%u compiled, %u from the cache), %u matrix products on the dense GEMV; pool %llu bytes "
                "(naive %llu)\n",
                ls.nodes_folded, ls.steps, ls.nodes_host, ls.kernels, no.n_archs + 1, ns.compiled, ns.cached, ls.gemv,
                (unsigned long long)prog->pool_bytes, (unsigned long long)prog->naive_bytes);
    return KN_OK;
}

