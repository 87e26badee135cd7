/* arena.h — the scratch memory of a run, kept across calls: buffers handed out one after the
 * other from one block, all given back at once.
 *
 * Why: the runtime's per-layer buffers (activations, routing, a layer's f32 weights) are large
 * and live for one call; malloc'ed and freed per call, glibc serves those above its mmap
 * threshold (128 KiB, raised up to 32 MiB by what was freed before) with a fresh mmap each time,
 * and every page of it faults again — per layer, per re-run of a layer. An arena kept by its
 * owner allocates its memory once (again only when a call needs more).
 *
 * Use: mode_arena_reset() at the start of each call of the owner (everything handed out before
 * goes back); mode_arena_alloc()/mode_arena_calloc() for each buffer; mode_arena_mark() and
 * mode_arena_release() around a loop inside the call whose buffers do not outlive an iteration.
 * A request the block has no room for gets a block of its own (malloc), given back by the
 * release or reset that covers it; the next reset replaces the block with one a quarter larger
 * than the most the arena held at once since the previous reset, so the same work run again
 * allocates nothing. The block never shrinks (mode_arena_free gives it back).
 *
 * Ownership: the arena owns every buffer it hands out; one lives until the reset or release that
 * covers it. Buffers are aligned to MODE_ARENA_ALIGN bytes. Not thread-safe (one owner).
 * Errors: NULL with err set by mode_err_oom (MODE_EUNAVAILABLE) naming `what`.
 */
#ifndef MODE_ARENA_H
#define MODE_ARENA_H

#include "mode.h"

/* a cache line, and the widest vector load the BLAS kernels use (AVX-512) */
#define MODE_ARENA_ALIGN 64

struct mode_arena_extra; /* a request that did not fit the block */

struct mode_arena {
    char *base;  /* the block (cap bytes), or NULL */
    size_t cap;
    size_t used; /* bytes of the block handed out */
    size_t held; /* bytes handed out now: the block's and the extras' */
    size_t peak; /* the most held at once since the last reset */
    struct mode_arena_extra *extra; /* the extra blocks, newest first */
    int64_t n_block;                /* blocks allocated so far (the block and the extras): a count
                                       for tests and benchmarks */
};

/* where the arena stood: mode_arena_release gives back what was handed out after it */
struct mode_arena_mark {
    size_t used, held;
    struct mode_arena_extra *extra;
};

void mode_arena_init(struct mode_arena *a);
void mode_arena_free(struct mode_arena *a);
/* Gives back every buffer; grows the block past the peak since the last reset when that is larger
 * (if that allocation fails, the arena has no block and requests go to extras). */
void mode_arena_reset(struct mode_arena *a);
/* Gives back every buffer and the block itself (n_block kept): for an owner about to need its
 * memory elsewhere for a while; the next calls allocate again as the first ones did. */
void mode_arena_trim(struct mode_arena *a);
/* n bytes, uninitialised */
void *mode_arena_alloc(struct mode_arena *a, size_t n, struct mode_err *err, const char *what);
/* count x size bytes, zeroed (as calloc; the product checked for overflow) */
void *mode_arena_calloc(struct mode_arena *a, size_t count, size_t size, struct mode_err *err, const char *what);
struct mode_arena_mark mode_arena_mark(const struct mode_arena *a);
void mode_arena_release(struct mode_arena *a, struct mode_arena_mark m);

#endif
