/* runtime.h — the Qwen3-VL-MoE forward pass on the CPU (f32, OpenBLAS), layer-sequential over a
 * batch of samples, with hooks for the stages that observe or change a layer.
 *
 * Flow: mode_rt_batch_add() each sample (checks it against the model, computes its MRoPE
 * positions, embeds its tokens, stores its images' patches), then mode_rt_layer() for layers
 * 0 .. n_layer-1 in order (the first call runs the vision tower over every image of the batch,
 * block by block, scatters the image embeddings over the pad tokens and keeps the deepstack
 * features), then mode_rt_logits() for the rows whose logits are wanted. Only one decoder
 * layer's weights are converted to f32 at a time (experts one by one); the hidden states of all
 * samples (n_rows x n_embd) stay in memory: that is the layer-sequential execution GPTQ-family
 * tools use to fit large models. mode_rt_forward() runs all layers.
 *
 * Faithful to transformers (Qwen3VLMoeForConditionalGeneration, eager attention, f32): vision
 * patch embedding as a matmul, learned position embeddings interpolated bilinearly (aligned
 * corners) to each grid, 2-D rotary, pre-LN blocks with gelu-tanh MLPs, 2x2 patch merger (exact
 * GELU), deepstack mergers; text RMSNorm, q/k RMSNorm per head, interleaved MRoPE, GQA causal
 * attention, softmax router -> top-k -> renormalised weights, SwiGLU experts summed in ascending
 * expert order, deepstack features added at the image positions after the first decoder layers,
 * final norm, lm_head.
 *
 * Hooks: any may be NULL. They see the whole batch for the layer (rows of all sequences stacked,
 * sequence s at rows b->seq[s].row ...); a hook returning non-zero stops the pass with its status.
 *
 * Errors: MODE_EDATA for a sample that does not fit the model (named through `where`), MODE_EUNAVAILABLE
 * for memory. Ownership: the batch owns copies of everything it needs; the sample record may be
 * freed after mode_rt_batch_add.
 */
#ifndef MODE_RUNTIME_H
#define MODE_RUNTIME_H

#include "arena.h"
#include "model.h"
#include "samples.h"

struct mode_rt_image {
    int seq;                /* the sequence it belongs to */
    struct mode_image data; /* grid and pixels as the sample had them (8-bit, compact), owned copy,
                               until the vision tower has run */
};

struct mode_rt_seq {
    char *id;
    int64_t index; /* the caller's number for the sample (its place in the input); 0 unless set */
    int64_t n_tok;
    int64_t row; /* first row of this sequence in the batch's hidden states */
    int32_t *tokens;
    uint8_t *modality, *score;
    int32_t *pos;     /* (3, n_tok) MRoPE positions: t, h, w */
    int64_t n_img;    /* image tokens */
    int64_t *img;     /* (n_img) their indices in the sequence */
    float *deepstack; /* (n_deepstack, n_img, n_embd), after the vision tower */
};

struct mode_rt_batch {
    int n_seq, cap_seq;
    struct mode_rt_seq *seq;
    int n_image, cap_image;
    struct mode_rt_image *image;
    int64_t n_rows, cap_rows;
    float *h;        /* (n_rows, n_embd) hidden states */
    int next_layer;  /* decoder layers applied so far */
    bool vision_done;
};

/* Replacement weights for one routed expert (e.g. quantized), nn.Linear orientation:
 * gate_up (2*n_ff_exp, n_embd) = [gate; up], down (n_embd, n_ff_exp). With rows set (n_rows of
 * the batch), only the tokens of those rows use them; the others keep the checkpoint's and their
 * results are bit-identical to a run without the override (both weight sets are applied to all
 * of the expert's tokens and each token takes its own). */
struct mode_rt_expert_override {
    const float *gate_up;
    const float *down;
    const uint8_t *rows;
};

/* Replacement attention projections (e.g. quantized), f32, nn.Linear orientation: wq
 * (n_head*head_dim, n_embd), wk and wv (n_head_kv*head_dim, n_embd), wo (n_embd, n_head*head_dim).
 * A NULL member keeps the checkpoint's. They apply to every token. */
struct mode_rt_attn_override {
    const float *wq, *wk, *wv, *wo;
};

/* A hook's "stop here": mode_rt_layer returns MODE_RT_STOP without an error, the layer not applied
 * (b->next_layer unchanged); b->h is as it was when the stop came from attn_out, and holds the
 * attention's residual when it came from moe: the caller restores it before running the layer
 * again. Distinct from every MODE_E* status. */
#define MODE_RT_STOP 1

struct mode_rt_hooks {
    void *ctx;
    /* Before a decoder layer's attention: fill ov (left empty: the checkpoint's weights). */
    int (*attn_weights)(void *ctx, int layer, struct mode_rt_attn_override *ov, struct mode_err *err);
    /* After attention, before o_proj and its residual: the normalised input xn (n_rows, n_embd)
     * of q/k/v_proj and the input o (n_rows, n_head*head_dim) of o_proj. */
    int (*attn_out)(void *ctx, int layer, const struct mode_rt_batch *b, const float *xn, const float *o,
                    struct mode_err *err);
    /* Before the experts of a MoE layer run: fill ov (left empty: the checkpoint's weights). Called
     * for every expert that has tokens, in ascending order, before any of them runs (they run on
     * the pool's threads): what ov points to must stay valid until the MoE block ends. */
    int (*expert)(void *ctx, int layer, int expert, struct mode_rt_expert_override *ov, struct mode_err *err);
    /* After routing in a MoE layer: router logits (n_rows, n_expert), selected experts and
     * their weights (n_rows, k). */
    int (*router)(void *ctx, int layer, const struct mode_rt_batch *b, const float *logits, const int32_t *experts,
                  const float *weights, struct mode_err *err);
    /* After the MoE block (before the residual): its normalised input x and output out, both
     * (n_rows, n_embd), with the routing. */
    int (*moe)(void *ctx, int layer, const struct mode_rt_batch *b, const float *x, const int32_t *experts,
               const float *weights, const float *out, struct mode_err *err);
    /* Attention scores: when attn_rows returns a mask (n_tok) for a sequence, attn receives
     * score[j] = mean over heads and over the masked query rows i of softmax(QK^T)[i][j]. */
    const uint8_t *(*attn_rows)(void *ctx, int layer, int seq);
    int (*attn)(void *ctx, int layer, int seq, const float *score, struct mode_err *err);
};

struct mode_rt {
    const struct mode_model *m;
    float *inv_freq;     /* (head_dim/2) text rotary frequencies */
    float *vis_inv_freq; /* (v_head_dim/4) vision rotary frequencies */
    float *lm_head;      /* (n_vocab, n_embd) f32, converted on first use */
    float *out_norm;     /* (n_embd) */
    int attn_block;      /* query rows per block of attention scores (0: 512); memory is block x n_tok */
    struct mode_rtmoe *gpu; /* mode_rt_device CUDA: packed MoE layers on the GPU (rtmoe.h) */
    struct mode_rtlayer *resident; /* mode_rt_device CUDA: whole MoE layers on the GPU (rtlayer.h) */
    int64_t n_resident, n_resident_fallback; /* layers run resident; layers that fell back to the CPU */
    int64_t n_vision_fallback;               /* batches whose vision blocks fell back to the CPU */
    /* the scratch of one call (a decoder layer's activations, routing and f32 weights; the
     * logits' norm), kept across calls, so that running layers again maps no new memory (issue
     * 21): as large as the largest call so far. Reset at the start of mode_rt_layer and
     * mode_rt_logits: what a hook is handed lives until its call returns, and a hook must not
     * call the runtime. Freed by mode_rt_free. */
    struct mode_arena scratch;
};

int mode_rt_init(struct mode_rt *rt, const struct mode_model *m, struct mode_err *err);
void mode_rt_free(struct mode_rt *rt);
/* MODE_DEVICE_CUDA: the experts of packed MoE layers run on the GPU through the packed kernels
 * (rtmoe.h; layers they cannot take, and layers whose experts a hook overrides, stay on the CPU),
 * and the MoE layers of a full-precision checkpoint run whole on the GPU in f32 (rtlayer.h) when
 * no hook needs the attention's insides (an attn_out hook keeps a layer on the CPU, and so does
 * an expert override limited to some rows; router, attention-score, attention-weight, moe and
 * whole-expert override hooks are served, the expert hook then called for every expert, more
 * than once) and the layer has no attention bias;
 * the vision tower's blocks too, whatever the checkpoint and the hooks (its patch embedding and
 * mergers stay on the CPU);
 * MODE_RT_RESIDENT=0 in the environment turns the latter off. A resident layer the device has no
 * memory for runs on the CPU (counted in n_resident_fallback; the vision blocks of a batch in
 * n_vision_fallback). MODE_DEVICE_CPU (the default)
 * everything on the CPU. MODE_EUNAVAILABLE without a GPU. */
int mode_rt_device(struct mode_rt *rt, enum mode_device d, struct mode_err *err);

void mode_rt_batch_init(struct mode_rt_batch *b);
void mode_rt_batch_free(struct mode_rt_batch *b);
/* Adds a sample (before the first layer). `where` names it in messages (may be NULL). */
int mode_rt_batch_add(struct mode_rt *rt, struct mode_rt_batch *b, const struct mode_sample *s,
                      const struct mode_rec *where, struct mode_err *err);
/* Runs the vision tower over every image of the batch (done by the first mode_rt_layer too). */
int mode_rt_vision(struct mode_rt *rt, struct mode_rt_batch *b, struct mode_err *err);
/* Applies decoder layer `layer`, which must be b->next_layer. */
int mode_rt_layer(struct mode_rt *rt, struct mode_rt_batch *b, int layer, const struct mode_rt_hooks *hooks,
                  struct mode_err *err);
int mode_rt_forward(struct mode_rt *rt, struct mode_rt_batch *b, const struct mode_rt_hooks *hooks, struct mode_err *err);
/* Sequence s of b as a samples record (mode-stream(5)) whose images carry the vision tower's output
 * (embeds and deepstack, f32) in place of pixels: the input of a later stage that then skips the
 * tower (mode-route-trace --samples-out). Between mode_rt_vision and the first layer only. The
 * record holds id, tokens, modality, score and images (grid, embeds, deepstack). */
int mode_rt_seq_pack_vision(const struct mode_rt *rt, const struct mode_rt_batch *b, int s, struct mode_mp *mp, struct mode_err *err);

/* The memory (bytes, anonymous: the mapped checkpoint aside) that running batch b through every
 * layer takes at its peak, with `threads` pool threads and, with head, mode_rt_logits: the batch's
 * hidden states and per-token arrays; then the larger of the vision tower (~ patches x (6
 * v_embd + v_ff) floats, one block's f32 weights) and a decoder layer (its f32 attention weights
 * and router, ~ rows x (4 n_embd + 2 q + 2 kv) floats of activations, per thread one expert's f32
 * weights and rows and a block of attention scores), the layer's a quarter over for the kept
 * arena; with head the f32 lm_head. An estimate from the shapes (the man pages' MEMORY formula),
 * compared with the measured peak in make scale's table (tests/bench/README-scale.md). */
int64_t mode_rt_mem_need(const struct mode_rt *rt, const struct mode_rt_batch *b, int threads, bool head);

/* Final norm + lm_head for rows [r0, r0 + n) of sequence s after the last layer: logits (n, n_vocab). */
int mode_rt_logits(struct mode_rt *rt, const struct mode_rt_batch *b, int s, int64_t r0, int64_t n, float *logits,
                   struct mode_err *err);

/* MRoPE positions of a checked sample (transformers' get_rope_index): pos (3, n_tok). */
void mode_rt_positions(const struct mode_config *c, const struct mode_sample *s, int32_t *pos);

#endif
