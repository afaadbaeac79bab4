/* Streaming JSON writer (see json.h). */
#include "json.h"

#include <inttypes.h>
#include <math.h>

void kn_json_init(kn_json *j, FILE *f)
{
    j->f = f;
    j->depth = 0;
    j->first[0] = true;
    j->after_key = false;
}

static void newline(kn_json *j)
{
    fputc('\n', j->f);
    for (int i = 0; i < j->depth; i++)
        fputs("  ", j->f);
}

/* Separator before a value or key at the current level. */
static void sep(kn_json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth > 0) {
        if (!j->first[j->depth])
            fputc(',', j->f);
        newline(j);
    }
    j->first[j->depth] = false;
}

void kn_json_strn(kn_json *j, const char *s, size_t n)
{
    sep(j);
    fputc('"', j->f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", j->f); break;
        case '\\': fputs("\\\\", j->f); break;
        case '\n': fputs("\\n", j->f); break;
        case '\r': fputs("\\r", j->f); break;
        case '\t': fputs("\\t", j->f); break;
        default:
            if (c < 0x20)
                fprintf(j->f, "\\u%04x", c);
            else
                fputc(c, j->f);
        }
    }
    fputc('"', j->f);
}

void kn_json_str(kn_json *j, const char *s)
{
    if (!s) {
        kn_json_null(j);
        return;
    }
    size_t n = 0;
    while (s[n])
        n++;
    kn_json_strn(j, s, n);
}

void kn_json_key(kn_json *j, const char *key)
{
    kn_json_str(j, key);
    fputs(": ", j->f);
    j->after_key = true;
}

static void open_(kn_json *j, char c)
{
    sep(j);
    fputc(c, j->f);
    if (j->depth < 63)
        j->depth++;
    j->first[j->depth] = true;
}

static void close_(kn_json *j, char c)
{
    bool empty = j->first[j->depth];
    if (j->depth > 0)
        j->depth--;
    if (!empty)
        newline(j);
    fputc(c, j->f);
}

void kn_json_obj_begin(kn_json *j) { open_(j, '{'); }
void kn_json_obj_end(kn_json *j) { close_(j, '}'); }
void kn_json_arr_begin(kn_json *j) { open_(j, '['); }
void kn_json_arr_end(kn_json *j) { close_(j, ']'); }

void kn_json_int(kn_json *j, int64_t v)
{
    sep(j);
    fprintf(j->f, "%" PRId64, v);
}

void kn_json_uint(kn_json *j, uint64_t v)
{
    sep(j);
    fprintf(j->f, "%" PRIu64, v);
}

void kn_json_num(kn_json *j, double v)
{
    sep(j);
    if (isfinite(v))
        fprintf(j->f, "%.17g", v);
    else
        fputs("null", j->f);
}

void kn_json_bool(kn_json *j, bool v)
{
    sep(j);
    fputs(v ? "true" : "false", j->f);
}

void kn_json_null(kn_json *j)
{
    sep(j);
    fputs("null", j->f);
}

void kn_json_nums_inline(kn_json *j, const double *v, size_t n)
{
    sep(j);
    fputc('[', j->f);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputs(", ", j->f);
        if (isfinite(v[i]))
            fprintf(j->f, "%.17g", v[i]);
        else
            fputs("null", j->f);
    }
    fputc(']', j->f);
}

void kn_json_uints_inline(kn_json *j, const uint64_t *v, size_t n)
{
    sep(j);
    fputc('[', j->f);
    for (size_t i = 0; i < n; i++)
        fprintf(j->f, "%s%" PRIu64, i ? ", " : "", v[i]);
    fputc(']', j->f);
}

void kn_json_finish(kn_json *j) { fputc('\n', j->f); }
