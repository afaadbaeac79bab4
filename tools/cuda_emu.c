/* kiln-cuda-emu: checks target-cuda code generation without a GPU. Each
 * backend-test case is lowered for target cuda (static shapes from its
 * first test data set), its kernels are compiled with NVRTC for every
 * arch, and then the generated kernels are run ON THE HOST: each kernel
 * source is compiled with the host C++ compiler against a shim of the CUDA
 * built-ins (tools/emu_host.c: threads one after another, or cooperative
 * threads for kernels with barriers and shuffles), GEMM steps run on a host GEMM, and
 * the outputs are compared with the reference. Prints one line per case
 * and "N passed, N failed, N skipped". A check of the generated code's
 * logic, not of GPU behaviour (races, memory model, launch limits). */
#include "cli.h"
#include "codegen/cuda/gemv_kernels.h"
#include "codegen/cuda/lower.h"
#include "compare.h"
#include "emu_host.h"
#include "emu_program.h"
#include "conformance.h"
#include "passes/passes.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"
#include "tensor_io.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint64_t *uniq;          /* hashes of the distinct kernels seen */
static uint32_t n_uniq, cap_uniq;
static uint32_t nvrtc_failed; /* images NVRTC could not compile, all cases */

static void note_kernels(const kn_cu_program *p)
{
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        bool seen = false;
        for (uint32_t i = 0; i < n_uniq && !seen; i++)
            seen = uniq[i] == p->kernels[k].hash;
        if (seen)
            continue;
        if (n_uniq == cap_uniq) {
            cap_uniq = cap_uniq ? cap_uniq * 2 : 256;
            uniq = realloc(uniq, cap_uniq * sizeof *uniq);
        }
        uniq[n_uniq++] = p->kernels[k].hash;
    }
}
static bool use_nvrtc = true;
/* the optimizer's options (-O, --disable-pass): the lowered graph is the
 * one `kiln compile` would build, fused ops included */
static const char *disabled_passes[32];
static kn_pipeline_opts popts = {.verify_each = true, .disabled = disabled_passes};
static bool freeze = false; /* inputs after the first become constants (their test data) */
static kn_precision_opts prec = {KN_F32, NULL, 0, false};
static int attn_mode = -1;  /* --attn-kernel: -1 default (fast), 0 simple, 2 tensor cores */
static kn_gemm_table gemm_table; /* --gemm-table: GEMV or cuBLASLt per product shape */
static bool have_gemm_table;

/* --gemm-table FILE read and parsed into gemm_table; false with a message. */
static bool load_gemm_table(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    long n = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (text = malloc((size_t)n + 1)) && fread(text, 1, (size_t)n, f) == (size_t)n)
        text[n] = 0;
    else
        n = -1;
    if (f)
        fclose(f);
    if (n < 0) {
        fprintf(stderr, "kiln-cuda-emu: --gemm-table: cannot read '%s'\n", path);
        free(text);
        return false;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_status s = d ? kn_gemm_table_parse(text, path, NULL, d, &gemm_table) : KN_ERR_NOMEM;
    kn_diag_destroy(d);
    free(text);
    have_gemm_table = s == KN_OK;
    return have_gemm_table;
}

/* ---- cases ---- */

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

typedef enum { R_PASS, R_FAIL, R_SKIP } result;

static result run_case(const char *dir, double rtol, double atol, char *msg, size_t msg_size, uint32_t *n_kernels)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    kn_cu_program prog;
    memset(&prog, 0, sizeof prog);
    result r = R_FAIL;
    kn_rt_tensor *ins[64] = {0}, *outs[64] = {0};
    kn_cuda_shape *shapes = NULL;
    kn_status s = kn_import_onnx_file(path, NULL, NULL, d, &g);
    const char *skip = s == KN_OK ? kn_conformance_skip_reason(g) : NULL;
    if (skip) {
        snprintf(msg, msg_size, "%s", skip);
        r = R_SKIP;
        goto out;
    }
    if (s == KN_OK && (g->n_inputs > 64 || g->n_outputs > 64))
        s = KN_ERR_UNSUPPORTED;
    if (s == KN_OK)
        s = kn_compile_graph(g, "cuda", &popts, d);
    shapes = calloc(g ? g->n_inputs + 1 : 1, sizeof *shapes);
    uint32_t n_shapes = 0;
    for (uint32_t i = 0; s == KN_OK && i < g->n_inputs; i++) {
        snprintf(path, sizeof path, "%s/test_data_set_0/input_%u.pb", dir, i);
        if (!is_file(path))
            continue;
        s = kn_tensor_read_pb(path, NULL, d, &ins[i], NULL);
        if (s == KN_OK) {
            kn_conformance_fix_bf16(ins[i], &g->values[g->inputs[i]]);
            shapes[n_shapes].name = g->values[g->inputs[i]].name;
            shapes[n_shapes].rank = ins[i]->rank;
            for (int32_t k = 0; k < ins[i]->rank && k < 64; k++)
                shapes[n_shapes].dims[k] = ins[i]->dims[k];
            n_shapes++;
        }
    }
    if (s == KN_OK && freeze && g->n_inputs > 1) {
        /* inputs 1.. become constants holding their test data, so ops whose
         * shape-deciding inputs are graph inputs in the test can be lowered */
        for (uint32_t i = 1; i < g->n_inputs && s == KN_OK; i++) {
            if (!ins[i])
                continue;
            kn_value *v = &g->values[g->inputs[i]];
            kn_tensor *t = kn_graph_alloc(g, sizeof *t);
            int64_t *dims = kn_graph_alloc(g, ((size_t)ins[i]->rank + 1) * sizeof *dims);
            void *data = kn_graph_alloc(g, ins[i]->nbytes + 1);
            if (!t || !dims || !data) {
                s = KN_ERR_NOMEM;
                break;
            }
            memcpy(dims, ins[i]->dims, (size_t)ins[i]->rank * sizeof *dims);
            memcpy(data, ins[i]->data, ins[i]->nbytes);
            *t = (kn_tensor){v->name, ins[i]->dtype, ins[i]->rank, dims, ins[i]->numel, ins[i]->nbytes, data, false};
            v->kind = KN_VAL_CONST;
            v->tensor = t;
            v->type.dtype = t->dtype;
            v->type.shape.rank = t->rank;
            v->type.shape.dims = kn_graph_alloc(g, ((size_t)t->rank + 1) * sizeof(kn_dim));
            for (int32_t k = 0; v->type.shape.dims && k < t->rank; k++)
                v->type.shape.dims[k] = (kn_dim){dims[k], NULL};
        }
        g->n_inputs = 1;
        n_shapes = n_shapes > 1 ? 1 : n_shapes;
        for (uint32_t i = 1; i < 64; i++) {
            kn_rt_tensor_free(NULL, ins[i]);
            ins[i] = NULL;
        }
    }
    if (s == KN_OK && attn_mode >= 0)
        s = kn_compile_mark_attention(g, attn_mode);
    if (s == KN_OK)
        s = kn_cuda_lower_opt(g, shapes, n_shapes, (const kn_rt_tensor *const *)ins,
                              &(kn_cuda_lower_opts){have_gemm_table ? &gemm_table : NULL, 90}, d, &prog, NULL);
    if (s == KN_OK && use_nvrtc) {
        static const uint32_t archs[] = {80, 86, 89, 90};
        kn_nvrtc_options no = {archs, 4, false, NULL, 0};
        kn_nvrtc_stats ns;
        s = kn_cuda_compile(&prog, &no, d, &ns);
        nvrtc_failed += ns.failed;
    }
    if (s != KN_OK) {
        /* the first error, or the first warning when unsupported */
        const char *m = NULL;
        for (size_t i = 0; i < kn_diag_size(d) && !m; i++) {
            kn_severity sev;
            const char *t = kn_diag_message(d, i, &sev);
            if (sev == KN_ERROR || s == KN_ERR_UNSUPPORTED)
                m = t;
        }
        snprintf(msg, msg_size, "%s", m ? m : kn_status_str(s));
        r = s == KN_ERR_UNSUPPORTED ? R_SKIP : R_FAIL;
        goto out;
    }
    *n_kernels += prog.n_kernels;
    note_kernels(&prog);
    s = kn_emu_run_program(g, &prog, ins, outs, NULL, msg, msg_size);
    if (s != KN_OK) {
        if (!msg[0])
            snprintf(msg, msg_size, "%s", kn_status_str(s));
        goto out;
    }
    r = R_PASS;
    for (uint32_t i = 0; i < g->n_outputs && r == R_PASS; i++) {
        snprintf(path, sizeof path, "%s/test_data_set_0/output_%u.pb", dir, i);
        kn_rt_tensor *want = NULL;
        if (!is_file(path))
            continue;
        if (kn_tensor_read_pb(path, NULL, d, &want, NULL) != KN_OK) {
            snprintf(msg, msg_size, "cannot read %s", path);
            r = R_FAIL;
            break;
        }
        kn_conformance_fix_bf16(want, &g->values[g->outputs[i]]);
        char why[512];
        kn_cmp_result cr;
        if (!kn_compare_tensors(outs[i], want, rtol, atol, &cr, why, sizeof why)) {
            snprintf(msg, msg_size, "output %u '%s': %s", i, g->values[g->outputs[i]].name, why);
            r = R_FAIL;
        }
        kn_rt_tensor_free(NULL, want);
    }
out:
    for (int i = 0; i < 64; i++) {
        kn_rt_tensor_free(NULL, ins[i]);
        kn_rt_tensor_free(NULL, outs[i]);
    }
    free(shapes);
    kn_cu_program_free(&prog);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    return r;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    double rtol = 1e-3, atol = 1e-7;
    /* --w8a8-dynamic: kiln compile --quantize int8 --act-scale dynamic */
    kn_quantize_opts w8a8 = {8, 128, NULL, NULL, NULL, 0, false, KN_QUANT_W8A8, NULL, NULL, true, 0, NULL};
    const char *filter = NULL;
    char *xfail = NULL;
    int xfailed = 0;
    bool quiet = false;
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (strcmp(argv[first], "--filter") == 0 && first + 1 < argc)
            filter = argv[++first];
        else if (strcmp(argv[first], "--quiet") == 0 || strcmp(argv[first], "-q") == 0)
            quiet = true;
        else if (strcmp(argv[first], "--no-nvrtc") == 0)
            use_nvrtc = false;
        else if (strcmp(argv[first], "--freeze") == 0)
            freeze = true;
        else if (strcmp(argv[first], "--precision") == 0 && first + 1 < argc) {
            const char *v = argv[++first];
            prec.to = strcmp(v, "fp16") == 0 ? KN_F16 : strcmp(v, "bf16") == 0 ? KN_BF16 : KN_F32;
            if (prec.to == KN_F32 && strcmp(v, "fp32") != 0) {
                fprintf(stderr, "kiln-cuda-emu: --precision must be fp32, fp16 or bf16\n");
                return 1;
            }
            popts.precision = &prec;
        } else if (strcmp(argv[first], "--attn-kernel") == 0 && first + 1 < argc) {
            const char *v = argv[++first];
            attn_mode = strcmp(v, "simple") == 0 ? 0 : strcmp(v, "tc") == 0 ? 2 : strcmp(v, "fast") == 0 ? -1 : -2;
            if (attn_mode == -2) {
                fprintf(stderr, "kiln-cuda-emu: --attn-kernel must be fast, simple or tc\n");
                return 1;
            }
        }
        else if (strcmp(argv[first], "--gemm-table") == 0 && first + 1 < argc) {
            if (!load_gemm_table(argv[++first]))
                return 1;
        }
        else if (strcmp(argv[first], "--xfail") == 0 && first + 1 < argc) {
            if (!(xfail = kn_xfail_load(argv[++first])))
                return 1;
        }
        else if (strlen(argv[first]) == 3 && strncmp(argv[first], "-O", 2) == 0 && argv[first][2] >= '0' &&
                 argv[first][2] <= '2')
            popts.level = (kn_opt_level)(argv[first][2] - '0' + 1);
        else if (strcmp(argv[first], "--disable-pass") == 0 && first + 1 < argc && popts.n_disabled < 32)
        {
            if (!kn_pipeline_find(argv[first + 1])) {
                fprintf(stderr, "kiln-cuda-emu: --disable-pass: unknown pass '%s' (kiln compile --passes lists them)\n",
                        argv[first + 1]);
                return 1;
            }
            disabled_passes[popts.n_disabled++] = argv[++first];
        }
        else if (strcmp(argv[first], "--w8a8-dynamic") == 0)
            popts.quantize = &w8a8;
        else if (strcmp(argv[first], "--rtol") == 0 && first + 1 < argc)
            rtol = strtod(argv[++first], NULL);
        else if (strcmp(argv[first], "--atol") == 0 && first + 1 < argc)
            atol = strtod(argv[++first], NULL);
        else {
            printf("usage: kiln-cuda-emu [--quiet] [--filter SUBSTR] [--no-nvrtc] [--freeze] [--xfail FILE] [--rtol X] [--atol Y]\n"
                   "                     [-O0|-O1|-O2] [--disable-pass NAME]... [--precision fp16|bf16]\n"
                   "                     [--attn-kernel fast|simple|tc] [--w8a8-dynamic] [--gemm-table FILE] DIR...\n"
                   "  --w8a8-dynamic: MatMul/Gemm quantized as `kiln compile --quantize int8\n"
                   "  --act-scale dynamic` (compare with loose --rtol/--atol).\n"
                   "  --precision, --attn-kernel, --gemm-table: as in `kiln compile` (compare with loose --rtol/--atol\n"
                   "  against float32 reference data).\n"
                   "  -O0|-O1|-O2, --disable-pass: the optimizer runs as in `kiln compile` (default -O2)\n"
                   "  before lowering, so fused ops' kernels are checked too.\n"
                   "  --freeze: inputs after the first become constants (their test data), so cases\n"
                   "  that pass shape-deciding values as graph inputs can be lowered.\n"
                   "  Lowers each backend-test case for target cuda, compiles its kernels with NVRTC for\n"
                   "  every arch, runs them on the host and compares with the reference outputs.\n"
                   "  Cases with ops target cuda does not lower are skipped (with the reason).\n");
            return strcmp(argv[first], "--help") == 0 ? 0 : 1;
        }
    }
    if (use_nvrtc && !kn_nvrtc_version()) {
        printf("skipped: NVRTC (libnvrtc.so from the CUDA toolkit) is not available here\n");
        printf("0 passed, 0 failed, 0 skipped\n");
        return 0;
    }
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        return 2;
    }
    int passed = 0, failed = 0, skipped = 0;
    uint32_t kernels = 0;
    for (int a = first; a < argc; a++) {
        char model[4200];
        snprintf(model, sizeof model, "%s/model.onnx", argv[a]);
        char **cases = NULL;
        int n = 0, cap = 0;
        if (is_file(model)) {
            cases = malloc(sizeof *cases);
            cases[n++] = strdup(argv[a]);
        } else {
            DIR *dd = opendir(argv[a]);
            struct dirent *e;
            while (dd && (e = readdir(dd))) {
                if (e->d_name[0] == '.')
                    continue;
                if (n == cap) {
                    cap = cap ? cap * 2 : 64;
                    cases = realloc(cases, (size_t)cap * sizeof *cases);
                }
                size_t L = strlen(argv[a]) + strlen(e->d_name) + 2;
                cases[n] = malloc(L);
                snprintf(cases[n++], L, "%s/%s", argv[a], e->d_name);
            }
            if (dd)
                closedir(dd);
            if (n)
                qsort(cases, (size_t)n, sizeof *cases, cmp_str);
        }
        for (int c = 0; c < n; c++) {
            snprintf(model, sizeof model, "%s/model.onnx", cases[c]);
            if (!is_file(model) || (filter && !strstr(cases[c], filter))) {
                free(cases[c]);
                continue;
            }
            char msg[8192] = "";
            result r = run_case(cases[c], rtol, atol, msg, sizeof msg, &kernels);
            for (char *q = msg; *q; q++)
                if (*q == '\n')
                    *q = ' ';
            const char *name = strrchr(cases[c], '/') ? strrchr(cases[c], '/') + 1 : cases[c];
            if (r == R_PASS) {
                passed++;
                if (!quiet)
                    printf("PASS %s\n", name);
            } else if (r == R_SKIP) {
                skipped++;
                if (!quiet)
                    printf("SKIP %s: %.300s\n", name, msg);
            } else {
                failed++;
                bool known = kn_xfail_has(xfail, name);
                xfailed += known;
                printf("FAIL%s %s: %.600s\n", known ? " (known)" : "", name, msg);
            }
            fflush(stdout);
            free(cases[c]);
        }
        free(cases);
    }
    if (use_nvrtc)
        printf("NVRTC: %u distinct kernels x 5 images (sm_80, sm_86, sm_89, sm_90, PTX) = %u compiled, %u failures "
               "(%u kernels over all cases)\n", n_uniq, n_uniq * 5, nvrtc_failed, kernels);
    else
        printf("%u distinct kernels (%u over all cases), not compiled (--no-nvrtc)\n", n_uniq, kernels);
    free(uniq);
    if (xfail)
        printf("%d of the failures are known\n", xfailed);
    free(xfail);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed > xfailed ? 1 : 0;
}
