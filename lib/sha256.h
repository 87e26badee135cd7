/* sha256.h — SHA-256 (FIPS 180-4), for the model identity and input provenance in stream headers.
 * Incremental: init, update any number of times, final. No allocation.
 */
#ifndef MODE_SHA256_H
#define MODE_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct mode_sha256 {
    uint32_t h[8];
    uint64_t len;     /* bytes hashed so far */
    uint8_t buf[64];  /* pending partial block */
    size_t n;
};

void mode_sha256_init(struct mode_sha256 *s);
void mode_sha256_update(struct mode_sha256 *s, const void *p, size_t n);
void mode_sha256_final(struct mode_sha256 *s, uint8_t out[32]);
/* Finishes and writes 64 lowercase hex digits + NUL into hex. */
void mode_sha256_hex(struct mode_sha256 *s, char hex[65]);

#endif
