/* blas.cuh — cuBLAS and cuSOLVER for the kernels that need them (gptq.cu, ops.cu): one handle of
 * each per process, made on first use and bound to the caller's stream per call; their statuses
 * mapped to mode statuses with file and line, as CUDA_CHECK does for the runtime. */
#ifndef MODE_CUDA_BLAS_CUH
#define MODE_CUDA_BLAS_CUH

#include "common.cuh"

#include <cublas_v2.h>
#include <cusolverDn.h>
#include <pthread.h>

static inline int mode_cublas_status(cublasStatus_t s, const char *what, const char *file, int line, struct mode_err *err)
{
    if (s == CUBLAS_STATUS_SUCCESS) return MODE_OK;
    const int code = s == CUBLAS_STATUS_ALLOC_FAILED || s == CUBLAS_STATUS_NOT_INITIALIZED ? MODE_EUNAVAILABLE : MODE_EINTERNAL;
    return mode_err_set(err, code, "cuBLAS: %s: %s (%s:%d)", what, cublasGetStatusString(s), file, line);
}

static inline int mode_cusolver_status(cusolverStatus_t s, const char *what, const char *file, int line, struct mode_err *err)
{
    if (s == CUSOLVER_STATUS_SUCCESS) return MODE_OK;
    const int code = s == CUSOLVER_STATUS_ALLOC_FAILED || s == CUSOLVER_STATUS_NOT_INITIALIZED ? MODE_EUNAVAILABLE : MODE_EINTERNAL;
    return mode_err_set(err, code, "cuSOLVER: %s: status %d (%s:%d)", what, (int)s, file, line);
}

#define CUBLAS_CHECK(call, err) \
    do { \
        int rc_ = mode_cublas_status((call), #call, __FILE__, __LINE__, (err)); \
        if (rc_) return rc_; \
    } while (0)
#define CUSOLVER_CHECK(call, err) \
    do { \
        int rc_ = mode_cusolver_status((call), #call, __FILE__, __LINE__, (err)); \
        if (rc_) return rc_; \
    } while (0)

/* The process's handles, bound to `stream`. Defined in gptq.cu. */
int mode_cuda_blas(cudaStream_t stream, cublasHandle_t *blas, cusolverDnHandle_t *solver, struct mode_err *err);

#endif
