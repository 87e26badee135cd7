/* stale.c — says which stale temporaries an output file's open removed (stale.h). Every filter
 * links filters/common/, so the hook is set here, before main, for all of them. */
#include "stale.h"
#include "cli.h"

#include "../../lib/io.h"

void mode_cli_stale_report(const char *stale_tmp)
{
    mode_warn("removed %s, the temporary file of an earlier run that was killed", stale_tmp);
}

__attribute__((constructor)) static void stale_init(void) { mode_outfile_stale_hook = mode_cli_stale_report; }
