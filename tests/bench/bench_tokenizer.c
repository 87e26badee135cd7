/* bench_tokenizer — encode throughput of the real Qwen3 tokenizer on English prose, one thread.
 * The prose is the text of the tokenizer goldens (WordNet glosses and sentences), repeated to
 * 8 MB; whole lines are encoded one by one, as mode-tokenize does. Median of REPEATS.
 *
 *   make bench && MODE_FIXTURES=tests/fixtures build/bench/bench_tokenizer [REPEATS]
 */
#include "../../lib/json.h"
#include "../../lib/tokenizer.h"
#include "tap.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    const int reps = argc > 1 && atoi(argv[1]) > 0 ? atoi(argv[1]) : 5;
    char path[4096];
    const char *bf = getenv("MODE_BUILD_FIXTURES");
    snprintf(path, sizeof path, "%s/qwen3-tokenizer.json", bf ? bf : "build/fixtures");
    struct mode_err err = {0};
    struct mode_tokenizer *t;
    double t0 = now();
    if (mode_tokenizer_load(path, &t, &err)) {
        fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
        return 1;
    }
    const double load = now() - t0;
    /* the goldens' English lines */
    FILE *f = fopen(fixture("tokenizer/encode_golden.jsonl"), "r");
    if (!f) {
        fprintf(stderr, "bench_tokenizer: cannot open the goldens (set MODE_FIXTURES)\n");
        return 1;
    }
    char **lines = NULL, *line = NULL;
    size_t nl = 0, cap = 0, total = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        const char *s = j ? json_string_value(json_object_get(j, "text")) : NULL;
        int ascii = s != NULL;
        for (const char *p = s; p && *p; p++) ascii &= (unsigned char)*p < 0x80;
        if (ascii && strlen(s) > 20) {
            lines = realloc(lines, sizeof *lines * (nl + 1));
            lines[nl++] = strdup(s);
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    int32_t *ids = NULL;
    size_t n, icap = 0, tokens = 0;
    double times[32];
    const int nr = reps < 32 ? reps : 32;
    for (int r = 0; r < nr; r++) {
        total = 0, tokens = 0;
        double a = now();
        while (total < (8u << 20)) {
            for (size_t i = 0; i < nl; i++) {
                n = 0;
                if (mode_tokenizer_encode(t, lines[i], strlen(lines[i]), &ids, &n, &icap, &err)) {
                    fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                    return 1;
                }
                total += strlen(lines[i]);
                tokens += n;
            }
        }
        times[r] = now() - a;
    }
    qsort(times, (size_t)nr, sizeof *times, cmp);
    const double med = times[nr / 2];
    printf("Qwen3 tokenizer (151669 ids), English prose (%zu distinct lines), one thread, median of %d\n\n", nl, nr);
    printf("%-12s %10s %12s %12s %10s\n", "load s", "MB", "tokens", "MB/s", "Mtok/s");
    printf("%-12.3f %10.2f %12zu %12.2f %10.2f\n", load, total / 1e6, tokens, total / 1e6 / med, tokens / 1e6 / med);
    for (size_t i = 0; i < nl; i++) free(lines[i]);
    free(lines), free(ids);
    mode_tokenizer_free(t);
    return 0;
}
