/* input.c — samples stream to runtime batches (input.h). */
#include "input.h"
#include "cli.h"

#include "../../lib/pool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static struct {
    bool head;
    int64_t per_row, fixed;
} g_stage;

void mode_input_memory(int64_t per_row, int64_t fixed, bool head) { g_stage.per_row = per_row, g_stage.fixed = fixed, g_stage.head = head; }

int mode_input_open(struct mode_input *in, const char *path, const struct mode_model *m, struct mode_err *err)
{
    memset(in, 0, sizeof *in);
    in->hi = -1;
    in->head = g_stage.head, in->extra_per_row = g_stage.per_row, in->extra_fixed = g_stage.fixed;
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

/* kB field of a /proc file, or -1 */
static int64_t proc_kb(const char *path, const char *field)
{
    FILE *f = fopen(path, "r");
    char line[256];
    int64_t v = -1;
    const size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') v = strtoll(line + n + 1, NULL, 10);
    if (f) fclose(f);
    return v;
}

/* one number from a cgroup file ("max": -1) */
static int64_t cg_value(const char *path)
{
    FILE *f = fopen(path, "r");
    char buf[64] = "";
    if (!f) return -1;
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    if (!buf[0] || !strncmp(buf, "max", 3)) return -1;
    return strtoll(buf, NULL, 10);
}

int64_t mode_mem_available(void)
{
    const char *env = getenv("MODE_MEM_AVAILABLE");
    if (env && *env) return strtoll(env, NULL, 10);
    int64_t avail = proc_kb("/proc/meminfo", "MemAvailable");
    avail = avail < 0 ? INT64_MAX : avail * 1024;
    /* a cgroup (v2) limit on this process's memory: its room left */
    const int64_t cmax = cg_value("/sys/fs/cgroup/memory.max"), ccur = cg_value("/sys/fs/cgroup/memory.current");
    if (cmax > 0 && ccur >= 0 && cmax - ccur < avail) avail = cmax > ccur ? cmax - ccur : 0;
    /* an address-space limit (ulimit -v): what is left of it */
    struct rlimit rl;
    const int64_t vm = proc_kb("/proc/self/status", "VmSize");
    if (!getrlimit(RLIMIT_AS, &rl) && rl.rlim_cur != RLIM_INFINITY && vm >= 0) {
        const int64_t left = (int64_t)rl.rlim_cur - vm * 1024;
        if (left < avail) avail = left > 0 ? left : 0;
    }
    return avail;
}

int mode_input_mem_check(const struct mode_input *in, const struct mode_rt *rt, const struct mode_rt_batch *b, struct mode_err *err)
{
    const char *off = getenv("MODE_MEM_CHECK");
    if (off && !strcmp(off, "off")) return MODE_OK;
    const int64_t need = mode_rt_mem_need(rt, b, mode_pool_threads(), in->head) + in->extra_fixed + b->n_rows * in->extra_per_row;
    const int64_t avail = mode_mem_available();
    if (need <= avail) return MODE_OK;
    int64_t patches = 0;
    for (int i = 0; i < b->n_image; i++)
        if (!b->image[i].data.has_embeds) patches += b->image[i].data.grid[0] * b->image[i].data.grid[1] * b->image[i].data.grid[2];
    char a[32], n[32];
    snprintf(n, sizeof n, need >= 1000000000 ? "%.2f GB" : "%.1f MB", need >= 1000000000 ? need / 1e9 : need / 1e6);
    snprintf(a, sizeof a, avail >= 1000000000 ? "%.2f GB" : "%.1f MB", avail >= 1000000000 ? avail / 1e9 : avail / 1e6);
    return mode_err_set(err, MODE_EUNAVAILABLE,
                        "out of memory (%s needed for a batch of %d samples, %" PRId64 " tokens and %" PRId64 " image patches; %s "
                        "available): use a smaller --batch-tokens or fewer samples, or give the run more memory (MODE_MEM_CHECK=off skips "
                        "this check)",
                        n, b->n_seq, b->n_rows, patches, a);
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
            if ((rc = mode_stream_finish(&in->r, err))) return rc;
            break;
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
    return *n ? mode_input_mem_check(in, rt, b, err) : MODE_OK;
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
