/* stub.c — the CUDA entry points of a build without nvcc: each one reports "unavailable"
 * (MODE_EUNAVAILABLE), so the project builds and tests everywhere (mode_cuda.h). */
#include "mode_cuda.h"

#define UNAVAILABLE(err) \
    mode_err_set(err, MODE_EUNAVAILABLE, "CUDA is unavailable: this build has no CUDA kernels (nvcc was not found; rebuild with make CUDA=1)")

int mode_cuda_built(void) { return 0; }
int mode_cuda_available(struct mode_err *err) { return UNAVAILABLE(err); }
int mode_cuda_describe(char *buf, size_t n, struct mode_err *err)
{
    if (n) buf[0] = 0;
    return UNAVAILABLE(err);
}
int mode_cuda_malloc(void **d_p, size_t nbytes, struct mode_err *err)
{
    (void)nbytes;
    *d_p = 0;
    return UNAVAILABLE(err);
}
void mode_cuda_free(void *d_p) { (void)d_p; }
int mode_cuda_upload(void *d_dst, const void *src, size_t nbytes, struct mode_err *err)
{
    (void)d_dst, (void)src, (void)nbytes;
    return UNAVAILABLE(err);
}
int mode_cuda_download(void *dst, const void *d_src, size_t nbytes, struct mode_err *err)
{
    (void)dst, (void)d_src, (void)nbytes;
    return UNAVAILABLE(err);
}
int mode_cuda_copy(void *d_dst, const void *d_src, size_t nbytes, struct mode_err *err)
{
    (void)d_dst, (void)d_src, (void)nbytes;
    return UNAVAILABLE(err);
}
int mode_cuda_sync(struct mode_err *err) { return UNAVAILABLE(err); }
int mode_cuda_blas_init(struct mode_err *err) { return UNAVAILABLE(err); }
int mode_convert_cuda(enum mode_dtype t, const void *d_src, size_t n, float *d_dst, void *stream, struct mode_err *err)
{
    (void)t, (void)d_src, (void)n, (void)d_dst, (void)stream;
    return UNAVAILABLE(err);
}
int mode_qmoe_decode_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts, const float *d_weights,
                          float *d_act, float *d_out, void *stream, struct mode_err *err)
{
    (void)L, (void)T, (void)k, (void)d_x, (void)d_experts, (void)d_weights, (void)d_act, (void)d_out, (void)stream;
    return UNAVAILABLE(err);
}
int mode_qmoe_bench_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts, const float *d_weights,
                         int n_pool, float *d_act, float *d_out, int iters, double *median_us, double *graph_us, struct mode_err *err)
{
    (void)L, (void)T, (void)k, (void)d_x, (void)d_experts, (void)d_weights, (void)n_pool, (void)d_act, (void)d_out, (void)iters,
        (void)median_us, (void)graph_us;
    return UNAVAILABLE(err);
}
int mode_gptq_cuda(struct mode_gptq_batch *b, void *stream, struct mode_err *err)
{
    (void)b, (void)stream;
    return UNAVAILABLE(err);
}
int mode_hessian_cuda(const float *d_X, int64_t rows, int64_t cols, double alpha, double *d_Xd, double *d_H, void *stream, struct mode_err *err)
{
    (void)d_X, (void)rows, (void)cols, (void)alpha, (void)d_Xd, (void)d_H, (void)stream;
    return UNAVAILABLE(err);
}
int mode_gptq_rows_cuda(struct mode_gptq_batch *b, const float *const *X, const int64_t *n_x, struct mode_err *err)
{
    (void)b, (void)X, (void)n_x;
    return UNAVAILABLE(err);
}
int mode_gemm_cuda(int64_t m, int64_t n, int64_t k, const float *d_a, int64_t lda, const float *d_b, int64_t ldb, bool b_trans, float beta,
                   float *d_c, int64_t ldc, void *stream, struct mode_err *err)
{
    (void)m, (void)n, (void)k, (void)d_a, (void)lda, (void)d_b, (void)ldb, (void)b_trans, (void)beta, (void)d_c, (void)ldc, (void)stream;
    return UNAVAILABLE(err);
}
int mode_gemm_staged_cuda(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans, float beta,
                          float *c, int64_t ldc, struct mode_err *err)
{
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)b_trans, (void)beta, (void)c, (void)ldc;
    return UNAVAILABLE(err);
}
size_t mode_moe_work_bytes(const struct mode_moe_dense *L, int T, int k)
{
    (void)L, (void)T, (void)k;
    return 0;
}
int mode_moe_bf16_cuda(const struct mode_moe_dense *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out, void *stream,
                       struct mode_err *err)
{
    (void)L, (void)r, (void)d_x, (void)d_work, (void)d_out, (void)stream;
    return UNAVAILABLE(err);
}
int mode_qmoe_dequant_cuda(const struct mode_qmoe_layer *L, uint16_t *d_gate_up, uint16_t *d_down, void *stream, struct mode_err *err)
{
    (void)L, (void)d_gate_up, (void)d_down, (void)stream;
    return UNAVAILABLE(err);
}
int mode_cuda_bench(int (*run)(void *ctx, int v, void *stream, struct mode_err *err), void *ctx, int n_var, int iters, double *median_us,
                    double *graph_us, struct mode_err *err)
{
    (void)run, (void)ctx, (void)n_var, (void)iters, (void)median_us, (void)graph_us;
    return UNAVAILABLE(err);
}
int mode_cuda_copy_rate(size_t bytes, double *bytes_per_s, struct mode_err *err)
{
    (void)bytes, (void)bytes_per_s;
    return UNAVAILABLE(err);
}
int mode_cuda_props(size_t *l2_bytes, size_t *mem_bytes, int *n_sm, struct mode_err *err)
{
    (void)l2_bytes, (void)mem_bytes, (void)n_sm;
    return UNAVAILABLE(err);
}

/* forward-pass operations, attention, packed prefill */
int mode_rmsnorm_cuda(const float *d_x, const float *d_w, float eps, int64_t n, int64_t d, float *d_y, void *stream, struct mode_err *err)
{
    (void)d_x, (void)d_w, (void)eps, (void)n, (void)d, (void)d_y, (void)stream;
    return UNAVAILABLE(err);
}
int mode_layernorm_cuda(const float *d_x, const float *d_w, const float *d_b, float eps, int64_t n, int64_t d, float *d_y, void *stream,
                        struct mode_err *err)
{
    (void)d_x, (void)d_w, (void)d_b, (void)eps, (void)n, (void)d, (void)d_y, (void)stream;
    return UNAVAILABLE(err);
}
int mode_softmax_cuda(float *d_x, int64_t n, int64_t d, void *stream, struct mode_err *err)
{
    (void)d_x, (void)n, (void)d, (void)stream;
    return UNAVAILABLE(err);
}
int mode_swiglu_cuda(const float *d_x, int64_t n, int64_t f, float *d_y, void *stream, struct mode_err *err)
{
    (void)d_x, (void)n, (void)f, (void)d_y, (void)stream;
    return UNAVAILABLE(err);
}
int mode_gelu_cuda(float *d_x, int64_t n, bool tanh_approx, void *stream, struct mode_err *err)
{
    (void)d_x, (void)n, (void)tanh_approx, (void)stream;
    return UNAVAILABLE(err);
}
int mode_add_bias_cuda(float *d_y, const float *d_b, int64_t n, int64_t d, void *stream, struct mode_err *err)
{
    (void)d_y, (void)d_b, (void)n, (void)d, (void)stream;
    return UNAVAILABLE(err);
}
int mode_add_cuda(float *d_y, const float *d_x, int64_t n, void *stream, struct mode_err *err)
{
    (void)d_y, (void)d_x, (void)n, (void)stream;
    return UNAVAILABLE(err);
}
int mode_round_bf16_cuda(const float *d_src, size_t n, uint16_t *d_dst, void *stream, struct mode_err *err)
{
    (void)d_src, (void)n, (void)d_dst, (void)stream;
    return UNAVAILABLE(err);
}
int mode_rope_cuda(float *d_x, int64_t n, int64_t ld, int n_head, int head_dim, const float *d_ang, void *stream, struct mode_err *err)
{
    (void)d_x, (void)n, (void)ld, (void)n_head, (void)head_dim, (void)d_ang, (void)stream;
    return UNAVAILABLE(err);
}
int mode_mrope_angles_cuda(const int32_t *d_pos, int64_t n, int head_dim, const int *section, const float *d_inv_freq, float *d_ang,
                           void *stream, struct mode_err *err)
{
    (void)d_pos, (void)n, (void)head_dim, (void)section, (void)d_inv_freq, (void)d_ang, (void)stream;
    return UNAVAILABLE(err);
}
int mode_topk_cuda(const float *d_logits, int64_t n, int n_expert, int k, bool norm, int32_t *d_idx, float *d_w, void *stream,
                   struct mode_err *err)
{
    (void)d_logits, (void)n, (void)n_expert, (void)k, (void)norm, (void)d_idx, (void)d_w, (void)stream;
    return UNAVAILABLE(err);
}
int mode_gemm_bf16_cuda(int64_t m, int64_t n, int64_t k, const uint16_t *d_a, int64_t lda, const uint16_t *d_b, int64_t ldb, bool b_trans,
                        float beta, float *d_c, int64_t ldc, void *stream, struct mode_err *err)
{
    (void)m, (void)n, (void)k, (void)d_a, (void)lda, (void)d_b, (void)ldb, (void)b_trans, (void)beta, (void)d_c, (void)ldc, (void)stream;
    return UNAVAILABLE(err);
}
int mode_attention_cuda(const struct mode_attn_shape *a, const float *d_q, const float *d_k, const float *d_v, const int64_t *seg, int n_seg,
                        const uint8_t *d_sel, float *d_colsum, float *d_o, void *stream, struct mode_err *err)
{
    (void)a, (void)d_q, (void)d_k, (void)d_v, (void)seg, (void)n_seg, (void)d_sel, (void)d_colsum, (void)d_o, (void)stream;
    return UNAVAILABLE(err);
}
size_t mode_qmoe_prefill_work_bytes(const struct mode_qmoe_layer *L, int T, int k)
{
    (void)L, (void)T, (void)k;
    return 0;
}
int mode_qmoe_prefill_cuda(const struct mode_qmoe_layer *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out,
                           void *stream, struct mode_err *err)
{
    (void)L, (void)r, (void)d_x, (void)d_work, (void)d_out, (void)stream;
    return UNAVAILABLE(err);
}
int mode_qmoe_decode_version(int v)
{
    (void)v;
    return -1;
}
size_t mode_text_layer_work_bytes(const struct mode_text_layer_cuda *L, int64_t n)
{
    (void)L, (void)n;
    return 0;
}
int mode_text_layer_cuda(const struct mode_text_layer_cuda *L, const struct mode_text_rows_cuda *rows, float *d_h, int32_t *d_idx, float *d_w,
                         void *d_work, struct mode_text_layer_times *times, void *stream, struct mode_err *err)
{
    (void)L, (void)rows, (void)d_h, (void)d_idx, (void)d_w, (void)d_work, (void)times, (void)stream;
    return UNAVAILABLE(err);
}
size_t mode_vision_block_work_bytes(const struct mode_vision_block_cuda *B, int64_t p)
{
    (void)B, (void)p;
    return 0;
}
int mode_vision_block_cuda(const struct mode_vision_block_cuda *B, int64_t p, const int64_t *seg, int n_seg, const float *d_ang, float *d_x,
                           void *d_work, void *stream, struct mode_err *err)
{
    (void)B, (void)p, (void)seg, (void)n_seg, (void)d_ang, (void)d_x, (void)d_work, (void)stream;
    return UNAVAILABLE(err);
}
