/* test_gptq (kernels) — mode_gptq_cuda against its C reference mode_gptq_ref on the random batches
 * of tests/gptq_cases.h (mixed widths, shared and dead-column Hessians, act order, groups smaller
 * than, equal to and larger than the 128-column block, partial last blocks, a tile of rows cut
 * short), with the batched and the per-Hessian factorisation (MODE_GPTQ_FACTOR); on the float64
 * goldens as the CPU path must; mode_hessian_cuda against the CPU accumulator; mode_gptq_rows
 * on both devices; a NaN Hessian refused. Outputs are poisoned before each run so that an
 * unwritten element fails.
 * Tolerances: levels equal except on rows that meet a rounding tie (the first difference one
 * level; cuSOLVER/cuBLAS and LAPACK/OpenBLAS round differently, ~1e-16 relative, which decides a
 * value within that of k + 1/2), at most 1 row in 20; values within 1e-6 relative (f32 of a
 * double); the Hessian within 1e-12 relative (double sums in another order).
 * Skipped without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/quant.h"
#include "gptq_cases.h"

#include <stdio.h>

/* the host batch b on the GPU: H and W uploaded, outputs downloaded */
static int run_cuda(struct mode_gptq_batch *b, struct mode_err *err)
{
    int64_t ng;
    int rc = mode_gptq_check(b, &ng, err);
    if (rc) return rc;
    const size_t nn = (size_t)(b->cols * b->cols), wn = (size_t)b->n_mat * (size_t)(b->rows * b->cols), pn = (size_t)b->n_mat * (size_t)(b->rows * ng);
    struct mode_gptq_batch d = *b;
    void *p[8] = {0};
    const size_t bytes[8] = {sizeof(double) * nn * b->n_h, sizeof(float) * wn, sizeof(float) * wn, wn, sizeof(float) * pn, sizeof(float) * pn,
                             sizeof(int32_t) * (size_t)(b->n_h * b->cols), mode_gptq_work_bytes(b)};
    for (int i = 0; i < 8 && !rc; i++) rc = mode_cuda_malloc(&p[i], bytes[i], err);
    if (!rc) {
        d.H = p[0], d.W = p[1], d.deq = p[2], d.q = p[3], d.scale = p[4], d.zero = p[5], d.g_idx = p[6], d.work = p[7];
        /* poison: NaN floats, 0xff levels, -1 groups */
        float *nanf = malloc(sizeof(float) * wn);
        for (size_t i = 0; nanf && i < wn; i++) nanf[i] = NAN;
        rc = !nanf ? mode_err_oom(err, wn, "poison") : MODE_OK;
        if (!rc) rc = mode_cuda_upload(p[0], b->H, bytes[0], err);
        if (!rc) rc = mode_cuda_upload(p[1], b->W, bytes[1], err);
        if (!rc) rc = mode_cuda_upload(p[2], nanf, bytes[2], err);
        if (!rc) rc = mode_cuda_upload(p[4], nanf, bytes[4], err);
        if (!rc) rc = mode_cuda_upload(p[5], nanf, bytes[5], err);
        memset(b->q, 0xff, wn);
        memset(b->g_idx, 0xff, bytes[6]);
        if (!rc) rc = mode_cuda_upload(p[3], b->q, bytes[3], err);
        free(nanf);
    }
    if (!rc) rc = mode_gptq_cuda(&d, NULL, err);
    if (!rc) rc = mode_cuda_sync(err);
    if (!rc) rc = mode_cuda_download(b->deq, p[2], bytes[2], err);
    if (!rc) rc = mode_cuda_download(b->q, p[3], bytes[3], err);
    if (!rc) rc = mode_cuda_download(b->scale, p[4], bytes[4], err);
    if (!rc) rc = mode_cuda_download(b->zero, p[5], bytes[5], err);
    if (!rc) rc = mode_cuda_download(b->g_idx, p[6], bytes[6], err);
    for (int i = 0; i < 8; i++) mode_cuda_free(p[i]);
    return rc;
}

static void against_ref(int n_h, int n_mat, int rows, int cols, int group, bool sym, bool act, const char *factor)
{
    setenv("MODE_GPTQ_FACTOR", factor, 1);
    struct gptq_case c, r;
    struct mode_err err = {0};
    gptq_case_make(&c, n_h, n_mat, rows, cols, group, sym, act);
    gptq_case_make(&r, n_h, n_mat, rows, cols, group, sym, act); /* its own random weights, replaced by c's */
    memcpy((float *)r.b.W, c.b.W, sizeof(float) * (size_t)n_mat * rows * cols);
    memcpy(r.b.H, c.H0, sizeof(double) * (size_t)n_h * cols * cols);
    memcpy(c.b.H, c.H0, sizeof(double) * (size_t)n_h * cols * cols);
    int rc = mode_gptq_ref(&r.b, &err);
    if (!rc) rc = run_cuda(&c.b, &err);
    ok(rc == MODE_OK, "%d weights %dx%d over %d Hessians, group %d%s%s, factor %s: %s", n_mat, rows, cols, n_h, group, sym ? " sym" : "",
       act ? " act-order" : "", factor, rc ? err.msg : "runs");
    if (!rc) {
        struct gptq_cmp s = {0};
        for (int m = 0; m < n_mat; m++) gptq_cmp_weight(&s, &c.b, c.ng, m, c.b.q, c.b.deq, c.b.scale, c.b.zero, r.b.q, r.b.deq, r.b.scale, r.b.zero);
        int gbad = 0, nanv = 0;
        for (int i = 0; i < n_h * cols; i++) gbad += c.b.g_idx[i] != r.b.g_idx[i];
        for (size_t i = 0; i < (size_t)n_mat * rows * cols; i++) nanv += !isfinite(c.b.deq[i]);
        ok(s.same == s.compared && s.far == 0 && s.deq_bad == 0 && s.param_bad == 0 && gbad == 0 && nanv == 0 && s.tie_rows * 20 <= (int64_t)n_mat * rows,
           "  = mode_gptq_ref: %lld/%lld levels, worst value difference %.2g scale, %lld parameters off, %d g_idx off, %d unwritten, %lld tie rows",
           (long long)s.same, (long long)s.compared, s.worst_deq, (long long)s.param_bad, gbad, nanv, (long long)s.tie_rows);
    }
    gptq_case_free(&c), gptq_case_free(&r);
}

static void hessian(void)
{
    const int64_t rows = 300, cols = 96;
    struct mode_err err = {0};
    float *X = malloc(sizeof *X * rows * cols);
    for (int64_t i = 0; i < rows * cols; i++) X[i] = (float)gc_urand() * (float)(1 + i % 7);
    double *Hc = malloc(sizeof *Hc * cols * cols), *Hg = malloc(sizeof *Hg * cols * cols);
    struct mode_hessian hs;
    mode_hessian_init(&hs, cols, &err);
    mode_hessian_add(&hs, X, rows);
    mode_hessian_get(&hs, Hc);
    mode_hessian_free(&hs);
    void *dX = NULL, *dXd = NULL, *dH = NULL;
    int rc = mode_cuda_malloc(&dX, sizeof(float) * rows * cols, &err);
    if (!rc) rc = mode_cuda_malloc(&dXd, sizeof(double) * rows * cols, &err);
    if (!rc) rc = mode_cuda_malloc(&dH, sizeof(double) * cols * cols, &err);
    if (!rc) rc = mode_cuda_upload(dX, X, sizeof(float) * rows * cols, &err);
    if (!rc) rc = mode_hessian_cuda(dX, rows, cols, 2.0 / rows, dXd, dH, NULL, &err);
    if (!rc) rc = mode_cuda_download(Hg, dH, sizeof(double) * cols * cols, &err);
    double worst = 0;
    for (int64_t i = 0; !rc && i < cols * cols; i++) {
        const double d = fabs(Hg[i] - Hc[i]) / (fabs(Hc[i]) + 1e-300);
        if (d > worst && fabs(Hc[i]) > 1e-9) worst = d;
    }
    ok(!rc && worst <= 1e-12, "mode_hessian_cuda = 2/N XᵀX of the CPU within 1e-12 (worst %.2g): %s", worst, rc ? err.msg : "ok");
    mode_cuda_free(dX), mode_cuda_free(dXd), mode_cuda_free(dH);
    free(X), free(Hc), free(Hg);
}

/* mode_gptq_rows on both devices, from the same rows */
static void rows_path(void)
{
    const int n_h = 2, n_mat = 3;
    const int64_t rows = 64, cols = 128, nx[2] = {500, 37};
    struct gptq_case c, r;
    struct mode_err err = {0};
    gptq_case_make(&c, n_h, n_mat, rows, cols, 32, false, true);
    gptq_case_make(&r, n_h, n_mat, rows, cols, 32, false, true);
    memcpy((float *)r.b.W, c.b.W, sizeof(float) * (size_t)n_mat * rows * cols);
    float *X[2];
    for (int h = 0; h < n_h; h++) {
        X[h] = malloc(sizeof(float) * (size_t)(nx[h] * cols));
        for (int64_t i = 0; i < nx[h] * cols; i++) X[h][i] = (float)gc_urand() + (i % cols == 3 ? 2.0f : 0.0f);
    }
    int rc = mode_gptq_rows(&r.b, (const float *const *)X, nx, MODE_DEVICE_CPU, &err);
    if (!rc) rc = mode_gptq_rows(&c.b, (const float *const *)X, nx, MODE_DEVICE_CUDA, &err);
    ok(rc == MODE_OK, "mode_gptq_rows on the CPU and on the GPU (Hessians from 500 and 37 rows): %s", rc ? err.msg : "run");
    if (!rc) {
        struct gptq_cmp s = {0};
        for (int m = 0; m < n_mat; m++) gptq_cmp_weight(&s, &c.b, c.ng, m, c.b.q, c.b.deq, c.b.scale, c.b.zero, r.b.q, r.b.deq, r.b.scale, r.b.zero);
        ok(s.same == s.compared && s.far == 0 && s.deq_bad == 0 && s.tie_rows * 20 <= n_mat * rows, "  agree: %lld/%lld levels, %lld tie rows",
           (long long)s.same, (long long)s.compared, (long long)s.tie_rows);
    }
    free(X[0]), free(X[1]);
    gptq_case_free(&c), gptq_case_free(&r);
}

int main(void)
{
    struct mode_err err = {0};
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    char dev[256];
    if (!mode_cuda_describe(dev, sizeof dev, &err)) diag("device: %s", dev);
    gptq_goldens(run_cuda, "mode_gptq_cuda");
    static const char *const factors[2] = {"batched", "loop"};
    for (int f = 0; f < 2; f++) {
        against_ref(3, 5, 48, 256, 64, false, false, factors[f]);
        against_ref(3, 5, 48, 256, 128, true, true, factors[f]);
    }
    against_ref(3, 5, 40, 160, 32, false, true, "batched");  /* a partial last block */
    against_ref(3, 5, 37, 192, 0, false, false, "batched");  /* one group per row; 37 rows: a short tile */
    against_ref(4, 8, 96, 512, 128, false, true, "batched"); /* four blocks: three lazy updates */
    against_ref(2, 4, 768, 256, 128, false, false, "batched"); /* many row tiles: 16-row tiles */
    hessian();
    rows_path();
    /* a NaN Hessian is refused */
    struct gptq_case c;
    gptq_case_make(&c, 2, 2, 16, 64, 32, false, false);
    c.b.H[(64 + 3) * 64 + 3] = NAN;
    ok(run_cuda(&c.b, &err) == MODE_EDATA && c.info[1] == -4, "a NaN on Hessian 1's diagonal: bad data, info -4 (%s)", err.msg);
    gptq_case_free(&c);
    return tap_done();
}
