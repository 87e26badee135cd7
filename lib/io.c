/* io.c — checked writes, atomic output files and directories, bounded reads, mappings (io.h). */
#include "io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define WBUF_CAP (1u << 16)

void (*mode_outfile_tmp_hook)(const char *tmp, int add);
void (*mode_outfile_stale_hook)(const char *stale_tmp);

ssize_t mode_read_retry(int fd, void *p, size_t n)
{
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0 || errno != EINTR) return r;
    }
}

int mode_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t r = write(fd, c, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        c += r;
        n -= (size_t)r;
    }
    return 0;
}

int mode_wbuf_init(struct mode_wbuf *w, int fd, const char *name, struct mode_err *err)
{
    memset(w, 0, sizeof *w);
    w->fd = fd;
    snprintf(w->name, sizeof w->name, "%s", name);
    w->buf = malloc(WBUF_CAP);
    if (!w->buf) return mode_err_oom(err, WBUF_CAP, "an output buffer");
    w->cap = WBUF_CAP;
    return MODE_OK;
}

static int wbuf_drain(struct mode_wbuf *w, const void *p, size_t n)
{
    int e = mode_write_all(w->fd, p, n);
    if (e) return mode_err_set(&w->err, MODE_EIO, "%s: write failed: %s", w->name, strerror(e));
    w->written += n;
    return MODE_OK;
}

int mode_wbuf_flush(struct mode_wbuf *w)
{
    if (w->err.code) return w->err.code;
    if (w->len == 0) return MODE_OK;
    int rc = wbuf_drain(w, w->buf, w->len);
    w->len = 0;
    return rc;
}

int mode_wbuf_write(struct mode_wbuf *w, const void *p, size_t n)
{
    if (w->err.code) return w->err.code;
    if (w->len + n <= w->cap) {
        memcpy(w->buf + w->len, p, n);
        w->len += n;
        return MODE_OK;
    }
    int rc = mode_wbuf_flush(w);
    if (rc) return rc;
    if (n >= w->cap) return wbuf_drain(w, p, n); /* large payloads bypass the buffer */
    memcpy(w->buf, p, n);
    w->len = n;
    return MODE_OK;
}

int mode_wbuf_puts(struct mode_wbuf *w, const char *s) { return mode_wbuf_write(w, s, strlen(s)); }

int mode_wbuf_putc(struct mode_wbuf *w, char c) { return mode_wbuf_write(w, &c, 1); }

int mode_wbuf_printf(struct mode_wbuf *w, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return mode_err_set(&w->err, MODE_EINTERNAL, "%s: bad format", w->name);
    if ((size_t)n < sizeof small) return mode_wbuf_write(w, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) return mode_err_oom(&w->err, (size_t)n + 1, "formatted output");
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = mode_wbuf_write(w, big, (size_t)n);
    free(big);
    return rc;
}

int mode_wbuf_free(struct mode_wbuf *w, struct mode_err *err)
{
    int rc = mode_wbuf_flush(w);
    free(w->buf);
    w->buf = NULL;
    w->cap = w->len = 0;
    if (rc && err) *err = w->err;
    return rc;
}

/* ---- atomic output files -------------------------------------------------------------------- */

static void split_path(const char *path, char *dir, size_t dn, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, dn, ".");
        *base = path;
    } else if (slash == path) {
        snprintf(dir, dn, "/");
        *base = slash + 1;
    } else {
        snprintf(dir, dn, "%.*s", (int)(slash - path), path);
        *base = slash + 1;
    }
}

static mode_t current_umask(void)
{
    mode_t m = umask(022);
    umask(m);
    return m;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int e = fsync(fd) < 0 && errno != EINVAL && errno != EROFS ? errno : 0;
    close(fd);
    return e;
}

/* Removes the temporaries ".BASE.tmp-XXXXXX" in dir that no writer holds locked (io.h). A
 * writer holds its lock from just after it creates the file; one caught in between is seen
 * removed by the writer, which makes another (mode_outfile_open). */
static void remove_stale(const char *dir, const char *base)
{
    char prefix[NAME_MAX + 16];
    int pl = snprintf(prefix, sizeof prefix, ".%s.tmp-", base);
    if (pl < 0 || (size_t)pl >= sizeof prefix) return;
    DIR *d = opendir(dir);
    if (!d) return; /* then creating the temporary fails and says why */
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, (size_t)pl) || strlen(e->d_name) != (size_t)pl + 6) continue; /* mkstemp's XXXXXX */
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat st, now;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            fstatat(dirfd(d), e->d_name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_dev == st.st_dev && now.st_ino == st.st_ino &&
            unlinkat(dirfd(d), e->d_name, 0) == 0 && mode_outfile_stale_hook) {
            char p[4096 + NAME_MAX + 2];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            mode_outfile_stale_hook(p);
        }
        close(fd); /* releases the lock */
    }
    closedir(d);
}

/* Creates o->tmp (a mkstemp template) and locks it through a second descriptor, o->lock_fd, so
 * that closing o->fd before the rename keeps the lock. A concurrent run may take the new file
 * for a stale one in the moment before it is locked: then it is made again. Returns 0 or an
 * errno value. */
static int create_locked_tmp(struct mode_outfile *o)
{
    char templ[sizeof o->tmp];
    memcpy(templ, o->tmp, sizeof templ);
    for (int tries = 0; tries < 100; tries++) {
        memcpy(o->tmp, templ, sizeof templ);
        o->fd = mkostemp(o->tmp, O_CLOEXEC);
        if (o->fd < 0) return errno;
        o->lock_fd = open(o->tmp, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        if (o->lock_fd < 0) {
            int e = errno;
            close(o->fd);
            o->fd = -1;
            if (e == ENOENT) continue; /* removed already */
            unlink(o->tmp);
            return e;
        }
        if (flock(o->lock_fd, LOCK_EX | LOCK_NB) < 0) {
            if (errno != EWOULDBLOCK) { /* a file system without locks: no one removes temporaries there */
                close(o->lock_fd);
                o->lock_fd = -1;
                return 0;
            }
            unlink(o->tmp); /* held by a run that is removing it */
            close(o->lock_fd);
            close(o->fd);
            o->lock_fd = o->fd = -1;
            continue;
        }
        struct stat a, b;
        if (fstat(o->fd, &a) == 0 && lstat(o->tmp, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino) return 0;
        close(o->lock_fd); /* removed before the lock was taken */
        close(o->fd);
        o->lock_fd = o->fd = -1;
    }
    return EAGAIN;
}

int mode_outfile_open(struct mode_outfile *o, const char *path, struct mode_err *err)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
    o->lock_fd = -1;
    if (strcmp(path, "-") == 0) {
        o->fd = 1;
        o->is_stdout = 1;
        snprintf(o->path, sizeof o->path, "<stdout>");
        return MODE_OK;
    }
    if (strlen(path) + 32 >= sizeof o->path)
        return mode_err_set(err, MODE_ECANTCREAT, "%s: path too long", path);
    snprintf(o->path, sizeof o->path, "%s", path);
    char dir[4096];
    const char *base;
    split_path(path, dir, sizeof dir, &base);
    if (!*base) return mode_err_set(err, MODE_ECANTCREAT, "%s: not a file name", path);
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return mode_err_set(err, MODE_ECANTCREAT, "%s: is a directory", path);
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        /* -o /dev/null, a FIFO: a temporary renamed over it would replace the node itself (run as
         * root, `-o /dev/null` turned /dev/null into a regular file) */
        o->fd = open(path, O_WRONLY | O_CLOEXEC);
        if (o->fd < 0) return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot open: %s", path, strerror(errno));
        o->in_place = 1;
        return MODE_OK;
    }
    if (snprintf(o->tmp, sizeof o->tmp, "%s/.%s.tmp-XXXXXX", dir, base) >= (int)sizeof o->tmp) {
        o->tmp[0] = 0;
        return mode_err_set(err, MODE_ECANTCREAT, "%s: path too long", path);
    }
    remove_stale(dir, base);
    int e = create_locked_tmp(o);
    if (e) {
        o->tmp[0] = 0;
        return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot create: %s", path, strerror(e));
    }
    if (mode_outfile_tmp_hook) mode_outfile_tmp_hook(o->tmp, 1);
    if (fchmod(o->fd, 0666 & ~current_umask()) < 0) {
        e = errno;
        mode_outfile_abort(o);
        return mode_err_set(err, MODE_ECANTCREAT, "%s: chmod: %s", path, strerror(e));
    }
    return MODE_OK;
}

int mode_outfile_commit(struct mode_outfile *o, struct mode_err *err)
{
    if (o->is_stdout) return MODE_OK;
    if (o->in_place) {
        int rc = o->fd >= 0 && close(o->fd) < 0 ? mode_err_set(err, MODE_EIO, "%s: close: %s", o->path, strerror(errno)) : MODE_OK;
        o->fd = -1;
        return rc;
    }
    if (o->fd < 0 || !o->tmp[0]) return mode_err_set(err, MODE_EINTERNAL, "%s: not open", o->path);
    if (fsync(o->fd) < 0 && errno != EINVAL) {
        int e = errno;
        mode_outfile_abort(o);
        return mode_err_set(err, MODE_EIO, "%s: fsync: %s", o->path, strerror(e));
    }
    if (close(o->fd) < 0) {
        int e = errno;
        o->fd = -1;
        mode_outfile_abort(o);
        return mode_err_set(err, MODE_EIO, "%s: close: %s", o->path, strerror(e));
    }
    o->fd = -1;
    if (rename(o->tmp, o->path) < 0) {
        int e = errno;
        mode_outfile_abort(o);
        return mode_err_set(err, MODE_ECANTCREAT, "%s: rename: %s", o->path, strerror(e));
    }
    if (mode_outfile_tmp_hook) mode_outfile_tmp_hook(o->tmp, 0);
    o->tmp[0] = 0;
    if (o->lock_fd >= 0) close(o->lock_fd); /* renamed: no longer a temporary to guard */
    o->lock_fd = -1;
    char dir[4096];
    const char *base;
    split_path(o->path, dir, sizeof dir, &base);
    int e = fsync_dir(dir);
    if (e) return mode_err_set(err, MODE_EIO, "%s: fsync: %s", dir, strerror(e));
    return MODE_OK;
}

void mode_outfile_abort(struct mode_outfile *o)
{
    if (o->is_stdout) return;
    if (o->fd >= 0) close(o->fd);
    o->fd = -1;
    if (o->tmp[0]) {
        unlink(o->tmp); /* before it leaves the hook's list: a signal in between still removes it */
        if (mode_outfile_tmp_hook) mode_outfile_tmp_hook(o->tmp, 0);
    }
    o->tmp[0] = 0;
    if (o->lock_fd >= 0) close(o->lock_fd);
    o->lock_fd = -1;
}

/* ---- atomic output directories -------------------------------------------------------------- */

int mode_rmdir_flat(const char *path)
{
    DIR *d = opendir(path);
    if (!d) return errno;
    struct dirent *e;
    char p[4096 + 256];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        unlink(p);
    }
    closedir(d);
    return rmdir(path) < 0 ? errno : 0;
}

int mode_outdir_begin(struct mode_outdir *d, const char *path, int replace, struct mode_err *err)
{
    memset(d, 0, sizeof *d);
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    if (len == 0 || len + 32 >= sizeof d->path)
        return mode_err_set(err, MODE_ECANTCREAT, "%s: bad output directory name", path);
    snprintf(d->path, sizeof d->path, "%.*s", (int)len, path);
    d->replace = replace;
    struct stat st;
    if (lstat(d->path, &st) == 0) {
        if (!replace)
            return mode_err_set(err, MODE_ECANTCREAT, "%s: already exists (not replacing it)", d->path);
        if (!S_ISDIR(st.st_mode))
            return mode_err_set(err, MODE_ECANTCREAT, "%s: exists and is not a directory", d->path);
    }
    if (snprintf(d->tmp, sizeof d->tmp, "%s.tmp-XXXXXX", d->path) >= (int)sizeof d->tmp) {
        d->tmp[0] = 0;
        return mode_err_set(err, MODE_ECANTCREAT, "%s: path too long", d->path);
    }
    if (!mkdtemp(d->tmp)) {
        int e = errno;
        d->tmp[0] = 0;
        return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot create: %s", d->path, strerror(e));
    }
    if (chmod(d->tmp, 0777 & ~current_umask()) < 0) {
        int e = errno;
        mode_outdir_abort(d);
        return mode_err_set(err, MODE_ECANTCREAT, "%s: chmod: %s", d->path, strerror(e));
    }
    return MODE_OK;
}

int mode_path_join(char *buf, size_t n, const char *dir, const char *name, struct mode_err *err)
{
    int k = snprintf(buf, n, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= n) return mode_err_set(err, MODE_EUSAGE, "%s/%s: path too long", dir, name);
    return MODE_OK;
}

int mode_outdir_file(const struct mode_outdir *d, const char *name, char *buf, size_t n,
                     struct mode_err *err)
{
    if (strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return mode_err_set(err, MODE_EINTERNAL, "%s: bad file name in output directory", name);
    return mode_path_join(buf, n, d->tmp, name, err);
}

int mode_outdir_write(const struct mode_outdir *d, const char *name, const void *p, size_t n,
                      struct mode_err *err)
{
    char path[8192];
    int rc = mode_outdir_file(d, name, path, sizeof path, err);
    if (rc) return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return mode_err_set(err, MODE_ECANTCREAT, "%s/%s: %s", d->path, name, strerror(errno));
    int e = mode_write_all(fd, p, n);
    if (!e && fsync(fd) < 0 && errno != EINVAL) e = errno;
    if (close(fd) < 0 && !e) e = errno;
    if (e) return mode_err_set(err, MODE_EIO, "%s/%s: write failed: %s", d->path, name, strerror(e));
    return MODE_OK;
}

int mode_outdir_commit(struct mode_outdir *d, struct mode_err *err)
{
    int e = fsync_dir(d->tmp);
    if (e) return mode_err_set(err, MODE_EIO, "%s: fsync: %s", d->path, strerror(e));
    char old[4096 + 64] = "";
    struct stat st;
    if (lstat(d->path, &st) == 0) {
        if (!d->replace) return mode_err_set(err, MODE_ECANTCREAT, "%s: appeared while writing", d->path);
        snprintf(old, sizeof old, "%s.old-%ld", d->path, (long)getpid());
        if (rename(d->path, old) < 0)
            return mode_err_set(err, MODE_ECANTCREAT, "%s: cannot move aside: %s", d->path, strerror(errno));
    }
    if (rename(d->tmp, d->path) < 0) {
        int e2 = errno;
        if (old[0]) rename(old, d->path); /* put the previous one back */
        return mode_err_set(err, MODE_ECANTCREAT, "%s: rename: %s", d->path, strerror(e2));
    }
    d->committed = 1;
    d->tmp[0] = 0;
    if (old[0]) mode_rmdir_flat(old);
    char dir[4096];
    const char *base;
    split_path(d->path, dir, sizeof dir, &base);
    e = fsync_dir(dir);
    if (e) return mode_err_set(err, MODE_EIO, "%s: fsync: %s", dir, strerror(e));
    return MODE_OK;
}

void mode_outdir_abort(struct mode_outdir *d)
{
    if (d->tmp[0]) mode_rmdir_flat(d->tmp);
    d->tmp[0] = 0;
}

/* ---- reads ---------------------------------------------------------------------------------- */

static int open_err(const char *path, int e, struct mode_err *err)
{
    int code = (e == ENOENT || e == EACCES || e == ENOTDIR || e == ELOOP) ? MODE_ENOINPUT : MODE_EIO;
    return mode_err_set(err, code, "%s: %s", path, strerror(e));
}

int mode_open_read(const char *path, int *fd, struct mode_err *err)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        int e = errno;
        return mode_err_set(err, e == EIO ? MODE_EIO : MODE_ENOINPUT, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(*fd, &st) < 0) {
        int e = errno;
        close(*fd);
        *fd = -1;
        return mode_err_set(err, MODE_EIO, "%s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(*fd);
        *fd = -1;
        return mode_err_set(err, MODE_ENOINPUT, "%s: is a directory", path);
    }
    return MODE_OK;
}

static const char *file_type(mode_t m)
{
    if (S_ISDIR(m)) return "a directory";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    return "not a plain file";
}

static int read_file(const char *path, size_t max_bytes, bool regular_only, char **out, size_t *len, struct mode_err *err)
{
    *out = NULL;
    *len = 0;
    /* O_NONBLOCK when only a regular file will do: a FIFO without a writer would block the open
     * itself before it could be refused */
    int fd = open(path, O_RDONLY | O_CLOEXEC | (regular_only ? O_NONBLOCK : 0));
    if (fd < 0) return open_err(path, errno, err);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return open_err(path, e, err);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return mode_err_set(err, MODE_ENOINPUT, "%s: is a directory", path);
    }
    if (regular_only && !S_ISREG(st.st_mode)) {
        close(fd);
        return mode_err_set(err, MODE_ENOINPUT, "%s: not a regular file (%s)", path, file_type(st.st_mode));
    }
    if (regular_only) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); /* reads that block, as without it */
    /* a regular file says its size: refused before anything is allocated; a pipe is read in
     * doubling steps that stop one byte past the limit */
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > max_bytes) {
        close(fd);
        return mode_err_set(err, MODE_EDATA, "%s: %llu bytes, larger than the limit of %zu bytes", path,
                            (unsigned long long)st.st_size, max_bytes);
    }
    if (max_bytes > SIZE_MAX / 4) max_bytes = SIZE_MAX / 4; /* max_bytes + 1 below stays finite */
    size_t cap = S_ISREG(st.st_mode) ? (size_t)st.st_size + 1 : 4096;
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return mode_err_oom(err, cap + 1, path);
    }
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            if (cap > max_bytes) break;
            size_t nc = cap > max_bytes / 2 ? max_bytes + 1 : cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return mode_err_oom(err, nc + 1, path);
            }
            buf = nb;
            cap = nc;
        }
        ssize_t r = mode_read_retry(fd, buf + n, cap - n);
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return mode_err_set(err, MODE_EIO, "%s: read failed: %s", path, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (n > max_bytes) {
        free(buf);
        return mode_err_set(err, MODE_EDATA, "%s: larger than the limit of %zu bytes", path, max_bytes);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return MODE_OK;
}

int mode_read_file(const char *path, size_t max_bytes, char **out, size_t *len, struct mode_err *err)
{
    return read_file(path, max_bytes, false, out, len, err);
}

int mode_read_regular_file(const char *path, size_t max_bytes, char **out, size_t *len, struct mode_err *err)
{
    return read_file(path, max_bytes, true, out, len, err);
}

int mode_map_file(const char *path, struct mode_map *m, struct mode_err *err)
{
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return open_err(path, errno, err);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return open_err(path, e, err);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return mode_err_set(err, MODE_ENOINPUT, "%s: is a directory", path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mode_err_set(err, MODE_ENOINPUT, "%s: not a regular file (%s)", path, file_type(st.st_mode));
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            if (e == ENOMEM) return mode_err_set(err, MODE_EUNAVAILABLE, "out of memory (%lld bytes of address space to map %s)", (long long)st.st_size, path);
            return mode_err_set(err, MODE_EIO, "%s: mmap: %s", path, strerror(e));
        }
        m->data = p;
        m->size = (size_t)st.st_size;
    }
    close(fd);
    return MODE_OK;
}

void mode_unmap(struct mode_map *m)
{
    if (m->data) munmap(m->data, m->size);
    m->data = NULL;
    m->size = 0;
}
