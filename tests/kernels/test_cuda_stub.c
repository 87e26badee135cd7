/* test_cuda_stub — without a usable CUDA device (or without CUDA compiled in) every entry point
 * reports "unavailable" (MODE_EUNAVAILABLE, exit 69 in a filter) instead of failing otherwise.
 * And CUDA is loaded only when used (issue 20): the pure query mode_cuda_built maps no CUDA
 * library into the process; in a build with CUDA, the kernels' object (lib/libmode-cuda.so,
 * named by MODE_CUDA_LIB under make check) opens in a program with every symbol it calls back
 * resolved (RTLD_NOW) and defines each entry point kernels/dispatch.c forwards to. */
#include "../../kernels/mode_cuda.h"
#include "../../kernels/mode_cuda_entries.h"
#include "tap.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the line of /proc/self/maps of the first CUDA library mapped, or NULL */
static const char *cuda_mapped(char *line, int n)
{
    static const char *const libs[] = {"/libcuda.so", "/libcudart.so", "/libcublas", "/libcusolver", "/libcusparse", "/libnvJitLink"};
    FILE *f = fopen("/proc/self/maps", "r");
    const char *hit = NULL;
    while (f && !hit && fgets(line, n, f))
        for (size_t i = 0; i < sizeof libs / sizeof *libs; i++)
            if (strstr(line, libs[i])) hit = line;
    if (f) fclose(f);
    return hit;
}

static void open_object(const char *so)
{
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!ok(h != NULL, "%s opens, what it calls back resolved in this program", so)) {
        diag("%s", dlerror());
        return;
    }
    static const char *const names[] = {
#define NAME(kind, R, name, params, args) #name,
        MODE_CUDA_ENTRIES(NAME)
#undef NAME
    };
    int missing = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!dlsym(h, names[i])) diag("missing: %s", names[i]), missing++;
    is_int(missing, 0, "it defines the %zu entry points of mode_cuda_entries.h", sizeof names / sizeof *names);
    int (*built)(void) = NULL;
    void *sym = dlsym(h, "mode_cuda_built");
    memcpy(&built, &sym, sizeof sym);
    ok(built && built() == 1, "its mode_cuda_built says 1");
}

int main(void)
{
    char line[4096];
    int built = mode_cuda_built();
    const char *mapped = cuda_mapped(line, sizeof line);
    ok(!mapped, "mode_cuda_built (%d) maps no CUDA library", built);
    if (mapped) diag("mapped: %s", mapped);

    struct mode_err err = {0};
    if (mode_cuda_available(&err) == MODE_OK) {
        diag("a CUDA device is present: the unavailable path is not reachable");
    } else {
        is_int(err.code, MODE_EUNAVAILABLE, "mode_cuda_available: unavailable");
        has_str(err.msg, "CUDA is unavailable", "... says so");
        diag("%s (CUDA %s compiled in)", err.msg, built ? "is" : "is not");
        void *p = (void *)1;
        is_int(mode_cuda_malloc(&p, 16, &err), MODE_EUNAVAILABLE, "malloc: unavailable");
        ok(p == NULL, "... and gives no pointer");
        is_int(mode_cuda_blas_init(&err), MODE_EUNAVAILABLE, "blas_init: unavailable");
        float x;
        uint16_t h = 0x3f80;
        is_int(mode_convert_cuda(MODE_BF16, &h, 1, &x, NULL, &err), MODE_EUNAVAILABLE, "convert: unavailable");
        has_str(err.msg, "unavailable", "... with a message");
        char desc[64] = "x";
        is_int(mode_cuda_describe(desc, sizeof desc, &err), MODE_EUNAVAILABLE, "describe: unavailable");
        is_str(desc, "", "... and an empty description");
        is_int((long long)mode_moe_work_bytes(&(struct mode_moe_dense){16, 64, 32, NULL, NULL}, 8, 2), 0, "work bytes: 0");
        is_int(mode_qmoe_decode_version(5), -1, "decode version: unchanged (-1)");
    }

    const char *so = getenv("MODE_CUDA_LIB");
    if (built && so && *so)
        open_object(so);
    else
        diag("no kernels' object to open (CUDA %s compiled in; MODE_CUDA_LIB %s)", built ? "is" : "is not", so && *so ? so : "unset");
    return tap_done();
}
