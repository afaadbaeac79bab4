/* Shape-family kernels that only rearrange elements: Reshape, Flatten,
 * Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile,
 * DepthToSpace, SpaceToDepth, Trilu, and the shape/constant makers Shape,
 * Size, ConstantOfShape, Range, EyeLike. Elements move as bytes
 * (kn_dt_size, or a kn_bytes for strings), so every dtype stays exact. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

/* ---- helpers ---- */

static inline void copy_elem(char *d, const char *s, size_t es)
{
    switch (es) {
    case 1: memcpy(d, s, 1); break;
    case 2: memcpy(d, s, 2); break;
    case 4: memcpy(d, s, 4); break;
    case 8: memcpy(d, s, 8); break;
    case 16: memcpy(d, s, 16); break;
    default: memcpy(d, s, es); break;
    }
}

/* Fills the contiguous dst (shape rank/dims) from a strided view of src:
 * dst[idx] = src[base + sum idx[k] * st[k]] (element units; strides may be
 * 0 or negative). The caller guarantees every address is in bounds. */
static void copy_view(void *dst, const void *src, size_t es, int32_t rank, const int64_t *dims, int64_t base,
                      const int64_t *st)
{
    int64_t n = kn_numel(rank, dims);
    if (n <= 0)
        return;
    char *d = dst;
    const char *s = src;
    if (rank == 0) {
        copy_elem(d, s + (size_t)base * es, es);
        return;
    }
    int64_t idx[2 * KN_RT_MAX_RANK];
    for (int32_t k = 0; k < rank; k++)
        idx[k] = 0;
    int32_t last = rank - 1;
    int64_t inner = dims[last], ist = st[last], off = base;
    for (int64_t o = 0; o < n; o += inner) {
        if (ist == 1) {
            memcpy(d, s + (size_t)off * es, (size_t)inner * es);
            d += (size_t)inner * es;
        } else {
            for (int64_t j = 0; j < inner; j++, d += es)
                copy_elem(d, s + (size_t)(off + j * ist) * es, es);
        }
        for (int32_t k = last - 1; k >= 0; k--) {
            off += st[k];
            if (++idx[k] < dims[k])
                break;
            off -= st[k] * dims[k];
            idx[k] = 0;
        }
    }
}

/* Output 0 = input 0's bytes under a new shape (Reshape and friends). */
static kn_status out_same_data(kn_kctx *c, const kn_rt_tensor *x, int32_t rank, const int64_t *dims)
{
    int64_t n = kn_numel(rank, dims);
    if (n != x->numel)
        return kn_kctx_fail(c, KN_ERR_INVALID, "cannot reshape %lld elements into %lld", (long long)x->numel,
                            (long long)n);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, rank, dims, &y));
    if (x->nbytes)
        memcpy(y->data, x->data, x->nbytes);
    return KN_OK;
}

/* Axes from the attribute (opset < first_input_opset) or from input `in`.
 * *n_axes = -1 when none were given. */
static kn_status read_axes(kn_kctx *c, int64_t first_input_opset, uint32_t in, int64_t **axes, int64_t *n_axes)
{
    *axes = NULL;
    *n_axes = -1;
    if (kn_kctx_opset(c) < first_input_opset) {
        uint32_t n;
        const int64_t *a = kn_kctx_attr_ints(c, "axes", &n);
        if (!kn_kctx_attr(c, "axes"))
            return KN_OK;
        int64_t *v = kn_kctx_scratch(c, ((size_t)n + 1) * sizeof *v);
        if (!v)
            return KN_ERR_NOMEM;
        if (n)
            memcpy(v, a, n * sizeof *v);
        *axes = v;
        *n_axes = n;
        return KN_OK;
    }
    const kn_rt_tensor *t = kn_kctx_in(c, in);
    if (!t)
        return KN_OK;
    return kn_read_ints(c, t, axes, n_axes);
}

/* Normalizes n axes for rank into out (and marks seen[]); duplicates fail. */
static kn_status norm_axes(kn_kctx *c, const int64_t *axes, int64_t n, int32_t rank, int32_t *out, bool *seen)
{
    for (int32_t i = 0; i < rank; i++)
        seen[i] = false;
    for (int64_t i = 0; i < n; i++) {
        int32_t a;
        KN_TRY(kn_axis(c, axes[i], rank, &a));
        if (seen[a])
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld repeated", (long long)axes[i]);
        seen[a] = true;
        if (out)
            out[i] = a;
    }
    return KN_OK;
}

/* ---- reshaping ---- */

kn_status kn_ref_Reshape(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    int64_t *shape, n;
    if (kn_kctx_opset(c) < 5) {
        uint32_t na;
        const int64_t *a = kn_kctx_attr_ints(c, "shape", &na);
        shape = kn_kctx_scratch(c, ((size_t)na + 1) * sizeof *shape);
        if (!shape)
            return KN_ERR_NOMEM;
        if (na)
            memcpy(shape, a, na * sizeof *shape);
        n = na;
    } else {
        const kn_rt_tensor *s;
        KN_TRY(kn_need_in(c, 1, &s));
        if (s->dtype != KN_I64)
            return kn_kctx_fail(c, KN_ERR_INVALID, "shape must be int64, got %s", kn_dtype_name(s->dtype));
        KN_TRY(kn_read_ints(c, s, &shape, &n));
    }
    if (n > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "shape has %lld entries (at most %d)", (long long)n, KN_RT_MAX_RANK);
    bool allowzero = kn_kctx_attr_int(c, "allowzero", 0) != 0;
    int64_t dims[KN_RT_MAX_RANK];
    int32_t infer = -1;
    int64_t known = 1;
    bool has_zero = false;
    for (int32_t i = 0; i < (int32_t)n; i++) {
        int64_t d = shape[i];
        if (d == 0 && !allowzero) {
            if (i >= x->rank)
                return kn_kctx_fail(c, KN_ERR_INVALID, "shape[%d] is 0 (copy) but the input has rank %d", (int)i,
                                    (int)x->rank);
            d = x->dims[i];
        } else if (d == -1) {
            if (infer >= 0)
                return kn_kctx_fail(c, KN_ERR_INVALID, "shape has more than one -1");
            infer = i;
            dims[i] = 1;
            continue;
        } else if (d < 0) {
            return kn_kctx_fail(c, KN_ERR_INVALID, "shape[%d] = %lld is invalid", (int)i, (long long)d);
        }
        if (d == 0)
            has_zero = true;
        if (d && known > INT64_MAX / d)
            return kn_kctx_fail(c, KN_ERR_INVALID, "shape size overflows");
        known *= d;
        dims[i] = d;
    }
    if (infer >= 0) {
        if (allowzero && has_zero)
            return kn_kctx_fail(c, KN_ERR_INVALID, "shape has both 0 and -1 with allowzero=1");
        if (known == 0 || x->numel % known)
            return kn_kctx_fail(c, KN_ERR_INVALID, "cannot infer the -1 dimension: %lld elements, %lld known",
                                (long long)x->numel, (long long)known);
        dims[infer] = x->numel / known;
    }
    return out_same_data(c, x, (int32_t)n, dims);
}

kn_status kn_ref_Flatten(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    int64_t axis = kn_kctx_attr_int(c, "axis", 1);
    if (axis < -(int64_t)x->rank || axis > x->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld out of range for rank %d", (long long)axis, (int)x->rank);
    if (axis < 0)
        axis += x->rank;
    int64_t dims[2] = {1, 1};
    for (int32_t i = 0; i < x->rank; i++)
        dims[i < axis ? 0 : 1] *= x->dims[i];
    return out_same_data(c, x, 2, dims);
}

kn_status kn_ref_Squeeze(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    int64_t *axes, n;
    KN_TRY(read_axes(c, 13, 1, &axes, &n));
    bool drop[KN_RT_MAX_RANK];
    if (n >= 0) {
        KN_TRY(norm_axes(c, axes, n, x->rank, NULL, drop));
        for (int32_t i = 0; i < x->rank; i++)
            if (drop[i] && x->dims[i] != 1)
                return kn_kctx_fail(c, KN_ERR_INVALID, "cannot squeeze axis %d of size %lld", (int)i,
                                    (long long)x->dims[i]);
    } else {
        for (int32_t i = 0; i < x->rank; i++)
            drop[i] = x->dims[i] == 1;
    }
    int64_t dims[KN_RT_MAX_RANK];
    int32_t r = 0;
    for (int32_t i = 0; i < x->rank; i++)
        if (!drop[i])
            dims[r++] = x->dims[i];
    return out_same_data(c, x, r, dims);
}

kn_status kn_ref_Unsqueeze(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    int64_t *axes, n;
    KN_TRY(read_axes(c, 13, 1, &axes, &n));
    if (n < 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "axes are required");
    if (x->rank + n > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "output rank %lld exceeds %d", (long long)(x->rank + n), KN_RT_MAX_RANK);
    int32_t r = (int32_t)(x->rank + n);
    bool add[KN_RT_MAX_RANK];
    KN_TRY(norm_axes(c, axes, n, r, NULL, add));
    int64_t dims[KN_RT_MAX_RANK];
    for (int32_t i = 0, j = 0; i < r; i++)
        dims[i] = add[i] ? 1 : x->dims[j++];
    return out_same_data(c, x, r, dims);
}

/* ---- permuting and joining ---- */

kn_status kn_ref_Transpose(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int32_t r = x->rank;
    uint32_t np;
    const int64_t *perm = kn_kctx_attr_ints(c, "perm", &np);
    int32_t p[KN_RT_MAX_RANK];
    if (perm) {
        if ((int32_t)np != r)
            return kn_kctx_fail(c, KN_ERR_INVALID, "perm has %u entries for rank %d", np, (int)r);
        bool seen[KN_RT_MAX_RANK] = {false};
        for (int32_t i = 0; i < r; i++) {
            if (perm[i] < 0 || perm[i] >= r || seen[perm[i]])
                return kn_kctx_fail(c, KN_ERR_INVALID, "perm is not a permutation of 0..%d", (int)r - 1);
            seen[perm[i]] = true;
            p[i] = (int32_t)perm[i];
        }
    } else {
        for (int32_t i = 0; i < r; i++)
            p[i] = r - 1 - i;
    }
    int64_t st[KN_RT_MAX_RANK], vst[KN_RT_MAX_RANK], dims[KN_RT_MAX_RANK];
    kn_strides(r, x->dims, st);
    for (int32_t i = 0; i < r; i++) {
        dims[i] = x->dims[p[i]];
        vst[i] = st[p[i]];
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    copy_view(y->data, x->data, es, r, dims, 0, vst);
    return KN_OK;
}

kn_status kn_ref_Concat(kn_kctx *c)
{
    uint32_t n = kn_kctx_n_inputs(c);
    const kn_rt_tensor *x0;
    KN_TRY(kn_need_in(c, 0, &x0));
    const kn_attr *aa = kn_kctx_attr(c, "axis");
    if (!aa && kn_kctx_opset(c) >= 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "attribute 'axis' is required");
    int32_t r = x0->rank, axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 1), r, &axis));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x0->dtype, &es));
    int64_t dims[KN_RT_MAX_RANK];
    memcpy(dims, x0->dims, (size_t)r * sizeof *dims);
    dims[axis] = 0;
    for (uint32_t k = 0; k < n; k++) {
        const kn_rt_tensor *x;
        KN_TRY(kn_need_in(c, k, &x));
        if (x->dtype != x0->dtype || x->rank != r)
            return kn_kctx_fail(c, KN_ERR_INVALID, "input %u is %s rank %d, input 0 is %s rank %d", k,
                                kn_dtype_name(x->dtype), (int)x->rank, kn_dtype_name(x0->dtype), (int)r);
        for (int32_t i = 0; i < r; i++)
            if (i != axis && x->dims[i] != x0->dims[i])
                return kn_kctx_fail(c, KN_ERR_INVALID, "input %u has size %lld on axis %d, input 0 has %lld", k,
                                    (long long)x->dims[i], (int)i, (long long)x0->dims[i]);
        if (x->dims[axis] > INT64_MAX - dims[axis])
            return kn_kctx_fail(c, KN_ERR_LIMIT, "concatenated size overflows");
        dims[axis] += x->dims[axis];
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x0->dtype, r, dims, &y));
    int64_t outer = 1, inner = 1;
    for (int32_t i = 0; i < axis; i++)
        outer *= dims[i];
    for (int32_t i = axis + 1; i < r; i++)
        inner *= dims[i];
    if (y->numel == 0)
        return KN_OK;
    size_t row = (size_t)(dims[axis] * inner) * es, pos = 0;
    for (uint32_t k = 0; k < n; k++) {
        const kn_rt_tensor *x = kn_kctx_in(c, k);
        size_t blk = (size_t)(x->dims[axis] * inner) * es;
        for (int64_t o = 0; o < outer && blk; o++)
            memcpy((char *)y->data + (size_t)o * row + pos, (const char *)x->data + (size_t)o * blk, blk);
        pos += blk;
    }
    return KN_OK;
}

kn_status kn_ref_Split(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int32_t axis;
    KN_TRY(kn_axis(c, kn_kctx_attr_int(c, "axis", 0), x->rank, &axis));
    uint32_t n_out = kn_kctx_n_outputs(c);
    int64_t d = x->dims[axis];
    int64_t *split = NULL, n_split = -1;
    const kn_rt_tensor *st = kn_kctx_in(c, 1);
    if (st && kn_kctx_opset(c) < 13 && kn_kctx_attr(c, "split"))
        return kn_kctx_fail(c, KN_ERR_INVALID, "split given both as input and attribute");
    if (st) { /* an input in opset 1 and from opset 13 */
        KN_TRY(kn_read_ints(c, st, &split, &n_split));
    } else if (kn_kctx_opset(c) < 13 && kn_kctx_attr(c, "split")) {
        uint32_t na;
        const int64_t *a = kn_kctx_attr_ints(c, "split", &na);
        split = kn_kctx_scratch(c, ((size_t)na + 1) * sizeof *split);
        if (!split)
            return KN_ERR_NOMEM;
        if (na)
            memcpy(split, a, na * sizeof *split);
        n_split = na;
    }
    const kn_attr *num = kn_kctx_opset(c) >= 18 ? kn_kctx_attr(c, "num_outputs") : NULL;
    if (split && num)
        return kn_kctx_fail(c, KN_ERR_INVALID, "both 'split' and 'num_outputs' given");
    if (!split) {
        int64_t parts = num ? kn_kctx_attr_int(c, "num_outputs", 0) : n_out;
        if (parts < 1 || parts != n_out)
            return kn_kctx_fail(c, KN_ERR_INVALID, "num_outputs %lld does not match the node's %u outputs",
                                (long long)parts, n_out);
        split = kn_kctx_scratch(c, (size_t)parts * sizeof *split);
        if (!split)
            return KN_ERR_NOMEM;
        int64_t chunk = d / parts + (d % parts != 0);
        if (d % parts && !num)
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis size %lld is not divisible into %lld outputs", (long long)d,
                                (long long)parts);
        for (int64_t i = 0; i < parts; i++)
            split[i] = chunk;
        split[parts - 1] = d - chunk * (parts - 1);
        if (split[parts - 1] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis size %lld cannot be split into %lld chunks of %lld",
                                (long long)d, (long long)parts, (long long)chunk);
        n_split = parts;
    }
    if (n_split != n_out)
        return kn_kctx_fail(c, KN_ERR_INVALID, "split has %lld entries for %u outputs", (long long)n_split, n_out);
    int64_t sum = 0;
    for (int64_t i = 0; i < n_split; i++) {
        if (split[i] < 0 || split[i] > d - sum)
            return kn_kctx_fail(c, KN_ERR_INVALID, "split sizes do not add up to the axis size %lld", (long long)d);
        sum += split[i];
    }
    if (sum != d)
        return kn_kctx_fail(c, KN_ERR_INVALID, "split sizes add up to %lld, the axis size is %lld", (long long)sum,
                            (long long)d);
    int64_t outer = 1, inner = 1;
    for (int32_t i = 0; i < axis; i++)
        outer *= x->dims[i];
    for (int32_t i = axis + 1; i < x->rank; i++)
        inner *= x->dims[i];
    size_t row = (size_t)(d * inner) * es, pos = 0;
    for (uint32_t k = 0; k < n_out; k++) {
        int64_t dims[KN_RT_MAX_RANK];
        memcpy(dims, x->dims, (size_t)x->rank * sizeof *dims);
        dims[axis] = split[k];
        kn_rt_tensor *y;
        KN_TRY(kn_kctx_out(c, k, x->dtype, x->rank, dims, &y));
        size_t blk = (size_t)(split[k] * inner) * es;
        for (int64_t o = 0; o < outer && blk; o++)
            memcpy((char *)y->data + (size_t)o * blk, (const char *)x->data + (size_t)o * row + pos, blk);
        pos += blk;
    }
    return KN_OK;
}

/* Clamps one Slice axis: start/end/step for size d to the first index and
 * the count (numpy semantics). */
static void slice_axis(int64_t start, int64_t end, int64_t step, int64_t d, int64_t *first, int64_t *count)
{
    if (start < 0)
        start += d;
    if (end < 0)
        end += d;
    if (step > 0) {
        start = start < 0 ? 0 : start > d ? d : start;
        end = end < 0 ? 0 : end > d ? d : end;
        *count = end > start ? (end - start - 1) / step + 1 : 0;
    } else {
        start = start < 0 ? -1 : start > d - 1 ? d - 1 : start;
        end = end < -1 ? -1 : end > d - 1 ? d - 1 : end;
        uint64_t ms = (uint64_t)0 - (uint64_t)step;
        *count = start > end ? (int64_t)((uint64_t)(start - end - 1) / ms + 1) : 0;
    }
    *first = start;
}

kn_status kn_ref_Slice(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int32_t r = x->rank;
    int64_t *starts, *ends, *axes = NULL, *steps = NULL, ns, ne, na = -1, nst = -1;
    if (kn_kctx_opset(c) < 10) {
        uint32_t n1, n2, n3;
        const int64_t *a1 = kn_kctx_attr_ints(c, "starts", &n1), *a2 = kn_kctx_attr_ints(c, "ends", &n2);
        const int64_t *a3 = kn_kctx_attr_ints(c, "axes", &n3);
        starts = (int64_t *)a1;
        ends = (int64_t *)a2;
        ns = n1;
        ne = n2;
        if (a3 || kn_kctx_attr(c, "axes")) {
            axes = (int64_t *)a3;
            na = n3;
        }
    } else {
        const kn_rt_tensor *ts, *te;
        KN_TRY(kn_need_in(c, 1, &ts));
        KN_TRY(kn_need_in(c, 2, &te));
        KN_TRY(kn_read_ints(c, ts, &starts, &ns));
        KN_TRY(kn_read_ints(c, te, &ends, &ne));
        if (kn_kctx_in(c, 3))
            KN_TRY(kn_read_ints(c, kn_kctx_in(c, 3), &axes, &na));
        if (kn_kctx_in(c, 4))
            KN_TRY(kn_read_ints(c, kn_kctx_in(c, 4), &steps, &nst));
    }
    if (ns != ne || (na >= 0 && na != ns) || (nst >= 0 && nst != ns))
        return kn_kctx_fail(c, KN_ERR_INVALID, "starts, ends, axes and steps differ in length");
    if (na < 0 && ns > r)
        return kn_kctx_fail(c, KN_ERR_INVALID, "%lld starts for rank %d", (long long)ns, (int)r);
    int64_t first[KN_RT_MAX_RANK], step[KN_RT_MAX_RANK], dims[KN_RT_MAX_RANK];
    bool seen[KN_RT_MAX_RANK] = {false};
    for (int32_t i = 0; i < r; i++) {
        first[i] = 0;
        step[i] = 1;
        dims[i] = x->dims[i];
    }
    for (int64_t k = 0; k < ns; k++) {
        int32_t a = (int32_t)k;
        if (axes)
            KN_TRY(kn_axis(c, axes[k], r, &a));
        if (seen[a])
            return kn_kctx_fail(c, KN_ERR_INVALID, "axis %d sliced twice", (int)a);
        seen[a] = true;
        int64_t s = steps ? steps[k] : 1;
        if (s == 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "step 0 on axis %d", (int)a);
        slice_axis(starts[k], ends[k], s, x->dims[a], &first[a], &dims[a]);
        step[a] = s;
    }
    int64_t st[KN_RT_MAX_RANK], vst[KN_RT_MAX_RANK], base = 0;
    kn_strides(r, x->dims, st);
    for (int32_t i = 0; i < r; i++) {
        vst[i] = st[i] * step[i];
        if (dims[i])
            base += first[i] * st[i];
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    copy_view(y->data, x->data, es, r, dims, base, vst);
    return KN_OK;
}

/* ---- repeating ---- */

kn_status kn_ref_Expand(kn_kctx *c)
{
    const kn_rt_tensor *x, *s;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &s));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int64_t *shape, n;
    KN_TRY(kn_read_ints(c, s, &shape, &n));
    if (n > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "shape has %lld entries (at most %d)", (long long)n, KN_RT_MAX_RANK);
    int32_t r = x->rank > n ? x->rank : (int32_t)n;
    int64_t dims[KN_RT_MAX_RANK], st[KN_RT_MAX_RANK], vst[KN_RT_MAX_RANK];
    kn_strides(x->rank, x->dims, st);
    for (int32_t i = 0; i < r; i++) {
        int32_t xi = i - (r - x->rank), si = i - (r - (int32_t)n);
        int64_t a = xi >= 0 ? x->dims[xi] : 1, b = si >= 0 ? shape[si] : 1;
        if (b < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "shape[%d] = %lld is negative", (int)si, (long long)b);
        if (a != b && a != 1 && b != 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "input dimension %lld cannot expand to %lld", (long long)a,
                                (long long)b);
        dims[i] = a == 1 ? b : a;
        vst[i] = xi >= 0 && a != 1 ? st[xi] : 0;
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    copy_view(y->data, x->data, es, r, dims, 0, vst);
    return KN_OK;
}

/* Tile: the output, viewed as (rep_0, d_0, rep_1, d_1, ...), reads the
 * input with stride 0 on every rep_k. */
kn_status kn_ref_Tile(kn_kctx *c)
{
    const kn_rt_tensor *x, *rt;
    KN_TRY(kn_need_in(c, 0, &x));
    KN_TRY(kn_need_in(c, 1, &rt));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    int64_t *rep, n;
    KN_TRY(kn_read_ints(c, rt, &rep, &n));
    if (n != x->rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "repeats has %lld entries for rank %d", (long long)n, (int)x->rank);
    int32_t r = x->rank;
    int64_t dims[KN_RT_MAX_RANK], st[KN_RT_MAX_RANK], vdims[2 * KN_RT_MAX_RANK], vst[2 * KN_RT_MAX_RANK];
    kn_strides(r, x->dims, st);
    for (int32_t i = 0; i < r; i++) {
        if (rep[i] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "repeats[%d] = %lld is negative", (int)i, (long long)rep[i]);
        if (x->dims[i] && rep[i] > INT64_MAX / x->dims[i])
            return kn_kctx_fail(c, KN_ERR_LIMIT, "output size overflows");
        dims[i] = x->dims[i] * rep[i];
        vdims[2 * i] = rep[i];
        vdims[2 * i + 1] = x->dims[i];
        vst[2 * i] = 0;
        vst[2 * i + 1] = st[i];
    }
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    copy_view(y->data, x->data, es, 2 * r, vdims, 0, vst);
    return KN_OK;
}

/* ---- block rearrangement ---- */

static kn_status block_args(kn_kctx *c, const kn_rt_tensor **x, size_t *es, int64_t *b)
{
    KN_TRY(kn_need_in(c, 0, x));
    KN_TRY(kn_elem_size(c, (*x)->dtype, es));
    if ((*x)->rank != 4)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must be 4-D, got rank %d", (int)(*x)->rank);
    *b = kn_kctx_attr_int(c, "blocksize", 0);
    if (*b < 1 || *b > (int64_t)1 << 20)
        return kn_kctx_fail(c, KN_ERR_INVALID, "blocksize %lld is invalid", (long long)*b);
    return KN_OK;
}

kn_status kn_ref_DepthToSpace(kn_kctx *c)
{
    const kn_rt_tensor *x;
    size_t es = 0;
    int64_t b = 1;
    KN_TRY(block_args(c, &x, &es, &b));
    const char *mode = kn_kctx_attr_str(c, "mode", "DCR");
    bool crd = strcmp(mode, "CRD") == 0;
    if (!crd && strcmp(mode, "DCR") != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "mode '%s' is not DCR or CRD", mode);
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    if (C % (b * b))
        return kn_kctx_fail(c, KN_ERR_INVALID, "channels %lld not divisible by blocksize^2 = %lld", (long long)C,
                            (long long)(b * b));
    int64_t Co = C / (b * b), HW = H * W;
    int64_t dims[4] = {N, Co, H * b, W * b};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, 4, dims, &y));
    /* view (n, c, h, i, w, j) → input channel (DCR) (i*b + j)*Co + c, (CRD) c*b*b + i*b + j */
    int64_t vd[6] = {N, Co, H, b, W, b};
    int64_t vs[6] = {C * HW, crd ? b * b * HW : HW, W, crd ? b * HW : b * Co * HW, 1, crd ? HW : Co * HW};
    copy_view(y->data, x->data, es, 6, vd, 0, vs);
    return KN_OK;
}

kn_status kn_ref_SpaceToDepth(kn_kctx *c)
{
    const kn_rt_tensor *x;
    size_t es = 0;
    int64_t b = 1;
    KN_TRY(block_args(c, &x, &es, &b));
    const char *mode = kn_kctx_attr_str(c, "mode", "DCR"); /* CRD: newer opsets */
    bool crd = strcmp(mode, "CRD") == 0;
    if (!crd && strcmp(mode, "DCR") != 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "mode '%s' is not DCR or CRD", mode);
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    if (H % b || W % b)
        return kn_kctx_fail(c, KN_ERR_INVALID, "spatial size %lldx%lld not divisible by blocksize %lld", (long long)H,
                            (long long)W, (long long)b);
    int64_t dims[4] = {N, C * b * b, H / b, W / b};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, 4, dims, &y));
    /* out channel (DCR) (i*b + j)*C + c, (CRD) c*b*b + i*b + j reads input (c, h*b + i, w*b + j) */
    int64_t vd[6] = {N, b, b, C, H / b, W / b};
    int64_t vs[6] = {C * H * W, W, 1, H * W, b * W, b};
    if (crd) {
        int64_t cd[6] = {N, C, b, b, H / b, W / b}, cs[6] = {C * H * W, H * W, W, 1, b * W, b};
        memcpy(vd, cd, sizeof vd);
        memcpy(vs, cs, sizeof vs);
    }
    copy_view(y->data, x->data, es, 6, vd, 0, vs);
    return KN_OK;
}

kn_status kn_ref_Trilu(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    size_t es = 0;
    KN_TRY(kn_elem_size(c, x->dtype, &es));
    if (x->rank < 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must have rank >= 2, got %d", (int)x->rank);
    int64_t k = 0;
    const kn_rt_tensor *kt = kn_kctx_in(c, 1);
    if (kt) {
        if (kt->numel != 1 || (kt->dtype != KN_I64 && kt->dtype != KN_I32))
            return kn_kctx_fail(c, KN_ERR_INVALID, "k must be a single int64");
        k = kn_get_i64(kt->dtype, kt->data, 0);
    }
    bool upper = kn_kctx_attr_int(c, "upper", 1) != 0;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, x->rank, x->dims, &y));
    int64_t R = x->dims[x->rank - 2], C = x->dims[x->rank - 1];
    int64_t mats = R * C != 0 ? x->numel / (R * C) : 0;
    for (int64_t m = 0; m < mats; m++)
        for (int64_t i = 0; i < R; i++) {
            /* keep columns j with j - i >= k (upper) or j - i <= k (lower) */
            int64_t lo = 0, hi = C;
            if (upper) {
                lo = k > C - i ? C : i + k < 0 ? 0 : i + k;
            } else {
                hi = k >= C - i ? C : i + k + 1 < 0 ? 0 : i + k + 1;
            }
            if (hi > lo) {
                size_t off = (size_t)((m * R + i) * C + lo) * es;
                memcpy((char *)y->data + off, (const char *)x->data + off, (size_t)(hi - lo) * es);
            }
        }
    return KN_OK;
}

/* ---- shapes and constants ---- */

kn_status kn_ref_Shape(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    int64_t r = x->rank, s = 0, e = r;
    if (kn_kctx_opset(c) >= 15) {
        s = kn_kctx_attr_int(c, "start", 0);
        e = kn_kctx_attr_int(c, "end", r);
        s = s < 0 ? s + r : s;
        e = e < 0 ? e + r : e;
        s = s < 0 ? 0 : s > r ? r : s;
        e = e < 0 ? 0 : e > r ? r : e;
    }
    int64_t n = e > s ? e - s : 0;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_I64, 1, &n, &y));
    for (int64_t i = 0; i < n; i++)
        kn_set_i64(KN_I64, y->data, i, x->dims[s + i]);
    return KN_OK;
}

kn_status kn_ref_Size(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, KN_I64, 0, NULL, &y));
    kn_set_i64(KN_I64, y->data, 0, x->numel);
    return KN_OK;
}

kn_status kn_ref_ConstantOfShape(kn_kctx *c)
{
    const kn_rt_tensor *s;
    KN_TRY(kn_need_in(c, 0, &s));
    if (s->dtype != KN_I64)
        return kn_kctx_fail(c, KN_ERR_INVALID, "shape must be int64, got %s", kn_dtype_name(s->dtype));
    int64_t *shape, n;
    KN_TRY(kn_read_ints(c, s, &shape, &n));
    if (n > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "shape has %lld entries (at most %d)", (long long)n, KN_RT_MAX_RANK);
    for (int64_t i = 0; i < n; i++)
        if (shape[i] < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "shape[%lld] = %lld is negative", (long long)i,
                                (long long)shape[i]);
    const kn_attr *a = kn_kctx_attr(c, "value");
    const kn_tensor *v = a && a->kind == KN_ATTR_TENSOR ? a->u.t : NULL;
    kn_dtype dt = v ? v->dtype : KN_F32;
    size_t es = 0;
    KN_TRY(kn_elem_size(c, dt, &es));
    if (v && (v->n_elems != 1 || !v->data))
        return kn_kctx_fail(c, KN_ERR_INVALID, "value must hold exactly one element");
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, dt, (int32_t)n, shape, &y));
    if (v)
        for (int64_t i = 0; i < y->numel; i++)
            copy_elem((char *)y->data + (size_t)i * es, v->data, es);
    return KN_OK;
}

kn_status kn_ref_Range(kn_kctx *c)
{
    const kn_rt_tensor *ts, *tl, *td;
    KN_TRY(kn_need_in(c, 0, &ts));
    KN_TRY(kn_need_in(c, 1, &tl));
    KN_TRY(kn_need_in(c, 2, &td));
    kn_dtype t = ts->dtype;
    if (tl->dtype != t || td->dtype != t)
        return kn_kctx_fail(c, KN_ERR_INVALID, "start, limit and delta must share a dtype");
    if (ts->numel != 1 || tl->numel != 1 || td->numel != 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "start, limit and delta must be scalars");
    kn_rt_tensor *y;
    if (kn_dt_is_int(t) && t != KN_U64) {
        int64_t s = kn_get_i64(t, ts->data, 0), l = kn_get_i64(t, tl->data, 0), d = kn_get_i64(t, td->data, 0);
        if (d == 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "delta is 0");
        int64_t n = 0;
        if (d > 0 && l > s)
            n = (int64_t)(((uint64_t)l - (uint64_t)s - 1) / (uint64_t)d + 1);
        else if (d < 0 && s > l)
            n = (int64_t)(((uint64_t)s - (uint64_t)l - 1) / ((uint64_t)0 - (uint64_t)d) + 1);
        KN_TRY(kn_kctx_out(c, 0, t, 1, &n, &y));
        for (int64_t i = 0; i < n; i++)
            kn_set_i64(t, y->data, i, (int64_t)((uint64_t)s + (uint64_t)i * (uint64_t)d));
        return KN_OK;
    }
    if (!kn_dt_is_float(t))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s is not a supported Range type", kn_dtype_name(t));
    double s = kn_get_f64(t, ts->data, 0), l = kn_get_f64(t, tl->data, 0), d = kn_get_f64(t, td->data, 0);
    if (d == 0 || !isfinite(s) || !isfinite(l) || !isfinite(d))
        return kn_kctx_fail(c, KN_ERR_INVALID, "delta is 0 or a bound is not finite");
    double q = ceil((l - s) / d);
    if (!(q < 9.0e15))
        return kn_kctx_fail(c, KN_ERR_LIMIT, "range of %g elements is too large", q);
    int64_t n = q > 0 ? (int64_t)q : 0;
    KN_TRY(kn_kctx_out(c, 0, t, 1, &n, &y));
    for (int64_t i = 0; i < n; i++)
        kn_set_f64(t, y->data, i, s + (double)i * d);
    return KN_OK;
}

kn_status kn_ref_EyeLike(kn_kctx *c)
{
    const kn_rt_tensor *x;
    KN_TRY(kn_need_in(c, 0, &x));
    if (x->rank != 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must be 2-D, got rank %d", (int)x->rank);
    int64_t dt = kn_kctx_attr_int(c, "dtype", x->dtype);
    if (!kn_dtype_valid((int)dt) || (!kn_dt_is_float((kn_dtype)dt) && !kn_dt_is_int((kn_dtype)dt) && dt != KN_BOOL))
        return kn_kctx_fail(c, KN_ERR_INVALID, "dtype %lld is not supported", (long long)dt);
    int64_t k = kn_kctx_attr_int(c, "k", 0);
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, (kn_dtype)dt, 2, x->dims, &y));
    int64_t R = x->dims[0], C = x->dims[1];
    for (int64_t i = 0; i < R; i++) {
        if (k < -i || k >= C - i)
            continue;
        kn_set_i64((kn_dtype)dt, y->data, i * C + i + k, 1);
    }
    return KN_OK;
}
