/* kiln-conformance: runs ONNX backend-test cases (model.onnx +
 * test_data_set_N/{input,output}_K.pb) the way a user would, compares
 * with the reference outputs and prints one line per case and a summary:
 * "N passed, N failed, N skipped". */
#include "cli.h"
#include "conformance.h"
#include "ir/ir.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"
#include "compare.h"
#include "tensor_io.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The only reasons a case may be skipped (the rest must pass or fail). */
static const struct {
    const char *domain; /* NULL: any */
    const char *op;
    const char *reason;
} skip_ops[] = {
    {"ai.onnx.preview.training", NULL, "training op"},
    {NULL, "Gradient", "training op"},
    {NULL, "Adagrad", "training op"},
    {NULL, "Adam", "training op"},
    {NULL, "Momentum", "training op"},
    {NULL, "SequenceAt", "sequence type"},
    {NULL, "SequenceConstruct", "sequence type"},
    {NULL, "SequenceEmpty", "sequence type"},
    {NULL, "SequenceErase", "sequence type"},
    {NULL, "SequenceInsert", "sequence type"},
    {NULL, "SequenceLength", "sequence type"},
    {NULL, "SequenceMap", "sequence type"},
    {NULL, "SplitToSequence", "sequence type"},
    {NULL, "ConcatFromSequence", "sequence type"},
    {NULL, "Optional", "optional type"},
    {NULL, "OptionalGetElement", "optional type"},
    {NULL, "OptionalHasElement", "optional type"},
    {NULL, "StringNormalizer", "string op"},
    {NULL, "StringConcat", "string op"},
    {NULL, "StringSplit", "string op"},
    {NULL, "RegexFullMatch", "string op"},
    {NULL, "TfIdfVectorizer", "string op"},
    {NULL, "RandomNormal", "random generator"},
    {NULL, "RandomNormalLike", "random generator"},
    {NULL, "RandomUniform", "random generator"},
    {NULL, "RandomUniformLike", "random generator"},
    {NULL, "Multinomial", "random generator"},
    {NULL, "Bernoulli", "random generator"},
};

static const char *type_skip(const kn_type *t)
{
    switch (t->kind) {
    case KN_TYPE_SEQUENCE: return "sequence type";
    case KN_TYPE_MAP: return "map type";
    case KN_TYPE_OPTIONAL: return "optional type";
    case KN_TYPE_TENSOR: return t->dtype == KN_STRING ? "string op" : NULL;
    default: return NULL;
    }
}

typedef struct skip_ctx {
    const char *reason;
} skip_ctx;

static void skip_visit(const kn_graph *g, int depth, void *ctx)
{
    (void)depth;
    skip_ctx *sc = ctx;
    for (kn_id i = 0; i < g->n_nodes && !sc->reason; i++) {
        const kn_node *n = &g->nodes[i];
        for (size_t k = 0; k < sizeof skip_ops / sizeof skip_ops[0]; k++) {
            bool dom = skip_ops[k].domain ? strcmp(n->domain, skip_ops[k].domain) == 0
                                          : kn_domain_of(n->domain) == KN_DOM_ONNX ||
                                                strcmp(n->domain, "ai.onnx.preview.training") == 0;
            if (dom && (!skip_ops[k].op || strcmp(n->op_type, skip_ops[k].op) == 0)) {
                sc->reason = skip_ops[k].reason;
                break;
            }
        }
        /* Dropout in training mode draws a random mask */
        if (!sc->reason && n->op == KN_OP_Dropout && n->n_inputs >= 3 && n->inputs[2] != KN_NONE)
            sc->reason = "random generator";
    }
    for (kn_id i = 0; i < g->n_values && !sc->reason; i++)
        sc->reason = type_skip(&g->values[i].type);
}

char *kn_xfail_load(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "error: %s: cannot open\n", path);
        return NULL;
    }
    size_t cap = 0;
    char *text = NULL;
    ssize_t got = getdelim(&text, &cap, '\0', f);
    fclose(f);
    if (got < 0) { /* an empty file */
        free(text);
        text = calloc(1, 1);
    }
    return text;
}

bool kn_xfail_has(const char *list, const char *name)
{
    size_t nl = strlen(name);
    for (const char *l = list; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, name, nl) == 0 && (l[nl] == ' ' || l[nl] == '\t' || l[nl] == '\n' || !l[nl]))
            return true;
    return false;
}

const char *kn_conformance_skip_reason(const kn_graph *g)
{
    skip_ctx sc = {NULL};
    kn_graph_walk(g, skip_visit, &sc);
    return sc.reason;
}

/* ---- one case ---- */

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* rtol/atol from the case's README ("rtol 1e-3, atol 1e-4"), if any. */
static void readme_tolerance(const char *dir, double *rtol, double *atol)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/README.md", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        const char *r = strstr(line, "rtol "), *a = strstr(line, "atol ");
        if (r && a && strstr(line, "using")) {
            *rtol = strtod(r + 5, NULL);
            *atol = strtod(a + 5, NULL);
        }
    }
    fclose(f);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted subfolder names of dir starting with prefix. */
static int list_dirs(const char *dir, const char *prefix, char ***out)
{
    *out = NULL;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || e->d_name[0] == '.')
            continue;
        char p[4400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (!is_dir(p))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = realloc(*out, (size_t)cap * sizeof **out);
        }
        (*out)[n++] = strdup(e->d_name);
    }
    closedir(d);
    if (n)
        qsort(*out, (size_t)n, sizeof **out, cmp_str);
    return n;
}

static void free_list(char **l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

/* Older ONNX releases stored bfloat16 test tensors with data type uint16
 * (numpy has no bfloat16); the bits are the same, so retype them where
 * the model declares bfloat16. */
void kn_conformance_fix_bf16(kn_rt_tensor *t, const kn_value *v)
{
    if (t->dtype == KN_U16 && v->type.kind == KN_TYPE_TENSOR && v->type.dtype == KN_BF16)
        t->dtype = KN_BF16;
}

typedef enum { CASE_PASS, CASE_FAIL, CASE_SKIP } case_result;

static case_result run_case(const char *dir, const kn_conformance_opts *o, char *msg, size_t msg_size,
                            double *worst_nmse)
{
    char model[4200];
    snprintf(model, sizeof model, "%s/model.onnx", dir);
    double rtol = o->rtol, atol = o->atol;
    if (!o->tol_given)
        readme_tolerance(dir, &rtol, &atol);
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!d) {
        snprintf(msg, msg_size, "out of memory");
        return CASE_FAIL;
    }
    kn_graph *g = NULL;
    case_result res = CASE_FAIL;
    bool prepared = false;
    char **sets = NULL;
    int n_sets = 0;
    kn_status s = kn_import_onnx_file(model, NULL, NULL, d, &g);
    const char *skip = s == KN_OK ? kn_conformance_skip_reason(g) : NULL;
    if (skip) {
        snprintf(msg, msg_size, "%s", skip);
        res = CASE_SKIP;
        goto out;
    }
    kn_rt_tensor **sample = s == KN_OK ? calloc(g->n_inputs + 1, sizeof *sample) : NULL;
    for (uint32_t i = 0; sample && i < g->n_inputs; i++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/test_data_set_0/input_%u.pb", dir, i);
        if (is_file(p) && kn_tensor_read_pb(p, NULL, d, &sample[i], NULL) == KN_OK)
            kn_conformance_fix_bf16(sample[i], &g->values[g->inputs[i]]);
    }
    uint32_t n_sample = g ? g->n_inputs : 0;
    if (s == KN_OK && o->prepare) {
        s = o->prepare(o->prepare_ctx, &g, (const kn_rt_tensor *const *)sample, d);
        prepared = true;
    }
    for (uint32_t i = 0; sample && i < n_sample; i++)
        kn_rt_tensor_free(NULL, sample[i]);
    free(sample);
    if (s != KN_OK) {
        const char *m = kn_diag_size(d) ? kn_diag_message(d, kn_diag_size(d) - 1, NULL) : kn_status_str(s);
        snprintf(msg, msg_size, "%s", m);
        goto out;
    }
    n_sets = list_dirs(dir, "test_data_set_", &sets);
    if (n_sets == 0) {
        snprintf(msg, msg_size, "no test_data_set_* folder");
        goto out;
    }
    res = CASE_PASS;
    msg[0] = 0;
    for (int si = 0; si < n_sets && res == CASE_PASS; si++) {
        char sd[4200];
        snprintf(sd, sizeof sd, "%s/%s", dir, sets[si]);
        uint32_t n_in = g->n_inputs, n_out = g->n_outputs;
        kn_rt_tensor **ins = calloc(n_in + 1, sizeof *ins), **outs = calloc(n_out + 1, sizeof *outs);
        for (uint32_t i = 0; i < n_in && res == CASE_PASS; i++) {
            char p[4400];
            snprintf(p, sizeof p, "%s/input_%u.pb", sd, i);
            if (!is_file(p))
                continue; /* an omitted optional input */
            if (kn_tensor_read_pb(p, NULL, d, &ins[i], NULL) != KN_OK) {
                snprintf(msg, msg_size, "%s: cannot read input %u", sets[si], i);
                res = CASE_FAIL;
            } else {
                kn_conformance_fix_bf16(ins[i], &g->values[g->inputs[i]]);
            }
        }
        if (res == CASE_PASS) {
            s = o->run ? o->run(o->prepare_ctx, g, (const kn_rt_tensor *const *)ins, outs, d)
                       : kn_cpu_run(g, NULL, d, (const kn_rt_tensor *const *)ins, n_in, outs, n_out);
            if (s != KN_OK) {
                const char *m = kn_diag_size(d) ? kn_diag_message(d, kn_diag_size(d) - 1, NULL) : kn_status_str(s);
                snprintf(msg, msg_size, "%s", m);
                res = CASE_FAIL;
            }
        }
        for (uint32_t i = 0; i < n_out && res == CASE_PASS; i++) {
            char p[4400], why[512];
            snprintf(p, sizeof p, "%s/output_%u.pb", sd, i);
            kn_rt_tensor *want = NULL;
            if (!is_file(p))
                continue;
            if (kn_tensor_read_pb(p, NULL, d, &want, NULL) != KN_OK) {
                snprintf(msg, msg_size, "%s: cannot read output %u", sets[si], i);
                res = CASE_FAIL;
                break;
            }
            kn_conformance_fix_bf16(want, &g->values[g->outputs[i]]);
            kn_cmp_result cr;
            bool ok = o->nmse >= 0 && kn_dt_is_float(want->dtype)
                          ? kn_compare_nmse(outs[i], want, o->nmse, &cr, why, sizeof why)
                          : kn_compare_tensors(outs[i], want, rtol, atol, &cr, why, sizeof why);
            if (kn_dt_is_float(want->dtype) && cr.nmse > *worst_nmse) {
                *worst_nmse = cr.nmse;
            }
            if (!ok) {
                snprintf(msg, msg_size, "%s: output %u '%s': %s", sets[si], i, g->values[g->outputs[i]].name, why);
                res = CASE_FAIL;
            }
            kn_rt_tensor_free(NULL, want);
        }
        for (uint32_t i = 0; i < n_in; i++)
            kn_rt_tensor_free(NULL, ins[i]);
        for (uint32_t i = 0; i < n_out; i++)
            kn_rt_tensor_free(NULL, outs[i]);
        free(ins);
        free(outs);
    }
out:
    if (prepared && o->finish)
        o->finish(o->prepare_ctx);
    free_list(sets, n_sets);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    return res;
}

int kn_conformance_main(int argc, char **argv, const kn_conformance_opts *base)
{
    kn_conformance_opts o = *base;
    int passed = 0, failed = 0, skipped = 0;
    bool quiet = false;
    const char *filter = NULL, *xfail_path = NULL;
    char *xfail = NULL; /* the known-failures file, as text */
    int xfailed = 0;
    struct {
        double nmse;
        char name[200];
    } worst[6];
    memset(worst, 0, sizeof worst);
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (strcmp(argv[first], "--quiet") == 0 || strcmp(argv[first], "-q") == 0)
            quiet = true;
        else if (strcmp(argv[first], "--rtol") == 0 && first + 1 < argc)
            o.rtol = strtod(argv[++first], NULL), o.tol_given = true;
        else if (strcmp(argv[first], "--atol") == 0 && first + 1 < argc)
            o.atol = strtod(argv[++first], NULL), o.tol_given = true;
        else if (strcmp(argv[first], "--filter") == 0 && first + 1 < argc)
            filter = argv[++first];
        else if (strcmp(argv[first], "--xfail") == 0 && first + 1 < argc)
            xfail_path = argv[++first];
        else if (strcmp(argv[first], "--nmse") == 0 && first + 1 < argc)
            o.nmse = strtod(argv[++first], NULL);
        else {
            printf("usage: kiln-conformance [--quiet] [--filter SUBSTR] [--rtol X] [--atol Y] [--xfail FILE] DIR...\n"
                   "  DIR is one backend-test case (model.onnx + test_data_set_*) or a folder of them.\n"
                   "  --xfail FILE: known failures, one 'case_name  reason' per line ('#' comments);\n"
                   "  --nmse X: judge float outputs by normalised mean squared error <= X instead of\n"
                   "  rtol/atol (for reduced precision).\n"
                   "  they are still run and counted as failed, but do not make the exit status 1.\n");
            return strcmp(argv[first], "--help") == 0 ? 0 : 1;
        }
    }
    if (first >= argc) {
        fprintf(stderr, "usage: kiln-conformance [--quiet] [--filter SUBSTR] DIR...\n");
        return 1;
    }
    if (xfail_path && !(xfail = kn_xfail_load(xfail_path)))
        return 1;
    for (int a = first; a < argc; a++) {
        char model[4200];
        snprintf(model, sizeof model, "%s/model.onnx", argv[a]);
        char **cases = NULL;
        int n_cases;
        bool single = is_file(model);
        if (single) {
            n_cases = 1;
        } else {
            n_cases = list_dirs(argv[a], "", &cases);
            if (!is_dir(argv[a]))
                fprintf(stderr, "warning: %s is not a folder\n", argv[a]);
        }
        for (int c = 0; c < n_cases; c++) {
            char dir[4096];
            if (single)
                snprintf(dir, sizeof dir, "%s", argv[a]);
            else
                snprintf(dir, sizeof dir, "%s/%s", argv[a], cases[c]);
            snprintf(model, sizeof model, "%s/model.onnx", dir);
            if (!is_file(model) || (filter && !strstr(dir, filter)))
                continue;
            char msg[2048];
            double nm = 0;
            case_result r = run_case(dir, &o, msg, sizeof msg, &nm);
            if (r == CASE_PASS || r == CASE_FAIL) { /* keep the 5 worst NMSE cases */
                for (int w = 0; w < 5; w++)
                    if (nm > worst[w].nmse) {
                        memmove(&worst[w + 1], &worst[w], (size_t)(4 - w) * sizeof worst[0]);
                        worst[w].nmse = nm;
                        snprintf(worst[w].name, sizeof worst[w].name, "%.190s", strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir);
                        break;
                    }
            }
            for (char *q = msg; *q; q++) /* one line per case */
                if (*q == '\n')
                    *q = ' ';
            const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
            if (r == CASE_PASS) {
                passed++;
                if (!quiet)
                    printf("PASS %s\n", name);
            } else if (r == CASE_SKIP) {
                skipped++;
                if (!quiet)
                    printf("SKIP %s: %s\n", name, msg);
            } else {
                failed++;
                bool expected = kn_xfail_has(xfail, name);
                xfailed += expected;
                printf("FAIL%s %s: %s\n", expected ? " (known)" : "", name, msg);
            }
            fflush(stdout);
        }
        free_list(cases, single ? 0 : n_cases);
    }
    if (xfail)
        printf("%d of the failures are known (%s)\n", xfailed, xfail_path);
    if (o.nmse >= 0 || worst[0].nmse > 0) {
        printf("worst NMSE:");
        for (int w = 0; w < 5 && worst[w].nmse > 0; w++)
            printf("%s %s %.3g", w ? "," : "", worst[w].name, worst[w].nmse);
        printf("\n");
    }
    free(xfail);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed > xfailed ? 1 : 0;
}
