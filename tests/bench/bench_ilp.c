/* bench_ilp — mode-ilp's solve on a synthetic Qwen3-VL-30B-A3B-sized instance: 48 MoE layers x
 * 128 experts x widths {2,3,4}, MODE's objective, per layer and global, average-bit (equality)
 * and byte (≤, experts of 2048 x 768, group 128) budgets. Frequencies are skewed per layer with
 * some experts never chosen; sensitivities fall by about half per extra bit and span four orders
 * of magnitude. Times are those of mode_alloc_solve (what mode-ilp runs); median of REPEATS.
 *
 *   make bench && build/bench/bench_ilp [REPEATS]
 */
#include "../../lib/bitalloc.h"
#include "tap.h"
#include "bench_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { L = 48, E = 128, NB = 3 };

static double urand(void) { return (double)(tap_rand() >> 11) / 9007199254740992.0; }

int main(int argc, char **argv)
{
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 5;
    tap_seed(20261122);
    struct mode_alloc_data d;
    mode_alloc_data_init(&d);
    d.n_expert = E, d.n_bits = NB, d.bits[0] = 2, d.bits[1] = 3, d.bits[2] = 4;
    d.have_freq = d.have_sens = true;
    d.n_layer = L;
    d.L = calloc(L, sizeof *d.L);
    for (int l = 0; l < L; l++) {
        struct mode_alloc_layer *x = &d.L[l];
        x->layer = l;
        x->has_freq = x->has_sens = true;
        x->freq = calloc(MODE_CLS_COUNT * E, sizeof *x->freq);
        x->count = calloc(MODE_CLS_COUNT * E, sizeof *x->count);
        x->wsum = calloc(MODE_CLS_COUNT * E, sizeof *x->wsum);
        x->dt = malloc(sizeof *x->dt * E * NB);
        x->dv = malloc(sizeof *x->dv * E * NB);
        for (int c = 0; c < MODE_CLS_COUNT; c++) {
            double sum = 0;
            for (int e = 0; e < E; e++) x->freq[c * E + e] = urand() < 0.05 ? 0 : pow(urand(), 3), sum += x->freq[c * E + e];
            for (int e = 0; e < E; e++) x->freq[c * E + e] /= sum;
        }
        for (int e = 0; e < E; e++) {
            double st = pow(10, -4 * urand()), sv = pow(10, -4 * urand());
            for (int b = 0; b < NB; b++) {
                x->dt[e * NB + b] = st * pow(0.4 + 0.2 * urand(), b);
                x->dv[e * NB + b] = sv * pow(0.4 + 0.2 * urand(), b);
            }
        }
    }
    const struct mode_expert_shape shape = {2048, 768, 128};
    const double max4 = (double)L * E * mode_alloc_expert_bytes(&shape, 4);
    printf("mode-ilp solve, synthetic 48 layers x 128 experts x {2,3,4} (MODE objective); median of %d runs\n\n", reps);
    printf("%-7s %-22s %10s %10s %8s %9s %8s\n", "scope", "budget", "ms/layer", "total ms", "nodes", "status", "avg bits");
    struct {
        const char *name;
        double avg, bytes_frac;
    } budgets[] = {{"--avg-bits 2.5", 2.5, 0}, {"--avg-bits 3", 3, 0}, {"--max-bytes 0.8 x W4", 0, 0.8}};
    for (int scope = 0; scope < 2; scope++)
        for (size_t bi = 0; bi < sizeof budgets / sizeof *budgets; bi++) {
            struct mode_alloc_opts o = {.method = MODE_ALLOC_MODE, .n_cand = 3, .cand = {2, 3, 4}, .global = scope == 1,
                                        .by_bytes = budgets[bi].avg == 0, .avg_bits = budgets[bi].avg,
                                        .max_bytes = budgets[bi].bytes_frac * max4, .time_limit = 60, .shape = shape};
            double t[64];
            struct mode_alloc_result r = {0};
            int n = reps < 64 ? reps : 64;
            for (int k = 0; k < n; k++) {
                struct mode_err err = {0};
                double t0 = now();
                if (mode_alloc_solve(&d, &o, &r, &err)) {
                    fprintf(stderr, "bench_ilp: %s\n", err.msg);
                    return 1;
                }
                t[k] = now() - t0;
                if (k < n - 1) mode_alloc_result_free(&r);
            }
            qsort(t, (size_t)n, sizeof *t, cmp);
            printf("%-7s %-22s %10.2f %10.1f %8ld %9s %8.3f\n", scope ? "global" : "layer", budgets[bi].name, t[n / 2] * 1e3 / L,
                   t[n / 2] * 1e3, r.nodes, mode_mckp_status_name(r.status), r.avg_bits);
            mode_alloc_result_free(&r);
        }
    mode_alloc_data_free(&d);
    return 0;
}
