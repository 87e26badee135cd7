/* mp.c — msgpack building (self-counting containers) and checked field access (mp.h). */
#include "mp.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mode_mp_init(struct mode_mp *b) { memset(b, 0, sizeof *b); }

void mode_mp_reset(struct mode_mp *b)
{
    b->len = 0;
    b->depth = 0;
    b->failed = 0;
}

void mode_mp_free(struct mode_mp *b)
{
    free(b->buf);
    memset(b, 0, sizeof *b);
}

int mode_mp_finish(struct mode_mp *b, struct mode_err *err)
{
    if (b->failed == MODE_EUNAVAILABLE) return mode_err_oom(err, b->cap * 2, "a msgpack object");
    if (b->failed) return mode_err_set(err, b->failed, "msgpack builder misused (unbalanced or too deep)");
    if (b->depth != 0) return mode_err_set(err, MODE_EINTERNAL, "msgpack builder: %d containers left open", b->depth);
    return MODE_OK;
}

static int reserve(struct mode_mp *b, size_t n)
{
    if (b->failed) return -1;
    if (b->len + n <= b->cap) return 0;
    size_t nc = b->cap ? b->cap : 256;
    while (nc < b->len + n) {
        if (nc > SIZE_MAX / 2) {
            b->failed = MODE_EUNAVAILABLE;
            return -1;
        }
        nc *= 2;
    }
    char *p = realloc(b->buf, nc);
    if (!p) {
        b->failed = MODE_EUNAVAILABLE;
        return -1;
    }
    b->buf = p;
    b->cap = nc;
    return 0;
}

static void put(struct mode_mp *b, const void *p, size_t n)
{
    if (reserve(b, n)) return;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
}

static void put_be(struct mode_mp *b, uint8_t tag, uint64_t v, int nbytes)
{
    uint8_t t[9];
    t[0] = tag;
    for (int i = 0; i < nbytes; i++) t[1 + i] = (uint8_t)(v >> (8 * (nbytes - 1 - i)));
    put(b, t, 1 + (size_t)nbytes);
}

static void count(struct mode_mp *b)
{
    if (b->depth > 0) b->open_n[b->depth - 1]++;
}

static void open_container(struct mode_mp *b, bool map)
{
    count(b);
    if (b->depth >= MODE_MP_MAX_DEPTH) {
        b->failed = b->failed ? b->failed : MODE_EINTERNAL;
        return;
    }
    b->open_at[b->depth] = b->len;
    b->open_n[b->depth] = 0;
    b->open_map[b->depth] = map;
    b->depth++;
    put_be(b, map ? 0xdf : 0xdd, 0, 4);
}

void mode_mp_map_open(struct mode_mp *b) { open_container(b, true); }
void mode_mp_array_open(struct mode_mp *b) { open_container(b, false); }

void mode_mp_close(struct mode_mp *b)
{
    if (b->depth == 0) {
        b->failed = b->failed ? b->failed : MODE_EINTERNAL;
        return;
    }
    b->depth--;
    uint32_t n = b->open_n[b->depth];
    if (b->open_map[b->depth]) {
        if (n % 2) {
            b->failed = b->failed ? b->failed : MODE_EINTERNAL;
            return;
        }
        n /= 2;
    }
    if (b->failed) return;
    char *h = b->buf + b->open_at[b->depth] + 1;
    h[0] = (char)(n >> 24);
    h[1] = (char)(n >> 16);
    h[2] = (char)(n >> 8);
    h[3] = (char)n;
}

void mode_mp_uint(struct mode_mp *b, uint64_t v)
{
    count(b);
    if (v < 128) put_be(b, (uint8_t)v, 0, 0);
    else if (v <= UINT8_MAX) put_be(b, 0xcc, v, 1);
    else if (v <= UINT16_MAX) put_be(b, 0xcd, v, 2);
    else if (v <= UINT32_MAX) put_be(b, 0xce, v, 4);
    else put_be(b, 0xcf, v, 8);
}

void mode_mp_int(struct mode_mp *b, int64_t v)
{
    if (v >= 0) {
        mode_mp_uint(b, (uint64_t)v);
        return;
    }
    count(b);
    if (v >= -32) put_be(b, (uint8_t)(int8_t)v, 0, 0);
    else if (v >= INT8_MIN) put_be(b, 0xd0, (uint64_t)v & 0xff, 1);
    else if (v >= INT16_MIN) put_be(b, 0xd1, (uint64_t)v & 0xffff, 2);
    else if (v >= INT32_MIN) put_be(b, 0xd2, (uint64_t)v & 0xffffffffu, 4);
    else put_be(b, 0xd3, (uint64_t)v, 8);
}

void mode_mp_f64(struct mode_mp *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    count(b);
    put_be(b, 0xcb, u, 8);
}

void mode_mp_f32(struct mode_mp *b, float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    count(b);
    put_be(b, 0xca, u, 4);
}

void mode_mp_bool(struct mode_mp *b, bool v)
{
    count(b);
    put_be(b, v ? 0xc3 : 0xc2, 0, 0);
}

void mode_mp_nil(struct mode_mp *b)
{
    count(b);
    put_be(b, 0xc0, 0, 0);
}

void mode_mp_strn(struct mode_mp *b, const char *s, size_t n)
{
    count(b);
    if (n < 32) put_be(b, (uint8_t)(0xa0 | n), 0, 0);
    else if (n <= UINT8_MAX) put_be(b, 0xd9, n, 1);
    else if (n <= UINT16_MAX) put_be(b, 0xda, n, 2);
    else if (n <= UINT32_MAX) put_be(b, 0xdb, n, 4);
    else {
        b->failed = b->failed ? b->failed : MODE_EINTERNAL;
        return;
    }
    put(b, s, n);
}

void mode_mp_str(struct mode_mp *b, const char *s) { mode_mp_strn(b, s, strlen(s)); }
void mode_mp_key(struct mode_mp *b, const char *key) { mode_mp_strn(b, key, strlen(key)); }

void mode_mp_bin(struct mode_mp *b, const void *p, size_t n)
{
    count(b);
    if (n <= UINT8_MAX) put_be(b, 0xc4, n, 1);
    else if (n <= UINT16_MAX) put_be(b, 0xc5, n, 2);
    else if (n <= UINT32_MAX) put_be(b, 0xc6, n, 4);
    else {
        b->failed = b->failed ? b->failed : MODE_EINTERNAL; /* msgpack bin tops out at 4 GiB */
        return;
    }
    put(b, p, n);
}

void mode_mp_tensor(struct mode_mp *b, enum mode_dtype dtype, int ndim, const int64_t *shape,
                    const void *data)
{
    uint64_t numel;
    if (ndim < 0 || ndim > MODE_MAX_DIMS || mode_shape_numel(ndim, shape, &numel) ||
        !mode_dtype_size(dtype)) {
        b->failed = b->failed ? b->failed : MODE_EINTERNAL;
        return;
    }
    mode_mp_map_open(b);
    mode_mp_key(b, "dtype");
    mode_mp_str(b, mode_dtype_name(dtype));
    mode_mp_key(b, "shape");
    mode_mp_array_open(b);
    for (int i = 0; i < ndim; i++) mode_mp_int(b, shape[i]);
    mode_mp_close(b);
    mode_mp_key(b, "data");
    mode_mp_bin(b, data, (size_t)(numel * mode_dtype_size(dtype)));
    mode_mp_close(b);
}

void mode_mp_raw(struct mode_mp *b, const void *p, size_t n)
{
    count(b);
    put(b, p, n);
}

static void put_ext(struct mode_mp *b, int8_t type, const char *p, uint32_t n)
{
    count(b);
    switch (n) {
    case 1: put_be(b, 0xd4, (uint8_t)type, 1); break;
    case 2: put_be(b, 0xd5, (uint8_t)type, 1); break;
    case 4: put_be(b, 0xd6, (uint8_t)type, 1); break;
    case 8: put_be(b, 0xd7, (uint8_t)type, 1); break;
    case 16: put_be(b, 0xd8, (uint8_t)type, 1); break;
    default:
        if (n <= UINT8_MAX) put_be(b, 0xc7, n, 1);
        else if (n <= UINT16_MAX) put_be(b, 0xc8, n, 2);
        else put_be(b, 0xc9, n, 4);
        put_be(b, (uint8_t)type, 0, 0);
    }
    put(b, p, n);
}

void mode_mp_obj(struct mode_mp *b, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: mode_mp_nil(b); break;
    case MSGPACK_OBJECT_BOOLEAN: mode_mp_bool(b, o->via.boolean); break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: mode_mp_uint(b, o->via.u64); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: mode_mp_int(b, o->via.i64); break;
    case MSGPACK_OBJECT_FLOAT32: mode_mp_f32(b, (float)o->via.f64); break;
    case MSGPACK_OBJECT_FLOAT64: mode_mp_f64(b, o->via.f64); break;
    case MSGPACK_OBJECT_STR: mode_mp_strn(b, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: mode_mp_bin(b, o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_EXT: put_ext(b, o->via.ext.type, o->via.ext.ptr, o->via.ext.size); break;
    case MSGPACK_OBJECT_ARRAY:
        mode_mp_array_open(b);
        for (uint32_t i = 0; i < o->via.array.size; i++) mode_mp_obj(b, &o->via.array.ptr[i]);
        mode_mp_close(b);
        break;
    case MSGPACK_OBJECT_MAP:
        mode_mp_map_open(b);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            mode_mp_obj(b, &o->via.map.ptr[i].key);
            mode_mp_obj(b, &o->via.map.ptr[i].val);
        }
        mode_mp_close(b);
        break;
    }
}

/* ---- reading ------------------------------------------------------------------------------ */

const msgpack_object *mode_mp_get(const msgpack_object *obj, const char *key)
{
    if (!obj || obj->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < obj->via.map.size; i++) {
        const msgpack_object *k = &obj->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == kl && memcmp(k->via.str.ptr, key, kl) == 0)
            return &obj->via.map.ptr[i].val;
    }
    return NULL;
}

bool mode_mp_str_eq(const msgpack_object *o, const char *s)
{
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

void mode_mp_str_copy(const msgpack_object *o, char *buf, size_t n)
{
    if (!n) return;
    if (!o || o->type != MSGPACK_OBJECT_STR) {
        buf[0] = 0;
        return;
    }
    size_t k = o->via.str.size < n - 1 ? o->via.str.size : n - 1;
    memcpy(buf, o->via.str.ptr, k);
    buf[k] = 0;
}

bool mode_mp_equal(const msgpack_object *a, const msgpack_object *b)
{
    if (a->type != b->type) return false;
    switch (a->type) {
    case MSGPACK_OBJECT_NIL: return true;
    case MSGPACK_OBJECT_BOOLEAN: return a->via.boolean == b->via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return a->via.u64 == b->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return a->via.i64 == b->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return memcmp(&a->via.f64, &b->via.f64, sizeof(double)) == 0;
    case MSGPACK_OBJECT_STR:
        return a->via.str.size == b->via.str.size && memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0;
    case MSGPACK_OBJECT_BIN:
        return a->via.bin.size == b->via.bin.size && memcmp(a->via.bin.ptr, b->via.bin.ptr, a->via.bin.size) == 0;
    case MSGPACK_OBJECT_EXT:
        return a->via.ext.type == b->via.ext.type && a->via.ext.size == b->via.ext.size &&
               memcmp(a->via.ext.ptr, b->via.ext.ptr, a->via.ext.size) == 0;
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size) return false;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!mode_mp_equal(&a->via.array.ptr[i], &b->via.array.ptr[i])) return false;
        return true;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size) return false;
        for (uint32_t i = 0; i < a->via.map.size; i++)
            if (!mode_mp_equal(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
                !mode_mp_equal(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
                return false;
        return true;
    }
    return false;
}

const char *mode_mp_type_name(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "an integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "a float";
    case MSGPACK_OBJECT_STR: return "a string";
    case MSGPACK_OBJECT_BIN: return "binary data";
    case MSGPACK_OBJECT_EXT: return "an extension object";
    case MSGPACK_OBJECT_ARRAY: return "an array";
    case MSGPACK_OBJECT_MAP: return "a map";
    }
    return "an unknown object";
}

static int field_err(const struct mode_rec *r, const char *key, struct mode_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int field_err(const struct mode_rec *r, const char *key, struct mode_err *err, const char *fmt, ...)
{
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return mode_err_set(err, MODE_EDATA, "%s: %s: field '%s': %s", r->stream ? r->stream : "<stream>",
                        r->what ? r->what : "object", key, m);
}

static const msgpack_object *field(const struct mode_rec *r, const char *key, bool required, int *rc,
                                   struct mode_err *err)
{
    *rc = MODE_OK;
    const msgpack_object *o = mode_mp_get(r->obj, key);
    if (!o && required) *rc = field_err(r, key, err, "missing");
    return o;
}

int mode_rec_int(const struct mode_rec *r, const char *key, bool required, int64_t *out,
                 struct mode_err *err)
{
    int rc;
    const msgpack_object *o = field(r, key, required, &rc, err);
    if (!o) return rc;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) *out = o->via.i64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) *out = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) return field_err(r, key, err, "integer out of range");
    else return field_err(r, key, err, "expected an integer, got %s", mode_mp_type_name(o));
    return MODE_OK;
}

int mode_rec_num(const struct mode_rec *r, const char *key, bool required, double *out,
                 struct mode_err *err)
{
    int rc;
    const msgpack_object *o = field(r, key, required, &rc, err);
    if (!o) return rc;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64) *out = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) *out = (double)o->via.i64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) *out = (double)o->via.u64;
    else return field_err(r, key, err, "expected a number, got %s", mode_mp_type_name(o));
    return MODE_OK;
}

int mode_rec_str(const struct mode_rec *r, const char *key, bool required, const char **s, size_t *n,
                 struct mode_err *err)
{
    int rc;
    const msgpack_object *o = field(r, key, required, &rc, err);
    if (!o) return rc;
    if (o->type != MSGPACK_OBJECT_STR) return field_err(r, key, err, "expected a string, got %s", mode_mp_type_name(o));
    *s = o->via.str.ptr;
    *n = o->via.str.size;
    return MODE_OK;
}

int mode_rec_map(const struct mode_rec *r, const char *key, bool required, const msgpack_object **out,
                 struct mode_err *err)
{
    int rc;
    const msgpack_object *o = field(r, key, required, &rc, err);
    if (!o) return rc;
    if (o->type != MSGPACK_OBJECT_MAP) return field_err(r, key, err, "expected a map, got %s", mode_mp_type_name(o));
    *out = o;
    return MODE_OK;
}

int mode_rec_array(const struct mode_rec *r, const char *key, bool required,
                   const msgpack_object **out, struct mode_err *err)
{
    int rc;
    const msgpack_object *o = field(r, key, required, &rc, err);
    if (!o) return rc;
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return field_err(r, key, err, "expected an array, got %s", mode_mp_type_name(o));
    *out = o;
    return MODE_OK;
}

int mode_tensor_parse(const msgpack_object *o, struct mode_tensor *t, char *why, size_t why_n)
{
    memset(t, 0, sizeof *t);
    if (o->type != MSGPACK_OBJECT_MAP) {
        snprintf(why, why_n, "expected a tensor map, got %s", mode_mp_type_name(o));
        return MODE_EDATA;
    }
    const msgpack_object *dt = mode_mp_get(o, "dtype"), *sh = mode_mp_get(o, "shape"), *d = mode_mp_get(o, "data");
    if (!dt || dt->type != MSGPACK_OBJECT_STR) {
        snprintf(why, why_n, "tensor without a 'dtype' string");
        return MODE_EDATA;
    }
    t->dtype = mode_dtype_from_name(dt->via.str.ptr, dt->via.str.size);
    if (!t->dtype) {
        snprintf(why, why_n, "unknown dtype '%.*s'", (int)(dt->via.str.size > 32 ? 32 : dt->via.str.size),
                 dt->via.str.ptr);
        return MODE_EDATA;
    }
    if (!sh || sh->type != MSGPACK_OBJECT_ARRAY) {
        snprintf(why, why_n, "tensor without a 'shape' array");
        return MODE_EDATA;
    }
    if (sh->via.array.size > MODE_MAX_DIMS) {
        snprintf(why, why_n, "tensor of rank %u (at most %d)", sh->via.array.size, MODE_MAX_DIMS);
        return MODE_EDATA;
    }
    t->ndim = (int)sh->via.array.size;
    for (int i = 0; i < t->ndim; i++) {
        const msgpack_object *e = &sh->via.array.ptr[i];
        if (e->type != MSGPACK_OBJECT_POSITIVE_INTEGER || e->via.u64 > INT64_MAX) {
            snprintf(why, why_n, "shape[%d] is not a non-negative integer", i);
            return MODE_EDATA;
        }
        t->shape[i] = (int64_t)e->via.u64;
    }
    if (!d || d->type != MSGPACK_OBJECT_BIN) {
        snprintf(why, why_n, "tensor without 'data' bytes");
        return MODE_EDATA;
    }
    size_t es = mode_dtype_size(t->dtype);
    if (mode_shape_numel(t->ndim, t->shape, &t->numel) || t->numel > UINT64_MAX / es ||
        t->numel * es != d->via.bin.size) {
        char s[160];
        mode_shape_str(t->ndim, t->shape, s, sizeof s);
        snprintf(why, why_n, "%s %s needs %" PRIu64 " bytes, data has %u", mode_dtype_name(t->dtype), s,
                 t->numel <= UINT64_MAX / es ? t->numel * es : UINT64_MAX, d->via.bin.size);
        return MODE_EDATA;
    }
    t->data = d->via.bin.ptr;
    t->nbytes = d->via.bin.size;
    return MODE_OK;
}

int mode_rec_tensor(const struct mode_rec *r, const char *key, bool required, struct mode_tensor *t,
                    enum mode_dtype dtype, int ndim, const int64_t *dims, struct mode_err *err)
{
    int rc;
    const msgpack_object *o = field(r, key, required, &rc, err);
    if (!o) return rc;
    char why[256];
    if (mode_tensor_parse(o, t, why, sizeof why)) return field_err(r, key, err, "%s", why);
    if (dtype != MODE_DTYPE_INVALID && t->dtype != dtype)
        return field_err(r, key, err, "expected dtype %s, got %s", mode_dtype_name(dtype), mode_dtype_name(t->dtype));
    if (ndim >= 0) {
        bool ok = t->ndim == ndim;
        for (int i = 0; ok && i < ndim; i++)
            if (dims && dims[i] >= 0 && dims[i] != t->shape[i]) ok = false;
        if (!ok) {
            char want[160], got[160];
            int64_t w[MODE_MAX_DIMS];
            for (int i = 0; i < ndim && i < MODE_MAX_DIMS; i++) w[i] = dims ? dims[i] : -1;
            mode_shape_str(ndim, w, want, sizeof want);
            mode_shape_str(t->ndim, t->shape, got, sizeof got);
            return field_err(r, key, err, "expected shape %s, got %s", want, got);
        }
    }
    return MODE_OK;
}
