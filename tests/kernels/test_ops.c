/* test_ops — the forward-pass operations on the GPU (kernels/ops.cu, and mode_gemm_bf16_cuda in
 * kernels/gemm.cu) against their C references (lib/ops.h; mode_f32_to_bf16 for the rounding; a
 * direct loop for mode_add_cuda, which has none) on random inputs with a fixed printed seed:
 * aligned and odd shapes (rows of 1, 7, 128, 1024, 1025, 2048, 3000, 16384: both sides of the
 * warp-per-row limit), row counts past one launch's grid (the grid-stride loops), outputs
 * poisoned with NaN where they are not inputs, in place where the reference allows it, NaN and
 * infinity agreement, the first mismatches printed. Skipped without a GPU.
 *
 * Tolerances, u = 2^-24 (f32 unit roundoff), per element |gpu − ref| ≤ b_i = atol_i + rtol·|ref|,
 * and over the finite elements ‖gpu − ref‖ ≤ NORM_FRACTION·‖b‖ = 0.5·‖b‖: the per-element bounds
 * are set for the worst element, a few times the largest error expected, while an error common
 * to every element (a wrong constant, eps added in the wrong place) brings the norm near the
 * bounds' own:
 * - EXACT (bitwise): mode_add_cuda, mode_add_bias_cuda (one f32 add), mode_mrope_angles_cuda (one
 *   int→f32 conversion and one product), mode_round_bf16_cuda (integer arithmetic, NaN payloads
 *   included).
 * - reduce_rtol(d) = 16u + 8u·√d for results that go through a sum of d terms (RMSNorm's Σx²,
 *   LayerNorm's mean and variance, softmax's and the router's Σexp): the reference adds left to
 *   right and its rounding error grows like √d·u (random signs; the largest seen was 1.7·√d·u,
 *   softmax of 16384 values spread over e^16, 1.3e-5; Σx² of uniform data 0.9·√d·u), the GPU's
 *   tree sum is far closer to exact, and the error is common to the whole row (one
 *   denominator); about 5x the largest seen, plus 16u for the elementwise tail (CUDA expf's ≤ 2 ulp
 *   on the GPU against the reference's ≤ 1.05, lib/vmath.c, the division, FMA contraction). LayerNorm's atol_i = reduce_rtol(d)·(|w|·(|mean|·r
 *   + |x̂|) + |b|): the mean's error is relative to |mean|, so after the subtraction it is an
 *   absolute error of x̂ = (x − mean)·r (r = 1/sqrt(var + eps)); the data has |mean|·r up to ~5.
 *   Softmax's atol = FLT_MIN: below the normal range exp's error is absolute.
 * - ELEM_RTOL = 16u for SwiGLU (CUDA expf ≤ 2 ulp against the reference's ≤ 1.05, then a
 *   division and a product:
 *   ≤ ~5u), with atol FLT_MIN; GELU's atol_i = ELEM_RTOL·|x_i| as well: 1 + tanh(z) (or
 *   1 + erf(z)) cancels for negative x, where the ≤ 2.5 ulp error of tanhf/erff (absolute,
 *   ~2.5u since |tanh| < 1) times 0.5·|x| is absolute, not relative to the tiny result.
 * - RoPE: atol_i = ELEM_RTOL·(|x1| + |x2|) of the element's pair: cosf and sinf err ≤ 2 ulp on
 *   the GPU and ≤ 1 in glibc (full range reduction on both: angles up to 40,000 rad here), each
 *   times one of the pair, and x1·c − x2·s may cancel.
 * - Router: indices exact (the logits are multiples of 2^-10, so two experts' probabilities are
 *   either bit-equal — equal logits, lower index first on both sides — or a factor e^(2^-10)
 *   apart, far beyond rounding: the choice on logits equals the reference's on probabilities);
 *   weights rtol reduce_rtol(n_expert), or reduce_rtol(k) when renormalised (the denominator
 *   cancels, the k-sum is in the reference's order).
 * - bf16 GEMM: ‖gpu − cpu‖ / ‖cpu‖ ≤ 1e-5 and no element off by more than 1e-4 of the largest,
 *   as test_gemm: on bf16 inputs every product is exact in f32, so only the accumulation order
 *   differs (f32 sums of up to 2048 terms; a bf16 or f16 accumulation, or inputs read as f16,
 *   would be off by 1e-3 or more).
 */
#include "../../kernels/mode_cuda.h"
#include "../../lib/ops.h"
#include "tap.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U 0x1p-24                /* f32 unit roundoff */
#define ELEM_RTOL (16 * U)
#define SOFTMAX_ATOL FLT_MIN
#define NORM_FRACTION 0.5
#define GEMM_REL 1e-5
#define GEMM_WORST 1e-4

static double reduce_rtol(int64_t d) { return 16 * U + 8 * U * sqrt((double)d); }

static float frand(void) { return (float)((double)(tap_rand() >> 11) / 9007199254740992.0 * 2 - 1); }
static float frand01(void) { return (float)((double)(tap_rand() >> 11) / 9007199254740992.0); }

/* ---- device buffers: a failure here is the machine's, not the kernel's ------------------------ */

static void bail(const char *what, const struct mode_err *e)
{
    printf("Bail out! %s: %s\n", what, e->msg);
    exit(1);
}

static void *dev(const void *host, size_t bytes)
{
    struct mode_err e = {0};
    void *d = NULL;
    if (mode_cuda_malloc(&d, bytes, &e)) bail("cudaMalloc", &e);
    if (host && mode_cuda_upload(d, host, bytes, &e)) bail("upload", &e);
    return d;
}

/* the result back; a kernel's asynchronous failure shows here, so it is reported, not bailed */
static int back(void *host, const void *d, size_t bytes, struct mode_err *e) { return mode_cuda_download(host, d, bytes, e); }

static float *nan_filled(int64_t n)
{
    float *p = malloc(sizeof *p * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static float *copy_of(const float *x, int64_t n)
{
    float *p = malloc(sizeof *p * (size_t)(n ? n : 1));
    memcpy(p, x, sizeof *p * (size_t)n);
    return p;
}

/* ---- comparison ---------------------------------------------------------------------------- */

/* |got − want| ≤ b_i = atol·(scale ? |scale_i| : 1) + rtol·|want_i| for every element, NaN where
 * want is NaN, the same infinities; and over the finite elements ‖got − want‖ ≤ NORM_FRACTION·‖b‖.
 * *worst: the largest error as a fraction of its bound. */
static bool close_to(const float *got, const float *want, int64_t n, double rtol, double atol, const double *scale, double *worst,
                     const char *what)
{
    int64_t bad = 0;
    double num = 0, den = 0, w = 0;
    for (int64_t i = 0; i < n; i++) {
        const double g = got[i], r = want[i];
        bool okay;
        if (isnan(r) || isinf(r)) okay = isnan(r) ? isnan(g) : g == r;
        else {
            const double bound = atol * (scale ? fabs(scale[i]) : 1.0) + rtol * fabs(r), e = fabs(g - r);
            okay = e <= bound; /* false for a NaN */
            if (okay) {
                num += e * e, den += bound * bound;
                if (bound > 0 && e / bound > w) w = e / bound;
            }
        }
        if (!okay && bad++ < 4) diag("%s: element %lld: got %.9g, want %.9g", what, (long long)i, g, r);
    }
    if (bad > 4) diag("%s: %lld elements out of tolerance", what, (long long)bad);
    if (!bad && sqrt(num) > NORM_FRACTION * sqrt(den)) {
        diag("%s: normalised error %.3g of the bounds' norm, over %g", what, sqrt(num / den), NORM_FRACTION);
        bad = 1;
    }
    *worst = w;
    return bad == 0;
}

static bool same_bits(const void *got, const void *want, size_t bytes, size_t elem, const char *what)
{
    size_t bad = 0;
    for (size_t i = 0; i < bytes / elem; i++)
        if (memcmp((const char *)got + i * elem, (const char *)want + i * elem, elem) && bad++ < 4) {
            uint32_t g = 0, r = 0;
            memcpy(&g, (const char *)got + i * elem, elem), memcpy(&r, (const char *)want + i * elem, elem);
            diag("%s: element %zu: got 0x%0*x, want 0x%0*x", what, i, (int)(2 * elem), g, (int)(2 * elem), r);
        }
    if (bad > 4) diag("%s: %zu elements differ", what, bad);
    return bad == 0;
}

/* ---- row operations ------------------------------------------------------------------------ */

static const int64_t SHAPES[][2] = {{1, 1}, {5, 1}, {1, 7}, {5, 7}, {1000, 7}, {1, 128}, {5, 128}, {1000, 128}, {5, 1024}, {5, 1025},
                                    {1, 2048}, {5, 2048}, {1000, 2048}, {1, 3000}, {5, 3000}, {1000, 3000}, {3, 16384}};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

static void rmsnorm_case(int64_t n, int64_t d, float eps, bool in_place, float amp)
{
    struct mode_err err = {0};
    float *x = malloc(sizeof *x * (size_t)(n * d)), *w = malloc(sizeof *w * (size_t)d), *want = malloc(sizeof *want * (size_t)(n * d));
    float *got = nan_filled(n * d);
    for (int64_t i = 0; i < n * d; i++) x[i] = amp * frand();
    for (int64_t j = 0; j < d; j++) w[j] = 0.5f + frand01();
    mode_rmsnorm_ref(x, w, eps, n, d, want);
    float *dx = dev(x, sizeof *x * (size_t)(n * d)), *dw = dev(w, sizeof *w * (size_t)d), *dy = in_place ? dx : dev(got, sizeof *got * (size_t)(n * d));
    int rc = mode_rmsnorm_cuda(dx, dw, eps, n, d, dy, NULL, &err);
    if (!rc) rc = back(got, dy, sizeof *got * (size_t)(n * d), &err);
    double worst = 0;
    const double rtol = reduce_rtol(d);
    const bool good = !rc && close_to(got, want, n * d, rtol, 0, NULL, &worst, "rmsnorm");
    ok(good, "rmsnorm %lld x %lld eps %g%s: worst %.2g of rtol %.2g %s", (long long)n,
       (long long)d, eps, in_place ? " in place" : "", worst, rtol, rc ? err.msg : "");
    mode_cuda_free(dx), mode_cuda_free(dw);
    if (!in_place) mode_cuda_free(dy);
    free(x), free(w), free(want), free(got);
}

static void layernorm_case(int64_t n, int64_t d, float offset, bool in_place)
{
    struct mode_err err = {0};
    const float eps = 1e-6f;
    float *x = malloc(sizeof *x * (size_t)(n * d)), *w = malloc(sizeof *w * (size_t)d), *b = malloc(sizeof *b * (size_t)d);
    float *want = malloc(sizeof *want * (size_t)(n * d)), *got = nan_filled(n * d);
    double *scale = malloc(sizeof *scale * (size_t)(n * d));
    for (int64_t i = 0; i < n * d; i++) x[i] = offset + 2 * frand();
    for (int64_t j = 0; j < d; j++) w[j] = 0.5f + frand01(), b[j] = 0.5f * frand();
    for (int64_t i = 0; i < n; i++) { /* the error scale of each element (header) */
        double m = 0, v = 0;
        for (int64_t j = 0; j < d; j++) m += x[i * d + j];
        m /= (double)d;
        for (int64_t j = 0; j < d; j++) v += (x[i * d + j] - m) * (x[i * d + j] - m);
        const double r = 1 / sqrt(v / (double)d + eps);
        for (int64_t j = 0; j < d; j++) scale[i * d + j] = fabs(w[j]) * (fabs(m) * r + fabs(x[i * d + j] - m) * r) + fabs(b[j]);
    }
    mode_layernorm_ref(x, w, b, eps, n, d, want);
    float *dx = dev(x, sizeof *x * (size_t)(n * d)), *dw = dev(w, sizeof *w * (size_t)d), *db = dev(b, sizeof *b * (size_t)d);
    float *dy = in_place ? dx : dev(got, sizeof *got * (size_t)(n * d));
    int rc = mode_layernorm_cuda(dx, dw, db, eps, n, d, dy, NULL, &err);
    if (!rc) rc = back(got, dy, sizeof *got * (size_t)(n * d), &err);
    double worst = 0;
    const double rtol = reduce_rtol(d);
    const bool good = !rc && close_to(got, want, n * d, rtol, rtol, scale, &worst, "layernorm");
    ok(good, "layernorm %lld x %lld, mean %g%s: worst %.2g of the tolerance %s",
       (long long)n, (long long)d, offset, in_place ? " in place" : "", worst, rc ? err.msg : "");
    mode_cuda_free(dx), mode_cuda_free(dw), mode_cuda_free(db);
    if (!in_place) mode_cuda_free(dy);
    free(x), free(w), free(b), free(want), free(got), free(scale);
}

/* rows 1..3 (when there are): shifted by +100 (exp overflows without the maximum subtracted),
 * all −inf (zeros), one −inf entry */
static void softmax_case(int64_t n, int64_t d)
{
    struct mode_err err = {0};
    float *x = malloc(sizeof *x * (size_t)(n * d)), *got = malloc(sizeof *got * (size_t)(n * d));
    for (int64_t i = 0; i < n * d; i++) x[i] = 8 * frand();
    if (n >= 4) {
        for (int64_t j = 0; j < d; j++) x[1 * d + j] += 100, x[2 * d + j] = -INFINITY;
        x[3 * d] = -INFINITY;
    }
    float *want = copy_of(x, n * d);
    mode_softmax_ref(want, n, d);
    float *dx = dev(x, sizeof *x * (size_t)(n * d));
    int rc = mode_softmax_cuda(dx, n, d, NULL, &err);
    if (!rc) rc = back(got, dx, sizeof *got * (size_t)(n * d), &err);
    double worst = 0;
    const double rtol = reduce_rtol(d);
    const bool good = !rc && close_to(got, want, n * d, rtol, SOFTMAX_ATOL, NULL, &worst, "softmax");
    ok(good, "softmax %lld x %lld: worst %.2g of rtol %.2g %s", (long long)n,
       (long long)d, worst, rtol, rc ? err.msg : "");
    mode_cuda_free(dx);
    free(x), free(got), free(want);
}

/* ---- elementwise --------------------------------------------------------------------------- */

static void swiglu_case(int64_t n, int64_t f)
{
    struct mode_err err = {0};
    float *x = malloc(sizeof *x * (size_t)(2 * n * f)), *want = malloc(sizeof *want * (size_t)(n * f)), *got = nan_filled(n * f);
    for (int64_t i = 0; i < 2 * n * f; i++) x[i] = 6 * frand();
    if (n * f >= 3) x[0] = -100, x[1] = 100, x[2] = 0; /* exp(100) overflows: silu(−100) = −0 on both sides */
    mode_swiglu_ref(x, n, f, want);
    float *dx = dev(x, sizeof *x * (size_t)(2 * n * f)), *dy = dev(got, sizeof *got * (size_t)(n * f));
    int rc = mode_swiglu_cuda(dx, n, f, dy, NULL, &err);
    if (!rc) rc = back(got, dy, sizeof *got * (size_t)(n * f), &err);
    double worst = 0;
    const bool good = !rc && close_to(got, want, n * f, ELEM_RTOL, FLT_MIN, NULL, &worst, "swiglu");
    ok(good, "swiglu %lld x %lld: worst %.2g of the tolerance %s", (long long)n,
       (long long)f, worst, rc ? err.msg : "");
    mode_cuda_free(dx), mode_cuda_free(dy);
    free(x), free(want), free(got);
}

static void gelu_case(int64_t n, bool tanh_approx)
{
    struct mode_err err = {0};
    float *x = malloc(sizeof *x * (size_t)n), *got = malloc(sizeof *got * (size_t)n);
    double *scale = malloc(sizeof *scale * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = 8 * frand();
    const float special[] = {0.0f, -0.0f, 20.0f, -20.0f, 1e13f, -1e13f, INFINITY, -INFINITY, NAN, 1e-30f, -3.5f};
    for (size_t i = 0; i < sizeof special / sizeof special[0] && (int64_t)i < n; i++) x[i] = special[i];
    for (int64_t i = 0; i < n; i++) scale[i] = x[i];
    float *want = copy_of(x, n);
    if (tanh_approx) mode_gelu_tanh_ref(want, n);
    else mode_gelu_erf_ref(want, n);
    float *dx = dev(x, sizeof *x * (size_t)n);
    int rc = mode_gelu_cuda(dx, n, tanh_approx, NULL, &err);
    if (!rc) rc = back(got, dx, sizeof *got * (size_t)n, &err);
    double worst = 0;
    const bool good = !rc && close_to(got, want, n, ELEM_RTOL, ELEM_RTOL, scale, &worst, "gelu");
    ok(good, "gelu %s, %lld elements (±0, ±20, ±1e13, ±inf, NaN): worst %.2g of the tolerance %s",
       tanh_approx ? "tanh" : "erf", (long long)n, worst, rc ? err.msg : "");
    mode_cuda_free(dx);
    free(x), free(got), free(want), free(scale);
}

static void add_bias_case(int64_t n, int64_t d)
{
    struct mode_err err = {0};
    float *y = malloc(sizeof *y * (size_t)(n * d)), *b = malloc(sizeof *b * (size_t)d), *got = malloc(sizeof *got * (size_t)(n * d));
    for (int64_t i = 0; i < n * d; i++) y[i] = 4 * frand();
    for (int64_t j = 0; j < d; j++) b[j] = frand();
    float *want = copy_of(y, n * d);
    mode_add_bias_ref(want, b, n, d);
    float *dy = dev(y, sizeof *y * (size_t)(n * d)), *db = dev(b, sizeof *b * (size_t)d);
    int rc = mode_add_bias_cuda(dy, db, n, d, NULL, &err);
    if (!rc) rc = back(got, dy, sizeof *got * (size_t)(n * d), &err);
    ok(!rc && same_bits(got, want, sizeof *got * (size_t)(n * d), 4, "add_bias"), "add_bias %lld x %lld: bit for bit %s", (long long)n, (long long)d,
       rc ? err.msg : "");
    mode_cuda_free(dy), mode_cuda_free(db);
    free(y), free(b), free(got), free(want);
}

static void add_case(int64_t n, bool same)
{
    struct mode_err err = {0};
    float *y = malloc(sizeof *y * (size_t)n), *x = malloc(sizeof *x * (size_t)n), *got = malloc(sizeof *got * (size_t)n);
    float *want = malloc(sizeof *want * (size_t)n);
    for (int64_t i = 0; i < n; i++) y[i] = 4 * frand(), x[i] = same ? y[i] : frand();
    for (int64_t i = 0; i < n; i++) want[i] = y[i] + x[i];
    float *dy = dev(y, sizeof *y * (size_t)n), *dx = same ? dy : dev(x, sizeof *x * (size_t)n);
    int rc = mode_add_cuda(dy, dx, n, NULL, &err);
    if (!rc) rc = back(got, dy, sizeof *got * (size_t)n, &err);
    ok(!rc && same_bits(got, want, sizeof *got * (size_t)n, 4, "add"), "add %lld elements%s: bit for bit %s", (long long)n, same ? ", y += y" : "",
       rc ? err.msg : "");
    mode_cuda_free(dy);
    if (!same) mode_cuda_free(dx);
    free(y), free(x), free(got), free(want);
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* every output written: two runs, destinations poisoned with two different patterns */
static void round_case(const float *src, size_t n, const char *what)
{
    struct mode_err err = {0};
    uint16_t *want = malloc(sizeof *want * (n ? n : 1)), *got = malloc(sizeof *got * (n ? n : 1));
    for (size_t i = 0; i < n; i++) want[i] = mode_f32_to_bf16(src[i]);
    float *ds = dev(src, sizeof *src * (n ? n : 1));
    uint16_t *dd = dev(NULL, sizeof *dd * (n ? n : 1));
    bool good = true;
    int rc = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (size_t i = 0; i < n; i++) got[i] = pass ? 0xffff : 0x0000;
        if (!(rc = mode_cuda_upload(dd, got, sizeof *got * n, &err))) rc = mode_round_bf16_cuda(ds, n, dd, NULL, &err);
        if (!rc) rc = back(got, dd, sizeof *got * n, &err);
        if (!rc) good = same_bits(got, want, sizeof *got * n, 2, what) && good;
    }
    ok(!rc && good, "round_bf16 %s, %zu values: bit for bit with mode_f32_to_bf16 %s", what, n, rc ? err.msg : "");
    mode_cuda_free(ds), mode_cuda_free(dd);
    free(want), free(got);
}

static void round_bf16_cases(void)
{
    const uint32_t special[] = {
        0x00000000u, 0x80000000u,                             /* ±0 */
        0x7f800000u, 0xff800000u,                             /* ±inf */
        0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u,   /* quiet and signalling NaNs: a low payload must not become inf */
        0x7fc12345u, 0x7fbfffffu, 0xffffffffu, 0x7f80ffffu,   /* payloads in both halves */
        0x00000001u, 0x007fffffu, 0x80000001u, 0x00400000u,   /* denormals */
        0x00008000u, 0x00018000u, 0x3f808000u, 0x3f818000u,   /* halfway: even stays, odd rounds up */
        0x3f808001u, 0x3f807fffu, 0xbf808000u, 0xbf818000u,   /* just above and below halfway, negatives */
        0x7f7fffffu, 0x7f7f7fffu, 0x7f7f8000u, 0xff7fffffu,   /* the largest finite: rounds to inf, or stays */
        0x00800000u, 0x3f800000u, 0x40490fdbu, 0x007f8000u,   /* smallest normal, 1, pi, the denormal that rounds up to normal */
    };
    const size_t ns = sizeof special / sizeof special[0];
    float s[sizeof special / sizeof special[0]];
    for (size_t i = 0; i < ns; i++) s[i] = bits_f32(special[i]);
    round_case(s, ns, "special values");
    round_case(s, 1, "one value");
    const size_t n = 1000003; /* odd; every bit pattern class: random 32-bit words */
    float *r = malloc(sizeof *r * n);
    for (size_t i = 0; i < n; i++) r[i] = bits_f32((uint32_t)tap_rand());
    round_case(r, n, "random bit patterns");
    for (size_t i = 0; i < n; i++) r[i] = 100 * frand();
    round_case(r, n, "random values");
    free(r);
}

/* ---- rotary -------------------------------------------------------------------------------- */

static void rope_case(int64_t n, int n_head, int hd, int pad)
{
    struct mode_err err = {0};
    const int half = hd / 2;
    const int64_t ld = (int64_t)n_head * hd + pad;
    float *x = malloc(sizeof *x * (size_t)(n * ld)), *ang = malloc(sizeof *ang * (size_t)(n * half)), *got = malloc(sizeof *got * (size_t)(n * ld));
    double *scale = malloc(sizeof *scale * (size_t)(n * ld));
    for (int64_t i = 0; i < n * ld; i++) x[i] = 3 * frand();
    float inv[2048];
    for (int j = 0; j < half; j++) inv[j] = (float)pow(5e6, -2.0 * j / hd); /* rope_theta 5e6 (Qwen3-VL) */
    for (int64_t i = 0; i < n; i++) {
        const float p = (float)(tap_rand() % 40000); /* a position */
        for (int j = 0; j < half; j++) ang[i * half + j] = p * inv[j];
    }
    for (int64_t i = 0; i < n; i++) {
        for (int64_t c = (int64_t)n_head * hd; c < ld; c++) x[i * ld + c] = 12345.0f + (float)c; /* beyond the heads: untouched */
        for (int h = 0; h < n_head; h++)
            for (int j = 0; j < half; j++) {
                const int64_t a = i * ld + (int64_t)h * hd + j;
                scale[a] = scale[a + half] = fabs(x[a]) + fabs(x[a + half]);
            }
        for (int64_t c = (int64_t)n_head * hd; c < ld; c++) scale[i * ld + c] = 0;
    }
    float *want = copy_of(x, n * ld);
    mode_rope_ref(want, n, ld, n_head, hd, ang);
    float *dx = dev(x, sizeof *x * (size_t)(n * ld)), *da = dev(ang, sizeof *ang * (size_t)(n * half));
    int rc = mode_rope_cuda(dx, n, ld, n_head, hd, da, NULL, &err);
    if (!rc) rc = back(got, dx, sizeof *got * (size_t)(n * ld), &err);
    double worst = 0;
    const bool good = !rc && close_to(got, want, n * ld, 0, ELEM_RTOL, scale, &worst, "rope");
    ok(good, "rope %lld rows of %d heads of %d, stride %lld: worst %.2g of the tolerance %s",
       (long long)n, n_head, hd, (long long)ld, worst, rc ? err.msg : "");
    mode_cuda_free(dx), mode_cuda_free(da);
    free(x), free(ang), free(got), free(want), free(scale);
}

static void mrope_case(int64_t n, int hd, const int sec[3])
{
    struct mode_err err = {0};
    const int half = hd / 2;
    int32_t *pos = malloc(sizeof *pos * (size_t)(3 * n));
    float *inv = malloc(sizeof *inv * (size_t)half), *want = malloc(sizeof *want * (size_t)(n * half)), *got = nan_filled(n * half);
    for (int64_t i = 0; i < 3 * n; i++) pos[i] = (int32_t)(tap_rand() % 70000);
    if (n >= 2) pos[0] = 16777217, pos[n + 1] = -5; /* 2^24 + 1 rounds in the conversion */
    for (int j = 0; j < half; j++) inv[j] = (float)pow(5e6, -2.0 * j / hd);
    mode_mrope_angles_ref(pos, n, hd, sec, inv, want);
    int32_t *dp = dev(pos, sizeof *pos * (size_t)(3 * n));
    float *di = dev(inv, sizeof *inv * (size_t)half), *da = dev(got, sizeof *got * (size_t)(n * half));
    int rc = mode_mrope_angles_cuda(dp, n, hd, sec, di, da, NULL, &err);
    if (!rc) rc = back(got, da, sizeof *got * (size_t)(n * half), &err);
    ok(!rc && same_bits(got, want, sizeof *got * (size_t)(n * half), 4, "mrope"), "mrope angles %lld tokens, head_dim %d, section {%d, %d, %d}: bit for bit %s",
       (long long)n, hd, sec[0], sec[1], sec[2], rc ? err.msg : "");
    mode_cuda_free(dp), mode_cuda_free(di), mode_cuda_free(da);
    free(pos), free(inv), free(want), free(got);
}

/* ---- router -------------------------------------------------------------------------------- */

static bool topk_run(const float *logits, int64_t n, int E, int k, bool norm, const char *what)
{
    struct mode_err err = {0};
    int32_t *wi = malloc(sizeof *wi * (size_t)(n * k)), *gi = malloc(sizeof *gi * (size_t)(n * k));
    float *ww = malloc(sizeof *ww * (size_t)(n * k)), *gw = nan_filled(n * k);
    for (int64_t i = 0; i < n * k; i++) gi[i] = -7;
    mode_topk_ref(logits, n, E, k, norm, wi, ww);
    float *dl = dev(logits, sizeof *logits * (size_t)(n * E)), *dw = dev(gw, sizeof *gw * (size_t)(n * k));
    int32_t *dI = dev(gi, sizeof *gi * (size_t)(n * k));
    int rc = mode_topk_cuda(dl, n, E, k, norm, dI, dw, NULL, &err);
    if (!rc) rc = back(gi, dI, sizeof *gi * (size_t)(n * k), &err);
    if (!rc) rc = back(gw, dw, sizeof *gw * (size_t)(n * k), &err);
    double worst = 0;
    const double rtol = reduce_rtol(norm ? k : E);
    const bool idx_ok = !rc && same_bits(gi, wi, sizeof *gi * (size_t)(n * k), 4, "topk indices");
    const bool w_ok = !rc && close_to(gw, ww, n * k, rtol, 0, NULL, &worst, "topk weights");
    ok(idx_ok && w_ok, "topk %s: %lld rows, top-%d of %d%s: indices exact, weights worst %.2g of rtol %.2g %s", what, (long long)n, k, E,
       norm ? ", renormalised" : "", worst, rtol, rc ? err.msg : "");
    mode_cuda_free(dl), mode_cuda_free(dw), mode_cuda_free(dI);
    const bool good = idx_ok && w_ok;
    free(wi), free(gi), free(ww), free(gw);
    return good;
}

/* logits on a 2^-10 grid in [−8, 8] (header: ties are exact ties) */
static void topk_case(int64_t n, int E, int k, bool norm)
{
    float *l = malloc(sizeof *l * (size_t)(n * E));
    for (int64_t i = 0; i < n * E; i++) l[i] = (float)((int)(tap_rand() % 16385) - 8192) / 1024.0f;
    topk_run(l, n, E, k, norm, "random");
    free(l);
}

static void topk_special(void)
{
    /* ties: experts 5 and 3 share the largest logit, 9, 1 and 6 the next: 3, 5, then 1, 6, 9 */
    enum { E = 12 };
    float l[4 * E];
    for (int e = 0; e < E; e++) l[e] = -(float)e / 4;
    l[5] = l[3] = 2.0f;
    l[9] = l[1] = l[6] = 1.5f;
    const int32_t order[5] = {3, 5, 1, 6, 9};
    for (int e = 0; e < E; e++) l[E + e] = 0.25f;       /* all equal: the first k */
    for (int e = 0; e < E; e++) l[2 * E + e] = -INFINITY; /* no finite logit: the first k, weights 0 (NaN renormalised) */
    for (int e = 0; e < E; e++) l[3 * E + e] = (float)e;
    l[3 * E + 4] = NAN; /* a NaN: the reference's probabilities are all NaN, its choice the first k */
    struct mode_err err = {0};
    int32_t got[5] = {0};
    float w[5];
    float *dl = dev(l, sizeof l), *dw = dev(NULL, sizeof w);
    int32_t *dI = dev(NULL, sizeof got);
    int rc = mode_topk_cuda(dl, 1, E, 5, true, dI, dw, NULL, &err);
    if (!rc) rc = back(got, dI, sizeof got, &err);
    ok(!rc && !memcmp(got, order, sizeof got), "topk: tied logits come out lower index first: %d %d %d %d %d %s", got[0], got[1], got[2], got[3], got[4],
       rc ? err.msg : "");
    mode_cuda_free(dl), mode_cuda_free(dw), mode_cuda_free(dI);
    for (int norm = 0; norm < 2; norm++) {
        topk_run(l, 4, E, 5, norm, "ties, equal, all -inf and NaN rows");
        topk_run(l, 4, E, E, norm, "ties, equal, all -inf and NaN rows, every expert");
    }
}

/* ---- bf16 GEMM ----------------------------------------------------------------------------- */

static void gemm_bf16_case(int64_t m, int64_t n, int64_t k, bool bt, float beta, int pad)
{
    struct mode_err err = {0};
    const int64_t lda = k + pad, br = bt ? n : k, bc = bt ? k : n, ldb = bc + pad, ldc = n + pad;
    uint16_t *a = malloc(sizeof *a * (size_t)(m * lda)), *b = malloc(sizeof *b * (size_t)(br * ldb));
    float *af = malloc(sizeof *af * (size_t)(m * lda)), *bf = malloc(sizeof *bf * (size_t)(br * ldb));
    float *c0 = malloc(sizeof *c0 * (size_t)(m * ldc)), *want = malloc(sizeof *want * (size_t)(m * ldc)), *got = malloc(sizeof *got * (size_t)(m * ldc));
    for (int64_t i = 0; i < m * lda; i++) a[i] = mode_f32_to_bf16(frand()), af[i] = mode_bf16_to_f32(a[i]);
    for (int64_t i = 0; i < br * ldb; i++) b[i] = mode_f32_to_bf16(frand()), bf[i] = mode_bf16_to_f32(b[i]);
    for (int64_t i = 0; i < m * ldc; i++) c0[i] = beta != 0 ? frand() : NAN;
    mode_ops_device(MODE_DEVICE_CPU);
    for (int64_t i = 0; i < m * ldc; i++) want[i] = beta != 0 ? c0[i] : 0; /* NaN · 0 is NaN outside cuBLAS */
    mode_gemm(m, n, k, af, lda, bf, ldb, bt, beta, want, ldc);
    uint16_t *da = dev(a, sizeof *a * (size_t)(m * lda)), *db = dev(b, sizeof *b * (size_t)(br * ldb));
    float *dc = dev(c0, sizeof *c0 * (size_t)(m * ldc));
    int rc = mode_gemm_bf16_cuda(m, n, k, da, lda, db, ldb, bt, beta, dc, ldc, NULL, &err);
    if (!rc) rc = back(got, dc, sizeof *got * (size_t)(m * ldc), &err);
    double num = 0, den = 0, mx = 0, worst = 0;
    for (int64_t i = 0; !rc && i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            const double d = (double)got[i * ldc + j] - want[i * ldc + j];
            num += d * d, den += (double)want[i * ldc + j] * want[i * ldc + j], mx = fmax(mx, fabs(want[i * ldc + j]));
            if (!(fabs(d) <= worst)) worst = isnan(d) ? INFINITY : fabs(d);
        }
    /* the padding of C is not part of the product: it must come back as it went */
    bool pad_ok = true;
    for (int64_t i = 0; !rc && i < m; i++)
        for (int64_t j = n; j < ldc; j++) pad_ok = pad_ok && !memcmp(&got[i * ldc + j], &c0[i * ldc + j], 4);
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num), w = mx > 0 ? worst / mx : worst;
    ok(!rc && rel <= GEMM_REL && w <= GEMM_WORST && pad_ok, "gemm bf16 %lldx%lldx%lld %s beta %g pad %d: rel %.2g, worst %.2g%s %s", (long long)m,
       (long long)n, (long long)k, bt ? "B^T" : "B", beta, pad, rel, w, pad_ok ? "" : ", padding written", rc ? err.msg : "");
    mode_cuda_free(da), mode_cuda_free(db), mode_cuda_free(dc);
    free(a), free(b), free(af), free(bf), free(c0), free(want), free(got);
}

/* ---- arguments ----------------------------------------------------------------------------- */

static void arguments(void)
{
    struct mode_err err = {0};
    float *d = dev(NULL, 64 * sizeof(float));
    int32_t *di = dev(NULL, 64 * sizeof(int32_t));
    const int sec[3] = {24, 20, 20}, neg[3] = {24, -1, 20};
    int rc;
    rc = mode_rmsnorm_cuda(d, d, 1e-6f, -1, 8, d, NULL, &err);
    ok(rc == MODE_EUSAGE && strstr(err.msg, "mode_rmsnorm_cuda"), "rmsnorm: negative rows: usage error naming the function (%s)", err.msg);
    rc = mode_layernorm_cuda(d, d, NULL, 1e-6f, 1, 8, d, NULL, &err);
    ok(rc == MODE_EUSAGE && strstr(err.msg, "mode_layernorm_cuda"), "layernorm: null bias: usage error (%s)", err.msg);
    rc = mode_softmax_cuda(d, INT64_MAX / 2, 3, NULL, &err);
    ok(rc == MODE_EUSAGE && strstr(err.msg, "mode_softmax_cuda"), "softmax: n·d past int64: usage error (%s)", err.msg);
    rc = mode_rope_cuda(d, 1, 7, 1, 8, d, NULL, &err);
    ok(rc == MODE_EUSAGE && strstr(err.msg, "mode_rope_cuda"), "rope: stride shorter than the heads: usage error (%s)", err.msg);
    rc = mode_rope_cuda(d, 1, 8, 1, 7, d, NULL, &err);
    ok(rc == MODE_EUSAGE, "rope: odd head_dim: usage error (%s)", err.msg);
    rc = mode_mrope_angles_cuda(di, 1, 128, neg, d, d, NULL, &err);
    ok(rc == MODE_EUSAGE && strstr(err.msg, "mode_mrope_angles_cuda"), "mrope angles: negative section: usage error (%s)", err.msg);
    rc = mode_topk_cuda(d, 1, 64, 33, true, di, d, NULL, &err);
    ok(rc == MODE_EUSAGE && strstr(err.msg, "mode_topk_cuda"), "topk: k 33: usage error (%s)", err.msg);
    rc = mode_topk_cuda(d, 1, 4, 5, true, di, d, NULL, &err);
    ok(rc == MODE_EUSAGE, "topk: k above n_expert: usage error (%s)", err.msg);
    rc = mode_topk_cuda(d, 1, MODE_TOPK_MAX_EXPERTS + 1, 8, true, di, d, NULL, &err);
    ok(rc == MODE_EUSAGE, "topk: %d experts: usage error (%s)", MODE_TOPK_MAX_EXPERTS + 1, err.msg);
    rc = mode_gemm_bf16_cuda((int64_t)1 << 32, 1, 1, NULL, 1, NULL, 1, true, 0, NULL, 1, NULL, &err);
    ok(rc == MODE_EUSAGE && strstr(err.msg, "mode_gemm_bf16_cuda"), "gemm bf16: m past int: usage error (%s)", err.msg);
    /* empty: nothing launched, null pointers allowed */
    err.code = 0;
    rc = mode_rmsnorm_cuda(NULL, NULL, 1e-6f, 0, 8, NULL, NULL, &err) | mode_layernorm_cuda(NULL, NULL, NULL, 1e-6f, 0, 8, NULL, NULL, &err) |
         mode_softmax_cuda(NULL, 0, 8, NULL, &err) | mode_swiglu_cuda(NULL, 0, 8, NULL, NULL, &err) | mode_gelu_cuda(NULL, 0, true, NULL, &err) |
         mode_add_bias_cuda(NULL, NULL, 0, 8, NULL, &err) | mode_add_cuda(NULL, NULL, 0, NULL, &err) |
         mode_round_bf16_cuda(NULL, 0, NULL, NULL, &err) | mode_rope_cuda(NULL, 0, 128, 1, 128, NULL, NULL, &err) |
         mode_mrope_angles_cuda(NULL, 0, 128, sec, NULL, NULL, NULL, &err) | mode_topk_cuda(NULL, 0, 128, 8, true, NULL, NULL, NULL, &err) |
         mode_gemm_bf16_cuda(0, 8, 8, NULL, 8, NULL, 8, true, 0, NULL, 8, NULL, &err);
    ok(rc == MODE_OK, "every op on zero rows: MODE_OK, nothing launched %s", rc ? err.msg : "");
    mode_cuda_free(d), mode_cuda_free(di);
}

int main(void)
{
    struct mode_err err = {0};
    if (!mode_cuda_built()) tap_skip_all("this build has no CUDA kernels (make CUDA=1)");
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    tap_seed(20261203);
    arguments();

    for (size_t s = 0; s < N_SHAPES; s++) {
        const int64_t n = SHAPES[s][0], d = SHAPES[s][1];
        rmsnorm_case(n, d, 1e-6f, false, 3);
        layernorm_case(n, d, s % 2 ? 3.0f : 0.0f, false);
        softmax_case(n, d);
    }
    rmsnorm_case(5, 128, 1e-6f, true, 3);
    rmsnorm_case(5, 2048, 1e-6f, true, 3);
    rmsnorm_case(1000, 128, 0.25f, false, 0.5f); /* eps of the size of mean(x²): where it is added shows */
    rmsnorm_case(3, 3000, 0.25f, false, 0.5f);
    layernorm_case(5, 3000, 3.0f, true);
    layernorm_case(1000, 7, 0.0f, true);
    /* beyond one launch's grid (2^15 blocks): warp rows 8 a block, block rows one */
    rmsnorm_case(300000, 7, 1e-6f, false, 3);
    rmsnorm_case(33000, 1025, 1e-6f, false, 3);
    softmax_case(300000, 5);

    const int64_t ew[][2] = {{1, 1}, {1, 7}, {5, 768}, {1000, 768}, {7, 3000}};
    for (size_t s = 0; s < sizeof ew / sizeof ew[0]; s++) {
        swiglu_case(ew[s][0], ew[s][1]);
        add_bias_case(ew[s][0], ew[s][1]);
        gelu_case(ew[s][0] * ew[s][1], true);
        gelu_case(ew[s][0] * ew[s][1], false);
        add_case(ew[s][0] * ew[s][1], false);
    }
    add_case(1001, true);
    gelu_case(9000001, false);  /* past 2^15 blocks of 256 */
    add_bias_case(9001, 1000);  /* the same */
    round_bf16_cases();

    rope_case(1, 32, 128, 0);
    rope_case(5, 4, 64, 5);
    rope_case(7, 1, 2, 1);
    rope_case(1000, 32, 128, 3);
    rope_case(1000, 4, 128, 0);
    rope_case(70000, 1, 256, 0); /* n·half past 2^15 blocks of 256 threads */
    const int qwen[3] = {24, 20, 20}, uneven[3] = {4, 3, 1};
    mrope_case(1, 128, qwen);
    mrope_case(5, 16, uneven);
    mrope_case(1000, 128, qwen);
    mrope_case(140000, 128, qwen); /* past 2^15 blocks */

    const int experts[] = {8, 60, 128, 4096}, ks[] = {1, 2, 8, 32};
    for (int e = 0; e < 4; e++)
        for (int q = 0; q < 4; q++) {
            if (ks[q] > experts[e]) continue;
            const int64_t n = experts[e] >= 4096 ? 37 : 1000;
            topk_case(n, experts[e], ks[q], true);
            topk_case(experts[e] >= 4096 ? 5 : 1, experts[e], ks[q], false);
        }
    topk_case(5, 8, 8, false);
    topk_case(300000, 8, 2, true); /* past 2^15 blocks of 8 warps */
    topk_special();

    gemm_bf16_case(256, 384, 512, true, 0, 0);
    gemm_bf16_case(257, 383, 129, true, 1, 3);
    gemm_bf16_case(1000, 96, 2048, false, 0, 1);
    gemm_bf16_case(13, 7, 5, false, 1, 0);
    gemm_bf16_case(1, 2048, 768, true, 1, 0);
    gemm_bf16_case(4096, 1536, 2048, true, 0, 0); /* an expert's gate/up at Qwen3-VL-30B-A3B's shape */
    return tap_done();
}
