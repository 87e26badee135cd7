/* samples.h — the `samples` record (mode-stream(5)): one tokenized calibration or evaluation
 * sample with its images. Written by mode-tokenize, read by every stage that runs the model.
 *
 * Reading: mode_sample_parse checks a decoded record's fields and shapes and fills views into it
 * (valid while the record is; the `images` array is owned by the sample: mode_sample_free).
 * mode_sample_check then checks it against a model: token ids inside the vocabulary, image pad
 * tokens exactly where modality says image, one run of t*h*w/merge^2 pads per image in order, and
 * each image's pixels matching its grid and the patch size.
 *
 * Writing: mode_sample_pack appends a record built from plain arrays (struct mode_sample_in).
 *
 * Pixels: an image is stored either as `pixels`, the resized 8-bit image (F, H, W, C) with
 * H = h*patch, W = w*patch, or as `pixel_values`, already normalised patches (t*h*w, C*T*P*P).
 * mode_image_pixel_values turns either into the f32 patches the vision tower reads, in the order
 * of transformers' Qwen2-VL image processor (merge windows contiguous), normalised with the f32
 * arithmetic of its fast path: (x - mean*255) / (std*255) when rescale and normalise are fused.
 */
#ifndef MODE_SAMPLES_H
#define MODE_SAMPLES_H

#include "config.h"
#include "mp.h"

/* A record with more tokens is refused as corrupt (mode-stream(5), LIMITS) before any stage
 * allocates for it: the stages hold a sample's activations whole, per layer, n_tok x n_embd
 * floats several times over (4 GiB a copy at n_embd 1024 and this many tokens). An image's grid
 * is at most 2^20 patches a dimension; its pixels and pads are checked against the bytes and
 * tokens present. */
#define MODE_SAMPLE_MAX_TOKENS (INT64_C(1) << 20)

enum mode_modality { MODE_MOD_TEXT = 0, MODE_MOD_IMAGE = 1, MODE_MOD_VIDEO = 2 };

struct mode_image {
    int64_t grid[3];                 /* t, h, w in patches, before merging */
    bool has_pixels;                 /* which of the three below is present: pixels, */
    bool has_embeds;                 /* embeds (with deepstack), or else pixel_values */
    struct mode_tensor pixels;       /* u8 (F, H, W, C) */
    struct mode_tensor pixel_values; /* f32 | bf16 | f16 (t*h*w, C*T*P*P) */
    /* the vision tower's output for this image (mode-route-trace --samples-out): f32 (n, n_embd)
     * over its n = t*h*w / merge^2 tokens, and the deepstack features f32 (n_deepstack, n,
     * n_embd); valid for the weights named in the stream's header only (filters/common/input.c) */
    struct mode_tensor embeds, deepstack;
    const char *source;              /* may be NULL; not NUL-terminated */
    size_t source_len;
};

struct mode_sample {
    const char *id; /* not NUL-terminated */
    size_t id_len;
    int64_t n_tok;
    struct mode_tensor tokens;   /* i32 (n_tok) */
    struct mode_tensor modality; /* u8 (n_tok) */
    struct mode_tensor score;    /* u8 (n_tok) */
    int n_images;
    struct mode_image *images; /* owned */
};

int mode_sample_parse(const struct mode_rec *r, struct mode_sample *s, struct mode_err *err);
void mode_sample_free(struct mode_sample *s);
int mode_sample_check(const struct mode_sample *s, const struct mode_config *c, const struct mode_rec *r,
                      struct mode_err *err);

/* Element i of the views, whatever their alignment. */
int32_t mode_sample_token(const struct mode_sample *s, int64_t i);
uint8_t mode_sample_modality(const struct mode_sample *s, int64_t i);
uint8_t mode_sample_score(const struct mode_sample *s, int64_t i);

struct mode_image_in {
    int64_t grid[3];
    int frames, height, width, channels; /* pixels: (frames, height, width, channels) u8 */
    const uint8_t *pixels;
    const char *source; /* or NULL */
};

struct mode_sample_in {
    const char *id;
    int64_t n_tok;
    const int32_t *tokens;
    const uint8_t *modality, *score;
    int n_images;
    const struct mode_image_in *images;
    const char *text; /* or NULL */
};

void mode_sample_pack(struct mode_mp *b, const struct mode_sample_in *s);

/* Rows (t*h*w) and columns (C*T*P*P) of an image's pixel values. */
void mode_image_patch_dims(const struct mode_image *im, const struct mode_vision_config *v, int64_t *rows,
                           int64_t *cols);
/* f32 patches (rows x cols, mode_image_patch_dims) from either representation. */
int mode_image_pixel_values(const struct mode_image *im, const struct mode_vision_config *v,
                            const struct mode_preproc *p, float *out, struct mode_err *err);

#endif
