/* Target cuda: layout ops whose output is a contiguous byte range of
 * their input become aliases (no step), at an offset into the input's
 * buffer where needed (Transpose moving only dims of extent 1, Slice and
 * Split of a leading range); the ones that move bytes stay kernels or
 * copies. Each graph is lowered, its steps and slots checked, and run
 * under the host emulator against the CPU backend (bit for bit). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/cuda/emit.h"
#include "codegen/cuda/lower.h"
#include "emu_host.h"
#include "emu_program.h"
#include "pass_check.h"
#include "runtime/cpu/exec.h"

#include <math.h>
#include <string.h>

static bool emu_ok;

typedef struct lowered {
    kn_graph *g;
    kn_cu_program p;
    uint32_t launches, copies, gemms;
} lowered;

static void lower(mb *b, Onnx__ModelProto *m, lowered *L)
{
    memset(L, 0, sizeof *L);
    L->g = pc_import(b, m);
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_cuda_lower(L->g, NULL, 0, NULL, d, &L->p, NULL), KN_OK);
    kn_diag_destroy(d);
    for (uint32_t i = 0; i < L->p.n_steps; i++) {
        L->launches += L->p.steps[i].kind == KN_CU_STEP_LAUNCH;
        L->copies += L->p.steps[i].kind == KN_CU_STEP_COPY;
        L->gemms += L->p.steps[i].kind == KN_CU_STEP_GEMM;
    }
}

static void lowered_free(lowered *L)
{
    kn_cu_program_free(&L->p);
    kn_graph_destroy(L->g);
}

/* The slot holding graph value `name`. */
static const kn_cu_slot *slot_of(const lowered *L, const char *name)
{
    for (uint32_t i = 0; i < L->p.n_slots; i++) {
        kn_id v = L->p.slots[i].value;
        if (v != KN_NONE && L->g->values[v].name && strcmp(L->g->values[v].name, name) == 0)
            return &L->p.slots[i];
    }
    fail_msg("no slot holds '%s'", name);
    return NULL;
}

/* The program under the emulator and the graph on the CPU backend, on the
 * same float inputs: every output equal to the bit. */
static void same_as_cpu(const lowered *L)
{
    if (!emu_ok) {
        print_message("skipped the emulated run: the host emulator cannot start\n");
        return;
    }
    const kn_graph *g = L->g;
    kn_rt_tensor *in[4] = {0}, *want[8] = {0}, *got[8] = {0};
    assert_true(g->n_inputs <= 4 && g->n_outputs <= 8);
    for (uint32_t i = 0; i < g->n_inputs; i++) {
        const kn_type *t = &g->values[g->inputs[i]].type;
        int64_t dims[16];
        for (int32_t k = 0; k < t->shape.rank; k++)
            dims[k] = t->shape.dims[k].value;
        assert_int_equal(kn_rt_tensor_new(NULL, t->dtype, t->shape.rank, dims, &in[i]), KN_OK);
        for (int64_t e = 0; e < in[i]->numel; e++)
            ((float *)in[i]->data)[e] = (float)sin(0.37 * (double)e + i) + (float)e;
    }
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_cpu_run(g, NULL, d, (const kn_rt_tensor *const *)in, g->n_inputs, want, g->n_outputs), KN_OK);
    kn_diag_destroy(d);
    char msg[4096] = "";
    kn_status s = kn_emu_run_program(g, &L->p, in, got, NULL, msg, sizeof msg);
    if (s != KN_OK)
        fail_msg("emulated run: %s", msg);
    for (uint32_t i = 0; i < g->n_outputs; i++) {
        assert_int_equal(got[i]->nbytes, want[i]->nbytes);
        assert_memory_equal(got[i]->data, want[i]->data, want[i]->nbytes);
        kn_rt_tensor_free(NULL, got[i]);
        kn_rt_tensor_free(NULL, want[i]);
    }
    for (uint32_t i = 0; i < g->n_inputs; i++)
        kn_rt_tensor_free(NULL, in[i]);
}

static Onnx__NodeProto *transpose(mb *b, Onnx__GraphProto *g, const char *in, const char *out, const int64_t *perm)
{
    Onnx__NodeProto *n = mb_node(b, g, "Transpose", out, in, out);
    mb_attr_ints(b, n, "perm", perm, 4);
    return n;
}

/* [1, S, H, D] -> [1, H, S, D] at S = 1 (the decoder's Q/K/V at one
 * token) is an alias; at S = 2 it moves bytes and stays a kernel. The
 * Relu after each view reads it through the alias. */
static void test_transpose(void **state)
{
    (void)state;
    static const int64_t perm[4] = {0, 2, 1, 3};
    for (int s = 1; s <= 2; s++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = mb_model(b, 17);
        Onnx__GraphProto *g = m->graph;
        mb_input(b, g, "x", mb_tensor_type(b, KN_F32, s == 1 ? "1,1,3,8" : "1,2,3,8"));
        transpose(b, g, "x", "t", perm);
        mb_node(b, g, "Relu", "r", "t", "y");
        mb_output(b, g, "y", NULL);
        lowered L;
        lower(b, m, &L);
        assert_int_equal(L.launches, s == 1 ? 1 : 2); /* the Relu (+ the transpose) */
        assert_int_equal(L.copies, 0);
        same_as_cpu(&L);
        lowered_free(&L);
        mb_free(b);
    }
}

/* The rule itself: dims of extent 1 may move anywhere, the others must
 * keep the row-major strides and not wrap. */
static void test_view_rule(void **state)
{
    (void)state;
    int64_t none[4] = {0, 0, 0, 0};
    int64_t d1[4] = {1, 4, 1, 8}, s1[4] = {8, 8, 32, 1}; /* [1,1,4,8] -> perm (0,2,1,3) */
    assert_true(kn_cuda_view_is_range(4, d1, none, s1));
    int64_t d2[4] = {1, 4, 2, 8}, s2[4] = {64, 8, 32, 1}; /* [1,2,4,8] -> perm (0,2,1,3): moves */
    assert_false(kn_cuda_view_is_range(4, d2, none, s2));
    int64_t d3[2] = {8, 4}, s3[2] = {1, 8}; /* a 2-D transpose */
    assert_false(kn_cuda_view_is_range(2, d3, none, s3));
    int64_t d4[2] = {1, 5}, s4[2] = {16, 1}; /* Slice of the last axis of [1, 16] */
    assert_true(kn_cuda_view_is_range(2, d4, none, s4));
    int64_t d5[2] = {2, 5}, s5[2] = {16, 1}; /* ... of [2, 16]: rows apart */
    assert_false(kn_cuda_view_is_range(2, d5, none, s5));
    int64_t d6[1] = {8}, m6[1] = {4}, s6[1] = {1}; /* Tile: wraps */
    assert_false(kn_cuda_view_is_range(1, d6, m6, s6));
    int64_t d7[1] = {4}, s7[1] = {2}; /* step 2 */
    assert_false(kn_cuda_view_is_range(1, d7, none, s7));
    int64_t d8[2] = {3, 1}, s8[2] = {0, 1}; /* Expand [1] -> [3, 1]: stride 0 */
    assert_false(kn_cuda_view_is_range(2, d8, none, s8));
}

/* Split of [1, 1, 24] float32 into 4 | 4 | 2 | 14 on the last axis: the
 * parts at byte offsets 0, 16 and 32 become aliases into x's buffer, the
 * one at 40 (not 16-byte aligned) stays a copy; with rows before the
 * axis ([1, 2, 24]) every part is a strided copy kernel. A kernel runs
 * between the split and the reads of its parts, and x itself stays an
 * output read at the end. */
static void test_split(void **state)
{
    (void)state;
    for (int rows = 1; rows <= 2; rows++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = mb_model(b, 13);
        Onnx__GraphProto *g = m->graph;
        mb_input(b, g, "x", mb_tensor_type(b, KN_F32, rows == 1 ? "1,1,24" : "1,2,24"));
        int64_t sd[1] = {4}, parts[4] = {4, 4, 2, 14};
        mb_int64_data(b, mb_initializer(b, g, "parts", KN_I64, sd, 1), parts, 4);
        Onnx__NodeProto *n = mb_node(b, g, "Split", "split", "x,parts", "a,b2,c,e");
        mb_attr_i(b, n, "axis", -1);
        mb_node(b, g, "Relu", "r0", "x", "xr");
        mb_node(b, g, "Neg", "r1", "a", "ya");
        mb_node(b, g, "Neg", "r2", "b2", "yb");
        mb_node(b, g, "Neg", "r3", "c", "yc");
        mb_node(b, g, "Neg", "r4", "e", "ye");
        mb_output(b, g, "ya", NULL);
        mb_output(b, g, "yb", NULL);
        mb_output(b, g, "yc", NULL);
        mb_output(b, g, "ye", NULL);
        mb_output(b, g, "c", NULL);
        lowered L;
        lower(b, m, &L);
        if (rows == 1) {
            assert_int_equal(L.launches, 5);
            assert_int_equal(L.copies, 1);
            const kn_cu_slot *x = slot_of(&L, "x");
            assert_int_equal(slot_of(&L, "a")->offset, x->offset);
            assert_int_equal(slot_of(&L, "b2")->offset, x->offset + 16);
            assert_int_equal(slot_of(&L, "c")->offset, x->offset + 32);
            assert_int_equal(slot_of(&L, "c")->nbytes, 8);
            assert_int_equal(slot_of(&L, "e")->nbytes, 56);
            assert_true(slot_of(&L, "e")->offset < x->offset || slot_of(&L, "e")->offset >= x->offset + 96);
        } else {
            assert_int_equal(L.launches, 9);
            assert_int_equal(L.copies, 0);
        }
        same_as_cpu(&L);
        lowered_free(&L);
        mb_free(b);
    }
}

/* Slice of [1, 4, 8] float32: rows 1..2 of axis 1 are bytes 32 ... 95
 * (an alias); columns 0..3 of axis 2 are strided (a kernel); rows 1..2
 * of a [1, 4, 3] input start at byte 12 (a kernel: not 16-byte aligned). */
static void test_slice(void **state)
{
    (void)state;
    for (int c = 0; c < 3; c++) {
        mb *b = mb_new();
        Onnx__ModelProto *m = mb_model(b, 13);
        Onnx__GraphProto *g = m->graph;
        mb_input(b, g, "x", mb_tensor_type(b, KN_F32, c == 2 ? "1,4,3" : "1,4,8"));
        int64_t one[1] = {1}, st[1] = {c == 1 ? 0 : 1}, en[1] = {c == 1 ? 4 : 3}, ax[1] = {c == 1 ? 2 : 1};
        mb_int64_data(b, mb_initializer(b, g, "starts", KN_I64, one, 1), st, 1);
        mb_int64_data(b, mb_initializer(b, g, "ends", KN_I64, one, 1), en, 1);
        mb_int64_data(b, mb_initializer(b, g, "axes", KN_I64, one, 1), ax, 1);
        mb_node(b, g, "Slice", "slice", "x,starts,ends,axes", "s");
        mb_node(b, g, "Neg", "neg", "s", "y");
        mb_output(b, g, "y", NULL);
        lowered L;
        lower(b, m, &L);
        assert_int_equal(L.launches, c == 0 ? 1 : 2);
        if (c == 0)
            assert_int_equal(slot_of(&L, "s")->offset, slot_of(&L, "x")->offset + 32);
        same_as_cpu(&L);
        lowered_free(&L);
        mb_free(b);
    }
}

int main(void)
{
    char err[512];
    emu_ok = kn_emu_init(err, sizeof err);
    if (!emu_ok)
        print_message("the host emulator cannot start: %s\n", err);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_view_rule),
        cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_slice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
