/* gptq.h — GPTQ of a batch of weights at once (e.g. every expert of a layer), the form the CUDA
 * kernel takes (kernels/gptq.cu, mode_gptq_cuda); mode_gptq_ref here is its C reference.
 *
 * The algorithm is quant.h's (the published GPTQ: dead columns, optional act order, damping,
 * blocks of 128 columns with lazy updates, group parameters from the block-start weights), for
 * many weights at once. The upper Cholesky factor U of the damped inverse Hessian is formed, as in
 * quant.c, not by Cholesky, inverse and Cholesky again as the published reference does, but by one
 * Cholesky of the reversed matrix and one triangular inverse. With J the reversal (J_ij = [i + j = n-1]),
 * J H J = L Lᵀ gives H = R Rᵀ with R = J L J upper triangular, so H⁻¹ = R⁻ᵀ R⁻¹ = Uᵀ U with
 * U = R⁻¹ = J L⁻¹ J, upper with a positive diagonal: by uniqueness the same U, in half the
 * arithmetic (n³/3 + n³/3 against n³/3 + 2n³/3 + n³/3). Results agree with mode_quant_gptq to
 * rounding; a level may differ where w/scale falls within rounding of a tie (the tests name
 * such rows).
 *
 * A batch holds n_h Hessians and n_mat weights of one shape (rows, cols); weight m is quantized
 * with Hessian hidx[m] at bits[m] (gate and up of an expert share their Hessian). hidx, bits and
 * info are host memory on both paths; the other arrays are host memory for mode_gptq_ref and
 * device memory for mode_gptq_cuda. The caller allocates everything, `work` included
 * (mode_gptq_work_bytes). Arithmetic in double; W in and the outputs in f32 as mode_quant_gptq's.
 *
 * Errors: MODE_EUSAGE for a shape or width the quantizer cannot take; MODE_EDATA when a Hessian
 * has a non-finite diagonal or is not positive definite once damped (info[h] says which:
 * -(i+1) for column i's diagonal, or the failing pivot), naming the first such Hessian.
 */
#ifndef MODE_GPTQ_H
#define MODE_GPTQ_H

#include "mode.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* kernels/gptq.cu carves the same workspace */
#endif

#define MODE_GPTQ_BLOCK 128   /* columns per block: the reference's */
#define MODE_GPTQ_MAX_COLS 65536

struct mode_gptq_batch {
    int n_h, n_mat;
    int64_t rows, cols;   /* every weight: (rows, cols), nn.Linear (out, in) */
    int group;            /* columns per group, clamped to cols as mode_quant_groups does */
    bool sym, act_order;
    double damp;          /* fraction of mean(diag H) added (0: 0.01) */
    const int32_t *hidx;  /* (n_mat) the Hessian of each weight, in [0, n_h) */
    const uint8_t *bits;  /* (n_mat) 2, 3, 4 or 8 */
    double *H;            /* (n_h, cols, cols) in: 2/N XᵀX; destroyed */
    const float *W;       /* (n_mat, rows, cols) in */
    float *deq;           /* (n_mat, rows, cols) out: dequantised weights */
    uint8_t *q;           /* (n_mat, rows, cols) out: levels */
    float *scale, *zero;  /* (n_mat, rows, n_groups) out */
    int32_t *g_idx;       /* (n_h, cols) out: the group of each input column */
    int32_t *info;        /* (n_h) out: 0, or why Hessian h failed (above) */
    void *work;           /* mode_gptq_work_bytes(b) bytes, 8-byte aligned */
};

/* The workspace, carved from b->work (or from address 0 to size it): the factorisation's
 * scratch S (n_h, cols, cols) f64, the weights in act order (n_mat, rows, cols) f64, the errors
 * of a block (n_mat, rows, 128) f64, the column orders (n_h, cols) i32, the damping terms (n_h)
 * f64, and for the CUDA path device copies of hidx and bits, two status words per Hessian
 * (its first non-finite diagonal, the factorisation's pivot), the pointer arrays of the batched library calls (2 n_h + 3 n_mat) and the group
 * parameters in double (n_mat, rows, n_groups, 2). */
struct mode_gptq_work {
    double *S, *Wp, *err, *damp, *gp;
    int32_t *perm, *hidx, *info;
    uint8_t *bits;
    double **ptr;
};
size_t mode_gptq_work_carve(const struct mode_gptq_batch *b, void *base, struct mode_gptq_work *w);
size_t mode_gptq_work_bytes(const struct mode_gptq_batch *b);

/* Shape, widths, group and Hessian indices checked; the number of groups in *n_groups. */
int mode_gptq_check(const struct mode_gptq_batch *b, int64_t *n_groups, struct mode_err *err);

int mode_gptq_ref(struct mode_gptq_batch *b, struct mode_err *err);

/* GPTQ from calibration rows, all host memory: Hessian h = 2/n_x[h] X[h]ᵀ X[h] (X[h] (n_x[h], cols)
 * f32, n_x[h] >= 1), then the batch on `device`: MODE_DEVICE_CPU mode_gptq_ref, MODE_DEVICE_CUDA
 * mode_gptq_rows_cuda (Hessians on the GPU too). b->H and b->work are allocated here (their
 * values on entry are ignored). */
int mode_gptq_rows(struct mode_gptq_batch *b, const float *const *X, const int64_t *n_x, enum mode_device device, struct mode_err *err);

/* Turns info[] (host copy) into the status and message above; MODE_OK when all are 0. */
int mode_gptq_info_status(const int32_t *info, int n_h, struct mode_err *err);

#ifdef __cplusplus
}
#endif

#endif
