/* mode-eval — runs a model over a samples stream and reports perplexity and exact match as JSON;
 * optionally writes every sample's logits as a stream and every record's loss as JSON lines.
 * The end of the pipeline: it judges the original checkpoint and the quantized ones alike; with
 * --compare it sets two such evaluations of the same records side by side (paired bootstrap).
 * Options and streams only; the forward pass is lib/runtime.c, the metrics and the bootstrap
 * lib/eval.c. */
#include "../../lib/eval.h"
#include "../../lib/mpjson.h"
#include "../../lib/ops.h"
#include "../../lib/runtime.h"
#include "../../lib/stream.h"
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
    "usage: mode-eval -m DIR [-o FILE] [--logits FILE] [--records FILE] [--batch-tokens N] [--device D]\n"
    "                 [--threads N] [SAMPLES]\n"
    "       mode-eval --compare A B [--resamples N] [--seed S] [-o FILE]\n"
    "  -m, --model DIR        the checkpoint to evaluate\n"
    "  -o, --output FILE      write the metrics (JSON) to FILE, atomically (default: stdout)\n"
    "      --logits FILE      also write every sample's logits as a 'logits' stream\n"
    "      --records FILE     also write every record's loss as JSON lines (sample, id, class, image,\n"
    "                         tokens, nll, exact)\n"
    "      --compare A B      compare two --records files of the same samples: the paired bootstrap 95%\n"
    "                         interval of the perplexity difference A - B, per group (JSON)\n"
    "      --resamples N      bootstrap resamples (default 10000)\n"
    "      --seed S           bootstrap seed (default 1)\n"
    "      --batch-tokens N   tokens run through the model together (default 16384)\n"
    "      --device D         cpu, cuda (the large matrix products through cuBLAS; packed MoE layers on the GPU kernels)\n"
    "                         or auto (default: cuda when usable)\n"
    "      --threads N        threads in all (default: the CPUs this process may use)\n"
    "      --progress WHEN    auto (default: tty on a terminal, else log), tty, log (a line every\n"
    "                         10 s, MODE_PROGRESS_SECONDS), off; with elapsed time and ETA\n"
    "  -h, --help             this text;  -V, --version  the version\n"
    "SAMPLES is a 'samples' stream (default: stdin). Exit: 0 ok, 64 usage, 65 bad data,\n"
    "66 missing input, 69 out of memory, 73 cannot create output, 74 I/O error. See mode-eval(1).\n";

static struct mode_err err;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct run {
    struct mode_wbuf *records; /* --records */
    struct mode_model m;
    struct mode_rt rt;
    struct mode_eval ev;
    const char *input; /* the samples stream's name, for messages */
    struct mode_stream_writer lw; /* --logits */
    bool logits;
    float *buf;
    size_t buf_cap;
};

#define CHUNK_ROWS 256 /* logits rows computed at a time when they are not all kept */

static void run_batch(struct run *r, struct mode_rt_batch *b)
{
    if (mode_rt_forward(&r->rt, b, NULL, &err)) mode_fail(&err);
    const int64_t V = r->m.cfg.text.n_vocab;
    for (int s = 0; s < b->n_seq; s++) {
        const struct mode_rt_seq *q = &b->seq[s];
        int64_t rows = r->logits ? q->n_tok : (q->n_tok < CHUNK_ROWS ? q->n_tok : CHUNK_ROWS);
        size_t need = (size_t)(rows * V);
        if (need > r->buf_cap) {
            free(r->buf);
            r->buf = malloc(need * sizeof *r->buf);
            if (!r->buf) mode_die(MODE_EUNAVAILABLE, "out of memory (%zu bytes of logits)", need * sizeof(float));
            r->buf_cap = need;
        }
        mode_eval_begin(&r->ev, q->n_tok, q->score, q->n_img);
        for (int64_t r0 = 0; r0 < q->n_tok; r0 += rows) {
            int64_t n = q->n_tok - r0 < rows ? q->n_tok - r0 : rows;
            if (mode_rt_logits(&r->rt, b, s, r0, n, r->buf, &err)) mode_fail(&err);
            mode_eval_rows(&r->ev, r->buf, r0, n, V, q->tokens, q->n_tok, q->score);
        }
        if (mode_eval_check(&r->ev, &err)) { /* an overflow in the forward pass: no "perplexity nan" */
            if (q->id && *q->id) mode_err_prefix(&err, "%s: record %lld (id '%s'): ", r->input, (long long)q->index + 1, q->id);
            else mode_err_prefix(&err, "%s: record %lld: ", r->input, (long long)q->index + 1);
            mode_fail(&err);
        }
        if (r->records) {
            struct mode_mp rec;
            mode_mp_init(&rec);
            mode_eval_record(&rec, &r->ev, q->index, q->id);
            if (mode_mp_finish(&rec, &err)) mode_fail(&err);
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            msgpack_unpack_next(&u, rec.buf, rec.len, &off);
            if (mode_mpjson_write(r->records, &u.data, 1) || mode_wbuf_putc(r->records, '\n')) mode_fail(&r->records->err);
            msgpack_unpacked_destroy(&u);
            mode_mp_free(&rec);
        }
        mode_eval_end(&r->ev);
        if (r->logits) {
            struct mode_mp rec;
            mode_mp_init(&rec);
            mode_mp_map_open(&rec);
            mode_mp_key(&rec, "sample");
            mode_mp_int(&rec, q->index);
            mode_mp_key(&rec, "id");
            mode_mp_str(&rec, q->id);
            mode_mp_key(&rec, "logits");
            int64_t shape[2] = {q->n_tok, V};
            mode_mp_tensor(&rec, MODE_F32, 2, shape, r->buf);
            mode_mp_close(&rec);
            if (mode_mp_finish(&rec, &err) || mode_stream_write_record(&r->lw, &rec, &err)) mode_fail(&err);
            mode_mp_free(&rec);
        }
    }
}

static void boot_pack(struct mode_mp *j, const struct mode_eval_boot *bt, bool answer)
{
    mode_mp_map_open(j);
    mode_mp_key(j, "records");
    mode_mp_int(j, bt->records);
    mode_mp_key(j, "tokens");
    mode_mp_int(j, bt->tokens);
    if (bt->records) {
        mode_mp_key(j, "perplexity_a");
        mode_mp_f64(j, bt->ppl_a);
        mode_mp_key(j, "perplexity_b");
        mode_mp_f64(j, bt->ppl_b);
        mode_mp_key(j, "difference");
        mode_mp_f64(j, bt->diff);
        mode_mp_key(j, "ci95");
        mode_mp_array_open(j);
        mode_mp_f64(j, bt->lo);
        mode_mp_f64(j, bt->hi);
        mode_mp_close(j);
        mode_mp_key(j, "excludes_zero");
        mode_mp_bool(j, bt->lo > 0 || bt->hi < 0);
        mode_mp_key(j, "a_lower_fraction");
        mode_mp_f64(j, bt->a_lower);
        if (answer) {
            mode_mp_key(j, "exact_match_rate_a");
            mode_mp_f64(j, bt->em_a);
            mode_mp_key(j, "exact_match_rate_b");
            mode_mp_f64(j, bt->em_b);
            mode_mp_key(j, "exact_match_difference");
            mode_mp_f64(j, bt->em_diff);
            mode_mp_key(j, "exact_match_ci95");
            mode_mp_array_open(j);
            mode_mp_f64(j, bt->em_lo);
            mode_mp_f64(j, bt->em_hi);
            mode_mp_close(j);
        }
    }
    mode_mp_close(j);
}

/* writes the map of j as JSON to path (atomically; "-": stdout) */
static void write_json(struct mode_mp *j, const char *path)
{
    if (mode_mp_finish(j, &err)) mode_fail(&err);
    struct mode_outfile out;
    mode_cli_outfile_open(&out, path);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_next(&u, j->buf, j->len, &off);
    struct mode_wbuf w;
    if (mode_wbuf_init(&w, out.fd, out.path, &err)) mode_fail(&err);
    if (mode_mpjson_write(&w, &u.data, 0) || mode_wbuf_putc(&w, '\n')) mode_fail(&w.err);
    if (mode_wbuf_free(&w, &err)) mode_fail(&err);
    mode_cli_outfile_commit(&out);
    msgpack_unpacked_destroy(&u);
    if (out.is_stdout) mode_cli_close_stdout();
}

/* --compare A B: the paired bootstrap of each group */
static int compare(const char *pa, const char *pb, long resamples, uint64_t seed, const char *output)
{
    struct mode_eval_records a, b;
    if (mode_eval_records_load(pa, &a, &err) || mode_eval_records_load(pb, &b, &err)) mode_fail(&err);
    struct mode_eval_boot bt[2];
    for (int c = 0; c < 2; c++)
        if (mode_eval_bootstrap(&a, &b, c, (int)resamples, seed, &bt[c], &err)) mode_fail(&err);
    struct mode_mp j;
    mode_mp_init(&j);
    mode_mp_map_open(&j);
    mode_mp_key(&j, "a");
    mode_mp_str(&j, pa);
    mode_mp_key(&j, "b");
    mode_mp_str(&j, pb);
    mode_mp_key(&j, "resamples");
    mode_mp_int(&j, resamples);
    mode_mp_key(&j, "seed");
    mode_mp_uint(&j, seed);
    mode_mp_key(&j, "text");
    boot_pack(&j, &bt[MODE_EVAL_TEXT], false);
    mode_mp_key(&j, "answer");
    boot_pack(&j, &bt[MODE_EVAL_ANSWER], true);
    mode_mp_close(&j);
    write_json(&j, output);
    mode_mp_free(&j);
    mode_eval_records_free(&a), mode_eval_records_free(&b);
    return 0;
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-eval");
    enum { OPT_LOGITS = 256, OPT_BATCH, OPT_THREADS, OPT_DEVICE, OPT_PROGRESS, OPT_RECORDS, OPT_COMPARE, OPT_RESAMPLES, OPT_SEED };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},         {"output", required_argument, 0, 'o'},
        {"logits", required_argument, 0, OPT_LOGITS}, {"batch-tokens", required_argument, 0, OPT_BATCH},
        {"threads", required_argument, 0, OPT_THREADS}, {"device", required_argument, 0, OPT_DEVICE}, {"progress", required_argument, 0, OPT_PROGRESS}, {"help", no_argument, 0, 'h'},
        {"records", required_argument, 0, OPT_RECORDS}, {"compare", required_argument, 0, OPT_COMPARE},
        {"resamples", required_argument, 0, OPT_RESAMPLES}, {"seed", required_argument, 0, OPT_SEED},
        {"version", no_argument, 0, 'V'},             {0, 0, 0, 0},
    };
    const char *model_dir = NULL, *output = "-", *logits_path = NULL, *records_path = NULL, *compare_a = NULL;
    long batch_tokens = 16384, threads = 0, resamples = 10000;
    unsigned long long seed = 1;
    bool boot_opts = false;
    const char *device_arg = NULL;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "m:o:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'o': output = optarg; break;
        case OPT_LOGITS: logits_path = optarg; break;
        case OPT_RECORDS: records_path = optarg; break;
        case OPT_COMPARE: compare_a = optarg; break;
        case OPT_RESAMPLES:
            resamples = strtol(optarg, &end, 10);
            if (*end || resamples < 100 || resamples > 10000000) mode_die(MODE_EUSAGE, "--resamples: '%s' is not a count of 100 to 10000000", optarg);
            boot_opts = true;
            break;
        case OPT_SEED:
            seed = strtoull(optarg, &end, 10);
            if (*end || !*optarg || *optarg == '-') mode_die(MODE_EUSAGE, "--seed: '%s' is not a non-negative integer", optarg);
            boot_opts = true;
            break;
        case OPT_BATCH:
            batch_tokens = strtol(optarg, &end, 10);
            if (*end || batch_tokens < 1) mode_die(MODE_EUSAGE, "--batch-tokens: '%s' is not a positive integer", optarg);
            break;
        case OPT_DEVICE: device_arg = optarg; break;
        case OPT_THREADS:
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 1024) mode_die(MODE_EUSAGE, "--threads: '%s' is not in 1..1024", optarg);
            break;
        case OPT_PROGRESS: mode_cli_progress(optarg); break;
        case 'h': fputs(usage_text, stdout); mode_cli_close_stdout(); return 0;
        case 'V': printf("mode-eval %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    if (compare_a) {
        if (model_dir || logits_path || records_path) mode_die(MODE_EUSAGE, "--compare reads two --records files: no -m, --logits or --records");
        if (argc - optind != 1) mode_die(MODE_EUSAGE, "--compare A B: give the two --records files");
        return compare(compare_a, argv[optind], resamples, seed, output);
    }
    if (boot_opts) mode_die(MODE_EUSAGE, "--resamples and --seed go with --compare");
    if (!model_dir) mode_die(MODE_EUSAGE, "-m DIR is required (the model to evaluate)");
    if (argc - optind > 1) mode_die(MODE_EUSAGE, "one samples stream at most (merge several with mode-cat -s)");
    const char *input = optind < argc ? argv[optind] : "-";
    if (logits_path && !strcmp(logits_path, "-") && !strcmp(output, "-"))
        mode_die(MODE_EUSAGE, "--logits - and the metrics cannot both go to stdout (use -o for the metrics)");
    if (records_path && !strcmp(records_path, "-") && (!strcmp(output, "-") || (logits_path && !strcmp(logits_path, "-"))))
        mode_die(MODE_EUSAGE, "--records - and another output cannot both go to stdout");
    mode_cli_blas(threads);
    const enum mode_device device = mode_cli_device(device_arg);
    mode_ops_device(device);

    struct run r;
    memset(&r, 0, sizeof r);
    if (mode_model_open(&r.m, model_dir, &err) || mode_rt_init(&r.rt, &r.m, &err)) mode_fail(&err);
    if (device == MODE_DEVICE_CUDA && mode_rt_device(&r.rt, device, &err)) mode_fail(&err);
    struct mode_input in;
    mode_input_memory(0, 0, true); /* the f32 lm_head and a block of logits (mode_rt_mem_need) */
    if (mode_input_open(&in, input, &r.m, &err)) mode_fail(&err);
    r.input = in.r.name;

    struct mode_outfile out, lout, rout;
    struct mode_wbuf rw;
    mode_cli_outfile_open(&out, output);
    if (records_path) {
        mode_cli_outfile_open(&rout, records_path);
        if (mode_wbuf_init(&rw, rout.fd, rout.path, &err)) mode_fail(&err);
        r.records = &rw;
    }
    if (logits_path) {
        r.logits = true;
        mode_cli_outfile_open(&lout, logits_path);
        struct mode_mp h;
        mode_mp_init(&h);
        mode_stream_header_begin(&h, "logits", "mode-eval");
        mode_mp_key(&h, "args");
        mode_mp_map_open(&h);
        mode_mp_close(&h);
        mode_mp_key(&h, "model");
        mode_model_id_pack(&h, &r.m);
        mode_mp_key(&h, "inputs");
        mode_mp_array_open(&h);
        mode_mp_obj(&h, in.r.header);
        mode_mp_close(&h);
        mode_mp_key(&h, "shards");
        mode_mp_array_open(&h);
        mode_mp_close(&h);
        mode_mp_close(&h);
        if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&r.lw, lout.fd, lout.path, &err) ||
            mode_stream_write_header(&r.lw, &h, &err))
            mode_fail(&err);
        mode_mp_free(&h);
    }

    mode_eval_init(&r.ev);
    double t0 = now();
    struct mode_rt_batch b;
    mode_rt_batch_init(&b);
    for (int n;;) {
        if (mode_input_batch(&in, &r.rt, &b, batch_tokens, &n, &err)) mode_fail(&err);
        if (!n) break;
        run_batch(&r, &b);
        double dt = now() - t0;
        char what[96];
        snprintf(what, sizeof what, "%lld tokens, %.0f tokens/s; samples", (long long)r.ev.tokens, r.ev.tokens / (dt > 0 ? dt : 1));
        mode_progress(what, (uint64_t)r.ev.samples, in.ended ? (uint64_t)r.ev.samples : 0);
    }
    double seconds = now() - t0;
    mode_progressf(1, true, "%lld tokens, %.0f tokens/s; samples %lld", (long long)r.ev.tokens, r.ev.tokens / (seconds > 0 ? seconds : 1),
                   (long long)r.ev.samples);
    if (r.logits) {
        if (mode_stream_write_trailer(&r.lw, NULL, &err) || mode_stream_writer_free(&r.lw, &err)) mode_fail(&err);
        mode_cli_outfile_commit(&lout);
    }
    if (records_path) {
        if (mode_wbuf_free(&rw, &err)) mode_fail(&err);
        mode_cli_outfile_commit(&rout);
    }

    /* the report: metrics + what was evaluated */
    struct mode_mp j;
    mode_mp_init(&j);
    mode_mp_map_open(&j);
    mode_mp_key(&j, "model");
    mode_model_id_pack(&j, &r.m);
    mode_mp_key(&j, "samples_stream");
    mode_mp_str(&j, in.r.name);
    mode_mp_key(&j, "metrics");
    mode_eval_pack(&j, &r.ev);
    mode_mp_key(&j, "seconds");
    mode_mp_f64(&j, seconds);
    mode_mp_key(&j, "tokens_per_second");
    mode_mp_f64(&j, seconds > 0 ? (double)r.ev.tokens / seconds : 0);
    mode_mp_close(&j);
    if (mode_mp_finish(&j, &err)) mode_fail(&err);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_next(&u, j.buf, j.len, &off);
    struct mode_wbuf w;
    if (mode_wbuf_init(&w, out.fd, out.path, &err)) mode_fail(&err);
    if (mode_mpjson_write(&w, &u.data, 0) || mode_wbuf_putc(&w, '\n')) mode_fail(&w.err);
    if (mode_wbuf_free(&w, &err)) mode_fail(&err);
    mode_cli_outfile_commit(&out);
    msgpack_unpacked_destroy(&u);
    mode_mp_free(&j);
    mode_input_close(&in);
    mode_rt_batch_free(&b);
    free(r.buf);
    mode_cli_device_report(&r.rt);
    mode_rt_free(&r.rt);
    mode_model_close(&r.m);
    if (out.is_stdout) mode_cli_close_stdout();
    return 0;
}
