/* bench.c — mode-bench's measurements (bench.h). */
#include "bench.h"

#include "../kernels/mode_cuda.h"
#include "moe.h"

#include <stdlib.h>
#include <string.h>

static uint64_t next(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float urand(uint64_t *s) { return (float)((double)(next(s) >> 11) / 9007199254740992.0); }

double mode_bench_expert_bytes(int d, int i, int group, int bits)
{
    if (bits >= 16) return 3.0 * d * i * 2;
    const double gu = (double)d * i * bits / 8 + (double)(d / group) * i * (bits / 8.0 + 2);
    const double dn = (double)i * d * bits / 8 + (double)(i / group) * d * (bits / 8.0 + 2);
    return 2 * gu + dn;
}

/* a packed layer on the device (gptqpack.h's layout, random levels and zeros, small f16 scales;
 * bf16 pairs for 16-bit experts) */
struct dev_layer {
    struct mode_qmoe_layer L;
    void *qw, *qz, *sc, *off, *bits;
};

static void dev_layer_free(struct dev_layer *d)
{
    mode_cuda_free(d->qw), mode_cuda_free(d->qz), mode_cuda_free(d->sc), mode_cuda_free(d->off), mode_cuda_free(d->bits);
    memset(d, 0, sizeof *d);
}

struct host_layer {
    uint32_t *qw, *qz;
    uint16_t *sc;
    int64_t off[4096 * 9];
    size_t n_qw, n_qz, n_sc;
};

static int host_layer_make(const struct mode_bench_opts *o, const uint8_t *bits, uint64_t *rng, struct host_layer *h, struct mode_err *err)
{
    const int E = o->n_expert, D = o->d, I = o->i, g = o->group;
    h->n_qw = h->n_qz = h->n_sc = 0;
    for (int e = 0; e < E; e++)
        for (int p = 0; p < 3; p++) {
            const int64_t n = p == 2 ? D : I, k = p == 2 ? I : D, G = k / g, b = bits[e];
            int64_t *off = h->off + e * 9 + p * 3;
            off[0] = (int64_t)h->n_qw, off[1] = (int64_t)h->n_qz, off[2] = (int64_t)h->n_sc;
            h->n_qw += (size_t)(k * b / 32 * n), h->n_qz += (size_t)(G * n * b / 32), h->n_sc += (size_t)(G * n);
        }
    h->qw = malloc(4 * h->n_qw), h->qz = malloc(4 * (h->n_qz ? h->n_qz : 1)), h->sc = malloc(2 * h->n_sc);
    if (!h->qw || !h->qz || !h->sc) {
        free(h->qw), free(h->qz), free(h->sc);
        return mode_err_oom(err, 4 * h->n_qw, "a packed layer");
    }
    for (int e = 0; e < E; e++)
        for (int p = 0; p < 3; p++) {
            const int64_t n = p == 2 ? D : I, k = p == 2 ? I : D, b = bits[e];
            const int64_t *off = h->off + e * 9 + p * 3;
            uint32_t *w = h->qw + off[0];
            for (int64_t x = 0; x < k * b / 32 * n; x++)
                w[x] = b == 16 ? (uint32_t)mode_f32_to_bf16((urand(rng) - 0.5f) * 0.05f) | (uint32_t)mode_f32_to_bf16((urand(rng) - 0.5f) * 0.05f) << 16
                               : (uint32_t)next(rng);
        }
    for (size_t x = 0; x < h->n_qz; x++) h->qz[x] = (uint32_t)next(rng);
    for (size_t x = 0; x < h->n_sc; x++) h->sc[x] = mode_f32_to_f16(0.001f + urand(rng) * 0.01f);
    return MODE_OK;
}

static int upload(void **d, const void *h, size_t n, struct mode_err *err)
{
    int rc = mode_cuda_malloc(d, n ? n : 1, err);
    return rc ? rc : mode_cuda_upload(*d, h, n, err);
}

static int dev_layer_make(const struct mode_bench_opts *o, const struct host_layer *h, const uint8_t *bits, struct dev_layer *d, struct mode_err *err)
{
    memset(d, 0, sizeof *d);
    int rc = upload(&d->qw, h->qw, 4 * h->n_qw, err);
    if (!rc) rc = upload(&d->qz, h->qz, 4 * h->n_qz, err);
    if (!rc) rc = upload(&d->sc, h->sc, 2 * h->n_sc, err);
    if (!rc) rc = upload(&d->off, h->off, sizeof(int64_t) * 9 * (size_t)o->n_expert, err);
    if (!rc) rc = upload(&d->bits, bits, (size_t)o->n_expert, err);
    if (rc) dev_layer_free(d);
    d->L = (struct mode_qmoe_layer){o->n_expert, o->d, o->i, o->group, o->group, d->qw, d->qz, d->sc, d->off, d->bits};
    return rc;
}

/* routings of one token count, on the device, with their sorted forms */
struct pool {
    int T;
    void *ex, *w, *order, *slot;
    int64_t *start; /* host (pool, n_expert + 1) */
    uint8_t *used;  /* host (pool, n_expert): the experts each routing touches */
};

static void pool_free(struct pool *p)
{
    mode_cuda_free(p->ex), mode_cuda_free(p->w), mode_cuda_free(p->order), mode_cuda_free(p->slot);
    free(p->start), free(p->used);
    memset(p, 0, sizeof *p);
}

static int pool_make(const struct mode_bench_opts *o, int T, uint64_t *rng, struct pool *p, struct mode_err *err)
{
    memset(p, 0, sizeof *p);
    p->T = T;
    const int E = o->n_expert, K = o->k, P = o->pool;
    const size_t n = (size_t)P * T * K;
    int32_t *ex = malloc(sizeof *ex * n), *order = malloc(sizeof *order * n), *slot = malloc(sizeof *slot * n);
    float *w = malloc(sizeof *w * n);
    p->start = malloc(sizeof *p->start * (size_t)P * (E + 1));
    p->used = calloc((size_t)P * E, 1);
    int rc = MODE_OK;
    if (!ex || !order || !slot || !w || !p->start || !p->used) rc = mode_err_oom(err, sizeof *ex * n * 4, "routings");
    for (int q = 0; q < P && !rc; q++)
        for (int t = 0; t < T; t++) {
            float sum = 0;
            for (int j = 0; j < K; j++) {
                int e, dup;
                do { /* k distinct experts per token */
                    e = (int)(next(rng) % (uint64_t)E), dup = 0;
                    for (int jj = 0; jj < j; jj++) dup |= ex[((size_t)q * T + t) * K + jj] == e;
                } while (dup);
                ex[((size_t)q * T + t) * K + j] = e;
                p->used[(size_t)q * E + e] = 1;
                sum += (w[((size_t)q * T + t) * K + j] = 0.05f + urand(rng));
            }
            for (int j = 0; j < K; j++) w[((size_t)q * T + t) * K + j] /= sum; /* renormalised, as the router's */
        }
    for (int q = 0; q < P && !rc; q++)
        rc = mode_moe_route_sort(ex + (size_t)q * T * K, T, K, E, order + (size_t)q * T * K, slot + (size_t)q * T * K, p->start + (size_t)q * (E + 1),
                                 err);
    if (!rc) rc = upload(&p->ex, ex, sizeof *ex * n, err);
    if (!rc) rc = upload(&p->w, w, sizeof *w * n, err);
    if (!rc) rc = upload(&p->order, order, sizeof *order * n, err);
    if (!rc) rc = upload(&p->slot, slot, sizeof *slot * n, err);
    free(ex), free(order), free(slot), free(w);
    if (rc) pool_free(p);
    return rc;
}

enum { RUN_DECODE, RUN_PREFILL, RUN_QGEMM, RUN_BASE };

struct run_ctx {
    int kind, n_copies, E;
    const struct dev_layer *copies;
    struct mode_moe_dense dense, scratch;
    const struct pool *p;
    int k;
    const float *x;
    float *act, *out;
    void *work;
};

static int run(void *vctx, int v, void *stream, struct mode_err *err)
{
    const struct run_ctx *c = vctx;
    const int q = v, T = c->p->T, K = c->k;
    const size_t at = (size_t)q * T * K;
    const struct mode_moe_route r = {T, K, (const int32_t *)c->p->order + at, (const int32_t *)c->p->slot + at, (const float *)c->p->w + at,
                                     c->p->start + (size_t)q * (c->E + 1)};
    if (c->kind == RUN_BASE) return mode_moe_bf16_cuda(&c->dense, &r, c->x, c->work, c->out, stream, err);
    const struct mode_qmoe_layer *L = &c->copies[v % c->n_copies].L;
    if (c->kind == RUN_DECODE) return mode_qmoe_decode_cuda(L, T, K, c->x, (const int32_t *)c->p->ex + at, (const float *)c->p->w + at, c->act, c->out, stream, err);
    if (c->kind == RUN_QGEMM) return mode_qmoe_prefill_cuda(L, &r, c->x, c->work, c->out, stream, err);
    int rc = mode_qmoe_dequant_cuda(L, (uint16_t *)c->scratch.gate_up, (uint16_t *)c->scratch.down, stream, err);
    return rc ? rc : mode_moe_bf16_cuda(&c->scratch, &r, c->x, c->work, c->out, stream, err);
}

int mode_bench_run(const struct mode_bench_opts *o, struct mode_bench_result *r, void (*progress)(void *ctx, int done, int total), void *pctx,
                   struct mode_err *err)
{
    memset(r, 0, sizeof *r);
    int rc = mode_cuda_available(err);
    if (rc) return rc;
    const int E = o->n_expert, D = o->d, I = o->i;
    if (E < 2 || E > 4096 || o->k < 1 || o->k > E || D % 32 || I % 32 || o->group % 32 || D % o->group || I % o->group || o->pool < 1 ||
        o->iters < 1 || o->n_tokens < 1 || o->n_widths < 1 || o->n_widths > MODE_BENCH_MAX || o->n_tokens > MODE_BENCH_MAX)
        return mode_err_set(err, MODE_EUSAGE, "mode-bench: a shape the kernels cannot take (dimensions and group multiples of 32, the group dividing them)");
    if ((rc = mode_cuda_describe(r->device, sizeof r->device, err)) || (rc = mode_cuda_props(&r->l2_bytes, NULL, NULL, err))) return rc;
    const size_t copy_bytes = 4 * r->l2_bytes > ((size_t)256 << 20) ? 4 * r->l2_bytes : (size_t)256 << 20;
    if ((rc = mode_cuda_copy_rate(copy_bytes, &r->copy_rate, err))) return rc;
    uint64_t rng = o->seed;
    int most = 1;
    for (int t = 0; t < o->n_tokens; t++) most = o->tokens[t] > most ? o->tokens[t] : most;
    /* shared buffers: x, out, decode activations, the bf16 layers and their scratch */
    void *x = NULL, *out = NULL, *act = NULL, *work = NULL, *dgu = NULL, *ddn = NULL, *sgu = NULL, *sdn = NULL;
    const size_t ngu = (size_t)E * D * 2 * I, ndn = (size_t)E * I * D;
    struct mode_moe_dense dshape = {E, D, I, NULL, NULL};
    float *hx = malloc(sizeof *hx * (size_t)most * D);
    uint16_t *hb = malloc(2 * ngu);
    if (!hx || !hb) rc = mode_err_oom(err, 2 * ngu, "the bf16 layer");
    for (size_t q = 0; !rc && q < (size_t)most * D; q++) hx[q] = urand(&rng) * 2 - 1;
    if (!rc) rc = upload(&x, hx, sizeof *hx * (size_t)most * D, err);
    if (!rc) rc = mode_cuda_malloc(&out, sizeof(float) * (size_t)most * D, err);
    if (!rc) rc = mode_cuda_malloc(&act, sizeof(float) * (size_t)MODE_BENCH_DECODE_MAX * o->k * I, err);
    const struct mode_qmoe_layer qshape = {E, D, I, o->group, o->group, NULL, NULL, NULL, NULL, NULL};
    const size_t w0 = mode_moe_work_bytes(&dshape, most, o->k), w1 = mode_qmoe_prefill_work_bytes(&qshape, most, o->k);
    if (!rc) rc = mode_cuda_malloc(&work, w0 > w1 ? w0 : w1, err);
    if (!rc) rc = mode_cuda_malloc(&sgu, 2 * ngu, err);
    if (!rc) rc = mode_cuda_malloc(&sdn, 2 * ndn, err);
    if (!rc && o->baseline) {
        for (size_t q = 0; q < ngu; q++) hb[q] = mode_f32_to_bf16((urand(&rng) - 0.5f) * 0.05f);
        rc = upload(&dgu, hb, 2 * ngu, err);
        for (size_t q = 0; !rc && q < ndn; q++) hb[q] = mode_f32_to_bf16((urand(&rng) - 0.5f) * 0.05f);
        if (!rc) rc = upload(&ddn, hb, 2 * ndn, err);
    }
    free(hx), free(hb);
    struct pool pools[MODE_BENCH_MAX];
    memset(pools, 0, sizeof pools);
    for (int t = 0; t < o->n_tokens && !rc; t++) rc = pool_make(o, o->tokens[t], &rng, &pools[t], err);
    /* the baseline per token count, shared by every width's rows */
    double base_us[MODE_BENCH_MAX], base_gus[MODE_BENCH_MAX];
    int n_prefill = 0;
    for (int t = 0; t < o->n_tokens; t++) n_prefill += o->tokens[t] > MODE_BENCH_DECODE_MAX;
    const int total = o->n_tokens * (o->n_widths + (o->baseline ? 1 : 0)) + n_prefill * o->n_widths;
    int done = 0;
    for (int t = 0; t < o->n_tokens && !rc; t++) {
        base_us[t] = base_gus[t] = -1;
        if (!o->baseline) continue;
        struct run_ctx c = {RUN_BASE, 1, E, NULL, {E, D, I, dgu, ddn}, {E, D, I, sgu, sdn}, &pools[t], o->k, x, act, out, work};
        rc = mode_cuda_bench(run, &c, o->pool, o->iters, &base_us[t], &base_gus[t], err);
        if (progress) progress(pctx, ++done, total);
    }
    uint8_t *bits = malloc((size_t)E);
    struct host_layer *h = malloc(sizeof *h);
    if (!bits || !h) rc = mode_err_oom(err, sizeof *h, "a layer");
    for (int wi = 0; wi < o->n_widths && !rc; wi++) {
        const int W = o->widths[wi];
        for (int e = 0; e < E; e++) bits[e] = (uint8_t)(W ? W : o->mixed[e]);
        if ((rc = host_layer_make(o, bits, &rng, h, err))) break;
        const double layer_bytes = 4.0 * (double)(h->n_qw + h->n_qz) + 2.0 * (double)h->n_sc;
        int n_copies = (int)(2.0 * (double)r->l2_bytes / layer_bytes) + 1; /* together at least twice the L2 */
        if (n_copies > 16) n_copies = 16;
        struct dev_layer copies[16];
        memset(copies, 0, sizeof copies);
        for (int c = 0; c < n_copies && !rc; c++) rc = dev_layer_make(o, h, bits, &copies[c], err);
        free(h->qw), free(h->qz), free(h->sc);
        for (int t = 0; t < o->n_tokens && !rc; t++)
            for (int qg = 0; qg < 2 && !rc; qg++) { /* qg: the qgemm row of a prefill case */
                const struct pool *p = &pools[t];
                const int T = p->T;
                if (qg && T <= MODE_BENCH_DECODE_MAX) break;
                struct mode_bench_row *row = &r->rows[r->n_rows++];
                row->width = W, row->tokens = T, row->prefill = T > MODE_BENCH_DECODE_MAX, row->qgemm = qg;
                double bytes = 0; /* v0 dequantises every expert; decode and qgemm read those the routing touches */
                for (int q = 0; q < o->pool; q++)
                    for (int e = 0; e < E; e++)
                        if ((row->prefill && !qg) || p->used[(size_t)q * E + e]) bytes += mode_bench_expert_bytes(D, I, o->group, bits[e]);
                row->bytes = bytes / o->pool;
                row->floor_us = row->bytes / r->copy_rate * 1e6;
                struct run_ctx c = {qg ? RUN_QGEMM : row->prefill ? RUN_PREFILL : RUN_DECODE, n_copies, E, copies, {E, D, I, dgu, ddn}, {E, D, I, sgu, sdn}, p,
                                    o->k, x, act, out, work};
                rc = mode_cuda_bench(run, &c, o->pool, o->iters, &row->us, &row->graph_us, err);
                row->base_us = base_us[t], row->base_graph_us = base_gus[t];
                if (progress) progress(pctx, ++done, total);
            }
        for (int c = 0; c < n_copies; c++) dev_layer_free(&copies[c]);
    }
    free(bits), free(h);
    for (int t = 0; t < o->n_tokens; t++) pool_free(&pools[t]);
    mode_cuda_free(x), mode_cuda_free(out), mode_cuda_free(act), mode_cuda_free(work), mode_cuda_free(dgu), mode_cuda_free(ddn), mode_cuda_free(sgu),
        mode_cuda_free(sdn);
    return rc;
}
