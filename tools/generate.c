/* kiln run MODEL.plan --prompt TEXT | --prompt-ids IDS | --prompts-file F:
 * text generation through a session (include/kiln/session.h) on the CPU
 * backend. The new text is streamed to stdout as it is produced (ids when
 * there is no tokenizer); a summary with tokens/s goes to stderr. */
#include "cli.h"
#include "kiln/runtime.h"
#include "kiln/session.h"
#include "kiln/tokenizer.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct gen_args {
    const char *plan, *prompt, *prompt_ids, *prompts_file, *tokenizer;
    const char **stops;
    int n_stops;
    const char **stop_tokens; /* --stop-token: added/special tokens by their text */
    int n_stop_tokens;
    int64_t *stop_ids;
    int n_stop_ids;
    uint32_t max_new;
    kn_sampling sampling;
    kn_session_options so;
    const char *device;
    bool ignore_eos, chat;
} gen_args;

typedef struct prompt_list {
    int64_t **ids;
    uint32_t *lens;
    uint32_t n, cap;
} prompt_list;

/* What the token callback needs to stream text: per prompt a text stream
 * (holds back split UTF-8 characters and partial stop strings) and, with
 * several prompts, the text so far (printed at the end). */
typedef struct stream {
    const kn_tokenizer *tok;
    uint32_t n_prompts;
    kn_text_stream **ts;
    char **text;
    size_t *len;
    uint32_t *n_toks;
    kn_diag *d;
    int failed;
} stream;

static int emit(stream *st, uint32_t i, const char *text, size_t len)
{
    if (!len)
        return 0;
    if (st->n_prompts == 1) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
        return 0;
    }
    char *t = realloc(st->text[i], st->len[i] + len + 1);
    if (!t)
        return -1;
    memcpy(t + st->len[i], text, len);
    st->len[i] += len;
    t[st->len[i]] = 0;
    st->text[i] = t;
    return 0;
}

bool kn_run_wants_generate(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--prompt") == 0 || strcmp(argv[i], "--prompt-ids") == 0 ||
            strcmp(argv[i], "--prompts-file") == 0)
            return true;
    return false;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, 10);
    if (e == s || *e || *s == '-' || errno)
        return false;
    *out = v;
    return true;
}

static bool parse_f(const char *s, float *out)
{
    char *e;
    float v = strtof(s, &e);
    if (e == s || *e)
        return false;
    *out = v;
    return true;
}

static int add_prompt(prompt_list *pl, int64_t *ids, uint32_t n)
{
    if (pl->n == pl->cap) {
        uint32_t cap = pl->cap ? pl->cap * 2 : 4;
        int64_t **a = realloc(pl->ids, cap * sizeof *a);
        if (!a)
            return -1;
        pl->ids = a;
        uint32_t *l = realloc(pl->lens, cap * sizeof *l);
        if (!l)
            return -1;
        pl->lens = l;
        pl->cap = cap;
    }
    pl->ids[pl->n] = ids;
    pl->lens[pl->n++] = n;
    return 0;
}

/* "1, 2,3" → ids; false (message printed) when malformed. */
static bool parse_ids(const char *s, prompt_list *pl)
{
    size_t cap = strlen(s) / 2 + 2, n = 0;
    int64_t *ids = malloc(cap * sizeof *ids);
    if (!ids)
        return false;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        char *e;
        errno = 0;
        long long v = strtoll(p, &e, 10);
        if (e == p || errno || n >= cap) {
            fprintf(stderr, "error: run: prompt ids must be integers separated by commas, got '%s'\n", s);
            free(ids);
            return false;
        }
        ids[n++] = v;
        p = e;
    }
    if (add_prompt(pl, ids, (uint32_t)n)) {
        free(ids);
        return false;
    }
    return true;
}

/* Encodes a prompt; with a chat template (--chat), the prompt is one user
 * message rendered by it, encoded without the post-processor's tokens (the
 * template writes BOS and the role markers). */
static kn_status encode(const kn_tokenizer *tok, const kn_tokenizer_config *chat, const char *text, prompt_list *pl,
                        kn_diag *d)
{
    int32_t *ids32 = NULL;
    size_t n = 0;
    char *rendered = NULL;
    if (chat) {
        kn_chat_message msg = {"user", text};
        KN_TRY(kn_chat_template_apply(kn_tokenizer_config_chat_template(chat), &msg, 1, true,
                                      kn_tokenizer_config_bos_token(chat), kn_tokenizer_config_eos_token(chat), NULL,
                                      d, &rendered, NULL));
        text = rendered;
    }
    kn_status s = kn_tokenizer_encode(tok, text, strlen(text), !chat, &ids32, &n, d);
    free(rendered);
    KN_TRY(s);
    int64_t *ids = malloc((n + 1) * sizeof *ids);
    if (!ids) {
        kn_tokenizer_release(tok, ids32);
        return KN_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = ids32[i];
    kn_tokenizer_release(tok, ids32);
    if (add_prompt(pl, ids, (uint32_t)n)) {
        free(ids);
        return KN_ERR_NOMEM;
    }
    return KN_OK;
}

/* One prompt per non-blank line: text with a tokenizer, else ids. */
static kn_status read_prompts_file(const char *path, const kn_tokenizer *tok, const kn_tokenizer_config *chat,
                                   prompt_list *pl, kn_diag *d)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        kn_diag_add(d, KN_ERROR, "run: --prompts-file %s: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    kn_status s = KN_OK;
    while (s == KN_OK && (len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (strspn(line, " \t") == (size_t)len)
            continue;
        if (tok)
            s = encode(tok, chat, line, pl, d);
        else if (!parse_ids(line, pl))
            s = KN_ERR_INVALID;
    }
    free(line);
    fclose(f);
    if (s == KN_OK && pl->n == 0) {
        kn_diag_add(d, KN_ERROR, "run: --prompts-file %s has no prompt", path);
        s = KN_ERR_INVALID;
    }
    return s;
}

static int on_token(uint32_t prompt, int64_t token, void *user)
{
    stream *st = user;
    char num[32];
    const char *text = num;
    size_t len;
    bool stopped = false;
    st->n_toks[prompt]++;
    if (st->tok) {
        if (kn_text_stream_push(st->ts[prompt], (int32_t)token, &text, &len, &stopped, st->d) != KN_OK) {
            st->failed = 1;
            return 1;
        }
    } else {
        len = (size_t)snprintf(num, sizeof num, "%s%" PRId64, st->n_toks[prompt] > 1 ? " " : "", token);
    }
    if (emit(st, prompt, text, len)) {
        st->failed = 1;
        return 1;
    }
    return stopped; /* the session sees the stop string too; this keeps them in step */
}

/* What the text streams held back (a partial stop string or character). */
static int finish_streams(stream *st)
{
    for (uint32_t i = 0; st->tok && i < st->n_prompts; i++) {
        const char *text;
        size_t len;
        kn_text_stream_finish(st->ts[i], &text, &len);
        if (emit(st, i, text, len))
            return -1;
    }
    return 0;
}

static void print_all(const stream *st, const prompt_list *pl)
{
    for (uint32_t i = 0; i < st->n_prompts; i++) {
        printf("--- prompt %u (%u tokens) ---\n", i, pl->lens[i]);
        if (st->text[i])
            fwrite(st->text[i], 1, st->len[i], stdout);
        printf("\n");
    }
}

static const char *stop_name(kn_stop_reason r)
{
    switch (r) {
    case KN_STOP_MAX_TOKENS: return "max new tokens";
    case KN_STOP_ID: return "stop id";
    case KN_STOP_STRING: return "stop string";
    case KN_STOP_CALLBACK: return "stop string";
    case KN_STOP_FULL: return "sequence full";
    }
    return "?";
}

static void summary(const kn_session *s, const kn_generate_result *r, uint32_t n)
{
    uint64_t np = 0, nt = 0, nd = 0;
    double pf = 0, dc = 0;
    for (uint32_t i = 0; i < n; i++) {
        np += r[i].n_prompt;
        nt += r[i].n_tokens;
        nd += r[i].n_decode;
        pf += r[i].prefill_s;
        dc += r[i].decode_s;
    }
    kn_session_info info;
    kn_session_get_info(s, &info);
    const char *cache = info.no_cache ? "none (--no-kv-cache: the sequence is recomputed at each step)"
                        : info.cache == KN_CACHE_PAGED   ? "paged"
                        : info.cache == KN_CACHE_TENSORS ? "present tensors fed back (the plan was not rewritten)"
                                                         : "none (the plan has no past inputs)";
    fprintf(stderr, "\n%u prompt%s: %" PRIu64 " prompt tokens, %" PRIu64 " new tokens (%s)\n", n, n == 1 ? "" : "s",
            np, nt, stop_name(r[0].stop));
    fprintf(stderr, "prefill: %.1f tokens/s (%.1f ms); decode: %.1f tokens/s (%" PRIu64 " steps, %.1f ms)\n",
            pf > 0 ? (double)np / pf : 0.0, pf * 1e3, dc > 0 ? (double)nd / dc : 0.0, nd, dc * 1e3);
    fprintf(stderr, "KV cache: %s", cache);
    if (info.cache == KN_CACHE_PAGED)
        fprintf(stderr, ", %u layers x %u kv heads x %u, %u blocks of %u tokens, max sequence length %u, %" PRIu64
                " bytes of %s", info.n_layers, info.kv_heads, info.head_dim, info.n_blocks, info.block_size,
                info.max_seq_len, info.kv_bytes, kn_dtype_name(info.kv_dtype));
    fprintf(stderr, kn_session_on_cuda(s) ? "; CUDA backend (prefill and decode programs)\n"
                                          : "; CPU reference backend\n");
}

/* The tokenizer: --tokenizer FILE, else the one embedded in the plan, else
 * tokenizer.json next to the plan, else none. */
static kn_status open_tokenizer(const gen_args *ga, const kn_graph *g, kn_diag *d, kn_tokenizer **tok)
{
    *tok = NULL;
    if (ga->tokenizer)
        return kn_tokenizer_load_file(ga->tokenizer, NULL, d, tok);
    const void *data;
    size_t size;
    if (kn_plan_blob(g, KN_BLOB_TOKENIZER, &data, &size) == KN_OK)
        return kn_plan_tokenizer(g, NULL, d, tok);
    char path[4096];
    const char *slash = strrchr(ga->plan, '/');
    snprintf(path, sizeof path, "%.*stokenizer.json", slash ? (int)(slash - ga->plan + 1) : 0, ga->plan);
    struct stat stt;
    if (stat(path, &stt) == 0 && S_ISREG(stt.st_mode))
        return kn_tokenizer_load_file(path, NULL, d, tok);
    return KN_OK;
}

static kn_status generate(gen_args *ga, kn_diag *d)
{
    kn_graph *g = NULL;
    kn_tokenizer *tok = NULL;
    kn_tokenizer_config *chat = NULL;
    kn_session *s = NULL;
    prompt_list pl = {0};
    stream st = {0};
    kn_generate_result *res = NULL;
    kn_status rc = kn_plan_load(ga->plan, NULL, d, &g);
    if (rc == KN_OK)
        rc = open_tokenizer(ga, g, d, &tok);
    if (rc == KN_OK && !tok && (ga->prompt || ga->n_stops || ga->n_stop_tokens)) {
        kn_diag_add(d, KN_ERROR,
                    "run: %s needs a tokenizer: the plan has none embedded (kiln compile --tokenizer FILE) and "
                    "there is no tokenizer.json next to it; give --tokenizer tokenizer.json, or token ids with "
                    "--prompt-ids",
                    ga->prompt ? "--prompt" : ga->n_stops ? "--stop" : "--stop-token");
        rc = KN_ERR_INVALID;
    }
    /* --stop-token: the ids of added/special tokens named by their text */
    for (int k = 0; rc == KN_OK && k < ga->n_stop_tokens; k++) {
        int32_t id;
        rc = kn_tokenizer_token_id(tok, ga->stop_tokens[k], &id, d);
        if (rc == KN_OK)
            ga->stop_ids[ga->n_stop_ids++] = id;
    }
    /* the model's end-of-sequence ids stop generation (generation_config.json) */
    kn_generation_config gc;
    uint32_t n_stop_ids = (uint32_t)ga->n_stop_ids;
    if (rc == KN_OK && !ga->ignore_eos) {
        kn_status gs = kn_plan_generation_config(g, d, &gc);
        if (gs == KN_OK)
            for (uint32_t k = 0; k < gc.n_eos; k++)
                ga->stop_ids[n_stop_ids++] = gc.eos_ids[k];
        else if (gs != KN_ERR_NOT_FOUND)
            rc = gs;
    }
    if (rc == KN_OK && ga->chat) {
        const void *data;
        size_t size;
        if (kn_plan_blob(g, KN_BLOB_TOKENIZER_CONFIG, &data, &size) == KN_OK)
            rc = kn_plan_tokenizer_config(g, NULL, d, &chat);
        if (rc == KN_OK && (!chat || !kn_tokenizer_config_chat_template(chat) || !tok)) {
            kn_diag_add(d, KN_ERROR,
                        "run: --chat needs the chat template of an embedded tokenizer_config.json and a tokenizer "
                        "(kiln compile embeds both when they are next to the model)");
            rc = KN_ERR_INVALID;
        }
        /* without generation_config.json's eos ids, the template's eos token ends the answer */
        int32_t eos;
        const char *et = chat ? kn_tokenizer_config_eos_token(chat) : NULL;
        if (rc == KN_OK && n_stop_ids == (uint32_t)ga->n_stop_ids && !ga->ignore_eos && et &&
            kn_tokenizer_token_id(tok, et, &eos, d) == KN_OK)
            ga->stop_ids[n_stop_ids++] = eos;
    }
    if (rc == KN_OK && ga->prompt)
        rc = encode(tok, chat, ga->prompt, &pl, d);
    if (rc == KN_OK && ga->prompt_ids && !parse_ids(ga->prompt_ids, &pl))
        rc = KN_ERR_INVALID;
    if (rc == KN_OK && ga->prompts_file)
        rc = read_prompts_file(ga->prompts_file, tok, chat, &pl, d);
    if (rc == KN_OK)
        rc = kn_session_create_device(g,
                                      strcmp(ga->device, "cuda") == 0  ? KN_DEVICE_CUDA
                                      : strcmp(ga->device, "cpu") == 0 ? KN_DEVICE_CPU
                                                                       : KN_DEVICE_AUTO,
                                      &ga->so, NULL, d, &s);
    if (rc == KN_OK) {
        st.tok = tok;
        st.n_prompts = pl.n;
        st.d = d;
        st.ts = calloc(pl.n, sizeof *st.ts);
        st.text = calloc(pl.n, sizeof *st.text);
        st.len = calloc(pl.n, sizeof *st.len);
        st.n_toks = calloc(pl.n, sizeof *st.n_toks);
        res = calloc(pl.n, sizeof *res);
        if (!st.ts || !st.text || !st.len || !st.n_toks || !res)
            rc = KN_ERR_NOMEM;
        for (uint32_t i = 0; rc == KN_OK && tok && i < pl.n; i++)
            rc = kn_text_stream_create(tok, ga->stops, (size_t)ga->n_stops, true, NULL, d, &st.ts[i]);
    }
    if (rc == KN_OK) {
        kn_generate_options o;
        kn_generate_options_defaults(&o);
        o.max_new_tokens = ga->max_new;
        o.sampling = ga->sampling;
        o.stop_ids = ga->stop_ids;
        o.n_stop_ids = n_stop_ids;
        o.stop_strings = ga->stops;
        o.n_stop_strings = (uint32_t)ga->n_stops;
        o.tokenizer = tok;
        o.on_token = on_token;
        o.user = &st;
        rc = kn_session_generate(s, (const int64_t *const *)pl.ids, pl.lens, pl.n, &o, res);
        if (rc == KN_OK && (st.failed || finish_streams(&st)))
            rc = KN_ERR_NOMEM;
        if (rc == KN_OK && pl.n > 1)
            print_all(&st, &pl);
        else if (rc == KN_OK)
            printf("\n");
        fflush(stdout);
        if (rc == KN_OK)
            summary(s, res, pl.n);
        if (rc == KN_OK)
            kn_generate_results_free(s, res, pl.n);
    }
    for (uint32_t i = 0; i < pl.n; i++) {
        free(pl.ids[i]);
        if (st.ts)
            kn_text_stream_free(st.ts[i]);
        if (st.text)
            free(st.text[i]);
    }
    free(pl.ids);
    free(pl.lens);
    free(st.ts);
    free(st.text);
    free(st.len);
    free(st.n_toks);
    free(res);
    kn_session_destroy(s);
    kn_tokenizer_config_free(chat);
    kn_tokenizer_free(tok);
    kn_graph_destroy(g);
    return rc;
}

int kn_run_generate(int argc, char **argv, const char *usage)
{
    gen_args ga = {0};
    ga.max_new = 64;
    ga.device = "auto";
    kn_sampling_defaults(&ga.sampling);
    ga.stops = calloc((size_t)argc + 1, sizeof *ga.stops);
    ga.stop_tokens = calloc((size_t)argc + 1, sizeof *ga.stop_tokens);
    ga.stop_ids = calloc((size_t)argc + 2 + KN_GEN_MAX_EOS, sizeof *ga.stop_ids);
    int rc = KN_EXIT_BAD_INPUT, n_sources = 0;
    if (!ga.stops || !ga.stop_ids || !ga.stop_tokens) {
        rc = KN_EXIT_INTERNAL;
        goto done;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        uint64_t u = 0;
        const char *v = has ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            rc = KN_EXIT_OK;
            goto done;
        } else if (strcmp(a, "--prompt") == 0 && has) {
            ga.prompt = argv[++i], n_sources++;
        } else if (strcmp(a, "--prompt-ids") == 0 && has) {
            ga.prompt_ids = argv[++i], n_sources++;
        } else if (strcmp(a, "--prompts-file") == 0 && has) {
            ga.prompts_file = argv[++i], n_sources++;
        } else if (strcmp(a, "--tokenizer") == 0 && has) {
            ga.tokenizer = argv[++i];
        } else if (strcmp(a, "--stop") == 0 && has) {
            ga.stops[ga.n_stops++] = argv[++i];
        } else if (strcmp(a, "--stop-token") == 0 && has) {
            ga.stop_tokens[ga.n_stop_tokens++] = argv[++i];
        } else if (strcmp(a, "--stop-id") == 0 && has && parse_u64(v, &u) && u <= INT64_MAX) {
            ga.stop_ids[ga.n_stop_ids++] = (int64_t)u, i++;
        } else if (strcmp(a, "--max-new-tokens") == 0 && has && parse_u64(v, &u) && u <= UINT32_MAX) {
            ga.max_new = (uint32_t)u, i++;
        } else if (strcmp(a, "--temperature") == 0 && has && parse_f(v, &ga.sampling.temperature)) {
            i++;
        } else if (strcmp(a, "--top-k") == 0 && has && parse_u64(v, &u) && u <= UINT32_MAX) {
            ga.sampling.top_k = (uint32_t)u, i++;
        } else if (strcmp(a, "--top-p") == 0 && has && parse_f(v, &ga.sampling.top_p)) {
            i++;
        } else if (strcmp(a, "--repetition-penalty") == 0 && has && parse_f(v, &ga.sampling.repetition_penalty)) {
            i++;
        } else if (strcmp(a, "--seed") == 0 && has && parse_u64(v, &u)) {
            ga.sampling.seed = u, i++;
        } else if (strcmp(a, "--chat") == 0) {
            ga.chat = true;
        } else if (strcmp(a, "--ignore-eos") == 0) {
            ga.ignore_eos = true;
        } else if (strcmp(a, "--no-kv-cache") == 0) {
            ga.so.no_cache = true;
        } else if (strcmp(a, "--no-cuda-graph") == 0) {
            ga.so.no_cuda_graph = true;
        } else if (strcmp(a, "--max-seq-len") == 0 && has && parse_u64(v, &u) && u > 0 && u <= UINT32_MAX) {
            ga.so.max_seq_len = (uint32_t)u, i++;
        } else if (strcmp(a, "--kv-block-size") == 0 && has && parse_u64(v, &u) && u > 0 && u <= 65536) {
            ga.so.block_size = (uint32_t)u, i++;
        } else if (strcmp(a, "--kv-cache-mem") == 0 && has && kn_cli_parse_size(v, &u)) {
            ga.so.kv_cache_mem = u, i++;
        } else if (strcmp(a, "--device") == 0 && has) {
            ga.device = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: run: unknown, incomplete or malformed option '%s%s%s'\n\n%s", a, v ? " " : "",
                    v ? v : "", usage);
            goto done;
        } else if (ga.plan) {
            fprintf(stderr, "error: run: more than one plan given\n\n%s", usage);
            goto done;
        } else {
            ga.plan = a;
        }
    }
    if (!ga.plan) {
        fprintf(stderr, "error: run: no plan given\n\n%s", usage);
        goto done;
    }
    if (n_sources != 1) {
        fprintf(stderr, "error: run: give one of --prompt, --prompt-ids and --prompts-file\n");
        goto done;
    }
    if (strcmp(ga.device, "auto") != 0 && strcmp(ga.device, "cpu") != 0 && strcmp(ga.device, "cuda") != 0) {
        fprintf(stderr, "error: run: --device must be auto, cpu or cuda\n");
        goto done;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    if (!d) {
        rc = KN_EXIT_INTERNAL;
        goto done;
    }
    rc = kn_cli_exit_code(generate(&ga, d));
    kn_diag_destroy(d);
done:
    free(ga.stops);
    free(ga.stop_ids);
    free(ga.stop_tokens);
    return rc;
}
