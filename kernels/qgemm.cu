/* qgemm.cu — the packed MoE layer for many tokens (prefill, v1) without a bf16 copy of the
 * weights: two grouped GEMMs on the tensor cores whose B operand is dequantised from the GPTQ
 * words (gptqpack.h's layout, widths 2/3/4/8 and 16 = bf16 pairs, mode_qmoe_layer) in registers.
 * Reference: mode_qmoe_ref (lib/qmoe.c); the v0 path it replaces, mode_qmoe_dequant_cuda then
 * mode_moe_bf16_cuda (kernels/moe.cu), computes the same bf16 products. Test:
 * tests/kernels/test_qgemm.c. Four launches, capturable in a CUDA graph:
 *
 *   gather_kernel     xs (P, D) bf16: the P = T·k pairs' rows in expert order (moe.cuh)
 *   qgemm<gate_up>    act (P, I) bf16 = SiLU(xs_e · W_gate,eᵀ) ⊙ (xs_e · W_up,eᵀ), every expert in one
 *                     launch, SiLU·mul in the epilogue (no f32 gate/up buffer)
 *   qgemm<down>       y (P, D) f32 = act_e · W_down,eᵀ, every expert in one launch
 *   combine_kernel    out (T, D) = Σ_j weights[t][j] · y[slot(t, j)], j ascending (moe.cuh)
 *
 * A block computes one tile of 64 rows (pairs of one expert) × 64 gate and 64 up columns, or
 * × 128 down columns, with warp-level mma.sync.m16n8k16 (bf16 in, f32 accumulation): 4 warps,
 * 2 × 2, each 32 rows × 64 B columns = 2 × 8 fragments. mma.sync rather than nvcuda::wmma: the
 * PTX ISA documents which accumulator element each lane holds, which the fused SiLU·mul epilogue
 * (gate and up of the same output in the same lane) and the row mask (a tile past its expert's
 * last pair) need; wmma's fragment layout is unspecified. Per k-step of 32 inputs — one chunk of
 * the packed layout (32 levels in b words of a column) and always inside one group, groups being
 * multiples of 32 — the block stages the A tile (64 × 32 bf16) in shared memory, and each thread
 * dequantises one column's chunk: its b words from global memory (a warp reads 32 adjacent
 * columns: coalesced), (q − zero) · scale in f32 with the f16 group scale and the packed zero,
 * rounded to bf16 — the value mode_qmoe_dequant_cuda writes — into a shared B tile in the
 * fragment-friendly layout (column-major, k contiguous). v1: dequantisation in registers, then
 * staged through shared memory; no software pipelining (the next chunk's loads are not issued
 * before the current chunk's mma). The width is read per expert inside the launch: a block has
 * one expert, so the switch is uniform and each width runs its own unrolled loop.
 *
 * The tile table: the grid's y is the row tiles of all experts (Σ_e ceil(rows_e / 64)), x the
 * column tiles. r->start is on the host, so the launcher builds per-expert first-tile and
 * first-row tables on the host and passes them by value in the kernel parameters (struct
 * qgemm_tiles, 2 KB for 256 experts: inside the 4 KB parameter limit every CUDA version and
 * architecture accepts; layers of more experts take one launch per 256). A block finds its
 * expert by binary search of the table. Parameters are copied into a graph node when captured:
 * no host-to-device copy, no synchronisation — a captured graph replays this routing's tiles
 * (as mode_moe_bf16_cuda's captured GEMM sizes do).
 *
 * Bytes and flops at 4096 tokens, Qwen3-VL-30B-A3B shape, W4: kernels/NOTES.md. */
#include "moe.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <limits.h>
#include <stdint.h>

enum {
    QG_BM = 64,             /* rows (pairs of one expert) per block tile */
    QG_BK = 32,             /* inputs per k-step: one chunk of the packed layout */
    QG_BNB = 128,           /* B columns per block: 64 gate + 64 up, or 128 down */
    QG_THREADS = 128,       /* 4 warps; one thread per B column when dequantising */
    QG_LDS = QG_BK / 2 + 4, /* shared row stride in 32-bit words: 20 makes the fragment loads of a
                               warp (8 rows x 4 words) hit 32 distinct banks and keeps rows 16-byte aligned */
    QG_MAX_EXPERTS = 256,   /* experts per launch (the table's size) */
};

/* the row tiles of experts e0 .. e0 + n - 1: expert e0 + j's tiles are tile0[j] .. tile0[j + 1] - 1,
 * its pairs rows row0[j] .. row0[j + 1] - 1 of the gathered (expert-order) matrices */
struct qgemm_tiles {
    int n, e0, tile_base; /* block (x, y) computes row tile tile_base + y */
    int tile0[QG_MAX_EXPERTS + 1];
    int row0[QG_MAX_EXPERTS + 1];
};
static_assert(sizeof(struct qgemm_tiles) + sizeof(struct mode_qmoe_layer) + 2 * sizeof(void *) < 4000, "kernel parameters within 4 KB");

/* D (16x8 f32) += A (16x16 bf16, row) · B (16x8 bf16, col). PTX ISA, mma.m16n8k16, lane = 4·gid + tig:
 * a0 = A[gid][2tig, +1], a1 = A[gid + 8][2tig, +1], a2 = A[gid][2tig + 8, +9], a3 = A[gid + 8][2tig + 8, +9];
 * b0 = B[2tig, +1][gid], b1 = B[2tig + 8, +9][gid]; d0, d1 = D[gid][2tig, +1], d2, d3 = D[gid + 8][2tig, +1];
 * the lower k (or column) of a pair in the low 16 bits. */
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    (void)d, (void)a, (void)b0, (void)b1;
    __trap(); /* bf16 mma needs sm_80; the build targets sm_90 (Makefile CUDA_ARCH) */
#endif
}

/* level v (0..31) of a 32-value chunk held in w[0..B): a little-endian bit stream (gptqpack.h's
 * 2/4/8-bit words and its 3-bit triples alike); v and B compile-time after unrolling */
template <int B>
__device__ __forceinline__ uint32_t level_at(const uint32_t (&w)[B], int v)
{
    const int bit = v * B, wi = bit / 32, sh = bit % 32;
    uint32_t q = w[wi] >> sh;
    if (sh + B > 32) q |= w[wi + 1] << (32 - sh);
    return q & ((1u << B) - 1);
}

__device__ __forceinline__ uint32_t bf16_bits(float v) { return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v)); }

/* chunk c (inputs 32c .. 32c + 31) of column n of one projection, as 16 bf16 pairs (input 2m in
 * the low half of word m) into dst (16 words of shared memory, 16-byte aligned). B 16: the words
 * are bf16 pairs already; B 0: an unsupported width, NaN (visible in the output). */
template <int B>
__device__ __forceinline__ void dequant_chunk(const uint32_t *__restrict__ qw, const uint32_t *__restrict__ qz, const uint16_t *__restrict__ sc,
                                              int N, int n, int c, int g, uint32_t *dst)
{
    uint32_t out[16];
    if constexpr (B == 16) {
#pragma unroll
        for (int m = 0; m < 16; m++) out[m] = __ldg(qw + (size_t)(c * 16 + m) * N + n);
    } else if constexpr (B == 0) {
#pragma unroll
        for (int m = 0; m < 16; m++) out[m] = 0x7fc07fc0u; /* bf16 quiet NaN pairs */
    } else {
        uint32_t w[B];
#pragma unroll
        for (int i = 0; i < B; i++) w[i] = __ldg(qw + (size_t)(c * B + i) * N + n);
        const int gi = c * QG_BK / g;
        /* exactly mode_qmoe_dequant_cuda's expression: f16 scale in f32 times the level minus the zero */
        const float s = __half2float(__ushort_as_half(__ldg(sc + (size_t)gi * N + n))), z = mode_zero_at(qz, N, B, gi, n);
#pragma unroll
        for (int m = 0; m < 16; m++)
            out[m] = bf16_bits(s * ((float)level_at<B>(w, 2 * m) - z)) | bf16_bits(s * ((float)level_at<B>(w, 2 * m + 1) - z)) << 16;
    }
    uint4 *d4 = (uint4 *)dst;
#pragma unroll
    for (int q = 0; q < 4; q++) d4[q] = make_uint4(out[4 * q], out[4 * q + 1], out[4 * q + 2], out[4 * q + 3]);
}

/* One block tile: rows r0 .. r0 + rows - 1 of A (expert e's pairs), output columns from n0.
 * GU: A = xs (P, D), out act (P, I) bf16; else A = act (P, I), out y (P, D) f32. */
template <bool GU, int B>
__device__ __forceinline__ void qgemm_tile(const mode_qmoe_layer &L, int e, int r0, int rows, int n0, const __nv_bfloat16 *__restrict__ A,
                                           void *__restrict__ C, uint32_t (*As)[QG_LDS], uint32_t (*Bs)[QG_LDS])
{
    const int K = GU ? L.d : L.i, N = GU ? L.i : L.d, g = GU ? L.group_d : L.group_i;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wm = warp % 2, wn = warp / 2, gid = lane / 4, tig = lane % 4;
    /* this thread's B column: gate (tid < 64) or up column n0 + tid % 64, or down column n0 + tid */
    const int p = GU ? tid / 64 : 2, n = n0 + (GU ? tid % 64 : tid);
    const int64_t *off = L.off + (size_t)e * 9 + (size_t)p * 3;
    const uint32_t *qw = L.qweight + off[0], *qz = L.qzeros + off[1];
    const uint16_t *sc = L.scales + off[2];
    float acc[2][8][4];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[mi][j][q] = 0.f;
    for (int c = 0; c < K / QG_BK; c++) {
        /* A tile: 64 rows x 4 pieces of 8 bf16, two per thread; rows past the expert's pairs are zero */
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int idx = tid + h * QG_THREADS, row = idx / 4, q = idx % 4;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (row < rows) v = __ldg((const uint4 *)(A + (size_t)(r0 + row) * K + c * QG_BK + q * 8));
            *(uint4 *)&As[row][q * 4] = v;
        }
        if (n < N) dequant_chunk<B>(qw, qz, sc, N, n, c, g, Bs[tid]);
        else {
            uint4 *d4 = (uint4 *)Bs[tid];
#pragma unroll
            for (int q = 0; q < 4; q++) d4[q] = make_uint4(0, 0, 0, 0);
        }
        __syncthreads();
#pragma unroll
        for (int ks = 0; ks < QG_BK; ks += 16) {
            const int kw = ks / 2 + tig; /* the word holding inputs ks + 2tig, +1 */
            uint32_t a[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; mi++) {
                const int r = wm * 32 + mi * 16 + gid;
                a[mi][0] = As[r][kw], a[mi][1] = As[r + 8][kw], a[mi][2] = As[r][kw + 4], a[mi][3] = As[r + 8][kw + 4];
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                /* fragment j's B columns: GU: gate 0-3 and the up columns of the same outputs 4-7 */
                const int col = (GU ? (j < 4 ? wn * 32 + j * 8 : 64 + wn * 32 + (j - 4) * 8) : wn * 64 + j * 8) + gid;
                const uint32_t b0 = Bs[col][kw], b1 = Bs[col][kw + 4];
#pragma unroll
                for (int mi = 0; mi < 2; mi++) mma_bf16(acc[mi][j], a[mi], b0, b1);
            }
        }
        __syncthreads();
    }
    /* epilogue: lane holds rows gid and gid + 8 of each 16-row fragment, columns 2tig and 2tig + 1 */
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = wm * 32 + mi * 16 + gid + 8 * h;
            if (row >= rows) continue;
            if constexpr (GU) {
                __nv_bfloat16 *act = (__nv_bfloat16 *)C + (size_t)(r0 + row) * N;
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int col = n0 + wn * 32 + j * 8 + 2 * tig;
                    if (col < N) /* N even: col + 1 < N too */
                        *(__nv_bfloat162 *)(act + col) = __floats2bfloat162_rn(mode_silu_mul(acc[mi][j][2 * h], acc[mi][j + 4][2 * h]),
                                                                               mode_silu_mul(acc[mi][j][2 * h + 1], acc[mi][j + 4][2 * h + 1]));
                }
            } else {
                float *y = (float *)C + (size_t)(r0 + row) * N;
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    const int col = n0 + wn * 64 + j * 8 + 2 * tig;
                    if (col < N) *(float2 *)(y + col) = make_float2(acc[mi][j][2 * h], acc[mi][j][2 * h + 1]);
                }
            }
        }
}

/* grid (column tiles, row tiles of the table from tile_base), QG_THREADS threads */
template <bool GU>
__global__ void __launch_bounds__(QG_THREADS) qgemm_kernel(mode_qmoe_layer L, qgemm_tiles tab, const __nv_bfloat16 *__restrict__ A, void *__restrict__ C)
{
    __shared__ __align__(16) uint32_t As[QG_BM][QG_LDS];
    __shared__ __align__(16) uint32_t Bs[QG_BNB][QG_LDS];
    /* the expert: the last j with tile0[j] <= tile (experts without pairs have no tiles: skipped) */
    const int tile = tab.tile_base + (int)blockIdx.y;
    int lo = 0, hi = tab.n;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (tab.tile0[mid] <= tile) lo = mid;
        else hi = mid;
    }
    const int e = tab.e0 + lo, r0 = tab.row0[lo] + (tile - tab.tile0[lo]) * QG_BM, rows = min(QG_BM, tab.row0[lo + 1] - r0);
    const int n0 = blockIdx.x * (GU ? QG_BNB / 2 : QG_BNB);
    switch (L.bits[e]) {
    case 2: qgemm_tile<GU, 2>(L, e, r0, rows, n0, A, C, As, Bs); break;
    case 3: qgemm_tile<GU, 3>(L, e, r0, rows, n0, A, C, As, Bs); break;
    case 4: qgemm_tile<GU, 4>(L, e, r0, rows, n0, A, C, As, Bs); break;
    case 8: qgemm_tile<GU, 8>(L, e, r0, rows, n0, A, C, As, Bs); break;
    case 16: qgemm_tile<GU, 16>(L, e, r0, rows, n0, A, C, As, Bs); break;
    default: qgemm_tile<GU, 0>(L, e, r0, rows, n0, A, C, As, Bs); break;
    }
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

/* xs (P, D) bf16, act (P, I) bf16, y (P, D) f32, each from a 256-byte boundary */
extern "C" size_t mode_qmoe_prefill_work_bytes(const struct mode_qmoe_layer *L, int T, int k)
{
    if (!L || T < 0 || k < 1 || L->d < 1 || L->i < 1) return 0;
    const size_t P = (size_t)T * (size_t)k, D = (size_t)L->d, I = (size_t)L->i;
    return align256(P * D * 2) + align256(P * I * 2) + align256(P * D * 4);
}

/* the table of experts e0 .. e0 + min(QG_MAX_EXPERTS, E - e0) - 1; returns its row tiles */
static int tiles_of(const int64_t *start, int E, int e0, qgemm_tiles *t)
{
    t->e0 = e0, t->n = E - e0 < QG_MAX_EXPERTS ? E - e0 : QG_MAX_EXPERTS;
    t->tile0[0] = 0;
    for (int j = 0; j <= t->n; j++) {
        t->row0[j] = (int)start[e0 + j];
        if (j < t->n) t->tile0[j + 1] = t->tile0[j] + (int)((start[e0 + j + 1] - start[e0 + j] + QG_BM - 1) / QG_BM);
    }
    return t->tile0[t->n];
}

/* one grouped GEMM over every expert: one launch per QG_MAX_EXPERTS experts (and per 65535 row
 * tiles, grid.y's limit). The column tiles of a row tile are adjacent blocks: its A rows are read
 * from memory once and then from L2; the row tiles of an expert follow each other, so do its
 * weights. */
template <bool GU>
static int qgemm_launch(const mode_qmoe_layer &L, const int64_t *start, const __nv_bfloat16 *A, void *C, cudaStream_t s, struct mode_err *err)
{
    const int N = GU ? L.i : L.d, per = GU ? QG_BNB / 2 : QG_BNB;
    for (int e0 = 0; e0 < L.n_expert; e0 += QG_MAX_EXPERTS) {
        qgemm_tiles t = {};
        const int n_tiles = tiles_of(start, L.n_expert, e0, &t);
        for (t.tile_base = 0; t.tile_base < n_tiles; t.tile_base += 65535) {
            const int rows = n_tiles - t.tile_base < 65535 ? n_tiles - t.tile_base : 65535;
            qgemm_kernel<GU><<<dim3((unsigned)((N + per - 1) / per), (unsigned)rows), QG_THREADS, 0, s>>>(L, t, A, C);
            CUDA_CHECK_LAUNCH(err);
        }
    }
    return MODE_OK;
}

extern "C" int mode_qmoe_prefill_cuda(const struct mode_qmoe_layer *L, const struct mode_moe_route *r, const float *d_x, void *d_work, float *d_out,
                                      void *stream, struct mode_err *err)
{
    if (!L || !r || !r->start || r->T < 0 || r->k < 1 || L->n_expert < 1 || L->d < 32 || L->i < 32 || L->group_d < 32 || L->group_i < 32 ||
        L->d % 32 || L->i % 32 || L->group_d % 32 || L->group_i % 32 || L->d % L->group_d || L->i % L->group_i)
        return mode_err_set(err, MODE_EUSAGE,
                            "mode_qmoe_prefill_cuda: dimensions and groups must be multiples of 32 (groups dividing them), top-k at least 1");
    if ((int64_t)r->T * r->k > INT_MAX)
        return mode_err_set(err, MODE_EUSAGE, "mode_qmoe_prefill_cuda: %d tokens x top-%d pairs: too many for one call", r->T, r->k);
    const int P = r->T * r->k;
    if (r->start[0] != 0 || r->start[L->n_expert] != P)
        return mode_err_set(err, MODE_EUSAGE, "mode_qmoe_prefill_cuda: the routing's expert runs span %lld..%lld, not the %d pairs",
                            (long long)r->start[0], (long long)r->start[L->n_expert], P);
    for (int e = 0; e < L->n_expert; e++)
        if (r->start[e + 1] < r->start[e])
            return mode_err_set(err, MODE_EUSAGE, "mode_qmoe_prefill_cuda: the routing's start decreases at expert %d", e + 1);
    if ((uintptr_t)d_work % 256)
        return mode_err_set(err, MODE_EUSAGE, "mode_qmoe_prefill_cuda: the scratch must start on a 256-byte boundary (as cudaMalloc returns)");
    if (r->T == 0) return MODE_OK;
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    cudaStream_t s = (cudaStream_t)stream;
    const int D = L->d, I = L->i;
    const size_t a = align256((size_t)P * D * 2), b = align256((size_t)P * I * 2);
    __nv_bfloat16 *xs = (__nv_bfloat16 *)d_work, *act = (__nv_bfloat16 *)((char *)d_work + a);
    float *y = (float *)((char *)d_work + a + b);
    gather_kernel<<<P, 256, 0, s>>>(d_x, r->order, r->k, D, xs);
    CUDA_CHECK_LAUNCH(err);
    if ((rc = qgemm_launch<true>(*L, r->start, xs, act, s, err))) return rc;
    if ((rc = qgemm_launch<false>(*L, r->start, act, y, s, err))) return rc;
    combine_kernel<<<r->T, 256, 0, s>>>(y, r->slot, r->weights, r->k, D, d_out);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}
