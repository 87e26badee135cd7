/* test_stream — mode streams: round trips of every kind, byte-at-a-time and random-chunk feeding,
 * truncation at every byte, garbage, and every header/trailer/record error (lib/stream.c,
 * lib/mp.c, lib/mpjson.c). The streams come from the JSON lines in tests/fixtures/streams. */
#include "../../lib/mpjson.h"
#include "../../lib/samples.h"
#include "../../lib/stream.h"
#include "tap.h"
#include "mem_src.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const kinds[] = {"samples", "trace", "freq", "keep", "sens", "alloc", "logits"};

struct buf {
    uint8_t *p;
    size_t n;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
    b->p = realloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

/* Encodes a fixture's JSON lines into a stream with the library writer (through a temp file). */
static struct buf stream_from_jsonl(const char *name)
{
    char path[512], tmp[512];
    snprintf(path, sizeof path, "%s", fixture(name));
    const char *slash = strrchr(name, '/');
    snprintf(tmp, sizeof tmp, "%s/%s.ms", tap_tmpdir(), slash ? slash + 1 : name);
    FILE *f = fopen(path, "r");
    struct buf out = {0};
    if (!f) {
        diag("cannot open %s", path);
        return out;
    }
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        diag("cannot create %s: %s", tmp, strerror(errno));
        fclose(f);
        return out;
    }
    struct mode_stream_writer w;
    struct mode_err err;
    mode_stream_writer_init(&w, fd, tmp, &err);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    struct mode_mp b;
    mode_mp_init(&b);
    while ((len = getline(&line, &cap, f)) > 0) {
        mode_mp_reset(&b);
        if (mode_mpjson_parse(&b, line, (size_t)len, name, &err)) {
            diag("%s", err.msg);
            break;
        }
        if (strstr(line, "\"magic\":\"MODE\"") == line + 1) mode_stream_write_header(&w, &b, &err);
        else if (!strncmp(line, "{\"end\":", 7)) {
            /* re-create the trailer the writer's way, summary included */
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            msgpack_unpack_next(&u, b.buf, b.len, &off);
            const msgpack_object *s = mode_mp_get(&u.data, "summary");
            struct mode_mp sb;
            mode_mp_init(&sb);
            if (s) mode_mp_obj(&sb, s);
            mode_stream_write_trailer(&w, s ? &sb : NULL, &err);
            mode_mp_free(&sb);
            msgpack_unpacked_destroy(&u);
        } else
            mode_stream_write_record(&w, &b, &err);
    }
    mode_mp_free(&b);
    free(line);
    fclose(f);
    mode_stream_writer_free(&w, &err);
    off_t size = lseek(fd, 0, SEEK_END);
    out.p = malloc((size_t)size + 1);
    out.n = (size_t)size;
    if (pread(fd, out.p, (size_t)size, 0) != size) diag("short read of %s", tmp);
    close(fd);
    return out;
}

/* Reads a whole stream (all concatenated streams), re-encoding every object; returns the status. */
static int read_all(const struct buf *in, int policy, const char *expect_kind, struct buf *reenc, uint64_t *n_rec,
                    struct mode_err *err)
{
    struct src s = {in->p, in->n, 0, policy};
    struct mode_stream_reader r;
    int rc = mode_stream_reader_init_fn(&r, src_read, &s, "mem", err);
    if (rc) return rc;
    struct mode_mp b;
    mode_mp_init(&b);
    if (n_rec) *n_rec = 0;
    for (int more = 1; more && !rc;) {
        if ((rc = mode_stream_read_header(&r, expect_kind, err))) break;
        if (reenc) {
            mode_mp_reset(&b);
            mode_mp_obj(&b, r.header);
            buf_add(reenc, b.buf, b.len);
        }
        const msgpack_object *rec;
        for (;;) {
            if ((rc = mode_stream_next(&r, &rec, err))) break;
            if (!rec) break;
            if (n_rec) (*n_rec)++;
            if (reenc) {
                mode_mp_reset(&b);
                mode_mp_obj(&b, rec);
                buf_add(reenc, b.buf, b.len);
            }
        }
        if (rc) break;
        if (reenc) {
            mode_mp_reset(&b);
            mode_mp_obj(&b, r.trailer);
            buf_add(reenc, b.buf, b.len);
        }
        rc = mode_stream_more(&r, &more, err);
    }
    mode_mp_free(&b);
    mode_stream_reader_free(&r);
    return rc;
}

static struct buf from_json_lines(const char *const *lines, int n)
{
    struct buf out = {0};
    struct mode_mp b;
    struct mode_err err;
    mode_mp_init(&b);
    for (int i = 0; i < n; i++) {
        mode_mp_reset(&b);
        if (mode_mpjson_parse(&b, lines[i], strlen(lines[i]), "test", &err)) diag("bad test JSON: %s", err.msg);
        buf_add(&out, b.buf, b.len);
    }
    mode_mp_free(&b);
    return out;
}

static void expect_error(const char *const *lines, int n, const char *kind, const char *want, const char *name)
{
    struct buf in = from_json_lines(lines, n);
    struct mode_err err = {0};
    int rc = read_all(&in, 0, kind, NULL, NULL, &err);
    is_int(rc, MODE_EDATA, "%s: data error", name);
    has_str(err.msg, want, "%s: message", name);
    free(in.p);
}

#define H "{\"magic\":\"MODE\",\"version\":1,\"kind\":\"trace\"}"
#define R "{\"layer\":1}"

int main(void)
{
    tap_seed(20261122);
    for (size_t k = 0; k < sizeof kinds / sizeof *kinds; k++) {
        char name[64];
        snprintf(name, sizeof name, "streams/%s.jsonl", kinds[k]);
        struct buf s = stream_from_jsonl(name);
        ok(s.n > 0, "%s: written", kinds[k]);
        for (int policy = 0; policy < 3; policy++) {
            struct buf re = {0};
            struct mode_err err = {0};
            int rc = read_all(&s, policy, kinds[k], &re, NULL, &err);
            static const char *pn[] = {"whole", "one byte at a time", "random chunks"};
            if (!is_int(rc, MODE_OK, "%s: read back (%s)", kinds[k], pn[policy])) diag("%s", err.msg);
            ok(re.n == s.n && !memcmp(re.p, s.p, s.n), "%s: every object identical (%s)", kinds[k], pn[policy]);
            free(re.p);
        }
        /* truncation at every byte: never a success */
        int accepted = 0;
        for (size_t cut = 0; cut < s.n; cut++) {
            struct buf t = {s.p, cut};
            struct mode_err err = {0};
            if (read_all(&t, 0, NULL, NULL, NULL, &err) != MODE_EDATA) accepted++;
        }
        is_int(accepted, 0, "%s: every one of %zu truncations is a data error", kinds[k], s.n);
        /* corrupted bytes: no crash, a clean status */
        int odd = 0;
        for (int trial = 0; trial < 300; trial++) {
            uint8_t *c = malloc(s.n);
            memcpy(c, s.p, s.n);
            for (int f = 0; f < 1 + trial % 4; f++) c[tap_rand() % s.n] ^= (uint8_t)(1 + tap_rand() % 255);
            struct buf t = {c, s.n};
            struct mode_err err = {0};
            int rc = read_all(&t, (int)(tap_rand() % 3), NULL, NULL, NULL, &err);
            if (rc != MODE_OK && rc != MODE_EDATA) odd++;
            free(c);
        }
        is_int(odd, 0, "%s: 300 corrupted copies give ok or a data error", kinds[k]);
        free(s.p);
    }

    /* concatenated streams read as a sequence */
    struct buf a = stream_from_jsonl("streams/trace-a.jsonl"), b2 = stream_from_jsonl("streams/trace-b.jsonl");
    struct buf cat = {0};
    buf_add(&cat, a.p, a.n);
    buf_add(&cat, b2.p, b2.n);
    uint64_t n_rec = 0;
    struct mode_err err = {0};
    is_int(read_all(&cat, 1, "trace", NULL, &n_rec, &err), MODE_OK, "two concatenated streams");
    is_int((long long)n_rec, 8, "records of both");
    {
        struct src s = {cat.p, cat.n, 0, 0};
        struct mode_stream_reader r;
        mode_stream_reader_init_fn(&r, src_read, &s, "cat", &err);
        const msgpack_object *rec;
        mode_stream_read_header(&r, NULL, &err);
        do mode_stream_next(&r, &rec, &err);
        while (rec);
        is_int(mode_stream_finish(&r, &err), MODE_EDATA, "finish refuses data after the trailer");
        has_str(err.msg, "data after the trailer", "... and says so");
        mode_stream_reader_free(&r);
    }
    free(a.p);
    free(b2.p);
    free(cat.p);

    /* garbage */
    int odd = 0;
    for (int trial = 0; trial < 2000; trial++) {
        size_t n = 1 + tap_rand() % 64;
        uint8_t g[64];
        for (size_t i = 0; i < n; i++) g[i] = (uint8_t)tap_rand();
        struct buf t = {g, n};
        if (read_all(&t, 0, NULL, NULL, NULL, &err) != MODE_EDATA) odd++;
    }
    is_int(odd, 0, "2000 random inputs are data errors");
    struct buf text = {(uint8_t *)"hello, world\n", 13};
    is_int(read_all(&text, 0, NULL, NULL, NULL, &err), MODE_EDATA, "text input");
    has_str(err.msg, "not a mode stream: expected a msgpack map, got byte 0x68", "text input: message");
    struct buf empty = {(uint8_t *)"", 0};
    is_int(read_all(&empty, 0, NULL, NULL, NULL, &err), MODE_EDATA, "empty input");
    has_str(err.msg, "empty input", "empty input: message");

    /* header, record and trailer errors */
    const char *magic[] = {"{\"magic\":\"MODX\",\"version\":1,\"kind\":\"trace\"}"};
    expect_error(magic, 1, NULL, "not a mode stream (magic 'MODX', expected 'MODE')", "wrong magic");
    const char *nomagic[] = {"{\"kind\":\"trace\"}"};
    expect_error(nomagic, 1, NULL, "not a mode stream (header has no 'magic' field)", "no magic");
    const char *v2[] = {"{\"magic\":\"MODE\",\"version\":2,\"kind\":\"trace\"}"};
    expect_error(v2, 1, NULL, "stream format version 2 is not supported (this build reads version 1)", "version 2");
    const char *kind[] = {H, R, "{\"end\":\"MODE\",\"records\":1}"};
    expect_error(kind, 3, "samples", "expected kind 'samples', got 'trace'", "wrong kind");
    const char *nokind[] = {"{\"magic\":\"MODE\",\"version\":1}"};
    expect_error(nokind, 1, NULL, "field 'kind': missing", "no kind");
    const char *badargs[] = {"{\"magic\":\"MODE\",\"version\":1,\"kind\":\"x\",\"args\":[1]}"};
    expect_error(badargs, 1, NULL, "field 'args': expected a map, got an array", "args not a map");
    const char *notrailer[] = {H, R, R};
    expect_error(notrailer, 3, NULL, "truncated: no trailer after 2 records", "missing trailer");
    const char *count[] = {H, R, R, "{\"end\":\"MODE\",\"records\":3}"};
    expect_error(count, 4, NULL, "trailer counts 3 records, the stream has 2", "wrong record count");
    const char *twoheads[] = {H, R, H};
    expect_error(twoheads, 3, NULL, "a stream header where record 2 was expected", "header inside a stream");
    const char *trailer_first[] = {"{\"end\":\"MODE\",\"records\":0}"};
    expect_error(trailer_first, 1, NULL, "a trailer where a stream header was expected", "trailer first");
    const char *badend[] = {H, "{\"end\":\"EDOM\",\"records\":0}"};
    expect_error(badend, 2, NULL, "field 'end' is not \"MODE\"", "bad trailer");

    /* scanner limits: nesting and record size */
    {
        struct buf t = from_json_lines((const char *[]){H}, 1);
        uint8_t rec[64];
        size_t n = 0;
        rec[n++] = 0x81;                              /* {               container 1 */
        rec[n++] = 0xa1, rec[n++] = 'x';              /*  "x":          */
        for (int i = 0; i < 30; i++) rec[n++] = 0x91; /*  [[[...         containers 2..31 */
        rec[n++] = 0x90;                              /*  []             empty: no level */
        struct buf ok32 = {0};
        buf_add(&ok32, t.p, t.n);
        buf_add(&ok32, rec, n);
        struct buf tr = from_json_lines((const char *[]){"{\"end\":\"MODE\",\"records\":1}"}, 1);
        buf_add(&ok32, tr.p, tr.n);
        is_int(read_all(&ok32, 0, NULL, NULL, NULL, &err), MODE_OK, "31 nested containers are read");
        struct buf deep = {0};
        buf_add(&deep, t.p, t.n);
        rec[n - 1] = 0x91, rec[n++] = 0x90; /* one more level */
        buf_add(&deep, rec, n);
        buf_add(&deep, tr.p, tr.n);
        is_int(read_all(&deep, 0, NULL, NULL, NULL, &err), MODE_EDATA, "32 are refused");
        has_str(err.msg, "more than 31 nested maps or arrays", "... with a message");
        /* an array that claims 2^24-1 elements and then ends: truncated, nothing huge allocated */
        struct buf huge = {0};
        buf_add(&huge, t.p, t.n);
        const uint8_t claim[] = {0x81, 0xa1, 'x', 0xdd, 0x00, 0xff, 0xff, 0xff, 0x01, 0x02};
        buf_add(&huge, claim, sizeof claim);
        is_int(read_all(&huge, 0, NULL, NULL, NULL, &err), MODE_EDATA, "a 16-million-element claim with 2 elements");
        has_str(err.msg, "truncated: the input ends inside record 1", "... is a truncated record");
        /* one of 2^32-1 elements would decode to 2^32-1 msgpack_objects (24 bytes each), over the
         * default 4 GiB: refused as soon as the count is read */
        struct buf huge4 = {0};
        buf_add(&huge4, t.p, t.n);
        const uint8_t claim4[] = {0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
        buf_add(&huge4, claim4, sizeof claim4);
        is_int(read_all(&huge4, 0, NULL, NULL, NULL, &err), MODE_EDATA, "a 4-billion-element claim");
        has_str(err.msg, "malformed stream after 0 records: a record declaring 4294967297 elements decodes to at least",
                "... is refused by what it would decode to: %s", err.msg);
        /* MODE_MAX_RECORD */
        setenv("MODE_MAX_RECORD", "1K", 1);
        struct buf big = {0};
        buf_add(&big, t.p, t.n);
        const uint8_t bin[] = {0x81, 0xa1, 'x', 0xc5, 0x08, 0x00}; /* bin16 of 2048 bytes */
        buf_add(&big, bin, sizeof bin);
        uint8_t zeros[2048] = {0};
        buf_add(&big, zeros, sizeof zeros);
        buf_add(&big, tr.p, tr.n);
        is_int(read_all(&big, 0, NULL, NULL, NULL, &err), MODE_EDATA, "a record over MODE_MAX_RECORD");
        has_str(err.msg, "exceeds the limit of 1024 bytes (MODE_MAX_RECORD)", "... names the limit");
        /* 200 nils: 206 bytes, but 201 decoded objects (4.8 kB) */
        struct buf nils = {0};
        buf_add(&nils, t.p, t.n);
        const uint8_t arr[] = {0x81, 0xa1, 'x', 0xdc, 0x00, 200};
        buf_add(&nils, arr, sizeof arr);
        uint8_t nil200[200];
        memset(nil200, 0xc0, sizeof nil200);
        buf_add(&nils, nil200, sizeof nil200);
        buf_add(&nils, tr.p, tr.n);
        is_int(read_all(&nils, 0, NULL, NULL, NULL, &err), MODE_EDATA, "206 bytes decoding to 4.8 kB, over MODE_MAX_RECORD=1K");
        has_str(err.msg, "a record declaring 202 elements decodes to at least", "... counted as decoded: %s", err.msg);
        unsetenv("MODE_MAX_RECORD");
        is_int(read_all(&nils, 1, NULL, NULL, NULL, &err), MODE_OK, "the same record without the limit");
        is_int(read_all(&big, 1, NULL, NULL, NULL, &err), MODE_OK, "the same record without the limit");
        /* 0xc1 is never valid */
        struct buf c1 = {0};
        buf_add(&c1, t.p, t.n);
        const uint8_t never[] = {0x81, 0xa1, 'x', 0xc1};
        buf_add(&c1, never, sizeof never);
        is_int(read_all(&c1, 0, NULL, NULL, NULL, &err), MODE_EDATA, "byte 0xc1");
        has_str(err.msg, "byte 0xc1 is not valid msgpack", "... named");
        free(t.p), free(ok32.p), free(deep.p), free(huge.p), free(huge4.p), free(big.p), free(nils.p), free(c1.p), free(tr.p);
    }

    /* typed field access and tensors */
    {
        struct mode_mp mb;
        mode_mp_init(&mb);
        mode_mp_map_open(&mb);
        mode_mp_key(&mb, "layer");
        mode_mp_int(&mb, 3);
        mode_mp_key(&mb, "name");
        mode_mp_str(&mb, "x");
        mode_mp_key(&mb, "w");
        float w4[4] = {1, 2, 3, 4};
        mode_mp_tensor(&mb, MODE_F32, 2, (int64_t[]){2, 2}, w4);
        mode_mp_key(&mb, "bad"); /* a tensor map with a dtype nobody knows */
        mode_mp_map_open(&mb);
        mode_mp_key(&mb, "dtype");
        mode_mp_str(&mb, "f99");
        mode_mp_key(&mb, "shape");
        mode_mp_array_open(&mb);
        mode_mp_int(&mb, 1);
        mode_mp_close(&mb);
        mode_mp_key(&mb, "data");
        mode_mp_bin(&mb, w4, 4);
        mode_mp_close(&mb);
        mode_mp_key(&mb, "short"); /* 3 floats declared, 2 present */
        mode_mp_map_open(&mb);
        mode_mp_key(&mb, "dtype");
        mode_mp_str(&mb, "f32");
        mode_mp_key(&mb, "shape");
        mode_mp_array_open(&mb);
        mode_mp_int(&mb, 3);
        mode_mp_close(&mb);
        mode_mp_key(&mb, "data");
        mode_mp_bin(&mb, w4, 8);
        mode_mp_close(&mb);
        mode_mp_close(&mb);
        ok(mode_mp_finish(&mb, &err) == MODE_OK, "builder balanced");
        struct buf t = {(uint8_t *)mb.buf, mb.len};
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t off = 0;
        msgpack_unpack_next(&u, (const char *)t.p, t.n, &off);
        struct mode_rec rc = {&u.data, "s.msgpack", "record 7"};
        int64_t layer = -1;
        ok(mode_rec_int(&rc, "layer", true, &layer, &err) == MODE_OK && layer == 3, "int field");
        is_int(mode_rec_int(&rc, "name", true, &layer, &err), MODE_EDATA, "string where an int is expected");
        is_str(err.msg, "s.msgpack: record 7: field 'name': expected an integer, got a string", "... message");
        is_int(mode_rec_int(&rc, "nope", true, &layer, &err), MODE_EDATA, "missing required field");
        is_str(err.msg, "s.msgpack: record 7: field 'nope': missing", "... message");
        is_int(mode_rec_int(&rc, "nope", false, &layer, &err), MODE_OK, "missing optional field");
        struct mode_tensor ten;
        int64_t want[2] = {2, -1};
        ok(mode_rec_tensor(&rc, "w", true, &ten, MODE_F32, 2, want, &err) == MODE_OK && ten.numel == 4, "tensor field");
        float v[4];
        mode_convert_ref(ten.dtype, ten.data, 4, v);
        ok(v[0] == 1 && v[3] == 4, "tensor values");
        is_int(mode_rec_tensor(&rc, "w", true, &ten, MODE_I32, 2, want, &err), MODE_EDATA, "wrong dtype");
        has_str(err.msg, "field 'w': expected dtype i32, got f32", "... message");
        int64_t want3[2] = {3, 2};
        is_int(mode_rec_tensor(&rc, "w", true, &ten, MODE_F32, 2, want3, &err), MODE_EDATA, "wrong shape");
        has_str(err.msg, "expected shape (3, 2), got (2, 2)", "... message");
        is_int(mode_rec_tensor(&rc, "bad", true, &ten, MODE_DTYPE_INVALID, -1, NULL, &err), MODE_EDATA, "unknown dtype");
        has_str(err.msg, "field 'bad': unknown dtype 'f99'", "... message");
        is_int(mode_rec_tensor(&rc, "short", true, &ten, MODE_DTYPE_INVALID, -1, NULL, &err), MODE_EDATA, "short data");
        has_str(err.msg, "field 'short': f32 (3) needs 12 bytes, data has 8", "... message");
        msgpack_unpacked_destroy(&u);
        mode_mp_free(&mb);
        /* JSON tensors are checked against their shape and dtype range */
        struct mode_mp mp;
        mode_mp_init(&mp);
        const char *j1 = "{\"t\":{\"dtype\":\"u8\",\"shape\":[2],\"data\":[1,256]}}";
        is_int(mode_mpjson_parse(&mp, j1, strlen(j1), "in", &err), MODE_EDATA, "u8 value 256");
        is_str(err.msg, "in: field 't': data[1]: 256 is out of range for dtype u8", "... message");
        mode_mp_reset(&mp);
        const char *j2 = "{\"t\":{\"dtype\":\"f32\",\"shape\":[3],\"data\":[1,2]}}";
        is_int(mode_mpjson_parse(&mp, j2, strlen(j2), "in", &err), MODE_EDATA, "too few values");
        has_str(err.msg, "data has 2 values, shape needs 3", "... message");
        mode_mp_reset(&mp);
        const char *j3 = "{\"a\":1,\"a\":2}";
        is_int(mode_mpjson_parse(&mp, j3, strlen(j3), "in", &err), MODE_EDATA, "duplicate JSON keys");
        mode_mp_free(&mp);
    }
    {
        /* MODE_SAMPLE_MAX_TOKENS: a samples record one token over the limit is refused as it is
         * parsed; one at the limit passes */
        for (int64_t n = MODE_SAMPLE_MAX_TOKENS; n <= MODE_SAMPLE_MAX_TOKENS + 1; n++) {
            int32_t *tok = calloc((size_t)n, sizeof *tok);
            uint8_t *z = calloc((size_t)n, 1);
            struct mode_sample_in si = {"long", n, tok, z, z, 0, NULL, NULL};
            struct mode_mp sb;
            mode_mp_init(&sb);
            mode_sample_pack(&sb, &si);
            msgpack_unpacked u;
            msgpack_unpacked_init(&u);
            size_t off = 0;
            msgpack_unpack_next(&u, sb.buf, sb.len, &off);
            struct mode_rec rc = {&u.data, "s.msgpack", "record 1"};
            struct mode_sample s;
            int st = mode_sample_parse(&rc, &s, &err);
            if (n == MODE_SAMPLE_MAX_TOKENS) is_int(st, MODE_OK, "a sample of 2^20 tokens is read");
            else {
                is_int(st, MODE_EDATA, "a sample of 2^20 + 1 tokens is refused");
                is_str(err.msg, "s.msgpack: record 1: sample 'long' has 1048577 tokens, more than the limit of 1048576", "... saying so");
            }
            if (!st) mode_sample_free(&s);
            msgpack_unpacked_destroy(&u);
            mode_mp_free(&sb);
            free(tok), free(z);
        }
    }
    return tap_done();
}
