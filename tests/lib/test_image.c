/* test_image — decoding, convert-to-RGB, smart_resize, resampling and patching agree with
 * transformers 5.17.0's Qwen2-VL image processor on the reference images (every PNG colour type
 * the goldens hold: RGB 8 and 16-bit, RGBA, palette, grey, grey+alpha; up- and downscaling):
 * grid exact, every pixel value the golden's (the uint8 levels equal: within 1e-6 in normalised
 * units, one level being 0.0078, the rest f32's rounding of the normalisation). Also EXIF
 * orientation, JPEG, and the refusals of broken files. */
#include "../../lib/image.h"
#include "../../lib/safetensors.h"
#include "../../lib/samples.h"
#include "tap.h"

#include <jpeglib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const names[] = {"1f34e",       "1f44b-1f3fd",      "1f600",          "2764-fe0f",      "gray_50x120", "gray_alpha_50x120",
                                    "palette_100x75", "rgb16_100x75", "rgb_100x75", "rgb_700x500", "rgba_64x64"};

static struct mode_vision_config vcfg(void)
{
    struct mode_vision_config v = {0};
    v.in_channels = 3, v.patch_size = 16, v.temporal_patch_size = 2, v.merge_size = 2;
    return v;
}

static struct mode_preproc pcfg(void)
{
    struct mode_preproc p = {0};
    p.min_pixels = 16384, p.max_pixels = 65536, p.patch_size = 16, p.temporal_patch_size = 2, p.merge_size = 2;
    for (int c = 0; c < 3; c++) p.mean[c] = 0.5, p.std[c] = 0.5;
    p.do_resize = p.do_rescale = p.do_normalize = p.do_convert_rgb = true;
    p.rescale_factor = 1 / 255.0;
    p.resample = 3;
    return p;
}

/* a JPEG of w x h with the given EXIF orientation (0: no EXIF), through libjpeg */
static unsigned char *make_jpeg(int w, int h, int orientation, unsigned long *n)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    jpeg_mem_dest(&c, &buf, n);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h, c.input_components = 3, c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    jpeg_start_compress(&c, TRUE);
    if (orientation) {
        /* Exif\0\0 + little-endian TIFF header + IFD with one entry: Orientation (0x0112, SHORT) */
        unsigned char ex[6 + 8 + 2 + 12 + 4] = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0,
                                              (unsigned char)orientation, 0, 0, 0, 0, 0, 0, 0};
        jpeg_write_marker(&c, JPEG_APP0 + 1, ex, sizeof ex);
    }
    unsigned char *row = malloc((size_t)w * 3);
    while (c.next_scanline < c.image_height) {
        for (int x = 0; x < w; x++) {
            /* left half dark, right half light; top rows red */
            int y = (int)c.next_scanline;
            row[x * 3] = y < h / 4 ? 250 : (x < w / 2 ? 20 : 230);
            row[x * 3 + 1] = x < w / 2 ? 20 : 230;
            row[x * 3 + 2] = x < w / 2 ? 20 : 230;
        }
        jpeg_write_scanlines(&c, &row, 1);
    }
    free(row);
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return buf;
}

int main(void)
{
    struct mode_err err = {0};
    struct mode_st_file g;
    char path[4096];
    const char *bf = getenv("MODE_BUILD_FIXTURES");
    snprintf(path, sizeof path, "%s/preprocess-golden.safetensors", bf ? bf : "build/fixtures");
    if (mode_st_open(&g, path, &err)) {
        ok(0, "open the preprocessing goldens: %s", err.msg);
        return tap_done();
    }
    const struct mode_vision_config v = vcfg();
    const struct mode_preproc p = pcfg();
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char rel[256], tn[128];
        snprintf(rel, sizeof rel, "preprocess/%s.png", names[i]);
        struct mode_rgb img, rs;
        if (mode_rgb_load(fixture(rel), &img, &err)) {
            ok(0, "%s: decodes: %s", names[i], err.msg);
            continue;
        }
        int H, W;
        snprintf(tn, sizeof tn, "%s.grid", names[i]);
        const struct mode_st_tensor *gt = mode_st_find(&g, tn);
        snprintf(tn, sizeof tn, "%s.pixels", names[i]);
        const struct mode_st_tensor *gp = mode_st_find(&g, tn);
        int64_t grid[3];
        memcpy(grid, gt->data, sizeof grid);
        if (mode_smart_resize(img.height, img.width, 32, p.min_pixels, p.max_pixels, &H, &W, &err)) {
        BAIL:
                ok(0, "%s: %s", names[i], err.msg);
                mode_rgb_free(&img);
                continue;
            }
        ok(grid[0] == 1 && grid[1] == H / 16 && grid[2] == W / 16, "%s (%s, %dx%d): grid %lldx%lld = %dx%d", names[i], img.kind, img.width,
           img.height, (long long)grid[1], (long long)grid[2], H / 16, W / 16);
        if (mode_image_resize(&img, W, H, &rs, &err)) goto BAIL;
        struct mode_image im = {.grid = {1, H / 16, W / 16}, .has_pixels = true};
        im.pixels.dtype = MODE_U8, im.pixels.ndim = 4;
        im.pixels.shape[0] = 1, im.pixels.shape[1] = H, im.pixels.shape[2] = W, im.pixels.shape[3] = 3;
        im.pixels.numel = (uint64_t)H * W * 3, im.pixels.data = rs.px, im.pixels.nbytes = im.pixels.numel;
        int64_t rows, cols;
        mode_image_patch_dims(&im, &v, &rows, &cols);
        float *pv = malloc(sizeof *pv * (size_t)(rows * cols));
        if (mode_image_pixel_values(&im, &v, &p, pv, &err)) diag("%s", err.msg);
        const uint8_t *gu = gp->data;
        double maxd = 0, sum = 0;
        for (int64_t r = 0; r < rows && r < gp->shape[0]; r++)
            for (int c = 0; c < 3; c++)
                for (int t = 0; t < 2; t++)
                    for (int q = 0; q < 256; q++) {
                        double want = gu[(r * 3 + c) * 256 + q] / 127.5 - 1, got = pv[r * cols + c * 512 + t * 256 + q];
                        double d = fabs(want - got);
                        maxd = fmax(maxd, d);
                        sum += d;
                    }
        const double mean = sum / (double)(rows * cols);
        ok(rows == gp->shape[0] && maxd <= 1e-6, "%s: pixel values max |err| %.2e (<= 1e-6: the same levels), mean %.2e", names[i], maxd, mean);
        free(pv);
        mode_rgb_free(&rs);
        mode_rgb_free(&img);
    }
    mode_st_close(&g);

    /* smart_resize edge cases */
    int H, W;
    ok(!mode_smart_resize(120, 50, 32, 16384, 65536, &H, &W, &err) && H == 224 && W == 96, "smart_resize 50x120 -> 96x224");
    ok(mode_smart_resize(1, 300, 32, 16384, 65536, &H, &W, &err) == MODE_EDATA, "aspect ratio 300 is refused");
    has_str(err.msg, "aspect ratio", "saying why");

    /* JPEG, EXIF orientation: 6 = rotate 90 clockwise: a 40x20 image becomes 20x40, its red top
     * rows become the right columns */
    unsigned long n;
    unsigned char *jp = make_jpeg(40, 20, 0, &n);
    struct mode_rgb a, b;
    ok(!mode_rgb_decode(jp, n, "plain.jpg", &a, &err) && a.width == 40 && a.height == 20, "a JPEG decodes (%s)", a.kind);
    free(jp);
    jp = make_jpeg(40, 20, 6, &n);
    ok(!mode_rgb_decode(jp, n, "rot.jpg", &b, &err) && b.width == 20 && b.height == 40, "EXIF orientation 6 turns it to 20x40");
    if (b.px) {
        const uint8_t *right_top = b.px + (0 * 20 + 19) * 3, *left_top = b.px + 0;
        ok(right_top[0] > 200 && right_top[1] < 60 && left_top[0] < 60, "the red top rows are now the right columns");
    }
    ok(mode_exif_orientation((const uint8_t *)"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x08\0\0", 28) == 8,
       "big-endian EXIF orientation 8");
    /* truncated JPEG */
    free(jp);
    jp = make_jpeg(40, 20, 0, &n);
    struct mode_rgb c;
    ok(mode_rgb_decode(jp, n / 2, "trunc.jpg", &c, &err) == MODE_EDATA, "a truncated JPEG is refused, not filled with grey (PIL refuses it too)");
    has_str(err.msg, "trunc.jpg: not a readable JPEG", "naming the file: %s", err.msg);
    free(jp);
    mode_rgb_free(&a), mode_rgb_free(&b);

    /* broken files */
    ok(mode_rgb_decode((const uint8_t *)"GIF89a......", 12, "x.gif", &c, &err) == MODE_EDATA, "a GIF is refused");
    has_str(err.msg, "not a PNG or JPEG", "naming the formats");
    char *png;
    size_t pn;
    snprintf(path, sizeof path, "%s", fixture("preprocess/rgb_100x75.png"));
    FILE *f = fopen(path, "rb");
    png = malloc(1 << 16);
    pn = fread(png, 1, 1 << 16, f);
    fclose(f);
    ok(mode_rgb_decode((const uint8_t *)png, pn / 2, "half.png", &c, &err) == MODE_EDATA, "a truncated PNG is refused");
    has_str(err.msg, "half.png: not a readable PNG", "naming the file: %s", err.msg);
    png[40] ^= 0x55; /* corrupt the IHDR/IDAT bytes: the CRC fails */
    ok(mode_rgb_decode((const uint8_t *)png, pn, "bad.png", &c, &err) == MODE_EDATA, "a corrupt PNG is refused");
    free(png);
    ok(mode_rgb_load("/nonexistent.png", &c, &err) == MODE_ENOINPUT, "a missing file: 66");

    /* limits (image.h): a header declaring one row more than PIL's refusal threshold
     * (2 x 89478485 pixels) is refused before any pixel buffer exists; its data is empty */
    static const char too_big[] = "the limits are 178956970 pixels, as PIL's, and 32768 a side";
    is_int(mode_rgb_load(fixture("limits/16384x10923.png"), &c, &err), MODE_EDATA, "a PNG of 16384 x 10923 pixels is refused");
    has_str(err.msg, "16384x10923.png: an image of 16384 x 10923 pixels is too large", "... naming its size: %s", err.msg);
    has_str(err.msg, too_big, "... and the limits");
    jp = make_jpeg(16, 16, 0, &n);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < n && !sof; i++)
        if (jp[i] == 0xFF && jp[i + 1] == 0xC0) sof = i;
    ok(sof > 0, "the JPEG has a baseline SOF0 marker");
    if (sof) {
        /* FF C0, length (2), precision (1), height (2), width (2) */
        jp[sof + 5] = 10923 >> 8, jp[sof + 6] = 10923 & 0xFF, jp[sof + 7] = 16384 >> 8, jp[sof + 8] = 0;
        is_int(mode_rgb_decode(jp, n, "big.jpg", &c, &err), MODE_EDATA, "a JPEG header of 16384 x 10923 pixels is refused");
        has_str(err.msg, "big.jpg: an image of 16384 x 10923 pixels is too large", "... before decoding: %s", err.msg);
        jp[sof + 5] = 0, jp[sof + 6] = 16, jp[sof + 7] = 0x80, jp[sof + 8] = 1; /* 16 x 32769: one side too long */
        is_int(mode_rgb_decode(jp, n, "wide.jpg", &c, &err), MODE_EDATA, "a JPEG 32769 pixels wide is refused");
        has_str(err.msg, "wide.jpg: an image of 32769 x 16 pixels is too large", "... naming its size: %s", err.msg);
    }
    free(jp);
    /* MODE_IMAGE_MAX_FILE: a file of 1 GiB + 1 byte (sparse) is refused by its size, unread */
    char big_path[4200];
    snprintf(big_path, sizeof big_path, "%s/big.png", tap_tmpdir());
    FILE *bigf = fopen(big_path, "w");
    if (bigf) fclose(bigf);
    ok(truncate(big_path, (off_t)MODE_IMAGE_MAX_FILE + 1) == 0, "a 1 GiB + 1 byte file");
    is_int(mode_rgb_load(big_path, &c, &err), MODE_EDATA, "an image file over 1 GiB is refused");
    has_str(err.msg, "big.png: 1073741825 bytes, larger than the limit of 1073741824 bytes", "... by its size: %s", err.msg);
    unlink(big_path);
    return tap_done();
}
