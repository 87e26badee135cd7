/* mode-bench — times one MoE layer of packed experts on the GPU (uniform widths and a mixed
 * allocation, several token counts) against a cuBLAS bf16 baseline measured in the same run, and
 * prints the table. Options and output only; the measurements are lib/bench.c. */
#include "../../lib/bench.h"
#include "../../lib/bitalloc.h"
#include "../../lib/stream.h"
#include "../common/cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-bench [--experts N] [--topk K] [--hidden D] [--width I] [--group G] [--bits LIST]\n"
    "                  [--alloc FILE [--layer L]] [--tokens LIST] [--iters N] [--pool N] [--seed N]\n"
    "                  [--no-baseline] [--format table|tsv]\n"
    "  --experts N      routed experts (default 128)       --topk K    experts per token (8)\n"
    "  --hidden D       hidden size (2048)                 --width I   expert width (768)\n"
    "  --group G        quantization group (128)\n"
    "  --bits LIST      widths to time: 2, 3, 4, 8, 16 (bf16) and 'mixed' (default 2,3,4,8,16,mixed)\n"
    "  --alloc FILE     the mixed allocation from an alloc stream (mode-ilp), layer --layer (default: the first);\n"
    "                   without it, experts cycle through 2, 3, 4 bits\n"
    "  --tokens LIST    token counts (default 1,8,64,4096; above 64 the prefill path)\n"
    "  --iters N        timed runs per case (default 200)  --pool N    routings and cold copies cycled (64)\n"
    "  --seed N         random seed (default 1)            --no-baseline  skip the cuBLAS bf16 layer\n"
    "  --format F       table (default) or tsv\n"
    "  -h, --help       this text;  -V, --version  the version\n"
    "Needs a CUDA GPU. Exit: 0 ok, 64 usage, 65 bad alloc stream, 66 missing input, 69 no GPU or out of device\n"
    "memory, 70 internal error, 74 write error. See mode-bench(1).\n";

static struct mode_err err;

/* "a,b,c" into v (at most MODE_BENCH_MAX); 'mixed' as 0 when allowed */
static int parse_list(const char *opt, const char *s, int *v, bool widths)
{
    int n = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (n == MODE_BENCH_MAX) mode_die(MODE_EUSAGE, "--%s: at most %d values", opt, MODE_BENCH_MAX);
        if (widths && !strcmp(tok, "mixed")) {
            v[n++] = 0;
            continue;
        }
        char *end;
        const long x = strtol(tok, &end, 10);
        if (*end || x < 1 || x > 1 << 20 || (widths && x != 2 && x != 3 && x != 4 && x != 8 && x != 16))
            mode_die(MODE_EUSAGE, "--%s: '%s' is not %s", opt, tok, widths ? "2, 3, 4, 8, 16 or mixed" : "a token count (1 to 1048576)");
        v[n++] = (int)x;
    }
    if (!n) mode_die(MODE_EUSAGE, "--%s: an empty list", opt);
    return n;
}

static long parse_int(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    const long x = strtol(s, &end, 10);
    if (*end || end == s || x < lo || x > hi) mode_die(MODE_EUSAGE, "--%s: '%s' is not an integer in %ld..%ld", opt, s, lo, hi);
    return x;
}

/* the widths of one layer of an alloc stream */
static void read_alloc(const char *path, long layer, int n_expert, uint8_t *bits)
{
    struct mode_stream_reader r;
    if (mode_stream_open(&r, path, &err) || mode_stream_read_header(&r, "alloc", &err)) mode_fail(&err);
    bool found = false;
    char what[64];
    for (uint64_t i = 0;; i++) {
        const msgpack_object *o;
        if (mode_stream_next(&r, &o, &err)) mode_fail(&err);
        if (!o) break;
        snprintf(what, sizeof what, "record %llu", (unsigned long long)i);
        struct mode_rec rec = {o, r.name, what};
        int64_t l;
        struct mode_tensor t;
        if (mode_alloc_parse(&rec, &l, &t, &err)) mode_fail(&err);
        if (found || (layer >= 0 && l != layer)) continue;
        if ((int64_t)t.numel != n_expert)
            mode_die(MODE_EDATA, "%s: layer %lld has %llu experts, --experts is %d", r.name, (long long)l, (unsigned long long)t.numel, n_expert);
        const int32_t *b = t.data;
        for (int e = 0; e < n_expert; e++) {
            if (b[e] != 2 && b[e] != 3 && b[e] != 4 && b[e] != 8 && b[e] != 16)
                mode_die(MODE_EDATA, "%s: layer %lld expert %d: %d bits (the kernels take 2, 3, 4, 8, 16)", r.name, (long long)l, e, b[e]);
            bits[e] = (uint8_t)b[e];
        }
        found = true;
    }
    if (mode_stream_finish(&r, &err)) mode_fail(&err);
    if (!found) mode_die(MODE_EDATA, "%s: no layer %ld", r.name, layer);
    mode_stream_reader_free(&r);
}

static void progress(void *ctx, int done, int total)
{
    (void)ctx;
    mode_progress("cases", (uint64_t)done, (uint64_t)total);
}

static const char *path_of(const struct mode_bench_row *x) { return x->qgemm ? "qgemm" : x->prefill ? "prefill" : "decode"; }

static void name_of(int w, char *buf, size_t n)
{
    if (w) snprintf(buf, n, w == 16 ? "bf16" : "W%d", w);
    else snprintf(buf, n, "mixed");
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-bench");
    enum { O_EXP = 256, O_TOPK, O_HID, O_WID, O_GRP, O_BITS, O_ALLOC, O_LAYER, O_TOK, O_ITERS, O_POOL, O_SEED, O_NOBASE, O_FMT };
    static const struct option opts[] = {
        {"experts", required_argument, 0, O_EXP}, {"topk", required_argument, 0, O_TOPK},   {"hidden", required_argument, 0, O_HID},
        {"width", required_argument, 0, O_WID},   {"group", required_argument, 0, O_GRP},   {"bits", required_argument, 0, O_BITS},
        {"alloc", required_argument, 0, O_ALLOC}, {"layer", required_argument, 0, O_LAYER}, {"tokens", required_argument, 0, O_TOK},
        {"iters", required_argument, 0, O_ITERS}, {"pool", required_argument, 0, O_POOL},   {"seed", required_argument, 0, O_SEED},
        {"no-baseline", no_argument, 0, O_NOBASE}, {"format", required_argument, 0, O_FMT}, {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},         {0, 0, 0, 0},
    };
    struct mode_bench_opts o = {.n_expert = 128, .k = 8, .d = 2048, .i = 768, .group = 128, .iters = 200, .pool = 64, .seed = 1, .baseline = true,
                                .n_widths = 6, .widths = {2, 3, 4, 8, 16, 0}, .n_tokens = 4, .tokens = {1, 8, 64, 4096}};
    const char *alloc = NULL;
    long layer = -1;
    bool tsv = false;
    for (int c; (c = getopt_long(argc, argv, "hV", opts, NULL)) != -1;) {
        switch (c) {
        case O_EXP: o.n_expert = (int)parse_int("experts", optarg, 2, 4096); break;
        case O_TOPK: o.k = (int)parse_int("topk", optarg, 1, 64); break;
        case O_HID: o.d = (int)parse_int("hidden", optarg, 32, 1 << 16); break;
        case O_WID: o.i = (int)parse_int("width", optarg, 32, 1 << 16); break;
        case O_GRP: o.group = (int)parse_int("group", optarg, 32, 1 << 16); break;
        case O_BITS: o.n_widths = parse_list("bits", optarg, o.widths, true); break;
        case O_ALLOC: alloc = optarg; break;
        case O_LAYER: layer = parse_int("layer", optarg, 0, 1 << 20); break;
        case O_TOK: o.n_tokens = parse_list("tokens", optarg, o.tokens, false); break;
        case O_ITERS: o.iters = (int)parse_int("iters", optarg, 1, 100000); break;
        case O_POOL: o.pool = (int)parse_int("pool", optarg, 1, 64); break;
        case O_SEED: o.seed = (uint64_t)parse_int("seed", optarg, 0, 0x7fffffffL); break;
        case O_NOBASE: o.baseline = false; break;
        case O_FMT:
            if (!strcmp(optarg, "tsv")) tsv = true;
            else if (strcmp(optarg, "table")) mode_die(MODE_EUSAGE, "--format: '%s' is not table or tsv", optarg);
            break;
        case 'h': fputs(usage_text, stdout); mode_cli_close_stdout(); return 0;
        case 'V': printf("mode-bench %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: fputs(usage_text, stderr); return MODE_EUSAGE;
        }
    }
    if (optind < argc) mode_die(MODE_EUSAGE, "no operand expected ('%s')", argv[optind]);
    if (o.k > o.n_expert) mode_die(MODE_EUSAGE, "--topk %d exceeds --experts %d", o.k, o.n_expert);
    if (o.d % 32 || o.i % 32 || o.group % 32 || o.d % o.group || o.i % o.group)
        mode_die(MODE_EUSAGE, "--hidden %d, --width %d and --group %d: all multiples of 32, the group dividing both", o.d, o.i, o.group);
    if (layer >= 0 && !alloc) mode_die(MODE_EUSAGE, "--layer needs --alloc");
    uint8_t *mixed = malloc((size_t)o.n_expert);
    if (!mixed) mode_die(MODE_EUNAVAILABLE, "out of memory");
    for (int e = 0; e < o.n_expert; e++) mixed[e] = (uint8_t)(2 + e % 3);
    if (alloc) read_alloc(alloc, layer, o.n_expert, mixed);
    o.mixed = mixed;

    static struct mode_bench_result r;
    if (mode_bench_run(&o, &r, isatty(2) ? progress : NULL, NULL, &err)) mode_fail(&err);

    double share[17] = {0}; /* the mixed allocation's fraction of experts at each width */
    for (int e = 0; e < o.n_expert; e++) share[mixed[e]] += 1.0 / o.n_expert;
    char w[16];
    if (tsv) {
        printf("weights\ttokens\tpath\tMB\tfloor_us\tus\tgraph_us\tTB_s\tbase_us\tbase_graph_us\n");
        for (int i = 0; i < r.n_rows; i++) {
            const struct mode_bench_row *x = &r.rows[i];
            name_of(x->width, w, sizeof w);
            printf("%s\t%d\t%s\t%.3f\t%.2f\t%.2f\t%.2f\t%.3f\t%.2f\t%.2f\n", w, x->tokens, path_of(x), x->bytes / 1e6, x->floor_us,
                   x->us, x->graph_us, x->bytes / (x->graph_us * 1e-6) / 1e12, x->base_us, x->base_graph_us);
        }
    } else {
        printf("mode-bench: %s; L2 %.0f MB; device-to-device copy %.2f TB/s (read + write, measured)\n", r.device, (double)r.l2_bytes / 1e6,
               r.copy_rate / 1e12);
        printf("MoE layer: %d experts, top-%d, hidden %d, expert width %d, group %d; %d cold routings, median of %d\n\n", o.n_expert, o.k, o.d, o.i,
               o.group, o.pool, o.iters);
        printf("%-8s %6s %-8s %10s %10s %10s %10s %7s %12s %8s\n", "weights", "tokens", "path", "MB read", "floor us", "us", "us graph", "TB/s",
               "bf16 cuBLAS", "speedup");
        for (int i = 0; i < r.n_rows; i++) {
            const struct mode_bench_row *x = &r.rows[i];
            name_of(x->width, w, sizeof w);
            printf("%-8s %6d %-8s %10.2f %10.2f %10.1f %10.1f %7.2f", w, x->tokens, path_of(x), x->bytes / 1e6, x->floor_us, x->us,
                   x->graph_us, x->bytes / (x->graph_us * 1e-6) / 1e12);
            if (x->base_graph_us > 0) printf(" %12.1f %7.2fx\n", x->base_graph_us, x->base_graph_us / x->graph_us);
            else printf(" %12s %8s\n", "-", "-");
        }
        /* the mixed allocation against the byte-weighted uniform estimate: Σ_b share(b) · t(uniform b), per path */
        for (int t = 0; t < o.n_tokens; t++)
            for (int qg = 0; qg < 2; qg++) {
                double mix = -1, est = 0, have = 0;
                for (int i = 0; i < r.n_rows; i++) {
                    const struct mode_bench_row *x = &r.rows[i];
                    if (x->tokens != o.tokens[t] || x->qgemm != qg) continue;
                    if (!x->width) mix = x->graph_us;
                    else if (share[x->width] > 0) est += share[x->width] * x->graph_us, have += share[x->width];
                }
                if (mix > 0 && have > 0.999)
                    printf("\nmixed at %d tokens%s: %.1f us against %.1f us byte-weighted from the uniform widths (%.2fx)", o.tokens[t], qg ? ", qgemm" : "",
                           mix, est, mix / est);
            }
        printf("\n");
    }
    free(mixed);
    mode_cli_close_stdout();
    return 0;
}
