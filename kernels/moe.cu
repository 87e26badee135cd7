/* moe.cu — MoE layers for many tokens (prefill): the dense bf16 layer on cuBLAS, and packed
 * experts dequantised into it. Reference: mode_moe_dense_ref (lib/moe.c) and, for a packed layer
 * through mode_qmoe_dequant_cuda, mode_qmoe_ref (lib/qmoe.c); test tests/kernels/test_moe.c.
 *
 *   gather_kernel   the T·k (token, slot) pairs' rows in expert order, as bf16
 *   cuBLAS          per expert with tokens: H = X_e · W_gate_up (bf16 in, f32 accumulate)
 *   swiglu_kernel   A = SiLU(H[:, :i]) ⊙ H[:, i:], as bf16
 *   cuBLAS          per expert: Y = A_e · W_down
 *   combine_kernel  out[t] = Σ_j weights[t][j] · Y[slot(t, j)], j ascending
 *   dequant_kernel  packed words (any width: 32 values of b bits fill b words, a little-endian
 *                   bit stream, which is GPTQ's layout at 2, 3, 4 and 8 bits) to bf16 weights
 *
 * The first version of the prefill path: the weights pass through memory once more as bf16 (the
 * issue asks for dequantisation in registers inside a tensor-core grouped GEMM: not written).
 * Bytes at 4096 tokens, Qwen3-VL-30B-A3B shape, W4: 302 MB packed read + 1.21 GB bf16 written and
 * read again; flops 2·T·k·3·i·d = 309 G (bf16 tensor cores). */
#include "blas.cuh"
#include "moe.cuh" /* gather_kernel, swiglu_kernel, combine_kernel */

#include <cuda_bf16.h>
#include <cuda_fp16.h>

size_t mode_moe_work_bytes(const struct mode_moe_dense *L, int T, int k)
{
    const size_t P = (size_t)T * (size_t)k, D = (size_t)L->d, I = (size_t)L->i;
    const size_t a = (P * D * 2 + 255) & ~(size_t)255, b = (P * 2 * I * 4 + 255) & ~(size_t)255, c = (P * I * 2 + 255) & ~(size_t)255;
    return a + b + c + P * D * 4;
}

extern "C" int mode_moe_bf16_cuda(const struct mode_moe_dense *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out,
                                  void *stream, struct mode_err *err)
{
    if (!L || !r || r->T < 0 || r->k < 1 || L->d < 1 || L->i < 1 || L->n_expert < 1)
        return mode_err_set(err, MODE_EUSAGE, "mode_moe_bf16_cuda: empty layer or routing");
    if (r->T == 0) return MODE_OK;
    cudaStream_t s = (cudaStream_t)stream;
    cublasHandle_t h;
    int rc = mode_cuda_blas(s, &h, NULL, err);
    if (rc) return rc;
    const int D = L->d, I = L->i, P = r->T * r->k;
    const size_t a = ((size_t)P * D * 2 + 255) & ~(size_t)255, b = ((size_t)P * 2 * I * 4 + 255) & ~(size_t)255,
                 c = ((size_t)P * I * 2 + 255) & ~(size_t)255;
    __nv_bfloat16 *xs = (__nv_bfloat16 *)d_work, *act = (__nv_bfloat16 *)((char *)d_work + a + b);
    float *hh = (float *)((char *)d_work + a), *y = (float *)((char *)d_work + a + b + c);
    gather_kernel<<<P, 256, 0, s>>>(d_x, r->order, r->k, D, xs);
    CUDA_CHECK_LAUNCH(err);
    const float one = 1.0f, zero = 0.0f;
    /* row-major C (c, 2i) = X_e (c, d) · W (d, 2i): column-major Cᵀ (2i, c) = Wᵀ (2i, d) · X_eᵀ (d, c) */
    for (int e = 0; e < L->n_expert; e++) {
        const int64_t n = r->start[e + 1] - r->start[e], s0 = r->start[e];
        if (n <= 0) continue;
        CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 2 * I, (int)n, D, &one, L->gate_up + (size_t)e * D * 2 * I, CUDA_R_16BF, 2 * I,
                                  xs + (size_t)s0 * D, CUDA_R_16BF, D, &zero, hh + (size_t)s0 * 2 * I, CUDA_R_32F, 2 * I, CUBLAS_COMPUTE_32F,
                                  CUBLAS_GEMM_DEFAULT),
                     err);
    }
    swiglu_kernel<<<P, 256, 0, s>>>(hh, I, act);
    CUDA_CHECK_LAUNCH(err);
    for (int e = 0; e < L->n_expert; e++) {
        const int64_t n = r->start[e + 1] - r->start[e], s0 = r->start[e];
        if (n <= 0) continue;
        CUBLAS_CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, D, (int)n, I, &one, L->down + (size_t)e * I * D, CUDA_R_16BF, D, act + (size_t)s0 * I,
                                  CUDA_R_16BF, I, &zero, y + (size_t)s0 * D, CUDA_R_32F, D, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     err);
    }
    combine_kernel<<<r->T, 256, 0, s>>>(y, r->slot, r->weights, r->k, D, d_out);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

/* ---- packed -> dense bf16 ---------------------------------------------------------------- */

/* value v of the 32-value chunk held in words w[0..b) (a little-endian bit stream) */
__device__ __forceinline__ uint32_t stream_value(const uint32_t *w, int b, int v)
{
    const int bit = v * b, wi = bit / 32, sh = bit % 32;
    uint64_t x = w[wi];
    if (sh + b > 32) x |= (uint64_t)w[wi + 1] << 32;
    return (uint32_t)(x >> sh) & (b == 32 ? 0xffffffffu : ((1u << b) - 1));
}

/* grid (ceil(K/32 · N / 128), 3 · n_expert): thread per (chunk of 32 inputs, output column) */
__global__ void dequant_kernel(mode_qmoe_layer L, __nv_bfloat16 *__restrict__ gate_up, __nv_bfloat16 *__restrict__ down)
{
    const int e = blockIdx.y / 3, p = blockIdx.y % 3;
    const int D = L.d, I = L.i, N = p == 2 ? D : I, K = p == 2 ? I : D, g = p == 2 ? L.group_i : L.group_d;
    const int64_t x = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (x >= (int64_t)(K / 32) * N) return;
    const int n = (int)(x % N), chunk = (int)(x / N), b = L.bits[e];
    const int64_t *off = L.off + (size_t)e * 9 + (size_t)p * 3;
    const uint32_t *qw = L.qweight + off[0], *qz = L.qzeros + off[1];
    const uint16_t *sc = L.scales + off[2];
    uint32_t w[16];
    for (int i = 0; i < b; i++) w[i] = qw[(size_t)(chunk * b + i) * N + n];
    /* destination: gate_up[e][k][n] (row 2i) with up at column i + n; down[e][k][n] (row d) */
    __nv_bfloat16 *dst = p == 2 ? down + (size_t)e * I * D + n : gate_up + (size_t)e * D * 2 * I + (p == 1 ? I : 0) + n;
    const int ld = p == 2 ? D : 2 * I;
    for (int v = 0; v < 32; v++) {
        const int kk = chunk * 32 + v;
        const uint32_t q = stream_value(w, b, v);
        float val;
        if (b == 16) val = __uint_as_float(q << 16);
        else {
            const int gi = kk / g;
            val = __half2float(__ushort_as_half(sc[(size_t)gi * N + n])) * ((float)q - mode_zero_at(qz, N, b, gi, n));
        }
        dst[(size_t)kk * ld] = __float2bfloat16_rn(val);
    }
}

extern "C" int mode_qmoe_dequant_cuda(const struct mode_qmoe_layer *L, uint16_t *d_gate_up, uint16_t *d_down, void *stream, struct mode_err *err)
{
    if (!L || L->d < 32 || L->i < 32 || L->d % 32 || L->i % 32 || L->group_d < 1 || L->group_i < 1 || L->d % L->group_d || L->i % L->group_i || L->n_expert < 1 ||
        L->n_expert > 65535 / 3)
        return mode_err_set(err, MODE_EUSAGE, "mode_qmoe_dequant_cuda: dimensions must be multiples of 32 and of their groups");
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    const int64_t per = (int64_t)(L->d / 32) * L->i; /* the same for the three projections */
    dequant_kernel<<<dim3((unsigned)((per + 127) / 128), (unsigned)(3 * L->n_expert)), 128, 0, (cudaStream_t)stream>>>(
        *L, (__nv_bfloat16 *)d_gate_up, (__nv_bfloat16 *)d_down);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}
