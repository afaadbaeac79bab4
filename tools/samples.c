/* Sample inputs from folders of tensors or from a tokenized text (see
 * samples.h). */
#include "samples.h"
#include "kiln/tokenizer.h"
#include "tensor_io.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Input name → file name (as `kiln run --output-dir` writes them). */
static void safe_name(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    for (; name[n] && n + 1 < cap; n++) {
        char c = name[n];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        out[n] = ok ? c : '_';
    }
    out[n] = 0;
    if (n == 0)
        snprintf(out, cap, "_");
}

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct folders {
    char **paths;
    size_t n;
} folders;

static void folders_free(folders *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->paths[i]);
    free(f->paths);
}

/* The sample folders: DIR's subfolders in name order, else DIR. */
static kn_status list_folders(const char *who, const char *opt, const char *dir, kn_diag *d, folders *out)
{
    memset(out, 0, sizeof *out);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        kn_diag_add(d, KN_ERROR, "%s: %s %s: %s", who, opt, dir,
                    stat(dir, &st) != 0 ? strerror(errno) : "not a folder");
        return KN_ERR_IO;
    }
    DIR *dp = opendir(dir);
    if (!dp) {
        kn_diag_add(d, KN_ERROR, "%s: %s %s: %s", who, opt, dir, strerror(errno));
        return KN_ERR_IO;
    }
    size_t cap = 0;
    struct dirent *e;
    kn_status s = KN_OK;
    while ((e = readdir(dp)) && s == KN_OK) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            s = KN_ERR_NOMEM;
            break;
        }
        snprintf(p, n, "%s/%s", dir, e->d_name);
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode)) {
            free(p);
            continue;
        }
        if (out->n == cap) {
            cap = cap ? 2 * cap : 16;
            char **np = realloc(out->paths, cap * sizeof *np);
            if (!np) {
                free(p);
                s = KN_ERR_NOMEM;
                break;
            }
            out->paths = np;
        }
        out->paths[out->n++] = p;
    }
    closedir(dp);
    if (s == KN_OK && out->n == 0) {
        out->paths = malloc(sizeof *out->paths);
        if (!out->paths || !(out->paths[0] = strdup(dir)))
            s = KN_ERR_NOMEM;
        else
            out->n = 1;
    }
    if (s != KN_OK) {
        folders_free(out);
        return s;
    }
    qsort(out->paths, out->n, sizeof *out->paths, cmp_str);
    return KN_OK;
}

static void shape_str(const kn_rt_tensor *t, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s[", kn_dtype_name(t->dtype));
    for (int32_t i = 0; i < t->rank && n < (int)cap - 24; i++)
        n += snprintf(buf + n, cap - (size_t)n, "%s%lld", i ? ", " : "", (long long)t->dims[i]);
    snprintf(buf + n, cap - (size_t)n, "]");
}

static void type_str(const kn_value *v, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s[", kn_dtype_name(v->type.dtype));
    for (int32_t i = 0; i < v->type.shape.rank && n < (int)cap - 64; i++) {
        const kn_dim *dm = &v->type.shape.dims[i];
        if (dm->value >= 0)
            n += snprintf(buf + n, cap - (size_t)n, "%s%lld", i ? ", " : "", (long long)dm->value);
        else
            n += snprintf(buf + n, cap - (size_t)n, "%s%s", i ? ", " : "", dm->sym ? dm->sym : "?");
    }
    snprintf(buf + n, cap - (size_t)n, "]");
}

/* Whether file tensor t fits input v as one sample (*batch 0) or as a
 * batch along a new leading axis (*batch = its size). */
static bool fits(const kn_value *v, const kn_rt_tensor *t, int64_t *batch)
{
    if (v->type.dtype && t->dtype != v->type.dtype)
        return false;
    int32_t rank = v->type.shape.rank;
    if (rank < 0) {
        *batch = 0;
        return true;
    }
    int32_t off = t->rank == rank ? 0 : t->rank == rank + 1 ? 1 : -1;
    if (off < 0)
        return false;
    for (int32_t i = 0; i < rank; i++)
        if (v->type.shape.dims[i].value >= 0 && v->type.shape.dims[i].value != t->dims[i + off])
            return false;
    *batch = off ? t->dims[0] : 0;
    return true;
}

/* A note after a missing input: the model's inputs and the tensor files
 * the folder holds, so a misnamed file is easy to spot. */
static void list_inputs(const kn_graph *g, const char *folder, kn_diag *d)
{
    char buf[1024];
    size_t n = 0;
    for (uint32_t k = 0; k < g->n_inputs && n < sizeof buf - 64; k++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s'%s'", k ? ", " : "", g->values[g->inputs[k]].name);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "; the folder holds:");
    DIR *dp = opendir(folder);
    struct dirent *e;
    int files = 0;
    while (dp && (e = readdir(dp)) && n < sizeof buf - 64) {
        size_t L = strlen(e->d_name);
        if ((L > 4 && strcmp(e->d_name + L - 4, ".npy") == 0) || (L > 3 && strcmp(e->d_name + L - 3, ".pb") == 0)) {
            n += (size_t)snprintf(buf + n, sizeof buf - n, " %s", e->d_name);
            files++;
        }
    }
    if (dp)
        closedir(dp);
    if (!files)
        snprintf(buf + n, sizeof buf - n, " no .npy or .pb files");
    kn_diag_add(d, KN_NOTE, "the model's inputs are %s", buf);
}

/* Reads one folder's tensors, one per graph input: ins[k] (owned). *batch:
 * 0 for one sample, else the leading axis every input shares. */
static kn_status load_folder(const char *who, const kn_graph *g, const char *folder, kn_diag *d, kn_rt_tensor **ins,
                             int64_t *batch)
{
    *batch = -1;
    for (uint32_t k = 0; k < g->n_inputs; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        char sn[256], path[4600];
        safe_name(v->name, sn, sizeof sn);
        snprintf(path, sizeof path, "%s/%s.npy", folder, sn);
        if (!is_file(path))
            snprintf(path, sizeof path, "%s/%s.pb", folder, sn);
        if (!is_file(path))
            snprintf(path, sizeof path, "%s/input_%u.pb", folder, k);
        if (!is_file(path)) {
            char alt[32];
            snprintf(alt, sizeof alt, "input_%u", k);
            if (strcmp(sn, alt) == 0)
                kn_diag_add(d, KN_ERROR, "%s: %s: no file for input '%s' (%s.npy or %s.pb)", who, folder, v->name,
                            sn, sn);
            else
                kn_diag_add(d, KN_ERROR, "%s: %s: no file for input '%s' (%s.npy, %s.pb or input_%u.pb)",
                            who, folder, v->name, sn, sn, k);
            list_inputs(g, folder, d);
            return KN_ERR_INVALID;
        }
        KN_TRY(kn_tensor_read(path, NULL, d, &ins[k], NULL));
        int64_t b;
        if (!fits(v, ins[k], &b)) {
            char want[512], got[512];
            type_str(v, want, sizeof want);
            shape_str(ins[k], got, sizeof got);
            kn_diag_add(d, KN_ERROR, "%s: %s: input '%s' is %s, the file holds %s", who, path, v->name, want, got);
            return KN_ERR_INVALID;
        }
        if (*batch >= 0 && b != *batch) {
            kn_diag_add(d, KN_ERROR,
                        "%s: %s: input '%s' holds %lld samples, the folder's other inputs %lld", who, path, v->name,
                        (long long)(b ? b : 1), (long long)(*batch ? *batch : 1));
            return KN_ERR_INVALID;
        }
        *batch = b;
    }
    if (*batch < 0)
        *batch = 0;
    return KN_OK;
}

/* Sample i of a batch tensor t (a view; free with kn_rt_tensor_free). */
static kn_status slice(const kn_rt_tensor *t, int64_t i, kn_rt_tensor **out)
{
    size_t row = t->dims[0] ? t->nbytes / (size_t)t->dims[0] : 0;
    return kn_rt_tensor_view(NULL, t->dtype, t->rank - 1, t->dims + 1, (const uint8_t *)t->data + row * (size_t)i,
                             out);
}


kn_status kn_samples_folders(const char *who, const char *opt, const char *dir, kn_diag *d, kn_sample_set *out)
{
    memset(out, 0, sizeof *out);
    out->who = who;
    out->opt = opt;
    out->dir = dir;
    folders f;
    KN_TRY(list_folders(who, opt, dir, d, &f));
    out->paths = f.paths;
    out->n_paths = f.n;
    return KN_OK;
}

static char *read_text(const char *who, const char *path, kn_diag *d, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        kn_diag_add(d, KN_ERROR, "%s: %s: %s", who, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap)
            break;
        if (cap > ((size_t)1 << 30)) {
            kn_diag_add(d, KN_ERROR, "%s: %s: larger than 1 GiB", who, path);
            free(buf);
            buf = NULL;
            break;
        }
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    bool err = ferror(f) != 0;
    fclose(f);
    if (buf && err) {
        kn_diag_add(d, KN_ERROR, "%s: %s: read error", who, path);
        free(buf);
        return NULL;
    }
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

kn_status kn_samples_text(const char *who, const char *model, const char *text, const char *tokenizer,
                          int64_t window, kn_diag *d, kn_sample_set *out)
{
    memset(out, 0, sizeof *out);
    out->who = who;
    out->window = window;
    char *tok_path = NULL;
    if (!tokenizer) {
        const char *slash = strrchr(model, '/');
        size_t dl = slash ? (size_t)(slash - model) + 1 : 0;
        tok_path = malloc(dl + 16);
        if (!tok_path)
            return KN_ERR_NOMEM;
        memcpy(tok_path, model, dl);
        strcpy(tok_path + dl, "tokenizer.json");
        if (!is_file(tok_path)) {
            kn_diag_add(d, KN_ERROR, "%s: no tokenizer for the text: %s does not exist (give one with --tokenizer)",
                        who, tok_path);
            free(tok_path);
            return KN_ERR_INVALID;
        }
        tokenizer = tok_path;
    }
    kn_tokenizer *tok = NULL;
    kn_status s = kn_tokenizer_load_file(tokenizer, NULL, d, &tok);
    size_t len = 0;
    char *buf = s == KN_OK ? read_text(who, text, d, &len) : NULL;
    if (s == KN_OK && !buf)
        s = KN_ERR_IO;
    int32_t *ids = NULL;
    size_t n = 0;
    if (s == KN_OK)
        s = kn_tokenizer_encode(tok, buf, len, true, &ids, &n, d);
    if (s != KN_OK)
        kn_diag_add(d, KN_NOTE, "%s: while tokenizing %s with %s", who, text, tokenizer);
    if (s == KN_OK && n < 2) {
        kn_diag_add(d, KN_ERROR, "%s: %s: %zu token%s; perplexity needs at least 2", who, text, n, n == 1 ? "" : "s");
        s = KN_ERR_INVALID;
    }
    if (s == KN_OK) {
        out->ids = malloc(n * sizeof *out->ids);
        if (out->ids) {
            memcpy(out->ids, ids, n * sizeof *ids);
            out->n_ids = n;
        } else {
            s = KN_ERR_NOMEM;
        }
    }
    if (tok)
        kn_tokenizer_release(tok, ids);
    kn_tokenizer_free(tok);
    free(buf);
    free(tok_path);
    return s;
}

void kn_samples_free(kn_sample_set *s)
{
    for (size_t i = 0; i < s->n_paths; i++)
        free(s->paths[i]);
    free(s->paths);
    free(s->ids);
    memset(s, 0, sizeof *s);
}

size_t kn_samples_n_windows(size_t n_ids, int64_t window)
{
    if (window < 2)
        return 0;
    size_t w = (size_t)window, full = n_ids / w;
    return full + (n_ids - full * w >= 2 ? 1 : 0);
}

/* Decoder inputs for one window of n tokens (see samples.h). */
static kn_status lm_inputs(const char *who, const kn_graph *g, const int32_t *ids, int64_t n, kn_diag *d,
                           kn_rt_tensor **ins)
{
    for (uint32_t k = 0; k < g->n_inputs; k++) {
        const kn_value *v = &g->values[g->inputs[k]];
        const char *nm = v->name ? v->name : "";
        kn_dtype dt = v->type.dtype;
        int64_t dims[8];
        int32_t rank = v->type.shape.rank;
        bool ids_like = strcmp(nm, "input_ids") == 0 || strcmp(nm, "attention_mask") == 0 ||
                        strcmp(nm, "position_ids") == 0;
        if (ids_like) {
            if ((dt != KN_I64 && dt != KN_I32) || (rank >= 0 && rank != 2)) {
                kn_diag_add(d, KN_ERROR, "%s: text input '%s' must be int64 or int32 [batch, seq]", who, nm);
                return KN_ERR_INVALID;
            }
            dims[0] = 1;
            dims[1] = n;
            KN_TRY(kn_rt_tensor_new(NULL, dt, 2, dims, &ins[k]));
            for (int64_t i = 0; i < n; i++) {
                int64_t x = nm[0] == 'i' ? ids[i] : nm[0] == 'a' ? 1 : i;
                if (dt == KN_I64)
                    ((int64_t *)ins[k]->data)[i] = x;
                else
                    ((int32_t *)ins[k]->data)[i] = (int32_t)x;
            }
        } else if (strstr(nm, "past") && (dt == KN_F32 || dt == KN_F16 || dt == KN_BF16) && rank >= 1 && rank <= 8) {
            for (int32_t i = 0; i < rank; i++) {
                int64_t dv = v->type.shape.dims[i].value;
                dims[i] = dv >= 0 ? dv : i == 0 ? 1 : 0; /* batch 1, 0 past tokens */
            }
            KN_TRY(kn_rt_tensor_new(NULL, dt, rank, dims, &ins[k]));
        } else {
            kn_diag_add(d, KN_ERROR,
                        "%s: the model's input '%s' is not input_ids, attention_mask, position_ids or a past "
                        "key/value: text samples are for decoder language models",
                        who, nm);
            return KN_ERR_INVALID;
        }
    }
    return KN_OK;
}

kn_status kn_samples_foreach(const kn_graph *g, const kn_sample_set *s, size_t max_samples, kn_sample_fn fn,
                             void *ctx, kn_diag *d)
{
    kn_rt_tensor **ins = calloc(g->n_inputs + 1, sizeof *ins), **views = calloc(g->n_inputs + 1, sizeof *views);
    kn_status st = ins && views ? KN_OK : KN_ERR_NOMEM;
    size_t done = 0;
    char origin[4200];
    if (s->ids) {
        size_t nw = kn_samples_n_windows(s->n_ids, s->window);
        for (size_t w = 0; w < nw && st == KN_OK && done < max_samples; w++, done++) {
            size_t at = w * (size_t)s->window, n = s->n_ids - at < (size_t)s->window ? s->n_ids - at : (size_t)s->window;
            st = lm_inputs(s->who, g, s->ids + at, (int64_t)n, d, ins);
            snprintf(origin, sizeof origin, "window %zu (tokens %zu..%zu)", w + 1, at, at + n - 1);
            if (st == KN_OK)
                st = fn(ctx, (const kn_rt_tensor *const *)ins, origin, s->ids + at, n, d);
            for (uint32_t k = 0; k < g->n_inputs; k++) {
                kn_rt_tensor_free(NULL, ins[k]);
                ins[k] = NULL;
            }
        }
    }
    for (size_t f = 0; !s->ids && f < s->n_paths && st == KN_OK && done < max_samples; f++) {
        int64_t batch = 0;
        st = load_folder(s->who, g, s->paths[f], d, ins, &batch);
        for (int64_t b = 0; st == KN_OK && b < (batch ? batch : 1) && done < max_samples; b++) {
            const kn_rt_tensor *const *run_ins = (const kn_rt_tensor *const *)ins;
            if (batch) {
                for (uint32_t k = 0; k < g->n_inputs && st == KN_OK; k++)
                    st = slice(ins[k], b, &views[k]);
                run_ins = (const kn_rt_tensor *const *)views;
            }
            if (batch)
                snprintf(origin, sizeof origin, "%s (sample %lld of the batch)", s->paths[f], (long long)b);
            else
                snprintf(origin, sizeof origin, "%s", s->paths[f]);
            if (st == KN_OK)
                st = fn(ctx, run_ins, origin, NULL, 0, d);
            for (uint32_t k = 0; k < g->n_inputs; k++) {
                kn_rt_tensor_free(NULL, views[k]);
                views[k] = NULL;
            }
            done++;
        }
        for (uint32_t k = 0; k < g->n_inputs; k++) {
            kn_rt_tensor_free(NULL, ins[k]);
            ins[k] = NULL;
        }
    }
    free(ins);
    free(views);
    return st;
}
