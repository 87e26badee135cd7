/* host.c — the host double of the CUDA entry points (mode_cuda.h), for testing the code that
 * composes them without a GPU: kernels/layer.cu compiled by g++ against this directory's
 * cuda_runtime.h, lib/rtlayer.c and the runtime's --device cuda paths. "Device" memory is host
 * memory (malloc), copies are memcpy, and every operation runs its C reference (lib/ops.h,
 * attn.h, layer.h, moe.h, qmoe.h) synchronously; what a composition computes is then the
 * references' composition, to be compared with the reference of the whole (mode_text_layer_ref,
 * the CPU runtime). It checks the glue — shapes, strides, buffer layouts, aliasing, the order of
 * the steps, the copies, the fallbacks — never a kernel: the kernels' own tests do that on a GPU.
 * GPTQ runs mode_gptq_ref (from host rows: mode_gptq_rows on the CPU), the Hessians a double
 * GEMM; the timing entry points time the references with the host's clock (so that the
 * benchmarks' harnesses run: their numbers say nothing about a GPU). Linked by the Makefile into build/host/ (make check). */
#include "../mode_cuda.h"

#include "../../lib/attn.h"
#include "../../lib/gptq.h"
#include "../../lib/layer.h"
#include "../../lib/moe.h"
#include "../../lib/ops.h"
#include "../../lib/qmoe.h"

#include <cblas.h>
#undef I /* complex.h's, through OpenBLAS's cblas.h */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOT_DOUBLED(err, what) mode_err_set(err, MODE_EUNAVAILABLE, "CUDA host double: %s is not doubled (it needs a GPU)", what)

int mode_cuda_built(void) { return 1; }
int mode_cuda_available(struct mode_err *err)
{
    (void)err;
    return MODE_OK;
}
int mode_cuda_describe(char *buf, size_t n, struct mode_err *err)
{
    (void)err;
    if (n) snprintf(buf, n, "the host double (no GPU: the C references on host memory)");
    return MODE_OK;
}
/* "Device" memory: malloc'd behind a header holding its size, poisoned (0xff bytes are NaNs) as
 * fresh device memory may hold anything; MODE_HOST_DEVICE_MB in the environment sets the
 * device's capacity, beyond which an allocation fails as cudaMalloc's does (MODE_EUNAVAILABLE),
 * so that the callers' fallbacks can be tested. */
static size_t g_used;
int mode_cuda_malloc(void **d_p, size_t nbytes, struct mode_err *err)
{
    *d_p = NULL;
    const char *cap = getenv("MODE_HOST_DEVICE_MB");
    if (cap && *cap && g_used + nbytes > (size_t)strtoull(cap, NULL, 10) << 20)
        return mode_err_set(err, MODE_EUNAVAILABLE, "CUDA: cudaMalloc(%zu): out of memory (host double of %s MB)", nbytes, cap);
    size_t *p = malloc(16 + (nbytes ? nbytes : 1));
    if (!p) return mode_err_oom(err, nbytes, "host double device memory");
    p[0] = nbytes, g_used += nbytes;
    memset((char *)p + 16, 0xff, nbytes);
    *d_p = (char *)p + 16;
    return MODE_OK;
}
void mode_cuda_free(void *d_p)
{
    if (!d_p) return;
    size_t *p = (size_t *)((char *)d_p - 16);
    g_used -= p[0];
    free(p);
}
int mode_cuda_upload(void *d_dst, const void *src, size_t nbytes, struct mode_err *err)
{
    (void)err;
    if (nbytes) memmove(d_dst, src, nbytes);
    return MODE_OK;
}
int mode_cuda_download(void *dst, const void *d_src, size_t nbytes, struct mode_err *err) { return mode_cuda_upload(dst, d_src, nbytes, err); }
int mode_cuda_copy(void *d_dst, const void *d_src, size_t nbytes, struct mode_err *err) { return mode_cuda_upload(d_dst, d_src, nbytes, err); }
int mode_cuda_sync(struct mode_err *err)
{
    (void)err;
    return MODE_OK;
}
int mode_cuda_blas_init(struct mode_err *err)
{
    (void)err;
    return MODE_OK;
}

int mode_convert_cuda(enum mode_dtype t, const void *d_src, size_t n, float *d_dst, void *stream, struct mode_err *err)
{
    (void)stream;
    return mode_convert_ref(t, d_src, n, d_dst) ? mode_err_set(err, MODE_EUSAGE, "mode_convert_cuda: no conversion of this type") : MODE_OK;
}

/* ---- matrix products ---- */
int mode_gemm_cuda(int64_t m, int64_t n, int64_t k, const float *d_a, int64_t lda, const float *d_b, int64_t ldb, bool b_trans, float beta,
                   float *d_c, int64_t ldc, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    mode_gemm_cpu(m, n, k, d_a, lda, d_b, ldb, b_trans, beta, d_c, ldc);
    return MODE_OK;
}
int mode_gemm_staged_cuda(int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b, int64_t ldb, bool b_trans, float beta,
                          float *c, int64_t ldc, struct mode_err *err)
{
    return mode_gemm_cuda(m, n, k, a, lda, b, ldb, b_trans, beta, c, ldc, NULL, err);
}

/* bf16 operands widened (exactly) to f32, the product in f32 */
static float *widen(const uint16_t *x, int64_t rows, int64_t cols, int64_t ld)
{
    float *f = malloc(sizeof *f * (size_t)(rows * cols + 1));
    if (f)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) f[r * cols + c] = mode_bf16_to_f32(x[r * ld + c]);
    return f;
}
int mode_gemm_bf16_cuda(int64_t m, int64_t n, int64_t k, const uint16_t *d_a, int64_t lda, const uint16_t *d_b, int64_t ldb, bool b_trans,
                        float beta, float *d_c, int64_t ldc, void *stream, struct mode_err *err)
{
    (void)stream;
    float *a = widen(d_a, m, k, lda), *b = b_trans ? widen(d_b, n, k, ldb) : widen(d_b, k, n, ldb);
    int rc = a && b ? MODE_OK : mode_err_oom(err, (size_t)(m + n) * (size_t)k * 4, "host double bf16 operands");
    if (!rc) mode_gemm_cpu(m, n, k, a, k, b, b_trans ? k : n, b_trans, beta, d_c, ldc);
    free(a), free(b);
    return rc;
}

/* ---- forward-pass operations ---- */
int mode_rmsnorm_cuda(const float *d_x, const float *d_w, float eps, int64_t n, int64_t d, float *d_y, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    mode_rmsnorm_ref(d_x, d_w, eps, n, d, d_y);
    return MODE_OK;
}
int mode_layernorm_cuda(const float *d_x, const float *d_w, const float *d_b, float eps, int64_t n, int64_t d, float *d_y, void *stream,
                        struct mode_err *err)
{
    (void)stream, (void)err;
    mode_layernorm_ref(d_x, d_w, d_b, eps, n, d, d_y);
    return MODE_OK;
}
int mode_softmax_cuda(float *d_x, int64_t n, int64_t d, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    mode_softmax_ref(d_x, n, d);
    return MODE_OK;
}
int mode_swiglu_cuda(const float *d_x, int64_t n, int64_t f, float *d_y, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    mode_swiglu_ref(d_x, n, f, d_y);
    return MODE_OK;
}
int mode_gelu_cuda(float *d_x, int64_t n, bool tanh_approx, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    if (tanh_approx) mode_gelu_tanh_ref(d_x, n);
    else mode_gelu_erf_ref(d_x, n);
    return MODE_OK;
}
int mode_add_bias_cuda(float *d_y, const float *d_b, int64_t n, int64_t d, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    mode_add_bias_ref(d_y, d_b, n, d);
    return MODE_OK;
}
int mode_add_cuda(float *d_y, const float *d_x, int64_t n, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    for (int64_t i = 0; i < n; i++) d_y[i] += d_x[i];
    return MODE_OK;
}
int mode_round_bf16_cuda(const float *d_src, size_t n, uint16_t *d_dst, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    for (size_t i = 0; i < n; i++) d_dst[i] = mode_f32_to_bf16(d_src[i]);
    return MODE_OK;
}
int mode_rope_cuda(float *d_x, int64_t n, int64_t ld, int n_head, int head_dim, const float *d_ang, void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    mode_rope_ref(d_x, n, ld, n_head, head_dim, d_ang);
    return MODE_OK;
}
int mode_mrope_angles_cuda(const int32_t *d_pos, int64_t n, int head_dim, const int *section, const float *d_inv_freq, float *d_ang,
                           void *stream, struct mode_err *err)
{
    (void)stream, (void)err;
    mode_mrope_angles_ref(d_pos, n, head_dim, section, d_inv_freq, d_ang);
    return MODE_OK;
}
int mode_topk_cuda(const float *d_logits, int64_t n, int n_expert, int k, bool norm, int32_t *d_idx, float *d_w, void *stream,
                   struct mode_err *err)
{
    (void)stream;
    if (n_expert < 1 || n_expert > MODE_TOPK_MAX_EXPERTS || k < 1 || k > 32 || k > n_expert)
        return mode_err_set(err, MODE_EUSAGE, "mode_topk_cuda: bad n_expert %d or k %d", n_expert, k);
    mode_topk_ref(d_logits, n, n_expert, k, norm, d_idx, d_w);
    return MODE_OK;
}
int mode_attention_cuda(const struct mode_attn_shape *a, const float *d_q, const float *d_k, const float *d_v, const int64_t *seg, int n_seg,
                        const uint8_t *d_sel, float *d_colsum, float *d_o, void *stream, struct mode_err *err)
{
    (void)stream;
    if (a && (a->head_dim % 2 || a->head_dim > 256))
        return mode_err_set(err, MODE_EUSAGE, "mode_attention_cuda: head_dim %d (even and at most 256 on the GPU)", a->head_dim);
    return mode_attention_ref(a, d_q, d_k, d_v, seg, n_seg, d_sel, d_colsum, d_o, err);
}

/* ---- MoE layers ---- */
size_t mode_moe_work_bytes(const struct mode_moe_dense *L, int T, int k)
{
    (void)L, (void)T, (void)k;
    return 256; /* the references allocate their own */
}
int mode_moe_bf16_cuda(const struct mode_moe_dense *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out, void *stream,
                       struct mode_err *err)
{
    (void)d_work, (void)stream;
    const struct mode_text_layer_cuda T = {.d = L->d, .n_expert = L->n_expert, .i = L->i, .experts = *L};
    return mode_text_moe_ref(&T, r, d_x, d_out, err);
}

/* the experts of a sorted routing back in (token, slot) order */
static int unsort(const struct mode_moe_route *r, int n_expert, int32_t **experts, struct mode_err *err)
{
    const size_t P = (size_t)r->T * (size_t)r->k;
    if (!(*experts = malloc(sizeof **experts * (P + 1)))) return mode_err_oom(err, P * 4, "host double routing");
    for (int e = 0; e < n_expert; e++)
        for (int64_t p = r->start[e]; p < r->start[e + 1]; p++) (*experts)[r->order[p]] = e;
    return MODE_OK;
}
size_t mode_qmoe_prefill_work_bytes(const struct mode_qmoe_layer *L, int T, int k)
{
    (void)L, (void)T, (void)k;
    return 256;
}
int mode_qmoe_prefill_cuda(const struct mode_qmoe_layer *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out,
                           void *stream, struct mode_err *err)
{
    (void)d_work, (void)stream;
    int32_t *experts;
    int rc = unsort(r, L->n_expert, &experts, err);
    if (!rc) rc = mode_qmoe_ref(L, r->T, r->k, d_x, experts, r->weights, d_out, err);
    free(experts);
    return rc;
}
int mode_qmoe_decode_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts, const float *d_weights,
                          float *d_act, float *d_out, void *stream, struct mode_err *err)
{
    (void)d_act, (void)stream;
    return mode_qmoe_ref(L, T, k, d_x, d_experts, d_weights, d_out, err);
}
int mode_qmoe_decode_version(int v)
{
    static int cur = 3;
    const int old = cur;
    if (v != 3 && v != 5) return -1;
    cur = v;
    return old;
}

/* ---- not doubled ---- */
/* each expert's projections dequantised in f32 (mode_qmoe_expert_ref), rounded to bf16, laid out
 * as the hub's gate_up (d, 2i) and down (i, d) */
int mode_qmoe_dequant_cuda(const struct mode_qmoe_layer *L, uint16_t *d_gate_up, uint16_t *d_down, void *stream, struct mode_err *err)
{
    (void)stream;
    const int64_t D = L->d, I = L->i;
    float *W = malloc(sizeof *W * (size_t)(D * I));
    if (!W) return mode_err_oom(err, (size_t)(D * I) * 4, "host double dequantisation");
    int rc = MODE_OK;
    for (int e = 0; e < L->n_expert && !rc; e++)
        for (int p = 0; p < 3 && !rc; p++) {
            if (mode_qmoe_expert_ref(L, e, p, W)) {
                rc = mode_err_oom(err, 0, "host double dequantisation");
                break;
            }
            if (p < 2) /* W (i, d) -> gate_up[e][c][p·i + n] */
                for (int64_t n = 0; n < I; n++)
                    for (int64_t c = 0; c < D; c++) d_gate_up[((size_t)e * D + c) * 2 * I + p * I + n] = mode_f32_to_bf16(W[n * D + c]);
            else /* W (d, i) -> down[e][c][n] */
                for (int64_t n = 0; n < D; n++)
                    for (int64_t c = 0; c < I; c++) d_down[((size_t)e * I + c) * D + n] = mode_f32_to_bf16(W[n * I + c]);
        }
    free(W);
    return rc;
}
/* ---- timing: the host's clock around the references, so that the benchmarks' harnesses run
 * (their numbers are CPU times of the references, nothing about a GPU); a "graph replay" is
 * another eager call ---- */
static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}
static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median_of(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}
int mode_cuda_bench(int (*run)(void *ctx, int v, void *stream, struct mode_err *err), void *ctx, int n_var, int iters, double *median_us,
                    double *graph_us, struct mode_err *err)
{
    if (n_var < 1 || iters < 1) return mode_err_set(err, MODE_EUSAGE, "mode_cuda_bench: %d variants, %d iterations", n_var, iters);
    double *t = malloc(sizeof *t * (size_t)iters);
    if (!t) return mode_err_oom(err, sizeof *t * (size_t)iters, "timings");
    int rc = run(ctx, 0, NULL, err); /* the warm-up */
    for (int pass = 0; pass < (graph_us ? 2 : 1) && !rc; pass++) {
        for (int i = 0; i < iters && !rc; i++) {
            const double t0 = now_us();
            rc = run(ctx, i % n_var, NULL, err);
            t[i] = now_us() - t0;
        }
        if (!rc) *(pass ? graph_us : median_us) = median_of(t, iters);
    }
    free(t);
    return rc;
}
struct qmoe_bench_ctx {
    const struct mode_qmoe_layer *L;
    int T, k;
    const float *x;
    const int32_t *experts;
    const float *weights;
    float *act, *out;
};
static int qmoe_bench_run(void *vctx, int v, void *stream, struct mode_err *err)
{
    const struct qmoe_bench_ctx *c = vctx;
    const size_t P = (size_t)c->T * (size_t)c->k * (size_t)v;
    return mode_qmoe_decode_cuda(c->L, c->T, c->k, c->x, c->experts + P, c->weights + P, c->act, c->out, stream, err);
}
int mode_qmoe_bench_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts, const float *d_weights,
                         int n_pool, float *d_act, float *d_out, int iters, double *median_us, double *graph_us, struct mode_err *err)
{
    struct qmoe_bench_ctx c = {L, T, k, d_x, d_experts, d_weights, d_act, d_out};
    return mode_cuda_bench(qmoe_bench_run, &c, n_pool, iters, median_us, graph_us, err);
}
/* memcpy between two fresh buffers, bytes read + written per second, median of 3 */
int mode_cuda_copy_rate(size_t bytes, double *bytes_per_s, struct mode_err *err)
{
    char *a = malloc(bytes ? bytes : 1), *b = malloc(bytes ? bytes : 1);
    if (!a || !b) {
        free(a), free(b);
        return mode_err_oom(err, 2 * bytes, "the copy rate's buffers");
    }
    memset(a, 1, bytes), memset(b, 0, bytes);
    double t[3];
    for (int i = 0; i < 3; i++) {
        const double t0 = now_us();
        memcpy(b, a, bytes);
        t[i] = now_us() - t0;
    }
    const double us = median_of(t, 3);
    *bytes_per_s = us > 0 ? 2.0 * (double)bytes / (us * 1e-6) : 0;
    free(a), free(b);
    return MODE_OK;
}
/* the host's: its L2 (1 MiB when unknown), memory and processors */
int mode_cuda_props(size_t *l2_bytes, size_t *mem_bytes, int *n_sm, struct mode_err *err)
{
    (void)err;
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE), pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE), ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (l2_bytes) *l2_bytes = l2 > 0 ? (size_t)l2 : (size_t)1 << 20;
    if (mem_bytes) *mem_bytes = pages > 0 && psz > 0 ? (size_t)pages * (size_t)psz : 0;
    if (n_sm) *n_sm = ncpu > 0 ? (int)ncpu : 1;
    return MODE_OK;
}
/* "device" arrays are host arrays: the batch as the reference runs it */
int mode_gptq_cuda(struct mode_gptq_batch *b, void *stream, struct mode_err *err)
{
    (void)stream;
    return mode_gptq_ref(b, err);
}
/* H = alpha · XᵀX in double, both triangles, through Xd (X widened) */
int mode_hessian_cuda(const float *d_X, int64_t rows, int64_t cols, double alpha, double *d_Xd, double *d_H, void *stream, struct mode_err *err)
{
    (void)stream;
    if (rows < 1 || cols < 1) return mode_err_set(err, MODE_EUSAGE, "mode_hessian_cuda: %lld x %lld rows", (long long)rows, (long long)cols);
    for (size_t z = 0; z < (size_t)(rows * cols); z++) d_Xd[z] = d_X[z];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)cols, (blasint)cols, (blasint)rows, alpha, d_Xd, (blasint)cols, d_Xd,
                (blasint)cols, 0.0, d_H, (blasint)cols);
    return MODE_OK;
}
/* the whole job on the CPU: mode_gptq_rows's own path (its Hessians and scratch allocated there) */
int mode_gptq_rows_cuda(struct mode_gptq_batch *b, const float *const *X, const int64_t *n_x, struct mode_err *err)
{
    return mode_gptq_rows(b, X, n_x, MODE_DEVICE_CPU, err);
}
