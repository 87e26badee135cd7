/* moe.c — routing sort and the dense bf16 MoE layer's reference (moe.h). */
#include "moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int mode_moe_route_sort(const int32_t *experts, int T, int k, int n_expert, int32_t *order, int32_t *slot, int64_t *start,
                        struct mode_err *err)
{
    const int64_t P = (int64_t)T * k;
    memset(start, 0, sizeof *start * (size_t)(n_expert + 1));
    for (int64_t p = 0; p < P; p++) {
        if (experts[p] < 0 || experts[p] >= n_expert)
            return mode_err_set(err, MODE_EDATA, "routing: pair %lld selects expert %d of %d", (long long)p, experts[p], n_expert);
        start[experts[p] + 1]++;
    }
    for (int e = 0; e < n_expert; e++) start[e + 1] += start[e];
    int64_t *fill = calloc((size_t)n_expert, sizeof *fill);
    if (!fill) return mode_err_oom(err, sizeof *fill * (size_t)n_expert, "routing");
    for (int64_t p = 0; p < P; p++) {
        const int e = experts[p];
        const int64_t at = start[e] + fill[e]++;
        order[at] = (int32_t)p;
        slot[p] = (int32_t)at;
    }
    free(fill);
    return MODE_OK;
}

int mode_moe_dense_ref(const struct mode_moe_dense *L, int T, int k, const float *x, const int32_t *experts, const float *weights, float *out,
                       struct mode_err *err)
{
    const int64_t D = L->d, I = L->i;
    float *a = malloc(sizeof *a * (size_t)I);
    if (!a) return mode_err_oom(err, sizeof *a * (size_t)I, "the reference");
    memset(out, 0, sizeof *out * (size_t)T * (size_t)D);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            const int e = experts[t * k + j];
            if (e < 0 || e >= L->n_expert) continue;
            const uint16_t *gu = L->gate_up + (size_t)e * (size_t)(D * 2 * I), *dn = L->down + (size_t)e * (size_t)(I * D);
            const float *xt = x + (size_t)t * D;
            for (int64_t n = 0; n < I; n++) {
                double g = 0, u = 0;
                for (int64_t c = 0; c < D; c++) {
                    g += (double)mode_bf16_to_f32(gu[c * 2 * I + n]) * xt[c];
                    u += (double)mode_bf16_to_f32(gu[c * 2 * I + I + n]) * xt[c];
                }
                a[n] = (float)(g / (1 + exp(-g)) * u);
            }
            for (int64_t n = 0; n < D; n++) {
                double y = 0;
                for (int64_t c = 0; c < I; c++) y += (double)mode_bf16_to_f32(dn[c * D + n]) * a[c];
                out[(size_t)t * D + n] += weights[t * k + j] * (float)y;
            }
        }
    free(a);
    return MODE_OK;
}
