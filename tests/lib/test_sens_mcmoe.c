/* test_sens_mcmoe — mode-sensitivity's mcmoe metric (lib/sens.c) against MC-MoE's loss computed
 * here the way its code does (models/wrapper.py, order_quant): the MoE block run twice over the
 * calibration tokens, once as it is and once with one expert's three projections replaced by
 * their round-to-nearest copies (utils/normal_quantizer.py: per output row and group of 128 input
 * columns, min(w, 0) and max(w, 0), scale (max − min)/(2^b − 1), zero round(−min/scale), written
 * out below), and the unsquared Frobenius norm of the difference of the two outputs summed over
 * the batches of samples. sens.c instead forms the difference from the expert's own term; both
 * must agree, on emoji-vl's layer 1, for every expert and width, over all tokens, the text tokens
 * and the image tokens, with batches of 3 samples (the last one short). */
#include "../../lib/model.h"
#include "../../lib/sens.h"
#include "samples_load.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAIL_OUT(m) (printf("Bail out! %s\n", (m)), exit(1))

enum { LAYER = 1, PER = 3, NB = 3 };
static const int bits[NB] = {2, 3, 4};

/* ---- what mode_sens_run reports ---- */
struct got {
    double *dt, *dv, *da; /* (E, NB) */
    int layers;
};

static int emit(void *ctx, const struct mode_sens_layer *l, struct mode_err *err)
{
    (void)err;
    struct got *g = ctx;
    const size_t n = (size_t)l->n_expert * NB;
    g->dt = malloc(sizeof *g->dt * n), g->dv = malloc(sizeof *g->dv * n), g->da = malloc(sizeof *g->da * n);
    memcpy(g->dt, l->dt, sizeof *g->dt * n), memcpy(g->dv, l->dv, sizeof *g->dv * n), memcpy(g->da, l->da, sizeof *g->da * n);
    g->layers++;
    return MODE_OK;
}

/* ---- the MoE block's output, with or without an expert replaced ---- */
struct cap {
    float *out; /* (n_rows, n_embd) */
    int expert;
    const float *gu, *dn;
};

static int on_moe(void *ctx, int layer, const struct mode_rt_batch *b, const float *x, const int32_t *ex, const float *w, const float *out,
                  struct mode_err *err)
{
    (void)x, (void)ex, (void)w, (void)err;
    struct cap *c = ctx;
    if (layer == LAYER) memcpy(c->out, out, sizeof *c->out * (size_t)b->n_rows * 128);
    return MODE_OK;
}

static int on_expert(void *ctx, int layer, int expert, struct mode_rt_expert_override *ov, struct mode_err *err)
{
    (void)err;
    struct cap *c = ctx;
    if (layer == LAYER && expert == c->expert) ov->gate_up = c->gu, ov->down = c->dn; /* every token */
    return MODE_OK;
}

/* MC-MoE's normal_quantize of W (rows, cols), groups of min(128, cols) columns, in double */
static void mcmoe_rtn(const float *W, int64_t rows, int64_t cols, int b, float *out)
{
    const int64_t g = cols < 128 ? cols : 128;
    const double maxq = (1 << b) - 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c0 = 0; c0 < cols; c0 += g) {
            double lo = 0, hi = 0;
            for (int64_t c = c0; c < c0 + g; c++) lo = fmin(lo, W[r * cols + c]), hi = fmax(hi, W[r * cols + c]);
            if (lo == 0 && hi == 0) lo = -1, hi = 1;
            const double scale = (hi - lo) / maxq, zero = rint(-lo / scale);
            for (int64_t c = c0; c < c0 + g; c++) {
                const double q = fmin(fmax(rint(W[r * cols + c] / scale) + zero, 0), maxq);
                out[r * cols + c] = (float)(scale * (q - zero));
            }
        }
}

int main(void)
{
    char samples[4200];
    struct mode_err err = {0};
    struct mode_model m;
    struct mode_rt rt;
    if (emoji_calib_open(samples, sizeof samples, &m, &rt)) return tap_done();
    const int E = m.cfg.text.n_expert;
    const int64_t D = m.cfg.text.n_embd, I = m.cfg.text.n_ff_exp;
    if (D != 128) BAIL_OUT("emoji-vl's hidden size is 128");
    /* samples 40..55: 8 text records and 8 with an image */
    struct mode_rt_batch b;
    if (load_samples(&rt, samples, 40, 16, &b, &err)) return ok(0, "samples: %s", err.msg), tap_done();
    struct mode_sens_opts o = {.metric = MODE_SENS_MCMOE, .n_bits = NB, .bits = {2, 3, 4}, .group = 128, .norm_samples = PER,
                               .layer_lo = LAYER, .layer_hi = LAYER};
    struct got g = {0};
    int rc = mode_sens_run(&rt, &b, &o, emit, &g, &err);
    ok(!rc && g.layers == 1, "mode_sens_run, metric mcmoe, layer %d: %s", LAYER, rc ? err.msg : "ok");
    mode_rt_batch_free(&b);
    if (rc) return tap_done();

    /* the reference */
    if (load_samples(&rt, samples, 40, 16, &b, &err)) return tap_done();
    const int64_t N = b.n_rows;
    int *group = malloc(sizeof *group * (size_t)N);
    uint8_t *text = malloc((size_t)N);
    for (int q = 0; q < b.n_seq; q++)
        for (int64_t i = 0; i < b.seq[q].n_tok; i++) group[b.seq[q].row + i] = q / PER, text[b.seq[q].row + i] = b.seq[q].modality[i] == 0;
    const int G = (b.n_seq + PER - 1) / PER;
    float *h = malloc(sizeof *h * (size_t)(N * D)), *z = malloc(sizeof *z * (size_t)(N * D)), *zq = malloc(sizeof *zq * (size_t)(N * D));
    float *gu = malloc(sizeof *gu * (size_t)(2 * I * D)), *dn = malloc(sizeof *dn * (size_t)(D * I));
    float *qgu = malloc(sizeof *qgu * (size_t)(2 * I * D)), *qdn = malloc(sizeof *qdn * (size_t)(D * I));
    if (mode_rt_layer(&rt, &b, 0, NULL, &err)) BAIL_OUT(err.msg);
    memcpy(h, b.h, sizeof *h * (size_t)(N * D));
    struct cap c = {z, -1, NULL, NULL};
    struct mode_rt_hooks hk = {.ctx = &c, .moe = on_moe, .expert = on_expert};
    if (mode_rt_layer(&rt, &b, LAYER, &hk, &err)) BAIL_OUT(err.msg);
    double worst = 0;
    int compared = 0, nonzero = 0;
    for (int e = 0; e < E; e++) {
        struct mode_mat mg, mu, md;
        if (mode_model_expert(&m, LAYER, e, MODE_PROJ_GATE, &mg, &err) || mode_model_expert(&m, LAYER, e, MODE_PROJ_UP, &mu, &err) ||
            mode_model_expert(&m, LAYER, e, MODE_PROJ_DOWN, &md, &err) || mode_mat_to_f32(&mg, gu, &err) ||
            mode_mat_to_f32(&mu, gu + I * D, &err) || mode_mat_to_f32(&md, dn, &err))
            BAIL_OUT(err.msg);
        for (int bi = 0; bi < NB; bi++) {
            mcmoe_rtn(gu, I, D, bits[bi], qgu);          /* gate */
            mcmoe_rtn(gu + I * D, I, D, bits[bi], qgu + I * D); /* up */
            mcmoe_rtn(dn, D, I, bits[bi], qdn);          /* down */
            memcpy(b.h, h, sizeof *h * (size_t)(N * D));
            b.next_layer = LAYER;
            c.out = zq, c.expert = e, c.gu = qgu, c.dn = qdn;
            if (mode_rt_layer(&rt, &b, LAYER, &hk, &err)) BAIL_OUT(err.msg);
            double *s = calloc((size_t)(3 * G), sizeof *s); /* [all | text | vision][group] */
            for (int64_t r = 0; r < N; r++) {
                double e2 = 0;
                for (int64_t k = 0; k < D; k++) {
                    const double d = (double)z[r * D + k] - zq[r * D + k];
                    e2 += d * d;
                }
                s[group[r]] += e2;
                s[(text[r] ? 1 : 2) * G + group[r]] += e2;
            }
            double want[3] = {0};
            for (int k = 0; k < 3; k++)
                for (int q = 0; q < G; q++) want[k] += sqrt(s[k * G + q]);
            free(s);
            const double got3[3] = {g.da[e * NB + bi], g.dt[e * NB + bi], g.dv[e * NB + bi]};
            for (int k = 0; k < 3; k++) {
                /* the full outputs differ in f32 rounding beyond the expert's term: relative 1e-4
                 * (the error is at least 1e-3 of the output at these widths) */
                const double rel = fabs(got3[k] - want[k]) / fmax(want[k], 1e-30);
                if (want[k] == 0 && got3[k] == 0) continue;
                if (rel > worst) worst = rel;
                compared++;
                nonzero += want[k] > 0;
            }
        }
    }
    c.out = z;
    ok(compared >= 2 * E * NB && nonzero == compared && worst < 1e-4,
       "epsilon of %d (expert, width, token set) triples = MC-MoE's block-output norms within %.2g relative (worst %.3g)", compared, 1e-4,
       worst);
    /* a sum of norms over batches is not the norm over all tokens: with batches of 3 it exceeds
     * the norm of one batch holding every sample (the triangle inequality), which is what
     * norm_samples changes */
    mode_rt_batch_free(&b);
    if (load_samples(&rt, samples, 40, 16, &b, &err)) return tap_done();
    o.norm_samples = 1000;
    struct got g1 = {0};
    rc = mode_sens_run(&rt, &b, &o, emit, &g1, &err);
    int larger = 0;
    for (int i = 0; !rc && i < E * NB; i++) larger += g.da[i] > g1.da[i] || (g.da[i] == 0 && g1.da[i] == 0);
    ok(!rc && larger == E * NB, "batches of 3 samples give a larger sum of norms than one batch of all, for every expert and width");
    free(g.dt), free(g.dv), free(g.da), free(g1.dt), free(g1.dv), free(g1.da);
    free(group), free(text), free(h), free(z), free(zq), free(gu), free(dn), free(qgu), free(qdn);
    mode_rt_batch_free(&b);
    mode_rt_free(&rt);
    mode_model_close(&m);
    return tap_done();
}
