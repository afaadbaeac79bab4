/* kiln compile's named blobs: the tokenizer files found or given, checked
 * and read for the plan writer (tools/embed.c). */
#ifndef KILN_TOOLS_EMBED_H
#define KILN_TOOLS_EMBED_H

#include "codegen/plan_write.h"

#include <stdbool.h>

typedef struct kn_embed {
    kn_plan_named_in items[3];
    uint32_t n;
    char *bytes[3];   /* owned */
    char summary[256]; /* "tokenizer.json (2 MB, 49152 ids), tokenizer_config.json (3 kB)" or "" */
} kn_embed;

/* Collects tokenizer.json (`tokenizer` given by --tokenizer, else the one
 * next to `model` when it exists; none with `disabled`) and, next to it,
 * tokenizer_config.json and generation_config.json. Each file is checked
 * (the tokenizer loaded with kn_tokenizer_load_file, the configs parsed):
 * a bad file is an error naming it. Free with kn_embed_free. */
kn_status kn_embed_collect(const char *model, const char *tokenizer, bool disabled, kn_diag *d, kn_embed *e);
void kn_embed_free(kn_embed *e);



/* kiln inspect: the plan's named blobs and, when one is a tokenizer, its
 * summary (model type, ids, special tokens, chat template). Prints nothing
 * for a graph without blobs. */
struct kn_json;
void kn_embed_print_text(const kn_graph *plan);
/* Adds the keys "embedded" (array of {name, bytes}) and "tokenizer" (an
 * object, or null) to the open JSON object. */
void kn_embed_print_json(struct kn_json *j, const kn_graph *plan);
#endif
