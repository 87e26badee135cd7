/* test_gemm — the f32 products on the GPU (kernels/gemm.cu) against mode_gemm on the CPU
 * (OpenBLAS): aligned and odd shapes, both orientations of B, beta 0 and 1, row strides wider
 * than the rows; device pointers (mode_gemm_cuda), host matrices (mode_gemm_staged_cuda), and
 * mode_gemm itself once mode_ops_device(CUDA) routes the large products (MODE_GPU_GEMM=all for half
 * the cases: every product); C poisoned with NaN
 * where it is not an input. Tolerance: ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-5 (f32 sums of up to 4096 terms in
 * another order; TF32 would show as ~3e-4 and fail) and no element off by more than 1e-4 of the
 * largest. Skipped without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/ops.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static float frand(void) { return (float)((double)(tap_rand() >> 11) / 9007199254740992.0 * 2 - 1); }

static void compare(const float *got, const float *want, int64_t m, int64_t n, int64_t ldc, double *rel, double *worst)
{
    double num = 0, den = 0, mx = 0, w = 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, fabs(want[i * ldc + j]));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            const double d = (double)got[i * ldc + j] - want[i * ldc + j];
            num += d * d, den += (double)want[i * ldc + j] * want[i * ldc + j];
            if (!(fabs(d) <= w)) w = isnan(d) ? INFINITY : fabs(d);
        }
    *rel = den > 0 ? sqrt(num / den) : sqrt(num);
    *worst = mx > 0 ? w / mx : w;
}

static void one(int64_t m, int64_t n, int64_t k, bool bt, float beta, int pad)
{
    struct mode_err err = {0};
    const int64_t lda = k + pad, br = bt ? n : k, bc = bt ? k : n, ldb = bc + pad, ldc = n + pad;
    float *a = malloc(sizeof *a * (size_t)(m * lda)), *b = malloc(sizeof *b * (size_t)(br * ldb)), *c0 = malloc(sizeof *c0 * (size_t)(m * ldc)),
          *want = malloc(sizeof *want * (size_t)(m * ldc)), *got = malloc(sizeof *got * (size_t)(m * ldc));
    for (int64_t i = 0; i < m * lda; i++) a[i] = frand();
    for (int64_t i = 0; i < br * ldb; i++) b[i] = frand();
    for (int64_t i = 0; i < m * ldc; i++) c0[i] = beta != 0 ? frand() : NAN;
    mode_ops_device(MODE_DEVICE_CPU);
    memcpy(want, c0, sizeof *want * (size_t)(m * ldc));
    if (beta == 0)
        for (int64_t i = 0; i < m * ldc; i++) want[i] = 0; /* OpenBLAS with beta 0 ignores C, but NaN * 0 is NaN elsewhere */
    mode_gemm(m, n, k, a, lda, b, ldb, bt, beta, want, ldc);
    /* staged */
    memcpy(got, c0, sizeof *got * (size_t)(m * ldc));
    int rc = mode_gemm_staged_cuda(m, n, k, a, lda, b, ldb, bt, beta, got, ldc, &err);
    double rel = 0, worst = 0;
    if (!rc) compare(got, want, m, n, ldc, &rel, &worst);
    ok(!rc && rel <= 1e-5 && worst <= 1e-4, "staged %lldx%lldx%lld %s beta %g pad %d: rel %.2g, worst %.2g %s", (long long)m, (long long)n, (long long)k,
       bt ? "B^T" : "B", beta, pad, rel, worst, rc ? err.msg : "");
    /* device pointers */
    void *da = NULL, *db = NULL, *dc = NULL;
    rc = mode_cuda_malloc(&da, sizeof *a * (size_t)(m * lda), &err);
    if (!rc) rc = mode_cuda_malloc(&db, sizeof *b * (size_t)(br * ldb), &err);
    if (!rc) rc = mode_cuda_malloc(&dc, sizeof *got * (size_t)(m * ldc), &err);
    if (!rc) rc = mode_cuda_upload(da, a, sizeof *a * (size_t)(m * lda), &err);
    if (!rc) rc = mode_cuda_upload(db, b, sizeof *b * (size_t)(br * ldb), &err);
    if (!rc) rc = mode_cuda_upload(dc, c0, sizeof *c0 * (size_t)(m * ldc), &err);
    if (!rc) rc = mode_gemm_cuda(m, n, k, da, lda, db, ldb, bt, beta, dc, ldc, NULL, &err);
    if (!rc) rc = mode_cuda_download(got, dc, sizeof *got * (size_t)(m * ldc), &err);
    if (!rc) compare(got, want, m, n, ldc, &rel, &worst);
    ok(!rc && rel <= 1e-5 && worst <= 1e-4, "  device pointers: rel %.2g, worst %.2g %s", rel, worst, rc ? err.msg : "");
    mode_cuda_free(da), mode_cuda_free(db), mode_cuda_free(dc);
    /* mode_gemm routed: by shape, or all (odd pads) */
    setenv("MODE_GPU_GEMM", pad % 2 ? "all" : "shape", 1);
    mode_ops_device(MODE_DEVICE_CUDA);
    memcpy(got, c0, sizeof *got * (size_t)(m * ldc));
    if (beta == 0)
        for (int64_t i = 0; i < m * ldc; i++) got[i] = 0;
    mode_gemm(m, n, k, a, lda, b, ldb, bt, beta, got, ldc);
    compare(got, want, m, n, ldc, &rel, &worst);
    int64_t fb = 0;
    ok(mode_ops_device_status(&fb, &err) == MODE_OK && rel <= 1e-5 && worst <= 1e-4, "  mode_gemm on cuda: rel %.2g, %lld fallbacks", rel,
       (long long)fb);
    mode_ops_device(MODE_DEVICE_CPU);
    free(a), free(b), free(c0), free(want), free(got);
}

int main(void)
{
    struct mode_err err = {0};
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    one(256, 384, 512, true, 0, 0);
    one(257, 383, 129, true, 1, 3);
    one(1000, 96, 2048, false, 0, 1);
    one(13, 7, 5, false, 1, 0);     /* by shape: the CPU, too small */
    one(13, 7, 5, false, 1, 1);     /* all: the GPU */
    one(4096, 1536, 2048, true, 0, 0); /* an expert's gate/up at Qwen3-VL-30B-A3B's shape */
    one(1, 2048, 768, true, 1, 0);
    return tap_done();
}
