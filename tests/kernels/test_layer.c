/* test_layer — the text decoder layer resident on the GPU (mode_text_layer_cuda) against its C
 * reference mode_text_layer_ref on random small layers: 8 query heads over 2 kv heads of 32,
 * hidden 256, 16 experts top-4 of width 64; four sequences of 3, 1, 37 and 150 rows (rope
 * positions from 0 in each); dense bf16 experts, then packed experts
 * of mixed widths (2, 3, 4, 8, 16 bits); key-token column sums for ~30% of the rows.
 *
 * Routing: the GPU's top-k must name the same experts in the same order as the reference on at
 * least 99% of the rows (both choose on f32 logits; their inputs differ by the f32 rounding of
 * sums taken in another order, ~1e-6 relative, which can only swap experts whose logits are that
 * close). Hidden states: on the rows routed alike, ‖Δh_gpu − Δh_ref‖ / ‖Δh_ref‖ ≤ 1e-3 where Δh
 * is the layer's update (the residual itself would hide errors): both sides round the same
 * activations to bf16 (2⁻⁹ relative), and a value near a rounding boundary may round the other
 * way on one side, which changes that element by 2⁻⁸ relative — rare, so the L2 stays near
 * 1e-4; packed experts: ≤ 1e-2, the reference's experts taking unrounded inputs where the GPU
 * rounds them to bf16 (2⁻⁹ each, as test_moe's bf16 tolerance); f32 weights and experts (hub
 * and nn.Linear orientations): ≤ 1e-5, f32 sums in another order only. Column sums: relative L2 ≤ 1e-4
 * (f32 probabilities summed in another order, atomics). Outputs poisoned with NaN first. Then
 * the vision block (mode_vision_block_cuda against mode_vision_block_ref, f32 both: the block's
 * update within rel 1e-5) on three frames of 64, 1 and 100 patches.
 * Skipped without a GPU. */
#include "../../kernels/mode_cuda.h"
#include "../../lib/layer.h"
#include "../qmoe_cases.h"
#include "tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { D = 256, NH = 8, NKV = 2, HD = 32, E = 16, K = 4, I = 64 };

static float frand(void) { return (float)(urand() * 2 - 1); }

static uint16_t *bf16_rand(size_t n, float scale)
{
    uint16_t *w = malloc(sizeof *w * n);
    for (size_t i = 0; i < n; i++) w[i] = mode_f32_to_bf16(frand() * scale);
    return w;
}

static float *f32_rand(size_t n, float lo, float hi)
{
    float *w = malloc(sizeof *w * n);
    for (size_t i = 0; i < n; i++) w[i] = lo + (hi - lo) * (float)urand();
    return w;
}

static float *widen(const uint16_t *b, size_t n)
{
    float *f = malloc(sizeof *f * n);
    for (size_t i = 0; i < n; i++) f[i] = mode_bf16_to_f32(b[i]);
    return f;
}

/* a (r, c) row-major matrix into its transpose (c, r), in place through a copy */
static void transpose(float *a, int r, int c)
{
    float *t = malloc(sizeof *t * (size_t)r * c);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < c; j++) t[(size_t)j * r + i] = a[(size_t)i * c + j];
    memcpy(a, t, sizeof *t * (size_t)r * c);
    free(t);
}

static void *dup(const void *h, size_t n, struct mode_err *err)
{
    void *d = NULL;
    if (upload(&d, h, n, err)) {
        diag("upload: %s", err->msg);
        return NULL;
    }
    return d;
}

static const char *const mode_name[] = {"bf16 dense", "bf16 packed", "f32 hub", "f32 linear", "f32 mixed"};

/* mode: 0 bf16 dense experts, 1 packed, 2 f32 (experts in the hub layout), 3 f32 (nn.Linear),
 * 4 f32 (odd experts nn.Linear, even ones the hub's: linear32_each) */
static void one(int mode)
{
    const bool packed = mode == 1, f32 = mode >= 2;
    struct mode_err err = {0};
    const int64_t seg[] = {0, 3, 4, 41, 191};
    const int n_seg = 4;
    const int64_t n = seg[n_seg];
    const int qd = NH * HD, kvd = NKV * HD;
    struct mode_text_layer_cuda L = {D, NH, NKV, HD, E, K, I, 1e-6f, true, .wq = NULL};
    uint16_t *wq = bf16_rand((size_t)qd * D, 0.1f), *wk = bf16_rand((size_t)kvd * D, 0.1f), *wv = bf16_rand((size_t)kvd * D, 0.1f),
             *wo = bf16_rand((size_t)D * qd, 0.05f);
    float *an = f32_rand(D, 0.5f, 1.5f), *qn = f32_rand(HD, 0.5f, 1.5f), *kn = f32_rand(HD, 0.5f, 1.5f), *fn = f32_rand(D, 0.5f, 1.5f),
          *router = f32_rand((size_t)E * D, -0.2f, 0.2f), *h0 = f32_rand((size_t)n * D, -1, 1), *ang = malloc(sizeof *ang * (size_t)n * HD / 2);
    for (int s = 0; s < n_seg; s++)
        for (int64_t r = seg[s]; r < seg[s + 1]; r++)
            for (int j = 0; j < HD / 2; j++) ang[r * HD / 2 + j] = (float)(r - seg[s]) * powf(10000.f, -2.f * j / HD);
    uint8_t *sel = malloc((size_t)n);
    for (int64_t r = 0; r < n; r++) sel[r] = urand() < 0.3;
    struct host_dense hd;
    struct host_layer hp;
    static const int widths[] = {2, 3, 4, 8, 16};
    make_dense(&hd, E, D, I);
    if (packed) make_layer(&hp, E, D, I, 64, 32, widths, 5);
    /* the reference */
    L.wq = wq, L.wk = wk, L.wv = wv, L.wo = wo, L.attn_norm = an, L.q_norm = qn, L.k_norm = kn, L.ffn_norm = fn, L.router = router;
    L.experts = hd.L, L.packed = packed ? &hp.L : NULL, L.f32 = f32, L.linear32 = mode == 3;
    /* f32: the same values as f32 arrays; experts transposed per expert for nn.Linear */
    float *fq = NULL, *fk = NULL, *fv = NULL, *fo = NULL, *fgu = NULL, *fdn = NULL;
    uint8_t lin_each[E];
    for (int e = 0; e < E; e++) lin_each[e] = (uint8_t)(e & 1);
    if (mode == 4) L.linear32_each = lin_each;
    if (f32) {
        fq = widen(wq, (size_t)qd * D), fk = widen(wk, (size_t)kvd * D), fv = widen(wv, (size_t)kvd * D), fo = widen(wo, (size_t)D * qd);
        fgu = widen(hd.gu, (size_t)E * D * 2 * I), fdn = widen(hd.dn, (size_t)E * I * D);
        for (int e = 0; e < E; e++)
            if (mode == 3 || (mode == 4 && lin_each[e])) {
                transpose(fgu + (size_t)e * D * 2 * I, D, 2 * I);
                transpose(fdn + (size_t)e * I * D, I, D);
            }
        L.wq = fq, L.wk = fk, L.wv = fv, L.wo = fo, L.gate_up32 = fgu, L.down32 = fdn;
    }
    float *h_ref = malloc(sizeof *h_ref * (size_t)n * D), *w_ref = malloc(sizeof *w_ref * (size_t)n * K), *cs_ref = malloc(sizeof *cs_ref * (size_t)n);
    int32_t *i_ref = malloc(sizeof *i_ref * (size_t)n * K);
    memcpy(h_ref, h0, sizeof *h_ref * (size_t)n * D);
    float *mx_ref = malloc(sizeof *mx_ref * (size_t)n * D), *mo_ref = malloc(sizeof *mo_ref * (size_t)n * D);
    struct mode_text_rows_cuda rows = {n, n_seg, seg, ang, sel, cs_ref, NULL, mx_ref, mo_ref};
    int rc = mode_text_layer_ref(&L, &rows, h_ref, i_ref, w_ref, &err);
    ok(!rc, "%s: reference %s", mode_name[mode], rc ? err.msg : "");
    if (mode == 4) { /* the same experts all in the hub layout: the same layer */
        struct mode_text_layer_cuda Lh = L;
        float *hgu = widen(hd.gu, (size_t)E * D * 2 * I), *hdn = widen(hd.dn, (size_t)E * I * D), *hh = malloc(sizeof *hh * (size_t)n * D),
              *hw = malloc(sizeof *hw * (size_t)n * K), *hcs = malloc(sizeof *hcs * (size_t)n);
        int32_t *hi = malloc(sizeof *hi * (size_t)n * K);
        Lh.gate_up32 = hgu, Lh.down32 = hdn, Lh.linear32 = false, Lh.linear32_each = NULL;
        memcpy(hh, h0, sizeof *hh * (size_t)n * D);
        struct mode_text_rows_cuda hrows = {n, n_seg, seg, ang, sel, hcs, NULL, NULL, NULL};
        const int hrc = mode_text_layer_ref(&Lh, &hrows, hh, hi, hw, &err);
        const double e = hrc ? INFINITY : tap_rel_l2(h_ref, hh, (size_t)(n * D));
        ok(e <= 1e-6, "%s: the reference's layer = the hub layout's (rel %.2g)", mode_name[mode], e);
        free(hgu), free(hdn), free(hh), free(hw), free(hcs), free(hi);
    }
    /* the GPU */
    struct mode_qmoe_layer dp;
    void *dqw = NULL, *dqz = NULL, *dsc = NULL, *doff = NULL, *dbits = NULL;
    if (packed) {
        dqw = dup(hp.qw, hp.n_qw * 4, &err), dqz = dup(hp.qz, hp.n_qz * 4, &err), dsc = dup(hp.sc, hp.n_sc * 2, &err);
        doff = dup(hp.off, (size_t)E * 9 * 8, &err), dbits = dup(hp.bits, (size_t)E, &err);
        dp = (struct mode_qmoe_layer){E, D, I, 64, 32, dqw, dqz, dsc, doff, dbits};
    }
    struct mode_text_layer_cuda G = L;
    const size_t ws = f32 ? 4 : 2;
    G.wq = dup(L.wq, (size_t)qd * D * ws, &err), G.wk = dup(L.wk, (size_t)kvd * D * ws, &err), G.wv = dup(L.wv, (size_t)kvd * D * ws, &err);
    G.wo = dup(L.wo, (size_t)D * qd * ws, &err);
    if (f32) G.gate_up32 = dup(fgu, (size_t)E * D * 2 * I * 4, &err), G.down32 = dup(fdn, (size_t)E * I * D * 4, &err);
    G.attn_norm = dup(an, D * 4, &err), G.q_norm = dup(qn, HD * 4, &err), G.k_norm = dup(kn, HD * 4, &err), G.ffn_norm = dup(fn, D * 4, &err);
    G.router = dup(router, (size_t)E * D * 4, &err);
    G.experts.gate_up = dup(hd.gu, (size_t)E * D * 2 * I * 2, &err), G.experts.down = dup(hd.dn, (size_t)E * I * D * 2, &err);
    G.packed = packed ? &dp : NULL;
    float *poison = malloc(sizeof *poison * (size_t)n * K);
    for (int64_t z = 0; z < n * K; z++) poison[z] = NAN;
    float *d_h = dup(h0, sizeof *h0 * (size_t)n * D, &err), *d_ang = dup(ang, sizeof *ang * (size_t)n * HD / 2, &err);
    float *d_w = dup(poison, sizeof *poison * (size_t)n * K, &err), *d_cs = dup(poison, sizeof *poison * (size_t)n, &err);
    int32_t *d_i = dup(poison, sizeof *poison * (size_t)n * K, &err);
    uint8_t *d_sel = dup(sel, (size_t)n, &err);
    const size_t wb = mode_text_layer_work_bytes(&G, n);
    void *d_work = NULL;
    rc = wb ? mode_cuda_malloc(&d_work, wb, &err) : mode_err_set(&err, MODE_EUSAGE, "no work size");
    float *poison_nd = malloc(sizeof *poison_nd * (size_t)n * D);
    for (int64_t z = 0; z < n * D; z++) poison_nd[z] = NAN;
    float *d_mx = dup(poison_nd, sizeof *poison_nd * (size_t)n * D, &err), *d_mo = dup(poison_nd, sizeof *poison_nd * (size_t)n * D, &err);
    struct mode_text_rows_cuda drows = {n, n_seg, seg, d_ang, d_sel, d_cs, NULL, d_mx, d_mo};
    struct mode_text_layer_times t;
    if (!rc) rc = mode_text_layer_cuda(&G, &drows, d_h, d_i, d_w, d_work, &t, NULL, &err);
    ok(!rc, "%s: mode_text_layer_cuda %s", mode_name[mode], rc ? err.msg : "");
    float *h_gpu = malloc(sizeof *h_gpu * (size_t)n * D), *w_gpu = malloc(sizeof *w_gpu * (size_t)n * K), *cs_gpu = malloc(sizeof *cs_gpu * (size_t)n);
    int32_t *i_gpu = malloc(sizeof *i_gpu * (size_t)n * K);
    if (!rc) rc = mode_cuda_download(h_gpu, d_h, sizeof *h_gpu * (size_t)n * D, &err);
    if (!rc) rc = mode_cuda_download(i_gpu, d_i, sizeof *i_gpu * (size_t)n * K, &err);
    if (!rc) rc = mode_cuda_download(w_gpu, d_w, sizeof *w_gpu * (size_t)n * K, &err);
    if (!rc) rc = mode_cuda_download(cs_gpu, d_cs, sizeof *cs_gpu * (size_t)n, &err);
    float *mx_gpu = malloc(sizeof *mx_gpu * (size_t)n * D), *mo_gpu = malloc(sizeof *mo_gpu * (size_t)n * D);
    if (!rc) rc = mode_cuda_download(mx_gpu, d_mx, sizeof *mx_gpu * (size_t)n * D, &err);
    if (!rc) rc = mode_cuda_download(mo_gpu, d_mo, sizeof *mo_gpu * (size_t)n * D, &err);
    if (!rc) {
        int64_t same = 0;
        double num = 0, den = 0, wnum = 0, wden = 0, onum = 0, oden = 0;
        for (int64_t r = 0; r < n; r++) {
            if (memcmp(i_gpu + r * K, i_ref + r * K, sizeof *i_gpu * K)) continue;
            same++;
            for (int c = 0; c < D; c++) {
                const double d = (double)mo_gpu[r * D + c] - mo_ref[r * D + c];
                onum += d * d, oden += (double)mo_ref[r * D + c] * mo_ref[r * D + c];
            }
            for (int c = 0; c < D; c++) {
                const double dg = (double)h_gpu[r * D + c] - h0[r * D + c], dr = (double)h_ref[r * D + c] - h0[r * D + c];
                num += (dg - dr) * (dg - dr), den += dr * dr;
            }
            for (int j = 0; j < K; j++) {
                const double d = (double)w_gpu[r * K + j] - w_ref[r * K + j];
                wnum += d * d, wden += (double)w_ref[r * K + j] * w_ref[r * K + j];
            }
        }
        const double e_h = isnan(num) ? INFINITY : sqrt(num / den), e_w = isnan(wnum) ? INFINITY : sqrt(wnum / wden);
        const double tol = packed ? 1e-2 : f32 ? 1e-5 : 1e-3;
        ok(same * 100 >= n * 99, "%s: routing equal on %lld of %lld rows", mode_name[mode], (long long)same, (long long)n);
        ok(e_h <= tol, "%s: layer update rel %.2g (tol %g)", mode_name[mode], e_h, tol);
        ok(e_w <= 1e-5, "%s: routing weights rel %.2g", mode_name[mode], e_w);
        /* the MoE block's input: the post-attention norm of rows the attention made alike to the
         * update's tolerance; its output on the rows routed alike, the same */
        const double e_mx = tap_rel_l2(mx_gpu, mx_ref, (size_t)(n * D)), e_mo = isnan(onum) ? INFINITY : sqrt(onum / oden);
        ok(e_mx <= tol, "%s: the MoE input rel %.2g (tol %g)", mode_name[mode], e_mx, tol);
        ok(e_mo <= tol, "%s: the MoE output rel %.2g (tol %g)", mode_name[mode], e_mo, tol);
        const double e_c = tap_rel_l2(cs_gpu, cs_ref, (size_t)n);
        ok(e_c <= 1e-4, "%s: attention column sums rel %.2g", mode_name[mode], e_c);
        ok(t.total > 0 && t.attn_proj >= 0 && t.moe >= 0, "%s: part times %.3f ms in all", mode_name[mode], t.total);
    }
    mode_cuda_free(d_mx), mode_cuda_free(d_mo), free(poison_nd), free(mx_ref), free(mo_ref), free(mx_gpu), free(mo_gpu);
    mode_cuda_free(d_work), mode_cuda_free(d_h), mode_cuda_free(d_ang), mode_cuda_free(d_w), mode_cuda_free(d_cs), mode_cuda_free(d_i);
    mode_cuda_free(d_sel), mode_cuda_free((void *)G.wq), mode_cuda_free((void *)G.wk), mode_cuda_free((void *)G.wv), mode_cuda_free((void *)G.wo);
    mode_cuda_free((void *)G.attn_norm), mode_cuda_free((void *)G.q_norm), mode_cuda_free((void *)G.k_norm), mode_cuda_free((void *)G.ffn_norm);
    mode_cuda_free((void *)G.router), mode_cuda_free((void *)G.experts.gate_up), mode_cuda_free((void *)G.experts.down);
    mode_cuda_free((void *)G.gate_up32), mode_cuda_free((void *)G.down32);
    free(fq), free(fk), free(fv), free(fo), free(fgu), free(fdn);
    mode_cuda_free(dqw), mode_cuda_free(dqz), mode_cuda_free(dsc), mode_cuda_free(doff), mode_cuda_free(dbits);
    if (packed) free_layer(&hp);
    free_dense(&hd);
    free(wq), free(wk), free(wv), free(wo), free(an), free(qn), free(kn), free(fn), free(router), free(h0), free(ang), free(sel);
    free(h_ref), free(w_ref), free(cs_ref), free(i_ref), free(h_gpu), free(w_gpu), free(cs_gpu), free(i_gpu), free(poison);
}

/* the vision block: f32 both sides, frames of 64, 1 and 100 patches (every row in a frame, as
 * the runtime's are: the attention writes no other row) */
static void vision(void)
{
    struct mode_err err = {0};
    enum { VE = 96, VH = 4, VF = 192, VHD = VE / VH };
    const int64_t seg[] = {0, 64, 65, 165};
    const int n_seg = 3;
    const int64_t p = seg[n_seg];
    const size_t n[12] = {VE, VE, 3 * VE * VE, 3 * VE, VE * VE, VE, VE, VE, (size_t)VF * VE, VF, (size_t)VE * VF, VE};
    float *hw[12], *dw[12] = {0};
    for (int i = 0; i < 12; i++) {
        const bool norm = i == 0 || i == 6;
        hw[i] = f32_rand(n[i], norm ? 0.5f : -0.1f, norm ? 1.5f : 0.1f);
        dw[i] = dup(hw[i], n[i] * 4, &err);
    }
    float *x = f32_rand((size_t)p * VE, -1, 1), *ang = malloc(sizeof *ang * (size_t)p * VHD / 2), *want = malloc(sizeof *want * (size_t)p * VE),
          *got = malloc(sizeof *got * (size_t)p * VE);
    for (int64_t r = 0; r < p; r++)
        for (int j = 0; j < VHD / 2; j++) ang[r * VHD / 2 + j] = (float)(r % 11) * powf(10000.f, -2.f * (j % (VHD / 4)) / (VHD / 2));
    memcpy(want, x, sizeof *want * (size_t)p * VE);
    struct mode_vision_block_cuda H = {VE, VH, VF, 1e-6f, hw[0], hw[1], hw[2], hw[3], hw[4], hw[5], hw[6], hw[7], hw[8], hw[9], hw[10], hw[11]};
    int rc = mode_vision_block_ref(&H, p, seg, n_seg, ang, want, 512, NULL, &err);
    ok(!rc, "vision: reference %s", rc ? err.msg : "");
    struct mode_vision_block_cuda G = {VE, VH, VF, 1e-6f, dw[0], dw[1], dw[2], dw[3], dw[4], dw[5], dw[6], dw[7], dw[8], dw[9], dw[10], dw[11]};
    float *d_x = dup(x, sizeof *x * (size_t)p * VE, &err), *d_ang = dup(ang, sizeof *ang * (size_t)p * VHD / 2, &err);
    void *work = NULL;
    const size_t wb = mode_vision_block_work_bytes(&G, p);
    rc = wb ? mode_cuda_malloc(&work, wb, &err) : mode_err_set(&err, MODE_EUSAGE, "no work size");
    if (!rc) rc = mode_vision_block_cuda(&G, p, seg, n_seg, d_ang, d_x, work, NULL, &err);
    if (!rc) rc = mode_cuda_download(got, d_x, sizeof *got * (size_t)p * VE, &err);
    ok(!rc, "vision: mode_vision_block_cuda %s", rc ? err.msg : "");
    if (!rc) {
        /* the block's update, not the residual */
        double num = 0, den = 0;
        for (size_t z = 0; z < (size_t)p * VE; z++) {
            const double dg = (double)got[z] - x[z], dr = (double)want[z] - x[z];
            num += (dg - dr) * (dg - dr), den += dr * dr;
        }
        const double e = isnan(num) ? INFINITY : sqrt(num / den);
        ok(e <= 1e-5, "vision: block update rel %.2g", e);
    }
    mode_cuda_free(work), mode_cuda_free(d_x), mode_cuda_free(d_ang);
    for (int i = 0; i < 12; i++) free(hw[i]), mode_cuda_free(dw[i]);
    free(x), free(ang), free(want), free(got);
}

int main(void)
{
    struct mode_err err;
    if (!mode_cuda_built()) tap_skip_all("built without CUDA");
    if (mode_cuda_available(&err)) tap_skip_all(err.msg);
    for (int mode = 0; mode < 5; mode++) one(mode);
    vision();
    /* argument checks */
    struct mode_text_layer_cuda bad = {D, NH, 3, HD, E, K, I, 1e-6f, true, .wq = NULL};
    ok(mode_text_layer_work_bytes(&bad, 10) == 0, "8 heads over 3 kv heads refused");
    return tap_done();
}
