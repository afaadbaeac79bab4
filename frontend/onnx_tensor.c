/* ONNX tensors, sparse tensors, external data and types → IR. */
#include "frontend/onnx_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kiln assumes a little-endian host (ONNX raw_data is little-endian)"
#endif

#define KN_MAX_RANK 64

struct ext_file {
    struct ext_file *next;
    char *path;      /* resolved real path */
    const uint8_t *data;
    size_t size;     /* bytes */
};

kn_status kn_onnx_fail(kn_onnx_import *im, kn_status s)
{
    if (s != KN_OK && im->status == KN_OK)
        im->status = s;
    return s;
}

#define ERR(im, s, ...)                                          \
    (kn_diag_add((im)->diag, KN_ERROR, __VA_ARGS__), kn_onnx_fail((im), (s)))

kn_status kn_onnx_account(kn_onnx_import *im, size_t bytes, const char *what)
{
    size_t lim = im->opts.max_data_bytes;
    if (lim && (bytes > lim || im->data_bytes > lim - bytes))
        return ERR(im, KN_ERR_LIMIT,
                   "%s: %s: tensor data, strings and attribute lists would take more than %zu bytes in memory "
                   "(kn_import_options.max_data_bytes)", im->file, what, lim);
    im->data_bytes += bytes;
    return KN_OK;
}

void kn_onnx_ext_close(kn_onnx_import *im)
{
    const kn_allocator *a = im->root->alloc;
    for (struct ext_file *f = im->ext; f;) {
        struct ext_file *n = f->next;
        kn_mem_free(a, f->path);
        kn_mem_free(a, f);
        f = n;
    }
    im->ext = NULL;
    kn_mem_free(a, im->base_real);
    im->base_real = NULL;
}

/* Strict non-negative decimal. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return false;
    uint64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static char *mem_strdup(const kn_allocator *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = kn_mem_alloc(a, n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* Maps the external file `location` (relative to the model's folder),
 * refusing anything that would read outside that folder. */
static kn_status ext_open(kn_onnx_import *im, const char *location, const char *what, struct ext_file **out)
{
    const kn_allocator *a = im->root->alloc;
    if (!im->base_dir)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data '%s' cannot be used: the model was not read from a file",
                   im->file, what, location);
    if (!*location)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data has an empty location", im->file, what);
    if (location[0] == '/')
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data location '%s' is an absolute path; it must be relative to the model's folder",
                   im->file, what, location);
    for (const char *p = location; *p;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return ERR(im, KN_ERR_INVALID, "%s: %s: external data location '%s' leaves the model's folder ('..')",
                       im->file, what, location);
        p += n;
        while (*p == '/')
            p++;
    }
    if (!im->base_real) {
        char buf[PATH_MAX];
        if (!realpath(im->base_dir, buf))
            return ERR(im, KN_ERR_IO, "%s: cannot resolve the model's folder '%s': %s", im->file, im->base_dir, strerror(errno));
        im->base_real = mem_strdup(a, buf);
        if (!im->base_real)
            return kn_onnx_fail(im, KN_ERR_NOMEM);
    }
    size_t blen = strlen(im->base_real), llen = strlen(location);
    if (blen + llen + 2 > PATH_MAX)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data location '%s' is too long", im->file, what, location);
    char joined[PATH_MAX], real[PATH_MAX];
    memcpy(joined, im->base_real, blen);
    joined[blen] = '/';
    memcpy(joined + blen + 1, location, llen + 1);
    if (!realpath(joined, real))
        return ERR(im, KN_ERR_IO, "%s: %s: external data file '%s': %s", im->file, what, location, strerror(errno));
    bool inside = strncmp(real, im->base_real, blen) == 0 &&
                  (real[blen] == '/' || (blen == 1 && im->base_real[0] == '/'));
    if (!inside)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data file '%s' resolves to '%s', outside the model's folder",
                   im->file, what, location, real);
    for (struct ext_file *f = im->ext; f; f = f->next)
        if (strcmp(f->path, real) == 0) {
            *out = f;
            return KN_OK;
        }
    int fd = open(real, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ERR(im, KN_ERR_IO, "%s: %s: cannot open external data file '%s': %s", im->file, what, location, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data '%s' is not a regular file", im->file, what, location);
    }
    struct ext_file *f = kn_mem_alloc(a, sizeof *f);
    char *path = mem_strdup(a, real);
    if (!f || !path) {
        close(fd);
        kn_mem_free(a, f);
        kn_mem_free(a, path);
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    }
    f->path = path;
    f->size = (size_t)st.st_size;
    f->data = NULL;
    if (f->size) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            kn_mem_free(a, path);
            kn_mem_free(a, f);
            return ERR(im, KN_ERR_IO, "%s: %s: cannot map external data file '%s': %s", im->file, what, location, strerror(e));
        }
        kn_status s = kn_graph_add_mapping(im->root, m, f->size);
        if (s != KN_OK) {
            munmap(m, f->size);
            close(fd);
            kn_mem_free(a, path);
            kn_mem_free(a, f);
            return kn_onnx_fail(im, s);
        }
        f->data = m;
    }
    close(fd);
    f->next = im->ext;
    im->ext = f;
    *out = f;
    return KN_OK;
}

static kn_status tensor_external(kn_onnx_import *im, Onnx__TensorProto *tp, kn_tensor *t, const char *what)
{
    const char *location = NULL, *off_s = NULL, *len_s = NULL;
    for (size_t i = 0; i < tp->n_external_data; i++) {
        const Onnx__StringStringEntryProto *kv = tp->external_data[i];
        if (!kv || !kv->key)
            continue;
        if (strcmp(kv->key, "location") == 0)
            location = kv->value ? kv->value : "";
        else if (strcmp(kv->key, "offset") == 0)
            off_s = kv->value ? kv->value : "";
        else if (strcmp(kv->key, "length") == 0)
            len_s = kv->value ? kv->value : "";
    }
    if (!location)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data without a 'location'", im->file, what);
    if (t->dtype == KN_STRING)
        return ERR(im, KN_ERR_INVALID, "%s: %s: string tensors cannot have external data", im->file, what);
    uint64_t off = 0, len = 0;
    if (off_s && !parse_u64(off_s, &off))
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data offset '%s' in '%s' is not a non-negative integer",
                   im->file, what, off_s, location);
    if (len_s && !parse_u64(len_s, &len))
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data length '%s' in '%s' is not a non-negative integer",
                   im->file, what, len_s, location);
    struct ext_file *f;
    KN_TRY(ext_open(im, location, what, &f));
    if (off > f->size)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data offset %llu is past the end of '%s' (%zu bytes)",
                   im->file, what, (unsigned long long)off, location, f->size);
    if (!len_s)
        len = f->size - off;
    if (len > f->size - off)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data range [%llu, +%llu) exceeds '%s' (%zu bytes)",
                   im->file, what, (unsigned long long)off, (unsigned long long)len, location, f->size);
    if (len != t->nbytes)
        return ERR(im, KN_ERR_INVALID, "%s: %s: external data length %llu in '%s' does not match %s with %lld elements (%zu bytes)",
                   im->file, what, (unsigned long long)len, location, kn_dtype_name(t->dtype), (long long)t->n_elems, t->nbytes);
    t->data = f->data ? f->data + off : NULL;
    t->is_external = true;
    return KN_OK;
}

/* Widths of the typed repeated fields: which one holds each dtype, and how
 * many entries per element (complex: 2; 4-bit types: one per two elements). */
static kn_status tensor_typed(kn_onnx_import *im, Onnx__TensorProto *tp, kn_tensor *t, const char *what)
{
    int64_t n = t->n_elems;
    size_t have;
    const char *field;
    uint64_t want = (uint64_t)n;
    switch (t->dtype) {
    case KN_F32: have = tp->n_float_data; field = "float_data"; break;
    case KN_C64: have = tp->n_float_data; field = "float_data"; want *= 2; break;
    case KN_F64: have = tp->n_double_data; field = "double_data"; break;
    case KN_C128: have = tp->n_double_data; field = "double_data"; want *= 2; break;
    case KN_I64: have = tp->n_int64_data; field = "int64_data"; break;
    case KN_U32: case KN_U64: have = tp->n_uint64_data; field = "uint64_data"; break;
    case KN_STRING: have = tp->n_string_data; field = "string_data"; break;
    case KN_U4: case KN_I4: case KN_F4E2M1:
        have = tp->n_int32_data; field = "int32_data"; want = (want + 1) / 2; break;
    default: have = tp->n_int32_data; field = "int32_data"; break;
    }
    size_t others = tp->n_float_data + tp->n_double_data + tp->n_int64_data + tp->n_uint64_data +
                    tp->n_string_data + tp->n_int32_data - have;
    if (have == 0 && others == 0 && n > 0)
        return ERR(im, KN_ERR_INVALID, "%s: %s: %s tensor with %lld elements has no data",
                   im->file, what, kn_dtype_name(t->dtype), (long long)n);
    if (others)
        return ERR(im, KN_ERR_INVALID, "%s: %s: %s tensor stores data in a field other than %s",
                   im->file, what, kn_dtype_name(t->dtype), field);
    if ((uint64_t)have != want)
        return ERR(im, KN_ERR_INVALID, "%s: %s: %s holds %zu entries, but a %s tensor of %lld elements needs %llu",
                   im->file, what, field, have, kn_dtype_name(t->dtype), (long long)n, (unsigned long long)want);
    if (t->dtype == KN_STRING) {
        kn_bytes *s = kn_graph_alloc(im->root, (size_t)n * sizeof *s + 1);
        if (!s)
            return kn_onnx_fail(im, KN_ERR_NOMEM);
        for (int64_t i = 0; i < n; i++) {
            const ProtobufCBinaryData *b = &tp->string_data[i];
            KN_TRY(kn_onnx_account(im, b->len, what));
            s[i].len = b->len;
            s[i].data = b->len ? kn_arena_dup(im->root->arena, b->data, b->len) : (const uint8_t *)"";
            if (!s[i].data)
                return kn_onnx_fail(im, KN_ERR_NOMEM);
        }
        t->data = s;
        return KN_OK;
    }
    KN_TRY(kn_onnx_account(im, t->nbytes, what));
    uint8_t *d = kn_graph_alloc(im->root, t->nbytes);
    if (!d)
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    t->data = d;
    if (!t->nbytes)
        return KN_OK; /* empty: the fields may be NULL, which memcpy must not see */
    switch (t->dtype) {
    case KN_F32: case KN_C64: memcpy(d, tp->float_data, t->nbytes); break;
    case KN_F64: case KN_C128: memcpy(d, tp->double_data, t->nbytes); break;
    case KN_I64: memcpy(d, tp->int64_data, t->nbytes); break;
    case KN_U64: memcpy(d, tp->uint64_data, t->nbytes); break;
    case KN_U32:
        for (int64_t i = 0; i < n; i++) {
            uint32_t v = (uint32_t)tp->uint64_data[i];
            memcpy(d + 4 * i, &v, 4);
        }
        break;
    case KN_I32: memcpy(d, tp->int32_data, t->nbytes); break;
    case KN_I16: case KN_U16: case KN_F16: case KN_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t v = (uint16_t)tp->int32_data[i];
            memcpy(d + 2 * i, &v, 2);
        }
        break;
    case KN_BOOL:
        for (int64_t i = 0; i < n; i++)
            d[i] = tp->int32_data[i] != 0;
        break;
    default: /* one byte per entry: 8-bit ints, float8, packed 4-bit pairs */
        for (size_t i = 0; i < t->nbytes; i++)
            d[i] = (uint8_t)tp->int32_data[i];
        break;
    }
    t->data = d;
    return KN_OK;
}

/* Fills dtype, dims, element and byte counts. */
static kn_status tensor_header(kn_onnx_import *im, int data_type, size_t n_dims, const int64_t *dims,
                               const char *what, kn_tensor *t)
{
    if (!kn_dtype_valid(data_type))
        return ERR(im, KN_ERR_INVALID, "%s: %s: unknown data type %d", im->file, what, data_type);
    if (n_dims > KN_MAX_RANK)
        return ERR(im, KN_ERR_LIMIT, "%s: %s: rank %zu exceeds the limit of %d", im->file, what, n_dims, KN_MAX_RANK);
    t->dtype = (kn_dtype)data_type;
    t->rank = (int32_t)n_dims;
    t->dims = kn_graph_alloc(im->root, (n_dims ? n_dims : 1) * sizeof *t->dims);
    if (!t->dims)
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    int64_t n = 1;
    for (size_t i = 0; i < n_dims; i++) {
        if (dims[i] < 0)
            return ERR(im, KN_ERR_INVALID, "%s: %s: dimension %zu is negative (%lld)", im->file, what, i, (long long)dims[i]);
        if (dims[i] && n > INT64_MAX / dims[i])
            return ERR(im, KN_ERR_LIMIT, "%s: %s: element count overflows", im->file, what);
        n *= dims[i];
        t->dims[i] = dims[i];
    }
    t->n_elems = n;
    if (kn_dtype_nbytes(t->dtype, n, &t->nbytes) != KN_OK)
        return ERR(im, KN_ERR_LIMIT, "%s: %s: byte size of %lld %s elements overflows", im->file, what, (long long)n,
                   kn_dtype_name(t->dtype));
    return KN_OK;
}

kn_status kn_onnx_tensor(kn_onnx_import *im, Onnx__TensorProto *tp, const char *what, kn_tensor **out)
{
    *out = NULL;
    kn_tensor *t = kn_graph_alloc(im->root, sizeof *t);
    if (!t)
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    KN_TRY(kn_graph_intern_cstr(im->root, tp->name, &t->name) == KN_OK ? KN_OK : kn_onnx_fail(im, KN_ERR_NOMEM));
    if (tp->segment)
        return ERR(im, KN_ERR_UNSUPPORTED, "%s: %s: segmented tensors are not supported", im->file, what);
    KN_TRY(tensor_header(im, tp->has_data_type ? tp->data_type : 0, tp->n_dims, tp->dims, what, t));
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
        KN_TRY(tensor_external(im, tp, t, what));
    } else if (tp->has_data_location && tp->data_location != ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT) {
        return ERR(im, KN_ERR_INVALID, "%s: %s: unknown data_location %d", im->file, what, (int)tp->data_location);
    } else if (tp->has_raw_data) {
        if (t->dtype == KN_STRING)
            return ERR(im, KN_ERR_INVALID, "%s: %s: string tensors cannot use raw_data", im->file, what);
        if (tp->raw_data.len != t->nbytes)
            return ERR(im, KN_ERR_INVALID, "%s: %s: raw_data has %zu bytes, but %lld %s elements need %zu",
                       im->file, what, tp->raw_data.len, (long long)t->n_elems, kn_dtype_name(t->dtype), t->nbytes);
        KN_TRY(kn_onnx_account(im, t->nbytes, what));
        if (t->nbytes && im->in_function) {
            t->data = kn_arena_dup(im->root->arena, tp->raw_data.data, t->nbytes);
            if (!t->data)
                return kn_onnx_fail(im, KN_ERR_NOMEM);
        } else if (t->nbytes) {
            /* take over the decoder's copy instead of copying again */
            KN_TRY(kn_graph_adopt(im->root, tp->raw_data.data) == KN_OK ? KN_OK : kn_onnx_fail(im, KN_ERR_NOMEM));
            t->data = tp->raw_data.data;
            tp->raw_data.data = NULL;
            tp->raw_data.len = 0;
            tp->has_raw_data = 0;
        }
    } else {
        KN_TRY(tensor_typed(im, tp, t, what));
    }
    *out = t;
    return KN_OK;
}

kn_status kn_onnx_sparse(kn_onnx_import *im, Onnx__SparseTensorProto *sp, const char *what, kn_tensor **out)
{
    *out = NULL;
    if (!sp->values || !sp->indices)
        return ERR(im, KN_ERR_INVALID, "%s: %s: sparse tensor without values or indices", im->file, what);
    kn_tensor *vals, *idx;
    KN_TRY(kn_onnx_tensor(im, sp->values, what, &vals));
    KN_TRY(kn_onnx_tensor(im, sp->indices, what, &idx));
    if (vals->dtype == KN_STRING || kn_dtype_bits(vals->dtype) < 8)
        return ERR(im, KN_ERR_UNSUPPORTED, "%s: %s: sparse %s tensors are not supported", im->file, what,
                   kn_dtype_name(vals->dtype));
    if (vals->rank != 1)
        return ERR(im, KN_ERR_INVALID, "%s: %s: sparse values must be 1-D", im->file, what);
    if (idx->dtype != KN_I64)
        return ERR(im, KN_ERR_INVALID, "%s: %s: sparse indices must be int64", im->file, what);
    kn_tensor *t = kn_graph_alloc(im->root, sizeof *t);
    if (!t)
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    t->name = vals->name;
    KN_TRY(tensor_header(im, vals->dtype, sp->n_dims, sp->dims, what, t));
    int64_t nnz = vals->n_elems;
    bool linear = idx->rank == 1 && idx->n_elems == nnz;
    bool coords = idx->rank == 2 && idx->dims[0] == nnz && idx->dims[1] == t->rank;
    if (!linear && !coords)
        return ERR(im, KN_ERR_INVALID, "%s: %s: sparse indices shape does not match %lld values of rank %d",
                   im->file, what, (long long)nnz, (int)t->rank);
    size_t esz = kn_dtype_bits(t->dtype) / 8;
    KN_TRY(kn_onnx_account(im, t->nbytes, what));
    uint8_t *d = kn_graph_alloc(im->root, t->nbytes);
    if (!d)
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    const int64_t *ix = idx->data;
    const uint8_t *v = vals->data;
    for (int64_t k = 0; k < nnz; k++) {
        int64_t lin = 0;
        if (linear) {
            memcpy(&lin, ix + k, sizeof lin);
        } else {
            for (int32_t r = 0; r < t->rank; r++) {
                int64_t c;
                memcpy(&c, ix + k * t->rank + r, sizeof c);
                if (c < 0 || c >= t->dims[r])
                    return ERR(im, KN_ERR_INVALID, "%s: %s: sparse index %lld out of range", im->file, what, (long long)c);
                lin = lin * t->dims[r] + c;
            }
        }
        if (lin < 0 || lin >= t->n_elems)
            return ERR(im, KN_ERR_INVALID, "%s: %s: sparse index %lld out of range", im->file, what, (long long)lin);
        memcpy(d + (size_t)lin * esz, v + (size_t)k * esz, esz);
    }
    t->data = d;
    *out = t;
    return KN_OK;
}

static kn_status shape_of(kn_onnx_import *im, const Onnx__TensorShapeProto *sh, const char *what, kn_shape *out)
{
    out->rank = -1;
    out->dims = NULL;
    if (!sh)
        return KN_OK;
    if (sh->n_dim > KN_MAX_RANK)
        return ERR(im, KN_ERR_LIMIT, "%s: %s: rank %zu exceeds the limit of %d", im->file, what, sh->n_dim, KN_MAX_RANK);
    out->dims = kn_graph_alloc(im->root, (sh->n_dim ? sh->n_dim : 1) * sizeof *out->dims);
    if (!out->dims)
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    for (size_t i = 0; i < sh->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = sh->dim[i];
        kn_dim *o = &out->dims[i];
        o->value = -1;
        o->sym = NULL;
        if (!d)
            continue;
        if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
            if (d->dim_value < 0)
                return ERR(im, KN_ERR_INVALID, "%s: %s: dimension %zu is negative (%lld)", im->file, what, i,
                           (long long)d->dim_value);
            o->value = d->dim_value;
        } else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM && d->dim_param &&
                   *d->dim_param) {
            if (kn_graph_intern_cstr(im->root, d->dim_param, &o->sym) != KN_OK)
                return kn_onnx_fail(im, KN_ERR_NOMEM);
        }
    }
    out->rank = (int32_t)sh->n_dim;
    return KN_OK;
}

static kn_status type_rec(kn_onnx_import *im, const Onnx__TypeProto *tp, const char *what, kn_type *out, int depth)
{
    memset(out, 0, sizeof *out);
    out->shape.rank = -1;
    if (!tp)
        return KN_OK;
    if (depth > 32)
        return ERR(im, KN_ERR_LIMIT, "%s: %s: type nested deeper than 32 levels", im->file, what);
    switch (tp->value_case) {
    case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE:
    case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE: {
        int32_t et;
        const Onnx__TensorShapeProto *sh;
        if (tp->value_case == ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE) {
            out->kind = KN_TYPE_TENSOR;
            et = tp->tensor_type && tp->tensor_type->has_elem_type ? tp->tensor_type->elem_type : 0;
            sh = tp->tensor_type ? tp->tensor_type->shape : NULL;
        } else {
            out->kind = KN_TYPE_SPARSE_TENSOR;
            et = tp->sparse_tensor_type && tp->sparse_tensor_type->has_elem_type ? tp->sparse_tensor_type->elem_type : 0;
            sh = tp->sparse_tensor_type ? tp->sparse_tensor_type->shape : NULL;
        }
        if (et != 0 && !kn_dtype_valid(et))
            return ERR(im, KN_ERR_INVALID, "%s: %s: unknown element type %d", im->file, what, (int)et);
        out->dtype = (kn_dtype)et;
        return shape_of(im, sh, what, &out->shape);
    }
    case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE:
    case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE: {
        const Onnx__TypeProto *e;
        if (tp->value_case == ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE) {
            out->kind = KN_TYPE_SEQUENCE;
            e = tp->sequence_type ? tp->sequence_type->elem_type : NULL;
        } else {
            out->kind = KN_TYPE_OPTIONAL;
            e = tp->optional_type ? tp->optional_type->elem_type : NULL;
        }
        out->elem = kn_graph_alloc(im->root, sizeof *out->elem);
        if (!out->elem)
            return kn_onnx_fail(im, KN_ERR_NOMEM);
        return type_rec(im, e, what, out->elem, depth + 1);
    }
    case ONNX__TYPE_PROTO__VALUE_MAP_TYPE: {
        out->kind = KN_TYPE_MAP;
        int32_t kt = tp->map_type && tp->map_type->has_key_type ? tp->map_type->key_type : 0;
        if (kt != 0 && !kn_dtype_valid(kt))
            return ERR(im, KN_ERR_INVALID, "%s: %s: unknown map key type %d", im->file, what, (int)kt);
        out->dtype = (kn_dtype)kt;
        out->elem = kn_graph_alloc(im->root, sizeof *out->elem);
        if (!out->elem)
            return kn_onnx_fail(im, KN_ERR_NOMEM);
        return type_rec(im, tp->map_type ? tp->map_type->value_type : NULL, what, out->elem, depth + 1);
    }
    default:
        return KN_OK;
    }
}

kn_status kn_onnx_type(kn_onnx_import *im, const Onnx__TypeProto *tp, const char *what, kn_type *out)
{
    return type_rec(im, tp, what, out, 0);
}

kn_status kn_onnx_tensor_type(kn_onnx_import *im, const kn_tensor *t, kn_type *out)
{
    memset(out, 0, sizeof *out);
    out->kind = KN_TYPE_TENSOR;
    out->dtype = t->dtype;
    out->shape.rank = t->rank;
    out->shape.dims = kn_graph_alloc(im->root, (t->rank ? (size_t)t->rank : 1) * sizeof(kn_dim));
    if (!out->shape.dims)
        return kn_onnx_fail(im, KN_ERR_NOMEM);
    for (int32_t i = 0; i < t->rank; i++)
        out->shape.dims[i].value = t->dims[i];
    return KN_OK;
}
