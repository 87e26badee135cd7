/* test_pack — lib/pack.c on emoji-vl: at mixed widths (2, 3, 4, 8, 16 within a layer) and with the
 * attention quantized (3 bits), the weights that the later layers were calibrated on equal, bit
 * for bit, what mode_gptq_dequant forms from the packed tensors (what a loader sees); every
 * decoder layer is emitted with the tensors of its shape; the runtime's attention override and
 * its stop are exact (an override by the checkpoint's own weights changes no bit; a stop leaves
 * the layer unapplied). */
#include "../../lib/gptqpack.h"
#include "../../lib/ops.h"
#include "../../lib/pack.h"
#include "../../lib/sha256.h"
#include "../../lib/stream.h"
#include "samples_load.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct seen {
    int layers, attn_layers;
    int64_t projs, mismatched, bad_shape, by_bits[17];
    struct mode_sha256 sh; /* of every packed tensor, in order */
};

static void digest(struct seen *s, const struct mode_pack_proj *q)
{
    if (q->bits >= 16) {
        mode_sha256_update(&s->sh, q->weight, sizeof *q->weight * (size_t)(q->n * q->k));
        return;
    }
    mode_sha256_update(&s->sh, q->qweight, 4 * (size_t)(q->k * q->bits / 32 * q->n));
    mode_sha256_update(&s->sh, q->qzeros, 4 * (size_t)(q->g * q->n * q->bits / 32));
    mode_sha256_update(&s->sh, q->scales, 2 * (size_t)(q->g * q->n));
    mode_sha256_update(&s->sh, q->g_idx, 4 * (size_t)q->k);
}

/* 0 when the packed tensors of q dequantise to exactly q->deq */
static int64_t check_proj(const struct mode_pack_proj *q)
{
    if (q->bits >= 16) return q->deq == q->weight ? 0 : 1;
    float *W = malloc(sizeof *W * (size_t)(q->n * q->k));
    if (!W || mode_gptq_dequant(q->qweight, q->qzeros, q->scales, q->g_idx, q->n, q->k, q->g, q->bits, false, W)) {
        free(W);
        return q->n * q->k;
    }
    int64_t bad = 0;
    for (int64_t i = 0; i < q->n * q->k; i++) bad += memcmp(&W[i], &q->deq[i], sizeof *W) != 0;
    free(W);
    return bad;
}

static int emit(void *ctx, const struct mode_pack_layer *l, const struct mode_rt_batch *b, struct mode_err *err)
{
    (void)b, (void)err;
    struct seen *s = ctx;
    s->layers++;
    s->attn_layers += l->has_attn;
    const int64_t D = 128, qd = 4 * 32, kvd = 2 * 32, want[4][2] = {{qd, D}, {kvd, D}, {kvd, D}, {D, qd}};
    for (int p = 0; l->has_attn && p < 4; p++) {
        s->projs++;
        s->mismatched += check_proj(&l->attn[p]);
        digest(s, &l->attn[p]);
        s->bad_shape += l->attn[p].n != want[p][0] || l->attn[p].k != want[p][1] || l->attn[p].bits != 3;
    }
    for (int i = 0; i < l->n_expert * 3; i++) {
        s->projs++;
        s->by_bits[l->proj[i].bits]++;
        s->mismatched += check_proj(&l->proj[i]);
        digest(s, &l->proj[i]);
    }
    return MODE_OK;
}

static const float *g_ov[4];
static int ov_hook(void *ctx, int layer, struct mode_rt_attn_override *ov, struct mode_err *err)
{
    (void)ctx, (void)layer, (void)err;
    ov->wq = g_ov[0], ov->wk = g_ov[1], ov->wv = g_ov[2], ov->wo = g_ov[3];
    return MODE_OK;
}
static int stop_hook(void *ctx, int layer, const struct mode_rt_batch *b, const float *xn, const float *o, struct mode_err *err)
{
    (void)ctx, (void)layer, (void)b, (void)xn, (void)o, (void)err;
    return MODE_RT_STOP;
}


int main(void)
{
    char samples[4200];
    struct mode_err err = {0};
    struct mode_model m;
    struct mode_rt rt;
    if (emoji_calib_open(samples, sizeof samples, &m, &rt)) return tap_done();
    const int L = m.cfg.text.n_layer, NE = m.cfg.text.n_expert;
    /* the first 64 calibration samples: its 48 text records and 16 with an image */
    struct mode_rt_batch b;
    if (load_samples(&rt, samples, 0, 64, &b, &err)) {
        ok(0, "samples load: %s", err.msg);
        return tap_done();
    }
    int *bits = malloc(sizeof *bits * (size_t)(L * NE));
    static const int cycle[5] = {2, 3, 4, 8, 16};
    for (int i = 0; i < L * NE; i++) bits[i] = cycle[i % 5];
    struct mode_pack_opts o = {.group = 32, .min_tokens = 32, .attn_bits = 3};
    struct seen s = {0};
    mode_sha256_init(&s.sh);
    int rc = mode_pack_run(&rt, &b, bits, &o, emit, &s, &err);
    ok(rc == MODE_OK, "mode_pack_run at mixed widths with --attn-bits 3: %s", rc ? err.msg : "ok");
    is_int(s.layers, L, "every decoder layer is emitted");
    is_int(s.attn_layers, L, "each with its quantized attention");
    is_int(s.bad_shape, 0, "q/k/v/o_proj at their shapes and 3 bits");
    ok(s.by_bits[2] && s.by_bits[3] && s.by_bits[4] && s.by_bits[8] && s.by_bits[16], "experts at 2, 3, 4, 8 and 16 bits");
    is_int(s.mismatched, 0, "the dequantised packed tensors of %lld projections equal the calibrated weights bit for bit", (long long)s.projs);
    mode_rt_batch_free(&b);

    /* the batched path (what --device cuda runs, lib/gptq.h) on the CPU: the same checkpoint */
    struct seen sb = {0};
    mode_sha256_init(&sb.sh);
    if (load_samples(&rt, samples, 0, 64, &b, &err)) return tap_done();
    o.batched = true;
    rc = mode_pack_run(&rt, &b, bits, &o, emit, &sb, &err);
    o.batched = false;
    char h1[65], h2[65];
    mode_sha256_hex(&s.sh, h1), mode_sha256_hex(&sb.sh, h2);
    ok(rc == MODE_OK && sb.mismatched == 0 && sb.projs == s.projs, "the batched path runs: %s", rc ? err.msg : "ok");
    is_str(h2, h1, "and packs the same tensors, to the bit, as expert by expert");
    mode_rt_batch_free(&b);

    /* without --attn-bits: no attention emitted */
    struct seen s2 = {0};
    o.attn_bits = 0;
    if (load_samples(&rt, samples, 0, 16, &b, &err)) return tap_done();
    rc = mode_pack_run(&rt, &b, bits, &o, emit, &s2, &err);
    ok(rc == MODE_OK && s2.layers == L && s2.attn_layers == 0 && s2.mismatched == 0, "without attn_bits: experts only (%d layers)", s2.layers);
    mode_rt_batch_free(&b);

    /* the runtime's override and stop */
    struct mode_rt_batch b1, b2;
    if (load_samples(&rt, samples, 0, 8, &b1, &err) || load_samples(&rt, samples, 0, 8, &b2, &err)) return tap_done();
    const struct mode_layer_w *w0 = &m.layers[0];
    const struct mode_st_tensor *src[4] = {w0->wq, w0->wk, w0->wv, w0->wo};
    float *own[4];
    for (int p = 0; p < 4; p++) {
        own[p] = malloc(sizeof(float) * (size_t)src[p]->numel);
        mode_st_to_f32(src[p], own[p], &err);
        g_ov[p] = own[p];
    }
    struct mode_rt_hooks hov = {.attn_weights = ov_hook}, hstop = {.attn_out = stop_hook};
    ok(!mode_rt_layer(&rt, &b1, 0, NULL, &err) && !mode_rt_layer(&rt, &b2, 0, &hov, &err), "layer 0 with and without an override");
    ok(!memcmp(b1.h, b2.h, sizeof *b1.h * (size_t)(b1.n_rows * m.cfg.text.n_embd)), "overriding by the checkpoint's own attention weights changes no bit");
    float *before = malloc(sizeof *before * (size_t)(b1.n_rows * m.cfg.text.n_embd));
    memcpy(before, b1.h, sizeof *before * (size_t)(b1.n_rows * m.cfg.text.n_embd));
    rc = mode_rt_layer(&rt, &b1, 1, &hstop, &err);
    is_int(rc, MODE_RT_STOP, "a hook's stop is returned");
    ok(b1.next_layer == 1 && !memcmp(before, b1.h, sizeof *before * (size_t)(b1.n_rows * m.cfg.text.n_embd)),
       "a stop at attn_out leaves the layer unapplied and the hidden states as they were");
    ok(!mode_rt_layer(&rt, &b1, 1, NULL, &err), "the layer then runs");
    for (int p = 0; p < 4; p++) free(own[p]);
    free(before), free(bits);
    mode_rt_batch_free(&b1), mode_rt_batch_free(&b2);
    mode_rt_free(&rt);
    mode_model_close(&m);
    return tap_done();
}
