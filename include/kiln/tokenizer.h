/* kiln tokenizer: Hugging Face tokenizer.json (byte-level BPE) for text in
 * and out of a language model. Part of libkiln_rt. */
#ifndef KILN_TOKENIZER_H
#define KILN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/kiln.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A loaded tokenizer. Immutable after loading: encode/decode may run on
 * several threads at once. */
typedef struct kn_tokenizer kn_tokenizer;

/* Loads a tokenizer.json. Supported: model BPE (merges as "a b" strings or
 * ["a", "b"] lists, ignore_merges), added_tokens, normalizers NFC / NFKC /
 * NFD / NFKD / Sequence of those (or none), pre_tokenizer ByteLevel (with or
 * without its GPT-2 regex), Split (Regex or String pattern, behaviour
 * Isolated or Removed) and Sequence of those, decoder ByteLevel, and
 * post_processor null / ByteLevel / TemplateProcessing ("single" only) /
 * Sequence of those.
 * `a` may be NULL (malloc). On success *out is the caller's, freed with
 * kn_tokenizer_free. Returns KN_ERR_IO (file unreadable), KN_ERR_INVALID
 * (not JSON, wrong types, missing fields, bad regex), KN_ERR_UNSUPPORTED
 * (another model, normalizer, pre-tokenizer or decoder), KN_ERR_NOMEM.
 * Every error has a message in `d` naming the file. The JSON parse itself
 * uses libjansson's own (malloc) heap, freed before this returns. */
kn_status kn_tokenizer_load_file(const char *path, const kn_allocator *a, kn_diag *d, kn_tokenizer **out);

/* As kn_tokenizer_load_file for `size` bytes at `data` (not NUL-terminated
 * necessarily); `name` is used in messages. `data` is not kept. */
kn_status kn_tokenizer_load_memory(const void *data, size_t size, const char *name, const kn_allocator *a,
                                   kn_diag *d, kn_tokenizer **out);

void kn_tokenizer_free(kn_tokenizer *tok);

/* Number of ids (the largest id + 1). */
size_t kn_tokenizer_vocab_size(const kn_tokenizer *tok);

/* Encodes `len` bytes of UTF-8 `text`. Added tokens (special or not) in the
 * text become their ids. `add_special` adds the post-processor's tokens
 * (TemplateProcessing's "single" template: BOS/EOS and the like), as
 * Hugging Face's add_special_tokens=True does. On success *ids is a new array of *n ids, owned by the caller and
 * freed with kn_tokenizer_release (NULL when *n is 0). Returns
 * KN_ERR_INVALID (text not valid UTF-8; a byte with no token), KN_ERR_NOMEM;
 * on error *ids is NULL and *n is 0. */
kn_status kn_tokenizer_encode(const kn_tokenizer *tok, const char *text, size_t len, bool add_special,
                              int32_t **ids, size_t *n, kn_diag *d);

/* Decodes `n` ids to bytes (UTF-8 when the ids came from valid text).
 * `skip_special` leaves out special tokens. On success *text is a new
 * NUL-terminated string of *len bytes, owned by the caller and freed with
 * kn_tokenizer_release. Returns KN_ERR_INVALID (an id out of range),
 * KN_ERR_NOMEM. */
kn_status kn_tokenizer_decode(const kn_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                              char **text, size_t *len, kn_diag *d);

/* The id of the added token whose content is `name` (e.g. "<|im_end|>").
 * Returns KN_ERR_INVALID "unknown special token" when there is none. */
kn_status kn_tokenizer_token_id(const kn_tokenizer *tok, const char *name, int32_t *id, kn_diag *d);

/* Frees an array or string returned by encode/decode (NULL is fine). */
void kn_tokenizer_release(const kn_tokenizer *tok, void *p);

/* The raw bytes of token `id` (not NUL-terminated; owned by the tokenizer)
 * and whether it is a special added token. Any out-pointer may be NULL.
 * Returns KN_ERR_INVALID for an id out of range or with no token. */
kn_status kn_tokenizer_token(const kn_tokenizer *tok, int32_t id, const char **bytes, size_t *len, bool *special);

/* The model type ("BPE": the only one loaded today). */
const char *kn_tokenizer_model_type(const kn_tokenizer *tok);

/* ---- tokenizer_config.json ------------------------------------------------ */

/* What kiln uses from a Hugging Face tokenizer_config.json: the chat
 * template and the BOS/EOS token texts. */
typedef struct kn_tokenizer_config kn_tokenizer_config;

/* Parses `size` bytes of tokenizer_config.json (`name` for messages).
 * "chat_template" may be a string or a list of {"name", "template"} (the
 * one named "default", else the first); "bos_token"/"eos_token" a string,
 * an {"content": ...} object or null. `a` may be NULL. On success *out is
 * the caller's (kn_tokenizer_config_free). Returns KN_ERR_INVALID (not
 * JSON, wrong types; message names the file and key), KN_ERR_NOMEM. */
kn_status kn_tokenizer_config_load_memory(const void *data, size_t size, const char *name, const kn_allocator *a,
                                          kn_diag *d, kn_tokenizer_config **out);
/* As above from a file; KN_ERR_IO when it cannot be read. */
kn_status kn_tokenizer_config_load_file(const char *path, const kn_allocator *a, kn_diag *d,
                                        kn_tokenizer_config **out);
void kn_tokenizer_config_free(kn_tokenizer_config *c);

/* The chat template (Jinja source), the BOS and EOS token texts; NULL when
 * the file has none. Owned by `c`. */
const char *kn_tokenizer_config_chat_template(const kn_tokenizer_config *c);
const char *kn_tokenizer_config_bos_token(const kn_tokenizer_config *c);
const char *kn_tokenizer_config_eos_token(const kn_tokenizer_config *c);

/* ---- generation_config.json ------------------------------------------------ */

#define KN_GEN_MAX_EOS 16

/* What kiln uses from a Hugging Face generation_config.json. Absent keys
 * keep transformers' GenerationConfig defaults (shown). */
typedef struct kn_generation_config {
    int32_t eos_ids[KN_GEN_MAX_EOS]; /* "eos_token_id": an id or a list of ids */
    uint32_t n_eos;                  /* 0: none given */
    int32_t bos_id, pad_id;          /* -1: none */
    bool do_sample;                  /* false: greedy */
    float temperature;               /* 1 */
    uint32_t top_k;                  /* 50 */
    float top_p;                     /* 1 */
    float repetition_penalty;        /* 1 */
    int64_t max_new_tokens;          /* -1: not given */
    int64_t max_length;              /* -1: not given (prompt + new tokens) */
} kn_generation_config;

/* Parses `size` bytes of generation_config.json into *out (no allocation
 * kept). Returns KN_ERR_INVALID (not a JSON object; a key of the wrong
 * type or out of range, named with the file), KN_ERR_LIMIT (more than
 * KN_GEN_MAX_EOS eos ids). */
kn_status kn_generation_config_parse(const void *data, size_t size, const char *name, kn_diag *d,
                                     kn_generation_config *out);

/* ---- streaming text with stop strings ---------------------------------------- */

/* Turns generated ids into text that is safe to show as it comes: bytes
 * that could be the start of a stop string, or of a UTF-8 character split
 * across tokens, are held back until the next id settles them. When a stop
 * string completes, the text before it is released and the stream stops
 * (the stop string itself is never shown). Intended use in a generation
 * loop (`kiln run --prompt ... --stop STR`):
 *
 *     kn_text_stream *ts;
 *     KN_TRY(kn_text_stream_create(tok, stops, n_stops, true, NULL, d, &ts));
 *     for (each new id) {
 *         if (id is the EOS id) break;
 *         const char *text; size_t len; bool stop;
 *         KN_TRY(kn_text_stream_push(ts, id, &text, &len, &stop, d));
 *         fwrite(text, 1, len, stdout);
 *         if (stop) break;               // a stop string completed
 *     }
 *     kn_text_stream_finish(ts, &text, &len);  // what was held back (none after a stop)
 *     fwrite(text, 1, len, stdout);
 *     kn_text_stream_free(ts);
 *
 * One stream per sequence; not thread-safe. */
typedef struct kn_text_stream kn_text_stream;

/* `tok` (kept, not owned; may be NULL when only kn_text_stream_push_text is
 * used), `n_stops` stop strings (copied; empty strings are refused),
 * `skip_special`: special tokens produce no text (as decode's flag). `a` may
 * be NULL. On success *out is the caller's (kn_text_stream_free). Returns
 * KN_ERR_INVALID (an empty or NULL stop string), KN_ERR_NOMEM. */
kn_status kn_text_stream_create(const kn_tokenizer *tok, const char *const *stops, size_t n_stops, bool skip_special,
                                const kn_allocator *a, kn_diag *d, kn_text_stream **out);
void kn_text_stream_free(kn_text_stream *s);

/* Adds the text of one id. *text and *len: the bytes now safe to show (owned by
 * the stream, valid until its next call; *len may be 0). *stopped: true
 * when a stop string completed with this id (then *text ends just before
 * it). Returns KN_ERR_INVALID (id out of range; a push after a stop),
 * KN_ERR_NOMEM. */
kn_status kn_text_stream_push(kn_text_stream *s, int32_t id, const char **text, size_t *len, bool *stopped,
                              kn_diag *d);

/* As kn_text_stream_push for `n` bytes of already decoded text. */
kn_status kn_text_stream_push_text(kn_text_stream *s, const char *bytes, size_t n, const char **text, size_t *len,
                                   bool *stopped, kn_diag *d);

/* At the end of generation: the bytes still held back (a partial stop
 * string or a partial UTF-8 character, as they are; nothing after a stop).
 * Valid until the next call. */
void kn_text_stream_finish(kn_text_stream *s, const char **text, size_t *len);

/* Which stop string completed (its index in `stops`), or -1. */
int kn_text_stream_stop_index(const kn_text_stream *s);

/* ---- chat templates ---------------------------------------------------------- */

/* One chat message; both strings NUL-terminated UTF-8. */
typedef struct kn_chat_message {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content;
} kn_chat_message;

/* Renders a Hugging Face chat template (tokenizer_config.json's
 * "chat_template", Jinja) as transformers' apply_chat_template(...,
 * tokenize=False) does (trim_blocks and lstrip_blocks on). Variables:
 * `messages` (each with .role/.content, also ['role']), `add_generation_prompt`,
 * `bos_token`, `eos_token` (NULL: undefined), and raise_exception(msg).
 * Supported: {{ }}, {% if/elif/else/endif %}, {% for x in list %} with
 * loop.first/last/index/index0/revindex/revindex0/length, {% set x = ... %},
 * {# #}, whitespace control ({%- -%}, {%+), string/integer/boolean/none
 * literals, + - * / // % ~, == != < > <= >=, and/or/not, in/not in,
 * x if c else y, subscripts and slices (messages[1:]), attributes, filters
 * length/count/trim/tojson/string/lower/upper, tests defined/undefined/
 * none/string/number/boolean/true/false, string methods strip/lstrip/
 * rstrip/startswith/endswith/upper/lower. Undefined names and missing
 * attributes are undefined (falsy, print as "").
 * On success *out is a new NUL-terminated string of *out_len bytes
 * (out_len may be NULL), allocated with `a` (NULL: malloc) and freed by
 * the caller with a->free (or free). Returns KN_ERR_UNSUPPORTED for a
 * construct outside the subset and KN_ERR_INVALID for a syntax error, a
 * type error, or raise_exception (its message in `d`); each message says
 * "chat template: offset N: ..." with N the byte offset in the template.
 * KN_ERR_NOMEM; KN_ERR_LIMIT when the output passes 64 MiB. */
kn_status kn_chat_template_apply(const char *tmpl, const kn_chat_message *messages, size_t n_messages,
                                 bool add_generation_prompt, const char *bos_token, const char *eos_token,
                                 const kn_allocator *a, kn_diag *d, char **out, size_t *out_len);

/* Parses a template without rendering it: KN_OK when every construct is
 * in the subset (for checking a template at compile time), else as above. */
kn_status kn_chat_template_check(const char *tmpl, const kn_allocator *a, kn_diag *d);

#ifdef __cplusplus
}
#endif

#endif
