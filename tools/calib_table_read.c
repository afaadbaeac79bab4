/* Reads the calibration table back (calib_table.h): the JSON through
 * libjansson, the XᵀX side file checked against its size and checksum. */
#include "calib_table.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void kn_calib_table_free(kn_calib_table *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->n_tensors; i++)
        free(t->tensors[i].name);
    for (uint32_t i = 0; i < t->n_inputs; i++) {
        free(t->inputs[i].name);
        free(t->inputs[i].mean_abs);
        free(t->inputs[i].max_abs);
        free(t->inputs[i].xtx);
    }
    for (uint32_t i = 0; i < t->n_layers; i++) {
        free(t->layers[i].node);
        free(t->layers[i].op);
        free(t->layers[i].weight);
        free(t->layers[i].input);
    }
    free(t->tensors);
    free(t->inputs);
    free(t->layers);
    free(t);
}

const kn_calib_table_tensor *kn_calib_table_tensor_find(const kn_calib_table *t, const char *name)
{
    for (uint32_t i = 0; i < t->n_tensors; i++)
        if (strcmp(t->tensors[i].name, name) == 0)
            return &t->tensors[i];
    return NULL;
}

const kn_calib_table_input *kn_calib_table_input_find(const kn_calib_table *t, const char *name)
{
    for (uint32_t i = 0; i < t->n_inputs; i++)
        if (strcmp(t->inputs[i].name, name) == 0)
            return &t->inputs[i];
    return NULL;
}

typedef struct reader {
    const char *path;
    kn_diag *d;
    kn_status s;
} reader;

static void bad(reader *r, const char *what, const char *where)
{
    if (r->s == KN_OK)
        kn_diag_add(r->d, KN_ERROR, "%s: not a valid kiln calibration table: %s%s%s", r->path, what,
                    where ? " in " : "", where ? where : "");
    if (r->s == KN_OK)
        r->s = KN_ERR_INVALID;
}

static char *str_field(reader *r, json_t *o, const char *key, const char *where)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v) {
        char m[128];
        snprintf(m, sizeof m, "'%s' is not a string", key);
        bad(r, m, where);
        return NULL;
    }
    char *p = strdup(v);
    if (!p && r->s == KN_OK)
        r->s = KN_ERR_NOMEM;
    return p;
}

static double num_field(reader *r, json_t *o, const char *key, const char *where)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) {
        char m[128];
        snprintf(m, sizeof m, "'%s' is not a number", key);
        bad(r, m, where);
        return 0;
    }
    return json_number_value(v);
}

static uint64_t uint_field(reader *r, json_t *o, const char *key, uint64_t max, const char *where)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max) {
        char m[128];
        snprintf(m, sizeof m, "'%s' is not an integer in [0, %llu]", key, (unsigned long long)max);
        bad(r, m, where);
        return 0;
    }
    return (uint64_t)json_integer_value(v);
}

static json_t *array_field(reader *r, json_t *o, const char *key)
{
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a)) {
        char m[128];
        snprintf(m, sizeof m, "'%s' is not an array", key);
        bad(r, m, NULL);
        return NULL;
    }
    return a;
}

/* The side file, whole, after checking its size and checksum. */
static uint8_t *read_side(reader *r, json_t *xf, uint64_t *size)
{
    const char *name = json_string_value(json_object_get(xf, "name"));
    const char *hash = json_string_value(json_object_get(xf, "fnv1a64"));
    uint64_t bytes = uint_field(r, xf, "bytes", UINT64_MAX >> 1, "xtx_file");
    if (!name || !hash || strchr(name, '/')) {
        bad(r, "'xtx_file' needs a plain file 'name' and 'fnv1a64'", NULL);
        return NULL;
    }
    if (r->s != KN_OK)
        return NULL;
    const char *slash = strrchr(r->path, '/');
    size_t dl = slash ? (size_t)(slash - r->path) + 1 : 0;
    char *p = malloc(dl + strlen(name) + 1);
    if (!p) {
        r->s = KN_ERR_NOMEM;
        return NULL;
    }
    memcpy(p, r->path, dl);
    strcpy(p + dl, name);
    FILE *f = fopen(p, "rb");
    struct stat st;
    uint8_t *data = NULL;
    if (!f || fstat(fileno(f), &st) != 0) {
        kn_diag_add(r->d, KN_ERROR, "%s: the table's XᵀX file %s cannot be opened: %s", r->path, p, strerror(errno));
        r->s = KN_ERR_IO;
    } else if ((uint64_t)st.st_size != bytes) {
        kn_diag_add(r->d, KN_ERROR, "%s: %s has %lld bytes, the table records %llu: not the file written with it",
                    r->path, p, (long long)st.st_size, (unsigned long long)bytes);
        r->s = KN_ERR_INVALID;
    } else if (!(data = malloc(bytes ? bytes : 1))) {
        r->s = KN_ERR_NOMEM;
    } else if (bytes && fread(data, 1, bytes, f) != bytes) {
        kn_diag_add(r->d, KN_ERROR, "%s: read error", p);
        r->s = KN_ERR_IO;
    } else {
        uint64_t h = 0xcbf29ce484222325ull;
        for (uint64_t i = 0; i < bytes; i++)
            h = (h ^ data[i]) * 0x100000001b3ull;
        char hs[24];
        snprintf(hs, sizeof hs, "%016llx", (unsigned long long)h);
        if (bytes < 8 || memcmp(data, "KILNXTX1", 8) != 0 || strcmp(hs, hash) != 0) {
            kn_diag_add(r->d, KN_ERROR, "%s: %s does not match the table (checksum %s, recorded %s)", r->path, p, hs,
                        hash);
            r->s = KN_ERR_INVALID;
        }
    }
    if (f)
        fclose(f);
    free(p);
    if (r->s != KN_OK) {
        free(data);
        return NULL;
    }
    *size = bytes;
    return data;
}

static void read_inputs(reader *r, json_t *arr, const uint8_t *side, uint64_t side_size, kn_calib_table *t)
{
    size_t n = json_array_size(arr);
    t->inputs = calloc(n + 1, sizeof *t->inputs);
    if (!t->inputs) {
        r->s = KN_ERR_NOMEM;
        return;
    }
    for (size_t i = 0; i < n && r->s == KN_OK; i++) {
        json_t *o = json_array_get(arr, i);
        kn_calib_table_input *x = &t->inputs[t->n_inputs++];
        x->name = str_field(r, o, "name", "linear_inputs");
        x->k = (uint32_t)uint_field(r, o, "k", 1u << 20, "linear_inputs");
        x->rows = uint_field(r, o, "rows", UINT64_MAX >> 1, "linear_inputs");
        json_t *ma = json_object_get(o, "mean_abs"), *off = json_object_get(o, "xtx_offset");
        if (r->s != KN_OK)
            return;
        if (!json_is_array(ma) || json_array_size(ma) != x->k) {
            bad(r, "'mean_abs' is not an array of k numbers", x->name);
            return;
        }
        if (!(x->mean_abs = malloc((size_t)x->k * sizeof *x->mean_abs))) {
            r->s = KN_ERR_NOMEM;
            return;
        }
        for (uint32_t k = 0; k < x->k; k++)
            x->mean_abs[k] = json_number_value(json_array_get(ma, k));
        json_t *mx = json_object_get(o, "max_abs"); /* absent in tables written before it */
        if (mx) {
            if (!json_is_array(mx) || json_array_size(mx) != x->k) {
                bad(r, "'max_abs' is not an array of k numbers", x->name);
                return;
            }
            if (!(x->max_abs = malloc((size_t)x->k * sizeof *x->max_abs))) {
                r->s = KN_ERR_NOMEM;
                return;
            }
            for (uint32_t k = 0; k < x->k; k++) {
                x->max_abs[k] = json_number_value(json_array_get(mx, k));
                if (!(x->max_abs[k] >= 0) || !isfinite(x->max_abs[k])) {
                    bad(r, "'max_abs' holds a negative or non-finite number", x->name);
                    return;
                }
            }
        }
        if (json_is_null(off) || !off)
            continue;
        uint64_t o64 = json_is_integer(off) && json_integer_value(off) >= 0 ? (uint64_t)json_integer_value(off) : 0;
        uint64_t need = (uint64_t)x->k * x->k * sizeof(double);
        if (!side || o64 == 0 || o64 % 64 || o64 > side_size || need > side_size - o64) {
            bad(r, "'xtx_offset' does not lie in the XᵀX file", x->name);
            return;
        }
        if (!(x->xtx = malloc(need))) {
            r->s = KN_ERR_NOMEM;
            return;
        }
        memcpy(x->xtx, side + o64, need);
    }
}

static void read_layers(reader *r, json_t *arr, kn_calib_table *t)
{
    size_t n = json_array_size(arr);
    t->layers = calloc(n + 1, sizeof *t->layers);
    if (!t->layers) {
        r->s = KN_ERR_NOMEM;
        return;
    }
    for (size_t i = 0; i < n && r->s == KN_OK; i++) {
        json_t *o = json_array_get(arr, i);
        kn_calib_table_layer *l = &t->layers[t->n_layers++];
        l->node = str_field(r, o, "node", "layers");
        l->op = str_field(r, o, "op", "layers");
        l->weight = str_field(r, o, "weight", "layers");
        l->input = str_field(r, o, "input", "layers");
        l->k = (uint32_t)uint_field(r, o, "k", UINT32_MAX, "layers");
        l->n = (uint32_t)uint_field(r, o, "n", UINT32_MAX, "layers");
        const char *lay = json_string_value(json_object_get(o, "weight_layout"));
        if (!lay || (strcmp(lay, "NK") != 0 && strcmp(lay, "KN") != 0))
            bad(r, "'weight_layout' is not \"KN\" or \"NK\"", "layers");
        else
            l->weight_nk = strcmp(lay, "NK") == 0;
        if (r->s == KN_OK && !kn_calib_table_input_find(t, l->input))
            bad(r, "a layer's 'input' is not among 'linear_inputs'", l->node);
    }
}

kn_status kn_calib_table_read(const char *json_path, kn_diag *d, kn_calib_table **out)
{
    *out = NULL;
    json_error_t je;
    json_t *root = json_load_file(json_path, 0, &je);
    if (!root) {
        bool io = je.line < 0 || strstr(je.text, "unable to open");
        kn_diag_add(d, KN_ERROR, "%s: %s%s (line %d)", json_path, io ? "cannot read: " : "not JSON: ", je.text,
                    je.line);
        return io ? KN_ERR_IO : KN_ERR_INVALID;
    }
    reader r = {json_path, d, KN_OK};
    kn_calib_table *t = calloc(1, sizeof *t);
    uint8_t *side = NULL;
    uint64_t side_size = 0;
    if (!t) {
        json_decref(root);
        return KN_ERR_NOMEM;
    }
    const char *fmt = json_string_value(json_object_get(root, "format"));
    const char *method = json_string_value(json_object_get(root, "method"));
    if (!fmt || strcmp(fmt, "kiln-calibration") != 0)
        bad(&r, "'format' is not \"kiln-calibration\"", NULL);
    else if (uint_field(&r, root, "version", 1000, NULL) != 1 && r.s == KN_OK) {
        kn_diag_add(d, KN_ERROR, "%s: calibration table version %lld: this kiln reads version 1", json_path,
                    (long long)json_integer_value(json_object_get(root, "version")));
        r.s = KN_ERR_UNSUPPORTED;
    } else if (!method || !kn_calib_method_parse(method, &t->method))
        bad(&r, "'method' is not minmax, percentile or entropy", NULL);
    t->n_samples = uint_field(&r, root, "samples", UINT64_MAX >> 1, NULL);
    json_t *xf = json_object_get(root, "xtx_file");
    if (r.s == KN_OK && json_is_object(xf))
        side = read_side(&r, xf, &side_size);
    json_t *ts = array_field(&r, root, "tensors"), *li = array_field(&r, root, "linear_inputs"),
           *ly = array_field(&r, root, "layers");
    if (r.s == KN_OK) {
        size_t n = json_array_size(ts);
        t->tensors = calloc(n + 1, sizeof *t->tensors);
        if (!t->tensors)
            r.s = KN_ERR_NOMEM;
        for (size_t i = 0; i < n && r.s == KN_OK; i++) {
            json_t *o = json_array_get(ts, i);
            kn_calib_table_tensor *x = &t->tensors[t->n_tensors++];
            x->name = str_field(&r, o, "name", "tensors");
            x->min = num_field(&r, o, "min", x->name);
            x->max = num_field(&r, o, "max", x->name);
            x->absmax = num_field(&r, o, "absmax", x->name);
            x->amax = num_field(&r, o, "amax", x->name);
        }
    }
    if (r.s == KN_OK)
        read_inputs(&r, li, side, side_size, t);
    if (r.s == KN_OK)
        read_layers(&r, ly, t);
    free(side);
    json_decref(root);
    if (r.s != KN_OK) {
        kn_calib_table_free(t);
        return r.s;
    }
    *out = t;
    return KN_OK;
}
