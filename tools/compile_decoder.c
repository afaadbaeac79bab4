/* kiln compile --target cuda on a decoder: the graph through the pipeline
 * with the kv-cache and kv-mask passes (kiln.PagedAttention, causal, no
 * mask; inputs input_ids and position_ids), lowered twice — a prefill
 * program for [1, P] new tokens and a decode program for [1, 1], and once
 * per batched decode program for [B, 1] (--decode-batch) — into one
 * plan (the decode lowering's graph, the weights once, the prefill
 * program in the KN_SEC_CUP_* sections; docs/plan-format.md). The two
 * lowerings start from the same optimized graph; the check below makes
 * sure the prefill program's value ids, nodes and weights are valid in the
 * graph the plan keeps. */
#include "cli.h"
#include "codegen/cuda/lower.h"

#include <stdio.h>
#include <string.h>

bool kn_compile_is_decoder(const kn_graph *g, char *why, size_t n)
{
    uint32_t n_paged = 0;
    why[0] = 0;
    for (kn_id k = 0; k < g->n_nodes; k++) {
        const kn_node *nd = &g->nodes[k];
        if (nd->op != KN_OP_KILN_PagedAttention)
            continue;
        n_paged++;
        bool mask = nd->n_inputs >= 4 && nd->inputs[3] != KN_NONE;
        if (mask || kn_node_attr_int(nd, "causal", 0) != 1) {
            snprintf(why, n,
                     "the attention mask of node '%s' could not be proven causal (the kv-mask pass left it), and "
                     "the CUDA session runs causal attention only",
                     nd->name ? nd->name : "");
            return false;
        }
    }
    if (n_paged == 0)
        return false;
    if (g->n_inputs < 1 || g->n_inputs > 2) {
        snprintf(why, n, "the graph has %u inputs (a decoder's are input_ids and position_ids)", g->n_inputs);
        return false;
    }
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const kn_value *v = &g->values[g->inputs[i]];
        const kn_type *t = &v->type;
        const char *name = v->name ? v->name : "";
        bool named = strcmp(name, "input_ids") == 0 || (i == 1 && strcmp(name, "position_ids") == 0);
        bool integer = t->dtype == KN_I64 || t->dtype == KN_I32;
        if (!named || t->kind != KN_TYPE_TENSOR || !integer || t->shape.rank != 2 ||
            (t->shape.dims[0].value >= 0 && t->shape.dims[0].value != 1) || t->shape.dims[1].value >= 0) {
            snprintf(why, n,
                     "input '%s' is not a decoder's (input_ids, then optionally position_ids: integer [batch, "
                     "new tokens] with the token count symbolic)",
                     name);
            return false;
        }
    }
    return true;
}

static kn_status lower_at(kn_graph *g, int64_t rows, int64_t tokens, const kn_compile_cuda_opts *o, kn_diag *d,
                          kn_cu_program *prog)
{
    kn_cuda_shape sh[2];
    memset(sh, 0, sizeof sh);
    for (uint32_t i = 0; i < g->n_inputs && i < 2; i++) {
        sh[i].name = g->values[g->inputs[i]].name;
        sh[i].rank = 2;
        sh[i].dims[0] = rows;
        sh[i].dims[1] = tokens;
    }
    kn_compile_cuda_opts co = *o;
    co.shapes = sh;
    co.n_shapes = g->n_inputs;
    co.sampling = true; /* the CUDA session samples on the device */
    return kn_compile_cuda(g, &co, d, prog);
}

static bool same_tensor(const kn_tensor *a, const kn_tensor *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank || a->nbytes != b->nbytes || a->dtype == KN_STRING)
        return false;
    for (int32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return a->data == b->data || !a->nbytes || memcmp(a->data, b->data, a->nbytes) == 0;
}

/* Whether the program (lowered on `pre`: the prefill or a batched decode
 * program) can run on `dec`'s graph: false with `why` otherwise. */
static bool agree(const kn_graph *dec, const kn_graph *pre, const kn_cu_program *pp, char *why, size_t n)
{
    if (dec->n_values != pre->n_values || dec->n_nodes != pre->n_nodes || dec->n_inputs != pre->n_inputs ||
        dec->n_outputs != pre->n_outputs) {
        snprintf(why, n, "the lowerings folded different nodes (%u/%u nodes, %u/%u values)",
                 pre->n_nodes, dec->n_nodes, pre->n_values, dec->n_values);
        return false;
    }
    for (uint32_t i = 0; i < dec->n_inputs; i++)
        if (dec->inputs[i] != pre->inputs[i])
            goto differ;
    for (uint32_t i = 0; i < dec->n_outputs; i++)
        if (dec->outputs[i] != pre->outputs[i])
            goto differ;
    for (kn_id k = 0; k < dec->n_nodes; k++) {
        const kn_node *a = &dec->nodes[k], *b = &pre->nodes[k];
        if (a->op != b->op || a->n_inputs != b->n_inputs || a->n_outputs != b->n_outputs)
            goto differ;
        for (uint32_t i = 0; i < a->n_inputs; i++)
            if (a->inputs[i] != b->inputs[i])
                goto differ;
        for (uint32_t i = 0; i < a->n_outputs; i++)
            if (a->outputs[i] != b->outputs[i])
                goto differ;
    }
    for (uint32_t i = 0; i < pp->n_steps; i++)
        if (pp->steps[i].kind == KN_CU_STEP_HOST) {
            snprintf(why, n, "the program runs node '%s' (%s) on the host",
                     pre->nodes[pp->steps[i].node].name ? pre->nodes[pp->steps[i].node].name : "",
                     pre->nodes[pp->steps[i].node].op_type ? pre->nodes[pp->steps[i].node].op_type : "");
            return false;
        }
    for (uint32_t i = 0; i < pp->n_slots; i++) {
        const kn_cu_slot *s = &pp->slots[i];
        if (s->place != KN_CU_WEIGHT)
            continue;
        const kn_value *a = &dec->values[s->index], *b = &pre->values[s->index];
        if (a->kind != KN_VAL_CONST || b->kind != KN_VAL_CONST || !same_tensor(a->tensor, b->tensor)) {
            snprintf(why, n, "constant '%s' differs between the lowerings", b->name ? b->name : "");
            return false;
        }
    }
    return true;
differ:
    snprintf(why, n, "the lowerings left different graphs");
    return false;
}

kn_status kn_compile_cuda_decoder(kn_graph *dec, kn_graph *pre, int64_t P, const kn_compile_cuda_opts *o,
                                  kn_diag *d, kn_cu_program *dprog, kn_cu_program *pprog, char *why, size_t n)
{
    why[0] = 0;
    KN_TRY(lower_at(pre, 1, P, o, d, pprog));
    kn_status s = lower_at(dec, 1, 1, o, d, dprog);
    if (s != KN_OK) {
        kn_cu_program_free(pprog);
        return s;
    }
    if (!agree(dec, pre, pprog, why, n)) {
        kn_cu_program_free(pprog);
        kn_cu_program_free(dprog);
        return KN_ERR_UNSUPPORTED;
    }
    return KN_OK;
}

kn_status kn_compile_cuda_batch(const kn_graph *dec, kn_graph *bg, int64_t B, int64_t T, const kn_compile_cuda_opts *o,
                                kn_diag *d, kn_cu_program *bprog, char *why, size_t n)
{
    why[0] = 0;
    for (uint32_t i = 0; i < bg->n_inputs; i++) {
        const kn_dim *b0 = &bg->values[bg->inputs[i]].type.shape.dims[0];
        if (b0->value >= 0 && b0->value != B) {
            snprintf(why, n, "input '%s' has a static batch of %lld", bg->values[bg->inputs[i]].name,
                     (long long)b0->value);
            return KN_ERR_UNSUPPORTED;
        }
    }
    KN_TRY(lower_at(bg, B, T, o, d, bprog));
    if (!agree(dec, bg, bprog, why, n)) {
        kn_cu_program_free(bprog);
        return KN_ERR_UNSUPPORTED;
    }
    return KN_OK;
}
