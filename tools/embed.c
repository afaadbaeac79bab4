/* kiln compile --tokenizer: finds, checks and reads the tokenizer files
 * that go into the plan's named-blob section. */
#include "embed.h"
#include "json.h"
#include "kiln/runtime.h"
#include "kiln/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir-of(`base`)/name, malloc'd. */
static char *sibling(const char *base, const char *name)
{
    const char *slash = strrchr(base, '/');
    size_t dl = slash ? (size_t)(slash - base) + 1 : 0;
    char *p = malloc(dl + strlen(name) + 1);
    if (p) {
        memcpy(p, base, dl);
        strcpy(p + dl, name);
    }
    return p;
}

static kn_status read_all(const char *path, kn_diag *d, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        kn_diag_add(d, KN_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    size_t cap = 0;
    char *buf = NULL;
    for (;;) {
        if (*len == cap) {
            cap = cap ? cap * 2 : 1 << 16;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                kn_diag_add(d, KN_ERROR, "%s: out of memory", path);
                return KN_ERR_NOMEM;
            }
            buf = nb;
        }
        size_t k = fread(buf + *len, 1, cap - *len, f);
        *len += k;
        if (k == 0)
            break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        kn_diag_add(d, KN_ERROR, "%s: read error", path);
        return KN_ERR_IO;
    }
    *out = buf;
    return KN_OK;
}

static void human(size_t n, char *buf, size_t len)
{
    if (n >= 10u << 20)
        snprintf(buf, len, "%zu MB", n >> 20);
    else if (n >= 10u << 10)
        snprintf(buf, len, "%zu kB", n >> 10);
    else
        snprintf(buf, len, "%zu bytes", n);
}

static kn_status add(kn_embed *e, const char *name, const char *path, kn_diag *d)
{
    size_t len;
    char *bytes;
    KN_TRY(read_all(path, d, &bytes, &len));
    kn_status s = KN_OK;
    char extra[64] = "";
    if (strcmp(name, KN_BLOB_TOKENIZER) == 0) {
        kn_tokenizer *t = NULL;
        s = kn_tokenizer_load_memory(bytes, len, path, NULL, d, &t);
        if (s == KN_OK)
            snprintf(extra, sizeof extra, ", %zu ids", kn_tokenizer_vocab_size(t));
        kn_tokenizer_free(t);
    } else if (strcmp(name, KN_BLOB_TOKENIZER_CONFIG) == 0) {
        kn_tokenizer_config *c = NULL;
        s = kn_tokenizer_config_load_memory(bytes, len, path, NULL, d, &c);
        const char *ct = s == KN_OK ? kn_tokenizer_config_chat_template(c) : NULL;
        if (ct) {
            /* a template outside kiln's Jinja subset is embedded anyway (a
             * program may render it itself), with a warning */
            kn_diag *cd = kn_diag_create(NULL, NULL);
            kn_status cs = cd ? kn_chat_template_check(ct, NULL, cd) : KN_ERR_NOMEM;
            if (cs == KN_ERR_NOMEM) {
                s = cs;
                kn_diag_add(d, KN_ERROR, "%s: out of memory", path);
            } else if (cs != KN_OK) {
                const char *why = kn_diag_size(cd) ? kn_diag_message(cd, 0, NULL) : kn_status_str(cs);
                if (strncmp(why, "error: ", 7) == 0)
                    why += 7;
                kn_diag_add(d, KN_WARNING, "%s: kiln cannot render its chat template (%s)", path, why);
            }
            kn_diag_destroy(cd);
            snprintf(extra, sizeof extra, cs == KN_OK ? ", chat template" : ", chat template not renderable");
        }
        kn_tokenizer_config_free(c);
    } else {
        kn_generation_config g;
        s = kn_generation_config_parse(bytes, len, path, d, &g);
        if (s == KN_OK && g.n_eos)
            snprintf(extra, sizeof extra, ", %u eos id%s", g.n_eos, g.n_eos == 1 ? "" : "s");
    }
    if (s != KN_OK) {
        free(bytes);
        if (s != KN_ERR_NOMEM)
            kn_diag_add(d, KN_ERROR, "%s: cannot embed it in the plan (--no-tokenizer leaves the tokenizer out)",
                        path);
        return s;
    }
    e->bytes[e->n] = bytes;
    e->items[e->n].name = name;
    e->items[e->n].data = bytes;
    e->items[e->n].size = len;
    e->n++;
    char sz[32];
    human(len, sz, sizeof sz);
    size_t used = strlen(e->summary);
    snprintf(e->summary + used, sizeof e->summary - used, "%s%s (%s%s)", used ? ", " : "", name, sz, extra);
    return KN_OK;
}

kn_status kn_embed_collect(const char *model, const char *tokenizer, bool disabled, kn_diag *d, kn_embed *e)
{
    memset(e, 0, sizeof *e);
    if (disabled)
        return KN_OK;
    char *tok = NULL;
    if (tokenizer) {
        struct stat st;
        int rc = stat(tokenizer, &st);
        if (rc != 0 || !S_ISREG(st.st_mode)) {
            kn_diag_add(d, KN_ERROR, "%s: --tokenizer: cannot open: %s", tokenizer,
                        rc != 0 ? strerror(errno) : "not a regular file");
            return KN_ERR_IO;
        }
        tok = strdup(tokenizer);
    } else {
        tok = sibling(model, KN_BLOB_TOKENIZER);
        if (tok && !is_file(tok)) {
            free(tok);
            return KN_OK; /* nothing next to the model: no tokenizer */
        }
    }
    if (!tok)
        return KN_ERR_NOMEM;
    kn_status s = add(e, KN_BLOB_TOKENIZER, tok, d);
    const char *more[] = {KN_BLOB_TOKENIZER_CONFIG, KN_BLOB_GENERATION_CONFIG};
    for (size_t i = 0; i < 2 && s == KN_OK; i++) {
        char *p = sibling(tok, more[i]);
        if (!p)
            s = KN_ERR_NOMEM;
        else if (is_file(p))
            s = add(e, more[i], p, d);
        free(p);
    }
    free(tok);
    if (s != KN_OK)
        kn_embed_free(e);
    return s;
}

void kn_embed_free(kn_embed *e)
{
    for (uint32_t i = 0; i < e->n; i++)
        free(e->bytes[i]);
    memset(e, 0, sizeof *e);
}

/* ---- kiln inspect ---- */

typedef struct tok_summary {
    kn_tokenizer *tok;
    kn_tokenizer_config *cfg;
    int32_t special[8];
    size_t n_special;
} tok_summary;

static void summarise(const kn_graph *plan, tok_summary *t)
{
    memset(t, 0, sizeof *t);
    kn_diag *d = kn_diag_create(NULL, NULL);
    const void *p;
    size_t n;
    if (kn_plan_blob(plan, KN_BLOB_TOKENIZER, &p, &n) == KN_OK && kn_plan_tokenizer(plan, NULL, d, &t->tok) == KN_OK) {
        size_t vocab = kn_tokenizer_vocab_size(t->tok);
        for (size_t id = 0; id < vocab; id++) {
            bool special;
            if (kn_tokenizer_token(t->tok, (int32_t)id, NULL, NULL, &special) == KN_OK && special) {
                if (t->n_special < sizeof t->special / sizeof t->special[0])
                    t->special[t->n_special] = (int32_t)id;
                t->n_special++;
            }
        }
    }
    if (kn_plan_blob(plan, KN_BLOB_TOKENIZER_CONFIG, &p, &n) == KN_OK)
        kn_plan_tokenizer_config(plan, NULL, d, &t->cfg);
    kn_diag_destroy(d);
}

static void summary_free(tok_summary *t)
{
    kn_tokenizer_free(t->tok);
    kn_tokenizer_config_free(t->cfg);
}

static size_t shown(const tok_summary *t)
{
    size_t max = sizeof t->special / sizeof t->special[0];
    return t->n_special < max ? t->n_special : max;
}

void kn_embed_print_text(const kn_graph *plan)
{
    size_t n = kn_plan_blob_count(plan);
    if (!n)
        return;
    printf("embedded (%zu):\n", n);
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t size;
        if (kn_plan_blob_at(plan, i, &name, NULL, &size) == KN_OK)
            printf("  %-28s %zu bytes\n", name, size);
    }
    tok_summary t;
    summarise(plan, &t);
    if (t.tok) {
        printf("tokenizer:   %s, %zu ids, %zu special token%s", kn_tokenizer_model_type(t.tok),
               kn_tokenizer_vocab_size(t.tok), t.n_special, t.n_special == 1 ? "" : "s");
        for (size_t i = 0; i < shown(&t); i++) {
            const char *b;
            size_t len;
            kn_tokenizer_token(t.tok, t.special[i], &b, &len, NULL);
            printf("%s %.*s (%d)", i ? "," : ":", (int)len, b, (int)t.special[i]);
        }
        printf("%s\n", t.n_special > shown(&t) ? ", ..." : "");
    }
    if (t.cfg) {
        const char *ct = kn_tokenizer_config_chat_template(t.cfg), *bos = kn_tokenizer_config_bos_token(t.cfg),
                   *eos = kn_tokenizer_config_eos_token(t.cfg);
        printf("chat:        %s", ct ? "template" : "no template");
        if (ct)
            printf(" (%zu bytes)", strlen(ct));
        printf(", bos %s%s%s, eos %s%s%s\n", bos ? "'" : "", bos ? bos : "none", bos ? "'" : "", eos ? "'" : "",
               eos ? eos : "none", eos ? "'" : "");
    }
    summary_free(&t);
}

void kn_embed_print_json(kn_json *j, const kn_graph *plan)
{
    size_t n = kn_plan_blob_count(plan);
    kn_json_key(j, "embedded");
    kn_json_arr_begin(j);
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t size;
        if (kn_plan_blob_at(plan, i, &name, NULL, &size) != KN_OK)
            continue;
        kn_json_obj_begin(j);
        kn_json_key(j, "name");
        kn_json_str(j, name);
        kn_json_key(j, "bytes");
        kn_json_uint(j, size);
        kn_json_obj_end(j);
    }
    kn_json_arr_end(j);
    tok_summary t;
    summarise(plan, &t);
    kn_json_key(j, "tokenizer");
    if (!t.tok) {
        kn_json_null(j);
    } else {
        kn_json_obj_begin(j);
        kn_json_key(j, "model");
        kn_json_str(j, kn_tokenizer_model_type(t.tok));
        kn_json_key(j, "vocab_size");
        kn_json_uint(j, kn_tokenizer_vocab_size(t.tok));
        kn_json_key(j, "n_special");
        kn_json_uint(j, t.n_special);
        kn_json_key(j, "special");
        kn_json_arr_begin(j);
        for (size_t i = 0; i < shown(&t); i++) {
            const char *b;
            size_t len;
            kn_tokenizer_token(t.tok, t.special[i], &b, &len, NULL);
            kn_json_obj_begin(j);
            kn_json_key(j, "id");
            kn_json_int(j, t.special[i]);
            kn_json_key(j, "content");
            kn_json_strn(j, b, len);
            kn_json_obj_end(j);
        }
        kn_json_arr_end(j);
        const char *ct = t.cfg ? kn_tokenizer_config_chat_template(t.cfg) : NULL;
        kn_json_key(j, "has_chat_template");
        kn_json_bool(j, ct != NULL);
        const char *bos = t.cfg ? kn_tokenizer_config_bos_token(t.cfg) : NULL;
        const char *eos = t.cfg ? kn_tokenizer_config_eos_token(t.cfg) : NULL;
        kn_json_key(j, "bos_token");
        if (bos)
            kn_json_str(j, bos);
        else
            kn_json_null(j);
        kn_json_key(j, "eos_token");
        if (eos)
            kn_json_str(j, eos);
        else
            kn_json_null(j);
        kn_json_obj_end(j);
    }
    summary_free(&t);
}
