/* ops.c — CPU f32 operations of the runtime, the references of the CUDA kernels (ops.h). */
#include "ops.h"

#include "vmath.h"

#include "../kernels/mode_cuda.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>

void mode_ops_threads(int n)
{
    if (n > 0) openblas_set_num_threads(n);
}

/* OpenBLAS's per-thread buffer on x86-64: BUFFER_SIZE = 32 << 22 bytes (its common_x86_64.h; the
 * 134217728-byte mmap seen in its blas_memory_alloc). When that mmap fails, OpenBLAS retries it
 * forever (memory.c loops until the mapping succeeds), so a BLAS call made once the address
 * space is exhausted never returns. */
#define OPENBLAS_BUFFER_BYTES ((size_t)32 << 22)

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

void mode_gemm_cpu(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans,
                   float beta, float *c, int64_t ldc)
{
    if (m == 0 || n == 0) return;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] *= beta;
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_trans ? CblasTrans : CblasNoTrans, (blasint)m, (blasint)n, (blasint)k, 1.0f, a,
                (blasint)lda, b, (blasint)ldb, beta, c, (blasint)ldc);
}

void mode_rmsnorm_ref(const float *x, const float *w, float eps, int64_t n, int64_t d, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * d;
        float *yi = y + i * d;
        float ss = 0;
        for (int64_t j = 0; j < d; j++) ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / (float)d + eps);
        for (int64_t j = 0; j < d; j++) yi[j] = w[j] * (xi[j] * r);
    }
}

void mode_layernorm_ref(const float *x, const float *w, const float *b, float eps, int64_t n, int64_t d, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        const float *xi = x + i * d;
        float *yi = y + i * d;
        float mean = 0;
        for (int64_t j = 0; j < d; j++) mean += xi[j];
        mean /= (float)d;
        float var = 0;
        for (int64_t j = 0; j < d; j++) {
            float t = xi[j] - mean;
            var += t * t;
        }
        var /= (float)d;
        float r = 1.0f / sqrtf(var + eps);
        for (int64_t j = 0; j < d; j++) yi[j] = (xi[j] - mean) * r * w[j] + b[j];
    }
}

void mode_softmax_ref(float *x, int64_t n, int64_t d)
{
    for (int64_t i = 0; i < n; i++) mode_vsoftmax_row(x + i * d, d);
}

void mode_swiglu_ref(const float *x, int64_t n, int64_t f, float *y)
{
    for (int64_t i = 0; i < n; i++) mode_vsilu_mul(x + i * 2 * f, x + i * 2 * f + f, y + i * f, f);
}

void mode_gelu_tanh_ref(float *x, int64_t n) { mode_vgelu_tanh(x, n); }

void mode_gelu_erf_ref(float *x, int64_t n) { mode_vgelu_erf(x, n); }

void mode_add_bias_ref(float *y, const float *b, int64_t n, int64_t d)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++) y[i * d + j] += b[j];
}

void mode_rope_ref(float *x, int64_t n, int64_t ld, int n_head, int head_dim, const float *ang)
{
    int half = head_dim / 2;
    float cs[2 * 2048]; /* cos and sin of one row: head_dim <= 4096 (checked by the runtime) */
    MODE_ASSERT(half <= 2048);
    for (int64_t i = 0; i < n; i++) {
        const float *a = ang + i * half;
        for (int j = 0; j < half; j++) {
            cs[j] = cosf(a[j]);
            cs[half + j] = sinf(a[j]);
        }
        for (int h = 0; h < n_head; h++) {
            float *q = x + i * ld + (int64_t)h * head_dim;
            for (int j = 0; j < half; j++) {
                float x1 = q[j], x2 = q[j + half];
                q[j] = x1 * cs[j] - x2 * cs[half + j];
                q[j + half] = x2 * cs[j] + x1 * cs[half + j];
            }
        }
    }
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

void mode_topk_ref(const float *logits, int64_t n, int n_expert, int k, bool norm, int32_t *idx, float *w)
{
    float p[MODE_TOPK_MAX_EXPERTS];
    for (int64_t i = 0; i < n; i++) {
        const float *l = logits + i * n_expert;
        memcpy(p, l, (size_t)n_expert * sizeof *p);
        mode_softmax_ref(p, 1, n_expert);
        int32_t *ii = idx + i * k;
        float *wi = w + i * k;
        /* selection: k passes for the largest remaining; stable on ties (lower index first) */
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < n_expert; e++) {
                bool taken = false;
                for (int t = 0; t < j && !taken; t++) taken = ii[t] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            ii[j] = best;
            wi[j] = p[best];
        }
        if (norm) {
            float s = 0;
            for (int j = 0; j < k; j++) s += wi[j];
            for (int j = 0; j < k; j++) wi[j] /= s;
        }
    }
}
