/* stream-cmp — compares two mode streams the way tests/slurm/run.sh needs: a stream merged from
 * shards (mode-cat -s) against the stream of a single-process run.
 *
 *   build/tests/slurm/stream-cmp [-i KEY]... [-t KEY]... A B
 *
 * Both inputs are first read to their trailer by lib/stream.c (a truncated or malformed input is
 * exit 65, a missing one 66); each must hold exactly one stream. Then:
 *   records   compared as bytes: every record's message, as it lies in the file (its byte range
 *             found by the library's byte-level scanner, mode_mp_scan), equal to the other's;
 *   header    compared as decoded objects (floats bitwise), map entries whose key is one of the
 *             -i KEYs left out at every depth — the provenance headers nested in "inputs" too;
 *   trailer   likewise with the -t KEYs left out ("end" and "records" are always compared).
 * With no -i and no -t the comparison is strict. What was left out and did differ is listed, so a
 * run shows exactly which fields made the difference.
 *
 * Prints one line: "A B: same: ..." (exit 0) or "A B: differ: <first difference>" (exit 1).
 * Exit 64 on a usage error, 65 and 66 as above. */
#include "../../lib/stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_KEYS 16

struct keys {
    const char *k[MAX_KEYS];
    int n;
};

/* One input: mapped bytes, message boundaries, the reader that validated it. */
struct input {
    const char *path;
    const uint8_t *p;
    size_t n;
    uint64_t *end; /* end offset of each message: header, records..., trailer */
    size_t n_msg;
    struct mode_stream_reader r;
};

static void die(int code, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "stream-cmp: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(code);
}

static void load(struct input *in, const char *path)
{
    struct mode_err err = {0};
    in->path = path;
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(MODE_ENOINPUT, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) die(MODE_ENOINPUT, "%s: %s", path, "not a regular file");
    in->n = (size_t)st.st_size;
    in->p = in->n ? mmap(NULL, in->n, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    if (in->n && in->p == MAP_FAILED) die(MODE_EIO, "%s: mmap: %s", path, strerror(errno));
    /* validation: one complete stream, through the library's reader */
    if (mode_stream_reader_init(&in->r, fd, path, &err) || mode_stream_read_header(&in->r, NULL, &err))
        die(err.code, "%s%s", err.msg, "");
    const msgpack_object *rec;
    do
        if (mode_stream_next(&in->r, &rec, &err)) die(err.code, "%s%s", err.msg, "");
    while (rec);
    if (mode_stream_finish(&in->r, &err)) die(err.code, "%s%s", err.msg, "");
    /* boundaries: the scanner told one byte at a time, so each message's end is known exactly */
    size_t cap = 1024;
    in->end = malloc(cap * sizeof *in->end);
    if (!in->end) die(MODE_EUNAVAILABLE, "%s: %s", path, "out of memory");
    struct mode_mp_scan s;
    mode_mp_scan_init(&s);
    char why[256];
    for (size_t i = 0; i < in->n; i++) {
        uint64_t done = 0;
        if (mode_mp_scan_feed(&s, in->p + i, 1, UINT64_MAX, &done, why, sizeof why)) die(MODE_EDATA, "%s: %s", path, why);
        if (!done) continue;
        if (in->n_msg == cap) {
            cap *= 2;
            uint64_t *e = realloc(in->end, cap * sizeof *e);
            if (!e) die(MODE_EUNAVAILABLE, "%s: %s", path, "out of memory");
            in->end = e;
        }
        in->end[in->n_msg++] = i + 1;
    }
    if (in->n_msg != in->r.n_records + 2) die(MODE_EDATA, "%s: %s", path, "message count disagrees with the reader's");
}

static bool ignored(const msgpack_object *k, const struct keys *ks)
{
    for (int i = 0; i < ks->n; i++)
        if (mode_mp_str_eq(k, ks->k[i])) return true;
    return false;
}

/* path for messages: "inputs[1].shards" */
static void path_add(char *dst, size_t n, const char *base, const msgpack_object *key, long index)
{
    if (key && key->type == MSGPACK_OBJECT_STR)
        snprintf(dst, n, "%s%s%.*s", base, *base ? "." : "", (int)key->via.str.size, key->via.str.ptr);
    else
        snprintf(dst, n, "%s[%ld]", base, index);
}

/* Deep equality leaving out the entries of maps whose key is in ks. On a difference, *first gets
 * its path (once); left-out entries that differ add their path to *skipped. */
static bool equal(const msgpack_object *a, const msgpack_object *b, const struct keys *ks, const char *path,
                  char *first, size_t first_n, char *skipped, size_t skipped_n)
{
    char sub[1024];
    if (a->type == MSGPACK_OBJECT_MAP && b->type == MSGPACK_OBJECT_MAP) {
        /* left-out keys: note where they differ, by key, in either direction */
        for (int side = 0; side < 2; side++) {
            const msgpack_object *x = side ? b : a, *y = side ? a : b;
            for (uint32_t i = 0; i < x->via.map.size; i++) {
                const msgpack_object *k = &x->via.map.ptr[i].key;
                if (!ignored(k, ks)) continue;
                char name[256];
                mode_mp_str_copy(k, name, sizeof name);
                const msgpack_object *other = mode_mp_get(y, name);
                if (side && other) continue; /* present in both: reported from a's side */
                if (other && mode_mp_equal(&x->via.map.ptr[i].val, other)) continue;
                path_add(sub, sizeof sub, path, k, 0);
                if (strlen(skipped) + strlen(sub) + 3 < skipped_n) {
                    if (*skipped) strcat(skipped, ", ");
                    strcat(skipped, sub);
                }
            }
        }
        uint32_t i = 0, j = 0;
        for (;;) {
            while (i < a->via.map.size && ignored(&a->via.map.ptr[i].key, ks)) i++;
            while (j < b->via.map.size && ignored(&b->via.map.ptr[j].key, ks)) j++;
            if (i == a->via.map.size || j == b->via.map.size) break;
            const msgpack_object *ka = &a->via.map.ptr[i].key;
            if (!mode_mp_equal(ka, &b->via.map.ptr[j].key)) {
                path_add(sub, sizeof sub, path, ka, i);
                if (!*first) snprintf(first, first_n, "%s: keys differ or are in another order", sub);
                return false;
            }
            path_add(sub, sizeof sub, path, ka, i);
            if (!equal(&a->via.map.ptr[i].val, &b->via.map.ptr[j].val, ks, sub, first, first_n, skipped, skipped_n))
                return false;
            i++, j++;
        }
        if (i != a->via.map.size || j != b->via.map.size) {
            const msgpack_object *k = i != a->via.map.size ? &a->via.map.ptr[i].key : &b->via.map.ptr[j].key;
            path_add(sub, sizeof sub, path, k, 0);
            if (!*first) snprintf(first, first_n, "%s: only in %s", sub, i != a->via.map.size ? "the first" : "the second");
            return false;
        }
        return true;
    }
    if (a->type == MSGPACK_OBJECT_ARRAY && b->type == MSGPACK_OBJECT_ARRAY) {
        if (a->via.array.size != b->via.array.size) {
            if (!*first) snprintf(first, first_n, "%s: %u against %u elements", path, a->via.array.size, b->via.array.size);
            return false;
        }
        for (uint32_t i = 0; i < a->via.array.size; i++) {
            path_add(sub, sizeof sub, path, NULL, i);
            if (!equal(&a->via.array.ptr[i], &b->via.array.ptr[i], ks, sub, first, first_n, skipped, skipped_n)) return false;
        }
        return true;
    }
    if (mode_mp_equal(a, b)) return true;
    if (!*first) snprintf(first, first_n, "%s: values differ", *path ? path : "(top)");
    return false;
}

int main(int argc, char **argv)
{
    struct keys hk = {{0}, 0}, tk = {{0}, 0};
    int c;
    while ((c = getopt(argc, argv, "i:t:")) != -1) {
        struct keys *ks = c == 'i' ? &hk : c == 't' ? &tk : NULL;
        if (!ks || ks->n == MAX_KEYS) {
            fputs("usage: stream-cmp [-i HEADER_KEY]... [-t TRAILER_KEY]... A B\n", stderr);
            return MODE_EUSAGE;
        }
        if (c == 't' && (!strcmp(optarg, "end") || !strcmp(optarg, "records"))) {
            fputs("stream-cmp: the trailer's end and records are always compared\n", stderr);
            return MODE_EUSAGE;
        }
        ks->k[ks->n++] = optarg;
    }
    if (argc - optind != 2) {
        fputs("usage: stream-cmp [-i HEADER_KEY]... [-t TRAILER_KEY]... A B\n", stderr);
        return MODE_EUSAGE;
    }
    struct input a = {0}, b = {0};
    load(&a, argv[optind]);
    load(&b, argv[optind + 1]);
    printf("%s %s: ", a.path, b.path);

    char first[2048] = "", skipped_h[2048] = "", skipped_t[2048] = "";
    if (strcmp(a.r.kind, b.r.kind)) {
        printf("differ: kind '%s' against '%s'\n", a.r.kind, b.r.kind);
        return 1;
    }
    /* records, as bytes */
    if (a.r.n_records != b.r.n_records) {
        printf("differ: %llu against %llu records\n", (unsigned long long)a.r.n_records, (unsigned long long)b.r.n_records);
        return 1;
    }
    for (size_t m = 1; m + 1 < a.n_msg; m++) {
        size_t la = a.end[m] - a.end[m - 1], lb = b.end[m] - b.end[m - 1];
        const uint8_t *pa = a.p + a.end[m - 1], *pb = b.p + b.end[m - 1];
        if (la == lb && !memcmp(pa, pb, la)) continue;
        size_t at = 0;
        while (at < la && at < lb && pa[at] == pb[at]) at++;
        printf("differ: record %zu (%zu and %zu bytes) differs from its byte %zu on\n", m, la, lb, at);
        return 1;
    }
    /* header and trailer, decoded, the named keys left out */
    if (!equal(a.r.header, b.r.header, &hk, "", first, sizeof first, skipped_h, sizeof skipped_h)) {
        printf("differ: header: %s\n", first);
        return 1;
    }
    if (!equal(a.r.trailer, b.r.trailer, &tk, "", first, sizeof first, skipped_t, sizeof skipped_t)) {
        printf("differ: trailer: %s\n", first);
        return 1;
    }
    printf("same: kind %s, %llu records byte-identical; header equal%s%s; trailer equal%s%s\n", a.r.kind,
           (unsigned long long)a.r.n_records, *skipped_h ? " but for " : "", skipped_h, *skipped_t ? " but for " : "",
           skipped_t);
    return 0;
}
