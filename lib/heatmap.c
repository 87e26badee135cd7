/* heatmap.c — heatmap PNGs with a built-in bitmap font (see heatmap.h). */
#include "heatmap.h"
#include "io.h"

#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- font: 5×7 glyphs, one byte per row, bit 4 = leftmost column ----------------------------- */
struct glyph {
    char c;
    unsigned char row[7];
};

static const struct glyph font[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {'.', {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C}}, {',', {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08}},
    {'-', {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00}}, {':', {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'/', {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10}}, {'=', {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}}, {'_', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F}},
    {'+', {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00}}, {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}}, {'\'', {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04}}, {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
};

enum { SCALE = 2, GW = 6 * SCALE /* advance */, GH = 7 * SCALE };

static const unsigned char *glyph_rows(char c)
{
    if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
    for (size_t i = 0; i < sizeof font / sizeof *font; i++)
        if (font[i].c == c) return font[i].row;
    return NULL; /* space and anything else: blank */
}

struct canvas {
    int w, h;
    unsigned char *px; /* RGB */
};

static void put(struct canvas *cv, int x, int y, const unsigned char rgb[3])
{
    if (x < 0 || y < 0 || x >= cv->w || y >= cv->h) return;
    memcpy(cv->px + ((size_t)y * cv->w + x) * 3, rgb, 3);
}

static void rect(struct canvas *cv, int x, int y, int w, int h, const unsigned char rgb[3])
{
    for (int j = 0; j < h; j++)
        for (int i = 0; i < w; i++) put(cv, x + i, y + j, rgb);
}

static int text_w(const char *s) { return (int)strlen(s) * GW; }

static void text(struct canvas *cv, int x, int y, const char *s)
{
    static const unsigned char ink[3] = {20, 20, 20};
    for (; *s; s++, x += GW) {
        const unsigned char *g = glyph_rows(*s);
        if (!g) continue;
        for (int r = 0; r < 7; r++)
            for (int c = 0; c < 5; c++)
                if (g[r] & (0x10 >> c)) rect(cv, x + c * SCALE, y + r * SCALE, SCALE, SCALE, ink);
    }
}

/* text rotated a quarter turn anticlockwise, reading bottom to top, its left end at (x, y) bottom */
static void text_up(struct canvas *cv, int x, int y, const char *s)
{
    static const unsigned char ink[3] = {20, 20, 20};
    for (; *s; s++, y -= GW) {
        const unsigned char *g = glyph_rows(*s);
        if (!g) continue;
        for (int r = 0; r < 7; r++)
            for (int c = 0; c < 5; c++)
                if (g[r] & (0x10 >> c)) rect(cv, x + r * SCALE, y - (c + 1) * SCALE, SCALE, SCALE, ink);
    }
}

/* ---- colours ------------------------------------------------------------------------------- */

void mode_heatmap_color(double t, unsigned char rgb[3])
{
    /* anchors of a perceptually ordered dark-blue → teal → green → yellow ramp */
    static const double a[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},   {44, 113, 142}, {33, 144, 141},
                                   {39, 173, 129}, {92, 200, 99},  {170, 220, 50},  {253, 231, 37}};
    if (!(t >= 0)) t = 0; /* NAN too */
    if (t > 1) t = 1;
    double x = t * 8;
    int i = (int)x;
    if (i > 7) i = 7;
    double f = x - i;
    for (int k = 0; k < 3; k++) rgb[k] = (unsigned char)lround(a[i][k] + f * (a[i + 1][k] - a[i][k]));
}

static void cat_color(int i, int n, unsigned char rgb[3])
{
    /* few categories (bit widths): from red (fewest bits) through yellow to blue (most) */
    static const unsigned char c[8][3] = {{215, 48, 39},  {252, 141, 89}, {254, 224, 144}, {145, 191, 219},
                                          {69, 117, 180}, {49, 54, 149},  {120, 120, 120}, {0, 0, 0}};
    static const int pick[7][6] = {{0}, {0}, {0, 4}, {0, 2, 4}, {0, 1, 3, 4}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4, 5}};
    int k = n <= 6 ? pick[n][i] : i;
    if (k > 7) k = 7;
    memcpy(rgb, c[k], 3);
}

/* ---- layout ---------------------------------------------------------------------------------- */

static int tick_step(int n, int cell)
{
    static const int steps[] = {1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64, 100, 128, 256, 512, 1024};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++)
        if (steps[i] * cell >= 4 * GW && (long)n / steps[i] <= 16) return steps[i];
    return n;
}

struct png_ctx {
    jmp_buf jb;
    char msg[200];
    int fd;
    int write_errno; /* the errno of a failed write(2), for the message */
};

static void png_err(png_structp p, png_const_charp m)
{
    struct png_ctx *c = png_get_error_ptr(p);
    snprintf(c->msg, sizeof c->msg, "%s", m);
    longjmp(c->jb, 1);
}

static void png_warn(png_structp p, png_const_charp m) { (void)p, (void)m; }

/* libpng's output straight to the descriptor (checked writes, errno kept: through stdio it was
 * "Write Error" with no cause) */
static void png_out(png_structp p, png_bytep data, png_size_t n)
{
    struct png_ctx *c = png_get_io_ptr(p);
    int e = mode_write_all(c->fd, data, n);
    if (e) {
        c->write_errno = e;
        png_error(p, "write failed");
    }
}

static void png_no_flush(png_structp p) { (void)p; }

static int write_png(const struct canvas *cv, int fd, const char *path, struct mode_err *err)
{
    struct png_ctx ctx = {.fd = fd};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, png_err, png_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return mode_err_set(err, MODE_EUNAVAILABLE, "%s: out of memory for libpng", path);
    }
    if (setjmp(ctx.jb)) {
        png_destroy_write_struct(&png, &info);
        if (ctx.write_errno) return mode_err_set(err, MODE_EIO, "%s: write failed: %s", path, strerror(ctx.write_errno));
        return mode_err_set(err, MODE_EIO, "%s: %s", path, ctx.msg);
    }
    png_set_write_fn(png, &ctx, png_out, png_no_flush);
    png_set_IHDR(png, info, (png_uint_32)cv->w, (png_uint_32)cv->h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < cv->h; y++) png_write_row(png, cv->px + (size_t)y * cv->w * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return MODE_OK;
}

int mode_heatmap_png(const struct mode_heatmap *h, const char *path, struct mode_err *err)
{
    if (h->rows < 1 || h->cols < 1 || h->n_panel < 1) return mode_err_set(err, MODE_EUSAGE, "%s: an empty picture", path);
    int cw = 640 / (h->cols * (h->n_panel > 2 ? 2 : 1)), ch = 400 / h->rows;
    cw = cw < 2 ? 2 : cw > 28 ? 28 : cw;
    ch = ch < 2 ? 2 : ch > 28 ? 28 : ch;
    const int pw = cw * h->cols, ph = ch * h->rows;
    /* panel title width may exceed the grid */
    int colw = pw;
    for (int p = 0; p < h->n_panel; p++) {
        int t = text_w(h->panel[p].title ? h->panel[p].title : "");
        if (t > colw) colw = t;
    }
    const int m = 16, left = m + GH + 8 + 4 * GW + 6, top = m + (h->title ? GH + 14 : 0) + GH + 8, gap = 4 * GW;
    char buf[64];
    int legend_w;
    if (h->n_cat > 0) {
        int lw = 0;
        for (int i = 0; i < h->n_cat; i++) {
            int t = text_w(h->cat_label[i]);
            if (t > lw) lw = t;
        }
        legend_w = 24 + lw;
    } else {
        snprintf(buf, sizeof buf, "%.3g", h->vmax);
        int t1 = text_w(buf);
        snprintf(buf, sizeof buf, "%.3g", h->vmin);
        int t2 = text_w(buf);
        legend_w = 24 + (t1 > t2 ? t1 : t2);
        if (h->scale_label && text_w(h->scale_label) > legend_w) legend_w = text_w(h->scale_label);
    }
    const long W = left + (long)h->n_panel * colw + (long)(h->n_panel - 1) * gap + gap + legend_w + m;
    long H = top + ph + 8 + GH + 8 + GH + m;
    long legend_h = h->n_cat > 0 ? 8 + h->n_cat * (GH + 8) : 8 + 200;
    if (top + legend_h + m > H) H = top + legend_h + m;
    if (W > 16384 || H > 16384) return mode_err_set(err, MODE_EUSAGE, "%s: a picture of %ld x %ld pixels is too large", path, W, H);
    struct canvas cv = {(int)W, (int)H, malloc((size_t)W * (size_t)H * 3)};
    if (!cv.px) return mode_err_oom(err, (size_t)W * (size_t)H * 3, "the picture");
    memset(cv.px, 255, (size_t)W * (size_t)H * 3);
    static const unsigned char grey[3] = {225, 225, 225}, frame[3] = {90, 90, 90};

    if (h->title) text(&cv, left, m, h->title);
    const int rstep = tick_step(h->rows, ch), cstep = tick_step(h->cols, cw);
    for (int p = 0; p < h->n_panel; p++) {
        const int x0 = left + p * (colw + gap);
        if (h->panel[p].title) text(&cv, x0, top - GH - 8, h->panel[p].title);
        for (int r = 0; r < h->rows; r++)
            for (int c = 0; c < h->cols; c++) {
                double v = h->panel[p].v[(size_t)r * h->cols + c];
                unsigned char rgb[3];
                if (isnan(v)) memcpy(rgb, grey, 3);
                else if (h->n_cat > 0) {
                    int k = -1;
                    for (int i = 0; i < h->n_cat; i++)
                        if (h->cat_value[i] == v) k = i;
                    if (k < 0) memcpy(rgb, grey, 3);
                    else cat_color(k, h->n_cat, rgb);
                } else
                    mode_heatmap_color(h->vmax > h->vmin ? (v - h->vmin) / (h->vmax - h->vmin) : 0, rgb);
                rect(&cv, x0 + c * cw, top + r * ch, cw, ch, rgb);
            }
        /* frame */
        rect(&cv, x0 - 1, top - 1, pw + 2, 1, frame);
        rect(&cv, x0 - 1, top + ph, pw + 2, 1, frame);
        rect(&cv, x0 - 1, top - 1, 1, ph + 2, frame);
        rect(&cv, x0 + pw, top - 1, 1, ph + 2, frame);
        /* column ticks */
        for (int c = 0; c < h->cols; c += cstep) {
            snprintf(buf, sizeof buf, "%d", c);
            rect(&cv, x0 + c * cw + cw / 2, top + ph + 1, 1, 4, frame);
            int tx = x0 + c * cw + cw / 2 - text_w(buf) / 2;
            if (tx + text_w(buf) <= x0 + colw + gap / 2) text(&cv, tx, top + ph + 7, buf);
        }
        if (h->col_label) text(&cv, x0 + pw / 2 - text_w(h->col_label) / 2, top + ph + 8 + GH + 8, h->col_label);
    }
    /* row ticks and label, left of the first panel */
    for (int r = 0; r < h->rows; r += rstep) {
        snprintf(buf, sizeof buf, "%d", h->row_names ? h->row_names[r] : r);
        text(&cv, left - 6 - text_w(buf), top + r * ch + ch / 2 - GH / 2, buf);
    }
    if (h->row_label) text_up(&cv, m, top + ph / 2 + text_w(h->row_label) / 2, h->row_label);
    /* legend */
    const int lx = left + h->n_panel * colw + (h->n_panel - 1) * gap + gap;
    if (h->n_cat > 0) {
        for (int i = 0; i < h->n_cat; i++) {
            unsigned char rgb[3];
            cat_color(i, h->n_cat, rgb);
            int y = top + 8 + i * (GH + 8);
            rect(&cv, lx, y, GH, GH, rgb);
            text(&cv, lx + GH + 8, y, h->cat_label[i]);
        }
    } else {
        const int bh = 200, bw = 16;
        if (h->scale_label) text(&cv, lx, top - GH - 8, h->scale_label);
        for (int y = 0; y < bh; y++) {
            unsigned char rgb[3];
            mode_heatmap_color(1 - (double)y / (bh - 1), rgb);
            rect(&cv, lx, top + y, bw, 1, rgb);
        }
        snprintf(buf, sizeof buf, "%.3g", h->vmax);
        text(&cv, lx + bw + 6, top, buf);
        snprintf(buf, sizeof buf, "%.3g", h->vmin);
        text(&cv, lx + bw + 6, top + bh - GH, buf);
    }

    struct mode_outfile out;
    int rc = mode_outfile_open(&out, path, err);
    if (!rc) rc = write_png(&cv, out.fd, out.path, err);
    if (!rc) rc = mode_outfile_commit(&out, err);
    else mode_outfile_abort(&out);
    free(cv.px);
    return rc;
}
