/* layer.h — the C reference of the text decoder layer resident on the GPU (mode_text_layer_cuda,
 * kernels/layer.cu), composed of the operations' references with the GPU path's roundings.
 * bf16: the inputs of the q/k/v and o projections rounded to bf16 (mode_f32_to_bf16) as the
 * tensor-core GEMMs take them, the router and everything else in f32 (mode_gemm: OpenBLAS, as the
 * CPU runtime); dense experts as moe.cu computes them (rows and SwiGLU activations rounded to
 * bf16, per-expert products, the weighted combine in slot order), packed ones through
 * mode_qmoe_ref (unrounded input: the GPU's bf16 rounding is within the tests' tolerance).
 * f32: no rounding anywhere, f32 experts per expert, the CPU runtime's arithmetic. Also the CPU
 * baseline of tests/bench/bench_layer.c.
 *
 * Host pointers throughout: the weights of struct mode_text_layer_cuda, rows->d_ang, d_sel and
 * d_colsum are read and written as host arrays. Allocates its scratch (MODE_ENOMEM).
 */
#ifndef MODE_LAYER_H
#define MODE_LAYER_H

#include "../kernels/mode_cuda.h"

int mode_text_layer_ref(const struct mode_text_layer_cuda *L, const struct mode_text_rows_cuda *rows, float *h, int32_t *idx, float *w,
                        struct mode_err *err);

/* The layer's experts on a routing sorted by expert (struct mode_moe_route, host arrays; the
 * rows x (T, d) the post-attention RMSNorm's), as the GPU computes them: dense bf16 experts as
 * moe.cu (rows and activations rounded to bf16, per-expert products, the combine in slot order)
 * or f32 experts as layer.cu, both through mode_gemm. L->packed is not looked at. */
int mode_text_moe_ref(const struct mode_text_layer_cuda *L, const struct mode_moe_route *r, const float *x, float *out, struct mode_err *err);

/* The vision block (mode_vision_block_cuda) on host arrays: exactly the CPU runtime's block (its
 * vision tower runs this), the attention in query blocks of `block` rows
 * (mode_attention_ref_block). work: p·(5·e + n_ff) floats of scratch, or NULL (allocated). */
int mode_vision_block_ref(const struct mode_vision_block_cuda *B, int64_t p, const int64_t *seg, int n_seg, const float *ang, float *x, int64_t block,
                          float *work, struct mode_err *err);

#endif
