/* rtlayer.c — the runtime's resident text layers (rtlayer.h). */
#include "rtlayer.h"

#include "../kernels/mode_cuda.h"

#include <stdlib.h>
#include <string.h>

enum { B_WQ, B_WK, B_WV, B_WO, B_AN, B_QN, B_KN, B_FN, B_ROUTER, B_GU, B_DN, B_WORK, B_H, B_ANG, B_SEL, B_CS, B_LOGITS, B_W, B_IDX,
       B_MX, B_MO, B_RAW, V_W0, V_W11 = V_W0 + 11, V_X, V_ANG, V_WORK, N_BUF };

struct mode_rtlayer {
    void *buf[N_BUF];
    size_t cap[N_BUF];
    uint8_t *lin;   /* (n_expert) each expert's orientation */
    int lin_cap;
    int64_t vp;     /* the vision tower's patch rows, width and MLP width (vision_begin) */
    int ve, vff;
};

int mode_rtlayer_init(struct mode_rtlayer **g, struct mode_err *err)
{
    *g = NULL;
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    if (!(*g = calloc(1, sizeof **g))) return mode_err_oom(err, sizeof **g, "the resident layer");
    return MODE_OK;
}

void mode_rtlayer_free(struct mode_rtlayer *g)
{
    if (!g) return;
    for (int i = 0; i < N_BUF; i++) mode_cuda_free(g->buf[i]);
    free(g->lin);
    free(g);
}

/* buffer i of at least n bytes (contents not kept when it grows) */
static int reserve(struct mode_rtlayer *g, int i, size_t n, struct mode_err *err)
{
    if (n <= g->cap[i] && g->buf[i]) return MODE_OK;
    mode_cuda_free(g->buf[i]);
    g->buf[i] = NULL, g->cap[i] = 0;
    int rc = mode_cuda_malloc(&g->buf[i], n ? n : 1, err);
    if (!rc) g->cap[i] = n;
    return rc;
}

static int put(struct mode_rtlayer *g, int i, const void *src, size_t n, struct mode_err *err)
{
    int rc = reserve(g, i, n, err);
    return rc ? rc : mode_cuda_upload(g->buf[i], src, n, err);
}

/* n values of type t at src (host) into f32 d_dst: copied, or through B_RAW and widened there */
static int put_f32(struct mode_rtlayer *g, float *d_dst, const void *src, enum mode_dtype t, size_t n, struct mode_err *err)
{
    if (t == MODE_F32) return mode_cuda_upload(d_dst, src, n * 4, err);
    if (t != MODE_BF16 && t != MODE_F16) return mode_err_set(err, MODE_EDATA, "resident layer: experts of type %s", mode_dtype_name(t));
    int rc = put(g, B_RAW, src, n * 2, err);
    return rc ? rc : mode_convert_cuda(t, g->buf[B_RAW], n, d_dst, NULL, err); /* ordered before the next upload (default stream) */
}

int mode_rtlayer_run(struct mode_rtlayer *g, const struct mode_text_config *t, const struct mode_rtlayer_w *w, const struct mode_rtlayer_rows *r,
                     struct mode_err *err)
{
    const size_t n = (size_t)r->n, D = (size_t)t->n_embd, hd = (size_t)t->head_dim, qd = (size_t)t->n_head * hd,
                 kvd = (size_t)t->n_head_kv * hd, E = (size_t)t->n_expert, K = (size_t)t->n_expert_used, I = (size_t)t->n_ff_exp;
    const size_t ne = 2 * I * D, nd = I * D;
    if (n == 0) return MODE_OK;
    int rc;
    if ((rc = put(g, B_WQ, w->wq, qd * D * 4, err)) || (rc = put(g, B_WK, w->wk, kvd * D * 4, err)) || (rc = put(g, B_WV, w->wv, kvd * D * 4, err)) ||
        (rc = put(g, B_WO, w->wo, D * qd * 4, err)) || (rc = put(g, B_AN, w->an, D * 4, err)) || (rc = put(g, B_QN, w->qn, hd * 4, err)) ||
        (rc = put(g, B_KN, w->kn, hd * 4, err)) || (rc = put(g, B_FN, w->fn, D * 4, err)) || (rc = put(g, B_ROUTER, w->router, E * D * 4, err)) ||
        (rc = reserve(g, B_GU, E * ne * 4, err)) || (rc = reserve(g, B_DN, E * nd * 4, err)))
        return rc;
    if (g->lin_cap < (int)E) {
        free(g->lin);
        g->lin_cap = (g->lin = malloc(E)) ? (int)E : 0;
        if (!g->lin) return mode_err_oom(err, E, "expert orientations");
    }
    for (size_t e = 0; e < E; e++) { /* one expert at a time, in its stored type */
        struct mode_rtlayer_expert x = {NULL, NULL, MODE_F32, MODE_F32, false};
        if ((rc = w->expert(w->ctx, (int)e, &x, err))) return rc;
        g->lin[e] = x.trans;
        if ((rc = put_f32(g, (float *)g->buf[B_GU] + e * ne, x.gu, x.gu_t, ne, err)) ||
            (rc = put_f32(g, (float *)g->buf[B_DN] + e * nd, x.dn, x.dn_t, nd, err)))
            return rc;
    }
    struct mode_text_layer_cuda L = {t->n_embd, t->n_head, t->n_head_kv, t->head_dim, t->n_expert, t->n_expert_used, t->n_ff_exp,
                                     (float)t->rms_eps, t->norm_topk_prob, true, g->buf[B_WQ], g->buf[B_WK], g->buf[B_WV], g->buf[B_WO],
                                     g->buf[B_AN], g->buf[B_QN], g->buf[B_KN], g->buf[B_FN], g->buf[B_ROUTER], {0, 0, 0, NULL, NULL}, NULL,
                                     g->buf[B_GU], g->buf[B_DN], false, g->lin};
    const size_t wb = mode_text_layer_work_bytes(&L, r->n);
    if (!wb) return mode_err_set(err, MODE_EINTERNAL, "resident layer: the layer's shape is not one the kernels take");
    if ((rc = reserve(g, B_WORK, wb, err)) || (rc = put(g, B_H, r->h, n * D * 4, err)) || (rc = put(g, B_ANG, r->ang, n * hd / 2 * 4, err)) ||
        (rc = reserve(g, B_CS, n * 4, err)) || (rc = reserve(g, B_LOGITS, n * E * 4, err)) || (rc = reserve(g, B_W, n * K * 4, err)) ||
        (rc = reserve(g, B_IDX, n * K * 4, err)) || (r->sel && (rc = put(g, B_SEL, r->sel, n, err))) ||
        (r->moe_x && (rc = reserve(g, B_MX, n * D * 4, err))) || (r->moe_out && (rc = reserve(g, B_MO, n * D * 4, err))))
        return rc;
    const struct mode_text_rows_cuda rows = {r->n,
                                             r->n_seg,
                                             r->seg,
                                             g->buf[B_ANG],
                                             r->sel ? g->buf[B_SEL] : NULL,
                                             r->sel ? g->buf[B_CS] : NULL,
                                             g->buf[B_LOGITS],
                                             r->moe_x ? g->buf[B_MX] : NULL,
                                             r->moe_out ? g->buf[B_MO] : NULL};
    if ((rc = mode_text_layer_cuda(&L, &rows, g->buf[B_H], g->buf[B_IDX], g->buf[B_W], g->buf[B_WORK], NULL, NULL, err)) ||
        (rc = mode_cuda_download(r->logits, g->buf[B_LOGITS], n * E * 4, err)) || (rc = mode_cuda_download(r->idx, g->buf[B_IDX], n * K * 4, err)) ||
        (rc = mode_cuda_download(r->w, g->buf[B_W], n * K * 4, err)) || (r->sel && (rc = mode_cuda_download(r->colsum, g->buf[B_CS], n * 4, err))) ||
        (r->moe_x && (rc = mode_cuda_download(r->moe_x, g->buf[B_MX], n * D * 4, err))) ||
        (r->moe_out && (rc = mode_cuda_download(r->moe_out, g->buf[B_MO], n * D * 4, err))) ||
        (rc = mode_cuda_download(r->h, g->buf[B_H], n * D * 4, err))) /* h last: on an earlier failure it is as it was */
        return rc;
    return MODE_OK;
}

/* the 12 tensors of a vision block: their sizes in floats, in mode_vision_block_cuda's order */
static void vision_sizes(int64_t e, int64_t f, size_t *n)
{
    const size_t E = (size_t)e, F = (size_t)f;
    const size_t sz[12] = {E, E, 3 * E * E, 3 * E, E * E, E, E, E, F * E, F, E * F, E};
    memcpy(n, sz, sizeof sz);
}

int mode_rtlayer_vision_begin(struct mode_rtlayer *g, const float *x, const float *ang, int64_t p, int e, int head_dim, int n_ff,
                              struct mode_err *err)
{
    size_t n[12];
    vision_sizes(e, n_ff, n);
    int rc = MODE_OK;
    for (int i = 0; i < 12 && !rc; i++) rc = reserve(g, V_W0 + i, n[i] * 4, err);
    const struct mode_vision_block_cuda shape = {e, e / head_dim, n_ff, 1e-6f, .n1w = NULL};
    const size_t wb = mode_vision_block_work_bytes(&shape, p);
    if (!rc && !wb) rc = mode_err_set(err, MODE_EINTERNAL, "resident vision: a block shape the kernels do not take");
    if (!rc) rc = reserve(g, V_WORK, wb, err);
    if (!rc) rc = put(g, V_X, x, (size_t)p * (size_t)e * 4, err);
    if (!rc) rc = put(g, V_ANG, ang, (size_t)p * (size_t)(head_dim / 2) * 4, err);
    if (!rc) g->vp = p, g->ve = e, g->vff = n_ff;
    return rc;
}

int mode_rtlayer_vision_block(struct mode_rtlayer *g, const struct mode_vision_block_cuda *host, const int64_t *seg, int n_seg, struct mode_err *err)
{
    if (host->e != g->ve || host->n_ff != g->vff) return mode_err_set(err, MODE_EINTERNAL, "resident vision: a block of another shape");
    size_t n[12];
    vision_sizes(host->e, host->n_ff, n);
    const float *src[12] = {host->n1w, host->n1b, host->qkv, host->qkvb, host->proj, host->projb,
                            host->n2w, host->n2b, host->fc1, host->fc1b, host->fc2, host->fc2b};
    int rc = MODE_OK;
    for (int i = 0; i < 12 && !rc; i++) rc = mode_cuda_upload(g->buf[V_W0 + i], src[i], n[i] * 4, err);
    if (rc) return rc;
    float *const *d = (float *const *)&g->buf[V_W0];
    const struct mode_vision_block_cuda B = {host->e, host->n_head, host->n_ff, host->eps, d[0], d[1], d[2], d[3], d[4], d[5],
                                             d[6], d[7], d[8], d[9], d[10], d[11]};
    return mode_vision_block_cuda(&B, g->vp, seg, n_seg, g->buf[V_ANG], g->buf[V_X], g->buf[V_WORK], NULL, err);
}

int mode_rtlayer_vision_get(struct mode_rtlayer *g, float *x, struct mode_err *err)
{
    return mode_cuda_download(x, g->buf[V_X], (size_t)g->vp * (size_t)g->ve * 4, err);
}
