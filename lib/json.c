/* json.c — checked jansson getters with file and key path in every message (json.h). */
#include "json.h"

#include "io.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *mode_json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown value";
}

int mode_json_parse(const char *name, const char *text, size_t len, json_t **out, struct mode_err *err)
{
    json_error_t je;
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!*out) return mode_err_set(err, MODE_EDATA, "%s: invalid JSON at line %d, column %d: %s", name, je.line, je.column, je.text);
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return mode_err_set(err, MODE_EDATA, "%s: expected a JSON object at the top", name);
    }
    return MODE_OK;
}

int mode_json_load(const char *path, size_t max_bytes, json_t **out, struct mode_err *err)
{
    char *text;
    size_t len;
    *out = NULL;
    int rc = mode_read_file(path, max_bytes, &text, &len, err);
    if (rc) return rc;
    rc = mode_json_parse(path, text, len, out, err);
    free(text);
    return rc;
}

static int jerr(const struct mode_jctx *c, const char *key, struct mode_err *err, const char *what, const json_t *got)
{
    return mode_err_set(err, MODE_EDATA, "%s: %s%s%s: %s%s%s", c->file, c->prefix, *c->prefix ? "." : "", key, what,
                        got ? ", got " : "", got ? mode_json_type_name(got) : "");
}

static json_t *get(const struct mode_jctx *c, json_t *obj, const char *key, bool required, int *rc, struct mode_err *err)
{
    *rc = MODE_OK;
    json_t *v = json_object_get(obj, key);
    if (v && json_is_null(v)) v = NULL;
    if (!v && required) *rc = jerr(c, key, err, "missing", NULL);
    return v;
}

/* A real number that is an integer inside int64's range (2.0 but not 2.5 or 1e106): converting
 * one outside the range would be undefined behaviour (fuzz_config found 1e106). -0x1p63 is
 * representable, 0x1p63 is not. */
static bool is_int64(double x)
{
    return x >= -0x1p63 && x < 0x1p63 && x == trunc(x);
}

int mode_json_int(const struct mode_jctx *c, json_t *obj, const char *key, bool required, int64_t *out,
                  struct mode_err *err)
{
    int rc;
    json_t *v = get(c, obj, key, required, &rc, err);
    if (!v) return rc;
    if (json_is_integer(v)) *out = json_integer_value(v);
    else if (json_is_real(v) && is_int64(json_real_value(v))) *out = (int64_t)json_real_value(v);
    else return jerr(c, key, err, "expected an integer", v);
    return MODE_OK;
}

int mode_json_num(const struct mode_jctx *c, json_t *obj, const char *key, bool required, double *out,
                  struct mode_err *err)
{
    int rc;
    json_t *v = get(c, obj, key, required, &rc, err);
    if (!v) return rc;
    if (!json_is_number(v)) return jerr(c, key, err, "expected a number", v);
    *out = json_number_value(v);
    return MODE_OK;
}

int mode_json_bool(const struct mode_jctx *c, json_t *obj, const char *key, bool required, bool *out,
                   struct mode_err *err)
{
    int rc;
    json_t *v = get(c, obj, key, required, &rc, err);
    if (!v) return rc;
    if (!json_is_boolean(v)) return jerr(c, key, err, "expected true or false", v);
    *out = json_is_true(v);
    return MODE_OK;
}

int mode_json_str(const struct mode_jctx *c, json_t *obj, const char *key, bool required, const char **out,
                  struct mode_err *err)
{
    int rc;
    json_t *v = get(c, obj, key, required, &rc, err);
    if (!v) return rc;
    if (!json_is_string(v)) return jerr(c, key, err, "expected a string", v);
    *out = json_string_value(v);
    return MODE_OK;
}

int mode_json_obj(const struct mode_jctx *c, json_t *obj, const char *key, bool required, json_t **out,
                  struct mode_err *err)
{
    int rc;
    json_t *v = get(c, obj, key, required, &rc, err);
    if (!v) return rc;
    if (!json_is_object(v)) return jerr(c, key, err, "expected an object", v);
    *out = v;
    return MODE_OK;
}

static int array_of(const struct mode_jctx *c, json_t *obj, const char *key, bool required, int64_t *iout,
                    double *dout, size_t max, size_t *n, struct mode_err *err)
{
    int rc;
    json_t *v = get(c, obj, key, required, &rc, err);
    if (!v) return rc;
    if (!json_is_array(v)) return jerr(c, key, err, "expected an array", v);
    if (json_array_size(v) > max) {
        char w[96];
        snprintf(w, sizeof w, "more than %zu elements", max);
        return jerr(c, key, err, w, NULL);
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *e = json_array_get(v, i);
        if (iout) {
            if (!json_is_integer(e)) return jerr(c, key, err, "expected an array of integers", e);
            iout[i] = json_integer_value(e);
        } else {
            if (!json_is_number(e)) return jerr(c, key, err, "expected an array of numbers", e);
            dout[i] = json_number_value(e);
        }
    }
    *n = json_array_size(v);
    return MODE_OK;
}

int mode_json_int_array(const struct mode_jctx *c, json_t *obj, const char *key, bool required, int64_t *out,
                        size_t max, size_t *n, struct mode_err *err)
{
    return array_of(c, obj, key, required, out, NULL, max, n, err);
}

int mode_json_num_array(const struct mode_jctx *c, json_t *obj, const char *key, bool required, double *out,
                        size_t max, size_t *n, struct mode_err *err)
{
    return array_of(c, obj, key, required, NULL, out, max, n, err);
}

int mode_json_write_file(json_t *j, const char *path, struct mode_err *err)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    if (!text) return mode_err_set(err, MODE_EUNAVAILABLE, "%s: cannot encode the JSON (out of memory)", path);
    struct mode_outfile out;
    struct mode_wbuf w;
    int rc = mode_outfile_open(&out, path, err);
    if (!rc && (rc = mode_wbuf_init(&w, out.fd, out.path, err)) == MODE_OK) {
        if (mode_wbuf_puts(&w, text) || mode_wbuf_putc(&w, '\n')) {
            rc = w.err.code;
            if (err) *err = w.err;
        }
        int rc2 = mode_wbuf_free(&w, rc ? NULL : err);
        if (!rc) rc = rc2;
    }
    if (!rc) rc = mode_outfile_commit(&out, err);
    else mode_outfile_abort(&out);
    free(text);
    return rc;
}
