/* The optimizer's passes on small hand-built graphs: each rewrite checked
 * by node counts, kn_graph_verify and numerically (the graph run on the
 * CPU before and after the pass), including cases that must not change. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "pass_check.h"
#include "runtime/cpu/exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void f32_init(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *dims, size_t rank, float base)
{
    size_t n = 1;
    for (size_t i = 0; i < rank; i++)
        n *= (size_t)dims[i];
    float *v = mb_alloc(b, n * sizeof *v + 1);
    for (size_t i = 0; i < n; i++)
        v[i] = base + 0.01f * (float)(i % 17);
    mb_float_data(b, mb_initializer(b, g, name, KN_F32, dims, rank), v, n);
}

static void i64_init(mb *b, Onnx__GraphProto *g, const char *name, const int64_t *v, size_t n, bool scalar)
{
    int64_t d[1] = {(int64_t)n};
    mb_int64_data(b, mb_initializer(b, g, name, KN_I64, d, scalar ? 0 : 1), v, n);
}

static void destroy2(kn_graph *a, kn_graph *b)
{
    kn_graph_destroy(a);
    kn_graph_destroy(b);
}

/* ---- fold ---- */

static void test_fold_constants(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    f32_init(b, g, "a", (int64_t[]){2, 3}, 2, 1.0f);
    f32_init(b, g, "c", (int64_t[]){3}, 1, 0.5f);
    mb_node(b, g, "Add", "add", "a,c", "s");   /* constant */
    mb_node(b, g, "Sqrt", "sq", "s", "r");     /* constant, through the first */
    mb_node(b, g, "Mul", "mul", "x,r", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_fold, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Add") + pc_count(g1, "Sqrt"), 0);
    assert_int_equal(g1->n_nodes, 1);
    destroy2(g0, g1);
    mb_free(b);
}

static void test_fold_size_limit(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4096"));
    f32_init(b, g, "one", (int64_t[]){1}, 1, 1.0f);
    i64_init(b, g, "shape", (int64_t[]){4096}, 1, false);
    mb_node(b, g, "Expand", "ex", "one,shape", "e"); /* 16 KiB from 12 bytes: stays */
    mb_node(b, g, "Add", "add", "x,e", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_fold, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Expand"), 1);
    assert_int_equal(g1->n_nodes, 2);
    destroy2(g0, g1);
    mb_free(b);
}

static void test_fold_random_kept(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2"));
    f32_init(b, g, "c", (int64_t[]){2}, 1, 1.0f);
    mb_node(b, g, "RandomUniformLike", "rnd", "c", "r");
    mb_node(b, g, "Mul", "mul", "r,c", "z");
    mb_node(b, g, "Add", "add", "x,z", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_fold(g1, d), KN_OK);
    assert_int_equal(kn_graph_verify(g1, d), KN_OK);
    assert_int_equal(pc_count(g1, "RandomUniformLike"), 1);
    assert_int_equal(pc_count(g1, "Mul"), 1);
    kn_diag_destroy(d);
    kn_graph_destroy(g1);
    mb_free(b);
}

/* Shape of a static tensor → Gather → Unsqueeze → Concat → Reshape. */
static void test_fold_static_shape_chain(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    i64_init(b, g, "i1", (int64_t[]){1}, 1, true);
    i64_init(b, g, "ax", (int64_t[]){0}, 1, false);
    i64_init(b, g, "m1", (int64_t[]){-1}, 1, false);
    mb_node(b, g, "Shape", "shp", "x", "s");
    mb_node(b, g, "Gather", "ga", "s,i1", "d1");
    mb_node(b, g, "Unsqueeze", "un", "d1,ax", "u1");
    mb_node(b, g, "Concat", "cat", "m1,u1", "t");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", 0);
    mb_node(b, g, "Reshape", "rs", "x,t", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_fold, kn_pass_dce, (kn_pass_fn)NULL);
    assert_int_equal(g1->n_nodes, 1);
    const kn_node *rs = pc_find(g1, "Reshape");
    assert_int_equal(g1->values[rs->inputs[1]].kind, KN_VAL_CONST);
    destroy2(g0, g1);
    mb_free(b);
}

/* [batch, seq, 8] → Reshape to [batch, seq, 2, 4] computed from Shape:
 * the target becomes the constant [0, 0, 2, 4]. */
static void test_fold_symbolic_reshape(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,seq,8"));
    i64_init(b, g, "i0", (int64_t[]){0}, 1, true);
    i64_init(b, g, "i1", (int64_t[]){1}, 1, true);
    i64_init(b, g, "ax", (int64_t[]){0}, 1, false);
    i64_init(b, g, "heads", (int64_t[]){2, 4}, 2, false);
    mb_node(b, g, "Relu", "relu", "x", "r");
    mb_node(b, g, "Shape", "shp", "r", "s");
    mb_node(b, g, "Gather", "g0", "s,i0", "d0");
    mb_node(b, g, "Gather", "g1", "s,i1", "d1");
    mb_node(b, g, "Unsqueeze", "u0", "d0,ax", "e0");
    mb_node(b, g, "Unsqueeze", "u1", "d1,ax", "e1");
    mb_node(b, g, "Concat", "cat", "e0,e1,heads", "t");
    mb_attr_i(b, g->node[g->n_node - 1], "axis", 0);
    mb_node(b, g, "Reshape", "rs", "r,t", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_fold, kn_pass_dce, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Shape") + pc_count(g1, "Gather") + pc_count(g1, "Concat"), 0);
    assert_int_equal(g1->n_nodes, 2);
    const kn_node *rs = pc_find(g1, "Reshape");
    const kn_tensor *t = g1->values[rs->inputs[1]].tensor;
    assert_non_null(t);
    assert_int_equal(t->n_elems, 4);
    assert_memory_equal(t->data, ((int64_t[]){0, 0, 2, 4}), 32);
    destroy2(g0, g1);
    mb_free(b);
}

/* A dim that is not the data's own (from another input) must stay. */
static void test_fold_symbolic_not_provable(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "a,b"));
    mb_input(b, g, "z", mb_tensor_type(b, KN_F32, "c,d"));
    mb_node(b, g, "Shape", "shp", "z", "s");
    mb_node(b, g, "Reshape", "rs", "x,s", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g1 = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_fold(g1, d), KN_OK);
    assert_int_equal(kn_graph_verify(g1, d), KN_OK);
    assert_int_equal(pc_count(g1, "Shape"), 1);
    assert_int_equal(g1->values[pc_find(g1, "Reshape")->inputs[1]].kind, KN_VAL_NODE);
    kn_diag_destroy(d);
    kn_graph_destroy(g1);
    mb_free(b);
}

/* ---- dce, cse, dedup ---- */

static void test_dce(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4"));
    f32_init(b, g, "unused_w", (int64_t[]){4}, 1, 1.0f);
    mb_node(b, g, "Relu", "relu", "x", "r");
    mb_node(b, g, "Sigmoid", "dead1", "r", "s");
    mb_node(b, g, "Mul", "dead2", "s,unused_w", "t");
    mb_node(b, g, "Neg", "neg", "r", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_dce, (kn_pass_fn)NULL);
    assert_int_equal(g1->n_nodes, 2);
    for (kn_id v = 0; v < g1->n_values; v++)
        assert_string_not_equal(g1->values[v].name, "unused_w");
    destroy2(g0, g1);
    mb_free(b);
}

static void test_cse(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    mb_node(b, g, "Relu", "r1", "x", "a");
    mb_node(b, g, "Relu", "r2", "x", "b");         /* same as r1 */
    mb_node(b, g, "Sigmoid", "s1", "a", "c");
    mb_node(b, g, "Sigmoid", "s2", "b", "d");      /* same once r2 is merged */
    mb_node(b, g, "Transpose", "t1", "x", "e");
    mb_attr_ints(b, g->node[g->n_node - 1], "perm", (int64_t[]){1, 0}, 2);
    mb_node(b, g, "Transpose", "t2", "x", "f");    /* other attributes: kept */
    mb_attr_ints(b, g->node[g->n_node - 1], "perm", (int64_t[]){0, 1}, 2);
    mb_node(b, g, "Add", "add", "c,d", "y");
    mb_node(b, g, "Tanh", "th", "x", "o2");         /* a graph output... */
    mb_node(b, g, "Tanh", "th2", "x", "o3");        /* ...and its twin, also an output: kept */
    mb_output(b, g, "y", NULL);
    mb_output(b, g, "e", NULL);
    mb_output(b, g, "f", NULL);
    mb_output(b, g, "o2", NULL);
    mb_output(b, g, "o3", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_cse, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Relu"), 1);
    assert_int_equal(pc_count(g1, "Sigmoid"), 1);
    assert_int_equal(pc_count(g1, "Transpose"), 2);
    assert_int_equal(pc_count(g1, "Tanh"), 2);
    destroy2(g0, g1);
    mb_free(b);
}

static void test_dedup(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "3"));
    f32_init(b, g, "c1", (int64_t[]){3}, 1, 2.0f);
    f32_init(b, g, "c2", (int64_t[]){3}, 1, 2.0f); /* same bytes */
    f32_init(b, g, "c3", (int64_t[]){3}, 1, 3.0f); /* other bytes */
    f32_init(b, g, "c4", (int64_t[]){1, 3}, 2, 2.0f); /* other shape */
    mb_node(b, g, "Add", "a1", "x,c1", "p");
    mb_node(b, g, "Mul", "a2", "p,c2", "q");
    mb_node(b, g, "Sub", "a3", "q,c3", "r");
    mb_node(b, g, "Add", "a4", "r,c4", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_dedup, (kn_pass_fn)NULL);
    uint32_t consts = 0;
    for (kn_id v = 0; v < g1->n_values; v++)
        consts += g1->values[v].kind == KN_VAL_CONST;
    assert_int_equal(consts, 3);
    assert_int_equal(g1->nodes[0].inputs[1], g1->nodes[1].inputs[1]);
    destroy2(g0, g1);
    mb_free(b);
}

/* ---- noop ---- */

static void test_noop(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    i64_init(b, g, "same", (int64_t[]){0, 3}, 2, false);
    i64_init(b, g, "other", (int64_t[]){3, 2}, 2, false);
    i64_init(b, g, "ex", (int64_t[]){1, 3}, 2, false);
    i64_init(b, g, "ax", (int64_t[]){1}, 1, false);
    mb_node(b, g, "Identity", "id", "x", "a");
    Onnx__NodeProto *c = mb_node(b, g, "Cast", "c32", "a", "b");
    mb_attr_i(b, c, "to", KN_F32);
    mb_node(b, g, "Reshape", "rs", "b,same", "c");
    mb_node(b, g, "Dropout", "dr", "c", "d");
    Onnx__NodeProto *t = mb_node(b, g, "Transpose", "tr", "d", "e");
    mb_attr_ints(b, t, "perm", (int64_t[]){0, 1}, 2);
    mb_node(b, g, "Expand", "exp", "e,ex", "f");
    mb_node(b, g, "Unsqueeze", "un", "f,ax", "h");
    mb_node(b, g, "Squeeze", "sq", "h,ax", "i");
    /* these change something and stay */
    Onnx__NodeProto *c16 = mb_node(b, g, "Cast", "c16", "i", "j");
    mb_attr_i(b, c16, "to", KN_F16);
    mb_node(b, g, "Reshape", "rs2", "i,other", "k");
    Onnx__NodeProto *t2 = mb_node(b, g, "Transpose", "tr2", "i", "l");
    mb_attr_ints(b, t2, "perm", (int64_t[]){1, 0}, 2);
    mb_node(b, g, "Relu", "relu", "i", "r");
    mb_node(b, g, "Identity", "out_id", "r", "y"); /* y is an output: relu writes it */
    mb_output(b, g, "j", NULL);
    mb_output(b, g, "k", NULL);
    mb_output(b, g, "l", NULL);
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_noop, kn_pass_dce, (kn_pass_fn)NULL);
    assert_int_equal(g1->n_nodes, 4);
    assert_int_equal(pc_count(g1, "Cast"), 1);
    assert_int_equal(pc_count(g1, "Reshape"), 1);
    assert_int_equal(pc_count(g1, "Transpose"), 1);
    assert_int_equal(pc_count(g1, "Relu"), 1);
    assert_int_equal(pc_count(g1, "Identity"), 0);
    assert_string_equal(g1->values[pc_find(g1, "Relu")->outputs[0]].name, "y");
    destroy2(g0, g1);
    mb_free(b);
}

/* Dropout whose mask is read, and an Identity from a graph input to a
 * graph output: kept. */
static void test_noop_kept(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    mb_node(b, g, "Dropout", "dr", "x", "d,mask");
    mb_node(b, g, "Identity", "id", "x", "y");
    mb_output(b, g, "d", NULL);
    mb_output(b, g, "mask", NULL);
    mb_output(b, g, "y", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_noop, (kn_pass_fn)NULL);
    assert_int_equal(g1->n_nodes, 2);
    destroy2(g0, g1);
    mb_free(b);
}

/* ---- transpose ---- */

static void test_transpose(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3,4"));
    mb_node(b, g, "Relu", "relu", "x", "r");
    mb_attr_ints(b, mb_node(b, g, "Transpose", "t1", "r", "a"), "perm", (int64_t[]){0, 2, 1}, 3);
    mb_attr_ints(b, mb_node(b, g, "Transpose", "t2", "a", "y1"), "perm", (int64_t[]){0, 2, 1}, 3); /* identity */
    mb_attr_ints(b, mb_node(b, g, "Transpose", "t3", "r", "c"), "perm", (int64_t[]){1, 0, 2}, 3);
    mb_attr_ints(b, mb_node(b, g, "Transpose", "t4", "c", "y2"), "perm", (int64_t[]){0, 2, 1}, 3); /* not */
    mb_output(b, g, "y1", NULL);
    mb_output(b, g, "y2", NULL);
    kn_graph *g0, *g1 = pc_apply(b, m, &g0, kn_pass_transpose, (kn_pass_fn)NULL);
    assert_int_equal(pc_count(g1, "Transpose"), 1); /* t1, t2 gone; t3 + t4 → one */
    const kn_attr *p = kn_node_attr(pc_find(g1, "Transpose"), "perm");
    assert_non_null(p);
    assert_memory_equal(p->u.ints, ((int64_t[]){1, 2, 0}), 3 * sizeof(int64_t));
    assert_string_equal(g1->values[pc_find(g1, "Relu")->outputs[0]].name, "y1");
    destroy2(g0, g1);
    mb_free(b);
}

/* ---- bn-fold ---- */

static void add_bn(mb *b, Onnx__GraphProto *g, const char *pre, int64_t c, const char *in, const char *out)
{
    char n[4][64];
    const char *what[4] = {"scale", "bias", "mean", "var"};
    for (int i = 0; i < 4; i++) {
        snprintf(n[i], sizeof n[i], "%s_%s", pre, what[i]);
        f32_init(b, g, n[i], (int64_t[]){c}, 1, i == 3 ? 0.5f : 0.1f * (float)(i + 1));
    }
    char ins[512];
    snprintf(ins, sizeof ins, "%s,%s,%s,%s,%s", in, n[0], n[1], n[2], n[3]);
    mb_attr_f(b, mb_node(b, g, "BatchNormalization", pre, ins, out), "epsilon", 1e-3f);
}

static void test_bn_fold(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "1,2,5,5"));
    mb_input(b, g, "v", mb_tensor_type(b, KN_F32, "2,3"));
    f32_init(b, g, "w", (int64_t[]){4, 2, 3, 3}, 4, -0.05f);
    f32_init(b, g, "cb", (int64_t[]){4}, 1, 0.2f);
    mb_node(b, g, "Conv", "conv", "x,w,cb", "c");
    add_bn(b, g, "bn1", 4, "c", "y1");
    mb_node(b, g, "Conv", "conv2", "x,w", "c2");   /* no bias */
    add_bn(b, g, "bn2", 4, "c2", "y2");
    mb_node(b, g, "Conv", "conv3", "x,w", "c3");   /* also read elsewhere: stays */
    add_bn(b, g, "bn3", 4, "c3", "y3");
    mb_node(b, g, "Relu", "relu", "c3", "y4");
    f32_init(b, g, "gw", (int64_t[]){4, 3}, 2, 0.3f);  /* Gemm, transB: B is [N=4, K=3] */
    f32_init(b, g, "gc", (int64_t[]){4}, 1, 0.1f);
    Onnx__NodeProto *gm = mb_node(b, g, "Gemm", "gemm", "v,gw,gc", "gm");
    mb_attr_i(b, gm, "transB", 1);
    mb_attr_f(b, gm, "beta", 0.5f);
    add_bn(b, g, "bn4", 4, "gm", "y5");
    f32_init(b, g, "gw2", (int64_t[]){3, 4}, 2, 0.3f);
    mb_node(b, g, "Gemm", "gemm2", "v,gw2", "gm2");
    add_bn(b, g, "bn5", 4, "gm2", "y6");
    for (int i = 1; i <= 6; i++) {
        char o[8];
        snprintf(o, sizeof o, "y%d", i);
        mb_output(b, g, o, NULL);
    }
    kn_graph *g0 = pc_import(b, m), *g1 = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_pass_bn_fold(g1, d), KN_OK);
    assert_int_equal(kn_graph_verify(g1, d), KN_OK);
    assert_int_equal(kn_pass_dce(g1, d), KN_OK);
    assert_int_equal(kn_graph_verify(g1, d), KN_OK);
    kn_diag_destroy(d);
    pc_same_outputs(g0, g1, 1e-5);
    assert_int_equal(pc_count(g1, "BatchNormalization"), 1); /* bn3 */
    assert_int_equal(pc_count(g1, "Conv"), 3);
    assert_int_equal(pc_count(g1, "Gemm"), 2);
    destroy2(g0, g1);
    mb_free(b);
}

/* ---- pipeline ---- */

static void test_pipeline_options(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2"));
    mb_node(b, g, "Identity", "id", "x", "a");
    mb_node(b, g, "Relu", "relu", "a", "y");
    mb_output(b, g, "y", NULL);
    kn_diag *d = kn_diag_create(NULL, NULL);
    /* unknown pass names: errors that list the passes */
    kn_graph *g1 = pc_import(b, m);
    const char *bad[] = {"nope"};
    kn_pipeline_opts po = {0};
    po.verify_each = true;
    po.disabled = bad;
    po.n_disabled = 1;
    assert_int_equal(kn_pipeline_run(g1, &po, d), KN_ERR_INVALID);
    assert_true(mb_diag_has(d, KN_ERROR, "unknown pass 'nope'", "infer-shapes", "dce"));
    po.n_disabled = 0;
    po.dump_after = "nope2";
    assert_int_equal(kn_pipeline_run(g1, &po, d), KN_ERR_INVALID);
    /* -O0 keeps the Identity; -O2 with noop disabled too; -O2 removes it */
    po.dump_after = NULL;
    po.level = KN_OPT_O0;
    assert_int_equal(kn_pipeline_run(g1, &po, d), KN_OK);
    assert_int_equal(g1->n_nodes, 2);
    const char *noop[] = {"noop"};
    po.level = KN_OPT_DEFAULT;
    po.disabled = noop;
    po.n_disabled = 1;
    assert_int_equal(kn_pipeline_run(g1, &po, d), KN_OK);
    assert_int_equal(g1->n_nodes, 2);
    /* dump to a folder: one file per pass position */
    char *dir = mb_tempdir(b);
    po.n_disabled = 0;
    po.dump_after = "all";
    po.dump_dir = dir;
    assert_int_equal(kn_pipeline_run(g1, &po, d), KN_OK);
    assert_int_equal(g1->n_nodes, 1);
    size_t n;
    const kn_pass_info *p = kn_pipeline_passes(&n);
    assert_string_equal(p[0].name, "canon-ms");
    assert_string_equal(p[1].name, "infer-shapes");
    assert_string_equal(p[n - 1].name, "precision");
    size_t at = 0;
    while (at < n && strcmp(p[at].name, "noop") != 0)
        at++;
    assert_true(at < n);
    char path[4096];
    snprintf(path, sizeof path, "%s/%02zu-noop.txt", dir, at + 1);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[4096];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = 0;
    fclose(f);
    assert_non_null(strstr(buf, "Relu"));
    assert_null(strstr(buf, "Identity"));
    mb_rmtree(dir);
    kn_graph_destroy(g1);
    kn_diag_destroy(d);
    mb_free(b);
}

/* Every allocation of the pipeline failing in turn: a status, never a
 * crash, and nothing leaked once the graph is destroyed. */
static void test_pipeline_alloc_fail(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "1,2,5,5"));
    f32_init(b, g, "w", (int64_t[]){4, 2, 3, 3}, 4, -0.05f);
    f32_init(b, g, "a", (int64_t[]){4, 1, 1}, 3, 1.0f);
    f32_init(b, g, "a2", (int64_t[]){4, 1, 1}, 3, 1.0f);
    mb_node(b, g, "Conv", "conv", "x,w", "c");
    add_bn(b, g, "bn", 4, "c", "n");
    mb_node(b, g, "Add", "k", "a,a2", "k1");
    mb_node(b, g, "Mul", "mul", "n,k1", "m1");
    mb_node(b, g, "Identity", "id", "m1", "i1");
    mb_node(b, g, "Shape", "shp", "i1", "s");
    mb_node(b, g, "Reshape", "rs", "i1,s", "r");
    mb_attr_ints(b, mb_node(b, g, "Transpose", "t1", "r", "t"), "perm", (int64_t[]){0, 1, 3, 2}, 4);
    mb_attr_ints(b, mb_node(b, g, "Transpose", "t2", "t", "y"), "perm", (int64_t[]){0, 1, 3, 2}, 4);
    mb_output(b, g, "y", NULL);
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    bool finished = false;
    for (long n = 1; !finished && n < 5000; n++) {
        mb_counter c;
        mb_counter_init(&c);
        kn_diag *d = kn_diag_create(NULL, getenv("KN_TEST_VERBOSE") ? stderr : NULL);
        kn_graph *kg = NULL;
        assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, &c.a, d, &kg), KN_OK);
        c.fail_at = c.calls + n;
        kn_pipeline_opts po = {0};
        po.verify_each = true;
        kn_status s = kn_pipeline_run(kg, &po, d);
        assert_true(s == KN_OK || s == KN_ERR_NOMEM);
        /* done once no allocation failed (a fold whose kernel ran out of
         * memory just leaves its node: the result is less folded, not wrong) */
        finished = s == KN_OK && c.calls < c.fail_at;
        if (finished)
            assert_int_equal(kg->n_nodes, 2); /* Conv (BN folded), Mul: the Conv shape rule lets Shape fold and the Reshape go */
        kn_graph_destroy(kg);
        kn_diag_destroy(d);
        assert_int_equal(c.live, 0);
    }
    assert_true(finished);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fold_constants),
        cmocka_unit_test(test_fold_size_limit),
        cmocka_unit_test(test_fold_random_kept),
        cmocka_unit_test(test_fold_static_shape_chain),
        cmocka_unit_test(test_fold_symbolic_reshape),
        cmocka_unit_test(test_fold_symbolic_not_provable),
        cmocka_unit_test(test_dce),
        cmocka_unit_test(test_cse),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_noop),
        cmocka_unit_test(test_noop_kept),
        cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_bn_fold),
        cmocka_unit_test(test_pipeline_options),
        cmocka_unit_test(test_pipeline_alloc_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
