/* passes/fuse_skip_norm.c: Add -> RMSNormalization / LayerNormalization
 * becomes kiln.SkipRMSNorm / kiln.SkipLayerNorm (with and without B) on
 * small hand-built graphs, its outputs bit-identical to the unfused Add +
 * norm on the CPU backend (float32 and
 * float16; the sum kept when read later or a graph output, dropped
 * otherwise), and the graphs it must leave alone stay: a broadcasting
 * Add, dims that may differ (other symbols), the norm reading a Cast of
 * the sum (another dtype), the sum read before the norm, the sum read by
 * a subgraph, a LayerNormalization whose Mean is read. Also the pass under
 * an allocation-failure sweep. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"
#include "kiln/kiln.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <string.h>

/* distinct values per input, some large enough that float16 sums round */
static void fill(kn_rt_tensor *t, uint32_t i)
{
    for (int64_t e = 0; e < t->numel; e++)
        kn_set_f64(t->dtype, t->data, e, 3.1 * sin(0.37 * (double)e + 1.3 * i) + (i ? 0.001 * (double)e : 17.0));
}

enum { SUM_READ_LATER, SUM_UNREAD, SUM_OUTPUT, BROADCAST, OTHER_SYMBOLS, CAST_BETWEEN, READ_BEFORE, SUBGRAPH };
/* the norm: RMSNormalization, LayerNormalization with B, without B, with its Mean read */
enum { RMS, LN, LN_NO_B, LN_MEAN, LN_MEAN_UNREAD };
static int norm = RMS;

/* s = Add(x, r); y = RMSNormalization(s, w); z = Add(s, y) (the next
 * residual) in the variants that read s later. */
static Onnx__ModelProto *model(mb *b, int variant, int dt, const char *xdims, const char *rdims)
{
    Onnx__ModelProto *m = mb_model(b, 23);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, dt, xdims));
    mb_input(b, g, "r", mb_tensor_type(b, dt, variant == BROADCAST ? "8" : rdims));
    Onnx__TensorProto *w = mb_initializer(b, g, "w", dt, (int64_t[]){8}, 1);
    uint16_t wh[8];
    float wf[8];
    for (int i = 0; i < 8; i++) {
        wf[i] = 0.5f + 0.125f * (float)i;
        kn_set_f64(KN_F16, wh, i, wf[i]);
    }
    if (dt == KN_F16)
        mb_raw(b, w, wh, sizeof wh);
    else
        mb_float_data(b, w, wf, 8);
    mb_initializer(b, g, "bias", dt, (int64_t[]){8}, 1);
    for (int i = 0; i < 8; i++) {
        wf[i] = 0.25f - 0.0625f * (float)i;
        kn_set_f64(KN_F16, wh, i, wf[i]);
    }
    if (dt == KN_F16)
        mb_raw(b, g->initializer[g->n_initializer - 1], wh, sizeof wh);
    else
        mb_float_data(b, g->initializer[g->n_initializer - 1], wf, 8);
    mb_node(b, g, "Add", "res", "x,r", "s");
    if (variant == READ_BEFORE)
        mb_node(b, g, "Mul", "early", "s,s", "t");
    if (variant == CAST_BETWEEN) {
        mb_node(b, g, "Cast", "cast", "s", "s16");
        mb_attr_i(b, g->node[g->n_node - 1], "to", KN_F16);
        mb_node(b, g, "RMSNormalization", "norm", "s16,w16", "y");
        mb_node(b, g, "Cast", "castw", "w", "w16");
        mb_attr_i(b, g->node[g->n_node - 1], "to", KN_F16);
        /* Cast w before its reader */
        Onnx__NodeProto *t = g->node[g->n_node - 1];
        g->node[g->n_node - 1] = g->node[g->n_node - 2];
        g->node[g->n_node - 2] = t;
    } else if (norm == RMS) {
        mb_node(b, g, "RMSNormalization", "norm", "s,w", "y");
    } else {
        mb_node(b, g, "LayerNormalization", "norm", norm == LN_NO_B ? "s,w" : "s,w,bias",
                norm >= LN_MEAN ? "y,mean" : "y");
        if (norm == LN_MEAN)
            mb_output(b, g, "mean", NULL);
    }
    mb_attr_f(b, g->node[g->n_node - 1], "epsilon", 1e-5f);
    if (variant == SUM_READ_LATER || variant == READ_BEFORE || variant == BROADCAST || variant == OTHER_SYMBOLS) {
        mb_node(b, g, "Add", "res2", "s,y", "z");
        mb_output(b, g, "z", NULL);
    }
    if (variant == SUBGRAPH) { /* If(c) { then: Identity(s) } else { Identity(y) } */
        mb_input(b, g, "c", mb_tensor_type(b, KN_BOOL, ""));
        Onnx__GraphProto *th = mb_graph(b, "then"), *el = mb_graph(b, "else");
        mb_node(b, th, "Identity", "ti", "s", "to");
        mb_output(b, th, "to", mb_tensor_type(b, dt, xdims));
        mb_node(b, el, "Identity", "ei", "y", "eo");
        mb_output(b, el, "eo", mb_tensor_type(b, dt, xdims));
        Onnx__NodeProto *n = mb_node(b, g, "If", "if", "c", "u");
        mb_attr_g(b, n, "then_branch", th);
        mb_attr_g(b, n, "else_branch", el);
        mb_output(b, g, "u", NULL);
    }
    mb_output(b, g, "y", NULL);
    if (variant == SUM_OUTPUT)
        mb_output(b, g, "s", NULL);
    if (variant == READ_BEFORE)
        mb_output(b, g, "t", NULL);
    return m;
}

static const kn_node *skip_node(const kn_graph *g)
{
    const kn_node *n = pc_find(g, norm == RMS ? "SkipRMSNorm" : "SkipLayerNorm");
    assert_non_null(n);
    assert_int_equal(n->op, norm == RMS ? KN_OP_KILN_SkipRMSNorm : KN_OP_KILN_SkipLayerNorm);
    assert_int_equal(n->n_inputs, norm == RMS || norm == LN_NO_B ? 3 : 4);
    assert_true(fc_origins(n, 2, "res"));
    const kn_attr *e = kn_node_attr(n, "epsilon");
    assert_non_null(e);
    assert_true(fabsf(e->u.f - 1e-5f) < 1e-12f);
    return n;
}

static void fused(int variant, int dt, const char *dims, uint32_t n_outputs, uint32_t adds_left)
{
    mb *b = mb_new();
    kn_graph *g = fc_apply_with(b, model(b, variant, dt, dims, dims), kn_pass_fuse_skip_norm, fill, -1);
    const kn_node *n = skip_node(g);
    uint32_t live = 0;
    for (uint32_t i = 0; i < n->n_outputs; i++)
        live += n->outputs[i] != KN_NONE;
    assert_int_equal(live, n_outputs);
    assert_int_equal(pc_count(g, "Add"), adds_left);
    assert_int_equal(pc_count(g, "RMSNormalization") + pc_count(g, "LayerNormalization"), 0);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_sum_read_later(void **s)
{
    (void)s;
    for (norm = RMS; norm <= LN_NO_B; norm++) {
        fused(SUM_READ_LATER, KN_F32, "2,3,8", 2, 1);
        fused(SUM_READ_LATER, KN_F16, "2,3,8", 2, 1);
        fused(SUM_READ_LATER, KN_F32, "batch,seq,8", 2, 1); /* the same symbols */
    }
    norm = RMS;
}

static void test_sum_unread(void **s)
{
    (void)s;
    for (norm = RMS; norm <= LN_NO_B; norm++) {
        fused(SUM_UNREAD, KN_F32, "5,8", 1, 0);
        fused(SUM_UNREAD, KN_F16, "5,8", 1, 0);
    }
    norm = RMS;
}

static void test_sum_graph_output(void **s)
{
    (void)s;
    for (norm = RMS; norm <= LN_NO_B; norm++)
        fused(SUM_OUTPUT, KN_F32, "2,3,8", 2, 0);
    norm = LN_MEAN_UNREAD; /* a Mean output nothing reads goes */
    fused(SUM_OUTPUT, KN_F32, "2,3,8", 2, 0);
    norm = RMS;
}

static void unchanged(int variant, const char *xdims, const char *rdims)
{
    mb *b = mb_new();
    kn_graph *g = fc_apply_unchanged(b, model(b, variant, KN_F32, xdims, rdims), kn_pass_fuse_skip_norm);
    assert_int_equal(pc_count(g, "SkipRMSNorm"), 0);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_not_fused(void **s)
{
    (void)s;
    unchanged(BROADCAST, "2,3,8", "2,3,8");
    unchanged(OTHER_SYMBOLS, "a,3,8", "b,3,8");
    unchanged(CAST_BETWEEN, "2,3,8", "2,3,8");
    unchanged(READ_BEFORE, "2,3,8", "2,3,8");
    norm = LN;
    unchanged(BROADCAST, "2,3,8", "2,3,8");
    unchanged(READ_BEFORE, "2,3,8", "2,3,8");
    norm = LN_MEAN; /* LayerNormalization's Mean is read: the fused node has no such output */
    unchanged(SUM_UNREAD, "2,3,8", "2,3,8");
    norm = RMS;
}

/* s read inside an If branch: pinned by the subgraph. */
static void test_subgraph_reader(void **s)
{
    (void)s;
    mb *b = mb_new();
    kn_graph *g = pc_import(b, model(b, SUBGRAPH, KN_F32, "2,8", "2,8"));
    uint32_t n0 = g->n_nodes;
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_fuse_skip_norm(g, d), KN_OK);
    assert_int_equal(kn_graph_verify(g, d), KN_OK);
    assert_int_equal(g->n_nodes, n0);
    assert_int_equal(pc_count(g, "SkipRMSNorm"), 0);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
    mb_free(b);
}

typedef struct sweep_ctx {
    const uint8_t *bytes;
    size_t len;
} sweep_ctx;

static kn_status import_and_fuse(const kn_allocator *a, kn_diag *d, void *ctx)
{
    const sweep_ctx *c = ctx;
    kn_graph *g = NULL;
    KN_TRY(kn_import_onnx_memory(c->bytes, c->len, NULL, "skip.onnx", NULL, a, d, &g));
    kn_status s = kn_pass_infer_shapes(g, d);
    if (s == KN_OK)
        s = kn_pass_fuse_skip_norm(g, d);
    if (s == KN_OK && pc_count(g, "SkipRMSNorm") != 1)
        s = KN_ERR_INTERNAL;
    kn_graph_destroy(g);
    return s;
}

static void test_alloc_sweep(void **s)
{
    (void)s;
    mb *b = mb_new();
    sweep_ctx c;
    c.bytes = mb_pack(b, model(b, SUM_READ_LATER, KN_F32, "2,3,8", "2,3,8"), &c.len);
    long fails = mb_alloc_sweep(import_and_fuse, &c);
    assert_true(fails > 0);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sum_read_later), cmocka_unit_test(test_sum_unread),
        cmocka_unit_test(test_sum_graph_output), cmocka_unit_test(test_not_fused),
        cmocka_unit_test(test_subgraph_reader), cmocka_unit_test(test_alloc_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
