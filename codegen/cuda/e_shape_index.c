/* CUDA emitters for indexed data movement: Gather, GatherElements,
 * GatherND, the scatters (Scatter, ScatterElements, ScatterND) and OneHot.
 * Indices are read on the device (they may be run-time data); a negative
 * index counts from the end, and an index out of range reads zero (gathers)
 * or is skipped (scatters) instead of touching memory out of bounds. */
#include "codegen/cuda/emit.h"
#include "runtime/cpu/util.h"
#include "runtime/plan_format.h"

#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* The unsigned word type that moves one element of t, or NULL. */
static const char *word_type(kn_dtype t)
{
    if (t == KN_STRING)
        return NULL;
    switch (kn_dtype_bits(t)) {
    case 8: return "unsigned char";
    case 16: return "unsigned short";
    case 32: return "unsigned int";
    case 64: return "unsigned long long";
    default: return NULL;
    }
}

static const char *index_type(const kn_emit_tensor *t)
{
    return t && t->dtype == KN_I64 ? "long long" : t && t->dtype == KN_I32 ? "int" : NULL;
}

static kn_status unsupported(kn_emit *e, const char *what)
{
    return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s", what);
}

/* Registers src (freeing it) and launches it over n elements, or on one
 * thread when serial (a grid-stride loop then runs in order). */
static kn_status launch_src(kn_emit *e, kn_sb *src, const char *entry, int64_t n, bool serial,
                            const kn_emit_arg *args, uint32_t n_args)
{
    uint32_t k;
    kn_status s = kn_emit_kernel(e, kn_sb_str(src), entry, &k);
    kn_sb_free(src);
    KN_TRY(s);
    kn_dim3 grid = serial ? (kn_dim3){1, 1, 1} : kn_emit_grid(n);
    kn_dim3 block = serial ? (kn_dim3){1, 1, 1} : (kn_dim3){256, 1, 1};
    return kn_emit_launch(e, k, grid, block, 0, args, n_args);
}

static void strides_of(int32_t rank, const int64_t *dims, int64_t *st)
{
    int64_t s = 1;
    for (int32_t i = rank - 1; i >= 0; i--) {
        st[i] = s;
        s *= dims[i];
    }
}

static int64_t prod(const int64_t *d, int32_t from, int32_t to)
{
    int64_t p = 1;
    for (int32_t i = from; i < to; i++)
        p *= d[i];
    return p;
}

static int32_t norm_axis(int64_t a, int32_t rank) { return (int32_t)(a < 0 ? a + rank : a); }

/* ---- gathers ---- */

typedef struct gather_params {
    int64_t n, d, n_idx, inner;
} gather_params;

kn_status kn_emit_Gather(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *ind = kn_emit_in(e, 1), *y = kn_emit_out(e, 0);
    const char *t = x ? word_type(x->dtype) : NULL, *it = index_type(ind);
    if (!t || !it || !y)
        return unsupported(e, "data or index dtype");
    int32_t axis = norm_axis(kn_emit_attr_int(e, "axis", 0), x->rank);
    if (axis < 0 || axis >= x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range");
    gather_params p = {y->numel, x->dims[axis], ind->numel, prod(x->dims, axis + 1, x->rank)};
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, d, n_idx, inner; };\n"
                 "extern \"C\" __global__ void gather(const %s *x, const %s *ind, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 in = i %% p.inner, r = i / p.inner, t = r %% p.n_idx, o = r / p.n_idx;\n"
                 "    i64 v = (i64)ind[t];\n"
                 "    if (v < 0) v += p.d;\n"
                 "    y[i] = v >= 0 && v < p.d ? x[(o * p.d + v) * p.inner + in] : (%s)0;\n"
                 "  }\n"
                 "}\n",
                 t, it, t, t);
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return launch_src(e, &src, "gather", p.n, false, args, 4);
}

/* Element p of an index tensor of shape idims names the data element at
 * p's coordinates with the axis coordinate replaced by the index. */
typedef struct elements_params {
    int64_t n, rank, axis, d;
    int64_t idims[KN_CU_MAX_RANK], xst[KN_CU_MAX_RANK];
} elements_params;

static const char elements_offset_src[] =
    "struct P { i64 n, rank, axis, d; i64 idims[8], xst[8]; };\n"
    "/* data offset of index element p, or -1 when the index is out of range */\n"
    "template <typename I> __device__ i64 elem_off(const I *ind, i64 p, const P &q) {\n"
    "  i64 r = p, off = 0;\n"
    "  for (int k = (int)q.rank - 1; k >= 0; k--) {\n"
    "    i64 c = r % q.idims[k];\n"
    "    r /= q.idims[k];\n"
    "    if (k == q.axis) {\n"
    "      c = (i64)ind[p];\n"
    "      if (c < 0) c += q.d;\n"
    "      if (c < 0 || c >= q.d) return -1;\n"
    "    }\n"
    "    off += c * q.xst[k];\n"
    "  }\n"
    "  return off;\n"
    "}\n";

static kn_status elements_setup(kn_emit *e, const kn_emit_tensor *x, const kn_emit_tensor *ind, elements_params *p)
{
    memset(p, 0, sizeof *p);
    int32_t axis = norm_axis(kn_emit_attr_int(e, "axis", 0), x->rank);
    if (axis < 0 || axis >= x->rank || ind->rank != x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis or index rank invalid");
    p->n = ind->numel;
    p->rank = x->rank;
    p->axis = axis;
    p->d = x->dims[axis];
    strides_of(x->rank, x->dims, p->xst);
    for (int32_t i = 0; i < x->rank; i++)
        p->idims[i] = ind->dims[i];
    return KN_OK;
}

kn_status kn_emit_GatherElements(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *ind = kn_emit_in(e, 1);
    const char *t = x ? word_type(x->dtype) : NULL, *it = index_type(ind);
    if (!t || !it)
        return unsupported(e, "data or index dtype");
    elements_params p;
    KN_TRY(elements_setup(e, x, ind, &p));
    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\n");
    kn_sb_printf(&src, "%s", elements_offset_src);
    kn_sb_printf(&src,
                 "extern \"C\" __global__ void gather_elements(const %s *x, const %s *ind, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 off = elem_off(ind, i, p);\n"
                 "    y[i] = off >= 0 ? x[off] : (%s)0;\n"
                 "  }\n"
                 "}\n",
                 t, it, t, t);
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return launch_src(e, &src, "gather_elements", p.n, false, args, 4);
}

/* Index tuples of m entries address slices of `slice` elements: tuple t
 * (global over batches) reads data at (t / tuples) * per_batch +
 * (row-major offset of the tuple over dims) * slice. */
typedef struct nd_params {
    int64_t n, m, slice, tuples, per_batch;
    int64_t dims[KN_CU_MAX_RANK];
} nd_params;

static const char nd_offset_src[] =
    "struct P { i64 n, m, slice, tuples, per_batch; i64 dims[8]; };\n"
    "/* data offset of tuple t's slice, or -1 when an index is out of range */\n"
    "template <typename I> __device__ i64 tuple_off(const I *ind, i64 t, const P &q) {\n"
    "  i64 o = 0;\n"
    "  for (i64 j = 0; j < q.m; j++) {\n"
    "    i64 v = (i64)ind[t * q.m + j];\n"
    "    if (v < 0) v += q.dims[j];\n"
    "    if (v < 0 || v >= q.dims[j]) return -1;\n"
    "    o = o * q.dims[j] + v;\n"
    "  }\n"
    "  return (t / q.tuples) * q.per_batch + o * q.slice;\n"
    "}\n";

kn_status kn_emit_GatherND(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *ind = kn_emit_in(e, 1), *y = kn_emit_out(e, 0);
    const char *t = x ? word_type(x->dtype) : NULL, *it = index_type(ind);
    if (!t || !it || !y || ind->rank < 1)
        return unsupported(e, "data or index dtype");
    int64_t b = kn_emit_attr_int(e, "batch_dims", 0);
    int32_t q = ind->rank, r = x->rank;
    int64_t m = ind->dims[q - 1];
    if (b < 0 || b >= q || b + m > r)
        return kn_emit_fail(e, KN_ERR_INVALID, "batch_dims or index tuple size invalid");
    nd_params p;
    memset(&p, 0, sizeof p);
    p.n = y->numel;
    p.m = m;
    p.slice = prod(x->dims, (int32_t)(b + m), r);
    p.tuples = prod(ind->dims, (int32_t)b, q - 1);
    p.per_batch = prod(x->dims, (int32_t)b, r);
    for (int64_t j = 0; j < m; j++)
        p.dims[j] = x->dims[b + j];
    if (p.slice == 0 || p.tuples == 0)
        p.n = 0;
    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\n");
    kn_sb_printf(&src, "%s", nd_offset_src);
    kn_sb_printf(&src,
                 "extern \"C\" __global__ void gather_nd(const %s *x, const %s *ind, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 off = tuple_off(ind, i / p.slice, p);\n"
                 "    y[i] = off >= 0 ? x[off + i %% p.slice] : (%s)0;\n"
                 "  }\n"
                 "}\n",
                 t, it, t, t);
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return launch_src(e, &src, "gather_nd", p.n, false, args, 4);
}

/* ---- scatters ---- */

/* The output starts as a copy of the data; then every update element is
 * combined into it. With a reduction, or when two updates may hit the same
 * element (indices not constant, or constant with duplicates), the update
 * loop runs on one thread in order, which is exact and matches the
 * reference's last-write-wins; otherwise one thread per update. */

/* The device statement combining u[i] into y[off] for a reduction. */
static kn_status reduce_stmt(kn_emit *e, kn_dtype dt, const char *red, kn_sb *s, const char **type)
{
    static const char *const names[] = {"none", "add", "mul", "max", "min"};
    int op = -1;
    for (int i = 0; i < 5; i++)
        if (strcmp(red, names[i]) == 0)
            op = i;
    if (op < 0)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "reduction '%s'", red);
    if (op == 0) {
        *type = word_type(dt);
        if (!*type)
            return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(dt));
        kn_sb_printf(s, "y[off] = u[i];");
        return KN_OK;
    }
    *type = kn_cuda_type(dt);
    if (!*type)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "reduction on dtype %s", kn_dtype_name(dt));
    bool is_float = dt == KN_F32 || dt == KN_F64 || dt == KN_F16 || dt == KN_BF16;
    if (is_float) {
        static const char *const f[] = {"", "a + b", "a * b", "isnan(a) || isnan(b) ? a + b : a > b ? a : b",
                                        "isnan(a) || isnan(b) ? a + b : a < b ? a : b"};
        kn_sb_printf(s, "double a = kn_tod(y[off]), b = kn_tod(u[i]); y[off] = kn_fromd<%s>(%s);", *type, f[op]);
    } else {
        const char *w = dt == KN_U64 ? "u64" : "i64";
        static const char *const f[] = {"", "(A)((u64)a + (u64)b)", "(A)((u64)a * (u64)b)", "a > b ? a : b",
                                        "a < b ? a : b"};
        kn_sb_printf(s, "typedef %s A; A a = (A)y[off], b = (A)u[i]; y[off] = (%s)(%s);", w, *type, f[op]);
    }
    return KN_OK;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Whether constant target offsets are all distinct (offs is sorted). */
static bool distinct(int64_t *offs, int64_t n)
{
    qsort(offs, (size_t)n, sizeof *offs, cmp_i64);
    for (int64_t i = 1; i < n; i++)
        if (offs[i] == offs[i - 1])
            return false;
    return true;
}

/* The update loop in one thread unless the indices are constant and
 * distinct and there is no reduction. off(t) gives tuple/element t's
 * target; -1 skips. */
static bool scatter_serial(const kn_emit_tensor *ind, const char *red, int64_t n_targets,
                           int64_t (*off)(const kn_emit_tensor *, int64_t, const void *), const void *ctx)
{
    if (strcmp(red, "none") != 0 || !ind->host_data)
        return true;
    if (n_targets < 2)
        return false;
    int64_t *offs = malloc((size_t)n_targets * sizeof *offs);
    if (!offs)
        return true;
    int64_t k = 0;
    for (int64_t t = 0; t < n_targets; t++) {
        int64_t o = off(ind, t, ctx);
        if (o >= 0)
            offs[k++] = o;
    }
    bool d = distinct(offs, k);
    free(offs);
    return !d;
}

static int64_t elements_target(const kn_emit_tensor *ind, int64_t p, const void *ctx)
{
    const elements_params *q = ctx;
    int64_t r = p, off = 0;
    for (int64_t k = q->rank - 1; k >= 0; k--) {
        int64_t c = r % q->idims[k];
        r /= q->idims[k];
        if (k == q->axis) {
            c = kn_get_i64(ind->dtype, ind->host_data, p);
            if (c < 0)
                c += q->d;
            if (c < 0 || c >= q->d)
                return -1;
        }
        off += c * q->xst[k];
    }
    return off;
}

static kn_status scatter_elements(kn_emit *e, const char *red)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *ind = kn_emit_in(e, 1), *upd = kn_emit_in(e, 2);
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    const char *it = index_type(ind), *t = NULL;
    if (!x || !it || !upd || !y)
        return unsupported(e, "data or index dtype");
    elements_params p;
    KN_TRY(elements_setup(e, x, ind, &p));
    kn_sb stmt = {0};
    kn_status s = reduce_stmt(e, x->dtype, red, &stmt, &t);
    if (s != KN_OK) {
        kn_sb_free(&stmt);
        return s;
    }
    bool serial = scatter_serial(ind, red, ind->numel, elements_target, &p);
    s = kn_emit_copy(e, 0, 0, 0, 0, x->nbytes);
    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\n");
    kn_sb_printf(&src, "%s", elements_offset_src);
    kn_sb_printf(&src,
                 "extern \"C\" __global__ void scatter_elements(const %s *ind, const %s *u, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 off = elem_off(ind, i, p);\n"
                 "    if (off >= 0) { %s }\n"
                 "  }\n"
                 "}\n",
                 it, t, t, kn_sb_str(&stmt) ? kn_sb_str(&stmt) : "");
    kn_sb_free(&stmt);
    if (s != KN_OK) {
        kn_sb_free(&src);
        return s;
    }
    kn_emit_arg args[4] = {{KN_ARG_IN, 1, 0, NULL}, {KN_ARG_IN, 2, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return launch_src(e, &src, "scatter_elements", p.n, serial, args, 4);
}

kn_status kn_emit_Scatter(kn_emit *e) { return scatter_elements(e, "none"); }

kn_status kn_emit_ScatterElements(kn_emit *e)
{
    return scatter_elements(e, kn_emit_attr_str(e, "reduction", "none"));
}

static int64_t nd_target(const kn_emit_tensor *ind, int64_t t, const void *ctx)
{
    const nd_params *q = ctx;
    int64_t o = 0;
    for (int64_t j = 0; j < q->m; j++) {
        int64_t v = kn_get_i64(ind->dtype, ind->host_data, t * q->m + j);
        if (v < 0)
            v += q->dims[j];
        if (v < 0 || v >= q->dims[j])
            return -1;
        o = o * q->dims[j] + v;
    }
    return o;
}

kn_status kn_emit_ScatterND(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *ind = kn_emit_in(e, 1), *upd = kn_emit_in(e, 2);
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    const char *it = index_type(ind), *t = NULL, *red = kn_emit_attr_str(e, "reduction", "none");
    if (!x || !it || !upd || !y || ind->rank < 1)
        return unsupported(e, "data or index dtype");
    int32_t q = ind->rank, r = x->rank;
    int64_t m = ind->dims[q - 1];
    if (m > r)
        return kn_emit_fail(e, KN_ERR_INVALID, "index tuples longer than the data rank");
    nd_params p;
    memset(&p, 0, sizeof p);
    p.n = upd->numel;
    p.m = m;
    p.slice = prod(x->dims, (int32_t)m, r);
    p.tuples = prod(ind->dims, 0, q - 1);
    p.per_batch = 0;
    for (int64_t j = 0; j < m; j++)
        p.dims[j] = x->dims[j];
    if (p.slice == 0 || p.tuples == 0) {
        p.n = 0;
        p.tuples = 1;
    }
    kn_sb stmt = {0};
    kn_status s = reduce_stmt(e, x->dtype, red, &stmt, &t);
    if (s != KN_OK) {
        kn_sb_free(&stmt);
        return s;
    }
    bool serial = scatter_serial(ind, red, p.n ? p.tuples : 0, nd_target, &p);
    s = kn_emit_copy(e, 0, 0, 0, 0, x->nbytes);
    kn_sb src = {0};
    kn_sb_printf(&src, "#include \"kiln_cuda.h\"\n");
    kn_sb_printf(&src, "%s", nd_offset_src);
    kn_sb_printf(&src,
                 "extern \"C\" __global__ void scatter_nd(const %s *ind, const %s *u, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 off = tuple_off(ind, i / p.slice, p);\n"
                 "    if (off >= 0) { off += i %% p.slice; %s }\n"
                 "  }\n"
                 "}\n",
                 it, t, t, kn_sb_str(&stmt) ? kn_sb_str(&stmt) : "");
    kn_sb_free(&stmt);
    if (s != KN_OK) {
        kn_sb_free(&src);
        return s;
    }
    kn_emit_arg args[4] = {{KN_ARG_IN, 1, 0, NULL}, {KN_ARG_IN, 2, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return launch_src(e, &src, "scatter_nd", p.n, serial, args, 4);
}

/* ---- OneHot ---- */

typedef struct onehot_params {
    int64_t n, depth, inner;
} onehot_params;

kn_status kn_emit_OneHot(kn_emit *e)
{
    const kn_emit_tensor *ind = kn_emit_in(e, 0), *vals = kn_emit_in(e, 2), *y = kn_emit_out(e, 0);
    const char *it = ind ? kn_cuda_type(ind->dtype) : NULL, *t = vals ? word_type(vals->dtype) : NULL;
    if (!it || !t || !y || ind->dtype == KN_BOOL)
        return unsupported(e, "indices or values dtype");
    int32_t axis = norm_axis(kn_emit_attr_int(e, "axis", -1), y->rank);
    if (axis < 0 || axis >= y->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range");
    bool fl = ind->dtype == KN_F32 || ind->dtype == KN_F64 || ind->dtype == KN_F16 || ind->dtype == KN_BF16;
    onehot_params p = {y->numel, y->dims[axis], prod(ind->dims, axis, ind->rank)};
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, depth, inner; };\n"
                 "extern \"C\" __global__ void one_hot(const %s *ind, const %s *vals, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 in = i %% p.inner, r = i / p.inner, d = r %% p.depth, o = r / p.depth;\n"
                 "    i64 v = (i64)%s(ind[o * p.inner + in]);\n"
                 "    if (v < 0) v += p.depth;\n"
                 "    y[i] = vals[v == d ? 1 : 0];\n"
                 "  }\n"
                 "}\n",
                 it, t, t, fl ? "kn_tod" : "");
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 2, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    return launch_src(e, &src, "one_hot", p.n, false, args, 4);
}
