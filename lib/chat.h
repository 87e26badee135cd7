/* chat.h — one input line (JSON) to one tokenized sample in the chat layout of the Qwen-VL family.
 *
 * Input forms:
 *   {"text": "..."}                       raw text, no chat markup; every prediction scored
 *   {"messages": [{"role", "content"}]}   Hugging Face chat convention; content a string or a list
 *                                         of {"type": "text", "text"} / {"type": "image", "image": path}
 *   {"image": path, "conversations": [{"from": "human"|"gpt"|"system", "value"}]}
 *                                         LLaVA / ShareGPT4V; "<image>" in a value marks where the
 *                                         image goes (else before the first human turn's text)
 *
 * Layout: per message "<|im_start|>" role "\n" content "<|im_end|>" "\n"; an image as
 * "<|vision_start|>" + one "<|image_pad|>" per merged patch + "<|vision_end|>". No system message
 * is added. The score mask covers the assistant contents and their "<|im_end|>".
 *
 * Tokenization follows the reference: the text between special tokens is encoded as one piece,
 * "assistant\n" and the answer included; the answer's first token is found by encoding the role
 * line on its own (with Qwen's pre-tokenizer the newline always ends a piece).
 *
 * Images: decoded and converted (image.h, transparency as the context's alpha says), resized to
 * smart_resize's size with the preprocessor's pixel bounds, stored as 8-bit pixels (1, H, W, 3)
 * with grid (1, H/patch, W/patch).
 */
#ifndef MODE_CHAT_H
#define MODE_CHAT_H

#include "config.h"
#include "image.h"
#include "tokenizer.h"

#include <jansson.h>

struct mode_chat_image {
    int64_t grid[3];
    int width, height;
    uint8_t *pixels; /* (height, width, 3) */
    char *source;    /* the path as written in the input */
};

struct mode_chat_sample {
    int32_t *tokens;
    uint8_t *modality, *score;
    size_t n_tok, cap;
    struct mode_chat_image *images;
    int n_images;
    char *text;      /* the rendered text (image pads abbreviated), for inspection */
};

struct mode_chat_ctx {
    const struct mode_tokenizer *tok;
    const struct mode_config *cfg;   /* token ids, patch and merge sizes */
    int64_t min_pixels, max_pixels;  /* smart_resize bounds */
    const char *root;                /* directory image paths are relative to */
    bool confine;                    /* image paths must stay inside root (mode-tokenize --root):
                                        absolute ones and ones that resolve outside it, through
                                        ".." or symbolic links, are MODE_EDATA */
    enum mode_alpha alpha;           /* transparency on conversion to RGB (mode-tokenize --alpha);
                                        MODE_ALPHA_DROP after mode_chat_init */
    int32_t id_im_start, id_im_end, id_vision_start, id_vision_end, id_image_pad;
};

/* Looks up the special tokens in the tokenizer and checks them against the config.
 * MODE_EDATA naming a missing token. */
int mode_chat_init(struct mode_chat_ctx *c, const struct mode_tokenizer *tok, const struct mode_config *cfg,
                   int64_t min_pixels, int64_t max_pixels, const char *root, struct mode_err *err);

/* Builds the sample of one parsed line. MODE_EDATA for a line of the wrong shape (the message
 * names the key), MODE_ENOINPUT for an image that cannot be opened, MODE_EDATA for one that cannot
 * be decoded. */
int mode_chat_sample(const struct mode_chat_ctx *c, json_t *line, struct mode_chat_sample *s, struct mode_err *err);
void mode_chat_sample_free(struct mode_chat_sample *s);

/* Cuts the sample to at most n tokens without splitting an image (an image that does not fit is
 * dropped with its markers); returns the tokens removed. */
size_t mode_chat_truncate(struct mode_chat_sample *s, size_t n, const struct mode_chat_ctx *c);

#endif
