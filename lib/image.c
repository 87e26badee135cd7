/* image.c — PNG/JPEG decoding to RGB, EXIF orientation, smart_resize, antialiased bicubic
 * resampling (see image.h). */
#include "image.h"
#include "io.h"

#include <stdbool.h>
#include <stdio.h>
#include <jpeglib.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mode_rgb_free(struct mode_rgb *img)
{
    free(img->px);
    img->px = NULL;
    img->width = img->height = 0;
}

/* the limits of image.h, from the sizes a header declares */
static int check_size(uint64_t w, uint64_t h, const char *name, struct mode_err *err)
{
    if (w < 1 || h < 1) return mode_err_set(err, MODE_EDATA, "%s: an image of %llu x %llu pixels is empty", name,
                                            (unsigned long long)w, (unsigned long long)h);
    if (w > MODE_IMAGE_MAX_SIDE || h > MODE_IMAGE_MAX_SIDE || w * h > (uint64_t)MODE_IMAGE_MAX_PIXELS)
        return mode_err_set(err, MODE_EDATA,
                            "%s: an image of %llu x %llu pixels is too large (the limits are %lld pixels, as PIL's, and %d a side)",
                            name, (unsigned long long)w, (unsigned long long)h, (long long)MODE_IMAGE_MAX_PIXELS,
                            MODE_IMAGE_MAX_SIDE);
    return MODE_OK;
}

static int alloc_rgb(struct mode_rgb *img, int w, int h, const char *name, struct mode_err *err)
{
    int rc = check_size(w < 0 ? 0 : (uint64_t)w, h < 0 ? 0 : (uint64_t)h, name, err);
    if (rc) return rc;
    img->px = malloc((size_t)w * (size_t)h * 3);
    if (!img->px) return mode_err_oom(err, (size_t)w * (size_t)h * 3, "an image");
    img->width = w, img->height = h;
    return MODE_OK;
}

/* ---- EXIF ------------------------------------------------------------------------------------- */

int mode_exif_orientation(const uint8_t *p, size_t n)
{
    if (n >= 6 && !memcmp(p, "Exif\0\0", 6)) p += 6, n -= 6;
    if (n < 8) return 1;
    bool le;
    if (p[0] == 'I' && p[1] == 'I') le = true;
    else if (p[0] == 'M' && p[1] == 'M') le = false;
    else return 1;
#define U16(o) (le ? (unsigned)(p[o] | p[(o) + 1] << 8) : (unsigned)(p[o] << 8 | p[(o) + 1]))
#define U32(o) (le ? ((uint32_t)p[o] | (uint32_t)p[(o) + 1] << 8 | (uint32_t)p[(o) + 2] << 16 | (uint32_t)p[(o) + 3] << 24) \
                   : ((uint32_t)p[o] << 24 | (uint32_t)p[(o) + 1] << 16 | (uint32_t)p[(o) + 2] << 8 | (uint32_t)p[(o) + 3]))
    if (U16(2) != 42) return 1;
    uint32_t ifd = U32(4);
    if (ifd > n - 2 || ifd < 8) return 1;
    unsigned cnt = U16(ifd);
    for (unsigned i = 0; i < cnt; i++) {
        size_t e = ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) break;
        if (U16(e) == 0x0112 && U16(e + 2) == 3) {
            unsigned v = U16(e + 8);
            return v >= 1 && v <= 8 ? (int)v : 1;
        }
    }
    return 1;
#undef U16
#undef U32
}

/* PIL's exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 270 (clockwise 90),
 * 7 transverse, 8 rotate 90 (anticlockwise) */
static int orient(struct mode_rgb *img, int o, const char *name, struct mode_err *err)
{
    if (o <= 1 || o > 8) return MODE_OK;
    const int w = img->width, h = img->height;
    const bool swap = o >= 5;
    struct mode_rgb out = {0};
    int rc = alloc_rgb(&out, swap ? h : w, swap ? w : h, name, err);
    if (rc) return rc;
    const int W = out.width, H = out.height;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int sx, sy; /* source of output (x, y) */
            switch (o) {
            case 2: sx = w - 1 - x, sy = y; break;
            case 3: sx = w - 1 - x, sy = h - 1 - y; break;
            case 4: sx = x, sy = h - 1 - y; break;
            case 5: sx = y, sy = x; break;
            case 6: sx = y, sy = h - 1 - x; break;
            case 7: sx = w - 1 - y, sy = h - 1 - x; break;
            default: sx = w - 1 - y, sy = x; break; /* 8 */
            }
            memcpy(out.px + ((size_t)y * W + x) * 3, img->px + ((size_t)sy * w + sx) * 3, 3);
        }
    memcpy(out.kind, img->kind, sizeof out.kind);
    mode_rgb_free(img);
    *img = out;
    return MODE_OK;
}

/* PIL's alpha_composite of a pixel of colour c and alpha a over opaque white (AlphaComposite.c,
 * with dst = (255, 255, 255, 255)): the colour weight src.a * 255 * 255 * 2^7 / outa255 is
 * exactly a * 2^7 here, and the division by 255 is PIL's SHIFTFORDIV255 ((x >> 8) + x) >> 8 with
 * rounding terms; a = 0 copies the white. Over all 65536 (c, a) this equals
 * round(a/255 c + (1 - a/255) 255), transformers' blend of an RGBA array
 * (tests/fixtures/preprocess-alpha/README.json); the integers are PIL's. */
static uint8_t over_white(unsigned c, unsigned a)
{
    if (a == 0) return 255;
    const uint32_t coef1 = a << 7, coef2 = (255u << 7) - coef1;
    const uint32_t t = c * coef1 + 255u * coef2 + (0x80u << 7);
    return (uint8_t)((((t >> 8) + t) >> 8) >> 7);
}

/* ---- PNG -------------------------------------------------------------------------------------- */

struct mem_src {
    const uint8_t *p;
    size_t n, off;
};

struct png_ctx {
    jmp_buf jb;
    char msg[160];
    struct mem_src src;
    uint8_t *rows_buf; /* here, not in locals: they must survive a longjmp */
    png_bytep *rows;
};

static void png_fail(png_structp png, png_const_charp msg)
{
    struct png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jb, 1);
}

static void png_quiet(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

static void png_mem_read(png_structp png, png_bytep out, png_size_t n)
{
    struct png_ctx *c = png_get_io_ptr(png);
    if (n > c->src.n - c->src.off) png_error(png, "the file ends early (truncated)");
    memcpy(out, c->src.p + c->src.off, n);
    c->src.off += n;
}

static int decode_png(const uint8_t *data, size_t n, const char *name, enum mode_alpha alpha, struct mode_rgb *img,
                      struct mode_err *err)
{
    struct png_ctx ctx = {.src = {data, n, 0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_fail, png_quiet);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, NULL);
        return mode_err_oom(err, 0, "libpng");
    }
    if (setjmp(ctx.jb)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(ctx.rows_buf), free(ctx.rows);
        mode_rgb_free(img);
        return mode_err_set(err, MODE_EDATA, "%s: not a readable PNG: %s", name, ctx.msg);
    }
    png_set_read_fn(png, &ctx, png_mem_read);
    png_set_user_limits(png, MODE_IMAGE_MAX_SIDE, MODE_IMAGE_MAX_SIDE);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    int rc = check_size(w, h, name, err);
    if (rc) {
        png_destroy_read_struct(&png, &info, NULL);
        return rc;
    }
    static const char *const ct[] = {"grey", "?", "RGB", "palette", "grey+alpha", "?", "RGBA"};
    snprintf(img->kind, sizeof img->kind, "PNG %s %d-bit", ctype <= 6 ? ct[ctype] : "?", depth);
    /* to 8-bit RGB or RGBA, or 16-bit grey, as PIL reads them: a palette's tRNS becomes alpha
     * (PIL's P to RGBA); a colour key does not: PIL compares it with the converted 8-bit
     * samples, below */
    const bool grey16 = ctype == PNG_COLOR_TYPE_GRAY && depth == 16;
    bool keyed = false;
    uint8_t key[3] = {0, 0, 0};
    if (png_get_valid(png, info, PNG_INFO_tRNS)) {
        if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_tRNS_to_alpha(png);
        else {
            png_bytep ta = NULL;
            int tn = 0;
            png_color_16p tc = NULL;
            if (png_get_tRNS(png, info, &ta, &tn, &tc) && tc) {
                keyed = true;
                /* PngImagePlugin: a 1-bit key is 255 when nonzero; others are the raw 16-bit
                 * values, of which ImagingConvertTransparent compares the low byte */
                if (ctype == PNG_COLOR_TYPE_GRAY) key[0] = key[1] = key[2] = depth == 1 ? (tc->gray ? 255 : 0) : (uint8_t)tc->gray;
                else key[0] = (uint8_t)tc->red, key[1] = (uint8_t)tc->green, key[2] = (uint8_t)tc->blue;
            }
        }
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16 && !grey16) png_set_strip_16(png); /* the high byte, as PIL's RGB;16B, RGBA;16B, LA;16B */
    if ((ctype == PNG_COLOR_TYPE_GRAY && !grey16) || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int ch = png_get_channels(png, info);
    if (grey16 ? ch != 1 : ch != 3 && ch != 4) png_error(png, "unexpected channel layout");
    rc = alloc_rgb(img, (int)w, (int)h, name, err);
    if (rc) {
        png_destroy_read_struct(&png, &info, NULL);
        return rc;
    }
    const size_t stride = png_get_rowbytes(png, info);
    ctx.rows_buf = malloc(stride * h);
    ctx.rows = malloc(sizeof *ctx.rows * h);
    if (!ctx.rows_buf || !ctx.rows) png_error(png, "out of memory");
    png_bytep *rows = ctx.rows;
    for (png_uint_32 y = 0; y < h; y++) rows[y] = ctx.rows_buf + (size_t)y * stride;
    png_read_image(png, rows);
    /* EXIF orientation (eXIf chunk) */
    int orientation = 1;
#ifdef PNG_eXIf_SUPPORTED
    png_read_end(png, info);
    png_bytep exif = NULL;
    png_uint_32 exif_n = 0;
    if (png_get_eXIf_1(png, info, &exif_n, &exif) && exif) orientation = mode_exif_orientation(exif, exif_n);
#endif
    const bool white = alpha == MODE_ALPHA_WHITE;
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *s = rows[y];
        uint8_t *d = img->px + (size_t)y * w * 3;
        for (png_uint_32 x = 0; x < w; x++, d += 3) {
            if (grey16) {
                /* PIL's I;16 to L/RGB clips (I16_RGB): 0x1234 is 255, not 0x12 */
                const unsigned v = (unsigned)s[0] << 8 | s[1];
                d[0] = d[1] = d[2] = v > 255 ? 255 : (uint8_t)v;
                s += 2;
            } else {
                d[0] = s[0], d[1] = s[1], d[2] = s[2];
                if (ch == 4 && white) d[0] = over_white(s[0], s[3]), d[1] = over_white(s[1], s[3]), d[2] = over_white(s[2], s[3]);
                s += ch;
            }
            /* a colour key: alpha 0 there, which alpha_composite turns white */
            if (keyed && white && d[0] == key[0] && d[1] == key[1] && d[2] == key[2]) d[0] = d[1] = d[2] = 255;
        }
    }
    png_destroy_read_struct(&png, &info, NULL);
    free(ctx.rows_buf), free(ctx.rows);
    return orient(img, orientation, name, err);
}

/* ---- JPEG ------------------------------------------------------------------------------------- */

struct jpeg_ctx {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr c)
{
    struct jpeg_ctx *x = (struct jpeg_ctx *)c->err;
    (*c->err->format_message)(c, x->msg);
    longjmp(x->jb, 1);
}

/* a warning (level -1: corrupt or missing data, which libjpeg would paper over with grey) stops
 * the decoding as an error, as PIL refuses truncated images; trace messages (level >= 0) are quiet */
static void jpeg_quiet(j_common_ptr c, int level)
{
    if (level < 0) jpeg_fail(c);
}

static int decode_jpeg(const uint8_t *data, size_t n, const char *name, struct mode_rgb *img, struct mode_err *err)
{
    struct jpeg_decompress_struct cinfo;
    struct jpeg_ctx jerr;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_fail;
    jerr.pub.emit_message = jpeg_quiet;
    if (setjmp(jerr.jb)) {
        jpeg_destroy_decompress(&cinfo);
        mode_rgb_free(img);
        return mode_err_set(err, MODE_EDATA, "%s: not a readable JPEG: %s", name, jerr.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)n);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    /* before jpeg_start_decompress, which allocates whole-image buffers for a progressive file */
    int rc = check_size(cinfo.image_width, cinfo.image_height, name, err);
    if (rc) {
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return mode_err_set(err, MODE_EDATA, "%s: a CMYK JPEG is not supported (convert it to RGB first)", name);
    }
    snprintf(img->kind, sizeof img->kind, "JPEG %s", cinfo.jpeg_color_space == JCS_GRAYSCALE ? "grey" : "colour");
    int orientation = 1;
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m; m = m->next)
        if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && !memcmp(m->data, "Exif\0\0", 6))
            orientation = mode_exif_orientation(m->data, m->data_length);
    cinfo.out_color_space = JCS_RGB;
    jpeg_start_decompress(&cinfo);
    rc = alloc_rgb(img, (int)cinfo.output_width, (int)cinfo.output_height, name, err);
    if (rc) {
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = img->px + (size_t)cinfo.output_scanline * img->width * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return orient(img, orientation, name, err);
}

int mode_rgb_decode_alpha(const uint8_t *data, size_t n, const char *name, enum mode_alpha alpha, struct mode_rgb *img,
                          struct mode_err *err)
{
    memset(img, 0, sizeof *img);
    if (n >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8)) return decode_png(data, n, name, alpha, img, err);
    if (n >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return decode_jpeg(data, n, name, img, err);
    return mode_err_set(err, MODE_EDATA, "%s: not a PNG or JPEG image", name);
}

int mode_rgb_load_alpha(const char *path, enum mode_alpha alpha, struct mode_rgb *img, struct mode_err *err)
{
    memset(img, 0, sizeof *img);
    char *data;
    size_t n;
    /* a regular file only: /dev/zero or a FIFO would be read up to the limit (1 GiB) before
     * being refused, a FIFO without a writer would block */
    int rc = mode_read_regular_file(path, MODE_IMAGE_MAX_FILE, &data, &n, err);
    if (rc) return rc;
    rc = mode_rgb_decode_alpha((const uint8_t *)data, n, path, alpha, img, err);
    free(data);
    return rc;
}

int mode_rgb_decode(const uint8_t *data, size_t n, const char *name, struct mode_rgb *img, struct mode_err *err)
{
    return mode_rgb_decode_alpha(data, n, name, MODE_ALPHA_DROP, img, err);
}

int mode_rgb_load(const char *path, struct mode_rgb *img, struct mode_err *err)
{
    return mode_rgb_load_alpha(path, MODE_ALPHA_DROP, img, err);
}

/* ---- sizes and resampling --------------------------------------------------------------------- */

int mode_smart_resize(int h, int w, int factor, int64_t min_pixels, int64_t max_pixels, int *out_h, int *out_w, struct mode_err *err)
{
    if (h < 1 || w < 1 || factor < 1) return mode_err_set(err, MODE_EDATA, "an image of %d x %d pixels", w, h);
    if ((double)(h > w ? h : w) / (h < w ? h : w) > 200)
        return mode_err_set(err, MODE_EDATA, "an image of %d x %d pixels: the aspect ratio must be below 200", w, h);
    double hb = rint((double)h / factor) * factor, wb = rint((double)w / factor) * factor;
    if (hb * wb > (double)max_pixels) {
        double beta = sqrt((double)h * w / (double)max_pixels);
        hb = fmax(factor, floor(h / beta / factor) * factor);
        wb = fmax(factor, floor(w / beta / factor) * factor);
    } else if (hb * wb < (double)min_pixels) {
        double beta = sqrt((double)min_pixels / ((double)h * w));
        hb = ceil(h * beta / factor) * factor;
        wb = ceil(w * beta / factor) * factor;
    }
    if (hb > MODE_IMAGE_MAX_SIDE || wb > MODE_IMAGE_MAX_SIDE)
        return mode_err_set(err, MODE_EDATA, "an image of %d x %d pixels would be resized to %.0f x %.0f: too large", w, h, wb, hb);
    *out_h = (int)hb, *out_w = (int)wb;
    return MODE_OK;
}

/* torch's antialiased cubic filter, Keys' a = -0.5 as PIL (HelperInterpCubic::aa_filter with
 * UpSample.h's cubic_convolution1/2), evaluated in the same order: the weights are quantised
 * from these doubles, so another but equal polynomial could round a weight the other way */
static double bicubic(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
    return 0;
}

/* The taps of one pass, as torch's _compute_index_ranges_int16_weights with antialias
 * (UpSampleKernel.cpp): output sample i reads input [lo[i], lo[i] + cnt[i]) with the int16
 * weights w[i * kmax ...], which have prec fraction bits: prec is the first p in 0..21 at which
 * round(wt_max * 2^(p + 1)) reaches 2^15 (22 if none), wt_max the largest normalised weight of
 * the pass, so that wt_max * 2^prec still fits in an int16. */
struct taps {
    int *lo, *cnt;
    int16_t *w; /* (out, kmax) */
    int kmax, prec;
};

static void taps_free(struct taps *t) { free(t->lo), free(t->cnt), free(t->w); }

static int taps_init(struct taps *t, int in, int out)
{
    memset(t, 0, sizeof *t);
    /* area_pixel_compute_scale without align_corners or a given scale; support = interp_size
     * (4) / 2, times the scale when reducing */
    const double scale = (double)in / out, support = scale >= 1 ? 2 * scale : 2.0, invscale = scale >= 1 ? 1 / scale : 1;
    t->kmax = (int)ceil(support) * 2 + 1;
    t->lo = malloc(sizeof *t->lo * (size_t)out);
    t->cnt = malloc(sizeof *t->cnt * (size_t)out);
    t->w = calloc((size_t)out * (size_t)t->kmax, sizeof *t->w);
    double *k = malloc(sizeof *k * (size_t)out * (size_t)t->kmax);
    if (!t->lo || !t->cnt || !t->w || !k) return free(k), taps_free(t), -1;
    double wt_max = 0;
    for (int i = 0; i < out; i++) {
        const double center = scale * (i + 0.5);
        /* C++'s static_cast<int64_t> truncates toward zero, as (int64_t) here */
        int64_t xmin = (int64_t)(center - support + 0.5), xmax = (int64_t)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        int64_t n = (xmax < in ? xmax : in) - xmin;
        if (n < 0) n = 0;
        if (n > t->kmax) n = t->kmax;
        double *ki = k + (size_t)i * t->kmax, total = 0;
        for (int64_t j = 0; j < n; j++) total += ki[j] = bicubic(((double)(j + xmin) - center + 0.5) * invscale);
        for (int64_t j = 0; j < n && total != 0; j++) {
            ki[j] /= total;
            if (ki[j] > wt_max) wt_max = ki[j];
        }
        t->lo[i] = (int)xmin, t->cnt[i] = (int)n;
    }
    for (t->prec = 0; t->prec < 22; t->prec++)
        if ((int)(0.5 + wt_max * (1 << (t->prec + 1))) >= (1 << 15)) break;
    MODE_ASSERT(t->prec > 0); /* wt_max, a normalised cubic weight, is far below 2^14 */
    for (int i = 0; i < out; i++)
        for (int j = 0; j < t->cnt[i]; j++) {
            const double v = k[(size_t)i * t->kmax + j] * (1 << t->prec);
            t->w[(size_t)i * t->kmax + j] = (int16_t)(v < 0 ? (int)(-0.5 + v) : (int)(0.5 + v));
        }
    free(k);
    return 0;
}

/* one output sample: the rounding term 2^(prec - 1), the sum, then >> prec clipped to 0..255
 * (the AVX2 kernel's srai + packs + packus, the generic loop's clamp); summed in int64 where
 * torch sums in int32, which it never overflows (at most about 255 * 1.1 * 2^22 < 2^31: the
 * weights' absolute values sum to about 1.1 * 2^prec), so the results are the same */
static uint8_t tap_out(int64_t acc, int prec)
{
    if (acc <= 0) return 0;
    acc >>= prec;
    return acc > 255 ? 255 : (uint8_t)acc;
}

int mode_image_resize(const struct mode_rgb *src, int w, int h, struct mode_rgb *dst, struct mode_err *err)
{
    memset(dst, 0, sizeof *dst);
    int rc = alloc_rgb(dst, w, h, "resized image", err);
    if (rc) return rc;
    memcpy(dst->kind, src->kind, sizeof dst->kind);
    const int W0 = src->width, H0 = src->height;
    /* torch resamples only the sides whose length changes (need_horizontal, need_vertical) */
    const bool hpass = w != W0, vpass = h != H0;
    struct taps tx = {0}, ty = {0};
    uint8_t *tmp = NULL;
    if ((hpass && vpass && !(tmp = malloc((size_t)H0 * (size_t)w * 3))) || (hpass && taps_init(&tx, W0, w)) ||
        (vpass && taps_init(&ty, H0, h))) {
        rc = mode_err_oom(err, (size_t)H0 * (size_t)w * 3, "resizing");
        goto out;
    }
    if (!hpass && !vpass) memcpy(dst->px, src->px, (size_t)w * h * 3);
    /* horizontal: (H0, W0) -> (H0, w), into dst when it is the only pass */
    const uint8_t *hsrc = src->px;
    if (hpass) {
        uint8_t *hdst = vpass ? tmp : dst->px;
        const int64_t r0 = INT64_C(1) << (tx.prec - 1);
        for (int y = 0; y < H0; y++) {
            const uint8_t *row = src->px + (size_t)y * W0 * 3;
            for (int x = 0; x < w; x++) {
                int64_t acc[3] = {r0, r0, r0};
                const int16_t *wt = tx.w + (size_t)x * tx.kmax;
                for (int j = 0; j < tx.cnt[x]; j++) {
                    const uint8_t *p = row + (size_t)(tx.lo[x] + j) * 3;
                    acc[0] += (int64_t)wt[j] * p[0], acc[1] += (int64_t)wt[j] * p[1], acc[2] += (int64_t)wt[j] * p[2];
                }
                uint8_t *t = hdst + ((size_t)y * w + x) * 3;
                t[0] = tap_out(acc[0], tx.prec), t[1] = tap_out(acc[1], tx.prec), t[2] = tap_out(acc[2], tx.prec);
            }
        }
        hsrc = hdst;
    }
    /* vertical: (H0, w) -> (h, w) */
    if (vpass) {
        const int64_t r0 = INT64_C(1) << (ty.prec - 1);
        for (int y = 0; y < h; y++) {
            const int16_t *wt = ty.w + (size_t)y * ty.kmax;
            for (int x = 0; x < w; x++) {
                int64_t acc[3] = {r0, r0, r0};
                for (int j = 0; j < ty.cnt[y]; j++) {
                    const uint8_t *t = hsrc + ((size_t)(ty.lo[y] + j) * w + x) * 3;
                    acc[0] += (int64_t)wt[j] * t[0], acc[1] += (int64_t)wt[j] * t[1], acc[2] += (int64_t)wt[j] * t[2];
                }
                uint8_t *d = dst->px + ((size_t)y * w + x) * 3;
                d[0] = tap_out(acc[0], ty.prec), d[1] = tap_out(acc[1], ty.prec), d[2] = tap_out(acc[2], ty.prec);
            }
        }
    }
out:
    free(tmp);
    taps_free(&tx), taps_free(&ty);
    if (rc) mode_rgb_free(dst);
    return rc;
}
