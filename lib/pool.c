/* pool.c — the process's worker threads (pool.h).
 *
 * One job at a time: the caller publishes (fn, ctx, n) under the mutex, bumps the generation and
 * wakes every worker; each thread, the caller's included, takes the next item with an atomic
 * counter until none is left; the caller then waits until every worker has reported back. The
 * workers sleep on a condition variable between jobs: an idle pool costs no CPU. */
#include "pool.h"

#include <cblas.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct worker {
    pthread_t tid;
    void *scratch;
    size_t scratch_n;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    int n;            /* threads, the caller's included */
    int starting;     /* workers not yet through their warm-up */
    uint64_t gen;     /* bumped per job */
    mode_pool_fn fn;
    void *ctx;
    int64_t n_items;
    atomic_llong next;
    int busy;         /* workers still in the current job */
    struct worker w[MODE_POOL_MAX_THREADS];
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 1, 0, 0, NULL, NULL, 0, 0, 0, {{0}}};

static __thread bool t_inside;
static __thread int t_worker; /* 0: the caller's thread */

int mode_pool_default_threads(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set)) return 1;
    int n = CPU_COUNT(&set);
    return n < 1 ? 1 : n > MODE_POOL_MAX_THREADS ? MODE_POOL_MAX_THREADS : n;
}

int mode_pool_threads(void) { return P.n; }

bool mode_pool_inside(void) { return t_inside; }

int mode_pool_worker(void) { return t_worker; }

static void work(int me)
{
    t_inside = true;
    for (;;) {
        const int64_t i = atomic_fetch_add(&P.next, 1);
        if (i >= P.n_items) break;
        P.fn(P.ctx, i, me);
    }
    t_inside = false;
}

static void *worker_main(void *arg)
{
    const int me = (int)(intptr_t)arg;
    t_worker = me;
    /* this thread's OpenBLAS buffer mapped now, while the pool is being made (ops.c's
     * mode_ops_blas_ready has probed the address space for it), not inside some later product */
    enum { N = 192 };
    float *a = calloc(2 * N * N, sizeof *a);
    if (a) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, N, 1.0f, a, N, a, N, 0.0f, a + N * N, N);
    free(a);
    pthread_mutex_lock(&P.mu);
    uint64_t seen = P.gen;
    if (--P.starting == 0) pthread_cond_broadcast(&P.done);
    for (;;) {
        while (P.gen == seen && me < P.n) pthread_cond_wait(&P.wake, &P.mu);
        if (me >= P.n) break;
        seen = P.gen;
        pthread_mutex_unlock(&P.mu);
        work(me);
        pthread_mutex_lock(&P.mu);
        if (--P.busy == 0) pthread_cond_broadcast(&P.done);
    }
    pthread_mutex_unlock(&P.mu);
    return NULL;
}

static void stop_from(int n)
{
    pthread_mutex_lock(&P.mu);
    const int old = P.n;
    P.n = n;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    for (int i = n; i < old; i++) {
        pthread_join(P.w[i].tid, NULL);
        free(P.w[i].scratch);
        memset(&P.w[i], 0, sizeof P.w[i]);
    }
}

int mode_pool_set_threads(int n, struct mode_err *err)
{
    MODE_ASSERT(!t_inside);
    if (n <= 0) n = mode_pool_default_threads();
    if (n > MODE_POOL_MAX_THREADS) n = MODE_POOL_MAX_THREADS;
    if (n < P.n) {
        stop_from(n);
        return MODE_OK;
    }
    int rc = MODE_OK;
    pthread_mutex_lock(&P.mu);
    const int old = P.n;
    for (int i = old; i < n; i++) {
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, (size_t)2 << 20);
        int e = pthread_create(&P.w[i].tid, &at, worker_main, (void *)(intptr_t)i);
        pthread_attr_destroy(&at);
        if (e) {
            rc = mode_err_set(err, MODE_EUNAVAILABLE, "cannot start worker thread %d of %d: %s", i + 1, n, strerror(e));
            break;
        }
        P.n = i + 1, P.starting++;
    }
    while (P.starting) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
    return rc;
}

void mode_pool_run(int64_t n, mode_pool_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (t_inside || P.n == 1 || n == 1) {
        const bool was = t_inside;
        t_inside = true;
        for (int64_t i = 0; i < n; i++) fn(ctx, i, t_worker);
        t_inside = was;
        return;
    }
    pthread_mutex_lock(&P.mu);
    P.fn = fn, P.ctx = ctx, P.n_items = n;
    atomic_store(&P.next, 0);
    P.busy = P.n - 1;
    P.gen++;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.mu);
    work(0);
    pthread_mutex_lock(&P.mu);
    while (P.busy) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
}

void *mode_pool_scratch(int worker, size_t bytes)
{
    MODE_ASSERT(worker >= 0 && worker < P.n);
    struct worker *w = &P.w[worker];
    if (w->scratch_n < bytes) {
        free(w->scratch);
        const size_t n = bytes + bytes / 4;
        w->scratch = malloc(n);
        w->scratch_n = w->scratch ? n : 0;
    }
    return w->scratch;
}

/* At exit (a run that ends through exit(): the tests, and every filter under AddressSanitizer):
 * the workers joined and the buffers freed. */
__attribute__((destructor)) static void pool_end(void)
{
    if (P.n > 1) stop_from(1);
    free(P.w[0].scratch);
    P.w[0].scratch = NULL, P.w[0].scratch_n = 0;
}
