/* qmoe.h — the C reference of the packed mixed-precision MoE layer (kernels/qmoe.cu): experts
 * dequantised with mode_gptq_dequant, then the dense SwiGLU expert and the routing-weighted sum,
 * in f32. The layer description is struct mode_qmoe_layer (kernels/mode_cuda.h) with host
 * pointers. */
#ifndef MODE_QMOE_H
#define MODE_QMOE_H

#include "../kernels/mode_cuda.h"

/* out (T, D) as mode_qmoe_decode_cuda computes it. */
int mode_qmoe_ref(const struct mode_qmoe_layer *L, int T, int k, const float *x, const int32_t *experts, const float *weights, float *out,
                  struct mode_err *err);

/* Projection p (0 gate, 1 up: (i, d); 2 down: (d, i)) of expert e dequantised to f32 W,
 * nn.Linear orientation. MODE_OK, or MODE_EUNAVAILABLE when out of memory. */
int mode_qmoe_expert_ref(const struct mode_qmoe_layer *L, int e, int p, float *W);

#endif
