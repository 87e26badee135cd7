/* test_qmoe — mode_qmoe_decode_cuda against its C reference mode_qmoe_ref on random packed
 * experts of mixed widths (2, 3, 4, 8 bits and bf16 in one layer), random activations and routing, for
 * 1, 3, 8, 17 and 64 tokens, three shapes (the third with more than 64 chunks of K, so that v5's
 * slots loop, and 23-chunk rows as Qwen3-VL's 768 has 24); an unused expert and an expert every token
 * selects (more pairs than a v5 pass holds); every case under decode versions 3 and 5, and v5 on
 * words whose offsets are not multiples of 4 (its word-load path). Tolerance: ‖gpu − ref‖ / ‖ref‖ ≤
 * 1e-5 (f32 sums in another order against a double-accumulated reference over at most 2304 terms).
 * The output is poisoned with NaN before each run so that an unwritten element fails. Skipped
 * without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/qmoe.h"
#include "qmoe_cases.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* f32 accumulation (GPU) against double (reference): a few ulps of f32 relative to the norm */
#define REL_TOL 1e-5

struct dev_layer {
    struct mode_qmoe_layer L;
    void *qw, *qz, *sc, *off, *bits;
};

/* h's arrays on the device; shift > 0 puts `shift` words before the words and adds it to every
 * qweight offset (misaligned for uint4 loads when not a multiple of 4) */
static int dev_upload(struct dev_layer *d, const struct host_layer *h, int shift, struct mode_err *err)
{
    memset(d, 0, sizeof *d);
    const int E = h->L.n_expert;
    uint32_t *qw = calloc(h->n_qw + (size_t)shift, sizeof *qw);
    int64_t *off = malloc(sizeof *off * (size_t)E * 9);
    if (!qw || !off) {
        free(qw), free(off);
        return mode_err_set(err, MODE_EUNAVAILABLE, "out of memory");
    }
    memcpy(qw + shift, h->qw, h->n_qw * 4);
    memcpy(off, h->off, sizeof *off * (size_t)E * 9);
    for (int e = 0; e < E; e++)
        for (int p = 0; p < 3; p++) off[e * 9 + p * 3] += shift;
    int rc = upload(&d->qw, qw, (h->n_qw + (size_t)shift) * 4, err) || upload(&d->qz, h->qz, h->n_qz * 4, err) ||
             upload(&d->sc, h->sc, h->n_sc * 2, err) || upload(&d->off, off, sizeof *off * (size_t)E * 9, err) ||
             upload(&d->bits, h->bits, (size_t)E, err);
    free(qw), free(off);
    d->L = h->L;
    d->L.qweight = d->qw, d->L.qzeros = d->qz, d->L.scales = d->sc, d->L.off = d->off, d->L.bits = d->bits;
    return rc ? MODE_EUNAVAILABLE : MODE_OK;
}

static void dev_free(struct dev_layer *d)
{
    mode_cuda_free(d->qw), mode_cuda_free(d->qz), mode_cuda_free(d->sc), mode_cuda_free(d->off), mode_cuda_free(d->bits);
}

/* one run of the decode layer under `version`, compared with ref; returns 1 when it passed */
static int check(const struct dev_layer *d, int version, int T, int k, const void *dx, const void *dex, const void *dw, void *dact,
                 const float *ref, const char *what)
{
    struct mode_err err = {0};
    const int D = d->L.d;
    float *got = malloc(sizeof *got * (size_t)T * D);
    for (int i = 0; i < T * D; i++) got[i] = NAN;
    void *dout = NULL;
    mode_qmoe_decode_version(version);
    int rc = upload(&dout, got, sizeof *got * (size_t)T * D, &err);
    if (!rc) rc = mode_qmoe_decode_cuda(&d->L, T, k, dx, dex, dw, dact, dout, NULL, &err);
    if (!rc) rc = mode_cuda_download(got, dout, sizeof *got * (size_t)T * D, &err);
    double num = 0, den = 0;
    int nan = 0;
    for (int i = 0; i < T * D; i++) {
        nan += !isfinite(got[i]);
        num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    const double rel = sqrt(num / den);
    const int pass = !rc && !nan && rel <= REL_TOL;
    ok(pass, "v%d, %s, %d tokens: rel err %.2e%s%s", version, what, T, rel, nan ? " (unwritten or NaN elements)" : "", rc ? err.msg : "");
    mode_cuda_free(dout);
    free(got);
    return pass;
}

int main(void)
{
    struct mode_err err;
    if (!mode_cuda_built()) tap_skip_all("built without CUDA");
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    is_int(mode_qmoe_decode_version(5), 3, "the decode version is 3 by default");
    is_int(mode_qmoe_decode_version(4), -1, "version 4 is refused");
    is_int(mode_qmoe_decode_version(3), 5, "and left 5 as it was");
    const int widths[] = {2, 3, 4, 8, 16, 3};
    const struct {
        int E, D, I, gd, gi, k;
    } shapes[] = {{6, 256, 128, 128, 128, 2}, {8, 512, 192, 64, 96, 4}, {10, 2304, 736, 128, 32, 8}};
    const int tokens[] = {1, 3, 8, 17, 64}; /* the third shape's reference: ~15 ms a pair, 10 s in all */
    for (int si = 0; si < 3; si++) {
        struct host_layer h;
        make_layer(&h, shapes[si].E, shapes[si].D, shapes[si].I, shapes[si].gd, shapes[si].gi, widths, 6);
        struct dev_layer d, dm;
        if (dev_upload(&d, &h, 0, &err) || (si == 0 && dev_upload(&dm, &h, 1, &err))) {
            ok(0, "upload: %s", err.msg);
            break;
        }
        char what[160];
        snprintf(what, sizeof what, "%d experts of widths 2/3/4/8/16, D %d, I %d, groups %d/%d, top-%d", h.L.n_expert, h.L.d, h.L.i,
                 shapes[si].gd, shapes[si].gi, shapes[si].k);
        for (int ti = 0; ti < 5; ti++) {
            const int T = tokens[ti], k = shapes[si].k, D = h.L.d, I = h.L.i, E = h.L.n_expert;
            float *x = malloc(sizeof *x * (size_t)T * D), *w = malloc(sizeof *w * (size_t)T * k), *ref = malloc(sizeof *ref * (size_t)T * D);
            int32_t *ex = malloc(sizeof *ex * (size_t)T * k);
            for (int i = 0; i < T * D; i++) x[i] = (float)(urand() * 2 - 1);
            make_routing(T, k, E, ex, w); /* expert 0 in every token, the last expert in none */
            mode_qmoe_ref(&h.L, T, k, x, ex, w, ref, &err);
            void *dx = NULL, *dex = NULL, *dw = NULL, *dact = NULL;
            if (upload(&dx, x, sizeof *x * (size_t)T * D, &err) || upload(&dex, ex, sizeof *ex * (size_t)T * k, &err) ||
                upload(&dw, w, sizeof *w * (size_t)T * k, &err) || mode_cuda_malloc(&dact, sizeof(float) * (size_t)T * k * I, &err)) {
                ok(0, "upload: %s", err.msg);
            } else {
                check(&d, 3, T, k, dx, dex, dw, dact, ref, what);
                check(&d, 5, T, k, dx, dex, dw, dact, ref, what);
                if (si == 0 && (T == 3 || T == 17)) check(&dm, 5, T, k, dx, dex, dw, dact, ref, "words at offsets 1 mod 4 (word loads)");
            }
            mode_cuda_free(dx), mode_cuda_free(dex), mode_cuda_free(dw), mode_cuda_free(dact);
            free(x), free(w), free(ref), free(ex);
        }
        dev_free(&d);
        if (si == 0) dev_free(&dm);
        free_layer(&h);
    }
    mode_qmoe_decode_version(3);
    struct mode_qmoe_layer bad = {4, 100, 64, 100, 64, NULL, NULL, NULL, NULL, NULL};
    ok(mode_qmoe_decode_cuda(&bad, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, &err) == MODE_EUSAGE, "a hidden size of 100 is refused");
    mode_qmoe_decode_version(5);
    ok(mode_qmoe_decode_cuda(&bad, 1, 1, NULL, NULL, NULL, NULL, NULL, NULL, &err) == MODE_EUSAGE, "and under v5 too");
    mode_qmoe_decode_version(3);
    return tap_done();
}
