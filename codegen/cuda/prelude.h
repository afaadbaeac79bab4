/* The device-side prelude every generated kernel sees as "kiln_cuda.h"
 * (embedded as a string by codegen/cuda/prelude.c). Kept to plain CUDA C++
 * that also compiles as host C++ (tests run kernels on the host through a
 * small emulation of the launch, see tests/cuda_emu.c). */
#ifndef KILN_CUDA_PRELUDE_H
#define KILN_CUDA_PRELUDE_H

/* The prelude's text. */
extern const char kn_cuda_prelude[];

#endif
