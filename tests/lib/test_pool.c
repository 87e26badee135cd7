/* test_pool — the process's threads (lib/pool.h) and the promise that rests on them: every
 * result of the runtime is the same bits at any thread count (issue 21's one threading policy).
 *
 * The pool: each item of a run is called exactly once, at 1, 2, 3 and 7 threads; a run nested in
 * an item runs on the calling thread; each worker's scratch is its own and kept. Then the same
 * work at 1 and at 3 threads, compared bit for bit: products that are cut into tiles (several
 * shapes, b transposed or not, beta 0 and 1), operations on rows, the attention with and without
 * column sums, and the forward pass of emoji-vl on 24 calibration records (30 to 53) (text and images: the
 * vision tower, every decoder layer, the logits). */
#include "../../lib/attn.h"
#include "../../lib/ops.h"
#include "../../lib/pool.h"
#include "../samples_load.h"
#include "tap.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct count {
    atomic_int *hits;
    atomic_int nested_other; /* nested items that ran on another thread than their parent */
    atomic_int bad_worker;
};

static void nested_item(void *ctx, int64_t i, int worker)
{
    int *parent = ctx;
    (void)i;
    if (worker != *parent) (*parent) = -1000;
}

static void item(void *ctx, int64_t i, int worker)
{
    struct count *c = ctx;
    atomic_fetch_add(&c->hits[i], 1);
    if (worker < 0 || worker >= mode_pool_threads() || worker != mode_pool_worker()) atomic_fetch_add(&c->bad_worker, 1);
    if (i % 17 == 0) {
        int me = worker;
        mode_pool_run(5, nested_item, &me);
        if (me != worker) atomic_fetch_add(&c->nested_other, 1);
    }
}

static float *rnd(int64_t n)
{
    float *p = malloc(sizeof *p * (size_t)n);
    for (int64_t i = 0; i < n; i++) p[i] = (float)((double)(tap_rand() >> 11) / 9007199254740992.0 - 0.5);
    return p;
}

static int set_threads(int n)
{
    struct mode_err err = {0};
    return ok(!mode_ops_threads(n, &err) && mode_pool_threads() == n, "%d threads %s", n, err.msg);
}

/* products, rows, attention: their outputs concatenated */
static float *work(int64_t *n_out)
{
    tap_seed(7);
    static const int shapes[][4] = {{700, 3000, 200, 1}, {513, 300, 257, 0}, {1000, 130, 128, 1}, {64, 5000, 96, 1}, {3, 40, 7, 1}};
    int64_t total = 0;
    for (int s = 0; s < 5; s++) total += 2 * (int64_t)shapes[s][0] * shapes[s][1];
    const int64_t R = 3000, D = 160, T = 900, H = 4, HD = 32;
    total += 5 * R * D + T * H * HD * 2 + T;
    float *out = calloc((size_t)total, sizeof *out), *o = out;
    for (int s = 0; s < 5; s++) {
        const int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        const bool tr = shapes[s][3];
        float *a = rnd(m * k), *b = rnd(n * k), *c = rnd(m * n);
        memcpy(o, c, sizeof *o * (size_t)(m * n));
        mode_gemm_cpu(m, n, k, a, k, b, tr ? k : n, tr, 0.0f, o, n);
        o += m * n;
        memcpy(o, c, sizeof *o * (size_t)(m * n));
        mode_gemm_cpu(m, n, k, a, k, b, tr ? k : n, tr, 1.0f, o, n);
        o += m * n;
        free(a), free(b), free(c);
    }
    float *x = rnd(R * D), *w = rnd(D), *bias = rnd(D), *g = rnd(R * 2 * D);
    mode_rmsnorm_ref(x, w, 1e-6f, R, D, o), o += R * D;
    mode_layernorm_ref(x, w, bias, 1e-6f, R, D, o), o += R * D;
    memcpy(o, x, sizeof *o * (size_t)(R * D)), mode_softmax_ref(o, R, D), o += R * D;
    mode_swiglu_ref(g, R, D, o), o += R * D;
    memcpy(o, x, sizeof *o * (size_t)(R * D)), mode_gelu_tanh_ref(o, R * D), o += R * D;
    free(x), free(w), free(bias), free(g);
    /* attention: five segments, causal, 4 heads over 2 KV heads, with and without column sums */
    float *q = rnd(T * H * HD), *kk = rnd(T * 2 * HD), *v = rnd(T * 2 * HD);
    const int64_t seg[6] = {0, 100, 101, 400, 650, T};
    uint8_t *sel = calloc((size_t)T, 1);
    for (int64_t i = 0; i < T; i += 3) sel[i] = 1;
    struct mode_attn_shape sh = {.n_head = H, .n_head_kv = 2, .head_dim = HD, .ld_q = H * HD, .ld_k = 2 * HD, .ld_v = 2 * HD,
                                 .ld_o = H * HD, .scale = 0.17f, .causal = true};
    struct mode_err err = {0};
    ok(!mode_attention_ref_block(&sh, q, kk, v, seg, 5, NULL, NULL, o, 64, &err), "attention %s", err.msg), o += T * H * HD;
    ok(!mode_attention_ref_block(&sh, q, kk, v, seg, 5, sel, o + T * H * HD, o, 64, &err), "attention with column sums %s", err.msg);
    o += T * H * HD + T;
    free(q), free(kk), free(v), free(sel);
    *n_out = o - out;
    return out;
}

/* the forward pass of 24 emoji-vl records (30 to 53: text and images): hidden states, logits */
static float *forward(struct mode_rt *rt, const char *samples, int64_t *n_out)
{
    struct mode_err err = {0};
    struct mode_rt_batch b;
    if (!ok(!load_samples(rt, samples, 30, 24, &b, &err), "24 records load %s", err.msg)) return NULL;
    const int64_t D = rt->m->cfg.text.n_embd, V = rt->m->cfg.text.n_vocab, n0 = b.seq[0].n_tok;
    ok(b.n_image > 0, "... with %d images among them", b.n_image);
    float *out = malloc(sizeof *out * (size_t)(b.n_rows * D + n0 * V));
    if (!ok(!mode_rt_forward(rt, &b, NULL, &err) && !mode_rt_logits(rt, &b, 0, 0, n0, out + b.n_rows * D, &err), "forward %s", err.msg))
        return NULL;
    memcpy(out, b.h, sizeof *out * (size_t)(b.n_rows * D));
    *n_out = b.n_rows * D + n0 * V;
    mode_rt_batch_free(&b);
    return out;
}

int main(void)
{
    /* the pool itself */
    ok(mode_pool_default_threads() >= 1, "default: %d threads (the CPUs this process may use)", mode_pool_default_threads());
    is_int(mode_pool_threads(), 1, "one thread before it is set");
    enum { N = 1000 };
    static const int sizes[] = {1, 2, 3, 7, 2};
    for (int k = 0; k < 5; k++) {
        if (!set_threads(sizes[k])) continue;
        struct count c = {calloc(N, sizeof(atomic_int)), 0, 0};
        mode_pool_run(N, item, &c);
        int once = 1;
        for (int i = 0; i < N; i++) once &= atomic_load(&c.hits[i]) == 1;
        ok(once, "%d threads: each of %d items called once", sizes[k], (int)N);
        is_int(atomic_load(&c.nested_other), 0, "... a run nested in an item runs on the item's thread");
        is_int(atomic_load(&c.bad_worker), 0, "... every item knows its worker");
        free(c.hits);
    }
    ok(!mode_pool_inside(), "outside a run: not inside");
    void *s0 = mode_pool_scratch(1, 1000), *s1 = mode_pool_scratch(1, 500);
    ok(s0 && s0 == s1, "a worker's scratch is kept when a smaller one is asked for");
    ok(mode_pool_scratch(0, 1000) != s0, "... and is not another worker's");

    /* the same bits at 1 and 3 threads */
    int64_t n1 = 0, n3 = 0;
    set_threads(1);
    float *w1 = work(&n1);
    set_threads(3);
    float *w3 = work(&n3);
    ok(n1 == n3 && !memcmp(w1, w3, sizeof *w1 * (size_t)n1), "products, operations on rows, attention: the same bits at 1 and 3 threads (%lld floats)",
       (long long)n1);
    free(w1), free(w3);

    char samples[4096];
    struct mode_model m;
    struct mode_rt rt;
    if (!getenv("MODE_BIN"))
        diag("the forward pass not compared: MODE_BIN is not set (run through make check)");
    else if (!emoji_calib_open(samples, sizeof samples, &m, &rt)) {
        set_threads(1);
        float *f1 = forward(&rt, samples, &n1);
        set_threads(3);
        float *f3 = forward(&rt, samples, &n3);
        ok(f1 && f3 && n1 == n3 && !memcmp(f1, f3, sizeof *f1 * (size_t)n1),
           "emoji-vl forward pass (vision, layers, logits): the same bits at 1 and 3 threads (%lld floats)", (long long)n1);
        free(f1), free(f3);
        mode_rt_free(&rt);
        mode_model_close(&m);
    }
    set_threads(1);
    return tap_done();
}
