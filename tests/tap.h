/* tap.h — a tiny TAP producer for the C tests (run by prove through make check).
 *   ok(cond, "name %d", i);  is_int(got, want, "name");  diag("...");  return tap_done();
 * A test that cannot run here (no GPU) calls tap_skip_all("reason"): TAP's "1..0 # SKIP".
 */
#ifndef MODE_TAP_H
#define MODE_TAP_H

#include <stddef.h>
#include <stdint.h>

int ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int is_int(long long got, long long want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int is_str(const char *got, const char *want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* got contains want */
int has_str(const char *got, const char *want, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void tap_skip_all(const char *reason) __attribute__((noreturn));
/* Prints the plan and returns the exit status (0 when every test passed). */
int tap_done(void);
/* $MODE_FIXTURES/rel, in a static buffer (one at a time) */
const char *fixture(const char *rel);
/* A fresh temporary directory for this test (removed by tap_done). */
const char *tap_tmpdir(void);
/* Deterministic random numbers: seed printed once; splitmix64. */
uint64_t tap_rand(void);
void tap_seed(uint64_t seed);
/* ‖a − b‖ / ‖b‖ over n floats (‖a − b‖ when b is all zero; infinity when a NaN is involved). */
double tap_rel_l2(const float *a, const float *b, size_t n);

#endif
