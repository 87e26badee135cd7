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
#include <time.h>
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
    if (mode_ops_blas_ready(&err) || mode_ops_threads((int)threads, &err)) mode_fail(&err);
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

/* ---- progress ---------------------------------------------------------------------------- */

static enum { PROGRESS_AUTO, PROGRESS_TTY, PROGRESS_LOG, PROGRESS_OFF } progress_mode = PROGRESS_AUTO;
static int progress_resolved = -1; /* the mode in effect once auto is decided: TTY, LOG or OFF */
static double progress_t0, progress_last = -1, progress_every = 10;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int progress_parse(const char *v)
{
    if (!strcmp(v, "auto")) return PROGRESS_AUTO;
    if (!strcmp(v, "tty")) return PROGRESS_TTY;
    if (!strcmp(v, "log")) return PROGRESS_LOG;
    if (!strcmp(v, "off")) return PROGRESS_OFF;
    return -1;
}

void mode_cli_progress(const char *arg)
{
    int m = progress_parse(arg);
    if (m < 0) mode_die(MODE_EUSAGE, "--progress: '%s' is not auto, tty, log or off", arg);
    progress_mode = m;
    progress_resolved = -1;
}

static int progress_effective(void)
{
    if (progress_resolved >= 0) return progress_resolved;
    int m = progress_mode;
    const char *env = getenv("MODE_PROGRESS");
    if (m == PROGRESS_AUTO && env && *env) {
        int e = progress_parse(env);
        if (e < 0) mode_die(MODE_EUSAGE, "MODE_PROGRESS: '%s' is not auto, tty, log or off", env);
        m = e;
    }
    const char *every = getenv("MODE_PROGRESS_SECONDS");
    if (every && *every) {
        char *end;
        double v = strtod(every, &end);
        if (*end || !(v > 0) || v > 86400) mode_die(MODE_EUSAGE, "MODE_PROGRESS_SECONDS: '%s' is not a number of seconds in (0, 86400]", every);
        progress_every = v;
    }
    if (m == PROGRESS_AUTO) m = isatty(2) ? PROGRESS_TTY : PROGRESS_LOG;
    return progress_resolved = m;
}

/* "12s", "3m05s", "1h02m" */
static void fmt_duration(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e8) s = 0;
    long t = (long)(s + 0.5);
    if (t < 60) snprintf(buf, n, "%lds", t);
    else if (t < 3600) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
}

void mode_progressf(double frac, bool last, const char *fmt, ...)
{
    static bool ended; /* the last line of this piece of work was printed */
    int m = progress_effective();
    if (m == PROGRESS_OFF || (last && ended)) return;
    ended = last;
    const double t = now_s();
    if (progress_last < 0) progress_t0 = t, progress_last = t - progress_every; /* the first call prints at once */
    if (m == PROGRESS_LOG && !last && t - progress_last < progress_every) return;
    progress_last = t;
    char what[512], el[32], eta[32] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fmt_duration(el, sizeof el, t - progress_t0);
    if (frac > 0 && frac < 1 && !last) {
        char d[24];
        fmt_duration(d, sizeof d, (t - progress_t0) * (1 - frac) / frac);
        snprintf(eta, sizeof eta, ", ETA %s", d);
    }
    if (m == PROGRESS_TTY) fprintf(stderr, "\r%s: %s, %s%s\033[K%s", mode_prog, what, el, eta, last ? "\n" : "");
    else fprintf(stderr, "%s: %s, %s%s\n", mode_prog, what, el, eta);
    fflush(stderr);
}

void mode_progress(const char *what, uint64_t done, uint64_t total)
{
    const bool last = total && done >= total;
    if (!total && !done) return; /* nothing yet */
    if (total)
        mode_progressf((double)done / (double)total, last, "%s %llu/%llu (%.0f%%)", what, (unsigned long long)done, (unsigned long long)total,
                       100.0 * (double)done / (double)total);
    else
        mode_progressf(0, false, "%s %llu", what, (unsigned long long)done);
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
