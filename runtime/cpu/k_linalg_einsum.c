/* linalg family, part 4: Einsum, any equation (explicit or implicit
 * output, ellipsis with broadcasting, repeated labels for diagonals and
 * traces), by a direct loop over output and summed labels. */
#include "runtime/cpu/util.h"
#include "runtime/cpu/linalg.h"

#include <ctype.h>
#include <string.h>

/* Defined in k_linalg.c. */

enum {
    MAX_IN = 32,
    N_LETTER = 52,                         /* a-z then A-Z */
    MAX_LABEL = N_LETTER + KN_RT_MAX_RANK  /* letters, then ellipsis dims */
};

static int letter_id(char ch)
{
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a';
    if (ch >= 'A' && ch <= 'Z')
        return 26 + ch - 'A';
    return -1;
}

/* One term of the equation: its labels in order, the ellipsis (if any)
 * standing for `n_ell` dims at position `ell_at`. */
typedef struct term {
    int n;           /* letters */
    int lab[KN_RT_MAX_RANK];
    int ell_at;      /* index in lab before which the ellipsis sits, or -1 */
} term;

static kn_status parse_term(kn_kctx *c, const char *s, size_t len, term *t)
{
    t->n = 0;
    t->ell_at = -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (t->ell_at >= 0 || i + 2 >= len || s[i + 1] != '.' || s[i + 2] != '.')
                return kn_kctx_fail(c, KN_ERR_INVALID, "bad ellipsis in einsum equation");
            t->ell_at = t->n;
            i += 2;
            continue;
        }
        int id = letter_id(s[i]);
        if (id < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "bad character '%c' in einsum equation", s[i]);
        if (t->n >= KN_RT_MAX_RANK)
            return kn_kctx_fail(c, KN_ERR_LIMIT, "einsum term too long");
        t->lab[t->n++] = id;
    }
    return KN_OK;
}

kn_status kn_ref_Einsum(kn_kctx *c)
{
    const char *eq_attr = kn_kctx_attr_str(c, "equation", NULL);
    if (!eq_attr)
        return kn_kctx_fail(c, KN_ERR_INVALID, "attribute equation is required");
    uint32_t n_in = kn_kctx_n_inputs(c);
    if (n_in < 1 || n_in > MAX_IN)
        return kn_kctx_fail(c, KN_ERR_INVALID, "Einsum takes 1 to %d inputs (got %u)", MAX_IN, n_in);
    const kn_rt_tensor *in[MAX_IN];
    for (uint32_t k = 0; k < n_in; k++) {
        in[k] = kn_kctx_in(c, k);
        if (!in[k])
            return kn_kctx_fail(c, KN_ERR_INVALID, "Einsum input %u is missing", k);
        if (in[k]->dtype != in[0]->dtype)
            return kn_kctx_fail(c, KN_ERR_INVALID, "Einsum inputs have different types");
    }
    kn_dtype dt = in[0]->dtype;
    bool fl = kn_dt_is_float(dt);
    if (!fl && !kn_dt_is_int(dt))
        return kn_kctx_fail(c, KN_ERR_INVALID, "Einsum does not support %s", kn_dtype_name(dt));

    /* Strip blanks. */
    size_t elen = strlen(eq_attr);
    char *eq;
    KN_TRY(kn_linalg_alloc(c, (int64_t)elen + 1, 1, (void **)&eq));
    size_t el = 0;
    for (size_t i = 0; i < elen; i++)
        if (!isspace((unsigned char)eq_attr[i]))
            eq[el++] = eq_attr[i];
    eq[el] = 0;
    const char *arrow = strstr(eq, "->");
    size_t lhs_len = arrow ? (size_t)(arrow - eq) : el;

    /* Parse the input terms. */
    term terms[MAX_IN];
    uint32_t nt = 0;
    for (size_t st = 0;;) {
        size_t en = st;
        while (en < lhs_len && eq[en] != ',')
            en++;
        if (nt >= n_in)
            return kn_kctx_fail(c, KN_ERR_INVALID, "einsum equation '%s' has more terms than the %u inputs", eq_attr,
                                n_in);
        KN_TRY(parse_term(c, eq + st, en - st, &terms[nt]));
        nt++;
        if (en >= lhs_len)
            break;
        st = en + 1;
    }
    if (nt != n_in)
        return kn_kctx_fail(c, KN_ERR_INVALID, "einsum equation '%s' has %u terms for %u inputs", eq_attr, nt, n_in);

    /* Label sizes; ellipsis dims are right-aligned across inputs. */
    int64_t size[MAX_LABEL];
    int count[MAX_LABEL] = {0};
    for (int i = 0; i < MAX_LABEL; i++)
        size[i] = -1;
    int n_ell = 0;
    for (uint32_t k = 0; k < n_in; k++) {
        int e = in[k]->rank - terms[k].n;
        if (terms[k].ell_at < 0 ? e != 0 : e < 0)
            return kn_kctx_fail(c, KN_ERR_INVALID, "einsum term %u has %d labels but input %u has rank %d", k,
                                terms[k].n, k, (int)in[k]->rank);
        if (e > n_ell)
            n_ell = e;
    }
    /* Per input: the label of each dimension. */
    int dim_lab[MAX_IN][KN_RT_MAX_RANK];
    for (uint32_t k = 0; k < n_in; k++) {
        const term *t = &terms[k];
        int e = in[k]->rank - t->n, d = 0;
        for (int i = 0; i <= t->n; i++) {
            if (i == t->ell_at)
                for (int j = 0; j < e; j++)
                    dim_lab[k][d++] = N_LETTER + (n_ell - e) + j;
            if (i < t->n)
                dim_lab[k][d++] = t->lab[i];
        }
        for (int i = 0; i < in[k]->rank; i++) {
            int l = dim_lab[k][i];
            int64_t sz = in[k]->dims[i];
            if (l < N_LETTER)
                count[l]++;
            if (size[l] < 0 || size[l] == 1)
                size[l] = sz;
            else if (sz != size[l] && sz != 1)
                return kn_kctx_fail(c, KN_ERR_INVALID, "einsum label size mismatch (%lld vs %lld) in input %u",
                                    (long long)sz, (long long)size[l], k);
        }
    }

    /* Output labels. */
    int out_lab[KN_RT_MAX_RANK], n_out = 0;
    bool in_out[MAX_LABEL] = {false};
    if (arrow) {
        term ot;
        KN_TRY(parse_term(c, arrow + 2, strlen(arrow + 2), &ot));
        for (int i = 0; i <= ot.n; i++) {
            if (i == ot.ell_at)
                for (int j = 0; j < n_ell; j++)
                    out_lab[n_out++] = N_LETTER + j;
            if (i < ot.n) {
                int l = ot.lab[i];
                if (size[l] < 0)
                    return kn_kctx_fail(c, KN_ERR_INVALID, "einsum output label '%c' is not in any input",
                                        l < 26 ? 'a' + l : 'A' + l - 26);
                if (in_out[l])
                    return kn_kctx_fail(c, KN_ERR_INVALID, "einsum output repeats a label");
                if (n_out >= KN_RT_MAX_RANK)
                    return kn_kctx_fail(c, KN_ERR_LIMIT, "einsum output rank too large");
                out_lab[n_out++] = l;
            }
            if (i < ot.n)
                in_out[ot.lab[i]] = true;
        }
        for (int j = 0; j < n_out; j++)
            in_out[out_lab[j]] = true;
    } else {
        /* Implicit: the ellipsis dims, then the letters used once, in
         * alphabetical (ASCII: upper case first) order. */
        for (int j = 0; j < n_ell; j++)
            out_lab[n_out++] = N_LETTER + j;
        for (int u = 0; u < 2; u++)
            for (int l = u ? 0 : 26; l < (u ? 26 : 52); l++)
                if (count[l] == 1 && n_out < KN_RT_MAX_RANK)
                    out_lab[n_out++] = l;
        for (int j = 0; j < n_out; j++)
            in_out[out_lab[j]] = true;
    }
    int red_lab[MAX_LABEL], n_red = 0;
    for (int l = 0; l < MAX_LABEL; l++)
        if (size[l] >= 0 && !in_out[l])
            red_lab[n_red++] = l;

    /* Strides of every label in every input (repeated labels add up: a
     * diagonal; size-1 dims broadcast with stride 0). */
    int64_t lstride[MAX_IN][MAX_LABEL];
    memset(lstride, 0, sizeof lstride);
    for (uint32_t k = 0; k < n_in; k++) {
        int64_t s = 1;
        for (int i = in[k]->rank - 1; i >= 0; i--) {
            if (in[k]->dims[i] != 1)
                lstride[k][dim_lab[k][i]] += s;
            s *= in[k]->dims[i];
        }
    }

    int64_t odims[KN_RT_MAX_RANK];
    for (int j = 0; j < n_out; j++)
        odims[j] = size[out_lab[j]];
    kn_rt_tensor *y;
    KN_TRY(kn_kctx_out(c, 0, dt, n_out, odims, &y));
    if (y->numel == 0)
        return KN_OK;
    int64_t n_red_total = 1;
    for (int j = 0; j < n_red; j++) {
        if (size[red_lab[j]] && n_red_total > INT64_MAX / size[red_lab[j]])
            return kn_kctx_fail(c, KN_ERR_LIMIT, "einsum reduction too large");
        n_red_total *= size[red_lab[j]];
    }

    double *fx[MAX_IN], *fy = NULL;
    uint64_t *ux[MAX_IN];
    for (uint32_t k = 0; k < n_in; k++) {
        if (fl) {
            KN_TRY(kn_linalg_to_f64(c, in[k], &fx[k]));
        } else {
            KN_TRY(kn_linalg_alloc(c, in[k]->numel, sizeof(uint64_t), (void **)&ux[k]));
            for (int64_t i = 0; i < in[k]->numel; i++)
                ux[k][i] = kn_get_u64(dt, in[k]->data, i);
        }
    }
    if (fl)
        KN_TRY(kn_linalg_alloc(c, y->numel, sizeof *fy, (void **)&fy));

    int64_t oidx[KN_RT_MAX_RANK] = {0}, ridx[MAX_LABEL], off[MAX_IN] = {0}, roff[MAX_IN];
    for (int64_t q = 0; q < y->numel; q++) {
        double fa = 0;
        uint64_t ua = 0;
        for (uint32_t k = 0; k < n_in; k++)
            roff[k] = off[k];
        for (int j = 0; j < n_red; j++)
            ridx[j] = 0;
        for (int64_t t = 0; t < n_red_total; t++) {
            if (fl) {
                double p = fx[0][roff[0]];
                for (uint32_t k = 1; k < n_in; k++)
                    p *= fx[k][roff[k]];
                fa += p;
            } else {
                uint64_t p = ux[0][roff[0]];
                for (uint32_t k = 1; k < n_in; k++)
                    p *= ux[k][roff[k]];
                ua += p;
            }
            for (int j = n_red - 1; j >= 0; j--) {
                int l = red_lab[j];
                for (uint32_t k = 0; k < n_in; k++)
                    roff[k] += lstride[k][l];
                if (++ridx[j] < size[l])
                    break;
                for (uint32_t k = 0; k < n_in; k++)
                    roff[k] -= lstride[k][l] * size[l];
                ridx[j] = 0;
            }
        }
        if (fl)
            fy[q] = fa;
        else
            kn_set_u64(dt, y->data, q, ua);
        for (int j = n_out - 1; j >= 0; j--) {
            int l = out_lab[j];
            for (uint32_t k = 0; k < n_in; k++)
                off[k] += lstride[k][l];
            if (++oidx[j] < size[l])
                break;
            for (uint32_t k = 0; k < n_in; k++)
                off[k] -= lstride[k][l] * size[l];
            oidx[j] = 0;
        }
    }
    if (fl)
        kn_linalg_store_f64(dt, y->data, fy, y->numel);
    return KN_OK;
}
