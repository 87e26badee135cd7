/* dequant — every GPTQ-packed routed-expert projection of a checkpoint, dequantised as mode reads
 * it (mode_model_qexpert_f32, what mode-eval's CPU runtime runs), rounded to f16: the "ours" side
 * of `make compat`'s weight comparison with GPTQModel (tests/compat/compat.py).
 *
 *   dequant DIR OUT      writes OUT: the f16 values (little endian) of each projection, (n, k)
 *                        row-major in nn.Linear orientation (out × in), one after the other;
 *                        prints one JSON line per projection on stdout:
 *                        {"name":"model.language_model.layers.L.mlp.experts.E.gate_proj","bits":B,
 *                         "shape":[n,k],"offset":BYTES}
 *
 * Experts left at 16 bits (stored as they were) are not packed and not listed. Exit codes as
 * mode's programs: 0, 64 usage, 65 bad checkpoint, 66 missing, 73 cannot create OUT, 74 write.
 */
#include "../../lib/model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const proj_name[3] = {"gate_proj", "up_proj", "down_proj"};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fputs("usage: dequant DIR OUT\n", stderr);
        return MODE_EUSAGE;
    }
    struct mode_err err = {0};
    struct mode_model m;
    if (mode_model_open(&m, argv[1], &err)) {
        fprintf(stderr, "dequant: %s\n", err.msg);
        return err.code;
    }
    if (!m.packed) {
        fprintf(stderr, "dequant: %s: no packed experts (no quantization_config)\n", argv[1]);
        mode_model_close(&m);
        return MODE_EDATA;
    }
    FILE *out = fopen(argv[2], "wb");
    if (!out) {
        fprintf(stderr, "dequant: %s: %s\n", argv[2], strerror(errno));
        mode_model_close(&m);
        return MODE_ECANTCREAT;
    }
    const struct mode_text_config *t = &m.cfg.text;
    int rc = MODE_OK;
    uint64_t offset = 0;
    for (int l = 0; l < t->n_layer && !rc; l++) {
        if (!t->is_moe[l] || !m.layers[l].qexp) continue;
        for (int e = 0; e < t->n_expert && !rc; e++)
            for (int p = 0; p < 3 && !rc; p++) {
                const struct mode_qproj *q = &m.layers[l].qexp[(size_t)e * 3 + (size_t)p];
                if (q->weight) continue; /* a 16-bit expert, stored as it was */
                const size_t n = (size_t)(q->n * q->k);
                float *w = malloc(n * sizeof *w);
                uint16_t *h = malloc(n * sizeof *h);
                if (!w || !h) rc = mode_err_oom(&err, n * sizeof *w, "dequantising a projection");
                else rc = mode_model_qexpert_f32(&m, l, e, (enum mode_proj)p, w, &err);
                if (!rc) {
                    for (size_t i = 0; i < n; i++) h[i] = mode_f32_to_f16(w[i]);
                    if (fwrite(h, sizeof *h, n, out) != n) rc = mode_err_set(&err, MODE_EIO, "%s: %s", argv[2], strerror(errno));
                }
                if (!rc && printf("{\"name\":\"model.language_model.layers.%d.mlp.experts.%d.%s\",\"bits\":%d,\"shape\":[%lld,%lld],"
                                  "\"offset\":%llu}\n",
                                  l, e, proj_name[p], q->bits, (long long)q->n, (long long)q->k, (unsigned long long)offset) < 0)
                    rc = mode_err_set(&err, MODE_EIO, "standard output: %s", strerror(errno));
                offset += n * sizeof *h;
                free(w), free(h);
            }
    }
    if (fclose(out) && !rc) rc = mode_err_set(&err, MODE_EIO, "%s: %s", argv[2], strerror(errno));
    if (fclose(stdout) && !rc) rc = mode_err_set(&err, MODE_EIO, "standard output: %s", strerror(errno));
    if (rc) fprintf(stderr, "dequant: %s\n", err.msg);
    mode_model_close(&m);
    return rc;
}
