/* passes/fuse_gemm.c: MatMul/Gemm + bias + activation + residual become
 * one kiln GemmEpilogue, and the SwiGLU MLP's gate/up MatMuls one packed
 * GEMM; checked bit for bit against the unfused graph on the CPU backend
 * (tolerance 0), and near misses stay unfused. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"
#include "passes/rewrite.h"

#include <string.h>

/* shapes first (the pass reads dtypes and the packed product's shape) */
static kn_status pass(kn_graph *g, kn_diag *d)
{
    KN_TRY(kn_pass_infer_shapes(g, d));
    return kn_pass_fuse_gemm(g, d);
}

/* kiln SwiGlu(gate, up), as fuse-act leaves it */
static void swiglu(mb *b, Onnx__ModelProto *m, const char *inputs, const char *out)
{
    mb_opset(b, m, "kiln", 1);
    Onnx__NodeProto *n = mb_node(b, m->graph, "SwiGlu", "glu", inputs, out);
    n->domain = mb_strdup(b, "kiln");
}

/* x [batch, 8], W [8, 16], bias [16], r [batch, 16]; opset `opset` */
static Onnx__GraphProto *graph(mb *b, Onnx__ModelProto **m, int64_t opset)
{
    *m = mb_model(b, opset);
    Onnx__GraphProto *g = (*m)->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,8"));
    mb_input(b, g, "r", mb_tensor_type(b, KN_F32, "batch,16"));
    int64_t wd[2] = {8, 16}, bd[1] = {16}, cd[2] = {3, 1};
    fc_f32(b, g, "W", wd, 2, -0.07f);
    fc_f32(b, g, "W2", wd, 2, -0.05f);
    fc_f32(b, g, "bias", bd, 1, -0.04f);
    fc_f32(b, g, "col", cd, 2, 0.1f);
    fc_scalar(b, g, "lo", -0.25f);
    fc_scalar(b, g, "hi", 0.5f);
    return g;
}

static const kn_node *only_epilogue(const kn_graph *g, uint32_t n_nodes, const char *act, uint32_t n_origins,
                                    const char *origin)
{
    assert_int_equal(g->n_nodes, n_nodes);
    const kn_node *n = pc_find(g, "GemmEpilogue");
    assert_non_null(n);
    assert_int_equal(n->op, KN_OP_KILN_GemmEpilogue);
    const kn_attr *a = kn_node_attr(n, "activation");
    assert_non_null(a);
    assert_int_equal(a->u.s.len, strlen(act));
    assert_memory_equal(a->u.s.data, act, a->u.s.len);
    assert_true(fc_origins(n, n_origins, origin));
    return n;
}

/* MatMul -> Add(bias) -> Relu -> Add(residual): one node, exact */
static void test_matmul_bias_relu_residual(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m;
    Onnx__GraphProto *g = graph(b, &m, 17);
    mb_node(b, g, "MatMul", "mm", "x,W", "p");
    mb_node(b, g, "Add", "add_b", "bias,p", "pb");
    mb_node(b, g, "Relu", "relu", "pb", "a");
    mb_node(b, g, "Add", "add_r", "r,a", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *kg = fc_apply(b, m, pass, 0);
    const kn_node *n = only_epilogue(kg, 1, "relu", 4, "add_r");
    assert_int_equal(n->n_inputs, 4);
    assert_string_equal(kg->values[n->inputs[2]].name, "bias");
    assert_string_equal(kg->values[n->inputs[3]].name, "r");
    assert_string_equal(kg->values[n->outputs[0]].name, "y");
    kn_graph_destroy(kg);
    mb_free(b);
}

/* Every activation kind after MatMul + bias, each exact. */
static void test_activations(void **state)
{
    (void)state;
    static const struct {
        const char *op, *act;
        int64_t opset;
    } cases[] = {{"Sigmoid", "sigmoid", 17},    {"Tanh", "tanh", 17},           {"HardSwish", "hardswish", 17},
                 {"LeakyRelu", "leakyrelu", 17}, {"HardSigmoid", "hardsigmoid", 17}, {"Clip", "clip", 17},
                 {"Gelu", "gelu", 20},          {"Gelu", "gelu_tanh", 20},      {"Relu", "relu", 17}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mb *b = mb_new();
        Onnx__ModelProto *m;
        Onnx__GraphProto *g = graph(b, &m, cases[i].opset);
        mb_node(b, g, "MatMul", "mm", "x,W", "p");
        mb_node(b, g, "Add", "add_b", "p,bias", "pb");
        Onnx__NodeProto *a = mb_node(b, g, cases[i].op, "act", strcmp(cases[i].op, "Clip") == 0 ? "pb,lo,hi" : "pb", "y");
        if (strcmp(cases[i].op, "LeakyRelu") == 0)
            mb_attr_f(b, a, "alpha", 0.3f);
        if (strcmp(cases[i].op, "HardSigmoid") == 0) {
            mb_attr_f(b, a, "alpha", 0.3f);
            mb_attr_f(b, a, "beta", 0.4f);
        }
        if (strcmp(cases[i].act, "gelu_tanh") == 0)
            mb_attr_s(b, a, "approximate", "tanh");
        mb_output(b, g, "y", NULL);
        kn_graph *kg = fc_apply(b, m, pass, 0);
        only_epilogue(kg, 1, cases[i].act, 3, "act");
        kn_graph_destroy(kg);
        mb_free(b);
    }
}

/* Gemm(x, W, bias, transB) -> Reshape -> Gelu (GPT-2's MLP): the
 * activation moves before the Reshape and joins the Gemm. */
static void test_gemm_reshape_gelu(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 20);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4,8"));
    int64_t wd[2] = {16, 8}, bd[1] = {16}, sd[1] = {3};
    fc_f32(b, g, "Wt", wd, 2, -0.07f);
    fc_f32(b, g, "bias", bd, 1, -0.04f);
    int64_t shape[3] = {2, 2, 16};
    mb_int64_data(b, mb_initializer(b, g, "shape", KN_I64, sd, 1), shape, 3);
    Onnx__NodeProto *gm = mb_node(b, g, "Gemm", "gemm", "x,Wt,bias", "p");
    mb_attr_i(b, gm, "transB", 1);
    mb_attr_f(b, gm, "alpha", 0.5f);
    mb_node(b, g, "Reshape", "reshape", "p,shape", "q");
    Onnx__NodeProto *ge = mb_node(b, g, "Gelu", "gelu", "q", "y");
    mb_attr_s(b, ge, "approximate", "tanh");
    mb_output(b, g, "y", NULL);
    kn_graph *kg = fc_apply(b, m, pass, 0);
    const kn_node *n = only_epilogue(kg, 2, "gelu_tanh", 2, "gelu");
    assert_int_equal(kn_node_attr(n, "gemm")->u.i, 1);
    assert_int_equal(kn_node_attr(n, "transB")->u.i, 1);
    assert_int_equal(pc_count(kg, "Reshape"), 1);
    kn_graph_destroy(kg);
    mb_free(b);
}

/* GPT-2's Conv1D: Reshape(h, [-1, K]) -> Gemm -> Reshape back to h's
 * leading dims -> Add(residual): one node on h; a second Reshape to
 * another shape keeps the Reshapes. */
static void test_gemm_unflatten(void **state)
{
    (void)state;
    for (int variant = 0; variant < 2; variant++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = mb_model(b, 17);
        Onnx__GraphProto *g = m->graph;
        mb_input(b, g, "h", mb_tensor_type(b, KN_F32, "batch,seq,8"));
        mb_input(b, g, "r", mb_tensor_type(b, KN_F32, variant ? "batch,seq,2,8" : "batch,seq,16"));
        int64_t wd[2] = {8, 16}, bd[1] = {16}, two[1] = {2}, one[1] = {1};
        fc_f32(b, g, "W", wd, 2, -0.07f);
        fc_f32(b, g, "bias", bd, 1, -0.04f);
        mb_int64_data(b, mb_initializer(b, g, "flat", KN_I64, two, 1), (int64_t[]){-1, 8}, 2);
        mb_int64_data(b, mb_initializer(b, g, "st", KN_I64, one, 1), (int64_t[]){0}, 1);
        mb_int64_data(b, mb_initializer(b, g, "en", KN_I64, one, 1), (int64_t[]){2}, 1);
        mb_int64_data(b, mb_initializer(b, g, "n", KN_I64, variant ? two : one, 1),
                      variant ? (int64_t[]){2, 8} : (int64_t[]){16}, variant ? 2 : 1);
        mb_node(b, g, "Reshape", "flatten", "h,flat", "hf");
        mb_node(b, g, "Gemm", "gemm", "hf,W,bias", "p");
        mb_node(b, g, "Shape", "shape", "h", "s");
        mb_node(b, g, "Slice", "lead", "s,st,en", "ld");
        Onnx__NodeProto *c = mb_node(b, g, "Concat", "cat", "ld,n", "target");
        mb_attr_i(b, c, "axis", 0);
        mb_node(b, g, "Reshape", "back", "p,target", "q");
        mb_node(b, g, "Add", "res", "q,r", "y");
        mb_output(b, g, "y", NULL);
        kn_graph *kg = fc_apply(b, m, pass, 0);
        if (variant == 0) {
            const kn_node *n = only_epilogue(kg, 1, "", 4, "flatten");
            assert_string_equal(kg->values[n->inputs[0]].name, "h");
            assert_string_equal(kg->values[n->inputs[3]].name, "r");
        } else { /* the Gemm (with its own bias) has nothing to fuse */
            assert_int_equal(pc_count(kg, "Reshape"), 2);
            assert_int_equal(pc_count(kg, "Gemm"), 1);
            assert_int_equal(pc_count(kg, "GemmEpilogue"), 0);
        }
        kn_graph_destroy(kg);
        mb_free(b);
    }
}

/* The Llama MLP: down(SwiGlu(x@Wg, x@Wu)) + x → packed MatMul, SwiGlu,
 * GemmEpilogue (residual): 3 nodes. */
static void test_swiglu_mlp(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,seq,8"));
    int64_t wd[2] = {8, 16}, dd[2] = {16, 8};
    fc_f32(b, g, "Wg", wd, 2, -0.07f);
    fc_f32(b, g, "Wu", wd, 2, -0.03f);
    fc_f32(b, g, "Wd", dd, 2, -0.05f);
    mb_node(b, g, "MatMul", "gate", "x,Wg", "gp");
    mb_node(b, g, "MatMul", "up", "x,Wu", "upv");
    swiglu(b, m, "gp,upv", "h");
    mb_node(b, g, "MatMul", "down", "h,Wd", "o");
    mb_node(b, g, "Add", "res", "x,o", "y");
    mb_output(b, g, "y", NULL);
    kn_graph *kg = fc_apply(b, m, pass, 0);
    assert_int_equal(kg->n_nodes, 3);
    const kn_node *mm = pc_find(kg, "MatMul"), *sw = pc_find(kg, "SwiGlu");
    assert_non_null(mm);
    assert_non_null(sw);
    assert_int_equal(sw->n_inputs, 1);
    assert_int_equal(sw->inputs[0], mm->outputs[0]);
    const kn_tensor *w = kn_rw_const(kg, mm->inputs[1]);
    assert_non_null(w);
    assert_int_equal(w->dims[1], 32);
    assert_true(fc_origins(mm, 2, "gate"));
    const kn_type *pt = kn_rw_type(kg, mm->outputs[0]);
    assert_int_equal(pt->shape.rank, 3);
    assert_int_equal(pt->shape.dims[2].value, 32);
    only_epilogue(kg, 3, "", 2, "down");
    kn_graph_destroy(kg);
    mb_free(b);
}

/* gate/up merges that must not happen: a weight that is a graph input,
 * different inputs x, different widths. */
static void test_swiglu_not_merged(void **state)
{
    (void)state;
    for (int variant = 0; variant < 3; variant++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = mb_model(b, 17);
        Onnx__GraphProto *g = m->graph;
        mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,8"));
        mb_input(b, g, "x2", mb_tensor_type(b, KN_F32, "batch,8"));
        int64_t wd[2] = {8, 16}, wd2[2] = {8, 12};
        fc_f32(b, g, "Wg", variant == 2 ? wd2 : wd, 2, -0.07f);
        if (variant == 0)
            mb_input(b, g, "Wu", mb_tensor_type(b, KN_F32, "8,16"));
        else
            fc_f32(b, g, "Wu", wd, 2, -0.03f);
        mb_node(b, g, "MatMul", "gate", "x,Wg", "gp");
        mb_node(b, g, "MatMul", "up", variant == 1 ? "x2,Wu" : "x,Wu", "upv");
        swiglu(b, m, "gp,upv", "y");
        mb_output(b, g, "y", NULL);
        if (variant == 2) { /* [b,12] * [b,16] does not broadcast: only check the pass leaves it */
            kn_graph *kg = pc_import(b, m);
            kn_diag *d = kn_diag_create(NULL, stderr);
            assert_int_equal(pass(kg, d), KN_OK);
            assert_int_equal(kn_graph_verify(kg, d), KN_OK);
            kn_diag_destroy(d);
            assert_int_equal(pc_count(kg, "MatMul"), 2);
            kn_graph_destroy(kg);
        } else {
            kn_graph *kg = fc_apply(b, m, pass, 0);
            assert_int_equal(pc_count(kg, "MatMul"), 2);
            assert_int_equal(pc_find(kg, "SwiGlu")->n_inputs, 2);
            kn_graph_destroy(kg);
        }
        mb_free(b);
    }
}

/* Near misses: a bias that is not along the last axis is not taken as the
 * bias (it becomes the broadcast residual); an intermediate read elsewhere
 * (a graph output, a second reader); a Clip with a bound that is not a
 * constant; an integer MatMul; a batched B. */
static void test_not_fused(void **state)
{
    (void)state;
    for (int variant = 0; variant < 6; variant++) {
        mb *b = mb_new();
        Onnx__ModelProto *m;
        Onnx__GraphProto *g = graph(b, &m, 17);
        mb_input(b, g, "ilo", mb_tensor_type(b, KN_F32, ""));
        mb_input(b, g, "xi", mb_tensor_type(b, KN_I64, "batch,8"));
        mb_input(b, g, "x3", mb_tensor_type(b, KN_F32, "2,3,8"));
        int64_t wid[2] = {8, 4}, w3d[3] = {2, 8, 16};
        int64_t wi[32] = {0};
        for (int i = 0; i < 32; i++)
            wi[i] = i % 5 - 2;
        mb_int64_data(b, mb_initializer(b, g, "Wi", KN_I64, wid, 2), wi, 32);
        fc_f32(b, g, "W3", w3d, 3, -0.02f);
        switch (variant) {
        case 0:
            mb_node(b, g, "MatMul", "mm", "x,W", "p");
            mb_node(b, g, "Add", "add", "p,col", "y");
            mb_output(b, g, "y", NULL);
            break;
        case 1:
            mb_node(b, g, "MatMul", "mm", "x,W", "p");
            mb_node(b, g, "Add", "add", "p,bias", "y");
            mb_output(b, g, "y", NULL);
            mb_output(b, g, "p", NULL);
            break;
        case 2:
            mb_node(b, g, "MatMul", "mm", "x,W", "p");
            mb_node(b, g, "Add", "add", "p,bias", "y");
            mb_node(b, g, "Mul", "other", "p,p", "z");
            mb_output(b, g, "y", NULL);
            mb_output(b, g, "z", NULL);
            break;
        case 3:
            mb_node(b, g, "MatMul", "mm", "x,W", "p");
            mb_node(b, g, "Add", "add", "p,bias", "pb");
            mb_node(b, g, "Clip", "clip", "pb,ilo,hi", "y");
            mb_output(b, g, "y", NULL);
            break;
        case 4:
            mb_node(b, g, "MatMul", "mm", "xi,Wi", "p");
            mb_node(b, g, "Relu", "relu", "p", "yi");
            mb_node(b, g, "Cast", "cast", "yi", "y");
            mb_attr_i(b, g->node[g->n_node - 1], "to", KN_F32);
            mb_output(b, g, "y", NULL);
            break;
        default:
            mb_node(b, g, "MatMul", "mm", "x3,W3", "p");
            mb_node(b, g, "Add", "add", "p,bias", "y");
            mb_output(b, g, "y", NULL);
            break;
        }
        kn_graph *kg = fc_apply(b, m, pass, 0);
        const kn_node *n = pc_count(kg, "GemmEpilogue") ? pc_find(kg, "GemmEpilogue") : NULL;
        if (variant == 0) { /* fused as a residual, not as a bias */
            assert_non_null(n);
            assert_int_equal(n->n_inputs, 4);
            assert_int_equal(n->inputs[2], KN_NONE);
            assert_string_equal(kg->values[n->inputs[3]].name, "col");
        } else if (variant == 3) { /* MatMul + bias fused, the Clip stays */
            assert_non_null(n);
            assert_int_equal(pc_count(kg, "Clip"), 1);
            assert_int_equal(kn_node_attr(n, "activation")->u.s.len, 0);
        } else {
            assert_null(n);
        }
        kn_graph_destroy(kg);
        mb_free(b);
    }
}

/* The whole pipeline on an MLP with every fuse-gemm rewrite, failing the
 * Nth allocation for every N: a clean KN_ERR_NOMEM or the fused result,
 * nothing leaked. */
static void test_alloc_fail(void **state)
{
    (void)state;
    mb *b = mb_new();
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "batch,seq,8"));
    int64_t wd[2] = {8, 16}, dd[2] = {16, 8}, bd[1] = {8};
    fc_f32(b, g, "Wg", wd, 2, -0.07f);
    fc_f32(b, g, "Wu", wd, 2, -0.03f);
    fc_f32(b, g, "Wd", dd, 2, -0.05f);
    fc_f32(b, g, "bias", bd, 1, 0.02f);
    mb_node(b, g, "MatMul", "gate", "x,Wg", "gp");
    mb_node(b, g, "MatMul", "up", "x,Wu", "upv");
    mb_node(b, g, "Sigmoid", "sig", "gp", "s");
    mb_node(b, g, "Mul", "silu", "gp,s", "act");
    mb_node(b, g, "Mul", "glu", "act,upv", "h");
    mb_node(b, g, "MatMul", "down", "h,Wd", "o");
    mb_node(b, g, "Add", "add_b", "o,bias", "ob");
    mb_node(b, g, "Relu", "relu", "ob", "or");
    mb_node(b, g, "Add", "res", "x,or", "y");
    mb_output(b, g, "y", NULL);
    size_t len;
    uint8_t *bytes = mb_pack(b, m, &len);
    bool finished = false;
    for (long n = 1; !finished && n < 5000; n++) {
        mb_counter c;
        mb_counter_init(&c);
        kn_diag *d = kn_diag_create(NULL, NULL);
        kn_graph *kg = NULL;
        assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "t.onnx", NULL, &c.a, d, &kg), KN_OK);
        c.fail_at = c.calls + n;
        kn_pipeline_opts po = {0};
        po.verify_each = true;
        kn_status st = kn_pipeline_run(kg, &po, d);
        assert_true(st == KN_OK || st == KN_ERR_NOMEM);
        finished = st == KN_OK && c.calls < c.fail_at;
        if (finished) /* packed MatMul, SwiGlu, GemmEpilogue */
            assert_int_equal(kg->n_nodes, 3);
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
        cmocka_unit_test(test_matmul_bias_relu_residual),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_gemm_reshape_gelu),
        cmocka_unit_test(test_gemm_unflatten),
        cmocka_unit_test(test_swiglu_mlp),
        cmocka_unit_test(test_swiglu_not_merged),
        cmocka_unit_test(test_not_fused),
        cmocka_unit_test(test_alloc_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
