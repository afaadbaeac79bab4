/* Output files: what kiln may replace. */
#include "ir/ir.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

kn_status kn_check_output_path(const char *path, kn_diag *d)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return KN_OK; /* nothing there (yet): the write reports a missing folder */
        kn_diag_add(d, KN_ERROR, "%s: %s", path, strerror(errno));
        return KN_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        kn_diag_add(d, KN_ERROR, "%s exists and is not a regular file (a device, pipe or folder): not replacing it",
                    path);
        return KN_ERR_IO;
    }
    return KN_OK;
}
