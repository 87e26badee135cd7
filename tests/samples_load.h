/* samples_load.h — for the tests that run the model in process (test_pack, test_rtmoe,
 * test_layer_ref): emoji-vl's calibration set tokenized and opened, and samples
 * [first, first + count) of a samples stream into a runtime batch. Header-only. */
#ifndef MODE_TEST_SAMPLES_LOAD_H
#define MODE_TEST_SAMPLES_LOAD_H

#include "../lib/runtime.h"
#include "../lib/stream.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>

/* emoji-vl's calibration set tokenized into samples (tap_tmpdir()/calib.ms, n bytes), its model
 * opened into m and rt. Skips the test without MODE_BIN; 0, or -1 after a failed ok(). */
static inline int emoji_calib_open(char *samples, size_t n, struct mode_model *m, struct mode_rt *rt)
{
    const char *bin = getenv("MODE_BIN");
    if (!bin) tap_skip_all("MODE_BIN is not set (run through make check)");
    char E[4096], md[4200], cmd[16384];
    snprintf(E, sizeof E, "%s", fixture("emoji-vl"));
    snprintf(md, sizeof md, "%s/model", E);
    snprintf(samples, n, "%s/calib.ms", tap_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s/mode-tokenize' -m '%s' -o '%s' '%s/calib/data.jsonl'", bin, md, samples, E);
    if (system(cmd)) return ok(0, "mode-tokenize emoji-vl calib"), -1;
    struct mode_err err = {0};
    if (mode_model_open(m, md, &err) || mode_rt_init(rt, m, &err)) return ok(0, "emoji-vl opens: %s", err.msg), -1;
    return 0;
}

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
