/* test_arena — the scratch arena (lib/arena.h): alignment, zeroing, mark and release, requests
 * past the block served by extra blocks, the block grown at reset past the peak, so that the same
 * work run again allocates no block (the point of keeping the runtime's buffers across calls),
 * and requests too large to represent refused with MODE_EUNAVAILABLE. The page size is at most
 * 64 KiB. */
#include "../../lib/arena.h"
#include "tap.h"

#include <stdint.h>
#include <string.h>

/* one "call": a few buffers of the sizes a layer asks for, one released inside a loop */
static int pass(struct mode_arena *a, size_t scale)
{
    struct mode_err err = {0};
    mode_arena_reset(a);
    char *x = mode_arena_alloc(a, 1000 * scale, &err, "x");
    float *z = mode_arena_calloc(a, 300 * scale, sizeof *z, &err, "z");
    if (!x || !z) return -1;
    memset(x, 0x5a, 1000 * scale);
    for (int i = 0; i < 3; i++) {
        struct mode_arena_mark m = mode_arena_mark(a);
        char *t = mode_arena_alloc(a, 5000 * scale, &err, "t");
        if (!t) return -1;
        memset(t, i, 5000 * scale);
        mode_arena_release(a, m);
    }
    for (size_t i = 0; i < 300 * scale; i++)
        if (z[i] != 0.0f) return -2;
    return 0;
}

int main(void)
{
    struct mode_err err = {0};
    struct mode_arena a;
    mode_arena_init(&a);

    /* alignment and zeroing */
    mode_arena_reset(&a);
    int aligned = 1;
    for (size_t n = 0; n < 200; n += 7) {
        char *p = mode_arena_alloc(&a, n, &err, "p");
        aligned &= p && (uintptr_t)p % MODE_ARENA_ALIGN == 0;
    }
    ok(aligned, "every buffer is aligned to %d bytes (sizes 0 to 196)", MODE_ARENA_ALIGN);
    int64_t *c = mode_arena_calloc(&a, 1000, sizeof *c, &err, "c");
    int zero = c != NULL;
    for (int i = 0; c && i < 1000; i++) zero &= c[i] == 0;
    ok(zero, "calloc: zeroed");

    /* reuse: a buffer freed by a release is handed out again at the same place */
    mode_arena_reset(&a);
    struct mode_arena_mark m0 = mode_arena_mark(&a);
    char *p1 = mode_arena_alloc(&a, 4096, &err, "p1");
    mode_arena_release(&a, m0);
    is_int((long long)a.held, 0, "release: nothing held");
    char *p2 = mode_arena_alloc(&a, 4096, &err, "p2");
    ok(p1 && p1 == p2, "release then alloc: the same memory again");
    /* reset then the calloc of what was written: zeroed again */
    memset(p2, 0xff, 4096);
    mode_arena_reset(&a);
    unsigned char *p3 = mode_arena_calloc(&a, 4096, 1, &err, "p3");
    int clean = p3 != NULL;
    for (int i = 0; p3 && i < 4096; i++) clean &= p3[i] == 0;
    ok(clean, "calloc over memory written before the reset: zeroed");

    /* growth: the first pass overflows into extras, the reset sizes the block to the peak, and
     * the same pass again allocates nothing */
    mode_arena_free(&a);
    mode_arena_init(&a);
    is_int(pass(&a, 1000), 0, "first pass");
    const int64_t n1 = a.n_block;
    ok(n1 > 1, "first pass: %lld blocks (the requests past the empty block are extras)", (long long)n1);
    ok(a.extra != NULL, "... extra blocks are held until the reset");
    const size_t peak = a.peak;
    /* the peak: x, z and one t (released each iteration), each rounded up to the alignment */
    const size_t want = (1000000 + 1200000 + 5000000 + 3 * (MODE_ARENA_ALIGN - 1)) / MODE_ARENA_ALIGN * MODE_ARENA_ALIGN;
    ok(peak <= want && peak >= 7200000, "peak %zu bytes: what was held at once (at most %zu), not the sum of the requests", peak, want);
    is_int(pass(&a, 1000), 0, "second pass");
    ok(a.cap >= peak + peak / 4 && a.cap < peak + peak / 4 + 65536, "after the reset the block is the first pass's peak and a quarter (%zu bytes)",
       a.cap);
    ok((uintptr_t)a.base % MODE_ARENA_ALIGN == 0, "... aligned");
    is_int(a.n_block, n1 + 1, "the second pass allocated one block: the grown one");
    ok(a.extra == NULL, "... and no extra");
    for (int i = 0; i < 5; i++) pass(&a, 1000);
    is_int(a.n_block, n1 + 1, "five more passes: no allocation");
    is_int(pass(&a, 10), 0, "a smaller pass");
    is_int(a.n_block, n1 + 1, "a smaller pass: no allocation, the block never shrinks");
    is_int(pass(&a, 2000), 0, "a larger pass");
    is_int(pass(&a, 2000), 0, "... again");
    const int64_t n2 = a.n_block;
    is_int(pass(&a, 2000), 0, "... and again");
    is_int(a.n_block, n2, "a larger pass: the block grows once, then no allocation");

    /* trim: the block and extras given back, the count kept; the next passes grow it again */
    mode_arena_alloc(&a, a.cap + 1, &err, "an extra before the trim");
    const int64_t n3 = a.n_block;
    mode_arena_trim(&a);
    ok(a.base == NULL && a.cap == 0 && a.extra == NULL && a.held == 0, "trim: no block, no extra, nothing held");
    is_int(a.n_block, n3, "... the block count kept");
    is_int(pass(&a, 1000), 0, "a pass after the trim");
    ok(a.n_block > n3, "... allocates again (%lld blocks)", (long long)(a.n_block - n3));
    is_int(pass(&a, 1000), 0, "... and once more");
    ok(a.cap >= a.peak && a.base != NULL, "... the block back, sized from the pass");

    /* release of extras taken after the mark */
    mode_arena_reset(&a);
    struct mode_arena_mark m1 = mode_arena_mark(&a);
    char *big = mode_arena_alloc(&a, a.cap + 1, &err, "big");
    ok(big && a.extra != NULL, "a request past the block: an extra block");
    mode_arena_release(&a, m1);
    ok(a.extra == NULL && a.held == 0, "release: the extra given back");

    /* refusals */
    mode_err_clear(&err);
    ok(!mode_arena_alloc(&a, SIZE_MAX, &err, "the impossible"), "SIZE_MAX bytes: NULL");
    is_int(err.code, MODE_EUNAVAILABLE, "... MODE_EUNAVAILABLE");
    has_str(err.msg, "the impossible", "... naming the buffer: %s", err.msg);
    mode_err_clear(&err);
    ok(!mode_arena_calloc(&a, SIZE_MAX / 2, 3, &err, "overflow"), "calloc whose size overflows: NULL");
    is_int(err.code, MODE_EUNAVAILABLE, "... MODE_EUNAVAILABLE");

    mode_arena_free(&a);
    ok(a.base == NULL && a.cap == 0 && a.extra == NULL, "free: nothing left");
    return tap_done();
}
