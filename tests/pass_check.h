/* Test helpers for pass tests (pass_check.c). */
#ifndef KILN_TESTS_PASS_CHECK_H
#define KILN_TESTS_PASS_CHECK_H

#include "model_builder.h"
#include "passes/passes.h"
#include "runtime/cpu/kernel.h"

/* Imports m (failing the test on error). */
kn_graph *pc_import(mb *b, Onnx__ModelProto *m);
/* Nodes of op type `op` in g's main graph. */
uint32_t pc_count(const kn_graph *g, const char *op);
/* The first node of op type `op` (fails the test when none). */
const kn_node *pc_find(const kn_graph *g, const char *op);
/* Fills t, input i of a graph, with deterministic values. */
typedef void (*pc_fill_fn)(kn_rt_tensor *t, uint32_t i);
/* Runs g on inputs filled by fill (symbolic dims set to 3); outs[i] must be
 * freed by the caller. */
void pc_run_with(const kn_graph *g, pc_fill_fn fill, kn_rt_tensor **outs);
/* pc_run_with on float32 sin(0.7 e + i) and int64 e % 3 (others zero). */
void pc_run(const kn_graph *g, kn_rt_tensor **outs);
/* a and b (the same model before and after passes) give the same outputs. */
void pc_same_outputs(const kn_graph *a, const kn_graph *b, double tol);
/* Imports m twice, runs the passes (NULL-terminated list) on the second
 * copy, each verified; *before receives the first copy. */
kn_graph *pc_apply(mb *b, Onnx__ModelProto *m, kn_graph **before, ...);
/* Every allocation of the default pipeline (verify_each) on the model m
 * failing in turn (import by a counting allocator, then the n-th allocation
 * after it fails, n = 1, 2, ...): each run must give KN_OK or KN_ERR_NOMEM
 * and leak nothing. On the first run in which no allocation failed,
 * check(g) (may be NULL) checks the result; fails the test when none
 * finishes within 5000 tries. */
void pc_pipeline_alloc_sweep(mb *b, Onnx__ModelProto *m, void (*check)(const kn_graph *g));

#endif
