/* kiln runtime API (libkiln_rt): load a plan and run it. A deployed
 * program needs only this library and a plan file. */
#ifndef KILN_RUNTIME_H
#define KILN_RUNTIME_H

#include "kiln/kiln.h"

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

#ifdef __cplusplus
}
#endif
#endif
