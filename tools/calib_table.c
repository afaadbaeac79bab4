/* Writes the calibration table (calib_table.h). */
#include "calib_table.h"
#include "json.h"
#include "tensor_io.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XTX_MAGIC "KILNXTX1"
#define XTX_ALIGN 64

char *kn_calib_side_path(const char *json_path)
{
    size_t n = strlen(json_path);
    char *p = malloc(n + 16);
    if (!p)
        return NULL;
    memcpy(p, json_path, n + 1);
    if (n > 5 && strcmp(p + n - 5, ".json") == 0)
        p[n - 5] = 0;
    strcat(p, ".xtx.bin");
    return p;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

typedef struct side {
    FILE *f;
    uint64_t size, hash; /* bytes written, FNV-1a 64 of them */
} side;

static void side_put(side *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++)
        s->hash = (s->hash ^ p[i]) * 0x100000001b3ull;
    fwrite(data, 1, n, s->f);
    s->size += n;
}

static void side_pad(side *s)
{
    static const uint8_t zeros[XTX_ALIGN];
    if (s->size % XTX_ALIGN)
        side_put(s, zeros, XTX_ALIGN - s->size % XTX_ALIGN);
}

/* Streams the XᵀX matrices (float64, little-endian, row-major, each at a
 * multiple of 64 bytes after a 64-byte header) to path atomically;
 * offsets[i] receives input i's offset (0: none). */
static kn_status write_side(const kn_calib *c, const char *path, uint64_t *offsets, side *s, kn_diag *d)
{
    KN_TRY(kn_check_output_path(path, d));
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp)
        return KN_ERR_NOMEM;
    snprintf(tmp, n + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0 || !(s->f = fdopen(fd, "wb"))) {
        kn_diag_add(d, KN_ERROR, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        free(tmp);
        return KN_ERR_IO;
    }
    s->size = 0;
    s->hash = 0xcbf29ce484222325ull;
    side_put(s, XTX_MAGIC, 8);
    side_pad(s);
    for (uint32_t i = 0; i < c->n_inputs; i++) {
        const kn_calib_input *x = &c->inputs[i];
        offsets[i] = 0;
        if (!x->xtx)
            continue;
        offsets[i] = s->size;
        side_put(s, x->xtx, (size_t)x->k * x->k * sizeof *x->xtx);
        side_pad(s);
    }
    bool ok = fflush(s->f) == 0 && !ferror(s->f) && fsync(fileno(s->f)) == 0;
    ok &= fclose(s->f) == 0;
    s->f = NULL;
    if (!ok || rename(tmp, path) != 0) {
        kn_diag_add(d, KN_ERROR, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return KN_ERR_IO;
    }
    chmod(path, 0644);
    free(tmp);
    return KN_OK;
}

kn_status kn_calib_table_write(const kn_calib *c, const char *model_path, const char *json_path, kn_diag *d)
{
    KN_TRY(kn_check_output_path(json_path, d));
    bool any_xtx = false, hist = c->o.method != KN_CALIB_MINMAX;
    for (uint32_t i = 0; i < c->n_inputs; i++)
        any_xtx |= c->inputs[i].xtx != NULL;
    char *side_path = any_xtx ? kn_calib_side_path(json_path) : NULL;
    uint64_t *offsets = calloc((size_t)c->n_inputs + 1, sizeof *offsets);
    double *mean = NULL;
    uint32_t kmax = 1;
    for (uint32_t i = 0; i < c->n_inputs; i++)
        kmax = c->inputs[i].k > kmax ? c->inputs[i].k : kmax;
    mean = malloc((size_t)kmax * sizeof *mean);
    side sf = {0};
    kn_status s = (!any_xtx || side_path) && offsets && mean ? KN_OK : KN_ERR_NOMEM;
    if (s == KN_OK && any_xtx)
        s = write_side(c, side_path, offsets, &sf, d);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = s == KN_OK ? open_memstream(&buf, &len) : NULL;
    if (s == KN_OK && !f)
        s = KN_ERR_NOMEM;
    if (s == KN_OK) {
        kn_json j;
        kn_json_init(&j, f);
        kn_json_obj_begin(&j);
        kn_json_key(&j, "format");
        kn_json_str(&j, "kiln-calibration");
        kn_json_key(&j, "version");
        kn_json_int(&j, 1);
        kn_json_key(&j, "model");
        kn_json_str(&j, base_name(model_path));
        kn_json_key(&j, "method");
        kn_json_str(&j, kn_calib_method_name(c->o.method));
        if (c->o.method == KN_CALIB_PERCENTILE) {
            kn_json_key(&j, "percentile");
            kn_json_num(&j, c->o.percentile);
        }
        if (hist) {
            kn_json_key(&j, "bins");
            kn_json_uint(&j, c->o.bins);
        }
        kn_json_key(&j, "samples");
        kn_json_uint(&j, c->n_samples);
        kn_json_key(&j, "xtx_file");
        if (any_xtx) {
            kn_json_obj_begin(&j);
            kn_json_key(&j, "name");
            kn_json_str(&j, base_name(side_path));
            kn_json_key(&j, "bytes");
            kn_json_uint(&j, sf.size);
            char h[24];
            snprintf(h, sizeof h, "%016llx", (unsigned long long)sf.hash);
            kn_json_key(&j, "fnv1a64");
            kn_json_str(&j, h);
            kn_json_obj_end(&j);
        } else {
            kn_json_null(&j);
        }
        kn_json_key(&j, "tensors");
        kn_json_arr_begin(&j);
        for (uint32_t i = 0; i < c->n_tensors; i++) {
            const kn_calib_tensor *t = &c->tensors[i];
            if (t->dtype == KN_UNDEFINED)
                continue; /* not a float tensor, or never computed */
            kn_json_obj_begin(&j);
            kn_json_key(&j, "name");
            kn_json_str(&j, t->name);
            kn_json_key(&j, "dtype");
            kn_json_str(&j, kn_dtype_name(t->dtype));
            kn_json_key(&j, "count");
            kn_json_uint(&j, t->count);
            if (t->n_nonfinite) {
                kn_json_key(&j, "non_finite");
                kn_json_uint(&j, t->n_nonfinite);
            }
            kn_json_key(&j, "min");
            kn_json_num(&j, t->min);
            kn_json_key(&j, "max");
            kn_json_num(&j, t->max);
            kn_json_key(&j, "absmax");
            kn_json_num(&j, t->absmax);
            kn_json_key(&j, "amax");
            kn_json_num(&j, t->amax);
            if (hist && t->hist) {
                kn_json_key(&j, "histogram");
                kn_json_uints_inline(&j, t->hist, c->o.bins);
            }
            kn_json_obj_end(&j);
        }
        kn_json_arr_end(&j);
        kn_json_key(&j, "linear_inputs");
        kn_json_arr_begin(&j);
        for (uint32_t i = 0; i < c->n_inputs; i++) {
            const kn_calib_input *x = &c->inputs[i];
            kn_json_obj_begin(&j);
            kn_json_key(&j, "name");
            kn_json_str(&j, x->name);
            kn_json_key(&j, "k");
            kn_json_uint(&j, x->k);
            kn_json_key(&j, "rows");
            kn_json_uint(&j, x->rows);
            for (uint32_t k = 0; k < x->k; k++)
                mean[k] = x->rows ? x->sum_abs[k] / (double)x->rows : 0;
            kn_json_key(&j, "mean_abs");
            kn_json_nums_inline(&j, mean, x->k);
            kn_json_key(&j, "max_abs");
            kn_json_nums_inline(&j, x->max_abs, x->k);
            kn_json_key(&j, "xtx_offset");
            if (x->xtx)
                kn_json_uint(&j, offsets[i]);
            else
                kn_json_null(&j);
            kn_json_obj_end(&j);
        }
        kn_json_arr_end(&j);
        kn_json_key(&j, "layers");
        kn_json_arr_begin(&j);
        for (uint32_t i = 0; i < c->n_layers; i++) {
            const kn_calib_layer *l = &c->layers[i];
            kn_json_obj_begin(&j);
            kn_json_key(&j, "node");
            kn_json_str(&j, l->name);
            kn_json_key(&j, "op");
            kn_json_str(&j, l->op);
            kn_json_key(&j, "weight");
            kn_json_str(&j, l->weight);
            kn_json_key(&j, "weight_layout");
            kn_json_str(&j, l->weight_nk ? "NK" : "KN");
            kn_json_key(&j, "k");
            kn_json_uint(&j, l->k);
            kn_json_key(&j, "n");
            kn_json_uint(&j, l->n);
            kn_json_key(&j, "input");
            kn_json_str(&j, c->inputs[l->input].name);
            kn_json_obj_end(&j);
        }
        kn_json_arr_end(&j);
        kn_json_obj_end(&j);
        kn_json_finish(&j);
        if (fclose(f) != 0)
            s = KN_ERR_NOMEM;
        else
            s = kn_write_file_atomic(json_path, buf, len, d);
    }
    free(buf);
    free(side_path);
    free(offsets);
    free(mean);
    return s;
}
