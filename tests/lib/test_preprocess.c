/* test_preprocess — mode's image preprocessing equals transformers' exactly, 8-bit level for
 * level (no tolerance), decoding, alpha, smart_resize, resampling and patching together:
 *   1. the reference images (tests/fixtures/preprocess: RGBA emoji, RGB 8 and 16-bit, palette,
 *      grey, grey+alpha, a downscaled 700x500) with MODE_ALPHA_DROP against transformers 5.17's
 *      goldens;
 *   2. with MODE_ALPHA_WHITE against transformers 5.25's goldens made from PIL images (composited
 *      onto white) for the six with alpha; the five without alpha against 5.17's, which 5.25's
 *      equal (shared/fixtures/reference/preprocess-5.25/README.json);
 *   3. MODE_ALPHA_DROP against the 5.25 goldens of the six: it must differ somewhere;
 *   4. noise images upscaled 2 to 16 times, with one side kept (a pass skipped), and downscaled,
 *      against transformers 5.25 given the paths (tests/fixtures/preprocess-noise: PIL's own
 *      resampler misses 0.1 to 1.2% of these values by one or two levels);
 *   5. every kind of PNG transparency (tests/fixtures/preprocess-alpha), decoded: drop equals
 *      PIL's convert("RGB"), white transformers 5.25's convert_to_rgb, pixel for pixel.
 * Where the goldens came from: tests/fixtures/README.md. */
#include "../../lib/image.h"
#include "../../lib/safetensors.h"
#include "../../lib/samples.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const with_alpha[] = {"1f34e", "1f44b-1f3fd", "1f600", "2764-fe0f", "gray_alpha_50x120", "rgba_64x64"};
static const char *const without_alpha[] = {"gray_50x120", "palette_100x75", "rgb16_100x75", "rgb_100x75", "rgb_700x500"};
static const char *const noise[] = {"noise_4x2",   "noise_7x5",   "noise_13x11", "noise_30x20",
                                    "noise_50x64", "noise_64x75", "noise_64x40", "noise_80x70"};
static const char *const kinds[] = {"grey16",      "grey16_key100", "grey1_key0",     "grey2_key0",    "grey2_key1", "grey4_key3",
                                    "grey8_key",   "grey8_key300",  "la16",           "la8",           "la8_all",    "palette4_trns1",
                                    "palette8_trns", "rgb16_key",   "rgb8",           "rgb8_key",      "rgba16"};

static int open_golden(struct mode_st_file *g, const char *file)
{
    struct mode_err err = {0};
    char path[4096];
    const char *bf = getenv("MODE_BUILD_FIXTURES");
    snprintf(path, sizeof path, "%s/%s", bf ? bf : "build/fixtures", file);
    if (mode_st_open(g, path, &err)) return ok(0, "open %s: %s", file, err.msg), -1;
    return 0;
}

/* The image dir/name.png preprocessed as mode-tokenize does (pixel bounds [minpx, maxpx], patch
 * 16, merge 2, temporal 2, mean = std = 0.5) against the golden levels NAME.pixels
 * (rows, 3, 16, 16) and grid NAME.grid of g: the values that differ, or -1 (and a failed test)
 * when something else is wrong. */
static long preprocess_diff(const struct mode_st_file *g, const char *dir, const char *name, enum mode_alpha alpha, int64_t minpx,
                            int64_t maxpx)
{
    struct mode_err err = {0};
    char rel[256], tn[128];
    snprintf(tn, sizeof tn, "%s.grid", name);
    const struct mode_st_tensor *gt = mode_st_find(g, tn);
    snprintf(tn, sizeof tn, "%s.pixels", name);
    const struct mode_st_tensor *gp = mode_st_find(g, tn);
    if (!gt || !gp || gt->numel != 3 || gp->ndim != 4) return ok(0, "%s: golden tensors %s.grid, %s.pixels", name, name, name), -1;
    int64_t grid[3];
    memcpy(grid, gt->data, sizeof grid);
    snprintf(rel, sizeof rel, "%s/%s.png", dir, name);
    struct mode_rgb img, rs;
    if (mode_rgb_load_alpha(fixture(rel), alpha, &img, &err)) return ok(0, "%s: decodes: %s", name, err.msg), -1;
    int H, W;
    if (mode_smart_resize(img.height, img.width, 32, minpx, maxpx, &H, &W, &err) || mode_image_resize(&img, W, H, &rs, &err)) {
        mode_rgb_free(&img);
        return ok(0, "%s: resizes: %s", name, err.msg), -1;
    }
    mode_rgb_free(&img);
    if (grid[0] != 1 || grid[1] != H / 16 || grid[2] != W / 16) {
        mode_rgb_free(&rs);
        return ok(0, "%s: grid %lldx%lld, golden %lldx%lld", name, (long long)H / 16, (long long)W / 16, (long long)grid[1],
                  (long long)grid[2]),
               -1;
    }
    struct mode_vision_config v = {0};
    v.in_channels = 3, v.patch_size = 16, v.temporal_patch_size = 2, v.merge_size = 2;
    struct mode_preproc p = {0};
    p.min_pixels = minpx, p.max_pixels = maxpx, p.patch_size = 16, p.temporal_patch_size = 2, p.merge_size = 2;
    for (int c = 0; c < 3; c++) p.mean[c] = 0.5, p.std[c] = 0.5;
    p.do_resize = p.do_rescale = p.do_normalize = p.do_convert_rgb = true;
    p.rescale_factor = 1 / 255.0;
    p.resample = 3;
    struct mode_image im = {.grid = {1, H / 16, W / 16}, .has_pixels = true};
    im.pixels.dtype = MODE_U8, im.pixels.ndim = 4;
    im.pixels.shape[0] = 1, im.pixels.shape[1] = H, im.pixels.shape[2] = W, im.pixels.shape[3] = 3;
    im.pixels.numel = (uint64_t)H * W * 3, im.pixels.data = rs.px, im.pixels.nbytes = im.pixels.numel;
    int64_t rows, cols;
    mode_image_patch_dims(&im, &v, &rows, &cols);
    float *pv = malloc(sizeof *pv * (size_t)(rows * cols));
    long diff = -1;
    if (rows != gp->shape[0] || cols != 2 * 3 * 256) ok(0, "%s: %lld x %lld patch values, golden %lld rows", name, (long long)rows, (long long)cols, (long long)gp->shape[0]);
    else if (mode_image_pixel_values(&im, &v, &p, pv, &err)) ok(0, "%s: pixel values: %s", name, err.msg);
    else {
        /* the level k of each value k / 127.5 - 1, both temporal frames */
        const uint8_t *gu = gp->data;
        diff = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int c = 0; c < 3; c++)
                for (int t = 0; t < 2; t++)
                    for (int q = 0; q < 256; q++) {
                        const float x = pv[r * cols + c * 512 + t * 256 + q] * 127.5f + 127.5f;
                        diff += fabsf(x - gu[(r * 3 + c) * 256 + q]) > 1e-3f;
                    }
    }
    free(pv);
    mode_rgb_free(&rs);
    return diff;
}

int main(void)
{
    struct mode_st_file g517, g525, gnoise, galpha;
    if (open_golden(&g517, "preprocess-golden.safetensors") || open_golden(&g525, "preprocess-5.25-golden.safetensors") ||
        open_golden(&gnoise, "preprocess-noise-golden.safetensors") || open_golden(&galpha, "preprocess-alpha-golden.safetensors"))
        return tap_done();
    const size_t na = sizeof with_alpha / sizeof *with_alpha, nn = sizeof without_alpha / sizeof *without_alpha;
    /* 1. transformers 5.17, alpha dropped (the default) */
    for (size_t i = 0; i < na + nn; i++) {
        const char *name = i < na ? with_alpha[i] : without_alpha[i - na];
        long d = preprocess_diff(&g517, "preprocess", name, MODE_ALPHA_DROP, 16384, 65536);
        if (d >= 0) is_int(d, 0, "drop: %s equals transformers 5.17 exactly", name);
    }
    /* 2. transformers 5.25 given PIL images: composited onto white */
    for (size_t i = 0; i < na + nn; i++) {
        const char *name = i < na ? with_alpha[i] : without_alpha[i - na];
        long d = preprocess_diff(i < na ? &g525 : &g517, "preprocess", name, MODE_ALPHA_WHITE, 16384, 65536);
        if (d >= 0) is_int(d, 0, "white: %s equals transformers 5.25 (PIL image) exactly", name);
    }
    /* 3. the two goldens tell the modes apart */
    for (size_t i = 0; i < na; i++) {
        long d = preprocess_diff(&g525, "preprocess", with_alpha[i], MODE_ALPHA_DROP, 16384, 65536);
        if (d >= 0) ok(d > 0, "drop: %s differs from 5.25's white golden (%ld values)", with_alpha[i], d);
    }
    /* 4. upscaled noise: torch's uint8 resampling, not PIL's */
    for (size_t i = 0; i < sizeof noise / sizeof *noise; i++) {
        long d = preprocess_diff(&gnoise, "preprocess-noise", noise[i], MODE_ALPHA_DROP, 32 * 32, 64 * 64);
        if (d >= 0) is_int(d, 0, "%s equals transformers 5.25 (path) exactly", noise[i]);
    }
    /* 5. decoding every kind of transparency */
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        for (int white = 0; white < 2; white++) {
            struct mode_err err = {0};
            char rel[256], tn[128];
            snprintf(rel, sizeof rel, "preprocess-alpha/%s.png", kinds[i]);
            snprintf(tn, sizeof tn, "%s.%s", kinds[i], white ? "white" : "drop");
            const struct mode_st_tensor *t = mode_st_find(&galpha, tn);
            struct mode_rgb img;
            if (!t || t->ndim != 3) {
                ok(0, "golden %s", tn);
                continue;
            }
            if (mode_rgb_load_alpha(fixture(rel), white ? MODE_ALPHA_WHITE : MODE_ALPHA_DROP, &img, &err)) {
                ok(0, "%s: decodes: %s", rel, err.msg);
                continue;
            }
            long d = -1;
            if (img.height == t->shape[0] && img.width == t->shape[1] && t->shape[2] == 3) {
                const uint8_t *gu = t->data;
                d = 0;
                for (size_t k = 0; k < (size_t)img.width * img.height * 3; k++) d += img.px[k] != gu[k];
            }
            ok(d == 0, "%s (%s) %s: equals %s (%ld values differ)", kinds[i], img.kind, white ? "white" : "drop",
               white ? "transformers 5.25's convert_to_rgb" : "PIL's convert(\"RGB\")", d);
            mode_rgb_free(&img);
        }
    mode_st_close(&g517), mode_st_close(&g525), mode_st_close(&gnoise), mode_st_close(&galpha);
    return tap_done();
}
