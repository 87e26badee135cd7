/* cli.c — shared plumbing of the filters: errors, exit codes, signals, stdout hygiene (cli.h). */
#include "cli.h"

#include "../../lib/io.h"
#include "../../lib/ops.h"
#include "stale.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

const char *mode_prog = "mode";

#define MAX_TMP 16
static struct {
    char path[4096];
    volatile sig_atomic_t used;
    bool is_dir;
} tmps[MAX_TMP];

void mode_cli_tmp_add(const char *path, bool is_dir)
{
    for (int i = 0; i < MAX_TMP; i++)
        if (tmps[i].used && !strcmp(tmps[i].path, path)) return; /* already listed */
    for (int i = 0; i < MAX_TMP; i++)
        if (!tmps[i].used) {
            snprintf(tmps[i].path, sizeof tmps[i].path, "%s", path);
            tmps[i].is_dir = is_dir;
            tmps[i].used = 1;
            return;
        }
}

void mode_cli_tmp_remove(const char *path)
{
    for (int i = 0; i < MAX_TMP; i++)
        if (tmps[i].used && !strcmp(tmps[i].path, path)) tmps[i].used = 0;
}

static void remove_tmps(void)
{
    for (int i = 0; i < MAX_TMP; i++) {
        if (!tmps[i].used) continue;
        if (tmps[i].is_dir) mode_rmdir_flat(tmps[i].path);
        else unlink(tmps[i].path);
        tmps[i].used = 0;
    }
}

/* On a signal: remove temporaries with async-signal-safe calls only (a directory's files are
 * unlinked by name through a fixed buffer: opendir is not safe, so the writers keep their
 * directories flat and we rmdir after unlinking what getdents returns). */
static void on_signal(int sig)
{
    for (int i = 0; i < MAX_TMP; i++) {
        if (!tmps[i].used) continue;
        if (!tmps[i].is_dir) {
            unlink(tmps[i].path);
            continue;
        }
        int fd = open(tmps[i].path, O_RDONLY | O_DIRECTORY);
        if (fd >= 0) {
            char buf[4096];
            long n;
            while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
                for (long off = 0; off < n;) {
                    struct linux_dirent64 {
                        unsigned long long ino;
                        long long off;
                        unsigned short reclen;
                        unsigned char type;
                        char name[];
                    } *d = (void *)(buf + off);
                    if (strcmp(d->name, ".") && strcmp(d->name, "..")) unlinkat(fd, d->name, 0);
                    off += d->reclen;
                }
            }
            close(fd);
        }
        rmdir(tmps[i].path);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

/* io.h's hook: every output file's temporary, also those the library opens by path */
static void tmp_hook(const char *tmp, int add)
{
    if (add) mode_cli_tmp_add(tmp, false);
    else mode_cli_tmp_remove(tmp);
}

/* The end of every run, through exit() or a return from main: buffered output flushed, then
 * _exit. Without this, exit() would go on to the libraries' destructors, and OpenBLAS's joins its
 * worker threads — one that failed to map its buffer (the address space exhausted) retries it
 * forever, and the process would spin at 100% CPU instead of ending. Under AddressSanitizer the
 * destructors run, so that its leak check sees the normal end of the run. */
static void end_run(int status, void *arg)
{
    (void)arg;
#ifndef __SANITIZE_ADDRESS__
    fflush(NULL);
    _exit(status);
#else
    (void)status;
#endif
}

void mode_cli_init(const char *prog)
{
    mode_prog = prog;
    on_exit(end_run, NULL);
    /* 0, 1, 2 in this order, since open() takes the lowest free descriptor: a closed stdout is
     * held by /dev/null while stderr is checked (stderr's /dev/null would otherwise land on 1,
     * the data would vanish into it and stderr would stay closed for the next file opened), and
     * is then refused */
    if (fcntl(0, F_GETFD) < 0 && errno == EBADF) open("/dev/null", O_RDONLY);
    bool no_stdout = fcntl(1, F_GETFD) < 0 && errno == EBADF;
    if (no_stdout) open("/dev/null", O_WRONLY);
    if (fcntl(2, F_GETFD) < 0 && errno == EBADF) open("/dev/null", O_WRONLY);
    if (no_stdout) mode_die(MODE_EIO, "stdout: %s", strerror(EBADF));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    mode_outfile_tmp_hook = tmp_hook;
    mode_outfile_stale_hook = mode_cli_stale_report;
}

void mode_die(int code, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", mode_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    remove_tmps();
    fflush(NULL);
    _exit(code); /* no destructors: a thread stuck in a library must not hold the exit (end_run) */
}

void mode_cli_blas(int64_t threads)
{
    struct mode_err err = {0};
    mode_ops_threads((int)threads);
    if (mode_ops_blas_ready(&err)) mode_fail(&err);
}

void mode_fail(const struct mode_err *err)
{
    mode_die(err->code ? err->code : MODE_EINTERNAL, "%s", err->msg[0] ? err->msg : "failed");
}

void mode_warn(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: warning: ", mode_prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void mode_cli_close_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) mode_die(MODE_EIO, "stdout: write failed: %s", strerror(errno));
    if (close(1) < 0 && errno != EBADF) mode_die(MODE_EIO, "stdout: %s", strerror(errno));
}

void mode_progress(const char *what, uint64_t done, uint64_t total)
{
    static int tty = -1;
    if (tty < 0) tty = isatty(2);
    if (!tty) return;
    fprintf(stderr, "\r%s: %s %llu/%llu", mode_prog, what, (unsigned long long)done, (unsigned long long)total);
    if (done >= total) fputc('\n', stderr);
    fflush(stderr);
}

bool mode_parse_range(const char *s, int64_t *lo, int64_t *hi)
{
    char *end;
    errno = 0;
    long long a = strtoll(s, &end, 10);
    if (errno || end == s || a < 0) return false;
    long long b = a;
    if (*end == '-') {
        const char *t = end + 1;
        b = strtoll(t, &end, 10);
        if (errno || end == t || b < a) return false;
    }
    if (*end) return false;
    *lo = a;
    *hi = b;
    return true;
}

/* the temporary is listed for removal on a signal by the hook set in mode_cli_init */
void mode_cli_outfile_open(struct mode_outfile *out, const char *path)
{
    struct mode_err e = {0};
    if (mode_outfile_open(out, path, &e)) mode_fail(&e);
}

void mode_cli_outfile_commit(struct mode_outfile *out)
{
    struct mode_err e = {0};
    if (mode_outfile_commit(out, &e)) mode_fail(&e);
}
