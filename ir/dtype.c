/* Data type facts, numbered as ONNX's TensorProto.DataType. */
#include "kiln/kiln.h"

static const struct {
    const char *name;
    unsigned bits;
} dtypes[KN_DTYPE_COUNT] = {
    [KN_UNDEFINED] = {"undefined", 0},
    [KN_F32] = {"float32", 32},
    [KN_U8] = {"uint8", 8},
    [KN_I8] = {"int8", 8},
    [KN_U16] = {"uint16", 16},
    [KN_I16] = {"int16", 16},
    [KN_I32] = {"int32", 32},
    [KN_I64] = {"int64", 64},
    [KN_STRING] = {"string", 0},
    [KN_BOOL] = {"bool", 8},
    [KN_F16] = {"float16", 16},
    [KN_F64] = {"float64", 64},
    [KN_U32] = {"uint32", 32},
    [KN_U64] = {"uint64", 64},
    [KN_C64] = {"complex64", 64},
    [KN_C128] = {"complex128", 128},
    [KN_BF16] = {"bfloat16", 16},
    [KN_F8E4M3FN] = {"float8e4m3fn", 8},
    [KN_F8E4M3FNUZ] = {"float8e4m3fnuz", 8},
    [KN_F8E5M2] = {"float8e5m2", 8},
    [KN_F8E5M2FNUZ] = {"float8e5m2fnuz", 8},
    [KN_U4] = {"uint4", 4},
    [KN_I4] = {"int4", 4},
    [KN_F4E2M1] = {"float4e2m1", 4},
    [KN_F8E8M0] = {"float8e8m0", 8},
};

int kn_dtype_valid(int v) { return v > KN_UNDEFINED && v < KN_DTYPE_COUNT; }

const char *kn_dtype_name(kn_dtype t)
{
    return (unsigned)t < KN_DTYPE_COUNT ? dtypes[t].name : "?";
}

unsigned kn_dtype_bits(kn_dtype t)
{
    return (unsigned)t < KN_DTYPE_COUNT ? dtypes[t].bits : 0;
}

kn_status kn_dtype_nbytes(kn_dtype t, int64_t n, size_t *out)
{
    *out = 0;
    if (n < 0)
        return KN_ERR_INVALID;
    unsigned bits = kn_dtype_bits(t);
    if (bits == 0)
        return KN_OK;
    if (bits == 4) {
        *out = (size_t)((uint64_t)n / 2 + (uint64_t)n % 2);
        return KN_OK;
    }
    uint64_t per = bits / 8;
    if ((uint64_t)n > SIZE_MAX / per)
        return KN_ERR_LIMIT;
    *out = (size_t)((uint64_t)n * per);
    return KN_OK;
}
