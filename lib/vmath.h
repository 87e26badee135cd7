/* vmath.h — f32 exp and erf over arrays, and the runtime's activations and softmax built on them
 * (lib/ops.c calls these for mode_softmax_ref, mode_swiglu_ref, mode_gelu_tanh_ref and
 * mode_gelu_erf_ref). Range reduction and polynomials in f32, written with GCC vector extensions
 * so that the loops run several elements per instruction where glibc's expf/tanhf/erff take one
 * per call: 4 lanes (SSE2, any x86-64, no -march needed), or 8 where the CPU has AVX2 (chosen
 * at the first call; see mode_vmath_path).
 *
 * Every element is computed by the same sequence of f32 operations wherever it sits in the array
 * (a tail is padded and run through the vector code), without FMA: the result of an element
 * depends on its value only — the same on both paths, on every x86-64 and for every array length
 * and alignment; a softmax row's sum runs in 4 lanes on both paths, so rows too are the same bits.
 * Arrays are borrowed; y may be x (in place); nothing allocates, nothing fails.
 *
 * Accuracy, against libm in double (exp, erf, erfc) taken as exact; ulp = the f32 unit in the last
 * place of the exact value (2^(e−23) for a value in [2^e, 2^(e+1)), 2^-149 below FLT_MIN); u =
 * 2^-24. Measured on every one of the 2^32 f32 inputs (tests/lib/test_vmath --all, 2026-12-07),
 * asserted on a sweep of 17 million by test_vmath in make check:
 *   mode_vexp   ≤ 1.05 ulp (glibc expf: 0.502), subnormal results included; exp(±0) = 1;
 *               +inf from 88.72283935546875 up (exp(88.7228317), the float below, is finite, as
 *               exactly rounded); +0 below −103.97; exp(−inf) = +0, exp(+inf) = +inf, NaN → NaN.
 *               Non-decreasing over all of f32 (checked on every pair of neighbours), so a
 *               softmax keeps the order of its inputs (the router's top-k relies on it).
 *   mode_verf   ≤ 1.28 ulp (glibc erff: 0.97); odd (erf(−0) = −0); ±1 exactly from |x| ≥ 3.92
 *               (as exactly rounded) and for ±inf; NaN → NaN.
 * The activations, on random inputs, against their formula evaluated in double on the same f32
 * input (bounds as the macros below; measured worst in brackets):
 *   mode_vsilu_mul  g/(1 + exp(−g))·u, torch's f32 expression with this exp: ≤ 3 ulp [2.65; the
 *               expf loop 2.65]. g < −88.72 gives −0 (exp(−g) overflows), as the expf loop does.
 *   mode_vgelu_tanh x·σ(2z), z = √(2/π)(x + 0.044715x³) formed in f32 as torch forms it: equal to
 *               0.5x(1 + tanh z) without the cancellation of 1 + tanh z for negative x.
 *               |err| ≤ 4 ulp + 8|z|u·|value| + 2^-149·|x| [0.72 of it] — the |z| term is z's own
 *               f32 rounding, amplified by σ's slope where σ(2z) ≈ e^{2z}; the last, e^{2z}'s
 *               subnormal quantum. The tanhf loop errs by up to 1.2u·|x| absolute where
 *               1 + tanh z cancels; this form does not.
 *   mode_vgelu_erf  0.5x(1 + erf(x/√2)), torch's expression with mode_verf: |err| ≤ 4 ulp +
 *               1.5u·|x| [0.34 of it; the erff loop 0.29] — the absolute term is 1 + erf's
 *               cancellation for negative x, as in the erff loop.
 *   mode_vsoftmax_row  the maximum subtracted (in f32, as torch), exp, the sum over 4 interleaved
 *               partial sums (element j into lane j mod 4, the lanes then added pairwise), each
 *               element times 1/sum: relative error ≤ (6.5 + ceil(d/4) + 1)u for a row of d
 *               against exp(x − max)/Σ in double on the f32 differences [0.4 of it at d ≤ 17,
 *               0.03 at d = 4099; the expf loop, summing left to right, 0.09 there].
 */
#ifndef MODE_VMATH_H
#define MODE_VMATH_H

#include <stdbool.h>
#include <stdint.h>

/* The bounds stated above, which test_vmath asserts; each a little above the worst measured,
 * which the error analysis explains:
 * exp: 0.5 ulp from the last rounding of 1 + (r + r²P), ≤ 0.25 from r's, ≤ 0.25 from r + r²P's */
#define MODE_VEXP_MAX_ULP 1.1
/* erf: for |x| ≥ 0.92 the error of erfc = exp(S − x²) (exp's, S's and x²'s roundings: ~3u
 * relative) times erfc/erf ≤ 0.23, plus 1 − erfc's rounding; below, x + x·Q's */
#define MODE_VERF_MAX_ULP 1.3
/* silu·u: exp's error shrinks by e/(1 + e) ≤ 1, then 1 + e, the division and the product round */
#define MODE_VSILU_MAX_ULP 3.0
/* gelu-tanh: σ(2z) = e/(1 + e) or 1/(1 + e) with exp and three roundings: 4 ulp; z is x³, a sum
 * and two products in f32 (≤ 4u relative, 4|z|u absolute) and σ(2z)'s relative slope is
 * 2(1 − σ) ≤ 2: 8|z|u relative; where e^{2z} is subnormal its quantum 2^-149, times |x| */
#define MODE_VGELU_TANH_MAX_ULP 4.0
#define MODE_VGELU_TANH_Z_REL 8.0
/* gelu-erf: erf's ≤ 1.3 ulp (≤ 1.3u absolute below 1) and 1 + erf's rounding are ≤ 3u absolute on
 * 1 + erf, times 0.5|x|: 1.5u·|x| where 1 + erf cancels; the products: a few ulp of the value */
#define MODE_VGELU_ERF_MAX_ULP 4.0
#define MODE_VGELU_ERF_ABS 1.5
/* softmax, relative, in u: exp's ≤ 1.1 ulp (≤ 2.2u) twice — in the element and in the sum —, the
 * reciprocal and the product ≤ 1u each: 6.5; plus the sum's own, ≤ 1u per addition on its
 * longest path: ceil(d/4) − 1 along a lane and 2 pairwise levels */
#define MODE_VSOFTMAX_REL_U 6.5

/* The path the loops take, "avx2" or "sse2": AVX2 where the CPU has it, unless MODE_VMATH=sse2 is
 * in the environment (read at the first call) or mode_vmath_force_sse2(true) was called. */
const char *mode_vmath_path(void);
/* Tests and benchmarks: the SSE2 path whatever the CPU (true), or the choice above again (false).
 * The results are the same bits either way; only the time differs. */
void mode_vmath_force_sse2(bool on);

/* y = exp(x), n elements. */
void mode_vexp(const float *x, float *y, int64_t n);
/* y = erf(x), n elements. */
void mode_verf(const float *x, float *y, int64_t n);

/* y = silu(g) · u elementwise: y[j] = g[j] / (1 + exp(-g[j])) · u[j], n elements; y may be g or u. */
void mode_vsilu_mul(const float *g, const float *u, float *y, int64_t n);
/* In place: x = gelu_pytorch_tanh(x), as x · σ(2z) (above). */
void mode_vgelu_tanh(float *x, int64_t n);
/* In place: x = 0.5 x (1 + erf(x / √2)) (nn.GELU()). */
void mode_vgelu_erf(float *x, int64_t n);

/* In place softmax of one row of d: x − max, exp, divided by the sum. A row whose maximum is −inf
 * (every element −inf or NaN: nothing to attend to) becomes all +0; otherwise a NaN anywhere (or
 * +inf, as inf − inf) makes the row NaN, as the scalar loop it replaces. NaNs do not take part in
 * the maximum (the comparison x > max is false for them). */
void mode_vsoftmax_row(float *x, int64_t d);
/* The same on scale·x[j] for j < seen, the columns from seen on masked (+0 there, NaN in a NaN
 * row): bit for bit the result of x[j] *= scale for j < seen, x[j] = −inf for j ≥ seen, then
 * mode_vsoftmax_row(x, d) (the masked columns add exp(−inf) = 0 to the sum, so leaving them out
 * changes nothing), without computing their exp. 0 ≤ seen ≤ d. */
void mode_vsoftmax_row_scaled(float *x, int64_t d, int64_t seen, float scale);

#endif
