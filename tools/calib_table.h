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

/* ---- reading a table back (for `kiln compile --quantize`) ---- */

typedef struct kn_calib_table_tensor {
    char *name;
    double min, max, absmax;
    double amax; /* the method's threshold: quantize with scale amax / 127 */
} kn_calib_table_tensor;

typedef struct kn_calib_table_input {
    char *name;
    uint32_t k;
    uint64_t rows;
    double *mean_abs; /* [k] per-channel mean |x| (AWQ) */
    double *max_abs;  /* [k] per-channel max |x| (SmoothQuant), or NULL (a table from before it) */
    double *xtx;      /* [k][k] XᵀX summed over rows (GPTQ), or NULL */
} kn_calib_table_input;

typedef struct kn_calib_table_layer {
    char *node, *op, *weight, *input;
    uint32_t k, n;
    bool weight_nk;   /* the weight is stored [N][K] (Gemm transB) */
} kn_calib_table_layer;

typedef struct kn_calib_table {
    kn_calib_method method;
    uint64_t n_samples;
    kn_calib_table_tensor *tensors;
    uint32_t n_tensors;
    kn_calib_table_input *inputs;
    uint32_t n_inputs;
    kn_calib_table_layer *layers;
    uint32_t n_layers;
} kn_calib_table;

/* Reads a table kn_calib_table_write wrote, with its side file (found
 * next to the JSON; its size and checksum must match the table's record).
 * *out owns everything (kn_calib_table_free). KN_ERR_IO (a file cannot be
 * read), KN_ERR_INVALID (not a kiln calibration table, version, a field
 * of the wrong type, a side file that does not match), KN_ERR_NOMEM; every
 * message names the file. */
kn_status kn_calib_table_read(const char *json_path, kn_diag *d, kn_calib_table **out);
void kn_calib_table_free(kn_calib_table *t);

/* By name; NULL when absent. */
const kn_calib_table_tensor *kn_calib_table_tensor_find(const kn_calib_table *t, const char *name);
const kn_calib_table_input *kn_calib_table_input_find(const kn_calib_table *t, const char *name);
