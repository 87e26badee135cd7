/* bench_forward — throughput and memory of the CPU forward pass (lib/runtime.c).
 *
 *   build/bench/bench_forward [--samples N] [--text-tokens T] [--threads K] MODEL_DIR...
 *
 * For each model: N synthetic samples, half text records of T random tokens, half chat records
 * with one image at the processor's minimum pixel count (random pixels) and a short text, run as
 * one batch through the vision tower, every decoder layer and the lm_head. Prints one table row
 * per model: tokens, seconds per phase, tokens/s, peak resident memory and peak anonymous memory
 * (activations and converted weights; mapped weights are clean page cache and are not in it).
 * Median of 3 runs. A program that prints a table: never a test. */
#include "../../lib/ops.h"
#include "../../lib/runtime.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 1;
static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* kB fields of /proc/self/status */
static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') v = atol(line + n + 1);
    if (f) fclose(f);
    return v;
}

static long peak_anon;
static void sample_anon(void)
{
    long a = status_kb("RssAnon");
    if (a > peak_anon) peak_anon = a;
}

/* one synthetic sample record; returns its encoded bytes in b */
static void make_sample(struct mode_mp *b, const struct mode_model *m, int idx, int text_tokens, bool image)
{
    const struct mode_config *c = &m->cfg;
    int side = (int)sqrt((double)(m->has_preproc ? m->pre.min_pixels : 65536)); /* square image at the minimum */
    int unit = c->vision.patch_size * c->vision.merge_size;
    side = side / unit * unit;
    if (side < unit) side = unit;
    int64_t gh = side / c->vision.patch_size, n_img = gh * gh / (c->vision.merge_size * c->vision.merge_size);
    int64_t n = image ? 8 + n_img : text_tokens;
    int32_t *tok = malloc((size_t)n * 4);
    uint8_t *mod = calloc((size_t)n, 1), *score = calloc((size_t)n, 1);
    for (int64_t i = 0; i < n; i++) {
        tok[i] = (int32_t)(rnd() % (uint64_t)(c->text.n_vocab < 2000 ? c->text.n_vocab : 2000));
        score[i] = i > 0;
    }
    struct mode_image_in im = {{1, gh, gh}, 1, side, side, 3, NULL, NULL};
    uint8_t *px = NULL;
    if (image) {
        tok[2] = c->vision_start_id;
        for (int64_t i = 0; i < n_img; i++) {
            tok[3 + i] = c->image_token_id;
            mod[3 + i] = 1;
        }
        tok[3 + n_img] = c->vision_end_id;
        px = malloc((size_t)side * side * 3);
        for (int64_t i = 0; i < (int64_t)side * side * 3; i++) px[i] = (uint8_t)rnd();
        im.pixels = px;
    }
    char id[32];
    snprintf(id, sizeof id, "synthetic:%d", idx);
    struct mode_sample_in s = {id, n, tok, mod, score, image ? 1 : 0, &im, NULL};
    mode_mp_reset(b);
    mode_sample_pack(b, &s);
    free(tok), free(mod), free(score), free(px);
}

int main(int argc, char **argv)
{
    int n_samples = 32, text_tokens = 64, threads = 0;
    int a = 1;
    for (; a < argc && argv[a][0] == '-'; a += 2) {
        if (a + 1 >= argc) break;
        if (!strcmp(argv[a], "--samples")) n_samples = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--text-tokens")) text_tokens = atoi(argv[a + 1]);
        else if (!strcmp(argv[a], "--threads")) threads = atoi(argv[a + 1]);
        else break;
    }
    if (a >= argc) {
        fprintf(stderr, "usage: %s [--samples N] [--text-tokens T] [--threads K] MODEL_DIR...\n", argv[0]);
        return 64;
    }
    struct mode_err terr = {0};
    if (mode_ops_threads(threads, &terr)) {
        fprintf(stderr, "%s\n", terr.msg);
        return 69;
    }
    printf("%-28s %7s %7s %9s %9s %9s %10s %10s %10s\n", "model", "samples", "tokens", "vision_s", "layers_s", "head_s",
           "tokens/s", "peak_rss", "peak_anon");
    for (; a < argc; a++) {
        struct mode_err err = {0};
        struct mode_model m;
        if (mode_model_open(&m, argv[a], &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 65;
        }
        struct mode_rt rt;
        mode_rt_init(&rt, &m, &err);
        double tv[3], tl[3], th[3], tot[3];
        int64_t tokens = 0;
        for (int run = 0; run < 3; run++) {
            rng = 1;
            struct mode_rt_batch b;
            mode_rt_batch_init(&b);
            struct mode_mp mp;
            mode_mp_init(&mp);
            for (int i = 0; i < n_samples; i++) {
                make_sample(&mp, &m, i, text_tokens, i % 2);
                msgpack_unpacked u;
                msgpack_unpacked_init(&u);
                size_t off = 0;
                msgpack_unpack_next(&u, mp.buf, mp.len, &off);
                struct mode_rec r = {&u.data, "synthetic", "record"};
                struct mode_sample s;
                if (mode_sample_parse(&r, &s, &err) || mode_rt_batch_add(&rt, &b, &s, &r, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 65;
                }
                mode_sample_free(&s);
                msgpack_unpacked_destroy(&u);
            }
            mode_mp_free(&mp);
            tokens = b.n_rows;
            double t0 = now();
            mode_rt_vision(&rt, &b, &err);
            sample_anon();
            double t1 = now();
            for (int l = 0; l < m.cfg.text.n_layer; l++) {
                if (mode_rt_layer(&rt, &b, l, NULL, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 70;
                }
                sample_anon();
            }
            double t2 = now();
            float *lg = malloc((size_t)(256 * m.cfg.text.n_vocab) * sizeof *lg);
            for (int s = 0; s < b.n_seq; s++)
                for (int64_t r0 = 0; r0 < b.seq[s].n_tok; r0 += 256) {
                    int64_t n = b.seq[s].n_tok - r0 < 256 ? b.seq[s].n_tok - r0 : 256;
                    mode_rt_logits(&rt, &b, s, r0, n, lg, &err);
                }
            sample_anon();
            double t3 = now();
            free(lg);
            tv[run] = t1 - t0, tl[run] = t2 - t1, th[run] = t3 - t2, tot[run] = t3 - t0;
            mode_rt_batch_free(&b);
        }
        qsort(tv, 3, sizeof *tv, cmp), qsort(tl, 3, sizeof *tl, cmp), qsort(th, 3, sizeof *th, cmp);
        qsort(tot, 3, sizeof *tot, cmp);
        const char *name = strrchr(argv[a], '/') ? strrchr(argv[a], '/') + 1 : argv[a];
        if (!*name) name = argv[a];
        printf("%-28.28s %7d %7lld %9.3f %9.3f %9.3f %10.0f %8.1fMB %8.1fMB\n", name, n_samples, (long long)tokens, tv[1], tl[1],
               th[1], (double)tokens / tot[1], status_kb("VmHWM") / 1024.0, peak_anon / 1024.0);
        mode_rt_free(&rt);
        mode_model_close(&m);
    }
    return 0;
}
