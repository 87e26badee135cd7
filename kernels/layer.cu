/* layer.cu — one text decoder layer of Qwen3-VL-MoE resident on the GPU, composed of the
 * forward-pass kernels (ops.cu, attn.cu, gemm.cu, moe.cu, qgemm.cu); the contract is in
 * mode_cuda.h, the C reference is mode_text_layer_ref (lib/layer.c), the test
 * tests/kernels/test_layer.c and the benchmark tests/bench/bench_layer.c.
 *
 * Work buffer, 256-byte aligned pieces: xn (n, d) f32, xb (n, max(d, qd)) bf16 (unused in f32), q (n, qd),
 * k and v (n, kvd), o (n, qd), logits (n, n_expert), the MoE output (n, d) f32, order and slot
 * (n·k) i32, then the experts' own scratch. At Qwen3-VL-30B-A3B's shape (d 2048, 32 heads of
 * 128, 4 kv heads, 128 experts top-8, width 768) that is 50 KB per row plus the experts' ~158 KB
 * per row (mode_moe_work_bytes): 13.6 GB for 65,536 rows. */
#include "mode_cuda.h"
#include "common.cuh"
#include "moe.cuh"

#include "../lib/moe.h"

#include <stdlib.h>

static size_t up256(size_t x) { return (x + 255) & ~(size_t)255; }

struct pieces {
    size_t xn, xb, q, k, v, o, logits, mout, order, slot, moe, total;
};

static struct pieces layout(const struct mode_text_layer_cuda *L, int64_t n)
{
    struct pieces p;
    const size_t N = (size_t)n, D = (size_t)L->d, qd = (size_t)L->n_head * L->head_dim, kvd = (size_t)L->n_head_kv * L->head_dim,
                 P = N * (size_t)L->k;
    const size_t moe = L->f32      ? up256(P * D * 4) * 2 + up256(P * 2 * (size_t)L->i * 4) + up256(P * (size_t)L->i * 4)
                       : L->packed ? mode_qmoe_prefill_work_bytes(L->packed, (int)n, L->k)
                                   : mode_moe_work_bytes(&L->experts, (int)n, L->k);
    size_t at = 0;
    p.xn = at, at += up256(N * D * 4);
    p.xb = at, at += up256(N * (D > qd ? D : qd) * 2);
    p.q = at, at += up256(N * qd * 4);
    p.k = at, at += up256(N * kvd * 4);
    p.v = at, at += up256(N * kvd * 4);
    p.o = at, at += up256(N * qd * 4);
    p.logits = at, at += up256(N * (size_t)L->n_expert * 4);
    p.mout = at, at += up256(N * D * 4);
    p.order = at, at += up256(P * 4);
    p.slot = at, at += up256(P * 4);
    p.moe = at, at += up256(moe);
    p.total = at;
    return p;
}

static int check(const struct mode_text_layer_cuda *L, int64_t n, struct mode_err *err)
{
    if (!L || L->d < 1 || L->n_head < 1 || L->n_head_kv < 1 || L->n_head % L->n_head_kv || L->head_dim < 2 || L->head_dim % 2 ||
        L->n_expert < 1 || L->k < 1 || L->k > L->n_expert || L->i < 1)
        return mode_err_set(err, MODE_EUSAGE, "mode_text_layer_cuda: bad layer shape");
    if (n < 0 || n > INT32_MAX / (L->k > 0 ? L->k : 1))
        return mode_err_set(err, MODE_EUSAGE, "mode_text_layer_cuda: %lld rows do not fit the routing's int32 indices", (long long)n);
    if (!L->wq || !L->wk || !L->wv || !L->wo || !L->attn_norm || !L->q_norm || !L->k_norm || !L->ffn_norm || !L->router ||
        (L->f32 && (!L->gate_up32 || !L->down32 || L->packed)) || (!L->f32 && !L->packed && (!L->experts.gate_up || !L->experts.down)))
        return mode_err_set(err, MODE_EUSAGE, "mode_text_layer_cuda: a weight is missing (or packed experts asked for in f32)");
    if (!L->f32 && !L->packed && (L->experts.d != L->d || L->experts.i != L->i || L->experts.n_expert != L->n_expert))
        return mode_err_set(err, MODE_EUSAGE, "mode_text_layer_cuda: the experts' shape is not the layer's");
    if (L->packed && (L->packed->d != L->d || L->packed->i != L->i || L->packed->n_expert != L->n_expert))
        return mode_err_set(err, MODE_EUSAGE, "mode_text_layer_cuda: the packed experts' shape is not the layer's");
    return MODE_OK;
}

extern "C" size_t mode_text_layer_work_bytes(const struct mode_text_layer_cuda *L, int64_t n)
{
    struct mode_err err;
    if (check(L, n, &err)) return 0;
    return layout(L, n).total;
}

/* the events of the parts: 0 start, 1 after the projections and rope, 2 after attention and
 * o_proj, 3 after the router and top-k, 4 end */
#define N_EV 5

static int record(cudaEvent_t *ev, int i, cudaStream_t s, struct mode_err *err)
{
    if (ev) CUDA_CHECK(cudaEventRecord(ev[i], s), err);
    return MODE_OK;
}

/* c (m, n) = x (m, k) · wᵀ + beta·c for an nn.Linear weight w (n, k): SGEMM on x in f32, or the
 * bf16 product on x rounded into xb */
static int proj(const struct mode_text_layer_cuda *L, int64_t m, int64_t n, int64_t k, const float *x, uint16_t *xb, bool round, const void *w,
                float beta, float *c, cudaStream_t s, struct mode_err *err)
{
    if (L->f32) return mode_gemm_cuda(m, n, k, x, k, (const float *)w, k, true, beta, c, n, s, err);
    int rc = round ? mode_round_bf16_cuda(x, (size_t)(m * k), xb, s, err) : MODE_OK;
    return rc ? rc : mode_gemm_bf16_cuda(m, n, k, xb, k, (const uint16_t *)w, k, true, beta, c, n, s, err);
}

__global__ void gather_f32_kernel(const float *__restrict__ x, const int32_t *__restrict__ order, int k, int D, float *__restrict__ xs)
{
    const int pos = blockIdx.x, t = order[pos] / k;
    for (int c = threadIdx.x; c < D; c += blockDim.x) xs[(size_t)pos * D + c] = x[(size_t)t * D + c];
}

/* the f32 experts: rows gathered by expert, per expert SGEMMs around SiLU·mul, the weighted
 * combine in slot order (deterministic), as the CPU runtime sums them up to the order of terms */
static int experts_f32(const struct mode_text_layer_cuda *L, const struct mode_moe_route *r, const float *x, char *work, float *out,
                       cudaStream_t s, struct mode_err *err)
{
    const int D = L->d, I = L->i, P = r->T * r->k;
    float *xs = (float *)work, *hh = (float *)(work + up256((size_t)P * D * 4)),
          *act = (float *)((char *)hh + up256((size_t)P * 2 * I * 4)), *y = (float *)((char *)act + up256((size_t)P * I * 4));
    gather_f32_kernel<<<P, 256, 0, s>>>(x, r->order, r->k, D, xs);
    CUDA_CHECK_LAUNCH(err);
    int rc;
    for (int e = 0; e < L->n_expert; e++) {
        const int64_t c = r->start[e + 1] - r->start[e], s0 = r->start[e];
        if (c <= 0) continue;
        const float *gu = L->gate_up32 + (size_t)e * D * 2 * I, *dn = L->down32 + (size_t)e * I * D;
        const bool lin = L->linear32_each ? L->linear32_each[e] != 0 : L->linear32;
        if ((rc = mode_gemm_cuda(c, 2 * I, D, xs + s0 * D, D, gu, lin ? D : 2 * I, lin, 0.0f, hh + s0 * 2 * I, 2 * I, s, err)) ||
            (rc = mode_swiglu_cuda(hh + s0 * 2 * I, c, I, act + s0 * I, s, err)) ||
            (rc = mode_gemm_cuda(c, D, I, act + s0 * I, I, dn, lin ? I : D, lin, 0.0f, y + s0 * D, D, s, err)))
            return rc;
    }
    combine_kernel<<<r->T, 256, 0, s>>>(y, r->slot, r->weights, r->k, D, out);
    CUDA_CHECK_LAUNCH(err);
    return MODE_OK;
}

static int run(const struct mode_text_layer_cuda *L, const struct mode_text_rows_cuda *rows, float *d_h, int32_t *d_idx, float *d_w,
               char *work, cudaEvent_t *ev, cudaStream_t s, int32_t *h_idx, int32_t *h_order, int32_t *h_slot, int64_t *h_start,
               struct mode_err *err)
{
    const int64_t n = rows->n, D = L->d, hd = L->head_dim, qd = (int64_t)L->n_head * hd, kvd = (int64_t)L->n_head_kv * hd;
    const struct pieces p = layout(L, n);
    float *xn = (float *)(work + p.xn), *q = (float *)(work + p.q), *k = (float *)(work + p.k), *v = (float *)(work + p.v),
          *o = (float *)(work + p.o), *logits = rows->d_logits ? rows->d_logits : (float *)(work + p.logits),
          *mout = rows->d_moe_out ? rows->d_moe_out : (float *)(work + p.mout), *mx = rows->d_moe_x ? rows->d_moe_x : xn;
    uint16_t *xb = (uint16_t *)(work + p.xb);
    int32_t *order = (int32_t *)(work + p.order), *slot = (int32_t *)(work + p.slot);
    int rc;
    if ((rc = record(ev, 0, s, err))) return rc;
    /* attention: RMSNorm, q/k/v on tensor cores, per-head RMSNorm of q and k, rope */
    if ((rc = mode_rmsnorm_cuda(d_h, L->attn_norm, L->eps, n, D, xn, s, err)) ||
        (rc = proj(L, n, qd, D, xn, xb, true, L->wq, 0.0f, q, s, err)) || (rc = proj(L, n, kvd, D, xn, xb, false, L->wk, 0.0f, k, s, err)) ||
        (rc = proj(L, n, kvd, D, xn, xb, false, L->wv, 0.0f, v, s, err)) ||
        (rc = mode_rmsnorm_cuda(q, L->q_norm, L->eps, n * L->n_head, hd, q, s, err)) ||
        (rc = mode_rmsnorm_cuda(k, L->k_norm, L->eps, n * L->n_head_kv, hd, k, s, err)) ||
        (rc = mode_rope_cuda(q, n, qd, L->n_head, (int)hd, rows->d_ang, s, err)) ||
        (rc = mode_rope_cuda(k, n, kvd, L->n_head_kv, (int)hd, rows->d_ang, s, err)) || (rc = record(ev, 1, s, err)))
        return rc;
    const struct mode_attn_shape a = {L->n_head, L->n_head_kv, (int)hd, qd, kvd, kvd, qd, true, 1.0f / sqrtf((float)hd)};
    if ((rc = mode_attention_cuda(&a, q, k, v, rows->seg, rows->n_seg, rows->d_sel, rows->d_colsum, o, s, err)) ||
        (rc = proj(L, n, D, qd, o, xb, true, L->wo, 1.0f, d_h, s, err)) || (rc = record(ev, 2, s, err)))
        return rc;
    /* router in f32, top-k, the routing sorted on the host */
    if ((rc = mode_rmsnorm_cuda(d_h, L->ffn_norm, L->eps, n, D, mx, s, err)) ||
        (rc = mode_gemm_cuda(n, L->n_expert, D, mx, D, L->router, D, true, 0.0f, logits, L->n_expert, s, err)) ||
        (rc = mode_topk_cuda(logits, n, L->n_expert, L->k, L->norm_topk, d_idx, d_w, s, err)) || (rc = record(ev, 3, s, err)))
        return rc;
    const size_t P = (size_t)n * (size_t)L->k;
    CUDA_CHECK(cudaMemcpyAsync(h_idx, d_idx, P * 4, cudaMemcpyDeviceToHost, s), err);
    CUDA_CHECK(cudaStreamSynchronize(s), err);
    if ((rc = mode_moe_route_sort(h_idx, (int)n, L->k, L->n_expert, h_order, h_slot, h_start, err))) return rc;
    CUDA_CHECK(cudaMemcpyAsync(order, h_order, P * 4, cudaMemcpyHostToDevice, s), err);
    CUDA_CHECK(cudaMemcpyAsync(slot, h_slot, P * 4, cudaMemcpyHostToDevice, s), err);
    const struct mode_moe_route r = {(int)n, L->k, order, slot, d_w, h_start};
    rc = L->f32      ? experts_f32(L, &r, mx, work + p.moe, mout, s, err)
         : L->packed ? mode_qmoe_prefill_cuda(L->packed, &r, mx, work + p.moe, mout, s, err)
                     : mode_moe_bf16_cuda(&L->experts, &r, mx, work + p.moe, mout, s, err);
    if (rc || (rc = mode_add_cuda(d_h, mout, n * D, s, err)) || (rc = record(ev, 4, s, err))) return rc;
    /* the host buffers of the copies must outlive them */
    CUDA_CHECK(cudaStreamSynchronize(s), err);
    return MODE_OK;
}

extern "C" int mode_text_layer_cuda(const struct mode_text_layer_cuda *L, const struct mode_text_rows_cuda *rows, float *d_h, int32_t *d_idx,
                                    float *d_w, void *d_work, struct mode_text_layer_times *times, void *stream, struct mode_err *err)
{
    int rc;
    if (!rows || (rc = check(L, rows->n, err))) return rows ? rc : mode_err_set(err, MODE_EUSAGE, "mode_text_layer_cuda: no rows");
    if (rows->n == 0) return MODE_OK;
    if (rows->n_seg < 1 || !rows->seg || !rows->d_ang || (rows->d_sel && !rows->d_colsum))
        return mode_err_set(err, MODE_EUSAGE, "mode_text_layer_cuda: rows without sequences, angles or colsum");
    if ((rc = mode_cuda_available(err))) return rc;
    const size_t P = (size_t)rows->n * (size_t)L->k;
    int32_t *h_idx = (int32_t *)malloc(P * 4 * 3);
    int64_t *h_start = (int64_t *)malloc(sizeof(int64_t) * ((size_t)L->n_expert + 1));
    if (!h_idx || !h_start) {
        free(h_idx), free(h_start);
        return mode_err_oom(err, P * 12, "the routing");
    }
    cudaEvent_t ev[N_EV];
    int n_ev = 0;
    rc = MODE_OK;
    for (; times && n_ev < N_EV && !rc; n_ev++) rc = mode_cuda_status(cudaEventCreate(&ev[n_ev]), "cudaEventCreate", __FILE__, __LINE__, err);
    if (!rc)
        rc = run(L, rows, d_h, d_idx, d_w, (char *)d_work, times ? ev : NULL, (cudaStream_t)stream, h_idx, h_idx + P, h_idx + 2 * P, h_start,
                 err);
    if (!rc && times) {
        float ms[N_EV - 1];
        for (int i = 0; i < N_EV - 1 && !rc; i++)
            rc = mode_cuda_status(cudaEventElapsedTime(&ms[i], ev[i], ev[i + 1]), "cudaEventElapsedTime", __FILE__, __LINE__, err);
        if (!rc) {
            times->attn_proj = ms[0], times->attn_core = ms[1], times->router = ms[2], times->moe = ms[3];
            times->total = (double)ms[0] + ms[1] + ms[2] + ms[3];
        }
    }
    for (int i = 0; i < n_ev; i++) cudaEventDestroy(ev[i]);
    free(h_idx), free(h_start);
    return rc;
}

/* ---- the vision block ------------------------------------------------------------------------ */

/* work: hn (p, e), qkv (p, 3e), att (p, e), mlp (p, n_ff), f32 */
static bool vision_shape_ok(const struct mode_vision_block_cuda *B, int64_t p)
{
    return B && B->e > 0 && B->n_head > 0 && B->e % B->n_head == 0 && (B->e / B->n_head) % 2 == 0 && B->n_ff > 0 && p >= 0;
}

static bool vision_ok(const struct mode_vision_block_cuda *B, int64_t p)
{
    return vision_shape_ok(B, p) && B->n1w && B->n1b && B->qkv && B->qkvb && B->proj && B->projb && B->n2w && B->n2b && B->fc1 && B->fc1b &&
           B->fc2 && B->fc2b;
}

/* the dimensions only: the weights may be absent */
extern "C" size_t mode_vision_block_work_bytes(const struct mode_vision_block_cuda *B, int64_t p)
{
    if (!vision_shape_ok(B, p)) return 0;
    const size_t P = (size_t)p, E = (size_t)B->e;
    return up256(P * E * 4) * 2 + up256(P * 3 * E * 4) + up256(P * (size_t)B->n_ff * 4);
}

extern "C" int mode_vision_block_cuda(const struct mode_vision_block_cuda *B, int64_t p, const int64_t *seg, int n_seg, const float *d_ang,
                                      float *d_x, void *d_work, void *stream, struct mode_err *err)
{
    if (!vision_ok(B, p) || !d_ang || !d_x || !d_work || n_seg < 0 || (n_seg > 0 && !seg))
        return mode_err_set(err, MODE_EUSAGE, "mode_vision_block_cuda: bad block shape, weight or buffer");
    if (p == 0) return MODE_OK;
    cudaStream_t s = (cudaStream_t)stream;
    const int64_t E = B->e, F = B->n_ff, hd = E / B->n_head;
    const size_t P = (size_t)p;
    char *w = (char *)d_work;
    float *hn = (float *)w, *att = (float *)(w + up256(P * E * 4)), *qkv = (float *)(w + 2 * up256(P * E * 4)),
          *mlp = (float *)(w + 2 * up256(P * E * 4) + up256(P * 3 * E * 4));
    const struct mode_attn_shape as = {B->n_head, B->n_head, (int)hd, 3 * E, 3 * E, 3 * E, E, false, 1.0f / sqrtf((float)hd)};
    int rc;
    if ((rc = mode_layernorm_cuda(d_x, B->n1w, B->n1b, B->eps, p, E, hn, s, err)) ||
        (rc = mode_gemm_cuda(p, 3 * E, E, hn, E, B->qkv, E, true, 0.0f, qkv, 3 * E, s, err)) ||
        (rc = mode_add_bias_cuda(qkv, B->qkvb, p, 3 * E, s, err)) || (rc = mode_rope_cuda(qkv, p, 3 * E, B->n_head, (int)hd, d_ang, s, err)) ||
        (rc = mode_rope_cuda(qkv + E, p, 3 * E, B->n_head, (int)hd, d_ang, s, err)) ||
        (rc = mode_attention_cuda(&as, qkv, qkv + E, qkv + 2 * E, seg, n_seg, NULL, NULL, att, s, err)) ||
        (rc = mode_gemm_cuda(p, E, E, att, E, B->proj, E, true, 0.0f, hn, E, s, err)) || (rc = mode_add_bias_cuda(hn, B->projb, p, E, s, err)) ||
        (rc = mode_add_cuda(d_x, hn, p * E, s, err)) || (rc = mode_layernorm_cuda(d_x, B->n2w, B->n2b, B->eps, p, E, hn, s, err)) ||
        (rc = mode_gemm_cuda(p, F, E, hn, E, B->fc1, E, true, 0.0f, mlp, F, s, err)) || (rc = mode_add_bias_cuda(mlp, B->fc1b, p, F, s, err)) ||
        (rc = mode_gelu_cuda(mlp, p * F, true, s, err)) || (rc = mode_gemm_cuda(p, E, F, mlp, F, B->fc2, F, true, 0.0f, hn, E, s, err)) ||
        (rc = mode_add_bias_cuda(hn, B->fc2b, p, E, s, err)) || (rc = mode_add_cuda(d_x, hn, p * E, s, err)))
        return rc;
    return MODE_OK;
}
