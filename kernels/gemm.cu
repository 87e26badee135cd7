/* gemm.cu — the runtime's f32 matrix products on the GPU through cuBLAS (SGEMM: f32 inputs, f32
 * accumulation, no TF32), row-major as mode_gemm (lib/ops.h) takes them; reference mode_gemm
 * (OpenBLAS); test tests/kernels/test_gemm.c. The same products with bf16 inputs (f32 accumulation
 * and output, tensor cores: cublasGemmEx), reference mode_gemm on the inputs widened to f32
 * (exact), test tests/kernels/test_ops.c.
 *
 * mode_gemm_staged_cuda is what `--device cuda` gives the CPU runtime (mode_ops_device): host
 * matrices copied into device buffers kept between calls (grown as needed, one set per process,
 * behind a mutex), multiplied, the result copied back. Its cost is the transfer: (m·k + k·n +
 * m·n) · 4 bytes over PCIe (or twice m·n with beta ≠ 0) against 2·m·n·k flops; worth it from a
 * few GFLOP up, which is why mode_ops routes only large, dense products here (ops.h). */
#include "blas.cuh"

#include <pthread.h>

/* cuBLAS wants every leading dimension >= 1 even where k = 0 leaves A and B unread (row-major
 * (m, 0) and (n, 0) operands naturally have ld 0: CUBLAS_STATUS_INVALID_VALUE); a valid ld with
 * k >= 1 is >= k >= 1 already, so this changes nothing else */
static int ld_at_least_1(int64_t ld) { return ld < 1 ? 1 : (int)ld; }

/* column-major view of row-major C (m, n) = A (m, k) · op(B): Cᵀ (n, m) = op(B)ᵀ · Aᵀ, where Bᵀ's
 * column-major view is B stored (n, k) (b_trans) or (k, n) */
static int gemm(cublasHandle_t h, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans,
                float beta, float *c, int64_t ldc, struct mode_err *err)
{
    const float one = 1.0f;
    CUBLAS_CHECK(cublasSgemm(h, b_trans ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, b, ld_at_least_1(ldb), a,
                             ld_at_least_1(lda), &beta, c, (int)ldc),
                 err);
    return MODE_OK;
}

/* the same view with bf16 A and B: every bf16 product is exact in f32, only the order of the f32
 * sums differs from SGEMM's */
static int gemm_bf16(cublasHandle_t h, int64_t m, int64_t n, int64_t k, const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                     bool b_trans, float beta, float *c, int64_t ldc, struct mode_err *err)
{
    const float one = 1.0f;
    CUBLAS_CHECK(cublasGemmEx(h, b_trans ? CUBLAS_OP_T : CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)k, &one, b, CUDA_R_16BF, ld_at_least_1(ldb),
                              a, CUDA_R_16BF, ld_at_least_1(lda), &beta, c, CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 err);
    return MODE_OK;
}

static int check_dims(const char *fn, int64_t m, int64_t n, int64_t k, struct mode_err *err)
{
    if (m < 0 || n < 0 || k < 0 || m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
        return mode_err_set(err, MODE_EUSAGE, "%s: %lld x %lld x %lld does not fit cuBLAS's int dimensions", fn, (long long)m, (long long)n,
                            (long long)k);
    return MODE_OK;
}

extern "C" int mode_gemm_cuda(int64_t m, int64_t n, int64_t k, const float *d_a, int64_t lda, const float *d_b, int64_t ldb, bool b_trans,
                              float beta, float *d_c, int64_t ldc, void *stream, struct mode_err *err)
{
    int rc = check_dims("mode_gemm_cuda", m, n, k, err);
    if (rc || m == 0 || n == 0) return rc;
    cublasHandle_t h;
    if ((rc = mode_cuda_blas((cudaStream_t)stream, &h, NULL, err))) return rc;
    return gemm(h, m, n, k, d_a, lda, d_b, ldb, b_trans, beta, d_c, ldc, err);
}

extern "C" int mode_gemm_bf16_cuda(int64_t m, int64_t n, int64_t k, const uint16_t *d_a, int64_t lda, const uint16_t *d_b, int64_t ldb,
                                   bool b_trans, float beta, float *d_c, int64_t ldc, void *stream, struct mode_err *err)
{
    int rc = check_dims("mode_gemm_bf16_cuda", m, n, k, err);
    if (rc || m == 0 || n == 0) return rc;
    cublasHandle_t h;
    if ((rc = mode_cuda_blas((cudaStream_t)stream, &h, NULL, err))) return rc;
    return gemm_bf16(h, m, n, k, d_a, lda, d_b, ldb, b_trans, beta, d_c, ldc, err);
}

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static float *g_buf[3];
static size_t g_cap[3];

static int reserve(int i, size_t floats, struct mode_err *err)
{
    if (floats <= g_cap[i]) return MODE_OK;
    cudaFree(g_buf[i]);
    g_buf[i] = NULL, g_cap[i] = 0;
    size_t want = floats + floats / 4; /* some headroom: the next layer's products are alike */
    CUDA_CHECK(cudaMalloc((void **)&g_buf[i], want * sizeof(float)), err);
    g_cap[i] = want;
    return MODE_OK;
}

static int staged(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans, float beta, float *c,
                  int64_t ldc, struct mode_err *err)
{
    cublasHandle_t h;
    int rc = mode_cuda_blas(NULL, &h, NULL, err);
    if (rc) return rc;
    const int64_t br = b_trans ? n : k, bc = b_trans ? k : n; /* B as stored: br rows of bc */
    if ((rc = reserve(0, (size_t)(m * k), err)) || (rc = reserve(1, (size_t)(br * bc), err)) || (rc = reserve(2, (size_t)(m * n), err))) return rc;
    /* packed on the device: lda = k, ldb = bc, ldc = n */
    CUDA_CHECK(cudaMemcpy2D(g_buf[0], sizeof(float) * (size_t)k, a, sizeof(float) * (size_t)lda, sizeof(float) * (size_t)k, (size_t)m,
                            cudaMemcpyHostToDevice),
               err);
    CUDA_CHECK(cudaMemcpy2D(g_buf[1], sizeof(float) * (size_t)bc, b, sizeof(float) * (size_t)ldb, sizeof(float) * (size_t)bc, (size_t)br,
                            cudaMemcpyHostToDevice),
               err);
    if (beta != 0.0f)
        CUDA_CHECK(cudaMemcpy2D(g_buf[2], sizeof(float) * (size_t)n, c, sizeof(float) * (size_t)ldc, sizeof(float) * (size_t)n, (size_t)m,
                                cudaMemcpyHostToDevice),
                   err);
    if ((rc = gemm(h, m, n, k, g_buf[0], k, g_buf[1], bc, b_trans, beta, g_buf[2], n, err))) return rc;
    CUDA_CHECK(cudaMemcpy2D(c, sizeof(float) * (size_t)ldc, g_buf[2], sizeof(float) * (size_t)n, sizeof(float) * (size_t)n, (size_t)m,
                            cudaMemcpyDeviceToHost),
               err);
    return MODE_OK;
}

extern "C" int mode_gemm_staged_cuda(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans,
                                     float beta, float *c, int64_t ldc, struct mode_err *err)
{
    int rc = check_dims("mode_gemm_staged_cuda", m, n, k, err);
    if (rc || m == 0 || n == 0) return rc;
    if (k == 0) return mode_err_set(err, MODE_EUSAGE, "mode_gemm_staged_cuda: k = 0 (the CPU path scales C)");
    pthread_mutex_lock(&g_lock);
    rc = staged(m, n, k, a, lda, b, ldb, b_trans, beta, c, ldc, err);
    pthread_mutex_unlock(&g_lock);
    return rc;
}
