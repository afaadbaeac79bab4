/* AWQ: activation-aware per-input-channel scaling before round-to-nearest,
 * the scale exponent searched on the calibration statistics
 * (kiln/quant.h, docs/quantization.md). */
#include "quant/quant_internal.h"
#include "ir/arena.h"

#include <math.h>
#include <string.h>

/* Rows are taken 8 at a time so each row of H is read once per 8 rows,
 * and only H's upper triangle is read: ΔᵀHΔ = Σ_k Δ_k (H_kk Δ_k + 2 Σ_{j>k} H_kj Δ_j). */
double kn_wq_layer_error(const float *w, const float *w_hat, uint32_t n_out, uint32_t n_in, const double *h)
{
    enum { RB = 8 };
    double total = 0, dt_stack[RB * 512];
    double *dt = n_in <= 512 ? dt_stack : kn_mem_alloc(NULL, (size_t)n_in * RB * sizeof *dt);
    bool slow = dt == NULL;
    for (uint32_t r0 = 0; r0 < n_out && !slow; r0 += RB) {
        uint32_t nb = n_out - r0 < RB ? n_out - r0 : RB;
        /* dt[j][b]: row r0 + b's difference at column j (0 past the last row) */
        for (uint32_t j = 0; j < n_in; j++)
            for (uint32_t b = 0; b < RB; b++)
                dt[(size_t)j * RB + b] =
                    b < nb ? (double)w[(size_t)(r0 + b) * n_in + j] - w_hat[(size_t)(r0 + b) * n_in + j] : 0;
        for (uint32_t k = 0; k < n_in; k++) {
            const double *hk = h + (size_t)k * n_in, *dk = dt + (size_t)k * RB;
            double acc[RB];
            for (uint32_t b = 0; b < RB; b++)
                acc[b] = 0.5 * hk[k] * dk[b];
            for (uint32_t j = k + 1; j < n_in; j++) {
                double hkj = hk[j];
                const double *dj = dt + (size_t)j * RB;
                for (uint32_t b = 0; b < RB; b++)
                    acc[b] += hkj * dj[b];
            }
            for (uint32_t b = 0; b < RB; b++)
                total += 2 * dk[b] * acc[b];
        }
    }
    if (dt != dt_stack)
        kn_mem_free(NULL, dt);
    if (!slow)
        return total;
    /* no memory for the blocked form: one row at a time */
    for (uint32_t r = 0; r < n_out; r++) {
        const float *a = w + (size_t)r * n_in, *b = w_hat + (size_t)r * n_in;
        for (uint32_t i = 0; i < n_in; i++) {
            double di = (double)a[i] - b[i];
            if (di == 0)
                continue;
            const double *hi = h + (size_t)i * n_in;
            double s = 0;
            for (uint32_t j = 0; j < n_in; j++)
                s += hi[j] * ((double)a[j] - b[j]);
            total += di * s;
        }
    }
    return total;
}

static bool finite_d(const double *x, size_t n, const char *what, kn_diag *d)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || x[i] < 0) {
            kn_diag_add(d, KN_ERROR, "%s: element %zu is %g: expected a finite value >= 0", what, i, x[i]);
            return false;
        }
    return true;
}

/* s = mean_abs^alpha (at least 1e-4), normalised to max(s) * min(s) = 1. */
static void awq_scales(const double *mean_abs, uint32_t n, double alpha, float *s)
{
    double mx = 0, mn = INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        double v = pow(fmax(mean_abs[i], 1e-30), alpha);
        v = fmax(v, 1e-4);
        s[i] = (float)v;
        mx = fmax(mx, s[i]);
        mn = fmin(mn, s[i]);
    }
    double norm = sqrt(mx * mn);
    for (uint32_t i = 0; i < n; i++)
        s[i] = (float)(s[i] / norm);
}

/* RTN of W diag(s) into *q, and q->deq divided back by s. */
static kn_status scaled_rtn(const float *w, uint32_t n_out, uint32_t n_in, const float *s, const kn_qscheme *sc,
                            float *ws, const kn_allocator *a, kn_diag *d, kn_qweights *q)
{
    for (uint32_t r = 0; r < n_out; r++)
        for (uint32_t c = 0; c < n_in; c++)
            ws[(size_t)r * n_in + c] = w[(size_t)r * n_in + c] * s[c];
    KN_TRY(kn_wq_rtn(ws, n_out, n_in, sc, a, d, q));
    for (uint32_t r = 0; r < n_out; r++)
        for (uint32_t c = 0; c < n_in; c++)
            q->deq[(size_t)r * n_in + c] /= s[c];
    return KN_OK;
}

kn_status kn_wq_awq(const float *w, uint32_t n_out, uint32_t n_in, const double *mean_abs, const double *h,
                    const kn_qscheme *sc, const kn_awq_opts *o, const kn_allocator *a, kn_diag *d,
                    kn_qweights *out, double *alpha_out, double *err_out)
{
    memset(out, 0, sizeof *out);
    if (n_out == 0 || n_in == 0) {
        kn_diag_add(d, KN_ERROR, "awq: empty weight (%u x %u)", n_out, n_in);
        return KN_ERR_INVALID;
    }
    if (!kn_wq_finite(w, (size_t)n_out * n_in, "awq: weight", d) ||
        !finite_d(mean_abs, n_in, "awq: mean |x|", d))
        return KN_ERR_INVALID;
    for (size_t i = 0; i < (size_t)n_in * n_in; i++)
        if (!isfinite(h[i])) {
            kn_diag_add(d, KN_ERROR, "awq: XᵀX element %zu is not finite", i);
            return KN_ERR_INVALID;
        }
    uint32_t n_grid = o && o->n_grid ? o->n_grid : 20;
    float *s = kn_mem_alloc(a, (size_t)n_in * sizeof *s);
    float *ws = kn_mem_alloc(a, (size_t)n_out * n_in * sizeof *ws);
    kn_status st = s && ws ? KN_OK : KN_ERR_NOMEM;
    double best_err = INFINITY, best_alpha = 0;
    for (uint32_t i = 0; i < n_grid && st == KN_OK; i++) {
        double alpha = n_grid > 1 ? (double)i / (n_grid - 1) : 0;
        kn_qweights q;
        awq_scales(mean_abs, n_in, alpha, s);
        st = scaled_rtn(w, n_out, n_in, s, sc, ws, a, d, &q);
        if (st != KN_OK)
            break;
        double e = kn_wq_layer_error(w, q.deq, n_out, n_in, h);
        if (e < best_err) {
            best_err = e;
            best_alpha = alpha;
        }
        kn_qweights_free(&q);
    }
    if (st == KN_OK) {
        awq_scales(mean_abs, n_in, best_alpha, s);
        st = scaled_rtn(w, n_out, n_in, s, sc, ws, a, d, out);
    }
    if (st == KN_OK) {
        out->in_scale = s;
        s = NULL;
        if (alpha_out)
            *alpha_out = best_alpha;
        if (err_out)
            *err_out = best_err;
    }
    kn_mem_free(a, s);
    kn_mem_free(a, ws);
    return st;
}
