/* arena.c — scratch memory kept across calls (arena.h): the runtime's per-layer buffers.
 *
 * The block comes from malloc, a quarter larger than the peak: at the first reset it takes the
 * place of the extras the first call used, freed just before (pages already touched), and the
 * headroom (never touched, when the calls do not need it) spares a new block, its faults and the
 * old block's hole in the heap, each time a call needs a little more than the previous ones (a
 * layer's busiest expert takes more or fewer tokens). A block above glibc's mmap threshold is a
 * mapping of its own, given back to the system when replaced. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* an extra block: this header, padded to the alignment, then the buffer */
struct mode_arena_extra {
    struct mode_arena_extra *next;
    size_t n;
};
#define EXTRA_HDR (((sizeof(struct mode_arena_extra) + MODE_ARENA_ALIGN - 1) / MODE_ARENA_ALIGN) * MODE_ARENA_ALIGN)

void mode_arena_init(struct mode_arena *a) { memset(a, 0, sizeof *a); }

static void free_extras(struct mode_arena *a, const struct mode_arena_extra *until)
{
    while (a->extra && a->extra != until) {
        struct mode_arena_extra *e = a->extra;
        a->extra = e->next;
        free(e);
    }
}

void mode_arena_free(struct mode_arena *a)
{
    free_extras(a, NULL);
    free(a->base);
    memset(a, 0, sizeof *a);
}

void mode_arena_trim(struct mode_arena *a)
{
    const int64_t n_block = a->n_block;
    mode_arena_free(a);
    a->n_block = n_block;
}

void mode_arena_reset(struct mode_arena *a)
{
    free_extras(a, NULL);
    if (a->peak > a->cap) {
        /* a quarter more than the peak, whole pages (so a multiple of the alignment); the old
         * block freed first, so that malloc may put the new one where it and the extras were */
        const size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (a->peak + a->peak / 4 + page - 1) / page * page;
        free(a->base);
        a->base = aligned_alloc(MODE_ARENA_ALIGN, n);
        a->cap = a->base ? n : 0;
        a->n_block += a->base != NULL;
    }
    a->used = a->held = a->peak = 0;
}

void *mode_arena_alloc(struct mode_arena *a, size_t n, struct mode_err *err, const char *what)
{
    if (n > SIZE_MAX - EXTRA_HDR - MODE_ARENA_ALIGN) {
        mode_err_oom(err, n, what);
        return NULL;
    }
    const size_t sz = ((n ? n : 1) + MODE_ARENA_ALIGN - 1) / MODE_ARENA_ALIGN * MODE_ARENA_ALIGN;
    void *p;
    if (a->base && a->cap - a->used >= sz) {
        p = a->base + a->used;
        a->used += sz;
    } else {
        struct mode_arena_extra *e = aligned_alloc(MODE_ARENA_ALIGN, EXTRA_HDR + sz);
        if (!e) {
            mode_err_oom(err, n, what);
            return NULL;
        }
        e->next = a->extra, e->n = sz;
        a->extra = e;
        a->n_block++;
        p = (char *)e + EXTRA_HDR;
    }
    a->held += sz;
    if (a->held > a->peak) a->peak = a->held;
    return p;
}

void *mode_arena_calloc(struct mode_arena *a, size_t count, size_t size, struct mode_err *err, const char *what)
{
    if (size && count > SIZE_MAX / size) {
        mode_err_oom(err, SIZE_MAX, what);
        return NULL;
    }
    void *p = mode_arena_alloc(a, count * size, err, what);
    if (p) memset(p, 0, count * size);
    return p;
}

struct mode_arena_mark mode_arena_mark(const struct mode_arena *a) { return (struct mode_arena_mark){a->used, a->held, a->extra}; }

void mode_arena_release(struct mode_arena *a, struct mode_arena_mark m)
{
    MODE_ASSERT(m.used <= a->used && m.held <= a->held);
    free_extras(a, m.extra);
    a->used = m.used, a->held = m.held;
}
