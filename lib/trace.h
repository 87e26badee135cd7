/* trace.h — the `trace` and `keep` records (mode-stream(5)): per sample and MoE layer, the
 * experts the router chose for each token and the text-to-vision attention score of each image
 * token (trace, written by mode-route-trace); which image tokens are key (keep, written by
 * mode-vis-denoise for mode-sensitivity).
 *
 * Parsing checks every field and shape and returns views into the decoded record (valid while
 * it is). Packing builds a record from plain arrays.
 */
#ifndef MODE_TRACE_H
#define MODE_TRACE_H

#include "mp.h"

#include <stdbool.h>

struct mode_trace_rec {
    int64_t sample, layer, n_tok, k, n_img;
    const char *id;
    size_t id_len;
    struct mode_tensor modality; /* u8 (n_tok) */
    struct mode_tensor experts;  /* i32 (n_tok, k) */
    struct mode_tensor weights;  /* f32 (n_tok, k) */
    bool has_attn;
    struct mode_tensor attn;     /* f32 (n_img), image tokens in token order */
    bool has_logits;
    struct mode_tensor logits;   /* f32 (n_tok, n_expert) */
};

int mode_trace_parse(const struct mode_rec *r, struct mode_trace_rec *t, struct mode_err *err);
/* attn may be NULL when the sample has no image token; logits NULL when not kept. */
void mode_trace_pack(struct mode_mp *b, int64_t sample, const char *id, int layer, int64_t n_tok, int k, int n_expert,
                     const uint8_t *modality, const int32_t *experts, const float *weights, const float *attn, int64_t n_img,
                     const float *logits);

struct mode_keep_rec {
    int64_t sample, layer, n_img;
    const char *id;
    size_t id_len;
    struct mode_tensor keep; /* u8 (n_img), 1 = key */
};

int mode_keep_parse(const struct mode_rec *r, struct mode_keep_rec *k, struct mode_err *err);
void mode_keep_pack(struct mode_mp *b, int64_t sample, const char *id, int layer, int64_t n_img, const uint8_t *keep);

/* Element accessors over views of any alignment. */
int32_t mode_trace_expert(const struct mode_trace_rec *t, int64_t tok, int j);
float mode_trace_weight(const struct mode_trace_rec *t, int64_t tok, int j);
float mode_trace_attn(const struct mode_trace_rec *t, int64_t img);

#endif
