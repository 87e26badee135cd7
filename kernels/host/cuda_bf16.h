/* cuda_bf16.h of the host double (cuda_runtime.h here): bf16 as its bits, rounded as
 * mode_f32_to_bf16 rounds (to nearest even, NaN kept). */
#ifndef MODE_HOST_CUDA_BF16_H
#define MODE_HOST_CUDA_BF16_H

#include <stdint.h>

extern "C" uint16_t mode_f32_to_bf16(float f);
extern "C" float mode_bf16_to_f32(uint16_t b);

struct __nv_bfloat16 {
    uint16_t bits;
};
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{mode_f32_to_bf16(f)}; }
static inline float __bfloat162float(__nv_bfloat16 b) { return mode_bf16_to_f32(b.bits); }

#endif
