/* ilp.h — the multiple-choice knapsack at the heart of mode-ilp, solved by GLPK's MIP solver, and an
 * exact dynamic programme that checks it.
 *
 *   minimise   Σ_i Σ_c cost[i][c] · x[i][c]
 *   subject to Σ_c x[i][c] = 1                  for every item i (an expert gets one bit width)
 *              Σ_i Σ_c weight[i][c] · x[i][c]  = cap   (equality: an average-bit budget)
 *                                             ≤ cap   (otherwise: a byte budget)
 *              Σ_i x[i][c] ≥ min_count[c]       for every choice c, when min_count is given
 *                                               (MC-MoE: at least one expert at each width above
 *                                               the lowest)
 *              x ∈ {0, 1}
 *
 * GLPK: the LP relaxation is solved first by the simplex method (its optimum is the reported lower
 * bound), then branch and bound from that basis with a relative objective tolerance of 1e-12 so
 * that the optimum is exact to far below the 1e-9 the tests ask. Costs and weights are scaled to
 * at most 1 in magnitude before they reach GLPK and the objective is recomputed from the chosen
 * x in the caller's units, so both solvers report the same number for the same choice.
 *
 * The dynamic programme needs non-negative integer weights and an integer cap; it keeps one byte
 * per (item, total) for the backtrack, so it is meant for tests and small problems (refuses tables
 * over 1 GiB). It does not take min_count (MODE_EUSAGE when one is positive).
 */
#ifndef MODE_ILP_H
#define MODE_ILP_H

#include "mode.h"

#include <stdbool.h>

struct mode_mckp {
    int n;                 /* items */
    int m;                 /* choices per item (at most 255) */
    const double *cost;    /* (n, m) */
    const double *weight;  /* (n, m) */
    double cap;
    bool equality;
    double time_limit;     /* seconds for branch and bound; 0: none */
    const int *min_count;  /* (m) or NULL: at least min_count[c] items take choice c */
};

enum mode_mckp_status {
    MODE_MCKP_OPTIMAL = 0,
    MODE_MCKP_FEASIBLE,   /* the time limit stopped the search: a solution, not proven optimal */
    MODE_MCKP_INFEASIBLE, /* no choice meets the budget */
    MODE_MCKP_TIMEOUT     /* the time limit stopped the search before any solution */
};

struct mode_mckp_result {
    int *choice;          /* (n), the caller's array: the chosen choice of each item */
    enum mode_mckp_status status;
    double objective;     /* Σ cost of the choice */
    double weight;        /* Σ weight of the choice */
    double lp_bound;      /* the LP relaxation's optimum (GLPK), or the objective (DP) */
    double mip_gap;       /* (objective - best bound) / |objective| at the end; 0 when optimal */
    double seconds;       /* wall time of the solve */
    long nodes;           /* branch-and-bound nodes (GLPK) */
};

const char *mode_mckp_status_name(enum mode_mckp_status s); /* "optimal", "feasible", ... */

/* Checks the problem (finite numbers, sizes); MODE_EDATA naming the first bad number. */
int mode_mckp_check(const struct mode_mckp *p, struct mode_err *err);

/* Solves with GLPK. An infeasible problem is not an error: r->status says so. */
int mode_mckp_glpk(const struct mode_mckp *p, struct mode_mckp_result *r, struct mode_err *err);

/* Solves exactly by dynamic programming over integer totals (see above). MODE_EUSAGE when a weight
 * or the cap is not a non-negative integer, MODE_EUNAVAILABLE when the table would be too big. */
int mode_mckp_dp(const struct mode_mckp *p, struct mode_mckp_result *r, struct mode_err *err);

/* The integer totals Σ w reachable with one choice per item when every item has the same integer
 * weights w[0..m-1] (bit widths): the largest reachable total ≤ t in *below and the smallest ≥ t in
 * *above (-1 when none). Used to name the nearest feasible average-bit budgets. */
void mode_mckp_reachable(int n, int m, const int *w, long t, long *below, long *above);

#endif
