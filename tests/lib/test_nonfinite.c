/* test_nonfinite — the one-pass weights scan (hash.h, mode_st_set_scan) and its
 * refusal of non-finite weights, and mode-eval's of non-finite results (eval.h); issue 20, point 5.
 *   - the word-wide finite test finds NaN and Inf of every float dtype at every element position,
 *     any alignment and any tail length, and never flags a finite value or an integer tensor;
 *   - the hash changes with any one bit and with the length;
 *   - the fingerprint of a checkpoint does not depend on its shards, the order of its tensors or
 *     the number of threads, and changes with one byte; a NaN past the first chunk of a large
 *     tensor is named with its element;
 *   - mode_eval_check refuses a non-finite logit and an overflowing perplexity.
 * (The filters' exit codes and messages: tests/filters/nonfinite.sh.) */
#include "../../lib/eval.h"
#include "../../lib/hash.h"
#include "../../lib/safetensors.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ftype {
    enum mode_dtype t;
    unsigned size;
    uint64_t nan, inf, ninf; /* bit patterns; inf 0: the type has none */
    uint64_t finite[4];      /* largest finite, smallest subnormal, -0, a negative normal */
};

static const struct ftype types[] = {
    {MODE_F64, 8, 0x7ff8000000000000u, 0x7ff0000000000000u, 0xfff0000000000000u,
     {0x7fefffffffffffffu, 1, 0x8000000000000000u, 0xc000000000000000u}},
    {MODE_F32, 4, 0x7fc00000, 0x7f800000, 0xff800000, {0x7f7fffff, 1, 0x80000000, 0xc0000000}},
    {MODE_F16, 2, 0x7e00, 0x7c00, 0xfc00, {0x7bff, 1, 0x8000, 0xc000}},
    {MODE_BF16, 2, 0x7fc0, 0x7f80, 0xff80, {0x7f7f, 1, 0x8000, 0xc000}},
    {MODE_F8_E5M2, 1, 0x7e, 0x7c, 0xfc, {0x7b, 1, 0x80, 0xc0}},
    {MODE_F8_E4M3, 1, 0x7f, 0, 0, {0x7e, 1, 0x80, 0xf8}}, /* 0x7e = 448, its largest; 0xf8 = -256 */
};

static void put(unsigned char *p, unsigned size, uint64_t v) { memcpy(p, &v, size); } /* little-endian host */

static void finite_test(void)
{
    unsigned char buf[8 + 200];
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        const struct ftype *f = &types[k];
        const char *name = mode_dtype_st_name(f->t);
        int missed = 0, wrong_index = 0, wrong_kind = 0, false_alarm = 0;
        for (unsigned align = 0; align < 8; align++)
            for (size_t n = 0; n <= 24; n++) { /* n elements: whole 64-byte stripes and every tail */
                unsigned char *p = buf + align;
                uint64_t h[2];
                for (size_t e = 0; e < n; e++) put(p + e * f->size, f->size, f->finite[e % 4]);
                if (mode_hash_scan(p, n * f->size, f->t, h) || mode_nonfinite_find(p, n * f->size, f->t, NULL) != -1) false_alarm++;
                for (size_t e = 0; e < n; e++)
                    for (int which = 0; which < 3; which++) {
                        const uint64_t bits = which == 0 ? f->nan : which == 1 ? f->inf : f->ninf;
                        if (which && !f->inf) continue;
                        put(p + e * f->size, f->size, bits);
                        const char *what = NULL;
                        if (!mode_hash_scan(p, n * f->size, f->t, h)) missed++;
                        if (mode_nonfinite_find(p, n * f->size, f->t, &what) != (int64_t)e) wrong_index++;
                        else if (strcmp(what, which == 0 ? "nan" : which == 1 ? "inf" : "-inf")) wrong_kind++;
                        put(p + e * f->size, f->size, f->finite[e % 4]);
                    }
            }
        is_int(missed, 0, "%s: NaN and Inf found at every element, alignment and length", name);
        is_int(wrong_index, 0, "%s: ... at the right element", name);
        is_int(wrong_kind, 0, "%s: ... told apart (nan, inf, -inf)", name);
        is_int(false_alarm, 0, "%s: the largest finite, a subnormal, -0 and a negative number pass", name);
    }
    /* an integer tensor holding the bits of a float NaN is not a float */
    uint32_t q[16];
    for (int i = 0; i < 16; i++) q[i] = 0x7fc00000u + (uint32_t)i;
    uint64_t h[2];
    ok(!mode_hash_scan(q, sizeof q, MODE_I32, h) && mode_nonfinite_find(q, sizeof q, MODE_I32, NULL) == -1,
       "I32 words with NaN bits are not checked");
}

static void hash_test(void)
{
    unsigned char a[203];
    for (size_t i = 0; i < sizeof a; i++) a[i] = (unsigned char)tap_rand();
    uint64_t h0[2], h1[2];
    mode_hash_scan(a, sizeof a, MODE_U8, h0);
    int same = 0;
    for (size_t bit = 0; bit < 8 * sizeof a; bit++) {
        a[bit / 8] ^= (unsigned char)(1u << bit % 8);
        mode_hash_scan(a, sizeof a, MODE_U8, h1);
        same += h1[0] == h0[0] || h1[1] == h0[1];
        a[bit / 8] ^= (unsigned char)(1u << bit % 8);
    }
    is_int(same, 0, "every one of the %zu single-bit changes changes both halves of the hash", 8 * sizeof a);
    unsigned char z[9] = {1, 2, 3, 0, 0, 0, 0, 0, 0};
    mode_hash_scan(z, 3, MODE_U8, h0);
    mode_hash_scan(z, 4, MODE_U8, h1);
    ok(h0[0] != h1[0], "trailing zero bytes change the hash (the length enters it)");
    mode_hash_scan(z, 0, MODE_U8, h1);
    mode_hash_scan(z + 1, 0, MODE_U8, h0);
    ok(h0[0] == h1[0] && h0[1] == h1[1], "the empty input has one hash");
}

/* writes every tensor of s to dir (max_shard bytes a shard, 0: one file), in reverse name order
 * when `reverse`, plus `extra` tensors */
struct extra {
    const char *name;
    enum mode_dtype t;
    int64_t n;
    const void *data;
};

static int write_ckpt(const char *dir, const struct mode_st_set *s, uint64_t max_shard, int reverse, const struct extra *x, int nx)
{
    struct mode_err err = {0};
    struct mode_outdir d;
    struct mode_st_writer w;
    if (mode_outdir_begin(&d, dir, 0, &err) || mode_st_writer_init(&w, &d, max_shard, &err)) return diag("%s", err.msg), 1;
    int rc = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const struct mode_st_tensor *t = s->sorted[reverse ? s->n_tensors - 1 - i : i];
        rc |= mode_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err);
    }
    for (int i = 0; i < nx; i++) rc |= mode_st_writer_add(&w, x[i].name, x[i].t, 1, &x[i].n, x[i].data, &err);
    rc = rc || mode_st_writer_finish(&w, &err) || mode_outdir_commit(&d, &err);
    if (rc) diag("%s", err.msg);
    mode_st_writer_free(&w);
    return rc;
}

static int scan_dir(const char *dir, int threads, char fp[65], struct mode_err *err)
{
    struct mode_st_set s;
    int rc = mode_st_set_open(&s, dir, err);
    if (!rc) rc = mode_st_set_scan(&s, threads, fp, err);
    mode_st_set_close(&s);
    return rc;
}

static void fingerprint_test(void)
{
    struct mode_err err = {0};
    struct mode_st_set hub;
    if (!is_int(mode_st_set_open(&hub, fixture("reference/tiny-random-qwen3vlmoe"), &err), MODE_OK, "the tiny model opens")) {
        diag("%s", err.msg);
        return;
    }
    /* a large f32 tensor (3 chunks of the scan) and a small f16 one */
    const int64_t nbig = (int64_t)(MODE_ST_SCAN_CHUNK / 4) * 5 / 2;
    float *big = malloc((size_t)nbig * sizeof *big);
    if (!ok(big != NULL, "%lld floats", (long long)nbig)) {
        mode_st_set_close(&hub);
        return;
    }
    uint16_t small[33];
    for (int64_t i = 0; i < nbig; i++) big[i] = (float)(i % 1000) - 500.0f;
    for (int i = 0; i < 33; i++) small[i] = (uint16_t)(0x3c00 + i); /* 1.0 and up */
    struct extra x[2] = {{"extra.big", MODE_F32, nbig, big}, {"extra.small", MODE_F16, 33, small}};

    char one[4096], shards[4096], fp_a[65], fp_b[65], fp_c[65], fp_orig[65];
    snprintf(one, sizeof one, "%s/one", tap_tmpdir());
    snprintf(shards, sizeof shards, "%s/shards", tap_tmpdir());
    ok(!write_ckpt(one, &hub, 0, 1, x, 2) && !write_ckpt(shards, &hub, 1u << 20, 0, x, 2),
       "the tiny model + 2 tensors written as one file (reverse order) and as 1 MiB shards");
    if (!is_int(scan_dir(one, 1, fp_a, &err), MODE_OK, "one file scans (1 thread)")) diag("%s", err.msg);
    if (!is_int(scan_dir(shards, 3, fp_b, &err), MODE_OK, "the shards scan (3 threads)")) diag("%s", err.msg);
    is_str(fp_a, fp_b, "same tensors, other shards, order and threads: same fingerprint");
    is_int((long long)strlen(fp_a), 64, "64 hex digits, as the config hash");
    ok(mode_st_set_scan(&hub, 0, fp_orig, &err) == MODE_OK && strcmp(fp_orig, fp_a), "without the 2 extra tensors: another fingerprint");

    /* one byte of the last chunk of the large tensor */
    char flip[4096];
    snprintf(flip, sizeof flip, "%s/flip", tap_tmpdir());
    big[nbig - 7] = nextafterf(big[nbig - 7], 1e9f);
    write_ckpt(flip, &hub, 0, 0, x, 2);
    ok(scan_dir(flip, 2, fp_c, &err) == MODE_OK && strcmp(fp_c, fp_a), "one element one ulp away: another fingerprint");
    big[nbig - 7] = (float)((nbig - 7) % 1000) - 500.0f;

    /* a NaN in the second chunk of the large tensor, an Inf in the small one: the first by name */
    char bad[4096];
    snprintf(bad, sizeof bad, "%s/bad", tap_tmpdir());
    const int64_t at = (int64_t)(MODE_ST_SCAN_CHUNK / 4) + 12345;
    big[at] = NAN;
    small[31] = 0xfc00; /* -Inf */
    write_ckpt(bad, &hub, 1u << 20, 0, x, 2);
    is_int(scan_dir(bad, 4, fp_c, &err), MODE_EDATA, "a NaN in a checkpoint: MODE_EDATA");
    char want[256];
    snprintf(want, sizeof want, "tensor 'extra.big' holds a non-finite value (nan) at element %lld", (long long)at);
    has_str(err.msg, want, "... the first in name order, its element counted across chunks");
    big[at] = 1.0f;
    snprintf(bad, sizeof bad, "%s/bad2", tap_tmpdir());
    write_ckpt(bad, &hub, 0, 0, x, 2);
    is_int(scan_dir(bad, 1, fp_c, &err), MODE_EDATA, "an Inf in an f16 tensor: MODE_EDATA");
    has_str(err.msg, "tensor 'extra.small' holds a non-finite value (-inf) at element 31", "... named, -inf at element 31");
    free(big);
    mode_st_set_close(&hub);
}

static void eval_test(void)
{
    struct mode_err err = {0};
    struct mode_eval e;
    mode_eval_init(&e);
    const int32_t tok[3] = {0, 1, 2};
    const uint8_t score[3] = {1, 1, 1};
    float l[3 * 4] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    mode_eval_begin(&e, 3, score, 0);
    mode_eval_rows(&e, l, 0, 3, 4, tok, 3, score);
    is_int(mode_eval_check(&e, &err), MODE_OK, "finite logits pass the check");
    mode_eval_end(&e);
    l[4 + 2] = INFINITY;
    mode_eval_begin(&e, 3, score, 0);
    mode_eval_rows(&e, l, 0, 3, 4, tok, 3, score);
    is_int(mode_eval_check(&e, &err), MODE_EDATA, "an infinite logit in a scored row: MODE_EDATA");
    is_str(err.msg, "the logits predicting token 2 hold inf (vocabulary entry 2)", "... names the row and the entry");
    l[4 + 2] = 2;
    l[0] = NAN; /* row 0 predicts token 1 */
    mode_eval_begin(&e, 3, score, 0);
    mode_eval_rows(&e, l, 0, 3, 4, tok, 3, score);
    is_int(mode_eval_check(&e, &err), MODE_EDATA, "a NaN logit: MODE_EDATA");
    has_str(err.msg, "token 1 hold nan (vocabulary entry 0)", "... says nan");
    l[0] = 0;
    /* finite logits, a perplexity beyond a double: every target 1000 nats below the best */
    float far[2 * 4] = {0, 0, 0, 1000, 0, 0, 0, 1000};
    mode_eval_begin(&e, 3, score, 0);
    mode_eval_rows(&e, far, 0, 2, 4, tok, 3, score);
    is_int(mode_eval_check(&e, &err), MODE_EDATA, "a perplexity that overflows: MODE_EDATA");
    has_str(err.msg, "perplexity overflows", "... says so");
    /* an unscored row may hold anything */
    const uint8_t partial[3] = {0, 0, 1};
    l[0] = NAN;
    mode_eval_begin(&e, 3, partial, 0);
    mode_eval_rows(&e, l, 0, 3, 4, tok, 3, partial);
    is_int(mode_eval_check(&e, &err), MODE_OK, "a NaN in a row that predicts no scored token is not used");
}

int main(void)
{
    finite_test();
    hash_test();
    fingerprint_test();
    eval_test();
    return tap_done();
}
