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

#include <stdbool.h>
#include <stdint.h>

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
/* device to device */
int mode_cuda_copy(void *d_dst, const void *d_src, size_t nbytes, struct mode_err *err);
int mode_cuda_sync(struct mode_err *err);

/* d_dst[i] = (float) d_src[i] for i < n; t is MODE_F32, MODE_F16 or MODE_BF16 (checkpoint
 * weights). Exact: every such value is representable in f32. Reference: mode_convert_ref. */
int mode_convert_cuda(enum mode_dtype t, const void *d_src, size_t n, float *d_dst, void *stream,
                      struct mode_err *err);

/* One MoE layer of GPTQ-packed experts (gptqpack.h layout, g_idx trivial, desc_act false), widths
 * per expert 2, 3, 4, 8, or 16: an expert kept in bf16, its words holding bf16 pairs in the same
 * layout (word w of column n: input 2w in the low half, 2w + 1 in the high half; K/2 words per
 * column; its qzeros and scales offsets unused). Pointers are device pointers for the CUDA entry points and host pointers
 * for the reference mode_qmoe_ref (lib/qmoe.h). off (n_expert, 9): element offsets of gate
 * qweight, qzeros, scales, then up's, then down's, into qweight, qzeros and scales. Dimensions
 * and groups multiples of 32, groups dividing their dimension. */
struct mode_qmoe_layer {
    int n_expert, d, i, group_d, group_i; /* hidden size, expert width, groups of the gate/up and down inputs */
    const uint32_t *qweight, *qzeros;
    const uint16_t *scales;
    const int64_t *off;
    const uint8_t *bits;
};

/* Decode-shaped MoE layer: out (T, D) = Σ_j weights[t][j] · down_e(SiLU(gate_e x_t) · up_e x_t) over
 * the k experts e = experts[t][j]; act is scratch (T·k, I). Two launches. */
int mode_qmoe_decode_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts,
                          const float *d_weights, float *d_act, float *d_out, void *stream, struct mode_err *err);

/* Benchmark helper: median microseconds of mode_qmoe_decode_cuda over `iters` runs, each on the next
 * of n_pool routings (d_experts, d_weights hold n_pool sets of T·k), timed with events after a
 * warm-up; the same for the run captured in a CUDA graph in *graph_us (NULL: not measured). */
int mode_qmoe_bench_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts,
                         const float *d_weights, int n_pool, float *d_act, float *d_out, int iters, double *median_us,
                         double *graph_us, struct mode_err *err);

/* ---- MoE layers for many tokens (moe.cu; host side and dense reference in lib/moe.h) ---- */

/* Dense bf16 experts in the hub layout: gate_up (n_expert, d, 2i) with gate the first i columns,
 * down (n_expert, i, d). */
struct mode_moe_dense {
    int n_expert, d, i;
    const uint16_t *gate_up, *down;
};

/* A routing sorted by expert (mode_moe_route_sort): order, slot and weights on the device, start
 * (n_expert + 1) on the host (the GEMM sizes). */
struct mode_moe_route {
    int T, k;
    const int32_t *order, *slot;
    const float *weights;
    const int64_t *start;
};

/* Device scratch for mode_moe_bf16_cuda: the gathered rows (bf16), the gate/up products (f32),
 * the activations (bf16), the down products (f32), for T·k pairs. */
size_t mode_moe_work_bytes(const struct mode_moe_dense *L, int T, int k);

/* out (T, d) of the dense layer: rows gathered by expert, per expert two cuBLAS GEMMs (bf16 in,
 * f32 accumulation) around SiLU·mul, the routing-weighted combine in slot order (deterministic).
 * The baseline mode-bench measures against, and with mode_qmoe_dequant_cuda the prefill path of
 * packed layers. Reference: mode_moe_dense_ref. Capturable in a CUDA graph. */
int mode_moe_bf16_cuda(const struct mode_moe_dense *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out, void *stream,
                       struct mode_err *err);

/* Every expert of a packed layer (device pointers) into a dense bf16 layer of the same shape
 * (d_gate_up (n_expert, d, 2i), d_down (n_expert, i, d)): levels dequantised with their f16
 * scales and zeros, rounded to bf16; 16-bit experts copied. */
int mode_qmoe_dequant_cuda(const struct mode_qmoe_layer *L, uint16_t *d_gate_up, uint16_t *d_down, void *stream, struct mode_err *err);

/* ---- timing (bench.cu) ---- */

/* Median microseconds of run(ctx, v, stream) over `iters` calls, v cycling through n_var variants
 * (cold inputs: each variant its own routing or weights), timed with events after 10 warm-up
 * calls; with graph_us, the same for CUDA-graph replays (one graph per variant, at most 64). */
int mode_cuda_bench(int (*run)(void *ctx, int v, void *stream, struct mode_err *err), void *ctx, int n_var, int iters, double *median_us,
                    double *graph_us, struct mode_err *err);
/* The device-to-device copy rate of `bytes`-long buffers, bytes read + written per second
 * (median of 10), the ceiling byte floors are computed with. */
int mode_cuda_copy_rate(size_t bytes, double *bytes_per_s, struct mode_err *err);
/* L2 cache, device memory and multiprocessors of device 0. */
int mode_cuda_props(size_t *l2_bytes, size_t *mem_bytes, int *n_sm, struct mode_err *err);

/* ---- matrix products (gemm.cu; reference mode_gemm, lib/ops.h) ---- */

/* C (m, n) = A (m, k) · op(B) + beta·C, row-major as mode_gemm takes them (op(B) = Bᵀ when
 * b_trans: B stored (n, k), an nn.Linear weight), device pointers; cuBLAS SGEMM, f32 accumulation,
 * no TF32. */
int mode_gemm_cuda(int64_t m, int64_t n, int64_t k, const float *d_a, int64_t lda, const float *d_b, int64_t ldb, bool b_trans, float beta,
                   float *d_c, int64_t ldc, void *stream, struct mode_err *err);
/* The same on host matrices, through device buffers kept between calls (synchronous; k >= 1). */
int mode_gemm_staged_cuda(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans, float beta,
                          float *c, int64_t ldc, struct mode_err *err);

/* ---- GPTQ (gptq.cu; lib/gptq.h describes the batch and its reference mode_gptq_ref) ---- */
struct mode_gptq_batch;

/* The batch on the GPU: its arrays are device memory except hidx, bits and info (host). Runs on
 * `stream`; synchronises once (to read the factorisation's status) and returns with the column
 * loop queued: synchronise before reading the outputs. */
int mode_gptq_cuda(struct mode_gptq_batch *b, void *stream, struct mode_err *err);

/* d_H (cols, cols) = alpha · XᵀX of d_X (rows, cols) f32, in double (cuBLAS dsyrk); d_Xd is
 * scratch (rows, cols) f64. Reference: mode_hessian_add / mode_hessian_get (lib/quant.h), where
 * alpha = 2/N. */
int mode_hessian_cuda(const float *d_X, int64_t rows, int64_t cols, double alpha, double *d_Xd, double *d_H, void *stream,
                      struct mode_err *err);

/* The whole job from host memory: each Hessian h from its calibration rows X[h] (n_x[h], cols)
 * as 2/n_x[h] XᵀX, the batch, the outputs back into b's host arrays (b->H and b->work are not
 * used: the device holds them). What mode_gptq_rows (lib/gptq.h) calls for MODE_DEVICE_CUDA. */
int mode_gptq_rows_cuda(struct mode_gptq_batch *b, const float *const *X, const int64_t *n_x, struct mode_err *err);

#ifdef __cplusplus
}
#endif

#endif
