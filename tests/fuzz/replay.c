/* Replays fuzz inputs without the fuzzer engine: every regular file in the
 * folders (or the files) given on the command line is fed once to the
 * target's LLVMFuzzerTestOneInput. Linked with each harness so that ctest
 * runs the seed and regression corpora in the ordinary (and sanitizer)
 * builds. Exit 0 when every input returned; a bug aborts. */
#include "fuzz_common.h"

#include <dirent.h>
#include <sys/stat.h>

static int feed(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || (len > 0 && fread(buf, 1, (size_t)len, f) != (size_t)len)) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        fclose(f);
        free(buf);
        return 1;
    }
    fclose(f);
    if (getenv("KN_REPLAY_VERBOSE"))
        fprintf(stderr, "replay: %s\n", path);
    LLVMFuzzerTestOneInput(buf, (size_t)len);
    free(buf);
    (*n)++;
    return 0;
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv)
{
    size_t n = 0;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            printf("skipped: %s is absent\n", argv[i]);
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            bad |= feed(argv[i], &n);
            continue;
        }
        DIR *dir = opendir(argv[i]);
        if (!dir) {
            fprintf(stderr, "replay: cannot open %s\n", argv[i]);
            return 1;
        }
        char **names = NULL;
        size_t nn = 0;
        struct dirent *e;
        while ((e = readdir(dir))) {
            if (e->d_name[0] == '.')
                continue;
            char **nl = realloc(names, (nn + 1) * sizeof *names);
            char *p = malloc(strlen(argv[i]) + strlen(e->d_name) + 2);
            if (!nl || !p) {
                fprintf(stderr, "replay: out of memory\n");
                return 1;
            }
            names = nl;
            sprintf(p, "%s/%s", argv[i], e->d_name);
            names[nn++] = p;
        }
        closedir(dir);
        if (nn)
            qsort(names, nn, sizeof *names, cmp);
        for (size_t k = 0; k < nn; k++) {
            if (stat(names[k], &st) == 0 && S_ISREG(st.st_mode))
                bad |= feed(names[k], &n);
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %zu inputs\n", n);
    return bad;
}
