/* mpjson.h — mode stream objects as JSON text and back (mode-cat's printer and --from-json).
 *
 * msgpack → JSON: maps → objects (non-string keys are written as strings), arrays, strings
 * (invalid UTF-8 replaced by U+FFFD), integers, floats (shortest text that reads back to the same
 * value; NaN and infinities as the strings "nan", "inf", "-inf"), nil → null, bin →
 * {"$bin": base64}, ext → {"$ext": type, "data": base64}. A tensor map is written as
 * {"dtype": ..., "shape": [...]} or, with values, {"dtype", "shape", "data": [flat values]}.
 *
 * JSON → msgpack: the inverse. An object with exactly the keys dtype, shape and data where data
 * is an array becomes a tensor (values checked against the dtype's range, count against the
 * shape); {"$bin": str} becomes bin; integers stay integers, reals become float64.
 *
 * Errors: MODE_EDATA with the location ("line 3: field 'images[0].pixels': ...").
 */
#ifndef MODE_MPJSON_H
#define MODE_MPJSON_H

#include "io.h"
#include "mp.h"

int mode_mpjson_write(struct mode_wbuf *w, const msgpack_object *o, int values);
/* Parses one JSON value (text of length len) and appends it to b as one msgpack element.
 * where names the input for messages ("in.jsonl: line 3"). */
int mode_mpjson_parse(struct mode_mp *b, const char *text, size_t len, const char *where, struct mode_err *err);

/* Shortest decimal text that reads back to v (strtof / strtod), into buf. */
void mode_fmt_f32(char *buf, size_t n, float v);
void mode_fmt_f64(char *buf, size_t n, double v);

#endif
