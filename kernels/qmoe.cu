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
 * scale·(Σ q·x − zero·Σ x). That is v1–v3 (v3, the default, runs launch 2 per (token, expert) pair
 * and adds with atomics); v5 (further down, chosen with mode_qmoe_decode_version)
 * keeps the two launches but groups the pairs by expert so that an expert's words are read once for
 * all its tokens. Reference: mode_qmoe_ref (lib/qmoe.c); test: tests/kernels/test_qmoe.c; times and
 * floors: kernels/NOTES.md. Bytes (the floor): the packed words, scales and zeros of the distinct
 * experts the routing touches. */
#include "common.cuh"

#include <cuda_fp16.h>
#include <stdint.h>

#include <atomic>

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

/* ---- v5: the (token, slot) pairs grouped by expert ----------------------------------------------
 * Two launches as v3, but a block works on one expert and one tile of output columns for every
 * pair routed to that expert, so that each packed word is read once per layer call however many
 * tokens share the expert (v3 read it once per pair: 4x the bytes at 64 tokens).
 *
 * Grouping, on the device and without a sort: the grid is (column tiles, U) with U = min(n_expert,
 * T·k), the most distinct experts the routing can hold; block (tile, u) stages the T·k routing
 * entries in shared memory, marks the experts present in a bitmask, takes the u-th present expert
 * in ascending order and compacts that expert's pair indices (ascending, with ballots). Every block
 * of a launch derives the same ranking from the same routing; a block whose rank is past the number
 * of distinct experts returns (at 1 token top-8: none; at 8 tokens ~12 of 64 ranks). The grid is
 * thus sized to the work: at 1 token 8 experts x 48 gate/up tiles = 384 blocks and 8 x 64 down tiles
 * = 512 blocks, one wave each on 132 SMs (3 and 4 resident blocks per SM); at 64 tokens 128 x 48 and
 * 128 x 64 blocks, many waves.
 *
 * A block: `cl` column lanes x `slots` chunk slots, cl·slots threads. A column lane covers 4 adjacent
 * output columns with one uint4 load per word row (the words of one row of K are contiguous over
 * the columns); a chunk is 32 consecutive inputs (b word rows at b bits: whole words at every
 * width, 3 bits included, and inside one group since groups are multiples of 32), so a thread
 * holding chunk c of 4 columns loads b uint4 per projection and the K split over the slots is
 * reduced by shuffles inside a warp and shared memory across warps. The tile's scales and zero
 * points are staged in shared memory (as f32 and 2^23 + zero). Geometry (geometry()): slots = chunks rounded up to 8, at most
 * 64; cl = 8 up to 32 slots, else 4. Qwen3-VL-30B-A3B: gate/up K 2048 = 64 chunks, 4 x 64 = 256
 * threads, 16 columns per tile (48 tiles of 768): every thread loads its one chunk of gate and of
 * up at once, 2 x 4 uint4 = 128 B at 4 bits; down K 768 = 24 chunks, 8 x 24 = 192 threads, 32
 * columns per tile (64 tiles of 2048): 4 uint4 = 64 B per thread.
 *
 * Tokens: the expert's pairs in passes of up to TB (1 when T is 1, else 4): their rows (x for
 * gate/up, act for down) staged in shared memory (32-value chunks padded to 36 floats), the
 * accumulators of 4 columns x nt tokens per projection in registers; a pass of nt tokens is its own
 * instantiation (NT = nt), an expert with more than TB pairs loops, re-reading its words (from L2
 * by then). The first batch of words is issued before the rows, scales and zeros are staged, so
 * that those round trips overlap the words' own.
 *
 * Arithmetic per level: the level goes to f32 without a conversion instruction: its byte spliced
 * under the exponent of 2^23 (one PRMT: 0x4B0000qq reads 8388608 + q), minus 2^23 + zero (one FADD,
 * exact), then one FFMA per token; the group scale multiplies the chunk's partial sum. v3 spends a
 * cvt.rn.f32.u32 per level (I2F, on a narrower pipe than FFMA) and a shared load per value.
 * Bytes in flight, one token W4 (kernels/NOTES.md has the arithmetic): gate/up 384 blocks x 256 x
 * 128 B = 12.6 MB requested at once, i.e. the phase's whole words; down 512 x 192 x 64 B = 6.3 MB:
 * what the memory system holds in flight bounds it, not the issue. */

namespace v5 {

constexpr int XPAD = 36;                /* floats per staged 32-value chunk: 36c mod 32 = 4c puts the chunks
                                           a warp's slots read (4 or 8 consecutive ones) in distinct banks
                                           and keeps float4 reads aligned */
constexpr uint32_t MAGIC = 0x4B000000u; /* 2^23 in f32: 0x4B000000 | q reads as 8388608 + q for q < 2^23 */

struct args {
    mode_qmoe_layer L;
    int T, k;
    const float *src;       /* gate/up: x (T, D); down: act (T·k, I) */
    const int32_t *experts; /* (T, k) */
    const float *weights;   /* (T, k) */
    float *act;             /* (T·k, I): written by gate/up */
    float *out;             /* (T, D): zeroed by gate/up, accumulated by down */
    int cl, lcl;            /* column lanes (4 or 8, log2 in lcl): a tile is 4·cl columns */
    int slots;              /* chunk slots: blockDim.x = cl·slots */
    uint32_t magic;         /* MAGIC, passed at run time: as a constant ptxas gave it the PRMT's immediate operand
                               and spent a register and a MOV on each byte selector */
};

/* the block's expert, in shared memory: each pass reads its pointers there, so that ptxas cannot hoist
 * the addresses derived from them out of the loop over the passes (it did, and spilled them) */
struct ctx {
    const uint32_t *qw[2]; /* gate's and up's words (P 2), or down's */
    const uint32_t *qz[2]; /* zeros and scales of the projections */
    const uint16_t *sc[2];
    int e, ne;             /* the expert (-1: none for this rank), its number of pairs */
    int bits, al;          /* its width; al: the qweight offsets multiples of 4 words (uint4 loads) */
};

/* byte offsets into the dynamic shared memory; the same function sizes it on the host */
struct smem_layout {
    size_t xs, qp, red, mask, ex, list, misc, total;
};

__host__ __device__ inline smem_layout layout(int TB, int P, int nch, int G, int threads, int C, int E, int Tk)
{
    smem_layout s;
    size_t o = 0;
    s.xs = o, o += sizeof(float) * (size_t)TB * nch * XPAD;              /* staged rows (TB, nch, 36) */
    s.qp = o, o += sizeof(float) * (size_t)2 * P * G * C;                /* scales, then 2^23 + zeros (P, G, C) */
    s.red = o, o += sizeof(float) * (size_t)(threads / 32) * P * TB * C; /* per warp (P, TB, C) */
    s.mask = o, o += sizeof(uint32_t) * (size_t)((E + 31) / 32);         /* experts present */
    s.ex = o, o += sizeof(int32_t) * (size_t)Tk;                         /* the routing */
    s.list = o, o += sizeof(int32_t) * (size_t)Tk;                       /* this expert's pairs */
    o = (o + 15) / 16 * 16, s.misc = o, o += sizeof(ctx);               /* the expert (ctx) */
    s.total = o;
    return s;
}

template <int B>
constexpr int ROWS = B == 16 ? 8 : B; /* word rows per load batch (a 16-bit chunk in two halves) */

template <bool AL>
__device__ __forceinline__ uint4 ld_words(const uint32_t *p)
{
    if constexpr (AL) return __ldg(reinterpret_cast<const uint4 *>(p));
    return make_uint4(__ldg(p), __ldg(p + 1), __ldg(p + 2), __ldg(p + 3));
}

__device__ __forceinline__ uint32_t comp(const uint4 &v, int q) { return q == 0 ? v.x : q == 1 ? v.y : q == 2 ? v.z : v.w; }

/* byte b of m under the exponent of 2^23: 8388608 + byte (b a constant: one PRMT); mg = MAGIC */
__device__ __forceinline__ float lvl8(uint32_t m, int b, uint32_t mg) { return __uint_as_float(__byte_perm(m, mg, 0x7440u | (uint32_t)b)); }

/* value j (0..31) of the 96-bit little-endian stream a, b, d of 3-bit levels (j a constant) */
__device__ __forceinline__ uint32_t bits3(uint32_t a, uint32_t b, uint32_t d, int j)
{
    const int p = 3 * j, w = p / 32, sh = p % 32;
    const uint32_t lo = w == 0 ? a : w == 1 ? b : d, hi = w == 0 ? b : w == 1 ? d : 0u;
    return (sh <= 29 ? lo >> sh : __funnelshift_r(lo, hi, sh)) & 7u;
}

/* the words of chunk c (half h at 16 bits) of the thread's 4 columns; qw points at its first column;
 * AL: uint4 loads (the projection's offset a multiple of 4 words), else 4 word loads */
template <int B, bool AL>
__device__ __forceinline__ void issue(uint4 (&v)[ROWS<B>], const uint32_t *qw, int N, int c, int h)
{
    const uint32_t *p = qw + ((size_t)B * c + (size_t)ROWS<B> * h) * N;
#pragma unroll
    for (int r = 0; r < ROWS<B>; r++) v[r] = ld_words<AL>(p + (size_t)r * N);
}

/* p[t] += f · x_t over the 4 values of a quad: f[i] = level − zero of value i, one FFMA per token */
template <int NT>
__device__ __forceinline__ void quad4(float (&p)[NT], const float (&f)[4], const float4 (&xv)[NT])
{
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float a = p[t];
        a = fmaf(f[0], xv[t].x, a), a = fmaf(f[1], xv[t].y, a), a = fmaf(f[2], xv[t].z, a), a = fmaf(f[3], xv[t].w, a);
        p[t] = a;
    }
}

/* acc[q][t] += Σ over the batch's values of w(q, value)·x_t(value) for the thread's 4 columns q;
 * xc: the staged chunk (the half's first value at 16 bits) of the pass's first row, xst: floats
 * between rows; qs: the 4 columns' scales of the chunk's group (qs + zoff: their 2^23 + zero); mg: MAGIC */
template <int B, int NT>
__device__ __forceinline__ void consume(const uint4 (&v)[ROWS<B>], const float *__restrict__ xc, int xst, const float *qs, int zoff,
                                        uint32_t mg, float (&acc)[4][NT])
{
    if constexpr (B == 16) {
        /* bf16 pairs: word r holds values 2r (low half) and 2r + 1; no scale, no zero */
#pragma unroll
        for (int h = 0; h < 4; h++) {
            float4 xv[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) xv[t] = *reinterpret_cast<const float4 *>(xc + t * xst + 4 * h);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const uint32_t w0 = comp(v[2 * h], q), w1 = comp(v[2 * h + 1], q);
                const float f[4] = {__uint_as_float(w0 << 16), __uint_as_float(w0 & 0xffff0000u), __uint_as_float(w1 << 16),
                                    __uint_as_float(w1 & 0xffff0000u)};
                quad4<NT>(acc[q], f, xv);
            }
        }
    } else {
        const float4 s4 = *reinterpret_cast<const float4 *>(qs), z4 = *reinterpret_cast<const float4 *>(qs + zoff);
        const float s[4] = {s4.x, s4.y, s4.z, s4.w}, zf[4] = {z4.x, z4.y, z4.z, z4.w};
        float part[4][NT];
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
            for (int t = 0; t < NT; t++) part[q][t] = 0.f;
        if constexpr (B == 2) {
            /* word r: values 16r..16r+15; (w >> 2u) & 0x03030303 has value 16r + 4b + u in byte b */
#pragma unroll
            for (int r = 0; r < 2; r++) {
                uint32_t m[4][4];
#pragma unroll
                for (int q = 0; q < 4; q++)
#pragma unroll
                    for (int u = 0; u < 4; u++) m[q][u] = (comp(v[r], q) >> (2 * u)) & 0x03030303u;
#pragma unroll
                for (int b = 0; b < 4; b++) {
                    float4 xv[NT];
#pragma unroll
                    for (int t = 0; t < NT; t++) xv[t] = *reinterpret_cast<const float4 *>(xc + t * xst + 16 * r + 4 * b);
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        const float f[4] = {lvl8(m[q][0], b, mg) - zf[q], lvl8(m[q][1], b, mg) - zf[q], lvl8(m[q][2], b, mg) - zf[q],
                                            lvl8(m[q][3], b, mg) - zf[q]};
                        quad4<NT>(part[q], f, xv);
                    }
                }
            }
        } else if constexpr (B == 3) {
            /* words 0, 1, 2: one 96-bit stream of the 32 values */
#pragma unroll
            for (int h = 0; h < 8; h++) {
                float4 xv[NT];
#pragma unroll
                for (int t = 0; t < NT; t++) xv[t] = *reinterpret_cast<const float4 *>(xc + t * xst + 4 * h);
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const uint32_t a = comp(v[0], q), b = comp(v[1], q), d = comp(v[2], q);
                    float f[4];
#pragma unroll
                    for (int i = 0; i < 4; i++) f[i] = __uint_as_float(mg | bits3(a, b, d, 4 * h + i)) - zf[q];
                    quad4<NT>(part[q], f, xv);
                }
            }
        } else if constexpr (B == 4) {
            /* word r: values 8r..8r+7; w & 0x0F0F0F0F has the even ones in bytes 0..3, (w >> 4) & .. the odd */
#pragma unroll
            for (int r = 0; r < 4; r++) {
                uint32_t lo[4], hi[4];
#pragma unroll
                for (int q = 0; q < 4; q++) lo[q] = comp(v[r], q) & 0x0F0F0F0Fu, hi[q] = (comp(v[r], q) >> 4) & 0x0F0F0F0Fu;
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    float4 xv[NT];
#pragma unroll
                    for (int t = 0; t < NT; t++) xv[t] = *reinterpret_cast<const float4 *>(xc + t * xst + 8 * r + 4 * h);
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        const float f[4] = {lvl8(lo[q], 2 * h, mg) - zf[q], lvl8(hi[q], 2 * h, mg) - zf[q], lvl8(lo[q], 2 * h + 1, mg) - zf[q],
                                            lvl8(hi[q], 2 * h + 1, mg) - zf[q]};
                        quad4<NT>(part[q], f, xv);
                    }
                }
            }
        } else {
            /* 8 bits: word r holds values 4r..4r+3, one per byte */
#pragma unroll
            for (int r = 0; r < 8; r++) {
                float4 xv[NT];
#pragma unroll
                for (int t = 0; t < NT; t++) xv[t] = *reinterpret_cast<const float4 *>(xc + t * xst + 4 * r);
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const uint32_t w = comp(v[r], q);
                    const float f[4] = {lvl8(w, 0, mg) - zf[q], lvl8(w, 1, mg) - zf[q], lvl8(w, 2, mg) - zf[q], lvl8(w, 3, mg) - zf[q]};
                    quad4<NT>(part[q], f, xv);
                }
            }
        }
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
            for (int t = 0; t < NT; t++) acc[q][t] = fmaf(s[q], part[q][t], acc[q][t]);
    }
}

/* one pass: NT pairs list[base..base+NT) of the block's expert through its projections at B bits.
 * smem: the kernel's dynamic shared memory, sl its layout. */
template <int P, int B, int NT, bool AL>
__device__ __forceinline__ void pass(const args &a, const smem_layout &sl, unsigned char *smem, int base)
{
    /* gate's and up's words of a chunk in one batch (2B ≤ 8 uint4) where the registers allow: up to
     * 2 tokens; with 3 or 4 tokens' accumulators up's words are issued after gate's are consumed */
    constexpr bool JOINT = P == 2 && B <= 4 && NT <= 2;
    constexpr int H = B == 16 ? 2 : 1;
    const int K = P == 2 ? a.L.d : a.L.i, N = P == 2 ? a.L.i : a.L.d, g = P == 2 ? a.L.group_d : a.L.group_i, G = K / g, nch = K / 32,
              xst = nch * XPAD, C = 4 * a.cl, lC = a.lcl + 2, col0 = blockIdx.x * C, cl = threadIdx.x & (a.cl - 1);
    float *xs = reinterpret_cast<float *>(smem + sl.xs), *qp = reinterpret_cast<float *>(smem + sl.qp),
          *red = reinterpret_cast<float *>(smem + sl.red);
    const int32_t *list = reinterpret_cast<const int32_t *>(smem + sl.list);
    const ctx &cx = *reinterpret_cast<const ctx *>(smem + sl.misc);
    uint4 v[JOINT ? 2 : 1][ROWS<B>];
    const int c0 = threadIdx.x >> a.lcl, n0 = col0 + 4 * cl;
    const uint32_t *qw0 = cx.qw[0] + n0, *qw1 = cx.qw[P - 1] + n0;
    /* the first batch in flight while the scales, zeros and rows are staged */
    if (c0 < nch) {
        issue<B, AL>(v[0], qw0, N, c0, 0);
        if constexpr (JOINT) issue<B, AL>(v[1], qw1, N, c0, 0);
    }
    if constexpr (B != 16) /* the tile's scales and 2^23 + zeros, (P, G, C) each */
#pragma unroll
        for (int p = 0; p < P; p++)
            for (int i = threadIdx.x; i < G * C; i += blockDim.x) {
                const int gi = i >> lC, n = col0 + (i & (C - 1));
                qp[p * G * C + i] = __half2float(__ushort_as_half(__ldg(cx.sc[p] + (size_t)gi * N + n)));
                qp[(P + p) * G * C + i] = 8388608.f + mode_zero_at(cx.qz[p], N, B, gi, n);
            }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int pr = list[base + t];
        const float *row = a.src + (size_t)(P == 2 ? pr / a.k : pr) * K;
        for (int kk = 4 * threadIdx.x; kk < K; kk += 4 * blockDim.x)
            *reinterpret_cast<float4 *>(xs + t * xst + (kk / 32) * XPAD + kk % 32) = __ldg(reinterpret_cast<const float4 *>(row + kk));
    }
    __syncthreads();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    /* one projection at a time (one set of accumulators live), its K split over the slots reduced
     * by shuffles inside the warp, across the warps through shared memory */
#pragma unroll
    for (int p = 0; p < P; p++) {
        float acc[4][NT];
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
            for (int t = 0; t < NT; t++) acc[q][t] = 0.f;
        bool first = true;
        for (int c = c0; c < nch; c += a.slots, first = false) {
            const float *xc = xs + c * XPAD, *qs = qp + (p * G + c * 32 / g) * C + 4 * cl;
#pragma unroll
            for (int h = 0; h < H; h++) {
                if constexpr (JOINT) {
                    if (p == 1 && first) { /* up's first batch came with gate's */
                        consume<B, NT>(v[1], xc, xst, qs, P * G * C, a.magic, acc);
                        continue;
                    }
                }
                if (!first || p || h) issue<B, AL>(v[0], p ? qw1 : qw0, N, c, h);
                consume<B, NT>(v[0], xc + 16 * h, xst, qs, P * G * C, a.magic, acc);
            }
        }
#pragma unroll
        for (int q = 0; q < 4; q++)
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float r = acc[q][t];
                for (int o = a.cl; o < 32; o <<= 1) r += __shfl_xor_sync(0xffffffffu, r, o);
                if (lane < a.cl) red[((warp * P + p) * NT + t) * C + 4 * lane + q] = r;
            }
    }
    __syncthreads();
    const int nw = blockDim.x / 32;
    for (int i = threadIdx.x; i < NT * C; i += blockDim.x) {
        const int t = i / C, col = i - t * C, n = col0 + col, pr = list[base + t];
        float s0 = 0.f, s1 = 0.f;
        for (int w = 0; w < nw; w++) {
            s0 += red[((w * P) * NT + t) * C + col];
            if constexpr (P == 2) s1 += red[((w * P + 1) * NT + t) * C + col];
        }
        if constexpr (P == 2)
            a.act[(size_t)pr * a.L.i + n] = s0 / (1.f + __expf(-s0)) * s1;
        else
            atomicAdd(a.out + (size_t)(pr / a.k) * a.L.d + n, a.weights[pr] * s0);
    }
    /* the next pass writes xs and qp (read before the barrier above) and red only after its own
     * staging barrier: no barrier needed here */
}

/* an expert whose words are not 16-byte aligned (no layout in this tree makes one): word loads, one
 * pair a pass */
template <int P, int B>
__device__ __noinline__ void passes_unaligned(const args a, const smem_layout sl, unsigned char *smem, int ne)
{
    for (int base = 0; base < ne; base++) pass<P, B, 1, false>(a, sl, smem, base);
}

/* the ne pairs of the block's expert at B bits, TB at a time. One function per width, not inlined
 * into the kernel: inlined, the five widths' code shared one register allocation and ptxas spilled
 * hundreds of bytes in the inner loops (80 registers for TB 1), where each width alone needs none.
 * The arguments by value: a reference would put the kernel's parameters in local memory. */
template <int P, int B, int TB>
__device__ __noinline__ void passes(const args a, const smem_layout sl, unsigned char *smem, int ne)
{
    if (!reinterpret_cast<const ctx *>(smem + sl.misc)->al) {
        passes_unaligned<P, B>(a, sl, smem, ne);
        return;
    }
    for (int base = 0; base < ne; base += TB) {
        if constexpr (TB == 1) {
            pass<P, B, 1, true>(a, sl, smem, base);
        } else {
            switch (ne - base) {
            case 1: pass<P, B, 1, true>(a, sl, smem, base); break;
            case 2: pass<P, B, 2, true>(a, sl, smem, base); break;
            case 3: pass<P, B, 3, true>(a, sl, smem, base); break;
            default: pass<P, B, 4, true>(a, sl, smem, base); break;
            }
        }
    }
}

/* P 2: gate/up + SiLU·mul into act (and out zeroed); P 1: down, weighted, added into out.
 * Grid (N / (4·cl) tiles, U ranks), cl·slots threads. TB 1 (one token): few registers, 3 blocks of
 * 256 threads per SM; TB 4: up to 4 tokens' accumulators, 2 per SM. */
template <int P, int TB>
__global__ void __launch_bounds__(256, TB == 1 ? 3 : 2) qmoe_v5_kernel(args a)
{
    extern __shared__ __align__(16) unsigned char smraw[];
    const mode_qmoe_layer &L = a.L;
    if constexpr (P == 2) { /* the output the down launch accumulates into starts at zero */
        const int64_t n_out = (int64_t)a.T * L.d, tid = ((int64_t)blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x,
                      all = (int64_t)gridDim.x * gridDim.y * blockDim.x;
        for (int64_t i = tid; i < n_out; i += all) a.out[i] = 0.f;
    }
    const int K = P == 2 ? L.d : L.i, E = L.n_expert, Tk = a.T * a.k, C = 4 * a.cl, nch = K / 32;
    const smem_layout sl = layout(TB, P, nch, K / (P == 2 ? L.group_d : L.group_i), blockDim.x, C, E, Tk);
    uint32_t *mask = reinterpret_cast<uint32_t *>(smraw + sl.mask);
    int32_t *ex = reinterpret_cast<int32_t *>(smraw + sl.ex), *list = reinterpret_cast<int32_t *>(smraw + sl.list);
    ctx *cx = reinterpret_cast<ctx *>(smraw + sl.misc);
    /* which expert: the blockIdx.y-th of those the routing holds, ascending */
    const int nmw = (E + 31) / 32;
    for (int i = threadIdx.x; i < nmw; i += blockDim.x) mask[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < Tk; i += blockDim.x) {
        const int e = a.experts[i];
        ex[i] = e;
        if (e >= 0 && e < E) atomicOr(mask + e / 32, 1u << (e % 32));
    }
    __syncthreads();
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        int e = -1;
        if (lane == 0) {
            int r = (int)blockIdx.y;
            for (int w = 0; w < nmw; w++) {
                uint32_t m = mask[w];
                const int n = __popc(m);
                if (r < n) {
                    for (; r; r--) m &= m - 1;
                    e = w * 32 + __ffs(m) - 1;
                    break;
                }
                r -= n;
            }
        }
        e = __shfl_sync(0xffffffffu, e, 0);
        int cnt = 0;
        if (e >= 0)
            for (int b0 = 0; b0 < Tk; b0 += 32) { /* its pairs, ascending */
                const bool hit = b0 + lane < Tk && ex[b0 + lane] == e;
                const uint32_t m = __ballot_sync(0xffffffffu, hit);
                if (hit) list[cnt + __popc(m & ((1u << lane) - 1u))] = b0 + lane;
                cnt += __popc(m);
            }
        if (lane == 0) {
            cx->e = e, cx->ne = cnt;
            if (e >= 0) {
                const int64_t *off = L.off + (size_t)e * 9 + (P == 2 ? 0 : 6);
                bool al = true;
#pragma unroll
                for (int p = 0; p < 2; p++) {
                    const int pp = P == 2 ? p : 0;
                    cx->qw[p] = L.qweight + off[3 * pp], cx->qz[p] = L.qzeros + off[3 * pp + 1], cx->sc[p] = L.scales + off[3 * pp + 2];
                    al = al && (off[3 * pp] & 3) == 0;
                }
                cx->bits = L.bits[e], cx->al = al;
            }
        }
    }
    __syncthreads();
    if (cx->e < 0 || cx->ne == 0) return;

    const int ne = cx->ne;
    switch (cx->bits) {
    case 2: passes<P, 2, TB>(a, sl, smraw, ne); break;
    case 3: passes<P, 3, TB>(a, sl, smraw, ne); break;
    case 4: passes<P, 4, TB>(a, sl, smraw, ne); break;
    case 16: passes<P, 16, TB>(a, sl, smraw, ne); break;
    default: passes<P, 8, TB>(a, sl, smraw, ne); break;
    }
}

struct geom {
    int cl, slots, threads, C, tiles;
};

/* slots: the K chunks rounded up to 8, at most 64 (more chunks loop); cl 8 up to 32 slots, else 4 */
static geom geometry(int K, int N)
{
    const int nch = K / 32;
    int s = (nch + 7) / 8 * 8;
    if (s > 64) s = 64;
    const int cl = s <= 32 ? 8 : 4;
    return geom{cl, s, cl * s, 4 * cl, N / (4 * cl)};
}

/* the largest dynamic shared memory set per kernel so far (cudaFuncSetAttribute once, not per call:
 * a call inside a graph capture then does no more than launch) */
static std::atomic<int> smem_set[4];

template <int P, int TB>
static int launch(const args &a, const geom &gm, unsigned U, size_t smem, cudaStream_t s, struct mode_err *err)
{
    std::atomic<int> &set = smem_set[(P - 1) * 2 + (TB == 1 ? 0 : 1)];
    if (smem > 48 * 1024 && (int)smem > set.load()) {
        CUDA_CHECK(cudaFuncSetAttribute(qmoe_v5_kernel<P, TB>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem), err);
        set.store((int)smem);
    }
    qmoe_v5_kernel<P, TB><<<dim3((unsigned)gm.tiles, U), (unsigned)gm.threads, smem, s>>>(a);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

/* 1 when v5 takes this call: shared memory within V5_SMEM_MAX, the grid's rank dimension within
 * 65535 and the base pointers read with vector loads aligned; otherwise v3 runs it */
enum { V5_SMEM_MAX = 160 * 1024 }; /* under the 227 KB an sm_90 block may opt into, with room for 1 block */

static int run(const mode_qmoe_layer *L, int T, int k, const float *d_x, const int32_t *d_experts, const float *d_weights, float *d_act,
               float *d_out, cudaStream_t s, int *ran, struct mode_err *err)
{
    *ran = 0;
    const int Tk = T * k, TB = T == 1 ? 1 : 4;
    const unsigned U = (unsigned)(L->n_expert < Tk ? L->n_expert : Tk);
    const geom g1 = geometry(L->d, L->i), g2 = geometry(L->i, L->d);
    const size_t sm1 = layout(TB, 2, L->d / 32, L->d / L->group_d, g1.threads, g1.C, L->n_expert, Tk).total,
                 sm2 = layout(TB, 1, L->i / 32, L->i / L->group_i, g2.threads, g2.C, L->n_expert, Tk).total;
    if (U < 1 || U > 65535 || sm1 > V5_SMEM_MAX || sm2 > V5_SMEM_MAX || ((uintptr_t)L->qweight | (uintptr_t)d_x | (uintptr_t)d_act) % 16)
        return MODE_OK;
    *ran = 1;
    args a1 = {*L, T, k, d_x, d_experts, d_weights, d_act, d_out, g1.cl, g1.cl == 8 ? 3 : 2, g1.slots, MAGIC};
    args a2 = {*L, T, k, d_act, d_experts, d_weights, d_act, d_out, g2.cl, g2.cl == 8 ? 3 : 2, g2.slots, MAGIC};
    int rc = TB == 1 ? launch<2, 1>(a1, g1, U, sm1, s, err) : launch<2, 4>(a1, g1, U, sm1, s, err);
    if (!rc) rc = TB == 1 ? launch<1, 1>(a2, g2, U, sm2, s, err) : launch<1, 4>(a2, g2, U, sm2, s, err);
    return rc;
}

} // namespace v5

/* The decode version (process-wide): 3 stays the default until v5 has been measured on a GPU
 * (kernels/NOTES.md: written 2026-12-02, GPU run pending). */
static std::atomic<int> decode_version{3};

extern "C" int mode_qmoe_decode_version(int v)
{
    if (v != 3 && v != 5) return -1;
    return decode_version.exchange(v);
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
    if (decode_version.load() == 5) {
        int ran;
        rc = v5::run(L, T, k, d_x, d_experts, d_weights, d_act, d_out, s, &ran, err);
        if (rc || ran) return rc;
    }
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
    /* one exit: a failure anywhere (a capture included) frees the timings, the graphs, the events and the stream */
#define TRY(call) \
    do { \
        if (!rc) rc = mode_cuda_status((call), #call, __FILE__, __LINE__, err); \
    } while (0)
    int rc = MODE_OK;
    cudaStream_t s = NULL;
    cudaEvent_t a = NULL, b = NULL;
    cudaGraphExec_t *ge = NULL;
    const int ng = n_pool < 64 ? n_pool : 64;
    double *t = (double *)malloc(sizeof *t * (size_t)iters);
    if (!t) return mode_err_oom(err, sizeof *t * (size_t)iters, "timings");
    TRY(cudaStreamCreate(&s));
    TRY(cudaEventCreate(&a));
    TRY(cudaEventCreate(&b));
    for (int w = 0; w < 10 && !rc; w++) /* warm-up */
        rc = mode_qmoe_decode_cuda(L, T, k, d_x, d_experts + (size_t)(w % n_pool) * T * k, d_weights + (size_t)(w % n_pool) * T * k, d_act, d_out, s, err);
    for (int it = 0; it < iters && !rc; it++) {
        const int p = it % n_pool;
        float ms = 0;
        TRY(cudaEventRecord(a, s));
        if (!rc) rc = mode_qmoe_decode_cuda(L, T, k, d_x, d_experts + (size_t)p * T * k, d_weights + (size_t)p * T * k, d_act, d_out, s, err);
        TRY(cudaEventRecord(b, s));
        TRY(cudaEventSynchronize(b));
        TRY(cudaEventElapsedTime(&ms, a, b));
        t[it] = ms * 1e3;
    }
    if (!rc) {
        qsort(t, (size_t)iters, sizeof *t, cmp_double);
        *median_us = t[iters / 2];
    }
    if (!rc && graph_us) {
        /* one graph per routing of the pool: replaying graph p runs the layer on routing p */
        ge = (cudaGraphExec_t *)calloc((size_t)ng, sizeof *ge);
        if (!ge) rc = mode_err_oom(err, sizeof *ge * (size_t)ng, "graphs");
        for (int p = 0; p < ng && !rc; p++) {
            cudaGraph_t gr = NULL;
            TRY(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            if (rc) break;
            const int rr = mode_qmoe_decode_cuda(L, T, k, d_x, d_experts + (size_t)p * T * k, d_weights + (size_t)p * T * k, d_act, d_out, s, err);
            const cudaError_t ee = cudaStreamEndCapture(s, &gr); /* always, so that the stream leaves capture mode */
            rc = rr ? rr : mode_cuda_status(ee, "cudaStreamEndCapture", __FILE__, __LINE__, err);
            TRY(cudaGraphInstantiate(&ge[p], gr, 0));
            if (gr) cudaGraphDestroy(gr);
        }
        for (int it = 0; it < iters && !rc; it++) {
            float ms = 0;
            TRY(cudaEventRecord(a, s));
            TRY(cudaGraphLaunch(ge[it % ng], s));
            TRY(cudaEventRecord(b, s));
            TRY(cudaEventSynchronize(b));
            TRY(cudaEventElapsedTime(&ms, a, b));
            t[it] = ms * 1e3;
        }
        if (!rc) {
            qsort(t, (size_t)iters, sizeof *t, cmp_double);
            *graph_us = t[iters / 2];
        }
    }
#undef TRY
    if (s) cudaStreamSynchronize(s);
    for (int p = 0; ge && p < ng; p++)
        if (ge[p]) cudaGraphExecDestroy(ge[p]);
    free(ge), free(t);
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
    if (s) cudaStreamDestroy(s);
    return rc;
}
