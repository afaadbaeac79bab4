/* The block-per-row normalization kernels of target cuda
 * (codegen/cuda/e_row_norm.c) checked without a GPU. One-node graphs of
 * RMSNormalization, LayerNormalization (with and without B, with Mean and
 * InvStdDev), kiln.SkipRMSNorm and kiln.SkipLayerNorm (with and without
 * their sum output, which must equal the CPU's bit for bit) over rows of
 * 1, 31, 32, 33, 576, 2048 and 4097 elements (1 to 67 rows; block sizes 32
 * to 1024, rows that are not a multiple of the block), float32 / float16 /
 * bfloat16, the scale/bias broadcast forms (scalar, per channel, a suffix
 * of the row shape, the general per-dim walk), float64 rows and a
 * scale/bias of another float dtype are lowered for target cuda, their
 * kernels NVRTC-compiled for sm_80/86/89/90 + PTX (when NVRTC is there),
 * run on the host emulator and compared with the CPU reference
 * (statistics in double) element by element: |got - ref| <= atol + rtol
 * |ref| with (rtol, atol) = (1e-5, 1e-5) for float32, (2e-3, 2e-3) for
 * float16 (an ulp: the kernel's float32 statistics against the
 * reference's double), (1.6e-2, 1.6e-2) for bfloat16, 1e-12 for float64.
 * A kernel whose warp reduction skips the first shuffle step (lanes 16
 * apart never meet) must fail the same check, as must one whose 16-byte
 * load form is broken, where the rows split into 16-byte chunks (and only
 * there). With --gpu (ctest test_cuda_norm_gpu, label gpu) the same cases
 * run on the device through a written plan and a CUDA session; skipped
 * without one. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codegen/cuda/lower.h"
#include "codegen/cuda/norm_kernels.h"
#include "codegen/plan_write.h"
#include "emu_host.h"
#include "emu_program.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"
#include "model_builder.h"
#include "runtime/cpu/exec.h"
#include "runtime/cpu/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { RMS, LN, LN_NOBIAS, SKIP, SKIP_LN };

typedef struct ncase {
    int kind;
    kn_dtype dt;
    int32_t rank, axis;
    int64_t dims[4];
    int32_t srank;          /* scale (and bias) rank */
    int64_t sdims[4];
    bool stats;             /* LayerNormalization's Mean and InvStdDev too; SkipRMSNorm's sum */
    kn_dtype sdt;           /* of scale and bias; 0: dt */
} ncase;

static uint64_t rng = 0x2545f4914f6cdd1dull;
static double urand(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static char *dims_str(mb *b, const int64_t *d, int32_t n)
{
    char s[128] = "";
    size_t p = 0;
    for (int32_t i = 0; i < n; i++)
        p += (size_t)snprintf(s + p, sizeof s - p, "%s%lld", i ? "," : "", (long long)d[i]);
    return mb_strdup(b, s);
}

static kn_graph *build(mb *b, const ncase *c)
{
    Onnx__ModelProto *m = mb_model(b, 23);
    Onnx__GraphProto *g = m->graph;
    bool bias = c->kind == LN || c->kind == SKIP_LN, skip = c->kind == SKIP || c->kind == SKIP_LN;
    mb_input(b, g, "x", mb_tensor_type(b, c->dt, dims_str(b, c->dims, c->rank)));
    if (skip)
        mb_input(b, g, "r", mb_tensor_type(b, c->dt, dims_str(b, c->dims, c->rank)));
    kn_dtype sdt = c->sdt ? c->sdt : c->dt;
    mb_input(b, g, "s", mb_tensor_type(b, sdt, dims_str(b, c->sdims, c->srank)));
    if (bias)
        mb_input(b, g, "b", mb_tensor_type(b, sdt, dims_str(b, c->sdims, c->srank)));
    Onnx__NodeProto *n;
    if (skip) {
        mb_opset(b, m, "kiln", 1);
        n = mb_node(b, g, c->kind == SKIP ? "SkipRMSNorm" : "SkipLayerNorm", "norm", bias ? "x,r,s,b" : "x,r,s",
                    c->stats ? "y,sum" : "y");
        n->domain = mb_strdup(b, "kiln");
    } else if (c->kind == RMS) {
        n = mb_node(b, g, "RMSNormalization", "norm", "x,s", "y");
    } else {
        n = mb_node(b, g, "LayerNormalization", "norm", bias ? "x,s,b" : "x,s", c->stats ? "y,mean,inv" : "y");
    }
    mb_attr_i(b, n, "axis", c->axis);
    mb_attr_f(b, n, "epsilon", 1e-5f);
    mb_output(b, g, "y", NULL);
    if (c->stats && skip)
        mb_output(b, g, "sum", NULL);
    else if (c->stats) {
        mb_output(b, g, "mean", NULL);
        mb_output(b, g, "inv", NULL);
    }
    return mb_import(b, m);
}

static kn_rt_tensor *random_tensor(kn_dtype dt, int32_t rank, const int64_t *dims, double lo, double hi, double shift)
{
    kn_rt_tensor *t;
    assert_int_equal(kn_rt_tensor_new(NULL, dt, rank, dims, &t), KN_OK);
    int64_t n = 1, inner = rank ? dims[rank - 1] : 1;
    for (int32_t d = 0; d < rank; d++)
        n *= dims[d];
    for (int64_t i = 0; i < n; i++) /* rows of different means: LayerNorm's centring matters */
        kn_set_f64(dt, t->data, i, lo + (hi - lo) * urand() + shift * (double)((i / inner) % 5));
    return t;
}

static const char *const names[] = {"RMSNorm", "LayerNorm", "LayerNorm (no B)", "SkipRMSNorm", "SkipLayerNorm"};

/* --gpu: the cases run on the device (a plan written and loaded, a CUDA
 * session), not on the host emulator */
static bool gpu;

static uint64_t seen[1024];
static uint32_t n_seen, n_compiled; /* distinct sources: seen, NVRTC-compiled */

/* NVRTC for every default arch, once per distinct kernel source. */
static void nvrtc_check(kn_cu_program *p, kn_diag *d)
{
    if (!kn_nvrtc_version())
        return;
    bool fresh = false;
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        bool s = false;
        for (uint32_t i = 0; i < n_seen; i++)
            s = s || seen[i] == p->kernels[k].hash;
        if (!s) {
            assert_true(n_seen < 1024);
            seen[n_seen++] = p->kernels[k].hash, fresh = true;
        }
    }
    if (!fresh)
        return;
    n_compiled++;
    static const uint32_t archs[] = {80, 86, 89, 90};
    kn_nvrtc_options no = {archs, 4, false, NULL, 1};
    kn_nvrtc_stats ns;
    assert_int_equal(kn_cuda_compile(p, &no, d, &ns), KN_OK);
    assert_int_equal(ns.failed, 0);
    for (uint32_t k = 0; k < p->n_kernels; k++)
        assert_int_equal(p->kernels[k].n_images, 5);
}

/* Replaces every `from` in the program's kernel sources by `to` (same
 * length, so the source stays in place; a new hash for the emulator's
 * build): BREAK_REDUCTION skips the first step of each warp reduction,
 * BREAK_VECTOR makes the 16-byte form read the chunk's first element for
 * all of them. */
enum { INTACT, BREAK_REDUCTION, BREAK_VECTOR };
static void break_kernel(kn_cu_program *p, int how)
{
    const char *from = how == BREAK_REDUCTION ? "int o = 16;" : "xv.e[j]";
    const char *to = how == BREAK_REDUCTION ? "int o =  8;" : "xv.e[0]";
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        char *s = p->kernels[k].source, *at;
        bool found = false;
        while ((at = strstr(s, from)) != NULL) {
            memcpy(at, to, strlen(to));
            found = true;
        }
        assert_true(found);
        p->kernels[k].hash ^= 0x9e3779b97f4a7c15ull + (uint64_t)how;
    }
}

/* Runs case c; returns whether every output is within tolerance and
 * writes the worst |got - ref| / (atol + rtol |ref|) to *worst. */
static bool run_case(const ncase *c, int broken, double *worst)
{
    mb *b = mb_new();
    kn_graph *g = build(b, c), *ref = build(b, c);
    kn_diag *d = kn_diag_create(NULL, stderr);
    bool bias = c->kind == LN || c->kind == SKIP_LN, skip = c->kind == SKIP || c->kind == SKIP_LN;
    kn_rt_tensor *ins[4];
    kn_cuda_shape sh[4];
    uint32_t n_in = 0, n_out = c->stats ? (skip ? 2 : 3) : 1;
    /* inputs in graph order: x, [r], s, [b] */
    sh[n_in] = (kn_cuda_shape){"x", c->rank, {0}};
    memcpy(sh[n_in].dims, c->dims, sizeof c->dims);
    ins[n_in++] = random_tensor(c->dt, c->rank, c->dims, -2.0, 2.0, 3.0);
    if (skip) { /* the residual stream: large next to x, so float16/bfloat16 sums round */
        sh[n_in] = (kn_cuda_shape){"r", c->rank, {0}};
        memcpy(sh[n_in].dims, c->dims, sizeof c->dims);
        ins[n_in++] = random_tensor(c->dt, c->rank, c->dims, -40.0, 40.0, 1.0);
    }
    sh[n_in] = (kn_cuda_shape){"s", c->srank, {0}};
    memcpy(sh[n_in].dims, c->sdims, sizeof c->sdims);
    kn_dtype sdt = c->sdt ? c->sdt : c->dt;
    ins[n_in++] = random_tensor(sdt, c->srank, c->sdims, 0.5, 1.5, 0.0);
    if (bias) {
        sh[n_in] = (kn_cuda_shape){"b", c->srank, {0}};
        memcpy(sh[n_in].dims, c->sdims, sizeof c->sdims);
        ins[n_in++] = random_tensor(sdt, c->srank, c->sdims, -1.0, 1.0, 0.0);
    }
    kn_cu_program prog;
    kn_cuda_lower_stats st;
    assert_int_equal(kn_cuda_lower(g, sh, n_in, NULL, d, &prog, &st), KN_OK);
    assert_int_equal(st.nodes_host, 0);
    assert_int_equal(prog.n_kernels, 1);
    if (broken)
        break_kernel(&prog, broken);
    if (gpu) { /* the device's arch among the images (the kernel cache keeps repeats cheap) */
        static const uint32_t archs[] = {80, 86, 89, 90};
        kn_nvrtc_options no = {archs, 4, false, NULL, 0};
        assert_int_equal(kn_cuda_compile(&prog, &no, d, NULL), KN_OK);
    } else if (!broken) {
        nvrtc_check(&prog, d);
    }
    kn_rt_tensor *want[3] = {0}, *got[3] = {0};
    assert_int_equal(kn_cpu_run(ref, NULL, d, (const kn_rt_tensor *const *)ins, n_in, want, n_out), KN_OK);
    if (gpu) {
        char *path = mb_path(b, mb_tempdir(b), "norm.plan");
        kn_plan_options o = {"--target cuda", "cuda", &prog, NULL, 0};
        kn_graph *pg;
        kn_cuda_session *cs;
        kn_cuda_options co = {0};
        assert_int_equal(kn_plan_write(g, &o, path, d), KN_OK);
        assert_int_equal(kn_plan_load(path, NULL, d, &pg), KN_OK);
        assert_int_equal(kn_cuda_session_create(pg, NULL, 0, &co, NULL, d, &cs), KN_OK);
        assert_int_equal(kn_cuda_session_run(cs, (const kn_rt_tensor *const *)ins, n_in, got, n_out, d), KN_OK);
        kn_cuda_session_destroy(cs);
        kn_graph_destroy(pg);
    } else {
        char msg[2048];
        kn_status s = kn_emu_run_program(g, &prog, ins, got, NULL, msg, sizeof msg);
        if (s != KN_OK)
            fail_msg("emulator: %s", msg);
    }
    double rtol = c->dt == KN_F64 ? 1e-12 : c->dt == KN_F32 ? 1e-5 : c->dt == KN_F16 ? 2e-3 : 1.6e-2, atol = rtol;
    bool ok = true;
    *worst = 0;
    for (uint32_t o = 0; o < n_out; o++) {
        assert_non_null(got[o]);
        assert_int_equal(got[o]->numel, want[o]->numel);
        for (int64_t i = 0; i < want[o]->numel; i++) {
            double w = kn_get_f64(want[o]->dtype, want[o]->data, i), v = kn_get_f64(got[o]->dtype, got[o]->data, i);
            /* SkipRMSNorm's sum: the same rounding of the same double sum */
            double r = skip && o == 1 ? (v == w ? 0.0 : INFINITY) : fabs(v - w) / (atol + rtol * fabs(w));
            if (!(r <= 1.0))
                ok = false;
            if (!(r <= *worst))
                *worst = r;
        }
        kn_rt_tensor_free(NULL, want[o]);
        kn_rt_tensor_free(NULL, got[o]);
    }
    for (uint32_t i = 0; i < n_in; i++)
        kn_rt_tensor_free(NULL, ins[i]);
    kn_cu_program_free(&prog);
    kn_graph_destroy(g);
    kn_graph_destroy(ref);
    kn_diag_destroy(d);
    mb_free(b);
    return ok;
}

static bool emu_ready(void)
{
    if (gpu) {
        kn_diag *d = kn_diag_create(NULL, NULL);
        bool ok = kn_cuda_available(d) && kn_nvrtc_version();
        if (!ok)
            print_message("skipped: no GPU or no NVRTC: %s\n", kn_diag_size(d) ? kn_diag_message(d, 0, NULL) : "");
        kn_diag_destroy(d);
        return ok;
    }
    char err[600];
    if (!kn_emu_init(err, sizeof err)) {
        print_message("skipped: the host emulator cannot start: %s\n", err);
        return false;
    }
    return true;
}

static const char *dt_name(kn_dtype t) { return kn_dtype_name(t); }

/* Rows x cols with a per-channel scale (and bias) over the last axis. */
static void row_sweep(void **state)
{
    (void)state;
    if (!emu_ready())
        skip();
    static const int64_t cols[] = {1, 31, 32, 33, 576, 2048, 4097};
    static const int64_t rows[] = {1, 67, 5, 2, 67, 1, 3};
    static const kn_dtype dts[] = {KN_F32, KN_F16, KN_BF16};
    uint32_t n = 0;
    double dt_worst[3] = {0, 0, 0};
    for (int kind = RMS; kind <= SKIP_LN; kind++)
        for (size_t di = 0; di < 3; di++)
            for (size_t ci = 0; ci < 7; ci++) {
                /* every column count at 1 row and at another count up to 67 */
                for (int pass = 0; pass < 2; pass++) {
                    int64_t r = pass ? rows[(ci + di + (size_t)kind) % 7] : 1;
                    if (pass && r == 1)
                        r = 67;
                    bool extra = kind != RMS && kind != LN_NOBIAS && pass; /* Mean/InvStdDev or the sum */
                    ncase c = {kind, dts[di], 2, 1, {r, cols[ci]}, 1, {cols[ci]}, extra};
                    double worst;
                    bool ok = run_case(&c, INTACT, &worst);
                    if (!ok || (ci == 6 && pass))
                        print_message("%s %s rows %lld cols %lld (%u threads): worst error %.3g of the tolerance\n",
                                      names[kind],
                                      dt_name(dts[di]), (long long)r, (long long)cols[ci],
                                      kn_row_norm_threads(cols[ci], kn_dtype_bits(dts[di]) / 8), worst);
                    assert_true(ok);
                    dt_worst[di] = worst > dt_worst[di] ? worst : dt_worst[di];
                    n++;
                }
            }
    print_message("%u cases within tolerance; worst error over them: float32 %.3g, float16 %.3g, bfloat16 %.3g of "
                  "the tolerance\n", n, dt_worst[0], dt_worst[1], dt_worst[2]);
    if (!gpu && kn_nvrtc_version())
        print_message("NVRTC: %u distinct kernel sources (all tests so far) compiled for sm_80/86/89/90 + PTX\n",
                      n_compiled);
}

/* The broadcast forms of scale and bias over a row of shape [3, 33]
 * (axis 1 of [5, 3, 33]) and of [2, 3, 40] (axis 1 of [4, 2, 3, 40]). */
static void broadcast_forms(void **state)
{
    (void)state;
    if (!emu_ready())
        skip();
    static const struct {
        int32_t srank;
        int64_t sdims[3];
    } forms[] = {
        {1, {1}}, {1, {33}}, {2, {3, 33}}, {2, {3, 1}}, {2, {1, 33}},
    };
    static const struct {
        int32_t srank;
        int64_t sdims[3];
    } forms4[] = {{2, {3, 40}}, {3, {2, 1, 40}}, {3, {2, 3, 1}}, {1, {40}}};
    uint32_t n = 0;
    for (int kind = RMS; kind <= SKIP_LN; kind++)
        for (size_t di = 0; di < 3; di++) {
            if (kind == LN_NOBIAS)
                continue;
            kn_dtype dt = di == 0 ? KN_F32 : di == 1 ? KN_F16 : KN_BF16;
            for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
                ncase c = {kind, dt, 3, 1, {5, 3, 33}, forms[f].srank, {0}, false};
                memcpy(c.sdims, forms[f].sdims, sizeof forms[f].sdims);
                double worst;
                bool ok = run_case(&c, INTACT, &worst);
                if (!ok)
                    print_message("form %zu %s: worst %.3g\n", f, dt_name(dt), worst);
                assert_true(ok);
                n++;
            }
            for (size_t f = 0; f < sizeof forms4 / sizeof *forms4; f++) {
                ncase c = {kind, dt, 4, 1, {4, 2, 3, 40}, forms4[f].srank, {0}, kind != RMS};
                memcpy(c.sdims, forms4[f].sdims, sizeof forms4[f].sdims);
                double worst;
                bool ok = run_case(&c, INTACT, &worst);
                if (!ok)
                    print_message("form4 %zu %s: worst %.3g\n", f, dt_name(dt), worst);
                assert_true(ok);
                n++;
            }
        }
    print_message("%u broadcast cases within tolerance\n", n);
}

/* The check sees a broken reduction. */
static void broken_reduction_fails(void **state)
{
    (void)state;
    if (!emu_ready())
        skip();
    for (int kind = RMS; kind <= SKIP_LN; kind += kind == LN ? 2 : 1) {
        ncase c = {kind, KN_F32, 2, 1, {3, 576}, 1, {576}, false};
        double worst;
        assert_false(run_case(&c, BREAK_REDUCTION, &worst));
        print_message("%s with a broken warp reduction: worst error %.3g of the tolerance (fails, as it must)\n",
                      names[kind], worst);
    }
}

/* Rows that split into 16-byte chunks take the vector form (breaking it
 * fails the check), the others the scalar one (breaking the vector form
 * changes nothing). */
static void vector_form_used(void **state)
{
    (void)state;
    if (!emu_ready())
        skip();
    for (int kind = RMS; kind <= SKIP_LN; kind += kind == LN ? 2 : 1) {
        ncase v = {kind, KN_F16, 2, 1, {3, 576}, 1, {576}, kind >= SKIP};
        ncase s = {kind, KN_F16, 2, 1, {3, 33}, 1, {33}, kind >= SKIP};
        double worst;
        assert_false(run_case(&v, BREAK_VECTOR, &worst));
        assert_true(run_case(&s, BREAK_VECTOR, &worst));
    }
}

/* float64 (statistics in double, 2 elements per 16-byte chunk) and scale /
 * bias of another float dtype than X. */
static void double_and_mixed(void **state)
{
    (void)state;
    if (!emu_ready())
        skip();
    static const int64_t cols[] = {33, 576};
    uint32_t n = 0;
    double w64 = 0, wmix = 0;
    for (int kind = RMS; kind <= SKIP_LN; kind += kind == LN ? 2 : 1)
        for (size_t ci = 0; ci < 2; ci++) {
            ncase c = {kind, KN_F64, 2, 1, {3, cols[ci]}, 1, {cols[ci]}, kind != RMS, 0};
            double worst;
            assert_true(run_case(&c, INTACT, &worst));
            w64 = worst > w64 ? worst : w64;
            n++;
        }
    static const kn_dtype pairs[][2] = {{KN_F16, KN_F32}, {KN_F32, KN_F16}, {KN_BF16, KN_F32}};
    for (int kind = RMS; kind <= LN; kind++)
        for (size_t i = 0; i < 3; i++) {
            ncase c = {kind, pairs[i][0], 2, 1, {3, 576}, 1, {576}, false, pairs[i][1]};
            double worst;
            assert_true(run_case(&c, INTACT, &worst));
            wmix = worst > wmix ? worst : wmix;
            n++;
        }
    print_message("%u cases within tolerance (float64: rtol/atol 1e-12, worst %.3g of it; mixed dtypes: worst %.3g)\n",
                  n, w64, wmix);
}

/* Block sizes: one 16-byte chunk a thread (or four elements), multiples of
 * 32 from 32 to 1024. */
static void threads(void **state)
{
    (void)state;
    assert_int_equal(kn_row_norm_threads(0, 4), 32);
    assert_int_equal(kn_row_norm_threads(1, 4), 32);
    assert_int_equal(kn_row_norm_threads(576, 4), 160);  /* 144 chunks of 4 float32 */
    assert_int_equal(kn_row_norm_threads(576, 2), 96);   /* 72 chunks of 8 float16 */
    assert_int_equal(kn_row_norm_threads(2048, 4), 512);
    assert_int_equal(kn_row_norm_threads(2048, 2), 256);
    assert_int_equal(kn_row_norm_threads(33, 2), 32);    /* scalar: 9 threads' worth */
    assert_int_equal(kn_row_norm_threads(4097, 2), 1024);
    assert_int_equal(kn_row_norm_threads(1 << 20, 8), 1024);
}

int main(int argc, char **argv)
{
    gpu = argc > 1 && strcmp(argv[1], "--gpu") == 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads),
        cmocka_unit_test(broken_reduction_fails),
        cmocka_unit_test(vector_form_used),
        cmocka_unit_test(broadcast_forms),
        cmocka_unit_test(double_and_mixed),
        cmocka_unit_test(row_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
