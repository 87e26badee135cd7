/* bench_layer — the forward pass of one Qwen3-VL-30B-A3B-shaped text layer resident on the GPU
 * (mode_text_layer_cuda: hidden 2048, 32 query heads and 4 kv heads of 128, 128 experts top-8 of
 * width 768, random weights) over 65,536 calibration tokens as 128 sequences of
 * 512, with the key-token column sums route-trace asks for on 30% of the rows, in both
 * precisions (bf16 tensor cores; f32, the arithmetic route-trace uses); against the CPU
 * path measured in the same run (mode_text_layer_ref: OpenBLAS products, the runtime's
 * algorithm) on one sequence of 512 and scaled by 128 — the work is linear in the number of
 * sequences of equal length. Then an estimate of the whole MODE pipeline on Qwen3-VL-30B-A3B
 * with 128 calibration samples of 512 tokens, each term a count times a time measured here or
 * given on the command line (bench_gptq's numbers), the assumptions printed beside it.
 *
 * GPU times: events around each part inside the call (mode_text_layer_times), median of REPEATS
 * after one warm-up call. Flops counted: projections 2·n·d·(qd + 2·kvd) and 2·n·qd·d, attention
 * 2·L·(L+1)·hd·heads per causal sequence, router 2·n·d·E, experts 2·n·k·3·d·i.
 *
 *   make CUDA=1 bench && build/bench/bench_layer [--threads N] [REPEATS [GPTQ_LAYER_MS [HESSIANS_MS]]]
 *   (--threads: the pool's threads for the CPU row, default 1; the row also prints OpenBLAS's
 *   sgemm rate on one thread and mode_gemm's on N, measured in the same run.)
 *   (GPTQ_LAYER_MS: bench_gptq's "layer, all 128 experts" at one width; HESSIANS_MS: its
 *   "hessians" row; without them the pack estimate says so.) Without a GPU: the CPU row only.
 */
#include "../../kernels/mode_cuda.h"
#include "../../lib/layer.h"
#include "../../lib/ops.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { D = 2048, NH = 32, NKV = 4, HD = 128, E = 128, K = 8, I = 768, SEQ = 512, NSEQ = 128, MAXREP = 32 };
enum { N_LAYER = 48, N_BITS = 3 }; /* Qwen3-VL-30B-A3B: 48 layers, all MoE; candidate widths {2,3,4} */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* splitmix64, uniform in [-1, 1) */
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull, z = (z ^ (z >> 27)) * 0x94d049bb133111ebull, z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2 - 1);
}

static uint16_t *bf16_rand(size_t n, float scale)
{
    uint16_t *w = malloc(sizeof *w * n);
    if (w)
        for (size_t i = 0; i < n; i++) w[i] = mode_f32_to_bf16(frand() * scale);
    return w;
}

static float *f32_rand(size_t n, float lo, float hi)
{
    float *w = malloc(sizeof *w * n);
    if (w)
        for (size_t i = 0; i < n; i++) w[i] = lo + (hi - lo) * (frand() + 1) / 2;
    return w;
}

struct host {
    uint16_t *wq, *wk, *wv, *wo, *gu, *dn; /* gu, dn: one expert, replicated */
    float *an, *qn, *kn, *fn, *router;
};

static const double QD = (double)NH * HD, KVD = (double)NKV * HD;

static double flop_proj(double n) { return 2 * n * D * (QD + 2 * KVD); }
static double flop_core(double nseq) { return nseq * 2.0 * SEQ * (SEQ + 1) * HD * NH + 2.0 * nseq * SEQ * QD * D; }
static double flop_router(double n) { return 2 * n * D * E; }
static double flop_moe(double n) { return 2 * n * K * 3.0 * D * I; }

/* rope angles of sequences of SEQ rows, positions from 0 */
static void angles(float *ang, int nseq)
{
    for (int s = 0; s < nseq; s++)
        for (int r = 0; r < SEQ; r++)
            for (int j = 0; j < HD / 2; j++) ang[((size_t)s * SEQ + r) * HD / 2 + j] = (float)r * powf(5000000.f, -2.f * j / HD);
}

static float *widen(const uint16_t *b, size_t n)
{
    float *f = malloc(sizeof *f * n);
    if (f)
        for (size_t i = 0; i < n; i++) f[i] = mode_bf16_to_f32(b[i]);
    return f;
}

/* the CPU path in f32 (the runtime's precision) on one sequence */
static int cpu_row(const struct host *h, double *ms, struct mode_err *err)
{
    const int n = SEQ;
    const size_t qd = (size_t)QD, kvd = (size_t)KVD, ne = (size_t)D * 2 * I, nd = (size_t)I * D;
    float *gu = malloc(sizeof *gu * (size_t)E * ne), *dn = malloc(sizeof *dn * (size_t)E * nd), *eg = widen(h->gu, ne), *ed = widen(h->dn, nd);
    float *wq = widen(h->wq, qd * D), *wk = widen(h->wk, kvd * D), *wv = widen(h->wv, kvd * D), *wo = widen(h->wo, D * qd);
    float *x = f32_rand((size_t)n * D, -1, 1), *ang = malloc(sizeof *ang * (size_t)n * HD / 2), *w = malloc(sizeof *w * (size_t)n * K),
          *cs = malloc(sizeof *cs * (size_t)n);
    int32_t *idx = malloc(sizeof *idx * (size_t)n * K);
    uint8_t *sel = malloc((size_t)n);
    int rc = MODE_OK;
    if (!gu || !dn || !eg || !ed || !wq || !wk || !wv || !wo || !x || !ang || !w || !cs || !idx || !sel)
        rc = mode_err_oom(err, (size_t)E * (ne + nd) * 4, "the CPU layer");
    if (!rc) {
        for (int e = 0; e < E; e++) {
            memcpy(gu + (size_t)e * ne, eg, sizeof *gu * ne);
            memcpy(dn + (size_t)e * nd, ed, sizeof *dn * nd);
        }
        angles(ang, 1);
        for (int r = 0; r < n; r++) sel[r] = r % 10 < 3;
        const int64_t seg[2] = {0, n};
        struct mode_text_layer_cuda L = {D, NH, NKV, HD, E, K, I, 1e-6f, true, true, wq, wk, wv, wo, h->an, h->qn, h->kn, h->fn, h->router,
                                         {0, 0, 0, NULL, NULL}, NULL, gu, dn, false, NULL};
        const struct mode_text_rows_cuda rows = {n, 1, seg, ang, sel, cs, NULL, NULL, NULL};
        const double t0 = now();
        rc = mode_text_layer_ref(&L, &rows, x, idx, w, err);
        *ms = (now() - t0) * 1e3;
    }
    free(gu), free(dn), free(eg), free(ed), free(wq), free(wk), free(wv), free(wo), free(x), free(ang), free(w), free(cs), free(idx), free(sel);
    return rc;
}

struct gpu {
    struct mode_text_layer_cuda L;
    void *work;
    float *h, *w, *ang, *cs;
    int32_t *idx;
    uint8_t *sel;
};

static void gpu_free(struct gpu *g)
{
    mode_cuda_free((void *)g->L.wq), mode_cuda_free((void *)g->L.wk), mode_cuda_free((void *)g->L.wv), mode_cuda_free((void *)g->L.wo);
    mode_cuda_free((void *)g->L.attn_norm), mode_cuda_free((void *)g->L.q_norm), mode_cuda_free((void *)g->L.k_norm);
    mode_cuda_free((void *)g->L.ffn_norm), mode_cuda_free((void *)g->L.router), mode_cuda_free((void *)g->L.experts.gate_up);
    mode_cuda_free((void *)g->L.experts.down), mode_cuda_free((void *)g->L.gate_up32), mode_cuda_free((void *)g->L.down32);
    mode_cuda_free(g->work), mode_cuda_free(g->h), mode_cuda_free(g->w), mode_cuda_free(g->ang);
    mode_cuda_free(g->cs), mode_cuda_free(g->idx), mode_cuda_free(g->sel);
}

static int put(void **d, const void *h, size_t n, struct mode_err *err)
{
    int rc = mode_cuda_malloc(d, n, err);
    return rc || !h ? rc : mode_cuda_upload(*d, h, n, err);
}

/* a host bf16 array on the device as bf16, or widened to f32 */
static int put_w(void **d, const uint16_t *h, size_t n, bool f32, struct mode_err *err)
{
    if (!f32) return put(d, h, n * 2, err);
    float *f = widen(h, n);
    int rc = f ? put(d, f, n * 4, err) : mode_err_oom(err, n * 4, "weights");
    free(f);
    return rc;
}

static int gpu_make(const struct host *h, bool f32, struct gpu *g, struct mode_err *err)
{
    memset(g, 0, sizeof *g);
    const size_t n = (size_t)SEQ * NSEQ, qd = (size_t)QD, kvd = (size_t)KVD, ne = (size_t)D * 2 * I, nd = (size_t)I * D, es = f32 ? 4 : 2;
    g->L = (struct mode_text_layer_cuda){D, NH, NKV, HD, E, K, I, 1e-6f, true, f32, .wq = NULL};
    void *p[11] = {0};
    int rc;
    if ((rc = put_w(&p[0], h->wq, qd * D, f32, err)) || (rc = put_w(&p[1], h->wk, kvd * D, f32, err)) ||
        (rc = put_w(&p[2], h->wv, kvd * D, f32, err)) || (rc = put_w(&p[3], h->wo, D * qd, f32, err)) || (rc = put(&p[4], h->an, D * 4, err)) ||
        (rc = put(&p[5], h->qn, HD * 4, err)) || (rc = put(&p[6], h->kn, HD * 4, err)) || (rc = put(&p[7], h->fn, D * 4, err)) ||
        (rc = put(&p[8], h->router, (size_t)E * D * 4, err)) || (rc = put_w(&p[9], h->gu, ne, f32, err)) || (rc = put_w(&p[10], h->dn, nd, f32, err)))
        goto out;
    /* one expert's weights in every expert: the products cost the same */
    void *gu = NULL, *dn = NULL;
    if ((rc = put(&gu, NULL, (size_t)E * ne * es, err)) || (rc = put(&dn, NULL, (size_t)E * nd * es, err))) {
        mode_cuda_free(gu), mode_cuda_free(dn);
        goto out;
    }
    for (int e = 0; e < E && !rc; e++) {
        rc = mode_cuda_copy((char *)gu + (size_t)e * ne * es, p[9], ne * es, err);
        if (!rc) rc = mode_cuda_copy((char *)dn + (size_t)e * nd * es, p[10], nd * es, err);
    }
    mode_cuda_free(p[9]), mode_cuda_free(p[10]);
    p[9] = gu, p[10] = dn;
out:
    g->L.wq = p[0], g->L.wk = p[1], g->L.wv = p[2], g->L.wo = p[3], g->L.attn_norm = p[4], g->L.q_norm = p[5], g->L.k_norm = p[6];
    g->L.ffn_norm = p[7], g->L.router = p[8];
    if (f32) g->L.gate_up32 = p[9], g->L.down32 = p[10];
    else g->L.experts = (struct mode_moe_dense){E, D, I, p[9], p[10]};
    if (rc) return rc;
    float *ang = malloc(sizeof *ang * n * HD / 2);
    uint8_t *sel = malloc(n);
    if (!ang || !sel) {
        free(ang), free(sel);
        return mode_err_oom(err, n * HD * 2, "angles");
    }
    angles(ang, NSEQ);
    for (size_t r = 0; r < n; r++) sel[r] = r % 10 < 3;
    const size_t wb = mode_text_layer_work_bytes(&g->L, (int64_t)n);
    if (!wb) rc = mode_err_set(err, MODE_EUSAGE, "no work size");
    if (!rc) rc = put(&g->work, NULL, wb, err);
    if (!rc) rc = put((void **)&g->h, NULL, n * D * 4, err);
    if (!rc) rc = put((void **)&g->w, NULL, n * K * 4, err);
    if (!rc) rc = put((void **)&g->idx, NULL, n * K * 4, err);
    if (!rc) rc = put((void **)&g->cs, NULL, n * 4, err);
    if (!rc) rc = put((void **)&g->ang, ang, n * HD / 2 * 4, err);
    if (!rc) rc = put((void **)&g->sel, sel, n, err);
    free(ang), free(sel);
    return rc;
}

/* OpenBLAS's sgemm rate on this machine, GFLOP/s: mode_gemm of 2048^3 (its tiles of 256 rows,
 * one OpenBLAS call each) on one thread, and on the pool's `threads`; the best of three */
static void sgemm_rate(int threads, double *one, double *pool)
{
    enum { S = 2048 };
    float *a = f32_rand((size_t)S * S, -1, 1), *b = f32_rand((size_t)S * S, -1, 1), *c = malloc(sizeof *c * (size_t)S * S);
    *one = *pool = -1;
    if (!a || !b || !c) return;
    const double fl = 2.0 * S * S * S;
    struct mode_err err = {0};
    for (int q = 0; q < 2; q++) {
        if (mode_ops_threads(q ? threads : 1, &err)) break;
        for (int r = 0; r < 3; r++) {
            const double t0 = now();
            mode_gemm_cpu(S, S, S, a, S, b, S, true, 0.0f, c, S);
            const double g = fl / ((now() - t0) * 1e9);
            if (g > (q ? *pool : *one)) *(q ? pool : one) = g;
        }
    }
    free(a), free(b), free(c);
}

int main(int argc, char **argv)
{
    int threads = 1;
    if (argc > 2 && !strcmp(argv[1], "--threads")) threads = atoi(argv[2]), argc -= 2, argv += 2;
    struct mode_err terr = {0};
    if (mode_ops_threads(threads, &terr)) {
        fprintf(stderr, "bench_layer: %s\n", terr.msg);
        return 69;
    }
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? (atoi(argv[1]) < MAXREP ? atoi(argv[1]) : MAXREP) : 5;
    const double gptq_ms = argc > 2 ? atof(argv[2]) : 0, hess_ms = argc > 3 ? atof(argv[3]) : 0;
    struct mode_err err = {0};
    struct host h;
    const size_t qd = (size_t)QD, kvd = (size_t)KVD;
    h.wq = bf16_rand(qd * D, 0.03f), h.wk = bf16_rand(kvd * D, 0.03f), h.wv = bf16_rand(kvd * D, 0.03f), h.wo = bf16_rand(D * qd, 0.02f);
    h.gu = bf16_rand((size_t)D * 2 * I, 0.03f), h.dn = bf16_rand((size_t)I * D, 0.03f);
    h.an = f32_rand(D, 0.5f, 1.5f), h.qn = f32_rand(HD, 0.5f, 1.5f), h.kn = f32_rand(HD, 0.5f, 1.5f), h.fn = f32_rand(D, 0.5f, 1.5f);
    h.router = f32_rand((size_t)E * D, -0.05f, 0.05f);
    if (!h.wq || !h.wk || !h.wv || !h.wo || !h.gu || !h.dn || !h.an || !h.qn || !h.kn || !h.fn || !h.router) {
        fprintf(stderr, "bench_layer: out of memory\n");
        return 1;
    }
    const double n = (double)SEQ * NSEQ;
    /* the GPU, bf16 then f32 */
    char dev[1100] = "";
    double part[5][MAXREP], med[2][5];
    for (int q = 0; q < 2; q++)
        for (int p = 0; p < 5; p++) med[q][p] = -1;
    int rc = mode_cuda_available(&err);
    if (!rc) rc = mode_cuda_describe(dev, sizeof dev, &err);
    float *h0 = NULL;
    if (!rc && !(h0 = f32_rand((size_t)n * D, -1, 1))) rc = mode_err_oom(&err, (size_t)n * D * 4, "hidden states");
    int64_t seg[NSEQ + 1];
    for (int s = 0; s <= NSEQ; s++) seg[s] = (int64_t)s * SEQ;
    for (int q = 0; q < 2 && !rc; q++) {
        struct gpu g;
        rc = gpu_make(&h, q == 1, &g, &err);
        const struct mode_text_rows_cuda rows = {(int64_t)n, NSEQ, seg, g.ang, g.sel, g.cs, NULL, NULL, NULL};
        for (int it = -1; it < reps && !rc; it++) {
            struct mode_text_layer_times t;
            rc = mode_cuda_upload(g.h, h0, (size_t)n * D * 4, &err); /* the same input each time: the same routing */
            if (!rc) rc = mode_text_layer_cuda(&g.L, &rows, g.h, g.idx, g.w, g.work, &t, NULL, &err);
            if (!rc && it >= 0) part[0][it] = t.attn_proj, part[1][it] = t.attn_core, part[2][it] = t.router, part[3][it] = t.moe, part[4][it] = t.total;
        }
        if (!rc)
            for (int p = 0; p < 5; p++) med[q][p] = median(part[p], reps);
        gpu_free(&g);
    }
    if (rc) {
        fprintf(stderr, "bench_layer: GPU rows not run: %s\n", err.msg);
        snprintf(dev, sizeof dev, "GPU rows not run: %.1000s", err.msg);
    }
    free(h0);
    /* the CPU, one sequence */
    double cpu_ms = -1;
    struct mode_err cerr = {0};
    if (cpu_row(&h, &cpu_ms, &cerr)) fprintf(stderr, "bench_layer: CPU row not run: %s\n", cerr.msg);
    printf("Qwen3-VL-30B-A3B text layer (D %d, %d/%d heads of %d, %d experts top-%d of %d), %d sequences of %d tokens\n", D, NH, NKV, HD, E, K, I,
           NSEQ, SEQ);
    printf("device: %s; GPU: median of %d after a warm-up\n\n", dev, reps);
    const char *names[5] = {"norm + q/k/v + q/k norms + rope", "attention + o (30% rows summed)", "norm + router (f32) + top-k",
                            "route sort (host) + experts", "layer"};
    const double fl[5] = {flop_proj(n), flop_core(NSEQ), flop_router(n), flop_moe(n),
                          flop_proj(n) + flop_core(NSEQ) + flop_router(n) + flop_moe(n)};
    printf("%-36s %10s %12s %10s %12s %10s\n", "part", "GFLOP", "bf16 ms", "TFLOP/s", "f32 ms", "TFLOP/s");
    for (int p = 0; p < 5; p++) {
        printf("%-36s %10.1f", names[p], fl[p] / 1e9);
        for (int q = 0; q < 2; q++)
            if (med[q][p] > 0) printf(" %12.3f %10.1f", med[q][p], fl[p] / (med[q][p] * 1e9));
            else printf(" %12s %10s", "-", "-");
        printf("\n");
    }
    if (cpu_ms >= 0) {
        double one, pool;
        sgemm_rate(threads, &one, &pool);
        const double rate = fl[4] / (cpu_ms * NSEQ * 1e6); /* GFLOP/s */
        printf("%-36s %10.1f %12s %10s %12.1f %10.3f   (one sequence: %.1f ms, x %d; %d thread%s)\n", "cpu: layer (mode_text_layer_ref, f32)",
               fl[4] / 1e9, "", "", cpu_ms * NSEQ, fl[4] / (cpu_ms * NSEQ * 1e9), cpu_ms, NSEQ, threads, threads == 1 ? "" : "s");
        printf("cpu: layer %.1f GFLOP/s; sgemm 2048^3 (OpenBLAS) on one thread %.1f GFLOP/s (the layer at %.0f%% of it per thread), "
               "on %d thread%s %.1f GFLOP/s\n",
               rate, one, 100 * rate / (one * threads), threads, threads == 1 ? "" : "s", pool);
    }
    if (med[1][4] > 0 && cpu_ms > 0) printf("f32 GPU over the CPU: %.0fx; bf16 over f32: %.1fx\n", cpu_ms * NSEQ / med[1][4], med[1][4] / med[0][4]);
    /* the pipeline estimate */
    printf("\nEstimate: MODE on Qwen3-VL-30B-A3B (%d MoE layers), %d samples x %d tokens, f32 layer passes; seconds\n", N_LAYER, NSEQ, SEQ);
    if (med[1][4] < 0) {
        printf("  not made: no GPU layer time\n");
        return 0;
    }
    /* the tools compute in f32 (the CPU path's arithmetic): the f32 times */
    const double layer_s = med[1][4] / 1e3, moe_s = med[1][3] / 1e3;
    /* the vision tower (27 blocks of width 1152, MLP 4304; one image of 1024 patches a sample:
     * 2·(4·1152² + 2·1152·4304) flops per patch and block, attention within each image) at the
     * f32 layer's measured rate: an estimate from flops, not a measurement */
    const double patches = 1024.0 * NSEQ, vflop = 27 * (patches * 2 * (4.0 * 1152 * 1152 + 2.0 * 1152 * 4304) + NSEQ * 4.0 * 1024 * 1024 * 1152);
    const double vision_s = vflop / (fl[4] / layer_s);
    const double trace = N_LAYER * layer_s + vision_s;
    /* the layer metric: the capturing pass, then each expert at full precision and at each width
     * over its tokens (1 + N_BITS expert passes); the KL metric: per expert, width and modality
     * (text, vision) the layers from the quantized one to the last; pack: two passes per layer
     * (capture, then through the quantized experts) */
    const double sens_layer = N_LAYER * (layer_s + (1 + N_BITS) * moe_s) + vision_s;
    const double sens_kl = (double)E * N_BITS * 2 * (N_LAYER * (N_LAYER + 1) / 2.0) * layer_s + vision_s;
    const double pack = gptq_ms > 0 ? N_LAYER * (2 * layer_s + (hess_ms > 0 ? hess_ms / 1e3 : 0) + gptq_ms / 1e3) + vision_s : -1;
    const double eval = N_LAYER * layer_s + vision_s;
    printf("  %-66s %10.1f\n", "vision tower per stage, at the f32 layer's rate (*)", vision_s);
    printf("  %-66s %10.1f\n", "mode-route-trace: 48 layer passes + vision", trace);
    printf("  %-66s %10.1f\n", "mode-sensitivity --metric layer: 48 x (pass + 4 x experts) (+)", sens_layer);
    printf("  %-66s %10.0f\n", "mode-sensitivity --metric kl: 128 x 3 x 2 x 1176 layer passes (+)", sens_kl);
    if (pack > 0) printf("  %-66s %10.1f\n", "mode-pack: 48 x (2 passes + Hessians + GPTQ of 128 experts)", pack);
    else printf("  %-66s %10s\n", "mode-pack: needs bench_gptq's times (arguments 2, 3)", "-");
    printf("  %-66s %10.1f\n", "mode-eval: 48 layer passes + vision", eval);
    if (pack > 0) {
        const double total = trace + sens_layer + pack + eval;
        printf("  %-66s %10.1f  (%.1f min; goal 30)\n", "total with --metric layer", total, total / 60);
        printf("  %-66s %10.0f  (%.1f h)\n", "total with --metric kl", trace + sens_kl + pack + eval, (trace + sens_kl + pack + eval) / 3600);
    }
    printf("  (*) its flops (1024 patches a sample) at that rate: its blocks run resident in f32, its patch embedding and mergers\n"
           "      on the CPU with their products offloaded.\n");
    printf("  (+) lower bounds: the layer metric's expert passes counted at the resident layer's expert rate, though they run\n"
           "      as cuBLAS products staged from host memory with RTN on the CPU; in a KL re-run the quantized layer itself\n"
           "      (its expert overridden for one modality's tokens) runs on the CPU, counted here at the GPU's rate.\n");
    printf("  Not counted: the checkpoint's ~61 GB read per stage (disk-bound: ~30 s each at 2 GB/s) and its upload per\n"
           "  layer pass (bf16, widened on the device: ~1.2 GB a layer; route-trace and eval upload it once per batch of\n"
           "  --batch-tokens, 4 batches at the default 16384), mode-tokenize, mode-vis-denoise and mode-ilp (CPU, seconds:\n"
           "  bench_ilp), the lm_head.\n");
    return 0;
}
