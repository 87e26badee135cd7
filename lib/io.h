/* io.h — checked file I/O for libmode-core: a buffered writer on a file descriptor, output files
 * and directories that appear atomically (temporary name, fsync, rename), whole-file reads with a
 * size limit, and read-only mappings.
 *
 * Ownership: every struct here is caller-allocated; *_open/_begin fill it, *_commit/_abort/_close
 * release what it holds. Errors follow mode.h: MODE_EIO for failed reads and writes (a full disk
 * included), MODE_ENOINPUT for a missing input, MODE_ECANTCREAT for an output that cannot be
 * created; messages name the path.
 */
#ifndef MODE_IO_H
#define MODE_IO_H

#include "mode.h"

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

/* Buffered writer. Errors are sticky: after the first failed write every call returns the same
 * status and the message stays the first one. */
struct mode_wbuf {
    int fd;
    char name[4096]; /* for messages: "<stdout>" or the path (PATH_MAX) */
    char *buf;
    size_t len, cap;
    struct mode_err err;
    uint64_t written; /* bytes handed to write(2) so far */
};

int mode_wbuf_init(struct mode_wbuf *w, int fd, const char *name, struct mode_err *err);
int mode_wbuf_write(struct mode_wbuf *w, const void *p, size_t n);
int mode_wbuf_puts(struct mode_wbuf *w, const char *s);
int mode_wbuf_putc(struct mode_wbuf *w, char c);
int mode_wbuf_printf(struct mode_wbuf *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int mode_wbuf_flush(struct mode_wbuf *w);
/* Flushes, frees the buffer; does not close fd. Returns the sticky status; copies it to err. */
int mode_wbuf_free(struct mode_wbuf *w, struct mode_err *err);

/* Writes all n bytes, retrying on EINTR and short writes. Returns 0 or an errno value. */
int mode_write_all(int fd, const void *p, size_t n);
/* read(2) retrying on EINTR. */
ssize_t mode_read_retry(int fd, void *p, size_t n);

/* An output file that appears at `path` only when committed: written to a temporary file in the
 * same directory (".NAME.tmp-XXXXXX"), fsync'ed and renamed over `path`. "-" means stdout (no
 * temporary; commit only flushes). A `path` that exists and is not a regular file (a device such
 * as /dev/null, a FIFO, /dev/stdout) is written in place, never replaced: renaming over it would
 * swap the device node for a regular file. */
struct mode_outfile {
    int fd;
    int is_stdout;
    int in_place; /* an existing device, FIFO or socket: opened as it is, closed by commit */
    char path[4096];
    char tmp[4096]; /* empty when none */
    int lock_fd;    /* the temporary opened again, flock'ed until it is renamed or removed; -1 */
};

/* Stale temporaries: a writer killed by SIGKILL (which no handler sees) leaves its temporary
 * behind. The writer holds an flock(2) on its temporary until it is renamed or removed, so a
 * temporary of the same output that nobody holds locked is one whose writer is gone, whatever
 * became of its pid: mode_outfile_open removes those ("path/.NAME.tmp-XXXXXX", regular files of
 * this user) before it creates its own, and calls mode_outfile_stale_hook with the path of each
 * (the filters print it). NULL by default. */
extern void (*mode_outfile_stale_hook)(const char *stale_tmp);

int mode_outfile_open(struct mode_outfile *o, const char *path, struct mode_err *err);
/* When set, called with the path of each temporary an output file creates (add 1) and once it
 * is renamed into place or removed (add 0). The filters point it at the list of temporaries that
 * their SIGINT/SIGTERM handler removes, so that a signal leaves none behind, also of the outputs
 * the library writes by path (mode_json_write_file, mode_heatmap_png). NULL by default. */
extern void (*mode_outfile_tmp_hook)(const char *tmp, int add);
int mode_outfile_commit(struct mode_outfile *o, struct mode_err *err);
/* Removes the temporary file. Safe to call after commit (then a no-op) and twice. */
void mode_outfile_abort(struct mode_outfile *o);

/* An output directory that appears at `path` only when committed: files are created inside a
 * sibling temporary directory ("NAME.tmp-XXXXXX"); commit fsyncs it and renames it into place.
 * An existing `path` is replaced only when `replace` is set (it is moved aside, the new one is
 * renamed in, then the old one is removed), otherwise begin fails with MODE_ECANTCREAT. */
struct mode_outdir {
    char path[4096];
    char tmp[4096];
    int replace;
    int committed;
};

int mode_outdir_begin(struct mode_outdir *d, const char *path, int replace, struct mode_err *err);
/* Path of `name` inside the temporary directory, written to buf (size n). */
int mode_outdir_file(const struct mode_outdir *d, const char *name, char *buf, size_t n,
                     struct mode_err *err);
/* Writes a whole file inside the temporary directory and fsyncs it. */
int mode_outdir_write(const struct mode_outdir *d, const char *name, const void *p, size_t n,
                      struct mode_err *err);
int mode_outdir_commit(struct mode_outdir *d, struct mode_err *err);
/* Removes the temporary directory and what it holds (one level: the writer makes no subdirs). */
void mode_outdir_abort(struct mode_outdir *d);

/* Removes a directory and the plain files in it (one level). Returns 0 or an errno value. */
int mode_rmdir_flat(const char *path);

/* Opens path for reading into *fd (closed by the caller). A directory is refused with
 * MODE_ENOINPUT "PATH: is a directory" (read(2) would fail later with EISDIR, an I/O error);
 * a path that cannot be opened is MODE_ENOINPUT, or MODE_EIO for a device error. */
int mode_open_read(const char *path, int *fd, struct mode_err *err);

/* Reads a whole file into a NUL-terminated malloc'ed buffer; fails with MODE_EDATA when it is
 * larger than max_bytes. Caller frees *out. */
int mode_read_file(const char *path, size_t max_bytes, char **out, size_t *len, struct mode_err *err);
/* The same for a file that must be a regular one (an image, a side file): a directory, a
 * device (/dev/zero), a FIFO or a socket is refused with MODE_ENOINPUT before a byte is read,
 * and a FIFO without a writer does not block the open. */
int mode_read_regular_file(const char *path, size_t max_bytes, char **out, size_t *len, struct mode_err *err);

/* Read-only private mapping of a whole file. An empty file gives data == NULL, size == 0. */
struct mode_map {
    void *data;
    size_t size;
};
int mode_map_file(const char *path, struct mode_map *m, struct mode_err *err);
void mode_unmap(struct mode_map *m);

/* "dir/name" into buf; MODE_EUSAGE when it does not fit. */
int mode_path_join(char *buf, size_t n, const char *dir, const char *name, struct mode_err *err);

#endif
