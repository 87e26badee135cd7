/* cli.h — what every filter's main.c shares: the program name, fatal errors with the documented
 * exit codes, standard descriptors checked at start, temporary outputs removed on SIGINT/SIGTERM,
 * a checked close of stdout at exit, and progress lines on stderr when it is a terminal.
 *
 * This is the only place (besides main.c files) that prints or exits; libmode-core never does.
 */
#ifndef MODE_CLI_H
#define MODE_CLI_H

#include "../../lib/mode.h"

#include <stdbool.h>
#include <stdnoreturn.h>

extern const char *mode_prog;

/* Records the program name; makes sure fds 0 and 2 are open (on /dev/null if not) and fails with
 * exit 74 when stdout is closed; installs SIGINT/SIGTERM/SIGHUP handlers that remove registered
 * temporary files and directories and then die of the same signal. */
void mode_cli_init(const char *prog);

/* "prog: message" on stderr, temporaries removed, buffered output flushed, _exit(code): no library
 * destructor runs, so that a thread stuck in a library (OpenBLAS retrying a failed mapping)
 * cannot keep the process from ending. mode_cli_init makes a normal exit end the same way. */
noreturn void mode_die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Dies with err's message and code. */
noreturn void mode_fail(const struct mode_err *err);
/* The process's threads, --threads (0: the CPUs it may run on; lib/pool.h), and OpenBLAS's buffers
 * mapped now (mode_ops_blas_ready, and each worker's at its start): dies with 69 when the address
 * space is too small, instead of hanging in a later BLAS call. Call before the first BLAS call,
 * from the main thread. */
void mode_cli_blas(int64_t threads);
/* Warning line on stderr ("prog: warning: ..."). */
void mode_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Temporary paths removed if the program dies of a signal or through mode_die. A directory is
 * removed with the plain files in it. The strings are copied. */
void mode_cli_tmp_add(const char *path, bool is_dir);
void mode_cli_tmp_remove(const char *path);

/* An output file written atomically (io.h), its temporary registered for removal on a signal;
 * dies with the documented exit code when it cannot be created. commit renames it into place
 * (dies on failure) and unregisters the temporary. */
struct mode_outfile;
void mode_cli_outfile_open(struct mode_outfile *out, const char *path);
void mode_cli_outfile_commit(struct mode_outfile *out);

/* Closes stdout and reports a failure (a full disk, a closed pipe) with exit 74. Call last. */
void mode_cli_close_stdout(void);

/* Progress of long work on stderr, chosen by --progress (mode_cli_progress) or else the
 * environment's MODE_PROGRESS: "auto" (the default: "tty" when stderr is a terminal, else "log"),
 * "tty" (one line rewritten in place), "log" (a whole line at the first call, then at most every
 * MODE_PROGRESS_SECONDS seconds, 10 by default, and at the end), "off". Each line reads
 * "prog: WHAT, ELAPSED[, ETA T]", the ETA from the fraction done and the time since the first call.
 * mode_progress: WHAT is "what done/total (P%)", or "what done" when total is 0 (unknown: no ETA);
 * done == total ends it. mode_progressf: frac in [0, 1] (0: unknown), last ends it. */
void mode_cli_progress(const char *arg); /* dies with 64 on a value other than the four */
void mode_progress(const char *what, uint64_t done, uint64_t total);
void mode_progressf(double frac, bool last, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Parses "A-B" or "A" (inclusive, non-negative) into lo/hi; false on bad syntax. */
bool mode_parse_range(const char *s, int64_t *lo, int64_t *hi);

#endif
