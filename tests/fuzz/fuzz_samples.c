/* fuzz_samples — a samples record (lib/samples.c) after a fixed valid header, read through the
 * stream reader: parsed, checked against the tiny reference model's config, and its images'
 * pixels turned into patches. */
#include "../../lib/samples.h"
#include "../../lib/stream.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct mode_config cfg;
static struct mode_preproc pre;
static struct mode_mp header;

struct src {
    const uint8_t *h, *p;
    size_t hn, n, off;
};

static ssize_t src_read(void *ctx, void *buf, size_t cap)
{
    struct src *s = ctx;
    size_t total = s->hn + s->n, k = total - s->off < cap ? total - s->off : cap;
    for (size_t i = 0; i < k; i++, s->off++) ((uint8_t *)buf)[i] = s->off < s->hn ? s->h[s->off] : s->p[s->off - s->hn];
    return (ssize_t)k;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *root = getenv("MODE_FIXTURES");
    char path[4096];
    struct mode_err err;
    snprintf(path, sizeof path, "%s/reference/tiny-random-qwen3vlmoe/config.json", root ? root : "tests/fixtures");
    if (mode_config_load(&cfg, path, &err)) {
        fprintf(stderr, "fuzz_samples: %s\n", err.msg);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/reference/tiny-random-qwen3vlmoe/preprocessor_config.json", root ? root : "tests/fixtures");
    if (mode_preproc_load(&pre, path, &err)) exit(1);
    mode_mp_init(&header);
    mode_stream_header_begin(&header, "samples", "fuzz");
    mode_mp_close(&header);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct src s = {(const uint8_t *)header.buf, data, header.len, size, 0};
    struct mode_stream_reader r;
    struct mode_err err;
    if (mode_stream_reader_init_fn(&r, src_read, &s, "fuzz", &err)) return 0;
    const msgpack_object *o;
    if (!mode_stream_read_header(&r, "samples", &err) && !mode_stream_next(&r, &o, &err) && o) {
        struct mode_rec rec = {o, "fuzz", "record"};
        struct mode_sample smp;
        if (!mode_sample_parse(&rec, &smp, &err)) {
            if (!mode_sample_check(&smp, &cfg, &rec, &err))
                for (int i = 0; i < smp.n_images; i++) {
                    int64_t rows, cols;
                    mode_image_patch_dims(&smp.images[i], &cfg.vision, &rows, &cols);
                    if (rows * cols > (1 << 22)) continue;
                    float *out = malloc((size_t)(rows * cols) * sizeof *out);
                    mode_image_pixel_values(&smp.images[i], &cfg.vision, &pre, out, &err);
                    free(out);
                }
            mode_sample_free(&smp);
        }
    }
    mode_stream_reader_free(&r);
    return 0;
}
