/* input.c — samples stream to runtime batches (input.h). */
#include "input.h"
#include "cli.h"

#include <stdio.h>
#include <string.h>

int mode_input_open(struct mode_input *in, const char *path, const struct mode_model *m, struct mode_err *err)
{
    memset(in, 0, sizeof *in);
    in->hi = -1;
    int rc = mode_stream_open(&in->r, path, err);
    if (!rc) rc = mode_stream_read_header(&in->r, "samples", err);
    if (!rc) rc = mode_model_id_check(mode_mp_get(in->r.header, "model"), m, in->r.name, err);
    if (rc) return rc;
    /* image embeddings (mode-route-trace --samples-out) are the tower's output for the weights
     * the header names: this model's weights, or the stream is refused */
    const msgpack_object *args = mode_mp_get(in->r.header, "args"), *vis = args && args->type == MSGPACK_OBJECT_MAP ? mode_mp_get(args, "vision") : NULL;
    if (vis && vis->type == MSGPACK_OBJECT_STR && vis->via.str.size == 6 && !memcmp(vis->via.str.ptr, "embeds", 6)) {
        const msgpack_object *id = mode_mp_get(in->r.header, "model"), *w = id ? mode_mp_get(id, "weights") : NULL;
        const size_t n = strlen(m->weights_hash);
        if (!w || w->type != MSGPACK_OBJECT_STR || !n || w->via.str.size != n || memcmp(w->via.str.ptr, m->weights_hash, n))
            return mode_err_set(err, MODE_EDATA,
                                "%s: its images are the vision tower's output for weights %.12s, not %s's (%.12s): give the samples "
                                "from mode-tokenize, or trace them again with this model",
                                in->r.name, w && w->type == MSGPACK_OBJECT_STR ? (w->via.str.size ? w->via.str.ptr : "''") : "(none)", m->dir,
                                n ? m->weights_hash : "not computed");
        in->embeds = true;
    }
    return MODE_OK;
}

int mode_input_batch(struct mode_input *in, struct mode_rt *rt, struct mode_rt_batch *b, int64_t batch_tokens, int *n,
                     struct mode_err *err)
{
    mode_rt_batch_free(b);
    mode_rt_batch_init(b);
    *n = 0;
    while (!in->ended && b->n_rows < batch_tokens) {
        const msgpack_object *o;
        int rc = mode_stream_next(&in->r, &o, err);
        if (rc) return rc;
        if (!o) {
            in->ended = true;
            return mode_stream_finish(&in->r, err);
        }
        int64_t index = in->n_read++;
        if (index < in->lo || (in->hi >= 0 && index > in->hi)) continue;
        char what[64];
        snprintf(what, sizeof what, "record %lld", (long long)index + 1);
        struct mode_rec rec = {o, in->r.name, what};
        struct mode_sample s;
        if ((rc = mode_sample_parse(&rec, &s, err))) return rc;
        for (int k = 0; k < s.n_images && !in->embeds; k++)
            if (s.images[k].has_embeds) {
                mode_sample_free(&s);
                return mode_err_set(err, MODE_EDATA, "%s: %s: images[%d] has embeddings, but the header does not say whose (args.vision)",
                                    in->r.name, what, k);
            }
        rc = mode_rt_batch_add(rt, b, &s, &rec, err);
        mode_sample_free(&s);
        if (rc) return rc;
        b->seq[b->n_seq - 1].index = index;
        (*n)++;
    }
    return MODE_OK;
}

void mode_input_close(struct mode_input *in) { mode_stream_reader_free(&in->r); }

int mode_input_all(struct mode_input *in, const char *path, const struct mode_model *m, struct mode_rt *rt, int64_t n_samples,
                   struct mode_rt_batch *b)
{
    struct mode_err e = {0};
    if (mode_input_open(in, path, m, &e)) mode_fail(&e);
    in->lo = 0;
    in->hi = n_samples > 0 ? n_samples - 1 : -1;
    mode_rt_batch_init(b);
    int n;
    if (mode_input_batch(in, rt, b, INT64_MAX, &n, &e)) mode_fail(&e);
    if (!n) mode_die(MODE_EDATA, "%s: no sample", in->r.name);
    return n;
}
