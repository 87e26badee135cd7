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

/* transformers 5.17 converts with PIL's convert("RGB"), which drops the alpha channel: a
 * transparent pixel keeps its stored colour (the RGBA and LA goldens agree with that exactly, not
 * with compositing over white or black) */
static uint8_t drop_alpha(unsigned c, unsigned a) { return (void)a, (uint8_t)c; }

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

static int decode_png(const uint8_t *data, size_t n, const char *name, struct mode_rgb *img, struct mode_err *err)
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
    const bool trns = png_get_valid(png, info, PNG_INFO_tRNS);
    const bool alpha = (ctype & PNG_COLOR_MASK_ALPHA) || trns;
    static const char *const ct[] = {"grey", "?", "RGB", "palette", "grey+alpha", "?", "RGBA"};
    snprintf(img->kind, sizeof img->kind, "PNG %s %d-bit", ctype <= 6 ? ct[ctype] : "?", depth);
    /* to 8-bit RGB or RGBA */
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (trns) png_set_tRNS_to_alpha(png);
    if (depth == 16) png_set_strip_16(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const int ch = png_get_channels(png, info);
    if (ch != 3 && ch != 4) png_error(png, "unexpected channel layout");
    (void)alpha;
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
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *s = rows[y];
        uint8_t *d = img->px + (size_t)y * w * 3;
        for (png_uint_32 x = 0; x < w; x++, s += ch, d += 3) {
            if (ch == 4) d[0] = drop_alpha(s[0], s[3]), d[1] = drop_alpha(s[1], s[3]), d[2] = drop_alpha(s[2], s[3]);
            else d[0] = s[0], d[1] = s[1], d[2] = s[2];
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

int mode_rgb_decode(const uint8_t *data, size_t n, const char *name, struct mode_rgb *img, struct mode_err *err)
{
    memset(img, 0, sizeof *img);
    if (n >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8)) return decode_png(data, n, name, img, err);
    if (n >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return decode_jpeg(data, n, name, img, err);
    return mode_err_set(err, MODE_EDATA, "%s: not a PNG or JPEG image", name);
}

int mode_rgb_load(const char *path, struct mode_rgb *img, struct mode_err *err)
{
    memset(img, 0, sizeof *img);
    char *data;
    size_t n;
    /* a regular file only: /dev/zero or a FIFO would be read up to the limit (1 GiB) before
     * being refused, a FIFO without a writer would block */
    int rc = mode_read_regular_file(path, MODE_IMAGE_MAX_FILE, &data, &n, err);
    if (rc) return rc;
    rc = mode_rgb_decode((const uint8_t *)data, n, path, img, err);
    free(data);
    return rc;
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

static double bicubic(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
}

/* PIL's 8-bit resampling arithmetic (which torchvision's uint8 antialias path reproduces):
 * normalised weights in fixed point with 22 fraction bits, each pass rounded and clipped to 8
 * bits */
enum { PREC = 22 };

static uint8_t clip8(int64_t v)
{
    if (v >= (INT64_C(1) << (PREC + 8))) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PREC);
}

/* weights of output sample i over [lo[i], lo[i] + cnt[i]) of the input, as PIL's precompute_coeffs */
static int coeffs(int in, int out, int **lo, int **cnt, int32_t **w, int *kmax)
{
    const double scale = (double)in / out, fs = scale > 1 ? scale : 1, support = 2 * fs;
    *kmax = (int)ceil(support) * 2 + 1;
    *lo = malloc(sizeof **lo * (size_t)out);
    *cnt = malloc(sizeof **cnt * (size_t)out);
    *w = calloc((size_t)out * (size_t)*kmax, sizeof **w);
    double *k = malloc(sizeof *k * (size_t)*kmax);
    if (!*lo || !*cnt || !*w || !k) return free(k), -1;
    for (int i = 0; i < out; i++) {
        const double center = (i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        int n = xmax - xmin;
        if (n > *kmax) n = *kmax;
        double sum = 0;
        for (int j = 0; j < n; j++) sum += k[j] = bicubic((j + xmin - center + 0.5) / fs);
        int32_t *wi = *w + (size_t)i * *kmax;
        for (int j = 0; j < n; j++) {
            double v = sum != 0 ? k[j] / sum : 0;
            wi[j] = (int32_t)(v < 0 ? -0.5 + v * (1 << PREC) : 0.5 + v * (1 << PREC));
        }
        (*lo)[i] = xmin, (*cnt)[i] = n;
    }
    free(k);
    return 0;
}

int mode_image_resize(const struct mode_rgb *src, int w, int h, struct mode_rgb *dst, struct mode_err *err)
{
    memset(dst, 0, sizeof *dst);
    int rc = alloc_rgb(dst, w, h, "resized image", err);
    if (rc) return rc;
    memcpy(dst->kind, src->kind, sizeof dst->kind);
    const int W0 = src->width, H0 = src->height;
    int *xlo = NULL, *xcnt = NULL, *ylo = NULL, *ycnt = NULL, kx = 0, ky = 0;
    int32_t *xw = NULL, *yw = NULL;
    uint8_t *tmp = malloc((size_t)H0 * (size_t)w * 3);
    if (!tmp || coeffs(W0, w, &xlo, &xcnt, &xw, &kx) || coeffs(H0, h, &ylo, &ycnt, &yw, &ky)) {
        rc = mode_err_oom(err, (size_t)H0 * (size_t)w * 3, "resizing");
        goto out;
    }
    /* horizontal: (H0, W0) -> (H0, w) */
    for (int y = 0; y < H0; y++) {
        const uint8_t *row = src->px + (size_t)y * W0 * 3;
        for (int x = 0; x < w; x++) {
            int64_t acc[3] = {1 << (PREC - 1), 1 << (PREC - 1), 1 << (PREC - 1)};
            const int32_t *wt = xw + (size_t)x * kx;
            for (int j = 0; j < xcnt[x]; j++) {
                const uint8_t *p = row + (size_t)(xlo[x] + j) * 3;
                acc[0] += (int64_t)wt[j] * p[0], acc[1] += (int64_t)wt[j] * p[1], acc[2] += (int64_t)wt[j] * p[2];
            }
            uint8_t *t = tmp + ((size_t)y * w + x) * 3;
            t[0] = clip8(acc[0]), t[1] = clip8(acc[1]), t[2] = clip8(acc[2]);
        }
    }
    /* vertical: (H0, w) -> (h, w) */
    for (int y = 0; y < h; y++) {
        const int32_t *wt = yw + (size_t)y * ky;
        for (int x = 0; x < w; x++) {
            int64_t acc[3] = {1 << (PREC - 1), 1 << (PREC - 1), 1 << (PREC - 1)};
            for (int j = 0; j < ycnt[y]; j++) {
                const uint8_t *t = tmp + ((size_t)(ylo[y] + j) * w + x) * 3;
                acc[0] += (int64_t)wt[j] * t[0], acc[1] += (int64_t)wt[j] * t[1], acc[2] += (int64_t)wt[j] * t[2];
            }
            uint8_t *d = dst->px + ((size_t)y * w + x) * 3;
            d[0] = clip8(acc[0]), d[1] = clip8(acc[1]), d[2] = clip8(acc[2]);
        }
    }
out:
    free(tmp), free(xlo), free(xcnt), free(xw), free(ylo), free(ycnt), free(yw);
    if (rc) mode_rgb_free(dst);
    return rc;
}
