/* ops.cu — the forward pass's f32 operations on the GPU: the norms, softmax, activations, bias
 * and residual adds, bf16 rounding, rotary embedding and its MRoPE angles, the router's top-k.
 * References: the mode_<op>_ref of lib/ops.h (mode_f32_to_bf16 for the rounding); test:
 * tests/kernels/test_ops.c. The bf16 GEMM of the same header section is in gemm.cu.
 *
 * Each op: a __global__ kernel, a launcher on the caller's stream, the C entry (mode_cuda.h) that
 * validates sizes and pointers (MODE_EUSAGE naming the function; an empty op is MODE_OK and
 * launches nothing) and checks the launch. Row operations give a row to a warp when it has at most
 * ROW_WARP_MAX elements (q/k norms over a 128-wide head, the router) and to a 256-thread block
 * otherwise (the hidden state), reductions in f32 through warp shuffles; rows and elements are
 * covered by grid-stride loops, so any int64 count fits the grid. The arithmetic follows the
 * reference (1/sqrtf, not rsqrtf; no fast-math) with the CUDA math library's expf, tanhf, erff,
 * sinf/cosf (≤ 2 ulp); the CPU reference computes exp and erf with lib/vmath.c's polynomials
 * (≤ 1.05 and 1.27 ulp) and gelu-tanh as x·σ(2z), the same function: so the last ulps of those,
 * the order of the reductions and FMA contraction differ. Adds, the bias, the bf16 rounding and
 * the MRoPE angles are exact and equal the reference bit for bit.
 *
 * Memory-bound, every one: bytes per op at realistic shapes are in kernels/NOTES.md. */
#include "common.cuh"
extern "C" {
#include "../lib/ops.h" /* MODE_TOPK_MAX_EXPERTS */
}

#include <math.h>
#include <stdint.h>

#define WARP 32
#define FULL 0xffffffffu
#define ROW_WARP_MAX 1024     /* longest row given to one warp: 32 elements a lane */
#define ROW_BLOCK 256         /* threads of a block-per-row reduction (d = 2048: 8 elements each) */
#define WARPS_PER_BLOCK 8     /* rows of a warp-per-row launch sharing a block */
#define GRID_MAX (1u << 15)   /* blocks of a launch (8M threads, ~30 waves of an H100); grid-stride loops do the rest,
                                 * and a test shape beyond it runs them */

/* ---- reductions ---------------------------------------------------------------------------- */

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = WARP / 2; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

/* the reference's maximum: `v > m ? v : m` from -inf, so a NaN never becomes the maximum */
__device__ __forceinline__ float max_of(float v, float m) { return v > m ? v : m; }

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = WARP / 2; o; o >>= 1) v = max_of(__shfl_xor_sync(FULL, v, o), v);
    return v;
}

/* The sum (MAX: the maximum) of v over the threads of a row: its warp, or with BLOCK the whole
 * block, every thread receiving the same value (each warp reduces the per-warp partials itself, in
 * the same order). sh: 32 floats of shared memory; the leading barrier lets the previous call's
 * readers finish before it is overwritten. Every thread of the block must call it. */
template <bool BLOCK, bool MAX>
__device__ __forceinline__ float row_reduce(float v, float *sh)
{
    v = MAX ? warp_max(v) : warp_sum(v);
    if (!BLOCK) return v;
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : (MAX ? -INFINITY : 0.0f);
    return MAX ? warp_max(v) : warp_sum(v);
}

/* A row's threads: with BLOCK the block (one row per block), else a warp (WARPS_PER_BLOCK rows per
 * block). first/step: the grid-stride sequence of rows; t, g: the thread's place in its row. */
struct row_geom {
    int64_t first, step;
    int t, g;
};

template <bool BLOCK>
__device__ __forceinline__ row_geom geom(void)
{
    row_geom r;
    const int64_t per = BLOCK ? 1 : blockDim.x / WARP;
    r.first = (int64_t)blockIdx.x * per + (BLOCK ? 0 : threadIdx.x / WARP);
    r.step = (int64_t)gridDim.x * per;
    r.t = BLOCK ? threadIdx.x : threadIdx.x % WARP;
    r.g = BLOCK ? blockDim.x : WARP;
    return r;
}

/* ---- kernels ------------------------------------------------------------------------------- */

/* y = w · (x · 1/sqrt(Σx²/d + eps)), the reference's order; x may be y (each element is read and
 * then written by the same thread) */
template <bool BLOCK>
__global__ void rmsnorm_kernel(const float *x, const float *__restrict__ w, float eps, int64_t n, int64_t d, float *y)
{
    __shared__ float sh[WARP];
    const row_geom G = geom<BLOCK>();
    for (int64_t r = G.first; r < n; r += G.step) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float ss = 0.0f;
        for (int64_t j = G.t; j < d; j += G.g) ss += xr[j] * xr[j];
        ss = row_reduce<BLOCK, false>(ss, sh);
        const float s = 1.0f / sqrtf(ss / (float)d + eps);
        for (int64_t j = G.t; j < d; j += G.g) yr[j] = w[j] * (xr[j] * s);
    }
}

/* y = (x − mean) · 1/sqrt(var + eps) · w + b, biased variance from a second pass as the reference */
template <bool BLOCK>
__global__ void layernorm_kernel(const float *x, const float *__restrict__ w, const float *__restrict__ b, float eps, int64_t n, int64_t d,
                                 float *y)
{
    __shared__ float sh[WARP];
    const row_geom G = geom<BLOCK>();
    for (int64_t r = G.first; r < n; r += G.step) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        float s = 0.0f;
        for (int64_t j = G.t; j < d; j += G.g) s += xr[j];
        const float mean = row_reduce<BLOCK, false>(s, sh) / (float)d;
        float v = 0.0f;
        for (int64_t j = G.t; j < d; j += G.g) {
            const float t = xr[j] - mean;
            v += t * t;
        }
        const float var = row_reduce<BLOCK, false>(v, sh) / (float)d;
        const float rs = 1.0f / sqrtf(var + eps);
        for (int64_t j = G.t; j < d; j += G.g) yr[j] = (xr[j] - mean) * rs * w[j] + b[j];
    }
}

/* in place: x = exp(x − max) / Σ; a row without a value above −inf becomes zeros (the reference) */
template <bool BLOCK>
__global__ void softmax_kernel(float *x, int64_t n, int64_t d)
{
    __shared__ float sh[WARP];
    const row_geom G = geom<BLOCK>();
    for (int64_t r = G.first; r < n; r += G.step) {
        float *xr = x + r * d;
        float m = -INFINITY;
        for (int64_t j = G.t; j < d; j += G.g) m = max_of(xr[j], m);
        m = row_reduce<BLOCK, true>(m, sh);
        if (m == -INFINITY) { /* the same m in every thread of the row: a uniform branch */
            for (int64_t j = G.t; j < d; j += G.g) xr[j] = 0.0f;
            continue;
        }
        float s = 0.0f;
        for (int64_t j = G.t; j < d; j += G.g) {
            const float e = expf(xr[j] - m);
            xr[j] = e;
            s += e;
        }
        const float inv = 1.0f / row_reduce<BLOCK, false>(s, sh);
        for (int64_t j = G.t; j < d; j += G.g) xr[j] *= inv;
    }
}

/* y (n, f) = silu(x[:, :f]) · x[:, f:] of x (n, 2f) */
__global__ void swiglu_kernel(const float *__restrict__ x, int64_t n, int64_t f, float *__restrict__ y)
{
    const int64_t tot = n * f;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / f, j = i - r * f;
        const float g = x[r * 2 * f + j], u = x[r * 2 * f + f + j];
        y[i] = g / (1.0f + expf(-g)) * u;
    }
}

__global__ void gelu_tanh_kernel(float *x, int64_t n)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi), as the reference */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

__global__ void gelu_erf_kernel(float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
}

__global__ void add_bias_kernel(float *__restrict__ y, const float *__restrict__ b, int64_t n, int64_t d)
{
    const int64_t tot = n * d;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) y[i] += b[i % d];
}

/* y += x; x may be y (then y doubles) */
__global__ void add_kernel(float *y, const float *x, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) y[i] += x[i];
}

/* mode_f32_to_bf16 (lib/core.c) in integers: a NaN keeps its sign and top payload bits and is
 * made quiet (| 0x40), everything else rounds to nearest even (the carry turns the largest
 * finite values into inf). __float2bfloat16_rn would return the canonical NaN instead. */
__global__ void round_bf16_kernel(const float *__restrict__ src, size_t n, uint16_t *__restrict__ dst)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t u = __float_as_uint(src[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            dst[i] = (uint16_t)((u >> 16) | 0x40);
            continue;
        }
        u += 0x7fffu + ((u >> 16) & 1u);
        dst[i] = (uint16_t)(u >> 16);
    }
}

/* rotate-half rotary embedding: a thread per (row, frequency j), its cos and sin computed once and
 * applied to the pair (j, j + half) of every head of the row */
__global__ void rope_kernel(float *x, int64_t n, int64_t ld, int n_head, int head_dim, const float *__restrict__ ang)
{
    const int half = head_dim / 2;
    const int64_t tot = n * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / half;
        const int j = (int)(i - r * half);
        const float c = cosf(ang[i]), s = sinf(ang[i]);
        float *q = x + r * ld + j;
        for (int h = 0; h < n_head; h++, q += head_dim) {
            const float x1 = q[0], x2 = q[half];
            q[0] = x1 * c - x2 * s;
            q[half] = x2 * c + x1 * s;
        }
    }
}

/* ang (n, half): the axis of frequency j as mode_mrope_angles_ref chooses it, one f32 product */
__global__ void mrope_angles_kernel(const int32_t *__restrict__ pos, int64_t n, int half, int sec1, int sec2, const float *__restrict__ inv_freq,
                                    float *__restrict__ ang)
{
    const int64_t tot = n * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < tot; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / half;
        const int j = (int)(i - t * half);
        const int axis = (j % 3 == 1 && j < 3 * sec1) ? 1 : (j % 3 == 2 && j < 3 * sec2) ? 2 : 0;
        ang[i] = (float)pos[axis * n + t] * inv_freq[j];
    }
}

/* (v, i) beats the best so far (bv, bi) of the selection: i < 0 is no candidate, a NaN is an
 * expert already taken; larger value first, equal values by lower index (the reference's stable
 * selection) */
__device__ __forceinline__ bool beats(float v, int i, float bv, int bi)
{
    return i >= 0 && !isnan(v) && (bi < 0 || v > bv || (v == bv && i < bi));
}

/* Router: a warp per row of E logits, kept in shared memory (E floats a warp). The softmax
 * denominator first, then k rounds of a (value, index) argmax over the logits; the owner lane
 * of each winner marks it taken (NaN), lane j keeps winner j. The reference's probabilities are
 * all 0 when no logit is above −inf and all NaN when one is NaN or +inf: its selection then keeps
 * the first k experts, and so does this. */
__global__ void topk_kernel(const float *__restrict__ logits, int64_t n, int E, int k, bool norm, int32_t *__restrict__ idx,
                            float *__restrict__ w)
{
    extern __shared__ float sh_logits[];
    const int lane = threadIdx.x % WARP, wib = threadIdx.x / WARP, wpb = blockDim.x / WARP;
    float *l = sh_logits + (size_t)wib * E; /* element e is only ever touched by lane e % 32 */
    for (int64_t r = (int64_t)blockIdx.x * wpb + wib; r < n; r += (int64_t)gridDim.x * wpb) {
        const float *src = logits + r * E;
        float m = -INFINITY;
        for (int e = lane; e < E; e += WARP) {
            const float v = src[e];
            l[e] = v;
            m = max_of(v, m);
        }
        m = warp_max(m);
        float s = 0.0f;
        if (m != -INFINITY) {
            for (int e = lane; e < E; e += WARP) s += expf(l[e] - m);
            s = warp_sum(s);
        }
        float p = 0.0f;
        int pi = lane;
        if (m == -INFINITY || isnan(s)) { /* uniform over the warp: m and s are reduced */
            p = m == -INFINITY ? 0.0f : NAN;
        } else {
            const float inv = 1.0f / s;
            for (int j = 0; j < k; j++) {
                float bv = 0.0f;
                int bi = -1;
                for (int e = lane; e < E; e += WARP)
                    if (beats(l[e], e, bv, bi)) bv = l[e], bi = e;
                for (int o = WARP / 2; o; o >>= 1) {
                    const float ov = __shfl_xor_sync(FULL, bv, o);
                    const int oi = __shfl_xor_sync(FULL, bi, o);
                    if (beats(ov, oi, bv, bi)) bv = ov, bi = oi;
                }
                if (lane == j) p = expf(bv - m) * inv, pi = bi;
                if (bi % WARP == lane) l[bi] = NAN;
            }
        }
        if (norm) { /* the k probabilities summed in the reference's order, j ascending */
            float t = 0.0f;
            for (int j = 0; j < k; j++) t += __shfl_sync(FULL, p, j);
            p /= t;
        }
        if (lane < k) {
            idx[r * k + lane] = pi;
            w[r * k + lane] = p;
        }
    }
}

/* ---- launchers ----------------------------------------------------------------------------- */

static unsigned grid_for(int64_t items, int64_t per_block)
{
    const int64_t b = (items + per_block - 1) / per_block;
    return b > (int64_t)GRID_MAX ? GRID_MAX : (unsigned)b;
}

/* a row kernel: a warp per row of at most ROW_WARP_MAX, else a block */
#define LAUNCH_ROWS(kernel, n, d, stream, ...) \
    do { \
        if ((d) <= ROW_WARP_MAX) \
            kernel<false><<<grid_for((n), WARPS_PER_BLOCK), WARPS_PER_BLOCK * WARP, 0, (stream)>>>(__VA_ARGS__); \
        else \
            kernel<true><<<grid_for((n), 1), ROW_BLOCK, 0, (stream)>>>(__VA_ARGS__); \
    } while (0)

#define ELEMENTWISE_THREADS 256

static int launch_rmsnorm(const float *x, const float *w, float eps, int64_t n, int64_t d, float *y, cudaStream_t s, struct mode_err *err)
{
    LAUNCH_ROWS(rmsnorm_kernel, n, d, s, x, w, eps, n, d, y);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_layernorm(const float *x, const float *w, const float *b, float eps, int64_t n, int64_t d, float *y, cudaStream_t s,
                            struct mode_err *err)
{
    LAUNCH_ROWS(layernorm_kernel, n, d, s, x, w, b, eps, n, d, y);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_softmax(float *x, int64_t n, int64_t d, cudaStream_t s, struct mode_err *err)
{
    LAUNCH_ROWS(softmax_kernel, n, d, s, x, n, d);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_swiglu(const float *x, int64_t n, int64_t f, float *y, cudaStream_t s, struct mode_err *err)
{
    swiglu_kernel<<<grid_for(n * f, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(x, n, f, y);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_gelu(float *x, int64_t n, bool tanh_approx, cudaStream_t s, struct mode_err *err)
{
    if (tanh_approx) gelu_tanh_kernel<<<grid_for(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(x, n);
    else gelu_erf_kernel<<<grid_for(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(x, n);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_add_bias(float *y, const float *b, int64_t n, int64_t d, cudaStream_t s, struct mode_err *err)
{
    add_bias_kernel<<<grid_for(n * d, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(y, b, n, d);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_add(float *y, const float *x, int64_t n, cudaStream_t s, struct mode_err *err)
{
    add_kernel<<<grid_for(n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(y, x, n);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_round_bf16(const float *src, size_t n, uint16_t *dst, cudaStream_t s, struct mode_err *err)
{
    round_bf16_kernel<<<grid_for((int64_t)n, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(src, n, dst);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_rope(float *x, int64_t n, int64_t ld, int n_head, int head_dim, const float *ang, cudaStream_t s, struct mode_err *err)
{
    rope_kernel<<<grid_for(n * (head_dim / 2), ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(x, n, ld, n_head, head_dim, ang);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int launch_mrope_angles(const int32_t *pos, int64_t n, int half, const int *sec, const float *inv_freq, float *ang, cudaStream_t s,
                               struct mode_err *err)
{
    mrope_angles_kernel<<<grid_for(n * half, ELEMENTWISE_THREADS), ELEMENTWISE_THREADS, 0, s>>>(pos, n, half, sec[1], sec[2], inv_freq, ang);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

#define TOPK_SMEM_MAX (32 * 1024) /* logits of a block's warps, under the 48 KB default */

static int launch_topk(const float *logits, int64_t n, int E, int k, bool norm, int32_t *idx, float *w, cudaStream_t s, struct mode_err *err)
{
    int wpb = TOPK_SMEM_MAX / (int)(E * sizeof(float)); /* 4096 experts: 2 warps */
    wpb = wpb < 1 ? 1 : wpb > WARPS_PER_BLOCK ? WARPS_PER_BLOCK : wpb;
    const size_t smem = (size_t)wpb * (size_t)E * sizeof(float);
    topk_kernel<<<grid_for(n, wpb), wpb * WARP, smem, s>>>(logits, n, E, k, norm, idx, w);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

/* ---- entry points -------------------------------------------------------------------------- */

/* n rows of d: sizes non-negative, n·d an int64 */
static int check_rows(const char *fn, int64_t n, int64_t d, struct mode_err *err)
{
    if (n < 0 || d < 0 || (d > 0 && n > INT64_MAX / d))
        return mode_err_set(err, MODE_EUSAGE, "%s: %lld rows of %lld: bad size", fn, (long long)n, (long long)d);
    return MODE_OK;
}

#define NULL_PTR(fn, err) mode_err_set((err), MODE_EUSAGE, "%s: null pointer", (fn))

extern "C" int mode_rmsnorm_cuda(const float *d_x, const float *d_w, float eps, int64_t n, int64_t d, float *d_y, void *stream,
                                 struct mode_err *err)
{
    int rc = check_rows("mode_rmsnorm_cuda", n, d, err);
    if (rc || n == 0 || d == 0) return rc;
    if (!d_x || !d_w || !d_y) return NULL_PTR("mode_rmsnorm_cuda", err);
    return launch_rmsnorm(d_x, d_w, eps, n, d, d_y, (cudaStream_t)stream, err);
}

extern "C" int mode_layernorm_cuda(const float *d_x, const float *d_w, const float *d_b, float eps, int64_t n, int64_t d, float *d_y,
                                   void *stream, struct mode_err *err)
{
    int rc = check_rows("mode_layernorm_cuda", n, d, err);
    if (rc || n == 0 || d == 0) return rc;
    if (!d_x || !d_w || !d_b || !d_y) return NULL_PTR("mode_layernorm_cuda", err);
    return launch_layernorm(d_x, d_w, d_b, eps, n, d, d_y, (cudaStream_t)stream, err);
}

extern "C" int mode_softmax_cuda(float *d_x, int64_t n, int64_t d, void *stream, struct mode_err *err)
{
    int rc = check_rows("mode_softmax_cuda", n, d, err);
    if (rc || n == 0 || d == 0) return rc;
    if (!d_x) return NULL_PTR("mode_softmax_cuda", err);
    return launch_softmax(d_x, n, d, (cudaStream_t)stream, err);
}

extern "C" int mode_swiglu_cuda(const float *d_x, int64_t n, int64_t f, float *d_y, void *stream, struct mode_err *err)
{
    int rc = check_rows("mode_swiglu_cuda", n, f > INT64_MAX / 2 ? -1 : 2 * f, err);
    if (rc || n == 0 || f == 0) return rc;
    if (!d_x || !d_y) return NULL_PTR("mode_swiglu_cuda", err);
    return launch_swiglu(d_x, n, f, d_y, (cudaStream_t)stream, err);
}

extern "C" int mode_gelu_cuda(float *d_x, int64_t n, bool tanh_approx, void *stream, struct mode_err *err)
{
    if (n < 0) return mode_err_set(err, MODE_EUSAGE, "mode_gelu_cuda: %lld elements", (long long)n);
    if (n == 0) return MODE_OK;
    if (!d_x) return NULL_PTR("mode_gelu_cuda", err);
    return launch_gelu(d_x, n, tanh_approx, (cudaStream_t)stream, err);
}

extern "C" int mode_add_bias_cuda(float *d_y, const float *d_b, int64_t n, int64_t d, void *stream, struct mode_err *err)
{
    int rc = check_rows("mode_add_bias_cuda", n, d, err);
    if (rc || n == 0 || d == 0) return rc;
    if (!d_y || !d_b) return NULL_PTR("mode_add_bias_cuda", err);
    return launch_add_bias(d_y, d_b, n, d, (cudaStream_t)stream, err);
}

extern "C" int mode_add_cuda(float *d_y, const float *d_x, int64_t n, void *stream, struct mode_err *err)
{
    if (n < 0) return mode_err_set(err, MODE_EUSAGE, "mode_add_cuda: %lld elements", (long long)n);
    if (n == 0) return MODE_OK;
    if (!d_y || !d_x) return NULL_PTR("mode_add_cuda", err);
    return launch_add(d_y, d_x, n, (cudaStream_t)stream, err);
}

extern "C" int mode_round_bf16_cuda(const float *d_src, size_t n, uint16_t *d_dst, void *stream, struct mode_err *err)
{
    if (n > (size_t)INT64_MAX) return mode_err_set(err, MODE_EUSAGE, "mode_round_bf16_cuda: %zu elements", n);
    if (n == 0) return MODE_OK;
    if (!d_src || !d_dst) return NULL_PTR("mode_round_bf16_cuda", err);
    return launch_round_bf16(d_src, n, d_dst, (cudaStream_t)stream, err);
}

extern "C" int mode_rope_cuda(float *d_x, int64_t n, int64_t ld, int n_head, int head_dim, const float *d_ang, void *stream,
                              struct mode_err *err)
{
    if (n < 0 || n_head < 1 || head_dim < 2 || head_dim % 2 || ld < (int64_t)n_head * head_dim || (n > 0 && ld > INT64_MAX / n))
        return mode_err_set(err, MODE_EUSAGE, "mode_rope_cuda: %lld rows of stride %lld, %d heads of %d (even, rows holding every head)",
                            (long long)n, (long long)ld, n_head, head_dim);
    if (n == 0) return MODE_OK;
    if (!d_x || !d_ang) return NULL_PTR("mode_rope_cuda", err);
    return launch_rope(d_x, n, ld, n_head, head_dim, d_ang, (cudaStream_t)stream, err);
}

extern "C" int mode_mrope_angles_cuda(const int32_t *d_pos, int64_t n, int head_dim, const int *section, const float *d_inv_freq, float *d_ang,
                                      void *stream, struct mode_err *err)
{
    if (n < 0 || head_dim < 2 || head_dim % 2 || n > INT64_MAX / 3)
        return mode_err_set(err, MODE_EUSAGE, "mode_mrope_angles_cuda: %lld positions, head_dim %d (even)", (long long)n, head_dim);
    if (!section) return NULL_PTR("mode_mrope_angles_cuda", err);
    if (section[0] < 0 || section[1] < 0 || section[2] < 0)
        return mode_err_set(err, MODE_EUSAGE, "mode_mrope_angles_cuda: section {%d, %d, %d} has a negative entry", section[0], section[1],
                            section[2]);
    if (n == 0) return MODE_OK;
    if (!d_pos || !d_inv_freq || !d_ang) return NULL_PTR("mode_mrope_angles_cuda", err);
    return launch_mrope_angles(d_pos, n, head_dim / 2, section, d_inv_freq, d_ang, (cudaStream_t)stream, err);
}

extern "C" int mode_topk_cuda(const float *d_logits, int64_t n, int n_expert, int k, bool norm, int32_t *d_idx, float *d_w, void *stream,
                              struct mode_err *err)
{
    if (n < 0 || n_expert < 1 || n_expert > MODE_TOPK_MAX_EXPERTS || k < 1 || k > WARP || k > n_expert)
        return mode_err_set(err, MODE_EUSAGE, "mode_topk_cuda: %lld rows, top-%d of %d experts (at most %d of at most %d)", (long long)n, k,
                            n_expert, WARP, MODE_TOPK_MAX_EXPERTS);
    if (n == 0) return MODE_OK;
    if (!d_logits || !d_idx || !d_w) return NULL_PTR("mode_topk_cuda", err);
    return launch_topk(d_logits, n, n_expert, k, norm, d_idx, d_w, (cudaStream_t)stream, err);
}
