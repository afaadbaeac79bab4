/* kiln compile: ONNX model → plan. Import, verify, run the pass pipeline,
 * check that the target runs every op (all missing ops reported at once),
 * optionally quantize and measure the quantization's error
 * (quant_cli.c, quant_eval.c), write the plan atomically. */
#include "cli.h"
#include "codegen/cuda/gemv_kernels.h"
#include "codegen/cuda/lower.h"
#include "codegen/plan_write.h"
#include "embed.h"
#include "ir/stats.h"
#include "pass_report.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "quant_cli.h"
#include "quant_eval.h"
#include "runtime/plan_format.h"
#include "runtime/cpu/kernel.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage[] =
    "usage: kiln compile MODEL.onnx [-o MODEL.plan] [--target cpu|cuda] [options]\n"
    "\n"
    "Compiles an ONNX model into a plan file that `kiln run` executes.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   the plan to write (default: MODEL with .plan for .onnx)\n"
    "  --target T          cpu (the reference backend, default) or cuda: kernels\n"
    "                      generated and compiled with NVRTC (no GPU needed)\n"
    "  --shape NAME=DIMS   target cuda builds for static shapes: the size of an\n"
    "                      input's symbolic dims, e.g. --shape x=1x3x224x224\n"
    "  --prefill-chunk P   target cuda, decoders (causal attention over the KV\n"
    "                      cache): the plan holds a prefill program for [1, P]\n"
    "                      new tokens (default 64) and a decode program for [1, 1]\n"
    "  --decode-batch LIST target cuda, decoders: the batch sizes B of the decode\n"
    "                      programs, [B, 1] each, for batched decode steps (default\n"
    "                      1,8; 1 is always there; at most 4 others, up to 256)\n"
    "  --prefill-batch LIST target cuda, decoders: batch sizes B of prefill\n"
    "                      programs [B, P] that prefill B prompts in one run\n"
    "                      (default none; with --decode-batch's at most 4 others)\n"
    "  --arch LIST         target cuda: SM architectures (default sm_80,sm_86,\n"
    "                      sm_89,sm_90); PTX of the last is added for newer GPUs\n"
    "  --precision P       fp32 (default), fp16 or bf16: float32 computation runs\n"
    "                      in P; inputs and outputs keep the model's dtypes\n"
    "  --keep-fp32 PATTERN keep matching nodes (name or op type, shell pattern)\n"
    "                      in float32; may be repeated\n"
    "  --quantize MODE     int4-weight-only (or int4), int8-weight-only: MatMul/Gemm\n"
    "                      weights quantized group-wise into com.microsoft\n"
    "                      MatMulNBits; int8: W8A8, per-output-channel int8\n"
    "                      weights and int8 activations (QuantizeLinear or the\n"
    "                      per-token chain + MatMulIntegerToFloat)\n"
    "  --act-scale S       --quantize int8: static (default; per tensor, the\n"
    "                      thresholds of --calib) or dynamic (per token,\n"
    "                      max |x_row| / 127 at run time; no --calib needed;\n"
    "                      what decoder language models need)\n"
    "  --smooth ALPHA      --quantize int8: SmoothQuant, migration strength in\n"
    "                      (0, 1] (e.g. 0.5); needs --calib (per-channel max |x|)\n"
    "  --group-size N      weights per scale along K (default 128; a power of\n"
    "                      two from 16)\n"
    "  --method M          weight-only: rtn (default; as onnxruntime's\n"
    "                      quantizer), gptq or awq (both need --calib)\n"
    "  --calib FILE        the calibration table of `kiln calibrate` (XᵀX and\n"
    "                      mean |x| per layer input; activation thresholds)\n"
    "  --act-order         --method gptq: columns by decreasing Hessian diagonal\n"
    "  --damp X            --method gptq: dampening (default 0.01)\n"
    "  --keep-fp PATTERN   --quantize: keep matching MatMul/Gemm nodes (name or\n"
    "                      op type, shell pattern) unquantized; may be repeated\n"
    "  --eval DIR          run the float and the quantized model on the CPU over\n"
    "                      DIR's samples (as kiln calibrate --data reads them)\n"
    "                      and report per-layer NMSE / SNR and end-to-end error\n"
    "  --eval-text FILE    the same over a text (decoder language models):\n"
    "                      also perplexity, float vs quantized\n"
    "  --eval-window N     tokens per --eval-text window (default 256)\n"
    "  --eval-max N        use at most N samples (windows)\n"
    "  --quant-report F    write the report as JSON to F\n"
    "  --max-nmse X        gate: every float output's end-to-end NMSE <= X\n"
    "  --max-ppl-increase P gate: quantized perplexity at most P % above float\n"
    "                      (needs --eval-text). A failing gate writes no plan\n"
    "                      (the report is written) and exits with code 3\n"
    "  --max-seq-len N     language models (kv-cache pass): tokens one sequence\n"
    "                      may hold in the runtime's paged KV cache (default 2048)\n"
    "  --kv-cache-mem SIZE bytes of the KV cache pool (suffix K, M or G: KiB,\n"
    "                      MiB, GiB); default: one sequence of --max-seq-len\n"
    "  --kv-block-size N   tokens per KV cache block (default 16)\n"
    "  --no-cache          target cuda: do not use the kernel cache\n"
    "                      ($XDG_CACHE_HOME/kiln, else ~/.cache/kiln)\n"
    "  --attn-kernel K     target cuda: fast (default: the flash kernel where it\n"
    "                      fits), tc (its tensor-core form for fp16/bf16) or\n"
    "                      simple (one thread per row, double)\n"
    "  --gemm-table FILE   target cuda: GEMV or cuBLASLt per matrix-product shape\n"
    "                      from FILE instead of the built-in table\n"
    "                      (codegen/cuda/gemm_choice.tsv; docs/cuda-codegen.md)\n"
    "  -O0, -O1, -O2       optimization level (default -O2): -O0 runs only what\n"
    "                      correctness needs (infer-shapes, precision)\n"
    "  --passes            list the optimizer's passes in order, with the level\n"
    "                      each belongs to, and exit\n"
    "  --disable-pass NAME do not run pass NAME; may be repeated\n"
    "  --dump-after=PASS   print the IR after PASS (or 'all') to stderr;\n"
    "                      PASS:DIR writes DIR/NN-PASS.txt instead\n"
    "  --verify-each       verify the graph after every pass (always on in\n"
    "                      debug builds)\n"
    "  --report FILE.json  node counts per op type before and after the\n"
    "                      pipeline and per pass; with --target cuda also the\n"
    "                      plan's CUDA steps and kernels at -O0 and as compiled\n"
    "  --tokenizer FILE    embed this Hugging Face tokenizer.json (and the\n"
    "                      tokenizer_config.json / generation_config.json next\n"
    "                      to it) in the plan; default: tokenizer.json next to\n"
    "                      the model, when there is one\n"
    "  --no-tokenizer      embed no tokenizer (with --eval-text, --tokenizer\n"
    "                      then only names the text's tokenizer)\n"
    "  -h, --help\n"
    "\n"
    "The plan is written to a temporary file and renamed into place: an error\n"
    "or Ctrl-C never leaves a half-written plan. Building twice gives the same bytes.\n"
    "Exit codes: 0 ok, 1 bad input or usage, 2 internal error, 3 a quality gate failed.\n";

/* The figures of a lowered CUDA program for --report. */
static void cuda_counts(const kn_cu_program *p, kn_pass_report_cuda *c)
{
    memset(c, 0, sizeof *c);
    c->steps = p->n_steps;
    c->kernels = p->n_kernels;
    for (uint32_t i = 0; i < p->n_steps; i++) {
        uint32_t k = p->steps[i].kind;
        c->launches += k == KN_CU_STEP_LAUNCH;
        c->gemms += k == KN_CU_STEP_GEMM;
        if (k == KN_CU_STEP_GEMM) {
            kn_plan_cu_gemm gd;
            memcpy(&gd, p->params + p->steps[i].gemm, sizeof gd);
            c->gemms_int8 += gd.dtype == KN_I8;
        }
        c->copies += k == KN_CU_STEP_COPY;
        c->host += k == KN_CU_STEP_HOST;
    }
}

/* --report with --target cuda: the lowered program of the same model
 * through the -O0 passes only (the level-0 ones: shapes, precision,
 * quantization), for the "before" figures. Lowering only: kernels are
 * not compiled. On failure *note says why (and nothing is filled). */
static void cuda_baseline(const char *in, const kn_pipeline_opts *po, const kn_compile_cuda_opts *co,
                          kn_pass_report_cuda *c, bool *ok, char *note, size_t n_note)
{
    *ok = false;
    kn_diag *q = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    kn_cu_program prog;
    memset(&prog, 0, sizeof prog);
    if (!q) {
        snprintf(note, n_note, "out of memory");
        return;
    }
    kn_precision_opts prec = po->precision ? *po->precision : (kn_precision_opts){0};
    kn_quantize_opts quant = po->quantize ? *po->quantize : (kn_quantize_opts){0};
    prec.verbose = quant.verbose = false;
    kn_pipeline_opts o0 = {0};
    o0.level = KN_OPT_O0;
    o0.precision = po->precision ? &prec : NULL;
    o0.quantize = po->quantize ? &quant : NULL;
    o0.disabled = po->disabled;
    o0.n_disabled = po->n_disabled;
    kn_status s = kn_import_onnx_file(in, NULL, NULL, q, &g);
    if (s == KN_OK)
        s = kn_compile_graph(g, "cuda", &o0, q);
    kn_cuda_lower_stats ls;
    if (s == KN_OK)
        s = kn_cuda_lower(g, co->shapes, co->n_shapes, NULL, q, &prog, &ls);
    if (s == KN_OK) {
        cuda_counts(&prog, c);
        *ok = true;
    } else {
        const char *msg = NULL;
        kn_severity sev;
        for (size_t i = 0; i < kn_diag_size(q) && !msg; i++) {
            const char *m = kn_diag_message(q, i, &sev);
            msg = sev == KN_ERROR ? m : NULL;
        }
        snprintf(note, n_note, "lowering the -O0 graph failed: %s", msg ? msg : kn_status_str(s));
    }
    kn_cu_program_free(&prog);
    kn_graph_destroy(g);
    kn_diag_destroy(q);
}

/* "1x3x224x224" → dims; false when malformed. */
static bool parse_dims(const char *s, kn_cuda_shape *out)
{
    out->rank = 0;
    if (!*s)
        return true; /* a scalar */
    while (*s) {
        char *e;
        long long v = strtoll(s, &e, 10);
        if (e == s || v < 0 || out->rank >= 64)
            return false;
        out->dims[out->rank++] = v;
        if (*e == 'x')
            e++;
        else if (*e)
            return false;
        s = e;
    }
    return true;
}

static bool parse_archs(const char *s, uint32_t *archs, uint32_t *n)
{
    *n = 0;
    while (*s) {
        if (strncmp(s, "sm_", 3) == 0)
            s += 3;
        char *e;
        long v = strtol(s, &e, 10);
        if (e == s || v < 50 || v > 200 || *n >= 7)
            return false;
        archs[(*n)++] = (uint32_t)v;
        s = *e == ',' ? e + 1 : e;
        if (*e && *e != ',')
            return false;
    }
    return *n > 0;
}

/* The model, with the kv-cache pass's options as metadata. */
static kn_status import_model(const char *in, const char *kv_max, const char *kv_mem, const char *kv_block,
                              kn_diag *d, kn_graph **g)
{
    KN_TRY(kn_import_onnx_file(in, NULL, NULL, d, g));
    /* the kv-cache pass reads its options from the model's metadata */
    if (kv_max[0])
        KN_TRY(kn_rw_set_meta(*g, "kiln.kv.max_seq_len", kv_max));
    if (kv_mem[0])
        KN_TRY(kn_rw_set_meta(*g, "kiln.kv.mem", kv_mem));
    if (kv_block[0])
        KN_TRY(kn_rw_set_meta(*g, "kiln.kv.block_size", kv_block));
    return KN_OK;
}

/* Target cuda: *g through the pipeline with kv-cache kept. A decoder
 * graph (kn_compile_is_decoder) is lowered twice (a copy in *pg, kn_graph_clone):
 * *prog the decode program, *pprog the prefill one, *decoder set. A
 * graph with kiln.PagedAttention that is not one, or whose two lowerings
 * do not agree, is made again as before (kv-cache disabled; one program,
 * lowered later by the caller), with a note saying why. */
static kn_status compile_cuda_decoder(const char *in, const char *kv_max, const char *kv_mem, const char *kv_block,
                                      kn_pipeline_opts *po, const kn_compile_cuda_opts *co, int64_t P, bool shapes_given,
                                      kn_diag *d, kn_graph **g, kn_graph **pg, kn_cu_program *prog,
                                      kn_cu_program *pprog, bool *decoder, const uint32_t *batches, uint32_t n_dec,
                                      uint32_t n_batches, kn_graph **bgs, kn_cu_program *bprogs, uint32_t *n_bprogs)
{
    char why[512];
    *decoder = false;
    KN_TRY(kn_compile_graph_kv(*g, po, d));
    bool dec = kn_compile_is_decoder(*g, why, sizeof why);
    if (dec && shapes_given) {
        kn_diag_add(d, KN_ERROR, "compile: --shape: a decoder for target cuda is lowered for [1, --prefill-chunk] "
                                 "and [1, 1] new tokens; leave --shape out");
        return KN_ERR_INVALID;
    }
    if (dec) {
        /* the prefill lowering's graph: a copy of the optimized one (its
         * weights shared, not imported and converted again) */
        kn_status s = kn_graph_clone(*g, pg);
        if (s != KN_OK)
            return s;
        /* the batched programs (decode [B, 1] for the first n_dec, then
         * prefill [B, P]), each on another copy (made before the lowerings
         * bind their shapes); one that does not agree with the graph is
         * left out with a note */
        for (uint32_t k = 0; s == KN_OK && k < n_batches; k++)
            s = kn_graph_clone(*g, &bgs[k]);
        if (s == KN_OK)
            s = kn_compile_cuda_decoder(*g, *pg, P, co, d, prog, pprog, why, sizeof why);
        for (uint32_t k = 0; s == KN_OK && k < n_batches; k++) {
            char bwhy[512];
            kn_status bs = kn_compile_cuda_batch(*g, bgs[k], batches[k], k < n_dec ? 1 : P, co, d, &bprogs[*n_bprogs],
                                                 bwhy, sizeof bwhy);
            if (bs == KN_OK)
                ++*n_bprogs;
            else if (bs == KN_ERR_UNSUPPORTED)
                kn_diag_add(d, KN_NOTE, "target cuda: no %s program for batch %u: %s", k < n_dec ? "decode" : "prefill",
                            batches[k], bwhy);
            else
                s = bs;
        }
        if (s == KN_OK) {
            *decoder = true;
            return KN_OK;
        }
        if (s != KN_ERR_UNSUPPORTED)
            return s;
    }
    if (!why[0])
        return KN_OK; /* no kiln.PagedAttention: as compiled */
    kn_diag_add(d, KN_NOTE,
                "target cuda: %s: the KV cache stays in the graph (past/present inputs and outputs; kiln run "
                "--device cuda cannot run it as a decoder)",
                why);
    for (uint32_t k = 0; k < n_batches; k++) {
        kn_graph_destroy(bgs[k]);
        bgs[k] = NULL;
    }
    kn_graph_destroy(*g);
    *g = NULL;
    kn_graph_destroy(*pg);
    *pg = NULL;
    kn_pipeline_opts again = *po;
    again.observe = NULL;
    KN_TRY(import_model(in, kv_max, kv_mem, kv_block, d, g));
    return kn_compile_graph(*g, "cuda", &again, d);
}

/* --decode-batch / --prefill-batch (`opt`) LIST: comma-separated batch
 * sizes from 1 to 256; the ones above 1, ascending and distinct, into b
 * (at most KN_PLAN_MAX_DECODE_BATCHES), the list as given back into
 * `text`. */
static bool parse_batches(const char *opt, const char *v, uint32_t *b, uint32_t *n, char *text, size_t cap)
{
    *n = 0;
    for (const char *p = v;;) {
        char *e;
        long long x = strtoll(p, &e, 10);
        if (e == p || x < 1 || x > 256 || (*e && *e != ',')) {
            fprintf(stderr, "error: compile: %s expects batch sizes from 1 to 256 like 1,8, got '%s'\n", opt, v);
            return false;
        }
        if (x > 1) {
            if (*n && (uint32_t)x <= b[*n - 1]) {
                fprintf(stderr, "error: compile: %s: list the batch sizes ascending, each once ('%s')\n", opt, v);
                return false;
            }
            if (*n == KN_PLAN_MAX_DECODE_BATCHES) {
                fprintf(stderr, "error: compile: %s: at most %u batch sizes besides 1 ('%s')\n", opt,
                        KN_PLAN_MAX_DECODE_BATCHES, v);
                return false;
            }
            b[(*n)++] = (uint32_t)x;
        }
        if (!*e)
            break;
        p = e + 1;
    }
    snprintf(text, cap, "%s", v);
    return true;
}

/* The whole of a text file, NUL-terminated (malloc'd), or NULL. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    bool ok = true;
    for (;;) {
        if (cap - n < 4096) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (!nb) {
                ok = false;
                break;
            }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    ok = ok && buf && !ferror(f);
    fclose(f);
    if (!ok) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static void on_signal(int sig)
{
    kn_plan_cleanup_on_signal();
    signal(sig, SIG_DFL);
    raise(sig);
}

int kn_cmd_compile(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *target = "cpu";
    kn_cuda_shape *shapes = calloc((size_t)argc + 1, sizeof *shapes);
    uint32_t archs[8], n_archs = 0, n_shapes = 0;
    bool no_cache = false;
    int attn_kernel = 0;
    kn_gemm_table gemm_table = {0};
    const char *gemm_table_path = NULL;
    char kv_max[32] = "", kv_mem[32] = "", kv_block[32] = "";
    int rc = KN_EXIT_BAD_INPUT;
    const char **keep = calloc((size_t)argc + 1, sizeof *keep);
    kn_precision_opts prec = {KN_F32, keep, 0, true};
    const char **keep_fp = calloc((size_t)argc + 1, sizeof *keep_fp);
    kn_quantize_opts quant = {0, 128, NULL, NULL, keep_fp, 0, true};
    const char *quant_name = NULL, *method_name = NULL, *calib_path = NULL;
    kn_qmethod qm;
    memset(&qm, 0, sizeof qm);
    bool act_order = false, damp_given = false, act_scale_given = false;
    double damp = 0.01;
    kn_qeval_opts ev = {0};
    ev.window = 256;
    ev.max_samples = (size_t)-1;
    ev.max_nmse = -1;
    ev.max_ppl_increase = -1;
    kn_calib_table *table = NULL;
    kn_graph *fg = NULL, *eg = NULL;
    char quant_desc[128] = "";
    const char *prec_name = "fp32";
    const char **disabled = calloc((size_t)argc + 1, sizeof *disabled);
    char *dump_pass = NULL;
    const char *report_path = NULL, *tokenizer = NULL;
    bool no_tokenizer = false;
    kn_embed emb;
    memset(&emb, 0, sizeof emb);
    kn_pass_report *report = NULL;
    kn_pipeline_opts po = {0};
#ifndef NDEBUG
    po.verify_each = true;
#endif
    po.precision = &prec;
    po.disabled = disabled;
    po.quantize = &quant;
    char *def_out = NULL;
    kn_diag *d = NULL;
    kn_graph *g = NULL;
    kn_cu_program prog, pprog;
    memset(&prog, 0, sizeof prog);
    memset(&pprog, 0, sizeof pprog);
    kn_graph *pg = NULL;
    long long prefill_chunk = 64;
    bool decoder = false;
    /* --decode-batch: the batched decode programs' B (1, the decode program, is implicit) */
    uint32_t batches[KN_PLAN_MAX_DECODE_BATCHES] = {8}, n_batches = 1, n_bprogs = 0;
    char batch_list[64] = "1,8";
    /* --prefill-batch: the batched prefill programs' B, after them in the same sections */
    uint32_t pbatches[KN_PLAN_MAX_DECODE_BATCHES], n_pbatches = 0;
    char pbatch_list[64] = "";
    kn_graph *bgs[KN_PLAN_MAX_DECODE_BATCHES] = {0};
    kn_cu_program bprogs[KN_PLAN_MAX_DECODE_BATCHES];
    memset(bprogs, 0, sizeof bprogs);
    if (!shapes || !keep || !disabled || !keep_fp) {
        free(shapes);
        free(keep);
        free(keep_fp);
        free(disabled);
        return KN_EXIT_INTERNAL;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            rc = KN_EXIT_OK;
            goto done;
        } else if (strcmp(a, "--passes") == 0) {
            size_t n;
            const kn_pass_info *p = kn_pipeline_passes(&n);
            for (size_t k = 0; k < n; k++)
                printf("%2zu  %-14s -O%d  %s\n", k + 1, p[k].name, p[k].level, p[k].what);
            rc = KN_EXIT_OK;
            goto done;
        } else if ((strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) && has) {
            out = argv[++i];
        } else if (strcmp(a, "--target") == 0 && has) {
            target = argv[++i];
        } else if (strncmp(a, "--target=", 9) == 0) {
            target = a + 9;
        } else if (strcmp(a, "--prefill-chunk") == 0 && has) {
            char *e;
            prefill_chunk = strtoll(argv[++i], &e, 10);
            if (*e || prefill_chunk < 2 || prefill_chunk > 65536) {
                fprintf(stderr, "error: compile: --prefill-chunk expects a token count from 2 to 65536, got '%s'\n",
                        argv[i]);
                goto done;
            }
        } else if (strcmp(a, "--decode-batch") == 0 && has) {
            if (!parse_batches("--decode-batch", argv[++i], batches, &n_batches, batch_list, sizeof batch_list))
                goto done;
        } else if (strcmp(a, "--prefill-batch") == 0 && has) {
            if (!parse_batches("--prefill-batch", argv[++i], pbatches, &n_pbatches, pbatch_list, sizeof pbatch_list))
                goto done;
        } else if (strcmp(a, "--shape") == 0 && has) {
            const char *v = argv[++i], *eq = strchr(v, '=');
            if (!eq || eq == v || !parse_dims(eq + 1, &shapes[n_shapes])) {
                fprintf(stderr, "error: compile: --shape expects NAME=DIMS like x=1x3x224x224, got '%s'\n", v);
                goto done;
            }
            shapes[n_shapes++].name = strndup(v, (size_t)(eq - v));
        } else if (strcmp(a, "--arch") == 0 && has) {
            if (!parse_archs(argv[++i], archs, &n_archs)) {
                fprintf(stderr, "error: compile: --arch expects a list like sm_80,sm_90, got '%s'\n", argv[i]);
                goto done;
            }
        } else if (strcmp(a, "--precision") == 0 && has) {
            prec_name = argv[++i];
            prec.to = strcmp(prec_name, "fp32") == 0   ? KN_F32
                      : strcmp(prec_name, "fp16") == 0 ? KN_F16
                      : strcmp(prec_name, "bf16") == 0 ? KN_BF16
                                                       : KN_UNDEFINED;
            if (prec.to == KN_UNDEFINED) {
                fprintf(stderr, "error: compile: --precision must be fp32, fp16 or bf16, got '%s'\n", prec_name);
                goto done;
            }
        } else if (strcmp(a, "--keep-fp32") == 0 && has) {
            keep[prec.n_keep++] = argv[++i];
        } else if (strcmp(a, "--quantize") == 0 && has) {
            quant_name = argv[++i];
            quant.mode = KN_QUANT_WEIGHT_ONLY;
            quant.bits = strcmp(quant_name, "int4-weight-only") == 0 || strcmp(quant_name, "int4") == 0 ? 4
                         : strcmp(quant_name, "int8-weight-only") == 0                                  ? 8
                         : strcmp(quant_name, "int8") == 0                                              ? 8
                                                                                                        : 0;
            if (strcmp(quant_name, "int8") == 0)
                quant.mode = KN_QUANT_W8A8;
            if (!quant.bits) {
                fprintf(stderr,
                        "error: compile: --quantize must be int8, int4-weight-only (int4) or int8-weight-only, got "
                        "'%s'\n",
                        quant_name);
                goto done;
            }
        } else if (strcmp(a, "--method") == 0 && has) {
            method_name = argv[++i];
            if (strcmp(method_name, "rtn") && strcmp(method_name, "gptq") && strcmp(method_name, "awq")) {
                fprintf(stderr, "error: compile: --method must be rtn, gptq or awq, got '%s'\n", method_name);
                goto done;
            }
        } else if (strcmp(a, "--act-scale") == 0 && has) {
            const char *v = argv[++i];
            act_scale_given = true;
            if (strcmp(v, "static") && strcmp(v, "dynamic")) {
                fprintf(stderr, "error: compile: --act-scale must be static or dynamic, got '%s'\n", v);
                goto done;
            }
            quant.act_dynamic = strcmp(v, "dynamic") == 0;
        } else if (strcmp(a, "--smooth") == 0 && has) {
            char *end;
            double v = strtod(argv[++i], &end);
            if (*end || end == argv[i] || !(v > 0 && v <= 1)) {
                fprintf(stderr, "error: compile: --smooth must be a number in (0, 1] (SmoothQuant's alpha), got "
                                "'%s'\n",
                        argv[i]);
                goto done;
            }
            quant.smooth_alpha = v;
        } else if (strcmp(a, "--calib") == 0 && has) {
            calib_path = argv[++i];
        } else if (strcmp(a, "--act-order") == 0) {
            act_order = true;
        } else if (strcmp(a, "--damp") == 0 && has) {
            char *end;
            damp = strtod(argv[++i], &end);
            damp_given = true;
            if (*end || end == argv[i] || !(damp > 0 && damp <= 1)) {
                fprintf(stderr, "error: compile: --damp must be a number in (0, 1], got '%s'\n", argv[i]);
                goto done;
            }
        } else if (strcmp(a, "--eval") == 0 && has) {
            ev.data = argv[++i];
        } else if (strcmp(a, "--eval-text") == 0 && has) {
            ev.text = argv[++i];
        } else if (strcmp(a, "--eval-window") == 0 && has) {
            char *end;
            long long v = strtoll(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 2 || v > (1 << 20)) {
                fprintf(stderr, "error: compile: --eval-window must be 2 to 1048576 tokens, got '%s'\n", argv[i]);
                goto done;
            }
            ev.window = v;
        } else if (strcmp(a, "--eval-max") == 0 && has) {
            char *end;
            long long v = strtoll(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1) {
                fprintf(stderr, "error: compile: --eval-max must be a positive count, got '%s'\n", argv[i]);
                goto done;
            }
            ev.max_samples = (size_t)v;
        } else if (strcmp(a, "--quant-report") == 0 && has) {
            ev.report = argv[++i];
        } else if ((strcmp(a, "--max-nmse") == 0 || strcmp(a, "--max-ppl-increase") == 0) && has) {
            char *end;
            double v = strtod(argv[++i], &end);
            if (*end || end == argv[i] || !(v >= 0) || !isfinite(v)) {
                fprintf(stderr, "error: compile: %s must be a number >= 0, got '%s'\n", a, argv[i]);
                goto done;
            }
            if (a[6] == 'n')
                ev.max_nmse = v;
            else
                ev.max_ppl_increase = v;
        } else if (strcmp(a, "--group-size") == 0 && has) {
            char *end;
            long long v = strtoll(argv[++i], &end, 10);
            if (*end || v < 16 || v > (1 << 20) || (v & (v - 1))) {
                fprintf(stderr, "error: compile: --group-size must be a power of two from 16, got '%s'\n", argv[i]);
                goto done;
            }
            quant.group_size = v;
        } else if (strcmp(a, "--keep-fp") == 0 && has) {
            keep_fp[quant.n_keep++] = argv[++i];
        } else if ((strcmp(a, "--max-seq-len") == 0 || strcmp(a, "--kv-block-size") == 0) && has) {
            uint64_t v;
            char *e;
            v = strtoull(argv[i + 1], &e, 10);
            if (e == argv[i + 1] || *e || argv[i + 1][0] == '-' || v == 0 || v > (a[2] == 'm' ? UINT32_MAX : 65536)) {
                fprintf(stderr, "error: compile: %s expects a positive integer%s, got '%s'\n", a,
                        a[2] == 'm' ? "" : " up to 65536", argv[i + 1]);
                goto done;
            }
            snprintf(a[2] == 'm' ? kv_max : kv_block, 32, "%llu", (unsigned long long)v);
            i++;
        } else if (strcmp(a, "--kv-cache-mem") == 0 && has) {
            uint64_t v;
            if (!kn_cli_parse_size(argv[++i], &v)) {
                fprintf(stderr, "error: compile: --kv-cache-mem expects a size like 64M or 1048576, got '%s'\n",
                        argv[i]);
                goto done;
            }
            snprintf(kv_mem, sizeof kv_mem, "%llu", (unsigned long long)v);
        } else if (strcmp(a, "--no-cache") == 0) {
            no_cache = true;
        } else if (strcmp(a, "--gemm-table") == 0 && has) {
            gemm_table_path = argv[++i];
        } else if (strcmp(a, "--attn-kernel") == 0 && has) {
            const char *v = argv[++i];
            if (strcmp(v, "fast") != 0 && strcmp(v, "simple") != 0 && strcmp(v, "tc") != 0) {
                fprintf(stderr, "error: compile: --attn-kernel must be fast, simple or tc, got '%s'\n", v);
                goto done;
            }
            attn_kernel = strcmp(v, "simple") == 0 ? 1 : strcmp(v, "tc") == 0 ? 2 : 0;
        } else if (strcmp(a, "-O0") == 0 || strcmp(a, "-O1") == 0 || strcmp(a, "-O2") == 0) {
            po.level = (kn_opt_level)(a[2] - '0' + 1);
        } else if (strcmp(a, "--disable-pass") == 0 && has) {
            disabled[po.n_disabled++] = argv[++i];
        } else if (strncmp(a, "--disable-pass=", 15) == 0) {
            disabled[po.n_disabled++] = a + 15;
        } else if (strncmp(a, "--dump-after=", 13) == 0 || (strcmp(a, "--dump-after") == 0 && has)) {
            free(dump_pass);
            dump_pass = strdup(a[12] == '=' ? a + 13 : argv[++i]);
            if (!dump_pass) {
                rc = KN_EXIT_INTERNAL;
                goto done;
            }
            char *colon = strchr(dump_pass, ':');
            if (colon) {
                *colon = 0;
                po.dump_dir = colon + 1;
            }
            po.dump_after = dump_pass;
        } else if (strcmp(a, "--verify-each") == 0) {
            po.verify_each = true;
        } else if (strcmp(a, "--report") == 0 && has) {
            report_path = argv[++i];
        } else if (strcmp(a, "--tokenizer") == 0 && has) {
            tokenizer = argv[++i];
        } else if (strncmp(a, "--tokenizer=", 12) == 0) {
            tokenizer = a + 12;
        } else if (strcmp(a, "--no-tokenizer") == 0) {
            no_tokenizer = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: compile: unknown or incomplete option '%s'\n\n%s", a, usage);
            goto done;
        } else if (in) {
            fprintf(stderr, "error: compile: more than one model given\n\n%s", usage);
            goto done;
        } else {
            in = a;
        }
    }
    if (!in) {
        fprintf(stderr, "error: compile: no model given\n\n%s", usage);
        goto done;
    }
    for (uint32_t k = 0; k < po.n_disabled; k++)
        if (!kn_pipeline_find(disabled[k])) {
            size_t n;
            const kn_pass_info *p = kn_pipeline_passes(&n);
            fprintf(stderr, "error: compile: --disable-pass: unknown pass '%s'; the passes are:", disabled[k]);
            for (size_t j = 0; j < n; j++)
                fprintf(stderr, " %s", p[j].name);
            fputc('\n', stderr);
            goto done;
        }
    {
        const char *why = NULL;
        bool gptq = method_name && strcmp(method_name, "gptq") == 0, awq = method_name && strcmp(method_name, "awq") == 0;
        bool evaluating = ev.data || ev.text;
        if ((method_name || calib_path || act_order || damp_given) && !quant_name)
            why = "--method, --calib, --act-order and --damp need --quantize";
        else if (method_name && quant.mode == KN_QUANT_W8A8)
            why = "--method is for the weight-only modes (--quantize int8 quantizes weights per channel by rounding)";
        else if ((gptq || awq) && !calib_path)
            why = gptq ? "--method gptq needs a calibration table (--calib CALIB.json from kiln calibrate)"
                       : "--method awq needs a calibration table (--calib CALIB.json from kiln calibrate)";
        else if ((act_scale_given || quant.smooth_alpha > 0) && quant.mode != KN_QUANT_W8A8)
            why = "--act-scale and --smooth are options of --quantize int8 (W8A8)";
        else if (quant.mode == KN_QUANT_W8A8 && !calib_path && quant.smooth_alpha > 0)
            why = "--smooth needs a calibration table with the per-channel max |x| of each layer input (--calib "
                  "CALIB.json from kiln calibrate)";
        else if (quant.mode == KN_QUANT_W8A8 && !calib_path && !quant.act_dynamic)
            why = "--quantize int8 with static activation scales needs a calibration table (--calib CALIB.json from "
                  "kiln calibrate), or use --act-scale dynamic";
        else if ((act_order || damp_given) && !gptq)
            why = "--act-order and --damp are options of --method gptq";
        else if (ev.data && ev.text)
            why = "--eval and --eval-text together";
        else if (evaluating && !quant_name)
            why = "--eval and --eval-text compare the quantized model with the float one: give --quantize";
        else if (!evaluating && (ev.report || ev.max_nmse >= 0 || ev.max_ppl_increase >= 0))
            why = "--quant-report, --max-nmse and --max-ppl-increase need --eval DIR or --eval-text FILE";
        else if (ev.max_ppl_increase >= 0 && !ev.text)
            why = "--max-ppl-increase needs --eval-text";
        if (why) {
            fprintf(stderr, "error: compile: %s\n", why);
            goto done;
        }
        qm.algo = gptq ? KN_QALGO_GPTQ : awq ? KN_QALGO_AWQ : KN_QALGO_RTN;
        qm.gptq.percdamp = damp;
        qm.gptq.act_order = act_order;
        qm.table_path = calib_path;
        if (gptq || awq) {
            quant.quantize = kn_qmethod_weight;
            quant.ctx = &qm;
            quant.method = gptq ? (act_order ? "GPTQ, act-order" : "GPTQ") : "AWQ";
        }
        if (quant.mode == KN_QUANT_W8A8 && calib_path) {
            quant.act_amax = kn_qmethod_act;
            quant.act_absmax = kn_qmethod_absmax;
            quant.ctx = &qm;
        }
        if (quant_name) {
            if (quant.mode == KN_QUANT_W8A8)
                snprintf(quant_desc, sizeof quant_desc, "int8 W8A8 %s%s", quant.act_dynamic ? "dynamic" : "static",
                         quant.smooth_alpha > 0 ? " smooth" : "");
            else
                snprintf(quant_desc, sizeof quant_desc, "%s g%lld %s%s", quant.bits == 4 ? "int4" : "int8",
                         (long long)quant.group_size, method_name ? method_name : "rtn", act_order ? " act-order" : "");
        }
    }
    if (strcmp(target, "cpu") != 0 && strcmp(target, "cuda") != 0) {
        fprintf(stderr, "error: compile: unknown target '%s' (cpu or cuda)\n", target);
        goto done;
    }
    if (!out) {
        size_t n = strlen(in);
        def_out = malloc(n + 6);
        if (!def_out) {
            rc = KN_EXIT_INTERNAL;
            goto done;
        }
        memcpy(def_out, in, n + 1);
        if (n > 5 && strcmp(in + n - 5, ".onnx") == 0)
            def_out[n - 5] = 0;
        strcat(def_out, ".plan");
        out = def_out;
    }
    d = kn_diag_create(NULL, stderr);
    if (!d) {
        rc = KN_EXIT_INTERNAL;
        goto done;
    }
    if (gemm_table_path) {
        char *text = read_text(gemm_table_path);
        if (!text) {
            fprintf(stderr, "error: compile: --gemm-table: cannot read '%s'\n", gemm_table_path);
            goto done;
        }
        kn_status ts = kn_gemm_table_parse(text, gemm_table_path, NULL, d, &gemm_table);
        free(text);
        if (ts != KN_OK)
            goto done;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (tokenizer && no_tokenizer && !ev.text) {
        fprintf(stderr, "error: compile: --tokenizer and --no-tokenizer together\n");
        goto done;
    }
    /* with --eval-text, --tokenizer also names the text's tokenizer, and
     * --no-tokenizer then only keeps it out of the plan */
    kn_status s = kn_embed_collect(in, no_tokenizer ? NULL : tokenizer, no_tokenizer, d, &emb);
    if (s == KN_OK && calib_path) {
        s = kn_calib_table_read(calib_path, d, &table);
        qm.table = table;
    }
    if (s == KN_OK)
        s = import_model(in, kv_max, kv_mem, kv_block, d, &g);
    if (s == KN_OK && report_path) {
        report = kn_pass_report_new(g);
        po.observe = kn_pass_report_observe;
        po.observe_ctx = report;
        s = report ? KN_OK : KN_ERR_NOMEM;
    }
    bool cuda = strcmp(target, "cuda") == 0;
    if (s == KN_OK && n_batches + n_pbatches > KN_PLAN_MAX_DECODE_BATCHES) {
        kn_diag_add(d, KN_ERROR, "compile: --decode-batch and --prefill-batch: at most %u batch sizes above 1 together",
                    KN_PLAN_MAX_DECODE_BATCHES);
        s = KN_ERR_INVALID;
    }
    for (uint32_t k = 0; s == KN_OK && k < n_pbatches; k++)
        batches[n_batches + k] = pbatches[k];
    if (s == KN_OK && cuda) {
        /* a decoder keeps kv-cache + kv-mask: one plan, prefill and decode programs */
        kn_compile_cuda_opts co = {shapes, n_shapes, archs, n_archs, no_cache, true, attn_kernel, false,
                                   gemm_table_path ? &gemm_table : NULL};
        s = compile_cuda_decoder(in, kv_max, kv_mem, kv_block, &po, &co, (int64_t)prefill_chunk, n_shapes > 0, d,
                                 &g, &pg, &prog, &pprog, &decoder, batches, n_batches, n_batches + n_pbatches, bgs,
                                 bprogs, &n_bprogs);
    } else if (s == KN_OK) {
        s = kn_compile_graph(g, target, &po, d);
    }
    if (s == KN_OK && qm.algo != KN_QALGO_RTN && qm.n_done)
        fprintf(stderr, "note: %s: %u layers; summed layer output error on the calibration data %.4g (RTN: %.4g)\n",
                quant.method, qm.n_done, qm.err_q, qm.err_rtn);
    bool gate_failed = false;
    if (s == KN_OK && (ev.data || ev.text)) {
        /* The graphs evaluated: the model through the same pipeline, float
         * and quantized, with kv-cache (its graph needs the runtime's paged
         * cache) and fuse-gemm (it merges gate/up MatMuls, whose outputs the
         * per-layer figures compare) off; the quantized layers are the
         * plan's (GPTQ/AWQ results come from the callback's cache). */
        const char **dis = calloc((size_t)po.n_disabled + 3, sizeof *dis);
        kn_diag *quiet = kn_diag_create(NULL, NULL);
        s = dis && quiet ? KN_OK : KN_ERR_NOMEM;
        kn_pipeline_opts epo = po;
        if (s == KN_OK) {
            for (uint32_t k = 0; k < po.n_disabled; k++)
                dis[k] = po.disabled[k];
            dis[po.n_disabled] = "kv-cache";
            dis[po.n_disabled + 1] = "fuse-gemm";
            epo.disabled = dis;
            epo.n_disabled = po.n_disabled + 2;
            epo.observe = NULL;
            epo.dump_after = NULL;
        }
        kn_pipeline_opts fpo = epo;
        fpo.quantize = NULL;
        if (s == KN_OK)
            s = kn_import_onnx_file(in, NULL, NULL, d, &fg);
        if (s == KN_OK)
            s = kn_compile_graph(fg, target, &fpo, quiet);
        if (s == KN_OK)
            s = kn_import_onnx_file(in, NULL, NULL, d, &eg);
        if (s == KN_OK)
            s = kn_compile_graph(eg, target, &epo, quiet);
        if (s != KN_OK && quiet)
            kn_diag_add(d, KN_ERROR, "compile: --eval: the models to evaluate did not compile");
        kn_diag_destroy(quiet);
        free(dis);
        ev.model = in;
        ev.quantize = quant_desc;
        ev.tokenizer = tokenizer;
        if (s == KN_OK)
            s = kn_quant_eval(fg, eg, &ev, d, &gate_failed);
    }
    if (s == KN_OK && gate_failed) {
        fprintf(stderr, "error: compile: no plan written (%s not changed)\n", out);
        rc = KN_EXIT_GATE;
        goto done;
    }
    if (s == KN_OK && cuda && !decoder) {
        kn_compile_cuda_opts co = {shapes, n_shapes, archs, n_archs, no_cache, true, attn_kernel, false,
                                   gemm_table_path ? &gemm_table : NULL};
        s = kn_compile_cuda(g, &co, d, &prog);
        if (s == KN_OK && report) {
            kn_pass_report_cuda before, after;
            char note[1024] = "";
            bool ok;
            cuda_counts(&prog, &after);
            cuda_baseline(in, &po, &co, &before, &ok, note, sizeof note);
            s = kn_pass_report_set_cuda(report, ok ? &before : NULL, &after, ok ? NULL : note);
        }
    }
    if (s == KN_OK && report)
        s = kn_pass_report_write(report, report_path, in, po.level ? (int)po.level - 1 : 2, d);
    if (s == KN_OK) {
        char opts[512];
        int n = snprintf(opts, sizeof opts, "--target %s --precision %s -O%d", target, prec_name,
                         po.level ? (int)po.level - 1 : 2);
        if (quant_name && n > 0 && (size_t)n < sizeof opts)
            n += snprintf(opts + n, sizeof opts - (size_t)n, " --quantize %s --group-size %lld", quant_name,
                          (long long)quant.group_size);
        if (method_name && n > 0 && (size_t)n < sizeof opts)
            n += snprintf(opts + n, sizeof opts - (size_t)n, " --method %s%s", method_name,
                          act_order ? " --act-order" : "");
        if (quant.mode == KN_QUANT_W8A8 && n > 0 && (size_t)n < sizeof opts)
            n += snprintf(opts + n, sizeof opts - (size_t)n, " --act-scale %s", quant.act_dynamic ? "dynamic" : "static");
        if (quant.smooth_alpha > 0 && n > 0 && (size_t)n < sizeof opts)
            n += snprintf(opts + n, sizeof opts - (size_t)n, " --smooth %g", quant.smooth_alpha);
        if (decoder && n > 0 && (size_t)n < sizeof opts)
            snprintf(opts + n, sizeof opts - (size_t)n, " --prefill-chunk %lld --decode-batch %s%s%s", prefill_chunk,
                     batch_list, n_pbatches ? " --prefill-batch " : "", n_pbatches ? pbatch_list : "");
        const kn_cu_program *bp[KN_PLAN_MAX_DECODE_BATCHES];
        for (uint32_t k = 0; k < n_bprogs; k++)
            bp[k] = &bprogs[k];
        kn_plan_options po = {opts, target, cuda ? &prog : NULL, emb.items, emb.n, decoder ? &pprog : NULL,
                              bp, decoder ? n_bprogs : 0};
        s = kn_plan_write(g, &po, out, d);
    }
    uint32_t n_bpre = 0; /* batched prefill programs among them */
    for (uint32_t k = 0; k < n_bprogs; k++)
        n_bpre += bprogs[k].kv_tokens > 1;
    if (s == KN_OK)
        printf("wrote %s (target %s, %u nodes%s%s%s%s%s)\n", out, target, g->n_nodes,
               !decoder            ? ""
               : n_bprogs > n_bpre ? ", a decoder: prefill and decode programs, batched decode programs"
                                   : ", a decoder: prefill and decode programs",
               decoder && n_bpre ? ", batched prefill programs" : "",
               cuda ? ", kernels for every arch + PTX" : "",
               emb.n ? "; embedded " : "", emb.summary);
    rc = kn_cli_exit_code(s);
done:
    kn_gemm_table_free(&gemm_table);
    kn_cu_program_free(&prog);
    kn_cu_program_free(&pprog);
    for (uint32_t k = 0; k < KN_PLAN_MAX_DECODE_BATCHES; k++) {
        kn_cu_program_free(&bprogs[k]);
        kn_graph_destroy(bgs[k]);
    }
    kn_graph_destroy(pg);
    kn_embed_free(&emb);
    kn_graph_destroy(g);
    kn_graph_destroy(fg);
    kn_graph_destroy(eg);
    kn_qmethod_free(&qm);
    kn_calib_table_free(table);
    kn_diag_destroy(d);
    free(def_out);
    for (uint32_t i = 0; i < n_shapes; i++)
        free((char *)shapes[i].name);
    free(shapes);
    free(keep);
    free(keep_fp);
    free(disabled);
    free(dump_pass);
    kn_pass_report_free(report);
    return rc;
}
