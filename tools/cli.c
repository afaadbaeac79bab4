/* Shared by the kiln command and kiln-conformance. */
#include "cli.h"

int kn_cli_exit_code(kn_status s)
{
    switch (s) {
    case KN_OK: return KN_EXIT_OK;
    case KN_ERR_INVALID:
    case KN_ERR_UNSUPPORTED:
    case KN_ERR_IO:
    case KN_ERR_NOT_FOUND:
    case KN_ERR_LIMIT: return KN_EXIT_BAD_INPUT;
    default: return KN_EXIT_INTERNAL;
    }
}
