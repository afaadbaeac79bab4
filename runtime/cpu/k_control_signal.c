/* Signal kernels: DFT, STFT, the Hann/Hamming/Blackman windows and
 * MelWeightMatrix. Transforms are direct O(n^2) sums in double with
 * twiddle factors taken from a table indexed by (j*k mod n), so every
 * angle is reduced exactly. */
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

static const double two_pi = 6.283185307179586476925286766559;

static kn_status scalar_int(kn_kctx *c, const kn_rt_tensor *t, const char *name, int64_t *out)
{
    if (t->numel != 1 || !kn_dt_is_int(t->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be a single integer, got %s with %lld elements", name,
                            kn_dtype_name(t->dtype), (long long)t->numel);
    *out = kn_get_i64(t->dtype, t->data, 0);
    return KN_OK;
}

static kn_status scalar_float(kn_kctx *c, const kn_rt_tensor *t, const char *name, double *out)
{
    if (t->numel != 1 || !(kn_dt_is_float(t->dtype) || kn_dt_is_int(t->dtype)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "%s must be a single number, got %s with %lld elements", name,
                            kn_dtype_name(t->dtype), (long long)t->numel);
    *out = kn_get_f64(t->dtype, t->data, 0);
    return KN_OK;
}

/* cos/sin of 2*pi*m/n for m in [0, n). */
typedef struct twiddles {
    int64_t n;
    double *cos, *sin;
} twiddles;

static kn_status twiddles_make(kn_kctx *c, int64_t n, twiddles *tw)
{
    if ((uint64_t)n > SIZE_MAX / (2 * sizeof(double)) - 1)
        return kn_kctx_fail(c, KN_ERR_LIMIT, "DFT length %lld too large", (long long)n);
    tw->n = n;
    tw->cos = kn_kctx_scratch(c, (size_t)(2 * n + 1) * sizeof(double));
    if (!tw->cos)
        return KN_ERR_NOMEM;
    tw->sin = tw->cos + n;
    for (int64_t m = 0; m < n; m++) {
        double a = two_pi * (double)m / (double)n;
        tw->cos[m] = cos(a);
        tw->sin[m] = sin(a);
    }
    return KN_OK;
}

/* Bins [0, n_out) of the length-n (tw->n) DFT of the n_in complex values
 * (re, im), zero-padded or truncated to n. inverse: e^{+i...}/n. */
static void dft_1d(const twiddles *tw, const double *re, const double *im, int64_t n_in, bool inverse, int64_t n_out,
                   double *out_re, double *out_im)
{
    int64_t n = tw->n, m = n_in < n ? n_in : n;
    double sign = inverse ? 1.0 : -1.0, scale = inverse ? 1.0 / (double)n : 1.0;
    for (int64_t k = 0; k < n_out; k++) {
        double sr = 0, si = 0;
        int64_t idx = 0; /* (j * k) mod n */
        for (int64_t j = 0; j < m; j++) {
            double cs = tw->cos[idx], sn = sign * tw->sin[idx];
            sr += re[j] * cs - im[j] * sn;
            si += re[j] * sn + im[j] * cs;
            idx += k;
            if (idx >= n)
                idx -= n;
        }
        out_re[k] = sr * scale;
        out_im[k] = si * scale;
    }
}

/* ---- DFT ---- */

kn_status kn_ref_DFT(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0);
    if (!x)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input");
    if (!kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must be a float tensor, got %s", kn_dtype_name(x->dtype));
    int32_t r = x->rank;
    if (r < 2 || (x->dims[r - 1] != 1 && x->dims[r - 1] != 2))
        return kn_kctx_fail(c, KN_ERR_INVALID, "input must have rank >= 2 with a last dimension of 1 (real) or 2 "
                                               "(complex)");
    bool inverse = kn_kctx_attr_int(c, "inverse", 0) != 0, onesided = kn_kctx_attr_int(c, "onesided", 0) != 0;
    int64_t axis = kn_kctx_opset(c) < 20 ? kn_kctx_attr_int(c, "axis", 1) : -2;
    if (kn_kctx_opset(c) >= 20 && kn_kctx_in(c, 2))
        KN_TRY(scalar_int(c, kn_kctx_in(c, 2), "axis", &axis));
    int64_t ax = axis < 0 ? axis + r : axis;
    if (ax < 0 || ax > r - 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "axis %lld out of range for rank %d (the last axis holds the complex "
                                               "parts)", (long long)axis, (int)r);
    int64_t n_in = x->dims[ax], n = 0;
    bool irfft = inverse && onesided;
    if (kn_kctx_in(c, 1)) {
        KN_TRY(scalar_int(c, kn_kctx_in(c, 1), "dft_length", &n));
        if (n < 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "dft_length must be positive, got %lld", (long long)n);
    } else {
        n = irfft ? 2 * (n_in - 1) : n_in;
        if (n < 1)
            return kn_kctx_fail(c, KN_ERR_INVALID, "the signal along axis %lld is too short for a DFT", (long long)ax);
    }
    int64_t n_out = irfft ? n : onesided ? n / 2 + 1 : n, in_c = x->dims[r - 1], out_c = irfft ? 1 : 2;
    int64_t dims[KN_RT_MAX_RANK];
    memcpy(dims, x->dims, (size_t)r * sizeof *dims);
    dims[ax] = n_out;
    dims[r - 1] = out_c;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, r, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    twiddles tw;
    KN_TRY(twiddles_make(c, n, &tw));
    int64_t outer = 1, inner = 1;
    for (int64_t i = 0; i < ax; i++)
        outer *= x->dims[i];
    for (int64_t i = ax + 1; i < r - 1; i++)
        inner *= x->dims[i];
    /* the IRFFT reads n bins (the Hermitian extension of the one-sided input) */
    int64_t n_buf = irfft ? n : n_in;
    double *buf = kn_kctx_scratch(c, (size_t)(2 * n_buf + 2 * n_out + 1) * sizeof *buf);
    if (!buf)
        return KN_ERR_NOMEM;
    double *re = buf, *im = re + n_buf, *ore = im + n_buf, *oim = ore + n_out;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            for (int64_t j = 0; !irfft && j < n_in; j++) {
                int64_t e = ((o * n_in + j) * inner + i) * in_c;
                re[j] = kn_get_f64(x->dtype, x->data, e);
                im[j] = in_c == 2 ? kn_get_f64(x->dtype, x->data, e + 1) : 0;
            }
            if (irfft) {
                for (int64_t k = 0; k < n; k++) {
                    bool mirror = k > n / 2;
                    int64_t src = mirror ? n - k : k;
                    double a = 0, b = 0;
                    if (src < n_in) {
                        int64_t e = ((o * n_in + src) * inner + i) * in_c;
                        a = kn_get_f64(x->dtype, x->data, e);
                        b = in_c == 2 ? kn_get_f64(x->dtype, x->data, e + 1) : 0;
                    }
                    re[k] = a;
                    im[k] = mirror ? -b : b;
                }
            }
            dft_1d(&tw, re, im, n_buf, inverse, n_out, ore, oim);
            for (int64_t k = 0; k < n_out; k++) {
                int64_t e = ((o * n_out + k) * inner + i) * out_c;
                kn_set_f64(y->dtype, y->data, e, ore[k]);
                if (out_c == 2)
                    kn_set_f64(y->dtype, y->data, e + 1, oim[k]);
            }
        }
    return KN_OK;
}

/* ---- STFT ---- */

kn_status kn_ref_STFT(kn_kctx *c)
{
    const kn_rt_tensor *x = kn_kctx_in(c, 0), *step_t = kn_kctx_in(c, 1), *win = kn_kctx_in(c, 2),
                       *len_t = kn_kctx_in(c, 3);
    if (!x || !step_t)
        return kn_kctx_fail(c, KN_ERR_INVALID, "inputs signal and frame_step are required");
    if (!kn_dt_is_float(x->dtype))
        return kn_kctx_fail(c, KN_ERR_INVALID, "signal must be a float tensor, got %s", kn_dtype_name(x->dtype));
    if (x->rank != 3 || (x->dims[2] != 1 && x->dims[2] != 2))
        return kn_kctx_fail(c, KN_ERR_INVALID, "signal must have shape [batch, length, 1 or 2]");
    int64_t batch = x->dims[0], sig_len = x->dims[1], in_c = x->dims[2], step = 0, fl = sig_len;
    KN_TRY(scalar_int(c, step_t, "frame_step", &step));
    if (step < 1)
        return kn_kctx_fail(c, KN_ERR_INVALID, "frame_step must be positive, got %lld", (long long)step);
    if (win) {
        if (win->rank != 1 || !kn_dt_is_float(win->dtype))
            return kn_kctx_fail(c, KN_ERR_INVALID, "window must be a 1-D float tensor");
        fl = win->dims[0];
    }
    if (len_t) {
        int64_t v = 0;
        KN_TRY(scalar_int(c, len_t, "frame_length", &v));
        if (win && v != fl)
            return kn_kctx_fail(c, KN_ERR_INVALID, "frame_length %lld differs from the window length %lld",
                                (long long)v, (long long)fl);
        fl = v;
    }
    if (fl < 1 || fl > sig_len)
        return kn_kctx_fail(c, KN_ERR_INVALID, "frame_length %lld must be in [1, %lld] (the signal length)",
                            (long long)fl, (long long)sig_len);
    bool onesided = kn_kctx_attr_int(c, "onesided", 1) != 0;
    if (onesided && in_c == 2)
        return kn_kctx_fail(c, KN_ERR_INVALID, "onesided output needs a real signal (last dimension 1)");
    int64_t frames = (sig_len - fl) / step + 1, bins = onesided ? fl / 2 + 1 : fl;
    int64_t dims[4] = {batch, frames, bins, 2};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, x->dtype, 4, dims, &y));
    if (y->numel == 0)
        return KN_OK;
    twiddles tw;
    KN_TRY(twiddles_make(c, fl, &tw));
    double *buf = kn_kctx_scratch(c, (size_t)(2 * fl + 2 * bins + 1) * sizeof *buf);
    if (!buf)
        return KN_ERR_NOMEM;
    double *re = buf, *im = re + fl, *ore = im + fl, *oim = ore + bins;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t f = 0; f < frames; f++) {
            for (int64_t j = 0; j < fl; j++) {
                int64_t e = (b * sig_len + f * step + j) * in_c;
                double w = win ? kn_get_f64(win->dtype, win->data, j) : 1.0;
                re[j] = w * kn_get_f64(x->dtype, x->data, e);
                im[j] = in_c == 2 ? w * kn_get_f64(x->dtype, x->data, e + 1) : 0;
            }
            dft_1d(&tw, re, im, fl, false, bins, ore, oim);
            for (int64_t k = 0; k < bins; k++) {
                int64_t e = ((b * frames + f) * bins + k) * 2;
                kn_set_f64(y->dtype, y->data, e, ore[k]);
                kn_set_f64(y->dtype, y->data, e + 1, oim[k]);
            }
        }
    return KN_OK;
}

/* ---- windows ---- */

static kn_status out_datatype(kn_kctx *c, kn_dtype *out)
{
    int64_t v = kn_kctx_attr_int(c, "output_datatype", KN_F32);
    if (!kn_dtype_valid((int)v) || v != (int)v || !(kn_dt_is_float((kn_dtype)v) || kn_dt_is_int((kn_dtype)v)))
        return kn_kctx_fail(c, KN_ERR_INVALID, "output_datatype %lld is not a numeric tensor type", (long long)v);
    *out = (kn_dtype)v;
    return KN_OK;
}

typedef enum { WIN_HANN, WIN_HAMMING, WIN_BLACKMAN } win_kind;

/* Window of `size` points over N = size (periodic) or size - 1
 * (symmetric), each evaluated in the operation order of ONNX's reference so
 * that integer output types truncate the same values (a symmetric window of
 * size 1 divides by N = 0 and is NaN there, as in ONNX and ONNX Runtime):
 *   Hann      sin^2(pi n / N)
 *   Hamming   alpha - beta cos(2 pi n / N), alpha = 25/46, beta = 1 - alpha
 *   Blackman  (-0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N)) + 0.42
 * Angles are reduced exactly (n and 2n mod N) before scaling by pi. */
static kn_status window(kn_kctx *c, win_kind kind)
{
    const kn_rt_tensor *size_in = kn_kctx_in(c, 0);
    if (!size_in)
        return kn_kctx_fail(c, KN_ERR_INVALID, "missing input 'size'");
    int64_t size;
    KN_TRY(scalar_int(c, size_in, "size", &size));
    if (size < 0)
        return kn_kctx_fail(c, KN_ERR_INVALID, "size must be non-negative, got %lld", (long long)size);
    kn_dtype dt = KN_F32;
    KN_TRY(out_datatype(c, &dt));
    bool periodic = kn_kctx_attr_int(c, "periodic", 1) != 0;
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, dt, 1, &size, &y));
    int64_t n_den = periodic ? size : size - 1;
    const double pi = two_pi / 2, alpha = 25.0 / 46.0;
    for (int64_t i = 0; i < size; i++) {
        double v;
        if (n_den <= 0) {
            v = NAN;
        } else {
            double t1 = (double)(i % n_den) / (double)n_den, t2 = (double)((2 * i) % n_den) / (double)n_den;
            switch (kind) {
            case WIN_HANN: v = sin(pi * t1); v = v * v; break;
            case WIN_HAMMING: v = alpha - cos(two_pi * t1) * (1.0 - alpha); break;
            default: v = (cos(two_pi * t1) * -0.5 + cos(two_pi * t2) * 0.08) + 0.42; break;
            }
        }
        kn_set_f64(dt, y->data, i, v);
    }
    return KN_OK;
}

kn_status kn_ref_HannWindow(kn_kctx *c) { return window(c, WIN_HANN); }
kn_status kn_ref_HammingWindow(kn_kctx *c) { return window(c, WIN_HAMMING); }
kn_status kn_ref_BlackmanWindow(kn_kctx *c) { return window(c, WIN_BLACKMAN); }

/* ---- MelWeightMatrix ---- */

/* Triangular filters between num_mel_bins + 2 edges spaced evenly in mel
 * (mel(f) = 2595 log10(1 + f / 700)), each edge mapped to the spectrogram
 * bin floor((dft_length + 1) * f / sample_rate), as ONNX's reference. Bins
 * past the one-sided spectrum are left out. */
kn_status kn_ref_MelWeightMatrix(kn_kctx *c)
{
    const kn_rt_tensor *t[5];
    static const char *names[5] = {"num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz",
                                   "upper_edge_hertz"};
    for (uint32_t i = 0; i < 5; i++)
        if (!(t[i] = kn_kctx_in(c, i)))
            return kn_kctx_fail(c, KN_ERR_INVALID, "missing input '%s'", names[i]);
    int64_t n_mel = 0, dft_len = 0, rate = 0;
    double lo = 0, hi = 0;
    KN_TRY(scalar_int(c, t[0], names[0], &n_mel));
    KN_TRY(scalar_int(c, t[1], names[1], &dft_len));
    KN_TRY(scalar_int(c, t[2], names[2], &rate));
    KN_TRY(scalar_float(c, t[3], names[3], &lo));
    KN_TRY(scalar_float(c, t[4], names[4], &hi));
    if (n_mel < 0 || dft_len < 1 || rate < 1 || n_mel > INT32_MAX)
        return kn_kctx_fail(c, KN_ERR_INVALID, "num_mel_bins %lld, dft_length %lld, sample_rate %lld: need "
                                               "num_mel_bins >= 0, dft_length >= 1, sample_rate >= 1",
                            (long long)n_mel, (long long)dft_len, (long long)rate);
    kn_dtype dt = KN_F32;
    KN_TRY(out_datatype(c, &dt));
    int64_t n_spec = dft_len / 2 + 1, dims[2] = {n_spec, n_mel};
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, dt, 2, dims, &y));
    int64_t *edge = kn_kctx_scratch(c, (size_t)(n_mel + 3) * sizeof *edge);
    double *w = kn_kctx_scratch(c, (size_t)(n_spec * n_mel + 1) * sizeof *w);
    if (!edge || !w)
        return KN_ERR_NOMEM;
    double lo_mel = 2595.0 * log10(1.0 + lo / 700.0), hi_mel = 2595.0 * log10(1.0 + hi / 700.0);
    double step = (hi_mel - lo_mel) / (double)(n_mel + 2);
    for (int64_t i = 0; i < n_mel + 2; i++) {
        double hz = 700.0 * expm1(((double)i * step + lo_mel) / 2595.0 * log(10.0));
        edge[i] = (int64_t)floor((double)(dft_len + 1) * hz / (double)rate);
    }
    for (int64_t m = 0; m < n_mel; m++) {
        int64_t left = edge[m], center = edge[m + 1], right = edge[m + 2];
        if (center == left) {
            if (center >= 0 && center < n_spec)
                w[center * n_mel + m] = 1.0;
        } else {
            for (int64_t j = left; j <= center; j++)
                if (j >= 0 && j < n_spec)
                    w[j * n_mel + m] = (double)(j - left) / (double)(center - left);
        }
        for (int64_t j = center; j < right; j++)
            if (j >= 0 && j < n_spec)
                w[j * n_mel + m] = (double)(right - j) / (double)(right - center);
    }
    for (int64_t i = 0; i < n_spec * n_mel; i++)
        kn_set_f64(dt, y->data, i, w[i]);
    return KN_OK;
}
