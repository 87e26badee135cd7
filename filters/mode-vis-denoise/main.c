/* mode-vis-denoise — from a `trace` stream, the key image tokens of every sample and layer and the
 * expert selection counts per layer, expert and token class: the `freq` stream mode-ilp reads,
 * the `keep` side stream mode-sensitivity reads, and a heatmap. Options and streams only; the
 * selection and counting are lib/denoise.c, the picture lib/heatmap.c. */
#include "../../lib/denoise.h"
#include "../../lib/heatmap.h"
#include "../../lib/model.h"
#include "../../lib/stream.h"
#include "../common/cli.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-vis-denoise [-o FILE] [--keep R] [--method attention|random|none] [--seed N]\n"
    "                        [--keep-out FILE] [--png FILE] [-m DIR] [TRACE]\n"
    "  -o, --output FILE      the freq stream, written atomically (default: stdout)\n"
    "      --keep R           fraction of each sample's image tokens that are key, per layer (default 0.2)\n"
    "      --method M         attention (default: top by text-to-vision attention), random (seeded), none\n"
    "      --seed N           seed of --method random (default 1)\n"
    "      --keep-out FILE    also write the key-token masks as a keep stream (for mode-sensitivity)\n"
    "      --png FILE         heatmaps of the normalised frequencies per token class\n"
    "  -m, --model DIR        the model (only needed for a trace whose header lacks the expert count)\n"
    "      --progress WHEN    auto (default: tty on a terminal, else log), tty, log (a line every\n"
    "                         10 s, MODE_PROGRESS_SECONDS), off; with elapsed time and ETA\n"
    "  -h, --help             this text;  -V, --version  the version\n"
    "TRACE is a trace stream (default: stdin). Exit: 0 ok, 64 usage, 65 bad data,\n"
    "66 missing input, 69 out of memory, 73 cannot create output, 74 I/O error. See mode-vis-denoise(1).\n";

static struct mode_err err;

static void header(struct mode_mp *h, const char *kind, const msgpack_object *trace_hdr, enum mode_denoise_method method, double ratio,
                   uint64_t seed)
{
    mode_stream_header_begin(h, kind, "mode-vis-denoise");
    mode_mp_key(h, "args");
    mode_mp_map_open(h);
    mode_mp_key(h, "method");
    mode_mp_str(h, mode_denoise_method_name(method));
    mode_mp_key(h, "keep");
    mode_mp_f64(h, ratio);
    mode_mp_key(h, "seed");
    mode_mp_uint(h, seed);
    mode_mp_close(h);
    mode_mp_key(h, "model");
    const msgpack_object *m = mode_mp_get(trace_hdr, "model");
    if (m) mode_mp_obj(h, m);
    else mode_mp_nil(h);
    mode_mp_key(h, "inputs");
    mode_mp_array_open(h);
    mode_mp_obj(h, trace_hdr);
    mode_mp_close(h);
    /* a trace shard makes a shard: its box is kept */
    mode_mp_key(h, "shards");
    const msgpack_object *s = mode_mp_get(trace_hdr, "shards");
    if (s && s->type == MSGPACK_OBJECT_ARRAY) mode_mp_obj(h, s);
    else {
        mode_mp_array_open(h);
        mode_mp_close(h);
    }
    mode_mp_close(h);
}

static void freq_record(struct mode_mp *b, const struct mode_freq_table *f, int l)
{
    const int E = f->n_expert;
    const int64_t shape[1] = {E};
    double *fr = malloc(sizeof *fr * (size_t)E);
    if (!fr) mode_die(MODE_EUNAVAILABLE, "out of memory");
    mode_mp_map_open(b);
    mode_mp_key(b, "layer");
    mode_mp_int(b, l);
    mode_mp_key(b, "n_expert");
    mode_mp_int(b, E);
    mode_mp_key(b, "classes");
    mode_mp_map_open(b);
    for (int c = 0; c < MODE_CLS_COUNT; c++) {
        const size_t base = ((size_t)l * MODE_CLS_COUNT + (size_t)c) * (size_t)E;
        int64_t total = 0;
        for (int e = 0; e < E; e++) total += f->count[base + e];
        for (int e = 0; e < E; e++) fr[e] = total ? (double)f->count[base + e] / (double)total : 0;
        mode_mp_key(b, mode_freq_class_name[c]);
        mode_mp_map_open(b);
        mode_mp_key(b, "count");
        mode_mp_tensor(b, MODE_I64, 1, shape, f->count + base);
        mode_mp_key(b, "weight");
        mode_mp_tensor(b, MODE_F64, 1, shape, f->weight + base);
        if (!f->without_probs) { /* a trace older than the router probabilities: none */
            mode_mp_key(b, "prob");
            mode_mp_tensor(b, MODE_F64, 1, shape, f->prob + base);
        }
        mode_mp_key(b, "tokens");
        mode_mp_int(b, f->tokens[(size_t)l * MODE_CLS_COUNT + (size_t)c]);
        mode_mp_key(b, "freq");
        mode_mp_tensor(b, MODE_F64, 1, shape, fr);
        mode_mp_close(b);
    }
    mode_mp_close(b);
    mode_mp_close(b);
    free(fr);
}

static void write_png(const char *path, const struct mode_freq_table *f, enum mode_denoise_method method, double ratio)
{
    int rows = 0;
    for (int l = 0; l < f->n_layer; l++) rows += f->seen[l];
    const int E = f->n_expert;
    static const int cls[4] = {MODE_CLS_TEXT, MODE_CLS_VISION, MODE_CLS_KEY, MODE_CLS_REDUNDANT};
    static const char *const titles[4] = {"TEXT", "VISION (ALL)", "VISION KEY", "VISION REDUNDANT"};
    double *v = malloc(sizeof *v * 4 * (size_t)rows * E);
    int *names = malloc(sizeof *names * (size_t)rows);
    if (!v || !names) mode_die(MODE_EUNAVAILABLE, "out of memory");
    double vmax = 0;
    struct mode_heatmap_panel panels[4];
    char ptitle[4][64];
    for (int p = 0; p < 4; p++) {
        int r = 0;
        int64_t tokens = 0;
        for (int l = 0; l < f->n_layer; l++) {
            if (!f->seen[l]) continue;
            names[r] = l;
            const size_t base = ((size_t)l * MODE_CLS_COUNT + (size_t)cls[p]) * (size_t)E;
            int64_t total = 0;
            for (int e = 0; e < E; e++) total += f->count[base + e];
            tokens += f->tokens[(size_t)l * MODE_CLS_COUNT + (size_t)cls[p]];
            for (int e = 0; e < E; e++) {
                double x = total ? (double)f->count[base + e] / (double)total : NAN;
                v[((size_t)p * rows + r) * E + e] = x;
                if (x > vmax) vmax = x;
            }
            r++;
        }
        snprintf(ptitle[p], sizeof ptitle[p], "%s, %lld TOKENS", titles[p], (long long)(rows ? tokens / rows : 0));
        panels[p].title = ptitle[p];
        panels[p].v = v + (size_t)p * rows * E;
    }
    char title[128];
    snprintf(title, sizeof title, "EXPERT SELECTION FREQUENCY PER LAYER, KEY = %s, KEEP %.2g", mode_denoise_method_name(method), ratio);
    struct mode_heatmap h = {.title = title,
                             .row_label = "LAYER",
                             .col_label = "EXPERT",
                             .rows = rows,
                             .cols = E,
                             .row_names = names,
                             .n_panel = 4,
                             .panel = panels,
                             .vmin = 0,
                             .vmax = vmax > 0 ? vmax : 1,
                             .scale_label = "FREQ"};
    if (mode_heatmap_png(&h, path, &err)) mode_fail(&err);
    free(v), free(names);
}

/* the header's count (args.n_expert / n_layer), 0 when absent */
static int64_t header_int(const msgpack_object *h, const char *key)
{
    const msgpack_object *a = mode_mp_get(h, "args"), *v = a ? mode_mp_get(a, key) : NULL;
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= 1000000 ? (int64_t)v->via.u64 : 0;
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-vis-denoise");
    enum { OPT_KEEP = 256, OPT_METHOD, OPT_SEED, OPT_KEEP_OUT, OPT_PNG, OPT_PROGRESS };
    static const struct option opts[] = {
        {"output", required_argument, 0, 'o'},       {"keep", required_argument, 0, OPT_KEEP},
        {"method", required_argument, 0, OPT_METHOD}, {"seed", required_argument, 0, OPT_SEED},
        {"keep-out", required_argument, 0, OPT_KEEP_OUT}, {"png", required_argument, 0, OPT_PNG},
        {"model", required_argument, 0, 'm'},        {"progress", required_argument, 0, OPT_PROGRESS}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},            {0, 0, 0, 0},
    };
    const char *output = "-", *keep_path = NULL, *png_path = NULL, *model_dir = NULL;
    double ratio = 0.2;
    enum mode_denoise_method method = MODE_DENOISE_ATTENTION;
    uint64_t seed = 1;
    char *end;
    for (int c; (c = getopt_long(argc, argv, "o:m:hV", opts, NULL)) != -1;) {
        switch (c) {
        case 'o': output = optarg; break;
        case 'm': model_dir = optarg; break;
        case OPT_KEEP:
            ratio = strtod(optarg, &end);
            if (end == optarg || *end || !(ratio > 0 && ratio <= 1)) mode_die(MODE_EUSAGE, "--keep: '%s' is not a fraction in (0, 1]", optarg);
            break;
        case OPT_METHOD: {
            int m = mode_denoise_method_parse(optarg);
            if (m < 0) mode_die(MODE_EUSAGE, "--method: '%s' is not attention, random or none", optarg);
            method = (enum mode_denoise_method)m;
            break;
        }
        case OPT_SEED:
            seed = strtoull(optarg, &end, 10);
            if (end == optarg || *end) mode_die(MODE_EUSAGE, "--seed: '%s' is not a non-negative integer", optarg);
            break;
        case OPT_KEEP_OUT: keep_path = optarg; break;
        case OPT_PNG: png_path = optarg; break;
        case OPT_PROGRESS: mode_cli_progress(optarg); break;
        case 'h': fputs(usage_text, stdout); mode_cli_close_stdout(); return 0;
        case 'V': printf("mode-vis-denoise %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    if (argc - optind > 1) mode_die(MODE_EUSAGE, "one trace stream at most (merge shards with mode-cat -s)");
    if (!strcmp(output, "-") && isatty(1)) mode_die(MODE_EUSAGE, "refusing to write a binary stream to a terminal (use -o FILE or a pipe)");
    if (keep_path && !strcmp(keep_path, "-") && !strcmp(output, "-")) mode_die(MODE_EUSAGE, "--keep-out -: stdout already carries the freq stream");

    struct mode_stream_reader r;
    if (mode_stream_open(&r, optind < argc ? argv[optind] : "-", &err) || mode_stream_read_header(&r, "trace", &err)) mode_fail(&err);
    int64_t n_expert = header_int(r.header, "n_expert"), n_layer = header_int(r.header, "n_layer");
    if (model_dir) {
        struct mode_model m;
        if (mode_model_open_flags(&m, model_dir, MODE_MODEL_NO_SCAN, &err) || mode_model_id_check(mode_mp_get(r.header, "model"), &m, r.name, &err)) mode_fail(&err);
        if (n_expert && n_expert != m.cfg.text.n_expert)
            mode_die(MODE_EDATA, "%s: traced with %lld experts per layer, the model in %s has %d", r.name, (long long)n_expert, model_dir,
                     m.cfg.text.n_expert);
        n_expert = m.cfg.text.n_expert;
        n_layer = m.cfg.text.n_layer;
        mode_model_close(&m);
    }
    if (!n_expert || !n_layer) mode_die(MODE_EUSAGE, "%s: the trace's header does not give the expert and layer counts: give -m DIR", r.name);

    struct mode_freq_table f;
    if (mode_freq_init(&f, (int)n_layer, (int)n_expert, &err)) mode_fail(&err);

    struct mode_outfile out, kout;
    mode_cli_outfile_open(&out, output);
    struct mode_stream_writer w, kw;
    struct mode_mp h;
    mode_mp_init(&h);
    if (keep_path) {
        mode_cli_outfile_open(&kout, keep_path);
        header(&h, "keep", r.header, method, ratio, seed);
        if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&kw, kout.fd, kout.path, &err) || mode_stream_write_header(&kw, &h, &err))
            mode_fail(&err);
    }

    uint8_t *keep = NULL;
    size_t keep_cap = 0;
    int64_t records = 0, ties = 0, tie_example_sample = -1, tie_example_layer = -1;
    char what[64];
    for (;;) {
        const msgpack_object *o;
        if (mode_stream_next(&r, &o, &err)) mode_fail(&err);
        if (!o) break;
        snprintf(what, sizeof what, "record %lld", (long long)records);
        struct mode_rec rec = {o, r.name, what};
        struct mode_trace_rec t;
        if (mode_trace_parse(&rec, &t, &err)) mode_fail(&err);
        if ((size_t)t.n_img + 1 > keep_cap) {
            keep_cap = (size_t)t.n_img + 1;
            free(keep);
            keep = malloc(keep_cap);
            if (!keep) mode_die(MODE_EUNAVAILABLE, "out of memory");
        }
        bool tie = false;
        if (mode_denoise_keep(&t, method, ratio, seed, keep, &tie, &err)) {
            mode_err_prefix(&err, "%s: %s: ", r.name, what);
            mode_fail(&err);
        }
        if (tie) {
            if (!ties++) tie_example_sample = t.sample, tie_example_layer = t.layer;
        }
        if (mode_freq_add(&f, &t, keep, &rec, &err)) mode_fail(&err);
        if (keep_path && t.n_img) {
            mode_mp_reset(&h);
            char id[512];
            snprintf(id, sizeof id, "%.*s", (int)(t.id_len < 511 ? t.id_len : 511), t.id);
            mode_keep_pack(&h, t.sample, id, (int)t.layer, t.n_img, keep);
            if (mode_mp_finish(&h, &err) || mode_stream_write_record(&kw, &h, &err)) mode_fail(&err);
        }
        records++;
        if (!(records % 64)) mode_progress("trace records", (uint64_t)records, 0);
    }
    if (mode_stream_finish(&r, &err)) mode_fail(&err);
    mode_progress("trace records", (uint64_t)records, (uint64_t)records);
    if (ties)
        mode_warn("%lld sample-layer pairs had a tie at the key/redundant boundary (first: sample %lld, layer %lld); the image "
                  "token with the lower index was made key",
                  (long long)ties, (long long)tie_example_sample, (long long)tie_example_layer);

    mode_mp_reset(&h);
    header(&h, "freq", r.header, method, ratio, seed);
    if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&w, out.fd, out.path, &err) || mode_stream_write_header(&w, &h, &err))
        mode_fail(&err);
    for (int l = 0; l < f.n_layer; l++) {
        if (!f.seen[l]) continue;
        mode_mp_reset(&h);
        freq_record(&h, &f, l);
        if (mode_mp_finish(&h, &err) || mode_stream_write_record(&w, &h, &err)) mode_fail(&err);
    }
    mode_mp_reset(&h);
    mode_mp_map_open(&h);
    mode_mp_key(&h, "trace_records");
    mode_mp_int(&h, records);
    mode_mp_key(&h, "boundary_ties");
    mode_mp_int(&h, ties);
    mode_mp_close(&h);
    if (mode_mp_finish(&h, &err) || mode_stream_write_trailer(&w, &h, &err) || mode_stream_writer_free(&w, &err)) mode_fail(&err);
    if (keep_path &&
        (mode_stream_write_trailer(&kw, NULL, &err) || mode_stream_writer_free(&kw, &err)))
        mode_fail(&err);
    if (keep_path) mode_cli_outfile_commit(&kout);
    if (png_path) write_png(png_path, &f, method, ratio);
    mode_cli_outfile_commit(&out);
    mode_mp_free(&h);
    free(keep);
    mode_freq_free(&f);
    mode_stream_reader_free(&r);
    if (out.is_stdout) mode_cli_close_stdout();
    return 0;
}
