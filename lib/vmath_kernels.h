/* vmath_kernels.h — the code of vmath.c, written once for vectors of VL floats; vmath.c includes
 * it once per width (4: SSE2, 8: AVX2), with K(name) giving each width its own names. Not a
 * header of its own: no include guard, nothing public. Per element, both widths run the same
 * f32 operations; the softmax sum goes through 4 lanes on both (add4), so the two give the same
 * bits. */

#define vf K(vf)
#define vi K(vi)
#define vu K(vu)
#define vload K(vload)
#define vstore K(vstore)
#define vload_part K(vload_part)
#define vstore_part K(vstore_part)
#define vsel K(vsel)
#define vpad K(vpad)
#define vpow2i K(vpow2i)
#define vexp_core K(vexp_core)
#define vexp K(vexp)
#define vabs K(vabs)
#define verf K(verf)
#define vsilu_mul K(vsilu_mul)
#define vgelu_tanh K(vgelu_tanh)
#define vgelu_erf K(vgelu_erf)
#define add4 K(add4)
#define exp_loop K(exp_loop)
#define erf_loop K(erf_loop)
#define silu_mul_loop K(silu_mul_loop)
#define gelu_tanh_loop K(gelu_tanh_loop)
#define gelu_erf_loop K(gelu_erf_loop)
#define softmax_row K(softmax_row)

typedef float vf __attribute__((vector_size(VL * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t))));    /* comparison masks: 0 or -1 */
typedef uint32_t vu __attribute__((vector_size(VL * sizeof(uint32_t)))); /* bit patterns (wrapping arithmetic) */

static inline vf vload(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* the first n < VL elements of p, the other lanes `fill` */
static inline vf vload_part(const float *p, int64_t n, float fill)
{
    float b[VL];
    for (int i = 0; i < VL; i++) b[i] = fill;
    memcpy(b, p, (size_t)n * sizeof *b);
    return vload(b);
}

static inline void vstore_part(float *p, int64_t n, vf v)
{
    float b[VL];
    vstore(b, v);
    memcpy(p, b, (size_t)n * sizeof *b);
}

/* m ? a : b, lane by lane (m from a comparison) */
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vu)m & (vu)a) | (~(vu)m & (vu)b)); }

/* v with its lanes from n on set to fill */
static inline vf vpad(vf v, int64_t n, float fill)
{
    vi lane;
    for (int i = 0; i < VL; i++) lane[i] = i;
    return vsel(lane < (int32_t)n, v, (vf){0} + fill);
}

/* 2^n for integer n in [-126, 127] (as a wrapping bit pattern) */
static inline vf vpow2i(vu n) { return (vf)((n + 127u) << 23); }

/* exp(x) for x in [-105, 89] or NaN (the caller clamps): n = round(x / ln2) by the
 * 1.5·2^23 shifter, r = x − n·ln2 in two parts (Cody–Waite: n·LN2_HI is exact for |n| < 2^15),
 * e^r = 1 + r + r²·P(r), and 2^n applied as 2^n1 · 2^n2 with n1 = floor(n/2): each factor is a
 * normal float even for n = -151 or 128, e^r · 2^n1 is exact, and the last product rounds once
 * (to a subnormal, or overflows to inf, as the exact result would). */
static inline vf vexp_core(vf x)
{
    const float shifter = 0x1.8p23f, log2e = 0x1.715476p+0f; /* 1/ln2 */
    const float ln2_hi = 0x1.63p-1f, ln2_lo = -0x1.bd0106p-13f; /* ln2_hi + ln2_lo = ln2 to 1.6e-12 */
    const float p4 = 1.392617589e-03f, p3 = 8.363173343e-03f, p2 = 4.166655615e-02f, p1 = 1.666657776e-01f, p0 = 5.000000000e-01f;
    const vf t = x * log2e + shifter;
    const vf n = t - shifter;
    const vu k = (vu)t - 0x4b400000u; /* t's bits = bits(1.5·2^23) + n */
    vf r = x - n * ln2_hi;
    r = r - n * ln2_lo;
    vf p = (vf){0} + p4;
    p = p * r + p3;
    p = p * r + p2;
    p = p * r + p1;
    p = p * r + p0;
    const vf e = 1.0f + (r + r * r * p);
    const vu k1 = ((k + 256u) >> 1) - 128u, k2 = k - k1;
    return e * vpow2i(k1) * vpow2i(k2);
}

/* exp(x) for every x: clamped to [-105, 89], where the results are already 0 and inf; a NaN
 * passes the clamps (its comparisons are false) and every operation after them */
static inline vf vexp(vf x)
{
    const vf lo = (vf){0} - 105.0f, hi = (vf){0} + 89.0f;
    vf xc = vsel(x < lo, lo, x);
    xc = vsel(xc > hi, hi, xc);
    return vexp_core(xc);
}

static inline vf vabs(vf x) { return (vf)((vu)x & 0x7fffffffu); }

static inline vf verf(vf x)
{
    const float tau = 0.921875f, tmax = 4.0f, cen = 2.5f;
    /* |x| < tau: x + x·Q(x²), Q = erf(x)/x − 1 (adding x last keeps the result within an ulp:
     * x·Q is at most 0.13x, so its rounding hardly shows) */
    const float a6 = 8.387590788e-05f, a5 = -8.147202316e-04f, a4 = 5.201466847e-03f, a3 = -2.685959265e-02f,
                a2 = 1.128369942e-01f, a1 = -3.761263490e-01f, a0 = 1.283791661e-01f;
    /* tau ≤ |x| ≤ tmax: 1 − exp(S(|x| − cen) − x²) */
    const float s8 = 1.643570954e-06f, s7 = -1.330685791e-05f, s6 = 7.725492469e-05f, s5 = -4.201495613e-04f,
                s4 = 2.165366430e-03f, s3 = -1.085851807e-02f, s2 = 5.610626191e-02f, s1 = -3.526806831e-01f,
                s0 = -1.556815267e+00f;
    const vf s = x * x;
    vf p = (vf){0} + a6;
    p = p * s + a5;
    p = p * s + a4;
    p = p * s + a3;
    p = p * s + a2;
    p = p * s + a1;
    p = p * s + a0;
    const vf small = x + x * p;

    const vf ax = vabs(x), top = (vf){0} + tmax;
    const vf t = vsel(ax > top, top, ax); /* erf(4) rounds to 1 as every larger one does; NaN stays */
    const vf v = t - cen;
    vf q = (vf){0} + s8;
    q = q * v + s7;
    q = q * v + s6;
    q = q * v + s5;
    q = q * v + s4;
    q = q * v + s3;
    q = q * v + s2;
    q = q * v + s1;
    q = q * v + s0;
    const vf erfc = vexp_core(q - t * t); /* argument in [-18, -0.8]: no clamp needed */
    const vf big = (vf)((vu)(1.0f - erfc) | ((vu)x & 0x80000000u));

    return vsel(ax < tau, small, big); /* a NaN takes `big`, NaN all along */
}

static void exp_loop(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vstore(y + i, vexp(vload(x + i)));
    if (i < n) vstore_part(y + i, n - i, vexp(vload_part(x + i, n - i, 0.0f)));
}

static void erf_loop(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vstore(y + i, verf(vload(x + i)));
    if (i < n) vstore_part(y + i, n - i, verf(vload_part(x + i, n - i, 0.0f)));
}

static inline vf vsilu_mul(vf g, vf u) { return g / (1.0f + vexp(-g)) * u; }

static void silu_mul_loop(const float *g, const float *u, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vstore(y + i, vsilu_mul(vload(g + i), vload(u + i)));
    if (i < n) vstore_part(y + i, n - i, vsilu_mul(vload_part(g + i, n - i, 0.0f), vload_part(u + i, n - i, 0.0f)));
}

/* 0.5x(1 + tanh z) = x · σ(2z), σ(2z) = 1/(1 + e) for z ≥ 0 and e/(1 + e) for z < 0 with
 * e = exp(−2|z|) ≤ 1: no overflow, no cancellation; z as torch's f32 expression forms it */
static inline vf vgelu_tanh(vf x)
{
    const float k = 0.7978845608028654f; /* sqrt(2/pi) */
    const vf z = k * (x + 0.044715f * x * x * x);
    const vf e = vexp(-2.0f * vabs(z));
    const vf num = vsel(z < 0.0f, e, (vf){0} + 1.0f);
    return x * num / (1.0f + e);
}

static void gelu_tanh_loop(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vstore(x + i, vgelu_tanh(vload(x + i)));
    if (i < n) vstore_part(x + i, n - i, vgelu_tanh(vload_part(x + i, n - i, 0.0f)));
}

static inline vf vgelu_erf(vf x) { return 0.5f * x * (1.0f + verf(x * 0.7071067811865476f)); }

static void gelu_erf_loop(float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + VL <= n; i += VL) vstore(x + i, vgelu_erf(vload(x + i)));
    if (i < n) vstore_part(x + i, n - i, vgelu_erf(vload_part(x + i, n - i, 0.0f)));
}

/* s + e in 4 lanes whatever VL: e's elements j into lane j mod 4 in ascending j, so that the
 * sum's order, and bits, are the same on both paths */
static inline v4f add4(v4f s, vf e)
{
    float b[VL];
    vstore(b, e);
    for (int h = 0; h < VL; h += 4) {
        v4f q;
        memcpy(&q, b + h, sizeof q);
        s += q;
    }
    return s;
}

static void softmax_row(float *x, int64_t d, int64_t seen, float scale)
{
    const float ninf = -INFINITY;
    /* the maximum: lane-wise m = v > m ? v : m, as the scalar loop (NaNs never win) */
    vf m = (vf){0} + ninf;
    int64_t j = 0;
    for (; j + VL <= seen; j += VL) {
        const vf v = vload(x + j) * scale;
        m = vsel(v > m, v, m);
    }
    if (j < seen) { /* the padding is −inf after the scaling (−inf · scale need not be) */
        const vf v = vpad(vload_part(x + j, seen - j, 0.0f) * scale, seen - j, ninf);
        m = vsel(v > m, v, m);
    }
    float l[VL], mx = ninf;
    vstore(l, m);
    for (int i = 0; i < VL; i++) mx = l[i] > mx ? l[i] : mx;
    if (mx == ninf) { /* nothing to attend to: all zero (never in a causal row) */
        memset(x, 0, (size_t)d * sizeof *x);
        return;
    }
    /* exp(v − max) over the columns seen; the masked ones would add exp(−inf) = 0 to the sum */
    v4f s = (v4f){0};
    for (j = 0; j + VL <= seen; j += VL) {
        const vf e = vexp(vload(x + j) * scale - mx);
        vstore(x + j, e);
        s = add4(s, e);
    }
    if (j < seen) {
        const vf e = vexp(vpad(vload_part(x + j, seen - j, 0.0f) * scale, seen - j, ninf) - mx); /* padding: exp(−inf) = 0 */
        vstore_part(x + j, seen - j, e);
        s = add4(s, e);
    }
    const float inv = 1.0f / ((s[0] + s[2]) + (s[1] + s[3])); /* the lanes pairwise, in a fixed order */
    for (j = 0; j + VL <= seen; j += VL) vstore(x + j, vload(x + j) * inv);
    for (; j < seen; j++) x[j] *= inv;
    /* the masked columns: exp(−inf) · inv, +0 — or NaN when a NaN (or inf − inf) made the sum NaN,
     * as the whole row of the unmasked computation is */
    const float masked = 0.0f * inv;
    for (j = seen; j < d; j++) x[j] = masked;
}

#undef vf
#undef vi
#undef vu
#undef vload
#undef vstore
#undef vload_part
#undef vstore_part
#undef vsel
#undef vpad
#undef vpow2i
#undef vexp_core
#undef vexp
#undef vabs
#undef verf
#undef vsilu_mul
#undef vgelu_tanh
#undef vgelu_erf
#undef add4
#undef exp_loop
#undef erf_loop
#undef silu_mul_loop
#undef gelu_tanh_loop
#undef gelu_erf_loop
#undef softmax_row
