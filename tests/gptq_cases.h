/* gptq_cases.h — random batches for the batched GPTQ tests (tests/lib/test_gptq.c for the C
 * reference, tests/kernels/test_gptq.c for the CUDA kernel): n_h Hessians 2/N XᵀX from
 * correlated random calibration rows (Hessian 1 has a dead column, X's column 7 all zero), n_mat
 * weights of mixed widths, two of them sharing a Hessian, one with an all-zero row; and the
 * comparison of two results of the same batch that forgives rounding ties (the first level that
 * differs in a row is one level off: both sides rounded a value within rounding of k + 1/2, and
 * the row's later columns follow another path). Header-only: each test includes it once. */
#ifndef MODE_TEST_GPTQ_CASES_H
#define MODE_TEST_GPTQ_CASES_H

#include "../lib/gptq.h"
#include "../lib/safetensors.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double gc_urand(void) { return (double)(tap_rand() >> 11) / 9007199254740992.0 - 0.5; }

struct gptq_case {
    struct mode_gptq_batch b;
    int64_t ng;
    int32_t hidx[8];
    uint8_t bits[8];
    int32_t info[8];
    double *H0; /* (n_h, cols, cols) the Hessians as made (b.H is destroyed by a run) */
};

/* rows x cols weights, n_mat <= 8 of them over n_h <= 8 Hessians */
static void gptq_case_make(struct gptq_case *c, int n_h, int n_mat, int64_t rows, int64_t cols, int group, bool sym, bool act)
{
    memset(c, 0, sizeof *c);
    static const uint8_t widths[8] = {2, 3, 4, 8, 4, 3, 2, 4};
    for (int m = 0; m < n_mat; m++) c->hidx[m] = m * n_h / n_mat, c->bits[m] = widths[m % 8];
    struct mode_gptq_batch *b = &c->b;
    *b = (struct mode_gptq_batch){.n_h = n_h, .n_mat = n_mat, .rows = rows, .cols = cols, .group = group, .sym = sym, .act_order = act,
                                  .hidx = c->hidx, .bits = c->bits, .info = c->info};
    const int64_t g = group <= 0 || group > cols ? cols : group, N = 4 * cols;
    c->ng = cols / g;
    const size_t nn = (size_t)(cols * cols), wn = (size_t)(rows * cols);
    c->H0 = calloc((size_t)n_h * nn, sizeof *c->H0);
    b->H = malloc(sizeof *b->H * (size_t)n_h * nn);
    float *W = malloc(sizeof *W * (size_t)n_mat * wn);
    double *X = malloc(sizeof *X * (size_t)(N * cols));
    for (int h = 0; h < n_h; h++) {
        /* correlated rows: x = z A with a random banded A, columns of differing scale */
        for (int64_t r = 0; r < N; r++)
            for (int64_t j = 0; j < cols; j++) {
                double v = 0;
                for (int t = 0; t < 4; t++) v += gc_urand() * (1.0 + 0.5 * t);
                X[r * cols + j] = v * (0.2 + (double)((j * 37 + h * 11) % 17) / 8.0);
            }
        for (int64_t r = 0; r < N; r++)
            for (int64_t j = 1; j < cols; j++) X[r * cols + j] += 0.6 * X[r * cols + j - 1];
        if (h == 1)
            for (int64_t r = 0; r < N; r++) X[r * cols + 7] = 0;
        double *H = c->H0 + (size_t)h * nn;
        for (int64_t r = 0; r < N; r++)
            for (int64_t i = 0; i < cols; i++)
                for (int64_t j = i; j < cols; j++) H[i * cols + j] += X[r * cols + i] * X[r * cols + j];
        for (int64_t i = 0; i < cols; i++)
            for (int64_t j = i; j < cols; j++) H[j * cols + i] = H[i * cols + j] = 2.0 / (double)N * H[i * cols + j];
    }
    for (size_t i = 0; i < (size_t)n_mat * wn; i++) W[i] = (float)(gc_urand() * 0.1);
    for (int64_t j = 0; j < cols; j++) W[j] = 0; /* weight 0's row 0: all zero */
    memcpy(b->H, c->H0, sizeof *b->H * (size_t)n_h * nn);
    b->W = W;
    b->deq = malloc(sizeof *b->deq * (size_t)n_mat * wn);
    b->q = malloc((size_t)n_mat * wn);
    b->scale = malloc(sizeof *b->scale * (size_t)n_mat * (size_t)(rows * c->ng));
    b->zero = malloc(sizeof *b->zero * (size_t)n_mat * (size_t)(rows * c->ng));
    b->g_idx = malloc(sizeof *b->g_idx * (size_t)(n_h * cols));
    b->work = malloc(mode_gptq_work_bytes(b));
    free(X);
}

static void gptq_case_free(struct gptq_case *c)
{
    free(c->H0), free(c->b.H), free((void *)c->b.W), free(c->b.deq), free(c->b.q), free(c->b.scale), free(c->b.zero), free(c->b.g_idx),
        free(c->b.work);
}

struct gptq_cmp {
    int64_t compared, same, far, tie_rows, deq_bad, param_bad, gidx_bad;
    double worst_deq;
};

/* a (the result under test) against r (the reference) for weight m: levels, dequantised values
 * (|Δ| ≤ 1e-6 · (|value| + scale): the same level gives the same value to within the f32
 * rounding of scales that differ in the last bits of a double), scale (relative 1e-6) and zero
 * on the rows without a tie */
static void gptq_cmp_weight(struct gptq_cmp *s, const struct mode_gptq_batch *b, int64_t ng, int m, const uint8_t *aq, const float *adeq,
                            const float *asc, const float *az, const uint8_t *rq, const float *rdeq, const float *rsc, const float *rz)
{
    const int64_t R = b->rows, C = b->cols;
    for (int64_t r = 0; r < R; r++) {
        const size_t o = (size_t)m * (size_t)(R * C) + (size_t)(r * C);
        int64_t first = -1;
        for (int64_t c = 0; c < C && first < 0; c++)
            if (aq[o + c] != rq[o + c]) first = c;
        if (first >= 0 && abs((int)aq[o + first] - (int)rq[o + first]) == 1) {
            s->tie_rows++;
            diag("weight %d row %lld takes the other side of a rounding tie at column %lld", m, (long long)r, (long long)first);
            continue;
        }
        for (int64_t c = 0; c < C; c++) {
            s->compared++;
            s->same += aq[o + c] == rq[o + c];
            s->far += abs((int)aq[o + c] - (int)rq[o + c]) > 1;
            const size_t po = (size_t)m * (size_t)(R * ng) + (size_t)(r * ng);
            const double sc = rsc[po], d = fabs((double)adeq[o + c] - rdeq[o + c]);
            if (d > 1e-6 * (fabs(rdeq[o + c]) + sc)) s->deq_bad++;
            if (d / sc > s->worst_deq) s->worst_deq = d / sc;
        }
        for (int64_t k = 0; k < ng; k++) {
            const size_t po = (size_t)m * (size_t)(R * ng) + (size_t)(r * ng + k);
            if (fabs(asc[po] - rsc[po]) > 1e-6 * fabs(rsc[po]) || az[po] != rz[po]) s->param_bad++;
        }
    }
}

static double gc_rel_out_err(const double *W, const float *D, const double *H, int rows, int cols)
{
    double num = 0, den = 0;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < cols; i++) {
            double a = 0, b = 0;
            for (int j = 0; j < cols; j++) {
                a += H[i * cols + j] * (D[r * cols + j] - W[r * cols + j]);
                b += H[i * cols + j] * W[r * cols + j];
            }
            num += (D[r * cols + i] - W[r * cols + i]) * a;
            den += W[r * cols + i] * b;
        }
    return sqrt(num / den);
}

/* the golden cases of tests/fixtures/big/gptq-golden (48 x 256; H given) through `run` */
static void gptq_goldens(int (*run)(struct mode_gptq_batch *b, struct mode_err *err), const char *who)
{
    char path[4096];
    const char *bf = getenv("MODE_BUILD_FIXTURES");
    snprintf(path, sizeof path, "%s/gptq-golden.safetensors", bf ? bf : "build/fixtures");
    struct mode_st_file g;
    struct mode_err err = {0};
    if (mode_st_open(&g, path, &err)) {
        ok(0, "open the GPTQ golden: %s", err.msg);
        return;
    }
    enum { R = 48, C = 256 };
    const double *W = mode_st_find(&g, "W")->data, *H = mode_st_find(&g, "H")->data;
    const int bits[4] = {2, 3, 4, 8}, groups[2] = {128, 64};
    for (int gi = 0; gi < 2; gi++)
        for (int sym = 0; sym < 2; sym++) {
            struct gptq_case c;
            gptq_case_make(&c, 1, 4, R, C, groups[gi], sym, false);
            float *Wf = (float *)c.b.W;
            for (int m = 0; m < 4; m++) {
                c.bits[m] = (uint8_t)bits[m];
                for (int i = 0; i < R * C; i++) Wf[m * R * C + i] = (float)W[i];
            }
            memcpy(c.b.H, H, sizeof(double) * C * C);
            int rc = run(&c.b, &err);
            ok(rc == MODE_OK, "%s, group %d %s: one batch of the four widths: %s", who, groups[gi], sym ? "sym" : "asym", rc ? err.msg : "runs");
            for (int m = 0; m < 4 && !rc; m++) {
                char name[96];
                snprintf(name, sizeof name, "gptq.b%d_g%d_%s.q", bits[m], groups[gi], sym ? "sym" : "asym");
                const uint8_t *gq = mode_st_find(&g, name)->data;
                int same = 0, far = 0, ties = 0, n = 0;
                for (int r = 0; r < R; r++) {
                    int first = -1;
                    const uint8_t *q = c.b.q + (size_t)m * R * C + (size_t)r * C;
                    for (int k = 0; k < C && first < 0; k++)
                        if (q[k] != gq[r * C + k]) first = k;
                    if (first >= 0 && abs((int)q[first] - (int)gq[r * C + first]) == 1) {
                        ties++;
                        continue;
                    }
                    for (int k = 0; k < C; k++) same += q[k] == gq[r * C + k], far += abs((int)q[k] - (int)gq[r * C + k]) > 1, n++;
                }
                /* the golden's own output error, from its levels, scales and zeros */
                snprintf(name, sizeof name, "gptq.b%d_g%d_%s.scale", bits[m], groups[gi], sym ? "sym" : "asym");
                const double *gs = mode_st_find(&g, name)->data;
                snprintf(name, sizeof name, "gptq.b%d_g%d_%s.zero", bits[m], groups[gi], sym ? "sym" : "asym");
                const double *gz = mode_st_find(&g, name)->data;
                float *gdeq = malloc(sizeof *gdeq * R * C);
                const int ng = C / groups[gi];
                for (int i = 0; i < R * C; i++) {
                    const int k = (i / C) * ng + (i % C) / groups[gi];
                    gdeq[i] = (float)(gs[k] * (gq[i] - gz[k]));
                }
                const double want = gc_rel_out_err(W, gdeq, H, R, C), got = gc_rel_out_err(W, c.b.deq + (size_t)m * R * C, H, R, C);
                free(gdeq);
                ok(same >= 0.99 * n && far == 0 && fabs(got - want) <= 1e-3 * want + 1e-4 && ties <= 3,
                   "b%d g%d %s: %.2f%% on the golden's level, %d further than one, %d tie rows; output error %.6f vs %.6f", bits[m], groups[gi],
                   sym ? "sym" : "asym", 100.0 * same / (n ? n : 1), far, ties, got, want);
            }
            gptq_case_free(&c);
        }
    mode_st_close(&g);
}

#endif
