/* The precision pass: runs a model's float32 computation in float16 or
 * bfloat16. Every float32 value of the main graph becomes the target type
 * (constants converted), with casts at the graph's inputs and outputs so
 * its interface keeps the model's dtypes. Inputs the ONNX spec types as
 * float32 whatever the data (Resize/Upsample scales) stay float32, and
 * nodes matched by a --keep-fp32 pattern run in float32 between casts.
 * kiln.PagedAttention converts with the rest (Q, K, V, cos/sin, output)
 * and the runtime's KV cache then stores the target type (kiln.kv.dtype,
 * set here): the cache has one dtype, so a pattern matching any of the
 * nodes keeps them all, and the cache, in float32.
 * Kernels accumulate reductions, softmax and normalisation statistics in
 * float32 or wider whatever the storage type (CPU: double; CUDA: see
 * docs/cuda-codegen.md). */
#include "passes/passes.h"
#include "passes/rewrite.h"
#include "ir/arena.h"
#include "runtime/cpu/util.h"

#include <fnmatch.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The byte range of one constant's data. */
typedef struct span {
    uintptr_t lo, hi;
} span;

typedef struct pctx {
    kn_graph *g;
    kn_diag *d;
    kn_dtype to;
    const kn_precision_opts *o;
    kn_node *nodes;  /* the rebuilt node list */
    uint32_t n, cap;
    uint32_t n_casts;
    bool keep_attn; /* the PagedAttention nodes (and the KV cache) stay float32 */
    span *spans;    /* every constant's data in the graph, sorted (NULL: convert by copying) */
    uint32_t n_spans, cap_spans;
} pctx;

static bool keep_input_f32(kn_op op, uint32_t i)
{
    return (op == KN_OP_Resize && (i == 1 || i == 2)) || (op == KN_OP_Upsample && i == 1);
}

/* A --keep-fp32 pattern matches the node's name, its op type, or the name
 * of a model node it was fused or merged from (its `_origins`, e.g. the
 * k_proj MatMul inside merge-proj's Q|K|V product). */
static bool matched(const pctx *c, const kn_node *n)
{
    for (uint32_t i = 0; i < c->o->n_keep; i++) {
        if (fnmatch(c->o->keep[i], n->name, 0) == 0 || fnmatch(c->o->keep[i], n->op_type, 0) == 0)
            return true;
        for (uint32_t a = 0; a < n->n_attrs; a++) {
            const kn_attr *at = &n->attrs[a];
            if (at->kind != KN_ATTR_STRINGS || !at->name || strcmp(at->name, "_origins") != 0)
                continue;
            for (uint32_t k = 0; k < at->n; k++) {
                char name[1024];
                size_t len = at->u.strings[k].len < sizeof name - 1 ? at->u.strings[k].len : sizeof name - 1;
                memcpy(name, at->u.strings[k].data, len);
                name[len] = 0;
                if (fnmatch(c->o->keep[i], name, 0) == 0)
                    return true;
            }
        }
    }
    return false;
}

static bool kept(const pctx *c, const kn_node *n)
{
    if (n->op == KN_OP_KILN_PagedAttention) /* one cache, one dtype: all of them or none */
        return c->keep_attn;
    return matched(c, n);
}

static kn_status add_value(pctx *c, kn_str base, const char *suffix, kn_dtype dt, const kn_shape *shape, kn_id *out)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s%s", base, suffix);
    kn_value v = {0};
    KN_TRY(kn_graph_intern_cstr(c->g, buf, &v.name));
    v.kind = KN_VAL_NODE;
    v.type.kind = KN_TYPE_TENSOR;
    v.type.dtype = dt;
    v.type.shape = *shape;
    return kn_graph_add_value(c->g, &v, out);
}

/* Appends Cast(in) → out to the rebuilt node list. */
static kn_status push_cast(pctx *c, kn_id in, kn_id out, kn_dtype to)
{
    kn_graph *g = c->g;
    kn_node n = {0};
    char name[1024];
    snprintf(name, sizeof name, "%s/cast_%s", g->values[out].name, kn_dtype_name(to));
    KN_TRY(kn_graph_intern_cstr(g, name, &n.name));
    KN_TRY(kn_graph_intern_cstr(g, "Cast", &n.op_type));
    KN_TRY(kn_graph_intern_cstr(g, "", &n.domain));
    n.opset = 13;
    for (uint32_t i = 0; i < g->info->n_opsets; i++)
        if (kn_domain_of(g->info->opsets[i].domain) == KN_DOM_ONNX)
            n.opset = g->info->opsets[i].version < 13 ? 13 : g->info->opsets[i].version;
    n.op = kn_op_lookup("", "Cast", n.opset, NULL);
    n.n_inputs = 1;
    n.n_outputs = 1;
    n.inputs = kn_graph_alloc(g, sizeof(kn_id));
    n.outputs = kn_graph_alloc(g, sizeof(kn_id));
    n.attrs = kn_graph_alloc(g, sizeof(kn_attr));
    if (!n.inputs || !n.outputs || !n.attrs)
        return KN_ERR_NOMEM;
    n.inputs[0] = in;
    n.outputs[0] = out;
    KN_TRY(kn_graph_intern_cstr(g, "to", &n.attrs[0].name));
    n.attrs[0].kind = KN_ATTR_INT;
    n.attrs[0].u.i = to;
    n.n_attrs = 1;
    KN_TRY(kn_mem_grow(g->alloc, (void **)&c->nodes, &c->cap, c->n + 1, sizeof *c->nodes));
    g->values[out].producer = c->n;
    g->values[out].out_index = 0;
    c->nodes[c->n++] = n;
    c->n_casts++;
    return KN_OK;
}

/* A kiln.FusedElementwise node's program records each step's dtype: its
 * float32 steps compute in `to` like the nodes they came from would, and
 * the last step writes the output's dtype (`out`, float32 when the output
 * stays float32 without low-precision inputs). */
static kn_status retype_fused(kn_graph *g, kn_node *n, kn_dtype to, kn_dtype out)
{
    const kn_attr *a = kn_node_attr(n, "dtypes");
    if (!a || a->kind != KN_ATTR_INTS || a->n == 0)
        return KN_OK;
    int64_t *dt = kn_graph_alloc(g, a->n * sizeof *dt);
    if (!dt)
        return KN_ERR_NOMEM;
    for (uint32_t i = 0; i < a->n; i++)
        dt[i] = a->u.ints[i] == KN_F32 ? to : a->u.ints[i];
    if (a->u.ints[a->n - 1] == KN_F32 && (out == KN_F32 || out == to))
        dt[a->n - 1] = out;
    kn_attr na = *a;
    na.u.ints = dt;
    return kn_rw_set_attr(g, n, &na);
}

static bool is_f32(const kn_graph *g, kn_id v)
{
    return v != KN_NONE && g->values[v].type.kind == KN_TYPE_TENSOR && g->values[v].type.dtype == KN_F32;
}

/* float32 → float16 of a whole weight. On x86 with F16C, 8 at a time with
 * the CPU's conversion (round to nearest even; equal to kn_f32_to_f16 for
 * all 2^32 inputs, NaN payloads included: checked once exhaustively), a 1B
 * model's weights in well under a second; elsewhere the scalar form. */
#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx,f16c"))) static int64_t to_f16_f16c(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
#endif

static void to_f16(const void *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("f16c") && ((uintptr_t)src & 3) == 0)
        i = to_f16_f16c(src, dst, n);
#endif
    for (; i < n; i++) {
        float f;
        memcpy(&f, (const char *)src + 4 * i, 4);
        dst[i] = kn_f32_to_f16(f);
    }
}

/* ---- converting in place ----
 * The merged weights (fuse-gemm's gate|up, merge-proj's Q|K|V: most of a
 * decoder's bytes) are float32 buffers the passes gave the graph; writing
 * their float16 form into a fresh buffer doubles what a compile touches
 * (over 1 GB for a 1B model: seconds of page zeroing). Such a buffer is
 * converted where it lies (element i's two bytes land at byte 2i, never
 * past a float not yet read) when nothing else can see it: the tensor owns
 * it, the graph lends its data to no copy, and no other constant's data
 * (another tensor, or a second reader of this one) overlaps it. */

static kn_status note_span(pctx *c, const kn_tensor *t)
{
    if (!t || !t->data || !t->nbytes)
        return KN_OK;
    KN_TRY(kn_mem_grow(c->g->alloc, (void **)&c->spans, &c->cap_spans, c->n_spans + 1, sizeof *c->spans));
    c->spans[c->n_spans++] = (span){(uintptr_t)t->data, (uintptr_t)t->data + t->nbytes};
    return KN_OK;
}

static kn_status note_graph_spans(pctx *c, const kn_graph *g)
{
    for (kn_id v = 0; v < g->n_values; v++)
        KN_TRY(note_span(c, g->values[v].tensor));
    for (kn_id k = 0; k < g->n_nodes; k++)
        for (uint32_t i = 0; i < g->nodes[k].n_attrs; i++) {
            const kn_attr *at = &g->nodes[k].attrs[i];
            if (at->kind == KN_ATTR_TENSOR)
                KN_TRY(note_span(c, at->u.t));
            for (uint32_t j = 0; at->kind == KN_ATTR_TENSORS && j < at->n; j++)
                KN_TRY(note_span(c, at->u.tensors[j]));
        }
    for (uint32_t i = 0; i < g->n_subgraphs; i++)
        KN_TRY(note_graph_spans(c, g->subgraphs[i]));
    return KN_OK;
}

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo ? 1 : x->hi < y->hi ? -1 : x->hi > y->hi;
}

/* c->spans for the graph when it has an owned constant to convert (else
 * left NULL: every conversion copies). */
static kn_status collect_spans(pctx *c)
{
    kn_graph *g = c->g;
    if (g->data_owner || g->n_borrowers)
        return KN_OK;
    bool any = false;
    for (kn_id v = 0; v < g->n_values && !any; v++)
        any = g->values[v].kind == KN_VAL_CONST && g->values[v].tensor && g->values[v].tensor->owned;
    if (!any)
        return KN_OK;
    KN_TRY(note_graph_spans(c, g));
    if (g->info)
        for (uint32_t i = 0; i < g->info->n_plan_consts; i++)
            KN_TRY(note_span(c, g->info->plan_consts[i]));
    if (c->n_spans)
        qsort(c->spans, c->n_spans, sizeof *c->spans, span_cmp);
    return KN_OK;
}

/* Whether t's buffer may be rewritten: owned, float32, 4-byte aligned, and
 * its range in the sorted list once, touching neither neighbour. */
static bool in_place(const pctx *c, const kn_tensor *t)
{
    if (!c->spans || !t->owned || t->is_external || t->dtype != KN_F32 || !t->data ||
        t->nbytes != (size_t)t->n_elems * 4 || ((uintptr_t)t->data & 3))
        return false;
    uintptr_t lo = (uintptr_t)t->data, hi = lo + t->nbytes;
    uint32_t a = 0, b = c->n_spans;
    while (a < b) { /* the first span with lo' >= lo */
        uint32_t m = a + (b - a) / 2;
        if (c->spans[m].lo < lo)
            a = m + 1;
        else
            b = m;
    }
    if (a >= c->n_spans || c->spans[a].lo != lo || c->spans[a].hi != hi)
        return false;
    if (a > 0 && c->spans[a - 1].hi > lo)
        return false;
    return a + 1 >= c->n_spans || c->spans[a + 1].lo >= hi;
}

static kn_status convert_const(pctx *c, kn_tensor *t, kn_tensor **out)
{
    kn_tensor *n = kn_graph_alloc(c->g, sizeof *n);
    if (!n)
        return KN_ERR_NOMEM;
    bool here = in_place(c, t);
    const void *src = t->data;
    *n = *t;
    n->dtype = c->to;
    n->nbytes = (size_t)t->n_elems * 2;
    n->is_external = false;
    n->owned = true; /* the buffer below is n's alone either way */
    /* in place: 4 n bytes hold the 2 n + 2 a fresh buffer would (n >= 1) */
    uint16_t *d = here ? (uint16_t *)(uintptr_t)t->data : kn_graph_alloc_uninit(c->g, n->nbytes + 2);
    if (!d)
        return KN_ERR_NOMEM;
    if (here) {
        t->owned = false; /* the old tensor, read by nothing now, no longer describes the bytes */
        t->data = NULL;
        t->nbytes = 0;
    }
    if (c->to == KN_F16) {
        to_f16(src, d, t->n_elems);
    } else {
        for (int64_t i = 0; i < t->n_elems; i++) {
            float f;
            memcpy(&f, (const char *)src + 4 * i, 4);
            d[i] = kn_f32_to_bf16(f);
        }
    }
    n->data = d;
    *out = n;
    return KN_OK;
}

kn_status kn_pass_precision(kn_graph *g, const kn_precision_opts *o, kn_diag *d)
{
    if (!o || o->to == KN_F32 || o->to == KN_UNDEFINED)
        return KN_OK;
    if (o->to != KN_F16 && o->to != KN_BF16) {
        kn_diag_add(d, KN_ERROR, "precision: %s is not a supported target precision", kn_dtype_name(o->to));
        return KN_ERR_INVALID;
    }
    pctx c = {g, d, o->to, o, NULL, 0, 0, 0, false, NULL, 0, 0};
    uint32_t n_attn = 0;
    for (kn_id k = 0; k < g->n_nodes; k++)
        if (g->nodes[k].op == KN_OP_KILN_PagedAttention) {
            n_attn++;
            c.keep_attn = c.keep_attn || matched(&c, &g->nodes[k]);
        }
    const kn_allocator *a = g->alloc;
    uint32_t nv0 = g->n_values, nn0 = g->n_nodes;
    /* which float32 values stay float32: graph inputs/outputs (the
     * interface), inputs typed float32 by the spec, values of kept nodes */
    bool *stay = kn_mem_alloc(a, (size_t)nv0 + 1);
    kn_id *low = kn_mem_alloc(a, ((size_t)nv0 + 1) * sizeof *low); /* f32 value → its low-precision twin */
    kn_id *high = kn_mem_alloc(a, ((size_t)nv0 + 1) * sizeof *high); /* f32 twin of a low value */
    size_t bound = (size_t)nv0 + 1;
    for (kn_id k = 0; k < nn0; k++)
        bound += g->nodes[k].n_inputs + g->nodes[k].n_outputs;
    bool *is_low = kn_mem_alloc(a, bound); /* value holds low-precision data at run time */
    kn_status s = stay && low && high && is_low ? KN_OK : KN_ERR_NOMEM;
    if (s == KN_OK)
        s = collect_spans(&c);
    if (is_low)
        memset(is_low, 0, bound);
    if (s == KN_OK) {
        memset(stay, 0, (size_t)nv0 + 1);
        for (kn_id v = 0; v <= nv0; v++)
            low[v] = high[v] = KN_NONE;
        for (uint32_t i = 0; i < g->n_inputs; i++)
            stay[g->inputs[i]] = true;
        for (uint32_t i = 0; i < g->n_outputs; i++)
            stay[g->outputs[i]] = true;
        for (kn_id k = 0; k < nn0; k++) {
            const kn_node *n = &g->nodes[k];
            bool keep_node = kept(&c, n);
            for (uint32_t i = 0; i < n->n_outputs; i++)
                if (keep_node && n->outputs[i] != KN_NONE)
                    stay[n->outputs[i]] = true;
            for (uint32_t i = 0; i < n->n_attrs; i++) /* subgraphs read outer values as they are */
                if (n->attrs[i].kind == KN_ATTR_GRAPH || n->attrs[i].kind == KN_ATTR_GRAPHS) {
                    keep_node = true;
                    for (uint32_t j = 0; j < n->n_outputs; j++)
                        if (n->outputs[j] != KN_NONE)
                            stay[n->outputs[j]] = true;
                    const kn_attr *at = &n->attrs[i];
                    for (uint32_t j = 0; j < (at->kind == KN_ATTR_GRAPH ? 1 : at->n); j++) {
                        const kn_graph *sg = at->kind == KN_ATTR_GRAPH ? at->u.g : at->u.graphs[j];
                        for (kn_id v = 0; v < sg->n_values; v++)
                            if (sg->values[v].kind == KN_VAL_OUTER && sg->values[v].outer < nv0)
                                stay[sg->values[v].outer] = true;
                    }
                }
        }
    }
    /* convert what does not stay: constants now, node outputs by retyping */
    for (kn_id v = 0; s == KN_OK && v < nv0; v++) {
        if (!is_f32(g, v) || stay[v] || g->values[v].kind == KN_VAL_OUTER)
            continue;
        if (g->values[v].kind == KN_VAL_CONST)
            s = convert_const(&c, g->values[v].tensor, &g->values[v].tensor);
        g->values[v].type.dtype = o->to;
        low[v] = v;
        is_low[v] = true;
    }
    /* rebuild the node list, casting where a node's wanted precision differs */
    for (kn_id k = 0; s == KN_OK && k < nn0; k++) {
        kn_node n = g->nodes[k];
        bool keep_node = kept(&c, &n);
        for (uint32_t i = 0; i < n.n_attrs && !keep_node; i++)
            keep_node = n.attrs[i].kind == KN_ATTR_GRAPH || n.attrs[i].kind == KN_ATTR_GRAPHS;
        kn_id *ins = kn_graph_alloc(g, ((size_t)n.n_inputs + 1) * sizeof *ins);
        if (!ins) {
            s = KN_ERR_NOMEM;
            break;
        }
        for (uint32_t i = 0; s == KN_OK && i < n.n_inputs; i++) {
            kn_id v = n.inputs[i];
            ins[i] = v;
            if (v == KN_NONE || v >= nv0)
                continue;
            if (n.op == KN_OP_Shape || n.op == KN_OP_Size)
                continue; /* they read only the shape (the KV cache's past inputs carry nothing else) */
            bool want_f32 = keep_node || keep_input_f32(n.op, i);
            if (is_low[v] && want_f32) { /* low → f32 */
                if (high[v] == KN_NONE) {
                    s = add_value(&c, g->values[v].name, "/f32", KN_F32, &g->values[v].type.shape, &high[v]);
                    if (s == KN_OK)
                        s = push_cast(&c, v, high[v], KN_F32);
                }
                ins[i] = high[v];
            } else if (!is_low[v] && !want_f32 && is_f32(g, v) && stay[v]) { /* f32 interface value → low */
                if (low[v] == KN_NONE) {
                    s = add_value(&c, g->values[v].name, o->to == KN_F16 ? "/f16" : "/bf16", o->to,
                                  &g->values[v].type.shape, &low[v]);
                    if (s == KN_OK)
                        s = push_cast(&c, v, low[v], o->to);
                    if (s == KN_OK)
                        is_low[low[v]] = true;
                }
                ins[i] = low[v];
            }
        }
        n.inputs = ins;
        /* Cast to float32 inside the low-precision region stays low */
        const kn_attr *to_attr = n.op == KN_OP_Cast ? kn_node_attr(&n, "to") : NULL;
        bool cast_to_f32 = to_attr && to_attr->kind == KN_ATTR_INT && to_attr->u.i == KN_F32;
        if (s == KN_OK && cast_to_f32 && !keep_node && n.n_outputs == 1 && n.outputs[0] != KN_NONE &&
            n.outputs[0] < nv0 && !stay[n.outputs[0]]) {
            kn_attr *at = kn_graph_alloc(g, ((size_t)n.n_attrs + 1) * sizeof *at);
            if (!at) {
                s = KN_ERR_NOMEM;
                break;
            }
            memcpy(at, n.attrs, n.n_attrs * sizeof *at);
            for (uint32_t i = 0; i < n.n_attrs; i++)
                if (strcmp(at[i].name, "to") == 0)
                    at[i].u.i = o->to;
            n.attrs = at;
            is_low[n.outputs[0]] = true;
            g->values[n.outputs[0]].type.dtype = o->to;
        }
        /* a graph output computed in low precision: compute into a twin, cast back */
        kn_id *outs = kn_graph_alloc(g, ((size_t)n.n_outputs + 1) * sizeof *outs);
        if (!outs) {
            s = KN_ERR_NOMEM;
            break;
        }
        memcpy(outs, n.outputs, n.n_outputs * sizeof *outs);
        n.outputs = outs;
        kn_id pending[16];
        uint32_t n_pending = 0;
        bool computes_low = false;
        for (uint32_t i = 0; i < n.n_inputs; i++)
            computes_low |= n.inputs[i] != KN_NONE && is_low[n.inputs[i]];
        /* float outputs of a node that computes in low precision are low */
        for (uint32_t i = 0; i < n.n_outputs; i++) {
            kn_id v = n.outputs[i];
            if (v == KN_NONE || v >= nv0 || keep_node || !computes_low || n.op == KN_OP_Cast || stay[v])
                continue;
            const kn_type *t = &g->values[v].type;
            if (t->kind == KN_TYPE_UNKNOWN || (t->kind == KN_TYPE_TENSOR && (t->dtype == KN_UNDEFINED ||
                                                                              t->dtype == o->to)))
                is_low[v] = true;
        }
        for (uint32_t i = 0; s == KN_OK && i < n.n_outputs && n_pending < 16; i++) {
            kn_id v = n.outputs[i];
            if (v == KN_NONE || v >= nv0 || !stay[v] || !is_f32(g, v) || keep_node || !computes_low ||
                n.op == KN_OP_Cast)
                continue;
            kn_id tw;
            s = add_value(&c, g->values[v].name, o->to == KN_F16 ? "/f16" : "/bf16", o->to, &g->values[v].type.shape,
                          &tw);
            if (s != KN_OK)
                break;
            g->values[tw].out_index = i;
            is_low[tw] = true;
            low[v] = tw; /* readers that want v in low precision read the twin */
            outs[i] = tw;
            pending[n_pending++] = v;
            pending[n_pending++] = tw;
        }
        if (s != KN_OK)
            break;
        s = kn_mem_grow(a, (void **)&c.nodes, &c.cap, c.n + 1, sizeof *c.nodes);
        if (s != KN_OK)
            break;
        if (n.op == KN_OP_KILN_FusedElementwise && !keep_node && n.n_outputs == 1 && n.outputs[0] != KN_NONE &&
            (s = retype_fused(g, &n, o->to, g->values[n.outputs[0]].type.dtype)) != KN_OK)
            break;
        for (uint32_t i = 0; i < n.n_outputs; i++)
            if (n.outputs[i] != KN_NONE)
                g->values[n.outputs[i]].producer = c.n;
        c.nodes[c.n++] = n;
        for (uint32_t i = 0; s == KN_OK && i + 1 < n_pending; i += 2)
            s = push_cast(&c, pending[i + 1], pending[i], KN_F32);
    }
    if (s == KN_OK) {
        kn_mem_free(a, g->nodes);
        g->nodes = c.nodes;
        g->n_nodes = c.n;
        g->cap_nodes = c.cap;
        c.nodes = NULL;
        if (o->verbose)
            fprintf(stderr, "note: precision %s: %u casts inserted\n", kn_dtype_name(o->to), c.n_casts);
        if (n_attn && !c.keep_attn && kn_rw_get_meta(g, "kiln.kv.layers"))
            s = kn_kv_cache_set_dtype(g, o->to, d);
        if (o->verbose && n_attn)
            fprintf(stderr, "note: precision %s: the KV cache stores %s (%u PagedAttention nodes)\n",
                    kn_dtype_name(o->to), kn_dtype_name(c.keep_attn ? KN_F32 : o->to), n_attn);
    } else if (s == KN_ERR_NOMEM) {
        kn_diag_add(d, KN_ERROR, "out of memory in the precision pass");
    }
    kn_mem_free(a, c.nodes);
    kn_mem_free(a, c.spans);
    kn_mem_free(a, stay);
    kn_mem_free(a, low);
    kn_mem_free(a, high);
    kn_mem_free(a, is_low);
    return s;
}
