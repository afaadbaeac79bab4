/* Host builds of generated CUDA kernels (the emulator behind kiln-cuda-emu
 * and kiln-attn-check): a kernel's source is compiled with the host C++
 * compiler against a shim of the CUDA built-ins and loaded with dlopen.
 * Kernels without barriers run their threads one after another; a kernel
 * whose source uses __syncthreads or warp shuffles (__shfl_*_sync) runs
 * each block's threads as cooperative user-level threads (ucontext) that
 * switch at every barrier, so shared memory (`__shared__`, static sizes
 * only) and warp-level exchanges behave as on the GPU for code without
 * races. Such kernels see KN_EMU_COOP defined and kn_emu_warp_gather (each
 * lane's bytes to every lane of its warp), with which a kernel models
 * warp-wide instructions such as mma.sync in software. A check of the kernels' logic, not of GPU timing or memory model. */
#ifndef KILN_TOOLS_EMU_HOST_H
#define KILN_TOOLS_EMU_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* grid[3], block[3], args: one pointer per kernel parameter (to the
 * device pointer for pointer arguments, to the bytes for by-value ones). */
typedef void (*kn_emu_launch_fn)(const unsigned *grid, const unsigned *block, void **args);

/* Creates the work folder ($TMPDIR/kiln-cuda-emu-UID) and its kiln_cuda.h
 * (shim + device prelude). false with a message in err on failure. */
bool kn_emu_init(char *err, size_t err_size);

/* Builds (or reuses, by hash) the host library of one kernel and returns
 * its launcher, or NULL with the compiler's log in err. */
kn_emu_launch_fn kn_emu_build(const char *source, const char *entry, uint64_t hash, char *err, size_t err_size);

#endif
