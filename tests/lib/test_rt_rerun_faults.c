/* test_rt_rerun_faults — regression test for issue 21's "page faults jump between 44 and 88
 * calibration records in mode-sensitivity --metric kl: a large buffer is mapped and freed on every
 * re-run of a layer". The sweep re-runs the decoder layers from a cached input, over and over,
 * with an expert override limited to some rows, and computes logits after each run; the runtime
 * took its per-layer buffers (activations, routing, the layer's f32 weights) from malloc and
 * freed them per call, and glibc maps a fresh region for each one above its mmap threshold, so
 * every page faulted again on every re-run.
 *
 * Here the same re-run, on emoji-vl with 16 calibration samples, six times, for text records
 * alone and then for text and image records: every run gives the same hidden states and logits
 * bit for bit; after the second run the runtime's scratch allocates no block; and the runs after
 * it take fewer minor page faults per run than the pages of one (n_rows, n_embd) f32 buffer
 * (none; the old code took one per page of every buffer above glibc's mmap threshold, pinned
 * here at its default). */
#include "../../lib/ops.h"
#include "../samples_load.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

struct ov {
    int layer, expert;
    const float *gu, *dn;
    const uint8_t *rows;
};

static int on_expert(void *vctx, int layer, int expert, struct mode_rt_expert_override *o, struct mode_err *err)
{
    (void)err;
    const struct ov *c = vctx;
    if (layer == c->layer && expert == c->expert) o->gate_up = c->gu, o->down = c->dn, o->rows = c->rows;
    return MODE_OK;
}

static long minflt(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_minflt;
}

/* the layers from 0 on, then the logits of sequence 0 */
static int run(struct mode_rt *rt, struct mode_rt_batch *b, const float *h0, const struct mode_rt_hooks *hooks, float *logits,
               struct mode_err *err)
{
    const int64_t D = rt->m->cfg.text.n_embd;
    memcpy(b->h, h0, sizeof *b->h * (size_t)(b->n_rows * D));
    b->next_layer = 0;
    int rc = mode_rt_forward(rt, b, hooks, err);
    return rc ? rc : mode_rt_logits(rt, b, 0, 0, b->seq[0].n_tok, logits, err);
}

/* the re-runs on samples [first, first + 16) of the calibration set */
static void check(struct mode_rt *rt, const char *samples, int first, const char *label)
{
    struct mode_err err = {0};
    const struct mode_model *m = rt->m;
    const struct mode_text_config *t = &m->cfg.text;
    struct mode_rt_batch b;
    if (!ok(!load_samples(rt, samples, first, 16, &b, &err), "%s: 16 samples load %s", label, err.msg)) return;
    const bool images = b.n_image > 0, held = rt->scratch.cap > 0;
    if (!ok(!mode_rt_vision(rt, &b, &err), "%s: vision tower %s", label, err.msg)) return;
    if (images) /* the kept block is given back for the tower: the two peaks do not add up */
        ok(rt->scratch.cap == 0 && rt->scratch.base == NULL, "%s: the vision tower ran without the decoder's kept block (held before: %s)",
           label, held ? "yes" : "no");
    const int64_t N = b.n_rows, D = t->n_embd, I = t->n_ff_exp, V = t->n_vocab;

    /* expert 0 of layer 0 at half its weights for the text tokens (as the kl sweep's override) */
    float *gu = malloc(sizeof *gu * (size_t)(2 * I * D)), *dn = malloc(sizeof *dn * (size_t)(I * D));
    struct mode_mat mg, mu, md;
    if (!ok(!mode_model_expert(m, 0, 0, MODE_PROJ_GATE, &mg, &err) && !mode_model_expert(m, 0, 0, MODE_PROJ_UP, &mu, &err) &&
                !mode_model_expert(m, 0, 0, MODE_PROJ_DOWN, &md, &err) && !mode_mat_to_f32(&mg, gu, &err) &&
                !mode_mat_to_f32(&mu, gu + I * D, &err) && !mode_mat_to_f32(&md, dn, &err),
            "%s: expert 0 of layer 0 in f32 %s", label, err.msg))
        return;
    for (int64_t i = 0; i < 2 * I * D; i++) gu[i] *= 0.5f;
    for (int64_t i = 0; i < I * D; i++) dn[i] *= 0.5f;
    uint8_t *rows = calloc((size_t)N, 1);
    for (int s = 0; s < b.n_seq; s++)
        for (int64_t i = 0; i < b.seq[s].n_tok; i++) rows[b.seq[s].row + i] = b.seq[s].modality[i] == 0;
    struct ov c = {0, 0, gu, dn, rows};
    const struct mode_rt_hooks hooks = {.ctx = &c, .expert = on_expert};

    float *h0 = malloc(sizeof *h0 * (size_t)(N * D)), *h1 = malloc(sizeof *h1 * (size_t)(N * D));
    const int64_t n0 = b.seq[0].n_tok;
    float *l1 = malloc(sizeof *l1 * (size_t)(n0 * V)), *lg = malloc(sizeof *lg * (size_t)(n0 * V));
    memcpy(h0, b.h, sizeof *h0 * (size_t)(N * D));
    if (!ok(!run(rt, &b, h0, &hooks, l1, &err), "%s: run 1 %s", label, err.msg)) return;
    memcpy(h1, b.h, sizeof *h1 * (size_t)(N * D));
    /* the override changes something (else the test would not tell a re-run from a first run) */
    memcpy(b.h, h0, sizeof *h0 * (size_t)(N * D));
    b.next_layer = 0;
    if (!ok(!mode_rt_forward(rt, &b, NULL, &err), "%s: a run without the override %s", label, err.msg)) return;
    ok(memcmp(b.h, h1, sizeof *h1 * (size_t)(N * D)) != 0, "%s: the override changes the hidden states", label);

    int same = 1;
    if (!ok(!run(rt, &b, h0, &hooks, lg, &err), "%s: run 2 %s", label, err.msg)) return;
    same &= !memcmp(b.h, h1, sizeof *h1 * (size_t)(N * D)) && !memcmp(lg, l1, sizeof *l1 * (size_t)(n0 * V));
    const int64_t blocks = rt->scratch.n_block;
    const long f0 = minflt();
    enum { RUNS = 4 };
    for (int r = 0; r < RUNS; r++) {
        if (!ok(!run(rt, &b, h0, &hooks, lg, &err), "%s: run %d %s", label, r + 3, err.msg)) return;
        same &= !memcmp(b.h, h1, sizeof *h1 * (size_t)(N * D)) && !memcmp(lg, l1, sizeof *l1 * (size_t)(n0 * V));
    }
    const long faults = minflt() - f0;
    ok(same, "%s: runs 2 to %d give the hidden states and logits of run 1, bit for bit", label, RUNS + 2);
    is_int(rt->scratch.n_block, blocks, "%s: runs 3 to %d allocate no scratch block", label, RUNS + 2);
    ok(rt->scratch.extra == NULL, "%s: ... and hold no extra block", label);
    /* the old code mapped several (n_rows, n_embd) f32 buffers per layer per run */
    const long page = sysconf(_SC_PAGESIZE), bound = (long)(sizeof(float) * (size_t)(N * D)) / page;
#ifdef __SANITIZE_ADDRESS__
    /* its allocator quarantines what is freed: every malloc (the attention's scores, say) is
     * fresh memory, whatever glibc would do */
    ok(1, "%s: %ld minor faults # SKIP AddressSanitizer's allocator is not glibc's", label, faults);
    (void)bound;
#else
    ok(bound > 0 && faults < bound * RUNS, "%s: %ld minor faults in %d re-runs of %lld rows: fewer per run than the pages of one (n_rows, n_embd) f32 buffer (%ld)",
       label, faults, RUNS, (long long)N, bound);
#endif

    free(gu), free(dn), free(rows), free(h0), free(h1), free(l1), free(lg);
    mode_rt_batch_free(&b);
}

int main(void)
{
    char samples[4200];
    struct mode_model m;
    struct mode_rt rt;
#ifdef __GLIBC__
    /* glibc's mmap threshold pinned at its default (128 KiB; setting it stops the dynamic raise):
     * whatever this process freed before, a buffer above it is a fresh mapping, as in a filter
     * whose layers' buffers are the largest it has freed */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
#endif
    /* one thread: the pool's workers would fault their own pages in (OpenBLAS runs at one
     * thread either way) */
    struct mode_err terr = {0};
    if (!ok(!mode_ops_threads(1, &terr), "one thread %s", terr.msg)) return tap_done();
    if (emoji_calib_open(samples, sizeof samples, &m, &rt)) return tap_done();
    /* text records (the 44-record case of the issue: no vision tower), then text and images */
    check(&rt, samples, 0, "text records 0-15");
    check(&rt, samples, 40, "text and image records 40-55");
    mode_rt_free(&rt);
    mode_model_close(&m);
    return tap_done();
}
