/* fuzz_index — model.safetensors.index.json (lib/safetensors.c: mode_st_set_open) in a directory
 * holding two small valid shards, a.safetensors (tensor "x") and b.safetensors (tensor "y"). */
#include "../../lib/safetensors.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static void shard(const char *name, const char *tensor)
{
    char path[512], hdr[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int n = snprintf(hdr, sizeof hdr, "{\"%s\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", tensor);
    FILE *f = fopen(path, "wb");
    uint64_t len = (uint64_t)n;
    fwrite(&len, 8, 1, f);
    fwrite(hdr, 1, (size_t)n, f);
    fwrite("\0\0\x80?\0\0\0@", 1, 8, f);
    fclose(f);
}

/* the directory goes when the run ends (every make check made one in /tmp and left it) */
static void cleanup(void)
{
    const char *names[] = {"a.safetensors", "b.safetensors", "model.safetensors.index.json"};
    char path[512];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/mode-fuzz-index-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) abort();
    atexit(cleanup);
    shard("a.safetensors", "x");
    shard("b.safetensors", "y");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    struct mode_st_set s;
    struct mode_err err;
    if (!mode_st_set_open(&s, dir, &err)) mode_st_set_close(&s);
    return 0;
}
