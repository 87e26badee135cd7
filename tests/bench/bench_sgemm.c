/* bench_sgemm — the OpenBLAS f32 matrix-product rate on this machine at the shapes the CPU
 * runtime multiplies for Qwen3-VL-30B-A3B (lib/ops.c: C = A·Bᵀ, row-major, B an nn.Linear weight),
 * the yardstick of tests/bench/scale.sh's achieved GFLOP/s. For each shape and each thread count
 * (1 and THREADS, default: OPENBLAS_NUM_THREADS or the online CPUs): GFLOP/s of the median of
 * REPEATS timed products after one untimed one, 2·m·n·k flops each. A program that prints a table.
 *
 *   build/bench/bench_sgemm [REPEATS [THREADS]]
 *
 * The last line, "sgemm_gflops T X", is X GFLOP/s with T threads for the 2048³ product, for scripts.
 */
#include "bench_util.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#undef I /* complex.h's, through OpenBLAS's cblas.h */

struct shape {
    const char *what;
    int m, n, k;
};

/* m = rows (tokens or patches), n = output features, k = input features */
static const struct shape shapes[] = {
    {"square 2048", 2048, 2048, 2048},
    {"text q/k/v: 4096 tokens, 2048 -> 4096+512+512", 4096, 5120, 2048},
    {"expert gate+up: 512 tokens, 2048 -> 1536", 512, 1536, 2048},
    {"expert down: 512 tokens, 768 -> 2048", 512, 2048, 768},
    {"vision fc1: 3072 patches, 1152 -> 4304", 3072, 4304, 1152},
    {"vision scores: 3072 x 3072 over 72 (one head)", 3072, 3072, 72},
};

int main(int argc, char **argv)
{
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 5;
    int threads = argc > 2 ? atoi(argv[2]) : 0;
    if (threads <= 0) {
        const char *e = getenv("OPENBLAS_NUM_THREADS");
        threads = e && atoi(e) > 0 ? atoi(e) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    }
    if (threads < 1) threads = 1;
    size_t big = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        size_t need = (size_t)shapes[i].m * shapes[i].k + (size_t)shapes[i].n * shapes[i].k + (size_t)shapes[i].m * shapes[i].n;
        if (need > big) big = need;
    }
    float *buf = malloc(big * sizeof *buf);
    if (!buf) {
        fprintf(stderr, "bench_sgemm: out of memory (%zu bytes)\n", big * sizeof *buf);
        return 1;
    }
    uint32_t x = 12345;
    for (size_t i = 0; i < big; i++) x = x * 1664525u + 1013904223u, buf[i] = (float)(x >> 8) / 16777216.0f - 0.5f;
    int tc[2] = {1, threads};
    double square[2] = {0, 0};
    printf("OpenBLAS sgemm, C = A B^T (row-major), median of %d; %s\n", reps, openblas_get_config());
    printf("%-48s %10s", "shape (m x n x k)", "GFLOP");
    for (int t = 0; t < (threads > 1 ? 2 : 1); t++) printf("   GFLOP/s %2dT", tc[t]);
    printf("\n");
    double tm[64];
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        const struct shape *s = &shapes[i];
        const float *a = buf, *b = buf + (size_t)s->m * s->k;
        float *c = buf + (size_t)s->m * s->k + (size_t)s->n * s->k;
        const double fl = 2.0 * s->m * s->n * s->k;
        printf("%-48s %10.2f", s->what, fl / 1e9);
        for (int t = 0; t < (threads > 1 ? 2 : 1); t++) {
            openblas_set_num_threads(tc[t]);
            int r = reps < 64 ? reps : 64;
            for (int it = -1; it < r; it++) {
                double t0 = now();
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->m, s->n, s->k, 1.0f, a, s->k, b, s->k, 0.0f, c, s->n);
                if (it >= 0) tm[it] = now() - t0;
            }
            double g = fl / median(tm, r) / 1e9;
            if (i == 0) square[t] = g;
            printf("   %13.1f", g);
        }
        printf("\n");
        fflush(stdout);
    }
    printf("sgemm_gflops %d %.1f\n", threads > 1 ? threads : 1, threads > 1 ? square[1] : square[0]);
    printf("sgemm_gflops 1 %.1f\n", square[0]);
    free(buf);
    return 0;
}
