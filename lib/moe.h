/* moe.h — the host side of the MoE layer kernels for many tokens (kernels/moe.cu): a routing
 * sorted by expert (what the grouped GEMMs need), and the C reference of the dense bf16 layer
 * (mode_moe_bf16_cuda). The packed layer's reference is mode_qmoe_ref (qmoe.h).
 *
 * A dense layer (struct mode_moe_dense, kernels/mode_cuda.h) holds bf16 experts in the hub
 * layout: gate_up (n_expert, d, 2i), gate the first i columns, and down (n_expert, i, d).
 */
#ifndef MODE_MOE_H
#define MODE_MOE_H

#include "../kernels/mode_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* pairs (token t, slot j), index t·k + j, sorted by expert: order (T·k) lists them expert by
 * expert (token order within an expert), start (n_expert + 1) where each expert's run begins,
 * slot (T·k) where pair t·k + j sits in order. Caller-allocated; MODE_EDATA for an expert index
 * out of range. */
int mode_moe_route_sort(const int32_t *experts, int T, int k, int n_expert, int32_t *order, int32_t *slot, int64_t *start,
                        struct mode_err *err);

/* out (T, d) = Σ_j weights[t][j] · down_e(SiLU(x_t · gate_e) ⊙ (x_t · up_e)), host bf16 weights,
 * double sums. */
int mode_moe_dense_ref(const struct mode_moe_dense *L, int T, int k, const float *x, const int32_t *experts, const float *weights, float *out,
                       struct mode_err *err);

#ifdef __cplusplus
}
#endif

#endif
