/* Helpers shared by the target-cuda KV cache tests (test_cuda_paged.c,
 * test_cuda_decoder.c). */
#ifndef KILN_TESTS_CUDA_PAGED_UTIL_H
#define KILN_TESTS_CUDA_PAGED_UTIL_H

#include "codegen/cuda/program.h"

#include <stdbool.h>

/* Whether a launch step of p runs kernel `entry`. */
bool uses_kernel(const kn_cu_program *p, const char *entry);

/* The kernel-launch steps of the CUDA program a loaded plan graph holds
 * (read back with kn_cuda_plan_read; fails the test when it cannot). */
uint32_t plan_launch_steps(const kn_graph *plan);

/* tests/cuda_mock.c's counters (kn_mock_control). */
enum {
    MOCK_LAUNCHES = 5,
    MOCK_BAD = 6,
    MOCK_LIVE = 7,
    MOCK_CAPTURES = 9,       /* graphs captured */
    MOCK_GRAPH_LAUNCHES = 10,
    MOCK_DTOH = 11,          /* device→host copies done */
    MOCK_DTOH_BYTES = 12,
    MOCK_ALLOCS = 13,        /* cuMemAlloc + cuMemHostAlloc calls */
    MOCK_NO_GRAPHS = 14      /* 1: stream capture is refused */
};
typedef long (*mock_ctl_fn)(int what, long value);
/* The mock's control entry as the driver loader loaded it; fails the test
 * when libcuda.so.1 is not the mock. */
mock_ctl_fn mock_ctl(void);

#endif
