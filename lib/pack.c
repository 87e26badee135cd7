/* pack.c — layer-by-layer GPTQ of the routed experts at their allocated widths (see pack.h). */
#include "pack.h"
#include "gptq.h"
#include "gptqpack.h"
#include "io.h"
#include "json.h"
#include "ops.h"
#include "pool.h"
#include "quant.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* p's arrays for an (n, k) projection at `bits` in G groups; deq (n, k) is the caller's */
static int proj_alloc(struct mode_pack_proj *p, int64_t n, int64_t k, int64_t G, int bits, float *deq, struct mode_err *err)
{
    p->bits = bits, p->n = n, p->k = k, p->g = G, p->deq = deq;
    p->qweight = malloc(sizeof *p->qweight * (size_t)(k * bits / 32 * n));
    p->qzeros = malloc(sizeof *p->qzeros * (size_t)(G * n * bits / 32));
    p->scales = malloc(sizeof *p->scales * (size_t)(G * n));
    p->g_idx = malloc(sizeof *p->g_idx * (size_t)k);
    if (!p->qweight || !p->qzeros || !p->scales || !p->g_idx) return mode_err_oom(err, (size_t)(n * k), "packing");
    return MODE_OK;
}

/* From the quantizer's levels q (n, k), scales sc and zeros z (n, G) and p->g_idx: p's f16
 * scales, the dequantised weights formed from exactly those (what a loader gets), the packed
 * words. */
static int proj_finish(struct mode_pack_proj *p, const uint8_t *q, const float *sc, const float *z, bool v1, int64_t *zero_lost,
                       struct mode_err *err)
{
    const int64_t n = p->n, k = p->k, G = p->g;
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < G; j++) p->scales[j * n + r] = mode_f32_to_f16(sc[r * G + j]);
    float *deq = (float *)p->deq;
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < k; c++) {
            const int64_t j = p->g_idx[c];
            deq[r * k + c] = mode_f16_to_f32(p->scales[j * n + r]) * ((float)q[r * k + c] - z[r * G + j]);
        }
    if (mode_gptq_pack_qweight(q, n, k, p->bits, p->qweight)) return mode_err_oom(err, (size_t)k * 4, "packing");
    const int64_t lost = mode_gptq_pack_qzeros(z, n, G, p->bits, v1, p->qzeros);
    if (lost < 0) return mode_err_oom(err, (size_t)n * 4, "packing");
    *zero_lost += lost;
    return MODE_OK;
}

/* quantize W (n, k) with H (or RTN when H is NULL) into p, and its dequantised weights into deq */
static int quant_proj(const float *W, int64_t n, int64_t k, const double *H, int bits, const struct mode_pack_opts *o, bool v1,
                      struct mode_pack_proj *p, float *deq, int64_t *zero_lost, struct mode_err *err)
{
    struct mode_quant_opts qo = {.bits = bits, .group = o->group, .sym = o->sym, .act_order = o->act_order && H, .damp = MODE_PACK_DAMP};
    int64_t g, G;
    int rc;
    if ((rc = mode_quant_groups(&qo, k, &g, &G, err)) || (rc = mode_gptq_check_dims(n, k, bits, err)) ||
        (rc = proj_alloc(p, n, k, G, bits, deq, err)))
        return rc;
    uint8_t *q = malloc((size_t)(n * k));
    float *sc = malloc(sizeof *sc * (size_t)(n * G)), *z = malloc(sizeof *z * (size_t)(n * G));
    if (!q || !sc || !z) {
        free(q), free(sc), free(z);
        return mode_err_oom(err, (size_t)(n * k) * 2, "packing");
    }
    struct mode_quant_out out = {q, sc, z, p->g_idx, NULL};
    rc = H ? mode_quant_gptq(W, n, k, H, &qo, &out, err) : mode_quant_rtn(W, n, k, &qo, &out, err);
    if (!rc) rc = proj_finish(p, q, sc, z, v1, zero_lost, err);
    free(q), free(sc), free(z);
    return rc;
}

/* One batch of GPTQ (mode_gptq_rows on o->device): weights W (n_mat, n, k), weight m with rows
 * X[hidx[m]] and width bits[m]; each result finished into projs[m] with its deq[m]. */
static int batch_projs(int n_h, int n_mat, int64_t n, int64_t k, const float *W, const float *const *X, const int64_t *n_x, const int32_t *hidx,
                       const uint8_t *bits, const struct mode_pack_opts *o, struct mode_pack_proj *const *projs, float *const *deq,
                       int64_t *zero_lost, struct mode_err *err)
{
    struct mode_quant_opts qo = {.bits = 4, .group = o->group};
    int64_t g, G;
    int rc = mode_quant_groups(&qo, k, &g, &G, err);
    if (rc) return rc;
    int32_t *info = malloc(sizeof *info * (size_t)n_h), *gidx = malloc(sizeof *gidx * (size_t)(n_h * k));
    uint8_t *q = malloc((size_t)n_mat * (size_t)(n * k));
    float *dq = malloc(sizeof *dq * (size_t)n_mat * (size_t)(n * k)), *sc = malloc(sizeof *sc * (size_t)n_mat * (size_t)(n * G)),
          *z = malloc(sizeof *z * (size_t)n_mat * (size_t)(n * G));
    if (!info || !gidx || !q || !dq || !sc || !z) rc = mode_err_oom(err, (size_t)n_mat * (size_t)(n * k) * 9, "a GPTQ batch");
    struct mode_gptq_batch b = {.n_h = n_h, .n_mat = n_mat, .rows = n, .cols = k, .group = o->group, .sym = o->sym, .act_order = o->act_order, .damp = MODE_PACK_DAMP,
                                .hidx = hidx, .bits = bits, .W = W, .deq = dq, .q = q, .scale = sc, .zero = z, .g_idx = gidx, .info = info};
    if (!rc) rc = mode_gptq_rows(&b, X, n_x, o->device, err);
    for (int m = 0; m < n_mat && !rc; m++) {
        struct mode_pack_proj *p = projs[m];
        if ((rc = mode_gptq_check_dims(n, k, bits[m], err)) || (rc = proj_alloc(p, n, k, G, bits[m], deq[m], err))) break;
        memcpy(p->g_idx, gidx + (size_t)hidx[m] * (size_t)k, sizeof *gidx * (size_t)k);
        rc = proj_finish(p, q + (size_t)m * (size_t)(n * k), sc + (size_t)m * (size_t)(n * G), z + (size_t)m * (size_t)(n * G), o->gptq_v1,
                         zero_lost, err);
    }
    free(info), free(gidx), free(q), free(dq), free(sc), free(z);
    return rc;
}

#define PACK_CHUNK 32 /* experts per GPTQ batch: bounds the gathered rows and the device memory */

/* one expert's projection p as f32 (n, k) into dst */
static int expert_f32(const struct mode_model *m, int l, int e, enum mode_proj p, float *dst, struct mode_err *err)
{
    struct mode_mat w;
    int rc = mode_model_expert(m, l, e, p, &w, err);
    return rc ? rc : mode_mat_to_f32(&w, dst, err);
}

/* The experts of layer l in batches (mode_gptq_rows on o->device): for a chunk of experts, gate
 * and up sharing each expert's Hessian, then the down projections with the Hessians of their
 * activations through the quantized gate and up; 16-bit experts kept and experts with too few
 * tokens rounded to nearest as in the expert-by-expert path, whose results this equals (the
 * same Hessians and algorithm; lib/gptq.h). */
static int experts_batched(const struct mode_model *m, int l, struct cap *c, const int *bits, const struct mode_pack_opts *o,
                           struct mode_pack_layer *L, struct mode_err *err)
{
    const struct mode_text_config *t = &m->cfg.text;
    const int E = t->n_expert, K = (int)c->k;
    const int64_t D = t->n_embd, I = t->n_ff_exp, N = c->N;
    int rc = MODE_OK;
    int *list = malloc(sizeof *list * (size_t)E), *slot = malloc(sizeof *slot * (size_t)E);
    float *wtmp = malloc(sizeof *wtmp * (size_t)(3 * I * D));
    if (!list || !slot || !wtmp) {
        free(list), free(slot), free(wtmp);
        return mode_err_oom(err, sizeof *wtmp * (size_t)(3 * I * D), "experts");
    }
    for (int e = 0; e < E; e++) L->tokens[e] = 0;
    for (int64_t z = 0; z < N * K; z++) L->tokens[c->ex[z]]++; /* a token's k experts are distinct */
    int nl = 0;
    for (int e = 0; e < E && !rc; e++) {
        const int be = bits[(size_t)l * E + e];
        if (be >= 16) { /* kept */
            for (int p = 0; p < 3 && !rc; p++) {
                struct mode_pack_proj *pp = &L->proj[e * 3 + p];
                pp->bits = 16, pp->n = p == 2 ? D : I, pp->k = p == 2 ? I : D;
                if (!(pp->weight = malloc(sizeof *pp->weight * (size_t)(I * D)))) rc = mode_err_oom(err, (size_t)(I * D) * 4, "an expert");
                else rc = expert_f32(m, l, e, (enum mode_proj)p, pp->weight, err);
                pp->deq = pp->weight;
            }
            continue;
        }
        c->gu[e] = malloc(sizeof *c->gu[e] * (size_t)(2 * I * D));
        c->dn[e] = malloc(sizeof *c->dn[e] * (size_t)(D * I));
        if (!c->gu[e] || !c->dn[e]) {
            rc = mode_err_oom(err, (size_t)(3 * I * D) * 4, "an expert");
            break;
        }
        if (L->tokens[e] >= o->min_tokens && L->tokens[e] > 0) {
            list[nl++] = e;
            continue;
        }
        L->n_rtn++;
        for (int p = 0; p < 3 && !rc; p++) rc = expert_f32(m, l, e, (enum mode_proj)p, wtmp + (size_t)p * I * D, err);
        for (int p = 0; p < 3 && !rc; p++)
            rc = quant_proj(wtmp + (size_t)p * I * D, p == 2 ? D : I, p == 2 ? I : D, NULL, be, o, o->gptq_v1, &L->proj[e * 3 + p],
                            p == 2 ? c->dn[e] : c->gu[e] + (size_t)p * I * D, &L->zero_lost, err);
    }
    for (int c0 = 0; c0 < nl && !rc; c0 += PACK_CHUNK) {
        const int C = nl - c0 < PACK_CHUNK ? nl - c0 : PACK_CHUNK;
        int64_t tot = 0, most = 0, n_x[PACK_CHUNK], off[PACK_CHUNK];
        for (int j = 0; j < C; j++) {
            n_x[j] = L->tokens[list[c0 + j]], off[j] = tot, tot += n_x[j];
            most = n_x[j] > most ? n_x[j] : most;
        }
        float *X = malloc(sizeof *X * (size_t)(tot * D)), *act = malloc(sizeof *act * (size_t)(tot * I)), *h2 = malloc(sizeof *h2 * (size_t)(most * 2 * I)),
              *W = malloc(sizeof *W * (size_t)(2 * C) * (size_t)(I * D));
        if (!X || !act || !h2 || !W) rc = mode_err_oom(err, sizeof *X * (size_t)(tot * D), "a chunk of experts");
        /* each expert's calibration rows, in row order */
        int64_t fill[PACK_CHUNK] = {0};
        for (int e = 0; e < E; e++) slot[e] = -1;
        for (int j = 0; j < C; j++) slot[list[c0 + j]] = j;
        for (int64_t r = 0; r < N && !rc; r++)
            for (int j = 0; j < K; j++) {
                const int q = slot[c->ex[r * K + j]];
                if (q >= 0) memcpy(X + (off[q] + fill[q]++) * D, c->x + r * D, sizeof *X * (size_t)D);
            }
        const float *Xp[PACK_CHUNK], *Ap[PACK_CHUNK];
        int32_t hidx[2 * PACK_CHUNK];
        uint8_t bw[2 * PACK_CHUNK];
        struct mode_pack_proj *projs[2 * PACK_CHUNK];
        float *deq[2 * PACK_CHUNK];
        for (int j = 0; j < C && !rc; j++) {
            const int e = list[c0 + j];
            Xp[j] = X + off[j] * D, Ap[j] = act + off[j] * I;
            for (int p = 0; p < 2; p++) {
                hidx[2 * j + p] = j, bw[2 * j + p] = (uint8_t)bits[(size_t)l * E + e];
                projs[2 * j + p] = &L->proj[e * 3 + p], deq[2 * j + p] = c->gu[e] + (size_t)p * I * D;
                rc = expert_f32(m, l, e, (enum mode_proj)p, W + (size_t)(2 * j + p) * I * D, err);
            }
        }
        if (!rc) rc = batch_projs(C, 2 * C, I, D, W, Xp, n_x, hidx, bw, o, projs, deq, &L->zero_lost, err);
        /* the down projections' inputs through the quantized gate and up */
        for (int j = 0; j < C && !rc; j++) {
            const int e = list[c0 + j];
            mode_gemm(n_x[j], 2 * I, D, Xp[j], D, c->gu[e], D, true, 0.0f, h2, 2 * I);
            mode_swiglu_ref(h2, n_x[j], I, act + off[j] * I);
            hidx[j] = j, bw[j] = (uint8_t)bits[(size_t)l * E + e];
            projs[j] = &L->proj[e * 3 + 2], deq[j] = c->dn[e];
            rc = expert_f32(m, l, e, MODE_PROJ_DOWN, W + (size_t)j * D * I, err);
        }
        if (!rc) rc = batch_projs(C, C, D, I, W, Ap, n_x, hidx, bw, o, projs, deq, &L->zero_lost, err);
        if (!rc && o->progress) o->progress(o->progress_ctx, l, list[c0 + C - 1] + 1, E);
        free(X), free(act), free(h2), free(W);
    }
    free(list), free(slot), free(wtmp);
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

/* ---- the experts of a layer one by one (GPTQ on the CPU), on the pool's threads ---- */

static pthread_mutex_t g_pack_lock = PTHREAD_MUTEX_INITIALIZER;

struct expert_pack {
    const struct mode_model *m;
    int l;
    struct cap *c;
    const int *bits;
    const struct mode_pack_opts *o;
    struct mode_pack_layer *L;
    int64_t D, I, most;
    int64_t *zero_lost; /* (n_expert): summed in expert order after the run */
    int *rc;            /* (n_expert) */
    struct mode_err *errs; /* (n_expert), written for a failed expert only */
    int done;           /* experts finished, for the progress line */
};

/* a worker's buffers, bytes: H (hmax^2 doubles) first for its alignment, then gu (2I, D), dn
 * (D, I), xr (most, D), h2 (most, 2I), act (most, I) */
static size_t expert_pack_bytes(const struct expert_pack *j)
{
    const int64_t hmax = j->D > j->I ? j->D : j->I;
    return sizeof(double) * (size_t)(hmax * hmax) + sizeof(float) * (size_t)(3 * j->I * j->D + j->most * (j->D + 3 * j->I));
}

/* expert e of layer l: its tokens' inputs, GPTQ of gate and up on them, of down on the inputs
 * through the quantized gate and up (or round-to-nearest below o->min_tokens; a copy at 16 bits) */
static int expert_pack_one(const struct expert_pack *j, int e, void *buf, int64_t *zero_lost, struct mode_err *err)
{
    const struct mode_model *m = j->m;
    const struct mode_pack_opts *o = j->o;
    struct cap *c = j->c;
    struct mode_pack_layer *L = j->L;
    const int64_t D = j->D, I = j->I, G2 = 2 * I, N = c->N, E = L->n_expert;
    const int64_t hmax = D > I ? D : I;
    double *H = buf;
    float *gu = (float *)(H + hmax * hmax), *dn = gu + G2 * D, *xr = dn + D * I, *h2 = xr + j->most * D, *act = h2 + j->most * G2;
    const int be = j->bits[(size_t)j->l * (size_t)E + (size_t)e];
    struct mode_mat mg, mu, md;
    int rc;
    if ((rc = mode_model_expert(m, j->l, e, MODE_PROJ_GATE, &mg, err)) || (rc = mode_model_expert(m, j->l, e, MODE_PROJ_UP, &mu, err)) ||
        (rc = mode_model_expert(m, j->l, e, MODE_PROJ_DOWN, &md, err)) || (rc = mode_mat_to_f32(&mg, gu, err)) ||
        (rc = mode_mat_to_f32(&mu, gu + I * D, err)) || (rc = mode_mat_to_f32(&md, dn, err)))
        return rc;
    int64_t n = 0;
    for (int64_t r = 0; r < N; r++)
        for (int q = 0; q < c->k; q++)
            if (c->ex[r * c->k + q] == e) {
                memcpy(xr + n * D, c->x + r * D, sizeof *xr * (size_t)D);
                n++;
                break;
            }
    L->tokens[e] = n;
    struct mode_pack_proj *pg = &L->proj[e * 3], *pu = pg + 1, *pd = pg + 2;
    if (be >= 16) {
        for (int p = 0; p < 3; p++) {
            struct mode_pack_proj *pp = &L->proj[e * 3 + p];
            pp->bits = 16, pp->n = p == 2 ? D : I, pp->k = p == 2 ? I : D;
            pp->weight = malloc(sizeof *pp->weight * (size_t)(I * D));
            if (!pp->weight) return mode_err_oom(err, (size_t)(I * D) * 4, "an expert");
            memcpy(pp->weight, p == 2 ? dn : gu + (p ? I * D : 0), sizeof *pp->weight * (size_t)(I * D));
            pp->deq = pp->weight;
        }
        return MODE_OK;
    }
    const bool gptq = n >= o->min_tokens && n > 0;
    if (gptq && (rc = hessian_of(xr, n, D, H, err))) return rc;
    c->gu[e] = malloc(sizeof *c->gu[e] * (size_t)(G2 * D));
    c->dn[e] = malloc(sizeof *c->dn[e] * (size_t)(D * I));
    if (!c->gu[e] || !c->dn[e]) return mode_err_oom(err, (size_t)(G2 * D) * 4, "an expert");
    if ((rc = quant_proj(gu, I, D, gptq ? H : NULL, be, o, o->gptq_v1, pg, c->gu[e], zero_lost, err)) ||
        (rc = quant_proj(gu + I * D, I, D, gptq ? H : NULL, be, o, o->gptq_v1, pu, c->gu[e] + I * D, zero_lost, err)))
        return rc;
    if (gptq) { /* the down projection's inputs through the quantized gate and up */
        mode_gemm(n, G2, D, xr, D, c->gu[e], D, true, 0.0f, h2, G2);
        mode_swiglu_ref(h2, n, I, act);
        if ((rc = hessian_of(act, n, I, H, err))) return rc;
    }
    return quant_proj(dn, D, I, gptq ? H : NULL, be, o, o->gptq_v1, pd, c->dn[e], zero_lost, err);
}

static void expert_pack_item(void *ctx, int64_t i, int worker)
{
    struct expert_pack *j = ctx;
    const int e = (int)i;
    void *buf = mode_pool_scratch(worker, expert_pack_bytes(j)); /* sized before the run */
    j->rc[e] = expert_pack_one(j, e, buf, &j->zero_lost[e], &j->errs[e]);
    pthread_mutex_lock(&g_pack_lock);
    const int done = ++j->done;
    if (!j->rc[e] && j->o->progress) j->o->progress(j->o->progress_ctx, j->l, done, (int)j->L->n_expert);
    pthread_mutex_unlock(&g_pack_lock);
}

/* Every expert of layer l, on the pool's threads; each expert's work is the same whichever thread
 * does it, so the checkpoint is the same bytes at any thread count. The error of the lowest
 * failed expert is reported. */
static int experts_pooled(const struct mode_model *m, int l, struct cap *c, const int *bits, const struct mode_pack_opts *o,
                          struct mode_pack_layer *L, struct mode_err *err)
{
    const struct mode_text_config *t = &m->cfg.text;
    const int E = t->n_expert;
    struct expert_pack j = {m, l, c, bits, o, L, t->n_embd, t->n_ff_exp, 1, NULL, NULL, NULL, 0};
    /* the busiest expert's tokens: a token counts once per expert */
    int64_t *cnt = calloc((size_t)E, sizeof *cnt);
    j.zero_lost = calloc((size_t)E, sizeof *j.zero_lost);
    j.rc = calloc((size_t)E, sizeof *j.rc);
    j.errs = calloc((size_t)E, sizeof *j.errs);
    int rc = MODE_OK;
    if (!cnt || !j.zero_lost || !j.rc || !j.errs) {
        rc = mode_err_oom(err, sizeof *j.errs * (size_t)E, "packing");
        goto out;
    }
    for (int64_t r = 0; r < c->N; r++)
        for (int q = 0; q < c->k; q++) {
            const int e = c->ex[r * c->k + q];
            bool seen = false;
            for (int p = 0; p < q && !seen; p++) seen = c->ex[r * c->k + p] == e;
            if (!seen && e >= 0 && e < E) cnt[e]++;
        }
    for (int e = 0; e < E; e++) j.most = cnt[e] > j.most ? cnt[e] : j.most;
    const size_t bytes = expert_pack_bytes(&j);
    for (int w = mode_pool_inside() ? mode_pool_worker() : 0, last = mode_pool_inside() ? w : mode_pool_threads() - 1; w <= last; w++)
        if (!mode_pool_scratch(w, bytes)) {
            rc = mode_err_oom(err, bytes, "an expert's weights, inputs and Hessian");
            goto out;
        }
    mode_pool_run(E, expert_pack_item, &j);
    for (int e = 0; e < E; e++) {
        if (j.rc[e]) {
            *err = j.errs[e];
            rc = j.rc[e];
            break;
        }
        L->zero_lost += j.zero_lost[e];
        L->n_rtn += L->tokens[e] < o->min_tokens || L->tokens[e] == 0 ? (bits[(size_t)l * E + e] < 16) : 0;
    }
out:
    free(cnt), free(j.zero_lost), free(j.rc), free(j.errs);
    return rc;
}

int mode_pack_run(struct mode_rt *rt, struct mode_rt_batch *b, const int *bits, const struct mode_pack_opts *o,
                  int (*emit)(void *ctx, const struct mode_pack_layer *l, const struct mode_rt_batch *b, struct mode_err *err), void *emit_ctx,
                  struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_text_config *t = &m->cfg.text;
    const int E = t->n_expert;
    const int64_t D = t->n_embd, I = t->n_ff_exp, qd = (int64_t)t->n_head * t->head_dim;
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
    /* the snapshot of a layer's input, and the attention's Hessian (the experts' buffers are
     * their workers': experts_pooled) */
    float *snap = malloc(sizeof *snap * nd);
    double *H = malloc(sizeof *H * (size_t)(hmax * hmax));
    struct mode_pack_layer L = {.n_expert = E};
    L.proj = calloc((size_t)E * 3, sizeof *L.proj);
    L.tokens = calloc((size_t)E, sizeof *L.tokens);
    if (!c.x || !c.ex || !c.gu || !c.dn || (qa && (!c.xa || !c.oa)) || !snap || !H || !L.proj ||
        !L.tokens) {
        rc = mode_err_oom(err, nd * 12, "packing");
        goto out;
    }
    /* without attention quantization no attn_out hook, so that the layers can run resident on a GPU */
    struct mode_rt_hooks hooks = {.ctx = &c, .moe = on_moe, .expert = on_expert, .attn_out = qa ? on_attn_out : NULL, .attn_weights = on_attn_weights};
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
        if (moe && (o->batched || o->device == MODE_DEVICE_CUDA)) {
            rc = experts_batched(m, l, &c, bits, o, &L, err);
            if (rc) break;
        }
        if (moe && !(o->batched || o->device == MODE_DEVICE_CUDA) && (rc = experts_pooled(m, l, &c, bits, o, &L, err))) break;
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
    free(c.x), free(c.ex), free(c.xa), free(c.oa), free(c.gu), free(c.dn), free(snap), free(H), free(L.proj),
        free(L.tokens);
    return rc;
}

/* ---- the resume state and the checkpoint directory's inputs and temporaries (pack.h) -------- */

size_t mode_pack_stats_text(const struct mode_pack_layer *l, char *buf, size_t n)
{
    int k = snprintf(buf, n, "rtn_experts %d\nrtn_attention %d\nzero_lost %lld\n", l->n_rtn, l->attn_rtn ? 1 : 0, (long long)l->zero_lost);
    MODE_ASSERT(k > 0 && (size_t)k < n);
    return (size_t)k;
}

#define PACK_STATS_MAX 256 /* a stats file's text: three counts, well under this */

int mode_pack_stats_add(const char *path, struct mode_pack_stats *sum, struct mode_err *err)
{
    struct stat st;
    if (stat(path, &st))
        return mode_err_set(err, MODE_EDATA, "%s: %s (a resume state from an older mode-pack, or damaged): remove it to start over", path,
                            strerror(errno));
    char *text;
    size_t len;
    int rc = mode_read_file(path, PACK_STATS_MAX, &text, &len, err);
    if (rc) return rc;
    long long v[3];
    char canon[PACK_STATS_MAX];
    /* what it says, written back, must be what it holds: one spelling only */
    int ok = sscanf(text, "rtn_experts %lld rtn_attention %lld zero_lost %lld", &v[0], &v[1], &v[2]) == 3;
    ok = ok && v[0] >= 0 && (v[1] == 0 || v[1] == 1) && v[2] >= 0;
    ok = ok && (size_t)snprintf(canon, sizeof canon, "rtn_experts %lld\nrtn_attention %lld\nzero_lost %lld\n", v[0], v[1], v[2]) == len &&
         !memcmp(canon, text, len);
    free(text);
    if (!ok) return mode_err_set(err, MODE_EDATA, "%s: not a mode-pack layer's stats: remove the resume state to start over", path);
    sum->rtn += v[0], sum->attn_rtn += v[1], sum->zero_lost += v[2];
    return MODE_OK;
}

int mode_pack_lock(const char *resume_dir, int *fd, struct mode_err *err)
{
    char p[PATH_MAX + 16];
    if (snprintf(p, sizeof p, "%s/lock", resume_dir) >= (int)sizeof p) return mode_err_set(err, MODE_ECANTCREAT, "%s: path too long", resume_dir);
    *fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (*fd < 0) return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot create: %s", p, strerror(errno));
    if (flock(*fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        char pid[32] = "";
        ssize_t k = pread(*fd, pid, sizeof pid - 1, 0);
        pid[k > 0 ? k : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        close(*fd);
        *fd = -1;
        if (e == EWOULDBLOCK)
            return mode_err_set(err, MODE_ECANTCREAT, "%s is in use by another mode-pack (pid %s): wait for it to end", resume_dir, pid[0] ? pid : "?");
        return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot lock: %s", p, strerror(e));
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(*fd, 0) || pwrite(*fd, pid, (size_t)n, 0) != n) {
        int e = errno;
        close(*fd);
        *fd = -1;
        return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot write: %s", p, strerror(e));
    }
    return MODE_OK;
}

/* s is prefix followed by at least min characters of [A-Za-z0-9] (mkdtemp's XXXXXX, a pid) */
static bool named(const char *s, const char *prefix, size_t min)
{
    size_t k = strlen(prefix);
    if (strncmp(s, prefix, k)) return false;
    s += k;
    size_t n = 0;
    for (; s[n]; n++)
        if (!(s[n] >= '0' && s[n] <= '9') && !(s[n] >= 'a' && s[n] <= 'z') && !(s[n] >= 'A' && s[n] <= 'Z')) return false;
    return n >= min;
}

/* a resume layer's temporary: layer-NNN.tmp-XXXXXX or layer-NNN.old-PID (io.h's mode_outdir) */
static bool layer_tmp(const char *s)
{
    if (strncmp(s, "layer-", 6)) return false;
    s += 6;
    size_t d = strspn(s, "0123456789");
    return d >= 3 && (named(s + d, ".tmp-", 6) || named(s + d, ".old-", 1));
}

/* removes the directory `path` (flat: what mode_outdir writes) if it is one, reporting it */
static void remove_tmp(const char *path, void (*report)(void *, const char *, uint64_t, int), void *ctx)
{
    struct stat st;
    if (lstat(path, &st) || !S_ISDIR(st.st_mode)) return; /* gone meanwhile, or not a temporary directory */
    uint64_t bytes = 0;
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        char p[PATH_MAX + 300];
        while ((de = readdir(d)))
            if (snprintf(p, sizeof p, "%s/%s", path, de->d_name) < (int)sizeof p && !lstat(p, &st) && S_ISREG(st.st_mode)) bytes += (uint64_t)st.st_size;
        closedir(d);
    }
    report(ctx, path, bytes, mode_rmdir_flat(path));
}

int mode_pack_clean(const char *outdir, const char *resume_dir, void (*report)(void *ctx, const char *path, uint64_t bytes, int errnum),
                    void *ctx, struct mode_err *err)
{
    /* OUTDIR.tmp-XXXXXX beside OUTDIR */
    char dir[PATH_MAX], prefix[NAME_MAX + 16], p[PATH_MAX + 300];
    const char *slash = strrchr(outdir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == outdir) snprintf(dir, sizeof dir, "/");
    else if (snprintf(dir, sizeof dir, "%.*s", (int)(slash - outdir), outdir) >= (int)sizeof dir)
        return mode_err_set(err, MODE_ECANTCREAT, "%s: path too long", outdir);
    const char *base = slash ? slash + 1 : outdir;
    if (strlen(base) > NAME_MAX) return mode_err_set(err, MODE_ECANTCREAT, "%s: name too long", outdir);
    snprintf(prefix, sizeof prefix, "%s.tmp-", base);
    const char *where[2] = {dir, resume_dir};
    for (int k = 0; k < 2; k++) {
        DIR *d = opendir(where[k]);
        if (!d) return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot list: %s", where[k], strerror(errno));
        /* names first: removing while reading a directory may skip entries */
        size_t n = 0, cap = 0;
        char **names = NULL;
        struct dirent *de;
        int rc = MODE_OK;
        while ((de = readdir(d)) && !rc) {
            if (k == 0 ? !(named(de->d_name, prefix, 6) && strlen(de->d_name) == strlen(prefix) + 6) : !layer_tmp(de->d_name)) continue;
            if (n == cap) {
                char **nn = realloc(names, sizeof *names * (cap = cap ? 2 * cap : 8));
                if (!nn) rc = mode_err_oom(err, sizeof *names * cap, "a directory listing");
                else names = nn;
            }
            if (!rc && !(names[n++] = strdup(de->d_name))) rc = mode_err_oom(err, strlen(de->d_name) + 1, "a directory listing");
        }
        closedir(d);
        for (size_t i = 0; i < n; i++) {
            /* beside OUTDIR, named as OUTDIR was given (no "./" added) */
            const char *in = k ? resume_dir : slash ? dir : NULL;
            if (!rc && (in ? snprintf(p, sizeof p, "%s/%s", in, names[i]) : snprintf(p, sizeof p, "%s", names[i])) < (int)sizeof p)
                remove_tmp(p, report, ctx);
            free(names[i]);
        }
        free(names);
        if (rc) return rc;
    }
    return MODE_OK;
}

/* path lies inside dir (both resolved, no trailing slash) */
static bool within(const char *path, const char *dir)
{
    size_t k = strlen(dir);
    if (k == 1 && dir[0] == '/') return true;
    return !strncmp(path, dir, k) && path[k] == '/';
}

static int side_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mode_pack_side *)a)->name, ((const struct mode_pack_side *)b)->name);
}

int mode_pack_side_files(const char *model_dir, struct mode_pack_side **out, size_t *n, struct mode_err *err)
{
    *out = NULL, *n = 0;
    char root[PATH_MAX], blobs[PATH_MAX + 16] = "";
    if (!realpath(model_dir, root)) return mode_err_set(err, MODE_ENOINPUT, "%s: %s", model_dir, strerror(errno));
    /* a Hugging Face cache snapshot, models--X/snapshots/REV: its files link to models--X/blobs/ */
    {
        char *s = strrchr(root, '/');
        if (s && s > root) {
            *s = 0;
            char *snap = strrchr(root, '/');
            if (snap && !strcmp(snap + 1, "snapshots") && snap > root) {
                *snap = 0;
                const char *repo = strrchr(root, '/');
                if (repo && !strncmp(repo + 1, "models--", 8)) snprintf(blobs, sizeof blobs, "%s/blobs", root);
                *snap = '/';
            }
            *s = '/';
        }
    }
    DIR *d = opendir(model_dir);
    if (!d) return mode_err_set(err, MODE_ENOINPUT, "%s: cannot list: %s", model_dir, strerror(errno));
    size_t cap = 0;
    int rc = MODE_OK;
    struct dirent *de;
    while ((de = readdir(d)) && !rc) {
        const char *name = de->d_name;
        const size_t len = strlen(name);
        if (name[0] == '.' || !strcmp(name, "config.json") || !strcmp(name, "README.md") || (len > 12 && !strcmp(name + len - 12, ".safetensors")) ||
            strstr(name, ".safetensors.index.json"))
            continue;
        char path[sizeof (*out)->src], tgt[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", model_dir, name) >= (int)sizeof path) continue;
        struct stat st;
        if (lstat(path, &st)) continue; /* gone meanwhile */
        const char *src = path;
        char skip[sizeof (*out)->skip] = "";
        if (S_ISLNK(st.st_mode)) {
            if (!realpath(path, tgt)) snprintf(skip, sizeof skip, "a symbolic link that does not resolve (%s)", strerror(errno));
            else if (stat(tgt, &st) || !S_ISREG(st.st_mode)) continue; /* to a directory or a device: left out as those are */
            else if (within(tgt, root) || (blobs[0] && within(tgt, blobs))) src = tgt;
            else snprintf(skip, sizeof skip, "a symbolic link to %s, outside the model directory", tgt);
        } else if (!S_ISREG(st.st_mode))
            continue;
        if (*n == cap) {
            struct mode_pack_side *ns = realloc(*out, sizeof **out * (cap = cap ? 2 * cap : 16));
            if (!ns) {
                rc = mode_err_oom(err, sizeof **out * cap, "the model directory's listing");
                break;
            }
            *out = ns;
        }
        struct mode_pack_side *f = &(*out)[(*n)++];
        snprintf(f->name, sizeof f->name, "%s", name);
        snprintf(f->src, sizeof f->src, "%s", src);
        snprintf(f->skip, sizeof f->skip, "%s", skip);
    }
    closedir(d);
    if (rc) {
        free(*out);
        *out = NULL, *n = 0;
        return rc;
    }
    if (*n) qsort(*out, *n, sizeof **out, side_cmp);
    return MODE_OK;
}

/* ---- the checkpoint's description (pack.h) ----------------------------------------------------- */

/* o[k] = v (v's reference taken, also on failure); false when either is NULL or it fails */
static bool put(json_t *o, const char *k, json_t *v)
{
    if (!o || !v) {
        json_decref(v);
        return false;
    }
    return json_object_set_new(o, k, v) == 0;
}

/* Version 0.9.0 of GPTQModel (its MIN_VERSION_WITH_V2) is the first whose v1 files were written
 * from the v2 zero points (zero − 1), as gptqpack.c writes them; see `meta` below. */
#define PACK_GPTQMODEL_V2 "0.9.0"

json_t *mode_pack_quant_config(const struct mode_text_config *t, const int *bits, const struct mode_pack_opts *o)
{
    const int L = t->n_layer, E = t->n_expert;
    int hist[17] = {0};
    for (int l = 0; l < L; l++)
        for (int e = 0; t->is_moe[l] && e < E; e++) hist[bits[(size_t)l * E + e]]++;
    int common = 4;
    for (int k = 2; k <= 16; k++)
        if (hist[k] > hist[common]) common = k;
    if (common == 16) common = 4;
    json_t *qc = json_object(), *dyn = json_object(), *meta = json_object(), *quantizer = json_array();
    bool ok = qc && dyn && meta && quantizer;
    ok = ok && put(qc, "quant_method", json_string("gptq")) && put(qc, "bits", json_integer(common)) &&
         put(qc, "group_size", json_integer(o->group)) && put(qc, "sym", json_boolean(o->sym)) &&
         put(qc, "desc_act", json_boolean(o->act_order)) && put(qc, "checkpoint_format", json_string(o->gptq_v1 ? "gptq" : "gptq_v2")) &&
         /* qweight and qzeros are int32 words (gptqpack.h); nothing but decoder layers is quantized */
         put(qc, "pack_dtype", json_string("int32")) && put(qc, "lm_head", json_false());
    /* GPTQModel's dynamic rules: per layer, one rule per width listing its experts; everything
     * that is not a routed expert is excluded */
    for (int l = 0; ok && l < L; l++) {
        if (!t->is_moe[l]) continue;
        for (int bw = 2; ok && bw <= 16; bw++) {
            char rule[16384];
            int off = snprintf(rule, sizeof rule, "%s:^model\\.language_model\\.layers\\.%d\\.mlp\\.experts\\.(", bw == 16 ? "-" : "+", l);
            int cnt = 0;
            for (int e = 0; e < E && off < (int)sizeof rule - 16; e++)
                if (bits[(size_t)l * E + e] == bw) off += snprintf(rule + off, sizeof rule - (size_t)off, "%s%d", cnt++ ? "|" : "", e);
            if (!cnt) continue;
            snprintf(rule + off, sizeof rule - (size_t)off, ")\\.");
            json_t *v = json_object();
            ok = bw == 16 || put(v, "bits", json_integer(bw));
            ok = put(dyn, rule, v) && ok;
        }
    }
    ok = ok && put(dyn, "-:^model\\.visual\\.", json_object());
    if (ok && o->attn_bits) {
        json_t *v = json_object();
        ok = put(v, "bits", json_integer(o->attn_bits));
        ok = put(dyn, "+:^model\\.language_model\\.layers\\.\\d+\\.self_attn\\.(q|k|v|o)_proj", v) && ok;
    } else if (ok)
        ok = put(dyn, "-:.*\\.self_attn\\.", json_object());
    ok = ok && put(dyn, "-:.*\\.mlp\\.gate$", json_object()) && put(dyn, "-:^lm_head", json_object());
    ok = put(qc, "dynamic", dyn) && ok; /* (put takes dyn either way) */
    /* meta as GPTQModel writes it into its own checkpoints (ModelCloud/GPTQModel,
     * gptqmodel/models/writer.py: quantizer, uri, damp_percent, damp_auto_increment,
     * static_groups, true_sequential, mse), of which what applies here.
     *
     * quantizer: GPTQModel's list of "name:version" producers, ours first. GPTQModel refuses a v1
     * ("gptq") checkpoint with sym false ("Loading of a sym=False model with format=FORMAT.GPTQ is
     * only supported if produced by gptqmodel version >= 0.9.0", gptqmodel/models/loader.py)
     * unless one entry's name is "gptqmodel" with a version at least MIN_VERSION_WITH_V2, 0.9.0
     * (is_quantized_by_v2, gptqmodel/quantization/config.py): v1 files of older tools stored
     * zero points it cannot trust. Ours are the v2 zero points minus one, as GPTQModel ≥ 0.9.0
     * writes v1 (gptqpack.h; mode-pack warns of the zero points v1 cannot hold), so a v1
     * checkpoint names that convention, "gptqmodel:0.9.0", beside "mode:VERSION" — a statement
     * of the layout it follows, not that GPTQModel made it. v2 has no such gate: mode alone.
     * (GPTQModel before the list form read one string; the list is what it writes and reads now.)
     *
     * uri: GPTQModel points at its own repository; mode has no public home, so the method it
     * implements.
     *
     * true_sequential: the modules of a layer quantized in order, each calibrated on the inputs
     * that pass through the ones quantized before it. Here down_proj's Hessian always comes
     * from the activations through the quantized gate/up_proj and o_proj's from the quantized
     * q/k/v; the experts are calibrated on the output of the quantized attention, except with
     * fp_inputs, which takes the inputs of every layer and of its MoE from the full-precision
     * model: true then only while the attention is left as it is. */
    char me[64];
    snprintf(me, sizeof me, "mode:%s", MODE_VERSION);
    ok = ok && !json_array_append_new(quantizer, json_string(me)) &&
         (!o->gptq_v1 || !json_array_append_new(quantizer, json_string("gptqmodel:" PACK_GPTQMODEL_V2)));
    ok = put(meta, "quantizer", quantizer) && ok;
    ok = ok && put(meta, "uri", json_string("https://arxiv.org/abs/2606.17118")) && put(meta, "damp_percent", json_real(MODE_PACK_DAMP)) &&
         put(meta, "true_sequential", json_boolean(!(o->fp_inputs && o->attn_bits)));
    ok = put(qc, "meta", meta) && ok;
    if (!ok) {
        json_decref(qc);
        return NULL;
    }
    return qc;
}

/* a Hugging Face id: ORG/NAME or NAME of [A-Za-z0-9._-], not a path */
static bool hub_id(const char *s)
{
    int slash = 0;
    if (!*s || *s == '.' || *s == '/' || *s == '-') return false;
    for (const char *p = s; *p; p++) {
        if (*p == '/') {
            if (++slash > 1 || p[1] == 0 || p[1] == '/') return false;
        } else if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') && *p != '.' && *p != '_' && *p != '-')
            return false;
    }
    return true;
}

void mode_pack_source_name(const char *model_dir, json_t *config, char *buf, size_t n)
{
    json_t *np = config ? json_object_get(config, "_name_or_path") : NULL;
    char real[PATH_MAX];
    if (np && json_is_string(np) && hub_id(json_string_value(np))) snprintf(buf, n, "%s", json_string_value(np));
    else {
        /* .../models--ORG--NAME/snapshots/REV (huggingface_hub's cache: the id's '/' as "--") */
        const char *repo = NULL;
        if (realpath(model_dir, real)) {
            char *s = strrchr(real, '/');
            if (s && s > real) {
                *s = 0;
                char *snap = strrchr(real, '/');
                if (snap && !strcmp(snap + 1, "snapshots") && snap > real) {
                    *snap = 0;
                    const char *r = strrchr(real, '/');
                    if (r && !strncmp(r + 1, "models--", 8) && r[9]) repo = r + 9;
                }
            }
        }
        if (repo) {
            const char *dd = strstr(repo, "--");
            if (dd) snprintf(buf, n, "%.*s/%s", (int)(dd - repo), repo, dd + 2);
            else snprintf(buf, n, "%s", repo);
        } else {
            /* the directory's name as given, without trailing slashes */
            size_t k = strlen(model_dir);
            while (k > 1 && model_dir[k - 1] == '/') k--;
            size_t b = k;
            while (b > 0 && model_dir[b - 1] != '/') b--;
            snprintf(buf, n, "%.*s", (int)(k - b), model_dir + b);
        }
    }
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
}

int mode_pack_source_yaml(const char *model_dir, char **out, struct mode_err *err)
{
    char path[PATH_MAX + 16];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s/README.md", model_dir) >= (int)sizeof path) return mode_err_set(err, MODE_ENOINPUT, "%s: path too long", model_dir);
    struct stat st;
    char *text = NULL, *res = calloc(1, 1);
    size_t len = 0, rl = 0;
    if (!res) return mode_err_oom(err, 1, "the source model card");
    if (stat(path, &st)) {
        if (errno == ENOENT) return *out = res, MODE_OK;
        free(res);
        return mode_err_set(err, MODE_ENOINPUT, "%s: %s", path, strerror(errno));
    }
    int rc = mode_read_regular_file(path, MODE_PACK_CARD_MAX, &text, &len, err);
    if (rc) {
        free(res);
        return rc;
    }
    /* the YAML header: a first line "---", up to the next line "---" */
    const char *p = text, *end = text + len;
    if (len >= 3 && !strncmp(p, "---", 3) && (p[3] == '\n' || (p[3] == '\r' && p[4] == '\n'))) {
        p = strchr(p, '\n') + 1;
        static const char *const keys[] = {"license:", "license_name:", "license_link:", "pipeline_tag:"};
        while (p < end) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (ll && p[ll - 1] == '\r') ll--;
            if (ll == 3 && !strncmp(p, "---", 3)) break;
            for (size_t k = 0; k < sizeof keys / sizeof *keys; k++)
                if (ll > strlen(keys[k]) && !strncmp(p, keys[k], strlen(keys[k]))) {
                    char *nr = realloc(res, rl + ll + 2);
                    if (!nr) {
                        free(res), free(text);
                        return mode_err_oom(err, rl + ll + 2, "the source model card");
                    }
                    res = nr;
                    memcpy(res + rl, p, ll);
                    rl += ll;
                    res[rl++] = '\n';
                    res[rl] = 0;
                }
            if (!nl) break;
            p = nl + 1;
        }
    }
    free(text);
    *out = res;
    return MODE_OK;
}

int mode_pack_eval_load(const char *path, json_t **out, struct mode_err *err)
{
    int rc = mode_json_load(path, MODE_PACK_EVAL_MAX, out, err);
    if (rc) return rc;
    if (!json_is_object(json_object_get(*out, "metrics"))) {
        json_decref(*out);
        *out = NULL;
        return mode_err_set(err, MODE_EDATA, "%s: not mode-eval's JSON output (no \"metrics\" object)", path);
    }
    return MODE_OK;
}

/* a YAML scalar: as it is when it reads as a plain string (a Hugging Face id with a letter that is
 * none of YAML's words for booleans and null), else double-quoted */
static void yaml_scalar(struct mode_wbuf *w, const char *s)
{
    static const char *const words[] = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"};
    bool plain = hub_id(s), letter = false;
    for (const char *p = s; *p; p++) letter |= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z');
    for (size_t k = 0; k < sizeof words / sizeof *words; k++) plain &= strcasecmp(s, words[k]) != 0;
    if (plain && letter) {
        mode_wbuf_puts(w, s);
        return;
    }
    mode_wbuf_putc(w, '"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') mode_wbuf_putc(w, '\\');
        mode_wbuf_putc(w, *s);
    }
    mode_wbuf_putc(w, '"');
}

/* "N expert" or "N experts" */
static const char *experts(int64_t n)
{
    return n == 1 ? "expert" : "experts";
}

/* the number at key of object o, if any */
static bool num_at(json_t *o, const char *key, double *v)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_number(x)) return false;
    *v = json_number_value(x);
    return true;
}

/* one metric of one evaluation: section (metrics or a by_modality entry) -> sub ("text",
 * "answer") -> what: 'p' perplexity, 'x' exact match k/n; "" when it has none */
static void eval_cell(json_t *section, const char *sub, char what, char *buf, size_t n)
{
    json_t *o = json_object_get(section, sub);
    double rec = 0, v, k;
    buf[0] = 0;
    if (!num_at(o, "records", &rec) || rec <= 0) return;
    if (what == 'p' && num_at(o, "perplexity", &v)) snprintf(buf, n, "%.3f", v);
    if (what == 'x' && num_at(o, "exact_match", &k)) snprintf(buf, n, "%.0f/%.0f", k, rec);
}

/* the evaluation section's body: one column per evaluation, a row per metric any of them has */
static void card_eval(struct mode_wbuf *w, json_t *const *eval, int n_eval)
{
    MODE_ASSERT(n_eval <= MODE_PACK_CARD_MAX_EVAL);
    if (!n_eval) {
        mode_wbuf_puts(w, "No evaluation given: `mode-pack --card-eval FILE` takes `mode-eval`'s JSON output, and\n"
                          "`mode-pack --card-update DIR --card-eval FILE` puts it into this card after the fact.\n");
        return;
    }
    mode_wbuf_puts(w, "`mode-eval` (mode-eval(1)), one column per evaluation, named by the model it evaluated:\n\n| |");
    for (int j = 0; j < n_eval; j++) {
        const char *name = json_string_value(json_object_get(json_object_get(eval[j], "model"), "name"));
        mode_wbuf_printf(w, " %s |", name ? name : "?");
    }
    mode_wbuf_puts(w, "\n|---|");
    for (int j = 0; j < n_eval; j++) mode_wbuf_puts(w, "---|");
    mode_wbuf_putc(w, '\n');
    /* rows: the whole set, then each modality of the first evaluation that names them */
    static const struct { const char *sub, *label; char what; } kinds[] = {
        {"text", "text perplexity", 'p'}, {"answer", "answer perplexity", 'p'}, {"answer", "answer exact match", 'x'}};
    json_t *mods = json_object_get(json_object_get(eval[0], "metrics"), "by_modality");
    const char *mod = NULL;
    void *it = json_is_object(mods) ? json_object_iter(mods) : NULL;
    for (int pass = 0; pass == 0 || it; pass++) {
        if (pass > 0) {
            mod = json_object_iter_key(it);
            it = json_object_iter_next(mods, it);
        }
        for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
            char cells[MODE_PACK_CARD_MAX_EVAL][64];
            bool any = false;
            for (int j = 0; j < n_eval; j++) {
                json_t *sec = json_object_get(eval[j], "metrics");
                if (mod) sec = json_object_get(json_object_get(sec, "by_modality"), mod);
                eval_cell(sec, kinds[k].sub, kinds[k].what, cells[j], sizeof cells[j]);
                any |= cells[j][0] != 0;
            }
            if (!any) continue;
            if (mod) mode_wbuf_printf(w, "| `%s`: %s |", mod, kinds[k].label);
            else mode_wbuf_printf(w, "| %s |", kinds[k].label);
            for (int j = 0; j < n_eval; j++) mode_wbuf_printf(w, " %s |", cells[j][0] ? cells[j] : "-");
            mode_wbuf_putc(w, '\n');
        }
    }
    mode_wbuf_puts(w, "| samples |");
    for (int j = 0; j < n_eval; j++) {
        double v;
        if (num_at(json_object_get(eval[j], "metrics"), "samples", &v)) mode_wbuf_printf(w, " %.0f |", v);
        else mode_wbuf_puts(w, " - |");
    }
    mode_wbuf_puts(w, "\n| weights (fingerprint) |");
    for (int j = 0; j < n_eval; j++) {
        const char *h = json_string_value(json_object_get(json_object_get(eval[j], "model"), "weights"));
        if (h && *h) mode_wbuf_printf(w, " `%.12s` |", h);
        else mode_wbuf_puts(w, " - |");
    }
    mode_wbuf_putc(w, '\n');
}

int mode_pack_card_write(struct mode_wbuf *w, const struct mode_pack_card *c)
{
    const struct mode_text_config *t = c->text;
    const struct mode_pack_opts *o = c->opts;
    const int L = t->n_layer, E = t->n_expert;
    int hist[17] = {0}, moe = 0;
    double sum = 0;
    for (int l = 0; l < L; l++) {
        moe += t->is_moe[l];
        for (int e = 0; t->is_moe[l] && e < E; e++) hist[c->bits[(size_t)l * E + e]]++, sum += c->bits[(size_t)l * E + e];
    }
    const int64_t routed = (int64_t)moe * E;
    const double avg = routed ? sum / (double)routed : 0;
    /* the Hugging Face header (https://huggingface.co/docs/hub/model-cards) */
    mode_wbuf_puts(w, "---\nbase_model:\n- ");
    yaml_scalar(w, c->base_model);
    mode_wbuf_puts(w, "\nbase_model_relation: quantized\nlibrary_name: gptqmodel\n");
    if (c->source_yaml) mode_wbuf_puts(w, c->source_yaml);
    mode_wbuf_puts(w, "tags:\n- mode\n- gptq\n- mixed-precision\n- moe\n- quantized\n");
    if (c->model_type && hub_id(c->model_type)) mode_wbuf_printf(w, "- %s\n", c->model_type);
    mode_wbuf_puts(w, "---\n\n");

    char attn[64] = "kept (16 bits)";
    if (o->attn_bits) snprintf(attn, sizeof attn, "%d bits, GPTQ", o->attn_bits);
    mode_wbuf_printf(w, "# %s, routed experts at %.3g bits on average (GPTQ, `%s` allocation by mode)\n\n", c->base_model, avg, c->method);
    mode_wbuf_printf(w,
                     "The routed experts of %s quantized with GPTQ by mode's `mode-pack`, each at the width\n"
                     "`mode-ilp` chose for it; %s\n\n",
                     c->base_model,
                     o->attn_bits ? "the text attention's projections with GPTQ too; router, embeddings,\nnorms and the vision tower are as in the original checkpoint."
                                  : "attention, router, embeddings, norms and\nthe vision tower are as in the original checkpoint.");
    mode_wbuf_printf(w, "| | |\n|---|---|\n| source model | %s (`%s`) |\n", c->base_model, c->arch ? c->arch : "?");
    mode_wbuf_printf(w, "| routed experts | %d per MoE layer (top-%d per token), in %d of %d decoder layers: %lld in all |\n", E,
                     t->n_expert_used, moe, L, (long long)routed);
    mode_wbuf_printf(w,
                     "| allocation method | `%s` (mode-ilp) |\n| budget | %s |\n| average bits | %.3f |\n"
                     "| attention (q/k/v/o_proj) | %s |\n| group size | %d, %s |\n| format | %s |\n"
                     "| calibration | %d samples, %lld tokens |\n| round-to-nearest fallback | %lld %s |\n\n",
                     c->method, c->budget, avg, attn, o->group, o->sym ? "symmetric" : "asymmetric", o->gptq_v1 ? "gptq (v1)" : "gptq_v2",
                     c->n_samples, (long long)c->n_tokens, (long long)c->rtn, experts(c->rtn));

    /* the widths, over all and per layer */
    mode_wbuf_printf(w, "## Allocation\n\nWidths of the %lld routed experts: ", (long long)routed);
    int shown = 0;
    for (int k = 2; k <= 16; k++)
        if (hist[k]) mode_wbuf_printf(w, "%s%d %s at %d bits", shown++ ? "; " : "", hist[k], experts(hist[k]), k);
    mode_wbuf_puts(w, ".\n\n| layer |");
    for (int k = 2; k <= 16; k++)
        if (hist[k]) mode_wbuf_printf(w, k == 16 ? " 16 (kept) |" : " %d bits |", k);
    mode_wbuf_puts(w, " average |\n|---|");
    for (int k = 2; k <= 16; k++)
        if (hist[k]) mode_wbuf_puts(w, "---|");
    mode_wbuf_puts(w, "---|\n");
    for (int l = 0; l < L; l++) {
        if (!t->is_moe[l]) continue;
        int h[17] = {0};
        double s = 0;
        for (int e = 0; e < E; e++) h[c->bits[(size_t)l * E + e]]++, s += c->bits[(size_t)l * E + e];
        mode_wbuf_printf(w, "| %d |", l);
        for (int k = 2; k <= 16; k++)
            if (hist[k]) mode_wbuf_printf(w, " %d |", h[k]);
        mode_wbuf_printf(w, " %.3f |\n", E ? s / E : 0);
    }
    mode_wbuf_putc(w, '\n');
    if (c->picture) mode_wbuf_printf(w, "![bit width of every routed expert](%s)\n\n", c->picture);
    mode_wbuf_puts(w, "`config.json` holds the per-expert widths (`quantization_config.dynamic`, GPTQModel's convention) and\n"
                      "the allocation with the provenance of its inputs (`mode`).\n\n");

    mode_wbuf_puts(w, "## Evaluation\n\n" MODE_PACK_EVAL_BEGIN "\n");
    card_eval(w, c->eval, c->n_eval);
    mode_wbuf_puts(w, MODE_PACK_EVAL_END "\n\n");

    /* loading and serving */
    mode_wbuf_puts(w, "## Use\n\n"
                      "With GPTQModel, whose `dynamic` rules give each expert its width (untested here: mode's own\n"
                      "tests load this checkpoint with `mode-eval`, not with GPTQModel):\n\n"
                      "```python\nfrom gptqmodel import GPTQModel\n\n"
                      "model = GPTQModel.load(\"PATH\")  # PATH: this directory, or the Hugging Face id it is published as\n```\n\n"
                      "## Serving\n\n"
                      "vLLM's MoE GPTQ kernels take one width per layer, 4 or 8 bits: experts at mixed widths, or at 2\n"
                      "or 3 bits, cannot be served there. GPTQModel (its torch kernel takes 2, 3, 4 and 8 bits, a width\n"
                      "per module) and mode's own kernels (`mode-eval --device cuda`) run it.\n");
    return w->err.code;
}

int mode_pack_card_update(const char *dir, json_t *const *eval, int n_eval, struct mode_err *err)
{
    char path[PATH_MAX + 16];
    if (snprintf(path, sizeof path, "%s/README.md", dir) >= (int)sizeof path) return mode_err_set(err, MODE_ENOINPUT, "%s: path too long", dir);
    char *text;
    size_t len;
    int rc = mode_read_regular_file(path, MODE_PACK_CARD_MAX, &text, &len, err);
    if (rc) return rc;
    /* the section: from the line after the begin marker to the end marker's line */
    char *b = strstr(text, MODE_PACK_EVAL_BEGIN "\n"), *e = b ? strstr(b, "\n" MODE_PACK_EVAL_END) : NULL;
    if (!b || !e || memchr(text, 0, len)) {
        free(text);
        return mode_err_set(err, MODE_EDATA, "%s: no evaluation section (the lines %s ... %s): not a card mode-pack wrote", path,
                            MODE_PACK_EVAL_BEGIN, MODE_PACK_EVAL_END);
    }
    b += strlen(MODE_PACK_EVAL_BEGIN "\n");
    e += 1;
    struct mode_outfile of;
    struct mode_wbuf w;
    if ((rc = mode_outfile_open(&of, path, err))) {
        free(text);
        return rc;
    }
    if ((rc = mode_wbuf_init(&w, of.fd, path, err))) {
        mode_outfile_abort(&of);
        free(text);
        return rc;
    }
    mode_wbuf_write(&w, text, (size_t)(b - text));
    card_eval(&w, eval, n_eval);
    mode_wbuf_write(&w, e, len - (size_t)(e - text));
    free(text);
    if ((rc = mode_wbuf_free(&w, err)) || (rc = mode_outfile_commit(&of, err))) mode_outfile_abort(&of);
    return rc;
}
