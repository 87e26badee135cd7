/* device.h — the --device option of the heavy filters: "cpu", "cuda", or "auto" (the default):
 * cuda when this build has CUDA kernels and a device is usable, else cpu. Asking for cuda where
 * it is unavailable is fatal: exit 69 (EX_UNAVAILABLE) with the reason (no kernels in this
 * build, no device, a driver too old); any other word is a usage error (64). */
#ifndef MODE_CLI_DEVICE_H
#define MODE_CLI_DEVICE_H

#include "../../lib/mode.h"

enum mode_device mode_cli_device(const char *arg);
const char *mode_device_name(enum mode_device d);
struct mode_rt;
/* Warnings, after the work: matrix products that fell back from the GPU to the CPU (ops.h),
 * with the first error; the resident MoE layer passes of rt (NULL: none) that ran on the CPU
 * for want of device memory (runtime.h). */
void mode_cli_device_report(const struct mode_rt *rt);

#endif
