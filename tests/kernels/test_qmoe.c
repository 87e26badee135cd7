/* test_qmoe — mode_qmoe_decode_cuda against its C reference mode_qmoe_ref on random packed
 * experts of mixed widths (2, 3, 4, 8 bits in one layer), random activations and routing, for
 * 1, 3 and 17 tokens, two group sizes; an unused expert and an expert every token selects.
 * Tolerance: ‖gpu − ref‖ / ‖ref‖ ≤ 1e-5 (f32 sums in another order against a double-accumulated
 * reference over at most 2048 terms). The output is poisoned with NaN before each run so that an
 * unwritten element fails. Skipped without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/gptqpack.h"
#include "../../lib/qmoe.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double urand(void) { return (double)(tap_rand() >> 11) / 9007199254740992.0; }

struct host_layer {
    struct mode_qmoe_layer L;
    uint32_t *qw, *qz;
    uint16_t *sc;
    int64_t *off;
    uint8_t *bits;
    size_t n_qw, n_qz, n_sc;
};

/* random layer: E experts, widths cycling through widths[] */
static void make_layer(struct host_layer *h, int E, int D, int I, int gd, int gi, const int *widths, int nw)
{
    memset(h, 0, sizeof *h);
    h->off = calloc((size_t)E * 9, sizeof *h->off);
    h->bits = malloc((size_t)E);
    for (int e = 0; e < E; e++) h->bits[e] = (uint8_t)widths[e % nw];
    for (int pass = 0; pass < 2; pass++) {
        size_t qw = 0, qz = 0, sc = 0;
        for (int e = 0; e < E; e++)
            for (int p = 0; p < 3; p++) {
                const int64_t n = p == 2 ? D : I, k = p == 2 ? I : D, g = p == 2 ? gi : gd, G = k / g, b = h->bits[e];
                if (pass) {
                    int64_t *o = h->off + e * 9 + p * 3;
                    o[0] = (int64_t)qw, o[1] = (int64_t)qz, o[2] = (int64_t)sc;
                    uint8_t *q = malloc((size_t)(n * k));
                    float *z = malloc(sizeof *z * (size_t)(n * G));
                    for (int64_t i = 0; i < n * k; i++) q[i] = (uint8_t)(tap_rand() % (1u << b));
                    for (int64_t i = 0; i < n * G; i++) z[i] = (float)(tap_rand() % (1u << b));
                    mode_gptq_pack_qweight(q, n, k, (int)b, (int32_t *)h->qw + qw);
                    mode_gptq_pack_qzeros(z, n, G, (int)b, false, (int32_t *)h->qz + qz);
                    for (int64_t gg = 0; gg < G; gg++)
                        for (int64_t r = 0; r < n; r++) h->sc[sc + gg * n + r] = mode_f32_to_f16((float)(0.002 + 0.02 * urand()) / (float)(1 << b));
                    free(q), free(z);
                }
                qw += (size_t)(k * b / 32 * n), qz += (size_t)(G * n * b / 32), sc += (size_t)(G * n);
            }
        if (!pass) {
            h->n_qw = qw, h->n_qz = qz, h->n_sc = sc;
            h->qw = calloc(qw, 4), h->qz = calloc(qz, 4), h->sc = calloc(sc, 2);
        }
    }
    h->L = (struct mode_qmoe_layer){E, D, I, gd, gi, h->qw, h->qz, h->sc, h->off, h->bits};
}

static void free_layer(struct host_layer *h) { free(h->qw), free(h->qz), free(h->sc), free(h->off), free(h->bits); }

static int upload(void **d, const void *h, size_t n, struct mode_err *err)
{
    int rc = mode_cuda_malloc(d, n ? n : 1, err);
    return rc ? rc : mode_cuda_upload(*d, h, n, err);
}

int main(void)
{
    struct mode_err err;
    if (!mode_cuda_built()) tap_skip_all("built without CUDA");
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    const int widths[] = {2, 3, 4, 8, 4, 3};
    const struct {
        int E, D, I, gd, gi, k;
    } shapes[] = {{6, 256, 128, 128, 128, 2}, {8, 512, 192, 64, 96, 4}};
    for (int si = 0; si < 2; si++) {
        struct host_layer h;
        make_layer(&h, shapes[si].E, shapes[si].D, shapes[si].I, shapes[si].gd, shapes[si].gi, widths, 6);
        void *dqw, *dqz, *dsc, *doff, *dbits;
        if (upload(&dqw, h.qw, h.n_qw * 4, &err) || upload(&dqz, h.qz, h.n_qz * 4, &err) || upload(&dsc, h.sc, h.n_sc * 2, &err) ||
            upload(&doff, h.off, (size_t)h.L.n_expert * 9 * 8, &err) || upload(&dbits, h.bits, (size_t)h.L.n_expert, &err)) {
            ok(0, "upload: %s", err.msg);
            break;
        }
        struct mode_qmoe_layer dl = h.L;
        dl.qweight = dqw, dl.qzeros = dqz, dl.scales = dsc, dl.off = doff, dl.bits = dbits;
        const int tokens[] = {1, 3, 17};
        for (int ti = 0; ti < 3; ti++) {
            const int T = tokens[ti], k = shapes[si].k, D = h.L.d, I = h.L.i, E = h.L.n_expert;
            float *x = malloc(sizeof *x * (size_t)T * D), *w = malloc(sizeof *w * (size_t)T * k), *ref = malloc(sizeof *ref * (size_t)T * D),
                  *got = malloc(sizeof *got * (size_t)T * D);
            int32_t *ex = malloc(sizeof *ex * (size_t)T * k);
            for (int i = 0; i < T * D; i++) x[i] = (float)(urand() * 2 - 1);
            for (int t = 0; t < T; t++)
                for (int j = 0; j < k; j++) {
                    /* expert 0 in every token, the last expert in none */
                    ex[t * k + j] = j == 0 ? 0 : 1 + (int)((t * 7 + j * 3 + (int)(tap_rand() % 5)) % (E - 2));
                    w[t * k + j] = (float)(0.1 + urand());
                }
            void *dx, *dex, *dw, *dact, *dout;
            for (int i = 0; i < T * D; i++) got[i] = NAN;
            int rc = upload(&dx, x, sizeof *x * (size_t)T * D, &err) || upload(&dex, ex, sizeof *ex * (size_t)T * k, &err) ||
                     upload(&dw, w, sizeof *w * (size_t)T * k, &err) || mode_cuda_malloc(&dact, sizeof(float) * (size_t)T * k * I, &err) ||
                     upload(&dout, got, sizeof *got * (size_t)T * D, &err);
            if (!rc) rc = mode_qmoe_decode_cuda(&dl, T, k, dx, dex, dw, dact, dout, NULL, &err);
            if (!rc) rc = mode_cuda_download(got, dout, sizeof *got * (size_t)T * D, &err);
            mode_qmoe_ref(&h.L, T, k, x, ex, w, ref, &err);
            double num = 0, den = 0;
            int nan = 0;
            for (int i = 0; i < T * D; i++) {
                nan += !isfinite(got[i]);
                num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
                den += (double)ref[i] * ref[i];
            }
            const double rel = sqrt(num / den);
            ok(!rc && !nan && rel <= 1e-5, "%d experts of widths 2/3/4/8, D %d, I %d, groups %d/%d, top-%d, %d tokens: rel err %.2e%s%s", E, D, I,
               shapes[si].gd, shapes[si].gi, k, T, rel, nan ? " (unwritten or NaN elements)" : "", rc ? err.msg : "");
            mode_cuda_free(dx), mode_cuda_free(dex), mode_cuda_free(dw), mode_cuda_free(dact), mode_cuda_free(dout);
            free(x), free(w), free(ref), free(got), free(ex);
        }
        mode_cuda_free(dqw), mode_cuda_free(dqz), mode_cuda_free(dsc), mode_cuda_free(doff), mode_cuda_free(dbits);
        free_layer(&h);
    }
    struct mode_qmoe_layer bad = {4, 100, 64, 100, 64, NULL, NULL, NULL, NULL, NULL};
    ok(mode_qmoe_decode_cuda(&bad, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, &err) == MODE_EUSAGE, "a hidden size of 100 is refused");
    return tap_done();
}
