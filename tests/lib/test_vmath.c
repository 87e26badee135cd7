/* test_vmath — lib/vmath.c against libm in double: mode_vexp against exp, mode_verf against erf,
 * the activations against their formulas in double (silu: g/(1 + exp(−g))·u; gelu-tanh as
 * x/(1 + exp(−2z)), the form of 0.5x(1 + tanh z) that does not cancel; gelu-erf as
 * 0.5x·erfc(−x/√2)), and the softmax rows against exp(x − max)/Σ in double, x − max the f32
 * difference (torch rounds it too: up to |x − max|·u, 8e-7 relative at a difference of 16, which
 * would swamp the rest; the rest is what the vector code changes). The scalar f32 loops
 * the vector code replaced (glibc expf, tanhf, erff, as lib/ops.c had them) are measured the same
 * way and printed beside, and must agree on every NaN, infinity and signed zero.
 *
 * Inputs: a sweep of every 257th f32 bit pattern (16.7 million values, both signs, every
 * exponent, mantissas spread by the odd stride), every f32 in windows of 2^12 around the points
 * where the code changes path (exp: overflow at 88.72, the subnormal results from −87.34 and
 * the underflow to 0 at −103.97, each k·ln2 ± ln2/2 where the range reduction switches its
 * integer; erf: the split at 0.921875, the clamp at 4, zero), and the special values. With the
 * argument --all, mode_vexp and mode_verf are checked on every one of the 2^32 f32 values, and
 * exp's monotonicity on every pair of neighbours (6 CPU minutes: how vmath.h's numbers were
 * measured).
 *
 * Bounds: those vmath.h states (MODE_V*), each a little above the worst measured, so that the
 * sweeps fail when a result moves by a few hundredths of an ulp where the error peaks. Tried, and
 * failing: a low-order coefficient off by 1e-4 relative (exp's r² and r³ terms, erf's x³ and
 * S's v⁴), the highest ones by 0.1–1%, ln2 not split, a clamp dropped or a NaN clamped away,
 * σ's branches swapped, 0.04472 for 0.044715, a lane left out of the softmax sum, masked columns
 * zeroed in a NaN row. Changes too small to move any result by that much pass (exp's two highest
 * coefficients off by 1e-4 relative; erf's split moved from 0.921875 to 0.95): they leave the
 * stated accuracy true.
 */
#include "../../lib/ops.h"
#include "../../lib/vmath.h"
#include "tap.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U 0x1p-24 /* f32 unit roundoff */

/* f32 ulp at the exact value y: 2^(e−23) for |y| in [2^e, 2^(e+1)), 2^-149 below FLT_MIN,
 * FLT_MAX's ulp above it */
static double ulp_of(double y)
{
    y = fabs(y);
    if (y < FLT_MIN) return 0x1p-149;
    int e;
    frexp(y, &e); /* |y| in [2^(e−1), 2^e) */
    return ldexp(1.0, (e > 128 ? 128 : e) - 24);
}

/* |got − want| in ulp of want; 0 for NaN against NaN and for an infinity where the exact value
 * rounds to it; infinity for any other disagreement on NaN or infinity */
static double ulp_err(float got, double want)
{
    if (isnan(want) || isnan(got)) return isnan(want) && isnan(got) ? 0 : INFINITY;
    if (isinf(got)) {
        const double over = 0x1.ffffffp127; /* FLT_MAX + half its ulp: rounds to inf from here */
        return (got > 0 ? want >= over : want <= -over) ? 0 : INFINITY;
    }
    return fabs((double)got - want) / ulp_of(want);
}

static float bits_f(uint32_t b)
{
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static uint32_t f_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

static int same_bits(float a, float b) { return (isnan(a) && isnan(b)) || f_bits(a) == f_bits(b); }

/* ---- exp and erf ------------------------------------------------------------------------------ */

enum { CHUNK = 4096 };

struct scan {
    double worst, worst_libm; /* ulp, ours and the libm f32 function's */
    float worst_x;
    uint64_t n, non_monotone; /* non_monotone: consecutive inputs whose results decrease (exp) */
};

typedef void vfun(const float *, float *, int64_t);

/* runs f and its exact double reference on x[0..n) (consecutive floats when monotone is set) */
static void scan_chunk(struct scan *s, vfun *f, double (*exact)(double), float (*libm)(float), const float *x, int n, int monotone)
{
    float y[CHUNK];
    f(x, y, n);
    for (int i = 0; i < n; i++) {
        const double want = exact(x[i]), e = ulp_err(y[i], want);
        if (!(e <= s->worst)) s->worst = e, s->worst_x = x[i];
        if (libm) {
            const double el = ulp_err(libm(x[i]), want);
            if (!(el <= s->worst_libm)) s->worst_libm = el;
        }
        if (monotone && i > 0 && y[i] < y[i - 1]) s->non_monotone++;
    }
    s->n += (uint64_t)n;
}

/* every f32 from bit pattern b0 up (stride 1) for count values, within one sign */
static void scan_window(struct scan *s, vfun *f, double (*exact)(double), float (*libm)(float), float around, uint32_t half)
{
    float x[CHUNK];
    const uint32_t c = f_bits(around);
    uint32_t b = (c & 0x7fffffffu) >= half ? c - half : (c & 0x80000000u);
    for (uint32_t left = 2 * half; left;) {
        int n = 0;
        for (; n < CHUNK && left; n++, left--, b++) x[n] = bits_f(b);
        /* monotone in the input order for positive inputs (increasing bits, increasing value) */
        scan_chunk(s, f, exact, libm, x, n, !(c & 0x80000000u));
    }
}

/* every stride-th bit pattern of the 2^32 */
static void scan_all(struct scan *s, vfun *f, double (*exact)(double), float (*libm)(float), uint32_t stride)
{
    float x[CHUNK];
    uint64_t b = 0;
    while (b < ((uint64_t)1 << 32)) {
        int n = 0;
        for (; n < CHUNK && b < ((uint64_t)1 << 32); n++, b += stride) x[n] = bits_f((uint32_t)b);
        scan_chunk(s, f, exact, libm, x, n, 0);
    }
}

/* exp's monotonicity over the whole line, one run of consecutive floats per sign: negatives
 * decreasing in bits are increasing in value */
static uint64_t exp_non_monotone_all(void)
{
    float x[CHUNK], y[CHUNK], last = 0;
    uint64_t bad = 0;
    int first = 1;
    /* from −inf (0xff800000) down to −0, then +0 up to +inf */
    for (int sign = 1; sign >= 0; sign--) {
        int64_t b = sign ? 0xff800000 : 0, end = sign ? (int64_t)0x80000000 - 1 : 0x7f800000;
        while (sign ? b > end : b <= end) {
            int n = 0;
            for (; n < CHUNK && (sign ? b > end : b <= end); n++, b += sign ? -1 : 1) x[n] = bits_f((uint32_t)b);
            mode_vexp(x, y, n);
            for (int i = 0; i < n; i++) {
                if (!first && y[i] < last) bad++;
                last = y[i], first = 0;
            }
        }
    }
    return bad;
}

static void exp_specials(void)
{
    const float big = 0x1.62e42ep+6f; /* 88.7228317: the largest x whose exp rounds to a finite f32 */
    const float in[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, big, nextafterf(big, INFINITY), 1e30f, -1e30f, -104.0f, -103.9f};
    float y[sizeof in / sizeof in[0]];
    mode_vexp(in, y, sizeof in / sizeof in[0]);
    ok(f_bits(y[0]) == f_bits(1.0f) && f_bits(y[1]) == f_bits(1.0f), "exp(±0) = 1 exactly");
    ok(isinf(y[2]) && y[2] > 0, "exp(+inf) = +inf");
    ok(f_bits(y[3]) == 0, "exp(-inf) = +0");
    ok(isnan(y[4]) && isnan(y[5]), "exp(NaN) is NaN, either sign");
    ok(isfinite(y[6]) && y[6] > 3.4e38f, "exp(88.7228317) = %a is finite", (double)y[6]);
    ok(isinf(y[7]), "exp(88.7228394), the next float up, overflows to inf (%a)", (double)y[7]);
    ok(isinf(y[8]) && f_bits(y[9]) == 0, "exp(1e30) = inf, exp(-1e30) = +0");
    ok(f_bits(y[10]) == 0, "exp(-104) underflows to +0 (%a)", (double)y[10]);
    ok(y[11] > 0 && y[11] < FLT_MIN, "exp(-103.9) is subnormal, not 0 (%a)", (double)y[11]);
    /* every element computed alike wherever it sits: lengths 1..40, offsets 0..7 */
    float x[48], a[48], one;
    int same = 1;
    for (int i = 0; i < 48; i++) x[i] = (float)(i * 7 % 23) - 11.3f;
    for (int len = 1; len <= 40; len++)
        for (int off = 0; off < 8; off++) {
            mode_vexp(x + off, a, len);
            for (int i = 0; i < len; i++) {
                mode_vexp(x + off + i, &one, 1);
                same &= f_bits(one) == f_bits(a[i]);
            }
        }
    ok(same, "an element's exp does not depend on the array's length or its place in it");
    /* in place */
    memcpy(a, x, sizeof a);
    mode_vexp(a, a, 45);
    float b2[48];
    mode_vexp(x, b2, 45);
    ok(!memcmp(a, b2, 45 * sizeof *a), "in place equals out of place");
}

static void test_exp(int all)
{
    struct scan s = {0};
    if (all) {
        scan_all(&s, mode_vexp, exp, expf, 1);
        const uint64_t bad = exp_non_monotone_all();
        ok(bad == 0, "exp non-decreasing over every f32 (%llu decreasing steps)", (unsigned long long)bad);
    } else {
        scan_all(&s, mode_vexp, exp, expf, 257);
        const float at[] = {0x1.62e42ep+6f, -87.33654f, -103.97208f, -103.27893f, 0.0f, 1e-8f, -1e-8f};
        for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) scan_window(&s, mode_vexp, exp, expf, at[i], 2048);
        for (int k = -150; k <= 128; k++) { /* where round(x/ln2) switches to k */
            const float t = (float)((k + 0.5) * 0.6931471805599453);
            scan_window(&s, mode_vexp, exp, expf, t, 2048);
        }
    }
    diag("exp: %llu inputs, worst %.3f ulp at %a (glibc expf: %.3f ulp)", (unsigned long long)s.n, s.worst, (double)s.worst_x,
         s.worst_libm);
    ok(s.worst <= MODE_VEXP_MAX_ULP, "exp within %.2f ulp of libm's double exp (worst %.3f at %a)", MODE_VEXP_MAX_ULP, s.worst,
       (double)s.worst_x);
    ok(s.non_monotone == 0, "exp non-decreasing on the windows of consecutive floats (%llu decreasing steps)",
       (unsigned long long)s.non_monotone);
}

static void test_erf(int all)
{
    struct scan s = {0};
    if (all) {
        scan_all(&s, mode_verf, erf, erff, 1);
    } else {
        scan_all(&s, mode_verf, erf, erff, 257);
        const float at[] = {0.921875f, -0.921875f, 4.0f, -4.0f, 3.9192059f, 0.0f, 1e-20f, 2.5f, 1.0f};
        for (size_t i = 0; i < sizeof at / sizeof at[0]; i++) scan_window(&s, mode_verf, erf, erff, at[i], 2048);
    }
    diag("erf: %llu inputs, worst %.3f ulp at %a (glibc erff: %.3f ulp)", (unsigned long long)s.n, s.worst, (double)s.worst_x,
         s.worst_libm);
    ok(s.worst <= MODE_VERF_MAX_ULP, "erf within %.2f ulp of libm's double erf (worst %.3f at %a)", MODE_VERF_MAX_ULP, s.worst,
       (double)s.worst_x);
    const float in[] = {-0.0f, 0.0f, INFINITY, -INFINITY, NAN, 3.92f, -3.92f, 10.0f, -1e30f, 1e-40f};
    float y[sizeof in / sizeof in[0]];
    mode_verf(in, y, sizeof in / sizeof in[0]);
    ok(f_bits(y[0]) == f_bits(-0.0f) && f_bits(y[1]) == 0, "erf(-0) = -0, erf(+0) = +0");
    ok(y[2] == 1.0f && y[3] == -1.0f, "erf(±inf) = ±1");
    ok(isnan(y[4]), "erf(NaN) is NaN");
    ok(y[5] == 1.0f && y[6] == -1.0f && y[7] == 1.0f && y[8] == -1.0f, "erf = ±1 exactly from 3.92 on");
    ok(y[9] > 0 && fabs(y[9] - 1.1283791670955126 * 1e-40) <= 0x1p-149, "erf of a subnormal: 2x/√π to the last subnormal bit");
}

/* ---- activations ------------------------------------------------------------------------------ */

static float frand(double lo, double hi) { return (float)(lo + (hi - lo) * (double)(tap_rand() >> 11) / 9007199254740992.0); }

static void test_silu(void)
{
    enum { N = 1 << 16 };
    float *g = malloc(N * sizeof *g), *u = malloc(N * sizeof *u), *y = malloc(N * sizeof *y);
    for (int i = 0; i < N; i++) g[i] = frand(-30, 30), u[i] = frand(-3, 3);
    const float sg[] = {-100.0f, 100.0f, 0.0f, -0.0f, INFINITY, -INFINITY, NAN, -88.0f, -89.0f, 1e-30f};
    const float su[] = {1.0f, 2.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    const int ns = sizeof sg / sizeof sg[0];
    memcpy(g, sg, sizeof sg), memcpy(u, su, sizeof su);
    mode_vsilu_mul(g, u, y, N);
    double worst = 0, worst_libm = 0;
    int agree = 1;
    for (int i = 0; i < N; i++) {
        const float old = g[i] / (1.0f + expf(-g[i])) * u[i]; /* the loop lib/ops.c had */
        const double want = (double)g[i] / (1 + exp(-(double)g[i])) * u[i];
        if (i < ns) agree &= same_bits(y[i], old);
        else {
            const double e = ulp_err(y[i], want), el = ulp_err(old, want);
            worst = e > worst ? e : worst, worst_libm = el > worst_libm ? el : worst_libm;
        }
    }
    diag("silu·u: worst %.3f ulp (the expf loop: %.3f)", worst, worst_libm);
    ok(worst <= MODE_VSILU_MAX_ULP, "silu(g)·u within %.1f ulp on %d random g in [-30, 30) (worst %.3f)", MODE_VSILU_MAX_ULP, N - ns, worst);
    ok(agree, "silu·u agrees bit for bit with the expf loop on ±100, ±0, ±inf, NaN, -88, -89, 1e-30");
    /* mode_swiglu_ref: rows of [gate | up] */
    const int64_t n = 3, f = 13;
    float x[3 * 2 * 13], want[3 * 13], got[3 * 13];
    for (int i = 0; i < 3 * 2 * 13; i++) x[i] = frand(-6, 6);
    for (int64_t r = 0; r < n; r++) mode_vsilu_mul(x + r * 2 * f, x + r * 2 * f + f, want + r * f, f);
    mode_swiglu_ref(x, n, f, got);
    ok(!memcmp(got, want, sizeof got), "mode_swiglu_ref: silu of each row's first half times its second");
    free(g), free(u), free(y);
}

static void gelu_case(int tanh_form)
{
    enum { N = 1 << 18 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    const float sp[] = {0.0f, -0.0f, 20.0f, -20.0f, 1e13f, -1e13f, INFINITY, -INFINITY, NAN, 1e-30f};
    const int ns = sizeof sp / sizeof sp[0];
    for (int i = 0; i < N; i++) x[i] = i < N / 2 ? frand(-12, 12) : frand(-1, 1);
    memcpy(x, sp, sizeof sp);
    x[ns] = -3.5f, x[ns + 1] = -10.07f; /* −10.07: e^{2z} near FLT_MIN, where x / (1 + e^{−2z}) underflowed */
    memcpy(y, x, N * sizeof *y);
    if (tanh_form) mode_gelu_tanh_ref(y, N);
    else mode_gelu_erf_ref(y, N);
    const double k = 0.7978845608028654; /* sqrt(2/pi) */
    double worst = 0, worst_libm = 0;     /* in units of the budget: ≤ 1 passes */
    float worst_x = 0;
    int agree = 1;
    for (int i = 0; i < N; i++) {
        const float v = x[i];
        float old;
        double want, budget, budget_old;
        if (tanh_form) {
            old = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
            const double z = k * (v + 0.044715 * (double)v * v * v);
            want = v / (1 + exp(-2 * z));
            budget = MODE_VGELU_TANH_MAX_ULP * ulp_of(want) + MODE_VGELU_TANH_Z_REL * fabs(z) * U * fabs(want) + fabs(v) * 0x1p-149;
            budget_old = budget + 1.5 * U * fabs(v); /* tanhf's absolute error where 1 + tanh cancels */
        } else {
            old = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
            want = 0.5 * v * erfc(-v / sqrt(2.0));
            budget = MODE_VGELU_ERF_MAX_ULP * ulp_of(want) + MODE_VGELU_ERF_ABS * fabs(v) * U;
            budget_old = budget;
        }
        if (i < ns) {
            agree &= same_bits(y[i], old);
            continue;
        }
        const double e = fabs((double)y[i] - want) / budget, el = fabs((double)old - want) / budget_old;
        if (!(e <= worst)) worst = e, worst_x = v;
        worst_libm = el > worst_libm ? el : worst_libm;
    }
    const char *name = tanh_form ? "gelu-tanh" : "gelu-erf";
    diag("%s: worst %.3f of the budget at %a (the %s loop: %.3f)", name, worst, (double)worst_x, tanh_form ? "tanhf" : "erff",
         worst_libm);
    ok(worst <= 1, "%s within its error budget on %d random x in [-12, 12) and [-1, 1) (worst %.3f of it at %a)", name, N - ns, worst,
       (double)worst_x);
    ok(agree, "%s agrees bit for bit with the libm loop on ±0, ±20, ±1e13, ±inf, NaN, 1e-30", name);
    free(x), free(y);
}

/* ---- softmax ---------------------------------------------------------------------------------- */

/* the loop lib/ops.c had (glibc expf, left-to-right sum) */
static void softmax_libm(float *x, int64_t d)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < d; j++) mx = x[j] > mx ? x[j] : mx;
    if (mx == -INFINITY) {
        memset(x, 0, (size_t)d * sizeof *x);
        return;
    }
    float s = 0;
    for (int64_t j = 0; j < d; j++) s += x[j] = expf(x[j] - mx);
    const float inv = 1.0f / s;
    for (int64_t j = 0; j < d; j++) x[j] *= inv;
}

/* rows of d: random in [-8, 8) (shifted by 100 on odd rows: exp would overflow without the
 * maximum), row r masked to −inf past column r (causal); worst error in units of the budget */
static void softmax_case(int64_t d)
{
    const int64_t n = 5;
    float *x = malloc(sizeof *x * (size_t)(n * d)), *y = malloc(sizeof *y * (size_t)(n * d));
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < d; j++) x[r * d + j] = j > r * (d / 4 + 1) ? -INFINITY : frand(-8, 8) + (r & 1 ? 100.0f : 0.0f);
    memcpy(y, x, sizeof *y * (size_t)(n * d));
    mode_softmax_ref(y, n, d);
    double worst = 0, worst_libm = 0;
    int masked_zero = 1;
    float *old = malloc(sizeof *old * (size_t)d);
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * d, *yr = y + r * d;
        float mx = -INFINITY;
        double s = 0;
        for (int64_t j = 0; j < d; j++) mx = xr[j] > mx ? xr[j] : mx;
        for (int64_t j = 0; j < d; j++) s += exp((double)(xr[j] - mx));
        memcpy(old, xr, sizeof *old * (size_t)d);
        softmax_libm(old, d);
        const double budget = (MODE_VSOFTMAX_REL_U + (double)((d + 3) / 4 + 1)) * U;
        for (int64_t j = 0; j < d; j++) {
            if (xr[j] == -INFINITY) {
                masked_zero &= f_bits(yr[j]) == 0;
                continue;
            }
            const double want = exp((double)(xr[j] - mx)) / s;
            const double e = fabs(yr[j] - want) / want / budget, el = fabs(old[j] - want) / want / budget;
            worst = e > worst ? e : worst, worst_libm = el > worst_libm ? el : worst_libm;
        }
    }
    diag("softmax d=%lld: worst %.3f of the budget (the expf loop: %.3f)", (long long)d, worst, worst_libm);
    ok(worst <= 1 && masked_zero, "softmax rows of %lld (causal -inf masks, +100 shifts): within (%.1f + ceil(d/4) + 1)u relative (worst %.3f of it)%s",
       (long long)d, MODE_VSOFTMAX_REL_U, worst, masked_zero ? "" : "; a masked entry is not +0");
    free(x), free(y), free(old);
}

static void softmax_specials(void)
{
    enum { D = 11 };
    const float ninf = -INFINITY;
    const float rows[][D] = {
        {ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf}, /* nothing to attend to */
        {ninf, NAN, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf},  /* max −inf: zeros too */
        {1, 2, NAN, 4, 5, 6, 7, 8, 9, 10, 11},                              /* NaN: the row NaN */
        {1, 2, 3, 4, 5, 6, 7, 8, 9, INFINITY, 11},                          /* +inf: inf − inf, NaN */
        {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},                                  /* uniform */
        {-0.0f, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf}, /* one key: exactly 1 */
    };
    const int nr = sizeof rows / sizeof rows[0];
    for (int r = 0; r < nr; r++) {
        float a[D], b[D];
        memcpy(a, rows[r], sizeof a), memcpy(b, rows[r], sizeof b);
        mode_softmax_ref(a, 1, D);
        softmax_libm(b, D);
        int agree = 1;
        for (int j = 0; j < D; j++) agree &= same_bits(a[j], b[j]) || (r == 4 && fabsf(a[j] - b[j]) <= 0x1p-24f);
        ok(agree, "softmax special row %d agrees with the expf loop (NaN, ±inf, zeros)", r);
    }
    float one[D];
    memcpy(one, rows[5], sizeof one);
    mode_softmax_ref(one, 1, D);
    ok(one[0] == 1.0f, "a row with one key gives it exactly 1");
    float z[1] = {ninf};
    mode_softmax_ref(z, 1, 1);
    ok(f_bits(z[0]) == 0, "a row of one −inf is +0");
    mode_softmax_ref(z, 1, 0); /* d = 0: nothing to touch */
    ok(1, "a row of 0 is accepted");
}

/* mode_vsoftmax_row_scaled = scale, −inf mask, mode_softmax_ref, bit for bit (what attn.c relies on) */
static void softmax_scaled_case(void)
{
    enum { D = 37 };
    const float scales[] = {1.0f, 0.125f, 0.0883883476f, 16.0f, 1e30f, 0.0f, -0.5f};
    int same = 1, cases = 0;
    for (size_t k = 0; k < sizeof scales / sizeof scales[0]; k++)
        for (int64_t d = 1; d <= D; d++)
            for (int64_t seen = 0; seen <= d; seen++) {
                float x[D], a[D], b[D];
                for (int64_t j = 0; j < d; j++) x[j] = frand(-10, 10);
                if (d > 5 && seen % 7 == 3) x[d / 2] = NAN;
                memcpy(a, x, sizeof a), memcpy(b, x, sizeof b);
                mode_vsoftmax_row_scaled(a, d, seen, scales[k]);
                for (int64_t j = 0; j < d; j++) b[j] = j < seen ? b[j] * scales[k] : -INFINITY;
                mode_softmax_ref(b, 1, d);
                for (int64_t j = 0; j < d; j++)
                    if (!same_bits(a[j], b[j]) && same) {
                        diag("first difference: scale %g, d %lld, seen %lld, column %lld: %a, not %a", (double)scales[k], (long long)d,
                             (long long)seen, (long long)j, (double)a[j], (double)b[j]);
                        same = 0;
                    }
                cases++;
            }
    ok(same, "scaled and masked softmax rows equal scale, -inf mask and mode_softmax_ref bit for bit (%d rows, d 1..%d, "
             "every seen, NaNs, scales 1/8..1e30, 0, -0.5)", cases, D);
}

/* the AVX2 and SSE2 paths give the same bits: every 4099th f32 through each loop, and softmax rows
 * of every length up to 40 and every seen, with −inf, NaN and scales */
static void paths_agree(void)
{
    if (strcmp(mode_vmath_path(), "avx2")) {
        ok(1, "both paths agree # SKIP only the SSE2 path runs here (no AVX2, or MODE_VMATH=sse2)");
        return;
    }
    enum { N = 1047824 }; /* 2^32 / 4099 */
    float *x = malloc(N * sizeof *x), *u = malloc(N * sizeof *u), *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    for (int i = 0; i < N; i++) x[i] = bits_f((uint32_t)i * 4099u), u[i] = bits_f((uint32_t)(N - 1 - i) * 4099u);
    int bad = 0;
    for (int op = 0; op < 5; op++)
        for (int force = 0; force <= 1; force++) {
            float *y = force ? b : a;
            mode_vmath_force_sse2(force);
            if (op == 2 || op == 3) memcpy(y, x, N * sizeof *y);
            if (op == 0) mode_vexp(x, y, N);
            if (op == 1) mode_verf(x, y, N);
            if (op == 2) mode_vgelu_tanh(y, N);
            if (op == 3) mode_vgelu_erf(y, N);
            if (op == 4) mode_vsilu_mul(x, u, y, N);
            if (force)
                for (int i = 0; i < N; i++)
                    if (!same_bits(a[i], b[i]) && !bad++)
                        diag("op %d, x = %a: avx2 %a, sse2 %a", op, (double)x[i], (double)a[i], (double)b[i]);
        }
    int rows = 0;
    for (int64_t d = 1; d <= 40; d++)
        for (int64_t seen = 0; seen <= d; seen++, rows++) {
            float r[40], ra[40], rb[40];
            for (int64_t j = 0; j < d; j++) r[j] = frand(-20, 20);
            if (seen % 5 == 1) r[seen / 2] = -INFINITY;
            if (d > 30 && seen == 7) r[3] = NAN;
            const float scale = seen % 3 ? 0.125f : 3.0f;
            memcpy(ra, r, sizeof r), memcpy(rb, r, sizeof r);
            mode_vmath_force_sse2(false);
            mode_vsoftmax_row_scaled(ra, d, seen, scale);
            mode_vmath_force_sse2(true);
            mode_vsoftmax_row_scaled(rb, d, seen, scale);
            for (int64_t j = 0; j < d; j++)
                if (!same_bits(ra[j], rb[j]) && !bad++)
                    diag("softmax d %lld seen %lld col %lld: avx2 %a, sse2 %a", (long long)d, (long long)seen, (long long)j, (double)ra[j],
                         (double)rb[j]);
        }
    mode_vmath_force_sse2(false);
    ok(!bad, "the AVX2 and SSE2 paths give the same bits (%d inputs through each of 5 loops, %d softmax rows; %d differ)", N, rows, bad);
    free(x), free(u), free(a), free(b);
}

int main(int argc, char **argv)
{
    const int all = argc > 1 && !strcmp(argv[1], "--all");
    tap_seed(20261207);
    diag("vmath path: %s", mode_vmath_path());
    exp_specials();
    test_exp(all);
    test_erf(all);
    test_silu();
    gelu_case(1);
    gelu_case(0);
    for (int64_t d = 1; d <= 17; d++) softmax_case(d);
    const int64_t ds[] = {64, 100, 1000, 4099};
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) softmax_case(ds[i]);
    softmax_specials();
    softmax_scaled_case();
    paths_agree();
    return tap_done();
}
