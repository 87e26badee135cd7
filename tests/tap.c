/* tap.c — TAP output for the C tests (tap.h). */
#include "tap.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_run, n_fail;
static char tmpdir[256];

static void vreport(int cond, const char *fmt, va_list ap)
{
    n_run++;
    if (!cond) n_fail++;
    printf("%sok %d - ", cond ? "" : "not ", n_run);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
}

int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cond, fmt, ap);
    va_end(ap);
    return cond;
}

int is_int(long long got, long long want, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(got == want, fmt, ap);
    va_end(ap);
    if (got != want) diag("got %lld, want %lld", got, want);
    return got == want;
}

int is_str(const char *got, const char *want, const char *fmt, ...)
{
    int c = got && want && !strcmp(got, want);
    va_list ap;
    va_start(ap, fmt);
    vreport(c, fmt, ap);
    va_end(ap);
    if (!c) diag("got  '%s'\n  want '%s'", got ? got : "(null)", want ? want : "(null)");
    return c;
}

int has_str(const char *got, const char *want, const char *fmt, ...)
{
    int c = got && want && strstr(got, want);
    va_list ap;
    va_start(ap, fmt);
    vreport(c, fmt, ap);
    va_end(ap);
    if (!c) diag("'%s'\n  does not contain '%s'", got ? got : "(null)", want ? want : "(null)");
    return c;
}

void diag(const char *fmt, ...)
{
    va_list ap;
    printf("# ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

void tap_skip_all(const char *reason)
{
    printf("1..0 # SKIP %s\n", reason);
    exit(0);
}

int tap_done(void)
{
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) diag("could not remove %s", tmpdir);
    }
    printf("1..%d\n", n_run);
    if (n_fail) diag("%d of %d failed", n_fail, n_run);
    return n_fail ? 1 : 0;
}

const char *fixture(const char *rel)
{
    static char buf[4096];
    const char *root = getenv("MODE_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : "tests/fixtures", rel);
    return buf;
}

const char *tap_tmpdir(void)
{
    if (!tmpdir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tmpdir, sizeof tmpdir, "%s/mode-test-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return tmpdir;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

void tap_seed(uint64_t seed)
{
    rng_state = seed;
    diag("seed %llu", (unsigned long long)seed);
}

uint64_t tap_rand(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double tap_rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)a[i] - b[i];
        num += d * d, den += (double)b[i] * b[i];
    }
    return isnan(num) ? INFINITY : den > 0 ? sqrt(num / den) : sqrt(num);
}
