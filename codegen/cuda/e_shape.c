/* CUDA emitters for data movement: ops that only rearrange bytes. */
#include "codegen/cuda/emit.h"

/* Identity and the reshapes: the output is the input's bytes. */
kn_status kn_emit_Identity(kn_emit *e) { return kn_emit_alias(e, 0, 0); }
