/* stale.h — the filters' report of stale temporaries (io.h, mode_outfile_stale_hook): a
 * temporary output file left by an earlier run that was killed (SIGKILL, a crash), which
 * mode_outfile_open removes before writing the same output again. */
#ifndef MODE_STALE_H
#define MODE_STALE_H

/* Prints "prog: warning: removed PATH, the temporary file of an earlier run that was killed"
 * on stderr. Installed as mode_outfile_stale_hook by mode_cli_init (cli.c). */
void mode_cli_stale_report(const char *stale_tmp);

#endif
