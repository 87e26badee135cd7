/* input.h — reading a samples stream into batches for the stages that run the model
 * (mode-eval, mode-route-trace, mode-sensitivity, mode-pack): the stream is opened and checked
 * against the model, records are parsed, optionally restricted to a range of sample indices,
 * and added to a runtime batch until it holds about `batch_tokens` tokens. Every sequence's
 * `index` is its 0-based place in the input stream. */
#ifndef MODE_INPUT_H
#define MODE_INPUT_H

#include "../../lib/runtime.h"
#include "../../lib/stream.h"

struct mode_input {
    struct mode_stream_reader r;
    int64_t n_read;     /* records read so far */
    int64_t lo, hi;     /* sample range kept (inclusive); hi < 0: to the end */
    bool ended;
    bool embeds;        /* the header says its images carry the tower's output for this model */
    /* the memory check of each batch (mode_input_mem_check): with the lm_head (mode-eval), and
     * what the stage holds besides the runtime, per token of the batch and fixed */
    bool head;
    int64_t extra_per_row, extra_fixed;
};

/* What the stage holds besides the runtime, for the memory check of every input opened after:
 * bytes per token of a batch, fixed bytes, and whether it computes logits (the f32 lm_head). */
void mode_input_memory(int64_t per_row, int64_t fixed, bool head);
/* The memory this process may still take, bytes: MemAvailable, less where a cgroup limit or an
 * address-space limit (ulimit -v) leaves less; MODE_MEM_AVAILABLE (bytes) in the environment
 * overrides it (tests). */
int64_t mode_mem_available(void);
/* Before a batch runs: MODE_EUNAVAILABLE ("out of memory (X GB needed ..., Y GB available)")
 * when mode_rt_mem_need + the stage's extra exceeds mode_mem_available; MODE_MEM_CHECK=off skips
 * it. Called by mode_input_batch for every batch it fills. */
int mode_input_mem_check(const struct mode_input *in, const struct mode_rt *rt, const struct mode_rt_batch *b, struct mode_err *err);

/* Opens path ("-" = stdin), reads the header (kind samples) and checks it was made for m; a
 * stream whose images carry embeddings (args.vision "embeds", mode-route-trace --samples-out) must
 * name m's weights (MODE_EDATA otherwise), and only such a stream may carry them. */
int mode_input_open(struct mode_input *in, const char *path, const struct mode_model *m, struct mode_err *err);
/* Empties b and fills it with the next samples; *n = samples added (0 at the end of the input,
 * after the trailer and end of file were checked). */
int mode_input_batch(struct mode_input *in, struct mode_rt *rt, struct mode_rt_batch *b, int64_t batch_tokens, int *n,
                     struct mode_err *err);
/* For the stages that hold the whole calibration set: opens path, reads its first n_samples
 * samples (all when n_samples <= 0) into one batch b (initialised here) and returns their count;
 * dies with the documented exit code on any error or when there is no sample. */
int mode_input_all(struct mode_input *in, const char *path, const struct mode_model *m, struct mode_rt *rt, int64_t n_samples,
                   struct mode_rt_batch *b);
void mode_input_close(struct mode_input *in);

#endif
