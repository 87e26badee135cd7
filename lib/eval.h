/* eval.h — evaluation metrics of mode-eval: perplexity and exact match from next-token logits.
 *
 * A sample's scored predictions are those of tokens i with score[i] = 1 (predicted from row i-1).
 * A record whose every prediction is scored is a *text* record (raw text, e.g. glosses); a record
 * with a score mask is an *answer* record (a chat answer, e.g. a caption). For each group:
 * records, scored tokens, summed negative log-likelihood (natural log, accumulated in double),
 * perplexity = exp(nll / tokens); for answers also exact match = every scored token is the argmax
 * of its row (first maximum on ties, as torch.argmax). Each group is also split by the record's
 * modality: records with image tokens and records without.
 *
 * Use: mode_eval_begin(sample) -> mode_eval_rows(...) over all rows in order -> mode_eval_check()
 * -> mode_eval_end().
 *
 * Non-finite results: finite weights can still overflow in the forward pass (a logit becomes Inf
 * or NaN), and finite logits can give a perplexity beyond a double (a mean NLL above
 * log(DBL_MAX) = 709.78 nats). mode_eval_rows notes the first non-finite logit of a scored row;
 * mode_eval_check then refuses the sample (MODE_EDATA, the row and vocabulary entry named) and
 * also a sample whose own perplexity overflows. A group's perplexity is a weighted mean of its
 * samples' mean NLLs, so when every sample passed the check, every reported perplexity is finite.
 */
#ifndef MODE_EVAL_H
#define MODE_EVAL_H

#include "mp.h"

enum { MODE_EVAL_TEXT = 0, MODE_EVAL_ANSWER = 1 };
enum { MODE_EVAL_NO_IMAGE = 0, MODE_EVAL_IMAGE = 1 };

struct mode_eval_group {
    int64_t records, tokens, exact;
    double nll;
};

struct mode_eval {
    struct mode_eval_group g[2][2]; /* [modality][text | answer] */
    int64_t samples, unscored, tokens, image_tokens;
    /* the sample in progress */
    int cls, mod;
    bool all_argmax;
    double nll;
    int64_t scored;
    int64_t bad_row, bad_vocab; /* its first non-finite logit in a scored row (bad_row -1: none) */
    float bad_logit;
};

void mode_eval_init(struct mode_eval *e);
/* n_tok tokens of the sample, its score mask and whether it has image tokens */
void mode_eval_begin(struct mode_eval *e, int64_t n_tok, const uint8_t *score, int64_t n_image_tokens);
/* logits rows [r0, r0 + n) of the sample, (n, n_vocab); tokens: the sample's ids */
void mode_eval_rows(struct mode_eval *e, const float *logits, int64_t r0, int64_t n, int64_t n_vocab, const int32_t *tokens,
                    int64_t n_tok, const uint8_t *score);
/* MODE_EDATA when the sample in progress had a non-finite logit in a scored row or its perplexity
 * overflows: "the logits predicting token 7 hold nan (vocabulary entry 12)". The caller names the
 * sample. */
int mode_eval_check(const struct mode_eval *e, struct mode_err *err);
void mode_eval_end(struct mode_eval *e);
/* {"text": {...}, "answer": {...}, "by_modality": {...}, "samples", "tokens", ...} as a map */
void mode_eval_pack(struct mode_mp *b, const struct mode_eval *e);

#endif
