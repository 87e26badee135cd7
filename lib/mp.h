/* mp.h — building msgpack objects and reading fields of decoded ones, with messages that name
 * the stream, the record and the field.
 *
 * Building: `struct mode_mp` is a growable byte buffer with a stack of open containers. Containers
 * opened with mode_mp_map_open/array_open count their elements and are patched when closed, so a
 * producer never counts by hand (they are written as map32/array32). Errors (out of memory, a
 * close without an open) are sticky and reported by mode_mp_finish. The buffer is owned by the
 * builder; mode_mp_free releases it.
 *
 * Tensors: a map {"dtype": str, "shape": [int...], "data": bin}, data little-endian, row-major,
 * dtype spelled as mode_dtype_name ("f32", "bf16", "i32", ...). mode_mp_tensor writes one;
 * mode_rec_tensor reads one as a view into the decoded object (valid while that object is).
 *
 * Reading: `struct mode_rec` names where an object came from (stream name, record index, kind);
 * mode_rec_* accessors check the field's type and return MODE_EDATA with a message like
 * "trace.msgpack: record 17: field 'layer': expected an integer, got a string".
 */
#ifndef MODE_MP_H
#define MODE_MP_H

#include "mode.h"

#include <msgpack.h>
#include <stdbool.h>

/* Nested non-empty maps/arrays allowed: msgpack-c's unpacker keeps a stack of 32
 * (MSGPACK_EMBED_STACK_SIZE) and refuses the 32nd open container, so 31 is what it reads. */
#define MODE_MP_MAX_DEPTH 31

struct mode_mp {
    char *buf;
    size_t len, cap;
    int depth;
    size_t open_at[MODE_MP_MAX_DEPTH];    /* offset of each open container's header */
    uint32_t open_n[MODE_MP_MAX_DEPTH];   /* elements written into it so far */
    bool open_map[MODE_MP_MAX_DEPTH];
    int failed; /* sticky: MODE_OK or a status */
};

void mode_mp_init(struct mode_mp *b);
void mode_mp_reset(struct mode_mp *b); /* empties the buffer, keeps the allocation */
void mode_mp_free(struct mode_mp *b);
/* Checks that every container was closed; returns the sticky status (message in err). */
int mode_mp_finish(struct mode_mp *b, struct mode_err *err);

void mode_mp_map_open(struct mode_mp *b);
void mode_mp_array_open(struct mode_mp *b);
void mode_mp_close(struct mode_mp *b);
void mode_mp_key(struct mode_mp *b, const char *key); /* a string, meant as a map key */
void mode_mp_str(struct mode_mp *b, const char *s);
void mode_mp_strn(struct mode_mp *b, const char *s, size_t n);
void mode_mp_int(struct mode_mp *b, int64_t v);
void mode_mp_uint(struct mode_mp *b, uint64_t v);
void mode_mp_f64(struct mode_mp *b, double v);
void mode_mp_f32(struct mode_mp *b, float v);
void mode_mp_bool(struct mode_mp *b, bool v);
void mode_mp_nil(struct mode_mp *b);
void mode_mp_bin(struct mode_mp *b, const void *p, size_t n);
/* A tensor map; data holds numel(shape) elements of dtype, host (= little-endian) order. */
void mode_mp_tensor(struct mode_mp *b, enum mode_dtype dtype, int ndim, const int64_t *shape,
                    const void *data);
/* Re-encodes a decoded object (e.g. an input's header, for provenance). */
void mode_mp_obj(struct mode_mp *b, const msgpack_object *o);
/* Appends raw, already encoded msgpack bytes as one element. */
void mode_mp_raw(struct mode_mp *b, const void *p, size_t n);

/* ---- reading decoded objects ---------------------------------------------------------------- */

struct mode_rec {
    const msgpack_object *obj; /* a map */
    const char *stream;        /* stream name for messages */
    const char *what;          /* "record 17", "header", "trailer", "line 3" */
};

/* Field lookup in a map by string key; NULL when absent (or obj is not a map). */
const msgpack_object *mode_mp_get(const msgpack_object *obj, const char *key);
bool mode_mp_str_eq(const msgpack_object *o, const char *s); /* o is a str equal to s */
/* Copies a str object into buf (NUL-terminated, truncated to n-1); "" when not a str. */
void mode_mp_str_copy(const msgpack_object *o, char *buf, size_t n);
/* Deep equality of two decoded objects (floats compared bitwise). */
bool mode_mp_equal(const msgpack_object *a, const msgpack_object *b);
const char *mode_mp_type_name(const msgpack_object *o);

/* Typed fields. `required` false: an absent field leaves *out unchanged and returns MODE_OK. */
int mode_rec_int(const struct mode_rec *r, const char *key, bool required, int64_t *out,
                 struct mode_err *err);
int mode_rec_num(const struct mode_rec *r, const char *key, bool required, double *out,
                 struct mode_err *err);
/* str: returns a pointer into the object (not NUL-terminated) and its length. */
int mode_rec_str(const struct mode_rec *r, const char *key, bool required, const char **s, size_t *n,
                 struct mode_err *err);
int mode_rec_map(const struct mode_rec *r, const char *key, bool required, const msgpack_object **out,
                 struct mode_err *err);
int mode_rec_array(const struct mode_rec *r, const char *key, bool required,
                   const msgpack_object **out, struct mode_err *err);

struct mode_tensor {
    enum mode_dtype dtype;
    int ndim;
    int64_t shape[MODE_MAX_DIMS];
    uint64_t numel;
    const void *data; /* borrowed; any alignment: read with memcpy or mode_convert_ref */
    size_t nbytes;
};

/* Parses a tensor object, checking dtype, shape and numel·size == len(data). */
int mode_tensor_parse(const msgpack_object *o, struct mode_tensor *t, char *why, size_t why_n);
/* Reads field `key` as a tensor. When dtype != MODE_DTYPE_INVALID it must match; when ndim >= 0
 * the rank must match and every dims[i] >= 0 must equal shape[i] (-1 = any). */
int mode_rec_tensor(const struct mode_rec *r, const char *key, bool required, struct mode_tensor *t,
                    enum mode_dtype dtype, int ndim, const int64_t *dims, struct mode_err *err);

#endif
