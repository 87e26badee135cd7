/* test_denoise — key image tokens and the counting tables (lib/denoise.c) on hand-made traces. */
#include "../../lib/denoise.h"
#include "tap.h"

#include <string.h>

/* a trace record of 7 tokens: t t i i i i t, top-2 experts, scores for the 4 image tokens */
static void make(struct mode_mp *b, int64_t sample, int layer, const float *attn)
{
    uint8_t mod[7] = {0, 0, 1, 1, 1, 1, 0};
    int32_t ex[14] = {0, 1, 1, 2, 2, 3, 3, 0, 0, 2, 1, 3, 0, 1};
    float w[14];
    for (int i = 0; i < 14; i++) w[i] = i % 2 ? 0.25f : 0.75f;
    mode_mp_reset(b);
    mode_trace_pack(b, sample, "s", layer, 7, 2, 4, mod, ex, w, NULL, attn, 4, NULL);
}

static int parse(struct mode_mp *b, msgpack_unpacked *u, struct mode_trace_rec *t)
{
    struct mode_err err;
    size_t off = 0;
    msgpack_unpack_next(u, b->buf, b->len, &off);
    struct mode_rec r = {&u->data, "t", "record"};
    return mode_trace_parse(&r, t, &err);
}

int main(void)
{
    is_int(mode_denoise_n_key(0.2, 64), 13, "ceil(0.2 * 64) = 13");
    is_int(mode_denoise_n_key(0.2, 65), 13, "ceil(0.2 * 65) = 13, not 14 from 13.000000000000002");
    is_int(mode_denoise_n_key(0.2, 4), 1, "ceil(0.2 * 4) = 1");
    is_int(mode_denoise_n_key(0.0, 4), 0, "ratio 0 keeps none");
    is_int(mode_denoise_n_key(1.0, 4), 4, "ratio 1 keeps all");
    struct mode_mp b;
    mode_mp_init(&b);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    struct mode_trace_rec t;
    struct mode_err err;
    float attn[4] = {0.1f, 0.4f, 0.2f, 0.4f};
    make(&b, 0, 1, attn);
    is_int(parse(&b, &u, &t), MODE_OK, "a trace record parses");
    uint8_t keep[4];
    bool tie;
    mode_denoise_keep(&t, MODE_DENOISE_ATTENTION, 0.5, 0, keep, &tie, &err);
    ok(keep[0] == 0 && keep[1] == 1 && keep[2] == 0 && keep[3] == 1 && !tie, "r = 0.5: the two highest scores are key");
    mode_denoise_keep(&t, MODE_DENOISE_ATTENTION, 0.25, 0, keep, &tie, &err);
    ok(keep[1] == 1 && keep[3] == 0 && tie, "r = 0.25: a tie at the boundary goes to the earlier token, and is reported");
    mode_denoise_keep(&t, MODE_DENOISE_NONE, 0.25, 0, keep, &tie, &err);
    ok(keep[0] && keep[1] && keep[2] && keep[3], "none: every image token is key");
    uint8_t k1[4], k2[4];
    mode_denoise_keep(&t, MODE_DENOISE_RANDOM, 0.5, 42, k1, &tie, &err);
    mode_denoise_keep(&t, MODE_DENOISE_RANDOM, 0.5, 42, k2, &tie, &err);
    ok(!memcmp(k1, k2, 4) && k1[0] + k1[1] + k1[2] + k1[3] == 2, "random: reproducible, ceil(r n) tokens");
    int differ = 0;
    for (uint64_t seed = 0; seed < 20; seed++) {
        mode_denoise_keep(&t, MODE_DENOISE_RANDOM, 0.5, seed, k2, &tie, &err);
        differ += memcmp(k1, k2, 4) != 0;
    }
    ok(differ > 0, "random: another seed gives another choice (%d of 20)", differ);
    /* counting */
    struct mode_freq_table f;
    mode_freq_init(&f, 2, 4, &err);
    mode_denoise_keep(&t, MODE_DENOISE_ATTENTION, 0.5, 0, keep, &tie, &err);
    struct mode_rec r = {&u.data, "t", "record"};
    is_int(mode_freq_add(&f, &t, keep, &r, &err), MODE_OK, "a record is counted");
    const int64_t *cnt = f.count + (1 * MODE_CLS_COUNT) * 4; /* layer 1 */
    /* text tokens 0, 1, 6 chose {0,1}, {1,2}, {0,1}; image tokens 2..5 chose {2,3}, {3,0}, {0,2}, {1,3};
       key image tokens are 3 ({3,0}) and 5 ({1,3}) */
    int64_t want_text[4] = {2, 3, 1, 0}, want_vis[4] = {2, 1, 2, 3}, want_key[4] = {1, 1, 0, 2};
    ok(!memcmp(cnt + MODE_CLS_TEXT * 4, want_text, sizeof want_text), "text counts");
    ok(!memcmp(cnt + MODE_CLS_VISION * 4, want_vis, sizeof want_vis), "vision counts");
    ok(!memcmp(cnt + MODE_CLS_KEY * 4, want_key, sizeof want_key), "key counts");
    int sum_ok = 1;
    for (int e = 0; e < 4; e++)
        sum_ok &= cnt[MODE_CLS_KEY * 4 + e] + cnt[MODE_CLS_REDUNDANT * 4 + e] == cnt[MODE_CLS_VISION * 4 + e] &&
                  cnt[MODE_CLS_TEXT * 4 + e] + cnt[MODE_CLS_VISION * 4 + e] == cnt[MODE_CLS_ALL * 4 + e];
    ok(sum_ok, "key + redundant = vision, text + vision = all");
    const int64_t *tok = f.tokens + 1 * MODE_CLS_COUNT;
    ok(tok[MODE_CLS_TEXT] == 3 && tok[MODE_CLS_VISION] == 4 && tok[MODE_CLS_KEY] == 2 && tok[MODE_CLS_ALL] == 7, "token totals");
    /* weights: each token's first choice 0.75, second 0.25 */
    const double *w = f.weight + (1 * MODE_CLS_COUNT) * 4;
    ok(w[MODE_CLS_TEXT * 4 + 1] == 0.25 + 0.75 + 0.25, "routing-weight sums");
    ok(f.seen[1] && !f.seen[0], "layer 1 seen, layer 0 not");
    /* a layer the table does not have */
    make(&b, 0, 5, attn);
    msgpack_unpacked_destroy(&u);
    msgpack_unpacked_init(&u);
    parse(&b, &u, &t);
    struct mode_rec r5 = {&u.data, "t", "record 9"};
    is_int(mode_freq_add(&f, &t, keep, &r5, &err), MODE_EDATA, "a layer beyond the model");
    has_str(err.msg, "t: record 9: layer 5, the model has 2 layers", "... named");
    /* attention method on a trace without scores */
    make(&b, 3, 0, NULL);
    msgpack_unpacked_destroy(&u);
    msgpack_unpacked_init(&u);
    parse(&b, &u, &t);
    is_int(mode_denoise_keep(&t, MODE_DENOISE_ATTENTION, 0.2, 0, keep, &tie, &err), MODE_EDATA, "attention without scores");
    has_str(err.msg, "no attention scores in the trace", "... says so");
    mode_freq_free(&f);
    msgpack_unpacked_destroy(&u);
    mode_mp_free(&b);
    return tap_done();
}
