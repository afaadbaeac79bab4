/* Chat templates: the subset of Jinja that Hugging Face tokenizer_config.json
 * templates use, rendered the way transformers does (trim_blocks and
 * lstrip_blocks on). The template is lexed and parsed into a tree first,
 * so every syntax error (and every unsupported construct) is reported with
 * its byte offset before anything is rendered. All memory comes from one
 * arena on the caller's allocator, freed at the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/chat_internal.h"

#define arena kn_chat_arena
#define MAX_DEPTH KN_CHAT_MAX_DEPTH

/* ---- arena ------------------------------------------------------------------ */

void *kn_chat_arena(cx *c, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (c->chunks && c->chunks->cap - c->chunks->used >= n) {
        void *p = c->chunks->data + c->chunks->used;
        c->chunks->used += n;
        return p;
    }
    size_t cap = n > 16384 ? n : 16384;
    kn_chat_chunk *k = c->a->alloc(c->a->ctx, sizeof *k + cap);
    if (!k) {
        if (c->status == KN_OK) {
            kn_diag_add(c->d, KN_ERROR, "chat template: out of memory");
            c->status = KN_ERR_NOMEM;
        }
        return NULL;
    }
    k->next = c->chunks;
    k->used = n;
    k->cap = cap;
    c->chunks = k;
    return k->data;
}

kn_status kn_chat_fail(cx *c, kn_status s, size_t off, const char *fmt, const char *arg, int arg_n)
{
    if (c->status == KN_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, fmt, arg_n, arg ? arg : "");
        kn_diag_add(c->d, KN_ERROR, "chat template: offset %zu: %s", off, msg);
        c->status = s;
    }
    return c->status;
}

/* ---- lexer ------------------------------------------------------------------- */

static bool push_tok(cx *c, tkind k, size_t off, const char *s, size_t n, int64_t i)
{
    if (c->n_toks == c->cap_toks) {
        size_t nc = c->cap_toks ? c->cap_toks * 2 : 256;
        tok *nt = arena(c, nc * sizeof *nt);
        if (!nt)
            return false;
        if (c->n_toks)
            memcpy(nt, c->toks, c->n_toks * sizeof *nt);
        c->toks = nt;
        c->cap_toks = nc;
    }
    c->toks[c->n_toks++] = (tok){k, off, s, n, i};
    return true;
}

static bool is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }
static bool is_ident(char ch, bool first)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || (!first && ch >= '0' && ch <= '9');
}

/* The text before a tag: whitespace control ('-') strips all trailing
 * whitespace; lstrip_blocks strips spaces/tabs back to a line start before
 * '{%' and '{#' (not with '+'). */
static bool push_text(cx *c, size_t start, size_t end, char tag, char mod)
{
    if (mod == '-') {
        while (end > start && is_space(c->src[end - 1]))
            end--;
    } else if ((tag == '%' || tag == '#') && mod != '+') {
        size_t e = end;
        while (e > start && (c->src[e - 1] == ' ' || c->src[e - 1] == '\t'))
            e--;
        if (e == 0 || c->src[e - 1] == '\n')
            end = e;
    }
    return end == start || push_tok(c, T_TEXT, start, c->src + start, end - start, 0);
}

static const char *ops2[] = {"==", "!=", "<=", ">=", "//", "**"};

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* One backslash escape of a string literal at s[*i] (the backslash), as
 * Python's unicode-escape reads it (Jinja's rule): \n \t \r \a \b \f \v
 * \\ \' \" \ooo \xHH \uHHHH \UHHHHHHHH, backslash-newline dropped, any
 * other kept with its backslash. Appends UTF-8 to buf; never more bytes
 * than it consumes. False for a malformed \x/\u/\U or a code point past
 * U+10FFFF. */
static bool unescape(const char *s, size_t len, size_t *i, char *buf, size_t *n)
{
    char e = s[*i + 1];
    *i += 2;
    const char *simple = "ntrabfv\\'\"", *to = "\n\t\r\a\b\f\v\\'\"";
    const char *hit = strchr(simple, e);
    if (hit && e) {
        buf[(*n)++] = to[hit - simple];
        return true;
    }
    if (e == '\n')
        return true;
    uint32_t cp = 0;
    if (e >= '0' && e <= '7') {
        cp = (uint32_t)(e - '0');
        for (int k = 0; k < 2 && *i < len && s[*i] >= '0' && s[*i] <= '7'; k++)
            cp = cp * 8 + (uint32_t)(s[(*i)++] - '0');
    } else if (e == 'x' || e == 'u' || e == 'U') {
        int digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        for (int k = 0; k < digits; k++) {
            int h = *i < len ? hexval(s[*i]) : -1;
            if (h < 0)
                return false;
            cp = cp * 16 + (uint32_t)h;
            (*i)++;
        }
        if (cp > 0x10FFFF)
            return false;
    } else {
        buf[(*n)++] = '\\';
        buf[(*n)++] = e;
        return true;
    }
    /* UTF-8 (surrogates as their 3-byte forms, like Python's surrogatepass) */
    if (cp < 0x80) {
        buf[(*n)++] = (char)cp;
    } else if (cp < 0x800) {
        buf[(*n)++] = (char)(0xC0 | cp >> 6);
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        buf[(*n)++] = (char)(0xE0 | cp >> 12);
        buf[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        buf[(*n)++] = (char)(0xF0 | cp >> 18);
        buf[(*n)++] = (char)(0x80 | (cp >> 12 & 0x3F));
        buf[(*n)++] = (char)(0x80 | (cp >> 6 & 0x3F));
        buf[(*n)++] = (char)(0x80 | (cp & 0x3F));
    }
    return true;
}

/* Tokens inside a tag up to its end ("}}", "%}"); returns the offset after
 * the end marker and the whitespace control sign before it. */
static kn_status lex_tag(cx *c, size_t *p, char close, char *end_mod)
{
    const char *s = c->src;
    size_t i = *p;
    for (;;) {
        while (i < c->len && is_space(s[i]))
            i++;
        if (i >= c->len)
            return BAD(c, i, "unterminated tag");
        if ((s[i] == '-' || s[i] == '+') && i + 2 < c->len + 0 && s[i + 1] == close && s[i + 2] == '}') {
            *end_mod = s[i];
            *p = i + 3;
            return KN_OK;
        }
        if (s[i] == close && i + 1 < c->len && s[i + 1] == '}') {
            *end_mod = 0;
            *p = i + 2;
            return KN_OK;
        }
        size_t st = i;
        if (s[i] == '\'' || s[i] == '"') {
            char q = s[i++];
            char *buf = arena(c, c->len - i + 1);
            if (!buf)
                return c->status;
            size_t n = 0;
            while (i < c->len && s[i] != q) {
                if (s[i] == '\\' && i + 1 < c->len) {
                    size_t at = i;
                    if (!unescape(s, c->len, &i, buf, &n))
                        return BAD(c, at, "bad escape in a string literal");
                } else {
                    buf[n++] = s[i++];
                }
            }
            if (i >= c->len)
                return BAD(c, st, "unterminated string literal");
            i++;
            buf[n] = 0;
            if (!push_tok(c, T_STR, st, buf, n, 0))
                return c->status;
        } else if (s[i] >= '0' && s[i] <= '9') {
            int64_t v = 0;
            while (i < c->len && s[i] >= '0' && s[i] <= '9') {
                int dg = s[i++] - '0';
                if (v > (INT64_MAX - dg) / 10)
                    return BAD(c, st, "integer literal too large");
                v = v * 10 + dg;
            }
            if (i < c->len && (s[i] == '.' || is_ident(s[i], true)))
                return UNSUP(c, st, "unsupported number literal '%.*s'", s + st, i + 1 - st);
            if (!push_tok(c, T_INT, st, s + st, i - st, v))
                return c->status;
        } else if (is_ident(s[i], true)) {
            while (i < c->len && is_ident(s[i], false))
                i++;
            if (!push_tok(c, T_NAME, st, s + st, i - st, 0))
                return c->status;
        } else {
            size_t n = 1;
            for (size_t k = 0; k < sizeof ops2 / sizeof ops2[0]; k++)
                if (i + 1 < c->len && s[i] == ops2[k][0] && s[i + 1] == ops2[k][1])
                    n = 2;
            if (n == 1 && !strchr("+-*/%~|.,:()[]{}<>=!", s[i]))
                return BADS(c, i, "unexpected character '%.*s'", s + i, 1);
            if (!push_tok(c, T_OP, st, s + st, n, 0))
                return c->status;
            i += n;
        }
    }
}

static kn_status lex(cx *c)
{
    const char *s = c->src;
    size_t i = 0, text = 0;
    bool skip_ws = false, skip_nl = false;
    while (i <= c->len) {
        if (skip_ws) {
            while (i < c->len && is_space(s[i]))
                i++;
            text = i;
            skip_ws = false;
        } else if (skip_nl) {
            if (i < c->len && s[i] == '\n')
                i++;
            text = i;
            skip_nl = false;
        }
        const char *open = NULL;
        for (size_t k = i; k + 1 < c->len; k++)
            if (s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')) {
                open = s + k;
                break;
            }
        if (!open) {
            if (text < c->len && !push_tok(c, T_TEXT, text, s + text, c->len - text, 0))
                return c->status;
            break;
        }
        size_t at = (size_t)(open - s);
        char tag = open[1];
        char mod = at + 2 < c->len && (s[at + 2] == '-' || s[at + 2] == '+') ? s[at + 2] : 0;
        if (!push_text(c, text, at, tag, mod))
            return c->status;
        size_t p = at + 2 + (mod != 0);
        char end_mod = 0;
        if (tag == '#') {
            const char *e = NULL;
            for (size_t k = p; k + 1 < c->len; k++)
                if (s[k] == '#' && s[k + 1] == '}') {
                    e = s + k;
                    break;
                }
            if (!e)
                return BAD(c, at, "unterminated comment");
            end_mod = e > s + p && (e[-1] == '-' || e[-1] == '+') ? e[-1] : 0;
            p = (size_t)(e - s) + 2;
        } else {
            if (!push_tok(c, tag == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN, at, NULL, 0, 0))
                return c->status;
            KN_TRY(lex_tag(c, &p, tag == '{' ? '}' : '%', &end_mod));
            if (!push_tok(c, tag == '{' ? T_VAR_END : T_BLOCK_END, p - 2, NULL, 0, 0))
                return c->status;
        }
        skip_ws = end_mod == '-';
        skip_nl = !skip_ws && tag != '{' && end_mod != '+'; /* trim_blocks */
        i = text = p;
    }
    return push_tok(c, T_EOF, c->len, NULL, 0, 0) ? KN_OK : c->status;
}

/* ---- parser ------------------------------------------------------------------ */

static tok *peek(cx *c) { return &c->toks[c->pos]; }
static bool is_op(const tok *t, const char *op) { return t->k == T_OP && t->n == strlen(op) && !memcmp(t->s, op, t->n); }
static bool is_kw(const tok *t, const char *kw) { return t->k == T_NAME && t->n == strlen(kw) && !memcmp(t->s, kw, t->n); }

static bool accept_op(cx *c, const char *op)
{
    if (!is_op(peek(c), op))
        return false;
    c->pos++;
    return true;
}

static bool accept_kw(cx *c, const char *kw)
{
    if (!is_kw(peek(c), kw))
        return false;
    c->pos++;
    return true;
}

static kn_status expect_op(cx *c, const char *op)
{
    if (accept_op(c, op))
        return KN_OK;
    return BADS(c, peek(c)->off, "expected '%.*s'", op, strlen(op));
}

static ex *node(cx *c, ekind k, size_t off)
{
    ex *e = arena(c, sizeof *e);
    if (e) {
        memset(e, 0, sizeof *e);
        e->k = k;
        e->off = off;
    }
    return e;
}

static ex *parse_expr(cx *c);
static ex *parse_or(cx *c);

static ex *bin(cx *c, ekind k, const tok *t, ex *a, ex *b)
{
    if (!a || !b)
        return NULL;
    ex *e = node(c, k, t->off);
    if (e) {
        e->a = a;
        e->b = b;
        e->s = t->s;
        e->n = t->n;
    }
    return e;
}

static const char *filters[] = {"length", "count", "trim", "tojson", "string", "lower", "upper"};
static const char *tests[] = {"defined", "undefined", "none", "string", "number", "boolean", "true", "false"};

static bool in_list(const char *s, size_t n, const char **list, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (strlen(list[i]) == n && !memcmp(list[i], s, n))
            return true;
    return false;
}

static ex *parse_primary(cx *c)
{
    tok *t = peek(c);
    ex *e = NULL;
    if (t->k == T_STR || t->k == T_INT) {
        c->pos++;
        e = node(c, t->k == T_STR ? E_STR : E_INT, t->off);
        if (e) {
            e->s = t->s;
            e->n = t->n;
            e->i = t->i;
        }
        /* adjacent string literals concatenate */
        while (e && e->k == E_STR && peek(c)->k == T_STR) {
            tok *u = &c->toks[c->pos++];
            char *buf = arena(c, e->n + u->n + 1);
            if (!buf)
                return NULL;
            memcpy(buf, e->s, e->n);
            memcpy(buf + e->n, u->s, u->n + 1);
            e->s = buf;
            e->n += u->n;
        }
        return e;
    }
    if (t->k == T_NAME) {
        c->pos++;
        if (is_kw(t, "true") || is_kw(t, "True") || is_kw(t, "false") || is_kw(t, "False")) {
            if ((e = node(c, E_BOOL, t->off)))
                e->i = t->s[0] == 't' || t->s[0] == 'T';
        } else if (is_kw(t, "none") || is_kw(t, "None")) {
            e = node(c, E_NONE, t->off);
        } else if ((e = node(c, E_NAME, t->off))) {
            e->s = t->s;
            e->n = t->n;
        }
        return e;
    }
    if (is_op(t, "(")) {
        c->pos++;
        e = parse_expr(c);
        if (e && expect_op(c, ")") != KN_OK)
            return NULL;
        return e;
    }
    if (is_op(t, "[") || is_op(t, "{"))
        UNSUP(c, t->off, "unsupported %.*s literal", is_op(t, "[") ? "list" : "dict", 4);
    else if (t->k == T_EOF || t->k == T_VAR_END || t->k == T_BLOCK_END)
        BAD(c, t->off, "expression expected");
    else
        BADS(c, t->off, "unexpected '%.*s'", t->s ? t->s : "end of tag", t->s ? t->n : 10);
    return NULL;
}

static ex *parse_postfix(cx *c)
{
    ex *e = parse_primary(c);
    while (e) {
        tok *t = peek(c);
        if (accept_op(c, ".")) {
            tok *nm = peek(c);
            if (nm->k != T_NAME) {
                BAD(c, nm->off, "attribute name expected after '.'");
                return NULL;
            }
            c->pos++;
            ex *x = node(c, E_ATTR, t->off);
            if (!x)
                return NULL;
            x->a = e;
            x->s = nm->s;
            x->n = nm->n;
            e = x;
        } else if (accept_op(c, "[")) {
            ex *x = node(c, E_INDEX, t->off);
            if (!x)
                return NULL;
            x->a = e;
            if (!is_op(peek(c), ":") && !(x->b = parse_expr(c)))
                return NULL;
            if (accept_op(c, ":")) {
                x->k = E_SLICE;
                if (!is_op(peek(c), "]") && !(x->c = parse_expr(c)))
                    return NULL;
                if (is_op(peek(c), ":")) {
                    UNSUP(c, peek(c)->off, "unsupported slice step%.*s", "", 0);
                    return NULL;
                }
            } else if (!x->b) {
                BAD(c, peek(c)->off, "index expected");
                return NULL;
            }
            if (expect_op(c, "]") != KN_OK)
                return NULL;
            e = x;
        } else if (accept_op(c, "(")) {
            ex *x = node(c, E_CALL, t->off);
            ex *args[8];
            if (!x)
                return NULL;
            x->a = e;
            while (!accept_op(c, ")")) {
                if (x->n_args && expect_op(c, ",") != KN_OK)
                    return NULL;
                if (peek(c)->k == T_NAME && is_op(&c->toks[c->pos + 1], "=")) {
                    UNSUP(c, peek(c)->off, "unsupported keyword argument '%.*s'", peek(c)->s, peek(c)->n);
                    return NULL;
                }
                if (x->n_args == 8) {
                    UNSUP(c, peek(c)->off, "more than 8 arguments%.*s", "", 0);
                    return NULL;
                }
                if (!(args[x->n_args++] = parse_expr(c)))
                    return NULL;
            }
            x->args = arena(c, sizeof *args * (size_t)(x->n_args + 1));
            if (!x->args)
                return NULL;
            memcpy(x->args, args, sizeof *args * (size_t)x->n_args);
            e = x;
        } else {
            return e;
        }
    }
    return NULL;
}

static ex *parse_filtered(cx *c)
{
    ex *e = parse_postfix(c);
    while (e && (is_op(peek(c), "|") || is_kw(peek(c), "is"))) {
        bool filter = is_op(peek(c), "|");
        tok *t = &c->toks[c->pos++];
        bool neg = !filter && accept_kw(c, "not");
        tok *nm = peek(c);
        if (nm->k != T_NAME) {
            BAD(c, nm->off, "filter or test name expected");
            return NULL;
        }
        if (filter ? !in_list(nm->s, nm->n, filters, sizeof filters / sizeof *filters)
                   : !in_list(nm->s, nm->n, tests, sizeof tests / sizeof *tests)) {
            UNSUP(c, nm->off, filter ? "unsupported filter '%.*s'" : "unsupported test '%.*s'", nm->s, nm->n);
            return NULL;
        }
        c->pos++;
        if (is_op(peek(c), "(")) {
            UNSUP(c, peek(c)->off, "unsupported arguments to '%.*s'", nm->s, nm->n);
            return NULL;
        }
        ex *x = node(c, filter ? E_FILTER : E_TEST, t->off);
        if (!x)
            return NULL;
        x->a = e;
        x->s = nm->s;
        x->n = nm->n;
        x->i = neg;
        e = x;
    }
    return e;
}

static ex *parse_unary(cx *c)
{
    tok *t = peek(c);
    if (is_op(t, "-") || is_op(t, "+")) {
        c->pos++;
        if (++c->depth > MAX_DEPTH) {
            BAD(c, t->off, "expression nested too deeply");
            return NULL;
        }
        ex *a = parse_unary(c);
        c->depth--;
        if (!a || is_op(t, "+"))
            return a;
        ex *e = node(c, E_NEG, t->off);
        if (e)
            e->a = a;
        return e;
    }
    return parse_filtered(c);
}

static ex *parse_mul(cx *c)
{
    ex *e = parse_unary(c);
    while (e && (is_op(peek(c), "*") || is_op(peek(c), "/") || is_op(peek(c), "//") || is_op(peek(c), "%") ||
                 is_op(peek(c), "**"))) {
        tok *t = &c->toks[c->pos++];
        e = bin(c, E_BIN, t, e, parse_unary(c));
    }
    return e;
}

static ex *parse_add(cx *c)
{
    ex *e = parse_mul(c);
    while (e && (is_op(peek(c), "+") || is_op(peek(c), "-"))) {
        tok *t = &c->toks[c->pos++];
        e = bin(c, E_BIN, t, e, parse_mul(c));
    }
    return e;
}

static ex *parse_concat(cx *c)
{
    ex *e = parse_add(c);
    while (e && is_op(peek(c), "~")) {
        tok *t = &c->toks[c->pos++];
        e = bin(c, E_BIN, t, e, parse_add(c));
    }
    return e;
}

static ex *parse_compare(cx *c)
{
    ex *e = parse_concat(c);
    for (;;) {
        tok *t = peek(c);
        if (!e)
            return NULL;
        if (is_op(t, "==") || is_op(t, "!=") || is_op(t, "<") || is_op(t, ">") || is_op(t, "<=") || is_op(t, ">=") ||
            is_kw(t, "in")) {
            c->pos++;
            e = bin(c, E_BIN, t, e, parse_concat(c));
        } else if (is_kw(t, "not") && is_kw(&c->toks[c->pos + 1], "in")) {
            const tok *in_tok = &c->toks[c->pos + 1];
            c->pos += 2;
            ex *in = bin(c, E_BIN, in_tok, e, parse_concat(c));
            if (!in || !(e = node(c, E_NOT, t->off)))
                return NULL;
            e->a = in;
        } else {
            return e;
        }
    }
}

static ex *parse_not(cx *c)
{
    tok *t = peek(c);
    if (accept_kw(c, "not")) {
        if (++c->depth > MAX_DEPTH) {
            BAD(c, t->off, "expression nested too deeply");
            return NULL;
        }
        ex *a = parse_not(c);
        c->depth--;
        ex *e = a ? node(c, E_NOT, t->off) : NULL;
        if (e)
            e->a = a;
        return e;
    }
    return parse_compare(c);
}

static ex *parse_and(cx *c)
{
    ex *e = parse_not(c);
    while (e && is_kw(peek(c), "and")) {
        tok *t = &c->toks[c->pos++];
        e = bin(c, E_AND, t, e, parse_not(c));
    }
    return e;
}

static ex *parse_or(cx *c)
{
    ex *e = parse_and(c);
    while (e && is_kw(peek(c), "or")) {
        tok *t = &c->toks[c->pos++];
        e = bin(c, E_OR, t, e, parse_and(c));
    }
    return e;
}

/* expr := or ['if' or ['else' expr]] */
static ex *parse_expr(cx *c)
{
    tok *t = peek(c);
    if (++c->depth > MAX_DEPTH) {
        BAD(c, t->off, "expression nested too deeply");
        return NULL;
    }
    ex *e = parse_or(c);
    if (e && is_kw(peek(c), "if")) {
        tok *it = &c->toks[c->pos++];
        ex *x = node(c, E_COND, it->off);
        if (!x || !(x->a = parse_or(c)))
            e = NULL;
        else {
            x->b = e;
            if (accept_kw(c, "else") && !(x->c = parse_expr(c)))
                x = NULL;
            e = x;
        }
    }
    c->depth--;
    return e;
}

/* ---- statements ------------------------------------------------------------------ */

static st *snode(cx *c, skind k, size_t off)
{
    st *s = arena(c, sizeof *s);
    if (s) {
        memset(s, 0, sizeof *s);
        s->k = k;
        s->off = off;
    }
    return s;
}

static kn_status end_block(cx *c)
{
    tok *t = peek(c);
    if (t->k == T_BLOCK_END) {
        c->pos++;
        return KN_OK;
    }
    if (t->k == T_NAME || t->k == T_OP)
        return BADS(c, t->off, "unexpected '%.*s' in a block tag", t->s, t->n);
    return BAD(c, t->off, "'%%}' expected");
}

/* Parses statements until a block tag whose keyword is one of `stops`
 * (NULL-terminated; NULL: the end of the template); *stop receives it
 * with c->pos just after the keyword. */
static kn_status parse_body(cx *c, const char *const *stops, st **out, const tok **stop)
{
    st *head = NULL, **tail = &head;
    *out = NULL;
    if (++c->depth > MAX_DEPTH)
        return BAD(c, peek(c)->off, "blocks nested too deeply");
    for (;;) {
        tok *t = &c->toks[c->pos];
        st *s = NULL;
        if (t->k == T_EOF) {
            if (stops)
                return BADS(c, t->off, "unexpected end of template: '{%% %.*s %%}' expected", stops[0],
                            strlen(stops[0]));
            break;
        }
        c->pos++;
        if (t->k == T_TEXT) {
            if (!(s = snode(c, S_TEXT, t->off)))
                return c->status;
            s->s = t->s;
            s->n = t->n;
        } else if (t->k == T_VAR_BEGIN) {
            if (!(s = snode(c, S_OUT, t->off)) || !(s->e = parse_expr(c)))
                return c->status;
            if (peek(c)->k != T_VAR_END)
                return BAD(c, peek(c)->off, "'}}' expected");
            c->pos++;
        } else if (t->k == T_BLOCK_BEGIN) {
            tok *kw = peek(c);
            if (kw->k != T_NAME)
                return BAD(c, kw->off, "statement keyword expected");
            for (size_t i = 0; stops && stops[i]; i++)
                if (is_kw(kw, stops[i])) {
                    c->pos++;
                    *stop = kw;
                    c->depth--;
                    *tail = NULL;
                    *out = head;
                    return KN_OK;
                }
            c->pos++;
            if (is_kw(kw, "if")) {
                if (!(s = snode(c, S_IF, kw->off)) || !(s->e = parse_expr(c)))
                    return c->status;
                KN_TRY(end_block(c));
                st *cur = s;
                for (;;) {
                    static const char *const if_stops[] = {"endif", "elif", "else", NULL}; /* [0]: in messages */
                    const tok *sp;
                    KN_TRY(parse_body(c, if_stops, &cur->body, &sp));
                    if (is_kw(sp, "endif"))
                        break;
                    if (is_kw(sp, "else")) {
                        static const char *const else_stops[] = {"endif", NULL};
                        KN_TRY(end_block(c));
                        KN_TRY(parse_body(c, else_stops, &cur->els, &sp));
                        break;
                    }
                    st *el = snode(c, S_IF, sp->off); /* elif: an if in the else branch */
                    if (!el || !(el->e = parse_expr(c)))
                        return c->status;
                    KN_TRY(end_block(c));
                    cur->els = el;
                    cur = el;
                }
                KN_TRY(end_block(c));
            } else if (is_kw(kw, "for")) {
                tok *v = peek(c);
                if (v->k != T_NAME)
                    return BAD(c, v->off, "loop variable expected");
                c->pos++;
                if (is_op(peek(c), ","))
                    return UNSUP(c, peek(c)->off, "unsupported: more than one loop variable%.*s", "", 0);
                if (!accept_kw(c, "in"))
                    return BAD(c, peek(c)->off, "'in' expected");
                if (!(s = snode(c, S_FOR, kw->off)) || !(s->e = parse_or(c)))
                    return c->status;
                s->s = v->s;
                s->n = v->n;
                if (is_kw(peek(c), "if") || is_kw(peek(c), "recursive"))
                    return UNSUP(c, peek(c)->off, "unsupported: 'for ... %.*s'", peek(c)->s, peek(c)->n);
                KN_TRY(end_block(c));
                static const char *const for_stops[] = {"endfor", "else", NULL};
                const tok *sp;
                KN_TRY(parse_body(c, for_stops, &s->body, &sp));
                if (is_kw(sp, "else"))
                    return UNSUP(c, sp->off, "unsupported: 'for ... else'%.*s", "", 0);
                KN_TRY(end_block(c));
            } else if (is_kw(kw, "set")) {
                tok *v = peek(c);
                if (v->k != T_NAME)
                    return BAD(c, v->off, "variable name expected");
                c->pos++;
                if (is_op(peek(c), ".") || is_op(peek(c), ","))
                    return UNSUP(c, peek(c)->off, "unsupported: 'set' of an attribute or several names%.*s", "", 0);
                if (!is_op(peek(c), "="))
                    return UNSUP(c, peek(c)->off, "unsupported: block 'set' (without '=')%.*s", "", 0);
                c->pos++;
                if (!(s = snode(c, S_SET, kw->off)) || !(s->e = parse_expr(c)))
                    return c->status;
                s->s = v->s;
                s->n = v->n;
                KN_TRY(end_block(c));
            } else if (is_kw(kw, "elif") || is_kw(kw, "else") || is_kw(kw, "endif") || is_kw(kw, "endfor")) {
                return BADS(c, kw->off, "'%.*s' without a matching block", kw->s, kw->n);
            } else {
                return UNSUP(c, kw->off, "unsupported statement '%.*s'", kw->s, kw->n);
            }
        } else {
            return BAD(c, t->off, "unexpected token");
        }
        *tail = s;
        tail = &s->next;
    }
    c->depth--;
    *out = head;
    return KN_OK;
}

/* ---- public API ------------------------------------------------------------------ */

static void cx_free(cx *c)
{
    while (c->chunks) {
        kn_chat_chunk *n = c->chunks->next;
        c->a->free(c->a->ctx, c->chunks);
        c->chunks = n;
    }
    if (c->out)
        c->a->free(c->a->ctx, c->out);
    c->out = NULL;
}

static kn_status parse(cx *c, const char *tmpl, const kn_allocator *a, kn_diag *d, st **body)
{
    memset(c, 0, sizeof *c);
    c->a = a ? a : kn_default_allocator();
    c->d = d;
    if (!tmpl) {
        kn_diag_add(d, KN_ERROR, "chat template: no template");
        return c->status = KN_ERR_INVALID;
    }
    c->src = tmpl;
    c->len = strlen(tmpl);
    KN_TRY(lex(c));
    return parse_body(c, NULL, body, NULL);
}

kn_status kn_chat_template_check(const char *tmpl, const kn_allocator *a, kn_diag *d)
{
    cx c;
    st *body;
    kn_status s = parse(&c, tmpl, a, d, &body);
    cx_free(&c);
    return s;
}

kn_status kn_chat_template_apply(const char *tmpl, const kn_chat_message *messages, size_t n_messages,
                                 bool add_generation_prompt, const char *bos_token, const char *eos_token,
                                 const kn_allocator *a, kn_diag *d, char **out, size_t *out_len)
{
    if (out)
        *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!out || (n_messages && !messages)) {
        kn_diag_add(d, KN_ERROR, "chat template: %s is NULL", !out ? "out" : "messages");
        return KN_ERR_INVALID;
    }
    for (size_t i = 0; i < n_messages; i++)
        if (!messages[i].role || !messages[i].content) {
            kn_diag_add(d, KN_ERROR, "chat template: message %zu has no %s", i, messages[i].role ? "content" : "role");
            return KN_ERR_INVALID;
        }
    cx c;
    st *body;
    kn_status s = parse(&c, tmpl, a, d, &body);
    if (s == KN_OK)
        s = kn_chat_render(&c, body, messages, n_messages, add_generation_prompt, bos_token, eos_token);
    if (s == KN_OK && !c.out) { /* empty output: still a string */
        c.out = c.a->alloc(c.a->ctx, 1);
        if (!c.out) {
            kn_diag_add(d, KN_ERROR, "chat template: out of memory");
            s = KN_ERR_NOMEM;
        }
    }
    if (s == KN_OK) {
        c.out[c.out_n] = 0;
        *out = c.out;
        if (out_len)
            *out_len = c.out_n;
        c.out = NULL;
    }
    cx_free(&c);
    return s;
}
