/* Shared between the ONNX frontend's files; the only place (with them)
 * that sees protobuf-c's generated ONNX types. */
#ifndef KILN_ONNX_INTERNAL_H
#define KILN_ONNX_INTERNAL_H

#include "ir/ir.h"
#include "onnx.pb-c.h"

/* One import in progress. */
typedef struct kn_onnx_import {
    kn_graph *root;
    kn_diag *diag;
    const char *file;      /* model path for messages */
    const char *base_dir;  /* folder for external data; NULL: refuse it */
    char *base_real;       /* realpath(base_dir), lazily, from the allocator */
    kn_import_options opts;
    kn_status status;      /* first error seen; KN_OK while all is well */
    uint32_t n_inlined;    /* function calls inlined so far (for unique prefixes) */
    uint32_t in_function;  /* > 0 while a function body is imported: its TensorProtos
                            * are read once per call, so raw_data is copied, not taken */
    struct ext_file *ext;  /* external data files mapped so far */
    size_t n_nodes;        /* nodes imported so far (against opts.max_nodes) */
    size_t data_bytes;     /* in-memory tensor and string bytes so far (opts.max_data_bytes) */
} kn_onnx_import;

/* Records an error and keeps the first failing status. Always returns s. */
kn_status kn_onnx_fail(kn_onnx_import *im, kn_status s);

/* TensorProto → kn_tensor (arena-owned; raw_data taken over, external
 * data mmapped). `what` names the tensor's role for messages, e.g.
 * "initializer 'W'" or "node 'n' (Constant, opset 13): attribute 'value'". */
kn_status kn_onnx_tensor(kn_onnx_import *im, Onnx__TensorProto *tp, const char *what, kn_tensor **out);
/* SparseTensorProto → dense kn_tensor. */
kn_status kn_onnx_sparse(kn_onnx_import *im, Onnx__SparseTensorProto *sp, const char *what, kn_tensor **out);
/* TypeProto → kn_type (NULL tp gives an unknown type). */
kn_status kn_onnx_type(kn_onnx_import *im, const Onnx__TypeProto *tp, const char *what, kn_type *out);
/* The type a constant tensor gives its value. */
kn_status kn_onnx_tensor_type(kn_onnx_import *im, const kn_tensor *t, kn_type *out);

/* Counts `bytes` of tensor data or strings against opts.max_data_bytes
 * (no limit when it is 0, as for the tensor file readers); KN_ERR_LIMIT
 * with a message naming `what` and the limit when it would be passed. */
kn_status kn_onnx_account(kn_onnx_import *im, size_t bytes, const char *what);

void kn_onnx_ext_close(kn_onnx_import *im);

#endif
