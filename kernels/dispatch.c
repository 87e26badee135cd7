/* dispatch.c — the CUDA entry points (mode_cuda.h) in libmode-core when the build has CUDA: each one
 * forwards to the kernels of lib/libmode-cuda.so, which the first call that needs them opens with
 * dlopen. Linked into the programs, cudart, cuBLAS and cuSOLVER cost every run 265 MB resident and
 * ~1 GB of address space before main, mode-cat's included; opened here, a run on the CPU maps none
 * of them, and a machine without the CUDA libraries still runs every program on the CPU.
 *
 * The object: $MODE_CUDA_LIB when set, else <the executable's directory>/../lib/libmode-cuda.so
 * (bin/ beside lib/ in the build tree), else <that directory>/../lib/mode/libmode-cuda.so (where
 * make install puts it). Before opening it (a few hundred MB of libraries), two checks that map
 * nothing big, so that --device auto on a machine without a GPU stays on the CPU with no CUDA
 * library loaded: a device node of the NVIDIA driver exists (/dev/nvidiactl; /dev/dxg under WSL),
 * and the driver's libcuda.so.1 opens. A device hidden otherwise (CUDA_VISIBLE_DEVICES=) is found
 * out by the object's own mode_cuda_available, after the libraries are loaded. The first attempt
 * decides for the whole process (pthread_once): after a failure every entry returns
 * MODE_EUNAVAILABLE with the same reason, naming the path tried and what dlopen said.
 *
 * The object calls back into libmode-core (mode_err_set, mode_gptq_check, ...): the programs
 * export those functions (kernels/callbacks.syms), so the object uses the program's single copy
 * of each and of any state it keeps. mode_cuda_built is answered here and loads nothing. */
#include "mode_cuda.h"
#include "mode_cuda_entries.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SO_NAME "libmode-cuda.so"

/* POSIX dlsym returns functions as void *: the table is filled by copying the pointer's bytes */
_Static_assert(sizeof(void *) == sizeof(void (*)(void)), "function pointers the size of void *");

static struct {
#define SLOT(kind, R, name, params, args) R(*name) params;
    MODE_CUDA_ENTRIES(SLOT)
#undef SLOT
} fn;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static struct mode_err load_err; /* MODE_OK once fn is filled, else why not (set once, then only read) */

/* the object's path into path[n]: $MODE_CUDA_LIB, or the first that exists beside the executable */
static int locate(char *path, size_t n)
{
    const char *env = getenv("MODE_CUDA_LIB");
    if (env && *env) {
        if (access(env, R_OK)) return mode_err_set(&load_err, MODE_EUNAVAILABLE, "%s (MODE_CUDA_LIB): %s", env, strerror(errno));
        if ((size_t)snprintf(path, n, "%s", env) >= n) return mode_err_set(&load_err, MODE_EUNAVAILABLE, "MODE_CUDA_LIB: path too long");
        return MODE_OK;
    }
    char dir[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (len <= 0)
        return mode_err_set(&load_err, MODE_EUNAVAILABLE, "/proc/self/exe: %s (MODE_CUDA_LIB can name " SO_NAME ")",
                            len ? strerror(errno) : "empty");
    dir[len] = 0;
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    static const char *const beside[] = {"/../lib/" SO_NAME, "/../lib/mode/" SO_NAME};
    for (size_t i = 0; i < sizeof beside / sizeof *beside; i++)
        if ((size_t)snprintf(path, n, "%s%s", dir, beside[i]) < n && !access(path, R_OK)) return MODE_OK;
    return mode_err_set(&load_err, MODE_EUNAVAILABLE, "%s%s and %s%s: not found (MODE_CUDA_LIB can name another place)", dir, beside[0],
                        dir, beside[1]);
}

static void load(void)
{
    char path[PATH_MAX + sizeof "/../lib/mode/" SO_NAME];
    if (locate(path, sizeof path)) return;
    if (access("/dev/nvidiactl", F_OK) && access("/dev/dxg", F_OK)) {
        mode_err_set(&load_err, MODE_EUNAVAILABLE, "no NVIDIA device (neither /dev/nvidiactl nor, under WSL, /dev/dxg exists)");
        return;
    }
    /* kept open: cudart opens it again when loaded below */
    if (!dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL)) {
        mode_err_set(&load_err, MODE_EUNAVAILABLE, "no NVIDIA driver: %s", dlerror());
        return;
    }
    /* RTLD_NOW: a callback the program does not export fails here, with its name, not mid-run */
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        mode_err_set(&load_err, MODE_EUNAVAILABLE, "%s%s%s", strstr(e, path) ? "" : path, strstr(e, path) ? "" : ": ", e);
        return;
    }
    void *sym;
#define LOOKUP(kind, R, name, params, args) \
    if (!(sym = dlsym(h, #name))) goto missing; \
    memcpy(&fn.name, &sym, sizeof sym);
    MODE_CUDA_ENTRIES(LOOKUP)
#undef LOOKUP
    return;
missing: /* left open: closing would unload the CUDA libraries it brought, for nothing */
    mode_err_set(&load_err, MODE_EUNAVAILABLE, "%s (the object comes from another build of mode: make rebuilds it)", dlerror());
}

/* MODE_OK when the table is filled; else MODE_EUNAVAILABLE in err (may be NULL) saying why */
static int loaded(struct mode_err *err)
{
    int rc = pthread_once(&load_once, load);
    if (rc) return mode_err_set(err, MODE_EINTERNAL, "CUDA: pthread_once: %s", strerror(rc));
    if (load_err.code) return mode_err_set(err, load_err.code, "CUDA is unavailable: %s", load_err.msg);
    return MODE_OK;
}

int mode_cuda_built(void) { return 1; }

#define FORWARD(kind, R, name, params, args) FORWARD_##kind(R, name, params, args)
#define FORWARD_STATUS(R, name, params, args) \
    R name params \
    { \
        int rc = loaded(err); \
        return rc ? rc : fn.name args; \
    }
#define FORWARD_SIZE(R, name, params, args) \
    R name params { return loaded(NULL) ? 0 : fn.name args; }
#define FORWARD_HAND(R, name, params, args)
MODE_CUDA_ENTRIES(FORWARD)

int mode_cuda_describe(char *buf, size_t n, struct mode_err *err)
{
    if (n) buf[0] = 0;
    int rc = loaded(err);
    return rc ? rc : fn.mode_cuda_describe(buf, n, err);
}

int mode_cuda_malloc(void **d_p, size_t nbytes, struct mode_err *err)
{
    *d_p = NULL;
    int rc = loaded(err);
    return rc ? rc : fn.mode_cuda_malloc(d_p, nbytes, err);
}

/* a non-NULL pointer came from mode_cuda_malloc: the object is loaded */
void mode_cuda_free(void *d_p)
{
    if (d_p && !loaded(NULL)) fn.mode_cuda_free(d_p);
}

int mode_qmoe_decode_version(int v) { return loaded(NULL) ? -1 : fn.mode_qmoe_decode_version(v); }
