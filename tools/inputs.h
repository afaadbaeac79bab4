/* Inputs for `kiln run` and `kiln bench`: NAME=VALUE options and seeded
 * random tensors for a graph's inputs. */
#ifndef KILN_TOOLS_INPUTS_H
#define KILN_TOOLS_INPUTS_H

#include "runtime/cpu/kernel.h"

/* A NAME=VALUE option (--input, --shape). `name` is heap-allocated. */
typedef struct kn_cli_kv {
    const char *name, *value;
} kn_cli_kv;

/* Splits "NAME=VALUE" (`value` points into arg); -1 with a message naming
 * `cmd` and `opt` when it is malformed or memory runs out. */
int kn_cli_parse_kv(const char *cmd, const char *opt, const char *arg, kn_cli_kv *out);
/* The value given for `name`, or NULL. */
const char *kn_cli_find_kv(const kn_cli_kv *list, int n, const char *name);
void kn_cli_free_kvs(kn_cli_kv *list, int n);

/* A random tensor for input value v: dtype from its type, shape from
 * `shape_opt` ("1x3x224x224") or its static dims (symbolic ones 1, with a
 * note). Floats uniform in [-1, 1), ints in [0, 10), bools 0/1, drawn from
 * *seed (advanced). KN_ERR_INVALID with a message for an untyped input or
 * a bad shape. */
kn_status kn_cli_random_input(const kn_value *v, const char *shape_opt, uint64_t *seed, kn_diag *d,
                              kn_rt_tensor **out);

#endif
