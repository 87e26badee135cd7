/* test_rtmoe (CPU) — the staging of packed MoE layers for the GPU kernels (lib/rtmoe.c,
 * mode_rtmoe_stage): emoji-vl packed by mode-pack in the v2 and the v1 format and with a 16-bit
 * expert kept; each layer staged, then mode_qmoe_ref (the kernels' C reference) on the staged
 * arrays against the experts as the CPU runtime reads them (mode_model_qexpert_f32), on random
 * inputs and routings: within 1e-6 relative — the words, zero points (v1 rewritten as v2), scales
 * and bf16 pairs all in place. A checkpoint packed with act order is not staged (the kernels take
 * groups in order only; with one group per row, act order leaves g_idx trivial and is staged). */
#include "../../lib/qmoe.h"
#include "../../lib/rtmoe.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double urand(void) { return (double)(tap_rand() >> 11) / 9007199254740992.0; }

static void check(const char *what, const char *dir, bool expect_ok)
{
    struct mode_err err = {0};
    struct mode_model m;
    if (mode_model_open(&m, dir, &err)) {
        ok(0, "%s: %s", what, err.msg);
        return;
    }
    const struct mode_text_config *t = &m.cfg.text;
    const int E = t->n_expert, K = t->n_expert_used, T = 9;
    const int64_t D = t->n_embd, I = t->n_ff_exp;
    float *x = malloc(sizeof *x * T * D), *w = malloc(sizeof *w * T * K), *got = malloc(sizeof *got * T * D), *gu = malloc(sizeof *gu * I * D),
          *up = malloc(sizeof *up * I * D), *dn = malloc(sizeof *dn * D * I), *a = malloc(sizeof *a * I);
    double *want = malloc(sizeof *want * T * D);
    int32_t *ex = malloc(sizeof *ex * T * K);
    int staged = 0, all_ok = 1;
    double worst = 0;
    for (int l = 0; l < t->n_layer; l++) {
        if (!t->is_moe[l]) continue;
        struct mode_rtmoe_host h;
        if (mode_rtmoe_stage(&m, l, &h, &err)) {
            ok(0, "%s: layer %d: %s", what, l, err.msg);
            break;
        }
        if (!h.ok) {
            all_ok = 0;
            continue;
        }
        staged++;
        for (int i = 0; i < T * D; i++) x[i] = (float)(urand() * 2 - 1);
        for (int r = 0; r < T; r++)
            for (int j = 0; j < K; j++) ex[r * K + j] = (r * 5 + j * 7 + l) % E, w[r * K + j] = (float)(0.2 + urand());
        memset(want, 0, sizeof *want * T * D);
        for (int r = 0; r < T; r++)
            for (int j = 0; j < K; j++) {
                const int e = ex[r * K + j];
                mode_model_qexpert_f32(&m, l, e, MODE_PROJ_GATE, gu, &err);
                mode_model_qexpert_f32(&m, l, e, MODE_PROJ_UP, up, &err);
                mode_model_qexpert_f32(&m, l, e, MODE_PROJ_DOWN, dn, &err);
                for (int64_t n = 0; n < I; n++) {
                    double g = 0, u = 0;
                    for (int64_t c = 0; c < D; c++) g += (double)gu[n * D + c] * x[r * D + c], u += (double)up[n * D + c] * x[r * D + c];
                    a[n] = (float)(g / (1 + exp(-g)) * u);
                }
                for (int64_t n = 0; n < D; n++) {
                    double y = 0;
                    for (int64_t c = 0; c < I; c++) y += (double)dn[n * I + c] * a[c];
                    want[r * D + n] += w[r * K + j] * (float)y;
                }
            }
        mode_qmoe_ref(&h.L, T, K, x, ex, w, got, &err);
        double num = 0, den = 0;
        for (int i = 0; i < T * D; i++) num += (got[i] - want[i]) * (got[i] - want[i]), den += want[i] * want[i];
        if (sqrt(num / den) > worst) worst = sqrt(num / den);
        mode_rtmoe_host_free(&h);
    }
    if (expect_ok) ok(all_ok && staged > 0 && worst <= 1e-6, "%s: %d layers staged; the kernels' reference on them = the CPU runtime's experts (worst rel %.2g)", what, staged, worst);
    else ok(!staged, "%s: not staged (%d layers): the CPU runs it", what, staged);
    free(x), free(w), free(got), free(gu), free(up), free(dn), free(a), free(want), free(ex);
    mode_model_close(&m);
}

int main(void)
{
    const char *bin = getenv("MODE_BIN");
    if (!bin) tap_skip_all("MODE_BIN is not set (run through make check)");
    char E[4096], S[4096], cmd[32768];
    const char *dir = tap_tmpdir();
    snprintf(E, sizeof E, "%s", fixture("emoji-vl"));
    snprintf(S, sizeof S, "%s", fixture("streams"));
    snprintf(cmd, sizeof cmd,
             "set -e; cd '%s'; '%s/mode-tokenize' -m '%s/model' -o calib.ms '%s/calib/data.jsonl';"
             "'%s/mode-ilp' --method uniform --avg-bits 4 -m '%s/model' -o u4.ms;"
             "sed 's/\"data\":\\[2,3,2,2,2,3,4,2/\"data\":[2,3,16,2,2,3,4,2/' '%s/alloc.jsonl' | '%s/mode-cat' -J -o mix.ms;"
             "'%s/mode-pack' --device cpu -m '%s/model' -a u4.ms --samples 24 -o w4 calib.ms 2>/dev/null;"
             "'%s/mode-pack' --device cpu -m '%s/model' -a mix.ms --samples 24 --format gptq -o mixv1 calib.ms 2>/dev/null;"
             "'%s/mode-pack' --device cpu -m '%s/model' -a u4.ms --samples 24 --act-order --group 32 -o ao calib.ms 2>/dev/null",
             dir, bin, E, E, bin, E, S, bin, bin, E, bin, E, bin, E);
    if (system(cmd)) {
        ok(0, "tokenize and pack emoji-vl");
        return tap_done();
    }
    char p[4200];
    snprintf(p, sizeof p, "%s/w4", dir);
    check("uniform 4 bits, gptq_v2", p, true);
    snprintf(p, sizeof p, "%s/mixv1", dir);
    check("2/3/4 bits and a 16-bit expert, v1 zero points", p, true);
    snprintf(p, sizeof p, "%s/ao", dir);
    check("act order, group 32", p, false);
    return tap_done();
}
