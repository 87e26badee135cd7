/* mode_cuda.h — entry points of the CUDA kernels in kernels/, callable from C.
 *
 * Each op lives in kernels/<op>.cu in three layers: the __global__ kernel, a launcher taking a
 * cudaStream_t, and the plain-C entry mode_<op>_cuda() below, which validates its arguments and
 * returns a status (mode.h). Its CPU reference is mode_<op>_ref in lib/ and a randomized test in
 * tests/kernels/ compares the two (skipped where no GPU is present).
 *
 * Built without nvcc (make CUDA=0, or nvcc not found), every entry point is a stub from
 * kernels/stub.c that returns MODE_EUNAVAILABLE with a message saying so; so is every entry when
 * the build has CUDA but the machine has no usable device (mode_cuda_available says which).
 *
 * Pointers named d_* are device memory; `stream` is a cudaStream_t passed as void* (NULL = the
 * default stream), so that this header needs no CUDA header.
 */
#ifndef MODE_CUDA_H
#define MODE_CUDA_H

#include "../lib/mode.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build has CUDA kernels compiled in (nvcc found at build time), else 0. */
int mode_cuda_built(void);
/* MODE_OK when a CUDA device can be used; MODE_EUNAVAILABLE with the reason otherwise. */
int mode_cuda_available(struct mode_err *err);
/* Name and memory of device 0, e.g. "NVIDIA H100 80GB HBM3, 79.1 GiB". */
int mode_cuda_describe(char *buf, size_t n, struct mode_err *err);

int mode_cuda_malloc(void **d_p, size_t nbytes, struct mode_err *err);
void mode_cuda_free(void *d_p);
int mode_cuda_upload(void *d_dst, const void *src, size_t nbytes, struct mode_err *err);
int mode_cuda_download(void *dst, const void *d_src, size_t nbytes, struct mode_err *err);
int mode_cuda_sync(struct mode_err *err);

/* d_dst[i] = (float) d_src[i] for i < n; t is MODE_F32, MODE_F16 or MODE_BF16 (checkpoint
 * weights). Exact: every such value is representable in f32. Reference: mode_convert_ref. */
int mode_convert_cuda(enum mode_dtype t, const void *d_src, size_t n, float *d_dst, void *stream,
                      struct mode_err *err);

#ifdef __cplusplus
}
#endif

#endif
