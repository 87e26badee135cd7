/* bench.h — the measurements behind mode-bench: one MoE layer (random weights) from packed experts
 * at uniform widths and at a mixed allocation, for several token counts, against a cuBLAS bf16
 * grouped baseline measured in the same run (kernels/qmoe.cu for decode, kernels/moe.cu for
 * prefill and the baseline, kernels/bench.cu for the timing).
 *
 * Every run takes the next of `pool` random routings (top-k distinct experts per token) and the
 * next copy of the layer, with as many copies as make twice the L2 cache (cold weights: a run
 * never finds them in L2 from the previous one). Times are medians of event-timed runs and of
 * CUDA-graph replays. The byte floor is the packed bytes of the experts a routing touches (words,
 * zeros, f16 scales; bf16 for 16-bit experts; prefill v0 dequantises every expert, so all count)
 * over the device-to-device copy rate measured at the start.
 *
 * Decode (tokens <= 64): mode_qmoe_decode_cuda. Prefill (more), two rows: v0,
 * mode_qmoe_dequant_cuda into a bf16 scratch layer, then mode_moe_bf16_cuda; and qgemm,
 * mode_qmoe_prefill_cuda (grouped GEMM dequantising in registers; its bytes, as decode's, those
 * of the experts the routing touches). Baseline: mode_moe_bf16_cuda on a resident bf16 layer of
 * the same shape. Errors: MODE_EUNAVAILABLE without a GPU or out of device memory. */
#ifndef MODE_BENCH_H
#define MODE_BENCH_H

#include "mode.h"

#include <stdbool.h>

#define MODE_BENCH_MAX 16  /* widths, token counts */
#define MODE_BENCH_DECODE_MAX 64 /* tokens up to which the decode kernels run */

struct mode_bench_opts {
    int n_expert, k, d, i, group;
    int n_widths, widths[MODE_BENCH_MAX]; /* 2, 3, 4, 8, 16; 0 = the mixed allocation */
    const uint8_t *mixed;                 /* (n_expert) its widths */
    int n_tokens, tokens[MODE_BENCH_MAX];
    int iters, pool;
    uint64_t seed;
    bool baseline; /* the cuBLAS bf16 layer too */
};

struct mode_bench_row {
    int width, tokens;   /* width 0: the mixed allocation */
    bool prefill;
    bool qgemm;          /* a prefill row of mode_qmoe_prefill_cuda (else of v0) */
    double bytes;        /* bytes a run reads at least (see above), mean over the pool */
    double floor_us;     /* bytes over the copy rate */
    double us, graph_us; /* medians */
    double base_us, base_graph_us; /* the bf16 baseline; < 0 when not run */
};

struct mode_bench_result {
    char device[256];
    double copy_rate; /* bytes read + written per second, device to device */
    size_t l2_bytes;
    int n_rows;
    struct mode_bench_row rows[2 * MODE_BENCH_MAX * MODE_BENCH_MAX]; /* prefill: v0 and qgemm */
};

/* Bytes of one expert (gate, up, down) packed at `bits` (16: bf16) with groups of `group`. */
double mode_bench_expert_bytes(int d, int i, int group, int bits);

/* progress(ctx, done, total) after each row (may be NULL). */
int mode_bench_run(const struct mode_bench_opts *o, struct mode_bench_result *r, void (*progress)(void *ctx, int done, int total), void *ctx,
                   struct mode_err *err);

#endif
