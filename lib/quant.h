/* quant.h — group-wise weight quantizers: round-to-nearest (RTN) and GPTQ.
 *
 * A weight W is (rows, cols) = (out features, in features); a group is `group` consecutive input
 * columns of one row, with its own scale and zero point:
 *   asymmetric  min = min(w, 0), max = max(w, 0) over the group, scale = (max - min) / (2^b - 1),
 *               zero = round(-min / scale)
 *   symmetric   max = max(|min|, max), min = -max when min < 0, zero = 2^(b-1) (a group with no
 *               negative value keeps min = 0 and clips above zero + 2^(b-1) - 1 levels: the
 *               reference's behaviour, kept so that results match it)
 *   both 0      min = -1, max = 1 (a zero group gets a finite scale)
 *   q = clamp(round(w / scale) + zero, 0, 2^b - 1), dequantised scale * (q - zero)
 * with round half to even, as torch.round. A group larger than cols is clamped to cols; a smaller
 * one must divide cols.
 *
 * GPTQ (Frantar et al., the published reference): H = 2/N XᵀX over N calibration rows X; dead
 * columns (H_ii = 0) get H_ii = 1 and W[:, i] = 0; damping 0.01 · mean(diag H) added to the
 * diagonal; the upper Cholesky factor of H⁻¹ (formed as lib/gptq.h says: one Cholesky of the
 * reversed matrix and a triangular inverse); columns in blocks of 128, each column quantised,
 * its error spread over the rest of its block at once and over later blocks lazily; a group's
 * scale and zero are found when its first column is reached, from W as updated by earlier blocks
 * only (the reference's behaviour, visible when the group is smaller than the block); optionally
 * columns in decreasing order of H_ii (act-order, g_idx records each column's group).
 * Arithmetic in double.
 */
#ifndef MODE_QUANT_H
#define MODE_QUANT_H

#include "mode.h"

#include <stdbool.h>
#include <stdint.h>

struct mode_quant_opts {
    int bits;      /* 2, 3, 4 or 8 */
    int group;     /* columns per group; <= 0 or > cols: one group per row */
    bool sym;
    bool act_order;   /* GPTQ only */
    double damp;      /* GPTQ: fraction of mean(diag H) added (default 0.01 when 0) */
    int block;        /* GPTQ: block size (default 128 when 0) */
};

struct mode_quant_out {
    /* caller-allocated: */
    uint8_t *q;       /* (rows, cols) levels */
    float *scale;     /* (rows, n_groups) */
    float *zero;      /* (rows, n_groups) zero points (integers, stored as float) */
    int32_t *g_idx;   /* (cols) group of each input column; may be NULL */
    float *deq;       /* (rows, cols) dequantised weights; may be NULL */
};

/* The group size actually used for cols (clamped) and the number of groups; MODE_EUSAGE when a
 * group smaller than cols does not divide it, or bits is not 2, 3, 4 or 8. */
int mode_quant_groups(const struct mode_quant_opts *o, int64_t cols, int64_t *group, int64_t *n_groups, struct mode_err *err);

/* The group rule above: scale and zero of the n values x[0], x[s], ... for levels 0..maxq. */
void mode_quant_params(const double *x, int64_t n, int64_t s, int maxq, bool sym, double *scale, double *zero);
/* w's level (into *q when not NULL) and its dequantised value scale · (level − zero). */
double mode_quant_level(double w, double scale, double zero, int maxq, uint8_t *q);

/* Round-to-nearest of W (rows, cols), row-major f32. */
int mode_quant_rtn(const float *W, int64_t rows, int64_t cols, const struct mode_quant_opts *o, struct mode_quant_out *out,
                   struct mode_err *err);

/* The same on doubles, dequantised values in deq (tests compare with float64 references). */
int mode_quant_rtn_f64(const double *W, int64_t rows, int64_t cols, const struct mode_quant_opts *o, double *deq, uint8_t *q,
                       struct mode_err *err);

/* Hessian accumulator: H += 2 XᵀX over batches of rows, finalised as 2/N XᵀX. */
struct mode_hessian {
    int64_t cols;
    int64_t n; /* rows seen */
    double *h; /* (cols, cols) sum of XᵀX */
};
int mode_hessian_init(struct mode_hessian *h, int64_t cols, struct mode_err *err);
void mode_hessian_free(struct mode_hessian *h);
/* X (rows, cols) f32; rows may be 0. */
void mode_hessian_add(struct mode_hessian *h, const float *X, int64_t rows);
/* 2/N XᵀX into H (cols, cols); zeros when no row was seen. */
void mode_hessian_get(const struct mode_hessian *h, double *H);

/* GPTQ of W (rows, cols) f32 with H = 2/N XᵀX (cols, cols), as above. MODE_EDATA when the damped
 * Hessian is not positive definite (a NaN in the calibration data). */
int mode_quant_gptq(const float *W, int64_t rows, int64_t cols, const double *H, const struct mode_quant_opts *o,
                    struct mode_quant_out *out, struct mode_err *err);
/* The same in double throughout (the tests' float64 references). */
int mode_quant_gptq_f64(const double *W, int64_t rows, int64_t cols, const double *H, const struct mode_quant_opts *o, double *deq,
                        uint8_t *q, double *scale, double *zero, int32_t *g_idx, struct mode_err *err);

#endif
