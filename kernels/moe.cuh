/* moe.cuh — the row kernels shared by the two prefill paths of a MoE layer (kernels/moe.cu: dense
 * bf16 experts on cuBLAS; kernels/qgemm.cu: packed experts on a grouped tensor-core GEMM), so that
 * both gather, activate and combine the same way and agree to the bit outside their GEMMs:
 *   gather_kernel   the T·k (token, slot) pairs' rows in expert order, as bf16
 *   swiglu_kernel   A = SiLU(H[:, :i]) ⊙ H[:, i:], as bf16
 *   combine_kernel  out[t] = Σ_j weights[t][j] · Y[slot(t, j)], j ascending (deterministic)
 * static: each .cu that includes this gets its own copy (no -rdc, no shared device symbols). */
#ifndef MODE_CUDA_MOE_CUH
#define MODE_CUDA_MOE_CUH

#include "common.cuh"

#include <cuda_bf16.h>
#include <stdint.h>

/* SiLU(g)·u in f32 (expf, not __expf: the same value in both paths and close to the reference) */
__device__ __forceinline__ float mode_silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }

/* grid P (one block per pair): xs (P, D) bf16, row pos = x row order[pos] / k */
static __global__ void gather_kernel(const float *__restrict__ x, const int32_t *__restrict__ order, int k, int D, __nv_bfloat16 *__restrict__ xs)
{
    const int pos = blockIdx.x, t = order[pos] / k;
    for (int c = threadIdx.x; c < D; c += blockDim.x) xs[(size_t)pos * D + c] = __float2bfloat16_rn(x[(size_t)t * D + c]);
}

/* grid P: h (P, 2I) f32, gate the first I columns -> a (P, I) bf16 */
static __global__ void swiglu_kernel(const float *__restrict__ h, int I, __nv_bfloat16 *__restrict__ a)
{
    const size_t r = blockIdx.x;
    for (int j = threadIdx.x; j < I; j += blockDim.x) a[r * I + j] = __float2bfloat16_rn(mode_silu_mul(h[r * 2 * I + j], h[r * 2 * I + I + j]));
}

/* grid T: y (P, D) f32 rows in expert order, slot (T·k), w (T·k) -> out (T, D) */
static __global__ void combine_kernel(const float *__restrict__ y, const int32_t *__restrict__ slot, const float *__restrict__ w, int k, int D,
                                      float *__restrict__ out)
{
    const int t = blockIdx.x;
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float s = 0.f;
        for (int j = 0; j < k; j++) s += w[t * k + j] * y[(size_t)slot[t * k + j] * D + c];
        out[(size_t)t * D + c] = s;
    }
}

#endif
