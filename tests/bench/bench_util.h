/* bench_util.h — the clock and medians of the benchmark programs (tests/bench/). Header-only. */
#ifndef MODE_BENCH_UTIL_H
#define MODE_BENCH_UTIL_H

#include <stdlib.h>
#include <time.h>

/* monotonic seconds */
static inline double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* qsort order of doubles, ascending */
static inline int cmp(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the median of t[0..n) (t is sorted in place) */
static inline double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp);
    return t[n / 2];
}

#endif
