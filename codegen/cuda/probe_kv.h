/* The KV cache of the shape probe (codegen/cuda/lower.c): a graph with
 * kiln.PagedAttention runs on the CPU reference backend only with a cache
 * (kn_cpu_run_kv). The probe gives it a small host cache, every row's
 * sequence empty (past 0) and holding blocks for the node's new tokens;
 * the output's shape is Q's whatever the past, so the shapes the probe
 * finds hold for every run of the plan. */
#ifndef KILN_CODEGEN_CUDA_PROBE_KV_H
#define KILN_CODEGEN_CUDA_PROBE_KV_H

#include "runtime/cpu/kernel.h"

typedef struct kn_probe_kv kn_probe_kv;

/* *out = NULL when g has no kiln.PagedAttention node. Q inputs that are
 * graph inputs are sized from `ins` (the probe's input tensors). */
kn_status kn_probe_kv_create(const kn_graph *g, const kn_allocator *a, kn_rt_tensor *const *ins, kn_probe_kv **out);
/* The kn_kv_run to hand kn_cpu_run_kv. */
void *kn_probe_kv_run(kn_probe_kv *pk);
/* Call with every value the probe computes (before its consumers run): a
 * Q input of a PagedAttention node (re)sizes the cache for its batch and
 * new tokens. KN_ERR_NOMEM. */
kn_status kn_probe_kv_see(kn_probe_kv *pk, kn_id v, const kn_rt_tensor *t);
void kn_probe_kv_destroy(kn_probe_kv *pk);

#endif
