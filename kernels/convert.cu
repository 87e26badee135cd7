/* convert.cu — checkpoint element types (bf16, f16, f32) to f32 on the device: the first step of
 * every weight upload. Reference: mode_convert_ref (lib/core.c); test: tests/kernels/test_convert.c.
 * Memory-bound: 2 bytes read + 4 written per element for the 16-bit types. */
#include "common.cuh"

#include <cuda_fp16.h>
#include <stdint.h>

/* bf16 is the top half of an f32; f16 goes through the hardware conversion (exact) */
__global__ void convert_bf16_kernel(const uint16_t *__restrict__ src, float *__restrict__ dst, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

__global__ void convert_f16_kernel(const uint16_t *__restrict__ src, float *__restrict__ dst, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = __half2float(__ushort_as_half(src[i]));
}

static int launch_convert(enum mode_dtype t, const void *src, size_t n, float *dst, cudaStream_t stream, struct mode_err *err)
{
    if (n == 0) return MODE_OK;
    if (t == MODE_F32) {
        CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream), err);
        return MODE_OK;
    }
    const int threads = 256;
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 65535u * 16u) blocks = 65535u * 16u; /* grid-stride loop covers the rest */
    if (t == MODE_BF16) convert_bf16_kernel<<<(unsigned)blocks, threads, 0, stream>>>((const uint16_t *)src, dst, n);
    else convert_f16_kernel<<<(unsigned)blocks, threads, 0, stream>>>((const uint16_t *)src, dst, n);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

extern "C" int mode_convert_cuda(enum mode_dtype t, const void *d_src, size_t n, float *d_dst, void *stream,
                                 struct mode_err *err)
{
    if (t != MODE_F32 && t != MODE_F16 && t != MODE_BF16)
        return mode_err_set(err, MODE_EUSAGE, "mode_convert_cuda: dtype %s is not bf16, f16 or f32", mode_dtype_name(t));
    if (n && (!d_src || !d_dst)) return mode_err_set(err, MODE_EUSAGE, "mode_convert_cuda: null pointer");
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    return launch_convert(t, d_src, n, d_dst, (cudaStream_t)stream, err);
}
