/* Constant deduplication: constants with the same dtype, shape and bytes
 * (a hash of a sample of the bytes, then memcmp) are merged into the first one, and readers of the
 * others read it. Exporters write the same small constants (axes, shapes,
 * scalars like 1.0 and 0.5) once per layer, and folding makes more of them;
 * tied weights also appear twice. Merging shrinks the plan and lets cse
 * see equal inputs as equal. A constant that is a graph output or read by a
 * subgraph keeps its name and is not merged away. */
#include "passes/passes.h"
#include "passes/rewrite.h"

#include <string.h>

/* The hash only picks a bucket; `same` compares every byte. It reads the
 * dtype, the dims and at most ~1.5 KiB of the data (the first and last
 * 512 bytes and 64 words spread between), so a multi-GB model's weights
 * are not read twice here: distinct weights of one shape differ in their
 * first bytes, and only equal-looking ones are compared in full. */
static uint64_t mix(uint64_t h, uint64_t x) { return (h ^ x) * 1099511628211ull; }

static uint64_t tensor_hash(const kn_tensor *t)
{
    uint64_t h = mix(1469598103934665603ull, (uint64_t)t->dtype);
    for (int32_t i = 0; i < t->rank; i++)
        h = mix(h, (uint64_t)t->dims[i]);
    h = mix(h, (uint64_t)t->nbytes);
    const uint8_t *p = t->data;
    size_t n = t->nbytes;
    if (n <= 1024 + 64 * 8) {
        for (size_t i = 0; i < n; i++)
            h = mix(h, p[i]);
        return h;
    }
    for (size_t i = 0; i < 512; i++)
        h = mix(h, p[i]) ^ mix(h, p[n - 1 - i]);
    size_t step = (n - 1024 - 8) / 64;
    for (size_t i = 0; i < 64; i++) {
        uint64_t w;
        memcpy(&w, p + 512 + i * step, 8);
        h = mix(h, w);
    }
    return h;
}

static bool same(const kn_tensor *a, const kn_tensor *b)
{
    if (a->dtype != b->dtype || a->rank != b->rank || a->nbytes != b->nbytes)
        return false;
    for (int32_t i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i])
            return false;
    return a->nbytes == 0 || memcmp(a->data, b->data, a->nbytes) == 0;
}

kn_status kn_pass_dedup(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    size_t cap = 16;
    while (cap < 2 * (size_t)g->n_values)
        cap *= 2;
    kn_id *tab = kn_mem_alloc(g->alloc, cap * sizeof *tab);
    kn_id *repl = kn_mem_alloc(g->alloc, ((size_t)g->n_values + 1) * sizeof *repl);
    if (!tab || !repl) {
        kn_mem_free(g->alloc, tab);
        kn_mem_free(g->alloc, repl);
        kn_uses_free(g, &u);
        return KN_ERR_NOMEM;
    }
    for (size_t i = 0; i < cap; i++)
        tab[i] = KN_NONE;
    bool any = false;
    for (kn_id v = 0; v < g->n_values; v++) {
        repl[v] = KN_NONE;
        const kn_value *x = &g->values[v];
        if (x->kind != KN_VAL_CONST || !x->tensor || x->tensor->dtype == KN_STRING || !u.readers[v])
            continue;
        size_t slot = tensor_hash(x->tensor) & (cap - 1);
        for (; tab[slot] != KN_NONE; slot = (slot + 1) & (cap - 1))
            if (same(g->values[tab[slot]].tensor, x->tensor))
                break;
        if (tab[slot] == KN_NONE)
            tab[slot] = v;
        else if (!u.pinned[v])
            repl[v] = tab[slot], any = true;
    }
    for (kn_id k = 0; any && k < g->n_nodes; k++) {
        kn_node *n = &g->nodes[k];
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE && repl[n->inputs[i]] != KN_NONE)
                n->inputs[i] = repl[n->inputs[i]];
    }
    kn_mem_free(g->alloc, tab);
    kn_mem_free(g->alloc, repl);
    return kn_uses_finish(g, &u);
}
