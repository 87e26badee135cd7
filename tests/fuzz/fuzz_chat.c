/* fuzz_chat — lib/chat.c: one input line (any bytes, parsed as JSON as mode-tokenize does) to a
 * sample with emoji-vl's tokenizer and config; image paths resolve in the calibration set's
 * directory, so a line may name a real image. The sample is then truncated to a length taken
 * from its own size. */
#include "../../lib/chat.h"
#include "../../lib/config.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>

static struct mode_tokenizer *tok;
static struct mode_config cfg;
static struct mode_chat_ctx ctx;
static char root[4096];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *fx = getenv("MODE_FIXTURES");
    char path[4096];
    struct mode_err err;
    snprintf(path, sizeof path, "%s/emoji-vl/model/tokenizer.json", fx ? fx : "tests/fixtures");
    if (mode_tokenizer_load(path, &tok, &err)) goto fail;
    snprintf(path, sizeof path, "%s/emoji-vl/model/config.json", fx ? fx : "tests/fixtures");
    if (mode_config_load(&cfg, path, &err)) goto fail;
    snprintf(root, sizeof root, "%s/emoji-vl/calib", fx ? fx : "tests/fixtures");
    if (mode_chat_init(&ctx, tok, &cfg, 1024, 16384, root, &err)) goto fail;
    return 0;
fail:
    fprintf(stderr, "fuzz_chat: %s\n", err.msg);
    exit(1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t je;
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (!j) return 0;
    struct mode_chat_sample s;
    struct mode_err err;
    if (!mode_chat_sample(&ctx, j, &s, &err)) {
        for (size_t i = 0; i < s.n_tok; i++)
            if (s.score[i] > 1 || s.modality[i] > 1) abort();
        mode_chat_truncate(&s, 1 + size % 97, &ctx);
        mode_chat_sample_free(&s);
    }
    json_decref(j);
    return 0;
}
