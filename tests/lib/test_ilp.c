/* test_ilp — GLPK's optimum of the multiple-choice knapsack equals the exact dynamic programme's
 * on random instances (per-layer and global sizes, equality and ≤ budgets, ties and zeros), and
 * an exhaustive search's with minimum counts per choice (MC-MoE's "at least one expert at each
 * width above the lowest"); infeasible budgets are reported as such, and the nearest feasible
 * totals are right. */
#include "../../lib/ilp.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double urand(void) { return (double)(tap_rand() >> 11) / 9007199254740992.0; }

static int rel_eq(double a, double b, double tol) { return fabs(a - b) <= tol * fmax(fmax(fabs(a), fabs(b)), 1e-300); }

/* one random instance: n experts, bit widths bits[0..m-1]; kind 0 = avg bits equality,
 * 1 = bytes-like integer weights with ≤ */
static void one(int n, int m, const int *bits, int kind, int style, const char *name)
{
    double *cost = malloc(sizeof *cost * (size_t)n * m), *weight = malloc(sizeof *weight * (size_t)n * m);
    int *c1 = malloc(sizeof *c1 * n), *c2 = malloc(sizeof *c2 * n);
    for (int i = 0; i < n; i++) {
        /* importance × sensitivity falling with bits, as the real costs do; style 1 makes a
         * quarter of the experts unused (cost 0 everywhere), style 2 draws costs on a coarse
         * grid so that ties abound, style 3 spans many orders of magnitude */
        double f = urand();
        if (style == 1 && urand() < 0.25) f = 0;
        double s = urand() * 2;
        for (int c = 0; c < m; c++) {
            double d = s * pow(0.45 + 0.1 * urand(), bits[c] - bits[0]);
            if (style == 2) d = floor(d * 8) / 8;
            if (style == 3) d *= pow(10, -8 * urand());
            cost[(size_t)i * m + c] = f * d;
            weight[(size_t)i * m + c] = kind == 0 ? bits[c] : bits[c] * 7 + (int)(urand() * 5);
        }
    }
    double lo = 0, hi = 0;
    for (int i = 0; i < n; i++) lo += weight[(size_t)i * m], hi += weight[(size_t)i * m + m - 1];
    double cap = kind == 0 ? floor(lo + (hi - lo) * urand()) : floor(lo + (hi - lo) * urand() * 0.9);
    struct mode_mckp p = {n, m, cost, weight, cap, kind == 0, 0, NULL};
    struct mode_mckp_result r1 = {.choice = c1}, r2 = {.choice = c2};
    struct mode_err err = {0};
    int rc1 = mode_mckp_glpk(&p, &r1, &err);
    if (rc1) diag("glpk: %s", err.msg);
    int rc2 = mode_mckp_dp(&p, &r2, &err);
    if (rc2) diag("dp: %s", err.msg);
    ok(!rc1 && !rc2 && r1.status == MODE_MCKP_OPTIMAL && r2.status == MODE_MCKP_OPTIMAL && rel_eq(r1.objective, r2.objective, 1e-9),
       "%s: GLPK %.15g = DP %.15g (status %s, lp bound %.6g, %ld nodes, %.3f s)", name, r1.objective, r2.objective,
       mode_mckp_status_name(r1.status), r1.lp_bound, r1.nodes, r1.seconds);
    int good = r1.lp_bound <= r1.objective * (1 + 1e-9) + 1e-300;
    if (kind == 0) good = good && r1.weight == cap;
    else good = good && r1.weight <= cap;
    ok(good, "%s: budget met (%g vs %g), LP bound below the optimum", name, r1.weight, cap);
    free(cost), free(weight), free(c1), free(c2);
}

/* the least cost over all m^n choices meeting the budget and the minimum counts; INFINITY when none */
static double exhaustive(int n, int m, const double *cost, const double *w, double cap, const int *min_count)
{
    int pick[16] = {0}, cnt[8];
    double best = INFINITY;
    for (;;) {
        double c = 0, t = 0;
        memset(cnt, 0, sizeof cnt);
        for (int i = 0; i < n; i++) c += cost[i * m + pick[i]], t += w[i * m + pick[i]], cnt[pick[i]]++;
        int okc = t <= cap;
        for (int k = 0; k < m; k++) okc = okc && cnt[k] >= min_count[k];
        if (okc && c < best) best = c;
        int i = 0;
        while (i < n && ++pick[i] == m) pick[i++] = 0;
        if (i == n) break;
    }
    return best;
}

static void min_counts(int t)
{
    const int bits[3] = {2, 3, 4}, m = 3, n = 5 + t % 5; /* 5..9 items: at most 19683 choices */
    double cost[9 * 3], w[9 * 3];
    int choice[9];
    for (int i = 0; i < n; i++) {
        const double f = t % 3 == 2 && urand() < 0.3 ? 0 : urand(), s = urand();
        for (int c = 0; c < m; c++) cost[i * m + c] = f * s * pow(0.5, bits[c] - 2), w[i * m + c] = bits[c];
    }
    /* a budget between the least the counts allow (2n + 3) and every item at 4 */
    const double cap = 2 * n + 3 + floor(urand() * (2 * n - 2));
    const int mc[3] = {0, 1, 1};
    struct mode_mckp p = {n, m, cost, w, cap, false, 0, mc};
    struct mode_mckp_result r = {.choice = choice};
    struct mode_err err = {0};
    const double want = exhaustive(n, m, cost, w, cap, mc);
    int rc = mode_mckp_glpk(&p, &r, &err);
    int n3 = 0, n4 = 0;
    for (int i = 0; !rc && i < n; i++) n3 += choice[i] == 1, n4 += choice[i] == 2;
    ok(!rc && r.status == MODE_MCKP_OPTIMAL && rel_eq(r.objective, want, 1e-9) && n3 >= 1 && n4 >= 1 && r.weight <= cap,
       "minimum counts, instance %d (n=%d, cap %g): GLPK %.15g = exhaustive %.15g, %d at 3 and %d at 4 bits", t, n, cap,
       r.objective, want, n3, n4);
}

int main(void)
{
    const int b234[] = {2, 3, 4}, b24[] = {2, 4}, b2348[] = {2, 3, 4, 8};
    char name[96];
    for (int t = 0; t < 40; t++) {
        const int n = t < 30 ? 8 + (int)(tap_rand() % 121) : 400 + (int)(tap_rand() % 400);
        const int kind = t % 2, style = (t / 2) % 4;
        const int *b = t % 5 == 4 ? b2348 : b234;
        const int m = t % 5 == 4 ? 4 : 3;
        snprintf(name, sizeof name, "instance %d (n=%d, %s, style %d)", t, n, kind ? "<=" : "=", style);
        one(n, m, b, kind, style, name);
    }

    /* infeasible: equality with an odd total and even widths; ≤ below the least weight */
    {
        double cost[6] = {3, 2, 1, 3, 2, 1}, w[6] = {2, 4, 2, 4, 2, 4};
        int c[3];
        struct mode_mckp p = {3, 2, cost, w, 7, true, 0, NULL};
        struct mode_mckp_result r = {.choice = c};
        struct mode_err err = {0};
        ok(!mode_mckp_glpk(&p, &r, &err) && r.status == MODE_MCKP_INFEASIBLE, "GLPK: odd total with even widths is infeasible (%s)",
           mode_mckp_status_name(r.status));
        ok(!mode_mckp_dp(&p, &r, &err) && r.status == MODE_MCKP_INFEASIBLE, "DP agrees");
        p.equality = false;
        p.cap = 5;
        ok(!mode_mckp_glpk(&p, &r, &err) && r.status == MODE_MCKP_INFEASIBLE, "GLPK: budget below the least weight is infeasible");
        p.cap = 6;
        ok(!mode_mckp_glpk(&p, &r, &err) && r.status == MODE_MCKP_OPTIMAL && r.objective == 6 && c[0] == 0 && c[1] == 0 && c[2] == 0,
           "GLPK: budget at the least weight takes the least widths");
        double badc[6] = {3, 2, NAN, 3, 2, 1};
        p.cost = badc;
        is_int(mode_mckp_glpk(&p, &r, &err), MODE_EDATA, "a NaN cost is refused");
        has_str(err.msg, "item 1 choice 0", "and named");
    }
    /* minimum counts per choice: GLPK against an exhaustive search; the DP does not take them */
    for (int t = 0; t < 12; t++) min_counts(t);
    {
        double cost[6] = {3, 2, 1, 3, 2, 1}, w[6] = {2, 4, 2, 4, 2, 4};
        int c[3];
        const int mc[2] = {0, 3};
        struct mode_mckp p = {3, 2, cost, w, 10, false, 0, mc};
        struct mode_mckp_result r = {.choice = c};
        struct mode_err err = {0};
        ok(!mode_mckp_glpk(&p, &r, &err) && r.status == MODE_MCKP_INFEASIBLE, "GLPK: 3 items at 4 within 10 is infeasible (%s)",
           mode_mckp_status_name(r.status));
        is_int(mode_mckp_dp(&p, &r, &err), MODE_EUSAGE, "the DP refuses minimum counts");
        const int bad[2] = {0, 4};
        p.min_count = bad;
        is_int(mode_mckp_glpk(&p, &r, &err), MODE_EDATA, "a minimum above the item count is refused");
    }
    /* reachable totals */
    {
        long lo, hi;
        mode_mckp_reachable(3, 2, b24, 7, &lo, &hi);
        ok(lo == 6 && hi == 8, "3 experts of {2,4}: 7 bits -> nearest 6 and 8 (%ld, %ld)", lo, hi);
        mode_mckp_reachable(4, 3, b234, 20, &lo, &hi);
        ok(lo == 16 && hi == -1, "4 experts of {2,3,4}: 20 bits -> 16 below, none above");
        mode_mckp_reachable(4, 3, b234, 10, &lo, &hi);
        ok(lo == 10 && hi == 10, "10 is reachable");
    }
    return tap_done();
}
