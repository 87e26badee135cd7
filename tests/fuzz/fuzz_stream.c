/* fuzz_stream — the stream reader (lib/stream.c) on arbitrary bytes, fed in chunks whose sizes
 * come from the input itself; every record read is printed as JSON (lib/mpjson.c) and offered to
 * the samples, trace and keep parsers. */
#include "../../lib/mpjson.h"
#include "../../lib/samples.h"
#include "../../lib/stream.h"
#include "../../lib/trace.h"
#include "fuzz.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

struct src {
    const uint8_t *p;
    size_t n, off;
    unsigned chunk;
};

static ssize_t src_read(void *ctx, void *buf, size_t cap)
{
    struct src *s = ctx;
    size_t k = s->n - s->off;
    if (k > cap) k = cap;
    if (s->chunk && k > s->chunk) k = s->chunk;
    memcpy(buf, s->p + s->off, k);
    s->off += k;
    return (ssize_t)k;
}

static struct mode_wbuf sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    struct mode_err err;
    mode_wbuf_init(&sink, open("/dev/null", O_WRONLY), "/dev/null", &err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    struct src s = {data + 1, size - 1, 0, data[0] % 8}; /* chunk 0 = whole reads */
    struct mode_stream_reader r;
    struct mode_err err;
    if (mode_stream_reader_init_fn(&r, src_read, &s, "fuzz", &err)) return 0;
    for (int more = 1, streams = 0; more && streams < 8; streams++) {
        if (mode_stream_read_header(&r, NULL, &err)) break;
        mode_mpjson_write(&sink, r.header, 1);
        const msgpack_object *o;
        int rc;
        while (!(rc = mode_stream_next(&r, &o, &err)) && o) {
            mode_mpjson_write(&sink, o, 1);
            struct mode_rec rec = {o, "fuzz", "record"};
            struct mode_sample smp;
            if (!mode_sample_parse(&rec, &smp, &err)) mode_sample_free(&smp);
            struct mode_trace_rec t;
            mode_trace_parse(&rec, &t, &err);
            struct mode_keep_rec k;
            mode_keep_parse(&rec, &k, &err);
        }
        if (rc || mode_stream_more(&r, &more, &err)) break;
    }
    mode_stream_reader_free(&r);
    sink.len = 0; /* never flushed: nothing is written */
    return 0;
}
