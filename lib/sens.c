/* sens.c — the sensitivity sweep of mode-sensitivity (see sens.h). */
#include "sens.h"
#include "ops.h"
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MOD_T = 0, MOD_V, MOD_A, N_MOD };

struct sweep {
    struct mode_rt *rt;
    struct mode_rt_batch *b;
    const struct mode_sens_opts *o;
    const struct mode_model *m;
    int64_t N, D, I, V;
    int E, k;
    /* capture of the full-precision pass at the current layer */
    int cap_layer;
    float *x, *out, *w;
    int32_t *ex;
    /* override during re-runs */
    int ov_layer, ov_expert;
    const float *ov_gu, *ov_dn;
    const uint8_t *ov_rows;
    /* row masks of the current layer */
    uint8_t *mask[N_MOD];
    /* mcmoe: the norm group of each row (its sample's position in the batch / norm_samples), the
     * number of groups, and per modality and group the squared error of the current expert */
    int32_t *row_group;
    int n_group;
    double *gsum; /* (N_MOD, n_group) */
    /* full-precision reference for kl */
    float *fp_lp; /* (N, V) log-probabilities, or NULL */
    float *fp_h;  /* (N, D) final hidden states when fp_lp is NULL */
    /* scratch of every call, allocated once per run: kl_sum's logits (CHUNK, V) of the run and of
     * the reference (lf only without fp_lp), quantize_expert's levels, scales, zeros (the larger
     * of gate_up and down, or both) and Hessian (GPTQ only) */
    float *lq, *lf;
    uint8_t *lev;
    float *sc, *zz;
    double *H;
    int64_t done, total;
};

static void *xmalloc(size_t n, struct mode_err *err, const char *what)
{
    void *p = malloc(n ? n : 1);
    if (!p) mode_err_oom(err, n, what);
    return p;
}

static int on_moe(void *vctx, int layer, const struct mode_rt_batch *b, const float *x, const int32_t *experts, const float *weights,
                  const float *out, struct mode_err *err)
{
    (void)err;
    struct sweep *s = vctx;
    if (layer != s->cap_layer) return MODE_OK;
    const size_t nd = (size_t)(b->n_rows * s->D), nk = (size_t)b->n_rows * s->k;
    memcpy(s->x, x, sizeof *s->x * nd);
    memcpy(s->out, out, sizeof *s->out * nd);
    memcpy(s->ex, experts, sizeof *s->ex * nk);
    memcpy(s->w, weights, sizeof *s->w * nk);
    return MODE_OK;
}

static int on_expert(void *vctx, int layer, int expert, struct mode_rt_expert_override *ov, struct mode_err *err)
{
    (void)err;
    struct sweep *s = vctx;
    if (layer == s->ov_layer && expert == s->ov_expert) {
        ov->gate_up = s->ov_gu;
        ov->down = s->ov_dn;
        ov->rows = s->ov_rows;
    }
    return MODE_OK;
}

/* gate_up (2I, D) = [gate; up], down (D, I) of expert e, f32 */
static int expert_weights(const struct sweep *s, int layer, int e, float *gu, float *dn, struct mode_err *err)
{
    struct mode_mat mg, mu, md;
    int rc;
    if ((rc = mode_model_expert(s->m, layer, e, MODE_PROJ_GATE, &mg, err)) || (rc = mode_model_expert(s->m, layer, e, MODE_PROJ_UP, &mu, err)) ||
        (rc = mode_model_expert(s->m, layer, e, MODE_PROJ_DOWN, &md, err)) || (rc = mode_mat_to_f32(&mg, gu, err)) ||
        (rc = mode_mat_to_f32(&mu, gu + s->I * s->D, err)) || (rc = mode_mat_to_f32(&md, dn, err)))
        return rc;
    return MODE_OK;
}

/* y (n, D) = down · swiglu(gate_up · x) for rows x (n, D); act (n, I) scratch */
static void expert_forward(const struct sweep *s, const float *gu, const float *dn, const float *x, int64_t n, float *h2, float *act,
                           float *y)
{
    mode_gemm(n, 2 * s->I, s->D, x, s->D, gu, s->D, true, 0.0f, h2, 2 * s->I);
    mode_swiglu_ref(h2, n, s->I, act);
    mode_gemm(n, s->D, s->I, act, s->I, dn, s->I, true, 0.0f, y, s->D);
}

/* rows of the current capture that select e, gathered: xr (n, D), wr (n) */
static int64_t gather(const struct sweep *s, int e, float *xr, float *wr, int64_t *rows)
{
    int64_t n = 0;
    for (int64_t r = 0; r < s->N; r++)
        for (int j = 0; j < s->k; j++)
            if (s->ex[r * s->k + j] == e) {
                memcpy(xr + n * s->D, s->x + r * s->D, sizeof *xr * (size_t)s->D);
                wr[n] = s->w[r * s->k + j];
                rows[n++] = r;
                break;
            }
    return n;
}

/* quantized copies of gu/dn at `bits`; *fallback set when GPTQ had too few tokens */
static int quantize_expert(const struct sweep *s, const float *gu, const float *dn, const float *xr, int64_t n, int bits, float *qgu,
                           float *qdn, uint8_t *fallback, float *h2, float *act, struct mode_err *err)
{
    struct mode_quant_opts qo = {.bits = bits, .group = s->o->group, .sym = s->o->sym};
    struct mode_quant_out og = {.deq = qgu}, od = {.deq = qdn};
    const int64_t G = s->I * 2;
    int64_t gg, ng;
    int rc;
    if ((rc = mode_quant_groups(&qo, s->D, &gg, &ng, err))) return rc;
    /* the output buffers RTN/GPTQ fill besides deq: the run's (sweep) */
    og.q = od.q = s->lev, og.scale = od.scale = s->sc, og.zero = od.zero = s->zz;
    if (!s->o->gptq || n < s->o->min_tokens) {
        if (s->o->gptq) *fallback = 1;
        if (!(rc = mode_quant_rtn(gu, G, s->D, &qo, &og, err))) rc = mode_quant_rtn(dn, s->D, s->I, &qo, &od, err);
    } else {
        double *H = s->H;
        struct mode_hessian hs;
        rc = mode_hessian_init(&hs, s->D, err);
        if (!rc) {
            mode_hessian_add(&hs, xr, n);
            mode_hessian_get(&hs, H);
            mode_hessian_free(&hs);
            rc = mode_quant_gptq(gu, G, s->D, H, &qo, &og, err);
        }
        if (!rc && !(rc = mode_hessian_init(&hs, s->I, err))) {
            mode_gemm(n, G, s->D, xr, s->D, gu, s->D, true, 0.0f, h2, G);
            mode_swiglu_ref(h2, n, s->I, act);
            mode_hessian_add(&hs, act, n);
            mode_hessian_get(&hs, H);
            mode_hessian_free(&hs);
            rc = mode_quant_gptq(dn, s->D, s->I, H, &qo, &od, err);
        }
    }
    return rc;
}

/* masks and counts of the captured layer */
static void masks(struct sweep *s, int layer, struct mode_sens_layer *out)
{
    const struct mode_rt_batch *b = s->b;
    memset(s->mask[MOD_T], 0, (size_t)s->N);
    memset(s->mask[MOD_V], 0, (size_t)s->N);
    memset(s->mask[MOD_A], 1, (size_t)s->N);
    for (int q = 0; q < b->n_seq; q++) {
        const struct mode_rt_seq *sq = &b->seq[q];
        const uint8_t *keep = sq->n_img && s->o->keep ? s->o->keep(s->o->keep_ctx, sq->index, layer, sq->n_img) : NULL;
        for (int64_t i = 0, img = 0; i < sq->n_tok; i++) {
            const int64_t r = sq->row + i;
            if (sq->modality[i] == 0) s->mask[MOD_T][r] = 1;
            else {
                s->mask[MOD_V][r] = keep ? keep[img] != 0 : 1;
                img++;
            }
        }
    }
    out->tok_t = out->tok_v = 0;
    for (int64_t r = 0; r < s->N; r++) out->tok_t += s->mask[MOD_T][r], out->tok_v += s->mask[MOD_V][r];
    memset(out->cnt_t, 0, sizeof *out->cnt_t * (size_t)s->E);
    memset(out->cnt_v, 0, sizeof *out->cnt_v * (size_t)s->E);
    for (int64_t r = 0; r < s->N; r++)
        for (int j = 0; j < s->k; j++) {
            const int e = s->ex[r * s->k + j];
            if (e < 0 || e >= s->E) continue;
            out->cnt_t[e] += s->mask[MOD_T][r];
            out->cnt_v[e] += s->mask[MOD_V][r];
        }
}

static void log_softmax(float *x, int64_t n, int64_t d)
{
    for (int64_t i = 0; i < n; i++) {
        float *r = x + i * d, mx = r[0];
        for (int64_t j = 1; j < d; j++) mx = r[j] > mx ? r[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < d; j++) sum += exp((double)(r[j] - mx));
        const float lse = mx + (float)log(sum);
        for (int64_t j = 0; j < d; j++) r[j] -= lse;
    }
}

enum { CHUNK = 256 };

/* Σ over the rows of sequences that contain an affected row of KL(fp ‖ current) */
static int kl_sum(struct sweep *s, const uint8_t *affected_seq, double *sum, struct mode_err *err)
{
    struct mode_rt_batch *b = s->b;
    float *lq = s->lq, *lf = s->lf;
    int rc = MODE_OK;
    double acc = 0;
    for (int q = 0; q < b->n_seq && !rc; q++) {
        if (!affected_seq[q]) continue;
        const struct mode_rt_seq *sq = &b->seq[q];
        for (int64_t r0 = 0; r0 < sq->n_tok && !rc; r0 += CHUNK) {
            const int64_t n = sq->n_tok - r0 < CHUNK ? sq->n_tok - r0 : CHUNK;
            if ((rc = mode_rt_logits(s->rt, b, q, r0, n, lq, err))) break;
            log_softmax(lq, n, s->V);
            const float *pf;
            if (s->fp_lp) pf = s->fp_lp + (sq->row + r0) * s->V;
            else {
                float *hq = b->h;
                b->h = s->fp_h;
                rc = mode_rt_logits(s->rt, b, q, r0, n, lf, err);
                b->h = hq;
                if (rc) break;
                log_softmax(lf, n, s->V);
                pf = lf;
            }
            for (int64_t i = 0; i < n; i++) {
                const float *a = pf + i * s->V, *c = lq + i * s->V;
                double kl = 0;
                for (int64_t j = 0; j < s->V; j++) {
                    const double p = exp((double)a[j]);
                    if (p > 0) kl += p * ((double)a[j] - (double)c[j]);
                }
                acc += kl > 0 ? kl : 0; /* rounding can give -1e-17 for identical rows */
            }
        }
    }
    *sum = acc;
    return rc;
}

int64_t mode_sens_work(const struct mode_model *m, const struct mode_sens_opts *o)
{
    int64_t layers = 0;
    for (int l = o->layer_lo; l <= o->layer_hi && l < m->cfg.text.n_layer; l++) layers += m->cfg.text.is_moe[l];
    if (o->metric != MODE_SENS_KL) return layers * m->cfg.text.n_expert;
    return layers * m->cfg.text.n_expert * o->n_bits * (o->all ? 3 : 2);
}

static void progress(struct sweep *s, int64_t add)
{
    s->done += add;
    if (s->o->progress) s->o->progress(s->o->progress_ctx, s->done, s->total);
}

int mode_sens_run(struct mode_rt *rt, struct mode_rt_batch *b, const struct mode_sens_opts *o,
                  int (*emit)(void *ctx, const struct mode_sens_layer *l, struct mode_err *err), void *emit_ctx, struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_text_config *t = &m->cfg.text;
    struct sweep s = {.rt = rt, .b = b, .o = o, .m = m, .E = t->n_expert, .k = t->n_expert_used, .D = t->n_embd, .I = t->n_ff_exp,
                      .V = t->n_vocab, .cap_layer = -1, .ov_layer = -1};
    int rc = mode_rt_vision(rt, b, err);
    if (rc) return rc;
    s.N = b->n_rows;
    s.total = mode_sens_work(m, o);
    const size_t nd = (size_t)(s.N * s.D), nk = (size_t)s.N * s.k, E = (size_t)s.E, B = (size_t)o->n_bits;
    const int64_t G = 2 * s.I;
    float *h0 = NULL, *snap = NULL, *next = NULL, *gu = NULL, *dn = NULL, *qgu = NULL, *qdn = NULL, *xr = NULL, *wr = NULL, *h2 = NULL,
          *act = NULL, *y = NULL, *yq = NULL;
    int64_t *rows = NULL;
    uint8_t *affected = NULL, *ovrows = NULL;
    struct mode_sens_layer L = {0};
    s.x = xmalloc(sizeof *s.x * nd, err, "MoE inputs");
    s.out = xmalloc(sizeof *s.out * nd, err, "MoE outputs");
    s.ex = xmalloc(sizeof *s.ex * nk, err, "routing");
    s.w = xmalloc(sizeof *s.w * nk, err, "routing");
    for (int i = 0; i < N_MOD; i++) s.mask[i] = xmalloc((size_t)s.N, err, "masks");
    h0 = xmalloc(sizeof *h0 * nd, err, "hidden states");
    snap = xmalloc(sizeof *snap * nd, err, "hidden states");
    next = xmalloc(sizeof *next * nd, err, "hidden states");
    gu = xmalloc(sizeof *gu * (size_t)(G * s.D), err, "expert");
    qgu = xmalloc(sizeof *qgu * (size_t)(G * s.D), err, "expert");
    dn = xmalloc(sizeof *dn * (size_t)(s.D * s.I), err, "expert");
    qdn = xmalloc(sizeof *qdn * (size_t)(s.D * s.I), err, "expert");
    xr = xmalloc(sizeof *xr * nd, err, "expert rows");
    wr = xmalloc(sizeof *wr * (size_t)s.N, err, "expert rows");
    rows = xmalloc(sizeof *rows * (size_t)s.N, err, "expert rows");
    h2 = xmalloc(sizeof *h2 * (size_t)(s.N * G), err, "expert activations");
    act = xmalloc(sizeof *act * (size_t)(s.N * s.I), err, "expert activations");
    y = xmalloc(sizeof *y * nd, err, "expert outputs");
    yq = xmalloc(sizeof *yq * nd, err, "expert outputs");
    affected = xmalloc((size_t)b->n_seq, err, "sequences");
    ovrows = xmalloc((size_t)s.N, err, "masks");
    const size_t n_lev = (size_t)(G * s.D > s.D * s.I ? G * s.D : s.D * s.I), n_sc = (size_t)(G * s.D + s.D * s.I);
    s.lev = xmalloc(n_lev, err, "levels");
    s.sc = xmalloc(sizeof *s.sc * n_sc, err, "scales");
    s.zz = xmalloc(sizeof *s.zz * n_sc, err, "zeros");
    s.H = o->gptq ? xmalloc(sizeof *s.H * (size_t)(s.D * s.D > s.I * s.I ? s.D * s.D : s.I * s.I), err, "a Hessian") : NULL;
    s.lq = o->metric == MODE_SENS_KL ? xmalloc(sizeof *s.lq * (size_t)(CHUNK * s.V), err, "logits") : NULL;
    L.n_expert = s.E, L.n_bits = o->n_bits;
    const bool want_all = o->all || o->metric == MODE_SENS_MCMOE;
    L.dt = calloc(E * B, sizeof *L.dt), L.dv = calloc(E * B, sizeof *L.dv), L.da = want_all ? calloc(E * B, sizeof *L.da) : NULL;
    if (o->metric == MODE_SENS_MCMOE) {
        const int per = o->norm_samples > 1 ? o->norm_samples : 1;
        s.n_group = (b->n_seq + per - 1) / per;
        s.row_group = xmalloc(sizeof *s.row_group * (size_t)s.N, err, "norm groups");
        s.gsum = xmalloc(sizeof *s.gsum * N_MOD * (size_t)(s.n_group ? s.n_group : 1), err, "norm groups");
        if (!s.row_group || !s.gsum) {
            rc = err->code;
            goto out;
        }
        for (int q = 0; q < b->n_seq; q++)
            for (int64_t i = 0; i < b->seq[q].n_tok; i++) s.row_group[b->seq[q].row + i] = q / per;
    }
    L.cnt_t = calloc(E, sizeof *L.cnt_t), L.cnt_v = calloc(E, sizeof *L.cnt_v), L.fallback = calloc(E, 1);
    if (!s.x || !s.out || !s.ex || !s.w || !h0 || !snap || !next || !gu || !qgu || !dn || !qdn || !xr || !wr || !rows || !h2 || !act ||
        !y || !yq || !affected || !ovrows || !L.dt || !L.dv || (want_all && !L.da) || !L.cnt_t || !L.cnt_v || !L.fallback ||
        !s.mask[0] || !s.mask[1] || !s.mask[2] || !s.lev || !s.sc || !s.zz || (o->gptq && !s.H) || (o->metric == MODE_SENS_KL && !s.lq)) {
        rc = mode_err_oom(err, nd * 4 * 8, "the sensitivity sweep");
        goto out;
    }
    struct mode_rt_hooks hooks = {.ctx = &s, .moe = on_moe, .expert = on_expert};
    memcpy(h0, b->h, sizeof *h0 * nd);

    if (o->metric == MODE_SENS_KL) {
        /* the full-precision reference */
        for (int l = 0; l < t->n_layer && !rc; l++) rc = mode_rt_layer(rt, b, l, NULL, err);
        if (rc) goto out;
        if ((double)s.N * (double)s.V * 4 <= (double)(1u << 30)) {
            s.fp_lp = xmalloc(sizeof *s.fp_lp * (size_t)(s.N * s.V), err, "reference log-probabilities");
            if (!s.fp_lp) {
                rc = err->code;
                goto out;
            }
            for (int q = 0; q < b->n_seq && !rc; q++)
                for (int64_t r0 = 0; r0 < b->seq[q].n_tok && !rc; r0 += CHUNK) {
                    const int64_t n = b->seq[q].n_tok - r0 < CHUNK ? b->seq[q].n_tok - r0 : CHUNK;
                    float *dst = s.fp_lp + (b->seq[q].row + r0) * s.V;
                    if (!(rc = mode_rt_logits(rt, b, q, r0, n, dst, err))) log_softmax(dst, n, s.V);
                }
        } else {
            s.fp_h = xmalloc(sizeof *s.fp_h * nd, err, "reference hidden states");
            s.lf = xmalloc(sizeof *s.lf * (size_t)(CHUNK * s.V), err, "logits");
            if (!s.fp_h || !s.lf) {
                rc = err->code;
                goto out;
            }
            memcpy(s.fp_h, b->h, sizeof *s.fp_h * nd);
        }
        if (rc) goto out;
        memcpy(b->h, h0, sizeof *h0 * nd);
        b->next_layer = 0;
    }

    for (int l = 0; l < t->n_layer && !rc; l++) {
        if (l > o->layer_hi) break;
        if (!t->is_moe[l] || l < o->layer_lo) {
            rc = mode_rt_layer(rt, b, l, NULL, err);
            continue;
        }
        memcpy(snap, b->h, sizeof *snap * nd);
        s.cap_layer = l;
        if ((rc = mode_rt_layer(rt, b, l, &hooks, err))) break;
        s.cap_layer = -1;
        memcpy(next, b->h, sizeof *next * nd);
        L.layer = l;
        masks(&s, l, &L);
        memset(L.dt, 0, sizeof *L.dt * E * B), memset(L.dv, 0, sizeof *L.dv * E * B);
        if (L.da) memset(L.da, 0, sizeof *L.da * E * B);
        memset(L.fallback, 0, E);
        /* output energy per modality (layer metric) */
        double den[N_MOD] = {0};
        for (int64_t r = 0; r < s.N; r++) {
            double e2 = 0;
            for (int64_t c = 0; c < s.D; c++) e2 += (double)s.out[r * s.D + c] * s.out[r * s.D + c];
            for (int mm = 0; mm < N_MOD; mm++)
                if (s.mask[mm][r]) den[mm] += e2;
        }
        for (int e = 0; e < s.E && !rc; e++) {
            if ((rc = expert_weights(&s, l, e, gu, dn, err))) break;
            const int64_t n = gather(&s, e, xr, wr, rows);
            if (o->metric != MODE_SENS_KL && n) expert_forward(&s, gu, dn, xr, n, h2, act, y);
            for (size_t bi = 0; bi < B && !rc; bi++) {
                const int64_t cnt[N_MOD] = {L.cnt_t[e], L.cnt_v[e], n};
                const int nmod = want_all ? 3 : 2;
                bool any = false;
                for (int mm = 0; mm < nmod; mm++) any |= cnt[mm] > 0;
                if (!any) { /* no token would use the quantized expert: exactly 0 */
                    if (o->metric == MODE_SENS_KL) progress(&s, nmod);
                    continue;
                }
                if ((rc = quantize_expert(&s, gu, dn, xr, n, o->bits[bi], qgu, qdn, &L.fallback[e], h2, act, err))) break;
                double *dst[N_MOD] = {L.dt, L.dv, L.da};
                if (o->metric == MODE_SENS_MCMOE) {
                    /* ‖Z − Z_q‖_F per group of samples, summed over the groups */
                    expert_forward(&s, qgu, qdn, xr, n, h2, act, yq);
                    memset(s.gsum, 0, sizeof *s.gsum * N_MOD * (size_t)s.n_group);
                    for (int64_t i = 0; i < n; i++) {
                        double e2 = 0;
                        for (int64_t c = 0; c < s.D; c++) {
                            const double d = (double)yq[i * s.D + c] - y[i * s.D + c];
                            e2 += d * d;
                        }
                        e2 *= (double)wr[i] * wr[i];
                        for (int mm = 0; mm < N_MOD; mm++)
                            if (s.mask[mm][rows[i]]) s.gsum[(size_t)mm * s.n_group + s.row_group[rows[i]]] += e2;
                    }
                    for (int mm = 0; mm < nmod; mm++) {
                        double eps = 0;
                        for (int g = 0; g < s.n_group; g++) eps += sqrt(s.gsum[(size_t)mm * s.n_group + g]);
                        dst[mm][(size_t)e * B + bi] = cnt[mm] ? eps : 0;
                    }
                    continue;
                }
                if (o->metric == MODE_SENS_LAYER) {
                    expert_forward(&s, qgu, qdn, xr, n, h2, act, yq);
                    double num[N_MOD] = {0};
                    for (int64_t i = 0; i < n; i++) {
                        double e2 = 0;
                        for (int64_t c = 0; c < s.D; c++) {
                            const double d = (double)yq[i * s.D + c] - y[i * s.D + c];
                            e2 += d * d;
                        }
                        e2 *= (double)wr[i] * wr[i];
                        for (int mm = 0; mm < N_MOD; mm++)
                            if (s.mask[mm][rows[i]]) num[mm] += e2;
                    }
                    for (int mm = 0; mm < nmod; mm++) dst[mm][(size_t)e * B + bi] = cnt[mm] && den[mm] > 0 ? num[mm] / den[mm] : 0;
                    continue;
                }
                for (int mm = 0; mm < nmod && !rc; mm++) {
                    if (!cnt[mm]) {
                        progress(&s, 1);
                        continue;
                    }
                    /* affected rows and sequences */
                    memset(affected, 0, (size_t)b->n_seq);
                    memset(ovrows, 0, (size_t)s.N);
                    for (int64_t i = 0; i < n; i++)
                        if (s.mask[mm][rows[i]]) ovrows[rows[i]] = 1;
                    for (int q = 0; q < b->n_seq; q++)
                        for (int64_t i = 0; i < b->seq[q].n_tok && !affected[q]; i++) affected[q] = ovrows[b->seq[q].row + i];
                    s.ov_layer = l, s.ov_expert = e, s.ov_gu = qgu, s.ov_dn = qdn, s.ov_rows = s.mask[mm];
                    memcpy(b->h, snap, sizeof *snap * nd);
                    b->next_layer = l;
                    for (int l2 = l; l2 < t->n_layer && !rc; l2++) rc = mode_rt_layer(rt, b, l2, &hooks, err);
                    s.ov_layer = -1;
                    double sum = 0;
                    if (!rc) rc = kl_sum(&s, affected, &sum, err);
                    dst[mm][(size_t)e * B + bi] = sum / (double)s.N;
                    progress(&s, 1);
                }
            }
            if (o->metric != MODE_SENS_KL) progress(&s, 1);
        }
        if (rc) break;
        memcpy(b->h, next, sizeof *next * nd);
        b->next_layer = l + 1;
        if ((rc = emit(emit_ctx, &L, err))) break;
    }
out:
    free(s.row_group), free(s.gsum);
    free(s.x), free(s.out), free(s.ex), free(s.w), free(s.fp_lp), free(s.fp_h), free(s.lq), free(s.lf), free(s.lev), free(s.sc), free(s.zz),
        free(s.H);
    for (int i = 0; i < N_MOD; i++) free(s.mask[i]);
    free(h0), free(snap), free(next), free(gu), free(dn), free(qgu), free(qdn), free(xr), free(wr), free(rows), free(h2), free(act), free(y),
        free(yq), free(affected), free(ovrows);
    free(L.dt), free(L.dv), free(L.da), free(L.cnt_t), free(L.cnt_v), free(L.fallback);
    return rc;
}
