/* gptq.cu — GPTQ of a batch of weights on the GPU (every expert of a layer at once), in double,
 * the algorithm of lib/gptq.h step for step; reference mode_gptq_ref (lib/gptq.c), test
 * tests/kernels/test_gptq.c, benchmark tests/bench/bench_gptq.c.
 *
 *   diag_kernel     dead columns flagged (H_ii = 0 -> 1), the first non-finite diagonal noted
 *   damp_kernel     0.01 · mean(diag), summed left to right as the reference does
 *   order_kernel    act order: each column's rank by decreasing diagonal (ties: lower index)
 *   permute_kernel  the weights in act order, f32 -> f64, dead columns zeroed
 *   reverse_kernel  S = J (P H Pᵀ + damp I) J
 *   cuSOLVER        S = L Lᵀ (potrf, lower; batched or one call per Hessian)
 *   cuBLAS/cuSOLVER L⁻¹ (batched trsm against the identity, or trtri per Hessian)
 *   upper_kernel    U(c, j) = L⁻¹(n-1-c, n-1-j), row-major, through a shared-memory tile
 *   block_kernel    per 128-column block, per weight and tile of rows: the group parameters of the
 *                   groups starting in the block (from the block-start weights), then column by
 *                   column: quantize, error, update of the block's remaining columns (rows in
 *                   shared memory, the column's U row broadcast); levels and values written in
 *                   the checkpoint's column order
 *   cuBLAS          the lazy update of the later columns: W[:, i2:] -= Err · U[i1:i2, i2:] (batched
 *                   GEMM, f64)
 * The in-block arithmetic uses explicitly rounded operations (no fused multiply-add), so that it
 * is the reference's expression by expression; the library calls round differently from LAPACK
 * and OpenBLAS, so the two agree to rounding (a level may differ at a rounding tie).
 *
 * MODE_GPTQ_FACTOR=loop in the environment factors and inverts one Hessian per library call
 * (cusolverDnDpotrf, cusolverDnXtrtri: n³/3 + n³/3 flops) instead of the batched calls
 * (cusolverDnDpotrfBatched, cublasDtrsmBatched against the identity: n³/3 + 2n³), for comparing
 * the two on a device.
 *
 * Bytes and flops for the floor (kernels/NOTES.md): per weight (rows r, cols n) the column loop
 * does r·n·64 multiply-adds in shared memory and the lazy GEMMs r·n²; per Hessian the
 * factorisation n³/3 + n³/3. */
#include "blas.cuh"

#include "../lib/gptq.h"

#include <float.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- handles ------------------------------------------------------------------------------- */

static cublasHandle_t g_blas;
static cusolverDnHandle_t g_solver;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static cublasStatus_t g_blas_st;
static cusolverStatus_t g_solver_st;

static void *g_blas_ws;
enum { BLAS_WS = 32 << 20 }; /* cuBLAS's workspace, ours so that calls can be captured in graphs */

static int g_made; /* set once make_handles has run */

static void make_handles(void)
{
    __atomic_store_n(&g_made, 1, __ATOMIC_RELEASE);
    g_blas_st = cublasCreate(&g_blas);
    g_solver_st = cusolverDnCreate(&g_solver);
    if (g_blas_st == CUBLAS_STATUS_SUCCESS && cudaMalloc(&g_blas_ws, BLAS_WS) != cudaSuccess) g_blas_st = CUBLAS_STATUS_ALLOC_FAILED;
}

int mode_cuda_blas(cudaStream_t stream, cublasHandle_t *blas, cusolverDnHandle_t *solver, struct mode_err *err)
{
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    if (!__atomic_load_n(&g_made, __ATOMIC_ACQUIRE)) {
        /* Making the handles allocates device memory, which a stream capture forbids: the first
         * cuBLAS call of a process must be eager (mode_cuda_blas_init does it). Say so rather than
         * let the capture fail with an unrelated status. */
        cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(stream, &cs) == cudaSuccess && cs != cudaStreamCaptureStatusNone)
            return mode_err_set(err, MODE_EINTERNAL, "cuBLAS: its handles were first asked for inside a stream capture; call mode_cuda_blas_init first");
    }
    pthread_once(&g_once, make_handles);
    CUBLAS_CHECK(g_blas_st, err);
    CUSOLVER_CHECK(g_solver_st, err);
    CUBLAS_CHECK(cublasSetStream(g_blas, stream), err);
    CUBLAS_CHECK(cublasSetWorkspace(g_blas, g_blas_ws, BLAS_WS), err); /* SetStream resets it */
    CUSOLVER_CHECK(cusolverDnSetStream(g_solver, stream), err);
    if (blas) *blas = g_blas;
    if (solver) *solver = g_solver;
    return MODE_OK;
}

extern "C" int mode_cuda_blas_init(struct mode_err *err) { return mode_cuda_blas(NULL, NULL, NULL, err); }

/* ---- preparation ----------------------------------------------------------------------------- */

static unsigned blocks_for(size_t n, int threads)
{
    size_t b = (n + (size_t)threads - 1) / (size_t)threads;
    return (unsigned)(b > 65535u * 64u ? 65535u * 64u : (b ? b : 1)); /* grid-stride loops cover the rest */
}

/* one thread per (h, i): dead flags into dead (n_h, n), first non-finite diagonal into neg[h] */
__global__ void diag_kernel(double *H, int n, int32_t *dead, int32_t *neg)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y;
    if (i >= n) return;
    double *d = H + (size_t)h * n * n + (size_t)i * n + i;
    const double v = *d;
    if (!isfinite(v)) atomicMin(&neg[h], i);
    dead[(size_t)h * n + i] = v == 0;
    if (v == 0) *d = 1;
}

/* one thread per Hessian: the damping term, the diagonal summed in column order (as the reference) */
__global__ void damp_kernel(const double *H, int n_h, int n, double f, double *damp)
{
    const int h = blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= n_h) return;
    const double *Hh = H + (size_t)h * n * n;
    double s = 0;
    for (int i = 0; i < n; i++) s += Hh[(size_t)i * n + i];
    damp[h] = f * (s / n);
}

/* one thread per (h, i): perm[h][rank of i] = i; the diagonal read through shared memory in chunks */
__global__ void order_kernel(const double *H, int n, int act, int32_t *perm)
{
    __shared__ double dj[1024];
    const int i = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y;
    const double *Hh = H + (size_t)h * n * n;
    const double di = i < n ? Hh[(size_t)i * n + i] : 0;
    int rank = 0;
    if (act)
        for (int j0 = 0; j0 < n; j0 += 1024) {
            __syncthreads();
            for (int j = threadIdx.x; j < 1024 && j0 + j < n; j += blockDim.x) dj[j] = Hh[(size_t)(j0 + j) * n + j0 + j];
            __syncthreads();
            const int cnt = n - j0 < 1024 ? n - j0 : 1024;
            for (int j = 0; j < cnt; j++) rank += dj[j] > di || (dj[j] == di && j0 + j < i);
        }
    else
        rank = i;
    if (i < n) perm[(size_t)h * n + rank] = i;
}

/* Wp[m][r][k] = dead ? 0 : W[m][r][perm[k]] */
__global__ void permute_kernel(const float *W, const int32_t *hidx, const int32_t *perm, const int32_t *dead, int64_t rows, int n, size_t total,
                               double *Wp)
{
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < total; x += (size_t)gridDim.x * blockDim.x) {
        const int k = (int)(x % (size_t)n);
        const size_t mr = x / (size_t)n;
        const int m = (int)(mr / (size_t)rows);
        const size_t h = (size_t)hidx[m];
        const int p = perm[h * n + k];
        Wp[x] = dead[h * n + p] ? 0.0 : (double)W[mr * n + p];
    }
}

__global__ void gidx_kernel(const int32_t *perm, int n, int64_t g, size_t total, int32_t *g_idx)
{
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < total; x += (size_t)gridDim.x * blockDim.x) {
        const size_t h = x / (size_t)n;
        const int k = (int)(x % (size_t)n);
        g_idx[h * n + perm[x]] = (int32_t)(k / g);
    }
}

/* S[h][i][j] = H[h][p[n-1-i]][p[n-1-j]] + [i == j] damp[h] */
__global__ void reverse_kernel(const double *H, const int32_t *perm, const double *damp, int n, size_t total, double *S)
{
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < total; x += (size_t)gridDim.x * blockDim.x) {
        const size_t nn = (size_t)n * n, h = x / nn, ij = x % nn;
        const int i = (int)(ij / (size_t)n), j = (int)(ij % (size_t)n);
        const int32_t *p = perm + h * n;
        const double v = H[h * nn + (size_t)p[n - 1 - i] * n + p[n - 1 - j]];
        S[x] = i == j ? __dadd_rn(v, damp[h]) : v;
    }
}

__global__ void identity_kernel(int n, size_t total, double *A)
{
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < total; x += (size_t)gridDim.x * blockDim.x) {
        const size_t ij = x % ((size_t)n * n);
        A[x] = ij / (size_t)n == ij % (size_t)n ? 1.0 : 0.0;
    }
}

/* U[h] row-major (c, j) = Linv[h] column-major (n-1-c, n-1-j) for j >= c, else 0: 32x32 tiles,
 * read along c (contiguous in Linv: address (n-1-c) + (n-1-j) n), written along j */
__global__ void upper_kernel(const double *Linv, int n, double *U)
{
    __shared__ double t[32][33];
    const size_t nn = (size_t)n * n;
    const double *L = Linv + (size_t)blockIdx.z * nn;
    double *Uh = U + (size_t)blockIdx.z * nn;
    const int c0 = blockIdx.y * 32, j0 = blockIdx.x * 32;
    for (int dj = threadIdx.y; dj < 32; dj += blockDim.y) { /* thread x walks c */
        const int c = c0 + threadIdx.x, j = j0 + dj;
        if (c < n && j < n) t[dj][threadIdx.x] = j >= c ? L[(size_t)(n - 1 - c) + (size_t)(n - 1 - j) * n] : 0.0;
    }
    __syncthreads();
    for (int dc = threadIdx.y; dc < 32; dc += blockDim.y) { /* thread x walks j */
        const int c = c0 + dc, j = j0 + threadIdx.x;
        if (c < n && j < n) Uh[(size_t)c * n + j] = t[threadIdx.x][dc];
    }
}

__global__ void ptr_kernel(double **out, double *base, size_t stride, int count)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) out[i] = base + (size_t)i * stride;
}

/* the lazy update's operands for block [i1, i2): A = U[hidx[m]] + i1 n + i2, B = Err[m], C = Wp[m] + i2 */
__global__ void lazy_ptr_kernel(double **A, double **B, double **C, const double *U, double *Err, double *Wp, const int32_t *hidx, int n_mat,
                                int n, int64_t rows, int i1, int i2)
{
    const int m = blockIdx.x * blockDim.x + threadIdx.x;
    if (m >= n_mat) return;
    A[m] = (double *)U + (size_t)hidx[m] * n * n + (size_t)i1 * n + i2;
    B[m] = Err + (size_t)m * rows * MODE_GPTQ_BLOCK;
    C[m] = Wp + (size_t)m * rows * n + i2;
}

/* ---- the column loop ----------------------------------------------------------------------- */

/* mode_quant_params (lib/quant.c) as device code, with explicitly rounded operations */
__device__ __forceinline__ void find_params(const double *x, int64_t cnt, int maxq, bool sym, double *scale, double *zero)
{
    double lo = 0, hi = 0;
    for (int64_t i = 0; i < cnt; i++) {
        const double v = x[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (sym) {
        hi = fmax(fabs(lo), hi);
        if (lo < 0) lo = -hi;
    }
    if (lo == 0 && hi == 0) lo = -1, hi = 1;
    double sc = __ddiv_rn(__dsub_rn(hi, lo), (double)maxq);
    if (!isfinite(sc)) sc = DBL_MAX;
    if (!(sc > 0)) sc = 1;
    *scale = sc;
    *zero = sym ? (double)((maxq + 1) / 2) : rint(__ddiv_rn(-lo, sc));
}

struct block_args {
    int n, i1, i2;
    int64_t rows, g, ng;
    bool sym;
    const int32_t *hidx, *perm;
    const uint8_t *bits;
    const double *U;
    double *Wp, *Err, *gp;
    float *deq, *scale, *zero;
    uint8_t *q;
};

/* grid (tiles of TR rows, n_mat); shared: the tile (TR, cnt) f64, the column's U row (cnt), the
 * tile's errors (TR) */
__global__ void block_kernel(struct block_args a, int TR)
{
    extern __shared__ double sm[];
    const int m = blockIdx.y, cnt = a.i2 - a.i1, n = a.n;
    const int64_t r0 = (int64_t)blockIdx.x * TR;
    const int nr = a.rows - r0 < TR ? (int)(a.rows - r0) : TR;
    double *tile = sm, *urow = tile + (size_t)TR * cnt, *es = urow + cnt;
    const size_t h = (size_t)a.hidx[m];
    const double *U = a.U + h * n * n;
    const int32_t *perm = a.perm + h * n;
    double *Wm = a.Wp + (size_t)m * a.rows * n;
    const int maxq = (1 << a.bits[m]) - 1;
    /* the tile at the block's start */
    for (int x = threadIdx.x; x < nr * cnt; x += blockDim.x) {
        const int r = x / cnt, i = x % cnt;
        tile[x] = Wm[(size_t)(r0 + r) * n + a.i1 + i];
    }
    /* parameters of the groups that start in this block, from the block-start weights */
    const int first = (int)((a.i1 + a.g - 1) / a.g); /* first group starting at or after i1 */
    const int last = (int)((a.i2 - 1) / a.g);       /* last group starting before i2 */
    const int ngb = last >= first ? last - first + 1 : 0;
    for (int x = threadIdx.x; x < nr * ngb; x += blockDim.x) {
        const int r = x % nr, k = first + x / nr;
        const int64_t c = (int64_t)k * a.g, ge = c + a.g < n ? c + a.g : n;
        double sc, z;
        find_params(Wm + (size_t)(r0 + r) * n + c, ge - c, maxq, a.sym, &sc, &z);
        const size_t po = ((size_t)m * a.rows + (size_t)(r0 + r)) * a.ng + (size_t)k;
        a.gp[2 * po] = sc, a.gp[2 * po + 1] = z;
        a.scale[po] = (float)sc, a.zero[po] = (float)z;
    }
    __syncthreads();
    double gs = 0, gz = 0;
    const int r = threadIdx.x;
    for (int i = 0; i < cnt; i++) {
        const int c = a.i1 + i;
        for (int j = i + threadIdx.x; j < cnt; j += blockDim.x) urow[j] = U[(size_t)c * n + a.i1 + j];
        __syncthreads();
        if (r < nr) {
            const int64_t row = r0 + r;
            if (i == 0 || c % a.g == 0) {
                const size_t po = ((size_t)m * a.rows + (size_t)row) * a.ng + (size_t)(c / a.g);
                gs = a.gp[2 * po], gz = a.gp[2 * po + 1];
            }
            const double w = tile[r * cnt + i];
            double v = __dadd_rn(rint(__ddiv_rn(w, gs)), gz);
            if (!(v >= 0)) v = 0;
            if (v > maxq) v = maxq;
            const double dq = __dmul_rn(gs, __dsub_rn(v, gz));
            const double e = __ddiv_rn(__dsub_rn(w, dq), urow[i]);
            es[r] = e;
            a.Err[((size_t)m * a.rows + (size_t)row) * MODE_GPTQ_BLOCK + i] = e;
            tile[r * cnt + i] = dq;
            const size_t o = ((size_t)m * a.rows + (size_t)row) * n + (size_t)perm[c];
            a.q[o] = (uint8_t)v;
            a.deq[o] = (float)dq;
        }
        __syncthreads();
        /* the block's later columns: warps over rows, lanes over columns */
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarp = blockDim.x >> 5;
        for (int rr = warp; rr < nr; rr += nwarp) {
            const double e = es[rr];
            for (int j = i + 1 + lane; j < cnt; j += 32) tile[rr * cnt + j] = __dsub_rn(tile[rr * cnt + j], __dmul_rn(e, urow[j]));
        }
        __syncthreads();
    }
}

/* ---- the entry points ---------------------------------------------------------------------- */

static bool factor_loop(void)
{
    const char *v = getenv("MODE_GPTQ_FACTOR");
    return v && !strcmp(v, "loop");
}

extern "C" int mode_gptq_cuda(struct mode_gptq_batch *b, void *stream, struct mode_err *err)
{
    int64_t ng;
    int rc = mode_gptq_check(b, &ng, err);
    if (rc) return rc;
    cudaStream_t s = (cudaStream_t)stream;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    if ((rc = mode_cuda_blas(s, &blas, &solver, err))) return rc;
    struct mode_gptq_work w;
    mode_gptq_work_carve(b, b->work, &w);
    const int n = (int)b->cols, nh = b->n_h, nm = b->n_mat;
    const int64_t rows = b->rows, g = b->group <= 0 || b->group > n ? n : b->group;
    const size_t nn = (size_t)n * n;
    const double dampf = b->damp > 0 ? b->damp : 0.01;
    const int T = 256;
    CUDA_CHECK(cudaMemcpyAsync(w.hidx, b->hidx, sizeof(int32_t) * nm, cudaMemcpyHostToDevice, s), err);
    CUDA_CHECK(cudaMemcpyAsync(w.bits, b->bits, (size_t)nm, cudaMemcpyHostToDevice, s), err);
    CUDA_CHECK(cudaMemsetAsync(w.info, 0x7f, sizeof(int32_t) * nh, s), err); /* neg: "none" = 0x7f7f7f7f */
    CUDA_CHECK(cudaMemsetAsync(w.info + nh, 0, sizeof(int32_t) * nh, s), err);
    /* the dead flags live in g_idx until g_idx is written */
    diag_kernel<<<dim3((unsigned)((n + T - 1) / T), (unsigned)nh), T, 0, s>>>(b->H, n, b->g_idx, w.info);
    CUDA_CHECK_LAUNCH(err);
    damp_kernel<<<(unsigned)((nh + 63) / 64), 64, 0, s>>>(b->H, nh, n, dampf, w.damp);
    CUDA_CHECK_LAUNCH(err);
    order_kernel<<<dim3((unsigned)((n + T - 1) / T), (unsigned)nh), T, 0, s>>>(b->H, n, b->act_order, w.perm);
    CUDA_CHECK_LAUNCH(err);
    const size_t tw = (size_t)nm * (size_t)rows * n;
    permute_kernel<<<blocks_for(tw, T), T, 0, s>>>(b->W, w.hidx, w.perm, b->g_idx, rows, n, tw, w.Wp);
    CUDA_CHECK_LAUNCH(err);
    gidx_kernel<<<blocks_for((size_t)nh * n, T), T, 0, s>>>(w.perm, n, g, (size_t)nh * n, b->g_idx);
    CUDA_CHECK_LAUNCH(err);
    reverse_kernel<<<blocks_for((size_t)nh * nn, T), T, 0, s>>>(b->H, w.perm, w.damp, n, (size_t)nh * nn, w.S);
    CUDA_CHECK_LAUNCH(err);
    /* S = L Lᵀ */
    int *potrf_info = w.info + nh;
    if (factor_loop()) {
        int lwork = 0;
        CUSOLVER_CHECK(cusolverDnDpotrf_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, n, w.S, n, &lwork), err);
        double *ws;
        CUDA_CHECK(cudaMallocAsync((void **)&ws, sizeof(double) * (size_t)(lwork > 0 ? lwork : 1), s), err);
        for (int h = 0; h < nh && !rc; h++)
            rc = mode_cusolver_status(cusolverDnDpotrf(solver, CUBLAS_FILL_MODE_LOWER, n, w.S + (size_t)h * nn, n, ws, lwork, potrf_info + h),
                                      "cusolverDnDpotrf", __FILE__, __LINE__, err);
        cudaFreeAsync(ws, s);
        if (rc) return rc;
    } else {
        ptr_kernel<<<(unsigned)((nh + 127) / 128), 128, 0, s>>>(w.ptr, w.S, nn, nh);
        CUDA_CHECK_LAUNCH(err);
        CUSOLVER_CHECK(cusolverDnDpotrfBatched(solver, CUBLAS_FILL_MODE_LOWER, n, w.ptr, n, potrf_info, nh), err);
    }
    CUDA_CHECK(cudaMemcpyAsync(b->info, w.info, sizeof(int32_t) * nh, cudaMemcpyDeviceToHost, s), err);
    int32_t *pinfo = (int32_t *)malloc(sizeof(int32_t) * (size_t)nh);
    if (!pinfo) return mode_err_oom(err, sizeof(int32_t) * (size_t)nh, "GPTQ status");
    rc = mode_cuda_status(cudaMemcpyAsync(pinfo, potrf_info, sizeof(int32_t) * nh, cudaMemcpyDeviceToHost, s), "cudaMemcpyAsync", __FILE__,
                          __LINE__, err);
    if (!rc) rc = mode_cuda_status(cudaStreamSynchronize(s), "cudaStreamSynchronize", __FILE__, __LINE__, err);
    for (int h = 0; h < nh && !rc; h++) b->info[h] = b->info[h] != 0x7f7f7f7f ? -(b->info[h] + 1) : pinfo[h];
    free(pinfo);
    if (rc || (rc = mode_gptq_info_status(b->info, nh, err))) return rc;
    /* L⁻¹, then U = J L⁻¹ J row-major. Batched: L⁻¹ by trsm against the identity into H (the
     * Hessians are no longer needed; 2n³ flops), U into S. Loop: L⁻¹ in place by trtri (n³/3
     * flops), U into H. */
    const double one = 1.0, minus_one = -1.0;
    double *U;
    if (factor_loop()) {
        size_t dbytes = 0, hbytes = 0;
        CUSOLVER_CHECK(cusolverDnXtrtri_bufferSize(solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_64F, w.S, n, &dbytes, &hbytes),
                       err);
        void *dws = NULL, *hws = hbytes ? malloc(hbytes) : NULL;
        if (hbytes && !hws) return mode_err_oom(err, hbytes, "cuSOLVER trtri");
        rc = mode_cuda_status(cudaMallocAsync(&dws, dbytes ? dbytes : 1, s), "cudaMallocAsync", __FILE__, __LINE__, err);
        for (int h = 0; h < nh && !rc; h++)
            rc = mode_cusolver_status(cusolverDnXtrtri(solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n, CUDA_R_64F, w.S + (size_t)h * nn, n,
                                                       dws, dbytes, hws, hbytes, potrf_info + h),
                                      "cusolverDnXtrtri", __FILE__, __LINE__, err);
        if (dws) cudaFreeAsync(dws, s);
        if (!rc) rc = mode_cuda_status(cudaStreamSynchronize(s), "cudaStreamSynchronize", __FILE__, __LINE__, err);
        free(hws);
        if (rc) return rc;
        upper_kernel<<<dim3((unsigned)((n + 31) / 32), (unsigned)((n + 31) / 32), (unsigned)nh), dim3(32, 8), 0, s>>>(w.S, n, b->H);
        CUDA_CHECK_LAUNCH(err);
        U = b->H;
    } else {
        identity_kernel<<<blocks_for((size_t)nh * nn, T), T, 0, s>>>(n, (size_t)nh * nn, b->H);
        CUDA_CHECK_LAUNCH(err);
        ptr_kernel<<<(unsigned)((nh + 127) / 128), 128, 0, s>>>(w.ptr + nh, b->H, nn, nh);
        CUDA_CHECK_LAUNCH(err);
        CUBLAS_CHECK(cublasDtrsmBatched(blas, CUBLAS_SIDE_LEFT, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, CUBLAS_DIAG_NON_UNIT, n, n, &one,
                                        (const double *const *)w.ptr, n, w.ptr + nh, n, nh),
                     err);
        upper_kernel<<<dim3((unsigned)((n + 31) / 32), (unsigned)((n + 31) / 32), (unsigned)nh), dim3(32, 8), 0, s>>>(b->H, n, w.S);
        CUDA_CHECK_LAUNCH(err);
        U = w.S;
    }
    /* the column loop */
    const int TR = (int64_t)nm * ((rows + 15) / 16) >= 264 ? 16 : 8; /* fewer rows a tile when the batch is small: more blocks */
    const size_t smem = sizeof(double) * ((size_t)TR * MODE_GPTQ_BLOCK + MODE_GPTQ_BLOCK + TR);
    struct block_args a = {n, 0, 0, rows, g, ng, b->sym, w.hidx, w.perm, w.bits, U, w.Wp, w.err, w.gp, b->deq, b->scale, b->zero, b->q};
    double **pa = w.ptr + 2 * nh, **pb = pa + nm, **pc = pb + nm;
    for (int i1 = 0; i1 < n; i1 += MODE_GPTQ_BLOCK) {
        const int i2 = i1 + MODE_GPTQ_BLOCK < n ? i1 + MODE_GPTQ_BLOCK : n;
        a.i1 = i1, a.i2 = i2;
        block_kernel<<<dim3((unsigned)((rows + TR - 1) / TR), (unsigned)nm), 128, smem, s>>>(a, TR);
        CUDA_CHECK_LAUNCH(err);
        if (i2 < n) {
            lazy_ptr_kernel<<<(unsigned)((nm + 127) / 128), 128, 0, s>>>(pa, pb, pc, U, w.err, w.Wp, w.hidx, nm, n, rows, i1, i2);
            CUDA_CHECK_LAUNCH(err);
            /* column-major: Wᵀ[i2:, :] ((n-i2) x rows, ld n) -= U_blkᵀ ((n-i2) x cnt, ld n) · Errᵀ (cnt x rows, ld 128) */
            CUBLAS_CHECK(cublasDgemmBatched(blas, CUBLAS_OP_N, CUBLAS_OP_N, n - i2, (int)rows, i2 - i1, &minus_one, (const double *const *)pa, n,
                                            (const double *const *)pb, MODE_GPTQ_BLOCK, &one, pc, n, nm),
                         err);
        }
    }
    return MODE_OK;
}

/* ---- Hessians ------------------------------------------------------------------------------ */

__global__ void widen_kernel(const float *x, size_t total, double *y)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) y[i] = x[i];
}

/* the lower triangle from the upper one (column-major upper i <= j at i + j n) */
__global__ void symmetrize_kernel(double *H, int n)
{
    const size_t nn = (size_t)n * n;
    for (size_t x = blockIdx.x * (size_t)blockDim.x + threadIdx.x; x < nn; x += (size_t)gridDim.x * blockDim.x) {
        const size_t i = x % (size_t)n, j = x / (size_t)n;
        if (i < j) H[j + i * n] = H[x];
    }
}

extern "C" int mode_hessian_cuda(const float *d_X, int64_t rows, int64_t cols, double alpha, double *d_Xd, double *d_H, void *stream,
                                 struct mode_err *err)
{
    if (rows < 0 || cols < 1 || cols > MODE_GPTQ_MAX_COLS || rows > INT_MAX)
        return mode_err_set(err, MODE_EUSAGE, "mode_hessian_cuda: %lld x %lld rows", (long long)rows, (long long)cols);
    cudaStream_t s = (cudaStream_t)stream;
    cublasHandle_t blas;
    int rc = mode_cuda_blas(s, &blas, NULL, err);
    if (rc) return rc;
    const size_t tot = (size_t)rows * (size_t)cols;
    if (rows == 0) {
        CUDA_CHECK(cudaMemsetAsync(d_H, 0, sizeof(double) * (size_t)cols * cols, s), err);
        return MODE_OK;
    }
    widen_kernel<<<blocks_for(tot, 256), 256, 0, s>>>(d_X, tot, d_Xd);
    CUDA_CHECK_LAUNCH(err);
    const double zero = 0.0;
    /* column-major A = Xᵀ (cols x rows, ld cols): H = alpha A Aᵀ, upper triangle */
    CUBLAS_CHECK(cublasDsyrk(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, (int)cols, (int)rows, &alpha, d_Xd, (int)cols, &zero, d_H, (int)cols), err);
    symmetrize_kernel<<<blocks_for((size_t)cols * cols, 256), 256, 0, s>>>(d_H, (int)cols);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

/* ---- host memory in and out ------------------------------------------------------------------ */

struct dev_bufs {
    double *H, *Xd;
    float *X, *W, *deq, *scale, *zero;
    uint8_t *q;
    int32_t *g_idx;
    void *work;
};

static void dev_free(struct dev_bufs *d)
{
    cudaFree(d->H), cudaFree(d->Xd), cudaFree(d->X), cudaFree(d->W), cudaFree(d->deq), cudaFree(d->scale), cudaFree(d->zero), cudaFree(d->q),
        cudaFree(d->g_idx), cudaFree(d->work);
}

extern "C" int mode_gptq_rows_cuda(struct mode_gptq_batch *b, const float *const *X, const int64_t *n_x, struct mode_err *err)
{
    int64_t ng;
    int rc = mode_gptq_check(b, &ng, err);
    if (rc) return rc;
    if ((rc = mode_cuda_available(err))) return rc;
    const int64_t n = b->cols, rows = b->rows;
    int64_t most = 1;
    for (int h = 0; h < b->n_h; h++) most = n_x[h] > most ? n_x[h] : most;
    const size_t nn = (size_t)(n * n), wn = (size_t)b->n_mat * (size_t)(rows * n), pn = (size_t)b->n_mat * (size_t)(rows * ng);
    struct mode_gptq_batch d = *b;
    struct dev_bufs z;
    memset(&z, 0, sizeof z);
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreate(&s), err);
#define DEV_ALLOC(p, bytes) \
    if (!rc) rc = mode_cuda_status(cudaMalloc((void **)&(p), (size_t)(bytes) > 0 ? (size_t)(bytes) : 1), "cudaMalloc " #p, __FILE__, __LINE__, err)
    DEV_ALLOC(z.H, sizeof(double) * nn * b->n_h);
    DEV_ALLOC(z.Xd, sizeof(double) * (size_t)(most * n));
    DEV_ALLOC(z.X, sizeof(float) * (size_t)(most * n));
    DEV_ALLOC(z.W, sizeof(float) * wn);
    DEV_ALLOC(z.deq, sizeof(float) * wn);
    DEV_ALLOC(z.q, wn);
    DEV_ALLOC(z.scale, sizeof(float) * pn);
    DEV_ALLOC(z.zero, sizeof(float) * pn);
    DEV_ALLOC(z.g_idx, sizeof(int32_t) * (size_t)(b->n_h * n));
    DEV_ALLOC(z.work, mode_gptq_work_bytes(b));
#undef DEV_ALLOC
    /* each Hessian from its rows, one upload at a time */
    for (int h = 0; h < b->n_h && !rc; h++) {
        if (n_x[h] < 1) {
            rc = mode_err_set(err, MODE_EUSAGE, "GPTQ: Hessian %d has no calibration row", h);
            break;
        }
        rc = mode_cuda_status(cudaMemcpyAsync(z.X, X[h], sizeof(float) * (size_t)(n_x[h] * n), cudaMemcpyHostToDevice, s), "upload rows", __FILE__,
                              __LINE__, err);
        if (!rc) rc = mode_hessian_cuda(z.X, n_x[h], n, 2.0 / (double)n_x[h], z.Xd, z.H + (size_t)h * nn, s, err);
    }
    if (!rc) rc = mode_cuda_status(cudaMemcpyAsync(z.W, b->W, sizeof(float) * wn, cudaMemcpyHostToDevice, s), "upload weights", __FILE__, __LINE__, err);
    if (!rc) {
        d.H = z.H, d.W = z.W, d.deq = z.deq, d.q = z.q, d.scale = z.scale, d.zero = z.zero, d.g_idx = z.g_idx, d.work = z.work;
        rc = mode_gptq_cuda(&d, s, err);
    }
#define DOWN(dst, src, bytes) \
    if (!rc) rc = mode_cuda_status(cudaMemcpyAsync((dst), (src), (bytes), cudaMemcpyDeviceToHost, s), "download " #dst, __FILE__, __LINE__, err)
    DOWN(b->deq, z.deq, sizeof(float) * wn);
    DOWN(b->q, z.q, wn);
    DOWN(b->scale, z.scale, sizeof(float) * pn);
    DOWN(b->zero, z.zero, sizeof(float) * pn);
    DOWN(b->g_idx, z.g_idx, sizeof(int32_t) * (size_t)(b->n_h * n));
#undef DOWN
    if (!rc) rc = mode_cuda_status(cudaStreamSynchronize(s), "cudaStreamSynchronize", __FILE__, __LINE__, err);
    cudaStreamSynchronize(s);
    dev_free(&z);
    cudaStreamDestroy(s);
    return rc;
}
