/* common.cuh — checked CUDA calls for the kernels' C entry points: every runtime call and every
 * launch is mapped to a mode status with file and line (llm.c's cudaCheck, as a return). */
#ifndef MODE_CUDA_COMMON_CUH
#define MODE_CUDA_COMMON_CUH

#include "mode_cuda.h"

#include <cuda_runtime.h>

static inline int mode_cuda_status(cudaError_t e, const char *what, const char *file, int line, struct mode_err *err)
{
    if (e == cudaSuccess) return MODE_OK;
    int code = (e == cudaErrorMemoryAllocation || e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver)
                   ? MODE_EUNAVAILABLE
                   : MODE_EINTERNAL;
    return mode_err_set(err, code, "CUDA: %s: %s (%s:%d)", what, cudaGetErrorString(e), file, line);
}

#define CUDA_CHECK(call, err) \
    do { \
        int rc_ = mode_cuda_status((call), #call, __FILE__, __LINE__, (err)); \
        if (rc_) return rc_; \
    } while (0)

/* after a <<<launch>>> */
#define CUDA_CHECK_LAUNCH(err) CUDA_CHECK(cudaGetLastError(), (err))

#ifdef __CUDACC__
/* the zero point of output n in group gi of packed qzeros (gptqpack.h: per group a bit stream of
 * N values of `bits` bits in N·bits/32 words; v2, as stored) */
__device__ __forceinline__ float mode_zero_at(const uint32_t *__restrict__ qz, int N, int bits, int gi, int n)
{
    const int64_t bit = (int64_t)n * bits, wpr = (int64_t)N * bits / 32;
    const uint32_t *row = qz + gi * wpr;
    const int64_t w = bit / 32, s = bit % 32;
    uint64_t v = row[w];
    if (s + bits > 32) v |= (uint64_t)row[w + 1] << 32;
    return (float)((v >> s) & ((1u << bits) - 1));
}
#endif

#endif
