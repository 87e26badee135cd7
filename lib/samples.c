/* samples.c — the samples record: parse, check against a model, write, pixels to patches (samples.h). */
#include "samples.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rec_fail(const struct mode_rec *r, struct mode_err *err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int rec_fail(const struct mode_rec *r, struct mode_err *err, const char *fmt, ...)
{
    char m[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return mode_err_set(err, MODE_EDATA, "%s: %s: %s", r->stream ? r->stream : "<stream>", r->what ? r->what : "record", m);
}

int32_t mode_sample_token(const struct mode_sample *s, int64_t i)
{
    int32_t v;
    memcpy(&v, (const char *)s->tokens.data + 4 * i, 4);
    return v;
}

uint8_t mode_sample_modality(const struct mode_sample *s, int64_t i) { return ((const uint8_t *)s->modality.data)[i]; }
uint8_t mode_sample_score(const struct mode_sample *s, int64_t i) { return ((const uint8_t *)s->score.data)[i]; }

static int parse_image(const struct mode_rec *r, uint32_t k, const msgpack_object *o, struct mode_image *im,
                       struct mode_err *err)
{
    if (o->type != MSGPACK_OBJECT_MAP) return rec_fail(r, err, "images[%u] is not a map", k);
    char what[128];
    snprintf(what, sizeof what, "%s: images[%u]", r->what ? r->what : "record", k);
    struct mode_rec ir = {o, r->stream, what};
    const msgpack_object *g = NULL;
    int rc = mode_rec_array(&ir, "grid", true, &g, err);
    if (rc) return rc;
    if (g->via.array.size != 3) return rec_fail(r, err, "images[%u].grid has %u values, expected [t, h, w]", k, g->via.array.size);
    for (int i = 0; i < 3; i++) {
        const msgpack_object *e = &g->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 == 0 || e->via.u64 > (1u << 20))
            return rec_fail(r, err, "images[%u].grid[%d] is not a positive integer (at most 2^20)", k, i);
        im->grid[i] = (int64_t)e->via.u64;
    }
    bool px = mode_mp_get(o, "pixels") != NULL, pv = mode_mp_get(o, "pixel_values") != NULL, em = mode_mp_get(o, "embeds") != NULL;
    if (px + pv + em != 1) return rec_fail(r, err, "images[%u] needs exactly one of 'pixels', 'pixel_values' and 'embeds'", k);
    im->has_pixels = px, im->has_embeds = em;
    if (em) {
        if ((rc = mode_rec_tensor(&ir, "embeds", true, &im->embeds, MODE_F32, 2, NULL, err)) ||
            (rc = mode_rec_tensor(&ir, "deepstack", true, &im->deepstack, MODE_F32, 3, NULL, err)))
            return rc;
    } else if (px) {
        if ((rc = mode_rec_tensor(&ir, "pixels", true, &im->pixels, MODE_U8, 4, NULL, err))) return rc;
    } else {
        if ((rc = mode_rec_tensor(&ir, "pixel_values", true, &im->pixel_values, MODE_DTYPE_INVALID, 2, NULL, err))) return rc;
        enum mode_dtype t = im->pixel_values.dtype;
        if (t != MODE_F32 && t != MODE_BF16 && t != MODE_F16)
            return rec_fail(r, err, "images[%u].pixel_values has dtype %s, expected f32, bf16 or f16", k, mode_dtype_name(t));
    }
    im->source = NULL;
    im->source_len = 0;
    return mode_rec_str(&ir, "source", false, &im->source, &im->source_len, err);
}

int mode_sample_parse(const struct mode_rec *r, struct mode_sample *s, struct mode_err *err)
{
    memset(s, 0, sizeof *s);
    int rc;
    if ((rc = mode_rec_str(r, "id", true, &s->id, &s->id_len, err))) return rc;
    if ((rc = mode_rec_tensor(r, "tokens", true, &s->tokens, MODE_I32, 1, NULL, err))) return rc;
    s->n_tok = s->tokens.shape[0];
    if (s->n_tok < 1) return rec_fail(r, err, "sample '%.*s' has no tokens", (int)s->id_len, s->id);
    if (s->n_tok > MODE_SAMPLE_MAX_TOKENS)
        return rec_fail(r, err, "sample '%.*s' has %" PRId64 " tokens, more than the limit of %" PRId64, (int)s->id_len, s->id, s->n_tok,
                        MODE_SAMPLE_MAX_TOKENS);
    int64_t d[1] = {s->n_tok};
    if ((rc = mode_rec_tensor(r, "modality", true, &s->modality, MODE_U8, 1, d, err)) ||
        (rc = mode_rec_tensor(r, "score", true, &s->score, MODE_U8, 1, d, err)))
        return rc;
    for (int64_t i = 0; i < s->n_tok; i++) {
        if (mode_sample_modality(s, i) > MODE_MOD_VIDEO)
            return rec_fail(r, err, "modality[%" PRId64 "] is %u (0 text, 1 image, 2 video)", i, mode_sample_modality(s, i));
        if (mode_sample_score(s, i) > 1) return rec_fail(r, err, "score[%" PRId64 "] is %u, not 0 or 1", i, mode_sample_score(s, i));
    }
    if (mode_sample_score(s, 0)) return rec_fail(r, err, "score[0] is 1: the first token has no prediction");
    const msgpack_object *ims = NULL;
    if ((rc = mode_rec_array(r, "images", false, &ims, err))) return rc;
    if (ims && ims->via.array.size) {
        s->images = calloc(ims->via.array.size, sizeof *s->images);
        if (!s->images) return mode_err_oom(err, ims->via.array.size * sizeof *s->images, "images");
        for (uint32_t k = 0; k < ims->via.array.size; k++) {
            if ((rc = parse_image(r, k, &ims->via.array.ptr[k], &s->images[k], err))) {
                mode_sample_free(s);
                return rc;
            }
            s->n_images++;
        }
    }
    return MODE_OK;
}

void mode_sample_free(struct mode_sample *s)
{
    free(s->images);
    s->images = NULL;
    s->n_images = 0;
}

void mode_image_patch_dims(const struct mode_image *im, const struct mode_vision_config *v, int64_t *rows,
                           int64_t *cols)
{
    *rows = im->grid[0] * im->grid[1] * im->grid[2];
    *cols = (int64_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
}

int mode_sample_check(const struct mode_sample *s, const struct mode_config *c, const struct mode_rec *r,
                      struct mode_err *err)
{
    const struct mode_vision_config *v = &c->vision;
    int m2 = v->merge_size * v->merge_size;
    int k = 0;        /* current image */
    int64_t need = 0; /* pads the current image still needs */
    for (int64_t i = 0; i < s->n_tok; i++) {
        int32_t t = mode_sample_token(s, i);
        uint8_t mod = mode_sample_modality(s, i);
        if (t < 0 || t >= c->text.n_vocab)
            return rec_fail(r, err, "token %" PRId64 " is id %d, outside the vocabulary of %d", i, t, c->text.n_vocab);
        bool pad = t == c->image_token_id;
        if (pad != (mod == MODE_MOD_IMAGE))
            return rec_fail(r, err, "token %" PRId64 " (id %d) has modality %u, but image pads (id %d) and only they are image tokens", i,
                            t, mod, c->image_token_id);
        if (mod == MODE_MOD_VIDEO) return rec_fail(r, err, "token %" PRId64 ": video tokens are not supported yet", i);
        if (pad) {
            if (need == 0) {
                if (k >= s->n_images)
                    return rec_fail(r, err, "image pads at token %" PRId64 " but only %d images in the record", i, s->n_images);
                const struct mode_image *im = &s->images[k++];
                if (im->grid[1] % v->merge_size || im->grid[2] % v->merge_size)
                    return rec_fail(r, err, "images[%d].grid %" PRId64 "x%" PRId64 " is not a multiple of the merge size %d", k - 1,
                                    im->grid[1], im->grid[2], v->merge_size);
                need = im->grid[0] * im->grid[1] * im->grid[2] / m2;
            }
            need--;
        } else if (need)
            return rec_fail(r, err, "image %d needs %" PRId64 " more pad tokens before token %" PRId64, k - 1, need, i);
    }
    if (need) return rec_fail(r, err, "image %d needs %" PRId64 " more pad tokens at the end", k - 1, need);
    if (k != s->n_images) return rec_fail(r, err, "%d images but pads for %d", s->n_images, k);
    for (int j = 0; j < s->n_images; j++) {
        const struct mode_image *im = &s->images[j];
        if (im->has_embeds) {
            const int64_t n = im->grid[0] * im->grid[1] * im->grid[2] / m2, D = c->text.n_embd;
            const int64_t *e = im->embeds.shape, *d = im->deepstack.shape;
            if (e[0] != n || e[1] != D)
                return rec_fail(r, err, "images[%d].embeds has shape (%" PRId64 ", %" PRId64 "), expected (%" PRId64 ", %" PRId64 ")", j, e[0], e[1],
                                n, D);
            if (d[0] != v->n_deepstack || d[1] != n || d[2] != D)
                return rec_fail(r, err,
                                "images[%d].deepstack has shape (%" PRId64 ", %" PRId64 ", %" PRId64 "), expected (%d, %" PRId64 ", %" PRId64 ")",
                                j, d[0], d[1], d[2], v->n_deepstack, n, D);
        } else if (im->has_pixels) {
            const int64_t *sh = im->pixels.shape;
            /* F frames make ceil(F / temporal_patch) temporal patches (the last frame repeats) */
            if (sh[0] < 1 || (sh[0] + v->temporal_patch_size - 1) / v->temporal_patch_size != im->grid[0] ||
                sh[1] != im->grid[1] * v->patch_size ||
                sh[2] != im->grid[2] * v->patch_size || sh[3] != v->in_channels)
                return rec_fail(r, err, "images[%d].pixels has shape (%" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
                                ") for grid [%" PRId64 ", %" PRId64 ", %" PRId64 "] and patch %d",
                                j, sh[0], sh[1], sh[2], sh[3], im->grid[0], im->grid[1], im->grid[2], v->patch_size);
        } else {
            int64_t rows, cols;
            mode_image_patch_dims(im, v, &rows, &cols);
            if (im->pixel_values.shape[0] != rows || im->pixel_values.shape[1] != cols)
                return rec_fail(r, err, "images[%d].pixel_values has shape (%" PRId64 ", %" PRId64 "), expected (%" PRId64 ", %" PRId64 ")",
                                j, im->pixel_values.shape[0], im->pixel_values.shape[1], rows, cols);
        }
    }
    return MODE_OK;
}

void mode_sample_pack(struct mode_mp *b, const struct mode_sample_in *s)
{
    int64_t n[1] = {s->n_tok};
    mode_mp_map_open(b);
    mode_mp_key(b, "id");
    mode_mp_str(b, s->id);
    mode_mp_key(b, "tokens");
    mode_mp_tensor(b, MODE_I32, 1, n, s->tokens);
    mode_mp_key(b, "modality");
    mode_mp_tensor(b, MODE_U8, 1, n, s->modality);
    mode_mp_key(b, "score");
    mode_mp_tensor(b, MODE_U8, 1, n, s->score);
    mode_mp_key(b, "images");
    mode_mp_array_open(b);
    for (int i = 0; i < s->n_images; i++) {
        const struct mode_image_in *im = &s->images[i];
        mode_mp_map_open(b);
        mode_mp_key(b, "grid");
        mode_mp_array_open(b);
        for (int d = 0; d < 3; d++) mode_mp_int(b, im->grid[d]);
        mode_mp_close(b);
        mode_mp_key(b, "pixels");
        int64_t sh[4] = {im->frames, im->height, im->width, im->channels};
        mode_mp_tensor(b, MODE_U8, 4, sh, im->pixels);
        if (im->source) {
            mode_mp_key(b, "source");
            mode_mp_str(b, im->source);
        }
        mode_mp_close(b);
    }
    mode_mp_close(b);
    if (s->text) {
        mode_mp_key(b, "text");
        mode_mp_str(b, s->text);
    }
    mode_mp_close(b);
}

int mode_image_pixel_values(const struct mode_image *im, const struct mode_vision_config *v,
                            const struct mode_preproc *p, float *out, struct mode_err *err)
{
    int64_t rows, cols;
    mode_image_patch_dims(im, v, &rows, &cols);
    if (!im->has_pixels) {
        if (mode_convert_ref(im->pixel_values.dtype, im->pixel_values.data, (size_t)(rows * cols), out))
            return mode_err_set(err, MODE_EDATA, "pixel_values: dtype %s", mode_dtype_name(im->pixel_values.dtype));
        return MODE_OK;
    }
    if (!p) return mode_err_set(err, MODE_EDATA, "8-bit pixels need the model's preprocessor_config.json (mean and std)");
    const int C = v->in_channels, T = v->temporal_patch_size, P = v->patch_size, m = v->merge_size;
    const int64_t gt = im->grid[0], gh = im->grid[1], gw = im->grid[2];
    const int64_t F = im->pixels.shape[0], H = im->pixels.shape[1], W = im->pixels.shape[2];
    const uint8_t *px = im->pixels.data;
    /* per channel: x -> (x - sub) * 1 / div, in f32 as transformers' fast processor computes it */
    float sub[4] = {0}, div[4] = {1, 1, 1, 1};
    for (int c = 0; c < C && c < 4; c++) {
        float mean = (float)p->mean[c < 3 ? c : 2], std = (float)p->std[c < 3 ? c : 2];
        if (p->do_rescale && p->do_normalize) {
            /* rescale folded into normalise: mean and std multiplied by 1/rescale_factor (f32) */
            float inv = (float)(1.0 / p->rescale_factor);
            sub[c] = mean * inv;
            div[c] = std * inv;
        } else if (p->do_normalize) {
            sub[c] = mean;
            div[c] = std;
        }
    }
    const float rescale = (float)p->rescale_factor;
    const bool only_rescale = p->do_rescale && !p->do_normalize;
    int64_t row = 0;
    for (int64_t t = 0; t < gt; t++)
        for (int64_t bh = 0; bh < gh / m; bh++)
            for (int64_t bw = 0; bw < gw / m; bw++)
                for (int mh = 0; mh < m; mh++)
                    for (int mw = 0; mw < m; mw++, row++) {
                        float *o = out + row * cols;
                        for (int c = 0; c < C; c++)
                            for (int tt = 0; tt < T; tt++) {
                                int64_t f = t * T + tt;
                                if (f >= F) f = F - 1; /* the last frame repeats to fill a temporal patch */
                                for (int py = 0; py < P; py++) {
                                    int64_t y = (bh * m + mh) * P + py;
                                    const uint8_t *src = px + ((f * H + y) * W + (bw * m + mw) * P) * C + c;
                                    for (int pxi = 0; pxi < P; pxi++) {
                                        float x = (float)src[(int64_t)pxi * C];
                                        *o++ = only_rescale ? x * rescale : (x - sub[c]) / div[c];
                                    }
                                }
                            }
                    }
    return MODE_OK;
}
