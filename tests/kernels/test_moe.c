/* test_moe — the MoE kernels for many tokens (kernels/moe.cu) against their C references:
 * mode_moe_bf16_cuda against mode_moe_dense_ref (1, 5, 300 tokens; expert 0 in every token, the
 * last in none); mode_qmoe_dequant_cuda against the CPU's dequantisation rounded to bf16 (every
 * element equal: the same f16 scale times the same level difference in f32, rounded to nearest
 * even); the prefill path (dequantise, then the bf16 layer) against mode_qmoe_ref on mixed
 * widths 2/3/4/8/16; mode_cuda_bench on it, graphs included.
 * Tolerance of the bf16 paths: ‖gpu − ref‖ / ‖ref‖ ≤ 1e-2 (bf16 activations: 2⁻⁹ relative each,
 * against an f32/double reference). Outputs poisoned with NaN. Skipped without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/moe.h"
#include "../../lib/qmoe.h"
#include "qmoe_cases.h"

#include <math.h>
#include <stdio.h>

static double rel_err(const float *got, const float *ref, size_t n, int *bad)
{
    double num = 0, den = 0;
    *bad = 0;
    for (size_t i = 0; i < n; i++) {
        *bad += !isfinite(got[i]);
        num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]), den += (double)ref[i] * ref[i];
    }
    return sqrt(num / den);
}

struct run_ctx {
    struct mode_moe_dense L;
    struct mode_moe_route r;
    const float *x;
    void *work;
    float *out;
};

static int run_bf16(void *vctx, int v, void *stream, struct mode_err *err)
{
    (void)v;
    struct run_ctx *c = vctx;
    return mode_moe_bf16_cuda(&c->L, &c->r, c->x, c->work, c->out, stream, err);
}

/* routing, x, out on the device for T tokens; ref from `reference` */
static void check_layer(const char *what, const struct mode_moe_dense *dl, int E, int D, int T, int k, const struct mode_qmoe_layer *hp,
                        const struct host_dense *hd, int bench)
{
    struct mode_err err = {0};
    int32_t *ex = malloc(sizeof *ex * (size_t)T * k), *order = malloc(sizeof *order * (size_t)T * k), *slot = malloc(sizeof *slot * (size_t)T * k);
    float *w = malloc(sizeof *w * (size_t)T * k), *x = malloc(sizeof *x * (size_t)T * D), *ref = malloc(sizeof *ref * (size_t)T * D),
          *got = malloc(sizeof *got * (size_t)T * D);
    int64_t *start = malloc(sizeof *start * (size_t)(E + 1));
    for (int i = 0; i < T * D; i++) x[i] = (float)(urand() * 2 - 1), got[i] = NAN;
    make_routing(T, k, E, ex, w);
    int rc = mode_moe_route_sort(ex, T, k, E, order, slot, start, &err);
    if (!rc) rc = hd ? mode_moe_dense_ref(&hd->L, T, k, x, ex, w, ref, &err) : mode_qmoe_ref(hp, T, k, x, ex, w, ref, &err);
    void *dorder = NULL, *dslot = NULL, *dw = NULL, *dx = NULL, *dout = NULL, *work = NULL;
    if (!rc) rc = upload(&dorder, order, sizeof *order * (size_t)T * k, &err) || upload(&dslot, slot, sizeof *slot * (size_t)T * k, &err) ||
                  upload(&dw, w, sizeof *w * (size_t)T * k, &err) || upload(&dx, x, sizeof *x * (size_t)T * D, &err) ||
                  upload(&dout, got, sizeof *got * (size_t)T * D, &err) || mode_cuda_malloc(&work, mode_moe_work_bytes(dl, T, k), &err);
    struct run_ctx c = {*dl, {T, k, dorder, dslot, dw, start}, dx, work, dout};
    if (!rc) rc = run_bf16(&c, 0, NULL, &err);
    if (!rc) rc = mode_cuda_sync(&err);
    if (!rc) rc = mode_cuda_download(got, dout, sizeof *got * (size_t)T * D, &err);
    int bad = 0;
    const double rel = rc ? 1 : rel_err(got, ref, (size_t)T * D, &bad);
    ok(!rc && !bad && rel <= 1e-2, "%s, %d tokens top-%d: rel err %.2e%s %s", what, T, k, rel, bad ? " (NaN: unwritten)" : "", rc ? err.msg : "");
    if (bench && !rc) {
        double us = 0, gus = 0;
        rc = mode_cuda_bench(run_bf16, &c, 1, 20, &us, &gus, &err);
        ok(!rc && us > 0 && gus > 0, "mode_cuda_bench: %.1f us, %.1f us from a graph %s", us, gus, rc ? err.msg : "");
    }
    mode_cuda_free(dorder), mode_cuda_free(dslot), mode_cuda_free(dw), mode_cuda_free(dx), mode_cuda_free(dout), mode_cuda_free(work);
    free(ex), free(order), free(slot), free(w), free(x), free(ref), free(got), free(start);
}

int main(void)
{
    struct mode_err err = {0};
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    enum { E = 8, D = 256, I = 128 };
    /* the dense bf16 layer */
    struct host_dense hd;
    make_dense(&hd, E, D, I);
    void *dgu = NULL, *ddn = NULL;
    if (upload(&dgu, hd.gu, sizeof *hd.gu * (size_t)E * D * 2 * I, &err) || upload(&ddn, hd.dn, sizeof *hd.dn * (size_t)E * I * D, &err)) {
        ok(0, "upload: %s", err.msg);
        return tap_done();
    }
    struct mode_moe_dense dl = {E, D, I, dgu, ddn};
    const int tokens[3] = {1, 5, 300};
    for (int i = 0; i < 3; i++) check_layer("dense bf16 layer", &dl, E, D, tokens[i], 2, NULL, &hd, i == 2);

    /* a packed layer of mixed widths: dequantised on the device = on the CPU, then the prefill path */
    struct host_layer hp;
    static const int widths[6] = {2, 3, 4, 8, 16, 3};
    make_layer(&hp, E, D, I, 64, 32, widths, 6);
    void *dqw, *dqz, *dsc, *doff, *dbits;
    if (upload(&dqw, hp.qw, hp.n_qw * 4, &err) || upload(&dqz, hp.qz, hp.n_qz * 4, &err) || upload(&dsc, hp.sc, hp.n_sc * 2, &err) ||
        upload(&doff, hp.off, (size_t)E * 9 * 8, &err) || upload(&dbits, hp.bits, (size_t)E, &err)) {
        ok(0, "upload: %s", err.msg);
        return tap_done();
    }
    struct mode_qmoe_layer dp = hp.L;
    dp.qweight = dqw, dp.qzeros = dqz, dp.scales = dsc, dp.off = doff, dp.bits = dbits;
    const size_t ngu = (size_t)E * D * 2 * I, ndn = (size_t)E * I * D;
    uint16_t *gu = malloc(2 * ngu), *dn = malloc(2 * ndn);
    memset(gu, 0xff, 2 * ngu), memset(dn, 0xff, 2 * ndn); /* NaN patterns */
    void *qgu = NULL, *qdn = NULL;
    int rc = upload(&qgu, gu, 2 * ngu, &err) || upload(&qdn, dn, 2 * ndn, &err);
    if (!rc) rc = mode_qmoe_dequant_cuda(&dp, qgu, qdn, NULL, &err);
    if (!rc) rc = mode_cuda_download(gu, qgu, 2 * ngu, &err);
    if (!rc) rc = mode_cuda_download(dn, qdn, 2 * ndn, &err);
    /* the CPU's: mode_qmoe_ref's dequantisation is internal; form it with mode_gptq_dequant here */
    int64_t same = 0, total = 0;
    float *W = malloc(sizeof *W * (size_t)D * I);
    int32_t *gidx = malloc(sizeof *gidx * (size_t)D);
    for (int e = 0; !rc && e < E; e++)
        for (int p = 0; p < 3; p++) {
            const int64_t n = p == 2 ? D : I, k = p == 2 ? I : D, g = p == 2 ? 32 : 64;
            const int64_t *off = hp.off + e * 9 + p * 3;
            if (hp.bits[e] == 16) {
                const uint32_t *wq = hp.qw + off[0];
                for (int64_t r = 0; r < n; r++)
                    for (int64_t c = 0; c < k; c++) W[r * k + c] = mode_bf16_to_f32((uint16_t)(wq[(c / 2) * n + r] >> (16 * (c % 2))));
            } else {
                for (int64_t c = 0; c < k; c++) gidx[c] = (int32_t)(c / g);
                mode_gptq_dequant((const int32_t *)hp.qw + off[0], (const int32_t *)hp.qz + off[1], hp.sc + off[2], gidx, n, k, k / g, hp.bits[e], false, W);
            }
            for (int64_t r = 0; r < n; r++)
                for (int64_t c = 0; c < k; c++) {
                    const uint16_t want = mode_f32_to_bf16(W[r * k + c]);
                    const uint16_t have = p == 2 ? dn[(size_t)e * I * D + (size_t)c * D + r] : gu[(size_t)e * D * 2 * I + (size_t)c * 2 * I + (p ? I : 0) + r];
                    same += want == have, total++;
                }
        }
    ok(!rc && same == total, "mode_qmoe_dequant_cuda: %lld of %lld bf16 weights equal the CPU's (widths 2/3/4/8/16) %s", (long long)same, (long long)total,
       rc ? err.msg : "");
    struct mode_moe_dense ql = {E, D, I, qgu, qdn};
    for (int i = 0; i < 3; i++) check_layer("prefill from packed (dequantised, then bf16)", &ql, E, D, tokens[i], 2, &hp.L, NULL, 0);
    mode_cuda_free(dgu), mode_cuda_free(ddn), mode_cuda_free(dqw), mode_cuda_free(dqz), mode_cuda_free(dsc), mode_cuda_free(doff),
        mode_cuda_free(dbits), mode_cuda_free(qgu), mode_cuda_free(qdn);
    free(gu), free(dn), free(W), free(gidx);
    free_dense(&hd), free_layer(&hp);
    return tap_done();
}
