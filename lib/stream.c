/* stream.c — the only reader of msgpack in mode: stream headers, records and trailers (stream.h). */
#include "stream.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (64u * 1024u)

/* ---- byte-level scanner ------------------------------------------------------------------- */

void mode_mp_scan_init(struct mode_mp_scan *s) { memset(s, 0, sizeof *s); }

enum { T_FIXED, T_STR, T_EXT, T_ARRAY, T_MAP, T_BAD };

/* For a tag byte: its class, how many length bytes follow (lenb), or for T_FIXED the payload
 * size and for fix-sized containers/strings the length itself (imm, lenb == 0). */
static int classify(uint8_t t, int *lenb, uint64_t *imm)
{
    *lenb = 0;
    *imm = 0;
    if (t <= 0x7f || t >= 0xe0) return T_FIXED;
    if (t <= 0x8f) { *imm = t & 0x0f; return T_MAP; }
    if (t <= 0x9f) { *imm = t & 0x0f; return T_ARRAY; }
    if (t <= 0xbf) { *imm = t & 0x1f; return T_STR; }
    switch (t) {
    case 0xc0: case 0xc2: case 0xc3: return T_FIXED;
    case 0xc4: *lenb = 1; return T_STR;
    case 0xc5: *lenb = 2; return T_STR;
    case 0xc6: *lenb = 4; return T_STR;
    case 0xc7: *lenb = 1; return T_EXT;
    case 0xc8: *lenb = 2; return T_EXT;
    case 0xc9: *lenb = 4; return T_EXT;
    case 0xca: *imm = 4; return T_FIXED;
    case 0xcb: *imm = 8; return T_FIXED;
    case 0xcc: *imm = 1; return T_FIXED;
    case 0xcd: *imm = 2; return T_FIXED;
    case 0xce: *imm = 4; return T_FIXED;
    case 0xcf: *imm = 8; return T_FIXED;
    case 0xd0: *imm = 1; return T_FIXED;
    case 0xd1: *imm = 2; return T_FIXED;
    case 0xd2: *imm = 4; return T_FIXED;
    case 0xd3: *imm = 8; return T_FIXED;
    case 0xd4: *imm = 2; return T_FIXED; /* fixext: type byte + payload */
    case 0xd5: *imm = 3; return T_FIXED;
    case 0xd6: *imm = 5; return T_FIXED;
    case 0xd7: *imm = 9; return T_FIXED;
    case 0xd8: *imm = 17; return T_FIXED;
    case 0xd9: *lenb = 1; return T_STR;
    case 0xda: *lenb = 2; return T_STR;
    case 0xdb: *lenb = 4; return T_STR;
    case 0xdc: *lenb = 2; return T_ARRAY;
    case 0xdd: *lenb = 4; return T_ARRAY;
    case 0xde: *lenb = 2; return T_MAP;
    case 0xdf: *lenb = 4; return T_MAP;
    default: return T_BAD; /* 0xc1 is never used */
    }
}

/* An element ended: returns 1 when that completes the message. */
static int elem_done(struct mode_mp_scan *s)
{
    while (s->depth > 0) {
        if (--s->remain[s->depth - 1] > 0) return 0;
        s->depth--;
    }
    s->in_msg = 0;
    s->msg_len = 0;
    s->msg_objs = 0;
    return 1;
}

/* what the message costs once decoded: its bytes and one msgpack_object per container element */
static uint64_t decoded_size(const struct mode_mp_scan *s, uint64_t more_bytes, uint64_t more_objs)
{
    return s->msg_len + more_bytes + (s->msg_objs + more_objs) * (uint64_t)sizeof(msgpack_object);
}

/* The length (or count) of an element with tag class cls is known. Returns -1 on error,
 * 1 when the message completed, 0 otherwise. */
static int elem_begin(struct mode_mp_scan *s, int cls, uint64_t len, uint64_t max_msg, char *why, size_t why_n)
{
    switch (cls) {
    case T_FIXED:
    case T_STR:
    case T_EXT:
        s->skip = cls == T_EXT ? len + 1 : len;
        if (decoded_size(s, s->skip, 0) > max_msg) {
            snprintf(why, why_n, "a record of at least %" PRIu64 " bytes exceeds the limit of %" PRIu64 " bytes (MODE_MAX_RECORD)",
                     decoded_size(s, s->skip, 0), max_msg);
            return -1;
        }
        return s->skip ? 0 : elem_done(s);
    case T_ARRAY:
    case T_MAP: {
        if (len == 0) return elem_done(s);
        if (s->depth >= MODE_MP_MAX_DEPTH) {
            snprintf(why, why_n, "more than %d nested maps or arrays", MODE_MP_MAX_DEPTH);
            return -1;
        }
        const uint64_t n = cls == T_MAP ? 2 * len : len;
        if (decoded_size(s, 0, n) > max_msg) {
            snprintf(why, why_n,
                     "a record declaring %" PRIu64 " elements decodes to at least %" PRIu64 " bytes, over the limit of %" PRIu64
                     " bytes (MODE_MAX_RECORD)",
                     s->msg_objs + n, decoded_size(s, 0, n), max_msg);
            return -1;
        }
        s->msg_objs += n;
        s->remain[s->depth++] = n;
        return 0;
    }
    }
    snprintf(why, why_n, "internal scanner state");
    return -1;
}

static void head_add(struct mode_mp_scan *s, const uint8_t *p, size_t n)
{
    size_t room = sizeof s->head - s->head_len;
    if (n > room) n = room;
    memcpy(s->head + s->head_len, p, n);
    s->head_len += (uint32_t)n;
}

/* Passes over one msgpack value at p[*i..n); false when it does not end inside the n bytes. */
static bool skip_value(const uint8_t *p, size_t n, size_t *i)
{
    for (uint64_t need = 1; need > 0; need--) {
        if (*i >= n) return false;
        int lenb;
        uint64_t len;
        int cls = classify(p[(*i)++], &lenb, &len);
        if (cls == T_BAD || (size_t)lenb > n - *i) return false;
        if (lenb) len = 0;
        for (int k = 0; k < lenb; k++) len = len << 8 | p[(*i)++];
        if (cls == T_ARRAY || cls == T_MAP) {
            need += cls == T_MAP ? 2 * len : len;
            continue;
        }
        uint64_t payload = cls == T_EXT ? len + 1 : len;
        if (payload > n - *i) return false;
        *i += (size_t)payload;
    }
    return true;
}

/* What a message cut short was, from its first bytes: 1 the trailer (a key "end", which a record
 * never has), 0 a record (a key that is not the trailer's), -1 too few bytes to tell. */
static int cut_is_trailer(const uint8_t *p, size_t n)
{
    size_t i = 1;
    uint64_t pairs;
    if (n < 1) return -1;
    if (p[0] >= 0x80 && p[0] <= 0x8f) pairs = p[0] & 0x0f;
    else {
        int lenb = p[0] == 0xde ? 2 : 4;
        if (n < 1 + (size_t)lenb) return -1;
        pairs = 0;
        for (int k = 0; k < lenb; k++) pairs = pairs << 8 | p[i++];
    }
    for (uint64_t k = 0; k < pairs; k++) {
        if (i >= n) return -1;
        int lenb;
        uint64_t len;
        if (classify(p[i], &lenb, &len) != T_STR || p[i] == 0xc4 || p[i] == 0xc5 || p[i] == 0xc6) return 0; /* not a str key */
        i++;
        if ((size_t)lenb > n - i) return -1;
        if (lenb) len = 0;
        for (int b = 0; b < lenb; b++) len = len << 8 | p[i++];
        if (len > n - i) return -1;
        const char *key = (const char *)p + i;
        i += (size_t)len;
        if (len == 3 && !memcmp(key, "end", 3)) return 1;
        if (!(len == 7 && (!memcmp(key, "records", 7) || !memcmp(key, "summary", 7)))) return 0;
        if (!skip_value(p, n, &i)) return -1;
    }
    return -1;
}

int mode_mp_scan_feed(struct mode_mp_scan *s, const uint8_t *p, size_t n, uint64_t max_msg,
                      uint64_t *done, char *why, size_t why_n)
{
    size_t i = 0;
    while (i < n) {
        if (s->skip) {
            size_t take = (uint64_t)(n - i) < s->skip ? n - i : (size_t)s->skip;
            head_add(s, p + i, take);
            s->skip -= take;
            s->msg_len += take;
            i += take;
            if (!s->skip && elem_done(s)) (*done)++;
            continue;
        }
        uint8_t c = p[i++];
        if (!s->in_msg) {
            /* a message starts: it must be a map */
            if (!((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf)) {
                snprintf(why, why_n, "expected a msgpack map, got byte 0x%02x", c);
                return MODE_EDATA;
            }
            s->in_msg = 1;
            s->msg_len = 0;
            s->msg_objs = 0;
            s->head_len = 0;
        }
        head_add(s, &c, 1);
        s->msg_len++;
        if (decoded_size(s, 0, 0) > max_msg) {
            snprintf(why, why_n, "a record exceeds the limit of %" PRIu64 " bytes (MODE_MAX_RECORD)", max_msg);
            return MODE_EDATA;
        }
        int r;
        if (s->hdr_need) {
            s->hdr[s->hdr_have++] = c;
            if (s->hdr_have < s->hdr_need) continue;
            uint64_t len = 0;
            for (int k = 0; k < s->hdr_need; k++) len = len << 8 | s->hdr[k];
            s->hdr_need = s->hdr_have = 0;
            int lenb;
            uint64_t imm;
            r = elem_begin(s, classify(s->tag, &lenb, &imm), len, max_msg, why, why_n);
        } else {
            int lenb;
            uint64_t imm;
            int cls = classify(c, &lenb, &imm);
            if (cls == T_BAD) {
                snprintf(why, why_n, "byte 0x%02x is not valid msgpack", c);
                return MODE_EDATA;
            }
            if (lenb) {
                s->tag = c;
                s->hdr_need = lenb;
                s->hdr_have = 0;
                continue;
            }
            r = elem_begin(s, cls, imm, max_msg, why, why_n);
        }
        if (r < 0) return MODE_EDATA;
        if (r > 0) (*done)++;
    }
    return MODE_OK;
}

/* ---- reader ------------------------------------------------------------------------------- */

static ssize_t fd_read(void *ctx, void *buf, size_t n)
{
    return read(*(int *)ctx, buf, n);
}

static uint64_t env_max_record(void)
{
    const char *s = getenv("MODE_MAX_RECORD");
    if (!s || !*s) return MODE_STREAM_MAX_RECORD_DEFAULT;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return MODE_STREAM_MAX_RECORD_DEFAULT;
    int sh = 0;
    if (*end == 'K' || *end == 'k') sh = 10;
    else if (*end == 'M' || *end == 'm') sh = 20;
    else if (*end == 'G' || *end == 'g') sh = 30;
    if (sh && v > (UINT64_MAX >> sh)) return MODE_STREAM_MAX_RECORD_DEFAULT;
    return v ? (uint64_t)v << sh : MODE_STREAM_MAX_RECORD_DEFAULT;
}

int mode_stream_reader_init_fn(struct mode_stream_reader *r, mode_read_fn fn, void *ctx, const char *name,
                               struct mode_err *err)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->read = fn;
    r->ctx = ctx;
    r->max_record = env_max_record();
    mode_mp_scan_init(&r->scan);
    if (!msgpack_unpacker_init(&r->up, READ_CHUNK)) return mode_err_oom(err, READ_CHUNK, "a stream reader");
    r->up_ok = 1;
    msgpack_unpacked_init(&r->hdr_msg);
    msgpack_unpacked_init(&r->rec_msg);
    return MODE_OK;
}

int mode_stream_reader_init(struct mode_stream_reader *r, int fd, const char *name, struct mode_err *err)
{
    int rc = mode_stream_reader_init_fn(r, fd_read, NULL, name, err);
    if (rc) return rc;
    r->fd = fd;
    r->ctx = &r->fd;
    return MODE_OK;
}

int mode_stream_open(struct mode_stream_reader *r, const char *path, struct mode_err *err)
{
    struct stat st;
    if (strcmp(path, "-") == 0) {
        if (fstat(0, &st) == 0 && S_ISDIR(st.st_mode)) { /* `filter <dir` */
            memset(r, 0, sizeof *r);
            r->fd = -1;
            return mode_err_set(err, MODE_ENOINPUT, "<stdin>: is a directory");
        }
        return mode_stream_reader_init(r, 0, "<stdin>", err);
    }
    int fd;
    int rc = mode_open_read(path, &fd, err);
    if (rc) {
        memset(r, 0, sizeof *r);
        r->fd = -1;
        return rc;
    }
    rc = mode_stream_reader_init(r, fd, path, err);
    if (rc) {
        close(fd);
        return rc;
    }
    r->owns_fd = 1;
    return MODE_OK;
}

void mode_stream_reader_free(struct mode_stream_reader *r)
{
    if (r->up_ok) {
        msgpack_unpacked_destroy(&r->hdr_msg);
        msgpack_unpacked_destroy(&r->rec_msg);
        msgpack_unpacker_destroy(&r->up);
        r->up_ok = 0;
    }
    if (r->owns_fd && r->fd >= 0) close(r->fd);
    r->fd = -1;
    r->owns_fd = 0;
}

static int fill(struct mode_stream_reader *r, struct mode_err *err)
{
    /* reserve only when little room is left: a reserve while decoded objects still reference the
     * buffer makes msgpack-c allocate a new one, which per small read would be quadratic */
    if (msgpack_unpacker_buffer_capacity(&r->up) < READ_CHUNK / 16 && !msgpack_unpacker_reserve_buffer(&r->up, READ_CHUNK))
        return mode_err_oom(err, READ_CHUNK, "the stream buffer");
    char *buf = msgpack_unpacker_buffer(&r->up);
    size_t cap = msgpack_unpacker_buffer_capacity(&r->up);
    ssize_t n;
    do n = r->read(r->ctx, buf, cap);
    while (n < 0 && errno == EINTR);
    if (n < 0) return mode_err_set(err, MODE_EIO, "%s: read failed: %s", r->name, strerror(errno));
    if (n == 0) {
        r->eof = 1;
        return MODE_OK;
    }
    uint64_t done = 0;
    char why[256];
    if (mode_mp_scan_feed(&r->scan, (const uint8_t *)buf, (size_t)n, r->max_record, &done, why, sizeof why)) {
        /* the first message of the input is at fault only when none has ended before it */
        if (r->n_streams == 0 && r->state == 0 && r->complete + done == 0)
            return mode_err_set(err, MODE_EDATA, "%s: not a mode stream: %s", r->name, why);
        return mode_err_set(err, MODE_EDATA, "%s: malformed stream after %" PRIu64 " records: %s", r->name,
                            r->n_records, why);
    }
    msgpack_unpacker_buffer_consumed(&r->up, (size_t)n);
    r->complete += done;
    r->offset += (uint64_t)n;
    return MODE_OK;
}

/* *got = 1 with a decoded message in out, or 0 at a clean end of input. */
static int next_msg(struct mode_stream_reader *r, msgpack_unpacked *out, int *got, struct mode_err *err)
{
    *got = 0;
    while (!r->complete) {
        if (r->eof) {
            if (!r->scan.in_msg) return MODE_OK;
            if (r->state == 0)
                return mode_err_set(err, MODE_EDATA, "%s: truncated: the input ends inside the stream header", r->name);
            if (r->state == 2)
                return mode_err_set(err, MODE_EDATA, "%s: truncated: the input ends inside the header of stream %d", r->name,
                                    r->n_streams + 1);
            switch (cut_is_trailer(r->scan.head, r->scan.head_len)) {
            case 1:
                return mode_err_set(err, MODE_EDATA,
                                    "%s: truncated: the input ends inside the trailer, after %" PRIu64 " records (%" PRIu64
                                    " of its bytes present)",
                                    r->name, r->n_records, r->scan.msg_len);
            case 0:
                return mode_err_set(err, MODE_EDATA,
                                    "%s: truncated: the input ends inside record %" PRIu64 " (%" PRIu64 " of its bytes present)",
                                    r->name, r->n_records + 1, r->scan.msg_len);
            default:
                return mode_err_set(err, MODE_EDATA,
                                    "%s: truncated: the input ends inside record %" PRIu64 " or the trailer (%" PRIu64
                                    " of its bytes present)",
                                    r->name, r->n_records + 1, r->scan.msg_len);
            }
        }
        int rc = fill(r, err);
        if (rc) return rc;
    }
    msgpack_unpack_return ret = msgpack_unpacker_next(&r->up, out);
    if (ret == MSGPACK_UNPACK_NOMEM_ERROR) return mode_err_oom(err, 0, "decoding a record");
    if (ret != MSGPACK_UNPACK_SUCCESS)
        return mode_err_set(err, MODE_EDATA, "%s: malformed msgpack after %" PRIu64 " records", r->name, r->n_records);
    r->complete--;
    *got = 1;
    return MODE_OK;
}

int mode_stream_kind_known(const char *kind)
{
    static const char *const kinds[] = {"samples", "trace", "freq", "keep", "sens", "alloc", "logits"};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
        if (!strcmp(kinds[i], kind)) return 1;
    return 0;
}

int mode_stream_check_header(const msgpack_object *h, const char *stream, const char *what,
                             struct mode_err *err)
{
    if (h->type != MSGPACK_OBJECT_MAP)
        return mode_err_set(err, MODE_EDATA, "%s: %s: not a map", stream, what);
    const msgpack_object *m = mode_mp_get(h, "magic");
    if (!m) {
        if (mode_mp_get(h, "end"))
            return mode_err_set(err, MODE_EDATA, "%s: %s: a trailer where a stream header was expected", stream, what);
        return mode_err_set(err, MODE_EDATA, "%s: not a mode stream (%s has no 'magic' field)", stream, what);
    }
    if (!mode_mp_str_eq(m, MODE_STREAM_MAGIC)) {
        char got[16];
        mode_mp_str_copy(m, got, sizeof got);
        return mode_err_set(err, MODE_EDATA, "%s: not a mode stream (magic '%s', expected '%s')", stream, got,
                            MODE_STREAM_MAGIC);
    }
    struct mode_rec rc = {h, stream, what};
    int64_t version = -1;
    int st = mode_rec_int(&rc, "version", true, &version, err);
    if (st) return st;
    if (version != MODE_STREAM_VERSION)
        return mode_err_set(err, MODE_EDATA, "%s: stream format version %" PRId64 " is not supported (this build reads version %d)",
                            stream, version, MODE_STREAM_VERSION);
    const char *kind;
    size_t kn;
    if ((st = mode_rec_str(&rc, "kind", true, &kind, &kn, err))) return st;
    if (kn == 0 || kn >= 32) return mode_err_set(err, MODE_EDATA, "%s: %s: field 'kind': empty or too long", stream, what);
    const msgpack_object *o = NULL;
    if ((st = mode_rec_map(&rc, "producer", false, &o, err))) return st;
    if (o) {
        struct mode_rec pr = {o, stream, "header producer"};
        const char *s;
        size_t n;
        if ((st = mode_rec_str(&pr, "name", false, &s, &n, err))) return st;
        if ((st = mode_rec_str(&pr, "version", false, &s, &n, err))) return st;
    }
    o = NULL;
    if ((st = mode_rec_map(&rc, "args", false, &o, err))) return st;
    o = mode_mp_get(h, "model");
    if (o && o->type != MSGPACK_OBJECT_MAP && o->type != MSGPACK_OBJECT_NIL)
        return mode_err_set(err, MODE_EDATA, "%s: %s: field 'model': expected a map or nil, got %s", stream, what,
                            mode_mp_type_name(o));
    const char *lists[] = {"inputs", "shards"};
    for (int i = 0; i < 2; i++) {
        o = NULL;
        if ((st = mode_rec_array(&rc, lists[i], false, &o, err))) return st;
        for (uint32_t k = 0; o && k < o->via.array.size; k++)
            if (o->via.array.ptr[k].type != MSGPACK_OBJECT_MAP)
                return mode_err_set(err, MODE_EDATA, "%s: %s: field '%s': element %u is not a map", stream, what,
                                    lists[i], k);
    }
    return MODE_OK;
}

int mode_stream_read_header(struct mode_stream_reader *r, const char *expect_kind, struct mode_err *err)
{
    if (r->state == 1)
        return mode_err_set(err, MODE_EINTERNAL, "%s: header requested in the middle of a stream", r->name);
    int got, rc = next_msg(r, &r->hdr_msg, &got, err);
    if (rc) return rc;
    if (!got) {
        if (r->n_streams == 0)
            return mode_err_set(err, MODE_EDATA, "%s: empty input: expected a mode stream header", r->name);
        return mode_err_set(err, MODE_EDATA, "%s: no further stream after the trailer", r->name);
    }
    const msgpack_object *h = &r->hdr_msg.data;
    if ((rc = mode_stream_check_header(h, r->name, "header", err))) return rc;
    r->header = h;
    mode_mp_str_copy(mode_mp_get(h, "kind"), r->kind, sizeof r->kind);
    r->version = MODE_STREAM_VERSION;
    const msgpack_object *p = mode_mp_get(h, "producer");
    mode_mp_str_copy(mode_mp_get(p, "name"), r->producer, sizeof r->producer);
    mode_mp_str_copy(mode_mp_get(p, "version"), r->producer_version, sizeof r->producer_version);
    r->state = 1;
    r->n_records = 0;
    r->trailer = NULL;
    r->n_streams++;
    if (expect_kind && strcmp(expect_kind, r->kind) != 0)
        return mode_err_set(err, MODE_EDATA, "%s: expected kind '%s', got '%s'", r->name, expect_kind, r->kind);
    return MODE_OK;
}

int mode_stream_next(struct mode_stream_reader *r, const msgpack_object **rec, struct mode_err *err)
{
    *rec = NULL;
    if (r->state == 2) return MODE_OK;
    if (r->state != 1) return mode_err_set(err, MODE_EINTERNAL, "%s: records requested before the header", r->name);
    int got, rc = next_msg(r, &r->rec_msg, &got, err);
    if (rc) return rc;
    if (!got)
        return mode_err_set(err, MODE_EDATA, "%s: truncated: no trailer after %" PRIu64 " records", r->name, r->n_records);
    const msgpack_object *o = &r->rec_msg.data;
    if (mode_mp_get(o, "end")) {
        struct mode_rec t = {o, r->name, "trailer"};
        if (!mode_mp_str_eq(mode_mp_get(o, "end"), MODE_STREAM_MAGIC))
            return mode_err_set(err, MODE_EDATA, "%s: trailer: field 'end' is not \"%s\"", r->name, MODE_STREAM_MAGIC);
        int64_t n = -1;
        if ((rc = mode_rec_int(&t, "records", true, &n, err))) return rc;
        if (n < 0 || (uint64_t)n != r->n_records)
            return mode_err_set(err, MODE_EDATA, "%s: trailer counts %" PRId64 " records, the stream has %" PRIu64, r->name, n,
                                r->n_records);
        const msgpack_object *s = NULL;
        if ((rc = mode_rec_map(&t, "summary", false, &s, err))) return rc;
        r->trailer = o;
        r->state = 2;
        return MODE_OK;
    }
    if (mode_mp_get(o, "magic"))
        return mode_err_set(err, MODE_EDATA,
                            "%s: a stream header where record %" PRIu64 " was expected (the previous stream has no trailer)",
                            r->name, r->n_records + 1);
    r->n_records++;
    *rec = o;
    return MODE_OK;
}

int mode_stream_more(struct mode_stream_reader *r, int *more, struct mode_err *err)
{
    *more = 0;
    if (r->state != 2) return mode_err_set(err, MODE_EINTERNAL, "%s: mode_stream_more before the trailer", r->name);
    for (;;) {
        if (r->complete || r->scan.in_msg) {
            *more = 1;
            return MODE_OK;
        }
        if (r->eof) return MODE_OK;
        int rc = fill(r, err);
        if (rc) return rc;
    }
}

int mode_stream_finish(struct mode_stream_reader *r, struct mode_err *err)
{
    int more, rc = mode_stream_more(r, &more, err);
    if (rc) return rc;
    if (more)
        return mode_err_set(err, MODE_EDATA,
                            "%s: data after the trailer (several streams: merge them with mode-cat -s)", r->name);
    return MODE_OK;
}

/* ---- writer ------------------------------------------------------------------------------- */

int mode_stream_writer_init(struct mode_stream_writer *w, int fd, const char *name, struct mode_err *err)
{
    memset(w, 0, sizeof *w);
    return mode_wbuf_init(&w->out, fd, name, err);
}

void mode_stream_header_begin(struct mode_mp *b, const char *kind, const char *producer)
{
    mode_mp_map_open(b);
    mode_mp_key(b, "magic");
    mode_mp_str(b, MODE_STREAM_MAGIC);
    mode_mp_key(b, "version");
    mode_mp_int(b, MODE_STREAM_VERSION);
    mode_mp_key(b, "kind");
    mode_mp_str(b, kind);
    mode_mp_key(b, "producer");
    mode_mp_map_open(b);
    mode_mp_key(b, "name");
    mode_mp_str(b, producer);
    mode_mp_key(b, "version");
    mode_mp_str(b, MODE_VERSION);
    mode_mp_close(b);
}

static int is_map_tag(const struct mode_mp *b)
{
    if (b->len == 0) return 0;
    uint8_t c = (uint8_t)b->buf[0];
    return (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf;
}

int mode_stream_write_header(struct mode_stream_writer *w, const struct mode_mp *b, struct mode_err *err)
{
    if (w->state == 1) return mode_err_set(err, MODE_EINTERNAL, "%s: header inside a stream", w->out.name);
    if (b->failed || b->depth || !is_map_tag(b))
        return mode_err_set(err, MODE_EINTERNAL, "%s: header is not a complete map", w->out.name);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = MODE_OK;
    if (msgpack_unpack_next(&u, b->buf, b->len, &off) != MSGPACK_UNPACK_SUCCESS || off != b->len)
        rc = mode_err_set(err, MODE_EINTERNAL, "%s: header does not decode", w->out.name);
    else
        rc = mode_stream_check_header(&u.data, w->out.name, "header", err);
    msgpack_unpacked_destroy(&u);
    if (rc) return rc;
    if ((rc = mode_wbuf_write(&w->out, b->buf, b->len))) {
        if (err) *err = w->out.err;
        return rc;
    }
    w->state = 1;
    w->n_records = 0;
    return MODE_OK;
}

int mode_stream_write_record(struct mode_stream_writer *w, const struct mode_mp *b, struct mode_err *err)
{
    if (w->state != 1) return mode_err_set(err, MODE_EINTERNAL, "%s: record outside a stream", w->out.name);
    if (b->failed || b->depth || !is_map_tag(b))
        return mode_err_set(err, MODE_EINTERNAL, "%s: record is not a complete map", w->out.name);
    int rc = mode_wbuf_write(&w->out, b->buf, b->len);
    if (rc) {
        if (err) *err = w->out.err;
        return rc;
    }
    w->n_records++;
    return MODE_OK;
}

int mode_stream_write_trailer(struct mode_stream_writer *w, const struct mode_mp *summary,
                              struct mode_err *err)
{
    if (w->state != 1) return mode_err_set(err, MODE_EINTERNAL, "%s: trailer outside a stream", w->out.name);
    struct mode_mp b;
    mode_mp_init(&b);
    mode_mp_map_open(&b);
    mode_mp_key(&b, "end");
    mode_mp_str(&b, MODE_STREAM_MAGIC);
    mode_mp_key(&b, "records");
    mode_mp_uint(&b, w->n_records);
    if (summary) {
        mode_mp_key(&b, "summary");
        mode_mp_raw(&b, summary->buf, summary->len);
    }
    mode_mp_close(&b);
    int rc = mode_mp_finish(&b, err);
    if (!rc && (rc = mode_wbuf_write(&w->out, b.buf, b.len)) && err) *err = w->out.err;
    mode_mp_free(&b);
    if (!rc) w->state = 2;
    return rc;
}

int mode_stream_writer_free(struct mode_stream_writer *w, struct mode_err *err)
{
    return mode_wbuf_free(&w->out, err);
}

/* ---- merging ------------------------------------------------------------------------------ */

static bool obj_equal_or_empty(const msgpack_object *a, const msgpack_object *b)
{
    bool ea = !a || a->type == MSGPACK_OBJECT_NIL || (a->type == MSGPACK_OBJECT_MAP && a->via.map.size == 0);
    bool eb = !b || b->type == MSGPACK_OBJECT_NIL || (b->type == MSGPACK_OBJECT_MAP && b->via.map.size == 0);
    if (ea || eb) return ea && eb;
    return mode_mp_equal(a, b);
}

static bool has_shards(const msgpack_object *h)
{
    const msgpack_object *s = mode_mp_get(h, "shards");
    return s && s->type == MSGPACK_OBJECT_ARRAY && s->via.array.size > 0;
}

int mode_stream_header_agree(const msgpack_object *a, const char *an, const msgpack_object *b, const char *bn,
                             struct mode_err *err)
{
    static const char *const fields[] = {"kind", "version", "producer", "model"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (!obj_equal_or_empty(mode_mp_get(a, fields[i]), mode_mp_get(b, fields[i])))
            return mode_err_set(err, MODE_EDATA, "%s: cannot be merged with %s: the headers' '%s' differ", bn, an, fields[i]);
    const msgpack_object *aa = mode_mp_get(a, "args"), *ba = mode_mp_get(b, "args");
    if (!obj_equal_or_empty(aa, ba)) {
        /* name the first argument that differs */
        const msgpack_object *maps[2] = {aa, ba};
        for (int m = 0; m < 2; m++)
            for (uint32_t i = 0; maps[m] && maps[m]->type == MSGPACK_OBJECT_MAP && i < maps[m]->via.map.size; i++) {
                const msgpack_object *k = &maps[m]->via.map.ptr[i].key;
                if (k->type != MSGPACK_OBJECT_STR) continue;
                char key[64];
                mode_mp_str_copy(k, key, sizeof key);
                const msgpack_object *x = mode_mp_get(aa, key), *y = mode_mp_get(ba, key);
                if (!x || !y || !mode_mp_equal(x, y))
                    return mode_err_set(err, MODE_EDATA, "%s: cannot be merged with %s: argument '%s' differs", bn, an, key);
            }
        return mode_err_set(err, MODE_EDATA, "%s: cannot be merged with %s: the headers' 'args' differ", bn, an);
    }
    if (has_shards(a) != has_shards(b))
        return mode_err_set(err, MODE_EDATA, "%s: cannot be merged with %s: one is a shard, the other a whole stream", bn, an);
    return MODE_OK;
}

static bool range_of(const msgpack_object *v, int64_t *lo, int64_t *hi)
{
    if (!v || v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != 2) return false;
    const msgpack_object *x = &v->via.array.ptr[0], *y = &v->via.array.ptr[1];
    if (x->type != MSGPACK_OBJECT_POSITIVE_INTEGER || y->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return false;
    *lo = (int64_t)x->via.u64;
    *hi = (int64_t)y->via.u64;
    return true;
}

bool mode_stream_shards_overlap(const msgpack_object *a, const msgpack_object *b)
{
    if (a->type != MSGPACK_OBJECT_MAP || b->type != MSGPACK_OBJECT_MAP) return true;
    for (uint32_t i = 0; i < a->via.map.size; i++) {
        const msgpack_object *k = &a->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR) continue;
        char key[64];
        mode_mp_str_copy(k, key, sizeof key);
        int64_t alo, ahi, blo, bhi;
        if (!range_of(&a->via.map.ptr[i].val, &alo, &ahi) || !range_of(mode_mp_get(b, key), &blo, &bhi)) continue;
        if (ahi < blo || bhi < alo) return false; /* disjoint along this dimension */
    }
    return true;
}

void mode_stream_shard_str(const msgpack_object *box, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = 0;
    for (uint32_t i = 0; box->type == MSGPACK_OBJECT_MAP && i < box->via.map.size && k < n; i++) {
        char key[64];
        int64_t lo, hi;
        mode_mp_str_copy(&box->via.map.ptr[i].key, key, sizeof key);
        if (!range_of(&box->via.map.ptr[i].val, &lo, &hi)) continue;
        int w = snprintf(buf + k, n - k, "%s%s %" PRId64 "-%" PRId64, k ? ", " : "", key, lo, hi);
        if (w < 0) break;
        k += (size_t)w;
    }
    if (!buf[0]) snprintf(buf, n, "(whole)");
}

void mode_stream_merge_header(struct mode_mp *b, const msgpack_object *const *h, size_t n)
{
    const msgpack_object *first = h[0];
    mode_mp_map_open(b);
    for (uint32_t i = 0; i < first->via.map.size; i++) {
        const msgpack_object *k = &first->via.map.ptr[i].key;
        if (mode_mp_str_eq(k, "inputs") || mode_mp_str_eq(k, "shards")) continue;
        mode_mp_obj(b, k);
        mode_mp_obj(b, &first->via.map.ptr[i].val);
    }
    /* inputs: the union, in order of first appearance */
    mode_mp_key(b, "inputs");
    mode_mp_array_open(b);
    for (size_t s = 0; s < n; s++) {
        const msgpack_object *in = mode_mp_get(h[s], "inputs");
        for (uint32_t j = 0; in && in->type == MSGPACK_OBJECT_ARRAY && j < in->via.array.size; j++) {
            bool seen = false;
            for (size_t t = 0; t <= s && !seen; t++) {
                const msgpack_object *pin = mode_mp_get(h[t], "inputs");
                if (!pin || pin->type != MSGPACK_OBJECT_ARRAY) continue;
                uint32_t lim = t == s ? j : pin->via.array.size;
                for (uint32_t q = 0; q < lim && !seen; q++) seen = mode_mp_equal(&pin->via.array.ptr[q], &in->via.array.ptr[j]);
            }
            if (!seen) mode_mp_obj(b, &in->via.array.ptr[j]);
        }
    }
    mode_mp_close(b);
    /* shards: every box of every input */
    mode_mp_key(b, "shards");
    mode_mp_array_open(b);
    for (size_t s = 0; s < n; s++) {
        const msgpack_object *sh = mode_mp_get(h[s], "shards");
        for (uint32_t j = 0; sh && sh->type == MSGPACK_OBJECT_ARRAY && j < sh->via.array.size; j++)
            mode_mp_obj(b, &sh->via.array.ptr[j]);
    }
    mode_mp_close(b);
    mode_mp_close(b);
}
