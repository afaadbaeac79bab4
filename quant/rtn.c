/* The quantization grid, kn_qweights storage and round-to-nearest
 * quantization (INT8 per channel, INT4 group-wise). */
#include "quant/quant_internal.h"
#include "ir/arena.h"

#include <math.h>
#include <string.h>

kn_qgrid kn_wq_grid(const kn_qscheme *s, double mn, double mx)
{
    kn_qgrid g;
    int32_t levels = (1 << s->bits) - 1;
    if (s->symmetric) {
        int32_t qmax = (1 << (s->bits - 1)) - 1;
        double amax = fmax(fabs(mn), fabs(mx));
        g.scale = amax > 0 ? (float)(amax / qmax) : 1.0f;
        if (!(g.scale > 0)) /* amax below float's range */
            g.scale = 1.0f;
        g.zero = 0;
        g.qmin = -qmax;
        g.qmax = qmax;
    } else {
        mn = fmin(mn, 0);
        mx = fmax(mx, 0);
        g.scale = mx > mn ? (float)((mx - mn) / levels) : 1.0f;
        if (!(g.scale > 0))
            g.scale = 1.0f;
        double z = nearbyint(-mn / (double)g.scale);
        g.zero = (int32_t)(z < 0 ? 0 : z > levels ? levels : z);
        g.qmin = 0;
        g.qmax = levels;
    }
    return g;
}

int32_t kn_wq_q(const kn_qgrid *g, double x)
{
    double q = nearbyint(x / (double)g->scale) + g->zero;
    return (int32_t)(q < g->qmin ? g->qmin : q > g->qmax ? g->qmax : q);
}

bool kn_wq_finite(const float *x, size_t n, const char *what, kn_diag *d)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            kn_diag_add(d, KN_ERROR, "%s: element %zu is %g: cannot quantize non-finite values", what, i, (double)x[i]);
            return false;
        }
    return true;
}

void kn_qweights_free(kn_qweights *w)
{
    if (!w)
        return;
    kn_mem_free(w->alloc, w->q);
    kn_mem_free(w->alloc, w->scales);
    kn_mem_free(w->alloc, w->zeros);
    kn_mem_free(w->alloc, w->in_scale);
    kn_mem_free(w->alloc, w->deq);
    memset(w, 0, sizeof *w);
}

static void *zalloc(const kn_allocator *a, size_t n)
{
    void *p = kn_mem_alloc(a, n ? n : 1);
    if (p)
        memset(p, 0, n ? n : 1);
    return p;
}

kn_status kn_qweights_alloc(uint32_t n_out, uint32_t n_in, const kn_qscheme *s, bool with_in_scale,
                            const kn_allocator *a, kn_diag *d, const char *what, kn_qweights *out)
{
    memset(out, 0, sizeof *out);
    if (s->bits != 4 && s->bits != 8) {
        kn_diag_add(d, KN_ERROR, "%s: %u-bit weights are not supported (4 or 8)", what, s->bits);
        return KN_ERR_INVALID;
    }
    if (n_out == 0 || n_in == 0) {
        kn_diag_add(d, KN_ERROR, "%s: empty weight (%u x %u)", what, n_out, n_in);
        return KN_ERR_INVALID;
    }
    out->n_out = n_out;
    out->n_in = n_in;
    out->scheme = *s;
    out->group_size = s->group_size && s->group_size < n_in ? s->group_size : n_in;
    out->n_groups = (n_in + out->group_size - 1) / out->group_size;
    out->alloc = a;
    size_t row = s->bits == 8 ? n_in : (n_in + 1) / 2;
    size_t cells = (size_t)n_out * n_in, groups = (size_t)n_out * out->n_groups;
    if (cells / n_out != n_in || cells > SIZE_MAX / sizeof(float)) {
        kn_diag_add(d, KN_ERROR, "%s: weight too large (%u x %u)", what, n_out, n_in);
        return KN_ERR_LIMIT;
    }
    out->q_bytes = row * n_out;
    out->q = zalloc(a, out->q_bytes);
    out->scales = zalloc(a, groups * sizeof(float));
    out->zeros = s->symmetric ? NULL : zalloc(a, groups);
    out->in_scale = with_in_scale ? zalloc(a, (size_t)n_in * sizeof(float)) : NULL;
    out->deq = zalloc(a, cells * sizeof(float));
    if (!out->q || !out->scales || (!s->symmetric && !out->zeros) || (with_in_scale && !out->in_scale) ||
        !out->deq) {
        kn_qweights_free(out);
        return KN_ERR_NOMEM;
    }
    return KN_OK;
}

void kn_qweights_set_grid(kn_qweights *w, uint32_t row, uint32_t group, const kn_qgrid *g)
{
    size_t i = (size_t)row * w->n_groups + group;
    w->scales[i] = g->scale;
    if (w->zeros)
        w->zeros[i] = (uint8_t)g->zero;
}

void kn_qweights_put(kn_qweights *w, uint32_t row, uint32_t col, int32_t q)
{
    if (w->scheme.bits == 8) {
        w->q[(size_t)row * w->n_in + col] = (uint8_t)(w->scheme.symmetric ? (uint8_t)(int8_t)q : (uint8_t)q);
        return;
    }
    uint32_t u = (uint32_t)(w->scheme.symmetric ? q + 8 : q) & 15u;
    uint8_t *b = &w->q[(size_t)row * ((w->n_in + 1) / 2) + col / 2];
    *b = col % 2 ? (uint8_t)((*b & 0x0f) | u << 4) : (uint8_t)((*b & 0xf0) | u);
}

int32_t kn_qweights_code(const kn_qweights *w, uint32_t row, uint32_t col)
{
    size_t gi = (size_t)row * w->n_groups + col / w->group_size;
    int32_t zero = w->zeros ? w->zeros[gi] : 0;
    if (w->scheme.bits == 8) {
        uint8_t b = w->q[(size_t)row * w->n_in + col];
        return w->scheme.symmetric ? (int32_t)(int8_t)b : (int32_t)b - zero;
    }
    uint8_t b = w->q[(size_t)row * ((w->n_in + 1) / 2) + col / 2];
    int32_t u = col % 2 ? b >> 4 : b & 15;
    return w->scheme.symmetric ? u - 8 : u - zero;
}

kn_status kn_wq_rtn(const float *w, uint32_t n_out, uint32_t n_in, const kn_qscheme *s, const kn_allocator *a,
                    kn_diag *d, kn_qweights *out)
{
    KN_TRY(kn_qweights_alloc(n_out, n_in, s, false, a, d, "rtn", out));
    if (!kn_wq_finite(w, (size_t)n_out * n_in, "rtn: weight", d)) {
        kn_qweights_free(out);
        return KN_ERR_INVALID;
    }
    uint32_t gs = out->group_size;
    for (uint32_t r = 0; r < n_out; r++) {
        const float *row = w + (size_t)r * n_in;
        for (uint32_t g = 0; g < out->n_groups; g++) {
            uint32_t c0 = g * gs, c1 = c0 + gs < n_in ? c0 + gs : n_in;
            float mn = row[c0], mx = row[c0]; /* finite (checked above): plain compares suffice */
            for (uint32_t c = c0; c < c1; c++) {
                mn = row[c] < mn ? row[c] : mn;
                mx = row[c] > mx ? row[c] : mx;
            }
            kn_qgrid grid = kn_wq_grid(s, mn, mx);
            kn_qweights_set_grid(out, r, g, &grid);
            for (uint32_t c = c0; c < c1; c++) {
                int32_t q = kn_wq_q(&grid, row[c]);
                kn_qweights_put(out, r, c, q);
                out->deq[(size_t)r * n_in + c] = (float)kn_wq_dq(&grid, q);
            }
        }
    }
    return KN_OK;
}
