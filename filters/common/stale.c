/* stale.c — says which stale temporaries an output file's open removed (stale.h); mode_cli_init
 * points lib/io.c's hook at it. */
#include "stale.h"
#include "cli.h"

#include "../../lib/io.h"

void mode_cli_stale_report(const char *stale_tmp)
{
    mode_warn("removed %s, the temporary file of an earlier run that was killed", stale_tmp);
}
