/* test_attn — mode_attention_ref (lib/attn.c) against a direct attention in double written here:
 * each row's scores, softmax and output from the definition, with no blocking and no BLAS.
 * Random q, k, v in [-1, 1) (fixed printed seed); causal and not; GQA 4/2, 4/1 and 4/4; several
 * segments, one of length 1 and an empty one, starting at row 3 so that rows 0..2 and the rows
 * past the last segment belong to none; selection masks of ~30% and the colsum; strides wider
 * than the rows; q, k and v packed in one buffer as the vision tower holds them; blocks of 512,
 * 7 and 5 query rows; a scale large enough that exp would overflow without the row maximum
 * subtracted. o and colsum are NaN-poisoned first: rows outside every segment must stay NaN in o,
 * colsum must be 0 on rows 0..2 and NaN past the last segment.
 *
 * Tolerances (f32 against double): the scores are f32 dot products of head_dim ≤ 64 terms
 * (relative error ~ head_dim · 2^-24 ≈ 4e-6 at worst), exp and the softmax sum add a few ulps
 * per term over ≤ 300 keys; the outputs are averages of values of magnitude ≤ 1, the colsum
 * sums of up to 4 heads × ~100 rows of probabilities. Per element |got − want| ≤ ATOL + RTOL·|want|
 * with ATOL 1e-5 and RTOL 1e-4, and ‖got − want‖/‖want‖ ≤ REL_L2 = 1e-5 over each output: an
 * order or two above what this seed measures (o: rel ≤ 4e-7, worst 1.3e-6 absolute at scale 16;
 * colsum: rel ≤ 3e-7, worst 2.7e-6 on sums of ~10), while a wrong mask, head mapping or segment
 * gives rel ~0.05–1.
 */
#include "../../lib/attn.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ATOL 1e-5
#define RTOL 1e-4
#define REL_L2 1e-5

static float frand(void) { return (float)((double)(tap_rand() >> 11) / 9007199254740992.0 * 2 - 1); }

/* the definition, in double: o (rows, ld_o) and colsum (rows) for rows of segments only */
static void naive(const struct mode_attn_shape *a, const float *q, const float *k, const float *v, const int64_t *seg, int n_seg,
                  const uint8_t *sel, double *colsum, double *o)
{
    const int hd = a->head_dim, grp = a->n_head / a->n_head_kv;
    for (int s = 0; s < n_seg; s++) {
        const int64_t r0 = seg[s], n = seg[s + 1] - r0;
        double *p = malloc(sizeof *p * (size_t)(n ? n : 1));
        for (int h = 0; h < a->n_head; h++)
            for (int64_t r = 0; r < n; r++) {
                const int64_t nc = a->causal ? r + 1 : n;
                double mx = -INFINITY, sum = 0;
                for (int64_t c = 0; c < nc; c++) {
                    double d = 0;
                    for (int j = 0; j < hd; j++)
                        d += (double)q[(r0 + r) * a->ld_q + h * hd + j] * k[(r0 + c) * a->ld_k + (h / grp) * hd + j];
                    p[c] = d * a->scale;
                    mx = p[c] > mx ? p[c] : mx;
                }
                for (int64_t c = 0; c < nc; c++) sum += p[c] = exp(p[c] - mx);
                for (int64_t c = 0; c < nc; c++) p[c] /= sum;
                for (int j = 0; j < hd; j++) {
                    double acc = 0;
                    for (int64_t c = 0; c < nc; c++) acc += p[c] * v[(r0 + c) * a->ld_v + (h / grp) * hd + j];
                    o[(r0 + r) * a->ld_o + h * hd + j] = acc;
                }
                if (sel && sel[r0 + r])
                    for (int64_t c = 0; c < nc; c++) colsum[r0 + c] += p[c];
            }
        free(p);
    }
}

/* per-element and normalised error of got against want over the n entries where mask is set */
static int close_enough(const float *got, const double *want, const uint8_t *mask, int64_t n, double *rel, double *worst, int64_t *first)
{
    double num = 0, den = 0;
    int bad = 0;
    *worst = 0, *first = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!mask[i]) continue;
        const double d = fabs((double)got[i] - want[i]);
        num += d * d, den += want[i] * want[i];
        if (!(d <= ATOL + RTOL * fabs(want[i]))) {
            if (*first < 0) *first = i;
            bad = 1;
        }
        if (!(d <= *worst)) *worst = isnan(d) ? INFINITY : d;
    }
    *rel = den > 0 ? sqrt(num / den) : sqrt(num);
    return !bad && *rel <= REL_L2;
}

struct tcase {
    const char *name;
    int n_head, n_head_kv, head_dim;
    bool causal, packed, with_sel;
    int pad;        /* extra floats per row in every stride */
    float scale;    /* 0: head_dim^-0.5 */
    int64_t block;  /* 0: mode_attention_ref (512) */
    int n_seg;
    int64_t seg[8]; /* n_seg + 1 offsets */
};

static void run(const struct tcase *t)
{
    struct mode_err err = {0};
    const int hd = t->head_dim;
    const int64_t qd = (int64_t)t->n_head * hd, kvd = (int64_t)t->n_head_kv * hd, end = t->seg[t->n_seg], rows = end + 2;
    struct mode_attn_shape a = {t->n_head, t->n_head_kv, hd, qd + t->pad, kvd + t->pad, kvd + t->pad, qd + t->pad, t->causal,
                                t->scale > 0 ? t->scale : 1.0f / sqrtf((float)hd)};
    float *buf = NULL, *q, *k, *v;
    if (t->packed) { /* one row: q heads, k heads, v heads (the vision tower's qkv) */
        a.ld_q = a.ld_k = a.ld_v = qd + 2 * kvd + t->pad;
        buf = malloc(sizeof *buf * (size_t)(rows * a.ld_q));
        for (int64_t i = 0; i < rows * a.ld_q; i++) buf[i] = frand();
        q = buf, k = buf + qd, v = buf + qd + kvd;
    } else {
        buf = malloc(sizeof *buf * (size_t)(rows * (a.ld_q + a.ld_k + a.ld_v)));
        for (int64_t i = 0; i < rows * (a.ld_q + a.ld_k + a.ld_v); i++) buf[i] = frand();
        q = buf, k = q + rows * a.ld_q, v = k + rows * a.ld_k;
    }
    uint8_t *sel = NULL, *in_seg = calloc((size_t)rows, 1), *o_mask = calloc((size_t)(rows * a.ld_o), 1);
    int64_t n_sel = 0;
    if (t->with_sel) {
        sel = calloc((size_t)rows, 1);
        for (int64_t r = 0; r < rows; r++) n_sel += sel[r] = tap_rand() % 10 < 3;
    }
    for (int64_t r = t->seg[0]; r < end; r++) {
        in_seg[r] = 1;
        memset(o_mask + r * a.ld_o, 1, (size_t)qd);
    }
    float *o = malloc(sizeof *o * (size_t)(rows * a.ld_o)), *colsum = malloc(sizeof *colsum * (size_t)rows);
    double *wo = calloc((size_t)(rows * a.ld_o), sizeof *wo), *wc = calloc((size_t)rows, sizeof *wc);
    for (int64_t i = 0; i < rows * a.ld_o; i++) o[i] = NAN;
    for (int64_t i = 0; i < rows; i++) colsum[i] = NAN;
    naive(&a, q, k, v, t->seg, t->n_seg, sel, wc, wo);
    int rc = t->block ? mode_attention_ref_block(&a, q, k, v, t->seg, t->n_seg, sel, sel ? colsum : NULL, o, t->block, &err)
                      : mode_attention_ref(&a, q, k, v, t->seg, t->n_seg, sel, sel ? colsum : NULL, o, &err);
    if (!is_int(rc, MODE_OK, "%s: runs", t->name)) diag("%s", err.msg);
    double rel, worst;
    int64_t first;
    int good = close_enough(o, wo, o_mask, rows * a.ld_o, &rel, &worst, &first);
    if (!ok(good, "%s: o (rel %.2g, worst %.2g)", t->name, rel, worst) && first >= 0)
        diag("first mismatch: row %lld col %lld: %.9g, want %.9g", (long long)(first / a.ld_o), (long long)(first % a.ld_o), o[first], wo[first]);
    int64_t outside = 0;
    for (int64_t i = 0; i < rows * a.ld_o; i++) outside += !o_mask[i] && !isnan(o[i]);
    is_int(outside, 0, "%s: o untouched outside the segments' heads (still NaN)", t->name);
    if (sel) {
        good = close_enough(colsum, wc, in_seg, rows, &rel, &worst, &first);
        if (!ok(good, "%s: colsum over %lld selected rows (rel %.2g, worst %.2g)", t->name, (long long)n_sel, rel, worst) && first >= 0)
            diag("first mismatch: column %lld: %.9g, want %.9g", (long long)first, colsum[first], wc[first]);
        int bad = 0;
        for (int64_t r = 0; r < t->seg[0]; r++) bad += colsum[r] != 0;
        for (int64_t r = end; r < rows; r++) bad += !isnan(colsum[r]);
        is_int(bad, 0, "%s: colsum 0 before the first segment, untouched past the last", t->name);
    }
    free(buf), free(sel), free(in_seg), free(o_mask), free(o), free(colsum), free(wo), free(wc);
}

/* the block size changes only the products' shapes: results agree to rounding */
static void blocks_agree(void)
{
    struct mode_err err = {0};
    const int64_t seg[3] = {3, 40, 141}, rows = 141;
    const struct mode_attn_shape a = {4, 2, 16, 64, 32, 32, 64, true, 0.25f};
    float *q = malloc(sizeof *q * (size_t)(rows * 128)), *k = q + rows * 64, *v = k + rows * 32;
    for (int64_t i = 0; i < rows * 128; i++) q[i] = frand();
    float *o1 = calloc((size_t)(rows * 64), sizeof *o1), *o2 = calloc((size_t)(rows * 64), sizeof *o2);
    int rc = mode_attention_ref(&a, q, k, v, seg, 2, NULL, NULL, o1, &err);
    if (!rc) rc = mode_attention_ref_block(&a, q, k, v, seg, 2, NULL, NULL, o2, 1, &err);
    double worst = 0;
    for (int64_t i = 0; i < rows * 64; i++) worst = fmax(worst, fabs((double)o1[i] - o2[i]));
    ok(!rc && worst <= ATOL, "blocks of 512 and of 1 row agree (worst %.2g)", worst);
    free(q), free(o1), free(o2);
}

static void usage_errors(void)
{
    struct mode_err err;
    float x[64] = {0}, cs[8];
    int64_t seg[3] = {0, 2, 4};
    uint8_t sel[4] = {1, 0, 1, 0};
    struct mode_attn_shape a = {4, 2, 2, 8, 4, 4, 8, false, 1.0f};
    const struct {
        const char *what, *msg;
        struct mode_attn_shape a;
        int64_t seg1;
        bool no_colsum;
        int64_t block;
    } bad[] = {
        {"n_head_kv 0", "n_head_kv must be at least 1 and divide n_head", {4, 0, 2, 8, 4, 4, 8, false, 1.0f}, 2, false, 512},
        {"n_head_kv 3 of 4", "n_head 4, n_head_kv 3", {4, 3, 2, 8, 6, 6, 8, false, 1.0f}, 2, false, 512},
        {"head_dim 0", "head_dim 0 must be at least 1", {4, 2, 0, 8, 4, 4, 8, false, 1.0f}, 2, false, 512},
        {"ld_q below the heads", "ld_q 7 is smaller than its 4 heads of 2 (8 floats)", {4, 2, 2, 7, 4, 4, 8, false, 1.0f}, 2, false, 512},
        {"ld_v below the heads", "ld_v 3 is smaller than its 2 heads of 2", {4, 2, 2, 8, 4, 3, 8, false, 1.0f}, 2, false, 512},
        {"infinite scale", "scale inf is not finite", {4, 2, 2, 8, 4, 4, 8, false, INFINITY}, 2, false, 512},
        {"seg descending", "seg[2] = 4 is below seg[1] = 5", {4, 2, 2, 8, 4, 4, 8, false, 1.0f}, 5, false, 512},
        {"sel without colsum", "sel given without colsum", {4, 2, 2, 8, 4, 4, 8, false, 1.0f}, 2, true, 512},
        {"block 0", "block 0 must be at least 1", {4, 2, 2, 8, 4, 4, 8, false, 1.0f}, 2, false, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mode_err_clear(&err);
        seg[1] = bad[i].seg1;
        int rc = mode_attention_ref_block(&bad[i].a, x, x, x, seg, 2, sel, bad[i].no_colsum ? NULL : cs, x + 32, bad[i].block, &err);
        is_int(rc, MODE_EUSAGE, "%s: MODE_EUSAGE", bad[i].what);
        has_str(err.msg, bad[i].msg, "... says so");
    }
    seg[1] = 2;
    is_int(mode_attention_ref(&a, x, x, x, seg, -1, NULL, NULL, x, &err), MODE_EUSAGE, "n_seg -1: MODE_EUSAGE");
    is_int(mode_attention_ref(&a, x, x, x, NULL, 1, NULL, NULL, x, &err), MODE_EUSAGE, "seg NULL: MODE_EUSAGE");
    seg[0] = -1;
    is_int(mode_attention_ref(&a, x, x, x, seg, 2, NULL, NULL, x, &err), MODE_EUSAGE, "seg[0] negative: MODE_EUSAGE");
    seg[0] = 0;
    is_int(mode_attention_ref(&a, NULL, x, x, seg, 2, NULL, NULL, x, &err), MODE_EUSAGE, "q NULL with rows: MODE_EUSAGE");
    const int64_t none[1] = {5};
    is_int(mode_attention_ref(&a, NULL, NULL, NULL, none, 0, NULL, NULL, NULL, &err), MODE_OK, "no segment: nothing to do, MODE_OK");
}

int main(void)
{
    static const struct tcase cases[] = {
        {"causal GQA 4/2 hd 16, lengths 5 1 17 41", 4, 2, 16, true, false, true, 3, 0, 0, 4, {3, 8, 9, 26, 67}},
        {"causal GQA 4/1 hd 8, blocks of 7", 4, 1, 8, true, false, true, 5, 0, 7, 3, {3, 4, 24, 90}},
        {"non-causal GQA 4/1 hd 8, blocks of 5, an empty segment", 4, 1, 8, false, false, true, 1, 0, 5, 4, {3, 19, 19, 20, 57}},
        {"non-causal 4/4 hd 8, scale 16 (scores past exp's range)", 4, 4, 8, false, false, true, 0, 16.0f, 0, 2, {3, 33, 64}},
        {"non-causal packed qkv 4/4 hd 12 (vision), blocks of 7", 4, 4, 12, false, true, false, 4, 0, 7, 3, {3, 19, 20, 84}},
        {"causal 4/4 hd 64, length 300, blocks of 64", 4, 4, 64, true, false, true, 0, 0, 64, 2, {3, 4, 304}},
        {"non-causal 4/2 hd 64, length 300, packed, sel", 4, 2, 64, false, true, true, 2, 0, 0, 1, {3, 303}},
    };
    tap_seed(0x617474656e74696fULL);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run(&cases[i]);
    blocks_agree();
    usage_errors();
    return tap_done();
}
