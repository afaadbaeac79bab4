/* A small streaming JSON writer for the CLI's --json output: keys in the
 * order written, strings escaped, two-space indentation. */
#ifndef KILN_TOOLS_JSON_H
#define KILN_TOOLS_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct kn_json {
    FILE *f;
    int depth;
    bool first[64]; /* per nesting level: nothing written yet */
    bool after_key;
} kn_json;

void kn_json_init(kn_json *j, FILE *f);
void kn_json_key(kn_json *j, const char *key);
void kn_json_obj_begin(kn_json *j);
void kn_json_obj_end(kn_json *j);
void kn_json_arr_begin(kn_json *j);
void kn_json_arr_end(kn_json *j);
void kn_json_str(kn_json *j, const char *s);
void kn_json_strn(kn_json *j, const char *s, size_t n);
void kn_json_int(kn_json *j, int64_t v);
void kn_json_uint(kn_json *j, uint64_t v);
void kn_json_num(kn_json *j, double v);
void kn_json_bool(kn_json *j, bool v);
void kn_json_null(kn_json *j);
/* Arrays of numbers written on one line ([1, 2, 3]), for long vectors
 * (histograms, per-channel statistics). */
void kn_json_nums_inline(kn_json *j, const double *v, size_t n);
void kn_json_uints_inline(kn_json *j, const uint64_t *v, size_t n);
/* Ends the document with a newline. */
void kn_json_finish(kn_json *j);

#endif
