/* tokenizer.c — byte-level BPE from tokenizer.json (see tokenizer.h). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"
#include "json.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- hash tables ----------------------------------------------------------------------------- */

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

/* string -> id, open addressing; strings are owned by the tokenizer's token table */
struct strmap {
    size_t cap; /* power of two */
    int32_t *slot; /* -1 empty */
};

/* pair (a, b) -> rank and merged id */
struct pairent {
    uint64_t key; /* (a << 32 | b) + 1; 0 empty */
    int32_t rank, id;
};

struct added {
    char *content;
    size_t len;
    int32_t id;
    bool special, lstrip, rstrip, single_word;
};

/* A direct-mapped cache of short pieces' ids, shared by all callers under a mutex: words repeat. */
enum { CACHE_SLOTS = 1 << 15, CACHE_BYTES = 40, CACHE_IDS = 10 };
struct cache_ent {
    uint64_t hash; /* 0: empty */
    uint8_t len, n;
    char bytes[CACHE_BYTES];
    int32_t ids[CACHE_IDS];
};

struct mode_tokenizer {
    pthread_mutex_t lock;
    struct cache_ent *cache; /* CACHE_SLOTS, or NULL (no memory: no cache) */
    int32_t n_vocab;     /* 1 + largest id */
    char **tok;          /* (n_vocab) token strings (byte-level alphabet for BPE tokens); NULL = no id */
    uint32_t *tok_len;
    bool *is_added, *is_special;
    struct strmap vocab; /* BPE vocabulary and added tokens */
    struct pairent *pairs;
    size_t pair_cap;
    int32_t byte_id[256]; /* id of each single byte's symbol */
    int16_t cp_byte[512]; /* byte-level code point -> byte (-1 none); code points < 512 */
    struct added *added;
    int n_added;
    bool nfc;
    pcre2_code *re; /* NULL: no regex split (the whole segment is one piece) */
};

static int32_t strmap_get(const struct mode_tokenizer *t, const char *s, size_t n)
{
    const struct strmap *m = &t->vocab;
    for (size_t i = fnv(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (t->tok_len[id] == n && !memcmp(t->tok[id], s, n)) return id;
    }
}

static void strmap_put(struct mode_tokenizer *t, int32_t id)
{
    struct strmap *m = &t->vocab;
    for (size_t i = fnv(t->tok[id], t->tok_len[id]) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slot[i] < 0) {
            m->slot[i] = id;
            return;
        }
        if (t->tok_len[m->slot[i]] == t->tok_len[id] && !memcmp(t->tok[m->slot[i]], t->tok[id], t->tok_len[id])) {
            m->slot[i] = id; /* a later entry of the same spelling wins, as in a dict */
            return;
        }
    }
}

static const struct pairent *pair_get(const struct mode_tokenizer *t, int32_t a, int32_t b)
{
    const uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    for (size_t i = mix(key) & (t->pair_cap - 1);; i = (i + 1) & (t->pair_cap - 1)) {
        if (t->pairs[i].key == key) return &t->pairs[i];
        if (!t->pairs[i].key) return NULL;
    }
}

static void pair_put(struct mode_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    const uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    for (size_t i = mix(key) & (t->pair_cap - 1);; i = (i + 1) & (t->pair_cap - 1)) {
        if (t->pairs[i].key == key) return; /* the first (lowest-rank) merge of a pair counts */
        if (!t->pairs[i].key) {
            t->pairs[i] = (struct pairent){key, rank, id};
            return;
        }
    }
}

static size_t pow2_above(size_t n)
{
    size_t c = 16;
    while (c < 2 * n) c <<= 1;
    return c;
}

/* ---- byte-level alphabet --------------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the others are given
 * the code points 256, 257, ... in byte order. */
static void byte_alphabet(int cp[256])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        cp[b] = printable ? b : 256 + n++;
    }
}

static int utf8_put(int cp, char *o)
{
    if (cp < 0x80) return o[0] = (char)cp, 1;
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2; /* the alphabet stays below 0x800 */
}

/* ---- loading --------------------------------------------------------------------------------- */

void mode_tokenizer_free(struct mode_tokenizer *t)
{
    if (!t) return;
    if (t->cache) pthread_mutex_destroy(&t->lock);
    free(t->cache);
    for (int32_t i = 0; i < t->n_vocab; i++) free(t->tok[i]);
    free(t->tok), free(t->tok_len), free(t->is_added), free(t->is_special);
    free(t->vocab.slot), free(t->pairs);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

static int unsupported(struct mode_err *err, const char *path, const char *what, const char *type)
{
    return mode_err_set(err, MODE_EDATA, "%s: %s '%s' is not supported (byte-level BPE of the Qwen family only)", path, what,
                        type ? type : "?");
}

static const char *jtype(json_t *o)
{
    json_t *ty = json_is_object(o) ? json_object_get(o, "type") : NULL;
    return json_is_string(ty) ? json_string_value(ty) : NULL;
}

static int load_pretok(struct mode_tokenizer *t, json_t *p, const char *path, struct mode_err *err)
{
    if (!p || json_is_null(p)) return MODE_OK;
    const char *ty = jtype(p);
    if (ty && !strcmp(ty, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        if (!json_is_array(list)) return mode_err_set(err, MODE_EDATA, "%s: pre_tokenizer Sequence without pretokenizers", path);
        size_t i;
        json_t *x;
        json_array_foreach(list, i, x)
        {
            int rc = load_pretok(t, x, path, err);
            if (rc) return rc;
        }
        return MODE_OK;
    }
    if (ty && !strcmp(ty, "ByteLevel")) {
        json_t *ur = json_object_get(p, "use_regex"), *aps = json_object_get(p, "add_prefix_space");
        if (json_is_true(ur)) return unsupported(err, path, "pre_tokenizer ByteLevel with", "use_regex true");
        if (json_is_true(aps)) return unsupported(err, path, "pre_tokenizer ByteLevel with", "add_prefix_space true");
        return MODE_OK;
    }
    if (ty && !strcmp(ty, "Split")) {
        json_t *pat = json_object_get(p, "pattern"), *re = pat ? json_object_get(pat, "Regex") : NULL;
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        if (!json_is_string(re)) return unsupported(err, path, "pre_tokenizer Split pattern", "String");
        if (!beh || strcmp(beh, "Isolated")) return unsupported(err, path, "pre_tokenizer Split behavior", beh);
        if (json_is_true(json_object_get(p, "invert"))) return unsupported(err, path, "pre_tokenizer Split with", "invert true");
        if (t->re) return unsupported(err, path, "pre_tokenizer with", "two Split regexes");
        int ec;
        PCRE2_SIZE eo;
        t->re = pcre2_compile((PCRE2_SPTR)json_string_value(re), PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &ec, &eo,
                              NULL);
        if (!t->re) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return mode_err_set(err, MODE_EDATA, "%s: the pre_tokenizer's regex does not compile at offset %zu: %s", path, (size_t)eo,
                                (char *)msg);
        }
        pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* optional: falls back to the interpreter */
        return MODE_OK;
    }
    return unsupported(err, path, "pre_tokenizer", ty);
}

static int load_normalizer(struct mode_tokenizer *t, json_t *n, const char *path, struct mode_err *err)
{
    if (!n || json_is_null(n)) return MODE_OK;
    const char *ty = jtype(n);
    if (ty && !strcmp(ty, "NFC")) return t->nfc = true, MODE_OK;
    if (ty && !strcmp(ty, "Sequence")) {
        json_t *list = json_object_get(n, "normalizers");
        size_t i;
        json_t *x;
        if (!json_is_array(list)) return mode_err_set(err, MODE_EDATA, "%s: normalizer Sequence without normalizers", path);
        json_array_foreach(list, i, x)
        {
            int rc = load_normalizer(t, x, path, err);
            if (rc) return rc;
        }
        return MODE_OK;
    }
    return unsupported(err, path, "normalizer", ty);
}

static int set_token(struct mode_tokenizer *t, int32_t id, const char *s, size_t n, const char *path, struct mode_err *err)
{
    if (id < 0 || id >= t->n_vocab) return mode_err_set(err, MODE_EDATA, "%s: token id %d out of range", path, id);
    if (t->tok[id] && (t->tok_len[id] != n || memcmp(t->tok[id], s, n)))
        return mode_err_set(err, MODE_EDATA, "%s: id %d is given to both '%s' and '%.*s'", path, id, t->tok[id], (int)n, s);
    if (!t->tok[id]) {
        t->tok[id] = malloc(n + 1);
        if (!t->tok[id]) return mode_err_oom(err, n + 1, "a token");
        memcpy(t->tok[id], s, n);
        t->tok[id][n] = 0;
        t->tok_len[id] = (uint32_t)n;
    }
    return MODE_OK;
}

int mode_tokenizer_load(const char *path, struct mode_tokenizer **out, struct mode_err *err)
{
    *out = NULL;
    json_t *root;
    int rc = mode_json_load(path, MODE_TOKENIZER_MAX_FILE, &root, err);
    if (rc) return rc;
    struct mode_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        json_decref(root);
        return mode_err_oom(err, sizeof *t, "the tokenizer");
    }
    json_t *model = json_object_get(root, "model"), *vocab = model ? json_object_get(model, "vocab") : NULL,
           *merges = model ? json_object_get(model, "merges") : NULL, *added = json_object_get(root, "added_tokens");
    const char *mt = jtype(model);
    if (!mt || strcmp(mt, "BPE")) {
        rc = unsupported(err, path, "model type", mt);
        goto fail;
    }
    if (!json_is_object(vocab) || !json_is_array(merges)) {
        rc = mode_err_set(err, MODE_EDATA, "%s: model.vocab or model.merges is missing", path);
        goto fail;
    }
    json_t *x = json_object_get(model, "dropout");
    if (x && !json_is_null(x) && !(json_is_number(x) && json_number_value(x) == 0)) {
        rc = unsupported(err, path, "model", "dropout");
        goto fail;
    }
    if (json_is_true(json_object_get(model, "byte_fallback"))) {
        rc = unsupported(err, path, "model", "byte_fallback");
        goto fail;
    }
    const char *csp = json_string_value(json_object_get(model, "continuing_subword_prefix")),
               *eow = json_string_value(json_object_get(model, "end_of_word_suffix"));
    if ((csp && *csp) || (eow && *eow)) {
        rc = unsupported(err, path, "model", "subword prefix or suffix");
        goto fail;
    }
    if ((rc = load_normalizer(t, json_object_get(root, "normalizer"), path, err)) ||
        (rc = load_pretok(t, json_object_get(root, "pre_tokenizer"), path, err)))
        goto fail;
    x = json_object_get(root, "decoder");
    if (x && !json_is_null(x) && (!jtype(x) || strcmp(jtype(x), "ByteLevel"))) {
        rc = unsupported(err, path, "decoder", jtype(x));
        goto fail;
    }

    /* ids */
    int64_t maxid = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MODE_TOKENIZER_MAX_VOCAB) {
            rc = mode_err_set(err, MODE_EDATA, "%s: vocab entry '%s' has no valid id", path, key);
            goto fail;
        }
        if (json_integer_value(v) > maxid) maxid = json_integer_value(v);
    }
    size_t ai;
    json_array_foreach(added, ai, v)
    {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= MODE_TOKENIZER_MAX_VOCAB ||
            !json_is_string(json_object_get(v, "content"))) {
            rc = mode_err_set(err, MODE_EDATA, "%s: added_tokens[%zu] needs an id and a content", path, ai);
            goto fail;
        }
        if (json_integer_value(id) > maxid) maxid = json_integer_value(id);
    }
    const size_t listed = json_object_size(vocab) + json_array_size(added);
    if ((size_t)maxid >= MODE_TOKENIZER_MAX_SPARSE * listed + MODE_TOKENIZER_MAX_SPARSE_SLACK) {
        rc = mode_err_set(err, MODE_EDATA, "%s: the largest token id %lld is out of proportion to the %zu tokens listed (at most %zu)", path,
                          (long long)maxid, listed, MODE_TOKENIZER_MAX_SPARSE * listed + MODE_TOKENIZER_MAX_SPARSE_SLACK - 1);
        goto fail;
    }
    t->n_vocab = (int32_t)(maxid + 1);
    t->tok = calloc((size_t)t->n_vocab + 1, sizeof *t->tok);
    t->tok_len = calloc((size_t)t->n_vocab + 1, sizeof *t->tok_len);
    t->is_added = calloc((size_t)t->n_vocab + 1, 1);
    t->is_special = calloc((size_t)t->n_vocab + 1, 1);
    t->vocab.cap = pow2_above((size_t)t->n_vocab + 1);
    t->vocab.slot = malloc(sizeof *t->vocab.slot * t->vocab.cap);
    if (!t->tok || !t->tok_len || !t->is_added || !t->is_special || !t->vocab.slot) {
        rc = mode_err_oom(err, (size_t)t->n_vocab * 32, "the vocabulary");
        goto fail;
    }
    memset(t->vocab.slot, 0xff, sizeof *t->vocab.slot * t->vocab.cap);
    json_object_foreach(vocab, key, v)
    {
        int32_t id = (int32_t)json_integer_value(v);
        if ((rc = set_token(t, id, key, strlen(key), path, err))) goto fail;
        strmap_put(t, id);
    }
    /* byte symbols */
    int cp[256];
    byte_alphabet(cp);
    memset(t->cp_byte, 0xff, sizeof t->cp_byte);
    for (int b = 0; b < 256; b++) {
        char s[4];
        int n = utf8_put(cp[b], s);
        t->cp_byte[cp[b]] = (int16_t)b;
        t->byte_id[b] = strmap_get(t, s, (size_t)n);
        if (t->byte_id[b] < 0) {
            rc = mode_err_set(err, MODE_EDATA, "%s: the vocabulary lacks the byte-level symbol of byte 0x%02x: not a byte-level BPE", path, b);
            goto fail;
        }
    }
    /* merges */
    const size_t nm = json_array_size(merges);
    t->pair_cap = pow2_above(nm + 1);
    t->pairs = calloc(t->pair_cap, sizeof *t->pairs);
    if (!t->pairs) {
        rc = mode_err_oom(err, t->pair_cap * sizeof *t->pairs, "the merges");
        goto fail;
    }
    char *buf = NULL;
    size_t bufcap = 0;
    json_array_foreach(merges, ai, v)
    {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (json_is_string(v)) {
            const char *s = json_string_value(v), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                free(buf);
                rc = mode_err_set(err, MODE_EDATA, "%s: merge %zu '%s' is not two tokens separated by one space", path, ai, s);
                goto fail;
            }
            a = s, la = (size_t)(sp - s), b = sp + 1, lb = strlen(sp + 1);
        } else if (json_is_array(v) && json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) &&
                   json_is_string(json_array_get(v, 1))) {
            a = json_string_value(json_array_get(v, 0)), la = json_string_length(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1)), lb = json_string_length(json_array_get(v, 1));
        } else {
            free(buf);
            rc = mode_err_set(err, MODE_EDATA, "%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, ai);
            goto fail;
        }
        int32_t ia = strmap_get(t, a, la), ib = strmap_get(t, b, lb);
        if (la + lb + 1 > bufcap) {
            bufcap = 2 * (la + lb + 1);
            char *nb = realloc(buf, bufcap);
            if (!nb) {
                free(buf);
                rc = mode_err_oom(err, bufcap, "a merge");
                goto fail;
            }
            buf = nb;
        }
        memcpy(buf, a, la), memcpy(buf + la, b, lb);
        int32_t im = strmap_get(t, buf, la + lb);
        if (ia < 0 || ib < 0 || im < 0) {
            rc = mode_err_set(err, MODE_EDATA, "%s: merge %zu '%.*s' + '%.*s': a part or the result is not in the vocabulary", path, ai,
                              (int)la, a, (int)lb, b);
            free(buf);
            goto fail;
        }
        pair_put(t, ia, ib, (int32_t)ai, im);
    }
    free(buf);
    /* added tokens */
    t->added = calloc(json_array_size(added) + 1, sizeof *t->added);
    if (!t->added) {
        rc = mode_err_oom(err, json_array_size(added) * sizeof *t->added, "added tokens");
        goto fail;
    }
    json_array_foreach(added, ai, v)
    {
        struct added *a = &t->added[t->n_added];
        json_t *c = json_object_get(v, "content");
        a->len = json_string_length(c);
        if (!a->len) continue;
        a->content = malloc(a->len + 1);
        if (!a->content) {
            rc = mode_err_oom(err, a->len + 1, "an added token");
            goto fail;
        }
        memcpy(a->content, json_string_value(c), a->len + 1);
        a->id = (int32_t)json_integer_value(json_object_get(v, "id"));
        a->special = json_is_true(json_object_get(v, "special"));
        a->lstrip = json_is_true(json_object_get(v, "lstrip"));
        a->rstrip = json_is_true(json_object_get(v, "rstrip"));
        a->single_word = json_is_true(json_object_get(v, "single_word"));
        if ((rc = set_token(t, a->id, a->content, a->len, path, err))) goto fail;
        t->is_added[a->id] = true;
        t->is_special[a->id] = a->special;
        strmap_put(t, a->id);
        t->n_added++;
    }
    json_decref(root);
    t->cache = calloc(CACHE_SLOTS, sizeof *t->cache);
    if (t->cache && pthread_mutex_init(&t->lock, NULL)) {
        free(t->cache);
        t->cache = NULL;
    }
    *out = t;
    return MODE_OK;
fail:
    json_decref(root);
    mode_tokenizer_free(t);
    return rc;
}

/* ---- encoding -------------------------------------------------------------------------------- */

struct idvec {
    int32_t **ids;
    size_t *n, *cap;
};

static int push(struct idvec *v, int32_t id, struct mode_err *err)
{
    if (*v->n == *v->cap) {
        size_t c = *v->cap ? 2 * *v->cap : 64;
        int32_t *p = realloc(*v->ids, sizeof *p * c);
        if (!p) return mode_err_oom(err, sizeof *p * c, "token ids");
        *v->ids = p, *v->cap = c;
    }
    (*v->ids)[(*v->n)++] = id;
    return MODE_OK;
}

/* BPE of one piece: symbols in a doubly linked list, candidate merges in a binary heap keyed by
 * (rank, position); stale candidates are skipped when popped. O(n log n) in the piece length. */
struct sym {
    int32_t id;
    int32_t prev, next; /* -1 at the ends */
};
struct cand {
    int32_t rank, pos, left, right; /* left/right: ids when pushed, to detect staleness */
};

static bool cand_less(const struct cand *a, const struct cand *b) { return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos; }

static void heap_push(struct cand *h, size_t *n, struct cand c)
{
    size_t i = (*n)++;
    h[i] = c;
    while (i && cand_less(&h[i], &h[(i - 1) / 2])) {
        struct cand x = h[i];
        h[i] = h[(i - 1) / 2], h[(i - 1) / 2] = x;
        i = (i - 1) / 2;
    }
}

static struct cand heap_pop(struct cand *h, size_t *n)
{
    struct cand top = h[0];
    h[0] = h[--*n];
    for (size_t i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && cand_less(&h[l], &h[m])) m = l;
        if (r < *n && cand_less(&h[r], &h[m])) m = r;
        if (m == i) break;
        struct cand x = h[i];
        h[i] = h[m], h[m] = x;
        i = m;
    }
    return top;
}

static void try_pair(const struct mode_tokenizer *t, struct sym *s, int32_t i, struct cand *h, size_t *hn)
{
    int32_t j = s[i].next;
    if (j < 0) return;
    const struct pairent *p = pair_get(t, s[i].id, s[j].id);
    if (p) heap_push(h, hn, (struct cand){p->rank, i, s[i].id, s[j].id});
}

static int bpe(const struct mode_tokenizer *t, const unsigned char *p, size_t n, struct idvec *out, struct mode_err *err)
{
    if (n == 1) return push(out, t->byte_id[p[0]], err);
    struct sym stack_s[64];
    struct cand stack_h[3 * 64];
    /* the heap holds at most n - 1 first candidates plus two per merge: under 3n */
    struct sym *s = n <= 64 ? stack_s : malloc(sizeof *s * n);
    struct cand *h = n <= 64 ? stack_h : malloc(sizeof *h * 3 * n);
    if (!s || !h) {
        if (n > 64) free(s), free(h);
        return mode_err_oom(err, n * 40, "a BPE piece");
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) s[i] = (struct sym){t->byte_id[p[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    for (size_t i = 0; i + 1 < n; i++) try_pair(t, s, (int32_t)i, h, &hn);
    while (hn) {
        struct cand c = heap_pop(h, &hn);
        int32_t i = c.pos, j = s[i].next;
        if (s[i].id != c.left || j < 0 || s[j].id != c.right || s[i].id < 0) continue; /* stale */
        const struct pairent *pe = pair_get(t, c.left, c.right);
        s[i].id = pe->id;
        s[i].next = s[j].next;
        if (s[j].next >= 0) s[s[j].next].prev = i;
        s[j].id = -1; /* removed */
        if (s[i].prev >= 0) try_pair(t, s, s[i].prev, h, &hn);
        try_pair(t, s, i, h, &hn);
    }
    int rc = MODE_OK;
    for (int32_t i = 0; i >= 0 && !rc; i = s[i].next) rc = push(out, s[i].id, err);
    if (n > 64) free(s), free(h);
    return rc;
}

/* bpe() through the shared cache for pieces of at most CACHE_BYTES bytes */
static int bpe_cached(const struct mode_tokenizer *tc, const unsigned char *p, size_t n, struct idvec *out, struct mode_err *err)
{
    struct mode_tokenizer *t = (struct mode_tokenizer *)tc; /* the cache is the only mutable part */
    if (!t->cache || n > CACHE_BYTES || n < 2) return bpe(tc, p, n, out, err);
    const uint64_t h = fnv((const char *)p, n) | 1;
    struct cache_ent *e = &t->cache[h & (CACHE_SLOTS - 1)];
    int32_t ids[CACHE_IDS];
    int k = -1;
    pthread_mutex_lock(&t->lock);
    if (e->hash == h && e->len == n && !memcmp(e->bytes, p, n)) {
        k = e->n;
        memcpy(ids, e->ids, sizeof *ids * (size_t)k);
    }
    pthread_mutex_unlock(&t->lock);
    if (k >= 0) {
        int rc = MODE_OK;
        for (int i = 0; i < k && !rc; i++) rc = push(out, ids[i], err);
        return rc;
    }
    const size_t before = *out->n;
    int rc = bpe(tc, p, n, out, err);
    const size_t m = *out->n - before;
    if (!rc && m <= CACHE_IDS) {
        pthread_mutex_lock(&t->lock);
        e->hash = h, e->len = (uint8_t)n, e->n = (uint8_t)m;
        memcpy(e->bytes, p, n);
        memcpy(e->ids, *out->ids + before, sizeof *e->ids * m);
        pthread_mutex_unlock(&t->lock);
    }
    return rc;
}

/* encode a segment that holds no added token */
static int encode_plain(const struct mode_tokenizer *t, const char *text, size_t len, struct idvec *out, pcre2_match_data *md,
                        struct mode_err *err)
{
    if (!len) return MODE_OK;
    char *norm = NULL;
    if (t->nfc) {
        /* utf8proc wants a NUL-free, NUL-terminated string only when len < 0; given a length it copes */
        utf8proc_uint8_t *o = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &o, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (r < 0) return mode_err_set(err, MODE_EDATA, "text is not valid UTF-8 (%s)", utf8proc_errmsg(r));
        norm = (char *)o;
        text = norm, len = (size_t)r;
    }
    int rc = MODE_OK;
    if (!t->re) rc = bpe_cached(t, (const unsigned char *)text, len, out, err);
    else {
        size_t off = 0, last = 0;
        uint32_t opts = 0;
        while (off <= len && !rc) {
            int m = pcre2_match(t->re, (PCRE2_SPTR)text, len, off, opts, md, NULL);
            /* The first call validates the UTF-8 of the whole subject; PCRE2 would check again
             * from each start offset to the end on every later call, which made a line's cost
             * quadratic in its length (a 0.5 MB line took 110 s). */
            opts = PCRE2_NO_UTF_CHECK;
            if (m == PCRE2_ERROR_NOMATCH) break;
            if (m < 0) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(m, msg, sizeof msg);
                rc = mode_err_set(err, m == PCRE2_ERROR_UTF8_ERR1 || m <= PCRE2_ERROR_UTF8_ERR1 ? MODE_EDATA : MODE_EINTERNAL,
                                  "splitting the text: %s", (char *)msg);
                break;
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            size_t s0 = ov[0], s1 = ov[1];
            if (s0 > last) rc = bpe_cached(t, (const unsigned char *)text + last, s0 - last, out, err); /* a gap: its own piece */
            if (!rc && s1 > s0) rc = bpe_cached(t, (const unsigned char *)text + s0, s1 - s0, out, err);
            last = s1;
            if (s1 == s0) { /* empty match: step one character */
                if (s1 >= len) break;
                off = s1 + 1;
                while (off < len && ((unsigned char)text[off] & 0xC0) == 0x80) off++;
            } else
                off = s1;
        }
        if (!rc && last < len) rc = bpe_cached(t, (const unsigned char *)text + last, len - last, out, err);
    }
    free(norm);
    return rc;
}

static bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static bool word_char_before(const char *text, size_t pos)
{
    if (!pos) return false;
    size_t i = pos - 1;
    while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80) i--;
    utf8proc_int32_t c;
    if (utf8proc_iterate((const utf8proc_uint8_t *)text + i, (utf8proc_ssize_t)(pos - i), &c) < 0) return false;
    utf8proc_category_t k = utf8proc_category(c);
    return c == '_' || (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

static bool word_char_at(const char *text, size_t len, size_t pos)
{
    if (pos >= len) return false;
    utf8proc_int32_t c;
    if (utf8proc_iterate((const utf8proc_uint8_t *)text + pos, (utf8proc_ssize_t)(len - pos), &c) < 0) return false;
    utf8proc_category_t k = utf8proc_category(c);
    return c == '_' || (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

int mode_tokenizer_encode(const struct mode_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n, size_t *cap,
                          struct mode_err *err)
{
    if (utf8proc_decompose((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, NULL, 0, 0) < 0)
        return mode_err_set(err, MODE_EDATA, "text is not valid UTF-8");
    struct idvec out = {ids, n, cap};
    pcre2_match_data *md = t->re ? pcre2_match_data_create_from_pattern(t->re, NULL) : NULL;
    if (t->re && !md) return mode_err_oom(err, 1024, "regex match data");
    int rc = MODE_OK;
    size_t seg = 0, pos = 0;
    while (pos < len && !rc) {
        /* the longest added token starting here */
        int best = -1;
        for (int a = 0; a < t->n_added; a++) {
            const struct added *ad = &t->added[a];
            if (ad->len <= len - pos && (best < 0 || ad->len > t->added[best].len) && !memcmp(text + pos, ad->content, ad->len)) {
                if (ad->single_word && (word_char_before(text, pos) || word_char_at(text, len, pos + ad->len))) continue;
                best = a;
            }
        }
        if (best < 0) {
            pos++;
            continue;
        }
        const struct added *ad = &t->added[best];
        size_t start = pos, end = pos + ad->len;
        if (ad->lstrip)
            while (start > seg && is_space((unsigned char)text[start - 1])) start--;
        if (ad->rstrip)
            while (end < len && is_space((unsigned char)text[end])) end++;
        rc = encode_plain(t, text + seg, start - seg, &out, md, err);
        if (!rc) rc = push(&out, ad->id, err);
        seg = pos = end;
    }
    if (!rc) rc = encode_plain(t, text + seg, len - seg, &out, md, err);
    if (md) pcre2_match_data_free(md);
    return rc;
}

/* ---- decoding -------------------------------------------------------------------------------- */

int mode_tokenizer_decode(const struct mode_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text, size_t *len,
                          struct mode_err *err)
{
    size_t cap = 64, m = 0;
    char *o = malloc(cap);
    if (!o) return mode_err_oom(err, cap, "decoded text");
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->tok[id]) {
            free(o);
            return mode_err_set(err, MODE_EDATA, "token id %d is not in the vocabulary", id);
        }
        if (skip_special && t->is_special[id]) continue;
        if (m + t->tok_len[id] + 1 > cap) {
            while (m + t->tok_len[id] + 1 > cap) cap *= 2;
            char *p = realloc(o, cap);
            if (!p) {
                free(o);
                return mode_err_oom(err, cap, "decoded text");
            }
            o = p;
        }
        if (t->is_added[id]) {
            memcpy(o + m, t->tok[id], t->tok_len[id]);
            m += t->tok_len[id];
            continue;
        }
        const unsigned char *s = (const unsigned char *)t->tok[id];
        for (uint32_t k = 0; k < t->tok_len[id];) {
            int c;
            if (s[k] < 0x80) c = s[k++];
            else if ((s[k] & 0xE0) == 0xC0 && k + 1 < t->tok_len[id]) c = ((s[k] & 0x1F) << 6) | (s[k + 1] & 0x3F), k += 2;
            else c = -1, k++;
            int b = c >= 0 && c < 512 ? t->cp_byte[c] : -1;
            if (b < 0) {
                free(o);
                return mode_err_set(err, MODE_EDATA, "token %d ('%s') is not in the byte-level alphabet", id, t->tok[id]);
            }
            o[m++] = (char)b;
        }
    }
    o[m] = 0;
    *text = o;
    *len = m;
    return MODE_OK;
}

int32_t mode_tokenizer_token_id(const struct mode_tokenizer *t, const char *token) { return strmap_get(t, token, strlen(token)); }

int32_t mode_tokenizer_n_vocab(const struct mode_tokenizer *t) { return t->n_vocab; }
