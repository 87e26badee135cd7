/* trace.c — trace and keep records: parse with checks, pack (trace.h). */
#include "trace.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int fail(const struct mode_rec *r, struct mode_err *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(const struct mode_rec *r, struct mode_err *err, const char *fmt, ...)
{
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return mode_err_set(err, MODE_EDATA, "%s: %s: %s", r->stream ? r->stream : "<stream>", r->what ? r->what : "record", m);
}

int32_t mode_trace_expert(const struct mode_trace_rec *t, int64_t tok, int j)
{
    int32_t v;
    memcpy(&v, (const char *)t->experts.data + 4 * (tok * t->k + j), 4);
    return v;
}

float mode_trace_weight(const struct mode_trace_rec *t, int64_t tok, int j)
{
    float v;
    memcpy(&v, (const char *)t->weights.data + 4 * (tok * t->k + j), 4);
    return v;
}

float mode_trace_prob(const struct mode_trace_rec *t, int64_t tok, int j)
{
    float v;
    memcpy(&v, (const char *)t->probs.data + 4 * (tok * t->k + j), 4);
    return v;
}

void mode_trace_probs(const float *logits, int64_t n_tok, int n_expert, const int32_t *experts, int k, float *probs)
{
    for (int64_t i = 0; i < n_tok; i++) {
        const float *l = logits + i * n_expert;
        double mx = l[0], sum = 0;
        for (int e = 1; e < n_expert; e++) mx = l[e] > mx ? l[e] : mx;
        for (int e = 0; e < n_expert; e++) sum += exp((double)l[e] - mx);
        for (int j = 0; j < k; j++) {
            const int32_t e = experts[i * k + j];
            probs[i * k + j] = e >= 0 && e < n_expert ? (float)(exp((double)l[e] - mx) / sum) : 0.0f;
        }
    }
}

float mode_trace_attn(const struct mode_trace_rec *t, int64_t img)
{
    float v;
    memcpy(&v, (const char *)t->attn.data + 4 * img, 4);
    return v;
}

static int ids_and_layer(const struct mode_rec *r, int64_t *sample, int64_t *layer, const char **id, size_t *id_len,
                         struct mode_err *err)
{
    int rc;
    if ((rc = mode_rec_int(r, "sample", true, sample, err)) || (rc = mode_rec_int(r, "layer", true, layer, err)) ||
        (rc = mode_rec_str(r, "id", true, id, id_len, err)))
        return rc;
    if (*sample < 0) return fail(r, err, "sample index %" PRId64 " is negative", *sample);
    if (*layer < 0 || *layer > 4096) return fail(r, err, "layer %" PRId64 " is out of range", *layer);
    return MODE_OK;
}

int mode_trace_parse(const struct mode_rec *r, struct mode_trace_rec *t, struct mode_err *err)
{
    memset(t, 0, sizeof *t);
    int rc = ids_and_layer(r, &t->sample, &t->layer, &t->id, &t->id_len, err);
    if (rc) return rc;
    if ((rc = mode_rec_tensor(r, "modality", true, &t->modality, MODE_U8, 1, NULL, err))) return rc;
    t->n_tok = t->modality.shape[0];
    int64_t d2[2] = {t->n_tok, -1};
    if ((rc = mode_rec_tensor(r, "experts", true, &t->experts, MODE_I32, 2, d2, err))) return rc;
    t->k = t->experts.shape[1];
    if (t->k < 1) return fail(r, err, "experts has no column");
    d2[1] = t->k;
    if ((rc = mode_rec_tensor(r, "weights", true, &t->weights, MODE_F32, 2, d2, err))) return rc;
    const uint8_t *mod = t->modality.data;
    for (int64_t i = 0; i < t->n_tok; i++) {
        if (mod[i] > 2) return fail(r, err, "modality[%" PRId64 "] is %u", i, mod[i]);
        t->n_img += mod[i] == 1;
        for (int j = 0; j < t->k; j++) {
            int32_t e = mode_trace_expert(t, i, j);
            float w = mode_trace_weight(t, i, j);
            if (e < 0 || e >= 4096) return fail(r, err, "experts[%" PRId64 "][%d] is %d", i, j, e);
            if (!isfinite(w)) return fail(r, err, "weights[%" PRId64 "][%d] is not finite", i, j);
        }
    }
    t->has_probs = mode_mp_get(r->obj, "probs") != NULL;
    if (t->has_probs) {
        if ((rc = mode_rec_tensor(r, "probs", true, &t->probs, MODE_F32, 2, d2, err))) return rc;
        for (int64_t i = 0; i < t->n_tok; i++)
            for (int j = 0; j < t->k; j++) {
                const float p = mode_trace_prob(t, i, j);
                if (!(p >= 0 && p <= 1)) return fail(r, err, "probs[%" PRId64 "][%d] is %g, not a probability", i, j, (double)p);
            }
    }
    t->has_attn = mode_mp_get(r->obj, "attn") != NULL;
    if (t->has_attn) {
        int64_t d1[1] = {t->n_img};
        if ((rc = mode_rec_tensor(r, "attn", true, &t->attn, MODE_F32, 1, d1, err))) return rc;
        for (int64_t i = 0; i < t->n_img; i++)
            if (!isfinite(mode_trace_attn(t, i))) return fail(r, err, "attn[%" PRId64 "] is not finite", i);
    }
    t->has_logits = mode_mp_get(r->obj, "router_logits") != NULL;
    if (t->has_logits) {
        int64_t dl[2] = {t->n_tok, -1};
        if ((rc = mode_rec_tensor(r, "router_logits", true, &t->logits, MODE_F32, 2, dl, err))) return rc;
    }
    return MODE_OK;
}

void mode_trace_pack(struct mode_mp *b, int64_t sample, const char *id, int layer, int64_t n_tok, int k, int n_expert,
                     const uint8_t *modality, const int32_t *experts, const float *weights, const float *probs, const float *attn,
                     int64_t n_img, const float *logits)
{
    int64_t d1[1] = {n_tok}, dk[2] = {n_tok, k}, de[2] = {n_tok, n_expert}, di[1] = {n_img};
    mode_mp_map_open(b);
    mode_mp_key(b, "sample");
    mode_mp_int(b, sample);
    mode_mp_key(b, "id");
    mode_mp_str(b, id);
    mode_mp_key(b, "layer");
    mode_mp_int(b, layer);
    mode_mp_key(b, "modality");
    mode_mp_tensor(b, MODE_U8, 1, d1, modality);
    mode_mp_key(b, "experts");
    mode_mp_tensor(b, MODE_I32, 2, dk, experts);
    mode_mp_key(b, "weights");
    mode_mp_tensor(b, MODE_F32, 2, dk, weights);
    if (probs) {
        mode_mp_key(b, "probs");
        mode_mp_tensor(b, MODE_F32, 2, dk, probs);
    }
    if (attn) {
        mode_mp_key(b, "attn");
        mode_mp_tensor(b, MODE_F32, 1, di, attn);
    }
    if (logits) {
        mode_mp_key(b, "router_logits");
        mode_mp_tensor(b, MODE_F32, 2, de, logits);
    }
    mode_mp_close(b);
}

int mode_keep_parse(const struct mode_rec *r, struct mode_keep_rec *k, struct mode_err *err)
{
    memset(k, 0, sizeof *k);
    int rc = ids_and_layer(r, &k->sample, &k->layer, &k->id, &k->id_len, err);
    if (rc) return rc;
    if ((rc = mode_rec_tensor(r, "keep", true, &k->keep, MODE_U8, 1, NULL, err))) return rc;
    k->n_img = k->keep.shape[0];
    const uint8_t *p = k->keep.data;
    for (int64_t i = 0; i < k->n_img; i++)
        if (p[i] > 1) return fail(r, err, "keep[%" PRId64 "] is %u, not 0 or 1", i, p[i]);
    return MODE_OK;
}

void mode_keep_pack(struct mode_mp *b, int64_t sample, const char *id, int layer, int64_t n_img, const uint8_t *keep)
{
    int64_t d[1] = {n_img};
    mode_mp_map_open(b);
    mode_mp_key(b, "sample");
    mode_mp_int(b, sample);
    mode_mp_key(b, "id");
    mode_mp_str(b, id);
    mode_mp_key(b, "layer");
    mode_mp_int(b, layer);
    mode_mp_key(b, "keep");
    mode_mp_tensor(b, MODE_U8, 1, d, keep);
    mode_mp_close(b);
}
