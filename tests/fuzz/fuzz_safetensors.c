/* fuzz_safetensors — one safetensors file (lib/safetensors.c): header length, JSON, entries,
 * ranges, overlaps; every float tensor of the accepted files is converted to f32. */
#include "../../lib/safetensors.h"
#include "fuzz.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mode_st_file f;
    struct mode_err err;
    if (mode_st_open(&f, fuzz_as_file(data, size, "st"), &err)) return 0;
    for (size_t i = 0; i < f.n_tensors; i++) {
        const struct mode_st_tensor *t = &f.tensors[i];
        if (t->numel > (1u << 20)) continue;
        float *out = malloc((size_t)t->numel * sizeof *out + 4);
        mode_st_to_f32(t, out, &err);
        free(out);
    }
    mode_st_close(&f);
    return 0;
}
