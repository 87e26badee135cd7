/* mode-tokenize — JSONL (raw text, chat messages with images, or LLaVA conversations) to a
 * `samples` stream: tokens in the Qwen-VL chat layout, modality and score masks, resized images.
 * Options and streams only; the tokenizer is lib/tokenizer.c, the layout lib/chat.c, the images
 * lib/image.c. */
#include "../../lib/chat.h"
#include "../../lib/io.h"
#include "../../lib/model.h"
#include "../../lib/samples.h"
#include "../../lib/sha256.h"
#include "../../lib/stream.h"
#include "../common/cli.h"

#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-tokenize -m DIR [-o FILE] [--root DIR] [--max-tokens N] [--truncate] [--skip-bad]\n"
    "                     [--min-pixels N] [--max-pixels N] [--alpha drop|white] [--no-text]\n"
    "                     [INPUT.jsonl]\n"
    "  -m, --model DIR        the checkpoint: tokenizer.json, preprocessor_config.json, config.json\n"
    "  -o, --output FILE      the samples stream, written atomically (default: stdout)\n"
    "      --root DIR         image paths are relative to DIR and may not leave it (default: the\n"
    "                         input file's directory, not enforced)\n"
    "      --max-tokens N     a longer sample is an error (or cut with --truncate)\n"
    "      --truncate         cut samples longer than --max-tokens (never inside an image)\n"
    "      --skip-bad         skip a bad line with a warning instead of stopping (counted)\n"
    "      --min-pixels N, --max-pixels N   image pixel bounds (default: preprocessor_config.json)\n"
    "      --alpha drop|white transparency dropped (default: transformers given an image path, and\n"
    "                         5.17 a PIL image) or composited onto white (5.25 given a PIL image)\n"
    "      --no-text          do not store the rendered text in the records\n"
    "      --progress WHEN    auto (default: tty on a terminal, else log), tty, log (a line every\n"
    "                         10 s, MODE_PROGRESS_SECONDS), off; with elapsed time and ETA\n"
    "  -h, --help             this text;  -V, --version  the version\n"
    "INPUT is JSONL (default: stdin). Exit: 0 ok, 64 usage, 65 bad line or model, 66 missing input\n"
    "or image, 69 out of memory, 73 cannot create output, 74 I/O error. See mode-tokenize(1).\n";

/* Limits (mode-tokenize(1), LIMITS). The input is read whole, since its SHA-256 goes into the
 * header that precedes the records: MODE_TOKENIZE_MAX_INPUT bytes at most (a regular file is
 * refused by its size before anything is read). Each line is parsed by jansson as one JSON
 * value, which costs a multiple of its size, one json_t per value (some 22 times for a line of
 * numbers, measured with mode-cat -J): MODE_TOKENIZE_MAX_LINE bytes
 * at most, far beyond a calibration or evaluation conversation (images are paths in it, not
 * data); a longer line is a bad line (exit 65, or skipped with --skip-bad). Images: image.h. */
#define MODE_TOKENIZE_MAX_INPUT ((size_t)1 << 34)
#define MODE_TOKENIZE_MAX_LINE ((size_t)16 << 20)

static struct mode_err err;

static int64_t parse_pos(const char *opt, const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || v < 1) mode_die(MODE_EUSAGE, "%s: '%s' is not a positive integer", opt, s);
    return v;
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-tokenize");
    enum { OPT_ROOT = 256, OPT_MAX, OPT_TRUNC, OPT_SKIP, OPT_MINPX, OPT_MAXPX, OPT_NOTEXT, OPT_PROGRESS, OPT_ALPHA };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},         {"output", required_argument, 0, 'o'},
        {"root", required_argument, 0, OPT_ROOT},     {"max-tokens", required_argument, 0, OPT_MAX},
        {"truncate", no_argument, 0, OPT_TRUNC},      {"skip-bad", no_argument, 0, OPT_SKIP},
        {"min-pixels", required_argument, 0, OPT_MINPX}, {"max-pixels", required_argument, 0, OPT_MAXPX},
        {"no-text", no_argument, 0, OPT_NOTEXT},      {"progress", required_argument, 0, OPT_PROGRESS}, {"help", no_argument, 0, 'h'},
        {"alpha", required_argument, 0, OPT_ALPHA},
        {"version", no_argument, 0, 'V'},             {0, 0, 0, 0},
    };
    const char *model_dir = NULL, *output = "-", *root = NULL;
    int64_t max_tokens = 0, min_px = 0, max_px = 0;
    bool truncate = false, skip_bad = false, no_text = false;
    enum mode_alpha alpha = MODE_ALPHA_DROP;
    for (int c; (c = getopt_long(argc, argv, "m:o:hV", opts, NULL)) != -1;) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'o': output = optarg; break;
        case OPT_ROOT: root = optarg; break;
        case OPT_MAX: max_tokens = parse_pos("--max-tokens", optarg); break;
        case OPT_TRUNC: truncate = true; break;
        case OPT_SKIP: skip_bad = true; break;
        case OPT_MINPX: min_px = parse_pos("--min-pixels", optarg); break;
        case OPT_MAXPX: max_px = parse_pos("--max-pixels", optarg); break;
        case OPT_NOTEXT: no_text = true; break;
        case OPT_PROGRESS: mode_cli_progress(optarg); break;
        case OPT_ALPHA:
            if (!strcmp(optarg, "drop")) alpha = MODE_ALPHA_DROP;
            else if (!strcmp(optarg, "white")) alpha = MODE_ALPHA_WHITE;
            else mode_die(MODE_EUSAGE, "--alpha: '%s' is neither drop nor white", optarg);
            break;
        case 'h': fputs(usage_text, stdout); mode_cli_close_stdout(); return 0;
        case 'V': printf("mode-tokenize %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    if (!model_dir) mode_die(MODE_EUSAGE, "-m DIR is required (the tokenizer and image settings come from the model)");
    if (argc - optind > 1) mode_die(MODE_EUSAGE, "one input file at most (concatenate JSONL files with cat)");
    if (truncate && !max_tokens) mode_die(MODE_EUSAGE, "--truncate needs --max-tokens N");
    if (!strcmp(output, "-") && isatty(1)) mode_die(MODE_EUSAGE, "refusing to write a binary stream to a terminal (use -o FILE or a pipe)");
    const char *input = optind < argc ? argv[optind] : "-";

    struct mode_model m;
    if (mode_model_open_flags(&m, model_dir, MODE_MODEL_NO_SCAN, &err)) mode_fail(&err);
    char tpath[4096 + 64]; /* model_dir was opened: at most PATH_MAX */
    snprintf(tpath, sizeof tpath, "%s/tokenizer.json", model_dir);
    struct mode_tokenizer *tok;
    if (mode_tokenizer_load(tpath, &tok, &err)) mode_fail(&err);
    if (!min_px) min_px = m.pre.min_pixels > 0 ? m.pre.min_pixels : 56 * 56;
    if (!max_px) max_px = m.pre.max_pixels > 0 ? m.pre.max_pixels : 28 * 28 * 1280;
    if (min_px > max_px) mode_die(MODE_EUSAGE, "--min-pixels %lld exceeds --max-pixels %lld", (long long)min_px, (long long)max_px);

    /* the whole input first: its SHA-256 goes into the header, which comes before the records */
    char *data;
    size_t len;
    if (mode_read_file(strcmp(input, "-") ? input : "/dev/stdin", MODE_TOKENIZE_MAX_INPUT, &data, &len, &err)) mode_fail(&err);
    struct mode_sha256 sh;
    char hex[65];
    mode_sha256_init(&sh);
    mode_sha256_update(&sh, data, len);
    mode_sha256_hex(&sh, hex);
    char dirbuf[4096], basebuf[4096];
    snprintf(dirbuf, sizeof dirbuf, "%s", input);
    snprintf(basebuf, sizeof basebuf, "%s", input);
    const char *in_dir = strcmp(input, "-") ? dirname(dirbuf) : ".", *in_base = strcmp(input, "-") ? basename(basebuf) : "stdin";
    const bool confine = root != NULL; /* --root given: image paths may not leave it */
    if (!root) root = in_dir;
    struct mode_chat_ctx cc;
    if (mode_chat_init(&cc, tok, &m.cfg, min_px, max_px, root, &err)) {
        mode_err_prefix(&err, "%s: ", model_dir);
        mode_fail(&err);
    }
    cc.confine = confine;
    cc.alpha = alpha;
    size_t total_lines = 0;
    for (size_t i = 0; i < len; i++) total_lines += data[i] == '\n';
    if (len && data[len - 1] != '\n') total_lines++;

    struct mode_outfile out;
    mode_cli_outfile_open(&out, output);
    struct mode_stream_writer w;
    struct mode_mp h;
    mode_mp_init(&h);
    mode_stream_header_begin(&h, "samples", "mode-tokenize");
    mode_mp_key(&h, "args");
    mode_mp_map_open(&h);
    mode_mp_key(&h, "template");
    mode_mp_str(&h, "qwen-vl");
    mode_mp_key(&h, "root");
    mode_mp_str(&h, root);
    mode_mp_key(&h, "min_pixels");
    mode_mp_int(&h, min_px);
    mode_mp_key(&h, "max_pixels");
    mode_mp_int(&h, max_px);
    mode_mp_key(&h, "alpha");
    mode_mp_str(&h, alpha == MODE_ALPHA_WHITE ? "white" : "drop");
    if (max_tokens) {
        mode_mp_key(&h, "max_tokens");
        mode_mp_int(&h, max_tokens);
        mode_mp_key(&h, "truncate");
        mode_mp_bool(&h, truncate);
    }
    mode_mp_close(&h);
    mode_mp_key(&h, "model");
    mode_model_id_pack(&h, &m);
    mode_mp_key(&h, "inputs");
    mode_mp_array_open(&h);
    mode_mp_map_open(&h);
    mode_mp_key(&h, "file");
    mode_mp_str(&h, in_base);
    mode_mp_key(&h, "sha256");
    mode_mp_str(&h, hex);
    mode_mp_key(&h, "bytes");
    mode_mp_uint(&h, len);
    mode_mp_close(&h);
    mode_mp_close(&h);
    mode_mp_key(&h, "shards");
    mode_mp_array_open(&h);
    mode_mp_close(&h);
    mode_mp_close(&h);
    if (mode_mp_finish(&h, &err) || mode_stream_writer_init(&w, out.fd, out.path, &err) || mode_stream_write_header(&w, &h, &err))
        mode_fail(&err);

    int64_t lineno = 0, samples = 0, skipped = 0, truncated = 0, tokens = 0, image_tokens = 0, images = 0;
    for (size_t pos = 0; pos < len;) {
        char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        lineno++;
        const char *ln = data + pos;
        size_t ll = end - pos;
        pos = end + 1;
        while (ll && (ln[ll - 1] == '\r' || ln[ll - 1] == ' ' || ln[ll - 1] == '\t')) ll--;
        size_t lead = 0;
        while (lead < ll && (ln[lead] == ' ' || ln[lead] == '\t')) lead++;
        if (lead == ll) continue; /* blank line */
        char where[4200];
        snprintf(where, sizeof where, "%s:%lld", strcmp(input, "-") ? input : "stdin", (long long)lineno);
        json_error_t je;
        json_t *j = NULL;
        struct mode_chat_sample s = {0};
        int rc;
        if (end - (size_t)(ln - data) > MODE_TOKENIZE_MAX_LINE)
            rc = mode_err_set(&err, MODE_EDATA, "a line of %zu bytes exceeds the limit of %zu bytes (MODE_TOKENIZE_MAX_LINE)",
                              end - (size_t)(ln - data), MODE_TOKENIZE_MAX_LINE);
        else if (!(j = json_loadb(ln, ll, JSON_REJECT_DUPLICATES, &je)))
            rc = mode_err_set(&err, MODE_EDATA, "bad JSON at column %d: %s", je.column, je.text);
        else rc = mode_chat_sample(&cc, j, &s, &err);
        json_decref(j);
        if (!rc && max_tokens && (int64_t)s.n_tok > max_tokens) {
            if (truncate) {
                mode_chat_truncate(&s, (size_t)max_tokens, &cc);
                truncated++;
                if (!s.n_tok) {
                    mode_chat_sample_free(&s);
                    rc = mode_err_set(&err, MODE_EDATA, "nothing is left after truncation to %lld tokens", (long long)max_tokens);
                }
            } else {
                rc = mode_err_set(&err, MODE_EDATA, "%zu tokens, more than --max-tokens %lld (use --truncate to cut)", s.n_tok,
                                  (long long)max_tokens);
                mode_chat_sample_free(&s);
            }
        }
        if (rc) {
            if (rc == MODE_EUNAVAILABLE || !skip_bad) {
                mode_err_prefix(&err, "%s: ", where);
                mode_fail(&err);
            }
            mode_warn("%s: skipped: %s", where, err.msg);
            skipped++;
            continue;
        }
        char id[512];
        snprintf(id, sizeof id, "%s:%lld", in_base, (long long)lineno);
        struct mode_image_in *ims = calloc((size_t)s.n_images + 1, sizeof *ims);
        if (!ims) mode_die(MODE_EUNAVAILABLE, "out of memory");
        for (int i = 0; i < s.n_images; i++) {
            memcpy(ims[i].grid, s.images[i].grid, sizeof ims[i].grid);
            ims[i].frames = 1, ims[i].height = s.images[i].height, ims[i].width = s.images[i].width, ims[i].channels = 3;
            ims[i].pixels = s.images[i].pixels;
            ims[i].source = s.images[i].source;
        }
        struct mode_sample_in si = {id, (int64_t)s.n_tok, s.tokens, s.modality, s.score, s.n_images, ims, no_text ? NULL : s.text};
        mode_mp_reset(&h);
        mode_sample_pack(&h, &si);
        if (mode_mp_finish(&h, &err) || mode_stream_write_record(&w, &h, &err)) mode_fail(&err);
        free(ims);
        samples++;
        tokens += (int64_t)s.n_tok;
        for (size_t i = 0; i < s.n_tok; i++) image_tokens += s.modality[i] != 0;
        images += s.n_images;
        mode_chat_sample_free(&s);
        mode_progress("lines", (uint64_t)lineno, (uint64_t)total_lines);
    }
    mode_progress("lines", (uint64_t)total_lines, (uint64_t)total_lines);
    if (!samples) mode_die(MODE_EDATA, "%s: no sample (%lld lines, %lld skipped)", input, (long long)lineno, (long long)skipped);
    mode_mp_reset(&h);
    mode_mp_map_open(&h);
    mode_mp_key(&h, "lines");
    mode_mp_int(&h, lineno);
    mode_mp_key(&h, "skipped");
    mode_mp_int(&h, skipped);
    mode_mp_key(&h, "truncated");
    mode_mp_int(&h, truncated);
    mode_mp_key(&h, "tokens");
    mode_mp_int(&h, tokens);
    mode_mp_key(&h, "image_tokens");
    mode_mp_int(&h, image_tokens);
    mode_mp_key(&h, "images");
    mode_mp_int(&h, images);
    mode_mp_close(&h);
    if (mode_mp_finish(&h, &err) || mode_stream_write_trailer(&w, &h, &err) || mode_stream_writer_free(&w, &err))
        mode_fail(&err);
    mode_cli_outfile_commit(&out);
    if (skipped) mode_warn("%lld of %lld lines skipped", (long long)skipped, (long long)lineno);
    mode_mp_free(&h);
    free(data);
    mode_tokenizer_free(tok);
    mode_model_close(&m);
    if (out.is_stdout) mode_cli_close_stdout();
    return 0;
}
