/* Sample inputs for running a model over data: `kiln calibrate --data /
 * --text` and `kiln compile --eval / --eval-text` (docs/quantization.md).
 * Folders of tensors (backend-test test_data_set_N folders, .npy batches)
 * or a text file tokenized into windows for a decoder language model
 * (input_ids [+ attention_mask, position_ids, empty past key/values]). */
#ifndef KILN_TOOLS_SAMPLES_H
#define KILN_TOOLS_SAMPLES_H

#include "runtime/cpu/kernel.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kn_sample_set {
    const char *who;   /* message prefix: "calibrate", "compile" */
    const char *opt;   /* the option that named the data: "--data", "--eval" */
    const char *dir;   /* folders: DIR's subfolders in name order, else DIR */
    char **paths;
    size_t n_paths;
    int32_t *ids;      /* text: the tokens (NULL for folders) */
    size_t n_ids;
    int64_t window;    /* tokens per window */
} kn_sample_set;

/* Lists the sample folders of `dir`. KN_ERR_IO (no such folder),
 * KN_ERR_NOMEM. Free with kn_samples_free. */
kn_status kn_samples_folders(const char *who, const char *opt, const char *dir, kn_diag *d, kn_sample_set *out);

/* Tokenizes text file `text` with tokenizer.json `tokenizer` (NULL: the
 * tokenizer.json next to `model`) for windows of `window` tokens. The
 * post-processor's special tokens (BOS) are added as Hugging Face's
 * tokenizer(text) does. KN_ERR_IO, KN_ERR_INVALID (no tokenizer, fewer
 * than 2 tokens), KN_ERR_NOMEM; messages name the file. */
kn_status kn_samples_text(const char *who, const char *model, const char *text, const char *tokenizer,
                          int64_t window, kn_diag *d, kn_sample_set *out);
void kn_samples_free(kn_sample_set *s);

/* The number of text windows: consecutive, non-overlapping; a last
 * shorter window is kept when it holds at least 2 tokens. */
size_t kn_samples_n_windows(size_t n_ids, int64_t window);

/* One sample: inputs[k] binds g->inputs[k]; `origin` names where it came
 * from (a folder, "window 3"); ids/n_ids: the window's tokens (text), else
 * NULL. */
typedef kn_status (*kn_sample_fn)(void *ctx, const kn_rt_tensor *const *inputs, const char *origin,
                                  const int32_t *ids, size_t n_ids, kn_diag *d);

/* Calls fn for every sample of s (at most max_samples), in order. Folder
 * inputs are checked against g's inputs (dtype, static dims; a file with
 * one more leading axis is a batch); text windows become decoder inputs
 * (input_ids [1, n], attention_mask of ones, position_ids 0..n-1, past
 * key/values with 0 past tokens), any other input is an error naming it. */
kn_status kn_samples_foreach(const kn_graph *g, const kn_sample_set *s, size_t max_samples, kn_sample_fn fn,
                             void *ctx, kn_diag *d);

#endif
