/* cuda_runtime.h of the host double (kernels/host/host.c): the few CUDA runtime types and calls
 * the composing .cu files use (layer.cu), on host memory, so that g++ compiles them into a test
 * build without a GPU. A launch `k<<<grid, block, shm, stream>>>(args)` is rewritten by the
 * Makefile into `mode_host_launch(k, grid, block, shm, stream)(args)`: every block and thread
 * in turn, one at a time — right only for kernels without __syncthreads, shared memory or warp
 * collectives (the host build refuses a .cu that has them). Not the CUDA API: no errors are
 * ever produced, copies are memcpy, events read the clock. */
#ifndef MODE_HOST_CUDA_RUNTIME_H
#define MODE_HOST_CUDA_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

enum cudaError { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorNoDevice = 100, cudaErrorInsufficientDriver = 35 };
typedef enum cudaError cudaError_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
typedef struct mode_host_stream *cudaStream_t;
typedef struct mode_host_event {
    double t;
} *cudaEvent_t;

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

static inline const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "host double error"; }
static inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind, cudaStream_t)
{
    if (n) memmove(dst, src, n);
    return cudaSuccess;
}
static inline cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = (cudaEvent_t)calloc(1, sizeof **e);
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}
static inline cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free(e);
    return cudaSuccess;
}
static inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->t = ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
    return cudaSuccess;
}
static inline cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}

/* every block, then every thread of it, in order */
template <class K> struct mode_host_launcher {
    K k;
    dim3 g, b;
    template <class... A> void operator()(A... a) const
    {
        gridDim = g, blockDim = b;
        for (unsigned bz = 0; bz < g.z; bz++)
            for (unsigned by = 0; by < g.y; by++)
                for (unsigned bx = 0; bx < g.x; bx++)
                    for (unsigned tz = 0; tz < b.z; tz++)
                        for (unsigned ty = 0; ty < b.y; ty++)
                            for (unsigned tx = 0; tx < b.x; tx++) {
                                blockIdx = dim3(bx, by, bz), threadIdx = dim3(tx, ty, tz);
                                k(a...);
                            }
    }
};
template <class K> static inline mode_host_launcher<K> mode_host_launch(K k, dim3 g, dim3 b, size_t = 0, cudaStream_t = nullptr)
{
    return mode_host_launcher<K>{k, g, b};
}

#endif
