/* The CPU reference backend's kernel interface. Every op kiln runs on the
 * CPU has `kn_status kn_ref_<Op>(kn_kctx *c)` (listed in kernels.def); the
 * executor calls it with the node's input tensors bound, and the kernel
 * computes its output shapes from the actual inputs, allocates the outputs
 * with kn_kctx_out and fills them. Kernels never see the plan or the model
 * file: only this context. */
#ifndef KILN_CPU_KERNEL_H
#define KILN_CPU_KERNEL_H

#include "ir/ir.h"

#include <stdbool.h>

/* A tensor value at run time. Data is packed like ONNX raw_data
 * (little-endian; bool one byte; 4-bit types two per byte); string
 * tensors hold `numel` kn_bytes. */
typedef struct kn_rt_tensor {
    kn_dtype dtype;
    int32_t rank;
    int64_t *dims;    /* rank entries */
    int64_t numel;
    size_t nbytes;    /* bytes of data (strings: numel * sizeof(kn_bytes)) */
    void *data;
    uint32_t flags;   /* executor-private */
} kn_rt_tensor;

/* Creates a tensor with zeroed data (strings: empty). *out is NULL on
 * failure. KN_ERR_LIMIT if the size overflows, KN_ERR_NOMEM. */
kn_status kn_rt_tensor_new(const kn_allocator *a, kn_dtype t, int32_t rank, const int64_t *dims, kn_rt_tensor **out);
/* A tensor that refers to data it does not own (freed without the data). */
kn_status kn_rt_tensor_view(const kn_allocator *a, kn_dtype t, int32_t rank, const int64_t *dims, const void *data,
                            kn_rt_tensor **out);
/* Deep copy. */
kn_status kn_rt_tensor_clone(const kn_allocator *a, const kn_rt_tensor *src, kn_rt_tensor **out);
void kn_rt_tensor_free(const kn_allocator *a, kn_rt_tensor *t);

typedef struct kn_kctx kn_kctx;
typedef kn_status (*kn_ref_fn)(kn_kctx *c);

/* ---- what the kernel reads ---- */
const kn_node *kn_kctx_node(const kn_kctx *c);
int64_t kn_kctx_opset(const kn_kctx *c);
uint32_t kn_kctx_n_inputs(const kn_kctx *c);
/* Input i, or NULL when it is omitted (or i is past the last input). */
const kn_rt_tensor *kn_kctx_in(const kn_kctx *c, uint32_t i);
uint32_t kn_kctx_n_outputs(const kn_kctx *c);
/* Whether output i is used (present in the node and not omitted). */
bool kn_kctx_out_wanted(const kn_kctx *c, uint32_t i);

/* Allocates output i (zeroed) with the given type and shape. Works for
 * omitted outputs too (the tensor is then dropped after the node). */
kn_status kn_kctx_out(kn_kctx *c, uint32_t i, kn_dtype t, int32_t rank, const int64_t *dims, kn_rt_tensor **out);
/* Sets output i to a tensor the kernel made (e.g. a subgraph's result);
 * takes ownership of t. */
kn_status kn_kctx_out_set(kn_kctx *c, uint32_t i, kn_rt_tensor *t);

/* Attributes, with the value to use when absent. */
const kn_attr *kn_kctx_attr(const kn_kctx *c, const char *name);
int64_t kn_kctx_attr_int(const kn_kctx *c, const char *name, int64_t def);
float kn_kctx_attr_float(const kn_kctx *c, const char *name, float def);
/* NUL-terminated; `def` when absent. */
const char *kn_kctx_attr_str(const kn_kctx *c, const char *name, const char *def);
/* NULL (and *n = 0) when absent. */
const int64_t *kn_kctx_attr_ints(const kn_kctx *c, const char *name, uint32_t *n);
const float *kn_kctx_attr_floats(const kn_kctx *c, const char *name, uint32_t *n);

/* Zeroed scratch memory, freed when the kernel returns. NULL when out of
 * memory (return KN_ERR_NOMEM then). */
void *kn_kctx_scratch(kn_kctx *c, size_t bytes);
const kn_allocator *kn_kctx_allocator(const kn_kctx *c);
/* The run's KV-cache context (kn_cpu_run_kv), or NULL when there is none. */
void *kn_kctx_kv(const kn_kctx *c);

/* Reports an error naming the node ("error: FILE: node 'N' (Op, opset K):
 * ...") and returns s. Use for bad inputs: wrong shapes, dtypes, values. */
kn_status kn_kctx_fail(kn_kctx *c, kn_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Runs a subgraph (an If/Loop/Scan body held by this node's attribute)
 * with the given inputs (borrowed); outputs[i] receive new tensors that
 * the kernel must pass to kn_kctx_out_set or free with
 * kn_rt_tensor_free(kn_kctx_allocator(c), ...). Outer-scope values are
 * resolved from the enclosing frames. */
kn_status kn_kctx_run_graph(kn_kctx *c, const kn_graph *body, const kn_rt_tensor *const *inputs, uint32_t n_in,
                            kn_rt_tensor **outputs, uint32_t n_out);

/* ---- the kernels ---- */
#define KN_KERNEL(id) kn_status kn_ref_##id(kn_kctx *c);
#include "runtime/cpu/kernels.def"
#undef KN_KERNEL

/* The kernel for an op, or NULL when the CPU backend has none. */
kn_ref_fn kn_cpu_kernel(kn_op op);

#endif
