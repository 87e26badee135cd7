/* quant.c — RTN and GPTQ (see quant.h). */
#include "quant.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (OpenBLAS ships it) */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info);

int mode_quant_groups(const struct mode_quant_opts *o, int64_t cols, int64_t *group, int64_t *n_groups, struct mode_err *err)
{
    if (o->bits != 2 && o->bits != 3 && o->bits != 4 && o->bits != 8)
        return mode_err_set(err, MODE_EUSAGE, "%d bits: the quantizers support 2, 3, 4 and 8", o->bits);
    if (cols < 1) return mode_err_set(err, MODE_EUSAGE, "a weight with %lld input columns", (long long)cols);
    int64_t g = o->group <= 0 || o->group > cols ? cols : o->group;
    if (cols % g)
        return mode_err_set(err, MODE_EUSAGE, "group size %lld does not divide the %lld input columns (use a divisor, or one larger than %lld)",
                            (long long)g, (long long)cols, (long long)cols);
    *group = g;
    *n_groups = cols / g;
    return MODE_OK;
}

void mode_quant_params(const double *x, int64_t n, int64_t s, int maxq, bool sym, double *scale, double *zero)
{
    double lo = 0, hi = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = x[i * s];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    if (sym) {
        hi = fmax(fabs(lo), hi);
        if (lo < 0) lo = -hi;
    }
    if (lo == 0 && hi == 0) lo = -1, hi = 1;
    double sc = (hi - lo) / maxq;
    if (!isfinite(sc)) sc = DBL_MAX; /* a range beyond double: still a finite scale */
    if (!(sc > 0)) sc = 1;
    *scale = sc;
    *zero = sym ? (maxq + 1) / 2 : rint(-lo / sc);
}

double mode_quant_level(double w, double scale, double zero, int maxq, uint8_t *q)
{
    double v = rint(w / scale) + zero;
    if (!(v >= 0)) v = 0; /* NaN too */
    if (v > maxq) v = maxq;
    if (q) *q = (uint8_t)v;
    return scale * (v - zero);
}

int mode_quant_rtn_f64(const double *W, int64_t rows, int64_t cols, const struct mode_quant_opts *o, double *deq, uint8_t *q,
                       struct mode_err *err)
{
    int64_t g, ng;
    int rc = mode_quant_groups(o, cols, &g, &ng, err);
    if (rc) return rc;
    const int maxq = (1 << o->bits) - 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < ng; k++) {
            double sc, z;
            const double *x = W + r * cols + k * g;
            mode_quant_params(x, g, 1, maxq, o->sym, &sc, &z);
            for (int64_t j = 0; j < g; j++) {
                const int64_t i = r * cols + k * g + j;
                double d = mode_quant_level(W[i], sc, z, maxq, q ? &q[i] : NULL);
                if (deq) deq[i] = d;
            }
        }
    return MODE_OK;
}

int mode_quant_rtn(const float *W, int64_t rows, int64_t cols, const struct mode_quant_opts *o, struct mode_quant_out *out, struct mode_err *err)
{
    int64_t g, ng;
    int rc = mode_quant_groups(o, cols, &g, &ng, err);
    if (rc) return rc;
    const int maxq = (1 << o->bits) - 1;
    double *x = malloc(sizeof *x * (size_t)g);
    if (!x) return mode_err_oom(err, sizeof *x * (size_t)g, "RTN");
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < ng; k++) {
            for (int64_t j = 0; j < g; j++) x[j] = W[r * cols + k * g + j];
            double sc, z;
            mode_quant_params(x, g, 1, maxq, o->sym, &sc, &z);
            if (out->scale) out->scale[r * ng + k] = (float)sc;
            if (out->zero) out->zero[r * ng + k] = (float)z;
            for (int64_t j = 0; j < g; j++) {
                const int64_t i = r * cols + k * g + j;
                uint8_t qq;
                double d = mode_quant_level(x[j], sc, z, maxq, &qq);
                if (out->q) out->q[i] = qq;
                if (out->deq) out->deq[i] = (float)d;
            }
        }
    if (out->g_idx)
        for (int64_t c = 0; c < cols; c++) out->g_idx[c] = (int32_t)(c / g);
    free(x);
    return MODE_OK;
}

/* ---- Hessian ---------------------------------------------------------------------------------- */

int mode_hessian_init(struct mode_hessian *h, int64_t cols, struct mode_err *err)
{
    h->cols = cols;
    h->n = 0;
    h->h = calloc((size_t)(cols * cols), sizeof *h->h);
    return h->h ? MODE_OK : mode_err_oom(err, sizeof *h->h * (size_t)(cols * cols), "a Hessian");
}

void mode_hessian_free(struct mode_hessian *h)
{
    free(h->h);
    h->h = NULL;
}

void mode_hessian_add(struct mode_hessian *h, const float *X, int64_t rows)
{
    if (rows < 1) return;
    const int64_t c = h->cols;
    double *xd = malloc(sizeof *xd * (size_t)(rows * c));
    if (xd) {
        for (int64_t i = 0; i < rows * c; i++) xd[i] = X[i];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)c, (int)rows, 1.0, xd, (int)c, 1.0, h->h, (int)c);
        free(xd);
    } else { /* no memory for the copy: row by row */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < c; i++)
                for (int64_t j = i; j < c; j++) h->h[i * c + j] += (double)X[r * c + i] * X[r * c + j];
    }
    h->n += rows;
}

void mode_hessian_get(const struct mode_hessian *h, double *H)
{
    const int64_t c = h->cols;
    const double f = h->n ? 2.0 / (double)h->n : 0;
    for (int64_t i = 0; i < c; i++)
        for (int64_t j = i; j < c; j++) H[i * c + j] = H[j * c + i] = f * h->h[i * c + j];
}

/* ---- GPTQ ------------------------------------------------------------------------------------- */

/* U (n, n) row-major upper: the upper Cholesky factor of H⁻¹ (H damped), H overwritten. Not by
 * Cholesky, inverse and Cholesky again as the reference does, but with the reversal J
 * (J_ij = [i + j = n-1]): J H J = L Lᵀ gives H = R Rᵀ with R = J L J upper, so H⁻¹ = R⁻ᵀ R⁻¹ and
 * U = R⁻¹ = J L⁻¹ J (upper, positive diagonal: the same factor by uniqueness) — one Cholesky and
 * one triangular inverse, half the arithmetic (lib/gptq.h; the CUDA kernel does the same). */
static int inverse_factor(double *H, int n, double *U, struct mode_err *err)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) U[(size_t)i * n + j] = H[(size_t)(n - 1 - i) * n + (n - 1 - j)];
    int info;
    dpotrf_("L", &n, U, &n, &info);
    if (info) return mode_err_set(err, MODE_EDATA, "GPTQ: the damped Hessian is not positive definite (pivot %d): NaN or infinite activations?", info);
    dtrtri_("L", "N", &n, U, &n, &info);
    if (info) return mode_err_set(err, MODE_EDATA, "GPTQ: the damped Hessian is singular");
    /* U(c, j) = L⁻¹(n-1-c, n-1-j), column-major element (n-1-c) + (n-1-j) n */
    for (int c = 0; c < n; c++)
        for (int j = 0; j < n; j++) H[(size_t)c * n + j] = j >= c ? U[(size_t)(n - 1 - c) + (size_t)(n - 1 - j) * n] : 0;
    memcpy(U, H, sizeof *U * (size_t)n * n);
    return MODE_OK;
}

struct diag_idx {
    double d;
    int i;
};

static int by_diag_desc(const void *a, const void *b)
{
    const struct diag_idx *x = a, *y = b;
    if (x->d != y->d) return x->d < y->d ? 1 : -1;
    return x->i - y->i; /* stable, as torch.argsort's order for ties is not specified: lower first */
}

int mode_quant_gptq_f64(const double *W0, int64_t rows, int64_t cols, const double *H0, const struct mode_quant_opts *o, double *deq,
                        uint8_t *qout, double *scale, double *zero, int32_t *g_idx, struct mode_err *err)
{
    int64_t g, ng;
    int rc = mode_quant_groups(o, cols, &g, &ng, err);
    if (rc) return rc;
    if (cols > 65536) return mode_err_set(err, MODE_EUSAGE, "GPTQ: %lld input columns is too many", (long long)cols);
    const int n = (int)cols, maxq = (1 << o->bits) - 1, B = o->block > 0 ? o->block : 128;
    const double dampf = o->damp > 0 ? o->damp : 0.01;
    const size_t nn = (size_t)n * n, wn = (size_t)rows * n;
    double *W = malloc(sizeof *W * wn), *H = malloc(sizeof *H * nn), *U = malloc(sizeof *U * nn), *Err = malloc(sizeof *Err * (size_t)rows * B);
    int *perm = malloc(sizeof *perm * (size_t)n);
    struct diag_idx *di = malloc(sizeof *di * (size_t)n);
    uint8_t *q = malloc(wn);
    double *Q = malloc(sizeof *Q * wn), *gs = malloc(sizeof *gs * (size_t)rows), *gz = malloc(sizeof *gz * (size_t)rows);
    if (!W || !H || !U || !Err || !perm || !di || !q || !Q || !gs || !gz) {
        rc = mode_err_oom(err, sizeof(double) * (3 * nn + 2 * wn), "GPTQ");
        goto out;
    }
    memcpy(H, H0, sizeof *H * nn);
    memcpy(W, W0, sizeof *W * wn);
    for (int i = 0; i < n; i++)
        if (!isfinite(H[(size_t)i * n + i])) {
            rc = mode_err_set(err, MODE_EDATA, "GPTQ: the Hessian's diagonal has %g at column %d", H[(size_t)i * n + i], i);
            goto out;
        }
    /* dead columns */
    for (int i = 0; i < n; i++)
        if (H[(size_t)i * n + i] == 0) {
            H[(size_t)i * n + i] = 1;
            for (int64_t r = 0; r < rows; r++) W[r * n + i] = 0;
        }
    /* act-order: permute columns of W and rows/columns of H */
    for (int i = 0; i < n; i++) perm[i] = i;
    if (o->act_order) {
        for (int i = 0; i < n; i++) di[i] = (struct diag_idx){H[(size_t)i * n + i], i};
        qsort(di, (size_t)n, sizeof *di, by_diag_desc);
        for (int i = 0; i < n; i++) perm[i] = di[i].i;
        for (int64_t r = 0; r < rows; r++) {
            for (int i = 0; i < n; i++) Q[r * n + i] = W[r * n + perm[i]];
            memcpy(W + r * n, Q + r * n, sizeof *W * (size_t)n);
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) U[(size_t)i * n + j] = H[(size_t)perm[i] * n + perm[j]];
        memcpy(H, U, sizeof *H * nn);
    }
    double mean = 0;
    for (int i = 0; i < n; i++) mean += H[(size_t)i * n + i];
    mean /= n;
    for (int i = 0; i < n; i++) H[(size_t)i * n + i] += dampf * mean;
    if ((rc = inverse_factor(H, n, U, err))) goto out;

    for (int i1 = 0; i1 < n; i1 += B) {
        const int i2 = i1 + B < n ? i1 + B : n, cnt = i2 - i1;
        /* W1: this block as earlier blocks left it (for group parameters) */
        double *W1 = malloc(sizeof *W1 * (size_t)rows * cnt);
        if (!W1) {
            rc = mode_err_oom(err, sizeof *W1 * (size_t)rows * cnt, "GPTQ");
            goto out;
        }
        for (int64_t r = 0; r < rows; r++) memcpy(W1 + r * cnt, W + r * n + i1, sizeof *W1 * (size_t)cnt);
        for (int i = 0; i < cnt; i++) {
            const int c = i1 + i;
            if (c % g == 0) {
                /* group columns [c, c + g): those inside this block from the block's start copy
                 * W1 (not yet updated within the block), those beyond it from W (updated by
                 * earlier blocks) — the reference reads W[:, c:c+g], which the in-block loop
                 * does not touch */
                const int64_t ge = c + g < n ? c + g : n;
                double *tmp = Q; /* scratch row */
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t j = c; j < ge; j++) tmp[j - c] = j < i2 ? W1[r * cnt + (j - i1)] : W[r * n + j];
                    mode_quant_params(tmp, ge - c, 1, maxq, o->sym, &gs[r], &gz[r]);
                }
                const int64_t k = c / g;
                for (int64_t r = 0; r < rows; r++) {
                    if (scale) scale[r * ng + k] = gs[r];
                    if (zero) zero[r * ng + k] = gz[r];
                }
            }
            const double d = U[(size_t)c * n + c];
            for (int64_t r = 0; r < rows; r++) {
                double *w = W + r * n;
                uint8_t qq;
                const double dq = mode_quant_level(w[c], gs[r], gz[r], maxq, &qq);
                q[r * n + c] = qq;
                const double e = (w[c] - dq) / d;
                Err[r * B + i] = e;
                w[c] = dq;
                const double *u = U + (size_t)c * n;
                for (int j = c + 1; j < i2; j++) w[j] -= e * u[j];
            }
        }
        free(W1);
        /* lazy update of the later blocks: W[:, i2:] -= Err (rows, cnt) · U[i1:i2, i2:] */
        if (i2 < n)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, n - i2, cnt, -1.0, Err, B, U + (size_t)i1 * n + i2, n, 1.0,
                        W + i2, n);
    }
    /* undo the permutation */
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) {
            const int64_t dst = r * n + perm[i];
            if (deq) deq[dst] = W[r * n + i];
            if (qout) qout[dst] = q[r * n + i];
        }
    if (g_idx)
        for (int i = 0; i < n; i++) g_idx[perm[i]] = (int32_t)(i / g);
out:
    free(W), free(H), free(U), free(Err), free(perm), free(di), free(q), free(Q), free(gs), free(gz);
    return rc;
}

int mode_quant_gptq(const float *Wf, int64_t rows, int64_t cols, const double *H, const struct mode_quant_opts *o, struct mode_quant_out *out,
                    struct mode_err *err)
{
    int64_t g, ng;
    int rc = mode_quant_groups(o, cols, &g, &ng, err);
    if (rc) return rc;
    const size_t wn = (size_t)(rows * cols);
    double *W = malloc(sizeof *W * wn), *deq = malloc(sizeof *deq * wn), *sc = malloc(sizeof *sc * (size_t)(rows * ng)),
           *z = malloc(sizeof *z * (size_t)(rows * ng));
    if (!W || !deq || !sc || !z) {
        free(W), free(deq), free(sc), free(z);
        return mode_err_oom(err, sizeof *W * wn * 2, "GPTQ");
    }
    for (size_t i = 0; i < wn; i++) W[i] = Wf[i];
    rc = mode_quant_gptq_f64(W, rows, cols, H, o, deq, out->q, sc, z, out->g_idx, err);
    if (!rc) {
        for (size_t i = 0; out->deq && i < wn; i++) out->deq[i] = (float)deq[i];
        for (int64_t i = 0; i < rows * ng; i++) {
            if (out->scale) out->scale[i] = (float)sc[i];
            if (out->zero) out->zero[i] = (float)z[i];
        }
    }
    free(W), free(deq), free(sc), free(z);
    return rc;
}
