/* bench_fingerprint — throughput of the weights scan every program runs at model open
 * (mode_st_set_scan: NaN/Inf test + raw-bytes hash of every tensor), against what bounds it.
 *
 * Writes a safetensors file of GB gigabytes (default 3) of random finite bf16 tensors of 256 MiB
 * (the size of a fused expert tensor of the real model) to a temporary file, reads it once so that
 * it sits in the page cache, then times, median of REPEATS:
 *   read       a sum of every 64-bit word of the mapped file, 1 thread: the floor of any scan
 *   hash       mode_hash_scan over the same mapping, 1 thread
 *   sha256     SHA-256 of one 256 MiB tensor (scaled to GB/s): what the scan would cost with it
 *   scan T     open + mode_st_set_scan with T threads (a fresh mapping each time: page faults
 *              included, as at model open), for T = 1, 2, 4, ... up to the online CPUs, and 0 (auto)
 * The file is removed at the end. Memory: none beyond the page cache (the file is mapped).
 *
 *   make bench && build/bench/bench_fingerprint [GB] [REPEATS]      (TMPDIR chooses the place)
 */
#include "../../lib/hash.h"
#include "../../lib/safetensors.h"
#include "../../lib/sha256.h"
#include "bench_util.h"
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TENSOR_BYTES ((uint64_t)256 << 20)

static char path[4096];

static int die(const char *what)
{
    fprintf(stderr, "bench_fingerprint: %s\n", what);
    if (path[0]) unlink(path);
    return 1;
}

/* the file: header (padded to 8 bytes with spaces, as the format allows) + n tensors */
static int write_file(int n)
{
    size_t cap = 128 + (size_t)n * 96, len = 0;
    char *h = malloc(cap);
    if (!h) return -1;
    len += (size_t)snprintf(h + len, cap - len, "{");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(h + len, cap - len, "%s\"t.%04d\":{\"dtype\":\"BF16\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}",
                                i ? "," : "", i, (unsigned long long)(TENSOR_BYTES / 2), (unsigned long long)(i * TENSOR_BYTES),
                                (unsigned long long)((i + 1) * TENSOR_BYTES));
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    uint64_t hl = len;
    int bad = !f || fwrite(&hl, 8, 1, f) != 1 || fwrite(h, 1, len, f) != len;
    free(h);
    uint16_t *buf = malloc(1 << 20);
    uint64_t x = 0x243f6a8885a308d3u;
    for (int i = 0; !bad && buf && i < n; i++)
        for (uint64_t off = 0; !bad && off < TENSOR_BYTES; off += 1 << 20) {
            for (size_t k = 0; k < (1 << 19); k++) {
                x = x * 6364136223846793005u + 1442695040888963407u;
                buf[k] = (uint16_t)(x >> 48) & 0xbfff; /* exponent below all-ones: finite */
            }
            bad = fwrite(buf, 1, 1 << 20, f) != 1 << 20;
        }
    free(buf);
    if (f && fclose(f)) bad = 1;
    return bad || !buf ? -1 : 0;
}

int main(int argc, char **argv)
{
    const double gb = argc > 1 && atof(argv[1]) > 0 ? atof(argv[1]) : 3;
    const int reps = argc > 2 && atoi(argv[2]) > 0 ? atoi(argv[2]) : 5;
    const int n = (int)(gb * 1e9 / (double)TENSOR_BYTES + 0.5) > 0 ? (int)(gb * 1e9 / (double)TENSOR_BYTES + 0.5) : 1;
    const char *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/bench-fingerprint-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return path[0] = 0, die("cannot create a temporary file");
    close(fd);
    if (write_file(n)) return die("cannot write the test file (disk full?)");
    const double bytes = (double)n * (double)TENSOR_BYTES;
    struct mode_err err = {0};
    struct mode_st_set s;
    char fp[65], fp1[65] = "";
    if (mode_st_set_open(&s, path, &err)) return die(err.msg);
    if (mode_st_set_scan(&s, 0, fp1, &err)) return die(err.msg); /* warms the page cache */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("%d tensors of 256 MiB bf16 = %.2f GB, page-cached; %ld online CPUs; median of %d\n", n, bytes / 1e9, cpus, reps);
    printf("%-10s %8s %8s\n", "what", "s", "GB/s");
    double t[64];

    /* floors: a read of every word, and the hash alone, both on the mapping */
    volatile uint64_t sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        uint64_t sum = 0;
        for (size_t i = 0; i < s.n_tensors; i++) {
            const uint64_t *w = s.sorted[i]->data; /* the header is padded: 8-byte aligned */
            for (size_t k = 0; k < TENSOR_BYTES / 8; k++) sum += w[k];
        }
        sink += sum;
        t[r] = now() - t0;
    }
    double m = median(t, reps);
    printf("%-10s %8.3f %8.2f\n", "read", m, bytes / m / 1e9);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        uint64_t h[2];
        for (size_t i = 0; i < s.n_tensors; i++) sink += mode_hash_scan(s.sorted[i]->data, TENSOR_BYTES, MODE_BF16, h) + h[0];
        t[r] = now() - t0;
    }
    m = median(t, reps);
    printf("%-10s %8.3f %8.2f\n", "hash", m, bytes / m / 1e9);
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        struct mode_sha256 sh;
        mode_sha256_init(&sh);
        mode_sha256_update(&sh, s.sorted[0]->data, TENSOR_BYTES);
        mode_sha256_hex(&sh, fp);
        t[r] = now() - t0;
    }
    m = median(t, reps);
    printf("%-10s %8.3f %8.2f   (one tensor; the whole file at this rate: %.1f s)\n", "sha256", m, (double)TENSOR_BYTES / m / 1e9,
           m * n);
    mode_st_set_close(&s);

    /* the scan as model open runs it: open (a fresh mapping), scan, close */
    int threads[16], nt = 0;
    for (int k = 1; k <= cpus && k <= MODE_ST_SCAN_MAX_THREADS && nt < 14; k *= 2) threads[nt++] = k;
    if (threads[nt - 1] != cpus && cpus <= MODE_ST_SCAN_MAX_THREADS) threads[nt++] = (int)cpus;
    threads[nt++] = 0;
    for (int k = 0; k < nt; k++) {
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            if (mode_st_set_open(&s, path, &err) || mode_st_set_scan(&s, threads[k], fp, &err)) return die(err.msg);
            mode_st_set_close(&s);
            t[r] = now() - t0;
            if (strcmp(fp, fp1)) return die("the fingerprint changed with the number of threads");
        }
        m = median(t, reps);
        char what[32];
        snprintf(what, sizeof what, threads[k] ? "scan %d" : "scan auto", threads[k]);
        printf("%-10s %8.3f %8.2f\n", what, m, bytes / m / 1e9);
    }
    unlink(path);
    return sink == 42 ? 2 : 0; /* keeps the sums */
}
