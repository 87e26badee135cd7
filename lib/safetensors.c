/* safetensors.c — validated mmap reader and sharded atomic writer for safetensors (safetensors.h). */
#include "safetensors.h"

#include "hash.h"
#include "json.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- one file ------------------------------------------------------------------------------- */

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

const char *mode_st_file_base(const struct mode_st_tensor *t) { return base_name(t->file->path); }

/* jansson reports a duplicate key without naming it; find the key that ends before `pos`. */
static void duplicate_key_name(const char *text, size_t pos, char *out, size_t n)
{
    out[0] = 0;
    size_t i = pos;
    while (i > 0 && text[i - 1] != '"') i--; /* closing quote of the key */
    if (i == 0) return;
    size_t end = --i;
    while (i > 0 && !(text[i - 1] == '"' && (i < 2 || text[i - 2] != '\\'))) i--;
    if (i == 0) return;
    size_t len = end - i;
    if (len >= n) len = n - 1;
    memcpy(out, text + i, len);
    out[len] = 0;
}

struct range {
    uint64_t begin, end;
    size_t idx;
};

static int cmp_range(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int parse_entry(const char *path, const char *name, json_t *e, struct mode_st_tensor *t, uint64_t data_size,
                       struct mode_err *err)
{
    const char *b = base_name(path);
    if (!json_is_object(e)) return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': header entry is not an object", b, name);
    json_t *jd = json_object_get(e, "dtype"), *js = json_object_get(e, "shape"), *jo = json_object_get(e, "data_offsets");
    if (!json_is_string(jd)) return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': no dtype string", b, name);
    t->dtype = mode_dtype_from_st_name(json_string_value(jd), json_string_length(jd));
    if (!t->dtype)
        return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': unknown dtype '%.32s'", b, name, json_string_value(jd));
    if (!json_is_array(js) || json_array_size(js) > MODE_MAX_DIMS)
        return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': shape is not an array of at most %d integers", b, name,
                            MODE_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(js, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': shape[%d] is not a non-negative integer", b, name, i);
        t->shape[i] = json_integer_value(d);
    }
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': data_offsets is not [begin, end]", b, name);
    json_int_t ob = json_integer_value(json_array_get(jo, 0)), oe = json_integer_value(json_array_get(jo, 1));
    if (ob < 0 || oe < ob)
        return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': data_offsets [%lld, %lld] are not a range", b, name,
                            (long long)ob, (long long)oe);
    t->begin = (uint64_t)ob;
    t->end = (uint64_t)oe;
    if (t->end > data_size)
        return mode_err_set(err, MODE_EDATA,
                            "%s: tensor '%s' ends past the file (data_offsets end %" PRIu64 ", the data section has %" PRIu64 " bytes)",
                            b, name, t->end, data_size);
    uint64_t es = mode_dtype_size(t->dtype);
    if (mode_shape_numel(t->ndim, t->shape, &t->numel) || t->numel > UINT64_MAX / es || t->numel * es != t->end - t->begin) {
        char s[160];
        mode_shape_str(t->ndim, t->shape, s, sizeof s);
        return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': %s %s needs %" PRIu64 " bytes, data_offsets give %" PRIu64, b,
                            name, mode_dtype_st_name(t->dtype), s, t->numel <= UINT64_MAX / es ? t->numel * es : UINT64_MAX,
                            t->end - t->begin);
    }
    return MODE_OK;
}

int mode_st_open(struct mode_st_file *f, const char *path, struct mode_err *err)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return mode_err_oom(err, strlen(path), "a path");
    const char *b = base_name(path);
    int rc = mode_map_file(path, &f->map, err);
    if (rc) goto fail;
    if (f->map.size < 8) {
        rc = mode_err_set(err, MODE_EDATA, "%s: file too short (%zu bytes) for a safetensors header", b, f->map.size);
        goto fail;
    }
    const unsigned char *p = f->map.data;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | p[i];
    f->header_len = hl;
    if (hl > MODE_ST_MAX_HEADER) {
        rc = mode_err_set(err, MODE_EDATA, "%s: header length %" PRIu64 " exceeds the limit of %u bytes", b, hl,
                          MODE_ST_MAX_HEADER);
        goto fail;
    }
    if (hl > f->map.size - 8) {
        rc = mode_err_set(err, MODE_EDATA, "%s: header length %" PRIu64 " runs past the end of the file (%zu bytes)", b, hl,
                          f->map.size);
        goto fail;
    }
    if (hl < 2 || p[8] != '{') {
        rc = mode_err_set(err, MODE_EDATA, "%s: not a safetensors file (the header does not start with '{')", b);
        goto fail;
    }
    json_error_t je;
    json_t *h = json_loadb((const char *)p + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &je);
    if (!h) {
        if (strstr(je.text, "duplicate")) {
            char dup[256];
            duplicate_key_name((const char *)p + 8, (size_t)je.position, dup, sizeof dup);
            rc = mode_err_set(err, MODE_EDATA, "%s: tensor '%s' appears twice in the header", b, dup);
        } else
            rc = mode_err_set(err, MODE_EDATA, "%s: header is not valid JSON (offset %d): %s", b, je.position, je.text);
        goto fail;
    }
    if (!json_is_object(h)) {
        json_decref(h);
        rc = mode_err_set(err, MODE_EDATA, "%s: header is not a JSON object", b);
        goto fail;
    }
    size_t n = json_object_size(h), names_len = 0;
    json_t *meta = json_object_get(h, "__metadata__");
    if (meta) n--;
    if (n > MODE_ST_MAX_TENSORS) {
        json_decref(h);
        rc = mode_err_set(err, MODE_EDATA, "%s: %zu tensors exceed the limit of %u", b, n, MODE_ST_MAX_TENSORS);
        goto fail;
    }
    const char *key;
    json_t *val;
    json_object_foreach(h, key, val) names_len += strlen(key) + 1;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->names = malloc(names_len + 1);
    if (!f->tensors || !f->names) {
        json_decref(h);
        rc = mode_err_oom(err, n * sizeof *f->tensors + names_len, "a safetensors header");
        goto fail;
    }
    if (meta) {
        if (!json_is_object(meta)) {
            json_decref(h);
            rc = mode_err_set(err, MODE_EDATA, "%s: __metadata__ is not an object", b);
            goto fail;
        }
        json_object_foreach(meta, key, val) if (!json_is_string(val))
        {
            rc = mode_err_set(err, MODE_EDATA, "%s: __metadata__ value of '%s' is not a string", b, key); /* key dies with h */
            json_decref(h);
            goto fail;
        }
        f->metadata = json_dumps(meta, JSON_COMPACT);
    }
    uint64_t data_size = f->map.size - 8 - hl;
    const unsigned char *data = p + 8 + hl;
    size_t k = 0, off = 0;
    json_object_foreach(h, key, val)
    {
        if (!strcmp(key, "__metadata__")) continue;
        struct mode_st_tensor *t = &f->tensors[k];
        size_t kl = strlen(key);
        memcpy(f->names + off, key, kl + 1);
        t->name = f->names + off;
        off += kl + 1;
        t->file = f;
        if ((rc = parse_entry(path, key, val, t, data_size, err))) {
            json_decref(h);
            goto fail;
        }
        t->data = data + t->begin;
        k++;
    }
    f->n_tensors = k;
    json_decref(h);
    /* overlaps: sort non-empty ranges by start */
    struct range *r = malloc((k ? k : 1) * sizeof *r);
    if (!r) {
        rc = mode_err_oom(err, k * sizeof *r, "an overlap check");
        goto fail;
    }
    size_t m = 0;
    for (size_t i = 0; i < k; i++)
        if (f->tensors[i].end > f->tensors[i].begin) r[m++] = (struct range){f->tensors[i].begin, f->tensors[i].end, i};
    qsort(r, m, sizeof *r, cmp_range);
    for (size_t i = 1; i < m; i++)
        if (r[i].begin < r[i - 1].end) {
            rc = mode_err_set(err, MODE_EDATA, "%s: tensors '%s' and '%s' overlap (bytes %" PRIu64 "..%" PRIu64 " and %" PRIu64 "..%" PRIu64 ")",
                              b, f->tensors[r[i - 1].idx].name, f->tensors[r[i].idx].name, r[i - 1].begin, r[i - 1].end,
                              r[i].begin, r[i].end);
            free(r);
            goto fail;
        }
    free(r);
    return MODE_OK;
fail:
    mode_st_close(f);
    return rc;
}

void mode_st_close(struct mode_st_file *f)
{
    mode_unmap(&f->map);
    free(f->tensors);
    free(f->names);
    free(f->metadata);
    free(f->path);
    memset(f, 0, sizeof *f);
}

const struct mode_st_tensor *mode_st_find(const struct mode_st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (!strcmp(f->tensors[i].name, name)) return &f->tensors[i];
    return NULL;
}

int mode_st_to_f32(const struct mode_st_tensor *t, float *dst, struct mode_err *err)
{
    if (mode_convert_ref(t->dtype, t->data, (size_t)t->numel, dst))
        return mode_err_set(err, MODE_EDATA, "%s: tensor '%s': dtype %s cannot be converted to f32", mode_st_file_base(t),
                            t->name, mode_dtype_st_name(t->dtype));
    return MODE_OK;
}

/* ---- a set of files ------------------------------------------------------------------------- */

static int cmp_tensor_name(const void *a, const void *b)
{
    const struct mode_st_tensor *x = *(const struct mode_st_tensor *const *)a, *y = *(const struct mode_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int file_exists(const char *p, int *is_dir)
{
    struct stat st;
    if (stat(p, &st) < 0) return 0;
    if (is_dir) *is_dir = S_ISDIR(st.st_mode);
    return 1;
}

static int open_index(struct mode_st_set *s, const char *dir, const char *index_path, struct mode_err *err)
{
    json_t *idx;
    int rc = mode_json_load(index_path, MODE_ST_MAX_INDEX, &idx, err);
    if (rc) return rc == MODE_ENOINPUT ? MODE_EDATA : rc;
    const char *ib = base_name(index_path);
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(idx);
        return mode_err_set(err, MODE_EDATA, "%s: no \"weight_map\" object", ib);
    }
    /* distinct file names, in first-seen order */
    size_t cap = 8;
    char **files = calloc(cap, sizeof *files);
    size_t nf = 0;
    const char *key;
    json_t *val;
    rc = MODE_OK;
    if (!files) rc = mode_err_oom(err, cap * sizeof *files, "an index");
    json_object_foreach(wm, key, val)
    {
        if (rc) break;
        if (!json_is_string(val)) {
            rc = mode_err_set(err, MODE_EDATA, "%s: weight_map entry of tensor '%s' is not a file name", ib, key);
            break;
        }
        const char *fn = json_string_value(val);
        if (!*fn || strchr(fn, '/') || !strcmp(fn, ".") || !strcmp(fn, "..")) {
            rc = mode_err_set(err, MODE_EDATA, "%s: tensor '%s': file name '%s' is not a plain file in the directory", ib, key, fn);
            break;
        }
        size_t i;
        for (i = 0; i < nf && strcmp(files[i], fn); i++) {}
        if (i < nf) continue;
        char p[8192];
        if ((rc = mode_path_join(p, sizeof p, dir, fn, err))) break;
        if (!file_exists(p, NULL)) {
            rc = mode_err_set(err, MODE_EDATA, "%s: names %s (for tensor '%s'), which does not exist", ib, fn, key);
            break;
        }
        if (nf == cap) {
            char **nfiles = realloc(files, 2 * cap * sizeof *files);
            if (!nfiles) {
                rc = mode_err_oom(err, 2 * cap * sizeof *files, "an index");
                break;
            }
            files = nfiles;
            cap *= 2;
        }
        files[nf] = strdup(fn);
        if (!files[nf]) {
            rc = mode_err_oom(err, strlen(fn), "an index");
            break;
        }
        nf++;
    }
    if (!rc && nf == 0) rc = mode_err_set(err, MODE_EDATA, "%s: weight_map is empty", ib);
    if (!rc) {
        s->files = calloc(nf, sizeof *s->files);
        if (!s->files) rc = mode_err_oom(err, nf * sizeof *s->files, "shards");
    }
    for (size_t i = 0; !rc && i < nf; i++) {
        char p[8192];
        if ((rc = mode_path_join(p, sizeof p, dir, files[i], err))) break;
        rc = mode_st_open(&s->files[i], p, err);
        if (rc == MODE_ENOINPUT) rc = MODE_EDATA; /* the index names it: the checkpoint is broken */
        if (!rc) s->n_files = i + 1;
    }
    /* every name in the index is in the file it names */
    if (!rc) json_object_foreach(wm, key, val)
        {
            const char *fn = json_string_value(val);
            size_t i;
            for (i = 0; i < s->n_files && strcmp(base_name(s->files[i].path), fn); i++) {}
            if (i == s->n_files || !mode_st_find(&s->files[i], key)) {
                rc = mode_err_set(err, MODE_EDATA, "%s: tensor '%s' is not in %s, where the index says it is", ib, key, fn);
                break;
            }
        }
    for (size_t i = 0; i < nf; i++) free(files[i]);
    free(files);
    json_decref(idx);
    return rc;
}

int mode_st_set_open(struct mode_st_set *s, const char *path, struct mode_err *err)
{
    memset(s, 0, sizeof *s);
    s->path = strdup(path);
    if (!s->path) return mode_err_oom(err, strlen(path), "a path");
    int is_dir = 0, rc;
    if (!file_exists(path, &is_dir)) {
        rc = mode_err_set(err, MODE_ENOINPUT, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!is_dir) {
        s->files = calloc(1, sizeof *s->files);
        if (!s->files) {
            rc = mode_err_oom(err, sizeof *s->files, "a file");
            goto fail;
        }
        if ((rc = mode_st_open(&s->files[0], path, err))) goto fail;
        s->n_files = 1;
    } else {
        char ip[8192], sp[8192];
        if ((rc = mode_path_join(ip, sizeof ip, path, "model.safetensors.index.json", err))) goto fail;
        if ((rc = mode_path_join(sp, sizeof sp, path, "model.safetensors", err))) goto fail;
        if (file_exists(ip, NULL)) {
            s->has_index = 1;
            if ((rc = open_index(s, path, ip, err))) goto fail;
        } else if (file_exists(sp, NULL)) {
            s->files = calloc(1, sizeof *s->files);
            if (!s->files) {
                rc = mode_err_oom(err, sizeof *s->files, "a file");
                goto fail;
            }
            if ((rc = mode_st_open(&s->files[0], sp, err))) goto fail;
            s->n_files = 1;
        } else {
            rc = mode_err_set(err, MODE_ENOINPUT, "%s: no model.safetensors or model.safetensors.index.json in this directory",
                              path);
            goto fail;
        }
    }
    size_t n = 0;
    for (size_t i = 0; i < s->n_files; i++) n += s->files[i].n_tensors;
    s->sorted = malloc((n ? n : 1) * sizeof *s->sorted);
    if (!s->sorted) {
        rc = mode_err_oom(err, n * sizeof *s->sorted, "a tensor table");
        goto fail;
    }
    for (size_t i = 0, k = 0; i < s->n_files; i++)
        for (size_t j = 0; j < s->files[i].n_tensors; j++) s->sorted[k++] = &s->files[i].tensors[j];
    s->n_tensors = n;
    qsort(s->sorted, n, sizeof *s->sorted, cmp_tensor_name);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(s->sorted[i]->name, s->sorted[i - 1]->name)) {
            rc = mode_err_set(err, MODE_EDATA, "tensor '%s' is in both %s and %s", s->sorted[i]->name,
                              mode_st_file_base(s->sorted[i - 1]), mode_st_file_base(s->sorted[i]));
            goto fail;
        }
    return MODE_OK;
fail:
    mode_st_set_close(s);
    return rc;
}

void mode_st_set_close(struct mode_st_set *s)
{
    for (size_t i = 0; i < s->n_files; i++) mode_st_close(&s->files[i]);
    free(s->files);
    free(s->sorted);
    free(s->path);
    memset(s, 0, sizeof *s);
}

const struct mode_st_tensor *mode_st_set_find(const struct mode_st_set *s, const char *name)
{
    size_t lo = 0, hi = s->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->sorted[mid]->name, name);
        if (c == 0) return s->sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- scanning ------------------------------------------------------------------------------- */

struct scan_chunk {
    const struct mode_st_tensor *t;
    uint64_t off, len; /* bytes of t->data */
    uint64_t h[2];
    bool bad; /* holds a non-finite element */
};

struct scan_job {
    struct scan_chunk *c;
    size_t n;
    atomic_size_t next; /* the next chunk to take */
};

static void *scan_worker(void *arg)
{
    struct scan_job *j = arg;
    for (size_t i; (i = atomic_fetch_add(&j->next, 1)) < j->n;) {
        struct scan_chunk *c = &j->c[i];
        c->bad = mode_hash_scan((const unsigned char *)c->t->data + c->off, (size_t)c->len, c->t->dtype, c->h);
    }
    return NULL;
}

static void sha_u64(struct mode_sha256 *s, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> 8 * i);
    mode_sha256_update(s, b, 8);
}

int mode_st_set_scan(const struct mode_st_set *s, int n_threads, char fingerprint[65], struct mode_err *err)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const uint64_t bytes = s->sorted[i]->end - s->sorted[i]->begin;
        n += (size_t)((bytes + MODE_ST_SCAN_CHUNK - 1) / MODE_ST_SCAN_CHUNK);
    }
    struct scan_job job = {.c = calloc(n ? n : 1, sizeof *job.c), .n = n};
    if (!job.c) return mode_err_oom(err, n * sizeof *job.c, "the chunks of a weights scan");
    atomic_init(&job.next, 0);
    for (size_t i = 0, k = 0; i < s->n_tensors; i++) {
        const uint64_t bytes = s->sorted[i]->end - s->sorted[i]->begin;
        for (uint64_t off = 0; off < bytes; off += MODE_ST_SCAN_CHUNK, k++) {
            job.c[k].t = s->sorted[i];
            job.c[k].off = off;
            job.c[k].len = bytes - off < MODE_ST_SCAN_CHUNK ? bytes - off : MODE_ST_SCAN_CHUNK;
        }
    }

    if (n_threads <= 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cpus < 1 ? 1 : cpus > MODE_ST_SCAN_MAX_THREADS ? MODE_ST_SCAN_MAX_THREADS : (int)cpus;
    }
    if ((size_t)n_threads > n) n_threads = n ? (int)n : 1;
    pthread_t tid[MODE_ST_SCAN_MAX_THREADS];
    int started = 0;
    /* this thread is one of the workers; one that cannot be started leaves its share to the others */
    while (started < n_threads - 1 && started < MODE_ST_SCAN_MAX_THREADS && !pthread_create(&tid[started], NULL, scan_worker, &job))
        started++;
    scan_worker(&job);
    for (int i = 0; i < started; i++) pthread_join(tid[i], NULL);

    for (size_t k = 0; k < n; k++) {
        if (!job.c[k].bad) continue;
        const struct scan_chunk *c = &job.c[k];
        const char *what = "nan";
        int64_t e = mode_nonfinite_find((const unsigned char *)c->t->data + c->off, (size_t)c->len, c->t->dtype, &what);
        MODE_ASSERT(e >= 0); /* the word-wide test and the element test agree */
        int rc = mode_err_set(err, MODE_EDATA, "%s: tensor '%s' holds a non-finite value (%s) at element %" PRIu64,
                              mode_st_file_base(c->t), c->t->name, what, c->off / mode_dtype_size(c->t->dtype) + (uint64_t)e);
        free(job.c);
        return rc;
    }

    struct mode_sha256 sh;
    mode_sha256_init(&sh);
    static const char tag[] = "mode weights fingerprint 2"; /* 1 was a sample of the weights as f32 */
    mode_sha256_update(&sh, tag, sizeof tag);
    for (size_t i = 0, k = 0; i < s->n_tensors; i++) {
        const struct mode_st_tensor *t = s->sorted[i];
        const char *dt = mode_dtype_st_name(t->dtype);
        mode_sha256_update(&sh, t->name, strlen(t->name) + 1);
        mode_sha256_update(&sh, dt, strlen(dt) + 1);
        sha_u64(&sh, (uint64_t)t->ndim);
        for (int d = 0; d < t->ndim; d++) sha_u64(&sh, (uint64_t)t->shape[d]);
        sha_u64(&sh, t->end - t->begin);
        for (; k < n && job.c[k].t == t; k++) sha_u64(&sh, job.c[k].h[0]), sha_u64(&sh, job.c[k].h[1]);
    }
    mode_sha256_hex(&sh, fingerprint);
    free(job.c);
    return MODE_OK;
}

/* ---- writer --------------------------------------------------------------------------------- */

struct mode_st_entry {
    char *name;
    enum mode_dtype dtype;
    int ndim;
    int64_t shape[MODE_MAX_DIMS];
    uint64_t nbytes;
    uint64_t spill_off; /* where its bytes are in the spill file */
    int shard;
};

static int open_spill(struct mode_st_writer *w, struct mode_err *err)
{
    char p[8192], name[64];
    snprintf(name, sizeof name, ".spill-%d", w->shard);
    int rc = mode_outdir_file(w->dir, name, p, sizeof p, err);
    if (rc) return rc;
    w->spill_fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w->spill_fd < 0) return mode_err_set(err, MODE_ECANTCREAT, "%s: %s", p, strerror(errno));
    unlink(p); /* anonymous from here on: nothing to clean up if we die */
    w->spill_len = 0;
    return MODE_OK;
}

int mode_st_writer_init(struct mode_st_writer *w, const struct mode_outdir *dir, uint64_t max_shard_bytes,
                        struct mode_err *err)
{
    memset(w, 0, sizeof *w);
    w->dir = dir;
    w->max_shard_bytes = max_shard_bytes;
    w->shard = 1;
    w->spill_fd = -1;
    /* {"format": "pt"}: what safetensors' torch API writes, and what transformers' loader
     * checks for */
    int rc = open_spill(w, err);
    if (!rc && (rc = mode_st_writer_meta(w, "format", "pt", err))) mode_st_writer_free(w);
    return rc;
}

int mode_st_writer_meta(struct mode_st_writer *w, const char *key, const char *value, struct mode_err *err)
{
    for (size_t i = 0; i < w->n_meta; i++)
        if (!strcmp(w->meta[2 * i], key)) {
            char *v = strdup(value);
            if (!v) return mode_err_oom(err, strlen(value), "metadata");
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return MODE_OK;
        }
    char **m = realloc(w->meta, (w->n_meta + 1) * 2 * sizeof *m);
    if (!m) return mode_err_oom(err, (w->n_meta + 1) * 2 * sizeof *m, "metadata");
    w->meta = m;
    m[2 * w->n_meta] = strdup(key);
    m[2 * w->n_meta + 1] = strdup(value);
    w->n_meta++;
    if (!m[2 * w->n_meta - 2] || !m[2 * w->n_meta - 1]) return mode_err_oom(err, strlen(key) + strlen(value), "metadata");
    return MODE_OK;
}

static int cmp_entry_align(const void *a, const void *b)
{
    const struct mode_st_entry *const *x = a, *const *y = b;
    size_t sx = mode_dtype_size((*x)->dtype), sy = mode_dtype_size((*y)->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return *x < *y ? -1 : *x > *y; /* stable: insertion order */
}

static int copy_range(int from, uint64_t off, int to, uint64_t n, struct mode_err *err, const char *what)
{
    char buf[1 << 16];
    while (n > 0) {
        size_t want = n < sizeof buf ? (size_t)n : sizeof buf;
        ssize_t r = pread(from, buf, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return mode_err_set(err, MODE_EIO, "%s: reading spilled data: %s", what, r < 0 ? strerror(errno) : "short read");
        int e = mode_write_all(to, buf, (size_t)r);
        if (e) return mode_err_set(err, MODE_EIO, "%s: write failed: %s", what, strerror(e));
        off += (uint64_t)r;
        n -= (uint64_t)r;
    }
    return MODE_OK;
}

/* Writes entries [shard_first, n_entries) as ".shard-N.part" inside the directory. */
static int flush_shard(struct mode_st_writer *w, struct mode_err *err)
{
    size_t n = w->n_entries - w->shard_first;
    struct mode_st_entry **order = malloc((n ? n : 1) * sizeof *order);
    json_t *h = json_object();
    int rc = MODE_OK;
    if (!order || !h) {
        free(order);
        json_decref(h);
        return mode_err_oom(err, n * sizeof *order, "a shard header");
    }
    for (size_t i = 0; i < n; i++) order[i] = &w->entries[w->shard_first + i];
    qsort(order, n, sizeof *order, cmp_entry_align);
    if (w->n_meta) {
        json_t *m = json_object();
        for (size_t i = 0; i < w->n_meta; i++) json_object_set_new(m, w->meta[2 * i], json_string(w->meta[2 * i + 1]));
        json_object_set_new(h, "__metadata__", m);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_object(), *sh = json_array();
        for (int d = 0; d < order[i]->ndim; d++) json_array_append_new(sh, json_integer(order[i]->shape[d]));
        json_object_set_new(e, "dtype", json_string(mode_dtype_st_name(order[i]->dtype)));
        json_object_set_new(e, "shape", sh);
        json_t *o = json_array();
        json_array_append_new(o, json_integer((json_int_t)off));
        json_array_append_new(o, json_integer((json_int_t)(off + order[i]->nbytes)));
        json_object_set_new(e, "data_offsets", o);
        json_object_set_new(h, order[i]->name, e);
        off += order[i]->nbytes;
    }
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    if (!text) {
        free(order);
        return mode_err_oom(err, 0, "a shard header");
    }
    size_t tl = strlen(text), padded = (tl + 7) / 8 * 8; /* data starts 8-aligned */
    char name[64], p[8192];
    snprintf(name, sizeof name, ".shard-%d.part", w->shard);
    rc = mode_outdir_file(w->dir, name, p, sizeof p, err);
    int fd = rc ? -1 : open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (!rc && fd < 0) rc = mode_err_set(err, MODE_ECANTCREAT, "%s: %s", p, strerror(errno));
    if (!rc) {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)padded >> (8 * i));
        int e = mode_write_all(fd, len8, 8);
        if (!e) e = mode_write_all(fd, text, tl);
        for (size_t i = tl; !e && i < padded; i++) e = mode_write_all(fd, " ", 1);
        if (e) rc = mode_err_set(err, MODE_EIO, "%s/%s: write failed: %s", w->dir->path, name, strerror(e));
        for (size_t i = 0; !rc && i < n; i++) rc = copy_range(w->spill_fd, order[i]->spill_off, fd, order[i]->nbytes, err, w->dir->path);
        if (!rc && fsync(fd) < 0 && errno != EINVAL) rc = mode_err_set(err, MODE_EIO, "%s: fsync: %s", p, strerror(errno));
        if (close(fd) < 0 && !rc) rc = mode_err_set(err, MODE_EIO, "%s: close: %s", p, strerror(errno));
    }
    free(text);
    free(order);
    return rc;
}

int mode_st_writer_add(struct mode_st_writer *w, const char *name, enum mode_dtype dtype, int ndim,
                       const int64_t *shape, const void *data, struct mode_err *err)
{
    uint64_t numel;
    if (ndim < 0 || ndim > MODE_MAX_DIMS || mode_shape_numel(ndim, shape, &numel) || !mode_dtype_size(dtype))
        return mode_err_set(err, MODE_EINTERNAL, "tensor '%s': bad shape or dtype for writing", name);
    uint64_t nbytes = numel * mode_dtype_size(dtype); /* duplicate names are caught by finish() */
    if (w->max_shard_bytes && w->spill_len > 0 && w->spill_len + nbytes > w->max_shard_bytes) {
        int rc = flush_shard(w, err);
        if (rc) return rc;
        close(w->spill_fd);
        w->shard++;
        w->shard_first = w->n_entries;
        if ((rc = open_spill(w, err))) return rc;
    }
    if (w->n_entries == w->cap_entries) {
        size_t nc = w->cap_entries ? 2 * w->cap_entries : 64;
        struct mode_st_entry *ne = realloc(w->entries, nc * sizeof *ne);
        if (!ne) return mode_err_oom(err, nc * sizeof *ne, "tensor entries");
        w->entries = ne;
        w->cap_entries = nc;
    }
    struct mode_st_entry *e = &w->entries[w->n_entries];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return mode_err_oom(err, strlen(name), "a tensor name");
    e->dtype = dtype;
    e->ndim = ndim;
    memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    e->nbytes = nbytes;
    e->spill_off = w->spill_len;
    e->shard = w->shard;
    w->n_entries++;
    int er = mode_write_all(w->spill_fd, data, (size_t)nbytes);
    if (er) return mode_err_set(err, MODE_EIO, "%s: write failed: %s", w->dir->path, strerror(er));
    w->spill_len += nbytes;
    w->total_bytes += nbytes;
    return MODE_OK;
}

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp((*(const struct mode_st_entry *const *)a)->name, (*(const struct mode_st_entry *const *)b)->name);
}

int mode_st_writer_finish(struct mode_st_writer *w, struct mode_err *err)
{
    struct mode_st_entry **by_name = malloc((w->n_entries ? w->n_entries : 1) * sizeof *by_name);
    if (!by_name) return mode_err_oom(err, w->n_entries * sizeof *by_name, "an index");
    for (size_t i = 0; i < w->n_entries; i++) by_name[i] = &w->entries[i];
    qsort(by_name, w->n_entries, sizeof *by_name, cmp_entry_name);
    for (size_t i = 1; i < w->n_entries; i++)
        if (!strcmp(by_name[i]->name, by_name[i - 1]->name)) {
            int r = mode_err_set(err, MODE_EINTERNAL, "tensor '%s' written twice", by_name[i]->name);
            free(by_name);
            return r;
        }
    int rc = flush_shard(w, err);
    if (rc) {
        free(by_name);
        return rc;
    }
    close(w->spill_fd);
    w->spill_fd = -1;
    int ns = w->shard;
    char from[8192], to[8192], name[96];
    for (int s = 1; s <= ns; s++) {
        snprintf(name, sizeof name, ".shard-%d.part", s);
        char final[96];
        if (ns == 1) snprintf(final, sizeof final, "model.safetensors");
        else snprintf(final, sizeof final, "model-%05d-of-%05d.safetensors", s, ns);
        if (!(rc = mode_outdir_file(w->dir, name, from, sizeof from, err)))
            rc = mode_outdir_file(w->dir, final, to, sizeof to, err);
        if (!rc && rename(from, to) < 0) rc = mode_err_set(err, MODE_EIO, "%s: rename: %s", to, strerror(errno));
        if (rc) {
            free(by_name);
            return rc;
        }
    }
    if (ns == 1) {
        free(by_name);
        return MODE_OK;
    }
    json_t *idx = json_object(), *meta = json_object(), *wm = json_object();
    json_object_set_new(meta, "total_size", json_integer((json_int_t)w->total_bytes));
    json_object_set_new(idx, "metadata", meta);
    for (size_t i = 0; i < w->n_entries; i++) {
        snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", by_name[i]->shard, ns);
        json_object_set_new(wm, by_name[i]->name, json_string(name));
    }
    free(by_name);
    json_object_set_new(idx, "weight_map", wm);
    char *text = json_dumps(idx, JSON_INDENT(2));
    json_decref(idx);
    if (!text) return mode_err_oom(err, 0, "an index");
    size_t tl = strlen(text);
    text[tl] = 0;
    char *withnl = malloc(tl + 2);
    if (!withnl) {
        free(text);
        return mode_err_oom(err, tl, "an index");
    }
    memcpy(withnl, text, tl);
    withnl[tl] = '\n';
    free(text);
    rc = mode_outdir_write(w->dir, "model.safetensors.index.json", withnl, tl + 1, err);
    free(withnl);
    return rc;
}

void mode_st_writer_free(struct mode_st_writer *w)
{
    if (w->spill_fd >= 0) close(w->spill_fd);
    for (size_t i = 0; i < w->n_entries; i++) free(w->entries[i].name);
    free(w->entries);
    for (size_t i = 0; i < 2 * w->n_meta; i++) free(w->meta[i]);
    free(w->meta);
    memset(w, 0, sizeof *w);
    w->spill_fd = -1;
}
