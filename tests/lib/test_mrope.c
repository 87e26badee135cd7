/* test_mrope — the interleaved MRoPE angles (mode_mrope_angles_ref, lib/ops.c; what the runtime's
 * attention rotates q and k by, and the reference of mode_mrope_angles_cuda).
 *
 * Hand-computed tables for head_dim 16 (8 frequencies) with inv_freq = 2^-j, so that every angle
 * is exact and a wrong axis shows as a wrong number: sections {4, 2, 2} (the config's form: they
 * sum to head_dim/2), {4, 3, 1} (h and w runs of different lengths: section[1] and [2]
 * swapped fail it), {8, 0, 0} (text only: t everywhere). A chunked layout (t for the first
 * section[0] frequencies, then h, then w: Qwen2-VL's mrope) or swapped h/w fails each of them.
 * Then random positions and frequencies at Qwen3-VL-30B-A3B's shape (head_dim 128, sections {24,
 * 20, 20}) and at {30, 20, 14} against transformers' own formulation (apply_interleaved_mrope: t
 * everywhere, then h written over slice(1, 3·section[1], 3) and w over slice(2, 3·section[2],
 * 3)), bit for bit: both are one f32 product per angle. */
#include "../../lib/ops.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

enum { HALF = 8 };

static void table(const int sec[3], const float want[2][HALF], const char *name)
{
    /* token 0: t 7, h 11, w 13; token 1: t 8, h 3, w 5; layout (3, n) */
    const int32_t pos[6] = {7, 8, 11, 3, 13, 5};
    float inv[HALF], ang[2 * HALF];
    for (int j = 0; j < HALF; j++) inv[j] = 1.0f / (float)(1 << j);
    mode_mrope_angles_ref(pos, 2, 2 * HALF, sec, inv, ang);
    int bad = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < HALF; j++)
            if (ang[i * HALF + j] != want[i][j]) {
                if (bad++ < 4) diag("token %d frequency %d: %g, want %g", i, j, ang[i * HALF + j], want[i][j]);
            }
    ok(!bad, "section {%d, %d, %d}: %s", sec[0], sec[1], sec[2], name);
}

/* head_dim 128 against transformers' slice assignments */
static void random_case(const int sec[3], int64_t n)
{
    enum { HD = 128, H = HD / 2 };
    int32_t *pos = malloc(sizeof *pos * (size_t)(3 * n));
    float inv[H], *got = malloc(sizeof *got * (size_t)(n * H)), *want = malloc(sizeof *want * (size_t)(n * H));
    for (int64_t i = 0; i < 3 * n; i++) pos[i] = (int32_t)(tap_rand() % 300000) - 1000; /* past 2^16, a few negative */
    for (int j = 0; j < H; j++) inv[j] = (float)(tap_rand() >> 40) / (float)(1 << 24);
    int axis[H], n_ax[3] = {0, 0, 0};
    for (int j = 0; j < H; j++) axis[j] = 0;
    for (int dim = 1; dim <= 2; dim++)
        for (int j = dim; j < 3 * sec[dim] && j < H; j += 3) axis[j] = dim;
    for (int j = 0; j < H; j++) n_ax[axis[j]]++;
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < H; j++) want[i * H + j] = (float)pos[axis[j] * n + i] * inv[j];
    memset(got, 0xff, sizeof *got * (size_t)(n * H)); /* NaN: every angle must be written */
    mode_mrope_angles_ref(pos, n, HD, sec, inv, got);
    ok(!memcmp(got, want, sizeof *got * (size_t)(n * H)) && n_ax[0] == sec[0] && n_ax[1] == sec[1] && n_ax[2] == sec[2],
       "head_dim 128, section {%d, %d, %d}, %lld tokens: transformers' slices (t %d, h %d, w %d), bit for bit", sec[0], sec[1], sec[2],
       (long long)n, n_ax[0], n_ax[1], n_ax[2]);
    free(pos), free(got), free(want);
}

int main(void)
{
    /* {4,2,2}: h at j = 1, 4; w at j = 2, 5; t at 0, 3, 6, 7 */
    const int s422[3] = {4, 2, 2};
    const float w422[2][HALF] = {{7, 11 / 2.f, 13 / 4.f, 7 / 8.f, 11 / 16.f, 13 / 32.f, 7 / 64.f, 7 / 128.f},
                                 {8, 3 / 2.f, 5 / 4.f, 8 / 8.f, 3 / 16.f, 5 / 32.f, 8 / 64.f, 8 / 128.f}};
    table(s422, w422, "interleaved h, w then t");
    /* {4,3,1}: h at j = 1, 4, 7; w at j = 2 only; t at 0, 3, 5, 6 (sections 1 and 2 swapped give
     * h at 1 and w at 2, 5) */
    const int s431[3] = {4, 3, 1};
    const float w431[2][HALF] = {{7, 11 / 2.f, 13 / 4.f, 7 / 8.f, 11 / 16.f, 7 / 32.f, 7 / 64.f, 11 / 128.f},
                                 {8, 3 / 2.f, 5 / 4.f, 8 / 8.f, 3 / 16.f, 8 / 32.f, 8 / 64.f, 3 / 128.f}};
    table(s431, w431, "h reaches frequency 7, w only 2");
    const int s800[3] = {8, 0, 0};
    const float w800[2][HALF] = {{7, 7 / 2.f, 7 / 4.f, 7 / 8.f, 7 / 16.f, 7 / 32.f, 7 / 64.f, 7 / 128.f},
                                 {8, 8 / 2.f, 8 / 4.f, 8 / 8.f, 8 / 16.f, 8 / 32.f, 8 / 64.f, 8 / 128.f}};
    table(s800, w800, "t everywhere");

    tap_seed(20261203);
    const int qwen[3] = {24, 20, 20}, uneven[3] = {30, 20, 14};
    random_case(qwen, 37);
    random_case(uneven, 5);
    return tap_done();
}
