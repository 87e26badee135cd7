/* model.h — a checkpoint bound to its architecture: config + every weight by name and shape.
 *
 * mode_model_open(dir) reads config.json, preprocessor_config.json (when present) and the
 * safetensors files, then binds each tensor the architecture needs under its Hugging Face name,
 * checking its shape against the config. Fused experts come in two layouts, told apart by shape:
 *   hub          mlp.experts.gate_up_proj (n_expert, n_embd, 2*n_ff_exp), gate = first half of the
 *                last dim; mlp.experts.down_proj (n_expert, n_ff_exp, n_embd)
 *   transformers 5: the transpose of both: (n_expert, 2*n_ff_exp, n_embd), (n_expert, n_embd, n_ff_exp)
 * mode_model_expert() hides the difference: it returns a strided view of one expert projection in
 * nn.Linear orientation (out × in), whatever the layout.
 *
 * Errors (MODE_EDATA) name the tensor and, where it is in a file, the file:
 *   "tiny/model-00001-of-00002.safetensors: tensor 'model.language_model.layers.0.mlp.gate.weight'
 *    has shape (16, 95), expected (16, 96)"
 *   "tiny: tensor 'lm_head.weight' is missing (architecture Qwen3VLMoeForConditionalGeneration)"
 * Every tensor's bytes are read once at open (mode_st_set_scan): a float tensor holding NaN or Inf
 * is refused there, bound or not —
 *   "tiny/model.safetensors: tensor 'model.language_model.norm.weight' holds a non-finite value (inf)
 *    at element 3"
 * — and the same pass gives weights_hash, the identity of the bytes that were read.
 * Tensors of the checkpoint that the architecture does not use are listed in `unused` (no error:
 * transformers loads such checkpoints with a warning).
 *
 * Ownership: the model owns its mappings; tensor pointers are valid until mode_model_close.
 * Weights are never copied here; conversion to f32 is the caller's (mode_mat_to_f32).
 */
#ifndef MODE_MODEL_H
#define MODE_MODEL_H

#include "config.h"
#include "mp.h"
#include "safetensors.h"

enum mode_expert_layout { MODE_EXPERTS_HUB = 1, MODE_EXPERTS_V5 = 2 };


/* One GPTQ-packed projection (gptqpack.h): out features n, in features k, `bits`, g groups. */
struct mode_qproj {
    const struct mode_st_tensor *qweight, *qzeros, *scales, *g_idx, *weight; /* weight: a 16-bit expert left unquantized */
    int bits;
    int64_t n, k, g;
};

struct mode_layer_w {
    const struct mode_st_tensor *attn_norm;        /* (n_embd) input_layernorm */
    const struct mode_st_tensor *wq, *wk, *wv, *wo; /* (n_head*head_dim, n_embd), (n_head_kv*head_dim, n_embd) x2,
                                                      (n_embd, n_head*head_dim) */
    /* a packed checkpoint whose attention was quantized too (mode-pack --attn-bits): q, k, v and
     * o_proj, same shapes as above, instead of wq..wo (then NULL); NULL otherwise */
    struct mode_qproj *qattn; /* (4) */
    const struct mode_st_tensor *bq, *bk, *bv, *bo; /* biases when attention_bias, else NULL */
    const struct mode_st_tensor *q_norm, *k_norm;   /* (head_dim) RMSNorm of each head */
    const struct mode_st_tensor *ffn_norm;          /* (n_embd) post_attention_layernorm */
    /* MoE layers */
    const struct mode_st_tensor *router;  /* (n_expert, n_embd) mlp.gate.weight */
    const struct mode_st_tensor *gate_up; /* fused experts, layout above */
    const struct mode_st_tensor *down;
    /* a packed (mode-pack, GPTQ) checkpoint: per expert and projection (gate, up, down) instead of
     * the fused tensors; NULL otherwise */
    struct mode_qproj *qexp; /* (n_expert * 3) */
    /* dense layers (mlp_only_layers / decoder_sparse_step) */
    const struct mode_st_tensor *ffn_gate, *ffn_up; /* (n_ff, n_embd) */
    const struct mode_st_tensor *ffn_down;          /* (n_embd, n_ff) */
};

struct mode_vblock_w {
    const struct mode_st_tensor *norm1_w, *norm1_b; /* (v_embd) LayerNorm */
    const struct mode_st_tensor *qkv_w, *qkv_b;     /* (3*v_embd, v_embd), (3*v_embd) */
    const struct mode_st_tensor *proj_w, *proj_b;   /* (v_embd, v_embd), (v_embd) */
    const struct mode_st_tensor *norm2_w, *norm2_b; /* (v_embd) */
    const struct mode_st_tensor *fc1_w, *fc1_b;     /* (v_ff, v_embd), (v_ff) */
    const struct mode_st_tensor *fc2_w, *fc2_b;     /* (v_embd, v_ff), (v_embd) */
};

/* Patch merger: LayerNorm (before the 2x2 shuffle: v_embd; deepstack mergers after it:
 * v_embd*merge^2), then fc1 (hm, hm) + GELU + fc2 (out_embd, hm), hm = v_embd*merge^2. */
struct mode_merger_w {
    const struct mode_st_tensor *norm_w, *norm_b;
    const struct mode_st_tensor *fc1_w, *fc1_b;
    const struct mode_st_tensor *fc2_w, *fc2_b;
};

struct mode_model {
    char dir[4096];
    struct mode_config cfg;
    struct mode_preproc pre;
    bool has_preproc;
    struct mode_st_set st;
    enum mode_expert_layout layout;
    bool packed;   /* routed experts stored GPTQ-packed (config quantization_config) */
    bool gptq_v1;  /* checkpoint_format "gptq": qzeros hold zero - 1 */
    const struct mode_st_tensor *tok_embd; /* (n_vocab, n_embd) */
    const struct mode_st_tensor *out_norm; /* (n_embd) */
    const struct mode_st_tensor *lm_head;  /* (n_vocab, n_embd); = tok_embd when tied */
    struct mode_layer_w *layers;           /* (n_layer) */
    const struct mode_st_tensor *patch_w;  /* (v_embd, in_channels, temporal_patch, patch, patch) Conv3d */
    const struct mode_st_tensor *patch_b;  /* (v_embd) */
    const struct mode_st_tensor *pos_embd; /* (n_pos, v_embd) learned, interpolated to the grid */
    struct mode_vblock_w *vblocks;         /* (depth) */
    struct mode_merger_w merger;
    struct mode_merger_w *deepstack; /* (n_deepstack) */
    size_t n_bound;
    const struct mode_st_tensor **unused; /* checkpoint tensors the architecture does not use */
    size_t n_unused;
    char weights_hash[65]; /* the fingerprint of every tensor's bytes (mode_st_set_scan): differs between
                              the two expert layouts, and between a checkpoint and its packed form;
                              for a packed one, with its format (GPTQ v1 or v2) folded in */
};

int mode_model_open(struct mode_model *m, const char *dir, struct mode_err *err);
/* The same; with MODE_MODEL_NO_SCAN the tensors' bytes are not read at all (no NaN/Inf check, and
 * weights_hash stays "", so the identity's "weights" is empty): for the programs that use the
 * model's config, tokenizer and identity but never its weights (mode-tokenize, mode-ilp -m,
 * mode-vis-denoise -m), which must not read 61 GB to tokenize a file. */
#define MODE_MODEL_NO_SCAN 1u
int mode_model_open_flags(struct mode_model *m, const char *dir, unsigned flags, struct mode_err *err);
void mode_model_close(struct mode_model *m);
const char *mode_expert_layout_name(enum mode_expert_layout l);

/* A matrix W (rows × cols, nn.Linear orientation out × in) inside a stored tensor:
 * W[r][c] is element offset + r*row_stride + c*col_stride of t. */
struct mode_mat {
    const struct mode_st_tensor *t;
    uint64_t offset, rows, cols, row_stride, col_stride;
};

enum mode_proj { MODE_PROJ_GATE = 0, MODE_PROJ_UP = 1, MODE_PROJ_DOWN = 2 };

/* gate/up: (n_ff_exp, n_embd); down: (n_embd, n_ff_exp). MODE_EUSAGE for a dense layer or an
 * expert out of range. */
int mode_model_expert(const struct mode_model *m, int layer, int expert, enum mode_proj p, struct mode_mat *out,
                      struct mode_err *err);
/* Expert projection p of a packed checkpoint dequantised to f32 (n, k), nn.Linear orientation. */
int mode_model_qexpert_f32(const struct mode_model *m, int layer, int expert, enum mode_proj p, float *dst, struct mode_err *err);
/* Any packed projection of m (an expert's, or qattn[i]) dequantised to f32 (q->n, q->k). MODE_EDATA
 * for a g_idx entry that is not a group. */
int mode_model_qproj_f32(const struct mode_model *m, const struct mode_qproj *q, float *dst, struct mode_err *err);
/* Materialises W row-major as f32 (rows*cols floats). */
int mode_mat_to_f32(const struct mode_mat *w, float *dst, struct mode_err *err);

/* A description of the model as a msgpack map: identity, config values, layouts, file and
 * tensor counts, dtypes, unused tensors (mode-cat --model prints it). */
void mode_model_describe(struct mode_mp *b, const struct mode_model *m);
/* One tensor as a map {name, dtype, shape, file, offset, bytes}. */
void mode_model_describe_tensor(struct mode_mp *b, const struct mode_st_tensor *t);

/* The model's identity in stream headers: {"arch", "config", "weights", "name"}. */
void mode_model_id_pack(struct mode_mp *b, const struct mode_model *m);
/* Checks a stream header's "model" map against m: arch and config hash must match (a quantized
 * or re-saved checkpoint of the same model keeps them). MODE_EDATA naming both otherwise. The
 * weights fingerprint is not compared: samples made with the original checkpoint are evaluated on
 * its packed form, whose bytes differ. */
int mode_model_id_check(const msgpack_object *id, const struct mode_model *m, const char *stream,
                        struct mode_err *err);

#endif
