/* arena.c — scratch memory kept across calls (arena.h): the runtime's per-layer buffers. */
#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

void mode_arena_reset(struct mode_arena *a)
{
    free_extras(a, NULL);
    if (a->peak > a->cap) {
        char *p = aligned_alloc(MODE_ARENA_ALIGN, a->peak); /* peak is a multiple of the alignment */
        if (p) {
            free(a->base);
            a->base = p, a->cap = a->peak;
            a->n_block++;
        }
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
