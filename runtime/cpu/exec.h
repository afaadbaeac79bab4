/* The CPU reference executor (see exec.c). */
#ifndef KILN_CPU_EXEC_H
#define KILN_CPU_EXEC_H

#include "runtime/cpu/kernel.h"

/* Runs graph g on the CPU. inputs[i] binds g->inputs[i] (borrowed);
 * outputs[i] receive new tensors (free with kn_rt_tensor_free(a, ...)).
 * Errors name the node and op; KN_ERR_UNSUPPORTED when an op has no
 * kernel, KN_ERR_INVALID for bad inputs, KN_ERR_NOMEM. */
kn_status kn_cpu_run(const kn_graph *g, const kn_allocator *a, kn_diag *diag, const kn_rt_tensor *const *inputs,
                     uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out);

/* Runs one node of graph g (a main graph) on the CPU: `values` (borrowed)
 * bind the values with ids `ids` — every non-constant value the node or
 * its subgraphs read; constants come from g. outputs[i] receive the node's
 * outputs (NULL for omitted ones; free with kn_rt_tensor_free(a, ...)).
 * Used by backends to run a node they have no kernel for, and (with no
 * bound values: every input a constant) by constant folding. */
kn_status kn_cpu_run_node(const kn_graph *g, kn_id node, const kn_id *ids, const kn_rt_tensor *const *values,
                          uint32_t n_values, kn_rt_tensor **outputs, const kn_allocator *a, kn_diag *diag);

/* Called with every value a node computes (in any graph, g says which),
 * right after the node ran; t is borrowed. */
typedef void (*kn_cpu_observer)(void *ctx, const kn_graph *g, kn_id value, const kn_rt_tensor *t);

/* kn_cpu_run with an observer (NULL: none). */
kn_status kn_cpu_run_observed(const kn_graph *g, const kn_allocator *a, kn_diag *diag,
                              const kn_rt_tensor *const *inputs, uint32_t n_in, kn_rt_tensor **outputs,
                              uint32_t n_out, kn_cpu_observer observe, void *ctx);

/* kn_cpu_run_observed with a context for kernels that need state beyond
 * their inputs: `kv` (borrowed; a kn_kv_run for kiln.PagedAttention, see
 * runtime/kv_cache.h) is what kn_kctx_kv returns during the run. */
kn_status kn_cpu_run_kv(const kn_graph *g, const kn_allocator *a, kn_diag *diag, const kn_rt_tensor *const *inputs,
                        uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out, kn_cpu_observer observe, void *ctx,
                        void *kv);

/* Lets a caller stand in for chosen nodes (the CUDA lowering's shape probe
 * skips GEMMs whose values nothing needs): called before each node's
 * kernel with its inputs; setting *done with outs[i] filled (one tensor
 * per present output, allocated with `a`) skips the kernel. `ctx` is the
 * observer's. Errors stop the run. */
typedef kn_status (*kn_cpu_standin)(void *ctx, const kn_graph *g, kn_id node, const kn_rt_tensor *const *ins,
                                    kn_rt_tensor **outs, const kn_allocator *a, bool *done);

/* kn_cpu_run_kv with a stand-in (NULL: none). */
kn_status kn_cpu_run_probe(const kn_graph *g, const kn_allocator *a, kn_diag *diag, const kn_rt_tensor *const *inputs,
                           uint32_t n_in, kn_rt_tensor **outputs, uint32_t n_out, kn_cpu_observer observe, void *ctx,
                           void *kv, kn_cpu_standin standin);

#endif
