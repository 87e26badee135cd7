/* attn.c — the attention of the runtime on the CPU (attn.h): per segment, head and block of query
 * rows, the scores by one OpenBLAS product, scale, mask and softmax in f32 (one vectorised pass
 * per row, vmath.h), the output by a second product; segments and heads on the pool's threads
 * (pool.h), each with its worker's kept score buffer. The runtime's text and vision attention and
 * the reference of kernels/attn.cu. */
#include "attn.h"

#include "ops.h"
#include "pool.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int mode_attention_check(const struct mode_attn_shape *a, const float *q, const float *k, const float *v, const int64_t *seg, int n_seg,
                         const uint8_t *sel, const float *colsum, const float *o, const char *who, struct mode_err *err)
{
    if (!a) return mode_err_set(err, MODE_EUSAGE, "%s: no shape", who);
    if (a->n_head < 1 || a->n_head_kv < 1 || a->n_head % a->n_head_kv)
        return mode_err_set(err, MODE_EUSAGE, "%s: n_head %d, n_head_kv %d: n_head_kv must be at least 1 and divide n_head", who, a->n_head,
                            a->n_head_kv);
    if (a->head_dim < 1) return mode_err_set(err, MODE_EUSAGE, "%s: head_dim %d must be at least 1", who, a->head_dim);
    const int64_t qd = (int64_t)a->n_head * a->head_dim, kvd = (int64_t)a->n_head_kv * a->head_dim;
    const struct {
        const char *name;
        int64_t ld, need;
        int heads;
    } st[4] = {{"ld_q", a->ld_q, qd, a->n_head}, {"ld_k", a->ld_k, kvd, a->n_head_kv}, {"ld_v", a->ld_v, kvd, a->n_head_kv},
               {"ld_o", a->ld_o, qd, a->n_head}};
    for (int i = 0; i < 4; i++)
        if (st[i].ld < st[i].need)
            return mode_err_set(err, MODE_EUSAGE, "%s: %s %lld is smaller than its %d heads of %d (%lld floats)", who, st[i].name,
                                (long long)st[i].ld, st[i].heads, a->head_dim, (long long)st[i].need);
    if (!isfinite(a->scale)) return mode_err_set(err, MODE_EUSAGE, "%s: scale %g is not finite", who, (double)a->scale);
    if (n_seg < 0) return mode_err_set(err, MODE_EUSAGE, "%s: n_seg %d is negative", who, n_seg);
    if (!seg) return mode_err_set(err, MODE_EUSAGE, "%s: no segment offsets (seg is NULL)", who);
    if (seg[0] < 0) return mode_err_set(err, MODE_EUSAGE, "%s: seg[0] = %lld is negative", who, (long long)seg[0]);
    for (int s = 0; s < n_seg; s++)
        if (seg[s + 1] < seg[s])
            return mode_err_set(err, MODE_EUSAGE, "%s: seg[%d] = %lld is below seg[%d] = %lld: the offsets must ascend", who, s + 1,
                                (long long)seg[s + 1], s, (long long)seg[s]);
    if (seg[n_seg] > seg[0] && (!q || !k || !v || !o)) return mode_err_set(err, MODE_EUSAGE, "%s: q, k, v or o is NULL", who);
    if (sel && !colsum) return mode_err_set(err, MODE_EUSAGE, "%s: sel given without colsum", who);
    return MODE_OK;
}

struct attn_job {
    const struct mode_attn_shape *a;
    const float *q, *k, *v;
    const int64_t *seg;
    const uint8_t *sel;
    float *colsum, *o;
    int64_t block;
    size_t cap;    /* score floats a task needs */
    bool per_seg;  /* a task is a segment's heads (sel: their column sums add up in order) */
};

/* head h of segment s: per block of query rows, the scores by one product, scale, the causal
 * mask and softmax in one call per row, the selected rows' scores summed per column, the output
 * by a second product */
static void attn_head(const struct attn_job *j, int s, int h, float *sc)
{
    const struct mode_attn_shape *a = j->a;
    const int hd = a->head_dim, grp = a->n_head / a->n_head_kv;
    const int64_t r0 = j->seg[s], n = j->seg[s + 1] - r0, block = j->block;
    const float *qh = j->q + r0 * a->ld_q + (int64_t)h * hd, *kh = j->k + r0 * a->ld_k + (int64_t)(h / grp) * hd,
                *vh = j->v + r0 * a->ld_v + (int64_t)(h / grp) * hd;
    /* each block sees the keys up to its last row (causal) or all of them, so the scores
     * take at most block x n floats however long the segment */
    for (int64_t b0 = 0; b0 < n; b0 += block) {
        const int64_t nb = n - b0 < block ? n - b0 : block, nk = a->causal ? b0 + nb : n;
        mode_gemm(nb, nk, hd, qh + b0 * a->ld_q, a->ld_q, kh, a->ld_k, true, 0.0f, sc, nk);
        for (int64_t r = 0; r < nb; r++) {
            const int64_t seen = a->causal ? b0 + r + 1 : nk; /* columns row b0 + r attends to */
            mode_vsoftmax_row_scaled(sc + r * nk, nk, seen, a->scale);
        }
        if (j->sel)
            for (int64_t r = 0; r < nb; r++) {
                if (!j->sel[r0 + b0 + r]) continue;
                const int64_t seen = a->causal ? b0 + r + 1 : nk;
                for (int64_t c = 0; c < seen; c++) j->colsum[r0 + c] += sc[r * nk + c];
            }
        mode_gemm(nb, hd, nk, sc, nk, vh, a->ld_v, false, 0.0f, j->o + (r0 + b0) * a->ld_o + (int64_t)h * hd, a->ld_o);
    }
}

static void attn_task(void *ctx, int64_t t, int worker)
{
    struct attn_job *j = ctx;
    float *sc = j->cap ? mode_pool_scratch(worker, j->cap * sizeof *sc) : NULL; /* allocated before the run */
    if (j->per_seg)
        for (int h = 0; h < j->a->n_head; h++) attn_head(j, (int)t, h, sc);
    else
        attn_head(j, (int)(t / j->a->n_head), (int)(t % j->a->n_head), sc);
}

int mode_attention_ref_block(const struct mode_attn_shape *a, const float *q, const float *k, const float *v, const int64_t *seg,
                             int n_seg, const uint8_t *sel, float *colsum, float *o, int64_t block, struct mode_err *err)
{
    int rc = mode_attention_check(a, q, k, v, seg, n_seg, sel, colsum, o, "mode_attention_ref", err);
    if (rc) return rc;
    if (block < 1) return mode_err_set(err, MODE_EUSAGE, "mode_attention_ref: block %lld must be at least 1", (long long)block);
    size_t cap = 0;
    for (int s = 0; s < n_seg; s++) {
        const int64_t n = seg[s + 1] - seg[s], nb = n < block ? n : block;
        cap = (size_t)(nb * n) > cap ? (size_t)(nb * n) : cap;
    }
    /* every worker's score buffer before anything is written (nested in a pool item: the
     * calling worker's alone, as the tasks then run on it) */
    if (cap)
        for (int w = mode_pool_inside() ? mode_pool_worker() : 0, last = mode_pool_inside() ? w : mode_pool_threads() - 1; w <= last; w++)
            if (!mode_pool_scratch(w, cap * sizeof(float))) return mode_err_oom(err, cap * sizeof(float), "attention scores");
    if (sel) memset(colsum, 0, (size_t)seg[n_seg] * sizeof *colsum);
    /* the tasks: (segment, head) pairs; with sel a segment each, its heads in order, so that its
     * column sums add up in one order at any thread count. Each task's scores in its worker's
     * kept buffer (pool.h). */
    struct attn_job j = {a, q, k, v, seg, sel, colsum, o, block, cap, sel != NULL};
    mode_pool_run(sel ? n_seg : (int64_t)n_seg * a->n_head, attn_task, &j);
    return MODE_OK;
}

int mode_attention_ref(const struct mode_attn_shape *a, const float *q, const float *k, const float *v, const int64_t *seg, int n_seg,
                       const uint8_t *sel, float *colsum, float *o, struct mode_err *err)
{
    return mode_attention_ref_block(a, q, k, v, seg, n_seg, sel, colsum, o, MODE_ATTN_BLOCK, err);
}
