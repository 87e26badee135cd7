/* bench_vmath — nanoseconds per element of lib/vmath.c's loops against the scalar libm loops they
 * replaced in lib/ops.c (glibc expf, tanhf, erff), on one thread, arrays of N floats that stay in
 * L2 (the runtime's rows are processed one block at a time). The thread's CPU time, not the wall
 * clock (the machines this runs on are shared: another process's time slices are not counted);
 * median of REPEATS runs of ROUNDS passes each. A program that prints a table: never a test.
 *
 *   build/bench/bench_vmath [N]     (default 16384)
 */
#include "../../lib/vmath.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { REPEATS = 7, ROUNDS = 50 };

static int64_t n;
static float *x, *u, *y;

static void libm_exp(void)
{
    for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]);
}
static void vec_exp(void) { mode_vexp(x, y, n); }
static void libm_erf(void)
{
    for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]);
}
static void vec_erf(void) { mode_verf(x, y, n); }
static void libm_silu(void)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i])) * u[i];
}
static void vec_silu(void) { mode_vsilu_mul(x, u, y, n); }
static void libm_gelu_tanh(void)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    }
}
static void vec_gelu_tanh(void)
{
    memcpy(y, x, (size_t)n * sizeof *y);
    mode_vgelu_tanh(y, n);
}
static void libm_gelu_erf(void)
{
    for (int64_t i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
}
static void vec_gelu_erf(void)
{
    memcpy(y, x, (size_t)n * sizeof *y);
    mode_vgelu_erf(y, n);
}
/* rows of 1024, as an attention block's */
static void libm_softmax(void)
{
    memcpy(y, x, (size_t)n * sizeof *y);
    for (int64_t r = 0; r + 1024 <= n; r += 1024) {
        float *row = y + r, mx = -INFINITY, s = 0;
        for (int j = 0; j < 1024; j++) mx = row[j] > mx ? row[j] : mx;
        for (int j = 0; j < 1024; j++) s += row[j] = expf(row[j] - mx);
        const float inv = 1.0f / s;
        for (int j = 0; j < 1024; j++) row[j] *= inv;
    }
}
static void vec_softmax(void)
{
    memcpy(y, x, (size_t)n * sizeof *y);
    for (int64_t r = 0; r + 1024 <= n; r += 1024) mode_vsoftmax_row(y + r, 1024);
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double ns_per(void (*f)(void))
{
    double t[REPEATS];
    for (int r = 0; r < REPEATS; r++) {
        const double t0 = cpu_now();
        for (int k = 0; k < ROUNDS; k++) f();
        t[r] = (cpu_now() - t0) / ROUNDS / (double)n * 1e9;
    }
    return median(t, REPEATS);
}

int main(int argc, char **argv)
{
    n = argc > 1 ? atoll(argv[1]) : 16384;
    if (n < 1024) n = 1024;
    x = malloc((size_t)n * sizeof *x), u = malloc((size_t)n * sizeof *u), y = malloc((size_t)n * sizeof *y);
    if (!x || !u || !y) return 1;
    uint64_t s = 1;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 16 - 8); /* [-8, 8) */
        u[i] = (float)((double)(s >> 40) / 16777216.0);
    }
    const struct {
        const char *name;
        void (*libm)(void), (*vec)(void);
    } ops[] = {{"exp", libm_exp, vec_exp},
               {"erf", libm_erf, vec_erf},
               {"silu(g)*u", libm_silu, vec_silu},
               {"gelu-tanh", libm_gelu_tanh, vec_gelu_tanh},
               {"gelu-erf", libm_gelu_erf, vec_gelu_erf},
               {"softmax (rows of 1024)", libm_softmax, vec_softmax}};
    printf("%-24s %10s %11s %8s   (%lld elements, x in [-8, 8), thread CPU time, median of %d)\n", "op", "libm ns/el", "vmath ns/el", "speedup",
           (long long)n, REPEATS);
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        const double a = ns_per(ops[i].libm), b = ns_per(ops[i].vec);
        printf("%-24s %10.2f %11.2f %7.1fx\n", ops[i].name, a, b, a / b);
    }
    free(x), free(u), free(y);
    return 0;
}
