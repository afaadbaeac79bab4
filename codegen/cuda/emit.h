/* CUDA code generation, per node. For target cuda every node of the main
 * graph is lowered by its op's emitter, `kn_status kn_emit_<Op>(kn_emit *)`
 * (listed in codegen/cuda/emitters.def, ids as in ir/ops.def). Shapes are
 * static here: the compiler binds the graph inputs' shapes and works out
 * every tensor's shape before emitting. An emitter
 *   - registers CUDA C source (kn_emit_kernel; identical sources are
 *     compiled once, so keep shapes out of the source: pass them as
 *     parameters and specialise only on what changes the code — dtypes,
 *     the op, rank limits),
 *   - and appends the steps that compute its outputs: kernel launches with
 *     their grid/block and arguments, cuBLASLt GEMMs, aliases (an output
 *     sharing its input's bytes: Reshape, Squeeze, Identity ...).
 * Kernels are compiled with NVRTC for every target arch (+ PTX), with
 * `#include "kiln_cuda.h"` available: see codegen/cuda/prelude.h for the
 * device helpers it provides (kn_load/kn_store in any dtype via float or
 * double, half/bfloat16, index math). */
#ifndef KILN_CODEGEN_CUDA_EMIT_H
#define KILN_CODEGEN_CUDA_EMIT_H

#include "ir/ir.h"

#include <stdbool.h>

typedef struct kn_emit kn_emit;

/* A tensor as the emitter sees it: dtype and static shape; for constants
 * (weights) also the host bytes, which the emitter may read to choose a
 * specialisation (e.g. a Reshape target, Slice starts) but need not copy. */
typedef struct kn_emit_tensor {
    kn_dtype dtype;
    int32_t rank;
    const int64_t *dims;
    int64_t numel;
    size_t nbytes;
    const void *host_data; /* constants only, else NULL */
} kn_emit_tensor;

const kn_node *kn_emit_node(const kn_emit *e);
int64_t kn_emit_opset(const kn_emit *e);
uint32_t kn_emit_n_inputs(const kn_emit *e);
/* Input i, or NULL when omitted. */
const kn_emit_tensor *kn_emit_in(const kn_emit *e, uint32_t i);
uint32_t kn_emit_n_outputs(const kn_emit *e);
/* Output i (its static shape, as computed by the compiler), or NULL when
 * the node omits it. */
const kn_emit_tensor *kn_emit_out(const kn_emit *e, uint32_t i);

int64_t kn_emit_attr_int(const kn_emit *e, const char *name, int64_t def);
float kn_emit_attr_float(const kn_emit *e, const char *name, float def);
const char *kn_emit_attr_str(const kn_emit *e, const char *name, const char *def);
const int64_t *kn_emit_attr_ints(const kn_emit *e, const char *name, uint32_t *n);

/* Registers kernel source (NUL-terminated CUDA C++; the entry point must be
 * `extern "C" __global__`). *kernel receives its id for kn_emit_launch.
 * The same source registered twice gets the same id. */
kn_status kn_emit_kernel(kn_emit *e, const char *source, const char *entry, uint32_t *kernel);

typedef enum kn_emit_arg_kind {
    KN_ARG_IN = 1,   /* device pointer to input `index` */
    KN_ARG_OUT,      /* device pointer to output `index` */
    KN_ARG_SCRATCH,  /* device pointer to scratch shared by the node's steps */
    KN_ARG_PARAMS,   /* `size` bytes at `data` passed by value (a POD struct) */
    KN_ARG_KV,       /* device pointer into the run's KV cache (owned by the CUDA session) */
    KN_ARG_PERSIST,  /* device pointer to memory kept for the program's life, zero before its first run */
} kn_emit_arg_kind;

/* IN/OUT: device pointer to tensor `index` plus `offset` bytes.
 * SCRATCH: `size` bytes of device scratch; the same `index` names the same
 * buffer in every step of the node (so one step can fill what the next
 * reads), `offset` bytes in. PARAMS: `size` bytes at `data`, by value.
 * KV: `index` is a KN_CU_KV_* (runtime/plan_format.h): KEYS / VALUES point
 * at the first block of layer `offset` of the session's pools (layout of
 * runtime/kv_cache.c, dtype kiln.kv.dtype), TABLE at the run's int32 block
 * table [rows, ceil(max_seq_len / block_size)], PAST at its int32 past
 * lengths [rows]; the emitter declares rows and new tokens first with
 * kn_emit_kv_shape. PERSIST: `size` bytes of the program's persistent
 * memory (the plan's zero slot: zero before the program's first run, kept
 * between runs, never shared with another buffer), `index` naming one
 * region per node as for SCRATCH; a kernel that writes it must leave it
 * zero when it ends (e.g. the GEMV's K-split counters). */
typedef struct kn_emit_arg {
    kn_emit_arg_kind kind;
    uint32_t index;
    size_t size;
    const void *data;
    uint64_t offset;
} kn_emit_arg;

typedef struct kn_dim3 {
    uint32_t x, y, z;
} kn_dim3;

/* Appends a launch of `kernel` with the arguments in order. */
kn_status kn_emit_launch(kn_emit *e, uint32_t kernel, kn_dim3 grid, kn_dim3 block, uint32_t smem_bytes,
                         const kn_emit_arg *args, uint32_t n_args);

/* A GEMM through cuBLASLt: D = alpha * op(A) op(B) + beta * C, row-major
 * operands given as inputs/outputs of the node, optional strided batch. */
typedef struct kn_emit_gemm {
    kn_emit_arg a, b, c, d;   /* KN_ARG_IN / KN_ARG_OUT / KN_ARG_SCRATCH; c.kind 0 = none */
    kn_emit_arg bias;         /* epilogues 3-5 with a C matrix in c: the bias row (kind 0: c is the bias) */
    int64_t m, n, k;
    bool trans_a, trans_b;
    int64_t lda, ldb, ldc, ldd;   /* leading dims (elements, row-major) */
    int64_t batch;                /* 1 for none */
    int64_t stride_a, stride_b, stride_c, stride_d; /* elements between batches (0: broadcast) */
    float alpha, beta;
    kn_dtype dtype;               /* of A, B, C, D; KN_I8: int8 A and B, int32 D, exact (only in the
                                   * form runtime/plan_format.h lists: trans_b, no C or epilogue,
                                   * alpha 1, dims and leading dims multiples of 4) */
    uint32_t epilogue;            /* 0 none, 1 relu, 2 gelu (tanh form), 3 bias (c is a row vector),
                                   * 4 relu+bias, 5 gelu+bias (bias as for 3) */
} kn_emit_gemm;

kn_status kn_emit_gemm_step(kn_emit *e, const kn_emit_gemm *g);

/* The node reads the run's KV cache for `rows` sequences (the batch) that
 * each get `tokens` new tokens per run. Every such node of a plan must
 * agree (the session uploads one block table and one past-length array
 * per run); KN_ERR_UNSUPPORTED with a message otherwise. */
kn_status kn_emit_kv_shape(kn_emit *e, int64_t rows, int64_t tokens);

/* A model metadata value (as kiln compile keeps it, or "meta."-prefixed as
 * a plan stores it), or NULL: e.g. the kv-cache pass's kiln.kv.* keys. */
const char *kn_emit_meta(const kn_emit *e, const char *key);

/* The GEMV/cuBLASLt choices of this lowering (gemv_kernels.h) and the
 * plan's newest arch (e.g. 90); kn_emit_count_gemv counts a product given
 * to the GEMV (kn_cuda_lower_stats.gemv). */
struct kn_gemm_table;
const struct kn_gemm_table *kn_emit_gemm_table(const kn_emit *e);
uint32_t kn_emit_arch(const kn_emit *e);
void kn_emit_count_gemv(kn_emit *e);

/* A packed kiln.SwiGlu (one input [..., 2N]) that is the only reader of
 * this node's output 0 (not a graph output either): its output, or NULL.
 * An emitter that computes SwiGlu(output 0) itself calls
 * kn_emit_take_swiglu before its launches: from then on KN_ARG_OUT 0
 * names the reader's output, output 0 gets no buffer, and the reader
 * emits nothing (the GEMV's SwiGlu form, e_linalg.c). */
const kn_emit_tensor *kn_emit_swiglu_reader(const kn_emit *e);
void kn_emit_take_swiglu(kn_emit *e);

/* Output `out` shares input `in`'s bytes (same byte size): no step. */
kn_status kn_emit_alias(kn_emit *e, uint32_t out, uint32_t in);
/* Output `out` is the bytes [offset, offset + its size) of input `in`:
 * no step. Memory planning keeps the input's root buffer alive as long
 * as the view is used. offset must be a multiple of KN_CU_ALIAS_ALIGN
 * (kernels may read 16-byte words of what they are given). */
#define KN_CU_ALIAS_ALIGN 16u
kn_status kn_emit_alias_at(kn_emit *e, uint32_t out, uint32_t in, uint64_t offset);

/* Whether a strided view (output dims; per dim an input element stride
 * st and a wrap-around extent mod, <= 0 for none) reads consecutive input
 * elements in output order, so the output is a byte range of the input
 * (e_shape.c: Transpose, Slice, Expand, Tile ... then alias it). */
bool kn_cuda_view_is_range(int64_t rank, const int64_t *dims, const int64_t *mod, const int64_t *st);

/* Device-to-device copy of `bytes` from input `in` (at byte offset
 * in_off) to output `out` (at out_off). */
kn_status kn_emit_copy(kn_emit *e, uint32_t out, uint64_t out_off, uint32_t in, uint64_t in_off, uint64_t bytes);

/* Reports a problem naming the node and returns s (KN_ERR_UNSUPPORTED for
 * a case the emitter does not handle: the compile lists it). */
kn_status kn_emit_fail(kn_emit *e, kn_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---- source text ---- */

/* A growable string for kernel source; kn_sb_printf never fails visibly:
 * on out-of-memory the builder is marked and kn_sb_str returns NULL. */
typedef struct kn_sb {
    char *p;
    size_t n, cap;
    bool failed;
} kn_sb;

void kn_sb_printf(kn_sb *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *kn_sb_str(const kn_sb *s);
void kn_sb_free(kn_sb *s);

/* A 1-D grid of 256-thread blocks for n work items (capped: kernels use
 * grid-stride loops, kn_tid()/kn_nthreads()). */
kn_dim3 kn_emit_grid(int64_t n);

/* Registers the source in *src (freed here, also on failure) and launches
 * it over n work items with kn_emit_grid(n) and 256-thread blocks. */
kn_status kn_emit_launch_source(kn_emit *e, kn_sb *src, const char *entry, const kn_emit_arg *args, uint32_t n_args,
                                int64_t n);

/* The CUDA C type name of a dtype in kernels ("float", "__half",
 * "__nv_bfloat16", "double", "signed char", "long long", "bool", ...);
 * NULL for dtypes kernels do not handle (strings, complex, 4-bit, float8). */
const char *kn_cuda_type(kn_dtype t);

/* ---- the emitters ---- */
#define KN_EMIT(id) kn_status kn_emit_##id(kn_emit *e);
#include "codegen/cuda/emitters.def"
#undef KN_EMIT

typedef kn_status (*kn_emit_fn)(kn_emit *e);
/* The emitter for an op, or NULL when target cuda has none. */
kn_emit_fn kn_cuda_emitter(kn_op op);

#endif
