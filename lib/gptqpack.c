/* gptqpack.c — GPTQ packing of levels and zero points (see gptqpack.h). */
#include "gptqpack.h"

#include <stdlib.h>
#include <string.h>

int mode_gptq_check_dims(int64_t N, int64_t K, int bits, struct mode_err *err)
{
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8) return mode_err_set(err, MODE_EUSAGE, "%d bits cannot be packed (2, 3, 4, 8)", bits);
    if ((K * bits) % 32 || (bits == 3 && K % 32))
        return mode_err_set(err, MODE_EUSAGE, "%lld input features cannot be packed at %d bits (need whole 32-bit words)", (long long)K, bits);
    if ((N * bits) % 32 || (bits == 3 && N % 32))
        return mode_err_set(err, MODE_EUSAGE, "%lld output features cannot hold packed zero points at %d bits", (long long)N, bits);
    return MODE_OK;
}

/* packs v[0..L) (values < 2^bits) into L·bits/32 words w[0], w[s], w[2s], ... */
static void pack_seq(const uint32_t *v, int64_t L, int bits, uint32_t *w, int64_t s)
{
    if (bits != 3) {
        const int per = 32 / bits;
        for (int64_t i = 0; i < L / per; i++) {
            uint32_t x = 0;
            for (int j = 0; j < per; j++) x |= v[i * per + j] << (bits * j);
            w[i * s] = x;
        }
        return;
    }
    for (int64_t c = 0; c < L / 32; c++) {
        const uint32_t *u = v + c * 32;
        uint32_t a = 0, b = 0, d = 0;
        for (int j = 0; j < 10; j++) a |= u[j] << (3 * j);
        a |= u[10] << 30;
        b |= (u[10] >> 2) & 1;
        for (int j = 0; j < 10; j++) b |= u[11 + j] << (3 * j + 1);
        b |= u[21] << 31;
        d |= (u[21] >> 1) & 3;
        for (int j = 0; j < 10; j++) d |= u[22 + j] << (3 * j + 2);
        w[(3 * c) * s] = a, w[(3 * c + 1) * s] = b, w[(3 * c + 2) * s] = d;
    }
}

static void unpack_seq(const uint32_t *w, int64_t s, int64_t L, int bits, uint32_t *v)
{
    const uint32_t mask = (1u << bits) - 1;
    if (bits != 3) {
        const int per = 32 / bits;
        for (int64_t i = 0; i < L / per; i++)
            for (int j = 0; j < per; j++) v[i * per + j] = (w[i * s] >> (bits * j)) & mask;
        return;
    }
    for (int64_t c = 0; c < L / 32; c++) {
        const uint32_t a = w[(3 * c) * s], b = w[(3 * c + 1) * s], d = w[(3 * c + 2) * s];
        uint32_t *u = v + c * 32;
        for (int j = 0; j < 10; j++) u[j] = (a >> (3 * j)) & 7;
        u[10] = (a >> 30) | ((b & 1) << 2);
        for (int j = 0; j < 10; j++) u[11 + j] = (b >> (3 * j + 1)) & 7;
        u[21] = (b >> 31) | ((d & 3) << 1);
        for (int j = 0; j < 10; j++) u[22 + j] = (d >> (3 * j + 2)) & 7;
    }
}

int mode_gptq_pack_qweight(const uint8_t *q, int64_t N, int64_t K, int bits, int32_t *qweight)
{
    uint32_t *v = malloc(sizeof *v * (size_t)K);
    if (!v) return MODE_EUNAVAILABLE;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t k = 0; k < K; k++) v[k] = q[n * K + k];
        pack_seq(v, K, bits, (uint32_t *)qweight + n, N);
    }
    free(v);
    return MODE_OK;
}

int mode_gptq_unpack_qweight(const int32_t *qweight, int64_t N, int64_t K, int bits, uint8_t *q)
{
    uint32_t *v = malloc(sizeof *v * (size_t)K);
    if (!v) return MODE_EUNAVAILABLE;
    for (int64_t n = 0; n < N; n++) {
        unpack_seq((const uint32_t *)qweight + n, N, K, bits, v);
        for (int64_t k = 0; k < K; k++) q[n * K + k] = (uint8_t)v[k];
    }
    free(v);
    return MODE_OK;
}

int64_t mode_gptq_pack_qzeros(const float *zero, int64_t N, int64_t G, int bits, bool v1, int32_t *qzeros)
{
    const uint32_t mask = (1u << bits) - 1;
    const int64_t W = N * bits / 32;
    uint32_t *v = malloc(sizeof *v * (size_t)N);
    if (!v) return -1;
    int64_t lost = 0;
    for (int64_t g = 0; g < G; g++) {
        for (int64_t n = 0; n < N; n++) {
            int64_t z = (int64_t)zero[n * G + g];
            if (v1) {
                lost += z == 0;
                z -= 1;
            }
            v[n] = (uint32_t)z & mask;
        }
        pack_seq(v, N, bits, (uint32_t *)qzeros + g * W, 1);
    }
    free(v);
    return lost;
}

int mode_gptq_unpack_qzeros(const int32_t *qzeros, int64_t N, int64_t G, int bits, bool v1, float *zero)
{
    const int64_t W = N * bits / 32;
    uint32_t *v = malloc(sizeof *v * (size_t)N);
    if (!v) return MODE_EUNAVAILABLE;
    for (int64_t g = 0; g < G; g++) {
        unpack_seq((const uint32_t *)qzeros + g * W, 1, N, bits, v);
        for (int64_t n = 0; n < N; n++) zero[n * G + g] = (float)(v[n] + (v1 ? 1 : 0));
    }
    free(v);
    return MODE_OK;
}

int mode_gptq_dequant(const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales, const int32_t *g_idx, int64_t N, int64_t K,
                       int64_t G, int bits, bool v1, float *W)
{
    uint8_t *q = malloc((size_t)(N * K));
    float *z = malloc(sizeof *z * (size_t)(N * G));
    if (!q || !z || mode_gptq_unpack_qweight(qweight, N, K, bits, q) || mode_gptq_unpack_qzeros(qzeros, N, G, bits, v1, z)) {
        free(q), free(z);
        return MODE_EUNAVAILABLE;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < K; k++) {
            int64_t g = g_idx[k];
            if (g < 0 || g >= G) g = 0;
            const float s = mode_f16_to_f32(scales[g * N + n]);
            W[n * K + k] = s * ((float)q[n * K + k] - z[n * G + g]);
        }
    free(q), free(z);
    return MODE_OK;
}
