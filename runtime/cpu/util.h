/* Helpers shared by the CPU reference kernels: element access in any
 * dtype, half/bfloat16 conversion, broadcasting, axes. */
#ifndef KILN_CPU_UTIL_H
#define KILN_CPU_UTIL_H

#include "runtime/cpu/kernel.h"

#define KN_RT_MAX_RANK 64

bool kn_dt_is_float(kn_dtype t);   /* f16, bf16, f32, f64 */
bool kn_dt_is_int(kn_dtype t);     /* (u)int8..64 */
bool kn_dt_is_signed(kn_dtype t);  /* signed ints and floats */

float kn_f16_to_f32(uint16_t h);
uint16_t kn_f32_to_f16(float f);   /* round to nearest even */
float kn_bf16_to_f32(uint16_t h);
uint16_t kn_f32_to_bf16(float f);  /* round to nearest even */

/* Element i of data in dtype t, as double / int64 (bool: 0 or 1). Only
 * numeric and bool dtypes (not strings, complex or 4-bit). */
double kn_get_f64(kn_dtype t, const void *data, int64_t i);
int64_t kn_get_i64(kn_dtype t, const void *data, int64_t i);
uint64_t kn_get_u64(kn_dtype t, const void *data, int64_t i);
/* Stores v converted to t: floats round, ints truncate toward zero and
 * wrap like a C cast from int64 (NaN → 0, out-of-range floats saturate),
 * bool is v != 0. */
void kn_set_f64(kn_dtype t, void *data, int64_t i, double v);
void kn_set_i64(kn_dtype t, void *data, int64_t i, int64_t v);
void kn_set_u64(kn_dtype t, void *data, int64_t i, uint64_t v);

/* Element size in bytes (0 for 4-bit types and strings). */
size_t kn_dt_size(kn_dtype t);

/* Multidirectional (numpy) broadcast of n shapes. Fails (KN_ERR_INVALID,
 * reported) when they are not broadcastable. out_dims has room for
 * KN_RT_MAX_RANK entries. */
kn_status kn_broadcast(kn_kctx *c, uint32_t n, const kn_rt_tensor *const *ts, int32_t *out_rank, int64_t *out_dims);

/* Iterates an output of shape (rank, dims) while tracking, for each of n
 * inputs broadcast to it, the linear index of the element read. */
typedef struct kn_bcast_iter {
    int32_t rank;
    uint32_t n;
    int64_t dims[KN_RT_MAX_RANK];
    int64_t idx[KN_RT_MAX_RANK];
    int64_t strides[8][KN_RT_MAX_RANK]; /* per input; 0 on broadcast dims */
    int64_t off[8];                     /* current linear index per input */
} kn_bcast_iter;

/* n ≤ 8 inputs. Input k's shape must broadcast to (rank, dims). */
void kn_bcast_init(kn_bcast_iter *it, int32_t rank, const int64_t *dims, uint32_t n, const kn_rt_tensor *const *ts);
void kn_bcast_next(kn_bcast_iter *it);

/* Row-major strides in elements. */
void kn_strides(int32_t rank, const int64_t *dims, int64_t *strides);
int64_t kn_numel(int32_t rank, const int64_t *dims); /* -1 on overflow */

/* Normalizes a possibly negative axis for the given rank (axis in
 * [-rank, rank-1]); reports and fails otherwise. */
kn_status kn_axis(kn_kctx *c, int64_t axis, int32_t rank, int32_t *out);

/* Reads a 1-D (or scalar) int32/int64 tensor into a new scratch array. */
kn_status kn_read_ints(kn_kctx *c, const kn_rt_tensor *t, int64_t **out, int64_t *n);

/* Bytes one element occupies when moved (strings move as kn_bytes); 4-bit
 * types have no whole-byte element and are refused (reported). */
kn_status kn_elem_size(kn_kctx *c, kn_dtype t, size_t *es);

/* Input i, or a reported KN_ERR_INVALID when it is omitted. */
kn_status kn_need_in(kn_kctx *c, uint32_t i, const kn_rt_tensor **out);

/* Normalisations (LayerNormalization, RMSNormalization): whether t
 * broadcasts (numpy rules) to x's trailing dims from `axis`, and the index
 * into t of column `col` of such a row of x. */
bool kn_fits_trailing(const kn_rt_tensor *t, const kn_rt_tensor *x, int32_t axis);
int64_t kn_trailing_index(const kn_rt_tensor *t, const kn_rt_tensor *x, int64_t col);

/* The residual sum of kiln.SkipRMSNorm / kiln.SkipLayerNorm: checks that
 * skip has x's dtype and shape, then writes x + skip (added in double,
 * rounded to the dtype as the unfused Add) into the node's output 1 when
 * it has one, else into scratch described by *tmp (x's header); *sum
 * points at whichever. */
kn_status kn_skip_sum(kn_kctx *c, const kn_rt_tensor *x, const kn_rt_tensor *skip, kn_rt_tensor *tmp,
                      kn_rt_tensor **sum);

#endif
