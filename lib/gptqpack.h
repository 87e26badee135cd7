/* gptqpack.h — the GPTQ checkpoint layout of one quantized linear layer (out features N, in
 * features K, group g, G = K / g groups):
 *
 *   qweight  int32 (K·b/32, N)   the levels q[n][k] packed along k: for 2, 4 and 8 bits word
 *                                 k / (32/b) of column n holds k's level at bit b·(k mod 32/b);
 *                                 for 3 bits every 32 values of k fill 3 words: values 0-9 at
 *                                 bits 3j, value 10's low 2 bits at 30; its high bit at bit 0 of
 *                                 the next word, values 11-20 at 3j+1, value 21's low bit at 31;
 *                                 its high 2 bits at 0 of the third, values 22-31 at 3j+2
 *   qzeros   int32 (G, N·b/32)    the zero points packed the same way along n; format "gptq_v2"
 *                                 stores them as they are, "gptq" (v1, AutoGPTQ) stores zero − 1
 *   scales   f16 (G, N)
 *   g_idx    int32 (K)            the group of each input column
 *   dequantised  W[n][k] = scales[g_idx[k]][n] · (q[n][k] − zero[g_idx[k]][n])
 *
 * K and N must make whole words: K·b and N·b multiples of 32 (3 bits: K, N multiples of 32).
 * The functions return MODE_OK or MODE_EUNAVAILABLE (no memory for a row); pack_qzeros -1 then.
 */
#ifndef MODE_GPTQPACK_H
#define MODE_GPTQPACK_H

#include "mode.h"

#include <stdbool.h>
#include <stdint.h>

/* MODE_EUSAGE naming the dimension when it cannot be packed at `bits`. */
int mode_gptq_check_dims(int64_t N, int64_t K, int bits, struct mode_err *err);

/* q (N, K) levels -> qweight (K·bits/32, N) */
int mode_gptq_pack_qweight(const uint8_t *q, int64_t N, int64_t K, int bits, int32_t *qweight);
int mode_gptq_unpack_qweight(const int32_t *qweight, int64_t N, int64_t K, int bits, uint8_t *q);

/* zero (N, G) (integers in float) -> qzeros (G, N·bits/32); v1 stores zero − 1 (masked). Returns the
 * number of zero points v1 cannot represent (zero 0). */
int64_t mode_gptq_pack_qzeros(const float *zero, int64_t N, int64_t G, int bits, bool v1, int32_t *qzeros);
/* qzeros -> zero (N, G); v1 adds 1 back (unmasked, as the GPTQ v1 kernels do). */
int mode_gptq_unpack_qzeros(const int32_t *qzeros, int64_t N, int64_t G, int bits, bool v1, float *zero);

/* Dequantises a packed layer into W (N, K) f32. scales f16 bits (G, N). */
int mode_gptq_dequant(const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales, const int32_t *g_idx, int64_t N, int64_t K,
                       int64_t G, int bits, bool v1, float *W);

#endif
