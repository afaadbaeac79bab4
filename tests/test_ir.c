/* IR unit tests: building graphs, the verifier's invariants, the printer,
 * the op table, arenas, diagnostics and dtypes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "ir/ir.h"
#include "ir/stats.h"
#include "model_builder.h"

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

/* ---- kn_graph_clone ---- */

static const float clone_w[4] = {1.5f, -2.0f, 0.25f, 8.0f};

/* small_graph (made with allocator a) with a constant two values share, a
 * node carrying every attribute kind, a subgraph reading an outer value,
 * and model info (opsets, metadata). */
static kn_graph *rich_graph(const kn_allocator *a)
{
    kn_graph *g;
    assert_int_equal(kn_graph_create(a, &g), KN_OK);
    g->name = S(g, "main");
    g->info->path = S(g, "rich.onnx");
    g->info->producer_name = S(g, "test");
    g->info->ir_version = 9;
    g->info->n_opsets = 1;
    g->info->opsets = kn_graph_alloc(g, sizeof(kn_opset));
    g->info->opsets[0] = (kn_opset){S(g, ""), 17};
    g->info->n_metadata = 1;
    g->info->metadata = kn_graph_alloc(g, sizeof(kn_kv));
    g->info->metadata[0] = (kn_kv){S(g, "kiln.kv_max"), S(g, "256")};
    kn_id x = add_input(g, "x");
    kn_tensor *t = kn_graph_alloc(g, sizeof *t);
    t->name = S(g, "w");
    t->dtype = KN_F32;
    t->rank = 1;
    t->dims = kn_graph_alloc(g, sizeof(int64_t));
    t->dims[0] = 4;
    t->n_elems = 4;
    t->nbytes = sizeof clone_w;
    t->data = kn_arena_dup(g->arena, clone_w, sizeof clone_w);
    kn_value c = {0};
    c.kind = KN_VAL_CONST;
    c.producer = KN_NONE;
    c.tensor = t;
    c.type.kind = KN_TYPE_TENSOR;
    c.type.dtype = KN_F32;
    c.type.shape.rank = 1;
    c.type.shape.dims = kn_graph_alloc(g, sizeof(kn_dim));
    c.type.shape.dims[0].value = 4;
    c.name = S(g, "w");
    kn_id w;
    assert_int_equal(kn_graph_add_value(g, &c, &w), KN_OK);
    kn_id r = add_node(g, "Relu", "relu0", x, KN_NONE, "r");
    kn_id m = add_node(g, "Mul", "mul0", r, w, "m");
    kn_id y = add_node(g, "Add", "add0", m, x, "y");
    set_output(g, y);

    kn_graph *sub;
    assert_int_equal(kn_graph_create_sub(g, &sub), KN_OK);
    sub->name = S(g, "body");
    kn_value o = {0};
    o.name = S(g, "x");
    o.kind = KN_VAL_OUTER;
    o.outer = x;
    o.producer = KN_NONE;
    kn_id oid;
    assert_int_equal(kn_graph_add_value(sub, &o, &oid), KN_OK);
    set_output(sub, add_node(sub, "Relu", "inner", oid, KN_NONE, "inner_r"));

    kn_node *n = &g->nodes[0]; /* Relu: schema-less attributes of every kind */
    kn_attr *at = kn_graph_alloc(g, 12 * sizeof *at);
    at[0] = (kn_attr){S(g, "f"), KN_ATTR_FLOAT, 0, {.f = 0.5f}};
    at[1] = (kn_attr){S(g, "i"), KN_ATTR_INT, 0, {.i = -7}};
    at[2] = (kn_attr){S(g, "s"), KN_ATTR_STRING, 0, {.s = {(const uint8_t *)S(g, "hello"), 5}}};
    at[3] = (kn_attr){S(g, "t"), KN_ATTR_TENSOR, 0, {.t = t}};
    at[4] = (kn_attr){S(g, "g"), KN_ATTR_GRAPH, 0, {.g = sub}};
    kn_type *tp = kn_graph_alloc(g, sizeof *tp);
    tp->kind = KN_TYPE_SEQUENCE;
    tp->elem = kn_graph_alloc(g, sizeof *tp->elem);
    tp->elem->kind = KN_TYPE_TENSOR;
    tp->elem->dtype = KN_I64;
    tp->elem->shape.rank = 1;
    tp->elem->shape.dims = kn_graph_alloc(g, sizeof(kn_dim));
    tp->elem->shape.dims[0] = (kn_dim){-1, S(g, "n")};
    at[5] = (kn_attr){S(g, "tp"), KN_ATTR_TYPE, 0, {.tp = tp}};
    float *fs = kn_graph_alloc(g, 2 * sizeof *fs);
    fs[0] = 1, fs[1] = 2;
    at[6] = (kn_attr){S(g, "fs"), KN_ATTR_FLOATS, 2, {.floats = fs}};
    int64_t *is = kn_graph_alloc(g, 3 * sizeof *is);
    is[0] = 3, is[1] = 4, is[2] = 5;
    at[7] = (kn_attr){S(g, "is"), KN_ATTR_INTS, 3, {.ints = is}};
    kn_bytes *ss = kn_graph_alloc(g, 2 * sizeof *ss);
    ss[0] = (kn_bytes){(const uint8_t *)S(g, "ab"), 2};
    ss[1] = (kn_bytes){(const uint8_t *)S(g, "c"), 1};
    at[8] = (kn_attr){S(g, "ss"), KN_ATTR_STRINGS, 2, {.strings = ss}};
    kn_tensor **ts = kn_graph_alloc(g, sizeof *ts);
    ts[0] = t;
    at[9] = (kn_attr){S(g, "ts"), KN_ATTR_TENSORS, 1, {.tensors = ts}};
    kn_graph **gs = kn_graph_alloc(g, sizeof *gs);
    gs[0] = sub;
    at[10] = (kn_attr){S(g, "gs"), KN_ATTR_GRAPHS, 1, {.graphs = gs}};
    kn_type **tps = kn_graph_alloc(g, sizeof *tps);
    tps[0] = tp->elem;
    at[11] = (kn_attr){S(g, "tps"), KN_ATTR_TYPES, 1, {.types = tps}};
    n->attrs = at;
    n->n_attrs = 12;
    return g;
}

static void test_clone_identical(void **state)
{
    (void)state;
    kn_graph *g = rich_graph(NULL), *c;
    assert_int_equal(errors_of(g, NULL), 0);
    assert_int_equal(kn_graph_clone(g, &c), KN_OK);
    char *tg = print_to_string(g), *tc = print_to_string(c);
    assert_string_equal(tg, tc);
    assert_non_null(strstr(tc, "body"));
    assert_int_equal(errors_of(c, NULL), 0);
    /* every name is the copy's own: equal to what its table interns */
    assert_ptr_equal(c->values[0].name, S(c, "x"));
    assert_ptr_not_equal(c->values[0].name, g->values[0].name);
    assert_ptr_equal(c->values[0].type.shape.dims[0].sym, S(c, "batch"));
    assert_ptr_equal(c->nodes[0].op_type, S(c, "Relu"));
    assert_ptr_equal(c->nodes[0].attrs[5].u.tp->elem->shape.dims[0].sym, S(c, "n"));
    assert_ptr_equal(c->info->path, S(c, "rich.onnx"));
    assert_ptr_equal(c->info->metadata[0].key, S(c, "kiln.kv_max"));
    assert_string_equal(c->info->metadata[0].value, "256");
    assert_int_equal(c->info->ir_version, 9);
    assert_ptr_equal(c->info->opsets[0].domain, S(c, ""));
    /* the subgraph is the copy's, and reads the copy's values */
    kn_graph *sub = c->nodes[0].attrs[4].u.g;
    assert_ptr_equal(sub->parent, c);
    assert_ptr_equal(sub, c->subgraphs[0]);
    assert_ptr_equal(c->nodes[0].attrs[10].u.graphs[0], sub);
    const kn_graph *owner;
    assert_ptr_equal(kn_value_resolve(sub, 0, &owner), &c->values[0]);
    assert_ptr_equal(owner, c);
    /* the constant: a new tensor, shared by the value and both attributes,
     * whose data is the source's */
    const kn_tensor *t = c->values[1].tensor;
    assert_ptr_not_equal(t, g->values[1].tensor);
    assert_ptr_equal(t->name, S(c, "w"));
    assert_ptr_equal(t->data, g->values[1].tensor->data);
    assert_ptr_equal(c->nodes[0].attrs[3].u.t, t);
    assert_ptr_equal(c->nodes[0].attrs[9].u.tensors[0], t);
    assert_ptr_not_equal(c->nodes[0].attrs[6].u.floats, g->nodes[0].attrs[6].u.floats);
    /* byte strings stay NUL-terminated (readers take them as C strings) */
    assert_string_equal((const char *)c->nodes[0].attrs[2].u.s.data, "hello");
    assert_string_equal((const char *)c->nodes[0].attrs[8].u.strings[1].data, "c");
    /* a subgraph cannot be cloned on its own */
    kn_graph *bad = (kn_graph *)1;
    assert_int_equal(kn_graph_clone(g->subgraphs[0], &bad), KN_ERR_INVALID);
    assert_null(bad);
    free(tg);
    free(tc);
    kn_graph_destroy(c);
    kn_graph_destroy(g);
}

/* Changing either graph after the clone leaves the other as it was. */
static void test_clone_independent(void **state)
{
    (void)state;
    kn_graph *g = rich_graph(NULL), *c;
    char *before = print_to_string(g);
    assert_int_equal(kn_graph_clone(g, &c), KN_OK);
    /* the source: a value renamed, a node appended, an attribute changed,
     * the Mul dropped (its output no longer read) */
    g->values[2].name = S(g, "renamed");
    g->values[0].type.shape.dims[1].value = 9;
    g->nodes[0].attrs[7].u.ints[0] = 99;
    g->subgraphs[0]->name = S(g, "other");
    kn_id z = add_node(g, "Neg", "neg0", g->outputs[0], KN_NONE, "z");
    g->outputs[0] = z;
    g->nodes[2].inputs[0] = g->nodes[0].outputs[0];
    bool dead[8] = {false, true};
    assert_int_equal(kn_graph_compact(g, dead), KN_OK);
    assert_int_equal(errors_of(g, NULL), 0);
    char *tc = print_to_string(c), *tg = print_to_string(g);
    assert_string_equal(tc, before);
    assert_string_not_equal(tg, before);
    assert_int_equal(errors_of(c, NULL), 0);
    /* and the copy: the same, the other way */
    kn_graph *g2 = rich_graph(NULL), *c2;
    assert_int_equal(kn_graph_clone(g2, &c2), KN_OK);
    c2->values[0].name = S(c2, "renamed");
    c2->nodes[0].attrs[2].u.s.data = (const uint8_t *)S(c2, "bye!!");
    c2->nodes[0].attrs[5].u.tp->elem->shape.dims[0].value = 3;
    c2->info->metadata[0].value = S(c2, "512");
    assert_int_equal(kn_graph_compact(c2, dead), KN_OK);
    char *tg2 = print_to_string(g2);
    assert_string_equal(tg2, before);
    assert_string_equal(g2->info->metadata[0].value, "256");
    free(before);
    free(tc);
    free(tg);
    free(tg2);
    kn_graph_destroy(c2);
    kn_graph_destroy(g2);
    kn_graph_destroy(c);
    kn_graph_destroy(g);
}

/* Either graph may go first; the shared constant data lives while a clone
 * reads it, and every block is freed once both are gone (also for a
 * clone of a clone). */
static void test_clone_destroy_order(void **state)
{
    (void)state;
    for (int order = 0; order < 3; order++) {
        mb_counter f;
        mb_counter_init(&f);
        const kn_allocator a = f.a;
        kn_graph *g = rich_graph(&a), *c, *cc = NULL;
        long alone = f.live;
        assert_int_equal(kn_graph_clone(g, &c), KN_OK);
        if (order == 2)
            assert_int_equal(kn_graph_clone(c, &cc), KN_OK);
        char *want = print_to_string(g);
        if (order == 0) {
            kn_graph_destroy(c);
            assert_int_equal(f.live, alone);
            assert_int_equal(g->n_borrowers, 0);
            kn_graph_destroy(g);
        } else {
            kn_graph_destroy(g); /* held: c reads its data */
            assert_true(f.live > alone);
            kn_graph *last = order == 2 ? cc : c;
            if (order == 2)
                kn_graph_destroy(c); /* held too: cc reads through it */
            char *got = print_to_string(last);
            assert_string_equal(got, want);
            free(got);
            assert_int_equal(errors_of(last, NULL), 0);
            assert_memory_equal(last->values[1].tensor->data, clone_w, sizeof clone_w);
            kn_graph_destroy(last);
        }
        free(want);
        assert_int_equal(f.live, 0);
    }
}

/* Every allocation of a clone failing in turn: a clean KN_ERR_NOMEM, no
 * copy, nothing leaked, the source untouched. */
static void test_clone_alloc_fail(void **state)
{
    (void)state;
    mb_counter f;
    mb_counter_init(&f);
    const kn_allocator a = f.a;
    kn_graph *g = rich_graph(&a);
    char *want = print_to_string(g);
    long n;
    for (n = 1;; n++) {
        long live = f.live;
        f.fail_at = f.calls + n;
        kn_graph *c = (kn_graph *)1;
        kn_status s = kn_graph_clone(g, &c);
        bool hit = f.calls >= f.fail_at;
        f.fail_at = 0;
        if (!hit) {
            assert_int_equal(s, KN_OK);
            kn_graph_destroy(c);
            assert_int_equal(f.live, live);
            break;
        }
        assert_int_equal(s, KN_ERR_NOMEM);
        assert_null(c);
        assert_int_equal(f.live, live);
        assert_int_equal(g->n_borrowers, 0);
    }
    assert_true(n > 10);
    char *got = print_to_string(g);
    assert_string_equal(got, want);
    free(got);
    free(want);
    kn_graph_destroy(g);
    assert_int_equal(f.live, 0);
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
        cmocka_unit_test(test_clone_identical),   cmocka_unit_test(test_clone_independent),
        cmocka_unit_test(test_clone_destroy_order), cmocka_unit_test(test_clone_alloc_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
