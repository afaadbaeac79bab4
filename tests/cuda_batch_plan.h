/* The decoder plans the batched-program tests build (test_cuda_decode_batch.c,
 * test_cuda_prefill_batch.c): a tests/models decoder with a prefill
 * program [1, CBP_CHUNK], the decode program [1, 1] and batched programs
 * [rows[k], toks[k]], written to one plan file. */
#ifndef KILN_TESTS_CUDA_BATCH_PLAN_H
#define KILN_TESTS_CUDA_BATCH_PLAN_H

#include "codegen/cuda/program.h"
#include "model_builder.h"

#include <stdbool.h>
#include <stdint.h>

#define CBP_CHUNK 4        /* the prefill program's new tokens */
#define CBP_MAX_BATCHED 3  /* batched programs a plan here holds at most */

typedef struct built {
    kn_graph *dec, *pre, *bg[CBP_MAX_BATCHED];
    kn_cu_program dprog, pprog, bprog[CBP_MAX_BATCHED];
    uint32_t n_b;
    char *path;
} built;

/* tests/models/NAME through the -O2 pipeline as kiln compile runs it: the
 * kv-cache graph kept for target cuda, or as for target cpu. */
kn_graph *optimized(const char *name, bool cuda);

/* The plan of `name` (in b's temporary folder, o->path) with the batched
 * programs [rows[k], toks[k]] for k < n_b (toks NULL: one token each,
 * batched decode programs). Compiled through NVRTC where it loads, else
 * lowered only with placeholder images (the plan is not run then). */
void build(mb *b, const char *name, const uint32_t *rows, const uint32_t *toks, uint32_t n_b, built *o);
void built_free(built *o);

/* The index of the largest of v[0 .. n) (the first of equals). */
int64_t argmax(const float *v, int64_t n);

#endif
