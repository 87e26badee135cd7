/* attn.cu — the runtime's attention on the GPU, f32, flash-attention style: the scores never
 * leave the chip. Reference: mode_attention_ref (lib/attn.c); test tests/kernels/test_attn.c.
 *
 *   attn_fwd_kernel     one block per (tile of ATTN_BQ query rows of a segment, head): the Q tile
 *                       in shared memory, the keys and values in tiles of ATTN_BK rows; online
 *                       softmax (running maximum and sum per row, earlier terms rescaled when the
 *                       maximum grows), o = Σ e·v / Σ e written once
 *   attn_colsum_kernel  the same tiles for the selected query rows only: a first sweep for each
 *                       row's maximum and sum, a second for p = exp(s − m) / l, summed over the
 *                       block's rows and atomically added to colsum per key
 *
 * Work split: 8 warps of 4 query rows each; in a key tile lane j holds key j's score for its
 * warp's 4 rows (a dot product over head_dim from shared memory), then the lanes' probabilities
 * are broadcast by shuffles for p·v, each lane accumulating head_dim/32 output columns per row.
 * Segments come from the host: up to ATTN_CHUNK of them per launch, their row offsets and tile
 * counts passed by value, so a launch needs no device table, no allocation and no host sync
 * (capturable in a CUDA graph). v1: plain f32 FMAs, no tensor cores (NOTES.md).
 */
#include "common.cuh"

#include "../lib/attn.h"

#include <math.h>

#define ATTN_BQ 32                    /* query rows per block */
#define ATTN_BK 32                    /* keys per shared tile: one per lane */
#define ATTN_WARPS 8                  /* warps per block */
#define ATTN_RPW (ATTN_BQ / ATTN_WARPS) /* query rows per warp */
#define ATTN_THREADS (32 * ATTN_WARPS)
#define ATTN_CHUNK 32                 /* segments per launch (a few hundred bytes of parameters) */
#define ATTN_MAX_HD 256
#define ATTN_FULL 0xffffffffu

struct attn_args {
    const float *q, *k, *v;
    float *o, *colsum;
    const uint8_t *sel;
    int64_t ld_q, ld_k, ld_v, ld_o;
    int hd, grp; /* head_dim; query heads per kv head */
    int causal;
    float scale;
};

/* the segments of one launch: segment s is rows [row0[s], row0[s + 1]), its query tiles are
 * blocks tile0[s] .. tile0[s + 1] - 1 */
struct attn_chunk {
    int n;
    int tile0[ATTN_CHUNK + 1];
    int64_t row0[ATTN_CHUNK + 1];
};

/* shared floats: the Q tile (BQ, hd), K (BK, hd + 1) — the odd row stride puts lane j's reads of
 * K[j][d] in 32 distinct banks — and V (BK, hd) read along rows (conflict-free unpadded); the
 * colsum kernel keeps a (WARPS, BK) reduction buffer in V's place */
static size_t fwd_smem(int hd) { return sizeof(float) * ((size_t)ATTN_BQ * hd + (size_t)ATTN_BK * (hd + 1) + (size_t)ATTN_BK * hd); }
static size_t colsum_smem(int hd) { return sizeof(float) * ((size_t)ATTN_BQ * hd + (size_t)ATTN_BK * (hd + 1) + (size_t)ATTN_WARPS * ATTN_BK); }

__device__ __forceinline__ float warp_max(float x)
{
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(ATTN_FULL, x, o));
    return x;
}

__device__ __forceinline__ float warp_sum(float x)
{
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(ATTN_FULL, x, o);
    return x;
}

/* rows (rows, hd) of src (row stride lds) into dst (row stride ldd); rows ≥ valid as zeros */
__device__ __forceinline__ void load_rows(float *dst, int ldd, const float *__restrict__ src, int64_t lds, int valid, int rows, int hd)
{
    for (int i = threadIdx.x; i < rows * hd; i += blockDim.x) {
        const int r = i / hd, d = i - r * hd;
        dst[r * ldd + d] = r < valid ? src[(int64_t)r * lds + d] : 0.f;
    }
}

/* the block's place: segment start r0 and length n, first query row q0 (within the segment),
 * valid query rows nq */
struct attn_place {
    int64_t r0, n, q0;
    int nq;
};

__device__ __forceinline__ attn_place find_place(const attn_chunk &C)
{
    int s = 0;
    while ((int)blockIdx.x >= C.tile0[s + 1]) s++;
    attn_place p;
    p.r0 = C.row0[s];
    p.n = C.row0[s + 1] - p.r0;
    p.q0 = (int64_t)((int)blockIdx.x - C.tile0[s]) * ATTN_BQ;
    p.nq = (int)min((int64_t)ATTN_BQ, p.n - p.q0);
    return p;
}

/* dot[rr] = q[row rr of this warp] · K[lane], sequential over d */
__device__ __forceinline__ void tile_dots(const float *sq, const float *sk, int hd, int warp, int lane, float dot[ATTN_RPW])
{
    const float *qr = sq + warp * ATTN_RPW * hd, *kr = sk + lane * (hd + 1);
#pragma unroll
    for (int rr = 0; rr < ATTN_RPW; rr++) dot[rr] = 0.f;
    for (int d = 0; d < hd; d++) {
        const float kd = kr[d];
#pragma unroll
        for (int rr = 0; rr < ATTN_RPW; rr++) dot[rr] = fmaf(qr[rr * hd + d], kd, dot[rr]);
    }
}

/* NDL = output columns per lane, ceil(head_dim / 32) */
template <int NDL>
__global__ void __launch_bounds__(ATTN_THREADS) attn_fwd_kernel(const attn_args A, const attn_chunk C)
{
    extern __shared__ float sm[];
    const int hd = A.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, h = blockIdx.y, g = h / A.grp;
    float *sq = sm, *sk = sq + ATTN_BQ * hd, *sv = sk + ATTN_BK * (hd + 1);
    const attn_place P = find_place(C);
    const int64_t kend = A.causal ? P.q0 + P.nq : P.n; /* the last row sees keys up to itself */
    const float *kb = A.k + P.r0 * A.ld_k + (int64_t)g * hd, *vb = A.v + P.r0 * A.ld_v + (int64_t)g * hd;
    load_rows(sq, hd, A.q + (P.r0 + P.q0) * A.ld_q + (int64_t)h * hd, A.ld_q, P.nq, ATTN_BQ, hd);
    float m[ATTN_RPW], l[ATTN_RPW], acc[ATTN_RPW][NDL];
#pragma unroll
    for (int rr = 0; rr < ATTN_RPW; rr++) {
        m[rr] = -INFINITY, l[rr] = 0.f;
#pragma unroll
        for (int i = 0; i < NDL; i++) acc[rr][i] = 0.f;
    }
    for (int64_t kt = 0; kt < kend; kt += ATTN_BK) {
        const int nk = (int)min((int64_t)ATTN_BK, kend - kt);
        __syncthreads(); /* the previous tile is consumed (and the Q tile stored, the first time) */
        load_rows(sk, hd + 1, kb + kt * A.ld_k, A.ld_k, nk, ATTN_BK, hd);
        load_rows(sv, hd, vb + kt * A.ld_v, A.ld_v, nk, ATTN_BK, hd);
        __syncthreads();
        float p[ATTN_RPW];
        tile_dots(sq, sk, hd, warp, lane, p);
        const int64_t key = kt + lane;
#pragma unroll
        for (int rr = 0; rr < ATTN_RPW; rr++) {
            const int64_t row = P.q0 + warp * ATTN_RPW + rr;
            const bool ok = row < P.n && key < kend && (!A.causal || key <= row);
            const float s = ok ? p[rr] * A.scale : -INFINITY; /* dot first, then scale, as the reference */
            const float mn = fmaxf(m[rr], warp_max(s));
            /* mn = -inf: no key yet (a row past the segment); keep everything at zero */
            const float corr = mn == -INFINITY ? 1.f : expf(m[rr] - mn);
            p[rr] = ok ? expf(s - mn) : 0.f;
            l[rr] = l[rr] * corr + warp_sum(p[rr]);
            m[rr] = mn;
#pragma unroll
            for (int i = 0; i < NDL; i++) acc[rr][i] *= corr;
        }
        for (int j = 0; j < nk; j++) {
            float vj[NDL];
#pragma unroll
            for (int i = 0; i < NDL; i++) {
                const int d = lane + 32 * i;
                vj[i] = d < hd ? sv[j * hd + d] : 0.f;
            }
#pragma unroll
            for (int rr = 0; rr < ATTN_RPW; rr++) {
                const float pj = __shfl_sync(ATTN_FULL, p[rr], j);
#pragma unroll
                for (int i = 0; i < NDL; i++) acc[rr][i] = fmaf(pj, vj[i], acc[rr][i]);
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < ATTN_RPW; rr++) {
        const int64_t row = P.q0 + warp * ATTN_RPW + rr;
        if (row >= P.n) continue;
        float *out = A.o + (P.r0 + row) * A.ld_o + (int64_t)h * hd;
        const float inv = 1.f / l[rr];
#pragma unroll
        for (int i = 0; i < NDL; i++) {
            const int d = lane + 32 * i;
            if (d < hd) out[d] = acc[rr][i] * inv;
        }
    }
}

__global__ void __launch_bounds__(ATTN_THREADS) attn_colsum_kernel(const attn_args A, const attn_chunk C)
{
    extern __shared__ float sm[];
    const int hd = A.hd, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, h = blockIdx.y, g = h / A.grp;
    float *sq = sm, *sk = sq + ATTN_BQ * hd, *red = sk + ATTN_BK * (hd + 1);
    const attn_place P = find_place(C);
    const int any = tid < P.nq && A.sel[P.r0 + P.q0 + tid];
    if (!__syncthreads_or(any)) return; /* no selected row in this tile: the whole block leaves */
    const int64_t kend = A.causal ? P.q0 + P.nq : P.n;
    const float *kb = A.k + P.r0 * A.ld_k + (int64_t)g * hd;
    load_rows(sq, hd, A.q + (P.r0 + P.q0) * A.ld_q + (int64_t)h * hd, A.ld_q, P.nq, ATTN_BQ, hd);
    bool chosen[ATTN_RPW];
    float m[ATTN_RPW], l[ATTN_RPW];
#pragma unroll
    for (int rr = 0; rr < ATTN_RPW; rr++) {
        const int64_t row = P.q0 + warp * ATTN_RPW + rr;
        chosen[rr] = row < P.n && A.sel[P.r0 + row];
        m[rr] = -INFINITY, l[rr] = 0.f;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t kt = 0; kt < kend; kt += ATTN_BK) {
            const int nk = (int)min((int64_t)ATTN_BK, kend - kt);
            __syncthreads();
            load_rows(sk, hd + 1, kb + kt * A.ld_k, A.ld_k, nk, ATTN_BK, hd);
            __syncthreads();
            float dot[ATTN_RPW];
            tile_dots(sq, sk, hd, warp, lane, dot);
            const int64_t key = kt + lane;
            float part = 0.f;
#pragma unroll
            for (int rr = 0; rr < ATTN_RPW; rr++) {
                const int64_t row = P.q0 + warp * ATTN_RPW + rr;
                const bool ok = chosen[rr] && key < kend && (!A.causal || key <= row);
                const float s = ok ? dot[rr] * A.scale : -INFINITY;
                if (pass == 0) {
                    const float mn = fmaxf(m[rr], warp_max(s));
                    const float corr = mn == -INFINITY ? 1.f : expf(m[rr] - mn);
                    l[rr] = l[rr] * corr + warp_sum(ok ? expf(s - mn) : 0.f);
                    m[rr] = mn;
                } else if (ok) {
                    part += expf(s - m[rr]) * (1.f / l[rr]); /* p as mode_softmax_ref forms it */
                }
            }
            if (pass == 1) {
                red[warp * ATTN_BK + lane] = part;
                __syncthreads();
                if (tid < nk) {
                    float t = 0.f;
                    for (int w = 0; w < ATTN_WARPS; w++) t += red[w * ATTN_BK + tid];
                    /* blocks of other query tiles and heads add to the same keys in any order */
                    atomicAdd(A.colsum + P.r0 + kt + tid, t);
                }
            }
        }
    }
}

/* once per kernel: opt in to more than the default 48 KiB of dynamic shared memory, sized for
 * the widest head the instance serves (a per-function attribute; set at first use, not per launch,
 * since the call may wait for copies in flight) */
template <int NDL> static cudaError_t fwd_attr()
{
    static const cudaError_t e = cudaFuncSetAttribute(attn_fwd_kernel<NDL>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)fwd_smem(32 * NDL));
    return e;
}
static cudaError_t colsum_attr()
{
    static const cudaError_t e = cudaFuncSetAttribute(attn_colsum_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)colsum_smem(ATTN_MAX_HD));
    return e;
}

template <int NDL>
static int launch(const attn_args &A, const attn_chunk &C, int n_head, bool colsum, cudaStream_t s, struct mode_err *err)
{
    CUDA_CHECK(fwd_attr<NDL>(), err);
    const dim3 grid((unsigned)C.tile0[C.n], (unsigned)n_head);
    attn_fwd_kernel<NDL><<<grid, ATTN_THREADS, fwd_smem(A.hd), s>>>(A, C);
    CUDA_CHECK_LAUNCH(err);
    if (colsum) {
        CUDA_CHECK(colsum_attr(), err);
        attn_colsum_kernel<<<grid, ATTN_THREADS, colsum_smem(A.hd), s>>>(A, C);
        CUDA_CHECK_LAUNCH(err);
    }
    return MODE_OK;
}

extern "C" int mode_attention_cuda(const struct mode_attn_shape *a, const float *d_q, const float *d_k, const float *d_v, const int64_t *seg,
                                   int n_seg, const uint8_t *d_sel, float *d_colsum, float *d_o, void *stream, struct mode_err *err)
{
    int rc = mode_attention_check(a, d_q, d_k, d_v, seg, n_seg, d_sel, d_colsum, d_o, "mode_attention_cuda", err);
    if (rc) return rc;
    if (a->head_dim % 2 || a->head_dim > ATTN_MAX_HD)
        return mode_err_set(err, MODE_EUSAGE, "mode_attention_cuda: head_dim %d must be even and at most %d", a->head_dim, ATTN_MAX_HD);
    if (a->n_head > 65535) return mode_err_set(err, MODE_EUSAGE, "mode_attention_cuda: n_head %d is over 65535 (the grid's y)", a->n_head);
    if ((rc = mode_cuda_available(err))) return rc;
    cudaStream_t s = (cudaStream_t)stream;
    if (d_sel && seg[n_seg] > 0) CUDA_CHECK(cudaMemsetAsync(d_colsum, 0, (size_t)seg[n_seg] * sizeof(float), s), err);
    const attn_args A = {d_q, d_k, d_v, d_o, d_colsum, d_sel, a->ld_q, a->ld_k, a->ld_v, a->ld_o, a->head_dim, a->n_head / a->n_head_kv,
                         a->causal ? 1 : 0, a->scale};
    for (int s0 = 0; s0 < n_seg; s0 += ATTN_CHUNK) {
        attn_chunk C;
        C.n = n_seg - s0 < ATTN_CHUNK ? n_seg - s0 : ATTN_CHUNK;
        int64_t tiles = 0;
        C.tile0[0] = 0;
        C.row0[0] = seg[s0];
        for (int i = 0; i < C.n; i++) {
            tiles += (seg[s0 + i + 1] - seg[s0 + i] + ATTN_BQ - 1) / ATTN_BQ;
            if (tiles > INT32_MAX)
                return mode_err_set(err, MODE_EUSAGE, "mode_attention_cuda: segments %d..%d hold over 2^31 tiles of %d rows", s0, s0 + i,
                                    ATTN_BQ);
            C.tile0[i + 1] = (int)tiles;
            C.row0[i + 1] = seg[s0 + i + 1];
        }
        if (!tiles) continue;
        switch ((a->head_dim + 31) / 32) {
        case 1: rc = launch<1>(A, C, a->n_head, d_sel != NULL, s, err); break;
        case 2: rc = launch<2>(A, C, a->n_head, d_sel != NULL, s, err); break;
        case 3: rc = launch<3>(A, C, a->n_head, d_sel != NULL, s, err); break;
        case 4: rc = launch<4>(A, C, a->n_head, d_sel != NULL, s, err); break;
        case 5: rc = launch<5>(A, C, a->n_head, d_sel != NULL, s, err); break;
        case 6: rc = launch<6>(A, C, a->n_head, d_sel != NULL, s, err); break;
        case 7: rc = launch<7>(A, C, a->n_head, d_sel != NULL, s, err); break;
        default: rc = launch<8>(A, C, a->n_head, d_sel != NULL, s, err); break;
        }
        if (rc) return rc;
    }
    return MODE_OK;
}
