/* mode-pack — GPTQ of every routed expert at the width an `alloc` stream gives it, written as a
 * GPTQ checkpoint directory (safetensors + config.json with quantization_config + model card).
 * Options, streams, files and resume state only; the quantization is lib/pack.c, the layout
 * lib/gptqpack.c. */
#include "../../lib/bitalloc.h"
#include "../../lib/gptqpack.h"
#include "../../lib/mpjson.h"
#include "../../lib/quant.h"
#include "../../lib/heatmap.h"
#include "../../lib/json.h"
#include "../../lib/ops.h"
#include "../../lib/pack.h"
#include "../../lib/sha256.h"
#include "../../lib/pool.h"
#include "../common/cli.h"
#include "../common/device.h"
#include "../common/input.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-pack -m DIR -a ALLOC -o OUTDIR [--group N] [--sym] [--act-order] [--min-tokens N]\n"
    "                 [--fp-inputs] [--attn-bits B] [--shared-bits B] [--format gptq|gptq_v2] [--samples N]\n"
    "                 [--max-shard-size BYTES] [--resume] [--device cpu|cuda|auto] [--threads N]\n"
    "                 [--base-model NAME] [--card-eval FILE]... [SAMPLES]\n"
    "       mode-pack --card-update DIR [--card-eval FILE]...\n"
    "  -m, --model DIR        the full-precision checkpoint\n"
    "  -a, --alloc FILE       the alloc stream (mode-ilp): each routed expert's width\n"
    "  -o, --output DIR       the packed checkpoint, written atomically (must not exist)\n"
    "      --group N          quantization group (default 128, clamped to each matrix's inputs)\n"
    "      --sym              symmetric quantization (default asymmetric)\n"
    "      --act-order        GPTQ columns by decreasing Hessian diagonal (desc_act)\n"
    "      --min-tokens N     fewer calibration tokens -> round-to-nearest (default 32)\n"
    "      --fp-inputs        calibrate every layer on full-precision inputs\n"
    "      --attn-bits B      also quantize the text attention (q/k/v/o_proj) to B bits (2, 3, 4, 8;\n"
    "                         default 16: left as they are)\n"
    "      --shared-bits B    shared experts to B bits (refused: Qwen3-VL-MoE has none)\n"
    "      --format F         gptq_v2 (default: zero points as they are) or gptq (v1: zero - 1)\n"
    "      --samples N        only the first N calibration samples\n"
    "      --max-shard-size B shard the safetensors at B bytes (K/M/G suffixes; default 4G)\n"
    "      --resume           continue an interrupted run from OUTDIR.resume/\n"
    "      --device D         cpu, cuda (the experts' Hessians and GPTQ in batches, and the forward passes,\n"
    "                         on the GPU) or auto (default: cuda when usable)\n"
    "      --threads N        threads in all (default: the CPUs this process may use)\n"
    "      --base-model NAME  the source model's name in the model card (default: config.json's\n"
    "                         _name_or_path, a Hugging Face cache's repository, or DIR's name)\n"
    "      --card-eval FILE   mode-eval's JSON output, a column of the card's evaluation table (up to 8)\n"
    "      --card-update DIR  only rewrite the evaluation table of DIR's model card (README.md)\n"
    "      --progress WHEN    auto (default: tty on a terminal, else log), tty, log (a line every\n"
    "                         10 s, MODE_PROGRESS_SECONDS), off; with elapsed time and ETA\n"
    "  -h, --help             this text;  -V, --version  the version\n"
    "SAMPLES is the calibration samples stream (default: stdin). Exit: 0 ok, 64 usage, 65 bad data,\n"
    "66 missing input, 69 out of memory, 73 cannot create output, 74 I/O error. See mode-pack(1).\n";

static struct mode_err err;

struct run {
    const struct mode_model *m;
    char resume_dir[4200];
    char fingerprint[65];
    int E;
    int64_t N, D;
    int last_done;
    time_t t0;
};

/* MODE_PACK_DIE_AT (mode-pack(1), ENVIRONMENT), a testing aid: the process kills itself with
 * SIGKILL at one point, leaving what a crash or `kill -9` there would leave */
enum { DIE_NEVER, DIE_LAYER_WRITE, DIE_LAYER, DIE_WRITE };
static int die_at = DIE_NEVER, die_layer = -1;

static void die_at_parse(void)
{
    const char *v = getenv("MODE_PACK_DIE_AT");
    if (!v || !*v) return;
    const char *num = NULL;
    if (!strcmp(v, "write")) die_at = DIE_WRITE;
    else if (!strncmp(v, "layer:", 6)) die_at = DIE_LAYER, num = v + 6;
    else if (!strncmp(v, "layer-write:", 12)) die_at = DIE_LAYER_WRITE, num = v + 12;
    char *end = NULL;
    if (num) die_layer = (int)strtol(num, &end, 10);
    if (die_at == DIE_NEVER || (num && (end == num || *end || die_layer < 0)))
        mode_die(MODE_EUSAGE, "MODE_PACK_DIE_AT: '%s' is not layer:N, layer-write:N or write", v);
}

static void die_here(int at, int layer)
{
    if (at == die_at && layer == die_layer) raise(SIGKILL);
}

static void proj_name(char *buf, size_t n, int layer, int e, int p, const char *what)
{
    static const char *const proj[3] = {"gate_proj", "up_proj", "down_proj"};
    snprintf(buf, n, "model.language_model.layers.%d.mlp.experts.%d.%s.%s", layer, e, proj[p], what);
}

/* prefix.{qweight,qzeros,scales,g_idx} of one packed projection (GPTQ layout, gptqpack.h) */
static int add_packed(struct mode_st_writer *w, const char *prefix, const struct mode_pack_proj *q, struct mode_err *e)
{
    char name[256];
    snprintf(name, sizeof name, "%s.qweight", prefix);
    int rc = mode_st_writer_add(w, name, MODE_I32, 2, (int64_t[]){q->k * q->bits / 32, q->n}, q->qweight, e);
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    if (!rc) rc = mode_st_writer_add(w, name, MODE_I32, 2, (int64_t[]){q->g, q->n * q->bits / 32}, q->qzeros, e);
    snprintf(name, sizeof name, "%s.scales", prefix);
    if (!rc) rc = mode_st_writer_add(w, name, MODE_F16, 2, (int64_t[]){q->g, q->n}, q->scales, e);
    snprintf(name, sizeof name, "%s.g_idx", prefix);
    if (!rc) rc = mode_st_writer_add(w, name, MODE_I32, 1, (int64_t[]){q->k}, q->g_idx, e);
    return rc;
}

/* a text decoder layer's q/k/v/o_proj weight (replaced when --attn-bits) */
static bool is_text_attn_weight(const char *name)
{
    static const char pre[] = "model.language_model.layers.";
    if (strncmp(name, pre, sizeof pre - 1)) return false;
    const char *a = strstr(name, ".self_attn.");
    if (!a) return false;
    a += strlen(".self_attn.");
    return !strcmp(a, "q_proj.weight") || !strcmp(a, "k_proj.weight") || !strcmp(a, "v_proj.weight") || !strcmp(a, "o_proj.weight");
}

/* one layer's tensors, its output hidden states and the fingerprint, committed atomically */
static int emit(void *vctx, const struct mode_pack_layer *l, const struct mode_rt_batch *b, struct mode_err *e)
{
    struct run *r = vctx;
    char path[4400], name[256];
    snprintf(path, sizeof path, "%s/layer-%03d", r->resume_dir, l->layer);
    struct mode_outdir od;
    int rc = mode_outdir_begin(&od, path, 1, e);
    if (rc) return rc;
    mode_cli_tmp_add(od.tmp, true);
    struct mode_st_writer w;
    if ((rc = mode_st_writer_init(&w, &od, 0, e))) goto fail;
    static const char *const attn[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    for (int p = 0; l->has_attn && p < 4 && !rc; p++) {
        char prefix[128];
        snprintf(prefix, sizeof prefix, "model.language_model.layers.%d.self_attn.%s", l->layer, attn[p]);
        rc = add_packed(&w, prefix, &l->attn[p], e);
    }
    for (int x = 0; x < l->n_expert && !rc; x++)
        for (int p = 0; p < 3 && !rc; p++) {
            const struct mode_pack_proj *q = &l->proj[x * 3 + p];
            if (q->bits >= 16) {
                uint16_t *bf = malloc(2 * (size_t)(q->n * q->k));
                if (!bf) {
                    rc = mode_err_oom(e, 2 * (size_t)(q->n * q->k), "an expert");
                    break;
                }
                for (int64_t i = 0; i < q->n * q->k; i++) bf[i] = mode_f32_to_bf16(q->weight[i]);
                proj_name(name, sizeof name, l->layer, x, p, "weight");
                rc = mode_st_writer_add(&w, name, MODE_BF16, 2, (int64_t[]){q->n, q->k}, bf, e);
                free(bf);
                continue;
            }
            proj_name(name, sizeof name, l->layer, x, p, "");
            name[strlen(name) - 1] = 0; /* the trailing dot */
            rc = add_packed(&w, name, q, e);
        }
    if (!rc) rc = mode_st_writer_finish(&w, e);
    mode_st_writer_free(&w);
    /* what the final write needs of this layer besides its tensors, so that a resumed run
     * writes and warns as an uninterrupted one */
    char stats[256];
    const size_t sl = mode_pack_stats_text(l, stats, sizeof stats);
    if (!rc) rc = mode_outdir_write(&od, "stats", stats, sl, e);
    if (!rc) rc = mode_outdir_write(&od, "hidden.f32", b->h, sizeof *b->h * (size_t)(b->n_rows * r->D), e);
    if (!rc) rc = mode_outdir_write(&od, "fingerprint", r->fingerprint, 64, e);
    if (!rc) die_here(DIE_LAYER_WRITE, l->layer);
    if (!rc) rc = mode_outdir_commit(&od, e);
    if (rc) goto fail;
    mode_cli_tmp_remove(od.tmp);
    /* the previous layer's hidden states are no longer needed */
    if (r->last_done >= 0) {
        snprintf(path, sizeof path, "%s/layer-%03d/hidden.f32", r->resume_dir, r->last_done);
        unlink(path);
    }
    r->last_done = l->layer;
    die_here(DIE_LAYER, l->layer);
    return MODE_OK;
fail:
    mode_outdir_abort(&od);
    mode_cli_tmp_remove(od.tmp);
    return rc;
}

static void progress(void *ctx, int layer, int expert, int n_expert)
{
    struct run *r = ctx;
    const int L = r->m->cfg.text.n_layer;
    const double done = layer + (double)expert / n_expert;
    mode_progressf(done / L, layer == L - 1 && expert == n_expert, "layer %d/%d, expert %d/%d", layer + 1, L, expert, n_expert);
}

static uint64_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1ull << 10, end++;
    else if (*end == 'M' || *end == 'm') mul = 1ull << 20, end++;
    else if (*end == 'G' || *end == 'g') mul = 1ull << 30, end++;
    if (end == s || *end || !(v > 0)) mode_die(MODE_EUSAGE, "--max-shard-size: '%s' is not a size (e.g. 4G)", s);
    return (uint64_t)(v * (double)mul);
}

/* bits (L, E) from the alloc stream; every MoE layer must be there */
static int *read_alloc(const char *path, const struct mode_model *m, struct mode_stream_reader *r)
{
    const int L = m->cfg.text.n_layer, E = m->cfg.text.n_expert;
    if (mode_stream_open(r, path, &err) || mode_stream_read_header(r, "alloc", &err) ||
        mode_model_id_check(mode_mp_get(r->header, "model"), m, r->name, &err))
        mode_fail(&err);
    int *bits = calloc((size_t)L * E, sizeof *bits);
    bool *seen = calloc((size_t)L, 1);
    if (!bits || !seen) mode_die(MODE_EUNAVAILABLE, "out of memory");
    char what[64];
    for (uint64_t i = 0;; i++) {
        const msgpack_object *o;
        if (mode_stream_next(r, &o, &err)) mode_fail(&err);
        if (!o) break;
        snprintf(what, sizeof what, "record %llu", (unsigned long long)i);
        struct mode_rec rec = {o, r->name, what};
        int64_t layer;
        struct mode_tensor t;
        if (mode_alloc_parse(&rec, &layer, &t, &err)) mode_fail(&err);
        if (layer >= L || !m->cfg.text.is_moe[layer]) mode_die(MODE_EDATA, "%s: %s: layer %lld is not a MoE layer of the model", r->name, what, (long long)layer);
        if ((int64_t)t.numel != E)
            mode_die(MODE_EDATA, "%s: %s: %llu experts, the model has %d", r->name, what, (unsigned long long)t.numel, E);
        if (seen[layer]) mode_die(MODE_EDATA, "%s: layer %lld appears twice", r->name, (long long)layer);
        seen[layer] = true;
        memcpy(bits + (size_t)layer * E, t.data, sizeof *bits * (size_t)E);
        for (int e = 0; e < E; e++) {
            int b = bits[(size_t)layer * E + e];
            if (b != 2 && b != 3 && b != 4 && b != 8 && b != 16)
                mode_die(MODE_EDATA, "%s: layer %lld expert %d: %d bits (mode-pack packs 2, 3, 4, 8 or keeps 16)", r->name, (long long)layer, e, b);
        }
    }
    if (mode_stream_finish(r, &err)) mode_fail(&err);
    for (int l = 0; l < L; l++)
        if (m->cfg.text.is_moe[l] && !seen[l]) mode_die(MODE_EDATA, "%s: no allocation for MoE layer %d", r->name, l);
    free(seen);
    return bits;
}

/* limits of the files mode-pack reads whole besides the model's own (config.h's): a side file of
 * the model directory copied into the checkpoint (tokenizer.json and the like; the largest known
 * are tens of MB), and the provenance it writes and reads back (the headers of two streams) */
#define PACK_SIDE_FILE_MAX ((size_t)1 << 30)
#define PACK_PROVENANCE_MAX ((size_t)1 << 30)

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* the model directory's other files (tokenizer, processor, generation config...), listed when
 * the run starts so that a link refused is said at once (lib/pack.h says which are followed) */
static struct mode_pack_side *list_side_files(const char *model_dir, size_t *n)
{
    struct mode_pack_side *f;
    if (mode_pack_side_files(model_dir, &f, n, &err)) mode_fail(&err);
    for (size_t i = 0; i < *n; i++)
        if (f[i].skip[0]) mode_warn("%s/%s: %s: not copied into the checkpoint", model_dir, f[i].name, f[i].skip);
    return f;
}

static void copy_side_files(const struct mode_pack_side *f, size_t n, const struct mode_outdir *od)
{
    for (size_t i = 0; i < n; i++) {
        if (f[i].skip[0]) continue;
        char *data;
        size_t dl;
        if (mode_read_file(f[i].src, PACK_SIDE_FILE_MAX, &data, &dl, &err) || mode_outdir_write(od, f[i].name, data, dl, &err)) mode_fail(&err);
        free(data);
    }
}

/* the counts of layers 0 .. n-1 from their resume state */
static void layer_stats(const struct run *r, int n, struct mode_pack_stats *st)
{
    *st = (struct mode_pack_stats){0};
    for (int l = 0; l < n; l++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/layer-%03d/stats", r->resume_dir, l);
        if (mode_pack_stats_add(p, st, &err)) mode_fail(&err);
    }
}

static void report_removed(void *ctx, const char *path, uint64_t bytes, int errnum)
{
    (void)ctx;
    if (errnum) mode_warn("%s: left by an interrupted run, %llu bytes, not removed: %s", path, (unsigned long long)bytes, strerror(errnum));
    else fprintf(stderr, "%s: removed %s, left by an interrupted run (%llu bytes)\n", mode_prog, path, (unsigned long long)bytes);
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-pack");
    enum { OPT_GROUP = 256, OPT_SYM, OPT_ACT, OPT_MINTOK, OPT_FP, OPT_FORMAT, OPT_SAMPLES, OPT_SHARD, OPT_RESUME, OPT_THREADS, OPT_ATTN, OPT_SHARED, OPT_DEVICE,
           OPT_BASE, OPT_CARD_EVAL, OPT_CARD_UPDATE, OPT_PROGRESS };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"alloc", required_argument, 0, 'a'},
        {"output", required_argument, 0, 'o'},      {"group", required_argument, 0, OPT_GROUP},
        {"sym", no_argument, 0, OPT_SYM},           {"act-order", no_argument, 0, OPT_ACT},
        {"min-tokens", required_argument, 0, OPT_MINTOK}, {"fp-inputs", no_argument, 0, OPT_FP},
        {"format", required_argument, 0, OPT_FORMAT}, {"samples", required_argument, 0, OPT_SAMPLES},
        {"max-shard-size", required_argument, 0, OPT_SHARD}, {"resume", no_argument, 0, OPT_RESUME},
        {"threads", required_argument, 0, OPT_THREADS}, {"attn-bits", required_argument, 0, OPT_ATTN},
        {"shared-bits", required_argument, 0, OPT_SHARED}, {"device", required_argument, 0, OPT_DEVICE},
        {"base-model", required_argument, 0, OPT_BASE}, {"card-eval", required_argument, 0, OPT_CARD_EVAL},
        {"card-update", required_argument, 0, OPT_CARD_UPDATE},
        {"progress", required_argument, 0, OPT_PROGRESS}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},           {0, 0, 0, 0},
    };
    const char *model_dir = NULL, *alloc_path = NULL, *outdir = NULL, *device = NULL, *base_model = NULL, *card_update = NULL;
    const char *eval_path[MODE_PACK_CARD_MAX_EVAL];
    int n_eval = 0;
    struct mode_pack_opts o = {.group = 128, .min_tokens = 32};
    bool resume = false;
    int64_t n_samples = -1;
    uint64_t shard = 4ull << 30;
    long threads = 0, shared_bits = 16;
    char *end;
    for (int c; (c = getopt_long(argc, argv, "m:a:o:hV", opts, NULL)) != -1;) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'a': alloc_path = optarg; break;
        case 'o': outdir = optarg; break;
        case OPT_GROUP:
            o.group = (int)strtol(optarg, &end, 10);
            if (*end || o.group < 1) mode_die(MODE_EUSAGE, "--group: '%s' is not a positive integer", optarg);
            break;
        case OPT_SYM: o.sym = true; break;
        case OPT_ACT: o.act_order = true; break;
        case OPT_MINTOK:
            o.min_tokens = strtoll(optarg, &end, 10);
            if (*end || o.min_tokens < 0) mode_die(MODE_EUSAGE, "--min-tokens: '%s' is not a count", optarg);
            break;
        case OPT_FP: o.fp_inputs = true; break;
        case OPT_ATTN:
        case OPT_SHARED: {
            long v = strtol(optarg, &end, 10);
            if (*end || (v != 2 && v != 3 && v != 4 && v != 8 && v != 16))
                mode_die(MODE_EUSAGE, "--%s: '%s' is not 2, 3, 4, 8 or 16", c == OPT_ATTN ? "attn-bits" : "shared-bits", optarg);
            if (c == OPT_ATTN) o.attn_bits = (int)v;
            else shared_bits = v;
            break;
        }
        case OPT_FORMAT:
            if (!strcmp(optarg, "gptq")) o.gptq_v1 = true;
            else if (!strcmp(optarg, "gptq_v2")) o.gptq_v1 = false;
            else mode_die(MODE_EUSAGE, "--format: '%s' is not gptq or gptq_v2", optarg);
            break;
        case OPT_SAMPLES:
            n_samples = strtoll(optarg, &end, 10);
            if (*end || n_samples < 1) mode_die(MODE_EUSAGE, "--samples: '%s' is not a positive count", optarg);
            break;
        case OPT_SHARD: shard = parse_size(optarg); break;
        case OPT_RESUME: resume = true; break;
        case OPT_DEVICE: device = optarg; break;
        case OPT_BASE:
            if (!*optarg) mode_die(MODE_EUSAGE, "--base-model: an empty name");
            base_model = optarg;
            break;
        case OPT_CARD_EVAL:
            if (n_eval == MODE_PACK_CARD_MAX_EVAL) mode_die(MODE_EUSAGE, "--card-eval: at most %d files", MODE_PACK_CARD_MAX_EVAL);
            eval_path[n_eval++] = optarg;
            break;
        case OPT_CARD_UPDATE: card_update = optarg; break;
        case OPT_THREADS:
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 1024) mode_die(MODE_EUSAGE, "--threads: '%s' is not in 1..1024", optarg);
            break;
        case OPT_PROGRESS: mode_cli_progress(optarg); break;
        case 'h': fputs(usage_text, stdout); mode_cli_close_stdout(); return 0;
        case 'V': printf("mode-pack %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    /* the evaluations, read before anything else is done: a bad file is said at once */
    json_t *eval[MODE_PACK_CARD_MAX_EVAL];
    for (int k = 0; k < n_eval; k++)
        if (mode_pack_eval_load(eval_path[k], &eval[k], &err)) mode_fail(&err);
    if (card_update) {
        if (model_dir || alloc_path || outdir || base_model || optind < argc)
            mode_die(MODE_EUSAGE, "--card-update DIR takes only --card-eval FILE: the rest of the card stays as it is");
        if (mode_pack_card_update(card_update, eval, n_eval, &err)) mode_fail(&err);
        for (int k = 0; k < n_eval; k++) json_decref(eval[k]);
        mode_cli_close_stdout();
        return 0;
    }
    if (!model_dir || !alloc_path || !outdir) mode_die(MODE_EUSAGE, "-m DIR, -a ALLOC and -o OUTDIR are required");
    /* OUTDIR without trailing slashes: OUTDIR.resume and OUTDIR.tmp-* are its siblings */
    char outbuf[4096];
    if (snprintf(outbuf, sizeof outbuf, "%s", outdir) >= (int)sizeof outbuf) mode_die(MODE_EUSAGE, "-o: path too long");
    for (size_t k = strlen(outbuf); k > 1 && outbuf[k - 1] == '/';) outbuf[--k] = 0;
    outdir = outbuf;
    die_at_parse();
    if (argc - optind > 1) mode_die(MODE_EUSAGE, "one samples stream at most");
    if (file_exists(outdir)) mode_die(MODE_ECANTCREAT, "%s exists: mode-pack does not overwrite a checkpoint", outdir);
    o.device = mode_cli_device(device);
    mode_ops_device(o.device); /* the forward passes' large products too */
    mode_cli_blas(threads);

    struct mode_model m;
    struct mode_rt rt;
    if (mode_model_open(&m, model_dir, &err) || mode_rt_init(&rt, &m, &err)) mode_fail(&err);
    if (o.device == MODE_DEVICE_CUDA && mode_rt_device(&rt, o.device, &err)) mode_fail(&err);
    if (m.packed) mode_die(MODE_EUSAGE, "%s is already packed: give the full-precision checkpoint", model_dir);
    /* Qwen3-VL-MoE (the one architecture mode binds) routes every token to its top-k routed
     * experts only: there is no shared expert to quantize */
    if (shared_bits < 16)
        mode_die(MODE_EUSAGE, "--shared-bits: %s (%s) has no shared experts; only its routed experts and attention can be quantized",
                 model_dir, m.cfg.arch_name);
    if (o.attn_bits == 16) o.attn_bits = 0;
    if (o.attn_bits) {
        const struct mode_text_config *tc = &m.cfg.text;
        const int64_t qd = (int64_t)tc->n_head * tc->head_dim, kvd = (int64_t)tc->n_head_kv * tc->head_dim, D = tc->n_embd;
        const int64_t dims[4][2] = {{qd, D}, {kvd, D}, {kvd, D}, {D, qd}};
        static const char *const pn[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
        struct mode_quant_opts qo = {.bits = o.attn_bits, .group = o.group};
        int64_t g, ng;
        for (int p = 0; p < 4; p++)
            if (mode_quant_groups(&qo, dims[p][1], &g, &ng, &err) || mode_gptq_check_dims(dims[p][0], dims[p][1], o.attn_bits, &err))
                mode_die(MODE_EUSAGE, "--attn-bits %d: %s (%lld x %lld): %s", o.attn_bits, pn[p], (long long)dims[p][0], (long long)dims[p][1], err.msg);
    }
    const int L = m.cfg.text.n_layer, E = m.cfg.text.n_expert;
    size_t n_side;
    struct mode_pack_side *side = list_side_files(model_dir, &n_side);
    char *source_yaml;
    if (mode_pack_source_yaml(model_dir, &source_yaml, &err)) {
        mode_warn("%s: the model card does not carry its license", err.msg);
        source_yaml = NULL;
    }
    struct mode_stream_reader ar;
    int *bits = read_alloc(alloc_path, &m, &ar);
    for (int l = 0; l < L; l++)
        for (int e = 0; m.cfg.text.is_moe[l] && e < E; e++) {
            const int b = bits[(size_t)l * E + e];
            struct mode_quant_opts qo = {.bits = b == 16 ? 4 : b, .group = o.group};
            int64_t g, ng;
            if (b < 16 && (mode_quant_groups(&qo, m.cfg.text.n_embd, &g, &ng, &err) || mode_quant_groups(&qo, m.cfg.text.n_ff_exp, &g, &ng, &err) ||
                           mode_gptq_check_dims(m.cfg.text.n_ff_exp, m.cfg.text.n_embd, b, &err) ||
                           mode_gptq_check_dims(m.cfg.text.n_embd, m.cfg.text.n_ff_exp, b, &err)))
                mode_die(MODE_EUSAGE, "layer %d expert %d at %d bits: %s", l, e, b, err.msg);
        }

    struct mode_input in;
    struct mode_rt_batch b;
    {
        /* besides the runtime: per token the MoE input, the layer snapshot, the routing and (with
         * --attn-bits) the attention's inputs; fixed, a layer's experts dequantised in f32 and a
         * Hessian in f64 (lib/pack.c), and per thread an expert's weights, rows and Hessian */
        const struct mode_text_config *t = &m.cfg.text;
        const int64_t D = t->n_embd, I = t->n_ff_exp, qd = (int64_t)t->n_head * t->head_dim, hmax = D > I ? (D > qd ? D : qd) : (I > qd ? I : qd);
        const int64_t per_row = 4 * (2 * D + t->n_expert_used) + (o.attn_bits > 0 && o.attn_bits < 16 ? 4 * (D + qd) : 0);
        const int64_t fixed = (int64_t)t->n_expert * 3 * I * D * 4 + 8 * hmax * hmax + mode_pool_threads() * (8 * hmax * hmax + 4 * 3 * I * D);
        mode_input_memory(per_row, fixed, false);
    }
    const int n = mode_input_all(&in, optind < argc ? argv[optind] : "-", &m, &rt, n_samples, &b);

    /* fingerprint of everything the result depends on */
    struct run r = {.m = &m, .E = E, .N = b.n_rows, .D = m.cfg.text.n_embd, .last_done = -1, .t0 = time(NULL)};
    {
        struct mode_sha256 sh;
        mode_sha256_init(&sh);
        mode_sha256_update(&sh, m.cfg.hash, strlen(m.cfg.hash));
        mode_sha256_update(&sh, m.weights_hash, strlen(m.weights_hash));
        mode_sha256_update(&sh, bits, sizeof *bits * (size_t)L * E);
        int64_t fp[9] = {o.group, o.sym, o.act_order, o.min_tokens, o.fp_inputs, o.gptq_v1, n, b.n_rows, o.attn_bits};
        mode_sha256_update(&sh, fp, sizeof fp);
        struct mode_mp hb;
        mode_mp_init(&hb);
        mode_mp_obj(&hb, in.r.header);
        mode_sha256_update(&sh, hb.buf, hb.len);
        mode_mp_free(&hb);
        for (int s = 0; s < b.n_seq; s++) mode_sha256_update(&sh, b.seq[s].tokens, sizeof *b.seq[s].tokens * (size_t)b.seq[s].n_tok);
        mode_sha256_hex(&sh, r.fingerprint);
    }
    snprintf(r.resume_dir, sizeof r.resume_dir, "%s.resume", outdir);
    if (mode_rt_vision(&rt, &b, &err)) mode_fail(&err);
    /* the resume state, locked for this run; what dead runs left of OUTDIR's temporaries goes */
    const bool existed = file_exists(r.resume_dir);
    if (!existed && mkdir(r.resume_dir, 0777) && errno != EEXIST)
        mode_die(MODE_ECANTCREAT, "%s: cannot create: %s", r.resume_dir, strerror(errno));
    int lock_fd;
    if (mode_pack_lock(r.resume_dir, &lock_fd, &err) || mode_pack_clean(outdir, r.resume_dir, report_removed, NULL, &err)) mode_fail(&err);
    if (existed) {
        if (!resume)
            mode_die(MODE_ECANTCREAT, "%s exists from an interrupted run: continue it with --resume, or remove it", r.resume_dir);
        /* the last completed layer with its hidden states */
        for (int l = L - 1; l >= 0 && r.last_done < 0; l--) {
            char p[4400];
            snprintf(p, sizeof p, "%s/layer-%03d/hidden.f32", r.resume_dir, l);
            if (!file_exists(p)) continue;
            char fpp[4400], *fpd, *h;
            size_t fl, hl;
            snprintf(fpp, sizeof fpp, "%s/layer-%03d/fingerprint", r.resume_dir, l);
            if (mode_read_file(fpp, 1024, &fpd, &fl, &err)) mode_fail(&err);
            if (fl != 64 || memcmp(fpd, r.fingerprint, 64))
                mode_die(MODE_EDATA, "%s was made from other inputs or options (fingerprint %.12s, now %.12s): remove it to start over",
                         r.resume_dir, fpd, r.fingerprint);
            free(fpd);
            /* the expected size as the limit: a wrong-sized file is refused from its size, unread */
            if (mode_read_file(p, sizeof *b.h * (size_t)(b.n_rows * r.D), &h, &hl, &err)) mode_fail(&err);
            if (hl != sizeof *b.h * (size_t)(b.n_rows * r.D)) mode_die(MODE_EDATA, "%s: %zu bytes, expected %zu", p, hl, sizeof *b.h * (size_t)(b.n_rows * r.D));
            memcpy(b.h, h, hl);
            free(h);
            r.last_done = l;
        }
        if (r.last_done >= 0) {
            struct mode_pack_stats st;
            layer_stats(&r, r.last_done + 1, &st); /* checked now rather than after the remaining layers */
            b.next_layer = r.last_done + 1;
            o.start_layer = r.last_done + 1;
            if (isatty(2)) fprintf(stderr, "mode-pack: resuming after layer %d\n", r.last_done);
        }
    }
    o.progress = progress, o.progress_ctx = &r;
    if (o.start_layer < L && mode_pack_run(&rt, &b, bits, &o, emit, &r, &err)) mode_fail(&err);
    mode_cli_device_report(&rt);
    /* the counts of every layer, this run's and those of the run it resumes alike */
    struct mode_pack_stats st;
    layer_stats(&r, L, &st);
    if (st.rtn) mode_warn("%lld experts had fewer than %lld calibration tokens and were rounded to nearest", (long long)st.rtn, (long long)o.min_tokens);
    if (st.attn_rtn)
        mode_warn("the attention of %lld layers was rounded to nearest: fewer than %lld calibration tokens", (long long)st.attn_rtn, (long long)o.min_tokens);
    if (st.zero_lost)
        mode_warn("%lld zero points are 0, which the v1 format stores as -1: loaders will dequantise those groups off by one level (use --format gptq_v2)",
                  (long long)st.zero_lost);

    /* the checkpoint */
    struct mode_outdir od;
    if (mode_outdir_begin(&od, outdir, 0, &err)) mode_fail(&err);
    mode_cli_tmp_add(od.tmp, true);
    struct mode_st_writer w;
    if (mode_st_writer_init(&w, &od, shard, &err)) mode_fail(&err);
    /* every tensor but the fused routed experts, as stored */
    for (size_t i = 0; i < m.st.n_tensors; i++) {
        const struct mode_st_tensor *t = m.st.sorted[i];
        if (strstr(t->name, ".mlp.experts.gate_up_proj") || strstr(t->name, ".mlp.experts.down_proj")) continue;
        if (o.attn_bits && is_text_attn_weight(t->name)) continue;
        if (mode_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err)) mode_fail(&err);
    }
    for (int l = 0; l < L; l++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/layer-%03d/model.safetensors", r.resume_dir, l);
        struct mode_st_file f;
        if (mode_st_open(&f, p, &err)) mode_fail(&err);
        for (size_t i = 0; i < f.n_tensors; i++) {
            const struct mode_st_tensor *t = &f.tensors[i];
            if (mode_st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data, &err)) mode_fail(&err);
        }
        mode_st_close(&f);
    }
    if (mode_st_writer_finish(&w, &err)) mode_fail(&err);
    mode_st_writer_free(&w);
    die_here(DIE_WRITE, -1);

    /* config.json: the model's, with quantization_config and the allocation */
    char cp[4200];
    snprintf(cp, sizeof cp, "%s/config.json", model_dir);
    json_t *cfg;
    if (mode_json_load(cp, MODE_CONFIG_MAX_FILE, &cfg, &err)) mode_fail(&err);
    json_t *qc = mode_pack_quant_config(&m.cfg.text, bits, &o);
    if (!qc) mode_die(MODE_EUNAVAILABLE, "out of memory");
    char base[512], model_type[64] = "";
    if (base_model) snprintf(base, sizeof base, "%s", base_model);
    else mode_pack_source_name(model_dir, cfg, base, sizeof base);
    if (json_is_string(json_object_get(cfg, "model_type")))
        snprintf(model_type, sizeof model_type, "%s", json_string_value(json_object_get(cfg, "model_type")));
    json_object_set_new(cfg, "quantization_config", qc);
    /* the mode section: allocation and provenance */
    json_t *mode = json_object(), *alloc = json_array();
    for (int l = 0; l < L; l++) {
        if (!m.cfg.text.is_moe[l]) continue;
        json_t *row = json_array();
        for (int e = 0; e < E; e++) json_array_append_new(row, json_integer(bits[(size_t)l * E + e]));
        json_t *lo = json_object();
        json_object_set_new(lo, "layer", json_integer(l));
        json_object_set_new(lo, "bits", row);
        json_array_append_new(alloc, lo);
    }
    json_object_set_new(mode, "allocation", alloc);
    json_object_set_new(mode, "min_tokens", json_integer(o.min_tokens));
    json_object_set_new(mode, "fp_inputs", json_boolean(o.fp_inputs));
    json_object_set_new(mode, "attn_bits", json_integer(o.attn_bits ? o.attn_bits : 16));
    json_object_set_new(mode, "gptq_device", json_string(mode_device_name(o.device)));
    json_object_set_new(mode, "rtn_fallback_experts", json_integer(st.rtn));
    if (o.attn_bits) json_object_set_new(mode, "rtn_fallback_attention_layers", json_integer(st.attn_rtn));
    json_object_set_new(mode, "calibration_samples", json_integer(n));
    json_object_set_new(mode, "calibration_tokens", json_integer(b.n_rows));
    json_object_set_new(mode, "fingerprint", json_string(r.fingerprint));
    {
        struct mode_mp pm;
        mode_mp_init(&pm);
        mode_mp_map_open(&pm);
        mode_mp_key(&pm, "alloc");
        mode_mp_obj(&pm, ar.header);
        mode_mp_key(&pm, "samples");
        mode_mp_obj(&pm, in.r.header);
        mode_mp_close(&pm);
        if (mode_mp_finish(&pm, &err)) mode_fail(&err);
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t uo = 0;
        msgpack_unpack_next(&u, pm.buf, pm.len, &uo);
        struct mode_wbuf jb;
        char jp[4400];
        snprintf(jp, sizeof jp, "%s/provenance.json", od.tmp);
        struct mode_outfile pf;
        if (mode_outfile_open(&pf, jp, &err) || mode_wbuf_init(&jb, pf.fd, jp, &err)) mode_fail(&err);
        if (mode_mpjson_write(&jb, &u.data, 0) || mode_wbuf_putc(&jb, '\n')) mode_fail(&jb.err);
        if (mode_wbuf_free(&jb, &err) || mode_outfile_commit(&pf, &err)) mode_fail(&err);
        msgpack_unpacked_destroy(&u);
        mode_mp_free(&pm);
        json_t *prov;
        if (mode_json_load(jp, PACK_PROVENANCE_MAX, &prov, &err)) mode_fail(&err);
        unlink(jp);
        json_object_set_new(mode, "provenance", prov);
    }
    json_object_set_new(cfg, "mode", mode);
    char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text || mode_outdir_write(&od, "config.json", text, strlen(text), &err)) mode_fail(&err);
    free(text);
    json_decref(cfg);
    copy_side_files(side, n_side, &od);

    /* the picture and the model card */
    {
        int moe = 0;
        for (int l = 0; l < L; l++) moe += m.cfg.text.is_moe[l];
        double *v = malloc(sizeof *v * (size_t)moe * E), cv[5] = {2, 3, 4, 8, 16};
        int *names = malloc(sizeof *names * (size_t)moe);
        if (!v || !names) mode_die(MODE_EUNAVAILABLE, "out of memory");
        for (int l = 0, k = 0; l < L; l++) {
            if (!m.cfg.text.is_moe[l]) continue;
            names[k] = l;
            for (int e = 0; e < E; e++) v[(size_t)k * E + e] = bits[(size_t)l * E + e];
            k++;
        }
        const char *labels[5] = {"2 BITS", "3 BITS", "4 BITS", "8 BITS", "16 (KEPT)"};
        struct mode_heatmap_panel panel = {"BIT WIDTH PER EXPERT", v};
        struct mode_heatmap hm = {.title = "MODE-PACK ALLOCATION", .row_label = "LAYER", .col_label = "EXPERT", .rows = moe, .cols = E,
                                  .row_names = names, .n_panel = 1, .panel = &panel, .n_cat = 5, .cat_value = cv, .cat_label = labels};
        char pp[4400];
        snprintf(pp, sizeof pp, "%s/bits.png", od.tmp);
        if (mode_heatmap_png(&hm, pp, &err)) mode_fail(&err);
        free(v), free(names);
    }
    {
        char method[64] = "?", budget[96] = "?";
        const msgpack_object *args = mode_mp_get(ar.header, "args");
        mode_mp_str_copy(mode_mp_get(args, "method"), method, sizeof method);
        const msgpack_object *ab = mode_mp_get(args, "avg_bits"), *mb = mode_mp_get(args, "max_bytes");
        if (ab && ab->type == MSGPACK_OBJECT_FLOAT64) snprintf(budget, sizeof budget, "average %g bits per routed expert", ab->via.f64);
        else if (mb && mb->type == MSGPACK_OBJECT_FLOAT64) snprintf(budget, sizeof budget, "at most %.0f bytes of routed experts", mb->via.f64);
        struct mode_pack_card card = {.base_model = base, .source_yaml = source_yaml, .arch = m.cfg.arch_name,
                                      .model_type = model_type[0] ? model_type : NULL, .text = &m.cfg.text, .bits = bits,
                                      .opts = &o, .method = method, .budget = budget, .n_samples = n, .n_tokens = b.n_rows, .rtn = st.rtn,
                                      .picture = "bits.png", .eval = eval, .n_eval = n_eval};
        char rp[4400];
        snprintf(rp, sizeof rp, "%s/README.md", od.tmp);
        struct mode_outfile cf;
        struct mode_wbuf cw;
        if (mode_outfile_open(&cf, rp, &err) || mode_wbuf_init(&cw, cf.fd, rp, &err)) mode_fail(&err);
        if (mode_pack_card_write(&cw, &card)) mode_fail(&cw.err);
        if (mode_wbuf_free(&cw, &err) || mode_outfile_commit(&cf, &err)) mode_fail(&err);
    }
    if (mode_outdir_commit(&od, &err)) mode_fail(&err);
    mode_cli_tmp_remove(od.tmp);
    /* the resume state is no longer needed */
    for (int l = 0; l < L; l++) {
        char p[4400];
        snprintf(p, sizeof p, "%s/layer-%03d", r.resume_dir, l);
        mode_rmdir_flat(p);
    }
    char lp[4400];
    snprintf(lp, sizeof lp, "%s/lock", r.resume_dir);
    unlink(lp);
    if (rmdir(r.resume_dir)) mode_warn("%s: not removed: %s", r.resume_dir, strerror(errno));
    close(lock_fd);
    free(side);
    free(source_yaml);
    for (int k = 0; k < n_eval; k++) json_decref(eval[k]);

    free(bits);
    mode_stream_reader_free(&ar);
    mode_rt_batch_free(&b);
    mode_input_close(&in);
    mode_rt_free(&rt);
    mode_model_close(&m);
    return 0;
}
