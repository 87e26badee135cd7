/* gen_qwen3vl — a random Qwen3-VL-30B-A3B-Instruct checkpoint at full width (issue 22), for
 * measuring every stage of the pipeline at the real model's shapes (tests/bench/scale.sh,
 * `make scale`). Not a test and not a fixture: a program that writes a model directory.
 *
 *   build/bench/gen_qwen3vl -o DIR --tokenizer FILE [--layers L] [--seed N]
 *                           [--max-shard-size BYTES] [--router-gain G] [--force]
 *
 * What it writes into DIR (atomically: a temporary sibling renamed into place, io.h):
 *   config.json             the published config.json of Qwen/Qwen3-VL-30B-A3B-Instruct, field for
 *                           field, except text_config.num_hidden_layers = L (--layers, 1..48)
 *   preprocessor_config.json  the published image processor settings (below)
 *   tokenizer.json          a copy of FILE, checked: it must load, and its <|image_pad|>,
 *                           <|vision_start|>, <|vision_end|>, <|video_pad|> must be config.json's ids
 *   model-0000i-of-0000N.safetensors + model.safetensors.index.json: every tensor of the hub
 *                           checkpoint for the first L decoder layers, bf16, names and shapes as
 *                           lib/model.c binds them (hub layout of the fused experts), shards of at
 *                           most --max-shard-size bytes (default 2 GB, 2e9), written by
 *                           lib/safetensors' writer.
 * The tokenizer: emoji-vl's (tests/fixtures/emoji-vl/model) is NOT Qwen3-VL's (2,048 tokens);
 * scale.sh passes the real Qwen3 tokenizer.json of tests/fixtures/big (151,643 BPE tokens + 26
 * added = 151,669 ids), the one Qwen3-VL ships. config.json's vocab_size 151,936 is larger, as in
 * the published model: the embedding and lm_head rows past 151,668 are padding no text produces.
 *
 * Weights (every value finite; activations stay finite through all 48 layers' worth of shapes):
 *   linear weights        N(0, 1/fan_in): a unit-RMS input gives a unit-RMS output
 *   residual branches     the projections that end a residual branch (text o_proj and the
 *                         experts' down_proj; vision attn.proj and mlp.linear_fc2) have that
 *                         variance over 2 x depth (48 text layers, 27 vision blocks), GPT-2's and
 *                         Megatron's initialisation: the streams stay dominated by what each token
 *                         is (its embedding, its image patch) instead of the sum of 2 x depth
 *                         branches, whose shared part (attention nearly uniform at random: every
 *                         token gets the mean of the values) made every image token choose the same
 *                         experts (without it, 2 images at 3 layers: 96% of image tokens in one
 *                         expert, 93 of 128 experts never chosen by an image token)
 *   after a GELU          the bias of the projection that follows a GELU (vision mlp.linear_fc2,
 *                         the mergers' linear_fc2) cancels the GELU's positive mean (put_after_gelu)
 *                         for the same reason; every other bias 0 (transformers' _init_weights)
 *   embed_tokens          N(0, 1) (fan_in 1: the input is one-hot); lm_head N(0, 1/2048):
 *                         logits of standard deviation ~1 after the final RMSNorm
 *   pos_embed             N(0, 0.1^2): small beside the patch embedding of an image (RMS ~0.5 for
 *                         pixels in [-1, 1]), so that the image content, not the position, drives
 *                         the vision tower's attention (and vis-denoise's scores)
 *   norms                 weight 1, bias 0
 *   router (mlp.gate)     row e ~ g_e N(0, 1/2048), g_e = G exp(0.15 z_e), z_e ~ N(0, 1), G =
 *                         --router-gain (default 2): router logits of standard deviation ~2 (a
 *                         trained router's top-8 carry most of the softmax mass, not 8/128 of it),
 *                         and experts of unequal popularity (a wider row wins the top-8 more
 *                         often: with 0.3 instead of 0.15 the most popular expert took 43% of
 *                         the text tokens of a sample, 7 times the mean 8/128). The spread that results is measured, not assumed: scale.sh
 *                         prints, from mode-vis-denoise's freq stream, per layer and token class
 *                         the experts never chosen, the largest share and the effective number of
 *                         experts (exp of the entropy of the selection counts).
 * Deterministic: tensor T's values come from splitmix64 seeded with hash(seed, T's name), so the
 * same seed gives the same bytes whatever L is (the first layers of an L=4 model equal the L=1
 * model's), and the order of writing does not matter. Normal deviates: the inverse normal CDF
 * (Acklam's rational approximation, checked against erfc at start) of
 * 32-bit uniforms, two per 64-bit draw, tabulated at 2^16 cells and interpolated within each;
 * rounded to bf16 (nearest, ties to even).
 *
 * Progress on stderr: one line per decoder layer and per part (embeddings, vision tower), and a
 * summary: bytes, seconds spent drawing numbers, handing them to the writer (its spill file), and
 * finishing (the writer copies each shard's spill into the shard file, then fsync and rename), and
 * the write rate.
 *
 * Where config.json's values come from (read with the search tools, 2026-12-07):
 *   [H] the hub file Qwen/Qwen3-VL-30B-A3B-Instruct/config.json as transcribed field for field
 *       ("byte-for-byte from the fetched file at commit 1fc78ad") in a public repository's parser
 *       test (find_string id 62478544309): architectures, image_token_id 151655, model_type,
 *       text_config.{attention_bias false, decoder_sparse_step 1, head_dim 128, hidden_size 2048,
 *       intermediate_size 6144, max_position_embeddings 262144, mlp_only_layers [], model_type
 *       qwen3_vl_moe_text, moe_intermediate_size 768, norm_topk_prob true, num_attention_heads 32,
 *       num_experts 128, num_experts_per_tok 8, num_hidden_layers 48, num_key_value_heads 4,
 *       rms_norm_eps 1e-06, rope_scaling {mrope_interleaved true, mrope_section [24, 20, 20],
 *       rope_type default}, rope_theta 5000000, vocab_size 151936}, tie_word_embeddings false,
 *       video_token_id 151656, vision_config.{deepstack_visual_indexes [8, 16, 24], depth 27,
 *       hidden_act gelu_pytorch_tanh, hidden_size 1152, in_channels 3, intermediate_size 4304,
 *       model_type qwen3_vl_moe, num_heads 16, num_position_embeddings 2304, out_hidden_size 2048,
 *       patch_size 16, spatial_merge_size 2, temporal_patch_size 2}, vision_end_token_id 151653,
 *       vision_start_token_id 151652.
 *   [F] fields that transcription leaves out, from a fine-tune of this model saved by transformers
 *       (find_string id 49726838099; every [H] value above agrees with it): text_config.
 *       {attention_dropout 0.0, bos_token_id 151643, dtype bfloat16, eos_token_id 151645,
 *       hidden_act silu, initializer_range 0.02, use_cache true}, vision_config.initializer_range
 *       0.02; the key set is the one transformers 4.57 writes (emoji-vl's and the tiny reference
 *       model's config.json have exactly these keys).
 *   [V] transformers_version "4.57.0.dev0": the value of the Qwen3-VL release's config.json files
 *       (the 8B's, find_string id 56172080016); not seen for the 30B-A3B's itself.
 *   [P] preprocessor_config.json: size {longest_edge 16777216, shortest_edge 65536}, patch_size 16,
 *       temporal_patch_size 2, merge_size 2, image_mean/std [0.5]*3, processor_class
 *       Qwen3VLProcessor, image_processor_type Qwen2VLImageProcessorFast — the Qwen3-VL release's
 *       processor settings as several public repositories copy them (find_string ids 70263102148,
 *       54877551029).
 * Tensor names and layouts: lib/model.c (which binds the hub names) and
 * tests/fixtures/reference/tiny-random-qwen3vlmoe (written by transformers in the hub layout):
 * fused experts gate_up_proj (n_expert, n_embd, 2*n_ff_exp), gate = first half of the last dim,
 * down_proj (n_expert, n_ff_exp, n_embd).
 */
#include "../../lib/io.h"
#include "../../lib/safetensors.h"
#include "../../lib/tokenizer.h"
#include "bench_util.h"

#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the published shapes ([H] above) */
enum {
    N_LAYER_FULL = 48,
    N_EMBD = 2048, N_HEAD = 32, N_HEAD_KV = 4, HEAD_DIM = 128, N_EXPERT = 128, N_FF_EXP = 768, N_VOCAB = 151936,
    V_DEPTH = 27, V_EMBD = 1152, V_FF = 4304, V_PATCH = 16, V_TPATCH = 2, V_MERGE = 2, V_POS = 2304, V_CH = 3,
    N_DEEPSTACK = 3,
};
static const int deepstack_idx[N_DEEPSTACK] = {8, 16, 24};
/* special tokens ([H]) */
enum { ID_IMAGE = 151655, ID_VIDEO = 151656, ID_VSTART = 151652, ID_VEND = 151653 };

/* ---- random numbers ---------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* the stream of tensor `name`: independent of the order tensors are written in */
static uint64_t stream_seed(uint64_t seed, const char *name)
{
    uint64_t s = seed ^ fnv1a(name);
    return splitmix64(&s);
}

/* Acklam's inverse normal CDF, p in (0, 1) */
static double inv_norm(double p)
{
    static const double a[6] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                                1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                                6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                                -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00};
    const double lo = 0.02425, hi = 1 - lo;
    if (p < lo) {
        double q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    if (p > hi) {
        double q = sqrt(-2 * log(1 - p));
        return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    double q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}

/* Checks inv_norm against the CDF 0.5 erfc(-x / sqrt 2) over (0, 1): a wrong coefficient shows here
 * as an error of percents; the approximation itself is within ~2e-8 of p (relative to the nearer
 * tail), far below bf16's rounding (2^-9 of the value). */
static int inv_norm_check(void)
{
    double worst = 0;
    for (int i = 1; i < 100000; i++) {
        double p = i / 100000.0, x = inv_norm(p), back = 0.5 * erfc(-x / sqrt(2.0));
        double e = fabs(back - p) / (p < 0.5 ? p : 1 - p);
        if (e > worst) worst = e;
    }
    if (worst > 1e-7) {
        fprintf(stderr, "gen_qwen3vl: the inverse normal CDF is off by %.3g (relative): not generating\n", worst);
        return -1;
    }
    return 0;
}

/* a 32-bit uniform mapped into (0, 1), never 0 or 1 */
static inline double unit(uint32_t u) { return ((double)u + 0.5) * (1.0 / 4294967296.0); }

/* The inverse CDF at the 2^16 cell edges i / 2^16: a 32-bit uniform u picks cell u >> 16 and a
 * point inside it by linear interpolation (u & 0xffff), i.e. a density constant within each cell
 * of probability 2^-16. Exact (inv_norm) in the two outermost cells, whose edges are infinite.
 * inv_norm costs a division and, in the tails, a log and a square root: the table makes drawing
 * ~4x faster, which is most of the generator's CPU time. */
#define EDGES (1 << 16)
static float edge[EDGES + 1];

static void edges_init(void)
{
    for (int i = 1; i < EDGES; i++) edge[i] = (float)inv_norm((double)i / EDGES);
}

static inline float normal32(uint32_t u)
{
    uint32_t c = u >> 16;
    if (c == 0 || c == EDGES - 1) return (float)inv_norm(unit(u));
    return edge[c] + (float)(u & 0xffffu) * (1.0f / 65536.0f) * (edge[c + 1] - edge[c]);
}

static inline uint16_t bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u); /* nearest, ties to even; no NaN or Inf is ever drawn */
    return (uint16_t)(u >> 16);
}

/* n values N(0, std^2) of stream s, as bf16 */
static void fill_normal(uint16_t *dst, uint64_t n, double std, uint64_t *s)
{
    const float sd = (float)std;
    uint64_t i = 0;
    for (; i + 1 < n; i += 2) {
        uint64_t r = splitmix64(s);
        dst[i] = bf16(sd * normal32((uint32_t)r));
        dst[i + 1] = bf16(sd * normal32((uint32_t)(r >> 32)));
    }
    if (i < n) dst[i] = bf16(sd * normal32((uint32_t)splitmix64(s)));
}

/* ---- the writer ---------------------------------------------------------------------------- */

struct gen {
    uint64_t seed;
    double router_gain;
    struct mode_st_writer w;
    uint16_t *buf; /* the largest tensor, bf16 */
    uint64_t cap;
    uint64_t bytes;        /* written so far */
    double t_rng, t_write; /* seconds drawing, seconds in mode_st_writer_add */
    struct mode_err err;
};

enum init { INIT_NORMAL, INIT_ONE, INIT_ZERO, INIT_ROUTER };

/* One tensor: name, init, standard deviation (INIT_NORMAL), shape. */
static int put(struct gen *g, const char *name, enum init how, double std, int ndim, const int64_t *shape)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (uint64_t)shape[i];
    if (n > g->cap) {
        free(g->buf);
        if (!(g->buf = malloc(n * sizeof *g->buf))) {
            mode_err_oom(&g->err, n * sizeof *g->buf, name);
            return -1;
        }
        g->cap = n;
    }
    double t0 = now();
    uint64_t s = stream_seed(g->seed, name);
    if (how == INIT_NORMAL) fill_normal(g->buf, n, std, &s);
    else if (how == INIT_ONE || how == INIT_ZERO)
        for (uint64_t i = 0; i < n; i++) g->buf[i] = how == INIT_ONE ? 0x3f80 : 0; /* bf16 1.0, 0.0 */
    else { /* router (n_expert, n_embd): row e scaled by g_e */
        uint64_t cols = (uint64_t)shape[ndim - 1], rows = n / cols, sg = stream_seed(g->seed ^ 0x5eedu, name);
        for (uint64_t r = 0; r < rows; r++) {
            double z = normal32((uint32_t)splitmix64(&sg));
            fill_normal(g->buf + r * cols, cols, g->router_gain * exp(0.15 * z) / sqrt((double)cols), &s);
        }
    }
    double t1 = now();
    int rc = mode_st_writer_add(&g->w, name, MODE_BF16, ndim, shape, g->buf, &g->err);
    g->t_rng += t1 - t0;
    g->t_write += now() - t1;
    g->bytes += 2 * n;
    return rc ? -1 : 0;
}

/* The weight (out, in) of a projection that follows a GELU, N(0, std^2), then its bias
 * b_i = -E[GELU(z)] sum_j W[i][j], z ~ N(0, 1) (the GELU's inputs: unit-RMS LayerNorm outputs
 * times N(0, 1/fan_in) rows): it cancels the GELU's positive mean, 1/(2 sqrt(pi)) = 0.2821, which
 * would otherwise add one and the same vector to every token (see the top of this file). Computed
 * from the bf16 weights as written. */
static int put_after_gelu(struct gen *g, const char *wname, const char *bname, double std, int64_t out, int64_t in)
{
    const double gelu_mean = 0.28209479177387814; /* E[z Phi(z)] = 1 / (2 sqrt(pi)) */
    if (put(g, wname, INIT_NORMAL, std, 2, (int64_t[]){out, in})) return -1;
    uint16_t *b = malloc(sizeof *b * (size_t)out);
    if (!b) return mode_err_oom(&g->err, sizeof *b * (size_t)out, bname), -1;
    for (int64_t i = 0; i < out; i++) {
        double sum = 0;
        for (int64_t j = 0; j < in; j++) {
            uint32_t u = (uint32_t)g->buf[i * in + j] << 16;
            float f;
            memcpy(&f, &u, 4);
            sum += f;
        }
        b[i] = bf16((float)(-gelu_mean * sum));
    }
    double t0 = now();
    int rc = mode_st_writer_add(&g->w, bname, MODE_BF16, 1, (int64_t[]){out}, b, &g->err);
    g->t_write += now() - t0;
    g->bytes += 2 * (uint64_t)out;
    free(b);
    return rc ? -1 : 0;
}

static int put1(struct gen *g, const char *name, enum init how, int64_t d0)
{
    return put(g, name, how, 0, 1, (int64_t[]){d0});
}
static int put2(struct gen *g, const char *name, double std, int64_t d0, int64_t d1)
{
    return put(g, name, INIT_NORMAL, std, 2, (int64_t[]){d0, d1});
}

/* ---- the parts ----------------------------------------------------------------------------- */

#define TXT "model.language_model."
#define VIS "model.visual."

static int decoder_layer(struct gen *g, int l)
{
    char n[256];
    const int qd = N_HEAD * HEAD_DIM, kvd = N_HEAD_KV * HEAD_DIM;
    const double s_in = 1 / sqrt((double)N_EMBD), depth = 1 / sqrt(2.0 * N_LAYER_FULL); /* residual branches: of all 48 layers */
#define NAME(fmt) (snprintf(n, sizeof n, TXT "layers.%d." fmt, l), n)
    if (put1(g, NAME("input_layernorm.weight"), INIT_ONE, N_EMBD) || put1(g, NAME("post_attention_layernorm.weight"), INIT_ONE, N_EMBD) ||
        put2(g, NAME("self_attn.q_proj.weight"), s_in, qd, N_EMBD) || put2(g, NAME("self_attn.k_proj.weight"), s_in, kvd, N_EMBD) ||
        put2(g, NAME("self_attn.v_proj.weight"), s_in, kvd, N_EMBD) ||
        put2(g, NAME("self_attn.o_proj.weight"), depth / sqrt((double)qd), N_EMBD, qd) ||
        put1(g, NAME("self_attn.q_norm.weight"), INIT_ONE, HEAD_DIM) || put1(g, NAME("self_attn.k_norm.weight"), INIT_ONE, HEAD_DIM) ||
        put(g, NAME("mlp.gate.weight"), INIT_ROUTER, 0, 2, (int64_t[]){N_EXPERT, N_EMBD}) ||
        /* hub layout: (n_expert, n_embd, 2*n_ff_exp), inputs along dim 1: fan_in n_embd */
        put(g, NAME("mlp.experts.gate_up_proj"), INIT_NORMAL, s_in, 3, (int64_t[]){N_EXPERT, N_EMBD, 2 * N_FF_EXP}) ||
        put(g, NAME("mlp.experts.down_proj"), INIT_NORMAL, depth / sqrt((double)N_FF_EXP), 3, (int64_t[]){N_EXPERT, N_FF_EXP, N_EMBD}))
        return -1;
#undef NAME
    return 0;
}

/* patch merger at prefix: LayerNorm over norm_dim, fc1 (hm, hm), fc2 (out, hm), hm = v_embd * merge^2 */
static int merger(struct gen *g, const char *prefix, int64_t norm_dim)
{
    char n[256], nb[256];
    const int64_t hm = (int64_t)V_EMBD * V_MERGE * V_MERGE;
#define NAME(s) (snprintf(n, sizeof n, "%s" s, prefix), n)
    return put1(g, NAME("norm.weight"), INIT_ONE, norm_dim) || put1(g, NAME("norm.bias"), INIT_ZERO, norm_dim) ||
                   put2(g, NAME("linear_fc1.weight"), 1 / sqrt((double)hm), hm, hm) || put1(g, NAME("linear_fc1.bias"), INIT_ZERO, hm) ||
                   put_after_gelu(g, NAME("linear_fc2.weight"), (snprintf(nb, sizeof nb, "%slinear_fc2.bias", prefix), nb),
                                  1 / sqrt((double)hm), N_EMBD, hm)
               ? -1
               : 0;
#undef NAME
}

static int vision_tower(struct gen *g)
{
    char n[256];
    const int64_t pin = (int64_t)V_CH * V_TPATCH * V_PATCH * V_PATCH;
    if (put(g, VIS "patch_embed.proj.weight", INIT_NORMAL, 1 / sqrt((double)pin), 5,
            (int64_t[]){V_EMBD, V_CH, V_TPATCH, V_PATCH, V_PATCH}) ||
        put1(g, VIS "patch_embed.proj.bias", INIT_ZERO, V_EMBD) || put2(g, VIS "pos_embed.weight", 0.1, V_POS, V_EMBD))
        return -1;
    const double s_in = 1 / sqrt((double)V_EMBD), depth = 1 / sqrt(2.0 * V_DEPTH);
    char nb[256];
    for (int i = 0; i < V_DEPTH; i++) {
#define NAME(fmt) (snprintf(n, sizeof n, VIS "blocks.%d." fmt, i), n)
        if (put1(g, NAME("norm1.weight"), INIT_ONE, V_EMBD) || put1(g, NAME("norm1.bias"), INIT_ZERO, V_EMBD) ||
            put1(g, NAME("norm2.weight"), INIT_ONE, V_EMBD) || put1(g, NAME("norm2.bias"), INIT_ZERO, V_EMBD) ||
            put2(g, NAME("attn.qkv.weight"), s_in, 3 * V_EMBD, V_EMBD) || put1(g, NAME("attn.qkv.bias"), INIT_ZERO, 3 * V_EMBD) ||
            put2(g, NAME("attn.proj.weight"), depth * s_in, V_EMBD, V_EMBD) || put1(g, NAME("attn.proj.bias"), INIT_ZERO, V_EMBD) ||
            put2(g, NAME("mlp.linear_fc1.weight"), s_in, V_FF, V_EMBD) || put1(g, NAME("mlp.linear_fc1.bias"), INIT_ZERO, V_FF) ||
            put_after_gelu(g, NAME("mlp.linear_fc2.weight"), (snprintf(nb, sizeof nb, VIS "blocks.%d.mlp.linear_fc2.bias", i), nb),
                           depth / sqrt((double)V_FF), V_EMBD, V_FF))
            return -1;
#undef NAME
    }
    /* the final merger's LayerNorm acts before the 2x2 shuffle (v_embd), the deepstack mergers'
     * after it (v_embd * merge^2): lib/model.c, transformers' use_postshuffle_norm */
    if (merger(g, VIS "merger.", V_EMBD)) return -1;
    for (int i = 0; i < N_DEEPSTACK; i++) {
        snprintf(n, sizeof n, VIS "deepstack_merger_list.%d.", i);
        if (merger(g, n, (int64_t)V_EMBD * V_MERGE * V_MERGE)) return -1;
    }
    return 0;
}

/* ---- the JSON files ------------------------------------------------------------------------ */

/* config.json as the hub has it (keys sorted, two-space indent: transformers' to_json_string),
 * with num_hidden_layers = n_layer. Sources: [H], [F], [V] at the top of this file. */
static int config_json(char *buf, size_t cap, int n_layer)
{
    int k = snprintf(buf, cap,
                     "{\n"
                     "  \"architectures\": [\n"
                     "    \"Qwen3VLMoeForConditionalGeneration\"\n"
                     "  ],\n"
                     "  \"image_token_id\": %d,\n"
                     "  \"model_type\": \"qwen3_vl_moe\",\n"
                     "  \"text_config\": {\n"
                     "    \"attention_bias\": false,\n"
                     "    \"attention_dropout\": 0.0,\n"
                     "    \"bos_token_id\": 151643,\n"
                     "    \"decoder_sparse_step\": 1,\n"
                     "    \"dtype\": \"bfloat16\",\n"
                     "    \"eos_token_id\": 151645,\n"
                     "    \"head_dim\": %d,\n"
                     "    \"hidden_act\": \"silu\",\n"
                     "    \"hidden_size\": %d,\n"
                     "    \"initializer_range\": 0.02,\n"
                     "    \"intermediate_size\": 6144,\n"
                     "    \"max_position_embeddings\": 262144,\n"
                     "    \"mlp_only_layers\": [],\n"
                     "    \"model_type\": \"qwen3_vl_moe_text\",\n"
                     "    \"moe_intermediate_size\": %d,\n"
                     "    \"norm_topk_prob\": true,\n"
                     "    \"num_attention_heads\": %d,\n"
                     "    \"num_experts\": %d,\n"
                     "    \"num_experts_per_tok\": 8,\n"
                     "    \"num_hidden_layers\": %d,\n"
                     "    \"num_key_value_heads\": %d,\n"
                     "    \"rms_norm_eps\": 1e-06,\n"
                     "    \"rope_scaling\": {\n"
                     "      \"mrope_interleaved\": true,\n"
                     "      \"mrope_section\": [\n"
                     "        24,\n"
                     "        20,\n"
                     "        20\n"
                     "      ],\n"
                     "      \"rope_type\": \"default\"\n"
                     "    },\n"
                     "    \"rope_theta\": 5000000,\n"
                     "    \"use_cache\": true,\n"
                     "    \"vocab_size\": %d\n"
                     "  },\n"
                     "  \"tie_word_embeddings\": false,\n"
                     "  \"transformers_version\": \"4.57.0.dev0\",\n"
                     "  \"video_token_id\": %d,\n"
                     "  \"vision_config\": {\n"
                     "    \"deepstack_visual_indexes\": [\n"
                     "      %d,\n"
                     "      %d,\n"
                     "      %d\n"
                     "    ],\n"
                     "    \"depth\": %d,\n"
                     "    \"hidden_act\": \"gelu_pytorch_tanh\",\n"
                     "    \"hidden_size\": %d,\n"
                     "    \"in_channels\": %d,\n"
                     "    \"initializer_range\": 0.02,\n"
                     "    \"intermediate_size\": %d,\n"
                     "    \"model_type\": \"qwen3_vl_moe\",\n"
                     "    \"num_heads\": 16,\n"
                     "    \"num_position_embeddings\": %d,\n"
                     "    \"out_hidden_size\": %d,\n"
                     "    \"patch_size\": %d,\n"
                     "    \"spatial_merge_size\": %d,\n"
                     "    \"temporal_patch_size\": %d\n"
                     "  },\n"
                     "  \"vision_end_token_id\": %d,\n"
                     "  \"vision_start_token_id\": %d\n"
                     "}\n",
                     ID_IMAGE, HEAD_DIM, N_EMBD, N_FF_EXP, N_HEAD, N_EXPERT, n_layer, N_HEAD_KV, N_VOCAB, ID_VIDEO,
                     deepstack_idx[0], deepstack_idx[1], deepstack_idx[2], V_DEPTH, V_EMBD, V_CH, V_FF, V_POS, N_EMBD, V_PATCH,
                     V_MERGE, V_TPATCH, ID_VEND, ID_VSTART);
    return k > 0 && (size_t)k < cap ? k : -1;
}

/* [P] */
static const char preproc_json[] = "{\n"
                                   "  \"size\": {\n"
                                   "    \"longest_edge\": 16777216,\n"
                                   "    \"shortest_edge\": 65536\n"
                                   "  },\n"
                                   "  \"patch_size\": 16,\n"
                                   "  \"temporal_patch_size\": 2,\n"
                                   "  \"merge_size\": 2,\n"
                                   "  \"image_mean\": [\n"
                                   "    0.5,\n"
                                   "    0.5,\n"
                                   "    0.5\n"
                                   "  ],\n"
                                   "  \"image_std\": [\n"
                                   "    0.5,\n"
                                   "    0.5,\n"
                                   "    0.5\n"
                                   "  ],\n"
                                   "  \"processor_class\": \"Qwen3VLProcessor\",\n"
                                   "  \"image_processor_type\": \"Qwen2VLImageProcessorFast\"\n"
                                   "}\n";

/* Reads the tokenizer, checks it is a Qwen-VL one with config.json's special ids, and copies it. */
static int tokenizer(const struct mode_outdir *dir, const char *path, struct mode_err *err)
{
    struct mode_tokenizer *t;
    int rc = mode_tokenizer_load(path, &t, err);
    if (rc) return rc;
    static const char *const names[4] = {"<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"};
    static const int32_t want[4] = {ID_IMAGE, ID_VIDEO, ID_VSTART, ID_VEND};
    for (int i = 0; i < 4 && !rc; i++) {
        int32_t id = mode_tokenizer_token_id(t, names[i]);
        if (id != want[i])
            rc = mode_err_set(err, MODE_EDATA, "%s: %s is %d, the published config.json says %d: not Qwen3-VL's tokenizer", path, names[i],
                              id, want[i]);
    }
    int32_t nv = mode_tokenizer_n_vocab(t);
    mode_tokenizer_free(t);
    if (rc) return rc;
    if (nv > N_VOCAB) return mode_err_set(err, MODE_EDATA, "%s: %d token ids do not fit vocab_size %d", path, nv, N_VOCAB);
    fprintf(stderr, "gen_qwen3vl: tokenizer %s: %d ids (vocab_size %d: rows %d..%d of the embedding are padding, as in the published model)\n",
            path, nv, N_VOCAB, nv, N_VOCAB - 1);
    char *text;
    size_t len;
    if ((rc = mode_read_file(path, MODE_TOKENIZER_MAX_FILE, &text, &len, err))) return rc;
    rc = mode_outdir_write(dir, "tokenizer.json", text, len, err);
    free(text);
    return rc;
}

/* ---- main ---------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: gen_qwen3vl -o DIR --tokenizer FILE [--layers L] [--seed N] [--max-shard-size BYTES]\n"
               "                   [--router-gain G] [--force]\n"
               "  -o DIR               the model directory to write (refused if it exists, unless --force)\n"
               "  --tokenizer FILE     Qwen3-VL's tokenizer.json (the real Qwen3 one: tests/fixtures/big)\n"
               "  --layers L           decoder layers, 1..48 (default 4); config.json says L\n"
               "  --seed N             seed of every tensor (default 1)\n"
               "  --max-shard-size B   bytes per safetensors shard at most (default 2000000000)\n"
               "  --router-gain G      router logits' standard deviation, about (default 2)\n"
               "  --force              replace DIR if it exists\n");
}

static double gb(uint64_t b) { return (double)b / 1e9; }

int main(int argc, char **argv)
{
    const char *out = NULL, *tok = NULL;
    int n_layer = 4, force = 0;
    uint64_t seed = 1, max_shard = 2000000000ull;
    double router_gain = 2;
    enum { O_TOK = 256, O_LAYERS, O_SEED, O_SHARD, O_GAIN, O_FORCE };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},   {"tokenizer", required_argument, 0, O_TOK},       {"layers", required_argument, 0, O_LAYERS},
        {"seed", required_argument, 0, O_SEED},  {"max-shard-size", required_argument, 0, O_SHARD}, {"router-gain", required_argument, 0, O_GAIN},
        {"force", no_argument, 0, O_FORCE},      {"help", no_argument, 0, 'h'},                    {0, 0, 0, 0},
    };
    for (int c; (c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1;) {
        char *end = NULL;
        switch (c) {
        case 'o': out = optarg; break;
        case O_TOK: tok = optarg; break;
        case O_LAYERS: n_layer = (int)strtol(optarg, &end, 10); break;
        case O_SEED: seed = strtoull(optarg, &end, 10); break;
        case O_SHARD: max_shard = strtoull(optarg, &end, 10); break;
        case O_GAIN: router_gain = strtod(optarg, &end); break;
        case O_FORCE: force = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 64;
        }
        if (end && (*end || end == optarg)) {
            fprintf(stderr, "gen_qwen3vl: '%s' is not a number\n", optarg);
            return 64;
        }
    }
    if (!out || !tok || optind != argc || n_layer < 1 || n_layer > N_LAYER_FULL || max_shard < ((uint64_t)1 << 30) ||
        !(router_gain > 0 && router_gain < 100)) {
        usage(stderr);
        return 64;
    }
    if (inv_norm_check()) return 70;
    edges_init();

    /* what will be written: the text layers, the embeddings, the vision tower */
    const uint64_t hm = (uint64_t)V_EMBD * V_MERGE * V_MERGE;
    const uint64_t per_layer = 2 * ((uint64_t)2 * N_EMBD + (uint64_t)N_HEAD * HEAD_DIM * N_EMBD * 2 + (uint64_t)N_HEAD_KV * HEAD_DIM * N_EMBD * 2 +
                                    2 * HEAD_DIM + (uint64_t)N_EXPERT * N_EMBD + (uint64_t)N_EXPERT * N_EMBD * N_FF_EXP * 3);
    const uint64_t embd = 2 * ((uint64_t)2 * N_VOCAB * N_EMBD + N_EMBD);
    const uint64_t merger_b = 2 * (hm * hm + hm + (uint64_t)N_EMBD * hm + N_EMBD);
    const uint64_t vision = 2 * ((uint64_t)V_EMBD * V_CH * V_TPATCH * V_PATCH * V_PATCH + V_EMBD + (uint64_t)V_POS * V_EMBD +
                                 (uint64_t)V_DEPTH * (4 * V_EMBD + 4 * (uint64_t)V_EMBD * V_EMBD + 4 * V_EMBD + 2 * (uint64_t)V_FF * V_EMBD + V_FF + V_EMBD)) +
                            merger_b + 2 * 2 * V_EMBD + N_DEEPSTACK * (merger_b + 2 * 2 * hm);
    const uint64_t total = (uint64_t)n_layer * per_layer + embd + vision;
    fprintf(stderr, "gen_qwen3vl: Qwen3-VL-30B-A3B at full width, %d of %d decoder layers, seed %llu: %.3f GB of bf16 "
                    "(%.3f GB a layer, %.3f GB embeddings + lm_head, %.3f GB vision tower; 48 layers: %.2f GB)\n",
            n_layer, N_LAYER_FULL, (unsigned long long)seed, gb(total), gb(per_layer), gb(embd), gb(vision),
            gb(N_LAYER_FULL * per_layer + embd + vision));

    struct gen g = {.seed = seed, .router_gain = router_gain};
    struct mode_outdir dir;
    const double t0 = now();
    if (mode_outdir_begin(&dir, out, force, &g.err)) goto fail;
    if (mode_st_writer_init(&g.w, &dir, max_shard, &g.err)) {
        mode_outdir_abort(&dir);
        goto fail;
    }
    char cfg[8192];
    int cl = config_json(cfg, sizeof cfg, n_layer);
    if (cl < 0) {
        mode_err_set(&g.err, MODE_EINTERNAL, "config.json does not fit its buffer");
        goto abort;
    }
    if (mode_outdir_write(&dir, "config.json", cfg, (size_t)cl, &g.err) ||
        mode_outdir_write(&dir, "preprocessor_config.json", preproc_json, sizeof preproc_json - 1, &g.err) || tokenizer(&dir, tok, &g.err))
        goto abort;

    double tp = now();
    uint64_t bp = 0;
#define PROGRESS(...)                                                                                                           \
    do {                                                                                                                        \
        double t_ = now();                                                                                                      \
        fprintf(stderr, "gen_qwen3vl: ");                                                                                       \
        fprintf(stderr, __VA_ARGS__);                                                                                           \
        fprintf(stderr, ": %.3f GB in %.1f s (%.0f MB/s); %.2f of %.2f GB, %.0f s\n", gb(g.bytes - bp), t_ - tp,                \
                (double)(g.bytes - bp) / 1e6 / (t_ - tp > 0 ? t_ - tp : 1e-9), gb(g.bytes), gb(total), t_ - t0);               \
        tp = t_, bp = g.bytes;                                                                                                  \
    } while (0)
    if (put2(&g, TXT "embed_tokens.weight", 1.0, N_VOCAB, N_EMBD)) goto abort;
    PROGRESS("embed_tokens");
    for (int l = 0; l < n_layer; l++) {
        if (decoder_layer(&g, l)) goto abort;
        PROGRESS("decoder layer %d/%d", l + 1, n_layer);
    }
    if (put1(&g, TXT "norm.weight", INIT_ONE, N_EMBD) || put2(&g, "lm_head.weight", 1 / sqrt((double)N_EMBD), N_VOCAB, N_EMBD)) goto abort;
    PROGRESS("norm + lm_head");
    if (vision_tower(&g)) goto abort;
    PROGRESS("vision tower (27 blocks, merger, 3 deepstack mergers)");
    if (g.bytes != total) {
        mode_err_set(&g.err, MODE_EINTERNAL, "wrote %llu bytes of tensors, expected %llu", (unsigned long long)g.bytes, (unsigned long long)total);
        goto abort;
    }
    const double tf = now();
    if (mode_st_writer_finish(&g.w, &g.err)) goto abort;
    const double tc = now();
    if (mode_outdir_commit(&dir, &g.err)) goto abort;
    const double te = now();
    fprintf(stderr,
            "gen_qwen3vl: %s: %.3f GB in %d shard(s) of at most %.2f GB, %.1f s: drawing numbers %.1f s, handing them to the writer "
            "(its spill file) %.1f s, finishing the shards (spill copied into each shard file, fsync) %.1f s, commit %.1f s; "
            "%.0f MB/s overall\n",
            out, gb(g.bytes), g.w.shard, gb(max_shard), te - t0, g.t_rng, g.t_write, tc - tf, te - tc, (double)g.bytes / 1e6 / (te - t0));
    mode_st_writer_free(&g.w);
    free(g.buf);
    return 0;
abort:
    mode_st_writer_free(&g.w);
    mode_outdir_abort(&dir);
fail:
    free(g.buf);
    fprintf(stderr, "gen_qwen3vl: %s\n", g.err.msg);
    return g.err.code ? g.err.code : 70;
}
