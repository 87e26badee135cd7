/* hash.c — the raw-bytes hash and non-finite test of model weights (hash.h). */
#include "hash.h"

#include <string.h>

/* Odd multipliers: K_STEP is 2^64 / golden ratio (the usual multiplicative-hash constant: its bits
 * are well spread); the others were drawn at random once (any odd constant with about half its
 * bits set mixes as well). Changing any of them changes every fingerprint. */
#define K_STEP 0x9e3779b97f4a7c15u
#define K_LANE 0x177cb1139e6df2b3u
#define K_A 0x873e9429dd85438du
#define K_B 0xcca35e51acfffcf1u
#define K_C 0x94c42c1fcf270d4du
#define K_D 0xe2b9c9bcb10c4807u

/* How a float dtype is laid out: element size, and the word-wide masks of the finite test
 * (hash.h): exponent field, its lowest bit, the sign bits, each repeated in every element of a
 * 64-bit word. */
struct fdesc {
    unsigned size, exp_shift, exp_bits, mant_bits;
    bool has_inf;
    uint64_t mask, add, top;
};

static const struct fdesc F64 = {8, 52, 11, 52, true, 0x7ff0000000000000u, 0x0010000000000000u, 0x8000000000000000u};
static const struct fdesc F32 = {4, 23, 8, 23, true, 0x7f8000007f800000u, 0x0080000000800000u, 0x8000000080000000u};
static const struct fdesc F16 = {2, 10, 5, 10, true, 0x7c007c007c007c00u, 0x0400040004000400u, 0x8000800080008000u};
static const struct fdesc BF16 = {2, 7, 8, 7, true, 0x7f807f807f807f80u, 0x0080008000800080u, 0x8000800080008000u};
static const struct fdesc E5M2 = {1, 2, 5, 2, true, 0x7c7c7c7c7c7c7c7cu, 0x0404040404040404u, 0x8080808080808080u};
/* F8_E4M3 (the "fn" variant of safetensors): no infinities, NaN only with every other bit set */
static const struct fdesc E4M3 = {1, 0, 7, 0, false, 0x7f7f7f7f7f7f7f7fu, 0x0101010101010101u, 0x8080808080808080u};

static const struct fdesc *fdesc_of(enum mode_dtype t)
{
    switch (t) {
    case MODE_F64: return &F64;
    case MODE_F32: return &F32;
    case MODE_F16: return &F16;
    case MODE_BF16: return &BF16;
    case MODE_F8_E5M2: return &E5M2;
    case MODE_F8_E4M3: return &E4M3;
    default: return NULL;
    }
}

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8); /* any alignment; the host is little-endian (mode.h) */
    return w;
}

/* one word into one lane: a bijection of acc for each w, and of w for each acc */
static inline uint64_t step(uint64_t acc, uint64_t w)
{
    acc = (acc ^ w) * K_STEP;
    return acc ^ (acc >> 29);
}

/* a bijective 64-bit mixer: xorshifts and odd multiplications */
static inline uint64_t mix(uint64_t x, uint64_t k)
{
    x ^= x >> 32;
    x *= k;
    x ^= x >> 29;
    x *= K_D;
    return x ^ (x >> 32);
}

/* Two 64-bit words (GCC and clang vector extension: SSE2 on x86-64, NEON on arm64): the finite
 * test runs on these, beside the scalar hash lanes, which leaves the general registers to the 8
 * lanes (with the test in scalar code, 3 lanes spilled to the stack: about 30% slower). */
typedef uint64_t u64x2 __attribute__((vector_size(16)));

bool mode_hash_scan(const void *p, size_t n, enum mode_dtype dtype, uint64_t out[2])
{
    const struct fdesc *d = fdesc_of(dtype);
    const uint64_t mask = d ? d->mask : 0, add = d ? d->add : 0; /* not a float: (w & 0) + 0, never bad */
    const u64x2 vmask = {mask, mask}, vadd = {add, add};
    const unsigned char *s = p;
    uint64_t a0 = K_LANE, a1 = 2 * K_LANE, a2 = 3 * K_LANE, a3 = 4 * K_LANE, a4 = 5 * K_LANE, a5 = 6 * K_LANE,
             a6 = 7 * K_LANE, a7 = 8 * K_LANE;
    u64x2 bad = {0, 0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        u64x2 x0, x1, x2, x3;
        memcpy(&x0, s + i, 16), memcpy(&x1, s + i + 16, 16), memcpy(&x2, s + i + 32, 16), memcpy(&x3, s + i + 48, 16);
        bad |= (((x0 & vmask) + vadd) | ((x1 & vmask) + vadd)) | (((x2 & vmask) + vadd) | ((x3 & vmask) + vadd));
        a0 = step(a0, load64(s + i)), a1 = step(a1, load64(s + i + 8)), a2 = step(a2, load64(s + i + 16));
        a3 = step(a3, load64(s + i + 24)), a4 = step(a4, load64(s + i + 32)), a5 = step(a5, load64(s + i + 40));
        a6 = step(a6, load64(s + i + 48)), a7 = step(a7, load64(s + i + 56));
    }
    uint64_t acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7}, bad1 = bad[0] | bad[1];
    /* the tail: whole words into lanes 0, 1, ..., then the last bytes zero-padded */
    for (int l = 0; i < n; l++) {
        uint64_t w = 0;
        size_t k = n - i < 8 ? n - i : 8;
        memcpy(&w, s + i, k);
        i += k;
        acc[l] = step(acc[l], w);
        bad1 |= (w & mask) + add;
    }
    uint64_t h0 = mix((uint64_t)n ^ K_A, K_A), h1 = mix((uint64_t)n ^ K_B, K_C);
    for (int l = 0; l < 8; l++) {
        h0 = mix(h0 ^ acc[l], K_A);
        h1 = mix(h1 + (acc[l] << 32 | acc[l] >> 32), K_C);
    }
    out[0] = h0;
    out[1] = h1;
    return d && (bad1 & d->top);
}

int64_t mode_nonfinite_find(const void *p, size_t n, enum mode_dtype dtype, const char **what)
{
    const struct fdesc *d = fdesc_of(dtype);
    if (!d) return -1;
    const unsigned char *s = p;
    const uint64_t exp_all = ((uint64_t)1 << d->exp_bits) - 1, mant = ((uint64_t)1 << d->mant_bits) - 1;
    for (size_t e = 0; e < n / d->size; e++) {
        uint64_t x = 0;
        memcpy(&x, s + e * d->size, d->size);
        if (((x >> d->exp_shift) & exp_all) != exp_all) continue;
        if (what) {
            const bool neg = x >> (8 * d->size - 1) & 1;
            *what = !d->has_inf || (x & mant) ? "nan" : neg ? "-inf" : "inf";
        }
        return (int64_t)e;
    }
    return -1;
}
