/* test_eval — perplexity and exact match on hand-made logits (lib/eval.c). */
#include "../../lib/eval.h"
#include "tap.h"

#include <math.h>
#include <string.h>

int main(void)
{
    struct mode_eval e;
    mode_eval_init(&e);
    /* a text record of 3 tokens over a vocabulary of 4: uniform rows -> nll = ln 4 per prediction */
    int32_t t1[3] = {1, 2, 3};
    uint8_t s1[3] = {0, 1, 1};
    float uniform[3 * 4] = {0};
    mode_eval_begin(&e, 3, s1, 0);
    mode_eval_rows(&e, uniform, 0, 3, 4, t1, 3, s1);
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
    mode_eval_end(&e);
    is_int(e.unscored, 1, "an unscored record is counted as such");
    is_int(e.samples, 5, "5 samples seen");
    return tap_done();
}
