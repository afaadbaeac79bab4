/* Dead-code elimination: nodes none of whose outputs reaches a graph
 * output (through other nodes or a subgraph's outer reference) are
 * removed, then every value nothing reads (unread constants included; the
 * graph's inputs stay) by kn_graph_compact. Other passes leave dead
 * producers behind when they rewire readers; this one sweeps them. Inference
 * graphs have no side effects, so nothing else keeps a node alive. */
#include "passes/passes.h"
#include "passes/rewrite.h"

kn_status kn_pass_dce(kn_graph *g, kn_diag *d)
{
    (void)d;
    kn_uses u;
    KN_TRY(kn_uses_init(g, &u));
    /* reverse topological order: a node's readers are decided before it */
    for (kn_id k = g->n_nodes; k-- > 0;) {
        const kn_node *n = &g->nodes[k];
        bool live = n->n_outputs == 0;
        for (uint32_t i = 0; i < n->n_outputs && !live; i++) {
            kn_id v = n->outputs[i];
            live = v != KN_NONE && (u.readers[v] > 0 || u.pinned[v]);
        }
        if (live)
            continue;
        u.dead[k] = true;
        for (uint32_t i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] != KN_NONE)
                u.readers[n->inputs[i]]--;
    }
    return kn_uses_finish(g, &u);
}
