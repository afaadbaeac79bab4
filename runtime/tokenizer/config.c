/* tokenizer_config.json (chat template, BOS/EOS texts), generation_config.json
 * (eos ids, sampling defaults) and the token accessors of
 * include/kiln/tokenizer.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "runtime/tokenizer/tok_internal.h"

struct kn_tokenizer_config {
    kn_allocator a;
    char *chat_template, *bos, *eos; /* NULL when absent */
};

kn_status kn_tokenizer_token(const kn_tokenizer *t, int32_t id, const char **bytes, size_t *len, bool *special)
{
    if (!t || id < 0 || (uint32_t)id >= t->n_tokens || !(t->tok_flags[id] & KN_TOK_PRESENT))
        return KN_ERR_INVALID;
    if (bytes)
        *bytes = t->pool + t->tok_off[id];
    if (len)
        *len = t->tok_len[id];
    if (special)
        *special = (t->tok_flags[id] & KN_TOK_SPECIAL) != 0;
    return KN_OK;
}

const char *kn_tokenizer_model_type(const kn_tokenizer *t)
{
    (void)t;
    return "BPE";
}

static char *dup(kn_tokenizer_config *c, const char *s)
{
    size_t n = strlen(s);
    char *p = c->a.alloc(c->a.ctx, n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

/* A token field: a string, {"content": string, ...} or null/absent. */
static kn_status token_field(kn_tokenizer_config *c, json_t *root, const char *key, const char *name, kn_diag *d,
                             char **out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return KN_OK;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (!json_is_string(v)) {
        kn_diag_add(d, KN_ERROR, "%s: \"%s\" must be a string or an object with a \"content\" string", name, key);
        return KN_ERR_INVALID;
    }
    *out = dup(c, json_string_value(v));
    return *out ? KN_OK : KN_ERR_NOMEM;
}

static kn_status parse(kn_tokenizer_config *c, json_t *root, const char *name, kn_diag *d)
{
    if (!json_is_object(root)) {
        kn_diag_add(d, KN_ERROR, "%s: not a JSON object", name);
        return KN_ERR_INVALID;
    }
    json_t *t = json_object_get(root, "chat_template");
    if (json_is_array(t)) { /* [{"name": "default", "template": ...}, {"name": "tool_use", ...}] */
        json_t *pick = NULL;
        size_t i;
        json_t *e;
        json_array_foreach(t, i, e)
        {
            json_t *nm = json_object_get(e, "name"), *tp = json_object_get(e, "template");
            if (!json_is_string(tp)) {
                kn_diag_add(d, KN_ERROR, "%s: \"chat_template\"[%zu] has no \"template\" string", name, i);
                return KN_ERR_INVALID;
            }
            if (!pick || (json_is_string(nm) && strcmp(json_string_value(nm), "default") == 0))
                pick = tp;
            if (json_is_string(nm) && strcmp(json_string_value(nm), "default") == 0)
                break;
        }
        t = pick;
    }
    if (t && !json_is_null(t)) {
        if (!json_is_string(t)) {
            kn_diag_add(d, KN_ERROR, "%s: \"chat_template\" must be a string or a list of named templates", name);
            return KN_ERR_INVALID;
        }
        if (!(c->chat_template = dup(c, json_string_value(t))))
            return KN_ERR_NOMEM;
    }
    KN_TRY(token_field(c, root, "bos_token", name, d, &c->bos));
    return token_field(c, root, "eos_token", name, d, &c->eos);
}

kn_status kn_tokenizer_config_load_memory(const void *data, size_t size, const char *name, const kn_allocator *a,
                                          kn_diag *d, kn_tokenizer_config **out)
{
    *out = NULL;
    if (!name)
        name = "<memory>";
    if (!a)
        a = kn_default_allocator();
    kn_tokenizer_config *c = a->alloc(a->ctx, sizeof *c);
    if (!c) {
        kn_diag_add(d, KN_ERROR, "%s: out of memory", name);
        return KN_ERR_NOMEM;
    }
    memset(c, 0, sizeof *c);
    c->a = *a;
    json_error_t err;
    json_t *root = json_loadb(data, size, 0, &err);
    kn_status s;
    if (!root) {
        kn_diag_add(d, KN_ERROR, "%s:%d:%d: not valid JSON: %s", name, err.line, err.column, err.text);
        s = KN_ERR_INVALID;
    } else {
        s = parse(c, root, name, d);
        if (s == KN_ERR_NOMEM)
            kn_diag_add(d, KN_ERROR, "%s: out of memory", name);
    }
    json_decref(root);
    if (s != KN_OK) {
        kn_tokenizer_config_free(c);
        return s;
    }
    *out = c;
    return KN_OK;
}

kn_status kn_tokenizer_config_load_file(const char *path, const kn_allocator *a, kn_diag *d,
                                        kn_tokenizer_config **out)
{
    *out = NULL;
    if (!a)
        a = kn_default_allocator();
    char *buf;
    size_t len;
    kn_status s = kn_tok_read_file(path, a, d, (size_t)1 << 14, "", &buf, &len);
    if (s == KN_OK)
        s = kn_tokenizer_config_load_memory(buf, len, path, a, d, out);
    if (buf)
        a->free(a->ctx, buf);
    return s;
}

void kn_tokenizer_config_free(kn_tokenizer_config *c)
{
    if (!c)
        return;
    kn_allocator a = c->a;
    a.free(a.ctx, c->chat_template);
    a.free(a.ctx, c->bos);
    a.free(a.ctx, c->eos);
    a.free(a.ctx, c);
}

const char *kn_tokenizer_config_chat_template(const kn_tokenizer_config *c) { return c ? c->chat_template : NULL; }
const char *kn_tokenizer_config_bos_token(const kn_tokenizer_config *c) { return c ? c->bos : NULL; }
const char *kn_tokenizer_config_eos_token(const kn_tokenizer_config *c) { return c ? c->eos : NULL; }

/* ---- generation_config.json ---- */

static kn_status gen_id(json_t *v, const char *key, const char *name, kn_diag *d, int32_t *out)
{
    if (!v || json_is_null(v))
        return KN_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
        kn_diag_add(d, KN_ERROR, "%s: \"%s\" must be a token id (an integer >= 0)", name, key);
        return KN_ERR_INVALID;
    }
    *out = (int32_t)json_integer_value(v);
    return KN_OK;
}

static kn_status gen_float(json_t *root, const char *key, double lo, const char *name, kn_diag *d, float *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return KN_OK;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > 1e30) {
        kn_diag_add(d, KN_ERROR, "%s: \"%s\" must be a number >= %g", name, key, lo);
        return KN_ERR_INVALID;
    }
    *out = (float)json_number_value(v);
    return KN_OK;
}

static kn_status gen_int(json_t *root, const char *key, const char *name, kn_diag *d, int64_t *out)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v))
        return KN_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        kn_diag_add(d, KN_ERROR, "%s: \"%s\" must be an integer >= 0", name, key);
        return KN_ERR_INVALID;
    }
    *out = json_integer_value(v);
    return KN_OK;
}

static kn_status gen_parse(json_t *root, const char *name, kn_diag *d, kn_generation_config *g)
{
    if (!json_is_object(root)) {
        kn_diag_add(d, KN_ERROR, "%s: not a JSON object", name);
        return KN_ERR_INVALID;
    }
    json_t *eos = json_object_get(root, "eos_token_id");
    if (json_is_array(eos)) {
        if (json_array_size(eos) > KN_GEN_MAX_EOS) {
            kn_diag_add(d, KN_ERROR, "%s: more than %d eos_token_id values", name, KN_GEN_MAX_EOS);
            return KN_ERR_LIMIT;
        }
        size_t i;
        json_t *e;
        json_array_foreach(eos, i, e)
        {
            if (!json_is_integer(e)) {
                kn_diag_add(d, KN_ERROR, "%s: \"eos_token_id\" must be a token id or a list of them", name);
                return KN_ERR_INVALID;
            }
            KN_TRY(gen_id(e, "eos_token_id", name, d, &g->eos_ids[g->n_eos]));
            g->n_eos++;
        }
    } else if (eos && !json_is_null(eos)) {
        KN_TRY(gen_id(eos, "eos_token_id", name, d, &g->eos_ids[0]));
        g->n_eos = 1;
    }
    KN_TRY(gen_id(json_object_get(root, "bos_token_id"), "bos_token_id", name, d, &g->bos_id));
    KN_TRY(gen_id(json_object_get(root, "pad_token_id"), "pad_token_id", name, d, &g->pad_id));
    json_t *ds = json_object_get(root, "do_sample");
    if (ds && !json_is_null(ds)) {
        if (!json_is_boolean(ds)) {
            kn_diag_add(d, KN_ERROR, "%s: \"do_sample\" must be true or false", name);
            return KN_ERR_INVALID;
        }
        g->do_sample = json_is_true(ds);
    }
    KN_TRY(gen_float(root, "temperature", 0.0, name, d, &g->temperature));
    KN_TRY(gen_float(root, "top_p", 0.0, name, d, &g->top_p));
    KN_TRY(gen_float(root, "repetition_penalty", 0.0, name, d, &g->repetition_penalty));
    int64_t k = g->top_k;
    KN_TRY(gen_int(root, "top_k", name, d, &k));
    if (k > UINT32_MAX) {
        kn_diag_add(d, KN_ERROR, "%s: \"top_k\" too large", name);
        return KN_ERR_INVALID;
    }
    g->top_k = (uint32_t)k;
    KN_TRY(gen_int(root, "max_new_tokens", name, d, &g->max_new_tokens));
    return gen_int(root, "max_length", name, d, &g->max_length);
}

kn_status kn_generation_config_parse(const void *data, size_t size, const char *name, kn_diag *d,
                                     kn_generation_config *out)
{
    if (!name)
        name = "<memory>";
    memset(out, 0, sizeof *out);
    out->bos_id = out->pad_id = -1;
    out->temperature = 1.0f;
    out->top_k = 50;
    out->top_p = 1.0f;
    out->repetition_penalty = 1.0f;
    out->max_new_tokens = out->max_length = -1;
    json_error_t err;
    json_t *root = json_loadb(data, size, 0, &err);
    if (!root) {
        kn_diag_add(d, KN_ERROR, "%s:%d:%d: not valid JSON: %s", name, err.line, err.column, err.text);
        return KN_ERR_INVALID;
    }
    kn_generation_config g = *out;
    kn_status s = gen_parse(root, name, d, &g);
    json_decref(root);
    if (s == KN_OK)
        *out = g;
    return s;
}
