/* test_eval — perplexity and exact match on hand-made logits (lib/eval.c); per-record losses
 * written and read back; the paired bootstrap: a null difference, a shift that every resample
 * sees, the width of the interval against the delta method's on records whose differences are
 * known, the pairing (records that vary a lot alike in both evaluations do not widen it),
 * reproducibility by seed, and records that do not match. */
#include "../../lib/eval.h"
#include "../../lib/mpjson.h"
#include "tap.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BAIL_OUT(m) (printf("Bail out! %s\n", (m)), exit(1))

/* n records of one token each (text), nll of record i: base[i] */
static void make_recs(struct mode_eval_records *r, int n, const double *nll)
{
    memset(r, 0, sizeof *r);
    r->n = n;
    r->sample = calloc((size_t)n, sizeof *r->sample);
    r->tokens = calloc((size_t)n, sizeof *r->tokens);
    r->id = calloc((size_t)n, sizeof *r->id);
    r->cls = calloc((size_t)n, sizeof *r->cls);
    r->exact = calloc((size_t)n, sizeof *r->exact);
    r->nll = calloc((size_t)n, sizeof *r->nll);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "r%d", i);
        r->sample[i] = i, r->tokens[i] = 1, r->id[i] = strdup(id), r->cls[i] = MODE_EVAL_TEXT, r->nll[i] = nll[i];
    }
}

static void bootstrap_tests(void)
{
    enum { N = 400 };
    static double base[N], same[N], shifted[N], noisy[N], wild_a[N], wild_b[N];
    struct mode_err err = {0};
    for (int i = 0; i < N; i++) {
        base[i] = 1.0 + (i % 2 ? 0.3 : -0.3); /* records that differ, alike in both */
        same[i] = base[i];
        shifted[i] = base[i] + 0.05;
        noisy[i] = base[i] + (i % 4 < 2 ? 0.1 : -0.1); /* differences ±0.1, mean 0 */
        wild_b[i] = 1.0 + (i % 2 ? 2.0 : -0.9);        /* a lot of spread between records */
        wild_a[i] = wild_b[i] + (i % 4 < 2 ? 0.1 : -0.1);
    }
    struct mode_eval_records rb, rs, rsh, rn, wa, wb;
    make_recs(&rb, N, base), make_recs(&rs, N, same), make_recs(&rsh, N, shifted), make_recs(&rn, N, noisy);
    make_recs(&wa, N, wild_a), make_recs(&wb, N, wild_b);
    struct mode_eval_boot bt, bt2;
    ok(!mode_eval_bootstrap(&rs, &rb, MODE_EVAL_TEXT, 2000, 1, &bt, &err) && bt.diff == 0 && bt.lo == 0 && bt.hi == 0,
       "the same losses: difference 0, interval [0, 0]");
    int rc = mode_eval_bootstrap(&rsh, &rb, MODE_EVAL_TEXT, 2000, 1, &bt, &err);
    ok(!rc && bt.lo > 0 && bt.lo <= bt.diff && bt.diff <= bt.hi && bt.a_lower == 0,
       "0.05 nats more on every record: every resample is worse, the interval [%g, %g] holds %g and excludes 0", bt.lo, bt.hi, bt.diff);
    ok(fabs(bt.diff - (exp(1.05) - exp(1.0))) < 1e-12, "difference of the perplexities on all records: %.15g", bt.diff);
    /* differences ±0.1 nats with mean 0 over 400 one-token records: ppl_a - ppl_b ≈ e^1 · mean(d),
     * whose bootstrap standard deviation is e · 0.1 / √400; the interval is ±1.96 of it */
    rc = mode_eval_bootstrap(&rn, &rb, MODE_EVAL_TEXT, 20000, 3, &bt, &err);
    ok(!rc, "bootstrap runs");
    const double half = 1.96 * exp(1.0) * 0.1 / sqrt((double)N), w = (bt.hi - bt.lo) / 2;
    ok(fabs(w - half) < 0.1 * half && bt.lo < 0 && bt.hi > 0,
       "zero-mean differences: half-width %.5f within 10%% of the delta method's %.5f, the interval holds 0", w, half);
    /* pairing: the same differences on records that spread far more; drawing a and b apart would
     * widen the interval by that spread (about 20 times here) */
    rc = mode_eval_bootstrap(&wa, &wb, MODE_EVAL_TEXT, 20000, 3, &bt2, &err);
    ok(!rc, "bootstrap on spread-out records runs");
    const double w2 = (bt2.hi - bt2.lo) / 2, ppl = exp((N / 2 * 3.0 + N / 2 * 0.1) / N);
    ok(fabs(w2 - 1.96 * ppl * 0.1 / sqrt((double)N)) < 0.15 * 1.96 * ppl * 0.1 / sqrt((double)N),
       "paired: half-width %.5f follows the differences (%.5f), not the records' spread", w2, 1.96 * ppl * 0.1 / sqrt((double)N));
    struct mode_eval_boot b1, b2, b3;
    mode_eval_bootstrap(&rn, &rb, MODE_EVAL_TEXT, 1000, 5, &b1, &err);
    mode_eval_bootstrap(&rn, &rb, MODE_EVAL_TEXT, 1000, 5, &b2, &err);
    mode_eval_bootstrap(&rn, &rb, MODE_EVAL_TEXT, 1000, 6, &b3, &err);
    ok(b1.lo == b2.lo && b1.hi == b2.hi && (b1.lo != b3.lo || b1.hi != b3.hi), "the same seed, the same interval; another seed, another");
    ok(!mode_eval_bootstrap(&rn, &rb, MODE_EVAL_ANSWER, 1000, 5, &b1, &err) && b1.records == 0 && isnan(b1.diff),
       "a group without records: none counted, no numbers");
    free(rn.id[7]);
    rn.id[7] = strdup("other");
    is_int(mode_eval_bootstrap(&rn, &rb, MODE_EVAL_TEXT, 1000, 5, &b1, &err), MODE_EDATA, "records that differ are refused");
    has_str(err.msg, "record 8 differs", "naming the first: %s", err.msg);
    rn.n--;
    is_int(mode_eval_bootstrap(&rn, &rb, MODE_EVAL_TEXT, 1000, 5, &b1, &err), MODE_EDATA, "so are sets of different sizes");
    rn.n++;
    mode_eval_records_free(&rb), mode_eval_records_free(&rs), mode_eval_records_free(&rsh), mode_eval_records_free(&rn);
    mode_eval_records_free(&wa), mode_eval_records_free(&wb);
}

/* the record of the sample in progress as a JSON line appended to fd */
static void write_record(int fd, const struct mode_eval *e, int64_t sample, const char *id)
{
    struct mode_mp b;
    struct mode_err err = {0};
    mode_mp_init(&b);
    mode_eval_record(&b, e, sample, id);
    mode_mp_finish(&b, &err);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_next(&u, b.buf, b.len, &off);
    struct mode_wbuf w;
    mode_wbuf_init(&w, fd, "records", &err);
    mode_mpjson_write(&w, &u.data, 1);
    mode_wbuf_putc(&w, '\n');
    mode_wbuf_free(&w, &err);
    msgpack_unpacked_destroy(&u);
    mode_mp_free(&b);
}

int main(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/records.jsonl", tap_tmpdir());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) BAIL_OUT("cannot create the records file");
    struct mode_eval e;
    mode_eval_init(&e);
    /* a text record of 3 tokens over a vocabulary of 4: uniform rows -> nll = ln 4 per prediction */
    int32_t t1[3] = {1, 2, 3};
    uint8_t s1[3] = {0, 1, 1};
    float uniform[3 * 4] = {0};
    mode_eval_begin(&e, 3, s1, 0);
    mode_eval_rows(&e, uniform, 0, 3, 4, t1, 3, s1);
    write_record(fd, &e, 0, "a \"quoted\" id");
    mode_eval_end(&e);
    ok(e.g[0][0].records == 1 && e.g[0][0].tokens == 2, "text record: 2 predictions");
    ok(fabs(e.g[0][0].nll - 2 * log(4.0)) < 1e-12, "uniform rows: nll = 2 ln 4");
    /* an answer record with an image: only tokens 3 and 4 scored; rows chosen so that the argmax hits
     * token 3 (row 2) and misses token 4 (row 3), fed in two chunks */
    int32_t t2[5] = {0, 1, 0, 2, 1};
    uint8_t s2[5] = {0, 0, 0, 1, 1};
    float rows[5 * 4] = {0};
    rows[2 * 4 + 2] = 5;                 /* row 2 predicts token 2 = t2[3]: hit */
    rows[3 * 4 + 0] = 5;                 /* row 3 predicts token 0, the target is 1: miss */
    mode_eval_begin(&e, 5, s2, 1);
    mode_eval_rows(&e, rows, 0, 2, 4, t2, 5, s2);
    mode_eval_rows(&e, rows + 2 * 4, 2, 3, 4, t2, 5, s2);
    write_record(fd, &e, 1, "b");
    mode_eval_end(&e);
    struct mode_eval_group *a = &e.g[MODE_EVAL_IMAGE][MODE_EVAL_ANSWER];
    ok(a->records == 1 && a->tokens == 2 && a->exact == 0, "answer record: 2 scored tokens, not an exact match");
    double want = (log(exp(5.0) + 3) - 5) + (log(exp(5.0) + 3) - 0);
    ok(fabs(a->nll - want) < 1e-9, "answer nll %.9f = %.9f", a->nll, want);
    /* the same answer with the second row fixed is an exact match; ties take the first maximum */
    rows[3 * 4 + 1] = 5; /* now tokens 0 and 1 tie at 5: argmax is 0, still a miss */
    mode_eval_begin(&e, 5, s2, 1);
    mode_eval_rows(&e, rows, 0, 5, 4, t2, 5, s2);
    mode_eval_end(&e);
    is_int(a->exact, 0, "a tie resolves to the first maximum (a miss here)");
    rows[3 * 4 + 0] = 0;
    mode_eval_begin(&e, 5, s2, 1);
    mode_eval_rows(&e, rows, 0, 5, 4, t2, 5, s2);
    mode_eval_end(&e);
    is_int(a->exact, 1, "every scored token the argmax: an exact match");
    /* a record with nothing scored counts apart */
    uint8_t s3[2] = {0, 0};
    mode_eval_begin(&e, 2, s3, 0);
    write_record(fd, &e, 4, "c");
    mode_eval_end(&e);
    is_int(e.unscored, 1, "an unscored record is counted as such");
    is_int(e.samples, 5, "5 samples seen");
    close(fd);

    /* the records read back */
    struct mode_eval_records r;
    struct mode_err err = {0};
    int rc = mode_eval_records_load(path, &r, &err);
    ok(!rc && r.n == 3, "3 records read back: %s", rc ? err.msg : "ok");
    if (!rc) {
        ok(r.cls[0] == MODE_EVAL_TEXT && r.tokens[0] == 2 && r.nll[0] == 2 * log(4.0) && !strcmp(r.id[0], "a \"quoted\" id"),
           "a text record: class, tokens, the nll to the bit, the id unescaped");
        ok(r.cls[1] == MODE_EVAL_ANSWER && r.sample[1] == 1 && r.nll[1] == want && !r.exact[1], "an answer record and its exact match");
        ok(r.cls[2] == -1 && r.tokens[2] == 0, "an unscored record: class none");
        mode_eval_records_free(&r);
    }
    FILE *f = fopen(path, "a");
    fputs("{\"sample\":5,\"id\":\"d\",\"class\":\"text\",\"image\":false,\"tokens\":0,\"nll\":1.5}\n", f);
    fclose(f);
    is_int(mode_eval_records_load(path, &r, &err), MODE_EDATA, "a text record with no token is refused");
    has_str(err.msg, "records.jsonl: line 4", "naming file and line: %s", err.msg);
    snprintf(path + strlen(path) - 13, 20, "absent.jsonl");
    is_int(mode_eval_records_load(path, &r, &err), MODE_ENOINPUT, "a missing file: MODE_ENOINPUT");

    bootstrap_tests();
    return tap_done();
}
