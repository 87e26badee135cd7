/* test_mcmoe — mode-ilp's mcmoe (mode_alloc_solve, GLPK) reaches the optimum of MC-MoE's own
 * program on random layers, that program written here from MC-MoE's precision_solver.py and
 * solved exactly without GLPK: by exhaustive search over 3^8 allocations of an 8-expert layer,
 * and by a dynamic programme over (experts, bits used, a 3-bit expert yet, a 4-bit expert yet)
 * for 16 experts (emoji-vl's layers).
 *
 * MC-MoE's program, per layer, widths {2, 3, 4}:
 *   minimise   Σ_e 1000 · φ(e)^α · w(e)^β · ε(e, b_e)^α
 *   subject to Σ_e b_e ≤ C, at least one b_e = 3 and one b_e = 4
 * φ = selection counts / their sum over the layer, w = summed router probabilities / their sum
 * (its norm_experts_dim), ε the quantization loss. */
#include "../../lib/bitalloc.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NB = 3, MAX_E = 16 };
static const int bits[NB] = {2, 3, 4};

static double urand(void) { return (double)(tap_rand() >> 11) / 9007199254740992.0; }

struct inst {
    int n;
    int64_t count[MAX_E];
    double prob[MAX_E], eps[MAX_E][NB];
    double alpha, beta;
    long cap; /* C, bits per layer */
};

/* MC-MoE's coefficient, from the raw statistics */
static void mcmoe_costs(const struct inst *in, double cost[MAX_E][NB])
{
    double cs = 0, ps = 0;
    for (int e = 0; e < in->n; e++) cs += (double)in->count[e], ps += in->prob[e];
    for (int e = 0; e < in->n; e++) {
        const double sig = pow((double)in->count[e] / cs, in->alpha) * pow(in->prob[e] / ps, in->beta);
        for (int b = 0; b < NB; b++) cost[e][b] = sig * pow(in->eps[e][b], in->alpha) * 1000;
    }
}

static double exhaustive(const struct inst *in, double cost[MAX_E][NB])
{
    int pick[MAX_E] = {0};
    double best = INFINITY;
    for (;;) {
        long t = 0;
        int n3 = 0, n4 = 0;
        double c = 0;
        for (int e = 0; e < in->n; e++) t += bits[pick[e]], n3 += pick[e] == 1, n4 += pick[e] == 2, c += cost[e][pick[e]];
        if (t <= in->cap && n3 && n4 && c < best) best = c;
        int e = 0;
        while (e < in->n && ++pick[e] == NB) pick[e++] = 0;
        if (e == in->n) return best;
    }
}

/* f[t][s]: least cost of the experts so far using exactly t bits, s = (a 3-bit one yet) + 2 (a 4-bit one yet) */
static double dp(const struct inst *in, double cost[MAX_E][NB])
{
    enum { T = 4 * MAX_E + 1 };
    double f[T][4], g[T][4];
    for (int t = 0; t < T; t++)
        for (int s = 0; s < 4; s++) f[t][s] = INFINITY;
    f[0][0] = 0;
    for (int e = 0; e < in->n; e++) {
        for (int t = 0; t < T; t++)
            for (int s = 0; s < 4; s++) g[t][s] = INFINITY;
        for (int t = 0; t < T; t++)
            for (int s = 0; s < 4; s++) {
                if (f[t][s] == INFINITY) continue;
                for (int b = 0; b < NB; b++) {
                    const int t2 = t + bits[b], s2 = s | (b == 1 ? 1 : b == 2 ? 2 : 0);
                    if (t2 < T && f[t][s] + cost[e][b] < g[t2][s2]) g[t2][s2] = f[t][s] + cost[e][b];
                }
            }
        memcpy(f, g, sizeof f);
    }
    double best = INFINITY;
    for (int t = 0; t <= in->cap && t < T; t++) best = fmin(best, f[t][3]);
    return best;
}

static void random_inst(struct inst *in, int n, int style)
{
    memset(in, 0, sizeof *in);
    in->n = n;
    in->alpha = 1, in->beta = 1.5;
    if (style == 2) in->alpha = 1.3, in->beta = 0.7;
    for (int e = 0; e < n; e++) {
        /* style 1: a quarter of the experts never selected (φ = w = 0) */
        in->count[e] = style == 1 && urand() < 0.25 ? 0 : 1 + (int64_t)(urand() * 500);
        in->prob[e] = in->count[e] ? (double)in->count[e] * (0.1 + 0.4 * urand()) : 0;
        /* a loss that falls with the width, as RTN's does (roughly 0.5 per bit) */
        double l = 5 + 50 * urand();
        for (int b = 0; b < NB; b++) in->eps[e][b] = l, l *= 0.35 + 0.3 * urand();
    }
    /* from the least the constraints allow (2n + 3) to every expert at 4 bits */
    in->cap = 2L * n + 3 + (long)(urand() * (2 * n - 2));
}

/* the instance as mode-ilp reads it: a freq and a sens table of one layer */
static void to_data(const struct inst *in, struct mode_alloc_data *d)
{
    mode_alloc_data_init(d);
    d->n_expert = in->n;
    d->n_bits = NB;
    memcpy(d->bits, bits, sizeof bits);
    strcpy(d->metric, "mcmoe");
    d->have_freq = d->have_sens = true;
    d->n_layer = 1;
    d->L = calloc(1, sizeof *d->L);
    struct mode_alloc_layer *l = &d->L[0];
    const size_t E = (size_t)in->n;
    l->has_freq = l->has_sens = l->has_prob = true;
    l->freq = calloc(MODE_CLS_COUNT * E, sizeof *l->freq);
    l->count = calloc(MODE_CLS_COUNT * E, sizeof *l->count);
    l->wsum = calloc(MODE_CLS_COUNT * E, sizeof *l->wsum);
    l->prob = calloc(MODE_CLS_COUNT * E, sizeof *l->prob);
    l->dt = calloc(E * NB, sizeof *l->dt);
    l->dv = calloc(E * NB, sizeof *l->dv);
    l->da = calloc(E * NB, sizeof *l->da);
    int64_t tot = 0;
    for (size_t e = 0; e < E; e++) tot += in->count[e];
    for (size_t e = 0; e < E; e++) {
        l->count[MODE_CLS_ALL * E + e] = in->count[e];
        l->freq[MODE_CLS_ALL * E + e] = (double)in->count[e] / (double)tot; /* what mode-vis-denoise writes */
        l->prob[MODE_CLS_ALL * E + e] = in->prob[e];
        for (int b = 0; b < NB; b++) l->da[e * NB + b] = in->eps[e][b];
    }
}

static void one(int n, int style, int t)
{
    struct inst in;
    random_inst(&in, n, style);
    double cost[MAX_E][NB];
    mcmoe_costs(&in, cost);
    const double want = n <= 8 ? exhaustive(&in, cost) : dp(&in, cost);
    struct mode_alloc_data d;
    to_data(&in, &d);
    /* --avg-bits k with ⌊n·k⌋ = C */
    struct mode_alloc_opts o = {.method = MODE_ALLOC_MCMOE, .n_cand = NB, .cand = {2, 3, 4}, .avg_bits = (double)in.cap / n,
                                .alpha = in.alpha, .beta = in.beta};
    struct mode_alloc_result r;
    struct mode_err err = {0};
    int rc = mode_alloc_solve(&d, &o, &r, &err);
    if (rc) diag("%s", err.msg);
    double got = 0;
    long used = 0;
    int n3 = 0, n4 = 0;
    for (int e = 0; !rc && e < n; e++) {
        const int b = r.bits[e] - 2;
        got += cost[e][b], used += r.bits[e], n3 += b == 1, n4 += b == 2;
    }
    ok(!rc && r.status == MODE_MCKP_OPTIMAL && fabs(got - want) <= 1e-9 * want,
       "instance %d (%d experts, style %d, %ld bits): mode-ilp's mcmoe %.15g = MC-MoE's optimum by %s %.15g", t, n, style, in.cap,
       got, n <= 8 ? "exhaustive search" : "dynamic programme", want);
    ok(!rc && used <= in.cap && n3 >= 1 && n4 >= 1 && fabs(r.objective - got) <= 1e-12 * got,
       "instance %d: %ld of %ld bits, %d experts at 3 and %d at 4 bits, its objective the same sum (%.15g)", t, used, in.cap, n3, n4,
       rc ? 0 : r.objective);
    if (!rc) mode_alloc_result_free(&r);
    mode_alloc_data_free(&d);
}

int main(void)
{
    for (int t = 0; t < 12; t++) one(8, t % 3, t);
    for (int t = 12; t < 18; t++) one(16, t % 3, t);
    return tap_done();
}
