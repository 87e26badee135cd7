/* bench_qmoe — the packed mixed-precision MoE decode layer (kernels/qmoe.cu) at Qwen3-VL-30B-A3B's
 * shape: 128 experts, top-8, hidden 2048, expert width 768, group 128, random weights; uniform 2,
 * 3, 4, 8 bits and a mixed 2/3/4 allocation; 1, 8 and 64 tokens. Each run uses the next of 64
 * random routings (the 128 experts, 302 MB at 4 bits, exceed the 50 MB L2: a routing finds its
 * experts cold). Decode versions 3 and 5 (mode_qmoe_decode_version) on the same weights, inputs and
 * routings, one after the other. Median of event-timed runs and of CUDA-graph replays; effective
 * bandwidth over the bytes the routing touches (packed words, scales, zeros of its distinct
 * experts); the last column compares v5's output with v3's on the first routing
 * (‖v5 − v3‖ / ‖v3‖: both are f32 sums in different orders, ~1e-7 expected). GPU only.
 *
 *   make CUDA=1 bench && build/bench/bench_qmoe
 */
#include "../../kernels/mode_cuda.h"
#include "../../lib/gptqpack.h"
#include "tap.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { E = 128, D = 2048, I = 768, K = 8, GRP = 128, POOL = 64 };

static double expert_bytes(int b)
{
    const double gu = (double)D * b / 8 * I + (double)(D / GRP) * I * b / 8 + (double)(D / GRP) * I * 2;
    const double dn = (double)I * b / 8 * D + (double)(I / GRP) * D * b / 8 + (double)(I / GRP) * D * 2;
    return 2 * gu + dn;
}

/* ‖a − b‖ / ‖b‖ */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

int main(void)
{
    struct mode_err err;
    if (mode_cuda_available(&err)) {
        fprintf(stderr, "bench_qmoe: %s\n", err.msg);
        return 1;
    }
    char dev[256];
    mode_cuda_describe(dev, sizeof dev, &err);
    tap_seed(11);
    const char *names[] = {"W2", "W3", "W4", "W8", "mixed 2/3/4"};
    printf("packed MoE decode layer, %s: 128 experts, top-8, D 2048, I 768, group 128\n\n", dev);
    /* v5/v3: the graph times' ratio; outputs: ‖y_v5 − y_v3‖ / ‖y_v3‖ on the first routing */
    printf("%-12s %6s %10s %9s %9s %9s %9s %8s %8s %6s %10s\n", "weights", "tokens", "MB touched", "v3 us", "v3 graph", "v5 us", "v5 graph",
           "v3 TB/s", "v5 TB/s", "v5/v3", "out diff");
    const int version0 = mode_qmoe_decode_version(3);
    for (int cfg = 0; cfg < 5; cfg++) {
        uint8_t bits[E];
        for (int e = 0; e < E; e++) bits[e] = (uint8_t)(cfg < 4 ? (cfg == 3 ? 8 : cfg + 2) : 2 + e % 3);
        /* offsets and sizes */
        int64_t off[E * 9];
        size_t nqw = 0, nqz = 0, nsc = 0;
        for (int e = 0; e < E; e++)
            for (int p = 0; p < 3; p++) {
                const int64_t n = p == 2 ? D : I, k = p == 2 ? I : D, G = k / GRP, b = bits[e];
                off[e * 9 + p * 3] = (int64_t)nqw, off[e * 9 + p * 3 + 1] = (int64_t)nqz, off[e * 9 + p * 3 + 2] = (int64_t)nsc;
                nqw += (size_t)(k * b / 32 * n), nqz += (size_t)(G * n * b / 32), nsc += (size_t)(G * n);
            }
        uint32_t *qw = malloc(nqw * 4), *qz = malloc(nqz * 4);
        uint16_t *sc = malloc(nsc * 2);
        for (size_t i = 0; i < nqw; i++) qw[i] = (uint32_t)tap_rand();
        for (size_t i = 0; i < nqz; i++) qz[i] = (uint32_t)tap_rand();
        for (size_t i = 0; i < nsc; i++) sc[i] = mode_f32_to_f16(0.001f + (float)(tap_rand() % 1000) * 1e-5f);
        void *dqw, *dqz, *dsc, *doff, *dbits;
        if (mode_cuda_malloc(&dqw, nqw * 4, &err) || mode_cuda_upload(dqw, qw, nqw * 4, &err) || mode_cuda_malloc(&dqz, nqz * 4, &err) ||
            mode_cuda_upload(dqz, qz, nqz * 4, &err) || mode_cuda_malloc(&dsc, nsc * 2, &err) || mode_cuda_upload(dsc, sc, nsc * 2, &err) ||
            mode_cuda_malloc(&doff, sizeof off, &err) || mode_cuda_upload(doff, off, sizeof off, &err) || mode_cuda_malloc(&dbits, E, &err) ||
            mode_cuda_upload(dbits, bits, E, &err)) {
            fprintf(stderr, "bench_qmoe: %s\n", err.msg);
            return 1;
        }
        struct mode_qmoe_layer L = {E, D, I, GRP, GRP, dqw, dqz, dsc, doff, dbits};
        const int toks[] = {1, 8, 64};
        for (int ti = 0; ti < 3; ti++) {
            const int T = toks[ti];
            float *x = malloc(sizeof *x * (size_t)T * D), *w = malloc(sizeof *w * (size_t)POOL * T * K);
            int32_t *ex = malloc(sizeof *ex * (size_t)POOL * T * K);
            double touched = 0;
            for (int i = 0; i < T * D; i++) x[i] = (float)(tap_rand() % 2001) * 1e-3f - 1;
            for (int p = 0; p < POOL; p++) {
                char used[E] = {0};
                for (int t = 0; t < T; t++) {
                    for (int j = 0; j < K; j++) {
                        int e;
                        bool dup;
                        do { /* k distinct experts per token */
                            e = (int)(tap_rand() % E);
                            dup = false;
                            for (int jj = 0; jj < j; jj++) dup |= ex[((size_t)p * T + t) * K + jj] == e;
                        } while (dup);
                        ex[((size_t)p * T + t) * K + j] = e;
                        w[((size_t)p * T + t) * K + j] = 0.125f;
                        used[e] = 1;
                    }
                }
                for (int e = 0; e < E; e++)
                    if (used[e]) touched += expert_bytes(bits[e]);
            }
            touched /= POOL;
            void *dx, *dex, *dw, *dact, *dout;
            double us[2] = {0, 0}, gus[2] = {0, 0};
            float *y = malloc(sizeof *y * 2 * (size_t)T * D); /* each version's output on routing 0 */
            if (mode_cuda_malloc(&dx, sizeof *x * (size_t)T * D, &err) || mode_cuda_upload(dx, x, sizeof *x * (size_t)T * D, &err) ||
                mode_cuda_malloc(&dex, sizeof *ex * (size_t)POOL * T * K, &err) || mode_cuda_upload(dex, ex, sizeof *ex * (size_t)POOL * T * K, &err) ||
                mode_cuda_malloc(&dw, sizeof *w * (size_t)POOL * T * K, &err) || mode_cuda_upload(dw, w, sizeof *w * (size_t)POOL * T * K, &err) ||
                mode_cuda_malloc(&dact, sizeof(float) * (size_t)T * K * I, &err) || mode_cuda_malloc(&dout, sizeof(float) * (size_t)T * D, &err)) {
                fprintf(stderr, "bench_qmoe: %s\n", err.msg);
                return 1;
            }
            for (int v = 0; v < 2; v++) {
                mode_qmoe_decode_version(v ? 5 : 3);
                if (mode_qmoe_bench_cuda(&L, T, K, dx, dex, dw, POOL, dact, dout, 200, &us[v], &gus[v], &err) ||
                    mode_qmoe_decode_cuda(&L, T, K, dx, dex, dw, dact, dout, NULL, &err) ||
                    mode_cuda_download(y + (size_t)v * T * D, dout, sizeof *y * (size_t)T * D, &err)) {
                    fprintf(stderr, "bench_qmoe: v%d: %s\n", v ? 5 : 3, err.msg);
                    return 1;
                }
            }
            printf("%-12s %6d %10.2f %9.1f %9.1f %9.1f %9.1f %8.2f %8.2f %6.2f %10.1e\n", names[cfg], T, touched / 1e6, us[0], gus[0], us[1], gus[1],
                   touched / (gus[0] * 1e-6) / 1e12, touched / (gus[1] * 1e-6) / 1e12, gus[1] / gus[0], rel_diff(y + (size_t)T * D, y, (size_t)T * D));
            fflush(stdout);
            mode_cuda_free(dx), mode_cuda_free(dex), mode_cuda_free(dw), mode_cuda_free(dact), mode_cuda_free(dout);
            free(x), free(w), free(ex), free(y);
        }
        mode_cuda_free(dqw), mode_cuda_free(dqz), mode_cuda_free(dsc), mode_cuda_free(doff), mode_cuda_free(dbits);
        free(qw), free(qz), free(sc);
    }
    mode_qmoe_decode_version(version0);
    return 0;
}
