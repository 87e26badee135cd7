/* device.h — the --device option of the heavy filters: "cpu", "cuda", or "auto" (the default):
 * cuda when this build has CUDA kernels and a device is usable, else cpu. Asking for cuda where
 * it is unavailable is fatal: exit 69 (EX_UNAVAILABLE) with the reason (no kernels in this
 * build, no device, a driver too old); any other word is a usage error (64). */
#ifndef MODE_CLI_DEVICE_H
#define MODE_CLI_DEVICE_H

#include "../../lib/mode.h"

enum mode_device mode_cli_device(const char *arg);
const char *mode_device_name(enum mode_device d);
/* A warning when matrix products fell back from the GPU to the CPU (ops.h), with the first error. */
void mode_cli_device_report(void);

#endif
