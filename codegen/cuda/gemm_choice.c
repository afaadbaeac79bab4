/* The per-shape choice between the dense GEMV and cuBLASLt
 * (gemv_kernels.h): the recorded table (codegen/cuda/gemm_choice.tsv,
 * embedded as kn_gemm_table_default; kiln compile --gemm-table FILE) and
 * the rule for shapes it does not list. */
#include "codegen/cuda/gemv_kernels.h"
#include "ir/arena.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kn_gemm_epi_key(bool bias, bool act, bool res, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s%s%s%s", bias ? "bias" : "", bias && (act || res) ? "+" : "", act ? "act" : "",
             act && res ? "+" : "", res ? "res" : "");
    if (!bias && !act && !res)
        snprintf(buf, n, "-");
}

static bool epi_valid(const char *s)
{
    static const char *const keys[] = {"-", "bias", "act", "res", "bias+act", "bias+res", "act+res", "bias+act+res"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (strcmp(s, keys[i]) == 0)
            return true;
    return false;
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (strcmp(s, "*") == 0) {
        *out = 0;
        return true;
    }
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < 1)
        return false;
    *out = v;
    return true;
}

kn_status kn_gemm_table_parse(const char *text, const char *name, const kn_allocator *a, kn_diag *d,
                              kn_gemm_table *out)
{
    memset(out, 0, sizeof *out);
    out->a = a;
    uint32_t cap = 0, line = 0;
    const char *p = text;
    while (p && *p) {
        line++;
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char buf[256];
        if (len >= sizeof buf) {
            kn_diag_add(d, KN_ERROR, "%s:%u: line too long", name, line);
            kn_gemm_table_free(out);
            return KN_ERR_INVALID;
        }
        memcpy(buf, p, len);
        buf[len] = 0;
        p = e ? e + 1 : NULL;
        char *hash = strchr(buf, '#');
        if (hash)
            *hash = 0;
        char *f[8], *save = NULL;
        int nf = 0;
        for (char *t = strtok_r(buf, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save))
            f[nf < 8 ? nf++ : 7] = t;
        if (nf == 0)
            continue;
        kn_gemm_table_row r;
        memset(&r, 0, sizeof r);
        unsigned arch = 0;
        bool ok = nf == 7;
        if (ok && strcmp(f[0], "*") != 0)
            ok = sscanf(f[0], "sm_%u", &arch) == 1 && arch >= 10 && arch < 1000;
        r.arch = arch;
        r.dtype = !ok                              ? KN_UNDEFINED
                  : strcmp(f[1], "*") == 0        ? KN_UNDEFINED
                  : strcmp(f[1], "float32") == 0  ? KN_F32
                  : strcmp(f[1], "float16") == 0  ? KN_F16
                  : strcmp(f[1], "bfloat16") == 0 ? KN_BF16
                                                  : KN_UNDEFINED;
        ok = ok && (r.dtype != KN_UNDEFINED || strcmp(f[1], "*") == 0) && parse_i64(f[2], &r.m) &&
             parse_i64(f[3], &r.n) && parse_i64(f[4], &r.k) && (epi_valid(f[5]) || strcmp(f[5], "*") == 0) &&
             (strcmp(f[6], "gemv") == 0 || strcmp(f[6], "cublaslt") == 0);
        if (!ok) {
            kn_diag_add(d, KN_ERROR,
                        "%s:%u: expected 'ARCH DTYPE M N K EPILOGUE CHOICE' (ARCH sm_NN, DTYPE "
                        "float32|float16|bfloat16, M N K positive, EPILOGUE - or bias/act/res joined by '+', any "
                        "of those * for any; CHOICE gemv|cublaslt)",
                        name, line);
            kn_gemm_table_free(out);
            return KN_ERR_INVALID;
        }
        snprintf(r.epi, sizeof r.epi, "%s", f[5]);
        r.gemv = strcmp(f[6], "gemv") == 0;
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            kn_gemm_table_row *nr = kn_mem_realloc(a, out->rows, cap * sizeof *nr);
            if (!nr) {
                kn_gemm_table_free(out);
                return KN_ERR_NOMEM;
            }
            out->rows = nr;
        }
        out->rows[out->n++] = r;
    }
    return KN_OK;
}

void kn_gemm_table_free(kn_gemm_table *t)
{
    kn_mem_free(t->a, t->rows);
    memset(t, 0, sizeof *t);
}

bool kn_gemm_choose_gemv(const kn_gemm_table *t, uint32_t arch, kn_dtype dt, int64_t m, int64_t n, int64_t k,
                         const char *epi)
{
    if ((dt != KN_F32 && dt != KN_F16 && dt != KN_BF16) || m < 1 || m > KN_GEMV_MAX_ROWS || n < 1 || k < 1)
        return false;
    const kn_gemm_table_row *any = NULL;
    for (uint32_t i = 0; t && i < t->n; i++) {
        const kn_gemm_table_row *r = &t->rows[i];
        if ((r->dtype != KN_UNDEFINED && r->dtype != dt) || (r->m && r->m != m) || (r->n && r->n != n) ||
            (r->k && r->k != k) || (strcmp(r->epi, "*") != 0 && strcmp(r->epi, epi) != 0))
            continue;
        if (r->arch == arch)
            return r->gemv;
        if (r->arch == 0 && !any)
            any = r;
    }
    if (any)
        return any->gemv;
    return m <= KN_GEMM_GEMV_RULE_ROWS;
}
