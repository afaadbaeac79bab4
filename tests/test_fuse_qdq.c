/* passes/fuse_qdq.c: QDQ MatMul / Conv patterns (as onnxruntime's QDQ
 * quantizer writes them) become QLinearMatMul / QLinearConv, checked
 * numerically against the float QDQ graph on the CPU backend; patterns the
 * integer ops cannot express exactly (per-channel scales on the wrong axis,
 * non-constant weights or zero points, a Conv bias with another scale)
 * stay as they are; a MatMul whose output is not requantized becomes
 * com.microsoft MatMulIntegerToFloat. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "fuse_check.h"
#include "passes/rewrite.h"

#include <string.h>

/* Options of the built MatMul pattern. */
typedef struct mm_case {
    int w_scales;      /* 1, or per channel: N (axis 1) or K (axis 0) */
    int w_axis;
    bool w_input;      /* weight a graph input instead of an initializer */
    bool a_zp_input;   /* activation zero point a graph input, not a constant */
    bool a_per_channel; /* activation dequantized per channel (axis 1, 8 scales) */
    bool no_a_zp;      /* activation DQ without zero point */
    bool mm_output;    /* the MatMul output is also a graph output */
    bool float_out;    /* no Q after the MatMul: its float output is the graph's */
    bool w_uint8;      /* uint8 weight with zero point 128 */
} mm_case;

enum { M = 4, K = 8, N = 6 };

static void scalar_f(mb *b, Onnx__GraphProto *g, const char *name, float v) { fc_scalar(b, g, name, v); }

static void scalar_q(mb *b, Onnx__GraphProto *g, const char *name, int dtype, int v)
{
    Onnx__TensorProto *t = mb_initializer(b, g, name, dtype, NULL, 0);
    uint8_t byte = (uint8_t)v;
    mb_raw(b, t, &byte, 1);
}

static Onnx__ModelProto *mm_model(mb *b, const mm_case *c)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4,8"));
    scalar_f(b, g, "sx", 0.02f);
    scalar_q(b, g, "zx", KN_U8, 128);
    scalar_f(b, g, "sy", 0.05f);
    scalar_q(b, g, "zy", KN_U8, 120);
    int wdt = c->w_uint8 ? KN_U8 : KN_I8;
    if (c->w_input) {
        mb_input(b, g, "w", mb_tensor_type(b, wdt, "8,6"));
    } else {
        int8_t w[K * N];
        for (int i = 0; i < K * N; i++)
            w[i] = (int8_t)(c->w_uint8 ? (uint8_t)(128 + (i * 37) % 101 - 50) : (int8_t)((i * 37) % 101 - 50));
        Onnx__TensorProto *t = mb_initializer(b, g, "w", wdt, (int64_t[]){K, N}, 2);
        mb_raw(b, t, w, sizeof w);
    }
    float sw[K];
    for (int i = 0; i < K; i++)
        sw[i] = 0.01f + 0.002f * (float)i;
    int64_t ns = c->w_scales;
    Onnx__TensorProto *st = mb_initializer(b, g, "sw", KN_F32, &ns, ns == 1 ? 0 : 1);
    mb_float_data(b, st, sw, (size_t)ns);
    int8_t zw[K] = {0};
    if (c->w_uint8)
        memset(zw, 128, sizeof zw);
    Onnx__TensorProto *zt = mb_initializer(b, g, "zw", wdt, &ns, ns == 1 ? 0 : 1);
    mb_raw(b, zt, zw, (size_t)ns);
    if (c->a_zp_input)
        mb_input(b, g, "zxin", mb_tensor_type(b, KN_U8, ""));
    if (c->a_per_channel) {
        float s8[K];
        uint8_t z8[K];
        for (int i = 0; i < K; i++)
            s8[i] = 0.02f + 0.001f * (float)i, z8[i] = 128;
        mb_float_data(b, mb_initializer(b, g, "sx8", KN_F32, (int64_t[]){K}, 1), s8, K);
        mb_raw(b, mb_initializer(b, g, "zx8", KN_U8, (int64_t[]){K}, 1), z8, K);
    }
    mb_node(b, g, "QuantizeLinear", "qx", "x,sx,zx", "xq");
    mb_node(b, g, "DequantizeLinear", "dqx",
            c->no_a_zp ? "xq,sx" : c->a_zp_input ? "xq,sx,zxin" : c->a_per_channel ? "xq,sx8,zx8" : "xq,sx,zx", "xd");
    Onnx__NodeProto *dw = mb_node(b, g, "DequantizeLinear", "dqw", "w,sw,zw", "wd");
    if (c->w_axis != 1)
        mb_attr_i(b, dw, "axis", c->w_axis);
    if (c->float_out) {
        mb_node(b, g, "MatMul", "mm", "xd,wd", "y");
        mb_output(b, g, "y", NULL);
        return m;
    }
    mb_node(b, g, "MatMul", "mm", "xd,wd", "h");
    mb_node(b, g, "QuantizeLinear", "qh", "h,sy,zy", "hq");
    mb_node(b, g, "DequantizeLinear", "dqh", "hq,sy,zy", "y");
    mb_output(b, g, "y", NULL);
    if (c->mm_output)
        mb_output(b, g, "h", NULL);
    return m;
}

static kn_graph *run_mm(mb *b, const mm_case *c) { return fc_apply(b, mm_model(b, c), kn_pass_fuse_qdq, 1e-6); }

static void expect_fused(kn_graph *g)
{
    assert_int_equal(pc_count(g, "MatMul"), 0);
    assert_int_equal(pc_count(g, "QLinearMatMul"), 1);
    const kn_node *n = pc_find(g, "QLinearMatMul");
    assert_int_equal(n->n_inputs, 8);
    assert_string_equal(g->values[n->inputs[0]].name, "xq");
    assert_string_equal(g->values[n->inputs[3]].name, "w");
    assert_string_equal(g->values[n->outputs[0]].name, "hq");
    assert_true(fc_origins(n, 2, "mm"));
    assert_int_equal(pc_count(g, "DequantizeLinear"), 1); /* only the output's; dce removed the rest */
}

static void expect_unfused(kn_graph *g)
{
    assert_int_equal(pc_count(g, "MatMul"), 1);
    assert_int_equal(pc_count(g, "QLinearMatMul"), 0);
}

static void test_mm_per_tensor(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = 1, .w_axis = 1});
    expect_fused(g);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_mm_per_channel(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = N, .w_axis = 1});
    expect_fused(g);
    kn_graph_destroy(g);
    g = run_mm(b, &(mm_case){.w_scales = N, .w_axis = -1, .w_uint8 = true});
    expect_fused(g);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_mm_no_act_zero_point(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = 1, .w_axis = 1, .no_a_zp = true});
    expect_fused(g);
    assert_int_equal(pc_find(g, "QLinearMatMul")->inputs[2], KN_NONE);
    kn_graph_destroy(g);
    mb_free(b);
}

/* Scales along K (axis 0) cannot move out of the integer sum. */
static void test_mm_scales_on_k_stay(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = K, .w_axis = 0});
    expect_unfused(g);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_mm_weight_input_stays(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = 1, .w_axis = 1, .w_input = true});
    expect_unfused(g);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_mm_zero_point_input_stays(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = 1, .w_axis = 1, .a_zp_input = true});
    expect_unfused(g);
    kn_graph_destroy(g);
    mb_free(b);
}

static void expect_float_out(kn_graph *g)
{
    assert_int_equal(pc_count(g, "MatMul"), 0);
    assert_int_equal(pc_count(g, "QLinearMatMul"), 0);
    const kn_node *n = pc_find(g, "MatMulIntegerToFloat");
    assert_int_equal(n->op, KN_OP_MS_MatMulIntegerToFloat);
    assert_int_equal(n->n_inputs, 6);
    assert_string_equal(g->values[n->inputs[0]].name, "xq");
    assert_string_equal(g->values[n->inputs[1]].name, "w");
    assert_string_equal(g->values[n->inputs[3]].name, "sw");
}

/* An activation dequantized per channel (of K) has no integer form. */
static void test_mm_act_per_channel_stays(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = 1, .w_axis = 1, .a_per_channel = true});
    expect_unfused(g);
    kn_graph_destroy(g);
    mb_free(b);
}

/* A MatMul output that is not (only) requantized: MatMulIntegerToFloat,
 * the outputs (float, and requantized) as the float QDQ graph's. */
static void test_mm_float_output(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = N, .w_axis = 1, .float_out = true});
    expect_float_out(g);
    kn_graph_destroy(g);
    g = run_mm(b, &(mm_case){.w_scales = 1, .w_axis = 1, .mm_output = true});
    expect_float_out(g);
    assert_int_equal(pc_count(g, "QuantizeLinear"), 2);
    kn_graph_destroy(g);
    mb_free(b);
}

/* The float-output form has the same limits: weight scales along K stay. */
static void test_mm_float_output_scales_on_k_stay(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = run_mm(b, &(mm_case){.w_scales = K, .w_axis = 0, .float_out = true});
    expect_unfused(g);
    assert_int_equal(pc_count(g, "MatMulIntegerToFloat"), 0);
    kn_graph_destroy(g);
    mb_free(b);
}

/* Gemm(DQ(x), DQ(W [6, 8] int8, per channel axis 0), bias [6]) with
 * transB, alpha as given. */
static Onnx__ModelProto *gemm_model(mb *b, float alpha)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4,8"));
    scalar_f(b, g, "sx", 0.02f);
    scalar_q(b, g, "zx", KN_U8, 128);
    int8_t w[48];
    for (int i = 0; i < 48; i++)
        w[i] = (int8_t)((i * 41) % 97 - 48);
    mb_raw(b, mb_initializer(b, g, "w", KN_I8, (int64_t[]){6, 8}, 2), w, sizeof w);
    float sw[6] = {0.01f, 0.02f, 0.015f, 0.012f, 0.03f, 0.025f}, bias[6] = {0.1f, -0.2f, 0.3f, 0, 0.05f, -0.4f};
    mb_float_data(b, mb_initializer(b, g, "sw", KN_F32, (int64_t[]){6}, 1), sw, 6);
    mb_float_data(b, mb_initializer(b, g, "bias", KN_F32, (int64_t[]){6}, 1), bias, 6);
    mb_node(b, g, "QuantizeLinear", "qx", "x,sx,zx", "xq");
    mb_node(b, g, "DequantizeLinear", "dqx", "xq,sx,zx", "xd");
    mb_attr_i(b, mb_node(b, g, "DequantizeLinear", "dqw", "w,sw", "wd"), "axis", 0);
    Onnx__NodeProto *n = mb_node(b, g, "Gemm", "gemm", "xd,wd,bias", "y");
    mb_attr_i(b, n, "transB", 1);
    if (alpha != 1.0f)
        mb_attr_f(b, n, "alpha", alpha);
    mb_output(b, g, "y", NULL);
    return m;
}

static void test_gemm(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = fc_apply(b, gemm_model(b, 1.0f), kn_pass_fuse_qdq, 1e-6);
    assert_int_equal(pc_count(g, "Gemm"), 0);
    const kn_node *n = pc_find(g, "MatMulIntegerToFloat");
    assert_int_equal(n->n_inputs, 7);
    const kn_tensor *wt = kn_rw_const(g, n->inputs[1]);
    assert_non_null(wt);
    assert_int_equal(wt->dims[0], 8); /* W transposed to [K, N] */
    assert_int_equal(wt->dims[1], 6);
    assert_int_equal(((const int8_t *)wt->data)[1 * 6 + 2], (int8_t)(((2 * 8 + 1) * 41) % 97 - 48));
    assert_string_equal(g->values[n->inputs[6]].name, "bias");
    kn_graph_destroy(g);
    g = fc_apply(b, gemm_model(b, 0.5f), kn_pass_fuse_qdq, 1e-6);
    assert_int_equal(pc_count(g, "Gemm"), 1); /* alpha != 1 stays */
    kn_graph_destroy(g);
    mb_free(b);
}

/* Conv: x [1, 2, 5, 5], w int8 [3, 2, 3, 3] per channel (axis 0), int32
 * bias with scale sx * sw[c] (or `bias_scale_off` times that). */
static Onnx__ModelProto *conv_model(mb *b, float bias_scale_off)
{
    Onnx__ModelProto *m = mb_model(b, 17);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "1,2,5,5"));
    const float sx = 0.02f, swv[3] = {0.01f, 0.015f, 0.02f};
    scalar_f(b, g, "sx", sx);
    scalar_q(b, g, "zx", KN_U8, 128);
    scalar_f(b, g, "sy", 0.03f);
    scalar_q(b, g, "zy", KN_U8, 100);
    int8_t w[54];
    for (int i = 0; i < 54; i++)
        w[i] = (int8_t)((i * 29) % 91 - 45);
    mb_raw(b, mb_initializer(b, g, "w", KN_I8, (int64_t[]){3, 2, 3, 3}, 4), w, sizeof w);
    mb_float_data(b, mb_initializer(b, g, "sw", KN_F32, (int64_t[]){3}, 1), swv, 3);
    int8_t zw[3] = {0, 0, 0};
    mb_raw(b, mb_initializer(b, g, "zw", KN_I8, (int64_t[]){3}, 1), zw, 3);
    int32_t bq[3] = {500, -1200, 77}, bz[3] = {0, 0, 0};
    float bs[3];
    for (int i = 0; i < 3; i++)
        bs[i] = sx * swv[i] * bias_scale_off;
    mb_int32_data(b, mb_initializer(b, g, "bq", KN_I32, (int64_t[]){3}, 1), bq, 3);
    mb_float_data(b, mb_initializer(b, g, "bs", KN_F32, (int64_t[]){3}, 1), bs, 3);
    mb_int32_data(b, mb_initializer(b, g, "bz", KN_I32, (int64_t[]){3}, 1), bz, 3);
    mb_node(b, g, "QuantizeLinear", "qx", "x,sx,zx", "xq");
    mb_node(b, g, "DequantizeLinear", "dqx", "xq,sx,zx", "xd");
    mb_attr_i(b, mb_node(b, g, "DequantizeLinear", "dqw", "w,sw,zw", "wd"), "axis", 0);
    mb_attr_i(b, mb_node(b, g, "DequantizeLinear", "dqb", "bq,bs,bz", "bd"), "axis", 0);
    Onnx__NodeProto *cv = mb_node(b, g, "Conv", "conv", "xd,wd,bd", "h");
    mb_attr_ints(b, cv, "pads", (int64_t[]){1, 1, 1, 1}, 4);
    mb_attr_ints(b, cv, "strides", (int64_t[]){2, 2}, 2);
    mb_node(b, g, "QuantizeLinear", "qh", "h,sy,zy", "hq");
    mb_node(b, g, "DequantizeLinear", "dqh", "hq,sy,zy", "y");
    mb_output(b, g, "y", NULL);
    return m;
}

static void test_conv(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = fc_apply(b, conv_model(b, 1.0f), kn_pass_fuse_qdq, 1e-6);
    assert_int_equal(pc_count(g, "Conv"), 0);
    const kn_node *n = pc_find(g, "QLinearConv");
    assert_int_equal(n->n_inputs, 9);
    assert_string_equal(g->values[n->inputs[8]].name, "bq");
    uint32_t np;
    const kn_attr *a = kn_node_attr(n, "strides");
    assert_non_null(a);
    np = a->n;
    assert_int_equal(np, 2);
    assert_int_equal(a->u.ints[0], 2);
    kn_graph_destroy(g);
    mb_free(b);
}

static void test_conv_bias_scale_mismatch_stays(void **state)
{
    (void)state;
    mb *b = mb_new();
    kn_graph *g = fc_apply(b, conv_model(b, 1.5f), kn_pass_fuse_qdq, 1e-6);
    assert_int_equal(pc_count(g, "Conv"), 1);
    assert_int_equal(pc_count(g, "QLinearConv"), 0);
    kn_graph_destroy(g);
    mb_free(b);
}

static void check_alloc_fail(const kn_graph *g)
{
    assert_int_equal(pc_count(g, "QLinearConv"), 1);
}

/* Every allocation of the -O2 pipeline on the conv pattern failing in
 * turn: KN_ERR_NOMEM or success, never a crash or a leak. */
static void test_alloc_fail(void **state)
{
    (void)state;
    mb *b = mb_new();
    pc_pipeline_alloc_sweep(b, conv_model(b, 1.0f), check_alloc_fail);
    mb_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mm_per_tensor),
        cmocka_unit_test(test_mm_per_channel),
        cmocka_unit_test(test_mm_no_act_zero_point),
        cmocka_unit_test(test_mm_scales_on_k_stay),
        cmocka_unit_test(test_mm_weight_input_stays),
        cmocka_unit_test(test_mm_zero_point_input_stays),
        cmocka_unit_test(test_mm_act_per_channel_stays),
        cmocka_unit_test(test_mm_float_output),
        cmocka_unit_test(test_mm_float_output_scales_on_k_stay),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_conv_bias_scale_mismatch_stays),
        cmocka_unit_test(test_alloc_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
