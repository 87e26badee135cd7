/* layer.c — mode_text_layer_ref (layer.h). */
#include "layer.h"

#include "attn.h"
#include "moe.h"
#include "ops.h"
#include "pool.h"
#include "qmoe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *bf16_f32(const void *p, size_t n)
{
    const uint16_t *src = p;
    float *d = malloc(sizeof *d * (n ? n : 1));
    if (d)
        for (size_t i = 0; i < n; i++) d[i] = mode_bf16_to_f32(src[i]);
    return d;
}

static void round_bf16(const float *src, size_t n, float *dst)
{
    for (size_t i = 0; i < n; i++) dst[i] = mode_bf16_to_f32(mode_f32_to_bf16(src[i]));
}

/* The dense experts as the GPU computes them (moe.cu, layer.cu): pairs grouped by expert, per
 * expert X·W_gate_up and the down projection through mode_gemm (OpenBLAS, as the CPU runtime),
 * SiLU·mul between, the weighted combine over the slots in order. bf16 experts: converted to f32
 * one at a time, rows and activations rounded to bf16 as the tensor cores take them; f32
 * experts: used as they are (either orientation). The experts run on the pool's threads (pool.h),
 * each writing its own rows of hh, act and y; the combine by rows: the same bits at any thread
 * count. */
struct moe_ref_job {
    const struct mode_text_layer_cuda *L;
    const struct mode_moe_route *r;
    const float *xs;
    float *hh, *act, *y, *out;
};

static void moe_ref_expert(void *ctx, int64_t i, int worker)
{
    const struct moe_ref_job *j = ctx;
    const struct mode_text_layer_cuda *L = j->L;
    const int e = (int)i;
    const int64_t D = L->d, I = L->i, c = j->r->start[e + 1] - j->r->start[e], s0 = j->r->start[e];
    if (!c) return;
    const bool f32 = L->f32;
    const float *g, *d;
    const bool lin = f32 && (L->linear32_each ? L->linear32_each[e] != 0 : L->linear32);
    if (f32) g = L->gate_up32 + (size_t)e * (size_t)(D * 2 * I), d = L->down32 + (size_t)e * (size_t)(I * D);
    else {
        float *gu = mode_pool_scratch(worker, sizeof *gu * (size_t)(3 * I * D)), *dn = gu + 2 * I * D; /* sized before the run */
        for (size_t z = 0; z < (size_t)(D * 2 * I); z++) gu[z] = mode_bf16_to_f32(L->experts.gate_up[(size_t)e * (size_t)(D * 2 * I) + z]);
        for (size_t z = 0; z < (size_t)(I * D); z++) dn[z] = mode_bf16_to_f32(L->experts.down[(size_t)e * (size_t)(I * D) + z]);
        g = gu, d = dn;
    }
    mode_gemm(c, 2 * I, D, j->xs + s0 * D, D, g, lin ? D : 2 * I, lin, 0.0f, j->hh + s0 * 2 * I, 2 * I);
    mode_swiglu_ref(j->hh + s0 * 2 * I, c, I, j->act + s0 * I);
    if (!f32) round_bf16(j->act + s0 * I, (size_t)(c * I), j->act + s0 * I);
    mode_gemm(c, D, I, j->act + s0 * I, I, d, lin ? I : D, lin, 0.0f, j->y + s0 * D, D);
}

enum { COMBINE_ROWS = 64 };

static void moe_ref_combine(void *ctx, int64_t i, int worker)
{
    (void)worker;
    const struct moe_ref_job *j = ctx;
    const int64_t D = j->L->d, k = j->r->k, n = j->r->T, t0 = i * COMBINE_ROWS, t1 = t0 + COMBINE_ROWS < n ? t0 + COMBINE_ROWS : n;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t col = 0; col < D; col++) {
            float acc = 0.f;
            for (int64_t q = 0; q < k; q++) acc += j->r->weights[t * k + q] * j->y[(size_t)j->r->slot[t * k + q] * (size_t)D + (size_t)col];
            j->out[t * D + col] = acc;
        }
}

int mode_text_moe_ref(const struct mode_text_layer_cuda *L, const struct mode_moe_route *r, const float *x, float *out, struct mode_err *err)
{
    const int64_t D = L->d, I = L->i, k = r->k, n = r->T, P = n * k;
    const bool f32 = L->f32;
    const int32_t *order = r->order;
    float *xs = malloc(sizeof *xs * (size_t)(P * D + 1)), *hh = malloc(sizeof *hh * (size_t)(P * 2 * I + 1)),
          *act = malloc(sizeof *act * (size_t)(P * I + 1)), *y = malloc(sizeof *y * (size_t)(P * D + 1));
    int rc = MODE_OK;
    if (!xs || !hh || !act || !y) {
        rc = mode_err_oom(err, (size_t)(P * (2 * D + 3 * I)) * 4, "the layer reference's experts");
        goto out;
    }
    if (!f32) /* every worker's bf16 -> f32 expert before the run */
        for (int w = mode_pool_inside() ? mode_pool_worker() : 0, last = mode_pool_inside() ? w : mode_pool_threads() - 1; w <= last; w++)
            if (!mode_pool_scratch(w, sizeof(float) * (size_t)(3 * I * D))) {
                rc = mode_err_oom(err, sizeof(float) * (size_t)(3 * I * D), "the layer reference's experts");
                goto out;
            }
    for (int64_t p = 0; p < P; p++) {
        const float *src = x + (size_t)(order[p] / k) * (size_t)D;
        if (f32) memcpy(xs + (size_t)p * (size_t)D, src, sizeof *xs * (size_t)D);
        else round_bf16(src, (size_t)D, xs + (size_t)p * (size_t)D);
    }
    struct moe_ref_job j = {L, r, xs, hh, act, y, out};
    mode_pool_run(L->n_expert, moe_ref_expert, &j);
    mode_pool_run((n + COMBINE_ROWS - 1) / COMBINE_ROWS, moe_ref_combine, &j);
out:
    free(xs), free(hh), free(act), free(y);
    return rc;
}

static int dense_moe(const struct mode_text_layer_cuda *L, int64_t n, const float *x, const int32_t *idx, const float *w, float *out,
                     struct mode_err *err)
{
    const int64_t P = n * L->k;
    int32_t *order = malloc(sizeof *order * (size_t)(P + 1)), *slot = malloc(sizeof *slot * (size_t)(P + 1));
    int64_t *start = malloc(sizeof *start * (size_t)(L->n_expert + 1));
    int rc = !order || !slot || !start ? mode_err_oom(err, (size_t)P * 8, "the layer reference's routing")
                                       : mode_moe_route_sort(idx, (int)n, L->k, L->n_expert, order, slot, start, err);
    if (!rc) {
        const struct mode_moe_route r = {(int)n, L->k, order, slot, w, start};
        rc = mode_text_moe_ref(L, &r, x, out, err);
    }
    free(order), free(slot), free(start);
    return rc;
}

int mode_text_layer_ref(const struct mode_text_layer_cuda *L, const struct mode_text_rows_cuda *rows, float *h, int32_t *idx, float *w,
                        struct mode_err *err)
{
    const int64_t n = rows->n, D = L->d, hd = L->head_dim, qd = (int64_t)L->n_head * hd, kvd = (int64_t)L->n_head_kv * hd;
    if (n == 0) return MODE_OK;
    const size_t N = (size_t)n;
    /* f32 weights are used in place; bf16 ones converted (owned: c*) */
    float *cq = L->f32 ? NULL : bf16_f32(L->wq, (size_t)(qd * D)), *ck = L->f32 ? NULL : bf16_f32(L->wk, (size_t)(kvd * D)),
          *cv = L->f32 ? NULL : bf16_f32(L->wv, (size_t)(kvd * D)), *co = L->f32 ? NULL : bf16_f32(L->wo, (size_t)(D * qd));
    const float *wq = L->f32 ? L->wq : cq, *wk = L->f32 ? L->wk : ck, *wv = L->f32 ? L->wv : cv, *wo = L->f32 ? L->wo : co;
    float *xn = malloc(sizeof *xn * N * (size_t)D), *xb = malloc(sizeof *xb * N * (size_t)(D > qd ? D : qd)), *q = malloc(sizeof *q * N * (size_t)qd),
          *k = malloc(sizeof *k * N * (size_t)kvd), *v = malloc(sizeof *v * N * (size_t)kvd), *o = malloc(sizeof *o * N * (size_t)qd),
          *logits = malloc(sizeof *logits * N * (size_t)L->n_expert), *mout = malloc(sizeof *mout * N * (size_t)D);
    int rc = MODE_OK;
    if ((!L->f32 && (!cq || !ck || !cv || !co)) || !xn || !xb || !q || !k || !v || !o || !logits || !mout) {
        rc = mode_err_oom(err, N * (size_t)(4 * D + 3 * qd + 2 * kvd + L->n_expert) * 4, "the layer reference");
        goto out;
    }
    mode_rmsnorm_ref(h, L->attn_norm, L->eps, n, D, xn);
    const float *xq = xn; /* the projections' input: xn, or rounded to bf16 */
    if (!L->f32) round_bf16(xn, N * (size_t)D, xb), xq = xb;
    mode_gemm(n, qd, D, xq, D, wq, D, true, 0.0f, q, qd);
    mode_gemm(n, kvd, D, xq, D, wk, D, true, 0.0f, k, kvd);
    mode_gemm(n, kvd, D, xq, D, wv, D, true, 0.0f, v, kvd);
    mode_rmsnorm_ref(q, L->q_norm, L->eps, n * L->n_head, hd, q);
    mode_rmsnorm_ref(k, L->k_norm, L->eps, n * L->n_head_kv, hd, k);
    mode_rope_ref(q, n, qd, L->n_head, (int)hd, rows->d_ang);
    mode_rope_ref(k, n, kvd, L->n_head_kv, (int)hd, rows->d_ang);
    const struct mode_attn_shape a = {L->n_head, L->n_head_kv, (int)hd, qd, kvd, kvd, qd, true, 1.0f / sqrtf((float)hd)};
    if ((rc = mode_attention_ref(&a, q, k, v, rows->seg, rows->n_seg, rows->d_sel, rows->d_colsum, o, err))) goto out;
    if (!L->f32) round_bf16(o, N * (size_t)qd, o);
    mode_gemm(n, D, qd, o, qd, wo, qd, true, 1.0f, h, D);
    float *mx = rows->d_moe_x ? rows->d_moe_x : xn, *mo = rows->d_moe_out ? rows->d_moe_out : mout;
    mode_rmsnorm_ref(h, L->ffn_norm, L->eps, n, D, mx);
    float *lg = rows->d_logits ? rows->d_logits : logits;
    mode_gemm(n, L->n_expert, D, mx, D, L->router, D, true, 0.0f, lg, L->n_expert);
    mode_topk_ref(lg, n, L->n_expert, L->k, L->norm_topk, idx, w);
    rc = L->packed ? mode_qmoe_ref(L->packed, (int)n, L->k, mx, idx, w, mo, err) : dense_moe(L, n, mx, idx, w, mo, err);
    if (!rc)
        for (size_t z = 0; z < N * (size_t)D; z++) h[z] += mo[z];
out:
    free(cq), free(ck), free(cv), free(co), free(xn), free(xb), free(q), free(k), free(v), free(o), free(logits), free(mout);
    return rc;
}

int mode_vision_block_ref(const struct mode_vision_block_cuda *B, int64_t p, const int64_t *seg, int n_seg, const float *ang, float *x, int64_t block,
                          float *work, struct mode_err *err)
{
    const int64_t E = B->e, F = B->n_ff, H = B->n_head, hd = E / H;
    if (p == 0) return MODE_OK;
    float *own = NULL;
    if (!work && !(work = own = malloc(sizeof *work * (size_t)(p * (5 * E + F)))))
        return mode_err_oom(err, sizeof *work * (size_t)(p * (5 * E + F)), "vision activations");
    float *hn = work, *qkv = hn + p * E, *att = qkv + p * 3 * E, *mlp = att + p * E;
    const struct mode_attn_shape as = {(int)H, (int)H, (int)hd, 3 * E, 3 * E, 3 * E, E, false, 1.0f / sqrtf((float)hd)};
    mode_layernorm_ref(x, B->n1w, B->n1b, B->eps, p, E, hn);
    mode_gemm(p, 3 * E, E, hn, E, B->qkv, E, true, 0.0f, qkv, 3 * E);
    mode_add_bias_ref(qkv, B->qkvb, p, 3 * E);
    mode_rope_ref(qkv, p, 3 * E, (int)H, (int)hd, ang);     /* q */
    mode_rope_ref(qkv + E, p, 3 * E, (int)H, (int)hd, ang); /* k */
    int rc = mode_attention_ref_block(&as, qkv, qkv + E, qkv + 2 * E, seg, n_seg, NULL, NULL, att, block, err);
    if (!rc) {
        /* x += proj(att); x += fc2(gelu(fc1(norm2(x)))) */
        mode_gemm(p, E, E, att, E, B->proj, E, true, 0.0f, hn, E);
        mode_add_bias_ref(hn, B->projb, p, E);
        for (int64_t z = 0; z < p * E; z++) x[z] += hn[z];
        mode_layernorm_ref(x, B->n2w, B->n2b, B->eps, p, E, hn);
        mode_gemm(p, F, E, hn, E, B->fc1, E, true, 0.0f, mlp, F);
        mode_add_bias_ref(mlp, B->fc1b, p, F);
        mode_gelu_tanh_ref(mlp, p * F);
        mode_gemm(p, E, F, mlp, F, B->fc2, F, true, 0.0f, hn, E);
        mode_add_bias_ref(hn, B->fc2b, p, E);
        for (int64_t z = 0; z < p * E; z++) x[z] += hn[z];
    }
    free(own);
    return rc;
}
