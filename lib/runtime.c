/* runtime.c — Qwen3-VL-MoE forward pass on the CPU, layer-sequential over a batch (runtime.h). */
#include "runtime.h"

#include "attn.h"
#include "ops.h"
#include "rtmoe.h"
#include "rtlayer.h"
#include "layer.h"
#include "pool.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------------------------- */

static void *xcalloc(size_t n, size_t size, struct mode_err *err, const char *what)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) mode_err_oom(err, n * size, what);
    return p;
}

/* A stored tensor as f32 in a new buffer (NULL on failure, err set). */
static float *to_f32(const struct mode_st_tensor *t, struct mode_err *err)
{
    if (!t) return NULL;
    float *p = xcalloc((size_t)t->numel, sizeof *p, err, t->name);
    if (p && mode_st_to_f32(t, p, err)) {
        free(p);
        return NULL;
    }
    return p;
}

/* The same in the call's scratch (every element written by the conversion). */
static float *scratch_f32(struct mode_arena *a, const struct mode_st_tensor *t, struct mode_err *err)
{
    if (!t) return NULL;
    float *p = mode_arena_alloc(a, sizeof *p * (size_t)t->numel, err, t->name);
    return p && mode_st_to_f32(t, p, err) ? NULL : p;
}

/* n floats of the call's scratch: zeroed (as calloc) or, where every element is written before
 * it is read, left as they are */
static float *scratch_zero(struct mode_arena *a, int64_t n, struct mode_err *err, const char *what)
{
    return mode_arena_calloc(a, (size_t)n, sizeof(float), err, what);
}
static float *scratch_raw(struct mode_arena *a, int64_t n, struct mode_err *err, const char *what)
{
    return mode_arena_alloc(a, sizeof(float) * (size_t)n, err, what);
}

/* rotary inverse frequencies as torch computes them in f32: 1 / base^(2j/dim) */
static float *inv_freqs(double base, int dim, struct mode_err *err)
{
    float *f = xcalloc((size_t)dim / 2, sizeof *f, err, "rotary frequencies");
    if (!f) return NULL;
    for (int j = 0; j < dim / 2; j++) f[j] = 1.0f / powf((float)base, (float)(2 * j) / (float)dim);
    return f;
}

int mode_rt_init(struct mode_rt *rt, const struct mode_model *m, struct mode_err *err)
{
    memset(rt, 0, sizeof *rt);
    rt->m = m;
    const struct mode_text_config *t = &m->cfg.text;
    const struct mode_vision_config *v = &m->cfg.vision;
    if (t->head_dim > 4096 || v->n_embd / v->n_head > 4096)
        return mode_err_set(err, MODE_EDATA, "%s: head size above 4096 is not supported", m->dir);
    rt->inv_freq = inv_freqs(t->rope_theta, t->head_dim, err);
    /* vision rotary: dim = head_dim / 2 (rows and columns get half each) */
    rt->vis_inv_freq = inv_freqs(v->rope_theta, v->n_embd / v->n_head / 2, err);
    rt->out_norm = to_f32(m->out_norm, err);
    if (!rt->inv_freq || !rt->vis_inv_freq || !rt->out_norm) {
        mode_rt_free(rt);
        return err->code ? err->code : MODE_EUNAVAILABLE;
    }
    return MODE_OK;
}

int mode_rt_device(struct mode_rt *rt, enum mode_device d, struct mode_err *err)
{
    mode_rtmoe_free(rt->gpu);
    mode_rtlayer_free(rt->resident);
    rt->gpu = NULL, rt->resident = NULL;
    if (d != MODE_DEVICE_CUDA) return MODE_OK;
    int rc = mode_rtmoe_init(&rt->gpu, rt->m, err);
    const char *env = getenv("MODE_RT_RESIDENT");
    if (!rc && !(env && !strcmp(env, "0"))) rc = mode_rtlayer_init(&rt->resident, err);
    return rc;
}

void mode_rt_free(struct mode_rt *rt)
{
    mode_rtmoe_free(rt->gpu);
    mode_rtlayer_free(rt->resident);
    free(rt->inv_freq);
    free(rt->vis_inv_freq);
    free(rt->lm_head);
    free(rt->out_norm);
    mode_arena_free(&rt->scratch);
    memset(rt, 0, sizeof *rt);
}

/* ---- batch ------------------------------------------------------------------------------- */

void mode_rt_batch_init(struct mode_rt_batch *b) { memset(b, 0, sizeof *b); }

static void free_image_copy(struct mode_image *im)
{
    free((void *)im->pixels.data);
    free((void *)im->pixel_values.data);
    free((void *)im->embeds.data); /* the deepstack features share its block */
    im->pixels.data = im->pixel_values.data = im->embeds.data = im->deepstack.data = NULL;
}

/* the image with its pixel data (or its embeddings) copied: views into the record must not
 * outlive it */
static int copy_image(const struct mode_image *src, struct mode_image *dst, struct mode_err *err)
{
    *dst = *src;
    dst->source = NULL;
    dst->source_len = 0;
    if (src->has_embeds) {
        char *p = malloc(src->embeds.nbytes + src->deepstack.nbytes + 1);
        if (!p) return mode_err_oom(err, src->embeds.nbytes + src->deepstack.nbytes, "image embeddings");
        memcpy(p, src->embeds.data, src->embeds.nbytes);
        memcpy(p + src->embeds.nbytes, src->deepstack.data, src->deepstack.nbytes);
        dst->embeds.data = p, dst->deepstack.data = p + src->embeds.nbytes;
        return MODE_OK;
    }
    const struct mode_tensor *t = src->has_pixels ? &src->pixels : &src->pixel_values;
    void *p = malloc(t->nbytes ? t->nbytes : 1);
    if (!p) return mode_err_oom(err, t->nbytes, "image pixels");
    memcpy(p, t->data, t->nbytes);
    if (src->has_pixels) dst->pixels.data = p;
    else dst->pixel_values.data = p;
    return MODE_OK;
}

void mode_rt_batch_free(struct mode_rt_batch *b)
{
    for (int i = 0; i < b->n_seq; i++) {
        struct mode_rt_seq *q = &b->seq[i];
        free(q->id);
        free(q->tokens);
        free(q->modality);
        free(q->score);
        free(q->pos);
        free(q->img);
        free(q->deepstack);
    }
    for (int i = 0; i < b->n_image; i++) free_image_copy(&b->image[i].data);
    free(b->seq);
    free(b->image);
    free(b->h);
    memset(b, 0, sizeof *b);
}

void mode_rt_positions(const struct mode_config *c, const struct mode_sample *s, int32_t *pos)
{
    const int m = c->vision.merge_size;
    int64_t n = s->n_tok, i = 0;
    int32_t cur = 0;
    int k = 0;
    while (i < n) {
        if (mode_sample_modality(s, i) == MODE_MOD_TEXT) {
            pos[i] = pos[n + i] = pos[2 * n + i] = cur++;
            i++;
            continue;
        }
        /* an image: t x (h/m) x (w/m) grid of positions starting at cur */
        const int64_t *g = s->images[k++].grid;
        int64_t gh = g[1] / m, gw = g[2] / m;
        for (int64_t t = 0; t < g[0]; t++)
            for (int64_t y = 0; y < gh; y++)
                for (int64_t x = 0; x < gw; x++, i++) {
                    pos[i] = cur + (int32_t)t;
                    pos[n + i] = cur + (int32_t)y;
                    pos[2 * n + i] = cur + (int32_t)x;
                }
        cur += (int32_t)((gh > gw ? gh : gw)); /* transformers: max(h, w) / merge */
    }
}

int mode_rt_batch_add(struct mode_rt *rt, struct mode_rt_batch *b, const struct mode_sample *s,
                      const struct mode_rec *where, struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_config *c = &m->cfg;
    struct mode_rec anon = {NULL, "<samples>", "sample"};
    int rc = mode_sample_check(s, c, where ? where : &anon, err);
    if (rc) return rc;
    if (b->next_layer || b->vision_done)
        return mode_err_set(err, MODE_EINTERNAL, "samples must be added before the first layer runs");
    if (b->n_seq == b->cap_seq) {
        int nc = b->cap_seq ? 2 * b->cap_seq : 16;
        struct mode_rt_seq *ns = realloc(b->seq, (size_t)nc * sizeof *ns);
        if (!ns) return mode_err_oom(err, (size_t)nc * sizeof *ns, "sequences");
        b->seq = ns;
        b->cap_seq = nc;
    }
    const int64_t n = s->n_tok, D = c->text.n_embd;
    if (b->n_rows + n > b->cap_rows) {
        int64_t nc = b->cap_rows ? 2 * b->cap_rows : 4096;
        while (nc < b->n_rows + n) nc *= 2;
        float *nh = realloc(b->h, (size_t)(nc * D) * sizeof *nh);
        if (!nh) return mode_err_oom(err, (size_t)(nc * D) * sizeof *nh, "hidden states");
        b->h = nh;
        b->cap_rows = nc;
    }
    struct mode_rt_seq *q = &b->seq[b->n_seq];
    memset(q, 0, sizeof *q);
    q->n_tok = n;
    q->row = b->n_rows;
    q->id = strndup(s->id, s->id_len);
    q->tokens = xcalloc((size_t)n, sizeof *q->tokens, err, "tokens");
    q->modality = xcalloc((size_t)n, 1, err, "tokens");
    q->score = xcalloc((size_t)n, 1, err, "tokens");
    q->pos = xcalloc((size_t)(3 * n), sizeof *q->pos, err, "positions");
    if (!q->id || !q->tokens || !q->modality || !q->score || !q->pos) goto oom;
    memcpy(q->tokens, s->tokens.data, (size_t)n * 4);
    memcpy(q->modality, s->modality.data, (size_t)n);
    memcpy(q->score, s->score.data, (size_t)n);
    for (int64_t i = 0; i < n; i++) q->n_img += q->modality[i] == MODE_MOD_IMAGE;
    q->img = xcalloc((size_t)q->n_img, sizeof *q->img, err, "image positions");
    if (!q->img) goto oom;
    for (int64_t i = 0, k = 0; i < n; i++)
        if (q->modality[i] == MODE_MOD_IMAGE) q->img[k++] = i;
    mode_rt_positions(c, s, q->pos);
    /* token embeddings (image pads are overwritten by the vision tower) */
    const struct mode_st_tensor *emb = m->tok_embd;
    size_t es = mode_dtype_size(emb->dtype);
    for (int64_t i = 0; i < n; i++)
        mode_convert_ref(emb->dtype, (const char *)emb->data + (size_t)q->tokens[i] * (size_t)D * es, (size_t)D,
                         b->h + (q->row + i) * D);
    /* images: their patches, until the vision tower runs */
    for (int k = 0; k < s->n_images; k++) {
        if (b->n_image == b->cap_image) {
            int nc = b->cap_image ? 2 * b->cap_image : 16;
            struct mode_rt_image *ni = realloc(b->image, (size_t)nc * sizeof *ni);
            if (!ni) goto oom;
            b->image = ni;
            b->cap_image = nc;
        }
        struct mode_rt_image *im = &b->image[b->n_image];
        im->seq = b->n_seq;
        if (copy_image(&s->images[k], &im->data, err)) goto oom;
        b->n_image++;
        if (s->images[k].has_pixels && !m->has_preproc) {
            b->n_seq++; /* so that free releases it */
            return mode_err_set(err, MODE_EDATA, "%s: %s: 8-bit pixels need %s/preprocessor_config.json (mean and std)",
                                where ? where->stream : "<samples>", where ? where->what : "sample", m->dir);
        }
    }
    b->n_rows += n;
    b->n_seq++;
    return MODE_OK;
oom:
    b->n_seq++;
    return err->code ? err->code : mode_err_oom(err, 0, "a sample");
}

/* ---- vision tower ------------------------------------------------------------------------ */

/* the first error of a loop on the pool's threads (the lowest item's) */
static pthread_mutex_t g_expert_err_lock = PTHREAD_MUTEX_INITIALIZER;

struct vis_block {
    float *n1w, *n1b, *qkv, *qkvb, *proj, *projb, *n2w, *n2b, *fc1, *fc1b, *fc2, *fc2b;
};

/* a block's weights in f32, in the scratch a (given back by the caller) */
static int vis_block_load(struct mode_arena *a, const struct mode_vblock_w *t, struct vis_block *w, struct mode_err *err)
{
    const struct mode_st_tensor *src[] = {t->norm1_w, t->norm1_b, t->qkv_w, t->qkv_b, t->proj_w, t->proj_b,
                                          t->norm2_w, t->norm2_b, t->fc1_w, t->fc1_b, t->fc2_w, t->fc2_b};
    float **dst = &w->n1w;
    for (size_t i = 0; i < sizeof src / sizeof *src; i++)
        if (!(dst[i] = scratch_f32(a, src[i], err))) return err->code;
    return MODE_OK;
}

/* out (n/m2, out_embd) = fc2(gelu(fc1(norm(x) regrouped by merge windows))) */
static int merger(struct mode_arena *a, const struct mode_merger_w *t, bool postshuffle, const float *x, int64_t n, int E, int m2,
                  float *out, struct mode_err *err)
{
    int64_t hm = (int64_t)E * m2, rows = n / m2;
    int out_d = (int)t->fc2_w->shape[0];
    const struct mode_arena_mark mark = mode_arena_mark(a);
    float *nw = scratch_f32(a, t->norm_w, err), *nb = scratch_f32(a, t->norm_b, err), *f1 = scratch_f32(a, t->fc1_w, err),
          *f1b = scratch_f32(a, t->fc1_b, err), *f2 = scratch_f32(a, t->fc2_w, err), *f2b = scratch_f32(a, t->fc2_b, err);
    float *xn = scratch_zero(a, n * E, err, "merger"), *mid = scratch_zero(a, rows * hm, err, "merger");
    int rc = MODE_OK;
    if (!nw || !nb || !f1 || !f1b || !f2 || !f2b || !xn || !mid) rc = err->code ? err->code : MODE_EUNAVAILABLE;
    if (!rc) {
        /* the norm sees one patch (E) before the 2x2 shuffle, or the merged row (E*m2) after it */
        if (postshuffle) mode_layernorm_ref(x, nw, nb, 1e-6f, rows, hm, xn);
        else mode_layernorm_ref(x, nw, nb, 1e-6f, n, E, xn);
        mode_gemm(rows, hm, hm, xn, hm, f1, hm, true, 0.0f, mid, hm);
        mode_add_bias_ref(mid, f1b, rows, hm);
        mode_gelu_erf_ref(mid, rows * hm);
        mode_gemm(rows, out_d, hm, mid, hm, f2, hm, true, 0.0f, out, out_d);
        mode_add_bias_ref(out, f2b, rows, out_d);
    }
    mode_arena_release(a, mark);
    return rc;
}

/* Learned position embeddings of one image, bilinearly interpolated (aligned corners) from the
 * side x side table to its h x w grid, in merge-block patch order, repeated over t; added to x. */
static void add_pos_embed(const float *table, int side, const int64_t *grid, int m, int E, float *x)
{
    int64_t t = grid[0], h = grid[1], w = grid[2];
    int64_t bw = w / m, k = 0;
    for (int64_t f = 0; f < t; f++)
        for (int64_t p = 0; p < h * w; p++, k++) {
            int64_t in_col = p % m, in_row = (p / m) % m, blk_col = (p / (m * m)) % bw, blk_row = p / (m * m * bw);
            int64_t row = blk_row * m + in_row, col = blk_col * m + in_col;
            float sy = (float)row * (float)(side - 1) / (float)(h > 1 ? h - 1 : 1);
            float sx = (float)col * (float)(side - 1) / (float)(w > 1 ? w - 1 : 1);
            float fy = floorf(sy), fx = floorf(sx);
            int y0 = (int)fy, x0 = (int)fx;
            int y1 = y0 + 1 < side ? y0 + 1 : side - 1, x1 = x0 + 1 < side ? x0 + 1 : side - 1;
            float dy = sy - fy, dx = sx - fx;
            float wy[2] = {1.0f - dy, dy}, wx[2] = {1.0f - dx, dx};
            int ys[2] = {y0, y1}, xs[2] = {x0, x1};
            float *o = x + k * E;
            for (int e = 0; e < E; e++) {
                float acc = 0;
                for (int a = 0; a < 2; a++)
                    for (int bb = 0; bb < 2; bb++) acc += table[((int64_t)ys[a] * side + xs[bb]) * E + e] * (wy[a] * wx[bb]);
                o[e] += acc;
            }
        }
}

/* The tower over every image of the batch, its scratch in ar. */
/* Image embeddings over the pad tokens, deepstack features beside them: the tower's output
 * (embeds (n_tower, D), ds (n_deepstack, n_tower, D), in the order of the images that ran) or
 * the image's own (mode-route-trace --samples-out), image by image in the batch's order. */
static int scatter(struct mode_rt_batch *b, const struct mode_vision_config *v, int64_t D, int m2, const float *embeds, const float *ds,
                   int64_t n_tower, struct mode_arena *ar, struct mode_err *err)
{
    int64_t r = 0;
    int64_t *used = mode_arena_calloc(ar, (size_t)b->n_seq, sizeof *used, err, "scatter");
    if (!used) return err->code;
    for (int i = 0; i < b->n_image; i++) {
        struct mode_image *im = &b->image[i].data;
        struct mode_rt_seq *q = &b->seq[b->image[i].seq];
        const int64_t nt = im->grid[0] * im->grid[1] * im->grid[2] / m2;
        const float *e = im->has_embeds ? im->embeds.data : embeds + r * D;
        for (int64_t j = 0; j < nt; j++) {
            const int64_t slot = used[b->image[i].seq]++;
            memcpy(b->h + (q->row + q->img[slot]) * D, e + j * D, (size_t)D * sizeof(float));
            for (int k = 0; k < v->n_deepstack; k++) {
                const float *f = im->has_embeds ? (const float *)im->deepstack.data + ((int64_t)k * nt + j) * D : ds + ((int64_t)k * n_tower + r + j) * D;
                memcpy(q->deepstack + ((int64_t)k * q->n_img + slot) * D, f, (size_t)D * sizeof(float));
            }
        }
        if (im->has_embeds) free_image_copy(im);
        else r += nt;
    }
    return MODE_OK;
}

/* the patch embedding of the images: image i's patches normalised, times the patch weights, the
 * bias, the interpolated position embedding and its rotary angles, at rows offs[i].. of x */
struct embed_job {
    const struct mode_rt *rt;
    struct mode_rt_batch *b;
    const float *pw, *pb, *table;
    float *x, *ang;
    const int64_t *offs;
    int64_t patch_floats; /* the largest image's patches */
    float *patches;       /* NULL: each worker's scratch (pool.h) */
    int err_image;        /* the lowest failed image, its error in err */
    struct mode_err err;
};

static void embed_image(void *ctx, int64_t i, int worker)
{
    struct embed_job *j = ctx;
    const struct mode_model *m = j->rt->m;
    const struct mode_vision_config *v = &m->cfg.vision;
    struct mode_rt_image *im = &j->b->image[i];
    if (im->data.has_embeds) return;
    const int E = v->n_embd, hd = E / v->n_head;
    const int64_t pd = (int64_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    const int64_t *grid = im->data.grid, np = grid[0] * grid[1] * grid[2], off = j->offs[i];
    float *patches = j->patches ? j->patches : mode_pool_scratch(worker, sizeof(float) * (size_t)j->patch_floats); /* sized before */
    struct mode_err e = {0};
    if (mode_image_pixel_values(&im->data, v, m->has_preproc ? &m->pre : NULL, patches, &e)) {
        pthread_mutex_lock(&g_expert_err_lock);
        if (j->err_image < 0 || i < j->err_image) j->err_image = (int)i, j->err = e;
        pthread_mutex_unlock(&g_expert_err_lock);
        return;
    }
    float *x = j->x + off * E;
    mode_gemm(np, E, pd, patches, pd, j->pw, pd, true, 0.0f, x, E);
    free_image_copy(&im->data);
    mode_add_bias_ref(x, j->pb, np, E);
    add_pos_embed(j->table, (int)lround(sqrt((double)v->n_pos)), grid, v->merge_size, E, x);
    /* rotary angles: (row * inv_freq, col * inv_freq) of each patch in merge-block order */
    const int q4 = hd / 4, mm = v->merge_size;
    const int64_t w = grid[2], bw = w / mm;
    for (int64_t p = 0; p < np; p++) {
        int64_t pp = p % (grid[1] * w);
        int64_t in_col = pp % mm, in_row = (pp / mm) % mm, blk_col = (pp / (mm * mm)) % bw, blk_row = pp / (mm * mm * bw);
        float row = (float)(blk_row * mm + in_row), col = (float)(blk_col * mm + in_col);
        float *a = j->ang + (off + p) * (hd / 2);
        for (int q = 0; q < q4; q++) {
            a[q] = row * j->rt->vis_inv_freq[q];
            a[q4 + q] = col * j->rt->vis_inv_freq[q];
        }
    }
}

static int vision(struct mode_rt *rt, struct mode_rt_batch *b, struct mode_arena *ar, struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_vision_config *v = &m->cfg.vision;
    const int E = v->n_embd, H = v->n_head, hd = E / H, m2 = v->merge_size * v->merge_size, D = m->cfg.text.n_embd;
    const int64_t pd = (int64_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    /* P: the patches the tower runs on (images that come with their embeddings skip it) */
    int64_t P = 0;
    bool any = false;
    for (int i = 0; i < b->n_image; i++) {
        any = true;
        if (!b->image[i].data.has_embeds) P += b->image[i].data.grid[0] * b->image[i].data.grid[1] * b->image[i].data.grid[2];
    }
    for (int s = 0; s < b->n_seq; s++) {
        b->seq[s].deepstack = xcalloc((size_t)(v->n_deepstack * b->seq[s].n_img * D), sizeof(float), err, "deepstack");
        if (!b->seq[s].deepstack) return err->code;
    }
    if (!any) return MODE_OK;
    if (P == 0) return scatter(b, v, D, m2, NULL, NULL, 0, ar, err);
    int rc = MODE_OK;
    float *x = scratch_zero(ar, P * E, err, "vision activations");
    /* the blocks' scratch (mode_vision_block_ref) */
    float *vw = scratch_zero(ar, P * (5 * E + v->n_ff), err, "vision activations");
    float *ang = scratch_zero(ar, P * hd / 2, err, "vision rotary");
    float *ds = scratch_zero(ar, v->n_deepstack * (P / m2) * D + 1, err, "deepstack");
    float *embeds = scratch_zero(ar, (P / m2) * D, err, "image embeddings");
    int64_t n_frame = 0, most = 0;
    for (int i = 0; i < b->n_image; i++) {
        const int64_t *g = b->image[i].data.grid;
        if (b->image[i].data.has_embeds) continue;
        n_frame += g[0];
        most = g[0] * g[1] * g[2] > most ? g[0] * g[1] * g[2] : most;
    }
    int64_t *seg = n_frame < INT_MAX ? mode_arena_calloc(ar, (size_t)n_frame + 1, sizeof *seg, err, "vision attention") : NULL;
    if (!seg && !err->code) mode_err_set(err, MODE_EDATA, "%lld image frames in one batch: at most %d", (long long)n_frame, INT_MAX - 1);
    if (!seg || !x || !vw || !ang || !ds || !embeds) return err->code ? err->code : MODE_EUNAVAILABLE;
    /* patch embedding: Conv3d with kernel = stride = (T, P, P) is one matmul per patch; the f32
     * patches of one image at a time, in one buffer for the largest (a worker's own when the
     * images are spread over the pool's threads) */
    const struct mode_arena_mark embed_mark = mode_arena_mark(ar);
    float *pw = scratch_f32(ar, m->patch_w, err), *pb = scratch_f32(ar, m->patch_b, err), *table = scratch_f32(ar, m->pos_embd, err);
    if (!pw || !pb || !table) return err->code ? err->code : MODE_EUNAVAILABLE;
    int64_t *offs = mode_arena_calloc(ar, (size_t)b->n_image + 1, sizeof *offs, err, "image offsets");
    if (!offs) return err->code;
    for (int i = 0; i < b->n_image; i++) {
        const int64_t *g = b->image[i].data.grid;
        offs[i + 1] = offs[i] + (b->image[i].data.has_embeds ? 0 : g[0] * g[1] * g[2]);
    }
    struct embed_job ej = {rt, b, pw, pb, table, x, ang, offs, most * pd, NULL, -1, {0}};
    /* by image on the pool when there are enough of them and the products stay on the CPU (a
     * single large image is faster with its product's tiles on the pool); each image's work is
     * the same calls either way */
    const int threads = mode_pool_threads();
    if (threads > 1 && b->n_image >= 2 * threads && mode_ops_device_get() == MODE_DEVICE_CPU && !rt->resident) {
        for (int w = 0; w < threads; w++)
            if (!mode_pool_scratch(w, sizeof(float) * (size_t)(most * pd))) return mode_err_oom(err, sizeof(float) * (size_t)(most * pd), "image patches");
        mode_pool_run(b->n_image, embed_image, &ej);
    } else {
        if (!(ej.patches = scratch_zero(ar, most * pd, err, "image patches"))) return err->code;
        for (int i = 0; i < b->n_image; i++) embed_image(&ej, i, 0);
    }
    if (ej.err_image >= 0) rc = ej.err.code ? ej.err.code : MODE_EUNAVAILABLE, *err = ej.err;
    mode_arena_release(ar, embed_mark);
    if (rc) return rc;
    /* attention inside each frame of each image */
    const int64_t qblk = rt->attn_block > 0 ? rt->attn_block : MODE_ATTN_BLOCK; /* as in the decoder */
    for (int64_t i = 0, f = 0; i < b->n_image; i++)
        for (int64_t j = 0; !b->image[i].data.has_embeds && j < b->image[i].data.grid[0]; j++, f++)
            seg[f + 1] = seg[f] + b->image[i].data.grid[1] * b->image[i].data.grid[2];
    /* the blocks resident on the GPU when there is one (x stays there between blocks) */
    bool on_gpu = false;
    if (rt->resident) {
        int grc = mode_rtlayer_vision_begin(rt->resident, x, ang, P, E, hd, v->n_ff, err);
        if (grc == MODE_OK) on_gpu = true;
        else if (grc == MODE_EUNAVAILABLE) /* no device memory: the blocks on the CPU */
            rt->n_vision_fallback++, mode_err_clear(err);
        else
            return grc;
    }
    for (int blk = 0; blk < v->depth && !rc; blk++) {
        struct vis_block w;
        const struct mode_arena_mark mark = mode_arena_mark(ar);
        if ((rc = vis_block_load(ar, &m->vblocks[blk], &w, err))) break;
        const struct mode_vision_block_cuda vb = {E, H, v->n_ff, 1e-6f, w.n1w, w.n1b, w.qkv, w.qkvb, w.proj, w.projb, w.n2w, w.n2b, w.fc1, w.fc1b,
                                                  w.fc2, w.fc2b};
        bool want_x = false; /* a deepstack merger reads this block's output */
        for (int k = 0; k < v->n_deepstack; k++) want_x |= v->deepstack[k] == blk;
        if (on_gpu) {
            rc = mode_rtlayer_vision_block(rt->resident, &vb, seg, (int)n_frame, err);
            if (!rc && (want_x || blk == v->depth - 1)) rc = mode_rtlayer_vision_get(rt->resident, x, err);
        } else
            rc = mode_vision_block_ref(&vb, P, seg, (int)n_frame, ang, x, qblk, vw, err);
        mode_arena_release(ar, mark);
        for (int k = 0; k < v->n_deepstack && !rc; k++)
            if (v->deepstack[k] == blk) rc = merger(ar, &m->deepstack[k], true, x, P, E, m2, ds + (int64_t)k * (P / m2) * D, err);
    }
    if (!rc) rc = merger(ar, &m->merger, false, x, P, E, m2, embeds, err);
    if (!rc) rc = scatter(b, v, D, m2, embeds, ds, P / m2, ar, err);
    return rc;
}

int mode_rt_vision(struct mode_rt *rt, struct mode_rt_batch *b, struct mode_err *err)
{
    if (b->vision_done) return MODE_OK;
    b->vision_done = true;
    /* the tower's scratch is its own, freed here, not the runtime's kept one: it runs once per
     * batch, and needs patches x (5 v_embd + v_ff) floats, which can be far more than a decoder
     * layer's and would stay held through every layer. The runtime's kept block goes back first:
     * the tower and a decoder layer never run at once, and the block held through the tower would
     * add a layer's scratch to the tower's peak (the next layer call maps it again, once per batch) */
    if (b->n_image > 0) mode_arena_trim(&rt->scratch);
    struct mode_arena ar;
    mode_arena_init(&ar);
    int rc = vision(rt, b, &ar, err);
    mode_arena_free(&ar);
    return rc;
}

int mode_rt_seq_pack_vision(const struct mode_rt *rt, const struct mode_rt_batch *b, int s, struct mode_mp *mp, struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_vision_config *v = &m->cfg.vision;
    const int64_t D = m->cfg.text.n_embd, m2 = (int64_t)v->merge_size * v->merge_size;
    if (!b->vision_done || b->next_layer) return mode_err_set(err, MODE_EINTERNAL, "image embeddings asked for outside [vision, first layer)");
    const struct mode_rt_seq *q = &b->seq[s];
    int64_t n[1] = {q->n_tok};
    mode_mp_map_open(mp);
    mode_mp_key(mp, "id");
    mode_mp_str(mp, q->id);
    mode_mp_key(mp, "tokens");
    mode_mp_tensor(mp, MODE_I32, 1, n, q->tokens);
    mode_mp_key(mp, "modality");
    mode_mp_tensor(mp, MODE_U8, 1, n, q->modality);
    mode_mp_key(mp, "score");
    mode_mp_tensor(mp, MODE_U8, 1, n, q->score);
    mode_mp_key(mp, "images");
    mode_mp_array_open(mp);
    int64_t off = 0; /* the image's first slot among the sequence's image tokens */
    int rc = MODE_OK;
    for (int i = 0; i < b->n_image && !rc; i++) {
        if (b->image[i].seq != s) continue;
        const int64_t *g = b->image[i].data.grid, nt = g[0] * g[1] * g[2] / m2;
        mode_mp_map_open(mp);
        mode_mp_key(mp, "grid");
        mode_mp_array_open(mp);
        for (int d = 0; d < 3; d++) mode_mp_int(mp, g[d]);
        mode_mp_close(mp);
        /* the pads of one image are consecutive tokens: its rows of h are one block */
        int64_t es[2] = {nt, D}, ds[3] = {v->n_deepstack, nt, D};
        mode_mp_key(mp, "embeds");
        mode_mp_tensor(mp, MODE_F32, 2, es, b->h + (q->row + q->img[off]) * D);
        float *f = malloc(sizeof *f * (size_t)(v->n_deepstack * nt * D + 1));
        if (!f) {
            rc = mode_err_oom(err, sizeof *f * (size_t)(v->n_deepstack * nt * D), "deepstack features");
            break;
        }
        for (int k = 0; k < v->n_deepstack; k++)
            memcpy(f + (int64_t)k * nt * D, q->deepstack + ((int64_t)k * q->n_img + off) * D, sizeof *f * (size_t)(nt * D));
        mode_mp_key(mp, "deepstack");
        mode_mp_tensor(mp, MODE_F32, 3, ds, f);
        free(f);
        mode_mp_close(mp);
        off += nt;
    }
    mode_mp_close(mp);
    mode_mp_close(mp);
    return rc;
}

int64_t mode_rt_mem_need(const struct mode_rt *rt, const struct mode_rt_batch *b, int threads, bool head)
{
    const struct mode_model *m = rt->m;
    const struct mode_text_config *t = &m->cfg.text;
    const struct mode_vision_config *v = &m->cfg.vision;
    const int64_t N = b->n_rows, D = t->n_embd, qd = (int64_t)t->n_head * t->head_dim, kvd = (int64_t)t->n_head_kv * t->head_dim;
    const int64_t E = t->n_expert, K = t->n_expert_used, I = t->n_ff_exp, F = t->n_ff, T = threads > 0 ? threads : 1;
    const int64_t m2 = (int64_t)v->merge_size * v->merge_size, f = sizeof(float);
    int64_t P = 0, most_p = 0, n_img = 0, longest = 0;
    for (int i = 0; i < b->n_image; i++) {
        const int64_t *g = b->image[i].data.grid, np = g[0] * g[1] * g[2];
        n_img += np / m2;
        if (b->image[i].data.has_embeds) continue;
        P += np;
        most_p = np > most_p ? np : most_p;
    }
    for (int s = 0; s < b->n_seq; s++) longest = b->seq[s].n_tok > longest ? b->seq[s].n_tok : longest;
    /* the batch: hidden states, per-token arrays (tokens, modality, score, positions), deepstack */
    const int64_t batch = N * D * f + N * 18 + n_img * v->n_deepstack * D * f;
    /* the tower (its own arena, given back before the layers): x, the blocks' scratch, angles, the
     * mergers' outputs, one block's f32 weights, the largest image's patches */
    const int64_t E_ = v->n_embd, pd = (int64_t)v->in_channels * v->temporal_patch_size * v->patch_size * v->patch_size;
    const int64_t tower = P ? (P * (6 * E_ + v->n_ff + E_ / v->n_head / 2) + (P / m2) * D * (1 + v->n_deepstack) +
                               (4 * E_ * E_ + 2 * E_ * v->n_ff) + most_p * pd + 4 * E_ * m2 * E_ + m2 * E_ * D) * f
                            : 0;
    /* a decoder layer (the runtime's kept arena, a quarter over its peak): f32 attention weights
     * and router; activations (xn, q, k, v, o, rotary angles, router logits, the experts' outputs
     * of a group: 2 N rows, their sum); routing; per thread the expert weights and rows of the
     * busiest expert (~ 3 N K / E rows assumed) and the attention scores of a block of rows */
    const int64_t most = (3 * N * K + E - 1) / E;
    const int64_t layer = (D * (2 * qd + 2 * kvd) + E * D + (t->n_ff > 0 ? 3 * D * F : 0)) * f +
                          N * (D + 2 * qd + 2 * kvd + t->head_dim / 2 + E + 2 * D + D) * f + N * K * 24 +
                          T * ((3 * I * D + most * (2 * D + 3 * I)) + (int64_t)MODE_ATTN_BLOCK * longest) * f;
    const int64_t work = tower > layer + layer / 4 ? tower : layer + layer / 4;
    /* mode_rt_logits: the f32 lm_head and a block of 256 rows of logits */
    const int64_t logits = head ? ((int64_t)t->n_vocab * D + 256 * (int64_t)t->n_vocab) * f : 0;
    return batch + work + logits;
}

/* ---- decoder layer -------------------------------------------------------------------------- */

struct text_layer {
    float *an, *fn, *wq, *wk, *wv, *wo, *bq, *bk, *bv, *bo, *qn, *kn, *router, *fg, *fu, *fd;
};

/* One decoder layer's weights in f32 (packed attention projections dequantised), in the scratch
 * a, with the hooks' attention override copied over the checkpoint's. */
static int text_layer_load(struct mode_arena *a, const struct mode_model *m, int layer, const struct mode_rt_hooks *hooks,
                           struct text_layer *w, struct mode_err *err)
{
    const struct mode_layer_w *t = &m->layers[layer];
    memset(w, 0, sizeof *w);
    const struct mode_st_tensor *src[] = {t->attn_norm, t->ffn_norm, t->wq, t->wk, t->wv, t->wo, t->bq, t->bk,
                                          t->bv, t->bo, t->q_norm, t->k_norm, t->router, t->ffn_gate, t->ffn_up, t->ffn_down};
    float **dst = &w->an;
    for (size_t i = 0; i < sizeof src / sizeof *src; i++)
        if (src[i] && !(dst[i] = scratch_f32(a, src[i], err))) return err->code;
    float **attn[4] = {&w->wq, &w->wk, &w->wv, &w->wo};
    if (t->qattn) /* packed (mode-pack --attn-bits): dequantised on load (every element) */
        for (int p = 0; p < 4; p++) {
            const struct mode_qproj *q = &t->qattn[p];
            if (!(*attn[p] = scratch_raw(a, q->n * q->k, err, "attention weights")) || mode_model_qproj_f32(m, q, *attn[p], err))
                return err->code;
        }
    struct mode_rt_attn_override ov = {NULL, NULL, NULL, NULL};
    int rc;
    if (hooks && hooks->attn_weights && (rc = hooks->attn_weights(hooks->ctx, layer, &ov, err))) return rc;
    const struct mode_text_config *c = &m->cfg.text;
    const size_t qd = (size_t)c->n_head * c->head_dim, kvd = (size_t)c->n_head_kv * c->head_dim, D = (size_t)c->n_embd;
    const float *src_ov[4] = {ov.wq, ov.wk, ov.wv, ov.wo};
    const size_t n_ov[4] = {qd * D, kvd * D, kvd * D, D * qd};
    for (int p = 0; p < 4; p++)
        if (src_ov[p]) memcpy(*attn[p], src_ov[p], n_ov[p] * sizeof(float));
    return MODE_OK;
}

/* Angles (n_tok, head_dim/2) of interleaved MRoPE (mode_mrope_angles_ref says which position
 * each frequency takes). */
static void mrope_angles(const struct mode_rt *rt, const struct mode_rt_seq *q, float *ang)
{
    const struct mode_text_config *t = &rt->m->cfg.text;
    mode_mrope_angles_ref(q->pos, q->n_tok, t->head_dim, t->mrope_section, rt->inv_freq, ang);
}

/* The f32 gate_up (2I rows of D when trans, else D rows of 2I) and down weights of one expert. */
static int expert_f32(const struct mode_model *m, int layer, int e, float *gu, bool *gu_trans, float *dn, bool *dn_trans,
                      struct mode_err *err)
{
    const struct mode_layer_w *w = &m->layers[layer];
    const struct mode_text_config *t = &m->cfg.text;
    size_t n_gu = (size_t)2 * t->n_ff_exp * t->n_embd, n_dn = (size_t)t->n_ff_exp * t->n_embd;
    if (w->qexp) { /* packed: dequantised on load, nn.Linear orientation */
        int rc;
        if ((rc = mode_model_qexpert_f32(m, layer, e, MODE_PROJ_GATE, gu, err)) ||
            (rc = mode_model_qexpert_f32(m, layer, e, MODE_PROJ_UP, gu + n_gu / 2, err)) ||
            (rc = mode_model_qexpert_f32(m, layer, e, MODE_PROJ_DOWN, dn, err)))
            return rc;
        *gu_trans = *dn_trans = true;
        return MODE_OK;
    }
    size_t es = mode_dtype_size(w->gate_up->dtype), ed = mode_dtype_size(w->down->dtype);
    /* each expert's slice is contiguous in both layouts: hub stores W^T, transformers 5 stores W */
    if (mode_convert_ref(w->gate_up->dtype, (const char *)w->gate_up->data + (size_t)e * n_gu * es, n_gu, gu) ||
        mode_convert_ref(w->down->dtype, (const char *)w->down->data + (size_t)e * n_dn * ed, n_dn, dn))
        return mode_err_set(err, MODE_EDATA, "layer %d experts: dtype cannot be converted", layer);
    *gu_trans = *dn_trans = m->layout == MODE_EXPERTS_V5;
    return MODE_OK;
}

/* a layer's activations and routing, in the runtime's scratch (a) */
struct layer_scratch {
    struct mode_arena *a;
    float *xn, *q, *k, *v, *o, *ang, *colsum, *logits, *w, *out, *xe, *ge, *ae, *de, *gu, *dn;
    int32_t *experts;
    int64_t *order, *start;
};

/* The attention-score hook of sequence i: the raw column sums of its selected rows (colsum,
 * n_tok) divided into the mean over heads and rows, then handed over. */
static int attn_scores(const struct mode_rt_hooks *hooks, int layer, int i, const uint8_t *rows, int64_t n_tok, int n_head, float *colsum,
                       struct mode_err *err)
{
    int64_t n_sel = 0;
    for (int64_t r = 0; r < n_tok; r++) n_sel += rows[r] != 0;
    const float denom = (float)n_head * (float)(n_sel ? n_sel : 1);
    for (int64_t c = 0; c < n_tok; c++) colsum[c] /= denom;
    return hooks->attn(hooks->ctx, layer, i, colsum, err);
}

static int attention(const struct mode_rt *rt, struct mode_rt_batch *b, int layer, const struct text_layer *w,
                     struct layer_scratch *s, const struct mode_rt_hooks *hooks, struct mode_err *err)
{
    const struct mode_text_config *t = &rt->m->cfg.text;
    const int64_t N = b->n_rows, D = t->n_embd;
    const int nh = t->n_head, nkv = t->n_head_kv, hd = t->head_dim;
    const int64_t qd = (int64_t)nh * hd, kvd = (int64_t)nkv * hd;
    const int64_t qblk = rt->attn_block > 0 ? rt->attn_block : MODE_ATTN_BLOCK;
    size_t nmax = 0;
    for (int i = 0; i < b->n_seq; i++) nmax = (size_t)b->seq[i].n_tok > nmax ? (size_t)b->seq[i].n_tok : nmax;
    /* every element of xn (the norm), q, k, v (products into them), o (the attention of every
     * sequence, whose rows tile the batch) and ang (every sequence's) is written before it is read */
    s->xn = scratch_raw(s->a, N * D, err, "activations");
    s->q = scratch_raw(s->a, N * qd, err, "activations");
    s->k = scratch_raw(s->a, N * kvd, err, "activations");
    s->v = scratch_raw(s->a, N * kvd, err, "activations");
    s->o = scratch_raw(s->a, N * qd, err, "activations");
    s->ang = scratch_raw(s->a, N * hd / 2, err, "activations");
    s->colsum = scratch_zero(s->a, (int64_t)nmax, err, "attention scores");
    if (!s->xn || !s->q || !s->k || !s->v || !s->o || !s->ang || !s->colsum) return err->code;
    mode_rmsnorm_ref(b->h, w->an, (float)t->rms_eps, N, D, s->xn);
    mode_gemm(N, qd, D, s->xn, D, w->wq, D, true, 0.0f, s->q, qd);
    mode_gemm(N, kvd, D, s->xn, D, w->wk, D, true, 0.0f, s->k, kvd);
    mode_gemm(N, kvd, D, s->xn, D, w->wv, D, true, 0.0f, s->v, kvd);
    if (w->bq) {
        mode_add_bias_ref(s->q, w->bq, N, qd);
        mode_add_bias_ref(s->k, w->bk, N, kvd);
        mode_add_bias_ref(s->v, w->bv, N, kvd);
    }
    /* q/k RMSNorm over each head */
    mode_rmsnorm_ref(s->q, w->qn, (float)t->rms_eps, N * nh, hd, s->q);
    mode_rmsnorm_ref(s->k, w->kn, (float)t->rms_eps, N * nkv, hd, s->k);
    for (int i = 0; i < b->n_seq; i++) mrope_angles(rt, &b->seq[i], s->ang + b->seq[i].row * (hd / 2));
    mode_rope_ref(s->q, N, qd, nh, hd, s->ang);
    mode_rope_ref(s->k, N, kvd, nkv, hd, s->ang);
    const struct mode_attn_shape as = {nh, nkv, hd, qd, kvd, kvd, qd, true, 1.0f / sqrtf((float)hd) /* head_dim ** -0.5 */};
    for (int i = 0; i < b->n_seq; i++) {
        const struct mode_rt_seq *sq = &b->seq[i];
        const int64_t n = sq->n_tok, r0 = sq->row, seg[2] = {0, n};
        const uint8_t *rows = hooks && hooks->attn_rows ? hooks->attn_rows(hooks->ctx, layer, i) : NULL;
        int rc = mode_attention_ref_block(&as, s->q + r0 * qd, s->k + r0 * kvd, s->v + r0 * kvd, seg, 1, rows, rows ? s->colsum : NULL,
                                          s->o + r0 * qd, qblk, err);
        if (rc) return rc;
        if (rows && hooks->attn && (rc = attn_scores(hooks, layer, i, rows, n, nh, s->colsum, err))) return rc;
    }
    if (hooks && hooks->attn_out) {
        int rc = hooks->attn_out(hooks->ctx, layer, b, s->xn, s->o, err);
        if (rc) return rc;
    }
    /* h += o_proj(o) */
    mode_gemm(N, D, qd, s->o, qd, w->wo, qd, true, 1.0f, b->h, D);
    if (w->bo) mode_add_bias_ref(b->h, w->bo, N, D);
    return MODE_OK;
}

/* ---- the experts of a MoE layer on the pool's threads ---- */

enum { EXPERT_ADD_ROWS = 64 };

struct expert_job {
    const struct mode_model *m;
    int layer;
    int64_t N, D, I;
    int K;
    const float *xn, *w;
    const int32_t *experts;
    const int64_t *order, *start, *pos;
    const struct mode_rt_expert_override *ov;
    float *de, *out;
    int e0, e1;     /* the group: experts [e0, e1), their outputs at de + (order index - start[e0]) * D */
    int64_t most;   /* rows of the busiest expert */
    int failed;     /* an expert's weights could not be had: err (the lowest expert's) */
    struct mode_err err;
    int failed_expert;
};

/* a worker's buffers: gu (2I, D), dn (D, I) weights; xe (most, D) input rows, ge (most, 2I),
 * ae (most, I), d1 (most, D) */
static size_t expert_scratch_floats(const struct expert_job *j)
{
    return (size_t)(3 * j->I * j->D + j->most * (2 * j->D + 3 * j->I));
}

static int expert_scratch(struct expert_job *j, struct mode_err *err)
{
    const size_t n = expert_scratch_floats(j) * sizeof(float);
    for (int w = mode_pool_inside() ? mode_pool_worker() : 0, last = mode_pool_inside() ? w : mode_pool_threads() - 1; w <= last; w++)
        if (!mode_pool_scratch(w, n)) return mode_err_oom(err, n, "expert weights and activations");
    return MODE_OK;
}

static void expert_item(void *ctx, int64_t i, int worker)
{
    struct expert_job *j = ctx;
    const int e = j->e0 + (int)i;
    const int64_t n = j->start[e + 1] - j->start[e], D = j->D, I = j->I, K = j->K;
    if (!n) return;
    float *gu = mode_pool_scratch(worker, expert_scratch_floats(j) * sizeof(float)); /* sized before the run */
    float *dn = gu + 2 * I * D, *xe = dn + I * D, *ge = xe + j->most * D, *ae = ge + j->most * 2 * I, *d1 = ae + j->most * I;
    const int64_t *ord = j->order + j->start[e];
    float *de = j->de + (j->start[e] - j->start[j->e0]) * D; /* this expert's rows of the group */
    const struct mode_rt_expert_override *ov = &j->ov[e];
    struct mode_err err = {0};
    bool gt = false, dt = false;
    if ((!ov->gate_up || ov->rows) && expert_f32(j->m, j->layer, e, gu, &gt, dn, &dt, &err)) {
        pthread_mutex_lock(&g_expert_err_lock);
        if (!j->failed || e < j->failed_expert) j->failed = 1, j->failed_expert = e, j->err = err;
        pthread_mutex_unlock(&g_expert_err_lock);
        return;
    }
    /* pass 0: the checkpoint's weights, pass 1: the override. Each pass runs on every token of
     * the expert, so that a token's result never depends on which other tokens share its
     * matrix product (OpenBLAS rounds differently for other row counts): with a row mask,
     * the tokens outside it stay bit-identical to a run without the override. */
    for (int64_t r = 0; r < n; r++) memcpy(xe + r * D, j->xn + (ord[r] / K) * D, (size_t)D * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && !ov->gate_up) break;
        if (pass == 0 && ov->gate_up && !ov->rows) continue;
        const float *wgu = pass ? ov->gate_up : gu, *wdn = pass ? ov->down : dn;
        const bool gtp = pass ? true : gt, dtp = pass ? true : dt;
        /* the pass whose rows are all kept writes de directly; a masked override's pass 1 goes
         * to d1, its masked rows copied over */
        float *dst = pass == 1 && ov->rows ? d1 : de;
        mode_gemm(n, 2 * I, D, xe, D, wgu, gtp ? D : 2 * I, gtp, 0.0f, ge, 2 * I);
        mode_swiglu_ref(ge, n, I, ae);
        mode_gemm(n, D, I, ae, I, wdn, dtp ? I : D, dtp, 0.0f, dst, D);
        if (dst == d1)
            for (int64_t r = 0; r < n; r++)
                if (ov->rows[ord[r] / K]) memcpy(de + r * D, d1 + r * D, (size_t)D * sizeof(float));
    }
}

/* rows [i EXPERT_ADD_ROWS, ...) add the outputs of their slots whose expert is in the group, in
 * ascending expert order (top-k experts are distinct: the order is that of the ids) */
static void expert_add(void *ctx, int64_t i, int worker)
{
    (void)worker;
    const struct expert_job *j = ctx;
    const int64_t K = j->K, D = j->D, r0 = i * EXPERT_ADD_ROWS, r1 = r0 + EXPERT_ADD_ROWS < j->N ? r0 + EXPERT_ADD_ROWS : j->N;
    const int64_t base = j->start[j->e0];
    for (int64_t row = r0; row < r1; row++) {
        const int32_t *ex = j->experts + row * K;
        float *o = j->out + row * D;
        int last = -1;
        for (int64_t k = 0; k < K; k++) { /* the next larger expert id of this row, K times */
            int64_t best = -1;
            for (int64_t q = 0; q < K; q++)
                if (ex[q] > last && (best < 0 || ex[q] < ex[best])) best = q;
            if (best < 0) break;
            last = ex[best];
            if (last < j->e0 || last >= j->e1) continue;
            const float wt = j->w[row * K + best], *d = j->de + (j->pos[row * K + best] - base) * D;
            for (int64_t c = 0; c < D; c++) o[c] += d[c] * wt;
        }
    }
}

static int moe(const struct mode_rt *rt, struct mode_rt_batch *b, int layer, const struct text_layer *w,
               struct layer_scratch *s, const struct mode_rt_hooks *hooks, struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_text_config *t = &m->cfg.text;
    const int64_t N = b->n_rows, D = t->n_embd, I = t->n_ff_exp;
    const int E = t->n_expert, K = t->n_expert_used;
    /* logits (a product), w and experts (top-k of every row), order (every pair placed) are
     * written before they are read; out sums the experts' outputs and start counts: zeroed */
    s->logits = scratch_raw(s->a, N * E, err, "router logits");
    s->w = scratch_raw(s->a, N * K, err, "routing");
    s->experts = mode_arena_alloc(s->a, sizeof *s->experts * (size_t)(N * K), err, "routing");
    s->out = scratch_zero(s->a, N * D, err, "activations");
    s->order = mode_arena_alloc(s->a, sizeof *s->order * (size_t)(N * K), err, "routing");
    s->start = mode_arena_calloc(s->a, (size_t)E + 1, sizeof *s->start, err, "routing");
    if (!s->logits || !s->w || !s->experts || !s->out || !s->order || !s->start) return err->code;
    mode_gemm(N, E, D, s->xn, D, w->router, D, true, 0.0f, s->logits, E);
    mode_topk_ref(s->logits, N, E, K, t->norm_topk_prob, s->experts, s->w);
    int rc;
    if (hooks && hooks->router && (rc = hooks->router(hooks->ctx, layer, b, s->logits, s->experts, s->w, err))) return rc;
    if (rt->gpu && !(hooks && hooks->expert)) { /* the packed experts on the GPU */
        bool handled = false;
        if ((rc = mode_rtmoe_layer(rt->gpu, layer, N, s->xn, s->experts, s->w, s->out, &handled, err))) return rc;
        if (handled) {
            if (hooks && hooks->moe && (rc = hooks->moe(hooks->ctx, layer, b, s->xn, s->experts, s->w, s->out, err))) return rc;
            for (int64_t z = 0; z < N * D; z++) b->h[z] += s->out[z];
            return MODE_OK;
        }
    }
    /* group (row, slot) pairs by expert: counting sort, rows ascending within an expert */
    for (int64_t z = 0; z < N * K; z++) s->start[s->experts[z] + 1]++;
    for (int e = 0; e < E; e++) s->start[e + 1] += s->start[e];
    int64_t *fill = mode_arena_calloc(s->a, (size_t)E, sizeof *fill, err, "routing");
    int64_t *pos = mode_arena_alloc(s->a, sizeof *pos * (size_t)(N * K), err, "routing");
    struct mode_rt_expert_override *ov = mode_arena_calloc(s->a, (size_t)E, sizeof *ov, err, "routing");
    if (!fill || !pos || !ov) return err->code;
    for (int64_t z = 0; z < N * K; z++) {
        int e = s->experts[z];
        pos[z] = s->start[e] + fill[e]++;
        s->order[pos[z]] = z;
    }
    int64_t most = 0;
    for (int e = 0; e < E; e++) most = s->start[e + 1] - s->start[e] > most ? s->start[e + 1] - s->start[e] : most;
    /* the overrides of every expert that runs, asked in ascending order before any runs (the
     * hook's pointers live until the block ends: runtime.h) */
    if (hooks && hooks->expert)
        for (int e = 0; e < E; e++)
            if (s->start[e + 1] > s->start[e] && (rc = hooks->expert(hooks->ctx, layer, e, &ov[e], err))) return rc;
    /* the experts run on the pool's threads, a group of consecutive experts at a time, each
     * writing its rows' outputs (in the order of s->order) to de; then every row adds its
     * experts' outputs in ascending expert order, as index_add_ in a loop over experts would —
     * the same bits at any thread count. A group holds at most 2 N rows (or one expert). */
    const int64_t cap = most > 2 * N ? most : (2 * N < N * K ? 2 * N : N * K);
    s->de = scratch_raw(s->a, cap * D, err, "expert outputs");
    if (!s->de) return err->code;
    struct expert_job j = {.m = m, .layer = layer, .N = N, .D = D, .I = I, .K = K, .xn = s->xn, .w = s->w, .experts = s->experts,
                           .order = s->order, .start = s->start, .pos = pos, .ov = ov, .de = s->de, .out = s->out, .most = most};
    if ((rc = expert_scratch(&j, err))) return rc;
    for (int e0 = 0; e0 < E;) {
        int e1 = e0 + 1;
        while (e1 < E && s->start[e1 + 1] - s->start[e0] <= cap) e1++;
        j.e0 = e0, j.e1 = e1;
        mode_pool_run(e1 - e0, expert_item, &j);
        if (j.failed) return *err = j.err, err->code;
        /* rows in chunks, each adding its slots of this group's experts */
        mode_pool_run((N + EXPERT_ADD_ROWS - 1) / EXPERT_ADD_ROWS, expert_add, &j);
        e0 = e1;
    }
    if (hooks && hooks->moe && (rc = hooks->moe(hooks->ctx, layer, b, s->xn, s->experts, s->w, s->out, err))) return rc;
    for (int64_t z = 0; z < N * D; z++) b->h[z] += s->out[z];
    return MODE_OK;
}

static int dense_mlp(const struct mode_rt *rt, struct mode_rt_batch *b, const struct text_layer *w, struct layer_scratch *s,
                     struct mode_err *err)
{
    const struct mode_text_config *t = &rt->m->cfg.text;
    const int64_t N = b->n_rows, D = t->n_embd, F = t->n_ff;
    /* both halves of ge are products, ae the swiglu of it */
    s->ge = scratch_raw(s->a, N * 2 * F, err, "activations");
    s->ae = scratch_raw(s->a, N * F, err, "activations");
    if (!s->ge || !s->ae) return err->code;
    /* gate and up side by side in ge (rows of 2F), as swiglu expects */
    mode_gemm(N, F, D, s->xn, D, w->fg, D, true, 0.0f, s->ge, 2 * F);
    mode_gemm(N, F, D, s->xn, D, w->fu, D, true, 0.0f, s->ge + F, 2 * F);
    mode_swiglu_ref(s->ge, N, F, s->ae);
    mode_gemm(N, D, F, s->ae, F, w->fd, F, true, 1.0f, b->h, D);
    return MODE_OK;
}

/* ---- the layer resident on the GPU (rtlayer.h) ---- */

struct expert_ctx {
    const struct mode_model *m;
    int layer;
    const struct mode_rt_hooks *hooks;
};

/* expert e's weights: the expert hook's override (f32, nn.Linear), else the checkpoint's slices
 * as stored (each expert's is contiguous in both layouts, expert_f32) */
static int expert_cb(void *vctx, int e, struct mode_rtlayer_expert *x, struct mode_err *err)
{
    const struct expert_ctx *c = vctx;
    const struct mode_text_config *t = &c->m->cfg.text;
    const struct mode_layer_w *w = &c->m->layers[c->layer];
    struct mode_rt_expert_override ov = {NULL, NULL, NULL};
    int rc = c->hooks && c->hooks->expert ? c->hooks->expert(c->hooks->ctx, c->layer, e, &ov, err) : MODE_OK;
    if (rc) return rc;
    if (ov.gate_up) {
        *x = (struct mode_rtlayer_expert){ov.gate_up, ov.down, MODE_F32, MODE_F32, true};
        return MODE_OK;
    }
    const size_t n_gu = (size_t)2 * t->n_ff_exp * t->n_embd, n_dn = (size_t)t->n_ff_exp * t->n_embd;
    *x = (struct mode_rtlayer_expert){(const char *)w->gate_up->data + (size_t)e * n_gu * mode_dtype_size(w->gate_up->dtype),
                                      (const char *)w->down->data + (size_t)e * n_dn * mode_dtype_size(w->down->dtype), w->gate_up->dtype,
                                      w->down->dtype, c->m->layout == MODE_EXPERTS_V5};
    return MODE_OK;
}

static bool resident_ok(const struct mode_rt *rt, int layer, const struct text_layer *w, const struct mode_rt_hooks *hooks)
{
    const struct mode_model *m = rt->m;
    return rt->resident && m->cfg.text.is_moe[layer] && !m->layers[layer].qexp && !w->bq && !w->bo && w->qn && w->kn &&
           !(hooks && hooks->attn_out);
}

/* The layer on the GPU, the hooks served as the CPU path serves them: the attention scores of
 * each sequence (mean over heads and masked rows), the routing, the experts' overrides (for
 * every token: one limited to some rows keeps the layer on the CPU), the MoE block's input and
 * output. *cpu (nothing changed, the caller runs the layer on the CPU): 1 the device had no
 * memory for it, 2 an override for some rows only. */
static int resident_layer(struct mode_rt *rt, struct mode_rt_batch *b, int layer, const struct text_layer *w, const struct mode_rt_hooks *hooks,
                          int *cpu, struct mode_err *err)
{
    const struct mode_text_config *t = &rt->m->cfg.text;
    const int64_t N = b->n_rows, hd = t->head_dim, E = t->n_expert, K = t->n_expert_used, D = t->n_embd;
    for (int e = 0; hooks && hooks->expert && e < E; e++) {
        struct mode_rt_expert_override ov = {NULL, NULL, NULL};
        int rc = hooks->expert(hooks->ctx, layer, e, &ov, err);
        if (rc) return rc;
        if (ov.gate_up && ov.rows) {
            *cpu = 2;
            return MODE_OK;
        }
    }
    const bool want_moe = hooks && hooks->moe;
    struct mode_arena *a = &rt->scratch; /* zeroed, as the device fills what it is asked for */
    float *ang = scratch_zero(a, N * hd / 2, err, "activations"), *logits = scratch_zero(a, N * E, err, "router logits"),
          *wts = scratch_zero(a, N * K, err, "routing"), *colsum = scratch_zero(a, N, err, "attention scores");
    float *mx = want_moe ? scratch_zero(a, N * D, err, "activations") : NULL, *mo = want_moe ? scratch_zero(a, N * D, err, "activations") : NULL;
    int32_t *idx = mode_arena_calloc(a, (size_t)(N * K), sizeof(int32_t), err, "routing");
    int64_t *seg = mode_arena_calloc(a, (size_t)b->n_seq + 1, sizeof(int64_t), err, "sequences");
    uint8_t *sel = NULL;
    int rc = MODE_OK;
    if (!ang || !logits || !wts || !colsum || !idx || !seg || (want_moe && (!mx || !mo))) return err->code;
    /* the sequences' rows are contiguous and in order */
    for (int i = 0; i < b->n_seq; i++) {
        mrope_angles(rt, &b->seq[i], ang + b->seq[i].row * (hd / 2));
        seg[i] = b->seq[i].row, seg[i + 1] = b->seq[i].row + b->seq[i].n_tok;
        const uint8_t *rows = hooks && hooks->attn_rows && hooks->attn ? hooks->attn_rows(hooks->ctx, layer, i) : NULL;
        if (!rows) continue;
        if (!sel && !(sel = mode_arena_calloc(a, (size_t)N, 1, err, "attention rows"))) return err->code;
        memcpy(sel + b->seq[i].row, rows, (size_t)b->seq[i].n_tok);
    }
    struct expert_ctx ec = {rt->m, layer, hooks};
    const struct mode_rtlayer_w rw = {w->an, w->fn, w->wq, w->wk, w->wv, w->wo, w->qn, w->kn, w->router, expert_cb, &ec};
    const struct mode_rtlayer_rows rr = {N, b->n_seq, seg, ang, sel, b->h, logits, wts, colsum, idx, mx, mo};
    if ((rc = mode_rtlayer_run(rt->resident, t, &rw, &rr, err))) {
        if (rc == MODE_EUNAVAILABLE) *cpu = 1;
        return rc;
    }
    rt->n_resident++;
    for (int i = 0; sel && i < b->n_seq; i++) {
        const struct mode_rt_seq *q = &b->seq[i];
        const uint8_t *rows = hooks->attn_rows(hooks->ctx, layer, i);
        if (rows && (rc = attn_scores(hooks, layer, i, rows, q->n_tok, t->n_head, colsum + q->row, err))) return rc;
    }
    if (hooks && hooks->router) rc = hooks->router(hooks->ctx, layer, b, logits, idx, wts, err);
    if (!rc && want_moe) rc = hooks->moe(hooks->ctx, layer, b, mx, idx, wts, mo, err);
    return rc;
}

int mode_rt_layer(struct mode_rt *rt, struct mode_rt_batch *b, int layer, const struct mode_rt_hooks *hooks,
                  struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const struct mode_text_config *t = &m->cfg.text;
    if (layer != b->next_layer || layer >= t->n_layer)
        return mode_err_set(err, MODE_EINTERNAL, "layer %d requested, the batch is at layer %d", layer, b->next_layer);
    int rc = mode_rt_vision(rt, b, err);
    if (rc) return rc;
    if (b->n_rows == 0) {
        b->next_layer++;
        return MODE_OK;
    }
    /* the layer's weights, activations and routing: the runtime's scratch, given back at once */
    mode_arena_reset(&rt->scratch);
    struct text_layer w;
    if ((rc = text_layer_load(&rt->scratch, m, layer, hooks, &w, err))) return rc;
    struct layer_scratch s;
    memset(&s, 0, sizeof s);
    s.a = &rt->scratch;
    bool done = false;
    if (resident_ok(rt, layer, &w, hooks)) {
        int cpu = 0;
        const struct mode_arena_mark mark = mode_arena_mark(&rt->scratch);
        rc = resident_layer(rt, b, layer, &w, hooks, &cpu, err);
        mode_arena_release(&rt->scratch, mark);
        if (cpu == 1) /* no device memory: the CPU path, b->h untouched */
            rt->n_resident_fallback++, rc = MODE_OK, mode_err_clear(err);
        else if (!cpu) done = true;
    }
    if (!done) rc = attention(rt, b, layer, &w, &s, hooks, err);
    if (!rc && !done) {
        const int64_t N = b->n_rows, D = t->n_embd;
        mode_rmsnorm_ref(b->h, w.fn, (float)t->rms_eps, N, D, s.xn);
        rc = t->is_moe[layer] ? moe(rt, b, layer, &w, &s, hooks, err) : dense_mlp(rt, b, &w, &s, err);
    }
    if (!rc && layer < m->cfg.vision.n_deepstack) {
        /* deepstack: the features of vision layer deepstack[layer] join the image positions */
        const int64_t D = t->n_embd;
        for (int i = 0; i < b->n_seq; i++) {
            const struct mode_rt_seq *q = &b->seq[i];
            for (int64_t j = 0; j < q->n_img; j++) {
                float *hrow = b->h + (q->row + q->img[j]) * D;
                const float *f = q->deepstack + ((int64_t)layer * q->n_img + j) * D;
                for (int64_t c = 0; c < D; c++) hrow[c] += f[c];
            }
        }
    }
    if (!rc) b->next_layer++;
    return rc;
}

int mode_rt_forward(struct mode_rt *rt, struct mode_rt_batch *b, const struct mode_rt_hooks *hooks, struct mode_err *err)
{
    for (int l = b->next_layer; l < rt->m->cfg.text.n_layer; l++) {
        int rc = mode_rt_layer(rt, b, l, hooks, err);
        if (rc) return rc;
    }
    return MODE_OK;
}

int mode_rt_logits(struct mode_rt *rt, const struct mode_rt_batch *b, int s, int64_t r0, int64_t n, float *logits,
                   struct mode_err *err)
{
    const struct mode_model *m = rt->m;
    const int64_t D = m->cfg.text.n_embd, V = m->cfg.text.n_vocab;
    if (b->next_layer != m->cfg.text.n_layer) return mode_err_set(err, MODE_EINTERNAL, "logits before the last layer");
    if (s < 0 || s >= b->n_seq || r0 < 0 || n < 0 || r0 + n > b->seq[s].n_tok)
        return mode_err_set(err, MODE_EINTERNAL, "logits: rows out of range");
    if (!rt->lm_head && !(rt->lm_head = to_f32(m->lm_head, err))) return err->code;
    mode_arena_reset(&rt->scratch);
    float *xn = scratch_raw(&rt->scratch, n * D, err, "final norm"); /* the norm writes every element */
    if (!xn) return err->code;
    mode_rmsnorm_ref(b->h + (b->seq[s].row + r0) * D, rt->out_norm, (float)m->cfg.text.rms_eps, n, D, xn);
    mode_gemm(n, V, D, xn, D, rt->lm_head, D, true, 0.0f, logits, V);
    return MODE_OK;
}
