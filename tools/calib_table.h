/* The calibration table `kiln calibrate` writes: JSON, plus a side file of
 * XᵀX matrices (docs/quantization.md). */
#ifndef KILN_TOOLS_CALIB_TABLE_H
#define KILN_TOOLS_CALIB_TABLE_H

#include "quant/calib.h"

/* The side file's path for table json_path: "X.json" → "X.xtx.bin",
 * anything else → json_path + ".xtx.bin". Heap-allocated; NULL when out
 * of memory. */
char *kn_calib_side_path(const char *json_path);

/* Writes c (after kn_calib_finish) as json_path and, when any linear
 * input has an XᵀX, its side file; each written atomically (a temporary
 * file renamed into place), the side file first. `model_path` is recorded
 * by its base name. KN_ERR_IO (message naming the file), KN_ERR_NOMEM. */
kn_status kn_calib_table_write(const kn_calib *c, const char *model_path, const char *json_path, kn_diag *d);

#endif
