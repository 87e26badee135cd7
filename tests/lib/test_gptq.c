/* test_gptq — mode_gptq_ref, the batched GPTQ (lib/gptq.c) and the C reference of the CUDA
 * kernel: against the float64 goldens of the published algorithm (all four widths of a case in
 * one batch sharing its Hessian: at least 99% of levels equal, none more than one off, output
 * error within 1e-3 relative, as test_quant asks of mode_quant_gptq); against mode_quant_gptq
 * (one weight at a time, its own code for the dead columns, the act order and the blocks; the
 * same factorisation) weight by weight on random batches (mixed widths, shared and dead-column Hessians, act order,
 * groups smaller than, equal to and larger than the 128-column block, a partial last block): the
 * same levels, values and group parameters except on rows that meet a rounding tie (named); the
 * errors: a NaN Hessian, one that is not positive definite, a width and a Hessian index out of
 * range. */
#include "../../lib/quant.h"
#include "gptq_cases.h"

#include <stdio.h>

/* the batch against mode_quant_gptq weight by weight */
static void against_quant(int rows, int cols, int group, bool sym, bool act)
{
    struct gptq_case c;
    struct mode_err err = {0};
    gptq_case_make(&c, 3, 5, rows, cols, group, sym, act);
    const int rc = mode_gptq_ref(&c.b, &err);
    ok(rc == MODE_OK, "%dx%d group %d%s%s: batch of 5 weights over 3 Hessians: %s", rows, cols, group, sym ? " sym" : "", act ? " act-order" : "",
       rc ? err.msg : "runs");
    if (rc) {
        gptq_case_free(&c);
        return;
    }
    const size_t wn = (size_t)rows * cols, pn = (size_t)rows * (size_t)c.ng;
    uint8_t *q = malloc(wn * 5);
    float *deq = malloc(sizeof *deq * wn * 5), *sc = malloc(sizeof *sc * pn * 5), *z = malloc(sizeof *z * pn * 5);
    int32_t *gidx = malloc(sizeof *gidx * (size_t)cols);
    struct gptq_cmp s = {0};
    int gidx_bad = 0, runs = 0;
    for (int m = 0; m < 5; m++) {
        struct mode_quant_opts o = {.bits = c.bits[m], .group = group, .sym = sym, .act_order = act};
        struct mode_quant_out out = {q + m * wn, sc + m * pn, z + m * pn, gidx, deq + m * wn};
        runs += mode_quant_gptq(c.b.W + m * wn, rows, cols, c.H0 + (size_t)c.hidx[m] * cols * cols, &o, &out, &err) == MODE_OK;
        for (int k = 0; k < cols; k++) gidx_bad += gidx[k] != c.b.g_idx[(size_t)c.hidx[m] * cols + k];
        gptq_cmp_weight(&s, &c.b, c.ng, m, c.b.q, c.b.deq, c.b.scale, c.b.zero, q, deq, sc, z);
    }
    ok(runs == 5 && s.same == s.compared && s.far == 0 && s.deq_bad == 0 && s.param_bad == 0 && gidx_bad == 0 &&
           s.tie_rows * 20 <= 5 * rows,
       "  = mode_quant_gptq: %lld/%lld levels, worst value difference %.2g scale, %lld group parameters off, g_idx %s, %lld tie rows",
       (long long)s.same, (long long)s.compared, s.worst_deq, (long long)s.param_bad, gidx_bad ? "differs" : "equal", (long long)s.tie_rows);
    /* the dead column of Hessian 1 is zero in its weights */
    int dead_ok = 1;
    for (int m = 0; m < 5; m++)
        if (c.hidx[m] == 1)
            for (int r = 0; r < rows; r++) dead_ok &= c.b.deq[m * wn + (size_t)r * cols + 7] == 0;
    ok(dead_ok, "  a dead column (no activation) is zero in the weights that use its Hessian");
    free(q), free(deq), free(sc), free(z), free(gidx);
    gptq_case_free(&c);
}

static void errors(void)
{
    struct gptq_case c;
    struct mode_err err = {0};
    gptq_case_make(&c, 2, 3, 16, 64, 32, false, false);
    c.b.H[(64 + 5) * 64 + 5] = NAN;
    ok(mode_gptq_ref(&c.b, &err) == MODE_EDATA && c.info[1] == -6, "a NaN on Hessian 1's diagonal: bad data, info -6 (%s)", err.msg);
    has_str(err.msg, "Hessian 1 has a non-finite diagonal at column 5", "named");
    memcpy(c.b.H, c.H0, sizeof(double) * 2 * 64 * 64);
    for (int i = 0; i < 64; i++) c.b.H[i * 64 + i] = -1; /* negative definite: damping cannot save it */
    const int rc = mode_gptq_ref(&c.b, &err);
    ok(rc == MODE_EDATA && c.info[0] > 0, "a Hessian that is not positive definite: bad data, pivot %d", c.info[0]);
    has_str(err.msg, "not positive definite", "said");
    memcpy(c.b.H, c.H0, sizeof(double) * 2 * 64 * 64);
    c.bits[2] = 5;
    ok(mode_gptq_ref(&c.b, &err) == MODE_EUSAGE, "5 bits: usage error (%s)", err.msg);
    c.bits[2] = 4, c.hidx[2] = 2;
    ok(mode_gptq_ref(&c.b, &err) == MODE_EUSAGE, "Hessian 2 of 2: usage error (%s)", err.msg);
    c.hidx[2] = 1;
    c.b.group = 48;
    ok(mode_gptq_ref(&c.b, &err) == MODE_EUSAGE, "group 48 for 64 columns: usage error (%s)", err.msg);
    gptq_case_free(&c);
}

int main(void)
{
    gptq_goldens(mode_gptq_ref, "mode_gptq_ref");
    against_quant(48, 256, 64, false, false);  /* two groups per block */
    against_quant(48, 256, 128, true, true);   /* a group per block, act order, symmetric */
    against_quant(40, 160, 32, false, true);   /* a partial last block */
    against_quant(32, 192, 0, false, false);   /* one group per row: larger than the block */
    errors();
    return tap_done();
}
