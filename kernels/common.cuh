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

#endif
