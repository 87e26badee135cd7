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
 *
 * Per-record losses (mode-eval --records): mode_eval_record packs the sample in progress (after
 * mode_eval_check, before mode_eval_end) as a map {sample, id, class, image, tokens, nll, exact}.
 * mode_eval_records_load reads such JSON lines back, and mode_eval_bootstrap compares two
 * evaluations of the same records (two checkpoints): the paired bootstrap of the perplexity
 * difference ppl_a − ppl_b over the records of one group (text or answer). Each resample draws
 * n of the group's n records with replacement — the same draws for a and b — and takes
 * exp(Σ nll / Σ tokens) of each; the interval is the 2.5th and 97.5th percentiles of the
 * resampled differences (linear interpolation between order statistics, numpy's default). The
 * draws come from splitmix64 seeded with `seed` (index = next() mod n; the bias is below n/2^64),
 * so a result is reproducible. For answers the exact-match rate difference is resampled alike.
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

/* The sample in progress as one record map: {"sample", "id", "class": "text" | "answer" | "none"
 * (nothing scored), "image": bool, "tokens": scored predictions, "nll": their summed negative
 * log-likelihood (nats), "exact": bool (answers only)}. */
void mode_eval_record(struct mode_mp *b, const struct mode_eval *e, int64_t sample, const char *id);

/* Records read back from JSON lines; owns its strings. */
struct mode_eval_records {
    int64_t n;
    int64_t *sample, *tokens;
    char **id;
    int *cls;        /* MODE_EVAL_TEXT, MODE_EVAL_ANSWER, or -1 (none) */
    bool *exact;
    double *nll;
};
/* MODE_EDATA naming file and line for a line that is not such a record; MODE_ENOINPUT when
 * the file is missing. */
int mode_eval_records_load(const char *path, struct mode_eval_records *r, struct mode_err *err);
void mode_eval_records_free(struct mode_eval_records *r);

struct mode_eval_boot {
    int64_t records, tokens;            /* of the group */
    double ppl_a, ppl_b, diff;          /* on all the group's records; diff = ppl_a − ppl_b */
    double lo, hi;                      /* the 95% interval of the difference */
    double a_lower;                     /* fraction of resamples with ppl_a < ppl_b */
    double em_a, em_b, em_diff, em_lo, em_hi; /* answers: exact-match rates and their difference */
};
/* a and b must hold the same records (sample, id, class and tokens, in order): MODE_EDATA naming
 * the first that differs. A group without records gives records = 0 and NaN elsewhere. */
int mode_eval_bootstrap(const struct mode_eval_records *a, const struct mode_eval_records *b, int cls, int resamples, uint64_t seed,
                        struct mode_eval_boot *out, struct mode_err *err);

#endif
