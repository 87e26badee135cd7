/* test_moe — the host side of the MoE kernels for many tokens (lib/moe.c): the routing sorted by
 * expert (grouped, in token order within an expert, slot the inverse of order, an expert out of
 * range refused); the dense bf16 layer's reference against the packed layer's (mode_qmoe_ref) on
 * the 16-bit twin of the same weights — which checks the bf16-pair word layout of 16-bit experts
 * too — within 1e-6 (the same bf16 values, double sums in the same order, f32 rounding of the
 * activations apart). */
#include "../../lib/moe.h"
#include "../../lib/qmoe.h"
#include "qmoe_cases.h"

#include <math.h>
#include <stdio.h>

int main(void)
{
    struct mode_err err = {0};
    /* routing */
    enum { T = 50, K = 4, E = 9 };
    int32_t ex[T * K], order[T * K], slot[T * K];
    float w[T * K];
    int64_t start[E + 1];
    make_routing(T, K, E, ex, w);
    ok(mode_moe_route_sort(ex, T, K, E, order, slot, start, &err) == MODE_OK, "route sort");
    int good = start[0] == 0 && start[E] == T * K, inverse = 1, grouped = 1, sorted = 1;
    for (int e = 0; e < E; e++) {
        good &= start[e + 1] >= start[e];
        for (int64_t p = start[e]; p < start[e + 1]; p++) {
            grouped &= ex[order[p]] == e;
            if (p > start[e]) sorted &= order[p] > order[p - 1];
        }
    }
    for (int p = 0; p < T * K; p++) inverse &= order[slot[p]] == p;
    ok(good && grouped && sorted && inverse, "expert runs from start, grouped, token order within an expert, slot inverts order");
    is_int(start[1] - start[0], T, "expert 0 has every token");
    is_int(start[E] - start[E - 1], 0, "the last expert none");
    ex[7] = E;
    ok(mode_moe_route_sort(ex, T, K, E, order, slot, start, &err) == MODE_EDATA, "an expert out of range: %s", err.msg);

    /* the dense reference against the packed reference on the 16-bit twin */
    struct host_dense d;
    struct host_layer p;
    make_dense(&d, 6, 96, 64);
    packed_twin(&p, &d);
    enum { TT = 7, KK = 2 };
    float x[TT * 96], wr[TT * KK], a[TT * 96], b[TT * 96];
    int32_t er[TT * KK];
    for (int i = 0; i < TT * 96; i++) x[i] = (float)(urand() * 2 - 1);
    make_routing(TT, KK, 6, er, wr);
    ok(!mode_moe_dense_ref(&d.L, TT, KK, x, er, wr, a, &err) && !mode_qmoe_ref(&p.L, TT, KK, x, er, wr, b, &err), "both references run");
    double num = 0, den = 0;
    for (int i = 0; i < TT * 96; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    ok(den > 0 && sqrt(num / den) <= 1e-6, "dense bf16 = packed 16-bit twin: rel %.2g", sqrt(num / den));
    free_dense(&d), free_layer(&p);
    return tap_done();
}
