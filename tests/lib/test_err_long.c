/* test_err_long — a long path does not cut off the reason (issue 20): a message longer than
 * struct mode_err's buffer loses its middle, not its end, in mode_err_set and in
 * mode_err_prefix; one naming a path of PATH_MAX bytes fits whole (lib/core.c, lib/mode.h). */
#include "../../lib/mode.h"
#include "tap.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *t)
{
    size_t n = strlen(s), m = strlen(t);
    return n >= m && !memcmp(s + n - m, t, m);
}

int main(void)
{
    struct mode_err e;
    char *path = malloc(20001);
    for (int i = 0; i < 20000; i++) path[i] = i % 100 == 99 ? '/' : 'a' + i % 26;
    path[20000] = 0;

    /* a path of PATH_MAX - 1 bytes and its reason: whole */
    char pm[PATH_MAX];
    memcpy(pm, path, sizeof pm - 1);
    pm[sizeof pm - 1] = 0;
    mode_err_set(&e, MODE_ENOINPUT, "%s: %s", pm, "No such file or directory");
    is_int((int)strlen(e.msg), PATH_MAX - 1 + 27, "a message with a path of PATH_MAX bytes is kept whole");
    ok(!strncmp(e.msg, pm, sizeof pm - 1) && ends_with(e.msg, ": No such file or directory"), "... path and reason");

    /* a path of 20000 bytes: the middle goes, the reason stays */
    is_int(mode_err_set(&e, MODE_ENOINPUT, "%s: %s", path, "File name too long"), MODE_ENOINPUT, "err_set returns the code");
    is_int((int)strlen(e.msg), (int)sizeof e.msg - 1, "a message longer than the buffer fills it, no more");
    char tail[200];
    snprintf(tail, sizeof tail, "%s: File name too long", path + 20000 - 100);
    ok(ends_with(e.msg, tail), "... it ends with the end of the path and the whole reason: '%s'", e.msg + strlen(e.msg) - 40);
    ok(!strncmp(e.msg, path, 1000), "... it starts with the path's beginning");
    ok(strstr(e.msg, "...") != NULL, "... the middle is marked '...'");

    /* mode_err_prefix: a long prefix does not push the reason out */
    mode_err_set(&e, MODE_EDATA, "tensor 'x': shape (3, 4) does not match (4, 3)");
    mode_err_prefix(&e, "%s: ", path);
    is_int(e.code, MODE_EDATA, "prefix keeps the code");
    ok(ends_with(e.msg, "tensor 'x': shape (3, 4) does not match (4, 3)"), "a prefix of 20000 bytes keeps the reason whole");
    ok(!strncmp(e.msg, path, 1000) && strstr(e.msg, "..."), "... and the path's beginning, its middle elided");
    /* a prefix that fits: exact */
    mode_err_set(&e, MODE_EDATA, "bad");
    mode_err_prefix(&e, "%s: ", pm);
    is_int((int)strlen(e.msg), PATH_MAX - 1 + 5, "a prefix of PATH_MAX bytes fits whole");

    /* the message among the arguments (context added by formatting the old message again) */
    mode_err_set(&e, MODE_EIO, "read failed");
    mode_err_set(&e, MODE_EIO, "%s: %s", "file.ms", e.msg);
    is_str(e.msg, "file.ms: read failed", "err->msg may be an argument of mode_err_set");
    free(path);
    return tap_done();
}
