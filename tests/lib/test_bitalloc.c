/* test_bitalloc — the objectives of mode-ilp's methods (MODE and each baseline), budgets and their
 * messages, the byte model, scopes, provenance checks, and the alloc record. */
#include "../../lib/bitalloc.h"
#include "tap.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BAIL_OUT(m) (printf("Bail out! %s\n", (m)), exit(1))

enum { E = 4, B = 2 };

/* One layer, 4 experts, widths {2, 4}:
 *   A: much text, sensitive to text       B: many key image tokens, sensitive on vision
 *   C: many image tokens but few key ones, sensitive on vision     D: rarely chosen
 * The per-token sensitivities are such that each method ranks a different pair first. */
static void make_layer(struct mode_alloc_data *d, int layer, double scale)
{
    struct mode_alloc_layer *l = &d->L[d->n_layer++];
    memset(l, 0, sizeof *l);
    l->layer = layer;
    l->has_freq = l->has_sens = true;
    l->freq = calloc(MODE_CLS_COUNT * E, sizeof *l->freq);
    l->count = calloc(MODE_CLS_COUNT * E, sizeof *l->count);
    l->wsum = calloc(MODE_CLS_COUNT * E, sizeof *l->wsum);
    l->prob = calloc(MODE_CLS_COUNT * E, sizeof *l->prob);
    l->has_prob = true;
    /*                            A    B    C    D */
    const double text[E] = {0.70, 0.10, 0.10, 0.10};
    const double vis[E] = {0.05, 0.30, 0.60, 0.05};
    const double key[E] = {0.05, 0.80, 0.10, 0.05};
    const double all[E] = {0.20, 0.25, 0.50, 0.05};
    const double rw[E] = {0.9, 0.2, 0.3, 0.5}; /* mean routing weights */
    const double pr[E] = {0.5, 0.1, 0.3, 0.1}; /* summed router probabilities (sum 1) */
    const double red[E] = {0.05, 0.05, 0.85, 0.05};
    for (int e = 0; e < E; e++) {
        l->freq[MODE_CLS_TEXT * E + e] = text[e];
        l->freq[MODE_CLS_VISION * E + e] = vis[e];
        l->freq[MODE_CLS_KEY * E + e] = key[e];
        l->freq[MODE_CLS_ALL * E + e] = all[e];
        l->count[MODE_CLS_ALL * E + e] = (int64_t)(all[e] * 1000);
        l->wsum[MODE_CLS_ALL * E + e] = rw[e] * (double)l->count[MODE_CLS_ALL * E + e];
        l->prob[MODE_CLS_ALL * E + e] = pr[e] * 40; /* normalised by the layer's sum: 40 */
        l->freq[MODE_CLS_REDUNDANT * E + e] = red[e];
    }
    l->tok_text = 100;
    l->tok_vision = 300;
    l->dt = calloc(E * B, sizeof *l->dt);
    l->dv = calloc(E * B, sizeof *l->dv);
    /* δ at 2 bits; at 4 bits a tenth of it */
    const double dt2[E] = {1.0, 0.1, 0.1, 3.0};
    const double dv2[E] = {0.1, 1.0, 1.0, 3.0};
    for (int e = 0; e < E; e++) {
        l->dt[e * B] = dt2[e] * scale, l->dt[e * B + 1] = dt2[e] * scale / 10;
        l->dv[e * B] = dv2[e] * scale, l->dv[e * B + 1] = dv2[e] * scale / 10;
    }
}

static void make_data(struct mode_alloc_data *d, int n_layer)
{
    mode_alloc_data_init(d);
    d->n_expert = E;
    d->n_bits = B;
    d->bits[0] = 2, d->bits[1] = 4;
    strcpy(d->metric, "kl");
    d->have_freq = d->have_sens = true;
    d->L = calloc((size_t)n_layer, sizeof *d->L);
    for (int i = 0; i < n_layer; i++) make_layer(d, i * 2, i ? 0.01 : 1);
}

static struct mode_alloc_opts opts(enum mode_alloc_method m)
{
    struct mode_alloc_opts o = {.method = m, .n_cand = 2, .cand = {2, 4}, .avg_bits = 3, .alpha = 1, .beta = 1.5};
    return o;
}

/* the experts given 4 bits in layer index li, as a string "AB" */
static const char *four(const struct mode_alloc_result *r, int li)
{
    static char s[E + 1];
    int k = 0;
    for (int e = 0; e < E; e++)
        if (r->bits[li * E + e] == 4) s[k++] = (char)('A' + e);
    s[k] = 0;
    return s;
}

int main(void)
{
    struct mode_alloc_data d;
    struct mode_err err = {0};
    make_data(&d, 1);
    struct mode_alloc_result r;
    double cost[E * B];

    /* each formulation, coefficient by coefficient */
    struct mode_alloc_opts o = opts(MODE_ALLOC_MODE);
    ok(!mode_alloc_costs(&d, &o, cost, &err), "mode costs");
    ok(fabs(cost[1 * B + 0] - (0.10 * 0.1 + 0.80 * 1.0)) < 1e-15, "mode: f_text*d_T + f_key*d_V (expert B, 2 bits) = %g", cost[B]);
    o.method = MODE_ALLOC_TEXT_VISION;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(fabs(cost[2 * B + 0] - (0.10 * 0.1 + 0.60 * 1.0)) < 1e-15, "text-vision: f_text*d_T + f_vision*d_V (expert C)");
    o.method = MODE_ALLOC_FREQ_TOTAL;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(fabs(cost[0] - 0.20 * (100 * 1.0 + 300 * 0.1) / 400) < 1e-15, "freq-total: f_all * token-weighted d (expert A)");
    o.method = MODE_ALLOC_MCMOE;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(fabs(cost[3 * B + 1] - 1000 * 0.05 * pow(0.1, 1.5) * (100 * 0.3 + 300 * 0.3) / 400) < 1e-13,
       "mcmoe: 1000 * phi^1 * w^1.5 * eps^1 with w the normalised prob sum (expert D, 4 bits): %.17g", cost[3 * B + 1]);
    o.alpha = 2, o.beta = 0.5;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(fabs(cost[2 * B] - 1000 * pow(0.5, 2) * pow(0.3, 0.5) * pow((100 * 0.1 + 300 * 1.0) / 400, 2)) < 1e-12,
       "mcmoe: alpha raises the error too, as precision_solver.py does (expert C, 2 bits)");
    o.alpha = 1, o.beta = 1.5;
    o.method = MODE_ALLOC_FREQ_TEXT_VISION;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(fabs(cost[1 * B] - (0.5 * 0.10 + 0.5 * 0.30) * (100 * 0.1 + 300 * 1.0) / 400) < 1e-15, "freq-text-vision: (f_T + f_V)/2 * d_all");
    o.method = MODE_ALLOC_FREQ_TEXT_KEY;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(fabs(cost[1 * B] - (0.5 * 0.10 + 0.5 * 0.80) * (100 * 0.1 + 300 * 1.0) / 400) < 1e-15, "freq-text-key: (f_T + f_key)/2 * d_all");
    o.method = MODE_ALLOC_RANK_TEXT_REDUNDANT;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(cost[2 * B] == (0.5 * 0.10 + 0.5 * 0.85) * 2 && cost[2 * B + 1] == 0, "rank-text-redundant: s * (b_max - b)");
    o.method = MODE_ALLOC_SENS_ONLY;
    mode_alloc_costs(&d, &o, cost, &err);
    ok(fabs(cost[3 * B] - 6.0) < 1e-15, "sens-only: d_T + d_V (expert D)");

    /* the ablations choose differently: 2 of 4 experts at 4 bits */
    static const struct {
        enum mode_alloc_method m;
        const char *want;
    } picks[] = {{MODE_ALLOC_MODE, "AB"},          {MODE_ALLOC_TEXT_VISION, "AC"},   {MODE_ALLOC_FREQ_TOTAL, "BC"},
                 {MODE_ALLOC_SENS_ONLY, "D"},      {MODE_ALLOC_MCMOE, "AC"},         {MODE_ALLOC_RANK_ALL, "BC"},
                 {MODE_ALLOC_RANK_TEXT_VISION, "AC"}, {MODE_ALLOC_RANK_TEXT_KEY, "AB"}, {MODE_ALLOC_RANK_TEXT_REDUNDANT, "AC"},
                 {MODE_ALLOC_FREQ_TEXT_VISION, "CD"}, {MODE_ALLOC_FREQ_TEXT_KEY, "BD"}};
    for (size_t i = 0; i < sizeof picks / sizeof *picks; i++) {
        o = opts(picks[i].m);
        if (picks[i].m == MODE_ALLOC_SENS_ONLY) o.avg_bits = 2.5; /* one expert at 4 bits */
        int rc = mode_alloc_solve(&d, &o, &r, &err);
        if (rc) diag("%s", err.msg);
        ok(!rc && !strcmp(four(&r, 0), picks[i].want), "%s keeps %s at 4 bits (got %s)", mode_alloc_method_name(picks[i].m),
           picks[i].want, rc ? "error" : four(&r, 0));
        if (!rc) mode_alloc_result_free(&r);
    }
    /* mcmoe's budget is an inequality with one expert at least at each width above the lowest:
     * at 2.5 bits over {2, 4}, one expert at 4 bits (10 of 10 bits) */
    o = opts(MODE_ALLOC_MCMOE);
    o.avg_bits = 2.5;
    if (mode_alloc_solve(&d, &o, &r, &err)) BAIL_OUT(err.msg);
    ok(strlen(four(&r, 0)) == 1 && r.avg_bits == 2.5, "mcmoe at 2.5 bits: one expert at 4 bits (%s)", four(&r, 0));
    mode_alloc_result_free(&r);
    o.avg_bits = 2.3; /* at most 9 bits: still one at 4 bits, so 10 bits are needed */
    ok(mode_alloc_solve(&d, &o, &r, &err) == MODE_EDATA, "mcmoe below one expert at the widest width: refused");
    has_str(err.msg, "an average of at least 2.5", "naming the least average: %s", err.msg);
    o.avg_bits = 2.9; /* at most 11 bits: the odd bit stays unused */
    if (mode_alloc_solve(&d, &o, &r, &err)) BAIL_OUT(err.msg);
    ok(r.avg_bits == 2.5, "mcmoe at 2.9 bits over widths {2,4} uses 10 of its 11 bits (%.3f)", r.avg_bits);
    mode_alloc_result_free(&r);
    d.L[0].has_prob = false;
    o.avg_bits = 3;
    ok(mode_alloc_solve(&d, &o, &r, &err) == MODE_EDATA, "mcmoe on a freq stream without router probabilities: refused");
    has_str(err.msg, "run mode-route-trace and mode-vis-denoise again", "says what to do");
    d.L[0].has_prob = true;

    o = opts(MODE_ALLOC_UNIFORM);
    ok(mode_alloc_solve(&d, &o, &r, &err) == MODE_EDATA, "uniform at 3 bits with widths {2,4} is refused");
    has_str(err.msg, "one of the widths 2,4", "naming the widths");
    o.avg_bits = 4;
    if (mode_alloc_solve(&d, &o, &r, &err)) BAIL_OUT(err.msg);
    ok(!strcmp(four(&r, 0), "ABCD") && r.avg_bits == 4, "uniform 4 bits");
    mode_alloc_result_free(&r);

    /* budgets that cannot be met name the nearest feasible ones */
    o = opts(MODE_ALLOC_MODE);
    o.avg_bits = 2.75; /* 11 bits from widths {2,4} over 4 experts: 10 or 12 */
    ok(mode_alloc_solve(&d, &o, &r, &err) == MODE_EDATA, "avg 2.75 over 4 experts of {2,4}: refused");
    has_str(err.msg, "nearest feasible averages are 2.5 and 3", "names 2.5 and 3: %s", err.msg);
    o.avg_bits = 4.5;
    ok(mode_alloc_solve(&d, &o, &r, &err) == MODE_EDATA, "avg 4.5 above the widths: refused");
    has_str(err.msg, "are 4", "names 4");
    o.n_cand = 3, o.cand[0] = 2, o.cand[1] = 3, o.cand[2] = 4;
    o.avg_bits = 3.1;
    ok(mode_alloc_solve(&d, &o, &r, &err) == MODE_EUSAGE, "a width the sens stream lacks is refused");
    has_str(err.msg, "no measurement at 3 bits", "named");
    mode_alloc_data_free(&d);

    /* scopes: layer 2's sensitivities are a hundredth of layer 0's; globally layer 0 takes the bits */
    make_data(&d, 2);
    o = opts(MODE_ALLOC_MODE);
    if (mode_alloc_solve(&d, &o, &r, &err)) BAIL_OUT(err.msg);
    ok(!strcmp(four(&r, 0), "AB") && !strcmp(four(&r, 1), "AB") && r.avg_bits == 3,
       "layer scope: 2 experts at 4 bits in each layer");
    mode_alloc_result_free(&r);
    o.global = true;
    if (mode_alloc_solve(&d, &o, &r, &err)) BAIL_OUT(err.msg);
    ok(!strcmp(four(&r, 0), "ABCD") && !strcmp(four(&r, 1), "") && r.avg_bits == 3,
       "global scope: every expert of the sensitive layer at 4 bits, none of the other (%s | %s)", four(&r, 0), four(&r, 1));
    ok(r.status == MODE_MCKP_OPTIMAL && r.lp_bound <= r.objective + 1e-12, "optimal, LP bound below");
    /* the record */
    struct mode_mp b;
    mode_mp_init(&b);
    mode_alloc_pack(&b, &r, 1);
    ok(!mode_mp_finish(&b, &err), "alloc record packs");
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_next(&u, b.buf, b.len, &off);
    struct mode_rec rec = {&u.data, "t", "record 1"};
    int64_t layer = -1;
    struct mode_tensor bits;
    ok(!mode_alloc_parse(&rec, &layer, &bits, &err) && layer == 2 && bits.numel == E, "alloc record parses back (layer %lld)",
       (long long)layer);
    msgpack_unpacked_destroy(&u);
    mode_mp_free(&b);
    mode_alloc_result_free(&r);

    /* bytes: emoji-vl's expert (128 x 96, group 128 clamped to 96 for the down projection) */
    struct mode_expert_shape sh = {128, 96, 128};
    ok(mode_alloc_expert_bytes(&sh, 4) == 2 * 6896 + 6848, "expert bytes at 4 bits = %g (20640)", mode_alloc_expert_bytes(&sh, 4));
    ok(mode_alloc_expert_bytes(&sh, 2) == 2 * (128 * 96 / 4 + 24 * 4 / 4 * 4 / 4 * 1 + 192 + 512) + (96 * 128 / 4 + 32 + 256 + 384),
       "expert bytes at 2 bits = %g", mode_alloc_expert_bytes(&sh, 2));
    struct mode_expert_shape bad = {128, 96, 64}; /* 64 does not divide 96 */
    ok(mode_alloc_expert_bytes(&bad, 4) < 0, "a group that does not divide the inputs has no byte count");
    o = opts(MODE_ALLOC_MODE);
    o.shape = sh;
    o.by_bytes = true;
    o.global = true;
    o.max_bytes = 4 * mode_alloc_expert_bytes(&sh, 4) + 4 * mode_alloc_expert_bytes(&sh, 2) + 100;
    if (mode_alloc_solve(&d, &o, &r, &err)) BAIL_OUT(err.msg);
    ok(r.bytes <= o.max_bytes && r.avg_bits == 3, "byte budget: %g bytes <= %g, %.3f bits",
       r.bytes, o.max_bytes, r.avg_bits);
    mode_alloc_result_free(&r);
    o.max_bytes = 8 * mode_alloc_expert_bytes(&sh, 2) - 1;
    ok(mode_alloc_solve(&d, &o, &r, &err) == MODE_EDATA, "a byte budget below every expert at 2 bits is refused");
    has_str(err.msg, "smallest feasible budget", "and says the least");
    mode_alloc_data_free(&d);

    /* provenance */
    {
        struct mode_mp x, y;
        mode_mp_init(&x), mode_mp_init(&y);
        for (int k = 0; k < 2; k++) {
            struct mode_mp *m = k ? &y : &x;
            mode_mp_map_open(m);
            mode_mp_key(m, "kind"), mode_mp_str(m, k ? "sens" : "freq");
            mode_mp_key(m, "model"), mode_mp_map_open(m);
            mode_mp_key(m, "name"), mode_mp_str(m, "emoji-vl");
            mode_mp_key(m, "arch"), mode_mp_str(m, "Qwen3VLMoeForConditionalGeneration");
            mode_mp_key(m, "config"), mode_mp_str(m, k ? "222222222222ff" : "111111111111aa");
            mode_mp_close(m);
            mode_mp_key(m, "inputs"), mode_mp_array_open(m), mode_mp_map_open(m);
            mode_mp_key(m, "kind"), mode_mp_str(m, "samples");
            mode_mp_key(m, "inputs"), mode_mp_array_open(m), mode_mp_map_open(m);
            mode_mp_key(m, "file"), mode_mp_str(m, "calib.jsonl");
            mode_mp_key(m, "sha256"), mode_mp_str(m, "abc");
            mode_mp_close(m), mode_mp_close(m), mode_mp_close(m), mode_mp_close(m), mode_mp_close(m);
        }
        msgpack_unpacked ux, uy;
        msgpack_unpacked_init(&ux), msgpack_unpacked_init(&uy);
        size_t o1 = 0, o2 = 0;
        msgpack_unpack_next(&ux, x.buf, x.len, &o1);
        msgpack_unpack_next(&uy, y.buf, y.len, &o2);
        ok(mode_alloc_check_provenance(&ux.data, "f.mp", &uy.data, "s.mp", &err) == MODE_EDATA, "freq and sens of different configs: refused");
        has_str(err.msg, "config 111111111111", "first identity printed: %s", err.msg);
        has_str(err.msg, "config 222222222222", "second identity printed");
        ok(mode_alloc_check_provenance(&ux.data, "f.mp", &ux.data, "s.mp", &err) == MODE_OK, "the same provenance passes");
        msgpack_unpacked_destroy(&ux), msgpack_unpacked_destroy(&uy);
        mode_mp_free(&x), mode_mp_free(&y);
    }
    return tap_done();
}
