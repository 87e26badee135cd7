/* bench.cu — timing for the benchmarks (mode-bench, tests/bench): event-timed medians of a
 * caller's launch sequence cycling through variants (cold caches), the same replayed from CUDA
 * graphs, the device-to-device copy rate (the byte floor's bandwidth, measured rather than taken
 * from a datasheet), and the device's properties. */
#include "common.cuh"

#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median of t[0..n) (sorted in place) */
static double median_of(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return t[n / 2];
}

extern "C" int mode_cuda_bench(int (*run)(void *ctx, int v, void *stream, struct mode_err *err), void *ctx, int n_var, int iters, double *median_us,
                               double *graph_us, struct mode_err *err)
{
    if (n_var < 1 || iters < 1) return mode_err_set(err, MODE_EUSAGE, "mode_cuda_bench: no variant or no iteration");
    int rc = mode_cuda_available(err);
    if (!rc) rc = mode_cuda_blas_init(err); /* before any capture: run() may call cuBLAS */
    if (rc) return rc;
    double *t = (double *)malloc(sizeof *t * (size_t)iters);
    if (!t) return mode_err_oom(err, sizeof *t * (size_t)iters, "timings");
    cudaStream_t s = NULL;
    cudaEvent_t a = NULL, b = NULL;
    rc = mode_cuda_status(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", __FILE__, __LINE__, err);
    if (!rc) rc = mode_cuda_status(cudaEventCreate(&a), "cudaEventCreate", __FILE__, __LINE__, err);
    if (!rc) rc = mode_cuda_status(cudaEventCreate(&b), "cudaEventCreate", __FILE__, __LINE__, err);
    for (int w = 0; w < 10 && !rc; w++) rc = run(ctx, w % n_var, s, err);
    if (!rc) rc = mode_cuda_status(cudaStreamSynchronize(s), "warm-up", __FILE__, __LINE__, err);
    for (int it = 0; it < iters && !rc; it++) {
        float ms = 0;
        rc = mode_cuda_status(cudaEventRecord(a, s), "cudaEventRecord", __FILE__, __LINE__, err);
        if (!rc) rc = run(ctx, it % n_var, s, err);
        if (!rc) rc = mode_cuda_status(cudaEventRecord(b, s), "cudaEventRecord", __FILE__, __LINE__, err);
        if (!rc) rc = mode_cuda_status(cudaEventSynchronize(b), "cudaEventSynchronize", __FILE__, __LINE__, err);
        if (!rc) rc = mode_cuda_status(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime", __FILE__, __LINE__, err);
        t[it] = ms * 1e3;
    }
    if (!rc) *median_us = median_of(t, iters);
    if (!rc && graph_us) {
        const int ng = n_var < 64 ? n_var : 64;
        cudaGraphExec_t *ge = (cudaGraphExec_t *)calloc((size_t)ng, sizeof *ge);
        if (!ge) rc = mode_err_oom(err, sizeof *ge * (size_t)ng, "graphs");
        for (int v = 0; v < ng && !rc; v++) {
            cudaGraph_t gr = NULL;
            rc = mode_cuda_status(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture", __FILE__, __LINE__, err);
            if (!rc) {
                const int rr = run(ctx, v, s, err);
                const cudaError_t ee = cudaStreamEndCapture(s, &gr); /* always, so that the stream leaves capture mode */
                rc = rr ? rr : mode_cuda_status(ee, "cudaStreamEndCapture", __FILE__, __LINE__, err); /* the first failure's message */
            }
            if (!rc) rc = mode_cuda_status(cudaGraphInstantiate(&ge[v], gr, 0), "cudaGraphInstantiate", __FILE__, __LINE__, err);
            if (gr) cudaGraphDestroy(gr);
        }
        for (int w = 0; w < 10 && !rc; w++) rc = mode_cuda_status(cudaGraphLaunch(ge[w % ng], s), "cudaGraphLaunch", __FILE__, __LINE__, err);
        for (int it = 0; it < iters && !rc; it++) {
            float ms = 0;
            rc = mode_cuda_status(cudaEventRecord(a, s), "cudaEventRecord", __FILE__, __LINE__, err);
            if (!rc) rc = mode_cuda_status(cudaGraphLaunch(ge[it % ng], s), "cudaGraphLaunch", __FILE__, __LINE__, err);
            if (!rc) rc = mode_cuda_status(cudaEventRecord(b, s), "cudaEventRecord", __FILE__, __LINE__, err);
            if (!rc) rc = mode_cuda_status(cudaEventSynchronize(b), "cudaEventSynchronize", __FILE__, __LINE__, err);
            if (!rc) rc = mode_cuda_status(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime", __FILE__, __LINE__, err);
            t[it] = ms * 1e3;
        }
        if (!rc) *graph_us = median_of(t, iters);
        for (int v = 0; ge && v < ng; v++)
            if (ge[v]) cudaGraphExecDestroy(ge[v]);
        free(ge);
    }
    free(t);
    if (s) cudaStreamSynchronize(s);
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    if (s) cudaStreamDestroy(s);
    return rc;
}

extern "C" int mode_cuda_copy_rate(size_t bytes, double *bytes_per_s, struct mode_err *err)
{
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    void *x = NULL, *y = NULL;
    CUDA_CHECK(cudaMalloc(&x, bytes), err);
    rc = mode_cuda_status(cudaMalloc(&y, bytes), "cudaMalloc", __FILE__, __LINE__, err);
    if (!rc) rc = mode_cuda_status(cudaMemset(x, 0x3c, bytes), "cudaMemset", __FILE__, __LINE__, err);
    cudaEvent_t a, b;
    double t[10];
    if (!rc) rc = mode_cuda_status(cudaEventCreate(&a), "cudaEventCreate", __FILE__, __LINE__, err);
    if (!rc) rc = mode_cuda_status(cudaEventCreate(&b), "cudaEventCreate", __FILE__, __LINE__, err);
    for (int i = -2; i < 10 && !rc; i++) {
        float ms = 0;
        cudaEventRecord(a);
        rc = mode_cuda_status(cudaMemcpy(y, x, bytes, cudaMemcpyDeviceToDevice), "cudaMemcpy", __FILE__, __LINE__, err);
        cudaEventRecord(b);
        if (!rc) rc = mode_cuda_status(cudaEventSynchronize(b), "cudaEventSynchronize", __FILE__, __LINE__, err);
        if (!rc) cudaEventElapsedTime(&ms, a, b);
        if (i >= 0) t[i] = ms * 1e-3;
    }
    if (!rc) *bytes_per_s = 2.0 * (double)bytes / median_of(t, 10);
    cudaFree(x), cudaFree(y);
    return rc;
}

extern "C" int mode_cuda_props(size_t *l2_bytes, size_t *mem_bytes, int *n_sm, struct mode_err *err)
{
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, 0), err);
    if (l2_bytes) *l2_bytes = (size_t)p.l2CacheSize;
    if (mem_bytes) *mem_bytes = p.totalGlobalMem;
    if (n_sm) *n_sm = p.multiProcessorCount;
    return MODE_OK;
}
