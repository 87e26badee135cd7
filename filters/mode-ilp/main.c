/* mode-ilp — bit widths for every routed expert under a budget: MODE's integer linear program
 * (GLPK) or one of its baselines, from a `freq` and a `sens` stream, written as an `alloc` stream
 * with an optional JSON summary and heatmap. Options and streams only; the tables, objectives and
 * budgets are lib/bitalloc.c, the knapsack lib/ilp.c, the picture lib/heatmap.c. */
#include "../../lib/bitalloc.h"
#include "../../lib/heatmap.h"
#include "../../lib/json.h"
#include "../../lib/model.h"
#include "../common/cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-ilp (--avg-bits K | --max-bytes N | --max-gb G) [-f FREQ] [-s SENS] [-o FILE]\n"
    "                [--method M] [--bits LIST] [--scope layer|global] [-m DIR] [--group-size N]\n"
    "                [--alpha A] [--beta B] [--time-limit SEC] [--json FILE] [--png FILE]\n"
    "  -f, --freq FILE        the freq stream (mode-vis-denoise); '-' = stdin\n"
    "  -s, --sens FILE        the sens stream (mode-sensitivity); '-' = stdin\n"
    "  -o, --output FILE      the alloc stream, written atomically (default: stdout)\n"
    "      --avg-bits K       average width over the experts of each scope (equality; mcmoe: at most)\n"
    "      --max-bytes N      at most N bytes of packed expert tensors (needs -m); --max-gb G: G*10^9\n"
    "      --method M         mode (default), text-vision, freq-total, freq-text-vision, freq-text-key,\n"
    "                         mcmoe, sens-only, rank-all, rank-text-vision, rank-text-key,\n"
    "                         rank-text-redundant, uniform (see mode-ilp(1))\n"
    "      --bits LIST        candidate widths, e.g. 2,3,4 (default: those of the sens stream)\n"
    "      --scope S          layer (default: one program per layer) or global (one for all)\n"
    "  -m, --model DIR        the checkpoint: expert shapes for bytes, identity checked\n"
    "      --group-size N     quantization group of the byte count (default 128)\n"
    "      --alpha A, --beta B   mcmoe's exponents of frequency and router probability (1, 1.5)\n"
    "      --time-limit SEC   branch-and-bound time per program (default 60; 0 = none)\n"
    "      --json FILE        a summary: bits, bytes, histogram, per-layer averages, solve\n"
    "      --png FILE         a heatmap of the widths (layers x experts) with a legend\n"
    "  -h, --help             this text;  -V, --version  the version\n"
    "Exit: 0 ok, 64 usage, 65 bad data or infeasible budget, 66 missing input,\n"
    "69 time limit without a solution, 73 cannot create output, 74 I/O error. See mode-ilp(1).\n";

static struct mode_err err;

static void parse_bits(const char *s, struct mode_alloc_opts *o)
{
    o->n_cand = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 8) mode_die(MODE_EUSAGE, "--bits: '%s' is not a list of widths 1..8 (e.g. 2,3,4)", s);
        if (o->n_cand == MODE_ALLOC_MAX_BITS) mode_die(MODE_EUSAGE, "--bits: at most %d widths", MODE_ALLOC_MAX_BITS);
        if (o->n_cand && v <= o->cand[o->n_cand - 1]) mode_die(MODE_EUSAGE, "--bits: '%s': list the widths in ascending order", s);
        o->cand[o->n_cand++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) mode_die(MODE_EUSAGE, "--bits: '%s' is not a list of widths 1..8 (e.g. 2,3,4)", s);
    }
    if (!o->n_cand) mode_die(MODE_EUSAGE, "--bits: empty list");
}

static double parse_num(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) mode_die(MODE_EUSAGE, "%s: '%s' is not a number in %g..%g", opt, s, lo, hi);
    return v;
}

/* opens a stream and reads its header (kind checked) */
static void open_stream(struct mode_stream_reader *r, const char *path, const char *kind)
{
    if (mode_stream_open(r, path, &err) || mode_stream_read_header(r, kind, &err)) mode_fail(&err);
}

static void write_json(const char *path, const struct mode_alloc_opts *o, const struct mode_alloc_result *res)
{
    json_t *j = json_object();
    json_object_set_new(j, "method", json_string(mode_alloc_method_name(o->method)));
    json_object_set_new(j, "scope", json_string(o->global ? "global" : "layer"));
    json_t *budget = json_object();
    if (o->by_bytes) json_object_set_new(budget, "max_bytes", json_real(o->max_bytes));
    else json_object_set_new(budget, "avg_bits", json_real(o->avg_bits));
    json_object_set_new(j, "budget", budget);
    json_object_set_new(j, "status", json_string(mode_mckp_status_name(res->status)));
    json_object_set_new(j, "objective", json_real(res->objective));
    json_object_set_new(j, "lp_bound", json_real(res->lp_bound));
    json_object_set_new(j, "mip_gap", json_real(res->mip_gap));
    json_object_set_new(j, "seconds", json_real(res->seconds));
    json_object_set_new(j, "nodes", json_integer(res->nodes));
    json_object_set_new(j, "experts", json_integer((json_int_t)res->n_layer * res->n_expert));
    json_object_set_new(j, "avg_bits", json_real(res->avg_bits));
    json_object_set_new(j, "bytes", res->bytes >= 0 ? json_integer((json_int_t)res->bytes) : json_null());
    const double b16 = mode_alloc_expert_bytes(&o->shape, 16);
    json_object_set_new(j, "bytes_unquantized", b16 >= 0 ? json_integer((json_int_t)(b16 * res->n_layer * res->n_expert)) : json_null());
    json_t *hist = json_object();
    for (int c = 0; c < o->n_cand; c++) {
        long n = 0;
        for (long i = 0; i < (long)res->n_layer * res->n_expert; i++) n += res->bits[i] == o->cand[c];
        char k[24];
        snprintf(k, sizeof k, "%d", o->cand[c]);
        json_object_set_new(hist, k, json_integer(n));
    }
    json_object_set_new(j, "histogram", hist);
    json_t *layers = json_array();
    for (int l = 0; l < res->n_layer; l++) {
        json_t *lo = json_object();
        double s = 0, cst = 0;
        json_t *lh = json_object();
        for (int c = 0; c < o->n_cand; c++) {
            long n = 0;
            for (int e = 0; e < res->n_expert; e++) n += res->bits[(size_t)l * res->n_expert + e] == o->cand[c];
            char k[24];
            snprintf(k, sizeof k, "%d", o->cand[c]);
            json_object_set_new(lh, k, json_integer(n));
        }
        for (int e = 0; e < res->n_expert; e++) s += res->bits[(size_t)l * res->n_expert + e], cst += res->cost[(size_t)l * res->n_expert + e];
        json_object_set_new(lo, "layer", json_integer(res->layer[l]));
        json_object_set_new(lo, "avg_bits", json_real(s / res->n_expert));
        json_object_set_new(lo, "objective", json_real(cst));
        json_object_set_new(lo, "histogram", lh);
        json_array_append_new(layers, lo);
    }
    json_object_set_new(j, "layers", layers);
    if (mode_json_write_file(j, path, &err)) mode_fail(&err);
    json_decref(j);
}

static void write_png(const char *path, const struct mode_alloc_opts *o, const struct mode_alloc_result *res)
{
    const size_t n = (size_t)res->n_layer * res->n_expert;
    double *v = malloc(sizeof *v * n), cv[MODE_ALLOC_MAX_BITS];
    if (!v) mode_die(MODE_EUNAVAILABLE, "out of memory");
    for (size_t i = 0; i < n; i++) v[i] = res->bits[i];
    char labels[MODE_ALLOC_MAX_BITS][48];
    const char *lp[MODE_ALLOC_MAX_BITS];
    for (int c = 0; c < o->n_cand; c++) {
        long cnt = 0;
        for (size_t i = 0; i < n; i++) cnt += res->bits[i] == o->cand[c];
        snprintf(labels[c], sizeof labels[c], "%d BITS (%ld)", o->cand[c], cnt);
        lp[c] = labels[c];
        cv[c] = o->cand[c];
    }
    char title[160];
    if (o->by_bytes)
        snprintf(title, sizeof title, "%s, %s scope: %.3f bits average, %.4g GB", mode_alloc_method_name(o->method),
                 o->global ? "global" : "layer", res->avg_bits, res->bytes / 1e9);
    else
        snprintf(title, sizeof title, "%s, %s scope: %.3f bits average", mode_alloc_method_name(o->method), o->global ? "global" : "layer",
                 res->avg_bits);
    struct mode_heatmap_panel panel = {"BIT WIDTH PER EXPERT", v};
    struct mode_heatmap h = {.title = title,
                             .row_label = "LAYER",
                             .col_label = "EXPERT",
                             .rows = res->n_layer,
                             .cols = res->n_expert,
                             .row_names = res->layer,
                             .n_panel = 1,
                             .panel = &panel,
                             .n_cat = o->n_cand,
                             .cat_value = cv,
                             .cat_label = lp};
    if (mode_heatmap_png(&h, path, &err)) mode_fail(&err);
    free(v);
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-ilp");
    enum { OPT_AVG = 256, OPT_BYTES, OPT_GB, OPT_METHOD, OPT_BITS, OPT_SCOPE, OPT_GROUP, OPT_ALPHA, OPT_BETA, OPT_TIME, OPT_JSON, OPT_PNG };
    static const struct option opts[] = {
        {"freq", required_argument, 0, 'f'},         {"sens", required_argument, 0, 's'},
        {"output", required_argument, 0, 'o'},       {"model", required_argument, 0, 'm'},
        {"avg-bits", required_argument, 0, OPT_AVG}, {"max-bytes", required_argument, 0, OPT_BYTES},
        {"max-gb", required_argument, 0, OPT_GB},    {"method", required_argument, 0, OPT_METHOD},
        {"bits", required_argument, 0, OPT_BITS},    {"scope", required_argument, 0, OPT_SCOPE},
        {"group-size", required_argument, 0, OPT_GROUP}, {"alpha", required_argument, 0, OPT_ALPHA},
        {"beta", required_argument, 0, OPT_BETA},    {"time-limit", required_argument, 0, OPT_TIME},
        {"json", required_argument, 0, OPT_JSON},    {"png", required_argument, 0, OPT_PNG},
        {"help", no_argument, 0, 'h'},               {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    const char *freq_path = NULL, *sens_path = NULL, *output = "-", *model_dir = NULL, *json_path = NULL, *png_path = NULL;
    struct mode_alloc_opts o = {.method = MODE_ALLOC_MODE, .alpha = 1, .beta = 1.5, .time_limit = 60};
    int budgets = 0;
    bool bits_given = false;
    long group = 128;
    for (int c; (c = getopt_long(argc, argv, "f:s:o:m:hV", opts, NULL)) != -1;) {
        switch (c) {
        case 'f': freq_path = optarg; break;
        case 's': sens_path = optarg; break;
        case 'o': output = optarg; break;
        case 'm': model_dir = optarg; break;
        case OPT_AVG: o.avg_bits = parse_num("--avg-bits", optarg, 1, 16), o.by_bytes = false, budgets++; break;
        case OPT_BYTES: o.max_bytes = parse_num("--max-bytes", optarg, 1, 1e18), o.by_bytes = true, budgets++; break;
        case OPT_GB: o.max_bytes = parse_num("--max-gb", optarg, 1e-9, 1e9) * 1e9, o.by_bytes = true, budgets++; break;
        case OPT_METHOD: {
            int m = mode_alloc_method_parse(optarg);
            if (m < 0) mode_die(MODE_EUSAGE, "--method: '%s' is not one of %s", optarg, mode_alloc_method_list());
            o.method = (enum mode_alloc_method)m;
            break;
        }
        case OPT_BITS: parse_bits(optarg, &o), bits_given = true; break;
        case OPT_SCOPE:
            if (!strcmp(optarg, "layer")) o.global = false;
            else if (!strcmp(optarg, "global")) o.global = true;
            else mode_die(MODE_EUSAGE, "--scope: '%s' is not layer or global", optarg);
            break;
        case OPT_GROUP: group = (long)parse_num("--group-size", optarg, 1, 1 << 20); break;
        case OPT_ALPHA: o.alpha = parse_num("--alpha", optarg, 0, 100); break;
        case OPT_BETA: o.beta = parse_num("--beta", optarg, 0, 100); break;
        case OPT_TIME: o.time_limit = parse_num("--time-limit", optarg, 0, 1e7); break;
        case OPT_JSON: json_path = optarg; break;
        case OPT_PNG: png_path = optarg; break;
        case 'h': fputs(usage_text, stdout); mode_cli_close_stdout(); return 0;
        case 'V': printf("mode-ilp %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    if (optind < argc) mode_die(MODE_EUSAGE, "unexpected argument '%s' (inputs are given with -f and -s)", argv[optind]);
    if (budgets != 1) mode_die(MODE_EUSAGE, "give exactly one budget: --avg-bits K, --max-bytes N or --max-gb G");
    if (mode_alloc_method_needs_freq(o.method) && !freq_path)
        mode_die(MODE_EUSAGE, "--method %s needs a freq stream (-f FILE)", mode_alloc_method_name(o.method));
    if (mode_alloc_method_needs_sens(o.method) && !sens_path)
        mode_die(MODE_EUSAGE, "--method %s needs a sens stream (-s FILE)", mode_alloc_method_name(o.method));
    if (freq_path && sens_path && !strcmp(freq_path, "-") && !strcmp(sens_path, "-"))
        mode_die(MODE_EUSAGE, "only one of -f and -s can read stdin");
    if (o.by_bytes && !model_dir) mode_die(MODE_EUSAGE, "a byte budget needs -m DIR (the expert shapes)");
    if (!freq_path && !sens_path && !model_dir) mode_die(MODE_EUSAGE, "--method uniform needs a stream (-f or -s) or -m DIR to know the experts");
    if (!strcmp(output, "-") && isatty(1)) mode_die(MODE_EUSAGE, "refusing to write a binary stream to a terminal (use -o FILE or a pipe)");
    if (json_path && !strcmp(json_path, "-") && !strcmp(output, "-")) mode_die(MODE_EUSAGE, "--json -: stdout already carries the alloc stream");

    struct mode_model m;
    bool have_model = false;
    if (model_dir) {
        if (mode_model_open_flags(&m, model_dir, MODE_MODEL_NO_SCAN, &err)) mode_fail(&err);
        have_model = true;
        o.shape.n_embd = m.cfg.text.n_embd;
        o.shape.n_ff_exp = m.cfg.text.n_ff_exp;
        o.shape.group = group;
    }
    struct mode_alloc_data d;
    mode_alloc_data_init(&d);
    struct mode_stream_reader fr, sr;
    if (freq_path) {
        open_stream(&fr, freq_path, "freq");
        if (have_model && mode_model_id_check(mode_mp_get(fr.header, "model"), &m, fr.name, &err)) mode_fail(&err);
    }
    if (sens_path) {
        open_stream(&sr, sens_path, "sens");
        if (have_model && mode_model_id_check(mode_mp_get(sr.header, "model"), &m, sr.name, &err)) mode_fail(&err);
    }
    if (freq_path && sens_path && mode_alloc_check_provenance(fr.header, fr.name, sr.header, sr.name, &err)) mode_fail(&err);
    if (freq_path && (mode_alloc_read_freq(&d, &fr, &err) || mode_stream_finish(&fr, &err))) mode_fail(&err);
    if (sens_path && (mode_alloc_read_sens(&d, &sr, &err) || mode_stream_finish(&sr, &err))) mode_fail(&err);
    if (!freq_path && !sens_path) {
        /* uniform from the model alone: its MoE layers */
        d.n_expert = m.cfg.text.n_expert;
        for (int l = 0; l < m.cfg.text.n_layer; l++) {
            if (!m.cfg.text.is_moe[l]) continue;
            struct mode_alloc_layer *nl = realloc(d.L, sizeof *nl * (size_t)(d.n_layer + 1));
            if (!nl) mode_die(MODE_EUNAVAILABLE, "out of memory");
            d.L = nl;
            memset(&d.L[d.n_layer], 0, sizeof *nl);
            d.L[d.n_layer++].layer = l;
        }
    }
    if (mode_alloc_check_layers(&d, freq_path ? fr.name : "freq", sens_path ? sr.name : "sens", &err)) mode_fail(&err);
    if (have_model && d.n_expert != m.cfg.text.n_expert)
        mode_die(MODE_EDATA, "the streams have %d experts per layer, the model in %s has %d", d.n_expert, model_dir, m.cfg.text.n_expert);
    if (!bits_given) {
        if (d.have_sens) {
            o.n_cand = d.n_bits;
            memcpy(o.cand, d.bits, sizeof o.cand);
        } else
            parse_bits("2,3,4", &o);
    }

    if (o.method == MODE_ALLOC_MCMOE && strcmp(d.metric, "mcmoe"))
        mode_warn("--method mcmoe on a sens stream of metric '%s': MC-MoE's error is mode-sensitivity --metric mcmoe, so this "
                  "allocation is not MC-MoE's", d.metric);
    struct mode_alloc_result res;
    if (mode_alloc_solve(&d, &o, &res, &err)) mode_fail(&err);
    if (res.status == MODE_MCKP_FEASIBLE)
        mode_warn("the time limit stopped the search: the allocation is feasible, not proven optimal (gap %.3g%%)", 100 * res.mip_gap);

    /* the alloc stream */
    struct mode_outfile out;
    mode_cli_outfile_open(&out, output);
    struct mode_stream_writer w;
    struct mode_mp h;
    mode_mp_init(&h);
    mode_stream_header_begin(&h, "alloc", "mode-ilp");
    mode_mp_key(&h, "args");
    mode_mp_map_open(&h);
    mode_mp_key(&h, "method");
    mode_mp_str(&h, mode_alloc_method_name(o.method));
    mode_mp_key(&h, "scope");
    mode_mp_str(&h, o.global ? "global" : "layer");
    mode_mp_key(&h, "bits");
    mode_mp_array_open(&h);
    for (int c = 0; c < o.n_cand; c++) mode_mp_int(&h, o.cand[c]);
    mode_mp_close(&h);
    mode_mp_key(&h, o.by_bytes ? "max_bytes" : "avg_bits");
    mode_mp_f64(&h, o.by_bytes ? o.max_bytes : o.avg_bits);
    if (o.method == MODE_ALLOC_MCMOE) {
        mode_mp_key(&h, "alpha");
        mode_mp_f64(&h, o.alpha);
        mode_mp_key(&h, "beta");
        mode_mp_f64(&h, o.beta);
    }
    if (o.by_bytes) {
        mode_mp_key(&h, "group_size");
        mode_mp_int(&h, group);
    }
    mode_mp_close(&h);
    mode_mp_key(&h, "model");
    if (have_model) mode_model_id_pack(&h, &m);
    else if (freq_path && mode_mp_get(fr.header, "model")) mode_mp_obj(&h, mode_mp_get(fr.header, "model"));
    else if (sens_path && mode_mp_get(sr.header, "model")) mode_mp_obj(&h, mode_mp_get(sr.header, "model"));
    else mode_mp_nil(&h);
    mode_mp_key(&h, "inputs");
    mode_mp_array_open(&h);
    if (freq_path) mode_mp_obj(&h, fr.header);
    if (sens_path) mode_mp_obj(&h, sr.header);
    mode_mp_close(&h);
    mode_mp_key(&h, "shards");
    mode_mp_array_open(&h);
    mode_mp_close(&h);
    mode_mp_close(&h);
    if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&w, out.fd, out.path, &err) || mode_stream_write_header(&w, &h, &err))
        mode_fail(&err);
    for (int i = 0; i < res.n_layer; i++) {
        mode_mp_reset(&h);
        mode_alloc_pack(&h, &res, i);
        if (mode_mp_finish(&h, &err) || mode_stream_write_record(&w, &h, &err)) mode_fail(&err);
    }
    mode_mp_reset(&h);
    mode_mp_map_open(&h);
    mode_mp_key(&h, "method");
    mode_mp_str(&h, mode_alloc_method_name(o.method));
    mode_mp_key(&h, "scope");
    mode_mp_str(&h, o.global ? "global" : "layer");
    mode_mp_key(&h, "budget");
    mode_mp_map_open(&h);
    mode_mp_key(&h, o.by_bytes ? "max_bytes" : "avg_bits");
    mode_mp_f64(&h, o.by_bytes ? o.max_bytes : o.avg_bits);
    mode_mp_close(&h);
    mode_mp_key(&h, "avg_bits");
    mode_mp_f64(&h, res.avg_bits);
    mode_mp_key(&h, "bytes");
    if (res.bytes >= 0) mode_mp_int(&h, (int64_t)res.bytes);
    else mode_mp_nil(&h);
    mode_mp_key(&h, "objective");
    mode_mp_f64(&h, res.objective);
    mode_mp_key(&h, "lp_bound");
    mode_mp_f64(&h, res.lp_bound);
    mode_mp_key(&h, "mip_gap");
    mode_mp_f64(&h, res.mip_gap);
    mode_mp_key(&h, "status");
    mode_mp_str(&h, mode_mckp_status_name(res.status));
    mode_mp_key(&h, "seconds");
    mode_mp_f64(&h, res.seconds);
    mode_mp_key(&h, "nodes");
    mode_mp_int(&h, res.nodes);
    mode_mp_close(&h);
    if (mode_mp_finish(&h, &err) || mode_stream_write_trailer(&w, &h, &err) || mode_stream_writer_free(&w, &err)) mode_fail(&err);
    mode_mp_free(&h);
    if (json_path) write_json(json_path, &o, &res);
    if (png_path) write_png(png_path, &o, &res);
    mode_cli_outfile_commit(&out);

    mode_alloc_result_free(&res);
    mode_alloc_data_free(&d);
    if (freq_path) mode_stream_reader_free(&fr);
    if (sens_path) mode_stream_reader_free(&sr);
    if (have_model) mode_model_close(&m);
    if (out.is_stdout) mode_cli_close_stdout();
    return 0;
}
