/* test_convert — mode_convert_cuda against its C reference mode_convert_ref on random inputs:
 * every bf16 and f16 bit pattern (inf, NaN and subnormals included), odd and aligned lengths,
 * an empty input. The conversion is exact, so the tolerance is zero: results must be bitwise
 * equal (NaN compared as NaN). Skips where no CUDA device is present. */
#include "../../kernels/mode_cuda.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int compare(enum mode_dtype t, const void *src, size_t n, const char *what)
{
    struct mode_err err = {0};
    size_t es = mode_dtype_size(t);
    float *ref = malloc(n * sizeof *ref + 4), *got = malloc(n * sizeof *got + 4);
    void *d_src = NULL, *d_dst = NULL;
    int rc = mode_convert_ref(t, src, n, ref);
    if (!rc) rc = mode_cuda_malloc(&d_src, n * es, &err);
    if (!rc) rc = mode_cuda_malloc(&d_dst, n * sizeof(float), &err);
    if (!rc) rc = mode_cuda_upload(d_src, src, n * es, &err);
    if (!rc) rc = mode_convert_cuda(t, d_src, n, d_dst, NULL, &err);
    if (!rc) rc = mode_cuda_sync(&err);
    if (!rc) rc = mode_cuda_download(got, d_dst, n * sizeof(float), &err);
    if (rc) diag("%s", err.msg);
    size_t bad = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        int eq = isnan(ref[i]) ? isnan(got[i]) : memcmp(&ref[i], &got[i], 4) == 0;
        if (!eq && bad++ < 5) diag("%s: element %zu: got %a, want %a", what, i, (double)got[i], (double)ref[i]);
    }
    mode_cuda_free(d_src);
    mode_cuda_free(d_dst);
    free(ref);
    free(got);
    return ok(!rc && bad == 0, "%s: %zu elements bitwise equal to the reference", what, n);
}

int main(void)
{
    struct mode_err err = {0};
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    char desc[256];
    if (!mode_cuda_describe(desc, sizeof desc, &err)) diag("device: %s", desc);
    tap_seed(7);
    uint16_t *all = malloc(65536 * sizeof *all);
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    compare(MODE_BF16, all, 65536, "bf16, every bit pattern");
    compare(MODE_F16, all, 65536, "f16, every bit pattern");
    size_t sizes[] = {1, 3, 255, 256, 257, 100003, (size_t)1 << 22};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t n = sizes[k];
        uint16_t *h = malloc(n * sizeof *h);
        float *f = malloc(n * sizeof *f);
        for (size_t i = 0; i < n; i++) {
            h[i] = (uint16_t)tap_rand();
            f[i] = (float)((double)(int64_t)tap_rand() / 9.2e18);
        }
        char what[64];
        snprintf(what, sizeof what, "bf16 n=%zu", n);
        compare(MODE_BF16, h, n, what);
        snprintf(what, sizeof what, "f16 n=%zu", n);
        compare(MODE_F16, h, n, what);
        snprintf(what, sizeof what, "f32 n=%zu", n);
        compare(MODE_F32, f, n, what);
        free(h);
        free(f);
    }
    ok(mode_convert_cuda(MODE_F32, NULL, 0, NULL, NULL, &err) == MODE_OK, "an empty input is a no-op");
    ok(mode_convert_cuda(MODE_I32, all, 1, (float *)all, NULL, &err) == MODE_EUSAGE, "i32 is refused");
    free(all);
    return tap_done();
}
