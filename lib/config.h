/* config.h — model and image-processor configuration of the supported architectures.
 *
 * Reads config.json of Qwen3-VL-MoE (architecture Qwen3VLMoeForConditionalGeneration, model_type
 * qwen3_vl_moe) in both forms it is published in:
 *   hub form            text_config.num_experts, text_config.rope_theta, text_config.rope_scaling
 *                       {mrope_section, mrope_interleaved, rope_type}   (transformers 4.57 writes it)
 *   transformers-5 form text_config.num_local_experts, text_config.rope_parameters {rope_theta,
 *                       mrope_section, ...}, vision_config.rope_parameters
 * and preprocessor_config.json of the Qwen2-VL image processor (size {shortest_edge,longest_edge}
 * or min_pixels/max_pixels, patch/merge sizes, mean/std).
 *
 * Every value is checked: required keys present and typed, sizes positive and within the limits
 * below, and the config consistent with itself (heads divide, mrope sections sum to head_dim/2,
 * top-k <= experts, deepstack indexes inside the vision tower, merger output = text width, ...).
 * Errors are MODE_EDATA naming the file and key ("config.json: text_config.num_experts_per_tok
 * (20) exceeds num_experts (16)"); an unknown architecture names the supported ones.
 */
#ifndef MODE_CONFIG_H
#define MODE_CONFIG_H

#include "mode.h"

#include <stdbool.h>

#define MODE_SUPPORTED_ARCHS "Qwen3VLMoeForConditionalGeneration (model_type qwen3_vl_moe)"

/* config.json and preprocessor_config.json are read whole: at most MODE_CONFIG_MAX_FILE bytes
 * (the tiny reference config is 1,609 bytes; a packed checkpoint's config.json adds a quantization
 * rule per routed expert; lib/model.c reads config.json again with the same bound) */
#define MODE_CONFIG_MAX_FILE ((size_t)64 << 20)

/* limits on sizes read from config.json: anything beyond is taken for a corrupt file */
#define MODE_MAX_LAYERS 1024
#define MODE_MAX_EMBD (1 << 16)
#define MODE_MAX_FF (1 << 18)
#define MODE_MAX_HEADS 1024
#define MODE_MAX_EXPERTS 4096
#define MODE_MAX_VOCAB (1 << 24)
#define MODE_MAX_DEEPSTACK 64

enum mode_arch { MODE_ARCH_QWEN3_VL_MOE = 1 };

enum mode_config_form { MODE_CONFIG_HUB = 1, MODE_CONFIG_V5 = 2 };

struct mode_text_config {
    int n_vocab;
    int n_embd;
    int n_layer;
    int n_head, n_head_kv, head_dim;
    int n_ff;          /* intermediate_size: dense MLP layers */
    int n_ff_exp;      /* moe_intermediate_size: each routed expert */
    int n_expert;      /* routed experts per MoE layer */
    int n_expert_used; /* top-k */
    bool norm_topk_prob;
    int decoder_sparse_step;
    bool *is_moe;      /* (n_layer): layer l has routed experts (else a dense MLP) */
    double rms_eps;
    double rope_theta;
    int mrope_section[3]; /* rotary pairs given to t, h, w; sums to head_dim / 2 */
    bool mrope_interleaved;
    bool attention_bias;
    int max_pos;
};

struct mode_vision_config {
    int depth;
    int n_embd;
    int n_head;
    int n_ff;
    int in_channels;
    int patch_size;
    int temporal_patch_size;
    int merge_size;     /* spatial_merge_size */
    int out_embd;       /* out_hidden_size = text n_embd */
    int n_pos;          /* num_position_embeddings (a square) */
    int n_deepstack;
    int deepstack[MODE_MAX_DEEPSTACK]; /* vision layers whose output feeds decoder layer i */
    double rope_theta;
};

struct mode_config {
    enum mode_arch arch;
    enum mode_config_form form;
    char arch_name[96];
    struct mode_text_config text;
    struct mode_vision_config vision;
    int image_token_id, video_token_id, vision_start_id, vision_end_id;
    int bos_id, eos_id; /* -1 when absent */
    bool tie_word_embeddings;
    char hash[65]; /* sha256 of the canonical description below: equal for both forms */
};

int mode_config_load(struct mode_config *c, const char *path, struct mode_err *err);
void mode_config_free(struct mode_config *c);
/* One line naming every value that defines the architecture, e.g. for identity hashing. */
int mode_config_canonical(const struct mode_config *c, char *buf, size_t n);

struct mode_preproc {
    int64_t min_pixels, max_pixels;
    int patch_size, temporal_patch_size, merge_size;
    double mean[3], std[3];
    bool do_resize, do_rescale, do_normalize, do_convert_rgb;
    double rescale_factor;
    int resample; /* PIL code: 3 = bicubic */
};

int mode_preproc_load(struct mode_preproc *p, const char *path, struct mode_err *err);
/* Checks that the processor's patch geometry matches the vision tower's. */
int mode_preproc_check(const struct mode_preproc *p, const struct mode_config *c, const char *path,
                       struct mode_err *err);

#endif
