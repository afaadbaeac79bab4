/* IR unit tests: building graphs, the verifier's invariants, the printer,
 * the op table, arenas, diagnostics and dtypes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ir/ir.h"
#include "ir/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kn_str S(kn_graph *g, const char *s)
{
    kn_str r;
    assert_int_equal(kn_graph_intern_cstr(g, s, &r), KN_OK);
    return r;
}

static kn_id add_input(kn_graph *g, const char *name)
{
    kn_value v = {0};
    v.name = S(g, name);
    v.kind = KN_VAL_INPUT;
    v.producer = KN_NONE;
    v.type.kind = KN_TYPE_TENSOR;
    v.type.dtype = KN_F32;
    v.type.shape.rank = 2;
    v.type.shape.dims = kn_graph_alloc(g, 2 * sizeof(kn_dim));
    v.type.shape.dims[0].value = -1;
    v.type.shape.dims[0].sym = S(g, "batch");
    v.type.shape.dims[1].value = 4;
    kn_id id;
    assert_int_equal(kn_graph_add_value(g, &v, &id), KN_OK);
    kn_id *ins = kn_graph_alloc(g, (g->n_inputs + 1) * sizeof *ins);
    if (g->n_inputs)
        memcpy(ins, g->inputs, g->n_inputs * sizeof *ins);
    ins[g->n_inputs++] = id;
    g->inputs = ins;
    return id;
}

/* Adds `op` reading in0, in1 (KN_NONE to omit) and producing one value. */
static kn_id add_node(kn_graph *g, const char *op, const char *name, kn_id in0, kn_id in1, const char *out)
{
    kn_node n = {0};
    n.name = S(g, name);
    n.op_type = S(g, op);
    n.domain = S(g, "");
    n.opset = 17;
    n.op = kn_op_lookup("", op, 17, NULL);
    n.n_inputs = in1 == KN_NONE ? 1 : 2;
    n.inputs = kn_graph_alloc(g, 2 * sizeof(kn_id));
    n.inputs[0] = in0;
    n.inputs[1] = in1;
    n.n_outputs = 1;
    n.outputs = kn_graph_alloc(g, sizeof(kn_id));
    kn_value v = {0};
    v.name = S(g, out);
    v.kind = KN_VAL_NODE;
    v.producer = g->n_nodes;
    v.type.shape.rank = -1;
    assert_int_equal(kn_graph_add_value(g, &v, &n.outputs[0]), KN_OK);
    kn_id nid;
    assert_int_equal(kn_graph_add_node(g, &n, &nid), KN_OK);
    return n.outputs[0];
}

static void set_output(kn_graph *g, kn_id v)
{
    g->outputs = kn_graph_alloc(g, sizeof(kn_id));
    g->outputs[0] = v;
    g->n_outputs = 1;
}

/* x → Relu → Add(relu, x) → y */
static kn_graph *small_graph(void)
{
    kn_graph *g;
    assert_int_equal(kn_graph_create(NULL, &g), KN_OK);
    g->name = S(g, "main");
    g->info->path = S(g, "test.onnx");
    kn_id x = add_input(g, "x");
    kn_id r = add_node(g, "Relu", "relu0", x, KN_NONE, "r");
    kn_id y = add_node(g, "Add", "add0", r, x, "y");
    set_output(g, y);
    return g;
}

static size_t errors_of(kn_graph *g, const char *needle)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_status s = kn_graph_verify(g, d);
    size_t n = kn_diag_count(d, KN_ERROR);
    bool found = needle == NULL;
    for (size_t i = 0; i < kn_diag_size(d); i++)
        if (needle && strstr(kn_diag_message(d, i, NULL), needle))
            found = true;
    if (!found)
        kn_diag_print(d, stderr);
    assert_true(found);
    assert_int_equal(s == KN_OK, n == 0);
    kn_diag_destroy(d);
    return n;
}

static void test_verify_ok(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    assert_int_equal(errors_of(g, NULL), 0);
    kn_graph_destroy(g);
}

static void test_verify_misordered(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    /* relu reads the Add's output: a cycle through the later node */
    g->nodes[0].inputs[0] = g->nodes[1].outputs[0];
    assert_true(errors_of(g, "later node") > 0);
    kn_graph_destroy(g);
}

static void test_verify_self_loop(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    g->nodes[0].inputs[0] = g->nodes[0].outputs[0];
    assert_true(errors_of(g, "by the node itself") > 0);
    kn_graph_destroy(g);
}

static void test_verify_dangling(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    g->nodes[0].outputs[0] = KN_NONE; /* 'r' now claims a producer that disowns it */
    assert_true(errors_of(g, "dangling") > 0);
    kn_graph_destroy(g);
}

static void test_verify_duplicate(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    g->values[2].name = g->values[1].name; /* 'y' renamed to 'r' */
    assert_true(errors_of(g, "more than once") > 0);
    kn_graph_destroy(g);
}

static void test_verify_bad_ids(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    g->nodes[1].inputs[1] = 999;
    g->outputs[0] = 1000;
    assert_true(errors_of(g, "refers to no value") >= 2);
    kn_graph_destroy(g);
}

static void test_verify_types(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    g->values[0].type.dtype = (kn_dtype)77;
    assert_true(errors_of(g, "invalid dtype") > 0);
    g->values[0].type.dtype = KN_F32;
    g->values[0].type.shape.dims[1].value = -5;
    assert_true(errors_of(g, "malformed") > 0);
    kn_graph_destroy(g);
}

static void test_verify_op_mismatch(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    g->nodes[0].op = KN_OP_Softmax; /* op_type still says Relu */
    assert_true(errors_of(g, "does not match") > 0);
    kn_graph_destroy(g);
}

static void test_verify_outer(void **state)
{
    (void)state;
    kn_graph *g = small_graph(), *sub;
    assert_int_equal(kn_graph_create_sub(g, &sub), KN_OK);
    sub->name = S(g, "body");
    kn_value v = {0};
    v.name = S(g, "x");
    v.kind = KN_VAL_OUTER;
    v.outer = 0;
    v.producer = KN_NONE;
    kn_id o;
    assert_int_equal(kn_graph_add_value(sub, &v, &o), KN_OK);
    kn_id r = add_node(sub, "Relu", "inner", o, KN_NONE, "inner_r");
    set_output(sub, r);
    /* hang the body on the Relu as a (schema-less) graph attribute */
    kn_node *n = &g->nodes[0];
    n->attrs = kn_graph_alloc(g, sizeof(kn_attr));
    n->attrs[0].name = S(g, "body");
    n->attrs[0].kind = KN_ATTR_GRAPH;
    n->attrs[0].u.g = sub;
    n->n_attrs = 1;
    assert_int_equal(errors_of(g, NULL), 0);
    const kn_graph *owner;
    const kn_value *rv = kn_value_resolve(sub, o, &owner);
    assert_ptr_equal(owner, g);
    assert_ptr_equal(rv, &g->values[0]);
    sub->values[o].outer = 42;
    assert_true(errors_of(g, "does not resolve") > 0);
    kn_graph_destroy(g);
}

static char *print_to_string(const kn_graph *g)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(kn_graph_print(g, f), KN_OK);
    fclose(f);
    return buf;
}

static void test_print_stable(void **state)
{
    (void)state;
    kn_graph *a = small_graph(), *b = small_graph();
    char *ta = print_to_string(a), *tb = print_to_string(b);
    assert_string_equal(ta, tb);
    const char *want = "graph 'main' {\n"
                       "  input %x: float32[batch, 4]\n"
                       "  (%r) = Relu<17>(%x)  # 'relu0'\n"
                       "  (%y) = Add<17>(%r, %x)  # 'add0'\n"
                       "  output %y\n"
                       "}\n";
    assert_string_equal(ta, want);
    free(ta);
    free(tb);
    kn_graph_destroy(a);
    kn_graph_destroy(b);
}

static void test_op_lookup(void **state)
{
    (void)state;
    kn_op_miss why;
    assert_int_equal(kn_op_lookup("", "Softmax", 13, &why), KN_OP_Softmax);
    assert_int_equal(why, KN_MISS_NONE);
    assert_int_equal(kn_op_lookup("ai.onnx", "Softmax", 1, NULL), KN_OP_Softmax);
    assert_int_equal(kn_op_lookup("", "Gelu", 13, &why), KN_OP_UNSUPPORTED);
    assert_int_equal(why, KN_MISS_TOO_OLD);
    assert_int_equal(kn_op_lookup("", "Gelu", 20, NULL), KN_OP_Gelu);
    assert_int_equal(kn_op_lookup("", "Upsample", 9, NULL), KN_OP_Upsample);
    assert_int_equal(kn_op_lookup("", "Upsample", 10, &why), KN_OP_UNSUPPORTED);
    assert_int_equal(why, KN_MISS_REMOVED);
    assert_int_equal(kn_op_lookup("", "NoSuchOp", 17, &why), KN_OP_UNSUPPORTED);
    assert_int_equal(why, KN_MISS_UNKNOWN);
    assert_int_equal(kn_op_lookup("com.microsoft", "MatMulNBits", 1, NULL), KN_OP_MS_MatMulNBits);
    assert_int_equal(kn_op_lookup("ai.onnx.ml", "LabelEncoder", 2, NULL), KN_OP_ML_LabelEncoder);
    assert_int_equal(kn_op_lookup("my.domain", "Relu", 1, NULL), KN_OP_UNSUPPORTED);
    assert_string_equal(kn_op_get(KN_OP_Conv)->name, "Conv");
    assert_int_equal(kn_domain_of("ai.onnx"), KN_DOM_ONNX);
    assert_int_equal(kn_domain_of(""), KN_DOM_ONNX);
}

static void test_attr_schema(void **state)
{
    (void)state;
    kn_attr_schema s;
    assert_true(kn_op_attr_schema(KN_OP_Cast, "to", &s));
    assert_int_equal(s.kind, KN_ATTR_INT);
    assert_true(s.required);
    assert_true(kn_op_attr_schema(KN_OP_Conv, "pads", &s));
    assert_int_equal(s.kind, KN_ATTR_INTS);
    assert_false(s.required);
    assert_true(kn_op_attr_schema(KN_OP_If, "then_branch", &s));
    assert_int_equal(s.kind, KN_ATTR_GRAPH);
    assert_true(kn_op_attr_schema(KN_OP_Constant, "sparse_value", &s));
    assert_int_equal(s.kind, KN_ATTR_TENSOR);
    assert_false(kn_op_attr_schema(KN_OP_Relu, "axis", &s));
}

static void test_dtype(void **state)
{
    (void)state;
    size_t n;
    assert_int_equal(kn_dtype_nbytes(KN_F32, 10, &n), KN_OK);
    assert_int_equal(n, 40);
    assert_int_equal(kn_dtype_nbytes(KN_I4, 5, &n), KN_OK);
    assert_int_equal(n, 3);
    assert_int_equal(kn_dtype_nbytes(KN_C128, 2, &n), KN_OK);
    assert_int_equal(n, 32);
    assert_int_equal(kn_dtype_nbytes(KN_F64, INT64_MAX, &n), KN_ERR_LIMIT);
    assert_int_equal(kn_dtype_nbytes(KN_STRING, 3, &n), KN_OK);
    assert_int_equal(n, 0);
    assert_string_equal(kn_dtype_name(KN_BF16), "bfloat16");
    assert_string_equal(kn_dtype_name(KN_F8E4M3FN), "float8e4m3fn");
    assert_false(kn_dtype_valid(0));
    assert_false(kn_dtype_valid(KN_DTYPE_COUNT));
    assert_true(kn_dtype_valid(KN_F8E8M0));
}

static void test_arena(void **state)
{
    (void)state;
    kn_arena *ar = kn_arena_create(NULL);
    assert_non_null(ar);
    char *a = kn_arena_alloc(ar, 3), *b = kn_arena_alloc(ar, 1 << 20), *c = kn_arena_alloc(ar, 5);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_int_equal((uintptr_t)a % 16, 0);
    assert_int_equal((uintptr_t)c % 16, 0);
    assert_int_equal(b[12345], 0);
    memset(b, 7, 1 << 20);
    assert_true(c - a > 0 && c - a < 1024); /* the big block did not end the small one */
    assert_null(kn_arena_alloc(ar, SIZE_MAX - 8));
    kn_arena_reset(ar);
    assert_int_equal(kn_arena_used(ar), 0);
    assert_non_null(kn_arena_alloc(ar, 100));
    kn_arena_destroy(ar);
}

static void test_intern(void **state)
{
    (void)state;
    kn_graph *g;
    assert_int_equal(kn_graph_create(NULL, &g), KN_OK);
    char buf[32];
    kn_str first[2000];
    for (int i = 0; i < 2000; i++) {
        snprintf(buf, sizeof buf, "name%d", i);
        first[i] = S(g, buf);
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(buf, sizeof buf, "name%d", i);
        assert_ptr_equal(S(g, buf), first[i]);
        assert_string_equal(first[i], buf);
    }
    kn_str p;
    assert_int_equal(kn_graph_intern(g, "name12345", 5, &p), KN_OK);
    assert_ptr_equal(p, first[1]);
    kn_graph_destroy(g);
}

static void test_diag(void **state)
{
    (void)state;
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_diag_add(d, KN_WARNING, "w %d", 1);
    kn_diag_add(d, KN_ERROR, "%s: node '%s' (%s, opset %d): bad", "m.onnx", "n", "Softmax", 13);
    assert_int_equal(kn_diag_size(d), 2);
    assert_int_equal(kn_diag_count(d, KN_ERROR), 1);
    kn_severity sev;
    assert_string_equal(kn_diag_message(d, 1, &sev), "error: m.onnx: node 'n' (Softmax, opset 13): bad");
    assert_int_equal(sev, KN_ERROR);
    assert_string_equal(kn_diag_message(d, 0, NULL), "warning: w 1");
    assert_null(kn_diag_message(d, 2, NULL));
    kn_diag_destroy(d);
}

static void test_unsupported_report(void **state)
{
    (void)state;
    kn_graph *g = small_graph();
    kn_id y = g->outputs[0];
    kn_id a = add_node(g, "Frobnicate", "f1", y, KN_NONE, "f1o");
    kn_id b = add_node(g, "Frobnicate", "f2", a, KN_NONE, "f2o");
    add_node(g, "Twiddle", "t1", b, KN_NONE, "t1o");
    kn_diag *d = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_graph_report_unsupported(g, NULL, NULL, d), KN_ERR_UNSUPPORTED);
    assert_int_equal(kn_diag_count(d, KN_ERROR), 1);
    const char *m = kn_diag_message(d, 0, NULL);
    assert_non_null(strstr(m, "3 nodes use 2 ops"));
    assert_non_null(strstr(m, "Frobnicate (ai.onnx, opset 17) x2: 'f1', 'f2'"));
    assert_non_null(strstr(m, "Twiddle (ai.onnx, opset 17) x1: 't1'"));
    kn_graph_stats st;
    assert_int_equal(kn_graph_stats_compute(g, NULL, &st), KN_OK);
    assert_int_equal(st.n_nodes, 5);
    assert_int_equal(st.n_unsupported, 2);
    assert_int_equal(st.n_unsupported_nodes, 3);
    assert_string_equal(st.ops[0].op_type, "Frobnicate"); /* most frequent first */
    kn_graph_stats_free(g, &st);
    kn_diag_destroy(d);
    kn_graph_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_ok),         cmocka_unit_test(test_verify_misordered),
        cmocka_unit_test(test_verify_self_loop),  cmocka_unit_test(test_verify_dangling),
        cmocka_unit_test(test_verify_duplicate),  cmocka_unit_test(test_verify_bad_ids),
        cmocka_unit_test(test_verify_types),      cmocka_unit_test(test_verify_op_mismatch),
        cmocka_unit_test(test_verify_outer),      cmocka_unit_test(test_print_stable),
        cmocka_unit_test(test_op_lookup),         cmocka_unit_test(test_attr_schema),
        cmocka_unit_test(test_dtype),             cmocka_unit_test(test_arena),
        cmocka_unit_test(test_intern),            cmocka_unit_test(test_diag),
        cmocka_unit_test(test_unsupported_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
