/* eval.c — perplexity and exact match, per-record losses, the paired bootstrap (eval.h). */
#include "eval.h"
#include "io.h"
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- per-record losses and the paired bootstrap ----------------------------------------------- */

void mode_eval_record(struct mode_mp *b, const struct mode_eval *e, int64_t sample, const char *id)
{
    mode_mp_map_open(b);
    mode_mp_key(b, "sample");
    mode_mp_int(b, sample);
    mode_mp_key(b, "id");
    mode_mp_str(b, id ? id : "");
    mode_mp_key(b, "class");
    mode_mp_str(b, !e->scored ? "none" : e->cls == MODE_EVAL_TEXT ? "text" : "answer");
    mode_mp_key(b, "image");
    mode_mp_bool(b, e->mod == MODE_EVAL_IMAGE);
    mode_mp_key(b, "tokens");
    mode_mp_int(b, e->scored);
    mode_mp_key(b, "nll");
    mode_mp_f64(b, e->nll);
    if (e->scored && e->cls == MODE_EVAL_ANSWER) {
        mode_mp_key(b, "exact");
        mode_mp_bool(b, e->all_argmax);
    }
    mode_mp_close(b);
}

void mode_eval_records_free(struct mode_eval_records *r)
{
    for (int64_t i = 0; i < r->n; i++) free(r->id[i]);
    free(r->sample), free(r->tokens), free(r->id), free(r->cls), free(r->exact), free(r->nll);
    memset(r, 0, sizeof *r);
}

static int record_line(const char *path, int64_t line, const char *text, size_t len, struct mode_eval_records *r, struct mode_err *err)
{
    char where[4200];
    snprintf(where, sizeof where, "%s: line %lld", path, (long long)line);
    json_t *j;
    int rc = mode_json_parse(where, text, len, &j, err);
    if (rc) return rc;
    const struct mode_jctx c = {where, ""};
    int64_t sample = -1, tokens = -1;
    double nll = 0;
    const char *id = NULL, *cls = NULL;
    bool image = false, exact = false;
    if ((rc = mode_json_int(&c, j, "sample", true, &sample, err)) || (rc = mode_json_str(&c, j, "id", true, &id, err)) ||
        (rc = mode_json_str(&c, j, "class", true, &cls, err)) || (rc = mode_json_bool(&c, j, "image", true, &image, err)) ||
        (rc = mode_json_int(&c, j, "tokens", true, &tokens, err)) || (rc = mode_json_num(&c, j, "nll", true, &nll, err)) ||
        (rc = mode_json_bool(&c, j, "exact", false, &exact, err)))
        goto out;
    int k = !strcmp(cls, "text") ? MODE_EVAL_TEXT : !strcmp(cls, "answer") ? MODE_EVAL_ANSWER : !strcmp(cls, "none") ? -1 : -2;
    if (k == -2) {
        rc = mode_err_set(err, MODE_EDATA, "%s: class '%s' is not text, answer or none", where, cls);
        goto out;
    }
    if (sample < 0 || tokens < 0 || !isfinite(nll) || nll < 0 || (k >= 0) != (tokens > 0)) {
        rc = mode_err_set(err, MODE_EDATA, "%s: sample %lld with %lld tokens and nll %g is not a record of mode-eval --records", where,
                          (long long)sample, (long long)tokens, nll);
        goto out;
    }
    const int64_t i = r->n;
    int64_t *ns = realloc(r->sample, sizeof *ns * (size_t)(i + 1)), *nt = ns ? realloc(r->tokens, sizeof *nt * (size_t)(i + 1)) : NULL;
    if (ns) r->sample = ns;
    if (nt) r->tokens = nt;
    char **ni = nt ? realloc(r->id, sizeof *ni * (size_t)(i + 1)) : NULL;
    if (ni) r->id = ni;
    int *nc = ni ? realloc(r->cls, sizeof *nc * (size_t)(i + 1)) : NULL;
    if (nc) r->cls = nc;
    bool *ne = nc ? realloc(r->exact, sizeof *ne * (size_t)(i + 1)) : NULL;
    if (ne) r->exact = ne;
    double *nn = ne ? realloc(r->nll, sizeof *nn * (size_t)(i + 1)) : NULL;
    if (nn) r->nll = nn;
    char *sid = nn ? strdup(id) : NULL;
    if (!sid) {
        rc = mode_err_oom(err, 64 * (size_t)(i + 1), "records");
        goto out;
    }
    r->sample[i] = sample, r->tokens[i] = tokens, r->id[i] = sid, r->cls[i] = k, r->exact[i] = exact, r->nll[i] = nll;
    r->n++;
out:
    json_decref(j);
    return rc;
}

int mode_eval_records_load(const char *path, struct mode_eval_records *r, struct mode_err *err)
{
    memset(r, 0, sizeof *r);
    char *text;
    size_t len;
    /* 1 GiB: far above the ~100 bytes a record of the largest evaluation set takes */
    int rc = mode_read_file(path, (size_t)1 << 30, &text, &len, err);
    if (rc) return rc;
    int64_t line = 0;
    for (size_t p = 0; p < len && !rc;) {
        size_t q = p;
        while (q < len && text[q] != '\n') q++;
        line++;
        if (q > p) rc = record_line(path, line, text + p, q - p, r, err);
        p = q + 1;
    }
    free(text);
    if (!rc && !r->n) rc = mode_err_set(err, MODE_EDATA, "%s: no record", path);
    if (rc) mode_eval_records_free(r);
    return rc;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the q-quantile of sorted v[0..n-1], linear between order statistics (numpy's default) */
static double quantile(const double *v, int n, double q)
{
    const double h = (n - 1) * q;
    const int i = (int)floor(h);
    return i + 1 < n ? v[i] + (h - i) * (v[i + 1] - v[i]) : v[n - 1];
}

int mode_eval_bootstrap(const struct mode_eval_records *a, const struct mode_eval_records *b, int cls, int resamples, uint64_t seed,
                        struct mode_eval_boot *out, struct mode_err *err)
{
    memset(out, 0, sizeof *out);
    if (resamples < 1) return mode_err_set(err, MODE_EUSAGE, "bootstrap: %d resamples", resamples);
    if (a->n != b->n) return mode_err_set(err, MODE_EDATA, "the two evaluations have %lld and %lld records: not the same records", (long long)a->n, (long long)b->n);
    for (int64_t i = 0; i < a->n; i++)
        if (a->sample[i] != b->sample[i] || strcmp(a->id[i], b->id[i]) || a->cls[i] != b->cls[i] || a->tokens[i] != b->tokens[i])
            return mode_err_set(err, MODE_EDATA,
                                "record %lld differs between the two evaluations (sample %lld id '%s' with %lld tokens against sample "
                                "%lld id '%s' with %lld tokens): not the same evaluation set",
                                (long long)i + 1, (long long)a->sample[i], a->id[i], (long long)a->tokens[i], (long long)b->sample[i],
                                b->id[i], (long long)b->tokens[i]);
    int64_t n = 0;
    for (int64_t i = 0; i < a->n; i++) n += a->cls[i] == cls;
    out->records = n;
    out->ppl_a = out->ppl_b = out->diff = out->lo = out->hi = out->a_lower = NAN;
    out->em_a = out->em_b = out->em_diff = out->em_lo = out->em_hi = NAN;
    if (!n) return MODE_OK;
    int64_t *idx = malloc(sizeof *idx * (size_t)n);
    double *d = malloc(sizeof *d * (size_t)resamples), *de = malloc(sizeof *de * (size_t)resamples);
    if (!idx || !d || !de) {
        free(idx), free(d), free(de);
        return mode_err_oom(err, sizeof *d * (size_t)resamples * 2, "bootstrap");
    }
    double na = 0, nb = 0, ea = 0, eb = 0;
    int64_t tok = 0;
    for (int64_t i = 0, k = 0; i < a->n; i++) {
        if (a->cls[i] != cls) continue;
        idx[k++] = i;
        na += a->nll[i], nb += b->nll[i], tok += a->tokens[i], ea += a->exact[i], eb += b->exact[i];
    }
    out->tokens = tok;
    out->ppl_a = exp(na / (double)tok), out->ppl_b = exp(nb / (double)tok), out->diff = out->ppl_a - out->ppl_b;
    if (cls == MODE_EVAL_ANSWER) out->em_a = ea / (double)n, out->em_b = eb / (double)n, out->em_diff = out->em_a - out->em_b;
    uint64_t st = seed;
    int64_t lower = 0;
    for (int r = 0; r < resamples; r++) {
        double sa = 0, sb = 0, xa = 0, xb = 0;
        int64_t t = 0;
        for (int64_t j = 0; j < n; j++) {
            const int64_t i = idx[splitmix64(&st) % (uint64_t)n];
            sa += a->nll[i], sb += b->nll[i], t += a->tokens[i], xa += a->exact[i], xb += b->exact[i];
        }
        d[r] = exp(sa / (double)t) - exp(sb / (double)t);
        de[r] = (xa - xb) / (double)n;
        lower += sa < sb;
    }
    qsort(d, (size_t)resamples, sizeof *d, cmp_double);
    qsort(de, (size_t)resamples, sizeof *de, cmp_double);
    out->lo = quantile(d, resamples, 0.025), out->hi = quantile(d, resamples, 0.975);
    out->a_lower = (double)lower / resamples;
    if (cls == MODE_EVAL_ANSWER) out->em_lo = quantile(de, resamples, 0.025), out->em_hi = quantile(de, resamples, 0.975);
    free(idx), free(d), free(de);
    return MODE_OK;
}
