/* kiln inspect: what is in a model, as text or JSON. */
#include "cli.h"
#include "ir/ir.h"
#include "ir/stats.h"
#include "json.h"
#include "kiln/runtime.h"
#include "kiln/cuda.h"
#include "kiln/session.h"
#include "runtime/cuda/plan.h"
#include "embed.h"
#include "kiln/runtime.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: kiln inspect [--graph] [--layers] [--json] MODEL.onnx|MODEL.plan\n"
    "\n"
    "Shows the model's producer, IR version, opsets, inputs and outputs (dtypes,\n"
    "shapes with symbolic dims), op-type histogram, parameter count and bytes per\n"
    "dtype, subgraphs and the ops kiln does not support. For a plan, also how it\n"
    "was built (options, targets) and, for target cuda, its kernels per arch and\n"
    "the planned device memory against the naive sum, and its layers (the first\n"
    "200; --layers lists them all).\n"
    "\n"
    "options:\n"
    "  --graph   print the graph in kiln's IR text form instead\n"
    "  --layers  list the main graph's nodes in execution order instead: op,\n"
    "            name, output types, the ONNX nodes a fused node came from and,\n"
    "            for target cuda, how it runs (with --json: the summary plus\n"
    "            a \"layers\" array, which plans always have)\n"
    "  --json    print the summary as JSON (stable keys)\n"
    "  -h, --help\n";

static void human_bytes(uint64_t b, char *buf, size_t n)
{
    if (b < 1024)
        snprintf(buf, n, "%" PRIu64 " B", b);
    else if (b < 1024 * 1024)
        snprintf(buf, n, "%.1f KiB", (double)b / 1024);
    else if (b < 1024ull * 1024 * 1024)
        snprintf(buf, n, "%.1f MiB", (double)b / (1024 * 1024));
    else
        snprintf(buf, n, "%.2f GiB", (double)b / (1024.0 * 1024 * 1024));
}

static uint64_t total(const uint64_t *a)
{
    uint64_t t = 0;
    for (int i = 0; i < KN_DTYPE_COUNT; i++)
        t += a[i];
    return t;
}

static const char *meta(const kn_model_info *m, const char *key)
{
    for (uint32_t i = 0; i < m->n_metadata; i++)
        if (strcmp(m->metadata[i].key, key) == 0)
            return m->metadata[i].value;
    return NULL;
}

/* kiln.kv.* as a plan stores it (meta.kiln.kv.*) or as compiled in memory. */
static const char *kv_meta(const kn_model_info *m, const char *key)
{
    char buf[64];
    snprintf(buf, sizeof buf, "meta.kiln.kv.%s", key);
    const char *v = meta(m, buf);
    snprintf(buf, sizeof buf, "kiln.kv.%s", key);
    v = v ? v : meta(m, buf);
    return v ? v : "?";
}

/* The runtime-owned KV cache the kv-cache pass set up (docs/llm.md). */
static void text_kv(const kn_model_info *m)
{
    const char *layers = kv_meta(m, "layers");
    if (strcmp(layers, "?") == 0)
        return;
    char b[64];
    human_bytes(strtoull(kv_meta(m, "bytes"), NULL, 10), b, sizeof b);
    /* kiln.kv.mask (passes/kv_mask.c): causal, graph, or absent (older plans) */
    const char *mask = kv_meta(m, "mask");
    const char *mk = strcmp(mask, "causal") == 0 ? "causal (in the attention kernel: no mask input)"
                     : strcmp(mask, "graph") == 0 ? "computed by the graph (from attention_mask and the past length)"
                                                  : "computed by the graph";
    printf("kv cache:    paged, %s layers x %s kv heads x head dim %s (%s); %s blocks of %s tokens, max sequence "
           "length %s; %s (%s bytes); mask %s\n",
           layers, kv_meta(m, "kv_heads"), kv_meta(m, "head_dim"), kv_meta(m, "dtype"), kv_meta(m, "blocks"),
           kv_meta(m, "block_size"), kv_meta(m, "max_seq_len"), b, kv_meta(m, "bytes"), mk);
}

static void text_io(const kn_graph *g, const kn_id *ids, uint32_t n, const char *title)
{
    printf("%s (%u):\n", title, n);
    for (uint32_t i = 0; i < n; i++) {
        char buf[1024];
        const kn_value *v = &g->values[ids[i]];
        kn_type_format(&v->type, buf, sizeof buf);
        printf("  %-32s %s\n", v->name, buf);
    }
}

/* ---- layers ------------------------------------------------------------------ */

#define LAYERS_DEFAULT 200
#define ORIGINS_SHOWN 6

/* Whether step i launches the dense GEMV's main kernel (one per product
 * given to it; codegen/cuda/gemv_kernels.h). */
static bool is_gemv(const kn_cuda_plan *p, uint32_t i)
{
    return p->steps[i].kind == KN_CU_STEP_LAUNCH && p->steps[i].kernel < p->n_kernels &&
           p->entries[p->steps[i].kernel] && strcmp(p->entries[p->steps[i].kernel], "kn_gemv") == 0;
}

/* One CUDA program's figures (META keys `pre`.*) and its steps by kind,
 * read back from the plan (the prefill program through
 * kn_plan_load_cuda_prefill, a batched decode program through
 * kn_plan_load_cuda_decode_batch). */
static void text_cuda(const kn_graph *g, const char *pre, const char *label)
{
    const kn_model_info *m = g->info;
    char key[96], b1[64], b2[64];
#define K(name) (snprintf(key, sizeof key, "%s." name, pre), meta(m, key))
    const char *pool = K("pool_bytes"), *naive = K("naive_bytes");
    if (!pool || !naive)
        return;
    human_bytes(strtoull(pool, NULL, 10), b1, sizeof b1);
    human_bytes(strtoull(naive, NULL, 10), b2, sizeof b2);
    printf("%s %s kernels x archs %s = %s images (%s bytes), %s steps\n", label, K("kernels"), K("archs"),
           K("images"), K("image_bytes"), K("steps"));
    printf("memory:      planned pool %s (naive sum of activations %s)\n", b1, b2);
    if (K("kv_rows")) {
        const char *rows = K("kv_rows");
        printf("cuda kv:     the steps read the session's device KV cache: %s sequences x %s new tokens per run\n",
               rows, K("kv_tokens") ? K("kv_tokens") : "?");
    }
#undef K
    bool prefill = strcmp(pre, "cuda.prefill") == 0, batch = strncmp(pre, "cuda.batch", 10) == 0;
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *pg = NULL;
    kn_cuda_plan p;
    kn_status s = !d      ? KN_ERR_NOMEM
                  : prefill ? kn_plan_load_cuda_prefill(g, NULL, d, &pg)
                  : batch   ? kn_plan_load_cuda_decode_batch(g, (uint32_t)strtoul(pre + 10, NULL, 10), NULL, d, &pg)
                            : KN_OK;
    const kn_graph *rg = prefill || batch ? pg : g;
    if (s == KN_OK)
        s = kn_cuda_plan_read(rg, rg->info->plan_base, rg->info->plan_size, NULL, d, &p);
    if (s == KN_OK) {
        uint32_t n[5] = {0}, n_i8 = 0, n_gemv = 0;
        for (uint32_t i = 0; i < p.n_steps; i++) {
            n[p.steps[i].kind < 5 ? p.steps[i].kind : 0]++;
            n_i8 += p.steps[i].kind == KN_CU_STEP_GEMM && p.gemms[i].dtype == KN_I8;
            n_gemv += is_gemv(&p, i);
        }
        char in[128] = "";
        size_t at = 0;
        for (uint32_t i = 0; i < rg->n_inputs && at < sizeof in - 40; i++) {
            char t[64];
            kn_type_format(&rg->values[rg->inputs[i]].type, t, sizeof t);
            at += (size_t)snprintf(in + at, sizeof in - at, "%s%s %s", i ? ", " : "",
                                   rg->values[rg->inputs[i]].name, t);
        }
        printf("             read back: %u launches, %u GEMMs (%u int8), %u copies, %u on the host; inputs %s\n",
               n[KN_CU_STEP_LAUNCH], n[KN_CU_STEP_GEMM], n_i8, n[KN_CU_STEP_COPY], n[KN_CU_STEP_HOST], in);
        printf("             dense GEMV: %u matrix products (kernel kn_gemv; the others on cuBLASLt or other "
               "kernels)\n",
               n_gemv);
        kn_cuda_plan_free(&p);
    } else if (d && kn_diag_size(d)) {
        printf("             read back: %s\n", kn_diag_message(d, 0, NULL));
    }
    kn_graph_destroy(pg);
    kn_diag_destroy(d);
}

/* How each main-graph node runs in a target-cuda plan: its steps by kind. */
typedef struct layer_exec {
    uint32_t launch, gemm, copy, host, gemv; /* launch: all kernels, gemv among them */
} layer_exec;

/* Per node of g, its CUDA steps; NULL when g is not a target-cuda plan
 * (or its sections do not read). */
static layer_exec *cuda_exec(const kn_graph *g)
{
    if (!kn_cuda_plan_has_code(g))
        return NULL;
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_cuda_plan p;
    kn_status s = d ? kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, NULL, d, &p) : KN_ERR_NOMEM;
    kn_diag_destroy(d);
    if (s != KN_OK)
        return NULL;
    layer_exec *e = calloc((size_t)g->n_nodes + 1, sizeof *e);
    for (uint32_t i = 0; e && i < p.n_steps; i++) {
        uint32_t n = p.steps[i].node;
        if (n >= g->n_nodes)
            continue;
        switch (p.steps[i].kind) {
        case KN_CU_STEP_LAUNCH:
            e[n].launch++;
            e[n].gemv += is_gemv(&p, i);
            break;
        case KN_CU_STEP_GEMM: e[n].gemm++; break;
        case KN_CU_STEP_COPY: e[n].copy++; break;
        case KN_CU_STEP_HOST: e[n].host++; break;
        default: break;
        }
    }
    kn_cuda_plan_free(&p);
    return e;
}

/* "2 kernels", "gemm+1 kernel", "host", "alias/folded" (no step: a view of its
 * input, or computed when the plan was built). */
static void exec_format(const layer_exec *e, char *buf, size_t n)
{
    size_t pos = 0;
    buf[0] = 0;
#define PART(...) (pos += (size_t)snprintf(buf + pos, pos < n ? n - pos : 0, __VA_ARGS__))
    if (e->gemm)
        PART("%sgemm%s", pos ? "+" : "", e->gemm > 1 ? "s" : "");
    if (e->gemv)
        PART("%sgemv", pos ? "+" : "");
    if (e->launch > e->gemv)
        PART("%s%u kernel%s", pos ? "+" : "", e->launch - e->gemv, e->launch - e->gemv > 1 ? "s" : "");
    if (e->copy)
        PART("%scopy", pos ? "+" : "");
    if (e->host)
        PART("%shost", pos ? "+" : "");
#undef PART
    if (!pos)
        snprintf(buf, n, "alias/folded");
}

static const kn_attr *origins(const kn_node *nd)
{
    const kn_attr *a = kn_node_attr(nd, "_origins");
    return a && a->kind == KN_ATTR_STRINGS ? a : NULL;
}

static void layers_text(const kn_graph *g, uint32_t limit)
{
    layer_exec *ex = cuda_exec(g);
    printf("layers (%u):\n", g->n_nodes);
    uint32_t n = g->n_nodes < limit ? g->n_nodes : limit;
    for (uint32_t k = 0; k < n; k++) {
        const kn_node *nd = &g->nodes[k];
        char op[256];
        if (nd->domain && *nd->domain && strcmp(nd->domain, "ai.onnx") != 0)
            snprintf(op, sizeof op, "%s.%s", nd->domain, nd->op_type);
        else
            snprintf(op, sizeof op, "%s", nd->op_type);
        printf("  %4u  %-22s %s ->", k, op, nd->name && *nd->name ? nd->name : "(unnamed)");
        for (uint32_t o = 0; o < nd->n_outputs; o++) {
            char buf[1024] = "(none)";
            if (nd->outputs[o] != KN_NONE)
                kn_type_format(&g->values[nd->outputs[o]].type, buf, sizeof buf);
            printf("%s %s", o ? "," : "", buf);
        }
        if (ex) {
            char buf[64];
            exec_format(&ex[k], buf, sizeof buf);
            printf("  [%s]", buf);
        }
        const kn_attr *a = origins(nd);
        if (a) {
            printf("  <- %u:", a->n);
            for (uint32_t i = 0; i < a->n && i < ORIGINS_SHOWN; i++)
                printf("%s %.*s", i ? "," : "", (int)a->u.strings[i].len, (const char *)a->u.strings[i].data);
            if (a->n > ORIGINS_SHOWN)
                printf(" +%u more", a->n - ORIGINS_SHOWN);
        }
        printf("\n");
    }
    if (g->n_nodes > n)
        printf("  ... %u more (kiln inspect --layers lists all)\n", g->n_nodes - n);
    free(ex);
}

static void layers_json(kn_json *j, const kn_graph *g)
{
    layer_exec *ex = cuda_exec(g);
    kn_json_arr_begin(j);
    for (uint32_t k = 0; k < g->n_nodes; k++) {
        const kn_node *nd = &g->nodes[k];
        kn_json_obj_begin(j);
        kn_json_key(j, "index");
        kn_json_uint(j, k);
        kn_json_key(j, "op");
        kn_json_str(j, nd->op_type);
        kn_json_key(j, "domain");
        kn_json_str(j, nd->domain && *nd->domain ? nd->domain : "ai.onnx");
        kn_json_key(j, "name");
        kn_json_str(j, nd->name ? nd->name : "");
        kn_json_key(j, "outputs");
        kn_json_arr_begin(j);
        for (uint32_t o = 0; o < nd->n_outputs; o++) {
            if (nd->outputs[o] == KN_NONE)
                continue;
            const kn_value *v = &g->values[nd->outputs[o]];
            char buf[1024];
            kn_type_format(&v->type, buf, sizeof buf);
            kn_json_obj_begin(j);
            kn_json_key(j, "name");
            kn_json_str(j, v->name);
            kn_json_key(j, "type");
            kn_json_str(j, buf);
            kn_json_obj_end(j);
        }
        kn_json_arr_end(j);
        kn_json_key(j, "origins");
        kn_json_arr_begin(j);
        const kn_attr *a = origins(nd);
        for (uint32_t i = 0; a && i < a->n; i++) {
            char buf[1024];
            snprintf(buf, sizeof buf, "%.*s", (int)a->u.strings[i].len, (const char *)a->u.strings[i].data);
            kn_json_str(j, buf);
        }
        kn_json_arr_end(j);
        if (ex) {
            kn_json_key(j, "cuda");
            kn_json_obj_begin(j);
            char buf[64];
            exec_format(&ex[k], buf, sizeof buf);
            kn_json_key(j, "runs");
            kn_json_str(j, buf);
            kn_json_key(j, "kernels");
            kn_json_uint(j, ex[k].launch);
            kn_json_key(j, "gemms");
            kn_json_uint(j, ex[k].gemm);
            kn_json_key(j, "gemv");
            kn_json_uint(j, ex[k].gemv);
            kn_json_key(j, "copies");
            kn_json_uint(j, ex[k].copy);
            kn_json_key(j, "host");
            kn_json_uint(j, ex[k].host);
            kn_json_obj_end(j);
        }
        kn_json_obj_end(j);
    }
    kn_json_arr_end(j);
    free(ex);
}

static void print_text(const kn_graph *g, const kn_graph_stats *st)
{
    const kn_model_info *m = g->info;
    char b1[64];
    printf("model:       %s\n", m->path);
    printf("producer:    %s%s%s\n", *m->producer_name ? m->producer_name : "(none)",
           *m->producer_version ? " " : "", m->producer_version);
    printf("ir version:  %" PRId64 "\n", m->ir_version);
    printf("opsets:     ");
    for (uint32_t i = 0; i < m->n_opsets; i++)
        printf("%s %s %" PRId64, i ? "," : "", *m->opsets[i].domain ? m->opsets[i].domain : "ai.onnx",
               m->opsets[i].version);
    printf("\n");
    if (m->n_metadata) {
        printf("metadata:\n");
        for (uint32_t i = 0; i < m->n_metadata; i++)
            printf("  %s = %s\n", m->metadata[i].key, m->metadata[i].value);
    }
    text_cuda(g, "cuda", kn_plan_is_cuda_decoder(g) ? "cuda decode: " : "cuda:        ");
    if (kn_plan_is_cuda_decoder(g))
        text_cuda(g, "cuda.prefill", "cuda prefill:");
    for (uint32_t k = 0; k < kn_plan_cuda_decode_batches(g); k++) {
        char pre[32];
        char key[48];
        snprintf(pre, sizeof pre, "cuda.batch%u", k);
        snprintf(key, sizeof key, "%s.kv_tokens", pre);
        const char *t = meta(g->info, key); /* more than 1: a batched prefill program (--prefill-batch) */
        text_cuda(g, pre, t && strtoull(t, NULL, 10) > 1 ? "cuda batched prefill:" : "cuda batched decode:");
    }
    text_kv(m);
    text_io(g, g->inputs, g->n_inputs, "inputs");
    text_io(g, g->outputs, g->n_outputs, "outputs");
    printf("nodes:       %u (main graph %u, %u subgraph%s)\n", st->n_nodes, g->n_nodes, st->n_subgraphs,
           st->n_subgraphs == 1 ? "" : "s");
    if (m->n_functions)
        printf("functions:   %u model-local (inlined)\n", m->n_functions);
    printf("op types (%u):\n", st->n_ops);
    for (uint32_t i = 0; i < st->n_ops; i++)
        printf("  %-28s %u\n", st->ops[i].op_type, st->ops[i].count);
    uint64_t pc = total(st->param_count), pb = total(st->param_bytes);
    human_bytes(pb, b1, sizeof b1);
    printf("parameters:  %" PRIu64 " in %" PRIu64 " constants, %s", pc, st->n_constants, b1);
    if (st->external_bytes) {
        human_bytes(st->external_bytes, b1, sizeof b1);
        printf(" (%s external)", b1);
    }
    printf("\n");
    for (int t = 0; t < KN_DTYPE_COUNT; t++) {
        if (!st->param_count[t])
            continue;
        human_bytes(st->param_bytes[t], b1, sizeof b1);
        printf("  %-12s %14" PRIu64 "  %s\n", kn_dtype_name((kn_dtype)t), st->param_count[t], b1);
    }
    if (!st->n_unsupported) {
        printf("unsupported: none\n");
        return;
    }
    printf("unsupported: %u op%s in %u node%s\n", st->n_unsupported, st->n_unsupported == 1 ? "" : "s",
           st->n_unsupported_nodes, st->n_unsupported_nodes == 1 ? "" : "s");
    for (uint32_t i = 0; i < st->n_unsupported; i++) {
        const kn_op_count *e = &st->unsupported[i];
        printf("  %s (%s, opset %" PRId64 ") x%u:", e->op_type, *e->domain ? e->domain : "ai.onnx", e->opset, e->count);
        for (uint32_t k = 0; k < e->count && k < 8; k++)
            printf("%s '%s'", k ? "," : "", e->nodes[k]);
        printf("%s\n", e->count > 8 ? ", ..." : "");
    }
}

static void json_type(kn_json *j, const kn_type *t)
{
    char buf[1024];
    kn_json_key(j, "kind");
    static const char *kinds[] = {"unknown", "tensor", "sparse_tensor", "sequence", "map", "optional"};
    kn_json_str(j, (unsigned)t->kind < 6 ? kinds[t->kind] : "unknown");
    if (t->kind == KN_TYPE_TENSOR || t->kind == KN_TYPE_SPARSE_TENSOR) {
        kn_json_key(j, "dtype");
        kn_json_str(j, t->dtype ? kn_dtype_name(t->dtype) : NULL);
        kn_json_key(j, "shape");
        if (t->shape.rank < 0) {
            kn_json_null(j);
        } else {
            kn_json_arr_begin(j);
            for (int32_t i = 0; i < t->shape.rank; i++) {
                const kn_dim *d = &t->shape.dims[i];
                if (d->value >= 0)
                    kn_json_int(j, d->value);
                else if (d->sym)
                    kn_json_str(j, d->sym);
                else
                    kn_json_null(j);
            }
            kn_json_arr_end(j);
        }
    }
    kn_json_key(j, "type");
    kn_type_format(t, buf, sizeof buf);
    kn_json_str(j, buf);
}

static void json_io(kn_json *j, const kn_graph *g, const kn_id *ids, uint32_t n)
{
    kn_json_arr_begin(j);
    for (uint32_t i = 0; i < n; i++) {
        const kn_value *v = &g->values[ids[i]];
        kn_json_obj_begin(j);
        kn_json_key(j, "name");
        kn_json_str(j, v->name);
        json_type(j, &v->type);
        kn_json_obj_end(j);
    }
    kn_json_arr_end(j);
}

static void print_json(const kn_graph *g, const kn_graph_stats *st, bool layers)
{
    const kn_model_info *m = g->info;
    kn_json j;
    kn_json_init(&j, stdout);
    kn_json_obj_begin(&j);
    kn_json_key(&j, "model");
    kn_json_str(&j, m->path);
    kn_json_key(&j, "kiln_version");
    kn_json_str(&j, KN_VERSION_STRING);
    kn_json_key(&j, "producer");
    kn_json_obj_begin(&j);
    kn_json_key(&j, "name");
    kn_json_str(&j, m->producer_name);
    kn_json_key(&j, "version");
    kn_json_str(&j, m->producer_version);
    kn_json_obj_end(&j);
    kn_json_key(&j, "ir_version");
    kn_json_int(&j, m->ir_version);
    kn_json_key(&j, "model_version");
    kn_json_int(&j, m->model_version);
    kn_json_key(&j, "domain");
    kn_json_str(&j, m->domain);
    kn_json_key(&j, "opsets");
    kn_json_arr_begin(&j);
    for (uint32_t i = 0; i < m->n_opsets; i++) {
        kn_json_obj_begin(&j);
        kn_json_key(&j, "domain");
        kn_json_str(&j, *m->opsets[i].domain ? m->opsets[i].domain : "ai.onnx");
        kn_json_key(&j, "version");
        kn_json_int(&j, m->opsets[i].version);
        kn_json_obj_end(&j);
    }
    kn_json_arr_end(&j);
    kn_json_key(&j, "metadata");
    kn_json_obj_begin(&j);
    for (uint32_t i = 0; i < m->n_metadata; i++) {
        kn_json_key(&j, m->metadata[i].key);
        kn_json_str(&j, m->metadata[i].value);
    }
    kn_json_obj_end(&j);
    kn_json_key(&j, "inputs");
    json_io(&j, g, g->inputs, g->n_inputs);
    kn_json_key(&j, "outputs");
    json_io(&j, g, g->outputs, g->n_outputs);
    kn_json_key(&j, "nodes");
    kn_json_uint(&j, st->n_nodes);
    kn_json_key(&j, "main_graph_nodes");
    kn_json_uint(&j, g->n_nodes);
    kn_json_key(&j, "subgraphs");
    kn_json_uint(&j, st->n_subgraphs);
    kn_json_key(&j, "functions_inlined");
    kn_json_uint(&j, m->n_functions);
    kn_json_key(&j, "op_types");
    kn_json_arr_begin(&j);
    for (uint32_t i = 0; i < st->n_ops; i++) {
        kn_json_obj_begin(&j);
        kn_json_key(&j, "op");
        kn_json_str(&j, st->ops[i].op_type);
        kn_json_key(&j, "domain");
        kn_json_str(&j, *st->ops[i].domain ? st->ops[i].domain : "ai.onnx");
        kn_json_key(&j, "count");
        kn_json_uint(&j, st->ops[i].count);
        kn_json_obj_end(&j);
    }
    kn_json_arr_end(&j);
    kn_json_key(&j, "parameters");
    kn_json_obj_begin(&j);
    kn_json_key(&j, "count");
    kn_json_uint(&j, total(st->param_count));
    kn_json_key(&j, "bytes");
    kn_json_uint(&j, total(st->param_bytes));
    kn_json_key(&j, "constants");
    kn_json_uint(&j, st->n_constants);
    kn_json_key(&j, "external_bytes");
    kn_json_uint(&j, st->external_bytes);
    kn_json_key(&j, "by_dtype");
    kn_json_obj_begin(&j);
    for (int t = 0; t < KN_DTYPE_COUNT; t++) {
        if (!st->param_count[t])
            continue;
        kn_json_key(&j, kn_dtype_name((kn_dtype)t));
        kn_json_obj_begin(&j);
        kn_json_key(&j, "count");
        kn_json_uint(&j, st->param_count[t]);
        kn_json_key(&j, "bytes");
        kn_json_uint(&j, st->param_bytes[t]);
        kn_json_obj_end(&j);
    }
    kn_json_obj_end(&j);
    kn_json_obj_end(&j);
    kn_json_key(&j, "unsupported");
    kn_json_arr_begin(&j);
    for (uint32_t i = 0; i < st->n_unsupported; i++) {
        const kn_op_count *e = &st->unsupported[i];
        kn_json_obj_begin(&j);
        kn_json_key(&j, "op");
        kn_json_str(&j, e->op_type);
        kn_json_key(&j, "domain");
        kn_json_str(&j, *e->domain ? e->domain : "ai.onnx");
        kn_json_key(&j, "opset");
        kn_json_int(&j, e->opset);
        kn_json_key(&j, "count");
        kn_json_uint(&j, e->count);
        kn_json_key(&j, "nodes");
        kn_json_arr_begin(&j);
        for (uint32_t k = 0; k < e->count; k++)
            kn_json_str(&j, e->nodes[k]);
        kn_json_arr_end(&j);
        kn_json_obj_end(&j);
    }
    kn_json_arr_end(&j);
    if (kn_plan_blob_count(g))
        kn_embed_print_json(&j, g);
    if (layers) {
        kn_json_key(&j, "layers");
        layers_json(&j, g);
    }
    kn_json_obj_end(&j);
    kn_json_finish(&j);
}

int kn_cmd_inspect(int argc, char **argv)
{
    const char *path = NULL;
    bool graph = false, json = false, layers = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage, stdout);
            return KN_EXIT_OK;
        } else if (strcmp(a, "--graph") == 0) {
            graph = true;
        } else if (strcmp(a, "--layers") == 0) {
            layers = true;
        } else if (strcmp(a, "--json") == 0) {
            json = true;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: inspect: unknown option '%s'\n\n%s", a, usage);
            return KN_EXIT_BAD_INPUT;
        } else if (path) {
            fprintf(stderr, "error: inspect: more than one model given ('%s', '%s')\n\n%s", path, a, usage);
            return KN_EXIT_BAD_INPUT;
        } else {
            path = a;
        }
    }
    if (!path) {
        fprintf(stderr, "error: inspect: no model given\n\n%s", usage);
        return KN_EXIT_BAD_INPUT;
    }
    if (graph && (json || layers)) {
        fprintf(stderr, "error: inspect: --graph and --%s cannot be combined\n", json ? "json" : "layers");
        return KN_EXIT_BAD_INPUT;
    }
    kn_diag *diag = kn_diag_create(NULL, stderr);
    if (!diag) {
        fprintf(stderr, "error: out of memory\n");
        return KN_EXIT_INTERNAL;
    }
    kn_graph *g = NULL;
    char magic[8] = {0};
    FILE *pf = fopen(path, "rb");
    bool is_plan = pf && fread(magic, 1, 8, pf) == 8 && memcmp(magic, "KILNPLAN", 8) == 0;
    if (pf)
        fclose(pf);
    kn_status s = is_plan ? kn_plan_load(path, NULL, diag, &g) : kn_import_onnx_file(path, NULL, NULL, diag, &g);
    if (s == KN_OK)
        s = kn_graph_verify(g, diag) == KN_OK ? KN_OK : KN_ERR_INTERNAL;
    if (s == KN_OK) {
        if (graph) {
            s = kn_graph_print(g, stdout);
        } else if (layers && !json) {
            layers_text(g, UINT32_MAX);
        } else {
            kn_graph_stats st;
            s = kn_graph_stats_compute(g, NULL, &st);
            if (s == KN_OK) {
                if (json) {
                    print_json(g, &st, layers || is_plan);
                } else {
                    print_text(g, &st);
                    if (is_plan) {
                        kn_embed_print_text(g);
                        layers_text(g, LAYERS_DEFAULT);
                    }
                }
                kn_graph_stats_free(g, &st);
            }
        }
    }
    if (s != KN_OK && kn_diag_count(diag, KN_ERROR) == 0)
        fprintf(stderr, "error: %s: %s\n", path, kn_status_str(s));
    kn_graph_destroy(g);
    kn_diag_destroy(diag);
    return kn_cli_exit_code(s);
}
