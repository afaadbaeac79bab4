/* Helpers shared by the CPU reference kernels (see util.h). */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

bool kn_dt_is_float(kn_dtype t) { return t == KN_F16 || t == KN_BF16 || t == KN_F32 || t == KN_F64; }

bool kn_dt_is_int(kn_dtype t)
{
    switch (t) {
    case KN_I8: case KN_I16: case KN_I32: case KN_I64:
    case KN_U8: case KN_U16: case KN_U32: case KN_U64: return true;
    default: return false;
    }
}

bool kn_dt_is_signed(kn_dtype t)
{
    return t == KN_I8 || t == KN_I16 || t == KN_I32 || t == KN_I64 || kn_dt_is_float(t);
}

size_t kn_dt_size(kn_dtype t)
{
    unsigned b = kn_dtype_bits(t);
    return b >= 8 ? b / 8 : 0;
}

/* Exact for every half (all 65536 are tested against the field-by-field
 * definition): move exponent and mantissa into place, rebias; inf/nan get
 * the top exponent; zero and subnormals are renormalised by the FPU (the
 * result is a normal float, so flushing modes do not matter). */
float kn_f16_to_f32(uint16_t h)
{
    uint32_t o = (uint32_t)(h & 0x7fff) << 13;
    uint32_t e = o & 0x0f800000u;
    o += 0x38000000u; /* (127 - 15) << 23 */
    if (e == 0x0f800000u) {
        o += 0x38000000u;
    } else if (e == 0) {
        float f;
        o += 0x00800000u;
        memcpy(&f, &o, 4);
        f -= 6.103515625e-05f; /* 2^-14 */
        memcpy(&o, &f, 4);
    }
    o |= (uint32_t)(h & 0x8000) << 16;
    float r;
    memcpy(&r, &o, 4);
    return r;
}

/* Round to nearest even, with few branches (the precision pass converts
 * every weight of a model: a 1B model is 1.1e9 calls). Normal halves
 * rebias the exponent and round with one add; results below the smallest
 * normal half let the FPU round: adding 0.5 puts 2^-24 (the least
 * subnormal half) at bit 0 of the sum. Equal to the bit-by-bit form for
 * all 2^32 inputs, also when the FPU flushes subnormals (a subnormal
 * float gives 0 either way). NaN keeps its sign and top payload bits. */
uint16_t kn_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    x &= 0x7fffffffu;
    uint32_t h;
    if (x >= 0x47800000u) { /* |f| >= 65536 (rounds to inf), inf, nan */
        h = x > 0x7f800000u ? 0x7c00 | 0x200 | ((x & 0x7fffff) >> 13) : 0x7c00;
    } else if (x < 0x38800000u) { /* below 2^-14 */
        float a;
        memcpy(&a, &x, 4);
        a += 0.5f;
        uint32_t b;
        memcpy(&b, &a, 4);
        h = b - 0x3f000000u;
    } else {
        /* exponent - 112, then + 0xfff (+1 when the kept lsb is odd) rounds
         * half to even; a carry into the exponent is still correct */
        h = (x + 0xc8000fffu + ((x >> 13) & 1)) >> 13;
    }
    return (uint16_t)(sign | h);
}

float kn_bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

uint16_t kn_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    uint32_t lsb = (x >> 16) & 1;
    x += 0x7fff + lsb;
    return (uint16_t)(x >> 16);
}

#define DEF_LOAD(name, T)                                        \
    static inline T name(const void *d, int64_t i)               \
    {                                                            \
        T v;                                                     \
        memcpy(&v, (const char *)d + (size_t)i * sizeof(T), sizeof(T)); \
        return v;                                                \
    }
DEF_LOAD(ld_f32, float)
DEF_LOAD(ld_f64, double)
DEF_LOAD(ld_i8, int8_t)
DEF_LOAD(ld_i16, int16_t)
DEF_LOAD(ld_i32, int32_t)
DEF_LOAD(ld_i64, int64_t)
DEF_LOAD(ld_u8, uint8_t)
DEF_LOAD(ld_u16, uint16_t)
DEF_LOAD(ld_u32, uint32_t)
DEF_LOAD(ld_u64, uint64_t)
#define LOAD(T) LOAD_##T
#define LOAD_float ld_f32(data, i)
#define LOAD_double ld_f64(data, i)
#define LOAD_int8_t ld_i8(data, i)
#define LOAD_int16_t ld_i16(data, i)
#define LOAD_int32_t ld_i32(data, i)
#define LOAD_int64_t ld_i64(data, i)
#define LOAD_uint8_t ld_u8(data, i)
#define LOAD_uint16_t ld_u16(data, i)
#define LOAD_uint32_t ld_u32(data, i)
#define LOAD_uint64_t ld_u64(data, i)

double kn_get_f64(kn_dtype t, const void *data, int64_t i)
{
    switch (t) {
    case KN_F32: return LOAD(float);
    case KN_F64: return LOAD(double);
    case KN_F16: return kn_f16_to_f32(LOAD(uint16_t));
    case KN_BF16: return kn_bf16_to_f32(LOAD(uint16_t));
    case KN_I8: return LOAD(int8_t);
    case KN_I16: return LOAD(int16_t);
    case KN_I32: return LOAD(int32_t);
    case KN_I64: return (double)LOAD(int64_t);
    case KN_U8: return LOAD(uint8_t);
    case KN_U16: return LOAD(uint16_t);
    case KN_U32: return LOAD(uint32_t);
    case KN_U64: return (double)LOAD(uint64_t);
    case KN_BOOL: return LOAD(uint8_t) != 0;
    default: return 0;
    }
}

int64_t kn_get_i64(kn_dtype t, const void *data, int64_t i)
{
    switch (t) {
    case KN_I8: return LOAD(int8_t);
    case KN_I16: return LOAD(int16_t);
    case KN_I32: return LOAD(int32_t);
    case KN_I64: return LOAD(int64_t);
    case KN_U8: return LOAD(uint8_t);
    case KN_U16: return LOAD(uint16_t);
    case KN_U32: return LOAD(uint32_t);
    case KN_U64: return (int64_t)LOAD(uint64_t);
    case KN_BOOL: return LOAD(uint8_t) != 0;
    default: {
        double d = kn_get_f64(t, data, i);
        if (isnan(d))
            return 0;
        if (d >= 9.2233720368547758e18)
            return INT64_MAX;
        if (d <= -9.2233720368547758e18)
            return INT64_MIN;
        return (int64_t)d;
    }
    }
}

uint64_t kn_get_u64(kn_dtype t, const void *data, int64_t i)
{
    if (t == KN_U64)
        return LOAD(uint64_t);
    return (uint64_t)kn_get_i64(t, data, i);
}

#define STORE(T, v) do { T v_ = (T)(v); memcpy((char *)data + (size_t)i * sizeof(T), &v_, sizeof(T)); } while (0)

static int64_t sat_i64(double v)
{
    if (isnan(v))
        return 0;
    if (v >= 9.2233720368547758e18)
        return INT64_MAX;
    if (v <= -9.2233720368547758e18)
        return INT64_MIN;
    return (int64_t)v;
}

void kn_set_f64(kn_dtype t, void *data, int64_t i, double v)
{
    switch (t) {
    case KN_F32: STORE(float, v); break;
    case KN_F64: STORE(double, v); break;
    case KN_F16: STORE(uint16_t, kn_f32_to_f16((float)v)); break;
    case KN_BF16: STORE(uint16_t, kn_f32_to_bf16((float)v)); break;
    case KN_BOOL: STORE(uint8_t, v != 0); break;
    case KN_U64:
        STORE(uint64_t, isnan(v) || v <= 0 ? 0 : v >= 1.8446744073709552e19 ? UINT64_MAX : (uint64_t)v);
        break;
    default: kn_set_i64(t, data, i, sat_i64(v)); break;
    }
}

void kn_set_i64(kn_dtype t, void *data, int64_t i, int64_t v)
{
    switch (t) {
    case KN_I8: STORE(int8_t, v); break;
    case KN_I16: STORE(int16_t, v); break;
    case KN_I32: STORE(int32_t, v); break;
    case KN_I64: STORE(int64_t, v); break;
    case KN_U8: STORE(uint8_t, v); break;
    case KN_U16: STORE(uint16_t, v); break;
    case KN_U32: STORE(uint32_t, v); break;
    case KN_U64: STORE(uint64_t, v); break;
    case KN_BOOL: STORE(uint8_t, v != 0); break;
    default: kn_set_f64(t, data, i, (double)v); break;
    }
}

void kn_set_u64(kn_dtype t, void *data, int64_t i, uint64_t v)
{
    if (t == KN_U64)
        STORE(uint64_t, v);
    else if (kn_dt_is_float(t))
        kn_set_f64(t, data, i, (double)v);
    else
        kn_set_i64(t, data, i, (int64_t)v);
}

void kn_strides(int32_t rank, const int64_t *dims, int64_t *strides)
{
    int64_t s = 1;
    for (int32_t i = rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= dims[i];
    }
}

int64_t kn_numel(int32_t rank, const int64_t *dims)
{
    int64_t n = 1;
    for (int32_t i = 0; i < rank; i++) {
        if (dims[i] < 0)
            return -1;
        if (dims[i] && n > INT64_MAX / dims[i])
            return -1;
        n *= dims[i];
    }
    return n;
}

kn_status kn_broadcast(kn_kctx *c, uint32_t n, const kn_rt_tensor *const *ts, int32_t *out_rank, int64_t *out_dims)
{
    int32_t r = 0;
    for (uint32_t k = 0; k < n; k++)
        if (ts[k] && ts[k]->rank > r)
            r = ts[k]->rank;
    if (r > KN_RT_MAX_RANK)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "rank %d exceeds %d", (int)r, KN_RT_MAX_RANK);
    for (int32_t i = 0; i < r; i++)
        out_dims[i] = 1;
    for (uint32_t k = 0; k < n; k++) {
        const kn_rt_tensor *t = ts[k];
        if (!t)
            continue;
        for (int32_t i = 0; i < t->rank; i++) {
            int64_t d = t->dims[i];
            int64_t *o = &out_dims[r - t->rank + i];
            if (d == *o || d == 1)
                continue;
            if (*o == 1) {
                *o = d;
                continue;
            }
            return kn_kctx_fail(c, KN_ERR_INVALID, "input shapes cannot be broadcast (dimension %lld vs %lld)",
                                (long long)d, (long long)*o);
        }
    }
    *out_rank = r;
    return KN_OK;
}

void kn_bcast_init(kn_bcast_iter *it, int32_t rank, const int64_t *dims, uint32_t n, const kn_rt_tensor *const *ts)
{
    it->rank = rank;
    it->n = n;
    for (int32_t i = 0; i < rank; i++) {
        it->dims[i] = dims[i];
        it->idx[i] = 0;
    }
    for (uint32_t k = 0; k < n; k++) {
        const kn_rt_tensor *t = ts[k];
        int64_t s = 1;
        for (int32_t i = rank - 1; i >= 0; i--) {
            int32_t ti = i - (rank - t->rank);
            if (ti < 0 || t->dims[ti] == 1) {
                it->strides[k][i] = 0;
            } else {
                it->strides[k][i] = s;
            }
            if (ti >= 0)
                s *= t->dims[ti];
        }
        it->off[k] = 0;
    }
}

void kn_bcast_next(kn_bcast_iter *it)
{
    for (int32_t i = it->rank - 1; i >= 0; i--) {
        it->idx[i]++;
        for (uint32_t k = 0; k < it->n; k++)
            it->off[k] += it->strides[k][i];
        if (it->idx[i] < it->dims[i])
            return;
        for (uint32_t k = 0; k < it->n; k++)
            it->off[k] -= it->strides[k][i] * it->dims[i];
        it->idx[i] = 0;
    }
}

kn_status kn_axis(kn_kctx *c, int64_t axis, int32_t rank, int32_t *out)
{
    if (axis < -(int64_t)rank || axis >= rank)
        return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld out of range for rank %d", (long long)axis, (int)rank);
    *out = (int32_t)(axis < 0 ? axis + rank : axis);
    return KN_OK;
}

kn_status kn_read_ints(kn_kctx *c, const kn_rt_tensor *t, int64_t **out, int64_t *n)
{
    if (t->dtype != KN_I64 && t->dtype != KN_I32)
        return kn_kctx_fail(c, KN_ERR_INVALID, "expected an int32/int64 tensor, got %s", kn_dtype_name(t->dtype));
    if (t->rank > 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "expected a 1-D tensor, got rank %d", (int)t->rank);
    int64_t *v = kn_kctx_scratch(c, (size_t)(t->numel + 1) * sizeof *v);
    if (!v)
        return KN_ERR_NOMEM;
    for (int64_t i = 0; i < t->numel; i++)
        v[i] = kn_get_i64(t->dtype, t->data, i);
    *out = v;
    *n = t->numel;
    return KN_OK;
}

kn_status kn_elem_size(kn_kctx *c, kn_dtype t, size_t *es)
{
    size_t s = t == KN_STRING ? sizeof(kn_bytes) : kn_dt_size(t);
    if (!s)
        return kn_kctx_fail(c, KN_ERR_UNSUPPORTED, "%s tensors are not supported by this op", kn_dtype_name(t));
    *es = s;
    return KN_OK;
}

kn_status kn_need_in(kn_kctx *c, uint32_t i, const kn_rt_tensor **out)
{
    *out = kn_kctx_in(c, i);
    if (!*out)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input %u", i);
    return KN_OK;
}

/* Whether t broadcasts (numpy rules) to the trailing dims of x from
 * `axis`, i.e. to the normalised shape. */
bool kn_fits_trailing(const kn_rt_tensor *t, const kn_rt_tensor *x, int32_t axis)
{
    if (t->rank > x->rank - axis)
        return false;
    for (int32_t i = 0; i < t->rank; i++) {
        int64_t td = t->dims[t->rank - 1 - i], xd = x->dims[x->rank - 1 - i];
        if (td != xd && td != 1)
            return false;
    }
    return true;
}

/* Index into t (broadcast over the normalised shape) of column `col` of a
 * row of x's trailing dims from `axis`. */
int64_t kn_trailing_index(const kn_rt_tensor *t, const kn_rt_tensor *x, int64_t col)
{
    int64_t ti = 0, tstride = 1;
    for (int32_t i = 0; i < t->rank; i++) {
        int64_t xd = x->dims[x->rank - 1 - i], td = t->dims[t->rank - 1 - i];
        int64_t k = col % xd;
        col /= xd;
        if (td != 1)
            ti += k * tstride;
        tstride *= td;
    }
    return ti;
}

kn_status kn_skip_sum(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *skip, kn_rt_tensor *tmp,
                      kn_rt_tensor **sum)
{
    bool same = skip->dtype == x->dtype && skip->rank == x->rank;
    for (int32_t d = 0; same && d < x->rank; d++)
        same = skip->dims[d] == x->dims[d];
    if (!same)
        return kn_kctx_fail(c, KN_ERR_INVALID, "skip must have X's shape and dtype");
    if (kn_kctx_n_outputs(c) > 1) {
        KN_TRY(kn_kctx_out(c, 1, x->dtype, x->rank, x->dims, sum));
    } else { /* the sum is not an output: scratch with X's header */
        *tmp = *x;
        tmp->data = kn_kctx_scratch(c, x->nbytes + 1);
        if (!tmp->data)
            return KN_ERR_NOMEM;
        *sum = tmp;
    }
    for (int64_t i = 0; i < x->numel; i++)
        kn_set_f64(x->dtype, (*sum)->data, i, kn_get_f64(x->dtype, x->data, i) + kn_get_f64(x->dtype, skip->data, i));
    return KN_OK;
}
