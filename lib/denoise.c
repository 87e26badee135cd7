/* denoise.c — key image tokens and expert-selection counts per class (denoise.h). */
#include "denoise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *const mode_freq_class_name[MODE_CLS_COUNT] = {"text", "vision", "vision_key", "vision_redundant", "all"};

int mode_denoise_method_parse(const char *s)
{
    if (!strcmp(s, "attention")) return MODE_DENOISE_ATTENTION;
    if (!strcmp(s, "random")) return MODE_DENOISE_RANDOM;
    if (!strcmp(s, "none")) return MODE_DENOISE_NONE;
    return -1;
}

const char *mode_denoise_method_name(enum mode_denoise_method m)
{
    return m == MODE_DENOISE_ATTENTION ? "attention" : m == MODE_DENOISE_RANDOM ? "random" : "none";
}

int64_t mode_denoise_n_key(double ratio, int64_t n)
{
    /* ceil with a tolerance: 0.2 * 65 is 13.000000000000002 in doubles and must give 13 */
    double x = ratio * (double)n;
    int64_t k = (int64_t)ceil(x - 1e-9 * (x > 1 ? x : 1));
    return k < 0 ? 0 : k > n ? n : k;
}

struct scored {
    float score;
    int64_t idx;
};

static int by_score_desc(const void *a, const void *b)
{
    const struct scored *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx; /* ties: the earlier token first */
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int mode_denoise_keep(const struct mode_trace_rec *t, enum mode_denoise_method method, double ratio, uint64_t seed,
                      uint8_t *keep, bool *boundary_tie, struct mode_err *err)
{
    int64_t n = t->n_img, k = mode_denoise_n_key(ratio, n);
    *boundary_tie = false;
    if (method == MODE_DENOISE_NONE) {
        memset(keep, 1, (size_t)n);
        return MODE_OK;
    }
    memset(keep, 0, (size_t)n);
    if (n == 0) return MODE_OK;
    if (method == MODE_DENOISE_RANDOM) {
        /* partial Fisher-Yates over the image tokens, seeded by (seed, sample, layer) */
        int64_t *perm = malloc((size_t)n * sizeof *perm);
        if (!perm) return mode_err_oom(err, (size_t)n * sizeof *perm, "a permutation");
        for (int64_t i = 0; i < n; i++) perm[i] = i;
        uint64_t s = seed ^ ((uint64_t)t->sample * 0x100000001b3ull) ^ ((uint64_t)t->layer << 48);
        for (int64_t i = 0; i < k; i++) {
            int64_t j = i + (int64_t)(splitmix(&s) % (uint64_t)(n - i));
            int64_t tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
            keep[perm[i]] = 1;
        }
        free(perm);
        return MODE_OK;
    }
    if (!t->has_attn)
        return mode_err_set(err, MODE_EDATA, "sample %lld ('%.*s') layer %lld: no attention scores in the trace (--method attention needs them)",
                            (long long)t->sample, (int)t->id_len, t->id, (long long)t->layer);
    struct scored *v = malloc((size_t)n * sizeof *v);
    if (!v) return mode_err_oom(err, (size_t)n * sizeof *v, "scores");
    for (int64_t i = 0; i < n; i++) v[i] = (struct scored){mode_trace_attn(t, i), i};
    qsort(v, (size_t)n, sizeof *v, by_score_desc);
    for (int64_t i = 0; i < k; i++) keep[v[i].idx] = 1;
    if (k > 0 && k < n && v[k - 1].score == v[k].score) *boundary_tie = true;
    free(v);
    return MODE_OK;
}

int mode_freq_init(struct mode_freq_table *f, int n_layer, int n_expert, struct mode_err *err)
{
    memset(f, 0, sizeof *f);
    f->n_layer = n_layer;
    f->n_expert = n_expert;
    size_t cells = (size_t)n_layer * MODE_CLS_COUNT * (size_t)n_expert;
    f->count = calloc(cells, sizeof *f->count);
    f->weight = calloc(cells, sizeof *f->weight);
    f->prob = calloc(cells, sizeof *f->prob);
    f->tokens = calloc((size_t)n_layer * MODE_CLS_COUNT, sizeof *f->tokens);
    f->seen = calloc((size_t)n_layer, sizeof *f->seen);
    if (!f->count || !f->weight || !f->prob || !f->tokens || !f->seen) {
        mode_freq_free(f);
        return mode_err_oom(err, cells * 24, "frequency tables");
    }
    return MODE_OK;
}

void mode_freq_free(struct mode_freq_table *f)
{
    free(f->count);
    free(f->weight);
    free(f->prob);
    free(f->tokens);
    free(f->seen);
    memset(f, 0, sizeof *f);
}

int mode_freq_add(struct mode_freq_table *f, const struct mode_trace_rec *t, const uint8_t *keep, const struct mode_rec *where,
                  struct mode_err *err)
{
    if (t->layer >= f->n_layer)
        return mode_err_set(err, MODE_EDATA, "%s: %s: layer %lld, the model has %d layers", where->stream, where->what,
                            (long long)t->layer, f->n_layer);
    size_t L = (size_t)t->layer, E = (size_t)f->n_expert;
    const uint8_t *mod = t->modality.data;
    int64_t img = 0;
    for (int64_t i = 0; i < t->n_tok; i++) {
        int cls[3], nc = 0;
        if (mod[i] == 0) cls[nc++] = MODE_CLS_TEXT;
        else {
            cls[nc++] = MODE_CLS_VISION;
            cls[nc++] = keep[img] ? MODE_CLS_KEY : MODE_CLS_REDUNDANT;
            img++;
        }
        cls[nc++] = MODE_CLS_ALL;
        for (int c = 0; c < nc; c++) f->tokens[L * MODE_CLS_COUNT + (size_t)cls[c]]++;
        for (int j = 0; j < t->k; j++) {
            int32_t e = mode_trace_expert(t, i, j);
            if (e >= f->n_expert)
                return mode_err_set(err, MODE_EDATA, "%s: %s: expert %d, the model has %d", where->stream, where->what, e, f->n_expert);
            double w = mode_trace_weight(t, i, j), p = t->has_probs ? mode_trace_prob(t, i, j) : 0;
            for (int c = 0; c < nc; c++) {
                size_t cell = (L * MODE_CLS_COUNT + (size_t)cls[c]) * E + (size_t)e;
                f->count[cell]++;
                f->weight[cell] += w;
                f->prob[cell] += p;
            }
        }
    }
    f->without_probs += !t->has_probs;
    f->seen[L] = true;
    return MODE_OK;
}
