/* rtmoe.h — the runtime's packed MoE layers on the GPU (mode_rt_device CUDA, mode-eval --device
 * cuda): each packed layer is staged once into the layout of the qmoe kernels (one buffer of
 * words, one of zero points and one of f16 scales, with offsets per expert and projection;
 * 16-bit experts as bf16 pairs; v1 zero points rewritten as v2) and kept on the device. A call
 * runs the layer's experts for the rows given: decode (kernels/qmoe.cu, f32) up to
 * MODE_BENCH_DECODE_MAX rows, prefill beyond (kernels/moe.cu: dequantised to bf16, grouped cuBLAS
 * GEMMs, bf16 activations; with MODE_QMOE_PREFILL=v1 in the environment kernels/qgemm.cu's
 * tensor-core GEMMs on the packed words instead, until measurements choose). The router stays on
 * the CPU.
 *
 * A layer the kernels cannot take — not packed, act order (g_idx not in group order), widths or
 * groups differing between an expert's projections or between experts — is not handled (*handled
 * false): the caller runs it on the CPU. Errors: MODE_EUNAVAILABLE (no GPU, device memory),
 * MODE_EDATA (a packed tensor the layout cannot be read from). */
#ifndef MODE_RTMOE_H
#define MODE_RTMOE_H

#include "../kernels/mode_cuda.h"
#include "model.h"

struct mode_rtmoe;

/* A packed layer staged on the host in the kernels' layout (what is uploaded): L's pointers
 * point into the arrays below. */
struct mode_rtmoe_host {
    bool ok; /* false: the kernels cannot take the layer (then nothing else is set) */
    struct mode_qmoe_layer L;
    uint32_t *qw, *qz;
    uint16_t *sc;
    int64_t *off;
    uint8_t *bits;
    size_t n_qw, n_qz, n_sc;
};
int mode_rtmoe_stage(const struct mode_model *m, int layer, struct mode_rtmoe_host *h, struct mode_err *err);
void mode_rtmoe_host_free(struct mode_rtmoe_host *h);

int mode_rtmoe_init(struct mode_rtmoe **g, const struct mode_model *m, struct mode_err *err);
void mode_rtmoe_free(struct mode_rtmoe *g);

/* out (N, n_embd) = Σ_j weights · expert_j(x) for MoE layer `layer`; x (N, n_embd), experts and
 * weights (N, n_expert_used). */
int mode_rtmoe_layer(struct mode_rtmoe *g, int layer, int64_t N, const float *x, const int32_t *experts, const float *weights, float *out,
                     bool *handled, struct mode_err *err);

#endif
