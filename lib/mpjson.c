/* mpjson.c — msgpack objects to JSON text and JSON text to msgpack (mpjson.h). */
#include "mpjson.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- numbers ------------------------------------------------------------------------------ */

static void ensure_float_look(char *buf, size_t n)
{
    if (strpbrk(buf, ".eEn")) return; /* has a point, an exponent, or is nan/inf */
    size_t l = strlen(buf);
    if (l + 2 < n) memcpy(buf + l, ".0", 3);
}

void mode_fmt_f32(char *buf, size_t n, float v)
{
    if (isnan(v)) { snprintf(buf, n, "nan"); return; }
    if (isinf(v)) { snprintf(buf, n, v < 0 ? "-inf" : "inf"); return; }
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    ensure_float_look(buf, n);
}

void mode_fmt_f64(char *buf, size_t n, double v)
{
    if (isnan(v)) { snprintf(buf, n, "nan"); return; }
    if (isinf(v)) { snprintf(buf, n, v < 0 ? "-inf" : "inf"); return; }
    for (int p = 15; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    ensure_float_look(buf, n);
}

/* ---- base64 --------------------------------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int write_b64(struct mode_wbuf *w, const uint8_t *p, size_t n)
{
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        q[0] = b64[v >> 18];
        q[1] = b64[(v >> 12) & 63];
        q[2] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        q[3] = i + 2 < n ? b64[v & 63] : '=';
        int rc = mode_wbuf_write(w, q, 4);
        if (rc) return rc;
    }
    return MODE_OK;
}

/* Decodes base64 (padding optional, no whitespace); returns malloc'ed bytes or NULL on error. */
static uint8_t *decode_b64(const char *s, size_t n, size_t *out_n, int *oom)
{
    *oom = 0;
    while (n > 0 && s[n - 1] == '=') n--;
    if (n % 4 == 1) return NULL;
    uint8_t *out = malloc(n / 4 * 3 + 3);
    if (!out) {
        *oom = 1;
        return NULL;
    }
    size_t k = 0;
    uint32_t v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = strchr(b64, s[i]);
        if (!c || !s[i]) {
            free(out);
            return NULL;
        }
        v = v << 6 | (uint32_t)(c - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(v >> bits);
        }
    }
    *out_n = k;
    return out;
}

/* ---- msgpack → JSON ------------------------------------------------------------------------- */

/* Length of a valid UTF-8 sequence at p (n bytes left), 0 when invalid. */
static size_t utf8_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int write_str(struct mode_wbuf *w, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    int rc = mode_wbuf_putc(w, '"');
    size_t i = 0;
    while (!rc && i < n) {
        uint8_t c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            rc = mode_wbuf_write(w, e, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *e = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            rc = e ? mode_wbuf_puts(w, e) : mode_wbuf_printf(w, "\\u%04x", c);
            i++;
        } else {
            size_t l = utf8_len(p + i, n - i);
            if (l == 0) {
                rc = mode_wbuf_puts(w, "\\ufffd");
                i++;
            } else {
                rc = mode_wbuf_write(w, p + i, l);
                i += l;
            }
        }
    }
    return rc ? rc : mode_wbuf_putc(w, '"');
}

static int write_tensor_values(struct mode_wbuf *w, const struct mode_tensor *t)
{
    const uint8_t *p = t->data;
    size_t es = mode_dtype_size(t->dtype);
    char num[40];
    int rc = mode_wbuf_putc(w, '[');
    for (uint64_t i = 0; !rc && i < t->numel; i++) {
        const uint8_t *e = p + i * es;
        switch (t->dtype) {
        case MODE_F32: { float v; memcpy(&v, e, 4); mode_fmt_f32(num, sizeof num, v); break; }
        case MODE_F64: { double v; memcpy(&v, e, 8); mode_fmt_f64(num, sizeof num, v); break; }
        case MODE_F16:
        case MODE_BF16: {
            uint16_t h;
            memcpy(&h, e, 2);
            mode_fmt_f32(num, sizeof num, t->dtype == MODE_F16 ? mode_f16_to_f32(h) : mode_bf16_to_f32(h));
            break;
        }
        case MODE_I8: snprintf(num, sizeof num, "%d", (int)(int8_t)e[0]); break;
        case MODE_U8:
        case MODE_BOOL:
        case MODE_F8_E4M3:
        case MODE_F8_E5M2: snprintf(num, sizeof num, "%u", e[0]); break;
        case MODE_I16: { int16_t v; memcpy(&v, e, 2); snprintf(num, sizeof num, "%d", v); break; }
        case MODE_U16: { uint16_t v; memcpy(&v, e, 2); snprintf(num, sizeof num, "%u", v); break; }
        case MODE_I32: { int32_t v; memcpy(&v, e, 4); snprintf(num, sizeof num, "%" PRId32, v); break; }
        case MODE_U32: { uint32_t v; memcpy(&v, e, 4); snprintf(num, sizeof num, "%" PRIu32, v); break; }
        case MODE_I64: { int64_t v; memcpy(&v, e, 8); snprintf(num, sizeof num, "%" PRId64, v); break; }
        case MODE_U64: { uint64_t v; memcpy(&v, e, 8); snprintf(num, sizeof num, "%" PRIu64, v); break; }
        default: snprintf(num, sizeof num, "null");
        }
        int quote = (num[0] == 'n' && num[1] == 'a') || num[0] == 'i' || (num[0] == '-' && num[1] == 'i');
        if (i) rc = mode_wbuf_putc(w, ',');
        if (!rc) rc = quote ? mode_wbuf_printf(w, "\"%s\"", num) : mode_wbuf_puts(w, num);
    }
    return rc ? rc : mode_wbuf_putc(w, ']');
}

static int is_tensor_obj(const msgpack_object *o, struct mode_tensor *t)
{
    if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != 3) return 0;
    char why[8];
    return mode_tensor_parse(o, t, why, sizeof why) == MODE_OK;
}

int mode_mpjson_write(struct mode_wbuf *w, const msgpack_object *o, int values)
{
    char num[48];
    struct mode_tensor t;
    int rc = MODE_OK;
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return mode_wbuf_puts(w, "null");
    case MSGPACK_OBJECT_BOOLEAN: return mode_wbuf_puts(w, o->via.boolean ? "true" : "false");
    case MSGPACK_OBJECT_POSITIVE_INTEGER: return mode_wbuf_printf(w, "%" PRIu64, o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return mode_wbuf_printf(w, "%" PRId64, o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (o->type == MSGPACK_OBJECT_FLOAT32) mode_fmt_f32(num, sizeof num, (float)o->via.f64);
        else mode_fmt_f64(num, sizeof num, o->via.f64);
        if (!isfinite(o->via.f64)) return mode_wbuf_printf(w, "\"%s\"", num);
        return mode_wbuf_puts(w, num);
    case MSGPACK_OBJECT_STR: return write_str(w, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        rc = mode_wbuf_puts(w, "{\"$bin\":\"");
        if (!rc) rc = write_b64(w, (const uint8_t *)o->via.bin.ptr, o->via.bin.size);
        return rc ? rc : mode_wbuf_puts(w, "\"}");
    case MSGPACK_OBJECT_EXT:
        rc = mode_wbuf_printf(w, "{\"$ext\":%d,\"data\":\"", o->via.ext.type);
        if (!rc) rc = write_b64(w, (const uint8_t *)o->via.ext.ptr, o->via.ext.size);
        return rc ? rc : mode_wbuf_puts(w, "\"}");
    case MSGPACK_OBJECT_ARRAY:
        rc = mode_wbuf_putc(w, '[');
        for (uint32_t i = 0; !rc && i < o->via.array.size; i++) {
            if (i) rc = mode_wbuf_putc(w, ',');
            if (!rc) rc = mode_mpjson_write(w, &o->via.array.ptr[i], values);
        }
        return rc ? rc : mode_wbuf_putc(w, ']');
    case MSGPACK_OBJECT_MAP:
        if (is_tensor_obj(o, &t)) {
            rc = mode_wbuf_printf(w, "{\"dtype\":\"%s\",\"shape\":[", mode_dtype_name(t.dtype));
            for (int i = 0; !rc && i < t.ndim; i++) rc = mode_wbuf_printf(w, "%s%" PRId64, i ? "," : "", t.shape[i]);
            if (!rc) rc = mode_wbuf_putc(w, ']');
            if (!rc && values) {
                rc = mode_wbuf_puts(w, ",\"data\":");
                if (!rc) rc = write_tensor_values(w, &t);
            }
            return rc ? rc : mode_wbuf_putc(w, '}');
        }
        rc = mode_wbuf_putc(w, '{');
        for (uint32_t i = 0; !rc && i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (i) rc = mode_wbuf_putc(w, ',');
            if (rc) break;
            if (k->type == MSGPACK_OBJECT_STR) rc = write_str(w, k->via.str.ptr, k->via.str.size);
            else {
                /* JSON keys are strings: integers as their digits, anything else by type */
                char kb[64];
                if (k->type == MSGPACK_OBJECT_POSITIVE_INTEGER) snprintf(kb, sizeof kb, "\"%" PRIu64 "\"", k->via.u64);
                else if (k->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) snprintf(kb, sizeof kb, "\"%" PRId64 "\"", k->via.i64);
                else snprintf(kb, sizeof kb, "\"<%s>\"", mode_mp_type_name(k));
                rc = mode_wbuf_puts(w, kb);
            }
            if (!rc) rc = mode_wbuf_putc(w, ':');
            if (!rc) rc = mode_mpjson_write(w, &o->via.map.ptr[i].val, values);
        }
        return rc ? rc : mode_wbuf_putc(w, '}');
    }
    return MODE_OK;
}

/* ---- JSON → msgpack ------------------------------------------------------------------------- */

struct jctx {
    const char *where;
    char path[512];
    struct mode_err *err;
};

static int jfail(struct jctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int jfail(struct jctx *c, const char *fmt, ...)
{
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (c->path[0]) return mode_err_set(c->err, MODE_EDATA, "%s: field '%s': %s", c->where, c->path, m);
    return mode_err_set(c->err, MODE_EDATA, "%s: %s", c->where, m);
}

static int tensor_value(struct jctx *c, enum mode_dtype dt, json_t *v, size_t i, uint8_t *dst)
{
    double d;
    int is_float = mode_dtype_is_float(dt);
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v)) d = json_real_value(v);
    else if (json_is_boolean(v) && dt == MODE_BOOL) d = json_is_true(v);
    else if (json_is_string(v) && is_float) {
        const char *s = json_string_value(v);
        if (!strcmp(s, "nan")) d = NAN;
        else if (!strcmp(s, "inf")) d = INFINITY;
        else if (!strcmp(s, "-inf")) d = -INFINITY;
        else return jfail(c, "data[%zu]: '%s' is not a number", i, s);
    } else
        return jfail(c, "data[%zu]: not a number", i);
    if (!is_float) {
        /* a real must be an integral value inside the int64 range before it is converted */
        if (!json_is_integer(v) && !(d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == floor(d)))
            return jfail(c, "data[%zu]: %g is not an integer in range (dtype %s)", i, d, mode_dtype_name(dt));
        json_int_t iv = json_is_integer(v) ? json_integer_value(v) : (json_int_t)d;
        int64_t lo, hi;
        switch (dt) {
        case MODE_I8: lo = INT8_MIN; hi = INT8_MAX; break;
        case MODE_U8: case MODE_F8_E4M3: case MODE_F8_E5M2: lo = 0; hi = UINT8_MAX; break;
        case MODE_BOOL: lo = 0; hi = 1; break;
        case MODE_I16: lo = INT16_MIN; hi = INT16_MAX; break;
        case MODE_U16: lo = 0; hi = UINT16_MAX; break;
        case MODE_I32: lo = INT32_MIN; hi = INT32_MAX; break;
        case MODE_U32: lo = 0; hi = UINT32_MAX; break;
        case MODE_U64: lo = 0; hi = INT64_MAX; break;
        default: lo = INT64_MIN; hi = INT64_MAX;
        }
        if (iv < lo || iv > hi)
            return jfail(c, "data[%zu]: %lld is out of range for dtype %s", i, (long long)iv, mode_dtype_name(dt));
        int64_t x = iv;
        memcpy(dst, &x, mode_dtype_size(dt)); /* little-endian: the low bytes */
        return MODE_OK;
    }
    if (dt == MODE_F64) memcpy(dst, &d, 8);
    else {
        float f = (float)d;
        if (dt == MODE_F32) memcpy(dst, &f, 4);
        else {
            uint16_t h = dt == MODE_BF16 ? mode_f32_to_bf16(f) : mode_f32_to_f16(f);
            memcpy(dst, &h, 2);
        }
    }
    return MODE_OK;
}

static int parse_tensor(struct jctx *c, struct mode_mp *b, json_t *o)
{
    json_t *jd = json_object_get(o, "dtype"), *js = json_object_get(o, "shape"), *jv = json_object_get(o, "data");
    const char *ds = json_string_value(jd);
    enum mode_dtype dt = mode_dtype_from_name(ds, strlen(ds));
    if (!dt) return jfail(c, "unknown dtype '%s'", ds);
    size_t nd = json_array_size(js);
    if (!json_is_array(js) || nd > MODE_MAX_DIMS) return jfail(c, "shape must be an array of at most %d integers", MODE_MAX_DIMS);
    int64_t shape[MODE_MAX_DIMS];
    for (size_t i = 0; i < nd; i++) {
        json_t *e = json_array_get(js, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0) return jfail(c, "shape[%zu] is not a non-negative integer", i);
        shape[i] = json_integer_value(e);
    }
    uint64_t numel;
    size_t es = mode_dtype_size(dt);
    if (mode_shape_numel((int)nd, shape, &numel) || numel > (UINT32_MAX / es))
        return jfail(c, "shape too large for one tensor");
    if (json_array_size(jv) != numel)
        return jfail(c, "data has %zu values, shape needs %" PRIu64, json_array_size(jv), numel);
    uint8_t *buf = malloc(numel * es + 1);
    if (!buf) return mode_err_oom(c->err, numel * es, "a tensor");
    for (size_t i = 0; i < numel; i++) {
        int rc = tensor_value(c, dt, json_array_get(jv, i), i, buf + i * es);
        if (rc) {
            free(buf);
            return rc;
        }
    }
    mode_mp_tensor(b, dt, (int)nd, shape, buf);
    free(buf);
    return MODE_OK;
}

static int to_mp(struct jctx *c, struct mode_mp *b, json_t *v, int depth);

/* Appends ".key" (key != NULL) or "[idx]" to the location path; *saved restores it. */
static void path_push(struct jctx *c, size_t *saved, const char *key, size_t idx)
{
    *saved = strlen(c->path);
    size_t room = sizeof c->path - *saved;
    int n = key ? snprintf(c->path + *saved, room, "%s%s", *saved ? "." : "", key)
                : snprintf(c->path + *saved, room, "[%zu]", idx);
    if (n < 0 || (size_t)n >= room) c->path[*saved] = 0; /* too deep to name: keep the prefix */
}

static int to_mp(struct jctx *c, struct mode_mp *b, json_t *v, int depth)
{
    if (depth >= MODE_MP_MAX_DEPTH) return jfail(c, "more than %d nested objects or arrays", MODE_MP_MAX_DEPTH);
    switch (json_typeof(v)) {
    case JSON_NULL: mode_mp_nil(b); return MODE_OK;
    case JSON_TRUE: mode_mp_bool(b, true); return MODE_OK;
    case JSON_FALSE: mode_mp_bool(b, false); return MODE_OK;
    case JSON_INTEGER: mode_mp_int(b, json_integer_value(v)); return MODE_OK;
    case JSON_REAL: mode_mp_f64(b, json_real_value(v)); return MODE_OK;
    case JSON_STRING: mode_mp_strn(b, json_string_value(v), json_string_length(v)); return MODE_OK;
    case JSON_ARRAY: {
        mode_mp_array_open(b);
        for (size_t i = 0; i < json_array_size(v); i++) {
            size_t saved;
            path_push(c, &saved, NULL, i);
            int rc = to_mp(c, b, json_array_get(v, i), depth + 1);
            c->path[saved] = 0;
            if (rc) return rc;
        }
        mode_mp_close(b);
        return MODE_OK;
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        json_t *jd = json_object_get(v, "dtype");
        if (n == 3 && json_is_string(jd) && json_is_array(json_object_get(v, "shape")) &&
            json_is_array(json_object_get(v, "data")))
            return parse_tensor(c, b, v);
        json_t *jb = json_object_get(v, "$bin");
        if (n == 1 && jb) {
            int oom;
            size_t bn;
            uint8_t *bytes = json_is_string(jb) ? decode_b64(json_string_value(jb), json_string_length(jb), &bn, &oom) : NULL;
            if (!bytes) return jfail(c, "$bin: not valid base64");
            mode_mp_bin(b, bytes, bn);
            free(bytes);
            return MODE_OK;
        }
        const char *key;
        json_t *val;
        mode_mp_map_open(b);
        json_object_foreach(v, key, val) {
            mode_mp_key(b, key);
            size_t saved;
            path_push(c, &saved, key, 0);
            int rc = to_mp(c, b, val, depth + 1);
            c->path[saved] = 0;
            if (rc) return rc;
        }
        mode_mp_close(b);
        return MODE_OK;
    }
    }
    return jfail(c, "unsupported JSON value");
}

int mode_mpjson_parse(struct mode_mp *b, const char *text, size_t len, const char *where, struct mode_err *err)
{
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!v) return mode_err_set(err, MODE_EDATA, "%s: invalid JSON at column %d: %s", where, je.column, je.text);
    struct jctx c = {where, "", err};
    int rc = to_mp(&c, b, v, 0);
    json_decref(v);
    if (!rc && b->failed) rc = mode_mp_finish(b, err);
    return rc;
}
