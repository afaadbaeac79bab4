/* Fuzz target: bytes → the .pb (TensorProto) and .npy tensor readers of
 * tools/tensor_io.c, both on every input. */
#include "fuzz_common.h"

#include "tools/tensor_io.h"

static void check(kn_status s, kn_rt_tensor *t, kn_diag *d, const char *what)
{
    if (s == KN_OK) {
        if (!t)
            FUZZ_BUG(d, "%s: OK without a tensor", what);
        size_t nb;
        if (t->dtype != KN_STRING && (kn_dtype_nbytes(t->dtype, t->numel, &nb) != KN_OK || nb != t->nbytes))
            FUZZ_BUG(d, "%s: byte size %zu does not match %lld elements", what, t->nbytes, (long long)t->numel);
    } else if (t || kn_diag_count(d, KN_ERROR) == 0) {
        FUZZ_BUG(d, "%s: failed (%s) without a message or left a tensor", what, kn_status_str(s));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const kn_allocator *a = kn_default_allocator();
    kn_diag *d = kn_diag_create(NULL, NULL);
    if (!d)
        return 0;
    kn_rt_tensor *t = NULL;
    char *name = NULL;
    kn_status s = kn_tensor_read_pb_memory(data, size, "fuzz.pb", a, d, &t, &name);
    check(s, t, d, "pb");
    if (s == KN_OK && !name)
        FUZZ_BUG(d, "pb: no name");
    kn_rt_tensor_free(a, t);
    kn_mem_free(a, name);
    t = NULL;
    s = kn_tensor_read_npy_memory(data, size, "fuzz.npy", a, d, &t);
    check(s, t, d, "npy");
    kn_rt_tensor_free(a, t);
    kn_diag_destroy(d);
    return 0;
}
