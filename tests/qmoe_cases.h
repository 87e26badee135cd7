/* qmoe_cases.h — random MoE layers for the tests of the MoE kernels (test_qmoe, test_moe and the
 * CPU test of their references): packed layers of mixed widths (2, 3, 4, 8 bits and bf16 pairs,
 * gptqpack.h's layout, g_idx trivial), dense bf16 layers in the hub layout, and the packed 16-bit
 * twin of a dense layer (the same bf16 weights in the word layout). Header-only. */
#ifndef MODE_TEST_QMOE_CASES_H
#define MODE_TEST_QMOE_CASES_H

#include "../lib/gptqpack.h"
#include "../kernels/mode_cuda.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static inline double urand(void) { return (double)(tap_rand() >> 11) / 9007199254740992.0; }

struct host_layer {
    struct mode_qmoe_layer L;
    uint32_t *qw, *qz;
    uint16_t *sc;
    int64_t *off;
    uint8_t *bits;
    size_t n_qw, n_qz, n_sc;
};

/* random layer: E experts, widths cycling through widths[] */
static inline void make_layer(struct host_layer *h, int E, int D, int I, int gd, int gi, const int *widths, int nw)
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
                    if (b == 16) { /* bf16 pairs of small random values, (k/2, n) words */
                        uint32_t *w = h->qw + qw;
                        for (int64_t c = 0; c < k / 2; c++)
                            for (int64_t r = 0; r < n; r++)
                                w[c * n + r] = (uint32_t)mode_f32_to_bf16((float)(urand() - 0.5) * 0.05f) |
                                               (uint32_t)mode_f32_to_bf16((float)(urand() - 0.5) * 0.05f) << 16;
                        qw += (size_t)(k * b / 32 * n), qz += (size_t)(G * n * b / 32), sc += (size_t)(G * n);
                        continue;
                    }
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

static inline void free_layer(struct host_layer *h) { free(h->qw), free(h->qz), free(h->sc), free(h->off), free(h->bits); }

static inline int upload(void **d, const void *h, size_t n, struct mode_err *err)
{
    int rc = mode_cuda_malloc(d, n ? n : 1, err);
    return rc ? rc : mode_cuda_upload(*d, h, n, err);
}


/* a dense bf16 layer: gate_up (E, D, 2I), down (E, I, D), small random weights */
struct host_dense {
    struct mode_moe_dense L;
    uint16_t *gu, *dn;
};

static inline void make_dense(struct host_dense *h, int E, int D, int I)
{
    h->gu = malloc(sizeof *h->gu * (size_t)E * D * 2 * I);
    h->dn = malloc(sizeof *h->dn * (size_t)E * I * D);
    for (size_t i = 0; i < (size_t)E * D * 2 * I; i++) h->gu[i] = mode_f32_to_bf16((float)(urand() - 0.5) * 0.1f);
    for (size_t i = 0; i < (size_t)E * I * D; i++) h->dn[i] = mode_f32_to_bf16((float)(urand() - 0.5) * 0.1f);
    h->L = (struct mode_moe_dense){E, D, I, h->gu, h->dn};
}

static inline void free_dense(struct host_dense *h) { free(h->gu), free(h->dn); }

/* the packed 16-bit twin of a dense layer: every expert's projections as bf16 pairs along k */
static inline void packed_twin(struct host_layer *p, const struct host_dense *d)
{
    const int E = d->L.n_expert, D = d->L.d, I = d->L.i;
    static const int w16[1] = {16};
    make_layer(p, E, D, I, 32, 32, w16, 1);
    for (int e = 0; e < E; e++)
        for (int q = 0; q < 3; q++) {
            const int64_t n = q == 2 ? D : I, k = q == 2 ? I : D;
            uint32_t *w = p->qw + p->off[e * 9 + q * 3];
            for (int64_t c = 0; c < k / 2; c++)
                for (int64_t r = 0; r < n; r++) {
                    /* W[r][c] of the projection: gate/up from gate_up[e][c][r (+ I)], down from down[e][c][r] */
                    uint16_t lo, hi;
                    if (q < 2) {
                        const uint16_t *g = d->gu + (size_t)e * D * 2 * I + (q == 1 ? I : 0) + r;
                        lo = g[(size_t)(2 * c) * 2 * I], hi = g[(size_t)(2 * c + 1) * 2 * I];
                    } else {
                        const uint16_t *g = d->dn + (size_t)e * I * D + r;
                        lo = g[(size_t)(2 * c) * D], hi = g[(size_t)(2 * c + 1) * D];
                    }
                    w[c * n + r] = (uint32_t)lo | (uint32_t)hi << 16;
                }
        }
}

/* T tokens' top-k: expert 0 in every token, expert E-1 in none, the rest spread; weights > 0 */
static inline void make_routing(int T, int k, int E, int32_t *ex, float *w)
{
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            ex[t * k + j] = j == 0 ? 0 : 1 + (int)((t * 7 + j * 3 + (int)(tap_rand() % 5)) % (E - 2));
            w[t * k + j] = (float)(0.1 + urand());
        }
}

#endif
