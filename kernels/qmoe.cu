/* qmoe.cu — one MoE layer straight from GPTQ-packed experts whose widths differ per expert (2, 3,
 * 4, 8 bits; f16 group scales; gptqpack.h's layout, g_idx trivial; or 16: bf16 pairs in the same
 * word layout, no scales or zeros), for decoding (a few tokens):
 *   launch 1  per (token, selected expert) and block of outputs: gate and up GEMV from the packed
 *             words, SiLU(gate)·up into a scratch activation (T·k, I)
 *   launch 2  per token and block of outputs: the down GEMV of each of the token's k experts,
 *             weighted by its routing weight and summed: out (T, D)
 * The width is read per expert inside the launch. Each thread owns one output column n; the packed
 * words of column n sit at qweight[w·N + n], so a warp's loads of one word index are contiguous.
 * Per group: Σ_k q_k·x_k and Σ_k x_k (precomputed per group in shared memory) give
 * scale·(Σ q·x − zero·Σ x). Reference: mode_qmoe_ref (lib/qmoe.c); test: tests/kernels/test_qmoe.c.
 * Bytes (the floor): the packed words, scales and zeros of the k experts touched per token. */
#include "common.cuh"

#include <cuda_fp16.h>
#include <stdint.h>

struct qproj {
    const uint32_t *qw;
    const uint32_t *qz;
    const uint16_t *sc;
};

/* Σ_k q_k x_k over one group of `g` inputs starting at input k0 of column n (N columns), for b bits */
template <int B>
__device__ __forceinline__ float group_dot(const uint32_t *__restrict__ qw, int N, int n, int k0, int g, const float *__restrict__ x)
{
    float acc = 0.f;
    if constexpr (B == 16) {
        /* bf16 pairs: value 2w at the low half of word w, 2w + 1 at the high half */
        const int w0 = k0 / 2, nw = g / 2;
        constexpr int CH = 8;
        for (int c = 0; c < nw; c += CH) {
            uint32_t v[CH];
#pragma unroll
            for (int u = 0; u < CH; u++) v[u] = c + u < nw ? __ldg(qw + (size_t)(w0 + c + u) * N + n) : 0u;
#pragma unroll
            for (int u = 0; u < CH; u++) {
                if (c + u >= nw) break;
                const float *xw = x + (w0 + c + u) * 2;
                acc += __uint_as_float(v[u] << 16) * xw[0] + __uint_as_float(v[u] & 0xffff0000u) * xw[1];
            }
        }
        return acc;
    } else if constexpr (B != 3) {
        /* the group's words first (independent loads in flight), then the arithmetic */
        constexpr int per = 32 / B, CH = 8;
        constexpr uint32_t mask = (1u << B) - 1;
        const int w0 = k0 / per, nw = g / per;
        for (int c = 0; c < nw; c += CH) {
            uint32_t v[CH];
#pragma unroll
            for (int u = 0; u < CH; u++) v[u] = c + u < nw ? __ldg(qw + (size_t)(w0 + c + u) * N + n) : 0u;
#pragma unroll
            for (int u = 0; u < CH; u++) {
                if (c + u >= nw) break;
                const float *xw = x + (w0 + c + u) * per;
#pragma unroll
                for (int j = 0; j < per; j++) acc += (float)((v[u] >> (B * j)) & mask) * xw[j];
            }
        }
        return acc;
    } else {
        /* 32 values in 3 words, a little-endian bit stream */
        for (int c = k0 / 32; c < (k0 + g) / 32; c++) {
            const uint64_t a = qw[(size_t)(3 * c) * N + n], b = qw[(size_t)(3 * c + 1) * N + n], d = qw[(size_t)(3 * c + 2) * N + n];
            const uint64_t lo = a | (b << 32); /* bits 0..63 of the 96 */
            const float *xc = x + 32 * c;
#pragma unroll
            for (int j = 0; j < 21; j++) acc += (float)((lo >> (3 * j)) & 7u) * xc[j];
            const uint64_t hi = (b >> 31) | (d << 1); /* bits 63..95 shifted to 0 */
#pragma unroll
            for (int j = 21; j < 32; j++) acc += (float)((hi >> (3 * j - 63)) & 7u) * xc[j];
        }
        return acc;
    }
    return acc;
}

__device__ __forceinline__ float proj_dot(const qproj &p, int bits, int N, int K, int g, int n, const float *x, const float *xsum)
{
    float acc = 0.f;
    const int G = K / g;
    for (int gi = 0; gi < G; gi++) {
        float d;
        switch (bits) {
        case 2: d = group_dot<2>(p.qw, N, n, gi * g, g, x); break;
        case 3: d = group_dot<3>(p.qw, N, n, gi * g, g, x); break;
        case 4: d = group_dot<4>(p.qw, N, n, gi * g, g, x); break;
        case 16: acc += group_dot<16>(p.qw, N, n, gi * g, g, x); continue; /* bf16: no scale, no zero */
        default: d = group_dot<8>(p.qw, N, n, gi * g, g, x); break;
        }
        const float s = __half2float(__ushort_as_half(p.sc[(size_t)gi * N + n]));
        acc += s * (d - mode_zero_at(p.qz, N, bits, gi, n) * xsum[gi]);
    }
    return acc;
}

enum { COLS = 32, SPLIT = 8 }; /* a block: 32 output columns x 8 slices of the groups */

/* Σ over the groups gi ≡ s (mod SPLIT) of scale·(Σ q·x − zero·Σ x) for column n */
__device__ __forceinline__ float proj_dot_split(const qproj &p, int bits, int N, int K, int g, int n, int s, const float *x, const float *xsum)
{
    float acc = 0.f;
    const int G = K / g;
    for (int gi = s; gi < G; gi += SPLIT) {
        float d;
        switch (bits) {
        case 2: d = group_dot<2>(p.qw, N, n, gi * g, g, x); break;
        case 3: d = group_dot<3>(p.qw, N, n, gi * g, g, x); break;
        case 4: d = group_dot<4>(p.qw, N, n, gi * g, g, x); break;
        case 16: acc += group_dot<16>(p.qw, N, n, gi * g, g, x); continue; /* bf16: no scale, no zero */
        default: d = group_dot<8>(p.qw, N, n, gi * g, g, x); break;
        }
        const float sc = __half2float(__ushort_as_half(p.sc[(size_t)gi * N + n]));
        acc += sc * (d - mode_zero_at(p.qz, N, bits, gi, n) * xsum[gi]);
    }
    return acc;
}

__global__ void qmoe_gate_up_split_kernel(mode_qmoe_layer L, int k, const float *__restrict__ x, const int32_t *__restrict__ experts,
                                          float *__restrict__ act, float *__restrict__ out, int64_t n_out)
{
    extern __shared__ float sm[];
    { /* the output the down launch accumulates into starts at zero */
        const int64_t tid = ((int64_t)blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x,
                      all = (int64_t)gridDim.x * gridDim.y * blockDim.x;
        for (int64_t i = tid; i < n_out; i += all) out[i] = 0.f;
    }
    const int D = L.d, I = L.i, g = L.group_d, G = D / g;
    float *xs = sm, *xsum = sm + D, *part = xsum + G; /* part: 2 x SPLIT x COLS */
    const int p = blockIdx.x, t = p / k, e = experts[p];
    for (int c = threadIdx.x; c < D; c += blockDim.x) xs[c] = x[(size_t)t * D + c];
    __syncthreads();
    {
        const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
        for (int gi = warp; gi < G; gi += blockDim.x / 32) {
            float s = 0.f;
            for (int c = lane; c < g; c += 32) s += xs[gi * g + c];
            for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
            if (!lane) xsum[gi] = s;
        }
    }
    __syncthreads();
    const int col = threadIdx.x % COLS, sl = threadIdx.x / COLS, n = blockIdx.y * COLS + col;
    float a = 0.f, b = 0.f;
    if (n < I && e >= 0 && e < L.n_expert) {
        const int bits = L.bits[e];
        const int64_t *off = L.off + (size_t)e * 9;
        qproj gp = {L.qweight + off[0], L.qzeros + off[1], L.scales + off[2]};
        qproj up = {L.qweight + off[3], L.qzeros + off[4], L.scales + off[5]};
        a = proj_dot_split(gp, bits, I, D, g, n, sl, xs, xsum);
        b = proj_dot_split(up, bits, I, D, g, n, sl, xs, xsum);
    }
    part[sl * COLS + col] = a;
    part[(SPLIT + sl) * COLS + col] = b;
    __syncthreads();
    if (sl == 0 && n < I && e >= 0 && e < L.n_expert) {
        float sa = 0.f, sb = 0.f;
        for (int q = 0; q < SPLIT; q++) sa += part[q * COLS + col], sb += part[(SPLIT + q) * COLS + col];
        act[(size_t)p * I + n] = sa / (1.f + __expf(-sa)) * sb;
    }
}

/* per (token, expert) and 32 output columns: the expert's down GEMV, weighted, added into out */
__global__ void qmoe_down_pair_kernel(mode_qmoe_layer L, int k, const float *__restrict__ act, const int32_t *__restrict__ experts,
                                      const float *__restrict__ weights, float *__restrict__ out)
{
    extern __shared__ float sm[];
    const int D = L.d, I = L.i, g = L.group_i, G = I / g;
    float *as = sm, *asum = sm + I, *part = asum + G;
    const int p = blockIdx.x, t = p / k, e = experts[p];
    for (int c = threadIdx.x; c < I; c += blockDim.x) as[c] = act[(size_t)p * I + c];
    __syncthreads();
    /* group sums: one warp per group, shuffled */
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    for (int gi = warp; gi < G; gi += blockDim.x / 32) {
        float s = 0.f;
        for (int c = lane; c < g; c += 32) s += as[gi * g + c];
        for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (!lane) asum[gi] = s;
    }
    __syncthreads();
    const int col = threadIdx.x % COLS, sl = threadIdx.x / COLS, n = blockIdx.y * COLS + col;
    float acc = 0.f;
    if (n < D && e >= 0 && e < L.n_expert) {
        const int64_t *off = L.off + (size_t)e * 9;
        qproj dp = {L.qweight + off[6], L.qzeros + off[7], L.scales + off[8]};
        acc = proj_dot_split(dp, L.bits[e], D, I, g, n, sl, as, asum);
    }
    part[sl * COLS + col] = acc;
    __syncthreads();
    if (sl == 0 && n < D && e >= 0 && e < L.n_expert) {
        float s = 0.f;
        for (int q = 0; q < SPLIT; q++) s += part[q * COLS + col];
        atomicAdd(out + (size_t)t * D + n, weights[p] * s);
    }
}

__global__ void qmoe_gate_up_kernel(mode_qmoe_layer L, int k, const float *__restrict__ x, const int32_t *__restrict__ experts,
                                    float *__restrict__ act)
{
    extern __shared__ float sm[];
    const int D = L.d, I = L.i, g = L.group_d, G = D / g;
    float *xs = sm, *xsum = sm + D;
    const int p = blockIdx.x, t = p / k, e = experts[p];
    for (int c = threadIdx.x; c < D; c += blockDim.x) xs[c] = x[(size_t)t * D + c];
    __syncthreads();
    for (int gi = threadIdx.x; gi < G; gi += blockDim.x) {
        float s = 0.f;
        for (int c = 0; c < g; c++) s += xs[gi * g + c];
        xsum[gi] = s;
    }
    __syncthreads();
    const int n = blockIdx.y * blockDim.x + threadIdx.x;
    if (n >= I || e < 0 || e >= L.n_expert) return;
    const int bits = L.bits[e];
    const int64_t *off = L.off + (size_t)e * 9;
    qproj gp = {L.qweight + off[0], L.qzeros + off[1], L.scales + off[2]};
    qproj up = {L.qweight + off[3], L.qzeros + off[4], L.scales + off[5]};
    const float a = proj_dot(gp, bits, I, D, g, n, xs, xsum), b = proj_dot(up, bits, I, D, g, n, xs, xsum);
    act[(size_t)p * I + n] = a / (1.f + __expf(-a)) * b;
}

__global__ void qmoe_down_kernel(mode_qmoe_layer L, int k, const float *__restrict__ act, const int32_t *__restrict__ experts,
                                 const float *__restrict__ weights, float *__restrict__ out)
{
    extern __shared__ float sm[];
    const int D = L.d, I = L.i, g = L.group_i, G = I / g;
    float *as = sm, *asum = sm + I;
    const int t = blockIdx.x, n = blockIdx.y * blockDim.x + threadIdx.x;
    float acc = 0.f;
    for (int j = 0; j < k; j++) {
        const int p = t * k + j, e = experts[p];
        __syncthreads();
        for (int c = threadIdx.x; c < I; c += blockDim.x) as[c] = act[(size_t)p * I + c];
        __syncthreads();
        for (int gi = threadIdx.x; gi < G; gi += blockDim.x) {
            float s = 0.f;
            for (int c = 0; c < g; c++) s += as[gi * g + c];
            asum[gi] = s;
        }
        __syncthreads();
        if (n >= D || e < 0 || e >= L.n_expert) continue;
        const int64_t *off = L.off + (size_t)e * 9;
        qproj dp = {L.qweight + off[6], L.qzeros + off[7], L.scales + off[8]};
        acc += weights[p] * proj_dot(dp, L.bits[e], D, I, g, n, as, asum);
    }
    if (n < D) out[(size_t)t * D + n] = acc;
}

extern "C" int mode_qmoe_decode_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts,
                                     const float *d_weights, float *d_act, float *d_out, void *stream, struct mode_err *err)
{
    if (!L || T < 0 || k < 1 || L->d < 32 || L->i < 32 || L->group_d < 32 || L->group_i < 32 || L->d % L->group_d || L->i % L->group_i ||
        L->group_d % 32 || L->group_i % 32)
        return mode_err_set(err, MODE_EUSAGE, "mode_qmoe_decode_cuda: dimensions and groups must be multiples of 32 (groups dividing them)");
    if (T == 0) return MODE_OK;
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    cudaStream_t s = (cudaStream_t)stream;
    const size_t sm1 = sizeof(float) * (size_t)(L->d + L->d / L->group_d + 2 * SPLIT * COLS),
                 sm2 = sizeof(float) * (size_t)(L->i + L->i / L->group_i + SPLIT * COLS);
    if (sm2 > 200 * 1024 || sm1 > 200 * 1024) { /* the first version: one thread per column, whole K */
        const int threads = 128;
        const size_t s1 = sizeof(float) * (size_t)(L->d + L->d / L->group_d), s2 = sizeof(float) * (size_t)(L->i + L->i / L->group_i);
        dim3 g1((unsigned)(T * k), (unsigned)((L->i + threads - 1) / threads)), g2((unsigned)T, (unsigned)((L->d + threads - 1) / threads));
        qmoe_gate_up_kernel<<<g1, threads, s1, s>>>(*L, k, d_x, d_experts, d_act);
        CUDA_CHECK_LAUNCH(err);
        qmoe_down_kernel<<<g2, threads, s2, s>>>(*L, k, d_act, d_experts, d_weights, d_out);
        CUDA_CHECK_LAUNCH(err);
        return MODE_OK;
    }
    if (sm2 > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(qmoe_down_pair_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm2), err);
    if (sm1 > 48 * 1024) CUDA_CHECK(cudaFuncSetAttribute(qmoe_gate_up_split_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm1), err);
    dim3 g1((unsigned)(T * k), (unsigned)((L->i + COLS - 1) / COLS)), g2((unsigned)(T * k), (unsigned)((L->d + COLS - 1) / COLS));
    qmoe_gate_up_split_kernel<<<g1, COLS * SPLIT, sm1, s>>>(*L, k, d_x, d_experts, d_act, d_out, (int64_t)T * L->d);
    CUDA_CHECK_LAUNCH(err);
    qmoe_down_pair_kernel<<<g2, COLS * SPLIT, sm2, s>>>(*L, k, d_act, d_experts, d_weights, d_out);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

extern "C" int mode_qmoe_bench_cuda(const struct mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts,
                                    const float *d_weights, int n_pool, float *d_act, float *d_out, int iters, double *median_us,
                                    double *graph_us, struct mode_err *err)
{
    if (n_pool < 1 || iters < 1) return mode_err_set(err, MODE_EUSAGE, "mode_qmoe_bench_cuda: empty pool or no iteration");
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s), err);
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a), err);
    CUDA_CHECK(cudaEventCreate(&b), err);
    int rc = MODE_OK;
    for (int w = 0; w < 10 && !rc; w++) /* warm-up */
        rc = mode_qmoe_decode_cuda(L, T, k, d_x, d_experts + (size_t)(w % n_pool) * T * k, d_weights + (size_t)(w % n_pool) * T * k, d_act, d_out, s, err);
    double *t = (double *)malloc(sizeof *t * (size_t)iters);
    if (!t) return mode_err_oom(err, sizeof *t * (size_t)iters, "timings");
    for (int it = 0; it < iters && !rc; it++) {
        const int p = it % n_pool;
        CUDA_CHECK(cudaEventRecord(a, s), err);
        rc = mode_qmoe_decode_cuda(L, T, k, d_x, d_experts + (size_t)p * T * k, d_weights + (size_t)p * T * k, d_act, d_out, s, err);
        CUDA_CHECK(cudaEventRecord(b, s), err);
        CUDA_CHECK(cudaEventSynchronize(b), err);
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, a, b), err);
        t[it] = ms * 1e3;
    }
    if (!rc) {
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        *median_us = t[iters / 2];
    }
    if (!rc && graph_us) {
        /* one graph per routing of the pool: replaying graph p runs the layer on routing p */
        const int ng = n_pool < 64 ? n_pool : 64;
        cudaGraphExec_t *ge = (cudaGraphExec_t *)calloc((size_t)ng, sizeof *ge);
        for (int p = 0; p < ng && !rc; p++) {
            cudaGraph_t gr;
            CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), err);
            rc = mode_qmoe_decode_cuda(L, T, k, d_x, d_experts + (size_t)p * T * k, d_weights + (size_t)p * T * k, d_act, d_out, s, err);
            CUDA_CHECK(cudaStreamEndCapture(s, &gr), err);
            CUDA_CHECK(cudaGraphInstantiate(&ge[p], gr, 0), err);
            CUDA_CHECK(cudaGraphDestroy(gr), err);
        }
        for (int it = 0; it < iters && !rc; it++) {
            CUDA_CHECK(cudaEventRecord(a, s), err);
            CUDA_CHECK(cudaGraphLaunch(ge[it % ng], s), err);
            CUDA_CHECK(cudaEventRecord(b, s), err);
            CUDA_CHECK(cudaEventSynchronize(b), err);
            float ms;
            CUDA_CHECK(cudaEventElapsedTime(&ms, a, b), err);
            t[it] = ms * 1e3;
        }
        if (!rc) {
            qsort(t, (size_t)iters, sizeof *t, cmp_double);
            *graph_us = t[iters / 2];
        }
        for (int p = 0; p < ng; p++)
            if (ge[p]) cudaGraphExecDestroy(ge[p]);
        free(ge);
    }
    free(t);
    cudaEventDestroy(a), cudaEventDestroy(b), cudaStreamDestroy(s);
    return rc;
}
