/* Shared by the kiln command's subcommands. */
#ifndef KILN_TOOLS_CLI_H
#define KILN_TOOLS_CLI_H

#include "kiln/kiln.h"

#include <stdbool.h>
#include <stdint.h>

/* Exit codes of every kiln command. */
enum { KN_EXIT_OK = 0, KN_EXIT_BAD_INPUT = 1, KN_EXIT_INTERNAL = 2, KN_EXIT_GATE = 3 /* a quality gate failed */ };

/* Maps a status to an exit code: bad input/usage → 1, bugs and resource
 * failures → 2. */
int kn_cli_exit_code(kn_status s);

/* A byte count: "1048576", or with a binary suffix "64K", "2M", "1G" (also
 * "KiB"/"KB"...); false when malformed, zero or too large. */
bool kn_cli_parse_size(const char *s, uint64_t *out);

int kn_cmd_inspect(int argc, char **argv);
int kn_cmd_compile(int argc, char **argv);
int kn_cmd_run(int argc, char **argv);
int kn_cmd_bench(int argc, char **argv);
int kn_cmd_calibrate(int argc, char **argv);

/* kiln run's text generation (tools/generate.c): whether the arguments ask
 * for it (--prompt, --prompt-ids, --prompts-file), and running it. */
bool kn_run_wants_generate(int argc, char **argv);
int kn_run_generate(int argc, char **argv, const char *usage);

/* Verifies g, runs the pass pipeline with options po (NULL: -O2, every
 * pass verified) and checks that `target` runs every op (reporting all
 * that it does not, at once). */
struct kn_pipeline_opts;
kn_status kn_compile_graph(kn_graph *g, const char *target, const struct kn_pipeline_opts *po, kn_diag *d);

/* kiln bench for language models (tools/bench_llm.c): taken when the
 * arguments have --prompt-len, --gen-len or --batch. */
bool kn_bench_is_llm(int argc, char **argv);
int kn_bench_llm(int argc, char **argv);

struct kn_cu_program;
struct kn_cuda_shape;
typedef struct kn_compile_cuda_opts {
    const struct kn_cuda_shape *shapes;
    uint32_t n_shapes;
    const uint32_t *archs; /* NULL/0: sm_80, sm_86, sm_89, sm_90 */
    uint32_t n_archs;
    bool no_cache;
    bool verbose;          /* a note with kernel and memory figures on stderr */
    int attn_kernel;       /* --attn-kernel: 0 fast (default), 1 simple, 2 tc (tensor cores for fp16/bf16) */
    bool sampling;         /* also carry the token sampling kernels (decoders: the logits output's dtype) */
    const struct kn_gemm_table *gemm_table; /* --gemm-table: GEMV or cuBLASLt per shape; NULL: the built-in */
} kn_compile_cuda_opts;

/* Marks every Attention node `_attn_kernel` = mode (0 simple, 2 tensor
 * cores) for the CUDA emitters: kiln compile --attn-kernel. */
kn_status kn_compile_mark_attention(kn_graph *g, int64_t mode);

/* Lowers g (already through kn_compile_graph) for target cuda and compiles
 * its kernels: *prog receives the program for kn_plan_write. */
kn_status kn_compile_cuda(kn_graph *g, const kn_compile_cuda_opts *o, kn_diag *d, struct kn_cu_program *prog);

/* kn_compile_graph for target cuda with the kv-cache pass kept (a decoder
 * becomes kiln.PagedAttention nodes; see tools/compile_decoder.c). */
kn_status kn_compile_graph_kv(kn_graph *g, const struct kn_pipeline_opts *po, kn_diag *d);

/* Whether g (through kn_compile_graph_kv) is a decoder graph the CUDA
 * session runs: it has kiln.PagedAttention nodes, every one causal = 1
 * without a mask; its inputs are input_ids and optionally position_ids,
 * integer [B, S] with B 1 or symbolic and S symbolic. False with `why`
 * saying what fails ("" when g has no kiln.PagedAttention at all). */
bool kn_compile_is_decoder(const kn_graph *g, char *why, size_t n);

/* Lowers two copies of one decoder graph (kn_compile_is_decoder; both
 * through the same pipeline): `dec` for [1, 1] new tokens into *dprog and
 * `pre` for [1, P] into *pprog, compiles the kernels of both and checks
 * that the prefill program can run on dec's graph and constants (the plan
 * keeps only dec): the same nodes and values, every weight it reads equal
 * in both, no host step. KN_ERR_UNSUPPORTED with `why` when they do not
 * agree (the caller falls back); else the errors of kn_compile_cuda. */
kn_status kn_compile_cuda_decoder(kn_graph *dec, kn_graph *pre, int64_t P, const kn_compile_cuda_opts *o,
                                  kn_diag *d, struct kn_cu_program *dprog, struct kn_cu_program *pprog, char *why,
                                  size_t n);
/* A batched program: `bg` (another copy of the graph `dec` was lowered
 * from) lowered for [B, T] new tokens into *bprog — T = 1 a batched decode
 * program (kiln compile --decode-batch), T = the prefill chunk P a batched
 * prefill program (--prefill-batch); both go in the batched programs'
 * sections — checked against dec's graph and constants as the prefill
 * program is. KN_ERR_UNSUPPORTED with `why` when it cannot run on dec's
 * graph (or the graph's batch is static); else the errors of
 * kn_compile_cuda. */
kn_status kn_compile_cuda_batch(const kn_graph *dec, kn_graph *bg, int64_t B, int64_t T, const kn_compile_cuda_opts *o,
                                kn_diag *d, struct kn_cu_program *bprog, char *why, size_t n);

#endif
