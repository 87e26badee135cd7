/* mode-route-trace — runs the model over a samples stream and writes, for every sample and MoE
 * layer, the experts the router chose for each token (with their routing weights and their
 * softmax probabilities before the top-k renormalisation) and the text-to-vision attention score
 * of each image token: the `trace` stream mode-vis-denoise turns into frequencies. Options and
 * streams only; the forward pass and its hooks are lib/runtime.c, the record lib/trace.c. */
#include "../../lib/ops.h"
#include "../../lib/trace.h"
#include "../common/cli.h"
#include "../common/device.h"
#include "../common/input.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-route-trace -m DIR [-o FILE] [--layers A-B] [--samples A-B] [--router-logits]\n"
    "                        [--batch-tokens N] [--device D] [--threads N] [SAMPLES]\n"
    "  -m, --model DIR        the checkpoint\n"
    "  -o, --output FILE      the trace stream, written atomically (default: stdout)\n"
    "      --layers A-B       only MoE layers A..B (a shard; merge shards with mode-cat -s)\n"
    "      --samples A-B      only samples A..B, 0-based (a shard)\n"
    "      --router-logits    also keep the full router logits of every token\n"
    "      --samples-out FILE also write the samples with the vision tower's output in place of\n"
    "                         their pixels, for the later stages (they skip the tower)\n"
    "      --batch-tokens N   tokens run through the model together (default 16384)\n"
    "      --device D         cpu, cuda (the large matrix products through cuBLAS)\n"
    "                         or auto (default: cuda when usable)\n"
    "      --threads N        threads in all (default: the CPUs this process may use)\n"
    "      --progress WHEN    auto (default: tty on a terminal, else log), tty, log (a line every\n"
    "                         10 s, MODE_PROGRESS_SECONDS), off; with elapsed time and ETA\n"
    "  -h, --help             this text;  -V, --version  the version\n"
    "SAMPLES is a 'samples' stream (default: stdin). Exit: 0 ok, 64 usage, 65 bad data,\n"
    "66 missing input, 69 out of memory, 73 cannot create output, 74 I/O error. See mode-route-trace(1).\n";

static struct mode_err err;

struct trace_ctx {
    const struct mode_model *m;
    struct mode_stream_writer *w;
    int64_t lo, hi; /* layers written */
    bool logits;
    struct mode_mp rec;
    float **attn;     /* per sequence of the batch: scores of its image tokens in this layer */
    uint8_t **text;   /* per sequence: its text rows (the attention queries averaged) */
    const struct mode_rt_batch *b;
    int64_t records;
    float *probs; /* (rows, k) of the batch: the router's probabilities of the selected experts */
    size_t probs_cap;
};

static bool wanted(const struct trace_ctx *c, int layer)
{
    return layer >= c->lo && layer <= c->hi && c->m->cfg.text.is_moe[layer];
}

static const uint8_t *attn_rows(void *vctx, int layer, int seq)
{
    struct trace_ctx *c = vctx;
    return wanted(c, layer) && c->b->seq[seq].n_img ? c->text[seq] : NULL;
}

/* keep the image tokens' scores until the router of the same layer writes the records */
static int on_attn(void *vctx, int layer, int seq, const float *score, struct mode_err *e)
{
    (void)layer, (void)e;
    struct trace_ctx *c = vctx;
    const struct mode_rt_seq *q = &c->b->seq[seq];
    for (int64_t j = 0; j < q->n_img; j++) c->attn[seq][j] = score[q->img[j]];
    return MODE_OK;
}

static int on_router(void *vctx, int layer, const struct mode_rt_batch *b, const float *logits, const int32_t *experts,
                     const float *weights, struct mode_err *e)
{
    struct trace_ctx *c = vctx;
    if (!wanted(c, layer)) return MODE_OK;
    const int k = c->m->cfg.text.n_expert_used, E = c->m->cfg.text.n_expert;
    const size_t need = (size_t)b->n_rows * (size_t)k;
    if (need > c->probs_cap) {
        free(c->probs);
        c->probs = malloc(sizeof *c->probs * need);
        if (!c->probs) return mode_err_oom(e, sizeof *c->probs * need, "router probabilities");
        c->probs_cap = need;
    }
    /* the hook sees the logits before the runtime's softmax and renormalisation */
    mode_trace_probs(logits, b->n_rows, E, experts, k, c->probs);
    for (int s = 0; s < b->n_seq; s++) {
        const struct mode_rt_seq *q = &b->seq[s];
        mode_mp_reset(&c->rec);
        mode_trace_pack(&c->rec, q->index, q->id, layer, q->n_tok, k, E, q->modality, experts + q->row * k, weights + q->row * k,
                        c->probs + q->row * k, q->n_img ? c->attn[s] : NULL, q->n_img, c->logits ? logits + q->row * E : NULL);
        int rc = mode_mp_finish(&c->rec, e);
        if (!rc) rc = mode_stream_write_record(c->w, &c->rec, e);
        if (rc) return rc;
        c->records++;
    }
    return MODE_OK;
}

/* the end of a header: model, inputs (the samples stream's header), shards (the boxes given),
 * and the header's closing */
static void header_tail(struct mode_mp *h, const struct mode_model *m, const msgpack_object *input, bool layers, int64_t l_lo, int64_t l_hi,
                        bool samples, int64_t s_lo, int64_t s_hi)
{
    mode_mp_key(h, "model");
    mode_model_id_pack(h, m);
    mode_mp_key(h, "inputs");
    mode_mp_array_open(h);
    mode_mp_obj(h, input);
    mode_mp_close(h);
    mode_mp_key(h, "shards");
    mode_mp_array_open(h);
    if (layers || samples) {
        mode_mp_map_open(h);
        const struct {
            bool on;
            const char *key;
            int64_t lo, hi;
        } box[2] = {{layers, "layers", l_lo, l_hi}, {samples, "samples", s_lo, s_hi}};
        for (int i = 0; i < 2; i++)
            if (box[i].on) {
                mode_mp_key(h, box[i].key);
                mode_mp_array_open(h);
                mode_mp_int(h, box[i].lo);
                mode_mp_int(h, box[i].hi);
                mode_mp_close(h);
            }
        mode_mp_close(h);
    }
    mode_mp_close(h);
    mode_mp_close(h);
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-route-trace");
    enum { OPT_LAYERS = 256, OPT_SAMPLES, OPT_LOGITS, OPT_BATCH, OPT_THREADS, OPT_DEVICE, OPT_PROGRESS, OPT_SAMPLES_OUT };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},          {"output", required_argument, 0, 'o'},
        {"layers", required_argument, 0, OPT_LAYERS},  {"samples", required_argument, 0, OPT_SAMPLES},
        {"router-logits", no_argument, 0, OPT_LOGITS}, {"batch-tokens", required_argument, 0, OPT_BATCH},
        {"samples-out", required_argument, 0, OPT_SAMPLES_OUT},
        {"threads", required_argument, 0, OPT_THREADS}, {"device", required_argument, 0, OPT_DEVICE}, {"progress", required_argument, 0, OPT_PROGRESS}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},              {0, 0, 0, 0},
    };
    const char *model_dir = NULL, *output = "-", *samples_out = NULL;
    int64_t l_lo = 0, l_hi = -1, s_lo = 0, s_hi = -1;
    bool layers_given = false, samples_given = false, logits = false;
    long batch_tokens = 16384, threads = 0;
    const char *device_arg = NULL;
    char *end;
    for (int c; (c = getopt_long(argc, argv, "m:o:hV", opts, NULL)) != -1;) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'o': output = optarg; break;
        case OPT_LAYERS:
            if (!mode_parse_range(optarg, &l_lo, &l_hi)) mode_die(MODE_EUSAGE, "--layers: '%s' is not A-B or A", optarg);
            layers_given = true;
            break;
        case OPT_SAMPLES:
            if (!mode_parse_range(optarg, &s_lo, &s_hi)) mode_die(MODE_EUSAGE, "--samples: '%s' is not A-B or A", optarg);
            samples_given = true;
            break;
        case OPT_LOGITS: logits = true; break;
        case OPT_SAMPLES_OUT: samples_out = optarg; break;
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
        case 'V': printf("mode-route-trace %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    if (!model_dir) mode_die(MODE_EUSAGE, "-m DIR is required (the model to trace)");
    if (argc - optind > 1) mode_die(MODE_EUSAGE, "one samples stream at most (merge several with mode-cat -s)");
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
    struct mode_input in;
    if (mode_input_open(&in, optind < argc ? argv[optind] : "-", &m, &err)) mode_fail(&err);
    in.lo = s_lo;
    in.hi = samples_given ? s_hi : -1;

    struct mode_outfile out;
    mode_cli_outfile_open(&out, output);
    struct mode_stream_writer w;
    struct mode_mp h;
    mode_mp_init(&h);
    mode_stream_header_begin(&h, "trace", "mode-route-trace");
    mode_mp_key(&h, "args");
    mode_mp_map_open(&h);
    mode_mp_key(&h, "router_logits");
    mode_mp_bool(&h, logits);
    /* the shape of what follows, for readers without the model (mode-vis-denoise) */
    mode_mp_key(&h, "n_layer");
    mode_mp_int(&h, L);
    mode_mp_key(&h, "n_expert");
    mode_mp_int(&h, m.cfg.text.n_expert);
    mode_mp_key(&h, "n_expert_used");
    mode_mp_int(&h, m.cfg.text.n_expert_used);
    mode_mp_close(&h);
    header_tail(&h, &m, in.r.header, layers_given, l_lo, l_hi, samples_given, s_lo, s_hi);
    if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&w, out.fd, out.path, &err) || mode_stream_write_header(&w, &h, &err))
        mode_fail(&err);
    mode_mp_free(&h);

    /* --samples-out: the input's records with the tower's output for their images */
    struct mode_outfile sout;
    struct mode_stream_writer sw;
    if (samples_out) {
        if (!strcmp(samples_out, "-") || !strcmp(samples_out, output)) mode_die(MODE_EUSAGE, "--samples-out: '%s' must be a file of its own", samples_out);
        mode_cli_outfile_open(&sout, samples_out);
        mode_mp_init(&h);
        mode_stream_header_begin(&h, "samples", "mode-route-trace");
        mode_mp_key(&h, "args");
        mode_mp_map_open(&h);
        const msgpack_object *ia = mode_mp_get(in.r.header, "args");
        if (ia && ia->type == MSGPACK_OBJECT_MAP)
            for (uint32_t i = 0; i < ia->via.map.size; i++) {
                const msgpack_object_kv *kv = &ia->via.map.ptr[i];
                if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 6 && !memcmp(kv->key.via.str.ptr, "vision", 6)) continue;
                mode_mp_obj(&h, &kv->key);
                mode_mp_obj(&h, &kv->val);
            }
        mode_mp_key(&h, "vision");
        mode_mp_str(&h, "embeds");
        mode_mp_close(&h);
        header_tail(&h, &m, in.r.header, false, 0, 0, samples_given, s_lo, s_hi);
        if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&sw, sout.fd, sout.path, &err) || mode_stream_write_header(&sw, &h, &err))
            mode_fail(&err);
        mode_mp_free(&h);
    }

    struct mode_rt_batch b;
    mode_rt_batch_init(&b);
    struct trace_ctx c = {&m, &w, l_lo, l_hi, logits, {0}, NULL, NULL, &b, 0, NULL, 0};
    mode_mp_init(&c.rec);
    struct mode_rt_hooks hooks = {.ctx = &c, .router = on_router, .attn_rows = attn_rows, .attn = on_attn};
    int64_t samples = 0;
    for (int n;;) {
        if (mode_input_batch(&in, &rt, &b, batch_tokens, &n, &err)) mode_fail(&err);
        if (!n) break;
        c.attn = calloc((size_t)b.n_seq, sizeof *c.attn);
        c.text = calloc((size_t)b.n_seq, sizeof *c.text);
        if (!c.attn || !c.text) mode_die(MODE_EUNAVAILABLE, "out of memory");
        for (int s = 0; s < b.n_seq; s++) {
            const struct mode_rt_seq *q = &b.seq[s];
            c.attn[s] = calloc((size_t)q->n_img + 1, sizeof **c.attn);
            c.text[s] = malloc((size_t)q->n_tok);
            if (!c.attn[s] || !c.text[s]) mode_die(MODE_EUNAVAILABLE, "out of memory");
            for (int64_t i = 0; i < q->n_tok; i++) c.text[s][i] = q->modality[i] == MODE_MOD_TEXT;
        }
        if (samples_out) {
            if (mode_rt_vision(&rt, &b, &err)) mode_fail(&err);
            for (int q = 0; q < b.n_seq; q++) {
                mode_mp_reset(&c.rec);
                if (mode_rt_seq_pack_vision(&rt, &b, q, &c.rec, &err) || mode_mp_finish(&c.rec, &err) ||
                    mode_stream_write_record(&sw, &c.rec, &err))
                    mode_fail(&err);
            }
        }
        for (int l = 0; l <= l_hi; l++) {
            if (mode_rt_layer(&rt, &b, l, &hooks, &err)) mode_fail(&err);
        }
        for (int s = 0; s < b.n_seq; s++) free(c.attn[s]), free(c.text[s]);
        free(c.attn), free(c.text);
        c.attn = NULL;
        c.text = NULL;
        samples += n;
        mode_progress("samples", (uint64_t)samples, in.ended ? (uint64_t)samples : 0);
    }
    if (samples) mode_progress("samples", (uint64_t)samples, (uint64_t)samples);
    if (mode_stream_write_trailer(&w, NULL, &err) || mode_stream_writer_free(&w, &err)) mode_fail(&err);
    if (samples_out) {
        if (mode_stream_write_trailer(&sw, NULL, &err) || mode_stream_writer_free(&sw, &err)) mode_fail(&err);
        mode_cli_outfile_commit(&sout);
    }
    mode_cli_outfile_commit(&out);
    mode_mp_free(&c.rec);
    free(c.probs);
    mode_rt_batch_free(&b);
    mode_input_close(&in);
    mode_cli_device_report(&rt);
    mode_rt_free(&rt);
    mode_model_close(&m);
    if (out.is_stdout) mode_cli_close_stdout();
    return 0;
}
