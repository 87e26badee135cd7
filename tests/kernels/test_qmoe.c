/* test_qmoe — mode_qmoe_decode_cuda against its C reference mode_qmoe_ref on random packed
 * experts of mixed widths (2, 3, 4, 8 bits and bf16 in one layer), random activations and routing, for
 * 1, 3 and 17 tokens, two group sizes; an unused expert and an expert every token selects.
 * Tolerance: ‖gpu − ref‖ / ‖ref‖ ≤ 1e-5 (f32 sums in another order against a double-accumulated
 * reference over at most 2048 terms). The output is poisoned with NaN before each run so that an
 * unwritten element fails. Skipped without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/qmoe.h"
#include "qmoe_cases.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    struct mode_err err;
    if (!mode_cuda_built()) tap_skip_all("built without CUDA");
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    const int widths[] = {2, 3, 4, 8, 16, 3};
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
            make_routing(T, k, E, ex, w); /* expert 0 in every token, the last expert in none */
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
            ok(!rc && !nan && rel <= 1e-5, "%d experts of widths 2/3/4/8/16, D %d, I %d, groups %d/%d, top-%d, %d tokens: rel err %.2e%s%s", E, D, I,
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
