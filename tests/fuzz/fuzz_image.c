/* fuzz_image — lib/image.c: PNG and JPEG decoding from any bytes, and, when an image decodes,
 * smart_resize and resampling to a small size (both directions). */
#include "../../lib/image.h"
#include "fuzz.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mode_rgb img, rs;
    struct mode_err err;
    if (mode_rgb_decode(data, size, "fuzz", &img, &err)) return 0;
    int h, w;
    if (!mode_smart_resize(img.height, img.width, 32, 1024, 16384, &h, &w, &err) && !mode_image_resize(&img, w, h, &rs, &err))
        mode_rgb_free(&rs);
    if (!mode_image_resize(&img, 1 + img.width % 7, 1 + img.height % 5, &rs, &err)) mode_rgb_free(&rs);
    mode_rgb_free(&img);
    return 0;
}
