/* Shared by the kiln command and kiln-conformance. */
#include "cli.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* "123", "64K", "2M", "1G" (binary units) → bytes; false when malformed. */
bool kn_cli_parse_size(const char *s, uint64_t *out)
{
    char *e;
    unsigned long long v = strtoull(s, &e, 10);
    if (e == s || *s == '-' || v == 0)
        return false;
    uint64_t mul = 1;
    if (*e == 'K' || *e == 'k')
        mul = 1ull << 10;
    else if (*e == 'M' || *e == 'm')
        mul = 1ull << 20;
    else if (*e == 'G' || *e == 'g')
        mul = 1ull << 30;
    if (mul > 1) {
        e++;
        if (strcmp(e, "iB") == 0 || strcmp(e, "B") == 0)
            e += strlen(e);
    }
    if (*e || v > UINT64_MAX / mul)
        return false;
    *out = v * mul;
    return true;
}
