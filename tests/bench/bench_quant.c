/* bench_quant — GPTQ and RTN wall time on Qwen3-VL-30B-A3B expert shapes: gate/up (768 x 2048)
 * and down (2048 x 768), 4096 calibration tokens, 4 bits, group 128; the Hessian accumulation
 * apart. Median of REPEATS, one process (OpenBLAS threads: OPENBLAS_NUM_THREADS).
 *
 *   make bench && build/bench/bench_quant [REPEATS]
 */
#include "../../lib/quant.h"
#include "tap.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static float frand(void) { return (float)((double)(tap_rand() >> 11) / 9007199254740992.0 * 2 - 1); }

int main(int argc, char **argv)
{
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 3;
    tap_seed(7);
    const int N = 4096;
    const struct {
        const char *name;
        int rows, cols;
    } shapes[] = {{"gate/up 768x2048", 768, 2048}, {"down 2048x768", 2048, 768}};
    printf("GPTQ / RTN, 4 bits, group 128, %d tokens; median of %d (seconds)\n\n", N, reps);
    printf("%-18s %10s %10s %10s\n", "matrix", "hessian", "gptq", "rtn");
    for (int s = 0; s < 2; s++) {
        const int R = shapes[s].rows, C = shapes[s].cols;
        float *W = malloc(sizeof *W * (size_t)R * C), *X = malloc(sizeof *X * (size_t)N * C), *deq = malloc(sizeof *deq * (size_t)R * C);
        float *sc = malloc(sizeof *sc * (size_t)R * (C / 128)), *z = malloc(sizeof *z * (size_t)R * (C / 128));
        uint8_t *q = malloc((size_t)R * C);
        double *H = malloc(sizeof *H * (size_t)C * C);
        for (size_t i = 0; i < (size_t)R * C; i++) W[i] = frand() * 0.05f;
        for (size_t i = 0; i < (size_t)N * C; i++) X[i] = frand() + (i % C < 16 ? 4 * frand() : 0);
        double th[16], tg[16], tr[16];
        const int n = reps < 16 ? reps : 16;
        struct mode_err err;
        for (int r = 0; r < n; r++) {
            double t0 = now();
            struct mode_hessian h;
            mode_hessian_init(&h, C, &err);
            for (int b = 0; b < N; b += 512) mode_hessian_add(&h, X + (size_t)b * C, 512);
            mode_hessian_get(&h, H);
            mode_hessian_free(&h);
            double t1 = now();
            struct mode_quant_opts o = {.bits = 4, .group = 128};
            struct mode_quant_out out = {q, sc, z, NULL, deq};
            if (mode_quant_gptq(W, R, C, H, &o, &out, &err)) {
                fprintf(stderr, "bench_quant: %s\n", err.msg);
                return 1;
            }
            double t2 = now();
            mode_quant_rtn(W, R, C, &o, &out, &err);
            double t3 = now();
            th[r] = t1 - t0, tg[r] = t2 - t1, tr[r] = t3 - t2;
        }
        qsort(th, (size_t)n, sizeof *th, cmp);
        qsort(tg, (size_t)n, sizeof *tg, cmp);
        qsort(tr, (size_t)n, sizeof *tr, cmp);
        printf("%-18s %10.3f %10.3f %10.3f\n", shapes[s].name, th[n / 2], tg[n / 2], tr[n / 2]);
        free(W), free(X), free(deq), free(sc), free(z), free(q), free(H);
    }
    return 0;
}
