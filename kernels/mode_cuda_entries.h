/* mode_cuda_entries.h — the entry points of mode_cuda.h as one X-macro list, for the code that
 * handles them all alike: kernels/dispatch.c (a table of pointers filled from lib/libmode-cuda.so
 * and the forwarders to it) and tests/kernels/test_cuda_stub.c (every name is in the object).
 *
 * MODE_CUDA_ENTRIES(X) calls X(kind, return type, name, (parameters), (arguments)) once per entry
 * but mode_cuda_built (answered without loading anything). kind says how a forwarder behaves when
 * the object cannot be loaded:
 *   STATUS  returns that status, MODE_EUNAVAILABLE, with the reason in its last parameter `err`;
 *   SIZE    a scratch size: returns 0, as for a shape the kernels do not take;
 *   HAND    written by hand in dispatch.c (an output cleared first, no status to return).
 * A signature here that differs from mode_cuda.h's does not compile (dispatch.c includes both);
 * an entry missing here fails the link of lib/libmode-cuda.so (the Makefile compares the names the
 * object exports with those dispatch.o defines). */
#ifndef MODE_CUDA_ENTRIES_H
#define MODE_CUDA_ENTRIES_H

#define MODE_CUDA_ENTRIES(X) \
    X(STATUS, int, mode_cuda_available, (struct mode_err * err), (err)) \
    X(HAND, int, mode_cuda_describe, (char *buf, size_t n, struct mode_err *err), (buf, n, err)) \
    X(HAND, int, mode_cuda_malloc, (void **d_p, size_t nbytes, struct mode_err *err), (d_p, nbytes, err)) \
    X(HAND, void, mode_cuda_free, (void *d_p), (d_p)) \
    X(STATUS, int, mode_cuda_upload, (void *d_dst, const void *src, size_t nbytes, struct mode_err *err), (d_dst, src, nbytes, err)) \
    X(STATUS, int, mode_cuda_download, (void *dst, const void *d_src, size_t nbytes, struct mode_err *err), (dst, d_src, nbytes, err)) \
    X(STATUS, int, mode_cuda_copy, (void *d_dst, const void *d_src, size_t nbytes, struct mode_err *err), (d_dst, d_src, nbytes, err)) \
    X(STATUS, int, mode_cuda_sync, (struct mode_err * err), (err)) \
    X(STATUS, int, mode_cuda_blas_init, (struct mode_err * err), (err)) \
    X(STATUS, int, mode_convert_cuda, (enum mode_dtype t, const void *d_src, size_t n, float *d_dst, void *stream, struct mode_err *err), \
      (t, d_src, n, d_dst, stream, err)) \
    X(STATUS, int, mode_qmoe_decode_cuda, \
      (const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts, const float *d_weights, float *d_act, \
       float *d_out, void *stream, struct mode_err *err), \
      (L, T, k, d_x, d_experts, d_weights, d_act, d_out, stream, err)) \
    X(STATUS, int, mode_qmoe_bench_cuda, \
      (const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts, const float *d_weights, int n_pool, \
       float *d_act, float *d_out, int iters, double *median_us, double *graph_us, struct mode_err *err), \
      (L, T, k, d_x, d_experts, d_weights, n_pool, d_act, d_out, iters, median_us, graph_us, err)) \
    X(SIZE, size_t, mode_moe_work_bytes, (const struct mode_moe_dense *L, int T, int k), (L, T, k)) \
    X(STATUS, int, mode_moe_bf16_cuda, \
      (const struct mode_moe_dense *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out, void *stream, \
       struct mode_err *err), \
      (L, r, d_x, d_work, d_out, stream, err)) \
    X(STATUS, int, mode_qmoe_dequant_cuda, \
      (const struct mode_qmoe_layer *L, uint16_t *d_gate_up, uint16_t *d_down, void *stream, struct mode_err *err), \
      (L, d_gate_up, d_down, stream, err)) \
    X(STATUS, int, mode_cuda_bench, \
      (int (*run)(void *ctx, int v, void *stream, struct mode_err *err), void *ctx, int n_var, int iters, double *median_us, \
       double *graph_us, struct mode_err *err), \
      (run, ctx, n_var, iters, median_us, graph_us, err)) \
    X(STATUS, int, mode_cuda_copy_rate, (size_t bytes, double *bytes_per_s, struct mode_err *err), (bytes, bytes_per_s, err)) \
    X(STATUS, int, mode_cuda_props, (size_t *l2_bytes, size_t *mem_bytes, int *n_sm, struct mode_err *err), \
      (l2_bytes, mem_bytes, n_sm, err)) \
    X(STATUS, int, mode_gemm_cuda, \
      (int64_t m, int64_t n, int64_t k, const float *d_a, int64_t lda, const float *d_b, int64_t ldb, bool b_trans, float beta, \
       float *d_c, int64_t ldc, void *stream, struct mode_err *err), \
      (m, n, k, d_a, lda, d_b, ldb, b_trans, beta, d_c, ldc, stream, err)) \
    X(STATUS, int, mode_gemm_staged_cuda, \
      (int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans, float beta, float *c, \
       int64_t ldc, struct mode_err *err), \
      (m, n, k, a, lda, b, ldb, b_trans, beta, c, ldc, err)) \
    X(STATUS, int, mode_gptq_cuda, (struct mode_gptq_batch * b, void *stream, struct mode_err *err), (b, stream, err)) \
    X(STATUS, int, mode_hessian_cuda, \
      (const float *d_X, int64_t rows, int64_t cols, double alpha, double *d_Xd, double *d_H, void *stream, struct mode_err *err), \
      (d_X, rows, cols, alpha, d_Xd, d_H, stream, err)) \
    X(STATUS, int, mode_gptq_rows_cuda, (struct mode_gptq_batch * b, const float *const *X, const int64_t *n_x, struct mode_err *err), \
      (b, X, n_x, err)) \
    X(STATUS, int, mode_rmsnorm_cuda, \
      (const float *d_x, const float *d_w, float eps, int64_t n, int64_t d, float *d_y, void *stream, struct mode_err *err), \
      (d_x, d_w, eps, n, d, d_y, stream, err)) \
    X(STATUS, int, mode_layernorm_cuda, \
      (const float *d_x, const float *d_w, const float *d_b, float eps, int64_t n, int64_t d, float *d_y, void *stream, \
       struct mode_err *err), \
      (d_x, d_w, d_b, eps, n, d, d_y, stream, err)) \
    X(STATUS, int, mode_softmax_cuda, (float *d_x, int64_t n, int64_t d, void *stream, struct mode_err *err), (d_x, n, d, stream, err)) \
    X(STATUS, int, mode_swiglu_cuda, (const float *d_x, int64_t n, int64_t f, float *d_y, void *stream, struct mode_err *err), \
      (d_x, n, f, d_y, stream, err)) \
    X(STATUS, int, mode_gelu_cuda, (float *d_x, int64_t n, bool tanh_approx, void *stream, struct mode_err *err), \
      (d_x, n, tanh_approx, stream, err)) \
    X(STATUS, int, mode_add_bias_cuda, (float *d_y, const float *d_b, int64_t n, int64_t d, void *stream, struct mode_err *err), \
      (d_y, d_b, n, d, stream, err)) \
    X(STATUS, int, mode_add_cuda, (float *d_y, const float *d_x, int64_t n, void *stream, struct mode_err *err), (d_y, d_x, n, stream, err)) \
    X(STATUS, int, mode_round_bf16_cuda, (const float *d_src, size_t n, uint16_t *d_dst, void *stream, struct mode_err *err), \
      (d_src, n, d_dst, stream, err)) \
    X(STATUS, int, mode_rope_cuda, \
      (float *d_x, int64_t n, int64_t ld, int n_head, int head_dim, const float *d_ang, void *stream, struct mode_err *err), \
      (d_x, n, ld, n_head, head_dim, d_ang, stream, err)) \
    X(STATUS, int, mode_mrope_angles_cuda, \
      (const int32_t *d_pos, int64_t n, int head_dim, const int *section, const float *d_inv_freq, float *d_ang, void *stream, \
       struct mode_err *err), \
      (d_pos, n, head_dim, section, d_inv_freq, d_ang, stream, err)) \
    X(STATUS, int, mode_topk_cuda, \
      (const float *d_logits, int64_t n, int n_expert, int k, bool norm, int32_t *d_idx, float *d_w, void *stream, struct mode_err *err), \
      (d_logits, n, n_expert, k, norm, d_idx, d_w, stream, err)) \
    X(STATUS, int, mode_gemm_bf16_cuda, \
      (int64_t m, int64_t n, int64_t k, const uint16_t *d_a, int64_t lda, const uint16_t *d_b, int64_t ldb, bool b_trans, float beta, \
       float *d_c, int64_t ldc, void *stream, struct mode_err *err), \
      (m, n, k, d_a, lda, d_b, ldb, b_trans, beta, d_c, ldc, stream, err)) \
    X(STATUS, int, mode_attention_cuda, \
      (const struct mode_attn_shape *a, const float *d_q, const float *d_k, const float *d_v, const int64_t *seg, int n_seg, \
       const uint8_t *d_sel, float *d_colsum, float *d_o, void *stream, struct mode_err *err), \
      (a, d_q, d_k, d_v, seg, n_seg, d_sel, d_colsum, d_o, stream, err)) \
    X(SIZE, size_t, mode_qmoe_prefill_work_bytes, (const struct mode_qmoe_layer *L, int T, int k), (L, T, k)) \
    X(STATUS, int, mode_qmoe_prefill_cuda, \
      (const struct mode_qmoe_layer *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out, void *stream, \
       struct mode_err *err), \
      (L, r, d_x, d_work, d_out, stream, err)) \
    X(HAND, int, mode_qmoe_decode_version, (int v), (v)) \
    X(SIZE, size_t, mode_text_layer_work_bytes, (const struct mode_text_layer_cuda *L, int64_t n), (L, n)) \
    X(STATUS, int, mode_text_layer_cuda, \
      (const struct mode_text_layer_cuda *L, const struct mode_text_rows_cuda *rows, float *d_h, int32_t *d_idx, float *d_w, \
       void *d_work, struct mode_text_layer_times *times, void *stream, struct mode_err *err), \
      (L, rows, d_h, d_idx, d_w, d_work, times, stream, err)) \
    X(SIZE, size_t, mode_vision_block_work_bytes, (const struct mode_vision_block_cuda *B, int64_t p), (B, p)) \
    X(STATUS, int, mode_vision_block_cuda, \
      (const struct mode_vision_block_cuda *B, int64_t p, const int64_t *seg, int n_seg, const float *d_ang, float *d_x, void *d_work, \
       void *stream, struct mode_err *err), \
      (B, p, seg, n_seg, d_ang, d_x, d_work, stream, err))

#endif
