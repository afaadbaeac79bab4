/* CUDA emitters for data movement: ops that only rearrange bytes
 * (reshapes as aliases, strided views, joins and splits, Trilu). A view
 * or Split output that is a contiguous byte range of its input (16-byte
 * aligned) becomes an alias at an offset instead of a copy. Elements
 * move as unsigned words of their byte size, so a kernel is specialised
 * on the element size only and serves every dtype of that size exactly.
 * Gathers and scatters are in e_shape_index.c, Pad and Resize in
 * e_shape_pad.c. */
#include "codegen/cuda/emit.h"
#include "runtime/cpu/util.h"
#include "runtime/plan_format.h"

#include <string.h>

/* ---- helpers ---- */

/* The unsigned word type that moves one element of t, or NULL (strings,
 * 4-bit types, complex128). */
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

static kn_status bad_dtype(kn_emit *e, const kn_emit_tensor *t)
{
    return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", t ? kn_dtype_name(t->dtype) : "(missing)");
}

/* Registers src (freeing it) and launches it over n elements. */
static kn_status launch_src(kn_emit *e, kn_sb *src, const char *entry, int64_t n, const kn_emit_arg *args,
                            uint32_t n_args)
{
    uint32_t k;
    kn_status s = kn_emit_kernel(e, kn_sb_str(src), entry, &k);
    kn_sb_free(src);
    KN_TRY(s);
    return kn_emit_launch(e, k, kn_emit_grid(n), (kn_dim3){256, 1, 1}, 0, args, n_args);
}

static void strides_of(int32_t rank, const int64_t *dims, int64_t *st)
{
    int64_t s = 1;
    for (int32_t i = rank - 1; i >= 0; i--) {
        st[i] = s;
        s *= dims[i];
    }
}

/* Integers of a constant input (int32/int64), at most max of them. */
static kn_status const_ints(kn_emit *e, const kn_emit_tensor *t, const char *what, int64_t *out, int64_t max,
                            int64_t *n)
{
    if (!t || !t->host_data)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s must be a constant", what);
    if ((t->dtype != KN_I64 && t->dtype != KN_I32) || t->numel > max)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "%s: %lld %s values", what, (long long)t->numel,
                            kn_dtype_name(t->dtype));
    for (int64_t i = 0; i < t->numel; i++)
        out[i] = kn_get_i64(t->dtype, t->host_data, i);
    *n = t->numel;
    return KN_OK;
}

/* ---- aliases ---- */

/* Identity and the reshapes: the output is the input's bytes. */
kn_status kn_emit_Identity(kn_emit *e) { return kn_emit_alias(e, 0, 0); }
kn_status kn_emit_Reshape(kn_emit *e) { return kn_emit_alias(e, 0, 0); }
kn_status kn_emit_Flatten(kn_emit *e) { return kn_emit_alias(e, 0, 0); }
kn_status kn_emit_Squeeze(kn_emit *e) { return kn_emit_alias(e, 0, 0); }
kn_status kn_emit_Unsqueeze(kn_emit *e) { return kn_emit_alias(e, 0, 0); }

/* ---- strided views ---- */

/* A view of the input: output element at coordinates c (row-major over
 * dims) reads input element base + sum (c[k] % mod[k]) * st[k]. Covers
 * Transpose, Slice (negative steps too), Expand (stride 0), Tile (mod),
 * DepthToSpace and SpaceToDepth (rank-6 views). */
typedef struct view_params {
    int64_t n, rank, base;
    int64_t dims[KN_CU_MAX_RANK], mod[KN_CU_MAX_RANK], st[KN_CU_MAX_RANK];
} view_params;

/* Whether view p reads input elements base, base + 1, ... in output
 * order: every dim of extent > 1 steps by the row-major stride of the
 * dims after it and does not wrap. Then the output is a contiguous byte
 * range of the input — e.g. a Transpose that only moves dims of size 1,
 * or a Slice of the last axis when every dim before it has extent 1. */
bool kn_cuda_view_is_range(int64_t rank, const int64_t *dims, const int64_t *mod, const int64_t *st)
{
    int64_t want = 1;
    for (int64_t k = rank - 1; k >= 0; k--) {
        if (dims[k] == 1)
            continue;
        if (dims[k] <= 0 || st[k] != want || (mod[k] > 0 && mod[k] < dims[k]))
            return false;
        want *= dims[k];
    }
    return true;
}

static kn_status emit_view(kn_emit *e, view_params *p)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    const char *t = x ? word_type(x->dtype) : NULL;
    if (!t || !y)
        return bad_dtype(e, x);
    p->n = y->numel;
    uint64_t es = kn_dtype_bits(x->dtype) / 8, off = (uint64_t)p->base * es;
    if (p->n > 0 && p->base >= 0 && y->nbytes == (uint64_t)p->n * es && off % KN_CU_ALIAS_ALIGN == 0 &&
        off + y->nbytes <= x->nbytes && kn_cuda_view_is_range(p->rank, p->dims, p->mod, p->st))
        return kn_emit_alias_at(e, 0, 0, off); /* moves no bytes */
    for (int64_t k = 0; k < p->rank; k++)
        if (p->mod[k] <= 0)
            p->mod[k] = p->dims[k] > 0 ? p->dims[k] : 1;
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, rank, base; i64 dims[8], mod[8], st[8]; };\n"
                 "extern \"C\" __global__ void view_copy(const %s *x, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 r = i, off = p.base;\n"
                 "    for (int k = (int)p.rank - 1; k >= 0; k--) {\n"
                 "      i64 c = r %% p.dims[k];\n"
                 "      r /= p.dims[k];\n"
                 "      off += (c %% p.mod[k]) * p.st[k];\n"
                 "    }\n"
                 "    y[i] = x[off];\n"
                 "  }\n"
                 "}\n",
                 t, t);
    kn_emit_arg args[3] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL}, {KN_ARG_PARAMS, 0, sizeof *p, p}};
    return launch_src(e, &src, "view_copy", p->n, args, 3);
}

kn_status kn_emit_Transpose(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    if (!x)
        return bad_dtype(e, x);
    int32_t r = x->rank;
    uint32_t np;
    const int64_t *perm = kn_emit_attr_ints(e, "perm", &np);
    if (perm && (int32_t)np != r)
        return kn_emit_fail(e, KN_ERR_INVALID, "perm has %u entries for rank %d", np, (int)r);
    int64_t st[KN_CU_MAX_RANK];
    strides_of(r, x->dims, st);
    view_params p;
    memset(&p, 0, sizeof p);
    p.rank = r;
    for (int32_t i = 0; i < r; i++) {
        int64_t a = perm ? perm[i] : r - 1 - i;
        if (a < 0 || a >= r)
            return kn_emit_fail(e, KN_ERR_INVALID, "perm[%d] = %lld out of range", (int)i, (long long)a);
        p.dims[i] = x->dims[a];
        p.st[i] = st[a];
    }
    return emit_view(e, &p);
}

/* First index of one Slice axis (numpy clamping), as the CPU kernel. */
static int64_t slice_first(int64_t start, int64_t step, int64_t d)
{
    if (start < 0)
        start += d;
    if (step > 0)
        return start < 0 ? 0 : start > d ? d : start;
    return start < 0 ? -1 : start > d - 1 ? d - 1 : start;
}

kn_status kn_emit_Slice(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return bad_dtype(e, x);
    int32_t r = x->rank;
    int64_t starts[KN_CU_MAX_RANK], axes[KN_CU_MAX_RANK], steps[KN_CU_MAX_RANK], ns, n;
    bool has_axes = false;
    if (kn_emit_opset(e) < 10) {
        uint32_t n1, n3;
        const int64_t *a1 = kn_emit_attr_ints(e, "starts", &n1), *a3 = kn_emit_attr_ints(e, "axes", &n3);
        if (n1 > KN_CU_MAX_RANK || (a3 && n3 != n1))
            return kn_emit_fail(e, KN_ERR_INVALID, "bad starts/axes attributes");
        ns = n1;
        for (uint32_t i = 0; i < n1; i++) {
            starts[i] = a1[i];
            steps[i] = 1;
            if (a3)
                axes[i] = a3[i];
        }
        has_axes = a3 != NULL;
    } else {
        KN_TRY(const_ints(e, kn_emit_in(e, 1), "starts", starts, KN_CU_MAX_RANK, &ns));
        if (kn_emit_in(e, 3)) {
            KN_TRY(const_ints(e, kn_emit_in(e, 3), "axes", axes, KN_CU_MAX_RANK, &n));
            if (n != ns)
                return kn_emit_fail(e, KN_ERR_INVALID, "axes and starts differ in length");
            has_axes = true;
        }
        for (int64_t i = 0; i < ns; i++)
            steps[i] = 1;
        if (kn_emit_in(e, 4)) {
            KN_TRY(const_ints(e, kn_emit_in(e, 4), "steps", steps, KN_CU_MAX_RANK, &n));
            if (n != ns)
                return kn_emit_fail(e, KN_ERR_INVALID, "steps and starts differ in length");
        }
    }
    int64_t st[KN_CU_MAX_RANK];
    strides_of(r, x->dims, st);
    view_params p;
    memset(&p, 0, sizeof p);
    p.rank = r;
    for (int32_t i = 0; i < r; i++) {
        p.dims[i] = y->dims[i];
        p.st[i] = st[i];
    }
    for (int64_t k = 0; k < ns; k++) {
        int64_t a = has_axes ? axes[k] : k;
        if (a < 0)
            a += r;
        if (a < 0 || a >= r || steps[k] == 0)
            return kn_emit_fail(e, KN_ERR_INVALID, "bad axis or step %lld", (long long)k);
        p.st[a] = st[a] * steps[k];
        if (y->dims[a])
            p.base += slice_first(starts[k], steps[k], x->dims[a]) * st[a];
    }
    return emit_view(e, &p);
}

kn_status kn_emit_Expand(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y)
        return bad_dtype(e, x);
    int64_t st[KN_CU_MAX_RANK];
    strides_of(x->rank, x->dims, st);
    view_params p;
    memset(&p, 0, sizeof p);
    p.rank = y->rank;
    for (int32_t i = 0; i < y->rank; i++) {
        int32_t xi = i - (y->rank - x->rank);
        p.dims[i] = y->dims[i];
        p.st[i] = xi >= 0 && x->dims[xi] != 1 ? st[xi] : 0;
    }
    return emit_view(e, &p);
}

kn_status kn_emit_Tile(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *y = kn_emit_out(e, 0);
    if (!x || !y || x->rank != y->rank)
        return bad_dtype(e, x);
    int64_t st[KN_CU_MAX_RANK];
    strides_of(x->rank, x->dims, st);
    view_params p;
    memset(&p, 0, sizeof p);
    p.rank = y->rank;
    for (int32_t i = 0; i < y->rank; i++) {
        p.dims[i] = y->dims[i];
        p.mod[i] = x->dims[i];
        p.st[i] = st[i];
    }
    return emit_view(e, &p);
}

static kn_status block_mode(kn_emit *e, bool *crd, int64_t *b)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    if (!x || x->rank != 4)
        return kn_emit_fail(e, KN_ERR_INVALID, "input must be 4-D");
    *b = kn_emit_attr_int(e, "blocksize", 0);
    if (*b < 1)
        return kn_emit_fail(e, KN_ERR_INVALID, "blocksize %lld is invalid", (long long)*b);
    const char *mode = kn_emit_attr_str(e, "mode", "DCR");
    *crd = strcmp(mode, "CRD") == 0;
    if (!*crd && strcmp(mode, "DCR") != 0)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "mode '%s'", mode);
    return KN_OK;
}

kn_status kn_emit_DepthToSpace(kn_emit *e)
{
    bool crd;
    int64_t b = 1;
    KN_TRY(block_mode(e, &crd, &b));
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3], HW = H * W, Co = C / (b * b);
    /* view (n, c, h, i, w, j) of the output reads input channel (DCR)
     * (i*b + j)*Co + c, (CRD) c*b*b + i*b + j */
    int64_t vd[6] = {N, Co, H, b, W, b};
    int64_t vs[6] = {C * HW, crd ? b * b * HW : HW, W, crd ? b * HW : b * Co * HW, 1, crd ? HW : Co * HW};
    view_params p;
    memset(&p, 0, sizeof p);
    p.rank = 6;
    memcpy(p.dims, vd, sizeof vd);
    memcpy(p.st, vs, sizeof vs);
    return emit_view(e, &p);
}

kn_status kn_emit_SpaceToDepth(kn_emit *e)
{
    bool crd;
    int64_t b = 1;
    KN_TRY(block_mode(e, &crd, &b));
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
    /* output channel (DCR) (i*b + j)*C + c, (CRD) c*b*b + i*b + j reads
     * input (c, h*b + i, w*b + j) */
    int64_t dcr_d[6] = {N, b, b, C, H / b, W / b}, dcr_s[6] = {C * H * W, W, 1, H * W, b * W, b};
    int64_t crd_d[6] = {N, C, b, b, H / b, W / b}, crd_s[6] = {C * H * W, H * W, W, 1, b * W, b};
    view_params p;
    memset(&p, 0, sizeof p);
    p.rank = 6;
    memcpy(p.dims, crd ? crd_d : dcr_d, sizeof dcr_d);
    memcpy(p.st, crd ? crd_s : dcr_s, sizeof dcr_s);
    return emit_view(e, &p);
}

/* ---- joining and splitting ---- */

/* Copies n elements as rows: element i lies in row i / rows at column
 * i % rows; it goes from src[row * src_row + src_off + col] to
 * dst[row * dst_row + dst_off + col]. One Concat input or one Split
 * output per launch. */
typedef struct rows_params {
    int64_t n, rows, src_row, src_off, dst_row, dst_off;
} rows_params;

static kn_status emit_rows(kn_emit *e, kn_dtype dt, kn_emit_arg src_arg, kn_emit_arg dst_arg, const rows_params *p)
{
    const char *t = word_type(dt);
    if (!t)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "dtype %s", kn_dtype_name(dt));
    size_t es = kn_dtype_bits(dt) / 8;
    if (p->n <= p->rows || (p->rows == p->src_row && p->rows == p->dst_row)) /* one contiguous block */
        return kn_emit_copy(e, dst_arg.index, (uint64_t)p->dst_off * es, src_arg.index, (uint64_t)p->src_off * es,
                            (uint64_t)p->n * es);
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, rows, src_row, src_off, dst_row, dst_off; };\n"
                 "extern \"C\" __global__ void rows_copy(const %s *x, %s *y, P p) {\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 r = i / p.rows, c = i %% p.rows;\n"
                 "    y[r * p.dst_row + p.dst_off + c] = x[r * p.src_row + p.src_off + c];\n"
                 "  }\n"
                 "}\n",
                 t, t);
    kn_emit_arg args[3] = {src_arg, dst_arg, {KN_ARG_PARAMS, 0, sizeof *p, p}};
    return launch_src(e, &src, "rows_copy", p->n, args, 3);
}

kn_status kn_emit_Concat(kn_emit *e)
{
    const kn_emit_tensor *y = kn_emit_out(e, 0);
    if (!y)
        return bad_dtype(e, y);
    int64_t axis = kn_emit_attr_int(e, "axis", 1);
    if (axis < 0)
        axis += y->rank;
    if (axis < 0 || axis >= y->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range");
    int64_t outer = 1, inner = 1;
    for (int32_t i = 0; i < axis; i++)
        outer *= y->dims[i];
    for (int32_t i = (int32_t)axis + 1; i < y->rank; i++)
        inner *= y->dims[i];
    int64_t pos = 0;
    bool any = false;
    for (uint32_t k = 0; k < kn_emit_n_inputs(e); k++) {
        const kn_emit_tensor *x = kn_emit_in(e, k);
        if (!x)
            continue;
        int64_t rows = x->dims[axis] * inner;
        if (rows == 0 && any)
            continue;
        rows_params p = {outer * rows, rows ? rows : 1, rows, 0, y->dims[axis] * inner, pos};
        KN_TRY(emit_rows(e, y->dtype, (kn_emit_arg){KN_ARG_IN, k, 0, NULL}, (kn_emit_arg){KN_ARG_OUT, 0, 0, NULL},
                         &p));
        pos += rows;
        any = true;
    }
    if (!any)
        return kn_emit_fail(e, KN_ERR_INVALID, "no inputs");
    return KN_OK;
}

kn_status kn_emit_Split(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0);
    if (!x)
        return bad_dtype(e, x);
    int64_t axis = kn_emit_attr_int(e, "axis", 0);
    if (axis < 0)
        axis += x->rank;
    if (axis < 0 || axis >= x->rank)
        return kn_emit_fail(e, KN_ERR_INVALID, "axis out of range");
    int64_t outer = 1, inner = 1;
    for (int32_t i = 0; i < axis; i++)
        outer *= x->dims[i];
    for (int32_t i = (int32_t)axis + 1; i < x->rank; i++)
        inner *= x->dims[i];
    int64_t pos = 0;
    for (uint32_t k = 0; k < kn_emit_n_outputs(e); k++) {
        const kn_emit_tensor *y = kn_emit_out(e, k);
        if (!y)
            continue;
        int64_t rows = y->dims[axis] * inner;
        uint64_t es = kn_dtype_bits(x->dtype) / 8, off = (uint64_t)pos * es;
        if (outer == 1 && rows > 0 && word_type(x->dtype) && off % KN_CU_ALIAS_ALIGN == 0 &&
            off + y->nbytes <= x->nbytes) { /* a contiguous range of the input: a view */
            KN_TRY(kn_emit_alias_at(e, k, 0, off));
            pos += rows;
            continue;
        }
        rows_params p = {outer * rows, rows ? rows : 1, x->dims[axis] * inner, pos, rows, 0};
        KN_TRY(emit_rows(e, x->dtype, (kn_emit_arg){KN_ARG_IN, 0, 0, NULL}, (kn_emit_arg){KN_ARG_OUT, k, 0, NULL},
                         &p));
        pos += rows;
    }
    return KN_OK;
}

/* ---- Trilu ---- */

typedef struct trilu_params {
    int64_t n, rows, cols, k, upper;
} trilu_params;

kn_status kn_emit_Trilu(kn_emit *e)
{
    const kn_emit_tensor *x = kn_emit_in(e, 0), *kt = kn_emit_in(e, 1);
    const char *t = x ? word_type(x->dtype) : NULL;
    if (!t || x->rank < 2)
        return bad_dtype(e, x);
    if (kt && kt->dtype != KN_I64)
        return kn_emit_fail(e, KN_ERR_UNSUPPORTED, "k of dtype %s", kn_dtype_name(kt->dtype));
    /* k may be run-time data: read on the device when given */
    trilu_params p = {x->numel, x->dims[x->rank - 2], x->dims[x->rank - 1], 0, kn_emit_attr_int(e, "upper", 1) != 0};
    kn_sb src = {0};
    kn_sb_printf(&src,
                 "#include \"kiln_cuda.h\"\n"
                 "struct P { i64 n, rows, cols, k, upper; };\n"
                 "extern \"C\" __global__ void trilu(const %s *x, %s%s *y, P p) {\n"
                 "  i64 k = %s;\n"
                 "  for (i64 i = kn_tid(); i < p.n; i += kn_nthreads()) {\n"
                 "    i64 j = i %% p.cols, r = (i / p.cols) %% p.rows, d = j - r;\n"
                 "    bool keep = p.upper ? d >= k : d <= k;\n"
                 "    y[i] = keep ? x[i] : (%s)0;\n"
                 "  }\n"
                 "}\n",
                 t, kt ? "const long long *kp, " : "", t, kt ? "kp[0]" : "p.k", t);
    kn_emit_arg args[4] = {{KN_ARG_IN, 0, 0, NULL}, {KN_ARG_IN, 1, 0, NULL}, {KN_ARG_OUT, 0, 0, NULL},
                           {KN_ARG_PARAMS, 0, sizeof p, &p}};
    if (!kt)
        args[1] = args[2], args[2] = args[3];
    return launch_src(e, &src, "trilu", p.n, args, kt ? 4 : 3);
}
