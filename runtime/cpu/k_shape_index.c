/* Shape-family kernels driven by index or mask tensors: Gather,
 * GatherElements, GatherND, Scatter, ScatterElements, ScatterND, NonZero,
 * OneHot, Compress, ReverseSequence, Unique. Elements move as bytes;
 * scatter reductions compute integers in int64/uint64 and floats in
 * double, so no value passes through a narrower type. Indices may be
 * negative (counted from the end, once); anything else out of range fails. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

/* ---- helpers ---- */

static kn_status check_index_type(kn_kctx *c, const kn_rt_tensor *ind)
{
    if (ind->dtype != KN_I64 && ind->dtype != KN_I32)
        return kn_kctx_fail(c, KN_ERR_INVALID, "indices must be int32 or int64, got %s", kn_dtype_name(ind->dtype));
    return KN_OK;
}

/* Index i of ind for an axis of size d: negative counts from the end. */
static kn_status index_at(kn_kctx *c, const kn_rt_tensor *ind, int64_t i, int64_t d, int64_t *out)
{
    int64_t v = kn_get_i64(ind->dtype, ind->data, i);
    int64_t w = v < 0 ? v + d : v;
    if (w < 0 || w >= d)
        return kn_kctx_fail(c, KN_ERR_INVALID, "index %lld out of range for axis size %lld", (long long)v,
                            (long long)d);
    *out = w;
    return KN_OK;
}

static int64_t prod(const int64_t *d, int32_t from, int32_t to)
{
    int64_t p = 1;
    for (int32_t i = from; i < to; i++)
        p *= d[i];
    return p;
}

/* ---- gathers ---- */

kn_status kn_ref_Gather(kn_kctx *c)
{
    const kn_rt_tensor *x, *ind;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &ind));
    KN_TRY(check_index_type(c, ind));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 0), x->rank, &axis));
    int32_t r = x->rank - 1 + ind->rank;
    if (r > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "output rank %d exceeds %d", (int)r, KN_RT_MAX_RANK);
    int64_t dims[KN_RT_MAX_RANK];
    int32_t k = 0;
    for (int32_t i = 0; i < axis; i++)
        dims[k++] = x->dims[i];
    for (int32_t i = 0; i < ind->rank; i++)
        dims[k++] = ind->dims[i];
    for (int32_t i = axis + 1; i < x->rank; i++)
        dims[k++] = x->dims[i];
    int64_t d = x->dims[axis], outer = prod(x->dims, 0, axis), inner = prod(x->dims, axis + 1, x->rank);
    int64_t *idx = kn_kctx_scratch(c, (size_t)(ind->numel + 1) * sizeof *idx);
    if (!idx)
        return KN_ERR_NOMEM;
    for (int64_t j = 0; j < ind->numel; j++)
        KN_TRY(index_at(c, ind, j, d, &idx[j]));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    size_t blk = (size_t)inner * es;
    char *dst = y->data;
    for (int64_t o = 0; o < outer && blk; o++)
        for (int64_t j = 0; j < ind->numel; j++, dst += blk)
            memcpy(dst, (const char *)x->data + (size_t)(o * d + idx[j]) * blk, blk);
    return KN_OK;
}

/* For GatherElements / ScatterElements: the data offset (in elements) of
 * position p of the index tensor, with the axis coordinate replaced by the
 * index value read there. */
static kn_status elements_offset(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *ind, int32_t axis,
                                 const int64_t *xst, int64_t p, int64_t *off)
{
    int64_t rem = p, o = 0;
    for (int32_t i = ind->rank - 1; i >= 0; i--) {
        int64_t coord = rem % ind->dims[i];
        rem /= ind->dims[i];
        if (i == axis)
            KN_TRY(index_at(c, ind, p, x->dims[axis], &coord));
        o += coord * xst[i];
    }
    *off = o;
    return KN_OK;
}

static kn_status elements_check(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *ind, int32_t axis)
{
    KN_TRY(check_index_type(c, ind));
    if (ind->rank != x->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "indices have rank %d, data rank %d", (int)ind->rank, (int)x->rank);
    for (int32_t i = 0; i < x->rank; i++)
        if (i != axis && ind->dims[i] > x->dims[i])
            return kn_kctx_fail(c, KN_ERR_INVALID, "indices dimension %d (%lld) exceeds data's (%lld)", (int)i,
                                (long long)ind->dims[i], (long long)x->dims[i]);
    return KN_OK;
}

kn_status kn_ref_GatherElements(kn_kctx *c)
{
    const kn_rt_tensor *x, *ind;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &ind));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 0), x->rank, &axis));
    KN_TRY(elements_check(c, x, ind, axis));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, ind->rank, ind->dims, &y));
    int64_t xst[KN_RT_MAX_RANK];
    kn_strides(x->rank, x->dims, xst);
    for (int64_t p = 0; p < ind->numel; p++) {
        int64_t off;
        KN_TRY(elements_offset(c, x, ind, axis, xst, p, &off));
        memcpy((char *)y->data + (size_t)p * es, (const char *)x->data + (size_t)off * es, es);
    }
    return KN_OK;
}

/* Shared by GatherND and ScatterND: data offset of index tuple t (of m
 * entries) within one batch. */
static kn_status tuple_offset(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *ind, int32_t first_axis, int64_t m,
                              int64_t t, int64_t *off)
{
    int64_t o = 0;
    for (int64_t j = 0; j < m; j++) {
        int32_t a = first_axis + (int32_t)j;
        int64_t v = 0;
        KN_TRY(index_at(c, ind, t * m + j, x->dims[a], &v));
        o = o * x->dims[a] + v;
    }
    *off = o * prod(x->dims, first_axis + (int32_t)m, x->rank);
    return KN_OK;
}

kn_status kn_ref_GatherND(kn_kctx *c)
{
    const kn_rt_tensor *x, *ind;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &ind));
    KN_TRY(check_index_type(c, ind));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int64_t b = kn_kctx_attr_int(c, "batch_dims", 0);
    int32_t q = ind->rank, r = x->rank;
    if (q < 1 || b < 0 || b >= q || b >= r)
        return kn_kctx_fail(c, KN_ERR_INVALID, "batch_dims %lld invalid for data rank %d, indices rank %d",
                            (long long)b, (int)r, (int)q);
    int64_t m = ind->dims[q - 1];
    if (m > r - b)
        return kn_kctx_fail(c, KN_ERR_INVALID, "index tuples of %lld entries for data rank %d with batch_dims %lld",
                            (long long)m, (int)r, (long long)b);
    for (int32_t i = 0; i < b; i++)
        if (x->dims[i] != ind->dims[i])
            return kn_kctx_fail(c, KN_ERR_INVALID, "batch dimension %d differs: data %lld, indices %lld", (int)i,
                                (long long)x->dims[i], (long long)ind->dims[i]);
    int64_t dims[KN_RT_MAX_RANK];
    int32_t orank = 0;
    for (int32_t i = 0; i < q - 1; i++)
        dims[orank++] = ind->dims[i];
    for (int32_t i = (int32_t)(b + m); i < r; i++)
        dims[orank++] = x->dims[i];
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, orank, dims, &y));
    int64_t nb = prod(x->dims, 0, (int32_t)b), per_batch = prod(x->dims, (int32_t)b, r);
    int64_t tuples = prod(ind->dims, (int32_t)b, q - 1), slice = prod(x->dims, (int32_t)(b + m), r);
    size_t blk = (size_t)slice * es;
    char *dst = y->data;
    for (int64_t bi = 0; bi < nb; bi++)
        for (int64_t t = 0; t < tuples; t++, dst += blk) {
            int64_t off;
            KN_TRY(tuple_offset(c, x, ind, (int32_t)b, m, bi * tuples + t, &off));
            if (blk)
                memcpy(dst, (const char *)x->data + (size_t)(bi * per_batch + off) * es, blk);
        }
    return KN_OK;
}

/* ---- scatters ---- */

typedef enum red_op { RED_NONE, RED_ADD, RED_MUL, RED_MAX, RED_MIN } red_op;

static kn_status parse_reduction(kn_kctx *c, red_op *op)
{
    const char *s = kn_kctx_attr_str(c, "reduction", "none");
    static const char *const names[] = {"none", "add", "mul", "max", "min"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, names[i]) == 0) {
            *op = (red_op)i;
            return KN_OK;
        }
    return kn_kctx_fail(c, KN_ERR_INVALID, "reduction '%s' is not none, add, mul, max or min", s);
}

/* dst[di] = op(dst[di], src[si]) in dtype t (integers exact, wrapping like
 * the dtype; floats in double, rounded once; NaN propagates through max and
 * min). */
static void reduce_elem(kn_dtype t, size_t es, void *dst, int64_t di, const void *src, int64_t si, red_op op)
{
    if (op == RED_NONE) {
        memcpy((char *)dst + (size_t)di * es, (const char *)src + (size_t)si * es, es);
        return;
    }
    if (kn_dt_is_float(t)) {
        double a = kn_get_f64(t, dst, di), b = kn_get_f64(t, src, si), v;
        switch (op) {
        case RED_ADD: v = a + b; break;
        case RED_MUL: v = a * b; break;
        case RED_MAX: v = isnan(a) || isnan(b) ? NAN : a > b ? a : b; break;
        default: v = isnan(a) || isnan(b) ? NAN : a < b ? a : b; break;
        }
        kn_set_f64(t, dst, di, v);
    } else if (t == KN_U64) {
        uint64_t a = kn_get_u64(t, dst, di), b = kn_get_u64(t, src, si), v;
        switch (op) {
        case RED_ADD: v = a + b; break;
        case RED_MUL: v = a * b; break;
        case RED_MAX: v = a > b ? a : b; break;
        default: v = a < b ? a : b; break;
        }
        kn_set_u64(t, dst, di, v);
    } else {
        int64_t a = kn_get_i64(t, dst, di), b = kn_get_i64(t, src, si), v;
        switch (op) {
        case RED_ADD: v = (int64_t)((uint64_t)a + (uint64_t)b); break;
        case RED_MUL: v = (int64_t)((uint64_t)a * (uint64_t)b); break;
        case RED_MAX: v = a > b ? a : b; break;
        default: v = a < b ? a : b; break;
        }
        kn_set_i64(t, dst, di, v);
    }
}

static kn_status scatter_inputs(kn_kctx *c, const kn_rt_tensor **x, const kn_rt_tensor **ind,
                                const kn_rt_tensor **upd, size_t *es, red_op op)
{
    KN_TRY(kn_need_in(c, 0, x));
    KN_TRY(kn_need_in(c, 1, ind));
    KN_TRY(kn_need_in(c, 2, upd));
    KN_TRY(check_index_type(c, *ind));
    KN_TRY(kn_elem_size(c, (*x)->dtype, es));
    if ((*upd)->dtype != (*x)->dtype)
        return kn_kctx_fail(c, KN_ERR_INVALID, "updates are %s, data %s", kn_dtype_name((*upd)->dtype),
                            kn_dtype_name((*x)->dtype));
    if (op != RED_NONE && !kn_dt_is_float((*x)->dtype) && !kn_dt_is_int((*x)->dtype) && (*x)->dtype != KN_BOOL)
        return kn_kctx_fail(c, KN_ERR_INVALID, "reduction on %s data", kn_dtype_name((*x)->dtype));
    return KN_OK;
}

static kn_status scatter_elements(kn_kctx *c, red_op op)
{
    const kn_rt_tensor *x, *ind, *upd;
    size_t es = 0;
    KN_TRY(scatter_inputs(c, &x, &ind, &upd, &es, op));
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 0), x->rank, &axis));
    KN_TRY(elements_check(c, x, ind, axis));
    bool same = upd->rank == ind->rank;
    for (int32_t i = 0; same && i < ind->rank; i++)
        same = upd->dims[i] == ind->dims[i];
    if (!same)
        return kn_kctx_fail(c, KN_ERR_INVALID, "updates and indices differ in shape");
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    if (x->nbytes)
        memcpy(y->data, x->data, x->nbytes);
    int64_t xst[KN_RT_MAX_RANK];
    kn_strides(x->rank, x->dims, xst);
    for (int64_t p = 0; p < ind->numel; p++) {
        int64_t off;
        KN_TRY(elements_offset(c, x, ind, axis, xst, p, &off));
        reduce_elem(x->dtype, es, y->data, off, upd->data, p, op);
    }
    return KN_OK;
}

kn_status kn_ref_Scatter(kn_kctx *c) { return scatter_elements(c, RED_NONE); }

kn_status kn_ref_ScatterElements(kn_kctx *c)
{
    red_op op = RED_NONE;
    KN_TRY(parse_reduction(c, &op));
    return scatter_elements(c, op);
}

kn_status kn_ref_ScatterND(kn_kctx *c)
{
    red_op op = RED_NONE;
    KN_TRY(parse_reduction(c, &op));
    const kn_rt_tensor *x, *ind, *upd;
    size_t es = 0;
    KN_TRY(scatter_inputs(c, &x, &ind, &upd, &es, op));
    int32_t q = ind->rank, r = x->rank;
    if (q < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "indices must have rank >= 1");
    int64_t m = ind->dims[q - 1];
    if (m > r)
        return kn_kctx_fail(c, KN_ERR_INVALID, "index tuples of %lld entries for data rank %d", (long long)m, (int)r);
    /* updates shape = indices.shape[:-1] + data.shape[m:] */
    bool ok = upd->rank == q - 1 + r - (int32_t)m;
    for (int32_t i = 0; ok && i < q - 1; i++)
        ok = upd->dims[i] == ind->dims[i];
    for (int32_t i = (int32_t)m; ok && i < r; i++)
        ok = upd->dims[q - 1 + i - (int32_t)m] == x->dims[i];
    if (!ok)
        return kn_kctx_fail(c, KN_ERR_INVALID, "updates shape must be indices.shape[:-1] + data.shape[%lld:]",
                            (long long)m);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, x->dims, &y));
    if (x->nbytes)
        memcpy(y->data, x->data, x->nbytes);
    int64_t tuples = prod(ind->dims, 0, q - 1), slice = prod(x->dims, (int32_t)m, r);
    for (int64_t t = 0; t < tuples; t++) {
        int64_t off;
        KN_TRY(tuple_offset(c, x, ind, 0, m, t, &off));
        for (int64_t e = 0; e < slice; e++)
            reduce_elem(x->dtype, es, y->data, off + e, upd->data, t * slice + e, op);
    }
    return KN_OK;
}

/* ---- masks ---- */

static bool is_nonzero(kn_dtype t, const void *data, int64_t i, size_t es)
{
    if (t == KN_STRING)
        return ((const kn_bytes *)data)[i].len != 0;
    if (kn_dt_is_float(t))
        return kn_get_f64(t, data, i) != 0;
    const unsigned char *p = (const unsigned char *)data + (size_t)i * es;
    for (size_t k = 0; k < es; k++)
        if (p[k])
            return true;
    return false;
}

kn_status kn_ref_NonZero(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int64_t nnz = 0;
    for (int64_t i = 0; i < x->numel; i++)
        nnz += is_nonzero(x->dtype, x->data, i, es);
    int32_t r = x->rank ? x->rank : 1; /* a scalar counts as shape [1] */
    int64_t dims[2] = {r, nnz};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_I64, 2, dims, &y));
    int64_t *out = y->data, k = 0;
    for (int64_t i = 0; i < x->numel; i++) {
        if (!is_nonzero(x->dtype, x->data, i, es))
            continue;
        int64_t rem = i;
        for (int32_t a = x->rank - 1; a >= 0; a--) {
            out[a * nnz + k] = rem % x->dims[a];
            rem /= x->dims[a];
        }
        k++;
    }
    return KN_OK;
}

kn_status kn_ref_Compress(kn_kctx *c)
{
    const kn_rt_tensor *x, *cond;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &cond));
    size_t es = 0, ces = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    KN_TRY(kn_elem_size(c, cond->dtype, &ces));
    if (cond->rank != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "condition must be 1-D, got rank %d", (int)cond->rank);
    const kn_attr *aa = kn_kctx_attr(c, "axis");
    int32_t axis = 0;
    int64_t outer = 1, d = x->numel, inner = 1;
    if (aa) {
        KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 0), x->rank, &axis));
        outer = prod(x->dims, 0, axis);
        d = x->dims[axis];
        inner = prod(x->dims, axis + 1, x->rank);
    }
    int64_t n = 0;
    for (int64_t i = 0; i < cond->numel; i++) {
        bool on = is_nonzero(cond->dtype, cond->data, i, ces);
        if (on && i >= d)
            return kn_kctx_fail(c, KN_ERR_INVALID, "condition selects index %lld of an axis of size %lld",
                                (long long)i, (long long)d);
        n += on;
    }
    int64_t dims[KN_RT_MAX_RANK];
    int32_t r = 1;
    dims[0] = n;
    if (aa) {
        r = x->rank;
        memcpy(dims, x->dims, (size_t)r * sizeof *dims);
        dims[axis] = n;
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    size_t blk = (size_t)inner * es;
    char *dst = y->data;
    int64_t lim = cond->numel < d ? cond->numel : d;
    for (int64_t o = 0; o < outer && blk; o++)
        for (int64_t i = 0; i < lim; i++)
            if (is_nonzero(cond->dtype, cond->data, i, ces)) {
                memcpy(dst, (const char *)x->data + (size_t)(o * d + i) * blk, blk);
                dst += blk;
            }
    return KN_OK;
}

kn_status kn_ref_OneHot(kn_kctx *c)
{
    const kn_rt_tensor *ind, *dt, *vals;
    KN_TRY(kn_need_in(c, 0, &ind));
    KN_TRY(kn_need_in(c, 1, &dt));
    KN_TRY(kn_need_in(c, 2, &vals));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, vals->dtype, &es));
    bool numeric = kn_dt_is_float(ind->dtype) || kn_dt_is_int(ind->dtype);
    if (!numeric || (!kn_dt_is_float(dt->dtype) && !kn_dt_is_int(dt->dtype)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "indices and depth must be numeric");
    if (dt->numel != 1 || vals->numel != 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "depth must hold one value and values two");
    int64_t depth = kn_get_i64(dt->dtype, dt->data, 0);
    if (depth < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "depth %lld must be positive", (long long)depth);
    int32_t r = ind->rank + 1, axis;
    if (r > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "output rank %d exceeds %d", (int)r, KN_RT_MAX_RANK);
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", -1), r, &axis));
    int64_t dims[KN_RT_MAX_RANK];
    for (int32_t i = 0, j = 0; i < r; i++)
        dims[i] = i == axis ? depth : ind->dims[j++];
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, vals->dtype, r, dims, &y));
    const char *off = vals->data, *on = (const char *)vals->data + es;
    char *out = y->data;
    for (int64_t i = 0; i < y->numel; i++)
        memcpy(out + (size_t)i * es, off, es);
    int64_t outer = prod(ind->dims, 0, axis), inner = prod(ind->dims, axis, ind->rank);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t v = kn_get_i64(ind->dtype, ind->data, o * inner + i);
            if (v < 0)
                v += depth;
            if (v >= 0 && v < depth) /* out-of-range indices give all off values */
                memcpy(out + (size_t)((o * depth + v) * inner + i) * es, on, es);
        }
    return KN_OK;
}

kn_status kn_ref_ReverseSequence(kn_kctx *c)
{
    const kn_rt_tensor *x, *lens;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &lens));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int64_t ba = kn_kctx_attr_int(c, "batch_axis", 1), ta = kn_kctx_attr_int(c, "time_axis", 0);
    if (x->rank < 2 || (ba != 0 && ba != 1) || (ta != 0 && ta != 1) || ba == ta)
        return kn_kctx_fail(c, KN_ERR_INVALID, "needs rank >= 2 and batch_axis, time_axis one each of 0 and 1");
    int64_t nb = x->dims[ba], nt = x->dims[ta];
    if ((lens->dtype != KN_I64 && lens->dtype != KN_I32) || lens->rank != 1 || lens->numel != nb)
        return kn_kctx_fail(c, KN_ERR_INVALID, "sequence_lens must be 1-D int64 of the batch size %lld", (long long)nb);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    size_t blk = (size_t)prod(x->dims, 2, x->rank) * es;
    if (!blk)
        return KN_OK;
    for (int64_t b = 0; b < nb; b++) {
        int64_t len = kn_get_i64(lens->dtype, lens->data, b);
        if (len < 0 || len > nt)
            return kn_kctx_fail(c, KN_ERR_INVALID, "sequence_lens[%lld] = %lld outside [0, %lld]", (long long)b,
                                (long long)len, (long long)nt);
        for (int64_t t = 0; t < nt; t++) {
            int64_t src_t = t < len ? len - 1 - t : t;
            int64_t dp = ta == 0 ? t * nb + b : b * nt + t, sp = ta == 0 ? src_t * nb + b : b * nt + src_t;
            memcpy((char *)y->data + (size_t)dp * blk, (const char *)x->data + (size_t)sp * blk, blk);
        }
    }
    return KN_OK;
}

/* ---- Unique ---- */

/* Slices of x along an axis (or single elements when flattened): slice k
 * holds elements (o*n + k)*inner + i for o < outer, i < inner. */
typedef struct uslices {
    const kn_rt_tensor *x;
    int64_t outer, n, inner;
} uslices;

static int cmp_elem(kn_dtype t, const void *d, int64_t a, int64_t b)
{
    if (t == KN_STRING) {
        const kn_bytes *s = d;
        size_t la = s[a].len, lb = s[b].len;
        int r = memcmp(s[a].data, s[b].data, la < lb ? la : lb);
        return r ? (r < 0 ? -1 : 1) : la < lb ? -1 : la > lb;
    }
    if (kn_dt_is_float(t)) {
        double x = kn_get_f64(t, d, a), y = kn_get_f64(t, d, b);
        if (isnan(x) || isnan(y)) /* NaNs sort last and equal each other */
            return isnan(x) - isnan(y);
        return x < y ? -1 : x > y;
    }
    if (t == KN_U64) {
        uint64_t x = kn_get_u64(t, d, a), y = kn_get_u64(t, d, b);
        return x < y ? -1 : x > y;
    }
    int64_t x = kn_get_i64(t, d, a), y = kn_get_i64(t, d, b);
    return x < y ? -1 : x > y;
}

static int cmp_slice(const uslices *s, int64_t a, int64_t b)
{
    for (int64_t o = 0; o < s->outer; o++)
        for (int64_t i = 0; i < s->inner; i++) {
            int r = cmp_elem(s->x->dtype, s->x->data, (o * s->n + a) * s->inner + i, (o * s->n + b) * s->inner + i);
            if (r)
                return r;
        }
    return 0;
}

/* Stable merge sort of v[0..n) by slice order, using tmp (n entries). */
static void sort_slices(const uslices *s, int64_t *v, int64_t *tmp, int64_t n)
{
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = cmp_slice(s, v[j], v[i]) < 0 ? v[j++] : v[i++];
            while (i < mid)
                tmp[k++] = v[i++];
            while (j < hi)
                tmp[k++] = v[j++];
        }
        memcpy(v, tmp, (size_t)n * sizeof *v);
    }
}

kn_status kn_ref_Unique(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    if (x->dtype != KN_STRING && !kn_dt_is_float(x->dtype) && !kn_dt_is_int(x->dtype) && x->dtype != KN_BOOL)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s is not supported", kn_dtype_name(x->dtype));
    bool sorted = kn_kctx_attr_int(c, "sorted", 1) != 0;
    const kn_attr *aa = kn_kctx_attr(c, "axis");
    uslices s = {x, 1, x->numel, 1};
    int32_t axis = 0;
    if (aa) {
        KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 0), x->rank, &axis));
        s.outer = prod(x->dims, 0, axis);
        s.n = x->dims[axis];
        s.inner = prod(x->dims, axis + 1, x->rank);
    }
    int64_t n = s.n;
    size_t sz = (size_t)(n + 1) * sizeof(int64_t);
    int64_t *order = kn_kctx_scratch(c, sz), *tmp = kn_kctx_scratch(c, sz), *grp = kn_kctx_scratch(c, sz);
    int64_t *first = kn_kctx_scratch(c, sz), *count = kn_kctx_scratch(c, sz), *pos = kn_kctx_scratch(c, sz);
    if (!order || !tmp || !grp || !first || !count || !pos)
        return KN_ERR_NOMEM;
    for (int64_t k = 0; k < n; k++)
        order[k] = k;
    sort_slices(&s, order, tmp, n);
    int64_t u = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t v = order[k];
        if (k == 0 || cmp_slice(&s, first[u - 1], v) != 0) {
            first[u] = v; /* the sort is stable: the lowest index leads its group */
            count[u++] = 0;
        }
        grp[v] = u - 1;
        count[u - 1]++;
    }
    /* output position of each group: sorted order, or order of first occurrence */
    int64_t next = 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t g = grp[k];
        if (first[g] == k)
            pos[g] = sorted ? g : next++;
    }
    int64_t dims[KN_RT_MAX_RANK];
    int32_t r = 1;
    dims[0] = u;
    if (aa) {
        r = x->rank;
        memcpy(dims, x->dims, (size_t)r * sizeof *dims);
        dims[axis] = u;
    }
    kn_rt_tensor *y, *yi = NULL, *yinv = NULL, *yc = NULL;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    uint32_t nout = kn_kctx_n_outputs(c);
    if (nout > 1)
        KN_TRY(kn_kctx_out(c, 1, KN_I64, 1, &u, &yi));
    if (nout > 2)
        KN_TRY(kn_kctx_out(c, 2, KN_I64, 1, &n, &yinv));
    if (nout > 3)
        KN_TRY(kn_kctx_out(c, 3, KN_I64, 1, &u, &yc));
    size_t blk = (size_t)s.inner * es;
    for (int64_t g = 0; g < u; g++) {
        int64_t p = pos[g];
        for (int64_t o = 0; o < s.outer && blk; o++)
            memcpy((char *)y->data + (size_t)(o * u + p) * blk, (const char *)x->data + (size_t)(o * n + first[g]) * blk,
                   blk);
        if (yi)
            ((int64_t *)yi->data)[p] = first[g];
        if (yc)
            ((int64_t *)yc->data)[p] = count[g];
    }
    if (yinv)
        for (int64_t k = 0; k < n; k++)
            ((int64_t *)yinv->data)[k] = pos[grp[k]];
    return KN_OK;
}
