/* Running a lowered target-cuda program on the host (emu_program.c): the
 * checks without a GPU (kiln-cuda-emu, test_cuda_paged). */
#ifndef KILN_TOOLS_EMU_PROGRAM_H
#define KILN_TOOLS_EMU_PROGRAM_H

#include "codegen/cuda/program.h"
#include "runtime/cpu/kernel.h"

/* The run's KV cache for programs with KN_CU_ARG_KV arguments, in host
 * memory: the pools in runtime/kv_cache.c's layout (a kn_kv_cache's keys
 * and values serve as they are), the block table [rows, max_blocks] and
 * the past lengths [rows] as the emitter declared them. */
typedef struct kn_emu_kv {
    void *keys, *values;
    uint64_t layer_bytes;   /* bytes of one layer of a pool */
    const int32_t *table;
    const int32_t *past;
} kn_emu_kv;

/* Runs p (lowered from g) once: ins[i] binds graph input i (NULL: left
 * zero), outs[i] receive new tensors (kn_rt_tensor_free(NULL, ...)). kv:
 * NULL when the program does not read the cache. kn_emu_init must have
 * succeeded. KN_OK, or a status with the reason in msg (the node, the
 * kernel's host build log). */
kn_status kn_emu_run_program(const kn_graph *g, const kn_cu_program *p, kn_rt_tensor *const *ins, kn_rt_tensor **outs,
                             const kn_emu_kv *kv, char *msg, size_t msg_size);

#endif
