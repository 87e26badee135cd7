/* stream.h — mode streams: the msgpack data that flows between the filters.
 *
 * Contract (the full specification with every record schema is man/mode-stream.5):
 *   A stream is a sequence of msgpack maps: one header, N records, one trailer.
 *   header  {"magic": "MODE", "version": 1, "kind": str, "producer": {"name", "version"},
 *            "args": map, "model": map|nil, "inputs": [map...], "shards": [map...]}
 *           only magic, version and kind are required; the rest default to empty.
 *   record  a map whose schema depends on kind; never has the keys "magic" or "end".
 *   trailer {"end": "MODE", "records": N} (+ optional "summary": map). A stream without its
 *           trailer is truncated and is never used.
 *   tensors {"dtype": str, "shape": [int...], "data": bin}, little-endian, row-major (mp.h).
 *   Streams concatenate: the bytes of several streams one after the other are read as such by
 *   readers that ask for more (mode_stream_more), and merged into one by mode-cat.
 *
 * Reader: pulls bytes through a read function (a file descriptor by default) into msgpack-c's
 * streaming unpacker (reserve → read → consumed → next). Before msgpack-c sees a message, a
 * byte-level scanner finds where it ends, checks that it is a map, that nesting stays within
 * MODE_MP_MAX_DEPTH and that it stays within the record size limit; msgpack-c then decodes only
 * complete messages, so its allocations are bounded by the bytes actually received. Memory per
 * record is therefore bounded by the record's size (max_record, default 4 GiB or the environment
 * variable MODE_MAX_RECORD), where the size counts the bytes and, for every element of its maps
 * and arrays, the sizeof(msgpack_object) that msgpack-c allocates for it when decoding (a 50 MB
 * record of 50 M nils decoded to 1.2 GB resident when only bytes were counted); both are checked
 * as soon as a length or count is read. Safe when fed one byte at a time.
 *
 * Errors: MODE_EDATA for anything wrong with the bytes (truncated object, missing trailer,
 * wrong magic, version or kind, a record count that disagrees with the trailer), MODE_EIO for a
 * failed read. Messages start with the stream's name: "trace.msgpack: expected kind 'samples',
 * got 'trace'".
 *
 * Ownership: the reader owns the decoded header and the current record; pointers returned stay
 * valid until the next call that reads (the header until the next mode_stream_read_header).
 */
#ifndef MODE_STREAM_H
#define MODE_STREAM_H

#include "io.h"
#include "mode.h"
#include "mp.h"

#include <sys/types.h>

#define MODE_STREAM_MAGIC "MODE"
#define MODE_STREAM_VERSION 1
#define MODE_STREAM_MAX_RECORD_DEFAULT (UINT64_C(4) << 30)

typedef ssize_t (*mode_read_fn)(void *ctx, void *buf, size_t n); /* read(2) semantics, errno set */

/* Byte-level msgpack message delimiter (see above). */
struct mode_mp_scan {
    int depth;
    uint64_t remain[MODE_MP_MAX_DEPTH]; /* elements still expected in each open container */
    uint64_t skip;                      /* payload bytes still to pass over */
    uint8_t hdr[8];                     /* pending length field */
    int hdr_need, hdr_have;
    uint8_t tag;      /* tag byte of the element whose length field is pending */
    int in_msg;       /* inside a message */
    uint64_t msg_len; /* bytes of the current message so far */
    uint64_t msg_objs; /* elements of its maps and arrays declared so far (decoded objects) */
    uint8_t head[64];  /* the first bytes of the current message: a cut message is told to be a
                          trailer or a record by its keys */
    uint32_t head_len;
};

struct mode_stream_reader {
    char name[4096]; /* for messages: a path (PATH_MAX) or "<stdin>" */
    mode_read_fn read;
    void *ctx;
    int fd;       /* for the default read function; -1 otherwise */
    int owns_fd;  /* opened by mode_stream_open: closed by free */
    msgpack_unpacker up;
    int up_ok;
    msgpack_unpacked hdr_msg, rec_msg;
    struct mode_mp_scan scan;
    uint64_t complete; /* complete messages buffered, not yet unpacked */
    uint64_t offset;   /* bytes read so far */
    uint64_t max_record;
    int eof;
    int state; /* 0: expecting a header, 1: records, 2: trailer seen */
    uint64_t n_records;
    int n_streams; /* headers read so far */
    /* the current header */
    const msgpack_object *header;
    char kind[32];
    int64_t version;
    char producer[64], producer_version[32];
    const msgpack_object *trailer; /* after the trailer: the trailer map */
};

/* Reads from fd (not closed by free). name is used in messages. */
int mode_stream_reader_init(struct mode_stream_reader *r, int fd, const char *name, struct mode_err *err);
/* Reads through fn(ctx, buf, n). */
int mode_stream_reader_init_fn(struct mode_stream_reader *r, mode_read_fn fn, void *ctx, const char *name,
                               struct mode_err *err);
/* Opens path ("-" = stdin) for reading; MODE_ENOINPUT when it cannot be opened. */
int mode_stream_open(struct mode_stream_reader *r, const char *path, struct mode_err *err);
void mode_stream_reader_free(struct mode_stream_reader *r);

/* Reads and checks the next header; expect_kind NULL accepts any kind. */
int mode_stream_read_header(struct mode_stream_reader *r, const char *expect_kind, struct mode_err *err);
/* *rec = the next record, or NULL once the trailer has been read and checked. */
int mode_stream_next(struct mode_stream_reader *r, const msgpack_object **rec, struct mode_err *err);
/* After the trailer: *more = 1 when another stream follows, 0 at a clean end of input. */
int mode_stream_more(struct mode_stream_reader *r, int *more, struct mode_err *err);
/* After the trailer: fails unless the input ends here. */
int mode_stream_finish(struct mode_stream_reader *r, struct mode_err *err);

/* Scanner, exposed for tests: feeds n bytes; *done counts messages that ended in them.
 * Returns MODE_OK or MODE_EDATA (why filled). */
void mode_mp_scan_init(struct mode_mp_scan *s);
int mode_mp_scan_feed(struct mode_mp_scan *s, const uint8_t *p, size_t n, uint64_t max_msg,
                      uint64_t *done, char *why, size_t why_n);

/* ---- writing ---------------------------------------------------------------------------- */

struct mode_stream_writer {
    struct mode_wbuf out;
    int state; /* 0: header next, 1: records, 2: trailer written */
    uint64_t n_records;
};

int mode_stream_writer_init(struct mode_stream_writer *w, int fd, const char *name, struct mode_err *err);
/* Opens the header map in b and writes magic, version, kind and producer (name, MODE_VERSION);
 * the caller adds "args", "model", "inputs", "shards" as needed and closes the map. */
void mode_stream_header_begin(struct mode_mp *b, const char *kind, const char *producer);
/* b holds one complete map (a header, a record). Checked: the header decodes and has magic,
 * version and kind; a record is a map. */
int mode_stream_write_header(struct mode_stream_writer *w, const struct mode_mp *b, struct mode_err *err);
int mode_stream_write_record(struct mode_stream_writer *w, const struct mode_mp *b, struct mode_err *err);
/* Writes {"end": "MODE", "records": N} plus "summary" when summary (a map) is not NULL. */
int mode_stream_write_trailer(struct mode_stream_writer *w, const struct mode_mp *summary,
                              struct mode_err *err);
/* Flushes and frees; returns the first write error, if any. */
int mode_stream_writer_free(struct mode_stream_writer *w, struct mode_err *err);

/* The header fields of a decoded header map, checked (used by the reader and by mode-cat's
 * JSON encoder). what: "header" or "line 3" for messages. */
int mode_stream_check_header(const msgpack_object *h, const char *stream, const char *what,
                             struct mode_err *err);
/* ---- merging (mode-cat -s) --------------------------------------------------------------- */

/* Headers a and b (of streams named an, bn) may be merged when they have the same kind, producer,
 * model and args, and either both or neither are shards. MODE_EDATA naming the field otherwise. */
int mode_stream_header_agree(const msgpack_object *a, const char *an, const msgpack_object *b, const char *bn,
                             struct mode_err *err);
/* Shard boxes are maps dimension → [lo, hi] (inclusive); two overlap when every dimension both
 * name intersects (a dimension one of them does not name is whole). */
bool mode_stream_shards_overlap(const msgpack_object *a, const msgpack_object *b);
/* "layers 0-11, samples 0-99" */
void mode_stream_shard_str(const msgpack_object *box, char *buf, size_t n);
/* The merged header of n agreeing headers: the first one with "inputs" the union of all inputs
 * and "shards" the concatenation of all shard boxes. */
void mode_stream_merge_header(struct mode_mp *b, const msgpack_object *const *h, size_t n);

/* Kinds this version specifies (mode-stream(5)); other kinds are readable but unchecked. */
int mode_stream_kind_known(const char *kind);

#endif
