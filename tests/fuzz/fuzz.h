/* fuzz.h — shared by the fuzz targets of tests/fuzz: each defines LLVMFuzzerTestOneInput (and
 * may define LLVMFuzzerInitialize). Built with libFuzzer by `make fuzz` (clang, ASan + UBSan),
 * and with tests/fuzz/driver.c by `make check`, which replays the committed corpus and every
 * regression input through the same function. */
#ifndef MODE_FUZZ_H
#define MODE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* The bytes as a file that mode's path-based readers can open: "/proc/self/fd/N" of a memfd,
 * rewritten at each call. Returns the path (static buffer). */
const char *fuzz_as_file(const uint8_t *data, size_t size, const char *name);

#endif
