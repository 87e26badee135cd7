/* chat.c — JSON lines to tokenized samples in the Qwen-VL chat layout (see chat.h). */
#include "chat.h"
#include "image.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mode_chat_init(struct mode_chat_ctx *c, const struct mode_tokenizer *tok, const struct mode_config *cfg, int64_t min_pixels,
                   int64_t max_pixels, const char *root, struct mode_err *err)
{
    memset(c, 0, sizeof *c);
    c->tok = tok, c->cfg = cfg, c->min_pixels = min_pixels, c->max_pixels = max_pixels, c->root = root;
    static const char *const names[] = {"<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"};
    int32_t *ids[] = {&c->id_im_start, &c->id_im_end, &c->id_vision_start, &c->id_vision_end, &c->id_image_pad};
    for (int i = 0; i < 5; i++) {
        *ids[i] = mode_tokenizer_token_id(tok, names[i]);
        if (*ids[i] < 0) return mode_err_set(err, MODE_EDATA, "the tokenizer has no %s token: not a Qwen-VL tokenizer", names[i]);
    }
    if (c->id_image_pad != cfg->image_token_id || c->id_vision_start != cfg->vision_start_id || c->id_vision_end != cfg->vision_end_id)
        return mode_err_set(err, MODE_EDATA,
                            "the tokenizer's <|image_pad|>, <|vision_start|>, <|vision_end|> are %d, %d, %d but config.json says %d, %d, %d",
                            c->id_image_pad, c->id_vision_start, c->id_vision_end, cfg->image_token_id, cfg->vision_start_id,
                            cfg->vision_end_id);
    return MODE_OK;
}

void mode_chat_sample_free(struct mode_chat_sample *s)
{
    free(s->tokens), free(s->modality), free(s->score);
    for (int i = 0; i < s->n_images; i++) free(s->images[i].pixels), free(s->images[i].source);
    free(s->images), free(s->text);
    memset(s, 0, sizeof *s);
}

/* ---- building -------------------------------------------------------------------------------- */

struct build {
    struct mode_chat_sample *s;
    char *text;
    size_t tlen, tcap;
    struct mode_err *err;
};

static int add_tok(struct build *b, int32_t id, uint8_t mod, uint8_t score)
{
    struct mode_chat_sample *s = b->s;
    if (s->n_tok == s->cap) {
        size_t c = s->cap ? 2 * s->cap : 256;
        int32_t *t = realloc(s->tokens, sizeof *t * c);
        if (t) s->tokens = t;
        uint8_t *m = realloc(s->modality, c);
        if (m) s->modality = m;
        uint8_t *sc = realloc(s->score, c);
        if (sc) s->score = sc;
        if (!t || !m || !sc) return mode_err_oom(b->err, c * 6, "tokens");
        s->cap = c;
    }
    s->tokens[s->n_tok] = id;
    s->modality[s->n_tok] = mod;
    s->score[s->n_tok] = score;
    s->n_tok++;
    return MODE_OK;
}

static int add_text(struct build *b, const char *t, size_t n)
{
    if (b->tlen + n + 1 > b->tcap) {
        size_t c = b->tcap ? b->tcap : 256;
        while (b->tlen + n + 1 > c) c *= 2;
        char *p = realloc(b->text, c);
        if (!p) return mode_err_oom(b->err, c, "text");
        b->text = p, b->tcap = c;
    }
    memcpy(b->text + b->tlen, t, n);
    b->tlen += n;
    b->text[b->tlen] = 0;
    return MODE_OK;
}

/* encodes a piece of text (no special token expected, though one in it is honoured as the
 * reference does); tokens [from_tok..) of it are scored when score */
static int encode(const struct mode_chat_ctx *c, struct build *b, const char *t, size_t n, size_t prefix_len, uint8_t score)
{
    int32_t *ids = NULL, *pids = NULL;
    size_t m = 0, cap = 0, pm = 0, pcap = 0;
    int rc = mode_tokenizer_encode(c->tok, t, n, &ids, &m, &cap, b->err);
    size_t first = 0;
    if (!rc && prefix_len && score) {
        /* the answer's first token: after the tokens of the role line */
        rc = mode_tokenizer_encode(c->tok, t, prefix_len, &pids, &pm, &pcap, b->err);
        if (!rc) {
            first = pm <= m && !memcmp(ids, pids, sizeof *ids * pm) ? pm : 0;
            if (pm > m || memcmp(ids, pids, sizeof *ids * pm)) {
                /* the role line merged into the answer: score from the first differing token */
                first = 0;
                while (first < pm && first < m && ids[first] == pids[first]) first++;
            }
        }
    }
    for (size_t i = 0; !rc && i < m; i++)
        if (ids[i] == c->id_image_pad || ids[i] == c->id_vision_start || ids[i] == c->id_vision_end)
            rc = mode_err_set(b->err, MODE_EDATA, "the text holds the special token %s: images are given as image items, not as markup",
                              ids[i] == c->id_image_pad ? "<|image_pad|>" : ids[i] == c->id_vision_start ? "<|vision_start|>" : "<|vision_end|>");
    for (size_t i = 0; !rc && i < m; i++) rc = add_tok(b, ids[i], 0, score && i >= first);
    if (!rc) rc = add_text(b, t, n);
    free(ids), free(pids);
    return rc;
}

static int special(struct build *b, int32_t id, const char *spelling, uint8_t score)
{
    int rc = add_tok(b, id, 0, score);
    return rc ? rc : add_text(b, spelling, strlen(spelling));
}

/* With confine, path must name a file inside root once every symbolic link and ".." is
 * resolved: an absolute path is refused, and so is one that resolves elsewhere (the comparison
 * is between realpath(root) and realpath(root/path), so a link inside root cannot lead out
 * either). *resolved (malloc'ed) is the file to read. */
static int confine(const struct mode_chat_ctx *c, const char *path, const char *full, char **resolved, struct mode_err *err)
{
    *resolved = NULL;
    if (path[0] == '/')
        return mode_err_set(err, MODE_EDATA, "%s: an absolute image path is refused with --root (paths are relative to %s)", path,
                            c->root);
    char *rroot = realpath(c->root, NULL);
    if (!rroot) return mode_err_set(err, MODE_ENOINPUT, "--root %s: %s", c->root, strerror(errno));
    char *rfull = realpath(full, NULL);
    if (!rfull) {
        int e = errno;
        free(rroot);
        return mode_err_set(err, e == ENOMEM ? MODE_EUNAVAILABLE : MODE_ENOINPUT, "%s: %s", full, strerror(e));
    }
    size_t n = strlen(rroot);
    bool inside = !strcmp(rroot, "/") || (!strncmp(rfull, rroot, n) && rfull[n] == '/');
    if (!inside) {
        int rc = mode_err_set(err, MODE_EDATA, "%s: outside --root %s (it resolves to %s)", path, c->root, rfull);
        free(rroot), free(rfull);
        return rc;
    }
    free(rroot);
    *resolved = rfull;
    return MODE_OK;
}

static int image(const struct mode_chat_ctx *c, struct build *b, const char *path)
{
    char full[4096];
    int k;
    if (!c->confine && (path[0] == '/' || !c->root || !*c->root)) k = snprintf(full, sizeof full, "%s", path);
    else k = snprintf(full, sizeof full, "%s/%s", c->root, path);
    if (k < 0 || (size_t)k >= sizeof full)
        return mode_err_set(b->err, MODE_ENOINPUT, "%s: image path too long (%d bytes with the directory)", path, k);
    char *resolved = NULL;
    int rc = c->confine ? confine(c, path, full, &resolved, b->err) : MODE_OK;
    if (rc) return rc;
    const char *file = resolved ? resolved : full;
    struct mode_rgb img, rs;
    rc = mode_rgb_load_alpha(file, c->alpha, &img, b->err);
    if (rc) {
        free(resolved);
        return rc;
    }
    const int P = c->cfg->vision.patch_size, M = c->cfg->vision.merge_size;
    int H, W;
    rc = mode_smart_resize(img.height, img.width, P * M, c->min_pixels, c->max_pixels, &H, &W, b->err);
    if (rc) {
        mode_rgb_free(&img);
        mode_err_prefix(b->err, "%s: ", file);
        free(resolved);
        return rc;
    }
    free(resolved);
    rc = mode_image_resize(&img, W, H, &rs, b->err);
    mode_rgb_free(&img);
    if (rc) return rc;
    struct mode_chat_sample *s = b->s;
    struct mode_chat_image *ni = realloc(s->images, sizeof *ni * (size_t)(s->n_images + 1));
    if (!ni) {
        mode_rgb_free(&rs);
        return mode_err_oom(b->err, sizeof *ni, "images");
    }
    s->images = ni;
    struct mode_chat_image *im = &s->images[s->n_images++];
    im->grid[0] = 1, im->grid[1] = H / P, im->grid[2] = W / P;
    im->width = W, im->height = H;
    im->pixels = rs.px;
    im->source = strdup(path);
    if (!im->source) return mode_err_oom(b->err, strlen(path), "a path");
    const int64_t pads = im->grid[0] * im->grid[1] * im->grid[2] / (M * M);
    if ((rc = special(b, c->id_vision_start, "<|vision_start|>", 0))) return rc;
    for (int64_t i = 0; i < pads && !rc; i++) rc = add_tok(b, c->id_image_pad, 1, 0);
    char note[64];
    snprintf(note, sizeof note, "<|image_pad|>*%lld", (long long)pads);
    if (!rc) rc = add_text(b, note, strlen(note));
    return rc ? rc : special(b, c->id_vision_end, "<|vision_end|>", 0);
}

/* one message: role and content items; text pieces are accumulated into `pending` so that the
 * text between special tokens is encoded as one piece, as the reference tokenizes the rendered
 * string */
struct pending {
    char *p;
    size_t n, cap, prefix; /* prefix: the role line's length (for the score boundary) */
};

static int pend(struct pending *q, const char *t, size_t n, struct mode_err *err)
{
    if (q->n + n + 1 > q->cap) {
        size_t c = q->cap ? q->cap : 256;
        while (q->n + n + 1 > c) c *= 2;
        char *p = realloc(q->p, c);
        if (!p) return mode_err_oom(err, c, "text");
        q->p = p, q->cap = c;
    }
    memcpy(q->p + q->n, t, n);
    q->n += n;
    return MODE_OK;
}

static int flush(const struct mode_chat_ctx *c, struct build *b, struct pending *q, uint8_t score)
{
    int rc = q->n ? encode(c, b, q->p, q->n, q->prefix, score) : MODE_OK;
    q->n = 0;
    q->prefix = 0;
    return rc;
}

static int message(const struct mode_chat_ctx *c, struct build *b, const char *role, json_t *content, const char *llava_image,
                   bool *image_used, const char *where)
{
    const bool assistant = !strcmp(role, "assistant");
    struct pending q = {0};
    int rc = special(b, c->id_im_start, "<|im_start|>", 0);
    if (!rc) rc = pend(&q, role, strlen(role), b->err);
    if (!rc) rc = pend(&q, "\n", 1, b->err);
    q.prefix = q.n;
    if (rc) goto out;
    if (json_is_string(content)) {
        const char *t = json_string_value(content);
        size_t n = json_string_length(content);
        const char *ph = llava_image && !*image_used ? strstr(t, "<image>") : NULL;
        if (llava_image && !*image_used && !assistant && (ph || !strcmp(role, "user"))) {
            /* LLaVA: the image replaces "<image>" (and a newline right after it), or goes first */
            size_t at = ph ? (size_t)(ph - t) : 0, skip = ph ? 7 : 0;
            if (ph && at + skip < n && t[at + skip] == '\n') skip++;
            if ((rc = pend(&q, t, at, b->err)) || (rc = flush(c, b, &q, 0)) || (rc = image(c, b, llava_image))) goto out;
            *image_used = true;
            t += at + skip, n -= at + skip;
        }
        if ((rc = pend(&q, t, n, b->err))) goto out;
    } else if (json_is_array(content)) {
        size_t i;
        json_t *it;
        json_array_foreach(content, i, it)
        {
            const char *ty = json_string_value(json_object_get(it, "type"));
            if (ty && !strcmp(ty, "text")) {
                json_t *tx = json_object_get(it, "text");
                if (!json_is_string(tx)) {
                    rc = mode_err_set(b->err, MODE_EDATA, "%s: content[%zu] of type text has no string 'text'", where, i);
                    goto out;
                }
                if ((rc = pend(&q, json_string_value(tx), json_string_length(tx), b->err))) goto out;
            } else if (ty && !strcmp(ty, "image")) {
                json_t *im = json_object_get(it, "image");
                if (!json_is_string(im)) im = json_object_get(it, "path");
                if (!json_is_string(im)) {
                    rc = mode_err_set(b->err, MODE_EDATA, "%s: content[%zu] of type image has no string 'image'", where, i);
                    goto out;
                }
                if ((rc = flush(c, b, &q, assistant)) || (rc = image(c, b, json_string_value(im)))) goto out;
            } else {
                rc = mode_err_set(b->err, MODE_EDATA, "%s: content[%zu] has type '%s' (text or image)", where, i, ty ? ty : "none");
                goto out;
            }
        }
    } else if (!json_is_null(content)) {
        rc = mode_err_set(b->err, MODE_EDATA, "%s: 'content' must be a string or a list of items", where);
        goto out;
    }
    if ((rc = flush(c, b, &q, assistant)) || (rc = special(b, c->id_im_end, "<|im_end|>", assistant))) goto out;
    rc = encode(c, b, "\n", 1, 0, 0);
out:
    free(q.p);
    return rc;
}

int mode_chat_sample(const struct mode_chat_ctx *c, json_t *line, struct mode_chat_sample *s, struct mode_err *err)
{
    memset(s, 0, sizeof *s);
    struct build b = {s, NULL, 0, 0, err};
    int rc = MODE_OK;
    char where[64];
    if (!json_is_object(line)) {
        rc = mode_err_set(err, MODE_EDATA, "a line must be a JSON object with 'text', 'messages' or 'conversations'");
        goto out;
    }
    json_t *text = json_object_get(line, "text"), *msgs = json_object_get(line, "messages"), *conv = json_object_get(line, "conversations");
    if (json_is_string(text) && !msgs && !conv) {
        rc = encode(c, &b, json_string_value(text), json_string_length(text), 0, 1);
        if (!rc && s->n_tok) s->score[0] = 0; /* nothing predicts the first token */
    } else if (json_is_array(msgs)) {
        size_t i;
        json_t *m;
        json_array_foreach(msgs, i, m)
        {
            const char *role = json_string_value(json_object_get(m, "role"));
            snprintf(where, sizeof where, "messages[%zu]", i);
            if (!role) {
                rc = mode_err_set(err, MODE_EDATA, "%s has no string 'role'", where);
                goto out;
            }
            bool used = false;
            if ((rc = message(c, &b, role, json_object_get(m, "content"), NULL, &used, where))) goto out;
        }
    } else if (json_is_array(conv)) {
        json_t *img = json_object_get(line, "image");
        if (img && !json_is_string(img)) {
            rc = mode_err_set(err, MODE_EDATA, "'image' must be a path");
            goto out;
        }
        bool used = false;
        size_t i;
        json_t *m;
        json_array_foreach(conv, i, m)
        {
            const char *from = json_string_value(json_object_get(m, "from"));
            snprintf(where, sizeof where, "conversations[%zu]", i);
            const char *role = !from ? NULL : !strcmp(from, "human") || !strcmp(from, "user") ? "user"
                                          : !strcmp(from, "gpt") || !strcmp(from, "assistant") ? "assistant"
                                          : !strcmp(from, "system")                            ? "system"
                                                                                               : NULL;
            if (!role) {
                rc = mode_err_set(err, MODE_EDATA, "%s: 'from' must be human, gpt or system", where);
                goto out;
            }
            if ((rc = message(c, &b, role, json_object_get(m, "value"), img ? json_string_value(img) : NULL, &used, where))) goto out;
        }
        if (img && !used) {
            rc = mode_err_set(err, MODE_EDATA, "the image '%s' has no human turn to go in", json_string_value(img));
            goto out;
        }
    } else {
        rc = mode_err_set(err, MODE_EDATA, "a line needs a string 'text', a list 'messages' or a list 'conversations'");
        goto out;
    }
    if (!rc && !s->n_tok) rc = mode_err_set(err, MODE_EDATA, "the line has no tokens");
out:
    s->text = b.text;
    if (rc) mode_chat_sample_free(s);
    return rc;
}

size_t mode_chat_truncate(struct mode_chat_sample *s, size_t n, const struct mode_chat_ctx *c)
{
    if (s->n_tok <= n) return 0;
    /* never inside an image: back up to before the vision_start of an image the cut would split */
    size_t cut = n;
    int keep_images = 0;
    for (size_t i = 0, img = 0; i < s->n_tok; i++) {
        if (s->tokens[i] == c->id_vision_start) {
            size_t j = i + 1;
            while (j < s->n_tok && s->modality[j]) j++;
            size_t end = j < s->n_tok && s->tokens[j] == c->id_vision_end ? j + 1 : j;
            if (end > cut) {
                if (i < cut) cut = i;
                break;
            }
            if (j == i + 1) continue; /* not an image (cannot happen: text never holds the marker) */
            keep_images = (int)++img;
            i = end - 1;
        }
    }
    if (keep_images > s->n_images) keep_images = s->n_images;
    for (int k = keep_images; k < s->n_images; k++) free(s->images[k].pixels), free(s->images[k].source);
    s->n_images = keep_images;
    const size_t removed = s->n_tok - cut;
    s->n_tok = cut;
    return removed;
}
