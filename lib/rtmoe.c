/* rtmoe.c — packed MoE layers of the runtime on the GPU (rtmoe.h). */
#include "rtmoe.h"

#include "../kernels/mode_cuda.h"
#include "bench.h"
#include "gptqpack.h"
#include "moe.h"

#include <stdlib.h>
#include <string.h>

struct dev_layer {
    bool staged, ok; /* ok: the kernels take it */
    struct mode_qmoe_layer L;
    void *qw, *qz, *sc, *off, *bits;
};

struct mode_rtmoe {
    const struct mode_model *m;
    struct dev_layer *layers; /* (n_layer) */
    /* per call, grown as needed */
    void *x, *ex, *w, *out, *act, *order, *slot, *work, *gu, *dn;
    size_t cap_rows, cap_work;
    int32_t *h_order, *h_slot;
    int64_t *h_start;
};

int mode_rtmoe_init(struct mode_rtmoe **g, const struct mode_model *m, struct mode_err *err)
{
    *g = NULL;
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    struct mode_rtmoe *x = calloc(1, sizeof *x);
    if (!x || !(x->layers = calloc((size_t)m->cfg.text.n_layer, sizeof *x->layers)) ||
        !(x->h_start = malloc(sizeof *x->h_start * (size_t)(m->cfg.text.n_expert + 1)))) {
        if (x) free(x->layers);
        free(x);
        return mode_err_oom(err, sizeof *x, "the GPU runtime");
    }
    x->m = m;
    *g = x;
    return MODE_OK;
}

static void layer_free(struct dev_layer *d)
{
    mode_cuda_free(d->qw), mode_cuda_free(d->qz), mode_cuda_free(d->sc), mode_cuda_free(d->off), mode_cuda_free(d->bits);
    memset(d, 0, sizeof *d);
}

void mode_rtmoe_free(struct mode_rtmoe *g)
{
    if (!g) return;
    for (int l = 0; g->layers && l < g->m->cfg.text.n_layer; l++) layer_free(&g->layers[l]);
    mode_cuda_free(g->x), mode_cuda_free(g->ex), mode_cuda_free(g->w), mode_cuda_free(g->out), mode_cuda_free(g->act), mode_cuda_free(g->order),
        mode_cuda_free(g->slot), mode_cuda_free(g->work), mode_cuda_free(g->gu), mode_cuda_free(g->dn);
    free(g->h_order), free(g->h_slot), free(g->h_start), free(g->layers), free(g);
}

/* the group size of q when its g_idx is in group order (0 otherwise) */
static int64_t plain_group(const struct mode_qproj *q)
{
    const int64_t gs = q->k / q->g;
    int32_t v;
    for (int64_t c = 0; c < q->k; c++) {
        memcpy(&v, (const char *)q->g_idx->data + 4 * c, 4);
        if (v != c / gs) return 0;
    }
    return gs;
}

void mode_rtmoe_host_free(struct mode_rtmoe_host *h)
{
    free(h->qw), free(h->qz), free(h->sc), free(h->off), free(h->bits);
    memset(h, 0, sizeof *h);
}

int mode_rtmoe_stage(const struct mode_model *m, int l, struct mode_rtmoe_host *h, struct mode_err *err)
{
    memset(h, 0, sizeof *h);
    const struct mode_layer_w *w = &m->layers[l];
    const int E = m->cfg.text.n_expert;
    const int64_t D = m->cfg.text.n_embd, I = m->cfg.text.n_ff_exp;
    if (!w->qexp || D % 32 || I % 32) return MODE_OK;
    int64_t grp[2] = {0, 0}; /* gate/up's, down's */
    h->bits = malloc((size_t)E);
    h->off = malloc(sizeof *h->off * (size_t)E * 9);
    if (!h->bits || !h->off) {
        mode_rtmoe_host_free(h);
        return mode_err_oom(err, sizeof *h->off * (size_t)E * 9, "a layer's offsets");
    }
    bool ok = true;
    for (int e = 0; e < E && ok; e++) {
        h->bits[e] = (uint8_t)w->qexp[e * 3].bits;
        for (int p = 0; p < 3 && ok; p++) {
            const struct mode_qproj *q = &w->qexp[e * 3 + p];
            int64_t *o = h->off + e * 9 + p * 3;
            o[0] = (int64_t)h->n_qw, o[1] = (int64_t)h->n_qz, o[2] = (int64_t)h->n_sc;
            if (q->bits != h->bits[e]) ok = false;
            if (!ok || q->bits == 16) {
                h->n_qw += (size_t)(q->k / 2 * q->n);
                continue;
            }
            const int64_t gs = plain_group(q);
            int64_t *want = &grp[p == 2];
            if (!gs || gs % 32 || (*want && *want != gs)) ok = false;
            *want = gs;
            h->n_qw += (size_t)(q->k * q->bits / 32 * q->n), h->n_qz += (size_t)(q->g * q->n * q->bits / 32), h->n_sc += (size_t)(q->g * q->n);
        }
    }
    if (!ok) {
        mode_rtmoe_host_free(h);
        return MODE_OK;
    }
    if (!grp[0]) grp[0] = 32; /* every expert bf16: any group the kernels take */
    if (!grp[1]) grp[1] = 32;
    int rc = MODE_OK;
    h->qw = malloc(4 * (h->n_qw ? h->n_qw : 1)), h->qz = malloc(4 * (h->n_qz ? h->n_qz : 1)), h->sc = malloc(2 * (h->n_sc ? h->n_sc : 1));
    float *zf = malloc(sizeof *zf * (size_t)(D * I)), *wf = malloc(sizeof *wf * (size_t)(D * I));
    if (!h->qw || !h->qz || !h->sc || !zf || !wf) rc = mode_err_oom(err, 4 * h->n_qw, "staging a layer for the GPU");
    for (int e = 0; !rc && e < E; e++)
        for (int p = 0; p < 3 && !rc; p++) {
            const struct mode_qproj *q = &w->qexp[e * 3 + p];
            const int64_t *o = h->off + e * 9 + p * 3;
            if (q->bits == 16) { /* bf16 pairs along k */
                if (mode_convert_ref(q->weight->dtype, q->weight->data, (size_t)(q->n * q->k), wf)) {
                    rc = mode_err_set(err, MODE_EDATA, "%s: tensor '%s': dtype %s", m->dir, q->weight->name, mode_dtype_st_name(q->weight->dtype));
                    break;
                }
                uint32_t *dst = h->qw + o[0];
                for (int64_t c = 0; c < q->k / 2; c++)
                    for (int64_t r = 0; r < q->n; r++)
                        dst[c * q->n + r] = (uint32_t)mode_f32_to_bf16(wf[r * q->k + 2 * c]) | (uint32_t)mode_f32_to_bf16(wf[r * q->k + 2 * c + 1]) << 16;
                continue;
            }
            const size_t nz = (size_t)(q->g * q->n * q->bits / 32);
            memcpy(h->qw + o[0], q->qweight->data, 4 * (size_t)(q->k * q->bits / 32 * q->n));
            memcpy(h->sc + o[2], q->scales->data, 2 * (size_t)(q->g * q->n));
            memcpy(h->qz + o[1], q->qzeros->data, 4 * nz);
            /* v1 stores zero - 1: the kernels read zero points as they are */
            if (m->gptq_v1 && (mode_gptq_unpack_qzeros((const int32_t *)h->qz + o[1], q->n, q->g, q->bits, true, zf) ||
                               mode_gptq_pack_qzeros(zf, q->n, q->g, q->bits, false, (int32_t *)h->qz + o[1]) < 0))
                rc = mode_err_oom(err, 4 * (size_t)q->n, "zero points");
        }
    free(zf), free(wf);
    if (rc) {
        mode_rtmoe_host_free(h);
        return rc;
    }
    h->ok = true;
    h->L = (struct mode_qmoe_layer){E, (int)D, (int)I, (int)grp[0], (int)grp[1], h->qw, h->qz, h->sc, h->off, h->bits};
    return MODE_OK;
}

/* layer l staged and uploaded; d->ok false when the kernels cannot take it */
static int stage(struct mode_rtmoe *g, int l, struct dev_layer *d, struct mode_err *err)
{
    d->staged = true;
    struct mode_rtmoe_host h;
    int rc = mode_rtmoe_stage(g->m, l, &h, err);
    if (rc || !h.ok) return rc;
    const int E = h.L.n_expert;
    rc = mode_cuda_malloc(&d->qw, 4 * (h.n_qw ? h.n_qw : 1), err);
    if (!rc) rc = mode_cuda_upload(d->qw, h.qw, 4 * h.n_qw, err);
    if (!rc) rc = mode_cuda_malloc(&d->qz, 4 * (h.n_qz ? h.n_qz : 1), err);
    if (!rc) rc = mode_cuda_upload(d->qz, h.qz, 4 * h.n_qz, err);
    if (!rc) rc = mode_cuda_malloc(&d->sc, 2 * (h.n_sc ? h.n_sc : 1), err);
    if (!rc) rc = mode_cuda_upload(d->sc, h.sc, 2 * h.n_sc, err);
    if (!rc) rc = mode_cuda_malloc(&d->off, sizeof(int64_t) * (size_t)E * 9, err);
    if (!rc) rc = mode_cuda_upload(d->off, h.off, sizeof(int64_t) * (size_t)E * 9, err);
    if (!rc) rc = mode_cuda_malloc(&d->bits, (size_t)E, err);
    if (!rc) rc = mode_cuda_upload(d->bits, h.bits, (size_t)E, err);
    d->L = h.L;
    d->L.qweight = d->qw, d->L.qzeros = d->qz, d->L.scales = d->sc, d->L.off = d->off, d->L.bits = d->bits;
    d->ok = !rc;
    if (rc) {
        layer_free(d);
        d->staged = true;
    }
    mode_rtmoe_host_free(&h);
    return rc;
}

static int grow(void **p, size_t *cap, size_t want, struct mode_err *err)
{
    if (want <= *cap) return MODE_OK;
    mode_cuda_free(*p);
    *p = NULL, *cap = 0;
    int rc = mode_cuda_malloc(p, want, err);
    if (!rc) *cap = want;
    return rc;
}

/* MODE_QMOE_PREFILL=v1: the prefill kernel of qgemm.cu instead of v0 (dequantise, cuBLAS) */
static bool prefill_v1(void)
{
    const char *v = getenv("MODE_QMOE_PREFILL");
    return v && !strcmp(v, "v1");
}

int mode_rtmoe_layer(struct mode_rtmoe *g, int layer, int64_t N, const float *x, const int32_t *experts, const float *weights, float *out,
                     bool *handled, struct mode_err *err)
{
    *handled = false;
    struct dev_layer *d = &g->layers[layer];
    int rc = d->staged ? MODE_OK : stage(g, layer, d, err);
    if (rc || !d->ok || N < 1) return rc;
    if (N > (int64_t)1 << 24) return MODE_OK; /* beyond the kernels' int row counts: the CPU */
    const struct mode_text_config *t = &g->m->cfg.text;
    const int K = t->n_expert_used, E = t->n_expert, T = (int)N;
    const int64_t D = t->n_embd, I = t->n_ff_exp;
    const size_t rows = (size_t)N;
    if (rows > g->cap_rows) { /* per-row buffers */
        size_t c = 0;
        mode_cuda_free(g->x), mode_cuda_free(g->ex), mode_cuda_free(g->w), mode_cuda_free(g->out), mode_cuda_free(g->order), mode_cuda_free(g->slot);
        g->x = g->ex = g->w = g->out = g->order = g->slot = NULL, g->cap_rows = 0;
        free(g->h_order), free(g->h_slot);
        g->h_order = malloc(sizeof *g->h_order * rows * K), g->h_slot = malloc(sizeof *g->h_slot * rows * K);
        if (!g->h_order || !g->h_slot) return mode_err_oom(err, rows * K * 8, "routing");
        if ((rc = grow(&g->x, &c, sizeof(float) * rows * D, err))) return rc;
        c = 0;
        if ((rc = grow(&g->out, &c, sizeof(float) * rows * D, err))) return rc;
        c = 0;
        if ((rc = grow(&g->ex, &c, sizeof(int32_t) * rows * K, err))) return rc;
        c = 0;
        if ((rc = grow(&g->w, &c, sizeof(float) * rows * K, err))) return rc;
        c = 0;
        if ((rc = grow(&g->order, &c, sizeof(int32_t) * rows * K, err))) return rc;
        c = 0;
        if ((rc = grow(&g->slot, &c, sizeof(int32_t) * rows * K, err))) return rc;
        g->cap_rows = rows;
    }
    if ((rc = mode_cuda_upload(g->x, x, sizeof(float) * rows * D, err)) || (rc = mode_cuda_upload(g->w, weights, sizeof(float) * rows * K, err)))
        return rc;
    if (T <= MODE_BENCH_DECODE_MAX) {
        if ((rc = mode_cuda_upload(g->ex, experts, sizeof(int32_t) * rows * K, err)) ||
            (!g->act && (rc = mode_cuda_malloc(&g->act, sizeof(float) * (size_t)MODE_BENCH_DECODE_MAX * K * I, err))))
            return rc;
        rc = mode_qmoe_decode_cuda(&d->L, T, K, g->x, g->ex, g->w, g->act, g->out, NULL, err);
    } else if (prefill_v1()) { /* the packed words straight into tensor-core GEMMs (qgemm.cu) */
        if ((rc = grow(&g->work, &g->cap_work, mode_qmoe_prefill_work_bytes(&d->L, T, K), err)) ||
            (rc = mode_moe_route_sort(experts, T, K, E, g->h_order, g->h_slot, g->h_start, err)) ||
            (rc = mode_cuda_upload(g->order, g->h_order, sizeof(int32_t) * rows * K, err)) ||
            (rc = mode_cuda_upload(g->slot, g->h_slot, sizeof(int32_t) * rows * K, err)))
            return rc;
        const struct mode_moe_route r = {T, K, g->order, g->slot, g->w, g->h_start};
        rc = mode_qmoe_prefill_cuda(&d->L, &r, g->x, g->work, g->out, NULL, err);
    } else {
        struct mode_moe_dense shape = {E, (int)D, (int)I, NULL, NULL};
        if (!g->gu && (rc = mode_cuda_malloc(&g->gu, 2 * (size_t)E * D * 2 * I, err))) return rc;
        if (!g->dn && (rc = mode_cuda_malloc(&g->dn, 2 * (size_t)E * I * D, err))) return rc;
        if ((rc = grow(&g->work, &g->cap_work, mode_moe_work_bytes(&shape, T, K), err)) ||
            (rc = mode_moe_route_sort(experts, T, K, E, g->h_order, g->h_slot, g->h_start, err)) ||
            (rc = mode_cuda_upload(g->order, g->h_order, sizeof(int32_t) * rows * K, err)) ||
            (rc = mode_cuda_upload(g->slot, g->h_slot, sizeof(int32_t) * rows * K, err)) ||
            (rc = mode_qmoe_dequant_cuda(&d->L, g->gu, g->dn, NULL, err)))
            return rc;
        const struct mode_moe_dense dense = {E, (int)D, (int)I, g->gu, g->dn};
        const struct mode_moe_route r = {T, K, g->order, g->slot, g->w, g->h_start};
        rc = mode_moe_bf16_cuda(&dense, &r, g->x, g->work, g->out, NULL, err);
    }
    if (!rc) rc = mode_cuda_sync(err);
    if (!rc) rc = mode_cuda_download(out, g->out, sizeof(float) * rows * D, err);
    if (!rc) *handled = true;
    return rc;
}
