/* device.c — --device for the heavy filters (device.h). */
#include "device.h"

#include "../../kernels/mode_cuda.h"
#include "../../lib/ops.h"
#include "../../lib/runtime.h"
#include "cli.h"

#include <string.h>

enum mode_device mode_cli_device(const char *arg)
{
    struct mode_err err = {0};
    if (!arg || !strcmp(arg, "auto")) return mode_cuda_available(&err) == MODE_OK ? MODE_DEVICE_CUDA : MODE_DEVICE_CPU;
    if (!strcmp(arg, "cpu")) return MODE_DEVICE_CPU;
    if (!strcmp(arg, "cuda")) {
        if (mode_cuda_available(&err)) mode_die(MODE_EUNAVAILABLE, "--device cuda: %s", err.msg);
        return MODE_DEVICE_CUDA;
    }
    mode_die(MODE_EUSAGE, "--device: '%s' is not cpu, cuda or auto", arg);
}

const char *mode_device_name(enum mode_device d) { return d == MODE_DEVICE_CUDA ? "cuda" : "cpu"; }

void mode_cli_device_report(const struct mode_rt *rt)
{
    struct mode_err err = {0};
    int64_t n = 0;
    if (mode_ops_device_status(&n, &err)) mode_warn("%lld matrix products fell back to the CPU after a GPU failure: %s", (long long)n, err.msg);
    if (rt && rt->n_resident_fallback)
        mode_warn("%lld of %lld MoE layer passes ran on the CPU: the GPU had no memory to hold them (smaller batches would fit)",
                  (long long)rt->n_resident_fallback, (long long)(rt->n_resident + rt->n_resident_fallback));
    if (rt && rt->n_vision_fallback)
        mode_warn("the vision blocks of %lld batches ran on the CPU: the GPU had no memory to hold them (smaller batches would fit)",
                  (long long)rt->n_vision_fallback);
}
