/* test_core — element types and their conversions, shapes, errors, SHA-256 (lib/core.c, lib/sha256.c). */
#include "../../lib/mode.h"
#include "../../lib/sha256.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void sha(const char *msg, size_t n, char hex[65])
{
    struct mode_sha256 s;
    mode_sha256_init(&s);
    mode_sha256_update(&s, msg, n);
    mode_sha256_hex(&s, hex);
}

int main(void)
{
    /* every f16 value survives f16 -> f32 -> f16 (NaNs stay NaN) */
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = mode_f16_to_f32((uint16_t)h);
        uint16_t back = mode_f32_to_f16(f);
        int nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan ? !isnan(f) || (back & 0x7c00) != 0x7c00 || !(back & 0x3ff) : back != h) bad++;
    }
    is_int(bad, 0, "f16 -> f32 -> f16 is the identity on all 65536 values");
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = mode_bf16_to_f32((uint16_t)h);
        int nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f);
        if (nan ? !isnan(f) : mode_f32_to_bf16(f) != h) bad++;
    }
    is_int(bad, 0, "bf16 -> f32 -> bf16 is the identity on all 65536 values");
    is_int(mode_f16_to_f32(0x3c00) == 1.0f, 1, "f16 0x3c00 is 1.0");
    is_int(mode_f16_to_f32(0x0001) == 0x1p-24f, 1, "smallest f16 subnormal is 2^-24");
    is_int(mode_f32_to_f16(65504.0f), 0x7bff, "f16 max 65504");
    is_int(mode_f32_to_f16(65519.0f), 0x7bff, "65519 rounds down to 65504");
    is_int(mode_f32_to_f16(65520.0f), 0x7c00, "65520 rounds to +inf");
    is_int(mode_f32_to_f16(-1e9f), 0xfc00, "-1e9 -> -inf");
    is_int(mode_f32_to_f16(0x1p-25f), 0x0000, "2^-25 ties to even (0)");
    is_int(mode_f32_to_f16(0x1.8p-24f), 0x0002, "1.5 * 2^-24 ties to even (2)");
    /* bf16 rounding: halfway cases go to even */
    is_int(mode_f32_to_bf16(from_bits(0x3f808000)), 0x3f80, "bf16 tie to even (down)");
    is_int(mode_f32_to_bf16(from_bits(0x3f818000)), 0x3f82, "bf16 tie to even (up)");
    is_int(mode_f32_to_bf16(from_bits(0x3f808001)), 0x3f81, "bf16 above half rounds up");
    is_int(mode_f32_to_bf16(from_bits(0x7f7fffff)), 0x7f80, "f32 max rounds to bf16 inf");
    ok(isnan(mode_bf16_to_f32(mode_f32_to_bf16(NAN))), "NaN stays NaN in bf16");
    (void)bits;

    /* conversion of every dtype to f32 */
    uint16_t b16[3] = {0x3f80, 0xc000, 0x0000};
    float out[4];
    is_int(mode_convert_ref(MODE_BF16, b16, 3, out), MODE_OK, "convert bf16");
    ok(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0.0f, "bf16 values 1, -2, 0");
    int64_t i64[2] = {-5, 7};
    mode_convert_ref(MODE_I64, i64, 2, out);
    ok(out[0] == -5.0f && out[1] == 7.0f, "i64 values");
    unsigned char odd[9];
    float one = 1.5f;
    memcpy(odd + 1, &one, 4);
    mode_convert_ref(MODE_F32, odd + 1, 1, out);
    ok(out[0] == 1.5f, "unaligned f32 source");
    is_int(mode_convert_ref(MODE_F8_E4M3, odd, 1, out), MODE_EDATA, "fp8 has no conversion");

    /* dtype names both ways */
    for (int t = 1; t < MODE_DTYPE_COUNT; t++) {
        const char *n = mode_dtype_name((enum mode_dtype)t), *s = mode_dtype_st_name((enum mode_dtype)t);
        if ((int)mode_dtype_from_name(n, strlen(n)) != t || (int)mode_dtype_from_st_name(s, strlen(s)) != t) bad++;
    }
    is_int(bad, 0, "dtype names round-trip in both spellings");
    is_int(mode_dtype_from_name("F32", 3), MODE_DTYPE_INVALID, "stream spelling is lower case");

    /* shapes */
    uint64_t n;
    int64_t s1[3] = {2, 3, 4}, s2[2] = {INT64_MAX, 3}, s3[2] = {4, -1}, s4[2] = {0, INT64_MAX};
    ok(mode_shape_numel(3, s1, &n) == 0 && n == 24, "numel (2,3,4) = 24");
    is_int(mode_shape_numel(2, s2, &n), -1, "numel overflow is caught");
    is_int(mode_shape_numel(2, s3, &n), -1, "negative dim is caught");
    ok(mode_shape_numel(2, s4, &n) == 0 && n == 0, "zero dim gives numel 0");
    char buf[64];
    mode_shape_str(3, s1, buf, sizeof buf);
    is_str(buf, "(2, 3, 4)", "shape text");

    /* errors */
    struct mode_err e;
    mode_err_clear(&e);
    is_int(mode_err_set(&e, MODE_EDATA, "tensor '%s' is bad", "x"), MODE_EDATA, "err_set returns the code");
    mode_err_prefix(&e, "%s: ", "file.safetensors");
    is_str(e.msg, "file.safetensors: tensor 'x' is bad", "prefix");
    char big[sizeof e.msg + 1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    mode_err_prefix(&e, "%s", big);
    is_int((int)strlen(e.msg), (int)sizeof e.msg - 1, "an over-long message is truncated, not overflowed");

    /* SHA-256 (FIPS 180-4 examples) */
    char hex[65];
    sha("abc", 3, hex);
    is_str(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256('abc')");
    sha("", 0, hex);
    is_str(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256('')");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha(m448, strlen(m448), hex);
    is_str(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1", "sha256(448-bit message)");
    struct mode_sha256 s;
    mode_sha256_init(&s);
    char as[1001];
    memset(as, 'a', sizeof as);
    for (int i = 0; i < 1000; i++) mode_sha256_update(&s, as, i % 2 ? 999 : 1001);
    mode_sha256_hex(&s, hex);
    is_str(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "sha256(a x 1,000,000) in odd pieces");
    return tap_done();
}
