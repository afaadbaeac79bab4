/* kiln-conformance: see conformance.c. */
#include "conformance.h"

int main(int argc, char **argv)
{
    kn_conformance_opts o = {1e-3, 1e-7, NULL, NULL};
    return kn_conformance_main(argc, argv, &o);
}
