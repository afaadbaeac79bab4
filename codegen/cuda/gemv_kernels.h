/* The dense GEMV for target cuda: Y[M, N] = epilogue(A[M, K] · B[K, N])
 * for few rows of A (M <= KN_GEMV_MAX_ROWS: batch-1 decode) and B a
 * row-major matrix as the graph has it (the weights stay in the layout
 * the prefill's cuBLASLt GEMM reads). Used by the MatMul, Gemm and
 * kiln.GemmEpilogue emitters (e_linalg.c, e_fused_gemm.c) where the
 * per-shape choice (kn_gemm_choose, codegen/cuda/gemm_choice.c) says
 * `gemv`; checked by kiln-gemv-check (tools/gemv_check.c).
 *
 * Design (bandwidth: every B byte read once, coalesced):
 *   - a block of KN_GEMV_THREADS threads (KN_GEMV_WARPS warps) owns
 *     COLS = 32 * vec adjacent columns; lane l of every warp owns the vec
 *     columns at l * vec and reads them as one 16/8/4/2-byte load per row
 *     of B (vec = 16 bytes' worth when N allows, else less), so a warp
 *     reads 32 * vec contiguous elements of a row;
 *   - K goes in tiles of KN_GEMV_TK rows: the tile of A's M rows is
 *     staged in shared memory (as float), warp w takes the tile's rows
 *     w * 8 ... w * 8 + 7 (8 loads in flight per lane), float
 *     accumulators acc[M][vec] per lane;
 *   - the warps' sums meet in shared memory, added in warp order;
 *   - when N alone gives fewer than KN_GEMV_TARGET_BLOCKS blocks, K is
 *     also split across gridDim.y blocks (chunks of whole tiles): each
 *     writes float partial sums into node scratch [splits, M, N], then
 *     counts itself on its column block's counter (persistent memory,
 *     zero between launches); the last block to finish adds the partials
 *     in split order, runs the epilogue and resets the counter — the
 *     same sums in the same order on every run, and the same as the
 *     two-kernel form (kn_gemv_combine after the main kernel with cnt
 *     NULL), which kiln-gemv-check compares against;
 *   - the SwiGlu form (a packed gate|up product whose only reader is a
 *     kiln.SwiGlu): lane l also reads the up column N + j of each gate
 *     column j it owns, two sets of accumulators, partials [splits, M,
 *     2N] as the packed product's; the output is silu(g)·u with g and u
 *     rounded to T first (the product as stored), then the SwiGlu
 *     kernel's double arithmetic (e_fused_act.c), rounded once — the same
 *     bytes as the GEMV + SwiGlu launches (kn_gemv_plan_swiglu keeps the
 *     packed product's K split);
 *   - the epilogue (kn_gemv_epi) runs in double with the CPU reference's
 *     rounding points (runtime/cpu/k_fused_gemm.c): MatMul form: product
 *     rounded to T, + bias rounded; Gemm form: alpha·P + beta·C rounded
 *     once; then the activation rounded, then + residual.
 * Every launch shape and the split count follow from (dtype, M, N, K)
 * alone (kn_gemv_plan), so plans are deterministic. */
#ifndef KILN_CODEGEN_CUDA_GEMV_KERNELS_H
#define KILN_CODEGEN_CUDA_GEMV_KERNELS_H

#include "codegen/cuda/emit.h"

#define KN_GEMV_MAX_ROWS 8
#define KN_GEMV_WARPS 8
#define KN_GEMV_THREADS (32 * KN_GEMV_WARPS)
#define KN_GEMV_TK (8 * KN_GEMV_WARPS) /* K rows per tile: 8 per warp */
#define KN_GEMV_TARGET_BLOCKS 264      /* 2 per SM of a 132-SM GPU */
#define KN_GEMV_ENTRY "kn_gemv"
#define KN_GEMV_COMBINE_ENTRY "kn_gemv_combine"

/* What a kernel source depends on. */
typedef struct kn_gemv_spec {
    kn_dtype dtype;  /* A, B, bias, residual and Y: float32, float16 or bfloat16 */
    int rows;        /* M, 1 ... KN_GEMV_MAX_ROWS */
    int vec;         /* columns per lane: 1, 2, 4 or 8 (vec * element size <= 16) */
    bool gemm;       /* Gemm rounding (alpha·P + beta·C once) instead of MatMul's (P, then + bias) */
    bool bias, res;
    const char *act; /* CUDA expression of double v (params a, b as p.a, p.b); NULL or "v": none */
    bool swiglu;     /* B is [K, 2N] (gate | up): Y[M, N] = SwiGlu of the packed product (no other epilogue) */
} kn_gemv_spec;

/* The kernels' by-value parameters. Bias element (r, n) is at
 * r * c_rs + n * c_cs, residual (r, n) at r * r_rs + n * r_cs. */
typedef struct kn_gemv_params {
    int64_t n, k, kchunk, splits;
    int64_t c_rs, c_cs, r_rs, r_cs;
    double alpha, beta, a, b;
} kn_gemv_params;

/* Kernel args, in order: a, b, bias, res, y, part (float [splits, M, N]
 * scratch), cnt (u32 per column block, gridDim.x of them: zero before
 * the launch, zero after it; NULL: leave the partials to the combine
 * kernel), params; the combine kernel: part, bias, res, y, params.
 * Absent bias / residual / part / cnt (no K split): any pointer (never
 * read). */

/* The source holding both entries (malloc'd; NULL with a reason in err
 * for a spec the kernel does not take). */
char *kn_gemv_source(const kn_gemv_spec *s, char *err, size_t err_size);

/* The widest vec for dtype and N (N % vec == 0, at most 16 bytes). */
int kn_gemv_vec(kn_dtype dt, int64_t n);
/* kchunk and splits of *p (n and k set) for vec columns per lane; the
 * launch grid of kn_gemv. */
kn_dim3 kn_gemv_plan(int vec, kn_gemv_params *p);
/* The SwiGlu form's plan (p->n = N, the output's columns; B has 2N):
 * kchunk and splits as kn_gemv_plan gives them for the packed product's
 * 2N columns (so each column's float sums are the ones the plain GEMV
 * adds), the grid over N columns at vec = kn_gemv_vec(dt, N). */
kn_dim3 kn_gemv_plan_swiglu(kn_dtype dt, kn_gemv_params *p);
/* Float scratch bytes for the partial sums (0 when splits == 1); the
 * SwiGlu form needs twice this (both halves). */
size_t kn_gemv_scratch_bytes(int rows, const kn_gemv_params *p);

/* A product for kn_emit_gemv: A is the node's input 0 (M rows of K,
 * contiguous), B its input 1 ([K, N] row-major), Y its output 0 ([M, N]
 * elements); bias and residual by input index (-1: none) with the
 * strides in p, which also carries alpha, beta and the activation's a, b
 * (n, k, kchunk and splits are set by kn_emit_gemv). */
typedef struct kn_gemv_node {
    int64_t m, n, k;
    bool gemm;
    int bias_in, res_in;
    const char *act;
    bool swiglu; /* n is the SwiGlu's N, B [K, 2N]; Y the reader's output (kn_emit_take_swiglu) */
    kn_gemv_params p;
} kn_gemv_node;

/* Registers the kernel and appends its one launch (the K split's
 * counters in the program's persistent memory, KN_ARG_PERSIST); counts
 * the product (kn_emit_count_gemv). */
kn_status kn_emit_gemv(kn_emit *e, kn_dtype dt, const kn_gemv_node *g);

/* The kiln.SwiGlu kernel (e_fused_act.c), which the GEMV's SwiGlu form
 * must match bit for bit (kiln-gemv-check runs both): entry
 * KN_SWIGLU_ENTRY(const T *gate, const T *up, T *y, kn_swiglu_params),
 * one thread per output; the params hold the output's dims and each
 * input's element strides along them (0 where it broadcasts; packed:
 * both the input's strides, up at an offset of N elements). */
#define KN_SWIGLU_ENTRY "kn_SwiGlu"
typedef struct kn_swiglu_params {
    int64_t n, rank;
    int64_t dims[8], sg[8], su[8];
} kn_swiglu_params;
/* Appends the kernel's source for float dtype dt to src. */
void kn_swiglu_source(kn_sb *src, kn_dtype dt);

/* The CUDA expression (double v, params p.a / p.b) of a kiln.GemmEpilogue
 * activation name ("" and "none": "v"), or NULL for an unknown name
 * (e_fused_gemm.c). */
const char *kn_gemm_act_expr(const char *name);

/* ---- the per-shape choice (gemm_choice.c) ---- */

/* A recorded table of choices: rows "arch dtype M N K epilogue choice"
 * (tab- or space-separated; '#' starts a comment): arch "sm_90", dtype
 * float32|float16|bfloat16, epilogue as kn_gemm_epi_key writes it, any of
 * them "*" for any value; choice gemv|cublaslt. */
typedef struct kn_gemm_table_row {
    uint32_t arch; /* 0: any */
    kn_dtype dtype; /* KN_UNDEFINED: any */
    int64_t m, n, k; /* 0: any */
    char epi[24];    /* "*": any */
    bool gemv;
} kn_gemm_table_row;

typedef struct kn_gemm_table {
    const kn_allocator *a;
    kn_gemm_table_row *rows; /* from a */
    uint32_t n;
} kn_gemm_table;

/* The table shipped with kiln (codegen/cuda/gemm_choice.tsv, embedded at
 * build time), NUL-terminated. */
extern const char kn_gemm_table_default[];

/* Parses `text` into *out (rows from allocator a, NULL: the default;
 * free with kn_gemm_table_free): KN_OK, KN_ERR_INVALID for a malformed
 * row with a message "NAME:LINE: ..." in d, KN_ERR_NOMEM. On failure *out
 * holds nothing. */
kn_status kn_gemm_table_parse(const char *text, const char *name, const kn_allocator *a, kn_diag *d,
                              kn_gemm_table *out);
void kn_gemm_table_free(kn_gemm_table *t);

/* "-" (none), else "bias", "act", "res" joined by '+' in that order. */
void kn_gemm_epi_key(bool bias, bool act, bool res, char *buf, size_t n);

/* GEMV or cuBLASLt for one product: the first table row matching (arch,
 * dtype, M, N, K, epi) among the rows naming the arch, else the first
 * among the arch "*" rows, else the rule: GEMV for M <=
 * KN_GEMM_GEMV_RULE_ROWS. Only shapes the GEMV takes (M <=
 * KN_GEMV_MAX_ROWS, float32/float16/bfloat16) can get it. */
#define KN_GEMM_GEMV_RULE_ROWS 4
bool kn_gemm_choose_gemv(const kn_gemm_table *t, uint32_t arch, kn_dtype dt, int64_t m, int64_t n, int64_t k,
                         const char *epi);

#endif
