/* device.cu — device discovery and memory for the kernels' C callers (mode_cuda.h). */
#include "common.cuh"

#include <stdio.h>

extern "C" int mode_cuda_built(void) { return 1; }

extern "C" int mode_cuda_available(struct mode_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky error */
        return mode_err_set(err, MODE_EUNAVAILABLE, "CUDA is unavailable: %s", cudaGetErrorString(e));
    }
    if (n == 0) return mode_err_set(err, MODE_EUNAVAILABLE, "CUDA is unavailable: no device");
    return MODE_OK;
}

extern "C" int mode_cuda_describe(char *buf, size_t n, struct mode_err *err)
{
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, 0), err);
    snprintf(buf, n, "%s, %.1f GiB, sm_%d%d", p.name, (double)p.totalGlobalMem / (1u << 30), p.major, p.minor);
    return MODE_OK;
}

extern "C" int mode_cuda_malloc(void **d_p, size_t nbytes, struct mode_err *err)
{
    *d_p = NULL;
    CUDA_CHECK(cudaMalloc(d_p, nbytes ? nbytes : 1), err);
    return MODE_OK;
}

extern "C" void mode_cuda_free(void *d_p)
{
    if (d_p) cudaFree(d_p);
}

extern "C" int mode_cuda_upload(void *d_dst, const void *src, size_t nbytes, struct mode_err *err)
{
    CUDA_CHECK(cudaMemcpy(d_dst, src, nbytes, cudaMemcpyHostToDevice), err);
    return MODE_OK;
}

extern "C" int mode_cuda_download(void *dst, const void *d_src, size_t nbytes, struct mode_err *err)
{
    CUDA_CHECK(cudaMemcpy(dst, d_src, nbytes, cudaMemcpyDeviceToHost), err);
    return MODE_OK;
}

extern "C" int mode_cuda_copy(void *d_dst, const void *d_src, size_t nbytes, struct mode_err *err)
{
    CUDA_CHECK(cudaMemcpy(d_dst, d_src, nbytes, cudaMemcpyDeviceToDevice), err);
    return MODE_OK;
}

extern "C" int mode_cuda_sync(struct mode_err *err)
{
    CUDA_CHECK(cudaDeviceSynchronize(), err);
    return MODE_OK;
}
