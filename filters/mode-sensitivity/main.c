/* mode-sensitivity — δ_T(e, b) and δ_V(e, b) for every routed expert and candidate width: how
 * much the model changes when only expert e is quantized to b bits for tokens of one modality
 * (or MC-MoE's quantization loss ε(e, b), --metric mcmoe).
 * Writes a `sens` stream. Options and streams only; the sweep is lib/sens.c, the quantizers
 * lib/quant.c. */
#include "../../lib/ops.h"
#include "../../lib/quant.h"
#include "../../lib/sens.h"
#include "../../lib/trace.h"
#include "../common/cli.h"
#include "../common/device.h"
#include "../common/input.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-sensitivity -m DIR [-o FILE] [--metric kl|layer|mcmoe] [--bits LIST] [--quantizer rtn|gptq]\n"
    "                        [--group-size N] [--sym] [--min-tokens N] [--vision-tokens all|key --keep FILE]\n"
    "                        [--all] [--norm-samples N] [--samples N] [--layers A-B] [--device D] [--threads N]\n"
    "                        [SAMPLES]\n"
    "  -m, --model DIR        the checkpoint\n"
    "  -o, --output FILE      the sens stream, written atomically (default: stdout)\n"
    "      --metric M         kl (default: KL of the next-token distributions), layer (MoE output error)\n"
    "                         or mcmoe (MC-MoE's loss: summed Frobenius norms of the MoE output error)\n"
    "      --bits LIST        candidate widths (default 2,3,4)\n"
    "      --quantizer Q      rtn (default) or gptq\n"
    "      --group-size N     quantization group (default 128; clamped to each matrix's inputs)\n"
    "      --sym              symmetric quantization (default asymmetric)\n"
    "      --min-tokens N     GPTQ: fewer calibration tokens -> RTN, flagged (default 32)\n"
    "      --vision-tokens V  all (default) or key: vision = the key image tokens of --keep FILE\n"
    "      --keep FILE        the keep stream of mode-vis-denoise --keep-out\n"
    "      --all              also the modality-blind sensitivity (every token quantized; mcmoe: always)\n"
    "      --norm-samples N   mcmoe: calibration samples per Frobenius norm (default 8, MC-MoE's batch)\n"
    "      --samples N        only the first N samples\n"
    "      --layers A-B       only MoE layers A..B (a shard; merge shards with mode-cat -s)\n"
    "      --device D         cpu, cuda (the MoE layers' forward passes on the GPU)\n"
    "                         or auto (default: cuda when usable)\n"
    "      --threads N        threads in all (default: the CPUs this process may use)\n"
    "      --progress WHEN    auto (default: tty on a terminal, else log), tty, log (a line every\n"
    "                         10 s, MODE_PROGRESS_SECONDS), off; with elapsed time and ETA\n"
    "  -h, --help             this text;  -V, --version  the version\n"
    "SAMPLES is a samples stream (default: stdin). Exit: 0 ok, 64 usage, 65 bad data,\n"
    "66 missing input, 69 out of memory, 73 cannot create output, 74 I/O error. See mode-sensitivity(1).\n";

static struct mode_err err;

/* key masks by (sample, layer) */
struct keep_ent {
    int64_t sample;
    int layer;
    int64_t n_img;
    uint8_t *keep;
};
struct keep_tab {
    struct keep_ent *e;
    size_t n, cap;
};

static int keep_cmp(const void *a, const void *b)
{
    const struct keep_ent *x = a, *y = b;
    if (x->sample != y->sample) return x->sample < y->sample ? -1 : 1;
    return (x->layer > y->layer) - (x->layer < y->layer);
}

static const uint8_t *keep_lookup(void *ctx, int64_t sample, int layer, int64_t n_img)
{
    struct keep_tab *t = ctx;
    struct keep_ent key = {sample, layer, 0, NULL};
    struct keep_ent *e = bsearch(&key, t->e, t->n, sizeof *t->e, keep_cmp);
    if (!e) mode_die(MODE_EDATA, "the keep stream has no record for sample %lld, layer %d (made from other samples?)", (long long)sample, layer);
    if (e->n_img != n_img)
        mode_die(MODE_EDATA, "the keep stream's sample %lld, layer %d has %lld image tokens, the sample has %lld", (long long)sample, layer,
                 (long long)e->n_img, (long long)n_img);
    return e->keep;
}

static void load_keep(const char *path, struct keep_tab *t, const struct mode_model *m, struct mode_stream_reader *r)
{
    if (mode_stream_open(r, path, &err) || mode_stream_read_header(r, "keep", &err) ||
        mode_model_id_check(mode_mp_get(r->header, "model"), m, r->name, &err))
        mode_fail(&err);
    char what[64];
    for (uint64_t i = 0;; i++) {
        const msgpack_object *o;
        if (mode_stream_next(r, &o, &err)) mode_fail(&err);
        if (!o) break;
        snprintf(what, sizeof what, "record %llu", (unsigned long long)i);
        struct mode_rec rec = {o, r->name, what};
        struct mode_keep_rec k;
        if (mode_keep_parse(&rec, &k, &err)) mode_fail(&err);
        if (t->n == t->cap) {
            t->cap = t->cap ? 2 * t->cap : 256;
            t->e = realloc(t->e, sizeof *t->e * t->cap);
            if (!t->e) mode_die(MODE_EUNAVAILABLE, "out of memory");
        }
        struct keep_ent *e = &t->e[t->n++];
        e->sample = k.sample, e->layer = (int)k.layer, e->n_img = k.n_img;
        e->keep = malloc((size_t)k.n_img + 1);
        if (!e->keep) mode_die(MODE_EUNAVAILABLE, "out of memory");
        memcpy(e->keep, k.keep.data, (size_t)k.n_img);
    }
    if (mode_stream_finish(r, &err)) mode_fail(&err);
    qsort(t->e, t->n, sizeof *t->e, keep_cmp);
}

struct emit_ctx {
    struct mode_stream_writer *w;
    const struct mode_sens_opts *o;
    struct mode_mp rec;
    const char *metric;
};

static int emit(void *vctx, const struct mode_sens_layer *l, struct mode_err *e)
{
    struct emit_ctx *c = vctx;
    struct mode_mp *b = &c->rec;
    const int64_t eb[2] = {l->n_expert, l->n_bits}, ne[1] = {l->n_expert}, nb[1] = {l->n_bits};
    mode_mp_reset(b);
    mode_mp_map_open(b);
    mode_mp_key(b, "layer");
    mode_mp_int(b, l->layer);
    mode_mp_key(b, "metric");
    mode_mp_str(b, c->metric);
    mode_mp_key(b, "bits");
    mode_mp_tensor(b, MODE_I32, 1, nb, c->o->bits);
    mode_mp_key(b, "text");
    mode_mp_tensor(b, MODE_F64, 2, eb, l->dt);
    mode_mp_key(b, "vision");
    mode_mp_tensor(b, MODE_F64, 2, eb, l->dv);
    if (l->da) {
        mode_mp_key(b, "all");
        mode_mp_tensor(b, MODE_F64, 2, eb, l->da);
    }
    mode_mp_key(b, "tokens");
    mode_mp_map_open(b);
    mode_mp_key(b, "text");
    mode_mp_int(b, l->tok_t);
    mode_mp_key(b, "vision");
    mode_mp_int(b, l->tok_v);
    mode_mp_close(b);
    mode_mp_key(b, "counts");
    mode_mp_map_open(b);
    mode_mp_key(b, "text");
    mode_mp_tensor(b, MODE_I64, 1, ne, l->cnt_t);
    mode_mp_key(b, "vision");
    mode_mp_tensor(b, MODE_I64, 1, ne, l->cnt_v);
    mode_mp_close(b);
    if (c->o->gptq) {
        mode_mp_key(b, "fallback");
        mode_mp_tensor(b, MODE_U8, 1, ne, l->fallback);
    }
    mode_mp_close(b);
    int rc = mode_mp_finish(b, e);
    return rc ? rc : mode_stream_write_record(c->w, b, e);
}

static double t_start;

static void progress(void *ctx, int64_t done, int64_t total)
{
    (void)ctx;
    if (total > 0) mode_progress("measurements", (uint64_t)done, (uint64_t)total);
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-sensitivity");
    enum { OPT_METRIC = 256, OPT_BITS, OPT_QUANT, OPT_GROUP, OPT_SYM, OPT_MINTOK, OPT_VIS, OPT_KEEP, OPT_ALL, OPT_SAMPLES, OPT_LAYERS, OPT_THREADS, OPT_DEVICE, OPT_PROGRESS, OPT_NORM };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},          {"output", required_argument, 0, 'o'},
        {"metric", required_argument, 0, OPT_METRIC},  {"bits", required_argument, 0, OPT_BITS},
        {"quantizer", required_argument, 0, OPT_QUANT}, {"group-size", required_argument, 0, OPT_GROUP},
        {"sym", no_argument, 0, OPT_SYM},              {"min-tokens", required_argument, 0, OPT_MINTOK},
        {"vision-tokens", required_argument, 0, OPT_VIS}, {"keep", required_argument, 0, OPT_KEEP},
        {"all", no_argument, 0, OPT_ALL},              {"samples", required_argument, 0, OPT_SAMPLES},
        {"norm-samples", required_argument, 0, OPT_NORM},
        {"layers", required_argument, 0, OPT_LAYERS},  {"threads", required_argument, 0, OPT_THREADS}, {"device", required_argument, 0, OPT_DEVICE},
        {"progress", required_argument, 0, OPT_PROGRESS}, {"help", no_argument, 0, 'h'},                 {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    const char *model_dir = NULL, *output = "-", *keep_path = NULL;
    /* norm_samples 8: MC-MoE's awareness.py runs its calibration through the model in batches of 8 */
    struct mode_sens_opts o = {.metric = MODE_SENS_KL, .n_bits = 3, .bits = {2, 3, 4}, .group = 128, .min_tokens = 32, .norm_samples = 8};
    bool norm_given = false;
    bool key = false, layers_given = false;
    int64_t l_lo = 0, l_hi = -1, n_samples = -1;
    long threads = 0;
    const char *device_arg = NULL;
    char *end;
    for (int c; (c = getopt_long(argc, argv, "m:o:hV", opts, NULL)) != -1;) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'o': output = optarg; break;
        case OPT_METRIC:
            if (!strcmp(optarg, "kl")) o.metric = MODE_SENS_KL;
            else if (!strcmp(optarg, "layer")) o.metric = MODE_SENS_LAYER;
            else if (!strcmp(optarg, "mcmoe")) o.metric = MODE_SENS_MCMOE;
            else mode_die(MODE_EUSAGE, "--metric: '%s' is not kl, layer or mcmoe", optarg);
            break;
        case OPT_BITS: {
            o.n_bits = 0;
            for (const char *p = optarg; *p;) {
                long v = strtol(p, &end, 10);
                if (end == p || (v != 2 && v != 3 && v != 4 && v != 8) || o.n_bits == MODE_SENS_MAX_BITS ||
                    (o.n_bits && v <= o.bits[o.n_bits - 1]))
                    mode_die(MODE_EUSAGE, "--bits: '%s' is not an ascending list of 2, 3, 4, 8", optarg);
                o.bits[o.n_bits++] = (int)v;
                p = *end == ',' ? end + 1 : end;
                if (*end && *end != ',') mode_die(MODE_EUSAGE, "--bits: '%s' is not an ascending list of 2, 3, 4, 8", optarg);
            }
            if (!o.n_bits) mode_die(MODE_EUSAGE, "--bits: empty");
            break;
        }
        case OPT_QUANT:
            if (!strcmp(optarg, "rtn")) o.gptq = false;
            else if (!strcmp(optarg, "gptq")) o.gptq = true;
            else mode_die(MODE_EUSAGE, "--quantizer: '%s' is not rtn or gptq", optarg);
            break;
        case OPT_GROUP:
            o.group = (int)strtol(optarg, &end, 10);
            if (*end || o.group < 1) mode_die(MODE_EUSAGE, "--group-size: '%s' is not a positive integer", optarg);
            break;
        case OPT_SYM: o.sym = true; break;
        case OPT_MINTOK:
            o.min_tokens = strtoll(optarg, &end, 10);
            if (*end || o.min_tokens < 0) mode_die(MODE_EUSAGE, "--min-tokens: '%s' is not a count", optarg);
            break;
        case OPT_VIS:
            if (!strcmp(optarg, "all")) key = false;
            else if (!strcmp(optarg, "key")) key = true;
            else mode_die(MODE_EUSAGE, "--vision-tokens: '%s' is not all or key", optarg);
            break;
        case OPT_KEEP: keep_path = optarg; break;
        case OPT_ALL: o.all = true; break;
        case OPT_NORM: {
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1000000) mode_die(MODE_EUSAGE, "--norm-samples: '%s' is not a positive count", optarg);
            o.norm_samples = (int)v, norm_given = true;
            break;
        }
        case OPT_SAMPLES:
            n_samples = strtoll(optarg, &end, 10);
            if (*end || n_samples < 1) mode_die(MODE_EUSAGE, "--samples: '%s' is not a positive count", optarg);
            break;
        case OPT_LAYERS:
            if (!mode_parse_range(optarg, &l_lo, &l_hi)) mode_die(MODE_EUSAGE, "--layers: '%s' is not A-B or A", optarg);
            layers_given = true;
            break;
        case OPT_DEVICE: device_arg = optarg; break;
        case OPT_THREADS:
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 1024) mode_die(MODE_EUSAGE, "--threads: '%s' is not in 1..1024", optarg);
            break;
        case OPT_PROGRESS: mode_cli_progress(optarg); break;
        case 'h': fputs(usage_text, stdout); mode_cli_close_stdout(); return 0;
        case 'V': printf("mode-sensitivity %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    if (!model_dir) mode_die(MODE_EUSAGE, "-m DIR is required");
    if (argc - optind > 1) mode_die(MODE_EUSAGE, "one samples stream at most");
    if (key && !keep_path) mode_die(MODE_EUSAGE, "--vision-tokens key needs --keep FILE (mode-vis-denoise --keep-out)");
    if (keep_path && !key) mode_die(MODE_EUSAGE, "--keep is only used with --vision-tokens key");
    if (norm_given && o.metric != MODE_SENS_MCMOE) mode_die(MODE_EUSAGE, "--norm-samples is only used with --metric mcmoe");
    if (!strcmp(output, "-") && isatty(1)) mode_die(MODE_EUSAGE, "refusing to write a binary stream to a terminal (use -o FILE or a pipe)");
    mode_cli_blas(threads);
    const enum mode_device device = mode_cli_device(device_arg);
    mode_ops_device(device);

    struct mode_model m;
    struct mode_rt rt;
    if (mode_model_open(&m, model_dir, &err) || mode_rt_init(&rt, &m, &err)) mode_fail(&err);
    if (device == MODE_DEVICE_CUDA && mode_rt_device(&rt, device, &err)) mode_fail(&err);
    const int L = m.cfg.text.n_layer;
    if (!layers_given) l_hi = L - 1;
    if (l_hi >= L) mode_die(MODE_EUSAGE, "--layers %lld-%lld: the model has layers 0-%d", (long long)l_lo, (long long)l_hi, L - 1);
    o.layer_lo = (int)l_lo, o.layer_hi = (int)l_hi;
    {
        struct mode_quant_opts qo = {.bits = 4, .group = o.group};
        int64_t g, ng;
        if (mode_quant_groups(&qo, m.cfg.text.n_embd, &g, &ng, &err) || mode_quant_groups(&qo, m.cfg.text.n_ff_exp, &g, &ng, &err))
            mode_die(MODE_EUSAGE, "--group-size %d: %s", o.group, err.msg);
    }
    struct keep_tab kt = {0};
    struct mode_stream_reader kr;
    if (keep_path) {
        load_keep(keep_path, &kt, &m, &kr);
        o.keep = keep_lookup, o.keep_ctx = &kt;
    }
    struct mode_input in;
    struct mode_rt_batch b;
    const int n = mode_input_all(&in, optind < argc ? argv[optind] : "-", &m, &rt, n_samples, &b);

    struct mode_outfile out;
    mode_cli_outfile_open(&out, output);
    struct mode_stream_writer w;
    struct mode_mp h;
    mode_mp_init(&h);
    mode_stream_header_begin(&h, "sens", "mode-sensitivity");
    mode_mp_key(&h, "args");
    mode_mp_map_open(&h);
    static const char *const metric_names[] = {"kl", "layer", "mcmoe"};
    mode_mp_key(&h, "metric");
    mode_mp_str(&h, metric_names[o.metric]);
    if (o.metric == MODE_SENS_MCMOE) {
        mode_mp_key(&h, "norm_samples");
        mode_mp_int(&h, o.norm_samples);
    }
    mode_mp_key(&h, "bits");
    mode_mp_array_open(&h);
    for (int i = 0; i < o.n_bits; i++) mode_mp_int(&h, o.bits[i]);
    mode_mp_close(&h);
    mode_mp_key(&h, "quantizer");
    mode_mp_str(&h, o.gptq ? "gptq" : "rtn");
    mode_mp_key(&h, "group");
    mode_mp_int(&h, o.group);
    mode_mp_key(&h, "sym");
    mode_mp_bool(&h, o.sym);
    mode_mp_key(&h, "vision_tokens");
    mode_mp_str(&h, key ? "key" : "all");
    mode_mp_key(&h, "samples");
    mode_mp_int(&h, n);
    if (o.gptq) {
        mode_mp_key(&h, "min_tokens");
        mode_mp_int(&h, o.min_tokens);
    }
    mode_mp_close(&h);
    mode_mp_key(&h, "model");
    mode_model_id_pack(&h, &m);
    mode_mp_key(&h, "inputs");
    mode_mp_array_open(&h);
    mode_mp_obj(&h, in.r.header);
    if (keep_path) mode_mp_obj(&h, kr.header);
    mode_mp_close(&h);
    mode_mp_key(&h, "shards");
    mode_mp_array_open(&h);
    if (layers_given) {
        mode_mp_map_open(&h);
        mode_mp_key(&h, "layers");
        mode_mp_array_open(&h);
        mode_mp_int(&h, l_lo);
        mode_mp_int(&h, l_hi);
        mode_mp_close(&h);
        mode_mp_close(&h);
    }
    mode_mp_close(&h);
    mode_mp_close(&h);
    if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&w, out.fd, out.path, &err) || mode_stream_write_header(&w, &h, &err))
        mode_fail(&err);

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t_start = (double)ts.tv_sec + 1e-9 * ts.tv_nsec;
    o.progress = progress;
    struct emit_ctx ec = {&w, &o, {0}, metric_names[o.metric]};
    mode_mp_init(&ec.rec);
    if (mode_sens_run(&rt, &b, &o, emit, &ec, &err)) mode_fail(&err);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    mode_mp_reset(&h);
    mode_mp_map_open(&h);
    mode_mp_key(&h, "seconds");
    mode_mp_f64(&h, (double)ts.tv_sec + 1e-9 * ts.tv_nsec - t_start);
    mode_mp_key(&h, "tokens");
    mode_mp_int(&h, b.n_rows);
    mode_mp_close(&h);
    if (mode_mp_finish(&h, &err) || mode_stream_write_trailer(&w, &h, &err) || mode_stream_writer_free(&w, &err))
        mode_fail(&err);
    mode_cli_outfile_commit(&out);
    mode_mp_free(&h);
    mode_mp_free(&ec.rec);
    mode_rt_batch_free(&b);
    mode_input_close(&in);
    if (keep_path) {
        for (size_t i = 0; i < kt.n; i++) free(kt.e[i].keep);
        free(kt.e);
        mode_stream_reader_free(&kr);
    }
    mode_cli_device_report(&rt);
    mode_rt_free(&rt);
    mode_model_close(&m);
    if (out.is_stdout) mode_cli_close_stdout();
    return 0;
}
