/* test_qgemm — the packed prefill (kernels/qgemm.cu, mode_qmoe_prefill_cuda) against its C
 * reference mode_qmoe_ref and against the v0 path (mode_qmoe_dequant_cuda, then
 * mode_moe_bf16_cuda) on the same inputs: random packed layers with widths 2, 3, 4, 8 and 16
 * mixed in one layer, groups 32/64/128, column tiles cut short (D 160, I 96), more experts than
 * one launch takes (300), 1, 3, 17, 100 and 1000 tokens; expert 0 in every token and the last in
 * none (make_routing). Outputs poisoned with NaN. The call captured in a CUDA graph (through
 * mode_cuda_bench, the only capture in mode_cuda.h) gives the eager call's output bit for bit.
 * Skipped without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/moe.h"
#include "../../lib/qmoe.h"
#include "qmoe_cases.h"

#include <math.h>
#include <stdio.h>

/* Against mode_qmoe_ref (f32 weights, f32 x, double sums): both GPU paths round x, the weights
 * and the activations to bf16 (2⁻⁹ relative each), so the error is a few 2⁻⁹ of the output's
 * size — test_moe's bound for the v0 path, ‖gpu − ref‖ / ‖ref‖ ≤ 1e-2, and per element 5% of the
 * output's RMS (an output near zero has no relative accuracy; the largest of ~10⁵ errors of RMS
 * ~3e-3·RMS stays under 2e-2·RMS) plus 2% of the element. */
#define REF_REL 1e-2
#define REF_ATOL_RMS 5e-2
#define REF_RTOL 2e-2
/* Against v0: the same bf16 weights (the same f32 expression rounded the same way), the same
 * bf16 rows and the same SiLU·mul; only the f32 sums run in another order (cuBLAS against the
 * mma tiles), ~1e-7 relative — except where that flips an activation's bf16 rounding: one ulp
 * (2⁻⁸ relative) of one of I activations, through one down weight, moves an output by ≲ 1e-3 of
 * the RMS. 100x tighter than against the reference: a wrong weight, row or column is not. */
#define V0_REL 1e-4
#define V0_ATOL_RMS 2e-3
#define V0_RTOL 1e-3

/* per element |got − want| ≤ atol·rms(want) + rtol·|want|, the normalised error ≤ rel, no NaN;
 * the first mismatches printed */
static int compare(const char *what, const float *got, const float *want, size_t n, double rel, double atol_rms, double rtol)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) den += (double)want[i] * want[i];
    const double rms = sqrt(den / (double)n), atol = atol_rms * rms;
    size_t bad = 0, nan = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)got[i] - want[i];
        nan += !isfinite(got[i]);
        num += d * d;
        if (!(fabs(d) <= atol + rtol * fabs(want[i]))) {
            if (bad < 3) diag("%s: element %zu: %.9g, want %.9g (bound %.3g)", what, i, got[i], want[i], atol + rtol * fabs(want[i]));
            bad++;
        }
    }
    const double r = sqrt(num / den);
    return ok(!bad && !nan && r <= rel, "%s: rel err %.2e (bound %.0e), %zu of %zu elements out of bounds, %zu not finite", what, r, rel, bad, n, nan);
}

struct graph_ctx {
    const struct mode_qmoe_layer *L;
    struct mode_moe_route r;
    const float *x;
    void *work;
    float *eager, *graph;
    int calls, n_eager;
};

/* mode_cuda_bench's calls: 10 warm-up and `iters` timed ones run eagerly, then one per variant is
 * captured; only the captured call writes `graph`, so after the replays it holds their output */
static int run_prefill(void *vctx, int v, void *stream, struct mode_err *err)
{
    struct graph_ctx *c = vctx;
    (void)v;
    float *out = c->calls++ < c->n_eager ? c->eager : c->graph;
    return mode_qmoe_prefill_cuda(c->L, &c->r, c->x, c->work, out, stream, err);
}

struct dev_layer {
    struct mode_qmoe_layer L;
    void *qw, *qz, *sc, *off, *bits, *gu, *dn; /* gu, dn: the layer dequantised to bf16 (v0) */
};

static int dev_layer_make(const struct host_layer *h, struct dev_layer *d, struct mode_err *err)
{
    memset(d, 0, sizeof *d);
    const int E = h->L.n_expert, D = h->L.d, I = h->L.i;
    int rc = upload(&d->qw, h->qw, h->n_qw * 4, err) || upload(&d->qz, h->qz, h->n_qz * 4, err) || upload(&d->sc, h->sc, h->n_sc * 2, err) ||
             upload(&d->off, h->off, (size_t)E * 9 * 8, err) || upload(&d->bits, h->bits, (size_t)E, err) ||
             mode_cuda_malloc(&d->gu, (size_t)E * D * 2 * I * 2, err) || mode_cuda_malloc(&d->dn, (size_t)E * I * D * 2, err);
    d->L = h->L;
    d->L.qweight = d->qw, d->L.qzeros = d->qz, d->L.scales = d->sc, d->L.off = d->off, d->L.bits = d->bits;
    if (!rc) rc = mode_qmoe_dequant_cuda(&d->L, d->gu, d->dn, NULL, err);
    return rc;
}

static void dev_layer_free(struct dev_layer *d)
{
    mode_cuda_free(d->qw), mode_cuda_free(d->qz), mode_cuda_free(d->sc), mode_cuda_free(d->off), mode_cuda_free(d->bits), mode_cuda_free(d->gu),
        mode_cuda_free(d->dn);
}

/* one routing of T tokens through the layer: prefill against the reference and v0; graph: the
 * captured call too */
static void check(const struct host_layer *h, const struct dev_layer *dl, int T, int k, int graph)
{
    struct mode_err err = {0};
    const int E = h->L.n_expert, D = h->L.d;
    const size_t P = (size_t)T * k, n = (size_t)T * D;
    int32_t *ex = malloc(sizeof *ex * P), *order = malloc(sizeof *order * P), *slot = malloc(sizeof *slot * P);
    float *w = malloc(sizeof *w * P), *x = malloc(sizeof *x * n), *ref = malloc(sizeof *ref * n), *got = malloc(sizeof *got * n),
          *v0 = malloc(sizeof *v0 * n), *gg = malloc(sizeof *gg * n);
    int64_t *start = malloc(sizeof *start * (size_t)(E + 1));
    for (size_t i = 0; i < n; i++) x[i] = (float)(urand() * 2 - 1), got[i] = v0[i] = gg[i] = NAN;
    make_routing(T, k, E, ex, w);
    int rc = mode_moe_route_sort(ex, T, k, E, order, slot, start, &err);
    if (!rc) rc = mode_qmoe_ref(&h->L, T, k, x, ex, w, ref, &err);
    void *dorder = NULL, *dslot = NULL, *dw = NULL, *dx = NULL, *dout = NULL, *dv0 = NULL, *dgraph = NULL, *work = NULL, *work0 = NULL;
    const struct mode_moe_dense dense = {E, D, h->L.i, dl->gu, dl->dn};
    if (!rc)
        rc = upload(&dorder, order, sizeof *order * P, &err) || upload(&dslot, slot, sizeof *slot * P, &err) || upload(&dw, w, sizeof *w * P, &err) ||
             upload(&dx, x, sizeof *x * n, &err) || upload(&dout, got, sizeof *got * n, &err) || upload(&dv0, v0, sizeof *v0 * n, &err) ||
             upload(&dgraph, gg, sizeof *gg * n, &err) || mode_cuda_malloc(&work, mode_qmoe_prefill_work_bytes(&dl->L, T, k), &err) ||
             mode_cuda_malloc(&work0, mode_moe_work_bytes(&dense, T, k), &err);
    const struct mode_moe_route r = {T, k, dorder, dslot, dw, start};
    if (!rc) rc = mode_qmoe_prefill_cuda(&dl->L, &r, dx, work, dout, NULL, &err);
    if (!rc) rc = mode_moe_bf16_cuda(&dense, &r, dx, work0, dv0, NULL, &err);
    if (!rc) rc = mode_cuda_sync(&err);
    if (!rc) rc = mode_cuda_download(got, dout, sizeof *got * n, &err) || mode_cuda_download(v0, dv0, sizeof *v0 * n, &err);
    char what[160];
    if (rc) ok(0, "%d experts, D %d, I %d, %d tokens top-%d: %s", E, D, h->L.i, T, k, err.msg);
    else {
        snprintf(what, sizeof what, "%d experts, D %d, I %d, groups %d/%d, %d tokens top-%d, against mode_qmoe_ref", E, D, h->L.i, h->L.group_d, h->L.group_i,
                 T, k);
        compare(what, got, ref, n, REF_REL, REF_ATOL_RMS, REF_RTOL);
        snprintf(what, sizeof what, "the same against v0 (dequantised to bf16, then mode_moe_bf16_cuda)");
        compare(what, got, v0, n, V0_REL, V0_ATOL_RMS, V0_RTOL);
        compare("v0 against mode_qmoe_ref (the bound holds for the old path too)", v0, ref, n, REF_REL, REF_ATOL_RMS, REF_RTOL);
    }
    if (!rc && graph) {
        enum { ITERS = 3, WARMUP = 10 /* mode_cuda.h: mode_cuda_bench's warm-up calls */ };
        struct graph_ctx c = {&dl->L, r, dx, work, dout, dgraph, 0, WARMUP + ITERS};
        double us = 0, gus = 0;
        rc = mode_cuda_bench(run_prefill, &c, 1, ITERS, &us, &gus, &err);
        if (!rc) rc = mode_cuda_download(gg, dgraph, sizeof *gg * n, &err);
        ok(!rc && c.calls == WARMUP + ITERS + 1, "mode_cuda_bench: %d calls (%d eager, then one captured), %.1f us, %.1f us from the graph %s", c.calls,
           c.n_eager, us, gus, rc ? err.msg : "");
        ok(!rc && !memcmp(gg, got, sizeof *gg * n), "%d tokens: the call captured in a CUDA graph gives the eager output bit for bit", T);
    }
    mode_cuda_free(dorder), mode_cuda_free(dslot), mode_cuda_free(dw), mode_cuda_free(dx), mode_cuda_free(dout), mode_cuda_free(dv0),
        mode_cuda_free(dgraph), mode_cuda_free(work), mode_cuda_free(work0);
    free(ex), free(order), free(slot), free(w), free(x), free(ref), free(got), free(v0), free(gg), free(start);
}

/* argument checks: MODE_EUSAGE, nothing launched */
static void check_usage(const struct dev_layer *dl)
{
    struct mode_err err = {0};
    const int E = dl->L.n_expert;
    int64_t *start = calloc((size_t)E + 1, sizeof *start);
    void *work = NULL;
    int rc = mode_cuda_malloc(&work, 256, &err);
    start[E] = 3; /* three pairs claimed, T·k = 4 */
    struct mode_moe_route r = {2, 2, NULL, NULL, NULL, start};
    if (!rc) rc = mode_qmoe_prefill_cuda(&dl->L, &r, NULL, work, NULL, NULL, &err);
    ok(rc == MODE_EUSAGE, "a routing whose starts do not span the T·k pairs: MODE_EUSAGE (%s)", err.msg);
    start[E] = 4, start[1] = 5;
    rc = mode_qmoe_prefill_cuda(&dl->L, &r, NULL, work, NULL, NULL, &err);
    ok(rc == MODE_EUSAGE, "a decreasing start: MODE_EUSAGE (%s)", err.msg);
    memset(start, 0, sizeof *start * ((size_t)E + 1));
    r.T = 0;
    rc = mode_qmoe_prefill_cuda(&dl->L, &r, NULL, work, NULL, NULL, &err);
    ok(rc == MODE_OK, "no token: nothing to do, MODE_OK %s", rc ? err.msg : "");
    r.T = 2;
    struct mode_qmoe_layer bad = dl->L;
    bad.group_d = 48;
    rc = mode_qmoe_prefill_cuda(&bad, &r, NULL, work, NULL, NULL, &err);
    ok(rc == MODE_EUSAGE, "a group of 48: MODE_EUSAGE (%s)", err.msg);
    ok(mode_qmoe_prefill_work_bytes(&dl->L, 0, 8) == 0 && mode_qmoe_prefill_work_bytes(&dl->L, 5, 2) >= 10 * (size_t)dl->L.d * 6 + 10 * (size_t)dl->L.i * 2,
       "work bytes: none for no token; rows bf16, activations bf16 and down products f32 otherwise");
    mode_cuda_free(work);
    free(start);
}

int main(void)
{
    struct mode_err err = {0};
    if (!mode_cuda_built()) tap_skip_all("built without CUDA");
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    tap_seed(0x9e3779b97f4a7c15ull);
    static const int widths[5] = {2, 3, 4, 8, 16};
    const struct {
        int E, D, I, gd, gi, k, n_tok, tokens[5], graph; /* graph: the index of the token count also run from a graph, -1 none */
    } cases[] = {
        {10, 256, 128, 64, 32, 4, 5, {1, 3, 17, 100, 1000}, 3}, /* each width twice */
        {6, 160, 96, 32, 32, 2, 2, {17, 100}, -1},             /* the last column tile of both GEMMs cut short */
        {6, 256, 128, 128, 128, 2, 2, {3, 100}, -1},
        {300, 64, 32, 32, 32, 8, 1, {40}, 0}, /* 300 experts: two launches per GEMM */
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        struct host_layer h;
        make_layer(&h, cases[ci].E, cases[ci].D, cases[ci].I, cases[ci].gd, cases[ci].gi, widths, 5);
        struct dev_layer dl;
        if (dev_layer_make(&h, &dl, &err)) ok(0, "layer upload: %s", err.msg);
        else {
            if (!ci) check_usage(&dl);
            for (int t = 0; t < cases[ci].n_tok; t++) check(&h, &dl, cases[ci].tokens[t], cases[ci].k, cases[ci].graph == t);
        }
        dev_layer_free(&dl);
        free_layer(&h);
    }
    return tap_done();
}
