/* qmoe.c — C reference of the packed mixed-precision MoE layer (see qmoe.h). */
#include "qmoe.h"
#include "gptqpack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int mode_qmoe_expert_ref(const struct mode_qmoe_layer *L, int e, int p, float *W)
{
    const int64_t n = p < 2 ? L->i : L->d, k = p < 2 ? L->d : L->i, g = p < 2 ? L->group_d : L->group_i;
    const int64_t *off = L->off + (size_t)e * 9 + (size_t)p * 3;
    if (L->bits[e] == 16) { /* bf16 pairs along k, (k/2, n) words */
        const uint32_t *w = L->qweight + off[0];
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < k; c++) W[r * k + c] = mode_bf16_to_f32((uint16_t)(w[(c / 2) * n + r] >> (16 * (c % 2))));
        return MODE_OK;
    }
    int32_t *gidx = malloc(sizeof *gidx * (size_t)k);
    if (!gidx) return MODE_EUNAVAILABLE;
    for (int64_t c = 0; c < k; c++) gidx[c] = (int32_t)(c / g);
    int rc = mode_gptq_dequant((const int32_t *)L->qweight + off[0], (const int32_t *)L->qzeros + off[1], L->scales + off[2], gidx, n, k,
                               k / g, L->bits[e], false, W);
    free(gidx);
    return rc;
}

int mode_qmoe_ref(const struct mode_qmoe_layer *L, int T, int k, const float *x, const int32_t *experts, const float *weights, float *out,
                  struct mode_err *err)
{
    const int64_t D = L->d, I = L->i;
    float *gw = malloc(sizeof *gw * (size_t)(I * D)), *uw = malloc(sizeof *uw * (size_t)(I * D)), *dw = malloc(sizeof *dw * (size_t)(D * I)),
          *a = malloc(sizeof *a * (size_t)I);
    int rc = MODE_OK;
    if (!gw || !uw || !dw || !a) rc = mode_err_oom(err, sizeof *gw * (size_t)(I * D) * 3, "the reference");
    memset(out, 0, sizeof *out * (size_t)(T * D));
    for (int t = 0; t < T && !rc; t++)
        for (int j = 0; j < k && !rc; j++) {
            const int e = experts[t * k + j];
            if (e < 0 || e >= L->n_expert) continue;
            if (mode_qmoe_expert_ref(L, e, 0, gw) || mode_qmoe_expert_ref(L, e, 1, uw) || mode_qmoe_expert_ref(L, e, 2, dw)) {
                rc = mode_err_oom(err, 0, "dequantising");
                break;
            }
            const float *xt = x + (size_t)t * D;
            for (int64_t n = 0; n < I; n++) {
                double g = 0, u = 0;
                for (int64_t c = 0; c < D; c++) g += (double)gw[n * D + c] * xt[c], u += (double)uw[n * D + c] * xt[c];
                a[n] = (float)(g / (1 + exp(-g)) * u);
            }
            for (int64_t n = 0; n < D; n++) {
                double y = 0;
                for (int64_t c = 0; c < I; c++) y += (double)dw[n * I + c] * a[c];
                out[(size_t)t * D + n] += weights[t * k + j] * (float)y;
            }
        }
    free(gw), free(uw), free(dw), free(a);
    return rc;
}
