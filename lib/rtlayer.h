/* rtlayer.h — the runtime's text decoder layers and vision blocks resident on the GPU
 * (mode_rt_device CUDA; the vision part at the end): a MoE
 * layer of a full-precision checkpoint runs whole on the device (kernels/layer.cu in f32: the CPU
 * runtime's arithmetic, sums in another order) instead of on the CPU with its large products
 * offloaded. The runtime keeps the hidden states and the hooks; this moves one layer's weights
 * (f32; the experts one at a time through the caller's callback, in their stored type: bf16
 * experts cross as bf16 and are widened on the device) and the batch's rows to the device,
 * runs the layer, and brings back the updated hidden states, the router's logits and choices,
 * and the attention column sums of the selected rows. Device buffers are kept and grown between
 * layers.
 *
 * Errors: MODE_EUNAVAILABLE (no GPU, device memory: the runtime then runs the layer on the CPU),
 * MODE_EDATA (an expert index out of range), what the expert callback returns. */
#ifndef MODE_RTLAYER_H
#define MODE_RTLAYER_H

#include "config.h"
#include "mode.h"

#include <stdbool.h>

struct mode_rtlayer;

/* An expert's two projections as the caller holds them on the host: gate_up (2i·d) and down
 * (d·i) in their stored type (MODE_F32, MODE_BF16 or MODE_F16: a checkpoint's slices, converted
 * to f32 on the device; an override in f32), in nn.Linear orientation when trans, else the
 * hub's (the same for both projections; each expert its own). */
struct mode_rtlayer_expert {
    const void *gu, *dn;
    enum mode_dtype gu_t, dn_t;
    bool trans;
};

/* One layer's weights, f32 host arrays in nn.Linear orientation (the runtime's text_layer), and
 * its experts: expert(ctx, e, &x) describes expert e's (borrowed until the next call). */
struct mode_rtlayer_w {
    const float *an, *fn, *wq, *wk, *wv, *wo, *qn, *kn, *router;
    int (*expert)(void *ctx, int e, struct mode_rtlayer_expert *x, struct mode_err *err);
    void *ctx;
};

/* The batch's rows: n of them in n_seg sequences [seg[s], seg[s + 1]), their rope angles
 * (n, head_dim/2), the query rows whose attention probabilities are summed (sel: n bytes, or
 * NULL). Outputs: h (n, d) updated in place, logits (n, n_expert), idx and w (n, k), colsum (n:
 * the raw sums over heads and selected rows, mode_attention_cuda's; unused without sel), and
 * when not NULL moe_x and moe_out (n, d): the MoE block's normalised input and its output before
 * the residual (what the runtime's moe hook receives). */
struct mode_rtlayer_rows {
    int64_t n;
    int n_seg;
    const int64_t *seg;
    const float *ang;
    const uint8_t *sel;
    float *h, *logits, *w, *colsum;
    int32_t *idx;
    float *moe_x, *moe_out;
};

int mode_rtlayer_init(struct mode_rtlayer **g, struct mode_err *err);
void mode_rtlayer_free(struct mode_rtlayer *g);
int mode_rtlayer_run(struct mode_rtlayer *g, const struct mode_text_config *t, const struct mode_rtlayer_w *w, const struct mode_rtlayer_rows *r,
                     struct mode_err *err);

/* The vision tower's blocks on the GPU: begin uploads the patch rows x (p, e) and their rotary
 * angles (p, head_dim/2) and reserves every buffer the blocks need (MODE_EUNAVAILABLE there:
 * nothing is on the device, the caller runs the blocks on the CPU); each block call uploads
 * one block's f32 weights (struct mode_vision_block_cuda holds host arrays) and runs it over the
 * frames [seg[f], seg[f+1]); get copies x back. */
struct mode_vision_block_cuda;
int mode_rtlayer_vision_begin(struct mode_rtlayer *g, const float *x, const float *ang, int64_t p, int e, int head_dim, int n_ff,
                              struct mode_err *err);
int mode_rtlayer_vision_block(struct mode_rtlayer *g, const struct mode_vision_block_cuda *host, const int64_t *seg, int n_seg, struct mode_err *err);
int mode_rtlayer_vision_get(struct mode_rtlayer *g, float *x, struct mode_err *err);

#endif
