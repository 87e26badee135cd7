/* test_attn — mode_attention_cuda (kernels/attn.cu) against mode_attention_ref (lib/attn.c) on
 * random q, k, v (fixed printed seed): head_dim 128 with GQA 32/4 (Qwen3-VL-30B's text
 * attention), 64, 72 and 80 with 16/16 heads and q, k, v packed in one row (the vision tower),
 * 256 (past 48 KiB of shared memory) and 2; segment lengths 1, 17, 64, 300 and 1100 mixed, causal
 * and not, and 40 segments (more than one launch's worth); selection masks of ~30% with the
 * colsum compared; strides wider than the rows. o and colsum are NaN-poisoned on the device
 * first; the segments start at row 3 and two rows follow the last, so rows 0..2 must stay NaN
 * in o and be 0 in colsum, the rows past the end NaN in both, and no stride padding written.
 * Then one case run inside CUDA graphs (mode_cuda_bench captures it) gives the same outputs; the
 * times are printed, never asserted. Skipped without CUDA or a device.
 *
 * Tolerance: ‖gpu − ref‖/‖ref‖ ≤ REL_L2 = 1e-5 for o and for colsum, and per element
 * |gpu − ref| ≤ ATOL + RTOL·|ref| (1e-5, 1e-4). Both sides are f32 with the same operations in
 * another order: the dot products over head_dim ≤ 256 (OpenBLAS blocks them, the kernel sums
 * sequentially: ~sqrt(256)·2^-24 ≈ 1e-6 relative on a score), the softmax sum over ≤ 1100 keys
 * (online here, with each rescale by exp(m_old − m_new) adding an ulp), p·v over the same keys,
 * and colsum's atomic additions over heads and query tiles in any order (its last bits vary
 * from run to run). Expected ~1e-7–1e-6; a wrong mask, head mapping or segment gives O(1). */
#include "../../kernels/mode_cuda.h"
#include "../../lib/attn.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REL_L2 1e-5
#define ATOL 1e-5
#define RTOL 1e-4
#define MAX_SEG 48
#define FIRST_ROW 3 /* rows 0..2 belong to no segment */
#define TAIL 2      /* rows past the last segment */

static float frand(void) { return (float)((double)(tap_rand() >> 11) / 9007199254740992.0 * 2 - 1); }

struct gcase {
    const char *name;
    int n_head, n_head_kv, head_dim;
    bool causal, packed, with_sel;
    float qmul; /* q scaled by this: sharper softmax rows */
    int n_seg;
    int64_t len[MAX_SEG];
};

/* host and device arrays of one case */
struct bufs {
    struct mode_attn_shape a;
    int64_t seg[MAX_SEG + 1], rows, nq, nk, nv; /* floats of q, k, v from their pointers */
    float *h_qkv, *q, *k, *v, *want_o, *want_cs;
    uint8_t *sel;
    float *d_qkv, *d_q, *d_k, *d_v, *d_o, *d_cs;
    uint8_t *d_sel;
};

static int compare(const float *got, const float *want, const uint8_t *mask, int64_t n, int64_t ld, const char *what, const char *name)
{
    double num = 0, den = 0, worst = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!mask[i]) continue;
        const double d = fabs((double)got[i] - want[i]);
        num += d * d, den += (double)want[i] * want[i];
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
        if (!(d <= ATOL + RTOL * fabs(want[i])) && bad++ < 3)
            diag("%s: %s[%lld][%lld] = %.9g, want %.9g", name, what, (long long)(i / ld), (long long)(i % ld), got[i], want[i]);
    }
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    return ok(!bad && rel <= REL_L2, "%s: %s (rel %.2g, worst %.2g)", name, what, rel, worst);
}

static int setup(const struct gcase *t, struct bufs *b, struct mode_err *err)
{
    memset(b, 0, sizeof *b);
    const int hd = t->head_dim;
    const int64_t qd = (int64_t)t->n_head * hd, kvd = (int64_t)t->n_head_kv * hd;
    b->seg[0] = FIRST_ROW;
    for (int s = 0; s < t->n_seg; s++) b->seg[s + 1] = b->seg[s] + t->len[s];
    b->rows = b->seg[t->n_seg] + TAIL;
    struct mode_attn_shape a = {t->n_head, t->n_head_kv, hd, qd + 3, kvd + 1, kvd + 6, qd + 5, t->causal, 1.0f / sqrtf((float)hd)};
    if (t->packed) a.ld_q = a.ld_k = a.ld_v = qd + 2 * kvd; /* the vision tower's qkv rows */
    const size_t total = (size_t)b->rows * (size_t)(t->packed ? a.ld_q : a.ld_q + a.ld_k + a.ld_v);
    b->a = a;
    b->h_qkv = malloc(sizeof *b->h_qkv * total);
    for (size_t i = 0; i < total; i++) b->h_qkv[i] = frand();
    const int64_t oq = 0, ok_ = t->packed ? qd : b->rows * a.ld_q, ov = t->packed ? qd + kvd : b->rows * (a.ld_q + a.ld_k);
    b->q = b->h_qkv + oq, b->k = b->h_qkv + ok_, b->v = b->h_qkv + ov;
    for (int64_t r = 0; r < b->rows; r++)
        for (int64_t j = 0; j < qd; j++) b->q[r * a.ld_q + j] *= t->qmul;
    if (t->with_sel) {
        b->sel = malloc((size_t)b->rows);
        for (int64_t r = 0; r < b->rows; r++) b->sel[r] = tap_rand() % 10 < 3;
    }
    b->want_o = malloc(sizeof *b->want_o * (size_t)(b->rows * a.ld_o));
    b->want_cs = malloc(sizeof *b->want_cs * (size_t)b->rows);
    for (int64_t i = 0; i < b->rows * a.ld_o; i++) b->want_o[i] = NAN;
    for (int64_t i = 0; i < b->rows; i++) b->want_cs[i] = NAN;
    int rc = mode_attention_ref(&b->a, b->q, b->k, b->v, b->seg, t->n_seg, b->sel, b->sel ? b->want_cs : NULL, b->want_o, err);
    if (!rc) rc = mode_cuda_malloc((void **)&b->d_qkv, sizeof(float) * total, err);
    if (!rc) rc = mode_cuda_upload(b->d_qkv, b->h_qkv, sizeof(float) * total, err);
    if (!rc) rc = mode_cuda_malloc((void **)&b->d_o, sizeof(float) * (size_t)(b->rows * a.ld_o), err);
    if (!rc) rc = mode_cuda_malloc((void **)&b->d_cs, sizeof(float) * (size_t)b->rows, err);
    if (!rc && b->sel) rc = mode_cuda_malloc((void **)&b->d_sel, (size_t)b->rows, err);
    if (!rc && b->sel) rc = mode_cuda_upload(b->d_sel, b->sel, (size_t)b->rows, err);
    b->d_q = b->d_qkv + oq, b->d_k = b->d_qkv + ok_, b->d_v = b->d_qkv + ov;
    return rc;
}

/* NaN over the device o and colsum */
static int poison(struct bufs *b, struct mode_err *err)
{
    const int64_t n = b->rows * b->a.ld_o;
    float *nan = malloc(sizeof *nan * (size_t)n);
    for (int64_t i = 0; i < n; i++) nan[i] = NAN;
    int rc = mode_cuda_upload(b->d_o, nan, sizeof *nan * (size_t)n, err);
    if (!rc) rc = mode_cuda_upload(b->d_cs, nan, sizeof *nan * (size_t)b->rows, err);
    free(nan);
    return rc;
}

static void check(const struct gcase *t, struct bufs *b, const char *name)
{
    struct mode_err err = {0};
    const struct mode_attn_shape *a = &b->a;
    const int64_t qd = (int64_t)a->n_head * a->head_dim, no = b->rows * a->ld_o, end = b->seg[t->n_seg];
    float *o = malloc(sizeof *o * (size_t)no), *cs = malloc(sizeof *cs * (size_t)b->rows);
    int rc = mode_cuda_download(o, b->d_o, sizeof *o * (size_t)no, &err);
    if (!rc) rc = mode_cuda_download(cs, b->d_cs, sizeof *cs * (size_t)b->rows, &err);
    if (!is_int(rc, MODE_OK, "%s: outputs read back", name)) diag("%s", err.msg);
    uint8_t *mask = calloc((size_t)no, 1), *rmask = calloc((size_t)b->rows, 1);
    for (int64_t r = FIRST_ROW; r < end; r++) {
        memset(mask + r * a->ld_o, 1, (size_t)qd);
        rmask[r] = 1;
    }
    compare(o, b->want_o, mask, no, a->ld_o, "o", name);
    int64_t written = 0;
    for (int64_t i = 0; i < no; i++) written += !mask[i] && !isnan(o[i]);
    is_int(written, 0, "%s: o still NaN on rows 0..2, past the last segment and in the stride padding", name);
    if (b->sel) {
        compare(cs, b->want_cs, rmask, b->rows, 1, "colsum", name);
        int bad = 0;
        for (int64_t r = 0; r < FIRST_ROW; r++) bad += cs[r] != 0;
        for (int64_t r = end; r < b->rows; r++) bad += !isnan(cs[r]);
        is_int(bad, 0, "%s: colsum 0 on rows 0..2, untouched past the last segment", name);
    }
    free(o), free(cs), free(mask), free(rmask);
}

static void teardown(struct bufs *b)
{
    mode_cuda_free(b->d_qkv), mode_cuda_free(b->d_o), mode_cuda_free(b->d_cs), mode_cuda_free(b->d_sel);
    free(b->h_qkv), free(b->sel), free(b->want_o), free(b->want_cs);
}

static void one(const struct gcase *t)
{
    struct mode_err err = {0};
    struct bufs b;
    int rc = setup(t, &b, &err);
    if (!rc) rc = poison(&b, &err);
    if (!rc) rc = mode_attention_cuda(&b.a, b.d_q, b.d_k, b.d_v, b.seg, t->n_seg, b.d_sel, b.sel ? b.d_cs : NULL, b.d_o, NULL, &err);
    if (!rc) rc = mode_cuda_sync(&err);
    if (!is_int(rc, MODE_OK, "%s: runs", t->name)) diag("%s", err.msg);
    else check(t, &b, t->name);
    teardown(&b);
}

/* the same case captured in CUDA graphs and replayed */
struct graph_ctx {
    const struct gcase *t;
    struct bufs *b;
};

static int run_graph(void *vctx, int v, void *stream, struct mode_err *err)
{
    (void)v;
    struct graph_ctx *c = vctx;
    struct bufs *b = c->b;
    return mode_attention_cuda(&b->a, b->d_q, b->d_k, b->d_v, b->seg, c->t->n_seg, b->d_sel, b->sel ? b->d_cs : NULL, b->d_o, stream, err);
}

static void graphed(const struct gcase *t)
{
    struct mode_err err = {0};
    struct bufs b;
    char name[160];
    snprintf(name, sizeof name, "%s, in CUDA graphs", t->name);
    int rc = setup(t, &b, &err);
    if (!rc) rc = poison(&b, &err);
    struct graph_ctx c = {t, &b};
    double us = 0, graph_us = 0;
    if (!rc) rc = mode_cuda_bench(run_graph, &c, 1, 3, &us, &graph_us, &err);
    if (!is_int(rc, MODE_OK, "%s: captured and replayed", name)) diag("%s", err.msg);
    else {
        diag("%s: %.0f us a call, %.0f us a graph replay (not asserted)", name, us, graph_us);
        check(t, &b, name);
    }
    teardown(&b);
}

static void usage_errors(void)
{
    struct mode_err err;
    float *x = (float *)16; /* never dereferenced: validation comes first */
    const int64_t seg[3] = {0, 8, 4}, ok_seg[3] = {0, 4, 8};
    const struct {
        const char *what, *msg;
        struct mode_attn_shape a;
        const int64_t *seg;
    } bad[] = {
        {"head_dim 65", "head_dim 65 must be even and at most 256", {4, 4, 65, 260, 260, 260, 260, true, 0.125f}, ok_seg},
        {"head_dim 258", "head_dim 258 must be even and at most 256", {4, 4, 258, 1032, 1032, 1032, 1032, true, 0.125f}, ok_seg},
        {"n_head_kv 3 of 32", "n_head 32, n_head_kv 3", {32, 3, 128, 4096, 384, 384, 4096, true, 0.125f}, ok_seg},
        {"ld_k below the kv heads", "ld_k 511 is smaller than its 4 heads of 128", {32, 4, 128, 4096, 511, 512, 4096, true, 0.125f}, ok_seg},
        {"seg not ascending", "seg[2] = 4 is below seg[1] = 8", {32, 4, 128, 4096, 512, 512, 4096, true, 0.125f}, seg},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        mode_err_clear(&err);
        is_int(mode_attention_cuda(&bad[i].a, x, x, x, bad[i].seg, 2, NULL, NULL, x, NULL, &err), MODE_EUSAGE, "%s: MODE_EUSAGE", bad[i].what);
        has_str(err.msg, bad[i].msg, "... says so");
    }
}

int main(void)
{
    struct mode_err err = {0};
    if (!mode_cuda_built()) tap_skip_all("built without CUDA");
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    static struct gcase cases[] = {
        {"text 32/4 hd 128 causal, lengths 1 17 64 300 1100", 32, 4, 128, true, false, true, 3.0f, 5, {1, 17, 64, 300, 1100}},
        {"text 32/4 hd 128 non-causal, lengths 300 1 1100 17 64", 32, 4, 128, false, false, true, 3.0f, 5, {300, 1, 1100, 17, 64}},
        {"vision 16/16 hd 80 packed, lengths 64 300 1 1100 17", 16, 16, 80, false, true, true, 1.0f, 5, {64, 300, 1, 1100, 17}},
        {"vision 16/16 hd 64 packed, lengths 1100 17, no sel", 16, 16, 64, false, true, false, 2.0f, 2, {1100, 17}},
        {"16/16 hd 72 causal packed, lengths 64 1 300", 16, 16, 72, true, true, true, 2.0f, 3, {64, 1, 300}},
        {"4/2 hd 256 causal, lengths 33 1 5 300 (over 48 KiB of shared memory)", 4, 2, 256, true, false, true, 1.0f, 4, {33, 1, 5, 300}},
        {"4/1 hd 2 non-causal, lengths 1 2 3 31 33", 4, 1, 2, false, false, true, 4.0f, 5, {1, 2, 3, 31, 33}},
        {"8/2 hd 128 causal, 40 segments of lengths 1..40", 8, 2, 128, true, false, true, 2.0f, 40, {0}},
    };
    struct gcase *many = &cases[sizeof cases / sizeof *cases - 1];
    for (int s = 0; s < many->n_seg; s++) many->len[s] = 1 + (s * 7) % 40;
    tap_seed(0x6174746e63756461ULL);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) one(&cases[i]);
    graphed(&cases[0]);
    usage_errors();
    return tap_done();
}
