/* denoise.h — the vision-frequency denoising of MODE: which image tokens are *key* (per sample and
 * layer, the top ceil(r*n) image tokens by text-to-vision attention score) and the expert
 * selection counts per layer, expert and token class that mode-vis-denoise writes as `freq`.
 *
 * Classes: text (every non-image token), vision (every image token), vision_key, vision_redundant
 * (image tokens not key) and all tokens. For each class and expert: count = (token, selected
 * expert) pairs, weight = sum of those pairs' routing weights, prob = sum of those pairs' router
 * probabilities before the top-k renormalisation (only when every trace record carries them:
 * traces older than the field do not), and per class the token total.
 *
 * Methods (ablations): attention (the paper's), random (a seeded uniform choice of the same
 * number of tokens, reproducible per sample and layer whatever the order of the input), none
 * (every image token is key).
 */
#ifndef MODE_DENOISE_H
#define MODE_DENOISE_H

#include "trace.h"

enum mode_freq_class {
    MODE_CLS_TEXT = 0,
    MODE_CLS_VISION,
    MODE_CLS_KEY,
    MODE_CLS_REDUNDANT,
    MODE_CLS_ALL,
    MODE_CLS_COUNT
};

extern const char *const mode_freq_class_name[MODE_CLS_COUNT]; /* "text", "vision", "vision_key", ... */

enum mode_denoise_method { MODE_DENOISE_ATTENTION = 0, MODE_DENOISE_RANDOM, MODE_DENOISE_NONE };

/* Parses "attention", "random", "none"; -1 otherwise. */
int mode_denoise_method_parse(const char *s);
const char *mode_denoise_method_name(enum mode_denoise_method m);

/* Number of key tokens among n: ceil(ratio * n) (at most n). */
int64_t mode_denoise_n_key(double ratio, int64_t n);

/* keep (n_img) for one trace record. With attention: a record without scores is a data error;
 * *boundary_tie is set when the last key token's score equals the first redundant one's (the
 * choice between them is arbitrary: the lower token index wins). */
int mode_denoise_keep(const struct mode_trace_rec *t, enum mode_denoise_method method, double ratio, uint64_t seed,
                      uint8_t *keep, bool *boundary_tie, struct mode_err *err);

/* Counting tables for every layer index up to n_layer and every expert. */
struct mode_freq_table {
    int n_layer, n_expert;
    int64_t *count;  /* [layer][class][expert] */
    double *weight;  /* [layer][class][expert] */
    double *prob;    /* [layer][class][expert] */
    int64_t without_probs; /* records added that had no probs: prob is then incomplete */
    int64_t *tokens; /* [layer][class] */
    bool *seen;      /* [layer]: a record of that layer was added */
};

int mode_freq_init(struct mode_freq_table *f, int n_layer, int n_expert, struct mode_err *err);
void mode_freq_free(struct mode_freq_table *f);
/* Adds a trace record; keep (n_img) marks its key image tokens. MODE_EDATA when its layer or
 * expert ids do not fit the table. */
int mode_freq_add(struct mode_freq_table *f, const struct mode_trace_rec *t, const uint8_t *keep, const struct mode_rec *where,
                  struct mode_err *err);

#endif
