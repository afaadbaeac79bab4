/* The kiln_quant library (quant/): weight quantization round trips (INT8 per channel, INT4 groups),
 * GPTQ against the numpy reference in scripts/quant/gptq_ref.py (data in
 * tests/data/quant), AWQ against RTN on outlier channels, the percentile
 * and entropy thresholds, and the calibration collector on a small graph. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "kiln/quant.h"
#include "model_builder.h"
#include "passes/passes.h"
#include "quant/calib.h"
#include "tools/calib_table.h"
#include "tools/tensor_io.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DATA KN_SOURCE_DIR "/tests/data/quant/"

/* splitmix64 → uniform [0, 1) and standard normal (Box-Muller). */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) / 9007199254740992.0; }
static double normal(uint64_t *s)
{
    double u = uniform(s), v = uniform(s);
    return sqrt(-2 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

static kn_rt_tensor *load(const char *name)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_rt_tensor *t = NULL;
    assert_int_equal(kn_tensor_read_npy(name, NULL, d, &t), KN_OK);
    kn_diag_destroy(d);
    return t;
}

/* XᵀX of rows x [n][k]. */
static double *gram(const float *x, uint32_t n, uint32_t k)
{
    double *h = calloc((size_t)k * k, sizeof *h);
    assert_non_null(h);
    for (uint32_t r = 0; r < n; r++)
        for (uint32_t i = 0; i < k; i++)
            for (uint32_t j = 0; j < k; j++)
                h[(size_t)i * k + j] += (double)x[(size_t)r * k + i] * x[(size_t)r * k + j];
    return h;
}

/* Every element within half a step of its group's grid; codes consistent
 * with deq; codes in range. */
static void check_roundtrip(const float *w, const kn_qweights *q)
{
    int32_t lo = q->scheme.symmetric ? -((1 << (q->scheme.bits - 1)) - 1) : -255;
    int32_t hi = q->scheme.symmetric ? (1 << (q->scheme.bits - 1)) - 1 : 255;
    for (uint32_t r = 0; r < q->n_out; r++)
        for (uint32_t c = 0; c < q->n_in; c++) {
            size_t gi = (size_t)r * q->n_groups + c / q->group_size;
            double scale = q->scales[gi], x = w[(size_t)r * q->n_in + c], dq = q->deq[(size_t)r * q->n_in + c];
            int32_t code = kn_qweights_code(q, r, c);
            assert_true(code >= lo && code <= hi);
            if (!q->scheme.symmetric) {
                int32_t u = code + q->zeros[gi];
                assert_true(u >= 0 && u <= (1 << q->scheme.bits) - 1);
            }
            assert_float_equal(dq, (double)code * scale, 1e-6 * scale);
            if (fabs(x - dq) > scale / 2 * (1 + 1e-5))
                fail_msg("row %u col %u: |%g - %g| > scale %g / 2", r, c, x, dq, scale);
        }
}

static void int8_per_channel_hand(void **state)
{
    (void)state;
    /* row 0: absmax 254 → scale 2: 254 → 127, -127 → -63.5 → -64 (ties to
     * even), 3 → 1.5 → 2, 1 → 0.5 → 0; row 1 all zero → scale 1, codes 0;
     * row 2: absmax 12.7 → scale 0.1, 6 → 60 */
    const float w[12] = {254, -127, 3, 1, 0, 0, 0, 0, -12.7f, 6.0f, 0.1f, 12.7f};
    kn_qscheme s = {8, 0, true};
    kn_qweights q;
    assert_int_equal(kn_wq_rtn(w, 3, 4, &s, NULL, NULL, &q), KN_OK);
    assert_int_equal(q.n_groups, 1);
    assert_int_equal(q.group_size, 4);
    assert_null(q.zeros);
    assert_float_equal(q.scales[0], 2.0, 0);
    assert_float_equal(q.scales[1], 1.0, 0);
    assert_float_equal(q.scales[2], (float)(12.7f / 127.0), 0);
    const int8_t want[12] = {127, -64, 2, 0, 0, 0, 0, 0, -127, 60, 1, 127};
    for (int i = 0; i < 12; i++) {
        assert_int_equal((int8_t)q.q[i], want[i]);
        assert_int_equal(kn_qweights_code(&q, (uint32_t)i / 4, (uint32_t)i % 4), want[i]);
    }
    assert_float_equal(q.deq[1], -128.0, 0);
    assert_float_equal(q.deq[2], 4.0, 0);
    check_roundtrip(w, &q);
    kn_qweights_free(&q);
}

static void int4_group_roundtrip(void **state)
{
    (void)state;
    enum { R = 16, C = 300 }; /* 300 = 2 groups of 128 + a partial one */
    float *w = malloc(sizeof(float) * R * C);
    uint64_t seed = 1;
    for (int i = 0; i < R * C; i++)
        w[i] = (float)(normal(&seed) * (i % 7 == 0 ? 3 : 1));
    for (int i = 3 * C; i < 4 * C; i++) /* row 3 all positive */
        w[i] = fabsf(w[i]) + 0.5f;
    for (int sym = 0; sym < 2; sym++)
        for (uint32_t bits = 4; bits <= 8; bits += 4) {
            kn_qscheme s = {bits, 128, sym != 0};
            kn_qweights q;
            assert_int_equal(kn_wq_rtn(w, R, C, &s, NULL, NULL, &q), KN_OK);
            assert_int_equal(q.n_groups, 3);
            assert_int_equal(q.q_bytes, bits == 4 ? R * 150 : R * C);
            check_roundtrip(w, &q);
            if (bits == 4) {
                /* nibble layout: low nibble first, asymmetric codes raw,
                 * symmetric ones + 8 */
                uint8_t b = q.q[5 * 150 + 10];
                int32_t z = sym ? 8 : q.zeros[5 * 3 + 0];
                assert_int_equal((b & 15) - z, kn_qweights_code(&q, 5, 20));
                assert_int_equal((b >> 4) - z, kn_qweights_code(&q, 5, 21));
            }
            if (!sym) /* row 3 lies above 0: min clamps to 0, zero point 0 */
                assert_int_equal(q.zeros[3 * 3 + 1], 0);
            kn_qweights_free(&q);
        }
    free(w);
}

/* MatMulNBits layout: (code - zero point) * scale read back from the
 * packed buffers gives deq, for 4 and 8 bits, with and without zero
 * points, K not a multiple of the block. */
static void pack_nbits(void **state)
{
    (void)state;
    enum { R = 5, C = 40, BS = 16 }; /* 3 blocks, the last one half full */
    float w[R * C];
    uint64_t seed = 21;
    for (int i = 0; i < R * C; i++)
        w[i] = (float)normal(&seed);
    for (int sym = 0; sym < 2; sym++)
        for (uint32_t bits = 4; bits <= 8; bits += 4) {
            kn_qscheme s = {bits, BS, sym != 0};
            kn_qweights q;
            assert_int_equal(kn_wq_rtn(w, R, C, &s, NULL, NULL, &q), KN_OK);
            size_t blob = BS * bits / 8, zrow = (3 * bits + 7) / 8;
            uint8_t codes[R * 3 * 16], zps[R * 3];
            float scales[R * 3];
            assert_int_equal(kn_qweights_pack_nbits(&q, codes, scales, zps, NULL), KN_OK);
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) {
                    int b = c / BS, k = c % BS;
                    int code = bits == 8 ? codes[(r * 3 + b) * blob + k]
                                         : (codes[(r * 3 + b) * blob + k / 2] >> (k % 2 * 4)) & 15;
                    int zp = bits == 8 ? zps[r * zrow + b] : (zps[r * zrow + b / 2] >> (b % 2 * 4)) & 15;
                    if (sym)
                        assert_int_equal(zp, 1 << (bits - 1));
                    assert_float_equal((double)(code - zp) * scales[r * 3 + b], q.deq[r * C + c], 1e-6);
                }
            /* padding past K is zero */
            if (bits == 8)
                assert_int_equal(codes[(0 * 3 + 2) * blob + 10], 0);
            kn_qweights_free(&q);
        }
    kn_qscheme odd = {4, 0, true};
    kn_qweights q;
    assert_int_equal(kn_wq_rtn(w, 1, 7, &odd, NULL, NULL, &q), KN_OK); /* a block of 7 4-bit codes */
    uint8_t c[8], z[1];
    float sc[1];
    assert_int_equal(kn_qweights_pack_nbits(&q, c, sc, z, NULL), KN_ERR_INVALID);
    kn_qweights_free(&q);
}

static void rtn_rejects_bad_input(void **state)
{
    (void)state;
    float w[4] = {1, 2, NAN, 4};
    kn_qscheme s3 = {3, 0, true}, s4 = {4, 0, true};
    kn_qweights q;
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_wq_rtn(w, 1, 4, &s3, NULL, d, &q), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "3-bit"));
    assert_int_equal(kn_wq_rtn(w, 1, 4, &s4, NULL, d, &q), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "element 2", "non-finite"));
    assert_int_equal(kn_wq_rtn(w, 0, 4, &s4, NULL, d, &q), KN_ERR_INVALID);
    double h[4] = {-1, 0, 0, 1}; /* not positive definite */
    float w2[4] = {1, 2, 3, 4};
    assert_int_equal(kn_wq_gptq(w2, 2, 2, h, &s4, NULL, NULL, d, &q), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "not positive definite"));
    kn_diag_destroy(d);
}

/* GPTQ equals the numpy reference (scripts/quant/gptq_ref.py). */
static void gptq_case(const char *name, uint32_t bits, bool sym, uint32_t gs, bool act)
{
    char p[512];
    kn_rt_tensor *w = load(DATA "gptq_w.npy"), *h = load(DATA "gptq_h.npy");
    snprintf(p, sizeof p, DATA "gptq_%s_deq.npy", name);
    kn_rt_tensor *want = load(p);
    snprintf(p, sizeof p, DATA "gptq_%s_codes.npy", name);
    kn_rt_tensor *codes = load(p);
    snprintf(p, sizeof p, DATA "gptq_%s_scales.npy", name);
    kn_rt_tensor *scales = load(p);
    uint32_t R = (uint32_t)w->dims[0], C = (uint32_t)w->dims[1];
    assert_int_equal(h->dtype, KN_F64);
    const float *wf = w->data;
    const double *hd = h->data;
    kn_qscheme s = {bits, gs, sym};
    kn_gptq_opts o = {0.01, 128, act};
    kn_qweights q, q4, rtn;
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_wq_gptq(wf, R, C, hd, &s, &o, NULL, d, &q), KN_OK);
    double max_diff = 0;
    for (uint32_t i = 0; i < R * C; i++) {
        max_diff = fmax(max_diff, fabs((double)q.deq[i] - ((const float *)want->data)[i]));
        assert_int_equal(kn_qweights_code(&q, i / C, i % C), ((const int8_t *)codes->data)[i]);
    }
    if (max_diff > 1e-5)
        fail_msg("%s: max |kiln - numpy| = %g", name, max_diff);
    assert_int_equal(scales->numel, (int64_t)R * q.n_groups);
    for (int64_t i = 0; i < scales->numel; i++)
        assert_float_equal(q.scales[i], ((const float *)scales->data)[i], 1e-6 * fabs(q.scales[i]));
    check_roundtrip(q.deq, &q); /* codes and scales describe deq */
    /* lazy blocks do not change the result */
    o.block_size = 5;
    assert_int_equal(kn_wq_gptq(wf, R, C, hd, &s, &o, NULL, d, &q4), KN_OK);
    for (uint32_t i = 0; i < R * C; i++)
        assert_float_equal(q4.deq[i], q.deq[i], 1e-6);
    /* and the layer's output error is no worse than round to nearest */
    assert_int_equal(kn_wq_rtn(wf, R, C, &s, NULL, d, &rtn), KN_OK);
    double e_gptq = kn_wq_layer_error(wf, q.deq, R, C, hd), e_rtn = kn_wq_layer_error(wf, rtn.deq, R, C, hd);
    print_message("gptq %s: layer error %.6g, rtn %.6g\n", name, e_gptq, e_rtn);
    assert_true(e_gptq <= e_rtn);
    kn_qweights_free(&q);
    kn_qweights_free(&q4);
    kn_qweights_free(&rtn);
    kn_diag_destroy(d);
    kn_rt_tensor_free(NULL, w);
    kn_rt_tensor_free(NULL, h);
    kn_rt_tensor_free(NULL, want);
    kn_rt_tensor_free(NULL, codes);
    kn_rt_tensor_free(NULL, scales);
}

static void gptq_int4_groups_asym(void **state)
{
    (void)state;
    gptq_case("g8_asym", 4, false, 8, false);
}
static void gptq_int4_sym_act_order(void **state)
{
    (void)state;
    gptq_case("g16_sym_act", 4, true, 16, true);
}
static void gptq_int8_per_channel(void **state)
{
    (void)state;
    gptq_case("ch_int8", 8, true, 0, false);
}

/* A dead input channel (never active) gets weight 0. */
static void gptq_dead_channel(void **state)
{
    (void)state;
    enum { R = 4, C = 6, N = 40 };
    float w[R * C], x[N * C];
    uint64_t seed = 3;
    for (int i = 0; i < R * C; i++)
        w[i] = (float)normal(&seed);
    for (int i = 0; i < N * C; i++)
        x[i] = i % C == 2 ? 0.0f : (float)normal(&seed);
    double *h = gram(x, N, C);
    kn_qscheme s = {4, 0, false};
    kn_qweights q;
    assert_int_equal(kn_wq_gptq(w, R, C, h, &s, NULL, NULL, NULL, &q), KN_OK);
    for (int r = 0; r < R; r++)
        assert_float_equal(q.deq[r * C + 2], 0.0, 0);
    kn_qweights_free(&q);
    free(h);
}

/* Σ over rows and outputs of (x Wᵀ - W8A8(x) W8A8(W)ᵀ)² with per-token
 * dynamic int8 activations (scale max|x_row| / 127, round half to even)
 * and per-output-channel int8 weights, x divided by s and W's columns
 * multiplied by s first (s NULL: none). */
static double w8a8_error(const float *x, const float *w, int n_rows, int n_out, int n_in, const float *s)
{
    float *ws = malloc(sizeof(float) * n_out * n_in), *xs = malloc(sizeof(float) * n_in);
    int8_t *qx = malloc((size_t)n_in);
    for (int o = 0; o < n_out; o++)
        for (int c = 0; c < n_in; c++)
            ws[o * n_in + c] = s ? w[o * n_in + c] * s[c] : w[o * n_in + c];
    kn_qscheme sch = {8, 0, true};
    kn_qweights qw;
    assert_int_equal(kn_wq_rtn(ws, (uint32_t)n_out, (uint32_t)n_in, &sch, NULL, NULL, &qw), KN_OK);
    double err = 0;
    for (int r = 0; r < n_rows; r++) {
        float amax = 0;
        for (int c = 0; c < n_in; c++) {
            xs[c] = s ? x[r * n_in + c] / s[c] : x[r * n_in + c];
            amax = fmaxf(amax, fabsf(xs[c]));
        }
        float sx = amax / 127.0f;
        for (int c = 0; c < n_in; c++)
            qx[c] = (int8_t)lrintf(xs[c] / sx);
        for (int o = 0; o < n_out; o++) {
            double y = 0;
            int64_t acc = 0;
            for (int c = 0; c < n_in; c++) {
                y += (double)x[r * n_in + c] * w[o * n_in + c];
                acc += (int64_t)qx[c] * kn_qweights_code(&qw, (uint32_t)o, (uint32_t)c);
            }
            double yq = (double)acc * qw.scales[o] * sx;
            err += (y - yq) * (y - yq);
        }
    }
    kn_qweights_free(&qw);
    free(ws);
    free(xs);
    free(qx);
    return err;
}

/* SmoothQuant: s on hand values, then a layer whose inputs have four
 * channels 60 times louder than the rest: W8A8 (per-token activations,
 * per-channel weights) loses less with the outliers moved into the
 * weights (alpha 0.5) than without. */
static void smoothquant_beats_plain_w8a8(void **state)
{
    (void)state;
    const double am[3] = {4, 0, 1}, wm[3] = {1, 2, 0};
    float sv[3];
    assert_int_equal(kn_smooth_scales(am, wm, 3, 0.5, sv, NULL), KN_OK);
    assert_float_equal(sv[0], 2.0, 1e-6);              /* sqrt(4) / sqrt(1) */
    assert_float_equal(sv[1], 1.0, 0);                 /* never active */
    assert_float_equal(sv[2], 1.0 / sqrt(1e-5), 1e-2); /* |W| floored at 1e-5 */
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_smooth_scales(am, wm, 3, 1.5, sv, d), KN_ERR_INVALID);
    const double neg[1] = {-1};
    assert_int_equal(kn_smooth_scales(neg, wm, 1, 0.5, sv, d), KN_ERR_INVALID);
    kn_diag_destroy(d);

    enum { R = 48, C = 64, N = 256 };
    float *w = malloc(sizeof(float) * R * C), *x = malloc(sizeof(float) * N * C);
    double act[C] = {0}, wmax[C] = {0};
    uint64_t seed = 11;
    for (int i = 0; i < R * C; i++)
        w[i] = (float)(normal(&seed) * 0.05);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++) {
            x[r * C + c] = (float)(normal(&seed) * (c == 3 || c == 17 || c == 18 || c == 50 ? 60 : 1));
            act[c] = fmax(act[c], fabs(x[r * C + c]));
        }
    for (int o = 0; o < R; o++)
        for (int c = 0; c < C; c++)
            wmax[c] = fmax(wmax[c], fabs(w[o * C + c]));
    float s[C];
    assert_int_equal(kn_smooth_scales(act, wmax, C, 0.5, s, NULL), KN_OK);
    double e_plain = w8a8_error(x, w, N, R, C, NULL), e_smooth = w8a8_error(x, w, N, R, C, s);
    printf("W8A8 output error: plain %.4g, smoothed (alpha 0.5) %.4g\n", e_plain, e_smooth);
    assert_true(e_smooth < 0.5 * e_plain);
    free(w);
    free(x);
}

/* Outlier input channels: AWQ's scaling protects the weights they meet. */
static void awq_beats_rtn_on_outliers(void **state)
{
    (void)state;
    enum { R = 32, C = 64, N = 512 };
    float *w = malloc(sizeof(float) * R * C), *x = malloc(sizeof(float) * N * C);
    double mean_abs[C] = {0};
    uint64_t seed = 7;
    for (int i = 0; i < R * C; i++)
        w[i] = (float)(normal(&seed) * 0.05);
    for (int r = 0; r < N; r++)
        for (int c = 0; c < C; c++) {
            double v = normal(&seed) * (c == 5 || c == 40 || c == 41 ? 25 : 1);
            x[r * C + c] = (float)v;
            mean_abs[c] += fabs(v) / N;
        }
    double *h = gram(x, N, C);
    kn_qscheme s = {4, 32, false};
    kn_qweights rtn, awq;
    double alpha, err;
    assert_int_equal(kn_wq_rtn(w, R, C, &s, NULL, NULL, &rtn), KN_OK);
    assert_int_equal(kn_wq_awq(w, R, C, mean_abs, h, &s, NULL, NULL, NULL, &awq, &alpha, &err), KN_OK);
    assert_non_null(awq.in_scale);
    /* output error measured on the activations themselves */
    double e_rtn = 0, e_awq = 0;
    for (int r = 0; r < N; r++)
        for (int o = 0; o < R; o++) {
            double y = 0, yr = 0, ya = 0;
            for (int c = 0; c < C; c++) {
                y += (double)x[r * C + c] * w[o * C + c];
                yr += (double)x[r * C + c] * rtn.deq[o * C + c];
                /* the deployed form: (x / s) · codes */
                ya += (double)x[r * C + c] / awq.in_scale[c] * (kn_qweights_code(&awq, o, c) *
                                                                 (double)awq.scales[o * awq.n_groups + c / 32]);
            }
            e_rtn += (y - yr) * (y - yr);
            e_awq += (y - ya) * (y - ya);
        }
    print_message("awq: alpha %.3f, output error %.6g vs rtn %.6g (trace form %.6g)\n", alpha, e_awq, e_rtn, err);
    assert_true(alpha > 0);
    assert_true(e_awq < 0.8 * e_rtn);
    assert_float_equal(err, e_awq, 1e-3 * e_awq);
    /* the loud channels got scales above the quiet ones */
    assert_true(awq.in_scale[5] > awq.in_scale[0] && awq.in_scale[40] > awq.in_scale[1]);
    kn_qweights_free(&rtn);
    kn_qweights_free(&awq);
    free(h);
    free(w);
    free(x);
}

/* |x| histogram of N(0, 1) samples with a few outliers at ±50. */
static void gaussian_hist(uint64_t *counts, uint32_t bins, double *amax)
{
    enum { N = 200000 };
    double *v = malloc(sizeof(double) * (N + 8));
    uint64_t seed = 11;
    *amax = 0;
    for (int i = 0; i < N + 8; i++) {
        v[i] = i < N ? normal(&seed) : (i % 2 ? 50.0 : -48.0);
        *amax = fmax(*amax, fabs(v[i]));
    }
    memset(counts, 0, bins * sizeof *counts);
    for (int i = 0; i < N + 8; i++) {
        uint32_t b = (uint32_t)(fabs(v[i]) / *amax * bins);
        counts[b < bins ? b : bins - 1]++;
    }
    free(v);
}

/* TensorRT's divergence for candidate edge i, written out directly. */
static double kl_direct(const uint64_t *c, uint32_t n_bins, uint32_t i, uint32_t levels)
{
    double *p = calloc(i, sizeof *p), *q = calloc(i, sizeof *q), ps = 0, qs = 0, kl = 0;
    for (uint32_t j = 0; j < n_bins; j++)
        p[j < i ? j : i - 1] += (double)c[j];
    for (uint32_t g = 0; g < levels; g++) {
        double sum = 0, nz = 0;
        for (uint32_t j = 0; j < i; j++)
            if (j * levels / i == g) {
                sum += (double)c[j];
                nz += c[j] != 0;
            }
        for (uint32_t j = 0; j < i; j++)
            if (j * levels / i == g && c[j])
                q[j] = sum / nz;
    }
    for (uint32_t j = 0; j < i; j++) {
        ps += p[j];
        qs += q[j];
    }
    for (uint32_t j = 0; j < i && kl < INFINITY; j++)
        if (p[j] > 0)
            kl = q[j] > 0 ? kl + p[j] / ps * log((p[j] / ps) / (q[j] / qs)) : INFINITY;
    free(p);
    free(q);
    return kl;
}

static void entropy_and_percentile(void **state)
{
    (void)state;
    uint64_t counts[2048];
    double amax;
    gaussian_hist(counts, 2048, &amax);
    assert_float_equal(amax, 50.0, 0);
    double ent = kn_calib_entropy(counts, 2048, amax, 128);
    double pct = kn_calib_percentile(counts, 2048, amax, 99.99);
    double p100 = kn_calib_percentile(counts, 2048, amax, 100);
    print_message("entropy threshold %.4f, 99.99th percentile %.4f, absmax %.1f\n", ent, pct, amax);
    /* the outliers are clipped: the threshold covers the Gaussian's bulk */
    assert_true(ent > 2.5 && ent < 10);
    /* the chosen edge minimises the divergence computed the direct way */
    uint32_t chosen = (uint32_t)lround(ent / amax * 2048);
    double kl_chosen = kl_direct(counts, 2048, chosen, 128);
    for (uint32_t i = 128; i <= 2048; i += 7)
        assert_true(kl_chosen <= kl_direct(counts, 2048, i, 128) + 1e-9);
    assert_true(pct > 3.5 && pct < 4.5); /* N(0,1): |x| 99.99 % = 3.89 */
    assert_float_equal(p100, amax, 1e-12);
    /* an empty histogram has no threshold; a uniform one keeps all */
    uint64_t zero[256] = {0}, flat[256];
    assert_float_equal(kn_calib_entropy(zero, 256, 1.0, 128), 0, 0);
    for (int i = 0; i < 256; i++)
        flat[i] = 100;
    assert_float_equal(kn_calib_entropy(flat, 256, 1.0, 128), 1.0, 1e-12);
    kn_calib_method m;
    assert_true(kn_calib_method_parse("entropy", &m) && m == KN_CALIB_ENTROPY);
    assert_false(kn_calib_method_parse("kl", &m));
}

/* The table written and read back: the same figures; a side file that
 * does not match is refused. */
static void table_round_trip(mb *b, const kn_calib *c)
{
    char *dir = mb_tempdir(b), *json = mb_path(b, dir, "t.json"), *side = mb_path(b, dir, "t.xtx.bin");
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_calib_table_write(c, "/x/model.onnx", json, d), KN_OK);
    kn_calib_table *t;
    assert_int_equal(kn_calib_table_read(json, d, &t), KN_OK);
    assert_int_equal(t->method, KN_CALIB_ENTROPY);
    assert_int_equal(t->n_samples, 2);
    assert_int_equal(t->n_tensors, 3);
    const kn_calib_table_tensor *tx = kn_calib_table_tensor_find(t, "x");
    assert_non_null(tx);
    assert_float_equal(tx->amax, c->tensors[0].amax, 0);
    assert_float_equal(tx->min, -3, 0);
    const kn_calib_table_input *in = kn_calib_table_input_find(t, "x");
    assert_non_null(in);
    assert_int_equal(in->k, 4);
    assert_int_equal(in->rows, 4);
    assert_non_null(in->xtx);
    assert_memory_equal(in->xtx, c->inputs[0].xtx, 16 * sizeof(double));
    assert_non_null(in->max_abs);
    for (int k = 0; k < 4; k++) {
        assert_float_equal(in->mean_abs[k], c->inputs[0].sum_abs[k] / 4, 1e-15);
        assert_float_equal(in->max_abs[k], c->inputs[0].max_abs[k], 0);
        assert_true(in->max_abs[k] > 0);
    }
    assert_int_equal(t->n_layers, 1);
    assert_string_equal(t->layers[0].node, "mm");
    assert_string_equal(t->layers[0].weight, "w");
    assert_false(t->layers[0].weight_nk);
    kn_calib_table_free(t);
    /* one byte of the side file changed */
    FILE *f = fopen(side, "r+b");
    assert_non_null(f);
    fseek(f, 70, SEEK_SET);
    fputc(0x55, f);
    fclose(f);
    assert_int_equal(kn_calib_table_read(json, d, &t), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "t.xtx.bin does not match the table"));
    remove(side);
    assert_int_equal(kn_calib_table_read(json, d, &t), KN_ERR_IO);
    assert_true(mb_diag_has(d, KN_ERROR, "cannot be opened"));
    mb_write(b, dir, "bad.json", "{\"format\": \"onnx\"}", 18);
    assert_int_equal(kn_calib_table_read(mb_path(b, dir, "bad.json"), d, &t), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "bad.json: not a valid kiln calibration table"));
    kn_diag_destroy(d);
}

/* x[batch,4] → MatMul w[4,3] → h → Relu → y: ranges, histograms and the
 * linear input's statistics over two samples. */
static void collector_on_graph(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *gp = m->graph;
    mb_input(b, gp, "x", mb_tensor_type(b, KN_F32, "batch,4"));
    int64_t wd[2] = {4, 3};
    mb_float_data(b, mb_initializer(b, gp, "w", KN_F32, wd, 2), (float[]){1, -1, 0, 2, 0, 1, -1, 1, 1, 0, 2, -2},
                  12);
    mb_node(b, gp, "MatMul", "mm", "x,w", "h");
    mb_node(b, gp, "Relu", "relu", "h", "y");
    mb_output(b, gp, "y", NULL);
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, NULL, d, &g), KN_OK);
    const float xs[2][8] = {{1, 2, -3, 0.5f, 0, -1, 4, 1}, {-2, 0, 1, 1, 3, 0.25f, -0.5f, 2}};
    for (int method = 0; method < 3; method++) {
        kn_calib_opts o = {(kn_calib_method)method, 0, 256, 0};
        kn_calib *c;
        assert_int_equal(kn_calib_create(g, &o, NULL, d, &c), KN_OK);
        assert_int_equal(c->n_layers, 1);
        assert_int_equal(c->n_inputs, 1);
        assert_int_equal(c->layers[0].k, 4);
        assert_int_equal(c->layers[0].n, 3);
        for (int pass = 1; pass <= (kn_calib_two_pass(c) ? 2 : 1); pass++)
            for (int i = 0; i < 2; i++) {
                kn_rt_tensor *t;
                assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 2, (int64_t[]){2, 4}, &t), KN_OK);
                memcpy(t->data, xs[i], sizeof xs[i]);
                const kn_rt_tensor *ins[1] = {t};
                assert_int_equal(kn_calib_run(c, pass, ins, d), KN_OK);
                kn_rt_tensor_free(NULL, t);
            }
        kn_calib_finish(c);
        assert_int_equal(c->n_samples, 2);
        assert_int_equal(c->n_tensors, 3);
        const kn_calib_tensor *tx = &c->tensors[0];
        assert_string_equal(tx->name, "x");
        assert_int_equal(tx->count, 16);
        assert_float_equal(tx->min, -3, 0);
        assert_float_equal(tx->max, 4, 0);
        assert_float_equal(tx->absmax, 4, 0);
        if (method == KN_CALIB_MINMAX) {
            assert_float_equal(tx->amax, 4, 0); /* minmax = absmax */
            assert_null(tx->hist);
        } else {
            uint64_t total = 0;
            for (int k = 0; k < 256; k++)
                total += tx->hist[k];
            assert_int_equal(total, 16);
            assert_int_equal(tx->hist[255], 1); /* |4| lands in the last bin */
            assert_true(tx->amax > 0 && tx->amax <= 4);
        }
        /* y = relu(x w) >= 0 */
        assert_string_equal(c->tensors[2].name, "y");
        assert_true(c->tensors[2].min >= 0);
        /* mean |x| and XᵀX over the 4 rows */
        const kn_calib_input *in = &c->inputs[0];
        assert_int_equal(in->rows, 4);
        for (int k = 0; k < 4; k++) {
            double sa = 0, ma = 0;
            for (int r = 0; r < 4; r++) {
                sa += fabs(xs[r / 2][(r % 2) * 4 + k]);
                ma = fmax(ma, fabs(xs[r / 2][(r % 2) * 4 + k]));
            }
            assert_float_equal(in->sum_abs[k], sa, 1e-12);
            assert_float_equal(in->max_abs[k], ma, 0);
            for (int j = 0; j < 4; j++) {
                double s = 0;
                for (int r = 0; r < 4; r++)
                    s += (double)xs[r / 2][(r % 2) * 4 + k] * xs[r / 2][(r % 2) * 4 + j];
                assert_float_equal(in->xtx[k * 4 + j], s, 1e-12);
            }
        }
        if (method == KN_CALIB_ENTROPY)
            table_round_trip(b, c);
        kn_calib_destroy(c);
    }
    /* every allocation failing in turn: KN_ERR_NOMEM, nothing leaked */
    for (long fail_at = 1;; fail_at++) {
        mb_counter cnt;
        mb_counter_init(&cnt);
        cnt.fail_at = fail_at;
        kn_diag *q = kn_diag_create(NULL, NULL);
        kn_calib_opts o = {KN_CALIB_ENTROPY, 0, 256, 0};
        kn_calib *c = NULL;
        kn_status st = kn_calib_create(g, &o, &cnt.a, q, &c);
        for (int pass = 1; pass <= 2 && st == KN_OK; pass++)
            for (int i = 0; i < 2 && st == KN_OK; i++) {
                kn_rt_tensor *t;
                assert_int_equal(kn_rt_tensor_new(NULL, KN_F32, 2, (int64_t[]){2, 4}, &t), KN_OK);
                memcpy(t->data, xs[i], sizeof xs[i]);
                const kn_rt_tensor *ins[1] = {t};
                st = kn_calib_run(c, pass, ins, q);
                kn_rt_tensor_free(NULL, t);
            }
        if (st == KN_OK)
            kn_calib_finish(c);
        kn_calib_destroy(c);
        kn_diag_destroy(q);
        assert_int_equal(cnt.live, 0);
        if (st == KN_OK)
            break;
        assert_int_equal(st, KN_ERR_NOMEM);
        assert_true(fail_at < 10000);
    }
    /* a bad option */
    kn_calib_opts bad = {KN_CALIB_ENTROPY, 0, 100, 0};
    kn_calib *c = NULL;
    assert_int_equal(kn_calib_create(g, &bad, NULL, d, &c), KN_ERR_INVALID);
    assert_null(c);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    mb_free(b);
}

/* Every allocation failing in turn: KN_ERR_NOMEM, nothing leaked; then
 * success with the same result. */
static void survives_failing_allocations(void **state)
{
    (void)state;
    enum { R = 6, C = 12, N = 30 };
    float w[R * C], x[N * C];
    double mean_abs[C] = {0};
    uint64_t seed = 5;
    for (int i = 0; i < R * C; i++)
        w[i] = (float)normal(&seed);
    for (int i = 0; i < N * C; i++) {
        x[i] = (float)normal(&seed);
        mean_abs[i % C] += fabs(x[i]) / N;
    }
    double *h = gram(x, N, C);
    kn_qscheme s = {4, 4, false};
    for (int algo = 0; algo < 3; algo++) {
        long n_ok = 0;
        for (long fail_at = 1;; fail_at++) {
            mb_counter c;
            mb_counter_init(&c);
            c.fail_at = fail_at;
            kn_qweights q;
            kn_status st = algo == 0   ? kn_wq_rtn(w, R, C, &s, &c.a, NULL, &q)
                           : algo == 1 ? kn_wq_gptq(w, R, C, h, &s, NULL, &c.a, NULL, &q)
                                       : kn_wq_awq(w, R, C, mean_abs, h, &s, NULL, &c.a, NULL, &q, NULL, NULL);
            if (st == KN_OK) {
                kn_qweights_free(&q);
                assert_int_equal(c.live, 0);
                n_ok = fail_at;
                break;
            }
            assert_int_equal(st, KN_ERR_NOMEM);
            assert_int_equal(c.live, 0);
        }
        assert_true(n_ok > 1);
    }
    free(h);
}

/* The path the compile-time pass takes, on the tiny Llama decoder
 * (tests/models/llama_gqa_tiny): calibrate over its two test_data_set
 * folders, write and read the table, then for every linear layer take the
 * weight from the graph ([K][N] → [N][K]) and the input's XᵀX and mean |x|
 * from the table: GPTQ and AWQ (INT4 g32) are no worse than RTN on the
 * calibration data; AWQ by construction, GPTQ on these layers. */
static void decoder_layers_from_table(void **state)
{
    (void)state;
    const char *dir = KN_SOURCE_DIR "/tests/models/llama_gqa_tiny";
    char path[1024];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_file(path, NULL, NULL, d, &g), KN_OK);
    kn_pipeline_opts po = {0};
    po.level = KN_OPT_O0;
    assert_int_equal(kn_pipeline_run(g, &po, d), KN_OK);
    kn_calib_opts o = {KN_CALIB_PERCENTILE, 99.9, 512, 0};
    kn_calib *c;
    assert_int_equal(kn_calib_create(g, &o, NULL, d, &c), KN_OK);
    for (int pass = 1; pass <= 2; pass++)
        for (int set = 0; set < 2; set++) {
            kn_rt_tensor *ins[16] = {0};
            assert_true(g->n_inputs <= 16);
            for (uint32_t k = 0; k < g->n_inputs; k++) {
                snprintf(path, sizeof path, "%s/test_data_set_%d/input_%u.pb", dir, set, k);
                assert_int_equal(kn_tensor_read(path, NULL, d, &ins[k], NULL), KN_OK);
            }
            assert_int_equal(kn_calib_run(c, pass, (const kn_rt_tensor *const *)ins, d), KN_OK);
            for (uint32_t k = 0; k < g->n_inputs; k++)
                kn_rt_tensor_free(NULL, ins[k]);
        }
    kn_calib_finish(c);
    mb *b = mb_new();
    char *json = mb_path(b, mb_tempdir(b), "llama.json");
    assert_int_equal(kn_calib_table_write(c, path, json, d), KN_OK);
    kn_calib_table *t;
    assert_int_equal(kn_calib_table_read(json, d, &t), KN_OK);
    assert_int_equal(t->n_layers, 15);
    kn_qscheme s = {4, 32, false};
    for (uint32_t i = 0; i < t->n_layers; i++) {
        const kn_calib_table_layer *l = &t->layers[i];
        const kn_calib_table_input *in = kn_calib_table_input_find(t, l->input);
        assert_non_null(in);
        assert_non_null(in->xtx);
        assert_int_equal(in->k, l->k);
        /* the weight: the node's constant B, [K][N] */
        const kn_tensor *wt = NULL;
        for (uint32_t v = 0; v < g->n_values; v++)
            if (g->values[v].kind == KN_VAL_CONST && strcmp(g->values[v].name, l->weight) == 0)
                wt = g->values[v].tensor;
        assert_non_null(wt);
        assert_int_equal(wt->dtype, KN_F32);
        assert_false(l->weight_nk);
        uint32_t K = l->k, N = l->n;
        float *w = malloc(sizeof(float) * K * N);
        for (uint32_t k = 0; k < K; k++)
            for (uint32_t n = 0; n < N; n++)
                w[(size_t)n * K + k] = ((const float *)wt->data)[(size_t)k * N + n];
        kn_qweights rtn, gq, aq;
        assert_int_equal(kn_wq_rtn(w, N, K, &s, NULL, d, &rtn), KN_OK);
        assert_int_equal(kn_wq_gptq(w, N, K, in->xtx, &s, NULL, NULL, d, &gq), KN_OK);
        assert_int_equal(kn_wq_awq(w, N, K, in->mean_abs, in->xtx, &s, NULL, NULL, d, &aq, NULL, NULL), KN_OK);
        double er = kn_wq_layer_error(w, rtn.deq, N, K, in->xtx), eg = kn_wq_layer_error(w, gq.deq, N, K, in->xtx),
               ea = kn_wq_layer_error(w, aq.deq, N, K, in->xtx);
        if (i < 7 || i == 14)
            print_message("%-50s rtn %.4g gptq %.4g awq %.4g\n", l->node, er, eg, ea);
        assert_true(eg <= er);
        assert_true(ea <= er);
        kn_qweights_free(&rtn);
        kn_qweights_free(&gq);
        kn_qweights_free(&aq);
        free(w);
    }
    kn_calib_table_free(t);
    kn_calib_destroy(c);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(int8_per_channel_hand),
        cmocka_unit_test(int4_group_roundtrip),
        cmocka_unit_test(pack_nbits),
        cmocka_unit_test(rtn_rejects_bad_input),
        cmocka_unit_test(gptq_int4_groups_asym),
        cmocka_unit_test(gptq_int4_sym_act_order),
        cmocka_unit_test(gptq_int8_per_channel),
        cmocka_unit_test(gptq_dead_channel),
        cmocka_unit_test(awq_beats_rtn_on_outliers),
        cmocka_unit_test(smoothquant_beats_plain_w8a8),
        cmocka_unit_test(entropy_and_percentile),
        cmocka_unit_test(collector_on_graph),
        cmocka_unit_test(survives_failing_allocations),
        cmocka_unit_test(decoder_layers_from_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
