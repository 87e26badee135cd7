/* pool.h — the process's threads: one pool of workers that every parallel loop of the library
 * runs on, the only parallelism there is (issue 21).
 *
 * Policy: `--threads N` of a filter (default: the CPUs the process may run on, sched_getaffinity)
 * sets the pool to N threads, the caller included; OpenBLAS is set to one thread and called from
 * the pool's threads, each product on its own tile, so that its idle workers never spin beside
 * ours and the cores are never oversubscribed. A loop splits its work into items whose results
 * do not depend on which thread computes them or on how many there are: the results of a run are
 * the same bits at any thread count (mode_gemm's tiles are fixed by the shape, not by N).
 *
 * Use: mode_pool_run(n, fn, ctx) calls fn(ctx, i, worker) once for every i in [0, n), on all the
 * pool's threads (the caller's is worker 0), and returns when every call has; items are handed
 * out one at a time, in ascending order. A call from inside an item runs its items on the calling
 * thread alone (nested loops are serial). mode_pool_scratch(worker, bytes) is a buffer kept for
 * that worker across calls (grown, never shrunk), for an item's temporaries.
 *
 * Errors: mode_pool_set_threads fails (MODE_EUNAVAILABLE) when no thread can be created; the pool
 * keeps the threads it has. Not reentrant from two caller threads at once (one pool, one owner:
 * the filter's main thread). */
#ifndef MODE_POOL_H
#define MODE_POOL_H

#include "mode.h"

#include <stdbool.h>
#include <stddef.h>

/* The most threads the pool takes: OpenBLAS's MAX_THREADS in Debian's build (64) is unrelated, as
 * OpenBLAS runs one thread per call here. */
#define MODE_POOL_MAX_THREADS 1024

/* The CPUs this process may run on (sched_getaffinity), at least 1. */
int mode_pool_default_threads(void);
/* n threads in all, the caller's included (n <= 0: mode_pool_default_threads()); starts or stops
 * workers as needed. Each new worker makes one small OpenBLAS product at its start, so that its
 * buffer is mapped then (OpenBLAS retries a failed mapping forever: see ops.c). */
int mode_pool_set_threads(int n, struct mode_err *err);
/* the threads in the pool, the caller's included (1 before mode_pool_set_threads) */
int mode_pool_threads(void);

typedef void (*mode_pool_fn)(void *ctx, int64_t i, int worker);
void mode_pool_run(int64_t n, mode_pool_fn fn, void *ctx);
/* true inside an item of mode_pool_run */
bool mode_pool_inside(void);
/* the calling thread's worker number (0: the caller of mode_pool_run, and any thread not the pool's) */
int mode_pool_worker(void);
/* a buffer of at least bytes for worker (0 .. threads − 1), kept across calls; NULL when it
 * cannot be had */
void *mode_pool_scratch(int worker, size_t bytes);

#endif
