/* Inputs for `kiln run` and `kiln bench` (see inputs.h). */
#include "inputs.h"
#include "runtime/cpu/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64 */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

kn_status kn_cli_random_input(const kn_value *v, const char *shape_opt, uint64_t *seed, kn_diag *d,
                              kn_rt_tensor **out)
{
    int64_t dims[64];
    int32_t rank = 0;
    if (v->type.kind != KN_TYPE_TENSOR || !v->type.dtype) {
        kn_diag_add(d, KN_ERROR, "input '%s' has no tensor type; give it with --input", v->name);
        return KN_ERR_INVALID;
    }
    if (shape_opt) {
        const char *p = shape_opt;
        while (*p && rank < 64) {
            char *e;
            long long x = strtoll(p, &e, 10);
            if (e == p || x < 0) {
                kn_diag_add(d, KN_ERROR, "--shape %s=%s: expected dims like 1x3x224x224", v->name, shape_opt);
                return KN_ERR_INVALID;
            }
            dims[rank++] = x;
            p = *e == 'x' ? e + 1 : e;
            if (*e && *e != 'x') {
                kn_diag_add(d, KN_ERROR, "--shape %s=%s: expected dims like 1x3x224x224", v->name, shape_opt);
                return KN_ERR_INVALID;
            }
        }
    } else {
        if (v->type.shape.rank < 0) {
            kn_diag_add(d, KN_ERROR, "input '%s' has an unknown rank; give its shape with --shape %s=DIMS", v->name,
                        v->name);
            return KN_ERR_INVALID;
        }
        rank = v->type.shape.rank > 64 ? 64 : v->type.shape.rank;
        for (int32_t i = 0; i < rank; i++) {
            dims[i] = v->type.shape.dims[i].value >= 0 ? v->type.shape.dims[i].value : 1;
            if (v->type.shape.dims[i].value < 0)
                fprintf(stderr, "note: input '%s': dimension %d (%s) set to 1; use --shape to choose\n", v->name,
                        (int)i, v->type.shape.dims[i].sym ? v->type.shape.dims[i].sym : "?");
        }
    }
    kn_rt_tensor *t;
    kn_status s = kn_rt_tensor_new(NULL, v->type.dtype, rank, dims, &t);
    if (s != KN_OK) {
        kn_diag_add(d, KN_ERROR, "input '%s': cannot make a %s tensor of that shape", v->name,
                    kn_dtype_name(v->type.dtype));
        return s;
    }
    for (int64_t i = 0; i < t->numel; i++) {
        uint64_t r = rng_next(seed);
        double u = (double)(r >> 11) / 9007199254740992.0; /* [0, 1) */
        if (kn_dt_is_float(t->dtype))
            kn_set_f64(t->dtype, t->data, i, u * 2 - 1);
        else if (t->dtype == KN_BOOL)
            kn_set_i64(t->dtype, t->data, i, (int64_t)(r & 1));
        else if (kn_dt_is_int(t->dtype))
            kn_set_i64(t->dtype, t->data, i, (int64_t)(r % 10));
    }
    *out = t;
    return KN_OK;
}

const char *kn_cli_find_kv(const kn_cli_kv *list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            return list[i].value;
    return NULL;
}

int kn_cli_parse_kv(const char *cmd, const char *opt, const char *arg, kn_cli_kv *out)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        fprintf(stderr, "error: %s: %s expects NAME=VALUE, got '%s'\n", cmd, opt, arg);
        return -1;
    }
    char *name = strndup(arg, (size_t)(eq - arg));
    if (!name) {
        fprintf(stderr, "error: %s: out of memory\n", cmd);
        return -1;
    }
    out->name = name;
    out->value = eq + 1;
    return 0;
}

void kn_cli_free_kvs(kn_cli_kv *list, int n)
{
    for (int i = 0; list && i < n; i++)
        free((char *)list[i].name);
}
