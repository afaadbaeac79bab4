/* Named blobs of a plan (runtime/plan_named.c): the load-time check. */
#ifndef KILN_PLAN_NAMED_H
#define KILN_PLAN_NAMED_H

#include "kiln/kiln.h"

#include <stdint.h>

/* Checks a KN_SEC_NAMED section of `size` bytes at `sec` against the
 * plan's STRINGS section: count, reserved fields, names (present, unique,
 * non-empty) and every blob inside the section. KN_ERR_INVALID with a
 * "PLAN: corrupted plan: named blobs: ..." message. */
kn_status kn_plan_named_check(const uint8_t *sec, uint64_t size, const uint8_t *strings, uint64_t n_strings,
                              const char *plan, kn_diag *d);

#endif
