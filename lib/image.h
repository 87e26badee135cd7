/* image.h — reading images and resizing them as transformers' Qwen2-VL image processor does.
 *
 * Decoding: PNG through libpng (every colour type, bit depths 1 to 16, palettes, tRNS
 * transparency, interlacing) and JPEG through libjpeg-turbo (greyscale and YCbCr; CMYK is
 * refused, and so is corrupt or truncated data, which libjpeg would otherwise complete with
 * grey). The EXIF orientation of a JPEG (APP1) or a PNG (eXIf) is applied, as transformers'
 * load_image does with PIL's exif_transpose. The samples are those PIL reads: 16-bit RGB, RGBA
 * and grey+alpha keep their high byte; 16-bit grey (PIL's mode I;16) is clipped to 255; 1, 2
 * and 4-bit grey are scaled to 0..255.
 *
 * Conversion to RGB: grey is replicated; what becomes of transparency (an alpha channel, or a
 * palette or colour key in tRNS) is the caller's choice, enum mode_alpha below.
 *
 * Resizing: smart_resize picks the size (multiples of patch*merge, pixel count within
 * [min_pixels, max_pixels], aspect ratio kept as well as those allow), and mode_image_resize
 * resamples with the antialiased bicubic filter (a = -0.5, support scaled by the reduction) in
 * the uint8 arithmetic of torch's _upsample_bicubic2d_aa, which torchvision's resize(antialias=
 * True) runs on a uint8 image and so transformers' (fast) Qwen2-VL image processor: separable,
 * horizontal pass then vertical, a pass skipped where that side keeps its length, each pass
 * rounded and clipped to 8 bits; weights in int16 fixed point with the most fraction bits the
 * largest weight of the pass allows (PIL's own resampler uses 22 bits always, and differs from
 * it by one level here and there on upscaled fine detail).
 */
#ifndef MODE_IMAGE_H
#define MODE_IMAGE_H

#include "mode.h"

#include <stddef.h>
#include <stdint.h>

/* Limits on an image, checked against its header before any pixel buffer is allocated; beyond
 * them an image is MODE_EDATA (documented in mode-tokenize(1), LIMITS).
 *
 * MODE_IMAGE_MAX_PIXELS, width x height: transformers' load_image decodes with PIL, whose
 * Image.MAX_IMAGE_PIXELS (89,478,485 = 2^30 / 4 / 3) warns of a decompression bomb above it and
 * refuses (DecompressionBombError) an image of more than twice as many pixels; mode refuses what
 * the reference refuses and reads what it reads. The processor's max_pixels
 * (preprocessor_config.json size.longest_edge) cannot bound the decoded image: it bounds the
 * resized one, which smart_resize computes from the decoded size. At the limit the RGB image is
 * 537 MB (3 bytes a pixel) and libpng's rows up to 716 MB more (4 bytes a pixel, RGBA).
 * MODE_IMAGE_MAX_SIDE: one side, far above photographs and screenshots; it keeps every product
 * of a coordinate and a row length inside int in the resampler.
 * MODE_IMAGE_MAX_FILE: the file is read whole; an image at the pixel limit stored without
 * compression as 8-bit RGB is 537 MB. A file larger than that is refused by its size, unread;
 * anything but a regular file (a device such as /dev/zero, a FIFO, a directory) is refused
 * before it is read (MODE_ENOINPUT). */
#define MODE_IMAGE_MAX_PIXELS (INT64_C(2) * 89478485)
#define MODE_IMAGE_MAX_SIDE 32768
#define MODE_IMAGE_MAX_FILE ((size_t)1 << 30)

struct mode_rgb {
    int width, height;
    uint8_t *px; /* (height, width, 3), malloc'ed */
    char kind[24]; /* "PNG RGBA 8-bit", "JPEG YCbCr", ... for messages */
};

/* What becomes of transparency on conversion to RGB (mode-tokenize --alpha; its man page says
 * which reference does which):
 * MODE_ALPHA_DROP   the alpha is dropped, a pixel keeps its stored colour: PIL's convert("RGB"),
 *                   what transformers 5.17 does with a PIL image, and 5.17 and 5.25 with an image
 *                   given as a path (torchvision's decode_image, mode RGB; equal to PIL for 8-bit
 *                   files, while of a 16-bit PNG it passes 16-bit samples on unscaled).
 * MODE_ALPHA_WHITE  composited over opaque white with PIL's alpha_composite (7 fraction bits, two
 *                   roundings): transformers 5.25's convert_to_rgb given a PIL image, as Qwen's
 *                   own utilities do. A colour key (tRNS of a grey or RGB image) makes the pixels
 *                   equal to it white, compared as PIL compares them: after conversion to 8 bits,
 *                   with the key's low byte (so a 2 or 4-bit grey key, never scaled, matches a
 *                   scaled sample only at 0). */
enum mode_alpha { MODE_ALPHA_DROP = 0, MODE_ALPHA_WHITE = 1 };

/* Decodes the file at path (PNG or JPEG, told by content). MODE_ENOINPUT when it cannot be
 * opened or is not a regular file; MODE_EDATA for anything else wrong, the message naming the
 * file and the problem. */
int mode_rgb_load_alpha(const char *path, enum mode_alpha alpha, struct mode_rgb *img, struct mode_err *err);
/* From bytes in memory (name for messages). */
int mode_rgb_decode_alpha(const uint8_t *data, size_t n, const char *name, enum mode_alpha alpha, struct mode_rgb *img,
                          struct mode_err *err);
/* The same with MODE_ALPHA_DROP. */
int mode_rgb_load(const char *path, struct mode_rgb *img, struct mode_err *err);
int mode_rgb_decode(const uint8_t *data, size_t n, const char *name, struct mode_rgb *img, struct mode_err *err);
void mode_rgb_free(struct mode_rgb *img);

/* Qwen2-VL's smart_resize: *out_h, *out_w for an image of h x w. MODE_EDATA when the aspect ratio
 * exceeds 200 or the image is smaller than 1 pixel. */
int mode_smart_resize(int h, int w, int factor, int64_t min_pixels, int64_t max_pixels, int *out_h, int *out_w,
                      struct mode_err *err);

/* Resamples src into a new image of w x h (see above). */
int mode_image_resize(const struct mode_rgb *src, int w, int h, struct mode_rgb *dst, struct mode_err *err);

/* EXIF orientation (1..8) of an EXIF block (starting with "Exif\0\0" or with the TIFF header);
 * 1 when absent or unreadable. Exposed for tests. */
int mode_exif_orientation(const uint8_t *p, size_t n);

#endif
