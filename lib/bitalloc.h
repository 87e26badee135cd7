/* bitalloc.h — expert bit allocation: the `freq` and `sens` tables mode-ilp reads, the objective
 * of each method (MODE and its baselines), budgets, the knapsack per layer or global (ilp.h), and
 * the `alloc` record.
 *
 * Methods — the cost of giving expert e of layer l the width b (minimised in sum):
 *   mode              f̄_T(e)·δ_T(e,b) + f̄_K(e)·δ_V(e,b)   f̄_T: text frequency, f̄_K: key-vision frequency
 *   text-vision       f̄_T(e)·δ_T(e,b) + f̄_V(e)·δ_V(e,b)   f̄_V: frequency over all image tokens (no denoising)
 *   freq-total        f̄_A(e)·δ_A(e,b)                      f̄_A: frequency over all tokens, δ_A: modality-blind
 *   freq-text-vision  (½f̄_T(e) + ½f̄_V(e))·δ_A(e,b)         the ablation ladder: modality-decomposed frequency,
 *   freq-text-key     (½f̄_T(e) + ½f̄_K(e))·δ_A(e,b)         then denoised, with the modality-blind δ_A
 *   mcmoe             1000·φ(e)^α·w(e)^β·ε(e,b)^α          MC-MoE's precision_solver.py (ICLR 2025): φ = f̄_A,
 *                                                           w = the expert's summed router probabilities before
 *                                                           renormalisation (freq `prob`, class all) normalised
 *                                                           within the layer, ε = δ_A (mode-sensitivity
 *                                                           --metric mcmoe); α = 1, β = 1.5 by default
 *   sens-only         δ_T(e,b) + δ_V(e,b)                   every expert equally important
 *   rank-all          s(e)·(b_max − b), s = f̄_A            frequency alone (the paper's proof of concept):
 *   rank-text-vision  s = ½f̄_T + ½f̄_V                       the optimum starts every expert at the lowest
 *   rank-text-key     s = ½f̄_T + ½f̄_K                       width and raises the experts of largest s to the
 *   rank-text-redundant s = ½f̄_T + ½f̄_R                     widest first (f̄_R: redundant image tokens)
 *   uniform           every expert the same width (no solve)
 * f̄ are the `freq` stream's per-layer normalised frequencies. δ_A is the sens stream's `all` when
 * present, else the token-weighted mean (n_T·δ_T + n_V·δ_V)/(n_T + n_V) with the layer's counts.
 *
 * Budgets: an average width k over the experts of the scope (equality: Σ b = n·k, which must be an
 * integer total reachable with the candidate widths; mcmoe: MC-MoE's Σ b ≤ ⌊n·k⌋ with at least one
 * expert at each width above the lowest in each program), or a byte budget (≤) on the packed expert
 * tensors, in the GPTQ layout mode-pack writes: for a matrix with K inputs and N outputs at b bits
 * and group g, qweight ⌈K·b/32⌉·N·4 + qzeros (K/g)·⌈N·b/32⌉·4 + scales (K/g)·N·2 + g_idx K·4
 * bytes; an expert is gate and up (K = n_embd, N = n_ff_exp) and down (K = n_ff_exp, N = n_embd).
 * When every width's bytes are affine in b (dimensions multiples of 32), a byte budget is the bit
 * total ⌊(cap − n·c₀)/a⌋ and the knapsack keeps small integer weights; otherwise it runs on bytes.
 * With scope `layer`, a byte budget is split evenly between the layers.
 */
#ifndef MODE_BITALLOC_H
#define MODE_BITALLOC_H

#include "denoise.h"
#include "ilp.h"
#include "stream.h"

#define MODE_ALLOC_MAX_BITS 8

struct mode_alloc_layer {
    int layer;
    bool has_freq, has_sens;
    double *freq;    /* [class][expert] */
    int64_t *count;  /* [class][expert] */
    double *wsum;    /* [class][expert] */
    double *prob;    /* [class][expert]: summed router probabilities; meaningful when has_prob */
    bool has_prob;   /* the freq record had `prob` for every class */
    int64_t tokens[MODE_CLS_COUNT];
    double *dt, *dv, *da; /* [expert][bit], da NULL when the stream has no `all` */
    int64_t tok_text, tok_vision;
};

struct mode_alloc_data {
    int n_expert;  /* 0 until a stream is read */
    int n_bits;    /* the sens stream's widths */
    int bits[MODE_ALLOC_MAX_BITS];
    char metric[16];
    int n_layer;   /* layers present, ascending */
    struct mode_alloc_layer *L;
    bool have_freq, have_sens;
};

void mode_alloc_data_init(struct mode_alloc_data *d);
void mode_alloc_data_free(struct mode_alloc_data *d);
/* Reads the records of a freq / sens stream (its header already read) into d. Layers repeated,
 * expert counts that differ from what d holds, bad shapes: MODE_EDATA naming stream and record. */
int mode_alloc_read_freq(struct mode_alloc_data *d, struct mode_stream_reader *r, struct mode_err *err);
int mode_alloc_read_sens(struct mode_alloc_data *d, struct mode_stream_reader *r, struct mode_err *err);
/* After both: every layer has both (when both were read). */
int mode_alloc_check_layers(const struct mode_alloc_data *d, const char *freq_name, const char *sens_name,
                            struct mode_err *err);

/* Headers of the freq and sens streams come from the same model (arch, config and, when both
 * name them, weights) and the same calibration data (the `inputs` of the samples streams they
 * descend from, when both record them). MODE_EDATA printing both identities otherwise. */
int mode_alloc_check_provenance(const msgpack_object *freq_hdr, const char *freq_name, const msgpack_object *sens_hdr,
                                const char *sens_name, struct mode_err *err);

enum mode_alloc_method {
    MODE_ALLOC_MODE = 0,
    MODE_ALLOC_TEXT_VISION,
    MODE_ALLOC_FREQ_TOTAL,
    MODE_ALLOC_MCMOE,
    MODE_ALLOC_SENS_ONLY,
    MODE_ALLOC_UNIFORM,
    MODE_ALLOC_FREQ_TEXT_VISION,
    MODE_ALLOC_FREQ_TEXT_KEY,
    MODE_ALLOC_RANK_ALL,
    MODE_ALLOC_RANK_TEXT_VISION,
    MODE_ALLOC_RANK_TEXT_KEY,
    MODE_ALLOC_RANK_TEXT_REDUNDANT,
    MODE_ALLOC_N_METHODS
};
int mode_alloc_method_parse(const char *s); /* -1 when unknown */
const char *mode_alloc_method_list(void);   /* "mode, text-vision, ...": for messages */
const char *mode_alloc_method_name(enum mode_alloc_method m);
bool mode_alloc_method_needs_freq(enum mode_alloc_method m);
bool mode_alloc_method_needs_sens(enum mode_alloc_method m);

struct mode_expert_shape {
    int64_t n_embd, n_ff_exp, group; /* 0: unknown (no byte accounting) */
};
/* Bytes of one expert at b bits (see above); -1 when the shape is unknown or the group does not
 * divide an input dimension. */
double mode_alloc_expert_bytes(const struct mode_expert_shape *s, int bits);

struct mode_alloc_opts {
    enum mode_alloc_method method;
    int n_cand;
    int cand[MODE_ALLOC_MAX_BITS]; /* candidate widths, ascending */
    bool global;                   /* scope */
    bool by_bytes;                 /* budget: max_bytes (≤) instead of avg_bits (=) */
    double avg_bits, max_bytes;
    double alpha, beta;            /* mcmoe's exponents */
    double time_limit;             /* seconds per knapsack; 0 none */
    struct mode_expert_shape shape;
};

struct mode_alloc_result {
    int n_layer, n_expert;
    int *layer;     /* (n_layer) layer indices */
    int *bits;      /* (n_layer, n_expert) */
    double *cost;   /* (n_layer, n_expert): the chosen width's coefficient */
    enum mode_mckp_status status; /* the worst over the knapsacks */
    double objective, lp_bound, mip_gap, seconds;
    long nodes;
    double avg_bits, bytes; /* bytes -1 when the shape is unknown */
};

/* The cost table (n_layer, n_expert, n_cand) of opts->method (uniform: zeros when no sens). */
int mode_alloc_costs(const struct mode_alloc_data *d, const struct mode_alloc_opts *o, double *cost, struct mode_err *err);
/* Solves. A budget that cannot be met is MODE_EDATA naming the nearest feasible budgets; a time
 * limit reached before any solution is MODE_EUNAVAILABLE. */
int mode_alloc_solve(const struct mode_alloc_data *d, const struct mode_alloc_opts *o, struct mode_alloc_result *r,
                     struct mode_err *err);
void mode_alloc_result_free(struct mode_alloc_result *r);

/* The alloc record of layer index i of r. */
void mode_alloc_pack(struct mode_mp *b, const struct mode_alloc_result *r, int i);
/* Parses an alloc record: layer and bits (n_expert i32, each 1..16). */
int mode_alloc_parse(const struct mode_rec *rec, int64_t *layer, struct mode_tensor *bits, struct mode_err *err);

#endif
