/* kiln compile: ONNX model → plan. Import, verify, run the pass pipeline,
 * check that the target runs every op (all missing ops reported at once),
 * write the plan atomically. */
#include "cli.h"
#include "codegen/cuda/lower.h"
#include "codegen/plan_write.h"
#include "embed.h"
#include "ir/stats.h"
#include "pass_report.h"
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "runtime/cpu/kernel.h"

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
    "  --arch LIST         target cuda: SM architectures (default sm_80,sm_86,\n"
    "                      sm_89,sm_90); PTX of the last is added for newer GPUs\n"
    "  --precision P       fp32 (default), fp16 or bf16: float32 computation runs\n"
    "                      in P; inputs and outputs keep the model's dtypes\n"
    "  --keep-fp32 PATTERN keep matching nodes (name or op type, shell pattern)\n"
    "                      in float32; may be repeated\n"
    "  --quantize MODE     int4-weight-only or int8-weight-only: MatMul/Gemm\n"
    "                      weights quantized group-wise (round to nearest,\n"
    "                      asymmetric) into com.microsoft MatMulNBits\n"
    "  --group-size N      weights per scale along K (default 128; a power of\n"
    "                      two from 16)\n"
    "  --keep-fp PATTERN   --quantize: keep matching MatMul/Gemm nodes (name or\n"
    "                      op type, shell pattern) unquantized; may be repeated\n"
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
    "                      pipeline and per pass\n"
    "  --tokenizer FILE    embed this Hugging Face tokenizer.json (and the\n"
    "                      tokenizer_config.json / generation_config.json next\n"
    "                      to it) in the plan; default: tokenizer.json next to\n"
    "                      the model, when there is one\n"
    "  --no-tokenizer      embed no tokenizer\n"
    "  -h, --help\n"
    "\n"
    "The plan is written to a temporary file and renamed into place: an error\n"
    "or Ctrl-C never leaves a half-written plan. Building twice gives the same bytes.\n";

static bool cpu_runs(kn_op op) { return kn_cpu_kernel(op) != NULL; }

/* "123", "64K", "2M", "1G" (binary units) → bytes; false when malformed. */
static bool parse_size(const char *s, uint64_t *out)
{
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (e == s || *s == '-' || v == 0)
        return false;
    uint64_t mul = 1;
    if (*e == 'K' || *e == 'k')
        mul = 1ull << 10;
    else if (*e == 'M' || *e == 'm')
        mul = 1ull << 20;
    else if (*e == 'G' || *e == 'g')
        mul = 1ull << 30;
    if (mul > 1) {
        e++;
        if (strcmp(e, "iB") == 0 || strcmp(e, "B") == 0)
            e += strlen(e);
    }
    if (*e || v > UINT64_MAX / mul)
        return false;
    *out = v * mul;
    return true;
}

kn_status kn_compile_graph(kn_graph *g, const char *target, const kn_pipeline_opts *po, kn_diag *d)
{
    if (strcmp(target, "cpu") != 0 && strcmp(target, "cuda") != 0) {
        kn_diag_add(d, KN_ERROR, "unknown target '%s' (cpu or cuda)", target);
        return KN_ERR_INVALID;
    }
    KN_TRY(kn_graph_verify(g, d));
    kn_pipeline_opts def = {0};
    def.verify_each = true;
    if (!po)
        po = &def;
    if (strcmp(target, "cuda") == 0) {
        /* target cuda has no paged-attention kernels yet: keep past/present */
        const char *dis[65];
        kn_pipeline_opts o = *po;
        if (o.n_disabled >= 64) {
            kn_diag_add(d, KN_ERROR, "too many --disable-pass options (64 at most)");
            return KN_ERR_LIMIT;
        }
        for (uint32_t i = 0; i < o.n_disabled; i++)
            dis[i] = o.disabled[i];
        dis[o.n_disabled++] = "kv-cache";
        o.disabled = dis;
        KN_TRY(kn_pipeline_run(g, &o, d));
    } else {
        KN_TRY(kn_pipeline_run(g, po, d));
    }
    /* the CPU backend runs every plan (target cuda probes shapes with it) */
    return kn_graph_report_unsupported(g, cpu_runs, "cpu", d);
}

static const uint32_t default_archs[] = {80, 86, 89, 90};

/* --attn-kernel simple|tc: marks attention nodes `_attn_kernel` 0 or 2 for
 * the emitters (codegen/cuda/e_fused_attn.c). */
kn_status kn_compile_mark_attention(kn_graph *g, int64_t mode)
{
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        kn_node *n = &g->nodes[i];
        if (n->op != KN_OP_Attention)
            continue;
        kn_attr *a = kn_graph_alloc(g, ((size_t)n->n_attrs + 1) * sizeof *a);
        if (!a)
            return KN_ERR_NOMEM;
        if (n->n_attrs)
            memcpy(a, n->attrs, n->n_attrs * sizeof *a);
        memset(&a[n->n_attrs], 0, sizeof *a);
        KN_TRY(kn_graph_intern_cstr(g, "_attn_kernel", &a[n->n_attrs].name));
        a[n->n_attrs].kind = KN_ATTR_INT;
        a[n->n_attrs].u.i = mode;
        n->attrs = a;
        n->n_attrs++;
    }
    return KN_OK;
}

kn_status kn_compile_cuda(kn_graph *g, const kn_compile_cuda_opts *o, kn_diag *d, kn_cu_program *prog)
{
    kn_cuda_lower_stats ls;
    if (o->attn_kernel)
        KN_TRY(kn_compile_mark_attention(g, o->attn_kernel == 1 ? 0 : 2));
    KN_TRY(kn_cuda_lower(g, o->shapes, o->n_shapes, NULL, d, prog, &ls));
    kn_nvrtc_options no = {o->n_archs ? o->archs : default_archs, o->n_archs ? o->n_archs : 4, o->no_cache, NULL, 0};
    kn_nvrtc_stats ns;
    kn_status s = kn_cuda_compile(prog, &no, d, &ns);
    if (s != KN_OK) {
        kn_cu_program_free(prog);
        return s;
    }
    if (o->verbose)
        fprintf(stderr,
                "note: target cuda: %u nodes folded at compile time, %u steps (%u on the host), %u kernels x %u images "
                "(%u compiled, %u from the cache); pool %llu bytes (naive %llu)\n",
                ls.nodes_folded, ls.steps, ls.nodes_host, ls.kernels, no.n_archs + 1, ns.compiled, ns.cached,
                (unsigned long long)prog->pool_bytes, (unsigned long long)prog->naive_bytes);
    return KN_OK;
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
    char kv_max[32] = "", kv_mem[32] = "", kv_block[32] = "";
    int rc = KN_EXIT_BAD_INPUT;
    const char **keep = calloc((size_t)argc + 1, sizeof *keep);
    kn_precision_opts prec = {KN_F32, keep, 0, true};
    const char **keep_fp = calloc((size_t)argc + 1, sizeof *keep_fp);
    kn_quantize_opts quant = {0, 128, NULL, NULL, keep_fp, 0, true};
    const char *quant_name = NULL;
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
    kn_cu_program prog;
    memset(&prog, 0, sizeof prog);
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
            quant.bits = strcmp(quant_name, "int4-weight-only") == 0   ? 4
                         : strcmp(quant_name, "int8-weight-only") == 0 ? 8
                                                                       : 0;
            if (!quant.bits) {
                fprintf(stderr, "error: compile: --quantize must be int4-weight-only or int8-weight-only, got '%s'\n",
                        quant_name);
                goto done;
            }
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
            if (!parse_size(argv[++i], &v)) {
                fprintf(stderr, "error: compile: --kv-cache-mem expects a size like 64M or 1048576, got '%s'\n",
                        argv[i]);
                goto done;
            }
            snprintf(kv_mem, sizeof kv_mem, "%llu", (unsigned long long)v);
        } else if (strcmp(a, "--no-cache") == 0) {
            no_cache = true;
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
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (tokenizer && no_tokenizer) {
        fprintf(stderr, "error: compile: --tokenizer and --no-tokenizer together\n");
        goto done;
    }
    kn_status s = kn_embed_collect(in, tokenizer, no_tokenizer, d, &emb);
    if (s == KN_OK)
        s = kn_import_onnx_file(in, NULL, NULL, d, &g);
    /* the kv-cache pass reads its options from the model's metadata */
    if (s == KN_OK && kv_max[0])
        s = kn_rw_set_meta(g, "kiln.kv.max_seq_len", kv_max);
    if (s == KN_OK && kv_mem[0])
        s = kn_rw_set_meta(g, "kiln.kv.mem", kv_mem);
    if (s == KN_OK && kv_block[0])
        s = kn_rw_set_meta(g, "kiln.kv.block_size", kv_block);
    if (s == KN_OK && report_path) {
        report = kn_pass_report_new(g);
        po.observe = kn_pass_report_observe;
        po.observe_ctx = report;
        s = report ? KN_OK : KN_ERR_NOMEM;
    }
    if (s == KN_OK)
        s = kn_compile_graph(g, target, &po, d);
    if (s == KN_OK && report)
        s = kn_pass_report_write(report, report_path, in, po.level ? (int)po.level - 1 : 2, d);
    bool cuda = strcmp(target, "cuda") == 0;
    if (s == KN_OK && cuda) {
        kn_compile_cuda_opts co = {shapes, n_shapes, archs, n_archs, no_cache, true, attn_kernel};
        s = kn_compile_cuda(g, &co, d, &prog);
    }
    if (s == KN_OK) {
        char opts[512];
        int n = snprintf(opts, sizeof opts, "--target %s --precision %s -O%d", target, prec_name,
                         po.level ? (int)po.level - 1 : 2);
        if (quant_name && n > 0 && (size_t)n < sizeof opts)
            snprintf(opts + n, sizeof opts - (size_t)n, " --quantize %s --group-size %lld", quant_name,
                     (long long)quant.group_size);
        kn_plan_options po = {opts, target, cuda ? &prog : NULL, emb.items, emb.n};
        s = kn_plan_write(g, &po, out, d);
    }
    if (s == KN_OK)
        printf("wrote %s (target %s, %u nodes%s%s%s)\n", out, target, g->n_nodes,
               cuda ? ", kernels for every arch + PTX" : "", emb.n ? "; embedded " : "", emb.summary);
    rc = kn_cli_exit_code(s);
done:
    kn_cu_program_free(&prog);
    kn_embed_free(&emb);
    kn_graph_destroy(g);
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
