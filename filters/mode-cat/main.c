/* mode-cat — inspect, validate, merge and hand-write mode streams; describe a checkpoint.
 * Sits beside every stage of the pipeline: it reads any stream kind (mode-stream(5)).
 * Options and streams only; the work is in lib/stream.c, lib/mpjson.c and lib/model.c.
 */
#include "../../lib/model.h"
#include "../../lib/mpjson.h"
#include "../../lib/stream.h"
#include "../common/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: mode-cat [--values] [--header] [-o FILE] [FILE ...]\n"
    "       mode-cat -c [FILE ...]\n"
    "       mode-cat -s [-o FILE] [FILE ...]\n"
    "       mode-cat -J [-o FILE] [FILE ...]\n"
    "       mode-cat -m DIR [--tensors]\n"
    "  (default)          print each stream as JSON lines: header, records, trailer\n"
    "  -c, --check        validate; print one summary line per stream\n"
    "  -s, --stream       merge the input streams (shards of one kind) into one stream\n"
    "  -J, --from-json    read JSON lines (as printed) and write the stream(s) they describe\n"
    "  -m, --model DIR    validate a checkpoint and describe it as JSON\n"
    "      --values       print tensors in full (default: dtype and shape only)\n"
    "      --header       print only the header of each input\n"
    "      --tensors      with -m: one more line per tensor\n"
    "  -o, --output FILE  write to FILE, atomically (default: stdout)\n"
    "  -h, --help         this text;  -V, --version  the version\n"
    "Inputs default to stdin ('-'). Exit: 0 ok, 64 usage, 65 bad data, 66 missing input,\n"
    "73 cannot create output, 74 write error. See mode-cat(1), mode-stream(5).\n";

static void usage(int code)
{
    fputs(usage_text, code ? stderr : stdout);
    exit(code);
}

static struct mode_wbuf out;
static struct mode_outfile outfile;
static struct mode_err err;

static void out_check(int rc)
{
    if (rc) mode_fail(&out.err);
}

static void print_obj(const msgpack_object *o, int values)
{
    out_check(mode_mpjson_write(&out, o, values));
    out_check(mode_wbuf_putc(&out, '\n'));
}

/* A bad or cut input: what was printed so far is complete lines (one per object), part of them
 * still in the output buffer; they go out before the error, so that the output holds every
 * complete record read and ends with a complete line. */
static void read_fail(void)
{
    mode_wbuf_flush(&out); /* a failed write here is secondary: the read error is reported */
    mode_fail(&err);
}

/* Default and --check: read every stream of every input. */
static void cat_inputs(char **paths, int n, int values, int header_only, int check)
{
    for (int i = 0; i < n; i++) {
        struct mode_stream_reader r;
        if (mode_stream_open(&r, paths[i], &err)) read_fail();
        for (;;) {
            if (mode_stream_read_header(&r, NULL, &err)) read_fail();
            if (!check) print_obj(r.header, values);
            if (header_only) break;
            const msgpack_object *rec;
            for (;;) {
                if (mode_stream_next(&r, &rec, &err)) read_fail();
                if (!rec) break;
                if (!check) print_obj(rec, values);
            }
            if (check)
                out_check(mode_wbuf_printf(&out, "%s: %s from %s, %llu records, ok\n", r.name, r.kind,
                                           r.producer[0] ? r.producer : "(unknown producer)",
                                           (unsigned long long)r.n_records));
            else
                print_obj(r.trailer, values);
            int more;
            if (mode_stream_more(&r, &more, &err)) read_fail();
            if (!more) break;
        }
        mode_stream_reader_free(&r);
    }
}

/* `mode-cat -s <dir`: refused as a named directory is (mode_open_read) */
static void stdin_not_dir(void)
{
    struct stat st;
    if (fstat(0, &st) == 0 && S_ISDIR(st.st_mode)) mode_die(MODE_ENOINPUT, "<stdin>: is a directory");
}

/* stdin (or any unseekable input) is copied to an anonymous file so -s can read it twice */
static int spool(const char *path)
{
    int fd;
    if (!strcmp(path, "-")) {
        stdin_not_dir();
        if ((fd = dup(0)) < 0) mode_die(MODE_EIO, "<stdin>: %s", strerror(errno));
    } else if (mode_open_read(path, &fd, &err)) mode_fail(&err);
    if (lseek(fd, 0, SEEK_SET) == 0) return fd;
    const char *dir = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/mode-cat-XXXXXX", dir && *dir ? dir : "/tmp");
    int t = mkstemp(tmpl);
    if (t < 0) mode_die(MODE_ECANTCREAT, "%s: %s", tmpl, strerror(errno));
    unlink(tmpl);
    char buf[1 << 16];
    for (;;) {
        ssize_t k = mode_read_retry(fd, buf, sizeof buf);
        if (k < 0) mode_die(MODE_EIO, "%s: read failed: %s", path, strerror(errno));
        if (k == 0) break;
        int e = mode_write_all(t, buf, (size_t)k);
        if (e) mode_die(MODE_EIO, "%s: %s", tmpl, strerror(e));
    }
    close(fd);
    if (lseek(t, 0, SEEK_SET) != 0) mode_die(MODE_EIO, "%s: seek: %s", tmpl, strerror(errno));
    return t;
}

struct seen_header {
    struct mode_mp bytes; /* the header re-encoded: u's strings point into it */
    msgpack_unpacked u;
    char name[4096];
};

/* -s: pass 1 validates everything and collects the headers, pass 2 writes. */
static void merge_inputs(char **paths, int n)
{
    int *fds = calloc((size_t)n, sizeof *fds);
    struct seen_header *h = NULL;
    size_t nh = 0, caph = 0;
    if (!fds) mode_die(MODE_EUNAVAILABLE, "out of memory");
    for (int i = 0; i < n; i++) {
        fds[i] = spool(paths[i]);
        struct mode_stream_reader r;
        if (mode_stream_reader_init(&r, fds[i], strcmp(paths[i], "-") ? paths[i] : "<stdin>", &err)) mode_fail(&err);
        for (int more = 1; more;) {
            if (mode_stream_read_header(&r, NULL, &err)) mode_fail(&err);
            if (nh == caph) {
                caph = caph ? 2 * caph : 8;
                h = realloc(h, caph * sizeof *h);
                if (!h) mode_die(MODE_EUNAVAILABLE, "out of memory");
            }
            struct mode_mp *copy = &h[nh].bytes;
            mode_mp_init(copy);
            mode_mp_obj(copy, r.header);
            if (mode_mp_finish(copy, &err)) mode_fail(&err);
            msgpack_unpacked_init(&h[nh].u);
            size_t off = 0;
            if (msgpack_unpack_next(&h[nh].u, copy->buf, copy->len, &off) != MSGPACK_UNPACK_SUCCESS)
                mode_die(MODE_EINTERNAL, "%s: header does not re-decode", r.name);
            snprintf(h[nh].name, sizeof h[nh].name, "%s", r.name);
            if (nh && mode_stream_header_agree(&h[0].u.data, h[0].name, &h[nh].u.data, h[nh].name, &err)) mode_fail(&err);
            nh++;
            const msgpack_object *rec;
            do
                if (mode_stream_next(&r, &rec, &err)) mode_fail(&err);
            while (rec);
            if (mode_stream_more(&r, &more, &err)) mode_fail(&err);
        }
        mode_stream_reader_free(&r);
    }
    /* no two shard boxes may overlap */
    for (size_t a = 0; a < nh; a++)
        for (size_t b = a + 1; b < nh; b++) {
            const msgpack_object *sa = mode_mp_get(&h[a].u.data, "shards"), *sb = mode_mp_get(&h[b].u.data, "shards");
            for (uint32_t i = 0; sa && sa->type == MSGPACK_OBJECT_ARRAY && i < sa->via.array.size; i++)
                for (uint32_t j = 0; sb && sb->type == MSGPACK_OBJECT_ARRAY && j < sb->via.array.size; j++)
                    if (mode_stream_shards_overlap(&sa->via.array.ptr[i], &sb->via.array.ptr[j])) {
                        char x[256], y[256];
                        mode_stream_shard_str(&sa->via.array.ptr[i], x, sizeof x);
                        mode_stream_shard_str(&sb->via.array.ptr[j], y, sizeof y);
                        mode_die(MODE_EDATA, "%s: shard {%s} overlaps shard {%s} of %s", h[b].name, y, x, h[a].name);
                    }
        }
    const msgpack_object **hdrs = malloc(nh * sizeof *hdrs);
    if (!hdrs) mode_die(MODE_EUNAVAILABLE, "out of memory");
    for (size_t i = 0; i < nh; i++) hdrs[i] = &h[i].u.data;
    struct mode_mp b;
    mode_mp_init(&b);
    mode_stream_merge_header(&b, hdrs, nh);
    if (mode_mp_finish(&b, &err)) mode_fail(&err);
    struct mode_stream_writer w;
    if (mode_stream_writer_init(&w, outfile.fd, outfile.path, &err)) mode_fail(&err);
    if (mode_stream_write_header(&w, &b, &err)) mode_fail(&err);
    for (int i = 0; i < n; i++) {
        if (lseek(fds[i], 0, SEEK_SET) != 0) mode_die(MODE_EIO, "%s: seek: %s", paths[i], strerror(errno));
        struct mode_stream_reader r;
        if (mode_stream_reader_init(&r, fds[i], paths[i], &err)) mode_fail(&err);
        for (int more = 1; more;) {
            if (mode_stream_read_header(&r, NULL, &err)) mode_fail(&err);
            const msgpack_object *rec;
            for (;;) {
                if (mode_stream_next(&r, &rec, &err)) mode_fail(&err);
                if (!rec) break;
                mode_mp_reset(&b);
                mode_mp_obj(&b, rec);
                if (mode_mp_finish(&b, &err) || mode_stream_write_record(&w, &b, &err)) mode_fail(&err);
            }
            if (mode_stream_more(&r, &more, &err)) mode_fail(&err);
        }
        mode_stream_reader_free(&r);
        close(fds[i]);
    }
    if (mode_stream_write_trailer(&w, NULL, &err) || mode_stream_writer_free(&w, &err)) mode_fail(&err);
    mode_mp_free(&b);
    for (size_t i = 0; i < nh; i++) {
        msgpack_unpacked_destroy(&h[i].u);
        mode_mp_free(&h[i].bytes);
    }
    free(h);
    free(hdrs);
    free(fds);
}

/* -J reads lines of at most MODE_CAT_MAX_LINE bytes (mode-cat(1), LIMITS): a line is parsed by
 * jansson, which holds it at a multiple of its size, one json_t per value (a 66 MB line of 33 M
 * numbers peaked at 1.4 GB resident), so the limit bounds the memory of one line; the record it
 * becomes is bounded again by the stream's record limit. */
#define MODE_CAT_MAX_LINE ((size_t)64 << 20)

/* One line of f into *buf (NUL-terminated, the newline dropped); returns its length, -1 at the
 * end of the input, -2 when it has more than max bytes (not read further). */
static ssize_t read_line(FILE *f, char **buf, size_t *cap, size_t max)
{
    size_t n = 0;
    int c;
    while ((c = getc_unlocked(f)) != EOF && c != '\n') {
        if (n == max) return -2;
        if (n + 1 >= *cap) {
            size_t nc = *cap ? 2 * *cap : 4096;
            if (nc > max + 1) nc = max + 1;
            char *nb = realloc(*buf, nc);
            if (!nb) mode_die(MODE_EUNAVAILABLE, "out of memory for a line of %zu bytes", nc);
            *buf = nb, *cap = nc;
        }
        (*buf)[n++] = (char)c;
    }
    if (c == EOF && n == 0) return -1;
    if (!*buf) {
        *buf = malloc(1);
        if (!*buf) mode_die(MODE_EUNAVAILABLE, "out of memory");
        *cap = 1;
    }
    (*buf)[n] = 0;
    return (ssize_t)n;
}

/* -J: JSON lines → stream(s). */
static void from_json(char **paths, int n)
{
    struct mode_stream_writer w;
    if (mode_stream_writer_init(&w, outfile.fd, outfile.path, &err)) mode_fail(&err);
    struct mode_mp b;
    mode_mp_init(&b);
    int streams = 0;
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; i < n; i++) {
        FILE *f = stdin;
        const char *name = strcmp(paths[i], "-") ? paths[i] : "<stdin>";
        int fd;
        if (!strcmp(paths[i], "-")) stdin_not_dir();
        else if (mode_open_read(paths[i], &fd, &err)) mode_fail(&err);
        else if (!(f = fdopen(fd, "r"))) mode_die(MODE_EUNAVAILABLE, "%s: %s", paths[i], strerror(errno));
        ssize_t len;
        for (long lineno = 1; (len = read_line(f, &line, &cap, MODE_CAT_MAX_LINE)) != -1; lineno++) {
            if (len == -2) {
                free(line); /* 64 MiB: not left to the exit */
                mode_die(MODE_EDATA, "%s: line %ld: longer than the limit of %zu bytes (MODE_CAT_MAX_LINE)", name, lineno,
                         MODE_CAT_MAX_LINE);
            }
            while (len > 0 && line[len - 1] == '\r') len--;
            size_t k = 0;
            while (k < (size_t)len && (line[k] == ' ' || line[k] == '\t')) k++;
            if (k == (size_t)len) continue; /* blank line */
            char what[32], where[4096 + sizeof what]; /* "PATH: line N": an input path fits whole */
            snprintf(what, sizeof what, "line %ld", lineno);
            snprintf(where, sizeof where, "%s: %s", name, what);
            mode_mp_reset(&b);
            if (mode_mpjson_parse(&b, line, (size_t)len, where, &err)) mode_fail(&err);
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            if (msgpack_unpack_next(&u, b.buf, b.len, &off) != MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_MAP)
                mode_die(MODE_EDATA, "%s: expected a JSON object", where);
            const msgpack_object *o = &u.data;
            if (mode_mp_get(o, "magic")) {
                if (w.state == 1 && mode_stream_write_trailer(&w, NULL, &err)) mode_fail(&err);
                if (mode_stream_check_header(o, name, what, &err)) mode_fail(&err);
                if (mode_stream_write_header(&w, &b, &err)) mode_fail(&err);
                streams++;
            } else if (mode_mp_get(o, "end")) {
                if (w.state != 1) mode_die(MODE_EDATA, "%s: a trailer outside a stream", where);
                struct mode_rec t = {o, name, what};
                int64_t nrec = -1;
                const msgpack_object *summary = NULL;
                if (!mode_mp_str_eq(mode_mp_get(o, "end"), MODE_STREAM_MAGIC))
                    mode_die(MODE_EDATA, "%s: trailer field 'end' is not \"%s\"", where, MODE_STREAM_MAGIC);
                if (mode_rec_int(&t, "records", false, &nrec, &err) || mode_rec_map(&t, "summary", false, &summary, &err))
                    mode_fail(&err);
                if (nrec >= 0 && (uint64_t)nrec != w.n_records)
                    mode_die(MODE_EDATA, "%s: trailer counts %lld records, the stream has %llu", where, (long long)nrec,
                             (unsigned long long)w.n_records);
                struct mode_mp s;
                mode_mp_init(&s);
                if (summary) mode_mp_obj(&s, summary);
                if (mode_stream_write_trailer(&w, summary ? &s : NULL, &err)) mode_fail(&err);
                mode_mp_free(&s);
            } else {
                if (w.state != 1) mode_die(MODE_EDATA, "%s: a record before any header", where);
                if (mode_stream_write_record(&w, &b, &err)) mode_fail(&err);
            }
            msgpack_unpacked_destroy(&u);
        }
        if (ferror(f)) mode_die(MODE_EIO, "%s: read failed: %s", name, strerror(errno));
        if (f != stdin) fclose(f);
    }
    free(line);
    if (!streams) mode_die(MODE_EDATA, "no stream header in the input (a line with \"magic\": \"MODE\")");
    if (w.state == 1 && mode_stream_write_trailer(&w, NULL, &err)) mode_fail(&err);
    if (mode_stream_writer_free(&w, &err)) mode_fail(&err);
    mode_mp_free(&b);
}

static void describe_model(const char *dir, int tensors)
{
    struct mode_model m;
    if (mode_model_open(&m, dir, &err)) mode_fail(&err);
    struct mode_mp b;
    mode_mp_init(&b);
    mode_model_describe(&b, &m);
    for (size_t i = 0; tensors && i < m.st.n_tensors; i++) mode_model_describe_tensor(&b, m.st.sorted[i]);
    if (mode_mp_finish(&b, &err)) mode_fail(&err);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    while (msgpack_unpack_next(&u, b.buf, b.len, &off) == MSGPACK_UNPACK_SUCCESS) print_obj(&u.data, 0);
    msgpack_unpacked_destroy(&u);
    mode_mp_free(&b);
    mode_model_close(&m);
}

int main(int argc, char **argv)
{
    mode_cli_init("mode-cat");
    enum { OPT_VALUES = 256, OPT_HEADER, OPT_TENSORS };
    static const struct option opts[] = {
        {"check", no_argument, 0, 'c'},          {"stream", no_argument, 0, 's'},   {"from-json", no_argument, 0, 'J'},
        {"model", required_argument, 0, 'm'},    {"values", no_argument, 0, OPT_VALUES},
        {"header", no_argument, 0, OPT_HEADER},  {"tensors", no_argument, 0, OPT_TENSORS},
        {"output", required_argument, 0, 'o'},   {"help", no_argument, 0, 'h'},     {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    int mode = 0, values = 0, header_only = 0, tensors = 0, c;
    const char *model_dir = NULL, *output = "-";
    while ((c = getopt_long(argc, argv, "csJm:o:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
        case 's':
        case 'J':
        case 'm':
            if (mode && mode != c) mode_die(MODE_EUSAGE, "-c, -s, -J and -m exclude each other");
            mode = c;
            if (c == 'm') model_dir = optarg;
            break;
        case OPT_VALUES: values = 1; break;
        case OPT_HEADER: header_only = 1; break;
        case OPT_TENSORS: tensors = 1; break;
        case 'o': output = optarg; break;
        case 'h': usage(0); break;
        case 'V': printf("mode-cat %s\n", MODE_VERSION); mode_cli_close_stdout(); return 0;
        default: usage(MODE_EUSAGE);
        }
    }
    if (tensors && mode != 'm') mode_die(MODE_EUSAGE, "--tensors goes with -m");
    if ((values || header_only) && mode) mode_die(MODE_EUSAGE, "--values and --header go with printing only");
    if (mode == 'm' && optind < argc) mode_die(MODE_EUSAGE, "-m takes a directory and no stream inputs");
    char *stdin_only[] = {"-"};
    char **paths = optind < argc ? argv + optind : stdin_only;
    int n = optind < argc ? argc - optind : 1;
    int binary = mode == 's' || mode == 'J';
    if (binary && !strcmp(output, "-") && isatty(1))
        mode_die(MODE_EUSAGE, "refusing to write a binary stream to a terminal (use -o FILE or a pipe)");
    mode_cli_outfile_open(&outfile, output);
    if (!binary && mode_wbuf_init(&out, outfile.fd, outfile.path, &err)) mode_fail(&err);
    switch (mode) {
    case 0: cat_inputs(paths, n, values, header_only, 0); break;
    case 'c': cat_inputs(paths, n, 0, 0, 1); break;
    case 's': merge_inputs(paths, n); break;
    case 'J': from_json(paths, n); break;
    case 'm': describe_model(model_dir, tensors); break;
    }
    if (!binary && mode_wbuf_free(&out, &err)) mode_fail(&err);
    mode_cli_outfile_commit(&outfile);
    if (outfile.is_stdout) mode_cli_close_stdout();
    return 0;
}
