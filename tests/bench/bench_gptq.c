/* bench_gptq — GPTQ on the GPU (kernels/gptq.cu) at Qwen3-VL-30B-A3B's expert shapes, against the
 * CPU path measured in the same run: 128 experts, hidden 2048, expert width 768, 4096 calibration
 * tokens per expert (65,536 tokens x top-8 / 128), group 128, one width for all (4 bits; the
 * width changes only the rounding).
 *
 *   hessians     128 Hessians 2/N XᵀX of 4096 x 2048 rows (mode_hessian_cuda, f64)
 *   one expert   mode_gptq_cuda on one 768 x 2048 projection (Hessian given), both factorisations
 *   layer        every expert of a layer: gate and up (256 weights over 128 Hessians 2048²) then
 *                down (128 weights 2048 x 768 over 128 Hessians 768²), both factorisations
 *   cpu          mode_quant_gptq (the path mode-pack takes on the CPU) and mode_gptq_ref (the
 *                kernel's C reference) on one 768 x 2048 projection, and mode_hessian_add on its
 *                4096 rows
 * GPU times: synchronised host clock around the call (each call is milliseconds; the Hessians are
 * restored from a pristine device copy outside the timed region), warm-up first, median of
 * REPEATS. Inputs random (never zeros). Prints the table last.
 *
 *   make CUDA=1 bench && build/bench/bench_gptq [REPEATS]      (without a GPU: the CPU rows only)
 */
#include "../../kernels/mode_cuda.h"
#include "../../lib/gptq.h"
#include "../../lib/quant.h"
#include "tap.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { E = 128, D = 2048, I = 768, NTOK = 4096, GRP = 128, BITS = 4, MAXREP = 32 };

static float frand(void) { return (float)((double)(tap_rand() >> 11) / 9007199254740992.0 * 2 - 1); }

struct row {
    char name[64];
    double ms, gflop;
    int gpu;
};
static struct row rows_out[32];
static int n_rows;

static void add_row(const char *name, double ms, double gflop, int gpu)
{
    struct row *r = &rows_out[n_rows++];
    snprintf(r->name, sizeof r->name, "%s", name);
    r->ms = ms, r->gflop = gflop, r->gpu = gpu;
}

/* flops of GPTQ on weights (rows, n): in-block updates rows·n·B, lazy GEMMs ~rows·n², as 2·FMA */
static double gptq_flop(double rows, double n) { return 2 * (rows * n * 64 + rows * n * (n - 128) / 2); }
/* factorisation per Hessian: potrf n³/3 + (batched: trsm n³ | loop: trtri n³/3), FMAs x 2 */
static double factor_flop(double n, int loop) { return 2 * (n * n * n / 3 + (loop ? n * n * n / 3 : n * n * n)); }

static int device_part(int reps, const float *Xpool, const float *Wg, const float *Xa, const float *Wd, struct mode_err *err)
{
    int rc = MODE_OK;
    const size_t HH = (size_t)D * D, hh = (size_t)I * I;
    void *dX = NULL, *dXd = NULL, *dH = NULL, *dH0 = NULL, *dW = NULL, *ddeq = NULL, *dq = NULL, *dsc = NULL, *dz = NULL, *dg = NULL, *dwork = NULL;
    /* the layer's gate/up batch is the largest: size everything for it */
    int32_t hidx[2 * E], info[E];
    uint8_t bits[2 * E];
    for (int m = 0; m < 2 * E; m++) hidx[m] = m / 2, bits[m] = BITS;
    struct mode_gptq_batch big = {.n_h = E, .n_mat = 2 * E, .rows = I, .cols = D, .group = GRP, .hidx = hidx, .bits = bits, .info = info};
    const size_t work = mode_gptq_work_bytes(&big), wn = (size_t)2 * E * I * D, pn = (size_t)2 * E * I * (D / GRP);
    const size_t pool_rows = NTOK + 8 * (E - 1);
    if (!rc) rc = mode_cuda_malloc(&dX, sizeof(float) * pool_rows * D, err);
    if (!rc) rc = mode_cuda_malloc(&dXd, sizeof(double) * NTOK * D, err);
    if (!rc) rc = mode_cuda_malloc(&dH, sizeof(double) * HH * E, err);
    if (!rc) rc = mode_cuda_malloc(&dH0, sizeof(double) * HH * E, err);
    if (!rc) rc = mode_cuda_malloc(&dW, sizeof(float) * wn, err);
    if (!rc) rc = mode_cuda_malloc(&ddeq, sizeof(float) * wn, err);
    if (!rc) rc = mode_cuda_malloc(&dq, wn, err);
    if (!rc) rc = mode_cuda_malloc(&dsc, sizeof(float) * pn, err);
    if (!rc) rc = mode_cuda_malloc(&dz, sizeof(float) * pn, err);
    if (!rc) rc = mode_cuda_malloc(&dg, sizeof(int32_t) * (size_t)E * D, err);
    if (!rc) rc = mode_cuda_malloc(&dwork, work, err);
    if (!rc) rc = mode_cuda_upload(dX, Xpool, sizeof(float) * pool_rows * D, err);
    /* Hessians: expert e from rows [8e, 8e + 4096) of the pool */
    double t[MAXREP];
    for (int it = -1; it < reps && !rc; it++) {
        const double t0 = now();
        for (int e = 0; e < E && !rc; e++)
            rc = mode_hessian_cuda((const float *)dX + (size_t)8 * e * D, NTOK, D, 2.0 / NTOK, dXd, (double *)dH0 + (size_t)e * HH, NULL, err);
        if (!rc) rc = mode_cuda_sync(err);
        if (it >= 0) t[it] = now() - t0;
    }
    if (!rc) add_row("hessians 128 x (4096 x 2048)", 1e3 * median(t, reps), 2.0 * E * NTOK * (double)D * D / 2 / 1e9, 1);
    /* weights: the gate and up of the layer (the same two random matrices for every expert) */
    float *Wall = malloc(sizeof(float) * wn);
    if (!Wall) return mode_err_oom(err, wn * 4, "weights");
    for (size_t m = 0; m < (size_t)2 * E; m++) memcpy(Wall + m * I * D, Wg + (m % 2) * (size_t)I * D, sizeof(float) * I * D);
    if (!rc) rc = mode_cuda_upload(dW, Wall, sizeof(float) * wn, err);
    free(Wall);
    static const char *const fac[2] = {"batched", "loop"};
    for (int f = 0; f < 2 && !rc; f++) {
        setenv("MODE_GPTQ_FACTOR", fac[f], 1);
        /* one expert projection */
        struct mode_gptq_batch one = big;
        one.n_h = 1, one.n_mat = 1;
        one.H = dH, one.W = dW, one.deq = ddeq, one.q = dq, one.scale = dsc, one.zero = dz, one.g_idx = dg, one.work = dwork;
        for (int it = -1; it < reps && !rc; it++) {
            rc = mode_cuda_copy(dH, dH0, sizeof(double) * HH, err);
            if (!rc) rc = mode_cuda_sync(err);
            const double t0 = now();
            if (!rc) rc = mode_gptq_cuda(&one, NULL, err);
            if (!rc) rc = mode_cuda_sync(err);
            if (it >= 0) t[it] = now() - t0;
        }
        char name[64];
        snprintf(name, sizeof name, "one expert 768 x 2048 (%s)", fac[f]);
        if (!rc) add_row(name, 1e3 * median(t, reps), (gptq_flop(I, D) + factor_flop(D, f)) / 1e9, 1);
        /* the layer: gate/up then down */
        struct mode_gptq_batch gu = one, dn = one;
        gu.n_h = E, gu.n_mat = 2 * E;
        dn.n_h = E, dn.n_mat = E, dn.rows = D, dn.cols = I;
        double tl[MAXREP];
        for (int it = -1; it < reps && !rc; it++) {
            rc = mode_cuda_copy(dH, dH0, sizeof(double) * HH * E, err);
            if (!rc) rc = mode_cuda_sync(err);
            double t0 = now();
            if (!rc) rc = mode_gptq_cuda(&gu, NULL, err);
            if (!rc) rc = mode_cuda_sync(err);
            const double tg = now() - t0;
            /* down: Hessians 768² from the activation rows, weights 2048 x 768 */
            if (!rc) rc = mode_cuda_upload(dX, Xa, sizeof(float) * NTOK * I, err);
            for (int e = 0; e < E && !rc; e++) rc = mode_hessian_cuda((const float *)dX, NTOK, I, 2.0 / NTOK, dXd, (double *)dH + (size_t)e * hh, NULL, err);
            for (int e = 0; e < E && !rc; e++) rc = mode_cuda_upload((float *)dW + (size_t)e * D * I, Wd, sizeof(float) * D * I, err);
            if (!rc) rc = mode_cuda_sync(err);
            t0 = now();
            if (!rc) rc = mode_gptq_cuda(&dn, NULL, err);
            if (!rc) rc = mode_cuda_sync(err);
            if (it >= 0) t[it] = tg, tl[it] = now() - t0;
            /* the gate/up weights and the pool back for the next repetition */
            for (int m = 0; m < 2 * E && !rc; m++) rc = mode_cuda_upload((float *)dW + (size_t)m * I * D, Wg + (m % 2) * (size_t)I * D, sizeof(float) * I * D, err);
            if (!rc) rc = mode_cuda_upload(dX, Xpool, sizeof(float) * pool_rows * D, err);
        }
        if (!rc) {
            const double a = median(t, reps), b = median(tl, reps);
            snprintf(name, sizeof name, "layer gate+up 256 x (768 x 2048) (%s)", fac[f]);
            add_row(name, 1e3 * a, (2 * E * gptq_flop(I, D) + E * factor_flop(D, f)) / 1e9, 1);
            snprintf(name, sizeof name, "layer down 128 x (2048 x 768) (%s)", fac[f]);
            add_row(name, 1e3 * b, (E * gptq_flop(D, I) + E * factor_flop(I, f)) / 1e9, 1);
            snprintf(name, sizeof name, "layer, all 128 experts (%s)", fac[f]);
            add_row(name, 1e3 * (a + b), 0, 1);
        }
    }
    mode_cuda_free(dX), mode_cuda_free(dXd), mode_cuda_free(dH), mode_cuda_free(dH0), mode_cuda_free(dW), mode_cuda_free(ddeq), mode_cuda_free(dq),
        mode_cuda_free(dsc), mode_cuda_free(dz), mode_cuda_free(dg), mode_cuda_free(dwork);
    return rc;
}

int main(int argc, char **argv)
{
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    if (reps < 1) reps = 1;
    if (reps > MAXREP) reps = MAXREP;
    tap_seed(17);
    struct mode_err err = {0};
    const size_t pool_rows = NTOK + 8 * (E - 1);
    float *Xpool = malloc(sizeof(float) * pool_rows * D), *Wg = malloc(sizeof(float) * 2 * I * D), *Xa = malloc(sizeof(float) * NTOK * I),
          *Wd = malloc(sizeof(float) * D * I);
    if (!Xpool || !Wg || !Xa || !Wd) return 1;
    for (size_t i = 0; i < pool_rows * D; i++) Xpool[i] = frand() + (i % D < 16 ? 4 * frand() : 0);
    for (size_t i = 0; i < (size_t)2 * I * D; i++) Wg[i] = frand() * 0.05f;
    for (size_t i = 0; i < (size_t)NTOK * I; i++) Xa[i] = frand() * 0.5f;
    for (size_t i = 0; i < (size_t)D * I; i++) Wd[i] = frand() * 0.05f;

    /* the CPU path: one 768 x 2048 projection */
    {
        struct mode_hessian hs;
        double *H = malloc(sizeof *H * D * D), *Hc = malloc(sizeof *Hc * D * D);
        float *deq = malloc(sizeof *deq * I * D), *sc = malloc(sizeof *sc * I * (D / GRP)), *z = malloc(sizeof *z * I * (D / GRP));
        uint8_t *q = malloc((size_t)I * D);
        int32_t gidx[D];
        double t[MAXREP];
        const int cr = reps < 3 ? reps : 3;
        for (int it = 0; it < cr; it++) {
            const double t0 = now();
            mode_hessian_init(&hs, D, &err);
            mode_hessian_add(&hs, Xpool, NTOK);
            mode_hessian_get(&hs, H);
            mode_hessian_free(&hs);
            t[it] = now() - t0;
        }
        add_row("cpu: hessian 4096 x 2048", 1e3 * median(t, cr), 2.0 * NTOK * (double)D * D / 2 / 1e9, 0);
        struct mode_quant_opts o = {.bits = BITS, .group = GRP};
        struct mode_quant_out out = {q, sc, z, gidx, deq};
        for (int it = 0; it < cr; it++) {
            const double t0 = now();
            mode_quant_gptq(Wg, I, D, H, &o, &out, &err);
            t[it] = now() - t0;
        }
        add_row("cpu: mode_quant_gptq 768 x 2048", 1e3 * median(t, cr), (gptq_flop(I, D) + factor_flop(D, 1)) / 1e9, 0);
        int32_t hidx = 0, info = 0;
        uint8_t bits = BITS;
        struct mode_gptq_batch b = {.n_h = 1, .n_mat = 1, .rows = I, .cols = D, .group = GRP, .hidx = &hidx, .bits = &bits, .H = Hc, .W = Wg,
                                    .deq = deq, .q = q, .scale = sc, .zero = z, .g_idx = gidx, .info = &info};
        b.work = malloc(mode_gptq_work_bytes(&b));
        for (int it = 0; it < cr; it++) {
            memcpy(Hc, H, sizeof *H * D * D);
            const double t0 = now();
            if (mode_gptq_ref(&b, &err)) fprintf(stderr, "bench_gptq: %s\n", err.msg);
            t[it] = now() - t0;
        }
        add_row("cpu: mode_gptq_ref 768 x 2048", 1e3 * median(t, cr), (gptq_flop(I, D) + factor_flop(D, 1)) / 1e9, 0);
        free(b.work), free(H), free(Hc), free(deq), free(sc), free(z), free(q);
    }

    char dev[1100] = "no GPU";
    int have = mode_cuda_available(&err) == MODE_OK;
    if (have) {
        mode_cuda_describe(dev, sizeof dev, &err);
        if (device_part(reps, Xpool, Wg, Xa, Wd, &err)) {
            fprintf(stderr, "bench_gptq: %s\n", err.msg);
            return 1;
        }
    } else
        snprintf(dev, sizeof dev, "GPU rows not run: %s", err.msg);
    printf("GPTQ, Qwen3-VL-30B-A3B experts (128, D 2048, I 768), %d tokens per expert, %d bits, group %d; median of %d\n", NTOK, BITS, GRP, reps);
    printf("device: %s\n\n", dev);
    printf("%-46s %12s %12s\n", "case", "ms", "GFLOP/s");
    for (int i = 0; i < n_rows; i++)
        printf("%-46s %12.3f %12.1f\n", rows_out[i].name, rows_out[i].ms, rows_out[i].gflop > 0 ? rows_out[i].gflop / (rows_out[i].ms / 1e3) : 0.0);
    free(Xpool), free(Wg), free(Xa), free(Wd);
    return 0;
}
