/* tokenizer.h — Hugging Face `tokenizer.json` byte-level BPE as the Qwen2/Qwen3 family uses it.
 *
 * Encoding, in the order the tokenizers library applies it:
 *   1. added tokens (`added_tokens`: special or not) are found in the raw text, leftmost first and
 *      longest at a position, honouring `lstrip` / `rstrip` (the whitespace before / after is part
 *      of the match) and `single_word` (no word character around it); each becomes its id;
 *   2. the text between them is normalised (`normalizer`: NFC through utf8proc, a Sequence of
 *      NFC, or none);
 *   3. pre-tokenised (`pre_tokenizer`: a Split with a `Regex` pattern and behaviour `Isolated`,
 *      compiled by PCRE2 with UTF and Unicode properties; ByteLevel with use_regex false; or a
 *      Sequence of those);
 *   4. each piece's bytes are mapped to the byte-level alphabet (GPT-2's bytes_to_unicode) and
 *      merged pair by pair in the order of `model.merges` (lowest rank first), then looked up in
 *      `model.vocab`.
 * Anything else in the file (another model type, a normaliser or pre-tokeniser this code does not
 * implement, byte_fallback, dropout) is refused with MODE_EDATA naming it, rather than encoded
 * differently from the reference.
 *
 * Decoding maps ids back to bytes (added tokens to their content). A tokenizer is immutable after
 * loading except for a cache of short pieces' ids shared under a mutex; encode and decode may run
 * concurrently on it.
 */
#ifndef MODE_TOKENIZER_H
#define MODE_TOKENIZER_H

#include "mode.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits (mode-tokenize(1), LIMITS): tokenizer.json is read whole and parsed by jansson, at most
 * MODE_TOKENIZER_MAX_FILE bytes (Qwen3's is 11,422,654 bytes). Token ids are below
 * MODE_TOKENIZER_MAX_VOCAB (2^24, also config.h's bound on vocab_size), and the largest is
 * below MODE_TOKENIZER_MAX_SPARSE times the number of tokens the file lists (vocabulary and
 * added tokens) plus MODE_TOKENIZER_MAX_SPARSE_SLACK: the tables are indexed by id, so a file
 * listing a few tokens with huge ids would otherwise allocate hundreds of megabytes. */
#define MODE_TOKENIZER_MAX_FILE ((size_t)256 << 20)
#define MODE_TOKENIZER_MAX_VOCAB (1 << 24)
#define MODE_TOKENIZER_MAX_SPARSE 2
#define MODE_TOKENIZER_MAX_SPARSE_SLACK 1024

struct mode_tokenizer;

/* Loads tokenizer.json. MODE_ENOINPUT when missing, MODE_EDATA for a malformed or unsupported
 * file (message names the file and the component). */
int mode_tokenizer_load(const char *path, struct mode_tokenizer **out, struct mode_err *err);
void mode_tokenizer_free(struct mode_tokenizer *t);

/* Appends the ids of text[0..len) to *ids (realloc'ed; *n and *cap updated). Invalid UTF-8 is
 * MODE_EDATA. */
int mode_tokenizer_encode(const struct mode_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n,
                          size_t *cap, struct mode_err *err);

/* The text of ids (malloc'ed, NUL-terminated, *len without the NUL); skip_special drops special
 * added tokens. An id outside the vocabulary is MODE_EDATA. */
int mode_tokenizer_decode(const struct mode_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text,
                          size_t *len, struct mode_err *err);

/* The id of a token (vocabulary entry or added token) spelled exactly so; -1 when absent. */
int32_t mode_tokenizer_token_id(const struct mode_tokenizer *t, const char *token);
/* One more than the largest id. */
int32_t mode_tokenizer_n_vocab(const struct mode_tokenizer *t);

#endif
