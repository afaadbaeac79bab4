/* Tensor files for the CLI and the conformance runner: ONNX TensorProto
 * (.pb) and numpy (.npy). */
#ifndef KILN_TOOLS_TENSOR_IO_H
#define KILN_TOOLS_TENSOR_IO_H

#include "runtime/cpu/kernel.h"

/* Reads a serialized TensorProto. *name (may be NULL) receives the
 * tensor's name, allocated with `a` ("" if none). */
kn_status kn_tensor_read_pb(const char *path, const kn_allocator *a, kn_diag *d, kn_rt_tensor **out, char **name);
kn_status kn_tensor_write_pb(const char *path, const kn_rt_tensor *t, const char *name, kn_diag *d);
/* numpy .npy, format versions 1-3, little-endian, C order. */
kn_status kn_tensor_read_npy(const char *path, const kn_allocator *a, kn_diag *d, kn_rt_tensor **out);
/* The same two readers from bytes in memory (not referenced after the
 * call); `path` names them in messages. */
kn_status kn_tensor_read_pb_memory(const void *data, size_t size, const char *path, const kn_allocator *a, kn_diag *d,
                                   kn_rt_tensor **out, char **name);
kn_status kn_tensor_read_npy_memory(const void *data, size_t size, const char *path, const kn_allocator *a,
                                    kn_diag *d, kn_rt_tensor **out);
kn_status kn_tensor_write_npy(const char *path, const kn_rt_tensor *t, kn_diag *d);
/* By extension: .npy → numpy, anything else → TensorProto. */
kn_status kn_tensor_read(const char *path, const kn_allocator *a, kn_diag *d, kn_rt_tensor **out, char **name);

/* Writes data to path atomically: a temporary file in the same folder,
 * fsync, rename. Nothing is left behind on failure. */
kn_status kn_write_file_atomic(const char *path, const void *data, size_t size, kn_diag *d);

#endif
