/* Chat templates: rendering the tree chat_template.c parsed. Values follow
 * Jinja's (Python's) rules where templates rely on them: undefined names
 * and missing attributes are falsy and print as "", `and`/`or` return an
 * operand, True == 1, negative indices count from the end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/tokenizer/chat_internal.h"

#define MAX_EVAL_DEPTH 256

static const char *kind_name(vkind k)
{
    static const char *names[] = {"undefined", "none", "boolean", "integer", "string", "list", "message", "loop"};
    return names[k];
}

/* ---- output and variables --------------------------------------------------------- */

static kn_status emit(cx *c, const char *s, size_t n, size_t off)
{
    if (!n)
        return KN_OK;
    if (n > KN_CHAT_MAX_OUTPUT - c->out_n)
        return kn_chat_fail(c, KN_ERR_LIMIT, off, "output larger than 64 MiB%.*s", "", 0);
    if (c->out_n + n + 1 > c->out_cap) {
        size_t nc = c->out_cap ? c->out_cap : 1024;
        while (nc < c->out_n + n + 1)
            nc *= 2;
        char *p = c->a->realloc(c->a->ctx, c->out, nc);
        if (!p) {
            kn_diag_add(c->d, KN_ERROR, "chat template: out of memory");
            return c->status = KN_ERR_NOMEM;
        }
        c->out = p;
        c->out_cap = nc;
    }
    memcpy(c->out + c->out_n, s, n);
    c->out_n += n;
    return KN_OK;
}

static kn_status push_var(cx *c, const char *name, size_t n, val v)
{
    if (c->n_vars == c->cap_vars) {
        size_t nc = c->cap_vars ? c->cap_vars * 2 : 32;
        var *nv = kn_chat_arena(c, nc * sizeof *nv);
        if (!nv)
            return c->status;
        if (c->n_vars)
            memcpy(nv, c->vars, c->n_vars * sizeof *nv);
        c->vars = nv;
        c->cap_vars = nc;
    }
    c->vars[c->n_vars++] = (var){name, n, v};
    return KN_OK;
}

typedef struct globals {
    const kn_chat_message *msgs;
    size_t n_msgs;
    bool add_gen;
    const char *bos, *eos;
} globals;

static bool name_is(const char *s, size_t n, const char *want) { return strlen(want) == n && !memcmp(s, want, n); }

static val str_val(const char *s, size_t n) { return (val){V_STR, s, n, 0, NULL, NULL}; }
static val int_val(int64_t i) { return (val){V_INT, NULL, 0, i, NULL, NULL}; }
static val bool_val(bool b) { return (val){V_BOOL, NULL, 0, b, NULL, NULL}; }
static const val undef = {V_UNDEF, NULL, 0, 0, NULL, NULL};

static val lookup(cx *c, const globals *g, const char *s, size_t n)
{
    for (size_t i = c->n_vars; i-- > 0;)
        if (c->vars[i].n == n && !memcmp(c->vars[i].name, s, n))
            return c->vars[i].v;
    if (name_is(s, n, "messages"))
        return (val){V_LIST, NULL, g->n_msgs, 0, g->msgs, NULL};
    if (name_is(s, n, "add_generation_prompt"))
        return bool_val(g->add_gen);
    if (name_is(s, n, "bos_token") && g->bos)
        return str_val(g->bos, strlen(g->bos));
    if (name_is(s, n, "eos_token") && g->eos)
        return str_val(g->eos, strlen(g->eos));
    return undef;
}

/* ---- value helpers ------------------------------------------------------------------ */

static bool truthy(const val *v)
{
    switch (v->k) {
    case V_UNDEF:
    case V_NONE: return false;
    case V_BOOL:
    case V_INT: return v->i != 0;
    case V_STR:
    case V_LIST: return v->n != 0;
    default: return true;
    }
}

static bool is_num(const val *v) { return v->k == V_INT || v->k == V_BOOL; }

static bool eq(const val *a, const val *b)
{
    if (is_num(a) && is_num(b))
        return a->i == b->i;
    if (a->k != b->k)
        return false;
    switch (a->k) {
    case V_UNDEF:
    case V_NONE: return true;
    case V_STR: return a->n == b->n && !memcmp(a->s, b->s, a->n);
    case V_MSG: return !strcmp(a->m->role, b->m->role) && !strcmp(a->m->content, b->m->content);
    case V_LIST:
        if (a->n != b->n)
            return false;
        for (size_t i = 0; i < a->n; i++) {
            val x = {V_MSG, NULL, 0, 0, a->m + i, NULL}, y = {V_MSG, NULL, 0, 0, b->m + i, NULL};
            if (!eq(&x, &y))
                return false;
        }
        return true;
    default: return a->loop == b->loop;
    }
}

/* The printed form (str(x) in Jinja); lists, messages and loops are
 * refused. */
static kn_status to_str(cx *c, const val *v, size_t off, const char **s, size_t *n)
{
    char tmp[32];
    switch (v->k) {
    case V_STR: *s = v->s, *n = v->n; return KN_OK;
    case V_UNDEF: *s = "", *n = 0; return KN_OK;
    case V_NONE: *s = "None", *n = 4; return KN_OK;
    case V_BOOL: *s = v->i ? "True" : "False", *n = v->i ? 4 : 5; return KN_OK;
    case V_INT: {
        *n = (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)v->i);
        char *p = kn_chat_arena(c, *n + 1);
        if (!p)
            return c->status;
        memcpy(p, tmp, *n + 1);
        *s = p;
        return KN_OK;
    }
    default:
        return UNSUP(c, off, "unsupported: printing a %.*s value", kind_name(v->k), strlen(kind_name(v->k)));
    }
}

static size_t n_chars(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

/* Byte offset of code point `ch` (clamped to the end). */
static size_t char_off(const char *s, size_t n, size_t ch)
{
    size_t i = 0;
    for (; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80 && ch-- == 0)
            return i;
    return n;
}

static bool ws(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' || ch == '\v'; }

static val strip(const val *v, bool left, bool right)
{
    size_t b = 0, e = v->n;
    while (left && b < e && ws(v->s[b]))
        b++;
    while (right && e > b && ws(v->s[e - 1]))
        e--;
    return str_val(v->s + b, e - b);
}

static kn_status concat(cx *c, const char *a, size_t an, const char *b, size_t bn, val *out)
{
    char *p = kn_chat_arena(c, an + bn + 1);
    if (!p)
        return c->status;
    memcpy(p, a, an);
    memcpy(p + an, b, bn);
    p[an + bn] = 0;
    *out = str_val(p, an + bn);
    return KN_OK;
}

/* upper()/lower() of ASCII letters (other characters unchanged). */
static kn_status change_case(cx *c, const val *v, bool up, val *out)
{
    char *p = kn_chat_arena(c, v->n + 1);
    if (!p)
        return c->status;
    for (size_t i = 0; i < v->n; i++) {
        char ch = v->s[i];
        p[i] = up && ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : !up && ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
    }
    *out = str_val(p, v->n);
    return KN_OK;
}

static bool contains(const char *h, size_t hn, const char *nd, size_t nn)
{
    for (size_t i = 0; nn <= hn && i <= hn - nn; i++)
        if (!memcmp(h + i, nd, nn))
            return true;
    return false;
}

/* ---- tojson (transformers' ensure_ascii=False) ------------------------------------------- */

static kn_status json_str(cx *c, const char *s, size_t n, size_t off)
{
    KN_TRY(emit(c, "\"", 1, off));
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        const char *e = NULL;
        switch (ch) {
        case '"': e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        default:
            if (ch < 0x20) {
                snprintf(esc, sizeof esc, "\\u%04x", ch);
                e = esc;
            }
        }
        KN_TRY(e ? emit(c, e, strlen(e), off) : emit(c, s + i, 1, off));
    }
    return emit(c, "\"", 1, off);
}

static kn_status json_val(cx *c, const val *v, size_t off)
{
    switch (v->k) {
    case V_STR: return json_str(c, v->s, v->n, off);
    case V_UNDEF:
    case V_NONE: return emit(c, "null", 4, off);
    case V_BOOL: return emit(c, v->i ? "true" : "false", v->i ? 4 : 5, off);
    case V_INT: {
        const char *s;
        size_t n;
        KN_TRY(to_str(c, v, off, &s, &n));
        return emit(c, s, n, off);
    }
    case V_MSG:
        KN_TRY(emit(c, "{\"role\": ", 9, off));
        KN_TRY(json_str(c, v->m->role, strlen(v->m->role), off));
        KN_TRY(emit(c, ", \"content\": ", 13, off));
        KN_TRY(json_str(c, v->m->content, strlen(v->m->content), off));
        return emit(c, "}", 1, off);
    case V_LIST:
        KN_TRY(emit(c, "[", 1, off));
        for (size_t i = 0; i < v->n; i++) {
            val m = {V_MSG, NULL, 0, 0, v->m + i, NULL};
            KN_TRY(i ? emit(c, ", ", 2, off) : KN_OK);
            KN_TRY(json_val(c, &m, off));
        }
        return emit(c, "]", 1, off);
    default: return UNSUP(c, off, "unsupported: tojson of a %.*s", "loop", 4);
    }
}

/* Renders v as JSON into the arena: emit into the output, then move. */
static kn_status tojson(cx *c, const val *v, size_t off, val *out)
{
    size_t mark = c->out_n;
    KN_TRY(json_val(c, v, off));
    kn_status s = concat(c, c->out ? c->out + mark : "", c->out_n - mark, "", 0, out);
    c->out_n = mark;
    return s;
}

/* ---- expressions ---------------------------------------------------------------------- */

static kn_status eval(cx *c, const globals *g, const ex *e, val *out);

static kn_status attr(cx *c, const val *v, const char *name, size_t n, size_t off, val *out)
{
    *out = undef;
    switch (v->k) {
    case V_MSG:
        if (name_is(name, n, "role"))
            *out = str_val(v->m->role, strlen(v->m->role));
        else if (name_is(name, n, "content"))
            *out = str_val(v->m->content, strlen(v->m->content));
        return KN_OK;
    case V_LOOP: {
        const loop_state *l = v->loop;
        if (name_is(name, n, "first"))
            *out = bool_val(l->index0 == 0);
        else if (name_is(name, n, "last"))
            *out = bool_val(l->index0 + 1 == l->length);
        else if (name_is(name, n, "index"))
            *out = int_val((int64_t)l->index0 + 1);
        else if (name_is(name, n, "index0"))
            *out = int_val((int64_t)l->index0);
        else if (name_is(name, n, "revindex"))
            *out = int_val((int64_t)(l->length - l->index0));
        else if (name_is(name, n, "revindex0"))
            *out = int_val((int64_t)(l->length - l->index0 - 1));
        else if (name_is(name, n, "length"))
            *out = int_val((int64_t)l->length);
        return KN_OK;
    }
    case V_UNDEF:
    case V_NONE:
        return BADS(c, off, "'%.*s' of an undefined or none value", name, n);
    default: return KN_OK; /* strings, lists, numbers: no such attribute */
    }
}

/* Python-style index normalisation: negative counts from the end; false
 * when out of range. */
static bool norm_index(int64_t i, size_t n, size_t *out)
{
    if (i < 0)
        i += (int64_t)n;
    if (i < 0 || (uint64_t)i >= n)
        return false;
    *out = (size_t)i;
    return true;
}

static size_t clamp_slice(int64_t i, size_t n)
{
    if (i < 0)
        i += (int64_t)n;
    return i < 0 ? 0 : (uint64_t)i > n ? n : (size_t)i;
}

static kn_status subscript(cx *c, const globals *g, const ex *e, const val *v, val *out)
{
    *out = undef;
    if (e->k == E_SLICE) {
        val b = undef, en = undef;
        if (e->b)
            KN_TRY(eval(c, g, e->b, &b));
        if (e->c)
            KN_TRY(eval(c, g, e->c, &en));
        if ((b.k != V_UNDEF && b.k != V_NONE && !is_num(&b)) || (en.k != V_UNDEF && en.k != V_NONE && !is_num(&en)))
            return BAD(c, e->off, "slice bounds must be integers");
        size_t len = v->k == V_LIST ? v->n : v->k == V_STR ? n_chars(v->s, v->n) : 0;
        if (v->k != V_LIST && v->k != V_STR)
            return BADS(c, e->off, "cannot slice a %.*s value", kind_name(v->k), strlen(kind_name(v->k)));
        size_t lo = is_num(&b) ? clamp_slice(b.i, len) : 0, hi = is_num(&en) ? clamp_slice(en.i, len) : len;
        if (hi < lo)
            hi = lo;
        if (v->k == V_LIST)
            *out = (val){V_LIST, NULL, hi - lo, 0, v->m + lo, NULL};
        else {
            size_t bo = char_off(v->s, v->n, lo), eo = char_off(v->s, v->n, hi);
            *out = str_val(v->s + bo, eo - bo);
        }
        return KN_OK;
    }
    val k;
    KN_TRY(eval(c, g, e->b, &k));
    if (k.k == V_STR)
        return attr(c, v, k.s, k.n, e->off, out);
    if (!is_num(&k))
        return BADS(c, e->off, "cannot index with a %.*s value", kind_name(k.k), strlen(kind_name(k.k)));
    size_t i;
    if (v->k == V_LIST) {
        if (norm_index(k.i, v->n, &i))
            *out = (val){V_MSG, NULL, 0, 0, v->m + i, NULL};
    } else if (v->k == V_STR) {
        if (norm_index(k.i, n_chars(v->s, v->n), &i)) {
            size_t bo = char_off(v->s, v->n, i);
            *out = str_val(v->s + bo, char_off(v->s, v->n, i + 1) - bo);
        }
    } else if (v->k == V_UNDEF || v->k == V_NONE) {
        return BAD(c, e->off, "index of an undefined or none value");
    }
    return KN_OK;
}

static kn_status call(cx *c, const globals *g, const ex *e, val *out)
{
    val args[8];
    for (int i = 0; i < e->n_args; i++)
        KN_TRY(eval(c, g, e->args[i], &args[i]));
    const ex *f = e->a;
    if (f->k == E_NAME && name_is(f->s, f->n, "raise_exception")) {
        const char *s = "";
        size_t n = 0;
        if (e->n_args)
            KN_TRY(to_str(c, &args[0], e->off, &s, &n));
        return BADS(c, e->off, "raise_exception: %.*s", s, n);
    }
    if (f->k == E_ATTR) {
        val obj;
        KN_TRY(eval(c, g, f->a, &obj));
        if (obj.k == V_STR) {
            bool none = e->n_args == 0, one = e->n_args == 1 && args[0].k == V_STR;
            if (none && name_is(f->s, f->n, "strip"))
                return *out = strip(&obj, true, true), KN_OK;
            if (none && name_is(f->s, f->n, "lstrip"))
                return *out = strip(&obj, true, false), KN_OK;
            if (none && name_is(f->s, f->n, "rstrip"))
                return *out = strip(&obj, false, true), KN_OK;
            if (one && name_is(f->s, f->n, "startswith"))
                return *out = bool_val(obj.n >= args[0].n && !memcmp(obj.s, args[0].s, args[0].n)), KN_OK;
            if (one && name_is(f->s, f->n, "endswith"))
                return *out = bool_val(obj.n >= args[0].n && !memcmp(obj.s + obj.n - args[0].n, args[0].s, args[0].n)),
                       KN_OK;
            if (none && (name_is(f->s, f->n, "upper") || name_is(f->s, f->n, "lower")))
                return change_case(c, &obj, f->s[0] == 'u', out);
        }
        return UNSUP(c, f->off, "unsupported method '%.*s'", f->s, f->n);
    }
    if (f->k == E_NAME)
        return UNSUP(c, f->off, "unsupported function '%.*s'", f->s, f->n);
    return UNSUP(c, e->off, "unsupported call%.*s", "", 0);
}

static kn_status filter(cx *c, const ex *e, const val *v, val *out)
{
    if (name_is(e->s, e->n, "length") || name_is(e->s, e->n, "count")) {
        if (v->k == V_STR)
            *out = int_val((int64_t)n_chars(v->s, v->n));
        else if (v->k == V_LIST)
            *out = int_val((int64_t)v->n);
        else if (v->k == V_MSG)
            *out = int_val(2);
        else if (v->k == V_UNDEF)
            *out = int_val(0);
        else
            return BADS(c, e->off, "length of a %.*s value", kind_name(v->k), strlen(kind_name(v->k)));
        return KN_OK;
    }
    if (name_is(e->s, e->n, "tojson"))
        return tojson(c, v, e->off, out);
    const char *s;
    size_t n;
    KN_TRY(to_str(c, v, e->off, &s, &n));
    val sv = str_val(s, n);
    if (name_is(e->s, e->n, "trim"))
        *out = strip(&sv, true, true);
    else if (name_is(e->s, e->n, "string"))
        *out = sv;
    else
        return change_case(c, &sv, e->s[0] == 'u', out);
    return KN_OK;
}

static bool test(const ex *e, const val *v)
{
    bool r;
    if (name_is(e->s, e->n, "defined"))
        r = v->k != V_UNDEF;
    else if (name_is(e->s, e->n, "undefined"))
        r = v->k == V_UNDEF;
    else if (name_is(e->s, e->n, "none"))
        r = v->k == V_NONE;
    else if (name_is(e->s, e->n, "string"))
        r = v->k == V_STR;
    else if (name_is(e->s, e->n, "number"))
        r = v->k == V_INT;
    else if (name_is(e->s, e->n, "boolean"))
        r = v->k == V_BOOL;
    else if (name_is(e->s, e->n, "true"))
        r = v->k == V_BOOL && v->i;
    else
        r = v->k == V_BOOL && !v->i; /* false */
    return e->i ? !r : r;
}

static kn_status binary(cx *c, const ex *e, const val *a, const val *b, val *out)
{
    const char *op = e->s;
    size_t on = e->n;
    if (name_is(op, on, "=="))
        return *out = bool_val(eq(a, b)), KN_OK;
    if (name_is(op, on, "!="))
        return *out = bool_val(!eq(a, b)), KN_OK;
    if (name_is(op, on, "~")) {
        const char *as, *bs;
        size_t an, bn;
        KN_TRY(to_str(c, a, e->off, &as, &an));
        KN_TRY(to_str(c, b, e->off, &bs, &bn));
        return concat(c, as, an, bs, bn, out);
    }
    if (name_is(op, on, "in")) {
        if (b->k == V_STR && a->k == V_STR)
            *out = bool_val(contains(b->s, b->n, a->s, a->n));
        else if (b->k == V_LIST) {
            bool found = false;
            for (size_t i = 0; i < b->n && !found; i++) {
                val m = {V_MSG, NULL, 0, 0, b->m + i, NULL};
                found = eq(a, &m);
            }
            *out = bool_val(found);
        } else if (b->k == V_MSG && a->k == V_STR)
            *out = bool_val(name_is(a->s, a->n, "role") || name_is(a->s, a->n, "content"));
        else
            return BADS(c, e->off, "'in' needs a string, list or message on its right, not %.*s", kind_name(b->k),
                        strlen(kind_name(b->k)));
        return KN_OK;
    }
    if (on == 1 && op[0] == '+' && a->k == V_STR && b->k == V_STR)
        return concat(c, a->s, a->n, b->s, b->n, out);
    bool cmp = op[0] == '<' || op[0] == '>';
    if (cmp && a->k == V_STR && b->k == V_STR) {
        size_t n = a->n < b->n ? a->n : b->n;
        int r = memcmp(a->s, b->s, n);
        if (r == 0)
            r = a->n < b->n ? -1 : a->n > b->n;
        bool lt = r < 0, gt = r > 0;
        *out = bool_val(name_is(op, on, "<") ? lt : name_is(op, on, ">") ? gt : name_is(op, on, "<=") ? !gt : !lt);
        return KN_OK;
    }
    if (!is_num(a) || !is_num(b))
        return kn_chat_fail(c, KN_ERR_INVALID, e->off, "'%.*s' of non-numbers", op, (int)on);
    int64_t x = a->i, y = b->i, r = 0;
    bool ovf = false;
    if (cmp) {
        bool lt = x < y, gt = x > y;
        *out = bool_val(name_is(op, on, "<") ? lt : name_is(op, on, ">") ? gt : name_is(op, on, "<=") ? !gt : !lt);
        return KN_OK;
    }
    if (name_is(op, on, "+"))
        ovf = __builtin_add_overflow(x, y, &r);
    else if (name_is(op, on, "-"))
        ovf = __builtin_sub_overflow(x, y, &r);
    else if (name_is(op, on, "*"))
        ovf = __builtin_mul_overflow(x, y, &r);
    else if (name_is(op, on, "//") || name_is(op, on, "%")) {
        if (y == 0)
            return BAD(c, e->off, "division by zero");
        if (x == INT64_MIN && y == -1)
            ovf = true;
        else {
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) { /* Python floors */
                q--;
                m += y;
            }
            r = op[0] == '%' ? m : q;
        }
    } else
        return UNSUP(c, e->off, "unsupported operator '%.*s' (floating point)", op, on);
    if (ovf)
        return BAD(c, e->off, "integer overflow");
    *out = int_val(r);
    return KN_OK;
}

static kn_status eval(cx *c, const globals *g, const ex *e, val *out)
{
    if (++c->depth > MAX_EVAL_DEPTH)
        return BAD(c, e->off, "expression nested too deeply");
    val a = undef, b = undef;
    kn_status s = KN_OK;
    *out = undef;
    switch (e->k) {
    case E_STR: *out = str_val(e->s, e->n); break;
    case E_INT: *out = int_val(e->i); break;
    case E_BOOL: *out = bool_val(e->i != 0); break;
    case E_NONE: out->k = V_NONE; break;
    case E_NAME: *out = lookup(c, g, e->s, e->n); break;
    case E_ATTR:
        if ((s = eval(c, g, e->a, &a)) == KN_OK)
            s = attr(c, &a, e->s, e->n, e->off, out);
        break;
    case E_INDEX:
    case E_SLICE:
        if ((s = eval(c, g, e->a, &a)) == KN_OK)
            s = subscript(c, g, e, &a, out);
        break;
    case E_CALL: s = call(c, g, e, out); break;
    case E_FILTER:
        if ((s = eval(c, g, e->a, &a)) == KN_OK)
            s = filter(c, e, &a, out);
        break;
    case E_TEST:
        if ((s = eval(c, g, e->a, &a)) == KN_OK)
            *out = bool_val(test(e, &a));
        break;
    case E_NOT:
        if ((s = eval(c, g, e->a, &a)) == KN_OK)
            *out = bool_val(!truthy(&a));
        break;
    case E_NEG:
        if ((s = eval(c, g, e->a, &a)) == KN_OK) {
            if (!is_num(&a) || a.i == INT64_MIN)
                s = BAD(c, e->off, "'-' of a non-number");
            else
                *out = int_val(-a.i);
        }
        break;
    case E_AND:
    case E_OR:
        if ((s = eval(c, g, e->a, &a)) == KN_OK) {
            if (truthy(&a) == (e->k == E_OR))
                *out = a;
            else
                s = eval(c, g, e->b, out);
        }
        break;
    case E_COND:
        if ((s = eval(c, g, e->a, &a)) == KN_OK) {
            if (truthy(&a))
                s = eval(c, g, e->b, out);
            else if (e->c)
                s = eval(c, g, e->c, out);
        }
        break;
    case E_BIN:
        if ((s = eval(c, g, e->a, &a)) == KN_OK && (s = eval(c, g, e->b, &b)) == KN_OK)
            s = binary(c, e, &a, &b, out);
        break;
    }
    c->depth--;
    return s;
}

/* ---- statements ------------------------------------------------------------------------- */

static kn_status exec(cx *c, const globals *g, const st *s)
{
    if (++c->depth > MAX_EVAL_DEPTH)
        return BAD(c, s ? s->off : 0, "blocks nested too deeply");
    for (; s; s = s->next) {
        val v;
        switch (s->k) {
        case S_TEXT: KN_TRY(emit(c, s->s, s->n, s->off)); break;
        case S_OUT: {
            const char *str;
            size_t n;
            KN_TRY(eval(c, g, s->e, &v));
            KN_TRY(to_str(c, &v, s->e->off, &str, &n));
            KN_TRY(emit(c, str, n, s->off));
            break;
        }
        case S_IF:
            KN_TRY(eval(c, g, s->e, &v));
            KN_TRY(exec(c, g, truthy(&v) ? s->body : s->els));
            break;
        case S_FOR: {
            KN_TRY(eval(c, g, s->e, &v));
            if (v.k == V_UNDEF)
                break; /* Jinja iterates an undefined value as empty */
            if (v.k != V_LIST)
                return UNSUP(c, s->e->off, "unsupported: a for loop over a %.*s", kind_name(v.k),
                             strlen(kind_name(v.k)));
            loop_state l = {0, v.n};
            size_t mark = c->n_vars;
            for (l.index0 = 0; l.index0 < v.n; l.index0++) {
                KN_TRY(push_var(c, s->s, s->n, (val){V_MSG, NULL, 0, 0, v.m + l.index0, NULL}));
                KN_TRY(push_var(c, "loop", 4, (val){V_LOOP, NULL, 0, 0, NULL, &l}));
                KN_TRY(exec(c, g, s->body));
                c->n_vars = mark; /* a 'set' in the body does not outlive the iteration */
            }
            break;
        }
        case S_SET:
            KN_TRY(eval(c, g, s->e, &v));
            KN_TRY(push_var(c, s->s, s->n, v));
            break;
        }
    }
    c->depth--;
    return KN_OK;
}

kn_status kn_chat_render(cx *c, const st *body, const kn_chat_message *msgs, size_t n_msgs, bool add_gen,
                         const char *bos, const char *eos)
{
    globals g = {msgs, n_msgs, add_gen, bos, eos};
    c->depth = 0;
    return exec(c, &g, body);
}
