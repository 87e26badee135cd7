/* bitalloc.c — freq/sens tables, method costs, budgets and the per-layer or global knapsack. */
#include "bitalloc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mode_alloc_data_init(struct mode_alloc_data *d) { memset(d, 0, sizeof *d); }

static void layer_free(struct mode_alloc_layer *l)
{
    free(l->freq), free(l->count), free(l->wsum), free(l->prob), free(l->dt), free(l->dv), free(l->da);
}

void mode_alloc_data_free(struct mode_alloc_data *d)
{
    for (int i = 0; i < d->n_layer; i++) layer_free(&d->L[i]);
    free(d->L);
    memset(d, 0, sizeof *d);
}

/* the entry of layer `layer`, created (in ascending order) when absent */
static struct mode_alloc_layer *layer_get(struct mode_alloc_data *d, int layer, struct mode_err *err)
{
    int i = 0;
    while (i < d->n_layer && d->L[i].layer < layer) i++;
    if (i < d->n_layer && d->L[i].layer == layer) return &d->L[i];
    struct mode_alloc_layer *n = realloc(d->L, sizeof *n * (size_t)(d->n_layer + 1));
    if (!n) {
        mode_err_oom(err, sizeof *n * (size_t)(d->n_layer + 1), "layers");
        return NULL;
    }
    d->L = n;
    memmove(&d->L[i + 1], &d->L[i], sizeof *n * (size_t)(d->n_layer - i));
    memset(&d->L[i], 0, sizeof *n);
    d->L[i].layer = layer;
    d->n_layer++;
    return &d->L[i];
}

static void copy_f64(double *dst, const struct mode_tensor *t) { memcpy(dst, t->data, sizeof *dst * t->numel); }

static int check_finite(const double *v, size_t n, const struct mode_rec *rec, const char *what, struct mode_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || v[i] < 0)
            return mode_err_set(err, MODE_EDATA, "%s: %s: %s[%zu] is %g (must be finite and not negative)", rec->stream, rec->what,
                                what, i, v[i]);
    return MODE_OK;
}

static int expert_count(struct mode_alloc_data *d, int64_t n, const struct mode_rec *rec, struct mode_err *err)
{
    if (n < 1 || n > 4096) return mode_err_set(err, MODE_EDATA, "%s: %s: %lld experts", rec->stream, rec->what, (long long)n);
    if (d->n_expert && d->n_expert != n)
        return mode_err_set(err, MODE_EDATA, "%s: %s: %lld experts, but the other records or streams have %d: not the same model",
                            rec->stream, rec->what, (long long)n, d->n_expert);
    d->n_expert = (int)n;
    return MODE_OK;
}

int mode_alloc_read_freq(struct mode_alloc_data *d, struct mode_stream_reader *r, struct mode_err *err)
{
    char what[64];
    for (uint64_t ri = 0;; ri++) {
        const msgpack_object *o;
        int rc = mode_stream_next(r, &o, err);
        if (rc) return rc;
        if (!o) break;
        snprintf(what, sizeof what, "record %llu", (unsigned long long)ri);
        struct mode_rec rec = {o, r->name, what};
        int64_t layer = -1, ne = 0;
        const msgpack_object *classes;
        if ((rc = mode_rec_int(&rec, "layer", true, &layer, err)) || (rc = mode_rec_int(&rec, "n_expert", true, &ne, err)) ||
            (rc = mode_rec_map(&rec, "classes", true, &classes, err)))
            return rc;
        if (layer < 0 || layer > 100000) return mode_err_set(err, MODE_EDATA, "%s: %s: layer %lld", r->name, what, (long long)layer);
        if ((rc = expert_count(d, ne, &rec, err))) return rc;
        struct mode_alloc_layer *l = layer_get(d, (int)layer, err);
        if (!l) return err->code;
        if (l->has_freq) return mode_err_set(err, MODE_EDATA, "%s: %s: layer %lld appears twice", r->name, what, (long long)layer);
        const size_t E = (size_t)ne;
        l->freq = calloc(MODE_CLS_COUNT * E, sizeof *l->freq);
        l->count = calloc(MODE_CLS_COUNT * E, sizeof *l->count);
        l->wsum = calloc(MODE_CLS_COUNT * E, sizeof *l->wsum);
        l->prob = calloc(MODE_CLS_COUNT * E, sizeof *l->prob);
        if (!l->freq || !l->count || !l->wsum || !l->prob) return mode_err_oom(err, MODE_CLS_COUNT * E * 32, "frequencies");
        l->has_freq = true;
        l->has_prob = true;
        for (int c = 0; c < MODE_CLS_COUNT; c++) {
            char cwhat[96];
            snprintf(cwhat, sizeof cwhat, "%s, class '%s'", what, mode_freq_class_name[c]);
            const msgpack_object *co = mode_mp_get(classes, mode_freq_class_name[c]);
            if (!co || co->type != MSGPACK_OBJECT_MAP)
                return mode_err_set(err, MODE_EDATA, "%s: %s: class '%s' is missing", r->name, what, mode_freq_class_name[c]);
            struct mode_rec cr = {co, r->name, cwhat};
            struct mode_tensor tc, tw, tf;
            const int64_t dims[1] = {ne};
            if ((rc = mode_rec_tensor(&cr, "count", true, &tc, MODE_I64, 1, dims, err)) ||
                (rc = mode_rec_tensor(&cr, "weight", true, &tw, MODE_F64, 1, dims, err)) ||
                (rc = mode_rec_tensor(&cr, "freq", true, &tf, MODE_F64, 1, dims, err)) ||
                (rc = mode_rec_int(&cr, "tokens", true, &l->tokens[c], err)))
                return rc;
            memcpy(l->count + c * E, tc.data, E * sizeof *l->count);
            copy_f64(l->wsum + c * E, &tw);
            copy_f64(l->freq + c * E, &tf);
            /* prob: router probabilities before renormalisation; absent from streams made from
             * traces older than the field */
            if (!mode_mp_get(co, "prob")) l->has_prob = false;
            else {
                struct mode_tensor tp;
                if ((rc = mode_rec_tensor(&cr, "prob", true, &tp, MODE_F64, 1, dims, err))) return rc;
                copy_f64(l->prob + c * E, &tp);
                if ((rc = check_finite(l->prob + c * E, E, &cr, "prob", err))) return rc;
            }
            for (size_t e = 0; e < E; e++)
                if (l->count[c * E + e] < 0)
                    return mode_err_set(err, MODE_EDATA, "%s: %s: count[%zu] is negative", r->name, cwhat, e);
            if ((rc = check_finite(l->freq + c * E, E, &cr, "freq", err)) || (rc = check_finite(l->wsum + c * E, E, &cr, "weight", err)))
                return rc;
        }
    }
    d->have_freq = true;
    return MODE_OK;
}

int mode_alloc_read_sens(struct mode_alloc_data *d, struct mode_stream_reader *r, struct mode_err *err)
{
    char what[64];
    for (uint64_t ri = 0;; ri++) {
        const msgpack_object *o;
        int rc = mode_stream_next(r, &o, err);
        if (rc) return rc;
        if (!o) break;
        snprintf(what, sizeof what, "record %llu", (unsigned long long)ri);
        struct mode_rec rec = {o, r->name, what};
        int64_t layer = -1;
        const char *metric = "";
        size_t metric_n = 0;
        struct mode_tensor tb, tt, tv, ta;
        if ((rc = mode_rec_int(&rec, "layer", true, &layer, err)) || (rc = mode_rec_str(&rec, "metric", true, &metric, &metric_n, err)) ||
            (rc = mode_rec_tensor(&rec, "bits", true, &tb, MODE_I32, 1, NULL, err)))
            return rc;
        if (layer < 0 || layer > 100000) return mode_err_set(err, MODE_EDATA, "%s: %s: layer %lld", r->name, what, (long long)layer);
        const int64_t B = tb.shape[0];
        if (B < 1 || B > MODE_ALLOC_MAX_BITS)
            return mode_err_set(err, MODE_EDATA, "%s: %s: %lld bit widths (1 to %d)", r->name, what, (long long)B, MODE_ALLOC_MAX_BITS);
        int bits[MODE_ALLOC_MAX_BITS];
        memcpy(bits, tb.data, sizeof *bits * (size_t)B);
        for (int i = 0; i < B; i++)
            if (bits[i] < 1 || bits[i] > 16 || (i && bits[i] <= bits[i - 1]))
                return mode_err_set(err, MODE_EDATA, "%s: %s: bits must be ascending widths of 1 to 16", r->name, what);
        if (d->n_bits && (d->n_bits != B || memcmp(d->bits, bits, sizeof *bits * (size_t)B)))
            return mode_err_set(err, MODE_EDATA, "%s: %s: bit widths differ from the stream's first record", r->name, what);
        d->n_bits = (int)B;
        memcpy(d->bits, bits, sizeof *bits * (size_t)B);
        if (!d->metric[0]) snprintf(d->metric, sizeof d->metric, "%.*s", (int)(metric_n < 15 ? metric_n : 15), metric);
        else if (strncmp(d->metric, metric, metric_n) || strlen(d->metric) != metric_n)
            return mode_err_set(err, MODE_EDATA, "%s: %s: metric '%.*s' differs from the first record's '%s'", r->name, what, (int)metric_n,
                                metric, d->metric);
        const int64_t dims[2] = {-1, B};
        if ((rc = mode_rec_tensor(&rec, "text", true, &tt, MODE_F64, 2, dims, err))) return rc;
        if ((rc = expert_count(d, tt.shape[0], &rec, err))) return rc;
        const int64_t dims2[2] = {d->n_expert, B};
        if ((rc = mode_rec_tensor(&rec, "vision", true, &tv, MODE_F64, 2, dims2, err))) return rc;
        ta.numel = 0;
        if (mode_mp_get(o, "all") && (rc = mode_rec_tensor(&rec, "all", true, &ta, MODE_F64, 2, dims2, err))) return rc;
        struct mode_alloc_layer *l = layer_get(d, (int)layer, err);
        if (!l) return err->code;
        if (l->has_sens) return mode_err_set(err, MODE_EDATA, "%s: %s: layer %lld appears twice", r->name, what, (long long)layer);
        const size_t n = (size_t)d->n_expert * (size_t)B;
        l->dt = malloc(sizeof *l->dt * n);
        l->dv = malloc(sizeof *l->dv * n);
        l->da = ta.numel ? malloc(sizeof *l->da * n) : NULL;
        if (!l->dt || !l->dv || (ta.numel && !l->da)) return mode_err_oom(err, 3 * n * 8, "sensitivities");
        l->has_sens = true;
        copy_f64(l->dt, &tt);
        copy_f64(l->dv, &tv);
        if (l->da) copy_f64(l->da, &ta);
        if ((rc = check_finite(l->dt, n, &rec, "text", err)) || (rc = check_finite(l->dv, n, &rec, "vision", err)) ||
            (l->da && (rc = check_finite(l->da, n, &rec, "all", err))))
            return rc;
        const msgpack_object *tok = mode_mp_get(o, "tokens");
        if (tok && tok->type == MSGPACK_OBJECT_MAP) {
            struct mode_rec tr = {tok, r->name, what};
            if ((rc = mode_rec_int(&tr, "text", false, &l->tok_text, err)) || (rc = mode_rec_int(&tr, "vision", false, &l->tok_vision, err)))
                return rc;
        }
    }
    d->have_sens = true;
    return MODE_OK;
}

int mode_alloc_check_layers(const struct mode_alloc_data *d, const char *freq_name, const char *sens_name, struct mode_err *err)
{
    if (!d->n_layer) return mode_err_set(err, MODE_EDATA, "%s: no layer records", d->have_freq ? freq_name : sens_name);
    for (int i = 0; i < d->n_layer; i++) {
        const struct mode_alloc_layer *l = &d->L[i];
        if (d->have_freq && !l->has_freq)
            return mode_err_set(err, MODE_EDATA, "%s has layer %d but %s does not: streams of different layer sets", sens_name, l->layer,
                                freq_name);
        if (d->have_sens && !l->has_sens)
            return mode_err_set(err, MODE_EDATA, "%s has layer %d but %s does not: streams of different layer sets", freq_name, l->layer,
                                sens_name);
    }
    return MODE_OK;
}

/* ---- provenance ------------------------------------------------------------------------------ */

static void model_str(const msgpack_object *m, char *buf, size_t n)
{
    char name[64] = "", arch[64] = "", cfg[16] = "", w[16] = "";
    mode_mp_str_copy(mode_mp_get(m, "name"), name, sizeof name);
    mode_mp_str_copy(mode_mp_get(m, "arch"), arch, sizeof arch);
    mode_mp_str_copy(mode_mp_get(m, "config"), cfg, 13);
    mode_mp_str_copy(mode_mp_get(m, "weights"), w, 13);
    snprintf(buf, n, "'%s' (%s, config %s, weights %s)", name, arch, cfg[0] ? cfg : "?", w[0] ? w : "?");
}

/* the first samples header in the inputs tree of h (h itself included) */
static const msgpack_object *find_samples(const msgpack_object *h, int depth)
{
    if (!h || h->type != MSGPACK_OBJECT_MAP || depth > 8) return NULL;
    if (mode_mp_str_eq(mode_mp_get(h, "kind"), "samples")) return h;
    const msgpack_object *in = mode_mp_get(h, "inputs");
    if (!in || in->type != MSGPACK_OBJECT_ARRAY) return NULL;
    for (uint32_t i = 0; i < in->via.array.size; i++) {
        const msgpack_object *s = find_samples(&in->via.array.ptr[i], depth + 1);
        if (s) return s;
    }
    return NULL;
}

static void data_str(const msgpack_object *in, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t i = 0; in && in->type == MSGPACK_OBJECT_ARRAY && i < in->via.array.size && off + 40 < n; i++) {
        char file[128] = "?", sha[16] = "?";
        mode_mp_str_copy(mode_mp_get(&in->via.array.ptr[i], "file"), file, sizeof file);
        mode_mp_str_copy(mode_mp_get(&in->via.array.ptr[i], "sha256"), sha, 13);
        off += (size_t)snprintf(buf + off, n - off, "%s%s (sha256 %s)", i ? ", " : "", file, sha);
    }
}

int mode_alloc_check_provenance(const msgpack_object *fh, const char *fname, const msgpack_object *sh, const char *sname,
                                struct mode_err *err)
{
    const msgpack_object *fm = mode_mp_get(fh, "model"), *sm = mode_mp_get(sh, "model");
    if (fm && sm && fm->type == MSGPACK_OBJECT_MAP && sm->type == MSGPACK_OBJECT_MAP) {
        bool same = true;
        static const char *const keys[] = {"arch", "config", "weights"};
        for (int k = 0; k < 3; k++) {
            const msgpack_object *a = mode_mp_get(fm, keys[k]), *b = mode_mp_get(sm, keys[k]);
            if (a && b && !mode_mp_equal(a, b)) same = false;
        }
        if (!same) {
            char a[256], b[256];
            model_str(fm, a, sizeof a);
            model_str(sm, b, sizeof b);
            return mode_err_set(err, MODE_EDATA, "%s and %s come from different models: %s is from %s, %s from %s", fname, sname, fname, a,
                                sname, b);
        }
    }
    const msgpack_object *fs = find_samples(fh, 0), *ss = find_samples(sh, 0);
    if (fs && ss) {
        const msgpack_object *fi = mode_mp_get(fs, "inputs"), *si = mode_mp_get(ss, "inputs");
        if (fi && si && fi->type == MSGPACK_OBJECT_ARRAY && si->type == MSGPACK_OBJECT_ARRAY && fi->via.array.size &&
            si->via.array.size && !mode_mp_equal(fi, si)) {
            char a[400], b[400];
            data_str(fi, a, sizeof a);
            data_str(si, b, sizeof b);
            return mode_err_set(err, MODE_EDATA, "%s and %s were measured on different calibration data: %s on %s, %s on %s", fname, sname,
                                fname, a, sname, b);
        }
    }
    return MODE_OK;
}

/* ---- methods --------------------------------------------------------------------------------- */

static const char *const method_names[MODE_ALLOC_N_METHODS] = {
    "mode",           "text-vision",      "freq-total",    "mcmoe",         "sens-only",        "uniform",
    "freq-text-vision", "freq-text-key",  "rank-all",      "rank-text-vision", "rank-text-key", "rank-text-redundant"};

const char *mode_alloc_method_list(void)
{
    return "mode, text-vision, freq-total, freq-text-vision, freq-text-key, mcmoe, sens-only, rank-all, rank-text-vision, "
           "rank-text-key, rank-text-redundant, uniform";
}

static bool is_rank(enum mode_alloc_method m)
{
    return m == MODE_ALLOC_RANK_ALL || m == MODE_ALLOC_RANK_TEXT_VISION || m == MODE_ALLOC_RANK_TEXT_KEY || m == MODE_ALLOC_RANK_TEXT_REDUNDANT;
}

int mode_alloc_method_parse(const char *s)
{
    for (int i = 0; i < MODE_ALLOC_N_METHODS; i++)
        if (!strcmp(s, method_names[i])) return i;
    return -1;
}

const char *mode_alloc_method_name(enum mode_alloc_method m) { return (unsigned)m < MODE_ALLOC_N_METHODS ? method_names[m] : "?"; }

bool mode_alloc_method_needs_freq(enum mode_alloc_method m) { return m != MODE_ALLOC_SENS_ONLY && m != MODE_ALLOC_UNIFORM; }
bool mode_alloc_method_needs_sens(enum mode_alloc_method m) { return m != MODE_ALLOC_UNIFORM && !is_rank(m); }

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

static double matrix_bytes(int64_t K, int64_t N, int64_t g, int b)
{
    if (g > K) g = K;
    if (g < 1 || K % g) return -1;
    const int64_t G = K / g;
    return (double)(ceil_div(K * b, 32) * N * 4 + G * ceil_div(N * b, 32) * 4 + G * N * 2 + K * 4);
}

double mode_alloc_expert_bytes(const struct mode_expert_shape *s, int bits)
{
    if (s->n_embd < 1 || s->n_ff_exp < 1 || s->group < 1) return -1;
    if (bits >= 16) return (double)(3 * s->n_embd * s->n_ff_exp * 2); /* unquantized bf16 */
    double gu = matrix_bytes(s->n_embd, s->n_ff_exp, s->group, bits), dn = matrix_bytes(s->n_ff_exp, s->n_embd, s->group, bits);
    return gu < 0 || dn < 0 ? -1 : 2 * gu + dn;
}

/* index of width b in the sens stream's widths, -1 when absent */
static int sens_index(const struct mode_alloc_data *d, int b)
{
    for (int i = 0; i < d->n_bits; i++)
        if (d->bits[i] == b) return i;
    return -1;
}

int mode_alloc_costs(const struct mode_alloc_data *d, const struct mode_alloc_opts *o, double *cost, struct mode_err *err)
{
    const int E = d->n_expert, C = o->n_cand;
    int si[MODE_ALLOC_MAX_BITS];
    for (int c = 0; c < C; c++) {
        si[c] = sens_index(d, o->cand[c]);
        if (d->have_sens && si[c] < 0 && o->method != MODE_ALLOC_UNIFORM) {
            char have[64] = "";
            for (int i = 0, off = 0; i < d->n_bits; i++) off += snprintf(have + off, sizeof have - (size_t)off, "%s%d", i ? "," : "", d->bits[i]);
            return mode_err_set(err, MODE_EUSAGE, "--bits: the sensitivity stream has no measurement at %d bits (it has %s)", o->cand[c], have);
        }
    }
    if (mode_alloc_method_needs_freq(o->method) && !d->have_freq)
        return mode_err_set(err, MODE_EUSAGE, "method %s needs a freq stream", mode_alloc_method_name(o->method));
    if (mode_alloc_method_needs_sens(o->method) && !d->have_sens)
        return mode_err_set(err, MODE_EUSAGE, "method %s needs a sens stream", mode_alloc_method_name(o->method));
    for (int li = 0; li < d->n_layer; li++) {
        const struct mode_alloc_layer *l = &d->L[li];
        if (o->method == MODE_ALLOC_MCMOE && !l->has_prob)
            return mode_err_set(err, MODE_EDATA,
                                "method mcmoe needs the router probabilities of the freq stream ('prob'), which layer %d lacks: "
                                "the stream was made from a trace older than them; run mode-route-trace and mode-vis-denoise again",
                                l->layer);
        /* mcmoe's activation weight: the layer's prob sums over all tokens, normalised to sum 1 */
        double psum = 0;
        if (o->method == MODE_ALLOC_MCMOE)
            for (int e = 0; e < E; e++) psum += l->prob[MODE_CLS_ALL * (size_t)E + e];
        for (int e = 0; e < E; e++) {
            if (is_rank(o->method)) {
                /* frequency alone: the cost of the bits an expert is not given, so that the
                 * budget raises the most frequent experts first, to the widest width */
                const double *f = l->freq;
                const size_t E_ = (size_t)E;
                double s = 0;
                switch (o->method) {
                case MODE_ALLOC_RANK_ALL: s = f[MODE_CLS_ALL * E_ + e]; break;
                case MODE_ALLOC_RANK_TEXT_VISION: s = 0.5 * f[MODE_CLS_TEXT * E_ + e] + 0.5 * f[MODE_CLS_VISION * E_ + e]; break;
                case MODE_ALLOC_RANK_TEXT_KEY: s = 0.5 * f[MODE_CLS_TEXT * E_ + e] + 0.5 * f[MODE_CLS_KEY * E_ + e]; break;
                default: s = 0.5 * f[MODE_CLS_TEXT * E_ + e] + 0.5 * f[MODE_CLS_REDUNDANT * E_ + e]; break;
                }
                for (int c = 0; c < C; c++) cost[((size_t)li * E + e) * C + c] = s * (double)(o->cand[C - 1] - o->cand[c]);
                continue;
            }
            for (int c = 0; c < C; c++) {
                double *out = &cost[((size_t)li * E + e) * C + c];
                if (!l->has_sens || si[c] < 0) {
                    *out = 0; /* uniform without a measurement */
                    continue;
                }
                const size_t k = (size_t)e * d->n_bits + si[c];
                const double dt = l->dt[k], dv = l->dv[k];
                double da = l->da ? l->da[k] : 0;
                if (!l->da) {
                    const double nt = (double)l->tok_text, nv = (double)l->tok_vision;
                    da = nt + nv > 0 ? (nt * dt + nv * dv) / (nt + nv) : (dt + dv) / 2;
                }
                const double *f = l->freq;
                const size_t E_ = (size_t)E;
                switch (o->method) {
                case MODE_ALLOC_MODE: *out = f[MODE_CLS_TEXT * E_ + e] * dt + f[MODE_CLS_KEY * E_ + e] * dv; break;
                case MODE_ALLOC_TEXT_VISION: *out = f[MODE_CLS_TEXT * E_ + e] * dt + f[MODE_CLS_VISION * E_ + e] * dv; break;
                case MODE_ALLOC_FREQ_TOTAL: *out = f[MODE_CLS_ALL * E_ + e] * da; break;
                case MODE_ALLOC_MCMOE: {
                    /* MC-MoE's precision_solver.py: significance φ^α · w^β times the error ε^α,
                     * times 1000 (its scale factor once φ and w are normalised) */
                    const double w = psum > 0 ? l->prob[MODE_CLS_ALL * E_ + e] / psum : 0;
                    *out = pow(f[MODE_CLS_ALL * E_ + e], o->alpha) * pow(w, o->beta) * pow(da, o->alpha) * 1000;
                    break;
                }
                case MODE_ALLOC_FREQ_TEXT_VISION: *out = (0.5 * f[MODE_CLS_TEXT * E_ + e] + 0.5 * f[MODE_CLS_VISION * E_ + e]) * da; break;
                case MODE_ALLOC_FREQ_TEXT_KEY: *out = (0.5 * f[MODE_CLS_TEXT * E_ + e] + 0.5 * f[MODE_CLS_KEY * E_ + e]) * da; break;
                case MODE_ALLOC_SENS_ONLY: *out = dt + dv; break;
                case MODE_ALLOC_UNIFORM: *out = f ? f[MODE_CLS_TEXT * E_ + e] * dt + f[MODE_CLS_KEY * E_ + e] * dv : dt + dv; break;
                default: return mode_err_set(err, MODE_EINTERNAL, "method %d", o->method);
                }
                if (!isfinite(*out)) return mode_err_set(err, MODE_EDATA, "layer %d expert %d: the cost at %d bits is %g", l->layer, e, o->cand[c], *out);
            }
        }
    }
    return MODE_OK;
}

/* ---- solving --------------------------------------------------------------------------------- */

void mode_alloc_result_free(struct mode_alloc_result *r)
{
    free(r->layer), free(r->bits), free(r->cost);
    memset(r, 0, sizeof *r);
}

static int worse(enum mode_mckp_status a, enum mode_mckp_status b) { return a > b ? a : b; }

static void cand_str(const struct mode_alloc_opts *o, char *buf, size_t n)
{
    size_t off = 0;
    for (int c = 0; c < o->n_cand && off < n; c++) off += (size_t)snprintf(buf + off, n - off, "%s%d", c ? "," : "", o->cand[c]);
}

/* MC-MoE's budget: Σ b ≤ ⌊n·k⌋ (its ILP's constraint on the total of the widths); the caller adds
 * its other constraint, at least one expert at each width above the lowest, which needs a total
 * of at least n·b₀ + Σ_{c>0} (b_c − b₀). */
static int mcmoe_budget(const struct mode_alloc_opts *o, int n, double *w, double *cap, struct mode_err *err)
{
    const int C = o->n_cand;
    const long total = (long)floor(o->avg_bits * n + 1e-9);
    long least = (long)n * o->cand[0];
    for (int c = 1; c < C; c++) least += o->cand[c] - o->cand[0];
    if (n < C - 1 || total < least) {
        char cs[64];
        cand_str(o, cs, sizeof cs);
        if (n < C - 1)
            return mode_err_set(err, MODE_EDATA, "method mcmoe puts at least one expert at each width above the lowest: %d experts "
                                "cannot take the %d widths above the lowest of %s", n, C - 1, cs);
        return mode_err_set(err, MODE_EDATA,
                            "--avg-bits %g cannot be met by mcmoe: %d experts of widths %s with at least one at each width above %d "
                            "need %ld bits in all, an average of at least %.6g",
                            o->avg_bits, n, cs, o->cand[0], least, (double)least / n);
    }
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) w[(size_t)i * C + c] = o->cand[c];
    *cap = (double)total;
    return MODE_OK;
}

/* Budget of one knapsack of n experts: weights (n, C) and cap. part_cap: byte cap of this part. */
static int budget(const struct mode_alloc_opts *o, int n, double part_cap, double *w, double *cap, bool *eq, struct mode_err *err)
{
    const int C = o->n_cand;
    if (!o->by_bytes && o->method == MODE_ALLOC_MCMOE) {
        *eq = false;
        return mcmoe_budget(o, n, w, cap, err);
    }
    if (!o->by_bytes) {
        const double t = o->avg_bits * n;
        const long tr = (long)floor(t + 0.5);
        bool ok = fabs(t - (double)tr) <= 1e-9 * fmax(1, t) && tr >= (long)n * o->cand[0] && tr <= (long)n * o->cand[C - 1];
        bool consecutive = true; /* then every total in range is reachable */
        for (int c = 1; c < C; c++) consecutive = consecutive && o->cand[c] == o->cand[c - 1] + 1;
        long below, above, x;
        if (ok && !consecutive) {
            mode_mckp_reachable(n, C, o->cand, tr, &below, &above);
            ok = below == tr;
        }
        if (!ok) {
            mode_mckp_reachable(n, C, o->cand, (long)floor(t + 1e-9), &below, &x);
            mode_mckp_reachable(n, C, o->cand, (long)ceil(t - 1e-9), &x, &above);
            char cs[64], near[128] = "none";
            cand_str(o, cs, sizeof cs);
            if (below >= 0 && above >= 0 && below != above)
                snprintf(near, sizeof near, "%.6g and %.6g", (double)below / n, (double)above / n);
            else if (below >= 0) snprintf(near, sizeof near, "%.6g", (double)below / n);
            else if (above >= 0) snprintf(near, sizeof near, "%.6g", (double)above / n);
            return mode_err_set(err, MODE_EDATA,
                                "--avg-bits %g cannot be met exactly: %d experts of widths %s would need %.6g bits in all; the "
                                "nearest feasible averages are %s",
                                o->avg_bits, n, cs, t, near);
        }
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) w[(size_t)i * C + c] = o->cand[c];
        *cap = (double)tr;
        *eq = true;
        return MODE_OK;
    }
    double bytes[MODE_ALLOC_MAX_BITS] = {0};
    for (int c = 0; c < C; c++) {
        bytes[c] = mode_alloc_expert_bytes(&o->shape, o->cand[c]);
        if (bytes[c] < 0) return mode_err_set(err, MODE_EUSAGE, "a byte budget needs the expert shape (-m DIR) and a group size dividing it");
    }
    if (part_cap < n * bytes[0]) {
        char cs[64];
        cand_str(o, cs, sizeof cs);
        return mode_err_set(err, MODE_EDATA,
                            "the byte budget cannot be met: %d experts at %d bits already take %.0f bytes%s, more than %.0f; the "
                            "smallest feasible budget is --max-bytes %.0f",
                            n, o->cand[0], n * bytes[0], o->global ? "" : " per layer", part_cap,
                            o->global ? n * bytes[0] : n * bytes[0] * (o->max_bytes / part_cap));
    }
    /* bytes affine in bits: b -> a·b + c0 exactly for every candidate */
    bool affine = C >= 2;
    double a = C >= 2 ? (bytes[1] - bytes[0]) / (o->cand[1] - o->cand[0]) : 0, c0 = bytes[0] - a * o->cand[0];
    for (int c = 0; affine && c < C; c++) affine = a > 0 && bytes[c] == a * o->cand[c] + c0;
    if (affine) {
        const double total = floor((part_cap - n * c0) / a + 1e-9);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) w[(size_t)i * C + c] = o->cand[c];
        *cap = total;
    } else {
        for (int i = 0; i < n; i++)
            for (int c = 0; c < C; c++) w[(size_t)i * C + c] = bytes[c];
        *cap = part_cap;
    }
    *eq = false;
    return MODE_OK;
}

int mode_alloc_solve(const struct mode_alloc_data *d, const struct mode_alloc_opts *o, struct mode_alloc_result *r, struct mode_err *err)
{
    memset(r, 0, sizeof *r);
    const int L = d->n_layer, E = d->n_expert, C = o->n_cand;
    if (!L || !E) return mode_err_set(err, MODE_EDATA, "no layer to allocate");
    if (C < 1) return mode_err_set(err, MODE_EUSAGE, "no candidate bit width");
    r->n_layer = L;
    r->n_expert = E;
    const size_t n_all = (size_t)L * E;
    r->layer = malloc(sizeof *r->layer * (size_t)L);
    r->bits = malloc(sizeof *r->bits * n_all);
    r->cost = calloc(n_all, sizeof *r->cost);
    double *cost = malloc(sizeof *cost * n_all * C), *w = malloc(sizeof *w * n_all * C);
    int *choice = malloc(sizeof *choice * n_all);
    int rc = MODE_OK;
    if (!r->layer || !r->bits || !r->cost || !cost || !w || !choice) {
        rc = mode_err_oom(err, sizeof *cost * n_all * C * 2, "the allocation");
        goto out;
    }
    for (int i = 0; i < L; i++) r->layer[i] = d->L[i].layer;
    if ((rc = mode_alloc_costs(d, o, cost, err))) goto out;

    if (o->method == MODE_ALLOC_UNIFORM) {
        int pick = -1;
        if (!o->by_bytes) {
            for (int c = 0; c < C; c++)
                if (o->cand[c] == o->avg_bits) pick = c;
            if (pick < 0) {
                char cs[64];
                cand_str(o, cs, sizeof cs);
                rc = mode_err_set(err, MODE_EDATA, "--method uniform needs --avg-bits to be one of the widths %s, not %g", cs, o->avg_bits);
                goto out;
            }
        } else {
            for (int c = 0; c < C; c++) {
                double b = mode_alloc_expert_bytes(&o->shape, o->cand[c]);
                if (b < 0) {
                    rc = mode_err_set(err, MODE_EUSAGE, "a byte budget needs the expert shape (-m DIR) and a group size dividing it");
                    goto out;
                }
                if (b * (double)n_all <= o->max_bytes) pick = c;
            }
            if (pick < 0) {
                rc = mode_err_set(err, MODE_EDATA, "the byte budget cannot be met: every expert at %d bits takes %.0f bytes, more than %.0f",
                                  o->cand[0], mode_alloc_expert_bytes(&o->shape, o->cand[0]) * (double)n_all, o->max_bytes);
                goto out;
            }
        }
        for (size_t i = 0; i < n_all; i++) choice[i] = pick;
        r->status = MODE_MCKP_OPTIMAL;
    } else {
        const int parts = o->global ? 1 : L, n = o->global ? (int)n_all : E;
        for (int p = 0; p < parts; p++) {
            const size_t off = (size_t)p * (size_t)n;
            double cap = 0;
            bool eq = false;
            if ((rc = budget(o, n, o->global ? o->max_bytes : o->max_bytes / L, w + off * C, &cap, &eq, err))) goto out;
            int min_count[MODE_ALLOC_MAX_BITS] = {0};
            if (o->method == MODE_ALLOC_MCMOE) {
                if (n < C - 1) { /* a byte budget: mcmoe_budget did not see it */
                    rc = mode_err_set(err, MODE_EDATA, "method mcmoe puts at least one expert at each width above the lowest: %d "
                                      "experts cannot take %d widths", n, C - 1);
                    goto out;
                }
                for (int c = 1; c < C; c++) min_count[c] = 1;
            }
            struct mode_mckp k = {n, C, cost + off * C, w + off * C, cap, eq, o->time_limit,
                                  o->method == MODE_ALLOC_MCMOE ? min_count : NULL};
            struct mode_mckp_result res = {.choice = choice + off};
            if ((rc = mode_mckp_glpk(&k, &res, err))) goto out;
            if (res.status == MODE_MCKP_INFEASIBLE) {
                rc = mode_err_set(err, MODE_EDATA, "the budget cannot be met%s", o->global ? "" : " in every layer");
                goto out;
            }
            if (res.status == MODE_MCKP_TIMEOUT) {
                rc = mode_err_set(err, MODE_EUNAVAILABLE, "the time limit (%g s) ran out before any allocation was found%s", o->time_limit,
                                  o->global ? "" : " for a layer");
                goto out;
            }
            r->status = worse(r->status, res.status);
            r->lp_bound += res.lp_bound;
            r->seconds += res.seconds;
            r->nodes += res.nodes;
            if (res.mip_gap > r->mip_gap) r->mip_gap = res.mip_gap;
        }
    }
    double obj = 0, bits = 0, bytes = 0;
    for (size_t i = 0; i < n_all; i++) {
        r->bits[i] = o->cand[choice[i]];
        r->cost[i] = cost[i * C + choice[i]];
        obj += r->cost[i];
        bits += r->bits[i];
        double b = mode_alloc_expert_bytes(&o->shape, r->bits[i]);
        bytes = b < 0 || bytes < 0 ? -1 : bytes + b;
    }
    r->objective = obj;
    if (o->method == MODE_ALLOC_UNIFORM) r->lp_bound = obj;
    r->avg_bits = bits / (double)n_all;
    r->bytes = bytes;
out:
    free(cost), free(w), free(choice);
    if (rc) mode_alloc_result_free(r);
    return rc;
}

/* ---- the alloc record ------------------------------------------------------------------------ */

void mode_alloc_pack(struct mode_mp *b, const struct mode_alloc_result *r, int i)
{
    const int64_t shape[1] = {r->n_expert};
    mode_mp_map_open(b);
    mode_mp_key(b, "layer");
    mode_mp_int(b, r->layer[i]);
    mode_mp_key(b, "bits");
    mode_mp_tensor(b, MODE_I32, 1, shape, r->bits + (size_t)i * r->n_expert);
    mode_mp_key(b, "cost");
    mode_mp_tensor(b, MODE_F64, 1, shape, r->cost + (size_t)i * r->n_expert);
    mode_mp_close(b);
}

int mode_alloc_parse(const struct mode_rec *rec, int64_t *layer, struct mode_tensor *bits, struct mode_err *err)
{
    int rc;
    if ((rc = mode_rec_int(rec, "layer", true, layer, err)) || (rc = mode_rec_tensor(rec, "bits", true, bits, MODE_I32, 1, NULL, err)))
        return rc;
    if (*layer < 0) return mode_err_set(err, MODE_EDATA, "%s: %s: layer %lld", rec->stream, rec->what, (long long)*layer);
    for (uint64_t i = 0; i < bits->numel; i++) {
        int32_t v;
        memcpy(&v, (const char *)bits->data + 4 * i, 4);
        if (v < 1 || v > 16)
            return mode_err_set(err, MODE_EDATA, "%s: %s: expert %llu has %d bits (1 to 16)", rec->stream, rec->what, (unsigned long long)i, v);
    }
    return MODE_OK;
}
