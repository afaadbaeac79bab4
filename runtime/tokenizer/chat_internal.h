/* The chat-template interpreter's shared state (chat_template.c: lexer and
 * parser; chat_eval.c: rendering). Internal to runtime/tokenizer. */
#ifndef KILN_CHAT_INTERNAL_H
#define KILN_CHAT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/tokenizer.h"

#define KN_CHAT_MAX_DEPTH 64          /* nesting of expressions and blocks */
#define KN_CHAT_MAX_OUTPUT (64u << 20) /* bytes rendered */

typedef struct kn_chat_chunk {
    struct kn_chat_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} kn_chat_chunk;

typedef enum { T_TEXT, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STR, T_INT, T_OP, T_EOF } tkind;

typedef struct tok {
    tkind k;
    size_t off;
    const char *s; /* text, name, string value or operator */
    size_t n;
    int64_t i;
} tok;

typedef enum {
    E_STR, E_INT, E_BOOL, E_NONE, E_NAME, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST,
    E_NOT, E_NEG, E_BIN, E_AND, E_OR, E_COND
} ekind;

typedef struct ex {
    ekind k;
    size_t off;
    struct ex *a, *b, *c; /* operands; SLICE: a[b:c]; COND: b if a else c */
    const char *s;        /* STR value, NAME, ATTR/FILTER/TEST name, BIN operator */
    size_t n;
    int64_t i;            /* INT/BOOL value; TEST: negated */
    struct ex **args;
    int n_args;
} ex;

typedef enum { S_TEXT, S_OUT, S_IF, S_FOR, S_SET } skind;

typedef struct st {
    skind k;
    size_t off;
    struct st *next;
    ex *e;
    const char *s; /* TEXT bytes, FOR/SET variable */
    size_t n;
    struct st *body, *els;
} st;

typedef enum { V_UNDEF, V_NONE, V_BOOL, V_INT, V_STR, V_LIST, V_MSG, V_LOOP } vkind;

typedef struct loop_state {
    size_t index0, length;
} loop_state;

typedef struct val {
    vkind k;
    const char *s;            /* STR */
    size_t n;                 /* STR bytes; LIST count */
    int64_t i;                /* BOOL/INT */
    const kn_chat_message *m; /* LIST first / MSG */
    const loop_state *loop;
} val;

typedef struct var {
    const char *name;
    size_t n;
    val v;
} var;

typedef struct cx {
    const kn_allocator *a;
    kn_diag *d;
    const char *src;
    size_t len;
    kn_chat_chunk *chunks;
    kn_status status; /* first error; later ones are not reported */
    tok *toks;
    size_t n_toks, cap_toks, pos;
    int depth;
    /* rendering */
    char *out;
    size_t out_n, out_cap;
    var *vars;
    size_t n_vars, cap_vars;
} cx;

/* Arena memory (NULL and c->status KN_ERR_NOMEM on failure). */
void *kn_chat_arena(cx *c, size_t n);
/* Records the first error: "chat template: offset OFF: " + fmt, where fmt
 * has one "%.*s" taking (arg_n, arg). Returns c->status. */
kn_status kn_chat_fail(cx *c, kn_status s, size_t off, const char *fmt, const char *arg, int arg_n);
#define BAD(c, off, fmt) kn_chat_fail((c), KN_ERR_INVALID, (off), "%.*s" fmt, "", 0)
#define BADS(c, off, fmt, s, n) kn_chat_fail((c), KN_ERR_INVALID, (off), fmt, (s), (int)(n))
#define UNSUP(c, off, fmt, s, n) kn_chat_fail((c), KN_ERR_UNSUPPORTED, (off), fmt, (s), (int)(n))

/* Renders the parsed template into c->out (c->out_n bytes). */
kn_status kn_chat_render(cx *c, const st *body, const kn_chat_message *msgs, size_t n_msgs, bool add_gen,
                         const char *bos, const char *eos);

#endif
