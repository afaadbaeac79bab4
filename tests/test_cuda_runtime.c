/* The CUDA backend (runtime/cuda). Without a GPU: the driver is absent
 * and kn_cuda_available says so without crashing, the CUDA sections of a
 * plan are read back and every corrupted entry is refused (hand-picked
 * corruptions and a random byte sweep), image choice per arch. With
 * `--stub` (ctest test_cuda_runtime_stub): the toolkit's stub libcuda is
 * found, every entry point resolves and cuInit's failure is reported.
 * With `--mock` (test_cuda_runtime_mock): the executor runs against a
 * host-memory mock of the driver and cuBLASLt (tests/cuda_mock.c): staging,
 * slot addresses, copies, GEMMs mapped to cuBLASLt's column-major view
 * (computed by the mock as cuBLASLt defines them) against the CPU backend,
 * every failing CUDA call, no leaks. With `--gpu` (ctest label gpu): plans
 * compiled with NVRTC run on the GPU and match the CPU backend; skipped
 * cleanly without a GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/cuda/gemv_kernels.h"
#include "codegen/cuda/lower.h"
#include "codegen/plan_write.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "model_builder.h"
#include "passes/passes.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"
#include "runtime/cuda/plan.h"

#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *tmpdir;
static mb *tb; /* owns tmpdir */

static int setup(void **state)
{
    (void)state;
    tb = mb_new();
    tmpdir = mb_tempdir(tb);
    return tmpdir ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    mb_rmtree(tmpdir);
    mb_free(tb);
    return 0;
}

/* ---- models ---- */

static const float w_vals[12] = {0.5f, -1, 2, 0.25f, 1, 1.5f, -0.5f, 3, -2, 0.75f, 1, -1};
static const float wt_vals[15] = {1, 2, 3, -1, 0.5f, 0.25f, 2, -2, 1, 0, 1, 0, 3, 1, -1};

/* x[2,3] → MatMul w[3,4] → Relu → Add bias[4] → y;
 * Gemm(x, wt[5,3], b2[5], transB, alpha 0.5, beta 2) → z */
static Onnx__ModelProto *model_gemms(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    mb_float_data(b, mb_initializer(b, g, "w", KN_F32, (int64_t[]){3, 4}, 2), w_vals, 12);
    mb_float_data(b, mb_initializer(b, g, "bias", KN_F32, (int64_t[]){4}, 1), (float[]){0.1f, -0.2f, 0.3f, 0}, 4);
    mb_float_data(b, mb_initializer(b, g, "wt", KN_F32, (int64_t[]){5, 3}, 2), wt_vals, 15);
    mb_float_data(b, mb_initializer(b, g, "b2", KN_F32, (int64_t[]){5}, 1), (float[]){1, 2, 3, 4, 5}, 5);
    mb_node(b, g, "MatMul", "mm", "x,w", "h");
    mb_node(b, g, "Relu", "relu", "h", "r");
    mb_node(b, g, "Add", "add", "r,bias", "y");
    Onnx__NodeProto *n = mb_node(b, g, "Gemm", "gemm", "x,wt,b2", "z");
    mb_attr_i(b, n, "transB", 1);
    mb_attr_f(b, n, "alpha", 0.5f);
    mb_attr_f(b, n, "beta", 2.0f);
    mb_output(b, g, "y", NULL);
    mb_output(b, g, "z", NULL);
    return m;
}

/* MatMulInteger(a int8 [3, 8], w int8 [8, 4]) → y int32 [3, 4]: the
 * int8 cuBLASLt path (B transposed by a kernel, then the int8 GEMM) */
static Onnx__ModelProto *model_int8(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    int8_t w[32];
    for (int i = 0; i < 32; i++)
        w[i] = (int8_t)(i * 37 - 128);
    mb_input(b, g, "a", mb_tensor_type(b, KN_I8, "3,8"));
    mb_raw(b, mb_initializer(b, g, "w", KN_I8, (int64_t[]){8, 4}, 2), w, sizeof w);
    mb_node(b, g, "MatMulInteger", "mmi", "a,w", "y");
    mb_output(b, g, "y", NULL);
    return m;
}

/* a[2,3,4] @ c[2,4,5] (batched) → Transpose(0,2,1) → Exp → t; and a
 * Reshape (an alias: no step) → r */
static Onnx__ModelProto *model_batched(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "a", mb_tensor_type(b, KN_F32, "2,3,4"));
    mb_input(b, g, "c", mb_tensor_type(b, KN_F32, "2,4,5"));
    mb_int64_data(b, mb_initializer(b, g, "shape", KN_I64, (int64_t[]){2}, 1), (int64_t[]){6, 4}, 2);
    mb_node(b, g, "MatMul", "bmm", "a,c", "p");
    Onnx__NodeProto *n = mb_node(b, g, "Transpose", "tr", "p", "q");
    mb_attr_ints(b, n, "perm", (int64_t[]){0, 2, 1}, 3);
    mb_node(b, g, "Exp", "exp", "q", "t");
    mb_node(b, g, "Reshape", "rs", "a,shape", "r");
    mb_output(b, g, "t", NULL);
    mb_output(b, g, "r", NULL);
    return m;
}

/* float16: x[4,8] → Cast f16 → MatMul w16[8,3] → Cast f32 → y */
static Onnx__ModelProto *model_half(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "4,8"));
    uint16_t w16[24];
    for (int i = 0; i < 24; i++)
        w16[i] = kn_f32_to_f16((float)((i * 7) % 11 - 5) / 4.0f);
    mb_raw(b, mb_initializer(b, g, "w16", KN_F16, (int64_t[]){8, 3}, 2), w16, sizeof w16);
    mb_attr_i(b, mb_node(b, g, "Cast", "to16", "x", "x16"), "to", KN_F16);
    mb_node(b, g, "MatMul", "mm16", "x16,w16", "y16");
    mb_attr_i(b, mb_node(b, g, "Cast", "to32", "y16", "y"), "to", KN_F32);
    mb_output(b, g, "y", NULL);
    return m;
}

/* x → Identity → y (an alias: no step at all) */
static Onnx__ModelProto *model_identity(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    mb_node(b, g, "Identity", "id", "x", "y");
    mb_output(b, g, "y", NULL);
    return m;
}

/* GEMM-only graphs (the mock runs GEMMs and copies, not kernels) */
static Onnx__ModelProto *model_matmul(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "x", mb_tensor_type(b, KN_F32, "2,3"));
    mb_float_data(b, mb_initializer(b, g, "w", KN_F32, (int64_t[]){3, 4}, 2), w_vals, 12);
    mb_node(b, g, "MatMul", "mm", "x,w", "y");
    mb_output(b, g, "y", NULL);
    return m;
}

/* Gemm with transA, transB, a full C, alpha and beta */
static Onnx__ModelProto *model_gemm_full_c(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "a", mb_tensor_type(b, KN_F32, "4,3"));
    mb_input(b, g, "c", mb_tensor_type(b, KN_F32, "3,5"));
    static const float wt4[20] = {1, 2, 3, -1, 0.5f, 0.25f, 2, -2, 1, 0, 1, 0, 3, 1, -1, 2, -3, 0.5f, 1, 4};
    mb_float_data(b, mb_initializer(b, g, "wt", KN_F32, (int64_t[]){5, 4}, 2), wt4, 20);
    Onnx__NodeProto *n = mb_node(b, g, "Gemm", "gemm", "a,wt,c", "y");
    mb_attr_i(b, n, "transA", 1);
    mb_attr_i(b, n, "transB", 1);
    mb_attr_f(b, n, "alpha", 0.5f);
    mb_attr_f(b, n, "beta", 2.0f);
    mb_output(b, g, "y", NULL);
    return m;
}

/* batched MatMuls: both batched; B shared (one tall GEMM); A shared
 * (stride 0); plus a Reshape alias of an input as an output */
static Onnx__ModelProto *model_batches(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "a", mb_tensor_type(b, KN_F32, "2,3,4"));
    mb_input(b, g, "c", mb_tensor_type(b, KN_F32, "2,4,5"));
    mb_input(b, g, "e", mb_tensor_type(b, KN_F32, "3,4"));
    mb_float_data(b, mb_initializer(b, g, "w", KN_F32, (int64_t[]){4, 3}, 2), w_vals, 12);
    mb_int64_data(b, mb_initializer(b, g, "shape", KN_I64, (int64_t[]){2}, 1), (int64_t[]){6, 4}, 2);
    mb_node(b, g, "MatMul", "both", "a,c", "p");
    mb_node(b, g, "MatMul", "tall", "a,w", "q");
    mb_node(b, g, "MatMul", "shared_a", "e,c", "t");
    mb_node(b, g, "Reshape", "rs", "a,shape", "r");
    mb_output(b, g, "p", NULL);
    mb_output(b, g, "q", NULL);
    mb_output(b, g, "t", NULL);
    mb_output(b, g, "r", NULL);
    return m;
}

/* float16 and float64 GEMMs */
static Onnx__ModelProto *model_dtypes(mb *b)
{
    Onnx__ModelProto *m = mb_model(b, 13);
    Onnx__GraphProto *g = m->graph;
    mb_input(b, g, "h", mb_tensor_type(b, KN_F16, "4,8"));
    mb_input(b, g, "d", mb_tensor_type(b, KN_F64, "3,2"));
    uint16_t w16[24];
    for (int i = 0; i < 24; i++)
        w16[i] = kn_f32_to_f16((float)((i * 7) % 11 - 5) / 4.0f);
    mb_raw(b, mb_initializer(b, g, "w16", KN_F16, (int64_t[]){8, 3}, 2), w16, sizeof w16);
    mb_double_data(b, mb_initializer(b, g, "w64", KN_F64, (int64_t[]){2, 2}, 2), (double[]){1.5, -2, 0.25, 3}, 4);
    mb_node(b, g, "MatMul", "mm16", "h,w16", "y16");
    mb_node(b, g, "MatMul", "mm64", "d,w64", "y64");
    mb_output(b, g, "y16", NULL);
    mb_output(b, g, "y64", NULL);
    return m;
}

typedef Onnx__ModelProto *(*model_fn)(mb *b);

/* ---- building cuda plans ---- */

enum images { FAKE_IMAGES, NVRTC_IMAGES };

/* Replaces kernel k's images by a fake PTX text and a fake sm_90 CUBIN
 * (enough for reading the sections; nothing here loads them). */
static void fake_images(kn_cu_program *p)
{
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        kn_cu_kernel *kk = &p->kernels[k];
        kk->images = kn_mem_alloc(p->a, 2 * sizeof *kk->images);
        assert_non_null(kk->images);
        static const char ptx[] = "// not really PTX\n";
        static const char elf[] = "\177ELF not really a CUBIN";
        uint8_t *a = kn_mem_alloc(p->a, sizeof ptx), *c = kn_mem_alloc(p->a, sizeof elf);
        assert_true(a && c);
        memcpy(a, ptx, sizeof ptx);
        memcpy(c, elf, sizeof elf);
        kk->images[0] = (kn_cu_image){90, c, sizeof elf};
        kk->images[1] = (kn_cu_image){KN_CU_ARCH_PTX, a, sizeof ptx};
        kk->n_images = 2;
    }
}

/* Keeps only the images of each kernel whose arch is `keep`. */
static void keep_images(kn_cu_program *p, uint32_t keep)
{
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        kn_cu_kernel *kk = &p->kernels[k];
        uint32_t n = 0;
        for (uint32_t i = 0; i < kk->n_images; i++) {
            if (kk->images[i].arch == keep)
                kk->images[n++] = kk->images[i];
            else
                kn_mem_free(p->a, (void *)kk->images[i].data);
        }
        kk->n_images = n;
    }
}

/* Imports, optimises and lowers a model for target cuda and writes the
 * plan to tmpdir/name. NVRTC_IMAGES compiles the kernels (for sm_80..90
 * + PTX); `keep` (if not UINT32_MAX) then drops every image of another
 * arch.
 * Returns KN_ERR_UNSUPPORTED when NVRTC is missing. */
/* The GEMV/cuBLASLt table build_plan lowers with: these tests are about
 * cuBLASLt's GEMM steps, so every product goes there unless a test sets
 * NULL (the built-in table and rule: few-row products on the GEMV). */
static const char *plan_gemm_table = "* * * * * * cublaslt\n";

static kn_status build_plan(model_fn fn, enum images im, uint32_t keep, const char *name, char *path, size_t n)
{
    mb *b = mb_new();
    size_t len;
    uint8_t *bytes = mb_pack(b, fn(b), &len);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "model.onnx", NULL, NULL, d, &g), KN_OK);
    kn_pipeline_opts po = {true, NULL};
    assert_int_equal(kn_pipeline_run(g, &po, d), KN_OK);
    kn_cu_program prog;
    memset(&prog, 0, sizeof prog);
    kn_gemm_table table = {0};
    if (plan_gemm_table)
        assert_int_equal(kn_gemm_table_parse(plan_gemm_table, "test", NULL, d, &table), KN_OK);
    kn_cuda_lower_opts lo = {plan_gemm_table ? &table : NULL, 90};
    assert_int_equal(kn_cuda_lower_opt(g, NULL, 0, NULL, &lo, d, &prog, NULL), KN_OK);
    kn_gemm_table_free(&table);
    kn_status s = KN_OK;
    if (im == FAKE_IMAGES) {
        fake_images(&prog);
    } else {
        static const uint32_t archs[] = {80, 86, 89, 90};
        char cache[600];
        snprintf(cache, sizeof cache, "%s/cache", tmpdir);
        kn_nvrtc_options no = {archs, 4, false, cache, 0};
        s = kn_cuda_compile(&prog, &no, d, NULL);
    }
    if (s == KN_OK && keep != UINT32_MAX)
        keep_images(&prog, keep);
    snprintf(path, n, "%s/%s", tmpdir, name);
    if (s == KN_OK) {
        /* a named blob too: the CUDA sections are read past it */
        static const kn_plan_named_in blob = {"tokenizer_config.json", "{}", 2};
        kn_plan_options o = {"--target cuda", "cuda", &prog, &blob, 1};
        assert_int_equal(kn_plan_write(g, &o, path, d), KN_OK);
    }
    kn_cu_program_free(&prog);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    mb_free(b);
    return s;
}

/* Where section `kind` lies in plan bytes. */
static void section(const uint8_t *p, int kind, uint64_t *off, uint64_t *size)
{
    kn_plan_header h;
    memcpy(&h, p, sizeof h);
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section s;
        memcpy(&s, p + h.sections_off + i * sizeof s, sizeof s);
        if ((int)s.kind == kind) {
            *off = s.offset;
            *size = s.size;
            return;
        }
    }
    fail_msg("section %d is missing", kind);
}

/* Loads plan bytes and reads their CUDA sections; returns that status
 * (the plan itself must load). `want` (may be NULL) must appear in an
 * error message when the status is not KN_OK. */
static kn_status read_cuda(const uint8_t *p, size_t n, const char *want)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    kn_status s = kn_plan_load_memory(p, n, "t.plan", NULL, d, &g);
    if (s != KN_OK) {
        kn_diag_print(d, stderr);
        kn_diag_destroy(d);
        return KN_ERR_INTERNAL; /* the plan itself should load */
    }
    kn_cuda_plan cp;
    s = kn_cuda_plan_read(g, p, n, NULL, d, &cp);
    if (s == KN_OK)
        kn_cuda_plan_free(&cp);
    else if (want && !mb_diag_has(d, KN_ERROR, "t.plan: ", want)) {
        kn_diag_print(d, stderr);
        fail_msg("no error message containing '%s'", want);
    }
    kn_graph_destroy(g);
    kn_diag_destroy(d);
    return s;
}

/* ---- without a GPU ---- */

static void test_available(void **state)
{
    (void)state;
    kn_diag *d = kn_diag_create(NULL, NULL);
    bool a1 = kn_cuda_available(d);
    bool a2 = kn_cuda_available(d);
    assert_int_equal(a1, a2);
    if (a1) {
        assert_int_equal(kn_diag_size(d), 0);
        printf("note: a GPU is present; the no-driver path is checked where there is none\n");
    } else {
        /* one note per call, saying why; never an error */
        assert_int_equal(kn_diag_size(d), 2);
        assert_int_equal(kn_diag_count(d, KN_ERROR), 0);
        const char *m = kn_diag_message(d, 0, NULL);
        assert_true(strncmp(m, "note: ", 6) == 0 && strlen(m) > 12);
        assert_string_equal(m, kn_diag_message(d, 1, NULL));
        printf("CUDA is not available here: %s\n", m + 6);
    }
    kn_diag_destroy(d);
}

/* Session creation fails cleanly without a driver (and the plan checks
 * come first: a CPU plan has no CUDA code). */
static void test_session_without_gpu(void **state)
{
    (void)state;
    kn_diag *q = kn_diag_create(NULL, NULL);
    if (kn_cuda_available(q)) {
        kn_diag_destroy(q);
        skip();
    }
    kn_diag_destroy(q);
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "nogpu.plan", path, sizeof path), KN_OK);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    assert_true(kn_cuda_plan_has_code(g));
    kn_cuda_session *s = (kn_cuda_session *)1;
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, NULL, NULL, d, &s), KN_ERR_UNSUPPORTED);
    assert_null(s);
    assert_int_equal(kn_diag_count(d, KN_ERROR), 1);
    kn_cuda_session_destroy(NULL);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
}

/* The built-in table and rule: the MatMul (2 rows) on the dense GEMV, the
 * Gemm (transB) on cuBLASLt; the same model and table give the same plan
 * bytes; a table row sends the MatMul back to cuBLASLt. */
static void test_gemv_choice(void **state)
{
    (void)state;
    const char *saved = plan_gemm_table;
    char p1[512], p2[512], p3[512];
    plan_gemm_table = NULL;
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "gemv1.plan", p1, sizeof p1), KN_OK);
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "gemv2.plan", p2, sizeof p2), KN_OK);
    plan_gemm_table = "sm_90 float32 2 4 3 * cublaslt\n";
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "gemv3.plan", p3, sizeof p3), KN_OK);
    plan_gemm_table = saved;
    size_t n1, n2;
    uint8_t *b1 = (uint8_t *)mb_read_file(p1, &n1), *b2 = (uint8_t *)mb_read_file(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1), free(b2);
    static const uint32_t want_gemms[] = {1, 2}, want_gemv[] = {1, 0};
    const char *paths[] = {p1, p3};
    for (int t = 0; t < 2; t++) {
        kn_diag *d = kn_diag_create(NULL, stderr);
        kn_graph *g = NULL;
        assert_int_equal(kn_plan_load(paths[t], NULL, d, &g), KN_OK);
        kn_cuda_plan p;
        assert_int_equal(kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, NULL, d, &p), KN_OK);
        uint32_t n_gemm = 0, n_gemv = 0;
        for (uint32_t i = 0; i < p.n_steps; i++) {
            n_gemm += p.steps[i].kind == KN_CU_STEP_GEMM;
            n_gemv += p.steps[i].kind == KN_CU_STEP_LAUNCH && strcmp(p.entries[p.steps[i].kernel], KN_GEMV_ENTRY) == 0;
        }
        assert_int_equal(n_gemm, want_gemms[t]);
        assert_int_equal(n_gemv, want_gemv[t]);
        kn_cuda_plan_free(&p);
        kn_graph_destroy(g);
        kn_diag_destroy(d);
    }
}

static void test_read_sections(void **state)
{
    (void)state;
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "gemms.plan", path, sizeof path), KN_OK);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    assert_true(kn_cuda_plan_has_code(g));
    assert_non_null(g->info->plan_base);
    kn_cuda_plan p;
    assert_int_equal(kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, NULL, d, &p), KN_OK);
    /* two GEMMs (MatMul, Gemm) and kernel launches for Relu and Add */
    uint32_t n_gemm = 0, n_launch = 0;
    for (uint32_t i = 0; i < p.n_steps; i++) {
        n_gemm += p.steps[i].kind == KN_CU_STEP_GEMM;
        n_launch += p.steps[i].kind == KN_CU_STEP_LAUNCH;
    }
    assert_int_equal(n_gemm, 2);
    assert_true(n_launch >= 2);
    assert_true(p.n_kernels >= 1 && p.pool_bytes > 0);
    /* the outputs and the input have their slots, with their shapes */
    assert_int_equal(p.slots[p.output_slot[0]].dims[1], 4);
    assert_int_equal(p.slots[p.output_slot[1]].dims[1], 5);
    assert_int_not_equal(p.input_slot[0], KN_PLAN_NONE);
    assert_int_equal(p.slots[p.input_slot[0]].nbytes, 24);
    /* image choice: the CUBIN for its arch, else the PTX, else none */
    const kn_plan_cu_kernel *k0 = &p.kernels[0];
    assert_int_equal(p.images[kn_cuda_plan_pick_image(&p, 0, 90)].arch, 90);
    assert_int_equal(p.images[kn_cuda_plan_pick_image(&p, 0, 86)].arch, KN_CU_ARCH_PTX);
    assert_int_equal(kn_cuda_plan_pick_image(&p, p.n_kernels, 90), KN_PLAN_NONE);
    p.images[k0->first_image + 1].arch = 80; /* no PTX any more */
    assert_int_equal(kn_cuda_plan_pick_image(&p, 0, 86), KN_PLAN_NONE);
    char name[128];
    kn_cuda_plan_step_name(&p, g, 0, name, sizeof name);
    assert_non_null(strstr(name, "node '"));
    kn_cuda_plan_free(&p);
    kn_graph_destroy(g);
    /* a CPU plan has no CUDA code */
    char cpu[600];
    snprintf(cpu, sizeof cpu, "%s/cpu.plan", tmpdir);
    mb *b = mb_new();
    size_t len;
    uint8_t *bytes = mb_pack(b, model_gemms(b), &len);
    assert_int_equal(kn_import_onnx_memory(bytes, len, NULL, "m.onnx", NULL, NULL, d, &g), KN_OK);
    kn_plan_options o = {"--target cpu", "cpu", NULL};
    assert_int_equal(kn_plan_write(g, &o, cpu, d), KN_OK);
    kn_graph_destroy(g);
    assert_int_equal(kn_plan_load(cpu, NULL, d, &g), KN_OK);
    assert_false(kn_cuda_plan_has_code(g));
    kn_diag *q = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, NULL, q, &p), KN_ERR_UNSUPPORTED);
    assert_true(mb_diag_has(q, KN_ERROR, "no CUDA code"));
    kn_diag_destroy(q);
    kn_graph_destroy(g);
    mb_free(b);
    kn_diag_destroy(d);
}

/* One corruption of a CUDA section entry: entry `index` of section
 * `kind` (entries of `esize` bytes), the field at `field` set to `value`
 * (`width` bytes). */
typedef struct corruption {
    const char *what;
    int kind;
    size_t esize;
    uint32_t index;
    size_t field, width;
    uint64_t value;
    const char *want;
} corruption;

/* The first step of a kind, or the first arg of such a step. */
static uint32_t find_step(const uint8_t *p, uint32_t kind, uint32_t *first_arg)
{
    uint64_t off = 0, size = 0;
    section(p, KN_SEC_CU_STEPS, &off, &size);
    for (uint32_t i = 0; i < size / sizeof(kn_plan_cu_step); i++) {
        kn_plan_cu_step st;
        memcpy(&st, p + off + i * sizeof st, sizeof st);
        if (st.kind == kind) {
            if (first_arg)
                *first_arg = st.first_arg;
            return i;
        }
    }
    fail_msg("no step of kind %u", kind);
    return 0;
}

/* The first slot with the given place. */
static uint32_t find_slot(const uint8_t *p, uint32_t place)
{
    uint64_t off = 0, size = 0;
    section(p, KN_SEC_CU_SLOTS, &off, &size);
    for (uint32_t i = 0; i < size / sizeof(kn_plan_cu_slot); i++) {
        kn_plan_cu_slot s;
        memcpy(&s, p + off + i * sizeof s, sizeof s);
        if (s.place == place)
            return i;
    }
    fail_msg("no slot of place %u", place);
    return 0;
}

static void test_corrupted_entries(void **state)
{
    (void)state;
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "c.plan", path, sizeof path), KN_OK);
    size_t n;
    uint8_t *good = (uint8_t *)mb_read_file(path, &n);
    assert_int_equal(read_cuda(good, n, NULL), KN_OK);
    uint32_t gemm_arg, launch_arg;
    uint32_t gemm = find_step(good, KN_CU_STEP_GEMM, &gemm_arg);
    uint32_t launch = find_step(good, KN_CU_STEP_LAUNCH, &launch_arg);
    uint32_t weight = find_slot(good, KN_CUDA_SLOT_WEIGHT), input = find_slot(good, KN_CUDA_SLOT_INPUT);
    uint32_t pool = find_slot(good, KN_CUDA_SLOT_POOL);
    const size_t SL = sizeof(kn_plan_cu_slot), ST = sizeof(kn_plan_cu_step), AR = sizeof(kn_plan_cu_arg),
                 KE = sizeof(kn_plan_cu_kernel), IM = sizeof(kn_plan_cu_image);
    const corruption cs[] = {
        {"slot place", KN_SEC_CU_SLOTS, SL, pool, offsetof(kn_plan_cu_slot, place), 4, 9, "bad place"},
        {"slot dtype", KN_SEC_CU_SLOTS, SL, pool, offsetof(kn_plan_cu_slot, dtype), 4, 99, "bad dtype"},
        {"slot rank", KN_SEC_CU_SLOTS, SL, pool, offsetof(kn_plan_cu_slot, rank), 4, 9, "bad rank"},
        {"slot value", KN_SEC_CU_SLOTS, SL, pool, offsetof(kn_plan_cu_slot, value), 4, 1000, "value 1000 out of range"},
        {"pool offset", KN_SEC_CU_SLOTS, SL, pool, offsetof(kn_plan_cu_slot, offset), 8, 1u << 20, "pool"},
        {"offset overflow", KN_SEC_CU_SLOTS, SL, pool, offsetof(kn_plan_cu_slot, offset), 8, UINT64_MAX - 2,
         "overflows"},
        {"weight index", KN_SEC_CU_SLOTS, SL, weight, offsetof(kn_plan_cu_slot, index), 4, 77, "constant 77"},
        {"weight size", KN_SEC_CU_SLOTS, SL, weight, offsetof(kn_plan_cu_slot, nbytes), 8, 4096, "of constant"},
        {"input index", KN_SEC_CU_SLOTS, SL, input, offsetof(kn_plan_cu_slot, index), 4, 5, "graph input 5"},
        {"input size", KN_SEC_CU_SLOTS, SL, input, offsetof(kn_plan_cu_slot, nbytes), 8, 20, "do not match"},
        {"input dtype", KN_SEC_CU_SLOTS, SL, input, offsetof(kn_plan_cu_slot, dtype), 4, KN_F64, "do not match"},
        {"arg slot", KN_SEC_CU_ARGS, AR, launch_arg, offsetof(kn_plan_cu_arg, slot), 4, 999, "slot 999"},
        {"arg kind", KN_SEC_CU_ARGS, AR, launch_arg, offsetof(kn_plan_cu_arg, kind), 4, 7, "bad kind"},
        {"arg offset", KN_SEC_CU_ARGS, AR, launch_arg, offsetof(kn_plan_cu_arg, offset), 8, 1u << 30, "past the end"},
        {"empty launch arg", KN_SEC_CU_ARGS, AR, launch_arg, offsetof(kn_plan_cu_arg, kind), 4, 0, "empty"},
        {"step kind", KN_SEC_CU_STEPS, ST, launch, offsetof(kn_plan_cu_step, kind), 4, 9, "bad kind"},
        {"step kernel", KN_SEC_CU_STEPS, ST, launch, offsetof(kn_plan_cu_step, kernel), 4, 50, "kernel 50"},
        {"step node", KN_SEC_CU_STEPS, ST, launch, offsetof(kn_plan_cu_step, node), 4, 4000, "node 4000"},
        {"step args", KN_SEC_CU_STEPS, ST, launch, offsetof(kn_plan_cu_step, first_arg), 4, 0xfffffff0u,
         "argument range"},
        {"block size", KN_SEC_CU_STEPS, ST, launch, offsetof(kn_plan_cu_step, block), 4, 4096, "launch shape"},
        {"gemm args", KN_SEC_CU_STEPS, ST, gemm, offsetof(kn_plan_cu_step, n_args), 4, 3, "4 or 5 arguments"},
        {"gemm descriptor", KN_SEC_CU_STEPS, ST, gemm, offsetof(kn_plan_cu_step, extra), 8, 1u << 24,
         "descriptor out of range"},
        {"gemm operand", KN_SEC_CU_ARGS, AR, gemm_arg, offsetof(kn_plan_cu_arg, offset), 8, 8, "GEMM operand A"},
        {"gemm operand kind", KN_SEC_CU_ARGS, AR, gemm_arg + 1, offsetof(kn_plan_cu_arg, kind), 4, KN_CU_ARG_PARAMS,
         "parameter bytes"},
        {"kernel entry", KN_SEC_CU_KERNELS, KE, 0, offsetof(kn_plan_cu_kernel, entry), 4, 0xffffff, "entry point"},
        {"kernel images", KN_SEC_CU_KERNELS, KE, 0, offsetof(kn_plan_cu_kernel, first_image), 4, 1000,
         "image range"},
        {"kernel no images", KN_SEC_CU_KERNELS, KE, 0, offsetof(kn_plan_cu_kernel, n_images), 4, 0, "image range"},
        {"image kernel", KN_SEC_CU_IMAGES, IM, 0, offsetof(kn_plan_cu_image, kernel), 4, 100, "does not list it"},
        {"image offset", KN_SEC_CU_IMAGES, IM, 0, offsetof(kn_plan_cu_image, offset), 8, 1u << 30,
         "bytes out of range"},
        {"image size", KN_SEC_CU_IMAGES, IM, 0, offsetof(kn_plan_cu_image, size), 8, UINT64_MAX, "bytes out of range"},
        {"image arch", KN_SEC_CU_IMAGES, IM, 0, offsetof(kn_plan_cu_image, arch), 4, 5, "bad arch"},
    };
    uint8_t *p = malloc(n);
    assert_non_null(p);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        memcpy(p, good, n);
        uint64_t off = 0, size = 0;
        section(p, cs[c].kind, &off, &size);
        assert_true((cs[c].index + 1) * cs[c].esize <= size);
        memcpy(p + off + cs[c].index * cs[c].esize + cs[c].field, &cs[c].value, cs[c].width);
        mb_plan_rechecksum(p, n);
        kn_status s = read_cuda(p, n, cs[c].want);
        if (s != KN_ERR_INVALID)
            fail_msg("%s: status %s, want invalid", cs[c].what, kn_status_str(s));
    }
    /* a section that is not a whole number of entries: shrink the slot
     * section's size in the table by 8 */
    memcpy(p, good, n);
    kn_plan_header h;
    memcpy(&h, p, sizeof h);
    for (uint32_t i = 0; i < h.n_sections; i++) {
        kn_plan_section s;
        memcpy(&s, p + h.sections_off + i * sizeof s, sizeof s);
        if (s.kind == KN_SEC_CU_SLOTS) {
            s.size -= 8;
            memcpy(p + h.sections_off + i * sizeof s, &s, sizeof s);
        }
    }
    mb_plan_rechecksum(p, n);
    assert_int_equal(read_cuda(p, n, "whole number of entries"), KN_ERR_INVALID);
    free(p);
    free(good);
}

/* The int8 GEMM step as lowered and written (m, n, k, the "TN" form,
 * leading dims, int8 / int32 operands) and the reader's checks of the
 * descriptor values only int8 GEMMs have. */
static void test_int8_gemm_plan(void **state)
{
    (void)state;
    char path[512];
    assert_int_equal(build_plan(model_int8, FAKE_IMAGES, UINT32_MAX, "i8.plan", path, sizeof path), KN_OK);
    size_t n;
    uint8_t *good = (uint8_t *)mb_read_file(path, &n);
    assert_int_equal(read_cuda(good, n, NULL), KN_OK);
    uint32_t gemm_arg;
    uint32_t gemm = find_step(good, KN_CU_STEP_GEMM, &gemm_arg);
    uint64_t soff = 0, ssize = 0, poff = 0, psize = 0;
    section(good, KN_SEC_CU_STEPS, &soff, &ssize);
    section(good, KN_SEC_CU_PARAMS, &poff, &psize);
    kn_plan_cu_step st;
    memcpy(&st, good + soff + gemm * sizeof st, sizeof st);
    assert_true(st.extra + sizeof(kn_plan_cu_gemm) <= psize);
    kn_plan_cu_gemm gd;
    memcpy(&gd, good + poff + st.extra, sizeof gd);
    assert_int_equal(gd.dtype, KN_I8);
    assert_true(gd.m == 3 && gd.n == 4 && gd.k == 8 && gd.batch == 1);
    assert_true(gd.trans_a == 0 && gd.trans_b == 1 && gd.lda == 8 && gd.ldb == 8 && gd.ldd == 4);
    assert_true(gd.alpha == 1.0f && gd.beta == 0.0f && gd.epilogue == 0 && gd.has_c == 0);
    assert_int_equal(st.n_args, 4);
    assert_true(gemm > 0); /* the transpose launch comes first */
    const size_t AR = sizeof(kn_plan_cu_arg), G = 1;
    const uint32_t at = (uint32_t)st.extra;
    uint32_t two;
    float f2 = 2.0f;
    memcpy(&two, &f2, 4);
    const corruption cs[] = {
        {"int8 trans_b", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, trans_b), 4, 0, "bad int8 GEMM"},
        {"int8 trans_a", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, trans_a), 4, 1, "bad int8 GEMM"},
        {"int8 alpha", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, alpha), 4, two, "bad int8 GEMM"},
        {"int8 beta", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, beta), 4, two, "bad int8 GEMM"},
        {"int8 epilogue", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, epilogue), 4, 1, "bad int8 GEMM"},
        {"int8 has_c", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, has_c), 4, 1, "bad int8 GEMM"},
        {"int8 k", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, k), 8, 6, "bad int8 GEMM"},
        {"int8 n", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, n), 8, 2, "bad int8 GEMM"},
        {"int8 lda", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, lda), 8, 9, "bad int8 GEMM"},
        {"int8 k too large", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, k), 8, KN_CU_GEMM_I8_MAX_K + 1,
         "bad int8 GEMM"},
        {"int8 dtype", KN_SEC_CU_PARAMS, G, at, offsetof(kn_plan_cu_gemm, dtype), 4, KN_I16, "GEMM dtype"},
        {"int8 operand offset", KN_SEC_CU_ARGS, AR, gemm_arg, offsetof(kn_plan_cu_arg, offset), 8, 2,
         "not a multiple of 4"},
        /* D one element in: its 3x4 int32 (48 bytes) no longer fit the output slot */
        {"int8 D size", KN_SEC_CU_ARGS, AR, gemm_arg + 3, offsetof(kn_plan_cu_arg, offset), 8, 4, "GEMM operand D"},
    };
    uint8_t *p = malloc(n);
    assert_non_null(p);
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        memcpy(p, good, n);
        uint64_t off = 0, size = 0;
        section(p, cs[c].kind, &off, &size);
        assert_true((uint64_t)cs[c].index * cs[c].esize + cs[c].field + cs[c].width <= size);
        memcpy(p + off + cs[c].index * cs[c].esize + cs[c].field, &cs[c].value, cs[c].width);
        mb_plan_rechecksum(p, n);
        kn_status s = read_cuda(p, n, cs[c].want);
        if (s != KN_ERR_INVALID)
            fail_msg("%s: status %s, want invalid", cs[c].what, kn_status_str(s));
    }
    /* a float GEMM's descriptor (B not transposed) relabelled int8 */
    free(good);
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "f.plan", path, sizeof path), KN_OK);
    good = (uint8_t *)mb_read_file(path, &n);
    p = realloc(p, n);
    assert_non_null(p);
    memcpy(p, good, n);
    gemm = find_step(p, KN_CU_STEP_GEMM, NULL);
    section(p, KN_SEC_CU_STEPS, &soff, &ssize);
    section(p, KN_SEC_CU_PARAMS, &poff, &psize);
    memcpy(&st, p + soff + gemm * sizeof st, sizeof st);
    int32_t i8 = KN_I8;
    memcpy(p + poff + st.extra + offsetof(kn_plan_cu_gemm, dtype), &i8, 4);
    mb_plan_rechecksum(p, n);
    assert_int_equal(read_cuda(p, n, "bad int8 GEMM"), KN_ERR_INVALID);
    free(p);
    free(good);
}

/* Every allocation of the section reader failing in turn: KN_ERR_NOMEM
 * with a message, nothing leaked. */
static void test_read_failing_allocator(void **state)
{
    (void)state;
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "alloc.plan", path, sizeof path), KN_OK);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    assert_int_equal(kn_plan_blob_count(g), 1);
    assert_true(kn_cuda_plan_has_code(g));
    int failures = 0;
    for (long n = 1;; n++) {
        mb_counter c;
        mb_counter_init(&c);
        c.fail_at = n;
        kn_cuda_plan p;
        kn_diag *q = kn_diag_create(NULL, NULL);
        kn_status s = kn_cuda_plan_read(g, g->info->plan_base, g->info->plan_size, &c.a, q, &p);
        if (s == KN_OK) {
            kn_cuda_plan_free(&p);
            assert_int_equal(c.live, 0);
            kn_diag_destroy(q);
            break;
        }
        assert_int_equal(s, KN_ERR_NOMEM);
        assert_true(mb_diag_has(q, KN_ERROR, "out of memory"));
        assert_int_equal(c.live, 0);
        kn_diag_destroy(q);
        failures++;
    }
    assert_true(failures >= 5);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
}

/* Random bytes written over the CUDA sections: every result is a clean
 * OK or KN_ERR_INVALID (run under ASan/UBSan to see that nothing is read
 * out of bounds). */
static void test_random_corruption(void **state)
{
    (void)state;
    char path[512];
    assert_int_equal(build_plan(model_batched, FAKE_IMAGES, UINT32_MAX, "r.plan", path, sizeof path), KN_OK);
    size_t n;
    uint8_t *good = (uint8_t *)mb_read_file(path, &n), *p = malloc(n);
    assert_non_null(p);
    assert_int_equal(read_cuda(good, n, NULL), KN_OK);
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int k = KN_SEC_CU_KERNELS; k < KN_SEC_CU_END; k++) {
        if (k == KN_SEC_CU_BLOBS)
            continue; /* image bytes: nothing to check there */
        uint64_t off = 0, size = 0;
        section(good, k, &off, &size);
        lo = off < lo ? off : lo;
        hi = off + size > hi ? off + size : hi;
    }
    uint64_t rng = 12345;
    int invalid = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(p, good, n);
        for (int flips = 1 + it % 3; flips > 0; flips--) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t at = lo + (rng >> 20) % (hi - lo);
            uint8_t v = (uint8_t)(rng >> 8);
            p[at] = (it & 4) ? v : (uint8_t)(p[at] ^ (1u << (rng >> 60 & 7)));
        }
        mb_plan_rechecksum(p, n);
        kn_status s = read_cuda(p, n, NULL);
        if (s != KN_OK && s != KN_ERR_INVALID)
            fail_msg("iteration %d: status %s", it, kn_status_str(s));
        invalid += s == KN_ERR_INVALID;
    }
    printf("random corruption: %d of 3000 refused, the rest harmless\n", invalid);
    assert_true(invalid > 300);
    free(p);
    free(good);
}

/* ---- with the toolkit's stub libcuda (test_cuda_runtime_stub) ---- */

static void test_stub_driver(void **state)
{
    (void)state;
    kn_diag *d = kn_diag_create(NULL, NULL);
    /* every entry point resolves (else "too old: ... has no cuX") and
     * cuInit's failure is named */
    assert_false(kn_cuda_available(d));
    if (!mb_diag_has(d, KN_NOTE, "cuInit", "CUDA_ERROR_STUB_LIBRARY")) {
        kn_diag_print(d, stderr);
        fail_msg("expected cuInit: CUDA_ERROR_STUB_LIBRARY");
    }
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "stub.plan", path, sizeof path), KN_OK);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    kn_cuda_session *s = NULL;
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, NULL, NULL, d, &s), KN_ERR_UNSUPPORTED);
    assert_true(mb_diag_has(d, KN_ERROR, "CUDA_ERROR_STUB_LIBRARY"));
    kn_graph_destroy(g);
    kn_diag_destroy(d);
}

/* ---- on a GPU (label gpu) ---- */

static void need_gpu(void)
{
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!kn_cuda_available(d)) {
        printf("skipped: no GPU: %s\n", kn_diag_size(d) ? kn_diag_message(d, 0, NULL) + 6 : "");
        kn_diag_destroy(d);
        skip();
    }
    kn_diag_destroy(d);
}

/* Builds a plan with NVRTC; skips when NVRTC is missing. */
static void gpu_plan(model_fn fn, uint32_t keep, const char *name, char *path, size_t n)
{
    kn_status s = build_plan(fn, NVRTC_IMAGES, keep, name, path, n);
    if (s == KN_ERR_UNSUPPORTED) {
        printf("skipped: NVRTC is not available to compile the kernels\n");
        skip();
    }
    assert_int_equal(s, KN_OK);
}

static kn_rt_tensor **random_inputs(const kn_graph *g, uint64_t seed)
{
    kn_rt_tensor **ins = calloc(g->n_inputs + 1, sizeof *ins);
    assert_non_null(ins);
    for (uint32_t k = 0; k < g->n_inputs; k++) {
        const kn_type *t = &g->values[g->inputs[k]].type;
        int64_t dims[8];
        for (int32_t i = 0; i < t->shape.rank; i++)
            dims[i] = t->shape.dims[i].value;
        assert_int_equal(kn_rt_tensor_new(NULL, t->dtype, t->shape.rank, dims, &ins[k]), KN_OK);
        for (int64_t i = 0; i < ins[k]->numel; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            kn_set_f64(t->dtype, ins[k]->data, i, (double)(seed >> 11) / 9007199254740992.0 * 2 - 1);
        }
    }
    return ins;
}

static void free_tensors(kn_rt_tensor **ts, uint32_t n)
{
    for (uint32_t k = 0; ts && k < n; k++)
        kn_rt_tensor_free(NULL, ts[k]);
    free(ts);
}

/* GPU outputs against the CPU backend's, elementwise within tolerance. */
static void compare(const char *what, const kn_rt_tensor *got, const kn_rt_tensor *want, double tol)
{
    assert_int_equal(got->dtype, want->dtype);
    assert_int_equal(got->rank, want->rank);
    for (int32_t i = 0; i < got->rank; i++)
        assert_int_equal(got->dims[i], want->dims[i]);
    double worst = 0;
    for (int64_t i = 0; i < got->numel; i++) {
        double a = kn_get_f64(got->dtype, got->data, i), b = kn_get_f64(want->dtype, want->data, i);
        double err = fabs(a - b) / (1.0 + fabs(b));
        if (!(err <= tol))
            fail_msg("%s: element %lld is %.9g on the GPU, %.9g on the CPU", what, (long long)i, a, b);
        worst = err > worst ? err : worst;
    }
    printf("  %s: %lld values, max scaled error %.3g\n", what, (long long)got->numel, worst);
}

/* Runs a plan on the GPU and on the CPU with the same inputs (twice, with
 * different inputs) and compares. */
static void gpu_vs_cpu(const char *path, double tol)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    kn_cuda_options o = {0, true, true, true};
    kn_cuda_session *s = NULL;
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, &o, NULL, d, &s), KN_OK);
    printf("%s on %s\n", path, kn_cuda_session_device(s));
    for (uint64_t seed = 1; seed <= 2; seed++) {
        kn_rt_tensor **ins = random_inputs(g, seed);
        kn_rt_tensor **gpu = calloc(g->n_outputs + 1, sizeof *gpu), **cpu = calloc(g->n_outputs + 1, sizeof *cpu);
        assert_true(gpu && cpu);
        assert_int_equal(kn_cuda_session_run(s, (const kn_rt_tensor *const *)ins, g->n_inputs, gpu, g->n_outputs, d),
                         KN_OK);
        assert_int_equal(kn_cpu_run(g, NULL, d, (const kn_rt_tensor *const *)ins, g->n_inputs, cpu, g->n_outputs),
                         KN_OK);
        for (uint32_t k = 0; k < g->n_outputs; k++)
            compare(g->values[g->outputs[k]].name, gpu[k], cpu[k], tol);
        kn_cuda_timing t;
        assert_int_equal(kn_cuda_session_timing(s, &t), KN_OK);
        assert_true(t.compute_ms >= 0 && t.upload_ms >= 0 && t.download_ms >= 0);
        const float *ms;
        const uint32_t *node;
        uint32_t n_steps;
        assert_int_equal(kn_cuda_session_step_ms(s, &ms, &node, &n_steps), KN_OK);
        assert_true(n_steps > 0 && ms[0] >= 0);
        free_tensors(ins, g->n_inputs);
        free_tensors(gpu, g->n_outputs);
        free_tensors(cpu, g->n_outputs);
    }
    /* an input of another shape is refused, naming it */
    kn_rt_tensor **ins = random_inputs(g, 3);
    ins[0]->dims[0] += 1;
    kn_rt_tensor *out[4] = {0};
    kn_diag *q = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_session_run(s, (const kn_rt_tensor *const *)ins, g->n_inputs, out, g->n_outputs, q),
                     KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "compiled for"));
    ins[0]->dims[0] -= 1;
    kn_diag_destroy(q);
    free_tensors(ins, g->n_inputs);
    kn_cuda_session_destroy(s);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
}

static void test_gpu_gemms(void **state)
{
    (void)state;
    need_gpu();
    char path[512];
    gpu_plan(model_gemms, UINT32_MAX, "gpu_gemms.plan", path, sizeof path);
    gpu_vs_cpu(path, 1e-5);
}

static void test_gpu_batched(void **state)
{
    (void)state;
    need_gpu();
    char path[512];
    gpu_plan(model_batched, UINT32_MAX, "gpu_batched.plan", path, sizeof path);
    gpu_vs_cpu(path, 1e-5);
}

static void test_gpu_half(void **state)
{
    (void)state;
    need_gpu();
    char path[512];
    gpu_plan(model_half, UINT32_MAX, "gpu_half.plan", path, sizeof path);
    gpu_vs_cpu(path, 2e-3);
}

/* PTX only: every kernel JIT-compiled by the driver */
static void test_gpu_ptx_jit(void **state)
{
    (void)state;
    need_gpu();
    char path[512];
    gpu_plan(model_gemms, KN_CU_ARCH_PTX, "gpu_ptx.plan", path, sizeof path);
    gpu_vs_cpu(path, 1e-5);
}

/* CUBINs for another arch only: "no code for sm_XY" */
static void test_gpu_no_code(void **state)
{
    (void)state;
    need_gpu();
    kn_diag *d = kn_diag_create(NULL, stderr);
    char path[512];
    gpu_plan(model_gemms, 80, "gpu_sm80.plan", path, sizeof path);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    kn_cuda_session *s = NULL;
    kn_status st = kn_cuda_session_create(g, NULL, 0, NULL, NULL, d, &s);
    if (st == KN_OK) { /* an sm_80 GPU runs it */
        printf("  this GPU is sm_80: its CUBIN loads\n");
        kn_cuda_session_destroy(s);
    } else {
        assert_int_equal(st, KN_ERR_UNSUPPORTED);
        assert_true(mb_diag_has(d, KN_ERROR, "no code for sm_"));
    }
    kn_graph_destroy(g);
    kn_diag_destroy(d);
}

/* ---- against the host mock of the driver and cuBLASLt (--mock) ---- */

enum { MOCK_SM = 1, MOCK_FAIL_ALLOC, MOCK_FAIL_LAUNCH, MOCK_FAIL_SYNC, MOCK_LAUNCHES, MOCK_BAD, MOCK_LIVE, MOCK_GEMMS };
static long (*mock_ctl)(int what, long value);

/* The mock, as loaded by the driver loader (the same library instance). */
static void need_mock(void)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_true(kn_cuda_available(d));
    kn_diag_destroy(d);
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(lib);
    *(void **)&mock_ctl = dlsym(lib, "kn_mock_control");
    if (!mock_ctl)
        fail_msg("libcuda.so.1 is not the kiln mock");
    dlclose(lib);
}

typedef struct opened {
    kn_graph *g;
    kn_cuda_session *s;
} opened;

static kn_status open_plan(const char *path, const kn_cuda_options *o, kn_diag *d, opened *out)
{
    memset(out, 0, sizeof *out);
    assert_int_equal(kn_plan_load(path, NULL, d, &out->g), KN_OK);
    return kn_cuda_session_create(out->g, NULL, 0, o, NULL, d, &out->s);
}

static void close_plan(opened *o)
{
    kn_cuda_session_destroy(o->s);
    kn_graph_destroy(o->g);
}

/* Runs through the session and the CPU backend and compares every
 * output (GEMM-only graphs: the mock does not run kernels). */
static void mock_vs_cpu(model_fn fn, const char *name, double tol)
{
    char path[512];
    assert_int_equal(build_plan(fn, FAKE_IMAGES, UINT32_MAX, name, path, sizeof path), KN_OK);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_cuda_options co = {0, true, false, true};
    opened o;
    assert_int_equal(open_plan(path, &co, d, &o), KN_OK);
    const kn_graph *g = o.g;
    printf("%s (%s)\n", name, kn_cuda_session_device(o.s));
    for (uint64_t seed = 1; seed <= 2; seed++) {
        kn_rt_tensor **ins = random_inputs(g, seed);
        kn_rt_tensor **got = calloc(g->n_outputs + 1, sizeof *got), **want = calloc(g->n_outputs + 1, sizeof *want);
        assert_true(got && want);
        assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, g->n_inputs, got, g->n_outputs, d),
                         KN_OK);
        assert_int_equal(kn_cpu_run(g, NULL, d, (const kn_rt_tensor *const *)ins, g->n_inputs, want, g->n_outputs),
                         KN_OK);
        for (uint32_t k = 0; k < g->n_outputs; k++)
            compare(g->values[g->outputs[k]].name, got[k], want[k], tol);
        free_tensors(ins, g->n_inputs);
        free_tensors(got, g->n_outputs);
        free_tensors(want, g->n_outputs);
    }
    assert_int_equal(mock_ctl(MOCK_BAD, -1), 0);
    close_plan(&o);
    kn_diag_destroy(d);
}

static void test_mock_identity(void **state)
{
    (void)state;
    need_mock();
    mock_vs_cpu(model_identity, "identity.plan", 0);
}

static void test_mock_gemms(void **state)
{
    (void)state;
    need_mock();
    long gemms = mock_ctl(MOCK_GEMMS, -1);
    mock_vs_cpu(model_matmul, "matmul.plan", 1e-6);
    mock_vs_cpu(model_gemm_full_c, "gemm_full_c.plan", 1e-6);
    mock_vs_cpu(model_batches, "batches.plan", 1e-6);
    mock_vs_cpu(model_dtypes, "dtypes.plan", 2e-3);
    assert_true(mock_ctl(MOCK_GEMMS, -1) - gemms >= 2 * 7);
}

/* Kernel launches: one per LAUNCH step with a non-empty grid; per-step
 * event times; every allocation released. */
static void test_mock_launches(void **state)
{
    (void)state;
    need_mock();
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "launch.plan", path, sizeof path), KN_OK);
    kn_diag *d = kn_diag_create(NULL, stderr);
    kn_cuda_options co = {0, false, true, false};
    opened o;
    assert_int_equal(open_plan(path, &co, d, &o), KN_OK);
    kn_cuda_plan p;
    assert_int_equal(kn_cuda_plan_read(o.g, o.g->info->plan_base, o.g->info->plan_size, NULL, d, &p), KN_OK);
    long want = 0;
    for (uint32_t i = 0; i < p.n_steps; i++)
        want += p.steps[i].kind == KN_CU_STEP_LAUNCH && p.steps[i].grid[0] && p.steps[i].grid[1] && p.steps[i].grid[2];
    assert_true(want >= 2);
    mock_ctl(MOCK_LAUNCHES, 0);
    kn_rt_tensor **ins = random_inputs(o.g, 1), *out[2] = {0};
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, d), KN_OK);
    assert_int_equal(mock_ctl(MOCK_LAUNCHES, -1), want);
    const float *ms;
    const uint32_t *node;
    uint32_t n;
    assert_int_equal(kn_cuda_session_step_ms(o.s, &ms, &node, &n), KN_OK);
    assert_int_equal(n, p.n_steps);
    for (uint32_t i = 0; i < n; i++) {
        assert_true(ms[i] > 0.2f && ms[i] < 0.3f); /* the mock's clock: 0.25 ms per event */
        assert_int_equal(node[i], p.steps[i].node);
    }
    kn_cuda_timing t;
    assert_int_equal(kn_cuda_session_timing(o.s, &t), KN_OK);
    assert_true(t.compute_ms > 0 && t.upload_ms > 0 && t.download_ms > 0);
    kn_rt_tensor_free(NULL, out[0]);
    kn_rt_tensor_free(NULL, out[1]);
    free_tensors(ins, 1);
    kn_cuda_plan_free(&p);
    long live = mock_ctl(MOCK_LIVE, -1);
    close_plan(&o);
    assert_true(mock_ctl(MOCK_LIVE, -1) < live);
    assert_int_equal(mock_ctl(MOCK_BAD, -1), 0);
    kn_diag_destroy(d);
}

/* Every CUDA call that can fail during creation, one at a time: a clean
 * status with the call's name, and nothing left allocated. Then failures
 * while running. */
static void test_mock_failures(void **state)
{
    (void)state;
    need_mock();
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "fail.plan", path, sizeof path), KN_OK);
    kn_diag *d = kn_diag_create(NULL, NULL);
    opened o;
    assert_int_equal(open_plan(path, NULL, d, &o), KN_OK); /* creates the cuBLASLt handle once */
    close_plan(&o);
    long base = mock_ctl(MOCK_LIVE, -1);
    int failed = 0;
    for (int n = 1;; n++) {
        mock_ctl(MOCK_FAIL_ALLOC, n);
        kn_diag *q = kn_diag_create(NULL, NULL);
        kn_status s = open_plan(path, NULL, q, &o);
        close_plan(&o);
        assert_int_equal(mock_ctl(MOCK_LIVE, -1), base);
        if (s == KN_OK) {
            kn_diag_destroy(q);
            break;
        }
        assert_int_equal(s, KN_ERR_NOMEM);
        assert_true(mb_diag_has(q, KN_ERROR, "cuMemAlloc", "CUDA_ERROR_OUT_OF_MEMORY", "bytes for"));
        kn_diag_destroy(q);
        failed++;
    }
    mock_ctl(MOCK_FAIL_ALLOC, 0);
    assert_true(failed >= 2); /* the pool, the weights, the workspace */
    /* a launch that fails names its node; the session still runs after */
    kn_cuda_options co = {0, true, false, false};
    assert_int_equal(open_plan(path, &co, d, &o), KN_OK);
    kn_rt_tensor **ins = random_inputs(o.g, 1), *out[2] = {0};
    mock_ctl(MOCK_FAIL_LAUNCH, 1);
    kn_diag *q = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, q), KN_ERR_INTERNAL);
    assert_true(mb_diag_has(q, KN_ERROR, "fail.plan: node '", "cuLaunchKernel", "CUDA_ERROR_LAUNCH_FAILED"));
    assert_null(out[0]);
    kn_cuda_timing t;
    assert_int_equal(kn_cuda_session_timing(o.s, &t), KN_ERR_INVALID);
    kn_diag_destroy(q);
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, d), KN_OK);
    kn_rt_tensor_free(NULL, out[0]);
    kn_rt_tensor_free(NULL, out[1]);
    out[0] = out[1] = NULL;
    /* a fault found at synchronisation: the session refuses further runs */
    mock_ctl(MOCK_FAIL_SYNC, 1);
    q = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, q), KN_ERR_INTERNAL);
    assert_true(mb_diag_has(q, KN_ERROR, "cuStreamSynchronize", "CUDA_ERROR_ILLEGAL_ADDRESS"));
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, q), KN_ERR_INTERNAL);
    assert_true(mb_diag_has(q, KN_ERROR, "cannot run again"));
    kn_diag_destroy(q);
    close_plan(&o);
    /* with sync_each_step, the fault names its node */
    kn_cuda_options sync = {0, false, false, true};
    assert_int_equal(open_plan(path, &sync, d, &o), KN_OK);
    mock_ctl(MOCK_FAIL_SYNC, 1);
    q = kn_diag_create(NULL, NULL);
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, q), KN_ERR_INTERNAL);
    assert_true(mb_diag_has(q, KN_ERROR, "node '", "cuStreamSynchronize", "CUDA_ERROR_ILLEGAL_ADDRESS"));
    kn_diag_destroy(q);
    close_plan(&o);
    /* bad inputs: another shape, another dtype, a wrong count */
    assert_int_equal(open_plan(path, NULL, d, &o), KN_OK);
    q = kn_diag_create(NULL, NULL);
    ins[0]->dims[1] = 2;
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, q), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "input 'x' is float32[2, 2]; the plan was compiled for float32[2, 3]"));
    ins[0]->dims[1] = 3;
    ins[0]->dtype = KN_I32;
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 2, q), KN_ERR_INVALID);
    ins[0]->dtype = KN_F32;
    assert_int_equal(kn_cuda_session_run(o.s, (const kn_rt_tensor *const *)ins, 1, out, 1, q), KN_ERR_INVALID);
    assert_true(mb_diag_has(q, KN_ERROR, "1 inputs and 2 outputs"));
    kn_diag_destroy(q);
    close_plan(&o);
    free_tensors(ins, 1);
    assert_int_equal(mock_ctl(MOCK_LIVE, -1), base);
    assert_int_equal(mock_ctl(MOCK_BAD, -1), 0);
    kn_diag_destroy(d);
}

/* Every host allocation of session creation and of a run failing in
 * turn: KN_ERR_NOMEM, nothing leaked on the host or the (mock) device. */
static void test_mock_failing_allocator(void **state)
{
    (void)state;
    need_mock();
    char path[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "halloc.plan", path, sizeof path), KN_OK);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_plan_load(path, NULL, d, &g), KN_OK);
    kn_cuda_session *s = NULL;
    assert_int_equal(kn_cuda_session_create(g, NULL, 0, NULL, NULL, d, &s), KN_OK); /* the cuBLASLt handle */
    kn_cuda_session_destroy(s);
    long base = mock_ctl(MOCK_LIVE, -1);
    kn_rt_tensor **ins = random_inputs(g, 1);
    for (long n = 1;; n++) {
        mb_counter c;
        mb_counter_init(&c);
        c.fail_at = n;
        kn_diag *q = kn_diag_create(NULL, NULL);
        kn_cuda_options o = {0, true, true, false};
        kn_status st = kn_cuda_session_create(g, NULL, 0, &o, &c.a, q, &s);
        kn_rt_tensor *out[2] = {0};
        if (st == KN_OK)
            st = kn_cuda_session_run(s, (const kn_rt_tensor *const *)ins, 1, out, 2, q);
        bool done = st == KN_OK;
        if (!done) {
            assert_int_equal(st, KN_ERR_NOMEM);
            assert_true(kn_diag_count(q, KN_ERROR) > 0);
            assert_null(out[0]);
        }
        kn_rt_tensor_free(&c.a, out[0]);
        kn_rt_tensor_free(&c.a, out[1]);
        kn_cuda_session_destroy(s);
        s = NULL;
        assert_int_equal(c.live, 0);
        assert_int_equal(mock_ctl(MOCK_LIVE, -1), base);
        kn_diag_destroy(q);
        if (done)
            break;
    }
    free_tensors(ins, 1);
    kn_graph_destroy(g);
    kn_diag_destroy(d);
}

/* Image choice by the device's arch: its CUBIN, else the PTX, else "no
 * code for sm_XY". */
static void test_mock_arch(void **state)
{
    (void)state;
    need_mock();
    char both[512], cubin[512];
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, UINT32_MAX, "both.plan", both, sizeof both), KN_OK);
    mock_ctl(MOCK_SM, 75);
    kn_diag *d = kn_diag_create(NULL, NULL);
    opened o;
    assert_int_equal(open_plan(both, NULL, d, &o), KN_OK); /* the PTX */
    assert_non_null(strstr(kn_cuda_session_device(o.s), "kiln mock GPU, sm_75, driver 13.0"));
    close_plan(&o);
    /* only a CUBIN for sm_90: keep the fake images' first (sm_90) one */
    mb *b = mb_new();
    size_t n;
    uint8_t *bytes = (uint8_t *)mb_read_file(both, &n);
    uint64_t off = 0, size = 0;
    section(bytes, KN_SEC_CU_IMAGES, &off, &size);
    for (uint64_t at = off; at < off + size; at += sizeof(kn_plan_cu_image)) {
        kn_plan_cu_image im;
        memcpy(&im, bytes + at, sizeof im);
        if (im.arch == KN_CU_ARCH_PTX) {
            im.arch = 80; /* a CUBIN for sm_80 now (the bytes stay "not really PTX") */
            memcpy(bytes + at, &im, sizeof im);
        }
    }
    mb_plan_rechecksum(bytes, n);
    snprintf(cubin, sizeof cubin, "%s", mb_write(b, tmpdir, "cubin.plan", bytes, n));
    assert_int_equal(read_cuda(bytes, n, "not a CUBIN"), KN_ERR_INVALID);
    free(bytes);
    /* the same with real ELF magic: make the plan with only sm_90 images */
    assert_int_equal(build_plan(model_gemms, FAKE_IMAGES, 90, "sm90.plan", cubin, sizeof cubin), KN_OK);
    kn_status s = open_plan(cubin, NULL, d, &o);
    close_plan(&o);
    assert_int_equal(s, KN_ERR_UNSUPPORTED);
    assert_true(mb_diag_has(d, KN_ERROR, "no code for sm_75", "compiled for sm_90 only"));
    mock_ctl(MOCK_SM, 90);
    assert_int_equal(open_plan(cubin, NULL, d, &o), KN_OK);
    close_plan(&o);
    mb_free(b);
    kn_diag_destroy(d);
}

/* ---- every GEMM descriptor shape through cuBLASLt (mock and GPU) ---- */

#ifdef KN_HAVE_CUDA_HEADERS
#include "runtime/cuda/driver.h"
#include "runtime/cuda/gemm.h"

typedef struct gemm_env {
    const kn_cuda_driver *cu;
    const kn_cublaslt *lt;
    CUdevice dev;
    CUcontext ctx;
    CUstream stream;
} gemm_env;

static void gemm_env_open(gemm_env *e)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_cuda_driver_get(d, KN_ERROR, &e->cu), KN_OK);
    assert_int_equal(e->cu->device_get(&e->dev, 0), CUDA_SUCCESS);
    assert_int_equal(e->cu->primary_ctx_retain(&e->ctx, e->dev), CUDA_SUCCESS);
    assert_int_equal(e->cu->ctx_set_current(e->ctx), CUDA_SUCCESS);
    assert_int_equal(e->cu->stream_create(&e->stream, 0), CUDA_SUCCESS);
    assert_int_equal(kn_cuda_blaslt_get(d, &e->lt), KN_OK);
    kn_diag_destroy(d);
}

static void gemm_env_close(gemm_env *e)
{
    e->cu->stream_destroy(e->stream);
    e->cu->primary_ctx_release(e->dev);
}

/* Elements spanned by `batch` row-major rows×cols matrices. */
static size_t extent(int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride)
{
    return (size_t)((batch - 1) * stride + (rows - 1) * ld + cols);
}

static CUdeviceptr upload(gemm_env *e, kn_dtype t, const double *v, size_t n)
{
    size_t es = kn_cuda_gemm_elem_size(t);
    uint8_t *h = malloc(n * es);
    assert_non_null(h);
    for (size_t i = 0; i < n; i++)
        kn_set_f64(t, h, (int64_t)i, v[i]);
    CUdeviceptr p;
    assert_int_equal(e->cu->mem_alloc(&p, n * es), CUDA_SUCCESS);
    assert_int_equal(e->cu->memcpy_htod_async(p, h, n * es, e->stream), CUDA_SUCCESS);
    assert_int_equal(e->cu->stream_synchronize(e->stream), CUDA_SUCCESS);
    free(h);
    return p;
}

/* Values in dtype t's precision, so the reference sees what the GPU sees. */
static double *values(kn_dtype t, size_t n, uint64_t seed)
{
    double *v = malloc((n + 1) * sizeof *v);
    uint8_t tmp[8];
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        kn_set_f64(t, tmp, 0, (double)(seed >> 11) / 9007199254740992.0 * 4 - 2);
        v[i] = kn_get_f64(t, tmp, 0);
    }
    return v;
}

/* One descriptor through kn_cuda_gemm_plan/run, D compared with a
 * row-major reference. KN_ERR_UNSUPPORTED when cuBLASLt has no algorithm. */
static kn_status gemm_check(gemm_env *e, const kn_plan_cu_gemm *g, double tol)
{
    kn_dtype t = (kn_dtype)g->dtype;
    bool bias = g->epilogue == 3;
    int64_t ar = g->trans_a ? g->k : g->m, ac = g->trans_a ? g->m : g->k;
    int64_t br = g->trans_b ? g->n : g->k, bc = g->trans_b ? g->k : g->n;
    size_t na = extent(ar, ac, g->lda, g->batch, g->stride_a), nb = extent(br, bc, g->ldb, g->batch, g->stride_b);
    size_t nc = !g->has_c ? 1 : bias ? extent(1, g->n, g->n, g->batch, g->stride_c)
                                     : extent(g->m, g->n, g->ldc, g->batch, g->stride_c);
    size_t nd = extent(g->m, g->n, g->ldd, g->batch, g->stride_d);
    double *a = values(t, na, 1), *b = values(t, nb, 2), *c = values(t, nc, 3), *dv = malloc(nd * sizeof *dv);
    assert_non_null(dv);
    for (size_t i = 0; i < nd; i++)
        dv[i] = NAN; /* with beta 0 / no C, D must not be read */
    CUdeviceptr pa = upload(e, t, a, na), pb = upload(e, t, b, nb), pc = upload(e, t, c, nc), pd = upload(e, t, dv, nd);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_cuda_gemm plan;
    kn_status s = kn_cuda_gemm_plan(e->lt, g, pa, pb, g->has_c ? pc : 0, pd, 0, 1u << 22, "gemm", d, &plan);
    CUdeviceptr ws = 0;
    if (s == KN_OK && plan.workspace)
        assert_int_equal(e->cu->mem_alloc(&ws, plan.workspace), CUDA_SUCCESS);
    if (s == KN_OK)
        s = kn_cuda_gemm_run(e->lt, &plan, ws, plan.workspace, e->stream, "gemm", d);
    if (s == KN_OK)
        assert_int_equal(e->cu->stream_synchronize(e->stream), CUDA_SUCCESS);
    if (s != KN_OK && s != KN_ERR_UNSUPPORTED)
        kn_diag_print(d, stderr);
    assert_true(s == KN_OK || s == KN_ERR_UNSUPPORTED);
    if (s == KN_OK) {
        size_t es = kn_cuda_gemm_elem_size(t);
        uint8_t *h = malloc(nd * es);
        assert_non_null(h);
        assert_int_equal(e->cu->memcpy_dtoh_async(h, pd, nd * es, e->stream), CUDA_SUCCESS);
        assert_int_equal(e->cu->stream_synchronize(e->stream), CUDA_SUCCESS);
        for (int64_t bt = 0; bt < g->batch; bt++)
            for (int64_t i = 0; i < g->m; i++)
                for (int64_t j = 0; j < g->n; j++) {
                    double acc = 0;
                    for (int64_t k = 0; k < g->k; k++) {
                        double x = a[bt * g->stride_a + (g->trans_a ? k * g->lda + i : i * g->lda + k)];
                        double y = b[bt * g->stride_b + (g->trans_b ? j * g->ldb + k : k * g->ldb + j)];
                        acc += x * y;
                    }
                    double v = g->alpha * acc;
                    if (g->has_c && !bias)
                        v += g->beta * c[bt * g->stride_c + i * g->ldc + j];
                    if (bias)
                        v += c[bt * g->stride_c + j];
                    if (g->epilogue == 1)
                        v = v > 0 ? v : 0;
                    if (g->epilogue == 2)
                        v = 0.5 * v * (1 + tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
                    double got = kn_get_f64(t, h, bt * g->stride_d + i * g->ldd + j);
                    if (!(fabs(got - v) <= tol * (1 + fabs(v))))
                        fail_msg("%s m%lld n%lld k%lld ta%u tb%u epilogue %u has_c %u batch %lld (strides %lld %lld): "
                                 "D[%lld][%lld][%lld] = %.9g, want %.9g",
                                 kn_dtype_name(t), (long long)g->m, (long long)g->n, (long long)g->k, g->trans_a,
                                 g->trans_b, g->epilogue, g->has_c, (long long)g->batch, (long long)g->stride_a,
                                 (long long)g->stride_b, (long long)bt, (long long)i, (long long)j, got, v);
                }
        free(h);
        kn_cuda_gemm_release(e->lt, &plan);
    }
    if (ws)
        e->cu->mem_free(ws);
    e->cu->mem_free(pa);
    e->cu->mem_free(pb);
    e->cu->mem_free(pc);
    e->cu->mem_free(pd);
    free(a);
    free(b);
    free(c);
    free(dv);
    kn_diag_destroy(d);
    return s;
}

static CUdeviceptr upload_bytes(gemm_env *e, const void *h, size_t n)
{
    CUdeviceptr p;
    assert_int_equal(e->cu->mem_alloc(&p, n ? n : 1), CUDA_SUCCESS);
    assert_int_equal(e->cu->memcpy_htod_async(p, h, n, e->stream), CUDA_SUCCESS);
    assert_int_equal(e->cu->stream_synchronize(e->stream), CUDA_SUCCESS);
    return p;
}

/* The int8 descriptor (int8 A, B; int32 D, exact): the row-major D is
 * compared with integer sums. KN_ERR_UNSUPPORTED when cuBLASLt (or the
 * mock, which enforces the IMMA rules) has no algorithm. */
static kn_status gemm_check_i8(gemm_env *e, const kn_plan_cu_gemm *g)
{
    int64_t ar = g->trans_a ? g->k : g->m, ac = g->trans_a ? g->m : g->k;
    int64_t br = g->trans_b ? g->n : g->k, bc = g->trans_b ? g->k : g->n;
    size_t na = extent(ar, ac, g->lda, g->batch, g->stride_a), nb = extent(br, bc, g->ldb, g->batch, g->stride_b);
    size_t nd = extent(g->m, g->n, g->ldd, g->batch, g->stride_d);
    int8_t *a = malloc(na), *b = malloc(nb);
    int32_t *dv = malloc(nd * 4);
    assert_true(a && b && dv);
    uint64_t seed = 7;
    for (size_t i = 0; i < na + nb; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        int8_t v = i % 7 == 0 ? (int8_t)-128 : (int8_t)(seed >> 56); /* the extremes too */
        if (i < na)
            a[i] = v;
        else
            b[i - na] = v;
    }
    for (size_t i = 0; i < nd; i++)
        dv[i] = INT32_MIN + 12345; /* beta 0: D is not read */
    CUdeviceptr pa = upload_bytes(e, a, na), pb = upload_bytes(e, b, nb), pd = upload_bytes(e, dv, nd * 4);
    kn_diag *d = kn_diag_create(NULL, NULL);
    kn_cuda_gemm plan;
    kn_status s = kn_cuda_gemm_plan(e->lt, g, pa, pb, 0, pd, 0, 1u << 22, "gemm", d, &plan);
    CUdeviceptr ws = 0;
    if (s == KN_OK && plan.workspace)
        assert_int_equal(e->cu->mem_alloc(&ws, plan.workspace), CUDA_SUCCESS);
    if (s == KN_OK)
        s = kn_cuda_gemm_run(e->lt, &plan, ws, plan.workspace, e->stream, "gemm", d);
    if (s == KN_OK)
        assert_int_equal(e->cu->stream_synchronize(e->stream), CUDA_SUCCESS);
    if (s != KN_OK && s != KN_ERR_UNSUPPORTED)
        kn_diag_print(d, stderr);
    assert_true(s == KN_OK || s == KN_ERR_UNSUPPORTED);
    if (s == KN_OK) {
        int32_t *h = malloc(nd * 4);
        assert_non_null(h);
        assert_int_equal(e->cu->memcpy_dtoh_async(h, pd, nd * 4, e->stream), CUDA_SUCCESS);
        assert_int_equal(e->cu->stream_synchronize(e->stream), CUDA_SUCCESS);
        for (int64_t bt = 0; bt < g->batch; bt++)
            for (int64_t i = 0; i < g->m; i++)
                for (int64_t j = 0; j < g->n; j++) {
                    int64_t acc = 0;
                    for (int64_t k = 0; k < g->k; k++)
                        acc += (int64_t)a[bt * g->stride_a + (g->trans_a ? k * g->lda + i : i * g->lda + k)] *
                               b[bt * g->stride_b + (g->trans_b ? j * g->ldb + k : k * g->ldb + j)];
                    int64_t got = h[bt * g->stride_d + i * g->ldd + j];
                    if (got != acc)
                        fail_msg("int8 m%lld n%lld k%lld lda %lld ldb %lld ldd %lld batch %lld (stride_b %lld): "
                                 "D[%lld][%lld][%lld] = %lld, want %lld",
                                 (long long)g->m, (long long)g->n, (long long)g->k, (long long)g->lda,
                                 (long long)g->ldb, (long long)g->ldd, (long long)g->batch, (long long)g->stride_b,
                                 (long long)bt, (long long)i, (long long)j, (long long)got, (long long)acc);
                }
        free(h);
        kn_cuda_gemm_release(e->lt, &plan);
    }
    if (ws)
        e->cu->mem_free(ws);
    e->cu->mem_free(pa);
    e->cu->mem_free(pb);
    e->cu->mem_free(pd);
    free(a);
    free(b);
    free(dv);
    kn_diag_destroy(d);
    return s;
}

/* The int8 descriptors kiln writes (trans_b, k and n multiples of 4):
 * padded leading dims, one GEMM or a strided batch, values at the int8
 * extremes. */
static void gemm_i8_sweep(gemm_env *e)
{
    const int64_t shapes[][3] = {{1, 4, 4}, {3, 8, 12}, {5, 12, 64}, {2, 4, 1024}};
    int run = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int64_t pad = 0; pad < 2; pad++)
            for (int mode = 0; mode < 2; mode++) {
                kn_plan_cu_gemm g;
                memset(&g, 0, sizeof g);
                g.m = shapes[si][0], g.n = shapes[si][1], g.k = shapes[si][2];
                g.dtype = KN_I8, g.trans_b = 1, g.alpha = 1.0f;
                g.lda = g.k + 4 * pad, g.ldb = g.k + 8 * pad, g.ldd = g.n + 4 * pad;
                g.batch = mode ? 3 : 1;
                g.stride_a = g.m * g.lda;
                g.stride_b = g.n * g.ldb;
                g.stride_d = g.m * g.ldd;
                if (gemm_check_i8(e, &g) != KN_OK)
                    fail_msg("cuBLASLt refused an int8 GEMM m%lld n%lld k%lld pad %lld batch %lld", (long long)g.m,
                             (long long)g.n, (long long)g.k, (long long)pad, (long long)g.batch);
                run++;
            }
    printf("int8 GEMM sweep: %d descriptors\n", run);
}

/* Under the mock, which keeps to cuBLASLt's IMMA rules: forms outside
 * them (B not transposed, so cuBLASLt's A is not; n or a leading dim not
 * a multiple of 4) have no algorithm. A descriptor mapped wrongly to
 * cuBLASLt fails here or in the sweep's comparison. */
static void gemm_i8_refused(gemm_env *e)
{
    kn_plan_cu_gemm g;
    memset(&g, 0, sizeof g);
    g.m = 3, g.n = 8, g.k = 12, g.dtype = KN_I8, g.alpha = 1.0f, g.batch = 1;
    g.lda = 12, g.ldb = 8, g.ldd = 8; /* trans_b 0: B [k, n] */
    assert_int_equal(gemm_check_i8(e, &g), KN_ERR_UNSUPPORTED);
    g.trans_b = 1, g.ldb = 12, g.n = 6, g.ldd = 6;
    assert_int_equal(gemm_check_i8(e, &g), KN_ERR_UNSUPPORTED);
    g.n = 8, g.ldd = 8, g.lda = 14;
    assert_int_equal(gemm_check_i8(e, &g), KN_ERR_UNSUPPORTED);
}

/* dtypes × transposes × epilogues × C × batching (strided, one operand
 * shared) × padded leading dimensions. */
static void gemm_sweep(void)
{
    gemm_env e;
    gemm_env_open(&e);
    gemm_i8_sweep(&e);
    const kn_dtype dts[] = {KN_F32, KN_F64, KN_F16, KN_BF16};
    int run = 0, unsupported = 0;
    for (size_t di = 0; di < 4; di++)
        for (uint32_t ta = 0; ta < 2; ta++)
            for (uint32_t tb = 0; tb < 2; tb++)
                for (uint32_t epi = 0; epi < 4; epi++)
                    for (uint32_t has_c = 0; has_c < 2; has_c++)
                        for (int mode = 0; mode < 3; mode++)
                            for (int64_t pad = 0; pad < 2; pad++) {
                                if (epi == 3 && !has_c)
                                    continue;
                                kn_plan_cu_gemm g;
                                memset(&g, 0, sizeof g);
                                g.m = 3, g.n = 5, g.k = 4;
                                g.trans_a = ta, g.trans_b = tb, g.epilogue = epi, g.has_c = has_c;
                                g.dtype = dts[di];
                                g.lda = (ta ? g.m : g.k) + pad;
                                g.ldb = (tb ? g.k : g.n) + pad;
                                g.ldc = g.n + pad, g.ldd = g.n + pad;
                                g.alpha = 0.5f, g.beta = has_c && epi != 3 ? 1.5f : 0;
                                g.batch = mode ? 3 : 1;
                                g.stride_a = (ta ? g.k : g.m) * g.lda;
                                g.stride_b = mode == 2 ? 0 : (tb ? g.n : g.k) * g.ldb;
                                g.stride_c = epi == 3 ? g.n : g.m * g.ldc;
                                g.stride_d = g.m * g.ldd;
                                double tol = dts[di] == KN_F64 ? 1e-12 : dts[di] == KN_F32 ? 1e-5
                                             : dts[di] == KN_F16 ? 2e-3 : 1e-2;
                                if (epi == 2)
                                    tol = tol > 1e-3 ? tol : 1e-3;
                                kn_status s = gemm_check(&e, &g, tol);
                                run++;
                                if (s == KN_ERR_UNSUPPORTED) {
                                    unsupported++;
                                    /* cuBLASLt's epilogues need not cover float64 */
                                    if (dts[di] != KN_F64 || epi == 0)
                                        fail_msg("cuBLASLt refused a %s GEMM (ta %u tb %u epilogue %u)",
                                                 kn_dtype_name(dts[di]), ta, tb, epi);
                                }
                            }
    printf("GEMM sweep: %d descriptors, %d unsupported by cuBLASLt (float64 epilogues)\n", run, unsupported);
    gemm_env_close(&e);
}

static void test_mock_gemm_sweep(void **state)
{
    (void)state;
    need_mock();
    gemm_sweep();
    gemm_env e;
    gemm_env_open(&e);
    gemm_i8_refused(&e);
    gemm_env_close(&e);
    assert_int_equal(mock_ctl(MOCK_BAD, -1), 0);
}

static void test_gpu_gemm_sweep(void **state)
{
    (void)state;
    need_gpu();
    gemm_sweep();
}
#endif

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    const struct CMUnitTest cpu_tests[] = {
        cmocka_unit_test(test_available),
        cmocka_unit_test(test_session_without_gpu),
        cmocka_unit_test(test_read_sections), cmocka_unit_test(test_gemv_choice),
        cmocka_unit_test(test_corrupted_entries),
        cmocka_unit_test(test_int8_gemm_plan),
        cmocka_unit_test(test_read_failing_allocator),
        cmocka_unit_test(test_random_corruption),
    };
    const struct CMUnitTest stub_tests[] = {
        cmocka_unit_test(test_stub_driver),
    };
    const struct CMUnitTest mock_tests[] = {
        cmocka_unit_test(test_mock_identity), cmocka_unit_test(test_mock_gemms), cmocka_unit_test(test_mock_launches),
        cmocka_unit_test(test_mock_failures), cmocka_unit_test(test_mock_failing_allocator),
        cmocka_unit_test(test_mock_arch),
#ifdef KN_HAVE_CUDA_HEADERS
        cmocka_unit_test(test_mock_gemm_sweep),
#endif
    };
    const struct CMUnitTest gpu_tests[] = {
#ifdef KN_HAVE_CUDA_HEADERS
        cmocka_unit_test(test_gpu_gemm_sweep),
#endif
        cmocka_unit_test(test_gpu_gemms),   cmocka_unit_test(test_gpu_batched), cmocka_unit_test(test_gpu_half),
        cmocka_unit_test(test_gpu_ptx_jit), cmocka_unit_test(test_gpu_no_code),
    };
    if (strcmp(mode, "--gpu") == 0)
        return cmocka_run_group_tests_name("cuda_gpu", gpu_tests, setup, teardown);
    if (strcmp(mode, "--mock") == 0)
        return cmocka_run_group_tests_name("cuda_mock", mock_tests, setup, teardown);
    if (strcmp(mode, "--stub") == 0)
        return cmocka_run_group_tests_name("cuda_stub", stub_tests, setup, teardown);
    return cmocka_run_group_tests_name("cuda_runtime", cpu_tests, setup, teardown);
}
