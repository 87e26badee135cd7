/* gptq.c — batched GPTQ, the C reference of kernels/gptq.cu (see gptq.h). Step for step what the
 * kernel does, in the same order, so that the two differ only by the rounding of the library
 * calls (LAPACK/BLAS here, cuSOLVER/cuBLAS there). */
#include "gptq.h"
#include "quant.h"
#include "../kernels/mode_cuda.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (OpenBLAS ships it), column-major */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info);

static size_t carve_one(size_t *off, size_t bytes)
{
    const size_t at = (*off + 255) & ~(size_t)255; /* 256-byte aligned: what cudaMalloc gives */
    *off = at + bytes;
    return at;
}

size_t mode_gptq_work_carve(const struct mode_gptq_batch *b, void *base, struct mode_gptq_work *w)
{
    const size_t n = (size_t)b->cols, nh = (size_t)b->n_h, nm = (size_t)b->n_mat, r = (size_t)b->rows;
    size_t off = 0;
    const size_t oS = carve_one(&off, sizeof(double) * nh * n * n), oW = carve_one(&off, sizeof(double) * nm * r * n),
                 oE = carve_one(&off, sizeof(double) * nm * r * MODE_GPTQ_BLOCK), oP = carve_one(&off, sizeof(int32_t) * nh * n),
                 oD = carve_one(&off, sizeof(double) * nh), oH = carve_one(&off, sizeof(int32_t) * nm), oI = carve_one(&off, sizeof(int32_t) * 2 * nh),
                 oB = carve_one(&off, nm), oX = carve_one(&off, sizeof(double *) * (2 * nh + 3 * nm));
    int64_t g = b->group <= 0 || b->group > b->cols ? b->cols : b->group;
    const size_t oG = carve_one(&off, sizeof(double) * 2 * nm * r * (size_t)(b->cols / (g > 0 ? g : 1)));
    if (w) {
        char *p = base;
        w->S = (double *)(p + oS), w->Wp = (double *)(p + oW), w->err = (double *)(p + oE), w->perm = (int32_t *)(p + oP);
        w->damp = (double *)(p + oD), w->hidx = (int32_t *)(p + oH), w->info = (int32_t *)(p + oI), w->bits = (uint8_t *)(p + oB);
        w->ptr = (double **)(p + oX), w->gp = (double *)(p + oG);
    }
    return off;
}

size_t mode_gptq_work_bytes(const struct mode_gptq_batch *b) { return mode_gptq_work_carve(b, NULL, NULL); }

int mode_gptq_check(const struct mode_gptq_batch *b, int64_t *n_groups, struct mode_err *err)
{
    if (b->n_h < 1 || b->n_mat < 1 || b->rows < 1) return mode_err_set(err, MODE_EUSAGE, "GPTQ: an empty batch");
    if (b->cols > MODE_GPTQ_MAX_COLS)
        return mode_err_set(err, MODE_EUSAGE, "GPTQ: %lld input columns is too many (at most %d)", (long long)b->cols, MODE_GPTQ_MAX_COLS);
    int64_t g;
    for (int m = 0; m < b->n_mat; m++) {
        struct mode_quant_opts o = {.bits = b->bits[m], .group = b->group};
        int rc = mode_quant_groups(&o, b->cols, &g, n_groups, err);
        if (rc) return rc;
        if (b->hidx[m] < 0 || b->hidx[m] >= b->n_h)
            return mode_err_set(err, MODE_EUSAGE, "GPTQ: weight %d names Hessian %d of %d", m, b->hidx[m], b->n_h);
    }
    return MODE_OK;
}

int mode_gptq_info_status(const int32_t *info, int n_h, struct mode_err *err)
{
    for (int h = 0; h < n_h; h++) {
        if (info[h] < 0)
            return mode_err_set(err, MODE_EDATA, "GPTQ: Hessian %d has a non-finite diagonal at column %d: NaN or infinite activations?", h,
                                -info[h] - 1);
        if (info[h] > 0)
            return mode_err_set(err, MODE_EDATA, "GPTQ: the damped Hessian %d is not positive definite (pivot %d): NaN or infinite activations?",
                                h, info[h]);
    }
    return MODE_OK;
}

/* the column order of Hessian h: decreasing diagonal, ties by lower index (quant.c's) */
static void order(const double *H, int n, bool act, int32_t *perm)
{
    for (int i = 0; i < n; i++) {
        if (!act) {
            perm[i] = i;
            continue;
        }
        /* rank of column i: how many columns come before it */
        const double d = H[(size_t)i * n + i];
        int rank = 0;
        for (int j = 0; j < n; j++) {
            const double e = H[(size_t)j * n + j];
            rank += e > d || (e == d && j < i);
        }
        perm[rank] = i;
    }
}

/* the upper factor U of (P H Pᵀ + damp I)⁻¹ into H, through S: info 0 or the failing pivot */
static int factor(double *H, int n, const int32_t *p, double damp, double *S)
{
    /* S = J (P H Pᵀ + damp I) J, row-major = column-major (symmetric) */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            S[(size_t)i * n + j] = H[(size_t)p[n - 1 - i] * n + p[n - 1 - j]] + (i == j ? damp : 0.0);
    int info;
    dpotrf_("L", &n, S, &n, &info);
    if (info) return info;
    dtrtri_("L", "N", &n, S, &n, &info);
    if (info) return info;
    /* U(c, j) = L⁻¹(n-1-c, n-1-j), column-major element (n-1-c) + (n-1-j) n */
    for (int c = 0; c < n; c++)
        for (int j = 0; j < n; j++) H[(size_t)c * n + j] = j >= c ? S[(size_t)(n - 1 - c) + (size_t)(n - 1 - j) * n] : 0.0;
    return 0;
}

/* the column loop of one weight W (rows, n) in act order, with U (n, n) */
static void columns(double *W, int64_t rows, int n, const double *U, int bits, int64_t g, int64_t ng, bool sym, double *Err, uint8_t *q,
                    float *scale, float *zero, double *gs, double *gz)
{
    const int maxq = (1 << bits) - 1, B = MODE_GPTQ_BLOCK;
    for (int i1 = 0; i1 < n; i1 += B) {
        const int i2 = i1 + B < n ? i1 + B : n, cnt = i2 - i1;
        /* the parameters of every group starting in this block, from the block-start weights
         * (for the columns inside the block, as the reference reads them, and beyond it) */
        for (int c = i1; c < i2; c++) {
            if (c % g) continue;
            const int64_t ge = c + g < n ? c + g : n, k = c / g;
            for (int64_t r = 0; r < rows; r++) {
                double sc, z;
                mode_quant_params(W + r * n + c, ge - c, 1, maxq, sym, &sc, &z);
                scale[r * ng + k] = (float)sc, zero[r * ng + k] = (float)z;
                gs[r * ng + k] = sc, gz[r * ng + k] = z;
            }
        }
        for (int i = 0; i < cnt; i++) {
            const int c = i1 + i;
            const int64_t k = c / g;
            const double d = U[(size_t)c * n + c];
            const double *u = U + (size_t)c * n;
            for (int64_t r = 0; r < rows; r++) {
                double *w = W + r * n;
                const double dq = mode_quant_level(w[c], gs[r * ng + k], gz[r * ng + k], maxq, &q[r * n + c]);
                const double e = (w[c] - dq) / d;
                Err[r * B + i] = e;
                w[c] = dq;
                for (int j = c + 1; j < i2; j++) w[j] -= e * u[j];
            }
        }
        if (i2 < n) /* W[:, i2:] -= Err (rows, cnt) · U[i1:i2, i2:] */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, n - i2, cnt, -1.0, Err, B, U + (size_t)i1 * n + i2, n, 1.0,
                        W + i2, n);
    }
}

int mode_gptq_ref(struct mode_gptq_batch *b, struct mode_err *err)
{
    int64_t ng;
    int rc = mode_gptq_check(b, &ng, err);
    if (rc) return rc;
    struct mode_gptq_work w;
    mode_gptq_work_carve(b, b->work, &w);
    const int n = (int)b->cols;
    const int64_t rows = b->rows, g = b->group <= 0 || b->group > n ? n : b->group;
    const size_t nn = (size_t)n * n, rn = (size_t)rows * n;
    const double dampf = b->damp > 0 ? b->damp : 0.01;
    /* dead columns (H_ii = 0): the weights' columns zeroed, then H_ii = 1; non-finite diagonals */
    for (int m = 0; m < b->n_mat; m++) {
        const double *H = b->H + (size_t)b->hidx[m] * nn;
        double *Wp = w.Wp + (size_t)m * rn;
        for (size_t i = 0; i < rn; i++) Wp[i] = b->W[(size_t)m * rn + i];
        for (int i = 0; i < n; i++)
            if (H[(size_t)i * n + i] == 0)
                for (int64_t r = 0; r < rows; r++) Wp[r * n + i] = 0;
    }
    for (int h = 0; h < b->n_h; h++) {
        double *H = b->H + (size_t)h * nn, mean = 0;
        b->info[h] = 0;
        for (int i = 0; i < n; i++) {
            double *d = &H[(size_t)i * n + i];
            if (!isfinite(*d) && !b->info[h]) b->info[h] = -(i + 1);
            if (*d == 0) *d = 1;
            mean += *d;
        }
        if (b->info[h]) continue;
        w.damp[h] = dampf * (mean / n);
        order(H, n, b->act_order, w.perm + (size_t)h * n);
        for (int k = 0; k < n; k++) b->g_idx[(size_t)h * n + w.perm[(size_t)h * n + k]] = (int32_t)(k / g);
        b->info[h] = factor(H, n, w.perm + (size_t)h * n, w.damp[h], w.S + (size_t)h * nn);
    }
    if ((rc = mode_gptq_info_status(b->info, b->n_h, err))) return rc;
    double *gs = malloc(sizeof *gs * (size_t)(rows * ng)), *gz = malloc(sizeof *gz * (size_t)(rows * ng)), *tmp = malloc(sizeof *tmp * (size_t)n);
    uint8_t *q = malloc(rn);
    if (!gs || !gz || !tmp || !q) {
        free(gs), free(gz), free(tmp), free(q);
        return mode_err_oom(err, rn * 2, "GPTQ");
    }
    for (int m = 0; m < b->n_mat; m++) {
        const int h = b->hidx[m];
        const int32_t *perm = w.perm + (size_t)h * n;
        double *Wp = w.Wp + (size_t)m * rn;
        for (int64_t r = 0; r < rows; r++) { /* into the act order */
            for (int k = 0; k < n; k++) tmp[k] = Wp[r * n + perm[k]];
            memcpy(Wp + r * n, tmp, sizeof *tmp * (size_t)n);
        }
        columns(Wp, rows, n, b->H + (size_t)h * nn, b->bits[m], g, ng, b->sym, w.err + (size_t)m * (size_t)rows * MODE_GPTQ_BLOCK, q,
                b->scale + (size_t)m * (size_t)(rows * ng), b->zero + (size_t)m * (size_t)(rows * ng), gs, gz);
        for (int64_t r = 0; r < rows; r++) /* back to the checkpoint's order */
            for (int k = 0; k < n; k++) {
                const size_t dst = (size_t)m * rn + (size_t)r * n + (size_t)perm[k];
                b->deq[dst] = (float)Wp[r * n + k];
                b->q[dst] = q[r * n + k];
            }
    }
    free(gs), free(gz), free(tmp), free(q);
    return MODE_OK;
}

int mode_gptq_rows(struct mode_gptq_batch *b, const float *const *X, const int64_t *n_x, enum mode_device device, struct mode_err *err)
{
    if (device == MODE_DEVICE_CUDA) return mode_gptq_rows_cuda(b, X, n_x, err);
    int64_t ng;
    int rc = mode_gptq_check(b, &ng, err);
    if (rc) return rc;
    const size_t nn = (size_t)(b->cols * b->cols);
    double *H = malloc(sizeof *H * nn * (size_t)b->n_h);
    void *work = malloc(mode_gptq_work_bytes(b));
    if (!H || !work) {
        free(H), free(work);
        return mode_err_oom(err, sizeof *H * nn * (size_t)b->n_h + mode_gptq_work_bytes(b), "GPTQ");
    }
    for (int h = 0; h < b->n_h && !rc; h++) {
        struct mode_hessian hs;
        if (n_x[h] < 1) rc = mode_err_set(err, MODE_EUSAGE, "GPTQ: Hessian %d has no calibration row", h);
        else if (!(rc = mode_hessian_init(&hs, b->cols, err))) {
            mode_hessian_add(&hs, X[h], n_x[h]);
            mode_hessian_get(&hs, H + (size_t)h * nn);
            mode_hessian_free(&hs);
        }
    }
    double *H0 = b->H;
    void *w0 = b->work;
    b->H = H, b->work = work;
    if (!rc) rc = mode_gptq_ref(b, err);
    b->H = H0, b->work = w0;
    free(H), free(work);
    return rc;
}
