/* sens.h — per-modality quantization sensitivity of every routed expert (mode-sensitivity).
 *
 * δ_M(e, b): the change of the model's output when only expert e is quantized to b bits and the
 * quantized weights are used only by tokens of modality M (text: every non-image token; vision:
 * the image tokens, or only the key ones when a keep mask is given) — the runtime's expert
 * override with a row mask, so every other token computes exactly as at full precision.
 *
 *   kl     KL(p_fp ‖ p_q) of the next-token distributions at every position of every sample,
 *          averaged over all positions: the layers from e's onward are re-run from the cached
 *          input of e's layer; full-precision log-probabilities are cached (or, when they would
 *          exceed 1 GiB, the final hidden states, and the logits recomputed).
 *   layer  Σ_{t∈M, e∈topk(t)} w_te² ‖y_q(x_t) − y(x_t)‖² / Σ_{t∈M} ‖moe_out_t‖²: the gate-weighted
 *          squared error of the MoE output on modality-M tokens relative to that output's energy,
 *          from the full-precision pass alone (no re-run).
 *   mcmoe  MC-MoE's quantization loss (awareness.py / models/wrapper.py, order_quant, ICLR 2025):
 *          ε(e, b) = Σ over groups of norm_samples consecutive calibration samples (MC-MoE's
 *          calibration batches) of ‖Z − Z_q‖_F, unsquared, where Z (tokens, n_embd) is the MoE
 *          block's output over the group's tokens and Z_q the same with only expert e quantized.
 *          The routing does not change, so Z − Z_q is w_te·(y(x_t) − y_q(x_t)) on the tokens t
 *          that select e (w_te the renormalised routing weight) and 0 elsewhere; it is computed so,
 *          in double. text and vision restrict the tokens to one modality; all (always written)
 *          counts every token: MC-MoE's ε. Its quantizer is RTN, asymmetric min-max, group 128.
 *   all    (option) the same with every token using the quantized expert: the modality-blind δ_A.
 *
 * δ_M(e, b) is exactly 0 when no token of modality M selects e in the calibration set: nothing
 * would use the quantized weights. Quantizer: RTN (default) or GPTQ, whose Hessians come from
 * the expert's own tokens (all modalities) at full precision; an expert with fewer tokens than
 * min_tokens falls back to RTN and is flagged.
 */
#ifndef MODE_SENS_H
#define MODE_SENS_H

#include "runtime.h"

#define MODE_SENS_MAX_BITS 8

enum mode_sens_metric { MODE_SENS_KL = 0, MODE_SENS_LAYER, MODE_SENS_MCMOE };

struct mode_sens_opts {
    enum mode_sens_metric metric;
    int n_bits;
    int bits[MODE_SENS_MAX_BITS];
    bool gptq;          /* else RTN */
    int group;          /* quantization group (clamped per matrix) */
    bool sym;
    int64_t min_tokens; /* GPTQ: fewer tokens -> RTN + flag */
    bool all;           /* also δ_A (always with mcmoe) */
    int norm_samples;   /* mcmoe: calibration samples per Frobenius norm (< 1: 1) */
    int layer_lo, layer_hi; /* MoE layers measured (inclusive) */
    /* key image tokens of (sample index, layer): n_img flags, or NULL (then every image token
     * counts as vision) */
    const uint8_t *(*keep)(void *ctx, int64_t sample, int layer, int64_t n_img);
    void *keep_ctx;
    /* progress: done / total units of work */
    void (*progress)(void *ctx, int64_t done, int64_t total);
    void *progress_ctx;
};

struct mode_sens_layer {
    int layer, n_expert, n_bits;
    double *dt, *dv, *da;    /* (n_expert, n_bits); da NULL unless opts.all or mcmoe */
    int64_t *cnt_t, *cnt_v;  /* (n_expert): tokens of each modality that select e */
    int64_t tok_t, tok_v;    /* tokens of each modality in the layer (vision: key ones if masked) */
    uint8_t *fallback;       /* (n_expert) */
};

/* Runs the sweep over the samples already added to b (vision not yet run), calling emit once per
 * measured MoE layer in order. b is consumed (its hidden states are overwritten). */
int mode_sens_run(struct mode_rt *rt, struct mode_rt_batch *b, const struct mode_sens_opts *o,
                  int (*emit)(void *ctx, const struct mode_sens_layer *l, struct mode_err *err), void *emit_ctx,
                  struct mode_err *err);

/* Work units mode_sens_run will report (for progress), given the routing is unknown beforehand:
 * an upper bound for kl (experts x bits x modalities per layer), experts per layer for layer and mcmoe. */
int64_t mode_sens_work(const struct mode_model *m, const struct mode_sens_opts *o);

#endif
