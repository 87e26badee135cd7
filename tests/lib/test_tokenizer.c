/* test_tokenizer — ids equal those of the Hugging Face tokenizers library for every line of
 * tests/fixtures/tokenizer/encode_golden.jsonl, with the real Qwen3 tokenizer (151k merges) and
 * emoji-vl's; decoding gives the reference's decoded text back; unsupported or broken files are
 * refused with a message. */
#include "../../lib/json.h"
#include "../../lib/tokenizer.h"
#include "tap.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path_buf[4096];

static const char *build_fixture(const char *rel)
{
    const char *d = getenv("MODE_BUILD_FIXTURES");
    snprintf(path_buf, sizeof path_buf, "%s/%s", d ? d : "build/fixtures", rel);
    return path_buf;
}

static int ids_equal(const int32_t *a, size_t n, json_t *want)
{
    if (!json_is_array(want) || json_array_size(want) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != a[i]) return 0;
    return 1;
}

static void golden(const struct mode_tokenizer *tok, const char *ids_key, const char *dec_key, const char *name)
{
    FILE *f = fopen(fixture("tokenizer/encode_golden.jsonl"), "r");
    if (!f) {
        ok(0, "open the goldens");
        return;
    }
    char *line = NULL;
    size_t cap = 0;
    int lines = 0, good = 0, dgood = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        if (!j) continue;
        const char *text = json_string_value(json_object_get(j, "text"));
        size_t tl = json_string_length(json_object_get(j, "text"));
        int32_t *ids = NULL;
        size_t n = 0, c = 0;
        struct mode_err err = {0};
        lines++;
        if (mode_tokenizer_encode(tok, text, tl, &ids, &n, &c, &err)) diag("line %d: %s", lines, err.msg);
        else if (ids_equal(ids, n, json_object_get(j, ids_key))) good++;
        else if (good + 3 > lines) { /* a few diagnostics, not a flood */
            diag("%s line %d differs: %s", name, lines, text);
            char buf[2048];
            int o = 0;
            for (size_t i = 0; i < n && o < 2000; i++) o += snprintf(buf + o, sizeof buf - (size_t)o, "%d ", ids[i]);
            diag("  got  %s", buf);
            char *w = json_dumps(json_object_get(j, ids_key), JSON_COMPACT);
            diag("  want %s", w);
            free(w);
        }
        char *dec = NULL;
        size_t dl = 0;
        json_t *want = json_object_get(j, ids_key);
        size_t wn = json_array_size(want);
        int32_t *wids = malloc(sizeof *wids * (wn + 1));
        for (size_t i = 0; i < wn; i++) wids[i] = (int32_t)json_integer_value(json_array_get(want, i));
        if (!mode_tokenizer_decode(tok, wids, wn, false, &dec, &dl, &err)) {
            const char *wd = json_string_value(json_object_get(j, dec_key));
            if (wd && strlen(wd) == dl && !memcmp(wd, dec, dl)) dgood++;
            else if (dgood + 3 > lines) diag("%s line %d decodes to '%s'", name, lines, dec);
        }
        free(dec), free(wids), free(ids);
        json_decref(j);
    }
    free(line);
    fclose(f);
    ok(lines >= 100 && good == lines, "%s: %d of %d lines encode to the reference ids", name, good, lines);
    ok(lines >= 100 && dgood == lines, "%s: %d of %d reference id lists decode to the reference text", name, dgood, lines);
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* concurrent encoders share the piece cache: each thread's ids must equal the single-thread ones */
struct job {
    const struct mode_tokenizer *t;
    const char *text;
    const int32_t *want;
    size_t n_want;
    int bad;
};

static void *encode_many(void *arg)
{
    struct job *j = arg;
    for (int r = 0; r < 200; r++) {
        int32_t *ids = NULL;
        size_t n = 0, c = 0;
        struct mode_err err;
        if (mode_tokenizer_encode(j->t, j->text, strlen(j->text), &ids, &n, &c, &err) || n != j->n_want ||
            memcmp(ids, j->want, n * sizeof *ids))
            j->bad++;
        free(ids);
    }
    return NULL;
}

int main(void)
{
    struct mode_err err = {0};
    struct mode_tokenizer *small = NULL, *qwen = NULL;
    ok(!mode_tokenizer_load(fixture("emoji-vl/model/tokenizer.json"), &small, &err), "emoji-vl tokenizer loads %s", err.msg);
    ok(!mode_tokenizer_load(build_fixture("qwen3-tokenizer.json"), &qwen, &err), "Qwen3 tokenizer loads %s", err.msg);
    if (!small || !qwen) return tap_done();
    is_int(mode_tokenizer_n_vocab(qwen), 151669, "Qwen3: 151669 ids");
    is_int(mode_tokenizer_token_id(qwen, "<|image_pad|>"), 151655, "Qwen3: <|image_pad|> = 151655");
    is_int(mode_tokenizer_token_id(small, "<|im_end|>"), 2036, "emoji-vl: <|im_end|> = 2036");
    is_int(mode_tokenizer_token_id(small, "no such token"), -1, "absent token: -1");
    golden(qwen, "qwen3_ids", "qwen3_decoded", "Qwen3");
    golden(small, "small_ids", "small_decoded", "emoji-vl");

    {
        static const char *const texts[4] = {"the quick brown fox jumps over the lazy dog, again and again",
                                             "antipsychotic drugs used mainly in the treatment of schizophrenia",
                                             "a new convert being taught the principles of Christianity",
                                             "the quick brown dog jumps over the lazy fox, again and again"};
        struct job jobs[4];
        pthread_t th[4];
        int32_t *want[4];
        for (int i = 0; i < 4; i++) {
            size_t n = 0, c = 0;
            want[i] = NULL;
            mode_tokenizer_encode(qwen, texts[i], strlen(texts[i]), &want[i], &n, &c, &err);
            jobs[i] = (struct job){qwen, texts[i], want[i], n, 0};
        }
        for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, encode_many, &jobs[i]);
        int bad = 0;
        for (int i = 0; i < 4; i++) pthread_join(th[i], NULL), bad += jobs[i].bad, free(want[i]);
        is_int(bad, 0, "4 threads encoding at once through the shared cache agree with one thread");
    }
    /* added tokens inside text, and skipping special ones when decoding */
    int32_t *ids = NULL;
    size_t n = 0, c = 0;
    const char *s = "<|im_start|>user\nhi<|im_end|>";
    ok(!mode_tokenizer_encode(qwen, s, strlen(s), &ids, &n, &c, &err) && n >= 4 && ids[0] == 151644 && ids[n - 1] == 151645,
       "special tokens matched in the text");
    char *d = NULL;
    size_t dl;
    ok(!mode_tokenizer_decode(qwen, ids, n, true, &d, &dl, &err) && !strcmp(d, "user\nhi"), "decode without specials: '%s'", d ? d : "");
    free(d);
    n = 0;
    /* a long piece without spaces goes through the heap path */
    char *longs = malloc(20001);
    for (int i = 0; i < 20000; i++) longs[i] = "abcdefgh"[(i * 7 + i / 3) % 8];
    longs[20000] = 0;
    ok(!mode_tokenizer_encode(qwen, longs, 20000, &ids, &n, &c, &err) && n > 1000, "a 20000-byte word encodes (%zu ids)", n);
    ok(!mode_tokenizer_decode(qwen, ids, n, false, &d, &dl, &err) && dl == 20000 && !memcmp(d, longs, 20000), "and decodes back");
    free(d), free(longs);
    n = 0;
    ok(mode_tokenizer_encode(qwen, "a\xff" "b", 3, &ids, &n, &c, &err) == MODE_EDATA, "invalid UTF-8 is refused");
    has_str(err.msg, "UTF-8", "and says so");
    int32_t bad = 1 << 23;
    ok(mode_tokenizer_decode(qwen, &bad, 1, false, &d, &dl, &err) == MODE_EDATA, "an id outside the vocabulary is refused");
    free(ids);
    mode_tokenizer_free(qwen);
    mode_tokenizer_free(small);

    /* broken and unsupported files */
    char p[4096];
    snprintf(p, sizeof p, "%s/t.json", tap_tmpdir());
    struct mode_tokenizer *t = NULL;
    ok(mode_tokenizer_load("/nonexistent/tokenizer.json", &t, &err) == MODE_ENOINPUT, "a missing file: 66");
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "truncated JSON: 65 (%s)", err.msg);
    write_file(p, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "a WordPiece model is refused");
    has_str(err.msg, "model type 'WordPiece' is not supported", "naming it");
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "an unknown pre-tokenizer is refused");
    has_str(err.msg, "pre_tokenizer 'Whitespace'", "naming it");
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "a vocabulary without the byte alphabet is refused");
    has_str(err.msg, "not a byte-level BPE", "saying why");

    /* limits (tokenizer.h) */
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 16777216}, \"merges\": []}}");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "an id of 2^24 is refused");
    has_str(err.msg, "vocab entry 'a' has no valid id", "naming the entry");
    /* 3 tokens listed, ids up to 2*3 + 1024 - 1 = 1029 allowed: 1030 would make tables for 1031 */
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
                  " \"added_tokens\": [{\"id\": 1030, \"content\": \"<x>\"}]}");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "a few tokens with a large id are refused before the tables exist");
    has_str(err.msg, "t.json: the largest token id 1030 is out of proportion to the 3 tokens listed (at most 1029)", "saying so");
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 16777215}, \"merges\": []}}");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "two tokens, one of id 2^24 - 1: refused");
    has_str(err.msg, "the largest token id 16777215 is out of proportion to the 2 tokens listed (at most 1027)", "saying why");
    write_file(p, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": []},"
                  " \"added_tokens\": [{\"id\": 1029, \"content\": \"<x>\"}]}");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "id 1029 of 3 tokens passes the limit (and fails later)");
    has_str(err.msg, "not a byte-level BPE", "... on the missing byte alphabet");
    ok(truncate(p, (off_t)MODE_TOKENIZER_MAX_FILE + 1) == 0, "a tokenizer.json of 256 MiB + 1 byte (sparse)");
    ok(mode_tokenizer_load(p, &t, &err) == MODE_EDATA, "is refused");
    has_str(err.msg, "t.json: 268435457 bytes, larger than the limit of 268435456 bytes", "by its size, unread");
    return tap_done();
}
