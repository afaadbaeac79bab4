/* See cuda_paged_util.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "cuda_paged_util.h"
#include "kiln/cuda.h"
#include "runtime/cuda/plan.h"

#include <dlfcn.h>
#include <string.h>

bool uses_kernel(const kn_cu_program *p, const char *entry)
{
    for (uint32_t i = 0; i < p->n_steps; i++)
        if (p->steps[i].kind == KN_CU_STEP_LAUNCH && strcmp(p->kernels[p->steps[i].kernel].entry, entry) == 0)
            return true;
    return false;
}

uint32_t plan_launch_steps(const kn_graph *plan)
{
    kn_cuda_plan p;
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_int_equal(kn_cuda_plan_read(plan, plan->info->plan_base, plan->info->plan_size, NULL, d, &p), KN_OK);
    uint32_t n = 0;
    for (uint32_t i = 0; i < p.n_steps; i++)
        n += p.steps[i].kind == KN_CU_STEP_LAUNCH;
    kn_cuda_plan_free(&p);
    kn_diag_destroy(d);
    return n;
}

/* The session's side of the cache (the mock counts launches, it does not
 * run kernels): pools of opts.kv_blocks, the binding checked before
 * anything is enqueued, table and past staged and copied inside the
 * device allocations, everything freed. */

/* The mock's control entry, as loaded by the driver loader. */
mock_ctl_fn mock_ctl(void)
{
    kn_diag *d = kn_diag_create(NULL, stderr);
    assert_true(kn_cuda_available(d));
    kn_diag_destroy(d);
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    assert_non_null(lib);
    mock_ctl_fn ctl;
    *(void **)&ctl = dlsym(lib, "kn_mock_control");
    if (!ctl)
        fail_msg("libcuda.so.1 is not the kiln mock");
    dlclose(lib);
    return ctl;
}
