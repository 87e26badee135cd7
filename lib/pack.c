/* pack.c — layer-by-layer GPTQ of the routed experts at their allocated widths (see pack.h). */
#include "pack.h"
#include "gptqpack.h"
#include "ops.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

struct cap {
    int layer;
    int64_t N, D, qd, k;
    float *x;
    int32_t *ex;
    float *xa, *oa; /* attention inputs (N, D) and o_proj inputs (N, qd); NULL: not wanted */
    bool stop_attn; /* stop the layer once they are captured */
    /* overrides */
    int ov_layer, attn_ov_layer;
    float **gu, **dn; /* (n_expert) dequantised weights of the layer, NULL = checkpoint's */
    float *aq[4];     /* q, k, v, o_proj dequantised, NULL = checkpoint's */
};

static int on_moe(void *vctx, int layer, const struct mode_rt_batch *b, const float *x, const int32_t *experts, const float *weights,
                  const float *out, struct mode_err *err)
{
    (void)weights, (void)out, (void)err;
    struct cap *c = vctx;
    if (layer != c->layer) return MODE_OK;
    memcpy(c->x, x, sizeof *c->x * (size_t)(b->n_rows * c->D));
    memcpy(c->ex, experts, sizeof *c->ex * (size_t)(b->n_rows * c->k));
    return MODE_OK;
}

static int on_expert(void *vctx, int layer, int expert, struct mode_rt_expert_override *ov, struct mode_err *err)
{
    (void)err;
    struct cap *c = vctx;
    if (layer == c->ov_layer && c->gu[expert]) {
        ov->gate_up = c->gu[expert];
        ov->down = c->dn[expert];
        ov->rows = NULL;
    }
    return MODE_OK;
}

static int on_attn_out(void *vctx, int layer, const struct mode_rt_batch *b, const float *xn, const float *o, struct mode_err *err)
{
    (void)err;
    struct cap *c = vctx;
    if (layer != c->layer || !c->xa) return MODE_OK;
    memcpy(c->xa, xn, sizeof *c->xa * (size_t)(b->n_rows * c->D));
    memcpy(c->oa, o, sizeof *c->oa * (size_t)(b->n_rows * c->qd));
    return c->stop_attn ? MODE_RT_STOP : MODE_OK;
}

static int on_attn_weights(void *vctx, int layer, struct mode_rt_attn_override *ov, struct mode_err *err)
{
    (void)err;
    struct cap *c = vctx;
    if (layer == c->attn_ov_layer) ov->wq = c->aq[0], ov->wk = c->aq[1], ov->wv = c->aq[2], ov->wo = c->aq[3];
    return MODE_OK;
}

static void proj_free(struct mode_pack_proj *p)
{
    free(p->qweight), free(p->qzeros), free(p->g_idx), free(p->scales), free(p->weight);
    memset(p, 0, sizeof *p);
}

/* quantize W (n, k) with H (or RTN when H is NULL) into p, and its dequantised weights into deq */
static int quant_proj(const float *W, int64_t n, int64_t k, const double *H, int bits, const struct mode_pack_opts *o, bool v1,
                      struct mode_pack_proj *p, float *deq, int64_t *zero_lost, struct mode_err *err)
{
    struct mode_quant_opts qo = {.bits = bits, .group = o->group, .sym = o->sym, .act_order = o->act_order && H};
    int64_t g, G;
    int rc;
    if ((rc = mode_quant_groups(&qo, k, &g, &G, err)) || (rc = mode_gptq_check_dims(n, k, bits, err))) return rc;
    p->bits = bits, p->n = n, p->k = k, p->g = G, p->deq = deq;
    uint8_t *q = malloc((size_t)(n * k));
    float *sc = malloc(sizeof *sc * (size_t)(n * G)), *z = malloc(sizeof *z * (size_t)(n * G));
    p->qweight = malloc(sizeof *p->qweight * (size_t)(k * bits / 32 * n));
    p->qzeros = malloc(sizeof *p->qzeros * (size_t)(G * n * bits / 32));
    p->scales = malloc(sizeof *p->scales * (size_t)(G * n));
    p->g_idx = malloc(sizeof *p->g_idx * (size_t)k);
    if (!q || !sc || !z || !p->qweight || !p->qzeros || !p->scales || !p->g_idx) {
        free(q), free(sc), free(z);
        return mode_err_oom(err, (size_t)(n * k) * 2, "packing");
    }
    struct mode_quant_out out = {q, sc, z, p->g_idx, NULL};
    rc = H ? mode_quant_gptq(W, n, k, H, &qo, &out, err) : mode_quant_rtn(W, n, k, &qo, &out, err);
    if (!rc) {
        /* scales (G, N) f16; the dequantised weights from exactly those */
        for (int64_t r = 0; r < n; r++)
            for (int64_t j = 0; j < G; j++) p->scales[j * n + r] = mode_f32_to_f16(sc[r * G + j]);
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < k; c++) {
                const int64_t j = p->g_idx[c];
                deq[r * k + c] = mode_f16_to_f32(p->scales[j * n + r]) * ((float)q[r * k + c] - z[r * G + j]);
            }
        if (mode_gptq_pack_qweight(q, n, k, bits, p->qweight)) rc = mode_err_oom(err, (size_t)k * 4, "packing");
        int64_t lost = rc ? 0 : mode_gptq_pack_qzeros(z, n, G, bits, v1, p->qzeros);
        if (lost < 0) rc = mode_err_oom(err, (size_t)n * 4, "packing");
        else *zero_lost += lost;
    }
    free(q), free(sc), free(z);
    return rc;
}

/* H (k, k) of rows x (n, k) */
static int hessian_of(const float *x, int64_t n, int64_t k, double *H, struct mode_err *err)
{
    struct mode_hessian hs;
    int rc = mode_hessian_init(&hs, k, err);
    if (rc) return rc;
    mode_hessian_add(&hs, x, n);
    mode_hessian_get(&hs, H);
    mode_hessian_free(&hs);
    return MODE_OK;
}

/* one pass of layer l with the hooks; a stop counts as success, the layer then not applied */
static int run_layer(struct mode_rt *rt, struct mode_rt_batch *b, int l, const float *snap, const struct mode_rt_hooks *hooks,
                     struct mode_err *err)
{
    memcpy(b->h, snap, sizeof *b->h * (size_t)(b->n_rows * rt->m->cfg.text.n_embd));
    b->next_layer = l;
    int rc = mode_rt_layer(rt, b, l, hooks, err);
    return rc == MODE_RT_STOP ? MODE_OK : rc;
}

/* q/k/v_proj with the Hessian of c->xa, o_proj with that of c->oa captured by `pass` (which runs
 * the layer again with the quantized q/k/v unless fp) into L->attn and c->aq */
static int quant_attention(const struct mode_model *m, int l, struct cap *c, const struct mode_pack_opts *o, double *H, struct mode_pack_layer *L,
                           int (*pass)(void *ctx, struct mode_err *err), void *pass_ctx, struct mode_err *err)
{
    const struct mode_layer_w *w = &m->layers[l];
    const struct mode_st_tensor *src[4] = {w->wq, w->wk, w->wv, w->wo};
    const int64_t N = c->N;
    const bool gptq = N >= o->min_tokens && N > 0;
    L->attn_rtn = !gptq;
    int rc = MODE_OK;
    float *W = NULL;
    for (int p = 0; p < 4 && !rc; p++) {
        const int64_t n = src[p]->shape[0], k = src[p]->shape[1];
        free(W);
        if (!(W = malloc(sizeof *W * (size_t)(n * k))) || !(c->aq[p] = malloc(sizeof *c->aq[p] * (size_t)(n * k)))) {
            rc = mode_err_oom(err, sizeof *W * (size_t)(n * k), "attention weights");
            break;
        }
        if ((rc = mode_st_to_f32(src[p], W, err))) break;
        if (gptq && p == 0) rc = hessian_of(c->xa, N, k, H, err);
        if (gptq && p == 3) { /* o_proj's inputs through the quantized q, k, v */
            if (!o->fp_inputs && (rc = pass(pass_ctx, err))) break;
            rc = hessian_of(c->oa, N, k, H, err);
        }
        if (!rc) rc = quant_proj(W, n, k, gptq ? H : NULL, o->attn_bits, o, o->gptq_v1, &L->attn[p], c->aq[p], &L->zero_lost, err);
    }
    free(W);
    return rc;
}

struct attn_pass {
    struct mode_rt *rt;
    struct mode_rt_batch *b;
    int l;
    const float *snap;
    struct cap *c;
    const struct mode_rt_hooks *hooks;
};

/* the layer with quantized q/k/v (o_proj still the checkpoint's), stopped at o_proj's input */
static int attn_pass(void *vctx, struct mode_err *err)
{
    struct attn_pass *a = vctx;
    float *wo = a->c->aq[3];
    a->c->aq[3] = NULL;
    a->c->attn_ov_layer = a->l, a->c->stop_attn = true;
    int rc = run_layer(a->rt, a->b, a->l, a->snap, a->hooks, err);
    a->c->aq[3] = wo;
    a->c->attn_ov_layer = -1, a->c->stop_attn = false;
    return rc;
}

int mode_pack_run(struct mode_rt *rt, struct mode_rt_batch *b, const int *bits, const struct mode_pack_opts *o,
                  int (*emit)(void *ctx, const struct mode_pack_layer *l, const struct mode_rt_batch *b, struct mode_err *err), void *emit_ctx,
                  struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_text_config *t = &m->cfg.text;
    const int E = t->n_expert;
    const int64_t D = t->n_embd, I = t->n_ff_exp, G2 = 2 * I, qd = (int64_t)t->n_head * t->head_dim;
    const bool qa = o->attn_bits > 0 && o->attn_bits < 16;
    int rc = mode_rt_vision(rt, b, err);
    if (rc) return rc;
    const int64_t N = b->n_rows;
    struct cap c = {.layer = -1, .N = N, .D = D, .qd = qd, .k = t->n_expert_used, .ov_layer = -1, .attn_ov_layer = -1};
    const size_t nd = (size_t)(N * D);
    c.x = malloc(sizeof *c.x * nd);
    c.ex = malloc(sizeof *c.ex * (size_t)(N * c.k));
    c.gu = calloc((size_t)E, sizeof *c.gu);
    c.dn = calloc((size_t)E, sizeof *c.dn);
    if (qa) {
        c.xa = malloc(sizeof *c.xa * (nd ? nd : 1));
        c.oa = malloc(sizeof *c.oa * (size_t)(N * qd > 0 ? N * qd : 1));
    }
    int64_t hmax = D > I ? D : I;
    if (qa && qd > hmax) hmax = qd;
    float *snap = malloc(sizeof *snap * nd), *xr = malloc(sizeof *xr * nd), *gu = malloc(sizeof *gu * (size_t)(G2 * D)),
          *dn = malloc(sizeof *dn * (size_t)(D * I)), *h2 = malloc(sizeof *h2 * (size_t)(N * G2)), *act = malloc(sizeof *act * (size_t)(N * I));
    double *H = malloc(sizeof *H * (size_t)(hmax * hmax));
    struct mode_pack_layer L = {.n_expert = E};
    L.proj = calloc((size_t)E * 3, sizeof *L.proj);
    L.tokens = calloc((size_t)E, sizeof *L.tokens);
    if (!c.x || !c.ex || !c.gu || !c.dn || (qa && (!c.xa || !c.oa)) || !snap || !xr || !gu || !dn || !h2 || !act || !H || !L.proj ||
        !L.tokens) {
        rc = mode_err_oom(err, nd * 12, "packing");
        goto out;
    }
    struct mode_rt_hooks hooks = {.ctx = &c, .moe = on_moe, .expert = on_expert, .attn_out = on_attn_out, .attn_weights = on_attn_weights};
    for (int l = o->start_layer; l < t->n_layer && !rc; l++) {
        const bool moe = t->is_moe[l];
        L.layer = l, L.n_expert = moe ? E : 0, L.n_rtn = 0, L.zero_lost = 0, L.has_attn = qa, L.attn_rtn = false;
        if (!moe && !qa) {
            if (!(rc = mode_rt_layer(rt, b, l, NULL, err))) rc = emit(emit_ctx, &L, b, err);
            if (o->progress) o->progress(o->progress_ctx, l, 1, 1);
            continue;
        }
        memcpy(snap, b->h, sizeof *snap * nd);
        c.layer = l;
        if (qa) {
            /* fp inputs: one full pass captures every input; else stop after the attention */
            c.stop_attn = !o->fp_inputs;
            if ((rc = run_layer(rt, b, l, snap, &hooks, err))) break;
            c.stop_attn = false;
            struct attn_pass ap = {rt, b, l, snap, &c, &hooks};
            if ((rc = quant_attention(m, l, &c, o, H, &L, attn_pass, &ap, err))) break;
            if (!o->fp_inputs) { /* the MoE's inputs (or a dense layer's output) through the quantized attention */
                c.attn_ov_layer = l;
                rc = run_layer(rt, b, l, snap, &hooks, err);
                c.attn_ov_layer = -1;
                if (rc) break;
            }
        } else if ((rc = run_layer(rt, b, l, snap, &hooks, err)))
            break;
        c.layer = -1;
        for (int e = 0; moe && e < E && !rc; e++) {
            const int be = bits[(size_t)l * E + e];
            struct mode_mat mg, mu, md;
            if ((rc = mode_model_expert(m, l, e, MODE_PROJ_GATE, &mg, err)) || (rc = mode_model_expert(m, l, e, MODE_PROJ_UP, &mu, err)) ||
                (rc = mode_model_expert(m, l, e, MODE_PROJ_DOWN, &md, err)) || (rc = mode_mat_to_f32(&mg, gu, err)) ||
                (rc = mode_mat_to_f32(&mu, gu + I * D, err)) || (rc = mode_mat_to_f32(&md, dn, err)))
                break;
            int64_t n = 0;
            for (int64_t r = 0; r < N; r++)
                for (int j = 0; j < c.k; j++)
                    if (c.ex[r * c.k + j] == e) {
                        memcpy(xr + n * D, c.x + r * D, sizeof *xr * (size_t)D);
                        n++;
                        break;
                    }
            L.tokens[e] = n;
            struct mode_pack_proj *pg = &L.proj[e * 3], *pu = pg + 1, *pd = pg + 2;
            if (be >= 16) {
                for (int p = 0; p < 3; p++) {
                    struct mode_pack_proj *pp = &L.proj[e * 3 + p];
                    pp->bits = 16, pp->n = p == 2 ? D : I, pp->k = p == 2 ? I : D;
                    pp->weight = malloc(sizeof *pp->weight * (size_t)(I * D));
                    if (!pp->weight) {
                        rc = mode_err_oom(err, (size_t)(I * D) * 4, "an expert");
                        break;
                    }
                    memcpy(pp->weight, p == 2 ? dn : gu + (p ? I * D : 0), sizeof *pp->weight * (size_t)(I * D));
                    pp->deq = pp->weight;
                }
                continue;
            }
            const bool gptq = n >= o->min_tokens && n > 0;
            L.n_rtn += !gptq;
            if (gptq && (rc = hessian_of(xr, n, D, H, err))) break;
            c.gu[e] = malloc(sizeof *c.gu[e] * (size_t)(G2 * D));
            c.dn[e] = malloc(sizeof *c.dn[e] * (size_t)(D * I));
            if (!c.gu[e] || !c.dn[e]) {
                rc = mode_err_oom(err, (size_t)(G2 * D) * 4, "an expert");
                break;
            }
            if ((rc = quant_proj(gu, I, D, gptq ? H : NULL, be, o, o->gptq_v1, pg, c.gu[e], &L.zero_lost, err)) ||
                (rc = quant_proj(gu + I * D, I, D, gptq ? H : NULL, be, o, o->gptq_v1, pu, c.gu[e] + I * D, &L.zero_lost, err)))
                break;
            if (gptq) { /* the down projection's inputs through the quantized gate and up */
                mode_gemm(n, G2, D, xr, D, c.gu[e], D, true, 0.0f, h2, G2);
                mode_swiglu_ref(h2, n, I, act);
                if ((rc = hessian_of(act, n, I, H, err))) break;
            }
            if ((rc = quant_proj(dn, D, I, gptq ? H : NULL, be, o, o->gptq_v1, pd, c.dn[e], &L.zero_lost, err))) break;
            if (o->progress) o->progress(o->progress_ctx, l, e + 1, E);
        }
        if (rc) break;
        if (!o->fp_inputs && moe) { /* the next layer's inputs through the quantized layer */
            c.ov_layer = l, c.attn_ov_layer = qa ? l : -1;
            rc = run_layer(rt, b, l, snap, &hooks, err);
            c.ov_layer = c.attn_ov_layer = -1;
            if (rc) break;
        }
        if (!moe && o->progress) o->progress(o->progress_ctx, l, 1, 1);
        rc = emit(emit_ctx, &L, b, err);
        for (int e = 0; e < E; e++) {
            free(c.gu[e]), free(c.dn[e]);
            c.gu[e] = c.dn[e] = NULL;
            for (int p = 0; p < 3; p++) proj_free(&L.proj[e * 3 + p]);
        }
        for (int p = 0; p < 4; p++) {
            free(c.aq[p]);
            c.aq[p] = NULL;
            proj_free(&L.attn[p]);
        }
    }
out:
    if (c.gu)
        for (int e = 0; e < E; e++) free(c.gu[e]), free(c.dn[e]);
    if (L.proj)
        for (int e = 0; e < E * 3; e++) proj_free(&L.proj[e]);
    for (int p = 0; p < 4; p++) free(c.aq[p]), proj_free(&L.attn[p]);
    free(c.x), free(c.ex), free(c.xa), free(c.oa), free(c.gu), free(c.dn), free(snap), free(xr), free(gu), free(dn), free(h2), free(act),
        free(H), free(L.proj), free(L.tokens);
    return rc;
}
