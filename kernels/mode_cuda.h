/* mode_cuda.h — entry points of the CUDA kernels in kernels/, callable from C.
 *
 * Each op lives in kernels/<op>.cu in three layers: the __global__ kernel, a launcher taking a
 * cudaStream_t, and the plain-C entry mode_<op>_cuda() below, which validates its arguments and
 * returns a status (mode.h). Its CPU reference is mode_<op>_ref in lib/ and a randomized test in
 * tests/kernels/ compares the two (skipped where no GPU is present).
 *
 * Built with nvcc, the kernels are a shared object, lib/libmode-cuda.so, and the entry points that
 * programs link (libmode-core) are forwarders from kernels/dispatch.c that open it on first use:
 * a program that never asks for a device loads no CUDA library. Built without nvcc (make CUDA=0,
 * or nvcc not found), every entry point is a stub from kernels/stub.c that returns
 * MODE_EUNAVAILABLE with a message saying so; so is every entry when the build has CUDA but the
 * object, the driver or a usable device is missing (mode_cuda_available says which).
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

/* 1 when this build has CUDA kernels compiled in (nvcc found at build time), else 0; loads nothing. */
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
/* Makes the process's cuBLAS and cuSOLVER handles and cuBLAS's workspace now, if not yet made.
 * They are otherwise made by the first call that needs them, which must not be inside a stream
 * capture (it allocates device memory): such a call fails with MODE_EINTERNAL saying so. */
int mode_cuda_blas_init(struct mode_err *err);

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

/* ---- forward-pass operations (ops.cu; references in lib/ops.h, same names with _ref) ----
 * f32 device arrays, row-major, rows independent; in place where the reference is. Reductions
 * run in another order than the reference: results agree to a few f32 ulps (tests name the
 * tolerance), never bit for bit; adds, the bias, the bf16 rounding and the MRoPE angles are
 * exact. Each call queues its launch on `stream` and returns (a kernel's own failure shows at
 * the next synchronising call); sizes and pointers are checked first (MODE_EUSAGE), an empty
 * operation (no rows, no elements) returns MODE_OK without launching. */
/* d_y (n, d) may be d_x */
int mode_rmsnorm_cuda(const float *d_x, const float *d_w, float eps, int64_t n, int64_t d, float *d_y, void *stream, struct mode_err *err);
/* d_y (n, d) may be d_x */
int mode_layernorm_cuda(const float *d_x, const float *d_w, const float *d_b, float eps, int64_t n, int64_t d, float *d_y, void *stream,
                        struct mode_err *err);
int mode_softmax_cuda(float *d_x, int64_t n, int64_t d, void *stream, struct mode_err *err);
/* d_x (n, 2f), d_y (n, f), not overlapping */
int mode_swiglu_cuda(const float *d_x, int64_t n, int64_t f, float *d_y, void *stream, struct mode_err *err);
/* tanh_approx: gelu_pytorch_tanh, else the exact erf form */
int mode_gelu_cuda(float *d_x, int64_t n, bool tanh_approx, void *stream, struct mode_err *err);
int mode_add_bias_cuda(float *d_y, const float *d_b, int64_t n, int64_t d, void *stream, struct mode_err *err);
/* d_y[i] += d_x[i], i < n (the residual); d_x may be d_y */
int mode_add_cuda(float *d_y, const float *d_x, int64_t n, void *stream, struct mode_err *err);
/* d_dst[i] = bf16(d_src[i]) rounded to nearest even (mode_f32_to_bf16), i < n */
int mode_round_bf16_cuda(const float *d_src, size_t n, uint16_t *d_dst, void *stream, struct mode_err *err);
/* in place on the n_head·head_dim leading floats of each of n rows of stride ld; d_ang (n, head_dim/2) */
int mode_rope_cuda(float *d_x, int64_t n, int64_t ld, int n_head, int head_dim, const float *d_ang, void *stream, struct mode_err *err);
/* Interleaved MRoPE angles (n, head_dim/2) from positions d_pos (3, n) (t, h, w rows) and
 * d_inv_freq (head_dim/2); section (host, 3) as the config gives it. Ref: mode_mrope_angles_ref. */
int mode_mrope_angles_cuda(const int32_t *d_pos, int64_t n, int head_dim, const int *section, const float *d_inv_freq, float *d_ang,
                           void *stream, struct mode_err *err);
/* Router: the k experts of largest logit per row (ties: lower index first), their softmax
 * probabilities over all n_expert, renormalised to sum 1 when norm; d_idx and d_w (n, k) in
 * descending order as mode_topk_ref returns them. The choice is made on the logits (softmax is
 * monotone), so it equals mode_topk_ref's unless two probabilities round equal in f32 (logits
 * within an ulp or so, or both far enough below the maximum to underflow). A row with no logit
 * above −inf, or with a NaN or +inf, gives experts 0..k−1 as the reference does (weights 0 or
 * NaN). n_expert ≤ MODE_TOPK_MAX_EXPERTS, 1 ≤ k ≤ min(32, n_expert). */
int mode_topk_cuda(const float *d_logits, int64_t n, int n_expert, int k, bool norm, int32_t *d_idx, float *d_w, void *stream,
                   struct mode_err *err);
/* C (m, n) = A (m, k) · op(B) + beta·C as mode_gemm_cuda, A and B bf16 (d_a, d_b hold uint16
 * bf16 bits), C f32, f32 accumulation on tensor cores (cublasGemmEx, CUBLAS_COMPUTE_32F). */
int mode_gemm_bf16_cuda(int64_t m, int64_t n, int64_t k, const uint16_t *d_a, int64_t lda, const uint16_t *d_b, int64_t ldb, bool b_trans,
                        float beta, float *d_c, int64_t ldc, void *stream, struct mode_err *err);

/* ---- attention (attn.cu; reference mode_attention_ref, lib/attn.h) ---- */
struct mode_attn_shape {
    int n_head, n_head_kv, head_dim;    /* GQA: head h reads kv head h / (n_head / n_head_kv) */
    int64_t ld_q, ld_k, ld_v, ld_o;     /* row strides in floats; a row holds its heads contiguously */
    bool causal;                        /* text: row r sees columns ≤ r of its segment; vision: all */
    float scale;                        /* on the scores before the softmax (head_dim^-0.5) */
};
/* o = softmax(scale · q kᵀ, causal mask) · v within each segment of rows [seg[s], seg[s+1])
 * (seg on the host, n_seg + 1 ascending offsets; rows outside every segment are not written).
 * With d_sel (one byte per row) non-NULL, d_colsum (one float per row) receives for each row c
 * of a segment Σ over heads h and selected rows r of that segment of p_h[r][c], the softmax
 * probability (0 for c > r when causal); rows of no segment get 0. The raw sum: the caller
 * divides (the key-token score is its mean over heads and selected rows). Exact softmax (row
 * maximum subtracted), f32 throughout.
 * Precisely: d_colsum is zeroed over rows [0, seg[n_seg]) (so rows before seg[0] read 0) and
 * nothing past seg[n_seg] is written; its sums are atomic additions in no fixed order, so their
 * last bits may differ from run to run (o is deterministic). head_dim even and ≤ 256 here (any
 * ≥ 1 in the reference); n_head_kv divides n_head. No allocation, no host synchronisation:
 * capturable in a CUDA graph. MODE_EUSAGE (with the argument named) for a bad shape or seg. */
int mode_attention_cuda(const struct mode_attn_shape *a, const float *d_q, const float *d_k, const float *d_v, const int64_t *seg, int n_seg,
                        const uint8_t *d_sel, float *d_colsum, float *d_o, void *stream, struct mode_err *err);

/* ---- packed prefill (qgemm.cu; reference mode_qmoe_ref, lib/qmoe.h) ----
 * The packed layer over many tokens without a bf16 copy of the weights: the (token, slot) pairs
 * sorted by expert (struct mode_moe_route), per expert a GEMM on tensor cores (bf16 mma, f32
 * accumulation) whose B operand is dequantised from the packed words in registers, the width
 * dispatched per expert inside the launch; SiLU·mul between the two GEMMs and the weighted
 * combine in slot order (deterministic) as mode_moe_bf16_cuda. Capturable in a CUDA graph.
 * d_work: mode_qmoe_prefill_work_bytes(L, T, k) bytes of device scratch from a 256-byte boundary
 * (as cudaMalloc returns). bf16 mma: sm_80 and later. */
size_t mode_qmoe_prefill_work_bytes(const struct mode_qmoe_layer *L, int T, int k);
int mode_qmoe_prefill_cuda(const struct mode_qmoe_layer *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out,
                           void *stream, struct mode_err *err);

/* The decode kernel version mode_qmoe_decode_cuda runs (process-wide): 3 (the measured v3,
 * default until v5 has been measured on a GPU) or 5 (pairs grouped by expert: an expert's words
 * read once for all its tokens; a call it cannot take — shared memory over 160 KB, x, act or
 * qweight not 16-byte aligned — runs v3). Returns the previous version, or -1 (unchanged) for an
 * unknown one. For benchmarks and tests comparing versions in one run. */
int mode_qmoe_decode_version(int v);

/* ---- a text decoder layer resident on the GPU (layer.cu; reference mode_text_layer_ref,
 * lib/layer.h) ----
 * Qwen3-VL-MoE's text layer on device arrays: h += o_proj(attention(RMSNorm(h))), then
 * h += MoE(RMSNorm(h)): RMSNorm, q/k/v, q/k RMSNorm per head, rope on precomputed angles,
 * attention per sequence (mode_attention_cuda), o_proj, RMSNorm, the router in f32
 * (mode_gemm_cuda), top-k (mode_topk_cuda), the experts. Two precisions:
 *   bf16  projections on tensor cores (activations rounded to bf16, bf16 weights, f32
 *         accumulation: mode_gemm_bf16_cuda), experts dense bf16 (mode_moe_bf16_cuda) or packed
 *         (mode_qmoe_prefill_cuda): the fast path;
 *   f32   f32 weights and SGEMM without TF32 everywhere, experts per expert on cuBLAS: the CPU
 *         runtime's arithmetic (sums in another order), what route-trace needs to make the CPU's
 *         choices; ~8x the bf16 path's product time.
 * The routing is sorted on the host (one download of the choices, which route-trace wants
 * anyway): the call synchronises and is not graph-capturable. */
struct mode_text_layer_cuda {
    int d, n_head, n_head_kv, head_dim, n_expert, k, i;
    float eps;
    bool norm_topk;
    bool f32;                                          /* the precision, above */
    const void *wq, *wk, *wv, *wo;                     /* nn.Linear (out, in): bf16 bits (uint16), or f32 when f32 */
    const float *attn_norm, *q_norm, *k_norm, *ffn_norm; /* (d), (head_dim), (head_dim), (d) */
    const float *router;                               /* f32 (n_expert, d) */
    struct mode_moe_dense experts;                     /* bf16 hub layout (bf16, packed NULL) */
    const struct mode_qmoe_layer *packed;              /* packed experts (bf16 only), or NULL */
    /* f32 experts, each contiguous: gate_up (2i, d) with gate the first i rows and down (d, i),
     * nn.Linear, when linear32; else the hub layout (d, 2i) and (i, d) */
    const float *gate_up32, *down32;
    bool linear32;
    const uint8_t *linear32_each; /* f32: host (n_expert), expert e's orientation (1 nn.Linear, 0 the hub's),
                                     overriding linear32; NULL: linear32 for every expert */
};

/* The rows: n of them in n_seg sequences [seg[s], seg[s+1]) (host), their rope angles d_ang
 * (n, head_dim/2), and optionally the query rows whose attention probabilities are summed into
 * d_colsum (mode_attention_cuda's contract); d_logits, when not NULL, receives the router's
 * logits (n, n_expert); d_moe_x and d_moe_out, when not NULL, the MoE block's input (the
 * post-attention RMSNorm's rows) and its output before the residual, (n, d) each. */
struct mode_text_rows_cuda {
    int64_t n;
    int n_seg;
    const int64_t *seg;
    const float *d_ang;
    const uint8_t *d_sel;
    float *d_colsum;
    float *d_logits;
    float *d_moe_x, *d_moe_out;
};

/* Milliseconds of the parts of the last call, when asked for (events on the stream): attn_proj
 * the RMSNorm, q/k/v, their norms and rope; attn_core the attention and o_proj; router the
 * RMSNorm, router and top-k; moe the routing sort (host) and the experts. */
struct mode_text_layer_times {
    double attn_proj, attn_core, router, moe, total;
};

size_t mode_text_layer_work_bytes(const struct mode_text_layer_cuda *L, int64_t n);
/* d_h (n, d) updated in place; the routing (experts d_idx, weights d_w, (n, k), device) is left
 * for the caller; d_work holds mode_text_layer_work_bytes. times: NULL, or filled. */
int mode_text_layer_cuda(const struct mode_text_layer_cuda *L, const struct mode_text_rows_cuda *rows, float *d_h, int32_t *d_idx, float *d_w,
                         void *d_work, struct mode_text_layer_times *times, void *stream, struct mode_err *err);

/* ---- a vision block resident on the GPU (layer.cu; reference mode_vision_block_ref,
 * lib/layer.h) ----
 * Qwen3-VL's vision transformer block in f32 on p patch rows: x += proj(attention(rope(qkv(
 * LayerNorm1(x))))) within each frame [seg[f], seg[f+1]) (host offsets, non-causal), then
 * x += fc2(GELU-tanh(fc1(LayerNorm2(x)))); SGEMM without TF32, the CPU runtime's arithmetic.
 * Weights f32 device arrays, nn.Linear orientation: qkv (3e, e), proj (e, e), fc1 (n_ff, e),
 * fc2 (e, n_ff), with their biases; d_ang (p, head_dim/2) the 2-D rotary angles. Capturable
 * (no host sync). */
struct mode_vision_block_cuda {
    int e, n_head, n_ff;
    float eps;
    const float *n1w, *n1b, *qkv, *qkvb, *proj, *projb, *n2w, *n2b, *fc1, *fc1b, *fc2, *fc2b;
};
/* from the dimensions alone (the weights may be NULL); 0 for a shape the kernels do not take */
size_t mode_vision_block_work_bytes(const struct mode_vision_block_cuda *B, int64_t p);
int mode_vision_block_cuda(const struct mode_vision_block_cuda *B, int64_t p, const int64_t *seg, int n_seg, const float *d_ang, float *d_x,
                           void *d_work, void *stream, struct mode_err *err);

#ifdef __cplusplus
}
#endif

#endif
