/* ilp.c — multiple-choice knapsack: GLPK MIP and an exact dynamic programme (see ilp.h). */
#include "ilp.h"

#include <glpk.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *mode_mckp_status_name(enum mode_mckp_status s)
{
    switch (s) {
    case MODE_MCKP_OPTIMAL: return "optimal";
    case MODE_MCKP_FEASIBLE: return "feasible";
    case MODE_MCKP_INFEASIBLE: return "infeasible";
    case MODE_MCKP_TIMEOUT: return "timeout";
    }
    return "?";
}

int mode_mckp_check(const struct mode_mckp *p, struct mode_err *err)
{
    if (p->n < 1 || p->m < 1 || p->m > 255)
        return mode_err_set(err, MODE_EDATA, "knapsack: %d items of %d choices (need at least 1 item and 1..255 choices)",
                            p->n, p->m);
    if ((int64_t)p->n * p->m > (INT64_C(1) << 28)) return mode_err_set(err, MODE_EDATA, "knapsack: %d x %d choices is too big", p->n, p->m);
    for (int64_t i = 0; i < (int64_t)p->n * p->m; i++) {
        if (!isfinite(p->cost[i]))
            return mode_err_set(err, MODE_EDATA, "knapsack: the cost of item %lld choice %lld is %g", (long long)(i / p->m),
                                (long long)(i % p->m), p->cost[i]);
        if (!isfinite(p->weight[i]) || p->weight[i] < 0)
            return mode_err_set(err, MODE_EDATA, "knapsack: the weight of item %lld choice %lld is %g", (long long)(i / p->m),
                                (long long)(i % p->m), p->weight[i]);
    }
    if (!isfinite(p->cap)) return mode_err_set(err, MODE_EDATA, "knapsack: the budget is %g", p->cap);
    if (!(p->time_limit >= 0)) return mode_err_set(err, MODE_EDATA, "knapsack: time limit %g", p->time_limit);
    for (int c = 0; p->min_count && c < p->m; c++)
        if (p->min_count[c] < 0 || p->min_count[c] > p->n)
            return mode_err_set(err, MODE_EDATA, "knapsack: at least %d of %d items at choice %d", p->min_count[c], p->n, c);
    return MODE_OK;
}

static void finish(const struct mode_mckp *p, struct mode_mckp_result *r)
{
    double obj = 0, w = 0;
    for (int i = 0; i < p->n; i++) {
        obj += p->cost[(size_t)i * p->m + r->choice[i]];
        w += p->weight[(size_t)i * p->m + r->choice[i]];
    }
    r->objective = obj;
    r->weight = w;
}

/* ---- GLPK ------------------------------------------------------------------------------------ */

struct cb_state {
    double gap;
    int nodes;
};

static void mip_callback(glp_tree *t, void *info)
{
    struct cb_state *s = info;
    if (glp_ios_reason(t) == GLP_IBINGO || glp_ios_reason(t) == GLP_ISELECT) s->gap = glp_ios_mip_gap(t);
    int a, n, tot;
    glp_ios_tree_size(t, &a, &n, &tot);
    if (tot > s->nodes) s->nodes = tot;
}

static int glpk_silence(void *info, const char *s)
{
    (void)info, (void)s;
    return 1; /* nothing reaches the terminal */
}

int mode_mckp_glpk(const struct mode_mckp *p, struct mode_mckp_result *r, struct mode_err *err)
{
    int rc = mode_mckp_check(p, err);
    if (rc) return rc;
    const double t0 = now();
    const int n = p->n, m = p->m, nc = n * m;
    double cmax = 0, cmin = INFINITY, wmax = 0;
    for (int i = 0; i < nc; i++) {
        cmax = fmax(cmax, fabs(p->cost[i]));
        if (p->cost[i] != 0) cmin = fmin(cmin, fabs(p->cost[i]));
        wmax = fmax(wmax, p->weight[i]);
    }
    /* integer weights of an equality budget stay as they are: the equality is then exact */
    bool integral = p->equality && p->cap == floor(p->cap) && wmax <= 1e6;
    for (int i = 0; integral && i < nc; i++) integral = p->weight[i] == floor(p->weight[i]);
    /* GLPK's simplex tolerances are absolute (1e-7) for small reduced costs: costs are scaled so
     * that the smallest non-zero one is 1 (the largest at most 1e10), which keeps costs that span
     * many orders of magnitude (frequencies times KL divergences do) distinguishable */
    const double cs = cmax == 0 ? 1 : fmin(1 / cmin, 1e10 / cmax), ws = integral || wmax == 0 ? 1 : 1 / wmax;

    /* rows: one per item, the budget, then one per choice with a minimum count */
    int n_min = 0;
    for (int c = 0; p->min_count && c < m; c++) n_min += p->min_count[c] > 0;
    const size_t nnz = (size_t)(n_min ? 3 : 2) * (size_t)nc + 1;
    int *ia = malloc(sizeof *ia * nnz), *ja = malloc(sizeof *ja * nnz);
    double *ar = malloc(sizeof *ar * nnz);
    if (!ia || !ja || !ar) {
        free(ia), free(ja), free(ar);
        return mode_err_oom(err, sizeof(double) * nnz, "the knapsack's matrix");
    }
    glp_term_hook(glpk_silence, NULL);
    glp_prob *lp = glp_create_prob();
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_rows(lp, n + 1 + n_min);
    glp_add_cols(lp, nc);
    int k = 0;
    for (int i = 0; i < n; i++) {
        glp_set_row_bnds(lp, i + 1, GLP_FX, 1, 1);
        for (int c = 0; c < m; c++) {
            const int col = i * m + c + 1;
            glp_set_col_kind(lp, col, GLP_BV);
            glp_set_obj_coef(lp, col, p->cost[col - 1] * cs);
            ++k, ia[k] = i + 1, ja[k] = col, ar[k] = 1;
            if (p->weight[col - 1] != 0) ++k, ia[k] = n + 1, ja[k] = col, ar[k] = p->weight[col - 1] * ws;
        }
    }
    if (p->equality) glp_set_row_bnds(lp, n + 1, GLP_FX, p->cap * ws, p->cap * ws);
    else glp_set_row_bnds(lp, n + 1, GLP_UP, 0, p->cap * ws);
    for (int c = 0, row = n + 2; p->min_count && c < m; c++) {
        if (p->min_count[c] <= 0) continue;
        glp_set_row_bnds(lp, row, GLP_LO, p->min_count[c], 0);
        for (int i = 0; i < n; i++) ++k, ia[k] = row, ja[k] = i * m + c + 1, ar[k] = 1;
        row++;
    }
    glp_load_matrix(lp, k, ia, ja, ar);
    free(ia), free(ja), free(ar);

    memset(r->choice, 0, sizeof *r->choice * (size_t)n);
    r->nodes = 0;
    r->mip_gap = 0;
    glp_smcp sm;
    glp_init_smcp(&sm);
    sm.msg_lev = GLP_MSG_OFF;
    /* no presolver: with it, GLPK 5.0 stopped short of the LP optimum on some instances whose costs
     * span eight orders of magnitude (the test's style 3); the primal simplex alone is exact there */
    sm.presolve = GLP_OFF;
    int gr = glp_simplex(lp, &sm);
    if (gr == GLP_ENOPFS || (gr == 0 && glp_get_status(lp) == GLP_NOFEAS)) {
        r->status = MODE_MCKP_INFEASIBLE;
        r->objective = r->lp_bound = NAN;
        r->weight = NAN;
        r->seconds = now() - t0;
        glp_delete_prob(lp);
        glp_term_hook(NULL, NULL);
        return MODE_OK;
    }
    if (gr != 0 || glp_get_status(lp) != GLP_OPT) {
        int st = glp_get_status(lp);
        glp_delete_prob(lp);
        glp_term_hook(NULL, NULL);
        return mode_err_set(err, MODE_EINTERNAL, "GLPK's simplex failed on the relaxation (code %d, status %d)", gr, st);
    }
    r->lp_bound = glp_get_obj_val(lp) / cs;

    glp_iocp io;
    glp_init_iocp(&io);
    io.msg_lev = GLP_MSG_OFF;
    io.presolve = GLP_OFF; /* starts from the optimal basis just found */
    io.tol_obj = 1e-12;
    io.mip_gap = 0;
    io.tm_lim = p->time_limit > 0 ? (int)fmin(p->time_limit * 1000, 2e9) : INT32_MAX;
    struct cb_state cb = {0};
    io.cb_func = mip_callback;
    io.cb_info = &cb;
    gr = glp_intopt(lp, &io);
    const int ms = glp_mip_status(lp);
    r->nodes = cb.nodes;
    if (ms == GLP_OPT || ms == GLP_FEAS) {
        for (int i = 0; i < n; i++) {
            int best = 0;
            double bv = -1;
            for (int c = 0; c < m; c++) {
                double v = glp_mip_col_val(lp, i * m + c + 1);
                if (v > bv) bv = v, best = c;
            }
            r->choice[i] = best;
        }
        finish(p, r);
        r->status = ms == GLP_OPT && gr == 0 ? MODE_MCKP_OPTIMAL : MODE_MCKP_FEASIBLE;
        r->mip_gap = r->status == MODE_MCKP_OPTIMAL ? 0 : cb.gap;
    } else if (ms == GLP_NOFEAS) {
        r->status = MODE_MCKP_INFEASIBLE;
        r->objective = r->weight = NAN;
    } else if (gr == GLP_ETMLIM) {
        r->status = MODE_MCKP_TIMEOUT;
        r->objective = r->weight = NAN;
    } else {
        glp_delete_prob(lp);
        glp_term_hook(NULL, NULL);
        return mode_err_set(err, MODE_EINTERNAL, "GLPK's branch and bound failed (code %d, status %d)", gr, ms);
    }
    glp_delete_prob(lp);
    glp_term_hook(NULL, NULL);
    r->seconds = now() - t0;
    return MODE_OK;
}

/* ---- dynamic programme ----------------------------------------------------------------------- */

int mode_mckp_dp(const struct mode_mckp *p, struct mode_mckp_result *r, struct mode_err *err)
{
    int rc = mode_mckp_check(p, err);
    if (rc) return rc;
    const double t0 = now();
    const int n = p->n, m = p->m;
    for (int c = 0; p->min_count && c < m; c++)
        if (p->min_count[c] > 0) return mode_err_set(err, MODE_EUSAGE, "dynamic programme: minimum counts per choice are not supported");
    if (p->cap < 0 || p->cap != floor(p->cap) || p->cap > 1e9)
        return mode_err_set(err, MODE_EUSAGE, "dynamic programme: the budget %g is not a non-negative integer", p->cap);
    const long W = (long)p->cap;
    long *w = malloc(sizeof *w * (size_t)n * (size_t)m);
    if (!w) return mode_err_oom(err, sizeof *w * (size_t)n * (size_t)m, "weights");
    for (long i = 0; i < (long)n * m; i++) {
        if (p->weight[i] != floor(p->weight[i]) || p->weight[i] > 1e9) {
            free(w);
            return mode_err_set(err, MODE_EUSAGE, "dynamic programme: weight %g is not an integer", p->weight[i]);
        }
        w[i] = (long)p->weight[i];
    }
    const size_t cells = (size_t)n * (size_t)(W + 1);
    if (cells > ((size_t)1 << 30)) {
        free(w);
        return mode_err_set(err, MODE_EUNAVAILABLE, "dynamic programme: %d items x %ld totals is too big", n, W + 1);
    }
    double *f = malloc(sizeof *f * (size_t)(W + 1)), *g = malloc(sizeof *g * (size_t)(W + 1));
    uint8_t *pick = malloc(cells);
    if (!f || !g || !pick) {
        free(w), free(f), free(g), free(pick);
        return mode_err_oom(err, cells, "the dynamic programme's table");
    }
    /* f[t]: least cost of the items so far with total weight exactly t */
    for (long t = 0; t <= W; t++) f[t] = INFINITY;
    f[0] = 0;
    for (int i = 0; i < n; i++) {
        uint8_t *pk = pick + (size_t)i * (size_t)(W + 1);
        for (long t = 0; t <= W; t++) {
            double best = INFINITY;
            int bc = 0;
            for (int c = 0; c < m; c++) {
                long wt = w[(size_t)i * m + c];
                if (wt > t || f[t - wt] == INFINITY) continue;
                double v = f[t - wt] + p->cost[(size_t)i * m + c];
                if (v < best) best = v, bc = c;
            }
            g[t] = best;
            pk[t] = (uint8_t)bc;
        }
        double *tmp = f;
        f = g, g = tmp;
    }
    long bt = -1;
    if (p->equality) {
        if (f[W] < INFINITY) bt = W;
    } else {
        for (long t = 0; t <= W; t++)
            if (f[t] < INFINITY && (bt < 0 || f[t] < f[bt])) bt = t;
    }
    r->nodes = 0;
    r->mip_gap = 0;
    if (bt < 0) {
        r->status = MODE_MCKP_INFEASIBLE;
        r->objective = r->lp_bound = r->weight = NAN;
        memset(r->choice, 0, sizeof *r->choice * (size_t)n);
    } else {
        for (int i = n - 1; i >= 0; i--) {
            int c = pick[(size_t)i * (size_t)(W + 1) + (size_t)bt];
            r->choice[i] = c;
            bt -= w[(size_t)i * m + c];
        }
        finish(p, r);
        r->lp_bound = r->objective;
        r->status = MODE_MCKP_OPTIMAL;
    }
    free(w), free(f), free(g), free(pick);
    r->seconds = now() - t0;
    return MODE_OK;
}

void mode_mckp_reachable(int n, int m, const int *w, long t, long *below, long *above)
{
    *below = *above = -1;
    int wmax = 0;
    for (int c = 0; c < m; c++) wmax = w[c] > wmax ? w[c] : wmax;
    const long T = (long)n * wmax;
    uint8_t *a = calloc((size_t)T + 1, 1), *b = calloc((size_t)T + 1, 1);
    if (!a || !b) {
        free(a), free(b);
        return;
    }
    a[0] = 1;
    for (int i = 0; i < n; i++) {
        memset(b, 0, (size_t)T + 1);
        for (long s = 0; s <= (long)i * wmax; s++)
            if (a[s])
                for (int c = 0; c < m; c++) b[s + w[c]] = 1;
        uint8_t *x = a;
        a = b, b = x;
    }
    for (long s = 0; s <= T; s++) {
        if (!a[s]) continue;
        if (s <= t) *below = s;
        if (s >= t && *above < 0) *above = s;
    }
    free(a), free(b);
}
