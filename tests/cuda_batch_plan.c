/* See cuda_batch_plan.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cli.h"
#include "codegen/cuda/lower.h"
#include "codegen/cuda/sample_kernels.h"
#include "codegen/plan_write.h"
#include "cuda_batch_plan.h"
#include "kiln/cuda.h"
#include "kiln/runtime.h"

#include <stdio.h>
#include <string.h>

kn_graph *optimized(const char *name, bool cuda)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/models/%s/model.onnx", KN_SOURCE_DIR, name);
    kn_diag *q = kn_diag_create(NULL, NULL);
    kn_graph *g = NULL;
    assert_int_equal(kn_import_onnx_file(path, NULL, NULL, q, &g), KN_OK);
    if (cuda)
        assert_int_equal(kn_compile_graph_kv(g, NULL, q), KN_OK);
    else
        assert_int_equal(kn_compile_graph(g, "cpu", NULL, q), KN_OK);
    kn_diag_destroy(q);
    return g;
}

/* Lowering only (no NVRTC here): images faked, the plan's are not run. */
static void lower_only(kn_graph *g, int64_t rows, int64_t tokens, kn_cu_program *p, kn_diag *d)
{
    kn_cuda_shape sh[2] = {{"input_ids", 2, {rows, tokens}}, {"position_ids", 2, {rows, tokens}}};
    kn_cuda_lower_stats st;
    assert_int_equal(kn_cuda_lower(g, sh, g->n_inputs, NULL, d, p, &st), KN_OK);
    assert_int_equal(kn_cu_program_add_sampling(p, g, KN_F32, d), KN_OK);
    for (uint32_t k = 0; k < p->n_kernels; k++) {
        static const char ptx[] = "// PTX\n";
        uint8_t *t = kn_mem_alloc(NULL, sizeof ptx);
        p->kernels[k].images = kn_mem_alloc(NULL, sizeof *p->kernels[k].images);
        assert_true(t && p->kernels[k].images);
        memcpy(t, ptx, sizeof ptx);
        p->kernels[k].images[0] = (kn_cu_image){KN_CU_ARCH_PTX, t, sizeof ptx};
        p->kernels[k].n_images = 1;
    }
}

void build(mb *b, const char *name, const uint32_t *rows, const uint32_t *toks, uint32_t n_b, built *o)
{
    assert_true(n_b <= CBP_MAX_BATCHED);
    memset(o, 0, sizeof *o);
    o->dec = optimized(name, true);
    assert_int_equal(kn_graph_clone(o->dec, &o->pre), KN_OK);
    o->n_b = n_b;
    for (uint32_t k = 0; k < n_b; k++)
        assert_int_equal(kn_graph_clone(o->dec, &o->bg[k]), KN_OK);
    char why[512];
    kn_diag *d = kn_diag_create(NULL, stderr);
    static const uint32_t archs[] = {80, 86, 89, 90};
    kn_compile_cuda_opts co = {NULL, 0, archs, 4, false, false, 0};
    if (!kn_nvrtc_version()) {
        lower_only(o->pre, 1, CBP_CHUNK, &o->pprog, d);
        lower_only(o->dec, 1, 1, &o->dprog, d);
        for (uint32_t k = 0; k < n_b; k++)
            lower_only(o->bg[k], rows[k], toks ? toks[k] : 1, &o->bprog[k], d);
    } else {
        assert_int_equal(
            kn_compile_cuda_decoder(o->dec, o->pre, CBP_CHUNK, &co, d, &o->dprog, &o->pprog, why, sizeof why), KN_OK);
        for (uint32_t k = 0; k < n_b; k++)
            if (kn_compile_cuda_batch(o->dec, o->bg[k], rows[k], toks ? toks[k] : 1, &co, d, &o->bprog[k], why,
                                      sizeof why) != KN_OK)
                fail_msg("%s: batch [%u, %u]: %s", name, rows[k], toks ? toks[k] : 1, why);
    }
    o->path = mb_path(b, mb_tempdir(b), "decoder.plan");
    const kn_cu_program *bp[CBP_MAX_BATCHED];
    for (uint32_t k = 0; k < CBP_MAX_BATCHED; k++)
        bp[k] = &o->bprog[k];
    kn_plan_options po = {"--target cuda", "cuda", &o->dprog, NULL, 0, &o->pprog, bp, n_b};
    assert_int_equal(kn_plan_write(o->dec, &po, o->path, d), KN_OK);
    kn_diag_destroy(d);
}

void built_free(built *o)
{
    kn_cu_program_free(&o->dprog);
    kn_cu_program_free(&o->pprog);
    for (uint32_t k = 0; k < o->n_b; k++) {
        kn_cu_program_free(&o->bprog[k]);
        kn_graph_destroy(o->bg[k]);
    }
    kn_graph_destroy(o->dec);
    kn_graph_destroy(o->pre);
}

int64_t argmax(const float *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        best = v[i] > v[best] ? i : best;
    return best;
}
