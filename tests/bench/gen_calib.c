/* gen_calib — a calibration set at real sizes for the full-width benchmark (issue 22,
 * tests/bench/scale.sh): N samples as JSON lines in the form of tests/fixtures/emoji-vl's
 * calibration data (chat messages; an image item and a text item in the user turn, the answer in
 * the assistant turn), with generated PNG images of the sizes real calibration data has.
 *
 *   build/bench/gen_calib -o DIR -n N --tokenizer FILE [--seed S] [--text-every K]
 *
 * Writes DIR/data.jsonl and DIR/images/img-NNNN.png (DIR is created; existing files of those names
 * are replaced). Deterministic: the same N, seed and tokenizer give the same bytes, and the first
 * M < N lines are those of a run with -n M (each sample draws from its own seeded stream).
 *
 * The samples, in the manner of ShareGPT4V (detailed captions, plus text-only conversations):
 *   - every K-th sample (--text-every, default 4: samples 3, 7, 11, ...) is text-only: a user
 *     question of one or two sentences and an answer; the others hold one image and a request
 *     for a detailed description (one of ShareGPT4V's prompt phrasings), answered by a caption;
 *   - answers are 50 to 300 tokens of the model's tokenizer (the target is drawn uniformly, and
 *     words are added until the tokenizer counts it), made of real English words in simple
 *     grammatical sentences about shapes, colours, light and places;
 *   - images cycle through 1024x768, 768x1024, 1280x720 and 640x480 (photos and screenshots at
 *     the sizes of COCO/SA-1B/LAION-style data); at Qwen3-VL's processor defaults (pixel budget
 *     65,536 to 16,777,216, sides rounded to multiples of 32) they become 768, 768, 880 and 300
 *     image tokens (3,072, 3,072, 3,520 and 1,200 patches);
 *   - each image is natural-ish rather than noise or a flat colour, so that the vision tower's
 *     attention, and the text-to-vision scores mode-vis-denoise ranks, have structure: a sky-to-
 *     ground gradient with a wavy horizon, low-frequency value noise (clouds, texture), 4 to 12
 *     soft-edged shaded ellipses, rectangles and triangles, and pixel noise (sensor grain).
 *
 * Prints one line per sample on stderr (size, image tokens expected, answer tokens) and a summary.
 */
#include "../../lib/tokenizer.h"
#include "bench_util.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double uni(uint64_t *s) { return (double)(splitmix64(s) >> 11) * (1.0 / 9007199254740992.0); } /* [0, 1) */
static int pick(uint64_t *s, int n) { return (int)(uni(s) * n); }
#define PICK(s, a) (a)[pick(s, (int)(sizeof(a) / sizeof *(a)))]

/* ---- images -------------------------------------------------------------------------------- */

static const int sizes[4][2] = {{1024, 768}, {768, 1024}, {1280, 720}, {640, 480}};

/* smooth value noise: random values on a grid of `cell` pixels, bicubic-smoothstep interpolated */
struct vnoise {
    int gw, gh, cell;
    float *v;
};

static int vnoise_init(struct vnoise *n, int w, int h, int cell, uint64_t *s)
{
    n->cell = cell, n->gw = w / cell + 2, n->gh = h / cell + 2;
    n->v = malloc(sizeof *n->v * (size_t)n->gw * (size_t)n->gh);
    if (!n->v) return -1;
    for (int i = 0; i < n->gw * n->gh; i++) n->v[i] = (float)uni(s);
    return 0;
}

static float vnoise_at(const struct vnoise *n, int x, int y)
{
    float fx = (float)x / (float)n->cell, fy = (float)y / (float)n->cell;
    int ix = (int)fx, iy = (int)fy;
    float tx = fx - (float)ix, ty = fy - (float)iy;
    tx = tx * tx * (3 - 2 * tx), ty = ty * ty * (3 - 2 * ty);
    const float *r0 = n->v + (size_t)iy * (size_t)n->gw + ix, *r1 = r0 + n->gw;
    float a = r0[0] + tx * (r0[1] - r0[0]), b = r1[0] + tx * (r1[1] - r1[0]);
    return a + ty * (b - a);
}

enum shape_kind { ELLIPSE, RECT, TRIANGLE };
struct shape {
    enum shape_kind kind;
    float cx, cy, rx, ry, angle; /* centre, half-sizes, rotation */
    float col[3], shade[2];      /* base colour; shading gradient direction (x, y), in colour units per half-size */
    float outline;               /* 0: none; else darkening at the edge */
};

/* signed distance-like value: < 0 inside, in pixels (approximate for ellipses) */
static float shape_dist(const struct shape *p, float x, float y, float *u, float *v)
{
    float dx = x - p->cx, dy = y - p->cy, c = cosf(p->angle), s = sinf(p->angle);
    float lx = c * dx + s * dy, ly = -s * dx + c * dy;
    *u = lx / p->rx, *v = ly / p->ry;
    float m = p->rx < p->ry ? p->rx : p->ry;
    switch (p->kind) {
    case ELLIPSE: return (sqrtf(*u * *u + *v * *v) - 1) * m;
    case RECT: return (fmaxf(fabsf(*u), fabsf(*v)) - 1) * m;
    default: /* isosceles triangle: apex up, base at v = 1 */
        return fmaxf(*v - 1, fabsf(*u) * 0.894f + (-*v) * 0.447f - 0.447f) * m;
    }
}

static void clamp_u8(float f, unsigned char *o) { *o = (unsigned char)(f < 0 ? 0 : f > 255 ? 255 : f + 0.5f); }

/* Draws image k (w x h RGB) into px. */
static int draw(unsigned char *px, int w, int h, uint64_t *s)
{
    float top[3], hor[3], gnd[3];
    for (int c = 0; c < 3; c++) top[c] = (float)(60 + 190 * uni(s)), hor[c] = (float)(80 + 175 * uni(s)), gnd[c] = (float)(20 + 150 * uni(s));
    const float horizon = (float)(0.35 + 0.3 * uni(s)) * (float)h, wave_a = (float)(0.02 + 0.06 * uni(s)) * (float)h,
                wave_f = (float)(1 + 4 * uni(s)) * 6.2832f / (float)w, wave_p = (float)(6.2832 * uni(s));
    struct vnoise big, mid;
    if (vnoise_init(&big, w, h, 160, s)) return -1;
    if (vnoise_init(&mid, w, h, 24, s)) {
        free(big.v);
        return -1;
    }
    const float tex = (float)(20 + 40 * uni(s));
    int ns = 4 + pick(s, 9);
    struct shape sh[12];
    const float dim = (float)(w < h ? w : h);
    for (int i = 0; i < ns; i++) {
        struct shape *p = &sh[i];
        p->kind = (enum shape_kind)pick(s, 3);
        p->cx = (float)uni(s) * (float)w, p->cy = (float)(0.2 + 0.8 * uni(s)) * (float)h;
        p->rx = (float)(0.04 + 0.18 * uni(s)) * dim, p->ry = (float)(0.04 + 0.18 * uni(s)) * dim;
        p->angle = (float)(uni(s) - 0.5) * 1.2f;
        for (int c = 0; c < 3; c++) p->col[c] = (float)(255 * uni(s));
        p->shade[0] = (float)(uni(s) - 0.5) * 120, p->shade[1] = (float)(uni(s) - 0.5) * 120;
        p->outline = uni(s) < 0.4 ? (float)(40 + 80 * uni(s)) : 0;
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float hy = horizon + wave_a * sinf(wave_f * (float)x + wave_p), col[3];
            float t = (float)y < hy ? (float)y / hy : ((float)y - hy) / ((float)h - hy + 1);
            float n1 = vnoise_at(&big, x, y) - 0.5f, n2 = vnoise_at(&mid, x, y) - 0.5f;
            for (int c = 0; c < 3; c++) {
                col[c] = (float)y < hy ? top[c] + t * (hor[c] - top[c]) : hor[c] * (1 - t) * 0.6f + gnd[c] * (0.4f + 0.6f * t);
                col[c] += tex * n1 + 0.4f * tex * n2;
            }
            for (int i = 0; i < ns; i++) { /* painter's order: later shapes on top */
                float u, v, d = shape_dist(&sh[i], (float)x + 0.5f, (float)y + 0.5f, &u, &v);
                if (d > 1.5f) continue;
                float a = d < -1.5f ? 1 : (1.5f - d) / 3; /* a soft 3-pixel edge */
                float edge = sh[i].outline > 0 && d > -4 ? sh[i].outline * (1 - (-d) / 4) : 0;
                for (int c = 0; c < 3; c++) {
                    float sc = sh[i].col[c] + sh[i].shade[0] * u + sh[i].shade[1] * v - edge + 0.3f * tex * n2;
                    col[c] = col[c] * (1 - a) + sc * a;
                }
            }
            unsigned char *o = px + 3 * ((size_t)y * (size_t)w + (size_t)x);
            for (int c = 0; c < 3; c++) clamp_u8(col[c] + (float)(uni(s) + uni(s) - 1) * 6, o + c); /* grain: triangular, +-6 levels */
        }
    free(big.v), free(mid.v);
    return 0;
}

static int write_png(const char *path, const unsigned char *px, int w, int h)
{
    FILE *f = fopen(path, "wb");
    if (!f) return fprintf(stderr, "gen_calib: %s: %s\n", path, strerror(errno)), -1;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        fclose(f);
        return fprintf(stderr, "gen_calib: %s: libpng failed\n", path), -1;
    }
    png_init_io(png, f);
    png_set_compression_level(png, 1); /* fast: the images are noisy and compress little anyway */
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, px + 3 * (size_t)y * (size_t)w);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (fclose(f)) return fprintf(stderr, "gen_calib: %s: %s\n", path, strerror(errno)), -1;
    return 0;
}

/* ---- text ---------------------------------------------------------------------------------- */

static const char *const adj[] = {"large", "small", "bright", "dark", "pale", "round", "narrow", "wide", "smooth", "rough",
                                  "soft", "sharp", "quiet", "old", "new", "tall", "low", "warm", "cold", "shiny",
                                  "faded", "distant", "nearby", "curved", "flat", "heavy", "light", "simple", "detailed", "colorful"};
static const char *const color[] = {"red", "blue", "green", "yellow", "orange", "purple", "brown", "gray", "white", "black",
                                    "pink", "golden", "silver", "teal", "olive"};
static const char *const noun[] = {"circle", "square", "triangle", "shape", "shadow", "field", "sky", "cloud", "hill", "road",
                                   "window", "building", "tree", "river", "stone", "wall", "garden", "lake", "path", "bridge",
                                   "roof", "door", "boat", "mountain", "street", "corner", "surface", "pattern", "line", "edge",
                                   "horizon", "light", "background", "foreground", "frame", "scene", "texture", "object", "area", "panel"};
static const char *const nouns[] = {"circles", "squares", "triangles", "shapes", "shadows", "clouds", "hills", "trees", "stones", "windows",
                                    "buildings", "lines", "patterns", "objects", "boats", "flowers", "birds", "people", "houses", "lights"};
static const char *const verb_s[] = {"rests", "stands", "appears", "sits", "lies", "rises", "leans", "stretches", "hangs", "shines",
                                     "fades", "blends", "extends", "glows", "points", "covers", "touches", "crosses", "frames", "overlaps"};
static const char *const verb_ing[] = {"resting", "standing", "floating", "sitting", "leaning", "glowing", "stretching", "hanging",
                                       "fading", "shining", "turning", "crossing"};
static const char *const prep[] = {"on", "near", "beside", "above", "below", "behind", "under", "over", "across", "along",
                                   "against", "toward", "inside", "around", "between"};
static const char *const adv[] = {"quietly", "slightly", "clearly", "softly", "gently", "partly", "mostly", "almost", "evenly", "gradually"};
static const char *const place[] = {"upper left", "upper right", "lower left", "lower right", "center", "middle", "top", "bottom", "left side",
                                    "right side"};
static const char *const num[] = {"two", "three", "four", "five", "several", "many", "a few", "some"};
static const char *const topic[] = {"a river", "the weather", "a garden", "light", "a bridge", "an old building", "the sky at night",
                                    "a mountain road", "a small boat", "the sea", "a city street", "a forest"};
static const char *const prompt_img[] = {"Describe the image in detail.", "What do you see in this picture? Please describe it thoroughly.",
                                         "Give a detailed description of the scene.", "Analyze the image in a comprehensive and detailed manner.",
                                         "Write a detailed caption for this image.", "What is in this image? Describe every part of it."};

static const char *article(const char *w) { return strchr("aeiou", w[0]) ? "an" : "a"; }

/* one sentence into buf (NUL-terminated); image: about a picture, else general prose */
static void sentence(char *buf, size_t cap, uint64_t *s, int image)
{
    const char *a1 = PICK(s, adj), *c1 = PICK(s, color), *n1 = PICK(s, noun), *n2 = PICK(s, noun), *a2 = PICK(s, adj);
    switch (pick(s, image ? 6 : 4)) {
    case 0: snprintf(buf, cap, "The %s %s %s %s %s the %s %s.", a1, c1, n1, PICK(s, verb_s), PICK(s, prep), a2, n2); break;
    case 1: snprintf(buf, cap, "There are %s %s %s %s the %s.", PICK(s, num), a1, PICK(s, nouns), PICK(s, prep), n1); break;
    case 2:
        snprintf(buf, cap, "%s %s %s %s %s, and the %s %s %s.", article(a1)[1] ? "An" : "A", a1, n1, PICK(s, verb_s), PICK(s, adv), n2,
                 PICK(s, verb_s), PICK(s, adv));
        break;
    case 3: snprintf(buf, cap, "Its %s %s %s %s the %s %s.", c1, n1, PICK(s, verb_s), PICK(s, prep), a2, n2); break;
    case 4: snprintf(buf, cap, "In the %s of the picture, %s %s %s is %s %s the %s.", PICK(s, place), article(c1), c1, n1, PICK(s, verb_ing), PICK(s, prep), n2); break;
    default: snprintf(buf, cap, "The %s is %s and %s, with %s %s %s %s.", n1, a1, c1, PICK(s, num), PICK(s, nouns), PICK(s, verb_ing), PICK(s, adv)); break;
    }
}

struct text {
    char *p;
    size_t n, cap;
};

static int text_add(struct text *t, const char *w)
{
    size_t l = strlen(w);
    if (t->n + l + 2 > t->cap) {
        size_t c = t->cap ? 2 * t->cap : 1024;
        while (t->n + l + 2 > c) c *= 2;
        char *q = realloc(t->p, c);
        if (!q) return -1;
        t->p = q, t->cap = c;
    }
    if (t->n) t->p[t->n++] = ' ';
    memcpy(t->p + t->n, w, l + 1);
    t->n += l;
    return 0;
}

static long count_tokens(const struct mode_tokenizer *tok, const char *p, size_t n)
{
    int32_t *ids = NULL;
    size_t k = 0, cap = 0;
    struct mode_err err = {0};
    if (mode_tokenizer_encode(tok, p, n, &ids, &k, &cap, &err)) {
        fprintf(stderr, "gen_calib: %s\n", err.msg);
        free(ids);
        return -1;
    }
    free(ids);
    return (long)k;
}

/* Words of sentences, one at a time, until the tokenizer counts `target` tokens (the last
 * sentence cut there and closed with a full stop). Returns the count, -1 on error. */
static long answer(struct text *t, const struct mode_tokenizer *tok, long target, uint64_t *s, int image)
{
    t->n = 0;
    if (t->p) t->p[0] = 0;
    char sent[512];
    long k = 0;
    if (image) {
        const char *a = PICK(s, adj);
        snprintf(sent, sizeof sent, "The image shows %s %s, %s scene with %s %s.", article(a), a, PICK(s, color), PICK(s, num), PICK(s, nouns));
        if (text_add(t, sent)) return -1;
        k = count_tokens(tok, t->p, t->n);
    }
    while (k >= 0 && k < target) {
        sentence(sent, sizeof sent, s, image);
        for (char *w = strtok(sent, " "); w && k < target; w = strtok(NULL, " ")) {
            if (text_add(t, w)) return -1;
            k = count_tokens(tok, t->p, t->n);
        }
        if (k >= target && t->p[t->n - 1] != '.') {
            if (t->p[t->n - 1] == ',') t->n--;
            t->p[t->n++] = '.', t->p[t->n] = 0;
            k = count_tokens(tok, t->p, t->n);
        }
    }
    return k;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *out = NULL, *tokp = NULL;
    long n = 0, every = 4;
    uint64_t seed = 1;
    enum { O_TOK = 256, O_SEED, O_EVERY };
    static const struct option opts[] = {{"output", required_argument, 0, 'o'}, {"samples", required_argument, 0, 'n'},
                                         {"tokenizer", required_argument, 0, O_TOK}, {"seed", required_argument, 0, O_SEED},
                                         {"text-every", required_argument, 0, O_EVERY}, {0, 0, 0, 0}};
    for (int c; (c = getopt_long(argc, argv, "o:n:", opts, NULL)) != -1;) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'n': n = atol(optarg); break;
        case O_TOK: tokp = optarg; break;
        case O_SEED: seed = strtoull(optarg, NULL, 10); break;
        case O_EVERY: every = atol(optarg); break;
        default: goto usage;
        }
    }
    if (!out || !tokp || n < 1 || n > 100000 || every < 1 || optind != argc) {
    usage:
        fprintf(stderr, "usage: gen_calib -o DIR -n N --tokenizer FILE [--seed S] [--text-every K]\n");
        return 64;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/images", out);
    if ((mkdir(out, 0777) && errno != EEXIST) || (mkdir(path, 0777) && errno != EEXIST)) {
        fprintf(stderr, "gen_calib: %s: %s\n", path, strerror(errno));
        return 73;
    }
    struct mode_tokenizer *tok;
    struct mode_err err = {0};
    if (mode_tokenizer_load(tokp, &tok, &err)) {
        fprintf(stderr, "gen_calib: %s\n", err.msg);
        return err.code;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/data.jsonl.tmp", out);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "gen_calib: %s: %s\n", tmp, strerror(errno));
        return 73;
    }
    unsigned char *px = malloc((size_t)1280 * 1024 * 3);
    struct text t = {0}, q = {0};
    long n_img = 0, img_tok = 0, ans_tok = 0;
    const double t0 = now();
    int rc = px ? 0 : 70;
    for (long i = 0; i < n && !rc; i++) {
        uint64_t s = seed * 0x9e3779b97f4a7c15ull ^ (uint64_t)i; /* each sample its own stream */
        splitmix64(&s);
        const int image = (i % every) != every - 1;
        const long target = 50 + pick(&s, 251);
        fputs("{\"messages\": [{\"role\": \"user\", \"content\": [", f);
        if (image) {
            const int *sz = sizes[n_img % 4];
            snprintf(path, sizeof path, "%s/images/img-%04ld.png", out, i);
            if (draw(px, sz[0], sz[1], &s) || write_png(path, px, sz[0], sz[1])) {
                rc = 74;
                break;
            }
            /* what the processor makes of it: sides rounded to multiples of 32 (half to even, as
             * Python's round), one token per 2x2 patches of 16 */
            long hh = lround(nearbyint(sz[1] / 32.0)), ww = lround(nearbyint(sz[0] / 32.0));
            img_tok += hh * ww, n_img++;
            fprintf(f, "{\"type\": \"image\", \"image\": \"images/img-%04ld.png\"}, {\"type\": \"text\", \"text\": ", i);
            json_str(f, PICK(&s, prompt_img));
            fprintf(stderr, "gen_calib: sample %ld: %dx%d image (%ld image tokens), ", i, sz[0], sz[1], hh * ww);
        } else {
            char s1[512], s2[512];
            snprintf(s1, sizeof s1, "I have a question about %s.", PICK(&s, topic));
            sentence(s2, sizeof s2, &s, 0);
            q.n = 0;
            if (text_add(&q, s1) || text_add(&q, s2) || text_add(&q, "Can you explain what this means, in some detail?")) rc = 70;
            fputs("{\"type\": \"text\", \"text\": ", f);
            json_str(f, q.p);
            fprintf(stderr, "gen_calib: sample %ld: text only, ", i);
        }
        long k = rc ? -1 : answer(&t, tok, target, &s, image);
        if (k < 0) {
            rc = 70;
            break;
        }
        ans_tok += k;
        fputs("}]}, {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": ", f);
        json_str(f, t.p);
        fputs("}]}]}\n", f);
        fprintf(stderr, "answer %ld tokens (target %ld), %.1f s\n", k, target, now() - t0);
    }
    free(px), free(t.p), free(q.p);
    mode_tokenizer_free(tok);
    if (fclose(f) && !rc) rc = 74;
    char final[4096];
    snprintf(final, sizeof final, "%s/data.jsonl", out);
    if (!rc && rename(tmp, final)) rc = 74;
    if (rc) {
        fprintf(stderr, "gen_calib: failed (%d)\n", rc);
        remove(tmp);
        return rc;
    }
    fprintf(stderr, "gen_calib: %s: %ld samples, %ld with an image (%ld image tokens expected), %ld answer tokens, %.1f s\n", final, n, n_img,
            img_tok, ans_tok, now() - t0);
    return 0;
}
