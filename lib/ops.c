/* ops.c — CPU f32 operations of the runtime, the references of the CUDA kernels (ops.h). */
#include "ops.h"

#include "pool.h"
#include "vmath.h"

#include "../kernels/mode_cuda.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>

/* OpenBLAS's per-thread buffer on x86-64: BUFFER_SIZE = 32 << 22 bytes (its common_x86_64.h; the
 * 134217728-byte mmap seen in its blas_memory_alloc). When that mmap fails, OpenBLAS retries it
 * forever (memory.c loops until the mapping succeeds), so a BLAS call made once the address
 * space is exhausted never returns. */
#define OPENBLAS_BUFFER_BYTES ((size_t)32 << 22)

/* OpenBLAS at one thread, once, before the first product: the pool (pool.h) is the only
 * parallelism, and a product's bits then depend on its shape only (OpenBLAS's own threads split
 * a product by the thread count, and its tiles round differently) */
static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
static void blas_single(void) { openblas_set_num_threads(1); }

int mode_ops_threads(int n, struct mode_err *err)
{
    pthread_once(&g_blas_once, blas_single);
    if (n <= 0) n = mode_pool_default_threads();
    if (n > MODE_POOL_MAX_THREADS) n = MODE_POOL_MAX_THREADS;
    /* every worker maps an OpenBLAS buffer when it starts (pool.c): room for them, or a clear
     * failure now instead of a worker retrying its mapping forever */
    const size_t probe = (size_t)(n + 1) * OPENBLAS_BUFFER_BYTES;
    void *p = mmap(NULL, probe, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return mode_err_set(err, MODE_EUNAVAILABLE, "out of memory (%zu bytes of address space for the OpenBLAS buffers of %d threads)",
                            probe, n);
    munmap(p, probe);
    return mode_pool_set_threads(n, err);
}


int mode_ops_blas_ready(struct mode_err *err)
{
    /* Room for the calling thread's buffer and as much again for what follows it: if this
     * fails, so would OpenBLAS's own mapping (and a worker thread whose mapping at start
     * failed is spinning already: the space was short then and is no larger now). */
    const size_t probe = 2 * OPENBLAS_BUFFER_BYTES;
    void *p = mmap(NULL, probe, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return mode_err_set(err, MODE_EUNAVAILABLE, "out of memory (%zu bytes of address space for OpenBLAS's buffers)", probe);
    munmap(p, probe);
    /* One product maps this thread's buffer now; OpenBLAS keeps the mapping in its pool and
     * reuses it for every later call from this thread, so no later call needs to map. Its
     * smallest products take a path that maps nothing (small-matrix kernels), hence 192^3
     * (a millisecond); the worker threads mapped their buffers when they started. */
    enum { N = 192 };
    float *a = calloc(2 * N * N, sizeof *a);
    if (!a) return mode_err_oom(err, 2 * N * N * sizeof *a, "a BLAS warm-up");
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, N, 1.0f, a, N, a, N, 0.0f, a + N * N, N);
    free(a);
    return MODE_OK;
}

static enum mode_device g_device = MODE_DEVICE_CPU;
static pthread_mutex_t g_dev_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mode_err g_dev_err;
static int64_t g_fallback;

static int g_gemm_all; /* MODE_GPU_GEMM=all */

enum mode_device mode_ops_device_get(void) { return g_device; }

void mode_ops_device(enum mode_device d)
{
    g_device = d;
    const char *v = getenv("MODE_GPU_GEMM");
    g_gemm_all = v && !strcmp(v, "all");
}

/* worth the copies to the GPU and back (ops.h) */
static bool gemm_on_gpu(int64_t m, int64_t n, int64_t k)
{
    if (g_gemm_all) return true;
    const double flop = 2.0 * (double)m * (double)n * (double)k, bytes = 4.0 * ((double)m * k + (double)n * k + (double)m * n);
    return flop >= (double)MODE_GEMM_CUDA_MIN_FLOP && flop >= MODE_GEMM_CUDA_MIN_INTENSITY * bytes;
}

int mode_ops_device_status(int64_t *n_fallback, struct mode_err *err)
{
    pthread_mutex_lock(&g_dev_lock);
    if (n_fallback) *n_fallback = g_fallback;
    const int rc = g_dev_err.code;
    if (rc && err) *err = g_dev_err;
    pthread_mutex_unlock(&g_dev_lock);
    return rc;
}

void mode_gemm(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans,
               float beta, float *c, int64_t ldc)
{
    if (m > 0 && n > 0 && k > 0 && g_device == MODE_DEVICE_CUDA && gemm_on_gpu(m, n, k)) {
        struct mode_err e = {0};
        if (!mode_gemm_staged_cuda(m, n, k, a, lda, b, ldb, b_trans, beta, c, ldc, &e)) return;
        pthread_mutex_lock(&g_dev_lock);
        if (!g_dev_err.code) g_dev_err = e;
        g_fallback++;
        pthread_mutex_unlock(&g_dev_lock);
    }
    mode_gemm_cpu(m, n, k, a, lda, b, ldb, b_trans, beta, c, ldc);
}

/* A product of at least GEMM_TILE_MIN_FLOP flops is cut into tiles of GEMM_TILE_M rows and
 * GEMM_TILE_N columns of c, one OpenBLAS call (one thread) each, run on the pool. The tiles
 * depend on the shape only, never on the thread count, so the bits of c do not either (OpenBLAS
 * rounds an element differently in another tiling). 256 rows keep OpenBLAS's packing of b a
 * small part of each call (a 1/512 of its flops). */
#define GEMM_TILE_M 256
#define GEMM_TILE_N 2048
#define GEMM_TILE_MIN_FLOP ((int64_t)1 << 22)

struct gemm_job {
    int64_t m, n, k;
    const float *a;
    int64_t lda;
    const float *b;
    int64_t ldb;
    bool b_trans;
    float beta;
    float *c;
    int64_t ldc, tm, tn;
};

static void gemm_tile(void *ctx, int64_t t, int worker)
{
    (void)worker;
    const struct gemm_job *g = ctx;
    const int64_t i0 = t / g->tn * GEMM_TILE_M, j0 = t % g->tn * GEMM_TILE_N;
    const int64_t mi = g->m - i0 < GEMM_TILE_M ? g->m - i0 : GEMM_TILE_M, nj = g->n - j0 < GEMM_TILE_N ? g->n - j0 : GEMM_TILE_N;
    const float *bj = g->b_trans ? g->b + j0 * g->ldb : g->b + j0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, g->b_trans ? CblasTrans : CblasNoTrans, (blasint)mi, (blasint)nj, (blasint)g->k, 1.0f,
                g->a + i0 * g->lda, (blasint)g->lda, bj, (blasint)g->ldb, g->beta, g->c + i0 * g->ldc + j0, (blasint)g->ldc);
}

void mode_gemm_cpu(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans,
                   float beta, float *c, int64_t ldc)
{
    if (m == 0 || n == 0) return;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] *= beta;
        return;
    }
    pthread_once(&g_blas_once, blas_single);
    if (m * n * k < GEMM_TILE_MIN_FLOP / 2 || (m <= GEMM_TILE_M && n <= GEMM_TILE_N)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f, a,
                    (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
        return;
    }
    struct gemm_job g = {m, n, k, a, lda, b, ldb, b_trans, beta, c, ldc, (m + GEMM_TILE_M - 1) / GEMM_TILE_M,
                         (n + GEMM_TILE_N - 1) / GEMM_TILE_N};
    mode_pool_run(g.tm * g.tn, gemm_tile, &g);
}

/* ---- operations on rows, run on the pool in chunks of rows: a row's result does not depend on
 * the chunk it is in, so the chunking may follow the thread count ---- */

struct rows_job {
    void (*op)(const struct rows_job *j, int64_t r0, int64_t r1);
    const float *x, *w, *b;
    float *y;
    float eps;
    int64_t n, d, ld, rows; /* rows: per chunk */
    int n_head, head_dim; /* mode_topk_ref: n_head is k */
    int32_t *idx;
    bool norm;
    void (*flat)(float *x, int64_t n); /* flat_rows: the activation */
};

static void rows_item(void *ctx, int64_t i, int worker)
{
    (void)worker;
    const struct rows_job *j = ctx;
    const int64_t r0 = i * j->rows, r1 = r0 + j->rows < j->n ? r0 + j->rows : j->n;
    j->op(j, r0, r1);
}

/* rows of `cost` floats of work each: serial below ~64K floats, else about four chunks a thread */
static void rows_run(struct rows_job *j, int64_t cost)
{
    if (j->n <= 0) return;
    const int64_t total = j->n * (cost > 0 ? cost : 1), threads = mode_pool_threads();
    if (threads == 1 || total < (1 << 16) || mode_pool_inside()) {
        j->op(j, 0, j->n);
        return;
    }
    int64_t chunks = 4 * threads;
    if (chunks > j->n) chunks = j->n;
    j->rows = (j->n + chunks - 1) / chunks;
    mode_pool_run((j->n + j->rows - 1) / j->rows, rows_item, j);
}

static void rmsnorm_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    const int64_t d = j->d;
    for (int64_t i = r0; i < r1; i++) {
        const float *xi = j->x + i * d;
        float *yi = j->y + i * d;
        float ss = 0;
        for (int64_t c = 0; c < d; c++) ss += xi[c] * xi[c];
        float r = 1.0f / sqrtf(ss / (float)d + j->eps);
        for (int64_t c = 0; c < d; c++) yi[c] = j->w[c] * (xi[c] * r);
    }
}

void mode_rmsnorm_ref(const float *x, const float *w, float eps, int64_t n, int64_t d, float *y)
{
    struct rows_job j = {.op = rmsnorm_rows, .x = x, .w = w, .y = y, .eps = eps, .n = n, .d = d};
    rows_run(&j, d);
}

static void layernorm_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    const int64_t d = j->d;
    for (int64_t i = r0; i < r1; i++) {
        const float *xi = j->x + i * d;
        float *yi = j->y + i * d;
        float mean = 0;
        for (int64_t c = 0; c < d; c++) mean += xi[c];
        mean /= (float)d;
        float var = 0;
        for (int64_t c = 0; c < d; c++) {
            float t = xi[c] - mean;
            var += t * t;
        }
        var /= (float)d;
        float r = 1.0f / sqrtf(var + j->eps);
        for (int64_t c = 0; c < d; c++) yi[c] = (xi[c] - mean) * r * j->w[c] + j->b[c];
    }
}

void mode_layernorm_ref(const float *x, const float *w, const float *b, float eps, int64_t n, int64_t d, float *y)
{
    struct rows_job j = {.op = layernorm_rows, .x = x, .w = w, .b = b, .y = y, .eps = eps, .n = n, .d = d};
    rows_run(&j, d);
}

static void softmax_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    for (int64_t i = r0; i < r1; i++) mode_vsoftmax_row(j->y + i * j->d, j->d);
}

void mode_softmax_ref(float *x, int64_t n, int64_t d)
{
    struct rows_job j = {.op = softmax_rows, .y = x, .n = n, .d = d};
    rows_run(&j, d);
}

static void swiglu_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    const int64_t f = j->d;
    for (int64_t i = r0; i < r1; i++) mode_vsilu_mul(j->x + i * 2 * f, j->x + i * 2 * f + f, j->y + i * f, f);
}

void mode_swiglu_ref(const float *x, int64_t n, int64_t f, float *y)
{
    struct rows_job j = {.op = swiglu_rows, .x = x, .y = y, .n = n, .d = f};
    rows_run(&j, 2 * f);
}

/* the GELUs on a flat array: rows of 4096 (every element is computed alike wherever it sits, vmath.h) */
enum { FLAT_ROW = 4096 };

/* an activation over a flat array (mode_vgelu_tanh, mode_vgelu_erf), in rows of FLAT_ROW */
static void flat_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    const int64_t e0 = r0 * FLAT_ROW, e1 = r1 * FLAT_ROW < j->d ? r1 * FLAT_ROW : j->d;
    j->flat(j->y + e0, e1 - e0);
}

static void flat_run(void (*f)(float *, int64_t), float *x, int64_t n)
{
    struct rows_job j = {.op = flat_rows, .flat = f, .y = x, .n = (n + FLAT_ROW - 1) / FLAT_ROW, .d = n};
    rows_run(&j, FLAT_ROW);
}

void mode_gelu_tanh_ref(float *x, int64_t n) { flat_run(mode_vgelu_tanh, x, n); }

void mode_gelu_erf_ref(float *x, int64_t n) { flat_run(mode_vgelu_erf, x, n); }

static void add_bias_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    const int64_t d = j->d;
    for (int64_t i = r0; i < r1; i++) {
        float *yi = j->y + i * d;
        for (int64_t c = 0; c < d; c++) yi[c] += j->b[c];
    }
}

void mode_add_bias_ref(float *y, const float *b, int64_t n, int64_t d)
{
    struct rows_job j = {.op = add_bias_rows, .b = b, .y = y, .n = n, .d = d};
    rows_run(&j, d);
}

static void rope_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    const int half = j->head_dim / 2;
    float cs[2 * 2048]; /* cos and sin of one row: head_dim <= 4096 (checked by the runtime) */
    MODE_ASSERT(half <= 2048);
    for (int64_t i = r0; i < r1; i++) {
        const float *a = j->x + i * half;
        for (int c = 0; c < half; c++) {
            cs[c] = cosf(a[c]);
            cs[half + c] = sinf(a[c]);
        }
        for (int h = 0; h < j->n_head; h++) {
            float *q = j->y + i * j->ld + (int64_t)h * j->head_dim;
            for (int c = 0; c < half; c++) {
                float x1 = q[c], x2 = q[c + half];
                q[c] = x1 * cs[c] - x2 * cs[half + c];
                q[c + half] = x2 * cs[c] + x1 * cs[half + c];
            }
        }
    }
}

void mode_rope_ref(float *x, int64_t n, int64_t ld, int n_head, int head_dim, const float *ang)
{
    struct rows_job j = {.op = rope_rows, .x = ang, .y = x, .n = n, .ld = ld, .n_head = n_head, .head_dim = head_dim};
    rows_run(&j, (int64_t)n_head * head_dim + 8 * head_dim);
}

void mode_mrope_angles_ref(const int32_t *pos, int64_t n, int head_dim, const int *section, const float *inv_freq, float *ang)
{
    const int half = head_dim / 2;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < half; j++) {
            const int axis = (j % 3 == 1 && j < 3 * section[1]) ? 1 : (j % 3 == 2 && j < 3 * section[2]) ? 2 : 0;
            ang[i * half + j] = (float)pos[axis * n + i] * inv_freq[j];
        }
}

static void topk_rows(const struct rows_job *j, int64_t r0, int64_t r1)
{
    const int n_expert = (int)j->d, k = j->n_head;
    float p[MODE_TOPK_MAX_EXPERTS];
    for (int64_t i = r0; i < r1; i++) {
        const float *l = j->x + i * n_expert;
        memcpy(p, l, (size_t)n_expert * sizeof *p);
        mode_vsoftmax_row(p, n_expert);
        int32_t *ii = j->idx + i * k;
        float *wi = j->y + i * k;
        /* selection: k passes for the largest remaining; stable on ties (lower index first) */
        for (int q = 0; q < k; q++) {
            int best = -1;
            for (int e = 0; e < n_expert; e++) {
                bool taken = false;
                for (int t = 0; t < q && !taken; t++) taken = ii[t] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            ii[q] = best;
            wi[q] = p[best];
        }
        if (j->norm) {
            float sum = 0;
            for (int q = 0; q < k; q++) sum += wi[q];
            for (int q = 0; q < k; q++) wi[q] /= sum;
        }
    }
}

void mode_topk_ref(const float *logits, int64_t n, int n_expert, int k, bool norm, int32_t *idx, float *w)
{
    struct rows_job j = {.op = topk_rows, .x = logits, .y = w, .idx = idx, .norm = norm, .n = n, .d = n_expert, .n_head = k};
    rows_run(&j, (int64_t)n_expert * (k + 2));
}
