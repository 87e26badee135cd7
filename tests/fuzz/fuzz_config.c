/* fuzz_config — config.json and preprocessor_config.json (lib/config.c) from the same bytes. */
#include "../../lib/config.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_as_file(data, size, "config");
    struct mode_config c;
    struct mode_preproc p;
    struct mode_err err;
    int crc = mode_config_load(&c, path, &err);
    int prc = mode_preproc_load(&p, path, &err);
    if (!crc && !prc) mode_preproc_check(&p, &c, path, &err);
    if (!crc) mode_config_free(&c);
    return 0;
}
