/* samples_load.h — samples [first, first + count) of a samples stream into a runtime batch, for
 * the tests that run the model in process (test_pack, test_rtmoe). Header-only. */
#ifndef MODE_TEST_SAMPLES_LOAD_H
#define MODE_TEST_SAMPLES_LOAD_H

#include "../lib/runtime.h"
#include "../lib/stream.h"

static inline int load_samples(struct mode_rt *rt, const char *path, int first, int count, struct mode_rt_batch *b, struct mode_err *err)
{
    struct mode_stream_reader r;
    int rc = mode_stream_open(&r, path, err);
    if (!rc) rc = mode_stream_read_header(&r, "samples", err);
    mode_rt_batch_init(b);
    for (int i = 0; !rc && i < first + count; i++) {
        const msgpack_object *o;
        if ((rc = mode_stream_next(&r, &o, err)) || !o) break;
        if (i < first) continue;
        struct mode_rec rec = {o, path, "record"};
        struct mode_sample s;
        if (!(rc = mode_sample_parse(&rec, &s, err))) {
            rc = mode_rt_batch_add(rt, b, &s, &rec, err);
            mode_sample_free(&s);
        }
    }
    mode_stream_reader_free(&r);
    return rc;
}

#endif
