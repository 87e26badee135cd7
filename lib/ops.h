/* ops.h — the CPU compute operations of the model runtime, in f32. Each is the C reference of
 * the CUDA kernel of the same name (mode_<op>_ref here, mode_<op>_cuda in kernels/mode_cuda.h).
 *
 * Conventions: row-major; x (n, d) means n rows of d floats; operations on rows are independent.
 * The arithmetic follows transformers' PyTorch code in f32 (RMSNorm and LayerNorm reduce in
 * f32, softmax subtracts the row maximum, GELU variants as torch defines them); softmax, SwiGLU
 * and the GELUs take their exp and erf from vmath.h (vectorised, accuracy stated there: within
 * 1.05 and 1.28 ulp where glibc's are within 0.5 and 0.97). GEMMs go to
 * OpenBLAS (one thread per call; a large product cut into tiles fixed by its shape, run on the
 * pool's threads: pool.h), or the large ones to cuBLAS (mode_ops_device). Operations on rows run
 * on the pool too; every result is the same bits at any thread count. Nothing here allocates except where a scratch argument is absent and said
 * otherwise.
 */
#ifndef MODE_OPS_H
#define MODE_OPS_H

#include "mode.h"

#include <stdbool.h>

#define MODE_TOPK_MAX_EXPERTS 4096 /* = MODE_MAX_EXPERTS, the config limit */

/* The process's threads (pool.h): n in all (0: the CPUs it may run on), OpenBLAS at one thread
 * called from each. MODE_EUNAVAILABLE ("out of memory ...") when the address space cannot hold
 * the threads' OpenBLAS buffers, or a thread cannot be started. Call from the main thread before
 * the first product. */
int mode_ops_threads(int n, struct mode_err *err);

/* Makes sure that no later BLAS call can hang for want of memory: OpenBLAS retries a failed
 * mapping of its working buffer forever, so the calling thread's buffer is mapped now, while
 * there is room. MODE_EUNAVAILABLE ("out of memory ...") when the address space left is too small.
 * Call once, from the thread that will make the BLAS calls, before the first of them. */
int mode_ops_blas_ready(struct mode_err *err);

/* Where mode_gemm computes (process-wide, as the thread count): MODE_DEVICE_CUDA sends through
 * cuBLAS (mode_gemm_staged_cuda: host matrices copied to the GPU and back) every product of at
 * least MODE_GEMM_CUDA_MIN_FLOP flops doing at least MODE_GEMM_CUDA_MIN_INTENSITY flops per byte
 * copied — over PCIe (~25 GB/s) that is ~6 TFLOP/s or more, several times a CPU; thinner
 * products (attention scores, small models) stay with OpenBLAS. MODE_GPU_GEMM=all in the
 * environment sends every product (tests). The choice depends on the shape only, so equal shapes
 * always take the same path (the runtime's row-masked expert overrides rely on it). A product the
 * GPU fails (out of device memory, say) is computed on the CPU; the first such failure and their
 * count are kept for mode_ops_device_status. */
#define MODE_GEMM_CUDA_MIN_FLOP ((int64_t)1 << 26)
#define MODE_GEMM_CUDA_MIN_INTENSITY 256
void mode_ops_device(enum mode_device d);
/* the device mode_ops_device set (MODE_DEVICE_CPU until then) */
enum mode_device mode_ops_device_get(void);
/* MODE_OK, or the first GPU failure's status and message (*n_fallback products fell back). */
int mode_ops_device_status(int64_t *n_fallback, struct mode_err *err);

/* C (m, n) = A (m, k) · op(B) + beta·C, op(B) = B^T when b_trans (B stored (n, k), an nn.Linear
 * weight) else B (B stored (k, n)). ldb is B's row stride. */
void mode_gemm(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans,
               float beta, float *c, int64_t ldc);
/* The same on the CPU whatever the device (OpenBLAS): mode_gemm's arithmetic off the GPU. */
void mode_gemm_cpu(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans,
                   float beta, float *c, int64_t ldc);

/* y = x / sqrt(mean(x^2) + eps) * w, per row of d. In place when y == x. */
void mode_rmsnorm_ref(const float *x, const float *w, float eps, int64_t n, int64_t d, float *y);
/* y = (x - mean) / sqrt(var + eps) * w + b, per row (biased variance, torch.nn.LayerNorm). */
void mode_layernorm_ref(const float *x, const float *w, const float *b, float eps, int64_t n, int64_t d, float *y);
/* Softmax of each row of d, in place (mode_vsoftmax_row: a row of −inf becomes zeros). */
void mode_softmax_ref(float *x, int64_t n, int64_t d);
/* x = silu(x[:, :f]) * x[:, f:] for rows of 2f, written to y (n, f). */
void mode_swiglu_ref(const float *x, int64_t n, int64_t f, float *y);
/* In place GELU: tanh approximation (gelu_pytorch_tanh, computed as x·σ(2z), its form without
 * cancellation) or exact erf form (nn.GELU()). */
void mode_gelu_tanh_ref(float *x, int64_t n);
void mode_gelu_erf_ref(float *x, int64_t n);
/* y += b for each row of d. */
void mode_add_bias_ref(float *y, const float *b, int64_t n, int64_t d);

/* Rotary embedding, rotate-half form: for each of n rows of x (row stride ld; n_head heads of
 * head_dim each, contiguous), with per-row angles ang (n, head_dim/2):
 * x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin, x1 and x2 the halves of each head; cos and sin
 * are f32 cosf/sinf of the angles (torch: q*cos + rotate_half(q)*sin). */
void mode_rope_ref(float *x, int64_t n, int64_t ld, int n_head, int head_dim, const float *ang);

/* Interleaved MRoPE angles (Qwen3-VL): ang (n, head_dim/2) from positions pos (3, n), row axis
 * holding pos[axis*n + i] (t, h, w), and inv_freq (head_dim/2). Frequency j takes the h position
 * when j % 3 == 1 and j < 3*section[1], the w position when j % 3 == 2 and j < 3*section[2], else
 * t (section[0] is what is left: the config makes the three sum to head_dim/2);
 * ang = (float)pos · inv_freq[j], one f32 product. */
void mode_mrope_angles_ref(const int32_t *pos, int64_t n, int head_dim, const int *section, const float *inv_freq, float *ang);

/* Router: softmax over n_expert logits (f32), the k largest probabilities (ties: the lower expert
 * index first, as torch.topk on CPU returns them), renormalised to sum 1 when norm. */
void mode_topk_ref(const float *logits, int64_t n, int n_expert, int k, bool norm, int32_t *idx, float *w);

#endif
