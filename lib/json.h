/* json.h — small checked adapters over jansson for the JSON files mode reads (config.json,
 * preprocessor_config.json, safetensors headers and indexes, tokenizer.json).
 *
 * Every getter names the file and the key path in its message:
 *   "config.json: text_config.num_experts: expected an integer, got a string".
 * Ownership: mode_json_load returns a new reference; the caller json_decref's it. Getters borrow.
 */
#ifndef MODE_JSON_H
#define MODE_JSON_H

#include "mode.h"

#include <jansson.h>
#include <stdbool.h>

/* Reads and parses a file holding a JSON object; duplicate keys are an error. */
int mode_json_load(const char *path, size_t max_bytes, json_t **out, struct mode_err *err);
/* Parses a JSON object from memory; name is used in messages. */
int mode_json_parse(const char *name, const char *text, size_t len, json_t **out, struct mode_err *err);

struct mode_jctx {
    const char *file;   /* for messages */
    const char *prefix; /* key path of obj, e.g. "text_config" ("" at top) */
};

/* Absent (or null) and not required: *out unchanged, MODE_OK. */
int mode_json_int(const struct mode_jctx *c, json_t *obj, const char *key, bool required, int64_t *out,
                  struct mode_err *err);
int mode_json_num(const struct mode_jctx *c, json_t *obj, const char *key, bool required, double *out,
                  struct mode_err *err);
int mode_json_bool(const struct mode_jctx *c, json_t *obj, const char *key, bool required, bool *out,
                   struct mode_err *err);
int mode_json_str(const struct mode_jctx *c, json_t *obj, const char *key, bool required, const char **out,
                  struct mode_err *err);
int mode_json_obj(const struct mode_jctx *c, json_t *obj, const char *key, bool required, json_t **out,
                  struct mode_err *err);
/* An array of integers (at most max); *n receives the count. */
int mode_json_int_array(const struct mode_jctx *c, json_t *obj, const char *key, bool required, int64_t *out,
                        size_t max, size_t *n, struct mode_err *err);
int mode_json_num_array(const struct mode_jctx *c, json_t *obj, const char *key, bool required, double *out,
                        size_t max, size_t *n, struct mode_err *err);

const char *mode_json_type_name(const json_t *v);

/* Writes j (indented, followed by a newline) to path atomically ("-" = stdout). */
int mode_json_write_file(json_t *j, const char *path, struct mode_err *err);

#endif
