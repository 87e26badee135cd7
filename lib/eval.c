/* eval.c — perplexity and exact match (eval.h). */
#include "eval.h"

#include <math.h>
#include <string.h>

void mode_eval_init(struct mode_eval *e) { memset(e, 0, sizeof *e); }

void mode_eval_begin(struct mode_eval *e, int64_t n_tok, const uint8_t *score, int64_t n_image_tokens)
{
    int64_t scored = 0;
    for (int64_t i = 1; i < n_tok; i++) scored += score[i] != 0;
    e->cls = scored == n_tok - 1 ? MODE_EVAL_TEXT : MODE_EVAL_ANSWER;
    e->mod = n_image_tokens ? MODE_EVAL_IMAGE : MODE_EVAL_NO_IMAGE;
    e->all_argmax = true;
    e->nll = 0;
    e->scored = 0;
    e->bad_row = -1;
    e->samples++;
    e->tokens += n_tok;
    e->image_tokens += n_image_tokens;
}

void mode_eval_rows(struct mode_eval *e, const float *logits, int64_t r0, int64_t n, int64_t n_vocab, const int32_t *tokens,
                    int64_t n_tok, const uint8_t *score)
{
    for (int64_t r = r0; r < r0 + n; r++) {
        if (r + 1 >= n_tok || !score[r + 1]) continue;
        const float *l = logits + (r - r0) * n_vocab;
        int64_t arg = 0;
        for (int64_t v = 1; v < n_vocab; v++)
            if (l[v] > l[arg]) arg = v;
        if (e->bad_row < 0)
            for (int64_t v = 0; v < n_vocab; v++)
                if (!isfinite(l[v])) {
                    e->bad_row = r, e->bad_vocab = v, e->bad_logit = l[v];
                    break;
                }
        double s = 0, mx = l[arg];
        for (int64_t v = 0; v < n_vocab; v++) s += exp((double)l[v] - mx);
        int32_t target = tokens[r + 1];
        e->nll += mx + log(s) - (double)l[target];
        e->scored++;
        if (arg != target) e->all_argmax = false;
    }
}

int mode_eval_check(const struct mode_eval *e, struct mode_err *err)
{
    if (e->bad_row >= 0)
        return mode_err_set(err, MODE_EDATA, "the logits predicting token %lld hold %s (vocabulary entry %lld)",
                            (long long)e->bad_row + 1, isnan(e->bad_logit) ? "nan" : e->bad_logit > 0 ? "inf" : "-inf",
                            (long long)e->bad_vocab);
    if (e->scored && !isfinite(exp(e->nll / (double)e->scored)))
        return mode_err_set(err, MODE_EDATA, "its perplexity overflows a double: a mean negative log-likelihood of %g nats a token",
                            e->nll / (double)e->scored);
    return MODE_OK;
}

void mode_eval_end(struct mode_eval *e)
{
    if (!e->scored) {
        e->unscored++;
        return;
    }
    struct mode_eval_group *g = &e->g[e->mod][e->cls];
    g->records++;
    g->tokens += e->scored;
    g->nll += e->nll;
    g->exact += e->all_argmax;
}

static void pack_group(struct mode_mp *b, const struct mode_eval_group *g, bool answer)
{
    mode_mp_map_open(b);
    mode_mp_key(b, "records");
    mode_mp_int(b, g->records);
    mode_mp_key(b, "tokens");
    mode_mp_int(b, g->tokens);
    mode_mp_key(b, "nll");
    mode_mp_f64(b, g->nll);
    mode_mp_key(b, "perplexity");
    if (g->tokens) mode_mp_f64(b, exp(g->nll / (double)g->tokens));
    else mode_mp_nil(b);
    if (answer) {
        mode_mp_key(b, "exact_match");
        mode_mp_int(b, g->exact);
        mode_mp_key(b, "exact_match_rate");
        if (g->records) mode_mp_f64(b, (double)g->exact / (double)g->records);
        else mode_mp_nil(b);
    }
    mode_mp_close(b);
}

static struct mode_eval_group sum(const struct mode_eval_group *a, const struct mode_eval_group *c)
{
    struct mode_eval_group s = {a->records + c->records, a->tokens + c->tokens, a->exact + c->exact, a->nll + c->nll};
    return s;
}

void mode_eval_pack(struct mode_mp *b, const struct mode_eval *e)
{
    static const char *const cls[2] = {"text", "answer"}, *const mod[2] = {"no_image", "image"};
    mode_mp_map_open(b);
    for (int c = 0; c < 2; c++) {
        struct mode_eval_group s = sum(&e->g[0][c], &e->g[1][c]);
        mode_mp_key(b, cls[c]);
        pack_group(b, &s, c == MODE_EVAL_ANSWER);
    }
    mode_mp_key(b, "by_modality");
    mode_mp_map_open(b);
    for (int m = 0; m < 2; m++) {
        mode_mp_key(b, mod[m]);
        mode_mp_map_open(b);
        for (int c = 0; c < 2; c++) {
            mode_mp_key(b, cls[c]);
            pack_group(b, &e->g[m][c], c == MODE_EVAL_ANSWER);
        }
        mode_mp_close(b);
    }
    mode_mp_close(b);
    mode_mp_key(b, "samples");
    mode_mp_int(b, e->samples);
    mode_mp_key(b, "unscored_samples");
    mode_mp_int(b, e->unscored);
    mode_mp_key(b, "tokens");
    mode_mp_map_open(b);
    mode_mp_key(b, "total");
    mode_mp_int(b, e->tokens);
    mode_mp_key(b, "text");
    mode_mp_int(b, e->tokens - e->image_tokens);
    mode_mp_key(b, "image");
    mode_mp_int(b, e->image_tokens);
    mode_mp_close(b);
    mode_mp_close(b);
}
