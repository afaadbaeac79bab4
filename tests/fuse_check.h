/* Test helpers for the fusion passes (test_fuse_*.c): import a built model,
 * run passes on a copy (verified after each), and check the outputs before
 * and after on the CPU backend. */
#ifndef KILN_TESTS_FUSE_CHECK_H
#define KILN_TESTS_FUSE_CHECK_H

#include "pass_check.h" /* pc_import, pc_count, pc_find */

/* Imports m twice, runs `pass` then dce on the second copy, checks the
 * outputs agree within rtol `tol` on deterministic inputs (float32,
 * float16 and int64 inputs; symbolic dims 3) and frees the first copy. */
kn_graph *fc_apply(mb *b, Onnx__ModelProto *m, kn_pass_fn pass, double tol);
/* fc_apply on inputs filled by fill; tol < 0: the outputs (of any dtype)
 * must be bit-identical. */
kn_graph *fc_apply_with(mb *b, Onnx__ModelProto *m, kn_pass_fn pass, pc_fill_fn fill, double tol);
/* fc_apply (tol 0) on a model the pass must leave alone: the node count
 * stays what the import gives. Returns the graph after the pass. */
kn_graph *fc_apply_unchanged(mb *b, Onnx__ModelProto *m, kn_pass_fn pass);
/* A float32 initializer with values base + 0.01 * (i % 17). */
void fc_f32(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *dims, size_t rank, float base);
/* A float32 scalar (rank 0) initializer. */
void fc_scalar(mb *b, Onnx__GraphProto *g, const char *name, float v);
/* Whether node n's `_origins` lists exactly `count` names, `first` among them. */
bool fc_origins(const kn_node *n, uint32_t count, const char *first);

#endif
