/* TensorProto (.pb) and numpy (.npy) tensor files. */
#include "tensor_io.h"
#include "ir/ir.h"
#include "frontend/onnx_internal.h"
#include "ir/arena.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static kn_status slurp(const char *path, kn_diag *d, uint8_t **data, size_t *size)
{
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        kn_diag_add(d, KN_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        kn_diag_add(d, KN_ERROR, "%s: not a regular file", path);
        return KN_ERR_IO;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *p = malloc(n ? n : 1);
    if (!p) {
        fclose(f);
        kn_diag_add(d, KN_ERROR, "%s: out of memory", path);
        return KN_ERR_NOMEM;
    }
    if (n && fread(p, 1, n, f) != n) {
        free(p);
        fclose(f);
        kn_diag_add(d, KN_ERROR, "%s: read error", path);
        return KN_ERR_IO;
    }
    fclose(f);
    *data = p;
    *size = n;
    return KN_OK;
}

kn_status kn_write_file_atomic(const char *path, const void *data, size_t size, kn_diag *d)
{
    KN_TRY(kn_check_output_path(path, d));
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp)
        return KN_ERR_NOMEM;
    snprintf(tmp, n + 16, "%s.tmpXXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        kn_diag_add(d, KN_ERROR, "%s: cannot create: %s", path, strerror(errno));
        free(tmp);
        return KN_ERR_IO;
    }
    const uint8_t *p = data;
    size_t left = size;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            kn_diag_add(d, KN_ERROR, "%s: write failed: %s", path, strerror(errno));
            close(fd);
            unlink(tmp);
            free(tmp);
            return KN_ERR_IO;
        }
        p += w;
        left -= (size_t)w;
    }
    fchmod(fd, 0644);
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        kn_diag_add(d, KN_ERROR, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return KN_ERR_IO;
    }
    free(tmp);
    return KN_OK;
}

kn_status kn_tensor_read_pb(const char *path, const kn_allocator *a, kn_diag *d, kn_rt_tensor **out, char **name)
{
    *out = NULL;
    if (name)
        *name = NULL;
    uint8_t *bytes;
    size_t size;
    KN_TRY(slurp(path, d, &bytes, &size));
    kn_status s = kn_tensor_read_pb_memory(bytes, size, path, a, d, out, name);
    free(bytes);
    return s;
}

kn_status kn_tensor_read_pb_memory(const void *bytes, size_t size, const char *path, const kn_allocator *a, kn_diag *d,
                                   kn_rt_tensor **out, char **name)
{
    *out = NULL;
    if (name)
        *name = NULL;
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, size, bytes);
    if (!tp) {
        kn_diag_add(d, KN_ERROR, "%s: not a serialized ONNX TensorProto", path);
        return KN_ERR_INVALID;
    }
    /* convert through the importer's own tensor code, in a scratch graph */
    kn_onnx_import im = {0};
    im.diag = d;
    im.file = path;
    kn_status s = kn_graph_create(a, &im.root);
    kn_tensor *t = NULL;
    if (s == KN_OK)
        s = kn_onnx_tensor(&im, tp, "tensor", &t);
    if (s == KN_OK && t->dtype == KN_STRING) {
        kn_diag_add(d, KN_ERROR, "%s: string tensors are not supported as inputs", path);
        s = KN_ERR_UNSUPPORTED;
    }
    if (s == KN_OK)
        s = kn_rt_tensor_new(a, t->dtype, t->rank, t->dims, out);
    if (s == KN_OK && t->nbytes)
        memcpy((*out)->data, t->data, t->nbytes);
    if (s == KN_OK && name) {
        const char *nm = tp->name ? tp->name : "";
        *name = kn_mem_alloc(a, strlen(nm) + 1);
        if (*name)
            strcpy(*name, nm);
        else
            s = KN_ERR_NOMEM;
    }
    if (s != KN_OK) {
        kn_rt_tensor_free(a, *out);
        *out = NULL;
    }
    kn_onnx_ext_close(&im);
    kn_graph_destroy(im.root);
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return s;
}

kn_status kn_tensor_write_pb(const char *path, const kn_rt_tensor *t, const char *name, kn_diag *d)
{
    if (t->dtype == KN_STRING) {
        kn_diag_add(d, KN_ERROR, "%s: writing string tensors is not supported", path);
        return KN_ERR_UNSUPPORTED;
    }
    Onnx__TensorProto tp = ONNX__TENSOR_PROTO__INIT;
    tp.n_dims = (size_t)t->rank;
    tp.dims = t->dims;
    tp.has_data_type = 1;
    tp.data_type = (int32_t)t->dtype;
    tp.name = (char *)(name ? name : "");
    tp.has_raw_data = 1;
    tp.raw_data.len = t->nbytes;
    tp.raw_data.data = t->data;
    size_t n = onnx__tensor_proto__get_packed_size(&tp);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return KN_ERR_NOMEM;
    onnx__tensor_proto__pack(&tp, buf);
    kn_status s = kn_write_file_atomic(path, buf, n, d);
    free(buf);
    return s;
}

/* ---- numpy ---- */

static const struct {
    const char *descr;
    kn_dtype t;
} npy_types[] = {
    {"<f4", KN_F32}, {"<f8", KN_F64}, {"<f2", KN_F16}, {"|i1", KN_I8},  {"<i2", KN_I16},
    {"<i4", KN_I32}, {"<i8", KN_I64}, {"|u1", KN_U8},  {"<u2", KN_U16}, {"<u4", KN_U32},
    {"<u8", KN_U64}, {"|b1", KN_BOOL}, {"<c8", KN_C64}, {"<c16", KN_C128},
};

kn_status kn_tensor_read_npy(const char *path, const kn_allocator *a, kn_diag *d, kn_rt_tensor **out)
{
    *out = NULL;
    uint8_t *b;
    size_t n;
    KN_TRY(slurp(path, d, &b, &n));
    kn_status s = kn_tensor_read_npy_memory(b, n, path, a, d, out);
    free(b);
    return s;
}

kn_status kn_tensor_read_npy_memory(const void *data, size_t n, const char *path, const kn_allocator *a, kn_diag *d,
                                    kn_rt_tensor **out)
{
    *out = NULL;
    const uint8_t *b = data;
    kn_status s = KN_ERR_INVALID;
    const char *why = "not a .npy file";
    if (n < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
        goto bad;
    size_t hlen, hoff;
    if (b[6] == 1) {
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
        hoff = 10;
    } else if (b[6] == 2 || b[6] == 3) {
        if (n < 12)
            goto bad;
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        hoff = 12;
    } else {
        why = "unknown .npy format version";
        goto bad;
    }
    if (hlen > n - hoff) {
        why = "truncated header";
        goto bad;
    }
    char *h = malloc(hlen + 1);
    if (!h)
        return KN_ERR_NOMEM;
    memcpy(h, b + hoff, hlen);
    h[hlen] = 0;
    const char *ds = strstr(h, "'descr':"), *fo = strstr(h, "'fortran_order':"), *sh = strstr(h, "'shape':");
    kn_dtype t = KN_UNDEFINED;
    int64_t dims[64];
    int32_t rank = 0;
    if (ds && fo && sh) {
        const char *q = strchr(ds + 8, '\'');
        for (size_t i = 0; q && i < sizeof npy_types / sizeof npy_types[0]; i++) {
            size_t L = strlen(npy_types[i].descr);
            if (strncmp(q + 1, npy_types[i].descr, L) == 0 && q[1 + L] == '\'')
                t = npy_types[i].t;
        }
        if (strncmp(fo + 16 + strspn(fo + 16, " "), "False", 5) != 0)
            why = "Fortran-order arrays are not supported";
        const char *p = strchr(sh, '(');
        if (p && strstr(why, "Fortran") == NULL) {
            p++;
            while (*p && *p != ')') {
                while (*p == ' ' || *p == ',')
                    p++;
                if (*p == ')')
                    break;
                char *e;
                long long v = strtoll(p, &e, 10);
                if (e == p || v < 0 || rank >= 64) {
                    t = KN_UNDEFINED;
                    break;
                }
                dims[rank++] = v;
                p = e;
            }
        }
    }
    free(h);
    if (t == KN_UNDEFINED) {
        if (strstr(why, "Fortran") == NULL)
            why = "unsupported dtype or malformed header";
        goto bad;
    }
    /* the size the shape needs, checked against the bytes there are
     * before anything that large is allocated */
    int64_t numel = 1;
    size_t need;
    for (int32_t i = 0; i < rank; i++) {
        if (dims[i] && numel > INT64_MAX / dims[i]) {
            why = "element count overflows";
            goto bad;
        }
        numel *= dims[i];
    }
    if (kn_dtype_nbytes(t, numel, &need) != KN_OK || need != n - hoff - hlen) {
        why = "data size does not match the shape";
        goto bad;
    }
    kn_rt_tensor *x;
    s = kn_rt_tensor_new(a, t, rank, dims, &x);
    if (s != KN_OK) {
        why = s == KN_ERR_NOMEM ? "out of memory" : "bad shape";
        goto bad;
    }
    memcpy(x->data, b + hoff + hlen, x->nbytes);
    *out = x;
    return KN_OK;
bad:
    kn_diag_add(d, KN_ERROR, "%s: %s", path, why);
    return s == KN_OK ? KN_ERR_INVALID : s;
}

kn_status kn_tensor_write_npy(const char *path, const kn_rt_tensor *t, kn_diag *d)
{
    const char *descr = NULL;
    for (size_t i = 0; i < sizeof npy_types / sizeof npy_types[0]; i++)
        if (npy_types[i].t == t->dtype)
            descr = npy_types[i].descr;
    if (!descr) {
        kn_diag_add(d, KN_ERROR, "%s: %s tensors cannot be written as .npy", path, kn_dtype_name(t->dtype));
        return KN_ERR_UNSUPPORTED;
    }
    char hdr[4096];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int32_t i = 0; i < t->rank && len < (int)sizeof hdr - 64; i++)
        len += snprintf(hdr + len, sizeof hdr - (size_t)len, "%lld,%s", (long long)t->dims[i],
                        i + 1 < t->rank ? " " : "");
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "), }");
    size_t total_h = 10 + (size_t)len + 1;
    size_t pad = (64 - total_h % 64) % 64;
    size_t hlen = (size_t)len + pad + 1;
    size_t n = 10 + hlen + t->nbytes;
    uint8_t *buf = malloc(n);
    if (!buf)
        return KN_ERR_NOMEM;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)(hlen & 0xff);
    buf[9] = (uint8_t)(hlen >> 8);
    memcpy(buf + 10, hdr, (size_t)len);
    memset(buf + 10 + len, ' ', pad);
    buf[10 + hlen - 1] = '\n';
    if (t->nbytes)
        memcpy(buf + 10 + hlen, t->data, t->nbytes);
    kn_status s = kn_write_file_atomic(path, buf, n, d);
    free(buf);
    return s;
}

kn_status kn_tensor_read(const char *path, const kn_allocator *a, kn_diag *d, kn_rt_tensor **out, char **name)
{
    size_t n = strlen(path);
    if (name)
        *name = NULL;
    if (n >= 4 && strcmp(path + n - 4, ".npy") == 0)
        return kn_tensor_read_npy(path, a, d, out);
    return kn_tensor_read_pb(path, a, d, out, name);
}
