/* kiln runtime API (libkiln_rt): load a plan and run it. A deployed
 * program needs only this library and a plan file. */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include "kiln/kiln.h"
#include "kiln/tokenizer.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Loads a plan file. It is mmapped; constants are not copied. Checks the
 * format version, the checksum and the bounds of every table entry: a
 * corrupted or truncated plan gives KN_ERR_INVALID with a message, a
 * missing file KN_ERR_IO. On success *out owns the mapping (free with
 * kn_graph_destroy). */
kn_status kn_plan_load(const char *path, const kn_allocator *a, kn_diag *d, kn_graph **out);

/* Same from memory; `data` must stay valid while the graph lives. */
kn_status kn_plan_load_memory(const void *data, size_t size, const char *name, const kn_allocator *a, kn_diag *d,
                              kn_graph **out);

/* ---- named blobs: files embedded in the plan by `kiln compile` ---------- */

/* The names kiln compile uses for the tokenizer files it embeds. */
#define KN_BLOB_TOKENIZER "tokenizer.json"
#define KN_BLOB_TOKENIZER_CONFIG "tokenizer_config.json"
#define KN_BLOB_GENERATION_CONFIG "generation_config.json"

/* The bytes of the blob called `name` in a loaded plan: *data points into
 * the plan's mapping (valid while `plan` lives; not NUL-terminated), *size
 * its length. Returns KN_ERR_NOT_FOUND (no such blob, or `plan` did not
 * come from kn_plan_load*), with *data NULL and *size 0. No message. */
kn_status kn_plan_blob(const kn_graph *plan, const char *name, const void **data, size_t *size);

/* Number of named blobs in the plan (0 for a graph not loaded from one). */
size_t kn_plan_blob_count(const kn_graph *plan);

/* Blob i (0 <= i < kn_plan_blob_count) in plan order: its name (owned by
 * the plan), bytes and size; any out-pointer may be NULL. Returns
 * KN_ERR_NOT_FOUND when i is out of range. */
kn_status kn_plan_blob_at(const kn_graph *plan, size_t i, const char **name, const void **data, size_t *size);

/* Builds the tokenizer embedded as KN_BLOB_TOKENIZER. `a` may be NULL. On
 * success *out is the caller's (kn_tokenizer_free). Returns
 * KN_ERR_NOT_FOUND with a message saying how to embed one when the plan has
 * none, else as kn_tokenizer_load_memory (messages name "PLAN:tokenizer.json"). */
kn_status kn_plan_tokenizer(const kn_graph *plan, const kn_allocator *a, kn_diag *d, kn_tokenizer **out);

/* Reads the embedded KN_BLOB_TOKENIZER_CONFIG (chat template, BOS/EOS
 * tokens). On success *out is the caller's (kn_tokenizer_config_free).
 * Returns KN_ERR_NOT_FOUND (with a message) when absent, else as
 * kn_tokenizer_config_load_memory. */
kn_status kn_plan_tokenizer_config(const kn_graph *plan, const kn_allocator *a, kn_diag *d,
                                   kn_tokenizer_config **out);

/* Parses the embedded KN_BLOB_GENERATION_CONFIG into *out. Returns
 * KN_ERR_NOT_FOUND (no message; *out holds the defaults) when absent, else
 * as kn_generation_config_parse. */
kn_status kn_plan_generation_config(const kn_graph *plan, kn_diag *d, kn_generation_config *out);

#ifdef __cplusplus
}
#endif
#endif
