/* vmath.c — vectorised f32 exp and erf and the activations and softmax of lib/ops.c built on
 * them (vmath.h). The code (vmath_kernels.h) is GCC vector extensions, compiled twice: 4 floats,
 * one SSE2 register, for any x86-64 (8-float vectors would be split by GCC, which lowers their
 * comparisons to scalar code without AVX), and 8 floats under target("avx2"), taken where the
 * CPU has AVX2 (twice the elements per instruction). Both are IEEE f32 without FMA (AVX2 does not
 * bring it, and -std=c11 turns contraction off): the results do not depend on the path or the
 * machine.
 *
 * The polynomial coefficients are Chebyshev interpolants computed with mpmath 1.3.0 at 40 digits
 * (mpmath.chebyfit(f, interval, degree + 1)) and rounded to the nearest f32:
 *   exp: f(r) = (e^r − 1 − r)/r² on [−ln2/2, ln2/2], degree 4 (interpolation error 6e-8 on f,
 *        1e-8 relative on e^r);
 *   erf, |x| < 0.921875: f(s) = erf(√s)/√s − 1 on [0, 0.921875²], degree 6 (4e-10 absolute);
 *   erf, 0.921875 ≤ |x| ≤ 4: S(v) = log(erfc(t)) + t², t = 2.5 + v, v ∈ [0.921875 − 2.5, 1.5],
 *        degree 8 (2e-8 absolute, so erfc = exp(S − t²) is good to 2e-8 relative, erf to 4e-9).
 * The split at 0.921875 (59/64) and the bound 4 (erf rounds to ±1 in f32 from 3.92) follow the
 * usual f32 erf layout (e.g. ARM's optimized-routines erff). */
#include "vmath.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef float v4f __attribute__((vector_size(4 * sizeof(float)))); /* the softmax sum's lanes */

#define VL 4
#define K(name) name##_4
#include "vmath_kernels.h"
#undef K
#undef VL

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_AVX2_PATH 1
#pragma GCC push_options
#pragma GCC target("avx2")
#define VL 8
#define K(name) name##_8
#include "vmath_kernels.h"
#undef K
#undef VL
#pragma GCC pop_options
#else
#define HAVE_AVX2_PATH 0
#endif

static atomic_int g_lanes;        /* 0 until chosen, then 4 or 8 */
static atomic_bool g_force_sse2; /* mode_vmath_force_sse2 */

/* 8 where the CPU has AVX2 and neither MODE_VMATH=sse2 nor mode_vmath_force_sse2 says otherwise */
static int lanes(void)
{
    if (atomic_load_explicit(&g_force_sse2, memory_order_relaxed)) return 4;
    int l = atomic_load_explicit(&g_lanes, memory_order_relaxed);
    if (!l) { /* idempotent: threads that race here store the same value */
        const char *v = getenv("MODE_VMATH");
        l = 4;
#if HAVE_AVX2_PATH
        if (__builtin_cpu_supports("avx2") && !(v && !strcmp(v, "sse2"))) l = 8;
#endif
        (void)v;
        atomic_store_explicit(&g_lanes, l, memory_order_relaxed);
    }
    return l;
}

#if HAVE_AVX2_PATH
#define DISPATCH(fn, ...) (lanes() == 8 ? fn##_8(__VA_ARGS__) : fn##_4(__VA_ARGS__))
#else
#define DISPATCH(fn, ...) fn##_4(__VA_ARGS__)
#endif

const char *mode_vmath_path(void) { return lanes() == 8 ? "avx2" : "sse2"; }

void mode_vmath_force_sse2(bool on) { atomic_store_explicit(&g_force_sse2, on, memory_order_relaxed); }

void mode_vexp(const float *x, float *y, int64_t n) { DISPATCH(exp_loop, x, y, n); }

void mode_verf(const float *x, float *y, int64_t n) { DISPATCH(erf_loop, x, y, n); }

void mode_vsilu_mul(const float *g, const float *u, float *y, int64_t n) { DISPATCH(silu_mul_loop, g, u, y, n); }

void mode_vgelu_tanh(float *x, int64_t n) { DISPATCH(gelu_tanh_loop, x, n); }

void mode_vgelu_erf(float *x, int64_t n) { DISPATCH(gelu_erf_loop, x, n); }

void mode_vsoftmax_row_scaled(float *x, int64_t d, int64_t seen, float scale) { DISPATCH(softmax_row, x, d, seen, scale); }

void mode_vsoftmax_row(float *x, int64_t d) { DISPATCH(softmax_row, x, d, d, 1.0f); }
