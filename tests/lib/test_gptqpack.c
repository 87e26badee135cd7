/* test_gptqpack — the GPTQ layout of lib/gptqpack.c against an independent decoder written from
 * the format description (the words of a column, or of a row of qzeros, read as one little-endian
 * bit stream of b-bit values: that is what the 2/4/8-bit and the 3-bit layouts both amount to);
 * round trips at 2, 3, 4 and 8 bits; v1 and v2 zero points; and the dequantised packed weights
 * equal, bit for bit, those formed in memory from the quantizer's levels and f16 scales. */
#include "../../lib/gptqpack.h"
#include "../../lib/quant.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

/* value i of a bit stream spread over words w[0], w[s], w[2s], ... */
static unsigned stream_get(const int32_t *w, int64_t s, int64_t i, int b)
{
    unsigned v = 0;
    for (int j = 0; j < b; j++) {
        const int64_t bit = i * b + j;
        const uint32_t word = (uint32_t)w[(bit / 32) * s];
        v |= ((word >> (bit % 32)) & 1u) << j;
    }
    return v;
}

int main(void)
{
    struct mode_err err;
    const int bitsv[] = {2, 3, 4, 8};
    for (int bi = 0; bi < 4; bi++) {
        const int b = bitsv[bi];
        const int64_t N = 64, K = 96, G = 3;
        uint8_t *q = malloc(N * K), *q2 = malloc(N * K);
        float z[64 * 3], z2[64 * 3];
        int32_t *qw = calloc((size_t)(K * b / 32 * N), 4), *qz = calloc((size_t)(G * N * b / 32), 4);
        for (int64_t i = 0; i < N * K; i++) q[i] = (uint8_t)(tap_rand() % (1u << b));
        for (int i = 0; i < N * G; i++) z[i] = (float)(tap_rand() % (1u << b));
        ok(!mode_gptq_check_dims(N, K, b, &err), "%d bits: 64 x 96 packs", b);
        mode_gptq_pack_qweight(q, N, K, b, qw);
        int good = 1;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) good &= stream_get(qw + n, N, k, b) == q[n * K + k];
        ok(good, "%d bits: qweight holds each column's levels as a little-endian bit stream along the inputs", b);
        mode_gptq_unpack_qweight(qw, N, K, b, q2);
        ok(!memcmp(q, q2, (size_t)(N * K)), "%d bits: qweight round trip", b);
        mode_gptq_pack_qzeros(z, N, G, b, false, qz);
        good = 1;
        for (int64_t g = 0; g < G; g++)
            for (int64_t n = 0; n < N; n++) good &= stream_get(qz + g * (N * b / 32), 1, n, b) == (unsigned)z[n * G + g];
        ok(good, "%d bits: qzeros (v2) hold each group's zero points as a bit stream along the outputs", b);
        mode_gptq_unpack_qzeros(qz, N, G, b, false, z2);
        ok(!memcmp(z, z2, sizeof z), "%d bits: qzeros round trip", b);
        z[0] = 0, z[1] = 1;
        const int64_t lost = mode_gptq_pack_qzeros(z, N, G, b, true, qz);
        ok(stream_get(qz, 1, 0, b) == (1u << b) - 1 && lost >= 1, "%d bits: v1 stores zero - 1 (0 -> all ones, counted)", b);
        free(q), free(q2), free(qw), free(qz);
    }
    ok(mode_gptq_check_dims(64, 48, 3, &err) == MODE_EUSAGE, "3 bits need inputs in multiples of 32");

    /* bit for bit: dequantised packed weights = in-memory weights from levels and f16 scales */
    {
        enum { N = 96, K = 128 };
        float *W = malloc(sizeof *W * N * K), sc[N], zz[N], *mem = malloc(sizeof *mem * N * K), *dq = malloc(sizeof *dq * N * K);
        uint8_t *q = malloc(N * K);
        int32_t gidx[K], *qw = malloc(4 * K * 3 / 32 * N), qz[3 * N / 32];
        uint16_t s16[N];
        for (int i = 0; i < N * K; i++) W[i] = (float)((int64_t)(tap_rand() % 2001) - 1000) * 1e-4f;
        struct mode_quant_opts o = {.bits = 3, .group = 128};
        struct mode_quant_out out = {q, sc, zz, gidx, NULL};
        mode_quant_rtn(W, N, K, &o, &out, &err);
        for (int n = 0; n < N; n++) s16[n] = mode_f32_to_f16(sc[n]);
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) mem[n * K + k] = mode_f16_to_f32(s16[n]) * ((float)q[n * K + k] - zz[n]);
        mode_gptq_pack_qweight(q, N, K, 3, qw);
        mode_gptq_pack_qzeros(zz, N, 1, 3, false, qz);
        mode_gptq_dequant(qw, qz, s16, gidx, N, K, 1, 3, false, dq);
        ok(!memcmp(mem, dq, sizeof *mem * N * K), "3-bit layer: dequantised from the packed tensors = in memory, bit for bit");
        free(W), free(mem), free(dq), free(q), free(qw);
    }
    return tap_done();
}
