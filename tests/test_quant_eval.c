/* The quantization report's figures (tools/quant_metrics.c): NMSE, SNR,
 * max |error| and perplexity, against values worked out by hand. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "tools/quant_metrics.h"
#include <math.h>

/* ref = [1, -2, 3, 0], q = [1.1, -2, 2.8, 0.1]: Σe² = 0.01 + 0.04 + 0.01
 * = 0.06, Σr² = 14, NMSE = 0.06 / 14, SNR = 10 log10(14 / 0.06) = 23.68 dB,
 * max |e| = 0.2. */
static void test_nmse_snr(void **state)
{
    (void)state;
    const double r[] = {1, -2, 3, 0}, q[] = {1.1, -2, 2.8, 0.1};
    kn_err_acc a = {0};
    for (int i = 0; i < 4; i++)
        kn_err_add(&a, r[i], q[i]);
    assert_int_equal(a.n, 4);
    assert_float_equal(kn_err_nmse(&a), 0.06 / 14, 1e-12);
    assert_float_equal(kn_err_snr_db(&a), 23.6797678, 1e-6);
    assert_float_equal(a.max_abs, 0.2, 1e-12);
    /* exact: NMSE 0, SNR +inf */
    kn_err_acc b = {0};
    kn_err_add(&b, 2, 2);
    assert_float_equal(kn_err_nmse(&b), 0, 0);
    assert_true(isinf(kn_err_snr_db(&b)) && kn_err_snr_db(&b) > 0);
    /* a zero reference with an error: NMSE +inf */
    kn_err_acc z = {0};
    kn_err_add(&z, 0, 0.5);
    assert_true(isinf(kn_err_nmse(&z)));
    /* NaN where the reference is finite poisons the figure; NaN in both is skipped */
    kn_err_acc n = {0};
    kn_err_add(&n, NAN, NAN);
    kn_err_add(&n, 1, 1.5);
    assert_int_equal(n.nonfinite, 1);
    assert_float_equal(kn_err_nmse(&n), 0.25, 1e-12);
    kn_err_add(&n, 1, INFINITY);
    assert_true(isnan(kn_err_nmse(&n)));
}

/* Uniform logits: every next token has probability 1/V, so the NLL is
 * (n - 1) log V and the perplexity V. */
static void test_uniform_perplexity(void **state)
{
    (void)state;
    float logits[5 * 7];
    for (int i = 0; i < 35; i++)
        logits[i] = 3.25f;
    const int32_t ids[5] = {0, 6, 2, 2, 5};
    double nll = kn_nll_window(logits, 7, ids, 5);
    assert_float_equal(nll, 4 * log(7.0), 1e-12);
    assert_float_equal(kn_perplexity(nll, 4), 7.0, 1e-12);
    assert_true(isnan(kn_perplexity(0, 0)));
}

/* Two tokens, vocabulary 3, logits row 0 = [0, ln 2, ln 5] (probabilities
 * 1/8, 2/8, 5/8): next token 2 costs -ln(5/8); a large shared offset must
 * not overflow (max-subtracted). */
static void test_nll_by_hand(void **state)
{
    (void)state;
    float lg[6] = {0, (float)log(2.0), (float)log(5.0), 9, 9, 9};
    const int32_t ids[2] = {1, 2};
    assert_float_equal(kn_nll_window(lg, 3, ids, 2), -log(5.0 / 8.0), 1e-6);
    for (int i = 0; i < 3; i++)
        lg[i] += 1000.0f;
    assert_float_equal(kn_nll_window(lg, 3, ids, 2), -log(5.0 / 8.0), 1e-3);
    /* an id outside the vocabulary */
    const int32_t bad[2] = {1, 3};
    assert_float_equal(kn_nll_window(lg, 3, bad, 2), -1, 0);
    /* one token: nothing to predict */
    assert_float_equal(kn_nll_window(lg, 3, ids, 1), 0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nmse_snr),
        cmocka_unit_test(test_uniform_perplexity),
        cmocka_unit_test(test_nll_by_hand),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
