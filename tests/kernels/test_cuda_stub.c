/* test_cuda_stub — without a usable CUDA device (or without CUDA compiled in) every entry point
 * reports "unavailable" (MODE_EUNAVAILABLE, exit 69 in a filter) instead of failing otherwise. */
#include "../../kernels/mode_cuda.h"
#include "tap.h"

int main(void)
{
    struct mode_err err = {0};
    if (mode_cuda_available(&err) == MODE_OK) tap_skip_all("a CUDA device is present: the unavailable path is not reachable");
    is_int(err.code, MODE_EUNAVAILABLE, "mode_cuda_available: unavailable");
    has_str(err.msg, "CUDA is unavailable", "... says so");
    diag("%s (CUDA %s compiled in)", err.msg, mode_cuda_built() ? "is" : "is not");
    void *p = (void *)1;
    is_int(mode_cuda_malloc(&p, 16, &err), MODE_EUNAVAILABLE, "malloc: unavailable");
    is_int(mode_cuda_blas_init(&err), MODE_EUNAVAILABLE, "blas_init: unavailable");
    float x;
    uint16_t h = 0x3f80;
    is_int(mode_convert_cuda(MODE_BF16, &h, 1, &x, NULL, &err), MODE_EUNAVAILABLE, "convert: unavailable");
    has_str(err.msg, "unavailable", "... with a message");
    char desc[64];
    is_int(mode_cuda_describe(desc, sizeof desc, &err), MODE_EUNAVAILABLE, "describe: unavailable");
    return tap_done();
}
