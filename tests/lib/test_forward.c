/* test_forward — the CPU forward pass against transformers on every sample of
 * tests/fixtures/reference/forward (tiny random Qwen3-VL-MoE; see tests/fixtures/README.md):
 * MRoPE positions exact; vision embeddings, deepstack features, every hidden state and the logits
 * within a relative error (||ours - ref|| / ||ref||) of 1e-4; the router's top-k identical wherever
 * the k-th and (k+1)-th probabilities differ by more than 1e-5, its weights within 1e-5. Both
 * checkpoint layouts, every sample alone and all five in one batch (layer-sequential execution).
 * Then mode-eval itself on a samples stream of the five: its --logits equal the goldens and its
 * perplexities equal those computed from the golden logits. With a GPU, the batch of five again
 * with the MoE layers resident on it (f32, same tolerances: sums in another order only) and the
 * attention-score hook served from it. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/eval.h"
#include "../../lib/ops.h"
#include "../../lib/runtime.h"
#include "../../lib/stream.h"
#include "../../lib/trace.h"
#include "tap.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* transformers computes the reference in f32 too; 1e-4 leaves room for summation order only */
#define REL_TOL 1e-4
#define PROB_GAP 1e-5 /* router ties closer than this may legitimately swap */
#define WEIGHT_TOL 1e-5

static const char *const names[] = {"text_only", "one_image_emoji", "one_image_rgb", "one_image_large", "two_images"};
#define N_SAMPLES 5

struct golden {
    struct mode_st_file f;
    struct mode_mp rec; /* the samples record built from it */
    msgpack_unpacked u;
    struct mode_sample s;
};

static const struct mode_st_tensor *gt(const struct golden *g, const char *fmt, int i)
{
    char name[64];
    snprintf(name, sizeof name, fmt, i);
    return mode_st_find(&g->f, name);
}

static float *f32_of(const struct mode_st_tensor *t)
{
    float *p = malloc((size_t)t->numel * sizeof *p + 4);
    mode_convert_ref(t->dtype, t->data, (size_t)t->numel, p);
    return p;
}

static int64_t i64_at(const struct mode_st_tensor *t, uint64_t i)
{
    int64_t v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

/* A samples record from a golden file: input_ids, the pad mask, every prediction scored, and the
 * golden pixel_values split per image. */
static int load_golden(struct golden *g, const char *name, int image_token, struct mode_err *err)
{
    char rel[128];
    snprintf(rel, sizeof rel, "reference/forward/%s.safetensors", name);
    int rc = mode_st_open(&g->f, fixture(rel), err);
    if (rc) return rc;
    const struct mode_st_tensor *ids = mode_st_find(&g->f, "input_ids"), *grid = mode_st_find(&g->f, "image_grid_thw"),
                                *pv = mode_st_find(&g->f, "pixel_values");
    int64_t n = ids->shape[0];
    int32_t *tok = malloc((size_t)n * 4);
    uint8_t *mod = malloc((size_t)n), *score = malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) {
        tok[i] = (int32_t)i64_at(ids, (uint64_t)i);
        mod[i] = tok[i] == image_token;
        score[i] = i > 0;
    }
    struct mode_mp *b = &g->rec;
    mode_mp_init(b);
    mode_mp_map_open(b);
    mode_mp_key(b, "id");
    mode_mp_str(b, name);
    mode_mp_key(b, "tokens");
    mode_mp_tensor(b, MODE_I32, 1, &n, tok);
    mode_mp_key(b, "modality");
    mode_mp_tensor(b, MODE_U8, 1, &n, mod);
    mode_mp_key(b, "score");
    mode_mp_tensor(b, MODE_U8, 1, &n, score);
    mode_mp_key(b, "images");
    mode_mp_array_open(b);
    int64_t row = 0;
    for (int64_t k = 0; grid && k < grid->shape[0]; k++) {
        int64_t t = i64_at(grid, (uint64_t)(3 * k)), h = i64_at(grid, (uint64_t)(3 * k + 1)), w = i64_at(grid, (uint64_t)(3 * k + 2));
        int64_t shape[2] = {t * h * w, pv->shape[1]};
        mode_mp_map_open(b);
        mode_mp_key(b, "grid");
        mode_mp_array_open(b);
        mode_mp_int(b, t);
        mode_mp_int(b, h);
        mode_mp_int(b, w);
        mode_mp_close(b);
        mode_mp_key(b, "pixel_values");
        mode_mp_tensor(b, MODE_F32, 2, shape, (const char *)pv->data + row * pv->shape[1] * 4);
        mode_mp_close(b);
        row += shape[0];
    }
    mode_mp_close(b);
    mode_mp_close(b);
    free(tok), free(mod), free(score);
    if ((rc = mode_mp_finish(b, err))) return rc;
    msgpack_unpacked_init(&g->u);
    size_t off = 0;
    msgpack_unpack_next(&g->u, b->buf, b->len, &off);
    struct mode_rec r = {&g->u.data, name, "record"};
    return mode_sample_parse(&r, &g->s, err);
}

static void free_golden(struct golden *g)
{
    mode_sample_free(&g->s);
    msgpack_unpacked_destroy(&g->u);
    mode_mp_free(&g->rec);
    mode_st_close(&g->f);
}

static double rel_err(const float *a, const float *ref, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* router hook: compare every sequence's rows with its golden */
struct ctx {
    struct golden *g;
    const char *model;
    double worst_logit_rel;
    int64_t topk_checked, topk_mismatch, topk_ties;
    double worst_weight;
};

static int on_router(void *vctx, int layer, const struct mode_rt_batch *b, const float *logits, const int32_t *experts,
                     const float *weights, struct mode_err *err)
{
    (void)err;
    struct ctx *c = vctx;
    for (int s = 0; s < b->n_seq; s++) {
        const struct golden *g = &c->g[s];
        const struct mode_rt_seq *q = &b->seq[s];
        const struct mode_st_tensor *rl = gt(g, "router_logits.%d", layer), *ti = gt(g, "topk_index.%d", layer),
                                    *tw = gt(g, "topk_weight.%d", layer);
        int E = (int)rl->shape[1], K = (int)ti->shape[1];
        float *ref = f32_of(rl), *refw = f32_of(tw);
        double re = rel_err(logits + q->row * E, ref, q->n_tok * E);
        c->worst_logit_rel = re > c->worst_logit_rel ? re : c->worst_logit_rel;
        for (int64_t i = 0; i < q->n_tok; i++) {
            /* reference probabilities, sorted, to know whether the k-th choice is a near tie */
            float p[4096];
            memcpy(p, ref + i * E, (size_t)E * sizeof *p);
            float mx = p[0], sum = 0;
            for (int e = 1; e < E; e++) mx = p[e] > mx ? p[e] : mx;
            for (int e = 0; e < E; e++) sum += (p[e] = expf(p[e] - mx));
            for (int e = 0; e < E; e++) p[e] /= sum;
            float kth = 1, next = 0; /* k-th largest and (k+1)-th largest */
            for (int j = 0; j < K; j++) {
                float v = p[i64_at(ti, (uint64_t)(i * K + j))];
                kth = v < kth ? v : kth;
            }
            for (int e = 0; e < E; e++) {
                bool in = false;
                for (int j = 0; j < K; j++) in |= i64_at(ti, (uint64_t)(i * K + j)) == e;
                if (!in && p[e] > next) next = p[e];
            }
            if (kth - next <= PROB_GAP) {
                c->topk_ties++;
                continue;
            }
            c->topk_checked++;
            for (int j = 0; j < K; j++) {
                int64_t want = i64_at(ti, (uint64_t)(i * K + j));
                int got = experts[(q->row + i) * K + j];
                if (got != want) c->topk_mismatch++;
                double d = fabs((double)weights[(q->row + i) * K + j] - refw[i * K + j]);
                c->worst_weight = d > c->worst_weight ? d : c->worst_weight;
            }
        }
        free(ref), free(refw);
    }
    return MODE_OK;
}

/* Runs a batch of the given samples through the model and compares everything. */
static int attn_block; /* 0: the runtime's default */
static bool on_gpu;    /* mode_rt_device CUDA: the MoE layers resident on the GPU */

static void check_batch(const char *model_dir, struct golden *g, int n, const char *label)
{
    struct mode_err err = {0};
    struct mode_model m;
    if (mode_model_open(&m, model_dir, &err)) {
        diag("%s", err.msg);
        ok(0, "%s: model opens", label);
        return;
    }
    struct mode_rt rt;
    mode_rt_init(&rt, &m, &err);
    rt.attn_block = attn_block;
    if (on_gpu && !is_int(mode_rt_device(&rt, MODE_DEVICE_CUDA, &err), MODE_OK, "%s: the GPU taken", label)) diag("%s", err.msg);
    struct mode_rt_batch b;
    mode_rt_batch_init(&b);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = mode_rt_batch_add(&rt, &b, &g[i].s, NULL, &err);
    if (!is_int(rc, MODE_OK, "%s: samples added", label)) diag("%s", err.msg);
    /* positions */
    int pos_bad = 0;
    for (int i = 0; i < n; i++) {
        const struct mode_st_tensor *p = mode_st_find(&g[i].f, "position_ids");
        for (int64_t j = 0; j < 3 * b.seq[i].n_tok; j++) pos_bad += b.seq[i].pos[j] != i64_at(p, (uint64_t)j);
    }
    is_int(pos_bad, 0, "%s: MRoPE position ids exact", label);
    /* vision tower */
    if (!is_int(mode_rt_vision(&rt, &b, &err), MODE_OK, "%s: vision tower runs", label)) diag("%s", err.msg);
    const int64_t D = m.cfg.text.n_embd;
    double worst_vis = 0, worst_ds = 0, worst_h[8] = {0}, worst_h_pre[8] = {0}, worst_logits = 0;
    for (int i = 0; i < n; i++) {
        const struct mode_rt_seq *q = &b.seq[i];
        const struct mode_st_tensor *ve = mode_st_find(&g[i].f, "vision_embeds");
        if (ve) {
            float *ref = f32_of(ve), *ours = malloc((size_t)(q->n_img * D) * sizeof *ours);
            for (int64_t j = 0; j < q->n_img; j++) memcpy(ours + j * D, b.h + (q->row + q->img[j]) * D, (size_t)D * 4);
            double e = rel_err(ours, ref, q->n_img * D);
            worst_vis = e > worst_vis ? e : worst_vis;
            for (int k = 0; k < m.cfg.vision.n_deepstack; k++) {
                float *dref = f32_of(gt(&g[i], "deepstack.%d", k));
                e = rel_err(q->deepstack + (int64_t)k * q->n_img * D, dref, q->n_img * D);
                worst_ds = e > worst_ds ? e : worst_ds;
                free(dref);
            }
            free(ref), free(ours);
        }
        float *h0 = f32_of(gt(&g[i], "hidden.%d", 0));
        double e = rel_err(b.h + q->row * D, h0, q->n_tok * D);
        worst_h[0] = e > worst_h[0] ? e : worst_h[0];
        free(h0);
    }
    if (!ok(worst_vis <= REL_TOL, "%s: vision embeddings (rel err %.2e)", label, worst_vis)) diag("worst %.3e", worst_vis);
    ok(worst_ds <= REL_TOL, "%s: deepstack features (rel err %.2e)", label, worst_ds);
    ok(worst_h[0] <= REL_TOL, "%s: hidden.0, the embeddings with images scattered (rel err %.2e)", label, worst_h[0]);
    struct ctx c = {g, model_dir, 0, 0, 0, 0, 0};
    struct mode_rt_hooks hooks = {.ctx = &c, .router = on_router};
    const int L = m.cfg.text.n_layer, nds = m.cfg.vision.n_deepstack;
    for (int l = 0; l < L && !rc; l++) {
        if ((rc = mode_rt_layer(&rt, &b, l, &hooks, &err))) {
            diag("%s", err.msg);
            break;
        }
        if (l + 1 >= L) break;
        for (int i = 0; i < n; i++) {
            const struct mode_rt_seq *q = &b.seq[i];
            float *ref = f32_of(gt(&g[i], "hidden.%d", l + 1));
            double e = rel_err(b.h + q->row * D, ref, q->n_tok * D);
            worst_h[l + 1] = e > worst_h[l + 1] ? e : worst_h[l + 1];
            if (l < nds && q->n_img) {
                /* the same layer output without this layer's deepstack addition */
                float *pre = malloc((size_t)(q->n_tok * D) * sizeof *pre);
                memcpy(pre, b.h + q->row * D, (size_t)(q->n_tok * D) * 4);
                for (int64_t j = 0; j < q->n_img; j++)
                    for (int64_t d = 0; d < D; d++) pre[q->img[j] * D + d] -= q->deepstack[((int64_t)l * q->n_img + j) * D + d];
                e = rel_err(pre, ref, q->n_tok * D);
                free(pre);
            }
            worst_h_pre[l + 1] = e > worst_h_pre[l + 1] ? e : worst_h_pre[l + 1];
            free(ref);
        }
    }
    is_int(rc, MODE_OK, "%s: %d decoder layers run", label, L);
    for (int l = 1; l < L; l++) {
        /* transformers records a decoder layer's output before the deepstack addition that follows it */
        ok(worst_h_pre[l] <= REL_TOL, "%s: hidden.%d = layer %d output before its deepstack addition (rel err %.2e; after: %.2e)",
           label, l, l - 1, worst_h_pre[l], worst_h[l]);
    }
    ok(c.worst_logit_rel <= REL_TOL, "%s: router logits of every layer (rel err %.2e)", label, c.worst_logit_rel);
    is_int(c.topk_mismatch, 0, "%s: top-k experts identical on %lld token-layers (%lld near ties skipped)", label,
           (long long)c.topk_checked, (long long)c.topk_ties);
    ok(c.worst_weight <= WEIGHT_TOL, "%s: top-k weights within %g (worst %.2e)", label, WEIGHT_TOL, c.worst_weight);
    /* final norm and logits */
    const int64_t V = m.cfg.text.n_vocab;
    double worst_final = 0;
    for (int i = 0; i < n && !rc; i++) {
        const struct mode_rt_seq *q = &b.seq[i];
        float *lg = malloc((size_t)(q->n_tok * V) * sizeof *lg), *ref = f32_of(mode_st_find(&g[i].f, "logits"));
        if ((rc = mode_rt_logits(&rt, &b, i, 0, q->n_tok, lg, &err))) diag("%s", err.msg);
        double e = rel_err(lg, ref, q->n_tok * V);
        worst_logits = e > worst_logits ? e : worst_logits;
        float *h4 = f32_of(gt(&g[i], "hidden.%d", L)), *normed = malloc((size_t)(q->n_tok * D) * sizeof *normed);
        mode_rmsnorm_ref(b.h + q->row * D, rt.out_norm, (float)m.cfg.text.rms_eps, q->n_tok, D, normed);
        e = rel_err(normed, h4, q->n_tok * D);
        worst_final = e > worst_final ? e : worst_final;
        free(lg), free(ref), free(h4), free(normed);
    }
    ok(worst_final <= REL_TOL, "%s: hidden.%d, after the final norm (rel err %.2e)", label, L, worst_final);
    ok(!rc && worst_logits <= REL_TOL, "%s: logits (rel err %.2e)", label, worst_logits);
    if (on_gpu)
        is_int(rt.n_resident, L, "%s: every layer ran resident on the GPU (%lld fell back)", label, (long long)rt.n_resident_fallback);
    mode_rt_batch_free(&b);
    mode_rt_free(&rt);
    mode_model_close(&m);
}

/* attention-score hook: every masked row is a probability distribution, causal */
struct attn_ctx {
    uint8_t *rows;   /* mask of the query rows */
    int64_t last;    /* last masked row */
    int calls;
    double worst_sum, worst_future;
};

static const uint8_t *attn_rows(void *vctx, int layer, int seq)
{
    (void)layer, (void)seq;
    return ((struct attn_ctx *)vctx)->rows;
}

static int attn_score(void *vctx, int layer, int seq, const float *score, struct mode_err *err)
{
    (void)layer, (void)seq, (void)err;
    struct attn_ctx *c = vctx;
    double sum = 0, future = 0;
    for (int64_t j = 0; j <= c->last; j++) sum += score[j];
    for (int64_t j = c->last + 1; j < 44; j++) future += fabs(score[j]);
    c->worst_sum = fabs(sum - 1) > c->worst_sum ? fabs(sum - 1) : c->worst_sum;
    c->worst_future = future > c->worst_future ? future : c->worst_future;
    c->calls++;
    return MODE_OK;
}

static void check_attn_hook(struct golden *g, const char *model_dir)
{
    struct mode_err err = {0};
    struct mode_model m;
    struct mode_rt rt;
    struct mode_rt_batch b;
    mode_model_open(&m, model_dir, &err);
    mode_rt_init(&rt, &m, &err);
    const char *dev = on_gpu ? "cuda: " : "";
    if (on_gpu && !is_int(mode_rt_device(&rt, MODE_DEVICE_CUDA, &err), MODE_OK, "cuda: the GPU taken")) diag("%s", err.msg);
    mode_rt_batch_init(&b);
    mode_rt_batch_add(&rt, &b, &g->s, NULL, &err); /* one_image_emoji: 44 tokens */
    uint8_t rows[44] = {0};
    rows[3] = rows[20] = rows[30] = 1; /* mean over these rows: columns past 30 get nothing */
    struct attn_ctx c = {rows, 30, 0, 0, 0};
    struct mode_rt_hooks hooks = {.ctx = &c, .attn_rows = attn_rows, .attn = attn_score};
    is_int(mode_rt_forward(&rt, &b, &hooks, &err), MODE_OK, "%sforward with the attention-score hook", dev);
    is_int(c.calls, m.cfg.text.n_layer, "%sthe hook is called once per layer", dev);
    ok(c.worst_sum < 1e-5, "%sscores over the masked rows sum to 1 (worst deviation %.2e)", dev, c.worst_sum);
    ok(c.worst_future == 0, "%sno score after the last masked row (causal)", dev);
    if (on_gpu) is_int(rt.n_resident, m.cfg.text.n_layer, "cuda: the layers ran resident");
    mode_rt_batch_free(&b);
    mode_rt_free(&rt);
    mode_model_close(&m);
}

/* expert override hook: the same weights change nothing; zero weights on some rows change only
 * those rows' MoE outputs, bit for bit */
struct ov_ctx {
    const struct mode_model *m;
    int layer, expert;
    float *gu, *dn;
    const uint8_t *rows;
    float *moe_out; /* copy of the MoE output of `layer` */
    float *all_gu, *all_dn; /* expert < 0: every expert's own weights, one slot each (what the hook
                               hands over lives until the MoE block ends: runtime.h) */
};

static int ov_expert(void *vctx, int layer, int expert, struct mode_rt_expert_override *ov, struct mode_err *err)
{
    (void)err;
    struct ov_ctx *c = vctx;
    if (layer != c->layer || (c->expert >= 0 && expert != c->expert)) return MODE_OK;
    float *gu = c->gu, *dn = c->dn;
    if (c->expert < 0) { /* every expert: its own weights, re-materialised in nn.Linear orientation */
        const struct mode_text_config *t = &c->m->cfg.text;
        const size_t ne = (size_t)t->n_ff_exp * t->n_embd;
        gu = c->all_gu + (size_t)expert * 2 * ne, dn = c->all_dn + (size_t)expert * ne;
        struct mode_mat g, u, d;
        mode_model_expert(c->m, layer, expert, MODE_PROJ_GATE, &g, err);
        mode_model_expert(c->m, layer, expert, MODE_PROJ_UP, &u, err);
        mode_model_expert(c->m, layer, expert, MODE_PROJ_DOWN, &d, err);
        mode_mat_to_f32(&g, gu, err);
        mode_mat_to_f32(&u, gu + ne, err);
        mode_mat_to_f32(&d, dn, err);
    }
    ov->gate_up = gu;
    ov->down = dn;
    ov->rows = c->rows;
    return MODE_OK;
}

static int ov_moe(void *vctx, int layer, const struct mode_rt_batch *b, const float *x, const int32_t *experts,
                  const float *weights, const float *out, struct mode_err *err)
{
    (void)x, (void)experts, (void)weights, (void)err;
    struct ov_ctx *c = vctx;
    if (layer == c->layer) memcpy(c->moe_out, out, (size_t)(b->n_rows * c->m->cfg.text.n_embd) * sizeof(float));
    return MODE_OK;
}

static void run_with(const struct mode_model *m, struct golden *g, struct ov_ctx *c, float *logits)
{
    struct mode_err err = {0};
    struct mode_rt rt;
    struct mode_rt_batch b;
    mode_rt_init(&rt, m, &err);
    mode_rt_batch_init(&b);
    mode_rt_batch_add(&rt, &b, &g->s, NULL, &err);
    struct mode_rt_hooks hooks = {.ctx = c, .expert = c->gu ? ov_expert : NULL, .moe = ov_moe};
    if (mode_rt_forward(&rt, &b, &hooks, &err) || mode_rt_logits(&rt, &b, 0, 0, b.seq[0].n_tok, logits, &err)) diag("%s", err.msg);
    mode_rt_batch_free(&b);
    mode_rt_free(&rt);
}

static void check_override(struct golden *g, const char *model_dir)
{
    struct mode_err err = {0};
    struct mode_model m;
    mode_model_open(&m, model_dir, &err);
    const struct mode_text_config *t = &m.cfg.text;
    int64_t n = g->s.n_tok, D = t->n_embd, V = t->n_vocab;
    float *base = malloc((size_t)(n * V) * 4), *same = malloc((size_t)(n * V) * 4);
    float *out0 = malloc((size_t)(n * D) * 4), *out1 = malloc((size_t)(n * D) * 4);
    float *gu = calloc((size_t)(2 * t->n_ff_exp * D), 4), *dn = calloc((size_t)(t->n_ff_exp * D), 4);
    struct ov_ctx c = {&m, 1, -1, NULL, NULL, NULL, out0, NULL, NULL};
    c.all_gu = calloc((size_t)(t->n_expert * 2 * t->n_ff_exp * D), 4), c.all_dn = calloc((size_t)(t->n_expert * t->n_ff_exp * D), 4);
    run_with(&m, g, &c, base);
    c.gu = gu, c.dn = dn, c.moe_out = out1;
    run_with(&m, g, &c, same);
    ok(rel_err(same, base, n * V) <= 1e-6, "overriding every expert of layer 1 with its own weights changes nothing (rel %.1e)",
       rel_err(same, base, n * V));
    /* zero weights for expert 3 of layer 1, image rows only */
    memset(gu, 0, (size_t)(2 * t->n_ff_exp * D) * 4);
    memset(dn, 0, (size_t)(t->n_ff_exp * D) * 4);
    uint8_t *rows = calloc((size_t)n, 1);
    for (int64_t i = 0; i < n; i++) rows[i] = mode_sample_modality(&g->s, i) == MODE_MOD_IMAGE;
    c.expert = 3, c.rows = rows;
    run_with(&m, g, &c, same);
    int64_t text_same = 0, text = 0, img_changed = 0;
    for (int64_t i = 0; i < n; i++) {
        bool eq = !memcmp(out0 + i * D, out1 + i * D, (size_t)D * 4);
        if (!rows[i]) text++, text_same += eq;
        else img_changed += !eq;
    }
    is_int(text_same, text, "an override restricted to image rows leaves every text row's MoE output bit-identical");
    ok(img_changed > 0, "... and changes %lld image rows (those routed to expert 3)", (long long)img_changed);
    free(base), free(same), free(out0), free(out1), free(gu), free(dn), free(rows), free(c.all_gu), free(c.all_dn);
    mode_model_close(&m);
}

/* mode-eval on a stream of the goldens' samples: logits and metrics */
static void check_filter(struct golden *g, const char *model_dir)
{
    struct mode_err err = {0};
    char samples[4096], logits[4096], metrics[4096], cmd[32768];
    snprintf(samples, sizeof samples, "%s/samples.msgpack", tap_tmpdir());
    snprintf(logits, sizeof logits, "%s/logits.msgpack", tap_tmpdir());
    snprintf(metrics, sizeof metrics, "%s/metrics.json", tap_tmpdir());
    int fd = open(samples, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    struct mode_stream_writer w;
    struct mode_mp h;
    mode_mp_init(&h);
    mode_stream_header_begin(&h, "samples", "test_forward");
    mode_mp_close(&h);
    mode_stream_writer_init(&w, fd, samples, &err);
    mode_stream_write_header(&w, &h, &err);
    for (int i = 0; i < N_SAMPLES; i++) mode_stream_write_record(&w, &g[i].rec, &err);
    mode_stream_write_trailer(&w, NULL, &err);
    is_int(mode_stream_writer_free(&w, &err), MODE_OK, "samples stream of the goldens written");
    close(fd);
    mode_mp_free(&h);
    const char *bin = getenv("MODE_BIN");
    snprintf(cmd, sizeof cmd, "'%s/mode-eval' -m '%s' --batch-tokens 100 --logits '%s' -o '%s' '%s'", bin ? bin : "bin", model_dir,
             logits, metrics, samples);
    is_int(system(cmd), 0, "mode-eval runs (batches of about 100 tokens)");
    /* logits stream: one record per sample, equal to the golden logits */
    struct mode_stream_reader r;
    int rc = mode_stream_open(&r, logits, &err);
    if (!rc) rc = mode_stream_read_header(&r, "logits", &err);
    double worst = 0;
    int n = 0;
    struct mode_eval ev;
    mode_eval_init(&ev);
    for (const msgpack_object *o; !rc;) {
        if ((rc = mode_stream_next(&r, &o, &err)) || !o) break;
        struct mode_rec rec = {o, "logits", "record"};
        struct mode_tensor t;
        int64_t sample = -1;
        if ((rc = mode_rec_int(&rec, "sample", true, &sample, &err)) ||
            (rc = mode_rec_tensor(&rec, "logits", true, &t, MODE_F32, 2, NULL, &err)))
            break;
        if (sample != n) {
            ok(0, "logits records in sample order");
            break;
        }
        float *ours = f32_of(mode_st_find(&g[n].f, "logits")), *got = malloc(t.nbytes);
        memcpy(got, t.data, t.nbytes);
        double e = rel_err(got, ours, (int64_t)t.numel);
        worst = e > worst ? e : worst;
        /* the metrics the golden logits give */
        const struct mode_sample *s = &g[n].s;
        int32_t *tok = malloc((size_t)s->n_tok * 4);
        uint8_t *score = malloc((size_t)s->n_tok);
        int64_t n_img = 0;
        for (int64_t i = 0; i < s->n_tok; i++) {
            tok[i] = mode_sample_token(s, i);
            score[i] = mode_sample_score(s, i);
            n_img += mode_sample_modality(s, i) == MODE_MOD_IMAGE;
        }
        mode_eval_begin(&ev, s->n_tok, score, n_img);
        mode_eval_rows(&ev, ours, 0, s->n_tok, t.shape[1], tok, s->n_tok, score);
        mode_eval_end(&ev);
        free(tok), free(score), free(ours), free(got);
        n++;
    }
    mode_stream_reader_free(&r);
    is_int(n, N_SAMPLES, "--logits holds one record per sample");
    ok(!rc && worst <= REL_TOL, "--logits equal the golden logits (rel err %.2e)", worst);
    json_t *rep = json_load_file(metrics, 0, NULL);
    json_t *text = json_object_get(json_object_get(rep, "metrics"), "text");
    double ppl = json_real_value(json_object_get(text, "perplexity"));
    double want = exp((ev.g[0][0].nll + ev.g[1][0].nll) / (double)(ev.g[0][0].tokens + ev.g[1][0].tokens));
    ok(fabs(ppl - want) <= 1e-4 * want, "text perplexity %.6f equals the goldens' %.6f", ppl, want);
    is_int(json_integer_value(json_object_get(text, "tokens")), 30 + 43 + 47 + 81 + 57, "every prediction of the 5 records is scored");
    json_decref(rep);
    /* mode-route-trace on the same samples: the goldens' top-k in every record */
    char trace[4096];
    snprintf(trace, sizeof trace, "%s/trace.msgpack", tap_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s/mode-route-trace' -m '%s' --batch-tokens 60 -o '%s' '%s'", bin ? bin : "bin", model_dir, trace,
             samples);
    is_int(system(cmd), 0, "mode-route-trace runs");
    rc = mode_stream_open(&r, trace, &err);
    if (!rc) rc = mode_stream_read_header(&r, "trace", &err);
    int records = 0, mismatch = 0, attn_present = 0;
    double worst_w = 0;
    for (const msgpack_object *o; !rc;) {
        if ((rc = mode_stream_next(&r, &o, &err)) || !o) break;
        struct mode_rec rec = {o, "trace", "record"};
        struct mode_trace_rec t;
        if ((rc = mode_trace_parse(&rec, &t, &err))) break;
        const struct golden *gg = &g[t.sample];
        const struct mode_st_tensor *ti = gt(gg, "topk_index.%d", (int)t.layer), *tw = gt(gg, "topk_weight.%d", (int)t.layer);
        float *refw = f32_of(tw);
        for (int64_t i = 0; i < t.n_tok; i++)
            for (int j = 0; j < t.k; j++) {
                mismatch += mode_trace_expert(&t, i, j) != i64_at(ti, (uint64_t)(i * t.k + j));
                double d = fabs(mode_trace_weight(&t, i, j) - refw[i * t.k + j]);
                worst_w = d > worst_w ? d : worst_w;
            }
        attn_present += t.has_attn == (t.n_img > 0);
        free(refw);
        records++;
    }
    if (rc) diag("%s", err.msg);
    mode_stream_reader_free(&r);
    is_int(records, N_SAMPLES * 4, "a trace record per sample and layer");
    is_int(attn_present, records, "attention scores exactly in the records of samples with images");
    is_int(mismatch, 0, "every traced expert is the golden's (no near ties in these samples)");
    ok(worst_w <= WEIGHT_TOL, "traced weights within %g of the golden's (worst %.2e)", WEIGHT_TOL, worst_w);

    /* a stream made for another model is refused */
    snprintf(cmd, sizeof cmd, "printf '%%s\\n' '{\"magic\":\"MODE\",\"version\":1,\"kind\":\"samples\",\"model\":{\"arch\":"
             "\"Qwen3VLMoeForConditionalGeneration\",\"config\":\"0000\",\"name\":\"other\"}}' | '%s/mode-cat' -J | "
             "'%s/mode-eval' -m '%s' 2>'%s/err'",
             bin ? bin : "bin", bin ? bin : "bin", model_dir, tap_tmpdir());
    int st = system(cmd);
    is_int(WIFEXITED(st) ? WEXITSTATUS(st) : -1, MODE_EDATA, "a samples stream of another model: exit 65");
}

int main(void)
{
    struct mode_err err = {0};
    struct golden g[N_SAMPLES];
    memset(g, 0, sizeof g);
    const char *dirs[2] = {"reference/tiny-random-qwen3vlmoe", "reference/tiny-random-qwen3vlmoe-v5layout"};
    for (int i = 0; i < N_SAMPLES; i++)
        if (!is_int(load_golden(&g[i], names[i], 2046, &err), MODE_OK, "golden %s loads", names[i])) diag("%s", err.msg);
    for (int d = 0; d < 2; d++) {
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", fixture(dirs[d]));
        const char *layout = d ? "v5" : "hub";
        for (int i = 0; i < N_SAMPLES; i++) {
            char label[96];
            snprintf(label, sizeof label, "%s/%s", layout, names[i]);
            check_batch(dir, &g[i], 1, label);
        }
        char label[64];
        snprintf(label, sizeof label, "%s/all five in one batch", layout);
        check_batch(dir, g, N_SAMPLES, label);
        /* attention in blocks of 7 query rows: the same numbers */
        attn_block = 7;
        snprintf(label, sizeof label, "%s/all five, attention blocks of 7 rows", layout);
        check_batch(dir, g, N_SAMPLES, label);
        attn_block = 0;
    }
    char hub[4096];
    snprintf(hub, sizeof hub, "%s", fixture(dirs[0]));
    check_filter(g, hub);
    check_attn_hook(&g[1], hub);
    if (mode_cuda_available(&err) == MODE_OK) { /* the same goldens with the layers on the GPU (f32) */
        on_gpu = true;
        for (int d = 0; d < 2; d++) {
            char dir[4096], label[64];
            snprintf(dir, sizeof dir, "%s", fixture(dirs[d]));
            snprintf(label, sizeof label, "cuda/%s/all five in one batch", d ? "v5" : "hub");
            check_batch(dir, g, N_SAMPLES, label);
        }
        check_attn_hook(&g[1], hub);
        on_gpu = false;
    } else
        diag("no GPU: the resident layers are not checked (%s)", err.msg);
    check_override(&g[3], hub);
    for (int i = 0; i < N_SAMPLES; i++) free_golden(&g[i]);
    return tap_done();
}
