/* GPTQ: column-by-column quantization with optimal-brain-quantizer error
 * feedback through the Cholesky factor of the inverse Hessian, in lazy
 * batches of block_size columns (kiln/quant.h, docs/quantization.md). */
#include "quant/quant_internal.h"
#include "ir/arena.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Σ a[k] b[k], k < n, in four interleaved partial sums (a fixed order:
 * deterministic, and not one long dependency chain). */
static double dot(const double *a, const double *b, uint32_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    uint32_t k = 0;
    for (; k + 4 <= n; k += 4) {
        s0 += a[k] * b[k];
        s1 += a[k + 1] * b[k + 1];
        s2 += a[k + 2] * b[k + 2];
        s3 += a[k + 3] * b[k + 3];
    }
    for (; k < n; k++)
        s0 += a[k] * b[k];
    return (s0 + s1) + (s2 + s3);
}

/* In-place lower Cholesky factor of the n x n symmetric a (upper triangle
 * zeroed). False when a is not positive definite. */
static bool cholesky(double *a, uint32_t n)
{
    for (uint32_t j = 0; j < n; j++) {
        double *aj = a + (size_t)j * n;
        double s = aj[j] - dot(aj, aj, j);
        if (!(s > 0) || !isfinite(s))
            return false;
        double ljj = sqrt(s);
        aj[j] = ljj;
        for (uint32_t i = j + 1; i < n; i++) {
            double *ai = a + (size_t)i * n;
            ai[j] = (ai[j] - dot(ai, aj, j)) / ljj;
        }
    }
    for (uint32_t i = 0; i < n; i++)
        memset(a + (size_t)i * n + i + 1, 0, (size_t)(n - 1 - i) * sizeof *a);
    return true;
}

/* U, the upper Cholesky factor of H^-1 (H^-1 = Uᵀ U), into h (H is
 * overwritten; tmp holds n x n). With J the reversal, J H J = L Lᵀ gives
 * H = R Rᵀ with R = J L J upper triangular, so H^-1 = R^-ᵀ R^-1 and U =
 * R^-1 = J L^-1 J: one Cholesky and one triangular inverse (the GPTQ
 * paper's inverse-then-Cholesky gives the same U up to rounding). False
 * when H is not positive definite in floating point. */
static bool inverse_upper_factor(double *h, double *tmp, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++)
            tmp[(size_t)(n - 1 - i) * n + (n - 1 - j)] = h[(size_t)i * n + j];
    if (!cholesky(tmp, n))
        return false;
    /* h = L^-1 (lower triangular), row by row: row i of L L^-1 = e_i */
    memset(h, 0, (size_t)n * n * sizeof *h);
    for (uint32_t i = 0; i < n; i++) {
        double *hi = h + (size_t)i * n;
        const double *li = tmp + (size_t)i * n;
        hi[i] = 1;
        for (uint32_t k = 0; k < i; k++) {
            double a = li[k];
            const double *hk = h + (size_t)k * n;
            for (uint32_t j = 0; j <= k; j++)
                hi[j] -= a * hk[j];
        }
        double inv = 1.0 / li[i];
        for (uint32_t j = 0; j <= i; j++)
            hi[j] *= inv;
    }
    /* U = J L^-1 J */
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < n; j++)
            tmp[(size_t)(n - 1 - i) * n + (n - 1 - j)] = h[(size_t)i * n + j];
    memcpy(h, tmp, (size_t)n * n * sizeof *h);
    return true;
}

/* perm[0..n) sorted by decreasing key, ties by index: a stable merge
 * sort (tmp holds n entries). */
static void sort_desc(uint32_t *perm, uint32_t *tmp, const double *key, uint32_t n)
{
    for (uint32_t width = 1; width < n; width *= 2) {
        for (uint32_t lo = 0; lo < n; lo += 2 * width) {
            uint32_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
            uint32_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = key[perm[j]] > key[perm[i]] ? perm[j++] : perm[i++];
            while (i < mid)
                tmp[k++] = perm[i++];
            while (j < hi)
                tmp[k++] = perm[j++];
        }
        memcpy(perm, tmp, (size_t)n * sizeof *perm);
    }
}

kn_status kn_wq_gptq(const float *w_in, uint32_t n_out, uint32_t n_in, const double *h_in, const kn_qscheme *s,
                     const kn_gptq_opts *o, const kn_allocator *a, kn_diag *d, kn_qweights *out)
{
    KN_TRY(kn_qweights_alloc(n_out, n_in, s, false, a, d, "gptq", out));
    if (!kn_wq_finite(w_in, (size_t)n_out * n_in, "gptq: weight", d)) {
        kn_qweights_free(out);
        return KN_ERR_INVALID;
    }
    for (size_t i = 0; i < (size_t)n_in * n_in; i++)
        if (!isfinite(h_in[i])) {
            kn_diag_add(d, KN_ERROR, "gptq: Hessian element %zu is not finite", i);
            kn_qweights_free(out);
            return KN_ERR_INVALID;
        }
    kn_gptq_opts def = {0};
    if (!o)
        o = &def;
    double percdamp = o->percdamp > 0 ? o->percdamp : 0.01;
    uint32_t bs = o->block_size ? o->block_size : 128, gs = out->group_size, n = n_in;
    size_t nn = (size_t)n * n;
    double *w = kn_mem_alloc(a, (size_t)n_out * n * sizeof *w), *h = kn_mem_alloc(a, nn * sizeof *h);
    double *tmp = kn_mem_alloc(a, nn * sizeof *tmp), *err = kn_mem_alloc(a, (size_t)n_out * bs * sizeof *err);
    uint32_t *perm = kn_mem_alloc(a, (size_t)n * sizeof *perm);
    kn_qgrid *grids = kn_mem_alloc(a, (size_t)n_out * out->n_groups * sizeof *grids);
    kn_status st = KN_OK;
    if (!w || !h || !tmp || !err || !perm || !grids) {
        st = KN_ERR_NOMEM;
        goto done;
    }
    memcpy(h, h_in, nn * sizeof *h);
    for (size_t i = 0; i < (size_t)n_out * n; i++)
        w[i] = w_in[i];
    /* inputs never active: no information, weight 0 */
    for (uint32_t i = 0; i < n; i++)
        if (h[(size_t)i * n + i] == 0) {
            h[(size_t)i * n + i] = 1;
            for (uint32_t r = 0; r < n_out; r++)
                w[(size_t)r * n + i] = 0;
        }
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    if (o->act_order) {
        /* static groups: grids from the unmodified weights */
        for (uint32_t r = 0; r < n_out; r++)
            for (uint32_t g = 0; g < out->n_groups; g++) {
                uint32_t c0 = g * gs, c1 = c0 + gs < n ? c0 + gs : n;
                double mn = w[(size_t)r * n + c0], mx = mn;
                for (uint32_t c = c0; c < c1; c++) {
                    mn = fmin(mn, w[(size_t)r * n + c]);
                    mx = fmax(mx, w[(size_t)r * n + c]);
                }
                grids[(size_t)r * out->n_groups + g] = kn_wq_grid(s, mn, mx);
                kn_qweights_set_grid(out, r, g, &grids[(size_t)r * out->n_groups + g]);
            }
        /* tmp: the diagonal, then (after it) room for the sort */
        for (uint32_t i = 0; i < n; i++)
            tmp[i] = h[(size_t)i * n + i];
        sort_desc(perm, (uint32_t *)(tmp + n), tmp, n);
        /* permute W's columns and H's rows and columns */
        for (uint32_t r = 0; r < n_out; r++) {
            for (uint32_t j = 0; j < n; j++)
                tmp[j] = w[(size_t)r * n + perm[j]];
            memcpy(w + (size_t)r * n, tmp, (size_t)n * sizeof *tmp);
        }
        for (uint32_t i = 0; i < n; i++)
            for (uint32_t j = 0; j < n; j++)
                tmp[(size_t)i * n + j] = h[(size_t)perm[i] * n + perm[j]];
        memcpy(h, tmp, nn * sizeof *h);
    }
    double mean_diag = 0;
    for (uint32_t i = 0; i < n; i++)
        mean_diag += h[(size_t)i * n + i];
    mean_diag /= n;
    for (uint32_t i = 0; i < n; i++)
        h[(size_t)i * n + i] += percdamp * mean_diag;
    if (!inverse_upper_factor(h, tmp, n)) {
        kn_diag_add(d, KN_ERROR,
                    "gptq: the Hessian (%u x %u) is not positive definite after dampening by %g of its mean "
                    "diagonal; use more calibration data or a larger percdamp",
                    n, n, percdamp);
        st = KN_ERR_INVALID;
        goto done;
    }
    const double *u = h; /* upper factor of the inverse Hessian */
    for (uint32_t i1 = 0; i1 < n; i1 += bs) {
        uint32_t i2 = i1 + bs < n ? i1 + bs : n;
        for (uint32_t j = i1; j < i2; j++) {
            uint32_t col = perm[j];
            double ujj = u[(size_t)j * n + j];
            for (uint32_t r = 0; r < n_out; r++) {
                double *wr = w + (size_t)r * n, *er = err + (size_t)r * bs;
                kn_qgrid *grid = &grids[(size_t)r * out->n_groups + col / gs];
                if (!o->act_order && j % gs == 0) {
                    /* the group's grid from its current weights: columns in
                     * this block are up to date, later ones still lack this
                     * block's pending update */
                    uint32_t c1 = j + gs < n ? j + gs : n;
                    double mn = INFINITY, mx = -INFINITY;
                    for (uint32_t c = j; c < c1; c++) {
                        double v = wr[c];
                        if (c >= i2)
                            for (uint32_t k = i1; k < j; k++)
                                v -= er[k - i1] * u[(size_t)k * n + c];
                        mn = fmin(mn, v);
                        mx = fmax(mx, v);
                    }
                    *grid = kn_wq_grid(s, mn, mx);
                    kn_qweights_set_grid(out, r, j / gs, grid);
                }
                int32_t q = kn_wq_q(grid, wr[j]);
                double dq = kn_wq_dq(grid, q);
                kn_qweights_put(out, r, col, q);
                out->deq[(size_t)r * n + col] = (float)dq;
                double e = (wr[j] - dq) / ujj;
                er[j - i1] = e;
                const double *uj = u + (size_t)j * n;
                for (uint32_t c = j + 1; c < i2; c++)
                    wr[c] -= e * uj[c];
            }
        }
        /* the block's accumulated error, applied to the later columns at once */
        for (uint32_t r = 0; r < n_out; r++) {
            double *wr = w + (size_t)r * n;
            const double *er = err + (size_t)r * bs;
            for (uint32_t k = i1; k < i2; k++) {
                const double *uk = u + (size_t)k * n;
                double e = er[k - i1];
                for (uint32_t c = i2; c < n; c++)
                    wr[c] -= e * uk[c];
            }
        }
    }
done:
    kn_mem_free(a, w);
    kn_mem_free(a, h);
    kn_mem_free(a, tmp);
    kn_mem_free(a, err);
    kn_mem_free(a, perm);
    kn_mem_free(a, grids);
    if (st != KN_OK)
        kn_qweights_free(out);
    return st;
}
