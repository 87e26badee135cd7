/* core.c — errors, assertions and element types shared by all of libmode-core (see mode.h). */
#include "mode.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stores the n bytes of s as err's message. One that does not fit loses its middle, not its
 * end: the head, "...", then the last half of the buffer. Messages read "PATH: why", so a path
 * too long for the buffer is shortened and the reason after it is kept whole. */
static void put_msg(struct mode_err *err, const char *s, size_t n)
{
    const size_t cap = sizeof err->msg - 1;
    if (n <= cap) {
        memmove(err->msg, s, n);
        err->msg[n] = 0;
        return;
    }
    const size_t tail = cap / 2, head = cap - tail - 3;
    memmove(err->msg, s, head);
    memcpy(err->msg + head, "...", 3);
    memmove(err->msg + head + 3, s + n - tail, tail);
    err->msg[cap] = 0;
}

/* fmt formatted into buf (size cap) or, when longer, into a malloc'ed string (*heap, freed by
 * the caller); NULL when formatting fails or no memory is left for a long message. */
static const char *vformat(char *buf, size_t cap, char **heap, size_t *n, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int k = vsnprintf(buf, cap, fmt, ap);
    *heap = NULL;
    *n = k < 0 ? 0 : (size_t)k;
    if (k >= 0 && (size_t)k >= cap && (*heap = malloc((size_t)k + 1))) vsnprintf(*heap, (size_t)k + 1, fmt, ap2);
    va_end(ap2);
    if (k < 0) return NULL;
    if ((size_t)k >= cap && !*heap) *n = cap - 1; /* no memory: the cut message */
    return *heap ? *heap : buf;
}

int mode_err_set(struct mode_err *err, int code, const char *fmt, ...)
{
    if (err) {
        char buf[sizeof err->msg], *heap;
        size_t n;
        va_list ap;
        va_start(ap, fmt);
        const char *s = vformat(buf, sizeof buf, &heap, &n, fmt, ap);
        va_end(ap);
        put_msg(err, s ? s : "(unformattable message)", s ? n : strlen("(unformattable message)"));
        free(heap);
        err->code = code;
    }
    return code;
}

int mode_err_prefix(struct mode_err *err, const char *fmt, ...)
{
    if (!err) return MODE_EINTERNAL;
    char buf[sizeof err->msg], *heap;
    size_t h, o = strlen(err->msg);
    va_list ap;
    va_start(ap, fmt);
    const char *head = vformat(buf, sizeof buf, &heap, &h, fmt, ap);
    va_end(ap);
    char *all = head ? malloc(h + o + 1) : NULL;
    if (all) {
        memcpy(all, head, h);
        memcpy(all + h, err->msg, o);
        put_msg(err, all, h + o);
    } else if (head) { /* no memory: the prefix, then as much of the old message as fits */
        char old[sizeof err->msg];
        memcpy(old, err->msg, o + 1);
        if (h > sizeof err->msg - 1) h = sizeof err->msg - 1;
        if (h + o > sizeof err->msg - 1) o = sizeof err->msg - 1 - h;
        memcpy(err->msg, head, h);
        memcpy(err->msg + h, old, o);
        err->msg[h + o] = 0;
    }
    free(all);
    free(heap);
    return err->code;
}

int mode_err_oom(struct mode_err *err, size_t nbytes, const char *what)
{
    return mode_err_set(err, MODE_EUNAVAILABLE, "out of memory (%zu bytes for %s)", nbytes, what);
}

void mode_err_clear(struct mode_err *err)
{
    if (err) {
        err->code = MODE_OK;
        err->msg[0] = 0;
    }
}

const char *mode_status_name(int code)
{
    switch (code) {
    case MODE_OK: return "ok";
    case MODE_EUSAGE: return "usage error";
    case MODE_EDATA: return "bad data";
    case MODE_ENOINPUT: return "input missing";
    case MODE_EUNAVAILABLE: return "resource unavailable";
    case MODE_EINTERNAL: return "internal error";
    case MODE_ECANTCREAT: return "cannot create output";
    case MODE_EIO: return "i/o error";
    default: return "unknown status";
    }
}

void mode_assert_fail(const char *file, int line, const char *expr)
{
    fprintf(stderr, "mode: %s:%d: internal error: assertion '%s' failed\n", file, line, expr);
    abort();
}

/* ---- dtypes ------------------------------------------------------------------------------- */

static const struct {
    const char *name, *st_name;
    size_t size;
} dtypes[MODE_DTYPE_COUNT] = {
    [MODE_F32] = {"f32", "F32", 4},        [MODE_F16] = {"f16", "F16", 2},
    [MODE_BF16] = {"bf16", "BF16", 2},     [MODE_F64] = {"f64", "F64", 8},
    [MODE_I8] = {"i8", "I8", 1},           [MODE_U8] = {"u8", "U8", 1},
    [MODE_I16] = {"i16", "I16", 2},        [MODE_U16] = {"u16", "U16", 2},
    [MODE_I32] = {"i32", "I32", 4},        [MODE_U32] = {"u32", "U32", 4},
    [MODE_I64] = {"i64", "I64", 8},        [MODE_U64] = {"u64", "U64", 8},
    [MODE_BOOL] = {"bool", "BOOL", 1},     [MODE_F8_E4M3] = {"f8_e4m3", "F8_E4M3", 1},
    [MODE_F8_E5M2] = {"f8_e5m2", "F8_E5M2", 1},
};

size_t mode_dtype_size(enum mode_dtype t)
{
    return t > 0 && t < MODE_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *mode_dtype_name(enum mode_dtype t)
{
    return t > 0 && t < MODE_DTYPE_COUNT ? dtypes[t].name : "invalid";
}

const char *mode_dtype_st_name(enum mode_dtype t)
{
    return t > 0 && t < MODE_DTYPE_COUNT ? dtypes[t].st_name : "INVALID";
}

static enum mode_dtype dtype_lookup(const char *s, size_t len, int st)
{
    for (int t = 1; t < MODE_DTYPE_COUNT; t++) {
        const char *n = st ? dtypes[t].st_name : dtypes[t].name;
        if (strlen(n) == len && memcmp(n, s, len) == 0) return (enum mode_dtype)t;
    }
    return MODE_DTYPE_INVALID;
}

enum mode_dtype mode_dtype_from_name(const char *s, size_t len) { return dtype_lookup(s, len, 0); }
enum mode_dtype mode_dtype_from_st_name(const char *s, size_t len) { return dtype_lookup(s, len, 1); }

int mode_dtype_is_float(enum mode_dtype t)
{
    return t == MODE_F32 || t == MODE_F16 || t == MODE_BF16 || t == MODE_F64;
}

int mode_dtype_is_int(enum mode_dtype t)
{
    return t >= MODE_I8 && t <= MODE_BOOL;
}

int mode_shape_numel(int ndim, const int64_t *shape, uint64_t *out)
{
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return -1;
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && n > UINT64_MAX / d) return -1;
        n *= d;
    }
    *out = n;
    return 0;
}

void mode_shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

/* ---- narrow floats ------------------------------------------------------------------------ */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float mode_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t mode_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                           /* nearest even */
    return (uint16_t)(u >> 16);
}

float mode_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN */
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t mode_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {
        /* f16 subnormal or zero: value / 2^-24 rounded to nearest even */
        float v = fabsf(f) * 0x1p24f;
        float r = nearbyintf(v); /* default rounding mode: nearest even */
        return sign | (uint16_t)r;
    }
    /* normal: rebias exponent, round mantissa from 23 to 10 bits, nearest even */
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return sign | (uint16_t)((r - (112u << 23)) >> 13);
}

int mode_convert_ref(enum mode_dtype t, const void *src, size_t n, float *dst)
{
    const unsigned char *p = src;
    switch (t) {
    case MODE_F32: memcpy(dst, src, n * 4); return MODE_OK;
    case MODE_BF16:
    case MODE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = t == MODE_BF16 ? mode_bf16_to_f32(h) : mode_f16_to_f32(h);
        }
        return MODE_OK;
    case MODE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return MODE_OK;
#define CONV_INT(T, SZ) \
    for (size_t i = 0; i < n; i++) { \
        T v; \
        memcpy(&v, p + (SZ) * i, SZ); \
        dst[i] = (float)v; \
    } \
    return MODE_OK;
    case MODE_I8: CONV_INT(int8_t, 1)
    case MODE_U8: CONV_INT(uint8_t, 1)
    case MODE_BOOL: CONV_INT(uint8_t, 1)
    case MODE_I16: CONV_INT(int16_t, 2)
    case MODE_U16: CONV_INT(uint16_t, 2)
    case MODE_I32: CONV_INT(int32_t, 4)
    case MODE_U32: CONV_INT(uint32_t, 4)
    case MODE_I64: CONV_INT(int64_t, 8)
    case MODE_U64: CONV_INT(uint64_t, 8)
#undef CONV_INT
    default: return MODE_EDATA;
    }
}
