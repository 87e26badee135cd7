/* fuzz_tokenizer — lib/tokenizer.c. The first byte picks the part:
 *   even: the rest is text for emoji-vl's tokenizer; when it is valid UTF-8, decode(encode(text))
 *         must give back its NFC form exactly (byte-level BPE is lossless), else abort;
 *   odd:  the rest is a tokenizer.json to load (and, when it loads, to encode a fixed text). */
#include "../../lib/tokenizer.h"
#include "fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static struct mode_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *root = getenv("MODE_FIXTURES");
    char path[4096];
    struct mode_err err;
    snprintf(path, sizeof path, "%s/emoji-vl/model/tokenizer.json", root ? root : "tests/fixtures");
    if (mode_tokenizer_load(path, &tok, &err)) {
        fprintf(stderr, "fuzz_tokenizer: %s\n", err.msg);
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    struct mode_err err;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    if (!(data[0] & 1)) {
        if (mode_tokenizer_encode(tok, text, len, &ids, &n, &cap, &err)) {
            free(ids);
            return 0;
        }
        char *dec;
        size_t dl;
        if (mode_tokenizer_decode(tok, ids, n, false, &dec, &dl, &err)) abort(); /* its own ids must decode */
        /* the reference: NFC of each segment between added tokens equals NFC of the whole for the
         * texts that hold no added token; compare only then */
        if (!memchr(text, '<', len)) {
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (r >= 0 && ((size_t)r != dl || memcmp(nfc, dec, dl))) abort();
            free(nfc);
        }
        free(dec);
        free(ids);
        return 0;
    }
    const char *path = fuzz_as_file(data + 1, len, "tokenizer.json");
    struct mode_tokenizer *t;
    if (!mode_tokenizer_load(path, &t, &err)) {
        static const char s[] = "Hello world, <|im_end|> 123 \xe4\xbd\xa0\xe5\xa5\xbd";
        mode_tokenizer_encode(t, s, sizeof s - 1, &ids, &n, &cap, &err);
        free(ids);
        mode_tokenizer_free(t);
    }
    return 0;
}
