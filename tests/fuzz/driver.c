/* driver.c — runs a fuzz target over files or directories of inputs without libFuzzer (make
 * check): every input must come back (no crash, no sanitizer report). Prints TAP. */
#include "fuzz.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int n;

static void run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("not ok %d - %s: cannot open\n", ++n, path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *buf = malloc((size_t)size + 1);
    size_t got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, got);
    free(buf);
    printf("ok %d - %s\n", ++n, path);
    fflush(stdout);
}

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) return;
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return;
    }
    DIR *d = opendir(path);
    struct dirent *e;
    char **names = NULL;
    size_t k = 0;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        names = realloc(names, (k + 1) * sizeof *names);
        names[k] = malloc(strlen(path) + strlen(e->d_name) + 2);
        sprintf(names[k++], "%s/%s", path, e->d_name);
    }
    if (d) closedir(d);
    qsort(names, k, sizeof *names, cmp);
    for (size_t i = 0; i < k; i++) {
        run_path(names[i]);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) run_path(argv[i]);
    printf("1..%d\n", n);
    return 0;
}
