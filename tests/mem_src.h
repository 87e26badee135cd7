/* mem_src.h — a stream source over a memory buffer with a chunking policy, for the stream
 * reader's tests (test_stream, test_stream_cut): the whole buffer at once, one byte at a time,
 * or random chunks of 1..300 bytes (tap_rand, the test's printed seed). Include after tap.h. */
#ifndef MODE_TEST_MEM_SRC_H
#define MODE_TEST_MEM_SRC_H

#include <string.h>
#include <sys/types.h>

struct src {
    const uint8_t *p;
    size_t n, off;
    int policy; /* 0: all at once, 1: one byte at a time, 2: random chunks */
};

static ssize_t src_read(void *ctx, void *buf, size_t cap)
{
    struct src *s = ctx;
    size_t left = s->n - s->off, k = left < cap ? left : cap;
    if (s->policy == 1 && k > 1) k = 1;
    if (s->policy == 2 && k > 1) k = 1 + (size_t)(tap_rand() % (k < 300 ? k : 300));
    memcpy(buf, s->p + s->off, k);
    s->off += k;
    return (ssize_t)k;
}

#endif
