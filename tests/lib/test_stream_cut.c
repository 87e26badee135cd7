/* test_stream_cut — where a cut stream ends (issue 20): a stream cut inside its trailer was
 * reported as cut "inside record 5" of a stream of 4 records. For every cut inside the last
 * record, the trailer and a following stream's header, fed whole, one byte at a time and in
 * random chunks, the message names the part that is cut (lib/stream.c). */
#include "../../lib/stream.h"
#include "tap.h"
#include "mem_src.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads every stream of p[0..n) to the end; the status, err filled. */
static int read_all(const uint8_t *p, size_t n, int policy, struct mode_err *err)
{
    struct src s = {p, n, 0, policy};
    struct mode_stream_reader r;
    int rc = mode_stream_reader_init_fn(&r, src_read, &s, "cut.ms", err);
    for (int more = 1; !rc && more;) {
        rc = mode_stream_read_header(&r, NULL, err);
        const msgpack_object *o = NULL;
        do
            if (!rc) rc = mode_stream_next(&r, &o, err);
        while (!rc && o);
        if (!rc) rc = mode_stream_more(&r, &more, err);
    }
    mode_stream_reader_free(&r);
    return rc;
}

/* A stream of n_rec records {"layer": i, "bits": [2, 3, 4]} and a trailer (with a summary map
 * when summary), written by the library writer; *last_rec_at, *trailer_at: where the last
 * record and the trailer start. */
static uint8_t *make_stream(int n_rec, int summary, size_t *len, size_t *last_rec_at, size_t *trailer_at)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/s.ms", tap_tmpdir());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    struct mode_stream_writer w;
    struct mode_err err = {0};
    struct mode_mp b;
    mode_mp_init(&b);
    mode_stream_header_begin(&b, "alloc", "test");
    mode_mp_close(&b);
    int rc = mode_mp_finish(&b, &err) || mode_stream_writer_init(&w, fd, path, &err) || mode_stream_write_header(&w, &b, &err);
    for (int i = 0; i < n_rec && !rc; i++) {
        mode_stream_writer_free(&w, &err); /* flush: the offsets below are file sizes */
        *last_rec_at = (size_t)lseek(fd, 0, SEEK_END);
        mode_stream_writer_init(&w, fd, path, &err);
        w.state = 1, w.n_records = (uint64_t)i;
        mode_mp_reset(&b);
        mode_mp_map_open(&b);
        mode_mp_key(&b, "layer");
        mode_mp_int(&b, i);
        mode_mp_key(&b, "bits");
        mode_mp_array_open(&b);
        for (int k = 2; k <= 4; k++) mode_mp_int(&b, k);
        mode_mp_close(&b);
        mode_mp_close(&b);
        rc = mode_mp_finish(&b, &err) || mode_stream_write_record(&w, &b, &err);
    }
    mode_stream_writer_free(&w, &err);
    *trailer_at = (size_t)lseek(fd, 0, SEEK_END);
    mode_stream_writer_init(&w, fd, path, &err);
    w.state = 1, w.n_records = (uint64_t)n_rec;
    mode_mp_reset(&b);
    mode_mp_map_open(&b);
    mode_mp_key(&b, "note");
    mode_mp_str(&b, "a summary long enough to be cut in many places");
    mode_mp_key(&b, "counts");
    mode_mp_array_open(&b);
    mode_mp_int(&b, 1);
    mode_mp_int(&b, 2);
    mode_mp_close(&b);
    mode_mp_close(&b);
    if (!rc) rc = mode_mp_finish(&b, &err) || mode_stream_write_trailer(&w, summary ? &b : NULL, &err);
    mode_stream_writer_free(&w, &err);
    mode_mp_free(&b);
    if (rc) diag("writing the stream: %s", err.msg);
    *len = (size_t)lseek(fd, 0, SEEK_END);
    uint8_t *p = malloc(*len + 1);
    if (pread(fd, p, *len, 0) != (ssize_t)*len) diag("reading it back failed");
    close(fd);
    return p;
}

int main(void)
{
    tap_seed(20);
    struct mode_err err;
    for (int summary = 0; summary < 2; summary++) {
        size_t n, last = 0, tr;
        uint8_t *s = make_stream(4, summary, &n, &last, &tr);
        is_int(read_all(s, n, 0, &err), MODE_OK, "the whole stream reads (summary %d)", summary);
        char want[256];
        int bad = 0;
        /* a map's header is 1, 3 or 5 bytes (the writer uses map32 for every map) */
#define MAP_HDR(c) ((c) == 0xdf ? 5u : (c) == 0xde ? 3u : 1u)
        const size_t tr_known = MAP_HDR(s[tr]) + 4, rec_known = MAP_HDR(s[last]) + 6;
        for (int policy = 0; policy < 3; policy++) {
            /* inside the trailer: its map header and the fixstr "end" tell it is one */
            for (size_t cut = tr + 1; cut < n; cut++) {
                int rc = read_all(s, cut, policy, &err);
                if (cut - tr >= tr_known)
                    snprintf(want, sizeof want, "cut.ms: truncated: the input ends inside the trailer, after 4 records (%zu of its bytes present)",
                             cut - tr);
                else
                    snprintf(want, sizeof want, "cut.ms: truncated: the input ends inside record 5 or the trailer (%zu of its bytes present)",
                             cut - tr);
                if (rc != MODE_EDATA || strcmp(err.msg, want)) {
                    if (!bad++) diag("cut at %zu (policy %d): got %d '%s', want '%s'", cut, policy, rc, err.msg, want);
                }
            }
            /* inside the last record: its map header and the fixstr "layer" tell it is a record */
            for (size_t cut = last + 1; cut < tr; cut++) {
                int rc = read_all(s, cut, policy, &err);
                if (cut - last >= rec_known)
                    snprintf(want, sizeof want, "cut.ms: truncated: the input ends inside record 4 (%zu of its bytes present)", cut - last);
                else
                    snprintf(want, sizeof want, "cut.ms: truncated: the input ends inside record 4 or the trailer (%zu of its bytes present)",
                             cut - last);
                if (rc != MODE_EDATA || strcmp(err.msg, want)) {
                    if (!bad++) diag("cut at %zu (policy %d): got %d '%s', want '%s'", cut, policy, rc, err.msg, want);
                }
            }
        }
        is_int(bad, 0, "every cut in the last record and in the trailer is named as such (summary %d)", summary);
        read_all(s, n - 1, 1, &err);
        has_str(err.msg, "inside the trailer, after 4 records", "one byte short: the trailer is cut, not 'record 5': %s", err.msg);
        /* two streams, the second cut inside its header */
        uint8_t *two = malloc(2 * n);
        memcpy(two, s, n);
        memcpy(two + n, s, n);
        is_int(read_all(two, 2 * n, 1, &err), MODE_OK, "two streams one after the other read");
        is_int(read_all(two, n + 3, 1, &err), MODE_EDATA, "the second cut inside its header");
        is_str(err.msg, "cut.ms: truncated: the input ends inside the header of stream 2", "... is named so, not as a record");
        free(two);
        free(s);
    }
    return tap_done();
}
