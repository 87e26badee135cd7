/* test_quant — RTN and GPTQ against the float64 reference (tests/fixtures/big/gptq-golden, from
 * the published GPTQ algorithm): for every case (bits 2, 3, 4, 8 x group 128, 64 x asym, sym) at
 * least 99% of elements on exactly the reference's level, none more than one level away, and the
 * relative output error within 1e-3 (relative) of the reference's. Then the edges: group sizes,
 * all-zero rows and columns, constant rows, huge and tiny values never give a NaN or infinite
 * scale; act-order; the f32 entry points; the Hessian accumulator. */
#include "../../lib/quant.h"
#include "../../lib/safetensors.h"
#include "tap.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { R = 48, C = 256 };

/* sqrt(tr(dW H dWᵀ) / tr(W H Wᵀ)) over the rows not skipped */
static double rel_out_err_rows(const double *W, const double *D, const double *H, const bool *skip)
{
    double num = 0, den = 0;
    for (int r = 0; r < R; r++)
        for (int i = 0; i < C && !(skip && skip[r]); i++) {
            double a = 0, b = 0;
            for (int j = 0; j < C; j++) {
                a += H[i * C + j] * (D[r * C + j] - W[r * C + j]);
                b += H[i * C + j] * W[r * C + j];
            }
            num += (D[r * C + i] - W[r * C + i]) * a;
            den += W[r * C + i] * b;
        }
    return sqrt(num / den);
}

static double rel_out_err(const double *W, const double *D, const double *H) { return rel_out_err_rows(W, D, H, NULL); }

static const struct mode_st_tensor *need(const struct mode_st_file *f, const char *name)
{
    const struct mode_st_tensor *t = mode_st_find(f, name);
    if (!t) {
        printf("Bail out! %s missing from the golden\n", name);
        exit(1);
    }
    return t;
}

int main(void)
{
    char path[4096];
    const char *bf = getenv("MODE_BUILD_FIXTURES");
    snprintf(path, sizeof path, "%s/gptq-golden.safetensors", bf ? bf : "build/fixtures");
    struct mode_st_file g;
    struct mode_err err = {0};
    if (mode_st_open(&g, path, &err)) {
        ok(0, "open the GPTQ golden: %s", err.msg);
        return tap_done();
    }
    double *W = malloc(sizeof *W * R * C), *H = malloc(sizeof *H * C * C), *deq = malloc(sizeof *deq * R * C);
    uint8_t *q = malloc(R * C);
    memcpy(W, need(&g, "W")->data, sizeof *W * R * C);
    memcpy(H, need(&g, "H")->data, sizeof *H * C * C);
    static const char *const algos[] = {"gptq", "rtn"};
    const int bits[] = {2, 3, 4, 8}, groups[] = {128, 64};
    for (int a = 0; a < 2; a++)
        for (int bi = 0; bi < 4; bi++)
            for (int gi = 0; gi < 2; gi++)
                for (int sym = 0; sym < 2; sym++) {
                    char name[96], cs[32];
                    snprintf(cs, sizeof cs, "b%d_g%d_%s", bits[bi], groups[gi], sym ? "sym" : "asym");
                    struct mode_quant_opts o = {.bits = bits[bi], .group = groups[gi], .sym = sym};
                    int rc = a == 0 ? mode_quant_gptq_f64(W, R, C, H, &o, deq, q, NULL, NULL, NULL, &err)
                                    : mode_quant_rtn_f64(W, R, C, &o, deq, q, &err);
                    if (rc) {
                        ok(0, "%s %s: %s", algos[a], cs, err.msg);
                        continue;
                    }
                    snprintf(name, sizeof name, "%s.%s.q", algos[a], cs);
                    const uint8_t *gq = need(&g, name)->data;
                    snprintf(name, sizeof name, "%s.%s.scale", algos[a], cs);
                    const double *gsc = need(&g, name)->data;
                    snprintf(name, sizeof name, "%s.%s.zero", algos[a], cs);
                    const double *gz = need(&g, name)->data;
                    /* GPTQ rows are independent; a value on a rounding tie to the last bit (w/scale =
                     * k + 0.5 within float64 noise: the Cholesky factors of two LAPACKs differ there)
                     * may round either way, and the row's later columns then follow another path.
                     * Its signature: the first difference in the row is one level. Such rows are
                     * named and left out of the comparison (of both errors too). */
                    bool tie[R] = {0};
                    int same = 0, far = 0, n_cmp = 0, ties = 0;
                    for (int r = 0; r < R; r++) {
                        int first = -1;
                        for (int c = 0; c < C && first < 0; c++)
                            if (q[r * C + c] != gq[r * C + c]) first = c;
                        if (a == 0 && first >= 0 && abs((int)q[r * C + first] - (int)gq[r * C + first]) == 1) {
                            tie[r] = true, ties++;
                            diag("%s %s: row %d takes the other side of a rounding tie at column %d", algos[a], cs, r, first);
                            continue;
                        }
                        for (int c = 0; c < C; c++) {
                            const int i = r * C + c;
                            same += q[i] == gq[i];
                            far += abs((int)q[i] - (int)gq[i]) > 1;
                            n_cmp++;
                        }
                    }
                    const int ng = C / groups[gi];
                    double *gdeq = malloc(sizeof *gdeq * R * C);
                    for (int i = 0; i < R * C; i++) {
                        const int k = (i / C) * ng + (i % C) / groups[gi];
                        gdeq[i] = gsc[k] * (gq[i] - gz[k]);
                    }
                    const double want = rel_out_err_rows(W, gdeq, H, tie), got = rel_out_err_rows(W, deq, H, tie), rel = fabs(got - want) / want;
                    free(gdeq);
                    ok(same >= 0.99 * n_cmp && far == 0 && rel <= 1e-3 && ties <= 2,
                       "%s %s: %.2f%% on the reference's level, %d further than one; output error %.6f vs %.6f (%d tie rows)", algos[a], cs,
                       100.0 * same / n_cmp, far, got, want, ties);
                }
    mode_st_close(&g);

    /* f32 entry points agree with the f64 ones on the same data */
    {
        float *Wf = malloc(sizeof *Wf * R * C), *df = malloc(sizeof *df * R * C), *sc = malloc(sizeof *sc * R * 4), *zz = malloc(sizeof *zz * R * 4);
        uint8_t *qf = malloc(R * C);
        int32_t gidx[C];
        for (int i = 0; i < R * C; i++) Wf[i] = (float)W[i];
        struct mode_quant_opts o = {.bits = 4, .group = 64};
        struct mode_quant_out out = {qf, sc, zz, gidx, df};
        ok(!mode_quant_gptq(Wf, R, C, H, &o, &out, &err), "f32 GPTQ runs");
        mode_quant_gptq_f64(W, R, C, H, &o, deq, q, NULL, NULL, NULL, &err);
        int same = 0;
        for (int i = 0; i < R * C; i++) same += q[i] == qf[i];
        ok(same >= 0.999 * R * C, "f32 GPTQ on the f64 path's levels (%d of %d)", same, R * C);
        ok(gidx[0] == 0 && gidx[63] == 0 && gidx[64] == 1 && gidx[255] == 3, "g_idx without act-order: column / group");
        o.act_order = true;
        ok(!mode_quant_gptq(Wf, R, C, H, &o, &out, &err), "act-order GPTQ runs");
        int counts[4] = {0};
        for (int i = 0; i < C; i++) counts[gidx[i] & 3]++;
        ok(counts[0] == 64 && counts[1] == 64 && counts[2] == 64 && counts[3] == 64, "act-order g_idx: 64 columns in each group");
        double ao = 0, plain = rel_out_err(W, deq, H);
        for (int i = 0; i < R * C; i++) deq[i] = df[i];
        ao = rel_out_err(W, deq, H);
        ok(ao < plain * 1.2, "act-order's output error %.5f is no worse than plain's %.5f (x1.2)", ao, plain);
        free(Wf), free(df), free(sc), free(zz), free(qf);
    }

    /* the Hessian accumulator: 2/N XᵀX over two batches */
    {
        float X[6 * 3];
        for (int i = 0; i < 18; i++) X[i] = (float)((i * 7) % 5) - 2;
        struct mode_hessian h;
        double Hh[9];
        mode_hessian_init(&h, 3, &err);
        mode_hessian_add(&h, X, 2);
        mode_hessian_add(&h, X + 6, 4);
        mode_hessian_get(&h, Hh);
        double want = 0;
        for (int r = 0; r < 6; r++) want += (double)X[r * 3 + 0] * X[r * 3 + 2];
        ok(fabs(Hh[2] - 2 * want / 6) < 1e-12 && Hh[2] == Hh[6], "H = 2/N XᵀX, symmetric");
        mode_hessian_free(&h);
    }

    /* edges: no NaN, no infinity */
    {
        enum { r = 4, c = 96 };
        float w[r * c], d[r * c], sc[r * 8], z[r * 8];
        uint8_t qq[r * c];
        for (int i = 0; i < c; i++) w[i] = 0, w[c + i] = 3.5f, w[2 * c + i] = (i % 2 ? 1e30f : -1e30f), w[3 * c + i] = 1e-30f * (float)i;
        struct mode_quant_out out = {qq, sc, z, NULL, d};
        for (int sym = 0; sym < 2; sym++)
            for (int b = 2; b <= 8; b *= 2) {
                struct mode_quant_opts o = {.bits = b, .group = 128, .sym = sym};
                int bad = mode_quant_rtn(w, r, c, &o, &out, &err) != MODE_OK;
                for (int i = 0; i < r; i++) bad |= !isfinite(sc[i]) || !(sc[i] > 0);
                for (int i = 0; i < r * c; i++) bad |= !isfinite(d[i]);
                ok(!bad, "RTN %d bits %s: zero, constant, huge and tiny rows give finite scales and values (group 128 clamped to 96)", b,
                   sym ? "sym" : "asym");
            }
        struct mode_quant_opts oa = {.bits = 4, .group = 96};
        mode_quant_rtn(w, r, c, &oa, &out, &err);
        ok(d[0] == 0 && fabs(d[c] - 3.5f) < 1e-6, "asymmetric: a zero row stays zero, a constant row is exact (%g, %g)", d[0], d[c]);
        oa.sym = true;
        mode_quant_rtn(w, r, c, &oa, &out, &err);
        ok(fabs(d[c] - 3.5f / 15 * 7) < 1e-6, "symmetric: a positive constant row clips at zero + 7 levels, as the reference (min stays 0)");
        double Hz[c * c];
        memset(Hz, 0, sizeof Hz); /* no calibration token at all: every column dead */
        struct mode_quant_opts o = {.bits = 4, .group = 32};
        ok(!mode_quant_gptq(w, r, c, Hz, &o, &out, &err), "GPTQ with an all-zero Hessian (dead columns) runs");
        int zero = 1;
        for (int i = 0; i < r * c; i++) zero &= d[i] == 0;
        ok(zero, "dead columns are zeroed, as the reference does");
        o.group = 64;
        ok(mode_quant_rtn(w, r, c, &o, &out, &err) == MODE_EUSAGE, "group 64 does not divide 96: refused");
        has_str(err.msg, "does not divide the 96 input columns", "saying so: %s", err.msg);
        o.group = 32, o.bits = 5;
        ok(mode_quant_rtn(w, r, c, &o, &out, &err) == MODE_EUSAGE, "5 bits: refused");
        double Hn[c * c];
        memset(Hn, 0, sizeof Hn);
        for (int i = 0; i < c; i++) Hn[i * c + i] = 1;
        Hn[5 * c + 5] = NAN;
        o.bits = 4;
        ok(mode_quant_gptq(w, r, c, Hn, &o, &out, &err) == MODE_EDATA, "a NaN in the Hessian: refused (%s)", err.msg);
    }
    free(W), free(H), free(deq), free(q);
    return tap_done();
}
