/* trace.h — the `trace` and `keep` records (mode-stream(5)): per sample and MoE layer, the
 * experts the router chose for each token, their routing weights and their router probabilities,
 * and the text-to-vision attention score of each image token (trace, written by
 * mode-route-trace); which image tokens are key (keep, written by mode-vis-denoise for
 * mode-sensitivity).
 *
 * weights are what the experts' outputs are multiplied by (renormalised over the top-k when the
 * model does); probs are the router's softmax probabilities of the same experts before that
 * renormalisation (MC-MoE's activation weight). Traces written before probs existed have none:
 * has_probs is false.
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
    bool has_probs;
    struct mode_tensor probs;    /* f32 (n_tok, k), each in [0, 1] */
    bool has_attn;
    struct mode_tensor attn;     /* f32 (n_img), image tokens in token order */
    bool has_logits;
    struct mode_tensor logits;   /* f32 (n_tok, n_expert) */
};

int mode_trace_parse(const struct mode_rec *r, struct mode_trace_rec *t, struct mode_err *err);
/* attn may be NULL when the sample has no image token; probs NULL to leave them out; logits NULL
 * when not kept. */
void mode_trace_pack(struct mode_mp *b, int64_t sample, const char *id, int layer, int64_t n_tok, int k, int n_expert,
                     const uint8_t *modality, const int32_t *experts, const float *weights, const float *probs, const float *attn,
                     int64_t n_img, const float *logits);

/* probs (n_tok, k): softmax over the n_expert router logits of each token (n_tok, n_expert),
 * computed in double, taken at the token's selected experts (n_tok, k). An expert id outside
 * 0..n_expert-1 gets 0. */
void mode_trace_probs(const float *logits, int64_t n_tok, int n_expert, const int32_t *experts, int k, float *probs);

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
float mode_trace_prob(const struct mode_trace_rec *t, int64_t tok, int j); /* has_probs only */
float mode_trace_attn(const struct mode_trace_rec *t, int64_t img);

#endif
